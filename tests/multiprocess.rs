//! The registry shared by real processes: concurrency, SIGKILL, hashing, fork.
//!
//! Children are this test binary re-executed with `PORTMGR_TEST_ROLE` (see `child_role`).

mod common;

use std::io::{Read, Write};
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
            // The child says it runs: its fork handler (which drops the inherited registry
            // fds) has run by then. Until the kernel schedules it, it holds copies of every
            // fd, as any forked process does, and so the owner lock.
            let (mut up, mut down) = std::os::unix::net::UnixStream::pair().unwrap();
            // SAFETY: the child only writes a byte, sleeps and _exits.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                let _ = up.write_all(b"r");
                std::thread::sleep(Duration::from_secs(30));
                // SAFETY: _exit in the forked child.
                unsafe { libc::_exit(0) };
            }
            let mut b = [0u8; 1];
            down.read_exact(&mut b).unwrap();
            writeln!(out.lock(), "\nPORT {}\nPID {pid}\nREADY", l.port()).unwrap();
            let mut s = String::new();
            let _ = std::io::stdin().read_line(&mut s);
        }
        // churn-alloc START LEN MS: for MS milliseconds allocate from START.., holding up
        // to 5 leases at a time; print `A port t_call t_got t_release` per lease (times in
        // ns of CLOCK_MONOTONIC, shared by every process of the host).
        "churn-alloc" => {
            let start: u16 = words.next().unwrap().parse().unwrap();
            let len: u16 = words.next().unwrap().parse().unwrap();
            let ms: u64 = words.next().unwrap().parse().unwrap();
            let mut held = std::collections::VecDeque::new();
            let mut lines = vec![String::new()];
            let end = mono_ns() + ms * 1_000_000;
            let mut exhausted = 0;
            while mono_ns() < end {
                let t_call = mono_ns();
                match reg.allocate(&req_in(start, len)) {
                    Ok(l) => held.push_back((l, t_call, mono_ns())),
                    Err(e) if e.code() == ErrorCode::Exhausted => exhausted += 1,
                    Err(e) => panic!("allocate: {e}"),
                }
                if held.len() > 5 || (!held.is_empty() && exhausted > 0) {
                    let (mut l, t_call, t_got) = held.pop_front().unwrap();
                    let t_rel = mono_ns();
                    lines.push(format!("A {} {t_call} {t_got} {t_rel}", l.port()));
                    l.release().unwrap();
                }
            }
            for (l, t_call, t_got) in held {
                lines.push(format!("A {} {t_call} {t_got} {}", l.port(), mono_ns()));
                drop(l);
            }
            lines.push(format!("EXHAUSTED {exhausted}"));
            lines.push("READY".into());
            writeln!(out.lock(), "{}", lines.join("\n")).unwrap();
        }
        // churn-reserve START MS: for MS milliseconds reserve a moving 20-port span of
        // START..START+100 and one single port, then remove them; print
        // `R a b t_on t_off` per reservation (reserved at least from t_on to t_off).
        "churn-reserve" => {
            let start: u16 = words.next().unwrap().parse().unwrap();
            let ms: u64 = words.next().unwrap().parse().unwrap();
            let mut lines = vec![String::new()];
            let end = mono_ns() + ms * 1_000_000;
            let mut i: u16 = 0;
            while mono_ns() < end {
                let a = start + (i * 7) % 80;
                let single = start + 99 - i % 10;
                reg.reserve(&[(a, a + 19), (single, single)], Some(&format!("churn {i}"))).unwrap();
                let t_on = mono_ns();
                std::thread::sleep(Duration::from_millis(2));
                let t_off = mono_ns();
                reg.unreserve(&[(a, a + 19), (single, single)]).unwrap();
                lines.push(format!("R {a} {} {t_on} {t_off}", a + 19));
                lines.push(format!("R {single} {single} {t_on} {t_off}"));
                std::thread::sleep(Duration::from_millis(1));
                i += 1;
            }
            lines.push("READY".into());
            writeln!(out.lock(), "{}", lines.join("\n")).unwrap();
        }
        other => panic!("unknown role {other}"),
    }
}

const TEST: &str = "child_role";

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process of the host.
fn mono_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Every line of a child's output up to `READY`, split in words.
fn read_lines(child: &mut std::process::Child) -> Vec<Vec<u64>> {
    use std::io::BufRead;
    let mut rows = Vec::new();
    for line in std::io::BufReader::new(child.stdout.as_mut().unwrap()).lines() {
        let line = line.unwrap();
        if line == "READY" {
            return rows;
        }
        let mut w = line.split_whitespace();
        if let Some(tag) = w.next().filter(|t| *t == "A" || *t == "R") {
            let nums: Vec<u64> = w.map(|x| x.parse().unwrap()).collect();
            rows.push(std::iter::once(u64::from(tag.as_bytes()[0])).chain(nums).collect());
        }
    }
    panic!("child ended before READY");
}

/// Issue 13: 8 processes allocate while a ninth adds and removes reservations in a loop.
/// Every time is CLOCK_MONOTONIC, so intervals compare across processes; each recorded
/// interval lies inside the true one, so an overlap seen is a real one.
#[test]
fn eight_allocators_and_a_reservation_churner_never_meet() {
    const START: u16 = 30600;
    let d = tempfile::tempdir().unwrap();
    let mut kids: Vec<_> = (0..8).map(|_| spawn_role(TEST, d.path(), &format!("churn-alloc {START} 100 2500"))).collect();
    let mut churner = spawn_role(TEST, d.path(), &format!("churn-reserve {START} 2500"));
    let mut leases = Vec::new(); // (port, t_call, t_got, t_release)
    for k in &mut kids {
        for row in read_lines(k) {
            if row[0] == u64::from(b'A') {
                leases.push((row[1] as u16, row[2], row[3], row[4]));
            }
        }
        assert!(k.wait().unwrap().success());
    }
    let windows: Vec<(u16, u16, u64, u64)> =
        read_lines(&mut churner).into_iter().map(|r| (r[1] as u16, r[2] as u16, r[3], r[4])).collect();
    assert!(churner.wait().unwrap().success());
    assert!(windows.len() > 200, "the churner made only {} reservations", windows.len());
    assert!(leases.len() > 2000, "the allocators got only {} leases", leases.len());

    // 1. No port handed out twice: no two leases of one port overlap in time.
    let mut by_port: std::collections::HashMap<u16, Vec<(u64, u64)>> = std::collections::HashMap::new();
    for &(p, _, got, rel) in &leases {
        by_port.entry(p).or_default().push((got, rel));
    }
    for (p, mut iv) in by_port {
        iv.sort_unstable();
        for w in iv.windows(2) {
            assert!(w[1].0 >= w[0].1, "port {p} was held by two leases at once: {:?} and {:?}", w[0], w[1]);
        }
    }
    // 2. No lease got a port that was reserved for the whole of its allocate call.
    let mut inside = 0;
    for &(p, call, got, _) in &leases {
        for &(a, b, on, off) in &windows {
            if on <= call && got <= off {
                inside += 1;
                assert!(!(a..=b).contains(&p), "port {p} was handed out while reserved ({a}-{b} from {on} to {off}; the call ran {call}..{got})");
            }
        }
    }
    // The check had work to do: many allocations ran entirely inside a reservation.
    assert!(inside > 500, "only {inside} allocations ran inside a reservation window");
    let reg = Registry::open(d.path()).unwrap();
    assert!(reg.reserved().unwrap().is_empty());
}

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
