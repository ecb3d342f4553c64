//! Recreating a seed's other threads in a child.
//!
//! Once the child's layout stands and its pager serves, the daemon makes the
//! child's only thread (stopped, all signals blocked) call `clone3` once per
//! seed thread, asking for the seed's tid (`set_tid`). The new thread is
//! traced from birth (`PTRACE_O_TRACECLONE`) and stops before it runs a
//! single instruction of its own; the daemon then has it run the table
//! runner over a table of the calls that set its per-thread kernel state
//! (robust list, tid address, alternate signal stack, name, rseq: one stop
//! for all), and sets its registers (with its thread pointer), xsave state
//! and signal mask. Every thread stays stopped, on the daemon's CPU, until
//! all are ready; the caller gives each its CPUs back and lets them go.
//!
//! A tid is kept when it is free in the child's PID namespace and the child
//! may choose it (`CAP_SYS_ADMIN` over that namespace): always in a
//! container of its own, unless the tid collides with the container's init
//! (1) or the child itself. Otherwise the thread gets a fresh tid, and the
//! tid glibc caches in the thread's control block (`tcb_tid_offset`, found
//! at prepare) is rewritten, so that `pthread_kill`, `pthread_join` and
//! mutex ownership go on working. Tids a program stored itself stay the
//! seed's.

use mitosis_proto::image::{reg, PendingSignal, SeedImage, ThreadState};
use mitosis_sys::mem::{self, ProcMem};
use mitosis_sys::ptrace::{idx, wait_stop, Regs, Stop, Tracee};
use mitosis_sys::runner::{Table, ENTRY};
use mitosis_sys::SysError;

use crate::restore::{task_name, TASK_NAME_LEN};
use crate::RestoreError;

/// Bytes of the child's scratch memory one thread's creation uses (one
/// thread at a time): the `clone_args` (88 bytes), the tid asked for, a
/// `stack_t`, the name and the thread's syscall table.
pub(crate) const SLOT_BYTES: u64 = TABLE_AT + MAX_TABLE_ENTRIES * ENTRY as u64;
const CLONE_ARGS_SIZE: u64 = 88;
const SET_TID_AT: u64 = 96;
const STACK_T_AT: u64 = 104;
const NAME_AT: u64 = 136;
const TABLE_AT: u64 = 192;
/// Robust list, tid address, alternate stack, name, rseq, end marker.
const MAX_TABLE_ENTRIES: u64 = 6;
// The slot's parts do not overlap (checked when compiling).
const _: () = assert!(CLONE_ARGS_SIZE <= SET_TID_AT && SET_TID_AT + 4 <= STACK_T_AT && STACK_T_AT + 24 <= NAME_AT);
const _: () = assert!(NAME_AT + TASK_NAME_LEN as u64 <= TABLE_AT && TABLE_AT.is_multiple_of(8));

/// What the child's threads are, once created (still stopped).
pub(crate) struct Threads {
    /// The recreated threads, in image order.
    pub tracees: Vec<Tracee>,
    /// Each thread's tid at the seed and in the child (inside its PID
    /// namespace), in image order.
    pub tids: Vec<(i32, i32)>,
    /// How many kept their seed tid.
    pub kept_tids: usize,
    /// Time spent creating the threads and setting them up, in microseconds.
    pub clone_us: u64,
    pub setup_us: u64,
}

/// What the threads need from the restore of the leader.
pub(crate) struct ThreadContext<'a> {
    pub leader: &'a Tracee,
    /// The leader's registers to inject from.
    pub base: &'a Regs,
    /// A `syscall` instruction in the seed's layout.
    pub gadget: u64,
    pub mem: &'a ProcMem,
    /// The child's pid as this daemon sees it.
    pub pid: i32,
    /// Scratch memory of the child for [`SLOT_BYTES`] per thread.
    pub slot: u64,
    /// Where the table runner's code is in the child.
    pub runner: u64,
    /// The self-prepare answer length (for the thread that waited in `read`).
    pub reply_len: Option<u64>,
}

/// Creates and sets up every thread of `image` but the leader in the child.
///
/// In three passes, so that the threads' first touches of the seed's memory
/// (each thread's rseq area, in its own thread control block: a page of its
/// own, not fetched yet) wait for the pager together rather than one after
/// the other: create every thread; start every thread's table; then wait
/// for each and give it its registers.
pub(crate) fn create(cx: &ThreadContext<'_>, image: &SeedImage) -> Result<Threads, RestoreError> {
    let mut out = Threads { tracees: Vec::with_capacity(image.threads.len()), tids: Vec::new(), kept_tids: 0, clone_us: 0, setup_us: 0 };
    let us = |t: std::time::Instant| u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
    if image.threads.is_empty() {
        return Ok(out);
    }
    cx.leader
        .set_options(libc::PTRACE_O_EXITKILL | libc::PTRACE_O_TRACECLONE)
        .map_err(RestoreError::sys("tracing the child's new threads"))?;
    let t0 = std::time::Instant::now();
    let mut tids_here = Vec::with_capacity(image.threads.len());
    for (i, t) in image.threads.iter().enumerate() {
        let (tracee, tid_here) = clone_thread(cx, slot_of(cx, i), t)?;
        out.tracees.push(tracee);
        tids_here.push(tid_here);
    }
    out.clone_us = us(t0);
    let t0 = std::time::Instant::now();
    let mut tables = Vec::with_capacity(image.threads.len());
    for (i, (t, tracee)) in image.threads.iter().zip(&out.tracees).enumerate() {
        tables.push(start_table(cx, slot_of(cx, i), tracee, t)?);
    }
    let tgid = if image.threads.iter().any(|t| !t.pending.is_empty()) { pid_inside(cx.pid)? } else { 0 };
    for (i, ((t, tracee), table)) in image.threads.iter().zip(&out.tracees).zip(&tables).enumerate() {
        let what = format!("thread {} ({}) step", t.tid, t.comm);
        crate::restore::table_result(tracee, slot_of(cx, i) + TABLE_AT, table, &what)?;
        queue_signals(cx, tracee, slot_of(cx, i) + STACK_T_AT, (tgid, Some(tids_here[i])), &t.pending)?;
        finish(cx, tracee, image, i, t)?;
    }
    out.tids = image.threads.iter().map(|t| t.tid).zip(tids_here.iter().copied()).collect();
    for (t, &tid_here) in image.threads.iter().zip(&tids_here) {
        if tid_here == t.tid {
            out.kept_tids += 1;
        } else {
            rewrite_cached_tid(cx, image, t.regs.words[idx::FS_BASE], tid_here)?;
        }
    }
    out.setup_us = us(t0);
    Ok(out)
}

/// Queues again, in stopped thread `tracee`, signals that were pending at
/// the prepare, with their `siginfo_t`s as they were: to itself
/// (`rt_tgsigqueueinfo` with `target` = (tgid, Some(its tid))), or, from the
/// leader, to the whole process (`(tgid, None)`, `rt_sigqueueinfo`). The
/// kernel lets only a thread queue such a `siginfo_t` to itself (the
/// leader's tid is its process's id). `buf` is 128 bytes of the child's
/// scratch memory. Leaves the thread's registers to be set after.
pub(crate) fn queue_signals(cx: &ThreadContext<'_>, tracee: &Tracee, buf: u64, target: (i32, Option<i32>), signals: &[PendingSignal]) -> Result<(), RestoreError> {
    if signals.is_empty() {
        return Ok(());
    }
    // Every signal blocked until the seed's mask is set, so that none of
    // them is delivered here (to this restore's ptrace stops); the injected
    // calls then step from syscall stop to syscall stop, no trap (see
    // `Tracee::inject_syscall`).
    tracee.set_sigmask(u64::MAX).map_err(RestoreError::sys("blocking signals to queue pending ones"))?;
    let base = tracee.get_regs().map_err(RestoreError::sys("reading registers to queue pending signals"))?;
    let (tgid, tid) = target;
    for s in signals {
        let signo = u64::try_from(s.signo()).unwrap_or(0);
        cx.mem.write_all_at(&s.info, buf).map_err(RestoreError::sys("writing a pending signal"))?;
        let (nr, args) = match tid {
            Some(tid) => (libc::SYS_rt_tgsigqueueinfo, vec![tgid.unsigned_abs().into(), tid.unsigned_abs().into(), signo, buf]),
            None => (libc::SYS_rt_sigqueueinfo, vec![tgid.unsigned_abs().into(), signo, buf]),
        };
        let r = tracee.inject_syscall(&base, cx.gadget, nr, &args, |_, _| Ok(())).map_err(RestoreError::sys("queueing a pending signal"))?;
        if r < 0 {
            return Err(RestoreError::Sys {
                step: format!("queueing pending signal {signo}"),
                source: SysError::new("syscall in the child", i32::try_from(-r).unwrap_or(libc::EINVAL)),
            });
        }
    }
    Ok(())
}

/// The leader's own pending signals and the process's, queued from the
/// leader (see [`queue_signals`]).
pub(crate) fn queue_leader_signals(cx: &ThreadContext<'_>, image: &SeedImage, buf: u64) -> Result<(), RestoreError> {
    if image.pending.is_empty() && image.shared_pending.is_empty() {
        return Ok(());
    }
    let tgid = pid_inside(cx.pid)?;
    queue_signals(cx, cx.leader, buf, (tgid, Some(tgid)), &image.pending)?;
    queue_signals(cx, cx.leader, buf, (tgid, None), &image.shared_pending)
}

/// Thread `i`'s part of the scratch memory.
fn slot_of(cx: &ThreadContext<'_>, i: usize) -> u64 {
    cx.slot + i as u64 * SLOT_BYTES
}

impl Threads {
    /// Gives each thread the CPUs the leader had before the restore pinned
    /// it (they inherited the pin) and lets it go.
    pub fn start(self, pin: Option<&mitosis_sys::affinity::Pin>) -> Result<(), RestoreError> {
        for t in self.tracees {
            if let Some(pin) = pin {
                pin.unpin_also(t.pid()).map_err(RestoreError::sys("giving a new thread its CPUs"))?;
            }
            t.detach(0).map_err(RestoreError::sys("starting one of the child's threads"))?;
        }
        Ok(())
    }
}

/// Rewrites the tid glibc caches at `fs_base + tcb_tid_offset` to `tid`, if
/// the offset is known (it is for every multi-threaded seed of glibc).
pub(crate) fn rewrite_cached_tid(cx: &ThreadContext<'_>, image: &SeedImage, fs_base: u64, tid: i32) -> Result<(), RestoreError> {
    let Some(offset) = image.tcb_tid_offset else { return Ok(()) };
    let at = fs_base + u64::from(offset);
    // /proc/PID/mem does not wait for the pager: fault the page in first
    // through process_vm_readv, which does.
    let mut old = [0u8; 4];
    if mem::read_ranges(cx.pid, &[(at, 4)], &mut old).map_err(RestoreError::sys("reading a thread's cached tid"))? != 4 {
        return Err(RestoreError::Sys { step: "reading a thread's cached tid".into(), source: SysError::new("process_vm_readv", libc::EFAULT) });
    }
    cx.mem.write_all_at(&tid.to_ne_bytes(), at).map_err(RestoreError::sys("rewriting a thread's cached tid"))
}

/// Calls `clone3` in the leader for thread `t` (its arguments at `slot`);
/// returns the new thread (traced, stopped) and its tid in the child's PID
/// namespace.
fn clone_thread(cx: &ThreadContext<'_>, slot: u64, t: &ThreadState) -> Result<(Tracee, i32), RestoreError> {
    let step = || format!("creating thread {} ({})", t.tid, t.comm);
    let flags = libc::CLONE_VM | libc::CLONE_FS | libc::CLONE_FILES | libc::CLONE_SIGHAND | libc::CLONE_THREAD | libc::CLONE_SYSVSEM;
    let mut result = 0;
    let mut new_tid = None;
    for ask_tid in [true, false] {
        // struct clone_args: flags, pidfd, child_tid, parent_tid, exit_signal,
        // stack, stack_size, tls, set_tid, set_tid_size, cgroup.
        let set_tid = if ask_tid { slot + SET_TID_AT } else { 0 };
        let words: [u64; 11] = [flags as u64, 0, 0, 0, 0, 0, 0, 0, set_tid, u64::from(ask_tid), 0];
        let mut bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        bytes.resize(SET_TID_AT as usize, 0);
        bytes.extend_from_slice(&t.tid.to_ne_bytes());
        cx.mem.write_all_at(&bytes, slot).map_err(RestoreError::sys(step()))?;
        result = cx
            .leader
            .inject_syscall(cx.base, cx.gadget, libc::SYS_clone3, &[slot, CLONE_ARGS_SIZE], |leader, ev| {
                if ev == libc::PTRACE_EVENT_CLONE {
                    new_tid = i32::try_from(leader.event_msg()?).ok();
                }
                Ok(())
            })
            .map_err(RestoreError::sys(step()))?;
        // Taken (EEXIST) or not ours to choose (EPERM): a fresh tid will do.
        let retry = ask_tid && (result == -i64::from(libc::EEXIST) || result == -i64::from(libc::EPERM));
        if !retry {
            break;
        }
    }
    if result < 0 {
        return Err(RestoreError::Sys { step: step(), source: SysError::new("clone3 in the child", -result as i32) });
    }
    let tid_here = i32::try_from(result).map_err(|_| RestoreError::ChildDied(format!("clone3 returned {result}")))?;
    let Some(host_tid) = new_tid else {
        return Err(RestoreError::ChildDied(format!("thread {tid_here} was created without a clone event")));
    };
    let tracee = Tracee::adopt(host_tid);
    match wait_stop(host_tid).map_err(RestoreError::sys(step()))? {
        Stop::Event(_) | Stop::Signal(libc::SIGSTOP) => Ok((tracee, tid_here)),
        Stop::Gone(status) => Err(RestoreError::ChildDied(format!("new thread {host_tid} died, wait status {status:#x}"))),
        other => Err(RestoreError::ChildDied(format!("new thread {host_tid}: unexpected stop {other:?}"))),
    }
}

/// Writes new thread `tracee`'s table of the calls that give it seed thread
/// `t`'s kernel state (at `slot`) and starts it running that table.
fn start_table(cx: &ThreadContext<'_>, slot: u64, tracee: &Tracee, t: &ThreadState) -> Result<Table, RestoreError> {
    let base = tracee.get_regs().map_err(RestoreError::sys("reading a new thread's registers"))?;
    let mut table = Table::default();
    let (head, len) = t.robust_list;
    if head != 0 {
        table.push(libc::SYS_set_robust_list, [head, len, 0, 0, 0, 0], "set the robust futex list");
    }
    table.push(libc::SYS_set_tid_address, [t.tid_address, 0, 0, 0, 0, 0], "set the tid address");
    let (sp, flags, size) = t.altstack;
    let mut bytes = vec![0u8; (TABLE_AT - STACK_T_AT) as usize];
    // SS_ONSTACK only reports that the thread was on it; it cannot be set.
    if flags & libc::SS_DISABLE == 0 {
        let flags = u64::from(flags.unsigned_abs() & !(libc::SS_ONSTACK.unsigned_abs()));
        for (i, w) in [sp, flags, size].iter().enumerate() {
            bytes[i * 8..i * 8 + 8].copy_from_slice(&w.to_ne_bytes());
        }
        table.push(libc::SYS_sigaltstack, [slot + STACK_T_AT, 0, 0, 0, 0, 0], "set the alternate signal stack");
    }
    let name_at = (NAME_AT - STACK_T_AT) as usize;
    bytes[name_at..name_at + TASK_NAME_LEN].copy_from_slice(&task_name(&t.comm));
    table.push(libc::SYS_prctl, [libc::PR_SET_NAME as u64, slot + NAME_AT, 0, 0, 0, 0], "set the name");
    if let Some((addr, len, sig)) = t.rseq {
        // The area's first touch: the kernel reads it here, in the system
        // call, where a fault waits for the pager (the kernel's later
        // updates, on the way back to user space, find the page there).
        table.push(libc::SYS_rseq, [addr, u64::from(len), 0, u64::from(sig), 0, 0], "register the rseq area");
    }
    bytes.extend_from_slice(&table.encode());
    debug_assert!(STACK_T_AT + bytes.len() as u64 <= SLOT_BYTES);
    cx.mem.write_all_at(&bytes, slot + STACK_T_AT).map_err(RestoreError::sys("writing a thread's restore table"))?;
    crate::restore::start_table(tracee, &base, cx.runner, slot + TABLE_AT)?;
    Ok(table)
}

/// Gives thread `tracee`, whose table ran, seed thread `t`'s (the
/// `index`th) registers, xsave state and signal mask.
fn finish(cx: &ThreadContext<'_>, tracee: &Tracee, image: &SeedImage, index: usize, t: &ThreadState) -> Result<(), RestoreError> {
    let mut regs: Regs = t.regs.words;
    if let (Some(len), true) = (cx.reply_len, image.reply_thread.and_then(|r| usize::try_from(r).ok()) == Some(index)) {
        regs[reg::RAX] = len;
        regs[reg::ORIG_RAX] = u64::MAX;
    }
    tracee.set_regs(&regs).map_err(RestoreError::sys("setting a thread's registers"))?;
    tracee.set_xstate(&t.xstate).map_err(RestoreError::sys("setting a thread's FPU/SSE/AVX state"))?;
    tracee.set_sigmask(t.blocked).map_err(RestoreError::sys("setting a thread's signal mask"))?;
    Ok(())
}

/// The child's pid inside its own PID namespace (`NSpid`'s last field):
/// the leader's tid as the child's glibc must cache it.
pub(crate) fn pid_inside(pid: i32) -> Result<i32, RestoreError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| RestoreError::ChildDied(e.to_string()))?;
    match mitosis_sys::procfs::parse_status(&status).ns_pid {
        0 => Err(RestoreError::ChildDied(format!("no NSpid line for process {pid}"))),
        inside => Ok(inside),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_pid_inside_its_namespace() {
        let me = i32::try_from(std::process::id()).unwrap();
        // The test runs in the namespace it was started in: NSpid ends with its pid.
        assert_eq!(pid_inside(me).unwrap(), me);
    }
}
