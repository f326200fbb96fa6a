"""The exceptions portmgr raises: one hierarchy rooted at :class:`PortError`.

Every class maps one of the core's stable error codes (the same numbers the C API
returns and the command line documents)::

    PortError                                   base of everything portmgr raises
    ├── InvalidArgument (also ValueError)       1  a bad range, name, option
    ├── PortsExhausted                          2  no free port left in the range
    ├── PortInUse                               3  the port asked for is held (.port, .holder)
    │   └── NameInUse                           3  the service name is held (.name, .ports)
    ├── NotFound (also LookupError)             4  no lease holds that port or name
    ├── NotOwner                                5  a live process holds that lease (.pid)
    ├── PortTimeout (also TimeoutError)         6  a wait ran past its deadline
    │   └── LockTimeout                         6  ... the wait for the registry lock
    ├── RegistryError                              the registry cannot be used
    │   ├── RegistryCorrupt                     7  its file is damaged (.path, .reason)
    │   └── InsecureDirectory                   8  its directory is unsafe (.path, .reason)
    ├── PortOSError (also OSError)              9  an OS call failed (.errno), and its
    │   └── PortPermissionError, ...               subclasses per errno, which are also the
    │                                              matching builtin (PermissionError, ...)
    └── InternalError                          10  a bug in portmgr: please report it

This module imports nothing from the extension; the extension builds its exceptions
through :func:`_from_native`.
"""

from __future__ import annotations

import errno as _errno
from typing import Any, Optional

__all__ = [
    "PortError",
    "InvalidArgument",
    "PortsExhausted",
    "PortInUse",
    "NameInUse",
    "NotFound",
    "NotOwner",
    "PortTimeout",
    "LockTimeout",
    "RegistryError",
    "RegistryCorrupt",
    "InsecureDirectory",
    "PortOSError",
    "PortBlockingIOError",
    "PortChildProcessError",
    "PortConnectionError",
    "PortBrokenPipeError",
    "PortConnectionAbortedError",
    "PortConnectionRefusedError",
    "PortConnectionResetError",
    "PortFileExistsError",
    "PortFileNotFoundError",
    "PortInterruptedError",
    "PortIsADirectoryError",
    "PortNotADirectoryError",
    "PortPermissionError",
    "PortProcessLookupError",
    "PortTimeoutOSError",
    "InternalError",
]


class PortError(Exception):
    """Base class of every exception portmgr raises.

    ``code`` is the core's stable error code (the C API's status, the CLI's exit
    status); ``str(e)`` says what happened and what to do.
    """

    code: int = 0

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        for key, value in details.items():
            setattr(self, key, value)

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the details (attributes) across pickling, e.g. to a multiprocessing parent.
        return (type(self), (self.message,), self.__dict__)

    def __str__(self) -> str:
        return self.message


class InvalidArgument(PortError, ValueError):
    """A caller passed something that cannot be right (bad range, name, option)."""

    code = 1


class PortsExhausted(PortError):
    """No free port is left in the range asked for. ``what`` names the range."""

    code = 2
    what: str = ""


class PortInUse(PortError):
    """The port asked for (preferred, required) is held by someone else.

    ``port`` is the port (None for a name), ``holder`` who holds it, when known.
    """

    code = 3
    port: Optional[int] = None
    holder: str = ""


class NameInUse(PortInUse):
    """The service name asked for is held by a live lease on ``ports``."""

    name: str = ""
    ports: list[int] = []


class NotFound(PortError, LookupError):
    """No live lease holds that port or service name."""

    code = 4


class NotOwner(PortError):
    """The lease belongs to live process ``pid``, not to this one."""

    code = 5
    pid: int = 0


class PortTimeout(PortError, TimeoutError):
    """A wait (``wait_listening``, ``wait_free``, the registry lock) ran past its deadline."""

    code = 6

    def __init__(self, message: str, **details: Any) -> None:
        PortError.__init__(self, message, **details)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message,), self.__dict__)

    def __str__(self) -> str:
        return self.message


class LockTimeout(PortTimeout):
    """The registry lock was not free in time; the message names the holder's pid.

    A process stopped (SIGSTOP, a debugger) inside a registry call blocks everyone.
    """


class RegistryError(PortError):
    """The registry cannot be used. ``path`` is the file or directory, ``reason`` why."""

    path: str = ""
    reason: str = ""


class RegistryCorrupt(RegistryError):
    """The registry file is damaged or of an unknown version and cannot be used safely."""

    code = 7


class InsecureDirectory(RegistryError):
    """The registry directory (or a file in it) is not safe: wrong owner, mode, symlink
    or file system. The message says how to fix it."""

    code = 8


class PortOSError(PortError, OSError):
    """An operating-system call failed. ``errno`` is set; ``context`` says what portmgr
    was doing. Raised as the subclass that matches the errno (``PortPermissionError``
    is also a ``PermissionError``, and so on)."""

    code = 9
    context: str = ""

    def __init__(self, errno: Optional[int], message: str, **details: Any) -> None:
        OSError.__init__(self, errno, message)
        self.message = message
        for key, value in details.items():
            setattr(self, key, value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.errno, self.message), self.__dict__)

    def __str__(self) -> str:
        return self.message


class PortBlockingIOError(PortOSError, BlockingIOError):
    """EAGAIN, EWOULDBLOCK, EALREADY, EINPROGRESS."""


class PortChildProcessError(PortOSError, ChildProcessError):
    """ECHILD."""


class PortConnectionError(PortOSError, ConnectionError):
    """A connection-related OS error."""


class PortBrokenPipeError(PortConnectionError, BrokenPipeError):
    """EPIPE, ESHUTDOWN."""


class PortConnectionAbortedError(PortConnectionError, ConnectionAbortedError):
    """ECONNABORTED."""


class PortConnectionRefusedError(PortConnectionError, ConnectionRefusedError):
    """ECONNREFUSED."""


class PortConnectionResetError(PortConnectionError, ConnectionResetError):
    """ECONNRESET."""


class PortFileExistsError(PortOSError, FileExistsError):
    """EEXIST."""


class PortFileNotFoundError(PortOSError, FileNotFoundError):
    """ENOENT."""


class PortInterruptedError(PortOSError, InterruptedError):
    """EINTR."""


class PortIsADirectoryError(PortOSError, IsADirectoryError):
    """EISDIR."""


class PortNotADirectoryError(PortOSError, NotADirectoryError):
    """ENOTDIR."""


class PortPermissionError(PortOSError, PermissionError):
    """EACCES, EPERM."""


class PortProcessLookupError(PortOSError, ProcessLookupError):
    """ESRCH."""


class PortTimeoutOSError(PortOSError, TimeoutError):
    """ETIMEDOUT from the OS (a wait of portmgr's own raises PortTimeout)."""


class InternalError(PortError):
    """A bug inside portmgr (a caught panic). Please report it with the message."""

    code = 10


# The same errno -> class table CPython uses for the builtin OSError subclasses.
_OS_ERRORS: dict[int, type[PortOSError]] = {
    _errno.EAGAIN: PortBlockingIOError,
    _errno.EWOULDBLOCK: PortBlockingIOError,
    _errno.EALREADY: PortBlockingIOError,
    _errno.EINPROGRESS: PortBlockingIOError,
    _errno.ECHILD: PortChildProcessError,
    _errno.EPIPE: PortBrokenPipeError,
    _errno.ESHUTDOWN: PortBrokenPipeError,
    _errno.ECONNABORTED: PortConnectionAbortedError,
    _errno.ECONNREFUSED: PortConnectionRefusedError,
    _errno.ECONNRESET: PortConnectionResetError,
    _errno.EEXIST: PortFileExistsError,
    _errno.ENOENT: PortFileNotFoundError,
    _errno.EINTR: PortInterruptedError,
    _errno.EISDIR: PortIsADirectoryError,
    _errno.ENOTDIR: PortNotADirectoryError,
    _errno.EACCES: PortPermissionError,
    _errno.EPERM: PortPermissionError,
    _errno.ESRCH: PortProcessLookupError,
    _errno.ETIMEDOUT: PortTimeoutOSError,
}

_BY_CODE: dict[int, type[PortError]] = {
    1: InvalidArgument,
    2: PortsExhausted,
    3: PortInUse,
    4: NotFound,
    5: NotOwner,
    6: PortTimeout,
    7: RegistryCorrupt,
    8: InsecureDirectory,
    10: InternalError,
}


def _from_native(code: int, message: str, errno: Optional[int], details: dict[str, Any]) -> PortError:
    """Build the exception for a core error (called by the extension)."""
    if code == 9:
        cls = _OS_ERRORS.get(errno, PortOSError) if errno is not None else PortOSError
        return cls(errno, message, **details)
    if code == 6:
        return (LockTimeout if details.pop("lock", False) else PortTimeout)(message, **details)
    if code == 3 and "name" in details:
        return NameInUse(message, **details)
    return _BY_CODE.get(code, InternalError)(message, **details)
