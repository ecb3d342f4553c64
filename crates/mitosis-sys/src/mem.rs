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
        let want: usize = batch.iter().map(|r| r.1 as usize).sum();
        let local = libc::iovec { iov_base: out[done..].as_mut_ptr().cast(), iov_len: want };
        let remote: Vec<libc::iovec> = batch
            .iter()
            .map(|&(a, l)| libc::iovec { iov_base: a as *mut libc::c_void, iov_len: l as usize })
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
        done += n as usize;
        if (n as usize) < want {
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
    let total: usize = ranges.iter().map(|r| r.1 as usize).sum();
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
        let len = len as usize;
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
        let pid = std::process::id() as i32;
        let a = data.as_ptr() as u64;
        let mut out = vec![0u8; 300];
        let n = read_ranges(pid, &[(a + 10, 100), (a + 5000, 200)], &mut out).unwrap();
        assert_eq!(n, 300);
        assert_eq!(&out[..100], &data[10..110]);
        assert_eq!(&out[100..], &data[5000..5200]);
    }
}
