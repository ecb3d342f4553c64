//! ptrace of threads: attach without disturbing, read and write the complete
//! CPU state, and run single syscalls inside the tracee. A [`Tracee`] is one
//! thread (the kernel traces threads, not processes): a multi-threaded
//! process is seized thread by thread.
//!
//! All calls on one [`Tracee`] must come from the thread that attached it
//! (a ptrace rule); the type is therefore neither `Send` nor `Sync`.

use std::marker::PhantomData;

use crate::{Result, SysError};

pub const USER_REGS_WORDS: usize = 27;
const RAX: usize = 10;
const ORIG_RAX: usize = 15;
const RIP: usize = 16;
const ARG_REGS: [usize; 6] = [14, 13, 12, 7, 9, 8]; // rdi rsi rdx r10 r8 r9
const NT_X86_XSTATE: libc::c_int = 0x202;
const PTRACE_GETSIGMASK: libc::c_uint = 0x420a;
const PTRACE_SETSIGMASK: libc::c_uint = 0x420b;
const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
const PTRACE_PEEKSIGINFO: libc::c_uint = 0x4209;
const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;
/// Size of a `siginfo_t`.
pub const SIGINFO_BYTES: usize = 128;

/// A raw `siginfo_t`: the signal number is its first `int`.
pub type SigInfo = [u8; SIGINFO_BYTES];

/// `struct ptrace_peeksiginfo_args`.
#[repr(C)]
struct PeekSiginfoArgs {
    off: u64,
    flags: u32,
    nr: i32,
}

/// General purpose registers as the kernel's `user_regs_struct`.
pub type Regs = [u64; USER_REGS_WORDS];

/// Why a tracee stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// `PTRACE_EVENT_*` stop (event number).
    Event(i32),
    /// Signal-delivery stop or trap.
    Signal(i32),
    /// The tracee exited with this wait status.
    Gone(i32),
}

/// A process attached with `PTRACE_SEIZE` by the current thread.
pub struct Tracee {
    pid: i32,
    attached: bool,
    _not_send: PhantomData<*const ()>,
}

fn ptrace(req: libc::c_uint, pid: i32, addr: usize, data: usize, op: &'static str) -> Result<libc::c_long> {
    // SAFETY: callers pass addresses of live buffers of the size the request
    // expects (or plain integers); errno is read right after.
    let r = unsafe { libc::ptrace(req, pid, addr as *mut libc::c_void, data as *mut libc::c_void) };
    if r < 0 {
        return Err(SysError::last(op));
    }
    Ok(r)
}

/// Waits for a stop or exit of `pid` (any child or tracee).
pub fn wait_stop(pid: i32) -> Result<Stop> {
    let mut status = 0;
    loop {
        // SAFETY: status is a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if r < 0 {
            let e = SysError::last("waitpid");
            if e.errno == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        break;
    }
    Ok(stop_of(status))
}

/// Waits until `pid` stops or exits, or `deadline` passes (`None`): for a
/// thread that may never stop, such as one waiting in `vfork()` for its
/// child, where only SIGKILL is noticed. Polls with `WNOHANG`, sleeping
/// 20 µs doubling to 2 ms between tries, so a thread that stops at once
/// costs no sleep.
pub fn wait_stop_until(pid: i32, deadline: std::time::Instant) -> Result<Option<Stop>> {
    let mut pause = std::time::Duration::from_micros(20);
    loop {
        let mut status = 0;
        // SAFETY: status is a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL | libc::WNOHANG) };
        if r < 0 {
            let e = SysError::last("waitpid");
            if e.errno == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        if r > 0 {
            return Ok(Some(stop_of(status)));
        }
        if std::time::Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(2));
    }
}

fn stop_of(status: i32) -> Stop {
    if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
        return Stop::Gone(status);
    }
    let event = (status >> 16) & 0xff;
    if event != 0 {
        return Stop::Event(event);
    }
    Stop::Signal(libc::WSTOPSIG(status))
}

/// SIGTRAP's bit in a signal mask.
const SIGTRAP_BIT: u64 = 1 << (libc::SIGTRAP - 1);

impl Tracee {
    /// Attaches to `pid` with `PTRACE_SEIZE` (the process keeps running) and the given options.
    pub fn seize(pid: i32, options: libc::c_int) -> Result<Tracee> {
        ptrace(libc::PTRACE_SEIZE, pid, 0, options.unsigned_abs() as usize, "ptrace(SEIZE)")?;
        Ok(Tracee { pid, attached: true, _not_send: PhantomData })
    }

    /// Takes over a tracee that was auto-attached (a traced process's new child).
    pub fn adopt(pid: i32) -> Tracee {
        Tracee { pid, attached: true, _not_send: PhantomData }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Stops the tracee (`PTRACE_INTERRUPT`) and waits until it is in a ptrace stop.
    /// Returns a signal that arrived meanwhile and must be re-delivered at detach.
    pub fn interrupt(&self) -> Result<Option<i32>> {
        self.request_stop()?;
        Self::stopped_as(wait_stop(self.pid)?)
    }

    /// Asks the tracee to stop (`PTRACE_INTERRUPT`) without waiting: to stop
    /// several threads at once, then wait for each ([`wait_stop_until`],
    /// [`Tracee::stopped_as`]).
    pub fn request_stop(&self) -> Result<()> {
        ptrace(libc::PTRACE_INTERRUPT, self.pid, 0, 0, "ptrace(INTERRUPT)")?;
        Ok(())
    }

    /// What the stop that followed [`Tracee::request_stop`] means: `Ok(None)`
    /// for the requested stop, `Ok(Some(sig))` for a signal that arrived
    /// meanwhile (to re-deliver at detach), an error if the thread exited.
    pub fn stopped_as(stop: Stop) -> Result<Option<i32>> {
        match stop {
            Stop::Event(_) => Ok(None),
            Stop::Signal(sig) if sig == libc::SIGTRAP || sig == libc::SIGSTOP => Ok(None),
            Stop::Signal(sig) => Ok(Some(sig)),
            Stop::Gone(_) => Err(SysError::new("ptrace(INTERRUPT): process exited", libc::ESRCH)),
        }
    }

    /// Changes the ptrace options (`PTRACE_O_*`) of a stopped tracee.
    pub fn set_options(&self, options: libc::c_int) -> Result<()> {
        ptrace(libc::PTRACE_SETOPTIONS, self.pid, 0, options.unsigned_abs() as usize, "ptrace(SETOPTIONS)")?;
        Ok(())
    }

    pub fn get_regs(&self) -> Result<Regs> {
        let mut regs: Regs = [0; USER_REGS_WORDS];
        ptrace(libc::PTRACE_GETREGS, self.pid, 0, regs.as_mut_ptr() as usize, "ptrace(GETREGS)")?;
        Ok(regs)
    }

    pub fn set_regs(&self, regs: &Regs) -> Result<()> {
        ptrace(libc::PTRACE_SETREGS, self.pid, 0, regs.as_ptr() as usize, "ptrace(SETREGS)")?;
        Ok(())
    }

    /// The xsave area (FPU, SSE, AVX, ...) as `NT_X86_XSTATE`.
    pub fn get_xstate(&self) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; 16384];
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        ptrace(
            libc::PTRACE_GETREGSET,
            self.pid,
            NT_X86_XSTATE as usize,
            &mut iov as *mut _ as usize,
            "ptrace(GETREGSET xstate)",
        )?;
        buf.truncate(iov.iov_len);
        Ok(buf)
    }

    pub fn set_xstate(&self, xstate: &[u8]) -> Result<()> {
        let mut copy = xstate.to_vec();
        let mut iov = libc::iovec { iov_base: copy.as_mut_ptr().cast(), iov_len: copy.len() };
        ptrace(
            libc::PTRACE_SETREGSET,
            self.pid,
            NT_X86_XSTATE as usize,
            &mut iov as *mut _ as usize,
            "ptrace(SETREGSET xstate)",
        )?;
        Ok(())
    }

    pub fn get_sigmask(&self) -> Result<u64> {
        let mut mask = 0u64;
        ptrace(PTRACE_GETSIGMASK, self.pid, 8, &mut mask as *mut u64 as usize, "ptrace(GETSIGMASK)")?;
        Ok(mask)
    }

    pub fn set_sigmask(&self, mask: u64) -> Result<()> {
        ptrace(PTRACE_SETSIGMASK, self.pid, 8, &mask as *const u64 as usize, "ptrace(SETSIGMASK)")?;
        Ok(())
    }

    /// The tracee's registered rseq area: (address, length, signature), if any.
    pub fn rseq(&self) -> Result<Option<(u64, u32, u32)>> {
        let mut conf = [0u32; 6];
        ptrace(PTRACE_GET_RSEQ_CONFIGURATION, self.pid, 24, conf.as_mut_ptr() as usize, "ptrace(GET_RSEQ_CONFIGURATION)")?;
        let addr = conf[0] as u64 | ((conf[1] as u64) << 32);
        Ok((addr != 0).then_some((addr, conf[2], conf[3])))
    }

    /// The signals pending for the tracee, oldest first: its own queue
    /// (thread-directed), or with `shared` its process's.
    pub fn pending_signals(&self, shared: bool) -> Result<Vec<SigInfo>> {
        const BATCH: i32 = 32;
        let mut out = Vec::new();
        let mut buf = vec![[0u8; SIGINFO_BYTES]; BATCH.unsigned_abs() as usize];
        loop {
            let args = PeekSiginfoArgs {
                off: out.len() as u64,
                flags: if shared { PTRACE_PEEKSIGINFO_SHARED } else { 0 },
                nr: BATCH,
            };
            let n = ptrace(PTRACE_PEEKSIGINFO, self.pid, &args as *const _ as usize, buf.as_mut_ptr() as usize, "ptrace(PEEKSIGINFO)")?;
            let n = usize::try_from(n).unwrap_or(0).min(buf.len());
            out.extend_from_slice(&buf[..n]);
            if n < buf.len() {
                return Ok(out);
            }
        }
    }

    /// The `siginfo_t` of the signal the tracee is stopped for.
    pub fn stop_siginfo(&self) -> Result<SigInfo> {
        let mut info = [0u8; SIGINFO_BYTES];
        ptrace(libc::PTRACE_GETSIGINFO, self.pid, 0, info.as_mut_ptr() as usize, "ptrace(GETSIGINFO)")?;
        Ok(info)
    }

    pub fn event_msg(&self) -> Result<u64> {
        let mut msg: libc::c_ulong = 0;
        ptrace(libc::PTRACE_GETEVENTMSG, self.pid, 0, &mut msg as *mut _ as usize, "ptrace(GETEVENTMSG)")?;
        Ok(msg)
    }

    pub fn cont(&self, sig: i32) -> Result<()> {
        ptrace(libc::PTRACE_CONT, self.pid, 0, sig.unsigned_abs() as usize, "ptrace(CONT)")?;
        Ok(())
    }

    /// Runs one syscall in the tracee by pointing `rip` at a `syscall`
    /// instruction (`gadget`) and single-stepping over it. `base` is the
    /// register set to start from; the caller restores the real registers later.
    /// `on_event` sees every `PTRACE_EVENT_*` stop on the way (fork events).
    ///
    /// A single-step trap is a forced SIGTRAP, and the kernel resets the
    /// handler of a forced signal that the thread blocks: a tracee that
    /// blocks SIGTRAP (and may have a handler for it, or one pending) is run
    /// from syscall-entry stop to syscall-exit stop instead (`PTRACE_SYSCALL`:
    /// no signal at all, one round trip more).
    pub fn inject_syscall(
        &self,
        base: &Regs,
        gadget: u64,
        nr: i64,
        args: &[u64],
        on_event: impl FnMut(&Tracee, i32) -> Result<()>,
    ) -> Result<i64> {
        let request = if self.get_sigmask()? & SIGTRAP_BIT != 0 { libc::PTRACE_SYSCALL } else { libc::PTRACE_SINGLESTEP };
        self.inject_with(request, base, gadget, nr, args, on_event)
    }

    /// [`Tracee::inject_syscall`], stepping with `request`: one SIGTRAP stop
    /// for `PTRACE_SINGLESTEP`, two (entry and exit) for `PTRACE_SYSCALL`.
    fn inject_with(
        &self,
        request: libc::c_uint,
        base: &Regs,
        gadget: u64,
        nr: i64,
        args: &[u64],
        mut on_event: impl FnMut(&Tracee, i32) -> Result<()>,
    ) -> Result<i64> {
        let mut regs = *base;
        regs[RIP] = gadget;
        regs[RAX] = crate::unsigned(nr);
        // orig_rax = -1 keeps the kernel's syscall-restart logic away from our registers.
        regs[ORIG_RAX] = u64::MAX;
        for (i, a) in args.iter().enumerate() {
            regs[ARG_REGS[i]] = *a;
        }
        self.set_regs(&regs)?;
        let what = if request == libc::PTRACE_SYSCALL { "ptrace(SYSCALL)" } else { "ptrace(SINGLESTEP)" };
        let mut traps_left = if request == libc::PTRACE_SYSCALL { 2 } else { 1 };
        ptrace(request, self.pid, 0, 0, what)?;
        loop {
            match wait_stop(self.pid)? {
                Stop::Signal(libc::SIGTRAP) => {
                    traps_left -= 1;
                    if traps_left == 0 {
                        break;
                    }
                    ptrace(request, self.pid, 0, 0, what)?;
                }
                Stop::Event(ev) => {
                    on_event(self, ev)?;
                    ptrace(request, self.pid, 0, 0, what)?;
                }
                Stop::Signal(sig) => {
                    // A signal raced with the injection. Injected syscalls run with the
                    // tracee's own mask; the caller re-delivers at detach if it matters.
                    return Err(SysError::new(
                        if sig == libc::SIGSEGV || sig == libc::SIGBUS {
                            "injected syscall faulted"
                        } else {
                            "injected syscall interrupted by a signal"
                        },
                        libc::EINTR,
                    ));
                }
                Stop::Gone(_) => return Err(SysError::new("injected syscall: process exited", libc::ESRCH)),
            }
        }
        let after = self.get_regs()?;
        Ok(crate::signed(after[RAX]))
    }

    /// Detaches, delivering `sig` (0 for none). The tracee continues from its current registers.
    pub fn detach(mut self, sig: i32) -> Result<()> {
        self.attached = false;
        ptrace(libc::PTRACE_DETACH, self.pid, 0, sig.unsigned_abs() as usize, "ptrace(DETACH)")?;
        Ok(())
    }
}

impl Drop for Tracee {
    fn drop(&mut self) {
        if self.attached {
            // Best effort: an error path dropped us; let the process go on as it was.
            let _ = ptrace(libc::PTRACE_DETACH, self.pid, 0, 0, "ptrace(DETACH)");
        }
    }
}

/// Register indices the rest of mitosis uses when editing a [`Regs`].
pub mod idx {
    pub const RBX: usize = 5;
    pub const RAX: usize = super::RAX;
    pub const ORIG_RAX: usize = super::ORIG_RAX;
    pub const RIP: usize = super::RIP;
    pub const RSP: usize = 19;
    pub const RDI: usize = 14;
    /// The thread-local storage base (`arch_prctl(ARCH_SET_FS)`).
    pub const FS_BASE: usize = 21;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A child that sleeps, killed and reaped on drop.
    struct Sleeper(std::process::Child);

    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn stops_are_requested_then_awaited_with_a_deadline() {
        let child = Sleeper(std::process::Command::new("sleep").arg("30").spawn().unwrap());
        let pid = i32::try_from(child.0.id()).unwrap();
        let t = Tracee::seize(pid, 0).unwrap();
        // Nothing asked yet: the deadline passes without a stop.
        assert_eq!(wait_stop_until(pid, Instant::now() + Duration::from_millis(30)).unwrap(), None);
        t.request_stop().unwrap();
        let stop = wait_stop_until(pid, Instant::now() + Duration::from_secs(5)).unwrap().expect("the sleeper stops");
        assert_eq!(Tracee::stopped_as(stop).unwrap(), None, "the requested stop, no signal to re-deliver: {stop:?}");
        t.set_options(libc::PTRACE_O_TRACECLONE).unwrap();
        assert!(Tracee::stopped_as(Stop::Gone(0)).is_err());
        // A signal sent to the stopped thread waits in its own queue.
        assert!(t.pending_signals(false).unwrap().is_empty());
        crate::process::kill(pid, libc::SIGUSR2).unwrap();
        let signo = |i: &SigInfo| i32::from_ne_bytes(i[..4].try_into().unwrap());
        let shared = t.pending_signals(true).unwrap();
        assert_eq!(shared.iter().map(signo).collect::<Vec<_>>(), [libc::SIGUSR2], "kill() queues for the process");
        t.detach(0).unwrap();
    }
}
