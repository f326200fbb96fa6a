//! D1/D2 (issue 11): the registry file damaged under processes that are using it.
//!
//! * D1: `registry.db` truncated and extended again, over and over, while processes
//!   allocate and release in a loop: no process may die (SIGBUS from a page past the
//!   file's end was the failure); a call during the damage is an error, never a crash.
//! * D2: records of live holders damaged (pages zeroed by a truncate-then-extend, random
//!   bit flips, records zeroed, the owner table zeroed): no live holder's port is handed
//!   out again; the damage is reported through `notices()`; each holder repairs its own
//!   records at its next call.
//!
//! Ports 29800-29999 (outside the kernel's ephemeral range).

use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use portmgr::{ErrorCode, Registry, Strategy};

use crate::util::raw::*;
use crate::util::*;

const START: u16 = 29800;
const LEN: u16 = 200;

fn db(dir: &Path) -> std::fs::File {
    std::fs::OpenOptions::new().read(true).write(true).open(dir.join("registry.db")).unwrap()
}

/// Role `alloc-forever START LEN`: allocate and release in a loop until stdin closes, then
/// print `DONE ok errors` and exit 0. Errors (the file is damaged) are counted, not fatal.
pub fn alloc_forever(start: u16, len: u16) {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut s = String::new();
        while std::io::stdin().read_line(&mut s).is_ok_and(|n| n > 0) {
            s.clear();
        }
        let _ = tx.send(());
    });
    let (mut ok, mut errors) = (0u64, 0u64);
    let mut reg = Registry::open_default().ok();
    println!("READY");
    while rx.try_recv().is_err() {
        let Some(r) = reg.as_ref() else {
            errors += 1;
            reg = Registry::open_default().ok();
            std::thread::sleep(Duration::from_millis(1));
            continue;
        };
        let req = req_in(start, len).strategy(if ok % 2 == 0 { Strategy::Random } else { Strategy::Sequential });
        match r.allocate(&req) {
            Ok(l) => {
                ok += 1;
                drop(l);
                let _ = r.list();
            }
            Err(_) => {
                errors += 1;
                // A handle that refuses the file for good: start afresh, as a user would.
                reg = Registry::open_default().ok();
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    println!("DONE {ok} {errors}");
}

#[test]
fn truncation_under_running_processes_never_crashes() {
    let rounds = knob("PORTMGR_REL_TRUNCATIONS", 60);
    let d = temp_dir();
    let dir = d.path().join("reg");
    drop(Registry::open(&dir).unwrap());
    let mut kids: Vec<Kid> = (0..3).map(|_| spawn(crate::TEST, &dir, &format!("alloc-forever {START} {LEN}"), &[])).collect();
    for k in &mut kids {
        k.expect("READY", Duration::from_secs(20)).expect("worker did not start");
    }
    let mut rng = Rng::new(11);
    let cuts = [1_000_000u64, (RECORDS_OFF + usize::from(START) * RECORD_SIZE) as u64, BITMAP_OFF as u64, 300_000, FILE_SIZE as u64 / 2];
    for i in 0..rounds {
        let f = db(&dir);
        let cut = cuts[(i % cuts.len() as u64) as usize];
        f.set_len(cut).unwrap();
        std::thread::sleep(Duration::from_millis(2 + rng.below(6)));
        f.set_len(FILE_SIZE as u64).unwrap();
        std::thread::sleep(Duration::from_millis(2 + rng.below(6)));
    }
    let (mut ok, mut errors, mut crashes) = (0u64, 0u64, 0u64);
    for k in &mut kids {
        k.close_stdin();
        let done = k.expect("DONE ", Duration::from_secs(30));
        let st = k.wait(Duration::from_secs(30));
        match (&done, st) {
            (Some(line), Some(s)) if s.signal().is_none() && s.success() => {
                let n: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
                ok += n[0];
                errors += n[1];
            }
            _ => {
                crashes += 1;
                eprintln!("worker {} ended badly: {st:?} (signal {:?})", k.pid(), st.and_then(|s| s.signal()));
            }
        }
    }
    eprintln!("RESULT truncation-loop: rounds={rounds} workers=3 allocations={ok} errors={errors} crashes={crashes}");
    assert_eq!(crashes, 0, "a process using the registry died while the file was truncated");
    assert!(ok > 0, "the workers allocated nothing");
}

/// Allocate from the test range until it is exhausted, by every strategy.
fn take_all(reg: &Registry, name: &str) -> (Vec<u16>, Vec<portmgr::Lease>) {
    let mut got = Vec::new();
    let mut leases = Vec::new();
    for i in 0.. {
        let req = req_in(START, LEN);
        let req = match i % 3 {
            0 => req,
            1 => req.strategy(Strategy::Sequential),
            _ => req.strategy(Strategy::Hash(None)).name(format!("d{i}")),
        };
        match reg.allocate(&req) {
            Ok(l) => {
                got.extend_from_slice(l.ports());
                leases.push(l);
            }
            Err(e) if e.code() == ErrorCode::Exhausted => break,
            Err(e) => panic!("{name}: allocation failed: {e}"),
        }
    }
    (got, leases)
}

type Damage = fn(&Path, &[u16], &mut Rng);

fn variants() -> Vec<(&'static str, Damage)> {
    vec![
        ("truncated to 1,000,000 bytes and extended again", |d, _, _| {
            let f = db(d);
            f.set_len(1_000_000).unwrap();
            f.set_len(FILE_SIZE as u64).unwrap();
        }),
        ("300 random bit flips in the live records", |d, held, rng| {
            let f = db(d);
            for _ in 0..300 {
                let p = held[rng.below(held.len() as u64) as usize];
                let off = (record_off(p) + rng.below(RECORD_SIZE as u64) as usize) as u64;
                let mut b = [0u8];
                f.read_exact_at(&mut b, off).unwrap();
                f.write_all_at(&[b[0] ^ (1 << rng.below(8))], off).unwrap();
            }
        }),
        ("one bit flipped in each live record", |d, held, rng| {
            let f = db(d);
            for &p in held {
                let off = (record_off(p) + rng.below(RECORD_SIZE as u64) as usize) as u64;
                let mut b = [0u8];
                f.read_exact_at(&mut b, off).unwrap();
                f.write_all_at(&[b[0] ^ (1 << rng.below(8))], off).unwrap();
            }
        }),
        ("live records zeroed", |d, held, _| {
            let f = db(d);
            for &p in held {
                f.write_all_at(&[0; RECORD_SIZE], record_off(p) as u64).unwrap();
            }
        }),
        ("truncated at the bitmap and extended (bitmap and records zeroed)", |d, _, _| {
            let f = db(d);
            f.set_len(BITMAP_OFF as u64).unwrap();
            f.set_len(FILE_SIZE as u64).unwrap();
        }),
        ("truncated inside the owner table and extended", |d, _, _| {
            let f = db(d);
            f.set_len((OWNERS_OFF + 100 * OWNER_SIZE) as u64).unwrap();
            f.set_len(FILE_SIZE as u64).unwrap();
        }),
        ("owner table zeroed", |d, _, _| {
            db(d).write_all_at(&vec![0; OWNER_SLOTS * OWNER_SIZE], OWNERS_OFF as u64).unwrap();
        }),
    ]
}

#[test]
fn record_damage_under_live_holders_is_reported_never_reissued_and_repaired() {
    let mut report = Vec::new();
    let (mut reissued, mut unrepaired) = (0usize, 0usize);
    for (vi, (name, damage)) in variants().into_iter().enumerate() {
        let d = temp_dir();
        let dir = d.path().join("reg");
        let mut holders: Vec<Kid> = (0..2).map(|_| spawn(crate::TEST, &dir, &format!("steady 25 {START} {LEN}"), &[])).collect();
        let mut held: Vec<(u16, u32)> = Vec::new();
        for h in &mut holders {
            for _ in 0..25 {
                let p = h.expect("PORT ", Duration::from_secs(20)).expect("holder gave no port");
                held.push((p.parse().unwrap(), h.pid()));
            }
            h.expect("READY", Duration::from_secs(20)).unwrap();
        }
        let ports: Vec<u16> = held.iter().map(|h| h.0).collect();
        let mut rng = Rng::new(100 + vi as u64);
        damage(&dir, &ports, &mut rng);

        // A new process takes every port it can, by every strategy.
        let reg = Registry::open(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (got, leases) = take_all(&reg, name);
        let again: Vec<u16> = got.iter().copied().filter(|p| ports.contains(p)).collect();
        reissued += again.len();
        assert_distinct(&dir, name, &got);
        let notes = reg.notices();

        // Each holder repairs its own records at its next call.
        for h in &mut holders {
            h.send("CHECK");
            let ans = h.expect("", Duration::from_secs(20));
            if ans.as_deref() != Some("OK") {
                unrepaired += 1;
                eprintln!("{name}: holder {} after the damage: {ans:?}", h.pid());
            }
        }
        drop(leases);
        drop(reg);
        let fresh = Registry::open(&dir).unwrap();
        for (p, pid) in &held {
            let i = fresh.get_by_port(*p).unwrap();
            if !i.as_ref().is_some_and(|i| i.owner_pid == *pid && i.state == "held") {
                unrepaired += 1;
                eprintln!("{name}: port {p} of holder {pid} after repair: {i:?}");
            }
        }
        // What nobody could repair (free records the damage made ambiguous) is freed by
        // hand, now that every live holder has checked its own; then every port not held
        // is handed out again, and none that is.
        let freed = fresh.free_damaged().unwrap_or_else(|e| panic!("{name}: free_damaged: {e}"));
        let (got2, leases2) = take_all(&fresh, name);
        let again2: Vec<u16> = got2.iter().copied().filter(|p| ports.contains(p)).collect();
        reissued += again2.len();
        assert_eq!(got2.len() + ports.len(), usize::from(LEN), "{name}: ports neither held nor handed out after repair: {got2:?}");
        drop(leases2);
        for h in &mut holders {
            h.close_stdin();
            let st = h.wait(Duration::from_secs(20));
            assert!(st.is_some_and(|s| s.success()), "{name}: holder {} ended badly: {st:?}", h.pid());
        }
        assert!(fresh.list().unwrap().is_empty(), "{name}: {:?}", fresh.list());
        let reported = notes.iter().any(|n| n.contains("damaged"));
        assert!(reported || name.contains("owner table"), "{name}: the damage was not reported: {notes:?}");
        assert!(again.is_empty() && again2.is_empty(), "{name}: live holders' ports {again:?} {again2:?} were handed out again\n{}", raw::dump(&dir));
        report.push(format!(
            "  {name}: reissued=0 reported={reported} handed_out_during_damage={} freed_by_hand={} handed_out_after_repair={}",
            got.len(),
            freed.len(),
            got2.len()
        ));
    }
    eprintln!("RESULT record-damage: variants={} live_ports_reissued={reissued} unrepaired={unrepaired}\n{}", report.len(), report.join("\n"));
    assert_eq!(unrepaired, 0, "holders' records were not repaired");
}

/// A layout version 1 file (the previous release) is upgraded in place: every live record
/// is kept, and the upgrade is reported.
#[test]
fn a_version_1_file_is_upgraded_in_place_keeping_every_lease() {
    let d = temp_dir();
    let dir = d.path().join("reg");
    let reg = Registry::open(&dir).unwrap();
    let ttl = Duration::from_secs(600);
    let mut ports = Vec::new();
    for _ in 0..5 {
        ports.extend(reg.allocate(&req_in(START, LEN).ttl(ttl)).unwrap().keep().unwrap());
    }
    let view = |r: &Registry| -> Vec<(u16, u64, u32, String)> {
        r.list().unwrap().into_iter().map(|i| (i.port, i.lease_id, i.owner_pid, i.state)).collect()
    };
    let before = view(&reg);
    assert_eq!(before.len(), 5);
    drop(reg);
    // Write it back as version 1: magic byte 1, version 1, no checks (zero).
    let f = db(&dir);
    f.write_all_at(b"PORTMGR\x01", 0).unwrap();
    f.write_all_at(&1u32.to_ne_bytes(), 8).unwrap();
    for p in 0..=u16::MAX {
        f.write_all_at(&[0; 4], (record_off(p) + 68) as u64).unwrap();
    }
    for s in 0..OWNER_SLOTS {
        f.write_all_at(&[0; 4], (OWNERS_OFF + s * OWNER_SIZE + 12) as u64).unwrap();
    }
    // Version 1 had no range table.
    f.set_len(FILE_SIZE_V1 as u64).unwrap();
    drop(f);
    // Another process of this version would have found no live record intact before the
    // upgrade: prove the file is really in the old form.
    let fresh = Registry::open(&dir).unwrap();
    let notes = fresh.notices();
    assert!(notes.iter().any(|n| n.contains("upgraded") && n.contains("5 live records kept")), "{notes:?}");
    assert_eq!(view(&fresh), before);
    assert_eq!(std::fs::metadata(dir.join("registry.db")).unwrap().len(), FILE_SIZE as u64, "not grown by the range table");
    let l = fresh.allocate(&req_in(START, LEN)).unwrap();
    assert!(!ports.contains(&l.port()));
    assert!(fresh.notices().iter().all(|n| !n.contains("damaged")), "{:?}", fresh.notices());
}
