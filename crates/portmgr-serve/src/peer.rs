//! Who may use the server: the registry is per user, so only the server's own user (or
//! root) may. Unix-socket peers are checked with `SO_PEERCRED`; loopback TCP peers by
//! looking their connection up in the kernel's socket table (`/proc/net/tcp{,6}`: the
//! uid owning the peer's socket); a loopback connection that cannot be attributed is
//! refused. Non-loopback peers can only reach a server given a bearer token, which every
//! request must then carry (compared in constant time). Each client is rate limited.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

/// A TCP client, as seen when its connection was accepted.
#[derive(Clone, Debug)]
pub(crate) struct Peer {
    /// Its address.
    pub(crate) addr: SocketAddr,
    /// The uid owning its socket, for a loopback peer found in the kernel's table.
    pub(crate) uid: Option<u32>,
}

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        let addr = *stream.remote_addr();
        let uid = match stream.io().local_addr() {
            Ok(local) if canonical(addr.ip()).is_loopback() => tcp_owner(addr, local),
            _ => None,
        };
        Peer { addr, uid }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

fn same(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && canonical(a.ip()) == canonical(b.ip())
}

/// The uid owning the client end of the loopback connection `peer` -> `local`: the entry
/// of the kernel's TCP table whose local address is the peer's and whose remote address
/// is ours.
fn tcp_owner(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let v4 = procfs::net::tcp().unwrap_or_default();
    let v6 = procfs::net::tcp6().unwrap_or_default();
    v4.iter()
        .chain(v6.iter())
        .find(|e| same(e.local_address, peer) && same(e.remote_address, local))
        .map(|e| e.uid)
}

/// The checks every request and connection goes through.
pub(crate) struct Guard {
    /// The server's own (effective) uid.
    uid: u32,
    token: Option<Vec<u8>>,
    limiter: DefaultKeyedRateLimiter<String>,
}

/// Why a client was turned away.
pub(crate) enum Refusal {
    /// Another local user, or a connection nobody could be found for: 403.
    Forbidden(String),
    /// No or a wrong bearer token: 401.
    Unauthorized(String),
    /// Over the rate limit: 429.
    TooMany,
}

impl Guard {
    pub(crate) fn new(token: Option<Vec<u8>>, per_second: u32) -> Guard {
        let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(per_second.saturating_mul(2)).unwrap_or(rate);
        Guard { uid: own_uid(), token, limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)) }
    }

    /// Whether `uid` may use the server: its own user, or root.
    pub(crate) fn allows_uid(&self, uid: u32) -> bool {
        uid == self.uid || uid == 0
    }

    /// The checks of one HTTP request from `peer` with this `Authorization` header.
    pub(crate) fn check(&self, peer: &Peer, authorization: Option<&[u8]>) -> Result<(), Refusal> {
        let loopback = canonical(peer.addr.ip()).is_loopback();
        if loopback {
            match peer.uid {
                Some(uid) if self.allows_uid(uid) => {}
                Some(uid) => {
                    return Err(Refusal::Forbidden(format!(
                        "this server belongs to uid {} and serves only that user (and root); your connection is uid {uid}'s: run your own `portmgr serve`",
                        self.uid
                    )));
                }
                None => {
                    return Err(Refusal::Forbidden(
                        "this connection could not be attributed to a local user, so it is refused".into(),
                    ));
                }
            }
        }
        if let Some(token) = &self.token {
            let given = authorization.and_then(|h| h.strip_prefix(b"Bearer ")).map(|t| t.trim_ascii());
            match given {
                Some(t) if bool::from(t.ct_eq(token)) => {}
                Some(_) => return Err(Refusal::Unauthorized("the bearer token is wrong".into())),
                None => {
                    return Err(Refusal::Unauthorized(
                        "this server needs a bearer token: send Authorization: Bearer TOKEN".into(),
                    ));
                }
            }
        } else if !loopback {
            // Only reachable through a socket-activated listener: refuse rather than trust.
            return Err(Refusal::Forbidden("non-loopback clients need a server with --token-file".into()));
        }
        let key = match peer.uid {
            Some(uid) => format!("uid {uid}"),
            None => canonical(peer.addr.ip()).to_string(),
        };
        if self.limiter.check_key(&key).is_err() {
            return Err(Refusal::TooMany);
        }
        Ok(())
    }
}

/// The effective uid, as the kernel shows it for `/proc/self`.
fn own_uid() -> u32 {
    std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX)
}

/// Read the bearer token: the file's content, trimmed; the file must be readable by its
/// owner only.
pub(crate) fn read_token(path: &Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("--token-file {}: {e}", path.display()))?;
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "--token-file {} can be read by other users (mode {:o}): chmod 600 it",
            path.display(),
            meta.mode() & 0o777
        ));
    }
    let text = std::fs::read(path).map_err(|e| format!("--token-file {}: {e}", path.display()))?;
    let token = text.trim_ascii().to_vec();
    if token.is_empty() {
        return Err(format!("--token-file {} is empty: put the token in it", path.display()));
    }
    Ok(token)
}
