//! The registry file's fixed binary layout, memory-mapped `MAP_SHARED`.
//!
//! ```text
//! offset     size        what
//! 0          4 KiB       Header: magic, version, layout sizes, boot id, counters
//! 4 KiB      256 KiB     4096 owner slots x 64 B: generation, pid, start time, check
//! 260 KiB    8 KiB       bitmap, one bit a port: set = maybe taken (check the record)
//! 268 KiB    8 MiB       65536 port records x 128 B, indexed by port number
//! 8460 KiB   256 KiB     65536 x u32: the range each port's lease was asked from
//!                        (start << 16 | end; 0 = the default pool), for health reports
//! 8716 KiB   128 KiB     512 reservations x 256 B: ports never handed out, with reasons
//! ```
//!
//! The file's blocks are all allocated up front (`fallocate`, see `reserve` in `mod.rs`).
//! Every field is an atomic, so that concurrent readers in other processes are
//! well-defined; writers hold the registry lock, except for the one documented lock-free
//! store (pending -> held, see `mod.rs`). All integers are native-endian: the file is per
//! host.
//!
//! # Damage detection (layout version 2)
//!
//! Every record and owner slot carries a CRC-32 of its fields (`check`). A record whose
//! check does not match (bit flips, or pages zeroed by a truncate-then-extend: a zeroed
//! record does not match, because a free record's check is the CRC of its zero fields,
//! which is not 0) is *damaged*: never handed out, reported, and repaired by its owner,
//! which keeps an image of every record it wrote. The record's state takes part in the
//! check only as free / not free, so the lock-free pending -> held store keeps it valid.
//! A writer names the record it is changing in the header (`writing`) until it has
//! resealed it: a writer killed half-way leaves a record the next lock holder reseals
//! (or clears), not one that looks damaged.
//!
//! Version 1 files (no checks; `watch_pidns` a u64 whose high half is always 0, now
//! `watch_pidns: u32` + `check: u32`; no range table) are upgraded in place, keeping
//! every record: the file grows by the range table, every other offset stays.
//!
//! The reservation table came later within version 2: a version 2 file without it
//! (`FILE_SIZE_V2_0` bytes) grows by it in place; its zero bytes are an empty table (the
//! header's `reserved_count`, also 0 in such files, says how many entries are used).

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering::*};

/// `PORTMGR` and a format byte (the layout version): a process of an older version that
/// has the file mapped sees the magic change at an upgrade and stops using the file.
pub const MAGIC: u64 = u64::from_le_bytes(*b"PORTMGR\x02");
/// Layout version; bumped on any incompatible change.
pub const VERSION: u32 = 2;
/// The magic of layout version 1, upgraded in place when found.
pub const MAGIC_V1: u64 = u64::from_le_bytes(*b"PORTMGR\x01");
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
/// Where the range table starts.
pub const RANGES_OFF: usize = RECORDS_OFF + PORTS * RECORD_SIZE;
/// Where the reservation table starts.
pub const RESERVED_OFF: usize = RANGES_OFF + PORTS * 4;
/// Entries of the reservation table: the most reservations a registry holds.
pub const RESERVED_SLOTS: usize = 512;
/// Bytes of one reservation entry.
pub const RESERVED_SIZE: usize = 256;
/// Longest reservation reason, in bytes of UTF-8.
pub const REASON_MAX: usize = 232;
/// The file's size.
pub const FILE_SIZE: usize = RESERVED_OFF + RESERVED_SLOTS * RESERVED_SIZE;
/// The size of a version 2 file made before the reservation table.
pub const FILE_SIZE_V2_0: usize = RESERVED_OFF;
/// The size of a layout version 1 file (no range table).
pub const FILE_SIZE_V1: usize = RANGES_OFF;

/// Record states. The state byte is written last when a record is filled in, and first
/// when it is cleared, so a writer killed half-way leaves a record that is free or
/// pending for a dead owner: never a live-looking record with half its fields.
pub const FREE: u8 = 0;
/// Marked under the lock, being probed outside it; owned by a live owner, taken.
pub const PENDING: u8 = 1;
/// Confirmed: the port is held.
pub const HELD: u8 = 2;

/// A record found damaged, marked so by the process that found it first (so that the
/// others know it is already reported); never intact. Its owner's repair overwrites it.
pub const DAMAGED: u8 = 0xDD;

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
    /// The record being changed, as port + 1 (0: none): set before a record is changed and
    /// cleared once it is resealed, so the next lock holder can finish a write that a
    /// killed (or panicking) writer left half-done.
    pub writing: AtomicU32,
    pub _pad: AtomicU32,
    /// Grows whenever a process finds a damaged record or owner slot: every owner then
    /// checks and repairs its own records at its next call.
    pub damage_epoch: AtomicU64,
    /// Damaged records found, ever.
    pub damaged: AtomicU64,
    /// Entries used in the reservation table (entries `0..reserved_count`).
    pub reserved_count: AtomicU32,
    pub _pad2: AtomicU32,
}

/// One reservation: the ports `start..=end` are never handed out. Written under the lock;
/// `check` covers every other field and is never 0, so a zeroed entry is seen as damaged.
#[repr(C)]
pub struct Reserved {
    /// `start << 16 | end`.
    pub span: AtomicU32,
    pub check: AtomicU32,
    /// Wall-clock milliseconds, for display.
    pub created_ms: AtomicU64,
    pub reason_len: AtomicU32,
    pub _pad: AtomicU32,
    pub reason: [AtomicU8; REASON_MAX],
}

impl Reserved {
    /// The reserved ports.
    pub fn span(&self) -> (u16, u16) {
        let v = self.span.load(Acquire);
        ((v >> 16) as u16, v as u16)
    }
    /// The reason given (empty when none).
    pub fn reason(&self) -> String {
        let n = (self.reason_len.load(Relaxed) as usize).min(REASON_MAX);
        let bytes: Vec<u8> = self.reason[..n].iter().map(|b| b.load(Relaxed)).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
    /// CRC-32 of the fields, never 0.
    pub fn compute_check(&self) -> u32 {
        let mut b = [0u8; 16 + REASON_MAX];
        b[..4].copy_from_slice(&self.span.load(Acquire).to_ne_bytes());
        b[4..12].copy_from_slice(&self.created_ms.load(Relaxed).to_ne_bytes());
        b[12..16].copy_from_slice(&self.reason_len.load(Relaxed).to_ne_bytes());
        for (d, s) in b[16..].iter_mut().zip(&self.reason) {
            *d = s.load(Relaxed);
        }
        crc32fast::hash(&b) | 1
    }
    /// Whether the entry is undamaged and names a valid span.
    pub fn intact(&self) -> bool {
        let (a, b) = self.span();
        a != 0 && a <= b && self.check.load(Acquire) == self.compute_check()
    }
    /// Fill in and seal.
    pub fn set(&self, start: u16, end: u16, reason: &str, created_ms: u64) {
        let bytes = reason.as_bytes();
        debug_assert!(bytes.len() <= REASON_MAX);
        self.span.store(u32::from(start) << 16 | u32::from(end), Release);
        self.created_ms.store(created_ms, Relaxed);
        for (i, slot) in self.reason.iter().enumerate() {
            slot.store(bytes.get(i).copied().unwrap_or(0), Relaxed);
        }
        self.reason_len.store(bytes.len().min(REASON_MAX) as u32, Relaxed);
        self.check.store(self.compute_check(), Release);
    }
}

/// One owner slot. The owner holds an open-file-description write lock on the slot's
/// first byte for as long as it lives; `generation` grows each time the slot is claimed.
#[repr(C)]
pub struct Owner {
    pub generation: AtomicU64,
    pub pid: AtomicU32,
    /// CRC-32 of the other fields (version 2; 0 in version 1 files).
    pub check: AtomicU32,
    pub start_time: AtomicU64,
    pub pidns: AtomicU64,
    pub created_ms: AtomicU64,
    /// The damage epoch up to which the owner has checked and repaired its records (not
    /// covered by the check: only the owner writes it).
    pub repaired_epoch: AtomicU64,
    pub _reserved: [AtomicU64; 2],
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
    /// The pid namespace's inode (a 32-bit number in the kernel).
    pub watch_pidns: AtomicU32,
    /// CRC-32 of the other fields, the state counted as free / not free (version 2).
    pub check: AtomicU32,
    pub name: [AtomicU8; NAME_MAX],
}

const _: () = assert!(size_of::<Header>() <= HEADER_SIZE);
const _: () = assert!(size_of::<Owner>() == OWNER_SIZE);
const _: () = assert!(size_of::<Record>() == RECORD_SIZE);
const _: () = assert!(size_of::<Reserved>() == RESERVED_SIZE);
const _: () = assert!(RECORDS_OFF.is_multiple_of(4096));
const _: () = assert!(RESERVED_OFF.is_multiple_of(4096));

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

    /// Clear to FREE and seal: state first, then the fields, then the check.
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
        self.check.store(*FREE_CHECK, Release);
    }

    /// A plain copy of the fields (not the check).
    pub fn snapshot(&self) -> Image {
        let mut name = [0u8; NAME_MAX];
        for (b, a) in name.iter_mut().zip(&self.name) {
            *b = a.load(Relaxed);
        }
        Image {
            state: self.state.load(Acquire),
            protocols: self.protocols.load(Relaxed),
            flags: self.flags.load(Relaxed),
            name_len: self.name_len.load(Relaxed),
            owner_slot: self.owner_slot.load(Relaxed),
            owner_gen: self.owner_gen.load(Relaxed),
            lease_id: self.lease_id.load(Relaxed),
            created_ms: self.created_ms.load(Relaxed),
            expires_boot_ms: self.expires_boot_ms.load(Relaxed),
            ttl_ms: self.ttl_ms.load(Relaxed),
            watch_pid: self.watch_pid.load(Relaxed),
            owner_pid: self.owner_pid.load(Relaxed),
            watch_start: self.watch_start.load(Relaxed),
            watch_pidns: self.watch_pidns.load(Relaxed),
            name,
        }
    }

    /// Store the check of the current fields.
    pub fn seal(&self) {
        self.check.store(self.snapshot().check(), Release);
    }

    /// Whether the record is undamaged: a known state and a check that matches.
    pub fn intact(&self) -> bool {
        let img = self.snapshot();
        img.state <= HELD && self.check.load(Acquire) == img.check()
    }

    /// Whether every byte of the record is 0, its check included: what a truncate-then-
    /// extend leaves of it.
    pub fn is_zeroed(&self) -> bool {
        self.check.load(Acquire) == 0 && self.snapshot() == Image::ZERO
    }

    /// Write `img` back (a repair): the fields, the state last, then the check.
    pub fn restore(&self, img: &Image) {
        self.protocols.store(img.protocols, Relaxed);
        self.flags.store(img.flags, Relaxed);
        self.owner_slot.store(img.owner_slot, Relaxed);
        self.owner_gen.store(img.owner_gen, Relaxed);
        self.lease_id.store(img.lease_id, Relaxed);
        self.created_ms.store(img.created_ms, Relaxed);
        self.expires_boot_ms.store(img.expires_boot_ms, Relaxed);
        self.ttl_ms.store(img.ttl_ms, Relaxed);
        self.watch_pid.store(img.watch_pid, Relaxed);
        self.owner_pid.store(img.owner_pid, Relaxed);
        self.watch_start.store(img.watch_start, Relaxed);
        self.watch_pidns.store(img.watch_pidns, Relaxed);
        for (a, b) in self.name.iter().zip(img.name) {
            a.store(b, Relaxed);
        }
        self.name_len.store(img.name_len, Relaxed);
        self.state.store(img.state, Release);
        self.seal();
    }
}

/// A plain copy of a record's fields: what an owner remembers of the records it wrote,
/// to repair them if the file is damaged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Image {
    pub state: u8,
    pub protocols: u8,
    pub flags: u8,
    pub name_len: u8,
    pub owner_slot: u32,
    pub owner_gen: u64,
    pub lease_id: u64,
    pub created_ms: u64,
    pub expires_boot_ms: u64,
    pub ttl_ms: u64,
    pub watch_pid: u32,
    pub owner_pid: u32,
    pub watch_start: u64,
    pub watch_pidns: u32,
    pub name: [u8; NAME_MAX],
}

impl Image {
    /// A free record.
    pub const ZERO: Image = Image {
        state: FREE,
        protocols: 0,
        flags: 0,
        name_len: 0,
        owner_slot: 0,
        owner_gen: 0,
        lease_id: 0,
        created_ms: 0,
        expires_boot_ms: 0,
        ttl_ms: 0,
        watch_pid: 0,
        owner_pid: 0,
        watch_start: 0,
        watch_pidns: 0,
        name: [0; NAME_MAX],
    };

    /// CRC-32 of the fields, the state counted only as free / not free. The fields are
    /// laid out in one buffer first: one call over 124 bytes takes crc32fast's fast path.
    pub fn check(&self) -> u32 {
        let mut b = [0u8; 124];
        b[..4].copy_from_slice(&[u8::from(self.state != FREE), self.protocols, self.flags, self.name_len]);
        b[4..8].copy_from_slice(&self.owner_slot.to_ne_bytes());
        for (i, v) in [self.owner_gen, self.lease_id, self.created_ms, self.expires_boot_ms, self.ttl_ms].into_iter().enumerate() {
            b[8 + i * 8..16 + i * 8].copy_from_slice(&v.to_ne_bytes());
        }
        b[48..52].copy_from_slice(&self.watch_pid.to_ne_bytes());
        b[52..56].copy_from_slice(&self.owner_pid.to_ne_bytes());
        b[56..64].copy_from_slice(&self.watch_start.to_ne_bytes());
        b[64..68].copy_from_slice(&self.watch_pidns.to_ne_bytes());
        b[68..].copy_from_slice(&self.name);
        crc32fast::hash(&b)
    }
}

/// The check of a free (all-zero) record: not 0, so a zeroed record is seen as damaged.
pub static FREE_CHECK: std::sync::LazyLock<u32> = std::sync::LazyLock::new(|| Image::ZERO.check());

impl Owner {
    /// CRC-32 of the slot's fields.
    pub fn compute_check(&self) -> u32 {
        let mut b = [0u8; 36];
        for (i, v) in [self.generation.load(Acquire), self.start_time.load(Relaxed), self.pidns.load(Relaxed), self.created_ms.load(Relaxed)]
            .into_iter()
            .enumerate()
        {
            b[i * 8..i * 8 + 8].copy_from_slice(&v.to_ne_bytes());
        }
        b[32..].copy_from_slice(&self.pid.load(Relaxed).to_ne_bytes());
        // Never 0: a zeroed slot does not match.
        crc32fast::hash(&b) | 1
    }

    /// Store the check of the current fields.
    pub fn seal(&self) {
        self.check.store(self.compute_check(), Release);
    }

    /// Whether the slot is undamaged.
    pub fn intact(&self) -> bool {
        self.check.load(Acquire) == self.compute_check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zeroed_record_or_slot_is_not_intact_and_a_cleared_one_is() {
        assert_ne!(*FREE_CHECK, 0);
        let rec: Record = unsafe_zeroed();
        assert!(!rec.intact(), "a zeroed record must look damaged");
        rec.clear();
        assert!(rec.intact());
        rec.owner_gen.store(7, Relaxed);
        assert!(!rec.intact(), "a changed field must be seen");
        rec.seal();
        assert!(rec.intact());
        // The lock-free pending -> held store keeps the check valid.
        rec.state.store(PENDING, Relaxed);
        rec.seal();
        rec.state.store(HELD, Relaxed);
        assert!(rec.intact());
        rec.state.store(3, Relaxed);
        assert!(!rec.intact(), "an unknown state is damage");
        let o: Owner = unsafe_zeroed();
        assert!(!o.intact());
        o.generation.store(3, Relaxed);
        o.seal();
        assert!(o.intact());
        o.pid.store(1, Relaxed);
        assert!(!o.intact());
    }

    /// An all-zero value of an all-atomics struct.
    fn unsafe_zeroed<T>() -> T {
        // SAFETY: only used for `Record` and `Owner`, made only of atomic integers, for
        // which all-zero bytes are a valid value.
        unsafe { std::mem::zeroed() }
    }
}
