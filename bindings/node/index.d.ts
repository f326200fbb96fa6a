// Types of the portmgr package (hand-written; the implementation is index.js).
import type {Server} from 'node:net';

/** The core's status codes (include/portmgr.h: portmgr_status). */
export declare const Status: Readonly<{
  OK: 0; INVALID_ARGUMENT: 1; EXHAUSTED: 2; IN_USE: 3; NOT_FOUND: 4; NOT_OWNER: 5;
  TIMEOUT: 6; REGISTRY_CORRUPT: 7; INSECURE_DIRECTORY: 8; OS: 9; INTERNAL: 10;
}>;

export type ErrorCode =
  | 'ERR_PORTMGR_INVALID_ARGUMENT' | 'ERR_PORTMGR_EXHAUSTED' | 'ERR_PORTMGR_IN_USE'
  | 'ERR_PORTMGR_NOT_FOUND' | 'ERR_PORTMGR_NOT_OWNER' | 'ERR_PORTMGR_TIMEOUT'
  | 'ERR_PORTMGR_REGISTRY_CORRUPT' | 'ERR_PORTMGR_INSECURE_DIRECTORY' | 'ERR_PORTMGR_OS'
  | 'ERR_PORTMGR_INTERNAL' | 'ERR_PORTMGR_UNKNOWN';

/** Every failure of a portmgr call: `code` names the kind, `status` is the core's number. */
export declare class PortmgrError extends Error {
  constructor(message: string, status?: number, options?: ErrorOptions);
  readonly code: ErrorCode;
  readonly status: number;
}
export declare class InvalidArgumentError extends PortmgrError {}
export declare class ExhaustedError extends PortmgrError {}
export declare class InUseError extends PortmgrError {}
export declare class NotFoundError extends PortmgrError {}
export declare class NotOwnerError extends PortmgrError {}
export declare class TimeoutError extends PortmgrError {}
export declare class RegistryCorruptError extends PortmgrError {}
export declare class InsecureDirectoryError extends PortmgrError {}
/** An operating-system call failed. */
export declare class PortmgrOSError extends PortmgrError {
  /** The errno (positive, e.g. 99). */
  readonly errno: number;
  /** Its name, e.g. 'EADDRNOTAVAIL'. */
  readonly syscallCode: string | undefined;
}
export declare class InternalError extends PortmgrError {}
/** 'ERR_PORTMGR_EXHAUSTED' for 2. */
export declare function codeOf(status: number): ErrorCode;

export type Proto = 'tcp' | 'udp' | 'both';
export type Strategy = 'random' | 'sequential' | 'hash' | 'kernel';

/** What to allocate. Every field is optional; the defaults: one TCP port from the default pool, random, held while this process lives. */
export interface AllocateOptions {
  /** A service name (1-56 bytes): unique among live leases (InUseError), the hash strategy's key. */
  name?: string;
  proto?: Proto;
  /** How many ports (1-4096; default 1). */
  count?: number;
  /** With count > 1: consecutive ports. */
  contiguous?: boolean;
  /** Inclusive [start, end] (default: the pool, outside the kernel's ephemeral range; PORTMGR_RANGE=A-B moves it). */
  range?: [number, number];
  strategy?: Strategy;
  /** The hash strategy's key instead of the name. */
  hashKey?: string;
  /** Try this port first (with count > 1: the block starts there). */
  preferred?: number;
  /** With preferred: fail with InUseError instead of falling back. */
  required?: boolean;
  /** Hold the ports this many milliseconds whether or not this process lives (renew with Lease#renew). */
  ttl?: number;
  /** Ports never to hand out. */
  exclude?: Iterable<number>;
  /** Probe (and, for listen, bind) on this IPv4 or IPv6 address instead of the dual-stack wildcard. */
  host?: string;
  /** Hold the ports while that process lives instead. */
  watchPid?: number;
  /** A service type (e.g. 'rest-api'): its range when none is given; recorded. Not for listen(). */
  type?: string;
  /** Metadata recorded with the lease. Not for listen(). */
  metadata?: Record<string, string>;
}

export interface ListenOptions<S extends Server = Server> extends AllocateOptions {
  proto?: 'tcp';
  count?: 1;
  /** The server to listen with (default: net.createServer()), e.g. an http.Server. */
  server?: S;
}

/** A set of held ports: held until release() or the process's exit (never released by the garbage collector). */
export declare class Lease {
  private constructor();
  /** The (first) port. */
  readonly port: number;
  /** Every port, in the lease's order: a copy. */
  readonly ports: number[];
  /** The lease id (lease_id in the registry's views). */
  readonly id: bigint;
  /** release() or keep() was called. */
  readonly released: boolean;
  /** Release the ports now. Idempotent. */
  release(): void;
  /** Live by a TTL of ttlMs from now instead of by this process. */
  renew(ttlMs: number): void;
  /** Detach: held until this process exits (or the TTL ends); any process of the user may release them. */
  keep(): void;
  toJSON(): {port: number; ports: number[]; id: string};
}

/** One entry of Registry#list(): portmgr_registry_list_json. */
export interface ListEntry {
  port: number;
  protocols: 'tcp' | 'udp' | 'both';
  name: string | null;
  lease_id: number;
  owner_pid: number;
  created_ms: number;
  expires_ms: number | null;
  watch_pid: number | null;
  detached: boolean;
  bound: boolean;
  state: string;
  [key: string]: unknown;
}

/** A handle on one registry directory. */
export declare class Registry {
  /** dir: the registry directory (default: $PORTMGR_DIR, else $XDG_RUNTIME_DIR/portmgr, else a per-user temp dir). */
  constructor(dir?: string);
  close(): void;
  setLockTimeout(ms: number): void;
  allocate(options?: AllocateOptions): Lease;
  listen<S extends Server = Server>(options?: ListenOptions<S>): Promise<{server: S; lease: Lease}>;
  releasePort(port: number): void;
  releaseName(name: string): void;
  releaseId(id: bigint | number): void;
  renewPort(port: number, ttlMs: number): void;
  lookup(name: string): number;
  list(): ListEntry[];
  stats(): {pool: string; pool_size: number; held: number; free: number; utilization: number; owners: number; allocations: number; releases: number; reclaimed: number; [key: string]: unknown};
  gc(): number;
}

/** The registry the module-level functions use, opened at first use. */
export declare function defaultRegistry(): Registry;
/** Allocate from the default registry. */
export declare function allocate(options?: AllocateOptions): Lease;
/** A server listening on a held port of the default registry, race-free. */
export declare function listen<S extends Server = Server>(options?: ListenOptions<S>): Promise<{server: S; lease: Lease}>;
/** One TCP port of the default pool, held until release(port) or exit. */
export declare function freePort(): number;
/** Release a port of freePort() (any other port through the default registry). */
export declare function release(port: number): void;
/** Whether the port can be bound right now (a hint; records nothing). */
export declare function probe(port: number, proto?: Proto): boolean;
/** The library's version, e.g. "0.1.0". */
export declare function version(): string;
/** The path libportmgr was loaded from. */
export declare const libPath: string;
