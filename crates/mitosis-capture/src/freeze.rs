//! Holding a running process still from outside, and dropping pages of its
//! memory meanwhile: what an offload of an idle child needs.
//!
//! Every thread is stopped as for a prepare ([`crate::threads`]), so that no
//! page changes while the daemon decides what to drop; the drop itself is
//! `madvise(MADV_DONTNEED)` run inside the process (another process cannot
//! drop its pages: `process_madvise` refuses `MADV_DONTNEED`). Thawing gives
//! every thread its registers back, and a thread that was blocked in a
//! system call goes on waiting in it.
//!
//! A process that no pager serves yet (a cold-started instance) is taken
//! over while frozen: [`Frozen::adopt_userfaultfd`] makes a userfaultfd for
//! its memory inside it and hands it to the daemon.

use std::os::fd::{AsRawFd, OwnedFd};

use mitosis_sys::fdpass::{self, RemoteRecv};
use mitosis_sys::mem::ProcMem;
use mitosis_sys::vdso::VdsoInfo;
use mitosis_sys::{pidfd, procfs, uffd, PAGE};

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

    /// Runs system call `nr` inside the process; its result, or what it
    /// was for and why it failed.
    fn call(&self, nr: i64, args: &[u64], what: &str) -> Result<u64, CaptureError> {
        let leader = &self.set.leader;
        let r = leader.tracee.inject_syscall(&leader.regs, self.gadget, nr, args, |_, _| Ok(())).map_err(CaptureError::sys("running a call inside a frozen process"))?;
        u64::try_from(r).map_err(|_| CaptureError::Adopt {
            pid: self.pid,
            what: format!("{what} failed inside it: {}", std::io::Error::from_raw_os_error(crate::errno_of(r))),
        })
    }

    /// Makes a userfaultfd for the process's memory, inside the process,
    /// and returns the daemon's copy of it (`O_CLOEXEC | O_NONBLOCK`, no
    /// `UFFDIO_API` yet): the daemon can then register and serve the
    /// process's memory as it does a resumed child's.
    ///
    /// Only the process itself can make a userfaultfd for its memory, and a
    /// process running as an unprivileged user may not: the system call
    /// needs `CAP_SYS_PTRACE` (or `vm.unprivileged_userfaultfd`, which this
    /// does not ask an administrator to turn on), and `/dev/userfaultfd` is
    /// root's. So `device`, the daemon's descriptor of `/dev/userfaultfd`,
    /// is passed in over a socket pair made inside the process, and the
    /// process calls `USERFAULTFD_IOC_NEW` on it. Every descriptor this
    /// makes in the process, and the page it borrows, is closed or unmapped
    /// again before this returns, whether it worked or not: the process's
    /// own code, frozen all the while, never holds any of them.
    ///
    /// If a descriptor of the takeover might still be in the process
    /// afterwards (one that arrived but could not be read back, and could
    /// not be closed), the error is [`CaptureError::LeftDescriptors`]: the
    /// process must not run on.
    pub fn adopt_userfaultfd(&self, process: &OwnedFd, device: &OwnedFd) -> Result<OwnedFd, CaptureError> {
        let before = self.descriptors()?;
        let anon = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let scratch = self.call(libc::SYS_mmap, &[0, PAGE, rw, anon, u64::MAX, 0], "mapping a scratch page")?;
        let result = self.adopt_with(process, device, scratch);
        let unmapped = self.call(libc::SYS_munmap, &[scratch, PAGE], "unmapping the scratch page");
        // Every descriptor the takeover made (the process, frozen, made none).
        self.close_new_descriptors(&before)?;
        let uffd = result?;
        unmapped?;
        Ok(uffd)
    }

    /// The descriptor numbers the process holds.
    fn descriptors(&self) -> Result<std::collections::BTreeSet<u64>, CaptureError> {
        let dir = std::fs::read_dir(format!("/proc/{}/fd", self.pid)).map_err(|_| CaptureError::NoProcess { pid: self.pid })?;
        Ok(dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
    }

    /// Closes every descriptor the process holds that it did not hold
    /// before (`before`): none of the takeover's may stay with it.
    fn close_new_descriptors(&self, before: &std::collections::BTreeSet<u64>) -> Result<(), CaptureError> {
        let leaked = || CaptureError::LeftDescriptors { pid: self.pid };
        for &fd in self.descriptors().map_err(|_| leaked())?.difference(before) {
            let _ = self.call(libc::SYS_close, &[fd], "closing a descriptor of the takeover");
        }
        match self.descriptors() {
            Ok(now) if now.is_subset(before) => Ok(()),
            _ => Err(leaked()),
        }
    }

    fn adopt_with(&self, process: &OwnedFd, device: &OwnedFd, scratch: u64) -> Result<OwnedFd, CaptureError> {
        let adopt = |what: String| CaptureError::Adopt { pid: self.pid, what };
        let mem = ProcMem::open(self.pid, true).map_err(CaptureError::sys("opening a frozen process's memory"))?;
        let stream = (libc::SOCK_DGRAM | libc::SOCK_CLOEXEC) as u64;
        self.call(libc::SYS_socketpair, &[libc::AF_UNIX as u64, stream, 0, scratch], "socketpair")?;
        let mut pair = [0u8; 8];
        mem.read_exact_at(&mut pair, scratch).map_err(CaptureError::sys("reading a frozen process's socket pair"))?;
        let [ours_in_it, its_end] = [&pair[..4], &pair[4..]].map(|b| i32::from_ne_bytes(b.try_into().unwrap_or_default()));
        let fd_arg = |fd: i32| u64::try_from(fd).map_err(|_| adopt(format!("socketpair gave descriptor {fd}")));
        let sender = pidfd::getfd(process, ours_in_it).map_err(CaptureError::sys("taking a frozen process's end of its socket pair"))?;
        fdpass::send_with_fds(&sender, b"u", &[device.as_raw_fd()]).map_err(CaptureError::sys("sending /dev/userfaultfd to a frozen process"))?;
        drop(sender);
        let recv = RemoteRecv::new(scratch + 64);
        mem.write_all_at(&recv.image(), scratch + 64).map_err(CaptureError::sys("writing a recvmsg into a frozen process"))?;
        self.call(libc::SYS_recvmsg, &[fd_arg(its_end)?, recv.msghdr_addr(), libc::MSG_CMSG_CLOEXEC as u64], "recvmsg")?;
        let mut image = vec![0u8; RemoteRecv::LEN];
        mem.read_exact_at(&mut image, scratch + 64).map_err(CaptureError::sys("reading a frozen process's recvmsg"))?;
        let device_in_it = recv.received_fd(&image).ok_or_else(|| adopt("/dev/userfaultfd did not arrive whole".into()))?;
        let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
        let uffd_in_it = self.call(libc::SYS_ioctl, &[fd_arg(device_in_it)?, uffd::USERFAULTFD_IOC_NEW, flags], "USERFAULTFD_IOC_NEW")?;
        let uffd_in_it = i32::try_from(uffd_in_it).map_err(|_| adopt(format!("USERFAULTFD_IOC_NEW gave descriptor {uffd_in_it}")))?;
        pidfd::getfd(process, uffd_in_it).map_err(CaptureError::sys("taking the userfaultfd made inside a frozen process"))
    }

    /// Lets every thread go on where it was.
    pub fn thaw(self) -> Result<(), CaptureError> {
        self.set.release()
    }
}
