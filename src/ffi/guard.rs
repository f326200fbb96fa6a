//! The panic boundary, the status type, the thread's last error and the argument checks
//! every exported function goes through.

use std::cell::RefCell;
use std::ffi::c_char;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::error::{Error, ErrorCode, Result};

/// The result of every fallible call: `PORTMGR_OK` (0) or a stable error code.
///
/// The values are the core's error codes and never change once released; new kinds get
/// new numbers, so treat unknown values as errors. In C the type is `uint32_t`.
/// `portmgr_status_str` names a value; `portmgr_last_error_message` explains the last
/// failure of the calling thread.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum portmgr_status {
    /// Success.
    PORTMGR_OK = 0,
    /// A caller passed something that cannot be right: a NULL or invalid handle, a NULL
    /// pointer, a name that is not UTF-8, a bad range, option or buffer size.
    PORTMGR_INVALID_ARGUMENT = 1,
    /// No free port is left in the range that was asked for.
    PORTMGR_EXHAUSTED = 2,
    /// The port or the service name asked for is held by someone else.
    PORTMGR_IN_USE = 3,
    /// No live lease with that port or name.
    PORTMGR_NOT_FOUND = 4,
    /// The lease belongs to another live process.
    PORTMGR_NOT_OWNER = 5,
    /// A wait (for the registry lock, most often) ran past its deadline.
    PORTMGR_TIMEOUT = 6,
    /// The registry file is damaged or of an unknown version.
    PORTMGR_REGISTRY_CORRUPT = 7,
    /// The registry directory or one of its files is not safe to use.
    PORTMGR_INSECURE_DIRECTORY = 8,
    /// An operating-system call failed; `portmgr_last_os_error` gives the errno.
    PORTMGR_OS = 9,
    /// A bug inside portmgr (a caught panic). Please report it with the message.
    PORTMGR_INTERNAL = 10,
}

/// A `portmgr_status` as a plain integer, for parameters: Rust must not receive an
/// out-of-range enum value from C. The header spells it `portmgr_status`.
pub type portmgr_status_code = u32;

impl From<ErrorCode> for portmgr_status {
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::InvalidArgument => portmgr_status::PORTMGR_INVALID_ARGUMENT,
            ErrorCode::Exhausted => portmgr_status::PORTMGR_EXHAUSTED,
            ErrorCode::InUse => portmgr_status::PORTMGR_IN_USE,
            ErrorCode::NotFound => portmgr_status::PORTMGR_NOT_FOUND,
            ErrorCode::NotOwner => portmgr_status::PORTMGR_NOT_OWNER,
            ErrorCode::Timeout => portmgr_status::PORTMGR_TIMEOUT,
            ErrorCode::RegistryCorrupt => portmgr_status::PORTMGR_REGISTRY_CORRUPT,
            ErrorCode::InsecureDirectory => portmgr_status::PORTMGR_INSECURE_DIRECTORY,
            ErrorCode::Os => portmgr_status::PORTMGR_OS,
            ErrorCode::Internal => portmgr_status::PORTMGR_INTERNAL,
        }
    }
}

struct LastError {
    message: String,
    errno: i32,
}

thread_local! {
    static LAST_ERROR: RefCell<Option<LastError>> = const { RefCell::new(None) };
}

fn set_last(message: String, errno: i32) {
    // `try_with`: during thread teardown the slot may be gone; then there is no one to tell.
    let _ = LAST_ERROR.try_with(|slot| *slot.borrow_mut() = Some(LastError { message, errno }));
}

fn clear_last() {
    let _ = LAST_ERROR.try_with(|slot| slot.borrow_mut().take());
}

/// The calling thread's last error message (empty when there is none).
pub(crate) fn last_message() -> String {
    LAST_ERROR.try_with(|slot| slot.borrow().as_ref().map(|e| e.message.clone())).ok().flatten().unwrap_or_default()
}

/// The errno of the calling thread's last error (0 when it was no OS error).
pub(crate) fn last_errno() -> i32 {
    LAST_ERROR.try_with(|slot| slot.borrow().as_ref().map_or(0, |e| e.errno)).unwrap_or(0)
}

fn record(err: &Error) -> portmgr_status {
    set_last(err.to_string(), err.raw_os_error().unwrap_or(0));
    err.code().into()
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "a panic without a message"
    }
}

fn record_panic(payload: &(dyn std::any::Any + Send)) {
    let err = Error::Internal(format!("panic inside the C API: {}", panic_text(payload)));
    set_last(err.to_string(), 0);
}

/// The panic boundary of every fallible exported function: clears the thread's last
/// error, runs `body`, and turns its error (or a panic) into a status and a message.
pub(crate) fn guard(body: impl FnOnce() -> Result<()>) -> portmgr_status {
    clear_last();
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => portmgr_status::PORTMGR_OK,
        Ok(Err(err)) => record(&err),
        Err(payload) => {
            record_panic(&*payload);
            portmgr_status::PORTMGR_INTERNAL
        }
    }
}

/// The panic boundary of an infallible exported function: `fallback` on an error or a
/// panic (and the last error says why).
pub(crate) fn guard_or<T>(fallback: T, body: impl FnOnce() -> Result<T>) -> T {
    clear_last();
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(v)) => v,
        Ok(Err(err)) => {
            record(&err);
            fallback
        }
        Err(payload) => {
            record_panic(&*payload);
            fallback
        }
    }
}

/// The panic boundary of a function that must not touch the last error (the ones that
/// read it, and the static lookups).
pub(crate) fn guard_quiet<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

/// Longest string argument read: names are at most 56 bytes, paths at most PATH_MAX.
pub(crate) const MAX_STR: usize = 4096;

/// The bytes of the NUL-terminated string `p` (argument `what`), without the NUL.
///
/// # Safety
/// `p` is NULL, or points to a NUL-terminated string, or to at least `MAX_STR + 1`
/// readable bytes; the bytes stay unchanged for `'a`.
pub(crate) unsafe fn c_bytes<'a>(p: *const c_char, what: &str) -> Result<&'a [u8]> {
    if p.is_null() {
        return Err(Error::invalid(format!("`{what}` is NULL")));
    }
    // SAFETY: `p` is non-NULL and, by this function's contract, readable up to its NUL or
    // for MAX_STR + 1 bytes; strnlen reads no further than either.
    let n = unsafe { libc::strnlen(p, MAX_STR + 1) };
    if n > MAX_STR {
        return Err(Error::invalid(format!("`{what}` is longer than {MAX_STR} bytes (or not NUL-terminated)")));
    }
    // SAFETY: strnlen found `n` readable bytes before the NUL at `p`; they outlive `'a`
    // by the contract.
    Ok(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), n) })
}

/// The NUL-terminated UTF-8 string `p` (argument `what`).
///
/// # Safety
/// As [`c_bytes`].
pub(crate) unsafe fn c_str<'a>(p: *const c_char, what: &str) -> Result<&'a str> {
    // SAFETY: forwarded contract.
    let bytes = unsafe { c_bytes(p, what) }?;
    std::str::from_utf8(bytes).map_err(|e| {
        Error::invalid(format!(
            "`{what}` is not valid UTF-8 (bad byte at offset {}); names must be UTF-8",
            e.valid_up_to()
        ))
    })
}

/// Fail with an invalid-argument error when the out-pointer `p` (argument `what`) is NULL.
pub(crate) fn need<T>(p: *mut T, what: &str) -> Result<()> {
    if p.is_null() { Err(Error::invalid(format!("`{what}` is NULL"))) } else { Ok(()) }
}

/// Store `v` through the out-pointer `p` when `p` is not NULL.
///
/// # Safety
/// `p` is NULL or valid for a write of a `T` (aligned, writable).
pub(crate) unsafe fn put<T>(p: *mut T, v: T) {
    if !p.is_null() {
        // SAFETY: non-NULL, and valid for writes by this function's contract.
        unsafe { p.write(v) }
    }
}

/// Copy `src` into the C buffer `buf` of `len` bytes snprintf-style: at most `len - 1`
/// bytes, then a NUL (nothing when `buf` is NULL or `len` is 0). Returns `src.len()`.
///
/// # Safety
/// `buf` is NULL or valid for writes of `len` bytes.
pub(crate) unsafe fn copy_out(src: &[u8], buf: *mut c_char, len: usize) -> usize {
    if !buf.is_null() && len > 0 {
        let n = src.len().min(len - 1);
        // SAFETY: `buf` has room for `len` > `n` bytes (contract); `src` is a separate
        // Rust allocation, so the ranges do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), buf.cast::<u8>(), n);
            buf.add(n).write(0);
        }
    }
    src.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_values_are_the_core_codes() {
        use portmgr_status::*;
        assert_eq!(PORTMGR_OK as u32, 0);
        for code in [
            ErrorCode::InvalidArgument,
            ErrorCode::Exhausted,
            ErrorCode::InUse,
            ErrorCode::NotFound,
            ErrorCode::NotOwner,
            ErrorCode::Timeout,
            ErrorCode::RegistryCorrupt,
            ErrorCode::InsecureDirectory,
            ErrorCode::Os,
            ErrorCode::Internal,
        ] {
            assert_eq!(portmgr_status::from(code) as u32, code as u32);
        }
        assert_eq!(PORTMGR_INTERNAL as u32, 10);
    }

    #[test]
    fn a_panic_becomes_internal_with_a_message() {
        let st = guard(|| panic!("boom {}", 42));
        assert_eq!(st, portmgr_status::PORTMGR_INTERNAL);
        let m = last_message();
        assert!(m.contains("boom 42"), "{m}");
        assert_eq!(guard_or(7u16, || panic!("x")), 7);
        assert_eq!(guard(|| Ok(())), portmgr_status::PORTMGR_OK);
        assert!(last_message().is_empty());
    }

    #[test]
    fn errors_set_the_message_and_errno() {
        let st = guard(|| Err(Error::os("bind", std::io::Error::from_raw_os_error(libc::EACCES))));
        assert_eq!(st, portmgr_status::PORTMGR_OS);
        assert_eq!(last_errno(), libc::EACCES);
    }
}
