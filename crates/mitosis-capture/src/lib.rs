//! Prepare: turn a running x86-64 process, every thread of it, into a *seed*.
//!
//! A seed is two things: a [`SeedImage`] (registers, xsave state, memory
//! layout, signal state, files: everything except page contents) and a
//! *snapshot process*, a copy-on-write fork of the target taken at the prepare
//! instant, kept stopped, whose memory the daemon serves to children by
//! address. The target keeps running unharmed.
//!
//! How (all from outside, with ptrace; the target needs no cooperation):
//! 1. `PTRACE_SEIZE` + `PTRACE_INTERRUPT` of every thread, until no new
//!    thread appears ([`threads`]); a thread that cannot be stopped (in
//!    `vfork()`, traced by someone else) fails the prepare, naming it.
//! 2. Read registers, xsave state and the signal mask of each thread; read
//!    `/proc/PID/*`.
//! 3. Inject a few syscalls through a `syscall` instruction of the vDSO:
//!    `rt_sigaction` for each caught signal (handler addresses are not in
//!    /proc), each thread's tid address and alternate signal stack,
//!    `brk(0)`, and finally `clone` with exit signal 0, which creates
//!    the snapshot. Exit signal 0 keeps the snapshot out of the target's
//!    `wait()` and SIGCHLD.
//! 4. Give the snapshot its own session (an injected `setsid`, so that a
//!    signal to the target's process group never reaches it) and park it in
//!    `pause()` with every signal blocked: only SIGKILL ends it, and it never
//!    runs the target's code a second time.
//! 5. Restore every thread's registers and detach.
//!
//! The snapshot is a copy of the leader only (a fork copies one thread),
//! but its memory is everyone's, taken while every thread was stopped: the
//! other threads' state is in the image ([`ThreadState`]), and children
//! recreate them.
//!
//! [`freeze`] holds a running process still for an offload, and can take
//! over its memory for the daemon's pager (a userfaultfd made inside it).
//!
//! This crate must not serve pages, talk to the network or keep seeds: the
//! daemon owns the snapshot once [`prepare`] returns.

#![forbid(unsafe_code)]
#![deny(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)]

pub mod access;
mod copy;
mod fds;
mod files;
pub mod freeze;
mod inotify;
pub mod threads;
mod shared;
mod timers;
mod unix;

pub use copy::{copy_memory, CopiedMemory};

use std::os::fd::OwnedFd;
use std::time::Instant;

use mitosis_proto::image::{
    vma_flags, IdentityMatch, MmFields, ProcessProperties, Prot, Registers, ResourceLimit, SeedImage, SigAction, SignalState,
    ThreadState, Vma, VmaKind,
};
use mitosis_sys::procfs::{self, pagemap, MapsEntry};
use mitosis_sys::ptrace::{idx, Regs, Stop, Tracee};
use mitosis_sys::vdso::{is_vdso_part, VdsoInfo};
use mitosis_sys::{pidfd, usize_of, SysError, PAGE};

const ERESTART_RESTARTBLOCK: i64 = -516;

/// Why a process could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("process {pid} does not exist or cannot be read")]
    NoProcess { pid: i32 },
    #[error("process {pid} cannot be prepared: {what}")]
    Unsupported { pid: i32, what: String },
    /// A process preparing itself is not (yet) blocked reading the daemon's answer.
    #[error("process {pid} is not waiting in read() for the answer to its prepare request")]
    NotWaiting { pid: i32 },
    /// Taking over a running process's memory ([`freeze::Frozen::adopt_userfaultfd`]) failed.
    #[error("the memory of process {pid} cannot be taken over: {what}")]
    Adopt { pid: i32, what: String },
    /// A takeover may have left one of its descriptors (`/dev/userfaultfd`,
    /// a userfaultfd) in the process: it must not run on.
    #[error("process {pid} may still hold a descriptor of the takeover of its memory")]
    LeftDescriptors { pid: i32 },
    #[error("{step}")]
    Sys {
        step: &'static str,
        #[source]
        source: SysError,
    },
}

impl CaptureError {
    fn sys(step: &'static str) -> impl FnOnce(SysError) -> CaptureError {
        move |source| CaptureError::Sys { step, source }
    }
}

/// A prepared seed: its image and the stopped snapshot process holding its memory.
pub struct Snapshot {
    pub image: SeedImage,
    pub snapshot_pid: i32,
    pub snapshot_pidfd: OwnedFd,
}

/// What the caller of [`prepare`] decides.
pub struct PrepareSpec<'a> {
    pub pid: i32,
    pub id: &'a str,
    pub generation: u64,
    pub reply_slot: Option<mitosis_proto::local::ReplySlot>,
}

fn read_proc(pid: i32, what: &str) -> Result<String, CaptureError> {
    std::fs::read_to_string(format!("/proc/{pid}/{what}")).map_err(|_| CaptureError::NoProcess { pid })
}

/// Prepares process `spec.pid`. Must run on one thread from start to end (ptrace rule).
pub fn prepare(spec: &PrepareSpec<'_>, vdso: &VdsoInfo) -> Result<Snapshot, CaptureError> {
    let t0 = Instant::now();
    let pid = spec.pid;
    let status = procfs::parse_status(&read_proc(pid, "status")?);
    if u32::try_from(pid).ok() == Some(std::process::id()) {
        return Err(CaptureError::Unsupported { pid, what: "it is this daemon itself, whose threads cannot trace each other".into() });
    }
    // Tracer and target on one CPU: every injected syscall is a round trip.
    // The target gets its own CPU set back before it runs again (guards drop on return).
    let cpu = mitosis_sys::affinity::last_cpu(pid).unwrap_or_else(mitosis_sys::affinity::current_cpu);
    let _pin_self = mitosis_sys::affinity::Pin::to(0, cpu).ok();
    let _pin_target = mitosis_sys::affinity::Pin::to(pid, cpu).ok();
    let set = threads::seize_all(pid, 0)?;
    // Only now: a clone event while the threads were being stopped would
    // have auto-attached the new thread behind the set's back.
    set.leader
        .tracee
        .set_options(libc::PTRACE_O_TRACECLONE | libc::PTRACE_O_TRACEFORK)
        .map_err(CaptureError::sys("attaching with ptrace"))?;
    // None: the leader; Some(i): the i-th of the other threads.
    let reply_thread: Option<Option<u32>> = match spec.reply_slot {
        None => Some(None),
        // A self-prepare must catch the caller (any of its threads) inside
        // read(fd, slot): that is the call whose return value tells each
        // child that it is a child.
        Some(slot) => set
            .all()
            .position(|s| {
                s.regs[mitosis_proto::image::reg::ORIG_RAX] == libc::SYS_read as u64
                    && s.regs[mitosis_proto::image::reg::RSI] == slot.addr
            })
            .map(|i| i.checked_sub(1).and_then(|i| u32::try_from(i).ok())),
    };
    let Some(reply_thread) = reply_thread else {
        let _ = set.release();
        return Err(CaptureError::NotWaiting { pid });
    };
    let result = capture_stopped(spec, vdso, &set, &status, reply_thread);
    // Whatever happened, the target continues exactly where it was.
    let released = set.release();
    let mut snap = result?;
    released?;
    snap.image.prepare_us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
    Ok(snap)
}

/// The registers a child gets of a thread stopped with `regs`. A sleep
/// interrupted here cannot be restarted in another process (its restart
/// block lives in this task): the child sees it return EINTR, which every
/// sleeping API handles.
pub(crate) fn child_view_of(regs: Regs) -> Regs {
    let mut out = regs;
    if mitosis_sys::signed(regs[idx::ORIG_RAX]) >= 0 && mitosis_sys::signed(regs[idx::RAX]) == ERESTART_RESTARTBLOCK {
        out[idx::RAX] = mitosis_sys::unsigned(i64::from(-libc::EINTR));
    }
    out
}

fn capture_stopped(
    spec: &PrepareSpec<'_>,
    vdso: &VdsoInfo,
    set: &threads::ThreadSet,
    status: &procfs::Status,
    reply_thread: Option<u32>,
) -> Result<Snapshot, CaptureError> {
    let pid = spec.pid;
    let tracee = &set.leader.tracee;
    let regs = set.leader.regs;
    let t = Instant::now();
    let step = |what: &str| tracing::debug!(pid, us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX), "prepare: {what}");
    let xstate = tracee.get_xstate().map_err(CaptureError::sys("reading the xsave state"))?;
    let rseq = tracee.rseq().map_err(CaptureError::sys("reading the rseq registration"))?;
    let blocked = tracee.get_sigmask().map_err(CaptureError::sys("reading the signal mask"))?;
    let maps = procfs::parse_maps(&read_proc(pid, "maps")?).map_err(|what| CaptureError::Unsupported { pid, what })?;
    let vmas = classify_vmas(pid, &maps)?;
    let shared_anon = shared::read_shared_anon(pid, &maps)?;
    let gadget = syscall_gadget(pid, &maps, vdso)?;
    let stat = procfs::parse_stat_mm(&read_proc(pid, "stat")?).map_err(|e| CaptureError::Unsupported {
        pid,
        what: e.to_string(),
    })?;
    let no_events = |_: &Tracee, _: i32| Ok(());

    step("state and /proc read");
    // Handler addresses of caught signals are only visible from inside.
    let mut actions = Vec::new();
    let scratch = threads::Scratch::save(pid, &regs)?;
    let probe = threads::Probe::new(tracee, pid, regs, gadget, &scratch);
    let queried = query_leader(&probe, status, &mut actions).and_then(|leader| {
        let clocks = timers::read(&probe, pid, set)?;
        let cpu = mitosis_sys::affinity::current_cpu();
        let others: Result<Vec<ThreadState>, CaptureError> = set.others.iter().map(|s| threads::thread_state(pid, s, gadget, &scratch, cpu)).collect();
        Ok((leader, clocks, others?))
    });
    scratch.restore()?;
    let (LeaderAnswers { tid_address, altstack, child_subreaper, dumpable }, clocks, thread_states) = queried?;
    let robust_list = mitosis_sys::process::robust_list(pid).map_err(CaptureError::sys("reading the robust futex list"))?;
    step("signal handlers, tid addresses and threads read");
    let brk = mitosis_sys::unsigned(
        tracee.inject_syscall(&regs, gadget, libc::SYS_brk, &[0], no_events).map_err(CaptureError::sys("reading brk"))?,
    );

    // The snapshot: a clone with exit signal 0 and no shared state.
    let mut child: Option<i32> = None;
    let r = tracee
        .inject_syscall(&regs, gadget, libc::SYS_clone, &[0, 0, 0, 0, 0], |t, ev| {
            if ev == libc::PTRACE_EVENT_CLONE || ev == libc::PTRACE_EVENT_FORK {
                child = i32::try_from(t.event_msg()?).ok();
            }
            Ok(())
        })
        .map_err(CaptureError::sys("forking the snapshot"))?;
    if r < 0 {
        return Err(CaptureError::Sys { step: "forking the snapshot", source: SysError::new("clone", errno_of(r)) });
    }
    let snap_pid = match child {
        Some(pid) => pid,
        None => i32::try_from(r).map_err(|_| CaptureError::Sys { step: "forking the snapshot", source: SysError::new("clone", libc::ERANGE) })?,
    };
    let snap = Tracee::adopt(snap_pid);
    if let Stop::Gone(_) = mitosis_sys::ptrace::wait_stop(snap_pid).map_err(CaptureError::sys("waiting for the snapshot"))? {
        return Err(CaptureError::Unsupported { pid, what: "the snapshot process died at birth".into() });
    }
    step("snapshot forked");
    let snap_pidfd = pidfd::open(snap_pid).map_err(CaptureError::sys("opening the snapshot's pidfd"))?;
    // Its own session and process group: a signal to the target's group (a
    // shell's job control, a supervisor killing the job) must not reach it.
    let snap_regs = snap.get_regs().map_err(CaptureError::sys("reading the snapshot's registers"))?;
    let sid = snap
        .inject_syscall(&snap_regs, gadget, libc::SYS_setsid, &[], no_events)
        .map_err(CaptureError::sys("moving the snapshot to its own session"))?;
    if sid < 0 {
        return Err(CaptureError::Sys { step: "moving the snapshot to its own session", source: SysError::new("setsid", errno_of(sid)) });
    }
    shared::privatize(&snap, &snap_regs, gadget, &shared_anon)?;
    // It serves memory only: it closes every descriptor, which it shares
    // with the target (a fork's table). Held there, they would outlive the
    // target: a pipe's write end keeps its reader from end of file, a
    // listening socket keeps its port, a lease its file (and the seed's own
    // lease would block a child opening that file).
    let closed = snap
        .inject_syscall(&snap_regs, gadget, libc::SYS_close_range, &[0, u64::from(u32::MAX), 0], no_events)
        .map_err(CaptureError::sys("closing the snapshot's descriptors"))?;
    if closed < 0 {
        return Err(CaptureError::Sys { step: "closing the snapshot's descriptors", source: SysError::new("close_range", errno_of(closed)) });
    }
    // Parked in pause() with every signal blocked: nothing but SIGKILL reaches it.
    // (A stopped snapshot would be sent SIGHUP and SIGCONT by the kernel when its
    // process group is orphaned, for example when the target exits.)
    let mut park = regs;
    park[idx::RIP] = gadget;
    park[idx::RAX] = libc::SYS_pause as u64;
    park[idx::ORIG_RAX] = u64::MAX;
    snap.set_regs(&park).map_err(CaptureError::sys("parking the snapshot"))?;
    snap.set_sigmask(u64::MAX).map_err(CaptureError::sys("parking the snapshot"))?;
    snap.detach(0).map_err(CaptureError::sys("parking the snapshot"))?;

    step("snapshot parked");
    let mut vmas = vmas;
    mark_written_file_pages(snap_pid, &mut vmas).map_err(CaptureError::sys("finding written file pages"))?;

    let image_regs = child_view_of(regs);
    step("written file pages found");
    let fs_bases: Vec<(i32, u64)> = set.all().map(|s| (s.tid_inside, s.regs[idx::FS_BASE])).collect();
    let tcb_tid_offset = threads::tcb_tid_offset(pid, &fs_bases);
    step("thread control blocks read");
    let (files, mut closed_fds) = files::open_files(pid, status.uid == 0);
    let carried = fds::carry(pid, &mut closed_fds)?;
    step("open files read");
    let properties = ProcessProperties {
        interval_timers: clocks.interval_timers,
        posix_timers: clocks.posix_timers,
        membarrier: clocks.membarrier,
        ..process_properties(pid, dumpable, child_subreaper)?
    };
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|p| p.to_str().map(str::to_string))
        .and_then(|p| files::identity(&p).map(|id| (p, id)));
    let image = SeedImage {
        id: spec.id.to_string(),
        generation: spec.generation,
        source_pid: pid,
        uid: status.uid,
        gid: status.gid,
        groups: status.groups.clone(),
        regs: Registers { words: image_regs },
        xstate,
        vmas,
        mm: MmFields {
            start_code: stat.start_code,
            end_code: stat.end_code,
            start_data: stat.start_data,
            end_data: stat.end_data,
            start_brk: stat.start_brk,
            brk,
            start_stack: stat.start_stack,
            arg_start: stat.arg_start,
            arg_end: stat.arg_end,
            env_start: stat.env_start,
            env_end: stat.env_end,
        },
        auxv: std::fs::read(format!("/proc/{pid}/auxv")).unwrap_or_default(),
        signals: SignalState { blocked, actions },
        cwd: std::fs::read_link(format!("/proc/{pid}/cwd"))
            .ok()
            .and_then(|p| p.to_str().map(str::to_string))
            .unwrap_or_else(|| "/".into()),
        cwd_identity: files::identity(&format!("/proc/{pid}/cwd")).unwrap_or_default(),
        exe,
        files,
        closed_fds,
        vdso_hash: vdso.hash,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
        rss_bytes: status.rss_kb * 1024,
        prepared_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0),
        prepare_us: 0,
        reply_slot: spec.reply_slot,
        rseq,
        robust_list,
        tid_address,
        altstack,
        properties,
        comm: threads::comm_of(pid, pid),
        threads: thread_states,
        leader_tid: set.leader.tid_inside,
        reply_thread,
        tcb_tid_offset,
        carried,
        pending: threads::pending_of(&set.leader, false)?,
        shared_pending: threads::pending_of(&set.leader, true)?,
    };
    step("image built");
    Ok(Snapshot { image, snapshot_pid: snap_pid, snapshot_pidfd: snap_pidfd })
}


/// What the leader answers to injected calls (none of it is in /proc).
struct LeaderAnswers {
    tid_address: u64,
    altstack: (u64, i32, u64),
    child_subreaper: bool,
    dumpable: u32,
}

/// Asks the stopped leader what is not in /proc: the handlers of caught
/// signals (into `actions`), its tid address and alternate signal stack,
/// the child-subreaper flag and the dumpable state.
fn query_leader(probe: &threads::Probe<'_>, status: &procfs::Status, actions: &mut Vec<SigAction>) -> Result<LeaderAnswers, CaptureError> {
    let scratch = probe.scratch;
    for signo in 1..=64u32 {
        let bit = 1u64 << (signo - 1);
        if status.sig_caught & bit != 0 {
            let w = probe.query(libc::SYS_rt_sigaction, &[signo as u64, 0, scratch, 8], "reading a signal handler")?;
            actions.push(SigAction { signo, handler: w[0], flags: w[1], restorer: w[2], mask: w[3] });
        } else if status.sig_ignored & bit != 0 {
            actions.push(SigAction { signo, handler: libc::SIG_IGN as u64, flags: 0, restorer: 0, mask: 0 });
        }
    }
    let (tid_address, altstack) = probe.tid_address_and_altstack()?;
    let subreaper = probe.query(libc::SYS_prctl, &[libc::PR_GET_CHILD_SUBREAPER as u64, scratch], "reading the child subreaper flag")?;
    let child_subreaper = subreaper[0] & 0xffff_ffff != 0;
    let dumpable = probe.call(libc::SYS_prctl, &[libc::PR_GET_DUMPABLE as u64], "reading the dumpable state")?;
    let dumpable = u32::try_from(dumpable)
        .map_err(|_| CaptureError::Sys { step: "reading the dumpable state", source: SysError::new("injected syscall", libc::ERANGE) })?;
    Ok(LeaderAnswers { tid_address, altstack, child_subreaper, dumpable })
}

/// The stopped target's umask, resource limits, oom_score_adj, THP and
/// personality settings from /proc (its status is read again here: the one
/// read before the stop may be older than the prepare instant), with the
/// `dumpable` state and `child_subreaper` flag it answered to injected calls.
fn process_properties(pid: i32, dumpable: u32, child_subreaper: bool) -> Result<ProcessProperties, CaptureError> {
    let unsupported = |what: &str| CaptureError::Unsupported { pid, what: what.to_string() };
    let status = procfs::parse_status(&read_proc(pid, "status")?);
    let umask = status.umask.ok_or_else(|| unsupported("its /proc status has no Umask line (Linux 4.7 or later is needed)"))?;
    let thp_enabled =
        status.thp_enabled.ok_or_else(|| unsupported("its /proc status has no THP_enabled line (Linux 5.0 or later is needed)"))?;
    let oom_score_adj = read_proc(pid, "oom_score_adj")?
        .trim()
        .parse()
        .map_err(|_| unsupported("its oom_score_adj cannot be parsed"))?;
    let personality = u32::from_str_radix(read_proc(pid, "personality")?.trim(), 16)
        .map_err(|_| unsupported("its personality cannot be parsed"))?;
    let rlimits = mitosis_sys::rlimit::of_process(pid)
        .map_err(CaptureError::sys("reading the resource limits"))?
        .into_iter()
        .map(|(resource, soft, hard)| ResourceLimit { resource, soft, hard })
        .collect();
    // u32::MAX (-1) means none was ever set.
    let loginuid = read_proc(pid, "loginuid")?.trim().parse::<u32>().ok().filter(|&uid| uid != u32::MAX);
    Ok(ProcessProperties {
        umask,
        rlimits,
        oom_score_adj,
        dumpable,
        thp_disabled: !thp_enabled,
        personality,
        child_subreaper,
        loginuid,
        ..ProcessProperties::default()
    })
}

/// Sorts the target's mappings into what a child can rebuild.
fn classify_vmas(pid: i32, maps: &[MapsEntry]) -> Result<Vec<Vma>, CaptureError> {
    let mut out = Vec::with_capacity(maps.len());
    for m in maps {
        let prot = Prot { read: m.read, write: m.write, exec: m.exec };
        let kind = if is_vdso_part(&m.name) {
            VmaKind::Vdso
        } else if m.name == "[vsyscall]" {
            VmaKind::Vsyscall
        } else if shared::is_shared_anon(m) {
            VmaKind::SharedAnon
        } else if m.shared {
            match file_kind(pid, m) {
                VmaKind::File { path, offset, identity } => VmaKind::SharedFile { path, offset, identity, may_write: false },
                _ => {
                    return Err(CaptureError::Unsupported {
                        pid,
                        what: format!(
                            "shared mapping {:#x}-{:#x} {} cannot be given to children (only private memory, shared anonymous memory and shared mappings of files that are still there can)",
                            m.start, m.end, if m.name.is_empty() { "(anonymous)" } else { &m.name }
                        ),
                    })
                }
            }
        } else if m.inode == 0 {
            VmaKind::Anon
        } else {
            file_kind(pid, m)
        };
        out.push(Vma { start: m.start, end: m.end, prot, kind, name: m.name.clone(), written: Vec::new(), flags: 0, guards: Vec::new() });
    }
    if let (Some(first), Some(last)) = (out.first().map(|v| v.start), out.iter().rev().find(|v| v.kind != VmaKind::Vsyscall).map(|v| v.end)) {
        let guards = mitosis_sys::mem::guard_regions(pid, first, last).map_err(CaptureError::sys("finding guard regions"))?;
        for (s, e) in guards {
            for v in out.iter_mut().filter(|v| v.start < e && s < v.end) {
                v.guards.push((s.max(v.start), e.min(v.end)));
            }
        }
    }
    let smaps = read_proc(pid, "smaps")?;
    let mut flags = procfs::parse_smaps_flags(&smaps).into_iter().peekable();
    for v in &mut out {
        while flags.peek().is_some_and(|f| f.0 < v.start) {
            flags.next();
        }
        if let Some((_, _, names)) = flags.peek().filter(|f| f.0 == v.start) {
            v.flags = vma_flags::NAMES.iter().filter(|(name, _)| names.contains(name)).fold(0, |all, (_, bit)| all | bit);
            if let VmaKind::SharedFile { may_write, .. } = &mut v.kind {
                *may_write = names.contains(&"mw");
            }
        }
    }
    Ok(out)
}

fn file_kind(pid: i32, m: &MapsEntry) -> VmaKind {
    if m.name.starts_with('/') && !m.name.ends_with(" (deleted)") {
        // The mapped object itself (map_files leads to it), which its path
        // must still name: children map the file only if it is this one.
        let mapped = files::identity(&format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end));
        if let (Some(identity), Some(named)) = (mapped, files::identity(&m.name)) {
            if identity.ino == m.inode && identity.matches(&named, IdentityMatch::SameContent) {
                return VmaKind::File { path: m.name.clone(), offset: m.offset, identity };
            }
        }
    }
    VmaKind::Opaque { name: m.name.clone() }
}

/// Finds the pages of private file mappings that the process wrote (now
/// anonymous copies, visible in the snapshot's pagemap): children map the
/// file and get those pages from the seed.
fn mark_written_file_pages(snap_pid: i32, vmas: &mut [Vma]) -> Result<(), SysError> {
    use std::os::unix::fs::FileExt;
    let pm = std::fs::File::open(format!("/proc/{snap_pid}/pagemap"))
        .map_err(|e| SysError::new("open pagemap", e.raw_os_error().unwrap_or(0)))?;
    let mut entries = Vec::new();
    for v in vmas.iter_mut().filter(|v| matches!(v.kind, VmaKind::File { .. })) {
        entries.resize(usize_of(v.pages()) * 8, 0);
        pm.read_exact_at(&mut entries, v.start / PAGE * 8)
            .map_err(|e| SysError::new("read pagemap", e.raw_os_error().unwrap_or(0)))?;
        for (i, e) in entries.chunks_exact(8).enumerate() {
            let e = u64::from_ne_bytes(e.try_into().unwrap());
            if e & pagemap::PRESENT != 0 && e & pagemap::FILE_OR_SHARED == 0 {
                let addr = v.start + i as u64 * PAGE;
                match v.written.last_mut() {
                    Some(run) if run.1 == addr => run.1 += PAGE,
                    _ => v.written.push((addr, addr + PAGE)),
                }
            }
        }
    }
    Ok(())
}

pub use files::{from_sys as identity_from_sys, identity as file_identity};

/// The errno of a failed injected syscall's result (`-errno`, in -4095..=-1).
/// The address of a `syscall` instruction in process `pid` (in its vDSO,
/// found in its `maps`), through which calls are injected into it.
fn syscall_gadget(pid: i32, maps: &[MapsEntry], vdso: &VdsoInfo) -> Result<u64, CaptureError> {
    let vdso_start = maps
        .iter()
        .find(|m| m.name == "[vdso]")
        .map(|m| m.start)
        .ok_or_else(|| CaptureError::Unsupported { pid, what: "it has no [vdso] mapping".into() })?;
    Ok(vdso_start + vdso.gadget_offset)
}

fn errno_of(r: i64) -> i32 {
    i32::try_from(-r).unwrap_or(libc::EINVAL)
}
