//! Recreating the seed's carried descriptors in the child (pipes with their
//! bytes, eventfds, timerfds, signalfds, epoll instances with their
//! watches; see `mitosis_proto::descriptors`).
//!
//! Where, decided: here, by syscalls injected into the child once its
//! layout stands, not in the prologue. The objects must be the child's own
//! (created in it, so that they are charged to it and die with it), at the
//! seed's numbers; their state is set partly from inside (a timer's
//! settings, an epoll watch, which the kernel keys by the descriptor
//! number in the watching process) and partly from the daemon through a
//! copy of the child's descriptor taken with `pidfd_getfd` (a pipe's
//! bytes, an eventfd's counter: writes of any size, with no buffer in the
//! child). The prologue, which runs allocation-free code before the child
//! is traced, could create them but not fill them.
//!
//! Numbers: each object is created at whatever number the kernel gives,
//! moved at once to a staging number above every number the seed uses
//! (`F_DUPFD_CLOEXEC`), and only when all exist put at the seed's numbers
//! (`dup3`, with the seed's close-on-exec flag), so that no object lands
//! on a number another one still needs. Epoll watches are added last,
//! when every watched descriptor is at its number.

use std::io::Write;
use std::os::fd::OwnedFd;

use mitosis_proto::descriptors::{CarriedObject, ObjectKind};
use mitosis_sys::mem::ProcMem;
use mitosis_sys::ptrace::{Regs, Tracee};
use mitosis_sys::{pidfd, SysError};

use crate::RestoreError;

/// `TFD_IOC_SET_TICKS`: `_IOW('T', 0, u64)`.
const TFD_IOC_SET_TICKS: u64 = (1 << 30) | (8 << 16) | ((b'T' as u64) << 8);
const EPOLL_CTL_ADD: u64 = 1;

/// Runs syscalls in the stopped child, with `slot` as scratch memory for
/// their in- and out-parameters (`slot_len` bytes, at least 64).
pub(crate) struct Injector<'a> {
    pub tracee: &'a Tracee,
    pub base: &'a Regs,
    pub gadget: u64,
    pub mem: &'a ProcMem,
    pub slot: u64,
    pub slot_len: u64,
}

impl Injector<'_> {
    pub(crate) fn call(&self, nr: i64, args: &[u64], what: &str) -> Result<i64, RestoreError> {
        let no_events = |_: &Tracee, _: i32| Ok(());
        let r = self.tracee.inject_syscall(self.base, self.gadget, nr, args, no_events).map_err(RestoreError::sys(what.to_string()))?;
        if r < 0 {
            let errno = i32::try_from(-r).unwrap_or(libc::EINVAL);
            return Err(RestoreError::Sys { step: what.to_string(), source: SysError::new("syscall in the child", errno) });
        }
        Ok(r)
    }

    pub(crate) fn put(&self, bytes: &[u8], what: &str) -> Result<(), RestoreError> {
        if bytes.len() as u64 > self.slot_len {
            return Err(RestoreError::Incompatible(format!("{what}: a path of {} bytes does not fit the restore's scratch memory", bytes.len())));
        }
        self.mem.write_all_at(bytes, self.slot).map_err(RestoreError::sys(what.to_string()))
    }

    /// Opens `path` in the child (`openat` from its working directory).
    fn open(&self, path: &str, flags: i32, mode: u32, what: &str) -> Result<i64, RestoreError> {
        let mut bytes = path.as_bytes().to_vec();
        bytes.push(0);
        self.put(&bytes, what)?;
        let at_cwd = u64::from_ne_bytes(i64::from(libc::AT_FDCWD).to_ne_bytes());
        self.call(libc::SYS_openat, &[at_cwd, self.slot, u64::from(flags.unsigned_abs()), u64::from(mode)], what)
    }

    /// A descriptor the child got from a creating call, moved to the lowest
    /// free number at or above `staging` (its original number closed).
    fn stage(&self, fd: i64, staging: i32, what: &str) -> Result<i32, RestoreError> {
        let at = self.call(libc::SYS_fcntl, &[fd.unsigned_abs(), libc::F_DUPFD_CLOEXEC as u64, staging.unsigned_abs().into()], what)?;
        self.call(libc::SYS_close, &[fd.unsigned_abs()], what)?;
        i32::try_from(at).map_err(|_| RestoreError::Sys { step: what.to_string(), source: SysError::new("fcntl(F_DUPFD_CLOEXEC)", libc::EBADF) })
    }
}

/// A descriptor or other non-negative int as a syscall argument.
fn fd_arg(fd: i32) -> u64 {
    u64::from(fd.unsigned_abs())
}

/// Recreates `objects` in the child `child` (traced and stopped; see
/// [`Injector`]) at their numbers; `staging` is above every number the
/// seed uses and the child's userfaultfd (anything the child still has
/// there is closed first).
/// `owner_may_change`: the child runs as root, and unlinked files get
/// their seed's owner and group (otherwise they are the child's own);
/// `cwd`: the seed's working directory (the child's).
pub(crate) fn recreate(
    child: &Injector<'_>,
    child_pidfd: &OwnedFd,
    objects: &[CarriedObject],
    staging: i32,
    owner_may_change: bool,
    cwd: &str,
) -> Result<(), RestoreError> {
    // Nothing of the child's may sit at or above `staging` but what is made
    // here: the prologue's ready descriptor is still open when the daemon
    // took the child over between the prologue's report and its close (seen
    // as a stray pipe in children).
    child.call(libc::SYS_close_range, &[fd_arg(staging), u64::from(u32::MAX), 0], "closing the prologue's leftover descriptors")?;
    // Each object's ends at their staging numbers.
    let mut staged: Vec<Vec<i32>> = Vec::with_capacity(objects.len());
    for o in objects {
        let what = format!("recreating the seed's {} (descriptor {})", o.kind_name(), o.ends[0].fds[0].fd);
        let cloexec = u64::from(libc::O_CLOEXEC.unsigned_abs());
        let ends = match &o.kind {
            ObjectKind::Pipe { capacity, data } => {
                child.call(libc::SYS_pipe2, &[child.slot, cloexec], &what)?;
                let mut pair = [0u8; 8];
                child.mem.read_exact_at(&mut pair, child.slot).map_err(RestoreError::sys(what.clone()))?;
                let read = i32::from_ne_bytes(pair[..4].try_into().expect("4 bytes"));
                let write = i32::from_ne_bytes(pair[4..].try_into().expect("4 bytes"));
                let (read, write) = (child.stage(read.into(), staging, &what)?, child.stage(write.into(), staging, &what)?);
                child.call(libc::SYS_fcntl, &[fd_arg(write), libc::F_SETPIPE_SZ as u64, u64::from(*capacity)], &what)?;
                fill(child_pidfd, write, data, &what)?;
                let mut ends = vec![read, write];
                // More open file descriptions of the pipe, as the seed made them.
                for end in &o.ends[2..] {
                    // Non-blocking: the status flags are set below, as for every end.
                    let flags = end.access | libc::O_CLOEXEC | libc::O_NONBLOCK;
                    let fd = child.open(&format!("/proc/self/fd/{read}"), flags, 0, &what)?;
                    ends.push(child.stage(fd, staging, &what)?);
                }
                ends
            }
            ObjectKind::EventFd { count, semaphore } => {
                let flags = libc::EFD_CLOEXEC | if *semaphore { libc::EFD_SEMAPHORE } else { 0 };
                let fd = child.call(libc::SYS_eventfd2, &[0, u64::from(flags.unsigned_abs())], &what)?;
                let fd = child.stage(fd, staging, &what)?;
                if *count > 0 {
                    fill(child_pidfd, fd, &count.to_ne_bytes(), &what)?;
                }
                vec![fd]
            }
            ObjectKind::TimerFd { clock, value_ns, interval_ns, ticks } => {
                let flags = u64::from(libc::TFD_CLOEXEC.unsigned_abs());
                let fd = child.call(libc::SYS_timerfd_create, &[u64::from(clock.unsigned_abs()), flags], &what)?;
                let fd = child.stage(fd, staging, &what)?;
                // An interval timer that expired and was not read yet shows no
                // time left (the kernel re-arms it on the read): it goes off
                // again one interval from now, its unread expirations kept.
                let value_ns = if *value_ns == 0 && *ticks > 0 { *interval_ns } else { *value_ns };
                if value_ns > 0 {
                    // struct itimerspec { it_interval, it_value }, relative: the time left at prepare.
                    let mut spec = Vec::with_capacity(32);
                    for ns in [*interval_ns, value_ns] {
                        spec.extend_from_slice(&(ns / 1_000_000_000).to_ne_bytes());
                        spec.extend_from_slice(&(ns % 1_000_000_000).to_ne_bytes());
                    }
                    child.put(&spec, &what)?;
                    child.call(libc::SYS_timerfd_settime, &[fd_arg(fd), 0, child.slot, 0], &what)?;
                }
                if *ticks > 0 {
                    child.put(&ticks.to_ne_bytes(), &what)?;
                    child.call(libc::SYS_ioctl, &[fd_arg(fd), TFD_IOC_SET_TICKS, child.slot], &what)?;
                }
                vec![fd]
            }
            ObjectKind::SignalFd { mask } => {
                child.put(&mask.to_ne_bytes(), &what)?;
                let flags = u64::from(libc::SFD_CLOEXEC.unsigned_abs());
                let fd = child.call(libc::SYS_signalfd4, &[u64::MAX, child.slot, 8, flags], &what)?;
                vec![child.stage(fd, staging, &what)?]
            }
            ObjectKind::Epoll { .. } => {
                let fd = child.call(libc::SYS_epoll_create1, &[u64::from(libc::EPOLL_CLOEXEC.unsigned_abs())], &what)?;
                vec![child.stage(fd, staging, &what)?]
            }
            ObjectKind::InetSocket { domain, kind, protocol, options, bound, listening, peer } => {
                let flags = kind | libc::SOCK_CLOEXEC;
                let fd = child.call(libc::SYS_socket, &[fd_arg(*domain), u64::from(flags.unsigned_abs()), fd_arg(*protocol)], &what)?;
                let fd = child.stage(fd, staging, &what)?;
                for &(level, name, value) in options {
                    set_option(child, fd, level, name, value, &what)?;
                }
                if let Some(address) = bound {
                    child.put(address, &what)?;
                    let len = address.len() as u64;
                    child.call(libc::SYS_bind, &[fd_arg(fd), child.slot, len], &what).map_err(|e| {
                        RestoreError::Incompatible(format!(
                            "the seed's socket (descriptor {}) was bound to {}, which cannot be bound on this host: {e}",
                            o.ends[0].fds[0].fd,
                            describe_address(address)
                        ))
                    })?;
                }
                if *listening {
                    // The seed's backlog is not visible from outside: the kernel's ceiling.
                    child.call(libc::SYS_listen, &[fd_arg(fd), fd_arg(libc::SOMAXCONN)], &what)?;
                }
                if let Some(address) = peer {
                    child.put(address, &what)?;
                    child.call(libc::SYS_connect, &[fd_arg(fd), child.slot, address.len() as u64], &what).map_err(|e| {
                        RestoreError::Incompatible(format!(
                            "the seed's UDP socket (descriptor {}) sent to {} by default, which this host cannot: {e}",
                            o.ends[0].fds[0].fd,
                            describe_address(address)
                        ))
                    })?;
                }
                vec![fd]
            }
            ObjectKind::UnlinkedFile { dir, memfd_name, size, mode, uid, gid, seals, atime, mtime, data } => {
                let made = match (dir, memfd_name) {
                    // Made by the child, as the seed's owner: where the seed's file was.
                    // The working directory by ".": in a container the child keeps its seed's,
                    // also where its path names another directory (a private /tmp).
                    (Some(dir), _) => {
                        let dir = if dir == cwd { "." } else { dir.as_str() };
                        child.open(dir, libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC, 0o600, &what).or_else(|e| {
                        tracing::warn!(dir, error = %e, "the seed's unlinked file cannot be made in its directory here: the child gets a memfd instead");
                        memfd(child, "mitosis-unlinked", &what)
                    })?
                    }
                    (None, Some(name)) => memfd(child, name, &what)?,
                    (None, None) => return Err(RestoreError::Incompatible(format!("{what}: neither a directory nor a memfd"))),
                };
                let master = child.stage(made, staging, &what)?;
                let copy = std::fs::File::from(pidfd::getfd(child_pidfd, master).map_err(RestoreError::sys(what.clone()))?);
                let io = |e: std::io::Error| RestoreError::Sys { step: what.clone(), source: SysError::new("write", e.raw_os_error().unwrap_or(libc::EIO)) };
                use std::os::unix::fs::{FileExt, PermissionsExt};
                for (at, bytes) in data {
                    copy.write_all_at(bytes, *at).map_err(io)?;
                }
                copy.set_len(*size).map_err(io)?;
                // The owner first: a change of owner clears the set-user and set-group-ID bits.
                // (Otherwise the file is the child's own, made with its credentials.)
                if owner_may_change {
                    std::os::unix::fs::fchown(&copy, Some(*uid), Some(*gid)).map_err(io)?;
                }
                copy.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777)).map_err(io)?;
                // Last of the content: the writes above changed them.
                let time = |(sec, nsec): (i64, i64)| {
                    let since = std::time::Duration::new(sec.unsigned_abs(), u32::try_from(nsec).unwrap_or(0));
                    if sec >= 0 { std::time::UNIX_EPOCH + since } else { std::time::UNIX_EPOCH - since }
                };
                copy.set_times(std::fs::FileTimes::new().set_accessed(time(*atime)).set_modified(time(*mtime))).map_err(io)?;
                // The first read-write description is the one made above (a memfd made by
                // memfd_create can be executed while it is open for writing; one opened
                // again cannot), every other one is opened anew through the file's /proc
                // link (also a read-only one).
                let mut ends = Vec::with_capacity(o.ends.len());
                let mut master_used = false;
                for end in &o.ends {
                    let fd = if end.access == libc::O_RDWR && !master_used {
                        master_used = true;
                        master
                    } else {
                        let fd = child.open(&format!("/proc/self/fd/{master}"), end.access | libc::O_CLOEXEC, 0, &what)?;
                        child.stage(fd, staging, &what)?
                    };
                    child.call(libc::SYS_lseek, &[fd_arg(fd), end.pos, libc::SEEK_SET as u64], &what)?;
                    ends.push(fd);
                }
                if !master_used {
                    child.call(libc::SYS_close, &[fd_arg(master)], &what)?;
                }
                if *seals != 0 {
                    mitosis_sys::fdstate::add_seals(&copy, *seals).map_err(RestoreError::sys(what.clone()))?;
                }
                ends
            }
        };
        staged.push(ends);
    }
    for (o, ends) in objects.iter().zip(&staged) {
        for (end, &at) in o.ends.iter().zip(ends) {
            let what = format!("placing the seed's {} at descriptor {}", o.kind_name(), end.fds[0].fd);
            for n in &end.fds {
                let flags = if n.cloexec { u64::from(libc::O_CLOEXEC.unsigned_abs()) } else { 0 };
                child.call(libc::SYS_dup3, &[fd_arg(at), fd_arg(n.fd), flags], &what)?;
            }
            child.call(libc::SYS_fcntl, &[fd_arg(end.fds[0].fd), libc::F_SETFL as u64, u64::from(end.status_flags.unsigned_abs())], &what)?;
            child.call(libc::SYS_close, &[fd_arg(at)], &what)?;
        }
    }
    for o in objects {
        let ObjectKind::Epoll { watches } = &o.kind else { continue };
        let epfd = o.ends[0].fds[0].fd;
        for w in watches {
            let what = format!("adding descriptor {} to the seed's epoll instance {epfd}", w.fd);
            // struct epoll_event is packed on x86-64: events, then data.
            let mut event = w.events.to_ne_bytes().to_vec();
            event.extend_from_slice(&w.data.to_ne_bytes());
            // The watch is keyed by the number it was added under: when that
            // number is now another file's (or none), the watched file is put
            // there for the moment of the call, and what was there put back.
            let saved = if w.file_fd == w.fd {
                None
            } else {
                let saved = match child.call(libc::SYS_fcntl, &[fd_arg(w.fd), libc::F_GETFD as u64], &what) {
                    Ok(fd_flags) => {
                        let at = child.call(libc::SYS_fcntl, &[fd_arg(w.fd), libc::F_DUPFD_CLOEXEC as u64, fd_arg(staging)], &what)?;
                        let cloexec = if fd_flags & i64::from(libc::FD_CLOEXEC) != 0 { u64::from(libc::O_CLOEXEC.unsigned_abs()) } else { 0 };
                        Some((i32::try_from(at).unwrap_or(i32::MAX), cloexec))
                    }
                    Err(RestoreError::Sys { source, .. }) if source.errno == libc::EBADF => None,
                    Err(e) => return Err(e),
                };
                child.call(libc::SYS_dup3, &[fd_arg(w.file_fd), fd_arg(w.fd), 0], &what)?;
                Some(saved)
            };
            child.put(&event, &what)?;
            child.call(libc::SYS_epoll_ctl, &[fd_arg(epfd), EPOLL_CTL_ADD, fd_arg(w.fd), child.slot], &what)?;
            match saved {
                None => {}
                Some(None) => {
                    child.call(libc::SYS_close, &[fd_arg(w.fd)], &what)?;
                }
                Some(Some((at, cloexec))) => {
                    child.call(libc::SYS_dup3, &[fd_arg(at), fd_arg(w.fd), cloexec], &what)?;
                    child.call(libc::SYS_close, &[fd_arg(at)], &what)?;
                }
            }
        }
    }
    Ok(())
}

/// Gives the child's socket `fd` the seed's `value` of an integer option,
/// where a fresh socket's differs (setting a buffer size that is already
/// the default would still turn off the kernel's automatic sizing). An
/// option the child may not set (one that needs a capability) is left as
/// it is, with a warning in the log.
fn set_option(child: &Injector<'_>, fd: i32, level: i32, name: i32, value: i32, what: &str) -> Result<(), RestoreError> {
    let mut query = [0u8; 12];
    query[8..].copy_from_slice(&4u32.to_ne_bytes());
    child.put(&query, what)?;
    child.call(libc::SYS_getsockopt, &[fd_arg(fd), fd_arg(level), fd_arg(name), child.slot, child.slot + 8], what)?;
    let mut now = [0u8; 4];
    child.mem.read_exact_at(&mut now, child.slot).map_err(RestoreError::sys(what.to_string()))?;
    if i32::from_ne_bytes(now) == value {
        return Ok(());
    }
    // The kernel doubles a buffer size it is given (and reports the double).
    let given = if level == libc::SOL_SOCKET && (name == libc::SO_RCVBUF || name == libc::SO_SNDBUF) { value / 2 } else { value };
    child.put(&given.to_ne_bytes(), what)?;
    if let Err(e) = child.call(libc::SYS_setsockopt, &[fd_arg(fd), fd_arg(level), fd_arg(name), child.slot, 4], what) {
        tracing::warn!(level, name, value, error = %e, "the child's socket keeps its own value of an option of the seed's");
    }
    Ok(())
}

/// A socket address for messages (`sockaddr_in` / `sockaddr_in6` bytes).
fn describe_address(address: &[u8]) -> String {
    let port = |b: &[u8]| u16::from_be_bytes([b[2], b[3]]);
    match address.first().copied().map(i32::from) {
        Some(libc::AF_INET) if address.len() >= 8 => {
            format!("{}:{}", std::net::Ipv4Addr::new(address[4], address[5], address[6], address[7]), port(address))
        }
        Some(libc::AF_INET6) if address.len() >= 24 => {
            let ip: [u8; 16] = address[8..24].try_into().expect("16 bytes");
            format!("[{}]:{}", std::net::Ipv6Addr::from(ip), port(address))
        }
        _ => format!("{address:?}"),
    }
}

/// A new memfd of the child named `name` (sealing allowed: the seed's seals
/// are added once it is filled).
fn memfd(child: &Injector<'_>, name: &str, what: &str) -> Result<i64, RestoreError> {
    let mut bytes = name.as_bytes().to_vec();
    bytes.push(0);
    child.put(&bytes, what)?;
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    child.call(libc::SYS_memfd_create, &[child.slot, u64::from(flags)], what)
}

/// Writes `bytes` into the child's descriptor `fd` through a copy of it.
fn fill(child_pidfd: &OwnedFd, fd: i32, bytes: &[u8], what: &str) -> Result<(), RestoreError> {
    if bytes.is_empty() {
        return Ok(());
    }
    let copy = pidfd::getfd(child_pidfd, fd).map_err(RestoreError::sys(what.to_string()))?;
    std::fs::File::from(copy)
        .write_all(bytes)
        .map_err(|e| RestoreError::Sys { step: what.to_string(), source: SysError::new("write", e.raw_os_error().unwrap_or(libc::EIO)) })
}
