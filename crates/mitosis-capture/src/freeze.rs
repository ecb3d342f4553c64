//! Holding a running process still from outside, and dropping pages of its
//! memory meanwhile: what an offload of an idle child needs.
//!
//! Every thread is stopped as for a prepare ([`crate::threads`]), so that no
//! page changes while the daemon decides what to drop; the drop itself is
//! `madvise(MADV_DONTNEED)` run inside the process (another process cannot
//! drop its pages: `process_madvise` refuses `MADV_DONTNEED`). Thawing gives
//! every thread its registers back, and a thread that was blocked in a
//! system call goes on waiting in it.

use mitosis_sys::procfs;
use mitosis_sys::vdso::VdsoInfo;

use crate::threads::{seize_all, ThreadSet};
use crate::{read_proc, CaptureError};

/// A process with every thread stopped.
pub struct Frozen {
    pid: i32,
    set: ThreadSet,
    /// A `syscall` instruction in its vDSO.
    gadget: u64,
}

impl Frozen {
    /// Stops every thread of `pid`.
    pub fn freeze(pid: i32, vdso: &VdsoInfo) -> Result<Frozen, CaptureError> {
        let maps = procfs::parse_maps(&read_proc(pid, "maps")?).map_err(|what| CaptureError::Unsupported { pid, what })?;
        let gadget = crate::syscall_gadget(pid, &maps, vdso)?;
        let set = seize_all(pid, 0)?;
        Ok(Frozen { pid, set, gadget })
    }

    /// Drops the pages of `ranges` (start, end) from its memory.
    pub fn discard(&self, ranges: &[(u64, u64)]) -> Result<(), CaptureError> {
        let leader = &self.set.leader;
        for &(start, end) in ranges {
            let r = leader
                .tracee
                .inject_syscall(&leader.regs, self.gadget, libc::SYS_madvise, &[start, end - start, libc::MADV_DONTNEED as u64], |_, _| Ok(()))
                .map_err(CaptureError::sys("dropping pages"))?;
            if r < 0 {
                return Err(CaptureError::Unsupported {
                    pid: self.pid,
                    what: format!("madvise(MADV_DONTNEED) of {start:#x}-{end:#x} failed: {}", std::io::Error::from_raw_os_error(crate::errno_of(r))),
                });
            }
        }
        Ok(())
    }

    /// Lets every thread go on where it was.
    pub fn thaw(self) -> Result<(), CaptureError> {
        self.set.release()
    }
}
