//! Issue 19.3: NAT-PMP (RFC 6886) against a real miniupnpd (nftables backend) as the
//! gateway of a router namespace that masquerades a client namespace onto an outer
//! one, all made by this test (tests/netserv) and removed at the end. Ports
//! 17030-17059 (inside the namespaces only).

mod netserv;

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use netserv::{LAB_ROUTER_INSIDE, LAB_ROUTER_OUTSIDE, NatLab};
use portmgr::ErrorCode;
use portmgr::nat::natpmp::{self, MapProtocol, NatPmpOptions};

fn opts() -> NatPmpOptions {
    NatPmpOptions { gateway: Some(LAB_ROUTER_INSIDE.parse().unwrap()), ..Default::default() }
}

#[test]
fn natpmp_maps_reaches_the_inner_listener_and_unmaps() {
    let lab = NatLab::start(1);
    // The external address is the router's outer one.
    let ext = lab.run_in("c", || natpmp::external_address(&opts()).unwrap());
    assert_eq!(ext, LAB_ROUTER_OUTSIDE.parse::<Ipv4Addr>().unwrap());

    // A listener in the client namespace answers "hello" to each connection.
    let listener = lab.run_in("c", || TcpListener::bind("0.0.0.0:17030").unwrap());
    let server = std::thread::spawn(move || {
        listener.set_nonblocking(false).unwrap();
        for c in listener.incoming().take(1) {
            let _ = c.unwrap().write_all(b"hello");
        }
    });
    let m = lab.run_in("c", || natpmp::map(17030, MapProtocol::Tcp, 17031, Duration::from_secs(600), &opts()).unwrap());
    assert_eq!((m.internal_port, m.external_port, m.protocol), (17030, 17031, MapProtocol::Tcp));
    assert!(m.lifetime > Duration::ZERO && m.lifetime <= Duration::from_secs(600), "{m:?}");
    assert_eq!(lab.connect_from_outside(17031).unwrap(), b"hello");
    server.join().unwrap();

    // Renewing is mapping again: the same external port.
    let again = lab.run_in("c", || natpmp::map(17030, MapProtocol::Tcp, 17031, Duration::from_secs(600), &opts()).unwrap());
    assert_eq!(again.external_port, 17031);

    lab.run_in("c", || natpmp::unmap(17030, MapProtocol::Tcp, &opts()).unwrap());
    assert_eq!(lab.connect_from_outside(17031).unwrap_err(), std::io::ErrorKind::ConnectionRefused);
}

#[test]
fn a_dead_gateway_is_a_timeout_after_the_doubling_waits() {
    let lab = NatLab::start(2);
    // The outer namespace has no NAT-PMP server: asking 11.77.0.2 from there gets ICMP
    // port unreachable; a silent UDP socket on 5351 gets nothing at all.
    let silent = lab.run_in("o", || UdpSocket::bind("11.77.0.2:5351").unwrap());
    let o = NatPmpOptions { gateway: Some("11.77.0.2".parse().unwrap()), initial_timeout: Duration::from_millis(20), sends: 5 };
    let t = Instant::now();
    let e = lab.run_in("o", move || natpmp::external_address(&o).unwrap_err());
    let took = t.elapsed();
    drop(silent);
    assert_eq!(e.code(), ErrorCode::Timeout, "{e}");
    // 20 + 40 + 80 + 160 + 320 ms.
    assert!(took >= Duration::from_millis(600) && took < Duration::from_millis(1500), "{took:?}");
}

#[test]
fn the_default_gateway_is_read_from_the_routing_table() {
    let lab = NatLab::start(3);
    let gw = lab.run_in("c", || natpmp::default_gateway().unwrap());
    assert_eq!(gw, LAB_ROUTER_INSIDE.parse::<Ipv4Addr>().unwrap());
    // And without a gateway option the mapping goes there.
    let ext = lab.run_in("c", || natpmp::external_address(&NatPmpOptions::default()).unwrap());
    assert_eq!(ext.to_string(), LAB_ROUTER_OUTSIDE);
}

/// A listener in the client namespace at `port` that answers "hello" once.
fn hello_listener(lab: &NatLab, port: u16) -> std::thread::JoinHandle<()> {
    let listener = lab.run_in("c", move || TcpListener::bind(("0.0.0.0", port)).unwrap());
    std::thread::spawn(move || {
        if let Some(c) = listener.incoming().next() {
            let _ = c.unwrap().write_all(b"hello");
        }
    })
}

#[test]
fn upnp_igd_maps_reaches_the_inner_listener_and_unmaps() {
    use portmgr::nat::upnp::{self, UpnpOptions};
    let lab = NatLab::start(6);
    // Discovery by multicast SSDP (no gateway given).
    let ext = lab.run_in("c", || upnp::external_address(&UpnpOptions::default()).unwrap());
    assert_eq!(ext.to_string(), LAB_ROUTER_OUTSIDE);
    let server = hello_listener(&lab, 17035);
    let m = lab.run_in("c", || upnp::map(17035, MapProtocol::Tcp, 17036, Duration::from_secs(600), &UpnpOptions::default()).unwrap());
    assert_eq!((m.gateway.to_string().as_str(), m.external_port), (LAB_ROUTER_INSIDE, 17036));
    assert_eq!(lab.connect_from_outside(17036).unwrap(), b"hello");
    server.join().unwrap();
    // Unicast discovery of a given gateway, then DeletePortMapping.
    let o = UpnpOptions { gateway: Some(LAB_ROUTER_INSIDE.parse().unwrap()), ..Default::default() };
    lab.run_in("c", move || upnp::unmap(17036, MapProtocol::Tcp, &o).unwrap());
    assert_eq!(lab.connect_from_outside(17036).unwrap_err(), std::io::ErrorKind::ConnectionRefused);
}

#[test]
fn auto_falls_back_to_upnp_when_the_gateway_has_no_natpmp() {
    use portmgr::nat::{MapMethod, map_port, unmap_port};
    let lab = NatLab::start_with(7, false);
    let server = hello_listener(&lab, 17040);
    let t = Instant::now();
    let m = lab.run_in("c", || map_port(17040, MapProtocol::Tcp, MapMethod::Auto, None, Duration::from_secs(600)).unwrap());
    assert!(t.elapsed() < Duration::from_secs(5), "a closed NAT-PMP port ends NAT-PMP at once: {:?}", t.elapsed());
    assert_eq!(m.external_port, 17040);
    assert_eq!(lab.connect_from_outside(17040).unwrap(), b"hello");
    server.join().unwrap();
    // NAT-PMP alone says the port is closed.
    let e = lab.run_in("c", || map_port(17041, MapProtocol::Tcp, MapMethod::NatPmp, None, Duration::from_secs(60)).unwrap_err());
    assert!(e.to_string().contains("no NAT-PMP server"), "{e}");
    lab.run_in("c", || unmap_port(17040, MapProtocol::Tcp, MapMethod::Auto, None).unwrap());
    assert_eq!(lab.connect_from_outside(17040).unwrap_err(), std::io::ErrorKind::ConnectionRefused);
}

#[test]
fn stun_from_behind_the_router_reports_the_routers_outer_address() {
    use portmgr::nat::{StunOptions, stun_binding};
    let lab = NatLab::start(9);
    let coturn = netserv::Coturn::start_at(Some(&lab.ns("o")), "11.77.0.2", 17045);
    let server: std::net::SocketAddr = "11.77.0.2:17045".parse().unwrap();
    let opts = StunOptions { local_port: Some(17046), rto: Duration::from_millis(100), ..Default::default() };
    let got = lab.run_in("c", move || stun_binding(server, &opts).unwrap());
    // The router's outer address, not the client's 10.77.0.2.
    assert_eq!(got.mapped.ip().to_string(), LAB_ROUTER_OUTSIDE, "{got:?}");
    assert_eq!(got.local.port(), 17046);
    drop(coturn);
}

/// A listener in the client namespace at `port` that answers "hello" to every
/// connection, for the rest of the test: a refused connection then means the mapping is
/// gone, not the listener.
fn hello_server(lab: &NatLab, port: u16) {
    let listener = lab.run_in("c", move || TcpListener::bind(("0.0.0.0", port)).unwrap());
    std::thread::spawn(move || {
        for c in listener.incoming() {
            let _ = c.unwrap().write_all(b"hello");
        }
    });
}

fn tied_opts(lifetime: Duration) -> portmgr::nat::MapOptions {
    portmgr::nat::MapOptions {
        method: portmgr::nat::MapMethod::NatPmp,
        gateway: Some(LAB_ROUTER_INSIDE.parse().unwrap()),
        lifetime,
        poll: Duration::from_millis(100),
        ..Default::default()
    }
}

#[test]
fn a_mapping_tied_to_its_lease_is_renewed_while_it_lives_and_deleted_when_it_is_released() {
    use portmgr::nat::{Mapping, MappingState, map};
    use portmgr::{Registry, Request};
    let lab = NatLab::start(10);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    // Allocated (and probed) in the client namespace, where the listeners are.
    let (reg, mut lease, m): (Registry, portmgr::Lease, Mapping) = lab.run_in("c", move || {
        let reg = Registry::open(&d).unwrap();
        let lease = reg.allocate(&Request::new().preferred(17050, true)).unwrap();
        let m = map(&reg, 17050, &tied_opts(Duration::from_secs(2))).unwrap();
        (reg, lease, m)
    });
    assert_eq!(m.lease_id(), Some(lease.id()));
    assert_eq!(m.method(), portmgr::nat::MapMethod::NatPmp);
    assert_eq!(m.granted().lifetime, Duration::from_secs(2), "miniupnpd runs with min_lifetime=1");
    hello_server(&lab, 17050);
    // The control: a mapping nobody renews, with the same 2 s lifetime, on 17052.
    hello_server(&lab, 17052);
    lab.run_in("c", || natpmp::map(17052, MapProtocol::Tcp, 17052, Duration::from_secs(2), &opts()).unwrap());
    assert_eq!(lab.connect_from_outside(17052).unwrap(), b"hello");

    // Three lifetimes later: the gateway dropped the control, the tied one was renewed.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(lab.connect_from_outside(17052).unwrap_err(), std::io::ErrorKind::ConnectionRefused, "miniupnpd expires mappings");
    assert_eq!(lab.connect_from_outside(17050).unwrap(), b"hello");
    assert!(m.renewals() >= 3, "renewed at half the lifetime: {} renewals", m.renewals());
    assert_eq!((m.state(), m.last_error()), (MappingState::Active, None));

    // Released (from the host: the registry is a file) => deleted by the follower.
    lease.release().unwrap();
    assert!(m.wait_ended(Some(Duration::from_secs(5))), "deleted within the 100 ms poll");
    assert_eq!((m.state(), m.last_error()), (MappingState::LeaseEnded, None));
    assert_eq!(lab.connect_from_outside(17050).unwrap_err(), std::io::ErrorKind::ConnectionRefused);
    // Ended: renewing is refused, deleting again is a no-op.
    assert_eq!(m.renew().unwrap_err().code(), ErrorCode::InvalidArgument);
    m.delete().unwrap();
    drop(reg);
}

#[test]
fn a_failed_deletion_after_the_lease_ends_is_reported_and_an_untied_mapping_is_not_followed() {
    use portmgr::nat::{MappingState, map};
    use portmgr::{Registry, Request};
    let mut lab = NatLab::start(11);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let (reg, lease, m, untied) = lab.run_in("c", move || {
        let reg = Registry::open(&d).unwrap();
        let lease = reg.allocate(&Request::new().preferred(17054, true).ttl(Duration::from_secs(60))).unwrap();
        let m = map(&reg, 17054, &tied_opts(Duration::from_secs(600))).unwrap();
        // 17055 is held by no lease: refused when a lease is required, else mapped once,
        // and nothing follows it.
        let required = portmgr::nat::MapOptions { require_lease: true, ..tied_opts(Duration::from_secs(600)) };
        assert_eq!(map(&reg, 17055, &required).unwrap_err().code(), ErrorCode::NotFound);
        let untied = map(&reg, 17055, &tied_opts(Duration::from_secs(600))).unwrap();
        (reg, lease, m, untied)
    });
    assert_eq!(untied.lease_id(), None);
    assert!(!untied.wait_ended(Some(Duration::from_millis(300))), "an untied mapping ends only by delete");
    lab.run_in("c", move || untied.delete().unwrap());

    // The gateway goes away, then the lease is released by id from another handle:
    // the lease is free, and the failed deletion is kept, not raised.
    lab.stop_gateway();
    let other = Registry::open(dir.path()).unwrap();
    assert_eq!(other.release_id(lease.id()).unwrap(), vec![17054]);
    assert!(m.wait_ended(Some(Duration::from_secs(10))));
    assert_eq!(m.state(), MappingState::LeaseEnded);
    let e = m.last_error().expect("the failed deletion is reported");
    assert!(e.contains("deleting the gateway mapping of port 17054") && e.contains("no NAT-PMP server"), "{e}");
    assert!(reg.get_by_port(17054).unwrap().is_none());
    drop(lease);
}

/// Send `n` datagrams from the outer namespace to the router's external address at
/// `port`, one every 50 ms.
fn udp_from_outside(lab: &NatLab, port: u16, n: usize) {
    lab.run_in("o", move || {
        let s = UdpSocket::bind("11.77.0.2:0").unwrap();
        for i in 0..n {
            s.send_to(format!("ping {i}").as_bytes(), (LAB_ROUTER_OUTSIDE, port)).unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

#[test]
fn udp_mappings_forward_datagrams_until_unmapped_by_natpmp_and_by_upnp() {
    use portmgr::nat::{MapMethod, map_port, unmap_port};
    let lab = NatLab::start(14);
    for (method, port) in [(MapMethod::NatPmp, 17056u16), (MapMethod::Upnp, 17057)] {
        let inner = lab.run_in("c", move || UdpSocket::bind(("0.0.0.0", port)).unwrap());
        inner.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let m = lab.run_in("c", move || map_port(port, MapProtocol::Udp, method, None, Duration::from_secs(600)).unwrap());
        assert_eq!((m.protocol, m.external_port), (MapProtocol::Udp, port), "{method:?}");
        udp_from_outside(&lab, port, 3);
        let mut buf = [0u8; 64];
        let (n, from) = inner.recv_from(&mut buf).expect("a datagram through the mapping");
        assert!(buf[..n].starts_with(b"ping "), "{method:?}");
        assert_eq!(from.ip().to_string(), "11.77.0.2", "{method:?}: the sender's address, not the router's");
        while inner.recv_from(&mut buf).is_ok() {} // drain
        lab.run_in("c", move || unmap_port(port, MapProtocol::Udp, method, None).unwrap());
        // The conntrack entry of the first flow would still forward its datagrams: a new
        // source port is a new flow.
        udp_from_outside(&lab, port, 3);
        assert!(inner.recv_from(&mut buf).is_err(), "{method:?}: nothing arrives after unmap");
    }
}
