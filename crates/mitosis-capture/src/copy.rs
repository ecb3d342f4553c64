//! Prepare's copy mode: the snapshot's memory copied into the caller (the
//! daemon), so that the seed no longer needs its snapshot process.

use std::os::unix::fs::FileExt;

use mitosis_proto::image::{SeedImage, VmaKind};
use mitosis_sys::procfs::pagemap;
use mitosis_sys::{usize_of, SysError, PAGE};

/// A seed's memory held in the daemon: runs of bytes by address. Addresses
/// of the seed's mappings outside every run read as zero (pages the snapshot
/// never had: untouched anonymous memory).
#[derive(Debug, Default)]
pub struct CopiedMemory {
    /// (start address, bytes), sorted by address, not overlapping.
    runs: Vec<(u64, Vec<u8>)>,
}

impl CopiedMemory {
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.runs.iter().map(|r| r.1.len() as u64).sum()
    }

    /// Copies `ranges` back to back into `out` (zero where nothing was copied).
    pub fn read(&self, ranges: &[(u64, u64)], out: &mut [u8]) {
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
            VmaKind::Anon => {
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
            VmaKind::Vdso | VmaKind::Vsyscall => {}
        }
    }
    let mut runs = Vec::with_capacity(wanted.len());
    for (start, end) in wanted {
        let mut bytes = vec![0u8; usize_of(end - start)];
        mitosis_sys::mem::read_ranges_fully(pid, None, &[(start, end - start)], &mut bytes)?;
        runs.push((start, bytes));
    }
    Ok(CopiedMemory { runs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_runs_and_zero_between_them() {
        let m = CopiedMemory { runs: vec![(0x1000, vec![1; 0x1000]), (0x3000, vec![3; 0x2000])] };
        let mut out = vec![9u8; 0x5000];
        m.read(&[(0x1000, 0x5000)], &mut out);
        assert!(out[..0x1000].iter().all(|&b| b == 1));
        assert!(out[0x1000..0x2000].iter().all(|&b| b == 0), "a page never copied reads zero");
        assert!(out[0x2000..0x4000].iter().all(|&b| b == 3));
        assert!(out[0x4000..].iter().all(|&b| b == 0));
        let mut two = vec![0u8; 0x2000];
        m.read(&[(0x4000, 0x1000), (0x1000, 0x1000)], &mut two);
        assert!(two[..0x1000].iter().all(|&b| b == 3) && two[0x1000..].iter().all(|&b| b == 1));
        assert_eq!(m.bytes(), 0x3000);
    }
}
