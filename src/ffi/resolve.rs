//! `portmgr_resolver` (the core's [`crate::resolve::Resolver`]): conversions only.
//! The STUN and gateway-mapping calls are in `ffi/nat.rs`.
//!
//! Resolver handles live in a table of their own (this file), with the conventions of
//! every other handle: the pointer is an identifier, never dereferenced; identifiers are
//! never reused, so a freed or forged handle is `PORTMGR_INVALID_ARGUMENT`.

use std::collections::HashMap;
use std::ffi::c_char;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::guard::{c_str, copy_out, guard, need, portmgr_status, put};
use crate::error::{Error, Result};
use crate::resolve::{Endpoint, Policy, Resolver, ResolverOptions};

/// A caching DNS resolver with a pick policy (see `portmgr_resolver_new`).
///
/// Thread-safety: one handle may be used by any number of threads at once.
pub struct portmgr_resolver {
    _private: [u8; 0],
}

static RESOLVERS: Mutex<Option<HashMap<usize, Arc<Resolver>>>> = Mutex::new(None);
/// Identifiers: odd multiples apart from the other handles' (never reused).
static NEXT: AtomicUsize = AtomicUsize::new(0);
const BASE: usize = 0x7e50_0000_0008;

fn resolver_of(p: *const portmgr_resolver, take: bool) -> Result<Arc<Resolver>> {
    if p.is_null() {
        return Err(Error::invalid("`resolver` is NULL"));
    }
    let mut t = RESOLVERS.lock();
    let map = t.get_or_insert_with(HashMap::new);
    let found = if take { map.remove(&p.addr()) } else { map.get(&p.addr()).cloned() };
    found.ok_or_else(|| {
        Error::invalid("`resolver` is not a live resolver handle (already freed, or not made by portmgr_resolver_new)")
    })
}

/// Make a resolver. `servers` is NULL (the system's DNS configuration) or a
/// comma-separated list of `IP:PORT` / `[IPV6]:PORT` DNS servers; `policy` is NULL
/// (`"round-robin"`), `"round-robin"`, `"weighted"` or `"priority"`. Answers are cached
/// for their TTL, clamped to `min_ttl_ms`..`max_ttl_ms` (0 and 0: the defaults, 0 s and
/// one day); a name that does not exist is remembered for `negative_ttl_ms` (0: 30 s).
/// Each DNS query times out after 2 s. Free it with `portmgr_resolver_free`.
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` for a NULL `out`, a bad server or policy, or
/// `min_ttl_ms` above a non-zero `max_ttl_ms`; `PORTMGR_OS` when the system's DNS
/// configuration cannot be read. Thread-safe.
///
/// # Safety
/// `servers` and `policy` are NULL or NUL-terminated strings; `out` is NULL or valid
/// for writing a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_resolver_new(
    servers: *const c_char,
    policy: *const c_char,
    min_ttl_ms: u64,
    max_ttl_ms: u64,
    negative_ttl_ms: u64,
    out: *mut *mut portmgr_resolver,
) -> portmgr_status {
    guard(|| {
        need(out, "out")?;
        let mut o = ResolverOptions::new();
        if !servers.is_null() {
            // SAFETY: non-NULL and NUL-terminated (the contract).
            let s = unsafe { c_str(servers, "servers") }?;
            for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                let (host, port) = crate::probe::parse_host_port(item)?;
                let ip = host.parse().map_err(|_| Error::invalid(format!("DNS server {item:?} is not IP:PORT")))?;
                o.servers.push(std::net::SocketAddr::new(ip, port));
            }
        }
        if !policy.is_null() {
            // SAFETY: non-NULL and NUL-terminated (the contract).
            o.policy = unsafe { c_str(policy, "policy") }?.parse::<Policy>()?;
        }
        o.min_ttl = Duration::from_millis(min_ttl_ms);
        if max_ttl_ms > 0 {
            o.max_ttl = Duration::from_millis(max_ttl_ms);
        }
        if negative_ttl_ms > 0 {
            o.negative_ttl = Duration::from_millis(negative_ttl_ms);
        }
        let r = Resolver::new(o)?;
        let id = BASE.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed).wrapping_mul(16));
        RESOLVERS.lock().get_or_insert_with(HashMap::new).insert(id, Arc::new(r));
        // SAFETY: checked non-NULL; writable by the contract.
        unsafe { put(out, std::ptr::without_provenance_mut(id)) };
        Ok(())
    })
}

/// Free a resolver (its cache goes with it). NULL is accepted (a no-op). Errors:
/// `PORTMGR_INVALID_ARGUMENT` for a handle already freed or not made by
/// `portmgr_resolver_new`. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn portmgr_resolver_free(resolver: *mut portmgr_resolver) -> portmgr_status {
    guard(|| {
        if resolver.is_null() {
            return Ok(());
        }
        resolver_of(resolver, true).map(drop)
    })
}

fn endpoint_json(e: &Endpoint) -> serde_json::Value {
    serde_json::json!({ "address": e.addr.ip().to_string(), "port": e.addr.port(), "target": e.target, "priority": e.priority, "weight": e.weight })
}

/// Every endpoint of `name` (`"HOST:PORT"`, `"[IPV6]:PORT"` or an SRV name
/// `"_service._proto.domain"`) as a JSON array of objects with `address`, `port`,
/// `target`, `priority`, `weight` (new keys may be added), sorted by priority, target,
/// address; from the cache while the TTLs last. The JSON is copied into `buf` as
/// `portmgr_registry_list_json` does (`*out_len` is its full length).
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` (a bad handle or name, NULL `out_len`),
/// `PORTMGR_NOT_FOUND` (NXDOMAIN, no address), `PORTMGR_TIMEOUT` (no DNS answer in time),
/// `PORTMGR_OS` (any other DNS failure). Thread-safe.
///
/// # Safety
/// `name` is NULL or NUL-terminated; `buf` is NULL or valid for writing `len` bytes;
/// `out_len` is NULL or valid for writing a `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_resolver_resolve_json(
    resolver: *const portmgr_resolver,
    name: *const c_char,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> portmgr_status {
    guard(|| {
        let r = resolver_of(resolver, false)?;
        need(out_len, "out_len")?;
        // SAFETY: NULL or NUL-terminated (the contract); c_str checks NULL.
        let name = unsafe { c_str(name, "name") }?;
        let list: Vec<_> = r.resolve(name)?.iter().map(endpoint_json).collect();
        // SAFETY: forwarded contract; `out_len` checked non-NULL.
        unsafe { super::registry::json_out(&list, buf, len, out_len) }
    })
}

/// Copy `addr`'s IP text into `buf` (snprintf-style) and its port into `*out_port`.
///
/// # Safety
/// `buf` NULL or writable for `len` bytes, `out_port` writable.
pub(super) unsafe fn addr_out(addr: std::net::SocketAddr, buf: *mut c_char, len: usize, out_port: *mut u16) -> Result<()> {
    let text = addr.ip().to_string();
    if len <= text.len() {
        return Err(Error::invalid(format!("`buf` has {len} bytes; the address needs {}", text.len() + 1)));
    }
    // SAFETY: `buf` is writable for `len` bytes (checked by the caller's contract, len > 0).
    unsafe { copy_out(text.as_bytes(), buf, len) };
    // SAFETY: checked non-NULL by the caller; writable by the contract.
    unsafe { put(out_port, addr.port()) };
    Ok(())
}

/// One endpoint of `name`, chosen by the resolver's policy: its IP address as text into
/// `buf` (46 bytes hold any address; a smaller `buf` that does not hold it is
/// `PORTMGR_INVALID_ARGUMENT` and nothing is written) and its port into `*out_port`.
/// Errors as `portmgr_resolver_resolve_json`. Thread-safe.
///
/// # Safety
/// `name` is NULL or NUL-terminated; `buf` is NULL or valid for writing `len` bytes;
/// `out_port` is NULL or valid for writing a `uint16_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_resolver_pick(
    resolver: *const portmgr_resolver,
    name: *const c_char,
    buf: *mut c_char,
    len: usize,
    out_port: *mut u16,
) -> portmgr_status {
    guard(|| {
        let r = resolver_of(resolver, false)?;
        need(out_port, "out_port")?;
        need(buf, "buf")?;
        // SAFETY: NULL or NUL-terminated (the contract); c_str checks NULL.
        let name = unsafe { c_str(name, "name") }?;
        let e = r.pick(name)?;
        // SAFETY: forwarded contract; both pointers checked non-NULL.
        unsafe { addr_out(e.addr, buf, len, out_port) }
    })
}
