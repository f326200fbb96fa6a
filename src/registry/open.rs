//! Opening the registry file: create and initialise it, check its header, upgrade a
//! version 1 file in place, move a damaged one aside, clear it after a reboot.

use super::*;


impl Files {
    /// Open the directory and files, creating and initialising the table if new, and
    /// checking it otherwise. Holds the file lock while it does so.
    pub(super) fn open(dir: &Path, deadline: Instant, notices: &mut Vec<String>) -> Result<Files> {
        let dirfd = dir::open_secure_dir(dir)?;
        let lock = dir::open_file(&dirfd, dir, "registry.lock")?;
        let _flock = lock::lock_file(&lock, &dir.join("registry.lock"), deadline)?;
        let db_path = dir.join("registry.db");
        for _ in 0..2 {
            let db = dir::open_file(&dirfd, dir, "registry.db")?;
            let len = db.metadata().map_err(|e| Error::os(format!("fstat of {}", db_path.display()), e))?.len();
            let problem = if len == 0 && sys::ofd_is_locked(&db, 0, 0).unwrap_or(true) {
                // Emptied under live owners: starting afresh would reset their ports.
                Some("it is empty (truncated to 0 bytes)".to_string())
            } else if len == 0 {
                if let Err(e) = reserve(&db, &db_path) {
                    let _ = db.set_len(0); // stays "new": the next open tries again
                    return Err(e);
                }
                failpoint("sized");
                let map = Map::new(&db)?;
                init_table(&map);
                failpoint("initialised");
                None
            } else if len != FILE_SIZE as u64
                && !(len == FILE_SIZE_V1 as u64 && file_magic(&db) == Some((MAGIC_V1, 1)))
                && !(len == FILE_SIZE_V2_0 as u64 && file_magic(&db) == Some((MAGIC, VERSION)))
            {
                Some(format!("its size is {len} bytes, not {FILE_SIZE} (truncated or not a portmgr registry)"))
            } else {
                if len != FILE_SIZE as u64 {
                    // A version 1 file, or a version 2 file made before the reservation
                    // table: grow it (under the file lock; the new bytes are zeros, an
                    // empty table), then upgrade a version 1 header below.
                    reserve(&db, &db_path)?;
                }
                let map = Map::new(&db)?;
                let h = map.header();
                if h.magic.load(Acquire) == MAGIC_V1 && h.version.load(Acquire) == 1 {
                    let kept = upgrade_v1(&map);
                    notices.push(format!(
                        "portmgr: upgraded registry file {} from layout version 1 to {VERSION} in place ({kept} live records kept); processes of older portmgr versions still attached to it stop using it",
                        db_path.display()
                    ));
                }
                check_header(&map)
            };
            match problem {
                None => {
                    // Also for files made sparse by older versions (a no-op otherwise).
                    reserve(&db, &db_path)?;
                    let map = Map::new(&db)?;
                    check_boot(&map, &db, notices);
                    drop(_flock);
                    return Ok(Files { _dirfd: dirfd, lock, db, map: Arc::new(map) });
                }
                Some(reason) => {
                    if sys::ofd_is_locked(&db, 0, 0).unwrap_or(true) {
                        return Err(Error::RegistryCorrupt {
                            path: db_path,
                            reason: format!(
                                "{reason}; processes using portmgr are attached to it, so it is not replaced under them: stop them (see `fuser {}`), then try again",
                                dir.join("registry.db").display()
                            ),
                        });
                    }
                    let aside = format!("registry.db.damaged-{}", sys::wall_ms());
                    // Processes that mapped it before it was damaged see the magic gone
                    // and reopen the new file.
                    let _ = db.write_at(&[0u8; 8], 0);
                    sys::renameat(&dirfd, "registry.db", &aside)
                        .map_err(|e| Error::os(format!("moving {} aside", db_path.display()), e))?;
                    let msg = format!(
                        "portmgr: registry file {} was unusable ({reason}); moved it aside to {} and started a new one",
                        db_path.display(),
                        dir.join(&aside).display()
                    );
                    notices.push(msg);
                }
            }
        }
        Err(Error::RegistryCorrupt { path: db_path, reason: "it could not be recreated".into() })
    }
}

/// Give the file its size with every block allocated (`fallocate`). The table is a
/// shared mapping: a page of a sparse file first touched when the disk is full kills
/// the toucher with SIGBUS (seen on a full tmpfs), in whichever process that is. With
/// the blocks reserved up front, a full disk is an error here instead. Costs the file's
/// full size on disk (8.3 MiB).
pub(super) fn reserve(db: &File, path: &Path) -> Result<()> {
    match sys::fallocate(db, FILE_SIZE as u64) {
        Ok(()) => Ok(()),
        // File systems without fallocate: size it sparse, as before.
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            db.set_len(FILE_SIZE as u64).map_err(|e| Error::os(format!("sizing {}", path.display()), e))
        }
        Err(e) => Err(Error::os(format!("reserving {FILE_SIZE} bytes of disk for {}", path.display()), e)),
    }
}

/// Make a new (all-zero) file a valid empty table: every record and owner slot sealed,
/// then the header, its magic last.
pub(super) fn init_table(map: &Map) {
    for p in 0..=u16::MAX {
        map.record(p).check.store(*FREE_CHECK, Relaxed);
    }
    for slot in 0..OWNER_SLOTS as u32 {
        map.owner(slot).seal();
    }
    init_header(map.header());
}

/// The magic and version `db` starts with (read with `pread`: an older file is too
/// short to be mapped as this layout).
fn file_magic(db: &File) -> Option<(u64, u32)> {
    let mut b = [0u8; 12];
    db.read_exact_at(&mut b, 0).ok()?;
    Some((u64::from_ne_bytes(b[..8].try_into().ok()?), u32::from_ne_bytes(b[8..].try_into().ok()?)))
}

/// Upgrade a layout version 1 file in place, keeping every record and owner: owner and
/// record offsets are the same; a record's `watch_pidns` (a u64 whose high half is 0) is
/// now a u32 followed by the record's check. Under the file lock. Processes of the older
/// version still attached see the magic change and stop using the file (their ports stay
/// held by their owner locks).
pub(super) fn upgrade_v1(map: &Map) -> usize {
    let mut kept = 0;
    for p in 0..=u16::MAX {
        let off = RECORDS_OFF + usize::from(p) * RECORD_SIZE + std::mem::offset_of!(Record, watch_pidns);
        let pidns = map.at::<AtomicU64>(off).load(Acquire);
        let r = map.record(p);
        r.watch_pidns.store(pidns as u32, Relaxed);
        r.seal();
        if r.state.load(Acquire) != FREE {
            kept += 1;
        }
    }
    for slot in 0..OWNER_SLOTS as u32 {
        map.owner(slot).seal();
    }
    let h = map.header();
    h.version.store(VERSION, Release);
    h.magic.store(MAGIC, Release);
    kept
}

pub(super) fn init_header(h: &Header) {
    let boot = sys::boot_id();
    h.version.store(VERSION, Relaxed);
    h.header_size.store(HEADER_SIZE as u32, Relaxed);
    h.owner_slots.store(OWNER_SLOTS as u32, Relaxed);
    h.owner_size.store(OWNER_SIZE as u32, Relaxed);
    h.record_size.store(RECORD_SIZE as u32, Relaxed);
    h.ports.store(PORTS as u32, Relaxed);
    h.boot_id[0].store(u64::from_ne_bytes(boot[..8].try_into().unwrap_or_default()), Relaxed);
    h.boot_id[1].store(u64::from_ne_bytes(boot[8..].try_into().unwrap_or_default()), Relaxed);
    h.created_ms.store(sys::wall_ms(), Relaxed);
    // The magic last: a writer killed before this leaves a file that is refused, not trusted.
    h.magic.store(MAGIC, Release);
}

pub(super) fn check_header(map: &Map) -> Option<String> {
    let h = map.header();
    if h.magic.load(Acquire) != MAGIC {
        return Some("its header has no portmgr magic number".into());
    }
    let v = h.version.load(Relaxed);
    if v != VERSION {
        return Some(format!("it is layout version {v}, this portmgr reads version {VERSION}"));
    }
    let sizes = [
        (h.header_size.load(Relaxed), HEADER_SIZE),
        (h.owner_slots.load(Relaxed), OWNER_SLOTS),
        (h.owner_size.load(Relaxed), OWNER_SIZE),
        (h.record_size.load(Relaxed), RECORD_SIZE),
        (h.ports.load(Relaxed), PORTS),
    ];
    if sizes.iter().any(|(a, b)| *a as usize != *b) {
        return Some("its layout sizes do not match this version".into());
    }
    None
}

/// After a reboot no owner and no watched process of the old boot can be alive: clear
/// every record and owner slot.
pub(super) fn check_boot(map: &Map, db: &File, notices: &mut Vec<String>) {
    let boot = sys::boot_id();
    if boot == [0u8; 16] {
        return;
    }
    let h = map.header();
    let now = [
        u64::from_ne_bytes(boot[..8].try_into().unwrap_or_default()),
        u64::from_ne_bytes(boot[8..].try_into().unwrap_or_default()),
    ];
    if h.boot_id[0].load(Relaxed) == now[0] && h.boot_id[1].load(Relaxed) == now[1] {
        return;
    }
    let owners = (OWNERS_OFF as u64, (OWNER_SLOTS * OWNER_SIZE) as u64);
    if sys::ofd_is_locked(db, owners.0, owners.1).unwrap_or(true) {
        // Kernel locks do not survive a reboot: live owners prove this is the same boot
        // and the boot id was damaged. Clearing would hand their ports out again.
        h.boot_id[0].store(now[0], Relaxed);
        h.boot_id[1].store(now[1], Relaxed);
        notices.push("portmgr: the registry's boot id did not match this boot, but live processes are attached to it, so the host did not reboot: kept every record and repaired the boot id".into());
        return;
    }
    let mut cleared = 0u64;
    for p in 0..=u16::MAX {
        let r = map.record(p);
        if r.state.load(Acquire) == HELD {
            cleared += 1;
        }
        if map.is_marked(p) || r.state.load(Acquire) != FREE || !r.intact() {
            map.clear_record(p);
        }
    }
    for slot in 0..OWNER_SLOTS as u32 {
        let o = map.owner(slot);
        o.pid.store(0, Relaxed);
        o.start_time.store(0, Relaxed);
        o.seal();
    }
    h.reclaimed.fetch_add(cleared, AcqRel);
    h.boot_id[0].store(now[0], Relaxed);
    h.boot_id[1].store(now[1], Relaxed);
    notices.push(format!("portmgr: the host rebooted since the registry was last used; {cleared} ports of the old boot were freed"));
}
