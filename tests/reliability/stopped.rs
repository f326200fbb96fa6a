//! L5: a process stopped (SIGSTOP) while it holds the registry lock. Every waiter, in
//! other processes and in other threads of one process, gets a timeout error naming the
//! stopped process's pid, within its deadline plus 10 %.

#![allow(dead_code)] // with `failpoints`, only stopped_fp.rs uses these helpers

use std::path::Path;
use std::time::{Duration, Instant};

use portmgr::{ErrorCode, Registry};

use crate::util::*;

const TIMEOUT_MS: u64 = 800;

/// Wait until `pid` is stopped (state `T` in /proc/<pid>/stat).
pub fn wait_stopped(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = s.rsplit_once(')').and_then(|(_, r)| r.trim_start().chars().next());
        if state == Some('T') {
            return;
        }
        assert!(Instant::now() < deadline, "process {pid} never stopped: {s}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waiters prepared before the lock is taken (their registries already open).
pub struct Waiters {
    kids: Vec<Kid>,
    regs: Vec<Registry>,
}

pub fn prepare_waiters(dir: &Path) -> Waiters {
    let mut kids: Vec<Kid> = (0..2).map(|_| spawn(crate::TEST, dir, &format!("waiter {TIMEOUT_MS}"), &[])).collect();
    for k in &mut kids {
        k.expect("READY", Duration::from_secs(20)).expect("waiter not ready");
    }
    let regs: Vec<Registry> = (0..3)
        .map(|_| {
            let r = Registry::open(dir).unwrap();
            r.set_lock_timeout(Duration::from_millis(TIMEOUT_MS));
            r
        })
        .collect();
    Waiters { kids, regs }
}

/// Run every waiter at once against the stopped `holder`; check each outcome.
pub fn check_waiters(w: Waiters, holder: u32) -> Vec<f64> {
    let mut w = w;
    for k in &mut w.kids {
        k.send("GO");
    }
    let threads: Vec<_> = w
        .regs
        .into_iter()
        .map(|r| {
            std::thread::spawn(move || {
                let t = Instant::now();
                let e = r.allocate(&req_in(14400, 50)).map(|l| l.port());
                (t.elapsed().as_secs_f64() * 1e3, e.map_err(|e| (e.code(), e.to_string())))
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in threads {
        let (ms, r) = t.join().unwrap();
        let (code, msg) = r.expect_err("a thread allocated while the lock holder was stopped");
        results.push((ms, format!("{code:?} {msg}")));
    }
    for k in &mut w.kids {
        let line = k.expect("T ", Duration::from_secs(30)).expect("waiter process gave no answer");
        let (ms, rest) = line.split_once(' ').unwrap();
        results.push((ms.parse().unwrap(), rest.to_string()));
    }
    let limit = TIMEOUT_MS as f64 * 1.10;
    for (ms, msg) in &results {
        assert!(msg.starts_with(&format!("{:?}", ErrorCode::Timeout)), "not a timeout: {msg}");
        assert!(msg.contains(&format!("process {holder}")), "the timeout does not name the stopped holder {holder}: {msg}");
        assert!(*ms <= limit, "a waiter took {ms:.1} ms, over the deadline + 10 % ({limit} ms): {msg}");
    }
    results.iter().map(|r| r.0).collect()
}

#[cfg(not(feature = "failpoints"))]
#[test]
fn stopped_lock_holder_gives_timeouts_naming_it() {
    let d = temp_dir();
    let dir = d.path().join("reg");
    Registry::open(&dir).unwrap();
    let w = prepare_waiters(&dir);
    let mut holder = spawn(crate::TEST, &dir, "lock-and-stop", &[]);
    holder.expect("LOCKED", Duration::from_secs(20)).expect("holder did not lock");
    wait_stopped(holder.pid());
    let times = check_waiters(w, holder.pid());
    // Once it continues and ends, the registry works again.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(holder.pid() as i32, libc::SIGCONT) };
    assert!(holder.wait(Duration::from_secs(20)).unwrap().success());
    Registry::open(&dir).unwrap().allocate(&req_in(14400, 50)).unwrap();
    eprintln!("RESULT stopped-holder(flock): waiters={} max_ms={:.1} deadline_ms={TIMEOUT_MS}", times.len(), times.iter().cloned().fold(0.0, f64::max));
}
