//! Health monitoring with history: [`HealthMonitor`] runs the one health check
//! ([`Services::health`]) every interval and records each result in a bounded history kept
//! in the registry directory ([`HISTORY_FILE`]), which every process of the user can read
//! ([`health_history`]). The CLI (`portmgr health --watch`, `--history`), Python
//! (`portmgr.HealthMonitor`, `portmgr.health_history()`) and `portmgr serve` (its monitor,
//! `GET /ports/health/history`) only render what is here.
//!
//! # The history file
//!
//! A ring of [`HISTORY_ENTRIES`] fixed-size slots after a 64-byte header, so its size
//! never changes however many checks are recorded:
//!
//! ```text
//! header  magic "PMHIST\0\x01" | slot size u32 | slot count u32 | last seq u64 | crc32 u32 | padding to 64
//! slot    seq u64 (0: empty) | payload length u32 | crc32 of seq, length and payload u32 | payload (JSON) | zeros
//! ```
//!
//! Entry number `seq` (1, 2, ...) lives in slot `(seq - 1) % HISTORY_ENTRIES`. A writer
//! holds `flock(LOCK_EX)` on the file while it writes a slot and then the header; readers
//! hold `LOCK_SH` while they read, so no reader sees a slot half written. A slot left torn
//! by a writer killed mid-write fails its checksum and is skipped; a damaged header is
//! rebuilt from the slots; a file of another geometry is started afresh. Entries are
//! bounded: at most [`MAX_ENTRY_PROBLEMS`] problems, each message cut to
//! [`MAX_MESSAGE`] bytes, the whole within one slot.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Health, Services};
use crate::error::{Error, Result};
use crate::registry::Registry;
use crate::sys;

/// The history's file name inside the registry directory.
pub const HISTORY_FILE: &str = "health-history.ring";
/// How many entries the history keeps (the oldest is overwritten).
pub const HISTORY_ENTRIES: usize = 256;
/// The size of one slot, in bytes.
pub const HISTORY_SLOT: usize = 2048;
/// The most problems one entry keeps (`problem_count` has the full number).
pub const MAX_ENTRY_PROBLEMS: usize = 8;
/// The longest problem message an entry keeps, in bytes (longer ones are cut, with `…`).
pub const MAX_MESSAGE: usize = 240;

const MAGIC: &[u8; 8] = b"PMHIST\0\x01";
const HEADER: usize = 64;
const SLOT_HEAD: usize = 16;
const MAX_PAYLOAD: usize = HISTORY_SLOT - SLOT_HEAD;
const FILE_SIZE: u64 = (HEADER + HISTORY_ENTRIES * HISTORY_SLOT) as u64;
/// How long a reader or writer waits for the history file's lock.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// One problem of a recorded check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryProblem {
    /// The problem's kind (`exhausted`, `bound_elsewhere`, `expired`, `owner_gone`,
    /// `damaged`; `check_failed` when the check itself failed).
    pub kind: String,
    /// The range concerned (`exhausted`), `[start, end]`.
    #[serde(default)]
    pub range: Option<(u16, u16)>,
    /// The port concerned.
    #[serde(default)]
    pub port: Option<u16>,
    /// What is wrong, at most [`MAX_MESSAGE`] bytes.
    pub message: String,
}

/// One recorded health check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthEntry {
    /// Its number in the history: 1, 2, ... (0 before it is recorded).
    pub seq: u64,
    /// When the check ran: milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// No problems (and the check itself worked).
    pub ok: bool,
    /// Live ports in the registry at the check.
    pub held: usize,
    /// How many problems the check found (`problems` keeps the first
    /// [`MAX_ENTRY_PROBLEMS`]).
    pub problem_count: usize,
    /// The problems, in the report's order.
    pub problems: Vec<HistoryProblem>,
    /// Whether this check's state differs from the check before it ([`HealthEntry::same_state`]):
    /// in a history, the entry before it; for a monitor, its previous check. The first is
    /// a change.
    #[serde(default)]
    pub changed: bool,
}

/// `s` cut to at most `max` bytes on a character boundary, with `…` when cut.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl HealthEntry {
    /// The entry of a health report made at `time_ms`.
    pub fn from_health(h: &Health, time_ms: u64) -> HealthEntry {
        HealthEntry {
            seq: 0,
            time_ms,
            ok: h.ok,
            held: h.held,
            problem_count: h.problems.len(),
            problems: h
                .problems
                .iter()
                .take(MAX_ENTRY_PROBLEMS)
                .map(|p| HistoryProblem {
                    kind: p.kind.as_str().to_string(),
                    range: p.range,
                    port: p.port,
                    message: cut(&p.message, MAX_MESSAGE),
                })
                .collect(),
            changed: false,
        }
    }

    /// The entry of a check that failed with `e` (the registry could not be read, ...):
    /// not ok, one problem of kind `check_failed`.
    pub fn from_error(e: &Error, time_ms: u64) -> HealthEntry {
        HealthEntry {
            seq: 0,
            time_ms,
            ok: false,
            held: 0,
            problem_count: 1,
            problems: vec![HistoryProblem {
                kind: "check_failed".into(),
                range: None,
                port: None,
                message: cut(&format!("the health check failed: {e}"), MAX_MESSAGE),
            }],
            changed: false,
        }
    }

    /// Whether `other` is in the same state: both ok or both not, and the same problems
    /// (kind and the port or range concerned, in order; messages with changing figures,
    /// such as how full a range is, do not count). What "each change" of
    /// `portmgr health --watch` means.
    pub fn same_state(&self, other: &HealthEntry) -> bool {
        let same = |a: &HistoryProblem, b: &HistoryProblem| a.kind == b.kind && a.range == b.range && a.port == b.port;
        self.ok == other.ok
            && self.problem_count == other.problem_count
            && self.problems.len() == other.problems.len()
            && self.problems.iter().zip(&other.problems).all(|(a, b)| same(a, b))
    }

    /// The payload as stored: JSON within one slot (problems dropped from the end until
    /// it fits; `problem_count` keeps the full number).
    fn payload(&self) -> Result<Vec<u8>> {
        let mut e = self.clone();
        e.changed = false;
        loop {
            let text = serde_json::to_vec(&e).map_err(|err| Error::Internal(format!("serializing a health entry: {err}")))?;
            if text.len() <= MAX_PAYLOAD {
                return Ok(text);
            }
            if e.problems.pop().is_none() {
                return Err(Error::Internal("a health entry without problems does not fit its slot".into()));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The file

fn crc(parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

fn header_bytes(last_seq: u64) -> [u8; HEADER] {
    let mut b = [0u8; HEADER];
    b[0..8].copy_from_slice(MAGIC);
    b[8..12].copy_from_slice(&(HISTORY_SLOT as u32).to_le_bytes());
    b[12..16].copy_from_slice(&(HISTORY_ENTRIES as u32).to_le_bytes());
    b[16..24].copy_from_slice(&last_seq.to_le_bytes());
    let c = crc(&[&b[0..24]]);
    b[24..28].copy_from_slice(&c.to_le_bytes());
    b
}

/// What the header says: `Some(Some(last_seq))` when valid, `Some(None)` when it has this
/// geometry but a bad checksum, `None` when the file is not a history of this geometry.
fn parse_header(b: &[u8]) -> Option<Option<u64>> {
    if b.len() < HEADER
        || &b[0..8] != MAGIC
        || u32::from_le_bytes(b[8..12].try_into().ok()?) != HISTORY_SLOT as u32
        || u32::from_le_bytes(b[12..16].try_into().ok()?) != HISTORY_ENTRIES as u32
    {
        return None;
    }
    let stored = u32::from_le_bytes(b[24..28].try_into().ok()?);
    Some((crc(&[&b[0..24]]) == stored).then(|| u64::from_le_bytes(b[16..24].try_into().unwrap_or_default())))
}

/// The entry in one slot, `None` when it is empty or fails its checksum.
fn parse_slot(b: &[u8]) -> Option<HealthEntry> {
    let seq = u64::from_le_bytes(b[0..8].try_into().ok()?);
    let len = u32::from_le_bytes(b[8..12].try_into().ok()?) as usize;
    if seq == 0 || len > MAX_PAYLOAD {
        return None;
    }
    let stored = u32::from_le_bytes(b[12..16].try_into().ok()?);
    let payload = &b[SLOT_HEAD..SLOT_HEAD + len];
    if crc(&[&b[0..12], payload]) != stored {
        return None;
    }
    let mut e: HealthEntry = serde_json::from_slice(payload).ok()?;
    e.seq = seq;
    Some(e)
}

fn slot_bytes(seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; HISTORY_SLOT];
    b[0..8].copy_from_slice(&seq.to_le_bytes());
    b[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    b[SLOT_HEAD..SLOT_HEAD + payload.len()].copy_from_slice(payload);
    let c = crc(&[&b[0..12], payload]);
    b[12..16].copy_from_slice(&c.to_le_bytes());
    b
}

/// Open the history file of `reg`'s directory (created, 0600, when `create`), checked
/// like every file portmgr keeps there. `None` when it does not exist and `create` is off.
fn open(reg: &Registry, create: bool) -> Result<Option<File>> {
    let dir = reg.dir();
    let path = dir.join(HISTORY_FILE);
    if !create && std::fs::symlink_metadata(&path).is_err() {
        return Ok(None);
    }
    let dfd = sys::open_dir_nofollow(dir).map_err(|e| Error::os(format!("opening {}", dir.display()), e))?;
    let f = sys::openat_rw_create(&dfd, HISTORY_FILE).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => Error::InsecureDirectory {
            path: path.clone(),
            reason: "it is a symbolic link: remove it (portmgr recreates it)".into(),
        },
        _ => Error::os(format!("opening {}", path.display()), e),
    })?;
    crate::registry::check_file(&path, &f)?;
    Ok(Some(f))
}

/// Take the file's lock (shared or exclusive) within [`LOCK_WAIT`].
fn lock(f: &File, exclusive: bool, reg: &Registry) -> Result<()> {
    let deadline = Instant::now() + LOCK_WAIT;
    let mut pause = Duration::from_micros(50);
    loop {
        let r = if exclusive { f.try_lock() } else { f.try_lock_shared() };
        match r {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::os(format!("flock on {}", reg.dir().join(HISTORY_FILE).display()), e));
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::lock_timeout(format!(
                "the health history {} stayed locked for {LOCK_WAIT:?} (a stopped process holding it?)",
                reg.dir().join(HISTORY_FILE).display()
            )));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

fn read_all(f: &File, reg: &Registry) -> Result<Vec<u8>> {
    let len = f.metadata().map_err(|e| Error::os("fstat of the health history", e))?.len();
    if len != FILE_SIZE {
        return Ok(Vec::new());
    }
    let mut b = vec![0u8; FILE_SIZE as usize];
    f.read_exact_at(&mut b, 0)
        .map_err(|e| Error::os(format!("reading {}", reg.dir().join(HISTORY_FILE).display()), e))?;
    Ok(b)
}

/// Every valid entry of a whole file's bytes, oldest first, with `changed` set.
fn entries_of(b: &[u8]) -> Vec<HealthEntry> {
    if parse_header(b).is_none() {
        return Vec::new();
    }
    let mut out: Vec<HealthEntry> = b[HEADER..].chunks_exact(HISTORY_SLOT).filter_map(parse_slot).collect();
    out.sort_by_key(|e| e.seq);
    for i in 0..out.len() {
        out[i].changed = i == 0 || !out[i].same_state(&out[i - 1]);
    }
    out
}

/// The health history of `reg`'s directory, oldest first (at most [`HISTORY_ENTRIES`]);
/// empty when nothing was recorded. Each entry's `changed` compares it with the one before.
pub fn health_history(reg: &Registry) -> Result<Vec<HealthEntry>> {
    let Some(f) = open(reg, false)? else { return Ok(Vec::new()) };
    lock(&f, false, reg)?;
    let b = read_all(&f, reg);
    let _ = f.unlock();
    Ok(entries_of(&b?))
}

/// Append `entry` to the history of `reg`'s directory; returns it with its `seq`.
pub fn record_health(reg: &Registry, entry: &HealthEntry) -> Result<HealthEntry> {
    let payload = entry.payload()?;
    let Some(f) = open(reg, true)? else { return Err(Error::Internal("the health history was not created".into())) };
    lock(&f, true, reg)?;
    let r = append(&f, reg, &payload);
    let _ = f.unlock();
    let seq = r?;
    let mut out: HealthEntry = serde_json::from_slice(&payload).unwrap_or_else(|_| entry.clone());
    out.seq = seq;
    out.changed = entry.changed;
    Ok(out)
}

/// Write `payload` as the next entry (the lock is held); its seq.
fn append(f: &File, reg: &Registry, payload: &[u8]) -> Result<u64> {
    let path = reg.dir().join(HISTORY_FILE);
    let werr = |e: std::io::Error| Error::os(format!("writing {}", path.display()), e);
    let len = f.metadata().map_err(|e| Error::os(format!("fstat of {}", path.display()), e))?.len();
    let mut head = [0u8; HEADER];
    let state = if len == FILE_SIZE {
        f.read_exact_at(&mut head, 0).map_err(werr)?;
        parse_header(&head)
    } else {
        None
    };
    let last = match state {
        Some(Some(last)) => last,
        // A header left damaged: the slots say where the ring stands.
        Some(None) => {
            let b = read_all(f, reg)?;
            b[HEADER..].chunks_exact(HISTORY_SLOT).filter_map(parse_slot).map(|e| e.seq).max().unwrap_or(0)
        }
        // New, or not a history of this geometry: start afresh.
        None => {
            f.set_len(0).map_err(werr)?;
            f.set_len(FILE_SIZE).map_err(werr)?;
            f.write_all_at(&header_bytes(0), 0).map_err(werr)?;
            0
        }
    };
    let seq = last + 1;
    let slot = ((seq - 1) % HISTORY_ENTRIES as u64) as usize;
    f.write_all_at(&slot_bytes(seq, payload), (HEADER + slot * HISTORY_SLOT) as u64).map_err(werr)?;
    f.write_all_at(&header_bytes(seq), 0).map_err(werr)?;
    Ok(seq)
}

impl Services {
    /// Run the health check once (`threshold` as for [`Services::health`]) and record it
    /// in the history; a check that fails is recorded as a `check_failed` entry, a
    /// history that cannot be written is the error.
    pub fn record_health(&self, threshold: f64) -> Result<HealthEntry> {
        let now = sys::wall_ms();
        let entry = match self.health(threshold) {
            Ok(h) => HealthEntry::from_health(&h, now),
            Err(e) if e.code() == crate::ErrorCode::InvalidArgument => return Err(e),
            Err(e) => HealthEntry::from_error(&e, now),
        };
        record_health(self.registry(), &entry)
    }

    /// The health history of this registry, oldest first (see [`health_history`]).
    pub fn health_history(&self) -> Result<Vec<HealthEntry>> {
        health_history(self.registry())
    }
}

// ---------------------------------------------------------------------------------------
// The monitor

#[derive(Default)]
struct StopFlag {
    stopped: Mutex<bool>,
    wake: Condvar,
}

/// Stops a [`HealthMonitor`] from anywhere (another thread, a signal-waiting loop).
/// Cheap to clone.
#[derive(Clone)]
pub struct MonitorStop(Arc<StopFlag>);

impl MonitorStop {
    /// Ask the monitor to stop: it finishes the check under way (if any) and its thread
    /// ends; no check starts after this returns.
    pub fn stop(&self) {
        *self.0.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.0.wake.notify_all();
    }

    /// Whether [`MonitorStop::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        *self.0.stopped.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A thread that runs the health check every `interval`, records each result in the
/// history ([`Services::record_health`]) and hands it to a callback (with `changed` set
/// against the monitor's previous check). The first check runs at once.
///
/// [`HealthMonitor::stop`] stops it and waits for the thread; dropping it stops it
/// without waiting (so a callback that needs a lock held by the dropping thread, such as
/// Python's GIL, cannot deadlock).
pub struct HealthMonitor {
    stop: MonitorStop,
    thread: Option<JoinHandle<()>>,
    checks: Arc<AtomicU64>,
    last_error: Arc<Mutex<Option<String>>>,
}

/// The shortest interval a monitor takes.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

impl HealthMonitor {
    /// Start a monitor over `svc`: every `interval` (at least [`MIN_INTERVAL`]) one check
    /// at `threshold` (0 to 1, as [`Services::health`]), recorded, then `callback(&entry)`.
    /// A panic in the callback is caught (the monitor goes on).
    ///
    /// Errors (invalid argument): an interval below [`MIN_INTERVAL`], a threshold outside
    /// 0 to 1; an OS error when the thread cannot be started.
    pub fn start(
        svc: Services,
        interval: Duration,
        threshold: f64,
        mut callback: impl FnMut(&HealthEntry) + Send + 'static,
    ) -> Result<HealthMonitor> {
        if interval < MIN_INTERVAL {
            return Err(Error::invalid(format!(
                "the monitor's interval must be at least {MIN_INTERVAL:?}, not {interval:?}"
            )));
        }
        if !(0.0..=1.0).contains(&threshold) {
            return Err(Error::invalid(format!("the health threshold must be from 0 to 1 (0% to 100%), not {threshold}")));
        }
        let stop = MonitorStop(Arc::new(StopFlag::default()));
        let checks = Arc::new(AtomicU64::new(0));
        let last_error = Arc::new(Mutex::new(None));
        let (st, n, le) = (stop.clone(), Arc::clone(&checks), Arc::clone(&last_error));
        let thread = std::thread::Builder::new()
            .name("portmgr-health".into())
            .spawn(move || {
                let mut prev: Option<HealthEntry> = None;
                let mut next = Instant::now();
                loop {
                    if st.is_stopped() {
                        return;
                    }
                    let mut entry = match svc.record_health(threshold) {
                        Ok(e) => e,
                        Err(e) => {
                            // Not recorded: still reported.
                            *le.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                            HealthEntry::from_error(&e, sys::wall_ms())
                        }
                    };
                    entry.changed = prev.as_ref().is_none_or(|p| !entry.same_state(p));
                    n.fetch_add(1, Ordering::Relaxed);
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(&entry)));
                    prev = Some(entry);
                    next += interval;
                    let now = Instant::now();
                    if next < now {
                        next = now; // fell behind (a slow check): no burst to catch up
                    }
                    let mut g = st.0.stopped.lock().unwrap_or_else(|p| p.into_inner());
                    while !*g {
                        let left = next.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        g = st.0.wake.wait_timeout(g, left).unwrap_or_else(|p| p.into_inner()).0;
                    }
                }
            })
            .map_err(|e| Error::os("starting the health monitor's thread", e))?;
        Ok(HealthMonitor { stop, thread: Some(thread), checks, last_error })
    }

    /// A handle that stops this monitor.
    pub fn stopper(&self) -> MonitorStop {
        self.stop.clone()
    }

    /// How many checks ran so far.
    pub fn checks(&self) -> u64 {
        self.checks.load(Ordering::Relaxed)
    }

    /// The last error recording a check (`None` when every check was recorded).
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether the monitor's thread still runs.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stop the monitor and wait for its thread (a check under way finishes first);
    /// returns how many checks ran.
    pub fn stop(mut self) -> u64 {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.checks()
    }
}

impl Drop for HealthMonitor {
    fn drop(&mut self) {
        self.stop.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_keeps_char_boundaries() {
        assert_eq!(cut("abc", 5), "abc");
        let s = "é".repeat(300);
        let c = cut(&s, MAX_MESSAGE);
        assert!(c.len() <= MAX_MESSAGE && c.ends_with('…'), "{}", c.len());
    }

    #[test]
    fn slots_round_trip_and_detect_tearing() {
        let e = HealthEntry {
            seq: 0,
            time_ms: 5,
            ok: false,
            held: 3,
            problem_count: 1,
            problems: vec![HistoryProblem { kind: "exhausted".into(), range: Some((1, 2)), port: None, message: "m".into() }],
            changed: false,
        };
        let mut b = slot_bytes(7, &e.payload().unwrap());
        let back = parse_slot(&b).unwrap();
        assert_eq!(back.seq, 7);
        assert_eq!(back.problems, e.problems);
        b[SLOT_HEAD + 3] ^= 1;
        assert!(parse_slot(&b).is_none());
        assert_eq!(parse_header(&header_bytes(9)), Some(Some(9)));
        let mut h = header_bytes(9);
        h[17] ^= 1;
        assert_eq!(parse_header(&h), Some(None));
    }

    #[test]
    fn many_problems_fit_one_slot() {
        let p = HistoryProblem { kind: "bound_elsewhere".into(), range: Some((1, 2)), port: Some(3), message: "x".repeat(MAX_MESSAGE) };
        let e = HealthEntry {
            seq: 0,
            time_ms: 1,
            ok: false,
            held: 1,
            problem_count: 100,
            problems: vec![p; MAX_ENTRY_PROBLEMS],
            changed: false,
        };
        let payload = e.payload().unwrap();
        assert!(payload.len() <= MAX_PAYLOAD);
        let back: HealthEntry = serde_json::from_slice(&payload).unwrap();
        assert_eq!(back.problem_count, 100);
        assert!(!back.problems.is_empty());
    }
}
