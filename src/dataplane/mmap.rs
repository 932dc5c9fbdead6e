//! A BPF array map's values mapped into this process (maps created with
//! BPF_F_MMAPABLE): how tables are filled before they are published and
//! how vip_index halves are written, without a syscall per element.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

use super::DataplaneError;

/// The kernel's layout of an mmapped array: element i at i * stride, the
/// stride being the value size rounded up to 8 (kernel/bpf/arraymap.c).
pub fn stride(value_size: usize) -> usize {
    value_size.div_ceil(8) * 8
}

/// A shared mapping of the first `len` bytes of a map's values; unmapped
/// on drop.
pub struct MapMmap {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value; callers
// synchronise their writes (the data plane's `installed` lock).
unsafe impl Send for MapMmap {}
// SAFETY: as above; shared references only read, or store atomically.
unsafe impl Sync for MapMmap {}

impl MapMmap {
    pub fn new(
        fd: BorrowedFd<'_>,
        len: usize,
        writable: bool,
        what: &'static str,
    ) -> Result<MapMmap, DataplaneError> {
        Self::with_flags(fd, len, writable, 0, what)
    }

    /// `new`, with the pages faulted in now (MAP_POPULATE): writing them
    /// later costs no page fault.
    pub fn populated(
        fd: BorrowedFd<'_>,
        len: usize,
        what: &'static str,
    ) -> Result<MapMmap, DataplaneError> {
        Self::with_flags(fd, len, true, libc::MAP_POPULATE, what)
    }

    fn with_flags(
        fd: BorrowedFd<'_>,
        len: usize,
        writable: bool,
        flags: libc::c_int,
        what: &'static str,
    ) -> Result<MapMmap, DataplaneError> {
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: a shared mapping of a map fd with a length inside the
        // map's value area; the result is checked for MAP_FAILED.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED | flags,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(DataplaneError::Os {
                what,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(MapMmap {
            base: NonNull::new(base.cast::<u8>()).expect("mmap returned non-null"),
            len,
        })
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is len bytes long and lives as long as self.
        // The program may write elements concurrently only where the
        // caller knows it does not (maps the program only reads).
        unsafe { std::slice::from_raw_parts(self.base.as_ptr(), self.len) }
    }

    /// Copies `bytes` in at `offset`.
    pub fn write(&self, offset: usize, bytes: &[u8]) {
        assert!(offset + bytes.len() <= self.len, "write past the mapping");
        // SAFETY: in bounds (checked); the mapping is writable (a
        // read-only one faults, it cannot corrupt memory).
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.base.as_ptr().add(offset),
                bytes.len(),
            )
        }
    }

    /// Stores `words` one after the other from `offset` (8-aligned): one
    /// bounds check for all, where `write` checks each.
    pub fn write_u64s(&self, offset: usize, words: impl ExactSizeIterator<Item = u64>) {
        assert!(
            offset % 8 == 0 && offset + words.len() * 8 <= self.len,
            "unaligned or past the mapping"
        );
        // SAFETY: in bounds and 8-aligned (checked; the mapping is
        // page-aligned), writable as `write`; `take` keeps an iterator
        // that lies about its length inside what was checked.
        let at = unsafe { self.base.as_ptr().add(offset).cast::<u64>() };
        let n = words.len();
        for (i, w) in words.take(n).enumerate() {
            unsafe { at.add(i).write(w) };
        }
    }

    /// The aligned u32 at `offset`, to load and store atomically.
    pub fn atomic_u32(&self, offset: usize) -> &std::sync::atomic::AtomicU32 {
        assert!(
            offset + 4 <= self.len && offset % 4 == 0,
            "unaligned or out of bounds"
        );
        // SAFETY: in bounds and 4-aligned (the mapping is page-aligned);
        // AtomicU32 has u32's layout; the memory lives as long as self.
        unsafe {
            &*self
                .base
                .as_ptr()
                .add(offset)
                .cast::<std::sync::atomic::AtomicU32>()
        }
    }
}

impl Drop for MapMmap {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what new() mapped; no reference into it
        // outlives self.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}
