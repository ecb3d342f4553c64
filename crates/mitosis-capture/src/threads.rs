//! Stopping every thread of a target at one instant, and reading what each
//! thread needs to go on in a child.
//!
//! The kernel traces threads, not processes: each thread is seized and
//! stopped on its own. Threads may be created while that happens (a thread
//! that was not stopped yet can still clone), so the set is read from
//! `/proc/PID/task` again until a round finds no new thread: once every
//! thread is stopped, none can be created. A thread that exits meanwhile is
//! simply not part of the seed. A thread that cannot stop (one waiting in
//! `vfork()` for its child notices nothing but SIGKILL) or that someone else
//! traces makes the prepare fail with a message naming it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mitosis_proto::image::{PendingSignal, Registers, ThreadState};
use mitosis_sys::mem;
use mitosis_sys::procfs;
use mitosis_sys::ptrace::{idx, wait_stop_until, Regs, SigInfo, Tracee};
use mitosis_sys::SysError;

use crate::CaptureError;

/// How long a thread may take to reach its stop: a thread in uninterruptible
/// sleep (disk I/O) stops once the I/O is done.
const STOP_WITHIN: Duration = Duration::from_secs(2);
/// Rounds of "seize the new threads" before a target that keeps creating
/// threads faster than they are stopped is given up on.
const MAX_ROUNDS: usize = 64;

/// A thread in a ptrace stop, with a signal that arrived meanwhile (to
/// re-deliver when it is let go).
pub(crate) struct Stopped {
    pub tracee: Tracee,
    pub pending: Option<i32>,
    /// That signal's `siginfo_t`: children get it queued, as the target
    /// gets it delivered when it is let go.
    pub stop_info: Option<SigInfo>,
    /// Its registers at the stop: what it gets back when it is let go.
    pub regs: Regs,
    /// Its tid inside the target's own PID namespace (what the target
    /// knows it as: a process in a container sees other numbers than we do).
    pub tid_inside: i32,
}

/// Every thread of the target, stopped: the leader first.
pub(crate) struct ThreadSet {
    pub leader: Stopped,
    pub others: Vec<Stopped>,
}

impl ThreadSet {
    pub fn all(&self) -> impl Iterator<Item = &Stopped> {
        std::iter::once(&self.leader).chain(&self.others)
    }

    /// Gives every thread its registers back and lets it go on (the leader
    /// last). The first error is returned; every thread is let go anyway.
    pub fn release(self) -> Result<(), CaptureError> {
        let mut first = Ok(());
        for s in self.others.into_iter().chain(std::iter::once(self.leader)) {
            let restored = s.tracee.set_regs(&s.regs).map_err(CaptureError::sys("restoring the process's registers"));
            let detached = s.tracee.detach(s.pending.unwrap_or(0)).map_err(CaptureError::sys("detaching from the process"));
            if first.is_ok() {
                first = restored.and(detached);
            }
        }
        first
    }
}

/// Seizes and stops every thread of process `pid` (`options` for the
/// leader, none for the others).
pub(crate) fn seize_all(pid: i32, options: libc::c_int) -> Result<ThreadSet, CaptureError> {
    let mut stopped: BTreeMap<i32, Stopped> = BTreeMap::new();
    let mut gone: Vec<i32> = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let tids = procfs::thread_ids(pid).map_err(|_| CaptureError::NoProcess { pid })?;
        let new: Vec<i32> = tids.into_iter().filter(|t| !stopped.contains_key(t) && !gone.contains(t)).collect();
        if new.is_empty() {
            let Some(leader) = stopped.remove(&pid) else {
                return Err(CaptureError::Unsupported { pid, what: "its main thread has exited (only its other threads run)".into() });
            };
            return Ok(ThreadSet { leader, others: stopped.into_values().collect() });
        }
        let mut asked = Vec::with_capacity(new.len());
        for tid in new {
            match Tracee::seize(tid, if tid == pid { options } else { 0 }) {
                Ok(t) => {
                    t.request_stop().map_err(CaptureError::sys("stopping a thread"))?;
                    asked.push(t);
                }
                Err(e) if e.errno == libc::ESRCH => gone.push(tid),
                Err(e) if e.errno == libc::EPERM => {
                    return Err(CaptureError::Unsupported {
                        pid,
                        what: format!(
                            "thread {tid} is already traced with ptrace (by a debugger, or by another prepare in progress)"
                        ),
                    })
                }
                Err(e) => return Err(CaptureError::Sys { step: "attaching with ptrace", source: e }),
            }
        }
        let deadline = Instant::now() + STOP_WITHIN;
        for t in asked {
            let tid = t.pid();
            let Some(stop) = wait_stop_until(tid, deadline).map_err(CaptureError::sys("stopping a thread"))? else {
                return Err(CaptureError::Unsupported { pid, what: format!("thread {tid} did not stop within {STOP_WITHIN:?}: {}", why_not_stopping(pid, tid)) });
            };
            match Tracee::stopped_as(stop) {
                Ok(pending) => {
                    let regs = t.get_regs().map_err(CaptureError::sys("reading registers"))?;
                    let stop_info = match pending {
                        Some(_) => Some(t.stop_siginfo().map_err(CaptureError::sys("reading a signal that arrived"))?),
                        None => None,
                    };
                    let tid_inside = tid_inside(pid, tid)?;
                    stopped.insert(tid, Stopped { tracee: t, pending, stop_info, regs, tid_inside });
                }
                // It exited between the seize and the stop: not part of the seed.
                Err(_) => gone.push(tid),
            }
        }
    }
    Err(CaptureError::Unsupported { pid, what: format!("it keeps creating threads: the set was not stable after {MAX_ROUNDS} rounds") })
}

/// Thread `tid`'s id inside its own PID namespace (`NSpid`'s last field).
fn tid_inside(pid: i32, tid: i32) -> Result<i32, CaptureError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).map_err(|_| CaptureError::NoProcess { pid })?;
    match procfs::parse_status(&status).ns_pid {
        0 => Err(CaptureError::Unsupported { pid, what: format!("thread {tid} has no NSpid line in /proc") }),
        inside => Ok(inside),
    }
}

/// What a thread that does not stop is doing, from `/proc`.
fn why_not_stopping(pid: i32, tid: i32) -> String {
    let read = |what: &str| std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/{what}")).unwrap_or_default();
    let status = read("status");
    let state = status.lines().find_map(|l| l.strip_prefix("State:")).unwrap_or("unknown").trim().to_string();
    let syscall: Vec<i64> = read("syscall").split_whitespace().take(2).filter_map(parse_number).collect();
    let vfork = match syscall.as_slice() {
        [nr, _] if *nr == libc::SYS_vfork => true,
        [nr, flags] if *nr == libc::SYS_clone => flags & i64::from(libc::CLONE_VFORK) != 0,
        _ => false,
    };
    if vfork {
        return "it is in vfork(), waiting for its child to exec or exit, which no signal but SIGKILL interrupts; prepare it after that".into();
    }
    match syscall.first() {
        Some(nr) => format!("state {state:?}, in system call {nr}"),
        None => format!("state {state:?}"),
    }
}

fn parse_number(w: &str) -> Option<i64> {
    match w.strip_prefix("0x") {
        Some(hex) => i64::from_str_radix(hex, 16).ok(),
        None => w.parse().ok(),
    }
}

/// 32 bytes of the target's memory for the out-parameters of injected
/// calls: below the leader's stack red zone, saved first and written back
/// by [`Scratch::restore`]. Every thread's calls use them (one memory).
pub(crate) struct Scratch {
    pid: i32,
    pub addr: u64,
    saved: [u8; 32],
}

impl Scratch {
    pub fn save(pid: i32, leader_regs: &Regs) -> Result<Scratch, CaptureError> {
        let addr = (leader_regs[idx::RSP] - 128 - 64) & !15;
        let mut saved = [0u8; 32];
        mem::read_ranges_fully(pid, None, &[(addr, 32)], &mut saved).map_err(CaptureError::sys("reading the stack below the red zone"))?;
        Ok(Scratch { pid, addr, saved })
    }

    /// Writes the saved bytes back.
    pub fn restore(self) -> Result<(), CaptureError> {
        let mem = mem::ProcMem::open(self.pid, true).map_err(CaptureError::sys("restoring the stack"))?;
        mem.write_all_at(&self.saved, self.addr).map_err(CaptureError::sys("restoring the stack"))
    }
}

/// Runs syscalls inside one stopped thread through the vDSO's `syscall`
/// instruction, with out-parameters in the [`Scratch`] bytes.
pub(crate) struct Probe<'a> {
    tracee: &'a Tracee,
    /// The thread group: whose memory the scratch bytes are read from.
    pid: i32,
    regs: Regs,
    gadget: u64,
    pub scratch: u64,
}

impl<'a> Probe<'a> {
    pub fn new(tracee: &'a Tracee, pid: i32, regs: Regs, gadget: u64, scratch: &Scratch) -> Probe<'a> {
        Probe { tracee, pid, regs, gadget, scratch: scratch.addr }
    }

    /// Runs syscall `nr`; its result, an error if it failed.
    pub fn call(&self, nr: i64, args: &[u64], step: &'static str) -> Result<i64, CaptureError> {
        let r = self.call_raw(nr, args, step, |_, _| Ok(()))?;
        if r < 0 {
            return Err(CaptureError::Sys { step, source: SysError::new("injected syscall", crate::errno_of(r)) });
        }
        Ok(r)
    }

    /// Runs syscall `nr` and returns its raw result; `on_event` sees the
    /// ptrace events on the way (the snapshot's fork).
    pub fn call_raw(
        &self,
        nr: i64,
        args: &[u64],
        step: &'static str,
        on_event: impl FnMut(&Tracee, i32) -> mitosis_sys::Result<()>,
    ) -> Result<i64, CaptureError> {
        self.tracee.inject_syscall(&self.regs, self.gadget, nr, args, on_event).map_err(CaptureError::sys(step))
    }

    /// Runs syscall `nr` and returns the four words it wrote at the scratch bytes.
    pub fn query(&self, nr: i64, args: &[u64], step: &'static str) -> Result<[u64; 4], CaptureError> {
        self.call(nr, args, step)?;
        let mut b = [0u8; 32];
        mem::read_ranges_fully(self.pid, None, &[(self.scratch, 32)], &mut b).map_err(CaptureError::sys(step))?;
        Ok(std::array::from_fn(|i| u64::from_ne_bytes(b[i * 8..i * 8 + 8].try_into().unwrap())))
    }

    /// The thread's `set_tid_address` pointer and alternate signal stack.
    pub fn tid_address_and_altstack(&self) -> Result<(u64, (u64, i32, u64)), CaptureError> {
        let tid_address = self.query(libc::SYS_prctl, &[libc::PR_GET_TID_ADDRESS as u64, self.scratch], "reading the tid address")?[0];
        let w = self.query(libc::SYS_sigaltstack, &[0, self.scratch], "reading the alternate signal stack")?;
        // ss_flags is an int in the low half of its word (SS_AUTODISARM is its sign bit).
        let altstack = (w[0], i32::from_ne_bytes(u32::try_from(w[1] & 0xffff_ffff).unwrap_or(0).to_ne_bytes()), w[2]);
        Ok((tid_address, altstack))
    }

}

/// What a child needs of non-leader thread `s` of process `pid`. The
/// thread runs its injected calls on `cpu`, the tracer's (a wake-up on
/// another CPU costs tens of microseconds here), and gets its CPUs back.
pub(crate) fn thread_state(pid: i32, s: &Stopped, gadget: u64, scratch: &Scratch, cpu: usize) -> Result<ThreadState, CaptureError> {
    let t = &s.tracee;
    let tid = t.pid();
    let _pin = mitosis_sys::affinity::Pin::to(tid, cpu).ok();
    let xstate = t.get_xstate().map_err(CaptureError::sys("reading a thread's xsave state"))?;
    let rseq = t.rseq().map_err(CaptureError::sys("reading a thread's rseq registration"))?;
    let blocked = t.get_sigmask().map_err(CaptureError::sys("reading a thread's signal mask"))?;
    let robust_list = mitosis_sys::process::robust_list(tid).map_err(CaptureError::sys("reading a thread's robust futex list"))?;
    let (tid_address, altstack) = Probe::new(t, pid, s.regs, gadget, scratch).tid_address_and_altstack()?;
    Ok(ThreadState {
        tid: s.tid_inside,
        regs: Registers { words: crate::child_view_of(s.regs) },
        xstate,
        blocked,
        rseq,
        robust_list,
        tid_address,
        altstack,
        comm: comm_of(pid, tid),
        pending: pending_of(s, false)?,
    })
}

/// The signals pending for stopped thread `s` (with `shared`, for its whole
/// process), and the one that arrived while it was being stopped.
pub(crate) fn pending_of(s: &Stopped, shared: bool) -> Result<Vec<PendingSignal>, CaptureError> {
    let mut infos = s.tracee.pending_signals(shared).map_err(CaptureError::sys("reading pending signals"))?;
    if !shared {
        infos.extend(s.stop_info);
    }
    Ok(infos.into_iter().map(|i| PendingSignal { info: i.to_vec() }).collect())
}

/// The name of thread `tid` (`comm`), at most 15 bytes.
pub(crate) fn comm_of(pid: i32, tid: i32) -> String {
    let mut comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).unwrap_or_default();
    while comm.ends_with('\n') {
        comm.pop();
    }
    while comm.len() > 15 {
        comm.pop();
    }
    comm
}

/// Size of glibc's thread control block searched for the cached tid.
const TCB_SEARCH: usize = 2048;
/// Offset of `header.self` in glibc's x86-64 `tcbhead_t` (it points at the TCB itself).
const TCB_SELF: usize = 16;

/// Where glibc caches the tid in each thread's control block (at
/// `fs_base`): the one offset at which every thread of `threads` (tid,
/// fs_base) holds its own tid. Needs two threads or more (with one, a tid
/// could sit at several offsets by chance) whose TCBs look like glibc's
/// (`header.self` points at the TCB); `None` otherwise.
pub(crate) fn tcb_tid_offset(pid: i32, threads: &[(i32, u64)]) -> Option<u32> {
    if threads.len() < 2 {
        return None;
    }
    let mut candidates: Option<Vec<usize>> = None;
    let mut block = vec![0u8; TCB_SEARCH];
    for &(tid, fs_base) in threads {
        if fs_base == 0 || mem::read_ranges(pid, &[(fs_base, TCB_SEARCH as u64)], &mut block).ok()? != TCB_SEARCH {
            return None;
        }
        let word = |o: usize| u64::from_ne_bytes(block[o..o + 8].try_into().unwrap());
        if word(TCB_SELF) != fs_base {
            return None;
        }
        let tid_bytes = tid.to_ne_bytes();
        let here: Vec<usize> = (TCB_SELF + 8..TCB_SEARCH - 4).step_by(4).filter(|&o| block[o..o + 4] == tid_bytes).collect();
        candidates = Some(match candidates {
            None => here,
            Some(before) => before.into_iter().filter(|o| here.contains(o)).collect(),
        });
    }
    match candidates.as_deref() {
        Some([one]) => u32::try_from(*one).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_of_proc_syscall() {
        assert_eq!(parse_number("0x4011"), Some(0x4011));
        assert_eq!(parse_number("58"), Some(58));
        assert_eq!(parse_number("running"), None);
    }

    #[test]
    fn finds_glibc_tid_offset_in_this_process() {
        // This test process has several threads (the harness's); each one's
        // fs_base is its TCB. Read two of them from /proc and our own TLS.
        let me = i32::try_from(std::process::id()).unwrap();
        // The other thread stays alive (its TCB holds its tid) until told.
        let (said, heard) = std::sync::mpsc::channel();
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            said.send((mitosis_sys::process::gettid(), mitosis_sys::process::fs_base().unwrap())).unwrap();
            let _ = wait.recv();
        });
        let there = heard.recv().unwrap();
        let main = (mitosis_sys::process::gettid(), mitosis_sys::process::fs_base().unwrap());
        let offset = tcb_tid_offset(me, &[main, there]);
        drop(done);
        other.join().unwrap();
        // glibc 2.36 keeps it at 0x2d0; any glibc keeps it somewhere past the header.
        let offset = offset.expect("glibc's cached tid is found");
        assert!(offset as usize > TCB_SELF && (offset as usize) < TCB_SEARCH);
        assert_eq!(tcb_tid_offset(me, &[main]), None, "one thread is not enough");
    }
}
