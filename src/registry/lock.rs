//! The registry's mutual exclusion: a process-wide mutex (threads share one open file
//! description, so `flock` alone does not separate them) plus `flock` on `registry.lock`,
//! a file that is never renamed or deleted. Waits have a deadline; a timeout names the
//! holder's pid, read from `/proc/locks`.
//!
//! fork: `pthread_atfork` handlers take the process mutex before `fork()` and release it
//! in both parent and child, so a child never inherits it locked by a thread it does not
//! have; the child handler also bumps [`fork_generation`], which tells every registry
//! handle to close (never unlock) its inherited descriptors and start afresh.

use std::fs::File;
use std::path::Path;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::sys;

static PROCESS_LOCK: Mutex<()> = Mutex::new(());
static FORK_GEN: AtomicU64 = AtomicU64::new(0);
static AT_FORK: Once = Once::new();

/// Increases in every forked child; a handle made under another value is the parent's.
pub fn fork_generation() -> u64 {
    FORK_GEN.load(Ordering::Acquire)
}

extern "C" fn prepare() {
    std::mem::forget(PROCESS_LOCK.lock());
}
extern "C" fn parent() {
    // SAFETY: `prepare` locked PROCESS_LOCK in this thread and forgot the guard.
    unsafe { PROCESS_LOCK.force_unlock() };
}
extern "C" fn child() {
    FORK_GEN.fetch_add(1, Ordering::AcqRel);
    // Still holding the process lock taken in `prepare`: close inherited registry fds.
    super::close_inherited_in_child();
    // SAFETY: `prepare` locked PROCESS_LOCK in the forking thread, which is the child's
    // only thread; nobody else can hold it.
    unsafe { PROCESS_LOCK.force_unlock() };
    crate::strategy::reseed();
}

/// Install the fork handlers once per process.
pub fn install_fork_handlers() {
    AT_FORK.call_once(|| {
        // Failure leaves fork detection to the pid check in `Registry`.
        let _ = sys::at_fork(prepare, parent, child);
    });
}

/// The `registry.lock` (device, inode) a thread of this process is waiting for right
/// now (0 when none): a thread that times out behind it names the real holder.
static WAITING_FOR: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// The process-wide half of the registry lock, waited for until `deadline`.
pub fn lock_process(deadline: Instant) -> Result<MutexGuard<'static, ()>> {
    PROCESS_LOCK.try_lock_until(deadline).ok_or_else(|| {
        let (dev, ino) = (WAITING_FOR[0].load(Ordering::Acquire), WAITING_FOR[1].load(Ordering::Acquire));
        match (ino != 0).then(|| holder_pid_of(dev, ino)).flatten() {
            // The thread ahead of us waits for another process's flock: name that process.
            Some(p) => Error::Timeout(format!(
                "the registry lock was held by process {p} past the deadline (another thread of this process, pid {}, was waiting for it too); if that process is stopped (SIGSTOP) or hung, continue or kill it",
                sys::getpid()
            )),
            None => Error::Timeout(format!(
                "another thread of this process (pid {}) held the registry lock past the deadline",
                sys::getpid()
            )),
        }
    })
}

/// `flock(LOCK_EX)` held on `registry.lock`; unlocked on drop.
pub struct FileLock<'a>(&'a File);

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// Take `flock(LOCK_EX)` on `file` before `deadline`: spin briefly, then sleep with a
/// growing pause (20 µs to 2 ms). The timeout error names the holder's pid.
pub fn lock_file<'a>(file: &'a File, path: &Path, deadline: Instant) -> Result<FileLock<'a>> {
    let start = Instant::now();
    let mut spins = 0u32;
    let mut pause = Duration::from_micros(20);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(FileLock(file)),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::os(format!("flock on {}", path.display()), e));
            }
        }
        if spins == 0
            && let Ok(st) = sys::fstat(file)
        {
            WAITING_FOR[0].store(st.st_dev, Ordering::Release);
            WAITING_FOR[1].store(st.st_ino, Ordering::Release);
        }
        let now = Instant::now();
        if now >= deadline {
            let holder = holder_pid(file)
                .map_or_else(|| "an unknown process".to_string(), |p| format!("process {p}"));
            return Err(Error::Timeout(format!(
                "the registry lock {} was held by {holder} for {:?}, past the deadline; if that process is stopped (SIGSTOP) or hung, continue or kill it",
                path.display(),
                now - start
            )));
        }
        if spins < 64 {
            spins += 1;
            std::thread::yield_now();
        } else {
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(2));
        }
    }
}

/// The pid holding a `flock` on `file`, from `/proc/locks`.
pub fn holder_pid(file: &File) -> Option<u32> {
    let st = sys::fstat(file).ok()?;
    holder_pid_of(st.st_dev, st.st_ino)
}

/// The pid holding a `flock` on the file (`dev`, `ino`), from `/proc/locks`.
fn holder_pid_of(dev: u64, ino: u64) -> Option<u32> {
    let (maj, min) = (libc::major(dev), libc::minor(dev));
    let want = format!("{maj:02x}:{min:02x}:{ino}");
    let text = std::fs::read_to_string("/proc/locks").ok()?;
    text.lines()
        .filter(|l| !l.contains("->"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // "1: FLOCK ADVISORY WRITE 1234 08:01:5678 0 EOF"
            (f.len() >= 6 && f[1] == "FLOCK" && f[5] == want).then(|| f[4].parse::<u32>().ok()).flatten()
        })
        .next()
}
