//! Port ranges, protocols, and the default pool computed from the kernel's settings.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Which transport protocols a port is wanted (or probed) for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Protocols(u8);

impl Protocols {
    /// TCP only.
    pub const TCP: Protocols = Protocols(1);
    /// UDP only.
    pub const UDP: Protocols = Protocols(2);
    /// TCP and UDP: the port must be free for both.
    pub const BOTH: Protocols = Protocols(3);

    /// From the bit set used in the registry and the C ABI (1 = TCP, 2 = UDP).
    pub fn from_bits(bits: u32) -> Result<Protocols> {
        match bits {
            1..=3 => Ok(Protocols(bits as u8)),
            _ => Err(Error::invalid(format!(
                "protocols must be TCP (1), UDP (2) or both (3), not {bits}"
            ))),
        }
    }
    /// The bit set (1 = TCP, 2 = UDP).
    pub fn bits(self) -> u8 {
        self.0
    }
    /// Whether TCP is included.
    pub fn tcp(self) -> bool {
        self.0 & 1 != 0
    }
    /// Whether UDP is included.
    pub fn udp(self) -> bool {
        self.0 & 2 != 0
    }
    /// `"tcp"`, `"udp"` or `"both"`.
    pub fn as_str(self) -> &'static str {
        match self.0 {
            1 => "tcp",
            2 => "udp",
            _ => "both",
        }
    }
}

impl Default for Protocols {
    /// TCP, the common case.
    fn default() -> Self {
        Protocols::TCP
    }
}

impl FromStr for Protocols {
    type Err = Error;
    fn from_str(s: &str) -> Result<Protocols> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocols::TCP),
            "udp" => Ok(Protocols::UDP),
            "both" | "tcp+udp" | "tcp,udp" => Ok(Protocols::BOTH),
            other => Err(Error::invalid(format!(
                "unknown protocol {other:?}: use \"tcp\", \"udp\" or \"both\""
            ))),
        }
    }
}

impl fmt::Display for Protocols {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An inclusive range of ports, with ports excluded from it.
///
/// Always valid: `1 <= start <= end <= 65535`, and at least one port is left after the
/// exclusions.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PortRange {
    start: u16,
    end: u16,
    /// Sorted, deduplicated, all inside `start..=end`.
    excluded: Vec<u16>,
}

impl PortRange {
    /// The inclusive range `start..=end`. Port 0 is not a port; `start` must not exceed `end`.
    pub fn new(start: u16, end: u16) -> Result<PortRange> {
        if start == 0 {
            return Err(Error::invalid(format!(
                "range {start}-{end} includes port 0, which is not a port: ranges start at 1"
            )));
        }
        if start > end {
            return Err(Error::invalid(format!(
                "range {start}-{end} is empty: the start must not be above the end"
            )));
        }
        Ok(PortRange { start, end, excluded: Vec::new() })
    }

    /// The same range without `ports` (ports outside the range are ignored).
    pub fn excluding(mut self, ports: impl IntoIterator<Item = u16>) -> Result<PortRange> {
        self.excluded.extend(ports.into_iter().filter(|p| (self.start..=self.end).contains(p)));
        self.excluded.sort_unstable();
        self.excluded.dedup();
        if self.is_empty() {
            return Err(Error::invalid(format!(
                "range {}-{} has no port left once its {} excluded ports are taken out",
                self.start,
                self.end,
                self.excluded.len()
            )));
        }
        Ok(self)
    }

    /// The first port of the range.
    pub fn start(&self) -> u16 {
        self.start
    }
    /// The last port of the range.
    pub fn end(&self) -> u16 {
        self.end
    }
    /// The excluded ports, sorted.
    pub fn excluded(&self) -> &[u16] {
        &self.excluded
    }
    /// The number of usable ports (the span less the exclusions).
    pub fn len(&self) -> usize {
        self.span() - self.excluded.len()
    }
    /// Never true for a valid range; here for clippy's sake.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// `end - start + 1`, exclusions included.
    pub fn span(&self) -> usize {
        usize::from(self.end - self.start) + 1
    }
    /// Whether `port` is in the range and not excluded.
    pub fn contains(&self, port: u16) -> bool {
        (self.start..=self.end).contains(&port) && self.excluded.binary_search(&port).is_err()
    }
    /// The usable ports in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (self.start..=self.end).filter(move |p| self.excluded.binary_search(p).is_err())
    }

    /// The default pool: the largest stretch of `15000..=65535` outside the kernel's
    /// ephemeral range, less the kernel's reserved ports; `1024..` when that leaves too
    /// little room. Override with the `PORTMGR_RANGE` environment variable (`A-B`).
    ///
    /// Why outside the ephemeral range: the kernel hands ports from it to every outgoing
    /// connection and every `bind(0)`, so a port picked there can be taken by a `connect()`
    /// that never asked anybody. Why from 15000: the ports below are full of well-known
    /// services (3306, 5432, 6379, 8080, 9200...).
    pub fn default_pool() -> Result<PortRange> {
        if let Ok(v) = std::env::var("PORTMGR_RANGE") {
            return v.parse::<PortRange>().map_err(|e| {
                Error::invalid(format!("PORTMGR_RANGE={v:?} is not a valid range: {e}"))
            });
        }
        let eph = ephemeral_range();
        let reserved = reserved_ports();
        let pool = pool_outside(eph, 15000, 1000).or_else(|| pool_outside(eph, 1024, 1));
        match pool {
            Some((a, b)) => PortRange::new(a, b)?.excluding(reserved).map_err(|_| Error::Exhausted {
                what: format!(
                    "the default pool {a}-{b} is entirely in net.ipv4.ip_local_reserved_ports; pass an explicit range or set PORTMGR_RANGE"
                ),
            }),
            None => Err(Error::Exhausted {
                what: format!(
                    "no room for a default pool: the kernel's ephemeral range {}-{} (net.ipv4.ip_local_port_range) covers every port from 1024 up; narrow it, pass an explicit range, or set PORTMGR_RANGE",
                    eph.0, eph.1
                ),
            }),
        }
    }
}

/// The largest interval of `[floor, 65535]` outside `eph`, if it has at least `min` ports.
fn pool_outside(eph: (u16, u16), floor: u16, min: usize) -> Option<(u16, u16)> {
    let mut best: Option<(u16, u16)> = None;
    let mut consider = |a: u32, b: u32| {
        if a <= b && (b - a + 1) as usize >= min {
            let len = b - a + 1;
            if best.is_none_or(|(x, y)| u32::from(y - x) + 1 < len) {
                best = Some((a as u16, b as u16));
            }
        }
    };
    let (lo, hi) = (u32::from(eph.0), u32::from(eph.1));
    consider(u32::from(floor), lo.saturating_sub(1).min(65535));
    consider((hi + 1).max(u32::from(floor)), 65535);
    best
}

/// The kernel's ephemeral port range (`/proc/sys/net/ipv4/ip_local_port_range`);
/// Linux's default `32768-60999` when it cannot be read.
pub fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|x| x.parse::<u16>());
            match (it.next(), it.next()) {
                (Some(Ok(a)), Some(Ok(b))) if a <= b => Some((a, b)),
                _ => None,
            }
        })
        .unwrap_or((32768, 60999))
}

/// The kernel's reserved ports (`/proc/sys/net/ipv4/ip_local_reserved_ports`, a list
/// like `8080,9000-9010`); empty when it cannot be read.
pub fn reserved_ports() -> Vec<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_reserved_ports")
        .map(|s| parse_port_list(&s))
        .unwrap_or_default()
}

fn parse_port_list(s: &str) -> Vec<u16> {
    let mut out = Vec::new();
    for item in s.trim().split(',').map(str::trim).filter(|x| !x.is_empty()) {
        match item.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.trim().parse::<u16>(), b.trim().parse::<u16>()) {
                    out.extend(a..=b);
                }
            }
            None => out.extend(item.parse::<u16>()),
        }
    }
    out
}

impl FromStr for PortRange {
    type Err = Error;
    /// `"20000-29999"` (also `"20000..29999"`, `"20000:29999"`) or a single port `"8080"`.
    fn from_str(s: &str) -> Result<PortRange> {
        let s = s.trim();
        let (a, b) = s
            .split_once("..=")
            .or_else(|| s.split_once(".."))
            .or_else(|| s.split_once('-'))
            .or_else(|| s.split_once(':'))
            .unwrap_or((s, s));
        let parse = |x: &str| {
            x.trim().parse::<u16>().map_err(|_| {
                Error::invalid(format!(
                    "{s:?} is not a port range: write START-END with ports from 1 to 65535, e.g. 20000-29999"
                ))
            })
        };
        PortRange::new(parse(a)?, parse(b)?)
    }
}

/// A list of ports and ranges, `"9100,9200-9299"` (commas or white space between items,
/// each item as [`PortRange`]'s `from_str` reads it), as inclusive `(start, end)` spans.
pub fn parse_spans(s: &str) -> Result<Vec<(u16, u16)>> {
    let spans: Vec<(u16, u16)> = s
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .map(|t| t.parse::<PortRange>().map(|r| (r.start(), r.end())))
        .collect::<Result<_>>()?;
    if spans.is_empty() {
        return Err(Error::invalid(format!("{s:?} names no port: write ports and ranges such as 9100,9200-9299")));
    }
    Ok(spans)
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)?;
        if !self.excluded.is_empty() {
            write!(f, " (less {} excluded)", self.excluded.len())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates() {
        assert!(PortRange::new(0, 10).is_err());
        assert!(PortRange::new(10, 9).is_err());
        let r = PortRange::new(10, 10).unwrap();
        assert_eq!(r.len(), 1);
        assert!(r.clone().excluding([10]).is_err());
        let r = PortRange::new(100, 109).unwrap().excluding([100, 105, 105, 200]).unwrap();
        assert_eq!(r.len(), 8);
        assert!(!r.contains(105) && r.contains(106) && !r.contains(200));
        assert_eq!(r.iter().count(), 8);
    }

    #[test]
    fn parses() {
        assert_eq!("20000-29999".parse::<PortRange>().unwrap(), PortRange::new(20000, 29999).unwrap());
        assert_eq!("8080".parse::<PortRange>().unwrap(), PortRange::new(8080, 8080).unwrap());
        assert_eq!("1..=5".parse::<PortRange>().unwrap(), PortRange::new(1, 5).unwrap());
        assert!("70000-70001".parse::<PortRange>().is_err());
        assert!("a-b".parse::<PortRange>().is_err());
        let msg = "9-3".parse::<PortRange>().unwrap_err().to_string();
        assert!(msg.contains("empty"), "{msg}");
        assert_eq!("both".parse::<Protocols>().unwrap(), Protocols::BOTH);
        assert!("sctp".parse::<Protocols>().is_err());
    }

    #[test]
    fn pool_avoids_ephemeral() {
        assert_eq!(pool_outside((32768, 60999), 15000, 1000), Some((15000, 32767)));
        assert_eq!(pool_outside((10000, 60999), 15000, 1000), Some((61000, 65535)));
        assert_eq!(pool_outside((1024, 65535), 15000, 1000), None);
        assert_eq!(pool_outside((1024, 65535), 1024, 1), None);
        assert_eq!(pool_outside((15000, 65000), 15000, 1000), None);
        assert_eq!(pool_outside((15000, 65000), 1024, 1), Some((1024, 14999)));
        assert_eq!(parse_port_list("8080, 9000-9002,\n"), vec![8080, 9000, 9001, 9002]);
    }

    #[test]
    fn default_pool_is_outside_kernel_ranges() {
        let pool = PortRange::default_pool().unwrap();
        let (lo, hi) = ephemeral_range();
        assert!(pool.start() >= 1024);
        assert!(pool.end() < lo || pool.start() > hi, "{pool} overlaps {lo}-{hi}");
        for p in reserved_ports() {
            assert!(!pool.contains(p));
        }
    }
}
