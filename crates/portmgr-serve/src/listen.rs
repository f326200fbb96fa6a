//! Binding the listeners: `--http` TCP addresses, `--portserver` Unix sockets (a path, or
//! `@NAME` in the abstract namespace), and sockets passed by systemd socket activation
//! (`LISTEN_FDS`). Every descriptor is close-on-exec.

use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener as StdUnixListener, UnixStream as StdUnixStream};
use std::path::Path;

use portmgr::cli::ServeOptions;
use tokio::net::{TcpListener, UnixListener};

use crate::{EXIT_IN_USE, EXIT_OTHER, EXIT_USAGE, Fail};

/// A portserver listener and how it is named (`@unittest-portserver`, a path).
pub(crate) struct PortserverListener {
    pub(crate) listener: UnixListener,
    pub(crate) name: String,
}

/// Every listener, bound.
pub(crate) struct Bound {
    pub(crate) http: Vec<TcpListener>,
    pub(crate) portserver: Vec<PortserverListener>,
}

pub(crate) async fn bind(opts: &ServeOptions, have_token: bool) -> Result<Bound, Fail> {
    let mut out = Bound { http: Vec::new(), portserver: Vec::new() };
    for addr in &opts.http {
        if !addr.ip().is_loopback() && !have_token {
            return Err(Fail(
                EXIT_USAGE,
                format!(
                    "{addr} is not a loopback address: anyone who can reach it could take and free ports, so it needs --token-file FILE (every request then carries Authorization: Bearer TOKEN); for this host only, use 127.0.0.1 or [::1]"
                ),
            ));
        }
        let l = TcpListener::bind(addr).await.map_err(|e| bind_error(&addr.to_string(), &e))?;
        out.http.push(l);
    }
    for name in &opts.portserver {
        out.portserver.push(bind_unix(name)?);
    }
    activated(&mut out, have_token)?;
    if out.http.is_empty() && out.portserver.is_empty() {
        return Err(Fail(EXIT_USAGE, "no listener: give --http ADDR or --portserver ADDR".into()));
    }
    Ok(out)
}

fn bind_error(what: &str, e: &std::io::Error) -> Fail {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            Fail(EXIT_IN_USE, format!("{what} is in use by another program: pick another address (port 0: any free one)"))
        }
        std::io::ErrorKind::PermissionDenied => {
            Fail(EXIT_USAGE, format!("binding {what}: permission denied (a privileged port, or a directory this user may not write)"))
        }
        _ => Fail(EXIT_OTHER, format!("binding {what}: {e}")),
    }
}

/// `@NAME`: the abstract namespace (nothing on disk); otherwise a path. A path left by a
/// server that is gone (nobody accepts on it) is replaced; a live one is refused.
fn bind_unix(name: &str) -> Result<PortserverListener, Fail> {
    let std = if let Some(abs) = name.strip_prefix('@') {
        if abs.is_empty() {
            return Err(Fail(EXIT_USAGE, "--portserver @ needs a name after the @, e.g. @unittest-portserver".into()));
        }
        let addr = UnixAddr::from_abstract_name(abs.as_bytes()).map_err(|e| Fail(EXIT_USAGE, format!("{name}: {e}")))?;
        StdUnixListener::bind_addr(&addr).map_err(|e| bind_error(name, &e))?
    } else {
        let path = Path::new(name);
        if path.exists() {
            if StdUnixStream::connect(path).is_ok() {
                return Err(Fail(EXIT_IN_USE, format!("{name}: another server is listening on it")));
            }
            let is_socket = std::fs::symlink_metadata(path)
                .map(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                .unwrap_or(false);
            if !is_socket {
                return Err(Fail(EXIT_USAGE, format!("{name} exists and is not a socket: give a new path")));
            }
            let _ = std::fs::remove_file(path);
        }
        StdUnixListener::bind(path).map_err(|e| bind_error(name, &e))?
    };
    to_tokio(std, name.to_string())
}

fn to_tokio(std: StdUnixListener, name: String) -> Result<PortserverListener, Fail> {
    std.set_nonblocking(true).map_err(|e| Fail(EXIT_OTHER, format!("{name}: {e}")))?;
    let listener = UnixListener::from_std(std).map_err(|e| Fail(EXIT_OTHER, format!("{name}: {e}")))?;
    Ok(PortserverListener { listener, name })
}

/// Sockets passed by systemd (`LISTEN_PID`, `LISTEN_FDS`): TCP ones serve HTTP, Unix ones
/// the portserver protocol.
fn activated(out: &mut Bound, have_token: bool) -> Result<(), Fail> {
    let mut fds = listenfd::ListenFd::from_env();
    for i in 0..fds.len() {
        if let Ok(Some(l)) = fds.take_tcp_listener(i) {
            cloexec(&l)?;
            let addr = l.local_addr().map_err(|e| Fail(EXIT_OTHER, e.to_string()))?;
            if !addr.ip().is_loopback() && !have_token {
                return Err(Fail(EXIT_USAGE, format!("the activated socket {addr} is not loopback: it needs --token-file FILE")));
            }
            l.set_nonblocking(true).map_err(|e| Fail(EXIT_OTHER, e.to_string()))?;
            out.http.push(TcpListener::from_std(l).map_err(|e| Fail(EXIT_OTHER, e.to_string()))?);
        } else if let Ok(Some(u)) = fds.take_unix_listener(i) {
            cloexec(&u)?;
            let name = match u.local_addr() {
                Ok(a) => match (a.as_pathname(), a.as_abstract_name()) {
                    (Some(p), _) => p.display().to_string(),
                    (None, Some(n)) => format!("@{}", String::from_utf8_lossy(n)),
                    _ => format!("fd {}", i + 3),
                },
                Err(_) => format!("fd {}", i + 3),
            };
            out.portserver.push(to_tokio(u, name)?);
        } else {
            return Err(Fail(
                EXIT_USAGE,
                format!("socket activation: fd {} is neither a listening TCP socket nor a Unix stream socket", i + 3),
            ));
        }
    }
    Ok(())
}

/// Descriptors systemd passes are inherited without close-on-exec: set it.
fn cloexec(fd: &impl AsRawFd) -> Result<(), Fail> {
    let fd = fd.as_raw_fd();
    // SAFETY: F_GETFD/F_SETFD on a descriptor this process owns (taken from listenfd just
    // now); no memory is passed.
    let ok = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) >= 0
    };
    if ok { Ok(()) } else { Err(Fail(EXIT_OTHER, format!("fd {fd}: {}", std::io::Error::last_os_error()))) }
}
