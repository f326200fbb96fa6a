//! Bench-only driver for `bench/run.py`: the Rust peers (crates.io `portpicker`,
//! `openport`'s `PortReservation`), portmgr's Rust API and the kernel's `bind(0)`.
//!
//! It speaks the same line protocol as `bench/peers.py` and `bench/peers_c.c`:
//!
//! * `latency PEER:N ...`: N timed "give me a port" calls per peer, interleaved in rounds;
//!   prints one JSON object `{peer: {median_us, p99_us, n}}`.
//! * `collide PEER tcp|udp N`: prints `READY`, waits for a line, takes N ports, only then
//!   binds them all on 127.0.0.1 and holds them; prints a JSON result line, waits for a
//!   line, exits.
//! * `burst PEER M`: takes one port (warm-up), prints `READY`, waits for a line, takes M
//!   ports (held), prints `DONE <start> <end>` (CLOCK_MONOTONIC seconds), waits, exits.
//! * `hold N` (portmgr, `PORTMGR_DIR`): holds N ports of 1024-65535, prints `READY`, waits.
//! * `held-latency N DIR...`: N timed `allocate` calls on each registry directory,
//!   interleaved (release untimed); prints `{DIR: {median_us, p99_us, n}}`.

use std::io::{BufRead, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use portmgr::{Lease, PortRange, Protocols, Registry, Request};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const ROUNDS: usize = 20;

#[derive(Clone, Copy, PartialEq)]
enum Proto {
    Tcp,
    Udp,
}

fn sock(proto: Proto) -> Socket {
    match proto {
        Proto::Tcp => Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)),
        Proto::Udp => Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)),
    }
    .unwrap()
}

fn loopback(port: u16) -> SockAddr {
    SockAddr::from(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
}

/// The kernel's own "give me a port": bind 127.0.0.1:0, read the port, close.
fn bind0(proto: Proto) -> u16 {
    let s = sock(proto);
    s.bind(&loopback(0)).unwrap();
    s.local_addr().unwrap().as_socket().unwrap().port()
}

/// One peer, with what it keeps between calls; `take` returns a port (or None) and
/// keeps whatever the peer hands back (a portmgr lease) in `held`.
enum Peer {
    Bind0,
    Portpicker,
    Openport(openport::PortReservation),
    Portmgr(Registry),
}

impl Peer {
    fn new(name: &str) -> Peer {
        match name {
            "bind0" => Peer::Bind0,
            "portpicker" => Peer::Portpicker,
            // What a user gets from `PortReservation::default()`: 15000..65535, first fit.
            "openport" => Peer::Openport(openport::PortReservation::default()),
            "portmgr" => Peer::Portmgr(Registry::open_default().expect("open registry")),
            _ => panic!("unknown peer {name}"),
        }
    }

    fn take(&self, proto: Proto, held: &mut Vec<Lease>) -> Option<u16> {
        match self {
            Peer::Bind0 => Some(bind0(proto)),
            Peer::Portpicker => portpicker::pick_unused_port(),
            Peer::Openport(r) => r.reserve_port(),
            Peer::Portmgr(reg) => {
                let p = if proto == Proto::Tcp {
                    Protocols::TCP
                } else {
                    Protocols::UDP
                };
                let lease = reg.allocate(&Request::new().protocols(p)).ok()?;
                let port = lease.port();
                held.push(lease);
                Some(port)
            }
        }
    }

    /// Undo a latency call outside the timed region, so that call N+1 sees the state
    /// call 1 saw (openport would otherwise scan further each time; portmgr would fill).
    fn untake(&self, port: Option<u16>, held: &mut Vec<Lease>) {
        match self {
            Peer::Openport(r) => {
                if let Some(p) = port {
                    r.release_port(p)
                }
            }
            Peer::Portmgr(_) => held.clear(),
            _ => {}
        }
    }
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn stats(mut v: Vec<f64>) -> serde_json::Value {
    let n = v.len();
    if n == 0 {
        return serde_json::json!({"median_us": 0.0, "p99_us": 0.0, "n": 0});
    }
    serde_json::json!({"median_us": percentile(&mut v, 0.5), "p99_us": percentile(&mut v, 0.99), "n": n})
}

fn read_line() -> String {
    let mut s = String::new();
    let _ = std::io::stdin().lock().read_line(&mut s);
    s
}

fn say(s: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{s}").unwrap();
    out.flush().unwrap();
}

fn latency(specs: &[String]) {
    let peers: Vec<(String, Peer, usize)> = specs
        .iter()
        .map(|s| {
            let (name, n) = s.split_once(':').expect("PEER:N");
            (name.to_string(), Peer::new(name), n.parse().unwrap())
        })
        .collect();
    let mut held = Vec::new();
    let mut samples: Vec<Vec<f64>> = peers.iter().map(|p| Vec::with_capacity(p.2)).collect();
    let mut errors = vec![0usize; peers.len()];
    for (_, p, n) in &peers {
        for _ in 0..(n / 10).max(5) {
            let port = p.take(Proto::Tcp, &mut held);
            p.untake(port, &mut held);
        }
    }
    for _ in 0..ROUNDS {
        for (i, (_, p, n)) in peers.iter().enumerate() {
            for _ in 0..(n / ROUNDS).max(1) {
                let t = Instant::now();
                let port = p.take(Proto::Tcp, &mut held);
                let dt = t.elapsed().as_secs_f64() * 1e6;
                p.untake(port, &mut held);
                match port {
                    Some(_) => samples[i].push(dt),
                    None => errors[i] += 1, // a failed call is counted, not timed
                }
            }
        }
    }
    let mut out = serde_json::Map::new();
    for (((name, _, _), s), e) in peers.iter().zip(samples).zip(errors) {
        let mut v = stats(s);
        v["errors"] = e.into();
        out.insert(name.clone(), v);
    }
    say(&serde_json::Value::Object(out).to_string());
}

fn errno_name(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EADDRINUSE) => "EADDRINUSE".into(),
        Some(libc::EACCES) => "EACCES".into(),
        Some(libc::EADDRNOTAVAIL) => "EADDRNOTAVAIL".into(),
        Some(n) => format!("errno {n}"),
        None => e.to_string(),
    }
}

fn collide(peer: &str, proto: &str, n: usize) {
    let proto = if proto == "udp" {
        Proto::Udp
    } else {
        Proto::Tcp
    };
    let p = Peer::new(peer);
    say("READY");
    read_line();
    let mut held = Vec::new();
    let mut ports = Vec::with_capacity(n);
    let mut pick_errors = 0;
    let t = Instant::now();
    for _ in 0..n {
        match p.take(proto, &mut held) {
            Some(port) => ports.push(port),
            None => pick_errors += 1,
        }
    }
    let pick_s = t.elapsed().as_secs_f64();
    // Only now bind them all, as a server started later would: TCP with SO_REUSEADDR
    // (what servers set) and listening; UDP plainly (SO_REUSEADDR would let UDP share).
    let mut sockets = Vec::with_capacity(n);
    let mut errors: std::collections::BTreeMap<String, usize> = Default::default();
    for &port in &ports {
        let s = sock(proto);
        if proto == Proto::Tcp {
            s.set_reuse_address(true).unwrap();
        }
        let r = s.bind(&loopback(port)).and_then(|_| {
            if proto == Proto::Tcp {
                s.listen(128)
            } else {
                Ok(())
            }
        });
        match r {
            Ok(()) => sockets.push(s),
            Err(e) => *errors.entry(errno_name(&e)).or_default() += 1,
        }
    }
    say(&serde_json::json!({"ports": ports, "pick_errors": pick_errors, "bind_errors": errors, "pick_s": pick_s}).to_string());
    read_line();
    drop(sockets);
    drop(held);
}

fn burst(peer: &str, m: usize) {
    let p = Peer::new(peer);
    let mut held = Vec::with_capacity(m + 1);
    p.take(Proto::Tcp, &mut held).expect("no port"); // warm-up: claims the owner slot
    say("READY");
    read_line();
    let t = monotonic();
    for _ in 0..m {
        p.take(Proto::Tcp, &mut held).expect("no port");
    }
    say(&format!("DONE {t} {}", monotonic()));
    read_line();
}

/// CLOCK_MONOTONIC in seconds: the same clock in every driver and process.
fn monotonic() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn hold(n: usize) {
    let reg = Registry::open_default().expect("open registry");
    let range = PortRange::new(1024, 65535).unwrap();
    let mut leases = Vec::new();
    let mut left = n;
    while left > 0 {
        let k = left.min(portmgr::registry::MAX_COUNT);
        leases.push(
            reg.allocate(&Request::new().range(range.clone()).count(k))
                .expect("hold"),
        );
        left -= k;
    }
    say("READY");
    read_line();
    drop(leases);
}

fn held_latency(n: usize, dirs: &[String]) {
    let regs: Vec<Registry> = dirs
        .iter()
        .map(|d| Registry::open(d).expect("open registry"))
        .collect();
    let req = Request::new();
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(n); regs.len()];
    for r in &regs {
        for _ in 0..(n / 10).max(5) {
            drop(r.allocate(&req).unwrap());
        }
    }
    for _ in 0..ROUNDS {
        for (i, r) in regs.iter().enumerate() {
            for _ in 0..(n / ROUNDS).max(1) {
                let t = Instant::now();
                let lease = r.allocate(&req).unwrap();
                samples[i].push(t.elapsed().as_secs_f64() * 1e6);
                drop(lease);
            }
        }
    }
    let mut out = serde_json::Map::new();
    for (d, s) in dirs.iter().zip(samples) {
        out.insert(d.clone(), stats(s));
    }
    say(&serde_json::Value::Object(out).to_string());
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("latency") => latency(&args[1..]),
        Some("collide") => collide(&args[1], &args[2], args[3].parse().unwrap()),
        Some("burst") => burst(&args[1], args[2].parse().unwrap()),
        Some("hold") => hold(args[1].parse().unwrap()),
        Some("held-latency") => held_latency(args[1].parse().unwrap(), &args[2..]),
        _ => {
            eprintln!("usage: see the module doc of bench/peers/src/main.rs");
            std::process::exit(2);
        }
    }
}
