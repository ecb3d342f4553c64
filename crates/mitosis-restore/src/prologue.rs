//! What a freshly forked child does by itself before the daemon takes it over.
//!
//! It runs in a freshly forked child and makes raw syscalls only (no
//! allocation, no locks, no panics), so that it is also safe in a child of a
//! multi-threaded process. Every input is prepared before the fork. On
//! failure it exits with a [`PrologueExit`] code that the daemon turns into a
//! message.

use std::os::fd::RawFd;

use serde::{Deserialize, Serialize};

use mitosis_proto::image::{FileIdentity, IdentityMatch, SigAction};
use mitosis_sys::fsid;

use crate::plan::RestorePlan;

/// Exit codes of a failed prologue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum PrologueExit {
    ParentGone = 90,
    Stdio = 91,
    Userfaultfd = 92,
    OpenFile = 93,
    Chdir = 94,
    Signals = 95,
    Credentials = 96,
    Container = 97,
    FileChanged = 98,
}

impl PrologueExit {
    pub fn describe(code: i32) -> Option<&'static str> {
        Some(match code {
            90 => "the daemon thread that forked it went away",
            91 => "could not install the resumer's stdio",
            92 => "could not create a userfaultfd (an unprivileged user needs vm.unprivileged_userfaultfd=1 or access to /dev/userfaultfd)",
            93 => "could not open one of the seed's files",
            94 => "could not enter the seed's working directory",
            95 => "could not set signal dispositions",
            96 => "could not take the seed's credentials",
            97 => "could not enter its container",
            98 => "one of the seed's files was replaced between the check and the open (refused)",
            _ => return None,
        })
    }
}

/// First byte of the record a prologue that failed on one of its files (or
/// its working directory) writes on its ready pipe before it exits:
/// `[FAILURE_MARK, exit code, index u16 LE, errno u16 LE]`, where the index is
/// into [`RestorePlan::files`] or [`CWD_INDEX`], and errno 0 means that the
/// path named another object than the one recorded at prepare.
pub const FAILURE_MARK: u8 = 0xEE;
pub const CWD_INDEX: u16 = u16::MAX;

/// A failure a prologue reported on its ready pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileFailure {
    pub code: i32,
    pub index: u16,
    pub errno: i32,
}

impl FileFailure {
    /// Parses the record read from a ready pipe (`None` if it is not one).
    pub fn parse(bytes: &[u8]) -> Option<FileFailure> {
        match bytes {
            [FAILURE_MARK, code, i0, i1, e0, e1, ..] => Some(FileFailure {
                code: i32::from(*code),
                index: u16::from_le_bytes([*i0, *i1]),
                errno: i32::from(u16::from_le_bytes([*e0, *e1])),
            }),
            _ => None,
        }
    }

    /// Says what went wrong, naming the file.
    pub fn describe(&self, plan: &RestorePlan, owner: Option<u32>) -> String {
        let what = if self.index == CWD_INDEX {
            format!("the seed's working directory {}", plan.cwd.to_string_lossy())
        } else {
            match plan.files.get(usize::from(self.index)) {
                Some(f) => format!("the seed's file {} (descriptor {})", f.path.to_string_lossy(), f.fd),
                None => "one of the seed's files".to_string(),
            }
        };
        let who = owner.map(|uid| format!(" as the seed's owner (uid {uid})")).unwrap_or_default();
        match self.errno {
            0 => format!("{what} was replaced by another object since prepare: refused"),
            libc::ELOOP => format!("{what} is now reached through a symbolic link: refused, links are never followed"),
            e => format!("cannot open {what}{who}: {}", std::io::Error::from_raw_os_error(e)),
        }
    }
}

/// Credentials the child takes before it is restored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// The container a child joins: the namespaces of the holder whose pidfd is
/// handed to [`Prologue::run`] (its PID namespace is entered by the forker).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerEntry {
    /// `setns` flags on the holder's pidfd.
    pub join_flags: i32,
    pub hostname: Option<std::ffi::CString>,
}

/// Inputs of the prologue, built before the fork (and sent to the zygote
/// that forks children, hence serializable).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Prologue {
    /// Pid the child's parent must have (it dies with that parent); 0 when a
    /// process is resumed in place and keeps its own parent.
    pub parent: i32,
    pub plan: RestorePlan,
    pub actions: Vec<SigAction>,
    pub credentials: Option<Credentials>,
    pub container: Option<ContainerEntry>,
}

fn fail(code: PrologueExit) -> ! {
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(code as i32) }
}

/// Tells the daemon which file failed (on `ready`), then exits with `code`.
fn fail_file(ready: RawFd, code: PrologueExit, index: u16, errno: i32) -> ! {
    let i = index.to_le_bytes();
    let e = u16::try_from(errno).unwrap_or(u16::MAX).to_le_bytes();
    let record = [FAILURE_MARK, code as u8, i[0], i[1], e[0], e[1]];
    // SAFETY: a write from a stack buffer to a pipe.
    unsafe { libc::write(ready, record.as_ptr().cast(), record.len()) };
    fail(code)
}

/// Opens `path` with `flags` without following symbolic links and checks
/// that it is the object `expect` (allocation-free); on failure reports the
/// file on `ready` and exits.
fn open_checked(path: &std::ffi::CStr, flags: i32, expect: &FileIdentity, how: IdentityMatch, ready: RawFd, index: u16, code: PrologueExit) -> RawFd {
    let fd = match fsid::open_no_symlinks(path, flags) {
        Ok(fd) => fd,
        Err(errno) => fail_file(ready, code, index, errno),
    };
    match fsid::identity_of_fd(fd) {
        Ok(found) if expect.matches(&mitosis_capture::identity_from_sys(found), how) => fd,
        Ok(_) => fail_file(ready, PrologueExit::FileChanged, index, 0),
        Err(errno) => fail_file(ready, code, index, errno),
    }
}

extern "C" {
    /// glibc's offset of the rseq area from the thread pointer, and its size.
    static __rseq_offset: isize;
    static __rseq_size: u32;
}

const RSEQ_SIG: u32 = 0x5305_3053;
const RSEQ_FLAG_UNREGISTER: u32 = 1;

/// The forked thread's rseq area lives in the daemon's thread-local storage,
/// which the restore unmaps; the kernel would then fail to update it and kill
/// the child with SIGSEGV on its next return to user space.
///
/// # Safety
/// Raw syscalls only; reads glibc's exported rseq layout.
unsafe fn unregister_rseq() {
    let tp: u64;
    std::arch::asm!("mov {}, fs:0", out(reg) tp, options(nostack, readonly, preserves_flags));
    let area = (tp as i64 + __rseq_offset as i64) as u64;
    for len in [32u32, __rseq_size] {
        if libc::syscall(libc::SYS_rseq, area, len, RSEQ_FLAG_UNREGISTER, RSEQ_SIG) == 0 {
            return;
        }
    }
}

#[repr(C)]
struct KernelSigaction {
    handler: u64,
    flags: u64,
    restorer: u64,
    mask: u64,
}

impl Prologue {
    /// Runs in the forked child; never returns. `stdio` become descriptors
    /// 0-2; one byte is written to `ready` (a pipe) when done, end-of-file
    /// instead means the child died (see its exit code). With a container,
    /// `holder` is its holder's pidfd. Ends parked in `pause()` with every
    /// signal blocked, waiting for the daemon's ptrace.
    ///
    /// The seed's files (also those its file mappings come from) and its
    /// working directory are opened before the child enters its container's
    /// mount namespace: like a forked process, the child keeps the files and
    /// the working directory its parent had, seen as the daemon saw them
    /// when it checked their identity.
    pub fn run(&self, stdio: [RawFd; 3], ready: RawFd, holder: Option<RawFd>) -> ! {
        // SAFETY: only raw syscalls on data prepared before the fork; no allocation.
        unsafe {
            // In a container the parent (the daemon) is outside the child's PID
            // namespace, where getppid() reads 0. The holder dies with the
            // daemon and takes the namespace's processes with it.
            let visible_parent = if self.container.is_some() { 0 } else { self.parent };
            if self.parent != 0
                && (libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 || libc::getppid() != visible_parent)
            {
                fail(PrologueExit::ParentGone);
            }
            unregister_rseq();
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
            // Descriptors inherited from the daemon may sit on any number, also on
            // the ones the seed needs: lift the ones we keep above all of those first.
            let high = self.plan.uffd_fd + 1;
            let lift = |fd: RawFd| libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, high);
            let stdio = [lift(stdio[0]), lift(stdio[1]), lift(stdio[2])];
            let ready = lift(ready);
            let holder = holder.map(lift);
            if stdio.iter().any(|&fd| fd < 0) || ready < 0 || holder.is_some_and(|fd| fd < 0) {
                fail(PrologueExit::Stdio);
            }
            libc::syscall(libc::SYS_close_range, 3u32, (high - 1) as u32, 0u32);
            for (i, &fd) in stdio.iter().enumerate() {
                if libc::dup2(fd, i as RawFd) < 0 {
                    fail(PrologueExit::Stdio);
                }
            }
            // Also through /dev/userfaultfd, for an unprivileged caller resuming in place.
            let uffd = mitosis_sys::uffd::create_raw(libc::O_CLOEXEC | libc::O_NONBLOCK).unwrap_or(-1);
            let target = self.plan.uffd_fd;
            if uffd < 0 || (uffd != target && (libc::dup2(uffd, target) < 0 || libc::close(uffd) != 0)) {
                fail(PrologueExit::Userfaultfd);
            }
            // The seed's files and working directory are opened with its
            // owner's file-system credentials (never root's: a user must not
            // get through a child what the user could not open), by paths
            // without symbolic links, and only if they are the objects the
            // seed had at prepare.
            if let Some(c) = &self.credentials {
                if libc::setgroups(c.groups.len(), c.groups.as_ptr()) != 0 {
                    fail(PrologueExit::Credentials);
                }
                libc::setfsgid(c.gid);
                libc::setfsuid(c.uid);
                // setfs[ug]id report the previous id, never an error: ask again.
                if libc::setfsgid(u32::MAX) as u32 != c.gid || libc::setfsuid(u32::MAX) as u32 != c.uid {
                    fail(PrologueExit::Credentials);
                }
            }
            for (index, f) in self.plan.files.iter().enumerate() {
                let index = u16::try_from(index).unwrap_or(u16::MAX - 1);
                let fd = open_checked(&f.path, f.flags, &f.expect, f.how, ready, index, PrologueExit::OpenFile);
                if fd != f.fd {
                    if libc::dup3(fd, f.fd, f.flags & libc::O_CLOEXEC) < 0 {
                        fail(PrologueExit::OpenFile);
                    }
                    libc::close(fd);
                }
                if f.pos > 0 {
                    libc::lseek(f.fd, f.pos as libc::off_t, libc::SEEK_SET);
                }
            }
            // The working directory, opened here, entered after the container
            // is joined: like a forked process, the child keeps its parent's,
            // also when it is not inside the container's root (a seed working
            // in /tmp, which is private in a container).
            let cwd = open_checked(
                &self.plan.cwd,
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
                &self.plan.cwd_expect,
                IdentityMatch::SameObject,
                ready,
                CWD_INDEX,
                PrologueExit::Chdir,
            );
            if let Some(entry) = &self.container {
                let Some(holder) = holder else { fail(PrologueExit::Container) };
                if libc::setns(holder, entry.join_flags) != 0 {
                    fail(PrologueExit::Container);
                }
                libc::close(holder);
                if let Some(name) = &entry.hostname {
                    if libc::sethostname(name.as_ptr(), name.as_bytes().len()) != 0 {
                        fail(PrologueExit::Container);
                    }
                }
            }
            if libc::fchdir(cwd) != 0 {
                fail(PrologueExit::Chdir);
            }
            libc::close(cwd);
            for a in &self.actions {
                if a.signo == libc::SIGKILL as u32 || a.signo == libc::SIGSTOP as u32 {
                    continue;
                }
                let ka = KernelSigaction { handler: a.handler, flags: a.flags, restorer: a.restorer, mask: a.mask };
                let r = libc::syscall(libc::SYS_rt_sigaction, a.signo, &ka as *const KernelSigaction, 0usize, 8usize);
                if r != 0 {
                    fail(PrologueExit::Signals);
                }
            }
            if let Some(c) = &self.credentials {
                if libc::setgroups(c.groups.len(), c.groups.as_ptr()) != 0
                    || libc::setresgid(c.gid, c.gid, c.gid) != 0
                    || libc::setresuid(c.uid, c.uid, c.uid) != 0
                {
                    fail(PrologueExit::Credentials);
                }
            }
            let byte = 1u8;
            libc::write(ready, (&byte as *const u8).cast(), 1);
            libc::syscall(libc::SYS_close_range, high as u32, u32::MAX, 0u32);
            loop {
                libc::pause();
            }
        }
    }
}
