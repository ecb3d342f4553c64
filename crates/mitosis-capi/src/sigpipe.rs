//! Keeping SIGPIPE away from the C program.
//!
//! Rust programs ignore SIGPIPE; C programs usually do not. A write to a
//! daemon connection that the daemon has closed (it stopped, or dropped us)
//! would then kill the calling program instead of failing with EPIPE. Each
//! exported function therefore runs with SIGPIPE blocked in the calling
//! thread, and a SIGPIPE its own writes raised is discarded before the mask
//! is restored (the technique of libcurl and OpenSSL). A SIGPIPE that was
//! already pending before the call is left alone.

use std::mem::MaybeUninit;

/// SIGPIPE blocked in this thread until drop.
pub struct SigpipeBlocked {
    old: libc::sigset_t,
    was_pending: bool,
}

/// The set holding only SIGPIPE.
fn sigpipe_set() -> libc::sigset_t {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initializes the set it is given; sigaddset then
    // adds a valid signal number to an initialized set.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigaddset(set.as_mut_ptr(), libc::SIGPIPE);
        set.assume_init()
    }
}

/// Whether SIGPIPE is pending for this thread (or the process).
fn sigpipe_pending() -> bool {
    let mut pending = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigpending fills the set it is given; sigismember reads it only
    // once it is filled.
    unsafe { libc::sigpending(pending.as_mut_ptr()) == 0 && libc::sigismember(pending.as_ptr(), libc::SIGPIPE) == 1 }
}

/// Blocks SIGPIPE in the calling thread until the result is dropped.
pub fn block() -> SigpipeBlocked {
    let set = sigpipe_set();
    let mut old = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: valid sets; pthread_sigmask fills `old` (it cannot fail with a
    // valid `how`; should it, `old` is still initialized by the zeroing below).
    let old = unsafe {
        std::ptr::write_bytes(old.as_mut_ptr(), 0, 1);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, old.as_mut_ptr());
        old.assume_init()
    };
    SigpipeBlocked { old, was_pending: sigpipe_pending() }
}

impl Drop for SigpipeBlocked {
    fn drop(&mut self) {
        if !self.was_pending && sigpipe_pending() {
            let set = sigpipe_set();
            let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: valid set and timeout; a NULL info pointer is allowed.
            // Takes the SIGPIPE our writes raised (it is blocked, so pending).
            unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &zero) };
        }
        // SAFETY: restores the mask saved in `block`, a valid set.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}
