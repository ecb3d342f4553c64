//! The C API of mitosis: `libmitosis.so` / `libmitosis.a`, declared in
//! `include/mitosis.h` (the reference documentation for C users) and found
//! through `mitosis.pc`.
//!
//! ```c
//! mitosis_conn *c;
//! if (mitosis_open(NULL, &c) < 0) { fprintf(stderr, "%s\n", mitosis_last_error()); exit(1); }
//! int r = mitosis_fork_prepare(c, "my-fn", MITOSIS_PIN);
//! if (r == MITOSIS_PARENT) { /* prepared; keep serving */ }
//! else if (r == MITOSIS_CHILD) { /* resumed on some host */ }
//! else { fprintf(stderr, "%s (%s)\n", mitosis_last_error(), mitosis_strerror(r)); }
//! ```
//!
//! # What it owns
//!
//! - The exported `mitosis_*` functions: thin wrappers over the client crate
//!   ([`mitosis`]) that turn C arguments into Rust ones and results into the
//!   integer codes of [`error`] (one per [`mitosis::ErrorKind`], plus
//!   connect, I/O and usage failures), with a thread-local detailed message.
//! - `include/mitosis.h`, `mitosis.pc.in` and the shared library's SONAME
//!   (`build.rs`); `scripts/install-c-api` installs them.
//!
//! # What it must not touch
//!
//! It speaks to the daemon only through the [`mitosis`] client crate: no
//! protocol, capture or restore logic lives here, and nothing here touches
//! another process or the network. It keeps no descriptor open between calls
//! (a [`mitosis_conn`] is the daemon's socket path; every call connects anew),
//! so a handle stays valid in a resumed child, where the parent's sockets are
//! closed, and across `fork()`.
//!
//! # Rules for the FFI code
//!
//! - Every exported function runs its body in [`error::guard`]: a panic is
//!   caught and reported as `MITOSIS_E_INTERNAL`, never unwinds into C, and
//!   SIGPIPE is blocked meanwhile ([`sigpipe`]), so a daemon that closed its
//!   end fails the call instead of killing a C program that does not ignore
//!   SIGPIPE.
//! - Every raw pointer is read or written in one of the small `unsafe`
//!   helpers below (`str_arg`, `path_arg`, `conn_arg`, `child_arg`,
//!   `put`), each stating what it requires of the caller; the exported
//!   functions only document that contract for C.
//! - Handles are `Box`es handed to C as opaque pointers and taken back by
//!   their `*_close` / `*_free` function only.

pub mod error;
pub mod sigpipe;

use std::ffi::{c_char, c_int, c_void, CStr, OsStr};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use mitosis::{ChildEnd, Client, Resumed, Role};

pub use error::*;

/// What [`mitosis_fork_prepare`] returns in the process that prepared.
pub const MITOSIS_PARENT: c_int = 0;
/// What [`mitosis_fork_prepare`] returns in every child resumed from the seed.
pub const MITOSIS_CHILD: c_int = 1;
/// Flag of [`mitosis_fork_prepare`]: the seed outlives the caller, until dropped.
pub const MITOSIS_PIN: c_int = 1;
/// Port a seed host's daemon is assumed to listen on when `host` has none
/// (the default of `mitosis daemon --listen`).
pub const MITOSIS_DEFAULT_PORT: u16 = 7070;

/// A handle on the local daemon: the path of its socket. Opaque to C.
#[allow(non_camel_case_types)]
pub struct mitosis_conn {
    socket: PathBuf,
}

/// A child started by [`mitosis_resume`]. Opaque to C.
#[allow(non_camel_case_types)]
pub struct mitosis_child {
    /// Until waited for: the daemon connection that reports its end
    /// (dropping it makes the daemon kill the child).
    resumed: Option<Resumed>,
    pid: i32,
    resume_us: u64,
    /// After the wait: the code to return, the wait status if known, the message.
    end: Option<(c_int, Option<c_int>, String)>,
}

/// What [`mitosis_fork_prepare_ex`] tells each side (`mitosis_prepare_info` in C).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
#[allow(non_camel_case_types)]
pub struct mitosis_prepare_info {
    pub role: c_int,
    pub pid: i32,
    pub generation: u64,
    pub prepare_us: u64,
    pub mapped_bytes: u64,
    pub snapshot_pid: i32,
    pub closed_fds: u32,
    pub seed_host: [c_char; 256],
}

impl mitosis_prepare_info {
    fn empty(role: c_int) -> Self {
        mitosis_prepare_info {
            role,
            pid: 0,
            generation: 0,
            prepare_us: 0,
            mapped_bytes: 0,
            snapshot_pid: 0,
            closed_fds: 0,
            seed_host: [0; 256],
        }
    }

    fn of(role: &Role) -> Self {
        match role {
            Role::Parent(seed) => mitosis_prepare_info {
                pid: seed.source_pid,
                generation: seed.generation,
                prepare_us: seed.prepare_us,
                mapped_bytes: seed.mapped_bytes,
                snapshot_pid: seed.snapshot_pid,
                closed_fds: seed.closed_fds.len() as u32,
                ..Self::empty(MITOSIS_PARENT)
            },
            Role::Child(me) => {
                let mut info = mitosis_prepare_info { pid: me.pid, generation: me.generation, ..Self::empty(MITOSIS_CHILD) };
                // Truncated to fit, always NUL-terminated.
                for (dst, src) in info.seed_host.iter_mut().zip(me.seed_host.bytes().take(255)) {
                    *dst = src as c_char;
                }
                info
            }
        }
    }
}

/// The daemon address `host` names: `IP:PORT`, `[IPv6]:PORT` and
/// `NAME:PORT` as given; a bare `IP` or `NAME` gets port
/// [`MITOSIS_DEFAULT_PORT`].
pub fn seed_host_addr(host: &str) -> Result<String, Failure> {
    if host.is_empty() {
        return Err(Failure::usage("empty seed host"));
    }
    if host.parse::<SocketAddr>().is_ok() {
        return Ok(host.to_string());
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, MITOSIS_DEFAULT_PORT).to_string());
    }
    if host.contains(':') {
        return Ok(host.to_string());
    }
    Ok(format!("{host}:{MITOSIS_DEFAULT_PORT}"))
}

// ---- the only places that dereference pointers from C ----

/// The UTF-8 string argument `what` (an id or a host).
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that stays valid and
/// unchanged for `'a`.
unsafe fn str_arg<'a>(p: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if p.is_null() {
        return Err(Failure::usage(format!("{what} is NULL")));
    }
    // SAFETY: non-null, and NUL-terminated and valid for 'a per the contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map_err(|_| Failure::usage(format!("{what} is not UTF-8: {:?}", s.to_string_lossy())))
}

/// A path argument (any bytes), or `None` for NULL.
///
/// # Safety
/// As [`str_arg`].
unsafe fn path_arg(p: *const c_char) -> Option<PathBuf> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null, and NUL-terminated and valid per the contract.
    let s = unsafe { CStr::from_ptr(p) };
    Some(PathBuf::from(OsStr::from_bytes(s.to_bytes())))
}

/// The connection behind `p`.
///
/// # Safety
/// `p` is NULL or a handle from [`mitosis_open`] not yet closed, not closed
/// during `'a`.
unsafe fn conn_arg<'a>(p: *const mitosis_conn) -> Result<&'a mitosis_conn, Failure> {
    // SAFETY: per the contract, non-null means a live Box<mitosis_conn>.
    unsafe { p.as_ref() }.ok_or_else(|| Failure::usage("conn is NULL"))
}

/// The child behind `p`.
///
/// # Safety
/// `p` is NULL or a handle from [`mitosis_resume`] not yet freed, not used
/// by another thread during `'a`.
unsafe fn child_arg<'a>(p: *mut mitosis_child) -> Result<&'a mut mitosis_child, Failure> {
    // SAFETY: per the contract, non-null means a live Box<mitosis_child>
    // that nobody else accesses meanwhile.
    unsafe { p.as_mut() }.ok_or_else(|| Failure::usage("child is NULL"))
}

/// Writes `v` to `*out` unless `out` is NULL; returns whether it did.
///
/// # Safety
/// `out` is NULL or valid for writing a `T` (aligned).
unsafe fn put<T>(out: *mut T, v: T) -> bool {
    if out.is_null() {
        return false;
    }
    // SAFETY: non-null, and valid and aligned per the contract.
    unsafe { out.write(v) };
    true
}

// ---- exported functions (documented for C in include/mitosis.h) ----

/// See `mitosis_open` in mitosis.h.
///
/// # Safety
/// `socket` is NULL or a C string; `out` is valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn mitosis_open(socket: *const c_char, out: *mut *mut mitosis_conn) -> c_int {
    guard("mitosis_open", || {
        // SAFETY: out is NULL or valid for writing per the contract.
        if !unsafe { put(out, std::ptr::null_mut()) } {
            return Err(Failure::usage("out is NULL"));
        }
        // SAFETY: socket is NULL or a C string per the contract.
        let socket = unsafe { path_arg(socket) }.unwrap_or_else(mitosis::default_socket);
        // Fail early when no daemon listens there; calls connect anew.
        drop(Client::connect(&socket)?);
        let conn = Box::into_raw(Box::new(mitosis_conn { socket }));
        // SAFETY: as above.
        unsafe { put(out, conn) };
        Ok(MITOSIS_OK)
    })
}

/// See `mitosis_close` in mitosis.h.
///
/// # Safety
/// `conn` is NULL or a handle from [`mitosis_open`], not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn mitosis_close(conn: *mut mitosis_conn) {
    if !conn.is_null() {
        // SAFETY: per the contract, conn came from Box::into_raw in
        // mitosis_open and is given back exactly once.
        let conn = unsafe { Box::from_raw(conn) };
        guard("mitosis_close", || {
            drop(conn);
            Ok(MITOSIS_OK)
        });
    }
}

/// See `mitosis_fork_prepare_ex` in mitosis.h.
///
/// # Safety
/// `conn` is a live handle, `id` a C string, `info` NULL or valid for
/// writing a `mitosis_prepare_info`.
#[no_mangle]
pub unsafe extern "C" fn mitosis_fork_prepare_ex(
    conn: *const mitosis_conn,
    id: *const c_char,
    flags: c_int,
    info: *mut mitosis_prepare_info,
) -> c_int {
    guard("mitosis_fork_prepare", || {
        // SAFETY: per the contract.
        let (conn, id) = unsafe { (conn_arg(conn)?, str_arg(id, "id")?) };
        if flags & !MITOSIS_PIN != 0 {
            return Err(Failure::usage(format!("unknown flags {:#x}", flags & !MITOSIS_PIN)));
        }
        let role = mitosis::fork_prepare_with(&conn.socket, id, flags & MITOSIS_PIN != 0)?;
        let details = mitosis_prepare_info::of(&role);
        // SAFETY: info is NULL or writable per the contract.
        unsafe { put(info, details) };
        Ok(details.role)
    })
}

/// A function and argument given to [`mitosis_child_hook`].
struct ChildHook {
    hook: unsafe extern "C" fn(*mut c_void),
    arg: *mut c_void,
}

impl ChildHook {
    fn call(&self) {
        // SAFETY: per the contract of mitosis_child_hook, which registered it.
        unsafe { (self.hook)(self.arg) }
    }
}

// SAFETY: the library never touches `arg`; it only hands it back to `hook`,
// in the thread that called mitosis_fork_prepare in a child (the seed's
// other threads, if it had any, go on where they were). mitosis.h makes the caller responsible for `arg` being usable
// from that thread.
unsafe impl Send for ChildHook {}
// SAFETY: as for Send; a shared ChildHook is only ever read.
unsafe impl Sync for ChildHook {}

/// See `mitosis_child_hook` in mitosis.h.
///
/// # Safety
/// `hook` is NULL or a function that may be called with `arg`, from the
/// thread that calls mitosis_fork_prepare, in every child of a later prepare.
#[no_mangle]
pub unsafe extern "C" fn mitosis_child_hook(hook: Option<unsafe extern "C" fn(*mut c_void)>, arg: *mut c_void) -> c_int {
    guard("mitosis_child_hook", || {
        let hook = hook.ok_or_else(|| Failure::usage("hook is NULL"))?;
        let registered = ChildHook { hook, arg };
        mitosis::on_child(move || registered.call());
        Ok(MITOSIS_OK)
    })
}

/// See `mitosis_fork_prepare` in mitosis.h.
///
/// # Safety
/// As [`mitosis_fork_prepare_ex`] with `info` NULL.
#[no_mangle]
pub unsafe extern "C" fn mitosis_fork_prepare(conn: *const mitosis_conn, id: *const c_char, flags: c_int) -> c_int {
    // SAFETY: the same contract, with no info to write.
    unsafe { mitosis_fork_prepare_ex(conn, id, flags, std::ptr::null_mut()) }
}

/// See `mitosis_fork_resume_remote` in mitosis.h.
///
/// # Safety
/// `conn` is a live handle; `host` and `id` are C strings.
#[no_mangle]
pub unsafe extern "C" fn mitosis_fork_resume_remote(
    conn: *const mitosis_conn,
    host: *const c_char,
    id: *const c_char,
) -> c_int {
    guard("mitosis_fork_resume_remote", || {
        // SAFETY: per the contract.
        let (conn, host, id) = unsafe { (conn_arg(conn)?, str_arg(host, "host")?, str_arg(id, "id")?) };
        let from = seed_host_addr(host)?;
        // Returns only on failure: on success this process is the child now.
        match mitosis::resume_in_place(&conn.socket, &from, id)? {}
    })
}

/// See `mitosis_resume` in mitosis.h.
///
/// # Safety
/// `conn` is a live handle; `host` and `id` are C strings; `out` is valid
/// for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn mitosis_resume(
    conn: *const mitosis_conn,
    host: *const c_char,
    id: *const c_char,
    out: *mut *mut mitosis_child,
) -> c_int {
    guard("mitosis_resume", || {
        // SAFETY: per the contract.
        if !unsafe { put(out, std::ptr::null_mut()) } {
            return Err(Failure::usage("out is NULL"));
        }
        // SAFETY: per the contract.
        let (conn, host, id) = unsafe { (conn_arg(conn)?, str_arg(host, "host")?, str_arg(id, "id")?) };
        let from = seed_host_addr(host)?;
        let resumed = Client::connect(&conn.socket)?.resume(&from, id, [0, 1, 2])?;
        let child = mitosis_child { pid: resumed.pid, resume_us: resumed.timings.total_us, resumed: Some(resumed), end: None };
        // SAFETY: as above.
        unsafe { put(out, Box::into_raw(Box::new(child))) };
        Ok(MITOSIS_OK)
    })
}

/// See `mitosis_child_pid` in mitosis.h.
///
/// # Safety
/// `child` is NULL or a live handle from [`mitosis_resume`].
#[no_mangle]
pub unsafe extern "C" fn mitosis_child_pid(child: *const mitosis_child) -> libc::pid_t {
    // SAFETY: per the contract; only read.
    unsafe { child.as_ref() }.map_or(-1, |c| c.pid)
}

/// See `mitosis_child_resume_us` in mitosis.h.
///
/// # Safety
/// As [`mitosis_child_pid`].
#[no_mangle]
pub unsafe extern "C" fn mitosis_child_resume_us(child: *const mitosis_child) -> u64 {
    // SAFETY: per the contract; only read.
    unsafe { child.as_ref() }.map_or(0, |c| c.resume_us)
}

/// The end of `child`: (code, wait status if known, message).
fn child_end(child: &mut mitosis_child) -> (c_int, Option<c_int>, String) {
    let pid = child.pid;
    let Some(resumed) = child.resumed.take() else {
        return (MITOSIS_E_INTERNAL, None, format!("child {pid} has no connection to wait on"));
    };
    match resumed.wait() {
        Ok((ChildEnd::Exited(code), _)) => (MITOSIS_OK, Some((code & 0xff) << 8), String::new()),
        Ok((ChildEnd::Signaled(sig), _)) => (MITOSIS_OK, Some(sig & 0x7f), String::new()),
        // The kernel's OOM killer at the container's memory limit: a SIGKILL like any other.
        Ok((ChildEnd::OutOfMemory { .. }, _)) => (MITOSIS_OK, Some(libc::SIGKILL), String::new()),
        Ok((ChildEnd::KilledByMitosis { reason }, _)) => {
            (MITOSIS_E_SEED_GONE, Some(libc::SIGKILL), format!("child {pid} was killed: {reason}"))
        }
        // The daemon went away; its children (whose pages it served) die with it.
        Err(mitosis::Error::Io(_) | mitosis::Error::Proto(_)) => (
            MITOSIS_E_SEED_GONE,
            Some(libc::SIGKILL),
            format!("child {pid} was killed: the local daemon stopped"),
        ),
        Err(e) => {
            let f = Failure::from(e);
            (f.code, None, f.message)
        }
    }
}

/// See `mitosis_child_wait` in mitosis.h.
///
/// # Safety
/// `child` is a live handle from [`mitosis_resume`] that no other thread
/// uses meanwhile; `status` is NULL or valid for writing an int.
#[no_mangle]
pub unsafe extern "C" fn mitosis_child_wait(child: *mut mitosis_child, status: *mut c_int) -> c_int {
    guard("mitosis_child_wait", || {
        // SAFETY: per the contract.
        let child = unsafe { child_arg(child)? };
        if child.end.is_none() {
            child.end = Some(child_end(child));
        }
        let (code, st, message) = child.end.clone().expect("set above");
        if let Some(st) = st {
            // SAFETY: status is NULL or writable per the contract.
            unsafe { put(status, st) };
        }
        if code < 0 {
            return Err(Failure { code, message });
        }
        Ok(code)
    })
}

/// See `mitosis_child_free` in mitosis.h.
///
/// # Safety
/// `child` is NULL or a handle from [`mitosis_resume`], not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn mitosis_child_free(child: *mut mitosis_child) {
    if !child.is_null() {
        // SAFETY: per the contract, child came from Box::into_raw in
        // mitosis_resume and is given back exactly once.
        let child = unsafe { Box::from_raw(child) };
        // Closing the connection of a running child makes its daemon kill it.
        guard("mitosis_child_free", || {
            drop(child);
            Ok(MITOSIS_OK)
        });
    }
}

/// See `mitosis_drop` in mitosis.h.
///
/// # Safety
/// `conn` is a live handle; `id` a C string.
#[no_mangle]
pub unsafe extern "C" fn mitosis_drop(conn: *const mitosis_conn, id: *const c_char) -> c_int {
    guard("mitosis_drop", || {
        // SAFETY: per the contract.
        let (conn, id) = unsafe { (conn_arg(conn)?, str_arg(id, "id")?) };
        Client::connect(&conn.socket)?.drop_seed(id)?;
        Ok(MITOSIS_OK)
    })
}

/// See `mitosis_strerror` in mitosis.h.
#[no_mangle]
pub extern "C" fn mitosis_strerror(code: c_int) -> *const c_char {
    error::strerror(code).as_ptr()
}

/// See `mitosis_last_error` in mitosis.h.
#[no_mangle]
pub extern "C" fn mitosis_last_error() -> *const c_char {
    error::last_error_ptr()
}

/// See `mitosis_exit_code` in mitosis.h.
#[no_mangle]
pub extern "C" fn mitosis_exit_code(code: c_int) -> c_int {
    error::exit_code(code)
}

/// See `mitosis_version` in mitosis.h.
#[no_mangle]
pub extern "C" fn mitosis_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last() -> String {
        // SAFETY: a valid C string until the next failure in this thread.
        unsafe { CStr::from_ptr(mitosis_last_error()) }.to_string_lossy().into_owned()
    }

    #[test]
    fn seed_host_gets_the_default_port_only_when_it_has_none() {
        assert_eq!(seed_host_addr("10.0.0.1").unwrap(), "10.0.0.1:7070");
        assert_eq!(seed_host_addr("10.0.0.1:9").unwrap(), "10.0.0.1:9");
        assert_eq!(seed_host_addr("::1").unwrap(), "[::1]:7070");
        assert_eq!(seed_host_addr("[::1]:8").unwrap(), "[::1]:8");
        assert_eq!(seed_host_addr("hosta").unwrap(), "hosta:7070");
        assert_eq!(seed_host_addr("hosta:1").unwrap(), "hosta:1");
        assert_eq!(seed_host_addr("").unwrap_err().code, MITOSIS_E_USAGE);
    }

    #[test]
    fn null_arguments_are_usage_errors() {
        // SAFETY: NULLs are part of every function's contract.
        unsafe {
            assert_eq!(mitosis_drop(std::ptr::null(), c"x".as_ptr()), MITOSIS_E_USAGE);
            assert_eq!(last(), "mitosis_drop: conn is NULL");
            assert_eq!(mitosis_open(std::ptr::null(), std::ptr::null_mut()), MITOSIS_E_USAGE);
            assert_eq!(mitosis_fork_prepare(std::ptr::null(), std::ptr::null(), 0), MITOSIS_E_USAGE);
            let mut child: *mut mitosis_child = std::ptr::dangling_mut();
            assert_eq!(mitosis_resume(std::ptr::null(), c"h".as_ptr(), c"x".as_ptr(), &mut child), MITOSIS_E_USAGE);
            assert!(child.is_null(), "out is cleared on failure");
            assert_eq!(mitosis_child_wait(std::ptr::null_mut(), std::ptr::null_mut()), MITOSIS_E_USAGE);
            assert_eq!(mitosis_child_pid(std::ptr::null()), -1);
            assert_eq!(mitosis_child_resume_us(std::ptr::null()), 0);
            mitosis_child_free(std::ptr::null_mut());
            mitosis_close(std::ptr::null_mut());
            assert_eq!(mitosis_child_hook(None, std::ptr::null_mut()), MITOSIS_E_USAGE);
            assert_eq!(last(), "mitosis_child_hook: hook is NULL");
        }
    }

    #[test]
    fn open_without_a_daemon_is_a_connect_error_naming_the_socket() {
        let mut conn: *mut mitosis_conn = std::ptr::dangling_mut();
        // SAFETY: a C string and a valid out pointer.
        let r = unsafe { mitosis_open(c"/nonexistent/mitosis-capi.sock".as_ptr(), &mut conn) };
        assert_eq!(r, MITOSIS_E_CONNECT);
        assert!(conn.is_null());
        let msg = last();
        assert!(msg.starts_with("mitosis_open: ") && msg.contains("/nonexistent/mitosis-capi.sock"), "{msg}");
        assert_eq!(mitosis_exit_code(r), 69);
    }

    #[test]
    fn bad_strings_and_flags_are_usage_errors_before_any_daemon_is_asked() {
        let conn = Box::into_raw(Box::new(mitosis_conn { socket: "/nonexistent/s".into() }));
        // SAFETY: a live handle, C strings.
        unsafe {
            assert_eq!(mitosis_fork_prepare(conn, c"x".as_ptr(), 2), MITOSIS_E_USAGE);
            assert!(last().contains("unknown flags 0x2"), "{}", last());
            assert_eq!(mitosis_drop(conn, c"\xff".as_ptr()), MITOSIS_E_USAGE);
            assert!(last().contains("not UTF-8"), "{}", last());
            assert_eq!(mitosis_fork_resume_remote(conn, c"".as_ptr(), c"x".as_ptr()), MITOSIS_E_USAGE);
            assert!(last().contains("empty seed host"), "{}", last());
            // Well-formed, so the daemon is asked: there is none.
            assert_eq!(mitosis_drop(conn, c"x".as_ptr()), MITOSIS_E_CONNECT);
            mitosis_close(conn);
        }
    }

    #[test]
    fn version_is_the_crate_version() {
        // SAFETY: a static C string.
        let v = unsafe { CStr::from_ptr(mitosis_version()) };
        assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
        // SAFETY: as above.
        let t = unsafe { CStr::from_ptr(mitosis_strerror(MITOSIS_E_NOT_FOUND)) };
        assert_eq!(t, c"no such seed (or process)");
    }
}
