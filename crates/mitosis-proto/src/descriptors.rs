//! Descriptors a child gets recreated from its seed: kernel objects whose
//! whole state is inside the seed (a pipe with both ends in it and the
//! bytes in its buffer, an eventfd's counter, a timerfd's clock and
//! remaining time, a signalfd's mask, an epoll instance's watch set).
//! Capture records them; the restore recreates each in the child at the
//! same descriptor numbers, with the same flags; also Unix socket pairs
//! with both ends in the seed (with the messages queued each way), Unix
//! sockets that are not connected (unbound, bound, listening), fifos open
//! in the seed (reopened by path, with their buffered bytes), and inotify
//! instances with their watches. Anything else that is not
//! a file to reopen is closed in children and listed in
//! [`crate::image::SeedImage::closed_fds`].

use serde::{Deserialize, Serialize};

/// Largest pipe buffer a seed may carry (the kernel's own ceiling for
/// `F_SETPIPE_SZ` is `fs.pipe-max-size`, 1 MiB by default; root may go
/// beyond it, but not past this).
pub const MAX_PIPE_CAPACITY: u32 = 1 << 28;

/// Most bytes of unlinked files' contents one seed carries (beyond it, such
/// files are closed in children, with a note at prepare).
pub const MAX_UNLINKED_FILE_BYTES: u64 = 64 << 20;

/// Most bytes queued in one carried Unix socket pair (both ways).
pub const MAX_SOCKET_QUEUE_BYTES: usize = 1 << 28;

/// Highest watch descriptor of a carried inotify watch (a child gets its
/// watch descriptors by adding and removing watches until the number
/// comes up: one step per number below it).
pub const MAX_INOTIFY_WD: i32 = 1 << 16;

/// Socket types of carried Unix sockets: `SOCK_STREAM`, `SOCK_DGRAM`, `SOCK_SEQPACKET`.
pub const UNIX_SOCKET_TYPES: [i32; 3] = [1, 2, 5];

/// One socket of a carried Unix socket pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnixSide {
    /// Integer options of [`SOCKET_OPTIONS`] of level `SOL_SOCKET`, as the seed had them.
    pub options: Vec<(i32, i32, i32)>,
    /// What waits to be read on this socket (sent by the other), oldest
    /// first: one entry per message of a `SOCK_DGRAM` or `SOCK_SEQPACKET`
    /// pair (boundaries kept), chunks of the byte stream of a `SOCK_STREAM` one.
    pub queue: Vec<Vec<u8>>,
    /// `RCV_SHUTDOWN` (1) and `SEND_SHUTDOWN` (2) bits (from `shutdown`).
    pub shutdown: u8,
    pub extras: SocketExtras,
}

/// Longest classic BPF program a socket filter has (`BPF_MAXINSNS`).
pub const MAX_SOCKET_FILTER_ENTRIES: usize = 4096;

/// The socket options that are not integers, as the seed's socket had them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketExtras {
    /// `SO_LINGER` (`l_onoff`, `l_linger` in seconds) when it is on.
    pub linger: Option<(i32, i32)>,
    /// `SO_BINDTODEVICE`: the network interface it is bound to.
    pub device: Option<String>,
    /// `SO_RCVTIMEO` and `SO_SNDTIMEO` in microseconds (0: none).
    pub receive_timeout_us: u64,
    pub send_timeout_us: u64,
    /// The classic BPF program attached (`SO_ATTACH_FILTER`), as raw
    /// `struct sock_filter` entries of 8 bytes; empty when none.
    pub filter: Vec<u8>,
}

impl SocketExtras {
    /// Checks what a child would give the kernel: a device name that fits
    /// `IFNAMSIZ`, a filter of whole entries within `BPF_MAXINSNS`.
    pub fn validate(&self) -> Result<(), String> {
        if self.device.as_ref().is_some_and(|d| d.is_empty() || d.len() > 15 || d.contains('\0')) {
            return Err("a carried socket's device is not an interface name".into());
        }
        if !self.filter.len().is_multiple_of(8) || self.filter.len() > MAX_SOCKET_FILTER_ENTRIES * 8 {
            return Err(format!("a carried socket's filter has {} bytes: not whole entries within {MAX_SOCKET_FILTER_ENTRIES}", self.filter.len()));
        }
        Ok(())
    }
}

/// A watch of an inotify instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InotifyWatch {
    /// Its watch descriptor (what events name it by): a child's is the same.
    pub wd: i32,
    /// The watched file's path on the seed's host, as the seed sees it.
    pub path: String,
    /// `IN_*` event and flag bits, as `inotify_add_watch` takes them.
    pub mask: u32,
}

/// One descriptor number of a carried object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdNumber {
    pub fd: i32,
    /// `FD_CLOEXEC`: the only per-descriptor flag.
    pub cloexec: bool,
}

/// One open file description of a carried object, and the descriptor
/// numbers that refer to it (duplicates share it, as after `dup`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectEnd {
    pub fds: Vec<FdNumber>,
    /// File status flags that `fcntl(F_SETFL)` sets (`O_NONBLOCK`,
    /// `O_APPEND`, `O_DIRECT`, `O_NOATIME`).
    pub status_flags: i32,
    /// Access mode: `O_RDONLY`, `O_WRONLY` or `O_RDWR`.
    pub access: i32,
    /// File position (of an unlinked file; 0 for the others).
    pub pos: u64,
}

/// A watch of an epoll instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpollWatch {
    /// The descriptor number the watch was added under (the kernel keys a
    /// watch by it: `EPOLL_CTL_MOD` and `DEL` name it).
    pub fd: i32,
    /// A descriptor of the seed (and of the child) whose file the watch
    /// watches: `fd` itself, unless the seed closed `fd` or gave its number
    /// to another file after adding the watch (the watch lives as long as
    /// its file is open).
    pub file_fd: i32,
    /// `EPOLLIN`, `EPOLLET`, ... as registered.
    pub events: u32,
    /// The user data the seed registered (`epoll_event.data`).
    pub data: u64,
}

/// What kind of object, with its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectKind {
    /// A pipe whose two ends are both the seed's: `ends[0]` reads (from
    /// `pipe`), `ends[1]` writes (from `pipe`), further ends are more open
    /// file descriptions of either (opened through `/proc/PID/fd`).
    Pipe {
        /// Buffer size (`F_GETPIPE_SZ`).
        capacity: u32,
        /// Bytes in the buffer at prepare, oldest first.
        data: Vec<u8>,
    },
    /// An eventfd: its counter and whether it counts as a semaphore.
    EventFd { count: u64, semaphore: bool },
    /// A timerfd: its clock, time left to the next expiry (0: disarmed),
    /// interval, and expirations not read yet.
    TimerFd { clock: i32, value_ns: u64, interval_ns: u64, ticks: u64 },
    /// A signalfd and the signals it reads (bit n-1 for signal n).
    SignalFd { mask: u64 },
    /// An epoll instance and its watches (of the seed's descriptors that
    /// children get; a watch of one that is closed in children is dropped
    /// with it, as the kernel drops the watch of a closed file).
    Epoll { watches: Vec<EpollWatch> },
    /// A regular file no directory names any more (unlinked, or made with
    /// `O_TMPFILE`), or a memfd, with its content: a child gets its own.
    UnlinkedFile {
        /// The directory a child makes it in (`O_TMPFILE`): the one the
        /// seed's file was in. `None` for a memfd.
        dir: Option<String>,
        /// The memfd's name (what follows `memfd:`), for a memfd.
        memfd_name: Option<String>,
        size: u64,
        /// Permission bits (`st_mode & 0o7777`), owner and group.
        mode: u32,
        uid: u32,
        gid: u32,
        /// A memfd's seals (`F_GET_SEALS`).
        seals: u32,
        /// Access and modification times (seconds, nanoseconds).
        atime: (i64, i64),
        mtime: (i64, i64),
        /// Runs `(offset, bytes)` that hold data, in order; the rest reads as zero.
        data: Vec<(u64, Vec<u8>)>,
    },
    /// A TCP or UDP socket (IPv4 or IPv6) without a connection: made anew
    /// on the child's host, bound to the same address if it was (in the
    /// child's network namespace), listening if it was, a UDP socket
    /// connected to the same address if it was (a default destination, no
    /// connection).
    InetSocket {
        /// `AF_INET` or `AF_INET6`.
        domain: i32,
        /// `SOCK_STREAM` or `SOCK_DGRAM`.
        kind: i32,
        protocol: i32,
        /// Integer options `(level, name, value)` of [`SOCKET_OPTIONS`] as the seed had them.
        options: Vec<(i32, i32, i32)>,
        /// The bound address (a raw `sockaddr_in` or `sockaddr_in6`), if bound.
        bound: Option<Vec<u8>>,
        listening: bool,
        /// A UDP socket's peer (`connect`), if it has one.
        peer: Option<Vec<u8>>,
        extras: SocketExtras,
        /// `RCV_SHUTDOWN` (1) and `SEND_SHUTDOWN` (2) bits (from `shutdown`).
        shutdown: u8,
    },
    /// Both sockets of a Unix socket pair (`socketpair`, or a connection
    /// whose two ends are both the seed's and have no names): `ends[i]`
    /// is `sides[i]`. A child gets a pair again, each side with what was
    /// queued on it and its shutdown bits.
    UnixPair { kind: i32, sides: Vec<UnixSide> },
    /// A connection between Unix sockets of the seed made through one of the
    /// seed's listening sockets (bound to `listener`; a child recreates it
    /// first, as a [`ObjectKind::UnixSocket`]): `ends[0]` and `sides[0]` are
    /// the client (unnamed); `ends[1]` and `sides[1]` the server side when
    /// `accepted` (it shows the listener's name), absent when the
    /// connection still waits in the listener's queue (the child's waits
    /// there too, in the same order).
    UnixConnection { kind: i32, listener: Vec<u8>, accepted: bool, sides: Vec<UnixSide> },
    /// A Unix socket whose peer was closed, with what is still queued on it
    /// (read before the end of file): a child gets one end of a new pair,
    /// filled from the other end, which is then closed.
    UnixOrphan { kind: i32, side: UnixSide },
    /// A Unix socket that is not connected: unbound, bound to a path or an
    /// abstract name (bound again on the child's host, an abstract name in
    /// the child's network namespace), perhaps listening (with no pending
    /// connections: those are the other ends of connections, not carried).
    UnixSocket {
        kind: i32,
        /// Integer options of [`SOCKET_OPTIONS`] of level `SOL_SOCKET`.
        options: Vec<(i32, i32, i32)>,
        /// The `sun_path` bytes it is bound to (an abstract name starts
        /// with 0), if bound.
        name: Option<Vec<u8>>,
        /// The bound path no longer names the socket on the seed's host
        /// (unlinked): a child's is unlinked again once bound.
        name_unlinked: bool,
        /// Permission bits of the bound socket file (a path name not unlinked).
        file_mode: Option<u32>,
        /// Its owner and group (given to a child's when it runs as root).
        file_owner: Option<(u32, u32)>,
        /// A listening socket's backlog.
        backlog: Option<u32>,
        /// The name of the seed's socket a datagram socket sends to by
        /// default (`connect`; perhaps its own): connected again once every
        /// socket is bound.
        peer_name: Option<Vec<u8>>,
        /// `RCV_SHUTDOWN` (1) and `SEND_SHUTDOWN` (2) bits.
        shutdown: u8,
        extras: SocketExtras,
        /// Messages waiting on a datagram socket bound to a name that still
        /// leads to it, oldest first: a child's is sent them again by name
        /// (from an unnamed socket) once bound.
        queue: Vec<Vec<u8>>,
    },
    /// A fifo (named pipe) the seed has open, with what is buffered in it:
    /// a child opens the same path on its host (made with `mkfifo` and the
    /// seed's mode when missing) with each end's access mode.
    Fifo {
        path: String,
        /// Permission bits of the seed's fifo.
        mode: u32,
        /// The path no longer names the fifo on the seed's host (unlinked):
        /// a child's is made there, opened and unlinked again.
        unlinked: bool,
        /// The fifo's device and inode on the seed's host: a child that
        /// opens the very same fifo (on the seed's host) while it still
        /// holds bytes shares them with whoever keeps it open.
        identity: (u64, u64),
        /// Buffer size (`F_GETPIPE_SZ`) and the bytes in it, oldest first.
        capacity: u32,
        data: Vec<u8>,
    },
    /// An inotify instance and its watches, in the order of their watch
    /// descriptors (pending events are not carried).
    Inotify { watches: Vec<InotifyWatch> },
}

/// The integer socket options a carried socket keeps, `(level, name)`:
/// `SO_REUSEADDR`, `SO_REUSEPORT`, `SO_KEEPALIVE`, `SO_BROADCAST`,
/// `SO_OOBINLINE`, `SO_DONTROUTE`, `SO_PRIORITY`, `SO_RCVLOWAT`,
/// `SO_RCVBUF`, `SO_SNDBUF`, `SO_MARK`, `SO_NO_CHECK`, `SO_PASSCRED`;
/// `IP_TOS`, `IP_TTL`, `IP_FREEBIND`, `IP_TRANSPARENT`, `IP_PKTINFO`;
/// `IPV6_V6ONLY`, `IPV6_FREEBIND`, `IPV6_RECVPKTINFO`; `TCP_NODELAY`,
/// `TCP_CORK`, `TCP_KEEPIDLE`, `TCP_KEEPINTVL`, `TCP_KEEPCNT`;
/// `SO_PASSSEC`, and last `SO_BUF_LOCK` (setting a buffer size locks it:
/// the seed's lock bits are set after its sizes). Numbers of Linux on every
/// architecture mitosis runs on.
pub const SOCKET_OPTIONS: [(i32, i32); 28] = [
    (1, 2), (1, 15), (1, 9), (1, 6), (1, 10), (1, 5), (1, 12), (1, 18), (1, 8), (1, 7), (1, 36), (1, 11), (1, 16),
    (0, 1), (0, 2), (0, 15), (0, 19), (0, 8),
    (41, 26), (41, 78), (41, 49),
    (6, 1), (6, 3), (6, 4), (6, 5), (6, 6),
    (1, 34), (1, 72),
];

/// Protocols of carried sockets: the type's default, TCP, UDP, UDP-Lite.
pub const SOCKET_PROTOCOLS: [i32; 4] = [0, 6, 17, 136];

/// A kernel object a child gets recreated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarriedObject {
    pub kind: ObjectKind,
    /// Its open file descriptions: two or more for a pipe, one or more for
    /// an unlinked file, one otherwise.
    pub ends: Vec<ObjectEnd>,
}

impl CarriedObject {
    /// Every descriptor number of the object.
    pub fn numbers(&self) -> impl Iterator<Item = i32> + '_ {
        self.ends.iter().flat_map(|e| e.fds.iter().map(|n| n.fd))
    }

    /// Checks the object on its own: the number of ends its kind has, each
    /// with at least one descriptor and an access mode; a pipe's first two
    /// ends read and write, and its data fits its capacity; a timer's clock
    /// is one timerfd takes.
    pub fn validate(&self) -> Result<(), String> {
        let ends_ok = match &self.kind {
            ObjectKind::Pipe { .. } => {
                self.ends.len() >= 2 && self.ends[0].access == libc_o::RDONLY && self.ends[1].access == libc_o::WRONLY
            }
            ObjectKind::UnlinkedFile { .. } | ObjectKind::Fifo { .. } => !self.ends.is_empty(),
            ObjectKind::UnixPair { sides, .. } => self.ends.len() == 2 && sides.len() == 2,
            ObjectKind::UnixConnection { accepted, sides, .. } => {
                let n = if *accepted { 2 } else { 1 };
                self.ends.len() == n && sides.len() == n
            }
            _ => self.ends.len() == 1,
        };
        let bad_end = self.ends.iter().any(|e| e.fds.is_empty() || ![libc_o::RDONLY, libc_o::WRONLY, libc_o::RDWR].contains(&e.access));
        if !ends_ok || bad_end {
            return Err(format!("a carried {} has {} ends, not the ones its kind has (each with a descriptor and an access mode)", self.kind_name(), self.ends.len()));
        }
        match &self.kind {
            ObjectKind::Pipe { capacity, data } if *capacity == 0 || *capacity > MAX_PIPE_CAPACITY || data.len() > *capacity as usize => {
                return Err(format!("a carried pipe holds {} bytes in a buffer of {capacity}", data.len()));
            }
            // CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_BOOTTIME, and their _ALARM forms.
            ObjectKind::TimerFd { clock, .. } if ![0, 1, 7, 8, 9].contains(clock) => {
                return Err(format!("a carried timerfd has clock {clock}, which timerfd does not take"));
            }
            ObjectKind::EventFd { count, .. } if *count == u64::MAX => {
                return Err("a carried eventfd's counter is 2^64-1, above its maximum".into());
            }
            ObjectKind::InetSocket { domain, kind, protocol, options, bound, peer, extras, .. } => {
                extras.validate()?;
                if ![2, 10].contains(domain) || ![1, 2].contains(kind) || !SOCKET_PROTOCOLS.contains(protocol) {
                    return Err(format!(
                        "a carried socket has domain {domain}, type {kind} and protocol {protocol}: only TCP and UDP over IPv4 and IPv6 are carried"
                    ));
                }
                if peer.is_some() && *kind != 2 {
                    return Err("a carried stream socket has a peer: connections are not carried".into());
                }
                if let Some((level, name, _)) = options.iter().find(|(l, n, _)| !SOCKET_OPTIONS.contains(&(*l, *n))) {
                    return Err(format!("a carried socket has option {name} of level {level}, which is not one that is carried"));
                }
                if bound.iter().chain(peer.iter()).any(|b| b.len() < 2 || b.len() > 128) {
                    return Err("a carried socket's address is not a socket address".into());
                }
            }
            ObjectKind::UnixPair { kind, sides } => {
                if !UNIX_SOCKET_TYPES.contains(kind) {
                    return Err(format!("a carried Unix socket pair has type {kind}"));
                }
                let bytes: usize = sides.iter().flat_map(|s| s.queue.iter().map(Vec::len)).sum();
                if bytes > MAX_SOCKET_QUEUE_BYTES {
                    return Err(format!("a carried Unix socket pair holds {bytes} queued bytes, more than {MAX_SOCKET_QUEUE_BYTES}"));
                }
                for side in sides {
                    side.extras.validate()?;
                    unix_options_ok(&side.options)?;
                }
            }
            ObjectKind::UnixOrphan { kind, side } => {
                if !UNIX_SOCKET_TYPES.contains(kind) {
                    return Err(format!("a carried Unix socket has type {kind}"));
                }
                if side.queue.iter().map(Vec::len).sum::<usize>() > MAX_SOCKET_QUEUE_BYTES {
                    return Err(format!("a carried Unix socket holds more than {MAX_SOCKET_QUEUE_BYTES} queued bytes"));
                }
                side.extras.validate()?;
                unix_options_ok(&side.options)?;
            }
            ObjectKind::UnixConnection { kind, listener, sides, .. } => {
                if ![1, 5].contains(kind) {
                    return Err(format!("a carried Unix connection has type {kind}: only stream and seqpacket sockets listen"));
                }
                if listener.is_empty() || listener.len() > 108 {
                    return Err("a carried Unix connection's listener name is not a sun_path".into());
                }
                let bytes: usize = sides.iter().flat_map(|s| s.queue.iter().map(Vec::len)).sum();
                if bytes > MAX_SOCKET_QUEUE_BYTES {
                    return Err(format!("a carried Unix connection holds {bytes} queued bytes, more than {MAX_SOCKET_QUEUE_BYTES}"));
                }
                for side in sides {
                    side.extras.validate()?;
                    unix_options_ok(&side.options)?;
                }
            }
            ObjectKind::UnixSocket { kind, options, name, backlog, peer_name, extras, queue, name_unlinked, .. } => {
                extras.validate()?;
                if !queue.is_empty() && (*kind != 2 || name.is_none() || *name_unlinked) {
                    return Err("a carried Unix socket has messages queued but is not a datagram socket with a name".into());
                }
                if queue.iter().map(Vec::len).sum::<usize>() > MAX_SOCKET_QUEUE_BYTES {
                    return Err(format!("a carried Unix socket holds more than {MAX_SOCKET_QUEUE_BYTES} queued bytes"));
                }
                if peer_name.is_some() && *kind != 2 {
                    return Err("a carried Unix stream socket has a peer: its connection is carried otherwise".into());
                }
                if peer_name.as_ref().is_some_and(|n| n.is_empty() || n.len() > 108) {
                    return Err("a carried Unix socket's peer name is not a sun_path".into());
                }
                if !UNIX_SOCKET_TYPES.contains(kind) {
                    return Err(format!("a carried Unix socket has type {kind}"));
                }
                if name.as_ref().is_some_and(|n| n.is_empty() || n.len() > 108) {
                    return Err("a carried Unix socket's name is not a sun_path".into());
                }
                if backlog.is_some() && *kind == 2 {
                    return Err("a carried datagram socket is listening".into());
                }
                unix_options_ok(options)?;
            }
            ObjectKind::Fifo { path, capacity, data, .. } => {
                if !path.starts_with('/') {
                    return Err(format!("a carried fifo's path {path:?} is not absolute"));
                }
                if *capacity == 0 || *capacity > MAX_PIPE_CAPACITY || data.len() > *capacity as usize {
                    return Err(format!("a carried fifo holds {} bytes in a buffer of {capacity}", data.len()));
                }
            }
            ObjectKind::Inotify { watches } => {
                if watches.windows(2).any(|w| w[0].wd >= w[1].wd) || watches.first().is_some_and(|w| w.wd < 1) || watches.last().is_some_and(|w| w.wd > MAX_INOTIFY_WD) {
                    return Err("a carried inotify instance's watch descriptors are not positive and increasing".into());
                }
                if let Some(w) = watches.iter().find(|w| !w.path.starts_with('/')) {
                    return Err(format!("a carried inotify watch's path {:?} is not absolute", w.path));
                }
            }
            ObjectKind::UnlinkedFile { dir, memfd_name, size, data, .. } => {
                if dir.is_some() == memfd_name.is_some() {
                    return Err("a carried unlinked file is either in a directory or a memfd".into());
                }
                let mut end = 0u64;
                for (at, bytes) in data {
                    let run_end = at.checked_add(bytes.len() as u64).filter(|&e| *at >= end && e <= *size);
                    let Some(run_end) = run_end else {
                        return Err(format!("a carried unlinked file of {size} bytes has a run at {at} that overlaps or passes its end"));
                    };
                    end = run_end;
                }
                if data.iter().map(|r| r.1.len() as u64).sum::<u64>() > MAX_UNLINKED_FILE_BYTES {
                    return Err(format!("a carried unlinked file holds more than {MAX_UNLINKED_FILE_BYTES} bytes"));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The kind's name, for messages.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            ObjectKind::Pipe { .. } => "pipe",
            ObjectKind::EventFd { .. } => "eventfd",
            ObjectKind::TimerFd { .. } => "timerfd",
            ObjectKind::SignalFd { .. } => "signalfd",
            ObjectKind::Epoll { .. } => "epoll instance",
            ObjectKind::UnlinkedFile { .. } => "unlinked file",
            ObjectKind::InetSocket { .. } => "socket",
            ObjectKind::UnixPair { .. } => "Unix socket pair",
            ObjectKind::UnixSocket { .. } => "Unix socket",
            ObjectKind::UnixConnection { .. } => "Unix connection",
            ObjectKind::UnixOrphan { .. } => "Unix socket",
            ObjectKind::Fifo { .. } => "fifo",
            ObjectKind::Inotify { .. } => "inotify instance",
        }
    }
}

/// Options of a Unix socket: socket-level ones of [`SOCKET_OPTIONS`].
fn unix_options_ok(options: &[(i32, i32, i32)]) -> Result<(), String> {
    match options.iter().find(|(l, n, _)| *l != 1 || !SOCKET_OPTIONS.contains(&(*l, *n))) {
        Some((level, name, _)) => Err(format!("a carried Unix socket has option {name} of level {level}, which is not one that is carried")),
        None => Ok(()),
    }
}

/// Access modes (`O_ACCMODE` values of `open(2)`, the same on every Linux).
pub mod libc_o {
    pub const RDONLY: i32 = 0;
    pub const WRONLY: i32 = 1;
    pub const RDWR: i32 = 2;
}

/// The highest descriptor number of `objects`, if any.
pub fn highest_fd(objects: &[CarriedObject]) -> Option<i32> {
    objects.iter().flat_map(CarriedObject::numbers).max()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(fd: i32) -> ObjectEnd {
        ObjectEnd { fds: vec![FdNumber { fd, cloexec: false }], status_flags: 0, access: libc_o::RDWR, pos: 0 }
    }

    fn pipe_end(fd: i32, access: i32) -> ObjectEnd {
        ObjectEnd { access, ..end(fd) }
    }

    #[test]
    fn objects_are_validated() {
        let ends = vec![pipe_end(3, libc_o::RDONLY), pipe_end(4, libc_o::WRONLY), pipe_end(6, libc_o::RDWR)];
        let pipe = CarriedObject { kind: ObjectKind::Pipe { capacity: 4096, data: vec![1; 10] }, ends };
        assert_eq!(pipe.validate(), Ok(()));
        assert_eq!(pipe.numbers().collect::<Vec<_>>(), [3, 4, 6]);
        assert_eq!(highest_fd(std::slice::from_ref(&pipe)), Some(6));
        let one_end = CarriedObject { ends: vec![pipe_end(3, libc_o::RDONLY)], ..pipe.clone() };
        assert!(one_end.validate().unwrap_err().contains("ends"));
        let swapped = CarriedObject { ends: vec![pipe_end(3, libc_o::WRONLY), pipe_end(4, libc_o::RDONLY)], ..pipe.clone() };
        assert!(swapped.validate().is_err(), "the first end reads, the second writes");
        let odd_access = CarriedObject { ends: vec![pipe_end(3, libc_o::RDONLY), pipe_end(4, libc_o::WRONLY), pipe_end(5, 3)], ..pipe.clone() };
        assert!(odd_access.validate().is_err());
        let overfull = CarriedObject { kind: ObjectKind::Pipe { capacity: 4, data: vec![1; 5] }, ..pipe.clone() };
        let two_ends = CarriedObject { ends: vec![end(3), end(4)], kind: ObjectKind::EventFd { count: 1, semaphore: false } };
        assert!(two_ends.validate().is_err());
        assert!(overfull.validate().unwrap_err().contains("5 bytes"));
        let no_fd = CarriedObject { kind: ObjectKind::SignalFd { mask: 1 }, ends: vec![ObjectEnd { fds: vec![], ..end(3) }] };
        assert!(no_fd.validate().is_err());
        let timer = CarriedObject { kind: ObjectKind::TimerFd { clock: 3, value_ns: 1, interval_ns: 0, ticks: 0 }, ends: vec![end(5)] };
        assert!(timer.validate().unwrap_err().contains("clock 3"));
        let counter = CarriedObject { kind: ObjectKind::EventFd { count: u64::MAX, semaphore: false }, ends: vec![end(5)] };
        assert!(counter.validate().is_err());
        assert_eq!(highest_fd(&[]), None);
        let file = |dir: Option<&str>, data: Vec<(u64, Vec<u8>)>| CarriedObject {
            kind: ObjectKind::UnlinkedFile {
                dir: dir.map(String::from),
                memfd_name: None,
                size: 100,
                mode: 0o600,
                uid: 0,
                gid: 0,
                seals: 0,
                atime: (1, 2),
                mtime: (3, 4),
                data,
            },
            ends: vec![end(3)],
        };
        assert_eq!(file(Some("/tmp"), vec![(0, vec![1; 10]), (50, vec![2; 50])]).validate(), Ok(()));
        assert!(file(None, vec![]).validate().is_err(), "neither a directory nor a memfd");
        assert!(file(Some("/tmp"), vec![(0, vec![1; 10]), (5, vec![2; 5])]).validate().is_err(), "overlapping runs");
        assert!(file(Some("/tmp"), vec![(90, vec![1; 20])]).validate().is_err(), "past the end");
        let socket = |domain, options: Vec<(i32, i32, i32)>| CarriedObject {
            kind: ObjectKind::InetSocket { domain, kind: 1, protocol: 0, options, bound: Some(vec![2, 0, 0, 80]), listening: true, peer: None, extras: SocketExtras::default(), shutdown: 0 },
            ends: vec![end(3)],
        };
        assert_eq!(socket(2, vec![(1, 2, 1), (6, 1, 1)]).validate(), Ok(()));
        assert!(socket(1, vec![]).validate().is_err(), "AF_UNIX is not carried this way");
        assert!(socket(2, vec![(1, 25, 1)]).validate().is_err(), "SO_BINDTODEVICE is not an option carried");
        let connected = CarriedObject {
            kind: ObjectKind::InetSocket { domain: 2, kind: 1, protocol: 6, options: vec![], bound: None, listening: false, peer: Some(vec![2, 0, 0, 80]), extras: SocketExtras::default(), shutdown: 0 },
            ends: vec![end(3)],
        };
        assert!(connected.validate().unwrap_err().contains("connections are not carried"));
        let with = |extras: SocketExtras| CarriedObject {
            kind: ObjectKind::InetSocket { domain: 2, kind: 2, protocol: 0, options: vec![], bound: None, listening: false, peer: None, extras, shutdown: 0 },
            ends: vec![end(3)],
        };
        let filter = vec![6, 0, 0, 0, 0xff, 0xff, 0, 0];
        assert_eq!(with(SocketExtras { linger: Some((1, 7)), device: Some("lo".into()), filter: filter.clone(), ..SocketExtras::default() }).validate(), Ok(()));
        assert!(with(SocketExtras { filter: filter[..7].to_vec(), ..SocketExtras::default() }).validate().unwrap_err().contains("filter"), "not whole entries");
        assert!(with(SocketExtras { filter: filter.repeat(4097), ..SocketExtras::default() }).validate().is_err(), "above BPF_MAXINSNS");
        assert!(with(SocketExtras { device: Some("a-name-too-long-for-ifnamsiz".into()), ..SocketExtras::default() }).validate().is_err());
    }

    #[test]
    fn unix_sockets_fifos_and_inotify_instances_are_validated() {
        let side = |queue: Vec<Vec<u8>>| UnixSide { options: vec![(1, 7, 4096)], queue, shutdown: 0, extras: SocketExtras::default() };
        let pair = CarriedObject { kind: ObjectKind::UnixPair { kind: 5, sides: vec![side(vec![vec![1; 3], vec![]]), side(vec![])] }, ends: vec![end(3), end(4)] };
        assert_eq!(pair.validate(), Ok(()));
        assert!(CarriedObject { ends: vec![end(3)], ..pair.clone() }.validate().is_err(), "a pair has two ends");
        let odd_type = CarriedObject { kind: ObjectKind::UnixPair { kind: 3, sides: vec![side(vec![]), side(vec![])] }, ..pair.clone() };
        assert!(odd_type.validate().unwrap_err().contains("type 3"));
        let tcp_option = CarriedObject { kind: ObjectKind::UnixPair { kind: 1, sides: vec![UnixSide { options: vec![(6, 1, 1)], ..side(vec![]) }, side(vec![])] }, ..pair };
        assert!(tcp_option.validate().unwrap_err().contains("level 6"));
        let connection = |kind, accepted, ends: Vec<ObjectEnd>| CarriedObject {
            kind: ObjectKind::UnixConnection { kind, listener: b"/tmp/l\0".to_vec(), accepted, sides: ends.iter().map(|_| side(vec![])).collect() },
            ends,
        };
        assert_eq!(connection(1, true, vec![end(3), end(4)]).validate(), Ok(()));
        assert_eq!(connection(5, false, vec![end(3)]).validate(), Ok(()));
        assert!(connection(1, false, vec![end(3), end(4)]).validate().is_err(), "a pending connection has no server side");
        assert!(connection(2, true, vec![end(3), end(4)]).validate().is_err(), "datagram sockets do not connect through a listener");
        let orphan = CarriedObject { kind: ObjectKind::UnixOrphan { kind: 1, side: side(vec![vec![1]]) }, ends: vec![end(3)] };
        assert_eq!(orphan.validate(), Ok(()));
        assert!(CarriedObject { ends: vec![end(3), end(4)], ..orphan }.validate().is_err());
        let lone = |kind, name: Option<Vec<u8>>, backlog| CarriedObject {
            kind: ObjectKind::UnixSocket { kind, options: vec![], name, name_unlinked: false, file_mode: None, file_owner: None, peer_name: None, backlog, shutdown: 0, extras: SocketExtras::default(), queue: vec![] },
            ends: vec![end(5)],
        };
        assert_eq!(lone(1, Some(b"\0abstract".to_vec()), Some(16)).validate(), Ok(()));
        assert!(lone(2, None, Some(16)).validate().is_err(), "a datagram socket does not listen");
        assert!(lone(1, Some(vec![b'x'; 109]), None).validate().is_err());
        let fifo = |path: &str, capacity, data: Vec<u8>| CarriedObject {
            kind: ObjectKind::Fifo { path: path.into(), mode: 0o600, unlinked: false, identity: (1, 2), capacity, data },
            ends: vec![pipe_end(6, libc_o::RDONLY), pipe_end(7, libc_o::WRONLY)],
        };
        assert_eq!(fifo("/tmp/f", 4096, vec![1; 10]).validate(), Ok(()));
        assert!(fifo("f", 4096, vec![]).validate().is_err(), "a relative path");
        assert!(fifo("/tmp/f", 4, vec![1; 5]).validate().is_err());
        let watch = |wd, path: &str| InotifyWatch { wd, path: path.into(), mask: 0x100 };
        let inotify = |watches| CarriedObject { kind: ObjectKind::Inotify { watches }, ends: vec![end(8)] };
        assert_eq!(inotify(vec![watch(1, "/tmp"), watch(3, "/etc")]).validate(), Ok(()));
        assert!(inotify(vec![watch(3, "/tmp"), watch(1, "/etc")]).validate().is_err(), "out of order");
        assert!(inotify(vec![watch(0, "/tmp")]).validate().is_err());
        assert!(inotify(vec![watch(MAX_INOTIFY_WD + 1, "/tmp")]).validate().is_err());
        assert!(inotify(vec![watch(1, "tmp")]).validate().is_err());
    }
}
