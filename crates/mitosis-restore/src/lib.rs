//! Resume: make a fresh process continue as a seed's child.
//!
//! The daemon forks a bare process that runs the [`prologue`] (descriptors,
//! cwd, signal dispositions, credentials, a userfaultfd; crate
//! `mitosis-prologue`, re-exported here) and parks in `pause()`. Then, from
//! the daemon with ptrace ([`restore`]):
//!
//! 1. a small code blob, the *table runner* ([`stub`], `mitosis_sys::runner`), is placed in a scratch
//!    mapping that collides with nothing of the seed's layout; it executes a
//!    table of syscalls inside the child without a round trip each:
//!    unmap everything the child inherited from the daemon, move the vDSO to
//!    the seed's address, map every seed mapping at its address with its
//!    protections, and set the mm fields with `PR_SET_MM_MAP`;
//! 2. the daemon registers the anonymous mappings with the child's
//!    userfaultfd (their pages are then fetched on first touch by the pager),
//!    writes the seed's privately written file pages, unmaps the scratch area;
//! 3. the seed's other threads are created in the child ([`threads`]: `clone3`
//!    asking for each seed tid, each thread's kernel state by a table it runs
//!    itself);
//! 4. registers, xsave state and signal mask of every thread are set with
//!    ptrace, and the child is let go. It continues from the instruction
//!    where the seed was prepared, every thread where it was.
//!
//! Decisions of [`plan`]: a file mapping is taken from the local file only when
//! device, inode, size and mtime all match the seed host's file; otherwise its
//! pages are served from the seed like anonymous memory. A seed prepared on a
//! host whose vDSO differs (another kernel) is refused with a clear error.
//!
//! This crate does not serve pages (the pager does) and does not talk to the
//! network. Its raw calls are mitosis-sys's (ptrace, process memory,
//! userfaultfd, the runner): it has no `unsafe` of its own.

#![forbid(unsafe_code)]

mod fds;
pub mod plan;
pub mod restore;
pub mod threads;
mod timers;
pub use mitosis_prologue as prologue;
pub use mitosis_sys::runner as stub;

pub use plan::{Placement, RestorePlan, RestorePrivilege};
pub use restore::{restore, vdso_block_of, Child};

/// Why a child could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("seed cannot be resumed on this host: {0}")]
    Incompatible(String),
    /// Resuming would give the child something it must not have (a file
    /// replaced since prepare, a symbolic link swapped in).
    #[error("resume refused: {0}")]
    Refused(String),
    #[error("{step}")]
    Sys {
        step: String,
        #[source]
        source: mitosis_sys::SysError,
    },
    #[error("the new child process died before it was restored ({0})")]
    ChildDied(String),
}

impl RestoreError {
    pub(crate) fn sys(step: impl Into<String>) -> impl FnOnce(mitosis_sys::SysError) -> RestoreError {
        let step = step.into();
        move |source| RestoreError::Sys { step, source }
    }
}
