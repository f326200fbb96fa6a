// Loading libportmgr and declaring its C functions (koffi: a Node-API FFI with prebuilt
// binaries, so no compiler and no Node header download at install time).
//
// Where the library comes from, first found wins:
//   1. $PORTMGR_LIB: the path of a libportmgr.so;
//   2. native/libportmgr.so inside this package (the install step builds it with cargo
//      from the checkout this package sits in, see scripts/build-native.js);
//   3. the loader's search path: libportmgr.so.0.<minor> (installed by
//      scripts/install-c.sh into a prefix on LD_LIBRARY_PATH or the system's).
import fs from 'node:fs';
import path from 'node:path';
import {fileURLToPath} from 'node:url';
import koffi from 'koffi';
import {makeError, Status} from './errors.js';

/** The C ABI version this binding was written against (major.minor). */
export const ABI = '0.1';

const here = path.dirname(fileURLToPath(import.meta.url));
export const bundledPath = path.join(here, '..', 'native', 'libportmgr.so');

function candidates() {
  const out = [];
  if (process.env.PORTMGR_LIB) out.push(process.env.PORTMGR_LIB);
  else {
    if (fs.existsSync(bundledPath)) out.push(bundledPath);
    out.push(`libportmgr.so.${ABI}`, 'libportmgr.so');
  }
  return out;
}

function load() {
  const tried = [];
  for (const p of candidates()) {
    try {
      return {lib: koffi.load(p), path: p};
    } catch (e) {
      tried.push(`${p}: ${e.message}`);
    }
  }
  throw new Error(
    `portmgr: cannot load libportmgr (${tried.join('; ')}). Set PORTMGR_LIB to a libportmgr.so ` +
      '(cargo build --release -p portmgr-capi builds target/release/libportmgr.so), run ' +
      '`npm rebuild portmgr` inside a portmgr checkout, or install the C library with ' +
      'scripts/install-c.sh and put its lib directory on LD_LIBRARY_PATH.',
  );
}

const {lib, path: libPath} = load();
export {libPath};

koffi.opaque('portmgr_registry');
koffi.opaque('portmgr_request');
koffi.opaque('portmgr_lease');

const f = (decl) => lib.func(decl);

export const C = {
  version: f('const char *portmgr_version(void)'),
  lastErrorMessage: f('size_t portmgr_last_error_message(_Out_ uint8_t *buf, size_t len)'),
  lastOsError: f('int portmgr_last_os_error(void)'),
  probe: f('uint32_t portmgr_probe(uint16_t port, uint32_t protocols, _Out_ bool *out_free)'),

  registryOpen: f('uint32_t portmgr_registry_open(const char *dir, _Out_ portmgr_registry **out)'),
  registryClose: f('void portmgr_registry_close(portmgr_registry *reg)'),
  setLockTimeout: f('uint32_t portmgr_registry_set_lock_timeout(portmgr_registry *reg, uint64_t ms)'),
  allocate: f('uint32_t portmgr_allocate(portmgr_registry *reg, const portmgr_request *req, _Out_ portmgr_lease **out)'),
  allocateBound: f(
    'uint32_t portmgr_allocate_bound(portmgr_registry *reg, const portmgr_request *req, _Out_ portmgr_lease **out, _Out_ int *fds, size_t fds_len, _Out_ size_t *out_nfds)',
  ),
  releasePort: f('uint32_t portmgr_release_port(portmgr_registry *reg, uint16_t port)'),
  releaseName: f('uint32_t portmgr_release_name(portmgr_registry *reg, const char *name)'),
  releaseId: f('uint32_t portmgr_release_id(portmgr_registry *reg, uint64_t id)'),
  renewPort: f('uint32_t portmgr_renew_port(portmgr_registry *reg, uint16_t port, uint64_t ttl_ms)'),
  lookupName: f('uint32_t portmgr_lookup_name(const portmgr_registry *reg, const char *name, _Out_ uint16_t *out_port)'),
  listJson: f('uint32_t portmgr_registry_list_json(const portmgr_registry *reg, _Out_ uint8_t *buf, size_t len, _Out_ size_t *out_len)'),
  statsJson: f('uint32_t portmgr_registry_stats_json(const portmgr_registry *reg, _Out_ uint8_t *buf, size_t len, _Out_ size_t *out_len)'),
  gc: f('uint32_t portmgr_registry_gc(portmgr_registry *reg, _Out_ size_t *out_freed)'),

  requestNew: f('uint32_t portmgr_request_new(_Out_ portmgr_request **out)'),
  requestFree: f('void portmgr_request_free(portmgr_request *req)'),
  setProtocols: f('uint32_t portmgr_request_set_protocols(portmgr_request *req, uint32_t protocols)'),
  setRange: f('uint32_t portmgr_request_set_range(portmgr_request *req, uint16_t start, uint16_t end)'),
  exclude: f('uint32_t portmgr_request_exclude(portmgr_request *req, const uint16_t *ports, size_t n)'),
  setStrategy: f('uint32_t portmgr_request_set_strategy(portmgr_request *req, uint32_t strategy)'),
  setHashKey: f('uint32_t portmgr_request_set_hash_key(portmgr_request *req, const char *key)'),
  setName: f('uint32_t portmgr_request_set_name(portmgr_request *req, const char *name)'),
  setCount: f('uint32_t portmgr_request_set_count(portmgr_request *req, size_t count)'),
  setContiguous: f('uint32_t portmgr_request_set_contiguous(portmgr_request *req, bool contiguous)'),
  setTtlMs: f('uint32_t portmgr_request_set_ttl_ms(portmgr_request *req, uint64_t ttl_ms)'),
  setWatchPid: f('uint32_t portmgr_request_set_watch_pid(portmgr_request *req, uint32_t pid)'),
  setPreferred: f('uint32_t portmgr_request_set_preferred(portmgr_request *req, uint16_t port, bool required)'),
  setProbeAddr: f('uint32_t portmgr_request_set_probe_addr(portmgr_request *req, const char *addr)'),
  setType: f('uint32_t portmgr_request_set_type(portmgr_request *req, const char *service_type)'),
  setMetadata: f('uint32_t portmgr_request_set_metadata(portmgr_request *req, const char *key, const char *value)'),

  leasePort: f('uint16_t portmgr_lease_port(const portmgr_lease *lease)'),
  leaseId: f('uint64_t portmgr_lease_id(const portmgr_lease *lease)'),
  leasePorts: f('size_t portmgr_lease_ports(const portmgr_lease *lease, _Out_ uint16_t *ports, size_t len)'),
  leaseRenew: f('uint32_t portmgr_lease_renew(const portmgr_lease *lease, uint64_t ttl_ms)'),
  leaseRelease: f('uint32_t portmgr_lease_release(portmgr_lease *lease)'),
  leaseKeep: f('uint32_t portmgr_lease_keep(portmgr_lease *lease)'),
};

const version = C.version();
if (!version.startsWith(`${ABI}.`)) {
  throw new Error(`portmgr: ${libPath} is libportmgr ${version}; this binding needs ${ABI}.x`);
}
export {version};

const msgBuf = Buffer.alloc(1024);

/**
 * The error of a failed call. Every call here is synchronous on the JavaScript thread, so
 * the thread-local last error read right after is the failed call's own.
 */
export function lastError(status) {
  let n = Number(C.lastErrorMessage(msgBuf, msgBuf.length));
  let message;
  if (n >= msgBuf.length) {
    const big = Buffer.alloc(n + 1);
    n = Number(C.lastErrorMessage(big, big.length));
    message = big.toString('utf8', 0, Math.min(n, big.length - 1));
  } else {
    message = msgBuf.toString('utf8', 0, n);
  }
  const errno = status === Status.OS ? C.lastOsError() : 0;
  return makeError(status, message || `portmgr: status ${status}`, errno);
}

/** Throw the error of `status` unless it is OK. */
export function check(status) {
  if (status !== Status.OK) throw lastError(status);
}

/** A JSON text from a snprintf-style call: fill(buf, len, outLen) -> status. */
export function readJson(fill) {
  let size = 8192;
  for (;;) {
    const buf = Buffer.alloc(size);
    const out = [0];
    check(fill(buf, size, out));
    const n = Number(out[0]);
    if (n < size) return JSON.parse(buf.toString('utf8', 0, n));
    size = n + 1;
  }
}
