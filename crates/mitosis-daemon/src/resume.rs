//! Resuming a seed from another host as a new child on this one.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Instant;

use mitosis_pager::{Counters, Outcome, PageSource, Pager, PagerConfig, Patch, Recorder, Regions};
use mitosis_proto::frame::write_msg;
use mitosis_proto::image::SeedImage;
use mitosis_container::{Container, HolderSpec};
use mitosis_proto::local::{ChildEnd, ChildInfo, ContainerSpec, LocalResponse, Paging, ResumeOptions, ResumeTimings, CHILD_MARKER};
use mitosis_proto::{error_chain, ErrorKind, ProtoError, RemoteError};
use mitosis_restore::prologue::{ContainerEntry, Credentials, FileFailure, Prologue, PrologueExit};
use mitosis_restore::{restore, Child, RestoreError, RestorePlan, RestorePrivilege};
use mitosis_sys::fdpass::PeerCred;
use mitosis_sys::pidfd::{self, Exit};
use mitosis_sys::poll::{self, PollFd};

use crate::children::{own_view_pid, ChildRecord};
use crate::peer::{PeerConn, RemoteSource};
use crate::Daemon;

fn send(conn: &mut UnixStream, resp: &LocalResponse) -> std::io::Result<()> {
    write_msg(conn, resp).map_err(|e| std::io::Error::other(e.to_string()))
}

/// Which process becomes the child.
pub(crate) enum Body<'a> {
    /// A new process forked by the zygote, with the caller's stdio, in a
    /// container or not; with `owner`, only a seed of that uid is resumed.
    NewChild { stdio: &'a [OwnedFd], container: Option<&'a ContainerSpec>, detach: bool, owner: Option<u32> },
    /// The caller itself (resume in place); it runs the prologue we send and
    /// reports ready on the connection.
    Caller { pid: i32, conn: &'a mut UnixStream },
}

/// Serves one `ResumeInPlace` request: the caller is replaced by the child.
/// Nothing is reported at the end: the caller's connection is gone with its
/// old self, and its exit goes to its own parent.
pub fn handle_in_place(daemon: &Daemon, cred: PeerCred, conn: &mut UnixStream, from: &str, id: &str) -> std::io::Result<()> {
    let t0 = Instant::now();
    match start(daemon, cred, from, id, Body::Caller { pid: cred.pid, conn }, &Paging::default(), t0) {
        Ok(started) => {
            tracing::info!(%from, %id, pid = started.pid, us = started.timings.total_us, "process resumed in place");
            // The pager serves until the process exits (its parent reaps it, not us).
            let outcome = started.pager.join();
            daemon.children.finish(started.pid, None);
            remove_plain_cgroup(started.plain_cgroup);
            // As for a new child: only a child that ran to its end tells what it touched.
            if matches!(outcome, Ok(Outcome::Exited)) {
                report_working_set(daemon, &started.seed, started.recorder.as_deref());
            }
            tracing::info!(pid = started.pid, ?outcome, "process resumed in place ended");
            Ok(())
        }
        Err(e) => {
            tracing::warn!(%from, %id, error = %e.message, "resume in place failed");
            // Before the prologue the caller still reads; after it, it is killed.
            send(conn, &LocalResponse::Error(e))
        }
    }
}

/// Serves one `Resume` request: starts the child and reports `Started`;
/// then, unless it is detached, waits for it and reports `Exited` (closing
/// the connection early kills the child). A detached child is waited for by
/// a thread of its own.
pub fn handle(
    daemon: &Arc<Daemon>,
    cred: PeerCred,
    conn: &mut UnixStream,
    from: &str,
    id: &str,
    options: &ResumeOptions,
    stdio: Vec<OwnedFd>,
) -> std::io::Result<()> {
    let t0 = Instant::now();
    if stdio.len() != 3 {
        return send(conn, &LocalResponse::Error(RemoteError::new(
            ErrorKind::BadRequest,
            format!("a resume needs the caller's stdin, stdout and stderr ({} descriptors came)", stdio.len()),
        )));
    }
    let body = Body::NewChild { stdio: &stdio, container: options.container.as_ref(), detach: options.detach, owner: None };
    let started = match start(daemon, cred, from, id, body, &options.paging, t0) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%from, %id, error = %e.message, "resume failed");
            return send(conn, &LocalResponse::Error(e));
        }
    };
    drop(stdio);
    let pid = started.pid;
    tracing::info!(%from, %id, pid, us = started.timings.total_us, container = ?started.container.as_ref().map(|c| &c.name), "child resumed");
    let container = started.container.as_ref().map(|c| c.name.clone());
    let _ = send(conn, &LocalResponse::Started { pid, timings: started.timings.clone(), container });
    fetch_process_strings(pid, &started.mm);
    if options.detach {
        let daemon = daemon.clone();
        std::thread::Builder::new().name(format!("detached-{pid}")).spawn(move || wait_child(&daemon, started, None))?;
        return Ok(());
    }
    let (end, stats) = wait_child(daemon, started, Some(conn));
    send(conn, &LocalResponse::Exited { end, stats })
}

/// Waits for a started child to end (killing it if `conn`, its resumer,
/// goes away), then tears down its pager and container; says how it ended.
pub(crate) fn wait_child(daemon: &Daemon, started: Started, conn: Option<&mut UnixStream>) -> (ChildEnd, mitosis_proto::local::PagerStats) {
    let Started { pid, pidfd, pager, counters, container, plain_cgroup, recorder, seed, .. } = started;
    let mut caller_gone = conn.is_none();
    loop {
        let caller = match &conn {
            Some(c) if !caller_gone => PollFd::readable_or_hangup(c.as_fd()),
            _ => PollFd::none(),
        };
        let mut fds = [PollFd::readable(pidfd.as_fd()), caller];
        if poll::poll(&mut fds, -1).is_err() {
            continue;
        }
        if fds[0].revents() != 0 {
            break;
        }
        if fds[1].revents() != 0 {
            tracing::info!(pid, "resumer went away; killing its child");
            let _ = pidfd::send_signal(&pidfd, libc::SIGKILL);
            caller_gone = true;
        }
    }
    let exit = pidfd::wait_exit(&pidfd);
    let outcome = pager.join().unwrap_or_else(|_| Outcome::Failed("pager thread panicked".into()));
    if outcome == Outcome::Exited {
        report_working_set(daemon, &seed, recorder.as_deref());
    }
    let oom = container.as_ref().is_some_and(|c| c.oom_kills() > 0);
    let end = match (outcome, exit) {
        _ if oom => ChildEnd::OutOfMemory { limit_bytes: container.as_ref().and_then(|c| c.memory_limit()) },
        (Outcome::Failed(reason), _) => ChildEnd::KilledByMitosis { reason },
        (_, Ok(Exit::Code(c))) => ChildEnd::Exited(c),
        (_, Ok(Exit::Signal(s))) => ChildEnd::Signaled(s),
        (_, Err(e)) => ChildEnd::KilledByMitosis { reason: format!("lost track of the child: {e}") },
    };
    let stats = counters.snapshot();
    tracing::info!(
        pid,
        ?end,
        faults = stats.faults,
        waited = stats.remote_faults,
        pages = stats.pages_fetched,
        requests = stats.fetches,
        pushed = stats.pages_pushed,
        cached = stats.cache_hits,
        fault_wait_us = counters.fault_wait_us.load(std::sync::atomic::Ordering::Relaxed),
        "child ended"
    );
    // The record holds the other reference to the container: with both gone,
    // the container (namespaces, cgroups) is torn down in the background.
    drop(daemon.children.finish(pid, Some(end.clone())));
    if let Some(c) = container.and_then(|c| Arc::try_unwrap(c).ok()) {
        daemon.pool.retire(c);
    }
    remove_plain_cgroup(plain_cgroup);
    (end, stats)
}

pub(crate) struct Started {
    pub(crate) mm: mitosis_proto::image::MmFields,
    pub(crate) pid: i32,
    pub(crate) container: Option<Arc<Container>>,
    /// The cgroup of a child without a container.
    plain_cgroup: Option<mitosis_container::ContainerCgroup>,
    pub(crate) pidfd: Arc<OwnedFd>,
    pager: std::thread::JoinHandle<Outcome>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) timings: ResumeTimings,
    seed: SeedRef,
    /// Records what the child fetches, when its seed has no working set yet.
    recorder: Option<Arc<Recorder>>,
}

/// Which seed generation a child came from.
struct SeedRef {
    from: String,
    id: String,
    generation: u64,
    /// A seed of this host (`from` is this daemon).
    own: bool,
}

/// Where a resume's seed is.
enum Origin {
    /// On this host.
    Own(Arc<crate::seeds::Seed>),
    /// On another host, reached through this connection.
    Peer(Box<PeerConn>),
}

/// Removes a plain child's cgroup in the background: processes the child
/// forked may still live in it a while (the removal retries), or longer (it
/// is then left to the daemon's stop, which removes its whole subtree).
fn remove_plain_cgroup(cgroup: Option<mitosis_container::ContainerCgroup>) {
    let Some(cgroup) = cgroup else { return };
    let _ = std::thread::Builder::new().name("plain-cgroup".into()).spawn(move || {
        if let Err(e) = cgroup.remove() {
            tracing::debug!(error = %e, "a plain child's cgroup stays: processes it forked live on");
        }
    });
}

impl Started {
    /// The child answered its first request: what it fetched until now (its
    /// runtime's start and one request) is its seed's working set. Sent now
    /// rather than at its end: an instance may live for minutes, and every
    /// fork of the seed meanwhile would get no push.
    pub(crate) fn report_working_set_now(&self, daemon: &Daemon) {
        report_working_set(daemon, &self.seed, self.recorder.as_deref());
    }
}

/// Sends what the child fetched on demand to its seed host as the seed's
/// working set (in the background; a failure only costs later children
/// their push).
fn report_working_set(daemon: &Daemon, seed: &SeedRef, recorder: Option<&Recorder>) {
    let Some(recorder) = recorder else { return };
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for (addr, len) in recorder.take() {
        match ranges.last_mut() {
            Some(last) if last.0 + last.1 == addr => last.1 += len,
            _ => ranges.push((addr, len)),
        }
    }
    ranges.truncate(mitosis_proto::peer::MAX_WORKING_SET_RANGES);
    if ranges.is_empty() {
        return;
    }
    if seed.own {
        if let Some(s) = daemon.seeds.get(&seed.id).filter(|s| s.image.generation == seed.generation) {
            let pages: u64 = ranges.iter().map(|r| r.1 / mitosis_sys::PAGE).sum();
            if s.record_working_set(ranges) {
                tracing::info!(id = %seed.id, pages, "working set recorded");
            }
        }
        return;
    }
    let (from, id, generation) = (seed.from.clone(), seed.id.clone(), seed.generation);
    let (key, timeout) = (daemon.config.key.clone(), daemon.config.fetch_timeout);
    let _ = std::thread::Builder::new().name("working-set".into()).spawn(move || {
        let sent = PeerConn::connect(&from, &key, timeout).and_then(|mut c| c.record_working_set(&id, generation, ranges));
        if let Err(e) = sent {
            tracing::warn!(%from, %id, error = %e, "could not report a working set");
        }
    });
}

/// First fault window of the child that records a seed's working set.
const RECORDING_WINDOW_PAGES: u64 = 8;

fn remote_err(kind: ErrorKind, e: impl std::fmt::Display) -> RemoteError {
    RemoteError::new(kind, e.to_string())
}

pub(crate) fn start(
    daemon: &Daemon,
    cred: PeerCred,
    from: &str,
    id: &str,
    body: Body<'_>,
    paging: &Paging,
    t0: Instant,
) -> Result<Started, RemoteError> {
    let cfg = &daemon.config;
    // Before any lookup or connection: a non-root caller must not make this
    // daemon dial where it likes (a port scanner with root's address), so it
    // gets one answer for every address outside the cluster, open port or not.
    if cred.uid != 0 && !cfg.peers.allows(from) {
        return Err(remote_err(ErrorKind::PermissionDenied, format!(
            "uid {} may resume only from this daemon's peers (--peers: {}); {from:?} is not one of them",
            cred.uid,
            if cfg.peers.names().is_empty() { "none configured".to_string() } else { cfg.peers.names().join(",") },
        )));
    }
    // A seed of this very host is read in place; another host's through a connection.
    let (origin, image, working_set, image_bytes) = if crate::own_seed::is_own_address(daemon, from) {
        let seed = daemon
            .seeds
            .get(id)
            .ok_or_else(|| remote_err(ErrorKind::NotFound, format!("seed host {from}: no seed {id:?} on this host")))?;
        seed.children_served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let working_set = seed.working_set.lock().unwrap().to_vec();
        let image = (*seed.image).clone();
        (Origin::Own(seed), image, working_set, 0)
    } else {
        let mut conn = PeerConn::connect(from, &cfg.key, cfg.fetch_timeout).map_err(|e| match e {
            ProtoError::Io(io) => remote_err(ErrorKind::SeedGone, format!("cannot reach seed host {from}: {io}")),
            other => RemoteError::new(other.kind(), format!("seed host {from}: {other}")),
        })?;
        let crate::peer::FetchedSeed { image, working_set, bytes } =
            conn.get_seed(id).map_err(|e| RemoteError::new(e.kind(), format!("seed host {from}: {e}")))?;
        (Origin::Peer(Box::new(conn)), image, working_set, bytes)
    };
    let fetched = t0.elapsed();
    // Pages of an older generation of this seed are of no use any more.
    daemon.cache.keep_only(from, id, image.generation);
    if cred.uid != 0 && cred.uid != image.uid {
        return Err(remote_err(ErrorKind::PermissionDenied, format!("seed {id:?} belongs to uid {}, you are uid {}", image.uid, cred.uid)));
    }
    if let Body::NewChild { owner: Some(owner), .. } = &body {
        if image.uid != *owner {
            return Err(remote_err(ErrorKind::PermissionDenied, format!("seed {id:?} belongs to uid {}, not to uid {owner}", image.uid)));
        }
    }
    // The process that becomes the child: a fork of our zygote (our own
    // executable), or the caller of a resume in place.
    let becomes_child = match &body {
        Body::Caller { pid, .. } => *pid,
        Body::NewChild { .. } => std::process::id() as i32,
    };
    let credentials = match &body {
        // The caller runs the prologue itself, with its own credentials
        // (which `child_credentials` would only narrow for root).
        Body::Caller { .. } if cred.uid != 0 => None,
        _ => child_credentials(cred, &image)?,
    };
    let privilege = match &credentials {
        Some(c) if c.uid == 0 => RestorePrivilege::Root,
        Some(c) if c.keep_for_restore != 0 => RestorePrivilege::CheckpointRestore,
        _ => RestorePrivilege::Unprivileged,
    };
    let mut plan = RestorePlan::new(&image, &daemon.vdso, becomes_child, privilege).map_err(|e| {
        let kind = if matches!(e, RestoreError::Refused(_)) { ErrorKind::PermissionDenied } else { ErrorKind::Unsupported };
        remote_err(kind, error_chain(&e))
    })?;
    // This host's cache of the seed's pages, whose file a new child of
    // another host's seed maps its memory from (sharing the pages none of
    // the seed's children here wrote).
    let cached = match &origin {
        Origin::Peer(_) if daemon.cache.enabled() && !paging.no_cache => {
            let key = crate::cache::Key { host: from.to_string(), id: id.to_string(), generation: image.generation };
            Some(daemon.cache.generation(key).map_err(|e| remote_err(ErrorKind::Internal, e))?)
        }
        _ => None,
    };
    let shared_copy = match (&cached, &body) {
        (Some(generation), Body::NewChild { .. }) if cfg.share_pages && plan.map_from_shared_copy(&image) => Some(generation.clone()),
        _ => None,
    };
    // A child resumed in place has no resumer to report to: it is told itself.
    let in_place = matches!(body, Body::Caller { .. });
    let mut container = None;
    let mut container_taken = t0.elapsed();
    let detached = matches!(body, Body::NewChild { detach: true, .. });
    let (pid, child_vdso) = match body {
        Body::NewChild { stdio, container: spec, .. } => {
            if let Some(spec) = spec {
                container = Some(Arc::new(take_container(daemon, spec)?));
            }
            container_taken = t0.elapsed();
            let shared_pages = shared_copy.as_ref().map(|g| g.file().read_only_fd());
            let pid = spawn_child(daemon, &image, &plan, credentials, stdio, container.as_deref().zip(spec), shared_pages)?;
            // Forked from our zygote, itself a fork of us: its vDSO is where ours is.
            (pid, daemon.vdso.span())
        }
        Body::Caller { pid, conn } => {
            let at = mitosis_restore::vdso_block_of(pid).map_err(|e| remote_err(ErrorKind::Unsupported, error_chain(&e)))?;
            (prologue_in_caller(&image, &plan, credentials, pid, conn)?, at)
        }
    };
    let spawned = t0.elapsed();
    let pidfd = match pidfd::open(pid) {
        Ok(fd) => Arc::new(fd),
        Err(e) => return Err(remote_err(ErrorKind::Internal, e)),
    };
    if let Some(c) = &container {
        // Before any page is restored, so that all of them are charged there.
        if let Err(e) = c.add(pid) {
            kill_and_reap(&pidfd);
            return Err(remote_err(ErrorKind::Internal, format!("cannot put the child into container {}: {e}", c.name)));
        }
    }
    // A child without a container gets a cgroup of its own all the same: it
    // holds the child's descendants too, which the janitor must find should
    // this daemon die (a forked process can outlive its parent).
    let plain_cgroup = match &container {
        Some(_) => None,
        None => match daemon.pool.plain_cgroup().and_then(|cg| cg.add(pid).map(|()| cg)) {
            Ok(cg) => Some(cg),
            Err(e) => {
                kill_and_reap(&pidfd);
                return Err(remote_err(ErrorKind::Internal, format!("cannot give the child a cgroup: {e}")));
            }
        },
    };
    let added = t0.elapsed();
    let procs = container.as_ref().and_then(|c| c.procs_file()).or_else(|| plain_cgroup.as_ref().and_then(|c| c.procs_file()));
    if let Some(procs) = procs {
        daemon.janitor.watch_cgroup(&procs);
    }
    let keeper = crate::janitor::Janitor::keeper(&daemon.janitor);
    let reply = image.reply_slot.map(|slot| {
        // The pid the child sees itself as (inside its container's PID namespace).
        let info = ChildInfo { seed_id: id.to_string(), seed_host: from.to_string(), generation: image.generation, pid: own_view_pid(pid) };
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
    let own = matches!(origin, Origin::Own(_));
    let source: Box<dyn PageSource> = match origin {
        Origin::Own(seed) => Box::new(crate::own_seed::OwnSeedSource::new(&seed)),
        Origin::Peer(conn) => {
            let remote_source = RemoteSource {
                addr: from.to_string(),
                key: cfg.key.clone(),
                id: id.to_string(),
                generation: image.generation,
                timeout: cfg.fetch_timeout,
                conn: *conn,
            };
            match cached {
                Some(generation) => Box::new(crate::cache::CachedSource::new(remote_source, generation, counters.clone())),
                None => Box::new(remote_source),
            }
        }
    };
    let pager_config = if paging.no_prefetch {
        PagerConfig { window_pages: 1, adaptive: false, max_window_pages: 1, read_ahead: false }
    } else {
        cfg.pager
    };
    let use_working_set = !paging.no_working_set && !paging.no_prefetch;
    let recorder = (use_working_set && working_set.is_empty()).then(|| Arc::new(Recorder::default()));
    let push_pages: u64 = if use_working_set { working_set.iter().map(|r| r.1 / mitosis_sys::PAGE).sum() } else { 0 };
    // The child that records its seed's working set starts with small
    // windows (RECORDING_WINDOW_PAGES), growing only while it streams
    // through memory: a page served with a window but never touched is
    // recorded all the same and pushed to every later child (a Python
    // runtime touches about a third of its 64-page windows' pages). One page
    // per fault recorded best but made a json function's first fork 4x
    // slower than its cold start (933 faults); 8 pages is the compromise.
    let pager_config = if recorder.is_some() {
        PagerConfig { window_pages: RECORDING_WINDOW_PAGES.min(pager_config.window_pages), ..pager_config }
    } else {
        pager_config
    };
    let watch = pidfd.try_clone().map_err(|e| remote_err(ErrorKind::Internal, e))?;
    let notice = if in_place { pidfd::getfd(&pidfd, 2).ok().map(std::fs::File::from) } else { None };
    let patches = reply.as_ref().map(|(slot, bytes)| vec![Patch { addr: slot.addr, bytes: bytes.clone() }]).unwrap_or_default();
    let mut pager_thread = None;
    let push_go = Arc::new(std::sync::atomic::AtomicBool::new(false));
    plan.track_writes = paging.track_writes;
    let (offload, control) = mitosis_pager::offload::channel().map_err(|e| remote_err(ErrorKind::Internal, e))?;
    let restored = restore(Child { pid, pidfd: &pidfd, vdso: child_vdso }, &image, &plan, &daemon.vdso, reply.as_ref().map(|r| r.1.len() as u64), |uffd, remote| {
        let regions = Regions::with_sources(&remote);
        // Eager: everything, in address order; else the recorded working set
        // (seed addresses are the child's, nothing has moved yet).
        let push = if paging.eager {
            regions.spans().into_iter().map(|(start, end)| (start, end - start)).collect()
        } else if use_working_set {
            working_set
        } else {
            Vec::new()
        };
        let pager = Pager::new(uffd, regions, source, pager_config, counters.clone(), Some(watch))
            .with_patches(patches)
            .with_notice(notice)
            .with_recorder(recorder.clone())
            .with_push(push, push_go.clone())
            .with_keeper(Some(keeper))
            .with_write_tracking(paging.track_writes)
            .with_shared(shared_copy.map(|g| Arc::new(g) as Arc<dyn mitosis_pager::SharedPages>))
            .with_control(control);
        let handle = std::thread::Builder::new()
            .name(format!("pager-{pid}"))
            .spawn(move || pager.run())
            .map_err(|e| RestoreError::Incompatible(format!("cannot start a pager thread: {e}")))?;
        pager_thread = Some(handle);
        Ok(())
    });
    if let Err(e) = restored {
        let why = describe_failure(&pidfd, &e);
        // A page the restore itself needed (rseq area) may have failed to come:
        // then the pager's reason is the real one.
        if let Some(Ok(Outcome::Failed(reason))) = pager_thread.map(|t| t.join()) {
            return Err(remote_err(ErrorKind::SeedGone, format!("child killed: {reason}")));
        }
        // What this host cannot give the child (a lock another process
        // holds, a timer id the kernel cannot keep) is the seed's, not ours.
        let kind = match e {
            RestoreError::Incompatible(_) => ErrorKind::Unsupported,
            RestoreError::Refused(_) => ErrorKind::PermissionDenied,
            _ => ErrorKind::Internal,
        };
        return Err(remote_err(kind, why));
    }
    let pager = pager_thread.expect("restore starts the pager before it succeeds");
    push_go.store(true, std::sync::atomic::Ordering::Relaxed);
    daemon.children.add(Arc::new(ChildRecord {
        pid,
        pidfd: pidfd.clone(),
        seed_id: id.to_string(),
        seed_host: from.to_string(),
        uid: image.uid,
        container: container.clone(),
        started: Instant::now(),
        detached,
        offload: Some(std::sync::Mutex::new(crate::offload::Offloader::new(offload, pid))),
    }));
    let total = t0.elapsed();
    let us = |d: std::time::Duration| d.as_micros() as u64;
    tracing::debug!(
        pid,
        own,
        get_seed_us = us(fetched),
        container_us = us(container_taken.saturating_sub(fetched)),
        spawn_us = us(spawned.saturating_sub(container_taken)),
        cgroup_us = us(added.saturating_sub(spawned)),
        restore_us = us(total.saturating_sub(added)),
        total_us = us(total),
        image_bytes,
        working_set_pages = push_pages,
        "resume timeline"
    );
    Ok(Started {
        mm: image.mm,
        pid,
        container,
        plain_cgroup,
        recorder,
        seed: SeedRef { from: from.to_string(), id: id.to_string(), generation: image.generation, own },
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

/// Brings in the pages of the child's command line and environment. The kernel
/// reads them from outside for `/proc/PID/cmdline` and `environ` (ps, top)
/// and does not wait for the pager there: they would read empty.
pub(crate) fn fetch_process_strings(pid: i32, mm: &mitosis_proto::image::MmFields) {
    let (start, end) = (mm.arg_start.min(mm.env_start), mm.arg_end.max(mm.env_end));
    if start == 0 || end <= start || end - start > 1 << 20 {
        return;
    }
    let first = start & !(mitosis_sys::PAGE - 1);
    let pages: Vec<(u64, u64)> = (first..end).step_by(mitosis_sys::PAGE as usize).map(|p| (p, 1)).collect();
    let mut sink = vec![0u8; pages.len()];
    let _ = mitosis_sys::mem::read_ranges(pid, &pages, &mut sink);
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
                None => error_chain(e),
            }
        }
        _ => error_chain(e),
    }
}

fn prologue_for(image: &SeedImage, plan: &RestorePlan, parent: i32, credentials: Option<Credentials>, container: Option<ContainerEntry>) -> Prologue {
    Prologue {
        parent,
        plan: plan.prologue.clone(),
        actions: image.signals.actions.clone(),
        credentials,
        container,
        properties: image.properties.clone(),
    }
}

/// The credentials a child takes (`None`: it keeps the daemon's, for a
/// daemon that is not root). A child runs as its seed's uid and gid with the
/// seed's supplementary groups, but never with more than its resumer holds:
/// for a resumer other than root (whose uid is the seed's, checked before),
/// the seed's gid must be one of the resumer's groups, and the supplementary
/// groups are those the seed and the resumer both have. (A seed of root has
/// a resumer of root.) A child of a seed other than root keeps
/// `CAP_CHECKPOINT_RESTORE` for its restore only, which drops it before any
/// of the seed's code runs: it lets the child take the seed's executable.
fn child_credentials(cred: PeerCred, image: &SeedImage) -> Result<Option<Credentials>, RemoteError> {
    if mitosis_sys::process::euid() != 0 {
        return Ok(None);
    }
    let keep_for_restore = if image.uid == 0 { 0 } else { mitosis_sys::after_fork::CHECKPOINT_RESTORE_CAPABILITY };
    if cred.uid == 0 {
        return Ok(Some(Credentials { uid: image.uid, gid: image.gid, groups: image.groups.clone(), keep_for_restore }));
    }
    let held = resumer_groups(cred).ok_or_else(|| {
        remote_err(ErrorKind::PermissionDenied, format!("cannot read the groups of the resuming process {}", cred.pid))
    })?;
    if !held.contains(&image.gid) {
        return Err(remote_err(
            ErrorKind::PermissionDenied,
            format!("seed {:?} runs as gid {}, which you (uid {}) do not hold", image.id, image.gid, cred.uid),
        ));
    }
    let groups = image.groups.iter().copied().filter(|g| held.contains(g)).collect();
    Ok(Some(Credentials { uid: image.uid, gid: image.gid, groups, keep_for_restore }))
}

/// Every group the process behind `cred` holds (real, effective, saved and
/// supplementary), if it is still that process (its uids are `cred.uid`).
fn resumer_groups(cred: PeerCred) -> Option<Vec<u32>> {
    let status = mitosis_sys::procfs::parse_status(&std::fs::read_to_string(format!("/proc/{}/status", cred.pid)).ok()?);
    let uids = status.uids?;
    if uids[..3].iter().any(|&u| u != cred.uid) {
        return None;
    }
    let mut groups = status.gids?[..3].to_vec();
    groups.extend(status.groups);
    Some(groups)
}

/// Reads what a prologue wrote on its ready pipe (or the caller's
/// connection): `Ok` once it is parked, its own report when it failed on
/// one of the seed's files, or `Err(None)` when it died without one.
fn read_ready(ready: &mut impl std::io::Read) -> Result<(), Option<FileFailure>> {
    let mut record = [0u8; 6];
    let mut got = 0;
    while got < record.len() {
        match ready.read(&mut record[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
        if record[0] == 1 {
            return Ok(());
        }
    }
    Err(FileFailure::parse(&record[..got]))
}

/// The error for a prologue that reported `failure`.
fn file_refusal(failure: FileFailure, plan: &RestorePlan, credentials: Option<&Credentials>) -> RemoteError {
    let kind = if failure.errno == libc::ENOENT { ErrorKind::Unsupported } else { ErrorKind::PermissionDenied };
    remote_err(kind, failure.describe(plan, credentials.map(|c| c.uid)))
}

/// Starts a container of `spec` with a process that only joins it, lets that
/// process exit and tears the container down; says how long each part took.
pub fn bare_container(daemon: &Daemon, spec: &ContainerSpec) -> LocalResponse {
    let t0 = Instant::now();
    let container = match take_container(daemon, spec) {
        Ok(c) => c,
        Err(e) => return LocalResponse::Error(e),
    };
    let taken = t0.elapsed();
    let run = || -> std::io::Result<()> {
        let (mut ready_rx, ready_tx) = std::io::pipe()?;
        let (go_rx, go_tx) = std::io::pipe()?;
        let pid = daemon.spawner.spawn_bare(
            container.holder_pidfd().as_raw_fd(),
            container.spec.join_flags(),
            ready_tx.as_raw_fd(),
            go_rx.as_raw_fd(),
        )?;
        drop((ready_tx, go_rx));
        let pidfd = pidfd::open(pid).map_err(|e| std::io::Error::from_raw_os_error(e.errno))?;
        let mut byte = [0u8; 1];
        let joined = std::io::Read::read(&mut ready_rx, &mut byte)? == 1;
        let added = if joined { container.add(pid) } else { Ok(()) };
        drop(go_tx);
        let exit = pidfd::wait_exit(&pidfd).map_err(|e| std::io::Error::from_raw_os_error(e.errno))?;
        added?;
        match exit {
            Exit::Code(0) if joined => Ok(()),
            other => Err(std::io::Error::other(format!("the process could not join the container ({other:?})"))),
        }
    };
    let started = run();
    let start_us = (t0.elapsed() - taken).as_micros() as u64;
    daemon.pool.retire(container);
    match started {
        Ok(()) => LocalResponse::BareContainer { take_us: taken.as_micros() as u64, start_us, total_us: t0.elapsed().as_micros() as u64 },
        Err(e) => LocalResponse::Error(remote_err(ErrorKind::Internal, format!("bare container: {e}"))),
    }
}

/// A container for a child: a warm one from the pool when the spec allows,
/// with the spec's limits applied.
pub(crate) fn take_container(daemon: &Daemon, spec: &ContainerSpec) -> Result<Container, RemoteError> {
    if let Some(h) = &spec.hostname {
        if h.is_empty() || h.len() > 64 || h.contains('\0') {
            return Err(remote_err(ErrorKind::BadRequest, format!("hostname {h:?} must be 1-64 bytes")));
        }
    }
    let kind = HolderSpec { rootfs: spec.rootfs.clone(), network: spec.network };
    let container = daemon.pool.take(&kind).map_err(|e| {
        let kind = if e.kind() == std::io::ErrorKind::NotFound { ErrorKind::BadRequest } else { ErrorKind::Internal };
        remote_err(kind, format!("cannot make a container: {e}"))
    })?;
    let mut container = container;
    container.apply(&spec.limits).map_err(|e| remote_err(ErrorKind::BadRequest, format!("cannot set the container's limits: {e}")))?;
    Ok(container)
}

/// Has the caller of a resume in place run its prologue; returns its pid once it is parked.
fn prologue_in_caller(
    image: &SeedImage,
    plan: &RestorePlan,
    credentials: Option<Credentials>,
    pid: i32,
    conn: &mut UnixStream,
) -> Result<i32, RemoteError> {
    let threads = mitosis_sys::procfs::thread_count(pid).unwrap_or(0);
    if threads != 1 {
        return Err(remote_err(ErrorKind::Unsupported, format!("the caller has {threads} threads; only a single-threaded process can be resumed in place")));
    }
    let prologue = postcard::to_stdvec(&prologue_for(image, plan, 0, credentials.clone(), None)).map_err(|e| remote_err(ErrorKind::Internal, e))?;
    send(conn, &LocalResponse::InPlace { prologue }).map_err(|e| remote_err(ErrorKind::Internal, e))?;
    match read_ready(conn) {
        Ok(()) => Ok(pid),
        Err(Some(failure)) => Err(file_refusal(failure, plan, credentials.as_ref())),
        Err(None) => Err(remote_err(ErrorKind::Internal, "the caller did not complete its prologue")),
    }
}

fn spawn_child(
    daemon: &Daemon,
    image: &SeedImage,
    plan: &RestorePlan,
    credentials: Option<Credentials>,
    stdio: &[OwnedFd],
    container: Option<(&Container, &ContainerSpec)>,
    shared_pages: Option<std::os::fd::RawFd>,
) -> Result<i32, RemoteError> {
    let forked = |e: std::io::Error| remote_err(ErrorKind::Internal, format!("cannot fork a child: {e}"));
    let entry = container.map(|(c, spec)| ContainerEntry {
        join_flags: c.spec.join_flags(),
        hostname: spec.hostname.as_ref().and_then(|h| std::ffi::CString::new(h.as_str()).ok()),
    });
    let prologue = prologue_for(image, plan, std::process::id() as i32, credentials.clone(), entry);
    let (mut ready_rx, ready_tx) = std::io::pipe().map_err(forked)?;
    let stdio = [stdio[0].as_raw_fd(), stdio[1].as_raw_fd(), stdio[2].as_raw_fd()];
    let holder = container.map(|(c, _)| c.holder_pidfd().as_raw_fd());
    let pid = daemon.spawner.spawn(&prologue, stdio, ready_tx.as_raw_fd(), holder, shared_pages).map_err(forked)?;
    drop(ready_tx);
    // Parked and ready, or failed on a file (it exits: reap it here), or it
    // died otherwise (the caller reads its exit code).
    if let Err(Some(failure)) = read_ready(&mut ready_rx) {
        if let Ok(pidfd) = pidfd::open(pid) {
            let _ = pidfd::wait_exit(&pidfd);
        }
        return Err(file_refusal(failure, plan, credentials.as_ref()));
    }
    Ok(pid)
}
