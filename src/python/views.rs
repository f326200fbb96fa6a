//! The registry's views as Python objects: `LeaseInfo` (one live port) and `Stats`.

use pyo3::prelude::*;

use crate::registry::{LeaseInfo, ReservedRange, Stats};

/// One live port of the registry, as the views show it.
#[pyclass(name = "LeaseInfo", module = "portmgr", frozen, get_all)]
pub(super) struct PyLeaseInfo {
    /// The port.
    port: u16,
    /// "tcp", "udp" or "both".
    protocols: String,
    /// The service name, if any.
    name: Option<String>,
    /// The lease this port belongs to.
    lease_id: u64,
    /// The process that allocated it.
    owner_pid: u32,
    /// When it was allocated, milliseconds since the Unix epoch.
    created_ms: u64,
    /// When its TTL ends (ms since the epoch), or None.
    expires_ms: Option<u64>,
    /// The watched process, if any.
    watch_pid: Option<u32>,
    /// Kept or detached: any process of the user may release it.
    detached: bool,
    /// Handed out as a bound socket.
    bound: bool,
    /// "held", "pending", "expired" or "owner gone".
    state: String,
}

impl From<LeaseInfo> for PyLeaseInfo {
    fn from(i: LeaseInfo) -> Self {
        PyLeaseInfo {
            port: i.port,
            protocols: i.protocols,
            name: i.name,
            lease_id: i.lease_id,
            owner_pid: i.owner_pid,
            created_ms: i.created_ms,
            expires_ms: i.expires_ms,
            watch_pid: i.watch_pid,
            detached: i.detached,
            bound: i.bound,
            state: i.state,
        }
    }
}

#[pymethods]
impl PyLeaseInfo {
    fn __repr__(&self) -> String {
        let name = self
            .name
            .as_ref()
            .map_or("None".to_string(), |n| format!("{n:?}"));
        format!(
            "LeaseInfo(port={}, protocols={:?}, name={name}, owner_pid={}, state={:?})",
            self.port, self.protocols, self.owner_pid, self.state
        )
    }
}

/// Registry figures.
#[pyclass(name = "Stats", module = "portmgr", frozen, get_all)]
pub(super) struct PyStats {
    /// The default pool, "A-B".
    pool: String,
    /// Usable ports in the default pool.
    pool_size: usize,
    /// Live ports in the registry, all ranges.
    held: usize,
    /// Live ports inside the default pool.
    held_in_pool: usize,
    /// Ports of the registry's reservations, all ranges.
    reserved: usize,
    /// Reserved ports inside the default pool that are not held.
    reserved_in_pool: usize,
    /// pool_size - held_in_pool - reserved_in_pool.
    free: usize,
    /// (held_in_pool + reserved_in_pool) / pool_size, 0 to 1.
    utilization: f64,
    /// Processes attached as owners right now.
    owners: usize,
    /// Ports handed out, ever.
    allocations: u64,
    /// Ports released by a call, ever.
    releases: u64,
    /// Ports reclaimed from dead owners or expired leases, ever.
    reclaimed: u64,
}

impl From<Stats> for PyStats {
    fn from(s: Stats) -> Self {
        PyStats {
            pool: s.pool,
            pool_size: s.pool_size,
            held: s.held,
            held_in_pool: s.held_in_pool,
            reserved: s.reserved,
            reserved_in_pool: s.reserved_in_pool,
            free: s.free,
            utilization: s.utilization,
            owners: s.owners,
            allocations: s.allocations,
            releases: s.releases,
            reclaimed: s.reclaimed,
        }
    }
}

#[pymethods]
impl PyStats {
    fn __repr__(&self) -> String {
        format!(
            "Stats(pool={:?}, pool_size={}, held={}, free={}, owners={})",
            self.pool, self.pool_size, self.held, self.free, self.owners
        )
    }
}

/// A registry-wide reservation: the ports `start..=end` are never handed out.
#[pyclass(name = "ReservedRange", module = "portmgr", frozen, get_all, eq)]
#[derive(PartialEq)]
pub(super) struct PyReservedRange {
    /// The first reserved port.
    start: u16,
    /// The last reserved port (`start` for one port).
    end: u16,
    /// Why, or None.
    reason: Option<String>,
    /// When it was made, milliseconds since the Unix epoch.
    created_ms: u64,
}

impl From<ReservedRange> for PyReservedRange {
    fn from(r: ReservedRange) -> Self {
        PyReservedRange { start: r.start, end: r.end, reason: r.reason, created_ms: r.created_ms }
    }
}

#[pymethods]
impl PyReservedRange {
    fn __repr__(&self) -> String {
        let reason = self.reason.as_ref().map_or_else(|| "None".to_string(), |r| format!("{r:?}"));
        format!("ReservedRange(start={}, end={}, reason={reason})", self.start, self.end)
    }
    fn __contains__(&self, port: i64) -> bool {
        (i64::from(self.start)..=i64::from(self.end)).contains(&port)
    }
}
