//! K2: I/O faults. ENOSPC on a real, full tmpfs (in a private mount namespace), EMFILE
//! from a lowered RLIMIT_NOFILE, and EIO / ENOSPC / EINTR / EMFILE / ENOMEM injected by
//! `strace -P <file> -e inject=...` into each system call the registry makes on its
//! files. Every call returns an error (never a crash or a panic), the registry's live
//! ports are unchanged, and the next call works.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use portmgr::{ErrorCode, Registry};

use crate::util::*;

const START: u16 = 14760;
const LEN: u16 = 100;

/// `faulted`: a fixed sequence of calls, each reported; exits 0 unless it panics/crashes.
pub fn faulted_role() {
    let dir = portmgr::default_dir();
    let mut reg = None;
    let (mut ok, mut err) = (0, 0);
    let mut leases = Vec::new();
    for step in 0..8 {
        if reg.is_none() {
            match Registry::open(&dir) {
                Ok(r) => reg = Some(r),
                Err(e) => {
                    err += 1;
                    say(format!("STEP {step} open ERR {:?} {e}", e.code()));
                    continue;
                }
            }
        }
        let r = reg.as_ref().unwrap();
        let res = match step % 4 {
            0 | 1 => r.allocate(&req_in(START, LEN)).map(|l| leases.push(l)),
            2 => r.allocate_bound(&req_in(START, LEN)).map(|(l, _)| leases.push(l)),
            _ => leases.pop().map_or(Ok(()), |mut l| l.release()),
        };
        match res {
            Ok(()) => {
                ok += 1;
                say(format!("STEP {step} ok"));
            }
            Err(e) => {
                err += 1;
                say(format!("STEP {step} ERR {:?} {e}", e.code()));
            }
        }
    }
    // The last call must work: one injected fault never leaves the handle unusable.
    let last = reg.as_ref().map(|r| r.allocate(&req_in(START, LEN)).map(|l| l.port()));
    say(format!("DONE ok={ok} err={err} last={last:?}"));
}

/// `emfile`: hold 2 ports, lower RLIMIT_NOFILE to the fds in use, allocate (error), check
/// nothing leaked into the registry, raise it, allocate (works).
pub fn emfile_role() {
    let reg = Registry::open_default().unwrap();
    let held: Vec<_> = (0..2).map(|_| reg.allocate(&req_in(START, LEN)).unwrap()).collect();
    // The lowest free descriptor number: with the limit there, every new fd fails.
    // SAFETY: F_DUPFD on stdin returns a new fd that we close at once.
    let open_fds = unsafe {
        let fd = libc::fcntl(0, libc::F_DUPFD, 0);
        libc::close(fd);
        fd as u64
    };
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid pointers to rlimit structs.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut old);
        let low = libc::rlimit { rlim_cur: open_fds, rlim_max: old.rlim_max };
        libc::setrlimit(libc::RLIMIT_NOFILE, &low);
    }
    let a = reg.allocate(&req_in(START, LEN));
    let b = Registry::open(portmgr::default_dir().join("../other-reg")).map(|_| ());
    // SAFETY: as above.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &old) };
    let mine: Vec<u16> = reg.list().unwrap().iter().filter(|i| i.owner_pid == std::process::id()).map(|i| i.port).collect();
    let c = reg.allocate(&req_in(START, LEN)).map(|l| l.port());
    say(format!(
        "EMFILE alloc={:?} open={:?} mine={} held={} after={c:?}",
        a.as_ref().map(|l| l.port()).map_err(|e| e.raw_os_error()),
        b.map_err(|e| e.raw_os_error()),
        mine.len(),
        held.len()
    ));
}

/// `enospc`: in a private mount namespace, a tmpfs filled up: opening a new registry
/// there fails cleanly (no SIGBUS from a sparse mapping), and a registry made before the
/// disk filled keeps working.
pub fn enospc_role(mnt: &str) {
    let mnt = Path::new(mnt);
    std::fs::create_dir_all(mnt).unwrap();
    let st = Command::new("mount").args(["-t", "tmpfs", "-o", "size=12m", "tmpfs"]).arg(mnt).status().unwrap();
    assert!(st.success(), "mount failed");
    let early = Registry::open(mnt.join("early")).unwrap();
    let e1 = early.allocate(&req_in(START, LEN)).unwrap();
    // Fill the file system.
    let mut filler = std::fs::File::create(mnt.join("filler")).unwrap();
    let chunk = vec![0x55u8; 64 * 1024];
    while std::io::Write::write_all(&mut filler, &chunk).is_ok() {}
    drop(filler);
    let late = Registry::open(mnt.join("late")).map(|_| ()).map_err(|e| format!("{:?} {e}", e.code()));
    say(format!("LATE {late:?}"));
    // The early registry: allocations touching record pages never touched before.
    let mut got = Vec::new();
    for p in [START + 50, 14190, 14940, 14975, 14999] {
        match early.allocate(&req_in(p, 1)) {
            Ok(l) => got.push(l.port()),
            Err(e) => say(format!("EARLY-ERR {p} {:?} {e}", e.code())),
        }
    }
    say(format!("EARLY ok={} first={}", got.len(), e1.port()));
}

fn steady_holders(dir: &Path) -> (Vec<Kid>, Vec<u16>) {
    let mut kids = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..2 {
        let mut k = spawn(crate::TEST, dir, &format!("steady 2 {START} {LEN}"), &[]);
        for _ in 0..2 {
            ports.push(k.expect("PORT ", Duration::from_secs(20)).unwrap().parse().unwrap());
        }
        k.expect("READY", Duration::from_secs(20)).unwrap();
        kids.push(k);
    }
    (kids, ports)
}

#[test]
fn emfile_gives_an_error_and_leaves_nothing_behind() {
    let d = temp_dir();
    let dir = d.path().join("reg");
    let mut k = spawn(crate::TEST, &dir, "emfile", &[]);
    let line = k.expect("EMFILE ", Duration::from_secs(30)).unwrap_or_else(|| panic!("no answer: {:?}", k.seen));
    let st = k.wait(Duration::from_secs(20));
    eprintln!("RESULT emfile: {line}");
    assert!(st.is_some_and(|s| s.success()), "the EMFILE child crashed: {st:?}");
    assert!(line.contains("alloc=Err(Some(24))"), "allocation under EMFILE did not fail with EMFILE: {line}");
    assert!(line.contains("open=Err(Some(24))"), "open under EMFILE did not fail with EMFILE: {line}");
    assert!(line.contains("mine=2 held=2"), "the failed allocation left a record behind: {line}");
    assert!(line.contains("after=Ok("), "the registry was not usable after EMFILE: {line}");
}

#[test]
fn enospc_on_a_full_tmpfs() {
    assert!(is_root(), "needs root for a private tmpfs mount");
    let d = temp_dir();
    let mnt = d.path().join("mnt");
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private"])
        .arg(std::env::current_exe().unwrap())
        .args([crate::TEST, "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(ROLE_ENV, format!("enospc {}", mnt.display()));
    let mut k = spawn_cmd(cmd);
    let late = k.expect("LATE ", Duration::from_secs(60));
    let early = k.expect("EARLY ", Duration::from_secs(60));
    let st = k.wait(Duration::from_secs(20));
    eprintln!("RESULT enospc: late={late:?} early={early:?} status={st:?} lines={:?}", k.seen.iter().filter(|l| l.contains("ERR")).collect::<Vec<_>>());
    assert!(st.is_some_and(|s| s.success()), "the process died on a full file system: {st:?} (SIGBUS = 7)");
    let late = late.unwrap();
    assert!(late.starts_with("Err(\"Os") && late.contains("No space"), "opening a new registry on a full disk: {late}");
    assert_eq!(early.as_deref().map(|e| e.starts_with("ok=5")), Some(true), "a registry made before the disk filled stopped working");
}

/// One strace run: inject `errno` into the `nth` call of `syscall` on `path`.
fn strace_case(dir: &Path, path: &Path, syscall: &str, errno: &str, nth: u32) -> (bool, String) {
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-o", "/dev/null", "-P"])
        .arg(path)
        .args(["-e", &format!("trace={syscall}"), "-e", &format!("inject={syscall}:error={errno}:when={nth}")])
        .arg(std::env::current_exe().unwrap())
        .args([crate::TEST, "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(ROLE_ENV, "faulted")
        .env("PORTMGR_DIR", dir);
    let mut k = spawn_cmd(cmd);
    let done = k.expect("DONE ", Duration::from_secs(60));
    let st = k.wait(Duration::from_secs(20));
    let errs: Vec<String> = k.seen.iter().filter(|l| l.contains(" ERR ")).cloned().collect();
    let ok = st.is_some_and(|s| s.success()) && done.as_deref().is_some_and(|d| d.contains("last=Some(Ok("));
    (ok, format!("{syscall}:{errno}@{nth} on {}: status {st:?}, {done:?}, errors {errs:?}", path.file_name().unwrap().to_string_lossy()))
}

#[test]
fn injected_syscall_faults_return_errors_and_leave_the_registry_usable() {
    if Command::new("strace").arg("-V").output().is_err() {
        panic!("strace is needed for fault injection (apt-get install strace)");
    }
    let d = temp_dir();
    let dir = d.path().join("reg");
    Registry::open(&dir).unwrap();
    let (mut holders, held) = steady_holders(&dir);
    let db = dir.join("registry.db");
    let lock = dir.join("registry.lock");
    // The calls portmgr makes on each path (strace -P matches a path string or an fd
    // open on it; the files are opened relative to the directory fd, so their openat is
    // covered by the EMFILE test instead).
    let cases: Vec<(&Path, &str, &str)> = vec![
        (&dir, "openat", "EIO"),
        (&dir, "openat", "EMFILE"),
        (&dir, "openat", "EINTR"),
        (&dir, "newfstatat", "EIO"),
        (&dir, "fstatfs", "EIO"),
        (&dir, "fstatfs", "EINTR"),
        (&lock, "newfstatat", "EIO"),
        (&lock, "flock", "EINTR"),
        (&lock, "flock", "EIO"),
        (&lock, "flock", "ENOLCK"),
        (&db, "newfstatat", "EIO"),
        (&db, "statx", "EIO"),
        (&db, "fcntl", "EINTR"),
        (&db, "fcntl", "EIO"),
        (&db, "fcntl", "ENOLCK"),
        (&db, "mmap", "ENOMEM"),
        (&db, "mmap", "EIO"),
        (&db, "fallocate", "ENOSPC"),
        (&db, "fallocate", "EIO"),
    ];
    let n = knob("PORTMGR_RELIABILITY_FAULT_NTH", 3) as u32;
    let (mut runs, mut failed) = (0, Vec::new());
    let mut with_errors = 0;
    for (path, sc, errno) in &cases {
        for nth in 1..=n {
            let (ok, what) = strace_case(&dir, path, sc, errno, nth);
            runs += 1;
            if what.contains(" ERR ") || what.contains("ERR ") {
                with_errors += 1;
            }
            if !ok {
                failed.push(what);
            }
        }
    }
    // The registry is unchanged: the holders' ports are theirs, nothing else is live.
    for h in &mut holders {
        h.send("CHECK");
        assert_eq!(h.expect("", Duration::from_secs(20)).as_deref(), Some("OK"));
    }
    let reg = Registry::open(&dir).unwrap();
    let mut live: Vec<u16> = reg.list().unwrap().iter().map(|i| i.port).collect();
    live.sort_unstable();
    let mut want = held.clone();
    want.sort_unstable();
    assert_eq!(live, want, "the faulted runs left ports behind");
    reg.allocate(&req_in(START, LEN)).unwrap();
    // Creating the file: each call of the creation path, in a fresh directory each time.
    for (sc, errno) in [("fallocate", "ENOSPC"), ("fallocate", "EIO"), ("mmap", "ENOMEM"), ("fcntl", "EIO"), ("newfstatat", "EIO")] {
        for nth in 1..=2 {
            let fresh = temp_dir();
            let fdir = fresh.path().join("reg");
            std::fs::create_dir(&fdir).unwrap();
            std::fs::set_permissions(&fdir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
            std::fs::File::create(fdir.join("registry.db")).unwrap();
            std::fs::set_permissions(fdir.join("registry.db"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
            let (ok, what) = strace_case(&fdir, &fdir.join("registry.db"), sc, errno, nth);
            runs += 1;
            if what.contains("ERR ") {
                with_errors += 1;
            }
            if !ok {
                failed.push(format!("(new file) {what}"));
            }
        }
    }
    eprintln!("RESULT io-faults(strace): runs={runs} runs_with_an_error_returned={with_errors} failures={}", failed.len());
    assert!(failed.is_empty(), "{} injected faults crashed a process or left it unusable:\n{}", failed.len(), failed.join("\n"));
    // Later call numbers may lie past the calls a short sequence makes; but on average
    // every (path, call, errno) case must have reached portmgr at least once.
    assert!(
        with_errors >= cases.len() + 5,
        "too few injections reached portmgr ({with_errors} of {runs} runs, {} cases): the harness is not testing anything",
        cases.len() + 5
    );
    let _ = ErrorCode::Os;
}
