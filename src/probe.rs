//! Is a port free? Is something listening? Bind and connect probes on the local host, and
//! the first reachable of several endpoints ([`first_reachable`]).
//!
//! A probe binds the port the way a consumer would, with neither `SO_REUSEADDR` nor
//! `SO_REUSEPORT` (a probe with either option calls ports free that are taken), on the
//! dual-stack wildcard `[::]` with `IPV6_V6ONLY` off, so that one bind covers IPv4 and
//! IPv6 holders on every address; on `0.0.0.0` when the host has no IPv6. std's
//! `TcpListener::bind` sets `SO_REUSEADDR` on Unix, which is why this uses socket2.
//!
//! A probe is a hint: another program may bind the port a microsecond later. The
//! race-free hand-over is a bound socket ([`bind_listener`], `Registry::allocate_bound`).
//!
//! # Platform notes
//! Linux: a TCP bind without `SO_REUSEADDR` also fails while the port has sockets in
//! `TIME_WAIT`; the probe then says "in use", which is conservative.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::error::{Error, Result};
use crate::range::{PortRange, Protocols};

/// Whether this host can open IPv6 sockets (checked once).
static HAVE_IPV6: LazyLock<bool> =
    LazyLock::new(|| Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP)).is_ok());

/// The wildcard address a probe binds: `[::]` (dual-stack) or `0.0.0.0` without IPv6.
pub fn wildcard() -> IpAddr {
    if *HAVE_IPV6 { IpAddr::V6(Ipv6Addr::UNSPECIFIED) } else { IpAddr::V4(Ipv4Addr::UNSPECIFIED) }
}

/// A socket for `addr`'s family and `ty`, close-on-exec (socket2 sets `SOCK_CLOEXEC`),
/// dual-stack when `addr` is the IPv6 wildcard, with no address-reuse options.
fn new_socket(addr: IpAddr, ty: Type) -> io::Result<Socket> {
    let (domain, proto) = match (addr, ty) {
        (IpAddr::V4(_), t) if t == Type::STREAM => (Domain::IPV4, Protocol::TCP),
        (IpAddr::V4(_), _) => (Domain::IPV4, Protocol::UDP),
        (IpAddr::V6(_), t) if t == Type::STREAM => (Domain::IPV6, Protocol::TCP),
        (IpAddr::V6(_), _) => (Domain::IPV6, Protocol::UDP),
    };
    let s = Socket::new(domain, ty, Some(proto))?;
    if let IpAddr::V6(a) = addr {
        // Dual-stack only on the wildcard; a specific v6 address stays v6.
        s.set_only_v6(!a.is_unspecified())?;
    }
    Ok(s)
}

/// What a bind probe found on one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortState {
    /// The port can be bound.
    Free,
    /// Something holds the port (`EADDRINUSE`).
    InUse,
    /// This process may not bind the port at all (`EACCES`): it is below
    /// `net.ipv4.ip_unprivileged_port_start` and the process lacks
    /// `CAP_NET_BIND_SERVICE`. Says nothing about whether another program holds it
    /// (Linux checks the permission before the address).
    Privileged,
}

impl PortState {
    /// `"free"`, `"in use"` or `"privileged"`.
    pub fn as_str(self) -> &'static str {
        match self {
            PortState::Free => "free",
            PortState::InUse => "in use",
            PortState::Privileged => "privileged",
        }
    }
}

/// Bind one socket of type `ty` to `addr:port` and say what happened.
fn bind_probe(addr: IpAddr, port: u16, ty: Type) -> Result<PortState> {
    let sock = new_socket(addr, ty).map_err(|e| Error::os("creating a probe socket", e))?;
    match sock.bind(&SockAddr::from(SocketAddr::new(addr, port))) {
        Ok(()) => Ok(PortState::Free),
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => Ok(PortState::InUse),
        // EACCES: a privileged port this process may not bind, so not free for it either.
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => Ok(PortState::Privileged),
        Err(e) => Err(Error::os(format!("probing {addr} port {port}"), e)),
    }
}

/// Whether `port` can be bound for every protocol in `protocols` on every address
/// (the dual-stack wildcard). Port 0 is an invalid argument. A privileged port this
/// process may not bind is not free ([`state`] tells it apart from one in use).
pub fn is_free(port: u16, protocols: Protocols) -> Result<bool> {
    is_free_on(wildcard(), port, protocols)
}

/// Whether `port` can be bound on `addr` for every protocol in `protocols`.
///
/// On a specific address this answers "can I bind there", which is weaker than
/// [`is_free`]: a holder on another address is not seen.
pub fn is_free_on(addr: IpAddr, port: u16, protocols: Protocols) -> Result<bool> {
    Ok(state_on(addr, port, protocols)? == PortState::Free)
}

/// What a bind probe of `port` on every address (the dual-stack wildcard) finds for
/// `protocols`: free, in use, or privileged for this process. The one place that
/// decides "privileged": every skin's `check` comes here.
pub fn state(port: u16, protocols: Protocols) -> Result<PortState> {
    state_on(wildcard(), port, protocols)
}

/// [`state`] on `addr`. Privileged wins over in use (the kernel refuses the bind for
/// the permission before it looks at the address).
pub fn state_on(addr: IpAddr, port: u16, protocols: Protocols) -> Result<PortState> {
    if port == 0 {
        return Err(Error::invalid("port 0 is not a port (it asks the kernel to pick one)"));
    }
    let mut out = PortState::Free;
    for (on, ty) in [(protocols.tcp(), Type::STREAM), (protocols.udp(), Type::DGRAM)] {
        if !on {
            continue;
        }
        match bind_probe(addr, port, ty)? {
            PortState::Free => {}
            PortState::Privileged => return Ok(PortState::Privileged),
            PortState::InUse => out = PortState::InUse,
        }
    }
    Ok(out)
}

/// `net.ipv4.ip_unprivileged_port_start` (`/proc/sys/net/ipv4/ip_unprivileged_port_start`):
/// the lowest port a process without `CAP_NET_BIND_SERVICE` may bind; `None` when it
/// cannot be read (then Linux's historic 1024 applies).
pub fn unprivileged_port_start() -> Option<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").ok()?.trim().parse().ok()
}

/// Why `port` is [`PortState::Privileged`], in words, with what to do about it.
pub fn privileged_reason(port: u16) -> String {
    let start = match unprivileged_port_start() {
        Some(s) => format!("net.ipv4.ip_unprivileged_port_start = {s}"),
        None => "net.ipv4.ip_unprivileged_port_start".to_string(),
    };
    let from = unprivileged_port_start().unwrap_or(1024);
    format!(
        "port {port} is privileged for this user (below {start}, and this process lacks CAP_NET_BIND_SERVICE): use a port from {from} up, or grant the capability"
    )
}

/// The error for a port this process may not bind: an invalid argument (exit 2 in the
/// command), not "in use".
pub fn privileged_error(port: u16) -> Error {
    Error::invalid(privileged_reason(port))
}

/// The ports of `range` that are in use for any protocol in `protocols`, ascending.
///
/// TCP: every port is bind-probed, on several threads (a TCP socket that is bound but not
/// listening appears in no `/proc` table, so nothing cheaper is exact). UDP: every bound
/// UDP socket of this network namespace is listed in `/proc/net/udp{,6}`, so only the
/// ports listed there are probed (all of them when the tables cannot be read).
/// A sweep of `1024-65535` takes about half a second on 2 cores.
pub fn scan(range: &PortRange, protocols: Protocols) -> Result<Vec<u16>> {
    let mut work: Vec<(u16, Protocols)> = Vec::new();
    if protocols.tcp() {
        work.extend(range.iter().map(|p| (p, Protocols::TCP)));
    }
    if protocols.udp() {
        match proc_net_udp_ports() {
            Some(listed) => work.extend(listed.into_iter().filter(|p| range.contains(*p)).map(|p| (p, Protocols::UDP))),
            None => work.extend(range.iter().map(|p| (p, Protocols::UDP))),
        }
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 8) * 2;
    let chunk = work.len().div_ceil(threads).max(64);
    let results: Vec<Result<Vec<u16>>> = std::thread::scope(|s| {
        let handles: Vec<_> = work
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let mut busy = Vec::new();
                    for &(p, proto) in part {
                        if !is_free(p, proto)? {
                            busy.push(p);
                        }
                    }
                    Ok(busy)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(Error::Internal("a scan thread panicked".into()))))
            .collect()
    });
    let mut busy = Vec::new();
    for r in results {
        busy.extend(r?);
    }
    busy.sort_unstable();
    busy.dedup();
    Ok(busy)
}

/// The local ports of every socket in `/proc/net/udp` and `/proc/net/udp6`, sorted and
/// deduplicated; `None` when a table cannot be read.
fn proc_net_udp_ports() -> Option<Vec<u16>> {
    let mut ports = Vec::new();
    for t in ["udp", "udp6"] {
        let text = match std::fs::read_to_string(format!("/proc/net/{t}")) {
            Ok(text) => text,
            // udp6 is absent when IPv6 is off; the v4 table is required.
            Err(_) if t == "udp6" && !*HAVE_IPV6 => continue,
            Err(_) => return None,
        };
        for line in text.lines().skip(1) {
            let local = line.split_whitespace().nth(1)?;
            let port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            if port != 0 {
                ports.push(port);
            }
        }
    }
    ports.sort_unstable();
    ports.dedup();
    Some(ports)
}

/// Whether a TCP connection to `addr` is accepted within `timeout`.
pub fn accepts(addr: SocketAddr, timeout: Duration) -> bool {
    TcpStream::connect_timeout(&addr, timeout.max(Duration::from_millis(1))).is_ok()
}

/// Poll until something accepts TCP connections on `addr`, or `timeout` passes.
pub fn wait_listening(addr: SocketAddr, timeout: Duration) -> Result<()> {
    wait_listening_any(&[addr], timeout).map(drop)
}

/// Poll until one of `addrs` (for instance every address of a host name, see
/// [`resolve`]) accepts TCP connections, or `timeout` passes; returns how long it took.
/// The one wait loop of portmgr: every skin's "wait until it listens" comes here.
///
/// Each round connects to every address at once, each attempt given the time left (at
/// most 500 ms); between rounds it pauses 1 ms, 2 ms, ... up to 100 ms. An error
/// ([`Error::Timeout`]) once `timeout` has passed; an empty `addrs` is an invalid
/// argument.
pub fn wait_listening_any(addrs: &[SocketAddr], timeout: Duration) -> Result<Duration> {
    if addrs.is_empty() {
        return Err(Error::invalid("no address to wait for"));
    }
    let start = Instant::now();
    poll_until(
        timeout,
        |left| {
            let each = left.min(Duration::from_millis(500));
            Ok(match addrs {
                [one] => accepts(*one, each),
                many => reachable(many, each).into_iter().any(|ok| ok),
            })
        },
        || {
            let shown: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
            format!("nothing accepted TCP connections on {} within {timeout:?}", shown.join(" or "))
        },
    )?;
    Ok(start.elapsed())
}

/// Split `target` into host and port: `HOST:PORT`, `[IPV6]:PORT`, or a bare `PORT`
/// (meaning `localhost`). The host is returned as written (a name or an address; see
/// [`resolve`]). The one host:port parser of portmgr.
///
/// Errors (invalid argument): no port, port 0 or not a number, an IPv6 address without
/// brackets, an empty host.
///
/// ```
/// use portmgr::probe::parse_host_port;
/// assert_eq!(parse_host_port("[::1]:80").unwrap(), ("::1".to_string(), 80));
/// assert_eq!(parse_host_port("db:5432").unwrap(), ("db".to_string(), 5432));
/// assert_eq!(parse_host_port("8080").unwrap(), ("localhost".to_string(), 8080));
/// assert!(parse_host_port("db:0").is_err());
/// ```
pub fn parse_host_port(target: &str) -> Result<(String, u16)> {
    let bad = || {
        Error::invalid(format!("{target:?} is not HOST:PORT: write e.g. 127.0.0.1:8080, [::1]:8080 or localhost:8080"))
    };
    let port_of = |s: &str| s.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(bad);
    if let Some(rest) = target.strip_prefix('[') {
        let (h, p) = rest.split_once("]:").ok_or_else(bad)?;
        return Ok((h.to_string(), port_of(p)?));
    }
    match target.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && !h.is_empty() => Ok((h.to_string(), port_of(p)?)),
        None => Ok(("localhost".to_string(), port_of(target)?)),
        _ => Err(bad()),
    }
}

/// Every address of `host` (an IPv4 or IPv6 address, or a name looked up with the
/// system resolver: this may block) with `port`. A name that cannot be resolved, or has
/// no address, is an invalid argument that says so.
pub fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| Error::invalid(format!("cannot resolve {host:?}: {e}; give an address like 127.0.0.1:{port}")))?
        .collect();
    if addrs.is_empty() {
        return Err(Error::invalid(format!("{host:?} has no address; give one like 127.0.0.1:{port}")));
    }
    Ok(addrs)
}

/// Poll until `port` is free for `protocols`, or `timeout` passes.
pub fn wait_free(port: u16, protocols: Protocols, timeout: Duration) -> Result<()> {
    poll_until(
        timeout,
        |_| is_free(port, protocols),
        || format!("port {port} ({protocols}) was still in use after {timeout:?}"),
    )
}

/// Call `ready(time left)` until it says yes, pausing 1 ms, 2 ms, ... up to 100 ms
/// between calls; a timeout error built by `what` once `timeout` has passed.
fn poll_until(
    timeout: Duration,
    mut ready: impl FnMut(Duration) -> Result<bool>,
    what: impl FnOnce() -> String,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if ready(deadline.saturating_duration_since(Instant::now()))? {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::wait_timeout(what()));
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// For each of `addrs`, whether it accepts a TCP connection within `timeout`.
/// The connects run in parallel, each with its own `timeout`.
pub fn reachable(addrs: &[SocketAddr], timeout: Duration) -> Vec<bool> {
    const MAX_THREADS: usize = 64;
    let mut out = vec![false; addrs.len()];
    for (addrs, out) in addrs.chunks(MAX_THREADS).zip(out.chunks_mut(MAX_THREADS)) {
        std::thread::scope(|s| {
            for (addr, slot) in addrs.iter().zip(out.iter_mut()) {
                s.spawn(move || *slot = accepts(*addr, timeout));
            }
        });
    }
    out
}

/// A TCP socket bound to `addr:port` (dual-stack on the wildcard) and listening, or a
/// bound UDP socket, with no reuse options: the race-free way to own a port.
/// Close-on-exec; pass it to a child by the systemd `LISTEN_FDS` convention.
pub fn bind_socket(addr: IpAddr, port: u16, protocol: Protocols) -> Result<Socket> {
    let ty = if protocol == Protocols::UDP { Type::DGRAM } else { Type::STREAM };
    let sock = new_socket(addr, ty).map_err(|e| Error::os("creating a socket", e))?;
    sock.bind(&SockAddr::from(SocketAddr::new(addr, port))).map_err(|e| {
        if e.raw_os_error() == Some(libc::EADDRINUSE) {
            Error::PortInUse { port, holder: "a socket outside portmgr".into() }
        } else if e.raw_os_error() == Some(libc::EACCES) {
            privileged_error(port)
        } else {
            Error::os(format!("binding {addr} port {port}"), e)
        }
    })?;
    if ty == Type::STREAM {
        sock.listen(1024).map_err(|e| Error::os(format!("listening on port {port}"), e))?;
    }
    Ok(sock)
}

/// [`bind_socket`] on the wildcard.
pub fn bind_listener(port: u16, protocol: Protocols) -> Result<Socket> {
    bind_socket(wildcard(), port, protocol)
}

/// Let the kernel choose a port (`bind(0)`) for `protocols`; the first protocol is bound
/// with port 0 and the others probed on the same port. Returns the port.
pub fn kernel_port(protocols: Protocols) -> Result<u16> {
    let first = if protocols.tcp() { Type::STREAM } else { Type::DGRAM };
    for _ in 0..64 {
        let sock = new_socket(wildcard(), first).map_err(|e| Error::os("creating a socket", e))?;
        sock.bind(&SockAddr::from(SocketAddr::new(wildcard(), 0))).map_err(|e| Error::os("binding port 0", e))?;
        let port = sock
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map(|a| a.port())
            .ok_or_else(|| Error::Internal("bind(0) gave no port".into()))?;
        drop(sock);
        if protocols == Protocols::BOTH && !is_free(port, Protocols::UDP)? {
            continue;
        }
        return Ok(port);
    }
    Err(Error::Exhausted { what: "the kernel gave no port free for both TCP and UDP in 64 tries".into() })
}

/// What a reachability probe found for one candidate of [`first_reachable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reach {
    /// A TCP connection was accepted.
    Reachable,
    /// Every address refused the connection (`ECONNREFUSED`: nothing listens there).
    Refused,
    /// No answer within the timeout (SYNs dropped: a firewall, a full backlog, a
    /// blackholed address), or the name lookup itself took longer than the timeout.
    TimedOut,
    /// The host name has no address (the system resolver said so).
    Unresolvable,
    /// Another failure: no route to the host or network, a local error (see `error`).
    Unreachable,
}

impl Reach {
    /// `"reachable"`, `"refused"`, `"timed_out"`, `"unresolvable"` or `"unreachable"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reach::Reachable => "reachable",
            Reach::Refused => "refused",
            Reach::TimedOut => "timed_out",
            Reach::Unresolvable => "unresolvable",
            Reach::Unreachable => "unreachable",
        }
    }
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis().min(u64::MAX as u128) as u64)
}

/// One candidate of [`first_reachable`] and what its probe found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Candidate {
    /// The candidate as given (`db.internal:5432`, `[::1]:80`).
    pub target: String,
    /// Its host, as written (brackets removed).
    pub host: String,
    /// Its port.
    pub port: u16,
    /// The address that accepted (reachable), else the first address tried; `None` when
    /// the name did not resolve (in time).
    pub address: Option<SocketAddr>,
    /// What the probe found.
    pub outcome: Reach,
    /// How long the probe took (the timeout, for `timed_out`), in the JSON as `elapsed_ms`.
    #[serde(rename = "elapsed_ms", serialize_with = "ser_ms")]
    pub elapsed: Duration,
    /// The error text for every outcome but `reachable`.
    pub error: Option<String>,
}

/// The answer of [`first_reachable`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FirstReachable {
    /// The winner's target, as given (`None`: no candidate was reachable).
    pub reachable: Option<String>,
    /// The index (in priority order) of the first candidate that accepted a connection.
    pub winner: Option<usize>,
    /// Every candidate, in the order given, with its result.
    pub candidates: Vec<Candidate>,
    /// How long the whole call took, in the JSON as `elapsed_ms`.
    #[serde(rename = "elapsed_ms", serialize_with = "ser_ms")]
    pub elapsed: Duration,
}

impl FirstReachable {
    /// The winning candidate, if any.
    pub fn reachable(&self) -> Option<&Candidate> {
        self.winner.map(|i| &self.candidates[i])
    }
}

/// The most candidates one [`first_reachable`] call takes (each is probed on its own
/// thread).
pub const MAX_CANDIDATES: usize = 256;

/// Probe `targets` (`HOST:PORT`, `[IPV6]:PORT`, a bare `PORT` for localhost; see
/// [`parse_host_port`]), given in priority order, all in parallel with one `timeout`,
/// and return the first in priority order that accepted a TCP connection, with the
/// result of every candidate. The one fallback rule of portmgr: every skin's
/// "first reachable" comes here.
///
/// Host names are looked up with the system resolver; a name with several addresses is
/// reachable when any of them accepts (they are tried in parallel too). The call returns
/// once every candidate is decided, and at the latest about `timeout` after it began,
/// not after the sum of the timeouts: a candidate still undecided then (its SYNs dropped,
/// or its name lookup still running) is `timed_out`. The probe connections are closed
/// at once; nothing is sent.
///
/// Errors (invalid argument): no candidates, more than [`MAX_CANDIDATES`], a candidate
/// that is not `HOST:PORT` (port 0, an IPv6 address without brackets, ...), a zero
/// timeout. An unresolvable name is a result (`unresolvable`), not an error.
pub fn first_reachable<S: AsRef<str>>(targets: &[S], timeout: Duration) -> Result<FirstReachable> {
    use std::sync::mpsc;
    if targets.is_empty() {
        return Err(Error::invalid("no candidate to probe: give at least one HOST:PORT"));
    }
    if targets.len() > MAX_CANDIDATES {
        return Err(Error::invalid(format!(
            "{} candidates are more than the {MAX_CANDIDATES} one call probes",
            targets.len()
        )));
    }
    if timeout.is_zero() {
        return Err(Error::invalid("the timeout must be more than zero"));
    }
    let parsed: Vec<(String, String, u16)> = targets
        .iter()
        .map(|t| parse_host_port(t.as_ref()).map(|(h, p)| (t.as_ref().to_string(), h, p)))
        .collect::<Result<_>>()?;
    let start = Instant::now();
    let deadline = start + timeout;
    let (tx, rx) = mpsc::channel::<(usize, Candidate)>();
    for (i, (target, host, port)) in parsed.iter().cloned().enumerate() {
        let tx = tx.clone();
        // Detached threads: a name lookup has no timeout of its own, so the call does not
        // wait for one that runs long; such a thread ends when the lookup does.
        let spawned = std::thread::Builder::new()
            .name("portmgr-reach".into())
            .spawn(move || {
                let c = probe_candidate(target, host, port, start, deadline);
                let _ = tx.send((i, c));
            });
        if let Err(e) = spawned {
            return Err(Error::os("starting a probe thread", e));
        }
    }
    drop(tx);
    let mut done: Vec<Option<Candidate>> = vec![None; parsed.len()];
    let mut left = parsed.len();
    while left > 0 {
        // A little grace past the deadline for connects that end at it.
        let wait = (deadline + Duration::from_millis(50)).saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok((i, c)) => {
                if done[i].is_none() {
                    left -= 1;
                }
                done[i] = Some(c);
            }
            Err(_) => break,
        }
    }
    let candidates: Vec<Candidate> = done
        .into_iter()
        .zip(parsed)
        .map(|(c, (target, host, port))| {
            c.unwrap_or_else(|| Candidate {
                error: Some(format!("no answer (or no address for {host:?}) within {timeout:?}")),
                target,
                host,
                port,
                address: None,
                outcome: Reach::TimedOut,
                elapsed: timeout,
            })
        })
        .collect();
    let winner = candidates.iter().position(|c| c.outcome == Reach::Reachable);
    let reachable = winner.map(|i| candidates[i].target.clone());
    Ok(FirstReachable { reachable, winner, candidates, elapsed: start.elapsed() })
}

/// Resolve and connect one candidate (every address at once) before `deadline`.
fn probe_candidate(target: String, host: String, port: u16, start: Instant, deadline: Instant) -> Candidate {
    let mut c =
        Candidate { target, host, port, address: None, outcome: Reach::Unresolvable, elapsed: Duration::ZERO, error: None };
    let addrs = match resolve(&c.host, port) {
        Ok(a) => a,
        Err(e) => {
            c.error = Some(match e {
                Error::InvalidArgument(m) => m,
                e => e.to_string(),
            });
            c.elapsed = start.elapsed();
            if Instant::now() >= deadline {
                c.outcome = Reach::TimedOut;
            }
            return c;
        }
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        c.outcome = Reach::TimedOut;
        c.address = addrs.first().copied();
        c.error = Some("the name lookup took the whole timeout".into());
        c.elapsed = start.elapsed();
        return c;
    }
    let results: Vec<io::Result<()>> = std::thread::scope(|s| {
        let hs: Vec<_> = addrs
            .iter()
            .map(|a| s.spawn(move || TcpStream::connect_timeout(a, left).map(drop)))
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(io::Error::other("a connect thread panicked"))))
            .collect()
    });
    c.elapsed = start.elapsed();
    if let Some(i) = results.iter().position(|r| r.is_ok()) {
        c.outcome = Reach::Reachable;
        c.address = Some(addrs[i]);
        return c;
    }
    c.address = addrs.first().copied();
    let errs: Vec<&io::Error> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    let timed_out = |e: &&io::Error| matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock);
    let refused = |e: &&io::Error| e.kind() == io::ErrorKind::ConnectionRefused;
    let (outcome, first) = if let Some(e) = errs.iter().copied().find(timed_out) {
        (Reach::TimedOut, e)
    } else if errs.iter().all(refused) {
        (Reach::Refused, errs[0])
    } else {
        (Reach::Unreachable, errs.iter().copied().find(|e| !refused(e)).unwrap_or(errs[0]))
    };
    c.outcome = outcome;
    c.error = Some(match outcome {
        Reach::TimedOut => format!("no answer within {:?} (connection attempts dropped?)", deadline - start),
        _ => first.to_string(),
    });
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys;
    use std::net::UdpSocket;

    #[test]
    fn bound_ports_are_not_free() {
        let s = bind_listener(0, Protocols::TCP);
        // bind_listener(0) binds an ephemeral port, fine for a test.
        let s = s.unwrap();
        let port = s.local_addr().unwrap().as_socket().unwrap().port();
        assert!(!is_free(port, Protocols::TCP).unwrap());
        assert!(!is_free(port, Protocols::BOTH).unwrap());
        drop(s);
        assert!(is_free(port, Protocols::TCP).unwrap());

        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        assert!(!is_free(port, Protocols::UDP).unwrap(), "a v4 loopback holder must be seen by the dual-stack probe");
        assert!(is_free_on(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), port, Protocols::UDP).unwrap());
        assert!(is_free(0, Protocols::TCP).is_err());
    }

    #[test]
    fn states() {
        let s = bind_listener(29989, Protocols::TCP).unwrap();
        assert_eq!(state(29989, Protocols::TCP).unwrap(), PortState::InUse);
        assert_eq!(state(29989, Protocols::UDP).unwrap(), PortState::Free);
        assert_eq!(state(29989, Protocols::BOTH).unwrap(), PortState::InUse);
        drop(s);
        assert_eq!(state(29989, Protocols::BOTH).unwrap(), PortState::Free);
        assert_eq!(state(0, Protocols::TCP).unwrap_err().code(), crate::ErrorCode::InvalidArgument);
        let start = unprivileged_port_start().expect("/proc/sys/net/ipv4/ip_unprivileged_port_start");
        // Root (CAP_NET_BIND_SERVICE) may bind below the start: never "privileged" for it.
        // (The unprivileged side runs as uid 65534 in crates/portmgr-cli/tests/cli.rs.)
        if sys::geteuid() == 0 && start > 1 {
            let st = state(start - 1, Protocols::TCP).unwrap();
            assert_ne!(st, PortState::Privileged);
        }
        let e = privileged_error(80);
        assert_eq!(e.code(), crate::ErrorCode::InvalidArgument);
        let msg = e.to_string();
        assert!(msg.contains(&format!("ip_unprivileged_port_start = {start}")), "{msg}");
        assert!(msg.contains("port 80 is privileged for this user") && msg.contains("CAP_NET_BIND_SERVICE"), "{msg}");
    }

    #[test]
    fn scan_finds_bound_ports() {
        let t = bind_listener(29990, Protocols::TCP).unwrap();
        let u = std::net::UdpSocket::bind("[::1]:29993").unwrap();
        // A UDP socket bound to a specific v4 address, with SO_REUSEADDR (not listed as
        // "free" by the dual-stack probe either).
        let u2 = new_socket(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), Type::DGRAM).unwrap();
        u2.set_reuse_address(true).unwrap();
        u2.bind(&SockAddr::from(SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2), 29996)))).unwrap();
        // Bound but not listening: listed by the kernel too, and not bindable.
        let b = new_socket(IpAddr::V4(Ipv4Addr::LOCALHOST), Type::STREAM).unwrap();
        b.bind(&SockAddr::from(SocketAddr::from((Ipv4Addr::LOCALHOST, 29995)))).unwrap();
        let r = PortRange::new(29990, 29996).unwrap();
        assert_eq!(scan(&r, Protocols::TCP).unwrap(), vec![29990, 29995]);
        assert_eq!(scan(&r, Protocols::UDP).unwrap(), vec![29993, 29996]);
        assert_eq!(scan(&r, Protocols::BOTH).unwrap(), vec![29990, 29993, 29995, 29996]);
        drop((t, u, b, u2));
    }

    #[test]
    fn waits_and_reach() {
        let s = bind_listener(0, Protocols::TCP).unwrap();
        let port = s.local_addr().unwrap().as_socket().unwrap().port();
        let a: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_listening(a, Duration::from_secs(2)).unwrap();
        let closed = kernel_port(Protocols::TCP).unwrap();
        let b: SocketAddr = format!("127.0.0.1:{closed}").parse().unwrap();
        assert_eq!(reachable(&[a, b], Duration::from_millis(200)), vec![true, false]);
        // Several addresses: ready as soon as one of them accepts.
        wait_listening_any(&[b, a], Duration::from_secs(2)).unwrap();
        let e = wait_listening_any(&[b], Duration::from_millis(30)).unwrap_err();
        assert_eq!(e.code(), crate::ErrorCode::Timeout);
        assert_eq!(
            wait_listening_any(&[], Duration::from_secs(1)).unwrap_err().code(),
            crate::ErrorCode::InvalidArgument
        );
        let e = wait_free(port, Protocols::TCP, Duration::from_millis(30)).unwrap_err();
        assert_eq!(e.code(), crate::ErrorCode::Timeout);
        drop(s);
        wait_free(port, Protocols::TCP, Duration::from_secs(2)).unwrap();
        assert!(wait_listening(b, Duration::from_millis(30)).is_err());
    }

    #[test]
    fn host_port() {
        assert_eq!(parse_host_port("[::1]:80").unwrap(), ("::1".to_string(), 80));
        assert_eq!(parse_host_port("h:80").unwrap(), ("h".to_string(), 80));
        assert_eq!(parse_host_port("80").unwrap(), ("localhost".to_string(), 80));
        for bad in ["h:0", "h:", ":80", "::1:80", "[::1]80", "h:x", "", "70000"] {
            assert!(parse_host_port(bad).unwrap_err().to_string().contains("HOST:PORT"), "{bad}");
        }
        assert_eq!(resolve("127.0.0.1", 5).unwrap(), vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 5))]);
        assert!(resolve("localhost", 5).unwrap().iter().all(|a| a.port() == 5 && a.ip().is_loopback()));
        assert_eq!(resolve("no such host.invalid", 5).unwrap_err().code(), crate::ErrorCode::InvalidArgument);
    }
}
