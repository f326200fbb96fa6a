//! The `portmgr` command line: parsing and printing over core calls.
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
//! | 2 | usage: a bad option, argument or value |
//! | 3 | exhausted: no free port in the range |
//! | 4 | in use: the port or service name is held (`check`: some port is in use) |
//! | 5 | not found: no lease with that port or name |
//! | 6 | registry problem: the registry directory or file cannot be used |
//! | 7 | timeout (`wait`, or the registry lock) |
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

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{CString, OsStr, OsString};
use std::io::{self, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{ArgGroup, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use parking_lot::Mutex;
use serde_json::json;

use crate::error::{Error, ErrorCode};
use crate::mapping::{
    self, ExportFormat, GroupLayout, GroupOptions, ImportFormat, ImportOptions, Metadata, NginxDeploy, Service,
    ServiceSpec, Services,
};
use crate::probe;
use crate::range::{PortRange, Protocols};
use crate::registry::{Lease, LeaseInfo, Registry, Request};
use crate::strategy::Strategy;

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
    match dispatch(&cli) {
        Ok(code) => code,
        Err(f) => {
            eprintln!("portmgr: {}", one_line(&f.msg));
            f.code
        }
    }
}

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

/// A message on one line: its lines joined with `; `, other control characters escaped
/// (see [`shown`]).
fn one_line(s: &str) -> String {
    let joined = s.split('\n').map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ");
    shown(&joined).into_owned()
}

/// Whether [`shown`] escapes `c`: control characters, and the invisible characters that
/// reorder or hide the text around them (bidirectional overrides and isolates, marks, the
/// byte order mark).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// `s` for human output: control characters written as Rust escapes (`\n`, `\r`, `\t`,
/// `\u{1b}`, ...), everything else as it is. Every string field that plain output prints
/// (names, types, groups, members, states, paths, messages) goes through here, so a
/// damaged registry record or side file cannot move the cursor, recolour the terminal or
/// forge lines.
fn shown(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

// ---------------------------------------------------------------------------------------
// Arguments

const TOP_HELP: &str = "\
Examples:
  # in a CI script: a port held while this shell lives
  PORT=$(portmgr alloc --owner $$)
  ./server --port \"$PORT\" &
  portmgr wait 127.0.0.1:\"$PORT\" --timeout 30s

  # run a command with two fresh ports, released when it exits
  portmgr run --port web --port db -- ./test.sh --web {web} --db {db}

  # named services with types, groups of ports, and the map for other tools
  portmgr alloc --name api --type rest-api
  eval \"$(portmgr group alloc ci-17 --layout stack --format env --owner $$)\"
  portmgr export --format nginx --dir /etc/nginx/portmgr --reload

Exit statuses: 0 ok, 1 other error, 2 usage, 3 exhausted, 4 in use, 5 not found,
6 registry problem, 7 timeout, 8 not owner, 9 unhealthy; `run` exits with its
command's status (128+N when killed by signal N).

The registry is $PORTMGR_DIR, else $XDG_RUNTIME_DIR/portmgr, else a per-user directory
under the temp dir; --registry DIR overrides it for one call.";

/// Host-wide network port allocator: every process on the host that asks gets a port
/// nobody else holds.
#[derive(Parser, Debug)]
#[command(name = "portmgr", version, after_help = TOP_HELP, propagate_version = true)]
struct Cli {
    /// Registry directory (default: $PORTMGR_DIR, else $XDG_RUNTIME_DIR/portmgr)
    #[arg(long, global = true, value_name = "DIR")]
    registry: Option<PathBuf>,
    /// Output: plain (for people), json (for programs), env (NAME_PORT=1234 lines),
    /// nginx (export only)
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    format: Option<Format>,
    /// Same as --format json
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Plain,
    Json,
    Env,
    Nginx,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Allocate port(s) that stay held after this command exits; print them
    #[command(after_help = "\
Examples:
  PORT=$(portmgr alloc)                          # held while the calling shell lives
  portmgr alloc --name web --ttl 1h --format env # WEB_PORT=15321, held for an hour
  portmgr alloc --count 3 --contiguous --range 20000-20999
  portmgr alloc --preferred 8080 --required      # 8080 or fail with status 4
  portmgr alloc --name api --type rest-api --meta owner=team-a   # from 8080-8099

Lifetime: by default the port is held while the calling process (the parent of
portmgr, normally your shell) lives. --owner PID watches PID instead. --ttl D alone
holds it for D, renewable with `portmgr renew`, whether or not the shell lives.
--owner PID --ttl D ends at the first of the two. `portmgr release` frees it early.
Inside $(...) with a pipeline the parent is a short-lived subshell: use --owner $$.")]
    Alloc(AllocArgs),
    /// Release leases by port or by service name; print the ports freed
    #[command(after_help = "\
Examples:
  portmgr release 15321
  portmgr release 15321 15322
  portmgr release --name web")]
    #[command(group(ArgGroup::new("what").required(true).args(["ports", "name"])))]
    Release {
        /// Port(s) whose lease to release (all ports of that lease are freed)
        #[arg(value_parser = port_parser())]
        ports: Vec<u16>,
        /// Release the lease with this service name
        #[arg(long, conflicts_with = "ports")]
        name: Option<String>,
    },
    /// Extend a lease's TTL (the heartbeat of a long-lived lease)
    #[command(after_help = "\
Examples:
  portmgr renew 15321 --ttl 5m
  while sleep 60; do portmgr renew --name web --ttl 5m; done &")]
    #[command(group(ArgGroup::new("what").required(true).args(["port", "name"])))]
    Renew {
        /// Port whose lease to renew
        #[arg(value_parser = port_parser())]
        port: Option<u16>,
        /// Renew the lease with this service name
        #[arg(long, conflicts_with = "port")]
        name: Option<String>,
        /// New TTL from now (default: the lease's own TTL), e.g. 90s, 5m, 1h
        #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
        ttl: Option<Duration>,
    },
    /// Free every lease whose owner or watched process is gone or whose TTL ended
    #[command(after_help = "\
Examples:
  portmgr gc            # prints one line per port freed
  portmgr gc --damaged  # also free damaged records that no live process repaired")]
    Gc {
        /// Also free the registry records found damaged that no live process could repair
        /// (refused while a live process has not yet checked its own records)
        #[arg(long)]
        damaged: bool,
    },
    /// List held ports
    #[command(after_help = "\
Examples:
  portmgr list
  portmgr list --name web --json
  portmgr list --owner $$ --format env
  portmgr list --type database
  portmgr list --group ci-17 --json")]
    List {
        /// Only the lease with this service name
        #[arg(long)]
        name: Option<String>,
        /// Only this port
        #[arg(long, value_parser = port_parser())]
        port: Option<u16>,
        /// Only leases allocated by, or watching, this process
        #[arg(long, value_name = "PID")]
        owner: Option<u32>,
        /// Only services of this service type (see `portmgr alloc --type`)
        #[arg(long = "type", value_name = "TYPE")]
        service_type: Option<String>,
        /// Only members of this group (see `portmgr group alloc`)
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
    },
    /// Pool size, held, free, utilization, owners
    #[command(after_help = "\
Examples:
  portmgr stats
  portmgr stats --json | jq .utilization")]
    Stats,
    /// Report exhaustion, held ports bound by other processes, expired leases; status 9 if any
    #[command(after_help = "\
Examples:
  portmgr health || echo \"portmgr needs attention\"
  portmgr health --threshold 75% --json")]
    Health {
        /// Warn when the default pool is at least this full (0.9 or 90%)
        #[arg(long, default_value = "0.9", value_parser = parse_fraction)]
        threshold: f64,
    },
    /// Check that ports are free (not bound, not held in the registry); status 4 if not
    #[command(after_help = "\
Examples:
  portmgr check 8080 && ./server --port 8080
  portmgr check 5432 6379 --proto both")]
    Check {
        /// The port(s) to check
        #[arg(required = true, value_parser = port_parser())]
        ports: Vec<u16>,
        /// tcp, udp or both
        #[arg(long, default_value = "tcp", value_parser = parse_proto)]
        proto: Protocols,
    },
    /// List the ports of a range that are in use (bound, or held in the registry)
    #[command(after_help = "\
Examples:
  portmgr scan 8000-8100
  portmgr scan 15000-15999 --proto udp --json")]
    Scan {
        /// The range, A-B
        #[arg(value_parser = parse_range, value_name = "A-B")]
        range: PortRange,
        /// tcp, udp or both
        #[arg(long, default_value = "tcp", value_parser = parse_proto)]
        proto: Protocols,
    },
    /// Wait until HOST:PORT accepts TCP connections; status 7 on timeout
    #[command(after_help = "\
Examples:
  ./server --port \"$PORT\" &
  portmgr wait 127.0.0.1:\"$PORT\" --timeout 30s
  portmgr wait localhost:5432")]
    Wait {
        /// HOST:PORT ([v6addr]:PORT for IPv6; a bare PORT means localhost)
        #[arg(value_name = "HOST:PORT")]
        target: String,
        /// Give up after this long, e.g. 500ms, 30s, 2m
        #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
        timeout: Duration,
    },
    /// Run a command with freshly allocated ports; release them when it exits
    #[command(after_help = "\
Examples:
  portmgr run --port web -- ./server --listen 127.0.0.1:{web}
  portmgr run --port api --port metrics:udp -- sh -c 'echo $API_PORT $METRICS_PORT'
  portmgr run --bind http -- ./socket-activated-server

Ports reach CMD as NAME_PORT environment variables (upper-cased, other characters
as _), as PORT when there is exactly one, and as {NAME} substituted in CMD and ARGS.
--bind NAME passes a bound, listening socket by the systemd convention (LISTEN_FDS,
LISTEN_PID, LISTEN_FDNAMES; fds from 3, in the order given): no race with other
programs. INT, TERM and HUP sent to portmgr are forwarded to CMD. The exit status is
CMD's (128+N when killed by signal N). NAMEs are labels for CMD, not registry service
names, so many runs can use the same NAMEs at once.")]
    Run(RunArgs),
    /// Print the live named services as JSON, .env lines or nginx locations
    #[command(after_help = "\
Examples:
  portmgr export --format json > services.json
  portmgr export --format env > .env.dynamic
  portmgr export --group ci-17 --format env
  portmgr export --format nginx                        # location blocks to stdout
  portmgr export --format nginx --dir /etc/nginx/portmgr --reload

--format is json (the default), env or nginx. With --dir, the nginx export is written
as one NAME.conf per service into DIR, replaced atomically (include it inside a server
block: include /etc/nginx/portmgr/*.conf;). --reload then runs `nginx -t` and, only
when it passes, `nginx -s reload`; when either fails the previous DIR is put back and
the status is 1.")]
    Export(ExportArgs),
    /// Re-create services from a JSON export or a .env file, each on its previous port when free
    #[command(after_help = "\
Examples:
  portmgr export --format env > .env.dynamic     # at the end of a run
  portmgr import .env.dynamic --owner $$         # at the start of the next one
  portmgr import services.json --range 20000-20999 --json

Each service asks for its previous port; when that is taken it moves to a free port
of --range (else its type's range, else the pool) and is reported as moved. A name
that is live already is left as it is. Lifetime as for `portmgr alloc`: held while the
calling process lives, or --owner PID, or --ttl D. Status 1 when some service could
not be re-created (the others are kept).")]
    Import(ImportArgs),
    /// Groups: named members at offsets from one base port, allocated all or none
    #[command(after_help = "\
Examples:
  portmgr group alloc ci-17 --layout stack --owner $$
  portmgr group alloc ci-17 --spec \"pg=0,redis=+100,api=400/rest-api\" --format env
  portmgr group list
  portmgr group release ci-17")]
    Group {
        #[command(subcommand)]
        cmd: GroupCmd,
    },
}

#[derive(Subcommand, Debug)]
enum GroupCmd {
    /// Allocate every member of a group at one base port (all or none); print member=port
    #[command(after_help = "\
Examples:
  portmgr group alloc ci-17 --layout stack              # postgres=23100 redis=23200 ...
  portmgr group alloc ci-17 --spec \"pg=0,redis=+100\" --range 20000-29999
  eval \"$(portmgr group alloc ci-17 --layout stack --format env --owner $$)\"

Members are services named GROUP.MEMBER (ci-17.redis); --format env prints
CI_17_REDIS_PORT=... lines, like `portmgr export --format env`. The built-in layout
`stack` is postgres +0, redis +100, clickhouse_http +200, clickhouse_tcp +300,
backend +400, auth +401, frontend +500; more come from the types config file. A spec
is NAME=OFFSET[/TYPE] items separated by commas. Lifetime as for `portmgr alloc`.")]
    #[command(group(ArgGroup::new("layout_or_spec").required(true).args(["layout", "spec"])))]
    Alloc(GroupAllocArgs),
    /// Release every member of a group; print the ports freed
    #[command(after_help = "\
Example:
  portmgr group release ci-17")]
    Release {
        /// The group's name
        name: String,
    },
    /// List the live groups and their members
    #[command(after_help = "\
Examples:
  portmgr group list
  portmgr group list --json")]
    List,
}

#[derive(Args, Debug)]
struct GroupAllocArgs {
    /// The group's name (members are named GROUP.MEMBER)
    name: String,
    /// A named layout: stack, or one from the types config file
    #[arg(long, value_name = "LAYOUT")]
    layout: Option<String>,
    /// Members as NAME=OFFSET[/TYPE],... e.g. "pg=0,redis=+100,api=400/rest-api"
    #[arg(long, value_name = "SPEC")]
    spec: Option<String>,
    /// Where the members' ports may lie (default: the pool)
    #[arg(long, value_parser = parse_range, value_name = "A-B")]
    range: Option<PortRange>,
    /// The order bases are tried in: random (default), sequential, hash (by group name)
    #[arg(long, value_parser = parse_strategy)]
    strategy: Option<Strategy>,
    /// Metadata KEY=VALUE given to every member (repeatable)
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta)]
    meta: Vec<(String, String)>,
    /// Hold for this long (renewable), e.g. 90s, 5m, 1h
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    ttl: Option<Duration>,
    /// Hold while this process lives (default: the calling process, unless --ttl is given)
    #[arg(long, value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
    owner: Option<u32>,
}

#[derive(Args, Debug)]
struct ExportArgs {
    /// Only services of this type
    #[arg(long = "type", value_name = "TYPE")]
    service_type: Option<String>,
    /// Only members of this group
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
    /// With --format nginx: write one NAME.conf per service into DIR (replaced atomically)
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// With --dir: run `nginx -t`, then `nginx -s reload`; put the old DIR back on failure
    #[arg(long, requires = "dir")]
    reload: bool,
    /// With --reload: the nginx program (default: nginx, found in PATH)
    #[arg(long, requires = "reload", value_name = "PROGRAM")]
    nginx: Option<String>,
    /// With --reload: test and reload an nginx run with -p PREFIX (needs --nginx-conf)
    #[arg(long, requires_all = ["reload", "nginx_conf"], value_name = "DIR")]
    nginx_prefix: Option<PathBuf>,
    /// With --reload: test and reload an nginx run with -c FILE (needs --nginx-prefix)
    #[arg(long, requires_all = ["reload", "nginx_prefix"], value_name = "FILE")]
    nginx_conf: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct ImportArgs {
    /// The file: a JSON export or .env lines (`-` reads standard input)
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The file's format, json or env (default: json when it starts with '{')
    #[arg(long, value_parser = parse_import_format, value_name = "FORMAT")]
    from: Option<ImportFormat>,
    /// Where a service whose previous port is taken moves to (default: its type's range, else the pool)
    #[arg(long, value_parser = parse_range, value_name = "A-B")]
    range: Option<PortRange>,
    /// Hold for this long (renewable), e.g. 90s, 5m, 1h
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    ttl: Option<Duration>,
    /// Hold while this process lives (default: the calling process, unless --ttl is given)
    #[arg(long, value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
    owner: Option<u32>,
}

#[derive(Args, Debug)]
struct AllocArgs {
    /// Service name (unique among held leases; also the hash strategy's key)
    #[arg(long)]
    name: Option<String>,
    /// tcp, udp or both
    #[arg(long, default_value = "tcp", value_parser = parse_proto)]
    proto: Protocols,
    /// How many ports (all or nothing)
    #[arg(long, default_value_t = 1, value_name = "N")]
    count: usize,
    /// With --count: the ports must be consecutive
    #[arg(long)]
    contiguous: bool,
    /// Draw from this range instead of the default pool, e.g. 20000-29999
    #[arg(long, value_parser = parse_range, value_name = "A-B")]
    range: Option<PortRange>,
    /// sequential, random, hash or kernel
    #[arg(long, value_parser = parse_strategy)]
    strategy: Option<Strategy>,
    /// Try this port first
    #[arg(long, value_parser = port_parser(), value_name = "PORT")]
    preferred: Option<u16>,
    /// With --preferred: that port or nothing (status 4 when it is taken)
    #[arg(long, requires = "preferred")]
    required: bool,
    /// Hold for this long (renewable), e.g. 90s, 5m, 1h
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    ttl: Option<Duration>,
    /// Hold while this process lives (default: the calling process, unless --ttl is given)
    #[arg(long, value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
    owner: Option<u32>,
    /// Service type: draw from its range (unless --range is given) and record it
    #[arg(long = "type", value_name = "TYPE")]
    service_type: Option<String>,
    /// Metadata KEY=VALUE recorded with the lease (repeatable)
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta)]
    meta: Vec<(String, String)>,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Allocate a port for NAME (NAME_PORT, {NAME}); NAME:udp or NAME:both for UDP
    #[arg(long = "port", value_name = "NAME[:tcp|udp]", value_parser = parse_port_spec)]
    ports: Vec<PortSpec>,
    /// Allocate a port for NAME and pass CMD a bound listening socket (LISTEN_FDS)
    #[arg(long = "bind", value_name = "NAME[:tcp|udp]", value_parser = parse_port_spec)]
    binds: Vec<PortSpec>,
    /// Draw from this range instead of the default pool
    #[arg(long, value_parser = parse_range, value_name = "A-B")]
    range: Option<PortRange>,
    /// sequential, random, hash (keyed by NAME) or kernel
    #[arg(long, value_parser = parse_strategy)]
    strategy: Option<Strategy>,
    /// The command and its arguments (after --)
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "CMD")]
    cmd: Vec<OsString>,
}

#[derive(Clone, Debug)]
struct PortSpec {
    name: String,
    proto: Protocols,
}

fn port_parser() -> clap::builder::RangedI64ValueParser<u16> {
    clap::value_parser!(u16).range(1..)
}

fn parse_range(s: &str) -> Result<PortRange, String> {
    s.parse::<PortRange>().map_err(|e| strip_kind(&e))
}

fn parse_proto(s: &str) -> Result<Protocols, String> {
    s.parse::<Protocols>().map_err(|e| strip_kind(&e))
}

fn parse_strategy(s: &str) -> Result<Strategy, String> {
    s.parse::<Strategy>().map_err(|e| strip_kind(&e))
}

fn parse_meta(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE metadata, e.g. owner=team-a")),
    }
}

fn parse_import_format(s: &str) -> Result<ImportFormat, String> {
    s.parse::<ImportFormat>().map_err(|e| strip_kind(&e))
}

fn strip_kind(e: &Error) -> String {
    let s = e.to_string();
    s.strip_prefix("invalid argument: ").map(str::to_string).unwrap_or(s)
}

fn parse_port_spec(s: &str) -> Result<PortSpec, String> {
    let (name, proto) = match s.split_once(':') {
        Some((n, p)) => (n, parse_proto(p)?),
        None => (s, Protocols::TCP),
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.') {
        return Err(format!("{name:?} is not a port name: use letters, digits, '_', '-' or '.', e.g. web or db:udp"));
    }
    Ok(PortSpec { name: name.to_string(), proto })
}

/// The longest duration the command line takes (`--ttl`, `--timeout`): 36500 days, about
/// 100 years. Longer ones serve no purpose and would overflow time arithmetic.
pub const MAX_DURATION: Duration = Duration::from_secs(36500 * 86400);

/// A duration as humantime reads it (`90s`, `5m`, `1h`, `1d`, `500ms`, `1h30m`, `1h 30m`,
/// `5min`, ...); a bare number is seconds (`12`, `0.5`). At most [`MAX_DURATION`]: a
/// longer one is an error that says so.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration: write e.g. 500ms, 90s, 5m, 1h or 1h30m");
    let too_long = || format!("{s:?} is too long: the longest duration is 36500d (100 years)");
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    let d = if t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        // Bare seconds, as the CLI has always taken them.
        let n: f64 = t.parse().map_err(|_| bad())?;
        if n > MAX_DURATION.as_secs_f64() {
            return Err(too_long());
        }
        Duration::try_from_secs_f64(n).map_err(|_| bad())?
    } else {
        match humantime::parse_duration(t) {
            Ok(d) => d,
            Err(humantime::DurationError::NumberOverflow) => return Err(too_long()),
            Err(_) => return Err(bad()),
        }
    };
    if d > MAX_DURATION {
        return Err(too_long());
    }
    Ok(d)
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    let bad = || format!("{s:?} is not a threshold: write a fraction like 0.9 or a percentage like 90%");
    let v = match s.trim().strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map_err(|_| bad())? / 100.0,
        None => s.trim().parse::<f64>().map_err(|_| bad())?,
    };
    if v > 0.0 && v <= 1.0 { Ok(v) } else { Err(bad()) }
}

// ---------------------------------------------------------------------------------------
// Errors and output

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
            ErrorCode::NotFound => msg.push_str("; see `portmgr list` for what is held"),
            ErrorCode::InUse if matches!(e, Error::PortInUse { .. }) => {
                msg.push_str("; ask for another port (or drop --required); `portmgr list` shows who holds what")
            }
            ErrorCode::NotOwner => msg.push_str(" (see `portmgr list`)"),
            _ => {}
        }
        Fail { code: exit_code(&e), msg }
    }
}

/// Write `text` to stdout at once and flush it.
fn emit(text: &str) -> R<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| fail(EXIT_OTHER, format!("cannot write to standard output: {e}")))
}

fn emit_json(v: &serde_json::Value) -> R<()> {
    let s = serde_json::to_string_pretty(v).map_err(|e| fail(EXIT_OTHER, format!("encoding JSON: {e}")))?;
    emit(&format!("{s}\n"))
}

fn no_env(fmt: Format, cmd: &str) -> R<()> {
    if fmt == Format::Env {
        return Err(fail(
            EXIT_USAGE,
            format!(
                "--format env is for alloc, list, import, export and group alloc, not {cmd}; use --format plain or --format json"
            ),
        ));
    }
    Ok(())
}

/// `web-api` -> `WEB_API`: the environment-variable stem of a name.
pub fn env_stem(name: &str) -> String {
    let mut s: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

/// `NAME_PORT=p` (and `NAME_PORTS="a b c"` for several ports); `PORT` without a name.
fn env_lines(name: Option<&str>, ports: &[u16]) -> String {
    let prefix = name.map(|n| format!("{}_", env_stem(n))).unwrap_or_default();
    let mut s = format!("{prefix}PORT={}\n", ports[0]);
    if ports.len() > 1 {
        let all: Vec<String> = ports.iter().map(u16::to_string).collect();
        s.push_str(&format!("{prefix}PORTS=\"{}\"\n", all.join(" ")));
    }
    s
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn human_secs(ms: u64) -> String {
    if ms < 1000 && ms > 0 {
        return format!("{ms}ms");
    }
    let s = ms.div_ceil(1000);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

fn lease_json(i: &LeaseInfo) -> serde_json::Value {
    serde_json::to_value(i).unwrap_or(serde_json::Value::Null)
}

// ---------------------------------------------------------------------------------------
// Commands

fn dispatch(cli: &Cli) -> R<i32> {
    let fmt = if cli.json { Format::Json } else { cli.format.unwrap_or(Format::Plain) };
    if fmt == Format::Nginx && !matches!(cli.cmd, Cmd::Export(_)) {
        return Err(fail(EXIT_USAGE, "--format nginx is for export only; use --format plain, json or env"));
    }
    match &cli.cmd {
        Cmd::Export(a) => export(cli, a),
        Cmd::Import(a) => import(cli, fmt, a),
        Cmd::Group { cmd: GroupCmd::Alloc(a) } => group_alloc(cli, fmt, a),
        Cmd::Group { cmd: GroupCmd::Release { name } } => group_release(cli, fmt, name),
        Cmd::Group { cmd: GroupCmd::List } => group_list(cli, fmt),
        Cmd::Alloc(a) => alloc(cli, fmt, a),
        Cmd::Release { ports, name } => release(cli, fmt, ports, name.as_deref()),
        Cmd::Renew { port, name, ttl } => renew(cli, fmt, *port, name.as_deref(), *ttl),
        Cmd::Gc { damaged } => gc(cli, fmt, *damaged),
        Cmd::List { name, port, owner, service_type, group } => {
            list(cli, fmt, name.as_deref(), *port, *owner, service_type.as_deref(), group.as_deref())
        }
        Cmd::Stats => stats(cli, fmt),
        Cmd::Health { threshold } => health(cli, fmt, *threshold),
        Cmd::Check { ports, proto } => check(cli, fmt, ports, *proto),
        Cmd::Scan { range, proto } => scan(cli, fmt, range, *proto),
        Cmd::Wait { target, timeout } => wait(fmt, target, *timeout),
        Cmd::Run(r) => run(cli, r),
    }
}

/// Open the registry; any failure to do so is a registry problem (status 6), except a
/// lock timeout (7).
fn open_registry(cli: &Cli) -> R<Registry> {
    let r = match &cli.registry {
        Some(d) => Registry::open(d),
        None => Registry::open_default(),
    };
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

fn alloc(cli: &Cli, fmt: Format, a: &AllocArgs) -> R<i32> {
    let reg = open_registry(cli)?;
    let mut req = Request::new().protocols(a.proto).count(a.count).contiguous(a.contiguous);
    if let Some(r) = &a.range {
        req = req.range(r.clone());
    }
    if let Some(s) = &a.strategy {
        req = req.strategy(s.clone());
    }
    if let Some(n) = &a.name {
        req = req.name(n.clone());
    }
    if let Some(p) = a.preferred {
        req = req.preferred(p, a.required);
    }
    // The default lifetime: the calling process (see the module docs).
    let (req, watch) = with_lifetime(req, a.owner, a.ttl);
    let lease = if a.service_type.is_some() || !a.meta.is_empty() {
        let spec =
            ServiceSpec { service_type: a.service_type.clone(), metadata: metadata(&a.meta), ..ServiceSpec::new() };
        services(reg.clone())?.allocate(&req, &spec)?
    } else {
        reg.allocate(&req)?
    };
    let ports = lease.ports().to_vec();
    let text = match fmt {
        Format::Plain | Format::Nginx => ports.iter().map(|p| format!("{p}\n")).collect(),
        Format::Env => env_lines(a.name.as_deref(), &ports),
        Format::Json => {
            // This lease's record only: had it ended already (a tiny --ttl), the port may
            // be someone else's by now.
            let info = reg.get_by_port(ports[0])?.filter(|i| i.lease_id == lease.id());
            let v = json!({
                "ports": ports,
                "port": ports[0],
                "name": a.name,
                "protocols": a.proto.as_str(),
                "lease_id": lease.id(),
                "watch_pid": watch,
                "expires_ms": info.as_ref().and_then(|i| i.expires_ms),
                "type": a.service_type,
                "metadata": metadata(&a.meta),
            });
            format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default())
        }
    };
    // Printed before it is kept: when nobody can read the port, the lease is dropped
    // (released) instead of leaking.
    emit(&text)?;
    lease.keep()?;
    Ok(EXIT_OK)
}

fn release(cli: &Cli, fmt: Format, ports: &[u16], name: Option<&str>) -> R<i32> {
    no_env(fmt, "release")?;
    let reg = open_registry(cli)?;
    let mut freed: Vec<u16> = Vec::new();
    let mut first_err: Option<Fail> = None;
    if let Some(n) = name {
        freed = reg.release_name(n)?;
    } else {
        for &p in ports {
            if freed.contains(&p) {
                continue;
            }
            match reg.release_port(p) {
                Ok(f) => freed.extend(f),
                Err(e) => {
                    let f = Fail::from(e);
                    if first_err.is_some() {
                        eprintln!("portmgr: {}", one_line(&f.msg));
                    } else {
                        first_err = Some(f);
                    }
                }
            }
        }
    }
    freed.sort_unstable();
    match fmt {
        Format::Json => emit_json(&json!({ "released": freed }))?,
        _ => emit(&freed.iter().map(|p| format!("{p}\n")).collect::<String>())?,
    }
    match first_err {
        Some(f) => Err(f),
        None => Ok(EXIT_OK),
    }
}

fn renew(cli: &Cli, fmt: Format, port: Option<u16>, name: Option<&str>, ttl: Option<Duration>) -> R<i32> {
    no_env(fmt, "renew")?;
    let reg = open_registry(cli)?;
    let infos = match (port, name) {
        (Some(p), _) => {
            // The port names a lease once; then only that lease is renewed and shown, even
            // if the port changes hands in between (its lease released, the port re-let).
            let not_held = || Error::NotFound(format!("no live lease holds port {p}"));
            let id = reg.get_by_port(p)?.ok_or_else(not_held)?.lease_id;
            reg.renew_id(id, ttl).map_err(|e| if matches!(e, Error::NotFound(_)) { not_held() } else { e })?;
            reg.list()?.into_iter().filter(|i| i.lease_id == id).collect::<Vec<_>>()
        }
        (None, Some(n)) => {
            reg.renew_name(n, ttl)?;
            reg.get_by_name(n)?
        }
        (None, None) => return Err(fail(EXIT_USAGE, "give a PORT or --name NAME")),
    };
    match fmt {
        Format::Json => emit_json(&json!({ "renewed": infos.iter().map(lease_json).collect::<Vec<_>>() }))?,
        _ => {
            let now = now_ms();
            let text: String = infos
                .iter()
                .map(|i| match i.expires_ms {
                    Some(e) => format!("{} expires in {}\n", i.port, human_secs(e.saturating_sub(now))),
                    None => format!("{}\n", i.port),
                })
                .collect();
            emit(&text)?
        }
    }
    Ok(EXIT_OK)
}

fn describe(i: &LeaseInfo) -> String {
    let mut s = format!("pid {}", i.owner_pid);
    if let Some(n) = &i.name {
        s = format!("\"{}\", {s}", shown(n));
    }
    if let Some(w) = i.watch_pid {
        s.push_str(&format!(", watching pid {w}"));
    }
    s
}

fn gc(cli: &Cli, fmt: Format, damaged: bool) -> R<i32> {
    no_env(fmt, "gc")?;
    let reg = open_registry(cli)?;
    let freed = reg.gc()?;
    let freed_damaged = if damaged { reg.free_damaged()? } else { Vec::new() };
    match fmt {
        Format::Json => emit_json(&json!({
            "freed": freed.iter().map(lease_json).collect::<Vec<_>>(),
            "freed_damaged": freed_damaged,
        }))?,
        _ => emit(
            &freed
                .iter()
                .map(|i| format!("{} {} ({})\n", i.port, shown(&i.state), describe(i)))
                .chain(freed_damaged.iter().map(|p| format!("{p} damaged (record freed)\n")))
                .collect::<String>(),
        )?,
    }
    Ok(EXIT_OK)
}

fn list(
    cli: &Cli,
    fmt: Format,
    name: Option<&str>,
    port: Option<u16>,
    owner: Option<u32>,
    service_type: Option<&str>,
    group: Option<&str>,
) -> R<i32> {
    let reg = open_registry(cli)?;
    // --type and --group: the lease ids of the matching services.
    let mut only: Option<HashSet<u64>> = None;
    if service_type.is_some() || group.is_some() {
        let svc = services(reg.clone())?;
        let mut found: Vec<Service> = match service_type {
            Some(t) => svc.by_type(t)?,
            None => svc.list()?,
        };
        if let Some(g) = group {
            found.retain(|s| s.group.as_deref() == Some(g));
        }
        only = Some(found.iter().map(|s| s.lease_id).collect());
    }
    let items: Vec<LeaseInfo> = reg
        .list()?
        .into_iter()
        .filter(|i| only.as_ref().is_none_or(|ids| ids.contains(&i.lease_id)))
        .filter(|i| name.is_none_or(|n| i.name.as_deref() == Some(n)))
        .filter(|i| port.is_none_or(|p| i.port == p))
        .filter(|i| owner.is_none_or(|o| i.owner_pid == o || i.watch_pid == Some(o)))
        .collect();
    match fmt {
        Format::Json => emit_json(&serde_json::Value::Array(items.iter().map(lease_json).collect()))?,
        Format::Env => {
            let mut by_lease: BTreeMap<u64, (String, Vec<u16>)> = BTreeMap::new();
            for i in &items {
                if let Some(n) = &i.name {
                    by_lease.entry(i.lease_id).or_insert_with(|| (n.clone(), Vec::new())).1.push(i.port);
                }
            }
            emit(&by_lease.values().map(|(n, ps)| env_lines(Some(n), ps)).collect::<String>())?
        }
        Format::Plain | Format::Nginx => {
            if !items.is_empty() {
                let now = now_ms();
                let mut s = format!(
                    "{:<6} {:<5} {:<20} {:>8} {:>8} {:<10} {}\n",
                    "PORT", "PROTO", "NAME", "PID", "WATCH", "EXPIRES", "STATE"
                );
                for i in &items {
                    s.push_str(&format!(
                        "{:<6} {:<5} {:<20} {:>8} {:>8} {:<10} {}\n",
                        i.port,
                        shown(&i.protocols),
                        i.name.as_deref().map_or(Cow::Borrowed("-"), shown),
                        i.owner_pid,
                        i.watch_pid.map_or("-".to_string(), |w| w.to_string()),
                        i.expires_ms.map_or("-".to_string(), |e| format!("in {}", human_secs(e.saturating_sub(now)))),
                        if i.bound { format!("{} (bound)", shown(&i.state)) } else { shown(&i.state).into_owned() },
                    ));
                }
                emit(&s)?;
            }
        }
    }
    Ok(EXIT_OK)
}

// ---------------------------------------------------------------------------------------
// Services: export, import, groups (thin over crate::mapping)

fn export(cli: &Cli, a: &ExportArgs) -> R<i32> {
    let format = match if cli.json { Format::Json } else { cli.format.unwrap_or(Format::Json) } {
        Format::Json => ExportFormat::Json,
        Format::Env => ExportFormat::Env,
        Format::Nginx => ExportFormat::Nginx,
        Format::Plain => return Err(fail(EXIT_USAGE, "export writes --format json, env or nginx, not plain")),
    };
    if a.dir.is_some() && format != ExportFormat::Nginx {
        return Err(fail(EXIT_USAGE, "--dir writes the nginx export: add --format nginx"));
    }
    let svc = services(open_registry(cli)?)?;
    let mut list = match &a.service_type {
        Some(t) => svc.by_type(t)?.into_iter().filter(|s| s.name.is_some()).collect(),
        None => svc.list_named()?,
    };
    if let Some(g) = &a.group {
        list.retain(|s| s.group.as_deref() == Some(g.as_str()));
    }
    let Some(dir) = &a.dir else {
        emit(&mapping::export(&list, format)?)?;
        return Ok(EXIT_OK);
    };
    let applied = if a.reload {
        let nginx = a.nginx.clone().unwrap_or_else(|| "nginx".into());
        let deploy = match (&a.nginx_prefix, &a.nginx_conf) {
            (Some(p), Some(c)) => NginxDeploy::with_nginx(dir, &nginx, p, c),
            _ => NginxDeploy {
                dir: dir.clone(),
                test_command: Some(vec![nginx.clone(), "-t".into()]),
                reload_command: Some(vec![nginx, "-s".into(), "reload".into()]),
            },
        };
        deploy.apply(&list).map_err(|e| {
            let mut f = Fail::from(e);
            // nginx refusing the result (or the reload) is no usage error.
            if f.msg.contains("nginx configuration failed its test") || f.msg.contains("reloading nginx failed") {
                f.code = EXIT_OTHER;
            }
            f
        })?
    } else {
        mapping::write_nginx_dir(dir, &list)?
    };
    let mut text = format!("wrote {} file(s) to {}\n", applied.files.len(), shown(&applied.dir.display().to_string()));
    for f in &applied.files {
        text.push_str(&format!("  {}\n", shown(f)));
    }
    for s in &applied.skipped {
        text.push_str(&format!("skipped: {}\n", one_line(s)));
    }
    if applied.tested {
        text.push_str("nginx -t passed\n");
    }
    if applied.reloaded {
        text.push_str("nginx reloaded\n");
    }
    emit(&text)?;
    Ok(EXIT_OK)
}

fn import(cli: &Cli, fmt: Format, a: &ImportArgs) -> R<i32> {
    // One bounded reader for files and stdin: a regular file (no device, FIFO or directory)
    // of at most 16 MiB of UTF-8; anything else is a usage error.
    let text = if a.file.as_os_str() == "-" {
        mapping::read_text(io::stdin().lock(), "standard input")
    } else {
        mapping::read_text_file(&a.file, "import file")
    }
    .map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => fail(EXIT_NOT_FOUND, format!("{e}: cannot read it; check the path")),
        _ => Fail::from(e),
    })?;
    let svc = services(open_registry(cli)?)?;
    let (template, _) = with_lifetime(Request::new(), a.owner, a.ttl);
    let opts = ImportOptions { range: a.range.clone(), request: Some(template) };
    let outcome = svc.import_text(&text, a.from, &opts)?;
    let out = match fmt {
        Format::Json => {
            let s = serde_json::to_string_pretty(&json!({ "services": outcome.services }))
                .map_err(|e| fail(EXIT_OTHER, format!("encoding JSON: {e}")))?;
            format!("{s}\n")
        }
        Format::Env => outcome
            .services
            .iter()
            .filter_map(|s| Some(format!("{}={}\n", mapping::env_key(&s.name), s.port?)))
            .collect(),
        _ => outcome
            .services
            .iter()
            .map(|s| {
                // Every port of the lease: "web 8081", "multi 8081,8085,8090".
                let join = |ports: &[u16], first: Option<u16>| match ports {
                    [] => first.map(|p| p.to_string()).unwrap_or_default(),
                    _ => ports.iter().map(u16::to_string).collect::<Vec<_>>().join(","),
                };
                let now = join(&s.ports, s.port);
                let before = join(&s.previous_ports, Some(s.previous_port));
                let plural = if s.previous_ports.len() > 1 { "s" } else { "" };
                let name = shown(&s.name);
                match (s.status.as_str(), s.port) {
                    ("same", Some(_)) => format!("{name} {now} (kept its previous port{plural})\n"),
                    ("moved", Some(_)) => format!(
                        "{name} {before} -> {now} (moved: {})\n",
                        one_line(s.reason.as_deref().unwrap_or("its previous port is taken"))
                    ),
                    ("existing", Some(_)) => format!("{name} {now} (already live: left as it is)\n"),
                    _ => format!("{name} failed: {}\n", one_line(s.reason.as_deref().unwrap_or("unknown reason"))),
                }
            })
            .collect(),
    };
    // Printed before the leases are kept: when nobody can read the report, they are
    // dropped (released) instead of leaking.
    emit(&out)?;
    let failed: Vec<String> = outcome
        .failed()
        .iter()
        .map(|s| format!("{} ({})", shown(&s.name), one_line(s.reason.as_deref().unwrap_or("unknown reason"))))
        .collect();
    for l in outcome.leases {
        l.keep()?;
    }
    if !failed.is_empty() {
        return Err(fail(
            EXIT_OTHER,
            format!("{} service(s) could not be re-created: {}; the others are held", failed.len(), failed.join(", ")),
        ));
    }
    Ok(EXIT_OK)
}

fn group_alloc(cli: &Cli, fmt: Format, a: &GroupAllocArgs) -> R<i32> {
    let svc = services(open_registry(cli)?)?;
    let layout = match (&a.layout, &a.spec) {
        (Some(name), _) => svc.types().group(name).cloned().ok_or_else(|| {
            fail(
                EXIT_USAGE,
                format!(
                    "unknown group layout {name:?}; known layouts: {} (or give members with --spec)",
                    svc.types().group_names().join(", ")
                ),
            )
        })?,
        (None, Some(spec)) => GroupLayout::parse(spec)?,
        (None, None) => return Err(fail(EXIT_USAGE, "give --layout LAYOUT or --spec SPEC")),
    };
    let (template, _) = with_lifetime(Request::new(), a.owner, a.ttl);
    let mut opts = GroupOptions { range: a.range.clone(), request: template, ..GroupOptions::default() };
    if let Some(s) = &a.strategy {
        opts.strategy = s.clone();
    }
    let lease = svc.allocate_group(&a.name, &layout, &metadata(&a.meta), &opts).map_err(|e| match &e {
        Error::NameInUse { name, .. } => fail(
            EXIT_IN_USE,
            format!(
                "member service {name:?} is already held; use the group (`portmgr group list`) or release it first (`portmgr group release {}`)",
                a.name
            ),
        ),
        _ => Fail::from(e),
    })?;
    let info = lease.info();
    let text = match fmt {
        Format::Json => format!("{}\n", serde_json::to_string_pretty(&info).unwrap_or_default()),
        Format::Env => info.members.iter().map(|m| format!("{}={}\n", mapping::env_key(&m.name), m.port)).collect(),
        _ => info.members.iter().map(|m| format!("{}={}\n", shown(&m.member), m.port)).collect(),
    };
    // Printed before it is kept, as for alloc.
    emit(&text)?;
    lease.keep()?;
    Ok(EXIT_OK)
}

fn group_release(cli: &Cli, fmt: Format, name: &str) -> R<i32> {
    no_env(fmt, "group release")?;
    let svc = services(open_registry(cli)?)?;
    let mut freed = svc.release_group(name)?;
    freed.sort_unstable();
    match fmt {
        Format::Json => emit_json(&json!({ "released": freed }))?,
        _ => emit(&freed.iter().map(|p| format!("{p}\n")).collect::<String>())?,
    }
    Ok(EXIT_OK)
}

fn group_list(cli: &Cli, fmt: Format) -> R<i32> {
    no_env(fmt, "group list")?;
    let svc = services(open_registry(cli)?)?;
    let mut groups: BTreeMap<String, Vec<Service>> = BTreeMap::new();
    for s in svc.list()? {
        if let Some(g) = s.group.clone() {
            groups.entry(g).or_default().push(s);
        }
    }
    match fmt {
        Format::Json => emit_json(&serde_json::Value::Array(
            groups
                .iter()
                .map(|(g, members)| {
                    json!({
                        "group": g,
                        "members": members.iter().map(|m| json!({
                            "member": m.member, "name": m.name, "port": m.port, "type": m.service_type,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect(),
        ))?,
        _ => emit(
            &groups
                .iter()
                .map(|(g, members)| {
                    let m: Vec<String> = members
                        .iter()
                        .map(|m| format!("{}={}", m.member.as_deref().map_or("?".into(), shown), m.port))
                        .collect();
                    format!("{} {}\n", shown(g), m.join(" "))
                })
                .collect::<String>(),
        )?,
    }
    Ok(EXIT_OK)
}

fn stats(cli: &Cli, fmt: Format) -> R<i32> {
    no_env(fmt, "stats")?;
    let reg = open_registry(cli)?;
    let st = reg.stats()?;
    match fmt {
        Format::Json => emit_json(&serde_json::to_value(&st).unwrap_or_default())?,
        _ => emit(&format!(
            "pool         {}\npool size    {}\nheld         {} ({} in the pool)\nfree         {}\nutilization  {:.1}%\nowners       {}\nallocations  {}\nreleases     {}\nreclaimed    {}\n",
            st.pool,
            st.pool_size,
            st.held,
            st.held_in_pool,
            st.free,
            st.utilization * 100.0,
            st.owners,
            st.allocations,
            st.releases,
            st.reclaimed
        ))?,
    }
    Ok(EXIT_OK)
}

fn health(cli: &Cli, fmt: Format, threshold: f64) -> R<i32> {
    no_env(fmt, "health")?;
    let reg = open_registry(cli)?;
    let st = reg.stats()?;
    let mut problems: Vec<serde_json::Value> = Vec::new();
    if st.utilization >= threshold {
        problems.push(json!({
            "kind": "exhaustion",
            "message": format!(
                "the default pool {} is {:.1}% full ({} of {} ports held; threshold {:.0}%): release ports (`portmgr gc`, `portmgr list`) or widen the pool (PORTMGR_RANGE)",
                st.pool, st.utilization * 100.0, st.held_in_pool, st.pool_size, threshold * 100.0
            ),
        }));
    }
    let leases = reg.list()?;
    let held: HashSet<u16> = leases.iter().map(|i| i.port).collect();
    let holders = socket_holders(&held);
    for i in &leases {
        let Some(pids) = holders.get(&i.port) else { continue };
        let roots: Vec<u32> = std::iter::once(i.owner_pid).chain(i.watch_pid).collect();
        let foreign: Vec<u32> = pids.iter().copied().filter(|&p| !related(p, &roots)).collect();
        if pids.is_empty() || !foreign.is_empty() {
            let who = if foreign.is_empty() {
                "a process portmgr cannot see (another user?)".to_string()
            } else {
                format!("pid {}", foreign.iter().map(u32::to_string).collect::<Vec<_>>().join(", "))
            };
            problems.push(json!({
                "kind": "bound_elsewhere",
                "port": i.port,
                "pids": foreign,
                "lease": lease_json(i),
                "message": format!(
                    "port {} is held in the registry ({}) but bound by {who}, which is neither its owner nor a child of it: that program did not ask portmgr for its port",
                    i.port, describe(i)
                ),
            }));
        }
    }
    for i in reg.stale()? {
        if i.state == "expired" {
            problems.push(json!({
                "kind": "expired",
                "port": i.port,
                "lease": lease_json(&i),
                "message": format!(
                    "port {} ({}) is past its TTL and no longer held: renew it in time (`portmgr renew`) or run `portmgr gc`",
                    i.port, describe(&i)
                ),
            }));
        }
    }
    let healthy = problems.is_empty();
    match fmt {
        Format::Json => emit_json(&json!({
            "healthy": healthy,
            "utilization": st.utilization,
            "threshold": threshold,
            "held": st.held,
            "pool": st.pool,
            "problems": problems,
        }))?,
        _ => {
            let mut s = String::new();
            for p in &problems {
                s.push_str(&format!("warning: {}\n", shown(p["message"].as_str().unwrap_or(""))));
            }
            s.push_str(&format!(
                "{}: {} held, pool {} {:.1}% used\n",
                if healthy { "healthy" } else { "unhealthy" },
                st.held,
                st.pool,
                st.utilization * 100.0
            ));
            emit(&s)?
        }
    }
    Ok(if healthy { EXIT_OK } else { EXIT_UNHEALTHY })
}

/// For each of `ports`, the pids that have a socket bound to it (TCP or UDP, v4 or v6),
/// from `/proc/net/*` and `/proc/*/fd`. A port bound only by processes we cannot
/// inspect maps to an empty list.
fn socket_holders(ports: &HashSet<u16>) -> HashMap<u16, Vec<u32>> {
    let mut by_inode: HashMap<u64, u16> = HashMap::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6", "/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(f) else { continue };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 {
                continue;
            }
            let Some(port) = cols[1].rsplit(':').next().and_then(|h| u16::from_str_radix(h, 16).ok()) else {
                continue;
            };
            // TCP: only listening sockets (state 0A) own a port; UDP: any bound socket.
            if f.contains("tcp") && cols[3] != "0A" {
                continue;
            }
            if let Ok(inode) = cols[9].parse::<u64>()
                && inode != 0
                && ports.contains(&port)
            {
                by_inode.insert(inode, port);
            }
        }
    }
    let mut out: HashMap<u16, Vec<u32>> = by_inode.values().map(|&p| (p, Vec::new())).collect();
    if by_inode.is_empty() {
        return out;
    }
    let Ok(procs) = std::fs::read_dir("/proc") else { return out };
    for e in procs.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(e.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else { continue };
            let t = target.to_string_lossy();
            let Some(inode) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')).and_then(|n| n.parse().ok())
            else {
                continue;
            };
            if let Some(&port) = by_inode.get(&inode) {
                let v = out.entry(port).or_default();
                if !v.contains(&pid) {
                    v.push(pid);
                }
            }
        }
    }
    out
}

/// Whether `pid` is one of `roots` or a descendant of one.
fn related(pid: u32, roots: &[u32]) -> bool {
    let mut p = pid;
    for _ in 0..128 {
        if roots.contains(&p) {
            return true;
        }
        if p <= 1 {
            return false;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { return false };
        // Fields after the last ')': state, ppid, ...
        let Some(ppid) = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok())
        else {
            return false;
        };
        p = ppid;
    }
    false
}

fn check(cli: &Cli, fmt: Format, ports: &[u16], proto: Protocols) -> R<i32> {
    no_env(fmt, "check")?;
    let reg = open_registry(cli)?;
    let mut all_free = true;
    let mut rows = Vec::new();
    let mut text = String::new();
    for &p in ports {
        let bound = !probe::is_free(p, proto)?;
        let lease = reg.get_by_port(p)?;
        let free = !bound && lease.is_none();
        all_free &= free;
        let why = match (&lease, bound) {
            (None, false) => "free".to_string(),
            // SAFETY: geteuid has no preconditions and cannot fail.
            (None, true) if p < 1024 && unsafe { libc::geteuid() } != 0 => {
                "in use, or privileged: ports below 1024 need root to bind".to_string()
            }
            (None, true) => format!("in use: bound ({proto}) by a program outside portmgr"),
            (Some(i), b) => {
                format!("in use: held in the registry ({}){}", describe(i), if b { ", and bound" } else { "" })
            }
        };
        text.push_str(&format!("{p} {why}\n"));
        rows.push(json!({ "port": p, "free": free, "bound": bound, "lease": lease.as_ref().map(lease_json) }));
    }
    match fmt {
        Format::Json => emit_json(&serde_json::Value::Array(rows))?,
        _ => emit(&text)?,
    }
    Ok(if all_free { EXIT_OK } else { EXIT_IN_USE })
}

fn scan(cli: &Cli, fmt: Format, range: &PortRange, proto: Protocols) -> R<i32> {
    no_env(fmt, "scan")?;
    let reg = open_registry(cli)?;
    let bound: HashSet<u16> = probe::scan(range, proto)?.into_iter().collect();
    let held: BTreeMap<u16, LeaseInfo> =
        reg.list()?.into_iter().filter(|i| range.contains(i.port)).map(|i| (i.port, i)).collect();
    let mut ports: Vec<u16> = bound.iter().copied().chain(held.keys().copied()).collect();
    ports.sort_unstable();
    ports.dedup();
    match fmt {
        Format::Json => emit_json(&json!({
            "range": format!("{}-{}", range.start(), range.end()),
            "protocols": proto.as_str(),
            "in_use": ports.iter().map(|p| json!({
                "port": p,
                "bound": bound.contains(p),
                "lease": held.get(p).map(lease_json),
            })).collect::<Vec<_>>(),
        }))?,
        _ => {
            let text: String = ports
                .iter()
                .map(|p| {
                    let mut what = Vec::new();
                    if bound.contains(p) {
                        what.push("bound".to_string());
                    }
                    if let Some(i) = held.get(p) {
                        what.push(format!("held ({})", describe(i)));
                    }
                    format!("{p} {}\n", what.join(", "))
                })
                .collect();
            emit(&text)?
        }
    }
    Ok(EXIT_OK)
}

fn wait(fmt: Format, target: &str, timeout: Duration) -> R<i32> {
    no_env(fmt, "wait")?;
    let (host, port) = split_host_port(target)?;
    let addrs: Vec<SocketAddr> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| fail(EXIT_USAGE, format!("cannot resolve {host:?}: {e}; give an address like 127.0.0.1:{port}")))?
        .collect();
    if addrs.is_empty() {
        return Err(fail(EXIT_USAGE, format!("{host:?} has no address; give one like 127.0.0.1:{port}")));
    }
    let start = Instant::now();
    let deadline = start + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ok = probe::reachable(&addrs, left.clamp(Duration::from_millis(1), Duration::from_millis(500)));
        if ok.iter().any(|&b| b) {
            let waited = start.elapsed().as_millis() as u64;
            match fmt {
                Format::Json => emit_json(&json!({ "target": target, "ready": true, "waited_ms": waited }))?,
                _ => emit(&format!("{} accepts connections\n", shown(target)))?,
            }
            return Ok(EXIT_OK);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(fail(
                EXIT_TIMEOUT,
                format!(
                    "timed out: nothing accepted TCP connections on {target} within {}; is the server running and listening there? (--timeout to wait longer)",
                    human_secs(timeout.as_millis() as u64)
                ),
            ));
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

fn split_host_port(t: &str) -> R<(String, u16)> {
    let bad =
        || fail(EXIT_USAGE, format!("{t:?} is not HOST:PORT: write e.g. 127.0.0.1:8080, [::1]:8080 or localhost:8080"));
    let port_of = |s: &str| s.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(bad);
    if let Some(rest) = t.strip_prefix('[') {
        let (h, p) = rest.split_once("]:").ok_or_else(bad)?;
        return Ok((h.to_string(), port_of(p)?));
    }
    match t.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && !h.is_empty() => Ok((h.to_string(), port_of(p)?)),
        None => Ok(("localhost".to_string(), port_of(t)?)),
        _ => Err(bad()),
    }
}

// ---------------------------------------------------------------------------------------
// run

fn run(cli: &Cli, a: &RunArgs) -> R<i32> {
    // Names: --bind NAME wins over --port NAME; a name given twice otherwise is an error.
    let mut specs: Vec<(PortSpec, bool)> = Vec::new();
    for (s, bind) in a.binds.iter().map(|s| (s, true)).chain(a.ports.iter().map(|s| (s, false))) {
        if let Some(prev) = specs.iter().find(|(p, _)| env_stem(&p.name) == env_stem(&s.name)) {
            if prev.1 && !bind && prev.0.name == s.name {
                continue;
            }
            if prev.0.name == s.name {
                return Err(fail(EXIT_USAGE, format!("port name {:?} is given twice; give each NAME once", s.name)));
            }
            return Err(fail(
                EXIT_USAGE,
                format!(
                    "port names {:?} and {:?} both become the environment variable {}_PORT; give names that differ in their letters or digits",
                    prev.0.name,
                    s.name,
                    env_stem(&s.name)
                ),
            ));
        }
        specs.push((s.clone(), bind));
    }
    if specs.is_empty() {
        return Err(fail(EXIT_USAGE, "give at least one --port NAME or --bind NAME (see `portmgr run --help`)"));
    }
    let reg = open_registry(cli)?;
    // Signals are blocked and collected before anything is allocated, so that an INT or
    // TERM during the allocation stops the run instead of killing us mid-way.
    let fwd = Forwarder::start().map_err(|e| fail(EXIT_OTHER, format!("setting up signal forwarding: {e}")))?;
    let result = run_with(&reg, a, &specs, &fwd);
    fwd.stop();
    result
}

fn run_with(reg: &Registry, a: &RunArgs, specs: &[(PortSpec, bool)], fwd: &Forwarder) -> R<i32> {
    let mut leases: Vec<Lease> = Vec::new();
    let mut sockets: Vec<(String, socket2::Socket)> = Vec::new();
    let mut vars: Vec<(String, u16)> = Vec::new();
    for (spec, bind) in specs {
        let mut req = Request::new().protocols(spec.proto);
        if let Some(r) = &a.range {
            req = req.range(r.clone());
        }
        if let Some(s) = &a.strategy {
            req = req.strategy(match s {
                Strategy::Hash(None) => Strategy::Hash(Some(spec.name.clone())),
                other => other.clone(),
            });
        }
        let lease = if *bind {
            let (lease, socks) = reg.allocate_bound(&req)?;
            sockets.extend(socks.into_iter().map(|b| (spec.name.clone(), b.socket)));
            lease
        } else {
            reg.allocate(&req)?
        };
        vars.push((spec.name.clone(), lease.port()));
        leases.push(lease);
        if let Some(sig) = fwd.pending() {
            return Err(fail(128 + sig, format!("stopped by signal {sig} before the command started")));
        }
    }

    // The command line, with {NAME} replaced by the port.
    let argv: Vec<OsString> = a.cmd.iter().map(|arg| substitute(arg, &vars)).collect();
    // The environment: ours, less any LISTEN_* meant for us, plus the ports.
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| !matches!(k.as_bytes(), b"LISTEN_FDS" | b"LISTEN_PID" | b"LISTEN_FDNAMES"))
        .collect();
    let mut set = |k: String, v: String| {
        env.retain(|(ek, _)| ek.as_bytes() != k.as_bytes());
        env.push((k.into(), v.into()));
    };
    for (name, port) in &vars {
        set(format!("{}_PORT", env_stem(name)), port.to_string());
    }
    if vars.len() == 1 {
        set("PORT".into(), vars[0].1.to_string());
    }
    if !sockets.is_empty() {
        set("LISTEN_FDS".into(), sockets.len().to_string());
        set("LISTEN_FDNAMES".into(), sockets.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(":"));
    }

    let fds: Vec<RawFd> = sockets.iter().map(|(_, s)| s.as_raw_fd()).collect();
    let mut child = match spawn_child(&argv, &env, &fds) {
        Ok(c) => c,
        Err(e) => {
            let prog = argv[0].to_string_lossy();
            return Err(match e.kind() {
                io::ErrorKind::NotFound => fail(127, format!("command not found: {prog}; check its name and PATH")),
                io::ErrorKind::PermissionDenied => {
                    fail(126, format!("cannot execute {prog}: {e}; check that it is an executable file"))
                }
                _ => fail(126, format!("cannot start {prog}: {e}")),
            });
        }
    };
    // The child has its copies; ours would only keep the ports bound after it exits.
    drop(sockets);
    let pid = child.id() as libc::pid_t;
    fwd.set_child(pid);
    let waited = wait_no_reap(pid);
    fwd.clear_child();
    let status = child.wait();
    for mut l in leases {
        if let Err(e) = l.release() {
            eprintln!("portmgr: releasing port {}: {}", l.port(), one_line(&e.to_string()));
        }
    }
    waited.map_err(|e| fail(EXIT_OTHER, format!("waiting for the command: {e}")))?;
    let status = status.map_err(|e| fail(EXIT_OTHER, format!("waiting for the command: {e}")))?;
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        _ => EXIT_OTHER,
    })
}

/// Replace every `{NAME}` in `arg` by NAME's port.
fn substitute(arg: &OsStr, vars: &[(String, u16)]) -> OsString {
    let mut bytes = arg.as_bytes().to_vec();
    for (name, port) in vars {
        let pat = format!("{{{name}}}").into_bytes();
        let rep = port.to_string().into_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i..].starts_with(&pat) {
                out.extend_from_slice(&rep);
                i += pat.len();
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        bytes = out;
    }
    OsString::from_vec(bytes)
}

/// Wait until child `pid` has exited, without reaping it (so its pid cannot be reused
/// while the signal forwarder may still use it).
fn wait_no_reap(pid: libc::pid_t) -> io::Result<()> {
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value of this plain C struct.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, writable siginfo_t; waitid has no other preconditions.
        let r = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// A NUL-terminated `KEY=VALUE`.
fn env_entry(k: &OsStr, v: &OsStr) -> Option<CString> {
    let mut b = k.as_bytes().to_vec();
    b.push(b'=');
    b.extend_from_slice(v.as_bytes());
    CString::new(b).ok()
}

/// Spawn `argv` with environment `env`, passing `fds` as fds 3, 4, ... by the systemd
/// convention (with `LISTEN_PID` set to the child's own pid). Every other fd of ours is
/// close-on-exec and so not inherited.
fn spawn_child(argv: &[OsString], env: &[(OsString, OsString)], fds: &[RawFd]) -> io::Result<std::process::Child> {
    let n = fds.len() as RawFd;
    // The environment block, built here because the child may not allocate. LISTEN_PID
    // is a fixed buffer the child fills in with its pid.
    let entries: Vec<CString> = env.iter().filter_map(|(k, v)| env_entry(k, v)).collect();
    let mut listen_pid: Box<[u8; 40]> = Box::new([0u8; 40]);
    listen_pid[..11].copy_from_slice(b"LISTEN_PID=");
    let mut envp: Vec<*const libc::c_char> = entries.iter().map(|c| c.as_ptr()).collect();
    if n > 0 {
        envp.push(listen_pid.as_ptr().cast());
    }
    envp.push(std::ptr::null());

    // Occupy fds 3..3+n while spawning, so nothing of ours (std's exec-error pipe
    // included) lands on a number the child's dup2 will overwrite; and move the sockets
    // above that block, so dup2 never has source == target (which would keep CLOEXEC).
    let mut placeholders: Vec<OwnedFd> = Vec::new();
    let mut sources: Vec<OwnedFd> = Vec::new();
    if n > 0 {
        for _ in 0..(n + 3) {
            // SAFETY: fcntl(F_GETFD) only reads the flags of an fd number; no memory involved.
            let missing = (3..3 + n).any(|t| unsafe { libc::fcntl(t, libc::F_GETFD) } < 0);
            if !missing {
                break;
            }
            // SAFETY: the path is a valid NUL-terminated string.
            let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` was just returned by open(2) and is owned by nobody else.
            placeholders.push(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        for &fd in fds {
            // SAFETY: F_DUPFD_CLOEXEC on an fd we own; no memory involved.
            let d = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3 + n) };
            if d < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `d` was just returned by fcntl(F_DUPFD_CLOEXEC) and is owned by nobody else.
            sources.push(unsafe { OwnedFd::from_raw_fd(d) });
        }
    }
    let srcs: Vec<RawFd> = sources.iter().map(|s| s.as_raw_fd()).collect();
    let envp_addr = envp.as_ptr() as usize;
    let pid_addr = if n > 0 { listen_pid.as_mut_ptr() as usize } else { 0 };

    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    let hook = move || -> io::Result<()> {
        // Runs in the forked child, before exec: only async-signal-safe calls, no allocation.
        for (i, &src) in srcs.iter().enumerate() {
            let target = 3 + i as RawFd;
            // SAFETY: `src` is open (inherited from the parent) and differs from `target`;
            // dup2 allocates nothing.
            if unsafe { libc::dup2(src, target) } < 0 {
                return Err(io::Error::last_os_error());
            }
            // dup2 gives the new fd no FD_CLOEXEC; clear it explicitly all the same.
            // SAFETY: plain fcntl on an fd we just made.
            if unsafe { libc::fcntl(target, libc::F_SETFD, 0) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        if pid_addr != 0 {
            // SAFETY: getpid has no preconditions.
            let mut pid = unsafe { libc::getpid() } as u32;
            let mut digits = [0u8; 10];
            let mut len = 0;
            loop {
                digits[len] = b'0' + (pid % 10) as u8;
                len += 1;
                pid /= 10;
                if pid == 0 {
                    break;
                }
            }
            let buf = pid_addr as *mut u8;
            for k in 0..len {
                // SAFETY: `buf` is this process's copy of the parent's 40-byte LISTEN_PID
                // buffer (kept alive by the parent across the fork); 11 + 10 + 1 < 40.
                unsafe { *buf.add(11 + k) = digits[len - 1 - k] };
            }
            // SAFETY: as above; the terminating NUL.
            unsafe { *buf.add(11 + len) = 0 };
        }
        // The command's environment: std execs with `environ` since we set no env on the
        // Command itself.
        // SAFETY: `envp_addr` points to the parent's NULL-terminated array of C strings,
        // which were alive at the fork and so are in this child's copy of the memory; the
        // child is single-threaded here, so nobody else reads `environ` concurrently.
        unsafe { environ = envp_addr as *const *const libc::c_char };
        // A clean signal mask for the command (the parent blocks INT, TERM, HUP).
        // SAFETY: an all-zero sigset_t is a valid value; sigemptyset then initialises it.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset_t; both calls are async-signal-safe.
        unsafe {
            libc::sigemptyset(&mut set);
            libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        }
        Ok(())
    };
    // SAFETY: the hook only makes async-signal-safe system calls (dup2, fcntl, getpid,
    // sigemptyset, pthread_sigmask) and plain memory writes, and allocates nothing.
    unsafe { cmd.pre_exec(hook) };
    let child = cmd.spawn();
    // Keep the buffers alive until the fork has happened (spawn has returned).
    drop(envp);
    drop(entries);
    drop(listen_pid);
    drop(sources);
    drop(placeholders);
    child
}

unsafe extern "C" {
    static mut environ: *const *const libc::c_char;
}

/// Forwards INT, TERM and HUP sent to portmgr to the child. The signals are blocked in
/// the calling thread (threads started later inherit that) and taken by one thread with
/// `sigwaitinfo`. Signals sent by the kernel on behalf of the terminal (Ctrl-C, hangup)
/// already reached the child, which is in our process group, and are not sent twice.
struct Forwarder {
    state: Arc<Mutex<FwdState>>,
    thread: Option<std::thread::JoinHandle<()>>,
    old_mask: libc::sigset_t,
    set: libc::sigset_t,
}

#[derive(Default)]
struct FwdState {
    child: Option<libc::pid_t>,
    pending: Option<i32>,
    done: bool,
}

const FORWARDED: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

impl Forwarder {
    fn start() -> io::Result<Forwarder> {
        // SAFETY: an all-zero sigset_t is valid; sigemptyset/sigaddset initialise it.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut old_mask: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` and `old_mask` are valid, writable sigset_t values.
        let r = unsafe {
            libc::sigemptyset(&mut set);
            for s in FORWARDED {
                libc::sigaddset(&mut set, s);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old_mask)
        };
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        let state = Arc::new(Mutex::new(FwdState::default()));
        let st = Arc::clone(&state);
        let wait_set = set;
        let thread = std::thread::Builder::new().name("portmgr-signals".into()).spawn(move || {
            loop {
                // SAFETY: an all-zero siginfo_t is a valid value.
                let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
                // SAFETY: `wait_set` is an initialised sigset_t blocked in this thread
                // (inherited mask); `info` is writable.
                let sig = unsafe { libc::sigwaitinfo(&wait_set, &mut info) };
                if sig < 0 {
                    if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return;
                }
                let mut g = st.lock();
                if g.done {
                    return;
                }
                match g.child {
                    // The terminal's signal already went to the whole process group.
                    Some(_) if info.si_code == libc::SI_KERNEL => {}
                    Some(pid) => {
                        // SAFETY: kill has no memory preconditions; the child is not yet
                        // reaped (see wait_no_reap), so `pid` is still ours.
                        unsafe { libc::kill(pid, sig) };
                    }
                    None => g.pending = g.pending.or(Some(sig)),
                }
            }
        });
        match thread {
            Ok(t) => Ok(Forwarder { state, thread: Some(t), old_mask, set }),
            Err(e) => {
                // SAFETY: restoring the mask saved above.
                unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut()) };
                Err(e)
            }
        }
    }

    /// A signal that arrived before the child was started.
    fn pending(&self) -> Option<i32> {
        self.state.lock().pending
    }

    fn set_child(&self, pid: libc::pid_t) {
        let mut g = self.state.lock();
        g.child = Some(pid);
        if let Some(sig) = g.pending.take() {
            // SAFETY: kill has no memory preconditions; `pid` is our unreaped child.
            unsafe { libc::kill(pid, sig) };
        }
    }

    fn clear_child(&self) {
        self.state.lock().child = None;
    }

    /// Stop the thread, drop signals that arrived too late to matter, restore the mask.
    fn stop(mut self) {
        self.state.lock().done = true;
        if let Some(t) = self.thread.take() {
            use std::os::unix::thread::JoinHandleExt;
            // SAFETY: the thread has not been joined, so its pthread_t is valid; SIGHUP is
            // blocked there and taken by its sigwaitinfo, which then sees `done`.
            unsafe { libc::pthread_kill(t.as_pthread_t(), libc::SIGHUP) };
            let _ = t.join();
        }
        let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `self.set` is an initialised sigset_t; a NULL siginfo is allowed.
        while unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &zero) } > 0 {}
        // SAFETY: restoring the mask saved in `start`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old_mask, std::ptr::null_mut()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("12").unwrap(), Duration::from_secs(12));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("0.5").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("36500d").unwrap(), MAX_DURATION);
        for bad in ["", "5x", "m", "-1s", "1.2.3s", "ms5", "1e3", "nan", "."] {
            assert!(parse_duration(bad).unwrap_err().contains("not a duration"), "{bad}");
        }
        for long in ["36501d", "100000000d", "18446744073709551615s", "99999999999999999999999s", "4000000000"] {
            assert!(parse_duration(long).unwrap_err().contains("too long"), "{long}");
        }
    }

    #[test]
    fn names_and_substitution() {
        assert_eq!(env_stem("web-api"), "WEB_API");
        assert_eq!(env_stem("2nd"), "_2ND");
        assert_eq!(env_lines(Some("db"), &[5, 6]), "DB_PORT=5\nDB_PORTS=\"5 6\"\n");
        assert_eq!(env_lines(None, &[7]), "PORT=7\n");
        let v = vec![("web".to_string(), 1234), ("db".to_string(), 99)];
        assert_eq!(substitute(OsStr::new("--x={web},{db},{nope}{web}"), &v), "--x=1234,99,{nope}1234");
        assert!(parse_port_spec("db:udp").unwrap().proto == Protocols::UDP);
        assert!(parse_port_spec("a b").is_err());
        assert_eq!(split_host_port("[::1]:80").unwrap(), ("::1".to_string(), 80));
        assert_eq!(split_host_port("h:80").unwrap(), ("h".to_string(), 80));
        assert_eq!(split_host_port("80").unwrap(), ("localhost".to_string(), 80));
        assert!(split_host_port("h:0").is_err());
    }
}
