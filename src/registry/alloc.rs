//! Allocation: pick candidates under the lock, mark them pending, claim (probe or bind)
//! outside it, roll back what was busy, confirm the rest.

use super::*;

impl Registry {
    /// Allocate ports as `req` asks. The lease releases them when dropped, unless kept.
    pub fn allocate(&self, req: &Request) -> Result<Lease> {
        let addr = req.probe_addr;
        let protocols = req.protocols;
        let (lease, _) = self.allocate_with(req, &mut |p| {
            let free = match addr {
                Some(a) => probe::is_free_on(a, p, protocols)?,
                None => probe::is_free(p, protocols)?,
            };
            Ok(free.then_some(()))
        })?;
        Ok(lease)
    }

    /// Allocate ports and hand them over bound: a TCP socket listening on each port (and a
    /// UDP socket bound to it, for UDP or both). The only race-free hand-over: no other
    /// program can take the port between the allocation and your use of it.
    pub fn allocate_bound(&self, req: &Request) -> Result<(Lease, Vec<BoundSocket>)> {
        let addr = req.probe_addr.unwrap_or_else(probe::wildcard);
        let protocols = req.protocols;
        let (lease, socks) = self.allocate_with(req, &mut |p| {
            let mut out = Vec::new();
            for proto in [Protocols::TCP, Protocols::UDP] {
                if protocols.bits() & proto.bits() == 0 {
                    continue;
                }
                match probe::bind_socket(addr, p, proto) {
                    Ok(socket) => out.push(BoundSocket { port: p, protocol: proto, socket }),
                    Err(Error::PortInUse { .. }) => return Ok(None),
                    Err(e) => return Err(e),
                }
            }
            Ok(Some(out))
        })?;
        self.mark_bound(&lease)?;
        Ok((lease, socks.into_iter().flatten().collect()))
    }

    /// Allocate ports and bind each on every address of `opts`, for the request's
    /// protocols, with `opts`' socket options (`reuse_port` with N workers gives N sockets
    /// per address and protocol): a listener set, held as one lease, all or nothing — a
    /// port in use on any address is skipped for another, and any other failure closes
    /// what was bound and frees the ports. For one port on `127.0.0.1` and `::1` at once,
    /// `SO_REUSEPORT` workers, or TCP and UDP together.
    pub fn allocate_listeners(
        &self,
        req: &Request,
        opts: &crate::listen::ListenOptions,
    ) -> Result<(Lease, Vec<crate::listen::Listener>)> {
        opts.validate(req.protocols)?;
        let protocols = req.protocols;
        let (lease, sets) = self.allocate_with(req, &mut |p| crate::listen::bind_set(p, protocols, opts))?;
        self.mark_bound(&lease)?;
        Ok((lease, sets.into_iter().flatten().collect()))
    }

    /// Flag the lease's records as handed out bound (the views show it).
    fn mark_bound(&self, lease: &Lease) -> Result<()> {
        let ports = lease.ports.clone();
        self.with_lock(true, |ctx| {
            for &p in &ports {
                let r = ctx.map.record(p);
                if r.lease_id.load(Relaxed) == lease.lease_id {
                    ctx.begin(p);
                    r.flags.fetch_or(FLAG_BOUND, Relaxed);
                    ctx.seal(p);
                }
            }
            Ok(())
        })
    }

    /// Return the live lease named `req`'s name if there is one (as a [`LeaseInfo`] list),
    /// else allocate. A lease held by this registry handle is returned as it is.
    pub fn get_or_allocate(&self, req: &Request) -> Result<std::result::Result<Lease, Vec<LeaseInfo>>> {
        let name = req.name.as_deref().ok_or_else(|| Error::invalid("get_or_allocate needs a name"))?;
        match self.allocate(req) {
            Ok(l) => Ok(Ok(l)),
            Err(Error::NameInUse { .. }) => Ok(Err(self.get_by_name(name)?)),
            Err(e) => Err(e),
        }
    }

    /// The allocation loop: pick and mark pending under the lock, `claim` (probe or bind)
    /// outside it, roll back what was busy, confirm the rest.
    pub(super) fn allocate_with<T>(
        &self,
        req: &Request,
        claim: &mut dyn FnMut(u16) -> Result<Option<T>>,
    ) -> Result<(Lease, Vec<T>)> {
        req.validate()?;
        let mut range = match &req.range {
            Some(r) => r.clone(),
            None => self.default_pool()?,
        };
        if !req.exclude.is_empty() {
            range = range.excluding(req.exclude.iter().copied())?;
        }
        let watch = match req.watch_pid {
            None => None,
            Some(pid) => match sys::proc_state(pid) {
                ProcState::Alive(start) => Some((pid, start)),
                ProcState::Unknown => Some((pid, 0)),
                ProcState::Dead => {
                    return Err(Error::invalid(format!("process {pid} does not exist, so it cannot be watched")));
                }
            },
        };
        let mut plan = Plan { req, range: &range, lease_id: 0, watch };
        let mut got: Vec<(u16, T)> = Vec::with_capacity(req.count);
        let mut skip: HashSet<u16> = HashSet::new();
        let mut first = true;
        let mut held_in: Option<(Arc<Map>, OwnerId)> = None;
        loop {
            let want = req.count - got.len();
            let picked = self.with_lock(true, |ctx| {
                if plan.lease_id == 0 {
                    // Wrapping, never 0: the counter lives in the file and may be garbage.
                    plan.lease_id = ctx.map.header().next_lease_id.fetch_add(1, AcqRel).wrapping_add(1).max(1);
                }
                // The mapping and owner this round marked in: confirmed below without
                // touching the handle's state (no mutex outside the process lock).
                held_in = ctx.me.map(|me| (Arc::clone(ctx.map), me));
                ctx.pick(&plan, want, &skip, first)
            });
            let lease_id = plan.lease_id;
            let picked = match picked {
                Ok(p) => p,
                Err(e) => {
                    self.rollback(lease_id, got.iter().map(|g| g.0))?;
                    return Err(e);
                }
            };
            failpoint("picked");
            let preferred_round = first && req.preferred.is_some();
            first = false;
            if picked.len() < want {
                let mut all: Vec<u16> = got.iter().map(|g| g.0).collect();
                all.extend(&picked);
                self.rollback(lease_id, all)?;
                return Err(Error::Exhausted { what: exhausted_msg(req, &range, skip.len()) });
            }
            let mut busy = Vec::new();
            let mut fresh = Vec::new();
            for &p in &picked {
                match claim(p) {
                    Ok(Some(t)) => fresh.push((p, t)),
                    Ok(None) => busy.push(p),
                    Err(e) => {
                        let mut all: Vec<u16> = got.iter().map(|g| g.0).collect();
                        all.extend(&picked);
                        self.rollback(lease_id, all)?;
                        return Err(e);
                    }
                }
            }
            if !busy.is_empty() {
                skip.extend(&busy);
                // A contiguous block is all or nothing: give back the whole block.
                let back: Vec<u16> = if req.contiguous { picked.clone() } else { busy.clone() };
                if req.contiguous {
                    fresh.clear();
                }
                self.rollback(lease_id, back)?;
                if preferred_round && req.required {
                    self.rollback(lease_id, got.iter().map(|g| g.0))?;
                    // A port this process may not bind is a permission problem, not "in use".
                    let p = busy[0];
                    let addr = req.probe_addr.unwrap_or_else(probe::wildcard);
                    if probe::state_on(addr, p, req.protocols)? == probe::PortState::Privileged {
                        return Err(probe::privileged_error(p));
                    }
                    return Err(Error::PortInUse { port: p, holder: "a socket outside portmgr".into() });
                }
            }
            got.extend(fresh);
            if got.len() == req.count {
                break;
            }
        }
        let lease_id = plan.lease_id;
        // Confirm: pending -> held, without the lock (see the module docs).
        failpoint("before-confirm");
        let (ports, items): (Vec<u16>, Vec<T>) = got.into_iter().unzip();
        let (map, owner) = held_in.ok_or_else(|| Error::Internal("no owner slot after picking".into()))?;
        for &p in &ports {
            map.record(p).state.store(HELD, Release);
        }
        map.header().allocations.fetch_add(ports.len() as u64, AcqRel);
        let mut ports_sorted = ports;
        if req.contiguous {
            ports_sorted.sort_unstable();
        }
        Ok((
            Lease {
                registry: self.clone(),
                ports: ports_sorted,
                name: req.name.clone(),
                lease_id,
                owner,
                fork_gen: lock::fork_generation(),
                active: true,
                // As mark_pending flags the records.
                detached: req.ttl.is_some() || req.watch_pid.is_some(),
            },
            items,
        ))
    }

    pub(super) fn rollback(&self, lease_id: u64, ports: impl IntoIterator<Item = u16>) -> Result<()> {
        let ports: Vec<u16> = ports.into_iter().collect();
        if ports.is_empty() {
            return Ok(());
        }
        self.with_lock(true, |ctx| {
            for p in ports {
                if ctx.map.holds_lease(p, lease_id) {
                    let held = ctx.map.record(p).state.load(Acquire) == HELD;
                    ctx.clear(p);
                    if held {
                        ctx.map.header().releases.fetch_add(1, AcqRel);
                    }
                }
            }
            Ok(())
        })
    }
}

pub(super) fn exhausted_msg(req: &Request, range: &PortRange, busy: usize) -> String {
    let what = if req.contiguous && req.count > 1 {
        format!("no block of {} consecutive free ports", req.count)
    } else if req.count > 1 {
        format!("fewer than {} free ports", req.count)
    } else {
        "no free port".to_string()
    };
    let src = if req.range.is_some() { "the requested range" } else { "the default pool" };
    format!(
        "{what} in {src} {range} ({busy} found bound by other programs, the rest held or reserved in the registry); release ports (`portmgr gc`, `portmgr list`), or ask for a larger range"
    )
}
/// What an allocation asks for, fixed for all its rounds.
pub(super) struct Plan<'a> {
    pub(super) req: &'a Request,
    pub(super) range: &'a PortRange,
    pub(super) lease_id: u64,
    pub(super) watch: Option<(u32, u64)>,
}

impl Ctx<'_> {
    /// Choose `want` ports for the plan (not in `skip`, not held) and mark them pending.
    pub(super) fn pick(&mut self, plan: &Plan<'_>, want: usize, skip: &HashSet<u16>, first: bool) -> Result<Vec<u16>> {
        let req = plan.req;
        let me = self.me.ok_or_else(|| Error::Internal("no owner slot".into()))?;
        if first
            && let Some(name) = &req.name
            && let Some(ports) = self.name_holder(name)
        {
            return Err(Error::NameInUse { name: name.clone(), ports });
        }
        let mut out: Vec<u16> = Vec::with_capacity(want);
        // Registry-wide reservations, read once a round (no read at all when none).
        let reserved = self.reservations();
        let blocked = |p: u16| Ctx::reserved_in(&reserved, p).is_some();
        if first && let Some(pref) = req.preferred {
            let n = if req.contiguous { want } else { 1 };
            let block: Vec<u16> = (0..n).filter_map(|i| u16::try_from(usize::from(pref) + i).ok()).collect();
            if block.len() < n {
                if req.required {
                    return Err(Error::PortInUse { port: pref, holder: "the end of the port space".into() });
                }
            } else if let Some(&p) = block.iter().find(|&&p| req.exclude.contains(&p)) {
                if req.required {
                    return Err(Error::invalid(format!(
                        "port {p} is both required and in the request's exclude list: drop one of them"
                    )));
                }
            } else if let Some(r) = block.iter().find_map(|&p| Ctx::reserved_in(&reserved, p)) {
                if req.required {
                    let port = block.iter().copied().find(|&p| r.contains(p)).unwrap_or(pref);
                    return Err(Error::PortInUse { port, holder: r.describe() });
                }
            } else {
                match block.iter().copied().find(|&p| self.taken(p)) {
                    None => out = block,
                    Some(p) if req.required => {
                        return Err(Error::PortInUse { port: p, holder: self.describe_holder(p) });
                    }
                    Some(_) => {}
                }
            }
        }
        if out.is_empty() {
            let key = req.name.as_deref();
            if req.strategy == Strategy::Kernel {
                for _ in 0..64 {
                    let p = probe::kernel_port(req.protocols)?;
                    if (req.range.is_none() || plan.range.contains(p)) && !skip.contains(&p) && !blocked(p) && !self.taken(p) {
                        out.push(p);
                        break;
                    }
                }
            } else if req.contiguous && want > 1 {
                'bases: for base in strategy::candidates(&req.strategy, plan.range, key) {
                    let Some(last) = base.checked_add(want as u16 - 1) else { continue };
                    if last > plan.range.end() {
                        continue;
                    }
                    for p in base..=last {
                        if !plan.range.contains(p) || skip.contains(&p) || blocked(p) || self.taken(p) {
                            continue 'bases;
                        }
                    }
                    out.extend(base..=last);
                    break;
                }
            } else {
                // Random: a first pass over unmarked ports only (no record reads); dead
                // records are reclaimed in the second pass, when the first comes up short.
                let fast = req.strategy == Strategy::Random;
                for pass in 0..if fast { 2 } else { 1 } {
                    for p in strategy::candidates(&req.strategy, plan.range, key) {
                        if skip.contains(&p) || out.contains(&p) || blocked(p) {
                            continue;
                        }
                        let held = if fast && pass == 0 {
                            self.map.is_marked(p) || self.map.record(p).state.load(Acquire) != FREE || {
                                // The one candidate taken: its record must be a sound free one.
                                let damaged = !self.sound(p);
                                if damaged {
                                    self.note_damage(p);
                                }
                                damaged
                            }
                        } else {
                            self.taken(p)
                        };
                        if !held {
                            out.push(p);
                            if out.len() == want {
                                break;
                            }
                        }
                    }
                    if out.len() == want {
                        break;
                    }
                }
            }
        }
        if out.len() < want {
            return Ok(Vec::new());
        }
        for &p in &out {
            self.mark_pending(p, plan, me);
        }
        Ok(out)
    }

    pub(super) fn mark_pending(&mut self, port: u16, plan: &Plan<'_>, me: OwnerId) {
        let req = plan.req;
        let r = self.map.record(port);
        self.begin(port);
        r.protocols.store(req.protocols.bits(), Relaxed);
        let detached = req.ttl.is_some() || req.watch_pid.is_some();
        r.flags.store(if detached { FLAG_DETACHED } else { 0 }, Relaxed);
        r.owner_slot.store(me.slot, Relaxed);
        r.owner_gen.store(me.generation, Relaxed);
        r.lease_id.store(plan.lease_id, Relaxed);
        r.created_ms.store(sys::wall_ms(), Relaxed);
        let ttl = req.ttl.map_or(0, |t| t.as_millis().max(1) as u64);
        r.ttl_ms.store(ttl, Relaxed);
        r.expires_boot_ms.store(if ttl == 0 { 0 } else { self.now_boot.saturating_add(ttl) }, Relaxed);
        let (wpid, wstart) = plan.watch.unwrap_or((0, 0));
        r.watch_pid.store(wpid, Relaxed);
        r.watch_start.store(wstart, Relaxed);
        // Namespace inodes are 32-bit numbers in the kernel.
        r.watch_pidns.store(self.pidns as u32, Relaxed);
        r.owner_pid.store(sys::getpid(), Relaxed);
        r.set_name(req.name.as_deref().unwrap_or(""));
        self.map.set_range(port, req.range.as_ref().map(|r| (r.start(), r.end())));
        failpoint("pending-fields");
        r.state.store(PENDING, Release);
        failpoint("pending-state");
        self.map.mark(port);
        self.seal(port);
    }
}
