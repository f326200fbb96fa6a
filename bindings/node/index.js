// portmgr for Node.js: the binding of libportmgr, the host-wide port allocator. Every
// process and language on the host (Rust, C/C++, Python, Go, shell, Node) allocates from
// one shared, crash-safe registry, so no two holders are handed the same port, and the
// ports of a process that dies (even by SIGKILL) are free at once.
//
// A thin skin over the C ABI (include/portmgr.h): it converts JavaScript values into
// request setters and C results and statuses into JavaScript values and Error
// subclasses; every decision is the core's.
import fs from 'node:fs';
import net from 'node:net';
import {C, check, lastError, readJson, version as libVersion, libPath} from './lib/native.js';
import {invalid, Status} from './lib/errors.js';

export {
  PortmgrError,
  InvalidArgumentError,
  ExhaustedError,
  InUseError,
  NotFoundError,
  NotOwnerError,
  TimeoutError,
  RegistryCorruptError,
  InsecureDirectoryError,
  PortmgrOSError,
  InternalError,
  Status,
  codeOf,
} from './lib/errors.js';

const PROTO = {tcp: 1, udp: 2, both: 3};
const STRATEGY = {random: 0, sequential: 1, hash: 2, kernel: 3};

/** The library's version, e.g. "0.1.0". */
export function version() {
  return libVersion;
}

/** The path libportmgr was loaded from. */
export {libPath};

function port16(v, what, allowZero = false) {
  if (!Number.isInteger(v) || v < (allowZero ? 0 : 1) || v > 65535) {
    throw invalid(`\`${what}\` is not a port (${allowZero ? 0 : 1}-65535): ${String(v)}`);
  }
  return v;
}

function str(v, what) {
  if (typeof v !== 'string') throw invalid(`\`${what}\` is not a string`);
  if (v.includes('\0')) throw invalid(`\`${what}\` contains a NUL byte`);
  return v;
}

function millis(v, what) {
  if (typeof v === 'bigint') v = Number(v);
  if (typeof v !== 'number' || !(v >= 0) || !Number.isFinite(v)) {
    throw invalid(`\`${what}\` is not a number of milliseconds >= 0`);
  }
  return Math.ceil(v);
}

const KNOWN = new Set([
  'name', 'proto', 'count', 'contiguous', 'range', 'strategy', 'hashKey', 'preferred', 'required',
  'ttl', 'exclude', 'host', 'watchPid', 'type', 'metadata', 'server',
]);

/** Build a C request from the options (the caller frees it). */
function makeRequest(opts) {
  if (opts === undefined || opts === null) opts = {};
  if (typeof opts !== 'object') throw invalid('the options are not an object');
  for (const k of Object.keys(opts)) {
    if (!KNOWN.has(k)) throw invalid(`unknown option \`${k}\``);
  }
  const out = [null];
  check(C.requestNew(out));
  const req = out[0];
  try {
    const o = opts;
    if (o.proto !== undefined) {
      const p = PROTO[o.proto];
      if (p === undefined) throw invalid("`proto` is not 'tcp', 'udp' or 'both'");
      check(C.setProtocols(req, p));
    }
    if (o.range !== undefined) {
      if (!Array.isArray(o.range) || o.range.length !== 2) throw invalid('`range` is not [start, end]');
      check(C.setRange(req, port16(o.range[0], 'range[0]'), port16(o.range[1], 'range[1]')));
    }
    if (o.exclude !== undefined) {
      if (o.exclude === null || typeof o.exclude[Symbol.iterator] !== 'function') {
        throw invalid('`exclude` is not an iterable of ports');
      }
      const ports = Uint16Array.from(o.exclude, (p) => port16(p, 'exclude'));
      if (ports.length) check(C.exclude(req, ports, ports.length));
    }
    if (o.strategy !== undefined) {
      const s = STRATEGY[o.strategy];
      if (s === undefined) throw invalid("`strategy` is not 'random', 'sequential', 'hash' or 'kernel'");
      check(C.setStrategy(req, s));
    }
    if (o.hashKey !== undefined) check(C.setHashKey(req, str(o.hashKey, 'hashKey')));
    if (o.name !== undefined) check(C.setName(req, str(o.name, 'name')));
    if (o.count !== undefined) {
      if (!Number.isInteger(o.count) || o.count < 0) throw invalid('`count` is not a whole number');
      check(C.setCount(req, o.count));
    }
    if (o.contiguous !== undefined) check(C.setContiguous(req, Boolean(o.contiguous)));
    if (o.ttl !== undefined) check(C.setTtlMs(req, millis(o.ttl, 'ttl')));
    if (o.watchPid !== undefined) {
      if (!Number.isInteger(o.watchPid) || o.watchPid < 0 || o.watchPid > 0xffffffff) throw invalid('`watchPid` is not a pid');
      check(C.setWatchPid(req, o.watchPid));
    }
    if (o.preferred !== undefined || o.required) {
      check(C.setPreferred(req, port16(o.preferred ?? 0, 'preferred', true), Boolean(o.required)));
    }
    if (o.host !== undefined) check(C.setProbeAddr(req, str(o.host, 'host')));
    if (o.type !== undefined) check(C.setType(req, str(o.type, 'type')));
    if (o.metadata !== undefined) {
      if (o.metadata === null || typeof o.metadata !== 'object') throw invalid('`metadata` is not an object of strings');
      for (const [k, v] of Object.entries(o.metadata)) check(C.setMetadata(req, str(k, 'metadata key'), str(v, `metadata.${k}`)));
    }
    return req;
  } catch (e) {
    C.requestFree(req);
    throw e;
  }
}

/** Close registry handles that became garbage (leases hold their own reference). */
const closer = new FinalizationRegistry((h) => C.registryClose(h));

/**
 * A set of held ports. Held until release(), or until the process exits (any way): it is
 * NOT released when it becomes garbage, on purpose (a port often outlives every reference
 * to its lease: it went to a server, a config file, a child process).
 */
export class Lease {
  #h;
  #ports;
  #id;
  /** @internal */
  constructor(h) {
    this.#h = h;
    const n = Number(C.leasePorts(h, null, 0));
    const buf = new Uint16Array(n);
    C.leasePorts(h, buf, n);
    this.#ports = Array.from(buf);
    this.#id = BigInt(C.leaseId(h));
  }
  /** The (first) port: the lowest of a contiguous block. Readable after release(). */
  get port() {
    return this.#ports[0];
  }
  /** Every port, in the lease's order (ascending for a contiguous block): a copy. */
  get ports() {
    return this.#ports.slice();
  }
  /** The lease id (lease_id in the registry's views; Registry#releaseId takes it). */
  get id() {
    return this.#id;
  }
  /** Whether release() or keep() has been called. */
  get released() {
    return this.#h === null;
  }
  /** Release the ports now. Idempotent. */
  release() {
    if (this.#h === null) return;
    const h = this.#h;
    this.#h = null;
    check(C.leaseRelease(h));
  }
  /** Give the lease a TTL of `ttlMs` from now: it then lives by its TTL, no longer by this process. */
  renew(ttlMs) {
    if (this.#h === null) throw invalid('the lease was released or kept');
    check(C.leaseRenew(this.#h, millis(ttlMs, 'ttl')));
  }
  /** Detach: the ports stay held until this process exits (or the TTL ends); any process of the user may release them. */
  keep() {
    if (this.#h === null) throw invalid('the lease was released or kept');
    const h = this.#h;
    this.#h = null;
    check(C.leaseKeep(h));
  }
  toJSON() {
    return {port: this.port, ports: this.ports, id: String(this.#id)};
  }
}

/** A handle on one registry directory (default: $PORTMGR_DIR, else $XDG_RUNTIME_DIR/portmgr, else a per-user temp dir). */
export class Registry {
  #h;
  constructor(dir = undefined) {
    const d = dir === undefined || dir === null || dir === '' ? null : str(String(dir), 'dir');
    const out = [null];
    check(C.registryOpen(d, out));
    this.#h = out[0];
    closer.register(this, this.#h, this);
  }
  #handle() {
    if (this.#h === null) throw invalid('the registry is closed');
    return this.#h;
  }
  /** Close the handle (leases made through it stay valid). Idempotent. */
  close() {
    if (this.#h === null) return;
    closer.unregister(this);
    C.registryClose(this.#h);
    this.#h = null;
  }
  /** Wait at most `ms` (>= 1) for the registry lock instead of 10 s; past it calls throw TimeoutError. */
  setLockTimeout(ms) {
    check(C.setLockTimeout(this.#handle(), millis(ms, 'timeout')));
  }
  /** Allocate ports as `opts` asks: recorded in the registry and probed free (no socket is held: bind soon, or use listen). */
  allocate(opts = {}) {
    if (opts?.server !== undefined) throw invalid('`server` is an option of listen()');
    const req = makeRequest(opts);
    try {
      const out = [null];
      check(C.allocate(this.#handle(), req, out));
      return new Lease(out[0]);
    } finally {
      C.requestFree(req);
    }
  }
  /**
   * Allocate one TCP port and hand it over bound: a net.Server (or `opts.server`, e.g. an
   * http.Server) listening on it. Race-free: the socket is bound and listening before the
   * port is recorded as yours, so nobody can take it in between. Closing the server does not
   * release the lease; releasing the lease does not close the server.
   */
  async listen(opts = {}) {
    opts = {...(opts ?? {})};
    const server = opts.server ?? net.createServer();
    delete opts.server;
    if (!(server instanceof net.Server)) throw invalid('`server` is not a net.Server');
    if (opts.proto !== undefined && opts.proto !== 'tcp') throw invalid("listen() hands over a TCP port: `proto` must be 'tcp'");
    if (opts.count !== undefined && opts.count !== 1) throw invalid('listen() hands over one port: `count` must be 1');
    const req = makeRequest(opts);
    let lease;
    const fds = new Int32Array(1).fill(-1);
    try {
      const out = [null];
      const nfds = [0];
      check(C.allocateBound(this.#handle(), req, out, fds, 1, nfds));
      lease = new Lease(out[0]);
    } finally {
      C.requestFree(req);
    }
    const fd = fds[0];
    try {
      await new Promise((resolve, reject) => {
        const onError = (e) => reject(e);
        server.once('error', onError);
        server.listen({fd}, () => {
          server.off('error', onError);
          resolve();
        });
      });
    } catch (e) {
      if (!server.listening) {
        try {
          fs.closeSync(fd);
        } catch {}
      }
      lease.release();
      throw e;
    }
    return {server, lease};
  }
  /** Release the lease holding `port` (all its ports), whoever allocated it (NotOwnerError for another live process's). */
  releasePort(port) {
    check(C.releasePort(this.#handle(), port16(port, 'port')));
  }
  /** Release the live lease named `name`, as releasePort. */
  releaseName(name) {
    check(C.releaseName(this.#handle(), str(name, 'name')));
  }
  /** Release lease `id` (Lease#id), as releasePort; an unknown id is NotFoundError. */
  releaseId(id) {
    let big;
    try {
      big = BigInt(id);
    } catch {
      throw invalid('`id` is not a lease id');
    }
    if (big < 1n || big > 0xffffffffffffffffn) throw invalid('`id` is not a lease id');
    check(C.releaseId(this.#handle(), big));
  }
  /** Extend the TTL of the lease holding `port` to `ttlMs` from now. */
  renewPort(port, ttlMs) {
    check(C.renewPort(this.#handle(), port16(port, 'port'), millis(ttlMs, 'ttl')));
  }
  /** The (first) port of the live lease named `name` (NotFoundError when none). */
  lookup(name) {
    const out = [0];
    check(C.lookupName(this.#handle(), str(name, 'name'), out));
    return out[0];
  }
  /** Every live port of the registry (all processes): portmgr_registry_list_json, parsed. */
  list() {
    const h = this.#handle();
    return readJson((b, n, o) => C.listJson(h, b, n, o));
  }
  /** The registry's figures: portmgr_registry_stats_json, parsed. */
  stats() {
    const h = this.#handle();
    return readJson((b, n, o) => C.statsJson(h, b, n, o));
  }
  /** Free every record of a dead owner or an expired lease now; the number of ports freed. */
  gc() {
    const out = [0];
    check(C.gc(this.#handle(), out));
    return Number(out[0]);
  }
}

// The default registry of the module-level functions, opened at first use.
let defaultReg = null;
/** The registry the module-level functions use (PORTMGR_DIR, ...), opened at first use. */
export function defaultRegistry() {
  if (defaultReg === null) defaultReg = new Registry();
  return defaultReg;
}

/** Allocate from the default registry (see Registry#allocate). */
export function allocate(opts = {}) {
  return defaultRegistry().allocate(opts);
}

/** Listen on a held port of the default registry (see Registry#listen). */
export function listen(opts = {}) {
  return defaultRegistry().listen(opts);
}

const held = new Map(); // freePort()'s leases by port

/**
 * One TCP port from the default registry and pool, held until release(port) or the
 * process's exit: the usual "free port" helper without its race. Bind it soon.
 */
export function freePort() {
  const lease = allocate();
  held.set(lease.port, lease);
  return lease.port;
}

/**
 * Release a port of freePort() now. Any other port is released through the default
 * registry as Registry#releasePort does (NotFoundError when nothing holds it).
 */
export function release(port) {
  const lease = held.get(port);
  if (lease !== undefined) {
    held.delete(port);
    lease.release();
    return;
  }
  defaultRegistry().releasePort(port);
}

/** Probe whether `port` can be bound right now (a hint only; records nothing). */
export function probe(port, proto = 'tcp') {
  const p = PROTO[proto];
  if (p === undefined) throw invalid("`proto` is not 'tcp', 'udp' or 'both'");
  const out = [false];
  check(C.probe(port16(port, 'port'), p, out));
  return Boolean(out[0]);
}

// For the get-port subpath: the status numbers without a second import path.
export const _internal = {lastError, Status};
