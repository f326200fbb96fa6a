//! The shared registry, used from one process: allocation, names, leases, views,
//! lifetimes, bound sockets, directory checks and damaged files.

mod common;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use portmgr::{ErrorCode, Protocols, Registry, Request, Strategy, probe};

#[test]
fn threads_get_distinct_ports_that_bind() {
    let (_d, reg) = temp_registry();
    let reg = Arc::new(reg);
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let reg = Arc::clone(&reg);
            std::thread::spawn(move || {
                (0..100).map(|_| reg.allocate(&req_in(22000, 2000)).unwrap()).collect::<Vec<_>>()
            })
        })
        .collect();
    let leases: Vec<_> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let ports: Vec<u16> = leases.iter().map(|l| l.port()).collect();
    assert_distinct(&ports);
    assert!(ports.iter().all(|p| (22000..24000).contains(p)));
    // Every port handed out can really be bound.
    for p in &ports {
        probe::bind_listener(*p, Protocols::TCP).unwrap();
    }
    assert_eq!(reg.list().unwrap().len(), 800);
    let s = reg.stats().unwrap();
    assert_eq!(s.held, 800);
    assert_eq!(s.allocations - s.releases - s.reclaimed, 800);
    drop(leases);
    assert!(reg.list().unwrap().is_empty());
    let s = reg.stats().unwrap();
    assert_eq!(s.releases, 800);
}

#[test]
fn release_is_idempotent_and_frees() {
    let (_d, reg) = temp_registry();
    let req = req_in(24100, 1).strategy(Strategy::Sequential);
    let mut a = reg.allocate(&req).unwrap();
    assert_eq!(a.port(), 24100);
    let e = reg.allocate(&req).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Exhausted);
    assert!(e.to_string().contains("24100-24100"), "{e}");
    a.release().unwrap();
    a.release().unwrap();
    assert!(a.is_released());
    let b = reg.allocate(&req).unwrap();
    assert_eq!(b.port(), 24100);
}

#[test]
fn sequential_takes_lowest_and_skips_bound_ports() {
    let (_d, reg) = temp_registry();
    let busy = probe::bind_listener(24201, Protocols::TCP).unwrap();
    let req = req_in(24200, 5).strategy(Strategy::Sequential);
    let a = reg.allocate(&req).unwrap();
    let b = reg.allocate(&req).unwrap();
    assert_eq!((a.port(), b.port()), (24200, 24202));
    drop(busy);
}

#[test]
fn names_are_unique_and_viewable() {
    let (_d, reg) = temp_registry();
    let db = reg.allocate(&req_in(24300, 50).name("db")).unwrap();
    let e = reg.allocate(&req_in(24300, 50).name("db")).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InUse);
    assert!(e.to_string().contains("get_or_allocate"), "{e}");
    let found = reg.get_by_name("db").unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].port, db.port());
    assert_eq!(found[0].owner_pid, std::process::id());
    assert_eq!(found[0].state, "held");
    assert_eq!(reg.get_by_port(db.port()).unwrap().unwrap().name.as_deref(), Some("db"));
    match reg.get_or_allocate(&req_in(24300, 50).name("db")).unwrap() {
        Err(existing) => assert_eq!(existing[0].port, db.port()),
        Ok(_) => panic!("get_or_allocate allocated a second lease for a live name"),
    }
    let fresh = reg.get_or_allocate(&req_in(24300, 50).name("cache")).unwrap().unwrap();
    assert_ne!(fresh.port(), db.port());
    assert_eq!(reg.release_name("db").unwrap(), vec![db.port()]);
    assert!(reg.get_by_name("db").unwrap().is_empty());
    assert_eq!(reg.release_name("db").unwrap_err().code(), ErrorCode::NotFound);
    let long = "x".repeat(57);
    assert_eq!(reg.allocate(&Request::new().name(long)).unwrap_err().code(), ErrorCode::InvalidArgument);
}

#[test]
fn preferred_and_required() {
    let (_d, reg) = temp_registry();
    let a = reg.allocate(&req_in(24400, 20).preferred(24410, false)).unwrap();
    assert_eq!(a.port(), 24410);
    // Sequential fallback: a random one could land on 24415, which the test binds below.
    let b = reg.allocate(&req_in(24400, 20).preferred(24410, false).strategy(Strategy::Sequential)).unwrap();
    assert_ne!(b.port(), 24410);
    assert_ne!(b.port(), 24415);
    let e = reg.allocate(&req_in(24400, 20).preferred(24410, true)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InUse);
    assert!(e.to_string().contains("24410"), "{e}");
    // Bound by a program outside portmgr: required fails, preferred falls back.
    let s = probe::bind_listener(24415, Protocols::TCP).unwrap();
    let e = reg.allocate(&req_in(24400, 20).preferred(24415, true)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InUse, "{e}");
    let c = reg.allocate(&req_in(24400, 20).preferred(24415, false)).unwrap();
    assert_ne!(c.port(), 24415);
    drop(s);
    assert_eq!(reg.get_by_port(24415).unwrap(), None, "a failed preferred port must not stay held");
}

#[test]
fn blocks_are_all_or_nothing() {
    let (_d, reg) = temp_registry();
    let blk = reg.allocate(&req_in(24500, 10).count(4).contiguous(true)).unwrap();
    let p = blk.ports();
    assert_eq!(p.len(), 4);
    assert!(p.windows(2).all(|w| w[1] == w[0] + 1), "{p:?}");
    let many = reg.allocate(&req_in(24500, 10).count(6)).unwrap();
    assert_eq!(many.ports().len(), 6);
    // Nothing is left: a block of 2 fails and leaves no pending records behind.
    let e = reg.allocate(&req_in(24500, 10).count(2)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Exhausted);
    assert_eq!(reg.list().unwrap().len(), 10);
    drop(many);
    let e = reg.allocate(&req_in(24500, 10).count(7)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Exhausted);
    assert_eq!(reg.list().unwrap().len(), 4, "a failed block must roll back every port");
    // A contiguous block skips around a port bound outside portmgr.
    drop(blk);
    let s = probe::bind_listener(24502, Protocols::TCP).unwrap();
    let blk = reg.allocate(&req_in(24500, 10).count(5).contiguous(true).strategy(Strategy::Sequential)).unwrap();
    assert_eq!(blk.ports(), &[24503, 24504, 24505, 24506, 24507]);
    drop(s);
}

#[test]
fn ttl_expires_and_renews() {
    let (_d, reg) = temp_registry();
    // TTLs are at least 1 s (issue 11.10): 1 s, renewed to 2 s, seen alive after its
    // first TTL and gone after the renewed one.
    let req = req_in(24600, 1).ttl(Duration::from_secs(1));
    let lease = reg.allocate(&req).unwrap();
    let port = lease.keep().unwrap()[0];
    let info = reg.get_by_port(port).unwrap().unwrap();
    assert!(info.detached && info.expires_ms.is_some());
    reg.renew_port(port, Some(Duration::from_secs(2))).unwrap();
    std::thread::sleep(Duration::from_millis(1300));
    assert!(reg.get_by_port(port).unwrap().is_some(), "renewed lease expired early");
    std::thread::sleep(Duration::from_millis(1000));
    assert!(reg.get_by_port(port).unwrap().is_none());
    let freed = reg.gc().unwrap();
    assert_eq!(freed.len(), 1);
    assert_eq!(freed[0].state, "expired");
    assert_eq!(reg.allocate(&req).unwrap().port(), port);
}

#[test]
fn watched_process_lease_ends_with_the_process() {
    let (_d, reg) = temp_registry();
    let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    let lease = reg.allocate(&req_in(24700, 1).watch_pid(child.id())).unwrap();
    let port = lease.keep().unwrap()[0];
    assert_eq!(reg.get_by_port(port).unwrap().unwrap().watch_pid, Some(child.id()));
    assert_eq!(reg.allocate(&req_in(24700, 1)).unwrap_err().code(), ErrorCode::Exhausted);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(reg.get_by_port(port).unwrap().is_none());
    assert_eq!(reg.allocate(&req_in(24700, 1)).unwrap().port(), port);
    let e = reg.allocate(&req_in(24700, 1).watch_pid(child.id())).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
}

#[test]
fn detached_leases_are_releasable_by_others_live_ones_are_not() {
    let d = tempfile::tempdir().unwrap();
    let a = Registry::open(d.path()).unwrap();
    let b = Registry::open(d.path()).unwrap(); // a second owner, as another process would be
    let held = a.allocate(&req_in(24800, 10)).unwrap();
    let e = b.release_port(held.port()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotOwner);
    assert!(e.to_string().contains(&std::process::id().to_string()), "{e}");
    let kept = a.allocate(&req_in(24800, 10).ttl(Duration::from_secs(60))).unwrap();
    let kp = kept.port();
    drop(kept); // a TTL lease still releases on drop while its handle manages it
    assert!(a.get_by_port(kp).unwrap().is_none());
    let kept = a.allocate(&req_in(24800, 10).ttl(Duration::from_secs(60))).unwrap().keep().unwrap();
    assert_eq!(b.release_port(kept[0]).unwrap(), kept);
    assert_eq!(b.release_port(4).unwrap_err().code(), ErrorCode::NotFound);
}

#[test]
fn bound_sockets_are_held_and_listening() {
    let (_d, reg) = temp_registry();
    let (lease, socks) = reg.allocate_bound(&req_in(24900, 20).protocols(Protocols::BOTH)).unwrap();
    assert_eq!(socks.len(), 2);
    assert!(socks.iter().all(|s| s.port == lease.port()));
    let addr = format!("127.0.0.1:{}", lease.port()).parse().unwrap();
    assert!(probe::accepts(addr, Duration::from_secs(1)));
    assert!(reg.get_by_port(lease.port()).unwrap().unwrap().bound);
    assert!(!probe::is_free(lease.port(), Protocols::UDP).unwrap());
}

#[test]
fn kernel_and_hash_strategies() {
    let (_d, reg) = temp_registry();
    let k = reg.allocate(&Request::new().strategy(Strategy::Kernel)).unwrap();
    let (lo, hi) = portmgr::range::ephemeral_range();
    assert!((lo..=hi).contains(&k.port()), "kernel port {} outside {lo}-{hi}", k.port());
    let r = range(25000, 1000);
    let h = reg.allocate(&Request::new().range(r.clone()).name("postgres").strategy(Strategy::Hash(None))).unwrap();
    assert_eq!(h.port(), portmgr::strategy::hash_start(&r, "postgres"));
}

#[test]
fn insecure_directories_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let real = d.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = d.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let e = Registry::open(&link).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InsecureDirectory);
    assert!(e.to_string().contains("symbolic link"), "{e}");

    let open = d.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = Registry::open(&open).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InsecureDirectory);
    assert!(e.to_string().contains("chmod 700"), "{e}");

    // A symlink planted in place of the registry file.
    let ok = d.path().join("ok");
    std::fs::create_dir(&ok).unwrap();
    std::fs::set_permissions(&ok, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(d.path().join("elsewhere"), ok.join("registry.db")).unwrap();
    let e = Registry::open(&ok).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InsecureDirectory);
    assert!(!d.path().join("elsewhere").exists(), "followed a planted symlink");

    if portmgr_is_root() {
        let foreign = d.path().join("foreign");
        std::fs::create_dir(&foreign).unwrap();
        std::fs::set_permissions(&foreign, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
        let e = Registry::open(&foreign).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InsecureDirectory);
        assert!(e.to_string().contains("owned by uid 65534"), "{e}");
    }
}

fn portmgr_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

#[test]
fn damaged_file_is_moved_aside_never_reset_under_live_owners() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("reg");
    let held_port;
    {
        let reg = Registry::open(&dir).unwrap();
        held_port = reg.allocate(&req_in(25100, 10)).unwrap().keep().unwrap()[0];
        // While `reg` (a live owner) is attached, a damaged file is refused, not reset.
        let db = dir.join("registry.db");
        let f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
        f.set_len(4096).unwrap();
        drop(f);
        let e = Registry::open(&dir).unwrap_err();
        assert_eq!(e.code(), ErrorCode::RegistryCorrupt, "{e}");
        assert!(e.to_string().contains("attached"), "{e}");
        let _ = held_port;
    }
    // KEPT keeps the first handle's owner alive for the whole test process, so use a
    // fresh directory for the no-owner case.
    for (i, damage) in ["truncate", "magic", "version", "empty-garbage"].iter().enumerate() {
        let dir = d.path().join(format!("r{i}"));
        drop(Registry::open(&dir).unwrap());
        let db = dir.join("registry.db");
        let mut bytes = std::fs::read(&db).unwrap();
        match *damage {
            "truncate" => bytes.truncate(1000),
            "magic" => bytes[0] ^= 0xff,
            "version" => bytes[8] = 99,
            _ => bytes = vec![0x5a; 300],
        }
        std::fs::write(&db, &bytes).unwrap();
        let reg = Registry::open(&dir).unwrap();
        let notes = reg.notices();
        assert_eq!(notes.len(), 1, "{damage}: {notes:?}");
        assert!(notes[0].contains("moved it aside"), "{damage}: {notes:?}");
        let aside: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("registry.db.damaged-"))
            .collect();
        assert_eq!(aside.len(), 1, "{damage}");
        reg.allocate(&req_in(25200, 10)).unwrap();
    }
}

#[test]
fn lock_wait_times_out_naming_the_holder() {
    let (d, reg) = temp_registry();
    let lockfile = d.path().join("reg").join("registry.lock");
    let mut holder = std::process::Command::new("flock")
        .arg(&lockfile)
        .args(["-c", "echo locked; sleep 20"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "locked");
    reg.set_lock_timeout(Duration::from_millis(300));
    let t = std::time::Instant::now();
    let e = reg.allocate(&req_in(25300, 10)).unwrap_err();
    let waited = t.elapsed();
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(e.code(), ErrorCode::Timeout, "{e}");
    // The holder is the `flock` process or the shell it started (it inherits the lock).
    let msg = e.to_string();
    assert!(msg.contains("process "), "{msg}");
    assert!(waited < Duration::from_millis(300 * 11 / 10 + 50), "waited {waited:?}");
    let _ = HashSet::<u16>::new();
}

/// Issue 11.1/11.2: a renew acts on the lease's own records only. After a release, the
/// same port leased to someone else is never renewed (nor cut short) through the old
/// lease, and the old lease's renew is NotFound, not a silent success.
#[test]
fn renew_of_a_released_lease_is_not_found_and_leaves_the_new_holder_alone() {
    let (_d, reg) = temp_registry();
    let req = req_in(25400, 1).strategy(Strategy::Sequential);
    let mut old = reg.allocate(&req).unwrap();
    let port = old.port();
    old.renew(Duration::from_secs(60)).unwrap();
    reg.release_port(port).unwrap();
    // Released by port elsewhere: the lease's heartbeat must fail.
    assert_eq!(old.renew(Duration::from_secs(1)).unwrap_err().code(), ErrorCode::NotFound);
    old.release().unwrap();
    assert_eq!(old.renew(Duration::from_secs(1)).unwrap_err().code(), ErrorCode::NotFound);
    // Someone else now holds the port with a long TTL.
    let other = reg.allocate(&req.clone().ttl(Duration::from_secs(300))).unwrap();
    assert_eq!(other.port(), port);
    let before = reg.get_by_port(port).unwrap().unwrap().expires_ms.unwrap();
    assert_eq!(old.renew(Duration::from_secs(1)).unwrap_err().code(), ErrorCode::NotFound);
    let after = reg.get_by_port(port).unwrap().unwrap().expires_ms.unwrap();
    assert!(after + 1000 >= before, "the other holder's TTL was cut: {before} -> {after}");
    // By id: the live id renews, the released one is NotFound.
    reg.renew_id(other.id(), Some(Duration::from_secs(120))).unwrap();
    assert_eq!(reg.renew_id(old.id(), Some(Duration::from_secs(1))).unwrap_err().code(), ErrorCode::NotFound);
    assert_eq!(reg.release_id(old.id()).unwrap_err().code(), ErrorCode::NotFound);
    assert_eq!(reg.release_id(other.id()).unwrap(), vec![port]);
    assert_eq!(reg.release_id(other.id()).unwrap_err().code(), ErrorCode::NotFound);
}

/// A released lease cannot be kept: `keep` says so instead of returning the ports.
#[test]
fn keep_of_a_released_lease_is_not_found() {
    let (_d, reg) = temp_registry();
    let mut l = reg.allocate(&req_in(25410, 1)).unwrap();
    l.release().unwrap();
    assert_eq!(l.keep().unwrap_err().code(), ErrorCode::NotFound);
}

/// Issue 11.7: a directory that is not portmgr's own (a shared one like `/` or `/etc`:
/// other files in it and no registry) is refused, and nothing is written into it. An
/// empty directory becomes a registry; a registry stays usable when files appear in it.
#[test]
fn directories_not_dedicated_to_portmgr_are_refused() {
    let d = tempfile::tempdir().unwrap();
    for (name, mode) in [("etc", 0o755), ("home", 0o700)] {
        let shared = d.path().join(name);
        std::fs::create_dir(&shared).unwrap();
        std::fs::write(shared.join("passwd"), b"root:x:0:0::/root:/bin/sh\n").unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(mode)).unwrap();
        let e = Registry::open(&shared).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InsecureDirectory, "{name}: {e}");
        assert!(e.to_string().contains("dedicated"), "{name}: {e}");
        let names: Vec<_> = std::fs::read_dir(&shared).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["passwd"], "{name}: portmgr wrote into a shared directory");
    }
    let empty = d.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o700)).unwrap();
    drop(Registry::open(&empty).unwrap());
    std::fs::write(empty.join("notes.txt"), b"mine\n").unwrap();
    Registry::open(&empty).unwrap().allocate(&req_in(25500, 10)).unwrap();
}

/// Issue 11.7: an empty path is an invalid argument (as `--registry ""`, C's `""` and an
/// empty `PORTMGR_DIR` are), never the current directory.
#[test]
fn an_empty_path_is_an_invalid_argument() {
    let e = Registry::open("").unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
    assert!(e.to_string().contains("empty"), "{e}");
}

/// Issue 11.13: a NUL byte in the path is an invalid argument, not an OS error.
#[test]
fn a_nul_byte_in_the_path_is_an_invalid_argument() {
    let e = Registry::open("/tmp/a\0b").unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
    assert!(e.to_string().contains("NUL"), "{e}");
}

/// Issue 11.10: a TTL shorter than the minimum would hand out a port that is already
/// expired (or about to be): refused at allocation and at every renew, naming the minimum.
#[test]
fn ttls_below_the_minimum_are_refused() {
    let (_d, reg) = temp_registry();
    for t in [Duration::from_nanos(1), Duration::from_millis(1), Duration::from_millis(999)] {
        let e = reg.allocate(&req_in(25510, 10).ttl(t)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument, "{t:?}: {e}");
        assert!(e.to_string().contains("at least 1 s"), "{t:?}: {e}");
    }
    assert!(reg.list().unwrap().is_empty());
    drop(reg.allocate(&req_in(25510, 10).ttl(Duration::from_secs(1))).unwrap());
    let lease = reg.allocate(&req_in(25510, 10).name("min-ttl").ttl(Duration::from_secs(60))).unwrap();
    let short = Some(Duration::from_millis(500));
    for e in [
        lease.renew(Duration::from_millis(500)).unwrap_err(),
        reg.renew_port(lease.port(), short).unwrap_err(),
        reg.renew_name("min-ttl", short).unwrap_err(),
        reg.renew_id(lease.id(), short).unwrap_err(),
    ] {
        assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
        assert!(e.to_string().contains("at least 1 s"), "{e}");
    }
    lease.renew(Duration::from_secs(1)).unwrap();
    reg.renew_port(lease.port(), Some(Duration::from_secs(60))).unwrap();
    reg.renew_port(lease.port(), None).unwrap();
}

/// Issue 11.13: a huge service name is not echoed whole in the error.
#[test]
fn a_huge_name_is_truncated_in_the_error() {
    let (_d, reg) = temp_registry();
    let huge = "n".repeat(100_000);
    let e = reg.allocate(&req_in(25520, 10).name(huge.as_str())).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    let msg = e.to_string();
    assert!(msg.len() < 300, "{} bytes: {}…", msg.len(), &msg[..200]);
    assert!(msg.contains("100000 bytes"), "{msg}");
    let e = portmgr::registry::validate_name(&format!("bad\u{7}{huge}")).unwrap_err();
    assert!(e.to_string().len() < 300, "{} bytes", e.to_string().len());
    // Looked up by that name: not found, and not echoed whole either.
    for e in [reg.release_name(&huge).unwrap_err(), reg.renew_name(&huge, None).unwrap_err()] {
        assert_eq!(e.code(), ErrorCode::NotFound);
        assert!(e.to_string().len() < 300 && e.to_string().contains("100000 bytes"), "{} bytes", e.to_string().len());
    }
}

/// Issue 13.1: reservations through the Rust API (ports 25900-25949).
#[test]
fn reserved_ports_are_never_handed_out_and_leased_ones_stay_leased() {
    let (_d, reg) = temp_registry();
    assert_eq!(reg.reserve(&[(0, 5)], None).unwrap_err().code(), ErrorCode::InvalidArgument);
    assert_eq!(reg.reserve(&[(25910, 25900)], None).unwrap_err().code(), ErrorCode::InvalidArgument);
    assert_eq!(reg.reserve(&[], None).unwrap_err().code(), ErrorCode::InvalidArgument);
    for bad in ["a\nb", "tab\there", "\u{1b}[31m", &"r".repeat(233)] {
        assert_eq!(reg.reserve(&[(25900, 25900)], Some(bad)).unwrap_err().code(), ErrorCode::InvalidArgument, "{bad:?}");
    }
    // A port leased now keeps its lease.
    let held = reg.allocate(&req_in(25900, 1)).unwrap();
    let kept = reg.reserve(&[(25900, 25904)], Some("monitoring")).unwrap();
    assert_eq!(kept.iter().map(|i| i.port).collect::<Vec<_>>(), vec![25900]);
    assert_eq!(reg.get_by_port(25900).unwrap().unwrap().lease_id, held.id());
    // Every strategy skips the reserved ports.
    for s in [Strategy::Sequential, Strategy::Random, Strategy::Hash(None)] {
        let mut got = Vec::new();
        for _ in 0..5 {
            got.push(reg.allocate(&req_in(25900, 10).strategy(s.clone()).name(format!("s{}", got.len()))).unwrap());
        }
        assert!(got.iter().all(|l| l.port() >= 25905), "{s:?}: {:?}", got.iter().map(|l| l.port()).collect::<Vec<_>>());
        assert_eq!(reg.allocate(&req_in(25900, 10).strategy(s.clone())).unwrap_err().code(), ErrorCode::Exhausted);
        drop(got);
    }
    // A contiguous block never spans a reserved port: 25905-25909 holds at most 2 pairs.
    let pairs: Vec<_> = (0..2).map(|_| reg.allocate(&req_in(25900, 10).count(2).contiguous(true)).unwrap()).collect();
    assert!(pairs.iter().all(|l| l.ports()[0] >= 25905), "{pairs:?}");
    assert_eq!(reg.allocate(&req_in(25900, 10).count(2).contiguous(true)).unwrap_err().code(), ErrorCode::Exhausted);
    drop(pairs);
    // Released, the reserved port is blocked; a required one names the reservation.
    drop(held);
    let e = reg.allocate(&req_in(25900, 10).preferred(25900, true)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InUse);
    assert!(e.to_string().contains("25900-25904") && e.to_string().contains("monitoring"), "{e}");
    // Not required: the strategy goes on past it.
    assert_eq!(reg.allocate(&req_in(25910, 5).preferred(25901, false)).unwrap().port() / 5, 25910 / 5);
    // The same span again: a new reason, still one reservation.
    reg.reserve(&[(25900, 25904)], Some("prometheus")).unwrap();
    let list = reg.reserved().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].reason.as_deref(), Some("prometheus"));
    assert_eq!(reg.stats().unwrap().reserved, 5);
    // Unreserving one port splits the range; the rest stays blocked.
    let freed = reg.unreserve(&[(25902, 25902)]).unwrap();
    assert_eq!((freed[0].start, freed[0].end), (25902, 25902));
    let spans: Vec<(u16, u16)> = reg.reserved().unwrap().iter().map(|r| (r.start, r.end)).collect();
    assert_eq!(spans, vec![(25900, 25901), (25903, 25904)]);
    assert_eq!(reg.allocate(&req_in(25900, 5).strategy(Strategy::Sequential)).unwrap().port(), 25902);
    assert_eq!(reg.unreserve(&[(25920, 25930)]).unwrap_err().code(), ErrorCode::NotFound);
    // Another handle (another process would be the same) sees the same table.
    let other = Registry::open(reg.dir()).unwrap();
    assert_eq!(other.reserved().unwrap().len(), 2);
    other.unreserve(&[(1, 65535)]).unwrap();
    assert!(reg.reserved().unwrap().is_empty());
}

/// Issue 13.1: the per-request exclude list, with a range or the default pool.
#[test]
fn exclude_lists_apply_to_ranges_the_pool_and_preferred_ports() {
    let (_d, reg) = temp_registry();
    let l = reg.allocate(&req_in(25920, 5).strategy(Strategy::Sequential).exclude_spans(&[(25920, 25922)])).unwrap();
    assert_eq!(l.port(), 25923);
    let e = reg.allocate(&req_in(25920, 3).exclude([25920, 25921, 25922])).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
    let e = reg.allocate(&Request::new().preferred(25930, true).exclude([25930])).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    assert!(e.to_string().contains("exclude"), "{e}");
    let pool = reg.default_pool().unwrap();
    let first = pool.start();
    let l = reg.allocate(&Request::new().strategy(Strategy::Sequential).exclude([first])).unwrap();
    assert_ne!(l.port(), first);
    assert!(pool.contains(l.port()));
}

/// Issue 13.1: a version 2 file made before the reservation table grows in place and
/// keeps its leases; a damaged reservation entry is dropped with a notice.
#[test]
fn a_file_without_the_reservation_table_grows_and_damaged_entries_are_dropped() {
    const FILE_SIZE_V2_0: u64 = 4096 + 4096 * 64 + 65536 / 8 + 65536 * 128 + 65536 * 4;
    let (d, reg) = temp_registry();
    let lease = reg.allocate(&req_in(25940, 5).ttl(Duration::from_secs(600))).unwrap();
    let port = lease.port();
    lease.keep().unwrap();
    drop(reg);
    let db = d.path().join("reg/registry.db");
    let f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    f.set_len(FILE_SIZE_V2_0).unwrap();
    drop(f);
    let reg = Registry::open(d.path().join("reg")).unwrap();
    assert_eq!(reg.get_by_port(port).unwrap().map(|i| i.port), Some(port), "the lease survived the growth");
    assert!(reg.reserved().unwrap().is_empty());
    assert!(std::fs::metadata(&db).unwrap().len() > FILE_SIZE_V2_0);
    reg.reserve(&[(25945, 25949)], Some("x")).unwrap();
    // Flip a byte of the first entry's reason: its check no longer matches.
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&db).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_at(b"Y", FILE_SIZE_V2_0 + 24).unwrap();
    assert!(reg.reserved().unwrap().is_empty());
    assert!(reg.notices().iter().any(|n| n.contains("damaged entries of the registry's reservation table")), "{:?}", reg.notices());
    assert_eq!(reg.allocate(&req_in(25945, 1)).unwrap().port(), 25945);
}
