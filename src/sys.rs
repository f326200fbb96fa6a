//! The few Linux system calls that std and socket2 do not wrap: `openat` without
//! following links, `fstat`/`fstatfs`, open-file-description byte locks, process
//! identity from `/proc`, `CLOCK_BOOTTIME`, and `pthread_atfork`; and, for the
//! command line's `portmgr run` (`sys/process.rs`, feature `cli`), spawning a child
//! with inherited sockets, waiting for it without reaping it, and blocking, taking and
//! sending signals.
//!
//! Every `unsafe` block in the crate's core and command line lives here.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cstr(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// `open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)`.
pub fn open_dir_nofollow(path: &Path) -> io::Result<OwnedFd> {
    let c = cstr(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by open(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat(dir, name, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0600)`.
/// `O_NONBLOCK` makes a FIFO planted in place of the file fail the type check
/// instead of blocking the open; it has no effect on regular files.
pub fn openat_rw_create(dir: &OwnedFd, name: &str) -> io::Result<File> {
    let c = cstr(name.as_bytes())?;
    let flags = libc::O_RDWR | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;
    // SAFETY: `dir` is an open directory fd and `c` a valid C string, both alive for the call.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags, 0o600 as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by openat(2) and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// `renameat(dir, from, dir, to)`.
pub fn renameat(dir: &OwnedFd, from: &str, to: &str) -> io::Result<()> {
    let (f, t) = (cstr(from.as_bytes())?, cstr(to.as_bytes())?);
    // SAFETY: valid fd and C strings, alive for the call.
    let r = unsafe { libc::renameat(dir.as_raw_fd(), f.as_ptr(), dir.as_raw_fd(), t.as_ptr()) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// `fstat(fd)`.
pub fn fstat(fd: &impl AsRawFd) -> io::Result<libc::stat> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open and `st` is a valid, writable `stat`.
    let r = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(st) }
}

/// The file-system magic number of the file system holding `fd` (`fstatfs`).
pub fn fs_magic(fd: &impl AsRawFd) -> io::Result<i64> {
    // SAFETY: an all-zero `statfs` is a valid value of this plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open and `st` is a valid, writable `statfs`.
    let r = unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(st.f_type as i64) }
}

/// The effective uid.
pub fn geteuid() -> u32 {
    // SAFETY: geteuid(2) cannot fail and has no preconditions.
    unsafe { libc::geteuid() }
}

/// The pid of this process (changes in a forked child).
pub fn getpid() -> u32 {
    std::process::id()
}

fn ofd_lock(fd: &File, cmd: libc::c_int, ty: libc::c_short, start: u64, len: u64) -> io::Result<libc::flock> {
    // SAFETY: an all-zero `flock` is a valid value of this plain C struct; l_pid must be 0 for OFD locks.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = ty;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start as libc::off_t;
    fl.l_len = len as libc::off_t;
    // SAFETY: `fd` is open; `fl` is a valid, writable `flock` for F_OFD_* commands.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), cmd, &mut fl) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(fl) }
}

/// Take an open-file-description write lock on `len` bytes at `start`, without waiting.
/// `Ok(false)` when another open file description holds a conflicting lock.
pub fn ofd_try_lock(fd: &File, start: u64, len: u64) -> io::Result<bool> {
    match ofd_lock(fd, libc::F_OFD_SETLK, libc::F_WRLCK as libc::c_short, start, len) {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether another open file description holds a lock on any of `len` bytes at `start`
/// (`len` 0 = to the end of the file). Locks of `fd`'s own description are not seen.
pub fn ofd_is_locked(fd: &File, start: u64, len: u64) -> io::Result<bool> {
    let fl = ofd_lock(fd, libc::F_OFD_GETLK, libc::F_WRLCK as libc::c_short, start, len)?;
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

/// Milliseconds of `CLOCK_BOOTTIME`: monotonic, shared by every process of the host,
/// counting suspend; immune to wall-clock jumps. Registry expiries use it.
pub fn boottime_ms() -> u64 {
    // SAFETY: an all-zero timespec is valid.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is valid and writable; CLOCK_BOOTTIME exists on every Linux we support.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if r < 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Milliseconds since the Unix epoch (wall clock, for display only).
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The kernel's boot id as 16 bytes; zeros when it cannot be read.
pub fn boot_id() -> [u8; 16] {
    let mut out = [0u8; 16];
    if let Ok(s) = std::fs::read_to_string("/proc/sys/kernel/random/boot_id") {
        let hex: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        for (i, pair) in hex.chunks(2).take(16).enumerate() {
            let v = std::str::from_utf8(pair).ok().and_then(|p| u8::from_str_radix(p, 16).ok());
            out[i] = v.unwrap_or(0);
        }
    }
    out
}

/// The inode of this process's pid namespace (`/proc/self/ns/pid`); 0 when unknown.
pub fn pidns_inode() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid").map_or(0, |m| m.ino())
}

/// What `/proc/<pid>/stat` says of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcState {
    /// Running (any state but zombie or dead), with its start time in clock ticks since boot.
    Alive(u64),
    /// No such process, or a zombie.
    Dead,
    /// `/proc` could not tell (not mounted, or another pid namespace).
    Unknown,
}

/// The state and start time of `pid`, from field 22 of `/proc/<pid>/stat`, parsed after
/// the *last* `)` so that a process name with spaces or parentheses cannot fool it.
pub fn proc_state(pid: u32) -> ProcState {
    if pid == 0 || pid > i32::MAX as u32 {
        return ProcState::Dead;
    }
    match std::fs::read(format!("/proc/{pid}/stat")) {
        Ok(bytes) => parse_stat(&bytes).unwrap_or(ProcState::Unknown),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // /proc may be missing entirely: ask the kernel directly.
            if !Path::new("/proc/self/stat").exists() {
                return kill0(pid);
            }
            ProcState::Dead
        }
        Err(_) => kill0(pid),
    }
}

fn kill0(pid: u32) -> ProcState {
    // SAFETY: signal 0 sends nothing; it only checks that the process exists.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    if r == 0 {
        return ProcState::Unknown;
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::EPERM) => ProcState::Unknown, // exists, owned by someone else
        _ => ProcState::Dead,
    }
}

fn parse_stat(bytes: &[u8]) -> Option<ProcState> {
    let close = bytes.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&bytes[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?; // field 3
    if state == "Z" || state == "X" || state == "x" {
        return Some(ProcState::Dead);
    }
    // field 3 was consumed; field 22 is 19 further on.
    let start = fields.nth(18)?.parse::<u64>().ok()?;
    Some(ProcState::Alive(start))
}

/// `fallocate(fd, 0, 0, len)`: allocate every block of the first `len` bytes, growing
/// the file to `len` if shorter. Retried on EINTR.
pub fn fallocate(fd: &File, len: u64) -> io::Result<()> {
    loop {
        // SAFETY: `fd` is an open file; fallocate reads no memory of ours.
        let r = unsafe { libc::fallocate(fd.as_raw_fd(), 0, 0, len as libc::off_t) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// `futex(FUTEX_WAIT_PRIVATE)`: sleep while `word == expected`, at most `timeout`.
/// Returns on wake-up, timeout, signal or a changed word; the caller re-checks.
pub fn futex_wait(word: &std::sync::atomic::AtomicU32, expected: u32, timeout: Option<std::time::Duration>) {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let tsp = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a live, aligned 32-bit atomic; `tsp` is null or points to a
    // timespec that outlives the call.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG, expected, tsp);
    }
}

/// `futex(FUTEX_WAKE_PRIVATE)`: wake up to `n` threads sleeping on `word`.
pub fn futex_wake(word: &std::sync::atomic::AtomicU32, n: i32) {
    // SAFETY: `word` is a live, aligned 32-bit atomic; FUTEX_WAKE reads nothing else.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, n);
    }
}

/// Register `prepare`, `parent` and `child` to run around every `fork()` of this process.
pub fn at_fork(prepare: extern "C" fn(), parent: extern "C" fn(), child: extern "C" fn()) -> io::Result<()> {
    // SAFETY: the handlers are plain `extern "C" fn()` with static lifetime.
    let r = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
    if r != 0 { Err(io::Error::from_raw_os_error(r)) } else { Ok(()) }
}

/// For each of `ports`, the pids with a socket bound to it (a listening TCP socket or a
/// bound UDP socket, IPv4 or IPv6), from `/proc/net/{tcp,tcp6,udp,udp6}` and the socket
/// links in `/proc/<pid>/fd`. A port bound by a process this user cannot see (another
/// user's) maps to an empty list.
pub fn socket_holders(ports: &std::collections::HashSet<u16>) -> std::collections::HashMap<u16, Vec<u32>> {
    use std::collections::HashMap;
    let mut by_inode: HashMap<u64, u16> = HashMap::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6", "/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(f) else { continue };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 {
                continue;
            }
            let Some(port) = cols[1].rsplit(':').next().and_then(|h| u16::from_str_radix(h, 16).ok()) else {
                continue;
            };
            // TCP: only listening sockets (state 0A) own a port; UDP: any bound socket.
            if f.contains("tcp") && cols[3] != "0A" {
                continue;
            }
            if let Ok(inode) = cols[9].parse::<u64>()
                && inode != 0
                && ports.contains(&port)
            {
                by_inode.insert(inode, port);
            }
        }
    }
    let mut out: HashMap<u16, Vec<u32>> = by_inode.values().map(|&p| (p, Vec::new())).collect();
    if by_inode.is_empty() {
        return out;
    }
    let Ok(procs) = std::fs::read_dir("/proc") else { return out };
    for e in procs.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(e.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else { continue };
            let t = target.to_string_lossy();
            let Some(inode) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')).and_then(|n| n.parse().ok())
            else {
                continue;
            };
            if let Some(&port) = by_inode.get(&inode) {
                let v = out.entry(port).or_default();
                if !v.contains(&pid) {
                    v.push(pid);
                }
            }
        }
    }
    out
}

/// Whether `pid` is one of `roots` or a descendant of one (parent links from
/// `/proc/<pid>/stat`, read after the last `)`).
pub fn is_descendant(pid: u32, roots: &[u32]) -> bool {
    let mut p = pid;
    for _ in 0..128 {
        if roots.contains(&p) {
            return true;
        }
        if p <= 1 {
            return false;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { return false };
        // Fields after the last ')': state, ppid, ...
        let Some(ppid) = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok())
        else {
            return false;
        };
        p = ppid;
    }
    false
}

// `portmgr run`'s child processes and signals: the command line's only (sys/process.rs).
#[cfg(feature = "cli")]
mod process;
#[cfg(feature = "cli")]
pub use process::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_survives_odd_names() {
        let line = b"123 (a) b) (c) S 1 123 123 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(parse_stat(line), Some(ProcState::Alive(98765)));
        let z = b"123 (x) Z 1 123 123 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(parse_stat(z), Some(ProcState::Dead));
        assert!(matches!(proc_state(getpid()), ProcState::Alive(_)));
        assert_eq!(proc_state(0), ProcState::Dead);
        assert_ne!(boot_id(), [0u8; 16]);
    }
}
