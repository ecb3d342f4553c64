//! Calls for a freshly forked or cloned process that owns its whole
//! descriptor table and never returns to the code that forked it (a
//! container's namespace holder, a zygote's child running the resume
//! prologue), or for a single-threaded process about to be replaced by
//! another (the caller of a resume in place).
//!
//! Every function here is allocation-free and async-signal-safe, so it may
//! run right after `fork` in a multi-threaded parent. They take raw
//! descriptor numbers because such a process has no `OwnedFd`s of its own:
//! it was handed numbers across the fork. Using them on a descriptor some
//! other part of a running program owns would break that owner's I/O (never
//! memory); they are meant for the forked process only.

use std::os::fd::RawFd;

use crate::{Result, SysError};

/// Asks the kernel to send `sig` to this process when its parent (the thread
/// that forked it) dies (`PR_SET_PDEATHSIG`).
pub fn set_parent_death_signal(sig: i32) -> Result<()> {
    let sig = libc::c_ulong::from(sig.unsigned_abs());
    // SAFETY: prctl with integer arguments touches no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig, 0, 0, 0) } != 0 {
        return Err(SysError::last("prctl(PR_SET_PDEATHSIG)"));
    }
    Ok(())
}

/// Sets `sig`'s disposition to "ignore" (for SIGCHLD: children are reaped by
/// the kernel, never become zombies).
pub fn ignore_signal(sig: i32) -> Result<()> {
    // SAFETY: SIG_IGN installs no handler, so no code of ours can run in
    // signal context.
    if unsafe { libc::signal(sig, libc::SIG_IGN) } == libc::SIG_ERR {
        return Err(SysError::last("signal"));
    }
    Ok(())
}

/// Writes all of `bytes` to descriptor `fd` (retrying short writes and EINTR).
pub fn write_all(fd: RawFd, mut bytes: &[u8]) -> Result<()> {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is valid for reads of its length.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        match usize::try_from(n) {
            Ok(0) => return Err(SysError::new("write", libc::EIO)),
            Ok(n) => bytes = &bytes[n..],
            Err(_) => {
                let e = SysError::last("write");
                if e.errno != libc::EINTR {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// Closes descriptor `fd`.
pub fn close(fd: RawFd) {
    // SAFETY: closing a number touches no memory; see the module docs for
    // whose descriptor it may be.
    unsafe { libc::close(fd) };
}

/// Closes every descriptor except `keep` (`close_range` on both sides of it),
/// so that this process pins nothing its parent had open.
pub fn close_all_except(keep: RawFd) -> Result<()> {
    let keep = keep.unsigned_abs();
    if keep > 0 {
        // SAFETY: close_range takes plain integers.
        if unsafe { libc::syscall(libc::SYS_close_range, 0u32, keep - 1, 0u32) } != 0 {
            return Err(SysError::last("close_range"));
        }
    }
    // SAFETY: as above.
    if unsafe { libc::syscall(libc::SYS_close_range, keep.saturating_add(1), u32::MAX, 0u32) } != 0 {
        return Err(SysError::last("close_range"));
    }
    Ok(())
}

/// Blocks until `fd` reaches end of file or fails (other than EINTR),
/// discarding what it reads.
pub fn wait_for_eof(fd: RawFd) {
    let mut byte = [0u8; 1];
    loop {
        // SAFETY: `byte` is valid for a write of one byte.
        let n = unsafe { libc::read(fd, byte.as_mut_ptr().cast(), 1) };
        if n == 0 || (n < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR)) {
            return;
        }
    }
}

/// Ends this process at once with `code`, running no destructors or atexit
/// handlers (`_exit`): the forked copy of the parent's state is not ours to
/// tear down.
pub fn exit(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

/// The pid of this process's parent (`getppid`); 0 when the parent is
/// outside this process's PID namespace.
pub fn parent_pid() -> i32 {
    // SAFETY: getppid has no preconditions, cannot fail and touches no memory.
    unsafe { libc::getppid() }
}

/// Proof that [`block_all_signals`] blocked every signal in this thread:
/// no handler of ours or of a seed can run while it lives, which is what
/// makes [`set_raw_signal_action`] sound (a fault while blocked kills the
/// process: the kernel never calls a handler for it). Neither `Send` nor
/// `Sync`: it speaks of the thread that made it, and nothing in this crate
/// unblocks signals.
pub struct AllSignalsBlocked {
    _this_thread: std::marker::PhantomData<*const ()>,
}

/// Blocks every signal (those that can be: not SIGKILL and SIGSTOP) in the
/// calling thread, glibc's internal two (32, 33) included: the raw
/// `rt_sigprocmask`, since glibc's `sigprocmask` leaves those out.
pub fn block_all_signals() -> Result<AllSignalsBlocked> {
    let all: u64 = u64::MAX;
    // SAFETY: the kernel reads one 8-byte mask from `all` and writes no old
    // set (NULL).
    let r = unsafe { libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, &all as *const u64, 0usize, 8usize) };
    if r != 0 {
        return Err(SysError::last("sigprocmask"));
    }
    Ok(AllSignalsBlocked { _this_thread: std::marker::PhantomData })
}

/// A signal disposition in the kernel's own layout (`struct sigaction` of
/// `rt_sigaction(2)` on x86-64: handler, flags, restorer, one 64-bit mask),
/// as a seed image records it: addresses in the seed's address space.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawSigaction {
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

/// Installs `action` for `signo` with `rt_sigaction`, addresses as they are
/// (for a process that becomes another one: the handler addresses are the
/// seed's, valid once its memory is in place). Requires every signal to be
/// blocked (the proof): a handler address that means nothing yet is never
/// called. SIGKILL and SIGSTOP are refused by the kernel (EINVAL).
pub fn set_raw_signal_action(_blocked: &AllSignalsBlocked, signo: u32, action: &RawSigaction) -> Result<()> {
    // SAFETY: the kernel reads one RawSigaction (its layout, size 8 for the
    // mask) and writes no old action (NULL); with every signal blocked the
    // handler cannot run in this thread (see AllSignalsBlocked).
    let r = unsafe { libc::syscall(libc::SYS_rt_sigaction, signo, action as *const RawSigaction, 0usize, 8usize) };
    if r != 0 {
        return Err(SysError::last("rt_sigaction"));
    }
    Ok(())
}

/// Duplicates `fd` onto the lowest free number at or above `min`, close-on-exec
/// (`F_DUPFD_CLOEXEC`); returns the new descriptor.
pub fn dup_at_or_above(fd: RawFd, min: RawFd) -> Result<RawFd> {
    // SAFETY: fcntl with integer arguments touches no memory.
    let r = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) };
    if r < 0 {
        return Err(SysError::last("fcntl(F_DUPFD_CLOEXEC)"));
    }
    Ok(r)
}

/// Makes descriptor `to` a copy of `fd` (`dup3`), closing what `to` was;
/// with `cloexec` the copy is close-on-exec. `fd` and `to` must differ
/// (EINVAL otherwise).
pub fn dup_onto(fd: RawFd, to: RawFd, cloexec: bool) -> Result<()> {
    let flags = if cloexec { libc::O_CLOEXEC } else { 0 };
    // SAFETY: dup3 with integer arguments touches no memory; see the module
    // docs for whose descriptor `to` may be.
    if unsafe { libc::dup3(fd, to, flags) } < 0 {
        return Err(SysError::last("dup3"));
    }
    Ok(())
}

/// Closes descriptors `first..=last` (`close_range`); nothing when `last < first`.
pub fn close_range(first: RawFd, last: RawFd) -> Result<()> {
    if last < first {
        return Ok(());
    }
    let (Ok(first), Ok(last)) = (u32::try_from(first), u32::try_from(last)) else {
        return Err(SysError::new("close_range", libc::EINVAL));
    };
    // SAFETY: close_range takes plain integers; see the module docs.
    if unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) } != 0 {
        return Err(SysError::last("close_range"));
    }
    Ok(())
}

/// Closes every descriptor from `first` up (`close_range(first, ~0)`).
pub fn close_from(first: RawFd) -> Result<()> {
    close_range(first, RawFd::MAX)
}

/// Moves the file offset of `fd` to `pos` bytes from the start (`lseek`).
pub fn seek_to(fd: RawFd, pos: u64) -> Result<()> {
    let pos = libc::off_t::try_from(pos).map_err(|_| SysError::new("lseek", libc::EINVAL))?;
    // SAFETY: lseek with integer arguments touches no memory.
    if unsafe { libc::lseek(fd, pos, libc::SEEK_SET) } < 0 {
        return Err(SysError::last("lseek"));
    }
    Ok(())
}

/// Moves the calling thread into the namespaces `nstype` of descriptor `fd`
/// (a namespace file, or a pidfd with `CLONE_NEW*` flags); see
/// [`crate::ns::setns`] for a borrowed descriptor.
pub fn setns(fd: RawFd, nstype: i32) -> Result<()> {
    // SAFETY: setns with integer arguments touches no memory.
    if unsafe { libc::setns(fd, nstype) } != 0 {
        return Err(SysError::last("setns"));
    }
    Ok(())
}

/// Sets this process's audit login uid (`/proc/self/loginuid`: only the
/// process itself may, with `CAP_AUDIT_CONTROL`).
pub fn set_loginuid(uid: u32) -> Result<()> {
    // The decimal digits of `uid`, without allocating.
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    let mut rest = uid;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    // SAFETY: a constant C string path; the descriptor is closed below.
    let fd = unsafe { libc::open(c"/proc/self/loginuid".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(SysError::last("open /proc/self/loginuid"));
    }
    let written = write_all(fd, &digits[at..]);
    close(fd);
    written
}

/// Creates directory `path` with `mode` (less the umask).
pub fn make_dir(path: &std::ffi::CStr, mode: u32) -> Result<()> {
    // SAFETY: `path` is a valid C string the kernel only reads.
    if unsafe { libc::mkdir(path.as_ptr(), mode) } != 0 {
        return Err(SysError::last("mkdir"));
    }
    Ok(())
}

/// Removes the empty directory `path`.
pub fn remove_dir(path: &std::ffi::CStr) -> Result<()> {
    // SAFETY: as above.
    if unsafe { libc::rmdir(path.as_ptr()) } != 0 {
        return Err(SysError::last("rmdir"));
    }
    Ok(())
}

/// Creates a symbolic link at `path` that points to `target`.
pub fn make_symlink(target: &std::ffi::CStr, path: &std::ffi::CStr) -> Result<()> {
    // SAFETY: both are valid C strings the kernel only reads.
    if unsafe { libc::symlink(target.as_ptr(), path.as_ptr()) } != 0 {
        return Err(SysError::last("symlink"));
    }
    Ok(())
}

/// Creates a character device node at `path`, with `permissions` (less the
/// umask) and device number `rdev` (needs `CAP_MKNOD`).
pub fn make_char_device(path: &std::ffi::CStr, permissions: u32, rdev: u64) -> Result<()> {
    // SAFETY: `path` is a valid C string the kernel only reads.
    if unsafe { libc::mknod(path.as_ptr(), libc::S_IFCHR | (permissions & 0o7777), rdev) } != 0 {
        return Err(SysError::last("mknod"));
    }
    Ok(())
}

/// Removes the name `path` (not a directory).
pub fn remove_file(path: &std::ffi::CStr) -> Result<()> {
    // SAFETY: `path` is a valid C string the kernel only reads.
    if unsafe { libc::unlink(path.as_ptr()) } != 0 {
        return Err(SysError::last("unlink"));
    }
    Ok(())
}

/// Makes the directory open at `fd` this process's working directory.
pub fn fchdir(fd: RawFd) -> Result<()> {
    // SAFETY: fchdir with an integer touches no memory.
    if unsafe { libc::fchdir(fd) } != 0 {
        return Err(SysError::last("fchdir"));
    }
    Ok(())
}

/// Sets this process's supplementary groups (`setgroups`; glibc applies it
/// to every thread, and a forked process has one).
pub fn set_groups(groups: &[u32]) -> Result<()> {
    // SAFETY: the kernel reads `groups.len()` gids from a live slice.
    if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } != 0 {
        return Err(SysError::last("setgroups"));
    }
    Ok(())
}

/// Makes files be opened as `uid`/`gid` (`setfsuid`/`setfsgid`), leaving the
/// real, effective and saved ids as they are. Those calls report the previous
/// id, never an error, so both are asked again: `EPERM` when they did not
/// take.
pub fn set_fs_ids(uid: u32, gid: u32) -> Result<()> {
    // SAFETY: plain integer arguments; an id of u32::MAX (-1) only queries.
    let (g, u) = unsafe {
        libc::setfsgid(gid);
        libc::setfsuid(uid);
        (libc::setfsgid(u32::MAX), libc::setfsuid(u32::MAX))
    };
    if g.cast_unsigned() != gid || u.cast_unsigned() != uid {
        return Err(SysError::new("setfsuid", libc::EPERM));
    }
    Ok(())
}

/// Sets the real, effective and saved gid, then uid (`setresgid`,
/// `setresuid`) to `gid` and `uid`: for good, when they are not 0.
pub fn set_ids(uid: u32, gid: u32) -> Result<()> {
    // SAFETY: plain integer arguments.
    if unsafe { libc::setresgid(gid, gid, gid) } != 0 {
        return Err(SysError::last("setresgid"));
    }
    // SAFETY: as above.
    if unsafe { libc::setresuid(uid, uid, uid) } != 0 {
        return Err(SysError::last("setresuid"));
    }
    Ok(())
}

/// `CAP_CHECKPOINT_RESTORE` as a capability mask: what a child of a seed
/// other than root keeps during its restore, to give it the seed's
/// executable (`PR_SET_MM_MAP`'s `exe_fd`).
pub const CHECKPOINT_RESTORE_CAPABILITY: u64 = 1 << 40;

/// `capset`'s header version for 64-bit capability sets.
pub const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// [`set_ids`] for a process that is root now, keeping the capabilities in
/// `keep` (a bit mask of `CAP_*` numbers) permitted and effective across the
/// change, and nothing else: `PR_SET_KEEPCAPS` around the change, then
/// `capset`. (Without it a change away from uid 0 clears them all.)
pub fn set_ids_keeping(uid: u32, gid: u32, keep: u64) -> Result<()> {
    // SAFETY: prctl with integer arguments touches no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
        return Err(SysError::last("prctl(PR_SET_KEEPCAPS)"));
    }
    let changed = set_ids(uid, gid);
    // SAFETY: as above.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    changed?;
    set_capabilities(keep)
}

/// Makes `caps` (a bit mask of `CAP_*` numbers) this thread's permitted and
/// effective capabilities, and none inheritable (`capset`; only ever a
/// subset of what it holds).
pub fn set_capabilities(caps: u64) -> Result<()> {
    let header = [CAPABILITY_VERSION_3, 0u32];
    let (low, high) = ((caps & 0xffff_ffff) as u32, (caps >> 32) as u32);
    // Two {effective, permitted, inheritable} triples: bits 0-31, then 32-63.
    let data = [low, low, 0, high, high, 0];
    // SAFETY: the kernel reads an 8-byte header and two 12-byte triples from live arrays.
    if unsafe { libc::syscall(libc::SYS_capset, header.as_ptr(), data.as_ptr()) } != 0 {
        return Err(SysError::last("capset"));
    }
    Ok(())
}

/// Reads one byte from `fd` (retrying EINTR): `Some(byte)`, or `None` at
/// end of file.
pub fn read_byte(fd: RawFd) -> Result<Option<u8>> {
    let mut byte = [0u8; 1];
    loop {
        // SAFETY: `byte` is valid for a write of one byte.
        let n = unsafe { libc::read(fd, byte.as_mut_ptr().cast(), 1) };
        match n {
            1 => return Ok(Some(byte[0])),
            0 => return Ok(None),
            _ => {
                let e = SysError::last("read");
                if e.errno != libc::EINTR {
                    return Err(e);
                }
            }
        }
    }
}

/// Gives a process about to `execve` a program of its own the signal state
/// a fresh process has: an empty signal mask (the raw `rt_sigprocmask`, so
/// glibc's internal signals are unblocked too) and the default disposition
/// for every signal its parent ignored (ignored dispositions survive
/// `execve`; handlers do not).
pub fn reset_signals() -> Result<()> {
    let none: u64 = 0;
    // SAFETY: the kernel reads one 8-byte mask from `none` and writes no old set.
    let r = unsafe { libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, &none as *const u64, 0usize, 8usize) };
    if r != 0 {
        return Err(SysError::last("sigprocmask"));
    }
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: SIG_DFL installs no handler; signals glibc reserves for
        // itself are refused (EINVAL), which leaves them as they are.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    Ok(())
}

/// A program to `execve` and its arguments and environment, made before
/// forking (building C strings allocates, which a process forked from a
/// multi-threaded one must not do): the strings and the NULL-terminated
/// pointer arrays the kernel reads.
pub struct ExecImage {
    path: std::ffi::CString,
    _strings: Vec<std::ffi::CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

impl ExecImage {
    /// `path` run with `argv` (its first element is the program's name) and
    /// exactly the environment `env` (`NAME=value` strings). Fails (EINVAL)
    /// if a string holds a NUL byte.
    pub fn new(path: &[u8], argv: &[Vec<u8>], env: &[Vec<u8>]) -> Result<ExecImage> {
        let c = |b: &[u8]| std::ffi::CString::new(b.to_vec()).map_err(|_| SysError::new("execve", libc::EINVAL));
        let path = c(path)?;
        let mut strings = Vec::with_capacity(argv.len() + env.len());
        for s in argv.iter().chain(env) {
            strings.push(c(s)?);
        }
        // The CStrings' heap buffers do not move when `strings` is moved.
        let mut ptrs = strings.iter().map(|s| s.as_ptr());
        let mut argv_ptrs: Vec<*const libc::c_char> = ptrs.by_ref().take(argv.len()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = ptrs.collect();
        envp.push(std::ptr::null());
        Ok(ExecImage { path, _strings: strings, argv: argv_ptrs, envp })
    }
}

/// Replaces this process's program by `image` (`execve`). Returns only on
/// failure, with its error.
pub fn exec(image: &ExecImage) -> SysError {
    // SAFETY: the path is NUL-terminated, and argv and envp are
    // NULL-terminated arrays of pointers to NUL-terminated strings that
    // `image` owns for the duration of the call.
    unsafe { libc::execve(image.path.as_ptr(), image.argv.as_ptr(), image.envp.as_ptr()) };
    SysError::last("execve")
}

extern "C" {
    /// glibc's offset of the rseq area from the thread pointer, and its size
    /// (exported since glibc 2.35; size 0 when rseq is not registered).
    static __rseq_offset: isize;
    static __rseq_size: u32;
}

const RSEQ_SIG: u32 = 0x5305_3053;
const RSEQ_FLAG_UNREGISTER: u32 = 1;

/// Unregisters the calling thread's rseq area, which glibc registered in
/// the thread's own TLS. A forked thread whose memory is about to be
/// replaced must do so: the kernel would fail to update an unmapped area and
/// kill the process with SIGSEGV on its next return to user space. The
/// kernel wants the length it was registered with: glibc's, or 32 (the
/// original `struct rseq`). Errors when no area is registered.
pub fn unregister_rseq() -> Result<()> {
    let tp: usize;
    // SAFETY: on x86-64 glibc keeps the thread pointer's own address at
    // fs:0 (the TCB's self pointer); the read changes no state.
    unsafe { std::arch::asm!("mov {}, fs:0", out(reg) tp, options(nostack, readonly, preserves_flags)) };
    // SAFETY: plain reads of two integers glibc exports and never changes
    // after start-up.
    let (offset, size) = unsafe { (__rseq_offset, __rseq_size) };
    let area = tp.wrapping_add_signed(offset);
    let mut last = SysError::new("rseq", libc::EINVAL);
    for len in [32u32, size] {
        // SAFETY: unregistering only compares `area` and `len` with the
        // registration; the kernel writes nothing of ours.
        if unsafe { libc::syscall(libc::SYS_rseq, area, len, RSEQ_FLAG_UNREGISTER, RSEQ_SIG) } == 0 {
            return Ok(());
        }
        last = SysError::last("rseq");
    }
    Err(last)
}

/// Sets this process's file mode creation mask (`umask`; only the
/// permission bits, `0o777`, count). Cannot fail.
pub fn set_umask(mask: u32) {
    // SAFETY: umask takes an integer and touches no memory.
    unsafe { libc::umask(mask & 0o777) };
}

/// What [`set_rlimit`] set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitSet {
    /// Exactly the limits asked for.
    Exact,
    /// The hard limit asked for is above what this process may set (raising
    /// a hard limit needs `CAP_SYS_RESOURCE`, and `RLIMIT_NOFILE` never goes
    /// above the kernel's `nr_open`): the hard limit stayed as it was, the
    /// highest allowed, and the soft limit is the one asked for or that.
    HardKept { hard: u64 },
}

/// Sets this process's `resource` limit to (`soft`, `hard`), `soft <= hard`
/// (`prlimit64` on itself). When the kernel refuses the hard limit (EPERM),
/// keeps the current hard limit and sets the soft limit at most to it
/// ([`LimitSet::HardKept`]): the highest limits this process may have.
/// Lowering a limit below what is in use (open descriptors, mapped memory)
/// succeeds: the kernel checks limits when a resource is taken, not here.
pub fn set_rlimit(resource: u32, soft: u64, hard: u64) -> Result<LimitSet> {
    let set = |soft: u64, hard: u64| {
        let new = libc::rlimit64 { rlim_cur: soft, rlim_max: hard };
        // SAFETY: `new` is a valid rlimit64 the kernel only reads; no old limit is asked for.
        let r = unsafe { libc::syscall(libc::SYS_prlimit64, 0, resource, &new as *const libc::rlimit64, std::ptr::null_mut::<libc::rlimit64>()) };
        if r != 0 {
            return Err(SysError::last("prlimit64"));
        }
        Ok(())
    };
    match set(soft, hard) {
        Ok(()) => Ok(LimitSet::Exact),
        Err(e) if e.errno == libc::EPERM => {
            let mut now = libc::rlimit64 { rlim_cur: 0, rlim_max: 0 };
            // SAFETY: no new limit; `now` is a valid, writable rlimit64.
            let r = unsafe { libc::syscall(libc::SYS_prlimit64, 0, resource, std::ptr::null::<libc::rlimit64>(), &mut now as *mut libc::rlimit64) };
            if r != 0 || hard <= now.rlim_max {
                return Err(e);
            }
            set(soft.min(now.rlim_max), now.rlim_max)?;
            Ok(LimitSet::HardKept { hard: now.rlim_max })
        }
        Err(e) => Err(e),
    }
}

/// Sets whether this process is dumpable (`PR_SET_DUMPABLE`: 0 or 1; the
/// kernel refuses 2, which only a credential change under
/// `fs.suid_dumpable` 2 gives). A change of effective ids resets it, so it
/// is set after them.
pub fn set_dumpable(dumpable: u32) -> Result<()> {
    // SAFETY: prctl with integer arguments touches no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, libc::c_ulong::from(dumpable), 0, 0, 0) } != 0 {
        return Err(SysError::last("prctl(PR_SET_DUMPABLE)"));
    }
    Ok(())
}

/// Disables transparent huge pages for this process (`PR_SET_THP_DISABLE`
/// 1) or enables them again (0); children inherit it.
pub fn set_thp_disabled(disabled: bool) -> Result<()> {
    // SAFETY: prctl with integer arguments touches no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, libc::c_ulong::from(disabled), 0, 0, 0) } != 0 {
        return Err(SysError::last("prctl(PR_SET_THP_DISABLE)"));
    }
    Ok(())
}

/// Makes this process a child subreaper (`PR_SET_CHILD_SUBREAPER`): its
/// orphaned descendants are reparented to it instead of to init.
pub fn set_child_subreaper(on: bool) -> Result<()> {
    // SAFETY: prctl with integer arguments touches no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, libc::c_ulong::from(on), 0, 0, 0) } != 0 {
        return Err(SysError::last("prctl(PR_SET_CHILD_SUBREAPER)"));
    }
    Ok(())
}

/// Waits forever (`pause` in a loop), for a process that something else
/// takes over (a ptrace) or kills.
pub fn park() -> ! {
    loop {
        // SAFETY: pause has no arguments and touches no memory.
        unsafe { libc::pause() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::{AsRawFd, IntoRawFd};
    use std::os::unix::net::UnixStream;

    #[test]
    fn writes_and_waits_for_end_of_file() {
        let (a, mut b) = UnixStream::pair().unwrap();
        write_all(a.as_raw_fd(), b"ok").unwrap();
        let mut got = [0u8; 2];
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ok");
        // wait_for_eof returns once the other end is gone.
        let (c, d) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || wait_for_eof(c.as_raw_fd()));
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!t.is_finished());
        drop(d);
        t.join().unwrap();
        // close really closes.
        let raw = b.into_raw_fd();
        close(raw);
        assert_eq!(write_all(a.as_raw_fd(), b"x").unwrap_err().errno, libc::EPIPE);
    }

    #[test]
    fn signals_and_close_range_in_a_forked_child() {
        // The child ignores SIGCHLD, closes everything but stdout, and exits
        // with what it saw; run it as a real forked process.
        let pid = {
            // SAFETY: test only: the child below makes only async-signal-safe calls.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                let ok = ignore_signal(libc::SIGCHLD).is_ok()
                    && set_parent_death_signal(libc::SIGKILL).is_ok()
                    && close_all_except(1).is_ok()
                    && write_all(2, b"x").is_err()
                    && write_all(1, b"").is_ok();
                exit(if ok { 7 } else { 1 });
            }
            pid
        };
        let status = crate::process::wait_pid(pid).unwrap();
        assert_eq!(libc::WEXITSTATUS(status), 7);
    }

    #[test]
    fn links_and_device_nodes_are_made_and_removed() {
        let d = std::env::temp_dir().join(format!("mitosis-after-fork-nodes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let c = |p: &std::path::Path| std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        let (link, node) = (d.join("link"), d.join("null"));
        make_symlink(c"/some/where", &c(&link)).unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), std::path::Path::new("/some/where"));
        assert_eq!(make_symlink(c"/else", &c(&link)).unwrap_err().errno, libc::EEXIST);
        // /dev/null's number (1, 3), as root.
        make_char_device(&c(&node), 0o600, libc::makedev(1, 3)).unwrap();
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let meta = std::fs::symlink_metadata(&node).unwrap();
        assert!(meta.file_type().is_char_device());
        assert_eq!((meta.rdev(), meta.mode() & 0o777 & !0o022), (libc::makedev(1, 3), 0o600));
        for p in [&link, &node] {
            remove_file(&c(p)).unwrap();
            assert!(std::fs::symlink_metadata(p).is_err());
        }
        assert_eq!(remove_file(&c(&link)).unwrap_err().errno, libc::ENOENT);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn descriptor_moves() {
        let (r, w) = std::io::pipe().unwrap();
        let high = dup_at_or_above(w.as_raw_fd(), 500).unwrap();
        assert!(high >= 500);
        // The copy is close-on-exec, as F_DUPFD_CLOEXEC promises.
        // SAFETY: test only: F_GETFD reads a flag.
        assert_eq!(unsafe { libc::fcntl(high, libc::F_GETFD) } & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        let onto = high + 1;
        dup_onto(high, onto, false).unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { libc::fcntl(onto, libc::F_GETFD) } & libc::FD_CLOEXEC, 0);
        assert_eq!(dup_onto(onto, onto, true).unwrap_err().errno, libc::EINVAL);
        write_all(onto, b"z").unwrap();
        close_range(high, onto).unwrap();
        assert_eq!(write_all(onto, b"z").unwrap_err().errno, libc::EBADF);
        assert_eq!(write_all(high, b"z").unwrap_err().errno, libc::EBADF);
        close_range(onto, high).unwrap();
        drop(w);
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut { r }, &mut got).unwrap();
        assert_eq!(got, b"z");
    }

    #[test]
    fn seeking() {
        let path = std::env::temp_dir().join(format!("mitosis-sys-seek-{}", std::process::id()));
        std::fs::write(&path, b"0123456789").unwrap();
        let mut f = std::fs::File::open(&path).unwrap();
        seek_to(f.as_raw_fd(), 7).unwrap();
        let mut rest = String::new();
        f.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "789");
        let (_r, w) = std::io::pipe().unwrap();
        assert_eq!(seek_to(w.as_raw_fd(), 1).unwrap_err().errno, libc::ESPIPE);
        assert_eq!(seek_to(f.as_raw_fd(), u64::MAX).unwrap_err().errno, libc::EINVAL);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn failures_carry_their_errno() {
        assert_eq!(setns(-1, 0).unwrap_err().errno, libc::EBADF);
        let f = std::fs::File::open("/proc/self/status").unwrap();
        assert_eq!(fchdir(f.as_raw_fd()).unwrap_err().errno, libc::ENOTDIR);
        assert_eq!(close_range(-1, 3).unwrap_err().errno, libc::EINVAL);
        assert!(parent_pid() > 0);
    }

    /// Reads a hex mask line (`SigBlk:`, `SigIgn:`) of /proc/PID/status.
    fn status_mask(pid: i32, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find_map(|l| l.strip_prefix(field)).unwrap();
        u64::from_str_radix(line.trim(), 16).unwrap()
    }

    /// Forks a child that runs `check` (allocation-free calls only), reports
    /// its verdict and parks: returns the verdict and the parked child's pid,
    /// whose /proc the test reads before it kills and reaps the child.
    fn in_parked_child(check: impl FnOnce() -> bool) -> (bool, i32) {
        let (r, w) = std::io::pipe().unwrap();
        // SAFETY: test only: the child below makes only allocation-free calls.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let ok = check();
            let _ = write_all(w.as_raw_fd(), if ok { b"y" } else { b"n" });
            park();
        }
        drop(w);
        let mut byte = [0u8; 1];
        std::io::Read::read_exact(&mut { r }, &mut byte).unwrap();
        (&byte == b"y", pid)
    }

    #[test]
    fn a_child_that_blocks_signals_sets_dispositions_and_parks() {
        // The child blocks everything, ignores SIGUSR1 through a raw action,
        // unregisters its rseq area (once: a second time finds none), enters
        // its working directory by descriptor, starts a session, says so and
        // parks; the test reads its masks and kills it.
        let dir = std::fs::File::open("/").unwrap();
        let (ok, pid) = in_parked_child(|| {
            match block_all_signals() {
                Ok(blocked) => {
                    let ignore = RawSigaction { handler: 1, flags: 0, restorer: 0, mask: 0 };
                    set_raw_signal_action(&blocked, libc::SIGUSR1.unsigned_abs(), &ignore).is_ok()
                        && set_raw_signal_action(&blocked, libc::SIGKILL.unsigned_abs(), &ignore).is_err()
                        && unregister_rseq().is_ok()
                        && unregister_rseq().is_err()
                        && fchdir(dir.as_raw_fd()).is_ok()
                        // A new session once; then it leads its group, and may not again.
                        && crate::process::new_session().is_ok()
                        && crate::process::new_session().is_err()
                }
                Err(_) => false,
            }
        });
        let blocked = status_mask(pid, "SigBlk:");
        let ignored = status_mask(pid, "SigIgn:");
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
        crate::process::kill(pid, libc::SIGKILL).unwrap();
        let status = crate::process::wait_pid(pid).unwrap();
        assert!(ok, "the child's own checks failed");
        assert!(libc::WIFSIGNALED(status), "it parked until killed");
        // Every signal but SIGKILL (9) and SIGSTOP (19), glibc's 32 and 33 too.
        assert_eq!(blocked, !((1 << 8) | (1 << 18)));
        assert_ne!(ignored & (1 << (libc::SIGUSR1 - 1)), 0);
        assert_eq!(cwd, std::path::Path::new("/"));
    }

    #[test]
    fn limits_and_umask_in_a_forked_child() {
        // CAP_SYS_RESOURCE (bit 24) lets a process raise a hard limit again.
        let may_raise = status_mask(std::process::id().cast_signed(), "CapEff:") & (1 << 24) != 0;
        let core = libc::RLIMIT_CORE;
        let (ok, pid) = in_parked_child(|| {
            set_umask(0o1027);
            let lowered = set_rlimit(core, 1000, 2000) == Ok(LimitSet::Exact);
            let raised = set_rlimit(core, 3000, 9000);
            let expected = if may_raise { LimitSet::Exact } else { LimitSet::HardKept { hard: 2000 } };
            lowered
                && raised == Ok(expected)
                && set_rlimit(core, 2, 1).map_err(|e| e.errno) == Err(libc::EINVAL)
                && set_rlimit(99, 1, 1).is_err()
        });
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        crate::process::kill(pid, libc::SIGKILL).unwrap();
        crate::process::wait_pid(pid).unwrap();
        assert!(ok, "the child's own checks failed");
        assert!(status.contains("Umask:\t0027\n"), "{status}");
        let core_limits = crate::procfs::parse_limits(&limits).unwrap()[core as usize];
        assert_eq!(core_limits, if may_raise { (core, 3000, 9000) } else { (core, 2000, 2000) });
    }

    #[test]
    fn prctl_flags_in_a_forked_child() {
        let (ok, pid) = in_parked_child(|| {
            let mut subreaper: libc::c_int = 0;
            let set = set_dumpable(0).is_ok() && set_thp_disabled(true).is_ok() && set_child_subreaper(true).is_ok();
            // SAFETY: test only: PR_GET_CHILD_SUBREAPER writes one int to `subreaper`; the others take no pointer.
            set
                && unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) } == 0
                && unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) } == 1
                && unsafe { libc::prctl(libc::PR_GET_CHILD_SUBREAPER, &mut subreaper as *mut libc::c_int, 0, 0, 0) } == 0
                && subreaper == 1
                && set_dumpable(2).is_err()
                && set_dumpable(1).is_ok()
                && unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) } == 1
        });
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        crate::process::kill(pid, libc::SIGKILL).unwrap();
        crate::process::wait_pid(pid).unwrap();
        assert!(ok, "the child's own checks failed");
        assert_eq!(crate::procfs::parse_status(&status).thp_enabled, Some(false));
    }

    #[test]
    fn exec_runs_a_program_with_exactly_its_environment() {
        let image = ExecImage::new(
            b"/bin/sh",
            &[b"sh".to_vec(), b"-c".to_vec(), b"[ \"$ONLY\" = yes ] && [ -z \"$HOME\" ] && read b && [ \"$b\" = go ] && exit 7".to_vec()],
            &[b"ONLY=yes".to_vec()],
        )
        .unwrap();
        assert!(ExecImage::new(b"/bin/sh", &[b"a\0b".to_vec()], &[]).is_err());
        let missing = ExecImage::new(b"/nonexistent/program", &[b"x".to_vec()], &[]).unwrap();
        let (r, w) = std::io::pipe().unwrap();
        // SAFETY: test only: the child below makes only allocation-free calls.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let ok = exec(&missing).errno == libc::ENOENT
                && reset_signals().is_ok()
                && dup_onto(r.as_raw_fd(), 0, false).is_ok()
                && read_byte(0).is_ok_and(|b| b == Some(b'g'));
            if ok {
                exec(&image);
            }
            exit(1);
        }
        drop(r);
        write_all(w.as_raw_fd(), b"ggo\n").unwrap();
        drop(w);
        let status = crate::process::wait_pid(pid).unwrap();
        assert_eq!(libc::WEXITSTATUS(status), 7);
    }

    #[test]
    fn credentials_in_a_forked_child() {
        if crate::process::euid() != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        // As root: file-system ids, groups, then all ids to nobody; after
        // that the child may not go back (setresuid to 0 fails).
        let (ok, pid) = in_parked_child(|| {
            set_fs_ids(65534, 65534).is_ok()
                && set_groups(&[65534, 100]).is_ok()
                && set_ids(65534, 65534).is_ok()
                && set_ids(0, 0).is_err()
                && set_groups(&[]).is_err()
        });
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        crate::process::kill(pid, libc::SIGKILL).unwrap();
        crate::process::wait_pid(pid).unwrap();
        assert!(ok, "the child's own checks failed");
        let field = |f: &str| status.lines().find_map(|l| l.strip_prefix(f)).unwrap().split_whitespace().collect::<Vec<_>>();
        assert_eq!(field("Uid:"), ["65534"; 4]);
        assert_eq!(field("Gid:"), ["65534"; 4]);
        assert_eq!(field("Groups:"), ["100", "65534"]);
    }

    #[test]
    fn loginuid_of_a_forked_child() {
        if crate::process::euid() != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let (ok, pid) = in_parked_child(|| set_loginuid(4_000_123).is_ok());
        let loginuid = std::fs::read_to_string(format!("/proc/{pid}/loginuid")).unwrap();
        crate::process::kill(pid, libc::SIGKILL).unwrap();
        crate::process::wait_pid(pid).unwrap();
        assert!(ok);
        assert_eq!(loginuid.trim(), "4000123");
    }

    #[test]
    fn credentials_keeping_one_capability() {
        if crate::process::euid() != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        const CHECKPOINT_RESTORE: u64 = CHECKPOINT_RESTORE_CAPABILITY;
        let (ok, pid) = in_parked_child(|| set_ids_keeping(65534, 65534, CHECKPOINT_RESTORE).is_ok());
        let kept = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        crate::process::kill(pid, libc::SIGKILL).unwrap();
        crate::process::wait_pid(pid).unwrap();
        let (dropped, pid) = in_parked_child(|| set_ids_keeping(65534, 65534, CHECKPOINT_RESTORE).is_ok() && set_capabilities(0).is_ok());
        let none = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        crate::process::kill(pid, libc::SIGKILL).unwrap();
        crate::process::wait_pid(pid).unwrap();
        assert!(ok && dropped, "the child's own calls failed");
        let field = |status: &str, f: &str| status.lines().find_map(|l| l.strip_prefix(f)).unwrap().trim().to_string();
        assert_eq!(field(&kept, "Uid:").split_whitespace().collect::<Vec<_>>(), ["65534"; 4]);
        for f in ["CapPrm:", "CapEff:"] {
            assert_eq!(field(&kept, f), format!("{CHECKPOINT_RESTORE:016x}"), "{f}");
            assert_eq!(field(&none, f), "0000000000000000", "{f} after the drop");
        }
        assert_eq!(field(&kept, "CapInh:"), "0000000000000000");
    }
}
