//! K1: SIGKILL of allocating processes at random moments and at every failpoint of the
//! mutation path. After each kill: the registry opens; the live holders' ports are still
//! theirs and were never handed to anyone else; every port the killed process held is
//! allocatable by the very next call; the audit counters move only as they should.

use std::collections::HashSet;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use portmgr::{ErrorCode, Registry};

use crate::roles::parse_ports;
use crate::util::*;

/// The failpoints inside an allocation or release (see src/registry/mod.rs).
const POINTS: [&str; 7] =
    ["owner-claimed", "picked", "pending-fields", "pending-state", "before-confirm", "reclaim-cleared", "release-cleared"];

const START: u16 = 14000;
const LEN: u16 = 120;

struct Steady {
    kid: Kid,
    ports: Vec<u16>,
}

fn steady(dir: &Path, n: usize) -> Steady {
    let mut kid = spawn(crate::TEST, dir, &format!("steady {n} {START} {LEN}"), &[]);
    let mut ports = Vec::new();
    while ports.len() < n {
        let p = kid.expect("PORT ", Duration::from_secs(20)).expect("steady holder did not report its ports");
        ports.push(p.parse().unwrap());
    }
    kid.expect("READY", Duration::from_secs(20)).unwrap();
    Steady { kid, ports }
}

fn check_steady(s: &mut [Steady], dir: &Path) {
    for h in s.iter_mut() {
        h.kid.send("CHECK");
        let ans = h.kid.expect("", Duration::from_secs(20)).unwrap_or_default();
        assert_eq!(ans, "OK", "a live holder lost its ports: {ans}\n{}", forensics(dir, &h.ports));
    }
}

#[derive(Default)]
struct Tally {
    kills: usize,
    at_point: usize,
    random: usize,
    allocations_seen: usize,
    verified_ports: usize,
    reclaim_ms_max: f64,
    audit_drift: i64,
}

/// One churning child, killed by a failpoint (`point`) or by us after `delay`.
/// Returns the ports it held when it died.
fn one_trial(dir: &Path, point: Option<String>, delay: Duration, seed: u64, forbidden: &HashSet<u16>, t: &mut Tally) -> Vec<u16> {
    let env: Vec<(&str, &str)> = point.as_deref().map(|p| vec![("PORTMGR_FAILPOINT", p)]).unwrap_or_default();
    let mut kid = spawn(crate::TEST, dir, &format!("churn {START} {LEN} {seed}"), &env);
    let status = if point.is_some() {
        // Killed by its own failpoint; a point it never reaches is a test-setup error
        // (ended by us after the wait).
        kid.wait(Duration::from_secs(15))
    } else {
        std::thread::sleep(delay);
        kid.kill();
        kid.child.try_wait().ok().flatten()
    };
    let lines = kid.drain(Duration::from_secs(5));
    match &status {
        Some(st) if st.signal() == Some(libc::SIGKILL) => {}
        other => panic!(
            "churn child (failpoint {point:?}) did not die by SIGKILL: {other:?}; last lines {:?}",
            &lines[lines.len().saturating_sub(10)..]
        ),
    }
    t.kills += 1;
    if point.is_some() { t.at_point += 1 } else { t.random += 1 }
    let mut held: HashSet<u16> = HashSet::new();
    for l in &lines {
        if let Some(rest) = l.strip_prefix("A ") {
            t.allocations_seen += 1;
            for p in parse_ports(rest) {
                assert!(
                    !forbidden.contains(&p),
                    "port {p} of a live holder was handed to the churn child\n{}",
                    forensics(dir, &[p])
                );
                assert!(held.insert(p), "port {p} handed twice to one process\n{}", forensics(dir, &[p]));
            }
        } else if let Some(rest) = l.strip_prefix("R ") {
            for p in parse_ports(rest) {
                held.remove(&p);
            }
        } else if l.starts_with("E ") && !l.contains("no free port") {
            panic!("churn child got an unexpected error: {l}");
        }
    }
    let mut v: Vec<u16> = held.into_iter().collect();
    v.sort_unstable();
    v
}

/// After a kill: the registry opens, only live owners are listed, and each of the dead
/// process's ports is allocatable by the next call.
fn verify_after_kill(dir: &Path, dead_ports: &[u16], live_pids: &HashSet<u32>, t: &mut Tally) {
    let reg = Registry::open(dir).unwrap_or_else(|e| panic!("the registry did not open after a kill: {e}"));
    for i in reg.list().unwrap() {
        assert!(
            live_pids.contains(&i.owner_pid),
            "a dead process's port is still listed as live: {i:?}\n{}",
            forensics(dir, &[i.port])
        );
    }
    let t0 = Instant::now();
    for &p in dead_ports {
        match reg.allocate(&req_in(START, LEN).preferred(p, true)) {
            Ok(l) => assert_eq!(l.port(), p),
            Err(e) => panic!("port {p} of the killed process is not allocatable by the next call: {e}\n{}", forensics(dir, &[p])),
        }
        t.verified_ports += 1;
    }
    if !dead_ports.is_empty() {
        t.reclaim_ms_max = t.reclaim_ms_max.max(t0.elapsed().as_secs_f64() * 1e3 / dead_ports.len() as f64);
    }
}

/// `allocations - releases - reclaimed - live`, after a `gc` has reclaimed every dead
/// record (a dead record not yet reclaimed is neither live nor counted as reclaimed).
fn audit(dir: &Path) -> i64 {
    let reg = Registry::open(dir).unwrap();
    reg.gc().unwrap();
    let s = reg.stats().unwrap();
    s.allocations as i64 - s.releases as i64 - s.reclaimed as i64 - s.held as i64
}

#[test]
fn sigkill_at_random_moments_and_at_every_failpoint() {
    let per_point = knob("PORTMGR_RELIABILITY_KILLS_PER_POINT", 12);
    let random = knob("PORTMGR_RELIABILITY_RANDOM_KILLS", 130);
    let (mut rng, seed) = Rng::from_env("PORTMGR_RELIABILITY_SEED");
    eprintln!("crash suite: seed {seed}, {per_point} kills per failpoint, {random} random kills");
    let d = temp_dir();
    let dir = d.path().join("reg");
    let mut holders: Vec<Steady> = (0..2).map(|_| steady(&dir, 5)).collect();
    let forbidden: HashSet<u16> = holders.iter().flat_map(|h| h.ports.iter().copied()).collect();
    let mut live_pids: HashSet<u32> = holders.iter().map(|h| h.kid.pid()).collect();
    live_pids.insert(std::process::id());
    let mut t = Tally::default();
    assert_eq!(audit(&dir), 0);

    // Every failpoint, at its k-th hit.
    for round in 0..per_point {
        for point in POINTS {
            let k = match point {
                "owner-claimed" => 1,
                // The dead holder planted below leaves 3 records; `gc` reclaims them in a row.
                "reclaim-cleared" => 1 + rng.below(3),
                _ => 1 + rng.below(12),
            };
            let before = audit(&dir);
            if point == "reclaim-cleared" {
                // Leave dead records to reclaim: a holder killed without cleanup.
                let mut doomed = steady(&dir, 3);
                doomed.kid.kill();
            }
            let dead = one_trial(&dir, Some(format!("{point}@{k}")), Duration::ZERO, rng.next(), &forbidden, &mut t);
            verify_after_kill(&dir, &dead, &live_pids, &mut t);
            // A kill between clearing a released record and counting the release leaves
            // one release uncounted (documented in RELIABILITY.md); every other failpoint
            // leaves the counters exact.
            let expect = before + i64::from(point == "release-cleared");
            let after = audit(&dir);
            assert_eq!(after, expect, "audit drifted after a kill at {point}@{k}: {}{}", forensics(&dir, &[]), raw::dump(&dir));
            t.audit_drift += after - before;
        }
        if round % 4 == 3 {
            check_steady(&mut holders, &dir);
        }
    }
    // Random moments.
    for i in 0..random {
        let delay = Duration::from_micros(rng.below(30_000));
        let dead = one_trial(&dir, None, delay, rng.next(), &forbidden, &mut t);
        verify_after_kill(&dir, &dead, &live_pids, &mut t);
        if i % 25 == 24 {
            check_steady(&mut holders, &dir);
        }
    }
    check_steady(&mut holders, &dir);
    // The audit: a kill can only land between a confirm's stores and its counter update
    // at a random moment, never at a failpoint; report it, and bound it.
    let random_drift = audit(&dir) - t.audit_drift;
    assert!(
        random_drift.unsigned_abs() as usize <= t.random,
        "audit drift {random_drift} is more than the random kills could explain"
    );
    t.audit_drift += random_drift;
    let s = Registry::open(&dir).unwrap().stats().unwrap();
    assert_eq!(s.held, 10, "only the two live holders' 10 ports may be held: {s:?}");
    eprintln!(
        "RESULT crash: kills={} (failpoints={} random={}) allocations_seen={} dead_ports_reallocated={} max_reclaim_ms_per_port={:.2} audit_drift={} stats={s:?}",
        t.kills, t.at_point, t.random, t.allocations_seen, t.verified_ports, t.reclaim_ms_max, t.audit_drift
    );
    assert!(t.kills >= (POINTS.len() as u64 * per_point + random) as usize);
    for mut h in holders {
        h.kid.close_stdin();
        let st = h.kid.wait(Duration::from_secs(20)).unwrap();
        assert!(st.success(), "a steady holder failed: {st:?}");
    }
}

/// A process killed while it creates the registry file (after sizing it, after writing
/// the header, after claiming its first owner slot) never leaves a file that is trusted
/// half-made: the next open works (moving a headerless file aside, with a notice).
#[test]
fn sigkill_while_creating_the_file() {
    let n = knob("PORTMGR_RELIABILITY_KILLS_PER_POINT", 12).min(50);
    let mut kills = 0;
    for point in ["sized", "initialised", "owner-claimed"] {
        for _ in 0..n {
            let d = temp_dir();
            let dir = d.path().join("reg");
            let mut kid = spawn(crate::TEST, &dir, &format!("churn {START} {LEN} 1"), &[("PORTMGR_FAILPOINT", point)]);
            let st = kid.wait(Duration::from_secs(20)).unwrap();
            assert_eq!(st.signal(), Some(libc::SIGKILL), "{point}: {:?}", kid.drain(Duration::from_secs(1)));
            kills += 1;
            let reg = Registry::open(&dir).unwrap_or_else(|e| panic!("{point}: no open after the kill: {e}"));
            let notes = reg.notices();
            if point == "sized" {
                assert!(notes.iter().any(|n| n.contains("moved it aside")), "{point}: {notes:?}");
            } else {
                assert!(notes.is_empty(), "{point}: {notes:?}");
            }
            let l = reg.allocate(&req_in(START, LEN)).unwrap();
            assert!(reg.get_by_port(l.port()).unwrap().is_some());
            let e = Registry::open(&dir).unwrap().allocate(&req_in(l.port(), 1)).unwrap_err();
            assert_eq!(e.code(), ErrorCode::Exhausted);
        }
    }
    eprintln!("RESULT crash-create: kills={kills}");
}
