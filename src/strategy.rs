//! How a candidate port is picked from a range.
//!
//! A strategy turns a range into an order of candidates; the caller (the registry or a
//! [`Reservation`](crate::Reservation)) takes the first candidate that nobody holds and
//! that probes free. The orders are:
//!
//! * `Sequential`: ascending from the range's start (first fit, deterministic).
//! * `Random`: a random affine permutation of the range, `start + (a*i + b) mod n` with
//!   `gcd(a, n) = 1`; every port is visited once, in an order that spreads concurrent
//!   callers apart.
//! * `Hash(key)`: start at `start + fnv1a64(key) mod (end - start + 1)`, then ascending,
//!   wrapping to `start`: the same key gets the same port run after run while it is free.
//!   FNV-1a 64: `h = 0xcbf29ce484222325; for each byte b of the key's UTF-8: h ^= b;
//!   h = h * 0x100000001b3 (mod 2^64)`.
//! * `Kernel`: the kernel picks (`bind(0)`); the range is not used for the pick.
//!
//! `Preferred { port, required }` is a request option, not a strategy: that port when
//! free, else an error (`required`) or the strategy's order.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::range::PortRange;

/// How a candidate port is chosen.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum Strategy {
    /// Lowest free port of the range.
    Sequential,
    /// Uniform over the free ports of the range.
    #[default]
    Random,
    /// Stable start from FNV-1a 64 of the key (the service name when `None`).
    Hash(Option<String>),
    /// Let the kernel choose (`bind(0)`).
    Kernel,
}

impl Strategy {
    /// `"sequential"`, `"random"`, `"hash"` or `"kernel"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Strategy::Sequential => "sequential",
            Strategy::Random => "random",
            Strategy::Hash(_) => "hash",
            Strategy::Kernel => "kernel",
        }
    }
}

impl FromStr for Strategy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Strategy> {
        match s.to_ascii_lowercase().as_str() {
            "sequential" | "seq" => Ok(Strategy::Sequential),
            "random" => Ok(Strategy::Random),
            "hash" => Ok(Strategy::Hash(None)),
            "kernel" => Ok(Strategy::Kernel),
            other => Err(Error::invalid(format!(
                "unknown strategy {other:?}: use sequential, random, hash or kernel"
            ))),
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// FNV-1a 64 of `bytes` (see the module docs for the constants).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The first port the hash strategy tries for `key` in `range` (before exclusions).
pub fn hash_start(range: &PortRange, key: &str) -> u16 {
    let off = fnv1a64(key.as_bytes()) % range.span() as u64;
    range.start() + off as u16
}

static RNG_STATE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn seed() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let t = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    (t ^ (u64::from(std::process::id()) << 32) ^ 0x9e37_79b9_7f4a_7c15) | 1
}

/// A small, fast, non-cryptographic random source (xorshift64*), seeded from the clock
/// and the pid: enough to spread callers apart, never for secrets.
pub(crate) fn random_u64() -> u64 {
    use std::sync::atomic::Ordering;
    let mut x = RNG_STATE.load(Ordering::Relaxed);
    if x == 0 {
        // Seed the state itself (the loop below swaps from what it holds): otherwise
        // every process would walk the same sequence from 0.
        let s = seed();
        x = match RNG_STATE.compare_exchange(0, s, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => s,
            Err(cur) => cur,
        };
    }
    loop {
        let mut y = x;
        y ^= y >> 12;
        y ^= y << 25;
        y ^= y >> 27;
        let y = y | 1; // never 0, so the state stays seeded
        match RNG_STATE.compare_exchange_weak(x, y, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return y.wrapping_mul(0x2545_f491_4f6c_dd1d),
            Err(cur) => x = cur,
        }
    }
}

/// Reseed in a forked child, so parent and children do not draw the same sequence.
pub(crate) fn reseed() {
    RNG_STATE.store(seed(), std::sync::atomic::Ordering::Relaxed);
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The order in which `strategy` visits the ports of `range` (exclusions skipped).
/// For `Kernel` this is the random order (used only to fall back or to check a range).
/// `key` is the name used by `Hash(None)`.
pub fn candidates<'a>(
    strategy: &'a Strategy,
    range: &'a PortRange,
    key: Option<&'a str>,
) -> Box<dyn Iterator<Item = u16> + 'a> {
    let n = range.span() as u64;
    let start = u64::from(range.start());
    let offsets: Box<dyn Iterator<Item = u64>> = match strategy {
        Strategy::Sequential => Box::new(0..n),
        Strategy::Hash(k) => {
            let key = k.as_deref().or(key).unwrap_or("");
            let first = fnv1a64(key.as_bytes()) % n;
            Box::new((0..n).map(move |i| (first + i) % n))
        }
        Strategy::Random | Strategy::Kernel => {
            let b = random_u64() % n;
            let mut a = random_u64() % n;
            if n > 1 {
                a = a.max(1);
                while gcd(a, n) != 1 {
                    a = a % (n - 1) + 1;
                }
            }
            let a = a.max(1);
            Box::new((0..n).map(move |i| ((a as u128 * i as u128 + b as u128) % n as u128) as u64))
        }
    };
    Box::new(offsets.map(move |o| (start + o) as u16).filter(move |p| range.contains(*p)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn fnv_matches_reference_vectors() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn every_order_visits_each_port_once() {
        let r = PortRange::new(20000, 20996).unwrap().excluding([20005]).unwrap();
        for s in [Strategy::Sequential, Strategy::Random, Strategy::Hash(Some("db".into())), Strategy::Kernel] {
            let v: Vec<u16> = candidates(&s, &r, None).collect();
            assert_eq!(v.len(), r.len(), "{s}");
            let set: HashSet<u16> = v.iter().copied().collect();
            assert_eq!(set.len(), r.len(), "{s}");
            assert!(!set.contains(&20005));
        }
        let seq: Vec<u16> = candidates(&Strategy::Sequential, &r, None).take(3).collect();
        assert_eq!(seq, vec![20000, 20001, 20002]);
    }

    #[test]
    fn hash_is_stable_and_keyed() {
        let r = PortRange::new(15000, 32767).unwrap();
        let a = candidates(&Strategy::Hash(None), &r, Some("postgres")).next().unwrap();
        let b = candidates(&Strategy::Hash(None), &r, Some("postgres")).next().unwrap();
        let c = candidates(&Strategy::Hash(None), &r, Some("redis")).next().unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, hash_start(&r, "postgres"));
        assert_eq!(u64::from(a - 15000), fnv1a64(b"postgres") % 17768);
    }

    #[test]
    fn random_spreads() {
        let r = PortRange::new(20000, 29999).unwrap();
        let firsts: HashSet<u16> =
            (0..50).map(|_| candidates(&Strategy::Random, &r, None).next().unwrap()).collect();
        assert!(firsts.len() > 40, "random starts collide too often: {}", firsts.len());
    }
}
