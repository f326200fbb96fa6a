//! SIGBUS guard for the mapped registry file.
//!
//! Anyone of the user can truncate `registry.db` while processes have it mapped. An access
//! to a mapped page past the file's new end raises SIGBUS, which kills the process by
//! default — in every process that has the file mapped, whatever it was doing. A size check
//! before each access cannot close that window (the file can shrink right after it).
//!
//! So a process-wide SIGBUS handler, installed when the first registry file is mapped,
//! looks at the faulting address: inside a registered mapping, it maps a private zero page
//! over the faulting page (`MAP_FIXED | MAP_ANONYMOUS`), records the fault for that
//! mapping, and returns, so the access completes (reading zeros; writes go nowhere). The
//! registry then reports the file as damaged ([`crate::Error::RegistryCorrupt`]) instead
//! of trusting that mapping again. The same technique is used by Wayland compositors for
//! client shared memory that a client may truncate. Any other SIGBUS goes to the handler
//! that was installed before (a runtime's, Python's faulthandler), or kills the process as
//! it would have.

use std::sync::{Once, OnceLock};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};

/// How many mappings can be guarded at once (one per open registry directory).
const SLOTS: usize = 256;

/// Registered mappings: start address and length (0 = slot free), and whether a fault hit.
static START: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static LEN: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static FAULTED: [AtomicBool; SLOTS] = [const { AtomicBool::new(false) }; SLOTS];
static PAGE: AtomicUsize = AtomicUsize::new(4096);
static INSTALL: Once = Once::new();
/// The handler that was installed before ours: set once, before ours is installed.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// A registered mapping; unregistered when dropped (before the mapping is unmapped).
#[derive(Debug)]
pub struct Guard {
    slot: Option<usize>,
}

impl Guard {
    /// Guard `len` bytes at `start`. With every slot taken the mapping is simply not
    /// guarded (a truncation then kills as before): no error for that.
    pub fn new(start: *const u8, len: usize) -> Guard {
        install();
        for slot in 0..SLOTS {
            if START[slot].compare_exchange(0, usize::MAX, AcqRel, Relaxed).is_ok() {
                FAULTED[slot].store(false, Release);
                LEN[slot].store(len, Release);
                START[slot].store(start as usize, Release);
                return Guard { slot: Some(slot) };
            }
        }
        Guard { slot: None }
    }

    /// Whether an access to the mapping faulted (the file was truncated under it): its
    /// content can no longer be trusted.
    pub fn faulted(&self) -> bool {
        self.slot.is_some_and(|s| FAULTED[s].load(Acquire))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(s) = self.slot {
            LEN[s].store(0, Release);
            START[s].store(0, Release);
        }
    }
}

fn install() {
    INSTALL.call_once(|| {
        // SAFETY: sysconf has no memory-safety preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if page > 0 {
            PAGE.store(page as usize, Relaxed);
        }
        // SAFETY: a zeroed sigaction is a valid value to fill in; sigemptyset gets a valid
        // pointer; `on_sigbus` has the signature SA_SIGINFO expects; `old` is written by
        // the kernel before we read it.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_sigbus as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) as usize;
            act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
            libc::sigemptyset(&mut act.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old) == 0 {
                let _ = PREVIOUS.set(old);
                libc::sigaction(libc::SIGBUS, &act, std::ptr::null_mut());
            }
        }
    });
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    let page = PAGE.load(Relaxed);
    for slot in 0..SLOTS {
        let (start, len) = (START[slot].load(Acquire), LEN[slot].load(Acquire));
        if start == 0 || start == usize::MAX || addr < start || addr >= start.saturating_add(len) {
            continue;
        }
        let at = addr & !(page - 1);
        // SAFETY: `at` is a page inside a live mapping of ours (registered until just before
        // it is unmapped); replacing that page with a private zero page changes no memory
        // that Rust code holds references to other than through the atomics of the mapped
        // table, which stay valid (zero is a valid value for every field). mmap is not on
        // the async-signal-safe list but is a plain system call here.
        let p = unsafe {
            libc::mmap(
                at as *mut libc::c_void,
                page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            FAULTED[slot].store(true, Release);
            return;
        }
        break;
    }
    // Not ours (or the page could not be replaced): what would have happened without us.
    match PREVIOUS.get().copied() {
        Some(old) if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN => {
            if old.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: the previous handler was installed with SA_SIGINFO, so it has this
                // signature; we pass on exactly what the kernel gave us.
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { std::mem::transmute(old.sa_sigaction) };
                f(sig, info, ctx);
            } else {
                // SAFETY: a handler installed without SA_SIGINFO takes the signal number.
                let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(old.sa_sigaction) };
                f(sig);
            }
        }
        _ => {
            // Back to the default action; returning re-runs the access, which faults again
            // and kills the process with SIGBUS, as without this handler.
            // SAFETY: a zeroed sigaction with SIG_DFL is valid; sigaction is async-signal-safe.
            unsafe {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut());
            }
        }
    }
}
