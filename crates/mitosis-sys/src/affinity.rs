//! Keeping a tracer and its tracee on one CPU.
//!
//! Every ptrace round trip wakes the other side. On these machines a wake-up
//! on the other vCPU costs about 45 us each way, and on the same CPU a few us,
//! so the threads that drive a tracee pin themselves (and it) to one CPU for
//! the duration.

use crate::{Result, SysError};

fn get(pid: i32) -> Result<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer and size.
    if unsafe { libc::sched_getaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return Err(SysError::last("sched_getaffinity"));
    }
    Ok(set)
}

fn set(pid: i32, set: &libc::cpu_set_t) -> Result<()> {
    // SAFETY: valid pointer and size.
    if unsafe { libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), set) } != 0 {
        return Err(SysError::last("sched_setaffinity"));
    }
    Ok(())
}

fn one(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: plain data, then the libc macros on it.
    unsafe {
        let mut s: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut s);
        s
    }
}

/// The CPU the calling thread runs on.
pub fn current_cpu() -> usize {
    // SAFETY: no arguments.
    let c = unsafe { libc::sched_getcpu() };
    c.max(0).unsigned_abs() as usize
}

/// The CPU process `pid` last ran on (field 39 of /proc/PID/stat).
pub fn last_cpu(pid: i32) -> Option<usize> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(36)?.parse().ok()
}

/// Pins a thread or process (`pid`, 0 for the calling thread) to one CPU and
/// gives it back its previous CPUs when dropped.
pub struct Pin {
    pid: i32,
    before: libc::cpu_set_t,
}

impl Pin {
    pub fn to(pid: i32, cpu: usize) -> Result<Pin> {
        let before = get(pid)?;
        set(pid, &one(cpu))?;
        Ok(Pin { pid, before })
    }

    /// Gives thread `tid` the CPUs the pinned thread had before: for a
    /// thread it created while pinned, which inherited the pin.
    pub fn unpin_also(&self, tid: i32) -> Result<()> {
        set(tid, &self.before)
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let _ = set(self.pid, &self.before);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_and_unpins_this_thread() {
        let cpu = current_cpu();
        {
            let p = Pin::to(0, cpu).unwrap();
            assert_eq!(current_cpu(), cpu);
            // A thread created while pinned inherits the pin, until unpinned too.
            let (said, heard) = std::sync::mpsc::channel();
            let (go, wait) = std::sync::mpsc::channel::<()>();
            let other = std::thread::spawn(move || {
                // SAFETY: counting the bits of an initialized cpu set.
                said.send((crate::process::gettid(), unsafe { libc::CPU_COUNT(&get(0).unwrap()) })).unwrap();
                wait.recv().unwrap();
                get(0).unwrap()
            });
            let (tid, pinned) = heard.recv().unwrap();
            p.unpin_also(tid).unwrap();
            go.send(()).unwrap();
            let after = other.join().unwrap();
            // SAFETY: comparing two initialized cpu sets.
            let inherited = (pinned, unsafe { libc::CPU_EQUAL(&after, &p.before) });
            assert_eq!(inherited, (1, true));
        }
        assert!(last_cpu(i32::try_from(std::process::id()).unwrap()).is_some());
    }
}
