//! Listener sets: one port bound on several addresses and protocols at once, with the
//! socket options servers use (`SO_REUSEADDR`, `SO_REUSEPORT` with N sockets for N
//! workers, `IPV6_V6ONLY`, the backlog). [`Registry::allocate_listeners`] holds the port
//! in the registry as one lease; this module binds the sockets, all or nothing.
//!
//! ```no_run
//! use portmgr::{Registry, Request};
//! use portmgr::listen::ListenOptions;
//! let reg = Registry::open_default()?;
//! // A "localhost" server that answers on both 127.0.0.1 and ::1, on one port.
//! let opts = ListenOptions::on(["127.0.0.1".parse()?, "::1".parse()?]);
//! let (lease, listeners) = reg.allocate_listeners(&Request::new(), &opts)?;
//! assert_eq!(listeners.len(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`Registry::allocate_listeners`]: crate::Registry::allocate_listeners

use std::net::{IpAddr, SocketAddr};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::error::{Error, Result};
use crate::probe;
use crate::range::Protocols;

/// Most sockets one listener set may hold.
pub const MAX_SOCKETS: usize = 1024;

/// How to bind a listener set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenOptions {
    /// The addresses, each bound on the same port (default: the dual-stack wildcard).
    pub addresses: Vec<IpAddr>,
    /// `SO_REUSEADDR` (a restarted server binds over connections in TIME_WAIT).
    pub reuse_addr: bool,
    /// `SO_REUSEPORT`: needed for `workers > 1` (the kernel spreads connections over them).
    pub reuse_port: bool,
    /// Sockets per address and protocol (each worker accepts on its own).
    pub workers: usize,
    /// `IPV6_V6ONLY` for IPv6 addresses (`None`: the system's default, except that the
    /// `[::]` wildcard is dual-stack unless `0.0.0.0` is in the set too).
    pub ipv6_only: Option<bool>,
    /// The listen backlog of TCP sockets.
    pub backlog: i32,
}

impl Default for ListenOptions {
    fn default() -> ListenOptions {
        ListenOptions { addresses: Vec::new(), reuse_addr: false, reuse_port: false, workers: 1, ipv6_only: None, backlog: 1024 }
    }
}

impl ListenOptions {
    /// On these addresses, with the defaults.
    pub fn on(addresses: impl IntoIterator<Item = IpAddr>) -> ListenOptions {
        ListenOptions { addresses: addresses.into_iter().collect(), ..ListenOptions::default() }
    }

    /// The addresses to bind (the wildcard when none is given).
    pub fn addresses(&self) -> Vec<IpAddr> {
        if self.addresses.is_empty() { vec![probe::wildcard()] } else { self.addresses.clone() }
    }

    /// Check the options for `protocols`.
    pub fn validate(&self, protocols: Protocols) -> Result<()> {
        if self.workers == 0 {
            return Err(Error::invalid("workers must be 1 or more"));
        }
        if self.workers > 1 && !self.reuse_port {
            return Err(Error::invalid(format!(
                "{} workers on one port need reuse_port (SO_REUSEPORT): set it, or use 1 worker",
                self.workers
            )));
        }
        if self.backlog < 1 {
            return Err(Error::invalid(format!("backlog must be 1 or more, not {}", self.backlog)));
        }
        let addrs = self.addresses();
        let mut seen = std::collections::HashSet::new();
        if let Some(a) = addrs.iter().find(|a| !seen.insert(**a)) {
            return Err(Error::invalid(format!("address {a} is given twice")));
        }
        let per = usize::from(protocols.tcp()) + usize::from(protocols.udp());
        if addrs.len() * per * self.workers > MAX_SOCKETS {
            return Err(Error::invalid(format!("at most {MAX_SOCKETS} sockets per listener set")));
        }
        Ok(())
    }
}

/// An address of a listener set as a caller writes it: `127.0.0.1`, `::1`, or `[::1]`
/// (brackets allowed around IPv6). The one rule every skin uses.
pub fn parse_address(text: &str) -> Result<IpAddr> {
    let t = text.trim();
    let inner = t.strip_prefix('[').and_then(|x| x.strip_suffix(']')).unwrap_or(t);
    inner.parse().map_err(|_| {
        Error::invalid(format!("{text:?} is not an IP address: give addresses such as \"127.0.0.1\" or \"::1\""))
    })
}

/// One socket of a listener set.
#[derive(Debug)]
pub struct Listener {
    /// The address it is bound to.
    pub address: IpAddr,
    /// The port.
    pub port: u16,
    /// TCP (listening) or UDP (bound).
    pub protocol: Protocols,
    /// Which worker's socket (0 to workers - 1).
    pub worker: usize,
    /// The socket, close-on-exec.
    pub socket: Socket,
}

/// Bind the whole set on `port`: `Ok(None)` when some address has it in use (nothing is
/// left bound), an error for anything else (nothing is left bound either).
pub(crate) fn bind_set(port: u16, protocols: Protocols, opts: &ListenOptions) -> Result<Option<Vec<Listener>>> {
    let addrs = opts.addresses();
    let has_v4_any = addrs.iter().any(|a| a.is_unspecified() && a.is_ipv4());
    let mut out = Vec::new();
    for &address in &addrs {
        for protocol in [Protocols::TCP, Protocols::UDP] {
            if protocols.bits() & protocol.bits() == 0 {
                continue;
            }
            for worker in 0..opts.workers {
                match bind_one(address, port, protocol, opts, has_v4_any) {
                    Ok(socket) => out.push(Listener { address, port, protocol, worker, socket }),
                    // Dropping `out` closes what was bound: all or nothing.
                    Err(Error::PortInUse { .. }) => return Ok(None),
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(Some(out))
}

fn bind_one(address: IpAddr, port: u16, protocol: Protocols, opts: &ListenOptions, has_v4_any: bool) -> Result<Socket> {
    let (ty, proto) = if protocol == Protocols::UDP { (Type::DGRAM, Protocol::UDP) } else { (Type::STREAM, Protocol::TCP) };
    let domain = if address.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    // socket2 opens it close-on-exec.
    let sock = Socket::new(domain, ty, Some(proto)).map_err(|e| Error::os("creating a socket", e))?;
    let set = |what: &str, r: std::io::Result<()>| r.map_err(|e| Error::os(format!("setting {what} on a socket for port {port}"), e));
    if opts.reuse_addr {
        set("SO_REUSEADDR", sock.set_reuse_address(true))?;
    }
    if opts.reuse_port {
        set("SO_REUSEPORT", sock.set_reuse_port(true))?;
    }
    if address.is_ipv6() {
        // The [::] wildcard is dual-stack unless 0.0.0.0 is bound beside it.
        let only = opts.ipv6_only.unwrap_or(address.is_unspecified() && has_v4_any);
        if opts.ipv6_only.is_some() || address.is_unspecified() {
            set("IPV6_V6ONLY", sock.set_only_v6(only))?;
        }
    }
    sock.bind(&SockAddr::from(SocketAddr::new(address, port))).map_err(|e| match e.raw_os_error() {
        Some(libc::EADDRINUSE) => Error::PortInUse { port, holder: "a socket outside portmgr".into() },
        Some(libc::EACCES) => probe::privileged_error(port),
        Some(libc::EADDRNOTAVAIL) => Error::invalid(format!(
            "{address} is not an address of this host, so port {port} cannot be bound on it: give one of its addresses"
        )),
        _ => Error::os(format!("binding {address} port {port}"), e),
    })?;
    if ty == Type::STREAM {
        sock.listen(opts.backlog).map_err(|e| Error::os(format!("listening on {address} port {port}"), e))?;
    }
    Ok(sock)
}
