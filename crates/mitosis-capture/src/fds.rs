//! Descriptors whose whole state is inside the target, recorded so that
//! children get them recreated (see `mitosis_proto::descriptors`): pipes
//! with both ends in the target and their buffered bytes, eventfds,
//! timerfds, signalfds, epoll instances with their watch sets, fifos
//! (reopened by path in children) with their buffered bytes; Unix sockets
//! ([`crate::unix`]) and inotify instances ([`crate::inotify`]).
//!
//! State comes from `/proc/PID/fdinfo` while the target is stopped; a
//! pipe's bytes are read through a copy of its read end taken with
//! `pidfd_getfd` and duplicated with `tee`, never consumed. Which
//! descriptors are one open file description (`dup`s) is the kernel's
//! answer (`kcmp`). What is not carried here stays in the closed list, and
//! prepare tells the user.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileExt, MetadataExt};

use mitosis_proto::descriptors::{
    CarriedObject, EpollWatch, FdNumber, ObjectEnd, ObjectKind, SocketExtras, MAX_UNLINKED_FILE_BYTES, SOCKET_OPTIONS, SOCKET_PROTOCOLS,
};
use mitosis_sys::{fdstate, inetsock, pidfd, procfs, unixsock};

use crate::CaptureError;

/// Status flags a child's descriptions get back with `F_SETFL` (those it
/// can set; `O_ASYNC` would need its owner too, which is not carried).
const SETTABLE_STATUS_FLAGS: i32 = libc::O_APPEND | libc::O_NONBLOCK | libc::O_DIRECT | libc::O_NOATIME;

/// A descriptor of the target that may be carried, as `/proc` shows it.
struct Candidate {
    fd: i32,
    flags: i32,
    fdinfo: String,
}

/// What a descriptor's `/proc/PID/fd` link says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Sort {
    /// A regular file no directory names (device, inode), or a memfd.
    Unlinked(u64, u64),
    /// A socket (its inode).
    Socket(u64),
    Pipe(u64),
    EventFd,
    TimerFd,
    SignalFd,
    Epoll,
    /// A fifo (device, inode).
    Fifo(u64, u64),
    Inotify,
}

fn sort_of(link: &str) -> Option<Sort> {
    if let Some(ino) = link.strip_prefix("pipe:[").and_then(|r| r.strip_suffix(']')) {
        return ino.parse().ok().map(Sort::Pipe);
    }
    if let Some(ino) = link.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
        return ino.parse().ok().map(Sort::Socket);
    }
    Some(match link {
        "anon_inode:[eventfd]" => Sort::EventFd,
        "anon_inode:[timerfd]" => Sort::TimerFd,
        "anon_inode:[signalfd]" => Sort::SignalFd,
        "anon_inode:[eventpoll]" => Sort::Epoll,
        "anon_inode:inotify" => Sort::Inotify,
        _ => return None,
    })
}

/// Takes from `closed` (descriptor, what it is) the descriptors of the
/// stopped target `pid` that children get recreated, and returns them as
/// objects. Descriptors 0-2 are never carried (a child has the resumer's
/// stdio).
pub(crate) fn carry(pid: i32, closed: &mut Vec<(i32, String)>) -> Result<Vec<CarriedObject>, CaptureError> {
    let mut by_sort: BTreeMap<Sort, Vec<Candidate>> = BTreeMap::new();
    let mut links: BTreeMap<i32, &str> = BTreeMap::new();
    for (fd, link) in closed.iter() {
        let Some(sort) = sort_of(link).or_else(|| unlinked_file(pid, *fd, link)).or_else(|| fifo(pid, *fd, link)) else { continue };
        links.insert(*fd, link);
        let Ok(fdinfo) = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")) else { continue };
        let (flags, _) = procfs::parse_fdinfo(&fdinfo);
        by_sort.entry(sort).or_default().push(Candidate { fd: *fd, flags, fdinfo });
    }
    if by_sort.is_empty() {
        return Ok(Vec::new());
    }
    // Inode of every candidate (decimal in a descriptor's fdinfo), to find watched files by.
    let inodes: BTreeMap<i32, u64> = by_sort.values().flatten().filter_map(|c| Some((c.fd, field(&c.fdinfo, "ino:")?.parse().ok()?))).collect();
    let target = pidfd::open(pid).map_err(CaptureError::sys("opening the process's pidfd"))?;
    let mut objects = Vec::new();
    let mut epolls = Vec::new();
    let mut file_bytes = 0u64;
    let mut unix_sockets = Vec::new();
    for (sort, candidates) in by_sort {
        match sort {
            Sort::Socket(inode) => {
                let copy = take(&target, candidates[0].fd)?;
                let Some(kind) = inet_socket(&copy, inode) else {
                    if fdstate::sockopt_int(&copy, libc::SOL_SOCKET, libc::SO_DOMAIN).ok() == Some(libc::AF_UNIX) {
                        // One socket is one open file description (a socket cannot be opened again).
                        unix_sockets.push(crate::unix::UnixCandidate { inode, end: end(&candidates), copy });
                    }
                    continue;
                };
                let ends = descriptions(pid, candidates)?.iter().map(|g| end(g)).collect();
                objects.push(CarriedObject { kind, ends });
            }
            Sort::Unlinked(..) => {
                let link = links.get(&candidates[0].fd).copied().unwrap_or_default();
                // Opened anew for reading (the seed's may be write-only): positioned reads only.
                let path = format!("/proc/{pid}/fd/{}", candidates[0].fd);
                let file = std::fs::File::open(&path).map_err(|e| CaptureError::Sys {
                    step: "opening an unlinked file of the process",
                    source: mitosis_sys::SysError::new("open", e.raw_os_error().unwrap_or(libc::EIO)),
                })?;
                let Some(kind) = unlinked_contents(&file, link, &mut file_bytes)? else { continue };
                let ends = descriptions(pid, candidates)?.iter().map(|g| end(g)).collect();
                objects.push(CarriedObject { kind, ends });
            }
            Sort::Pipe(_) => {
                let mut groups = descriptions(pid, candidates)?;
                let access = |g: &Vec<Candidate>| g[0].flags & libc::O_ACCMODE;
                // A reader and a writer, or the pipe stays behind (its other end is another process's).
                let (Some(r), Some(w)) =
                    (groups.iter().position(|g| access(g) == libc::O_RDONLY), groups.iter().position(|g| access(g) == libc::O_WRONLY))
                else {
                    continue;
                };
                let copy = take(&target, groups[r][0].fd)?;
                let (capacity, data) = fdstate::pipe_contents(&copy).map_err(CaptureError::sys("reading a pipe's buffered bytes"))?;
                let reader = groups.remove(r);
                let writer = groups.remove(if w > r { w - 1 } else { w });
                let ends = [reader, writer].iter().chain(groups.iter()).map(|g| end(g)).collect();
                objects.push(CarriedObject { kind: ObjectKind::Pipe { capacity, data }, ends });
            }
            Sort::Fifo(..) => {
                let link = links.get(&candidates[0].fd).copied().unwrap_or_default();
                let groups = descriptions(pid, candidates)?;
                let kind = fifo_contents(pid, groups[0][0].fd, link)?;
                objects.push(CarriedObject { kind, ends: groups.iter().map(|g| end(g)).collect() });
            }
            Sort::Inotify => {
                for group in descriptions(pid, candidates)? {
                    let watches = crate::inotify::watches(pid, group[0].fd, &group[0].fdinfo);
                    objects.push(CarriedObject { kind: ObjectKind::Inotify { watches }, ends: vec![end(&group)] });
                }
            }
            Sort::Epoll => epolls.extend(descriptions(pid, candidates)?),
            sort => {
                for group in descriptions(pid, candidates)? {
                    let kind = match sort {
                        Sort::EventFd => eventfd_of(&group[0].fdinfo),
                        Sort::TimerFd => timerfd_of(&group[0].fdinfo),
                        _ => signalfd_of(&group[0].fdinfo),
                    };
                    let kind = kind.ok_or_else(|| CaptureError::Unsupported {
                        pid,
                        what: format!("the state of its descriptor {} cannot be read from /proc/{pid}/fdinfo", group[0].fd),
                    })?;
                    objects.push(CarriedObject { kind, ends: vec![end(&group)] });
                }
            }
        }
    }
    objects.extend(crate::unix::carry(pid, unix_sockets)?);
    // Watches are kept of the files a child has: carried ones.
    let carried: Vec<i32> = objects.iter().flat_map(CarriedObject::numbers).chain(epolls.iter().flatten().map(|c| c.fd)).collect();
    for group in epolls {
        let watches = resolve_watches(pid, group[0].fd, &group[0].fdinfo, &carried, &inodes);
        objects.push(CarriedObject { kind: ObjectKind::Epoll { watches }, ends: vec![end(&group)] });
    }
    let numbers: Vec<i32> = objects.iter().flat_map(CarriedObject::numbers).collect();
    closed.retain(|(fd, _)| !numbers.contains(fd));
    Ok(objects)
}

/// A copy of the target's descriptor `fd` in this process.
fn take(target: &OwnedFd, fd: i32) -> Result<OwnedFd, CaptureError> {
    pidfd::getfd(target, fd).map_err(CaptureError::sys("taking a copy of one of the process's descriptors"))
}

/// One end from descriptors of one description (the first one's flags).
fn end(group: &[Candidate]) -> ObjectEnd {
    ObjectEnd {
        fds: group.iter().map(|c| FdNumber { fd: c.fd, cloexec: c.flags & libc::O_CLOEXEC != 0 }).collect(),
        status_flags: group[0].flags & SETTABLE_STATUS_FLAGS,
        access: group[0].flags & libc::O_ACCMODE,
        pos: procfs::parse_fdinfo(&group[0].fdinfo).1,
    }
}

/// A TCP or UDP socket over IPv4 or IPv6 without a connection (through a
/// copy of it), or `None` for any other socket: those stay closed in
/// children (a connection's peer stays on the seed's host).
fn inet_socket(socket: &OwnedFd, inode: u64) -> Option<ObjectKind> {
    let int = |level, name| fdstate::sockopt_int(socket, level, name).ok();
    let domain = int(libc::SOL_SOCKET, libc::SO_DOMAIN)?;
    let kind = int(libc::SOL_SOCKET, libc::SO_TYPE)?;
    let protocol = int(libc::SOL_SOCKET, libc::SO_PROTOCOL)?;
    let carried = [libc::AF_INET, libc::AF_INET6].contains(&domain)
        && [libc::SOCK_STREAM, libc::SOCK_DGRAM].contains(&kind)
        && SOCKET_PROTOCOLS.contains(&protocol);
    if !carried {
        return None;
    }
    // A UDP socket's peer is only a default destination; a TCP one is a connection.
    let peer = fdstate::socket_address(socket, true).ok();
    if peer.is_some() && kind == libc::SOCK_STREAM {
        return None;
    }
    let listening = int(libc::SOL_SOCKET, libc::SO_ACCEPTCONN)? != 0;
    let address = fdstate::socket_address(socket, false).ok()?;
    // Port 0: not bound (binding to port 0 gets a port of the kernel's choosing).
    let bound = (address.len() >= 4 && address[2..4] != [0, 0]).then_some(address);
    // Those the socket has (IP options on an IPv6 socket, TCP options on a TCP one).
    let options = SOCKET_OPTIONS.iter().filter_map(|&(level, name)| Some((level, name, int(level, name)?))).collect();
    // Not told by getsockopt: the kernel's socket diagnostics (none known: none).
    let shutdown = unixsock::netns_of(socket)
        .and_then(|netns| {
            let (family, protocol) = (u8::try_from(domain).unwrap_or(0), u8::try_from(protocol).unwrap_or(0));
            inetsock::shutdown_bits(&netns, family, protocol, u32::try_from(inode).unwrap_or(0))
        })
        .map_or(0, |bits| bits.unwrap_or(0));
    Some(ObjectKind::InetSocket { domain, kind, protocol, options, bound, listening, peer, extras: socket_extras(socket), shutdown })
}

/// The options of a socket (through a copy of it) that are not integers:
/// linger, bound device, timeouts and filter. One the kernel will not tell
/// (not this kind of socket) is left as a new socket has it.
pub(crate) fn socket_extras(socket: &OwnedFd) -> SocketExtras {
    let bytes = |name, max| fdstate::sockopt_bytes(socket, libc::SOL_SOCKET, name, max).ok();
    let int_at = |b: &[u8], at: usize| b.get(at..at + 4).map_or(0, |v| i32::from_ne_bytes(v.try_into().expect("4 bytes")));
    let long_at = |b: &[u8], at: usize| b.get(at..at + 8).map_or(0, |v| i64::from_ne_bytes(v.try_into().expect("8 bytes")));
    // struct timeval: seconds, then microseconds, 8 bytes each on x86-64.
    let timeout_us = |name| bytes(name, 16).map_or(0, |t| u64::try_from(long_at(&t, 0) * 1_000_000 + long_at(&t, 8)).unwrap_or(0));
    let linger = bytes(libc::SO_LINGER, 8).map(|l| (int_at(&l, 0), int_at(&l, 4))).filter(|l| l.0 != 0);
    let device = bytes(libc::SO_BINDTODEVICE, 16)
        .map(|d| String::from_utf8_lossy(d.split(|&b| b == 0).next().unwrap_or_default()).into_owned())
        .filter(|d| !d.is_empty());
    SocketExtras {
        linger,
        device,
        receive_timeout_us: timeout_us(libc::SO_RCVTIMEO),
        send_timeout_us: timeout_us(libc::SO_SNDTIMEO),
        filter: fdstate::socket_filter(socket).unwrap_or_default(),
    }
}

/// `Some` for descriptor `fd` of `pid` (link `link`) when it is a regular
/// file that no directory names (unlinked, or made with `O_TMPFILE`), or a
/// memfd: the whole file is the seed's.
fn unlinked_file(pid: i32, fd: i32, link: &str) -> Option<Sort> {
    let path = link.strip_suffix(" (deleted)")?;
    let meta = std::fs::metadata(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let memfd = path.starts_with("/memfd:");
    (meta.is_file() && (meta.nlink() == 0 || memfd) && path.starts_with('/')).then_some(Sort::Unlinked(meta.dev(), meta.ino()))
}

/// `Some` for descriptor `fd` of `pid` (link `link`) when it is a fifo
/// (a named pipe; an unnamed pipe's link is `pipe:[N]`).
fn fifo(pid: i32, fd: i32, link: &str) -> Option<Sort> {
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::metadata(format!("/proc/{pid}/fd/{fd}")).ok()?;
    (meta.file_type().is_fifo() && link.starts_with('/')).then_some(Sort::Fifo(meta.dev(), meta.ino()))
}

/// A fifo's kind with its buffered bytes, read through a reader of our own
/// (opened through descriptor `fd`'s /proc link: the seed may hold only a
/// writer) without consuming them.
fn fifo_contents(pid: i32, fd: i32, link: &str) -> Result<ObjectKind, CaptureError> {
    let step = "reading a fifo's buffered bytes";
    let io = |e: std::io::Error| CaptureError::Sys { step, source: mitosis_sys::SysError::new("open", e.raw_os_error().unwrap_or(libc::EIO)) };
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking: a reader's open of a fifo waits for no writer.
    let reader = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(format!("/proc/{pid}/fd/{fd}")).map_err(io)?;
    let meta = reader.metadata().map_err(io)?;
    let (capacity, data) = fdstate::pipe_contents(&reader).map_err(CaptureError::sys(step))?;
    let (path, unlinked) = match link.strip_suffix(" (deleted)") {
        Some(path) => (path, true),
        None => (link, false),
    };
    Ok(ObjectKind::Fifo { path: path.to_string(), mode: meta.mode() & 0o7777, unlinked, identity: (meta.dev(), meta.ino()), capacity, data })
}

/// An unlinked file's kind with its content, read through `file` (opened
/// through the seed's descriptor's /proc link), or `None` when the
/// seed's budget `used` for such contents would be exceeded (the file is
/// then closed in children, and prepare says so).
fn unlinked_contents(file: &std::fs::File, link: &str, used: &mut u64) -> Result<Option<ObjectKind>, CaptureError> {
    let step = "reading an unlinked file of the process";
    let io = |e: std::io::Error| CaptureError::Sys { step, source: mitosis_sys::SysError::new("read", e.raw_os_error().unwrap_or(libc::EIO)) };
    let meta = file.metadata().map_err(io)?;
    let runs = mitosis_sys::mem::data_runs(file, 0, meta.len()).map_err(CaptureError::sys(step))?;
    let bytes: u64 = runs.iter().map(|r| r.1 - r.0).sum();
    if *used + bytes > MAX_UNLINKED_FILE_BYTES {
        return Ok(None);
    }
    *used += bytes;
    let mut data = Vec::with_capacity(runs.len());
    for (start, end) in runs {
        let mut chunk = vec![0u8; mitosis_sys::usize_of(end - start)];
        file.read_exact_at(&mut chunk, start).map_err(io)?;
        data.push((start, chunk));
    }
    let path = link.strip_suffix(" (deleted)").unwrap_or(link);
    let (dir, memfd_name) = match path.strip_prefix("/memfd:") {
        Some(name) => (None, Some(name.to_string())),
        None => (Some(std::path::Path::new(path).parent().map_or("/".into(), |d| d.to_string_lossy().into_owned())), None),
    };
    let seals = if memfd_name.is_some() { fdstate::seals(file).map_err(CaptureError::sys(step))? } else { 0 };
    Ok(Some(ObjectKind::UnlinkedFile {
        dir,
        memfd_name,
        size: meta.len(),
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        seals,
        atime: (meta.atime(), meta.atime_nsec()),
        mtime: (meta.mtime(), meta.mtime_nsec()),
        data,
    }))
}

/// The watches of epoll instance `efd` (its fdinfo text) whose files are
/// among `carried`, each with a descriptor of its file (the kernel's
/// answer, `kcmp`: the number a watch was added under may have been closed
/// or reused since). A watch of a file children do not get is left out, as
/// the kernel drops the watch of a file that is closed.
fn resolve_watches(pid: i32, efd: i32, fdinfo: &str, carried: &[i32], inodes: &BTreeMap<i32, u64>) -> Vec<EpollWatch> {
    let mut out = Vec::new();
    let mut seen: BTreeMap<i32, u32> = BTreeMap::new();
    for (w, ino) in epoll_watches(fdinfo) {
        // The kernel counts watches under one number in the order fdinfo lists them.
        let toff = *seen.entry(w.fd).and_modify(|n| *n += 1).or_insert(0);
        let is = |fd: i32| fdstate::epoll_watches_file(pid, fd, efd, w.fd, toff).unwrap_or(false);
        // The number itself first, then the carried descriptors of the same inode.
        let same_inode = |fd: &&i32| inodes.get(*fd).is_none_or(|&i| i == ino);
        let file_fd = if carried.contains(&w.fd) && is(w.fd) { Some(w.fd) } else { carried.iter().filter(same_inode).copied().find(|&fd| is(fd)) };
        if let Some(file_fd) = file_fd {
            out.push(EpollWatch { file_fd, ..w });
        }
    }
    out
}

/// Splits `candidates` into groups of descriptors of one open file description.
fn descriptions(pid: i32, candidates: Vec<Candidate>) -> Result<Vec<Vec<Candidate>>, CaptureError> {
    let mut groups: Vec<Vec<Candidate>> = Vec::new();
    for c in candidates {
        let mut home = None;
        for (i, g) in groups.iter().enumerate() {
            if fdstate::same_file(pid, g[0].fd, pid, c.fd).map_err(CaptureError::sys("comparing two of the process's descriptors"))? {
                home = Some(i);
                break;
            }
        }
        match home {
            Some(i) => groups[i].push(c),
            None => groups.push(vec![c]),
        }
    }
    Ok(groups)
}

/// The value after `key` on its line of an fdinfo text.
fn field<'a>(fdinfo: &'a str, key: &str) -> Option<&'a str> {
    fdinfo.lines().find_map(|l| l.strip_prefix(key)).map(str::trim)
}

fn eventfd_of(fdinfo: &str) -> Option<ObjectKind> {
    let count = u64::from_str_radix(field(fdinfo, "eventfd-count:")?, 16).ok()?;
    // Older kernels do not say; `EFD_SEMAPHORE` is in the flags there.
    let semaphore = match field(fdinfo, "eventfd-semaphore:") {
        Some(v) => v == "1",
        None => procfs::parse_fdinfo(fdinfo).0 & libc::EFD_SEMAPHORE != 0,
    };
    Some(ObjectKind::EventFd { count, semaphore })
}

/// `(sec, nsec)` as the timerfd fdinfo prints it, in nanoseconds.
fn timespec_ns(v: &str) -> Option<u64> {
    let (s, ns) = v.strip_prefix('(')?.strip_suffix(')')?.split_once(',')?;
    s.trim().parse::<u64>().ok()?.checked_mul(1_000_000_000)?.checked_add(ns.trim().parse().ok()?)
}

fn timerfd_of(fdinfo: &str) -> Option<ObjectKind> {
    Some(ObjectKind::TimerFd {
        clock: field(fdinfo, "clockid:")?.parse().ok()?,
        ticks: field(fdinfo, "ticks:")?.parse().ok()?,
        value_ns: timespec_ns(field(fdinfo, "it_value:")?)?,
        interval_ns: timespec_ns(field(fdinfo, "it_interval:")?)?,
    })
}

fn signalfd_of(fdinfo: &str) -> Option<ObjectKind> {
    Some(ObjectKind::SignalFd { mask: u64::from_str_radix(field(fdinfo, "sigmask:")?, 16).ok()? })
}

/// The watches of an epoll instance's fdinfo, with the inode of each
/// watched file (`tfd: N events: HEX data: HEX pos:P ino:HEX sdev:HEX`);
/// `file_fd` is `tfd` here.
fn epoll_watches(fdinfo: &str) -> Vec<(EpollWatch, u64)> {
    fdinfo
        .lines()
        .filter_map(|l| {
            let mut it = l.split_ascii_whitespace();
            if it.next()? != "tfd:" {
                return None;
            }
            let fd = it.next()?.parse().ok()?;
            (it.next()? == "events:").then_some(())?;
            let events = u32::from_str_radix(it.next()?, 16).ok()?;
            (it.next()? == "data:").then_some(())?;
            let data = u64::from_str_radix(it.next()?, 16).ok()?;
            let ino = it.find_map(|f| f.strip_prefix("ino:")).and_then(|i| u64::from_str_radix(i, 16).ok())?;
            Some((EpollWatch { fd, file_fd: fd, events, data }, ino))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_name_the_kinds_carried() {
        assert_eq!(sort_of("pipe:[1234]"), Some(Sort::Pipe(1234)));
        assert_eq!(sort_of("anon_inode:[eventfd]"), Some(Sort::EventFd));
        assert_eq!(sort_of("anon_inode:[eventpoll]"), Some(Sort::Epoll));
        assert_eq!(sort_of("socket:[99]"), Some(Sort::Socket(99)));
        assert_eq!(sort_of("/tmp/file (deleted)"), None, "unlinked files are told by their metadata");
        assert_eq!(sort_of("anon_inode:inotify"), Some(Sort::Inotify));
        assert_eq!(sort_of("anon_inode:[fanotify]"), None);
        assert_eq!(sort_of("/tmp/fifo"), None, "fifos are told by their metadata");
    }

    #[test]
    fn fdinfo_texts_of_each_kind_parse() {
        let ev = "pos:\t0\nflags:\t02004002\nmnt_id:\t15\nino:\t1057\neventfd-count:                5\neventfd-id: 3\neventfd-semaphore: 1\n";
        assert_eq!(eventfd_of(ev), Some(ObjectKind::EventFd { count: 5, semaphore: true }));
        let timer = "pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t1057\nclockid: 1\nticks: 2\nsettime flags: 00\nit_value: (1, 500)\nit_interval: (0, 250000000)\n";
        assert_eq!(timerfd_of(timer), Some(ObjectKind::TimerFd { clock: 1, ticks: 2, value_ns: 1_000_000_500, interval_ns: 250_000_000 }));
        let sig = "pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t1057\nsigmask:\t0000000000000202\n";
        assert_eq!(signalfd_of(sig), Some(ObjectKind::SignalFd { mask: 0x202 }));
        let ep = "pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t1057\ntfd:        5 events:       19 data:         deadbeef  pos:0 ino:2a1 sdev:d\ntfd:        7 events: 80000001 data:                7  pos:0 ino:2a2 sdev:d\n";
        assert_eq!(
            epoll_watches(ep),
            [
                (EpollWatch { fd: 5, file_fd: 5, events: 0x19, data: 0xdead_beef }, 0x2a1),
                (EpollWatch { fd: 7, file_fd: 7, events: 0x8000_0001, data: 7 }, 0x2a2)
            ]
        );
        assert_eq!(eventfd_of("flags: 02\n"), None);
    }
}
