// Errors: each core kind that can be provoked comes back as its Error subclass, with
// code 'ERR_PORTMGR_<KIND>', the core's numeric status and the core's message.
import {test} from 'node:test';
import assert from 'node:assert/strict';
import {spawn} from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import koffi from 'koffi';
import {privateDefaultRegistry, tempDir, exact, pkgDir} from './helpers.js';

privateDefaultRegistry();
const pm = await import('portmgr');

function expectKind(fn, Cls, status, code, re) {
  let err;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  assert.ok(err, `no error (${code})`);
  assert.ok(err instanceof Cls, `${err?.name}: ${err?.message} is not a ${Cls.name}`);
  assert.ok(err instanceof pm.PortmgrError && err instanceof Error);
  assert.equal(err.code, code);
  assert.equal(err.status, status);
  assert.equal(err.name, Cls.name);
  if (re) assert.match(err.message, re);
  return err;
}

test('the classes and codes, one per core kind', () => {
  const kinds = {
    INVALID_ARGUMENT: pm.InvalidArgumentError, EXHAUSTED: pm.ExhaustedError, IN_USE: pm.InUseError,
    NOT_FOUND: pm.NotFoundError, NOT_OWNER: pm.NotOwnerError, TIMEOUT: pm.TimeoutError,
    REGISTRY_CORRUPT: pm.RegistryCorruptError, INSECURE_DIRECTORY: pm.InsecureDirectoryError,
    OS: pm.PortmgrOSError, INTERNAL: pm.InternalError,
  };
  assert.equal(Object.keys(kinds).length, Object.keys(pm.Status).length - 1);
  for (const [k, Cls] of Object.entries(kinds)) {
    assert.equal(pm.codeOf(pm.Status[k]), `ERR_PORTMGR_${k}`);
    const e = new Cls('x', pm.Status[k]);
    assert.equal(e.code, `ERR_PORTMGR_${k}`);
  }
});

test('InvalidArgument: a reversed range (from the core) and a closed registry', () => {
  expectKind(() => pm.allocate({range: [exact(62010), exact(62000)]}), pm.InvalidArgumentError, 1, 'ERR_PORTMGR_INVALID_ARGUMENT', /62010/);
  const r = new pm.Registry(tempDir());
  r.close();
  expectKind(() => r.stats(), pm.InvalidArgumentError, 1, 'ERR_PORTMGR_INVALID_ARGUMENT', /closed/);
});

test('Exhausted: no free port left in the range', () => {
  const l = pm.allocate({range: [exact(62020), exact(62020)]});
  expectKind(() => pm.allocate({range: [62020, 62020]}), pm.ExhaustedError, 2, 'ERR_PORTMGR_EXHAUSTED', /62020/);
  l.release();
});

test('InUse: a taken name, a required preferred port', () => {
  const l = pm.allocate({name: 'taken', range: [exact(62021), exact(62022)]});
  expectKind(() => pm.allocate({name: 'taken', range: [62021, 62022]}), pm.InUseError, 3, 'ERR_PORTMGR_IN_USE', /taken/);
  expectKind(() => pm.allocate({preferred: l.port, required: true, range: [62021, 62022]}), pm.InUseError, 3, 'ERR_PORTMGR_IN_USE');
  l.release();
});

test('NotFound: release of a free port, an unknown id, lookup of an unknown name', () => {
  const reg = pm.defaultRegistry();
  expectKind(() => reg.releasePort(exact(62023)), pm.NotFoundError, 4, 'ERR_PORTMGR_NOT_FOUND', /62023/);
  expectKind(() => reg.releaseId(987654321n), pm.NotFoundError, 4, 'ERR_PORTMGR_NOT_FOUND');
  expectKind(() => reg.lookup('nobody'), pm.NotFoundError, 4, 'ERR_PORTMGR_NOT_FOUND');
});

test('NotOwner: a port held by another live process', async () => {
  const dir = process.env.PORTMGR_DIR;
  const code = `import('portmgr').then(m => { const l = m.allocate({range: [62024, 62024]}); ` +
    `process.stdout.write('held ' + l.port + '\\n'); process.stdin.on('data', () => {}); process.stdin.on('end', () => process.exit(0)); })`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', code], {cwd: pkgDir, env: {...process.env, PORTMGR_DIR: dir}, stdio: ['pipe', 'pipe', 'inherit']});
  try {
    const line = await new Promise((resolve, reject) => {
      child.stdout.once('data', (d) => resolve(String(d)));
      child.once('exit', (c) => reject(new Error(`child exited ${c}`)));
    });
    assert.match(line, /^held 62024/);
    expectKind(() => pm.defaultRegistry().releasePort(62024), pm.NotOwnerError, 5, 'ERR_PORTMGR_NOT_OWNER');
  } finally {
    child.stdin.end();
    await new Promise((r) => child.once('exit', r));
  }
  // Its owner gone, the port is free at once.
  const l = pm.allocate({preferred: 62024, required: true, range: [62024, 62024]});
  l.release();
});

test('Timeout: the registry lock held elsewhere', () => {
  const d = tempDir();
  const reg = new pm.Registry(d);
  // Hold the lock from another open file description, as another process would.
  const libc = koffi.load('libc.so.6');
  const flock = libc.func('int flock(int fd, int op)');
  const fd = fs.openSync(path.join(d, 'registry.lock'), 'r');
  assert.equal(flock(fd, 2 /* LOCK_EX */), 0);
  try {
    reg.setLockTimeout(50);
    const t0 = Date.now();
    expectKind(() => reg.allocate({range: [exact(62025), exact(62025)]}), pm.TimeoutError, 6, 'ERR_PORTMGR_TIMEOUT');
    assert.ok(Date.now() - t0 < 5000);
  } finally {
    flock(fd, 8 /* LOCK_UN */);
    fs.closeSync(fd);
  }
  reg.allocate({range: [62025, 62025]}).release();
  reg.close();
});

test('RegistryCorrupt: the registry file overwritten under a live handle', () => {
  const d = tempDir();
  const reg = new pm.Registry(d);
  const l = reg.allocate({range: [exact(62026), exact(62026)]});
  const fd = fs.openSync(path.join(d, 'registry.db'), 'r+');
  fs.writeSync(fd, Buffer.from('this is not a portmgr registry header'), 0, undefined, 0);
  fs.closeSync(fd);
  expectKind(() => new pm.Registry(d), pm.RegistryCorruptError, 7, 'ERR_PORTMGR_REGISTRY_CORRUPT');
  expectKind(() => reg.allocate({range: [exact(62027), exact(62027)]}), pm.RegistryCorruptError, 7, 'ERR_PORTMGR_REGISTRY_CORRUPT');
  void l;
});

test('InsecureDirectory: a world-writable directory, a symlink', () => {
  const open = path.join(tempDir(), 'open');
  fs.mkdirSync(open, {mode: 0o700});
  fs.chmodSync(open, 0o777);
  expectKind(() => new pm.Registry(open), pm.InsecureDirectoryError, 8, 'ERR_PORTMGR_INSECURE_DIRECTORY', /chmod 700/);
  const link = path.join(tempDir(), 'link');
  fs.symlinkSync(tempDir(), link);
  expectKind(() => new pm.Registry(link), pm.InsecureDirectoryError, 8, 'ERR_PORTMGR_INSECURE_DIRECTORY');
});

test('OS: a registry under a regular file (ENOTDIR), an address not of this host (EADDRNOTAVAIL)', async () => {
  const e = expectKind(() => new pm.Registry('/etc/passwd/portmgr'), pm.PortmgrOSError, 9, 'ERR_PORTMGR_OS');
  assert.equal(e.syscallCode, 'ENOTDIR');
  assert.equal(e.errno, 20);
  await assert.rejects(pm.listen({host: '192.0.2.1', range: [exact(62028), exact(62028)]}), (err) => {
    assert.ok(err instanceof pm.PortmgrOSError);
    assert.equal(err.code, 'ERR_PORTMGR_OS');
    assert.equal(err.syscallCode, 'EADDRNOTAVAIL');
    return true;
  });
});

// InternalError is a bug inside portmgr (a caught panic): it has no trigger.
