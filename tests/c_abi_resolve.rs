//! Issue 19 through the C ABI (the functions include/portmgr.h declares, called as a C
//! program would): the resolver against a real dnsmasq, STUN against a real coturn.
//! Ports 17010-17019 (the Rust suite's 17000-17099).

mod netserv;

use std::ffi::{CStr, CString, c_char};
use std::ptr;

use netserv::{Coturn, Dnsmasq};
use portmgr::ffi::*;

fn ok(s: portmgr_status) {
    assert_eq!(s as u32, 0, "status {}", s as u32);
}

#[test]
fn resolver_handle_resolve_pick_free() {
    let d = Dnsmasq::start(
        17010,
        60,
        "127.0.0.21 a.example.test\n127.0.0.22 b.example.test\n",
        &["_db._tcp.example.test,a.example.test,5001,20,5", "_db._tcp.example.test,b.example.test,5002,10,5"],
    );
    let servers = CString::new(d.addr().to_string()).unwrap();
    let policy = CString::new("priority").unwrap();
    let mut r: *mut portmgr_resolver = ptr::null_mut();
    // SAFETY: valid NUL-terminated strings and a writable out-pointer.
    ok(unsafe { portmgr_resolver_new(servers.as_ptr(), policy.as_ptr(), 0, 0, 0, &mut r) });
    let name = CString::new("_db._tcp.example.test").unwrap();
    let mut len = 0usize;
    let mut buf = vec![0 as c_char; 1024];
    // SAFETY: buf is writable for its length; len is writable.
    ok(unsafe { portmgr_resolver_resolve_json(r, name.as_ptr(), buf.as_mut_ptr(), buf.len(), &mut len) });
    // SAFETY: the call NUL-terminated buf.
    let json: serde_json::Value = serde_json::from_str(unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap()).unwrap();
    assert_eq!(json[0]["target"], "b.example.test");
    assert_eq!(json[1]["port"], 5001);
    let mut port = 0u16;
    let mut ip = [0 as c_char; 46];
    for _ in 0..100 {
        // SAFETY: as above.
        ok(unsafe { portmgr_resolver_pick(r, name.as_ptr(), ip.as_mut_ptr(), ip.len(), &mut port) });
        // SAFETY: NUL-terminated by the call.
        assert_eq!(unsafe { CStr::from_ptr(ip.as_ptr()) }.to_str().unwrap(), "127.0.0.22");
        assert_eq!(port, 5002, "priority 10 before 20");
    }
    let nx = CString::new("nope.example.test:1").unwrap();
    // SAFETY: as above.
    let s = unsafe { portmgr_resolver_pick(r, nx.as_ptr(), ip.as_mut_ptr(), ip.len(), &mut port) };
    assert_eq!(s as u32, 4, "NXDOMAIN is PORTMGR_NOT_FOUND");
    ok(portmgr_resolver_free(r));
    assert_eq!(portmgr_resolver_free(r) as u32, 1, "a second free is an invalid argument");
    // SAFETY: a freed handle is looked up, never dereferenced.
    let s = unsafe { portmgr_resolver_pick(r, name.as_ptr(), ip.as_mut_ptr(), ip.len(), &mut port) };
    assert_eq!(s as u32, 1);
    let bad = CString::new("random").unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { portmgr_resolver_new(ptr::null(), bad.as_ptr(), 0, 0, 0, &mut r) } as u32, 1);
}

#[test]
fn stun_external_address_through_the_c_abi() {
    let c = Coturn::start(17015);
    let server = CString::new(c.addr().to_string()).unwrap();
    let mut port = 0u16;
    let mut ip = [0 as c_char; 46];
    // SAFETY: valid string, writable buffer and port.
    ok(unsafe { portmgr_stun_external_address(server.as_ptr(), 17016, ip.as_mut_ptr(), ip.len(), &mut port) });
    // SAFETY: NUL-terminated by the call.
    assert_eq!(unsafe { CStr::from_ptr(ip.as_ptr()) }.to_str().unwrap(), "127.0.0.1");
    assert_eq!(port, 17016);
    // A buffer too small for the address: invalid argument.
    let mut tiny = [0 as c_char; 4];
    // SAFETY: as above.
    let s = unsafe { portmgr_stun_external_address(server.as_ptr(), 0, tiny.as_mut_ptr(), tiny.len(), &mut port) };
    assert_eq!(s as u32, 1);
}

#[test]
fn nat_map_and_unmap_through_the_c_abi() {
    use std::io::Write;
    use std::net::TcpListener;

    let lab = netserv::NatLab::start(8);
    let listener = lab.run_in("c", || TcpListener::bind("0.0.0.0:17018").unwrap());
    let server = std::thread::spawn(move || {
        if let Some(s) = listener.incoming().next() {
            let _ = s.unwrap().write_all(b"hi");
        }
    });
    let (ext, life) = lab.run_in("c", || {
        let (mut ext, mut life) = (0u16, 0u32);
        let proto = CString::new("natpmp").unwrap();
        // SAFETY: a valid string, NULL gateway, writable out-pointers.
        ok(unsafe { portmgr_nat_map(17018, proto.as_ptr(), ptr::null(), 300, false, &mut ext, &mut life) });
        (ext, life)
    });
    assert_eq!(ext, 17018);
    assert!(life > 0 && life <= 300);
    let reach = |lab: &netserv::NatLab| lab.connect_from_outside(17018).map(drop);
    assert_eq!(reach(&lab), Ok(()));
    server.join().unwrap();
    // SAFETY: NULL strings are allowed (auto, the default gateway).
    lab.run_in("c", || ok(unsafe { portmgr_nat_unmap(17018, ptr::null(), ptr::null(), false) }));
    assert_eq!(reach(&lab), Err(std::io::ErrorKind::ConnectionRefused));
    let bad = CString::new("pcp").unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { portmgr_nat_map(17018, bad.as_ptr(), ptr::null(), 300, false, ptr::null_mut(), ptr::null_mut()) } as u32, 1);
}

#[test]
fn a_nat_mapping_handle_follows_its_lease_through_the_c_abi() {
    use std::io::Write;
    use std::net::TcpListener;

    let lab = netserv::NatLab::start(13);
    let dir = tempfile::tempdir().unwrap();
    let cdir = CString::new(dir.path().to_str().unwrap()).unwrap();
    // Handles are identifiers (usize), so they cross into the namespace thread as numbers.
    let (reg, lease, mapping) = lab.run_in("c", move || {
        let (mut reg, mut req, mut lease, mut m) = (ptr::null_mut(), ptr::null_mut(), ptr::null_mut(), ptr::null_mut());
        // SAFETY: valid strings and writable out-pointers; handles made just above.
        unsafe {
            ok(portmgr_registry_open(cdir.as_ptr(), &mut reg));
            ok(portmgr_request_new(&mut req));
            ok(portmgr_request_set_range(req, 17019, 17019));
            ok(portmgr_allocate(reg, req, &mut lease));
            portmgr_request_free(req);
            let proto = CString::new("natpmp").unwrap();
            ok(portmgr_nat_mapping_new(reg, 17019, proto.as_ptr(), ptr::null(), 300, false, &mut m));
        }
        (reg as usize, lease as usize, m as usize)
    });
    let (reg, lease, mapping) = (reg as *mut portmgr_registry, lease as *mut portmgr_lease, mapping as *mut portmgr_nat_mapping);
    let listener = lab.run_in("c", || TcpListener::bind("0.0.0.0:17019").unwrap());
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let _ = s.unwrap().write_all(b"hi");
        }
    });
    let (mut ext, mut life, mut id, mut state) = (0u16, 0u32, 0u64, -1i32);
    // SAFETY: live handles and writable out-pointers.
    ok(unsafe { portmgr_nat_mapping_info(mapping, &mut ext, &mut life, &mut id, &mut state) });
    assert_eq!((ext, id, state), (17019, portmgr_lease_id(lease), PORTMGR_NAT_ACTIVE));
    assert!(life > 0 && life <= 300);
    let reach = |lab: &netserv::NatLab| lab.connect_from_outside(17019).map(drop);
    assert_eq!(reach(&lab), Ok(()));
    // Releasing the lease deletes the mapping; the handle reports it.
    ok(portmgr_lease_release(lease));
    assert!(portmgr_nat_mapping_wait_ended(mapping, 5000));
    // SAFETY: as above; NULL out-pointers are skipped.
    ok(unsafe { portmgr_nat_mapping_info(mapping, ptr::null_mut(), ptr::null_mut(), ptr::null_mut(), &mut state) });
    assert_eq!(state, PORTMGR_NAT_LEASE_ENDED);
    // SAFETY: NULL buffer with length 0 asks for the length.
    assert_eq!(unsafe { portmgr_nat_mapping_error(mapping, ptr::null_mut(), 0) }, 0, "the deletion succeeded");
    assert_eq!(reach(&lab), Err(std::io::ErrorKind::ConnectionRefused));
    ok(portmgr_nat_mapping_delete(mapping)); // idempotent once ended
    ok(portmgr_nat_mapping_free(mapping));
    assert_eq!(portmgr_nat_mapping_free(mapping) as u32, 1, "a freed handle is an invalid argument");
    assert!(!portmgr_nat_mapping_wait_ended(mapping, 0));
    // A registry handle is not a mapping handle.
    assert_eq!(portmgr_nat_mapping_delete(reg.cast()) as u32, 1);
    portmgr_registry_close(reg);
}
