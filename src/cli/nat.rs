//! `portmgr nat`: NAT traversal over the core's [`crate::nat`]; this file only parses
//! options and renders results.

use clap::Subcommand;
use serde_json::json;

use super::args::Format;
use super::output::{emit, emit_json, no_env};
use super::{EXIT_OK, R};
use crate::nat::{StunOptions, stun_query};

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
    }
}
