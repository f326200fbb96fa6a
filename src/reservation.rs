//! An in-process set of reserved ports, with no shared state.
//!
//! For callers that only need distinct ports within one process (the threads of one test
//! binary). Nothing is written anywhere: another process can be handed the same port.
//! Use the [`Registry`](crate::Registry) for ports that must be distinct host-wide.

use std::collections::HashSet;

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::probe;
use crate::range::{PortRange, Protocols};
use crate::strategy::{self, Strategy};

/// A thread-safe set of reserved ports over a range. Every reserved port was probed free
/// for TCP and UDP at the time it was reserved.
#[derive(Debug)]
pub struct Reservation {
    range: PortRange,
    strategy: Strategy,
    reserved: Mutex<HashSet<u16>>,
}

impl Reservation {
    /// A reservation over `range`, picking ports in random order.
    pub fn new(range: PortRange) -> Reservation {
        Reservation::with_strategy(range, Strategy::Random)
    }

    /// A reservation over the default pool (see [`PortRange::default_pool`]).
    pub fn default_pool() -> Result<Reservation> {
        Ok(Reservation::new(PortRange::default_pool()?))
    }

    /// A reservation over `range` with the given candidate order (`Kernel` acts as `Random`).
    pub fn with_strategy(range: PortRange, strategy: Strategy) -> Reservation {
        Reservation { range, strategy, reserved: Mutex::new(HashSet::new()) }
    }

    /// The range ports are drawn from.
    pub fn range(&self) -> &PortRange {
        &self.range
    }

    /// Reserve one port: not yet reserved here, and free for TCP and UDP right now.
    /// [`Error::Exhausted`] when every port of the range is reserved or in use.
    pub fn reserve_port(&self) -> Result<u16> {
        self.take(1).and_then(|v| {
            v.first().copied().ok_or_else(|| Error::Exhausted {
                what: format!(
                    "every port of {} is reserved here or in use ({} reserved)",
                    self.range,
                    self.reserved_count()
                ),
            })
        })
    }

    /// Reserve up to `n` ports. Returns fewer than `n` (possibly none) when the range runs
    /// out: check the length. Each call visits every port of the range at most once.
    pub fn reserve_ports(&self, n: usize) -> Result<Vec<u16>> {
        self.take(n)
    }

    fn take(&self, n: usize) -> Result<Vec<u16>> {
        let mut out = Vec::with_capacity(n);
        if n == 0 {
            return Ok(out);
        }
        for port in strategy::candidates(&self.strategy, &self.range, None) {
            // Claim first (short lock), probe outside the lock, give back if busy.
            if !self.reserved.lock().insert(port) {
                continue;
            }
            match probe::is_free(port, Protocols::BOTH) {
                Ok(true) => {
                    out.push(port);
                    if out.len() == n {
                        break;
                    }
                }
                Ok(false) => {
                    self.reserved.lock().remove(&port);
                }
                Err(e) => {
                    let mut set = self.reserved.lock();
                    set.remove(&port);
                    for p in &out {
                        set.remove(p);
                    }
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    /// Give `port` back; `true` when it was reserved.
    pub fn release_port(&self, port: u16) -> bool {
        self.reserved.lock().remove(&port)
    }

    /// Give `ports` back; returns how many were reserved.
    pub fn release_ports(&self, ports: impl IntoIterator<Item = u16>) -> usize {
        let mut set = self.reserved.lock();
        ports.into_iter().filter(|p| set.remove(p)).count()
    }

    /// Whether `port` is reserved here.
    pub fn is_reserved(&self, port: u16) -> bool {
        self.reserved.lock().contains(&port)
    }

    /// How many ports are reserved here.
    pub fn reserved_count(&self) -> usize {
        self.reserved.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn distinct_across_threads_and_exhausts() {
        let r = Arc::new(Reservation::new(PortRange::new(31000, 31399).unwrap()));
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let r = Arc::clone(&r);
                std::thread::spawn(move || (0..50).map(|_| r.reserve_port().unwrap()).collect::<Vec<_>>())
            })
            .collect();
        let all: Vec<u16> = hs.into_iter().flat_map(|h| h.join().unwrap()).collect();
        let set: HashSet<u16> = all.iter().copied().collect();
        assert_eq!(set.len(), 200);
        assert_eq!(r.reserved_count(), 200);
        assert!(all.iter().all(|p| r.is_reserved(*p)));
        assert_eq!(r.release_ports(all[..100].iter().copied()), 100);
        assert!(!r.release_port(all[0]));
        assert!(r.release_port(all[150]));
        assert_eq!(r.reserved_count(), 99);
    }

    #[test]
    fn exhaustion_is_an_error_not_a_loop() {
        let r = Reservation::new(PortRange::new(31500, 31503).unwrap());
        let got = r.reserve_ports(10).unwrap();
        assert!(got.len() <= 4);
        let e = r.reserve_port().unwrap_err();
        assert_eq!(e.code(), crate::ErrorCode::Exhausted);
        assert!(r.reserve_ports(3).unwrap().is_empty());
    }

    #[test]
    fn skips_ports_in_use() {
        let s = probe::bind_listener(31600, Protocols::TCP).unwrap();
        let r = Reservation::with_strategy(PortRange::new(31600, 31601).unwrap(), Strategy::Sequential);
        assert_eq!(r.reserve_port().unwrap(), 31601);
        drop(s);
    }
}
