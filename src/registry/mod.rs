//! The shared registry: one table per user of who holds which port, used by every
//! process and language on the host, with no daemon.
//!
//! # How it works (see DESIGN.md for the measured facts behind it)
//!
//! * `registry.db` is a fixed binary table ([`layout`]) mapped `MAP_SHARED` by every user.
//! * A process that allocates claims one *owner slot* and holds an open-file-description
//!   lock on that slot's byte for as long as its [`Registry`] handle lives. A record names
//!   (owner slot, generation); it is alive while that lock is held and the generation
//!   matches. SIGKILL drops the kernel lock, so a dead process's ports are free at once.
//!   Kernel locks = live processes, not ports: lock operations stay cheap with 50,000 held.
//! * A lease with a TTL or a watched process ("detached") lives by those instead of its
//!   owner: a CLI call can allocate and exit. Expiries use `CLOCK_BOOTTIME`.
//! * Every change is made under the registry lock (a process mutex + `flock` on
//!   `registry.lock`, never renamed), with one exception: the allocator marks a record
//!   *pending* under the lock, probes the port outside it, then stores *held* into the
//!   record's state byte without the lock. Nobody else writes a pending record of a live
//!   owner, so that store races with nothing.
//! * After a reboot (boot id changed) every record is dead and the table is cleared. A
//!   file with a bad header is moved aside and reported, or refused while live owners are
//!   attached; it is never treated as empty in place.

pub(crate) mod layout;
pub use layout::NAME_MAX;

mod dir;
mod fault;
mod lock;
mod request;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::{Arc, LazyLock, OnceLock, Weak};
use std::time::{Duration, Instant};

use memmap2::MmapRaw;
use parking_lot::Mutex;
use socket2::Socket;

pub use dir::{default_dir, resolve_default_dir};
pub use request::{MAX_COUNT, MIN_TTL, Request, check_ttl, validate_name};
pub(crate) use request::shown_name;

use crate::error::{Error, Result};
use crate::probe;
use crate::range::{PortRange, Protocols};
use crate::strategy::{self, Strategy};
use crate::sys::{self, ProcState};
use layout::*;

/// How long a registry call waits for the lock by default.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// A handle on one registry directory. Cheap to clone; all clones share one owner slot.
/// `Send + Sync`: use it from any thread.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    timeout_ms: AtomicU64,
    pool: OnceLock<PortRange>,
    state: Mutex<State>,
}

struct State {
    fork_gen: u64,
    files: Option<Files>,
    owner: Option<OwnerId>,
    /// Owner liveness answers: "dead" is final (a generation never comes back to life);
    /// "alive" is trusted only within one locked call, so a SIGKILLed owner's ports are
    /// free for the very next call.
    live_cache: HashMap<(u32, u64), bool>,
    notices: Vec<String>,
    /// What this process wrote into each of its records, to repair them if damaged.
    images: HashMap<u16, Image>,
    /// This process's owner slot as it wrote it, to repair it if damaged.
    owner_fields: Option<OwnerFields>,
    /// The damage epoch this process last repaired its records at.
    seen_epoch: u64,
    /// Damaged records already reported by this process.
    reported: HashSet<u16>,
}

impl State {
    /// Drop the files and everything tied to them (owner slot, caches, record images).
    fn forget_files(&mut self) {
        self.files = None;
        self.owner = None;
        self.owner_fields = None;
        self.live_cache.clear();
        self.images.clear();
        self.reported.clear();
    }
}

struct Files {
    /// Kept open: the directory the files were checked through.
    _dirfd: OwnedFd,
    lock: File,
    db: File,
    map: Arc<Map>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct OwnerId {
    slot: u32,
    generation: u64,
}

/// The mapped registry file.
struct Map {
    /// Declared first, so dropped (unregistered) before the mapping is unmapped.
    guard: fault::Guard,
    raw: MmapRaw,
}

impl Map {
    fn new(db: &File) -> Result<Map> {
        let raw = MmapRaw::map_raw(db).map_err(|e| Error::os("mapping the registry file", e))?;
        if raw.len() < FILE_SIZE {
            return Err(Error::Internal("registry mapping shorter than its layout".into()));
        }
        Ok(Map { guard: fault::Guard::new(raw.as_ptr(), raw.len()), raw })
    }
    /// Whether an access faulted (the file was truncated under the mapping).
    fn faulted(&self) -> bool {
        self.guard.faulted()
    }
    /// Whether `port`'s record is (not free and) of lease `id`.
    fn holds_lease(&self, port: u16, id: u64) -> bool {
        let r = self.record(port);
        r.lease_id.load(Relaxed) == id && r.state.load(Acquire) != FREE
    }
    /// Clear `port`'s record to free, named in the header while it is half-done.
    fn clear_record(&self, port: u16) {
        self.header().writing.store(u32::from(port) + 1, Release);
        self.record(port).clear();
        self.unmark(port);
        self.header().writing.store(0, Release);
    }
    fn at<T>(&self, off: usize) -> &T {
        debug_assert!(off + size_of::<T>() <= FILE_SIZE && off.is_multiple_of(align_of::<T>()));
        // SAFETY: the mapping is FILE_SIZE bytes long (checked in `new`), page-aligned, and
        // lives as long as `self`; every offset used is inside it and aligned for `T`
        // (layout's constants and asserts); `T` is made only of atomics, valid for any
        // bit pattern and safe to share with other threads and processes.
        unsafe { &*(self.raw.as_ptr().add(off) as *const T) }
    }
    fn header(&self) -> &Header {
        self.at(0)
    }
    fn owner(&self, slot: u32) -> &Owner {
        self.at(OWNERS_OFF + slot as usize % OWNER_SLOTS * OWNER_SIZE)
    }
    fn record(&self, port: u16) -> &Record {
        self.at(RECORDS_OFF + usize::from(port) * RECORD_SIZE)
    }
    fn word(&self, port: u16) -> (&std::sync::atomic::AtomicU64, u64) {
        (self.at(BITMAP_OFF + usize::from(port) / 64 * 8), 1u64 << (port % 64))
    }
    fn is_marked(&self, port: u16) -> bool {
        let (w, bit) = self.word(port);
        w.load(Acquire) & bit != 0
    }
    fn mark(&self, port: u16) {
        let (w, bit) = self.word(port);
        w.fetch_or(bit, AcqRel);
    }
    fn unmark(&self, port: u16) {
        let (w, bit) = self.word(port);
        w.fetch_and(!bit, AcqRel);
    }
    /// The ports whose bit is set, ascending.
    fn marked(&self) -> Vec<u16> {
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

/// One port of a lease, as the views show it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LeaseInfo {
    /// The port.
    pub port: u16,
    /// `"tcp"`, `"udp"` or `"both"`.
    pub protocols: String,
    /// The service name, if any.
    pub name: Option<String>,
    /// The lease this port belongs to (shared by the ports of one multi-port lease).
    pub lease_id: u64,
    /// The process that allocated it.
    pub owner_pid: u32,
    /// When it was allocated, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// When its TTL ends, milliseconds since the Unix epoch; `None` without a TTL.
    pub expires_ms: Option<u64>,
    /// The watched process, if any.
    pub watch_pid: Option<u32>,
    /// Kept or detached: any process of the user may release it.
    pub detached: bool,
    /// Handed out as a bound socket.
    pub bound: bool,
    /// `"held"`, `"pending"` (being probed), `"expired"`, `"owner gone"`, or `"damaged"`
    /// (its record does not match its check: kept out of use until its holder repairs it,
    /// see [`Registry::free_damaged`]).
    pub state: String,
}

/// Registry figures, as `stats()` gives them.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Stats {
    /// The default pool, `"A-B"`.
    pub pool: String,
    /// Usable ports in the default pool.
    pub pool_size: usize,
    /// Live ports in the registry, all ranges.
    pub held: usize,
    /// Live ports inside the default pool.
    pub held_in_pool: usize,
    /// `pool_size - held_in_pool`.
    pub free: usize,
    /// `held_in_pool / pool_size`, 0 to 1.
    pub utilization: f64,
    /// Processes attached as owners right now.
    pub owners: usize,
    /// Ports handed out, ever (since the file was created).
    pub allocations: u64,
    /// Ports released by a call, ever.
    pub releases: u64,
    /// Ports reclaimed from dead owners or expired leases, ever.
    pub reclaimed: u64,
}

/// A socket handed out by [`Registry::allocate_bound`]: bound (TCP: listening).
#[derive(Debug)]
pub struct BoundSocket {
    /// Its port.
    pub port: u16,
    /// TCP or UDP.
    pub protocol: Protocols,
    /// The socket, close-on-exec.
    pub socket: Socket,
}

/// Registries whose leases were kept: held open until the process exits, so the owner
/// lock (and with it every kept lease) lives as long as the process.
/// Locked only with the process lock held, so never held across a `fork()`.
static KEPT: Mutex<Vec<Registry>> = Mutex::new(Vec::new());

/// Every registry handle of the process, so that a forked child can close what it
/// inherited at once. Locked only with the process lock held.
static HANDLES: Mutex<Vec<Weak<Inner>>> = Mutex::new(Vec::new());

/// Called in a forked child, single-threaded, with the process lock held (see `lock`):
/// close (never unlock) every inherited registry fd. Otherwise a child that never
/// touches portmgr would keep its dead parent's owner lock, and ports, alive.
pub(crate) fn close_inherited_in_child() {
    for inner in HANDLES.lock().iter().filter_map(Weak::upgrade) {
        if let Some(mut st) = inner.state.try_lock() {
            st.forget_files();
            st.fork_gen = lock::fork_generation();
        }
    }
}

impl Registry {
    /// Open (creating it if needed) the registry in `dir`. The directory is created mode
    /// 0700 and checked on every open; see [`default_dir`] for the default location.
    pub fn open(dir: impl AsRef<Path>) -> Result<Registry> {
        Registry::open_with_timeout(dir, DEFAULT_LOCK_TIMEOUT)
    }

    /// [`Registry::open`], waiting at most `timeout` for the registry lock, in the open
    /// itself and in later calls (see [`Registry::set_lock_timeout`]).
    pub fn open_with_timeout(dir: impl AsRef<Path>, timeout: Duration) -> Result<Registry> {
        lock::install_fork_handlers();
        let dir = dir::absolute(dir.as_ref())?;
        let reg = Registry {
            inner: Arc::new(Inner {
                dir,
                timeout_ms: AtomicU64::new(timeout.as_millis().max(1) as u64),
                pool: OnceLock::new(),
                state: Mutex::new(State {
                    fork_gen: lock::fork_generation(),
                    files: None,
                    owner: None,
                    live_cache: HashMap::new(),
                    notices: Vec::new(),
                    images: HashMap::new(),
                    owner_fields: None,
                    seen_epoch: 0,
                    reported: HashSet::new(),
                }),
            }),
        };
        {
            let _process = lock::lock_process(Instant::now() + DEFAULT_LOCK_TIMEOUT)?;
            let mut handles = HANDLES.lock();
            handles.retain(|w| w.strong_count() > 0);
            handles.push(Arc::downgrade(&reg.inner));
        }
        // Open and validate now, so a bad location is reported by `open`.
        reg.with_lock(false, |_| Ok(()))?;
        Ok(reg)
    }

    /// Open the registry at [`default_dir`] (`PORTMGR_DIR` honoured; set but empty, it is
    /// an error: see [`resolve_default_dir`]).
    pub fn open_default() -> Result<Registry> {
        Registry::open(resolve_default_dir()?)
    }

    /// The registry's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// How long calls wait for the registry lock before a timeout error (default 10 s).
    pub fn set_lock_timeout(&self, timeout: Duration) {
        self.inner.timeout_ms.store(timeout.as_millis().max(1) as u64, Relaxed);
    }

    /// Things the registry did on its own that a person should know of (a damaged file
    /// moved aside, a table cleared after a reboot). Each is also printed to stderr once.
    pub fn notices(&self) -> Vec<String> {
        match lock::lock_process(Instant::now() + self.timeout()) {
            Ok(_process) => self.inner.state.lock().notices.clone(),
            Err(_) => Vec::new(),
        }
    }

    /// The default pool this registry draws from when a request names no range.
    pub fn default_pool(&self) -> Result<PortRange> {
        if let Some(p) = self.inner.pool.get() {
            return Ok(p.clone());
        }
        let p = PortRange::default_pool()?;
        Ok(self.inner.pool.get_or_init(|| p).clone())
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.inner.timeout_ms.load(Relaxed))
    }

    /// Run `f` with the registry lock held. `need_owner`: claim this handle's owner slot
    /// first (allocations need one; views do not).
    fn with_lock<R>(&self, need_owner: bool, f: impl FnOnce(&mut Ctx<'_>) -> Result<R>) -> Result<R> {
        let deadline = Instant::now() + self.timeout();
        let _process = lock::lock_process(deadline)?;
        let mut guard = self.inner.state.lock();
        let st = &mut *guard;
        if st.fork_gen != lock::fork_generation() {
            // A forked child: close (never unlock) what the parent opened; the parent's
            // locks live on in the parent. This process gets its own owner slot.
            st.forget_files();
            st.fork_gen = lock::fork_generation();
        }
        // Built only for messages: no allocation on the path of a call that succeeds.
        let db_path = || self.inner.dir.join("registry.db");
        for _ in 0..3 {
            if st.files.is_none() {
                st.forget_files();
                st.files = Some(Files::open(&self.inner.dir, deadline, &mut st.notices)?);
            }
            let files = st.files.as_mut().ok_or_else(|| Error::Internal("registry files missing".into()))?;
            let _flock = lock::lock_file(&files.lock, &self.inner.dir.join("registry.lock"), deadline)?;
            // Size first: a file truncated under us faults on access past its end (the
            // fault guard turns that into zeros and a flag, see `fault`).
            let size = sys::fstat(&files.db).map_err(|e| Error::os(format!("fstat of {}", db_path().display()), e))?.st_size;
            let size_ok = size as u64 == FILE_SIZE as u64;
            if size_ok && files.map.faulted() && files.map.header().magic.load(Acquire) == MAGIC {
                // Truncated and extended again while mapped here: our mapping has zero
                // pages where the file has its own; map it afresh. What the cut zeroed is
                // record damage, found and repaired like any other.
                files.map = Arc::new(Map::new(&files.db)?);
                let h = files.map.header();
                h.damage_epoch.fetch_add(1, AcqRel);
                st.notices.push(format!(
                    "portmgr: registry file {} was truncated while pid {} had it mapped; mapped it again, and its records are checked",
                    db_path().display(),
                    sys::getpid()
                ));
            }
            if !size_ok || files.map.faulted() || files.map.header().magic.load(Acquire) != MAGIC {
                if st.owner.is_some() {
                    // Our owner lock proves nobody moved it aside (that needs no owner
                    // attached): it was damaged in place. Keep our lock, and with it our
                    // ports; reopening would drop it and let others take them.
                    return Err(Error::RegistryCorrupt {
                        path: db_path(),
                        reason: format!(
                            "it was {} while this process (pid {}) was using it; this process keeps its ports, but no more calls work on that file: stop the processes using it, then run portmgr again",
                            if size_ok { "overwritten (its header has no portmgr magic number)" } else { "truncated or extended" },
                            sys::getpid()
                        ),
                    });
                }
                // Moved aside by another process (it was damaged): open the new one.
                drop(_flock);
                st.files = None;
                continue;
            }
            let files: &Files = files;
            let map = Arc::clone(&files.map);
            finish_interrupted_write(&map, &mut st.images);
            if need_owner && st.owner.is_none() {
                let (owner, fields) = claim_owner(files)?;
                st.owner = Some(owner);
                st.owner_fields = Some(fields);
                st.seen_epoch = map.header().damage_epoch.load(Acquire);
                failpoint("owner-claimed");
            }
            if let Some(fields) = &st.owner_fields {
                repair_owner_slot(&map, fields, &mut st.notices);
            }
            st.live_cache.retain(|_, alive| !*alive);
            if st.live_cache.len() > OWNER_SLOTS {
                st.live_cache.clear();
            }
            let mut ctx = Ctx {
                map: &files.map,
                db: &files.db,
                me: st.owner,
                cache: &mut st.live_cache,
                now_boot: sys::boottime_ms(),
                pidns: *PIDNS,
                images: &mut st.images,
                notices: &mut st.notices,
                reported: &mut st.reported,
                owners_damaged: None,
            };
            let epoch = map.header().damage_epoch.load(Acquire);
            if ctx.me.is_some() && epoch != st.seen_epoch {
                ctx.repair_own();
                if let Some(me) = ctx.me {
                    map.owner(me.slot).repaired_epoch.store(epoch, Release);
                }
                st.seen_epoch = epoch;
            }
            let out = f(&mut ctx);
            if map.faulted() {
                // Truncated during the call: nothing it read can be trusted.
                return Err(Error::RegistryCorrupt {
                    path: db_path(),
                    reason: format!("it was truncated while this process (pid {}) was using it; try again (portmgr checks and repairs it)", sys::getpid()),
                });
            }
            return out;
        }
        Err(Error::RegistryCorrupt {
            path: db_path(),
            reason: "it was replaced three times while this call tried to use it; another process keeps finding it damaged".into(),
        })
    }

    /// Run `f` under the registry lock (process mutex + `flock`), for layers above the
    /// table that keep side files in the registry directory (see `mapping`).
    pub fn locked<R>(&self, f: impl FnOnce() -> Result<R>) -> Result<R> {
        self.with_lock(false, |_| f())
    }

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
        })?;
        Ok((lease, socks.into_iter().flatten().collect()))
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
    fn allocate_with<T>(
        &self,
        req: &Request,
        claim: &mut dyn FnMut(u16) -> Result<Option<T>>,
    ) -> Result<(Lease, Vec<T>)> {
        req.validate()?;
        let range = match &req.range {
            Some(r) => r.clone(),
            None => self.default_pool()?,
        };
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
                    return Err(Error::PortInUse { port: busy[0], holder: "a socket outside portmgr".into() });
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
            },
            items,
        ))
    }

    fn rollback(&self, lease_id: u64, ports: impl IntoIterator<Item = u16>) -> Result<()> {
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

    /// Release the lease holding `port` (all its ports). Allowed when this registry handle
    /// holds it, when it was kept or detached (TTL, watched process), or when its owner is
    /// gone; otherwise [`Error::NotOwner`]. Returns the ports freed.
    pub fn release_port(&self, port: u16) -> Result<Vec<u16>> {
        self.release_where(&format!("port {port}"), |map, p| p == port && map.record(p).state.load(Acquire) != FREE)
    }

    /// Release the live lease named `name` (as [`Registry::release_port`]).
    pub fn release_name(&self, name: &str) -> Result<Vec<u16>> {
        self.release_where(&format!("service {}", shown_name(name)), |map, p| map.record(p).name_is(name))
    }

    /// Release lease `id` (all its ports), as [`Registry::release_port`] does: the handle
    /// users of a port registry know. An unknown or already-released id is
    /// [`Error::NotFound`].
    pub fn release_id(&self, id: u64) -> Result<Vec<u16>> {
        self.release_where(&format!("lease {id}"), |map, p| map.holds_lease(p, id))
    }

    fn release_where(&self, what: &str, matches: impl Fn(&Map, u16) -> bool) -> Result<Vec<u16>> {
        self.with_lock(false, |ctx| {
            let hit = ctx.map.marked().into_iter().find(|&p| matches(ctx.map, p) && ctx.live(p));
            let Some(port) = hit else {
                return Err(Error::NotFound(format!("no live lease holds {what}")));
            };
            let r = ctx.map.record(port);
            let mine = ctx.me == Some(OwnerId { slot: r.owner_slot.load(Relaxed), generation: r.owner_gen.load(Relaxed) });
            let detached = r.flags.load(Relaxed) & FLAG_DETACHED != 0;
            if !mine && !detached && ctx.owner_alive(r.owner_slot.load(Relaxed), r.owner_gen.load(Relaxed)) {
                return Err(Error::NotOwner { what: what.to_string(), pid: r.owner_pid.load(Relaxed) });
            }
            let id = r.lease_id.load(Relaxed);
            // Only this owner's records of that lease id: a damaged lease-id counter must
            // not let one release clear another process's lease.
            let owner = OwnerId { slot: r.owner_slot.load(Relaxed), generation: r.owner_gen.load(Relaxed) };
            Ok(ctx.clear_lease(id, Some(owner), None))
        })
    }

    /// Extend the TTL of the lease holding `port` to `ttl` from now (its own TTL when
    /// `None`). The heartbeat of a detached lease.
    pub fn renew_port(&self, port: u16, ttl: Option<Duration>) -> Result<()> {
        self.renew_where(&format!("port {port}"), ttl, |map, p| p == port && map.record(p).state.load(Acquire) != FREE)
    }

    /// Extend the TTL of lease `id` (as [`Registry::renew_port`]). An unknown, released or
    /// expired id is [`Error::NotFound`]: the heartbeat of a lease that is gone fails.
    pub fn renew_id(&self, id: u64, ttl: Option<Duration>) -> Result<()> {
        self.renew_where(&format!("lease {id}"), ttl, |map, p| map.holds_lease(p, id))
    }

    /// Extend the TTL of the lease named `name` (as [`Registry::renew_port`]).
    pub fn renew_name(&self, name: &str, ttl: Option<Duration>) -> Result<()> {
        self.renew_where(&format!("service {}", shown_name(name)), ttl, |map, p| map.record(p).name_is(name))
    }

    fn renew_where(&self, what: &str, ttl: Option<Duration>, matches: impl Fn(&Map, u16) -> bool) -> Result<()> {
        if let Some(t) = ttl {
            request::check_ttl(t)?;
        }
        self.with_lock(false, |ctx| {
            let hit = ctx.map.marked().into_iter().find(|&p| matches(ctx.map, p) && ctx.live(p));
            let Some(port) = hit else {
                return Err(Error::NotFound(format!("no live lease holds {what}")));
            };
            let r = ctx.map.record(port);
            let owner = OwnerId { slot: r.owner_slot.load(Relaxed), generation: r.owner_gen.load(Relaxed) };
            ctx.renew_lease(r.lease_id.load(Relaxed), Some(owner), ttl, None)
        })
    }

    /// Every live port, ascending.
    pub fn list(&self) -> Result<Vec<LeaseInfo>> {
        self.with_lock(false, |ctx| {
            let mut out = Vec::new();
            for p in ctx.map.marked() {
                if ctx.live(p) {
                    out.push(ctx.info(p));
                }
            }
            Ok(out)
        })
    }

    /// The live ports named `name` (empty when none).
    pub fn get_by_name(&self, name: &str) -> Result<Vec<LeaseInfo>> {
        Ok(self.list()?.into_iter().filter(|i| i.name.as_deref() == Some(name)).collect())
    }

    /// The live lease of `port`, if any.
    pub fn get_by_port(&self, port: u16) -> Result<Option<LeaseInfo>> {
        self.with_lock(false, |ctx| {
            // The record decides (a damaged bitmap bit does not hide a live lease).
            Ok(ctx.live(port).then(|| ctx.info(port)))
        })
    }

    /// Drop every dead or expired record; returns what was freed (with its last state).
    pub fn gc(&self) -> Result<Vec<LeaseInfo>> {
        self.with_lock(false, |ctx| {
            let mut freed = Vec::new();
            for p in ctx.map.marked() {
                let r = ctx.map.record(p);
                if r.state.load(Acquire) == FREE && ctx.sound(p) {
                    ctx.map.unmark(p);
                } else if !ctx.live(p) {
                    freed.push(ctx.info(p));
                    ctx.reclaim(p);
                }
            }
            Ok(freed)
        })
    }

    /// Free every damaged record (see [`LeaseInfo::state`] `"damaged"`) that no live
    /// process can still repair: refused with [`Error::RegistryCorrupt`] while a live
    /// process has not yet checked its own records since the damage was found (it does at
    /// its next call). Returns the ports freed. A damaged
    /// record of a lease that lived by a TTL or a watched process (a CLI `alloc`) cannot be
    /// repaired by anyone: this is how such ports come back.
    pub fn free_damaged(&self) -> Result<Vec<u16>> {
        self.with_lock(false, |ctx| {
            let epoch = ctx.map.header().damage_epoch.load(Acquire);
            let mut behind = Vec::new();
            for slot in 0..OWNER_SLOTS as u32 {
                let o = ctx.map.owner(slot);
                let g = o.generation.load(Acquire);
                let me = ctx.me.is_some_and(|m| m.slot == slot);
                if g != 0 && !me && o.repaired_epoch.load(Acquire) < epoch && ctx.owner_alive(slot, g) {
                    behind.push(o.pid.load(Relaxed));
                }
            }
            if !behind.is_empty() {
                let pids: Vec<String> = behind.iter().take(10).map(u32::to_string).collect();
                return Err(Error::RegistryCorrupt {
                    path: self.inner.dir.join("registry.db"),
                    reason: format!(
                        "its damaged records are not freed yet: {} live process(es) (pid {}) have not checked their own records since the damage was found; they repair them at their next portmgr call, or stop them, then try again",
                        behind.len(),
                        pids.join(", ")
                    ),
                });
            }
            let mut freed = Vec::new();
            for p in 0..=u16::MAX {
                if !ctx.sound(p) {
                    ctx.clear(p);
                    ctx.reported.remove(&p);
                    freed.push(p);
                }
            }
            Ok(freed)
        })
    }

    /// Records no longer live but not yet reclaimed (state `"expired"` or `"owner gone"`),
    /// left in place: what [`Registry::gc`] would free. For health reports.
    pub fn stale(&self) -> Result<Vec<LeaseInfo>> {
        self.with_lock(false, |ctx| {
            let mut out = Vec::new();
            for p in ctx.map.marked() {
                let r = ctx.map.record(p);
                if r.state.load(Acquire) != FREE && ctx.sound(p) && !ctx.live(p) {
                    out.push(ctx.info(p));
                }
            }
            Ok(out)
        })
    }

    /// Pool size, held, free, utilization, live owners and the lifetime counters.
    pub fn stats(&self) -> Result<Stats> {
        let pool = self.default_pool()?;
        self.with_lock(false, |ctx| {
            let live: Vec<u16> = ctx.map.marked().into_iter().filter(|&p| ctx.live(p)).collect();
            let held_in_pool = live.iter().filter(|&&p| pool.contains(p)).count();
            let mut owners = 0;
            for slot in 0..OWNER_SLOTS as u32 {
                let g = ctx.map.owner(slot).generation.load(Acquire);
                if g != 0 && ctx.owner_alive(slot, g) {
                    owners += 1;
                }
            }
            let h = ctx.map.header();
            Ok(Stats {
                pool: format!("{}-{}", pool.start(), pool.end()),
                pool_size: pool.len(),
                held: live.len(),
                held_in_pool,
                free: pool.len().saturating_sub(held_in_pool),
                utilization: held_in_pool as f64 / pool.len().max(1) as f64,
                owners,
                allocations: h.allocations.load(Acquire),
                releases: h.releases.load(Acquire),
                reclaimed: h.reclaimed.load(Acquire),
            })
        })
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("dir", &self.inner.dir).finish()
    }
}

static PIDNS: LazyLock<u64> = LazyLock::new(sys::pidns_inode);

fn exhausted_msg(req: &Request, range: &PortRange, busy: usize) -> String {
    let what = if req.contiguous && req.count > 1 {
        format!("no block of {} consecutive free ports", req.count)
    } else if req.count > 1 {
        format!("fewer than {} free ports", req.count)
    } else {
        "no free port".to_string()
    };
    let src = if req.range.is_some() { "the requested range" } else { "the default pool" };
    format!(
        "{what} in {src} {range} ({busy} found bound by other programs, the rest held in the registry); release ports (`portmgr gc`, `portmgr list`), or ask for a larger range"
    )
}

impl Files {
    /// Open the directory and files, creating and initialising the table if new, and
    /// checking it otherwise. Holds the file lock while it does so.
    fn open(dir: &Path, deadline: Instant, notices: &mut Vec<String>) -> Result<Files> {
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
            } else if len != FILE_SIZE as u64 {
                Some(format!("its size is {len} bytes, not {FILE_SIZE} (truncated or not a portmgr registry)"))
            } else {
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
                    eprintln!("{msg}");
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
fn reserve(db: &File, path: &Path) -> Result<()> {
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
fn init_table(map: &Map) {
    for p in 0..=u16::MAX {
        map.record(p).check.store(*FREE_CHECK, Relaxed);
    }
    for slot in 0..OWNER_SLOTS as u32 {
        map.owner(slot).seal();
    }
    init_header(map.header());
}

/// Upgrade a layout version 1 file in place, keeping every record and owner: owner and
/// record offsets are the same; a record's `watch_pidns` (a u64 whose high half is 0) is
/// now a u32 followed by the record's check. Under the file lock. Processes of the older
/// version still attached see the magic change and stop using the file (their ports stay
/// held by their owner locks).
fn upgrade_v1(map: &Map) -> usize {
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

fn init_header(h: &Header) {
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

fn check_header(map: &Map) -> Option<String> {
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
fn check_boot(map: &Map, db: &File, notices: &mut Vec<String>) {
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

/// What an owner wrote into its slot, kept in memory to see and repair damage to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct OwnerFields {
    slot: u32,
    generation: u64,
    pid: u32,
    start_time: u64,
    pidns: u64,
    created_ms: u64,
    /// The slot's check as sealed.
    check: u32,
}

impl OwnerFields {
    fn write(&self, o: &Owner) {
        o.pid.store(self.pid, Relaxed);
        o.start_time.store(self.start_time, Relaxed);
        o.pidns.store(self.pidns, Relaxed);
        o.created_ms.store(self.created_ms, Relaxed);
        o.generation.store(self.generation, Release);
        o.check.store(self.check, Release);
    }

    /// Whether the slot still holds exactly what was written (plain loads: this runs on
    /// every call, and needs no checksum of its own).
    fn in_place(&self, o: &Owner) -> bool {
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
fn claim_owner(files: &Files) -> Result<(OwnerId, OwnerFields)> {
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
fn repair_owner_slot(map: &Map, fields: &OwnerFields, notices: &mut Vec<String>) {
    let o = map.owner(fields.slot);
    if fields.in_place(o) {
        return;
    }
    fields.write(o);
    notices.push(format!("portmgr: the registry's owner slot {} of pid {} was damaged; repaired it", fields.slot, fields.pid));
}

/// A writer killed (or panicking) while it changed a record leaves the record named in
/// the header: finish its write. A record it was freeing is cleared; one it was filling
/// in (its state is stored after every other field) is resealed.
fn finish_interrupted_write(map: &Map, images: &mut HashMap<u16, Image>) {
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

/// What an allocation asks for, fixed for all its rounds.
struct Plan<'a> {
    req: &'a Request,
    range: &'a PortRange,
    lease_id: u64,
    watch: Option<(u32, u64)>,
}

/// The view of the table while the lock is held.
struct Ctx<'a> {
    map: &'a Arc<Map>,
    db: &'a File,
    me: Option<OwnerId>,
    cache: &'a mut HashMap<(u32, u64), bool>,
    now_boot: u64,
    pidns: u64,
    images: &'a mut HashMap<u16, Image>,
    notices: &'a mut Vec<String>,
    reported: &'a mut HashSet<u16>,
    /// Whether a live owner's slot is damaged (found out once per call, when needed).
    owners_damaged: Option<bool>,
}

impl Ctx<'_> {
    fn owner_alive(&mut self, slot: u32, generation: u64) -> bool {
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
    fn live(&mut self, port: u16) -> bool {
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
    fn held_by_fields(&mut self, port: u16) -> bool {
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
    fn taken(&mut self, port: u16) -> bool {
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

    fn reclaim(&mut self, port: u16) {
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
    fn sound(&mut self, port: u16) -> bool {
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

    fn live_owner_slot_damaged(&mut self) -> bool {
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
    fn clear(&mut self, port: u16) {
        self.map.clear_record(port);
        self.images.remove(&port);
    }

    /// Name `port`'s record in the header before changing it (see `seal`).
    fn begin(&self, port: u16) {
        self.map.header().writing.store(u32::from(port) + 1, Release);
    }

    /// Seal a record changed since `begin`, remember it when it is this process's, and
    /// clear the header's mark.
    fn seal(&mut self, port: u16) {
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
    fn note_damage(&mut self, port: u16) {
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
    fn repair_own(&mut self) {
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

    fn info(&mut self, port: u16) -> LeaseInfo {
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
            watch_pid: Some(r.watch_pid.load(Relaxed)).filter(|&w| w != 0),
            detached: flags & FLAG_DETACHED != 0,
            bound: flags & FLAG_BOUND != 0,
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
    fn lease_ports(&self, known: Option<&[u16]>) -> Vec<u16> {
        known.map_or_else(|| self.map.marked(), <[u16]>::to_vec)
    }

    /// Free every port of lease `id` (only if `owner` holds it, when given); returns them.
    /// `known`: the lease's ports when the caller knows them (saves a bitmap sweep).
    fn clear_lease(&mut self, id: u64, owner: Option<OwnerId>, known: Option<&[u16]>) -> Vec<u16> {
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
    fn renew_lease(&mut self, id: u64, owner: Option<OwnerId>, ttl: Option<Duration>, known: Option<&[u16]>) -> Result<()> {
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

    fn name_holder(&mut self, name: &str) -> Option<Vec<u16>> {
        let mut ports = Vec::new();
        for p in self.map.marked() {
            let r = self.map.record(p);
            if r.name_is(name) && self.live(p) {
                ports.push(p);
            }
        }
        (!ports.is_empty()).then_some(ports)
    }

    fn describe_holder(&mut self, port: u16) -> String {
        let r = self.map.record(port);
        let name = r.name();
        let pid = r.owner_pid.load(Relaxed);
        if name.is_empty() { format!("a portmgr lease of process {pid}") } else { format!("portmgr service {name:?} of process {pid}") }
    }

    /// Choose `want` ports for the plan (not in `skip`, not held) and mark them pending.
    fn pick(&mut self, plan: &Plan<'_>, want: usize, skip: &HashSet<u16>, first: bool) -> Result<Vec<u16>> {
        let req = plan.req;
        let me = self.me.ok_or_else(|| Error::Internal("no owner slot".into()))?;
        if first
            && let Some(name) = &req.name
            && let Some(ports) = self.name_holder(name)
        {
            return Err(Error::NameInUse { name: name.clone(), ports });
        }
        let mut out: Vec<u16> = Vec::with_capacity(want);
        if first && let Some(pref) = req.preferred {
            let n = if req.contiguous { want } else { 1 };
            let block: Vec<u16> = (0..n).filter_map(|i| u16::try_from(usize::from(pref) + i).ok()).collect();
            let mut held_by = None;
            if block.len() == n {
                for &p in &block {
                    if self.taken(p) {
                        held_by = Some(p);
                        break;
                    }
                }
            } else {
                held_by = Some(pref);
            }
            match held_by {
                None => out = block,
                Some(p) if req.required => {
                    let holder = if block.len() == n { self.describe_holder(p) } else { "the end of the port space".into() };
                    return Err(Error::PortInUse { port: p, holder });
                }
                Some(_) => {}
            }
        }
        if out.is_empty() {
            let key = req.name.as_deref();
            if req.strategy == Strategy::Kernel {
                for _ in 0..64 {
                    let p = probe::kernel_port(req.protocols)?;
                    if (req.range.is_none() || plan.range.contains(p)) && !skip.contains(&p) && !self.taken(p) {
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
                        if !plan.range.contains(p) || skip.contains(&p) || self.taken(p) {
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
                        if skip.contains(&p) || out.contains(&p) {
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

    fn mark_pending(&mut self, port: u16, plan: &Plan<'_>, me: OwnerId) {
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
        failpoint("pending-fields");
        r.state.store(PENDING, Release);
        failpoint("pending-state");
        self.map.mark(port);
        self.seal(port);
    }
}

/// A held set of ports. Dropping it releases them, unless it was [kept](Lease::keep).
///
/// In a forked child, a lease inherited from the parent belongs to the parent:
/// releasing or dropping it there does nothing.
pub struct Lease {
    registry: Registry,
    ports: Vec<u16>,
    name: Option<String>,
    lease_id: u64,
    owner: OwnerId,
    fork_gen: u64,
    active: bool,
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
            let mut kept = KEPT.lock();
            if !kept.iter().any(|r| Arc::ptr_eq(&r.inner, &self.registry.inner)) {
                kept.push(self.registry.clone());
            }
            Ok(())
        })?;
        Ok(std::mem::take(&mut self.ports))
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

/// A crash point for the reliability suite: with the `failpoints` feature, the process
/// kills itself with SIGKILL when `PORTMGR_FAILPOINT` names this point. Free otherwise.
/// `PORTMGR_FAILPOINT=name@N` fires at the N-th hit (default the first); a `:stop`
/// suffix stops the process (SIGSTOP) instead, for the stopped-lock-holder tests, and a
/// `:panic` suffix panics there (with the locks held), for the unwind tests.
#[inline]
fn failpoint(_name: &str) {
    #[cfg(feature = "failpoints")]
    {
        // (name, nth hit, action: 0 kill, 1 stop, 2 panic)
        static WANT: LazyLock<Option<(String, u64, u8)>> = LazyLock::new(|| {
            let v = std::env::var("PORTMGR_FAILPOINT").ok()?;
            let (v, action) = match (v.strip_suffix(":stop"), v.strip_suffix(":panic")) {
                (Some(v), _) => (v.to_string(), 1),
                (_, Some(v)) => (v.to_string(), 2),
                _ => (v, 0),
            };
            Some(match v.split_once('@') {
                Some((n, k)) => (n.to_string(), k.parse().unwrap_or(1), action),
                None => (v, 1, action),
            })
        });
        static HITS: AtomicU64 = AtomicU64::new(0);
        if let Some((name, nth, action)) = WANT.as_ref()
            && name == _name
            && HITS.fetch_add(1, AcqRel) + 1 == *nth
        {
            if *action == 2 {
                panic!("portmgr failpoint {name}@{nth}: injected panic");
            }
            // SAFETY: raise(3) with a valid signal number has no memory-safety preconditions.
            unsafe { libc::raise(if *action == 1 { libc::SIGSTOP } else { libc::SIGKILL }) };
        }
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Registry>();
    is::<Lease>();
}
