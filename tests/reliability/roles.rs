//! Child-process roles shared by the reliability binaries. A child is the test binary
//! re-executed with `PORTMGR_RELIABILITY_ROLE="<role> <args>"`; it talks to the parent
//! through stdout lines (`PORT p`, `A p..`, `R p..`, `READY`, `E msg`) and stdin lines.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use portmgr::{Protocols, Registry, Strategy};

use crate::util::*;

/// Run the role named in the environment, if any. Returns false in a normal test run.
pub fn run_child_role() -> bool {
    let Ok(role) = std::env::var(ROLE_ENV) else { return false };
    // libtest printed "test child_role ... " without a newline.
    say("");
    let words: Vec<String> = role.split_whitespace().map(String::from).collect();
    let arg = |i: usize| -> u64 { words[i].parse().unwrap() };
    match words[0].as_str() {
        "steady" => steady(arg(1) as usize, arg(2) as u16, arg(3) as u16),
        "churn" => churn(arg(1) as u16, arg(2) as u16, arg(3)),
        "lock-and-stop" => lock_and_stop(),
        "waiter" => waiter(arg(1)),
        "loop" => alloc_loop(arg(1) as u16, arg(2) as u16, arg(3), words.get(4).map(String::as_str)),
        other => crate::extra_role(other, &words),
    }
    true
}

/// Allocate `n` ports from the range one by one, print them, then answer `CHECK` lines
/// (are my ports still recorded as mine?) until stdin closes.
fn steady(n: usize, start: u16, len: u16) {
    let reg = Registry::open_default().unwrap();
    let leases: Vec<_> = (0..n).map(|_| reg.allocate(&req_in(start, len)).unwrap()).collect();
    for l in &leases {
        say(format!("PORT {}", l.port()));
    }
    say("READY");
    while let Some(cmd) = wait_parent() {
        if cmd == "CHECK" {
            let me = std::process::id();
            let mut bad = Vec::new();
            for l in &leases {
                match reg.get_by_port(l.port()) {
                    Ok(Some(i)) if i.owner_pid == me && i.lease_id == l.id() => {}
                    other => bad.push(format!("{}={other:?}", l.port())),
                }
            }
            if bad.is_empty() { say("OK") } else { say(format!("BAD {}", bad.join(" "))) }
        }
    }
}

/// Allocate and release in a loop with every kind of request, printing `A ports` after
/// each allocation returned and `R ports` before each release starts, until killed.
fn churn(start: u16, len: u16, seed: u64) {
    let reg = Registry::open_default().unwrap();
    let mut rng = Rng::new(seed);
    let mut held: Vec<portmgr::Lease> = Vec::new();
    let mut socks = Vec::new();
    let pid = std::process::id();
    for i in 0u64.. {
        let base = req_in(start, len);
        let req = match rng.below(7) {
            0 => base.strategy(Strategy::Sequential),
            1 => base.count(3),
            2 => base.count(2).contiguous(true).strategy(Strategy::Sequential),
            3 => base.name(format!("svc-{pid}-{i}")).strategy(Strategy::Hash(None)),
            4 => base.protocols(Protocols::BOTH),
            5 => {
                if rng.below(4) == 0 {
                    let _ = reg.gc();
                }
                base
            }
            _ => base,
        };
        let got = if rng.below(8) == 0 {
            reg.allocate_bound(&req).map(|(l, s)| {
                socks.push(s);
                l
            })
        } else {
            reg.allocate(&req)
        };
        match got {
            Ok(l) => {
                say(format!("A {}", join(l.ports())));
                held.push(l);
            }
            Err(e) => say(format!("E {e}")),
        }
        while held.len() > 4 || (!held.is_empty() && rng.below(3) == 0) {
            let mut l = held.remove(rng.below(held.len() as u64) as usize);
            say(format!("R {}", join(l.ports())));
            l.release().unwrap();
        }
        if socks.len() > 4 {
            socks.remove(0);
        }
    }
}

/// Allocate / hold / release in a loop for `secs` seconds from the range; print a summary
/// `DONE allocations releases` and every allocated port with `A` (for the dup check).
fn alloc_loop(start: u16, len: u16, secs: u64, mode: Option<&str>) {
    let _ = (start, len, secs, mode);
    unimplemented!("see concurrency.rs")
}

/// Open the registry with a lock timeout of `ms`, say `READY`; on `GO`, allocate once and
/// report `T <elapsed ms> <error code> <message>`.
fn waiter(ms: u64) {
    let reg = Registry::open_default().unwrap();
    reg.set_lock_timeout(Duration::from_millis(ms));
    say("READY");
    while let Some(cmd) = wait_parent() {
        if cmd == "GO" {
            let t = Instant::now();
            let r = reg.allocate(&req_in(14400, 50));
            let el = t.elapsed().as_secs_f64() * 1e3;
            match r {
                Ok(l) => say(format!("T {el:.1} ok {}", l.port())),
                Err(e) => say(format!("T {el:.1} {:?} {e}", e.code())),
            }
        }
    }
}

/// Take `flock` on registry.lock directly, say `LOCKED`, and stop ourselves.
fn lock_and_stop() {
    let dir = portmgr::default_dir();
    let f = std::fs::OpenOptions::new().read(true).write(true).open(dir.join("registry.lock")).unwrap();
    f.lock().unwrap();
    say("LOCKED");
    // SAFETY: raise with a valid signal.
    unsafe { libc::raise(libc::SIGSTOP) };
    let _ = Instant::now() + Duration::ZERO;
    drop(f);
}

pub fn join(ports: &[u16]) -> String {
    ports.iter().map(u16::to_string).collect::<Vec<_>>().join(" ")
}

pub fn parse_ports(s: &str) -> Vec<u16> {
    s.split_whitespace().filter_map(|w| w.parse().ok()).collect()
}
