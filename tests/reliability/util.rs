//! Helpers shared by the reliability suites: temp registries, child processes (this test
//! binary re-executed with `PORTMGR_RELIABILITY_ROLE`), forensic logging, a small RNG and
//! the quick/long mode knobs.
//!
//! Port ranges: the reliability suites own 14000-14999 (14500-14549 unused) and
//! 29800-29999 (damage), below the kernel's ephemeral range (32768-60999) and, but for
//! damage, below portmgr's default pool (15000-32767), where any process allocating from
//! the pool can bind a port under the concurrency test; other suites use other ranges.
//! By file: crash 14000-14119, concurrency 14120-14183, io_faults' spot checks 14190,
//! 14940, 14975 and 14999, fork 14200-14399, roles/stopped/stopped_fp 14400-14449,
//! panic_fp 14450-14499, corruption 14550-14649, probe_table 14651-14758, io_faults
//! 14760-14859, ffi_hostile 14860-14923 and 14960-14969; damage 29800-29999.

#![allow(dead_code)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use portmgr::{PortRange, Registry, Request};

/// The environment variable that turns a re-executed test binary into a child role.
pub const ROLE_ENV: &str = "PORTMGR_RELIABILITY_ROLE";

/// A number from the environment (long mode), else `quick`.
pub fn knob(name: &str, quick: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(quick)
}

/// Whether the long mode was asked for (scripts/reliability.sh sets it).
pub fn long_mode() -> bool {
    std::env::var_os("PORTMGR_RELIABILITY_LONG").is_some_and(|v| v == "1")
}

pub fn range(start: u16, len: u16) -> PortRange {
    PortRange::new(start, start + len - 1).unwrap()
}

pub fn req_in(start: u16, len: u16) -> Request {
    Request::new().range(range(start, len))
}

/// A fresh temp directory; the registry lives in `<tmp>/reg`.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("portmgr-rel-").tempdir().unwrap()
}

/// xorshift64*: deterministic per seed, printed on failure so a run can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn from_env(name: &str) -> (Rng, u64) {
        let seed = knob(name, 0);
        let seed = if seed == 0 {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
                ^ u64::from(std::process::id())
        } else {
            seed
        };
        (Rng::new(seed), seed)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What holds `port` on this host, for failure messages: `ss -anp sport = :P`.
pub fn ss(port: u16) -> String {
    match Command::new("ss").args(["-anp", &format!("sport = :{port}")]).output() {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => format!("(ss failed: {e})"),
    }
}

/// The registry's view of `port` plus `ss`, for failure messages.
pub fn forensics(dir: &Path, ports: &[u16]) -> String {
    let mut out = String::new();
    let reg = Registry::open(dir);
    for &p in ports.iter().take(8) {
        let view = match &reg {
            Ok(r) => format!("{:?}", r.get_by_port(p)),
            Err(e) => format!("(registry did not open: {e})"),
        };
        out.push_str(&format!("--- port {p}\nregistry: {view}\nss:\n{}", ss(p)));
    }
    if let Ok(r) = &reg {
        out.push_str(&format!("--- list: {:?}\n--- stats: {:?}\n", r.list().map(|l| l.len()), r.stats()));
    }
    out
}

/// Panic with forensics when `ports` has duplicates.
pub fn assert_distinct(dir: &Path, what: &str, ports: &[u16]) {
    let mut seen = HashSet::new();
    let dups: Vec<u16> = ports.iter().copied().filter(|p| !seen.insert(*p)).collect();
    if !dups.is_empty() {
        panic!("{what}: {} duplicate ports {:?}\n{}", dups.len(), &dups[..dups.len().min(20)], forensics(dir, &dups));
    }
}

/// A child process: this test binary re-executed to run `role`.
pub struct Kid {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    pub seen: Vec<String>,
}

/// Spawn the test named `test` of this binary as a child running `role`, with the
/// registry directory `dir` and extra environment `env`.
pub fn spawn(test: &str, dir: &Path, role: &str, env: &[(&str, &str)]) -> Kid {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(ROLE_ENV, role)
        .env("PORTMGR_DIR", dir)
        .env_remove("PORTMGR_FAILPOINT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    spawn_cmd(cmd)
}

/// Spawn `cmd` (its stdout read line by line in the background).
pub fn spawn_cmd(mut cmd: Command) -> Kid {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = cmd.spawn().unwrap();
    let stdin = child.stdin.take();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Kid { child, stdin, lines: rx, seen: Vec::new() }
}

impl Kid {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// The next line starting with `prefix` (the prefix stripped), within `timeout`.
    pub fn expect(&mut self, prefix: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if let Some(rest) = l.strip_prefix(prefix) {
                        return Some(rest.trim().to_string());
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }
    /// Every line until the child closes stdout (after it died or exited).
    pub fn drain(&mut self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    out.push(l);
                }
                Err(_) => return out,
            }
        }
    }
    pub fn send(&mut self, line: &str) {
        if let Some(s) = self.stdin.as_mut() {
            let _ = writeln!(s, "{line}");
            let _ = s.flush();
        }
    }
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
    /// Wait for the exit, at most `timeout` (then SIGKILL); the exit status.
    pub fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                self.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Print one protocol line from a child, flushed at once.
pub fn say(line: impl std::fmt::Display) {
    let out = std::io::stdout();
    let mut o = out.lock();
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
}

/// Block until the parent closes our stdin (or sends a line; returns it).
pub fn wait_parent() -> Option<String> {
    let mut s = String::new();
    match std::io::stdin().read_line(&mut s) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(s.trim().to_string()),
    }
}

/// Whether the process runs as root (the suite uses `setpriv` for "another user").
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A port a consumer can bind right now (plain dual-stack bind, no reuse options).
pub fn consumer_can_bind_tcp(port: u16) -> bool {
    portmgr::probe::bind_listener(port, portmgr::Protocols::TCP).is_ok()
}

/// The live ports of the registry in `dir` with their owner pids.
pub fn live_ports(dir: &Path) -> Vec<(u16, u32)> {
    let reg = Registry::open(dir).unwrap();
    reg.list().unwrap().into_iter().map(|i| (i.port, i.owner_pid)).collect()
}

/// The registry file's layout (src/registry/layout.rs), for raw inspection and damage.
pub mod raw {
    pub const HEADER: usize = 4096;
    pub const OWNERS_OFF: usize = HEADER;
    pub const OWNER_SIZE: usize = 64;
    pub const OWNER_SLOTS: usize = 4096;
    pub const BITMAP_OFF: usize = OWNERS_OFF + OWNER_SLOTS * OWNER_SIZE;
    pub const RECORDS_OFF: usize = BITMAP_OFF + 65536 / 8;
    pub const RECORD_SIZE: usize = 128;
    /// The range table (a u32 per port) follows the records (layout version 2).
    pub const RANGES_OFF: usize = RECORDS_OFF + 65536 * RECORD_SIZE;
    /// The reservation table (512 entries of 256 B) follows the range table.
    pub const RESERVED_OFF: usize = RANGES_OFF + 65536 * 4;
    pub const FILE_SIZE: usize = RESERVED_OFF + 512 * 256;
    pub const FILE_SIZE_V1: usize = RANGES_OFF;

    pub fn record_off(port: u16) -> usize {
        RECORDS_OFF + usize::from(port) * RECORD_SIZE
    }

    /// `port state slot gen marked` for every record that is not free or is marked.
    pub fn dump(dir: &std::path::Path) -> String {
        let Ok(b) = std::fs::read(dir.join("registry.db")) else { return "(unreadable)".into() };
        if b.len() != FILE_SIZE {
            return format!("(size {})", b.len());
        }
        let mut out = String::new();
        for port in 0..=u16::MAX {
            let o = record_off(port);
            let marked = b[BITMAP_OFF + usize::from(port) / 8] >> (port % 8) & 1 == 1;
            if b[o] != 0 || marked {
                let slot = u32::from_ne_bytes(b[o + 4..o + 8].try_into().unwrap());
                let g = u64::from_ne_bytes(b[o + 8..o + 16].try_into().unwrap());
                let pid = u32::from_ne_bytes(b[o + 52..o + 56].try_into().unwrap());
                out.push_str(&format!("{port}: state={} slot={slot} gen={g} pid={pid} marked={marked}\n", b[o]));
            }
        }
        out
    }
}
