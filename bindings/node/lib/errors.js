// The errors of the binding: one Error subclass per core error kind (the kinds and
// numbers of include/portmgr.h's portmgr_status), each with a Node-style string `code`
// and the core's numeric `status`. Nothing here decides anything: the core chose the
// kind and wrote the message; this file only gives them JavaScript types.
import os from 'node:os';

/** The core's status codes (portmgr_status), by kind name. */
export const Status = Object.freeze({
  OK: 0,
  INVALID_ARGUMENT: 1,
  EXHAUSTED: 2,
  IN_USE: 3,
  NOT_FOUND: 4,
  NOT_OWNER: 5,
  TIMEOUT: 6,
  REGISTRY_CORRUPT: 7,
  INSECURE_DIRECTORY: 8,
  OS: 9,
  INTERNAL: 10,
});

/** Every failure of a portmgr call. `code` is 'ERR_PORTMGR_<KIND>', `status` the core's number. */
export class PortmgrError extends Error {
  constructor(message, status = Status.INTERNAL, options = undefined) {
    super(message, options);
    this.status = status;
    this.code = codeOf(status);
  }
  get name() {
    return this.constructor.name;
  }
}

export class InvalidArgumentError extends PortmgrError {}
export class ExhaustedError extends PortmgrError {}
export class InUseError extends PortmgrError {}
export class NotFoundError extends PortmgrError {}
export class NotOwnerError extends PortmgrError {}
export class TimeoutError extends PortmgrError {}
export class RegistryCorruptError extends PortmgrError {}
export class InsecureDirectoryError extends PortmgrError {}
/** An operating-system call failed: `errno` (a number) and `syscallCode` ('EACCES', ...) say which. */
export class PortmgrOSError extends PortmgrError {
  constructor(message, status = Status.OS, options = undefined) {
    super(message, status, options);
    this.errno = options?.errno ?? 0;
    this.syscallCode = errnoName(this.errno);
  }
}
export class InternalError extends PortmgrError {}

const classes = {
  [Status.INVALID_ARGUMENT]: InvalidArgumentError,
  [Status.EXHAUSTED]: ExhaustedError,
  [Status.IN_USE]: InUseError,
  [Status.NOT_FOUND]: NotFoundError,
  [Status.NOT_OWNER]: NotOwnerError,
  [Status.TIMEOUT]: TimeoutError,
  [Status.REGISTRY_CORRUPT]: RegistryCorruptError,
  [Status.INSECURE_DIRECTORY]: InsecureDirectoryError,
  [Status.OS]: PortmgrOSError,
  [Status.INTERNAL]: InternalError,
};

const names = Object.fromEntries(Object.entries(Status).map(([k, v]) => [v, k]));

/** 'ERR_PORTMGR_EXHAUSTED' for 2; an unknown status gives 'ERR_PORTMGR_UNKNOWN'. */
export function codeOf(status) {
  return `ERR_PORTMGR_${names[status] ?? 'UNKNOWN'}`;
}

function errnoName(errno) {
  if (!errno) return undefined;
  for (const [name, value] of Object.entries(os.constants.errno)) {
    if (value === errno) return name;
  }
  return undefined;
}

/** The error of a failed call: the class of its status (PortmgrError for an unknown one). */
export function makeError(status, message, errno = 0) {
  const Cls = classes[status] ?? PortmgrError;
  const err = new Cls(message, status, status === Status.OS ? {errno} : undefined);
  if (Cls === PortmgrError) err.status = status;
  return err;
}

/** An InvalidArgumentError found while converting JavaScript values for C. */
export function invalid(message) {
  return new InvalidArgumentError(`invalid argument: ${message}`, Status.INVALID_ARGUMENT);
}
