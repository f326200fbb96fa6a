//! F3 / L3 / L4: fork from a process whose other thread is inside the library.
//!
//! * 1,000 forks (quick mode: 300) while a second thread allocates and releases in a
//!   loop: every child allocates within 1 s (a hung child dies by alarm and is counted).
//! * A process that forked a long-lived child (which never calls portmgr) is SIGKILLed
//!   while its other thread hammers the lock: its ports are allocatable at once, and the
//!   lock is free at once (the child must not keep the dead parent's lock or owner slot).

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use portmgr::Registry;

use crate::util::*;

const START: u16 = 14200;
const LEN: u16 = 200;

/// Child role `forker N`: see the module docs. Prints `FORK ok slow failed hung max_ms`.
pub fn forker(n: u64) {
    let reg = Registry::open_default().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let busy = {
        let (reg, stop) = (reg.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut rounds = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let l = reg.allocate(&req_in(START, LEN)).unwrap();
                let _ = reg.get_by_port(l.port());
                drop(l);
                rounds += 1;
            }
            rounds
        })
    };
    let (mut ok, mut slow, mut failed, mut hung, mut max_ms) = (0, 0, 0, 0, 0.0f64);
    for _ in 0..n {
        let (mut rd, mut wr) = std::io::pipe().unwrap();
        // SAFETY: the child runs only portmgr (fork-safe by design: that is what this
        // tests) and writes to a pipe, then _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: alarm and _exit are async-signal-safe; a hung child dies by SIGALRM.
            unsafe { libc::alarm(5) };
            let t = Instant::now();
            let r = reg.allocate(&req_in(START, LEN));
            let ms = t.elapsed().as_secs_f64() * 1e3;
            let code = match &r {
                Ok(_) if ms < 1000.0 => 0,
                Ok(_) => 2,
                Err(_) => 1,
            };
            let _ = wr.write_all(format!("{ms:.3} {:?}", r.as_ref().map(|l| l.port()).map_err(|e| e.to_string())).as_bytes());
            // SAFETY: leave without running the parent's destructors or atexit handlers.
            unsafe { libc::_exit(code) };
        }
        drop(wr);
        let mut msg = String::new();
        let _ = rd.read_to_string(&mut msg);
        let mut status = 0;
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if let Some(ms) = msg.split_whitespace().next().and_then(|m| m.parse::<f64>().ok()) {
            max_ms = max_ms.max(ms);
        }
        if libc::WIFSIGNALED(status) {
            hung += 1;
            say(format!("HUNG child {pid} signal {}: {msg}", libc::WTERMSIG(status)));
        } else {
            match libc::WEXITSTATUS(status) {
                0 => ok += 1,
                2 => slow += 1,
                _ => {
                    failed += 1;
                    say(format!("FAILED child {pid}: {msg}"));
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let rounds = busy.join().unwrap();
    say(format!("FORK {ok} {slow} {failed} {hung} {max_ms:.2} {rounds}"));
}

/// Child role `fork-holder`: allocate 3 ports, fork a child that sleeps (never calling
/// portmgr), keep a thread taking the lock in a loop, say the ports and wait to be killed.
pub fn fork_holder() {
    let reg = Registry::open_default().unwrap();
    let leases: Vec<_> = (0..3).map(|_| reg.allocate(&req_in(START, LEN)).unwrap()).collect();
    {
        let reg = reg.clone();
        std::thread::spawn(move || {
            loop {
                let _ = reg.get_by_port(START);
            }
        });
    }
    // SAFETY: the child only sleeps and _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: async-signal-safe calls only.
        unsafe {
            libc::sleep(30);
            libc::_exit(0);
        }
    }
    say(format!("SLEEPER {pid}"));
    for l in &leases {
        say(format!("PORT {}", l.port()));
    }
    say("READY");
    let _ = wait_parent();
    // SAFETY: ending the sleeper we forked.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

#[test]
fn forks_while_another_thread_is_inside_the_library() {
    let n = knob("PORTMGR_RELIABILITY_FORKS", 1000);
    let d = temp_dir();
    let dir = d.path().join("reg");
    let mut kid = spawn(crate::TEST, &dir, &format!("forker {n}"), &[]);
    let line = kid.expect("FORK ", Duration::from_secs(600));
    let st = kid.wait(Duration::from_secs(30));
    let line = line.unwrap_or_else(|| panic!("the forker gave no summary ({st:?}): {:?}", kid.seen));
    let f: Vec<f64> = line.split_whitespace().map(|w| w.parse().unwrap()).collect();
    let (ok, slow, failed, hung, max_ms, rounds) = (f[0], f[1], f[2], f[3], f[4], f[5]);
    let notes: Vec<&String> = kid.seen.iter().filter(|l| l.starts_with("HUNG") || l.starts_with("FAILED")).take(5).collect();
    eprintln!("RESULT fork: forks={n} ok={ok} slow={slow} failed={failed} hung={hung} max_child_alloc_ms={max_ms} busy_thread_rounds={rounds}");
    assert_eq!(ok as u64, n, "forked children that did not allocate within 1 s: slow {slow}, failed {failed}, hung {hung}: {notes:?}");
    assert!(rounds > 0.0, "the busy thread never ran");
    assert!(st.is_some_and(|s| s.success()));
}

#[test]
fn a_killed_parent_with_a_living_forked_child_keeps_neither_ports_nor_lock() {
    let d = temp_dir();
    let dir = d.path().join("reg");
    let reg = Registry::open(&dir).unwrap();
    let mut kid = spawn(crate::TEST, &dir, "fork-holder", &[]);
    let sleeper: i32 = kid.expect("SLEEPER ", Duration::from_secs(20)).unwrap().parse().unwrap();
    let mut ports = Vec::new();
    while ports.len() < 3 {
        ports.push(kid.expect("PORT ", Duration::from_secs(20)).unwrap().parse::<u16>().unwrap());
    }
    kid.expect("READY", Duration::from_secs(20)).unwrap();
    kid.kill();
    // The sleeper lives on (re-parented); it inherited the parent's descriptors at fork.
    // SAFETY: signal 0 only checks existence.
    assert_eq!(unsafe { libc::kill(sleeper, 0) }, 0, "the forked sleeper should still live");
    reg.set_lock_timeout(Duration::from_secs(1));
    let t = Instant::now();
    for &p in &ports {
        match reg.allocate(&req_in(START, LEN).preferred(p, true)) {
            Ok(l) => assert_eq!(l.port(), p),
            Err(e) => panic!(
                "port {p} of the killed parent is still held while its forked child lives: {e}\n{}",
                forensics(&dir, &[p])
            ),
        }
    }
    let ms = t.elapsed().as_secs_f64() * 1e3;
    // SAFETY: ending the orphaned sleeper.
    unsafe { libc::kill(sleeper, libc::SIGKILL) };
    eprintln!("RESULT fork-parent-killed: ports={} reallocated_within_ms={ms:.1}", ports.len());
    assert!(ms < 1000.0, "took {ms} ms");
}

/// L7: a program exec'd by a process that uses portmgr inherits none of its descriptors
/// (every fd is O_CLOEXEC), so it holds no lock it does not know of.
#[test]
fn an_exec_d_child_inherits_no_registry_descriptor() {
    let d = temp_dir();
    let dir = d.path().join("reg");
    let reg = Registry::open(&dir).unwrap();
    let _l = reg.allocate(&req_in(START, LEN)).unwrap();
    let out = std::process::Command::new("sh").args(["-c", "ls -l /proc/$$/fd"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("->"), "no fd listing: {text}");
    let leaked: Vec<&str> = text.lines().filter(|l| l.contains(dir.to_str().unwrap())).collect();
    eprintln!("RESULT exec-fds: registry fds in an exec'd child={}", leaked.len());
    assert!(leaked.is_empty(), "registry fds leaked into an exec'd program: {leaked:?}");
}
