//! Shared helpers for the integration tests: temp registries and child processes.
//!
//! Child processes are this same test binary re-executed with `PORTMGR_TEST_ROLE` set:
//! the test named `child_role` runs the role and exits (see `run_role`).

#![allow(dead_code)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use portmgr::{PortRange, Registry, Request};

/// A fresh registry in its own temp directory (never the user's real one).
pub fn temp_registry() -> (tempfile::TempDir, Registry) {
    let d = tempfile::tempdir().unwrap();
    let reg = Registry::open(d.path().join("reg")).unwrap();
    (d, reg)
}

/// A range unlikely to collide with other tests running in parallel.
pub fn range(start: u16, len: u16) -> PortRange {
    PortRange::new(start, start + len - 1).unwrap()
}

pub fn req_in(start: u16, len: u16) -> Request {
    Request::new().range(range(start, len))
}

/// Spawn this test binary as a child running `role` against registry `dir`.
pub fn spawn_role(test_name: &str, dir: &Path, role: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env("PORTMGR_TEST_ROLE", role)
        .env("PORTMGR_DIR", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Read lines from a child until one equals `end`; returns the lines before it that
/// start with `PORT ` parsed as ports.
pub fn read_ports(child: &mut Child, end: &str) -> Vec<u16> {
    let out = child.stdout.as_mut().unwrap();
    let mut ports = Vec::new();
    for line in BufReader::new(out).lines() {
        let line = line.unwrap();
        if line == end {
            return ports;
        }
        if let Some(p) = line.strip_prefix("PORT ") {
            ports.push(p.trim().parse().unwrap());
        }
    }
    panic!("child ended before printing {end:?}; ports so far {ports:?}");
}

pub fn assert_distinct(all: &[u16]) {
    let set: HashSet<u16> = all.iter().copied().collect();
    if set.len() != all.len() {
        let mut seen = HashSet::new();
        let dups: Vec<u16> = all.iter().copied().filter(|p| !seen.insert(*p)).collect();
        for p in dups.iter().take(5) {
            let ss = Command::new("ss").args(["-anp", &format!("sport = :{p}")]).output();
            if let Ok(o) = ss {
                eprintln!("ss for duplicate port {p}:\n{}", String::from_utf8_lossy(&o.stdout));
            }
        }
        panic!("{} duplicate ports handed out: {:?}", dups.len(), &dups[..dups.len().min(20)]);
    }
}

/// A listener on `127.0.0.1:port` that drops new SYNs (a "down" endpoint that neither
/// accepts nor refuses): its backlog set to 0 and its accept queue filled with
/// connections never accepted. Returns it and those connections; keep both alive.
pub fn syn_dropping_listener(port: u16) -> (std::net::TcpListener, Vec<std::net::TcpStream>) {
    use std::os::fd::AsRawFd;
    let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    // SAFETY: `l` owns an open, listening socket for the whole call; listen(2) on it only
    // changes its backlog.
    assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 0) }, 0);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut held = Vec::new();
    for _ in 0..16 {
        match std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(300)) {
            Ok(c) => held.push(c),
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "filling the backlog: {e}");
                return (l, held);
            }
        }
    }
    panic!("the backlog of a listen(0) socket never filled");
}
