//! Where the registry lives, and the checks that make the location safe to trust.
//!
//! The directory is `PORTMGR_DIR` when set, else `$XDG_RUNTIME_DIR/portmgr`, else
//! `<temp dir>/portmgr-<uid>`. It is created mode 0700 and, on every open, opened with
//! `O_NOFOLLOW` and checked through its fd: a directory, owned by the effective uid, not
//! writable by group or others, not on a network or FUSE file system (where `flock` is
//! emulated or absent; allow with `PORTMGR_ALLOW_NETWORK_FS=1`). Files inside are opened
//! relative to that fd with `O_NOFOLLOW | O_CLOEXEC` and checked the same way.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::sys;

/// The registry directory used when none is given (see the module docs). When
/// `PORTMGR_DIR` is set but empty this is the location without it; opening there is
/// refused all the same: see [`resolve_default_dir`], which every opener uses.
pub fn default_dir() -> PathBuf {
    match std::env::var_os("PORTMGR_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => fallback_dir(),
    }
}

/// The default registry directory, as [`Registry::open_default`](super::Registry::open_default)
/// and every skin (CLI, C, Python) resolve it: `PORTMGR_DIR` when set, else the per-user
/// default. `PORTMGR_DIR` set but empty is an error, as an empty `--registry` or an empty
/// path is: most likely a script's variable that expanded to nothing, and silently
/// using another registry would hide that.
pub fn resolve_default_dir() -> Result<PathBuf> {
    match std::env::var_os("PORTMGR_DIR") {
        Some(d) if d.is_empty() => Err(Error::invalid(format!(
            "PORTMGR_DIR is set but empty: unset it to use the default ({}) or give a directory",
            fallback_dir().display()
        ))),
        Some(d) => Ok(PathBuf::from(d)),
        None => Ok(fallback_dir()),
    }
}

/// `$XDG_RUNTIME_DIR/portmgr` when that runtime dir is really ours, else
/// `<temp dir>/portmgr-<uid>`.
fn fallback_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        let x = PathBuf::from(x);
        // Only a runtime dir that is really ours: absolute, a directory, owned by us.
        if x.is_absolute() && owned_by_us(&x) {
            return x.join("portmgr");
        }
    }
    std::env::temp_dir().join(format!("portmgr-{}", sys::geteuid()))
}

/// `dir` made absolute (against the current directory), refusing what cannot name a
/// registry directory: an empty path (it would mean the current directory) and a path
/// with a NUL byte (no file name can hold one).
pub(crate) fn absolute(dir: &Path) -> Result<PathBuf> {
    if dir.as_os_str().is_empty() {
        return Err(Error::invalid(format!(
            "the registry directory path is empty: give a directory, or none for the default ({})",
            fallback_dir().display()
        )));
    }
    if dir.as_os_str().as_bytes().contains(&0) {
        return Err(Error::invalid(format!(
            "the registry directory path {} contains a NUL byte, which no file name can hold",
            shown(dir.as_os_str())
        )));
    }
    if dir.is_absolute() {
        return Ok(dir.to_path_buf());
    }
    let cwd = std::env::current_dir().map_err(|e| Error::os("reading the current directory", e))?;
    Ok(cwd.join(dir))
}

/// A path for a message: quoted, and cut short when long.
fn shown(p: &OsStr) -> String {
    let s = p.to_string_lossy();
    if s.chars().count() <= 80 {
        return format!("{s:?}");
    }
    let head: String = s.chars().take(80).collect();
    format!("{head:?}…({} bytes)", p.len())
}

/// An OS error met while opening the registry directory or its files. Running out of
/// file descriptors is said in words, with the fix: it is no problem of the directory.
fn os_error(context: String, e: io::Error) -> Error {
    let context = match e.raw_os_error() {
        Some(libc::EMFILE) => format!(
            "{context}: this process has too many open files (it reached its limit, `ulimit -n`): close files it does not need, or raise the limit"
        ),
        Some(libc::ENFILE) => format!(
            "{context}: the system has too many open files (it reached fs.file-max): close files, or raise the limit"
        ),
        _ => context,
    };
    Error::os(context, e)
}

fn owned_by_us(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir() && m.uid() == sys::geteuid())
}

fn insecure(path: &Path, reason: impl Into<String>) -> Error {
    Error::InsecureDirectory { path: path.to_path_buf(), reason: reason.into() }
}

/// Create `path` (mode 0700) if it is missing, open it without following links, and
/// check it. Returns the directory's fd, through which every file is opened.
pub fn open_secure_dir(path: &Path) -> Result<OwnedFd> {
    let path = &absolute(path)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::os(format!("creating {}", parent.display()), e))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::os(format!("creating the registry directory {}", path.display()), e)),
    }
    let is_link = || std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    let fd = sys::open_dir_nofollow(path).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::ENOTDIR) if is_link() => insecure(
            path,
            "it is a symbolic link; portmgr never follows a link for its directory: point PORTMGR_DIR at the real directory",
        ),
        Some(libc::ENOTDIR) => insecure(path, "it is not a directory: remove it or choose another PORTMGR_DIR"),
        _ => os_error(format!("opening the registry directory {}", path.display()), e),
    })?;
    let st = sys::fstat(&fd).map_err(|e| Error::os(format!("fstat of {}", path.display()), e))?;
    check_owner_mode(path, &st, "directory", true)?;
    check_fs(path, &fd)?;
    check_dedicated(path, &fd)?;
    Ok(fd)
}

/// Whether `name` is one of the files portmgr keeps in its directory: the registry,
/// its lock, the mapping layer's `services.json` (and its temp file), and damaged files
/// moved aside.
fn is_portmgr_file(name: &OsStr) -> bool {
    let n = name.as_bytes();
    matches!(n, b"registry.lock" | b"registry.db" | b"services.json")
        || n.starts_with(b"registry.db.damaged-")
        || n.starts_with(b"services.json.damaged-")
        || n.starts_with(b".services.json.tmp.")
}

/// Refuse a directory that is not portmgr's own: one holding other files and none of
/// portmgr's (`/`, `/etc`, a home directory: a `PORTMGR_DIR` set by mistake). portmgr
/// writes its files into the directory it is given, so it must be a dedicated one; an
/// empty directory becomes one. Read through the checked fd (`/proc/self/fd/N`), so a
/// path swapped meanwhile is not what is looked at.
fn check_dedicated(path: &Path, fd: &OwnedFd) -> Result<()> {
    let via_fd = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let base = match via_fd.is_dir() {
        true => via_fd,
        false => path.to_path_buf(),
    };
    // The common case, a registry directory: no listing needed.
    let own = ["registry.lock", "registry.db"];
    if own.iter().any(|f| base.join(f).symlink_metadata().is_ok()) {
        return Ok(());
    }
    let what = format!("reading the registry directory {}", path.display());
    let reading = |e| os_error(what.clone(), e);
    let mut others = Vec::new();
    let mut count = 0usize;
    for entry in std::fs::read_dir(&base).map_err(reading)? {
        let name = entry.map_err(reading)?.file_name();
        if is_portmgr_file(&name) {
            return Ok(());
        }
        count += 1;
        if others.len() < 3 {
            others.push(shown(&name));
        }
    }
    if count == 0 {
        return Ok(());
    }
    let more = match count - others.len() {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    Err(insecure(
        path,
        format!(
            "it is not a directory of portmgr's own: it holds other files ({}{more}) and no registry; portmgr writes its files (registry.lock, registry.db) into the directory it is given, so give it a dedicated one: a new or empty directory (portmgr creates it, mode 0700), or unset PORTMGR_DIR for the default ({})",
            others.join(", "),
            fallback_dir().display()
        ),
    ))
}

fn check_owner_mode(path: &Path, st: &libc::stat, what: &str, dir: bool) -> Result<()> {
    let me = sys::geteuid();
    if st.st_uid != me {
        return Err(insecure(
            path,
            format!(
                "the {what} is owned by uid {}, not by you (uid {me}): another user could change what portmgr reads; use a directory of your own (unset PORTMGR_DIR or point it elsewhere)",
                st.st_uid
            ),
        ));
    }
    if st.st_mode & 0o022 != 0 {
        let fix = if dir { "chmod 700" } else { "chmod 600" };
        return Err(insecure(
            path,
            format!(
                "the {what} is writable by group or others (mode {:o}): run `{fix} {}`",
                st.st_mode & 0o7777,
                path.display()
            ),
        ));
    }
    Ok(())
}

fn check_fs(path: &Path, fd: &OwnedFd) -> Result<()> {
    const NFS: i64 = 0x6969;
    const SMB: i64 = 0x517B;
    const CIFS: i64 = 0xFF53_4D42;
    const SMB2: i64 = 0xFE53_4D42;
    const FUSE: i64 = 0x6573_5546;
    const NAMES: [(i64, &str); 5] = [(NFS, "NFS"), (SMB, "SMB"), (CIFS, "CIFS"), (SMB2, "SMB2"), (FUSE, "FUSE")];
    if std::env::var_os("PORTMGR_ALLOW_NETWORK_FS").is_some_and(|v| v == "1") {
        return Ok(());
    }
    let magic = sys::fs_magic(fd).map_err(|e| Error::os(format!("statfs of {}", path.display()), e))?;
    if let Some((_, name)) = NAMES.iter().find(|(m, _)| *m == magic) {
        return Err(insecure(
            path,
            format!(
                "it is on a {name} file system, where file locks are emulated or missing; use a local directory (PORTMGR_DIR), or set PORTMGR_ALLOW_NETWORK_FS=1 if you know its locks work"
            ),
        ));
    }
    Ok(())
}

/// Open (creating, mode 0600) the regular file `name` inside the checked directory.
pub fn open_file(dir: &OwnedFd, dir_path: &Path, name: &str) -> Result<File> {
    let path = dir_path.join(name);
    let f = sys::openat_rw_create(dir, name).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => insecure(&path, "it is a symbolic link: remove it (portmgr recreates it)"),
        Some(libc::EISDIR) => insecure(&path, "it is a directory, not a file: remove it (portmgr recreates it)"),
        Some(libc::ENXIO) => insecure(&path, "it is a FIFO or socket, not a file: remove it (portmgr recreates it)"),
        _ => os_error(format!("opening {}", path.display()), e),
    })?;
    check_file(&path, &f)?;
    Ok(f)
}

/// Check a file opened (with `O_NOFOLLOW`) inside the registry directory: a regular
/// file, with no other hard link, owned by the user and not writable by others. The one
/// check for every file portmgr keeps there (`registry.db`, `registry.lock`, the mapping
/// layer's `services.json`).
pub(crate) fn check_file(path: &Path, f: &File) -> Result<()> {
    let st = sys::fstat(f).map_err(|e| Error::os(format!("fstat of {}", path.display()), e))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(insecure(path, "it is not a regular file: remove it (portmgr recreates it)"));
    }
    if st.st_nlink > 1 {
        return Err(insecure(path, "it has other hard links, so its contents are shared with a file elsewhere: remove it (portmgr recreates it)"));
    }
    check_owner_mode(path, &st, "file", false)
}
