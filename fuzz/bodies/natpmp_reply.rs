//! The body of the `natpmp_reply` fuzz target, shared with the stable replay of its
//! corpus (tests/fuzz_replay.rs): the NAT-PMP reply parser (`portmgr::nat::natpmp::
//! parse_reply`, the one hand-written parser of a gateway's answer; STUN, DNS and UPnP
//! replies are parsed by their libraries) on arbitrary datagrams, for the request
//! opcode in the first byte: never a panic; an answer is accepted only with version 0,
//! the answer's opcode, result 0 and the length RFC 6886 gives it, and its fields are the
//! datagram's bytes; a refusal names its result code.

use portmgr::nat::natpmp::{Reply, parse_reply};

/// One input; panics on a violation.
pub fn run(data: &[u8]) {
    let Some((&op, d)) = data.split_first() else { return };
    let be16 = |i: usize| u16::from_be_bytes([d[i], d[i + 1]]);
    let be32 = |i: usize| u32::from_be_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]);
    let header_ok = op <= 2 && d.len() >= 8 && d[0] == 0 && d[1] == 128 + op;
    match parse_reply(op, d) {
        Ok(Some(Reply::ExternalAddress { epoch, address })) => {
            assert!(header_ok && op == 0 && d.len() >= 12 && be16(2) == 0, "accepted {d:?} for opcode {op}");
            assert_eq!((epoch, address.octets()), (be32(4), [d[8], d[9], d[10], d[11]]));
        }
        Ok(Some(Reply::Mapping { epoch, internal_port, external_port, lifetime })) => {
            assert!(header_ok && (op == 1 || op == 2) && d.len() >= 16 && be16(2) == 0, "accepted {d:?} for opcode {op}");
            assert_eq!((epoch, internal_port, external_port, lifetime), (be32(4), be16(8), be16(10), be32(12)));
        }
        Ok(None) => {
            let long_enough = d.len() >= if op == 0 { 12 } else { 16 };
            assert!(!(header_ok && be16(2) == 0 && long_enough), "a valid answer was dropped: {d:?} for opcode {op}");
        }
        Err(e) => {
            let msg = e.to_string();
            if op > 2 {
                assert!(msg.contains("opcode"), "{msg}");
            } else {
                assert!(header_ok && be16(2) != 0, "refused {d:?} for opcode {op}: {msg}");
                assert!(msg.contains(&format!("result {}", be16(2))), "{msg}");
            }
        }
    }
}

/// Nothing to clean up (no scratch files).
#[allow(dead_code)]
pub fn cleanup() {}
