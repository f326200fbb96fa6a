//! B1: the probe truth table. A holder socket of every kind sits on a port; the probe
//! (and the registry, which uses it) must never call that port free when a consumer could
//! not bind it. Consumer = a plain bind (no reuse options) on the dual-stack wildcard, and
//! a plain IPv4 bind on 127.0.0.1, each on its own.
//!
//! Holder: {TCP, UDP} x {127.0.0.1, 0.0.0.0, ::1 v6only, [::] v6only, [::] dual-stack,
//! 127.0.0.2} x {plain, SO_REUSEADDR, SO_REUSEPORT} x {bound, listening, TIME_WAIT,
//! connected client} (listening and TIME_WAIT are TCP-only).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use portmgr::{Protocols, Registry, probe};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::util::*;

const START: u16 = 14650;

#[derive(Clone, Copy, Debug)]
enum Addr {
    V4Loop,
    V4Any,
    V6LoopOnly,
    V6AnyOnly,
    V6AnyDual,
    V4Loop2,
}

#[derive(Clone, Copy, Debug)]
enum Opt {
    Plain,
    ReuseAddr,
    ReusePort,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    Bound,
    Listening,
    TimeWait,
    ConnectedClient,
}

fn ip(a: Addr) -> IpAddr {
    match a {
        Addr::V4Loop => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Addr::V4Any => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Addr::V6LoopOnly => IpAddr::V6(Ipv6Addr::LOCALHOST),
        Addr::V6AnyOnly | Addr::V6AnyDual => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        Addr::V4Loop2 => IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
    }
}

fn sock(addr: Addr, udp: bool, opt: Opt) -> Socket {
    let ipa = ip(addr);
    let domain = if ipa.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let (ty, proto) = if udp { (Type::DGRAM, Protocol::UDP) } else { (Type::STREAM, Protocol::TCP) };
    let s = Socket::new(domain, ty, Some(proto)).unwrap();
    if ipa.is_ipv6() {
        s.set_only_v6(!matches!(addr, Addr::V6AnyDual)).unwrap();
    }
    match opt {
        Opt::Plain => {}
        Opt::ReuseAddr => s.set_reuse_address(true).unwrap(),
        Opt::ReusePort => s.set_reuse_port(true).unwrap(),
    }
    s
}

/// The loopback address a client uses to reach a socket bound to `addr`.
fn reach(addr: Addr) -> IpAddr {
    match addr {
        Addr::V4Any | Addr::V4Loop => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Addr::V4Loop2 => IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
        _ => IpAddr::V6(Ipv6Addr::LOCALHOST),
    }
}

/// Build the holder; returns the sockets to keep alive (None: combination not possible).
fn holder(addr: Addr, udp: bool, opt: Opt, state: State, port: u16) -> Option<Vec<Socket>> {
    let at = SockAddr::from(SocketAddr::new(ip(addr), port));
    match state {
        State::Bound => {
            let s = sock(addr, udp, opt);
            s.bind(&at).ok()?;
            Some(vec![s])
        }
        State::Listening => {
            let s = sock(addr, udp, opt);
            s.bind(&at).ok()?;
            s.listen(16).ok()?;
            Some(vec![s])
        }
        State::TimeWait => {
            // Server side closes first: its end (local port `port`) enters TIME_WAIT.
            let l = sock(addr, false, opt);
            l.bind(&at).ok()?;
            l.listen(16).ok()?;
            let c = Socket::new(if reach(addr).is_ipv4() { Domain::IPV4 } else { Domain::IPV6 }, Type::STREAM, None).unwrap();
            c.connect(&SockAddr::from(SocketAddr::new(reach(addr), port))).ok()?;
            let (srv, _) = l.accept().ok()?;
            drop(srv);
            drop(l);
            std::thread::sleep(Duration::from_millis(2));
            // Keep the client (in FIN_WAIT/CLOSE_WAIT on its own ephemeral port).
            Some(vec![c])
        }
        State::ConnectedClient => {
            // A client socket bound to `port` and connected to a listener elsewhere.
            let target = sock(match addr {
                Addr::V4Loop2 => Addr::V4Loop2,
                a if ip(a).is_ipv4() => Addr::V4Loop,
                _ => Addr::V6LoopOnly,
            }, udp, Opt::Plain);
            target.bind(&SockAddr::from(SocketAddr::new(reach(addr), 0))).ok()?;
            if !udp {
                target.listen(16).ok()?;
            }
            let t_addr = target.local_addr().ok()?;
            let c = sock(addr, udp, opt);
            c.bind(&at).ok()?;
            c.connect(&t_addr).ok()?;
            Some(vec![c, target])
        }
    }
}

/// Whether a consumer can bind `port`: dual-stack wildcard, and 127.0.0.1 (each alone).
fn consumer_can_bind(port: u16, udp: bool) -> (bool, bool) {
    let try_bind = |addr: Addr| {
        let s = sock(addr, udp, Opt::Plain);
        s.bind(&SockAddr::from(SocketAddr::new(ip(addr), port))).is_ok()
    };
    (try_bind(Addr::V6AnyDual), try_bind(Addr::V4Loop))
}

#[test]
fn probe_never_calls_a_port_free_that_a_consumer_cannot_bind() {
    let d = temp_dir();
    let reg = Registry::open(d.path().join("reg")).unwrap();
    let addrs = [Addr::V4Loop, Addr::V4Any, Addr::V6LoopOnly, Addr::V6AnyOnly, Addr::V6AnyDual, Addr::V4Loop2];
    let opts = [Opt::Plain, Opt::ReuseAddr, Opt::ReusePort];
    let states = [State::Bound, State::Listening, State::TimeWait, State::ConnectedClient];
    let mut port = START;
    let (mut cases, mut skipped, mut false_free, mut conservative) = (0, 0, Vec::new(), 0);
    for udp in [false, true] {
        for addr in addrs {
            for opt in opts {
                for state in states {
                    if udp && matches!(state, State::Listening | State::TimeWait) {
                        continue;
                    }
                    port += 1;
                    let Some(keep) = holder(addr, udp, opt, state, port) else {
                        skipped += 1;
                        eprintln!("could not build holder {udp} {addr:?} {opt:?} {state:?} on {port}");
                        continue;
                    };
                    cases += 1;
                    let proto = if udp { Protocols::UDP } else { Protocols::TCP };
                    let free = probe::is_free(port, proto).unwrap();
                    let (dual, v4) = consumer_can_bind(port, udp);
                    let reg_free = reg.allocate(&req_in(port, 1).protocols(proto)).is_ok();
                    let what = format!("{} {addr:?} {opt:?} {state:?} port {port}", if udp { "UDP" } else { "TCP" });
                    if (free || reg_free) && !(dual && v4) {
                        false_free.push(format!(
                            "{what}: probe free={free} registry free={reg_free}, consumer dual={dual} v4={v4}\n{}",
                            ss(port)
                        ));
                    }
                    if !free && dual && v4 {
                        conservative += 1;
                    }
                    drop(keep);
                }
            }
        }
    }
    eprintln!(
        "RESULT probe-table: cases={cases} not_buildable={skipped} false_free={} busy_but_bindable(conservative)={conservative}",
        false_free.len()
    );
    assert!(cases >= 100, "only {cases} holder cases could be built");
    assert!(false_free.is_empty(), "{} ports called free that a consumer cannot bind:\n{}", false_free.len(), false_free.join("\n"));
}
