//! The body of the `c_api_sequence` fuzz target, shared with the stable replay of its
//! corpus (tests/fuzz_replay.rs). Sequences of C-API calls (include/portmgr.h) decoded
//! from the input, with live, freed, forged and NULL handles, NULL and tiny buffers,
//! invalid UTF-8 and huge counts.
//! Nothing may crash; every status must be one of the documented codes (0-10).
//!
//! Ports: ranges in 12800-12863, probes in 12900-12963 (the fuzz suite owns 12700-12999).

use std::ffi::{CString, c_char};
use std::os::unix::ffi::OsStrExt;
use std::ptr;
use std::sync::LazyLock;

use portmgr::ffi::*;

static DIR: LazyLock<CString> = LazyLock::new(|| {
    let base = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
    CString::new(format!("{base}/portmgr-fuzz-capi-{}", std::process::id())).unwrap()
});

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else { return 0 };
        self.0 = rest;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }
    fn u64(&mut self) -> u64 {
        (0..8).fold(0u64, |a, _| (a << 8) | u64::from(self.byte()))
    }
    fn bytes(&mut self) -> Vec<u8> {
        let n = usize::from(self.byte() % 80).min(self.0.len());
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        b.iter().map(|&c| if c == 0 { 1 } else { c }).collect()
    }
}

fn check(st: portmgr_status) {
    let code = st as u32;
    assert!(code <= 10, "undocumented status {code}");
}

/// A handle: one of the known (live or freed), NULL, or a forged value.
fn pick<T>(inp: &mut Input, known: &[*mut T]) -> *mut T {
    match inp.byte() % 8 {
        0 => ptr::null_mut(),
        1 => inp.u64() as usize as *mut T,
        _ if known.is_empty() => ptr::null_mut(),
        b => known[usize::from(b) % known.len()],
    }
}

/// One input; panics on a violation.
pub fn run(data: &[u8]) {
    let mut inp = Input(data);
    let mut regs: Vec<*mut portmgr_registry> = Vec::new();
    let mut reqs: Vec<*mut portmgr_request> = Vec::new();
    let mut leases: Vec<*mut portmgr_lease> = Vec::new();
    let mut buf = [0u8; 256];
    for _ in 0..64 {
        if inp.0.is_empty() {
            break;
        }
        // SAFETY: every pointer passed below is NULL, a handle value (checked by the
        // library), or points to a live buffer of the length given.
        unsafe {
            match inp.byte() % 20 {
                0 => {
                    let mut r = ptr::null_mut();
                    // A few odd names (invalid UTF-8, spaces, long), always inside DIR: each
                    // registry file takes 8 MiB, so their number must stay small (random
                    // names filled /dev/shm once).
                    const ODD: [&[u8]; 4] = [b"\xff\xfe-odd", b"with space", b"\xc3(", &[b'n'; 200]];
                    let dir = match inp.byte() % 6 {
                        k @ 0..4 => {
                            let mut p = DIR.as_bytes().to_vec();
                            p.push(b'/');
                            p.extend_from_slice(ODD[usize::from(k)]);
                            CString::new(p).unwrap()
                        }
                        _ => DIR.clone(),
                    };
                    let st = portmgr_registry_open(dir.as_ptr(), &mut r);
                    check(st);
                    if !r.is_null() {
                        regs.push(r);
                    }
                }
                1 => portmgr_registry_close(pick(&mut inp, &regs)),
                2 => {
                    let mut r = ptr::null_mut();
                    check(portmgr_request_new(&mut r));
                    if !r.is_null() {
                        // Keep every allocation inside the suite's own ports.
                        check(portmgr_request_set_range(r, 12800, 12863));
                        reqs.push(r);
                    }
                }
                3 => portmgr_request_free(pick(&mut inp, &reqs)),
                4 => {
                    let (s, e) = (inp.u16(), inp.u16());
                    check(portmgr_request_set_range(pick(&mut inp, &reqs), 12800 + s % 64, 12800 + e % 64));
                }
                5 => {
                    let name = CString::new(inp.bytes()).unwrap();
                    check(portmgr_request_set_name(pick(&mut inp, &reqs), name.as_ptr()));
                }
                6 => check(portmgr_request_set_count(pick(&mut inp, &reqs), inp.u64() as usize % 8192)),
                7 => check(portmgr_request_set_strategy(pick(&mut inp, &reqs), u32::from(inp.byte()))),
                8 => check(portmgr_request_set_protocols(pick(&mut inp, &reqs), u32::from(inp.byte()))),
                9 | 10 => {
                    let mut l: *mut portmgr_lease = ptr::null_mut();
                    let out = if inp.byte() % 8 == 0 { ptr::null_mut() } else { &mut l as *mut _ };
                    check(portmgr_allocate(pick(&mut inp, &regs), pick(&mut inp, &reqs), out));
                    if !l.is_null() {
                        leases.push(l);
                    }
                }
                11 => check(portmgr_lease_release(pick(&mut inp, &leases))),
                12 => {
                    let mut ports = [0u16; 8];
                    let len = usize::from(inp.byte() % 9);
                    let p = if len == 0 && inp.byte() % 2 == 0 { ptr::null_mut() } else { ports.as_mut_ptr() };
                    portmgr_lease_ports(pick(&mut inp, &leases), p, len);
                    portmgr_lease_port(pick(&mut inp, &leases));
                }
                13 => {
                    let len = usize::from(inp.byte()) % (buf.len() + 1);
                    let p = if len == 0 && inp.byte() % 2 == 0 { ptr::null_mut() } else { buf.as_mut_ptr() as *mut c_char };
                    portmgr_last_error_message(p, len);
                }
                14 => check(portmgr_release_port(pick(&mut inp, &regs), inp.u16())),
                15 => {
                    let name = CString::new(inp.bytes()).unwrap();
                    check(portmgr_release_name(pick(&mut inp, &regs), name.as_ptr()));
                }
                16 => {
                    let len = usize::from(inp.byte()) % (buf.len() + 1);
                    let mut need = 0usize;
                    check(portmgr_registry_list_json(pick(&mut inp, &regs), buf.as_mut_ptr() as *mut c_char, len, &mut need));
                }
                17 => {
                    let len = usize::from(inp.byte()) % (buf.len() + 1);
                    let mut need = 0usize;
                    check(portmgr_registry_stats_json(pick(&mut inp, &regs), buf.as_mut_ptr() as *mut c_char, len, &mut need));
                }
                18 => {
                    let mut freed = 0usize;
                    let out = if inp.byte() % 4 == 0 { ptr::null_mut() } else { &mut freed as *mut usize };
                    check(portmgr_registry_gc(pick(&mut inp, &regs), out));
                }
                _ => {
                    let mut free = false;
                    check(portmgr_probe(12900 + inp.u16() % 64, u32::from(inp.byte()), &mut free));
                }
            }
        }
    }
    // Handles as above (these entries are safe fns); double frees are part of the contract.
    {
        for l in leases {
            let _ = portmgr_lease_release(l);
        }
        for r in reqs {
            portmgr_request_free(r);
        }
        for r in regs {
            portmgr_registry_close(r);
        }
    }
}

/// Remove this process's scratch registries (the fuzz runs leave that to scripts/fuzz.sh).
#[allow(dead_code)]
pub fn cleanup() {
    let _ = std::fs::remove_dir_all(std::ffi::OsStr::from_bytes(DIR.as_bytes()));
}
