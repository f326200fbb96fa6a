//! NAT traversal (feature `nat`): learning this host's address as seen from outside.
//!
//! [`stun`] sends a STUN binding request (RFC 8489) over UDP and reads the mapped
//! address from the response. [`natpmp`] maps a port on the gateway with NAT-PMP
//! (RFC 6886). UPnP IGD is not here yet.

pub mod natpmp;
pub mod stun;

pub use stun::{StunOptions, StunResult, stun_binding, stun_external_address, stun_query};

use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};
pub use natpmp::{MapProtocol, NatPmpOptions, PortMapping};

/// Which gateway protocol maps a port: NAT-PMP, UPnP IGD, or `Auto` (NAT-PMP, then
/// UPnP). UPnP IGD is not implemented yet: `Upnp` is an invalid argument that says so,
/// and `Auto` is NAT-PMP alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MapMethod {
    /// NAT-PMP first, then UPnP IGD (today: NAT-PMP).
    #[default]
    Auto,
    /// NAT-PMP (RFC 6886).
    NatPmp,
    /// UPnP IGD (not implemented yet).
    Upnp,
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

fn no_upnp() -> Error {
    Error::invalid("UPnP IGD port mapping is not implemented yet: use --protocol natpmp (or auto)")
}

/// Map `port` of this host on the gateway (`gateway`, else the default route's) for
/// `protocol`, for `lifetime`, asking for the same external port. Calling it again renews.
pub fn map_port(
    port: u16,
    protocol: MapProtocol,
    method: MapMethod,
    gateway: Option<std::net::Ipv4Addr>,
    lifetime: Duration,
) -> Result<PortMapping> {
    match method {
        MapMethod::Upnp => Err(no_upnp()),
        MapMethod::Auto | MapMethod::NatPmp => {
            natpmp::map(port, protocol, port, lifetime, &NatPmpOptions { gateway, ..Default::default() })
        }
    }
}

/// Delete the mapping of `port` for `protocol`.
pub fn unmap_port(port: u16, protocol: MapProtocol, method: MapMethod, gateway: Option<std::net::Ipv4Addr>) -> Result<()> {
    match method {
        MapMethod::Upnp => Err(no_upnp()),
        MapMethod::Auto | MapMethod::NatPmp => natpmp::unmap(port, protocol, &NatPmpOptions { gateway, ..Default::default() }),
    }
}
