//! `portmgr serve`: the registry over HTTP and portpicker's portserver protocol.
//!
//! A skin like the command line: every request becomes core calls ([`Registry`],
//! [`Services`]) and every core error a response; nothing is decided here that a library
//! user could not get from the core. Leases the server grants are ordinary registry
//! leases — a watched pid, or a TTL renewed by heartbeats — kept (detached) from the
//! server process, so stopping or restarting it loses nothing.
//!
//! - [`rest`]: the port registry REST API (`/ports/...`) and the gRPC-style port server
//!   (`/get`, `/drop/{port}`, `/version_number`, `/dump`), on axum.
//! - [`portserver`]: portpicker's protocol on a Unix socket (`PORTSERVER_ADDRESS`).
//! - [`peer`]: who is asking (`SO_PEERCRED`, the kernel's TCP socket table), the bearer
//!   token, the per-client rate limit.
//! - [`listen`]: binding (TCP, Unix paths, the abstract namespace, systemd's `LISTEN_FDS`).
//! - [`api`]: the request and response shapes and the OpenAPI document.

mod api;
mod listen;
mod peer;
mod portserver;
mod rest;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use portmgr::cli::ServeOptions;
use portmgr::mapping::Services;
use portmgr::{ErrorCode, Registry};

pub use api::openapi_json;

/// Exit status of a usage problem (bad option, an address that needs a token).
const EXIT_USAGE: i32 = 2;
/// Exit status when an address is in use.
const EXIT_IN_USE: i32 = 4;
/// Exit status when the registry cannot be used.
const EXIT_REGISTRY: i32 = 6;
/// Any other failure.
const EXIT_OTHER: i32 = 1;

/// What every handler shares.
pub(crate) struct State {
    pub(crate) reg: Registry,
    pub(crate) svc: Services,
    /// TTL of a REST allocation without a `process_id`.
    pub(crate) heartbeat: Duration,
    pub(crate) guard: peer::Guard,
}

/// A startup failure: an exit status and a message.
pub(crate) struct Fail(pub(crate) i32, pub(crate) String);

/// Run the server as `opts` says until SIGTERM or SIGINT; the exit status.
pub fn serve(opts: ServeOptions) -> i32 {
    if opts.print_openapi {
        println!("{}", openapi_json());
        return 0;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portmgr: starting the server's runtime: {e}");
            return EXIT_OTHER;
        }
    };
    match rt.block_on(run(opts)) {
        Ok(()) => 0,
        Err(Fail(code, msg)) => {
            eprintln!("portmgr: {msg}");
            code
        }
    }
}

async fn run(opts: ServeOptions) -> Result<(), Fail> {
    let reg = match &opts.registry {
        Some(d) => Registry::open(d),
        None => Registry::open_default(),
    }
    .map_err(|e| {
        let code = if e.code() == ErrorCode::InvalidArgument { EXIT_USAGE } else { EXIT_REGISTRY };
        Fail(code, e.to_string())
    })?;
    let svc = Services::new(reg.clone()).map_err(|e| Fail(EXIT_USAGE, e.to_string()))?;
    let token = match &opts.token_file {
        Some(path) => Some(peer::read_token(path).map_err(|e| Fail(EXIT_USAGE, e))?),
        None => None,
    };
    // The handlers first: a SIGTERM sent as soon as the listener lines appear must stop
    // the server cleanly, not kill it.
    let signals = Signals::install().map_err(|e| Fail(EXIT_OTHER, format!("installing the signal handlers: {e}")))?;
    let bound = listen::bind(&opts, token.is_some()).await?;
    let state = Arc::new(State {
        reg,
        svc,
        heartbeat: opts.heartbeat_timeout,
        guard: peer::Guard::new(token, opts.rate_limit),
    });

    // Every listener is bound: say where, one line each, then serve.
    {
        let mut out = std::io::stdout().lock();
        for l in &bound.http {
            let _ = writeln!(out, "http http://{}", l.local_addr().map_err(|e| Fail(EXIT_OTHER, e.to_string()))?);
        }
        for p in &bound.portserver {
            let _ = writeln!(out, "portserver {}", p.name);
        }
        let _ = out.flush();
    }

    // The health monitor: one check every --health-interval, recorded in the registry's
    // health history (GET /ports/health/history); stopped with the server.
    let monitor = if opts.health_interval.is_zero() {
        None
    } else {
        let interval = opts.health_interval.max(portmgr::mapping::MIN_INTERVAL);
        Some(
            portmgr::mapping::HealthMonitor::start(state.svc.clone(), interval, 0.9, |_| {})
                .map_err(|e| Fail(EXIT_OTHER, format!("starting the health monitor: {e}")))?,
        )
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let app = rest::router(Arc::clone(&state), &opts);
    for l in bound.http {
        let app = app.clone();
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            let service = app.into_make_service_with_connect_info::<peer::Peer>();
            let _ = axum::serve(l, service)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
        });
    }
    for p in bound.portserver {
        let state = Arc::clone(&state);
        let stop = stop_rx.clone();
        tasks.spawn(portserver::serve(p, state, stop));
    }
    signals.wait().await;
    let _ = stop_tx.send(true);
    // In-flight requests finish; a client holding a connection open does not keep the
    // server up past a few seconds.
    let _ = tokio::time::timeout(Duration::from_secs(5), async { while tasks.join_next().await.is_some() {} }).await;
    if let Some(m) = monitor {
        tokio::task::block_in_place(|| m.stop());
    }
    Ok(())
}

/// SIGTERM and SIGINT, caught from the moment they are installed.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }
    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
