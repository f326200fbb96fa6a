// The API: allocate (every option the contract names), Lease, freePort/release,
// Registry (own directory, views, lookup, release by port/name/id, close), the
// registry's file shared between two handles and with a child process.
import {test} from 'node:test';
import assert from 'node:assert/strict';
import {execFileSync} from 'node:child_process';
import net from 'node:net';
import {privateDefaultRegistry, tempDir, exact, pkgDir} from './helpers.js';

const dir = privateDefaultRegistry();
const pm = await import('portmgr');
const {allocate, freePort, release, Registry} = pm;

test('version and library path', () => {
  assert.match(pm.version(), /^0\.1\.\d+$/);
  assert.ok(pm.libPath.length > 0);
});

test('allocate: the contract example (name, proto, count, range)', () => {
  const lease = allocate({name: 'web', proto: 'tcp', count: 1, range: [exact(62000), exact(62099)]});
  try {
    assert.equal(typeof lease.port, 'number');
    assert.ok(lease.port >= 62000 && lease.port <= 62099);
    assert.deepEqual(lease.ports, [lease.port]);
    assert.equal(typeof lease.id, 'bigint');
    assert.ok(lease.id > 0n);
    const reg = pm.defaultRegistry();
    assert.equal(reg.lookup('web'), lease.port);
    const row = reg.list().find((r) => r.port === lease.port);
    assert.equal(row.name, 'web');
    assert.equal(row.owner_pid, process.pid);
    assert.equal(BigInt(row.lease_id), lease.id);
  } finally {
    lease.release();
  }
  assert.equal(lease.released, true);
  lease.release(); // idempotent
  assert.equal(lease.port >= 62000, true, 'port stays readable after release');
  assert.throws(() => pm.defaultRegistry().lookup('web'), pm.NotFoundError);
});

test('allocate: several ports, contiguous, both protocols, sequential, hash', () => {
  const block = allocate({count: 3, contiguous: true, proto: 'both', range: [exact(62100), exact(62199)]});
  const [a, b, c] = block.ports;
  assert.deepEqual([b - a, c - b], [1, 1]);
  assert.equal(block.port, a);
  block.release();
  const s1 = allocate({strategy: 'sequential', range: [exact(62200), exact(62209)]});
  const s2 = allocate({strategy: 'sequential', range: [exact(62200), exact(62209)]});
  assert.deepEqual([s1.port, s2.port], [62200, 62201]);
  s1.release();
  s2.release();
  const h1 = allocate({name: 'hashed', strategy: 'hash', range: [exact(62210), exact(62299)]});
  const p = h1.port;
  h1.release();
  const h2 = allocate({name: 'hashed', strategy: 'hash', range: [exact(62210), exact(62299)]});
  assert.equal(h2.port, p, 'the same name hashes to the same port while it is free');
  h2.release();
});

test('allocate: preferred, exclude, host, ttl and renew, keep', () => {
  const pref = allocate({preferred: exact(62310), required: true, range: [exact(62300), exact(62399)]});
  assert.equal(pref.port, 62310);
  const ex = allocate({exclude: [62301, 62302], range: [exact(62300), exact(62303)], strategy: 'sequential'});
  assert.equal(ex.port, 62300);
  const v4 = allocate({host: '127.0.0.1', range: [exact(62304), exact(62304)]});
  assert.equal(v4.port, 62304);
  const ttl = allocate({ttl: 60_000, range: [exact(62305), exact(62305)]});
  const row = pm.defaultRegistry().list().find((r) => r.port === 62305);
  assert.notEqual(row.expires_ms, null);
  ttl.renew(120_000);
  const kept = allocate({range: [exact(62306), exact(62306)]});
  kept.keep();
  assert.throws(() => kept.renew(1000), pm.InvalidArgumentError);
  assert.equal(pm.defaultRegistry().list().find((r) => r.port === 62306).detached, true);
  pm.defaultRegistry().releasePort(62306);
  for (const l of [pref, ex, v4, ttl]) l.release();
});

test('freePort() is held until release(port); release() of a foreign port goes to the registry', () => {
  const port = freePort();
  assert.equal(typeof port, 'number');
  const stats = pm.defaultRegistry().stats();
  const [lo, hi] = stats.pool.split('-').map(Number);
  assert.ok(port >= lo && port <= hi, `${port} in the default pool ${stats.pool}`);
  assert.ok(pm.defaultRegistry().list().some((r) => r.port === port && r.owner_pid === process.pid));
  release(port);
  assert.ok(!pm.defaultRegistry().list().some((r) => r.port === port));
  assert.throws(() => release(port), pm.NotFoundError);
  const l = allocate({range: [exact(62400), exact(62400)]});
  release(62400); // not a freePort() port: released through the registry
  assert.equal(l.released, false, 'the handle does not know');
  l.release(); // and releasing it is a no-op, not an error
});

test('Registry(dir): its own directory, release by name and id, stats, gc, close', () => {
  const own = new Registry(tempDir());
  const a = own.allocate({name: 'svc-a', range: [exact(62500), exact(62509)]});
  const b = own.allocate({range: [exact(62500), exact(62509)]});
  // The default registry is another directory: it does not see these.
  assert.ok(!pm.defaultRegistry().list().some((r) => r.port === a.port));
  const st = own.stats();
  assert.equal(st.held, 2);
  own.releaseName('svc-a');
  own.releaseId(b.id);
  assert.throws(() => own.releaseId(b.id), pm.NotFoundError, 'an id released already is NotFound');
  assert.equal(own.stats().held, 0);
  assert.equal(own.gc(), 0);
  own.close();
  own.close();
  assert.throws(() => own.allocate(), pm.InvalidArgumentError);
  // Leases stay valid after their registry handle is closed.
  const own2 = new Registry(tempDir());
  const c = own2.allocate({range: [exact(62510), exact(62510)]});
  own2.close();
  c.release();
});

test('one registry, two handles and another process: no port handed twice', () => {
  const d = tempDir();
  const r1 = new Registry(d);
  const r2 = new Registry(d);
  const range = [exact(62600), exact(62603)];
  const leases = [r1.allocate({range}), r2.allocate({range}), r1.allocate({range})];
  // A child process (the CLI of this binding: a node one-liner) takes the last port.
  const code = `import('portmgr').then(m => { const r = new m.Registry(${JSON.stringify(d)}); ` +
    `const l = r.allocate({range: [62600, 62603]}); process.stdout.write(String(l.port)); })`;
  const child = Number(execFileSync(process.execPath, ['--input-type=module', '-e', code], {encoding: 'utf8', cwd: pkgDir}));
  const ports = [...leases.map((l) => l.port), child];
  assert.equal(new Set(ports).size, 4, `distinct: ${ports}`);
  // The child exited: its port is free again at once.
  const again = r2.allocate({preferred: child, required: true, range});
  assert.equal(again.port, child);
  for (const l of [...leases, again]) l.release();
  assert.throws(() => r1.allocate({range, count: 5}), pm.ExhaustedError);
  r1.close();
  r2.close();
});

test('a held port can be bound (allocate, then listen on it)', async () => {
  const lease = allocate({host: '127.0.0.1', range: [exact(62700), exact(62799)]});
  const server = net.createServer();
  await new Promise((res, rej) => server.once('error', rej).listen(lease.port, '127.0.0.1', res));
  assert.equal(server.address().port, lease.port);
  await new Promise((res) => server.close(res));
  lease.release();
});

test('options are checked before any C call', () => {
  assert.throws(() => allocate({nmae: 'typo'}), {name: 'InvalidArgumentError', message: /unknown option `nmae`/});
  assert.throws(() => allocate({range: [1, 70000]}), /range\[1\]/);
  assert.throws(() => allocate({proto: 'sctp'}), /proto/);
  assert.throws(() => allocate({strategy: 'best'}), /strategy/);
  assert.throws(() => allocate({exclude: 5}), /exclude/);
  assert.throws(() => allocate({name: 'a\0b'}), /NUL/);
  assert.throws(() => allocate({count: -1}), /count/);
  assert.throws(() => allocate('web'), /not an object/);
});

test('the test itself uses a private registry', () => {
  assert.equal(pm.defaultRegistry().stats().pool.length > 0, true);
  assert.ok(process.env.PORTMGR_DIR === dir && dir.includes('portmgr-node-'));
});
