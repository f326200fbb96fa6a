//! F1 (threads): 8 threads call the C ABI (`portmgr::ffi`, the functions behind
//! include/portmgr.h) in random order on *shared* handles — closed, freed and released
//! by one thread while others use them — plus NULL and forged handles, NULL and short
//! buffers, invalid UTF-8 and huge counts. 0 crashes, every status one of the documented
//! codes, and afterwards a fresh handle still allocates. (NULL/forged/UTF-8 cases one by
//! one, single-threaded, are in tests/c/test_api.c; sequences are fuzzed in fuzz/.)

use std::ffi::{CString, c_char};
use std::ptr;
use std::sync::Mutex;

use portmgr::ffi::*;

use crate::util::*;

const START: u16 = 14860;

static HANDLES: Mutex<(Vec<usize>, Vec<usize>, Vec<usize>)> = Mutex::new((Vec::new(), Vec::new(), Vec::new()));

fn pick(rng: &mut Rng, which: usize) -> usize {
    let h = HANDLES.lock().unwrap();
    let v = match which {
        0 => &h.0,
        1 => &h.1,
        _ => &h.2,
    };
    match rng.below(10) {
        0 => 0,
        1 => rng.next() as usize,
        2 => 8,
        _ if v.is_empty() => 0,
        _ => v[rng.below(v.len() as u64) as usize],
    }
}

fn ok(st: portmgr_status, what: &str) {
    let code = st as u32;
    assert!(code <= 10, "{what}: undocumented status {code}");
}

fn thread_body(dir: CString, seed: u64, ops: u64) -> u64 {
    let mut rng = Rng::new(seed);
    let mut buf = [0u8; 128];
    let mut calls = 0;
    for _ in 0..ops {
        calls += 1;
        let bad_name = CString::new(vec![0xffu8, 0xfe, b'x']).unwrap();
        // A directory whose name is not UTF-8, inside the test's own directory (a
        // relative one would be created wherever the test runs).
        let mut bad_dir_bytes = dir.as_bytes().to_vec();
        bad_dir_bytes.extend_from_slice(b"-\xff\xfex");
        let bad_dir = CString::new(bad_dir_bytes).unwrap();
        let long_name = CString::new(vec![b'n'; 5000]).unwrap();
        // SAFETY: (every call) pointers are NULL, handle values (validated by the
        // library), or live buffers with their true lengths.
        unsafe {
            match rng.below(16) {
                0 => {
                    let mut r = ptr::null_mut();
                    let d = if rng.below(5) == 0 { bad_dir.as_ptr() } else { dir.as_ptr() };
                    ok(portmgr_registry_open(d, &mut r), "open");
                    if !r.is_null() {
                        HANDLES.lock().unwrap().0.push(r as usize);
                    }
                }
                1 => {
                    let h = pick(&mut rng, 0);
                    portmgr_registry_close(h as *mut portmgr_registry);
                    HANDLES.lock().unwrap().0.retain(|&x| x != h || rng.below(2) == 0);
                }
                2 => {
                    let mut r = ptr::null_mut();
                    ok(portmgr_request_new(&mut r), "request_new");
                    if !r.is_null() {
                        ok(portmgr_request_set_range(r, START, START + 63), "range");
                        HANDLES.lock().unwrap().1.push(r as usize);
                    }
                }
                3 => portmgr_request_free(pick(&mut rng, 1) as *mut portmgr_request),
                4 => {
                    let n = match rng.below(3) {
                        0 => usize::MAX,
                        1 => rng.next() as usize,
                        _ => 1 + rng.below(3) as usize,
                    };
                    ok(portmgr_request_set_count(pick(&mut rng, 1) as *mut portmgr_request, n), "count");
                }
                5 => {
                    let name = match rng.below(3) {
                        0 => bad_name.as_ptr(),
                        1 => long_name.as_ptr(),
                        _ => ptr::null(),
                    };
                    ok(portmgr_request_set_name(pick(&mut rng, 1) as *mut portmgr_request, name), "name");
                }
                6 | 7 => {
                    let mut l: *mut portmgr_lease = ptr::null_mut();
                    let out = if rng.below(10) == 0 { ptr::null_mut() } else { &mut l as *mut _ };
                    ok(
                        portmgr_allocate(pick(&mut rng, 0) as *mut portmgr_registry, pick(&mut rng, 1) as *const portmgr_request, out),
                        "allocate",
                    );
                    if !l.is_null() {
                        HANDLES.lock().unwrap().2.push(l as usize);
                    }
                }
                8 => ok(portmgr_lease_release(pick(&mut rng, 2) as *mut portmgr_lease), "release"),
                9 => {
                    let mut ports = [0u16; 4];
                    let (p, n) = match rng.below(3) {
                        0 => (ptr::null_mut(), 0),
                        1 => (ptr::null_mut(), 4), // NULL with a length: must not be written
                        _ => (ports.as_mut_ptr(), 4),
                    };
                    portmgr_lease_ports(pick(&mut rng, 2) as *const portmgr_lease, p, n);
                    portmgr_lease_port(pick(&mut rng, 2) as *const portmgr_lease);
                }
                10 => {
                    let n = rng.below(buf.len() as u64 + 1) as usize;
                    portmgr_last_error_message(buf.as_mut_ptr() as *mut c_char, n);
                    portmgr_last_error_message(ptr::null_mut(), 0);
                }
                11 => {
                    let mut need = 0usize;
                    let n = rng.below(buf.len() as u64 + 1) as usize;
                    ok(
                        portmgr_registry_list_json(pick(&mut rng, 0) as *const portmgr_registry, buf.as_mut_ptr() as *mut c_char, n, &mut need),
                        "list_json",
                    );
                }
                12 => ok(portmgr_release_port(pick(&mut rng, 0) as *mut portmgr_registry, START + rng.below(64) as u16), "release_port"),
                13 => ok(portmgr_release_name(pick(&mut rng, 0) as *mut portmgr_registry, bad_name.as_ptr()), "release_name"),
                14 => {
                    let mut freed = 0usize;
                    ok(portmgr_registry_gc(pick(&mut rng, 0) as *mut portmgr_registry, &mut freed), "gc");
                }
                _ => {
                    let mut free = false;
                    ok(portmgr_probe(START + 100 + rng.below(10) as u16, rng.next() as u32, &mut free), "probe");
                    ok(portmgr_probe(0, 1, ptr::null_mut()), "probe null");
                }
            }
        }
    }
    calls
}

#[test]
fn eight_threads_of_hostile_c_calls_on_shared_handles() {
    let ops = knob("PORTMGR_RELIABILITY_FFI_OPS", 3000);
    let d = temp_dir();
    let dir = CString::new(d.path().join("reg").to_str().unwrap()).unwrap();
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let dir = dir.clone();
            std::thread::spawn(move || thread_body(dir, t * 7919 + 1, ops))
        })
        .collect();
    let calls: u64 = threads.into_iter().map(|t| t.join().expect("a thread crashed")).sum();
    // Afterwards a fresh handle works.
    let mut reg = ptr::null_mut();
    let mut req = ptr::null_mut();
    let mut lease: *mut portmgr_lease = ptr::null_mut();
    // SAFETY: valid out-pointers and strings.
    unsafe {
        assert_eq!(portmgr_registry_open(dir.as_ptr(), &mut reg) as u32, 0);
        assert_eq!(portmgr_request_new(&mut req) as u32, 0);
        assert_eq!(portmgr_request_set_range(req, START, START + 63) as u32, 0);
        let st = portmgr_allocate(reg, req, &mut lease) as u32;
        assert!(st == 0 || st == 2, "allocation after the storm: status {st}");
    }
    let (r, q, l) = {
        let h = HANDLES.lock().unwrap();
        (h.0.len(), h.1.len(), h.2.len())
    };
    eprintln!("RESULT ffi-threads: threads=8 calls={calls} registries_opened={r} requests={q} leases={l} crashes=0 undocumented_statuses=0");
}
