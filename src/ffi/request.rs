//! `portmgr_request`: an opaque, extensible description of what to allocate.
//!
//! Opaque on purpose: new options become new setters, so a program built against an
//! older header keeps working with a newer library (no struct layout to outgrow).

use std::ffi::c_char;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::guard::{c_str, guard, need, portmgr_status, put};
use super::handles::{self, Entry, RequestEntry};
use crate::error::{Error, Result};
use crate::mapping::{validate_metadata, validate_type_name};
use crate::range::{PortRange, Protocols};
use crate::registry::{Request, validate_name};
use crate::strategy::Strategy;

/// What to allocate: protocols, range, strategy, name, count, contiguity, TTL, watched
/// process, preferred port, probe address. Opaque; made by `portmgr_request_new`, freed
/// by `portmgr_request_free`.
///
/// Functions: `portmgr_request_new`, `portmgr_request_free`,
/// `portmgr_request_set_protocols`, `portmgr_request_set_range`,
/// `portmgr_request_exclude`, `portmgr_request_set_strategy`,
/// `portmgr_request_set_hash_key`, `portmgr_request_set_name`,
/// `portmgr_request_set_count`, `portmgr_request_set_contiguous`,
/// `portmgr_request_set_ttl_ms`, `portmgr_request_set_watch_pid`,
/// `portmgr_request_set_preferred`, `portmgr_request_set_probe_addr`,
/// `portmgr_request_set_type`, `portmgr_request_set_metadata`.
///
/// A new request asks for one TCP port from the default pool, random strategy, held
/// while the allocating process lives. A request is only a description: it may be used
/// for any number of allocations, on any registry, and freed at any time (leases made
/// from it do not depend on it). Thread-safety: internally locked; concurrent setters
/// take turns. Setters that fail leave the request unchanged.
pub struct portmgr_request {
    _private: [u8; 0],
}

/// Strategy: uniform over the free ports of the range (the default).
pub const PORTMGR_STRATEGY_RANDOM: u32 = 0;
/// Strategy: the lowest free port of the range.
pub const PORTMGR_STRATEGY_SEQUENTIAL: u32 = 1;
/// Strategy: start at the FNV-1a 64 hash of the key (the name, or
/// `portmgr_request_set_hash_key`), then the next free port: the same name gets the same
/// port run after run when it is free.
pub const PORTMGR_STRATEGY_HASH: u32 = 2;
/// Strategy: let the kernel choose (`bind` to port 0), then register that port.
pub const PORTMGR_STRATEGY_KERNEL: u32 = 3;

/// Run `f` on the request behind handle `req`.
fn edit(req: *mut portmgr_request, f: impl FnOnce(&mut Request) -> Result<()>) -> portmgr_status {
    guard(|| edit_entry(req, |e| f(&mut e.req)))
}

/// Run `f` on the whole entry (request and service spec) behind handle `req`.
fn edit_entry(req: *mut portmgr_request, f: impl FnOnce(&mut RequestEntry) -> Result<()>) -> Result<()> {
    let r = handles::request(req, "req", false)?;
    let mut r = r.lock();
    // Work on a copy so that a failing setter leaves the request as it was.
    let mut next = r.clone();
    f(&mut next)?;
    *r = next;
    Ok(())
}

/// Make a new request with the defaults (one TCP port, default pool, random strategy).
///
/// On `PORTMGR_OK`, `*out` is a new handle that the caller owns and frees with
/// `portmgr_request_free`. Errors: `PORTMGR_INVALID_ARGUMENT` when `out` is NULL.
/// Thread-safe.
///
/// # Safety
/// `out` is NULL or valid for writing a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_request_new(out: *mut *mut portmgr_request) -> portmgr_status {
    guard(|| {
        need(out, "out")?;
        let entry = RequestEntry { req: Request::new(), ..RequestEntry::default() };
        let id = handles::insert(Entry::Request(Arc::new(Mutex::new(entry))));
        // SAFETY: checked non-NULL above; valid for writes by the contract.
        unsafe { put(out, handles::to_ptr(id)) };
        Ok(())
    })
}

/// Free a request. NULL is a no-op; an invalid or already freed handle is ignored (and
/// the thread's last error says so): never a crash. Leases allocated with the request
/// are not affected. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn portmgr_request_free(req: *mut portmgr_request) {
    if req.is_null() {
        return;
    }
    let _ = guard(|| handles::request(req, "req", true).map(drop));
}

/// Set the protocols the ports must be free for: `PORTMGR_PROTO_TCP` (the default),
/// `PORTMGR_PROTO_UDP` or both (`PORTMGR_PROTO_BOTH`).
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` for an invalid handle or a value other than 1 to 3.
/// Thread-safe: calls on one request take turns.
#[unsafe(no_mangle)]
pub extern "C" fn portmgr_request_set_protocols(req: *mut portmgr_request, protocols: u32) -> portmgr_status {
    edit(req, |r| {
        r.protocols = Protocols::from_bits(protocols)?;
        Ok(())
    })
}

/// Draw from the inclusive range `start`..=`end` instead of the default pool (which is
/// outside the kernel's ephemeral range). Replaces any earlier range and its exclusions.
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` for an invalid handle, `start` 0 or `start > end`.
/// Thread-safe: calls on one request take turns.
#[unsafe(no_mangle)]
pub extern "C" fn portmgr_request_set_range(req: *mut portmgr_request, start: u16, end: u16) -> portmgr_status {
    edit(req, |r| {
        r.range = Some(PortRange::new(start, end)?);
        Ok(())
    })
}

/// Never hand out the `n` ports at `ports` (added to earlier calls'): they are left out
/// of the request's range, or of the default pool when it names no range, and a
/// preferred port among them is skipped (with `required`, the allocation fails with
/// `PORTMGR_INVALID_ARGUMENT`). The array is read during the call only.
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` for an invalid handle, or `ports` NULL with
/// `n > 0`. A range left with no port fails at allocation, with
/// `PORTMGR_INVALID_ARGUMENT`.
/// Thread-safe: calls on one request take turns.
///
/// # Safety
/// `ports` is NULL or valid for reading `n` `uint16_t`s.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_request_exclude(
    req: *mut portmgr_request,
    ports: *const u16,
    n: usize,
) -> portmgr_status {
    edit(req, |r| {
        let list: &[u16] = if n == 0 {
            &[]
        } else if ports.is_null() {
            return Err(Error::invalid("`ports` is NULL"));
        } else {
            // SAFETY: non-NULL, and valid for reading `n` u16s by the contract.
            unsafe { std::slice::from_raw_parts(ports, n) }
        };
        *r = std::mem::take(r).exclude(list.iter().copied());
        Ok(())
    })
}

/// Choose how a port is picked: `PORTMGR_STRATEGY_RANDOM` (the default),
/// `PORTMGR_STRATEGY_SEQUENTIAL`, `PORTMGR_STRATEGY_HASH` (keyed by the name, or by the
/// key of `portmgr_request_set_hash_key`) or `PORTMGR_STRATEGY_KERNEL`.
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` for an invalid handle or an unknown value.
/// Thread-safe: calls on one request take turns.
#[unsafe(no_mangle)]
pub extern "C" fn portmgr_request_set_strategy(req: *mut portmgr_request, strategy: u32) -> portmgr_status {
    edit(req, |r| {
        r.strategy = match strategy {
            PORTMGR_STRATEGY_RANDOM => Strategy::Random,
            PORTMGR_STRATEGY_SEQUENTIAL => Strategy::Sequential,
            PORTMGR_STRATEGY_HASH => Strategy::Hash(None),
            PORTMGR_STRATEGY_KERNEL => Strategy::Kernel,
            other => {
                return Err(Error::invalid(format!(
                    "unknown strategy {other}: use PORTMGR_STRATEGY_RANDOM (0), _SEQUENTIAL (1), _HASH (2) or _KERNEL (3)"
                )));
            }
        };
        Ok(())
    })
}

/// Use the hash strategy keyed by `key` (UTF-8, copied) instead of the name.
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` for an invalid handle, a NULL or non-UTF-8 `key`.
/// Thread-safe: calls on one request take turns.
///
/// # Safety
/// `key` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_request_set_hash_key(req: *mut portmgr_request, key: *const c_char) -> portmgr_status {
    edit(req, |r| {
        // SAFETY: `key` is NULL or NUL-terminated (contract).
        let key = unsafe { c_str(key, "key") }?;
        r.strategy = Strategy::Hash(Some(key.to_owned()));
        Ok(())
    })
}

/// Name the lease (a service name: 1 to 56 bytes of UTF-8, no control characters),
/// copied. A name is unique among the registry's live leases (`PORTMGR_IN_USE` from
/// `portmgr_allocate` when taken) and is the hash strategy's key. NULL removes the name.
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` for an invalid handle or a name that is not valid
/// UTF-8, empty, too long or has control characters.
/// Thread-safe: calls on one request take turns.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_request_set_name(req: *mut portmgr_request, name: *const c_char) -> portmgr_status {
    edit(req, |r| {
        if name.is_null() {
            r.name = None;
            return Ok(());
        }
        // SAFETY: `name` is non-NULL and NUL-terminated (contract).
        let name = unsafe { c_str(name, "name") }?;
        validate_name(name)?;
        r.name = Some(name.to_owned());
        Ok(())
    })
}

/// Take `count` ports at once, all or nothing (1 to 4096; default 1).
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` for an invalid handle or a count out of range.
/// Thread-safe: calls on one request take turns.
#[unsafe(no_mangle)]
pub extern "C" fn portmgr_request_set_count(req: *mut portmgr_request, count: usize) -> portmgr_status {
    edit(req, |r| {
        // The core's own rule, checked now so that the setter fails (and the request
        // stays as it was) rather than the allocation.
        Request::new().count(count).validate()?;
        r.count = count;
        Ok(())
    })
}

/// With a count above 1: the ports must be consecutive.
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` for an invalid handle.
/// Thread-safe: calls on one request take turns.
#[unsafe(no_mangle)]
pub extern "C" fn portmgr_request_set_contiguous(req: *mut portmgr_request, contiguous: bool) -> portmgr_status {
    edit(req, |r| {
        r.contiguous = contiguous;
        Ok(())
    })
}

/// Hold the ports for `ttl_ms` milliseconds (renewable with `portmgr_lease_renew`),
/// whether or not this process lives. 0 removes the TTL (the default: held while the
/// allocating process lives).
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` for an invalid handle.
/// Thread-safe: calls on one request take turns.
#[unsafe(no_mangle)]
pub extern "C" fn portmgr_request_set_ttl_ms(req: *mut portmgr_request, ttl_ms: u64) -> portmgr_status {
    edit(req, |r| {
        r.ttl = (ttl_ms > 0).then(|| Duration::from_millis(ttl_ms));
        Ok(())
    })
}

/// Hold the ports while process `pid` lives (and, with a TTL, no longer than that),
/// whether or not this process lives. 0 removes the watched process.
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` for an invalid handle.
/// Thread-safe: calls on one request take turns.
#[unsafe(no_mangle)]
pub extern "C" fn portmgr_request_set_watch_pid(req: *mut portmgr_request, pid: u32) -> portmgr_status {
    edit(req, |r| {
        r.watch_pid = (pid > 0).then_some(pid);
        Ok(())
    })
}

/// Try `port` first. When it is taken: fail with `PORTMGR_IN_USE` if `required`, else
/// fall back to the strategy. With a count above 1 the request must be contiguous and
/// the block starts at `port`. Port 0 removes the preference.
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` for an invalid handle.
/// Thread-safe: calls on one request take turns.
#[unsafe(no_mangle)]
pub extern "C" fn portmgr_request_set_preferred(
    req: *mut portmgr_request,
    port: u16,
    required: bool,
) -> portmgr_status {
    edit(req, |r| {
        r.preferred = (port > 0).then_some(port);
        r.required = port > 0 && required;
        Ok(())
    })
}

/// Probe (and, for `portmgr_allocate_bound`, bind) on this IPv4 or IPv6 address, e.g.
/// `"127.0.0.1"`, instead of the dual-stack wildcard. NULL restores the wildcard.
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` for an invalid handle or an unparsable address.
/// Thread-safe: calls on one request take turns.
///
/// # Safety
/// `addr` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_request_set_probe_addr(
    req: *mut portmgr_request,
    addr: *const c_char,
) -> portmgr_status {
    edit(req, |r| {
        if addr.is_null() {
            r.probe_addr = None;
            return Ok(());
        }
        // SAFETY: `addr` is non-NULL and NUL-terminated (contract).
        let text = unsafe { c_str(addr, "addr") }?;
        let ip: IpAddr =
            text.parse().map_err(|_| Error::invalid(format!("{text:?} is not an IPv4 or IPv6 address")))?;
        r.probe_addr = Some(ip);
        Ok(())
    })
}

/// Give the lease a service type (UTF-8, copied; 1 to 32 of `a-z 0-9 - _`, e.g.
/// `"rest-api"`), recorded by `portmgr_allocate` and shown by `portmgr_services_json` and
/// `portmgr_export`. When the request names no range, the port is drawn from the type's
/// range (`rest-api`: 8080-8099, `database`: 5400-5499, ...; the types config file may
/// change them, see docs/mapping.md); an explicit range wins. NULL removes the type.
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` for an invalid handle or a malformed type name. A
/// well-formed but unknown type is reported by `portmgr_allocate`
/// (`PORTMGR_INVALID_ARGUMENT`, naming the known types). `portmgr_allocate_bound` does
/// not take a type. Thread-safe: calls on one request take turns.
///
/// # Safety
/// `service_type` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_request_set_type(
    req: *mut portmgr_request,
    service_type: *const c_char,
) -> portmgr_status {
    guard(|| {
        edit_entry(req, |e| {
            if service_type.is_null() {
                e.spec.service_type = None;
                return Ok(());
            }
            // SAFETY: `service_type` is non-NULL and NUL-terminated (contract).
            let t = unsafe { c_str(service_type, "service_type") }?;
            validate_type_name(t)?;
            e.spec.service_type = Some(t.to_owned());
            Ok(())
        })
    })
}

/// Set metadata entry `key` to `value` (both UTF-8, copied), recorded with the lease by
/// `portmgr_allocate` (or given to every member by `portmgr_group_allocate`); NULL
/// `value` removes the entry. At most 64 entries; keys 1 to 128 bytes without control
/// characters or `=`; values at most 4096 bytes without control characters but tab.
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` for an invalid handle, a NULL or non-UTF-8 key, a
/// non-UTF-8 value, or an entry out of those bounds (the request is then unchanged).
/// Thread-safe: calls on one request take turns.
///
/// # Safety
/// `key` is NULL or a NUL-terminated string; `value` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_request_set_metadata(
    req: *mut portmgr_request,
    key: *const c_char,
    value: *const c_char,
) -> portmgr_status {
    guard(|| {
        // SAFETY: `key` is NULL or NUL-terminated (contract).
        let key = unsafe { c_str(key, "key") }?.to_owned();
        let value = if value.is_null() {
            None
        } else {
            // SAFETY: `value` is non-NULL and NUL-terminated (contract).
            Some(unsafe { c_str(value, "value") }?.to_owned())
        };
        edit_entry(req, |e| {
            match value {
                Some(v) => {
                    e.spec.metadata.insert(key, v);
                }
                None => {
                    e.spec.metadata.remove(&key);
                }
            }
            validate_metadata(&e.spec.metadata)
        })
    })
}

/// A module's internal ports: `portmgr_allocate` gives one external port for each of the
/// `n` ports at `ports` (in one lease, all or none: the request's count becomes `n`) and
/// records the map, which `portmgr_lease_port_map`, the views and every export show.
/// `n == 0` clears them. The array is read during the call only.
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` for an invalid handle, `ports` NULL with `n > 0`,
/// port 0, a port given twice, or more than 4096 ports. Thread-safe: calls on one
/// request take turns.
///
/// # Safety
/// `ports` is NULL or valid for reading `n` `uint16_t`s.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_request_set_internal_ports(
    req: *mut portmgr_request,
    ports: *const u16,
    n: usize,
) -> portmgr_status {
    guard(|| {
        let list: Vec<u16> = if n == 0 {
            Vec::new()
        } else if ports.is_null() {
            return Err(Error::invalid("`ports` is NULL"));
        } else {
            // SAFETY: non-NULL, and valid for reading `n` u16s by the contract.
            unsafe { std::slice::from_raw_parts(ports, n) }.to_vec()
        };
        crate::mapping::validate_internal_ports(&list)?;
        edit_entry(req, |e| {
            e.spec.internal_ports = list;
            Ok(())
        })
    })
}
