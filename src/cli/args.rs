//! The command line's grammar: the clap definitions of every command and option, and
//! the value parsers (ranges, protocols, strategies, metadata, durations, thresholds).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

use crate::error::Error;
use crate::mapping::ImportFormat;
use crate::range::{PortRange, Protocols};
use crate::strategy::Strategy;

pub(super) const TOP_HELP: &str = "\
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
pub(super) struct Cli {
    /// Registry directory (default: $PORTMGR_DIR, else $XDG_RUNTIME_DIR/portmgr)
    #[arg(long, global = true, value_name = "DIR")]
    pub(super) registry: Option<PathBuf>,
    /// Output: plain (for people), json (for programs), env (NAME_PORT=1234 lines),
    /// nginx (export only)
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub(super) format: Option<Format>,
    /// Same as --format json
    #[arg(long, global = true)]
    pub(super) json: bool,
    #[command(subcommand)]
    pub(super) cmd: Cmd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(super) enum Format {
    Plain,
    Json,
    Env,
    Nginx,
}

#[derive(Subcommand, Debug)]
pub(super) enum Cmd {
    /// Allocate port(s) that stay held after this command exits; print them
    #[command(after_help = "\
Examples:
  PORT=$(portmgr alloc)                          # held while the calling shell lives
  portmgr alloc --name web --ttl 1h --format env # WEB_PORT=15321, held for an hour
  portmgr alloc --count 3 --contiguous --range 20000-20999
  portmgr alloc --preferred 8080 --required      # 8080 or fail with status 4
  portmgr alloc --name api --type rest-api --meta owner=team-a   # from 8080-8099
  portmgr alloc --name shop --map 8080,9090     # 8080:15123 and 9090:15124
  portmgr alloc --exclude 9100,9200-9299

Lifetime: by default the port is held while the calling process (the parent of
portmgr, normally your shell) lives. --owner PID watches PID instead. --ttl D alone
holds it for D, renewable with `portmgr renew`, whether or not the shell lives.
--owner PID --ttl D ends at the first of the two. `portmgr release` frees it early.
Inside $(...) with a pipeline the parent is a short-lived subshell: use --owner $$.")]
    Alloc(AllocArgs),
    /// Release leases by port, by service name or by lease id; print the ports freed
    #[command(after_help = "\
Examples:
  portmgr release 15321
  portmgr release 15321 15322
  portmgr release --name web
  portmgr release --id 7              # the lease_id of `alloc --json` / `list`")]
    #[command(group(ArgGroup::new("what").required(true).args(["ports", "name", "id"])))]
    Release {
        /// Port(s) whose lease to release (all ports of that lease are freed)
        #[arg(value_parser = port_parser())]
        ports: Vec<u16>,
        /// Release the lease with this service name
        #[arg(long, conflicts_with_all = ["ports", "id"])]
        name: Option<String>,
        /// Release the lease with this id (`lease_id` in `alloc --json`, ID in `list`)
        #[arg(long, conflicts_with = "ports", value_name = "ID")]
        id: Option<u64>,
    },
    /// Extend a lease's TTL (the heartbeat of a long-lived lease)
    #[command(after_help = "\
Examples:
  portmgr renew 15321 --ttl 5m
  portmgr renew --id 7 --ttl 5m
  while sleep 60; do portmgr renew --name web --ttl 5m; done &")]
    #[command(group(ArgGroup::new("what").required(true).args(["port", "name", "id"])))]
    Renew {
        /// Port whose lease to renew
        #[arg(value_parser = port_parser())]
        port: Option<u16>,
        /// Renew the lease with this service name
        #[arg(long, conflicts_with_all = ["port", "id"])]
        name: Option<String>,
        /// Renew the lease with this id (`lease_id` in `alloc --json`, ID in `list`)
        #[arg(long, conflicts_with = "port", value_name = "ID")]
        id: Option<u64>,
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
    /// Pool size, held, reserved, free, utilization, owners; every range in use; per type
    #[command(after_help = "\
Examples:
  portmgr stats
  portmgr stats --json | jq .utilization
  portmgr stats --json | jq '.types[] | select(.active > 0)'

Per service type: active (ports of live services), expired (past their TTL or owner
gone, not collected yet), reserved (blocked by `portmgr reserved` in the type's range).")]
    Stats,
    /// Every live service by name, the port -> name map, names by type, and the stats
    #[command(after_help = "\
Examples:
  portmgr overview
  portmgr overview --json | jq '.ports[\"15123\"]'
  portmgr overview --json | jq '.by_type'")]
    Overview,
    /// Report exhaustion, held ports bound by other processes, expired leases; status 9 if any
    #[command(after_help = "\
Examples:
  portmgr health || echo \"portmgr needs attention\"
  portmgr health --threshold 75% --json
  portmgr health --watch 10s            # one line per change of state, until Ctrl-C
  portmgr health --history --json

--watch records every check in the registry directory's health history (the last 256
checks, shared by every process: `portmgr serve` keeps one too); --history prints it.")]
    Health {
        /// Warn when the default pool is at least this full (0.9 or 90%)
        #[arg(long, default_value = "0.9", value_parser = parse_fraction)]
        threshold: f64,
        /// Check every DURATION, record each check in the history, print each change of
        /// state; SIGINT or SIGTERM stops it (status 0)
        #[arg(long, value_parser = parse_duration, value_name = "DURATION", conflicts_with = "history")]
        watch: Option<Duration>,
        /// Print the recorded checks (oldest first) instead of checking
        #[arg(long)]
        history: bool,
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
    /// Print the first of several HOST:PORTs (in priority order) that accepts TCP connections; status 7 if none does
    #[command(after_help = "\
Examples:
  portmgr reach db.internal:5432 db.internal:443 127.0.0.1:5432
  portmgr reach [::1]:8080 127.0.0.1:8080 --timeout 500ms --json

Every candidate is probed at once (host names through the system resolver), so the
answer comes within about --timeout. The first line is the winner (HOST:PORT as
given); then one line per candidate: reachable, refused, timed_out, unresolvable or
unreachable, and how long its probe took.")]
    Reach {
        /// The candidates, most preferred first (HOST:PORT, [v6addr]:PORT, or a bare PORT for localhost)
        #[arg(required = true, value_name = "HOST:PORT")]
        targets: Vec<String>,
        /// How long to wait for any candidate, e.g. 500ms, 2s
        #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "DURATION")]
        timeout: Duration,
    },
    /// Run a command with freshly allocated ports; release them when it exits
    #[command(after_help = "\
Examples:
  portmgr run --port web -- ./server --listen 127.0.0.1:{web}
  portmgr run --port api --port metrics:udp -- sh -c 'echo $API_PORT $METRICS_PORT'
  portmgr run --bind http -- ./socket-activated-server
  portmgr run --bind web --addr 127.0.0.1 --addr ::1 -- ./server   # one port, both loopbacks
  portmgr run --unix redis -- redis-server --port 0 --unixsocket {redis}

Ports reach CMD as NAME_PORT environment variables (upper-cased, other characters
as _), as PORT when there is exactly one, and as {NAME} substituted in CMD and ARGS.
--bind NAME passes a bound, listening socket by the systemd convention (LISTEN_FDS,
LISTEN_PID, LISTEN_FDNAMES; fds from 3, in the order given): no race with other
programs. INT, TERM and HUP sent to portmgr are forwarded to CMD. The exit status is
CMD's (128+N when killed by signal N). NAMEs are labels for CMD, not registry service
names, so many runs can use the same NAMEs at once. --addr binds every --bind on each
address given (all sockets of a NAME share one port, each named NAME in
LISTEN_FDNAMES); --workers N gives N sockets per address (SO_REUSEPORT). --unix NAME
sets NAME_SOCKET (and {NAME}) to a fresh path in the registry's private sockets
directory, removed when CMD exits; --bind-unix NAME passes a listening socket there.")]
    Run(RunArgs),
    /// Print the live named services as JSON, .env lines or nginx locations
    #[command(after_help = "\
Examples:
  portmgr export --format json > services.json
  portmgr export --format env > .env.dynamic
  portmgr export --group ci-17 --format env
  portmgr export --format nginx                        # location blocks to stdout
  portmgr export --format nginx --dir /etc/nginx/portmgr --reload

--format is json (the default), env or nginx. nginx routes each service at /NAME/ to
127.0.0.1, or at its metadata route and upstream_host (alloc --meta route=/shop/api/
--meta upstream_host=10.0.0.5). With --dir, the nginx export is written as one
NAME.conf per service into DIR, each file atomically (include it inside a server
block: include /etc/nginx/portmgr/*.conf;); files of services gone since the last
export are removed, files portmgr did not write stay. --reload then runs `nginx -t`
and, only when it passes, `nginx -s reload`; when either fails portmgr's files are
put back as they were and the status is 1.")]
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
    /// Registry-wide reserved ports: never handed out by any process or language
    #[command(after_help = "\
Examples:
  portmgr reserved add 9100 9200-9299 --reason \"monitoring\"
  portmgr reserved add 80,443 --reason \"the proxy\"
  portmgr reserved remove 9100
  portmgr reserved list --json

A reserved port is skipped by every strategy; `alloc --preferred P --required` on one
fails with status 4 naming the reservation and its reason. Reserving a port that is
leased keeps the lease (the holders are listed on stderr) and blocks the port once it
is released. `remove` frees the given ports of every reservation covering them (the
rest of a range stays reserved); status 5 when none covers them.")]
    Reserved {
        #[command(subcommand)]
        cmd: ReservedCmd,
    },
    /// Serve the registry over HTTP (REST API, /get) and portpicker's portserver protocol
    #[command(after_help = "\
Examples:
  portmgr serve --http 127.0.0.1:8080
  portmgr serve --portserver @unittest-portserver     # then PORTSERVER_ADDRESS=@unittest-portserver
  portmgr serve --http 127.0.0.1:0 --portserver /run/user/1000/portserver.sock
  portmgr serve --http 0.0.0.0:8080 --token-file ~/.config/portmgr/token

Prints one line per listener once all are bound (`http http://127.0.0.1:41234`,
`portserver @unittest-portserver`); SIGTERM and SIGINT stop it (status 0). Sockets
passed by systemd socket activation (LISTEN_FDS) are served too. Only this user (or
root) may use it: Unix peers are checked with SO_PEERCRED, loopback TCP peers by the
kernel's socket table; a non-loopback address needs --token-file, and then every
request needs `Authorization: Bearer TOKEN`. Leases it grants are ordinary registry
leases: stopping the server loses nothing. See docs/serve.md.")]
    Serve(ServeArgs),
    /// Resolve a name (HOST:PORT or an SRV name) to endpoints, with a TTL cache and a pick policy
    #[command(after_help = "\
Examples:
  portmgr resolve db.internal:5432
  portmgr resolve _postgres._tcp.example.com --policy priority
  portmgr resolve _db._tcp.example.test --server 127.0.0.1:5353 --json

Without --policy every endpoint is printed, one per line (address, target, SRV
priority and weight); with it, only the one the policy picks. Status 5 when the name
does not exist or has no address, 7 when no DNS server answered in time.")]
    Resolve(super::resolve::ResolveArgs),
    /// NAT traversal: the external address (STUN), port mappings on the gateway (NAT-PMP, UPnP IGD)
    Nat {
        #[command(subcommand)]
        cmd: super::nat::NatCmd,
    },
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

#[derive(Args, Debug, Clone)]
pub(super) struct ServeArgs {
    /// Serve HTTP on this address (port 0: any free port); repeatable
    #[arg(long, value_name = "ADDR")]
    pub(super) http: Vec<std::net::SocketAddr>,
    /// Serve portpicker's portserver protocol on this Unix socket (@NAME: the abstract
    /// namespace); repeatable
    #[arg(long, value_name = "ADDR")]
    pub(super) portserver: Vec<String>,
    /// A file holding the bearer token every HTTP request must carry (needed to serve a
    /// non-loopback address)
    #[arg(long, value_name = "FILE")]
    pub(super) token_file: Option<PathBuf>,
    /// Send CORS headers for this origin (repeatable); none by default
    #[arg(long, value_name = "ORIGIN")]
    pub(super) cors_origin: Vec<String>,
    /// How long a REST allocation without a process_id lives without a heartbeat
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub(super) heartbeat_timeout: Duration,
    /// Requests per second each client may make (beyond a burst of twice as many: 429)
    #[arg(long, default_value_t = 200, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(super) rate_limit: u32,
    /// Largest request body, in bytes (larger: 413)
    #[arg(long, default_value_t = 65536, value_name = "BYTES")]
    pub(super) max_body: usize,
    /// Run a health check this often and record it in the health history (served at
    /// GET /ports/health/history); 0 turns the monitor off
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub(super) health_interval: Duration,
    /// Print the OpenAPI document of the REST API and exit
    #[arg(long)]
    pub(super) openapi: bool,
}

#[derive(Subcommand, Debug)]
pub(super) enum ReservedCmd {
    /// Reserve ports and ranges (9100 9200-9299, or 9100,9200-9299)
    Add {
        /// Ports and ranges
        #[arg(required = true, value_parser = parse_spans, value_name = "PORTS")]
        spans: Vec<Spans>,
        /// Why (shown by `reserved list` and in the error of a required allocation)
        #[arg(long)]
        reason: Option<String>,
    },
    /// Unreserve ports and ranges
    Remove {
        /// Ports and ranges
        #[arg(required = true, value_parser = parse_spans, value_name = "PORTS")]
        spans: Vec<Spans>,
    },
    /// List the reservations
    List,
}

#[derive(Subcommand, Debug)]
pub(super) enum GroupCmd {
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
pub(super) struct GroupAllocArgs {
    /// The group's name (members are named GROUP.MEMBER)
    pub(super) name: String,
    /// A named layout: stack, or one from the types config file
    #[arg(long, value_name = "LAYOUT")]
    pub(super) layout: Option<String>,
    /// Members as NAME=OFFSET[/TYPE],... e.g. "pg=0,redis=+100,api=400/rest-api"
    #[arg(long, value_name = "SPEC")]
    pub(super) spec: Option<String>,
    /// Where the members' ports may lie (default: the pool)
    #[arg(long, value_parser = parse_range, value_name = "A-B")]
    pub(super) range: Option<PortRange>,
    /// The order bases are tried in: random (default), sequential, hash (by group name)
    #[arg(long, value_parser = parse_strategy)]
    pub(super) strategy: Option<Strategy>,
    /// Metadata KEY=VALUE given to every member (repeatable)
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta)]
    pub(super) meta: Vec<(String, String)>,
    /// Hold for this long (renewable), e.g. 90s, 5m, 1h
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub(super) ttl: Option<Duration>,
    /// Hold while this process lives (default: the calling process, unless --ttl is given)
    #[arg(long, value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
    pub(super) owner: Option<u32>,
}

#[derive(Args, Debug)]
pub(super) struct ExportArgs {
    /// Only services of this type
    #[arg(long = "type", value_name = "TYPE")]
    pub(super) service_type: Option<String>,
    /// Only members of this group
    #[arg(long, value_name = "GROUP")]
    pub(super) group: Option<String>,
    /// With --format nginx: write one NAME.conf per service into DIR (each atomically; stale ones removed)
    #[arg(long, value_name = "DIR")]
    pub(super) dir: Option<PathBuf>,
    /// With --dir: run `nginx -t`, then `nginx -s reload`; put the old files back on failure
    #[arg(long, requires = "dir")]
    pub(super) reload: bool,
    /// With --reload: the nginx program (default: nginx, found in PATH)
    #[arg(long, requires = "reload", value_name = "PROGRAM")]
    pub(super) nginx: Option<String>,
    /// With --reload: test and reload an nginx run with -p PREFIX (needs --nginx-conf)
    #[arg(long, requires_all = ["reload", "nginx_conf"], value_name = "DIR")]
    pub(super) nginx_prefix: Option<PathBuf>,
    /// With --reload: test and reload an nginx run with -c FILE (needs --nginx-prefix)
    #[arg(long, requires_all = ["reload", "nginx_prefix"], value_name = "FILE")]
    pub(super) nginx_conf: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub(super) struct ImportArgs {
    /// The file: a JSON export or .env lines (`-` reads standard input)
    #[arg(value_name = "FILE")]
    pub(super) file: PathBuf,
    /// The file's format, json or env (default: json when it starts with '{')
    #[arg(long, value_parser = parse_import_format, value_name = "FORMAT")]
    pub(super) from: Option<ImportFormat>,
    /// Where a service whose previous port is taken moves to (default: its type's range, else the pool)
    #[arg(long, value_parser = parse_range, value_name = "A-B")]
    pub(super) range: Option<PortRange>,
    /// Hold for this long (renewable), e.g. 90s, 5m, 1h
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub(super) ttl: Option<Duration>,
    /// Hold while this process lives (default: the calling process, unless --ttl is given)
    #[arg(long, value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
    pub(super) owner: Option<u32>,
}

#[derive(Args, Debug)]
pub(super) struct AllocArgs {
    /// Service name (unique among held leases; also the hash strategy's key)
    #[arg(long)]
    pub(super) name: Option<String>,
    /// tcp, udp or both
    #[arg(long, default_value = "tcp", value_parser = parse_proto)]
    pub(super) proto: Protocols,
    /// How many ports (all or nothing)
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub(super) count: usize,
    /// With --count: the ports must be consecutive
    #[arg(long)]
    pub(super) contiguous: bool,
    /// Draw from this range instead of the default pool, e.g. 20000-29999
    #[arg(long, value_parser = parse_range, value_name = "A-B")]
    pub(super) range: Option<PortRange>,
    /// sequential, random, hash or kernel
    #[arg(long, value_parser = parse_strategy)]
    pub(super) strategy: Option<Strategy>,
    /// Try this port first
    #[arg(long, value_parser = port_parser(), value_name = "PORT")]
    pub(super) preferred: Option<u16>,
    /// With --preferred: that port or nothing (status 4 when it is taken)
    #[arg(long, requires = "preferred")]
    pub(super) required: bool,
    /// Never these ports, e.g. 9100,9200-9299 (repeatable)
    #[arg(long, value_parser = parse_spans, value_name = "PORTS")]
    pub(super) exclude: Vec<Spans>,
    /// Hold for this long (renewable), e.g. 90s, 5m, 1h
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub(super) ttl: Option<Duration>,
    /// Hold while this process lives (default: the calling process, unless --ttl is given)
    #[arg(long, value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
    pub(super) owner: Option<u32>,
    /// Service type: draw from its range (unless --range is given) and record it
    #[arg(long = "type", value_name = "TYPE")]
    pub(super) service_type: Option<String>,
    /// Metadata KEY=VALUE recorded with the lease (repeatable)
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta)]
    pub(super) meta: Vec<(String, String)>,
    /// A module's internal ports, e.g. 8080,9090: one external port each, all or none;
    /// prints INTERNAL:EXTERNAL lines (--json: {"8080": 15123, ...})
    #[arg(long, value_name = "PORTS", value_delimiter = ',', value_parser = port_parser(), requires = "name", conflicts_with = "count")]
    pub(super) map: Vec<u16>,
}

#[derive(Args, Debug)]
pub(super) struct RunArgs {
    /// Allocate a port for NAME (NAME_PORT, {NAME}); NAME:udp or NAME:both for UDP
    #[arg(long = "port", value_name = "NAME[:tcp|udp]", value_parser = parse_port_spec)]
    pub(super) ports: Vec<PortSpec>,
    /// Allocate a port for NAME and pass CMD a bound listening socket (LISTEN_FDS)
    #[arg(long = "bind", value_name = "NAME[:tcp|udp]", value_parser = parse_port_spec)]
    pub(super) binds: Vec<PortSpec>,
    /// With --bind: bind on this address (repeatable: one socket per address, one port
    /// for all; default: every address, dual-stack)
    #[arg(long = "addr", value_name = "ADDR", requires = "binds")]
    pub(super) addrs: Vec<std::net::IpAddr>,
    /// With --bind: N sockets per address (SO_REUSEPORT), one per worker of CMD
    #[arg(long, default_value_t = 1, value_name = "N", requires = "binds", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub(super) workers: u32,
    /// A fresh Unix-socket path for NAME (NAME_SOCKET, {NAME}): no TCP port needed
    #[arg(long = "unix", value_name = "NAME")]
    pub(super) unix: Vec<String>,
    /// A listening Unix socket for NAME, passed to CMD by LISTEN_FDS (NAME_SOCKET too)
    #[arg(long = "bind-unix", value_name = "NAME")]
    pub(super) bind_unix: Vec<String>,
    /// Draw from this range instead of the default pool
    #[arg(long, value_parser = parse_range, value_name = "A-B")]
    pub(super) range: Option<PortRange>,
    /// sequential, random, hash (keyed by NAME) or kernel
    #[arg(long, value_parser = parse_strategy)]
    pub(super) strategy: Option<Strategy>,
    /// The command and its arguments (after --)
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "CMD")]
    pub(super) cmd: Vec<OsString>,
}

#[derive(Clone, Debug)]
pub(super) struct PortSpec {
    pub(super) name: String,
    pub(super) proto: Protocols,
}

pub(super) fn port_parser() -> clap::builder::RangedI64ValueParser<u16> {
    clap::value_parser!(u16).range(1..)
}

/// Ports and ranges, `9100,9200-9299` (the core's `range::parse_spans`).
#[derive(Clone, Debug)]
pub(super) struct Spans(pub(super) Vec<(u16, u16)>);

/// Every span of a repeated `Spans` argument.
pub(super) fn flat(spans: &[Spans]) -> Vec<(u16, u16)> {
    spans.iter().flat_map(|s| s.0.iter().copied()).collect()
}

pub(super) fn parse_spans(s: &str) -> Result<Spans, String> {
    crate::range::parse_spans(s).map(Spans).map_err(|e| strip_kind(&e))
}

pub(super) fn parse_range(s: &str) -> Result<PortRange, String> {
    s.parse::<PortRange>().map_err(|e| strip_kind(&e))
}

pub(super) fn parse_proto(s: &str) -> Result<Protocols, String> {
    s.parse::<Protocols>().map_err(|e| strip_kind(&e))
}

pub(super) fn parse_strategy(s: &str) -> Result<Strategy, String> {
    s.parse::<Strategy>().map_err(|e| strip_kind(&e))
}

pub(super) fn parse_meta(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE metadata, e.g. owner=team-a")),
    }
}

pub(super) fn parse_import_format(s: &str) -> Result<ImportFormat, String> {
    s.parse::<ImportFormat>().map_err(|e| strip_kind(&e))
}

pub(super) fn strip_kind(e: &Error) -> String {
    let s = e.to_string();
    s.strip_prefix("invalid argument: ").map(str::to_string).unwrap_or(s)
}

pub(super) fn parse_port_spec(s: &str) -> Result<PortSpec, String> {
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

pub(super) fn parse_fraction(s: &str) -> Result<f64, String> {
    let bad = || format!("{s:?} is not a threshold: write a fraction like 0.9 or a percentage like 90%");
    let v = match s.trim().strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map_err(|_| bad())? / 100.0,
        None => s.trim().parse::<f64>().map_err(|_| bad())?,
    };
    if v > 0.0 && v <= 1.0 { Ok(v) } else { Err(bad()) }
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
    fn port_specs() {
        assert!(parse_port_spec("db:udp").unwrap().proto == Protocols::UDP);
        assert!(parse_port_spec("a b").is_err());
    }
}
