//! Prepare's copy mode: the snapshot's memory copied into the caller (the
//! daemon), so that the seed no longer needs its snapshot process.

use std::os::unix::fs::FileExt;

use mitosis_proto::image::{SeedImage, VmaKind};
use mitosis_sys::procfs::pagemap;
use mitosis_sys::{usize_of, SysError, PAGE};

/// A seed's memory held in the daemon: runs of bytes by address. Addresses
/// of the seed's mappings outside every run read as zero (pages the snapshot
/// never had: untouched anonymous memory), except the pages the snapshot
/// itself could not read (a file mapping past its file's end, where the seed
/// would get SIGBUS): asking for those is an error, never zeros.
#[derive(Debug, Default)]
pub struct CopiedMemory {
    /// (start address, bytes), sorted by address, not overlapping.
    runs: Vec<(u64, Vec<u8>)>,
    /// Page addresses the snapshot could not read, sorted.
    unreadable: Vec<u64>,
}

impl CopiedMemory {
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.runs.iter().map(|r| r.1.len() as u64).sum()
    }

    /// Copies `ranges` back to back into `out` (zero where nothing was
    /// copied); fails, naming the page, if a range holds a page the snapshot
    /// could not read.
    pub fn read(&self, ranges: &[(u64, u64)], out: &mut [u8]) -> Result<(), u64> {
        for &(addr, len) in ranges {
            let first = self.unreadable.partition_point(|&p| p < addr);
            if let Some(&page) = self.unreadable.get(first).filter(|&&p| p < addr + len) {
                return Err(page);
            }
        }
        let mut off = 0usize;
        for &(addr, len) in ranges {
            let dst = &mut out[off..off + usize_of(len)];
            dst.fill(0);
            // The first run that ends after `addr`.
            let first = self.runs.partition_point(|(s, b)| s + b.len() as u64 <= addr);
            for (start, bytes) in &self.runs[first..] {
                if *start >= addr + len {
                    break;
                }
                let from = addr.max(*start);
                let to = (addr + len).min(start + bytes.len() as u64);
                dst[usize_of(from - addr)..usize_of(to - addr)]
                    .copy_from_slice(&bytes[usize_of(from - start)..usize_of(to - start)]);
            }
            off += usize_of(len);
        }
        Ok(())
    }
}

/// Copies what children of `image` can ask for from snapshot `pid`: the
/// present (or swapped) pages of anonymous mappings, and the whole of file
/// and opaque mappings (their pages not in the page tables still have the
/// file's content, and a child on a host without the same file asks for them).
pub fn copy_memory(pid: i32, image: &SeedImage) -> Result<CopiedMemory, SysError> {
    let pm = std::fs::File::open(format!("/proc/{pid}/pagemap")).map_err(|e| SysError::new("open pagemap", e.raw_os_error().unwrap_or(0)))?;
    let mut wanted: Vec<(u64, u64)> = Vec::new();
    let mut push = |start: u64, end: u64| match wanted.last_mut() {
        Some(last) if last.1 == start => last.1 = end,
        _ => wanted.push((start, end)),
    };
    let mut entries = Vec::new();
    for v in &image.vmas {
        match v.kind {
            // The snapshot holds shared anonymous memory as a private copy.
            VmaKind::Anon | VmaKind::SharedAnon => {
                entries.resize(usize_of(v.pages()) * 8, 0);
                pm.read_exact_at(&mut entries, v.start / PAGE * 8)
                    .map_err(|e| SysError::new("read pagemap", e.raw_os_error().unwrap_or(0)))?;
                for (i, e) in entries.chunks_exact(8).enumerate() {
                    let e = u64::from_ne_bytes(e.try_into().expect("8 bytes"));
                    if e & (pagemap::PRESENT | pagemap::SWAPPED) != 0 {
                        let addr = v.start + i as u64 * PAGE;
                        push(addr, addr + PAGE);
                    }
                }
            }
            VmaKind::File { .. } | VmaKind::Opaque { .. } => push(v.start, v.end),
            // Mapped from the file itself in a child: nothing to copy.
            VmaKind::Vdso | VmaKind::Vsyscall | VmaKind::SharedFile { .. } => {}
        }
    }
    let mut runs = Vec::with_capacity(wanted.len());
    let mut unreadable = Vec::new();
    for (start, end) in wanted {
        let mut bytes = vec![0u8; usize_of(end - start)];
        match mitosis_sys::mem::read_ranges_fully(pid, None, &[(start, end - start)], &mut bytes) {
            Ok(()) => runs.push((start, bytes)),
            // Some page of the run cannot be read (EIO: a file mapping past
            // its file's end): the run is copied page by page around it.
            Err(e) if e.errno == libc::EIO || e.errno == libc::EFAULT => {
                copy_by_page(pid, start, end, &mut runs, &mut unreadable)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(CopiedMemory { runs, unreadable })
}

/// Copies `start..end` one page at a time: readable pages into runs, the
/// others' addresses into `unreadable`.
fn copy_by_page(pid: i32, start: u64, end: u64, runs: &mut Vec<(u64, Vec<u8>)>, unreadable: &mut Vec<u64>) -> Result<(), SysError> {
    let mut page = vec![0u8; usize_of(PAGE)];
    let mut run: Option<(u64, Vec<u8>)> = None;
    for addr in (start..end).step_by(usize_of(PAGE)) {
        match mitosis_sys::mem::read_ranges_fully(pid, None, &[(addr, PAGE)], &mut page) {
            Ok(()) => match &mut run {
                Some((_, bytes)) => bytes.extend_from_slice(&page),
                None => run = Some((addr, page.clone())),
            },
            Err(e) if e.errno == libc::EIO || e.errno == libc::EFAULT => {
                runs.extend(run.take());
                unreadable.push(addr);
            }
            Err(e) => return Err(e),
        }
    }
    runs.extend(run);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_runs_and_zero_between_them() {
        let m = CopiedMemory { runs: vec![(0x1000, vec![1; 0x1000]), (0x3000, vec![3; 0x2000])], unreadable: vec![0x9000] };
        let mut out = vec![9u8; 0x5000];
        m.read(&[(0x1000, 0x5000)], &mut out).unwrap();
        assert!(out[..0x1000].iter().all(|&b| b == 1));
        assert!(out[0x1000..0x2000].iter().all(|&b| b == 0), "a page never copied reads zero");
        assert!(out[0x2000..0x4000].iter().all(|&b| b == 3));
        assert!(out[0x4000..].iter().all(|&b| b == 0));
        let mut two = vec![0u8; 0x2000];
        m.read(&[(0x4000, 0x1000), (0x1000, 0x1000)], &mut two).unwrap();
        assert!(two[..0x1000].iter().all(|&b| b == 3) && two[0x1000..].iter().all(|&b| b == 1));
        assert_eq!(m.bytes(), 0x3000);
        let mut page = vec![0u8; 0x2000];
        assert_eq!(m.read(&[(0x8000, 0x2000)], &mut page), Err(0x9000), "an unreadable page is an error, never zeros");
    }
}
