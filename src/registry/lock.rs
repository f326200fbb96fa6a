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
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::sys;

/// The process-wide lock: a bare futex word (0 free, 1 locked, 2 locked with waiters),
/// not a queueing mutex. A fork while another thread is parked on a parking_lot mutex
/// leaves the child a user-space wait queue naming a thread it does not have; unlocking
/// there can hand the lock to that ghost and hang the child (seen: 68 of 1,000 forks).
/// A futex keeps its waiters in the kernel, which forks none of them: the child just
/// stores 0.
static PROCESS_LOCK: AtomicU32 = AtomicU32::new(0);
static FORK_GEN: AtomicU64 = AtomicU64::new(0);
static AT_FORK: Once = Once::new();

/// Increases in every forked child; a handle made under another value is the parent's.
pub fn fork_generation() -> u64 {
    FORK_GEN.load(Ordering::Acquire)
}

/// Take the futex word before `deadline` (`None`: wait as long as it takes).
fn futex_lock(deadline: Option<Instant>) -> bool {
    if PROCESS_LOCK.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed).is_ok() {
        return true;
    }
    for _ in 0..64 {
        std::hint::spin_loop();
        if PROCESS_LOCK.compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            return true;
        }
    }
    // Announce a waiter (2) and sleep in the kernel until woken or the deadline.
    while PROCESS_LOCK.swap(2, Ordering::Acquire) != 0 {
        let left = match deadline {
            None => None,
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(l) if !l.is_zero() => Some(l),
                _ => return false,
            },
        };
        sys::futex_wait(&PROCESS_LOCK, 2, left);
    }
    true
}

fn futex_unlock() {
    if PROCESS_LOCK.swap(0, Ordering::Release) == 2 {
        sys::futex_wake(&PROCESS_LOCK, 1);
    }
}

extern "C" fn prepare() {
    // No deadline: whoever holds it is inside one registry call, bounded by its own.
    futex_lock(None);
}
extern "C" fn parent() {
    // `prepare` took the lock in this thread.
    futex_unlock();
}
extern "C" fn child() {
    FORK_GEN.fetch_add(1, Ordering::AcqRel);
    // Still holding the process lock taken in `prepare`: close inherited registry fds.
    super::close_inherited_in_child();
    // `prepare` took it in the forking thread, the child's only thread; the parent's
    // waiters are not in this process.
    PROCESS_LOCK.store(0, Ordering::Release);
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

/// The process-wide half of the registry lock, held until dropped.
pub struct ProcessGuard(());

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        futex_unlock();
    }
}

/// The process-wide half of the registry lock, waited for until `deadline`.
pub fn lock_process(deadline: Instant) -> Result<ProcessGuard> {
    if futex_lock(Some(deadline)) {
        return Ok(ProcessGuard(()));
    }
    Err({
        let (dev, ino) = (WAITING_FOR[0].load(Ordering::Acquire), WAITING_FOR[1].load(Ordering::Acquire));
        match (ino != 0).then(|| holder_pid_of(dev, ino)).flatten() {
            // The thread ahead of us waits for another process's flock: name that process.
            Some(p) => Error::lock_timeout(format!(
                "the registry lock was held by process {p} past the deadline (another thread of this process, pid {}, was waiting for it too); if that process is stopped (SIGSTOP) or hung, continue or kill it",
                sys::getpid()
            )),
            None => Error::lock_timeout(format!(
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
            return Err(Error::lock_timeout(format!(
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
