//! The seed's timers and `membarrier` registrations. `/proc/PID/timers`
//! lists the POSIX timers but not the time they have left, and interval
//! timers and registrations are not in /proc at all: the stopped leader is
//! asked with injected calls.

use mitosis_proto::image::{IntervalTimer, PosixTimer, TimerNotify, INTERVAL_TIMER_KINDS};
use mitosis_sys::procfs;

use crate::threads::{Probe, ThreadSet};
use crate::CaptureError;

/// `MEMBARRIER_CMD_GET_REGISTRATIONS` (Linux 6.3).
const MEMBARRIER_GET_REGISTRATIONS: u64 = 1 << 9;

/// What the leader answered about its clocks.
pub(crate) struct Clocks {
    pub interval_timers: Vec<IntervalTimer>,
    pub posix_timers: Vec<PosixTimer>,
    pub membarrier: u32,
}

/// Reads the timers and registrations of process `pid` (stopped: every
/// thread in `set`) through `probe`, its leader.
pub(crate) fn read(probe: &Probe<'_>, pid: i32, set: &ThreadSet) -> Result<Clocks, CaptureError> {
    let mut interval_timers = Vec::new();
    for which in 0..INTERVAL_TIMER_KINDS {
        // struct itimerval: interval (sec, usec), then value (sec, usec).
        let w = probe.query(libc::SYS_getitimer, &[u64::from(which), probe.scratch], "reading an interval timer")?;
        let value_us = w[2] * 1_000_000 + w[3];
        if value_us != 0 {
            interval_timers.push(IntervalTimer { which, value_us, interval_us: w[0] * 1_000_000 + w[1] });
        }
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/timers")).map_err(|_| CaptureError::NoProcess { pid })?;
    let listed = procfs::parse_timers(&text).map_err(|what| CaptureError::Unsupported { pid, what })?;
    let mut posix_timers = Vec::with_capacity(listed.len());
    for t in listed {
        // struct itimerspec: interval (sec, nsec), then value (sec, nsec).
        let w = probe.query(libc::SYS_timer_gettime, &[u64::from(t.id.unsigned_abs()), probe.scratch], "reading a POSIX timer")?;
        let notify = if t.to_thread {
            // The thread as the seed knows it (/proc shows our view).
            let seen = set.all().find(|s| s.tracee.pid() == t.target).ok_or_else(|| CaptureError::Unsupported {
                pid,
                what: format!("POSIX timer {} signals thread {}, which is not one of its threads", t.id, t.target),
            })?;
            TimerNotify::Thread(seen.tid_inside)
        } else if t.notify == libc::SIGEV_NONE {
            TimerNotify::Nothing
        } else {
            TimerNotify::Process
        };
        posix_timers.push(PosixTimer {
            id: t.id,
            clock: t.clock,
            notify,
            signo: if notify == TimerNotify::Nothing { 0 } else { t.signo },
            value: t.value,
            left_ns: w[2] * 1_000_000_000 + w[3],
            interval_ns: w[0] * 1_000_000_000 + w[1],
        });
    }
    // Older kernels do not know the query (EINVAL): no registrations then.
    let r = probe.call_raw(libc::SYS_membarrier, &[MEMBARRIER_GET_REGISTRATIONS, 0, 0], "reading membarrier registrations", |_, _| Ok(()))?;
    let membarrier = u32::try_from(r).unwrap_or(0);
    Ok(Clocks { interval_timers, posix_timers, membarrier })
}
