//! Deciding, before any process exists, how each part of a seed is given to a
//! child on this host, and refusing early with a clear message what cannot be.

use std::ffi::CString;

use serde::{Deserialize, Serialize};

use mitosis_prologue::{identity_from_sys, Deleted, DeletedKind, PrologueFile, PrologueFiles};
use mitosis_proto::image::{FileIdentity, IdentityMatch, OpenFile, Remade, SeedImage, VmaKind};
use mitosis_sys::fsid;
use mitosis_sys::vdso::VdsoInfo;

use crate::RestoreError;

/// Where a mapping's pages come from in the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Placement {
    /// Mapped from the local file (same file as on the seed host); `fd` is the
    /// prologue's descriptor for it.
    LocalFile { fd: i32 },
    /// Anonymous in the child, pages served by the pager from the seed.
    Remote,
    /// Private anonymous memory mapped privately from this host's shared
    /// copy of the seed's pages (descriptor `fd` of the prologue, read-only;
    /// offset = seed address), pages served by the pager: the seed's
    /// children here share every page none of them wrote.
    SharedCopy { fd: i32 },
    /// Not mapped by the table (vDSO, vsyscall).
    Kernel,
}

/// Everything decided about one resume of one seed on this host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestorePlan {
    /// One entry per image VMA, same order.
    pub placements: Vec<Placement>,
    /// What the prologue opens (the seed's descriptors, the files of its
    /// file mappings, its working directory) and where its userfaultfd goes.
    pub prologue: PrologueFiles,
    /// Descriptors `[map_fd_base, map_fd_end)` exist only to map files and are closed in the table.
    pub map_fd_base: i32,
    pub map_fd_end: i32,
    /// Descriptor of the executable for `PR_SET_MM_MAP`, if it is the same file here.
    pub exe_fd: Option<i32>,
    /// What the child may do during its restore beyond its seed's own rights.
    pub privilege: RestorePrivilege,
    /// Register the served ranges for write protection too (with
    /// `UFFD_FEATURE_WP_ASYNC`), so that the pager can tell which pages the
    /// child wrote: an offload then drops unchanged pages without sending them.
    pub track_writes: bool,
}

/// The rights a child holds while it is restored, which decide whether it
/// can take its seed's executable as `/proc/PID/exe` (`PR_SET_MM_MAP` with
/// an `exe_fd` needs `CAP_CHECKPOINT_RESTORE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestorePrivilege {
    /// A child of a seed of root: root throughout.
    Root,
    /// A child of another seed that kept `CAP_CHECKPOINT_RESTORE` across
    /// its prologue's change of ids; the restore drops it right after the
    /// layout, before anything else (and before any of the seed's code runs).
    CheckpointRestore,
    /// Neither (a daemon that is not root, a resume in place by its caller).
    Unprivileged,
}

impl AsRef<PrologueFiles> for RestorePlan {
    fn as_ref(&self) -> &PrologueFiles {
        &self.prologue
    }
}

impl RestorePlan {
    /// Checks the seed against this host and decides every placement.
    /// `process` is the process that becomes the child (as it is before the
    /// restore): the zygote's fork (our own executable) or the caller of a
    /// resume in place.
    pub fn new(image: &SeedImage, local_vdso: &VdsoInfo, process: i32, privilege: RestorePrivilege) -> Result<RestorePlan, RestoreError> {
        if image.vdso_hash != local_vdso.hash {
            return Err(RestoreError::Incompatible(format!(
                "the seed host runs kernel {} whose vDSO differs from this host's (kernel {}); resume it on a host with the same kernel",
                image.kernel,
                std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim()
            )));
        }
        let seed_layout: Vec<(String, u64)> =
            image.vmas.iter().filter(|v| v.kind == VmaKind::Vdso).map(|v| (v.name.clone(), v.len())).collect();
        if seed_layout != local_vdso.layout() {
            return Err(RestoreError::Incompatible(format!(
                "vDSO layout differs: seed {seed_layout:?}, here {:?}",
                local_vdso.layout()
            )));
        }
        // A deleted working directory is made again, empty, and deleted
        // again by the prologue, at its path if that is free here, else
        // beside it, else (the child may not write there) in /tmp: the
        // child's getcwd then names that.
        let (cwd, cwd_deleted) = match image.cwd.strip_suffix(" (deleted)") {
            Some(path) => {
                let (here, elsewhere) = remade_paths(path, &format!("/tmp/mitosis-deleted-cwd-{}", image.id))?;
                (here, Some(elsewhere))
            }
            None => {
                let cwd = cstring(&image.cwd)?;
                check_here(&cwd, &image.cwd_identity, IdentityMatch::SameObject)
                    .map_err(|why| why.error(format!("the seed's working directory {}", image.cwd)))?;
                (cwd, None)
            }
        };
        let mut files = Vec::new();
        for f in &image.files {
            // A deleted directory, link or device is made again (a directory
            // empty) and deleted again by the prologue, as a deleted
            // working directory is.
            let deleted = f.path.strip_suffix(" (deleted)").zip(deleted_kind(f)?);
            let (path, deleted) = match deleted {
                Some((path, (kind, what))) => {
                    let (here, elsewhere) = remade_paths(path, &format!("/tmp/mitosis-deleted-{what}-{}-{}", image.id, f.fd))?;
                    (here, Some(Deleted { elsewhere, kind }))
                }
                None => {
                    let path = cstring(&f.path)?;
                    check_here(&path, &f.identity, IdentityMatch::SameObject)
                        .map_err(|why| why.error(format!("descriptor {} of the seed is {}, which", f.fd, f.path)))?;
                    (path, None)
                }
            };
            files.push(PrologueFile {
                fd: f.fd,
                path,
                flags: f.flags,
                pos: f.pos,
                expect: f.identity,
                how: IdentityMatch::SameObject,
                deleted,
            });
        }
        // A deleted working directory the seed also holds open is that one.
        let held = |f: &&PrologueFile| f.holds_deleted_directory() && f.expect.matches(&image.cwd_identity, IdentityMatch::SameObject);
        let cwd_held_by = cwd_deleted.as_ref().and_then(|_| files.iter().find(held)).map(|f| f.fd);
        // Above every number the seed's descriptors take, reopened or recreated.
        let highest = image.files.iter().map(|f| f.fd).max().max(mitosis_proto::descriptors::highest_fd(&image.carried));
        let map_fd_base = highest.map_or(3, |fd| fd + 1).max(3);
        let mut next_fd = map_fd_base;
        let mut placements = Vec::with_capacity(image.vmas.len());
        for v in &image.vmas {
            let p = match &v.kind {
                VmaKind::Vdso | VmaKind::Vsyscall => Placement::Kernel,
                VmaKind::Anon | VmaKind::SharedAnon | VmaKind::Opaque { .. } => Placement::Remote,
                VmaKind::File { path, identity, .. } => {
                    if local_copy_is(path, identity) {
                        let fd = mapping_fd(&mut files, &mut next_fd, path, identity, libc::O_RDONLY, IdentityMatch::SameContent)?;
                        Placement::LocalFile { fd }
                    } else {
                        Placement::Remote
                    }
                }
                // Shared with the file: only the file itself will do, with
                // whatever it holds now (as after fork()), so the same object
                // rather than the same content.
                VmaKind::SharedFile { path, identity, may_write, .. } => {
                    if !is_here(path, identity, IdentityMatch::SameObject) {
                        return Err(RestoreError::Incompatible(format!(
                            "the seed maps {path} shared ({:#x}-{:#x}), and that file is not the same here (or not here at all): a child must map the very file",
                            v.start, v.end
                        )));
                    }
                    let access = if *may_write { libc::O_RDWR } else { libc::O_RDONLY };
                    Placement::LocalFile { fd: mapping_fd(&mut files, &mut next_fd, path, identity, access, IdentityMatch::SameObject)? }
                }
            };
            placements.push(p);
        }
        let exe_fd = match &image.exe {
            // When the process already runs the seed's executable (a fork of the
            // daemon for a seed of our binary, or a resume in place of a seed of
            // the caller's own program), /proc/PID/exe is already right, and
            // the kernel refuses to replace an executable that the seed maps again.
            Some((path, identity))
                if local_copy_is(path, identity)
                    && privilege != RestorePrivilege::Unprivileged
                    && exe_identity(process).as_ref() != Some(identity) =>
            {
                Some(mapping_fd(&mut files, &mut next_fd, path, identity, libc::O_RDONLY, IdentityMatch::SameContent)?)
            }
            _ => None,
        };
        Ok(RestorePlan {
            placements,
            prologue: PrologueFiles { files, uffd_fd: next_fd, shared_pages_fd: None, cwd, cwd_expect: image.cwd_identity, cwd_deleted, cwd_held_by },
            map_fd_base,
            map_fd_end: next_fd,
            exe_fd,
            privilege,
            track_writes: false,
        })
    }

    /// Maps the child's private anonymous memory from this host's shared
    /// copy of the seed's pages, which the prologue gets at a descriptor of
    /// its own (closed with the mapping descriptors, before any of the
    /// seed's code runs). Stacks (they grow down), and droppable and
    /// wipe-on-fork mappings (the kernel allows those for anonymous memory
    /// only) stay anonymous. Returns whether any mapping comes from the copy.
    pub fn map_from_shared_copy(&mut self, image: &SeedImage) -> bool {
        let fd = self.prologue.uffd_fd;
        let mut any = false;
        for (v, p) in image.vmas.iter().zip(&mut self.placements) {
            if *p == Placement::Remote && v.kind == VmaKind::Anon && !v.is_stack() && !v.zero_in_child() {
                *p = Placement::SharedCopy { fd };
                any = true;
            }
        }
        if any {
            self.prologue.shared_pages_fd = Some(fd);
            self.prologue.uffd_fd = fd + 1;
            self.map_fd_end = fd + 1;
        }
        any
    }

    /// Address ranges whose pages the pager serves: remote mappings (with
    /// `true` where mapped from the shared copy), and the written pages of
    /// locally mapped files.
    pub fn served_ranges(&self, image: &SeedImage) -> Vec<(u64, u64, bool)> {
        let mut out = Vec::new();
        for (v, p) in image.vmas.iter().zip(&self.placements) {
            match p {
                Placement::Remote | Placement::SharedCopy { .. } if v.zero_in_child() => {}
                Placement::Remote | Placement::SharedCopy { .. } => {
                    let from_copy = matches!(p, Placement::SharedCopy { .. });
                    // Guard regions have no pages: the ranges around them.
                    let mut from = v.start;
                    for &(s, e) in &v.guards {
                        if s > from {
                            out.push((from, s, from_copy));
                        }
                        from = e;
                    }
                    if from < v.end {
                        out.push((from, v.end, from_copy));
                    }
                }
                Placement::LocalFile { .. } => out.extend(v.written.iter().map(|&(s, e)| (s, e, false))),
                Placement::Kernel => {}
            }
        }
        out
    }
}

/// The prologue's descriptor for the local file `path` opened with `access`,
/// which must match `identity` as `how` says; opened once however many
/// mappings (and the executable) use it alike, at the next free number.
fn mapping_fd(
    files: &mut Vec<PrologueFile>,
    next_fd: &mut i32,
    path: &str,
    identity: &FileIdentity,
    access: i32,
    how: IdentityMatch,
) -> Result<i32, RestoreError> {
    let flags = access | libc::O_CLOEXEC;
    if let Some(f) = files.iter().find(|f| f.how == how && f.path.as_bytes() == path.as_bytes() && f.flags == flags) {
        return Ok(f.fd);
    }
    let fd = *next_fd;
    *next_fd += 1;
    files.push(PrologueFile {
        fd,
        path: cstring(path)?,
        flags,
        pos: 0,
        expect: *identity,
        how,
        deleted: None,
    });
    Ok(fd)
}

/// What `path` names on this host, reached without any symbolic link (but
/// the last part when `of_link`: then the link itself).
fn identity_here(path: &std::ffi::CStr, of_link: bool) -> Result<FileIdentity, i32> {
    let link = if of_link { libc::O_NOFOLLOW } else { 0 };
    let fd = fsid::open_no_symlinks(path, libc::O_PATH | libc::O_CLOEXEC | link)?;
    let id = fsid::identity_of_fd(fd);
    fsid::close(fd);
    id.map(identity_from_sys)
}

/// Why a path does not name the object recorded at prepare.
enum Mismatch {
    /// It is not on this host: the seed cannot run here.
    Missing(String),
    /// It is another object, or behind a symbolic link: never given to a child.
    Replaced(String),
}

impl Mismatch {
    /// The error, with `what` (the start of the sentence) before the reason.
    fn error(self, what: String) -> RestoreError {
        match self {
            Mismatch::Missing(why) => RestoreError::Incompatible(format!("{what} {why}")),
            Mismatch::Replaced(why) => RestoreError::Refused(format!("{what} {why}")),
        }
    }
}

/// Checks that `path` names the object recorded at prepare, reached without
/// symbolic links; otherwise says what is wrong (the end of a sentence).
/// The prologue checks again when it opens the path (as the seed's owner):
/// this check is for a clear message.
fn check_here(path: &std::ffi::CStr, expect: &FileIdentity, how: IdentityMatch) -> Result<(), Mismatch> {
    // A symbolic link the seed held itself (O_PATH) is the last part of its path.
    match identity_here(path, expect.file_type == fsid::TYPE_SYMLINK) {
        Ok(found) if expect.matches(&found, how) => Ok(()),
        Ok(_) => Err(Mismatch::Replaced("is no longer the object the seed had open at prepare (it was replaced since)".into())),
        Err(libc::ENOENT) => Err(Mismatch::Missing("does not exist on this host".into())),
        Err(libc::ELOOP) => Err(Mismatch::Replaced(
            "is now reached through a symbolic link (replaced since prepare?), and links are never followed".into(),
        )),
        Err(e) => Err(Mismatch::Missing(format!("cannot be looked up: {}", std::io::Error::from_raw_os_error(e)))),
    }
}

/// Whether the local file at `path` (reached without symbolic links) holds
/// exactly the bytes the seed mapped, so that children may map it.
fn local_copy_is(path: &str, identity: &FileIdentity) -> bool {
    is_here(path, identity, IdentityMatch::SameContent)
}

/// Whether the file at `path` on this host matches `identity` as `how` says.
fn is_here(path: &str, identity: &FileIdentity, how: IdentityMatch) -> bool {
    let Ok(path) = CString::new(path) else { return false };
    check_here(&path, identity, how).is_ok()
}

/// What the prologue makes again for a seed's descriptor whose object had
/// lost its name, and a word for its fallback path; `None` for an object
/// that is not made again.
fn deleted_kind(f: &OpenFile) -> Result<Option<(DeletedKind, &'static str)>, RestoreError> {
    Ok(match (f.identity.file_type, &f.remade) {
        (fsid::TYPE_DIRECTORY, _) => Some((DeletedKind::Directory, "dir")),
        (fsid::TYPE_SYMLINK, Some(Remade::Symlink { target })) => Some((DeletedKind::Symlink { target: cstring(target)? }, "link")),
        (fsid::TYPE_CHAR_DEVICE, Some(Remade::CharDevice { permissions })) => {
            Some((DeletedKind::CharDevice { permissions: *permissions, rdev: f.identity.rdev }, "dev"))
        }
        _ => None,
    })
}

/// Where the prologue makes a deleted object of the seed's again: at
/// its `path` (or beside it, when taken), else at `fallback` (in /tmp, for
/// a child that may not write there), each free on this host.
fn remade_paths(path: &str, fallback: &str) -> Result<(CString, CString), RestoreError> {
    Ok((cstring(&free_path_near(path))?, cstring(&free_path_near(fallback))?))
}

/// `path` if nothing is there on this host, else a free name beside it.
fn free_path_near(path: &str) -> String {
    let free = |p: &str| std::fs::symlink_metadata(p).is_err();
    if free(path) {
        return path.to_string();
    }
    (1..)
        .map(|n| format!("{path}.mitosis-{}-{n}", std::process::id()))
        .find(|p| free(p))
        .unwrap_or_else(|| path.to_string())
}

/// The identity of the file at the path of the executable process `pid` runs.
fn exe_identity(pid: i32) -> Option<FileIdentity> {
    let path = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let path = CString::new(path.to_str()?).ok()?;
    fsid::identity_of_path(&path).ok().map(identity_from_sys)
}

fn cstring(s: &str) -> Result<CString, RestoreError> {
    CString::new(s).map_err(|_| RestoreError::Incompatible(format!("path {s:?} contains a NUL byte")))
}
