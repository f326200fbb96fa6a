//! STUN (`portmgr_stun_external_address`) and gateway port mappings over the core's
//! [`crate::nat`]: the one-shot `portmgr_nat_map` / `portmgr_nat_unmap`, and the
//! `portmgr_nat_mapping` handle of a mapping tied to its port's lease
//! ([`crate::nat::mapping`]). Conversions only.

use std::ffi::c_char;
use std::time::Duration;

use super::guard::{c_str, copy_out, guard, guard_or, need, portmgr_status, put};
use super::handles::{self, Entry};
use super::registry::portmgr_registry;
use super::resolve::addr_out;
use crate::error::{Error, Result};
use crate::nat::{MapOptions, MapProtocol, MappingState};

/// A gateway mapping tied to the lease holding its port (see `portmgr_nat_mapping_new`).
///
/// Thread-safety: one handle may be used by any number of threads at once.
#[allow(non_camel_case_types)]
pub struct portmgr_nat_mapping {
    _private: [u8; 0],
}

/// `portmgr_nat_mapping_info`'s state: on the gateway, renewed while its lease lives.
pub const PORTMGR_NAT_ACTIVE: i32 = 0;
/// Its lease was released or expired and the mapping deleted (see
/// `portmgr_nat_mapping_error` for a failed deletion).
pub const PORTMGR_NAT_LEASE_ENDED: i32 = 1;
/// `portmgr_nat_mapping_delete` was called.
pub const PORTMGR_NAT_DELETED: i32 = 2;

/// This host's address as the STUN server `server` (`"HOST:PORT"`) sees it: a binding
/// request (RFC 8489) over UDP from `local_port` (0: any port), retransmitted with a
/// doubling timeout from 500 ms, 7 sends, then 8 s (39.5 s in all). The address as text
/// goes into `buf` (46 bytes hold any), the port into `*out_port`.
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` (a bad server, NULL or short `buf`, NULL
/// `out_port`), `PORTMGR_TIMEOUT` (no answer), `PORTMGR_OS` (the local port cannot be
/// bound, an error response, an answer without a mapped address). Thread-safe.
///
/// # Safety
/// `server` is NULL or NUL-terminated; `buf` is NULL or valid for writing `len` bytes;
/// `out_port` is NULL or valid for writing a `uint16_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_stun_external_address(
    server: *const c_char,
    local_port: u16,
    buf: *mut c_char,
    len: usize,
    out_port: *mut u16,
) -> portmgr_status {
    guard(|| {
        need(out_port, "out_port")?;
        need(buf, "buf")?;
        // SAFETY: NULL or NUL-terminated (the contract); c_str checks NULL.
        let server = unsafe { c_str(server, "server") }?;
        let a = crate::nat::stun_external_address(server, (local_port != 0).then_some(local_port))?;
        // SAFETY: forwarded contract; both pointers checked non-NULL.
        unsafe { addr_out(a, buf, len, out_port) }
    })
}

fn map_args(protocol: *const c_char, gateway: *const c_char) -> Result<(crate::nat::MapMethod, Option<std::net::Ipv4Addr>)> {
    let method = if protocol.is_null() {
        crate::nat::MapMethod::Auto
    } else {
        // SAFETY: non-NULL and NUL-terminated (the caller's contract).
        unsafe { c_str(protocol, "protocol") }?.parse()?
    };
    let gateway = if gateway.is_null() {
        None
    } else {
        // SAFETY: non-NULL and NUL-terminated (the caller's contract).
        let g = unsafe { c_str(gateway, "gateway") }?;
        Some(g.parse().map_err(|_| Error::invalid(format!("gateway {g:?} must be an IPv4 address"))))
            .transpose()?
    };
    Ok((method, gateway))
}

/// Map `port` of this host on the gateway for TCP (or UDP when `udp`) for
/// `lifetime_s` seconds, asking for the same external port; call again to renew.
/// `protocol` is NULL or `"auto"` (NAT-PMP, then UPnP IGD), `"natpmp"` or `"upnp"`;
/// `gateway` is NULL (NAT-PMP: the default route's gateway; UPnP: SSDP multicast) or an
/// IPv4 address. On `PORTMGR_OK`, `*out_external_port` and `*out_lifetime_s` (each may
/// be NULL) hold what the gateway granted.
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` (port 0, lifetime 0, a bad protocol or gateway),
/// `PORTMGR_TIMEOUT` (no gateway answered), `PORTMGR_NOT_FOUND` (no default route),
/// `PORTMGR_OS` (a refusal, with the gateway's reason in the message). Thread-safe.
///
/// # Safety
/// `protocol` and `gateway` are NULL or NUL-terminated; the out-pointers are NULL or
/// valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_nat_map(
    port: u16,
    protocol: *const c_char,
    gateway: *const c_char,
    lifetime_s: u32,
    udp: bool,
    out_external_port: *mut u16,
    out_lifetime_s: *mut u32,
) -> portmgr_status {
    guard(|| {
        let (method, gw) = map_args(protocol, gateway)?;
        let m = crate::nat::map_port(port, MapProtocol::of_udp(udp), method, gw, Duration::from_secs(u64::from(lifetime_s)))?;
        // SAFETY: NULL (skipped by put) or writable (the contract).
        unsafe { put(out_external_port, m.external_port) };
        // SAFETY: as above.
        unsafe { put(out_lifetime_s, u32::try_from(m.lifetime.as_secs()).unwrap_or(u32::MAX)) };
        Ok(())
    })
}

/// Delete the gateway's mapping of `port` (TCP, or UDP when `udp`); `protocol` and
/// `gateway` as for `portmgr_nat_map`. Errors as there. Thread-safe.
///
/// # Safety
/// `protocol` and `gateway` are NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_nat_unmap(port: u16, protocol: *const c_char, gateway: *const c_char, udp: bool) -> portmgr_status {
    guard(|| {
        let (method, gw) = map_args(protocol, gateway)?;
        crate::nat::unmap_port(port, MapProtocol::of_udp(udp), method, gw)
    })
}

/// Map `port` on the gateway (`protocol`, `gateway`, `lifetime_s` and `udp` as for
/// `portmgr_nat_map`) and, when a live lease in `reg` holds `port`, tie the mapping to
/// it: a thread renews it at half the granted lifetime while the lease lives and
/// deletes it (best effort; see `portmgr_nat_mapping_error`) within 250 ms of the
/// lease's release or expiry, by any process. A port no lease holds is mapped once for
/// `lifetime_s`. `*out` receives the handle; `portmgr_nat_mapping_free` frees it
/// without deleting the mapping (its lease decides), `portmgr_nat_mapping_delete`
/// deletes it at once.
///
/// Errors: those of `portmgr_nat_map`; `PORTMGR_INVALID_ARGUMENT` also for an invalid
/// registry handle or a NULL `out`. Thread-safe.
///
/// # Safety
/// `protocol` and `gateway` are NULL or NUL-terminated; `out` is NULL or valid for
/// writing a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_nat_mapping_new(
    reg: *const portmgr_registry,
    port: u16,
    protocol: *const c_char,
    gateway: *const c_char,
    lifetime_s: u32,
    udp: bool,
    out: *mut *mut portmgr_nat_mapping,
) -> portmgr_status {
    guard(|| {
        let registry = handles::registry(reg, "reg", false)?;
        need(out, "out")?;
        let (method, gateway) = map_args(protocol, gateway)?;
        let opts = MapOptions {
            method,
            gateway,
            transport: MapProtocol::of_udp(udp),
            lifetime: Duration::from_secs(u64::from(lifetime_s)),
            ..Default::default()
        };
        let m = crate::nat::map(&registry, port, &opts)?;
        let id = handles::insert(Entry::NatMapping(m));
        // SAFETY: `out` checked non-NULL; writable by the contract.
        unsafe { put(out, handles::to_ptr(id)) };
        Ok(())
    })
}

/// What the mapping stands at: the external port and lifetime last granted, the lease
/// id it is tied to (0: none), and its state (`PORTMGR_NAT_ACTIVE`, `_LEASE_ENDED`,
/// `_DELETED`). Each out-pointer may be NULL.
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` for an invalid handle. Thread-safe.
///
/// # Safety
/// The out-pointers are NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_nat_mapping_info(
    mapping: *const portmgr_nat_mapping,
    out_external_port: *mut u16,
    out_lifetime_s: *mut u32,
    out_lease_id: *mut u64,
    out_state: *mut i32,
) -> portmgr_status {
    guard(|| {
        let m = handles::nat_mapping(mapping, "mapping", false)?;
        let g = m.granted();
        let state = match m.state() {
            MappingState::Active => PORTMGR_NAT_ACTIVE,
            MappingState::LeaseEnded => PORTMGR_NAT_LEASE_ENDED,
            MappingState::Deleted => PORTMGR_NAT_DELETED,
        };
        // SAFETY: each NULL (skipped by put) or writable (the contract).
        unsafe {
            put(out_external_port, g.external_port);
            put(out_lifetime_s, u32::try_from(g.lifetime.as_secs()).unwrap_or(u32::MAX));
            put(out_lease_id, m.lease_id().unwrap_or(0));
            put(out_state, state);
        }
        Ok(())
    })
}

/// Wait until the mapping ended (its lease's end, or `portmgr_nat_mapping_delete`) and
/// its deletion was tried, at most `timeout_ms` (negative: no limit). Returns whether
/// it ended; false also for an invalid handle (the last error says why). Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn portmgr_nat_mapping_wait_ended(mapping: *const portmgr_nat_mapping, timeout_ms: i64) -> bool {
    guard_or(false, || {
        let m = handles::nat_mapping(mapping, "mapping", false)?;
        let t = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
        Ok(m.wait_ended(t))
    })
}

/// Copy the last failure of a renewal or of the deletion after the lease ended into
/// `buf` snprintf-style; returns its full length, 0 when there is none (or for an
/// invalid handle). Thread-safe.
///
/// # Safety
/// `buf` is NULL (with `len` 0) or valid for writing `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_nat_mapping_error(mapping: *const portmgr_nat_mapping, buf: *mut c_char, len: usize) -> usize {
    guard_or(0, || {
        let m = handles::nat_mapping(mapping, "mapping", false)?;
        let Some(e) = m.last_error() else { return Ok(0) };
        // SAFETY: forwarded contract.
        Ok(unsafe { copy_out(e.as_bytes(), buf, len) })
    })
}

/// Delete the mapping on the gateway now and stop following its lease; the handle stays
/// valid (free it with `portmgr_nat_mapping_free`). Idempotent.
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` for an invalid handle; those of
/// `portmgr_nat_unmap` when the gateway's deletion failed. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn portmgr_nat_mapping_delete(mapping: *const portmgr_nat_mapping) -> portmgr_status {
    guard(|| handles::nat_mapping(mapping, "mapping", false)?.delete())
}

/// Free the handle. The mapping itself is left to its lease (renewed while it lives,
/// deleted when it ends) or to its lifetime.
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` for an invalid handle (a second call does nothing
/// else). Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn portmgr_nat_mapping_free(mapping: *mut portmgr_nat_mapping) -> portmgr_status {
    guard(|| handles::nat_mapping(mapping, "mapping", true).map(drop))
}
