//! The registry file's fixed binary layout, memory-mapped `MAP_SHARED`.
//!
//! ```text
//! offset     size        what
//! 0          4 KiB       Header: magic, version, layout sizes, boot id, counters
//! 4 KiB      256 KiB     4096 owner slots x 64 B: generation, pid, start time
//! 260 KiB    8 KiB       bitmap, one bit a port: set = maybe taken (check the record)
//! 268 KiB    8 MiB       65536 port records x 128 B, indexed by port number
//! ```
//!
//! The file is sparse: only touched pages take disk space. Every field is an atomic, so
//! that concurrent readers in other processes are well-defined; writers hold the registry
//! lock, except for the one documented lock-free store (pending -> held, see `mod.rs`).
//! All integers are native-endian: the file is per host.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering::*};

/// `PORTMGR` and a format byte.
pub const MAGIC: u64 = u64::from_le_bytes(*b"PORTMGR\x01");
/// Layout version; bumped on any incompatible change.
pub const VERSION: u32 = 1;
/// Owner slots: the most processes that can use one registry at once.
pub const OWNER_SLOTS: usize = 4096;
/// Bytes of the header.
pub const HEADER_SIZE: usize = 4096;
/// Bytes of one owner slot.
pub const OWNER_SIZE: usize = 64;
/// Bytes of one port record.
pub const RECORD_SIZE: usize = 128;
/// One record per port number (record 0 is never used).
pub const PORTS: usize = 65536;
/// Longest service name, in bytes of UTF-8.
pub const NAME_MAX: usize = 56;

/// Where the owner table starts.
pub const OWNERS_OFF: usize = HEADER_SIZE;
/// Where the bitmap starts.
pub const BITMAP_OFF: usize = OWNERS_OFF + OWNER_SLOTS * OWNER_SIZE;
/// Where the records start.
pub const RECORDS_OFF: usize = BITMAP_OFF + PORTS / 8;
/// The file's size.
pub const FILE_SIZE: usize = RECORDS_OFF + PORTS * RECORD_SIZE;

/// Record states. The state byte is written last when a record is filled in, and first
/// when it is cleared, so a writer killed half-way leaves a record that is free or
/// pending for a dead owner: never a live-looking record with half its fields.
pub const FREE: u8 = 0;
/// Marked under the lock, being probed outside it; owned by a live owner, taken.
pub const PENDING: u8 = 1;
/// Confirmed: the port is held.
pub const HELD: u8 = 2;

/// Record flag: the lease was kept or detached (TTL or watched process): any process of
/// the user may release it.
pub const FLAG_DETACHED: u8 = 1;
/// Record flag: handed out as a bound socket.
pub const FLAG_BOUND: u8 = 2;

/// The header at offset 0.
#[repr(C)]
pub struct Header {
    pub magic: AtomicU64,
    pub version: AtomicU32,
    pub header_size: AtomicU32,
    pub owner_slots: AtomicU32,
    pub owner_size: AtomicU32,
    pub record_size: AtomicU32,
    pub ports: AtomicU32,
    pub boot_id: [AtomicU64; 2],
    pub created_ms: AtomicU64,
    pub next_lease_id: AtomicU64,
    /// Ports confirmed held, ever.
    pub allocations: AtomicU64,
    /// Ports released by a call, ever.
    pub releases: AtomicU64,
    /// Held ports reclaimed from dead owners or expired leases, ever.
    pub reclaimed: AtomicU64,
}

/// One owner slot. The owner holds an open-file-description write lock on the slot's
/// first byte for as long as it lives; `generation` grows each time the slot is claimed.
#[repr(C)]
pub struct Owner {
    pub generation: AtomicU64,
    pub pid: AtomicU32,
    pub _pad: AtomicU32,
    pub start_time: AtomicU64,
    pub pidns: AtomicU64,
    pub created_ms: AtomicU64,
    pub _reserved: [AtomicU64; 3],
}

/// One port record.
#[repr(C)]
pub struct Record {
    pub state: AtomicU8,
    pub protocols: AtomicU8,
    pub flags: AtomicU8,
    pub name_len: AtomicU8,
    pub owner_slot: AtomicU32,
    pub owner_gen: AtomicU64,
    pub lease_id: AtomicU64,
    /// Wall-clock milliseconds, for display.
    pub created_ms: AtomicU64,
    /// `CLOCK_BOOTTIME` milliseconds when the lease expires; 0 = no TTL.
    pub expires_boot_ms: AtomicU64,
    /// The TTL the lease was given, for renewals without an explicit one.
    pub ttl_ms: AtomicU64,
    pub watch_pid: AtomicU32,
    pub owner_pid: AtomicU32,
    pub watch_start: AtomicU64,
    pub watch_pidns: AtomicU64,
    pub name: [AtomicU8; NAME_MAX],
}

const _: () = assert!(size_of::<Header>() <= HEADER_SIZE);
const _: () = assert!(size_of::<Owner>() == OWNER_SIZE);
const _: () = assert!(size_of::<Record>() == RECORD_SIZE);
const _: () = assert!(RECORDS_OFF.is_multiple_of(4096));

impl Record {
    /// The stored service name (empty when none).
    pub fn name(&self) -> String {
        let n = usize::from(self.name_len.load(Relaxed)).min(NAME_MAX);
        let bytes: Vec<u8> = self.name[..n].iter().map(|b| b.load(Relaxed)).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Whether the stored name equals `name` (no allocation).
    pub fn name_is(&self, name: &str) -> bool {
        let n = usize::from(self.name_len.load(Relaxed));
        n == name.len() && n <= NAME_MAX && name.bytes().zip(&self.name).all(|(a, b)| b.load(Relaxed) == a)
    }

    pub fn set_name(&self, name: &str) {
        let bytes = name.as_bytes();
        debug_assert!(bytes.len() <= NAME_MAX);
        for (i, slot) in self.name.iter().enumerate() {
            slot.store(bytes.get(i).copied().unwrap_or(0), Relaxed);
        }
        self.name_len.store(bytes.len().min(NAME_MAX) as u8, Relaxed);
    }

    /// Clear to FREE: state first, then the fields.
    pub fn clear(&self) {
        self.state.store(FREE, Release);
        self.protocols.store(0, Relaxed);
        self.flags.store(0, Relaxed);
        self.owner_slot.store(0, Relaxed);
        self.owner_gen.store(0, Relaxed);
        self.lease_id.store(0, Relaxed);
        self.created_ms.store(0, Relaxed);
        self.expires_boot_ms.store(0, Relaxed);
        self.ttl_ms.store(0, Relaxed);
        self.watch_pid.store(0, Relaxed);
        self.owner_pid.store(0, Relaxed);
        self.watch_start.store(0, Relaxed);
        self.watch_pidns.store(0, Relaxed);
        self.set_name("");
    }
}
