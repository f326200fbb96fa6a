//! Issue 18: listener sets (one port on several addresses and protocols, SO_REUSEPORT
//! workers) and Unix-socket paths ("zero-port mode"). Ports 29000-29199.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::*;
use portmgr::listen::ListenOptions;
use portmgr::{ErrorCode, Protocols, Registry};

fn v6() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

#[test]
fn one_port_on_127_0_0_1_and_1_answers_on_both() {
    let (_d, reg) = temp_registry();
    let mut addrs: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap()];
    if v6() {
        addrs.push("::1".parse().unwrap());
    }
    let (lease, ls) = reg.allocate_listeners(&req_in(29000, 20), &ListenOptions::on(addrs.clone())).unwrap();
    assert_eq!(ls.len(), addrs.len());
    assert!(ls.iter().all(|l| l.port == lease.port()));
    assert!(reg.get_by_port(lease.port()).unwrap().unwrap().bound);
    for l in &ls {
        let listener: TcpListener = l.socket.try_clone().unwrap().into();
        let mut c = TcpStream::connect((l.address, l.port)).unwrap();
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(b"hi").unwrap();
        let mut buf = [0u8; 2];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
    }
    // Close-on-exec, every one.
    for l in &ls {
        // SAFETY: F_GETFD on a descriptor we own.
        let flags = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&l.socket), libc::F_GETFD) };
        assert!(flags & libc::FD_CLOEXEC != 0);
    }
}

#[test]
fn reuse_port_workers_share_the_connections_and_udp_reaches_each_address() {
    let (_d, reg) = temp_registry();
    let opts = ListenOptions { reuse_port: true, workers: 4, ..ListenOptions::on(["127.0.0.1".parse().unwrap()]) };
    let (lease, ls) = reg.allocate_listeners(&req_in(29020, 20), &opts).unwrap();
    assert_eq!(ls.len(), 4);
    let port = lease.port();
    let listeners: Vec<TcpListener> = ls.iter().map(|l| l.socket.try_clone().unwrap().into()).collect();
    for l in &listeners {
        l.set_nonblocking(true).unwrap();
    }
    let mut per = [0usize; 4];
    for _ in 0..400 {
        let _c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        // The kernel queued it on one of the four: find which.
        let mut got = None;
        for _ in 0..1000 {
            got = listeners.iter().position(|l| l.accept().is_ok());
            if got.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        per[got.expect("a connection reached no worker")] += 1;
    }
    assert!(per.iter().all(|&n| n > 0), "400 connections over 4 workers: {per:?}");
    // TCP and UDP on two addresses: a datagram reaches each.
    let mut addrs: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap()];
    if v6() {
        addrs.push("::1".parse().unwrap());
    }
    let opts = ListenOptions::on(addrs.clone());
    let (lease, ls) = reg.allocate_listeners(&req_in(29040, 20).protocols(Protocols::BOTH), &opts).unwrap();
    assert_eq!(ls.len(), addrs.len() * 2);
    for l in ls.iter().filter(|l| l.protocol == Protocols::UDP) {
        let sock: UdpSocket = l.socket.try_clone().unwrap().into();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let client = UdpSocket::bind((l.address, 0)).unwrap();
        client.send_to(b"ping", (l.address, lease.port())).unwrap();
        let mut buf = [0u8; 8];
        let (n, _) = sock.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
    }
}

#[test]
fn a_set_is_all_or_nothing() {
    let (_d, reg) = temp_registry();
    // 29060 busy on 127.0.0.1 only: the set skips it for the next port.
    let _busy = TcpListener::bind("127.0.0.1:29060").unwrap();
    let opts = ListenOptions::on(["127.0.0.1".parse().unwrap()]);
    let (lease, _ls) =
        reg.allocate_listeners(&req_in(29060, 2).strategy(portmgr::Strategy::Sequential), &opts).unwrap();
    assert_eq!(lease.port(), 29061);
    // An address that is not this host's: an error, and nothing held or bound.
    let bad = ListenOptions::on(["127.0.0.1".parse().unwrap(), "192.0.2.1".parse().unwrap()]);
    let e = reg.allocate_listeners(&req_in(29070, 5), &bad).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
    assert!(reg.list().unwrap().iter().all(|i| !(29070..29075).contains(&i.port)));
    assert!((29070..29075).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()), "a socket was left bound");
    // Workers without reuse_port, a duplicate address: refused up front.
    let e = reg.allocate_listeners(&req_in(29070, 5), &ListenOptions { workers: 2, ..ListenOptions::default() }).unwrap_err();
    assert!(e.to_string().contains("reuse_port"), "{e}");
    let dup = ListenOptions::on(["127.0.0.1".parse().unwrap(), "127.0.0.1".parse().unwrap()]);
    assert_eq!(reg.allocate_listeners(&req_in(29070, 5), &dup).unwrap_err().code(), ErrorCode::InvalidArgument);
}

#[test]
fn unix_paths_are_fresh_private_and_removed_when_released() {
    let (d, reg) = temp_registry();
    let mut a = reg.unix_socket_path(Some("db")).unwrap();
    let b = reg.unix_socket_path(Some("db")).unwrap();
    assert_ne!(a.path(), b.path());
    let dir = a.path().parent().unwrap().to_path_buf();
    assert_eq!(dir, d.path().join("reg").join("sockets"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    assert!(a.path().file_name().unwrap().to_str().unwrap().starts_with("db-"));
    let (mut bound, listener) = reg.bound_unix_socket(Some("api")).unwrap();
    let mut c = UnixStream::connect(bound.path()).unwrap();
    let (mut s, _) = listener.accept().unwrap();
    s.write_all(b"ok").unwrap();
    let mut buf = [0u8; 2];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ok");
    let path = bound.path().to_path_buf();
    bound.release().unwrap();
    assert!(!path.exists(), "released, the socket file stays");
    a.release().unwrap();
    a.release().unwrap();
    drop(b);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "paths left behind");
    // Names are checked; a registry directory too deep for sun_path is a clear error.
    assert_eq!(reg.unix_socket_path(Some("bad\nname")).unwrap_err().code(), ErrorCode::InvalidArgument);
    let deep = d.path().join("x".repeat(60)).join("y".repeat(40));
    let e = Registry::open(&deep).unwrap().unix_socket_path(Some("db")).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    assert!(e.to_string().contains("107") && e.to_string().contains("shorter registry directory"), "{e}");
}

#[test]
fn paths_of_a_sigkilled_holder_are_cleaned_at_the_next_request() {
    let (d, reg) = temp_registry();
    let dir = d.path().join("reg");
    let mut kid = spawn_role("child_role", &dir, "unix-hold 3");
    let paths: Vec<String> = {
        use std::io::BufRead;
        let out = kid.stdout.as_mut().unwrap();
        let mut v = Vec::new();
        for line in std::io::BufReader::new(out).lines() {
            let line = line.unwrap();
            if line == "READY" {
                break;
            }
            if let Some(p) = line.strip_prefix("PATH ") {
                v.push(p.to_string());
            }
        }
        v
    };
    assert_eq!(paths.len(), 3);
    assert!(paths.iter().all(|p| std::path::Path::new(p).exists()));
    // Alive: the next request leaves them alone.
    let _mine = reg.unix_socket_path(None).unwrap();
    assert!(paths.iter().all(|p| std::path::Path::new(p).exists()));
    kid.kill().unwrap();
    kid.wait().unwrap();
    let _next = reg.unix_socket_path(None).unwrap();
    assert!(paths.iter().all(|p| !std::path::Path::new(p).exists()), "a dead holder's paths were not cleaned");
}

#[test]
fn eight_processes_times_100_paths_no_two_alike() {
    let (d, _reg) = temp_registry();
    let dir = d.path().join("reg");
    let mut kids: Vec<_> = (0..8).map(|_| spawn_role("child_role", &dir, "unix-hold 100")).collect();
    let mut all = Vec::new();
    for k in &mut kids {
        use std::io::BufRead;
        for line in std::io::BufReader::new(k.stdout.as_mut().unwrap()).lines() {
            let line = line.unwrap();
            if line == "READY" {
                break;
            }
            if let Some(p) = line.strip_prefix("PATH ") {
                all.push(p.to_string());
            }
        }
    }
    assert_eq!(all.len(), 800);
    let set: std::collections::HashSet<&String> = all.iter().collect();
    assert_eq!(set.len(), 800, "two processes got the same path");
    for mut k in kids {
        drop(k.stdin.take());
        assert!(k.wait().unwrap().success());
    }
}

/// The entry point of child processes; a no-op in a normal test run.
#[test]
fn child_role() {
    let Ok(role) = std::env::var("PORTMGR_TEST_ROLE") else { return };
    let reg = Registry::open_default().unwrap();
    let mut words = role.split_whitespace();
    match words.next().unwrap() {
        // unix-hold N: take N bound socket paths, print them, wait for stdin EOF.
        "unix-hold" => {
            let n: usize = words.next().unwrap().parse().unwrap();
            let held: Vec<_> = (0..n).map(|_| reg.bound_unix_socket(Some("kid")).unwrap()).collect();
            let mut o = std::io::stdout().lock();
            writeln!(o).unwrap();
            for (p, _) in &held {
                writeln!(o, "PATH {}", p.path().display()).unwrap();
            }
            writeln!(o, "READY").unwrap();
            o.flush().unwrap();
            drop(o);
            let mut s = String::new();
            let _ = std::io::stdin().read_line(&mut s);
        }
        other => panic!("unknown role {other}"),
    }
}
