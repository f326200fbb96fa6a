#!/usr/bin/env node
// The Node client of the reliability suite's mixed-process concurrency run
// (tests/reliability/concurrency.rs, PORTMGR_RELIABILITY_NODE_WORKER names this file),
// with the protocol of its Rust, C, Python and Go clients: 4 concurrent loops allocate
// from START..START+LEN-1 for SECONDS, bind each port as a Node server would
// (net.Server#listen({port}), or take it bound from Registry#listen), hold it briefly,
// close, release. It prints
//
//   L port alloc_ns release_ns pid     one per held port (CLOCK_MONOTONIC)
//   BINDFAIL port err                  a port it was handed and could not bind
//   ERR message                        an unexpected error
//   SUM allocated released exhausted errors
//
// Usage: reliability-worker.js REGISTRY_DIR START LEN SECONDS SEED
import net from 'node:net';
import {Registry, ExhaustedError} from '../index.js';

if (process.argv.length !== 7) {
  console.error(`usage: ${process.argv[1]} DIR START LEN SECONDS SEED`);
  process.exit(2);
}
const [dir, start, len, secs, seed] = [process.argv[2], ...process.argv.slice(3).map(Number)];
const reg = new Registry(dir);
const range = [start, start + len - 1];
const deadline = Date.now() + secs * 1000;
const pid = process.pid;
const mono = () => process.hrtime.bigint(); // libuv's uv_hrtime: CLOCK_MONOTONIC, as the other clients
const total = [0, 0, 0, 0];
const out = [];

// A small seeded generator (xorshift32): runs are repeatable per seed.
function rng(s) {
  let x = (s * 131 + 7) >>> 0 || 1;
  return (n) => {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    return x % n;
  };
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const bind = (port) =>
  new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject).listen({port}, () => resolve(s));
  });

async function loop(g) {
  const rand = rng(seed * 4 + g + 1);
  while (Date.now() < deadline) {
    const req = {range};
    switch (rand(6)) {
      case 0: req.count = 2; break;
      case 1: req.strategy = 'sequential'; break;
      case 2: req.proto = 'both'; break;
      case 3: req.name = `node${pid}-${g}-${rand(1000)}`; break;
    }
    let lease;
    let socks = null;
    try {
      if (req.count === undefined && req.proto === undefined && rand(5) === 0) {
        const r = await reg.listen(req);
        lease = r.lease;
        socks = [r.server];
      } else {
        lease = reg.allocate(req);
      }
    } catch (e) {
      if (e instanceof ExhaustedError) {
        total[2]++;
        await sleep(1);
        continue;
      }
      total[3]++;
      console.log(`ERR ${e.message} (Node client)`);
      continue;
    }
    const a = mono();
    const ports = lease.ports;
    total[0] += ports.length;
    if (socks === null) {
      socks = [];
      for (const p of ports) {
        try {
          socks.push(await bind(p));
        } catch (e) {
          console.log(`BINDFAIL ${p} ${e.code} (Node client)`);
        }
      }
    }
    await sleep(rand(2)); // 0 or 1 ms
    await Promise.all(socks.map((s) => new Promise((r) => s.close(r))));
    const r = mono();
    for (const p of ports) out.push(`L ${p} ${a} ${r} ${pid}`);
    try {
      lease.release();
    } catch (e) {
      total[3]++;
      console.log(`ERR release ${e.message} (Node client)`);
      continue;
    }
    total[1] += ports.length;
  }
}

await Promise.all([0, 1, 2, 3].map(loop));
process.stdout.write(out.map((l) => `${l}\n`).join(''));
console.log(`SUM ${total.join(' ')}`);
reg.close();
