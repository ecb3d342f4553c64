//! The host-local Unix socket: requests from `mitosis` commands and the
//! libraries, each checked against the caller's credentials.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::os::fd::AsFd;
use std::sync::Arc;

use mitosis_capture::{prepare, PrepareSpec};
use mitosis_proto::frame::{read_payload, write_msg, MAX_CONTROL_FRAME};
use mitosis_proto::image::validate_seed_id;
use mitosis_proto::local::{Envelope, LocalRequest, LocalResponse};
use mitosis_proto::{error_chain, ErrorKind, RemoteError, PROTOCOL_VERSION};
use mitosis_sys::fdpass::{self, PeerCred};
use mitosis_sys::poll::{self, PollFd};
use mitosis_sys::mem::ProcMem;

use crate::limits::{ConnLimiter, Deadline, Limits, Uid};
use crate::seeds::{Seed, SeedMemory};
use crate::Daemon;

/// How long a client may leave an answer unread before it is dropped.
const REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Creates the socket (replacing a stale one) reachable by every local user:
/// authorization is per request, by `SO_PEERCRED`.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if UnixStream::connect(path).is_ok() {
        return Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "another daemon is serving this socket"));
    }
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(l)
}

/// Accepts local clients, one thread each, within the connection caps: per
/// non-root uid and in total. A client over a cap is told so and closed at
/// once, by this thread (no thread is started for it).
pub fn serve(daemon: Arc<Daemon>, listener: UnixListener) {
    let caps = daemon.config.limits;
    let limiter: Arc<ConnLimiter<Uid>> = ConnLimiter::new(caps.local_per_user, caps.local_total);
    let mut refused = crate::limits::RefusalLog::default();
    for conn in listener.incoming() {
        let mut conn = match conn {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors or memory: wait rather than spin.
                tracing::warn!(error = %e, "cannot accept a local client");
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
        };
        let Ok(cred) = fdpass::peer_cred(&conn) else { continue };
        // Root is not capped per uid (its connections count in the total).
        let permit = match limiter.admit((cred.uid != 0).then_some(Uid(cred.uid))) {
            Ok(p) => p,
            Err(why) => {
                refused.note(&why);
                // A few hundred bytes into an empty socket buffer: this does not block.
                let _ = conn.set_write_timeout(Some(std::time::Duration::from_millis(100)));
                let _ = reply(&mut conn, &error(ErrorKind::Busy, format!("{why}; try again later")));
                continue;
            }
        };
        let d = daemon.clone();
        let spawned = std::thread::Builder::new().name("local".into()).spawn(move || {
            let _permit = permit;
            if let Err(e) = serve_client(&d, conn, cred) {
                tracing::debug!(error = %e, "local client gone");
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a thread for a local client");
        }
    }
}

fn reply(conn: &mut UnixStream, resp: &LocalResponse) -> std::io::Result<()> {
    write_msg(conn, resp).map_err(|e| std::io::Error::other(e.to_string()))?;
    conn.flush()
}

fn error(kind: ErrorKind, message: impl Into<String>) -> LocalResponse {
    LocalResponse::Error(RemoteError::new(kind, message))
}

/// Reads one request frame and the descriptors sent with it: its first byte
/// within `limits.local_idle`, the rest within `limits.request` of that,
/// into a buffer that grows with what came. `None`: the client hung up, or
/// sent nothing in time. Only this frame is read (a next request stays in
/// the socket), and the socket is left without a read timeout.
fn read_request(conn: &UnixStream, limits: &Limits) -> std::io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    conn.set_read_timeout(Some(limits.local_idle))?;
    // The descriptors come with the first byte: received here.
    let mut head = [0u8; 4];
    let (n, fds) = match fdpass::recv_with_fds(conn, &mut head) {
        Ok(r) => r,
        Err(e) if e.errno == libc::EAGAIN => {
            tracing::debug!(idle = ?limits.local_idle, "local client idle: closed");
            return Ok(None);
        }
        Err(e) => return Err(std::io::Error::from_raw_os_error(e.errno)),
    };
    if n == 0 {
        return Ok(None);
    }
    let mut r = Deadline::new(conn, limits.request);
    if let Err(e) = r.read_exact(&mut head[n..]) {
        return match e.kind() {
            std::io::ErrorKind::UnexpectedEof => Ok(None),
            _ => Err(e),
        };
    }
    let len = u32::from_le_bytes(head) as u64;
    if len > MAX_CONTROL_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("request of {len} bytes is over the limit of {MAX_CONTROL_FRAME} (garbage, or a client of another version)"),
        ));
    }
    let body = read_payload(&mut r, len as usize, Vec::new())?;
    conn.set_read_timeout(None)?;
    Ok(Some((body, fds)))
}

fn serve_client(daemon: &Arc<Daemon>, mut conn: UnixStream, cred: PeerCred) -> std::io::Result<()> {
    // Answers are small; a client that does not read them must not hold us.
    conn.set_write_timeout(Some(REPLY_TIMEOUT))?;
    loop {
        let (body, fds) = match read_request(&conn, &daemon.config.limits) {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                tracing::debug!(uid = cred.uid, "local request not sent in time: closed");
                let _ = reply(&mut conn, &error(ErrorKind::BadRequest, format!(
                    "the request did not arrive within {:?} of its first byte", daemon.config.limits.request
                )));
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                reply(&mut conn, &error(ErrorKind::BadRequest, e.to_string()))?;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let env: Envelope = match postcard::from_bytes(&body) {
            Ok(e) => e,
            Err(_) => {
                reply(&mut conn, &error(ErrorKind::BadRequest, "undecodable request (garbage, or a client of another version)"))?;
                return Ok(());
            }
        };
        if env.version != PROTOCOL_VERSION {
            reply(&mut conn, &error(ErrorKind::VersionMismatch, format!(
                "client speaks protocol {}, this daemon {PROTOCOL_VERSION}", env.version
            )))?;
            return Ok(());
        }
        match env.request {
            LocalRequest::Prepare { pid, id, reply_slot, pinned, copy } => {
                let resp = handle_prepare(daemon, cred, pid, &id, reply_slot, pinned, copy);
                reply(&mut conn, &resp)?;
            }
            LocalRequest::Resume { from, id, options } => {
                crate::resume::handle(daemon, cred, &mut conn, &from, &id, &options, fds)?;
                return Ok(());
            }
            LocalRequest::ResumeInPlace { from, id } => {
                crate::resume::handle_in_place(daemon, cred, &mut conn, &from, &id)?;
                return Ok(());
            }
            LocalRequest::Drop { id } => {
                let resp = match daemon.seeds.get(&id) {
                    None => error(ErrorKind::NotFound, format!("no seed {id:?} on this host")),
                    Some(s) if cred.uid != 0 && cred.uid != s.image.uid => {
                        error(ErrorKind::PermissionDenied, format!("seed {id:?} belongs to uid {}", s.image.uid))
                    }
                    Some(_) => {
                        daemon.seeds.remove(&id);
                        tracing::info!(%id, "seed dropped");
                        LocalResponse::Dropped { id }
                    }
                };
                reply(&mut conn, &resp)?;
            }
            LocalRequest::List => {
                let seeds = daemon
                    .seeds
                    .list()
                    .iter()
                    .filter(|s| cred.uid == 0 || s.image.uid == cred.uid)
                    .map(|s| s.info())
                    .collect();
                reply(&mut conn, &LocalResponse::Seeds(seeds))?;
            }
            LocalRequest::Ps { all } => {
                let children = daemon.children.list(cred.uid, all);
                reply(&mut conn, &LocalResponse::Children { children, pool: daemon.pool.stats() })?;
            }
            LocalRequest::Stats => {
                let stats = mitosis_proto::local::DaemonStats {
                    seeds: daemon
                        .seeds
                        .list()
                        .iter()
                        .filter(|s| cred.uid == 0 || s.image.uid == cred.uid)
                        .map(|s| s.stats())
                        .collect(),
                    cache: daemon.cache.stats(),
                    pool: daemon.pool.stats(),
                    children_running: daemon.children.live().len() as u64,
                    barriers: daemon.barriers.stats(),
                };
                reply(&mut conn, &LocalResponse::Stats(stats))?;
            }
            // A benchmark hook that makes root build containers and cgroups:
            // root's alone.
            LocalRequest::BareContainer { .. } if cred.uid != 0 => {
                reply(&mut conn, &error(ErrorKind::PermissionDenied, "bare containers (a benchmark) are for root only"))?;
            }
            LocalRequest::BareContainer { spec } => {
                reply(&mut conn, &crate::resume::bare_container(daemon, &spec))?;
            }
            LocalRequest::Offload { id } => {
                let resp = match running_child(daemon, cred, &id).and_then(|c| crate::offload::offload(daemon, &c, Default::default())) {
                    Ok(report) => LocalResponse::Offloaded(report),
                    Err(e) => LocalResponse::Error(e),
                };
                reply(&mut conn, &resp)?;
            }
            LocalRequest::Prefetch { id } => {
                let resp = match running_child(daemon, cred, &id).and_then(|c| crate::offload::prefetch(&c, None).map(|r| (c.pid, r))) {
                    Ok((pid, (from_node_bytes, from_seed_bytes))) => LocalResponse::Prefetching { pid, from_node_bytes, from_seed_bytes },
                    Err(e) => LocalResponse::Error(e),
                };
                reply(&mut conn, &resp)?;
            }
            LocalRequest::Kill { id } => {
                let resp = match running_child(daemon, cred, &id) {
                    Err(refused) => LocalResponse::Error(refused),
                    Ok(c) => {
                        // Its waiter sees it end and tears its container down.
                        let _ = mitosis_sys::pidfd::send_signal(&c.pidfd, libc::SIGKILL);
                        tracing::info!(%id, pid = c.pid, "child killed on request");
                        LocalResponse::Killed { pid: c.pid }
                    }
                };
                reply(&mut conn, &resp)?;
            }
        }
    }
}

/// The running child `id` names, if the caller may act on it (its owner, or
/// root); else the answer that says why not. A child that has exited but is
/// still being torn down is not running.
fn running_child(daemon: &Daemon, cred: PeerCred, id: &str) -> Result<Arc<crate::children::ChildRecord>, RemoteError> {
    match daemon.children.find(id).filter(|c| !mitosis_sys::pidfd::has_exited(&c.pidfd)) {
        None => Err(RemoteError::new(ErrorKind::NotFound, format!("no running child {id:?} on this host"))),
        Some(c) if cred.uid != 0 && cred.uid != c.uid => {
            Err(RemoteError::new(ErrorKind::PermissionDenied, format!("child {id:?} belongs to uid {}", c.uid)))
        }
        Some(c) => Ok(c),
    }
}

fn handle_prepare(
    daemon: &Arc<Daemon>,
    cred: PeerCred,
    pid: i32,
    id: &str,
    reply_slot: Option<mitosis_proto::local::ReplySlot>,
    pinned: bool,
    copy: bool,
) -> LocalResponse {
    if let Err(e) = validate_seed_id(id) {
        return error(ErrorKind::BadRequest, e);
    }
    // A process in a container (a PID namespace of its own) knows itself by
    // its pid there; the kernel gave us its pid here.
    let pid = if reply_slot.is_some() && pid != cred.pid && crate::children::own_view_pid(cred.pid) == pid { cred.pid } else { pid };
    if reply_slot.is_some() && pid != cred.pid {
        return error(ErrorKind::PermissionDenied, "only a process itself may ask to be prepared with a reply slot");
    }
    if std::fs::metadata(format!("/proc/{pid}")).is_err() {
        return error(ErrorKind::NotFound, format!("no process {pid}"));
    }
    // The daemon's ptrace would pass for anything: the kernel's rules are
    // applied to the asking process instead.
    match mitosis_capture::access::may_prepare(cred.pid, cred.uid, pid) {
        Ok(()) => {}
        Err(mitosis_capture::access::AccessDenied::NoProcess { pid }) => return error(ErrorKind::NotFound, format!("no process {pid}")),
        Err(denied) => return error(ErrorKind::PermissionDenied, format!("you (uid {}) may not prepare process {pid}: {denied}", cred.uid)),
    }
    // Opened before the capture, so that an unpinned seed of a process that
    // exits during the prepare is still dropped.
    let source = if pinned {
        None
    } else {
        match mitosis_sys::pidfd::open(pid) {
            Ok(fd) => Some(fd),
            Err(_) => return error(ErrorKind::NotFound, format!("no process {pid}")),
        }
    };
    let spec = PrepareSpec { pid, id, generation: crate::random_u64(), reply_slot };
    let t0 = std::time::Instant::now();
    match prepare_when_ready(&spec, &daemon.vdso) {
        Ok(mut snap) => {
            let memory = if copy {
                let copied = mitosis_capture::copy_memory(snap.snapshot_pid, &snap.image);
                // The snapshot is not needed any more (nor kept on failure).
                crate::seeds::end_snapshot(&snap.snapshot_pidfd);
                match copied {
                    Ok(c) => SeedMemory::Copied(c),
                    Err(e) => return error(ErrorKind::Internal, format!("cannot copy the snapshot's memory: {e}")),
                }
            } else {
                match ProcMem::open(snap.snapshot_pid, false) {
                    Ok(mem) => {
                        daemon.janitor.watch(&snap.snapshot_pidfd);
                        SeedMemory::Snapshot { pid: snap.snapshot_pid, pidfd: snap.snapshot_pidfd, mem }
                    }
                    Err(e) => return error(ErrorKind::Internal, format!("cannot open the snapshot's memory: {e}")),
                }
            };
            // With the copy (the capture measured itself).
            snap.image.prepare_us = snap.image.prepare_us.max(t0.elapsed().as_micros() as u64);
            let seed = Seed::new(snap.image, memory, pinned);
            let info = seed.info();
            tracing::info!(%id, pid, snapshot = info.snapshot_pid, us = info.prepare_us, vmas = info.vmas, pinned, copied = ?info.copied_bytes, "seed prepared");
            let snapshot = seed.memory.snapshot().and_then(|s| s.try_clone().ok());
            if daemon.seeds.insert(seed).is_some() {
                tracing::info!(%id, "replaced an older seed with the same id");
            }
            if snapshot.is_some() || source.is_some() {
                watch_seed(daemon.clone(), snapshot, source, id.to_string(), info.generation);
            }
            LocalResponse::Prepared(info)
        }
        Err(e) => {
            let kind = match e {
                mitosis_capture::CaptureError::NoProcess { .. } => ErrorKind::NotFound,
                mitosis_capture::CaptureError::Unsupported { .. }
                | mitosis_capture::CaptureError::NotWaiting { .. }
                | mitosis_capture::CaptureError::Adopt { .. }
                | mitosis_capture::CaptureError::LeftDescriptors { .. } => ErrorKind::Unsupported,
                mitosis_capture::CaptureError::Sys { .. } => ErrorKind::Internal,
            };
            tracing::warn!(%id, pid, error = %error_chain(&e), "prepare failed");
            error(kind, error_chain(&e))
        }
    }
}

/// Drops seed `id` (if it is still `generation`) when its snapshot dies (it
/// was killed: its pages are gone, and listing it would only start children
/// that die), or when its source process behind `source` exits (the lifetime
/// of an unpinned seed).
fn watch_seed(
    daemon: Arc<Daemon>,
    snapshot: Option<std::os::fd::OwnedFd>,
    source: Option<std::os::fd::OwnedFd>,
    id: String,
    generation: u64,
) {
    let spawned = std::thread::Builder::new().name("seed-watch".into()).spawn(move || {
        fn slot(fd: &Option<OwnedFd>) -> PollFd<'_> {
            fd.as_ref().map_or(PollFd::none(), |f| PollFd::readable(f.as_fd()))
        }
        let mut fds = [slot(&snapshot), slot(&source)];
        while !matches!(poll::poll(&mut fds, -1), Ok(n) if n > 0) {}
        let why = if fds[0].revents() != 0 { "its snapshot process died" } else { "its process exited and it was not pinned" };
        if daemon.seeds.remove_generation(&id, generation).is_some() {
            tracing::info!(%id, "seed dropped: {why}");
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot watch a seed; it stays until dropped");
    }
}

/// Prepares `spec.pid`; a process preparing itself is first given time to
/// block in its read of our answer (it sends the request just before), in
/// whichever of its threads asked.
fn prepare_when_ready(spec: &PrepareSpec<'_>, vdso: &mitosis_sys::vdso::VdsoInfo) -> Result<mitosis_capture::Snapshot, mitosis_capture::CaptureError> {
    let Some(slot) = spec.reply_slot else { return prepare(spec, vdso) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        // `/proc/PID/task/TID/syscall` reads "0 <fd> <buf> ..." while the thread sits in read(2).
        let in_read = |tid: i32| {
            std::fs::read_to_string(format!("/proc/{}/task/{tid}/syscall", spec.pid))
                .map(|s| {
                    let f: Vec<&str> = s.split_whitespace().collect();
                    f.first() == Some(&"0") && f.get(2).and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok()) == Some(slot.addr)
                })
                .unwrap_or(false)
        };
        let waiting = mitosis_sys::procfs::thread_ids(spec.pid).unwrap_or_default().into_iter().any(in_read);
        if waiting {
            match prepare(spec, vdso) {
                Err(mitosis_capture::CaptureError::NotWaiting { .. }) => {}
                other => return other,
            }
        }
        if std::time::Instant::now() > deadline {
            return Err(mitosis_capture::CaptureError::NotWaiting { pid: spec.pid });
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    fn limits(idle_ms: u64, request_ms: u64) -> Limits {
        Limits { local_idle: Duration::from_millis(idle_ms), request: Duration::from_millis(request_ms), ..Limits::default() }
    }

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut f = (body.len() as u32).to_le_bytes().to_vec();
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn a_client_that_sends_nothing_is_let_go_after_the_idle_time() {
        let (_client, conn) = UnixStream::pair().unwrap();
        let t0 = Instant::now();
        assert!(read_request(&conn, &limits(150, 5000)).unwrap().is_none());
        assert!(t0.elapsed() >= Duration::from_millis(140) && t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    }

    #[test]
    fn a_request_dripped_byte_by_byte_must_be_whole_by_its_deadline() {
        let (mut client, conn) = UnixStream::pair().unwrap();
        // 1 MiB announced, then a byte every 50 ms: never 300 ms of silence.
        let dripper = std::thread::spawn(move || {
            let _ = client.write_all(&(1u32 << 20).to_le_bytes());
            for _ in 0..40 {
                std::thread::sleep(Duration::from_millis(50));
                if client.write_all(b"x").is_err() {
                    return;
                }
            }
        });
        let t0 = Instant::now();
        let err = read_request(&conn, &limits(5000, 400)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
        assert!(t0.elapsed() < Duration::from_millis(1500), "{:?}", t0.elapsed());
        drop(conn);
        dripper.join().unwrap();
    }

    #[test]
    fn requests_are_read_one_at_a_time_with_their_descriptors() {
        let (client, conn) = UnixStream::pair().unwrap();
        let (_r, w) = std::io::pipe().unwrap();
        let mut both = frame(b"first");
        both.extend_from_slice(&frame(b"second"));
        fdpass::send_with_fds(&client, &both, &[w.as_raw_fd()]).unwrap();
        let (body, fds) = read_request(&conn, &limits(1000, 1000)).unwrap().unwrap();
        assert_eq!((body.as_slice(), fds.len()), (&b"first"[..], 1));
        let (body, fds) = read_request(&conn, &limits(1000, 1000)).unwrap().unwrap();
        assert_eq!((body.as_slice(), fds.len()), (&b"second"[..], 0));
        // Over the limit: refused from the length alone.
        (&client).write_all(&u32::MAX.to_le_bytes()).unwrap();
        let err = read_request(&conn, &limits(1000, 1000)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    }
}
