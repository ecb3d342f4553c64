//! Resuming a seed from another host as a new child on this one.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Instant;

use mitosis_pager::{Counters, Outcome, Pager, PagerConfig, Patch, Regions};
use mitosis_proto::frame::write_msg;
use mitosis_proto::image::SeedImage;
use mitosis_proto::local::{ChildEnd, ChildInfo, LocalResponse, ResumeTimings, CHILD_MARKER};
use mitosis_proto::{ErrorKind, ProtoError, RemoteError};
use mitosis_restore::prologue::{Credentials, Prologue, PrologueExit};
use mitosis_restore::{restore, RestoreError, RestorePlan};
use mitosis_sys::fdpass::PeerCred;
use mitosis_sys::pidfd::{self, Exit};

use crate::local::chain;
use crate::peer::{PeerConn, RemoteSource};
use crate::Daemon;

fn send(conn: &mut UnixStream, resp: &LocalResponse) -> std::io::Result<()> {
    write_msg(conn, resp).map_err(|e| std::io::Error::other(e.to_string()))
}

/// Serves one `Resume` request: starts the child, reports `Started`, waits
/// for it and reports `Exited`. Closing the connection early kills the child.
pub fn handle(
    daemon: &Daemon,
    cred: PeerCred,
    conn: &mut UnixStream,
    from: &str,
    id: &str,
    stdio: Vec<OwnedFd>,
) -> std::io::Result<()> {
    let t0 = Instant::now();
    if stdio.len() != 3 {
        return send(conn, &LocalResponse::Error(RemoteError::new(
            ErrorKind::BadRequest,
            format!("a resume needs the caller's stdin, stdout and stderr ({} descriptors came)", stdio.len()),
        )));
    }
    let started = match start(daemon, cred, from, id, &stdio, t0) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%from, %id, error = %e.message, "resume failed");
            return send(conn, &LocalResponse::Error(e));
        }
    };
    drop(stdio);
    let Started { pid, pidfd, pager, counters, timings } = started;
    tracing::info!(%from, %id, pid, us = timings.total_us, "child resumed");
    let _ = send(conn, &LocalResponse::Started { pid, timings });

    // Wait for the child, or for the caller to give up on it.
    let mut caller_gone = false;
    loop {
        let mut fds = [
            libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd {
                fd: if caller_gone { -1 } else { conn.as_raw_fd() },
                events: libc::POLLIN | libc::POLLRDHUP,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            continue;
        }
        if fds[0].revents != 0 {
            break;
        }
        if fds[1].revents != 0 {
            tracing::info!(pid, "resumer went away; killing its child");
            let _ = pidfd::send_signal(&pidfd, libc::SIGKILL);
            caller_gone = true;
        }
    }
    let exit = pidfd::wait_exit(&pidfd);
    daemon.children.lock().unwrap().retain(|(p, _)| *p != pid);
    let outcome = pager.join().unwrap_or_else(|_| Outcome::Failed("pager thread panicked".into()));
    let end = match (outcome, exit) {
        (Outcome::Failed(reason), _) => ChildEnd::KilledByMitosis { reason },
        (_, Ok(Exit::Code(c))) => ChildEnd::Exited(c),
        (_, Ok(Exit::Signal(s))) => ChildEnd::Signaled(s),
        (_, Err(e)) => ChildEnd::KilledByMitosis { reason: format!("lost track of the child: {e}") },
    };
    tracing::info!(pid, ?end, "child ended");
    send(conn, &LocalResponse::Exited { end, stats: counters.snapshot() })
}

struct Started {
    pid: i32,
    pidfd: Arc<OwnedFd>,
    pager: std::thread::JoinHandle<Outcome>,
    counters: Arc<Counters>,
    timings: ResumeTimings,
}

fn remote_err(kind: ErrorKind, e: impl std::fmt::Display) -> RemoteError {
    RemoteError::new(kind, e.to_string())
}

fn start(daemon: &Daemon, cred: PeerCred, from: &str, id: &str, stdio: &[OwnedFd], t0: Instant) -> Result<Started, RemoteError> {
    let cfg = &daemon.config;
    let mut conn = PeerConn::connect(from, &cfg.key, cfg.fetch_timeout).map_err(|e| match e {
        ProtoError::Io(io) => remote_err(ErrorKind::SeedGone, format!("cannot reach seed host {from}: {io}")),
        other => RemoteError::new(other.kind(), format!("seed host {from}: {other}")),
    })?;
    let image = conn.get_seed(id).map_err(|e| RemoteError::new(e.kind(), format!("seed host {from}: {e}")))?;
    let image_bytes = postcard::to_stdvec(&image).map(|v| v.len() as u64).unwrap_or(0);
    let fetched = t0.elapsed();
    if cred.uid != 0 && cred.uid != image.uid {
        return Err(remote_err(ErrorKind::PermissionDenied, format!("seed {id:?} belongs to uid {}, you are uid {}", image.uid, cred.uid)));
    }
    let plan = RestorePlan::new(&image, &daemon.vdso).map_err(|e| remote_err(ErrorKind::Unsupported, chain(&e)))?;
    let pid = spawn_child(daemon, &image, &plan, stdio).map_err(|e| remote_err(ErrorKind::Internal, format!("cannot fork a child: {e}")))?;
    let spawned = t0.elapsed();
    let pidfd = match pidfd::open(pid) {
        Ok(fd) => Arc::new(fd),
        Err(e) => return Err(remote_err(ErrorKind::Internal, e)),
    };
    let reply = image.reply_slot.map(|slot| {
        let info = ChildInfo { seed_id: id.to_string(), seed_host: from.to_string(), generation: image.generation, pid };
        let mut bytes = CHILD_MARKER.to_vec();
        bytes.extend_from_slice(&postcard::to_stdvec(&info).unwrap_or_default());
        (slot, bytes)
    });
    if let Some((slot, bytes)) = &reply {
        if bytes.len() as u64 > slot.len {
            kill_and_reap(&pidfd);
            return Err(remote_err(ErrorKind::Unsupported, "the seed's reply buffer is too small"));
        }
    }
    let counters = Arc::new(Counters::default());
    let source = RemoteSource {
        addr: from.to_string(),
        key: cfg.key.clone(),
        id: id.to_string(),
        generation: image.generation,
        timeout: cfg.fetch_timeout,
        conn,
    };
    let watch = pidfd.try_clone().map_err(|e| remote_err(ErrorKind::Internal, e))?;
    let patches = reply.as_ref().map(|(slot, bytes)| vec![Patch { addr: slot.addr, bytes: bytes.clone() }]).unwrap_or_default();
    let mut pager_thread = None;
    let restored = restore(pid, &pidfd, &image, &plan, &daemon.vdso, reply.as_ref().map(|r| r.1.len() as u64), |uffd, remote| {
        let pager = Pager::new(
            uffd,
            Regions::new(&remote),
            Box::new(source),
            PagerConfig { window_pages: cfg.window_pages },
            counters.clone(),
            Some(watch),
        )
        .with_patches(patches);
        let handle = std::thread::Builder::new()
            .name(format!("pager-{pid}"))
            .spawn(move || pager.run())
            .map_err(|e| RestoreError::Incompatible(format!("cannot start a pager thread: {e}")))?;
        pager_thread = Some(handle);
        Ok(())
    });
    if let Err(e) = restored {
        let why = describe_failure(&pidfd, &e);
        return Err(remote_err(ErrorKind::Internal, why));
    }
    let pager = pager_thread.expect("restore starts the pager before it succeeds");
    daemon.children.lock().unwrap().push((pid, pidfd.clone()));
    let total = t0.elapsed();
    Ok(Started {
        pid,
        pidfd,
        pager,
        counters,
        timings: ResumeTimings {
            fetch_image_us: fetched.as_micros() as u64,
            spawn_us: (spawned - fetched).as_micros() as u64,
            restore_us: (total - spawned).as_micros() as u64,
            total_us: total.as_micros() as u64,
            image_bytes,
        },
    })
}

fn kill_and_reap(pidfd: &OwnedFd) -> Option<Exit> {
    let _ = pidfd::send_signal(pidfd, libc::SIGKILL);
    pidfd::wait_exit(pidfd).ok()
}

/// Kills a child whose restore failed and says why, using its prologue exit code if it died early.
fn describe_failure(pidfd: &OwnedFd, e: &RestoreError) -> String {
    let exit = if pidfd::has_exited(pidfd) { pidfd::wait_exit(pidfd).ok() } else { kill_and_reap(pidfd) };
    match (e, exit) {
        (RestoreError::ChildDied(_), Some(Exit::Code(c))) | (RestoreError::Sys { .. }, Some(Exit::Code(c))) => {
            match PrologueExit::describe(c) {
                Some(why) => format!("the new child failed before restore: {why}"),
                None => chain(e),
            }
        }
        _ => chain(e),
    }
}

fn spawn_child(daemon: &Daemon, image: &SeedImage, plan: &RestorePlan, stdio: &[OwnedFd]) -> std::io::Result<i32> {
    // SAFETY: getuid has no preconditions.
    let credentials = (unsafe { libc::getuid() } == 0 && image.uid != 0)
        .then(|| Credentials { uid: image.uid, gid: image.gid, groups: image.groups.clone() });
    let prologue = Prologue {
        parent: std::process::id() as i32,
        plan: plan.clone(),
        actions: image.signals.actions.clone(),
        credentials,
    };
    let (mut ready_rx, ready_tx) = std::io::pipe()?;
    let stdio = [stdio[0].as_raw_fd(), stdio[1].as_raw_fd(), stdio[2].as_raw_fd()];
    let pid = daemon.spawner.spawn(&prologue, stdio, ready_tx.as_raw_fd())?;
    drop(ready_tx);
    // One byte: parked and ready. End of file: it died (the caller reads its exit code).
    let mut byte = [0u8; 1];
    let _ = std::io::Read::read(&mut ready_rx, &mut byte);
    Ok(pid)
}
