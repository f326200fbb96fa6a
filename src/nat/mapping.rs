//! A gateway mapping tied to the lease that holds its port: renewed while the lease
//! lives, deleted when the lease is released or expires.
//!
//! [`map`] maps the port (with [`super::map_port`]) and, when a live lease in the
//! registry holds the port, starts one thread that follows that lease: every
//! [`MapOptions::poll`] it asks the registry whether the same lease (by id) still holds
//! the port, and at half the granted lifetime it maps again (renews). When the lease is
//! gone — released by any process, expired, or its owner dead — the thread deletes the
//! mapping, best effort: a failure is kept in [`Mapping::last_error`], never raised in
//! the thread. [`Mapping::delete`] deletes at once and returns the error.
//!
//! Dropping a [`Mapping`] does not delete it: the mapping's life is the lease's, not the
//! handle's. A port no lease holds is mapped once, for the lifetime asked, and nothing
//! follows it. If the process that made the mapping exits first, nothing renews it and
//! the gateway drops it when its lifetime ends: a short lifetime bounds that.
//!
//! ```no_run
//! use portmgr::{Registry, Request};
//! use portmgr::nat::{MapOptions, map};
//! let reg = Registry::open_default()?;
//! let mut lease = reg.allocate(&Request::new())?;
//! let m = map(&reg, lease.port(), &MapOptions::default())?;
//! println!("reachable from outside at port {}", m.granted().external_port);
//! lease.release()?; // the mapping is deleted within MapOptions::poll
//! m.wait_ended(Some(std::time::Duration::from_secs(5)));
//! assert!(m.last_error().is_none());
//! # Ok::<(), portmgr::Error>(())
//! ```

use std::net::Ipv4Addr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{MapMethod, MapProtocol, PortMapping, map_port, unmap_port};
use crate::error::{Error, Result};
use crate::registry::Registry;

/// The shortest wait between renewals, whatever lifetime the gateway granted.
const MIN_RENEW: Duration = Duration::from_secs(1);

/// How a port is mapped and followed.
#[derive(Clone, Debug)]
pub struct MapOptions {
    /// NAT-PMP, UPnP IGD, or `Auto` (NAT-PMP, then UPnP IGD).
    pub method: MapMethod,
    /// The gateway; `None`: the default route's (NAT-PMP) or the first IGD found (UPnP).
    pub gateway: Option<Ipv4Addr>,
    /// TCP or UDP.
    pub transport: MapProtocol,
    /// The lifetime asked of the gateway; a followed mapping is renewed at half of what
    /// the gateway granted.
    pub lifetime: Duration,
    /// How often the lease is checked: the longest a released lease's mapping stays.
    pub poll: Duration,
    /// Refuse (not found, before asking the gateway) when no lease holds the port,
    /// instead of mapping it once, untied.
    pub require_lease: bool,
}

impl Default for MapOptions {
    fn default() -> Self {
        MapOptions {
            method: MapMethod::Auto,
            gateway: None,
            transport: MapProtocol::Tcp,
            lifetime: Duration::from_secs(3600),
            poll: Duration::from_millis(250),
            require_lease: false,
        }
    }
}

/// Where a mapping stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MappingState {
    /// On the gateway; renewed while its lease lives (when it has one).
    Active,
    /// Its lease was released or expired, and the mapping was deleted (or deleting it
    /// failed: see [`Mapping::last_error`]).
    LeaseEnded,
    /// [`Mapping::delete`] was called.
    Deleted,
}

impl MappingState {
    /// `"active"`, `"lease_ended"` or `"deleted"`.
    pub fn as_str(self) -> &'static str {
        match self {
            MappingState::Active => "active",
            MappingState::LeaseEnded => "lease_ended",
            MappingState::Deleted => "deleted",
        }
    }
}

struct State {
    granted: PortMapping,
    state: MappingState,
    /// The deletion after the state left `Active` was tried (`last_error` is final).
    settled: bool,
    renewals: u64,
    last_error: Option<String>,
}

struct Shared {
    port: u16,
    lease_id: Option<u64>,
    opts: MapOptions,
    /// The method that granted the mapping: renewals and the deletion use it.
    method: MapMethod,
    state: Mutex<State>,
    /// Signalled when the state changes (and to wake the follower for a deletion).
    changed: Condvar,
    /// Held across every gateway request after the first, so that a renewal cannot
    /// re-create a mapping a deletion has just removed.
    op: Mutex<()>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn renew(&self) -> Result<PortMapping> {
        let g = self.lock().granted;
        match self.method {
            // RFC 6886 §3.3: a renewal asks for the external port granted before.
            MapMethod::NatPmp => {
                let o = super::NatPmpOptions { gateway: Some(g.gateway), ..Default::default() };
                super::natpmp::map(self.port, self.opts.transport, g.external_port, self.opts.lifetime, &o)
            }
            m => map_port(self.port, self.opts.transport, m, Some(g.gateway), self.opts.lifetime),
        }
    }

    fn unmap(&self) -> Result<()> {
        // NAT-PMP deletes by the internal port; UPnP by the external one, which
        // `map_port` asks to be the same.
        let g = self.lock().granted;
        unmap_port(self.port, self.opts.transport, self.method, Some(g.gateway))
    }

    /// Move from `Active` to `to` and delete the mapping; `Ok` without a request when it
    /// had already ended.
    fn end(&self, to: MappingState) -> Result<()> {
        let _op = self.op.lock().unwrap_or_else(|p| p.into_inner());
        {
            let mut s = self.lock();
            if s.state != MappingState::Active {
                return Ok(());
            }
            s.state = to;
        }
        self.changed.notify_all();
        let r = self.unmap();
        let mut s = self.lock();
        s.last_error = r.as_ref().err().map(|e| format!("deleting the gateway mapping of port {}: {e}", self.port));
        s.settled = true;
        drop(s);
        self.changed.notify_all();
        r
    }
}

/// A port mapped on the gateway, followed while the lease holding the port lives (see
/// the module text). Cheap to clone: clones share the mapping.
#[derive(Clone)]
pub struct Mapping {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.shared.lock();
        f.debug_struct("Mapping")
            .field("granted", &s.granted)
            .field("method", &self.shared.method)
            .field("lease_id", &self.shared.lease_id)
            .field("state", &s.state)
            .finish()
    }
}

/// Map `port` on the gateway as `opts` says and, when a live lease in `reg` holds the
/// port, tie the mapping to it (see the module text).
///
/// Errors: not found with [`MapOptions::require_lease`] when no lease holds the port;
/// those of [`super::map_port`] (invalid argument, timeout, the gateway's refusal), a
/// registry that cannot be read, an OS error when the follower thread
/// cannot start (the mapping is then deleted again).
pub fn map(reg: &Registry, port: u16, opts: &MapOptions) -> Result<Mapping> {
    if opts.poll.is_zero() {
        return Err(Error::invalid("the lease check interval (poll) must be above zero"));
    }
    let lease_id = reg.get_by_port(port)?.map(|i| i.lease_id);
    if opts.require_lease && lease_id.is_none() {
        return Err(Error::NotFound(format!("port {port} is not held by a lease, so its mapping has nothing to follow")));
    }
    // The method that answered (Auto: NAT-PMP or UPnP) renews and deletes it.
    let (granted, method) = super::map_with(port, opts.transport, opts.method, opts.gateway, opts.lifetime)?;
    let shared = Arc::new(Shared {
        port,
        lease_id,
        opts: opts.clone(),
        method,
        state: Mutex::new(State { granted, state: MappingState::Active, settled: false, renewals: 0, last_error: None }),
        changed: Condvar::new(),
        op: Mutex::new(()),
    });
    if let Some(id) = lease_id {
        let (sh, reg) = (Arc::clone(&shared), reg.clone());
        if let Err(e) = std::thread::Builder::new().name("portmgr-nat-map".into()).spawn(move || follow(&sh, &reg, id)) {
            let _ = shared.end(MappingState::Deleted);
            return Err(Error::os("starting the thread that renews the gateway mapping", e));
        }
    }
    Ok(Mapping { shared })
}

/// The follower: renew at half the granted lifetime, delete when the lease is gone or
/// [`Mapping::delete`] ended it.
fn follow(sh: &Shared, reg: &Registry, id: u64) {
    let mut next_renew = Instant::now() + renew_after(sh.lock().granted.lifetime);
    loop {
        {
            let s = sh.lock();
            let wait = sh.opts.poll.min(next_renew.saturating_duration_since(Instant::now()));
            let (s, _) = sh.changed.wait_timeout_while(s, wait, |s| s.state == MappingState::Active).unwrap_or_else(|p| p.into_inner());
            if s.state != MappingState::Active {
                return;
            }
        }
        match reg.get_by_port(sh.port) {
            Ok(Some(info)) if info.lease_id == id => {}
            Ok(_) => {
                let _ = sh.end(MappingState::LeaseEnded);
                return;
            }
            Err(e) => {
                sh.lock().last_error = Some(format!("checking the lease of port {}: {e}", sh.port));
                continue;
            }
        }
        if Instant::now() < next_renew {
            continue;
        }
        let _op = sh.op.lock().unwrap_or_else(|p| p.into_inner());
        if sh.lock().state != MappingState::Active {
            return;
        }
        match sh.renew() {
            Ok(m) => {
                next_renew = Instant::now() + renew_after(m.lifetime);
                let mut s = sh.lock();
                s.granted = m;
                s.renewals += 1;
                s.last_error = None;
            }
            Err(e) => {
                // Try again at a quarter of the lifetime asked, while the old mapping
                // still stands.
                next_renew = Instant::now() + (sh.opts.lifetime / 4).max(MIN_RENEW);
                sh.lock().last_error = Some(format!("renewing the gateway mapping of port {}: {e}", sh.port));
            }
        }
    }
}

fn renew_after(lifetime: Duration) -> Duration {
    (lifetime / 2).max(MIN_RENEW)
}

impl Mapping {
    /// What the gateway granted last (renewals update it).
    pub fn granted(&self) -> PortMapping {
        self.shared.lock().granted
    }
    /// The protocol that mapped it (never `Auto`).
    pub fn method(&self) -> MapMethod {
        self.shared.method
    }
    /// The id of the lease it is tied to; `None` when no lease held the port.
    pub fn lease_id(&self) -> Option<u64> {
        self.shared.lease_id
    }
    /// Where it stands.
    pub fn state(&self) -> MappingState {
        self.shared.lock().state
    }
    /// How many renewals succeeded.
    pub fn renewals(&self) -> u64 {
        self.shared.lock().renewals
    }
    /// The last failure of a renewal, a lease check or the deletion after the lease
    /// ended (`None` once a later renewal succeeded).
    pub fn last_error(&self) -> Option<String> {
        self.shared.lock().last_error.clone()
    }

    /// Renew now (map again); returns what the gateway granted. Invalid argument once the
    /// mapping ended.
    pub fn renew(&self) -> Result<PortMapping> {
        let _op = self.shared.op.lock().unwrap_or_else(|p| p.into_inner());
        let state = self.shared.lock().state;
        if state != MappingState::Active {
            return Err(Error::invalid(format!("the mapping of port {} has ended ({})", self.shared.port, state.as_str())));
        }
        let m = self.shared.renew()?;
        let mut s = self.shared.lock();
        s.granted = m;
        s.renewals += 1;
        Ok(m)
    }

    /// Delete the mapping now and stop following the lease. Idempotent: once ended,
    /// `Ok` without asking the gateway.
    pub fn delete(&self) -> Result<()> {
        self.shared.end(MappingState::Deleted)
    }

    /// Wait until the mapping ended (its lease's end, or [`Mapping::delete`]) and its
    /// deletion was tried, at most `timeout` (`None`: no limit). Whether it ended. An
    /// untied mapping only ends by `delete`.
    pub fn wait_ended(&self, timeout: Option<Duration>) -> bool {
        let s = self.shared.lock();
        let s = match timeout {
            None => self.shared.changed.wait_while(s, |s| !s.settled).unwrap_or_else(|p| p.into_inner()),
            Some(t) => self.shared.changed.wait_timeout_while(s, t, |s| !s.settled).unwrap_or_else(|p| p.into_inner()).0,
        };
        s.settled
    }
}
