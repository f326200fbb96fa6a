//! What a caller asks the registry for.

use std::net::IpAddr;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::range::{PortRange, Protocols};
use crate::registry::layout::NAME_MAX;
use crate::strategy::Strategy;

/// Most ports one request may take at once.
pub const MAX_COUNT: usize = 4096;

/// The shortest TTL a lease may be given or renewed with. A shorter one hands out a port
/// that has expired (or is about to) before the caller can use it: `--ttl 1ms` or a TTL
/// in nanoseconds is a mistake of units, not a lifetime.
pub const MIN_TTL: Duration = Duration::from_secs(1);

/// Refuse a TTL shorter than [`MIN_TTL`], as allocations and every renew do (for a skin
/// that must answer before it reaches the registry).
pub fn check_ttl(ttl: Duration) -> Result<()> {
    if ttl < MIN_TTL {
        return Err(Error::invalid(format!(
            "ttl must be at least 1 s, not {ttl:?}: a shorter lease expires before its port can be used; give 1 s or more"
        )));
    }
    Ok(())
}

/// A request for ports, built with chained setters:
///
/// ```
/// use portmgr::{Request, Protocols, Strategy};
/// let req = Request::new().name("db").protocols(Protocols::BOTH).strategy(Strategy::Sequential);
/// assert_eq!(req.get_name(), Some("db"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub(crate) protocols: Protocols,
    pub(crate) range: Option<PortRange>,
    pub(crate) strategy: Strategy,
    pub(crate) name: Option<String>,
    pub(crate) count: usize,
    pub(crate) contiguous: bool,
    pub(crate) ttl: Option<Duration>,
    pub(crate) watch_pid: Option<u32>,
    pub(crate) probe_addr: Option<IpAddr>,
    pub(crate) preferred: Option<u16>,
    pub(crate) required: bool,
    pub(crate) exclude: Vec<u16>,
}

impl Request {
    /// One TCP port from the default pool, random strategy, held while this process lives.
    pub fn new() -> Request {
        Request { count: 1, ..Request::default() }
    }
    /// TCP, UDP or both (the port must be free for all of them).
    pub fn protocols(mut self, p: Protocols) -> Request {
        self.protocols = p;
        self
    }
    /// Draw from `range` instead of the default pool.
    pub fn range(mut self, r: PortRange) -> Request {
        self.range = Some(r);
        self
    }
    /// How to pick (see [`Strategy`]); random by default.
    pub fn strategy(mut self, s: Strategy) -> Request {
        self.strategy = s;
        self
    }
    /// A service name: unique among live leases of the registry; also the hash key.
    pub fn name(mut self, n: impl Into<String>) -> Request {
        self.name = Some(n.into());
        self
    }
    /// Take `n` ports at once, all or nothing.
    pub fn count(mut self, n: usize) -> Request {
        self.count = n;
        self
    }
    /// With `count`: the ports must be consecutive.
    pub fn contiguous(mut self, c: bool) -> Request {
        self.contiguous = c;
        self
    }
    /// Hold the ports for `ttl` (renewable), whether or not this process lives.
    pub fn ttl(mut self, ttl: Duration) -> Request {
        self.ttl = Some(ttl);
        self
    }
    /// Hold the ports while process `pid` lives (and, with a TTL, no longer than it).
    pub fn watch_pid(mut self, pid: u32) -> Request {
        self.watch_pid = Some(pid);
        self
    }
    /// Probe on this address instead of the dual-stack wildcard.
    pub fn probe_addr(mut self, a: IpAddr) -> Request {
        self.probe_addr = Some(a);
        self
    }
    /// Try `port` first; when it is taken, fail if `required`, else use the strategy.
    pub fn preferred(mut self, port: u16, required: bool) -> Request {
        self.preferred = Some(port);
        self.required = required;
        self
    }
    /// Never hand out these ports (added to any earlier ones): applies to the range asked
    /// for or to the default pool, and to a preferred port.
    pub fn exclude(mut self, ports: impl IntoIterator<Item = u16>) -> Request {
        self.exclude.extend(ports);
        self
    }
    /// Never hand out the ports of these inclusive spans (as [`Request::exclude`]).
    pub fn exclude_spans(self, spans: &[(u16, u16)]) -> Request {
        self.exclude(spans.iter().flat_map(|&(a, b)| a..=b))
    }

    /// The name asked for.
    pub fn get_name(&self) -> Option<&str> {
        self.name.as_deref()
    }
    /// The protocols asked for.
    pub fn get_protocols(&self) -> Protocols {
        self.protocols
    }
    /// How many ports are asked for.
    pub fn get_count(&self) -> usize {
        self.count
    }

    /// Check everything that can be checked without the registry.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.count == 0 || self.count > MAX_COUNT {
            return Err(Error::invalid(format!("count must be from 1 to {MAX_COUNT}, not {}", self.count)));
        }
        if let Some(n) = &self.name {
            validate_name(n)?;
        }
        if self.preferred == Some(0) {
            return Err(Error::invalid("preferred port 0 is not a port"));
        }
        if self.required && self.preferred.is_none() {
            return Err(Error::invalid("required needs a preferred port"));
        }
        if self.preferred.is_some() && self.count > 1 && !self.contiguous {
            return Err(Error::invalid(
                "a preferred port with count > 1 needs contiguous (the block starts at the preferred port)",
            ));
        }
        if let Some(t) = self.ttl {
            check_ttl(t)?;
        }
        if self.strategy == Strategy::Kernel && self.count > 1 {
            return Err(Error::invalid("the kernel strategy gives one port at a time: use count 1"));
        }
        Ok(())
    }
}

/// A service name: 1 to 56 bytes of UTF-8, no control characters.
pub fn validate_name(n: &str) -> Result<()> {
    if n.is_empty() || n.len() > NAME_MAX {
        return Err(Error::invalid(format!(
            "service name {} must be 1 to {NAME_MAX} bytes of UTF-8 (it is {})",
            shown_name(n),
            n.len()
        )));
    }
    if n.chars().any(char::is_control) {
        return Err(Error::invalid(format!("service name {} contains control characters", shown_name(n))));
    }
    Ok(())
}

/// Longest part of a name a message quotes.
const SHOWN_CHARS: usize = 60;

/// A name for a message: quoted (control characters escaped), and cut to its first
/// 60 characters when longer, with its size: an error never echoes 100 KB of input.
pub(crate) fn shown_name(n: &str) -> String {
    if n.chars().count() <= SHOWN_CHARS {
        return format!("{n:?}");
    }
    let head: String = n.chars().take(SHOWN_CHARS).collect();
    format!("{head:?}…({} bytes)", n.len())
}
