//! Owner slots: each process that allocates claims one and holds a kernel lock on it.

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct OwnerId {
    pub(super) slot: u32,
    pub(super) generation: u64,
}


/// What an owner wrote into its slot, kept in memory to see and repair damage to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct OwnerFields {
    pub(super) slot: u32,
    pub(super) generation: u64,
    pub(super) pid: u32,
    pub(super) start_time: u64,
    pub(super) pidns: u64,
    pub(super) created_ms: u64,
    /// The slot's check as sealed.
    pub(super) check: u32,
}

impl OwnerFields {
    pub(super) fn write(&self, o: &Owner) {
        o.pid.store(self.pid, Relaxed);
        o.start_time.store(self.start_time, Relaxed);
        o.pidns.store(self.pidns, Relaxed);
        o.created_ms.store(self.created_ms, Relaxed);
        o.generation.store(self.generation, Release);
        o.check.store(self.check, Release);
    }

    /// Whether the slot still holds exactly what was written (plain loads: this runs on
    /// every call, and needs no checksum of its own).
    pub(super) fn in_place(&self, o: &Owner) -> bool {
        o.generation.load(Acquire) == self.generation
            && o.pid.load(Relaxed) == self.pid
            && o.start_time.load(Relaxed) == self.start_time
            && o.pidns.load(Relaxed) == self.pidns
            && o.created_ms.load(Relaxed) == self.created_ms
            && o.check.load(Acquire) == self.check
    }
}

/// Claim a free owner slot: the first one whose lock byte nobody holds. Returns the slot
/// and what was written into it, which the process keeps to repair its slot if the file
/// is damaged.
pub(super) fn claim_owner(files: &Files) -> Result<(OwnerId, OwnerFields)> {
    let pid = sys::getpid();
    let start = pid as usize % OWNER_SLOTS;
    for i in 0..OWNER_SLOTS {
        let slot = ((start + i) % OWNER_SLOTS) as u32;
        let off = (OWNERS_OFF + slot as usize * OWNER_SIZE) as u64;
        if sys::ofd_try_lock(&files.db, off, 1).map_err(|e| Error::os("locking an owner slot", e))? {
            let o = files.map.owner(slot);
            let old = o.generation.load(Acquire);
            // A damaged slot's generation cannot be trusted: a number from the clock is
            // above every counted one, so no old record of this slot comes back to life.
            let generation = if o.intact() { old.wrapping_add(1).max(1) } else { old.wrapping_add(1).max(sys::wall_ms()).max(1) };
            let start_time = match sys::proc_state(pid) {
                ProcState::Alive(s) => s,
                _ => 0,
            };
            let mut fields =
                OwnerFields { slot, generation, pid, start_time, pidns: *PIDNS, created_ms: sys::wall_ms(), check: 0 };
            fields.write(o);
            o.seal();
            fields.check = o.check.load(Acquire);
            return Ok((OwnerId { slot, generation }, fields));
        }
    }
    Err(Error::Exhausted { what: format!("all {OWNER_SLOTS} owner slots are taken by live processes") })
}

/// This process's own owner slot, rewritten if it was damaged.
pub(super) fn repair_owner_slot(map: &Map, fields: &OwnerFields, notices: &mut Vec<String>) {
    let o = map.owner(fields.slot);
    if fields.in_place(o) {
        return;
    }
    fields.write(o);
    notices.push(format!("portmgr: the registry's owner slot {} of pid {} was damaged; repaired it", fields.slot, fields.pid));
}
