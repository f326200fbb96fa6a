//! Writing the nginx export as a directory of one file per service, atomically, and
//! applying it: `nginx -t` first, reload only when that passes, roll back otherwise.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::error::{Error, Result};

use super::Service;
use super::export::nginx_location;

/// The marker file that says a directory is managed by portmgr (and may be replaced).
const MARKER: &str = ".portmgr-nginx";

/// The file holding service `name`'s locations: `NAME.conf`.
pub fn nginx_file_name(name: &str) -> String {
    format!("{name}.conf")
}

/// What [`write_nginx_dir`] and [`NginxDeploy::apply`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NginxApplied {
    /// The directory.
    pub dir: PathBuf,
    /// The files written, sorted (one per service).
    pub files: Vec<String>,
    /// Services left out, and why.
    pub skipped: Vec<String>,
    /// Whether the configuration test ran and passed.
    pub tested: bool,
    /// Whether nginx was reloaded.
    pub reloaded: bool,
}

/// Apply the nginx export: write `dir`, test, reload.
#[derive(Clone, Debug)]
pub struct NginxDeploy {
    /// The directory of per-service files (included by the nginx config inside a
    /// `server { }` block: `include DIR/*.conf;`). portmgr owns it: it is replaced whole.
    pub dir: PathBuf,
    /// The configuration test (default `nginx -t`); `None` skips it.
    pub test_command: Option<Vec<String>>,
    /// The reload (default `nginx -s reload`); `None` skips it.
    pub reload_command: Option<Vec<String>>,
}

impl NginxDeploy {
    /// Deploy to `dir` with `nginx -t` and `nginx -s reload`.
    pub fn new(dir: impl Into<PathBuf>) -> NginxDeploy {
        NginxDeploy {
            dir: dir.into(),
            test_command: Some(vec!["nginx".into(), "-t".into()]),
            reload_command: Some(vec!["nginx".into(), "-s".into(), "reload".into()]),
        }
    }

    /// For an nginx run with `-p PREFIX -c CONF`: test and reload with the same options.
    pub fn with_nginx(dir: impl Into<PathBuf>, nginx: &str, prefix: &Path, conf: &Path) -> NginxDeploy {
        let base =
            vec![nginx.to_string(), "-p".into(), prefix.display().to_string(), "-c".into(), conf.display().to_string()];
        let mut test = base.clone();
        test.push("-t".into());
        let mut reload = base;
        reload.extend(["-s".into(), "reload".into()]);
        NginxDeploy { dir: dir.into(), test_command: Some(test), reload_command: Some(reload) }
    }

    /// Replace the directory with one file per service (atomically: the new directory is
    /// built beside it and swapped in with one `renameat2(RENAME_EXCHANGE)`), run the test
    /// command, and only when it passes the reload command. When the test or the reload
    /// fails, the previous directory is swapped back and the error carries nginx's output.
    pub fn apply(&self, services: &[Service]) -> Result<NginxApplied> {
        let _lock = DirLock::take(&self.dir)?;
        let (swap, mut applied) = swap_in(&self.dir, services)?;
        if let Some(cmd) = &self.test_command {
            if let Err(e) = run(cmd) {
                swap.rollback()?;
                return Err(Error::invalid(format!(
                    "the new nginx configuration failed its test, so {} was restored and nginx not reloaded: {e}",
                    self.dir.display()
                )));
            }
            applied.tested = true;
        }
        if let Some(cmd) = &self.reload_command {
            if let Err(e) = run(cmd) {
                swap.rollback()?;
                return Err(Error::invalid(format!(
                    "reloading nginx failed, so {} was restored: {e}",
                    self.dir.display()
                )));
            }
            applied.reloaded = true;
        }
        swap.commit();
        Ok(applied)
    }
}

/// Write `dir` (one file per routable service, see `nginx_location`) atomically,
/// without testing or reloading anything.
pub fn write_nginx_dir(dir: &Path, services: &[Service]) -> Result<NginxApplied> {
    let _lock = DirLock::take(dir)?;
    let (swap, applied) = swap_in(dir, services)?;
    swap.commit();
    Ok(applied)
}

fn run(cmd: &[String]) -> std::result::Result<(), String> {
    let (prog, args) = cmd.split_first().ok_or("the command is empty")?;
    let out = Command::new(prog).args(args).output().map_err(|e| format!("cannot run {prog}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !stdout.trim().is_empty() {
        text.push('\n');
        text.push_str(stdout.trim());
    }
    Err(format!("`{}` exited with {}: {text}", cmd.join(" "), out.status))
}

fn split(dir: &Path) -> Result<(PathBuf, String)> {
    // `Path::file_name` reads `DIR/.` as `DIR`, but the system calls get `DIR/.` itself,
    // and renaming `.` fails with EBUSY: look at the last component as written.
    let last = dir.as_os_str().as_bytes().split(|&b| b == b'/').rfind(|c| !c.is_empty());
    if matches!(last, None | Some(b".") | Some(b"..")) {
        return Err(Error::invalid(format!(
            "{} ends in . or .. (or names no directory): give the directory itself by name, e.g. /etc/nginx/portmgr (portmgr replaces it whole)",
            dir.display()
        )));
    }
    let name = dir
        .file_name()
        .and_then(OsStr::to_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Error::invalid(format!("{} must end in a directory name of UTF-8 text", dir.display())))?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name.to_string()))
}

/// A swapped-in directory: `old` holds the previous contents (or nothing).
struct Swap {
    dir: PathBuf,
    old: PathBuf,
    had_old: bool,
}

impl Swap {
    fn rollback(self) -> Result<()> {
        if self.had_old {
            exchange(&self.old, &self.dir)?;
            let _ = fs::remove_dir_all(&self.old);
        } else {
            fs::rename(&self.dir, &self.old).map_err(|e| Error::os(format!("removing {}", self.dir.display()), e))?;
            let _ = fs::remove_dir_all(&self.old);
        }
        Ok(())
    }
    fn commit(self) {
        if self.had_old {
            let _ = fs::remove_dir_all(&self.old);
        }
    }
}

fn swap_in(dir: &Path, services: &[Service]) -> Result<(Swap, NginxApplied)> {
    let (parent, name) = split(dir)?;
    let had_old = match fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(Error::invalid(format!(
                "{} is a symbolic link; portmgr replaces the directory itself, so give the real directory",
                dir.display()
            )));
        }
        Ok(m) if !m.is_dir() => return Err(Error::invalid(format!("{} exists and is not a directory", dir.display()))),
        Ok(_) => {
            let mut entries = fs::read_dir(dir).map_err(|e| Error::os(format!("reading {}", dir.display()), e))?;
            let empty = entries.next().is_none();
            if !empty && !dir.join(MARKER).exists() {
                return Err(Error::invalid(format!(
                    "{} is not empty and was not written by portmgr (no {MARKER} file); portmgr replaces the whole directory, so give it a directory of its own",
                    dir.display()
                )));
            }
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(Error::os(format!("checking {}", dir.display()), e)),
    };
    let staging = parent.join(format!(".{name}.portmgr-new-{}", std::process::id()));
    if fs::symlink_metadata(&staging).is_ok() {
        fs::remove_dir_all(&staging).map_err(|e| Error::os(format!("removing the stale {}", staging.display()), e))?;
    }
    fs::DirBuilder::new()
        .mode(0o755)
        .create(&staging)
        .map_err(|e| Error::os(format!("creating {}", staging.display()), e))?;
    let built = (|| {
        let mut applied = NginxApplied {
            dir: dir.to_path_buf(),
            files: Vec::new(),
            skipped: Vec::new(),
            tested: false,
            reloaded: false,
        };
        write_file(
            &staging.join(MARKER),
            "This directory is written by portmgr; it is replaced whole on every export.\n",
        )?;
        let mut named: Vec<&Service> = services.iter().filter(|s| s.name.is_some()).collect();
        named.sort_by(|a, b| a.name.cmp(&b.name));
        for s in named {
            match nginx_location(s) {
                Ok(text) => {
                    let f = nginx_file_name(s.name.as_deref().unwrap_or_default());
                    write_file(&staging.join(&f), &text)?;
                    applied.files.push(f);
                }
                Err(e) => applied.skipped.push(e.to_string()),
            }
        }
        sync_dir(&staging)?;
        Ok::<_, Error>(applied)
    })();
    let applied = match built {
        Ok(a) => a,
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    if had_old {
        if let Err(e) = exchange(&staging, dir) {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
    } else if let Err(e) = fs::rename(&staging, dir) {
        let _ = fs::remove_dir_all(&staging);
        return Err(Error::os(format!("moving the new directory to {}", dir.display()), e));
    }
    let _ = sync_dir(&parent);
    Ok((Swap { dir: dir.to_path_buf(), old: staging, had_old }, applied))
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::os(format!("creating {}", path.display()), e))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_data())
        .map_err(|e| Error::os(format!("writing {}", path.display()), e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::os(format!("syncing {}", dir.display()), e))
}

fn cpath(p: &Path) -> Result<std::ffi::CString> {
    std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::invalid(format!("{} contains a NUL byte", p.display())))
}

/// Swap two directories atomically (`renameat2(RENAME_EXCHANGE)`).
fn exchange(a: &Path, b: &Path) -> Result<()> {
    let (ca, cb) = (cpath(a)?, cpath(b)?);
    // SAFETY: both are valid NUL-terminated strings alive for the call; AT_FDCWD resolves
    // them relative to the working directory as rename(2) would.
    let r = unsafe { libc::renameat2(libc::AT_FDCWD, ca.as_ptr(), libc::AT_FDCWD, cb.as_ptr(), libc::RENAME_EXCHANGE) };
    if r == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    Err(Error::os(format!("swapping {} and {}", a.display(), b.display()), err))
}

/// `flock` on `.NAME.portmgr-lock` beside the directory: one apply at a time.
struct DirLock {
    _file: File,
}

impl DirLock {
    fn take(dir: &Path) -> Result<DirLock> {
        let (parent, name) = split(dir)?;
        let path = parent.join(format!(".{name}.portmgr-lock"));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| Error::os(format!("opening {}", path.display()), e))?;
        // SAFETY: flock(2) on an fd we own; no memory is passed.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        if r != 0 {
            return Err(Error::os(format!("locking {}", path.display()), std::io::Error::last_os_error()));
        }
        Ok(DirLock { _file: f })
    }
}
