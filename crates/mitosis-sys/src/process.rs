//! Process-level calls: who we are, signals, waiting, clocks, robust futex
//! lists, and the hooks a [`Command`] runs in its child between fork and exec.
//!
//! The spawn hooks ([`parent_death_signal_on_spawn`], [`setns_on_spawn`]) run
//! in the forked child of a possibly multi-threaded parent, so they only make
//! async-signal-safe system calls and never allocate.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::{Result, SysError};

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`): the unit of the CPU
/// times in `/proc/PID/stat`.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf reads a constant; no memory is involved.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).unwrap_or(100)
}

/// The effective user id of the calling process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions, cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// Makes this process the leader of a new session and process group
/// (`setsid`), so that signals to its old group or terminal miss it; returns
/// the new session id. Fails (EPERM) for a process group leader.
pub fn new_session() -> Result<i32> {
    // SAFETY: setsid takes no arguments and touches no memory.
    let r = unsafe { libc::setsid() };
    if r < 0 {
        return Err(SysError::last("setsid"));
    }
    Ok(r)
}

/// Sends `sig` to `pid` (`kill(2)`: a negative pid names a process group).
///
/// The caller must know the pid is still theirs to signal (an unreaped child,
/// or a group such a child leads): a reaped pid may belong to someone else.
pub fn kill(pid: i32, sig: i32) -> Result<()> {
    // SAFETY: kill takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(pid, sig) } != 0 {
        return Err(SysError::last("kill"));
    }
    Ok(())
}

/// Forks a child that does nothing but `_exit(0)`; returns its pid (reap it
/// with [`wait_pid`]). This is the local-fork baseline of the benchmarks.
pub fn fork_exit_child() -> Result<i32> {
    // SAFETY: the child calls only _exit, which is async-signal-safe, so
    // forking a multi-threaded process is fine.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(SysError::last("fork"));
    }
    if pid == 0 {
        // SAFETY: leaving the forked child at once, running no destructors.
        unsafe { libc::_exit(0) };
    }
    Ok(pid)
}

/// What [`fork_single_threaded`] returns on each side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    /// In the new process.
    Child,
    /// In the caller: the new process's pid.
    Parent(i32),
}

/// Clone flags that would share memory, signal handlers or thread identity
/// with the new process, or make the kernel write through a pointer: never
/// for a fork.
const NOT_A_FORK: i32 = libc::CLONE_VM
    | libc::CLONE_VFORK
    | libc::CLONE_THREAD
    | libc::CLONE_SIGHAND
    | libc::CLONE_SETTLS
    | libc::CLONE_PARENT_SETTID
    | libc::CLONE_CHILD_SETTID
    | libc::CLONE_CHILD_CLEARTID
    | libc::CLONE_PIDFD;

/// How many threads this process has, from `/proc/self/stat` (field 20),
/// read into a stack buffer (allocation-free).
pub fn own_thread_count() -> Result<u64> {
    let mut buf = [0u8; 1024];
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let fd = unsafe { libc::open(c"/proc/self/stat".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(SysError::last("open(/proc/self/stat)"));
    }
    // SAFETY: `buf` is valid for writes of its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    let read = SysError::last("read(/proc/self/stat)");
    crate::after_fork::close(fd);
    let n = usize::try_from(n).map_err(|_| read)?;
    parse_stat_threads(&buf[..n]).ok_or(SysError::new("/proc/self/stat", libc::EIO))
}

/// Field 20 (`num_threads`) of a `/proc/PID/stat` line. The command name
/// (field 2) may hold spaces and parentheses: fields are counted after its
/// last `)`, where field 3 starts.
fn parse_stat_threads(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let field = stat[close + 1..].split(|&b| b == b' ').filter(|f| !f.is_empty()).nth(17)?;
    std::str::from_utf8(field).ok()?.parse().ok()
}

/// Forks this process (`clone` with `flags` and `SIGCHLD`, never sharing
/// memory), which must be single-threaded: then the new process, a copy of
/// its only thread, may use the allocator and locks like any program. With
/// another thread running the call fails with `EBUSY` and forks nothing (a
/// child of a multi-threaded process may find a lock held forever).
/// `flags` may add e.g. `CLONE_PARENT` (the new process is our parent's
/// child) and `CLONE_NEW*` namespaces; flags that share memory or make the
/// kernel write through a pointer are refused (`EINVAL`).
pub fn fork_single_threaded(flags: i32) -> Result<Forked> {
    if flags & (NOT_A_FORK | libc::CSIGNAL) != 0 {
        return Err(SysError::new("clone", libc::EINVAL));
    }
    // Only this thread could start another, so the answer stays true until the clone.
    if own_thread_count()? != 1 {
        return Err(SysError::new("fork of a multi-threaded process", libc::EBUSY));
    }
    let flags = u64::from((flags | libc::SIGCHLD).cast_unsigned());
    // SAFETY: a clone without CLONE_VM is a fork, with no pointer arguments;
    // the process has a single thread (checked above), so the copy's memory
    // holds no lock another thread took.
    let r = unsafe { libc::syscall(libc::SYS_clone, flags, 0u64, 0u64, 0u64, 0u64) };
    match r {
        0 => Ok(Forked::Child),
        r if r < 0 => Err(SysError::last("clone")),
        r => i32::try_from(r).map(Forked::Parent).map_err(|_| SysError::new("clone", libc::EOVERFLOW)),
    }
}

/// Waits for child `pid` to end and reaps it; returns its raw wait status.
pub fn wait_pid(pid: i32) -> Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out pointer for the duration of the call.
        if unsafe { libc::waitpid(pid, &mut status, 0) } >= 0 {
            return Ok(status);
        }
        let e = SysError::last("waitpid");
        if e.errno != libc::EINTR {
            return Err(e);
        }
    }
}

/// The raw wait(2) status word of child `pid` if it has ended, without
/// reaping it (`waitid` with `WNOWAIT`): `None` while it runs. Fails (ECHILD)
/// once it has been reaped.
pub fn peek_exit(pid: u32) -> Result<Option<i32>> {
    // SAFETY: siginfo_t is plain data for which all-zeroes is valid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable siginfo_t; WNOWAIT leaves the child
    // waitable for its owner.
    let r = unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT) };
    if r != 0 {
        return Err(SysError::last("waitid"));
    }
    // SAFETY: waitid succeeded, so `info` holds SIGCHLD data (or zeroes when
    // the child still runs, as WNOHANG documents).
    let (who, status) = unsafe { (info.si_pid(), info.si_status()) };
    if who == 0 {
        return Ok(None);
    }
    // Re-encoded as a wait(2) status word.
    Ok(Some(match info.si_code {
        libc::CLD_EXITED => (status & 0xff) << 8,
        libc::CLD_DUMPED => status | 0x80,
        _ => status,
    }))
}

/// `CLOCK_MONOTONIC` in nanoseconds (the same clock in every network namespace).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid out pointer; CLOCK_MONOTONIC always exists, so the call
    // cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    // Both fields are non-negative for CLOCK_MONOTONIC.
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// The calling thread's id.
pub fn gettid() -> i32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::gettid() }
}

const ARCH_GET_FS: libc::c_int = 0x1003;

/// The calling thread's `fs_base` (x86-64: where its thread control block is).
pub fn fs_base() -> Result<u64> {
    let mut base = 0u64;
    // SAFETY: ARCH_GET_FS writes one unsigned long to the valid pointer.
    let r = unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_GET_FS, &mut base as *mut u64) };
    if r != 0 {
        return Err(SysError::last("arch_prctl(ARCH_GET_FS)"));
    }
    Ok(base)
}

/// The robust futex list of thread `pid`: (head address, length).
pub fn robust_list(pid: i32) -> Result<(u64, u64)> {
    let mut head = 0u64;
    let mut len = 0usize;
    // SAFETY: two valid out pointers of the sizes the syscall writes.
    let r = unsafe { libc::syscall(libc::SYS_get_robust_list, pid, &mut head as *mut u64, &mut len as *mut usize) };
    if r != 0 {
        return Err(SysError::last("get_robust_list"));
    }
    Ok((head, len as u64))
}

/// One `read(2)` system call on `fd` into `buf` (EINTR comes back as an
/// error, nothing is retried). A self-prepare waits in this very call: its
/// capture recognizes a process blocked in `read`, and each child resumed
/// from it returns from the syscall with its own answer in `buf`.
pub fn read_syscall(fd: &impl AsFd, buf: &mut [u8]) -> Result<usize> {
    // SAFETY: `buf` is valid for writes of its length; the descriptor is
    // borrowed for the call.
    let n = unsafe { libc::read(fd.as_fd().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    usize::try_from(n).map_err(|_| SysError::last("read"))
}

/// Makes `cmd`'s child receive `sig` when the thread that spawned it dies
/// (`PR_SET_PDEATHSIG`), so a killed test or benchmark leaves no process
/// behind.
pub fn parent_death_signal_on_spawn(cmd: &mut Command, sig: i32) {
    let sig = libc::c_ulong::from(sig.unsigned_abs());
    // SAFETY: the hook makes one async-signal-safe call (prctl) and allocates
    // nothing, as code between fork and exec must.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Makes `cmd`'s child enter namespace `ns` (a `/proc/PID/ns/*` or
/// `/run/netns/*` descriptor of type `nstype`, e.g. `libc::CLONE_NEWNET`)
/// just before exec. The descriptor is kept open until `cmd` is dropped.
pub fn setns_on_spawn(cmd: &mut Command, ns: OwnedFd, nstype: i32) {
    // SAFETY: the hook makes one async-signal-safe call (setns) on a
    // descriptor the closure owns, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(ns.as_raw_fd(), nstype) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    #[test]
    fn clock_ticks_are_linux_user_hz() {
        assert_eq!(clock_ticks_per_second(), 100, "USER_HZ is 100 on x86-64");
    }

    #[test]
    fn thread_id_and_fs_base_are_per_thread() {
        let main = (gettid(), fs_base().unwrap());
        let other = std::thread::spawn(|| (gettid(), fs_base().unwrap())).join().unwrap();
        assert_ne!(main.0, other.0);
        assert_ne!(main.1, other.1);
        assert!(main.1 != 0 && other.1 != 0);
        assert!(std::fs::metadata(format!("/proc/self/task/{}", main.0)).is_ok());
    }

    #[test]
    fn fork_wait_and_peek() {
        let pid = fork_exit_child().unwrap();
        // Not reaped yet: peeking sees the exit and leaves it waitable.
        assert!(crate::pidfd::open(pid).is_ok());
        let mut peeked = None;
        for _ in 0..1000 {
            peeked = peek_exit(pid.unsigned_abs()).unwrap();
            if peeked.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_eq!(peeked, Some(0));
        assert_eq!(wait_pid(pid).unwrap(), 0);
        assert_eq!(peek_exit(pid.unsigned_abs()).unwrap_err().errno, libc::ECHILD);
    }

    #[test]
    fn kill_and_peek_report_the_signal() {
        let mut child = Command::new("sleep").arg("100").spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        assert_eq!(peek_exit(child.id()).unwrap(), None);
        kill(pid, libc::SIGKILL).unwrap();
        let status = wait_pid(pid).unwrap();
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
        assert_eq!(kill(pid, 0).unwrap_err().errno, libc::ESRCH);
        // Reaped above: Child agrees there is nothing left to wait for.
        assert!(child.try_wait().is_err());
    }

    #[test]
    fn forks_only_a_single_threaded_process() {
        // The test harness runs tests on threads of their own: refused.
        assert!(own_thread_count().unwrap() > 1);
        assert_eq!(fork_single_threaded(0).unwrap_err().errno, libc::EBUSY);
        assert_eq!(fork_single_threaded(libc::CLONE_VM).unwrap_err().errno, libc::EINVAL);
        // A forked child has one thread: there it forks a grandchild that
        // exits 7, and reports it (allocation-free on both sides).
        // SAFETY: test only: the child below makes only allocation-free calls.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = match (own_thread_count(), fork_single_threaded(0)) {
                (Ok(1), Ok(Forked::Child)) => crate::after_fork::exit(7),
                (Ok(1), Ok(Forked::Parent(grandchild))) => match wait_pid(grandchild) {
                    Ok(status) if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 7 => 0,
                    _ => 2,
                },
                _ => 1,
            };
            crate::after_fork::exit(code);
        }
        assert_eq!(wait_pid(pid).unwrap(), 0);
    }

    #[test]
    fn one_read() {
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        std::io::Write::write_all(&mut a, b"abc").unwrap();
        let mut buf = [0u8; 2];
        assert_eq!(read_syscall(&b, &mut buf).unwrap(), 2);
        assert_eq!(&buf, b"ab");
        drop(a);
        assert_eq!(read_syscall(&b, &mut buf).unwrap(), 1);
        assert_eq!(read_syscall(&b, &mut buf).unwrap(), 0);
        let f = std::fs::File::create(std::env::temp_dir().join(format!("mitosis-sys-read-{}", std::process::id()))).unwrap();
        assert_eq!(read_syscall(&f, &mut buf).unwrap_err().errno, libc::EBADF);
        let _ = std::fs::remove_file(std::env::temp_dir().join(format!("mitosis-sys-read-{}", std::process::id())));
    }

    #[test]
    fn thread_count_field_of_stat() {
        let line = b"12 (a) b (c)) S 1 12 12 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 99 1 2";
        assert_eq!(parse_stat_threads(line), Some(3));
        assert_eq!(parse_stat_threads(b"12 (x) S 1"), None);
    }

    #[test]
    fn clock_and_ids() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a > 0 && b >= a);
        assert_eq!(euid(), std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap());
        let (head, len) = robust_list(0).unwrap();
        // glibc registers a robust list for every thread.
        assert!(head != 0 && len > 0);
    }

    #[test]
    fn spawn_hooks_run_in_the_child() {
        let mut cmd = Command::new("grep");
        cmd.args(["^SigQ\\|^PPid", "/proc/self/status"]).stdout(Stdio::null());
        parent_death_signal_on_spawn(&mut cmd, libc::SIGTERM);
        let ns = OwnedFd::from(std::fs::File::open("/proc/self/ns/net").unwrap());
        setns_on_spawn(&mut cmd, ns, libc::CLONE_NEWNET);
        assert!(cmd.status().unwrap().success());
        // A namespace descriptor of the wrong type makes the spawn fail.
        let mut cmd = Command::new("true");
        let ns = OwnedFd::from(std::fs::File::open("/proc/self/ns/net").unwrap());
        setns_on_spawn(&mut cmd, ns, libc::CLONE_NEWUTS);
        assert_eq!(cmd.status().unwrap_err().raw_os_error(), Some(libc::EINVAL));
    }
}
