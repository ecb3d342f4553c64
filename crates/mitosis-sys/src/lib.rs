//! Every raw syscall and `unsafe` block of mitosis that touches another
//! process lives here, behind small typed wrappers:
//!
//! - [`ptrace`]: seize, interrupt, registers and xsave state, syscall injection.
//! - [`uffd`]: userfaultfd API handshake, registration, copy/zero/poison, events.
//! - [`pidfd`]: race-free process handles, stealing descriptors, signalling.
//! - [`mem`]: reading and writing another process's memory.
//! - [`procfs`]: parsers for the `/proc/PID` files capture needs (pure functions,
//!   tested on fixed text).
//! - [`rlimit`]: the descriptor limit.
//! - [`vdso`]: locating this kernel's vDSO and a `syscall` instruction in it.
//!
//! Nothing here knows about seeds, images or the network.

pub mod mem;
pub mod pidfd;
pub mod procfs;
pub mod ptrace;
pub mod rlimit;
pub mod uffd;
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

/// Page size of x86-64.
pub const PAGE: u64 = 4096;
pub mod fdpass;
pub mod affinity;
