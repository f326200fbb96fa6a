//! `portmgr resolve`: the core's resolver ([`crate::resolve`]); this file only parses
//! options and renders endpoints.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use serde_json::json;

use super::args::{Format, parse_duration};
use super::output::{emit, emit_json, no_env, shown};
use super::{EXIT_OK, Fail, R, exit_code};
use crate::resolve::{Endpoint, Policy, Resolver, ResolverOptions};

#[derive(Args, Debug, Clone)]
pub(super) struct ResolveArgs {
    /// HOST:PORT, [IPV6]:PORT, or an SRV name _service._proto.domain
    #[arg(value_name = "NAME")]
    pub(super) name: String,
    /// Ask this DNS server (IP:PORT) instead of the system's; repeatable
    #[arg(long, value_name = "IP:PORT")]
    pub(super) server: Vec<SocketAddr>,
    /// Print only the endpoint this policy picks: round-robin, weighted or priority
    #[arg(long, value_name = "POLICY", value_parser = parse_policy)]
    pub(super) policy: Option<Policy>,
    /// Timeout of one DNS query, e.g. 500ms, 2s
    #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "DURATION")]
    pub(super) timeout: Duration,
}

fn parse_policy(s: &str) -> Result<Policy, String> {
    s.parse().map_err(|e: crate::Error| e.to_string())
}

fn endpoint_json(e: &Endpoint) -> serde_json::Value {
    json!({ "address": e.addr.ip().to_string(), "port": e.addr.port(), "target": e.target, "priority": e.priority, "weight": e.weight })
}

fn endpoint_line(e: &Endpoint) -> String {
    format!("{} {} priority={} weight={}\n", e.addr, shown(&e.target), e.priority, e.weight)
}

/// Every endpoint of the name (plain: one per line, address first), or with --policy
/// only the one it picks; JSON has both (`pick` by round-robin when no policy is given).
pub(super) fn resolve(fmt: Format, a: &ResolveArgs) -> R<i32> {
    no_env(fmt, "resolve")?;
    let mut opts = ResolverOptions::new().policy(a.policy.unwrap_or_default()).timeout(a.timeout);
    opts.servers = a.server.clone();
    // The core's message as it is: the hints `From<Error>` adds are about leases.
    let plain = |e: crate::Error| Fail { code: exit_code(&e), msg: e.to_string() };
    let r = Resolver::new(opts).map_err(plain)?;
    let endpoints = r.resolve(&a.name).map_err(plain)?;
    let pick = r.pick(&a.name).map_err(plain)?;
    if fmt == Format::Json {
        emit_json(&json!({
            "name": a.name,
            "policy": a.policy.unwrap_or_default().as_str(),
            "endpoints": endpoints.iter().map(endpoint_json).collect::<Vec<_>>(),
            "pick": endpoint_json(&pick),
        }))?;
    } else if a.policy.is_some() {
        emit(&endpoint_line(&pick))?;
    } else {
        emit(&endpoints.iter().map(endpoint_line).collect::<String>())?;
    }
    Ok(EXIT_OK)
}
