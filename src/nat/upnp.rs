//! UPnP IGD port mapping through the `igd-next` crate (its blocking API): SSDP discovery
//! of the gateway, then the WANIPConnection actions `GetExternalIPAddress`,
//! `AddPortMapping` and `DeletePortMapping`. Discovery waits at most
//! [`UpnpOptions::timeout`]; each HTTP request has the crate's 10 s timeout.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use igd_next::{PortMappingProtocol, SearchOptions};

use super::natpmp::{MapProtocol, PortMapping};
use crate::error::{Error, Result};

/// Where and how long to look for the gateway.
#[derive(Clone, Debug)]
pub struct UpnpOptions {
    /// Send the SSDP search to this gateway only (unicast); `None`: multicast
    /// 239.255.255.250:1900 and take the first IGD that answers.
    pub gateway: Option<Ipv4Addr>,
    /// How long discovery may take.
    pub timeout: Duration,
}

impl Default for UpnpOptions {
    fn default() -> Self {
        UpnpOptions { gateway: None, timeout: Duration::from_secs(3) }
    }
}

fn upnp_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::os(format!("UPnP IGD: {what}"), std::io::Error::other(e.to_string()))
}

fn search(opts: &UpnpOptions) -> Result<igd_next::Gateway> {
    let mut s = SearchOptions::default();
    s.timeout = Some(opts.timeout);
    s.single_search_timeout = Some(opts.timeout);
    if let Some(g) = opts.gateway {
        s.broadcast_address = SocketAddr::new(IpAddr::V4(g), 1900);
    }
    igd_next::search_gateway(s).map_err(|e| match e {
        igd_next::SearchError::IoError(io) if matches!(io.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            Error::wait_timeout(format!("no UPnP IGD answered the SSDP search within {:?}", opts.timeout))
        }
        other => upnp_error("discovering the gateway", other),
    })
}

fn gateway_v4(g: &igd_next::Gateway) -> Result<Ipv4Addr> {
    match g.addr.ip() {
        IpAddr::V4(a) => Ok(a),
        IpAddr::V6(a) => Err(upnp_error("the gateway", format!("{a} is IPv6; only IPv4 mappings are supported"))),
    }
}

/// The gateway's external address (`GetExternalIPAddress`).
pub fn external_address(opts: &UpnpOptions) -> Result<IpAddr> {
    search(opts)?.get_external_ip().map_err(|e| upnp_error("GetExternalIPAddress", e))
}

/// Map `internal_port` of this host (at the address it reaches the gateway from) to
/// `external_port` of the gateway for `lifetime` (`AddPortMapping`; 0 s is refused:
/// mappings here always end). Calling it again renews.
pub fn map(internal_port: u16, protocol: MapProtocol, external_port: u16, lifetime: Duration, opts: &UpnpOptions) -> Result<PortMapping> {
    if internal_port == 0 || external_port == 0 {
        return Err(Error::invalid("UPnP mappings need a non-zero internal and external port"));
    }
    let secs = u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX);
    if secs == 0 {
        return Err(Error::invalid("a mapping's lifetime must be at least 1 s (use unmap to delete it)"));
    }
    let g = search(opts)?;
    let gw = gateway_v4(&g)?;
    // The address this host reaches the gateway from: what the gateway forwards to.
    let probe = UdpSocket::bind("0.0.0.0:0").map_err(|e| Error::os("binding a UDP socket", e))?;
    probe.connect((gw, 1900)).map_err(|e| Error::os(format!("routing to the gateway {gw}"), e))?;
    let local = probe.local_addr().map_err(|e| Error::os("reading the local address", e))?.ip();
    let proto = match protocol {
        MapProtocol::Tcp => PortMappingProtocol::TCP,
        MapProtocol::Udp => PortMappingProtocol::UDP,
    };
    g.add_port(proto, external_port, SocketAddr::new(local, internal_port), secs, "portmgr")
        .map_err(|e| upnp_error("AddPortMapping", e))?;
    Ok(PortMapping { gateway: gw, protocol, internal_port, external_port, lifetime: Duration::from_secs(u64::from(secs)) })
}

/// Delete the mapping of `external_port` (`DeletePortMapping`).
pub fn unmap(external_port: u16, protocol: MapProtocol, opts: &UpnpOptions) -> Result<()> {
    let proto = match protocol {
        MapProtocol::Tcp => PortMappingProtocol::TCP,
        MapProtocol::Udp => PortMappingProtocol::UDP,
    };
    search(opts)?.remove_port(proto, external_port).map_err(|e| upnp_error("DeletePortMapping", e))
}
