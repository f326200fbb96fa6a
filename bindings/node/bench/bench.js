// The benchmark of the issue: allocate() + release() against
// net.createServer().listen(0) + close() on 127.0.0.1, in one run, as a ratio.
// Each side runs in rounds alternately (so drift hits both), after a warm-up; the figure
// is the median per-operation time over the rounds. A private temp registry.
//
//   node bench/bench.js [--ops N] [--rounds R] [--json]
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

const arg = (name, def) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : def;
};
const OPS = arg('--ops', 2000);
const ROUNDS = arg('--rounds', 7);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'portmgr-node-bench-'));
process.on('exit', () => fs.rmSync(dir, {recursive: true, force: true}));
process.env.PORTMGR_DIR = path.join(dir, 'registry');
const {Registry, version} = await import('../index.js');
const reg = new Registry(process.env.PORTMGR_DIR);

function portmgrRound(n) {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) reg.allocate({host: '127.0.0.1'}).release();
  return Number(process.hrtime.bigint() - t0) / n;
}

async function listenRound(n) {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    const s = net.createServer();
    await new Promise((r) => s.listen(0, '127.0.0.1', r));
    await new Promise((r) => s.close(r));
  }
  return Number(process.hrtime.bigint() - t0) / n;
}

const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
portmgrRound(Math.min(200, OPS));
await listenRound(Math.min(200, OPS));
const pm = [];
const ls = [];
for (let r = 0; r < ROUNDS; r++) {
  pm.push(portmgrRound(OPS));
  ls.push(await listenRound(OPS));
}
const a = median(pm);
const b = median(ls);
const result = {
  node: process.version,
  libportmgr: version(),
  cpus: os.cpus().length,
  ops_per_round: OPS,
  rounds: ROUNDS,
  allocate_release_us: +(a / 1000).toFixed(2),
  listen0_close_us: +(b / 1000).toFixed(2),
  ratio: +(a / b).toFixed(2),
};
if (process.argv.includes('--json')) console.log(JSON.stringify(result));
else {
  console.log(`node ${result.node}, libportmgr ${result.libportmgr}, ${result.cpus} CPUs, ${ROUNDS} rounds x ${OPS} ops (median)`);
  console.log(`allocate({host: '127.0.0.1'}) + release():            ${result.allocate_release_us} us/op`);
  console.log(`net.createServer().listen(0, '127.0.0.1') + close(): ${result.listen0_close_us} us/op`);
  console.log(`ratio: ${result.ratio}x`);
}
reg.close();
