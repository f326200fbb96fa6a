//! Free-standing functions: version, status names, the last error, the bind probe.

use std::ffi::{c_char, c_int};

use super::guard::{
    copy_out, guard, guard_quiet, last_errno, last_message, need, portmgr_status, portmgr_status_code, put,
};
use crate::probe;
use crate::range::Protocols;

/// Protocol bit: TCP. Combine with `|`; used by `portmgr_probe` and
/// `portmgr_request_set_protocols`.
pub const PORTMGR_PROTO_TCP: u32 = 1;
/// Protocol bit: UDP.
pub const PORTMGR_PROTO_UDP: u32 = 2;
/// TCP and UDP: the port must be free for both.
pub const PORTMGR_PROTO_BOTH: u32 = 3;

/// The library's version, e.g. `"0.1.0"`: a static string, never NULL, never to be freed.
///
/// Compare with `PORTMGR_VERSION` (the header's version) to detect a header/library
/// mismatch. Thread-safe; never fails.
#[unsafe(no_mangle)]
pub extern "C" fn portmgr_version() -> *const c_char {
    const VERSION: &std::ffi::CStr =
        match std::ffi::CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => panic!("the crate version contains a NUL byte"),
        };
    guard_quiet(c"".as_ptr(), || VERSION.as_ptr())
}

/// A short static description of `status` (`"ok"`, `"in use"`, …); unknown values
/// give `"unknown status"`. Never NULL, never to be freed. Thread-safe; never fails and
/// does not touch the last error.
///
/// Any value is accepted.
#[unsafe(no_mangle)]
pub extern "C" fn portmgr_status_str(status: portmgr_status_code) -> *const c_char {
    guard_quiet(c"internal error".as_ptr(), || {
        let s: &'static std::ffi::CStr = match status {
            0 => c"ok",
            1 => c"invalid argument",
            2 => c"ports exhausted",
            3 => c"in use",
            4 => c"not found",
            5 => c"not owner",
            6 => c"timed out",
            7 => c"registry corrupt",
            8 => c"insecure directory",
            9 => c"operating-system error",
            10 => c"internal error",
            _ => c"unknown status",
        };
        s.as_ptr()
    })
}

/// Copy the calling thread's last error message into `buf`, snprintf-style.
///
/// Writes at most `len - 1` bytes and a terminating NUL (nothing when `buf` is NULL or
/// `len` is 0), and returns the message's full length in bytes without the NUL: 0 when
/// the thread's most recent portmgr call succeeded. A return value `>= len` means the
/// message was truncated. Call it with `(NULL, 0)` to learn the size.
///
/// The message belongs to the most recent portmgr call on this thread that can fail;
/// this function does not change it. Thread-safe (each thread has its own).
///
/// # Safety
/// `buf` is NULL or valid for writes of `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_last_error_message(buf: *mut c_char, len: usize) -> usize {
    guard_quiet(0, || {
        let m = last_message();
        // SAFETY: `buf` is NULL or has room for `len` bytes (this function's contract).
        unsafe { copy_out(m.as_bytes(), buf, len) }
    })
}

/// The errno of the calling thread's last error when its status was `PORTMGR_OS`
/// (`EACCES`, `EADDRNOTAVAIL`, …), else 0. Never fails; does not change the last error.
/// Thread-safe (each thread has its own).
#[unsafe(no_mangle)]
pub extern "C" fn portmgr_last_os_error() -> c_int {
    guard_quiet(0, last_errno)
}

/// Probe whether `port` can be bound right now for `protocols`
/// (`PORTMGR_PROTO_TCP | PORTMGR_PROTO_UDP`) on every address (dual-stack wildcard, no
/// reuse options). Needs no registry and records nothing.
///
/// The answer is a hint only: another program may bind the port a moment later. To own
/// a port race-free, use `portmgr_allocate_bound`.
///
/// On `PORTMGR_OK`, `*out_free` is true when the port is free. Errors:
/// `PORTMGR_INVALID_ARGUMENT` for port 0, protocols other than 1 to 3, or a NULL
/// `out_free`; `PORTMGR_OS` when the probe socket cannot be made. Thread-safe.
///
/// # Safety
/// `out_free` is NULL or valid for writing a `bool`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_probe(port: u16, protocols: u32, out_free: *mut bool) -> portmgr_status {
    guard(|| {
        need(out_free, "out_free")?;
        let protocols = Protocols::from_bits(protocols)?;
        let free = probe::is_free(port, protocols)?;
        // SAFETY: checked non-NULL above; valid for writes by the contract.
        unsafe { put(out_free, free) };
        Ok(())
    })
}

/// Probe the `n` candidate endpoints `targets` (each a NUL-terminated `"HOST:PORT"`,
/// `"[IPV6]:PORT"` or bare `"PORT"` for localhost), given in priority order, all at once
/// with one timeout of `timeout_ms` milliseconds, and report the first in that order that
/// accepted a TCP connection, with every candidate's result, as a JSON object:
/// `reachable` (the winner's target as given, or null), `winner` (its index, or null),
/// `elapsed_ms`, and `candidates` (in the order given; each `target`, `host`, `port`,
/// `address` — the address that accepted, else the first tried, or null —, `outcome` —
/// `"reachable"`, `"refused"`, `"timed_out"`, `"unresolvable"` or `"unreachable"` —,
/// `elapsed_ms`, `error`). New keys may be added. Host names go through the system
/// resolver. The call returns within about `timeout_ms`, not the sum of the timeouts.
/// Nothing is sent on the probe connections, which are closed at once.
///
/// `*out_found` (when not NULL) is true when a candidate was reachable. The JSON is copied
/// into `buf` as `portmgr_registry_list_json` does; each call probes afresh, so give a
/// buffer large enough at once (about 512 bytes per candidate).
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` (NULL `targets` with `n > 0`, `n` 0 or above 256,
/// a NULL or malformed target, `timeout_ms` 0, NULL `out_len`, NULL `buf` with
/// `len > 0`); `PORTMGR_OS` when a probe thread cannot start. An unreachable or
/// unresolvable candidate is a result, not an error. Needs no registry. Thread-safe.
///
/// # Safety
/// `targets` is NULL or points to `n` pointers, each NULL or a NUL-terminated string;
/// `buf` is NULL or valid for writing `len` bytes; `out_len` and `out_found` are NULL or
/// valid for writing a `size_t` and a `bool`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_first_reachable_json(
    targets: *const *const c_char,
    n: usize,
    timeout_ms: u64,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
    out_found: *mut bool,
) -> portmgr_status {
    guard(|| {
        need(out_len, "out_len")?;
        if n == 0 || n > probe::MAX_CANDIDATES {
            return Err(crate::Error::invalid(format!(
                "`n` must be from 1 to {} candidates, not {n}",
                probe::MAX_CANDIDATES
            )));
        }
        if targets.is_null() {
            return Err(crate::Error::invalid("`targets` is NULL"));
        }
        // SAFETY: `targets` is non-NULL and points to `n` pointers (this function's contract).
        let ptrs = unsafe { std::slice::from_raw_parts(targets, n) };
        let list = ptrs
            .iter()
            .enumerate()
            // SAFETY: each pointer is NULL or a NUL-terminated string (the contract).
            .map(|(i, &p)| unsafe { super::guard::c_str(p, &format!("targets[{i}]")) }.map(str::to_owned))
            .collect::<crate::Result<Vec<String>>>()?;
        let r = probe::first_reachable(&list, std::time::Duration::from_millis(timeout_ms))?;
        // SAFETY: `out_found` is NULL or writable (the contract); put skips NULL.
        unsafe { put(out_found, r.winner.is_some()) };
        // SAFETY: forwarded contract; `out_len` checked non-NULL.
        unsafe { super::registry::json_out(&r, buf, len, out_len) }
    })
}
