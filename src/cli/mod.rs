//! The `portmgr` command line: parsing and printing over core calls.
//!
//! Where things are: `args` holds the clap definitions and value parsers, `output`
//! the rendering helpers (escaping, JSON, `.env` lines, durations), `leases` the
//! commands on ports (alloc, release, renew, gc, list, stats, check, scan, wait),
//! `reserved` the registry's reserved ports, `overview` the stats and overview, `serve`
//! the hand-over to the server (the `portmgr-serve` crate),
//! `services` export, import and groups, `health` the health report, `run` the `run`
//! command (spawn, fd hand-over, signal forwarding); this file the entry point, the
//! dispatch and the exit statuses.
//!
//! Everything a command does is a call into the core ([`Registry`], [`probe`],
//! [`mapping`](crate::mapping) for service types, groups, export and import); this
//! module only parses arguments, prints results and maps errors to exit statuses. The
//! cargo binary `portmgr` and the Python console script both call [`main_with_args`].
//!
//! # Exit statuses
//!
//! | status | meaning |
//! | --- | --- |
//! | 0 | success (`check`: every port free; `health`: healthy) |
//! | 1 | any other error (an operating-system error, a bug) |
//! | 2 | usage: a bad option, argument or value (`check`: a port is privileged for this user and none is in use) |
//! | 3 | exhausted: no free port in the range |
//! | 4 | in use: the port or service name is held (`check`: some port is in use) |
//! | 5 | not found: no lease with that port or name |
//! | 6 | registry problem: the registry directory or file cannot be used |
//! | 7 | timeout (`wait`, or the registry lock); `reach`: no candidate is reachable |
//! | 8 | not owner: the lease belongs to another live process |
//! | 9 | unhealthy (`health`) |
//!
//! `run` exits with its command's status (128 + N when the command was killed by
//! signal N; 126 when it cannot be executed, 127 when it is not found), or with one of
//! the statuses above when portmgr fails before the command starts.
//!
//! # Lifetime of `alloc`
//!
//! A port from `portmgr alloc` outlives the command. By default it is held while the
//! calling process (the parent of `portmgr`, normally the shell running the script)
//! lives, identified by pid and start time so a recycled pid does not keep it. `--owner
//! PID` watches that process instead; `--ttl D` alone holds it for D (renewable with
//! `portmgr renew`) whether or not the shell lives; `--owner PID --ttl D` ends at the
//! first of the two. Any process of the user may `portmgr release` it earlier.

mod args;
mod health;
mod leases;
mod nat;
mod output;
mod overview;
mod reserved;
mod resolve;
mod run;
mod serve;
mod services;

use std::ffi::OsString;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches};

use crate::error::{Error, ErrorCode};
use crate::mapping::{Metadata, Services};
use crate::registry::{Registry, Request};

use args::{Cli, Cmd, Format, GroupCmd};
pub use args::{MAX_DURATION, parse_duration};
pub use serve::{ServeFn, ServeOptions, set_serve};
use output::{one_line, shown};

/// Exit status: success.
pub const EXIT_OK: i32 = 0;
/// Exit status: any other error.
pub const EXIT_OTHER: i32 = 1;
/// Exit status: bad usage (option, argument or value).
pub const EXIT_USAGE: i32 = 2;
/// Exit status: no free port.
pub const EXIT_EXHAUSTED: i32 = 3;
/// Exit status: a port or name is in use.
pub const EXIT_IN_USE: i32 = 4;
/// Exit status: no such lease.
pub const EXIT_NOT_FOUND: i32 = 5;
/// Exit status: the registry cannot be used.
pub const EXIT_REGISTRY: i32 = 6;
/// Exit status: a wait ran out of time.
pub const EXIT_TIMEOUT: i32 = 7;
/// Exit status: the lease belongs to another live process.
pub const EXIT_NOT_OWNER: i32 = 8;
/// Exit status: `health` found problems.
pub const EXIT_UNHEALTHY: i32 = 9;

/// Run the `portmgr` command with `args` (including `argv[0]`) and return its exit status.
///
/// Used by the cargo binary and by the Python console script. It never exits the process
/// and never panics out: a caught panic is reported and gives status 1.
pub fn main_with_args(args: Vec<OsString>) -> i32 {
    match std::panic::catch_unwind(|| main_inner(args)) {
        Ok(code) => code,
        Err(_) => {
            eprintln!("portmgr: internal error (a bug in portmgr, please report it)");
            EXIT_OTHER
        }
    }
}

fn main_inner(args: Vec<OsString>) -> i32 {
    let cmd = Cli::command().bin_name("portmgr").color(clap::ColorChoice::Never);
    let cli = match cmd.try_get_matches_from(args).and_then(|m| Cli::from_arg_matches(&m)) {
        Ok(c) => c,
        Err(e) => return clap_error(e),
    };
    let code = match dispatch(&cli) {
        Ok(code) => code,
        Err(f) => {
            eprintln!("portmgr: {}", one_line(&f.msg));
            f.code
        }
    };
    // What the registry did on its own (a damaged file moved aside, a reboot seen, damage
    // found or repaired): the core keeps it in notices(); a person reads it here.
    let opened = std::mem::take(&mut *OPENED.lock().unwrap_or_else(|e| e.into_inner()));
    for reg in opened {
        for n in reg.notices() {
            eprintln!("{}", one_line(&n));
        }
    }
    code
}

/// Every registry handle this command opened, for its notices.
static OPENED: std::sync::Mutex<Vec<Registry>> = std::sync::Mutex::new(Vec::new());

/// Help and version go to stdout with status 0; usage errors become one line on stderr
/// with status 2.
fn clap_error(e: clap::Error) -> i32 {
    use clap::error::ErrorKind::*;
    match e.kind() {
        DisplayHelp | DisplayVersion => {
            let _ = e.print();
            EXIT_OK
        }
        DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            EXIT_USAGE
        }
        _ => {
            let text = e.to_string();
            let parts: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("Usage:"))
                .map(|l| l.strip_prefix("error: ").unwrap_or(l))
                .collect();
            eprintln!("portmgr: {}", shown(&parts.join("; ")));
            EXIT_USAGE
        }
    }
}

// ---------------------------------------------------------------------------------------
// Errors

/// A command's failure: the exit status and a one-line message for stderr.
#[derive(Debug)]
struct Fail {
    code: i32,
    msg: String,
}

type R<T> = std::result::Result<T, Fail>;

fn fail(code: i32, msg: impl Into<String>) -> Fail {
    Fail { code, msg: msg.into() }
}

/// The exit status of a core error.
pub fn exit_code(e: &Error) -> i32 {
    match e.code() {
        ErrorCode::InvalidArgument => EXIT_USAGE,
        ErrorCode::Exhausted => EXIT_EXHAUSTED,
        ErrorCode::InUse => EXIT_IN_USE,
        ErrorCode::NotFound => EXIT_NOT_FOUND,
        ErrorCode::NotOwner => EXIT_NOT_OWNER,
        ErrorCode::Timeout => EXIT_TIMEOUT,
        ErrorCode::RegistryCorrupt | ErrorCode::InsecureDirectory => EXIT_REGISTRY,
        ErrorCode::Os | ErrorCode::Internal => EXIT_OTHER,
        #[allow(unreachable_patterns)]
        _ => EXIT_OTHER,
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        let mut msg = e.to_string();
        if let Error::NameInUse { name, ports } = &e {
            let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
            msg = format!(
                "service name {name:?} is already held (port {}); use it (`portmgr list --name {name}`) or release it first (`portmgr release --name {name}`)",
                ports.join(", ")
            );
        }
        match e.code() {
            // Not for an unknown reservation: its message names `portmgr reserved list`.
            ErrorCode::NotFound if !msg.contains("portmgr reserved list") => msg.push_str("; see `portmgr list` for what is held"),
            ErrorCode::InUse if matches!(e, Error::PortInUse { .. }) => {
                msg.push_str("; ask for another port (or drop --required); `portmgr list` shows who holds what")
            }
            ErrorCode::NotOwner => msg.push_str(" (see `portmgr list`)"),
            _ => {}
        }
        Fail { code: exit_code(&e), msg }
    }
}

// ---------------------------------------------------------------------------------------
// Dispatch and what every command shares

fn dispatch(cli: &Cli) -> R<i32> {
    let fmt = if cli.json { Format::Json } else { cli.format.unwrap_or(Format::Plain) };
    if fmt == Format::Nginx && !matches!(cli.cmd, Cmd::Export(_)) {
        return Err(fail(EXIT_USAGE, "--format nginx is for export only; use --format plain, json or env"));
    }
    match &cli.cmd {
        Cmd::Export(a) => services::export(cli, a),
        Cmd::Import(a) => services::import(cli, fmt, a),
        Cmd::Group { cmd: GroupCmd::Alloc(a) } => services::group_alloc(cli, fmt, a),
        Cmd::Group { cmd: GroupCmd::Release { name } } => services::group_release(cli, fmt, name),
        Cmd::Group { cmd: GroupCmd::List } => services::group_list(cli, fmt),
        Cmd::Alloc(a) => leases::alloc(cli, fmt, a),
        Cmd::Release { ports, name, id } => leases::release(cli, fmt, ports, name.as_deref(), *id),
        Cmd::Renew { port, name, id, ttl } => leases::renew(cli, fmt, *port, name.as_deref(), *id, *ttl),
        Cmd::Gc { damaged } => leases::gc(cli, fmt, *damaged),
        Cmd::List { name, port, owner, service_type, group } => {
            leases::list(cli, fmt, name.as_deref(), *port, *owner, service_type.as_deref(), group.as_deref())
        }
        Cmd::Stats => overview::stats(cli, fmt),
        Cmd::Overview => overview::overview(cli, fmt),
        Cmd::Health { threshold, watch: Some(every), .. } => health::watch(cli, fmt, *threshold, *every),
        Cmd::Health { history: true, .. } => health::history(cli, fmt),
        Cmd::Health { threshold, .. } => health::health(cli, fmt, *threshold),
        Cmd::Reach { targets, timeout } => leases::reach(fmt, targets, *timeout),
        Cmd::Check { ports, proto } => leases::check(cli, fmt, ports, *proto),
        Cmd::Scan { range, proto } => leases::scan(cli, fmt, range, *proto),
        Cmd::Wait { target, timeout } => leases::wait(fmt, target, *timeout),
        Cmd::Run(r) => run::run(cli, r),
        Cmd::Reserved { cmd } => reserved::reserved(cli, fmt, cmd),
        Cmd::Serve(a) => serve::serve(cli, a),
        Cmd::Resolve(a) => resolve::resolve(fmt, a),
        Cmd::Nat { cmd } => nat::nat(cli, fmt, cmd),
    }
}

/// Open the registry; any failure to do so is a registry problem (status 6), except a
/// lock timeout (7).
fn open_registry(cli: &Cli) -> R<Registry> {
    let r = match &cli.registry {
        Some(d) => Registry::open(d),
        None => Registry::open_default(),
    };
    if let Ok(reg) = &r {
        OPENED.lock().unwrap_or_else(|e| e.into_inner()).push(reg.clone());
    }
    r.map_err(|e| {
        let code = match e.code() {
            ErrorCode::Timeout => EXIT_TIMEOUT,
            ErrorCode::InvalidArgument => EXIT_USAGE, // PORTMGR_DIR set but empty
            _ => EXIT_REGISTRY,
        };
        // EMFILE/ENFILE: the core's message already says what to do; the directory is fine.
        let too_many_files = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
        let hint = if matches!(e.code(), ErrorCode::Os) && !too_many_files {
            "; check the directory (or pass another with --registry DIR / PORTMGR_DIR)"
        } else {
            ""
        };
        fail(code, format!("{e}{hint}"))
    })
}

/// The mapping layer on `reg`, with the service types config in force (a broken config
/// file is a usage error naming the file, line and field).
fn services(reg: Registry) -> R<Services> {
    Ok(Services::new(reg)?)
}

/// `alloc`'s default lifetime (see the module docs) applied to `req`: watch `owner`, else
/// the calling process unless a TTL is given. Returns the request and the watched pid.
fn with_lifetime(mut req: Request, owner: Option<u32>, ttl: Option<Duration>) -> (Request, Option<u32>) {
    let watch = match (owner, ttl) {
        (Some(pid), _) => Some(pid),
        (None, Some(_)) => None,
        (None, None) => Some(std::os::unix::process::parent_id()),
    };
    if let Some(t) = ttl {
        req = req.ttl(t);
    }
    if let Some(w) = watch {
        req = req.watch_pid(w);
    }
    (req, watch)
}

fn metadata(items: &[(String, String)]) -> Metadata {
    items.iter().cloned().collect()
}
