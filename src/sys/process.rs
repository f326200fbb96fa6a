//! For the command line (feature `cli`): `portmgr run`'s child with inherited sockets,
//! waiting for it without reaping it, and blocking, taking and sending signals.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;

// ---------------------------------------------------------------------------------------
// `portmgr run`: a child with inherited sockets, and signals

/// Wait until child `pid` has exited, without reaping it (`waitid(WEXITED | WNOWAIT)`),
/// so its pid cannot be reused while a signal may still be sent to it. Retries on EINTR.
pub fn wait_no_reap(pid: libc::pid_t) -> io::Result<()> {
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value of this plain C struct.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, writable siginfo_t; waitid has no other preconditions.
        let r = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Send signal `sig` to process `pid` (`kill(2)`); a failure (the process is gone) is
/// ignored.
pub fn send_signal(pid: libc::pid_t, sig: i32) {
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(pid, sig) };
}

/// Send signal `sig` to thread `thread` of this process (`pthread_kill`), which must not
/// have been joined.
pub fn signal_thread<T>(thread: &std::thread::JoinHandle<T>, sig: i32) {
    use std::os::unix::thread::JoinHandleExt;
    // SAFETY: the thread has not been joined (we borrow its handle), so its pthread_t is
    // valid.
    unsafe { libc::pthread_kill(thread.as_pthread_t(), sig) };
}

/// A set of signals (`sigset_t`).
#[derive(Clone, Copy)]
pub struct SignalSet(libc::sigset_t);

impl SignalSet {
    /// The set of `signals`.
    pub fn of(signals: &[i32]) -> SignalSet {
        // SAFETY: an all-zero sigset_t is a valid value; sigemptyset then initialises it.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid, writable sigset_t.
        unsafe {
            libc::sigemptyset(&mut set);
            for &s in signals {
                libc::sigaddset(&mut set, s);
            }
        }
        SignalSet(set)
    }

    /// Block these signals in the calling thread (threads it starts later inherit the
    /// mask); returns the mask before, for [`SignalSet::set_mask`].
    pub fn block(&self) -> io::Result<SignalSet> {
        let mut old = SignalSet::of(&[]);
        // SAFETY: `self.0` is an initialised sigset_t and `old.0` a writable one.
        let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &self.0, &mut old.0) };
        if r != 0 { Err(io::Error::from_raw_os_error(r)) } else { Ok(old) }
    }

    /// Make this set the calling thread's signal mask.
    pub fn set_mask(&self) {
        // SAFETY: `self.0` is an initialised sigset_t; a NULL old mask is allowed.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }

    /// Wait for one of these signals, blocked in the calling thread (`sigwaitinfo`);
    /// returns it and whether the kernel sent it (`SI_KERNEL`: the terminal's Ctrl-C or
    /// hangup, which went to the whole process group).
    pub fn wait(&self) -> io::Result<(i32, bool)> {
        // SAFETY: an all-zero siginfo_t is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `self.0` is an initialised sigset_t; `info` is writable.
        let sig = unsafe { libc::sigwaitinfo(&self.0, &mut info) };
        if sig < 0 { Err(io::Error::last_os_error()) } else { Ok((sig, info.si_code == libc::SI_KERNEL)) }
    }

    /// Take every pending signal of this set without waiting (`sigtimedwait` with a zero
    /// timeout), so that none is delivered once the mask is restored.
    pub fn drain(&self) {
        let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `self.0` is an initialised sigset_t; a NULL siginfo is allowed.
        while unsafe { libc::sigtimedwait(&self.0, std::ptr::null_mut(), &zero) } > 0 {}
    }
}

/// A NUL-terminated `KEY=VALUE`; `None` when either contains a NUL byte.
fn env_entry(k: &OsStr, v: &OsStr) -> Option<CString> {
    let mut b = k.as_bytes().to_vec();
    b.push(b'=');
    b.extend_from_slice(v.as_bytes());
    CString::new(b).ok()
}

unsafe extern "C" {
    static mut environ: *const *const libc::c_char;
}

/// Spawn `argv` with exactly the environment `env` (entries with a NUL byte are left
/// out) and an empty signal mask, passing `fds` as fds 3, 4, ... by the systemd
/// convention, with `LISTEN_PID` set to the child's own pid when `fds` is not empty.
/// Every other fd of ours is close-on-exec and so not inherited.
pub fn spawn_with_fds(
    argv: &[OsString],
    env: &[(OsString, OsString)],
    fds: &[RawFd],
) -> io::Result<std::process::Child> {
    let Some((prog, args)) = argv.split_first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no command to run"));
    };
    let n = fds.len() as RawFd;
    // The environment block, built here because the child may not allocate. LISTEN_PID
    // is a fixed buffer the child fills in with its pid.
    let entries: Vec<CString> = env.iter().filter_map(|(k, v)| env_entry(k, v)).collect();
    let mut listen_pid: Box<[u8; 40]> = Box::new([0u8; 40]);
    listen_pid[..11].copy_from_slice(b"LISTEN_PID=");
    let mut envp: Vec<*const libc::c_char> = entries.iter().map(|c| c.as_ptr()).collect();
    if n > 0 {
        envp.push(listen_pid.as_ptr().cast());
    }
    envp.push(std::ptr::null());

    // Occupy fds 3..3+n while spawning, so nothing of ours (std's exec-error pipe
    // included) lands on a number the child's dup2 will overwrite; and move the sockets
    // above that block, so dup2 never has source == target (which would keep CLOEXEC).
    let mut placeholders: Vec<OwnedFd> = Vec::new();
    let mut sources: Vec<OwnedFd> = Vec::new();
    if n > 0 {
        for _ in 0..(n + 3) {
            // SAFETY: fcntl(F_GETFD) only reads the flags of an fd number; no memory involved.
            let missing = (3..3 + n).any(|t| unsafe { libc::fcntl(t, libc::F_GETFD) } < 0);
            if !missing {
                break;
            }
            // SAFETY: the path is a valid NUL-terminated string.
            let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` was just returned by open(2) and is owned by nobody else.
            placeholders.push(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        for &fd in fds {
            // SAFETY: F_DUPFD_CLOEXEC on an fd the caller owns; no memory involved.
            let d = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3 + n) };
            if d < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `d` was just returned by fcntl(F_DUPFD_CLOEXEC) and is owned by nobody else.
            sources.push(unsafe { OwnedFd::from_raw_fd(d) });
        }
    }
    let srcs: Vec<RawFd> = sources.iter().map(|s| s.as_raw_fd()).collect();
    let envp_addr = envp.as_ptr() as usize;
    let pid_addr = if n > 0 { listen_pid.as_mut_ptr() as usize } else { 0 };

    let mut cmd = std::process::Command::new(prog);
    cmd.args(args);
    let hook = move || -> io::Result<()> {
        // Runs in the forked child, before exec: only async-signal-safe calls, no allocation.
        for (i, &src) in srcs.iter().enumerate() {
            let target = 3 + i as RawFd;
            // SAFETY: `src` is open (inherited from the parent) and differs from `target`;
            // dup2 allocates nothing.
            if unsafe { libc::dup2(src, target) } < 0 {
                return Err(io::Error::last_os_error());
            }
            // dup2 gives the new fd no FD_CLOEXEC; clear it explicitly all the same.
            // SAFETY: plain fcntl on an fd we just made.
            if unsafe { libc::fcntl(target, libc::F_SETFD, 0) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        if pid_addr != 0 {
            // SAFETY: getpid has no preconditions.
            let mut pid = unsafe { libc::getpid() } as u32;
            let mut digits = [0u8; 10];
            let mut len = 0;
            loop {
                digits[len] = b'0' + (pid % 10) as u8;
                len += 1;
                pid /= 10;
                if pid == 0 {
                    break;
                }
            }
            let buf = pid_addr as *mut u8;
            for k in 0..len {
                // SAFETY: `buf` is this process's copy of the parent's 40-byte LISTEN_PID
                // buffer (kept alive by the parent across the fork); 11 + 10 + 1 < 40.
                unsafe { *buf.add(11 + k) = digits[len - 1 - k] };
            }
            // SAFETY: as above; the terminating NUL.
            unsafe { *buf.add(11 + len) = 0 };
        }
        // The command's environment: std execs with `environ` since we set no env on the
        // Command itself.
        // SAFETY: `envp_addr` points to the parent's NULL-terminated array of C strings,
        // which were alive at the fork and so are in this child's copy of the memory; the
        // child is single-threaded here, so nobody else reads `environ` concurrently.
        unsafe { environ = envp_addr as *const *const libc::c_char };
        // A clean signal mask for the command (the parent blocks INT, TERM, HUP).
        // SAFETY: an all-zero sigset_t is a valid value; sigemptyset then initialises it.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset_t; both calls are async-signal-safe.
        unsafe {
            libc::sigemptyset(&mut set);
            libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        }
        Ok(())
    };
    // SAFETY: the hook only makes async-signal-safe system calls (dup2, fcntl, getpid,
    // sigemptyset, pthread_sigmask) and plain memory writes, and allocates nothing.
    unsafe { cmd.pre_exec(hook) };
    let child = cmd.spawn();
    // Keep the buffers alive until the fork has happened (spawn has returned).
    drop(envp);
    drop(entries);
    drop(listen_pid);
    drop(sources);
    drop(placeholders);
    child
}
