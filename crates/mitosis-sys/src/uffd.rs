//! userfaultfd: the kernel interface that lets the pager serve a child's
//! missing pages. See userfaultfd(2) and ioctl_userfaultfd(2).
//!
//! Differences from the `userfaultfd` crate that made us write our own ~150
//! lines: the descriptor is an `OwnedFd` (it usually comes from another
//! process via `pidfd_getfd`), `UFFDIO_COPY`'s result is read as the signed
//! value it is (`-EAGAIN` is not a huge partial copy), and POISON is offered.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::{Result, SysError, PAGE};

const UFFD_API: u64 = 0xAA;
const fn iowr(nr: u64, size: usize) -> u64 {
    (3 << 30) | ((size as u64) << 16) | (0xAA << 8) | nr
}
const fn ior(nr: u64, size: usize) -> u64 {
    (2 << 30) | ((size as u64) << 16) | (0xAA << 8) | nr
}

#[repr(C)]
struct Api {
    api: u64,
    features: u64,
    ioctls: u64,
}
#[repr(C)]
#[derive(Clone, Copy)]
struct Range {
    start: u64,
    len: u64,
}
#[repr(C)]
struct Register {
    range: Range,
    mode: u64,
    ioctls: u64,
}
#[repr(C)]
struct Copy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}
#[repr(C)]
struct Continue {
    range: Range,
    mode: u64,
    mapped: i64,
}
#[repr(C)]
struct ZeroOrPoison {
    range: Range,
    mode: u64,
    result: i64,
}

const UFFDIO_API: u64 = iowr(0x3F, std::mem::size_of::<Api>());
const UFFDIO_REGISTER: u64 = iowr(0x00, std::mem::size_of::<Register>());
const UFFDIO_WAKE: u64 = ior(0x02, std::mem::size_of::<Range>());
const UFFDIO_COPY: u64 = iowr(0x03, std::mem::size_of::<Copy>());
const UFFDIO_ZEROPAGE: u64 = iowr(0x04, std::mem::size_of::<ZeroOrPoison>());
const UFFDIO_CONTINUE: u64 = iowr(0x07, std::mem::size_of::<Continue>());
const UFFDIO_POISON: u64 = iowr(0x08, std::mem::size_of::<ZeroOrPoison>());

/// Feature bits for [`Uffd::api`].
pub mod features {
    pub const EVENT_FORK: u64 = 1 << 1;
    pub const EVENT_REMAP: u64 = 1 << 2;
    pub const EVENT_REMOVE: u64 = 1 << 3;
    pub const EVENT_UNMAP: u64 = 1 << 6;
    /// Minor faults in shmem mappings: a touch of a page the file holds
    /// but the process does not map yet stops for the monitor, which maps
    /// it with [`super::Uffd::map_from_file`] (or gives something else).
    pub const MINOR_SHMEM: u64 = 1 << 10;
    pub const POISON: u64 = 1 << 14;
    /// Write-protect faults resolved by the kernel itself: a write to a
    /// protected page only clears its protection bit, which `PAGEMAP_SCAN`
    /// reports ([`crate::mem::resident_runs`]): write tracking at no cost
    /// to the monitor.
    pub const WP_ASYNC: u64 = 1 << 15;
    /// What a pager follows a process's memory with (every event that
    /// changes what a page should read, and poisoning); add [`WP_ASYNC`]
    /// for write tracking.
    pub const PAGER: u64 = EVENT_FORK | EVENT_REMAP | EVENT_REMOVE | EVENT_UNMAP | POISON;
}

const MODE_MISSING: u64 = 1;
const MODE_WP: u64 = 1 << 1;
const MODE_MINOR: u64 = 1 << 2;
const PAGEFAULT_FLAG_WRITE: u64 = 1;
const CONTINUE_MODE_WP: u64 = 1 << 1;
/// `UFFDIO_COPY_MODE_WP`: the copied pages start write-protected.
const COPY_MODE_WP: u64 = 1 << 1;

const EVENT_PAGEFAULT: u8 = 0x12;
const EVENT_FORK: u8 = 0x13;
const EVENT_REMAP: u8 = 0x14;
const EVENT_REMOVE: u8 = 0x15;
const EVENT_UNMAP: u8 = 0x16;

/// One message read from a userfaultfd.
#[derive(Debug)]
pub enum Event {
    /// A thread touched a missing page at this address; `write`: to write it.
    Fault { addr: u64, write: bool },
    /// The process forked; the child's memory is served through this new
    /// descriptor, which the kernel installed in our table for us to own.
    Fork { uffd: Uffd },
    /// `mremap` moved `[from, from+len)` to `to`.
    Remap { from: u64, to: u64, len: u64 },
    /// `madvise(DONTNEED/REMOVE)` dropped these pages: they now read as zero.
    Remove { start: u64, end: u64 },
    /// `munmap` removed these pages.
    Unmap { start: u64, end: u64 },
    Unknown(u8),
}

/// Outcome of a copy into the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyResult {
    Done,
    /// The kernel asks to read pending events first (`mmap_changing`); `copied` bytes went in.
    Again { copied: u64 },
    /// The process's memory is gone (it exited).
    Gone,
    /// The kernel refused the operation (errno).
    Failed(i32),
}

/// `USERFAULTFD_IOC_NEW` of `/dev/userfaultfd`: `_IO(0xAA, 0x00)`. Its
/// argument is the new descriptor's flags; it makes a userfaultfd for the
/// memory of whichever process calls it.
pub const USERFAULTFD_IOC_NEW: u64 = 0xAA << 8;

/// Opens `/dev/userfaultfd` (close-on-exec) for a process that must make a
/// userfaultfd *inside another process*: a descriptor of the device, passed
/// to a process that may not open it itself, lets it call
/// [`USERFAULTFD_IOC_NEW`] with no privilege of its own (the kernel checks
/// only who opened the device). The daemon adopts a running process's
/// memory this way (`mitosis_capture::freeze::Frozen::adopt_userfaultfd`).
pub fn open_device() -> Result<OwnedFd> {
    // SAFETY: a static NUL-terminated path.
    let fd = unsafe { libc::open(c"/dev/userfaultfd".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(SysError::last("open(/dev/userfaultfd)"));
    }
    // SAFETY: a new descriptor owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Creates a userfaultfd for the calling process with `flags` (`O_CLOEXEC`,
/// `O_NONBLOCK`) and returns the raw descriptor, which the caller owns.
/// Allocation-free and async-signal-safe (raw system calls on a static
/// path): the restore prologue calls it in a freshly forked child, and in
/// the caller's own process for a resume in place.
///
/// The userfaultfd(2) system call makes a descriptor that also handles
/// faults of the kernel's own accesses (a `read(2)` into a page not fetched
/// yet) only for a caller with `CAP_SYS_PTRACE`, or for everyone when
/// `vm.unprivileged_userfaultfd` is 1; otherwise it fails with EPERM. Then
/// `/dev/userfaultfd` (Linux 6.1) is tried: it makes the same descriptors
/// for whoever may open it, which the administrator grants through its
/// owner, group and mode. If neither works the error is the system call's
/// EPERM.
///
/// `UFFD_USER_MODE_ONLY`, which needs no privilege, is not an option: the
/// kernel's accesses to a missing page would fail with EFAULT instead of
/// waiting for the page, so a child's system calls would fail where its
/// parent's worked.
pub fn create_raw(flags: i32) -> Result<RawFd> {
    // SAFETY: plain integer flags; a new descriptor is returned.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
    if fd >= 0 {
        return crate::fd_of(fd, "userfaultfd");
    }
    let denied = SysError::last("userfaultfd");
    if denied.errno != libc::EPERM {
        return Err(denied);
    }
    // SAFETY: a static NUL-terminated path.
    let dev = unsafe { libc::open(c"/dev/userfaultfd".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if dev < 0 {
        return Err(denied);
    }
    // SAFETY: USERFAULTFD_IOC_NEW takes the flags as its plain integer argument.
    let fd = unsafe { libc::ioctl(dev, USERFAULTFD_IOC_NEW as _, flags) };
    let result = if fd < 0 { Err(SysError::last("ioctl(/dev/userfaultfd, USERFAULTFD_IOC_NEW)")) } else { Ok(fd) };
    // SAFETY: `dev` is ours, opened above; the new userfaultfd does not need it.
    unsafe { libc::close(dev) };
    result
}

/// A userfaultfd descriptor.
#[derive(Debug)]
pub struct Uffd(OwnedFd);

impl Uffd {
    /// Wraps a descriptor that is a userfaultfd.
    pub fn from_fd(fd: OwnedFd) -> Uffd {
        Uffd(fd)
    }

    /// Creates one for the calling process (non-blocking, close-on-exec),
    /// as [`create_raw`] does.
    pub fn create() -> Result<Uffd> {
        let fd = create_raw(libc::O_CLOEXEC | libc::O_NONBLOCK)?;
        // SAFETY: fresh descriptor owned by nobody else.
        Ok(Uffd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    fn ioctl<T>(&self, req: u64, arg: &mut T, op: &'static str) -> Result<()> {
        // SAFETY: `arg` is the struct type the request is defined with.
        let r = unsafe { libc::ioctl(self.raw(), req as _, arg as *mut T) };
        if r < 0 {
            return Err(SysError::last(op));
        }
        Ok(())
    }

    /// The API handshake; must come first and only once. Fails when a feature is missing.
    pub fn api(&self, wanted: u64) -> Result<()> {
        let mut a = Api { api: UFFD_API, features: wanted, ioctls: 0 };
        self.ioctl(UFFDIO_API, &mut a, "UFFDIO_API")?;
        if a.features & wanted != wanted {
            return Err(SysError::new("UFFDIO_API: kernel lacks a needed feature", libc::ENOTSUP));
        }
        Ok(())
    }

    /// Registers `[start, start+len)` for missing-page faults.
    pub fn register_missing(&self, start: u64, len: u64) -> Result<()> {
        self.register(start, len, false)
    }

    /// Registers `[start, start+len)` for missing-page faults and, with
    /// `track_writes`, for write protection too (with [`features::WP_ASYNC`]:
    /// pages copied in with [`Uffd::copy_protected`] then tell whether they
    /// were written since). Works from any process holding the descriptor:
    /// the range is in the memory the descriptor was made for.
    pub fn register(&self, start: u64, len: u64, track_writes: bool) -> Result<()> {
        self.register_modes(start, len, MODE_MISSING, track_writes)
    }

    fn register_modes(&self, start: u64, len: u64, modes: u64, track_writes: bool) -> Result<()> {
        let mode = modes | if track_writes { MODE_WP } else { 0 };
        let mut r = Register { range: Range { start, len }, mode, ioctls: 0 };
        self.ioctl(UFFDIO_REGISTER, &mut r, "UFFDIO_REGISTER")
    }

    /// Registers `[start, start+len)`, a private mapping of a shmem file
    /// (a memfd), for missing-page faults (the file lacks the page) and
    /// minor faults (the file has it, the process does not map it yet):
    /// every first touch stops for the monitor, who decides what the page
    /// reads. With `track_writes`, for write protection too, as
    /// [`Uffd::register`]. Needs [`features::MINOR_SHMEM`].
    pub fn register_file_backed(&self, start: u64, len: u64, track_writes: bool) -> Result<()> {
        self.register_modes(start, len, MODE_MISSING | MODE_MINOR, track_writes)
    }

    /// Maps the file's pages at `[dst, dst+len)` (`UFFDIO_CONTINUE`) and
    /// wakes the threads faulting there. In a private mapping they are
    /// mapped read-only and shared with every other mapping of the file:
    /// a write copies the page (the process's own from then on), and the
    /// file keeps its content. With `protect`, write-protected as
    /// [`Uffd::copy_protected`]. Pages already mapped are skipped. A page
    /// the file does not hold stops it: `Failed(EFAULT)`.
    pub fn map_from_file(&self, dst: u64, len: u64, protect: bool) -> CopyResult {
        let mode = if protect { CONTINUE_MODE_WP } else { 0 };
        fill_pages(len, |done| {
            let mut c = Continue { range: Range { start: dst + done, len: len - done }, mode, mapped: 0 };
            // SAFETY: struct of the type the request is defined with.
            let r = unsafe { libc::ioctl(self.raw(), UFFDIO_CONTINUE as _, &mut c) };
            (r, c.mapped)
        })
    }

    /// Copies `src` into the child at `dst` and wakes its faulting threads. Pages
    /// that are already present are skipped (another fault got there first).
    pub fn copy(&self, dst: u64, src: &[u8]) -> CopyResult {
        self.copy_mode(dst, src, 0)
    }

    /// [`Uffd::copy`], with the pages write-protected: in a range registered
    /// with `track_writes`, their first write is what marks them written.
    pub fn copy_protected(&self, dst: u64, src: &[u8]) -> CopyResult {
        self.copy_mode(dst, src, COPY_MODE_WP)
    }

    fn copy_mode(&self, dst: u64, src: &[u8], mode: u64) -> CopyResult {
        let len = src.len() as u64;
        fill_pages(len, |done| {
            let mut c = Copy { dst: dst + done, src: src.as_ptr() as u64 + done, len: len - done, mode, copy: 0 };
            // SAFETY: `src` is a live buffer of `len` bytes; the kernel copies from it.
            let r = unsafe { libc::ioctl(self.raw(), UFFDIO_COPY as _, &mut c) };
            (r, c.copy)
        })
    }

    /// Maps zero pages at `[start, start+len)`.
    pub fn zero(&self, start: u64, len: u64) -> CopyResult {
        self.range_op(UFFDIO_ZEROPAGE, start, len)
    }

    /// Marks `[start, start+len)` poisoned: touching it raises SIGBUS instead of
    /// reading anything. Used when a page cannot be fetched.
    pub fn poison(&self, start: u64, len: u64) -> CopyResult {
        self.range_op(UFFDIO_POISON, start, len)
    }

    /// Zero-fills or poisons every page of `[start, start+len)` that is not
    /// there yet. The kernel stops at the first page that is (EEXIST, or
    /// EAGAIN with the bytes done before it): that page is skipped and the
    /// rest goes on, so that a run with a page already in it (a page
    /// poisoned on its own when it could not be fetched) is still done to
    /// its end. EAGAIN with nothing done is the kernel waiting for memory
    /// events to be read ([`CopyResult::Again`]).
    fn range_op(&self, req: u64, start: u64, len: u64) -> CopyResult {
        let mut done = 0u64;
        while done < len {
            let mut z = ZeroOrPoison { range: Range { start: start + done, len: len - done }, mode: 0, result: 0 };
            // SAFETY: struct of the type the request is defined with.
            let r = unsafe { libc::ioctl(self.raw(), req as _, &mut z) };
            if r == 0 {
                return CopyResult::Done;
            }
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            match errno {
                // Stopped at a page that is there: the bytes before it are done.
                libc::EAGAIN if z.result > 0 => done += z.result.unsigned_abs(),
                libc::EEXIST => done += PAGE,
                libc::EAGAIN => return CopyResult::Again { copied: done },
                libc::ESRCH => return CopyResult::Gone,
                errno => return CopyResult::Failed(errno),
            }
        }
        CopyResult::Done
    }

    /// Wakes threads waiting on `[start, start+len)` (after another path filled it).
    pub fn wake(&self, start: u64, len: u64) {
        let mut r = Range { start, len };
        let _ = self.ioctl(UFFDIO_WAKE, &mut r, "UFFDIO_WAKE");
    }

    /// Tells whether the process behind this descriptor still has its memory:
    /// a copy to an address below any mapping fails with ENOENT while the
    /// memory lives and ESRCH once the process has exited.
    pub fn memory_alive(&self, probe_addr: u64) -> bool {
        let page = [0u8; crate::usize_of(PAGE)];
        let mut c = Copy { dst: probe_addr, src: page.as_ptr() as u64, len: PAGE, mode: 0, copy: 0 };
        // SAFETY: valid source page; the destination is an address with no registered mapping.
        let r = unsafe { libc::ioctl(self.raw(), UFFDIO_COPY as _, &mut c) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    }

    /// Waits up to `timeout_ms` until a message can be read.
    pub fn wait_readable(&self, timeout_ms: i32) {
        let mut p = libc::pollfd { fd: self.raw(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, timeout_ms) };
    }

    /// Reads pending messages without blocking (at most `max`).
    pub fn read_events(&self, out: &mut Vec<Event>, max: usize) -> Result<()> {
        const MSG: usize = 32;
        let mut buf = vec![0u8; MSG * max];
        // SAFETY: buf has room for `max` messages.
        let n = unsafe { libc::read(self.raw(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = SysError::last("read(userfaultfd)");
            if e.errno == libc::EAGAIN {
                return Ok(());
            }
            return Err(e);
        }
        // n >= 0 here: failures returned above.
        for m in buf[..n.unsigned_abs()].chunks_exact(MSG) {
            let u64_at = |o: usize| u64::from_ne_bytes(m[o..o + 8].try_into().unwrap());
            let ev = match m[0] {
                EVENT_PAGEFAULT => Event::Fault { addr: u64_at(16) & !(PAGE - 1), write: u64_at(8) & PAGEFAULT_FLAG_WRITE != 0 },
                EVENT_FORK => {
                    let raw = RawFd::from_ne_bytes(m[8..12].try_into().unwrap());
                    // SAFETY: the kernel installed this new descriptor in our
                    // table while delivering the message; nobody else has it.
                    Event::Fork { uffd: Uffd(unsafe { OwnedFd::from_raw_fd(raw) }) }
                }
                EVENT_REMAP => Event::Remap { from: u64_at(8), to: u64_at(16), len: u64_at(24) },
                EVENT_REMOVE => Event::Remove { start: u64_at(8), end: u64_at(16) },
                EVENT_UNMAP => Event::Unmap { start: u64_at(8), end: u64_at(16) },
                other => Event::Unknown(other),
            };
            out.push(ev);
        }
        Ok(())
    }
}

/// Runs a page-filling ioctl over `len` bytes until all are in: `step`
/// gets the bytes done so far, makes the call for the rest and returns its
/// result and the bytes it filled. A page already there (EEXIST) is skipped
/// and the rest goes on; EAGAIN (memory events to read first) and ESRCH
/// (the process is gone) end it.
fn fill_pages(len: u64, mut step: impl FnMut(u64) -> (i32, i64)) -> CopyResult {
    let mut done = 0u64;
    while done < len {
        let (r, filled) = step(done);
        if r == 0 {
            return CopyResult::Done;
        }
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        if filled > 0 {
            done += filled.unsigned_abs();
        }
        match errno {
            libc::EEXIST => done += PAGE,
            libc::EAGAIN => return CopyResult::Again { copied: done },
            libc::ESRCH => return CopyResult::Gone,
            errno => return CopyResult::Failed(errno),
        }
    }
    CopyResult::Done
}

impl AsRawFd for Uffd {
    fn as_raw_fd(&self) -> RawFd {
        self.raw()
    }
}

impl std::os::fd::AsFd for Uffd {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usize_of;

    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        assert_eq!(UFFDIO_API, 0xc018aa3f);
        assert_eq!(UFFDIO_REGISTER, 0xc020aa00);
        assert_eq!(UFFDIO_COPY, 0xc028aa03);
        assert_eq!(UFFDIO_ZEROPAGE, 0xc020aa04);
        assert_eq!(UFFDIO_WAKE, 0x8010aa02);
    }

    /// Four registered pages of this process, and its userfaultfd.
    fn registered_pages() -> (Uffd, u64) {
        let uffd = Uffd::create().expect("userfaultfd (run as root)");
        uffd.api(0).unwrap();
        // SAFETY: a fresh private anonymous mapping nobody else uses.
        let base = unsafe {
            libc::mmap(std::ptr::null_mut(), usize_of(4 * PAGE), libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        assert_ne!(base, libc::MAP_FAILED);
        let base = base as u64;
        uffd.register_missing(base, 4 * PAGE).unwrap();
        (uffd, base)
    }

    /// Whether a zero page can still go in at `addr` (it cannot where a
    /// page or a poison marker is). Never touches the page itself.
    fn empty(uffd: &Uffd, addr: u64) -> bool {
        let mut z = ZeroOrPoison { range: Range { start: addr, len: PAGE }, mode: 0, result: 0 };
        match uffd.ioctl(UFFDIO_ZEROPAGE, &mut z, "UFFDIO_ZEROPAGE") {
            Ok(()) => true,
            Err(e) if e.errno == libc::EEXIST => false,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn poisoning_a_run_goes_on_past_pages_already_there() {
        let (uffd, base) = registered_pages();
        // Page 0 poisoned on its own (it could not be fetched), page 2 served.
        assert_eq!(uffd.poison(base, PAGE), CopyResult::Done);
        assert_eq!(uffd.copy(base + 2 * PAGE, &[7u8; usize_of(PAGE)]), CopyResult::Done);
        assert_eq!(uffd.poison(base, 4 * PAGE), CopyResult::Done);
        for page in [1, 3] {
            assert!(!empty(&uffd, base + page * PAGE), "page {page} was left unpoisoned");
        }
        // The served page is untouched.
        // SAFETY: page 2 is present (copied above), so reading it faults nothing.
        assert_eq!(unsafe { *((base + 2 * PAGE) as *const u8) }, 7);
        // SAFETY: the mapping made above, not used any more.
        unsafe { libc::munmap(base as *mut libc::c_void, usize_of(4 * PAGE)) };
    }

    #[test]
    fn zero_filling_a_run_goes_on_past_pages_already_there() {
        let (uffd, base) = registered_pages();
        assert_eq!(uffd.copy(base + PAGE, &[7u8; usize_of(PAGE)]), CopyResult::Done);
        assert_eq!(uffd.zero(base, 4 * PAGE), CopyResult::Done);
        for page in [0, 2, 3] {
            assert!(!empty(&uffd, base + page * PAGE), "page {page} was left empty");
        }
        // SAFETY: every page is present now; reading faults nothing.
        let bytes: Vec<u8> = (0..4).map(|p| unsafe { *((base + p * PAGE) as *const u8) }).collect();
        assert_eq!(bytes, [0, 7, 0, 0]);
        // SAFETY: the mapping made above, not used any more.
        unsafe { libc::munmap(base as *mut libc::c_void, usize_of(4 * PAGE)) };
    }

    /// A userfaultfd with `WP_ASYNC` and four unregistered pages of this process.
    fn write_tracking_pages() -> (Uffd, u64) {
        let uffd = Uffd::create().expect("userfaultfd (run as root)");
        uffd.api(features::WP_ASYNC).unwrap();
        // SAFETY: a fresh private anonymous mapping nobody else uses.
        let base = unsafe {
            libc::mmap(std::ptr::null_mut(), usize_of(4 * PAGE), libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        assert_ne!(base, libc::MAP_FAILED);
        (uffd, base as u64)
    }

    #[test]
    fn protected_copies_tell_which_pages_were_written_since() {
        let (uffd, base) = write_tracking_pages();
        uffd.register(base, 4 * PAGE, true).unwrap();
        assert_eq!(uffd.copy_protected(base, &[3u8; usize_of(3 * PAGE)]), CopyResult::Done);
        // SAFETY: page 1 is present (copied above); the write is resolved by
        // the kernel (WP_ASYNC), nobody reads this userfaultfd.
        unsafe { *((base + PAGE + 8) as *mut u8) = 9 };
        let me = i32::try_from(std::process::id()).unwrap();
        let runs = crate::mem::resident_runs(me, base, base + 4 * PAGE).unwrap();
        let run = |start: u64, end: u64, written: bool| crate::mem::ResidentRun { start, end, written, zero_page: false };
        assert_eq!(runs, [run(base, base + PAGE, false), run(base + PAGE, base + 2 * PAGE, true), run(base + 2 * PAGE, base + 3 * PAGE, false)]);
        // SAFETY: the mapping made above, not used any more.
        unsafe { libc::munmap(base as *mut libc::c_void, usize_of(4 * PAGE)) };
    }

    #[test]
    fn a_barrier_takes_the_pages_written_since_the_last_one() {
        let (uffd, base) = write_tracking_pages();
        let write = |page: u64| {
            // SAFETY: a page of the mapping above, present (or filled by the
            // kernel: nobody reads this userfaultfd's faults, and the pages
            // written here were present before the registration or copied in).
            unsafe { *((base + page * PAGE + 8) as *mut u8) = 1 };
        };
        // Pages 0 and 1 written before the registration: they count as written.
        write(0);
        write(1);
        uffd.register(base, 4 * PAGE, true).unwrap();
        assert_eq!(uffd.copy_protected(base + 2 * PAGE, &[3u8; usize_of(2 * PAGE)]), CopyResult::Done);
        let me = i32::try_from(std::process::id()).unwrap();
        let take = || crate::mem::take_written_runs(me, base, base + 4 * PAGE).unwrap();
        assert_eq!(take(), [(base, base + 2 * PAGE)], "written before, not the protected copies");
        assert_eq!(take(), [], "nothing written since");
        write(1);
        write(3);
        assert_eq!(take(), [(base + PAGE, base + 2 * PAGE), (base + 3 * PAGE, base + 4 * PAGE)]);
        assert_eq!(take(), []);
        // SAFETY: the mapping made above, not used any more.
        unsafe { libc::munmap(base as *mut libc::c_void, usize_of(4 * PAGE)) };
    }

    #[test]
    fn file_pages_map_shared_copy_on_write_and_a_missing_one_is_refused() {
        let file = crate::shmem::SparseFile::create(c"uffd-test").unwrap();
        file.write_at(0, &[5u8; usize_of(2 * PAGE)]).unwrap();
        let uffd = Uffd::create().expect("userfaultfd (run as root)");
        uffd.api(features::MINOR_SHMEM).unwrap();
        // SAFETY: a fresh private mapping of our own file, used only here.
        let base = unsafe { libc::mmap(std::ptr::null_mut(), usize_of(4 * PAGE), libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE, file.raw(), 0) };
        assert_ne!(base, libc::MAP_FAILED);
        let base = base as u64;
        uffd.register_file_backed(base, 4 * PAGE, false).unwrap();
        assert_eq!(uffd.map_from_file(base, 2 * PAGE, false), CopyResult::Done);
        assert_eq!(uffd.map_from_file(base, PAGE, false), CopyResult::Done, "a mapped page is skipped");
        // SAFETY: pages 0 and 1 are mapped (above); a write copies page 0.
        let (first, second) = unsafe {
            *(base as *mut u8) = 9;
            (*(base as *const u8), *((base + PAGE) as *const u8))
        };
        assert_eq!((first, second), (9, 5));
        let mut in_file = [0u8; 1];
        file.read_at(0, &mut in_file).unwrap();
        assert_eq!(in_file, [5], "the file keeps its content");
        assert_eq!(uffd.map_from_file(base + 2 * PAGE, PAGE, false), CopyResult::Failed(libc::EFAULT), "the file lacks page 2");
        assert_eq!(uffd.zero(base + 2 * PAGE, PAGE), CopyResult::Done, "a private zero page goes in instead");
        // SAFETY: page 2 is mapped now.
        assert_eq!(unsafe { *((base + 2 * PAGE) as *const u8) }, 0);
        // SAFETY: the mapping made above, not used any more.
        unsafe { libc::munmap(base as *mut libc::c_void, usize_of(4 * PAGE)) };
    }
}
