//! Recreating the seed's carried descriptors in the child (pipes with their
//! bytes, eventfds, timerfds, signalfds, epoll instances with their
//! watches, unlinked files, sockets, Unix socket pairs with their queued
//! messages, fifos with their bytes, inotify instances with their watches;
//! see `mitosis_proto::descriptors`).
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

use mitosis_proto::descriptors::{CarriedObject, InotifyWatch, ObjectKind, SocketExtras, UnixSide};
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

    /// Puts `bytes` and a terminating NUL at the slot: a path or name for a
    /// call that takes a C string.
    fn put_c_string(&self, bytes: &[u8], what: &str) -> Result<(), RestoreError> {
        let mut c = Vec::with_capacity(bytes.len() + 1);
        c.extend_from_slice(bytes);
        c.push(0);
        self.put(&c, what)
    }

    /// Opens `path` in the child (`openat` from its working directory).
    fn open(&self, path: &str, flags: i32, mode: u32, what: &str) -> Result<i64, RestoreError> {
        self.put_c_string(path.as_bytes(), what)?;
        self.call(libc::SYS_openat, &[AT_CWD, self.slot, u64::from(flags.unsigned_abs()), u64::from(mode)], what)
    }

    /// A descriptor the child got from a creating call, moved to the lowest
    /// free number at or above `staging` (its original number closed).
    fn stage(&self, fd: i64, staging: i32, what: &str) -> Result<i32, RestoreError> {
        let at = self.call(libc::SYS_fcntl, &[fd.unsigned_abs(), libc::F_DUPFD_CLOEXEC as u64, staging.unsigned_abs().into()], what)?;
        self.call(libc::SYS_close, &[fd.unsigned_abs()], what)?;
        i32::try_from(at).map_err(|_| RestoreError::Sys { step: what.to_string(), source: SysError::new("fcntl(F_DUPFD_CLOEXEC)", libc::EBADF) })
    }
}

/// `AT_FDCWD` as a syscall argument: paths from the child's working directory.
const AT_CWD: u64 = (libc::AT_FDCWD as i64).cast_unsigned();

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
    let shared_ports = reuseport_addresses(objects);
    // Sockets bound with SO_REUSEPORT on for the moment (the seed turned it
    // off once its sockets shared the port): turned off once all are bound.
    let mut reuseport_off: Vec<i32> = Vec::new();
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
            ObjectKind::InetSocket { domain, kind, protocol, options, bound, listening, peer, extras, shutdown } => {
                let flags = kind | libc::SOCK_CLOEXEC;
                let fd = child.call(libc::SYS_socket, &[fd_arg(*domain), u64::from(flags.unsigned_abs()), fd_arg(*protocol)], &what)?;
                let fd = child.stage(fd, staging, &what)?;
                for &(level, name, value) in options {
                    set_option(child, fd, level, name, value, &what)?;
                }
                // Before the bind: a device binding decides which addresses are free.
                set_extras(child, fd, extras, &what)?;
                if let Some(address) = bound {
                    if !has_reuseport(options) && shared_ports.contains(&(*domain, address.as_slice())) {
                        set_option(child, fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1, &what)?;
                        reuseport_off.push(o.ends[0].fds[0].fd);
                    }
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
                shut_down(child, fd, *shutdown, &what)?;
                vec![fd]
            }
            ObjectKind::UnixPair { kind, sides } => {
                let ends = socket_pair(child, *kind, staging, &what)?.to_vec();
                unix_pair_state(child, child_pidfd, &ends, *kind, sides, &what)?;
                ends
            }
            ObjectKind::UnixOrphan { kind, side } => {
                // One end of a new pair, filled from the other, which is then closed.
                let ends = socket_pair(child, *kind, staging, &what)?;
                let other = UnixSide { options: Vec::new(), queue: Vec::new(), shutdown: 0, extras: SocketExtras::default() };
                unix_pair_state(child, child_pidfd, &ends, *kind, &[side.clone(), other], &what)?;
                child.call(libc::SYS_close, &[fd_arg(ends[1])], &what)?;
                vec![ends[0]]
            }
            ObjectKind::UnixConnection { kind, listener, accepted, sides } => {
                // The listener was made before (capture puts it first); the client
                // non-blocking (its flags are set below), so that a full queue fails, not waits.
                let made = objects.iter().zip(&staged).find_map(|(l, ends)| match &l.kind {
                    ObjectKind::UnixSocket { name: Some(name), backlog: Some(_), .. } if name == listener => Some(ends[0]),
                    _ => None,
                });
                let Some(listening) = made else {
                    return Err(RestoreError::Incompatible(format!("{what}: its listener is not among the seed's sockets")));
                };
                let flags = kind | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
                let client = child.call(libc::SYS_socket, &[fd_arg(libc::AF_UNIX), fd_arg(flags), 0], &what)?;
                let client = child.stage(client, staging, &what)?;
                let address = unix_address(listener);
                child.put(&address, &what)?;
                child.call(libc::SYS_connect, &[fd_arg(client), child.slot, address.len() as u64], &what)?;
                let mut ends = vec![client];
                if *accepted {
                    let flags = libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
                    let server = child.call(libc::SYS_accept4, &[fd_arg(listening), 0, 0, fd_arg(flags)], &what)?;
                    ends.push(child.stage(server, staging, &what)?);
                }
                unix_pair_state(child, child_pidfd, &ends, *kind, sides, &what)?;
                ends
            }
            ObjectKind::UnixSocket { kind, options, name, name_unlinked, file_mode, file_owner, backlog, shutdown, extras, queue, .. } => {
                let flags = kind | libc::SOCK_CLOEXEC;
                let fd = child.call(libc::SYS_socket, &[fd_arg(libc::AF_UNIX), fd_arg(flags), 0], &what)?;
                let fd = child.stage(fd, staging, &what)?;
                for &(level, name, value) in options {
                    set_option(child, fd, level, name, value, &what)?;
                }
                set_extras(child, fd, extras, &what)?;
                if let Some(name) = name {
                    let owner = file_owner.filter(|_| owner_may_change);
                    bind_unix(child, fd, name, *name_unlinked, *file_mode, owner, &what)?;
                    send_by_name(child, name, queue, &what)?;
                }
                if let Some(backlog) = backlog {
                    child.call(libc::SYS_listen, &[fd_arg(fd), u64::from(*backlog)], &what)?;
                }
                shut_down(child, fd, *shutdown, &what)?;
                vec![fd]
            }
            ObjectKind::Fifo { path, mode, unlinked, identity, capacity, data } => {
                let bytes = FifoBytes { identity: *identity, capacity: *capacity, data };
                fifo(child, child_pidfd, o, path, *mode, *unlinked, &bytes, staging, &what)?
            }
            ObjectKind::Inotify { watches } => {
                let fd = child.call(libc::SYS_inotify_init1, &[u64::from(libc::IN_CLOEXEC.unsigned_abs())], &what)?;
                let fd = child.stage(fd, staging, &what)?;
                inotify_watches(child, child_pidfd, fd, watches, &what)?;
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
                // A memfd's first read-write description is the one made above (a memfd
                // made by memfd_create can be executed while it is open for writing; one
                // opened again cannot), every other one is opened anew through the file's
                // /proc link (also a read-only one). So is every description of a file
                // made with O_TMPFILE, whose flags (F_GETFL) would show O_TMPFILE.
                let mut ends = Vec::with_capacity(o.ends.len());
                let may_use_master = dir.is_none();
                let mut master_used = false;
                for end in &o.ends {
                    let fd = if may_use_master && end.access == libc::O_RDWR && !master_used {
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
    for &fd in &reuseport_off {
        set_option(child, fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 0, &format!("turning SO_REUSEPORT off again on the seed's socket {fd}"))?;
    }
    // Datagram sockets sending to a socket of the seed by default, once every socket is bound.
    for o in objects {
        let ObjectKind::UnixSocket { peer_name: Some(peer), .. } = &o.kind else { continue };
        let fd = o.ends[0].fds[0].fd;
        let what = format!("connecting the seed's datagram socket {fd} again");
        let address = unix_address(peer);
        child.put(&address, &what)?;
        child.call(libc::SYS_connect, &[fd_arg(fd), child.slot, address.len() as u64], &what)?;
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

/// What went wrong in an injected call, for a message: the errno too.
fn cause(e: &RestoreError) -> String {
    match e {
        RestoreError::Sys { source, .. } => source.to_string(),
        e => e.to_string(),
    }
}

/// `RCV_SHUTDOWN` and `SEND_SHUTDOWN` bits of a socket (`sk_shutdown`).
const RCV_SHUTDOWN: u8 = 1;
const SEND_SHUTDOWN: u8 = 2;

/// Gives the child's new socket pair `ends` (or lone client) the seed's options, queued
/// messages (each side's sent from the other, in order, through copies of
/// the child's sockets taken by the daemon; never blocking) and shutdown
/// bits (last: a socket shut for sending sends nothing more).
fn unix_pair_state(child: &Injector<'_>, child_pidfd: &OwnedFd, ends: &[i32], kind: i32, sides: &[UnixSide], what: &str) -> Result<(), RestoreError> {
    for (side, &fd) in sides.iter().zip(ends) {
        for &(level, name, value) in &side.options {
            set_option(child, fd, level, name, value, what)?;
        }
    }
    for (i, side) in sides.iter().enumerate() {
        // (A socket waiting to be accepted has nothing queued: no one could send to it.)
        if side.queue.is_empty() || ends.len() < 2 {
            continue;
        }
        let sender = pidfd::getfd(child_pidfd, ends[1 - i]).map_err(RestoreError::sys(what.to_string()))?;
        let full = |sent: usize| {
            RestoreError::Incompatible(format!(
                "{what}: {} queued bytes do not fit the socket's buffers on this host (sent {sent})",
                side.queue.iter().map(Vec::len).sum::<usize>()
            ))
        };
        let mut sent = 0;
        if kind == libc::SOCK_STREAM {
            let bytes = side.queue.concat();
            while sent < bytes.len() {
                match mitosis_sys::unixsock::send_nonblocking(&sender, &bytes[sent..]) {
                    Ok(n) => sent += n,
                    Err(e) if e.errno == libc::EAGAIN => return Err(full(sent)),
                    Err(e) => return Err(RestoreError::sys(what.to_string())(e)),
                }
            }
        } else {
            for message in &side.queue {
                match mitosis_sys::unixsock::send_nonblocking(&sender, message) {
                    Ok(n) if n == message.len() => sent += n,
                    Ok(_) => return Err(full(sent)),
                    Err(e) if [libc::EAGAIN, libc::EMSGSIZE].contains(&e.errno) => return Err(full(sent)),
                    Err(e) => return Err(RestoreError::sys(what.to_string())(e)),
                }
            }
        }
    }
    // After the queues: a filter would judge the messages put back.
    for (side, &fd) in sides.iter().zip(ends) {
        set_extras(child, fd, &side.extras, what)?;
        shut_down(child, fd, side.shutdown, what)?;
    }
    Ok(())
}

/// A new Unix socket pair of type `kind` in the child, at staging numbers.
fn socket_pair(child: &Injector<'_>, kind: i32, staging: i32, what: &str) -> Result<[i32; 2], RestoreError> {
    let flags = kind | libc::SOCK_CLOEXEC;
    child.call(libc::SYS_socketpair, &[fd_arg(libc::AF_UNIX), fd_arg(flags), 0, child.slot], what)?;
    let mut pair = [0u8; 8];
    child.mem.read_exact_at(&mut pair, child.slot).map_err(RestoreError::sys(what.to_string()))?;
    let first = i32::from_ne_bytes(pair[..4].try_into().expect("4 bytes"));
    let second = i32::from_ne_bytes(pair[4..].try_into().expect("4 bytes"));
    Ok([child.stage(first.into(), staging, what)?, child.stage(second.into(), staging, what)?])
}

/// The addresses `(domain, raw sockaddr)` that carried TCP and UDP sockets
/// with `SO_REUSEPORT` on are bound to: the seed's other sockets bound there
/// had it on when they were bound, whatever they have now.
fn reuseport_addresses(objects: &[CarriedObject]) -> Vec<(i32, &[u8])> {
    objects
        .iter()
        .filter_map(|o| match &o.kind {
            ObjectKind::InetSocket { domain, options, bound: Some(address), .. } if has_reuseport(options) => Some((*domain, address.as_slice())),
            _ => None,
        })
        .collect()
}

/// Whether integer socket options `options` have `SO_REUSEPORT` on.
fn has_reuseport(options: &[(i32, i32, i32)]) -> bool {
    options.iter().any(|&(level, name, value)| (level, name) == (libc::SOL_SOCKET, libc::SO_REUSEPORT) && value != 0)
}

/// A raw `sockaddr_un` for the `sun_path` bytes `name` (an abstract name
/// starts with 0).
fn unix_address(name: &[u8]) -> Vec<u8> {
    let mut address = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
    address.extend_from_slice(name);
    address
}

/// Sends `messages` to the child's datagram socket bound to `name`, in
/// order, from a new unnamed socket of the child's (resolved in its own
/// namespaces, never blocking): its queue as the seed's was.
fn send_by_name(child: &Injector<'_>, name: &[u8], messages: &[Vec<u8>], what: &str) -> Result<(), RestoreError> {
    if messages.is_empty() {
        return Ok(());
    }
    let flags = libc::SOCK_DGRAM | libc::SOCK_CLOEXEC;
    let sender = child.call(libc::SYS_socket, &[fd_arg(libc::AF_UNIX), fd_arg(flags), 0], what)?.unsigned_abs();
    let address = unix_address(name);
    let sent = messages.iter().try_for_each(|message| {
        let mut slot = address.clone();
        slot.extend_from_slice(message);
        child.put(&slot, what)?;
        let args = [
            sender,
            child.slot + address.len() as u64,
            message.len() as u64,
            libc::MSG_DONTWAIT as u64,
            child.slot,
            address.len() as u64,
        ];
        child.call(libc::SYS_sendto, &args, what).map(|_| ()).map_err(|e| {
            RestoreError::Incompatible(format!("{what}: the seed's {} queued messages do not fit the socket here: {}", messages.len(), cause(&e)))
        })
    });
    child.call(libc::SYS_close, &[sender], what)?;
    sent
}

/// Gives the child's socket `fd` the seed's options that are not integers.
/// One this host will not take (an interface it lacks, a device binding
/// the child may not make) is left as a new socket has it, with a warning,
/// as an integer option is.
fn set_extras(child: &Injector<'_>, fd: i32, extras: &SocketExtras, what: &str) -> Result<(), RestoreError> {
    let set = |name: i32, value: &[u8]| -> Result<(), RestoreError> {
        child.put(value, what)?;
        let args = [fd_arg(fd), fd_arg(libc::SOL_SOCKET), fd_arg(name), child.slot, value.len() as u64];
        if let Err(e) = child.call(libc::SYS_setsockopt, &args, what) {
            tracing::warn!(name, error = %e, "the child's socket keeps its own value of an option of the seed's");
        }
        Ok(())
    };
    if let Some((on, seconds)) = extras.linger {
        set(libc::SO_LINGER, &[on.to_ne_bytes(), seconds.to_ne_bytes()].concat())?;
    }
    if let Some(device) = &extras.device {
        set(libc::SO_BINDTODEVICE, device.as_bytes())?;
    }
    // struct timeval: seconds, then microseconds.
    let timeval = |us: u64| [(us / 1_000_000).to_ne_bytes(), (us % 1_000_000).to_ne_bytes()].concat();
    if extras.receive_timeout_us != 0 {
        set(libc::SO_RCVTIMEO, &timeval(extras.receive_timeout_us))?;
    }
    if extras.send_timeout_us != 0 {
        set(libc::SO_SNDTIMEO, &timeval(extras.send_timeout_us))?;
    }
    if !extras.filter.is_empty() {
        // struct sock_fprog (entry count, then a pointer) with the program after it.
        let entries = u16::try_from(extras.filter.len() / 8).map_err(|_| RestoreError::Incompatible(format!("{what}: the seed's socket filter is too long")))?;
        let mut fprog = [0u8; 16].to_vec();
        fprog[..2].copy_from_slice(&entries.to_ne_bytes());
        fprog[8..].copy_from_slice(&(child.slot + 16).to_ne_bytes());
        fprog.extend_from_slice(&extras.filter);
        child.put(&fprog, what)?;
        let args = [fd_arg(fd), fd_arg(libc::SOL_SOCKET), fd_arg(libc::SO_ATTACH_FILTER), child.slot, 16];
        child.call(libc::SYS_setsockopt, &args, what).map_err(|e| {
            RestoreError::Incompatible(format!("{what}: the seed's socket filter cannot be attached on this host: {e}"))
        })?;
    }
    Ok(())
}

/// Shuts the child's socket `fd` down as the seed's was (`RCV_SHUTDOWN`,
/// `SEND_SHUTDOWN` bits; on a connected stream or seqpacket socket each
/// also shuts its peer's other way, as the seed's shutdown did).
fn shut_down(child: &Injector<'_>, fd: i32, bits: u8, what: &str) -> Result<(), RestoreError> {
    let shut = |how: i32| match child.call(libc::SYS_shutdown, &[fd_arg(fd), fd_arg(how)], what) {
        // An unconnected TCP or UDP socket is shut all the same, and says ENOTCONN.
        Err(RestoreError::Sys { source, .. }) if source.errno == libc::ENOTCONN => Ok(()),
        r => r.map(|_| ()),
    };
    if bits & SEND_SHUTDOWN != 0 {
        shut(libc::SHUT_WR)?;
    }
    if bits & RCV_SHUTDOWN != 0 {
        shut(libc::SHUT_RD)?;
    }
    Ok(())
}

/// `S_IFMT` of the child's file named `path` (not following a final
/// symbolic link), or `None` when there is none (`newfstatat` in the child;
/// `st_mode` is at byte 24 of x86-64's `struct stat`).
fn file_type(child: &Injector<'_>, path: &[u8], what: &str) -> Result<Option<u32>, RestoreError> {
    let mut bytes = path.to_vec();
    bytes.push(0);
    let stat_at = (bytes.len() as u64).next_multiple_of(8);
    if stat_at + 144 > child.slot_len {
        return Err(RestoreError::Incompatible(format!("{what}: a path of {} bytes does not fit the restore's scratch memory", path.len())));
    }
    child.put(&bytes, what)?;
    let flags = u64::from(libc::AT_SYMLINK_NOFOLLOW.unsigned_abs());
    match child.call(libc::SYS_newfstatat, &[AT_CWD, child.slot, child.slot + stat_at, flags], what) {
        Ok(_) => {}
        Err(RestoreError::Sys { source, .. }) if source.errno == libc::ENOENT => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut mode = [0u8; 4];
    child.mem.read_exact_at(&mut mode, child.slot + stat_at + 24).map_err(RestoreError::sys(what.to_string()))?;
    Ok(Some(u32::from_ne_bytes(mode) & libc::S_IFMT))
}

/// Removes the child's file named `path` (`unlinkat` in the child; with
/// `AT_REMOVEDIR` in `flags`, its empty directory).
fn unlink(child: &Injector<'_>, path: &[u8], flags: i32, what: &str) -> Result<(), RestoreError> {
    child.put_c_string(path, what)?;
    child.call(libc::SYS_unlinkat, &[AT_CWD, child.slot, fd_arg(flags)], what).map(|_| ())
}

/// Makes, in the child, each directory on the way to `path` that is
/// missing (private to its owner: they are removed again at once); returns
/// them, outermost first.
fn make_missing_dirs(child: &Injector<'_>, path: &[u8], what: &str) -> Result<Vec<Vec<u8>>, RestoreError> {
    let mut made = Vec::new();
    let ends = path.iter().enumerate().filter(|&(i, &b)| b == b'/' && i > 0).map(|(i, _)| i);
    for end in ends {
        let dir = &path[..end];
        if file_type(child, dir, what)?.is_some() {
            continue;
        }
        child.put_c_string(dir, what)?;
        child.call(libc::SYS_mkdirat, &[AT_CWD, child.slot, 0o700], what)?;
        made.push(dir.to_vec());
    }
    Ok(made)
}

/// Binds the child's Unix socket `fd` to the seed's name `name`
/// (`sun_path` bytes). A path name whose file is a socket already (left by
/// a process that is gone, or by this seed on this host) is unlinked first;
/// any other file there is an error. `unlinked`: the seed's socket file was
/// unlinked, and the child's is too once bound; `file_mode`: the permission
/// bits the child's socket file gets (the seed's, whatever the umask);
/// `owner`: its owner and group, when the child may give them.
fn bind_unix(
    child: &Injector<'_>,
    fd: i32,
    name: &[u8],
    unlinked: bool,
    file_mode: Option<u32>,
    owner: Option<(u32, u32)>,
    what: &str,
) -> Result<(), RestoreError> {
    let is_path = name.first() != Some(&0);
    // The path without the terminating zero the kernel keeps.
    let path: &[u8] = if is_path { name.split(|&b| b == 0).next().unwrap_or_default() } else { name };
    let address = unix_address(name);
    let bind = || {
        child.put(&address, what)?;
        child.call(libc::SYS_bind, &[fd_arg(fd), child.slot, address.len() as u64], what)
    };
    let shown = String::from_utf8_lossy(path).replace('\0', "@");
    let cannot = |e: RestoreError| {
        RestoreError::Incompatible(format!("the seed's Unix socket was bound to {shown:?}, which cannot be bound on this host: {}", cause(&e)))
    };
    // Directories made for a name whose directory was removed too.
    let mut made = Vec::new();
    match bind() {
        Ok(_) => {}
        // The seed's name and its directory are gone: the directories are
        // made for the bind, and removed again with the name.
        Err(RestoreError::Sys { source, .. }) if is_path && unlinked && source.errno == libc::ENOENT => {
            made = make_missing_dirs(child, path, what)?;
            bind().map_err(cannot)?;
        }
        Err(RestoreError::Sys { source, .. }) if is_path && source.errno == libc::EADDRINUSE => {
            if file_type(child, path, what)? != Some(libc::S_IFSOCK) {
                return Err(RestoreError::Incompatible(format!("the seed's Unix socket was bound to {shown:?}, where this host has a file that is not a socket")));
            }
            unlink(child, path, 0, what)?;
            bind().map_err(cannot)?;
        }
        Err(e) => return Err(cannot(e)),
    }
    if is_path && unlinked {
        unlink(child, path, 0, what)?;
        for dir in made.iter().rev() {
            unlink(child, dir, libc::AT_REMOVEDIR, what)?;
        }
    } else if is_path {
        child.put_c_string(path, what)?;
        // The owner first: a change of owner clears the set-user and set-group-ID bits.
        if let Some((uid, gid)) = owner {
            let nofollow = u64::from(libc::AT_SYMLINK_NOFOLLOW.unsigned_abs());
            child.call(libc::SYS_fchownat, &[AT_CWD, child.slot, u64::from(uid), u64::from(gid), nofollow], what)?;
        }
        if let Some(mode) = file_mode {
            child.call(libc::SYS_fchmodat, &[AT_CWD, child.slot, u64::from(mode & 0o7777)], what)?;
        }
    }
    Ok(())
}

/// The child's ends of the seed's fifo at `path` (made there with `mode`
/// when missing, or when the seed's was unlinked, then unlinked again):
/// a keeper opened read-write first, so that no open waits for the other
/// side and the buffer lives while it is filled, then each end opened
/// through the keeper's /proc link with its access mode.
/// A fifo that is the seed's own (same device and inode: the child is on
/// the seed's host) and still holds bytes, because the seed or another
/// process keeps it open, is shared with them as after fork(); once nobody
/// holds it open its bytes are gone, and the child's are the seed's at
/// prepare again.
#[allow(clippy::too_many_arguments, reason = "the fields of one carried fifo")]
fn fifo(
    child: &Injector<'_>,
    child_pidfd: &OwnedFd,
    o: &CarriedObject,
    path: &str,
    mode: u32,
    unlinked: bool,
    bytes: &FifoBytes<'_>,
    staging: i32,
    what: &str,
) -> Result<Vec<i32>, RestoreError> {
    let FifoBytes { identity, capacity, data } = *bytes;
    let make = |path: &str| -> Result<(), RestoreError> {
        child.put_c_string(path.as_bytes(), what)?;
        child.call(libc::SYS_mknodat, &[AT_CWD, child.slot, u64::from(libc::S_IFIFO | (mode & 0o7777)), 0], what)?;
        // The mode as the seed had it, whatever the child's umask.
        child.call(libc::SYS_fchmodat, &[AT_CWD, child.slot, u64::from(mode & 0o7777)], what).map(|_| ())
    };
    let cannot = |e: RestoreError| RestoreError::Incompatible(format!("the seed's fifo {path} cannot be made on this host: {}", cause(&e)));
    let path = if unlinked {
        // No one can open it by its name: where it is made does not matter,
        // so it is made in /tmp when its own directory will not have it (read-only in a container).
        match make(path) {
            Ok(()) => path.to_string(),
            Err(e) => {
                static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let elsewhere = format!("/tmp/.mitosis-fifo-{}-{n}", std::process::id());
                tracing::debug!(path, error = %cause(&e), elsewhere, "the seed's unlinked fifo is made in /tmp");
                make(&elsewhere).map_err(cannot)?;
                elsewhere
            }
        }
    } else {
        match file_type(child, path.as_bytes(), what)? {
            Some(libc::S_IFIFO) => {}
            None => make(path).map_err(cannot)?,
            Some(_) => return Err(RestoreError::Incompatible(format!("the seed's fifo {path} is not a fifo on this host"))),
        }
        path.to_string()
    };
    let path = path.as_str();
    let keeper = child.open(path, libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC, 0, what)?;
    let keeper = child.stage(keeper, staging, what)?;
    // struct stat of x86-64: st_dev at 0, st_ino at 8.
    child.call(libc::SYS_fstat, &[fd_arg(keeper), child.slot], what)?;
    let mut id = [0u8; 16];
    child.mem.read_exact_at(&mut id, child.slot).map_err(RestoreError::sys(what.to_string()))?;
    // A fifo made just now is new, whatever inode number it was given
    // (the kernel reuses the unlinked one's).
    let same = !unlinked
        && (u64::from_ne_bytes(id[..8].try_into().expect("8 bytes")), u64::from_ne_bytes(id[8..].try_into().expect("8 bytes"))) == identity;
    if !same {
        child.call(libc::SYS_fcntl, &[fd_arg(keeper), libc::F_SETPIPE_SZ as u64, u64::from(capacity)], what)?;
    }
    if !data.is_empty() {
        let copy = pidfd::getfd(child_pidfd, keeper).map_err(RestoreError::sys(what.to_string()))?;
        let waiting = mitosis_sys::fdstate::readable_bytes(&copy).map_err(RestoreError::sys(what.to_string()))?;
        if same && waiting > 0 {
            // Still open on the seed's host (by the seed or its peers): the
            // child shares it with them, as a fork()ed one would.
            tracing::debug!(path, waiting, "the seed's own fifo still holds bytes: the child shares it");
        } else {
            if waiting > 0 {
                tracing::warn!(path, waiting, "the fifo on this host already holds bytes: the seed's are put after them");
            }
            fill(child_pidfd, keeper, data, what)?;
        }
    }
    let mut ends = Vec::with_capacity(o.ends.len());
    for end in &o.ends {
        let fd = child.open(&format!("/proc/self/fd/{keeper}"), end.access | libc::O_NONBLOCK | libc::O_CLOEXEC, 0, what)?;
        ends.push(child.stage(fd, staging, what)?);
    }
    child.call(libc::SYS_close, &[fd_arg(keeper)], what)?;
    if unlinked {
        unlink(child, path.as_bytes(), 0, what)?;
    }
    Ok(ends)
}

/// What a carried fifo holds, and which fifo it was.
struct FifoBytes<'a> {
    identity: (u64, u64),
    capacity: u32,
    data: &'a [u8],
}

/// `IN_DONT_FOLLOW` and `IN_MASK_CREATE` (fail on a file watched already).
const IN_DONT_FOLLOW: u32 = 0x0200_0000;
const IN_MASK_CREATE: u32 = 0x1000_0000;

/// Adds the seed's `watches` to the child's inotify instance `fd`, each
/// under its own watch descriptor: the kernel hands out the next number up
/// on each add, so a watch is added and removed again until its number
/// comes up. A watch whose path cannot be watched on this host (missing,
/// not allowed, the file of an earlier watch) is dropped with a warning.
/// The events the removals queued are read away at the end (the seed's
/// pending events are not carried).
fn inotify_watches(child: &Injector<'_>, child_pidfd: &OwnedFd, fd: i32, watches: &[InotifyWatch], what: &str) -> Result<(), RestoreError> {
    for w in watches {
        let mut path = w.path.as_bytes().to_vec();
        path.push(0);
        child.put(&path, what)?;
        let mask = u64::from(w.mask | IN_DONT_FOLLOW | IN_MASK_CREATE);
        loop {
            let wd = match child.call(libc::SYS_inotify_add_watch, &[fd_arg(fd), child.slot, mask], what) {
                Ok(wd) => wd,
                Err(RestoreError::Sys { source, .. }) => {
                    tracing::warn!(path = w.path, wd = w.wd, error = %source, "an inotify watch of the seed cannot be had on this host: it is dropped");
                    break;
                }
                Err(e) => return Err(e),
            };
            if wd == i64::from(w.wd) {
                break;
            }
            child.call(libc::SYS_inotify_rm_watch, &[fd_arg(fd), wd.unsigned_abs()], what)?;
            if wd > i64::from(w.wd) {
                tracing::warn!(path = w.path, wd = w.wd, "an inotify watch descriptor of the seed cannot be had again: the watch is dropped");
                break;
            }
        }
    }
    let copy = pidfd::getfd(child_pidfd, fd).map_err(RestoreError::sys(what.to_string()))?;
    let waiting = mitosis_sys::fdstate::readable_bytes(&copy).map_err(RestoreError::sys(what.to_string()))?;
    if waiting > 0 {
        let mut discard = vec![0u8; waiting];
        std::io::Read::read(&mut std::fs::File::from(copy), &mut discard)
            .map_err(|e| RestoreError::Sys { step: what.to_string(), source: SysError::new("read", e.raw_os_error().unwrap_or(libc::EIO)) })?;
    }
    Ok(())
}

/// A new memfd of the child named `name` (sealing allowed: the seed's seals
/// are added once it is filled).
fn memfd(child: &Injector<'_>, name: &str, what: &str) -> Result<i64, RestoreError> {
    child.put_c_string(name.as_bytes(), what)?;
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
