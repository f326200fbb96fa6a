//! The resolver (feature `resolve`): a name to a list of endpoints, with a TTL cache and
//! a selection policy.
//!
//! Names are `HOST:PORT` (A and AAAA records of `HOST`, or a literal address) or an SRV
//! name `_service._proto.domain` (RFC 2782: each SRV record's target, looked up in turn,
//! at the record's port). DNS is asked through hickory-resolver, either the system's
//! configuration (`/etc/resolv.conf`, `/etc/hosts`) or the servers given; every query has
//! a timeout, and each call a deadline of its own.
//!
//! The cache is this module's own: an answer is kept for its records' smallest TTL,
//! clamped to [`ResolverOptions::min_ttl`]..[`ResolverOptions::max_ttl`]; a name that
//! does not exist (NXDOMAIN) or has no address is remembered as such for
//! [`ResolverOptions::negative_ttl`]. The library's own cache is emptied before each
//! query, so the TTL rule lives here only.
//!
//! The API is synchronous: each call runs the lookup on a current-thread tokio runtime
//! owned by the [`Resolver`].
//!
//! ```no_run
//! use portmgr::resolve::{Policy, Resolver, ResolverOptions};
//! let r = Resolver::new(ResolverOptions::new().server("127.0.0.1:17053".parse().unwrap()).policy(Policy::Priority))?;
//! for e in r.resolve("_db._tcp.example.test")? {
//!     println!("{} (priority {}, weight {})", e.addr, e.priority, e.weight);
//! }
//! let one = r.pick("_db._tcp.example.test")?;
//! # Ok::<(), portmgr::Error>(())
//! ```

mod select;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use parking_lot::Mutex;

use crate::error::{Error, Result};

pub use select::select;

/// How [`Resolver::pick`] chooses one endpoint of a name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Each call takes the next endpoint, in the order [`Resolver::resolve`] returns
    /// them, cycling.
    #[default]
    RoundRobin,
    /// A random endpoint, with a probability proportional to its SRV weight (every
    /// endpoint of an A/AAAA name weighs the same). Weight-0 records get a very small
    /// chance when others weigh more (RFC 2782).
    Weighted,
    /// RFC 2782: only the lowest-numbered SRV priority present, then weighted random
    /// among those.
    Priority,
}

impl Policy {
    /// `"round-robin"`, `"weighted"` or `"priority"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::RoundRobin => "round-robin",
            Policy::Weighted => "weighted",
            Policy::Priority => "priority",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Policy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Policy> {
        match s {
            "round-robin" | "roundrobin" | "rr" => Ok(Policy::RoundRobin),
            "weighted" => Ok(Policy::Weighted),
            "priority" => Ok(Policy::Priority),
            other => Err(Error::invalid(format!("unknown policy {other:?}: use round-robin, weighted or priority"))),
        }
    }
}

/// One address a name resolved to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The address and port to connect to.
    pub addr: SocketAddr,
    /// The host name the address belongs to (the SRV target, or the name's host),
    /// without a trailing dot; the address itself for a literal.
    pub target: String,
    /// The SRV priority (lower first); 0 for an A/AAAA name.
    pub priority: u16,
    /// The SRV weight; 1 for an A/AAAA name.
    pub weight: u16,
}

/// A [`Resolver`]'s settings. Defaults: the system's DNS configuration, round-robin,
/// TTLs as served up to one day, 30 s negative caching, 2 s per query, 2 attempts.
#[derive(Clone, Debug)]
pub struct ResolverOptions {
    /// DNS servers to ask (UDP, then TCP for truncated answers); empty: the system's.
    pub servers: Vec<SocketAddr>,
    /// The policy of [`Resolver::pick`].
    pub policy: Policy,
    /// No answer is kept for less than this (a TTL below it is raised to it).
    pub min_ttl: Duration,
    /// No answer is kept for more than this.
    pub max_ttl: Duration,
    /// How long a name that does not exist (or has no address) is remembered as such.
    pub negative_ttl: Duration,
    /// The timeout of one query to one server.
    pub timeout: Duration,
    /// How many times a query is sent before the lookup fails.
    pub attempts: usize,
}

impl Default for ResolverOptions {
    fn default() -> Self {
        ResolverOptions {
            servers: Vec::new(),
            policy: Policy::RoundRobin,
            min_ttl: Duration::ZERO,
            max_ttl: Duration::from_secs(86_400),
            negative_ttl: Duration::from_secs(30),
            timeout: Duration::from_secs(2),
            attempts: 2,
        }
    }
}

impl ResolverOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Ask this DNS server (may be given several times; in order).
    pub fn server(mut self, addr: SocketAddr) -> Self {
        self.servers.push(addr);
        self
    }
    /// The policy of [`Resolver::pick`].
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }
    /// The TTL bounds of the cache.
    pub fn ttl_bounds(mut self, min: Duration, max: Duration) -> Self {
        self.min_ttl = min;
        self.max_ttl = max;
        self
    }
    /// The negative-cache time.
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = ttl;
        self
    }
    /// The timeout of one query.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    fn check(&self) -> Result<()> {
        if self.min_ttl > self.max_ttl {
            return Err(Error::invalid(format!(
                "min_ttl ({:?}) is above max_ttl ({:?})",
                self.min_ttl, self.max_ttl
            )));
        }
        if self.timeout.is_zero() || self.attempts == 0 {
            return Err(Error::invalid("the query timeout and the attempts must be above zero"));
        }
        Ok(())
    }
}

/// What one cached query answered.
#[derive(Clone, Debug)]
enum Answer {
    /// Addresses of a host.
    Addrs(Vec<IpAddr>),
    /// SRV records: (priority, weight, port, target).
    Srv(Vec<(u16, u16, u16, String)>),
    /// The name does not exist, or has no records of the kind asked.
    Negative(String),
}

/// The most answers one resolver keeps.
const MAX_CACHED: usize = 4096;

struct Cached {
    answer: Answer,
    until: Instant,
}

/// A caching DNS resolver with a selection policy. Safe to share between threads.
pub struct Resolver {
    opts: ResolverOptions,
    dns: TokioResolver,
    rt: tokio::runtime::Runtime,
    cache: Mutex<HashMap<(String, bool), Cached>>,
    cursor: Mutex<HashMap<String, usize>>,
    queries: AtomicU64,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver").field("opts", &self.opts).finish_non_exhaustive()
    }
}

fn net_error(what: &str, e: impl fmt::Display) -> Error {
    Error::os(what.to_string(), io::Error::other(e.to_string()))
}

impl Resolver {
    /// A resolver with `opts` (validated: min ≤ max TTL, a non-zero timeout).
    pub fn new(opts: ResolverOptions) -> Result<Resolver> {
        opts.check()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| Error::os("starting the resolver's runtime", e))?;
        let provider = TokioRuntimeProvider::default();
        let (mut builder, hosts) = if opts.servers.is_empty() {
            let b = TokioResolver::builder(provider)
                .map_err(|e| net_error("reading the system's DNS configuration (/etc/resolv.conf)", e))?;
            (b, ResolveHosts::Always)
        } else {
            let name_servers = opts
                .servers
                .iter()
                .map(|s| {
                    let mut ns = NameServerConfig::udp_and_tcp(s.ip());
                    for c in &mut ns.connections {
                        c.port = s.port();
                    }
                    ns
                })
                .collect();
            let config = ResolverConfig::from_name_servers(name_servers);
            (TokioResolver::builder_with_config(config, provider), ResolveHosts::Never)
        };
        let o: &mut ResolverOpts = builder.options_mut();
        o.timeout = opts.timeout;
        o.attempts = opts.attempts;
        o.use_hosts_file = hosts;
        o.cache_size = 0;
        o.case_randomization = false;
        let dns = {
            // The builder spawns nothing, but some providers look for a runtime context.
            let _guard = rt.enter();
            builder.build().map_err(|e| net_error("building the resolver", e))?
        };
        Ok(Resolver {
            opts,
            dns,
            rt,
            cache: Mutex::new(HashMap::new()),
            cursor: Mutex::new(HashMap::new()),
            queries: AtomicU64::new(0),
        })
    }

    /// The system's DNS configuration, the default options.
    pub fn system() -> Result<Resolver> {
        Resolver::new(ResolverOptions::default())
    }

    /// The options this resolver was made with.
    pub fn options(&self) -> &ResolverOptions {
        &self.opts
    }

    /// How many DNS queries this resolver has sent (each cache miss is one per record
    /// type: A and AAAA count as two).
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    /// Forget every cached answer.
    pub fn clear_cache(&self) {
        self.cache.lock().clear();
    }

    /// Every endpoint of `name` (`HOST:PORT`, `[IPV6]:PORT` or `_service._proto.domain`),
    /// sorted by priority, then target, then address. From the cache while its answers'
    /// TTLs last.
    ///
    /// Errors: invalid argument for a malformed name, not found for a name that does not
    /// exist or has no address, timeout when no server answered in time, OS error for any
    /// other DNS failure (SERVFAIL, REFUSED, an unreachable server).
    pub fn resolve(&self, name: &str) -> Result<Vec<Endpoint>> {
        let name = name.trim();
        let mut out = if is_srv_name(name) {
            self.resolve_srv(name)?
        } else {
            let (host, port) = crate::probe::parse_host_port(name)?;
            if let Ok(ip) = host.parse::<IpAddr>() {
                vec![Endpoint { addr: SocketAddr::new(ip, port), target: host, priority: 0, weight: 1 }]
            } else {
                let ips = self.addrs(&host)?;
                let target = host.trim_end_matches('.').to_string();
                ips.into_iter()
                    .map(|ip| Endpoint { addr: SocketAddr::new(ip, port), target: target.clone(), priority: 0, weight: 1 })
                    .collect()
            }
        };
        out.sort_by(|a, b| (a.priority, &a.target, a.addr).cmp(&(b.priority, &b.target, b.addr)));
        out.dedup();
        Ok(out)
    }

    /// One endpoint of `name`, chosen by the resolver's policy (see [`Policy`]).
    pub fn pick(&self, name: &str) -> Result<Endpoint> {
        self.pick_with(name, self.opts.policy)
    }

    /// One endpoint of `name`, chosen by `policy`.
    pub fn pick_with(&self, name: &str, policy: Policy) -> Result<Endpoint> {
        let endpoints = self.resolve(name)?;
        let turn = if policy == Policy::RoundRobin {
            let mut c = self.cursor.lock();
            let slot = c.entry(name.trim().to_string()).or_insert(0);
            let t = *slot;
            *slot = slot.wrapping_add(1);
            t
        } else {
            0
        };
        select(&endpoints, policy, turn, crate::strategy::random_u64())
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("{name} has no endpoint")))
    }

    fn resolve_srv(&self, name: &str) -> Result<Vec<Endpoint>> {
        let records = match self.query(name, true)? {
            Answer::Srv(r) => r,
            Answer::Negative(why) => return Err(Error::NotFound(why)),
            Answer::Addrs(_) => unreachable_answer(name)?,
        };
        let mut out = Vec::new();
        let mut last_err = None;
        for (priority, weight, port, target) in records {
            if target == "." || target.is_empty() {
                continue; // RFC 2782: "." means the service is decidedly not available.
            }
            match self.addrs(&target) {
                Ok(ips) => {
                    let t = target.trim_end_matches('.').to_string();
                    out.extend(ips.into_iter().map(|ip| Endpoint {
                        addr: SocketAddr::new(ip, port),
                        target: t.clone(),
                        priority,
                        weight,
                    }));
                }
                Err(e) => last_err = Some(e),
            }
        }
        if out.is_empty() {
            return Err(last_err.unwrap_or_else(|| Error::NotFound(format!("{name}: no SRV target is available"))));
        }
        Ok(out)
    }

    /// The A and AAAA addresses of `host`, from the cache or DNS.
    fn addrs(&self, host: &str) -> Result<Vec<IpAddr>> {
        match self.query(host, false)? {
            Answer::Addrs(a) => Ok(a),
            Answer::Negative(why) => Err(Error::NotFound(why)),
            Answer::Srv(_) => unreachable_answer(host),
        }
    }

    /// The cached answer for (`name`, SRV or addresses), or a fresh one, cached.
    fn query(&self, name: &str, srv: bool) -> Result<Answer> {
        let key = (name.to_ascii_lowercase(), srv);
        let now = Instant::now();
        if let Some(c) = self.cache.lock().get(&key)
            && c.until > now
        {
            return Ok(c.answer.clone());
        }
        let (answer, ttl) = self.ask(name, srv)?;
        let ttl = match answer {
            Answer::Negative(_) => self.opts.negative_ttl,
            _ => Duration::from_secs(u64::from(ttl)).clamp(self.opts.min_ttl, self.opts.max_ttl),
        };
        let mut cache = self.cache.lock();
        if cache.len() >= MAX_CACHED {
            // Bounded: drop what has expired, and everything if that was not enough.
            let now = Instant::now();
            cache.retain(|_, c| c.until > now);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(key, Cached { answer: answer.clone(), until: Instant::now() + ttl });
        Ok(answer)
    }

    /// Ask DNS: SRV records, or A and AAAA both. Returns the answer and its smallest TTL.
    fn ask(&self, name: &str, srv: bool) -> Result<(Answer, u32)> {
        let types: &[RecordType] = if srv { &[RecordType::SRV] } else { &[RecordType::A, RecordType::AAAA] };
        // Each call's deadline: every attempt of every record type, plus a margin.
        let deadline = self.opts.timeout * (self.opts.attempts as u32 * types.len() as u32 * self.opts.servers.len().max(1) as u32) + Duration::from_millis(500);
        let dns = &self.dns;
        let queries = &self.queries;
        let result = self.rt.block_on(async {
            tokio::time::timeout(deadline, async {
                let mut results = Vec::new();
                for &t in types {
                    dns.clear_cache();
                    queries.fetch_add(1, Ordering::Relaxed);
                    results.push((t, dns.lookup(name, t).await));
                }
                results
            })
            .await
        });
        let results = result.map_err(|_| {
            Error::wait_timeout(format!("no DNS answer for {name} within {deadline:?} (is the server up?)"))
        })?;
        let mut ttl = u32::MAX;
        let mut addrs = Vec::new();
        let mut srvs = Vec::new();
        let mut negative = None;
        for (t, r) in results {
            match r {
                Ok(lookup) => {
                    for rec in lookup.answers() {
                        match &rec.data {
                            RData::A(a) if t == RecordType::A => addrs.push(IpAddr::V4(a.0)),
                            RData::AAAA(a) if t == RecordType::AAAA => addrs.push(IpAddr::V6(a.0)),
                            RData::SRV(s) if t == RecordType::SRV => {
                                srvs.push((s.priority, s.weight, s.port, s.target.to_ascii()))
                            }
                            _ => continue,
                        }
                        ttl = ttl.min(rec.ttl);
                    }
                }
                Err(e) if e.is_nx_domain() => negative = Some(format!("{name} does not exist (NXDOMAIN)")),
                Err(e) if e.is_no_records_found() => {}
                Err(NetError::Timeout) => {
                    return Err(Error::wait_timeout(format!("no DNS answer for {name} ({t}) in time (is the server up?)")));
                }
                Err(e) => return Err(net_error(&format!("looking up {name} ({t})"), e)),
            }
        }
        if srv && !srvs.is_empty() {
            return Ok((Answer::Srv(srvs), ttl));
        }
        if !srv && !addrs.is_empty() {
            return Ok((Answer::Addrs(addrs), ttl));
        }
        let why = negative.unwrap_or_else(|| {
            format!("{name} has no {} record", if srv { "SRV" } else { "A or AAAA" })
        });
        Ok((Answer::Negative(why), 0))
    }
}

fn unreachable_answer<T>(name: &str) -> Result<T> {
    Err(Error::Internal(format!("the resolver's cache held the wrong kind of answer for {name}")))
}

/// Whether `name` is an SRV name: `_service._proto.domain`, no port.
pub fn is_srv_name(name: &str) -> bool {
    let mut labels = name.split('.');
    matches!((labels.next(), labels.next(), labels.next()),
        (Some(s), Some(p), Some(d)) if s.len() > 1 && s.starts_with('_') && p.len() > 1 && p.starts_with('_') && !d.is_empty())
        && !name.contains(':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srv_names() {
        assert!(is_srv_name("_db._tcp.example.test"));
        assert!(is_srv_name("_db._tcp.example.test."));
        assert!(!is_srv_name("db.example.test:5432"));
        assert!(!is_srv_name("_db._tcp"));
        assert!(!is_srv_name("_._tcp.x"));
    }

    #[test]
    fn policies_parse() {
        for p in [Policy::RoundRobin, Policy::Weighted, Policy::Priority] {
            assert_eq!(p.as_str().parse::<Policy>().unwrap(), p);
        }
        assert!("random".parse::<Policy>().is_err());
    }

    #[test]
    fn literals_need_no_dns() {
        let r = Resolver::new(ResolverOptions::new().server("127.0.0.1:9".parse().unwrap())).unwrap();
        let e = r.resolve("[::1]:80").unwrap();
        assert_eq!(e[0].addr, "[::1]:80".parse().unwrap());
        assert_eq!(r.queries(), 0);
        assert!(r.resolve("example").is_err());
    }
}
