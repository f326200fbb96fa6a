//! `portmgr nat`: NAT traversal over the core's [`crate::nat`]; this file only parses
//! options and renders results.

use std::net::Ipv4Addr;
use std::time::Duration;

use clap::Subcommand;
use serde_json::json;

use super::args::{Format, parse_duration};
use super::output::{emit, emit_json, no_env};
use super::{Cli, EXIT_OK, EXIT_OTHER, EXIT_USAGE, R, fail, open_registry};
use crate::nat::{MapMethod, MapOptions, MapProtocol, Mapping, MappingState, PortMapping, StunOptions, stun_query, unmap_port};
use crate::sys::SignalSet;

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

  portmgr nat map 8080 --follow --lifetime 10m     # renewed until 8080's lease ends

Asks for the same external port; prints the gateway's external address and the port
granted. Run it again before the lifetime ends to renew. auto tries NAT-PMP, then
UPnP IGD (SSDP discovery; --gateway sends the search to that address only).

--follow ties the mapping to the lease holding PORT: portmgr stays running, renews at
half the granted lifetime, and deletes the mapping when the lease is released or
expires (status 0, or 1 with the error when the deletion failed) or on SIGINT/SIGTERM
(status 0). Without it, the mapping lasts its lifetime.")]
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
        /// Stay running: renew while the lease holding PORT lives, delete it when the lease ends
        #[arg(long)]
        follow: bool,
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

pub(super) fn nat(cli: &Cli, fmt: Format, cmd: &NatCmd) -> R<i32> {
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
        NatCmd::Map { port, protocol, gateway, lifetime, udp, follow: false } => {
            no_env(fmt, "nat map")?;
            let (m, method) = crate::nat::map_with(*port, MapProtocol::of_udp(*udp), *protocol, *gateway, *lifetime)?;
            print_mapping(fmt, &m, method, None, false)?;
            Ok(EXIT_OK)
        }
        NatCmd::Map { port, protocol, gateway, lifetime, udp, follow: true } => {
            no_env(fmt, "nat map")?;
            let opts = MapOptions {
                method: *protocol,
                gateway: *gateway,
                transport: MapProtocol::of_udp(*udp),
                lifetime: *lifetime,
                require_lease: true,
                ..Default::default()
            };
            follow(cli, fmt, *port, &opts)
        }
        NatCmd::Unmap { port, protocol, gateway, udp } => {
            no_env(fmt, "nat unmap")?;
            unmap_port(*port, MapProtocol::of_udp(*udp), *protocol, *gateway)?;
            if fmt == Format::Json {
                emit_json(&json!({ "port": port, "protocol": MapProtocol::of_udp(*udp).as_str(), "unmapped": true }))?;
            } else {
                emit(&format!("unmapped {port} ({})\n", MapProtocol::of_udp(*udp)))?;
            }
            Ok(EXIT_OK)
        }
    }
}

/// The granted mapping: `EXT_ADDR:EXT_PORT (tcp) -> ...`, or the JSON object (on one
/// line when `line`: `--follow` prints JSON lines).
fn print_mapping(fmt: Format, m: &PortMapping, method: MapMethod, lease_id: Option<u64>, line: bool) -> R<()> {
    // The external address, for the output only (a failure leaves it out).
    let ext = crate::nat::external_address(method, Some(m.gateway)).map(|a| a.to_string()).ok();
    if fmt == Format::Json {
        json_out(line, &json!({
            "gateway": m.gateway.to_string(),
            "protocol": m.protocol.as_str(),
            "method": method.as_str(),
            "internal_port": m.internal_port,
            "external_address": ext,
            "external_port": m.external_port,
            "lifetime_s": m.lifetime.as_secs(),
            "lease_id": lease_id,
        }))
    } else {
        let at = ext.map_or(format!("port {}", m.external_port), |a| format!("{a}:{}", m.external_port));
        let tie = lease_id.map_or(String::new(), |id| format!(", renewed while lease {id} lives"));
        emit(&format!("{at} ({}) -> this host's port {} for {} s{tie}\n", m.protocol, m.internal_port, m.lifetime.as_secs()))
    }
}

/// `nat map --follow`: the core's lease-tied [`Mapping`]; this thread waits for its end
/// while another takes SIGINT/SIGTERM and deletes it.
fn follow(cli: &Cli, fmt: Format, port: u16, opts: &MapOptions) -> R<i32> {
    let reg = open_registry(cli)?;
    // Blocked before the follower thread starts (it inherits the mask).
    let set = SignalSet::of(&[libc::SIGINT, libc::SIGTERM]);
    set.block().map_err(|e| fail(EXIT_OTHER, format!("blocking SIGINT and SIGTERM: {e}")))?;
    let m: Mapping = match crate::nat::map(&reg, port, opts) {
        Ok(m) => m,
        Err(e) if e.code() == crate::ErrorCode::NotFound => {
            return Err(fail(
                EXIT_USAGE,
                format!("{e}: allocate it first (portmgr alloc --preferred {port} --required --ttl 1h), or map it without --follow"),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    print_mapping(fmt, &m.granted(), m.method(), m.lease_id(), true)?;
    let on_signal = m.clone();
    std::thread::Builder::new()
        .name("portmgr-signals".into())
        .spawn(move || {
            while let Err(e) = set.wait() {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    break;
                }
            }
            let _ = on_signal.delete();
        })
        .map_err(|e| fail(EXIT_OTHER, format!("starting the signal thread: {e}")))?;
    m.wait_ended(None);
    let (state, error) = (m.state(), m.last_error());
    if fmt == Format::Json {
        json_out(true, &json!({ "port": port, "state": state.as_str(), "renewals": m.renewals(), "error": error }))?;
    } else if error.is_none() {
        let why = if state == MappingState::LeaseEnded { "its lease ended" } else { "stopped" };
        emit(&format!("unmapped {port} ({}): {why}\n", opts.transport))?;
    }
    match error {
        Some(e) => Err(fail(EXIT_OTHER, e)),
        None => Ok(EXIT_OK),
    }
}

fn json_out(line: bool, v: &serde_json::Value) -> R<()> {
    if line { emit(&format!("{v}\n")) } else { emit_json(v) }
}
