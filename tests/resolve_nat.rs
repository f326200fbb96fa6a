//! Issue 19: the resolver against a real dnsmasq and STUN against a real coturn, both
//! started here on 127.0.0.1 (see tests/netserv). Ports 17000-17099.

mod netserv;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use netserv::{Coturn, Dnsmasq};
use portmgr::ErrorCode;
use portmgr::nat::{StunOptions, stun_binding, stun_external_address};
use portmgr::resolve::{Policy, Resolver, ResolverOptions};

const HOSTS: &str = "127.0.0.11 web.example.test\n::11 web.example.test\n\
127.0.0.21 a.example.test\n127.0.0.22 b.example.test\n127.0.0.23 c.example.test\n";
const SRV: &[&str] = &[
    "_db._tcp.example.test,a.example.test,5001,10,30",
    "_db._tcp.example.test,b.example.test,5002,10,10",
    "_db._tcp.example.test,c.example.test,5003,20,60",
];

fn resolver(d: &Dnsmasq, policy: Policy) -> Resolver {
    Resolver::new(ResolverOptions::new().server(d.addr()).policy(policy).timeout(Duration::from_secs(1))).unwrap()
}

fn addrs(r: &Resolver, name: &str) -> Vec<String> {
    r.resolve(name).unwrap().iter().map(|e| e.addr.to_string()).collect()
}

#[test]
fn a_aaaa_and_srv_records_give_the_right_endpoints() {
    let d = Dnsmasq::start(17000, 60, HOSTS, SRV);
    let r = resolver(&d, Policy::RoundRobin);
    assert_eq!(addrs(&r, "web.example.test:8080"), ["127.0.0.11:8080", "[::11]:8080"]);
    let srv = r.resolve("_db._tcp.example.test").unwrap();
    let got: Vec<_> = srv.iter().map(|e| (e.target.as_str(), e.addr.to_string(), e.priority, e.weight)).collect();
    assert_eq!(
        got,
        [
            ("a.example.test", "127.0.0.21:5001".to_string(), 10, 30),
            ("b.example.test", "127.0.0.22:5002".to_string(), 10, 10),
            ("c.example.test", "127.0.0.23:5003".to_string(), 20, 60),
        ]
    );
    // Literals need no DNS; a missing port is a clear invalid argument.
    assert_eq!(addrs(&r, "127.0.0.5:9"), ["127.0.0.5:9"]);
    assert_eq!(r.resolve("web.example.test").unwrap_err().code(), ErrorCode::InvalidArgument);
    let e = r.resolve("nope.example.test:1").unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound, "{e}");
    assert!(e.to_string().contains("NXDOMAIN"), "{e}");
}

#[test]
fn the_cache_honours_the_ttl_and_its_bounds() {
    let d = Dnsmasq::start(17001, 2, HOSTS, SRV);
    let r = resolver(&d, Policy::RoundRobin);
    assert_eq!(addrs(&r, "web.example.test:80")[0], "127.0.0.11:80");
    let asked = d.queries("A", "web.example.test");
    assert_eq!(asked, 1);
    d.set_hosts(&HOSTS.replace("127.0.0.11", "127.0.0.12"));
    // A fresh resolver sees the change at once: the server has it.
    assert_eq!(addrs(&resolver(&d, Policy::RoundRobin), "web.example.test:80")[0], "127.0.0.12:80");
    // The cached one does not, within the TTL, and does not ask.
    let t = Instant::now();
    for _ in 0..50 {
        assert_eq!(addrs(&r, "web.example.test:80")[0], "127.0.0.11:80");
    }
    assert!(t.elapsed() < Duration::from_millis(1500));
    assert_eq!(d.queries("A", "web.example.test"), 2, "only the fresh resolver asked");
    std::thread::sleep(Duration::from_millis(2300));
    assert_eq!(addrs(&r, "web.example.test:80")[0], "127.0.0.12:80", "asked again after the TTL");
    assert_eq!(d.queries("A", "web.example.test"), 3);

    // min_ttl raises the 2 s TTL to 4 s.
    let slow = Resolver::new(ResolverOptions::new().server(d.addr()).ttl_bounds(Duration::from_secs(4), Duration::from_secs(60))).unwrap();
    assert_eq!(addrs(&slow, "web.example.test:80")[0], "127.0.0.12:80");
    d.set_hosts(&HOSTS.replace("127.0.0.11", "127.0.0.13"));
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(addrs(&slow, "web.example.test:80")[0], "127.0.0.12:80", "min_ttl keeps it past the record's TTL");
    std::thread::sleep(Duration::from_millis(1800));
    assert_eq!(addrs(&slow, "web.example.test:80")[0], "127.0.0.13:80");

    // max_ttl lowers it to 0.5 s.
    let quick = Resolver::new(ResolverOptions::new().server(d.addr()).ttl_bounds(Duration::ZERO, Duration::from_millis(500))).unwrap();
    assert_eq!(addrs(&quick, "web.example.test:80")[0], "127.0.0.13:80");
    d.set_hosts(&HOSTS.replace("127.0.0.11", "127.0.0.14"));
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(addrs(&quick, "web.example.test:80")[0], "127.0.0.14:80");
    assert!(quick.queries() >= 4, "A and AAAA, twice");
}

#[test]
fn nxdomain_is_cached_for_the_negative_time() {
    let d = Dnsmasq::start(17002, 60, HOSTS, SRV);
    let r = Resolver::new(ResolverOptions::new().server(d.addr()).negative_ttl(Duration::from_secs(3))).unwrap();
    assert_eq!(r.resolve("late.example.test:80").unwrap_err().code(), ErrorCode::NotFound);
    let asked = d.queries("A", "late.example.test");
    d.set_hosts(&format!("{HOSTS}127.0.0.31 late.example.test\n"));
    assert_eq!(addrs(&resolver(&d, Policy::RoundRobin), "late.example.test:80"), ["127.0.0.31:80"]);
    let t = Instant::now();
    assert_eq!(r.resolve("late.example.test:80").unwrap_err().code(), ErrorCode::NotFound, "still negative");
    assert_eq!(d.queries("A", "late.example.test"), asked + 1, "only the fresh resolver asked");
    std::thread::sleep(Duration::from_secs(3).saturating_sub(t.elapsed()) + Duration::from_millis(300));
    assert_eq!(addrs(&r, "late.example.test:80"), ["127.0.0.31:80"]);
}

fn share(counts: &HashMap<String, usize>, target: &str, n: usize) -> f64 {
    *counts.get(target).unwrap_or(&0) as f64 / n as f64
}

#[test]
fn each_policy_follows_its_rule_over_10000_picks() {
    let d = Dnsmasq::start(17003, 60, HOSTS, SRV);
    let n = 10_000;
    // Round-robin cycles exactly through the sorted list.
    let r = resolver(&d, Policy::RoundRobin);
    let all = r.resolve("_db._tcp.example.test").unwrap();
    for i in 0..n {
        assert_eq!(r.pick("_db._tcp.example.test").unwrap(), all[i % all.len()]);
    }
    // Weighted: within 3 points of 30/10/60 over all records.
    let w = resolver(&d, Policy::Weighted);
    let mut counts = HashMap::new();
    for _ in 0..n {
        *counts.entry(w.pick("_db._tcp.example.test").unwrap().target).or_insert(0) += 1;
    }
    for (t, want) in [("a.example.test", 0.3), ("b.example.test", 0.1), ("c.example.test", 0.6)] {
        let got = share(&counts, t, n);
        assert!((got - want).abs() < 0.03, "{t}: {got} vs {want} ({counts:?})");
    }
    // Priority: never the priority-20 record while priority 10 ones exist; 3:1 by weight.
    let p = resolver(&d, Policy::Priority);
    let mut counts = HashMap::new();
    for _ in 0..n {
        *counts.entry(p.pick("_db._tcp.example.test").unwrap().target).or_insert(0) += 1;
    }
    assert_eq!(counts.get("c.example.test"), None, "{counts:?}");
    assert!((share(&counts, "a.example.test", n) - 0.75).abs() < 0.03, "{counts:?}");
    // The cache answered every pick: one SRV query per resolver.
    assert_eq!(d.queries("SRV", "_db._tcp.example.test"), 3);
}

#[test]
fn a_silent_dns_server_is_a_timeout() {
    let silent = UdpSocket::bind("127.0.0.1:17004").unwrap();
    let r = Resolver::new(ResolverOptions::new().server(silent.local_addr().unwrap()).timeout(Duration::from_millis(300))).unwrap();
    let t = Instant::now();
    let e = r.resolve("web.example.test:80").unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(matches!(e.code(), ErrorCode::Timeout | ErrorCode::Os), "{e}");
}

#[test]
fn stun_reports_the_local_address_and_port() {
    let c = Coturn::start(17050);
    let got = stun_binding(c.addr(), &StunOptions { local_port: Some(17051), ..Default::default() }).unwrap();
    assert_eq!(got.mapped, "127.0.0.1:17051".parse::<SocketAddr>().unwrap());
    assert_eq!(got.sends, 1);
    let any = stun_binding(c.addr(), &StunOptions::default()).unwrap();
    assert_eq!(any.mapped, SocketAddr::new("127.0.0.1".parse().unwrap(), any.local.port()));
    assert_eq!(stun_external_address(&format!("localhost:{}", c.port), Some(17052)).unwrap().to_string(), "127.0.0.1:17052");
}

/// A UDP "server" that drops every request, recording when each came.
type Reply = fn(&[u8]) -> Vec<u8>;

fn silent_server(port: u16, reply: Option<Reply>) -> std::thread::JoinHandle<Vec<Instant>> {
    let s = UdpSocket::bind(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            seen.push(Instant::now());
            if let Some(f) = reply {
                let _ = s.send_to(&f(&buf[..n]), from);
            }
        }
        seen
    })
}

#[test]
fn stun_retransmits_with_doubling_rto_then_times_out() {
    let server = silent_server(17060, None);
    let opts = StunOptions { rto: Duration::from_millis(50), ..Default::default() };
    assert_eq!(opts.total_timeout(), Duration::from_millis(3950));
    let t = Instant::now();
    let e = stun_binding("127.0.0.1:17060".parse().unwrap(), &opts).unwrap_err();
    let took = t.elapsed();
    assert_eq!(e.code(), ErrorCode::Timeout, "{e}");
    assert!(took >= Duration::from_millis(3900) && took < Duration::from_millis(4800), "{took:?}");
    let seen = server.join().unwrap();
    assert_eq!(seen.len(), 7, "Rc = 7 sends");
    // Gaps 50, 100, 200, ... ms: each about twice the one before.
    for w in seen.windows(3) {
        let (a, b) = (w[1] - w[0], w[2] - w[1]);
        assert!(b > a * 3 / 2 && b < a * 3, "gaps {a:?} then {b:?}");
    }
}

#[test]
fn a_reply_with_another_transaction_id_is_not_the_answer() {
    // Answers each request with a success response for another transaction.
    let _server = silent_server(17061, Some(|req: &[u8]| {
        let mut r = req.to_vec();
        r[0..2].copy_from_slice(&[0x01, 0x01]);
        r[19] ^= 0xff;
        r
    }));
    let opts = StunOptions { rto: Duration::from_millis(20), ..Default::default() };
    let e = stun_binding("127.0.0.1:17061".parse().unwrap(), &opts).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Timeout);
    assert!(e.to_string().contains("7 datagram(s) that were not its answer were ignored"), "{e}");
}
