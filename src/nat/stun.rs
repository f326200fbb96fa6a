//! The STUN binding request (RFC 8489) over UDP.
//!
//! The request is encoded and the response decoded by the `stun_codec` crate (no
//! hand-written parser). Retransmission follows RFC 8489 §6.2.1: the request is sent
//! `Rc` times (7), the wait after each send starting at `RTO` (500 ms) and doubling, and
//! after the last send the client waits `Rm × RTO` (16 × 500 ms); with the defaults a
//! silent server is given up on after 39.5 s. A reply from another address, or with
//! another transaction id, is not the answer and is ignored (and counted in the timeout
//! error's message).
//!
//! ```no_run
//! let addr = portmgr::nat::stun_external_address("stun.example.net:3478", Some(17400))?;
//! println!("seen from outside as {addr}");
//! # Ok::<(), portmgr::Error>(())
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use bytecodec::{DecodeExt, EncodeExt};
use stun_codec::rfc5389::attributes::{ErrorCode, MappedAddress, Software, XorMappedAddress};
use stun_codec::rfc5389::{Attribute, methods::BINDING};
use stun_codec::{Message, MessageClass, MessageDecoder, MessageEncoder, TransactionId};

use crate::error::{Error, Result};

/// Settings of one binding request. Defaults: RFC 8489's RTO 500 ms, Rc 7, Rm 16, an
/// ephemeral local port.
#[derive(Clone, Debug)]
pub struct StunOptions {
    /// Send from this local UDP port (so that the external address of a port the caller
    /// holds is learned); `None`: any port.
    pub local_port: Option<u16>,
    /// The initial retransmission timeout (RTO).
    pub rto: Duration,
    /// How many times the request is sent at most (Rc).
    pub max_sends: u32,
    /// The wait after the last send, in RTOs (Rm).
    pub last_wait_rtos: u32,
}

impl Default for StunOptions {
    fn default() -> Self {
        StunOptions { local_port: None, rto: Duration::from_millis(500), max_sends: 7, last_wait_rtos: 16 }
    }
}

impl StunOptions {
    /// The total time a silent server is waited for: the sum of the doubling waits
    /// between the sends, then `Rm × RTO` (39.5 s with the defaults).
    pub fn total_timeout(&self) -> Duration {
        let mut total = Duration::ZERO;
        let mut rto = self.rto;
        for _ in 1..self.max_sends.max(1) {
            total += rto;
            rto *= 2;
        }
        total + self.rto * self.last_wait_rtos
    }
}

/// What a binding request learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StunResult {
    /// The address and port the server saw the request come from (XOR-MAPPED-ADDRESS,
    /// or MAPPED-ADDRESS from an older server).
    pub mapped: SocketAddr,
    /// The local address of the socket the request was sent from.
    pub local: SocketAddr,
    /// The server that answered.
    pub server: SocketAddr,
    /// How many times the request was sent.
    pub sends: u32,
}

/// This host's address as `server` (`HOST:PORT`) sees it, from `local_port` if given,
/// with the RFC's retransmission timers.
pub fn stun_external_address(server: &str, local_port: Option<u16>) -> Result<SocketAddr> {
    Ok(stun_query(server, &StunOptions { local_port, ..StunOptions::default() })?.mapped)
}

/// A binding request to `server` given as `HOST:PORT` (a name is looked up with the
/// system resolver; its first IPv4 address is used, else its first address).
pub fn stun_query(server: &str, opts: &StunOptions) -> Result<StunResult> {
    let (host, port) = crate::probe::parse_host_port(server)?;
    let addrs = crate::probe::resolve(&host, port)?;
    let addr = addrs.iter().find(|a| a.is_ipv4()).copied().unwrap_or(addrs[0]);
    stun_binding(addr, opts)
}

fn stun_err(what: String, e: impl std::fmt::Display) -> Error {
    Error::os(what, std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
}

/// One binding request to `server`; see the module's documentation.
///
/// Errors: invalid argument for a zero RTO or send count; in use (an OS error of kind
/// `AddrInUse`) when `local_port` cannot be bound; timeout when no valid answer came
/// within [`StunOptions::total_timeout`]; an OS error for an error response or a reply
/// without a mapped address.
pub fn stun_binding(server: SocketAddr, opts: &StunOptions) -> Result<StunResult> {
    if opts.rto.is_zero() || opts.max_sends == 0 {
        return Err(Error::invalid("the STUN RTO and the number of sends must be above zero"));
    }
    let bind_ip = match server.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let bind = SocketAddr::new(bind_ip, opts.local_port.unwrap_or(0));
    // std's sockets are close-on-exec.
    let sock = UdpSocket::bind(bind).map_err(|e| Error::os(format!("binding the STUN client socket to {bind}"), e))?;
    let local = sock.local_addr().map_err(|e| Error::os("reading the STUN socket's address", e))?;

    let mut id = [0u8; 12];
    id[..8].copy_from_slice(&crate::strategy::random_u64().to_le_bytes());
    id[8..].copy_from_slice(&(crate::strategy::random_u64() as u32).to_le_bytes());
    let tid = TransactionId::new(id);
    let mut request = Message::<Attribute>::new(MessageClass::Request, BINDING, tid);
    if let Ok(s) = Software::new(format!("portmgr {}", crate::VERSION)) {
        request.add_attribute(s);
    }
    let bytes = MessageEncoder::new()
        .encode_into_bytes(request)
        .map_err(|e| Error::Internal(format!("encoding a STUN binding request: {e}")))?;

    let started = Instant::now();
    let mut rto = opts.rto;
    let mut ignored = 0u32;
    let mut buf = [0u8; 1500];
    for send in 1..=opts.max_sends {
        sock.send_to(&bytes, server).map_err(|e| Error::os(format!("sending a STUN request to {server}"), e))?;
        let wait = if send == opts.max_sends { opts.rto * opts.last_wait_rtos } else { rto };
        let until = Instant::now() + wait;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            sock.set_read_timeout(Some(left)).map_err(|e| Error::os("setting the STUN socket's timeout", e))?;
            let (n, from) = match sock.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break,
                // An ICMP port unreachable from an earlier send: keep waiting, as for silence.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(Error::os(format!("receiving from STUN server {server}"), e)),
            };
            if from != server {
                ignored += 1;
                continue;
            }
            match parse_response(&buf[..n], tid)? {
                Some(mapped) => return Ok(StunResult { mapped, local, server, sends: send }),
                None => ignored += 1,
            }
        }
        rto *= 2;
    }
    let extra = if ignored > 0 { format!("; {ignored} datagram(s) that were not its answer were ignored") } else { String::new() };
    Err(Error::wait_timeout(format!(
        "no STUN answer from {server} after {} send(s) over {:.1?}{extra}",
        opts.max_sends,
        started.elapsed()
    )))
}

/// The mapped address in a STUN datagram answering transaction `tid`: `Ok(None)` when
/// the datagram is not such an answer (not STUN, another transaction, another method),
/// an error for an error response or a success without any mapped address.
pub fn parse_response(datagram: &[u8], tid: TransactionId) -> Result<Option<SocketAddr>> {
    let decoded = match MessageDecoder::<Attribute>::new().decode_from_bytes(datagram) {
        Ok(Ok(m)) => m,
        // Not a STUN message, or a broken one: not our answer.
        Ok(Err(_)) | Err(_) => return Ok(None),
    };
    if decoded.transaction_id() != tid || decoded.method() != BINDING {
        return Ok(None);
    }
    match decoded.class() {
        MessageClass::SuccessResponse => {}
        MessageClass::ErrorResponse => {
            let why = decoded
                .get_attribute::<ErrorCode>()
                .map(|e| format!("{} {}", e.code(), e.reason_phrase()))
                .unwrap_or_else(|| "no ERROR-CODE".into());
            return Err(stun_err("the STUN server answered with an error".into(), why));
        }
        _ => return Ok(None),
    }
    if let Some(x) = decoded.get_attribute::<XorMappedAddress>() {
        return Ok(Some(x.address()));
    }
    if let Some(m) = decoded.get_attribute::<MappedAddress>() {
        return Ok(Some(m.address()));
    }
    Err(stun_err("the STUN server's answer".into(), "has neither XOR-MAPPED-ADDRESS nor MAPPED-ADDRESS"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_total_time() {
        assert_eq!(StunOptions::default().total_timeout(), Duration::from_millis(39_500));
    }

    #[test]
    fn answers_are_checked() {
        let tid = TransactionId::new([7; 12]);
        let mut m = Message::<Attribute>::new(MessageClass::SuccessResponse, BINDING, tid);
        m.add_attribute(XorMappedAddress::new("192.0.2.1:4000".parse().unwrap()));
        let bytes = MessageEncoder::new().encode_into_bytes(m).unwrap();
        assert_eq!(parse_response(&bytes, tid).unwrap(), Some("192.0.2.1:4000".parse().unwrap()));
        assert_eq!(parse_response(&bytes, TransactionId::new([8; 12])).unwrap(), None);
        assert_eq!(parse_response(&bytes[..7], tid).unwrap(), None);
        let mut old = Message::<Attribute>::new(MessageClass::SuccessResponse, BINDING, tid);
        old.add_attribute(MappedAddress::new("192.0.2.2:5000".parse().unwrap()));
        let bytes = MessageEncoder::new().encode_into_bytes(old).unwrap();
        assert_eq!(parse_response(&bytes, tid).unwrap(), Some("192.0.2.2:5000".parse().unwrap()));
        let empty = Message::<Attribute>::new(MessageClass::SuccessResponse, BINDING, tid);
        let bytes = MessageEncoder::new().encode_into_bytes(empty).unwrap();
        assert!(parse_response(&bytes, tid).is_err());
    }
}
