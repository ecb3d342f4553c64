//! A sparse shmem file (a memfd) that processes map privately: the host's
//! page cache of a seed generation, whose page at offset A is the seed's
//! page at address A. Children map it `MAP_PRIVATE` at the seed's
//! addresses and share every page none of them wrote (see
//! [`crate::uffd::Uffd::map_from_file`]).

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, RawFd};
use std::os::unix::fs::FileExt;

use crate::{Result, SysError};

/// Size of every such file: offsets cover the user half of a 4-level x86-64
/// address space (47 bits). Shmem files are sparse: only written pages cost.
pub const ADDRESS_SPACE: u64 = 1 << 47;

#[derive(Debug)]
pub struct SparseFile {
    file: File,
}

impl SparseFile {
    /// A new memfd named `name` (shown in `/proc/PID/maps` of the
    /// processes that map it), [`ADDRESS_SPACE`] bytes long, close-on-exec.
    pub fn create(name: &std::ffi::CStr) -> Result<SparseFile> {
        // SAFETY: memfd_create with a valid name returns a new descriptor of ours.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(SysError::last("memfd_create"));
        }
        // SAFETY: a fresh descriptor nobody else owns.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(ADDRESS_SPACE).map_err(|e| SysError::new("ftruncate(memfd)", e.raw_os_error().unwrap_or(libc::EIO)))?;
        Ok(SparseFile { file })
    }

    /// Writes `bytes` at `offset` (page aligned, whole pages).
    pub fn write_at(&self, offset: u64, bytes: &[u8]) -> Result<()> {
        self.file.write_all_at(bytes, offset).map_err(|e| SysError::new("pwrite(memfd)", e.raw_os_error().unwrap_or(libc::EIO)))
    }

    /// Reads `out.len()` bytes at `offset`: zeros where nothing was written.
    pub fn read_at(&self, offset: u64, out: &mut [u8]) -> Result<()> {
        self.file.read_exact_at(out, offset).map_err(|e| SysError::new("pread(memfd)", e.raw_os_error().unwrap_or(libc::EIO)))
    }

    /// Gives back the pages of `[offset, offset+len)`: the file reads zero
    /// there again, and every process that mapped them without writing
    /// them loses them (its next touch faults; pages it wrote are its own
    /// and stay).
    pub fn punch(&self, offset: u64, len: u64) -> Result<()> {
        let (Ok(off), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Err(SysError::new("fallocate(PUNCH_HOLE)", libc::EINVAL));
        };
        // SAFETY: plain syscall on our own descriptor.
        let r = unsafe { libc::fallocate(self.file.as_raw_fd(), libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, off, len) };
        if r < 0 {
            return Err(SysError::last("fallocate(PUNCH_HOLE)"));
        }
        Ok(())
    }

    pub fn raw(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl AsFd for SparseFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PAGE;

    #[test]
    fn writes_read_back_holes_read_zero_and_punching_empties() {
        let f = SparseFile::create(c"test").unwrap();
        let high = 0x7fff_0000_0000;
        f.write_at(high, &[7u8; 4096]).unwrap();
        let mut out = vec![1u8; usize::try_from(2 * PAGE).unwrap()];
        f.read_at(high, &mut out).unwrap();
        assert!(out[..4096].iter().all(|&b| b == 7) && out[4096..].iter().all(|&b| b == 0));
        f.punch(0, ADDRESS_SPACE).unwrap();
        f.read_at(high, &mut out).unwrap();
        assert!(out.iter().all(|&b| b == 0));
    }
}
