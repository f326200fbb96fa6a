// Types of portmgr/get-port: get-port 7's API (its index.d.ts's shapes, written anew).
import type {ListenOptions} from 'node:net';

export type Options = {
  /** A preferred port or an iterable of preferred ports. */
  readonly port?: number | Iterable<number>;
  /** Ports that should not be returned. */
  readonly exclude?: Iterable<number>;
  /** The host (an IPv4 or IPv6 address, or a name listen() would resolve) to check on; by default every local address. */
  readonly host?: string;
} & Omit<ListenOptions, 'port'>;

/** A TCP port, held in the host-wide registry until clearLockedPorts() or the process's exit. */
export default function getPort(options?: Options): Promise<number>;
/** The port numbers from `from` to `to` (1024-65535, from <= to). */
export function portNumbers(from: number, to: number): Iterable<number>;
/** Release every port getPort() handed this process. */
export function clearLockedPorts(): void;
/** The ports this process holds through getPort() (portmgr's addition). */
export function lockedPorts(): number[];
