//! The one error type of portmgr, with stable numeric codes.
//!
//! Every skin maps [`Error`] through [`Error::code`]: the C ABI returns the code as its
//! `portmgr_status`, Python raises the matching subclass of `portmgr.PortError`, and the
//! command line exits with the status documented in README.md. Codes never change once
//! released; new kinds get new numbers.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Stable numeric error kinds. `0` is reserved for success in the C ABI.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A caller passed something that cannot be right (bad range, bad name, bad option).
    InvalidArgument = 1,
    /// No free port is left in the range that was asked for.
    Exhausted = 2,
    /// The port (or the service name) asked for is held by someone else.
    InUse = 3,
    /// No lease with that port or name exists.
    NotFound = 4,
    /// The lease belongs to a live process that is not this one.
    NotOwner = 5,
    /// A wait (for the registry lock, a listener, a free port) ran past its deadline.
    Timeout = 6,
    /// The registry file is damaged or of an unknown version and cannot be used safely.
    RegistryCorrupt = 7,
    /// The registry directory or one of its files is not safe to use (owner, mode, symlink, file system).
    InsecureDirectory = 8,
    /// An operating-system call failed; the errno is carried along.
    Os = 9,
    /// A bug inside portmgr (a caught panic). Please report it.
    Internal = 10,
}

impl ErrorCode {
    /// The short, stable, lower-case name of the kind (`"exhausted"`, `"in use"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid argument",
            ErrorCode::Exhausted => "ports exhausted",
            ErrorCode::InUse => "in use",
            ErrorCode::NotFound => "not found",
            ErrorCode::NotOwner => "not owner",
            ErrorCode::Timeout => "timed out",
            ErrorCode::RegistryCorrupt => "registry corrupt",
            ErrorCode::InsecureDirectory => "insecure directory",
            ErrorCode::Os => "operating-system error",
            ErrorCode::Internal => "internal error",
        }
    }
}

/// Which wait an [`Error::Timeout`] ran past. Skins map it directly (Python:
/// `LockTimeout` for [`TimeoutKind::Lock`], `PortTimeout` for [`TimeoutKind::Wait`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TimeoutKind {
    /// The wait for a lock: the registry lock (held by another process or thread), or a
    /// handle another thread is inside a call on. Bounded by the lock timeout.
    Lock,
    /// A wait the caller asked for, with its own timeout: a listener to appear, a port
    /// to become free.
    Wait,
}

impl TimeoutKind {
    /// The short, stable, lower-case name of the kind: `"lock"` or `"wait"`.
    pub fn as_str(self) -> &'static str {
        match self {
            TimeoutKind::Lock => "lock",
            TimeoutKind::Wait => "wait",
        }
    }
}

/// Everything that can go wrong in portmgr. Messages say what happened and what to do.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A caller passed something that cannot be right.
    InvalidArgument(String),
    /// No free port is left; `what` names the range and why it is full.
    Exhausted {
        /// The range or request that ran dry, in words.
        what: String,
    },
    /// A port is held by someone else (another lease, or a socket outside portmgr).
    PortInUse {
        /// The port.
        port: u16,
        /// Who holds it, when known ("pid 1234", "a socket outside portmgr").
        holder: String,
    },
    /// A service name is held by a live lease.
    NameInUse {
        /// The name.
        name: String,
        /// The port(s) of the existing lease.
        ports: Vec<u16>,
    },
    /// No lease with that port or name.
    NotFound(String),
    /// The lease is held by another live process.
    NotOwner {
        /// What was asked for, in words.
        what: String,
        /// The holder's pid.
        pid: u32,
    },
    /// A deadline passed; `kind` says which wait it was.
    Timeout {
        /// The wait that ran past its deadline: a lock, or a wait the caller asked for.
        kind: TimeoutKind,
        /// What was waited for and, for a lock, who held it.
        message: String,
    },
    /// The registry file cannot be used safely.
    RegistryCorrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The registry directory (or a file in it) is not safe.
    InsecureDirectory {
        /// The directory or file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// An operating-system call failed.
    Os {
        /// What portmgr was doing.
        context: String,
        /// The OS error.
        source: io::Error,
    },
    /// A bug inside portmgr (for example a panic caught at the C boundary).
    Internal(String),
}

/// `Result` with portmgr's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The stable kind of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Error::Exhausted { .. } => ErrorCode::Exhausted,
            Error::PortInUse { .. } | Error::NameInUse { .. } => ErrorCode::InUse,
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::NotOwner { .. } => ErrorCode::NotOwner,
            Error::Timeout { .. } => ErrorCode::Timeout,
            Error::RegistryCorrupt { .. } => ErrorCode::RegistryCorrupt,
            Error::InsecureDirectory { .. } => ErrorCode::InsecureDirectory,
            Error::Os { .. } => ErrorCode::Os,
            Error::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The errno of an [`Error::Os`], if any.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Os { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// An [`Error::Os`] from an `io::Error`.
    pub(crate) fn os(context: impl Into<String>, source: io::Error) -> Self {
        Error::Os { context: context.into(), source }
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    /// A [`TimeoutKind::Lock`] timeout.
    pub(crate) fn lock_timeout(message: impl Into<String>) -> Self {
        Error::Timeout { kind: TimeoutKind::Lock, message: message.into() }
    }

    /// A [`TimeoutKind::Wait`] timeout.
    pub(crate) fn wait_timeout(message: impl Into<String>) -> Self {
        Error::Timeout { kind: TimeoutKind::Wait, message: message.into() }
    }

    /// The kind of an [`Error::Timeout`], if it is one.
    pub fn timeout_kind(&self) -> Option<TimeoutKind> {
        match self {
            Error::Timeout { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            Error::Exhausted { what } => write!(f, "no free port: {what}"),
            Error::PortInUse { port, holder } => write!(f, "port {port} is in use by {holder}"),
            Error::NameInUse { name, ports } => write!(
                f,
                "service name {name:?} is already held (port {}); release it first or use get_or_allocate",
                join_ports(ports)
            ),
            Error::NotFound(m) => write!(f, "not found: {m}"),
            Error::NotOwner { what, pid } => write!(
                f,
                "{what} is held by live process {pid}, not by this one; only a lease whose owner is gone, or that was kept/detached, may be released by another process"
            ),
            Error::Timeout { message, .. } => write!(f, "timed out: {message}"),
            Error::RegistryCorrupt { path, reason } => {
                write!(f, "registry file {} is unusable: {reason}", path.display())
            }
            Error::InsecureDirectory { path, reason } => {
                write!(f, "refusing registry location {}: {reason}", path.display())
            }
            Error::Os { context, source } => write!(f, "{context}: {source}"),
            Error::Internal(m) => write!(f, "internal error (a bug in portmgr, please report it): {m}"),
        }
    }
}

fn join_ports(ports: &[u16]) -> String {
    ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Os { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        // These numbers are the C ABI's status values: they must never change.
        assert_eq!(ErrorCode::InvalidArgument as u32, 1);
        assert_eq!(ErrorCode::Exhausted as u32, 2);
        assert_eq!(ErrorCode::InUse as u32, 3);
        assert_eq!(ErrorCode::NotFound as u32, 4);
        assert_eq!(ErrorCode::NotOwner as u32, 5);
        assert_eq!(ErrorCode::Timeout as u32, 6);
        assert_eq!(ErrorCode::RegistryCorrupt as u32, 7);
        assert_eq!(ErrorCode::InsecureDirectory as u32, 8);
        assert_eq!(ErrorCode::Os as u32, 9);
        assert_eq!(ErrorCode::Internal as u32, 10);
    }

    #[test]
    fn timeouts_record_their_kind_and_keep_code_and_message() {
        let lock = Error::lock_timeout("the registry lock was held by process 1");
        let wait = Error::wait_timeout("nothing accepted TCP connections on 127.0.0.1:1");
        assert_eq!((lock.code(), lock.timeout_kind()), (ErrorCode::Timeout, Some(TimeoutKind::Lock)));
        assert_eq!((wait.code(), wait.timeout_kind()), (ErrorCode::Timeout, Some(TimeoutKind::Wait)));
        assert_eq!(lock.to_string(), "timed out: the registry lock was held by process 1");
        assert_eq!(Error::invalid("x").timeout_kind(), None);
        assert_eq!((TimeoutKind::Lock.as_str(), TimeoutKind::Wait.as_str()), ("lock", "wait"));
    }

    #[test]
    fn os_error_keeps_errno() {
        let e = Error::os("bind", io::Error::from_raw_os_error(libc::EADDRINUSE));
        assert_eq!(e.code(), ErrorCode::Os);
        assert_eq!(e.raw_os_error(), Some(libc::EADDRINUSE));
        assert!(e.to_string().starts_with("bind: "));
    }
}
