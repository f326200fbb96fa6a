//! `portmgr serve`: the options, parsed here with the rest of the command line, and the
//! hand-over to the server. The server itself (an HTTP stack) is the `portmgr-serve`
//! crate, which the `portmgr` binary links and registers with [`set_serve`]; builds
//! without it (the Python package's console script) say where to get it.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use super::args::{Cli, ServeArgs};
use super::{EXIT_USAGE, R, fail};

/// What `portmgr serve` was asked to do.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// HTTP listeners (`--http`).
    pub http: Vec<std::net::SocketAddr>,
    /// portserver listeners (`--portserver`): a path, or `@NAME` for the abstract namespace.
    pub portserver: Vec<String>,
    /// The registry directory (`--registry`; `None`: the default one).
    pub registry: Option<PathBuf>,
    /// The bearer token's file (`--token-file`).
    pub token_file: Option<PathBuf>,
    /// Origins CORS headers are sent for (`--cors-origin`).
    pub cors_origins: Vec<String>,
    /// The TTL of a REST allocation without a `process_id` (`--heartbeat-timeout`).
    pub heartbeat_timeout: Duration,
    /// Requests per second per client (`--rate-limit`).
    pub rate_limit: u32,
    /// Largest request body in bytes (`--max-body`).
    pub max_body: usize,
    /// Print the OpenAPI document and exit (`--openapi`).
    pub print_openapi: bool,
    /// How often the server's health monitor checks and records (`--health-interval`;
    /// zero: no monitor).
    pub health_interval: Duration,
}

/// The server's entry point: runs until stopped and returns the exit status.
pub type ServeFn = fn(ServeOptions) -> i32;

static SERVE: OnceLock<ServeFn> = OnceLock::new();

/// Register the server (the `portmgr` binary does, with `portmgr_serve::serve`).
pub fn set_serve(f: ServeFn) {
    let _ = SERVE.set(f);
}

pub(super) fn serve(cli: &Cli, a: &ServeArgs) -> R<i32> {
    let Some(run) = SERVE.get() else {
        return Err(fail(
            EXIT_USAGE,
            "this portmgr has no server built in (the Python package's command does not carry the HTTP stack): use the portmgr binary built by cargo (`cargo install --path crates/portmgr-cli`)",
        ));
    };
    if a.http.is_empty() && a.portserver.is_empty() && !a.openapi && std::env::var_os("LISTEN_FDS").is_none() {
        return Err(fail(
            EXIT_USAGE,
            "give at least one listener: --http ADDR (e.g. 127.0.0.1:8080) or --portserver ADDR (e.g. @unittest-portserver), or pass sockets by systemd socket activation",
        ));
    }
    Ok(run(ServeOptions {
        http: a.http.clone(),
        portserver: a.portserver.clone(),
        registry: cli.registry.clone(),
        token_file: a.token_file.clone(),
        cors_origins: a.cors_origin.clone(),
        heartbeat_timeout: a.heartbeat_timeout,
        rate_limit: a.rate_limit,
        max_body: a.max_body,
        print_openapi: a.openapi,
        health_interval: a.health_interval,
    }))
}
