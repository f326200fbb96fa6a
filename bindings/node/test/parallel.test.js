// The issue's parallel run: 8 Node processes x 200 getPort() calls, each port bound at
// once and all of them held until every process is done, 5 times over one registry.
// A port handed to two processes (or twice to one) in a run is a duplicate; a port that
// cannot be bound is a bind failure. Both are counted, reported and must be 0.
// PORTMGR_NODE_PARALLEL_RUNS / _PROCS / _CALLS shrink it.
import {test} from 'node:test';
import assert from 'node:assert/strict';
import {spawn} from 'node:child_process';
import path from 'node:path';
import {privateDefaultRegistry, pkgDir} from './helpers.js';

const dir = privateDefaultRegistry();
const RUNS = Number(process.env.PORTMGR_NODE_PARALLEL_RUNS ?? 5);
const PROCS = Number(process.env.PORTMGR_NODE_PARALLEL_PROCS ?? 8);
const CALLS = Number(process.env.PORTMGR_NODE_PARALLEL_CALLS ?? 200);
const child = path.join(pkgDir, 'test', 'fixtures', 'getport-child.js');

function runOne() {
  const kids = [];
  for (let i = 0; i < PROCS; i++) {
    const p = spawn(process.execPath, [child, String(CALLS)], {cwd: pkgDir, env: {...process.env, PORTMGR_DIR: dir}, stdio: ['pipe', 'pipe', 'inherit']});
    let out = '';
    const done = new Promise((resolve, reject) => {
      p.stdout.on('data', (d) => {
        out += d;
        if (out.includes('DONE\n')) resolve(out);
      });
      p.once('exit', (code) => reject(new Error(`a getPort process exited early (${code}): ${out}`)));
    });
    kids.push({p, done});
  }
  return Promise.all(kids.map((k) => k.done)).then(async (outs) => {
    // Every process holds all its ports now: compare, then let them go.
    const ports = [];
    const fails = [];
    for (const o of outs) {
      for (const line of o.split('\n')) {
        if (line.startsWith('PORTS ')) ports.push(...line.slice(6).split(' ').map(Number));
        if (line.startsWith('BINDFAIL')) fails.push(line);
      }
    }
    const seen = new Map();
    for (const p of ports) seen.set(p, (seen.get(p) ?? 0) + 1);
    const dups = [...seen].filter(([, n]) => n > 1).map(([p, n]) => `${p}x${n}`);
    await Promise.all(kids.map(({p}) => new Promise((r) => { p.once('exit', r); p.stdin.end(); })));
    return {ports: ports.length, dups, fails};
  });
}

test(`parallel: ${PROCS} processes x ${CALLS} getPort() x ${RUNS} runs: 0 duplicates, 0 bind failures`, {timeout: 600_000}, async () => {
  let dupTotal = 0;
  let failTotal = 0;
  for (let run = 1; run <= RUNS; run++) {
    const r = await runOne();
    console.log(`parallel run ${run}: ${PROCS} processes x ${CALLS} getPort(): ${r.ports} ports, ${r.dups.length} duplicates, ${r.fails.length} bind failures${r.dups.length ? ` (${r.dups.slice(0, 10)})` : ''}${r.fails.length ? ` (${r.fails.slice(0, 5)})` : ''}`);
    assert.equal(r.ports, PROCS * CALLS);
    dupTotal += r.dups.length;
    failTotal += r.fails.length;
  }
  console.log(`parallel: ${RUNS} runs x ${PROCS} processes x ${CALLS} getPort(): duplicates=${dupTotal} bind_failures=${failTotal}`);
  assert.equal(dupTotal, 0, 'ports handed out twice');
  assert.equal(failTotal, 0, 'ports that could not be bound');
});
