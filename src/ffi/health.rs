//! The health report, its history and the overview through the C ABI:
//! `portmgr_registry_health_json`, `portmgr_registry_record_health_json`,
//! `portmgr_registry_health_history_json`, `portmgr_registry_overview_json`.

use std::os::raw::c_char;

use super::guard::portmgr_status;
use super::registry::{portmgr_registry, registry_json};
use crate::mapping::Services;

/// The health report (the one the `portmgr health` command and Python's
/// `portmgr.health()` give) as a JSON object: `ok` (bool), `threshold`, `held`,
/// `ranges` (every range in use: `kind` `"pool"`, `"type"` or `"explicit"`, `range`
/// `[start, end]`, `service_type`, `size`, `held`, `utilization`), and `problems`
/// (each: `kind` — `"exhausted"`, `"bound_elsewhere"`, `"expired"`, `"owner_gone"`,
/// `"damaged"` —, `range`, `service_type`, `port`, `pids`, `lease`, `message`). New keys
/// may be added. `threshold` (0 to 1) is the fullness at which a range counts as
/// exhausted (`portmgr health` uses 0.9). The service types are those in force
/// (`PORTMGR_TYPES`). Copied into `buf` and sized as `portmgr_registry_stats_json`.
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` (invalid handle, NULL `out_len`, `threshold`
/// outside 0 to 1 or not a number, a broken types config), `PORTMGR_TIMEOUT`.
/// Thread-safe.
///
/// # Safety
/// As `portmgr_registry_list_json`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_registry_health_json(
    reg: *const portmgr_registry,
    threshold: f64,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> portmgr_status {
    // SAFETY: forwarded contract.
    unsafe { registry_json(reg, buf, len, out_len, |r| Services::new(r)?.health(threshold)) }
}

/// Run one health check (as `portmgr_registry_health_json` with `threshold`) and record
/// it in the registry's health history, as `portmgr health --watch` does each interval:
/// a C supervisor calls this on its own schedule. The recorded entry (the shape of one
/// element of `portmgr_registry_health_history_json`, with its `seq`) is copied into
/// `buf` and sized as `portmgr_registry_stats_json`.
///
/// Errors: those of `portmgr_registry_health_json`, and those of
/// `portmgr_registry_health_history_json` for the history file. Thread-safe.
///
/// # Safety
/// As `portmgr_registry_list_json`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_registry_record_health_json(
    reg: *const portmgr_registry,
    threshold: f64,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> portmgr_status {
    // SAFETY: forwarded contract.
    unsafe { registry_json(reg, buf, len, out_len, |r| Services::new(r)?.record_health(threshold)) }
}

/// The overview (the one `portmgr overview --json` and Python's `portmgr.overview()`
/// give) as a JSON object: `services` (every live named service by name: `name`,
/// `port`, `ports`, `protocols`, `type`, `group`, `member`, `metadata`, `lease_id`,
/// `owner_pid`, `expires_ms`, `state`, and `port_map` for a module), `ports` (port, as a
/// string key, -> service name), `by_type` (type -> names), and `stats` (the fields of
/// `portmgr_registry_stats_json`, plus `ranges`, every range in use, and `types`, per
/// service type: `type`, `range`, `size`, `total`, `active`, `expired`, `reserved`,
/// `utilization`). New keys may be added. Copied into `buf` and sized as
/// `portmgr_registry_stats_json`.
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` (invalid handle, NULL `out_len`, a broken types
/// config), `PORTMGR_TIMEOUT`. Thread-safe.
///
/// # Safety
/// As `portmgr_registry_list_json`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_registry_overview_json(
    reg: *const portmgr_registry,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> portmgr_status {
    // SAFETY: forwarded contract.
    unsafe { registry_json(reg, buf, len, out_len, |r| Services::new(r)?.overview()) }
}

/// The health history of the registry (the checks recorded by `portmgr health --watch`,
/// Python's `portmgr.HealthMonitor`, `portmgr serve`'s monitor; the last 256), oldest
/// first, as a JSON array: each `seq`, `time_ms` (milliseconds since the epoch), `ok`,
/// `held`, `problem_count`, `problems` (each `kind`, `range`, `port`, `message`; at most
/// 8 kept) and `changed` (its state differs from the entry before). New keys may be
/// added. Copied into `buf` and sized as `portmgr_registry_stats_json`.
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` (invalid handle, NULL `out_len`),
/// `PORTMGR_INSECURE_DIRECTORY` (the history file is a symlink or not the user's),
/// `PORTMGR_TIMEOUT` (its lock held too long), `PORTMGR_OS`. Thread-safe.
///
/// # Safety
/// As `portmgr_registry_list_json`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_registry_health_history_json(
    reg: *const portmgr_registry,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> portmgr_status {
    // SAFETY: forwarded contract.
    unsafe { registry_json(reg, buf, len, out_len, |r| crate::mapping::health_history(&r)) }
}
