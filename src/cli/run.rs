//! `portmgr run`: allocate ports, start the command with them (environment variables,
//! `{NAME}` substitution, bound sockets by the systemd `LISTEN_FDS` convention), forward
//! INT, TERM and HUP to it, release the ports when it exits, and exit with its status.
//! The system calls behind it (spawning with inherited fds, waiting without reaping,
//! signal masks) are in `crate::sys`.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;

use parking_lot::Mutex;

use super::args::{Cli, PortSpec, RunArgs};
use super::output::one_line;
use super::{EXIT_OTHER, EXIT_USAGE, R, fail, open_registry};
use crate::mapping;
use crate::listen::ListenOptions;
use crate::registry::{Lease, Registry, Request, UnixPath};
use crate::strategy::Strategy;
use crate::sys::{self, SignalSet};

pub(super) fn run(cli: &Cli, a: &RunArgs) -> R<i32> {
    // Names: --bind NAME wins over --port NAME; a name given twice otherwise is an error.
    let mut specs: Vec<(PortSpec, bool)> = Vec::new();
    for (s, bind) in a.binds.iter().map(|s| (s, true)).chain(a.ports.iter().map(|s| (s, false))) {
        if let Some(prev) = specs.iter().find(|(p, _)| mapping::env_stem(&p.name) == mapping::env_stem(&s.name)) {
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
                    mapping::env_stem(&s.name)
                ),
            ));
        }
        specs.push((s.clone(), bind));
    }
    if specs.is_empty() && a.unix.is_empty() && a.bind_unix.is_empty() {
        return Err(fail(
            EXIT_USAGE,
            "give at least one --port NAME, --bind NAME, --unix NAME or --bind-unix NAME (see `portmgr run --help`)",
        ));
    }
    let mut unix_names: Vec<&String> = Vec::new();
    for n in a.unix.iter().chain(&a.bind_unix) {
        if unix_names.iter().any(|m| mapping::env_stem(m) == mapping::env_stem(n)) {
            return Err(fail(
                EXIT_USAGE,
                format!("socket name {n:?} is given twice (or another becomes {}_SOCKET too)", mapping::env_stem(n)),
            ));
        }
        unix_names.push(n);
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
    let mut sockets: Vec<(String, OwnedFd)> = Vec::new();
    let mut vars: Vec<(String, u16)> = Vec::new();
    let mut unix_paths: Vec<UnixPath> = Vec::new();
    let mut unix_vars: Vec<(String, String)> = Vec::new();
    let listen = ListenOptions {
        addresses: a.addrs.clone(),
        reuse_port: a.workers > 1,
        workers: a.workers as usize,
        ..ListenOptions::default()
    };
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
        let lease = if *bind && (!a.addrs.is_empty() || a.workers > 1) {
            let (lease, socks) = reg.allocate_listeners(&req, &listen)?;
            sockets.extend(socks.into_iter().map(|l| (spec.name.clone(), OwnedFd::from(l.socket))));
            lease
        } else if *bind {
            let (lease, socks) = reg.allocate_bound(&req)?;
            sockets.extend(socks.into_iter().map(|b| (spec.name.clone(), OwnedFd::from(b.socket))));
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

    for (name, bind) in a.unix.iter().map(|n| (n, false)).chain(a.bind_unix.iter().map(|n| (n, true))) {
        if bind {
            let (path, listener) = reg.bound_unix_socket(Some(name))?;
            sockets.push((name.clone(), OwnedFd::from(listener)));
            unix_vars.push((name.clone(), path.path().display().to_string()));
            unix_paths.push(path);
        } else {
            let path = reg.unix_socket_path(Some(name))?;
            unix_vars.push((name.clone(), path.path().display().to_string()));
            unix_paths.push(path);
        }
    }

    // The command line, with {NAME} replaced by the port (or the socket path).
    let values: Vec<(String, String)> =
        vars.iter().map(|(n, p)| (n.clone(), p.to_string())).chain(unix_vars.iter().cloned()).collect();
    let argv: Vec<OsString> = a.cmd.iter().map(|arg| substitute(arg, &values)).collect();
    // The environment: ours, less any LISTEN_* meant for us, plus the ports.
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| !matches!(k.as_bytes(), b"LISTEN_FDS" | b"LISTEN_PID" | b"LISTEN_FDNAMES"))
        .collect();
    let mut set = |k: String, v: String| {
        env.retain(|(ek, _)| ek.as_bytes() != k.as_bytes());
        env.push((k.into(), v.into()));
    };
    for (name, port) in &vars {
        set(format!("{}_PORT", mapping::env_stem(name)), port.to_string());
    }
    if vars.len() == 1 {
        set("PORT".into(), vars[0].1.to_string());
    }
    for (name, path) in &unix_vars {
        set(format!("{}_SOCKET", mapping::env_stem(name)), path.clone());
    }
    if !sockets.is_empty() {
        set("LISTEN_FDS".into(), sockets.len().to_string());
        set("LISTEN_FDNAMES".into(), sockets.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(":"));
    }

    let fds: Vec<RawFd> = sockets.iter().map(|(_, s)| s.as_raw_fd()).collect();
    let mut child = match sys::spawn_with_fds(&argv, &env, &fds) {
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
    let waited = sys::wait_no_reap(pid);
    fwd.clear_child();
    let status = child.wait();
    for mut l in leases {
        if let Err(e) = l.release() {
            eprintln!("portmgr: releasing port {}: {}", l.port(), one_line(&e.to_string()));
        }
    }
    for mut p in unix_paths {
        if let Err(e) = p.release() {
            eprintln!("portmgr: removing {}: {}", p.path().display(), one_line(&e.to_string()));
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

/// Replace every `{NAME}` in `arg` by NAME's value (a port, a socket path).
fn substitute(arg: &OsStr, vars: &[(String, String)]) -> OsString {
    let mut bytes = arg.as_bytes().to_vec();
    for (name, value) in vars {
        let pat = format!("{{{name}}}").into_bytes();
        let rep = value.as_bytes().to_vec();
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

/// Forwards INT, TERM and HUP sent to portmgr to the child. The signals are blocked in
/// the calling thread (threads started later inherit that) and taken by one thread with
/// `sigwaitinfo`. Signals sent by the kernel on behalf of the terminal (Ctrl-C, hangup)
/// already reached the child, which is in our process group, and are not sent twice.
struct Forwarder {
    state: Arc<Mutex<FwdState>>,
    thread: Option<std::thread::JoinHandle<()>>,
    old_mask: SignalSet,
    set: SignalSet,
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
        let set = SignalSet::of(&FORWARDED);
        let old_mask = set.block()?;
        let state = Arc::new(Mutex::new(FwdState::default()));
        let st = Arc::clone(&state);
        let thread = std::thread::Builder::new().name("portmgr-signals".into()).spawn(move || {
            loop {
                // The set is blocked in this thread too (inherited mask).
                let (sig, from_kernel) = match set.wait() {
                    Ok(got) => got,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return,
                };
                let mut g = st.lock();
                if g.done {
                    return;
                }
                match g.child {
                    // The terminal's signal already went to the whole process group.
                    Some(_) if from_kernel => {}
                    // The child is not yet reaped (see sys::wait_no_reap), so `pid` is
                    // still ours.
                    Some(pid) => sys::send_signal(pid, sig),
                    None => g.pending = g.pending.or(Some(sig)),
                }
            }
        });
        match thread {
            Ok(t) => Ok(Forwarder { state, thread: Some(t), old_mask, set }),
            Err(e) => {
                old_mask.set_mask();
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
            // `pid` is our unreaped child.
            sys::send_signal(pid, sig);
        }
    }

    fn clear_child(&self) {
        self.state.lock().child = None;
    }

    /// Stop the thread, drop signals that arrived too late to matter, restore the mask.
    fn stop(mut self) {
        self.state.lock().done = true;
        if let Some(t) = self.thread.take() {
            // SIGHUP is blocked in the thread and taken by its sigwaitinfo, which then
            // sees `done`.
            sys::signal_thread(&t, libc::SIGHUP);
            let _ = t.join();
        }
        self.set.drain();
        self.old_mask.set_mask();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution() {
        let v = vec![("web".to_string(), "1234".to_string()), ("db".to_string(), "99".to_string())];
        assert_eq!(substitute(OsStr::new("--x={web},{db},{nope}{web}"), &v), "--x=1234,99,{nope}1234");
    }
}
