//! A held set of ports, and the registries kept open for kept leases.

use super::*;

/// Registries whose leases were kept: held open until the process exits, so the owner
/// lock (and with it every kept lease) lives as long as the process.
/// Locked only with the process lock held, so never held across a `fork()`.
pub(super) static KEPT: Mutex<Vec<Registry>> = Mutex::new(Vec::new());


/// A held set of ports. Dropping it releases them, unless it was [kept](Lease::keep).
///
/// In a forked child, a lease inherited from the parent belongs to the parent:
/// releasing or dropping it there does nothing.
pub struct Lease {
    pub(super) registry: Registry,
    pub(super) ports: Vec<u16>,
    pub(super) name: Option<String>,
    pub(super) lease_id: u64,
    pub(super) owner: OwnerId,
    pub(super) fork_gen: u64,
    pub(super) active: bool,
    /// Its records were flagged detached when allocated (a TTL or a watched process), so
    /// `keep` has nothing to write.
    pub(super) detached: bool,
}

impl Lease {
    /// The (first) port.
    pub fn port(&self) -> u16 {
        self.ports[0]
    }
    /// All ports, ascending for a contiguous block.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }
    /// The service name, if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
    /// The lease id (shared by all its ports in the views).
    pub fn id(&self) -> u64 {
        self.lease_id
    }
    /// Whether `release` (or `keep`) was called.
    pub fn is_released(&self) -> bool {
        !self.active
    }

    /// Whether this process made the lease. In a forked child, a lease inherited from the
    /// parent is the parent's: `release`, `renew` and `keep` do nothing there, and every
    /// skin asks this rather than tracking fork ownership itself.
    pub fn is_mine(&self) -> bool {
        self.fork_gen == lock::fork_generation()
    }

    /// Release the ports now. Idempotent: later calls do nothing and succeed.
    pub fn release(&mut self) -> Result<()> {
        if !self.active {
            return Ok(());
        }
        self.active = false;
        if !self.is_mine() {
            return Ok(());
        }
        let (id, owner, ports) = (self.lease_id, self.owner, &self.ports);
        self.registry.with_lock(false, |ctx| {
            ctx.clear_lease(id, Some(owner), Some(ports));
            Ok(())
        })
    }

    /// Set the lease's TTL to `ttl` from now; it then lives by its TTL (renew it before it
    /// ends), no longer by this process. It acts on this lease's own records only: after
    /// `release` (or once the TTL ran out and the ports went to someone else) it is
    /// [`Error::NotFound`], never a renewal of another holder's lease on the same port.
    /// In a forked child it does nothing (the lease is the parent's).
    pub fn renew(&self, ttl: Duration) -> Result<()> {
        request::check_ttl(ttl)?;
        if !self.active {
            return Err(Error::NotFound(format!("lease {} was released", self.lease_id)));
        }
        if !self.is_mine() {
            return Ok(());
        }
        let (id, owner, ports) = (self.lease_id, self.owner, &self.ports);
        self.registry.with_lock(false, |ctx| ctx.renew_lease(id, Some(owner), Some(ttl), Some(ports)))
    }

    /// Stop managing the lease from this handle: it is not released on drop, stays held
    /// until this process exits (or its TTL / watched process ends), and any process of
    /// the user may release it (`portmgr release`). Returns the ports.
    ///
    /// A released lease cannot be kept ([`Error::NotFound`]); in a forked child it does
    /// nothing but return the ports (the lease is the parent's).
    pub fn keep(mut self) -> Result<Vec<u16>> {
        if !self.active {
            return Err(Error::NotFound(format!("lease {} was released, so it cannot be kept", self.lease_id)));
        }
        self.active = false;
        if !self.is_mine() {
            return Ok(std::mem::take(&mut self.ports));
        }
        if self.detached {
            // Flagged detached when allocated: nothing to write in the file (no file
            // lock), only KEPT to update, under the process lock as always.
            let _process = lock::lock_process(Instant::now() + self.registry.timeout())?;
            remember_kept(&self.registry);
            return Ok(std::mem::take(&mut self.ports));
        }
        let (id, owner, ports) = (self.lease_id, self.owner, &self.ports);
        self.registry.with_lock(false, |ctx| {
            for &p in ports {
                let r = ctx.map.record(p);
                if r.lease_id.load(Relaxed) == id
                    && r.owner_slot.load(Relaxed) == owner.slot
                    && r.owner_gen.load(Relaxed) == owner.generation
                {
                    ctx.begin(p);
                    r.flags.fetch_or(FLAG_DETACHED, Relaxed);
                    ctx.seal(p);
                }
            }
            remember_kept(&self.registry);
            Ok(())
        })?;
        Ok(std::mem::take(&mut self.ports))
    }
}

/// Hold `registry` in KEPT (once per handle).
fn remember_kept(registry: &Registry) {
    let mut kept = KEPT.lock();
    if !kept.iter().any(|r| Arc::ptr_eq(&r.inner, &registry.inner)) {
        kept.push(registry.clone());
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("ports", &self.ports).field("name", &self.name).field("id", &self.lease_id).finish()
    }
}

