//! S1/S2/S4: directory attacks. Every attack is refused (or, for a hostile environment
//! variable, ignored in favour of a safe fallback), and no file outside the registry
//! directory is created, written or followed: a victim file's bytes and mtime are
//! compared before and after. "Another user" is uid 65534 (the suite runs as root; the
//! cases that need root say so and fail loudly otherwise).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use portmgr::{ErrorCode, Registry};

use crate::util::*;

struct Victim {
    path: PathBuf,
    bytes: Vec<u8>,
    mtime: i64,
}

fn victim(root: &Path) -> Victim {
    let path = root.join("victim.txt");
    std::fs::write(&path, b"precious data\n").unwrap();
    let m = std::fs::metadata(&path).unwrap();
    Victim { bytes: std::fs::read(&path).unwrap(), mtime: m.mtime_nsec() + m.mtime() * 1_000_000_000, path }
}

impl Victim {
    fn untouched(&self, case: &str) {
        let m = std::fs::metadata(&self.path).unwrap();
        assert_eq!(std::fs::read(&self.path).unwrap(), self.bytes, "{case}: the victim file was written");
        assert_eq!(m.mtime_nsec() + m.mtime() * 1_000_000_000, self.mtime, "{case}: the victim file was touched");
        assert_eq!(m.len(), self.bytes.len() as u64, "{case}: the victim file was resized");
    }
}

fn refused(case: &str, dir: &Path) -> String {
    match Registry::open(dir) {
        Ok(_) => panic!("{case}: the registry opened in {}", dir.display()),
        Err(e) => {
            assert!(
                matches!(e.code(), ErrorCode::InsecureDirectory),
                "{case}: refused, but not as an insecure directory: {:?} {e}",
                e.code()
            );
            e.to_string()
        }
    }
}

fn mkdir(p: &Path, mode: u32) -> PathBuf {
    std::fs::create_dir_all(p).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    p.to_path_buf()
}

/// `default-dir`: print what default_dir() chose (env set by the parent).
pub fn default_dir_role() {
    say(format!("DIR {}", portmgr::default_dir().display()));
    match Registry::open_default() {
        Ok(r) => say(format!("OPENED {}", r.dir().display())),
        Err(e) => say(format!("REFUSED {:?} {e}", e.code())),
    }
}

/// `umask MASK`: create a registry under that umask; print the modes.
pub fn umask_role(mask: u32) {
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(mask as libc::mode_t) };
    let dir = portmgr::default_dir();
    Registry::open(&dir).unwrap();
    let m = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
    say(format!("MODES {:o} {:o} {:o}", m(&dir), m(&dir.join("registry.db")), m(&dir.join("registry.lock"))));
}

fn child_env(root: &Path, env: &[(&str, &str)], role: &str) -> Vec<String> {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([crate::TEST, "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(ROLE_ENV, role)
        .env_remove("PORTMGR_DIR")
        .env_remove("XDG_RUNTIME_DIR")
        .env("TMPDIR", root);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().map(String::from).filter(|l| !l.is_empty()).collect()
}

#[test]
fn directory_attacks_are_refused() {
    assert!(is_root(), "the directory-attack suite needs root to play the other user (uid 65534)");
    let d = temp_dir();
    let root = d.path();
    let v = victim(root);
    let victim_dir = mkdir(&root.join("victim-dir"), 0o700);
    std::fs::write(victim_dir.join("keep"), b"x").unwrap();
    let mut cases: Vec<String> = Vec::new();
    let mut case = |name: &str, msg: String| cases.push(format!("  {name}: {}", msg.chars().take(140).collect::<String>()));

    // 1. The registry directory is a symlink (to a directory of ours).
    std::os::unix::fs::symlink(&victim_dir, root.join("link-dir")).unwrap();
    case("symlinked directory", refused("symlinked directory", &root.join("link-dir")));
    // 2. Owned by another user.
    let foreign = mkdir(&root.join("foreign"), 0o700);
    std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
    case("directory owned by uid 65534", refused("foreign dir", &foreign));
    // 3-5. Group- or world-writable, with or without the sticky bit.
    for (name, mode) in [("group-writable directory", 0o770), ("world-writable directory", 0o757), ("world-writable sticky directory", 0o1777)] {
        let p = mkdir(&root.join(name.replace(' ', "-")), mode);
        case(name, refused(name, &p));
    }
    // 6. registry.db planted as a symlink to the victim file.
    let p = mkdir(&root.join("planted-db"), 0o700);
    std::os::unix::fs::symlink(&v.path, p.join("registry.db")).unwrap();
    case("registry.db symlinked to a victim file", refused("db symlink", &p));
    // 7. registry.lock planted as a symlink to the victim file.
    let p = mkdir(&root.join("planted-lock"), 0o700);
    std::os::unix::fs::symlink(&v.path, p.join("registry.lock")).unwrap();
    case("registry.lock symlinked to a victim file", refused("lock symlink", &p));
    // 8. registry.db planted as a hard link to the victim file.
    let p = mkdir(&root.join("planted-hardlink"), 0o700);
    std::fs::hard_link(&v.path, p.join("registry.db")).unwrap();
    case("registry.db hard-linked to a victim file", refused("hard link", &p));
    // 9. registry.db pre-created by another user.
    let p = mkdir(&root.join("planted-foreign"), 0o700);
    std::fs::write(p.join("registry.db"), b"").unwrap();
    std::os::unix::fs::chown(p.join("registry.db"), Some(65534), Some(65534)).unwrap();
    case("registry.db pre-created by uid 65534", refused("foreign file", &p));
    // 10. registry.lock pre-created world-writable.
    let p = mkdir(&root.join("planted-mode"), 0o700);
    std::fs::write(p.join("registry.lock"), b"").unwrap();
    std::fs::set_permissions(p.join("registry.lock"), std::fs::Permissions::from_mode(0o666)).unwrap();
    case("registry.lock pre-created mode 0666", refused("lock mode", &p));
    // 11. registry.db is a FIFO (must not block the open).
    let p = mkdir(&root.join("planted-fifo"), 0o700);
    let c = std::ffi::CString::new(p.join("registry.db").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    case("registry.db is a FIFO", refused("fifo", &p));
    // 12. A regular file where the directory should be.
    std::fs::write(root.join("a-file"), b"").unwrap();
    case("a file in place of the directory", refused("file as dir", &root.join("a-file")));
    // 12b. A shared directory that is not portmgr's (as `/` or `/etc` would be): other
    // files in it and no registry, whatever its mode. Nothing is written into it.
    let shared = mkdir(&root.join("shared-etc"), 0o755);
    std::fs::write(shared.join("passwd"), b"root:x:0:0::/root:/bin/sh\n").unwrap();
    case("a shared directory (0755, other files)", refused("shared dir", &shared));
    assert_eq!(std::fs::read_dir(&shared).unwrap().count(), 1, "portmgr wrote into a shared directory");
    case("a directory of other files (0700)", refused("victim dir", &victim_dir));

    // 13-16. Hostile environment: PORTMGR_DIR pointing at a foreign or symlinked
    // directory is refused; a hostile XDG_RUNTIME_DIR is ignored for the fallback.
    let out = child_env(root, &[("PORTMGR_DIR", foreign.to_str().unwrap())], "default-dir");
    assert!(out.iter().any(|l| l.starts_with("REFUSED InsecureDirectory")), "PORTMGR_DIR foreign: {out:?}");
    case("PORTMGR_DIR owned by another user", out.join(" | "));
    let out = child_env(root, &[("PORTMGR_DIR", root.join("link-dir").to_str().unwrap())], "default-dir");
    assert!(out.iter().any(|l| l.starts_with("REFUSED InsecureDirectory")), "PORTMGR_DIR symlink: {out:?}");
    case("PORTMGR_DIR a symlink", out.join(" | "));
    let fallback = root.join("portmgr-0");
    // An empty PORTMGR_DIR is a mistake (as `--registry ""` is), not the default.
    let out = child_env(root, &[("PORTMGR_DIR", "")], "default-dir");
    assert!(
        out.iter().any(|l| l.starts_with("REFUSED InvalidArgument")
            && l.contains("PORTMGR_DIR is set but empty")
            && l.contains(&fallback.display().to_string())),
        "empty PORTMGR_DIR: not refused naming the default: {out:?}"
    );
    assert!(!fallback.exists(), "an empty PORTMGR_DIR made the default registry");
    case("PORTMGR_DIR empty (refused)", out.join(" | "));
    for (name, xdg) in [
        ("XDG_RUNTIME_DIR owned by another user", foreign.to_str().unwrap().to_string()),
        ("XDG_RUNTIME_DIR relative", "relative/dir".to_string()),
        ("XDG_RUNTIME_DIR a symlink", root.join("link-dir").to_str().unwrap().to_string()),
    ] {
        let out = child_env(root, &[("XDG_RUNTIME_DIR", &xdg)], "default-dir");
        assert!(out.contains(&format!("DIR {}", fallback.display())), "{name}: not the safe fallback: {out:?}");
        case(name, out.join(" | "));
    }
    assert!(!victim_dir.join("portmgr").exists() && !foreign.join("portmgr").exists(), "a registry was made in a hostile runtime dir");
    // 17. The per-user fallback directory pre-created by another user.
    std::fs::remove_dir_all(&fallback).ok();
    mkdir(&fallback, 0o700);
    std::os::unix::fs::chown(&fallback, Some(65534), Some(65534)).unwrap();
    let out = child_env(root, &[], "default-dir");
    assert!(out.iter().any(|l| l.starts_with("REFUSED InsecureDirectory")), "pre-created fallback: {out:?}");
    case("fallback dir pre-created by another user", out.join(" | "));
    // S4: created under umask 000 and 077: dir 0700, files 0600.
    for mask in [0o000u32, 0o077] {
        let dir = root.join(format!("umask-{mask:o}"));
        let out = child_env(root, &[("PORTMGR_DIR", dir.to_str().unwrap())], &format!("umask {mask}"));
        assert!(out.contains(&"MODES 700 600 600".to_string()), "umask {mask:o}: {out:?}");
        case(&format!("created under umask {mask:03o}"), out.join(" | "));
    }

    v.untouched("directory attacks");
    assert_eq!(std::fs::read_dir(&victim_dir).unwrap().count(), 1, "something was created in the victim directory");
    let n = cases.len();
    eprintln!("RESULT dirs: attacks={n} refused_or_ignored={n}\n{}", cases.join("\n"));
    assert!(n >= 10);
}

/// The registry directory is swapped for a symlink (to a directory of ours holding a
/// victim file) in a tight loop while another thread opens it: every open either opens
/// the real directory or is refused; nothing is created or changed in the victim dir.
#[test]
fn directory_swapped_for_a_symlink_while_opening() {
    let n = knob("PORTMGR_RELIABILITY_SWAP_OPENS", 2000);
    let d = temp_dir();
    let root = d.path().to_path_buf();
    let real = mkdir(&root.join("real"), 0o700);
    Registry::open(&real).unwrap();
    let victim_dir = mkdir(&root.join("victim-dir"), 0o700);
    let v = victim(&victim_dir);
    let stop = Arc::new(AtomicBool::new(false));
    let swapped = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let swaps = {
        let (stop, root, swapped) = (Arc::clone(&stop), root.clone(), Arc::clone(&swapped));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = std::fs::rename(root.join("real"), root.join("real.away"));
                let _ = std::os::unix::fs::symlink(root.join("victim-dir"), root.join("real"));
                std::thread::sleep(Duration::from_micros(50));
                let _ = std::fs::remove_file(root.join("real"));
                let _ = std::fs::rename(root.join("real.away"), root.join("real"));
                swapped.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_micros(50));
            }
            swapped.load(Ordering::Relaxed)
        })
    };
    let (mut opened, mut refused, mut other) = (0u64, 0u64, Vec::new());
    let t0 = std::time::Instant::now();
    let mut opens = 0u64;
    // Until both sides ran enough (at most 30 s): the race must really be exercised.
    while (opens < n || swapped.load(Ordering::Relaxed) < n / 4) && t0.elapsed() < Duration::from_secs(30) {
        opens += 1;
        match Registry::open(&real) {
            Ok(r) => {
                opened += 1;
                drop(r);
            }
            Err(e) if e.code() == ErrorCode::InsecureDirectory => refused += 1,
            // The directory vanished between checks (mid-rename): an OS error, no harm.
            Err(e) if e.code() == ErrorCode::Os => other.push(e.to_string()),
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    let n = opens;
    stop.store(true, Ordering::Relaxed);
    let swaps = swaps.join().unwrap();
    std::thread::sleep(Duration::from_millis(10));
    v.untouched("swap race");
    let names: Vec<String> =
        std::fs::read_dir(&victim_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, vec!["victim.txt".to_string()], "files were created in the victim directory");
    eprintln!(
        "RESULT dir-swap-race: opens={n} opened_real={opened} refused={refused} os_errors={} swaps={swaps} victim_untouched=yes",
        other.len()
    );
    assert!(refused + opened + other.len() as u64 == n);
    assert!(swaps >= 100 && refused > 0 && opened > 0, "the race was not exercised: {swaps} swaps, {refused} refused, {opened} opened");
}
