//! Error codes of the C API, the thread-local "last error" message, and the
//! guard every exported function runs its body in (no panic crosses the FFI
//! boundary).

use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use mitosis::ErrorKind;

/// Success (also what [`crate::MITOSIS_PARENT`] is).
pub const MITOSIS_OK: c_int = 0;
/// No seed with that id on the seed host (or no such process).
pub const MITOSIS_E_NOT_FOUND: c_int = -1;
/// A daemon could not prove it holds the cluster key.
pub const MITOSIS_E_AUTH: c_int = -2;
/// Two mitosis components speak different protocol versions.
pub const MITOSIS_E_VERSION: c_int = -3;
/// The daemon refused the request as malformed (e.g. an invalid seed id).
pub const MITOSIS_E_BAD_REQUEST: c_int = -4;
/// The caller may not do this (another user's seed or process).
pub const MITOSIS_E_PERMISSION: c_int = -5;
/// The process uses something mitosis cannot capture or restore.
pub const MITOSIS_E_UNSUPPORTED: c_int = -6;
/// The seed host is unreachable, or the seed's pages are gone (dropped or
/// prepared again); also: a child killed because a page could not be fetched.
pub const MITOSIS_E_SEED_GONE: c_int = -7;
/// A daemon failed (I/O, a system call), or an internal error in the library.
pub const MITOSIS_E_INTERNAL: c_int = -8;
/// The local daemon's socket cannot be connected to.
pub const MITOSIS_E_CONNECT: c_int = -9;
/// The connection to the local daemon broke, or it answered garbage.
pub const MITOSIS_E_IO: c_int = -10;
/// Invalid argument (NULL pointer, unknown flag, text that is not UTF-8)
/// or calling context (a multi-threaded process cannot be prepared).
pub const MITOSIS_E_USAGE: c_int = -11;
/// The daemon holds as many connections as it takes (from this user, or in
/// total); try again later.
pub const MITOSIS_E_BUSY: c_int = -12;

/// One error code: its value, static description and the exit status
/// (sysexits.h) the `mitosis` command uses for the same failure.
pub struct CodeInfo {
    pub code: c_int,
    pub name: &'static str,
    pub text: &'static CStr,
    pub exit_code: c_int,
}

/// Every error code, in order.
pub const CODES: &[CodeInfo] = &[
    CodeInfo { code: MITOSIS_E_NOT_FOUND, name: "MITOSIS_E_NOT_FOUND", text: c"no such seed (or process)", exit_code: 66 },
    CodeInfo {
        code: MITOSIS_E_AUTH,
        name: "MITOSIS_E_AUTH",
        text: c"authentication between daemons failed (cluster key)",
        exit_code: 77,
    },
    CodeInfo {
        code: MITOSIS_E_VERSION,
        name: "MITOSIS_E_VERSION",
        text: c"mitosis protocol version mismatch",
        exit_code: 76,
    },
    CodeInfo { code: MITOSIS_E_BAD_REQUEST, name: "MITOSIS_E_BAD_REQUEST", text: c"invalid request", exit_code: 64 },
    CodeInfo { code: MITOSIS_E_PERMISSION, name: "MITOSIS_E_PERMISSION", text: c"permission denied", exit_code: 77 },
    CodeInfo {
        code: MITOSIS_E_UNSUPPORTED,
        name: "MITOSIS_E_UNSUPPORTED",
        text: c"the process uses something mitosis cannot capture or restore",
        exit_code: 65,
    },
    CodeInfo {
        code: MITOSIS_E_SEED_GONE,
        name: "MITOSIS_E_SEED_GONE",
        text: c"seed host unreachable or seed pages gone",
        exit_code: 69,
    },
    CodeInfo { code: MITOSIS_E_INTERNAL, name: "MITOSIS_E_INTERNAL", text: c"internal error", exit_code: 70 },
    CodeInfo {
        code: MITOSIS_E_CONNECT,
        name: "MITOSIS_E_CONNECT",
        text: c"cannot connect to the local mitosis daemon",
        exit_code: 69,
    },
    CodeInfo {
        code: MITOSIS_E_IO,
        name: "MITOSIS_E_IO",
        text: c"lost the connection to the local mitosis daemon",
        exit_code: 70,
    },
    CodeInfo {
        code: MITOSIS_E_USAGE,
        name: "MITOSIS_E_USAGE",
        text: c"invalid argument or calling context",
        exit_code: 64,
    },
    CodeInfo {
        code: MITOSIS_E_BUSY,
        name: "MITOSIS_E_BUSY",
        text: c"the daemon holds as many connections as it takes; try again later",
        exit_code: 75,
    },
];

/// The description of `code` (static text).
pub fn strerror(code: c_int) -> &'static CStr {
    if code >= 0 {
        return c"success";
    }
    CODES.iter().find(|c| c.code == code).map(|c| c.text).unwrap_or(c"unknown mitosis error code")
}

/// The exit status for `code`: 0 for success, the sysexits.h value of the
/// `mitosis` command for an error, 70 (EX_SOFTWARE) for an unknown code.
pub fn exit_code(code: c_int) -> c_int {
    if code >= 0 {
        return 0;
    }
    CODES.iter().find(|c| c.code == code).map(|c| c.exit_code).unwrap_or(70)
}

/// The code of a failure the daemon reported.
pub fn code_of_kind(kind: ErrorKind) -> c_int {
    match kind {
        ErrorKind::NotFound => MITOSIS_E_NOT_FOUND,
        ErrorKind::AuthFailed => MITOSIS_E_AUTH,
        ErrorKind::VersionMismatch => MITOSIS_E_VERSION,
        ErrorKind::BadRequest => MITOSIS_E_BAD_REQUEST,
        ErrorKind::PermissionDenied => MITOSIS_E_PERMISSION,
        ErrorKind::Unsupported => MITOSIS_E_UNSUPPORTED,
        ErrorKind::SeedGone => MITOSIS_E_SEED_GONE,
        ErrorKind::Internal => MITOSIS_E_INTERNAL,
        ErrorKind::Busy => MITOSIS_E_BUSY,
    }
}

/// A failed call: the code it returns and the message `mitosis_last_error` gives.
#[derive(Debug)]
pub struct Failure {
    pub code: c_int,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure { code: MITOSIS_E_USAGE, message: message.into() }
    }
}

impl From<mitosis::Error> for Failure {
    fn from(e: mitosis::Error) -> Failure {
        use mitosis::Error;
        use mitosis_proto::ProtoError;
        let code = match &e {
            Error::Daemon(r) | Error::Local(r) => code_of_kind(r.kind),
            Error::Connect { .. } => MITOSIS_E_CONNECT,
            Error::Io(_) => MITOSIS_E_IO,
            Error::Proto(ProtoError::VersionMismatch { .. }) => MITOSIS_E_VERSION,
            Error::Proto(ProtoError::Remote(r)) => code_of_kind(r.kind),
            Error::Proto(_) => MITOSIS_E_IO,
            Error::Usage(_) => MITOSIS_E_USAGE,
        };
        Failure { code, message: mitosis_proto::error_chain(&e) }
    }
}

thread_local! {
    /// The message of this thread's last failed call.
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `message` as this thread's last error.
pub fn set_last_error(message: &str) {
    let c = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    // During thread teardown the slot may be gone; then there is no one to tell.
    let _ = LAST_ERROR.try_with(|l| *l.borrow_mut() = c);
}

/// This thread's last error message: valid until the next failing call in
/// this thread (or its exit). Empty when no call has failed in this thread.
pub fn last_error_ptr() -> *const c_char {
    LAST_ERROR.try_with(|l| l.borrow().as_ptr()).unwrap_or(c"".as_ptr())
}

/// What a panic carried, as text.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// Runs the body of exported function `function`: a success value is
/// returned as is; a [`Failure`] becomes its code, and its message (prefixed
/// with `function`) this thread's last error; a panic is caught and becomes
/// [`MITOSIS_E_INTERNAL`], so it never unwinds into C. The body runs with
/// SIGPIPE blocked (see [`crate::sigpipe`]): a closed daemon connection
/// fails the call instead of killing the program.
pub fn guard(function: &str, body: impl FnOnce() -> Result<c_int, Failure>) -> c_int {
    let _sigpipe = crate::sigpipe::block();
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(v)) => v,
        Ok(Err(f)) => {
            set_last_error(&format!("{function}: {}", f.message));
            f.code
        }
        Err(payload) => {
            let msg = panic_message(&*payload);
            // Dropping a payload could itself panic; leak it instead.
            std::mem::forget(payload);
            set_last_error(&format!("{function}: internal error in libmitosis (panic: {msg})"));
            MITOSIS_E_INTERNAL
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const KINDS: [ErrorKind; 9] = [
        ErrorKind::NotFound,
        ErrorKind::AuthFailed,
        ErrorKind::VersionMismatch,
        ErrorKind::BadRequest,
        ErrorKind::PermissionDenied,
        ErrorKind::Unsupported,
        ErrorKind::SeedGone,
        ErrorKind::Internal,
        ErrorKind::Busy,
    ];

    #[test]
    fn every_kind_has_its_own_code_with_the_cli_exit_status() {
        let mut seen = HashSet::new();
        for kind in KINDS {
            let code = code_of_kind(kind);
            assert!(code < 0, "{kind:?}");
            assert!(seen.insert(code), "{kind:?} shares code {code}");
            assert_eq!(exit_code(code), kind.exit_code(), "{kind:?}");
            let info = CODES.iter().find(|c| c.code == code).unwrap_or_else(|| panic!("{code} not in CODES"));
            assert_eq!(info.exit_code, kind.exit_code());
        }
    }

    #[test]
    fn codes_are_distinct_documented_and_consecutive() {
        let texts: HashSet<&CStr> = CODES.iter().map(|c| c.text).collect();
        assert_eq!(texts.len(), CODES.len(), "every code has its own text");
        for (i, c) in CODES.iter().enumerate() {
            assert_eq!(c.code, -(i as c_int) - 1);
            assert_eq!(strerror(c.code), c.text);
            assert!(c.name.starts_with("MITOSIS_E_"));
        }
        assert_eq!(strerror(0), c"success");
        assert_eq!(strerror(1), c"success", "MITOSIS_CHILD is not an error");
        assert_eq!(strerror(-1000), c"unknown mitosis error code");
        assert_eq!(exit_code(-1000), 70);
        assert_eq!(exit_code(1), 0);
    }

    #[test]
    fn client_errors_map_to_codes_and_exit_statuses_of_the_cli() {
        let cases = [
            mitosis::Error::Connect { path: "/x".into(), source: std::io::Error::from_raw_os_error(libc::ENOENT) },
            mitosis::Error::Io(std::io::Error::from_raw_os_error(libc::EPIPE)),
            mitosis::Error::Usage("bad".into()),
            mitosis::Error::Daemon(mitosis::RemoteError::new(ErrorKind::NotFound, "no seed \"x\"")),
        ];
        let want = [MITOSIS_E_CONNECT, MITOSIS_E_IO, MITOSIS_E_USAGE, MITOSIS_E_NOT_FOUND];
        for (e, code) in cases.into_iter().zip(want) {
            let exit = e.exit_code();
            let f = Failure::from(e);
            assert_eq!(f.code, code, "{}", f.message);
            assert_eq!(exit_code(f.code), exit, "{}", f.message);
        }
        let f = Failure::from(mitosis::Error::Connect {
            path: "/run/x.sock".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        });
        assert!(f.message.contains("/run/x.sock") && f.message.contains("No such file"), "{}", f.message);
    }

    #[test]
    fn guard_reports_failures_and_catches_panics() {
        assert_eq!(guard("f", || Ok(7)), 7);
        assert_eq!(guard("f", || Err(Failure::usage("bad thing"))), MITOSIS_E_USAGE);
        let msg = || unsafe_last_error();
        assert_eq!(msg(), "f: bad thing");
        assert_eq!(guard("g", || panic!("boom {}", 1)), MITOSIS_E_INTERNAL);
        assert!(msg().starts_with("g: internal error") && msg().contains("boom 1"), "{}", msg());
        // Successes leave the last error alone (like errno).
        assert_eq!(guard("h", || Ok(0)), 0);
        assert!(msg().contains("boom 1"));
        // Per thread.
        let other = std::thread::spawn(move || {
            let before = unsafe_last_error();
            guard("t", || Err(Failure::usage("x")));
            (before, unsafe_last_error())
        })
        .join()
        .unwrap();
        assert_eq!(other, (String::new(), "t: x".to_string()));
        assert!(msg().contains("boom 1"));
        set_last_error("nul\0inside");
        assert_eq!(msg(), "nul\\0inside");
    }

    fn unsafe_last_error() -> String {
        // SAFETY: last_error_ptr returns a valid NUL-terminated string that
        // lives until the next failure in this thread.
        unsafe { CStr::from_ptr(last_error_ptr()) }.to_string_lossy().into_owned()
    }
}
