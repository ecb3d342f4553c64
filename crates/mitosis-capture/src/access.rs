//! Who may have a process prepared: the kernel's own ptrace access rules.
//!
//! The daemon runs as root and does the ptrace itself, so the kernel's check
//! (`ptrace_may_access` with `PTRACE_MODE_ATTACH_REALCREDS`) would pass for
//! anything. The daemon therefore applies the same rules to the process that
//! asks, before it touches the target. Unless the caller is root or the
//! target is the caller itself:
//! - the target's real, effective and saved uids must all be the caller's
//!   real uid, and likewise for the gids (a setuid program that lowered its
//!   effective uid keeps root in its real or saved uid);
//! - the target must be dumpable (`PR_SET_DUMPABLE` 0 is how ssh-agent and
//!   gpg-agent keep their keys from their own user). The kernel gives a
//!   non-dumpable process's `/proc/PID/mem` (and most of `/proc/PID`) to
//!   root, which is how it is seen from outside;
//! - the target may hold no permitted capability the caller does not;
//! - Yama's `ptrace_scope`, where Yama is active: 1 allows only descendants
//!   of the caller, 2 only callers with `CAP_SYS_PTRACE`, 3 nobody.

use std::os::unix::fs::MetadataExt;

use mitosis_sys::procfs::{self, Status};

/// `CAP_SYS_PTRACE`'s bit in a capability set.
const CAP_SYS_PTRACE: u64 = 1 << 19;

/// Why a caller may not prepare a process.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessDenied {
    #[error("no process {pid}")]
    NoProcess { pid: i32 },
    #[error("the asking process {pid} is gone or changed its credentials")]
    CallerGone { pid: i32 },
    #[error("process {pid} runs as uid {} (real, effective, saved uids {uids:?}, gids {gids:?}); you may prepare only processes whose uids are all {uid} and gids all {gid}", uids[1])]
    Credentials { pid: i32, uids: [u32; 3], gids: [u32; 3], uid: u32, gid: u32 },
    #[error("process {pid} is not dumpable (PR_SET_DUMPABLE 0): the kernel keeps its memory from its own user, and so does mitosis")]
    NotDumpable { pid: i32 },
    #[error("process {pid} holds capabilities you do not ({extra:#x})")]
    Capabilities { pid: i32, extra: u64 },
    #[error("Yama's ptrace_scope is {scope}: {why}")]
    Yama { scope: u32, why: &'static str },
}

/// What the decision needs to know of a process.
#[derive(Debug, Clone)]
pub struct ProcessFacts {
    pub pid: i32,
    pub status: Status,
    /// Owner of `/proc/PID/mem`: root's for a process that is not dumpable.
    pub proc_owner: u32,
}

impl ProcessFacts {
    /// Reads process `pid`'s facts from /proc.
    pub fn read(pid: i32) -> Option<ProcessFacts> {
        let status = procfs::parse_status(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?);
        let proc_owner = std::fs::metadata(format!("/proc/{pid}/mem")).ok()?.uid();
        Some(ProcessFacts { pid, status, proc_owner })
    }
}

/// Yama's `ptrace_scope`, or `None` where Yama is not active.
pub fn yama_scope() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope").ok()?.trim().parse().ok()
}

/// Whether `pid` descends from `ancestor` (following parent pids up to init).
fn descends_from(pid: i32, ancestor: i32) -> bool {
    let mut at = pid;
    for _ in 0..4096 {
        let Some(facts) = ProcessFacts::read(at) else { return false };
        match facts.status.ppid {
            p if p == ancestor => return true,
            0 | 1 => return false,
            p => at = p,
        }
    }
    false
}

/// Checks that the process `caller_pid`, which connected as `caller_uid`,
/// may have process `target` prepared.
pub fn may_prepare(caller_pid: i32, caller_uid: u32, target: i32) -> Result<(), AccessDenied> {
    if caller_uid == 0 || caller_pid == target {
        return Ok(());
    }
    let caller = ProcessFacts::read(caller_pid).ok_or(AccessDenied::CallerGone { pid: caller_pid })?;
    let target = ProcessFacts::read(target).ok_or(AccessDenied::NoProcess { pid: target })?;
    decide(caller_uid, &caller, &target, yama_scope(), || descends_from(target.pid, caller.pid))
}

/// The rules, on facts read before (see the module's doc).
pub fn decide(
    caller_uid: u32,
    caller: &ProcessFacts,
    target: &ProcessFacts,
    yama: Option<u32>,
    target_descends_from_caller: impl FnOnce() -> bool,
) -> Result<(), AccessDenied> {
    let (Some(cu), Some(cg)) = (caller.status.uids, caller.status.gids) else {
        return Err(AccessDenied::CallerGone { pid: caller.pid });
    };
    // The connection's uid must still be this process's (no pid reuse).
    if cu[1] != caller_uid {
        return Err(AccessDenied::CallerGone { pid: caller.pid });
    }
    let (uid, gid) = (cu[0], cg[0]);
    let (Some(tu), Some(tg)) = (target.status.uids, target.status.gids) else {
        return Err(AccessDenied::NoProcess { pid: target.pid });
    };
    let (tu, tg) = ([tu[0], tu[1], tu[2]], [tg[0], tg[1], tg[2]]);
    if tu.iter().any(|&u| u != uid) || tg.iter().any(|&g| g != gid) {
        return Err(AccessDenied::Credentials { pid: target.pid, uids: tu, gids: tg, uid, gid });
    }
    if target.proc_owner != uid {
        return Err(AccessDenied::NotDumpable { pid: target.pid });
    }
    let extra = target.status.cap_permitted & !caller.status.cap_permitted;
    if extra != 0 {
        return Err(AccessDenied::Capabilities { pid: target.pid, extra });
    }
    match yama {
        None | Some(0) => Ok(()),
        Some(1) if target_descends_from_caller() => Ok(()),
        Some(1) => Err(AccessDenied::Yama { scope: 1, why: "only descendants of the asking process may be prepared" }),
        Some(2) if caller.status.cap_effective & CAP_SYS_PTRACE != 0 => Ok(()),
        Some(2) => Err(AccessDenied::Yama { scope: 2, why: "only processes with CAP_SYS_PTRACE may prepare others" }),
        Some(scope) => Err(AccessDenied::Yama { scope, why: "no process may be traced" }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(pid: i32, uids: [u32; 4], gids: [u32; 4], caps: u64, owner: u32) -> ProcessFacts {
        let status = Status {
            uid: uids[1],
            gid: gids[1],
            uids: Some(uids),
            gids: Some(gids),
            cap_permitted: caps,
            cap_effective: caps,
            ..Status::default()
        };
        ProcessFacts { pid, status, proc_owner: owner }
    }

    const U: [u32; 4] = [1000; 4];
    const G: [u32; 4] = [100; 4];

    fn caller() -> ProcessFacts {
        facts(10, U, G, 0, 1000)
    }

    fn check(target: &ProcessFacts, yama: Option<u32>, descendant: bool) -> Result<(), AccessDenied> {
        decide(1000, &caller(), target, yama, || descendant)
    }

    #[test]
    fn own_plain_process_is_allowed() {
        check(&facts(20, U, G, 0, 1000), None, false).unwrap();
        check(&facts(20, U, G, 0, 1000), Some(0), false).unwrap();
    }

    #[test]
    fn root_in_any_uid_or_gid_is_refused() {
        for i in 0..3 {
            let mut uids = U;
            uids[i] = 0;
            let e = check(&facts(20, uids, G, 0, 1000), None, false).unwrap_err();
            assert!(matches!(e, AccessDenied::Credentials { .. }), "{e}");
            let mut gids = G;
            gids[i] = 0;
            let e = check(&facts(20, U, gids, 0, 1000), None, false).unwrap_err();
            assert!(matches!(e, AccessDenied::Credentials { .. }), "{e}");
        }
    }

    #[test]
    fn not_dumpable_is_refused() {
        let e = check(&facts(20, U, G, 0, 0), None, false).unwrap_err();
        assert_eq!(e, AccessDenied::NotDumpable { pid: 20 });
    }

    #[test]
    fn more_capabilities_are_refused() {
        let e = check(&facts(20, U, G, 1 << 21, 1000), None, false).unwrap_err();
        assert_eq!(e, AccessDenied::Capabilities { pid: 20, extra: 1 << 21 });
        let rich = facts(10, U, G, 1 << 21, 1000);
        decide(1000, &rich, &facts(20, U, G, 1 << 21, 1000), None, || false).unwrap();
    }

    #[test]
    fn yama_scopes() {
        let t = facts(20, U, G, 0, 1000);
        assert!(matches!(check(&t, Some(1), false), Err(AccessDenied::Yama { scope: 1, .. })));
        check(&t, Some(1), true).unwrap();
        assert!(matches!(check(&t, Some(2), true), Err(AccessDenied::Yama { scope: 2, .. })));
        let tracer = facts(10, U, G, CAP_SYS_PTRACE, 1000);
        decide(1000, &tracer, &t, Some(2), || false).unwrap();
        assert!(matches!(decide(1000, &tracer, &t, Some(3), || true), Err(AccessDenied::Yama { scope: 3, .. })));
    }

    #[test]
    fn a_reused_caller_pid_is_refused() {
        let e = decide(1001, &caller(), &facts(20, U, G, 0, 1000), None, || false).unwrap_err();
        assert_eq!(e, AccessDenied::CallerGone { pid: 10 });
    }

    #[test]
    fn this_process_may_prepare_a_child_of_its_own() {
        let me = std::process::id().cast_signed();
        let mut child = std::process::Command::new("sleep").arg("10").spawn().unwrap();
        let pid = child.id().cast_signed();
        let uid = ProcessFacts::read(me).unwrap().status.uid;
        assert!(descends_from(pid, me));
        assert!(!descends_from(me, pid));
        let r = may_prepare(me, uid, pid);
        child.kill().unwrap();
        child.wait().unwrap();
        r.unwrap();
    }
}
