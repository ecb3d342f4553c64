//! Taking signals synchronously: a set blocked in every thread and waited
//! for by one (`sigwait`), so that no handler runs on an arbitrary thread.

use crate::{Result, SysError};

/// A set of signals.
#[derive(Clone, Copy)]
pub struct SignalSet(libc::sigset_t);

impl SignalSet {
    /// The set of `signals`.
    pub fn of(signals: &[i32]) -> Result<SignalSet> {
        // SAFETY: sigemptyset/sigaddset initialise and fill a sigset_t of ours.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for &s in signals {
                if libc::sigaddset(&mut set, s) != 0 {
                    return Err(SysError::new("sigaddset", libc::EINVAL));
                }
            }
            Ok(SignalSet(set))
        }
    }

    /// Blocks the set in the calling thread; threads it spawns afterwards
    /// inherit the mask.
    pub fn block(&self) -> Result<()> {
        // SAFETY: a valid set; the old mask is not asked for.
        let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &self.0, std::ptr::null_mut()) };
        if r != 0 {
            return Err(SysError::new("pthread_sigmask", r));
        }
        Ok(())
    }

    /// Waits for one signal of the set (which must be blocked) and returns it.
    pub fn wait(&self) -> Result<i32> {
        let mut sig = 0;
        // SAFETY: a valid set; sigwait stores the signal taken in `sig`.
        let r = unsafe { libc::sigwait(&self.0, &mut sig) };
        if r != 0 {
            return Err(SysError::new("sigwait", r));
        }
        Ok(sig)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_signal_is_taken_by_wait() {
        // In a thread of its own, so the test harness's other threads are untouched.
        std::thread::spawn(|| {
            let set = SignalSet::of(&[libc::SIGUSR2]).unwrap();
            set.block().unwrap();
            // SAFETY: raising a blocked signal on this thread only leaves it pending.
            let r = unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGUSR2) };
            assert_eq!(r, 0);
            assert_eq!(set.wait().unwrap(), libc::SIGUSR2);
        })
        .join()
        .unwrap();
        assert!(SignalSet::of(&[1000]).is_err());
    }
}
