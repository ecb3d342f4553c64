//! Descriptors a child gets recreated from its seed: kernel objects whose
//! whole state is inside the seed (a pipe with both ends in it and the
//! bytes in its buffer, an eventfd's counter, a timerfd's clock and
//! remaining time, a signalfd's mask, an epoll instance's watch set).
//! Capture records them; the restore recreates each in the child at the
//! same descriptor numbers, with the same flags. Anything else that is not
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
    },
}

/// The integer socket options a carried socket keeps, `(level, name)`:
/// `SO_REUSEADDR`, `SO_REUSEPORT`, `SO_KEEPALIVE`, `SO_BROADCAST`,
/// `SO_OOBINLINE`, `SO_DONTROUTE`, `SO_PRIORITY`, `SO_RCVLOWAT`,
/// `SO_RCVBUF`, `SO_SNDBUF`, `SO_MARK`, `SO_NO_CHECK`, `SO_PASSCRED`;
/// `IP_TOS`, `IP_TTL`, `IP_FREEBIND`, `IP_TRANSPARENT`, `IP_PKTINFO`;
/// `IPV6_V6ONLY`, `IPV6_FREEBIND`, `IPV6_RECVPKTINFO`; `TCP_NODELAY`,
/// `TCP_CORK`, `TCP_KEEPIDLE`, `TCP_KEEPINTVL`, `TCP_KEEPCNT` (numbers of
/// Linux on every architecture mitosis runs on).
pub const SOCKET_OPTIONS: [(i32, i32); 26] = [
    (1, 2), (1, 15), (1, 9), (1, 6), (1, 10), (1, 5), (1, 12), (1, 18), (1, 8), (1, 7), (1, 36), (1, 11), (1, 16),
    (0, 1), (0, 2), (0, 15), (0, 19), (0, 8),
    (41, 26), (41, 78), (41, 49),
    (6, 1), (6, 3), (6, 4), (6, 5), (6, 6),
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
            ObjectKind::UnlinkedFile { .. } => !self.ends.is_empty(),
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
            ObjectKind::InetSocket { domain, kind, protocol, options, bound, peer, .. } => {
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
        }
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
            kind: ObjectKind::InetSocket { domain, kind: 1, protocol: 0, options, bound: Some(vec![2, 0, 0, 80]), listening: true, peer: None },
            ends: vec![end(3)],
        };
        assert_eq!(socket(2, vec![(1, 2, 1), (6, 1, 1)]).validate(), Ok(()));
        assert!(socket(1, vec![]).validate().is_err(), "AF_UNIX is not carried this way");
        assert!(socket(2, vec![(1, 25, 1)]).validate().is_err(), "SO_BINDTODEVICE is not an option carried");
        let connected = CarriedObject {
            kind: ObjectKind::InetSocket { domain: 2, kind: 1, protocol: 6, options: vec![], bound: None, listening: false, peer: Some(vec![2, 0, 0, 80]) },
            ends: vec![end(3)],
        };
        assert!(connected.validate().unwrap_err().contains("connections are not carried"));
    }
}
