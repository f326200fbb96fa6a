//! `portmgr nat`: NAT traversal over the core's [`crate::nat`]; this file only parses
//! options and renders results.

use std::net::Ipv4Addr;
use std::time::Duration;

use clap::Subcommand;
use serde_json::json;

use super::args::{Format, parse_duration};
use super::output::{emit, emit_json, no_env};
use super::{EXIT_OK, R};
use crate::nat::{MapMethod, MapProtocol, StunOptions, map_port, stun_query, unmap_port};

#[derive(Subcommand, Debug, Clone)]
pub(super) enum NatCmd {
    /// This host's address as a STUN server sees it (RFC 8489 binding request over UDP)
    #[command(after_help = "\
Examples:
  portmgr nat external-ip --stun stun.example.net:3478
  portmgr nat external-ip --stun 127.0.0.1:3478 --local-port 17400 --json

The request is retransmitted with a doubling timeout (500 ms, 1 s, 2 s, ... 7 sends,
then 8 s), so a silent server is given up on after 39.5 s with status 7.")]
    ExternalIp {
        /// The STUN server, HOST:PORT
        #[arg(long, value_name = "HOST:PORT")]
        stun: String,
        /// Send from this local UDP port (learn the external address of a port you hold)
        #[arg(long, value_name = "PORT")]
        local_port: Option<u16>,
    },
    /// Map PORT of this host on the gateway (NAT-PMP or UPnP IGD), so it is reachable from outside
    #[command(after_help = "\
Examples:
  portmgr nat map 8080
  portmgr nat map 5353 --udp --lifetime 2h --gateway 192.168.1.1 --json

Asks for the same external port; prints the gateway's external address and the port
granted. Run it again before the lifetime ends to renew. auto tries NAT-PMP, then
UPnP IGD (SSDP discovery; --gateway sends the search to that address only).")]
    Map {
        /// This host's port
        port: u16,
        /// natpmp, upnp or auto
        #[arg(long, default_value = "auto", value_parser = parse_method)]
        protocol: MapMethod,
        /// The gateway (default: the IPv4 default route's)
        #[arg(long, value_name = "IP")]
        gateway: Option<Ipv4Addr>,
        /// How long the mapping lasts unless renewed
        #[arg(long, default_value = "1h", value_parser = parse_duration, value_name = "DURATION")]
        lifetime: Duration,
        /// Map UDP instead of TCP
        #[arg(long)]
        udp: bool,
    },
    /// Delete the gateway's mapping of PORT
    Unmap {
        /// This host's port
        port: u16,
        /// natpmp, upnp or auto
        #[arg(long, default_value = "auto", value_parser = parse_method)]
        protocol: MapMethod,
        /// The gateway (default: the IPv4 default route's)
        #[arg(long, value_name = "IP")]
        gateway: Option<Ipv4Addr>,
        /// The UDP mapping instead of the TCP one
        #[arg(long)]
        udp: bool,
    },
}

fn parse_method(s: &str) -> Result<MapMethod, String> {
    s.parse().map_err(|e: crate::Error| e.to_string())
}

fn transport(udp: bool) -> MapProtocol {
    if udp { MapProtocol::Udp } else { MapProtocol::Tcp }
}

pub(super) fn nat(fmt: Format, cmd: &NatCmd) -> R<i32> {
    match cmd {
        NatCmd::ExternalIp { stun, local_port } => {
            no_env(fmt, "nat external-ip")?;
            let r = stun_query(stun, &StunOptions { local_port: *local_port, ..StunOptions::default() })?;
            if fmt == Format::Json {
                emit_json(&json!({
                    "address": r.mapped.ip().to_string(),
                    "port": r.mapped.port(),
                    "local_port": r.local.port(),
                    "server": r.server.to_string(),
                }))?;
            } else {
                emit(&format!("{}\n", r.mapped))?;
            }
            Ok(EXIT_OK)
        }
        NatCmd::Map { port, protocol, gateway, lifetime, udp } => {
            no_env(fmt, "nat map")?;
            let m = map_port(*port, transport(*udp), *protocol, *gateway, *lifetime)?;
            // The external address, for the output only (a failure leaves it out).
            let ext = crate::nat::external_address(*protocol, Some(m.gateway)).map(|a| a.to_string()).ok();
            if fmt == Format::Json {
                emit_json(&json!({
                    "gateway": m.gateway.to_string(),
                    "protocol": m.protocol.as_str(),
                    "internal_port": m.internal_port,
                    "external_address": ext,
                    "external_port": m.external_port,
                    "lifetime_s": m.lifetime.as_secs(),
                }))?;
            } else {
                let at = ext.map_or(format!("port {}", m.external_port), |a| format!("{a}:{}", m.external_port));
                emit(&format!("{at} ({}) -> this host's port {} for {} s\n", m.protocol, m.internal_port, m.lifetime.as_secs()))?;
            }
            Ok(EXIT_OK)
        }
        NatCmd::Unmap { port, protocol, gateway, udp } => {
            no_env(fmt, "nat unmap")?;
            unmap_port(*port, transport(*udp), *protocol, *gateway)?;
            if fmt == Format::Json {
                emit_json(&json!({ "port": port, "protocol": transport(*udp).as_str(), "unmapped": true }))?;
            } else {
                emit(&format!("unmapped {port} ({})\n", transport(*udp)))?;
            }
            Ok(EXIT_OK)
        }
    }
}
