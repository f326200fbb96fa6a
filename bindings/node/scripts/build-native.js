// The package's install step (npm runs it on `npm install ./bindings/node`): build
// libportmgr with cargo from the portmgr checkout this package sits in, and copy it to
// native/libportmgr.so, where lib/native.js loads it from. Nothing is downloaded but what
// cargo fetches from crates.io for the build (Cargo.lock pins it).
//
// Skipped (exit 0, with a note) when:
//   - PORTMGR_LIB names a library already (it is then loaded from there);
//   - PORTMGR_NODE_SKIP_BUILD=1;
//   - the package is not inside a portmgr checkout, or cargo is missing: install the C
//     library (scripts/install-c.sh) and put it on the loader's path, or set PORTMGR_LIB.
// Honours CARGO_TARGET_DIR.
//
// Then it makes sure the package's own dependency (koffi) resolves from the package:
// `npm install ./bindings/node` links the folder (install-links=false, npm's default) and
// does not install a linked folder's dependencies, so in that case this step runs
// `npm ci --omit=dev --ignore-scripts` in the package (package-lock.json, the registry only;
// koffi's native part is its prebuilt @koromix/koffi-<platform> package, no compiler).
import {execFileSync, spawnSync} from 'node:child_process';
import fs from 'node:fs';
import {createRequire} from 'node:module';
import path from 'node:path';
import {fileURLToPath} from 'node:url';

const pkg = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const root = path.resolve(pkg, '..', '..');
const note = (m) => console.error(`portmgr: ${m}`);

function main() {
  if (process.env.PORTMGR_LIB) {
    if (!fs.existsSync(process.env.PORTMGR_LIB)) {
      note(`PORTMGR_LIB=${process.env.PORTMGR_LIB} does not exist`);
      return 1;
    }
    note(`using PORTMGR_LIB=${process.env.PORTMGR_LIB}; nothing to build`);
    return 0;
  }
  if (process.env.PORTMGR_NODE_SKIP_BUILD === '1') {
    note('PORTMGR_NODE_SKIP_BUILD=1: not building libportmgr');
    return 0;
  }
  if (!fs.existsSync(path.join(root, 'crates', 'portmgr-capi', 'Cargo.toml'))) {
    note(`${root} is not a portmgr checkout: not building libportmgr. Install it with scripts/install-c.sh (on the loader's path) or set PORTMGR_LIB`);
    return 0;
  }
  if (spawnSync('cargo', ['--version'], {stdio: 'ignore'}).status !== 0) {
    note('no cargo on PATH: not building libportmgr. Set PORTMGR_LIB, or install Rust and run `npm rebuild portmgr`');
    return 0;
  }
  note(`building libportmgr: cargo build --release -p portmgr-capi (in ${root})`);
  const build = spawnSync('cargo', ['build', '--release', '-p', 'portmgr-capi'], {cwd: root, stdio: ['ignore', 'inherit', 'inherit']});
  if (build.status !== 0) {
    note('cargo build failed');
    return 1;
  }
  let target = process.env.CARGO_TARGET_DIR;
  if (!target) {
    const meta = JSON.parse(execFileSync('cargo', ['metadata', '--format-version', '1', '--no-deps'], {cwd: root, encoding: 'utf8', maxBuffer: 64 << 20}));
    target = meta.target_directory;
  }
  const built = path.resolve(root, target, 'release', 'libportmgr.so');
  const dest = path.join(pkg, 'native', 'libportmgr.so');
  fs.mkdirSync(path.dirname(dest), {recursive: true});
  const tmp = `${dest}.${process.pid}.tmp`;
  fs.copyFileSync(built, tmp);
  fs.renameSync(tmp, dest); // atomic: a running process keeps its mapping of the old file
  note(`installed ${dest}`);
  return 0;
}

function ensureDeps() {
  try {
    createRequire(path.join(pkg, 'package.json')).resolve('koffi');
    return 0;
  } catch {}
  note('installing the package\'s dependencies into its own node_modules (npm ci --omit=dev --ignore-scripts)');
  const npm = process.env.npm_execpath;
  const [cmd, args] = npm ? [process.execPath, [npm]] : ['npm', []];
  const r = spawnSync(cmd, [...args, 'ci', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund'], {cwd: pkg, stdio: ['ignore', 'inherit', 'inherit']});
  if (r.status !== 0) {
    note('npm ci in the package failed');
    return 1;
  }
  return 0;
}

process.exitCode = main() || ensureDeps();
