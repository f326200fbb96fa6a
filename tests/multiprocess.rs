//! The registry shared by real processes: concurrency, SIGKILL, hashing, fork.
//!
//! Children are this test binary re-executed with `PORTMGR_TEST_ROLE` (see `child_role`).

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use portmgr::{ErrorCode, PortRange, Protocols, Registry, Strategy, probe};

/// The entry point of child processes; a no-op in a normal test run.
#[test]
fn child_role() {
    let Ok(role) = std::env::var("PORTMGR_TEST_ROLE") else { return };
    let reg = Registry::open_default().unwrap();
    let mut words = role.split_whitespace();
    let out = std::io::stdout();
    match words.next().unwrap() {
        // hold N START LEN: allocate N ports one by one, print them, wait for stdin EOF.
        "hold" => {
            let n: usize = words.next().unwrap().parse().unwrap();
            let start: u16 = words.next().unwrap().parse().unwrap();
            let len: u16 = words.next().unwrap().parse().unwrap();
            let mut leases = Vec::new();
            for _ in 0..n {
                let l = reg.allocate(&req_in(start, len)).unwrap();
                leases.push(l);
            }
            let mut o = out.lock();
            // libtest has printed "test child_role ... " without a newline.
            writeln!(o).unwrap();
            for l in &leases {
                writeln!(o, "PORT {}", l.port()).unwrap();
            }
            writeln!(o, "READY").unwrap();
            o.flush().unwrap();
            drop(o);
            let mut s = String::new();
            let _ = std::io::stdin().read_line(&mut s);
        }
        // hash NAME START LEN: the hash strategy's port for NAME, then release.
        "hash" => {
            let name = words.next().unwrap();
            let start: u16 = words.next().unwrap().parse().unwrap();
            let len: u16 = words.next().unwrap().parse().unwrap();
            let l = reg.allocate(&req_in(start, len).name(name).strategy(Strategy::Hash(None))).unwrap();
            writeln!(out.lock(), "\nPORT {}\nREADY", l.port()).unwrap();
        }
        // forkhold START LEN: hold a port, fork a child that never touches portmgr and
        // sleeps, print the port and the child's pid, wait for stdin EOF.
        "forkhold" => {
            let start: u16 = words.next().unwrap().parse().unwrap();
            let len: u16 = words.next().unwrap().parse().unwrap();
            let l = reg.allocate(&req_in(start, len)).unwrap();
            // SAFETY: the child only sleeps and _exits.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                std::thread::sleep(Duration::from_secs(30));
                // SAFETY: _exit in the forked child.
                unsafe { libc::_exit(0) };
            }
            writeln!(out.lock(), "\nPORT {}\nPID {pid}\nREADY", l.port()).unwrap();
            let mut s = String::new();
            let _ = std::io::stdin().read_line(&mut s);
        }
        other => panic!("unknown role {other}"),
    }
}

const TEST: &str = "child_role";

#[test]
fn eight_processes_times_500_get_no_duplicates() {
    let d = tempfile::tempdir().unwrap();
    let mut kids: Vec<_> = (0..8).map(|_| spawn_role(TEST, d.path(), "hold 500 16000 6000")).collect();
    let mut all = Vec::new();
    for k in &mut kids {
        let ports = read_ports(k, "READY");
        assert_eq!(ports.len(), 500);
        all.extend(ports);
    }
    assert_distinct(&all);
    // The registry sees exactly those ports, held by live owners.
    let reg = Registry::open(d.path()).unwrap();
    let mut listed: Vec<u16> = reg.list().unwrap().iter().map(|i| i.port).collect();
    listed.sort_unstable();
    let mut sorted = all.clone();
    sorted.sort_unstable();
    assert_eq!(listed, sorted);
    assert_eq!(reg.stats().unwrap().owners, 8);
    for mut k in kids {
        drop(k.stdin.take());
        assert!(k.wait().unwrap().success());
    }
    assert!(reg.list().unwrap().is_empty(), "ports outlived their processes");
}

#[test]
fn sigkill_frees_a_holders_ports_for_the_next_call() {
    let d = tempfile::tempdir().unwrap();
    let mut k = spawn_role(TEST, d.path(), "hold 5 28000 5");
    let ports = read_ports(&mut k, "READY");
    assert_eq!(ports.len(), 5);
    let reg = Registry::open(d.path()).unwrap();
    assert_eq!(reg.allocate(&req_in(28000, 5)).unwrap_err().code(), ErrorCode::Exhausted);
    k.kill().unwrap(); // SIGKILL
    k.wait().unwrap();
    // No gc, no sweeper: the next calls get every one of the killed holder's ports.
    for p in &ports {
        let l = reg.allocate(&req_in(28000, 5).preferred(*p, true)).unwrap();
        assert_eq!(l.port(), *p);
        l.keep().unwrap();
    }
    let s = reg.stats().unwrap();
    assert_eq!(s.reclaimed, 5);
    assert_eq!(s.allocations - s.releases - s.reclaimed, 5);
}

#[test]
fn a_forked_child_does_not_keep_a_killed_parents_ports() {
    let d = tempfile::tempdir().unwrap();
    let mut k = spawn_role(TEST, d.path(), "forkhold 28100 1");
    let ports = read_ports(&mut k, "READY");
    assert_eq!(ports, vec![28100]);
    let reg = Registry::open(d.path()).unwrap();
    assert_eq!(reg.allocate(&req_in(28100, 1)).unwrap_err().code(), ErrorCode::Exhausted);
    let grandchild = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|st| st.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)) == Some(&k.id().to_string()))
        });
    k.kill().unwrap();
    k.wait().unwrap();
    let got = reg.allocate(&req_in(28100, 1));
    if let Some(g) = grandchild {
        // SAFETY: signalling the orphaned grandchild we made.
        unsafe { libc::kill(g, libc::SIGKILL) };
    }
    assert!(grandchild.is_some(), "the forked grandchild was not found");
    assert_eq!(got.unwrap().port(), 28100, "the forked child kept its dead parent's port");
}

#[test]
fn random_order_differs_between_processes() {
    // Separate registries, so nothing but the random order decides the port.
    let firsts: Vec<u16> = (0..3)
        .map(|_| {
            let d = tempfile::tempdir().unwrap();
            let mut k = spawn_role(TEST, d.path(), "hold 1 16000 6000");
            let p = read_ports(&mut k, "READY");
            drop(k.stdin.take());
            k.wait().unwrap();
            p[0]
        })
        .collect();
    // Three equal firsts out of 6,000 ports would be a 1 in 36 million chance.
    assert!(firsts.windows(2).any(|w| w[0] != w[1]), "every process drew the same order: {firsts:?}");
}

#[test]
fn hash_gives_the_same_port_across_processes() {
    let d = tempfile::tempdir().unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let mut k = spawn_role(TEST, d.path(), "hash billing 28200 1600");
        got.extend(read_ports(&mut k, "READY"));
        assert!(k.wait().unwrap().success());
    }
    let r = PortRange::new(28200, 29799).unwrap();
    let expect = portmgr::strategy::hash_start(&r, "billing");
    // Unless that very port is bound by some other program on this host.
    if probe::is_free(expect, Protocols::TCP).unwrap() {
        assert_eq!(got, vec![expect; 3]);
    } else {
        assert!(got.windows(2).all(|w| w[0] == w[1]), "{got:?}");
    }
}

#[test]
fn forked_child_allocates_its_own_and_never_releases_the_parents() {
    let d = tempfile::tempdir().unwrap();
    let reg = Registry::open(d.path()).unwrap();
    let parent_lease = reg.allocate(&req_in(30500, 50)).unwrap();
    let pp = parent_lease.port();
    let (mut rd, mut wr) = std::io::pipe().unwrap();
    // SAFETY: the child only calls async-signal-tolerant code paths of this test and
    // portmgr (which closes inherited fds and claims its own owner slot), then _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let code = (|| {
            let mut inherited = parent_lease;
            inherited.release().ok()?; // must not free the parent's port
            let mine = reg.allocate(&req_in(30500, 50)).ok()?;
            let still = reg.get_by_port(pp).ok()??;
            let ok = mine.port() != pp && still.owner_pid != std::process::id();
            writeln!(wr, "{} {}", mine.port(), ok).ok()?;
            Some(())
        })();
        // SAFETY: _exit in the forked child, without running the parent's destructors.
        unsafe { libc::_exit(if code.is_some() { 0 } else { 1 }) };
    }
    drop(wr);
    let mut s = String::new();
    std::io::Read::read_to_string(&mut rd, &mut s).unwrap();
    let mut status = 0;
    // SAFETY: waiting for the child we forked.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(status, 0, "child failed: {s}");
    assert!(s.trim().ends_with("true"), "{s}");
    assert!(reg.get_by_port(pp).unwrap().is_some(), "the child released the parent's port");
    let child_port: u16 = s.split_whitespace().next().unwrap().parse().unwrap();
    assert!(reg.get_by_port(child_port).unwrap().is_none(), "the exited child's port is still held");
    drop(parent_lease);
    let _ = Duration::ZERO;
}
