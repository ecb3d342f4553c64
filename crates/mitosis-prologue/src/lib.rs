//! The resume prologue: what a fresh process does by itself before the
//! daemon takes it over and rebuilds a seed in it.
//!
//! A child of a seed starts as a fork of the daemon's zygote, or as the
//! caller of a resume in place (`mitosis::resume_in_place`). Either way it
//! runs [`Prologue::run`]: it installs its stdio, creates its userfaultfd,
//! opens the seed's files and working directory with the seed owner's
//! credentials (by paths without symbolic links, and only if they are the
//! objects recorded at prepare), enters its container, sets the seed's
//! signal dispositions, credentials, resource limits (but those of
//! [`LIMITS_SET_BY_RESTORE`]), umask, dumpable state, THP setting and
//! child-subreaper flag (personality and oom_score_adj are the restore's),
//! reports on its ready descriptor and
//! parks in `pause()` with every signal blocked, waiting for the daemon's
//! ptrace. On failure it exits with a [`PrologueExit`] code, having first
//! reported a [`FileFailure`] when a file was the cause.
//!
//! It runs in a freshly forked child, possibly of a multi-threaded process:
//! it makes allocation-free calls only (`mitosis_sys::after_fork`,
//! `mitosis_sys::fsid`, `mitosis_sys::uffd::create_raw`) on inputs prepared
//! before the fork, and never panics. Its inputs are serializable, because
//! the daemon sends them to its zygote, and to the caller of a resume in place.
//!
//! This crate owns the prologue's inputs ([`Prologue`], [`PrologueFiles`]),
//! its exit codes and failure records, and [`identity_from_sys`], the one
//! conversion of what `fstat` tells into the identity an image records (so
//! that capture records identities exactly as the prologue checks them). It
//! depends on `mitosis-proto` and `mitosis-sys` only: the client library and
//! libmitosis link it for a resume in place, and must not link the capture
//! or restore engines. It must not touch another process, the network, or
//! a seed's memory; deciding the plan is `mitosis-restore`'s job.

#![forbid(unsafe_code)]

use std::ffi::{CStr, CString};
use std::os::fd::RawFd;

use serde::{Deserialize, Serialize};

use mitosis_proto::image::{FileIdentity, IdentityMatch, ProcessProperties, SigAction};
use mitosis_sys::after_fork::{self, LimitSet, RawSigaction};
use mitosis_sys::fsid;

/// Exit codes of a failed prologue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum PrologueExit {
    ParentGone = 90,
    Stdio = 91,
    Userfaultfd = 92,
    OpenFile = 93,
    Chdir = 94,
    Signals = 95,
    Credentials = 96,
    Container = 97,
    FileChanged = 98,
    Properties = 99,
}

/// Resource limits the prologue leaves alone: the restore sets them once the
/// seed's layout is mapped, because they limit the mappings the restore
/// makes (`RLIMIT_DATA`, `RLIMIT_AS`) or the stack it maps (`RLIMIT_STACK`).
pub const LIMITS_SET_BY_RESTORE: [u32; 3] = [libc::RLIMIT_DATA, libc::RLIMIT_AS, libc::RLIMIT_STACK];

/// The kernel's name of each resource limit, by number.
pub const LIMIT_NAMES: [&str; 16] = [
    "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_DATA", "RLIMIT_STACK", "RLIMIT_CORE", "RLIMIT_RSS", "RLIMIT_NPROC",
    "RLIMIT_NOFILE", "RLIMIT_MEMLOCK", "RLIMIT_AS", "RLIMIT_LOCKS", "RLIMIT_SIGPENDING", "RLIMIT_MSGQUEUE",
    "RLIMIT_NICE", "RLIMIT_RTPRIO", "RLIMIT_RTTIME",
];

/// Sets the seed's limit `(resource, soft, hard)` in this process where the
/// kernel allows it. A hard limit above what this process may set (raising
/// one needs `CAP_SYS_RESOURCE`) is not a failure: the child keeps the
/// highest hard limit it has, and `warn` (the resumer's stderr) says so,
/// because a child that works with less room than its seed is better than no
/// child, and silence would hide why.
fn set_limit_or_warn(resource: u32, soft: u64, hard: u64, warn: RawFd) -> Result<(), ()> {
    match after_fork::set_rlimit(resource, soft, hard) {
        Ok(LimitSet::Exact) => Ok(()),
        Ok(LimitSet::HardKept { .. }) => {
            let name = LIMIT_NAMES.get(resource as usize).copied().unwrap_or("a resource limit");
            let _ = after_fork::write_all(warn, b"mitosis: warning: the seed's hard limit of ");
            let _ = after_fork::write_all(warn, name.as_bytes());
            let _ = after_fork::write_all(warn, b" is above what this child may set (raising it needs CAP_SYS_RESOURCE): it keeps this host's\n");
            Ok(())
        }
        Err(_) => Err(()),
    }
}

impl PrologueExit {
    pub fn describe(code: i32) -> Option<&'static str> {
        Some(match code {
            90 => "the daemon thread that forked it went away",
            91 => "could not install the resumer's stdio",
            92 => "could not create a userfaultfd (an unprivileged user needs vm.unprivileged_userfaultfd=1 or access to /dev/userfaultfd)",
            93 => "could not open one of the seed's files",
            94 => "could not enter the seed's working directory",
            95 => "could not set signal dispositions",
            96 => "could not take the seed's credentials",
            97 => "could not enter its container",
            98 => "one of the seed's files was replaced between the check and the open (refused)",
            99 => "could not set the seed's resource limits or process flags",
            _ => return None,
        })
    }
}

/// First byte of the record a prologue that failed on one of its files (or
/// its working directory) writes on its ready pipe before it exits:
/// `[FAILURE_MARK, exit code, index u16 LE, errno u16 LE]`, where the index is
/// into [`PrologueFiles::files`] or [`CWD_INDEX`], and errno 0 means that the
/// path named another object than the one recorded at prepare.
pub const FAILURE_MARK: u8 = 0xEE;
pub const CWD_INDEX: u16 = u16::MAX;

/// The wire form of an identity `fstat` gave: how capture records a file
/// and how the prologue and the restore plan compare what they find with it.
pub fn identity_from_sys(id: fsid::Identity) -> FileIdentity {
    FileIdentity {
        file_type: id.file_type,
        dev: id.dev,
        ino: id.ino,
        rdev: id.rdev,
        size: id.size,
        mtime_sec: id.mtime_sec,
        mtime_nsec: id.mtime_nsec,
    }
}

/// A file the prologue opens at a fixed descriptor number: by a path
/// without symbolic links, with the seed owner's credentials, and only if it
/// is the object recorded at prepare.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrologueFile {
    pub fd: i32,
    pub path: CString,
    pub flags: i32,
    pub pos: u64,
    pub expect: FileIdentity,
    pub how: IdentityMatch,
    /// The seed's object had lost its name: the prologue makes one again
    /// at `path` (a path free on this host), or elsewhere, opens it and
    /// removes it, so that the child's descriptor is of a deleted one too.
    pub deleted: Option<Deleted>,
}

/// An object the prologue makes again, opens and removes again (see
/// [`PrologueFile::deleted`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deleted {
    /// Where it is made if the child may not make it at its path (in /tmp).
    pub elsewhere: CString,
    pub kind: DeletedKind,
}

/// What a [`Deleted`] object is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeletedKind {
    /// A directory, made empty.
    Directory,
    /// A symbolic link pointing to `target` (held by `O_PATH | O_NOFOLLOW`).
    Symlink { target: CString },
    /// A character device node (its permission bits less the umask; making
    /// one needs `CAP_MKNOD`, which only root has).
    CharDevice { permissions: u32, rdev: u64 },
}

impl PrologueFile {
    /// Whether this descriptor holds a deleted directory made again.
    pub fn holds_deleted_directory(&self) -> bool {
        self.deleted.as_ref().is_some_and(|d| d.kind == DeletedKind::Directory)
    }
}

/// The part of a resume plan the prologue acts on (the restore plan builds
/// it and holds it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrologueFiles {
    /// Files for the seed's descriptors and for file mappings.
    pub files: Vec<PrologueFile>,
    /// Descriptor number of the child's userfaultfd until the daemon takes a
    /// copy; every number the seed needs is below it.
    pub uffd_fd: i32,
    /// Where the host's shared copy of the seed's pages goes (the daemon
    /// passes it, read-only), for the restore to map the child's memory
    /// from; below `uffd_fd`, among the descriptors the restore closes.
    pub shared_pages_fd: Option<i32>,
    pub cwd: CString,
    pub cwd_expect: FileIdentity,
    /// The seed's working directory had been deleted: the prologue makes an
    /// empty directory at `cwd` (a path free on this host), or at this path
    /// (in /tmp) if the child may not make one there, enters it and removes
    /// it, so that the child's is a deleted directory too.
    pub cwd_deleted: Option<CString>,
    /// The deleted working directory is the very directory this descriptor
    /// of the seed's holds (a [`PrologueFile::deleted`] directory): the child
    /// enters that one, so that the two are one directory again.
    pub cwd_held_by: Option<i32>,
}

/// A failure a prologue reported on its ready pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileFailure {
    pub code: i32,
    pub index: u16,
    pub errno: i32,
}

impl FileFailure {
    /// Parses the record read from a ready pipe (`None` if it is not one).
    pub fn parse(bytes: &[u8]) -> Option<FileFailure> {
        match bytes {
            [FAILURE_MARK, code, i0, i1, e0, e1, ..] => Some(FileFailure {
                code: i32::from(*code),
                index: u16::from_le_bytes([*i0, *i1]),
                errno: i32::from(u16::from_le_bytes([*e0, *e1])),
            }),
            _ => None,
        }
    }

    /// The record [`FileFailure::parse`] reads.
    fn record(code: PrologueExit, index: u16, errno: i32) -> [u8; 6] {
        let i = index.to_le_bytes();
        let e = u16::try_from(errno).unwrap_or(u16::MAX).to_le_bytes();
        [FAILURE_MARK, code as u8, i[0], i[1], e[0], e[1]]
    }

    /// Says what went wrong, naming the file of `plan` (a restore plan
    /// gives its [`PrologueFiles`]).
    pub fn describe(&self, plan: &impl AsRef<PrologueFiles>, owner: Option<u32>) -> String {
        let plan = plan.as_ref();
        let what = if self.index == CWD_INDEX {
            format!("the seed's working directory {}", plan.cwd.to_string_lossy())
        } else {
            match plan.files.get(usize::from(self.index)) {
                Some(f) => format!("the seed's file {} (descriptor {})", f.path.to_string_lossy(), f.fd),
                None => "one of the seed's files".to_string(),
            }
        };
        let who = owner.map(|uid| format!(" as the seed's owner (uid {uid})")).unwrap_or_default();
        match self.errno {
            0 => format!("{what} was replaced by another object since prepare: refused"),
            libc::ELOOP => format!("{what} is now reached through a symbolic link: refused, links are never followed"),
            e => format!("cannot open {what}{who}: {}", std::io::Error::from_raw_os_error(e)),
        }
    }
}

impl AsRef<PrologueFiles> for PrologueFiles {
    fn as_ref(&self) -> &PrologueFiles {
        self
    }
}

/// Credentials the child takes before it is restored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// Capabilities (a `CAP_*` bit mask) a child of a seed other than root
    /// keeps across the change of ids, for its restore only: the restore
    /// drops them before any of the seed's code runs.
    pub keep_for_restore: u64,
}

/// The container a child joins: the namespaces of the holder whose pidfd is
/// handed to [`Prologue::run`] (its PID namespace is entered by the forker).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerEntry {
    /// `setns` flags on the holder's pidfd.
    pub join_flags: i32,
    pub hostname: Option<CString>,
}

/// Inputs of the prologue, built before the fork (and sent to the zygote
/// that forks children, hence serializable).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Prologue {
    /// Pid the child's parent must have (it dies with that parent); 0 when a
    /// process is resumed in place and keeps its own parent.
    pub parent: i32,
    pub plan: PrologueFiles,
    pub actions: Vec<SigAction>,
    pub credentials: Option<Credentials>,
    pub container: Option<ContainerEntry>,
    /// The seed's umask and resource limits (but [`LIMITS_SET_BY_RESTORE`]).
    pub properties: ProcessProperties,
}

fn fail(code: PrologueExit) -> ! {
    after_fork::exit(code as i32)
}

/// Tells the daemon which file failed (on `ready`), then exits with `code`.
fn fail_file(ready: RawFd, code: PrologueExit, index: u16, errno: i32) -> ! {
    // Best effort: the exit code says what failed if the record cannot go.
    let _ = after_fork::write_all(ready, &FileFailure::record(code, index, errno));
    fail(code)
}

/// A descriptor (opened with `flags`) of a deleted object of `kind`: made at
/// `path`, or at `elsewhere` when the child may not make it there, opened
/// and removed again (allocation-free).
fn deleted_object(path: &CStr, elsewhere: &CStr, kind: &DeletedKind, flags: i32) -> Result<RawFd, ()> {
    let make = |at: &CStr| match kind {
        DeletedKind::Directory => after_fork::make_dir(at, 0o700),
        DeletedKind::Symlink { target } => after_fork::make_symlink(target, at),
        DeletedKind::CharDevice { permissions, rdev } => after_fork::make_char_device(at, *permissions, *rdev),
    };
    let made = if make(path).is_ok() {
        path
    } else if make(elsewhere).is_ok() {
        elsewhere
    } else {
        return Err(());
    };
    let flags = if *kind == DeletedKind::Directory { flags | libc::O_DIRECTORY } else { flags };
    let opened = fsid::open_no_symlinks(made, flags);
    let removed = match kind {
        DeletedKind::Directory => after_fork::remove_dir(made),
        _ => after_fork::remove_file(made),
    };
    match (opened, removed) {
        (Ok(fd), Ok(())) => Ok(fd),
        (Ok(fd), Err(_)) => {
            fsid::close(fd);
            Err(())
        }
        (Err(_), _) => Err(()),
    }
}

/// Opens `path` with `flags` without following symbolic links and checks
/// that it is the object `expect` (allocation-free); on failure reports the
/// file on `ready` and exits.
fn open_checked(path: &CStr, flags: i32, expect: &FileIdentity, how: IdentityMatch, ready: RawFd, index: u16, code: PrologueExit) -> RawFd {
    let fd = match fsid::open_no_symlinks(path, flags) {
        Ok(fd) => fd,
        Err(errno) => fail_file(ready, code, index, errno),
    };
    match fsid::identity_of_fd(fd) {
        Ok(found) if expect.matches(&identity_from_sys(found), how) => fd,
        Ok(_) => fail_file(ready, PrologueExit::FileChanged, index, 0),
        Err(errno) => fail_file(ready, code, index, errno),
    }
}

impl Prologue {
    /// Runs in the forked child; never returns. `stdio` become descriptors
    /// 0-2; one byte is written to `ready` (a pipe) when done, end-of-file
    /// instead means the child died (see its exit code). With a container,
    /// `holder` is its holder's pidfd; `shared_pages` is the host's shared
    /// copy of the seed's pages, for a plan that maps memory from it. Ends parked in `pause()` with every
    /// signal blocked, waiting for the daemon's ptrace.
    ///
    /// The seed's files (also those its file mappings come from) and its
    /// working directory are opened before the child enters its container's
    /// mount namespace: like a forked process, the child keeps the files and
    /// the working directory its parent had, seen as the daemon saw them
    /// when it checked their identity.
    pub fn run(&self, stdio: [RawFd; 3], ready: RawFd, holder: Option<RawFd>, shared_pages: Option<RawFd>) -> ! {
        // In a container the parent (the daemon) is outside the child's PID
        // namespace, where getppid() reads 0. The holder dies with the
        // daemon and takes the namespace's processes with it.
        let visible_parent = if self.container.is_some() { 0 } else { self.parent };
        if self.parent != 0
            && (after_fork::set_parent_death_signal(libc::SIGKILL).is_err() || after_fork::parent_pid() != visible_parent)
        {
            fail(PrologueExit::ParentGone);
        }
        // The forked thread's rseq area lives in the forker's thread-local
        // storage, which the restore unmaps: the kernel would then fail to
        // update it and kill the child. An error means none is registered.
        let _ = after_fork::unregister_rseq();
        let Ok(blocked) = after_fork::block_all_signals() else { fail(PrologueExit::Signals) };
        // Descriptors inherited from the forker may sit on any number, also on
        // the ones the seed needs: lift the ones we keep above all of those first.
        let high = self.plan.uffd_fd + 1;
        let lift = |fd: RawFd| after_fork::dup_at_or_above(fd, high);
        let (Ok(in_), Ok(out), Ok(err), Ok(ready)) = (lift(stdio[0]), lift(stdio[1]), lift(stdio[2]), lift(ready)) else {
            fail(PrologueExit::Stdio)
        };
        let holder = match holder.map(lift) {
            None => None,
            Some(Ok(fd)) => Some(fd),
            Some(Err(_)) => fail(PrologueExit::Stdio),
        };
        let shared_pages = match shared_pages.map(lift) {
            None => None,
            Some(Ok(fd)) => Some(fd),
            Some(Err(_)) => fail(PrologueExit::Stdio),
        };
        if after_fork::close_range(3, high - 1).is_err() {
            fail(PrologueExit::Stdio);
        }
        for (to, fd) in [(0, in_), (1, out), (2, err)] {
            if after_fork::dup_onto(fd, to, false).is_err() {
                fail(PrologueExit::Stdio);
            }
        }
        match (shared_pages, self.plan.shared_pages_fd) {
            (Some(fd), Some(to)) => {
                if after_fork::dup_onto(fd, to, true).is_err() {
                    fail(PrologueExit::Stdio);
                }
                after_fork::close(fd);
            }
            (None, None) => {}
            // The plan maps memory from a copy that did not come (or the reverse).
            _ => fail(PrologueExit::Stdio),
        }
        // Also through /dev/userfaultfd, for an unprivileged caller resuming in place.
        let target = self.plan.uffd_fd;
        match mitosis_sys::uffd::create_raw(libc::O_CLOEXEC | libc::O_NONBLOCK) {
            Ok(fd) if fd == target => {}
            Ok(fd) => {
                if after_fork::dup_onto(fd, target, false).is_err() {
                    fail(PrologueExit::Userfaultfd);
                }
                after_fork::close(fd);
            }
            Err(_) => fail(PrologueExit::Userfaultfd),
        }
        // The seed's audit login uid, while the child may still set it
        // (root's CAP_AUDIT_CONTROL, and its own /proc file: before the
        // file-system ids change): one the kernel refuses (an immutable
        // one of this host) stays this host's, with a warning.
        if let Some(uid) = self.properties.loginuid {
            if after_fork::set_loginuid(uid).is_err() {
                let _ = after_fork::write_all(2, b"mitosis: warning: the child keeps this host's audit login uid: the kernel refused the seed's\n");
            }
        }
        // The seed's files and working directory are opened with its
        // owner's file-system credentials (never root's: a user must not
        // get through a child what the user could not open), by paths
        // without symbolic links, and only if they are the objects the
        // seed had at prepare.
        if let Some(c) = &self.credentials {
            if after_fork::set_groups(&c.groups).is_err() || after_fork::set_fs_ids(c.uid, c.gid).is_err() {
                fail(PrologueExit::Credentials);
            }
        }
        for (index, f) in self.plan.files.iter().enumerate() {
            // Descriptors of one deleted object hold one made again: the
            // later ones copies of the first.
            let same_inode = |b: &&PrologueFile| b.expect.file_type == f.expect.file_type && b.expect.dev == f.expect.dev && b.expect.ino == f.expect.ino;
            let made_before = self.plan.files[..index].iter().filter(|b| b.deleted.is_some()).find(same_inode);
            let index = u16::try_from(index).unwrap_or(u16::MAX - 1);
            let fd = match (&f.deleted, made_before) {
                (Some(_), Some(first)) => after_fork::dup_at_or_above(first.fd, self.plan.uffd_fd + 1).unwrap_or_else(|_| fail(PrologueExit::OpenFile)),
                (Some(d), None) => deleted_object(&f.path, &d.elsewhere, &d.kind, f.flags).unwrap_or_else(|()| fail(PrologueExit::OpenFile)),
                (None, _) => open_checked(&f.path, f.flags, &f.expect, f.how, ready, index, PrologueExit::OpenFile),
            };
            if fd != f.fd {
                if after_fork::dup_onto(fd, f.fd, f.flags & libc::O_CLOEXEC != 0).is_err() {
                    fail(PrologueExit::OpenFile);
                }
                after_fork::close(fd);
            }
            // A descriptor that cannot seek (a device) has no position to restore.
            if f.pos > 0 {
                let _ = after_fork::seek_to(f.fd, f.pos);
            }
        }
        // The working directory, opened here, entered after the container
        // is joined: like a forked process, the child keeps its parent's,
        // also when it is not inside the container's root (a seed working
        // in /tmp, which is private in a container).
        let cwd = if let Some(fd) = self.plan.cwd_held_by {
            // Kept open as the seed's descriptor: entered through a copy.
            after_fork::dup_at_or_above(fd, self.plan.uffd_fd + 1).unwrap_or_else(|_| fail(PrologueExit::Chdir))
        } else if let Some(elsewhere) = &self.plan.cwd_deleted {
            deleted_object(&self.plan.cwd, elsewhere, &DeletedKind::Directory, libc::O_PATH | libc::O_CLOEXEC)
                .unwrap_or_else(|()| fail(PrologueExit::Chdir))
        } else {
            open_checked(
                &self.plan.cwd,
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
                &self.plan.cwd_expect,
                IdentityMatch::SameObject,
                ready,
                CWD_INDEX,
                PrologueExit::Chdir,
            )
        };
        if let Some(entry) = &self.container {
            let Some(holder) = holder else { fail(PrologueExit::Container) };
            if after_fork::setns(holder, entry.join_flags).is_err() {
                fail(PrologueExit::Container);
            }
            after_fork::close(holder);
            if let Some(name) = &entry.hostname {
                if mitosis_sys::ns::sethostname(name.as_bytes()).is_err() {
                    fail(PrologueExit::Container);
                }
            }
        }
        if after_fork::fchdir(cwd).is_err() {
            fail(PrologueExit::Chdir);
        }
        after_fork::close(cwd);
        for a in &self.actions {
            if a.signo == libc::SIGKILL.unsigned_abs() || a.signo == libc::SIGSTOP.unsigned_abs() {
                continue;
            }
            let action = RawSigaction { handler: a.handler, flags: a.flags, restorer: a.restorer, mask: a.mask };
            if after_fork::set_raw_signal_action(&blocked, a.signo, &action).is_err() {
                fail(PrologueExit::Signals);
            }
        }
        if let Some(c) = &self.credentials {
            // Groups first: only root may set them.
            let set = after_fork::set_groups(&c.groups).and_then(|()| {
                if c.keep_for_restore != 0 && c.uid != 0 {
                    after_fork::set_ids_keeping(c.uid, c.gid, c.keep_for_restore)
                } else {
                    after_fork::set_ids(c.uid, c.gid)
                }
            });
            if set.is_err() {
                fail(PrologueExit::Credentials);
            }
        }
        // Nothing of the forker's stays open but `ready`, closed right after
        // it said so (the daemon sees end of file instead if the write
        // fails, and the exit code then): the seed's numbers are below
        // `high`, and the daemon may take the child over at any moment from
        // the write on.
        let _ = after_fork::close_range(high, ready - 1);
        let _ = after_fork::close_from(ready + 1);
        // Limits last, after the credentials (RLIMIT_NPROC counts the
        // seed's owner's processes) and once only `ready` is left of the
        // forker's descriptors; a limit below a descriptor in use does not
        // close it (the kernel checks limits when a resource is taken).
        for l in &self.properties.rlimits {
            if !LIMITS_SET_BY_RESTORE.contains(&l.resource) && set_limit_or_warn(l.resource, l.soft, l.hard, 2).is_err() {
                fail(PrologueExit::Properties);
            }
        }
        after_fork::set_umask(self.properties.umask);
        // After the credentials, which reset it. The kernel does not let a
        // process set 2 (dumpable by root only): such a seed's child is not
        // dumpable at all, which keeps it from its user just the same.
        let p = &self.properties;
        let dumpable = if p.dumpable == 1 { 1 } else { 0 };
        if after_fork::set_dumpable(dumpable).is_err()
            || after_fork::set_thp_disabled(p.thp_disabled).is_err()
            || after_fork::set_child_subreaper(p.child_subreaper).is_err()
        {
            fail(PrologueExit::Properties);
        }
        let _ = after_fork::write_all(ready, &[1]);
        after_fork::close(ready);
        after_fork::park()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_records_round_trip_and_name_the_file() {
        let plan = PrologueFiles {
            files: vec![PrologueFile {
                fd: 5,
                path: c"/srv/data".to_owned(),
                flags: libc::O_RDONLY,
                pos: 0,
                expect: FileIdentity::default(),
                how: IdentityMatch::SameObject,
                deleted: None,
            }],
            uffd_fd: 6,
            shared_pages_fd: None,
            cwd: c"/srv".to_owned(),
            cwd_expect: FileIdentity::default(),
            cwd_deleted: None,
            cwd_held_by: None,
        };
        let r = FileFailure::record(PrologueExit::OpenFile, 0, libc::EACCES);
        let f = FileFailure::parse(&r).unwrap();
        assert_eq!(f, FileFailure { code: 93, index: 0, errno: libc::EACCES });
        let text = f.describe(&plan, Some(1000));
        assert!(text.contains("/srv/data (descriptor 5) as the seed's owner (uid 1000)"), "{text}");
        let cwd = FileFailure::parse(&FileFailure::record(PrologueExit::FileChanged, CWD_INDEX, 0)).unwrap();
        assert_eq!(cwd.describe(&plan, None), "the seed's working directory /srv was replaced by another object since prepare: refused");
        let link = FileFailure::parse(&FileFailure::record(PrologueExit::OpenFile, 0, libc::ELOOP)).unwrap();
        assert!(link.describe(&plan, None).contains("symbolic link"));
        // A single byte (the ready mark) is not a failure record.
        assert_eq!(FileFailure::parse(&[1]), None);
        assert_eq!(PrologueExit::describe(98).map(|s| s.contains("replaced")), Some(true));
        assert_eq!(PrologueExit::describe(1), None);
    }

    #[test]
    fn identities_convert_field_by_field() {
        let id = fsid::identity_of_path(c"/").unwrap();
        let wire = identity_from_sys(id);
        assert_eq!((wire.file_type, wire.dev, wire.ino, wire.size), (id.file_type, id.dev, id.ino, id.size));
        assert_eq!((wire.rdev, wire.mtime_sec, wire.mtime_nsec), (id.rdev, id.mtime_sec, id.mtime_nsec));
        assert!(wire.matches(&wire, IdentityMatch::SameContent));
    }

    #[test]
    fn inputs_survive_postcard() {
        let p = Prologue {
            parent: 7,
            plan: PrologueFiles { files: vec![], uffd_fd: 3, shared_pages_fd: None, cwd: c"/".to_owned(), cwd_expect: FileIdentity::default(), cwd_deleted: None, cwd_held_by: None },
            actions: vec![],
            credentials: Some(Credentials { uid: 1, gid: 2, groups: vec![3], keep_for_restore: 0 }),
            container: Some(ContainerEntry { join_flags: libc::CLONE_NEWNS, hostname: Some(c"h".to_owned()) }),
            properties: ProcessProperties { umask: 0o27, dumpable: 1, ..ProcessProperties::default() },
        };
        let back: Prologue = postcard::from_bytes(&postcard::to_stdvec(&p).unwrap()).unwrap();
        assert_eq!((back.parent, back.plan.uffd_fd, back.credentials.unwrap().groups), (7, 3, vec![3]));
        assert_eq!(back.container.unwrap().hostname.as_deref(), Some(c"h"));
        assert_eq!(back.properties.umask, 0o27);
    }
}
