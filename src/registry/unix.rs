//! Unix-socket paths ("zero-port mode"): where a TCP port is not needed, a fresh socket
//! path per request, in a private 0700 directory under the registry (`sockets/`), named
//! after the service. Each path has an owner file beside it (`NAME-PID-N.owner`: the
//! holder's pid and start time); the path and its owner file are removed when the holder
//! releases it, and the paths of holders that died are cleaned at the next request (or
//! `gc`), like dead leases.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixListener;
use std::sync::atomic::AtomicU64;

use super::*;

/// The directory of socket paths, inside the registry directory.
pub const SOCKETS_DIR: &str = "sockets";
/// The longest path a Unix socket may have (`sun_path` holds 108 bytes with the NUL).
pub const SUN_PATH_MAX: usize = 107;
/// Longest service-name part of a socket file name.
const NAME_PART_MAX: usize = 32;

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A Unix-socket path held for this process: nobody else is handed it; removed (with the
/// socket file, if one was bound there) on [`UnixPath::release`] or drop, and cleaned by
/// others once this process is gone.
#[derive(Debug)]
pub struct UnixPath {
    path: PathBuf,
    owner: PathBuf,
    pid: u32,
    active: bool,
}

impl UnixPath {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Remove the path (and the socket file there) now. Idempotent; in a forked child it
    /// does nothing (the path is the parent's).
    pub fn release(&mut self) -> Result<()> {
        if !self.active || self.pid != sys::getpid() {
            self.active = false;
            return Ok(());
        }
        self.active = false;
        for p in [&self.path, &self.owner] {
            match std::fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::os(format!("removing {}", p.display()), e)),
            }
        }
        Ok(())
    }
    /// Keep the path past this handle: not removed on drop; cleaned once this process
    /// has exited. Returns it.
    pub fn keep(mut self) -> PathBuf {
        self.active = false;
        std::mem::take(&mut self.path)
    }
}

impl Drop for UnixPath {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

/// The file-name part of a service name: `A-Z a-z 0-9 . _ -` kept, anything else `_`,
/// at most 32 characters; `sock` for none.
fn name_part(name: Option<&str>) -> String {
    let n: String = name
        .unwrap_or("sock")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .take(NAME_PART_MAX)
        .collect();
    let n = n.trim_start_matches('.').to_string();
    if n.is_empty() { "sock".into() } else { n }
}

/// Whether the holder an owner file names is gone (dead, or its pid reused). Unknown
/// (no /proc) counts as alive: a path is never taken from a holder that may live.
fn holder_gone(owner_text: &str) -> bool {
    let mut w = owner_text.split_whitespace();
    let (Some(pid), Some(start)) = (w.next().and_then(|p| p.parse::<u32>().ok()), w.next().and_then(|s| s.parse::<u64>().ok()))
    else {
        return true;
    };
    match sys::proc_state(pid) {
        ProcState::Dead => true,
        ProcState::Alive(st) => st != start,
        ProcState::Unknown => false,
    }
}

impl Registry {
    /// The private directory of socket paths, created 0700 when missing and checked
    /// (a directory, this user's, no access for others, not a symbolic link).
    fn sockets_dir(&self) -> Result<PathBuf> {
        let dir = self.dir().join(SOCKETS_DIR);
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::os(format!("creating {}", dir.display()), e)),
        }
        let md = std::fs::symlink_metadata(&dir).map_err(|e| Error::os(format!("checking {}", dir.display()), e))?;
        let me = std::fs::metadata(self.dir()).map(|m| m.uid()).unwrap_or(u32::MAX);
        if !md.is_dir() || md.file_type().is_symlink() || md.uid() != me || md.mode() & 0o077 != 0 {
            return Err(Error::InsecureDirectory {
                path: dir,
                reason: "it must be a directory of the registry's owner, mode 0700, not a symbolic link: remove it (portmgr recreates it)".into(),
            });
        }
        Ok(dir)
    }

    /// A fresh Unix-socket path for `name` (a service name, or none), held for this
    /// process: `REGISTRY/sockets/NAME-PID-N.sock`. Nothing is bound there; bind it (or
    /// use [`Registry::bound_unix_socket`]). Paths of holders that died are cleaned first.
    ///
    /// Errors: [`Error::InvalidArgument`] for a bad name, or a path longer than a Unix
    /// socket path may be (107 bytes: the error says how long it is and to use a shorter
    /// registry directory); [`Error::InsecureDirectory`] for a `sockets` directory that is
    /// not private.
    pub fn unix_socket_path(&self, name: Option<&str>) -> Result<UnixPath> {
        if let Some(n) = name {
            validate_name(n)?;
        }
        let dir = self.sockets_dir()?;
        let _ = self.clean_unix_paths();
        let pid = sys::getpid();
        let start = match sys::proc_state(pid) {
            ProcState::Alive(st) => st,
            _ => 0,
        };
        let stem_base = format!("{}-{pid}", name_part(name));
        for _ in 0..64 {
            let n = SEQ.fetch_add(1, AcqRel);
            let stem = format!("{stem_base}-{n}");
            let path = dir.join(format!("{stem}.sock"));
            let len = path.as_os_str().len();
            if len > SUN_PATH_MAX {
                return Err(Error::invalid(format!(
                    "the socket path {} is {len} bytes, more than the {SUN_PATH_MAX} a Unix socket path may have: use a shorter registry directory (PORTMGR_DIR=/tmp/pm-$USER, or --registry) or a shorter name",
                    path.display()
                )));
            }
            let owner = dir.join(format!("{stem}.owner"));
            // The owner file first (create_new: never another holder's), then the path
            // is ours; close-on-exec like every fd here.
            let mut f = match OpenOptions::new().write(true).create_new(true).mode(0o600).open(&owner) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::os(format!("creating {}", owner.display()), e)),
            };
            f.write_all(format!("{pid} {start}\n").as_bytes())
                .map_err(|e| Error::os(format!("writing {}", owner.display()), e))?;
            // A socket left at this path by a dead holder of the same name: not ours to keep.
            let _ = std::fs::remove_file(&path);
            return Ok(UnixPath { path, owner, pid, active: true });
        }
        Err(Error::Internal("64 socket path names in a row were taken".into()))
    }

    /// [`Registry::unix_socket_path`], bound: a listening Unix stream socket there
    /// (close-on-exec). The path is removed when the [`UnixPath`] is released.
    pub fn bound_unix_socket(&self, name: Option<&str>) -> Result<(UnixPath, UnixListener)> {
        let path = self.unix_socket_path(name)?;
        let l = UnixListener::bind(path.path()).map_err(|e| Error::os(format!("binding {}", path.path().display()), e))?;
        Ok((path, l))
    }

    /// Remove the socket paths of holders that are gone (and sockets nobody owns);
    /// returns them.
    pub fn clean_unix_paths(&self) -> Result<Vec<PathBuf>> {
        let dir = self.dir().join(SOCKETS_DIR);
        let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(Vec::new()) };
        let mut removed = Vec::new();
        let mut owners = HashSet::new();
        let mut socks = Vec::new();
        for e in entries.flatten() {
            let p = e.path();
            match p.extension().and_then(|x| x.to_str()) {
                Some("owner") => {
                    let text = std::fs::read_to_string(&p).unwrap_or_default();
                    let sock = p.with_extension("sock");
                    if holder_gone(&text) {
                        let _ = std::fs::remove_file(&sock);
                        if std::fs::remove_file(&p).is_ok() {
                            removed.push(sock);
                        }
                    } else {
                        owners.insert(sock);
                    }
                }
                Some("sock") => socks.push(p),
                _ => {}
            }
        }
        // A socket whose owner file is gone (released, or removed by hand).
        for s in socks {
            if !owners.contains(&s) && !s.with_extension("owner").exists() && std::fs::remove_file(&s).is_ok() {
                removed.push(s);
            }
        }
        Ok(removed)
    }
}
