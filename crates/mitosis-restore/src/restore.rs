//! Taking over a parked child and rebuilding the seed in it.

use std::os::fd::OwnedFd;

use mitosis_proto::image::{reg, vma_flags, SeedImage, VmaKind};
use mitosis_sys::mem::ProcMem;
use mitosis_sys::ptrace::{idx, Regs, Stop, Tracee};
use mitosis_sys::uffd::{features, Uffd};
use mitosis_sys::vdso::VdsoInfo;
use mitosis_sys::{pidfd, SysError, PAGE};

use crate::plan::{Placement, RestorePlan, RestorePrivilege};
use crate::threads;
use crate::prologue::{LIMITS_SET_BY_RESTORE, LIMIT_NAMES};
use mitosis_sys::runner::{self as stub, Table, ENTRY};
use crate::RestoreError;

/// Highest user address plus one on x86-64 with 4-level paging.
const USER_TOP: u64 = 0x7fff_ffff_f000;
const PR_SET_MM: i32 = 35;
const PR_SET_MM_MAP: u64 = 14;
/// `mmap` flag of memory the kernel may drop under pressure (Linux 6.11).
const MAP_DROPPABLE: i32 = 0x08;
/// SIGTRAP's bit in a signal mask.
const SIGTRAP_BIT: u64 = 1 << (libc::SIGTRAP - 1);
/// `mlock2` flag: lock pages as they are faulted in.
const MLOCK_ONFAULT: u64 = 1;
/// Offset of the xfeatures mask (XCR0) in the software-reserved bytes of an xsave area.
const XSAVE_SW_XFEATURES: usize = 464 + 8;

/// The process to restore into.
pub struct Child<'a> {
    pub pid: i32,
    pub pidfd: &'a OwnedFd,
    /// Where its vDSO block is now (for a fork of this daemon, where ours is:
    /// [`VdsoInfo::span`]).
    pub vdso: (u64, u64),
}

/// Rebuilds seed `image` in the parked child `pid` (forked by this daemon,
/// running the prologue) and lets it run. `reply_len` is the self-prepare
/// answer length: the child's interrupted `read` returns it.
///
/// `start_pager` receives the child's userfaultfd and the ranges registered on
/// it once the layout stands (`true`: mapped from the shared copy); it must start serving faults before it returns,
/// because the last steps of the restore already touch the seed's memory.
pub fn restore(
    child: Child<'_>,
    image: &SeedImage,
    plan: &RestorePlan,
    vdso: &VdsoInfo,
    reply_len: Option<u64>,
    start_pager: impl FnOnce(Uffd, Vec<(u64, u64, bool)>) -> Result<(), RestoreError>,
) -> Result<(), RestoreError> {
    let Child { pid, pidfd: child_pidfd, vdso: child_vdso } = child;
    // Daemon thread and child on one CPU while they hand control back and forth;
    // both get their previous CPUs back when the guards drop on return.
    let cpu = mitosis_sys::affinity::current_cpu();
    let _pin_self = mitosis_sys::affinity::Pin::to(0, cpu).ok();
    let pin_child = mitosis_sys::affinity::Pin::to(pid, cpu).ok();
    let tracee = Tracee::seize(pid, libc::PTRACE_O_EXITKILL).map_err(RestoreError::sys("attaching to the new child"))?;
    tracee.interrupt().map_err(|e| RestoreError::ChildDied(e.to_string()))?;
    // The prologue blocked every signal, and gave SIGTRAP the seed's
    // handler. The traps of the table runner and of injected calls are
    // forced signals, and the kernel resets the handler of a forced signal
    // that is blocked: SIGTRAP is unblocked until the seed's mask is set
    // (ptrace stops each trap; the handler never runs here).
    tracee.set_sigmask(!SIGTRAP_BIT).map_err(RestoreError::sys("unblocking SIGTRAP for the restore"))?;
    let base = tracee.get_regs().map_err(RestoreError::sys("reading the child's registers"))?;
    let local_xstate = tracee.get_xstate().map_err(RestoreError::sys("reading the child's xsave state"))?;
    check_xstate(&image.xstate, &local_xstate)?;

    let uffd = Uffd::from_fd(
        pidfd::getfd(child_pidfd, plan.prologue.uffd_fd).map_err(RestoreError::sys("taking the child's userfaultfd"))?,
    );
    let write_tracking = if plan.track_writes { features::WP_ASYNC } else { 0 };
    let shared_copy = if plan.prologue.shared_pages_fd.is_some() { features::MINOR_SHMEM } else { 0 };
    uffd.api(features::PAGER | write_tracking | shared_copy)
        .map_err(RestoreError::sys("setting up the userfaultfd"))?;

    // The child is a fork of this daemon: its vDSO is where ours is.
    let (own_vdso_start, own_vdso_end) = child_vdso;
    let vdso_code_len = vdso.parts.iter().find(|p| p.0 == "[vdso]").map(|p| p.2 - p.1).unwrap_or(0);
    let own_gadget = own_vdso_end - vdso_code_len + vdso.gadget_offset;
    let no_events = |_: &Tracee, _: i32| Ok(());

    // Scratch layout: [runner code][prctl_mm_map + auxv + name][thread slots][syscall table].
    let code = stub::code();
    let code_len = round_up(code.len() as u64, 64);
    let thread_slot_at = round_up(name_offset(image) + TASK_NAME_LEN as u64, 64);
    let blob_len = thread_slot_at + threads::SLOT_BYTES * image.threads.len() as u64;
    // Unmapped holes (<= 3), a vDSO move (<= 2), one mmap per VMA and per written
    // run, robust list, tid address, altstack, two prctls, close, end marker.
    let written: usize = image.vmas.iter().map(|v| v.written.len() + v.guards.len()).sum();
    let max_entries = (image.vmas.len() + written + 13) as u64;
    let scratch_len = round_up(code_len + blob_len + max_entries * ENTRY as u64, PAGE);
    let scratch = place_scratch(&tracee, &base, own_gadget, image, (own_vdso_start, own_vdso_end), scratch_len)?;
    let blob_addr = scratch + code_len;
    let table_addr = blob_addr + blob_len;
    let blob = mm_map_blob(image, plan, blob_addr);
    let table = build_table(image, plan, (scratch, scratch + scratch_len), (own_vdso_start, own_vdso_end), blob_addr);
    let mut image_bytes = code.to_vec();
    image_bytes.resize(code_len as usize, 0xcc);
    image_bytes.extend_from_slice(&blob);
    image_bytes.resize((code_len + blob_len) as usize, 0);
    image_bytes.extend_from_slice(&table.encode());
    debug_assert!(image_bytes.len() as u64 <= scratch_len);
    let mem = ProcMem::open(pid, true).map_err(RestoreError::sys("opening the child's memory"))?;
    mem.write_all_at(&image_bytes, scratch).map_err(RestoreError::sys("writing the table runner"))?;

    run_table(&tracee, &base, scratch, table_addr, &table, "restore step")?;
    // The layout stands, with the seed's vDSO: its gadget from now on.
    let gadget = vdso_span(image).map(|_| seed_gadget(image, vdso)).unwrap_or(own_gadget);
    if plan.privilege == RestorePrivilege::CheckpointRestore {
        drop_capabilities(&tracee, &base, gadget, &mem, blob_addr)?;
    }

    let remote = plan.served_ranges(image);
    for &(s, e, from_copy) in &remote {
        let registered = if from_copy { uffd.register_file_backed(s, e - s, plan.track_writes) } else { uffd.register(s, e - s, plan.track_writes) };
        registered.map_err(RestoreError::sys(format!("registering {s:#x}-{e:#x} for page faults")))?;
    }
    start_pager(uffd, remote)?;

    set_layout_limits(&tracee, &base, gadget, &mem, blob_addr, pid, image)?;
    // After the limits: the seed's RLIMIT_MEMLOCK allowed its locks.
    advise_mappings(&tracee, &base, gadget, pid, image, plan);
    // After the layout too: READ_IMPLIES_EXEC would add PROT_EXEC to the
    // restore's own mappings.
    let r = tracee
        .inject_syscall(&base, gadget, libc::SYS_personality, &[u64::from(image.properties.personality)], no_events)
        .map_err(RestoreError::sys("setting the seed's personality"))?;
    check(r, "setting the seed's personality")?;
    set_oom_score_adj(pid, image.properties.oom_score_adj)?;
    // The table has run: the scratch area from the blob on is free for the descriptors' parameters.
    let injector = crate::fds::Injector { tracee: &tracee, base: &base, gadget, mem: &mem, slot: blob_addr, slot_len: scratch + scratch_len - blob_addr };
    crate::fds::recreate(&injector, child_pidfd, &image.carried, plan.prologue.uffd_fd + 1, image.uid == 0, &image.cwd)?;
    crate::locks::take(&injector, &image.files)?;
    let r = tracee
        .inject_syscall(&base, gadget, libc::SYS_close, &[plan.prologue.uffd_fd as u64], no_events)
        .map_err(RestoreError::sys("closing the child's userfaultfd"))?;
    check(r, "closing the child's userfaultfd")?;
    if let Some((addr, len, sig)) = image.rseq {
        // The kernel writes the area on the way back to user space and cannot
        // wait for the pager there: fault its page in first (the read goes
        // through the pager like any other touch).
        let mut one = [0u8; 1];
        let n = mitosis_sys::mem::read_ranges(pid, &[(addr, 1)], &mut one).map_err(RestoreError::sys("touching the seed's rseq area"))?;
        if n != 1 {
            return Err(RestoreError::Sys { step: "touching the seed's rseq area".into(), source: SysError::new("process_vm_readv", libc::EFAULT) });
        }
        let r = tracee
            .inject_syscall(&base, gadget, libc::SYS_rseq, &[addr, len as u64, 0, sig as u64], no_events)
            .map_err(RestoreError::sys("registering the seed's rseq area"))?;
        check(r, "registering the seed's rseq area")?;
    }
    let cx = threads::ThreadContext {
        leader: &tracee,
        base: &base,
        gadget,
        mem: &mem,
        pid,
        slot: blob_addr + thread_slot_at,
        runner: scratch,
        reply_len,
    };
    let finished = threads::create(&cx, image).and_then(|threads| {
        crate::timers::recreate(&cx, image, &threads.tids, blob_addr)?;
        threads::queue_leader_signals(&cx, image, blob_addr)?;
        if image.tcb_tid_offset.is_some() {
            let leader_tid = threads::pid_inside(pid)?;
            if leader_tid != image.leader_tid {
                threads::rewrite_cached_tid(&cx, image, image.regs.words[idx::FS_BASE], leader_tid)?;
            }
        }
        finish_leader(&tracee, &base, gadget, image, reply_len, (scratch, scratch_len))?;
        Ok(threads)
    });
    let threads = match finished {
        Ok(threads) => threads,
        Err(e) => {
            // Threads let go half set up would run garbage: the child dies first.
            let _ = mitosis_sys::process::kill(pid, libc::SIGKILL);
            return Err(e);
        }
    };
    if !image.threads.is_empty() {
        tracing::debug!(
            pid,
            threads = image.threads.len(),
            kept_tids = threads.kept_tids,
            clone_us = threads.clone_us,
            setup_us = threads.setup_us,
            "threads recreated"
        );
    }
    tracee.detach(0).map_err(RestoreError::sys("starting the child"))?;
    threads.start(pin_child.as_ref())
}

/// The leader's last steps: unmap the scratch area, then its registers,
/// xsave state and signal mask.
fn finish_leader(tracee: &Tracee, base: &Regs, gadget: u64, image: &SeedImage, reply_len: Option<u64>, scratch: (u64, u64)) -> Result<(), RestoreError> {
    let r = tracee
        .inject_syscall(base, gadget, libc::SYS_munmap, &[scratch.0, scratch.1], |_, _| Ok(()))
        .map_err(RestoreError::sys("unmapping the table runner"))?;
    check(r, "unmapping the table runner")?;
    let mut regs: Regs = image.regs.words;
    if let (Some(len), None) = (reply_len, image.reply_thread) {
        regs[reg::RAX] = len;
        regs[reg::ORIG_RAX] = u64::MAX;
    }
    tracee.set_regs(&regs).map_err(RestoreError::sys("setting the seed's registers"))?;
    tracee.set_xstate(&image.xstate).map_err(RestoreError::sys("setting the seed's FPU/SSE/AVX state"))?;
    tracee.set_sigmask(image.signals.blocked).map_err(RestoreError::sys("setting the seed's signal mask"))
}

/// Runs `table` (already written at `table_addr`) in stopped thread
/// `tracee` with the table runner at `runner`, from registers `base`, and
/// waits for its end; a failed entry is an error naming it (`step` and its
/// number).
pub(crate) fn run_table(tracee: &Tracee, base: &Regs, runner: u64, table_addr: u64, table: &Table, step: &str) -> Result<(), RestoreError> {
    start_table(tracee, base, runner, table_addr)?;
    table_result(tracee, table_addr, table, step)
}

/// Starts stopped thread `tracee` running the table at `table_addr` (see
/// [`run_table`]) without waiting for it.
pub(crate) fn start_table(tracee: &Tracee, base: &Regs, runner: u64, table_addr: u64) -> Result<(), RestoreError> {
    let mut run = *base;
    run[idx::RIP] = runner;
    run[idx::RBX] = table_addr;
    run[idx::ORIG_RAX] = u64::MAX;
    tracee.set_regs(&run).map_err(RestoreError::sys("starting the table runner"))?;
    tracee.cont(0).map_err(RestoreError::sys("starting the table runner"))
}

/// Waits for the table [`start_table`] started in `tracee` to end; a
/// failed entry is an error naming it.
pub(crate) fn table_result(tracee: &Tracee, table_addr: u64, table: &Table, step: &str) -> Result<(), RestoreError> {
    let tid = tracee.pid();
    match mitosis_sys::ptrace::wait_stop(tid).map_err(RestoreError::sys("waiting for the table runner"))? {
        Stop::Signal(libc::SIGTRAP) => {}
        Stop::Gone(status) => return Err(RestoreError::ChildDied(format!("wait status {status:#x}"))),
        other => return Err(RestoreError::ChildDied(format!("unexpected stop {other:?} in the table runner"))),
    }
    let after = tracee.get_regs().map_err(RestoreError::sys("reading the table runner's result"))?;
    let entries = table.entries.len();
    let at = usize::try_from((after[idx::RBX].wrapping_sub(table_addr)) / ENTRY as u64).unwrap_or(usize::MAX);
    if at < entries {
        let errno = i32::try_from(-mitosis_sys::signed(after[idx::RAX])).unwrap_or(libc::EINVAL);
        return Err(RestoreError::Sys {
            step: format!("{step} {} of {} ({})", at + 1, entries, table.entries[at].1),
            source: SysError::new("syscall in the child", errno),
        });
    }
    Ok(())
}

/// Sets the seed's limits of [`LIMITS_SET_BY_RESTORE`] in the child, now
/// that its layout is mapped and nothing more will be (a lower address
/// space, data or stack limit must not refuse the restore's own mappings).
/// `slot` is scratch memory of the child for the `struct rlimit64`. The
/// rule is the prologue's: a hard limit the child may not raise to stays
/// the child's own (the highest allowed), with a warning in the log.
fn set_layout_limits(tracee: &Tracee, base: &Regs, gadget: u64, mem: &ProcMem, slot: u64, pid: i32, image: &SeedImage) -> Result<(), RestoreError> {
    let no_events = |_: &Tracee, _: i32| Ok(());
    let set = |resource: u32, soft: u64, hard: u64| -> Result<i64, RestoreError> {
        let step = || format!("setting the seed's {}", LIMIT_NAMES[resource as usize]);
        let mut bytes = soft.to_ne_bytes().to_vec();
        bytes.extend_from_slice(&hard.to_ne_bytes());
        mem.write_all_at(&bytes, slot).map_err(RestoreError::sys(step()))?;
        tracee
            .inject_syscall(base, gadget, libc::SYS_prlimit64, &[0, u64::from(resource), slot, 0], no_events)
            .map_err(RestoreError::sys(step()))
    };
    for l in image.properties.rlimits.iter().filter(|l| LIMITS_SET_BY_RESTORE.contains(&l.resource)) {
        let name = LIMIT_NAMES[l.resource as usize];
        let r = set(l.resource, l.soft, l.hard)?;
        if r != -i64::from(libc::EPERM) {
            check(r, &format!("setting the seed's {name}"))?;
            continue;
        }
        let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).map_err(|e| RestoreError::ChildDied(e.to_string()))?;
        let own = mitosis_sys::procfs::parse_limits(&text).map_err(RestoreError::Incompatible)?;
        let (_, _, own_hard) = own[l.resource as usize];
        if l.hard <= own_hard {
            check(r, &format!("setting the seed's {name}"))?;
        }
        tracing::warn!(pid, seed_hard = l.hard, kept_hard = own_hard, "the seed's hard {name} is above what the child may set: it keeps its own");
        check(set(l.resource, l.soft.min(own_hard), own_hard)?, &format!("setting the seed's {name}"))?;
    }
    Ok(())
}

/// Gives the child's mappings the seed's advice (`madvise`) and locks
/// (`mlock2` with `MLOCK_ONFAULT`: locking at once would fetch every page).
/// Each is a hint or a residency promise, not content: one the kernel
/// refuses here (no KSM, a lower lock limit) is logged, and the child goes on
/// without it.
fn advise_mappings(tracee: &Tracee, base: &Regs, gadget: u64, pid: i32, image: &SeedImage, plan: &RestorePlan) {
    for (v, p) in image.vmas.iter().zip(&plan.placements) {
        if v.flags == 0 || matches!(p, Placement::Kernel) {
            continue;
        }
        let mut calls: Vec<(i64, [u64; 3], &str)> = vma_flags::ADVICE
            .iter()
            .filter(|(flag, _)| v.flags & flag != 0)
            .map(|&(_, advice)| (libc::SYS_madvise, [v.start, v.len(), advice.unsigned_abs().into()], "madvise"))
            .collect();
        if v.flags & vma_flags::LOCKED != 0 {
            calls.push((libc::SYS_mlock2, [v.start, v.len(), MLOCK_ONFAULT], "mlock2"));
        }
        for (nr, args, name) in calls {
            let r = tracee.inject_syscall(base, gadget, nr, &args, |_, _| Ok(()));
            if !matches!(r, Ok(0)) {
                tracing::warn!(pid, start = format!("{:#x}", v.start), call = name, arg = args[2], result = ?r, "the child's mapping goes without the seed's advice or lock");
            }
        }
    }
}

/// Drops every capability of the child (the one its prologue kept to give
/// it the seed's executable), with `capset` run by the child itself at
/// `slot` (scratch memory); it is the seed's uid's again, and a failure
/// fails the restore: no seed code ever runs with it.
fn drop_capabilities(tracee: &Tracee, base: &Regs, gadget: u64, mem: &ProcMem, slot: u64) -> Result<(), RestoreError> {
    let step = "dropping the capability kept for the restore";
    let mut bytes = mitosis_sys::after_fork::CAPABILITY_VERSION_3.to_ne_bytes().to_vec();
    bytes.resize(8 + 24, 0);
    mem.write_all_at(&bytes, slot).map_err(RestoreError::sys(step))?;
    let r = tracee
        .inject_syscall(base, gadget, libc::SYS_capset, &[slot, slot + 8], |_: &Tracee, _: i32| Ok(()))
        .map_err(RestoreError::sys(step))?;
    check(r, step)
}

/// Gives child `pid` the seed's oom_score_adj (from the daemon: the child
/// may be neither dumpable nor able to open its own /proc). Lowering it
/// below the lowest value a privileged process set needs
/// `CAP_SYS_RESOURCE` (EACCES): the rule of the resource limits, the child
/// keeps its own, with a warning in the log.
fn set_oom_score_adj(pid: i32, value: i32) -> Result<(), RestoreError> {
    let path = format!("/proc/{pid}/oom_score_adj");
    match std::fs::write(&path, value.to_string()) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
            let own = std::fs::read_to_string(&path).unwrap_or_default();
            tracing::warn!(pid, seed = value, kept = own.trim(), "the seed's oom_score_adj is below what the child may set: it keeps its own");
            Ok(())
        }
        Err(e) => Err(RestoreError::Sys {
            step: "setting the seed's oom_score_adj".into(),
            source: SysError::new("write oom_score_adj", e.raw_os_error().unwrap_or(libc::EIO)),
        }),
    }
}

/// Where process `pid` has its vDSO block (start, end).
pub fn vdso_block_of(pid: i32) -> Result<(u64, u64), RestoreError> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps")).map_err(|e| RestoreError::ChildDied(e.to_string()))?;
    let maps = mitosis_sys::procfs::parse_maps(&text).map_err(RestoreError::Incompatible)?;
    let block = mitosis_sys::vdso::block_of(&maps);
    match (block.first(), block.last()) {
        (Some(f), Some(l)) => Ok((f.1, l.2)),
        _ => Err(RestoreError::Incompatible(format!("process {pid} has no vDSO"))),
    }
}

fn check(r: i64, step: &str) -> Result<(), RestoreError> {
    if r < 0 {
        return Err(RestoreError::Sys { step: step.to_string(), source: SysError::new("syscall in the child", -r as i32) });
    }
    Ok(())
}

fn round_up(x: u64, to: u64) -> u64 {
    x.div_ceil(to) * to
}

fn vdso_span(image: &SeedImage) -> Option<(u64, u64)> {
    let parts: Vec<_> = image.vmas.iter().filter(|v| v.kind == VmaKind::Vdso).collect();
    Some((parts.first()?.start, parts.last()?.end))
}

fn seed_gadget(image: &SeedImage, vdso: &VdsoInfo) -> u64 {
    image.vmas.iter().find(|v| v.name == "[vdso]").map(|v| v.start).unwrap_or(0) + vdso.gadget_offset
}

/// xsave areas are only portable between CPUs that enable the same features.
fn check_xstate(seed: &[u8], local: &[u8]) -> Result<(), RestoreError> {
    let xcr0 = |x: &[u8]| x.get(XSAVE_SW_XFEATURES..XSAVE_SW_XFEATURES + 8).map(|b| u64::from_ne_bytes(b.try_into().unwrap()));
    if seed.len() != local.len() || xcr0(seed) != xcr0(local) {
        return Err(RestoreError::Incompatible(format!(
            "CPU state differs: the seed's xsave area is {} bytes with features {:#x?}, this host's {} bytes with {:#x?}",
            seed.len(),
            xcr0(seed),
            local.len(),
            xcr0(local)
        )));
    }
    Ok(())
}

/// The part of `[0, USER_TOP)` outside `keep` (sorted or not).
fn unmap_holes(keep: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut keep = keep.to_vec();
    keep.sort_unstable();
    let mut holes = Vec::new();
    let mut at = 0u64;
    for (s, e) in keep {
        if s > at {
            holes.push((at, s));
        }
        at = at.max(e);
    }
    if at < USER_TOP {
        holes.push((at, USER_TOP));
    }
    holes
}

/// The syscalls that turn the child (a fork of this daemon) into the seed's layout.
fn build_table(image: &SeedImage, plan: &RestorePlan, scratch: (u64, u64), own_vdso: (u64, u64), blob_addr: u64) -> Table {
    let mut t = Table::default();
    for (s, e) in unmap_holes(&[scratch, own_vdso]) {
        t.push(libc::SYS_munmap, [s, e - s, 0, 0, 0, 0], format!("unmap inherited {s:#x}-{e:#x}"));
    }
    if let Some((seed_start, _)) = vdso_span(image) {
        if seed_start != own_vdso.0 {
            let len = own_vdso.1 - own_vdso.0;
            let mut from = own_vdso.0;
            let moving = (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64;
            if seed_start < own_vdso.1 && own_vdso.0 < seed_start + len {
                // mremap cannot move onto an overlapping range: hop through the gap past the scratch area.
                let hop = scratch.1 + (1 << 30);
                t.push(libc::SYS_mremap, [from, len, len, moving, hop, 0], "move vDSO (hop)");
                from = hop;
            }
            t.push(libc::SYS_mremap, [from, len, len, moving, seed_start, 0], "move vDSO");
        }
    }
    for (v, p) in image.vmas.iter().zip(&plan.placements) {
        let prot = v.prot.bits() as u64;
        let what = format!("map {:#x}-{:#x} {}", v.start, v.end, v.name);
        match *p {
            Placement::Kernel => {}
            Placement::LocalFile { fd } => {
                let (offset, sharing) = match &v.kind {
                    VmaKind::File { offset, .. } => (*offset, libc::MAP_PRIVATE),
                    VmaKind::SharedFile { offset, .. } => (*offset, libc::MAP_SHARED),
                    _ => (0, libc::MAP_PRIVATE),
                };
                let flags = sharing | libc::MAP_FIXED_NOREPLACE;
                t.push(libc::SYS_mmap, [v.start, v.len(), prot, flags as u64, fd as u64, offset], what);
                // Pages the seed wrote become anonymous, served by the pager.
                for &(s, e) in &v.written {
                    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED;
                    t.push(libc::SYS_mmap, [s, e - s, prot, flags as u64, u64::MAX, 0], format!("map written pages {s:#x}-{e:#x}"));
                }
            }
            Placement::SharedCopy { fd } => {
                let mut flags = libc::MAP_PRIVATE | libc::MAP_FIXED_NOREPLACE;
                if v.flags & vma_flags::NORESERVE != 0 {
                    flags |= libc::MAP_NORESERVE;
                }
                t.push(libc::SYS_mmap, [v.start, v.len(), prot, flags as u64, fd as u64, v.start], what);
            }
            Placement::Remote => {
                // Shared anonymous memory is shared again with the child's own forks.
                let sharing = match v.kind {
                    VmaKind::SharedAnon => libc::MAP_SHARED,
                    _ if v.flags & vma_flags::DROPPABLE != 0 => MAP_DROPPABLE,
                    _ => libc::MAP_PRIVATE,
                };
                let mut flags = sharing | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE;
                if v.is_stack() {
                    flags |= libc::MAP_GROWSDOWN;
                }
                if v.flags & vma_flags::NORESERVE != 0 {
                    flags |= libc::MAP_NORESERVE;
                }
                t.push(libc::SYS_mmap, [v.start, v.len(), prot, flags as u64, u64::MAX, 0], what);
            }
        }
    }
    // Guard regions, once every mapping stands.
    for (v, p) in image.vmas.iter().zip(&plan.placements) {
        if matches!(p, Placement::Kernel) {
            continue;
        }
        for &(s, e) in &v.guards {
            let advice = mitosis_sys::mem::MADV_GUARD_INSTALL.unsigned_abs().into();
            t.push(libc::SYS_madvise, [s, e - s, advice, 0, 0, 0], format!("install guard region {s:#x}-{e:#x}"));
        }
    }
    let (head, len) = image.robust_list;
    if head != 0 {
        t.push(libc::SYS_set_robust_list, [head, len, 0, 0, 0, 0], "set the robust futex list");
    }
    t.push(libc::SYS_set_tid_address, [image.tid_address, 0, 0, 0, 0, 0], "set the tid address");
    t.push(libc::SYS_sigaltstack, [blob_addr, 0, 0, 0, 0, 0], "set the alternate signal stack");
    t.push(libc::SYS_prctl, [PR_SET_MM as u64, PR_SET_MM_MAP, blob_addr + STACK_T_SLOT, MM_MAP_SIZE, 0, 0], "set mm fields (PR_SET_MM_MAP)");
    // The child was forked from the daemon's zygote: without this, `ps` and
    // /proc/PID/comm would call it "mitosis".
    t.push(libc::SYS_prctl, [libc::PR_SET_NAME as u64, blob_addr + name_offset(image), 0, 0, 0, 0], "set the name");
    if plan.map_fd_end > plan.map_fd_base {
        t.push(
            libc::SYS_close_range,
            [plan.map_fd_base as u64, (plan.map_fd_end - 1) as u64, 0, 0, 0, 0],
            "close mapping descriptors",
        );
    }
    t
}

/// Size of `struct prctl_mm_map`.
const MM_MAP_SIZE: u64 = 104;
/// Room for a `stack_t` (24 bytes) at the start of the blob.
const STACK_T_SLOT: u64 = 32;

/// The seed's `stack_t`, then `struct prctl_mm_map` and the auxv it points
/// to, for placement at `addr`.
fn mm_map_blob(image: &SeedImage, plan: &RestorePlan, addr: u64) -> Vec<u8> {
    let mm = &image.mm;
    let (sp, flags, size) = image.altstack;
    // SS_ONSTACK only reports that the seed was on it; it cannot be set.
    let flags = if flags & libc::SS_DISABLE != 0 { libc::SS_DISABLE } else { 0 };
    let (sp, size) = if flags == libc::SS_DISABLE { (0, 0) } else { (sp, size) };
    let mut blob = Vec::new();
    blob.extend_from_slice(&sp.to_ne_bytes());
    blob.extend_from_slice(&(flags as u64).to_ne_bytes());
    blob.extend_from_slice(&size.to_ne_bytes());
    blob.resize(STACK_T_SLOT as usize, 0);
    let addr = addr + STACK_T_SLOT;
    for w in [
        mm.start_code, mm.end_code, mm.start_data, mm.end_data, mm.start_brk, mm.brk, mm.start_stack,
        mm.arg_start, mm.arg_end, mm.env_start, mm.env_end,
    ] {
        blob.extend_from_slice(&w.to_ne_bytes());
    }
    let auxv = trimmed_auxv(&image.auxv);
    blob.extend_from_slice(&(addr + MM_MAP_SIZE).to_ne_bytes());
    blob.extend_from_slice(&(auxv.len() as u32).to_ne_bytes());
    blob.extend_from_slice(&plan.exe_fd.map(|f| f as u32).unwrap_or(u32::MAX).to_ne_bytes());
    debug_assert_eq!(blob.len() as u64, STACK_T_SLOT + MM_MAP_SIZE);
    blob.extend_from_slice(auxv);
    debug_assert_eq!(blob.len() as u64, name_offset(image));
    blob.extend_from_slice(&task_name(&image.comm));
    blob
}

/// Where the leader's name lies in the blob: right after the auxv.
fn name_offset(image: &SeedImage) -> u64 {
    STACK_T_SLOT + MM_MAP_SIZE + trimmed_auxv(&image.auxv).len() as u64
}

/// Room `PR_SET_NAME` reads a name from (`TASK_COMM_LEN`).
pub(crate) const TASK_NAME_LEN: usize = 16;

/// `comm` as `PR_SET_NAME` takes it: at most 15 bytes and a NUL.
pub(crate) fn task_name(comm: &str) -> [u8; TASK_NAME_LEN] {
    let mut name = [0u8; TASK_NAME_LEN];
    let bytes = &comm.as_bytes()[..comm.len().min(TASK_NAME_LEN - 1)];
    name[..bytes.len()].copy_from_slice(bytes);
    name
}

/// The kernel keeps at most 52 auxv words; the vector ends at AT_NULL.
fn trimmed_auxv(auxv: &[u8]) -> &[u8] {
    let mut end = 0;
    for (i, pair) in auxv.chunks_exact(16).enumerate() {
        end = (i + 1) * 16;
        if u64::from_ne_bytes(pair[..8].try_into().unwrap()) == 0 {
            break;
        }
    }
    &auxv[..end.min(52 * 8)]
}

/// Maps the scratch area in the child at an address that is free in both the
/// child (a fork of this daemon) and the seed's layout.
fn place_scratch(
    tracee: &Tracee,
    base: &Regs,
    gadget: u64,
    image: &SeedImage,
    own_vdso: (u64, u64),
    len: u64,
) -> Result<u64, RestoreError> {
    let busy = |s: u64| {
        let e = s + len + (2 << 30);
        image.vmas.iter().any(|v| v.start < e && s < v.end) || (own_vdso.0 < e && s < own_vdso.1)
    };
    let no_events = |_: &Tracee, _: i32| Ok(());
    // Far from where kernels put heaps, libraries and stacks.
    let mut candidate = 0x2000_0000_0000u64;
    for _ in 0..64 {
        if !busy(candidate) {
            let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE;
            let prot = libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC;
            let r = tracee
                .inject_syscall(base, gadget, libc::SYS_mmap, &[candidate, len, prot as u64, flags as u64, u64::MAX, 0], no_events)
                .map_err(RestoreError::sys("mapping the table runner"))?;
            if r as u64 == candidate {
                return Ok(candidate);
            }
            if r >= 0 {
                // An old kernel ignored NOREPLACE and put it elsewhere: give it back and move on.
                let _ = tracee.inject_syscall(base, gadget, libc::SYS_munmap, &[r as u64, len], no_events);
            }
        }
        candidate += 1 << 36;
    }
    Err(RestoreError::Incompatible("no free address for the table runner".into()))
}
