//! NAT traversal (feature `nat`): learning this host's address as seen from outside.
//!
//! [`stun`] sends a STUN binding request (RFC 8489) over UDP and reads the mapped
//! address from the response. [`natpmp`] maps a port on the gateway with NAT-PMP
//! (RFC 6886), [`upnp`] with UPnP IGD; [`map_port`] chooses between them, and
//! [`mapping::map`] ties a mapping to the lease that holds the port (renewed while the
//! lease lives, deleted when it is released).

pub mod mapping;
pub mod natpmp;
pub mod stun;
pub mod upnp;

pub use stun::{StunOptions, StunResult, stun_binding, stun_external_address, stun_query};

use std::str::FromStr;
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::error::{Error, Result};
pub use mapping::{MapOptions, Mapping, MappingState, map};
pub use natpmp::{MapProtocol, NatPmpOptions, PortMapping};

/// Which gateway protocol maps a port: NAT-PMP, UPnP IGD, or `Auto` (NAT-PMP, then
/// UPnP IGD when NAT-PMP fails).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MapMethod {
    /// NAT-PMP first, then UPnP IGD.
    #[default]
    Auto,
    /// NAT-PMP (RFC 6886).
    NatPmp,
    /// UPnP IGD (WANIPConnection).
    Upnp,
}

impl MapMethod {
    /// `"auto"`, `"natpmp"` or `"upnp"`.
    pub fn as_str(self) -> &'static str {
        match self {
            MapMethod::Auto => "auto",
            MapMethod::NatPmp => "natpmp",
            MapMethod::Upnp => "upnp",
        }
    }
}

impl FromStr for MapMethod {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(MapMethod::Auto),
            "natpmp" | "nat-pmp" => Ok(MapMethod::NatPmp),
            "upnp" => Ok(MapMethod::Upnp),
            other => Err(Error::invalid(format!("unknown mapping protocol {other:?}: use natpmp, upnp or auto"))),
        }
    }
}

/// How `Auto` tries NAT-PMP: a shorter retransmission than RFC 6886's 9 sends (about
/// 2 s), so that UPnP is tried in reasonable time; a closed port 5351 ends it at once.
fn auto_natpmp(gateway: Option<Ipv4Addr>) -> NatPmpOptions {
    NatPmpOptions { gateway, sends: 4, ..Default::default() }
}

fn both_failed(natpmp: Error, upnp: Error) -> Error {
    let msg = format!("NAT-PMP: {natpmp}; UPnP IGD: {upnp}");
    if natpmp.code() == crate::ErrorCode::Timeout && upnp.code() == crate::ErrorCode::Timeout {
        Error::wait_timeout(msg)
    } else {
        Error::os("no gateway mapped the port", std::io::Error::other(msg))
    }
}

/// Map `port` of this host on the gateway (`gateway`, else the default route's for
/// NAT-PMP, or the first IGD found for UPnP) for `protocol` and `lifetime`, asking for
/// the same external port. Calling it again renews. [`map`] also ties the mapping to
/// the lease that holds the port.
pub fn map_port(port: u16, protocol: MapProtocol, method: MapMethod, gateway: Option<Ipv4Addr>, lifetime: Duration) -> Result<PortMapping> {
    map_with(port, protocol, method, gateway, lifetime).map(|(m, _)| m)
}

/// [`map_port`], and the method that granted the mapping (never `Auto`).
pub(crate) fn map_with(
    port: u16,
    protocol: MapProtocol,
    method: MapMethod,
    gateway: Option<Ipv4Addr>,
    lifetime: Duration,
) -> Result<(PortMapping, MapMethod)> {
    let up = upnp::UpnpOptions { gateway, ..Default::default() };
    let natpmp = |o: &NatPmpOptions| natpmp::map(port, protocol, port, lifetime, o).map(|m| (m, MapMethod::NatPmp));
    let upnp = || upnp::map(port, protocol, port, lifetime, &up).map(|m| (m, MapMethod::Upnp));
    match method {
        MapMethod::NatPmp => natpmp(&NatPmpOptions { gateway, ..Default::default() }),
        MapMethod::Upnp => upnp(),
        MapMethod::Auto => match natpmp(&auto_natpmp(gateway)) {
            Ok(m) => Ok(m),
            Err(e) if e.code() == crate::ErrorCode::InvalidArgument => Err(e),
            Err(n) => upnp().map_err(|u| both_failed(n, u)),
        },
    }
}

/// Delete the mapping of `port` for `protocol` (`Auto`: NAT-PMP, then UPnP IGD).
pub fn unmap_port(port: u16, protocol: MapProtocol, method: MapMethod, gateway: Option<Ipv4Addr>) -> Result<()> {
    let up = upnp::UpnpOptions { gateway, ..Default::default() };
    match method {
        MapMethod::NatPmp => natpmp::unmap(port, protocol, &NatPmpOptions { gateway, ..Default::default() }),
        MapMethod::Upnp => upnp::unmap(port, protocol, &up),
        MapMethod::Auto => match natpmp::unmap(port, protocol, &auto_natpmp(gateway)) {
            Ok(()) => Ok(()),
            Err(e) if e.code() == crate::ErrorCode::InvalidArgument => Err(e),
            Err(n) => upnp::unmap(port, protocol, &up).map_err(|u| both_failed(n, u)),
        },
    }
}

/// The gateway's external address by `method` (`Auto`: NAT-PMP, then UPnP IGD).
pub fn external_address(method: MapMethod, gateway: Option<Ipv4Addr>) -> Result<std::net::IpAddr> {
    let up = upnp::UpnpOptions { gateway, ..Default::default() };
    match method {
        MapMethod::NatPmp => natpmp::external_address(&NatPmpOptions { gateway, ..Default::default() }).map(Into::into),
        MapMethod::Upnp => upnp::external_address(&up),
        MapMethod::Auto => match natpmp::external_address(&auto_natpmp(gateway)) {
            Ok(a) => Ok(a.into()),
            Err(n) => upnp::external_address(&up).map_err(|u| both_failed(n, u)),
        },
    }
}
