//! Every raw syscall and `unsafe` block of mitosis that touches another
//! process lives here, behind small typed wrappers:
//!
//! - [`ptrace`]: seize, interrupt, registers and xsave state, syscall injection.
//! - [`uffd`]: userfaultfd API handshake, registration, copy/zero/poison, events.
//! - [`pidfd`]: race-free process handles, stealing descriptors, signalling.
//! - [`mem`]: reading and writing another process's memory.
//! - [`procfs`]: parsers for the `/proc/PID` files capture needs (pure functions,
//!   tested on fixed text).
//! - [`creds`]: a thread acting as another user; looking up a user's ids.
//! - [`rlimit`]: the descriptor limit.
//! - [`fdstate`]: another process's descriptors without changing them:
//!   `kcmp` of two descriptors, a pipe's buffered bytes (`tee`).
//! - [`fsid`]: opening paths without following symbolic links, and the
//!   identity (type, device, inode) of what a descriptor refers to.
//! - [`vdso`]: locating this kernel's vDSO and a `syscall` instruction in it.
//! - [`runner`]: the table runner, machine code that executes a table of
//!   syscalls inside a child being restored.
//! - [`process`]: ids, signals, waiting, the monotonic clock, forking a
//!   single-threaded process, and hooks a `Command` runs between fork and exec.
//! - [`after_fork`]: allocation-free calls for a forked process that never
//!   returns (a container's namespace holder, the resume prologue):
//!   descriptors, signal dispositions, credentials, rseq, parking, `execve`.
//! - [`ns`]: mounts, `pivot_root`, `setns`, host name, bringing up loopback.
//! - [`poll`]: waiting for descriptors.
//! - [`net`]: TCP keepalive and user timeout, and a connection's health
//!   (`TCP_INFO`): whether a peer stopped answering.
//! - [`signals`]: blocking a set of signals and waiting for one.
//! - [`unixsock`]: Unix sockets of another process: diagnostics (peer,
//!   name, state), peeking at queued messages, sending without blocking.
//! - [`inetsock`]: TCP and UDP sockets of another process: the shutdown
//!   bits their diagnostics (`inet_diag`) show.
//! - [`fdstate::open_by_handle`]: the file a file handle names (an inotify
//!   watch's).
//! - [`mem::AnonMap`]: an anonymous mapping of our own, and `mincore`.
//! - [`shmem`]: a sparse memfd that children map privately (the shared
//!   page cache).
//!
//! The crate denies undocumented `unsafe` blocks and lossy integer casts
//! (`clippy::cast_possible_truncation`, `cast_sign_loss`, `cast_possible_wrap`):
//! every conversion here either cannot lose bits or says why it may.
//!
//! Nothing here knows about seeds, images or the wire protocol.

#![deny(
    clippy::undocumented_unsafe_blocks,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

pub mod creds;
pub mod fdstate;
pub mod fsid;
pub mod mem;
pub mod pidfd;
pub mod procfs;
pub mod signals;
pub mod ptrace;
pub mod rlimit;
pub mod runner;
pub mod shmem;
pub mod uffd;
pub mod inetsock;
pub mod unixsock;
pub mod vdso;

/// An errno with the operation that produced it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{op} failed: {}", std::io::Error::from_raw_os_error(*errno))]
pub struct SysError {
    pub op: &'static str,
    pub errno: i32,
}

impl SysError {
    /// Captures `errno` right after a failed call.
    pub fn last(op: &'static str) -> Self {
        SysError { op, errno: std::io::Error::last_os_error().raw_os_error().unwrap_or(0) }
    }
    pub fn new(op: &'static str, errno: i32) -> Self {
        SysError { op, errno }
    }
}

pub type Result<T> = std::result::Result<T, SysError>;

// mitosis runs on x86-64 only (registers, syscall numbers, the vDSO gadget):
// usize and u64 have the same width, which the conversions below rely on.
const _: () = assert!(usize::BITS == u64::BITS);

/// A u64 length, offset or address as usize: lossless, since usize is 64
/// bits wide on mitosis's only target (asserted at compile time above). The
/// one audited place for this conversion, for every crate that denies
/// `clippy::cast_possible_truncation`.
#[allow(clippy::cast_possible_truncation, reason = "usize is 64 bits wide on the only target")]
pub const fn usize_of(x: u64) -> usize {
    x as usize
}

/// The bits of register value `x` read as two's complement (a syscall result
/// of `-errno`, a negative `orig_rax`).
pub const fn signed(x: u64) -> i64 {
    i64::from_ne_bytes(x.to_ne_bytes())
}

/// The two's-complement bits of `x` as a register value (a syscall number, or
/// `-errno` put in a register).
pub const fn unsigned(x: i64) -> u64 {
    u64::from_ne_bytes(x.to_ne_bytes())
}

/// A descriptor returned as a `long` by `syscall(2)` (non-negative, checked by
/// the caller) as a `RawFd`: descriptors are ints in the kernel.
pub(crate) fn fd_of(r: libc::c_long, op: &'static str) -> Result<std::os::fd::RawFd> {
    std::os::fd::RawFd::try_from(r).map_err(|_| SysError::new(op, libc::EBADF))
}

/// Page size of x86-64.
pub const PAGE: u64 = 4096;
pub mod fdpass;
pub mod affinity;
pub mod after_fork;
pub mod ns;
pub mod net;
pub mod poll;
pub mod process;
