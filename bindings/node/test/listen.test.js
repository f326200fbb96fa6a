// listen(): a net.Server already listening on a held port (allocate_bound's socket handed
// to net.Server#listen({fd})): a real TCP connection on 127.0.0.1, the fd close-on-exec
// and not inherited by a child, an http.Server, the lease independent of the server.
import {test} from 'node:test';
import assert from 'node:assert/strict';
import {execFileSync} from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import {privateDefaultRegistry, exact} from './helpers.js';

privateDefaultRegistry();
const pm = await import('portmgr');

function roundTrip(port) {
  return new Promise((resolve, reject) => {
    const c = net.connect({port, host: '127.0.0.1'});
    let got = '';
    c.on('data', (d) => (got += d));
    c.on('end', () => resolve(got));
    c.on('error', reject);
    c.end('ping');
  });
}

test('listen({host: 127.0.0.1}): a real connection, a held port, close-on-exec', async () => {
  const {server, lease} = await pm.listen({host: '127.0.0.1'});
  try {
    assert.ok(server instanceof net.Server);
    assert.equal(server.listening, true);
    const addr = server.address();
    assert.equal(addr.address, '127.0.0.1');
    assert.equal(addr.port, lease.port);
    server.on('connection', (s) => s.on('data', (d) => s.end(`pong:${d}`)));
    assert.equal(await roundTrip(lease.port), 'pong:ping');
    // Held in the registry, by this process, recorded as bound.
    const row = pm.defaultRegistry().list().find((r) => r.port === lease.port);
    assert.equal(row.owner_pid, process.pid);
    // The listening descriptor is close-on-exec (O_CLOEXEC is 02000000 in fdinfo's octal flags)...
    const fd = server._handle.fd;
    const flags = parseInt(/flags:\s*(\d+)/.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))[1], 8);
    assert.ok(flags & 0o2000000, `fd ${fd} flags ${flags.toString(8)} without O_CLOEXEC`);
    // ...so a child started now holds no socket of it.
    const inode = fs.readlinkSync(`/proc/self/fd/${fd}`);
    const childFds = execFileSync('sh', ['-c', 'for f in /proc/$$/fd/*; do readlink "$f"; done; true'], {encoding: 'utf8'});
    assert.ok(!childFds.split('\n').includes(inode), `the child inherited ${inode}`);
    // Nobody else can bind the port meanwhile.
    await assert.rejects(
      new Promise((res, rej) => net.createServer().once('error', rej).listen(lease.port, '127.0.0.1', res)),
      {code: 'EADDRINUSE'},
    );
  } finally {
    await new Promise((r) => server.close(r));
    lease.release();
  }
});

test('listen() with a range, the default wildcard address, and an http.Server', async () => {
  const {server, lease} = await pm.listen({range: [exact(62800), exact(62809)], server: http.createServer((q, s) => s.end('hello'))});
  assert.ok(server instanceof http.Server);
  assert.ok(lease.port >= 62800 && lease.port <= 62809);
  const body = await new Promise((resolve, reject) => {
    http.get({host: '127.0.0.1', port: lease.port}, (res) => {
      let b = '';
      res.on('data', (d) => (b += d));
      res.on('end', () => resolve(b));
    }).on('error', reject);
  });
  assert.equal(body, 'hello');
  // Closing the server does not release the lease; releasing it after does.
  await new Promise((r) => server.close(r));
  assert.ok(pm.defaultRegistry().list().some((r) => r.port === lease.port));
  lease.release();
  assert.ok(!pm.defaultRegistry().list().some((r) => r.port === lease.port));
});

test('listen() takes one TCP port; failures leave nothing held', async () => {
  await assert.rejects(pm.listen({proto: 'udp'}), pm.InvalidArgumentError);
  await assert.rejects(pm.listen({count: 2}), pm.InvalidArgumentError);
  const before = pm.defaultRegistry().stats().held;
  const blocker = pm.allocate({range: [exact(62810), exact(62810)]});
  await assert.rejects(pm.listen({range: [62810, 62810]}), pm.ExhaustedError);
  blocker.release();
  assert.equal(pm.defaultRegistry().stats().held, before);
});
