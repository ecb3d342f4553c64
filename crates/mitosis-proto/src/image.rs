//! The seed image: everything a child needs besides the lazily fetched pages.
//!
//! A seed image is produced once by `prepare` on the seed's host and fetched by
//! every host that resumes the seed. Page contents are never in it: they are
//! served by address from the seed's snapshot. Pages that the process wrote in
//! a private file mapping are listed in [`Vma::written`], so that a child maps
//! the clean rest from its local file and gets those from the seed.

use serde::{Deserialize, Serialize};

use crate::PAGE_SIZE;

/// Number of 64-bit words in the kernel's x86-64 `user_regs_struct`.
pub const USER_REGS_WORDS: usize = 27;

/// Indices into [`Registers::words`] (order of `struct user_regs_struct`).
pub mod reg {
    pub const RBP: usize = 4;
    pub const RBX: usize = 5;
    pub const RAX: usize = 10;
    pub const RCX: usize = 11;
    pub const RDX: usize = 12;
    pub const RSI: usize = 13;
    pub const RDI: usize = 14;
    pub const ORIG_RAX: usize = 15;
    pub const RIP: usize = 16;
    pub const RSP: usize = 19;
    pub const FS_BASE: usize = 21;
    pub const GS_BASE: usize = 22;
}

/// General purpose registers, `struct user_regs_struct` word for word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registers {
    pub words: [u64; USER_REGS_WORDS],
}

/// Page protections of a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prot {
    pub read: bool,
    pub write: bool,
    pub exec: bool,
}

impl Prot {
    /// The `PROT_*` bits for mmap/mprotect.
    pub fn bits(self) -> i32 {
        (self.read as i32) | ((self.write as i32) << 1) | ((self.exec as i32) << 2)
    }
}

/// Identity of a file, directory or device: recorded at prepare from the
/// object the seed has open (not from its path), and compared at resume with
/// what the path names on the child's host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIdentity {
    /// `st_mode & S_IFMT`.
    pub file_type: u32,
    pub dev: u64,
    pub ino: u64,
    /// Device number, for device nodes.
    pub rdev: u64,
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: i64,
}

/// How strictly an object must match its recorded [`FileIdentity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdentityMatch {
    /// The same object: the same type and, for a character device, the same
    /// device number (a device is the same on every host), otherwise the same
    /// device and inode. For open descriptors and the working directory,
    /// whose size and mtime change legitimately while the seed and its
    /// children write them.
    SameObject,
    /// The same object with the same size and modification time: for files
    /// whose pages a child maps from the local copy, which must hold exactly
    /// the bytes the seed saw.
    SameContent,
}

/// `S_IFCHR`, the file type of character devices.
pub const FILE_TYPE_CHAR_DEVICE: u32 = 0o020000;

impl FileIdentity {
    /// Whether `found` is the object recorded in `self`.
    pub fn matches(&self, found: &FileIdentity, how: IdentityMatch) -> bool {
        if self.file_type != found.file_type {
            return false;
        }
        let same_object = if self.file_type == FILE_TYPE_CHAR_DEVICE {
            self.rdev == found.rdev
        } else {
            self.dev == found.dev && self.ino == found.ino
        };
        same_object
            && match how {
                IdentityMatch::SameObject => true,
                IdentityMatch::SameContent => {
                    self.size == found.size && self.mtime_sec == found.mtime_sec && self.mtime_nsec == found.mtime_nsec
                }
            }
    }
}

/// What backs a mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmaKind {
    /// Anonymous private memory (including `[heap]` and `[stack]`, see [`Vma::name`]).
    Anon,
    /// A private mapping of a regular file. Clean pages come from the local file
    /// when it is the same file; written pages ([`Vma::written`]) from the seed.
    File { path: String, offset: u64, identity: FileIdentity },
    /// A shared mapping of a regular file (`MAP_SHARED`): the child maps the
    /// same file shared again, so that it sees what the file holds now and
    /// what it writes goes to the file, as after fork(); it must be the same
    /// file (object) on the child's host, else the resume is refused.
    /// `may_write`: the seed could make it writable (`VM_MAYWRITE`: its
    /// descriptor was open for writing), so the child opens it read-write.
    SharedFile { path: String, offset: u64, identity: FileIdentity, may_write: bool },
    /// A private mapping of something that cannot be reopened by path (deleted
    /// file, memfd, device): all its pages are served from the seed like anon memory.
    Opaque { name: String },
    /// The kernel's vDSO data and code pages: `[vvar]`, `[vvar_vclock]`, `[vdso]`.
    Vdso,
    /// `[vsyscall]`: fixed by the kernel, never restored.
    Vsyscall,
    /// Shared anonymous memory (`MAP_SHARED | MAP_ANONYMOUS`, or a shared
    /// mapping of `/dev/zero`) that no other process mapped at prepare. A
    /// child maps fresh shared anonymous memory there, shared again with its
    /// own forks; its pages are served from the seed like anonymous memory
    /// (the snapshot holds a private copy taken at the prepare instant).
    SharedAnon,
}

/// One mapping of the seed, at its original address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    pub prot: Prot,
    pub kind: VmaKind,
    /// The name in `/proc/PID/maps` (`[heap]`, `[stack]`, a path, or empty).
    pub name: String,
    /// For file mappings: runs `(start, end)` of pages the process wrote (private
    /// copies that differ from the file).
    pub written: Vec<(u64, u64)>,
    /// Its `VmFlags` that the child's mapping takes too ([`vma_flags`]).
    pub flags: u32,
    /// Guard regions inside it (`MADV_GUARD_INSTALL`): `(start, end)` runs,
    /// page aligned, in order. The child gets them as guards again; they
    /// have no pages to fetch.
    pub guards: Vec<(u64, u64)>,
}

/// Flags of a mapping (`/proc/PID/smaps` `VmFlags`) that a child keeps.
pub mod vma_flags {
    /// `lo`: locked (`mlock`); the child locks it as it faults (`MLOCK_ONFAULT`).
    pub const LOCKED: u32 = 1 << 0;
    /// `nr`: `MAP_NORESERVE`.
    pub const NORESERVE: u32 = 1 << 1;
    /// `dp`: `MAP_DROPPABLE`. The kernel may drop its pages at any time, and
    /// a userfaultfd cannot serve it: the child's reads zero.
    pub const DROPPABLE: u32 = 1 << 2;
    /// `sr`, `rr`: `MADV_SEQUENTIAL`, `MADV_RANDOM`.
    pub const SEQUENTIAL: u32 = 1 << 3;
    pub const RANDOM: u32 = 1 << 4;
    /// `dc`: `MADV_DONTFORK`.
    pub const DONTFORK: u32 = 1 << 5;
    /// `dd`: `MADV_DONTDUMP`.
    pub const DONTDUMP: u32 = 1 << 6;
    /// `mg`: `MADV_MERGEABLE` (KSM).
    pub const MERGEABLE: u32 = 1 << 7;
    /// `hg`, `nh`: `MADV_HUGEPAGE`, `MADV_NOHUGEPAGE`.
    pub const HUGEPAGE: u32 = 1 << 8;
    pub const NOHUGEPAGE: u32 = 1 << 9;
    /// `wf`: `MADV_WIPEONFORK`. A child is a fork: it reads zero there, as
    /// after `fork()` (how OpenSSL and others notice a fork and reseed).
    pub const WIPEONFORK: u32 = 1 << 10;
    /// Every flag above, with its `VmFlags` name.
    pub const NAMES: [(&str, u32); 11] = [
        ("lo", LOCKED), ("nr", NORESERVE), ("dp", DROPPABLE), ("sr", SEQUENTIAL), ("rr", RANDOM), ("dc", DONTFORK),
        ("dd", DONTDUMP), ("mg", MERGEABLE), ("hg", HUGEPAGE), ("nh", NOHUGEPAGE), ("wf", WIPEONFORK),
    ];
    /// The `madvise` advice each advice flag is set with.
    pub const ADVICE: [(u32, i32); 8] = [
        (SEQUENTIAL, 2), (RANDOM, 1), (DONTFORK, 10), (DONTDUMP, 16), (MERGEABLE, 12), (HUGEPAGE, 14), (NOHUGEPAGE, 15), (WIPEONFORK, 18),
    ];
}

impl Vma {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
    pub fn pages(&self) -> u64 {
        self.len() / PAGE_SIZE
    }
    pub fn is_stack(&self) -> bool {
        self.name == "[stack]"
    }
    /// Its pages are never the seed's: a child reads zero there.
    pub fn zero_in_child(&self) -> bool {
        self.flags & (vma_flags::WIPEONFORK | vma_flags::DROPPABLE) != 0
    }
}

/// The `struct prctl_mm_map` fields of the seed, restored with `PR_SET_MM_MAP`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmFields {
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub start_stack: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
}

/// A signal's disposition (`struct kernel_sigaction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigAction {
    pub signo: u32,
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

/// Signal state of the seed's only thread.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalState {
    /// Blocked signals (bit n-1 for signal n).
    pub blocked: u64,
    /// Every signal whose disposition is not the default.
    pub actions: Vec<SigAction>,
}

/// How an open file of the seed is given to the child.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenFile {
    pub fd: i32,
    pub path: String,
    /// `open(2)` flags as in `/proc/PID/fdinfo` (creation flags removed).
    pub flags: i32,
    pub pos: u64,
    /// What the descriptor referred to at prepare: a child gets this object
    /// again or is not resumed.
    pub identity: FileIdentity,
    /// The locks and lease the seed held through it: the child takes them
    /// again or is not resumed (it would believe it holds them).
    pub locks: Vec<FileLock>,
    /// The object had lost its name (its path ends with " (deleted)") and is
    /// one a child can make again: what it is made of.
    pub remade: Option<Remade>,
}

/// An object whose name was removed while the seed held it, that a child
/// makes again, opens and removes again, so that its descriptor is of a
/// deleted object too. (A deleted directory needs nothing more: a child gets
/// an empty one.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Remade {
    /// A symbolic link held by `O_PATH | O_NOFOLLOW`, and where it points.
    Symlink { target: String },
    /// A character device node: its permission bits (its device number is
    /// in the identity).
    CharDevice { permissions: u32 },
}

/// What kind of lock a [`FileLock`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockKind {
    /// A POSIX record lock (`fcntl(F_SETLK)`), the process's.
    Posix,
    /// An open file description lock (`F_OFD_SETLK`).
    OpenFileDescription,
    /// A whole-file `flock`.
    Flock,
    /// A lease (`F_SETLEASE`).
    Lease,
}

/// A lock or lease on an open file (`/proc/PID/fdinfo` `lock:` lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileLock {
    pub kind: LockKind,
    /// A write (exclusive) lock or lease, else a read (shared) one.
    pub write: bool,
    /// First byte and last byte (`None`: to the end of the file) of a
    /// record lock; 0 and `None` for the others.
    pub start: u64,
    pub end: Option<u64>,
}

/// Everything about a prepared process except its lazily served memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedImage {
    pub id: String,
    /// Changes every time a seed is prepared, also under the same id: pages are
    /// only ever served for the generation a child was resumed from.
    pub generation: u64,
    /// Pid of the prepared process on the seed host.
    pub source_pid: i32,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub regs: Registers,
    /// `NT_X86_XSTATE` regset (xsave layout) as returned by `PTRACE_GETREGSET`.
    pub xstate: Vec<u8>,
    pub vmas: Vec<Vma>,
    pub mm: MmFields,
    pub auxv: Vec<u8>,
    pub signals: SignalState,
    pub cwd: String,
    /// The working directory's identity at prepare.
    pub cwd_identity: FileIdentity,
    pub exe: Option<(String, FileIdentity)>,
    pub files: Vec<OpenFile>,
    /// Descriptors of the seed that children do not get, with what they were.
    pub closed_fds: Vec<(i32, String)>,
    /// Hash of the seed host's vDSO image: children need the same one.
    pub vdso_hash: u64,
    /// Kernel release of the seed host, for messages.
    pub kernel: String,
    /// Resident memory of the seed at prepare time.
    pub rss_bytes: u64,
    pub prepared_unix_ms: u64,
    /// Time the daemon spent in prepare, in microseconds.
    pub prepare_us: u64,
    /// For a process that prepared itself: the buffer its blocked `read` fills
    /// in each child (see [`crate::local::ReplySlot`]).
    pub reply_slot: Option<crate::local::ReplySlot>,
    /// The thread's registered restartable-sequences area (address, length, signature):
    /// glibc keeps it in thread-local storage and expects the kernel to update it.
    pub rseq: Option<(u64, u32, u32)>,
    /// `set_robust_list` head and length of the thread.
    pub robust_list: (u64, u64),
    /// `set_tid_address` pointer of the thread (cleared by the kernel at exit).
    pub tid_address: u64,
    /// Alternate signal stack (`stack_t`: sp, flags, size); flags has `SS_DISABLE` when none.
    pub altstack: (u64, i32, u64),
    /// Per-process properties a child takes from its seed (umask, resource limits).
    pub properties: ProcessProperties,
    /// The thread group leader's name (`comm`).
    pub comm: String,
    /// Every thread but the leader (whose state is the fields above), in the
    /// order children create them.
    pub threads: Vec<ThreadState>,
    /// The leader's tid (its pid) inside the seed's own PID namespace: what
    /// the seed's glibc cached (`source_pid` is the seed host's view).
    pub leader_tid: i32,
    /// The thread of a self-prepare that waits in `read()` for the answer:
    /// `None` for the leader, else its index in `threads`. In each child, its
    /// `read` returns the [`crate::local::ReplySlot`]'s length.
    pub reply_thread: Option<u32>,
    /// Where glibc caches each thread's tid in its thread control block, as
    /// an offset from the thread's `fs_base`: found at prepare (the same
    /// offset holds each thread's tid in every thread of a multi-threaded
    /// seed). A child whose threads got other tids than the seed's has the
    /// cached ones rewritten there. `None` when it could not be told.
    pub tcb_tid_offset: Option<u32>,
    /// Descriptors whose whole state is inside the seed (pipes with both
    /// ends in it, eventfds, timerfds, signalfds, epoll instances): each
    /// child gets them recreated at the same numbers.
    pub carried: Vec<crate::descriptors::CarriedObject>,
    /// Signals pending for the leader thread itself, and for the whole
    /// process, at prepare ([`PendingSignal`]s, oldest first).
    pub pending: Vec<PendingSignal>,
    pub shared_pending: Vec<PendingSignal>,
}

/// A pending signal: its raw `siginfo_t` (128 bytes; the signal number is
/// its first `int`), queued again in each child as it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingSignal {
    pub info: Vec<u8>,
}

impl PendingSignal {
    /// Bytes of a `siginfo_t`.
    pub const BYTES: usize = 128;

    /// Its signal number (1-64 in a valid one).
    pub fn signo(&self) -> i32 {
        self.info.get(..4).map(|b| i32::from_ne_bytes(b.try_into().unwrap())).unwrap_or(0)
    }

    fn validate(&self) -> Result<(), String> {
        if self.info.len() != Self::BYTES || !(1..=64).contains(&self.signo()) {
            return Err(format!("a pending signal is {} bytes with signal {} (128 bytes, 1 to 64 expected)", self.info.len(), self.signo()));
        }
        Ok(())
    }
}

/// Most threads a seed may have: a bound for images off the wire.
pub const MAX_THREADS: usize = 4096;

/// One thread of a multi-threaded seed (not the leader): what it needs to
/// go on in a child exactly where it was stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadState {
    /// Its tid inside the seed's PID namespace (what the seed knows it as).
    pub tid: i32,
    /// General registers, with `fs_base` (its thread-local storage).
    pub regs: Registers,
    /// `NT_X86_XSTATE`, the leader's layout.
    pub xstate: Vec<u8>,
    /// Blocked signals.
    pub blocked: u64,
    /// Registered rseq area (address, length, signature).
    pub rseq: Option<(u64, u32, u32)>,
    /// `set_robust_list` head and length.
    pub robust_list: (u64, u64),
    /// `set_tid_address` pointer (glibc: the tid field `pthread_join` waits on).
    pub tid_address: u64,
    /// Alternate signal stack (`stack_t`: sp, flags, size).
    pub altstack: (u64, i32, u64),
    /// Its name (`comm`, at most 15 bytes).
    pub comm: String,
    /// Signals pending for this thread, oldest first.
    pub pending: Vec<PendingSignal>,
}

/// Number of resource limits Linux has (`RLIM_NLIMITS`: `RLIMIT_CPU` = 0 to
/// `RLIMIT_RTTIME` = 15).
pub const RLIMIT_COUNT: u32 = 16;

/// `RLIM_INFINITY`: no limit.
pub const RLIM_INFINITY: u64 = u64::MAX;

/// One resource limit of the seed (`struct rlimit64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceLimit {
    /// `RLIMIT_*` number, below [`RLIMIT_COUNT`].
    pub resource: u32,
    /// Soft limit ([`RLIM_INFINITY`] for none), at most `hard`.
    pub soft: u64,
    pub hard: u64,
}

/// Process-wide properties of the seed that are not memory, registers,
/// signals or files, captured at prepare and set in each child.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessProperties {
    /// File mode creation mask (`/proc/PID/status` `Umask:`), at most `0o777`.
    pub umask: u32,
    /// Every resource limit of the seed, each resource once.
    pub rlimits: Vec<ResourceLimit>,
    /// `/proc/PID/oom_score_adj`, -1000 to 1000.
    pub oom_score_adj: i32,
    /// `PR_GET_DUMPABLE`: 0 (not dumpable), 1 (dumpable) or 2 (dumpable by
    /// root only: what a credential change leaves under `fs.suid_dumpable` 2).
    pub dumpable: u32,
    /// `PR_SET_THP_DISABLE` is in force (`/proc/PID/status` `THP_enabled: 0`).
    pub thp_disabled: bool,
    /// `personality(2)` (`/proc/PID/personality`); never `0xffffffff`,
    /// which asks for the current one.
    pub personality: u32,
    /// `PR_SET_CHILD_SUBREAPER` is in force.
    pub child_subreaper: bool,
    /// The armed interval timers (`setitimer`), each kind at most once.
    pub interval_timers: Vec<IntervalTimer>,
    /// The POSIX timers (`timer_create`), armed or not, by id.
    pub posix_timers: Vec<PosixTimer>,
    /// `membarrier` registrations (`MEMBARRIER_CMD_GET_REGISTRATIONS`: a
    /// mask of `MEMBARRIER_CMD_REGISTER_*` commands).
    pub membarrier: u32,
    /// The audit login uid (`/proc/PID/loginuid`), if one is set.
    pub loginuid: Option<u32>,
}

/// Interval timer kinds (`ITIMER_REAL`, `ITIMER_VIRTUAL`, `ITIMER_PROF`).
pub const INTERVAL_TIMER_KINDS: u32 = 3;

/// An armed interval timer: what `getitimer` said at the prepare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntervalTimer {
    /// `ITIMER_*`, below [`INTERVAL_TIMER_KINDS`].
    pub which: u32,
    /// Time left until it fires, in microseconds (not 0: it is armed).
    pub value_us: u64,
    /// Its period after that (0: once).
    pub interval_us: u64,
}

/// How a POSIX timer tells its process that it fired (`sigev_notify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimerNotify {
    /// `SIGEV_NONE`: it is only read.
    Nothing,
    /// `SIGEV_SIGNAL`: a signal to the process.
    Process,
    /// `SIGEV_THREAD_ID`: a signal to the thread with this tid (as the
    /// seed knows it; glibc's `SIGEV_THREAD` timers are these, to its
    /// helper thread).
    Thread(i32),
}

/// A POSIX timer of the seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PosixTimer {
    /// Its id (`timer_t`), which the child keeps.
    pub id: i32,
    /// `CLOCK_*` it counts on.
    pub clock: i32,
    pub notify: TimerNotify,
    /// The signal it sends (0 with [`TimerNotify::Nothing`]).
    pub signo: i32,
    /// `sigev_value`, handed to the handler.
    pub value: u64,
    /// Time left until it fires, in nanoseconds (0: disarmed).
    pub left_ns: u64,
    /// Its period (0: once).
    pub interval_ns: u64,
}

impl ProcessProperties {
    /// Checks the ranges of the umask, oom_score_adj, dumpable state and
    /// personality, and that each limit names a known resource once, with
    /// its soft limit at most its hard limit.
    pub fn validate(&self) -> Result<(), String> {
        if self.umask > 0o777 {
            return Err(format!("umask {:#o} has bits outside 0o777", self.umask));
        }
        if !(-1000..=1000).contains(&self.oom_score_adj) {
            return Err(format!("oom_score_adj {} is outside -1000..=1000", self.oom_score_adj));
        }
        if self.dumpable > 2 {
            return Err(format!("dumpable state {} is not 0, 1 or 2", self.dumpable));
        }
        if self.personality == u32::MAX {
            return Err("personality 0xffffffff is a query, not a personality".into());
        }
        let mut kinds = 0u32;
        for t in &self.interval_timers {
            if t.which >= INTERVAL_TIMER_KINDS || kinds & (1 << t.which) != 0 {
                return Err(format!("interval timer {} is unknown or listed twice", t.which));
            }
            kinds |= 1 << t.which;
        }
        let mut ids: Vec<i32> = self.posix_timers.iter().map(|t| t.id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) || ids.first().is_some_and(|&id| id < 0) {
            return Err("POSIX timer ids are negative or listed twice".into());
        }
        if self.posix_timers.iter().any(|t| !(0..=64).contains(&t.signo)) {
            return Err("a POSIX timer's signal is not a signal".into());
        }
        let mut seen = 0u32;
        for l in &self.rlimits {
            if l.resource >= RLIMIT_COUNT {
                return Err(format!("resource limit {} is not a known resource", l.resource));
            }
            if seen & (1 << l.resource) != 0 {
                return Err(format!("resource limit {} is listed twice", l.resource));
            }
            seen |= 1 << l.resource;
            if l.soft > l.hard {
                return Err(format!("resource limit {} has a soft limit {} above its hard limit {}", l.resource, l.soft, l.hard));
            }
        }
        Ok(())
    }
}

impl SeedImage {
    /// Bytes of address space the child will have mapped (of a
    /// [valid](SeedImage::validate) image: mappings of another may overlap).
    pub fn mapped_bytes(&self) -> u64 {
        self.vmas.iter().map(Vma::len).sum()
    }

    /// Checks what every user of an image takes for granted, before it is
    /// used: a receiver calls this on an image that came off the wire, so
    /// that garbage from a seed host is a clear error, not arithmetic on
    /// nonsense (a mapping that ends before it starts). The seed id follows
    /// [`validate_seed_id`]; mappings are page aligned, not empty, in
    /// ascending order and do not overlap; written runs are page aligned,
    /// not empty and inside their mapping; descriptors are distinct and
    /// between 0 and `i32::MAX - 1`; a reply slot does not wrap around; the
    /// process properties pass [`ProcessProperties::validate`].
    pub fn validate(&self) -> Result<(), String> {
        validate_seed_id(&self.id)?;
        let mut previous_end = 0u64;
        for (i, v) in self.vmas.iter().enumerate() {
            let range = format!("mapping {i} ({:#x}-{:#x})", v.start, v.end);
            if v.start >= v.end || v.start % PAGE_SIZE != 0 || v.end % PAGE_SIZE != 0 {
                return Err(format!("{range} is empty or not page aligned"));
            }
            if v.start < previous_end {
                return Err(format!("{range} overlaps or precedes the mapping before it"));
            }
            previous_end = v.end;
            let bad_run = |&&(s, e): &&(u64, u64)| s >= e || s % PAGE_SIZE != 0 || e % PAGE_SIZE != 0 || s < v.start || e > v.end;
            if let Some(&(s, e)) = v.written.iter().find(bad_run) {
                return Err(format!("{range} has a written run {s:#x}-{e:#x} that is empty, not page aligned or outside it"));
            }
            if let Some(&(s, e)) = v.guards.iter().find(bad_run) {
                return Err(format!("{range} has a guard region {s:#x}-{e:#x} that is empty, not page aligned or outside it"));
            }
        }
        for object in &self.carried {
            object.validate()?;
        }
        let mut fds: Vec<i32> = self.files.iter().map(|f| f.fd).chain(self.carried.iter().flat_map(|o| o.numbers())).collect();
        if let Some(fd) = fds.iter().find(|&&fd| !(0..i32::MAX).contains(&fd)) {
            return Err(format!("descriptor {fd} is out of range"));
        }
        fds.sort_unstable();
        if let Some(w) = fds.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("descriptor {} is listed twice", w[0]));
        }
        if let Some(slot) = self.reply_slot {
            if slot.addr.checked_add(slot.len).is_none() {
                return Err(format!("the reply slot {:#x}+{:#x} wraps around", slot.addr, slot.len));
            }
        }
        self.validate_threads()?;
        self.properties.validate()
    }

    /// At most [`MAX_THREADS`] threads, each with a distinct positive tid
    /// other than the leader's, an xsave area of the leader's size and a
    /// name of at most 15 bytes; the reply thread is one of them.
    fn validate_threads(&self) -> Result<(), String> {
        if self.threads.len() > MAX_THREADS {
            return Err(format!("{} threads, more than {MAX_THREADS}", self.threads.len()));
        }
        let mut tids: Vec<i32> = self.threads.iter().map(|t| t.tid).collect();
        tids.push(self.leader_tid);
        if let Some(t) = tids.iter().find(|&&t| t <= 0) {
            return Err(format!("thread id {t} is not positive"));
        }
        tids.sort_unstable();
        if let Some(w) = tids.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("thread id {} is listed twice", w[0]));
        }
        if self.comm.len() > 15 {
            return Err(format!("thread name {:?} is longer than 15 bytes", self.comm));
        }
        for t in &self.threads {
            if t.xstate.len() != self.xstate.len() {
                return Err(format!("thread {} has an xsave area of {} bytes, the leader {}", t.tid, t.xstate.len(), self.xstate.len()));
            }
            if t.comm.len() > 15 {
                return Err(format!("thread {} has a name {:?} longer than 15 bytes", t.tid, t.comm));
            }
        }
        let most = MAX_THREADS * 64;
        let pending: Vec<&PendingSignal> =
            self.pending.iter().chain(&self.shared_pending).chain(self.threads.iter().flat_map(|t| &t.pending)).collect();
        if pending.len() > most {
            return Err(format!("{} pending signals, more than {most}", pending.len()));
        }
        pending.iter().try_for_each(|p| p.validate())?;
        if let Some(i) = self.reply_thread.filter(|&i| usize::try_from(i).map_or(true, |i| i >= self.threads.len())) {
            return Err(format!("the reply thread {i} is not one of the seed's {} threads", self.threads.len()));
        }
        Ok(())
    }
}

/// FNV-1a, used to fingerprint vDSO images (not a security boundary).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100_0000_01b3))
}

/// Checks the rules for seed ids: 1 to 128 characters of `[A-Za-z0-9._-]`.
pub fn validate_seed_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 128 {
        return Err(format!("seed id must be 1 to 128 characters, got {}", id.len()));
    }
    if let Some(c) = id.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("seed id {id:?} contains {c:?}; allowed are letters, digits, '.', '_' and '-'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_ids() {
        assert!(validate_seed_id("fn-1.v2_a").is_ok());
        assert!(validate_seed_id("").is_err());
        assert!(validate_seed_id("a/b").is_err());
        assert!(validate_seed_id(&"x".repeat(129)).is_err());
    }

    #[test]
    fn identities_match_by_object_or_by_content() {
        let file = FileIdentity { file_type: 0o100000, dev: 8, ino: 42, rdev: 0, size: 10, mtime_sec: 5, mtime_nsec: 1 };
        let written = FileIdentity { size: 11, mtime_sec: 6, ..file };
        assert!(file.matches(&file, IdentityMatch::SameContent));
        assert!(file.matches(&written, IdentityMatch::SameObject));
        assert!(!file.matches(&written, IdentityMatch::SameContent));
        assert!(!file.matches(&FileIdentity { ino: 43, ..file }, IdentityMatch::SameObject), "another inode");
        assert!(!file.matches(&FileIdentity { dev: 9, ..file }, IdentityMatch::SameObject), "another filesystem");
        let symlink = FileIdentity { file_type: 0o120000, ..file };
        assert!(!file.matches(&symlink, IdentityMatch::SameObject), "another type");
        let null = FileIdentity { file_type: FILE_TYPE_CHAR_DEVICE, dev: 5, ino: 4, rdev: 0x103, ..Default::default() };
        let null_elsewhere = FileIdentity { dev: 6, ino: 99, ..null };
        assert!(null.matches(&null_elsewhere, IdentityMatch::SameObject), "a device is its device number");
        assert!(!null.matches(&FileIdentity { rdev: 0x105, ..null }, IdentityMatch::SameObject));
    }

    fn image() -> SeedImage {
        let vma = |start: u64, end: u64| Vma {
            start,
            end,
            prot: Prot { read: true, write: true, exec: false },
            kind: VmaKind::Anon,
            name: String::new(),
            written: Vec::new(),
            flags: 0,
            guards: Vec::new(),
        };
        SeedImage {
            id: "fn-a".into(),
            generation: 1,
            source_pid: 10,
            uid: 0,
            gid: 0,
            groups: vec![],
            regs: Registers { words: [0; USER_REGS_WORDS] },
            xstate: vec![],
            vmas: vec![vma(0x1000, 0x3000), vma(0x3000, 0x4000)],
            mm: MmFields::default(),
            auxv: vec![],
            signals: SignalState::default(),
            cwd: "/".into(),
            cwd_identity: FileIdentity::default(),
            exe: None,
            files: vec![],
            closed_fds: vec![],
            vdso_hash: 0,
            kernel: String::new(),
            rss_bytes: 0,
            prepared_unix_ms: 0,
            prepare_us: 0,
            reply_slot: None,
            rseq: None,
            robust_list: (0, 0),
            tid_address: 0,
            altstack: (0, 0, 0),
            carried: vec![],
            pending: vec![signal(10)],
            shared_pending: vec![],
            properties: ProcessProperties {
                umask: 0o022,
                rlimits: vec![ResourceLimit { resource: 7, soft: 1024, hard: 4096 }, ResourceLimit { resource: 4, soft: 0, hard: RLIM_INFINITY }],
                oom_score_adj: -500,
                dumpable: 1,
                thp_disabled: true,
                personality: 0x0040000,
                child_subreaper: true,
                interval_timers: vec![IntervalTimer { which: 0, value_us: 2_500_000, interval_us: 1_000_000 }],
                posix_timers: vec![PosixTimer {
                    id: 3,
                    clock: 1,
                    notify: TimerNotify::Thread(12),
                    signo: 34,
                    value: 0xdead,
                    left_ns: 5_000,
                    interval_ns: 0,
                }],
                membarrier: 1 << 4,
                loginuid: Some(1000),
            },
            comm: "python3".into(),
            threads: vec![thread(11), thread(12)],
            leader_tid: 10,
            reply_thread: None,
            tcb_tid_offset: Some(0x2d0),
        }
    }

    fn thread(tid: i32) -> ThreadState {
        ThreadState {
            tid,
            regs: Registers { words: [0; USER_REGS_WORDS] },
            xstate: vec![],
            blocked: 0,
            rseq: None,
            robust_list: (0, 0),
            tid_address: 0,
            altstack: (0, 2, 0),
            comm: "worker".into(),
            pending: vec![],
        }
    }

    fn signal(signo: i32) -> PendingSignal {
        let mut info = vec![0u8; PendingSignal::BYTES];
        info[..4].copy_from_slice(&signo.to_ne_bytes());
        PendingSignal { info }
    }

    #[test]
    fn images_are_validated() {
        let good = image();
        assert_eq!(good.validate(), Ok(()));
        assert_eq!(good.mapped_bytes(), 0x3000);
        let mut backwards = image();
        backwards.vmas[0].end = 0;
        assert!(backwards.validate().unwrap_err().contains("empty or not page aligned"));
        let mut overlapping = image();
        overlapping.vmas[1].start = 0x2000;
        assert!(overlapping.validate().unwrap_err().contains("overlaps"));
        let mut unaligned = image();
        unaligned.vmas[1].end = 0x4001;
        assert!(unaligned.validate().is_err());
        let mut outside = image();
        outside.vmas[0].written = vec![(0x2000, 0x4000)];
        assert!(outside.validate().unwrap_err().contains("written run"));
        let mut guard_outside = image();
        guard_outside.vmas[0].guards = vec![(0x1000, 0x1800)];
        assert!(guard_outside.validate().unwrap_err().contains("guard region"));
        let mut fds = image();
        let file = |fd| OpenFile { fd, path: "/dev/null".into(), flags: 0, pos: 0, locks: Vec::new(), identity: FileIdentity::default(), remade: None };
        fds.files = vec![file(1), file(1)];
        assert!(fds.validate().unwrap_err().contains("twice"));
        fds.files = vec![file(i32::MAX)];
        assert!(fds.validate().unwrap_err().contains("out of range"));
        use crate::descriptors::{CarriedObject, FdNumber, ObjectEnd, ObjectKind};
        let signalfd = |fd| CarriedObject { kind: ObjectKind::SignalFd { mask: 1 }, ends: vec![ObjectEnd { fds: vec![FdNumber { fd, cloexec: false }], status_flags: 0, access: 2, pos: 0 }] };
        fds.files = vec![file(3)];
        fds.carried = vec![signalfd(4)];
        assert_eq!(fds.validate(), Ok(()));
        fds.carried = vec![signalfd(3)];
        assert!(fds.validate().unwrap_err().contains("twice"), "a carried descriptor has the number of a reopened file");
        fds.carried = vec![CarriedObject { ends: vec![], ..signalfd(4) }];
        assert!(fds.validate().unwrap_err().contains("ends"));
        let mut slot = image();
        slot.reply_slot = Some(crate::local::ReplySlot { addr: u64::MAX, len: 2 });
        assert!(slot.validate().unwrap_err().contains("wraps"));
        let mut id = image();
        id.id = "a/b".into();
        assert!(id.validate().is_err());
        let mut umask = image();
        umask.properties.umask = 0o1022;
        assert!(umask.validate().unwrap_err().contains("umask"));
        let mut oom = image();
        oom.properties.oom_score_adj = 1001;
        assert!(oom.validate().unwrap_err().contains("oom_score_adj"));
        let mut dumpable = image();
        dumpable.properties.dumpable = 3;
        assert!(dumpable.validate().unwrap_err().contains("dumpable"));
        let mut persona = image();
        persona.properties.personality = u32::MAX;
        assert!(persona.validate().unwrap_err().contains("personality"));
        let mut limits = image();
        limits.properties.rlimits[1].resource = RLIMIT_COUNT;
        assert!(limits.validate().unwrap_err().contains("not a known resource"));
        limits.properties.rlimits[1].resource = 7;
        assert!(limits.validate().unwrap_err().contains("twice"));
        limits.properties.rlimits[1] = ResourceLimit { resource: 3, soft: 9, hard: 8 };
        assert!(limits.validate().unwrap_err().contains("above its hard limit"));
    }

    #[test]
    fn threads_are_validated() {
        let mut twice = image();
        twice.threads[1].tid = 11;
        assert!(twice.validate().unwrap_err().contains("thread id 11 is listed twice"));
        let mut leader = image();
        leader.threads[0].tid = 10;
        assert!(leader.validate().unwrap_err().contains("listed twice"), "a thread with the leader's tid");
        let mut negative = image();
        negative.threads[0].tid = -3;
        assert!(negative.validate().unwrap_err().contains("not positive"));
        let mut xstate = image();
        xstate.threads[1].xstate = vec![0; 64];
        assert!(xstate.validate().unwrap_err().contains("xsave area"));
        let mut name = image();
        name.threads[0].comm = "x".repeat(16);
        assert!(name.validate().unwrap_err().contains("longer than 15 bytes"));
        let mut reply = image();
        reply.reply_thread = Some(2);
        assert!(reply.validate().unwrap_err().contains("reply thread"));
        reply.reply_thread = Some(1);
        assert_eq!(reply.validate(), Ok(()));
        let mut short = image();
        short.threads[0].pending = vec![PendingSignal { info: vec![10, 0, 0, 0] }];
        assert!(short.validate().unwrap_err().contains("pending signal is 4 bytes"));
        let mut nosig = image();
        nosig.shared_pending = vec![signal(65)];
        assert!(nosig.validate().unwrap_err().contains("signal 65"));
        let mut many = image();
        many.threads = (0..=MAX_THREADS as i32).map(|i| thread(100 + i)).collect();
        assert!(many.validate().unwrap_err().contains("more than"));
    }

    #[test]
    fn prot_bits() {
        assert_eq!(Prot { read: true, write: true, exec: false }.bits(), 3);
        assert_eq!(Prot { read: true, write: false, exec: true }.bits(), 5);
    }
}
