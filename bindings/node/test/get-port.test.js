// portmgr/get-port: get-port 7's tests (its test.js, ported to node:test and to ports in
// 62000-62999), its validation errors as get-port gives them, and what the registry adds:
// a returned port is held host-wide until clearLockedPorts() or exit.
import {test} from 'node:test';
import assert from 'node:assert/strict';
import {execFileSync} from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import {privateDefaultRegistry, exact, pkgDir} from './helpers.js';

privateDefaultRegistry();
const {default: getPort, portNumbers, clearLockedPorts, lockedPorts} = await import('portmgr/get-port');
const pm = await import('portmgr');

const servers = [];
function bindPort({port, host}) {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject).listen({port, host}, () => {
      servers.push(s);
      resolve(s);
    });
  });
}
test.after(() => servers.forEach((s) => s.close()));

test('port can be bound when promise resolves', async () => {
  const port = await getPort();
  assert.equal(typeof port, 'number');
  assert.ok(port > 0);
  const s = await bindPort({port});
  assert.equal(s.address().port, port);
});

test('preferred port', async () => {
  assert.equal(await getPort({port: exact(62900)}), 62900);
});

test('preferred port unavailable', async () => {
  await bindPort({port: exact(62901)});
  const port = await getPort({port: 62901});
  assert.equal(typeof port, 'number');
  assert.ok(port > 0);
  assert.notEqual(port, 62901);
});

test('preferred port privileged', () => {
  // In a child process without CAP_NET_BIND_SERVICE, as an unprivileged user is: root
  // (as CI runs) drops it with setpriv, so port 80 cannot be bound there either.
  const url = new URL('file://' + path.join(pkgDir, 'get-port.js')).href;
  const code = `const {default: getPort} = await import(${JSON.stringify(url)}); console.log(await getPort({host: '127.0.0.1', port: 80}));`;
  const argv = [process.execPath, '--input-type=module', '-e', code];
  const cmd = process.getuid?.() === 0 ? ['setpriv', '--bounding-set', '-net_bind_service', ...argv] : argv;
  const port = Number(execFileSync(cmd[0], cmd.slice(1), {encoding: 'utf8'}).trim());
  assert.ok(port > 0, `a port: ${port}`);
  assert.notEqual(port, 80);
});

test('port can be bound to IPv4 host when promise resolves', async () => {
  const port = await getPort({host: '0.0.0.0'});
  assert.ok(port > 0);
  const s = await bindPort({port, host: '0.0.0.0'});
  assert.equal(s.address().port, port);
});

test('preferred port given IPv4 host', async () => {
  assert.equal(await getPort({port: exact(62902), host: '0.0.0.0'}), 62902);
});

test('preferred ports', async () => {
  assert.equal(await getPort({port: [exact(62903), 62905, 62906], host: '0.0.0.0'}), 62903);
});

test('first port in preferred ports array is unavailable', async () => {
  await bindPort({port: exact(62907)});
  assert.equal(await getPort({port: [62907, exact(62908)]}), 62908);
});

test('all preferred ports in array are unavailable', async () => {
  await bindPort({port: exact(62909)});
  await bindPort({port: exact(62910)});
  const port = await getPort({port: [62909, 62910]});
  assert.ok(port > 0 && port < 65536);
  assert.notEqual(port, 62909);
  assert.notEqual(port, 62910);
});

test('non-array iterables work', async () => {
  const ports = (function* () {
    yield exact(62911);
  })();
  assert.equal(await getPort({port: ports, host: '0.0.0.0'}), 62911);
});

test('portNumbers throws on invalid ranges, with get-port\'s errors', () => {
  assert.throws(() => portNumbers('abc', 3000), {name: 'TypeError', message: '`from` and `to` must be integer numbers'});
  assert.throws(() => portNumbers(3000, 'abc'), {name: 'TypeError', message: '`from` and `to` must be integer numbers'});
  assert.throws(() => portNumbers(1023, 1024), {name: 'RangeError', message: "'from' must be between 1024 and 65535"});
  assert.throws(() => portNumbers(65536, 65536), {name: 'RangeError', message: "'from' must be between 1024 and 65535"});
  assert.throws(() => portNumbers(1024, 1023), {name: 'RangeError', message: "'to' must be between 1024 and 65535"});
  assert.throws(() => portNumbers(65535, 65537), {name: 'RangeError', message: "'to' must be between 1024 and 65535"});
  assert.throws(() => portNumbers(1025, 1024), {name: 'RangeError', message: '`to` must be greater than or equal to `from`'});
});

test('portNumbers produces valid ranges', () => {
  assert.deepEqual([...portNumbers(1024, 1024)], [1024]);
  assert.deepEqual([...portNumbers(1024, 1025)], [1024, 1025]);
  assert.deepEqual([...portNumbers(1024, 1027)], [1024, 1025, 1026, 1027]);
});

test('exclude produces ranges that exclude provided exclude list', async () => {
  const port = await getPort({exclude: [exact(62912), 62914], port: portNumbers(62912, exact(62914))});
  assert.equal(port, 62913);
});

test('exclude: the errors get-port throws', async () => {
  await assert.rejects(getPort({exclude: 42}), {name: 'TypeError', message: 'The `exclude` option must be an iterable.'});
  await assert.rejects(getPort({exclude: ['foo']}), {
    name: 'TypeError',
    message: 'Each item in the `exclude` option must be a number corresponding to the port you want excluded.',
  });
  await assert.rejects(getPort({exclude: [Number.NaN]}), {
    name: 'TypeError',
    message: "Number NaN in the exclude option is not a safe integer and can't be used",
  });
});

test('exclude also keeps the fallback off the excluded ports', async () => {
  // Every port of the pool but a few is excluded: the fallback must pick among those few.
  const [lo, hi] = pm.defaultRegistry().stats().pool.split('-').map(Number);
  const keep = new Set([lo + 7, lo + 8, lo + 9]);
  const exclude = [];
  for (let p = lo; p <= hi; p++) if (!keep.has(p)) exclude.push(p);
  const port = await getPort({exclude});
  assert.ok(keep.has(port), `${port} is not one of ${[...keep]}`);
});

test('a bad port: the error net.Server#listen throws, as get-port rejects with it', async () => {
  await assert.rejects(getPort({port: 70000}), {name: 'RangeError', code: 'ERR_SOCKET_BAD_PORT', message: /options\.port should be >= 0 and < 65536\. Received type number \(70000\)/});
  await assert.rejects(getPort({port: [1.5]}), {name: 'RangeError', code: 'ERR_SOCKET_BAD_PORT'});
  await assert.rejects(getPort({port: [true]}), {name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE'});
});

test('a host: resolved as listen() does; an unknown name and a foreign address fail as with get-port', async () => {
  const port = await getPort({host: 'localhost'});
  assert.ok(port > 0);
  await assert.rejects(getPort({host: 'no-such-host.invalid'}), {code: 'ENOTFOUND'});
  await assert.rejects(getPort({host: '192.0.2.1'}), (e) => {
    assert.equal(e.code, 'EADDRNOTAVAIL');
    assert.equal(e.syscall, 'listen');
    assert.equal(e.address, '192.0.2.1');
    assert.match(e.message, /^listen EADDRNOTAVAIL: address not available 192\.0\.2\.1/);
    assert.ok(e.cause instanceof pm.PortmgrOSError);
    return true;
  });
});

test('preferred ports is bound up with different hosts', async () => {
  const ports = [exact(62915), 62916, 62917, exact(62918)];
  await bindPort({port: ports[0]});
  await bindPort({port: ports[1], host: '0.0.0.0'});
  await bindPort({port: ports[2], host: '127.0.0.1'});
  assert.equal(await getPort({port: ports}), ports[3]);
});

test('clearLockedPorts()', async () => {
  const desired = exact(62919);
  assert.equal(await getPort({port: desired}), desired);
  assert.notEqual(await getPort({port: desired}), desired, 'port1 is locked');
  clearLockedPorts();
  assert.equal(await getPort({port: desired}), desired);
});

test('held host-wide: another process is not handed a port this one got, until clearLockedPorts()', async () => {
  clearLockedPorts();
  const mine = await getPort({port: exact(62920)});
  assert.equal(mine, 62920);
  assert.ok(lockedPorts().includes(62920));
  const row = pm.defaultRegistry().list().find((r) => r.port === 62920);
  assert.equal(row.owner_pid, process.pid);
  const other = () =>
    Number(execFileSync(process.execPath, ['--input-type=module', '-e',
      "import('portmgr/get-port').then(async (m) => process.stdout.write(String(await m.default({port: 62920}))))"],
    {cwd: pkgDir, encoding: 'utf8'}));
  assert.notEqual(other(), 62920, 'plain get-port would return 62920 here: it only locks in-process');
  clearLockedPorts();
  assert.deepEqual(lockedPorts(), []);
  assert.equal(other(), 62920);
});
