// Shared by the suites. Every test file runs in its own process (node --test), and each
// sets PORTMGR_DIR to its own temp directory before anything opens the default registry:
// no test ever touches the user's registry. Exact ports: 62000-62999 only (outside the
// kernel's ephemeral range and the default pool; nothing else in the repository uses them).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const PORT_LO = 62000;
export const PORT_HI = 62999;

/** A fresh temp directory (mode 0700), removed at exit. */
export function tempDir(prefix = 'portmgr-node-') {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  process.on('exit', () => fs.rmSync(d, {recursive: true, force: true}));
  return d;
}

/** Point the default registry at a private directory (call before importing the API's users). */
export function privateDefaultRegistry() {
  const d = tempDir();
  process.env.PORTMGR_DIR = path.join(d, 'registry');
  return process.env.PORTMGR_DIR;
}

/** Assert a port lies in this suite's exact-port range. */
export function exact(p) {
  if (p < PORT_LO || p > PORT_HI) throw new Error(`test bug: exact port ${p} outside ${PORT_LO}-${PORT_HI}`);
  return p;
}

/** The package's directory (bindings/node): `import('portmgr')` resolves from there. */
export const pkgDir = path.dirname(path.dirname(new URL(import.meta.url).pathname));
