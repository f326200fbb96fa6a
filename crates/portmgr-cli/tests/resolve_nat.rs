//! Issue 19 through the real `portmgr` binary: `portmgr resolve` against a real dnsmasq
//! and `portmgr nat external-ip` against a real coturn, both started here on 127.0.0.1.
//! Ports 17100-17199 (17140-17141: `nat map --follow`).

#[path = "../../../tests/netserv/mod.rs"]
mod netserv;

use std::process::{Command, Output};

use netserv::{Coturn, Dnsmasq};

fn portmgr(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_portmgr")).env("PORTMGR_DIR", dir.path().join("registry")).args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "status {:?}, stderr: {}", o.status, String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn resolve_prints_endpoints_picks_and_json() {
    let d = Dnsmasq::start(
        17100,
        60,
        "127.0.0.21 a.example.test\n127.0.0.22 b.example.test\n::22 b.example.test\n",
        &["_db._tcp.example.test,a.example.test,5001,20,5", "_db._tcp.example.test,b.example.test,5002,10,5"],
    );
    let server = d.addr().to_string();
    let all = stdout(&portmgr(&["resolve", "_db._tcp.example.test", "--server", &server]));
    assert_eq!(
        all,
        "127.0.0.22:5002 b.example.test priority=10 weight=5\n[::22]:5002 b.example.test priority=10 weight=5\n127.0.0.21:5001 a.example.test priority=20 weight=5\n"
    );
    let pick = stdout(&portmgr(&["resolve", "_db._tcp.example.test", "--server", &server, "--policy", "priority"]));
    assert!(pick.contains(":5002 b.example.test"), "{pick}");
    let j: serde_json::Value =
        serde_json::from_str(&stdout(&portmgr(&["resolve", "a.example.test:80", "--server", &server, "--json"]))).unwrap();
    assert_eq!(j["endpoints"][0]["address"], "127.0.0.21");
    assert_eq!(j["pick"]["port"], 80);
    // A name that does not exist: status 5, the message says NXDOMAIN.
    let o = portmgr(&["resolve", "nope.example.test:80", "--server", &server]);
    assert_eq!(o.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&o.stderr).contains("NXDOMAIN"));
    // A bad policy is a usage error.
    assert_eq!(portmgr(&["resolve", "a.example.test:80", "--policy", "random"]).status.code(), Some(2));
}

#[test]
fn nat_external_ip_reports_the_local_port_as_coturn_sees_it() {
    let c = Coturn::start(17150);
    let server = c.addr().to_string();
    assert_eq!(stdout(&portmgr(&["nat", "external-ip", "--stun", &server, "--local-port", "17151"])), "127.0.0.1:17151\n");
    let j: serde_json::Value =
        serde_json::from_str(&stdout(&portmgr(&["nat", "external-ip", "--stun", &server, "--json"]))).unwrap();
    assert_eq!(j["address"], "127.0.0.1");
    assert_eq!(j["port"], j["local_port"]);
}

/// `portmgr` run inside namespace `ns` with `ip netns exec`.
fn portmgr_in(ns: &str, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new("ip")
        .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_portmgr")])
        .env("PORTMGR_DIR", dir.path().join("registry"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn nat_map_and_unmap_through_a_real_miniupnpd() {
    use std::io::Write;
    use std::net::TcpListener;

    let lab = netserv::NatLab::start(5);
    let c = lab.ns("c");
    let listener = lab.run_in("c", || TcpListener::bind("0.0.0.0:17130").unwrap());
    let server = std::thread::spawn(move || {
        if let Some(s) = listener.incoming().next() {
            let _ = s.unwrap().write_all(b"hello");
        }
    });
    let j: serde_json::Value =
        serde_json::from_str(&stdout(&portmgr_in(&c, &["nat", "map", "17130", "--lifetime", "10m", "--json"]))).unwrap();
    assert_eq!(j["gateway"], netserv::LAB_ROUTER_INSIDE, "the default route's gateway");
    assert_eq!(j["external_address"], netserv::LAB_ROUTER_OUTSIDE);
    assert_eq!(j["external_port"], 17130);
    let outside = |lab: &netserv::NatLab| lab.connect_from_outside(17130);
    assert_eq!(outside(&lab).unwrap(), b"hello");
    server.join().unwrap();
    let plain = stdout(&portmgr_in(&c, &["nat", "unmap", "17130", "--gateway", netserv::LAB_ROUTER_INSIDE]));
    assert_eq!(plain, "unmapped 17130 (tcp)\n");
    assert_eq!(outside(&lab).unwrap_err(), std::io::ErrorKind::ConnectionRefused);
    // The same through UPnP IGD, asked for by name.
    let listener = lab.run_in("c", || TcpListener::bind("0.0.0.0:17131").unwrap());
    let server = std::thread::spawn(move || {
        if let Some(s) = listener.incoming().next() {
            let _ = s.unwrap().write_all(b"hello");
        }
    });
    let plain = stdout(&portmgr_in(&c, &["nat", "map", "17131", "--protocol", "upnp"]));
    assert_eq!(plain, format!("{}:17131 (tcp) -> this host's port 17131 for 3600 s\n", netserv::LAB_ROUTER_OUTSIDE));
    let reach = |port: u16| lab.connect_from_outside(port).map(drop);
    assert_eq!(reach(17131), Ok(()));
    server.join().unwrap();
    stdout(&portmgr_in(&c, &["nat", "unmap", "17131", "--protocol", "upnp"]));
    assert_eq!(reach(17131), Err(std::io::ErrorKind::ConnectionRefused));
    // An unknown protocol is a usage error.
    assert_eq!(portmgr_in(&c, &["nat", "map", "17131", "--protocol", "pcp"]).status.code(), Some(2));
}

#[test]
fn nat_map_follow_renews_until_the_lease_is_released_and_stops_on_sigterm() {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::process::Stdio;
    use std::time::Duration;

    let lab = netserv::NatLab::start(12);
    let c = lab.ns("c");
    let dir = tempfile::tempdir().unwrap();
    let reg = dir.path().join("registry");
    let cmd = |args: &[&str]| {
        let mut k = Command::new("ip");
        k.args(["netns", "exec", &c, env!("CARGO_BIN_EXE_portmgr")]).env("PORTMGR_DIR", &reg).args(args);
        k
    };
    let outside = |port: u16| lab.connect_from_outside(port);
    // --follow needs a lease to follow.
    let o = cmd(&["nat", "map", "17140", "--follow"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not held by a lease") && err.contains("portmgr alloc --preferred 17140 --required"), "{err}");

    let ids: Vec<String> = [17140, 17141]
        .iter()
        .map(|p| {
            let out = stdout(&cmd(&["alloc", "--preferred", &p.to_string(), "--required", "--ttl", "1h", "--json"]).output().unwrap());
            let j: serde_json::Value = serde_json::from_str(&out).unwrap();
            j["lease_id"].to_string()
        })
        .collect();
    // Allocated first (probed free); then every connection to 17140 or 17141 in the client namespace is answered "hello".
    for port in [17140u16, 17141] {
        let l = lab.run_in("c", move || TcpListener::bind(("0.0.0.0", port)).unwrap());
        std::thread::spawn(move || {
            for s in l.incoming() {
                let _ = s.unwrap().write_all(b"hello");
            }
        });
    }
    let start = |port: &str| {
        let mut child = cmd(&["nat", "map", port, "--protocol", "natpmp", "--lifetime", "2s", "--follow", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        (child, lines, first)
    };

    // Released => the follower deletes the mapping and exits 0.
    let (mut child, mut lines, first) = start("17140");
    assert_eq!((first["lease_id"].to_string(), first["method"].as_str(), first["lifetime_s"].as_u64()), (ids[0].clone(), Some("natpmp"), Some(2)));
    std::thread::sleep(Duration::from_secs(5)); // past two lifetimes: renewed
    assert_eq!(outside(17140).unwrap(), b"hello");
    stdout(&cmd(&["release", "17140"]).output().unwrap());
    let last: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!((last["state"].as_str(), last["error"].is_null()), (Some("lease_ended"), true), "{last}");
    assert!(last["renewals"].as_u64().unwrap() >= 3, "{last}");
    assert!(child.wait().unwrap().success());
    assert_eq!(outside(17140).unwrap_err(), std::io::ErrorKind::ConnectionRefused);

    // SIGTERM => deleted, status 0, the lease untouched.
    let (mut child, mut lines, _) = start("17141");
    assert_eq!(outside(17141).unwrap(), b"hello");
    // SAFETY: kill(2) on our own child's pid (`ip netns exec` execs portmgr).
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let last: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(last["state"], "deleted", "{last}");
    assert!(child.wait().unwrap().success());
    assert_eq!(outside(17141).unwrap_err(), std::io::ErrorKind::ConnectionRefused);
    assert!(stdout(&cmd(&["list", "--port", "17141"]).output().unwrap()).contains("17141"));
}
