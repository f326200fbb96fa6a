//! Writing the nginx export into a directory, one file per service, and applying it:
//! `nginx -t` first, reload only when that passes, roll back otherwise.
//!
//! The directory may hold files of the user's: portmgr writes, replaces and removes only
//! the files it wrote, listed in the manifest `.portmgr-nginx` in the directory. Every
//! file is written whole to a temp file beside it (a name nginx's `*.conf` never
//! matches) and renamed into place, so nginx never reads half a file. A run removes the
//! files of services gone since the previous one first, then writes the others: at every
//! moment the directory holds complete files, a subset of the previous export and then
//! of the new one. The manifest is written before any `.conf` (listing the old and new
//! files) and again at the end (listing the new ones), so a crash in between leaves no
//! file of portmgr's that a later run does not know as its own.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::error::{Error, Result};

use super::Service;
use super::export::nginx_blocks;

/// The manifest: the names of the files portmgr wrote into the directory, one a line.
const MANIFEST: &str = ".portmgr-nginx";
/// How the manifest starts (and how portmgr knows its format).
const MANIFEST_HEAD: &str = "# portmgr nginx export: the files below were written by portmgr, one a line.\n\
# portmgr rewrites and removes only these; every other file here is left as it is.\n";
/// How the marker of the earlier portmgr that replaced the whole directory started:
/// every `*.conf` of such a directory is portmgr's.
const LEGACY_MARKER: &str = "This directory is written by portmgr";
/// The largest manifest read.
const MANIFEST_MAX: u64 = 1 << 20;

/// The file holding service `name`'s locations: `NAME.conf`.
pub fn nginx_file_name(name: &str) -> String {
    format!("{name}.conf")
}

/// What [`write_nginx_dir`] and [`NginxDeploy::apply`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NginxApplied {
    /// The directory.
    pub dir: PathBuf,
    /// The files of this export, sorted (one per routed service; unchanged ones too).
    pub files: Vec<String>,
    /// Files of an earlier export removed (their services are gone), sorted.
    pub removed: Vec<String>,
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
    /// `server { }` block: `include DIR/*.conf;`). portmgr writes and removes only its own
    /// files there (listed in `DIR/.portmgr-nginx`); other files stay.
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

    /// Write the directory as [`write_nginx_dir`] does, run the test command, and only
    /// when it passes the reload command. When the test or the reload fails, portmgr's
    /// files are put back as they were (the user's were never touched) and the error
    /// carries nginx's output.
    pub fn apply(&self, services: &[Service]) -> Result<NginxApplied> {
        let _lock = DirLock::take(&self.dir)?;
        let (undo, mut applied) = write_dir(&self.dir, services)?;
        if let Some(cmd) = &self.test_command {
            if let Err(e) = run(cmd) {
                undo.rollback()?;
                return Err(Error::invalid(format!(
                    "the new nginx configuration failed its test, so {} was restored and nginx not reloaded: {e}",
                    self.dir.display()
                )));
            }
            applied.tested = true;
        }
        if let Some(cmd) = &self.reload_command {
            if let Err(e) = run(cmd) {
                undo.rollback()?;
                return Err(Error::invalid(format!(
                    "reloading nginx failed, so {} was restored: {e}",
                    self.dir.display()
                )));
            }
            applied.reloaded = true;
        }
        Ok(applied)
    }
}

/// Write one `NAME.conf` per routable service into `dir` (created when missing), each
/// file atomically, and remove the files of an earlier export whose services are gone,
/// without testing or reloading anything. Files portmgr did not write stay; a service
/// whose file name is taken by such a file is skipped, with the reason in
/// [`NginxApplied::skipped`].
pub fn write_nginx_dir(dir: &Path, services: &[Service]) -> Result<NginxApplied> {
    let _lock = DirLock::take(dir)?;
    let (_undo, applied) = write_dir(dir, services)?;
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
    // `Path::file_name` reads `DIR/.` as `DIR`, and the lock file beside `DIR/..` would
    // land in DIR itself: look at the last component as written.
    let last = dir.as_os_str().as_bytes().split(|&b| b == b'/').rfind(|c| !c.is_empty());
    if matches!(last, None | Some(b".") | Some(b"..")) {
        return Err(Error::invalid(format!(
            "{} ends in . or .. (or names no directory): give the directory itself by name, e.g. /etc/nginx/portmgr",
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

/// How to put portmgr's files back as they were before a run.
struct Undo {
    dir: PathBuf,
    /// Each file touched, with its previous contents (`None`: it did not exist).
    files: BTreeMap<String, Option<Vec<u8>>>,
    /// The previous manifest (`None`: there was none).
    manifest: Option<Vec<u8>>,
    /// The directory did not exist before.
    created: bool,
}

impl Undo {
    fn rollback(self) -> Result<()> {
        let mut first_err = None;
        for (f, old) in &self.files {
            let path = self.dir.join(f);
            let r = match old {
                Some(bytes) => write_atomic(&self.dir, f, bytes),
                None => remove_if_there(&path),
            };
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        let r = match &self.manifest {
            Some(bytes) => write_atomic(&self.dir, MANIFEST, bytes),
            None => remove_if_there(&self.dir.join(MANIFEST)),
        };
        if let Err(e) = r {
            first_err.get_or_insert(e);
        }
        if self.created {
            // Empty again unless someone put a file there meanwhile: then it stays.
            let _ = fs::remove_dir(&self.dir);
        }
        let _ = sync_dir(&self.dir);
        first_err.map_or(Ok(()), Err)
    }
}

fn remove_if_there(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::os(format!("removing {}", path.display()), e)),
    }
}

/// Whether `f` can be a file of portmgr's in the directory: a plain `*.conf` name, no
/// path, not hidden. A manifest line that is not (a planted `../x`) is ignored, never
/// followed.
fn own_name_ok(f: &str) -> bool {
    f.len() > ".conf".len()
        && f.len() <= 255
        && f.ends_with(".conf")
        && !f.starts_with('.')
        && !f.contains('/')
        && !f.chars().any(char::is_control)
}

/// Read a file that must be a regular file (never through a symbolic link), at most
/// `max` bytes; `None` when missing.
fn read_regular(path: &Path, max: u64) -> Result<Option<Vec<u8>>> {
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(Error::invalid(format!(
                "{} is a symbolic link; portmgr writes only regular files there: remove it",
                path.display()
            )));
        }
        Err(e) => return Err(Error::os(format!("opening {}", path.display()), e)),
    };
    let md = f.metadata().map_err(|e| Error::os(format!("fstat of {}", path.display()), e))?;
    if !md.is_file() {
        return Err(Error::invalid(format!("{} is not a regular file", path.display())));
    }
    if md.len() > max {
        return Err(Error::invalid(format!("{} is larger than {max} bytes", path.display())));
    }
    let mut buf = Vec::new();
    f.take(max).read_to_end(&mut buf).map_err(|e| Error::os(format!("reading {}", path.display()), e))?;
    Ok(Some(buf))
}

/// The files of `dir` that portmgr wrote, from its manifest (or, in a directory of the
/// portmgr that replaced it whole, every `*.conf`), with the manifest's bytes.
fn owned_files(dir: &Path) -> Result<(BTreeSet<String>, Option<Vec<u8>>)> {
    let Some(bytes) = read_regular(&dir.join(MANIFEST), MANIFEST_MAX)? else {
        return Ok((BTreeSet::new(), None));
    };
    let text = String::from_utf8_lossy(&bytes);
    let owned = if text.starts_with(LEGACY_MARKER) {
        let entries = fs::read_dir(dir).map_err(|e| Error::os(format!("reading {}", dir.display()), e))?;
        entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|f| own_name_ok(f))
            .collect()
    } else {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .filter(|l| own_name_ok(l))
            .map(str::to_string)
            .collect()
    };
    Ok((owned, Some(bytes)))
}

fn manifest_text(files: &BTreeSet<String>) -> String {
    let mut s = String::from(MANIFEST_HEAD);
    for f in files {
        s.push_str(f);
        s.push('\n');
    }
    s
}

/// Check `dir`, create it when missing, and write the export into it (see the module
/// notes). On an error part-way, what was written is undone.
fn write_dir(dir: &Path, services: &[Service]) -> Result<(Undo, NginxApplied)> {
    split(dir)?;
    let created = match fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(Error::invalid(format!("{} is a symbolic link; give the real directory", dir.display())));
        }
        Ok(m) if !m.is_dir() => return Err(Error::invalid(format!("{} exists and is not a directory", dir.display()))),
        Ok(_) => false,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .mode(0o755)
                .create(dir)
                .map_err(|e| Error::os(format!("creating {}", dir.display()), e))?;
            true
        }
        Err(e) => return Err(Error::os(format!("checking {}", dir.display()), e)),
    };
    let (owned, manifest) = match owned_files(dir) {
        Ok(x) => x,
        Err(e) => {
            if created {
                let _ = fs::remove_dir(dir);
            }
            return Err(e);
        }
    };
    let mut applied = NginxApplied {
        dir: dir.to_path_buf(),
        files: Vec::new(),
        removed: Vec::new(),
        skipped: Vec::new(),
        tested: false,
        reloaded: false,
    };
    let mut new: BTreeMap<String, String> = BTreeMap::new();
    for (name, block) in nginx_blocks(services) {
        match block {
            Ok(text) => {
                let f = nginx_file_name(&name);
                if !owned.contains(&f) && fs::symlink_metadata(dir.join(&f)).is_ok() {
                    applied.skipped.push(format!(
                        "invalid argument: service {name:?}: {} is there and was not written by portmgr (it is not in {MANIFEST}): it is left as it is and the service is not routed; move that file away or rename the service",
                        dir.join(&f).display()
                    ));
                    continue;
                }
                new.insert(f, text);
            }
            Err(e) => applied.skipped.push(e),
        }
    }
    let stale: Vec<String> =
        owned.iter().filter(|f| !new.contains_key(*f) && fs::symlink_metadata(dir.join(f)).is_ok()).cloned().collect();
    let mut undo = Undo { dir: dir.to_path_buf(), files: BTreeMap::new(), manifest, created };
    let done = (|| {
        // What each touched file held, for the rollback.
        for f in stale.iter().chain(new.keys()) {
            let old = match fs::symlink_metadata(dir.join(f)) {
                Ok(m) if m.is_file() => read_regular(&dir.join(f), MANIFEST_MAX)?,
                _ => None,
            };
            undo.files.insert(f.clone(), old);
        }
        // First the manifest with the old and the new files: whatever happens next, each
        // file of portmgr's is listed.
        let both: BTreeSet<String> = stale.iter().chain(new.keys()).cloned().collect();
        write_atomic(dir, MANIFEST, manifest_text(&both).as_bytes())?;
        for f in &stale {
            remove_if_there(&dir.join(f))?;
            applied.removed.push(f.clone());
        }
        for (f, text) in &new {
            if undo.files.get(f).is_some_and(|old| old.as_deref() == Some(text.as_bytes())) {
                applied.files.push(f.clone());
                continue;
            }
            write_atomic(dir, f, text.as_bytes())?;
            applied.files.push(f.clone());
        }
        write_atomic(dir, MANIFEST, manifest_text(&new.keys().cloned().collect()).as_bytes())?;
        sync_dir(dir)
    })();
    if let Err(e) = done {
        let _ = undo.rollback();
        return Err(e);
    }
    Ok((undo, applied))
}

/// Write `dir/name` whole: a new temp file `.NAME.portmgr-tmp` (never an existing one),
/// fsync, rename over.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!(".{name}.portmgr-tmp"));
    // A temp file left by a crashed run: we hold the directory's lock, nobody writes it.
    let _ = fs::remove_file(&tmp);
    let path = dir.join(name);
    let res = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_data()?;
        fs::rename(&tmp, &path)
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(Error::os(format!("writing {}", path.display()), e));
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::os(format!("syncing {}", dir.display()), e))
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
