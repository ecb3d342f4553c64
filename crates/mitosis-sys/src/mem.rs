//! Reading and writing another process's memory.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::{Result, SysError};

/// Most iovecs one `process_vm_readv` takes (`UIO_MAXIOV`).
const MAX_IOV: usize = 1024;

/// Reads `ranges` (remote address, length) of process `pid` back to back into `out`
/// with `process_vm_readv`. Returns the number of bytes read, which is short when
/// a range is not readable (unmapped or `PROT_NONE`).
pub fn read_ranges(pid: i32, ranges: &[(u64, u64)], out: &mut [u8]) -> Result<usize> {
    let mut done = 0usize;
    let mut idx = 0;
    while idx < ranges.len() {
        let batch = &ranges[idx..(idx + MAX_IOV).min(ranges.len())];
        let want: usize = batch.iter().map(|r| crate::usize_of(r.1)).sum();
        let local = libc::iovec { iov_base: out[done..].as_mut_ptr().cast(), iov_len: want };
        let remote: Vec<libc::iovec> = batch
            .iter()
            .map(|&(a, l)| libc::iovec { iov_base: a as *mut libc::c_void, iov_len: crate::usize_of(l) })
            .collect();
        // SAFETY: `local` points into `out`, which has room for `want` bytes past `done`
        // (the caller sized it for all ranges); remote iovecs are only read by the kernel.
        let n = unsafe { libc::process_vm_readv(pid, &local, 1, remote.as_ptr(), remote.len() as u64, 0) };
        if n < 0 {
            let e = SysError::last("process_vm_readv");
            // The first range is unreadable (PROT_NONE, say): report what was read so
            // far and let the caller take the rest another way.
            if e.errno == libc::EFAULT {
                return Ok(done);
            }
            return Err(e);
        }
        // n >= 0 here: failures returned above.
        let n = n.unsigned_abs();
        done += n;
        if n < want {
            return Ok(done);
        }
        idx += batch.len();
    }
    Ok(done)
}

/// `/proc/PID/mem`, which also reaches pages the process itself may not read
/// (`PROT_NONE`) and writes through read-only private mappings (copy-on-write).
pub struct ProcMem(File);

impl ProcMem {
    pub fn open(pid: i32, write: bool) -> Result<ProcMem> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .open(format!("/proc/{pid}/mem"))
            .map_err(|e| SysError::new("open /proc/PID/mem", e.raw_os_error().unwrap_or(0)))?;
        Ok(ProcMem(f))
    }

    pub fn read_exact_at(&self, buf: &mut [u8], addr: u64) -> Result<()> {
        self.0
            .read_exact_at(buf, addr)
            .map_err(|e| SysError::new("read /proc/PID/mem", e.raw_os_error().unwrap_or(libc::EIO)))
    }

    pub fn write_all_at(&self, buf: &[u8], addr: u64) -> Result<()> {
        self.0
            .write_all_at(buf, addr)
            .map_err(|e| SysError::new("write /proc/PID/mem", e.raw_os_error().unwrap_or(libc::EIO)))
    }
}

/// Reads `ranges` fully: `process_vm_readv` first, `/proc/PID/mem` for what it could not reach.
pub fn read_ranges_fully(pid: i32, mem: Option<&ProcMem>, ranges: &[(u64, u64)], out: &mut [u8]) -> Result<()> {
    let got = read_ranges(pid, ranges, out)?;
    let total: usize = ranges.iter().map(|r| crate::usize_of(r.1)).sum();
    if got == total {
        return Ok(());
    }
    let owned;
    let mem = match mem {
        Some(m) => m,
        None => {
            owned = ProcMem::open(pid, false)?;
            &owned
        }
    };
    let mut off = 0usize;
    for &(addr, len) in ranges {
        let len = crate::usize_of(len);
        if off + len > got {
            let start = got.max(off);
            let skip = (start - off) as u64;
            mem.read_exact_at(&mut out[start..off + len], addr + skip)?;
        }
        off += len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_memory() {
        let data: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
        let pid = i32::try_from(std::process::id()).unwrap();
        let a = data.as_ptr() as u64;
        let mut out = vec![0u8; 300];
        let n = read_ranges(pid, &[(a + 10, 100), (a + 5000, 200)], &mut out).unwrap();
        assert_eq!(n, 300);
        assert_eq!(&out[..100], &data[10..110]);
        assert_eq!(&out[100..], &data[5000..5200]);
    }
}

/// A private anonymous read-write mapping of this process (`mmap`), unmapped
/// when dropped: the memory the benchmark workloads and pager tests fill,
/// touch and hand to a pager.
///
/// Its pages may be filled behind our back by a userfaultfd (missing pages
/// only, before any access completes), so word access goes through volatile
/// reads and writes, and [`AnonMap::words_mut`] needs `&mut self`.
#[derive(Debug)]
pub struct AnonMap {
    base: std::ptr::NonNull<u64>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; access follows
// the usual `&`/`&mut` rules of its methods.
unsafe impl Send for AnonMap {}
// SAFETY: shared access only reads (volatile reads of plain words).
unsafe impl Sync for AnonMap {}

impl AnonMap {
    /// Maps `len` bytes (rounded up to whole pages), zero-filled on first touch.
    pub fn new(len: usize) -> Result<AnonMap> {
        let page = usize::try_from(crate::PAGE).unwrap_or(4096);
        let len = len.max(1).div_ceil(page) * page;
        // SAFETY: a new anonymous private mapping at an address the kernel
        // picks; it overlaps nothing of ours.
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        if p == libc::MAP_FAILED {
            return Err(SysError::last("mmap"));
        }
        let base = std::ptr::NonNull::new(p.cast::<u64>()).ok_or(SysError::new("mmap", libc::ENOMEM))?;
        Ok(AnonMap { base, len })
    }

    /// The start address.
    pub fn addr(&self) -> u64 {
        self.base.as_ptr() as u64
    }

    /// The length in bytes (whole pages).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: a mapping has at least one page.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The number of 8-byte words.
    pub fn words(&self) -> usize {
        self.len / 8
    }

    /// Reads word `i` (a volatile read: it faults the page in, through a
    /// pager if one serves it). Panics when `i` is out of range.
    pub fn read(&self, i: usize) -> u64 {
        assert!(i < self.words(), "word {i} outside a mapping of {} words", self.words());
        // SAFETY: `i` is inside the mapping, which lives as long as `self`.
        unsafe { std::ptr::read_volatile(self.base.as_ptr().add(i)) }
    }

    /// Reads word `i` and writes it back plus `add` (volatile both): one
    /// read and one write fault at most. Panics when `i` is out of range.
    pub fn touch(&mut self, i: usize, add: u64) {
        assert!(i < self.words(), "word {i} outside a mapping of {} words", self.words());
        // SAFETY: `i` is inside the mapping; `&mut self` excludes other access.
        unsafe {
            let w = self.base.as_ptr().add(i);
            std::ptr::write_volatile(w, std::ptr::read_volatile(w).wrapping_add(add));
        }
    }

    /// All words, for filling and checking in bulk.
    pub fn words_mut(&mut self) -> &mut [u64] {
        // SAFETY: the mapping holds `words()` initialized (zero-filled or
        // written) u64s for the life of `self`; `&mut self` makes the slice
        // the only access.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr(), self.words()) }
    }

    /// Drops the pages of `[offset, offset+len)` (`MADV_DONTNEED`): they
    /// read as zero (or are missing again for a userfaultfd) afterwards.
    pub fn discard(&mut self, offset: usize, len: usize) -> Result<()> {
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(SysError::new("madvise", libc::EINVAL));
        }
        // SAFETY: the range lies inside our mapping and `&mut self` excludes
        // any reference into it.
        let r = unsafe { libc::madvise(self.base.as_ptr().cast::<u8>().add(offset).cast(), len, libc::MADV_DONTNEED) };
        if r != 0 {
            return Err(SysError::last("madvise"));
        }
        Ok(())
    }

    /// Makes `[offset, offset+len)` a guard region (`MADV_GUARD_INSTALL`,
    /// Linux 6.13): any access there raises SIGSEGV.
    pub fn guard(&mut self, offset: usize, len: usize) -> Result<()> {
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(SysError::new("madvise", libc::EINVAL));
        }
        // SAFETY: as in `discard`; no reference into the range survives (&mut self).
        let r = unsafe { libc::madvise(self.base.as_ptr().cast::<u8>().add(offset).cast(), len, MADV_GUARD_INSTALL) };
        if r != 0 {
            return Err(SysError::last("madvise(MADV_GUARD_INSTALL)"));
        }
        Ok(())
    }
}

/// `madvise` advice that installs guard regions (Linux 6.13).
pub const MADV_GUARD_INSTALL: i32 = 102;

/// `PAGEMAP_SCAN`: `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: u64 = 0xC060_6610;
/// `PAGEMAP_SCAN` page categories (`PAGE_IS_*` of `linux/fs.h`).
/// `PAGE_IS_WPALLOWED`: the mapping is registered for asynchronous write protection.
const PAGE_IS_WPALLOWED: u64 = 1 << 0;
const PAGE_IS_WRITTEN: u64 = 1 << 1;
const PAGE_IS_PRESENT: u64 = 1 << 3;
const PAGE_IS_SWAPPED: u64 = 1 << 4;
const PAGE_IS_PFNZERO: u64 = 1 << 5;
/// `PAGE_IS_GUARD`: a page of a guard region (Linux 6.14).
const PAGE_IS_GUARD: u64 = 1 << 8;

/// `struct pm_scan_arg`.
#[repr(C)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// `PM_SCAN_WP_MATCHING`: write-protect the pages reported.
const PM_SCAN_WP_MATCHING: u64 = 1 << 0;

/// Which pages `PAGEMAP_SCAN` reports, and which of their categories.
struct PageQuery {
    /// Every one of these categories.
    all_of: u64,
    /// At least one of these (0: no such condition).
    any_of: u64,
    /// The categories reported for each run.
    report: u64,
    /// `PM_SCAN_*` flags.
    flags: u64,
}

/// The runs of pages of process `pid` in `[start, end)` that match `query`,
/// as (start, end, categories), from its page tables (`PAGEMAP_SCAN` on its
/// `/proc/PID/pagemap`). Neighbouring pages with the same categories are
/// one run. Only queries: it touches no page.
fn scan_pages(pid: i32, start: u64, end: u64, query: &PageQuery) -> Result<Vec<(u64, u64, u64)>> {
    let pagemap = std::fs::File::open(format!("/proc/{pid}/pagemap")).map_err(|e| SysError::new("open pagemap", e.raw_os_error().unwrap_or(libc::EIO)))?;
    let mut out: Vec<(u64, u64, u64)> = Vec::new();
    let mut regions = [[0u64; 3]; 256];
    let mut from = start;
    while from < end {
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            flags: query.flags,
            start: from,
            end,
            walk_end: 0,
            vec: regions.as_mut_ptr() as u64,
            vec_len: regions.len() as u64,
            max_pages: 0,
            category_inverted: 0,
            category_mask: query.all_of,
            category_anyof_mask: query.any_of,
            return_mask: query.report,
        };
        // SAFETY: `arg` is a valid pm_scan_arg whose `vec` points at `regions`,
        // room for `vec_len` page_region structs (three u64 each).
        let n = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&pagemap), PAGEMAP_SCAN as _, &mut arg) };
        if n < 0 {
            return Err(SysError::last("ioctl(PAGEMAP_SCAN)"));
        }
        for r in &regions[..n.unsigned_abs() as usize] {
            match out.last_mut() {
                Some(last) if last.1 == r[0] && last.2 == r[2] => last.1 = r[1],
                _ => out.push((r[0], r[1], r[2])),
            }
        }
        if arg.walk_end <= from {
            break;
        }
        from = arg.walk_end;
    }
    Ok(out)
}

/// The guard regions (`MADV_GUARD_INSTALL`) of process `pid` in
/// `[start, end)`, as ranges.
pub fn guard_regions(pid: i32, start: u64, end: u64) -> Result<Vec<(u64, u64)>> {
    let query = PageQuery { all_of: PAGE_IS_GUARD, any_of: 0, report: PAGE_IS_GUARD, flags: 0 };
    Ok(joined(scan_pages(pid, start, end, &query)?))
}

/// The ranges of scanned runs, touching ones joined (their categories dropped).
fn joined(runs: Vec<(u64, u64, u64)>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (s, e, _) in runs {
        match out.last_mut() {
            Some(last) if last.1 == s => last.1 = e,
            _ => out.push((s, e)),
        }
    }
    out
}

/// A run of pages of another process that hold memory (present, or swapped out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResidentRun {
    pub start: u64,
    pub end: u64,
    /// Written since they were put there write-protected (in a range
    /// registered with a userfaultfd's `track_writes` and
    /// [`crate::uffd::features::WP_ASYNC`]). Pages never write-protected
    /// (anywhere else, or zero-filled) always count as written.
    pub written: bool,
    /// The shared zero page: reads zero, holds no memory of its own.
    pub zero_page: bool,
}

/// The pages of process `pid` in `[start, end)` that hold memory, in runs.
pub fn resident_runs(pid: i32, start: u64, end: u64) -> Result<Vec<ResidentRun>> {
    let query = PageQuery {
        all_of: 0,
        any_of: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
        report: PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_WRITTEN | PAGE_IS_PFNZERO,
        flags: 0,
    };
    Ok(scan_pages(pid, start, end, &query)?
        .into_iter()
        .map(|(start, end, c)| ResidentRun { start, end, written: c & PAGE_IS_WRITTEN != 0, zero_page: c & PAGE_IS_PFNZERO != 0 })
        .collect())
}

/// The end of x86-64 user address space (47-bit), for a scan of all of it.
pub const USER_END: u64 = 0x7fff_ffff_f000;

/// The pages of process `pid` in `[start, end)` written since they were
/// last write-protected, as runs (start, end), write-protected again in the
/// same step: each call returns what was written since the one before (a
/// *barrier*). Only memory registered with a userfaultfd for asynchronous
/// write protection (`UFFD_FEATURE_WP_ASYNC`: the kernel resolves the write
/// faults itself) is looked at; the kernel skips every other mapping
/// without walking it, so one call over `[0, USER_END)` scans a whole
/// process.
pub fn take_written_runs(pid: i32, start: u64, end: u64) -> Result<Vec<(u64, u64)>> {
    let query = PageQuery { all_of: PAGE_IS_WPALLOWED | PAGE_IS_WRITTEN | PAGE_IS_PRESENT, any_of: 0, report: PAGE_IS_WRITTEN, flags: PM_SCAN_WP_MATCHING };
    Ok(joined(scan_pages(pid, start, end, &query)?))
}

impl Drop for AnonMap {
    fn drop(&mut self) {
        // SAFETY: our own mapping, no longer referenced.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// Which pages of `[addr, addr+len)` of this process are resident
/// (`mincore`): bit 0 of `out[i]` for page `i`. `addr` must be page-aligned;
/// unmapped pages fail with ENOMEM. Only queries: it touches no page.
pub fn resident_pages(addr: u64, len: usize, out: &mut [u8]) -> Result<()> {
    let page = usize::try_from(crate::PAGE).unwrap_or(4096);
    if out.len() < len.div_ceil(page) {
        return Err(SysError::new("mincore", libc::EINVAL));
    }
    let addr = usize::try_from(addr).map_err(|_| SysError::new("mincore", libc::EINVAL))?;
    // SAFETY: mincore reads no memory at `addr` (it asks the kernel about the
    // page tables) and writes one byte per page into `out`, which has room.
    if unsafe { libc::mincore(addr as *mut libc::c_void, len, out.as_mut_ptr()) } != 0 {
        return Err(SysError::last("mincore"));
    }
    Ok(())
}

#[cfg(test)]
mod anon_tests {
    use super::*;

    #[test]
    fn anon_map_reads_touches_discards_and_reports_residency() {
        let mut m = AnonMap::new(3 * 4096 + 1).unwrap();
        assert_eq!(m.len(), 4 * 4096);
        assert_eq!(m.addr() % 4096, 0);
        let mut res = vec![0u8; 4];
        resident_pages(m.addr(), m.len(), &mut res).unwrap();
        assert!(res.iter().all(|b| b & 1 == 0), "nothing touched yet: {res:?}");
        m.touch(512, 5);
        assert_eq!(m.read(512), 5);
        resident_pages(m.addr(), m.len(), &mut res).unwrap();
        assert_eq!(res.iter().map(|b| b & 1).collect::<Vec<_>>(), [0, 1, 0, 0]);
        m.words_mut().fill(9);
        assert_eq!(m.read(m.words() - 1), 9);
        m.discard(4096, 4096).unwrap();
        assert_eq!((m.read(511), m.read(512), m.read(1024)), (9, 0, 9));
        assert_eq!(m.discard(4096, 4 * 4096).unwrap_err().errno, libc::EINVAL);
        assert_eq!(resident_pages(m.addr(), m.len(), &mut [0u8; 2]).unwrap_err().errno, libc::EINVAL);
        let addr = m.addr();
        drop(m);
        // Gone: the kernel says so (unless something else got mapped there).
        let _ = resident_pages(addr, 4096, &mut [0u8; 1]);
    }

    #[test]
    #[should_panic(expected = "outside a mapping")]
    fn anon_map_checks_bounds() {
        let m = AnonMap::new(4096).unwrap();
        m.read(512);
    }
}

/// The runs `(start, end)` of `[start, end)` of `file` that hold data
/// (`lseek` with `SEEK_DATA` and `SEEK_HOLE`): a sparse file's or a shared
/// memory object's pages that were ever written, without reading (or, for
/// shared memory, allocating) the holes. A file system that does not know
/// holes reports everything up to the file's end as data.
pub fn data_runs(file: &File, start: u64, end: u64) -> Result<Vec<(u64, u64)>> {
    use std::os::fd::AsRawFd;
    let seek = |at: u64, whence: i32| -> Result<Option<u64>> {
        let at = i64::try_from(at).map_err(|_| SysError::new("lseek", libc::EINVAL))?;
        // SAFETY: lseek takes integers and moves only the offset of our own descriptor.
        let r = unsafe { libc::lseek(file.as_raw_fd(), at, whence) };
        match u64::try_from(r) {
            Ok(r) => Ok(Some(r)),
            // No data at or after `at` (SEEK_DATA past the last data).
            Err(_) if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) => Ok(None),
            Err(_) => Err(SysError::last("lseek")),
        }
    };
    let mut runs = Vec::new();
    let mut at = start;
    while at < end {
        let Some(data) = seek(at, libc::SEEK_DATA)? else { break };
        if data >= end {
            break;
        }
        let hole = seek(data, libc::SEEK_HOLE)?.unwrap_or(end).min(end);
        runs.push((data, hole));
        at = hole;
    }
    Ok(runs)
}

#[cfg(test)]
mod data_run_tests {
    use super::*;

    #[test]
    fn data_runs_skip_holes_of_a_sparse_memfd() {
        // SAFETY: memfd_create with a valid name; the descriptor is owned by the File.
        let fd = unsafe { libc::memfd_create(c"holes".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: a fresh descriptor nobody else owns.
        let f = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        f.set_len(16 * 4096).unwrap();
        f.write_all_at(b"x", 2 * 4096 + 5).unwrap();
        f.write_all_at(&[7u8; 8192], 9 * 4096).unwrap();
        assert_eq!(data_runs(&f, 0, 16 * 4096).unwrap(), [(2 * 4096, 3 * 4096), (9 * 4096, 11 * 4096)]);
        assert_eq!(data_runs(&f, 10 * 4096, 16 * 4096).unwrap(), [(10 * 4096, 11 * 4096)]);
        assert_eq!(data_runs(&f, 0, 9 * 4096 + 4096).unwrap(), [(2 * 4096, 3 * 4096), (9 * 4096, 10 * 4096)]);
        assert!(data_runs(&f, 12 * 4096, 16 * 4096).unwrap().is_empty());
    }
}

#[cfg(test)]
mod guard_tests {
    use super::*;

    #[test]
    fn guard_regions_are_found_in_the_page_tables() {
        let mut map = AnonMap::new(16 * 4096).unwrap();
        map.words_mut()[0] = 1;
        map.guard(4 * 4096, 2 * 4096).unwrap();
        map.guard(9 * 4096, 4096).unwrap();
        let me = i32::try_from(std::process::id()).unwrap();
        let found = guard_regions(me, map.addr(), map.addr() + 16 * 4096).unwrap();
        let base = map.addr();
        assert_eq!(found, [(base + 4 * 4096, base + 6 * 4096), (base + 9 * 4096, base + 10 * 4096)]);
        assert!(guard_regions(me, base, base + 4 * 4096).unwrap().is_empty());
    }
}
