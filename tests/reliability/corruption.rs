//! C1/C2/C3: a damaged registry file with live holders attached. For every variant:
//! 0 panics or crashes (of the opener and of the attached holders), 0 silent resets, 0
//! ports of a live holder handed out. Each variant ends in a clear error or in the
//! documented conservative recovery (RELIABILITY.md, "Corruption").

use std::collections::HashSet;
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use portmgr::{ErrorCode, Registry};

use crate::util::raw::*;
use crate::util::*;

const START: u16 = 14550;
const LEN: u16 = 100;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Expect {
    /// Opening must fail with a clear error (the damage cannot be repaired safely).
    Error,
    /// The registry may open; the holders' ports must survive, never be handed out.
    Survives,
}

type Damage = fn(&Path, &[u16]);

fn db(dir: &Path) -> std::fs::File {
    std::fs::OpenOptions::new().read(true).write(true).open(dir.join("registry.db")).unwrap()
}
fn set_len(dir: &Path, n: u64) {
    db(dir).set_len(n).unwrap();
}
fn write_at(dir: &Path, off: usize, bytes: &[u8]) {
    db(dir).write_all_at(bytes, off as u64).unwrap();
}
fn xor_at(dir: &Path, off: usize, mask: u8) {
    let f = db(dir);
    let mut b = [0u8];
    f.read_exact_at(&mut b, off as u64).unwrap();
    f.write_all_at(&[b[0] ^ mask], off as u64).unwrap();
}
fn replace_with(dir: &Path, make: impl FnOnce(&Path)) {
    std::fs::rename(dir.join("registry.db"), dir.join("registry.db.orig")).unwrap();
    make(&dir.join("registry.db"));
}
fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

fn variants() -> Vec<(&'static str, Damage, Expect)> {
    use Expect::*;
    vec![
        ("truncated to 0 bytes", |d, _| set_len(d, 0), Error),
        ("truncated to 1 byte", |d, _| set_len(d, 1), Error),
        ("truncated to 7 bytes", |d, _| set_len(d, 7), Error),
        ("truncated to 8 bytes (magic only)", |d, _| set_len(d, 8), Error),
        ("truncated to 100 bytes", |d, _| set_len(d, 100), Error),
        ("truncated to 4095 bytes", |d, _| set_len(d, 4095), Error),
        ("truncated to the header (4096)", |d, _| set_len(d, 4096), Error),
        ("truncated to 4097 bytes", |d, _| set_len(d, 4097), Error),
        ("truncated after the owner table", |d, _| set_len(d, BITMAP_OFF as u64), Error),
        ("truncated inside the records", |d, _| set_len(d, (RECORDS_OFF + 1000 * RECORD_SIZE) as u64), Error),
        ("truncated by one byte", |d, _| set_len(d, FILE_SIZE as u64 - 1), Error),
        ("extended by one byte", |d, _| set_len(d, FILE_SIZE as u64 + 1), Error),
        ("extended to twice its size", |d, _| set_len(d, 2 * FILE_SIZE as u64), Error),
        ("one bit of the magic flipped", |d, _| xor_at(d, 3, 0x10), Error),
        ("magic zeroed", |d, _| write_at(d, 0, &[0; 8]), Error),
        ("newer layout version", |d, _| write_at(d, 8, &3u32.to_ne_bytes()), Error),
        ("layout version 0", |d, _| write_at(d, 8, &0u32.to_ne_bytes()), Error),
        ("header size field wrong", |d, _| write_at(d, 12, &8192u32.to_ne_bytes()), Error),
        ("record size field wrong", |d, _| xor_at(d, 24, 0x01), Error),
        ("header page zeroed", |d, _| write_at(d, 0, &[0; HEADER]), Error),
        ("whole file zeroed", |d, _| write_at(d, 0, &vec![0; FILE_SIZE]), Error),
        ("random bytes over the header", |d, _| write_at(d, 0, &random_bytes(1, HEADER)), Error),
        ("boot id flipped (looks like a reboot)", |d, _| xor_at(d, 32, 0x80), Survives),
        ("next lease id zeroed", |d, _| write_at(d, 56, &[0; 8]), Survives),
        ("counters garbage", |d, _| write_at(d, 64, &random_bytes(2, 24)), Survives),
        ("bitmap zeroed (live holders' bits gone)", |d, _| write_at(d, BITMAP_OFF, &[0; 65536 / 8]), Survives),
        ("bitmap all ones", |d, _| write_at(d, BITMAP_OFF, &[0xff; 65536 / 8]), Survives),
        ("live holders' state bytes set to 0xff", |d, held| {
            for &p in held {
                write_at(d, record_off(p), &[0xff]);
            }
        }, Survives),
        ("garbage records at 200 other ports, half marked", |d, held| {
            let mut rng = Rng::new(3);
            let mut n = 0;
            while n < 200 {
                let p = START + rng.below(u64::from(LEN)) as u16;
                let p = if held.contains(&p) { 40000 + rng.below(20000) as u16 } else { p };
                write_at(d, record_off(p), &random_bytes(rng.next(), RECORD_SIZE));
                if n % 2 == 0 {
                    xor_at(d, BITMAP_OFF + usize::from(p) / 8, 1 << (p % 8));
                }
                n += 1;
            }
        }, Survives),
        ("garbage in free owner slots", |d, _| {
            write_at(d, OWNERS_OFF + 3000 * OWNER_SIZE, &random_bytes(4, 64 * OWNER_SIZE));
        }, Survives),
        ("random bit flips in free records and the rest of the header", |d, held| {
            let mut rng = Rng::new(5);
            for _ in 0..500 {
                let off = if rng.below(10) == 0 {
                    88 + rng.below((HEADER - 88) as u64) as usize
                } else {
                    record_off(1024 + rng.below(60000) as u16) + rng.below(RECORD_SIZE as u64) as usize
                };
                let port = (off.saturating_sub(RECORDS_OFF) / RECORD_SIZE) as u16;
                if off >= RECORDS_OFF && held.contains(&port) {
                    continue;
                }
                xor_at(d, off, 1 << rng.below(8));
            }
        }, Survives),
        ("a directory in place of the file", |d, _| replace_with(d, |p| std::fs::create_dir(p).unwrap()), Error),
        ("a FIFO in place of the file", |d, _| replace_with(d, mkfifo), Error),
        ("a symlink in place of the file", |d, _| {
            replace_with(d, |p| std::os::unix::fs::symlink(d.join("registry.db.orig"), p).unwrap())
        }, Error),
        ("a symlink in place of registry.lock", |d, _| {
            std::fs::rename(d.join("registry.lock"), d.join("lock.orig")).unwrap();
            std::os::unix::fs::symlink(d.join("lock.orig"), d.join("registry.lock")).unwrap();
        }, Error),
        ("a hard link to the file", |d, _| std::fs::hard_link(d.join("registry.db"), d.join("other")).unwrap(), Error),
        ("file mode 0666", |d, _| {
            std::fs::set_permissions(d.join("registry.db"), std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
        }, Error),
        ("file owned by another user", |d, _| std::os::unix::fs::chown(d.join("registry.db"), Some(65534), None).unwrap(), Error),
    ]
}

fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut r = Rng::new(seed + 1);
    (0..n).map(|_| r.next() as u8).collect()
}

struct Outcome {
    opened: bool,
    message: String,
}

fn run_variant(name: &str, damage: Damage, expect: Expect) -> Outcome {
    let d = temp_dir();
    let dir = d.path().join("reg");
    let mut holders: Vec<Kid> = (0..2).map(|_| spawn(crate::TEST, &dir, &format!("steady 3 {START} {LEN}"), &[])).collect();
    let mut held: Vec<(u16, u32)> = Vec::new();
    for h in &mut holders {
        for _ in 0..3 {
            let p = h.expect("PORT ", Duration::from_secs(20)).expect("holder gave no port");
            held.push((p.parse().unwrap(), h.pid()));
        }
        h.expect("READY", Duration::from_secs(20)).unwrap();
    }
    let held_ports: Vec<u16> = held.iter().map(|h| h.0).collect();
    damage(&dir, &held_ports);

    // A new process's view (this test process: a fresh handle).
    let outcome = match Registry::open(&dir) {
        Err(e) => {
            assert!(
                matches!(e.code(), ErrorCode::RegistryCorrupt | ErrorCode::InsecureDirectory | ErrorCode::Os),
                "{name}: unexpected error kind {:?}: {e}",
                e.code()
            );
            assert!(expect != Expect::Survives, "{name}: the registry should have survived this damage: {e}");
            Outcome { opened: false, message: e.to_string() }
        }
        Ok(reg) => {
            assert!(expect != Expect::Error, "{name}: opened a registry that should have been refused; notices {:?}", reg.notices());
            let notes = reg.notices();
            assert!(
                !notes.iter().any(|n| n.contains("moved") || n.contains("freed") || n.contains("started a new")),
                "{name}: the registry was reset or moved aside under live holders: {notes:?}"
            );
            // No silent reset: every holder's port is still held, by that holder.
            for (p, pid) in &held {
                let i = reg.get_by_port(*p).unwrap_or_else(|e| panic!("{name}: get_by_port failed: {e}"));
                assert!(
                    i.as_ref().is_some_and(|i| i.owner_pid == *pid),
                    "{name}: live holder {pid}'s port {p} is gone from the registry\n{}",
                    raw::dump(&dir)
                );
            }
            // Nothing of theirs is handed out, by any strategy.
            let mut got = Vec::new();
            for i in 0..60 {
                let req = req_in(START, LEN);
                let req = match i % 3 {
                    0 => req,
                    1 => req.strategy(portmgr::Strategy::Sequential),
                    _ => req.count(2).contiguous(true),
                };
                match reg.allocate(&req) {
                    Ok(l) => {
                        got.extend_from_slice(l.ports());
                        std::mem::forget(l);
                    }
                    Err(e) if e.code() == ErrorCode::Exhausted => break,
                    Err(e) => panic!("{name}: allocation failed: {e}"),
                }
            }
            let taken: Vec<u16> = got.iter().copied().filter(|p| held_ports.contains(p)).collect();
            assert!(taken.is_empty(), "{name}: live holders' ports {taken:?} were handed out again\n{}", forensics(&dir, &taken));
            assert_distinct(&dir, name, &got);
            Outcome { opened: true, message: format!("recovered; {} ports allocated around the holders", got.len()) }
        }
    };
    // The attached holders neither crash nor lose their ports silently: they answer,
    // and exit cleanly (no SIGBUS from a truncated mapping, no panic).
    for h in &mut holders {
        h.send("CHECK");
        let ans = h.expect("", Duration::from_secs(20));
        assert!(ans.is_some(), "{name}: holder {} died after the damage: {:?}", h.pid(), h.child.try_wait());
        if expect == Expect::Survives {
            assert_eq!(ans.as_deref(), Some("OK"), "{name}: a holder lost its ports");
        }
        h.close_stdin();
        let st = h.wait(Duration::from_secs(20));
        assert!(
            st.is_some_and(|s| s.code().is_some() && s.signal().is_none()),
            "{name}: holder {} ended badly: {st:?}",
            h.pid()
        );
        assert!(st.unwrap().success(), "{name}: holder {} failed", h.pid());
    }
    outcome
}

#[test]
fn damaged_files_with_live_holders_attached() {
    let all = variants();
    let mut failures = Vec::new();
    let mut report = Vec::new();
    for (name, damage, expect) in &all {
        let r = std::panic::catch_unwind(|| run_variant(name, *damage, *expect));
        match r {
            Ok(o) => report.push(format!("  {name}: {} — {}", if o.opened { "opened" } else { "refused" }, first_line(&o.message))),
            Err(e) => {
                let msg = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
                failures.push(format!("{name}: {}", msg.unwrap_or_default()));
            }
        }
    }
    eprintln!("RESULT corruption: variants={} passed={} failed={}\n{}", all.len(), report.len(), failures.len(), report.join("\n"));
    assert!(all.len() >= 25);
    assert!(failures.is_empty(), "{} of {} corruption variants failed:\n{}", failures.len(), all.len(), failures.join("\n\n"));
}

fn first_line(s: &str) -> String {
    s.chars().take(160).collect()
}

/// Without live holders, a damaged file is moved aside (reported), never reset in place.
#[test]
fn damaged_files_without_holders_are_moved_aside_and_reported() {
    let mut n = 0;
    for (name, damage, expect) in variants() {
        if expect != Expect::Error || name.contains("0 bytes") || name.contains("place") || name.contains("link") || name.contains("mode") || name.contains("owned") {
            continue;
        }
        let d = temp_dir();
        let dir = d.path().join("reg");
        drop(Registry::open(&dir).unwrap());
        damage(&dir, &[]);
        let reg = Registry::open(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
        let notes = reg.notices();
        assert!(notes.iter().any(|n| n.contains("moved it aside")), "{name}: {notes:?}");
        let aside = std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().starts_with("registry.db.damaged-")).count();
        assert_eq!(aside, 1, "{name}");
        reg.allocate(&req_in(START, LEN)).unwrap();
        n += 1;
    }
    let _ = HashSet::<u16>::new();
    eprintln!("RESULT corruption-no-holders: variants_moved_aside={n}");
    assert!(n >= 15);
}
