//! The mapped table and what the allocator and the views see of it while the lock is
//! held: liveness of records, damage detection and repair, clearing and renewing leases.

use super::*;
use std::sync::atomic::AtomicU32;

/// The mapped registry file.
pub(super) struct Map {
    /// Declared first, so dropped (unregistered) before the mapping is unmapped.
    pub(super) guard: fault::Guard,
    pub(super) raw: MmapRaw,
}

impl Map {
    pub(super) fn new(db: &File) -> Result<Map> {
        let raw = MmapRaw::map_raw(db).map_err(|e| Error::os("mapping the registry file", e))?;
        if raw.len() < FILE_SIZE {
            return Err(Error::Internal("registry mapping shorter than its layout".into()));
        }
        Ok(Map { guard: fault::Guard::new(raw.as_ptr(), raw.len()), raw })
    }
    /// Whether an access faulted (the file was truncated under the mapping).
    pub(super) fn faulted(&self) -> bool {
        self.guard.faulted()
    }
    /// The range `port`'s lease was asked from (`None`: the default pool). Outside the
    /// checked record: a damaged entry only misplaces the port in a health report.
    pub(super) fn range_of(&self, port: u16) -> Option<(u16, u16)> {
        let v = self.at::<AtomicU32>(RANGES_OFF + usize::from(port) * 4).load(Acquire);
        let (start, end) = ((v >> 16) as u16, v as u16);
        (v != 0 && start <= end).then_some((start, end))
    }
    pub(super) fn set_range(&self, port: u16, range: Option<(u16, u16)>) {
        let v = range.map_or(0, |(a, b)| u32::from(a) << 16 | u32::from(b));
        self.at::<AtomicU32>(RANGES_OFF + usize::from(port) * 4).store(v, Release);
    }
    /// Whether `port`'s record is (not free and) of lease `id`.
    pub(super) fn holds_lease(&self, port: u16, id: u64) -> bool {
        let r = self.record(port);
        r.lease_id.load(Relaxed) == id && r.state.load(Acquire) != FREE
    }
    /// Clear `port`'s record to free, named in the header while it is half-done.
    pub(super) fn clear_record(&self, port: u16) {
        self.header().writing.store(u32::from(port) + 1, Release);
        self.record(port).clear();
        self.set_range(port, None);
        self.unmark(port);
        self.header().writing.store(0, Release);
    }
    pub(super) fn at<T>(&self, off: usize) -> &T {
        debug_assert!(off + size_of::<T>() <= FILE_SIZE && off.is_multiple_of(align_of::<T>()));
        // SAFETY: the mapping is FILE_SIZE bytes long (checked in `new`), page-aligned, and
        // lives as long as `self`; every offset used is inside it and aligned for `T`
        // (layout's constants and asserts); `T` is made only of atomics, valid for any
        // bit pattern and safe to share with other threads and processes.
        unsafe { &*(self.raw.as_ptr().add(off) as *const T) }
    }
    pub(super) fn header(&self) -> &Header {
        self.at(0)
    }
    pub(super) fn owner(&self, slot: u32) -> &Owner {
        self.at(OWNERS_OFF + slot as usize % OWNER_SLOTS * OWNER_SIZE)
    }
    pub(super) fn record(&self, port: u16) -> &Record {
        self.at(RECORDS_OFF + usize::from(port) * RECORD_SIZE)
    }
    pub(super) fn word(&self, port: u16) -> (&std::sync::atomic::AtomicU64, u64) {
        (self.at(BITMAP_OFF + usize::from(port) / 64 * 8), 1u64 << (port % 64))
    }
    pub(super) fn is_marked(&self, port: u16) -> bool {
        let (w, bit) = self.word(port);
        w.load(Acquire) & bit != 0
    }
    pub(super) fn mark(&self, port: u16) {
        let (w, bit) = self.word(port);
        w.fetch_or(bit, AcqRel);
    }
    pub(super) fn unmark(&self, port: u16) {
        let (w, bit) = self.word(port);
        w.fetch_and(!bit, AcqRel);
    }
    /// The ports whose bit is set, ascending.
    pub(super) fn marked(&self) -> Vec<u16> {
        let mut out = Vec::new();
        for i in 0..PORTS / 64 {
            let mut w = self.at::<std::sync::atomic::AtomicU64>(BITMAP_OFF + i * 8).load(Acquire);
            while w != 0 {
                let b = w.trailing_zeros();
                out.push((i * 64) as u16 + b as u16);
                w &= w - 1;
            }
        }
        out
    }
}


/// A writer killed (or panicking) while it changed a record leaves the record named in
/// the header: finish its write. A record it was freeing is cleared; one it was filling
/// in (its state is stored after every other field) is resealed.
pub(super) fn finish_interrupted_write(map: &Map, images: &mut HashMap<u16, Image>) {
    let w = map.header().writing.load(Acquire);
    if w == 0 {
        return;
    }
    let Ok(port) = u16::try_from(w - 1) else {
        map.header().writing.store(0, Release);
        return;
    };
    let r = map.record(port);
    let state = r.state.load(Acquire);
    if state == FREE || state > HELD {
        map.clear_record(port);
        images.remove(&port);
    } else {
        r.seal();
        map.mark(port);
    }
    map.header().writing.store(0, Release);
}

/// The view of the table while the lock is held.
pub(super) struct Ctx<'a> {
    pub(super) map: &'a Arc<Map>,
    pub(super) db: &'a File,
    pub(super) me: Option<OwnerId>,
    pub(super) cache: &'a mut HashMap<(u32, u64), bool>,
    pub(super) now_boot: u64,
    pub(super) pidns: u64,
    pub(super) images: &'a mut HashMap<u16, Image>,
    pub(super) notices: &'a mut Vec<String>,
    pub(super) reported: &'a mut HashSet<u16>,
    /// Whether a live owner's slot is damaged (found out once per call, when needed).
    pub(super) owners_damaged: Option<bool>,
}

impl Ctx<'_> {
    pub(super) fn owner_alive(&mut self, slot: u32, generation: u64) -> bool {
        if self.me == Some(OwnerId { slot, generation }) {
            return true;
        }
        let o = self.map.owner(slot);
        // Another generation in an undamaged slot: that owner is gone. In a damaged slot
        // the generation cannot be trusted: the slot's kernel lock decides.
        if o.generation.load(Acquire) != generation && o.intact() {
            return false;
        }
        if let Some(&alive) = self.cache.get(&(slot, generation)) {
            return alive;
        }
        let off = (OWNERS_OFF + slot as usize % OWNER_SLOTS * OWNER_SIZE) as u64;
        // An error cannot tell us it is dead: keep the port (conservative).
        let alive = sys::ofd_is_locked(self.db, off, 1).unwrap_or(true);
        self.cache.insert((slot, generation), alive);
        alive
    }

    /// Whether `port`'s record holds it. Only a verdict of "not held" (the port would be
    /// reclaimed or handed out) needs the record's check: a damaged record holds its port
    /// (it may be a live holder's) until its owner repairs it. A record that looks held is
    /// held either way, so the common path reads no checksum.
    pub(super) fn live(&mut self, port: u16) -> bool {
        if self.held_by_fields(port) {
            return true;
        }
        if self.sound(port) {
            return false;
        }
        self.note_damage(port);
        true
    }

    /// Whether the record's fields say the port is held (its state pending or held, and
    /// its owner, TTL or watched process alive).
    pub(super) fn held_by_fields(&mut self, port: u16) -> bool {
        let r = self.map.record(port);
        let state = r.state.load(Acquire);
        if state != PENDING && state != HELD {
            return false;
        }
        let owner_alive = |ctx: &mut Self| ctx.owner_alive(r.owner_slot.load(Relaxed), r.owner_gen.load(Relaxed));
        if state == PENDING {
            return owner_alive(self);
        }
        let expires = r.expires_boot_ms.load(Relaxed);
        if expires != 0 && self.now_boot >= expires {
            return false;
        }
        let watch = r.watch_pid.load(Relaxed);
        if watch != 0 {
            let start = r.watch_start.load(Relaxed);
            if start == 0 || r.watch_pidns.load(Relaxed) != self.pidns as u32 {
                // Cannot be checked from here: the TTL (if any) decides; without one, keep.
                return true;
            }
            return match sys::proc_state(watch) {
                ProcState::Alive(s) => s == start,
                ProcState::Dead => false,
                ProcState::Unknown => true,
            };
        }
        if expires != 0 {
            return true;
        }
        owner_alive(self)
    }

    /// Whether `port` is held; a dead record found on the way is reclaimed.
    pub(super) fn taken(&mut self, port: u16) -> bool {
        let r = self.map.record(port);
        if !self.map.is_marked(port) {
            if r.state.load(Acquire) == FREE {
                if self.sound(port) {
                    return false;
                }
                self.note_damage(port);
                return true;
            }
            // A record whose bitmap bit is clear (a damaged bitmap, or a writer killed
            // between the two stores): the record decides, never the bit alone.
            self.map.mark(port);
        }
        if self.live(port) {
            return true;
        }
        self.reclaim(port);
        false
    }

    pub(super) fn reclaim(&mut self, port: u16) {
        let r = self.map.record(port);
        if r.state.load(Acquire) == HELD {
            self.map.header().reclaimed.fetch_add(1, AcqRel);
        }
        self.clear(port);
        failpoint("reclaim-cleared");
    }

    /// Whether `port`'s record is undamaged. A record that is all zeros, check included (a
    /// truncate-then-extend zeroes whole pages from the cut to the end), whose bitmap bit
    /// is clear was a free record: its check is restored. Unless the bitmap may have been
    /// zeroed too: record 0 (never used, always sealed) sits right after the bitmap, so a
    /// cut at or below it zeroes it as well. Nor while a live owner's slot is damaged.
    /// Then a zeroed record could be a live holder's, and stays out of use until its owner
    /// repairs it (or [`Registry::free_damaged`]).
    pub(super) fn sound(&mut self, port: u16) -> bool {
        let r = self.map.record(port);
        if r.intact() {
            return true;
        }
        let bitmap_cut = self.map.record(0).is_zeroed();
        if port == 0 || bitmap_cut || !r.is_zeroed() || self.map.is_marked(port) || self.live_owner_slot_damaged() {
            return false;
        }
        r.check.store(*FREE_CHECK, Release);
        true
    }

    pub(super) fn live_owner_slot_damaged(&mut self) -> bool {
        if let Some(d) = self.owners_damaged {
            return d;
        }
        let mut damaged = false;
        for slot in 0..OWNER_SLOTS as u32 {
            if self.me.is_some_and(|m| m.slot == slot) || self.map.owner(slot).intact() {
                continue;
            }
            let off = (OWNERS_OFF + slot as usize * OWNER_SIZE) as u64;
            if sys::ofd_is_locked(self.db, off, 1).unwrap_or(true) {
                damaged = true;
                break;
            }
        }
        self.owners_damaged = Some(damaged);
        damaged
    }

    /// Clear `port`'s record (and forget this process's image of it).
    pub(super) fn clear(&mut self, port: u16) {
        self.map.clear_record(port);
        self.images.remove(&port);
    }

    /// Name `port`'s record in the header before changing it (see `seal`).
    pub(super) fn begin(&self, port: u16) {
        self.map.header().writing.store(u32::from(port) + 1, Release);
    }

    /// Seal a record changed since `begin`, remember it when it is this process's, and
    /// clear the header's mark.
    pub(super) fn seal(&mut self, port: u16) {
        let r = self.map.record(port);
        let img = r.snapshot();
        r.check.store(img.check(), Release);
        let mine = self.me.is_some_and(|m| m.slot == img.owner_slot && m.generation == img.owner_gen);
        if img.state != FREE && mine {
            self.images.insert(port, img);
        } else {
            self.images.remove(&port);
        }
        self.map.header().writing.store(0, Release);
    }

    /// A damaged record found: report it once (per process), and tell every owner to check
    /// its records at its next call.
    pub(super) fn note_damage(&mut self, port: u16) {
        if self.images.contains_key(&port) {
            // Ours: repair it now rather than report it.
            self.repair_own();
            if self.map.record(port).intact() {
                return;
            }
        }
        let r = self.map.record(port);
        let first = r.state.load(Acquire) != DAMAGED;
        if first {
            // One byte: the record stays damaged (never intact), and the next finder knows.
            r.state.store(DAMAGED, Release);
        }
        if self.reported.insert(port) {
            self.notices.push(format!(
                "portmgr: the registry record of port {port} is damaged; the port is kept out of use until the process holding it repairs it (at its next portmgr call); if no process holds it, free it with `portmgr gc --damaged`"
            ));
        }
        if !first {
            return;
        }
        let h = self.map.header();
        let epoch = h.damage_epoch.fetch_add(1, AcqRel) + 1;
        h.damaged.fetch_add(1, AcqRel);
        // This process has checked its own records as of this epoch.
        if let Some(me) = self.me {
            self.repair_own();
            self.map.owner(me.slot).repaired_epoch.store(epoch, Release);
        }
    }

    /// Check every record this process wrote against its image: rewrite damaged ones
    /// (unless their lease has run out: then free them), forget those whose lease ended.
    pub(super) fn repair_own(&mut self) {
        let Some(me) = self.me else { return };
        let ports: Vec<u16> = self.images.keys().copied().collect();
        for port in ports {
            let Some(img) = self.images.get(&port).copied() else { continue };
            let r = self.map.record(port);
            if r.intact() {
                let ours = r.state.load(Acquire) != FREE
                    && r.lease_id.load(Relaxed) == img.lease_id
                    && r.owner_slot.load(Relaxed) == me.slot
                    && r.owner_gen.load(Relaxed) == me.generation;
                if !ours {
                    self.images.remove(&port);
                }
                continue;
            }
            if img.expires_boot_ms != 0 && self.now_boot >= img.expires_boot_ms {
                self.clear(port);
                continue;
            }
            self.begin(port);
            // Pending or held: restored as held (a pending one whose probe fails is rolled
            // back by its allocation as usual).
            r.restore(&Image { state: HELD, ..img });
            self.map.mark(port);
            self.seal(port);
            self.reported.remove(&port);
            self.notices.push(format!("portmgr: the registry record of port {port} (held by pid {}) was damaged; repaired it", sys::getpid()));
        }
    }

    pub(super) fn info(&mut self, port: u16) -> LeaseInfo {
        // Views check every record they show: a damaged one that still looks held is
        // reported here (and repaired at once when it is this process's own), before any
        // field is read.
        let damaged = !self.sound(port) && {
            self.note_damage(port);
            !self.sound(port)
        };
        let r = self.map.record(port);
        let state = r.state.load(Acquire);
        let expires = r.expires_boot_ms.load(Relaxed);
        let live = self.live(port);
        let flags = r.flags.load(Relaxed);
        let name = r.name();
        LeaseInfo {
            port,
            protocols: Protocols::from_bits(u32::from(r.protocols.load(Relaxed))).unwrap_or_default().as_str().into(),
            name: (!name.is_empty()).then_some(name),
            lease_id: r.lease_id.load(Relaxed),
            owner_pid: r.owner_pid.load(Relaxed),
            created_ms: r.created_ms.load(Relaxed),
            expires_ms: (expires != 0)
                .then(|| match expires.checked_sub(self.now_boot) {
                    Some(ahead) => sys::wall_ms().saturating_add(ahead),
                    None => sys::wall_ms().saturating_sub(self.now_boot - expires),
                }),
            ttl_ms: Some(r.ttl_ms.load(Relaxed)).filter(|&t| t != 0 && expires != 0),
            watch_pid: Some(r.watch_pid.load(Relaxed)).filter(|&w| w != 0),
            detached: flags & FLAG_DETACHED != 0,
            bound: flags & FLAG_BOUND != 0,
            range: self.map.range_of(port),
            state: match (live, state) {
                _ if damaged => "damaged",
                (true, PENDING) => "pending",
                (true, _) => "held",
                (false, _) if expires != 0 && self.now_boot >= expires => "expired",
                (false, _) => "owner gone",
            }
            .into(),
        }
    }

    /// The ports to visit for lease `id`: its known ports, or every marked port.
    pub(super) fn lease_ports(&self, known: Option<&[u16]>) -> Vec<u16> {
        known.map_or_else(|| self.map.marked(), <[u16]>::to_vec)
    }

    /// Free every port of lease `id` (only if `owner` holds it, when given); returns them.
    /// `known`: the lease's ports when the caller knows them (saves a bitmap sweep).
    pub(super) fn clear_lease(&mut self, id: u64, owner: Option<OwnerId>, known: Option<&[u16]>) -> Vec<u16> {
        let mut freed = Vec::new();
        for p in self.lease_ports(known) {
            let r = self.map.record(p);
            let owned = owner.is_none_or(|o| {
                r.owner_slot.load(Relaxed) == o.slot && r.owner_gen.load(Relaxed) == o.generation
            });
            // This process's own record, damaged: its image says whose it is.
            let ours_damaged = !r.intact() && self.images.get(&p).is_some_and(|i| i.lease_id == id);
            if (owned && self.map.holds_lease(p, id)) || ours_damaged {
                let held = r.state.load(Acquire) == HELD;
                self.clear(p);
                failpoint("release-cleared");
                if held {
                    self.map.header().releases.fetch_add(1, AcqRel);
                }
                freed.push(p);
            }
        }
        freed
    }

    /// Renew every live port of lease `id` (only `owner`'s records, when given). A lease
    /// with no live record left is [`Error::NotFound`]: a heartbeat must not "succeed"
    /// while its port is free or someone else's.
    pub(super) fn renew_lease(&mut self, id: u64, owner: Option<OwnerId>, ttl: Option<Duration>, known: Option<&[u16]>) -> Result<()> {
        let mut ports = Vec::new();
        for p in self.lease_ports(known) {
            if !self.map.holds_lease(p, id) {
                continue;
            }
            let r = self.map.record(p);
            let owned = owner.is_none_or(|o| {
                r.owner_slot.load(Relaxed) == o.slot && r.owner_gen.load(Relaxed) == o.generation
            });
            if owned && self.live(p) {
                ports.push(p);
            }
        }
        if ports.is_empty() {
            return Err(Error::NotFound(format!("lease {id} is not held any more (released, expired or its owner is gone)")));
        }
        for p in ports {
            let r = self.map.record(p);
            let ms = match ttl {
                Some(t) => t.as_millis().max(1) as u64,
                None => r.ttl_ms.load(Relaxed),
            };
            if ms == 0 {
                return Err(Error::invalid(format!(
                    "port {p} has no TTL to renew; give one (e.g. --ttl 5m)"
                )));
            }
            self.begin(p);
            r.ttl_ms.store(ms, Relaxed);
            r.flags.fetch_or(FLAG_DETACHED, Relaxed);
            r.expires_boot_ms.store(self.now_boot.saturating_add(ms), Release);
            self.seal(p);
        }
        Ok(())
    }

    pub(super) fn name_holder(&mut self, name: &str) -> Option<Vec<u16>> {
        let mut ports = Vec::new();
        for p in self.map.marked() {
            let r = self.map.record(p);
            if r.name_is(name) && self.live(p) {
                ports.push(p);
            }
        }
        (!ports.is_empty()).then_some(ports)
    }

    pub(super) fn describe_holder(&mut self, port: u16) -> String {
        let r = self.map.record(port);
        let name = r.name();
        let pid = r.owner_pid.load(Relaxed);
        if name.is_empty() { format!("a portmgr lease of process {pid}") } else { format!("portmgr service {name:?} of process {pid}") }
    }

}
