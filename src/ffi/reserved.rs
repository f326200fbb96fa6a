//! The registry's reserved ports through the C ABI: `portmgr_reserve`,
//! `portmgr_unreserve`, `portmgr_reserved_json`.

use std::os::raw::c_char;

use super::guard::{c_str, guard, portmgr_status};
use super::handles;
use super::registry::{portmgr_registry, registry_json};

/// Reserve the ports `start..=end` registry-wide (`start == end` for one port), with an
/// optional reason (UTF-8, at most 232 bytes, no control characters; NULL or "" for none):
/// no process or language is handed them until `portmgr_unreserve`. The same span
/// reserved again gets the new reason. A port leased right now keeps its lease and is
/// blocked once released.
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` (invalid handle, port 0, `start > end`, a bad
/// reason, the table's 512 reservations full), `PORTMGR_TIMEOUT`. Thread-safe.
///
/// # Safety
/// `reason` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_reserve(
    reg: *mut portmgr_registry,
    start: u16,
    end: u16,
    reason: *const c_char,
) -> portmgr_status {
    guard(|| {
        let registry = handles::registry(reg, "reg", false)?;
        // SAFETY: `reason` is non-NULL (checked) and NUL-terminated (contract).
        let reason = if reason.is_null() { None } else { Some(unsafe { c_str(reason, "reason") }?) };
        registry.reserve(&[(start, end)], reason)?;
        Ok(())
    })
}

/// Unreserve every reserved port in `start..=end`: a reservation that only partly
/// overlaps keeps its other ports.
///
/// Errors: `PORTMGR_NOT_FOUND` when no reservation covers any of them,
/// `PORTMGR_INVALID_ARGUMENT` (invalid handle, port 0, `start > end`), `PORTMGR_TIMEOUT`.
/// Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn portmgr_unreserve(reg: *mut portmgr_registry, start: u16, end: u16) -> portmgr_status {
    guard(|| {
        handles::registry(reg, "reg", false)?.unreserve(&[(start, end)])?;
        Ok(())
    })
}

/// The registry's reservations as a JSON array of objects: `start`, `end`, `reason` (or
/// null), `created_ms`. New keys may be added. Copied into `buf` and sized as
/// `portmgr_registry_stats_json`.
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` (invalid handle, NULL `out_len`),
/// `PORTMGR_TIMEOUT`. Thread-safe.
///
/// # Safety
/// As `portmgr_registry_list_json`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_reserved_json(
    reg: *const portmgr_registry,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> portmgr_status {
    // SAFETY: forwarded contract.
    unsafe { registry_json(reg, buf, len, out_len, |r| r.reserved()) }
}
