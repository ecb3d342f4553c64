//! The seed's file locks and leases, taken again by the child through the
//! files its prologue reopened. A child continues as the process that held
//! them and would believe it still does: one it cannot take (another
//! process holds a conflicting one, such as the seed itself on this host)
//! fails the resume, never passes in silence.

use mitosis_proto::image::{FileLock, LockKind, OpenFile};

use crate::fds::Injector;
use crate::RestoreError;

const F_SETLEASE: u64 = 1024;
const F_OFD_SETLK: u64 = 37;

/// Takes every lock and lease of `files` in the child (their descriptors are
/// open there already).
pub(crate) fn take(injector: &Injector<'_>, files: &[OpenFile]) -> Result<(), RestoreError> {
    for f in files {
        for lock in &f.locks {
            let fd = u64::from(f.fd.unsigned_abs());
            let what = format!("taking the seed's {} on {} again", describe(lock), f.path);
            let taken = match lock.kind {
                LockKind::Posix | LockKind::OpenFileDescription => {
                    injector.put(&flock_bytes(lock), &what)?;
                    let cmd = if lock.kind == LockKind::Posix { libc::F_SETLK.unsigned_abs().into() } else { F_OFD_SETLK };
                    injector.call(libc::SYS_fcntl, &[fd, cmd, injector.slot], &what)
                }
                LockKind::Flock => {
                    let how = if lock.write { libc::LOCK_EX } else { libc::LOCK_SH } | libc::LOCK_NB;
                    injector.call(libc::SYS_flock, &[fd, how.unsigned_abs().into()], &what)
                }
                LockKind::Lease => injector.call(libc::SYS_fcntl, &[fd, F_SETLEASE, lock_type(lock).unsigned_abs().into()], &what),
            };
            match taken {
                Ok(_) => {}
                Err(RestoreError::Sys { source, .. }) if source.errno == libc::EAGAIN => {
                    return Err(RestoreError::Incompatible(format!(
                        "the seed held a {} on {}, which another process holds now (the seed itself, if it runs on this host): a child cannot take it",
                        describe(lock),
                        f.path
                    )))
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// `F_RDLCK` or `F_WRLCK`.
fn lock_type(lock: &FileLock) -> i32 {
    if lock.write { libc::F_WRLCK } else { libc::F_RDLCK }
}

/// A `struct flock` for a record lock: type, whence (`SEEK_SET`), start,
/// length (0: to the end of the file), pid (0).
fn flock_bytes(lock: &FileLock) -> Vec<u8> {
    let mut b = vec![0u8; 32];
    b[0..2].copy_from_slice(&i16::try_from(lock_type(lock)).unwrap_or(0).to_ne_bytes());
    b[8..16].copy_from_slice(&lock.start.to_ne_bytes());
    let len = lock.end.map_or(0, |end| end.saturating_sub(lock.start) + 1);
    b[16..24].copy_from_slice(&len.to_ne_bytes());
    b
}

fn describe(lock: &FileLock) -> String {
    let access = if lock.write { "write" } else { "read" };
    match lock.kind {
        LockKind::Posix => format!("POSIX {access} lock"),
        LockKind::OpenFileDescription => format!("open file description {access} lock"),
        LockKind::Flock => format!("flock {access} lock"),
        LockKind::Lease => format!("{access} lease"),
    }
}
