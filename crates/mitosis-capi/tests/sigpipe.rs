//! A write to a closed daemon connection inside a C API call fails with
//! EPIPE instead of killing the program with SIGPIPE (C programs, unlike Rust
//! ones, do not ignore it). Its own test binary: it sets SIGPIPE to its
//! default action for the whole process, which kills the process if the
//! guard does not hold.

use std::ffi::c_int;

#[test]
fn a_write_to_a_closed_socket_fails_instead_of_killing_the_program() {
    let mut fds = [0 as c_int; 2];
    // SAFETY: socketpair fills the two-element array.
    assert_eq!(unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) }, 0);
    // SAFETY: closing our own descriptor; then the default SIGPIPE action, as in C.
    unsafe {
        libc::close(fds[1]);
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let mut errno = 0;
    let r = mitosis_capi::guard("test", || {
        // SAFETY: a valid descriptor and buffer.
        let n = unsafe { libc::write(fds[0], b"x".as_ptr().cast(), 1) };
        errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        Ok(n as c_int)
    });
    assert_eq!((r, errno), (-1, libc::EPIPE));
    // Nothing left pending, and SIGPIPE is not blocked any more.
    // SAFETY: sigpending / pthread_sigmask fill the sets they are given.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigpending(&mut set);
        assert_eq!(libc::sigismember(&set, libc::SIGPIPE), 0, "SIGPIPE left pending");
        libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut set);
        assert_eq!(libc::sigismember(&set, libc::SIGPIPE), 0, "SIGPIPE left blocked");
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        libc::close(fds[0]);
    }
}
