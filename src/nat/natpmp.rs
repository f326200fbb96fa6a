//! NAT-PMP (RFC 6886): the gateway's external IPv4 address, and port mappings on it.
//!
//! The messages are a few fixed-size fields, encoded and checked here (no crate is
//! needed; [`parse_reply`] is the one reply parser, fed every short byte pattern by its
//! unit test). Requests go over UDP to the gateway's port 5351 from a socket
//! connected to it, so only the gateway's datagrams are read; they are retransmitted
//! per RFC 6886 §3.1: the wait starts at 250 ms and doubles, 9 sends in all (about
//! 128 s with the defaults). A closed port 5351 (ICMP port unreachable) ends it at once.
//!
//! ```no_run
//! use std::time::Duration;
//! use portmgr::nat::natpmp::{MapProtocol, NatPmpOptions, map, unmap};
//! let opts = NatPmpOptions::default(); // the default route's gateway
//! let m = map(8080, MapProtocol::Tcp, 0, Duration::from_secs(3600), &opts)?;
//! println!("reachable from outside at port {}", m.external_port);
//! unmap(8080, MapProtocol::Tcp, &opts)?;
//! # Ok::<(), portmgr::Error>(())
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The NAT-PMP server port (RFC 6886 §3).
pub const NATPMP_PORT: u16 = 5351;

/// The transport protocol of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MapProtocol {
    /// UDP (opcode 1).
    Udp,
    /// TCP (opcode 2).
    Tcp,
}

impl MapProtocol {
    /// `"udp"` or `"tcp"`.
    pub fn as_str(self) -> &'static str {
        match self {
            MapProtocol::Udp => "udp",
            MapProtocol::Tcp => "tcp",
        }
    }
    /// UDP when `udp`, else TCP (the skins' `udp` flag).
    pub fn of_udp(udp: bool) -> Self {
        if udp { MapProtocol::Udp } else { MapProtocol::Tcp }
    }
    fn opcode(self) -> u8 {
        match self {
            MapProtocol::Udp => 1,
            MapProtocol::Tcp => 2,
        }
    }
}

impl fmt::Display for MapProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MapProtocol {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "tcp" => Ok(MapProtocol::Tcp),
            "udp" => Ok(MapProtocol::Udp),
            other => Err(Error::invalid(format!("unknown transport {other:?}: use tcp or udp"))),
        }
    }
}

/// Where and how patiently to ask.
#[derive(Clone, Debug)]
pub struct NatPmpOptions {
    /// The gateway; `None`: the IPv4 default route's gateway (from `/proc/net/route`).
    pub gateway: Option<Ipv4Addr>,
    /// The first wait for an answer (RFC 6886: 250 ms); doubled after each send.
    pub initial_timeout: Duration,
    /// How many times a request is sent (RFC 6886: 9).
    pub sends: u32,
}

impl Default for NatPmpOptions {
    fn default() -> Self {
        NatPmpOptions { gateway: None, initial_timeout: Duration::from_millis(250), sends: 9 }
    }
}

/// A mapping the gateway granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortMapping {
    /// The gateway that holds it.
    pub gateway: Ipv4Addr,
    /// TCP or UDP.
    pub protocol: MapProtocol,
    /// This host's port.
    pub internal_port: u16,
    /// The port on the gateway's external address (may differ from the one asked for).
    pub external_port: u16,
    /// How long the gateway keeps it unless renewed (renew by mapping again).
    pub lifetime: Duration,
}

/// A NAT-PMP answer, as [`parse_reply`] reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Opcode 128: the external address.
    ExternalAddress {
        /// Seconds since the gateway's table was started or reset.
        epoch: u32,
        /// The address.
        address: Ipv4Addr,
    },
    /// Opcodes 129 and 130: a mapping's result.
    Mapping {
        /// Seconds since the gateway's table was started or reset.
        epoch: u32,
        /// The internal port the answer is about.
        internal_port: u16,
        /// The external port granted (0 after a deletion).
        external_port: u16,
        /// The lifetime granted, seconds.
        lifetime: u32,
    },
}

fn result_text(code: u16) -> &'static str {
    match code {
        1 => "unsupported version",
        2 => "not authorized or refused (is NAT-PMP enabled for this host on the gateway?)",
        3 => "network failure (the gateway has no usable external address)",
        4 => "out of resources (no port left, or too many mappings)",
        5 => "unsupported opcode",
        _ => "an unknown result code",
    }
}

fn protocol_error(what: String) -> Error {
    Error::os(what, std::io::Error::new(std::io::ErrorKind::InvalidData, "bad NAT-PMP reply"))
}

/// Read a datagram answering request opcode `op` (0, 1 or 2): `Ok(None)` when it is not
/// such an answer (too short, another version or opcode), an error for a non-zero result
/// code, and an invalid argument for another `op`. Fuzzed: `fuzz/bodies/natpmp_reply.rs`.
pub fn parse_reply(op: u8, d: &[u8]) -> Result<Option<Reply>> {
    if op > 2 {
        // (Found by the fuzz target: 128 + op overflowed.)
        return Err(Error::invalid(format!("NAT-PMP requests are opcodes 0 (address), 1 (UDP) and 2 (TCP), not {op}")));
    }
    if d.len() < 8 || d[0] != 0 || d[1] != 128 + op {
        return Ok(None);
    }
    let result = u16::from_be_bytes([d[2], d[3]]);
    if result != 0 {
        return Err(Error::os(
            format!("the NAT-PMP gateway refused the request (result {result}: {})", result_text(result)),
            std::io::Error::other(result_text(result)),
        ));
    }
    let epoch = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
    match op {
        0 if d.len() >= 12 => Ok(Some(Reply::ExternalAddress { epoch, address: Ipv4Addr::new(d[8], d[9], d[10], d[11]) })),
        1 | 2 if d.len() >= 16 => Ok(Some(Reply::Mapping {
            epoch,
            internal_port: u16::from_be_bytes([d[8], d[9]]),
            external_port: u16::from_be_bytes([d[10], d[11]]),
            lifetime: u32::from_be_bytes([d[12], d[13], d[14], d[15]]),
        })),
        _ => Ok(None),
    }
}

/// The IPv4 default route's gateway, from the calling thread's `/proc/net/route`.
pub fn default_gateway() -> Result<Ipv4Addr> {
    // thread-self: the calling thread's network namespace (/proc/net is the process
    // leader's, which differs in a thread that entered another namespace).
    let text = std::fs::read_to_string("/proc/thread-self/net/route")
        .or_else(|_| std::fs::read_to_string("/proc/net/route"))
        .map_err(|e| Error::os("reading /proc/net/route", e))?;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 2
            && f[1] == "00000000"
            && let Ok(g) = u32::from_str_radix(f[2], 16)
            && g != 0
        {
            // The file prints the address's in-memory (network-order) bytes as a
            // native-endian number: its native bytes are the address.
            return Ok(Ipv4Addr::from(g.to_ne_bytes()));
        }
    }
    Err(Error::NotFound("no IPv4 default route: give the gateway's address".into()))
}

fn exchange(opts: &NatPmpOptions, request: &[u8], op: u8, accept: impl Fn(&Reply) -> bool) -> Result<(Ipv4Addr, Reply)> {
    if opts.initial_timeout.is_zero() || opts.sends == 0 {
        return Err(Error::invalid("the NAT-PMP timeout and the number of sends must be above zero"));
    }
    let gw = match opts.gateway {
        Some(g) => g,
        None => default_gateway()?,
    };
    let server = SocketAddr::new(IpAddr::V4(gw), NATPMP_PORT);
    let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| Error::os("binding the NAT-PMP client socket", e))?;
    sock.connect(server).map_err(|e| Error::os(format!("connecting the NAT-PMP socket to {server}"), e))?;
    let started = Instant::now();
    let mut wait = opts.initial_timeout;
    let mut buf = [0u8; 64];
    for _ in 0..opts.sends {
        match sock.send(request) {
            Ok(_) => {}
            Err(e) => return Err(Error::os(format!("sending a NAT-PMP request to {server}"), e)),
        }
        let until = Instant::now() + wait;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            sock.set_read_timeout(Some(left)).map_err(|e| Error::os("setting the NAT-PMP socket's timeout", e))?;
            match sock.recv(&mut buf) {
                Ok(n) => {
                    if let Some(r) = parse_reply(op, &buf[..n])?
                        && accept(&r)
                    {
                        return Ok((gw, r));
                    }
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break,
                // ICMP port unreachable: nothing listens on 5351 there, a definite answer.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Err(Error::os(format!("no NAT-PMP server at {server} (its port {NATPMP_PORT} is closed)"), e));
                }
                Err(e) => return Err(Error::os(format!("receiving from the NAT-PMP gateway {server}"), e)),
            }
        }
        wait *= 2;
    }
    Err(Error::wait_timeout(format!(
        "no NAT-PMP answer from {server} after {} send(s) over {:.1?}",
        opts.sends,
        started.elapsed()
    )))
}

/// The gateway's external IPv4 address (opcode 0).
pub fn external_address(opts: &NatPmpOptions) -> Result<Ipv4Addr> {
    match exchange(opts, &[0, 0], 0, |_| true)?.1 {
        Reply::ExternalAddress { address, .. } => Ok(address),
        Reply::Mapping { .. } => Err(protocol_error("the NAT-PMP gateway answered another request".into())),
    }
}

fn map_request(protocol: MapProtocol, internal_port: u16, external_port: u16, lifetime: u32) -> [u8; 12] {
    let mut r = [0u8; 12];
    r[1] = protocol.opcode();
    r[4..6].copy_from_slice(&internal_port.to_be_bytes());
    r[6..8].copy_from_slice(&external_port.to_be_bytes());
    r[8..12].copy_from_slice(&lifetime.to_be_bytes());
    r
}

/// Map `internal_port` of this host for `protocol` on the gateway, asking for
/// `external_port` (0: the gateway chooses) for `lifetime` (at least 1 s; RFC 6886
/// recommends 2 h). Calling it again renews the mapping.
pub fn map(
    internal_port: u16,
    protocol: MapProtocol,
    external_port: u16,
    lifetime: Duration,
    opts: &NatPmpOptions,
) -> Result<PortMapping> {
    if internal_port == 0 {
        return Err(Error::invalid("the internal port to map must not be 0"));
    }
    let secs = u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX);
    if secs == 0 {
        return Err(Error::invalid("a mapping's lifetime must be at least 1 s (use unmap to delete it)"));
    }
    let req = map_request(protocol, internal_port, external_port, secs);
    let (gateway, r) = exchange(opts, &req, protocol.opcode(), |r| matches!(r, Reply::Mapping { internal_port: p, .. } if *p == internal_port))?;
    match r {
        Reply::Mapping { external_port, lifetime, .. } if external_port != 0 => Ok(PortMapping {
            gateway,
            protocol,
            internal_port,
            external_port,
            lifetime: Duration::from_secs(u64::from(lifetime)),
        }),
        _ => Err(protocol_error(format!("the NAT-PMP gateway {gateway} granted no external port for {internal_port}/{protocol}"))),
    }
}

/// Delete the mapping of `internal_port` for `protocol` (a request with lifetime 0).
pub fn unmap(internal_port: u16, protocol: MapProtocol, opts: &NatPmpOptions) -> Result<()> {
    if internal_port == 0 {
        return Err(Error::invalid("the internal port to unmap must not be 0"));
    }
    let req = map_request(protocol, internal_port, 0, 0);
    exchange(opts, &req, protocol.opcode(), |r| matches!(r, Reply::Mapping { internal_port: p, .. } if *p == internal_port))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_checked() {
        let ext = [0, 128, 0, 0, 0, 0, 0, 1, 11, 77, 0, 1];
        assert_eq!(parse_reply(0, &ext).unwrap(), Some(Reply::ExternalAddress { epoch: 1, address: Ipv4Addr::new(11, 77, 0, 1) }));
        assert_eq!(parse_reply(0, &ext[..11]).unwrap(), None, "short");
        assert_eq!(parse_reply(1, &ext).unwrap(), None, "another opcode");
        let mut v1 = ext;
        v1[0] = 1;
        assert_eq!(parse_reply(0, &v1).unwrap(), None, "another version");
        let refused = [0, 130, 0, 2, 0, 0, 0, 1];
        let e = parse_reply(2, &refused).unwrap_err();
        assert!(e.to_string().contains("result 2"), "{e}");
        let m = [0, 130, 0, 0, 0, 0, 0, 9, 0x1f, 0x90, 0x46, 0xa0, 0, 0, 0x0e, 0x10];
        assert_eq!(
            parse_reply(2, &m).unwrap(),
            Some(Reply::Mapping { epoch: 9, internal_port: 8080, external_port: 18080, lifetime: 3600 })
        );
        assert_eq!(parse_reply(200, &m).unwrap_err().code(), crate::ErrorCode::InvalidArgument, "no such request");
        // Any bytes: never a panic.
        for len in 0..20 {
            for b in 0..=255u8 {
                let d = vec![b; len];
                let _ = parse_reply(0, &d);
                let _ = parse_reply(2, &d);
            }
        }
        assert_eq!(map_request(MapProtocol::Tcp, 8080, 18080, 3600), [0, 2, 0, 0, 0x1f, 0x90, 0x46, 0xa0, 0, 0, 0x0e, 0x10]);
    }
}
