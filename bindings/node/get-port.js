// portmgr/get-port: the API of get-port 7 (sindresorhus/get-port) over the host-wide
// registry. Same options, validation and errors; the difference is underneath: a
// returned port is recorded in the shared registry and held until clearLockedPorts() or
// the process's exit, so no other process on the host (any language, any test runner
// worker) is handed it meanwhile. get-port only remembers its ports inside one process.
//
// Written from get-port's documented behaviour and tests; no code of it is copied.
import dns from 'node:dns/promises';
import net from 'node:net';
import util from 'node:util';
import {defaultRegistry, ExhaustedError, InUseError, InvalidArgumentError, NotFoundError, PortmgrOSError} from './index.js';

const minPort = 1024;
const maxPort = 65535;

const held = new Map(); // port -> Lease, every port this process was handed

// A candidate port as Node's net.Server#listen reads it (get-port hands each candidate to
// listen()): integers 0-65535 and numeric strings are ports; null and undefined mean
// "any"; anything else is rejected with the very error listen() throws for it.
function asPort(value, host) {
  if (typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= maxPort) return value;
  if (value === null || value === undefined) return 0;
  if (typeof value === 'string' && value.trim() !== '' && +value === +value >>> 0 && +value <= maxPort) return +value;
  const probe = net.createServer();
  probe.listen({port: value, host}); // throws listen()'s error synchronously for every other value
  probe.close(); // not reached for any value listen() knows
  throw new TypeError(`Invalid port: ${String(value)}`);
}

// listen() resolves a host name before binding; so do we (the registry probes addresses).
async function resolveHost(host) {
  if (typeof host !== 'string') {
    const probe = net.createServer();
    probe.listen({port: 0, host}); // throws listen()'s own error for a non-string host
    probe.close();
    return undefined;
  }
  if (net.isIP(host)) return host;
  const {address} = await dns.lookup(host);
  return address;
}

// A failed bind probe as get-port reports it: the system error listen() gives (code
// 'EADDRNOTAVAIL', errno, syscall 'listen', address, port), the registry's error as cause.
function listenError(error, host, port) {
  const [code, description] = util.getSystemErrorMap().get(-error.errno) ?? [error.syscallCode, error.message];
  const where = host === undefined ? '' : ` ${host}${port > 0 ? `:${port}` : ''}`;
  const e = new Error(`listen ${code}: ${description}${where}`, {cause: error});
  Object.assign(e, {errno: -error.errno, code, syscall: 'listen'});
  if (host !== undefined) e.address = host;
  if (port > 0) e.port = port;
  return e;
}

function* candidates(ports) {
  if (ports) yield* ports;
  yield 0; // then any free port of the pool
}

/**
 * Get a TCP port, held in the host-wide registry until clearLockedPorts() or exit.
 * @param {{port?: number | Iterable<number>, exclude?: Iterable<number>, host?: string}} [options]
 * @returns {Promise<number>}
 */
export default async function getPort(options) {
  let ports;
  let exclude = new Set();
  if (options) {
    if (options.port) ports = typeof options.port === 'number' ? [options.port] : options.port;
    if (options.exclude) {
      const list = options.exclude;
      if (typeof list[Symbol.iterator] !== 'function') {
        throw new TypeError('The `exclude` option must be an iterable.');
      }
      for (const element of list) {
        if (typeof element !== 'number') {
          throw new TypeError('Each item in the `exclude` option must be a number corresponding to the port you want excluded.');
        }
        if (!Number.isSafeInteger(element)) {
          throw new TypeError(`Number ${element} in the exclude option is not a safe integer and can't be used`);
        }
      }
      exclude = new Set(list);
    }
  }
  const host = options?.host ? await resolveHost(options.host) : undefined;
  const registry = defaultRegistry();
  // Excluded ports that are ports at all go to the registry, so the fallback skips them.
  const excludePorts = [...exclude].filter((p) => p >= 1 && p <= maxPort);

  for (const candidate of candidates(ports)) {
    if (exclude.has(candidate)) continue;
    const port = asPort(candidate, host);
    const request = {host, exclude: excludePorts};
    if (port !== 0) {
      if (exclude.has(port)) continue;
      request.preferred = port;
      request.required = true;
    }
    let lease;
    try {
      lease = registry.allocate(request);
    } catch (error) {
      // get-port moves on from a port in use (EADDRINUSE), one it may not bind (EACCES:
      // the registry's InvalidArgumentError for a privileged port) and one it handed out
      // already; so do we. A port of the registry's own pool cannot be privileged.
      if (port !== 0 && (error instanceof InUseError || (error instanceof InvalidArgumentError && port < minPort))) continue;
      if (error instanceof PortmgrOSError && error.syscallCode) throw listenError(error, host, port);
      if (port === 0 && error instanceof ExhaustedError) {
        throw new ExhaustedError('No available ports found', error.status, {cause: error});
      }
      throw error;
    }
    held.set(lease.port, lease);
    return lease.port;
  }
  throw new ExhaustedError('No available ports found'); // not reached: the pool round returns or throws
}

/**
 * The port numbers from `from` to `to`, both included, for the `port` option.
 * @param {number} from
 * @param {number} to
 * @returns {Iterable<number>}
 */
export function portNumbers(from, to) {
  if (!Number.isInteger(from) || !Number.isInteger(to)) {
    throw new TypeError('`from` and `to` must be integer numbers');
  }
  if (from < minPort || from > maxPort) {
    throw new RangeError(`'from' must be between ${minPort} and ${maxPort}`);
  }
  if (to < minPort || to > maxPort) {
    throw new RangeError(`'to' must be between ${minPort} and ${maxPort}`);
  }
  if (from > to) {
    throw new RangeError('`to` must be greater than or equal to `from`');
  }
  return (function* () {
    for (let port = from; port <= to; port++) yield port;
  })();
}

/**
 * Release every port getPort() handed this process (get-port: "clear the locked ports").
 * After it, a later getPort() may return them again, and so may any other process.
 */
export function clearLockedPorts() {
  const leases = [...held.values()];
  held.clear();
  let first;
  for (const lease of leases) {
    try {
      lease.release();
    } catch (error) {
      if (!(error instanceof NotFoundError)) first ??= error;
    }
  }
  if (first) throw first;
}

/** The ports this process holds through getPort() (not part of get-port's API). */
export function lockedPorts() {
  return [...held.keys()];
}
