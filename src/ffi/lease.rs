//! `portmgr_lease`: held ports.

use std::time::Duration;

use super::guard::{guard, guard_or, portmgr_status};
use super::handles::{self, LeaseEntry};
use crate::error::{Error, Result};

/// A set of held ports, from `portmgr_allocate` or `portmgr_allocate_bound`. Opaque;
/// released and freed by `portmgr_lease_release` (or freed and detached by
/// `portmgr_lease_keep`): exactly one of the two, once.
///
/// Functions: `portmgr_lease_port`, `portmgr_lease_ports`, `portmgr_lease_id`,
/// `portmgr_lease_renew`, `portmgr_lease_release`, `portmgr_lease_keep`.
///
/// Thread-safety: internally locked; any thread may use it, concurrent calls take turns.
/// It stays valid after its registry handle is closed.
pub struct portmgr_lease {
    _private: [u8; 0],
}

/// The (first) port of the lease: for a multi-port lease the first of
/// `portmgr_lease_ports` (the lowest, for a contiguous block).
///
/// Returns 0 for NULL or an invalid (released, kept, forged) lease; the thread's last
/// error then says why. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn portmgr_lease_port(lease: *const portmgr_lease) -> u16 {
    guard_or(0, || Ok(handles::lease(lease, "lease", false)?.ports.first().copied().unwrap_or(0)))
}

/// The lease's id: the handle of `portmgr_release_id` and `portmgr_renew_id` (and of
/// `portmgr release --id`), `lease_id` in `portmgr_registry_list_json`. It stays valid
/// after `portmgr_lease_keep`, for any process of the user.
///
/// Returns 0 (never a lease id) for NULL or an invalid (released, kept, forged) lease;
/// the thread's last error then says why. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn portmgr_lease_id(lease: *const portmgr_lease) -> u64 {
    guard_or(0, || Ok(handles::lease(lease, "lease", false)?.id))
}

/// Copy the lease's ports into `ports` (at most `len` of them) and return how many the
/// lease has: call with `(lease, NULL, 0)` to learn the count. Ports come in the lease's
/// order (ascending for a contiguous block).
///
/// Returns 0 for NULL or an invalid lease (the thread's last error says why); a lease
/// always has at least one port. Thread-safe.
///
/// # Safety
/// `ports` is NULL or valid for writing `len` `uint16_t`s.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_lease_ports(lease: *const portmgr_lease, ports: *mut u16, len: usize) -> usize {
    guard_or(0, || {
        let entry = handles::lease(lease, "lease", false)?;
        if !ports.is_null() {
            let n = entry.ports.len().min(len);
            // SAFETY: `ports` is non-NULL and valid for `len` >= n u16 writes (contract);
            // the source is a separate Rust allocation.
            unsafe { std::ptr::copy_nonoverlapping(entry.ports.as_ptr(), ports, n) };
        }
        Ok(entry.ports.len())
    })
}

/// A module's port map (a lease allocated with `portmgr_request_set_internal_ports`):
/// writes up to `len` pairs, ordered by internal port, `internal[i]` -> `external[i]`,
/// and returns how many pairs the lease has (0 for a lease without internal ports, for
/// NULL or an invalid lease; the thread's last error says which). Call with
/// `(lease, NULL, NULL, 0)` to learn the count. Thread-safe.
///
/// # Safety
/// `internal` and `external` are NULL or each valid for writing `len` `uint16_t`s.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_lease_port_map(
    lease: *const portmgr_lease,
    internal: *mut u16,
    external: *mut u16,
    len: usize,
) -> usize {
    guard_or(0, || {
        let entry = handles::lease(lease, "lease", false)?;
        if len > 0 && (internal.is_null() || external.is_null()) {
            return Err(Error::invalid("`internal` or `external` is NULL but `len` is not 0"));
        }
        for (i, &(a, b)) in entry.port_map.iter().take(len).enumerate() {
            // SAFETY: both are non-NULL (checked: len > 0) and valid for `len` > i writes
            // (contract).
            unsafe {
                internal.add(i).write(a);
                external.add(i).write(b);
            }
        }
        Ok(entry.port_map.len())
    })
}

/// Give the lease a TTL of `ttl_ms` milliseconds from now: from then on it lives by its
/// TTL (renew it before it ends), no longer by this process.
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` (invalid lease, `ttl_ms` 0), `PORTMGR_TIMEOUT`,
/// `PORTMGR_NOT_FOUND` (the lease is gone from the registry: released by port or name).
/// Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn portmgr_lease_renew(lease: *const portmgr_lease, ttl_ms: u64) -> portmgr_status {
    guard(|| {
        if ttl_ms == 0 {
            return Err(Error::invalid("`ttl_ms` must be above 0"));
        }
        let entry = handles::lease(lease, "lease", false)?;
        let held = lock(&entry)?;
        let l = held.as_ref().ok_or_else(|| Error::invalid("`lease` was released"))?;
        l.renew(Duration::from_millis(ttl_ms))
    })
}

/// Release the lease's ports and free the handle.
///
/// Afterwards `lease` is invalid: a second `portmgr_lease_release` (or any other use)
/// returns `PORTMGR_INVALID_ARGUMENT`, never a crash. The handle is freed even when the
/// status is an error (`PORTMGR_TIMEOUT` waiting for the registry lock: the ports then
/// stay held until the process exits). Releasing a lease whose ports were already freed
/// by `portmgr_release_port`/`_name` succeeds. In a forked child, a lease allocated by
/// the parent stays the parent's: this frees the handle and changes nothing else.
/// Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn portmgr_lease_release(lease: *mut portmgr_lease) -> portmgr_status {
    guard(|| release(lease, false))
}

/// Detach the lease and free the handle: its ports stay held until this process exits,
/// or its TTL or watched process ends, and any process of the user may release them
/// (`portmgr_release_port`, `portmgr release`). Read the ports before with
/// `portmgr_lease_ports`.
///
/// Afterwards `lease` is invalid, as after `portmgr_lease_release`. Errors:
/// `PORTMGR_INVALID_ARGUMENT` (invalid lease), `PORTMGR_TIMEOUT` (the handle is freed all
/// the same). Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn portmgr_lease_keep(lease: *mut portmgr_lease) -> portmgr_status {
    guard(|| release(lease, true))
}

/// The lease inside `entry`, waiting a bounded time: another thread may be inside a call
/// on it (or, in a forked child, may have been when the process forked).
fn lock(entry: &LeaseEntry) -> Result<parking_lot::MutexGuard<'_, Option<crate::Lease>>> {
    entry
        .lease
        .try_lock_for(Duration::from_secs(30))
        .ok_or_else(|| Error::lock_timeout("another thread has been inside a call on this lease for 30 s"))
}

fn release(lease: *mut portmgr_lease, keep: bool) -> Result<()> {
    let entry = handles::lease(lease, "lease", true)?;
    if entry.pid != std::process::id() {
        // A forked child: the lease is the parent's. Dropping the handle is all there is
        // to do (the lease's own drop does nothing in a child), and the entry's mutex
        // may have been held by a parent thread at the fork: do not touch it.
        return Ok(());
    }
    let taken = lock(&entry)?.take();
    match taken {
        Some(l) if keep => l.keep().map(drop),
        Some(mut l) => l.release(),
        None => Ok(()),
    }
}
