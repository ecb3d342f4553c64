//! The seed's timers and `membarrier` registrations, set again by the
//! child's leader (injected calls), once its threads exist: a POSIX timer
//! may signal one of them. Each timer keeps its id
//! (`PR_TIMER_CREATE_RESTORE_IDS`, Linux 6.15) and the time it had left at
//! the prepare; its overrun count starts again from zero.

use mitosis_proto::image::{SeedImage, TimerNotify};
use mitosis_sys::SysError;

use crate::threads::{pid_inside, ThreadContext};
use crate::RestoreError;

/// `prctl` option that makes `timer_create` take the id it is given.
const PR_TIMER_CREATE_RESTORE_IDS: u64 = 77;

/// Arms the seed's interval timers, creates its POSIX timers and registers
/// it with `membarrier` as it was, in the child. `tids` maps seed tids to
/// the child's (its threads but the leader); `slot` is 104 bytes of scratch
/// memory: a `struct sigevent` (64), the timer id (8), a `struct itimerspec`
/// (32).
pub(crate) fn recreate(cx: &ThreadContext<'_>, image: &SeedImage, tids: &[(i32, i32)], slot: u64) -> Result<(), RestoreError> {
    let p = &image.properties;
    for t in &p.interval_timers {
        // struct itimerval: interval (sec, usec), then value (sec, usec).
        let words = [t.interval_us / 1_000_000, t.interval_us % 1_000_000, t.value_us / 1_000_000, t.value_us % 1_000_000];
        write_words(cx, slot, &words, "arming an interval timer")?;
        call(cx, libc::SYS_setitimer, &[u64::from(t.which), slot, 0], "arming an interval timer")?;
    }
    if !p.posix_timers.is_empty() {
        let on = inject(cx, libc::SYS_prctl, &[PR_TIMER_CREATE_RESTORE_IDS, 1, 0, 0, 0], "asking for the seed's timer ids")?;
        if on < 0 {
            return Err(RestoreError::Incompatible(format!(
                "the seed has POSIX timers, and this kernel cannot give them back their ids (PR_TIMER_CREATE_RESTORE_IDS, Linux 6.15 or later, failed with errno {})",
                -on
            )));
        }
        let leader = pid_inside(cx.pid)?;
        for t in &p.posix_timers {
            let (notify, tid) = match t.notify {
                TimerNotify::Nothing => (libc::SIGEV_NONE, 0),
                TimerNotify::Process => (libc::SIGEV_SIGNAL, 0),
                TimerNotify::Thread(seed_tid) => {
                    let here = if seed_tid == image.leader_tid { Some(leader) } else { tids.iter().find(|m| m.0 == seed_tid).map(|m| m.1) };
                    let here = here.ok_or_else(|| RestoreError::Incompatible(format!("POSIX timer {} signals thread {seed_tid}, which the seed does not have", t.id)))?;
                    (libc::SIGEV_THREAD_ID, here)
                }
            };
            // struct sigevent: sigev_value, sigev_signo, sigev_notify, then the thread id.
            let mut event = [0u8; 72];
            event[..8].copy_from_slice(&t.value.to_ne_bytes());
            event[8..12].copy_from_slice(&t.signo.to_ne_bytes());
            event[12..16].copy_from_slice(&notify.to_ne_bytes());
            event[16..20].copy_from_slice(&tid.to_ne_bytes());
            event[64..68].copy_from_slice(&t.id.to_ne_bytes());
            cx.mem.write_all_at(&event, slot).map_err(RestoreError::sys("creating a POSIX timer"))?;
            call(cx, libc::SYS_timer_create, &[t.clock as u64, slot, slot + 64], "creating a POSIX timer")?;
            let mut id = [0u8; 4];
            cx.mem.read_exact_at(&mut id, slot + 64).map_err(RestoreError::sys("creating a POSIX timer"))?;
            if i32::from_ne_bytes(id) != t.id {
                return Err(RestoreError::Incompatible(format!("POSIX timer {} came back as timer {}", t.id, i32::from_ne_bytes(id))));
            }
            if t.left_ns != 0 {
                // struct itimerspec: interval (sec, nsec), then value (sec, nsec).
                let words = [t.interval_ns / 1_000_000_000, t.interval_ns % 1_000_000_000, t.left_ns / 1_000_000_000, t.left_ns % 1_000_000_000];
                write_words(cx, slot + 72, &words, "arming a POSIX timer")?;
                call(cx, libc::SYS_timer_settime, &[t.id as u64, 0, slot + 72, 0], "arming a POSIX timer")?;
            }
        }
        call(cx, libc::SYS_prctl, &[PR_TIMER_CREATE_RESTORE_IDS, 0, 0, 0, 0], "leaving the seed's timer ids")?;
    }
    for bit in (0..32).filter(|b| p.membarrier & (1 << b) != 0) {
        call(cx, libc::SYS_membarrier, &[1 << bit, 0, 0], "registering with membarrier as the seed was")?;
    }
    Ok(())
}

fn write_words(cx: &ThreadContext<'_>, at: u64, words: &[u64], step: &'static str) -> Result<(), RestoreError> {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    cx.mem.write_all_at(&bytes, at).map_err(RestoreError::sys(step))
}

fn inject(cx: &ThreadContext<'_>, nr: i64, args: &[u64], step: &'static str) -> Result<i64, RestoreError> {
    cx.leader.inject_syscall(cx.base, cx.gadget, nr, args, |_, _| Ok(())).map_err(RestoreError::sys(step))
}

fn call(cx: &ThreadContext<'_>, nr: i64, args: &[u64], step: &'static str) -> Result<(), RestoreError> {
    let r = inject(cx, nr, args, step)?;
    if r < 0 {
        return Err(RestoreError::Sys { step: step.to_string(), source: SysError::new("syscall in the child", i32::try_from(-r).unwrap_or(libc::EINVAL)) });
    }
    Ok(())
}
