//! The shared registry: one table per user of who holds which port, used by every
//! process and language on the host, with no daemon.
//!
//! # How it works (the kernel facts behind it: ARCHITECTURE.md and RELIABILITY.md)
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
//! * Every record and owner slot carries a CRC-32 ([`layout`]): a damaged record is never
//!   handed out, is reported through [`Registry::notices`], and is repaired by its owner.
//!
//! # Files
//!
//! | file | holds |
//! | --- | --- |
//! | `mod.rs` | this facade: [`Registry`], the locked call (`with_lock`), release, renew, views |
//! | `alloc.rs` | allocation: picking candidates, pending records, probing, confirming |
//! | `table.rs` | the mapped table and the locked view of it: liveness, damage, repair |
//! | `layout.rs` | the file's binary layout and the record / owner-slot checks |
//! | `open.rs` | opening the file: create, check, upgrade, move aside, reboot |
//! | `owner.rs` | owner slots: claiming one, repairing this process's own |
//! | `lease.rs` | [`Lease`], and the registries kept open for kept leases |
//! | `lock.rs` | the process lock and `flock`, fork handlers |
//! | `dir.rs` | the registry directory: default location, secure open |
//! | `request.rs` | [`Request`] and its validation |
//! | `fault.rs` | the SIGBUS guard over the mapping |
//! | `failpoint.rs` | test-only crash points |

pub(crate) mod layout;
pub use layout::NAME_MAX;

mod alloc;
mod dir;
mod failpoint;
mod fault;
mod lease;
mod lock;
mod open;
mod owner;
mod request;
mod reserved;
mod table;
mod unix;

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
pub(crate) use dir::check_file;
pub(crate) use request::shown_name;

use crate::error::{Error, Result};
use crate::probe;
use crate::range::{PortRange, Protocols};
use crate::strategy::{self, Strategy};
use crate::sys::{self, ProcState};
use layout::*;

pub use lease::Lease;
pub use reserved::{ReservedRange, reserved_ports, validate_reason};
pub use unix::{SOCKETS_DIR, SUN_PATH_MAX, UnixPath};
use failpoint::failpoint;
use owner::{OwnerFields, OwnerId, claim_owner, repair_owner_slot};
use table::{Ctx, Map, finish_interrupted_write};

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
    /// The TTL it was given (or last renewed with), milliseconds; `None` without one. With
    /// `expires_ms`, when it was last renewed: `expires_ms - ttl_ms`.
    pub ttl_ms: Option<u64>,
    /// The watched process, if any.
    pub watch_pid: Option<u32>,
    /// Kept or detached: any process of the user may release it.
    pub detached: bool,
    /// Handed out as a bound socket.
    pub bound: bool,
    /// The range the lease was asked from, `[start, end]`; `None` for the default pool.
    pub range: Option<(u16, u16)>,
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
    /// Ports of the registry's reservations (see [`Registry::reserve`]), all ranges.
    pub reserved: usize,
    /// Reserved ports inside the default pool that are not held.
    pub reserved_in_pool: usize,
    /// `pool_size - held_in_pool - reserved_in_pool`: what the pool can still hand out.
    pub free: usize,
    /// `(held_in_pool + reserved_in_pool) / pool_size`, 0 to 1: how much of the pool cannot be handed out.
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
    /// moved aside, a table cleared after a reboot, a damaged record found or repaired).
    /// The core writes nothing to stderr: each skin shows these (the CLI on stderr).
    pub fn notices(&self) -> Vec<String> {
        match lock::lock_process(Instant::now() + self.timeout()) {
            Ok(_process) => self.inner.state.lock().notices.clone(),
            Err(_) => Vec::new(),
        }
    }

    /// Record a notice (see [`Registry::notices`]) for layers above the table.
    pub(crate) fn add_notice(&self, msg: String) {
        if let Ok(_process) = lock::lock_process(Instant::now() + self.timeout()) {
            self.inner.state.lock().notices.push(msg);
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
            let reserved = reserved_ports(&ctx.reservations());
            let live_set: HashSet<u16> = live.iter().copied().collect();
            let reserved_in_pool = reserved.iter().filter(|&&p| pool.contains(p) && !live_set.contains(&p)).count();
            let h = ctx.map.header();
            Ok(Stats {
                pool: format!("{}-{}", pool.start(), pool.end()),
                pool_size: pool.len(),
                held: live.len(),
                held_in_pool,
                reserved: reserved.len(),
                reserved_in_pool,
                free: pool.len().saturating_sub(held_in_pool + reserved_in_pool),
                utilization: (held_in_pool + reserved_in_pool) as f64 / pool.len().max(1) as f64,
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
#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Registry>();
    is::<Lease>();
}
