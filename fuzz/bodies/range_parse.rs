//! The body of the `range_parse` fuzz target, shared with the stable replay of its corpus
//! (tests/fuzz_replay.rs): PortRange and Protocols parsing on arbitrary text: never a
//! panic; a range that parses is non-empty, inside 1-65535, prints back to a string that
//! parses to the same range.

use portmgr::{PortRange, Protocols};

/// One input; panics on a violation.
pub fn run(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(r) = s.parse::<PortRange>() {
        assert!(r.start() >= 1 && r.start() <= r.end());
        assert!(r.len() <= r.span());
        let again: PortRange = r.to_string().parse().expect("a printed range parses");
        assert_eq!((again.start(), again.end()), (r.start(), r.end()));
        for p in r.iter().take(64) {
            assert!(r.contains(p));
        }
    }
    let _ = s.parse::<Protocols>();
}

/// Nothing to clean up (no scratch files).
#[allow(dead_code)]
pub fn cleanup() {}
