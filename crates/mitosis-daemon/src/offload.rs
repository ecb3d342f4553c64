//! Offloading an idle child's memory to the memory node (`mitosis offload`,
//! FaaSMem's offload, over TCP): the daemon's side of
//! [`mitosis_pager::offload`], whose module doc is the protocol with the
//! child's pager.
//!
//! The child is frozen (every thread stopped, `mitosis_capture::freeze`)
//! for the whole offload. Its pager lists what it holds; the daemon reads
//! the changed pages, puts those that are not all zero on the memory node
//! (all of them, or the offload ends and nothing is dropped), tells the
//! pager, and drops every listed page inside the child. The child is then
//! let go, with its pages brought back by its pager as it touches them.
//!
//! A cold-started instance has no pager until its first offload: that
//! offload *adopts* its memory first, while it is frozen
//! (`mitosis_capture::freeze::Frozen::adopt_userfaultfd`), and starts a
//! pager for it that has no seed ([`mitosis_pager::NoSeed`]): every page it
//! holds is its own, so every page not all zero goes to the node.
//!
//! Each child gets its own instance name on the node (`child-PID-RANDOM`),
//! and two connections to it: the daemon's (puts, and the drop of its pages
//! when the child ends) and its pager's (gets, so that a fault never waits
//! behind an offload).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mitosis_memnode::{MemnodeClient, MemnodeError};
use mitosis_pager::offload::{Command, Reply, ScanLimits, Scanned};
use mitosis_pager::{Counters, NoSeed, NodeSource, OffloadHandle, Outcome, Pager, Regions};
use mitosis_proto::local::OffloadReport;
use mitosis_proto::memnode::{MAX_BATCH_BYTES, MAX_RUNS};
use mitosis_proto::{error_chain, ErrorKind, RemoteError};
use mitosis_sys::uffd::{self, features, Uffd};
use mitosis_sys::{mem, usize_of, PAGE};

use crate::children::{resident_bytes, ChildRecord};
use crate::Daemon;

/// How long a memory node may take to connect or to answer.
const NODE_TIMEOUT: Duration = Duration::from_secs(10);

/// A child's offload state: its pager's handle and its node connection.
pub struct Offloader {
    /// `None`: a process no pager serves yet, adopted at its first offload.
    handle: Option<OffloadHandle>,
    /// The pager of an adopted process (a resumed child's pager is its
    /// resume's): joined when the process has ended.
    adopted_pager: Option<std::thread::JoinHandle<Outcome>>,
    instance: String,
    /// The daemon's own connection, made at the first offload.
    node: Option<MemnodeClient>,
    /// The pager has its own connection (handed over at the first commit
    /// that put pages).
    node_given: bool,
}

impl Offloader {
    /// The offloader of a child that `handle`'s pager serves.
    pub fn new(handle: OffloadHandle, pid: i32) -> Offloader {
        Offloader { handle: Some(handle), ..Offloader::adoptable(pid) }
    }

    /// The offloader of a process no pager serves (a cold-started
    /// instance): its first offload adopts it.
    pub fn adoptable(pid: i32) -> Offloader {
        let mut salt = [0u8; 8];
        let _ = getrandom::getrandom(&mut salt);
        Offloader {
            handle: None,
            adopted_pager: None,
            instance: format!("child-{pid}-{:016x}", u64::from_le_bytes(salt)),
            node: None,
            node_given: false,
        }
    }

    /// Why the pager of an adopted process killed it, if it did; call once
    /// the process has ended (the pager then ends too).
    pub fn adopted_failure(&mut self) -> Option<String> {
        match self.adopted_pager.take()?.join() {
            Ok(Outcome::Failed(reason)) => Some(reason),
            Ok(Outcome::Exited) => None,
            Err(_) => Some("its pager thread panicked".into()),
        }
    }

    fn handle(&self) -> Result<&OffloadHandle, RemoteError> {
        self.handle.as_ref().ok_or_else(|| fail(ErrorKind::Unsupported, "it was never offloaded, so nothing of it is offloaded"))
    }

    /// Forgets the child's pages on the node (the child has ended).
    pub fn release(&mut self) {
        if let Some(node) = &mut self.node {
            if let Err(e) = node.drop_instance(&self.instance) {
                tracing::warn!(instance = %self.instance, error = %e, "could not drop an ended child's pages on the memory node");
            }
        }
    }
}

/// The pager's connection to the node: gets under the child's instance name.
struct NodeConn {
    client: MemnodeClient,
    instance: String,
    connect: Connect,
}

/// What a new connection needs.
#[derive(Clone)]
struct Connect {
    addr: String,
    key: mitosis_proto::auth::ClusterKey,
    protection: mitosis_proto::secure::Protection,
}

impl Connect {
    fn open(&self) -> Result<MemnodeClient, MemnodeError> {
        MemnodeClient::connect(&self.addr, &self.key, self.protection, NODE_TIMEOUT)
    }
}

impl NodeSource for NodeConn {
    fn ask(&mut self, runs: &[(u64, u64)]) -> Result<(), String> {
        self.client.ask_get(&self.instance, runs).map_err(|e| error_chain(&e))
    }

    fn take(&mut self, runs: &[(u64, u64)], out: &mut [u8]) -> Result<(), String> {
        self.client.take_get(&self.instance, runs, out).map_err(|e| error_chain(&e))
    }

    fn duplicate(&self) -> Result<Box<dyn NodeSource>, String> {
        let client = self.connect.open().map_err(|e| error_chain(&e))?;
        Ok(Box::new(NodeConn { client, instance: self.instance.clone(), connect: self.connect.clone() }))
    }
}

/// `child`'s offload state, locked (a child another daemon's pager serves has none).
fn offloader_of(child: &ChildRecord) -> Result<std::sync::MutexGuard<'_, Offloader>, RemoteError> {
    let Some(offloader) = &child.offload else {
        return Err(fail(ErrorKind::Unsupported, format!("child {} cannot be offloaded: another daemon's pager serves it", child.pid)));
    };
    Ok(offloader.lock().unwrap_or_else(|e| e.into_inner()))
}

fn fail(kind: ErrorKind, what: impl Into<String>) -> RemoteError {
    RemoteError::new(kind, what.into())
}

fn node_error(e: &MemnodeError) -> RemoteError {
    fail(e.kind(), error_chain(e))
}

/// Offloads `child`'s memory to this daemon's memory node: all of it, or
/// what `limits` allow.
pub fn offload(daemon: &Daemon, child: &ChildRecord, limits: ScanLimits) -> Result<OffloadReport, RemoteError> {
    let t0 = Instant::now();
    let Some(addr) = daemon.config.memnode.clone() else {
        return Err(fail(ErrorKind::Unsupported, "this daemon has no memory node (start it with --memnode ADDR)"));
    };
    let mut offloader = offloader_of(child)?;
    let connect = Connect { addr, key: daemon.config.key.current(), protection: daemon.config.key.protection() };
    if offloader.node.is_none() {
        offloader.node = Some(connect.open().map_err(|e| node_error(&e))?);
    }
    let pid = child.pid;
    let rss_before_bytes = resident_bytes(pid);
    let frozen = mitosis_capture::freeze::Frozen::freeze(pid, &daemon.vdso).map_err(|e| fail(ErrorKind::Internal, error_chain(&e)))?;
    let frozen_at = Instant::now();
    let result = match offloader.handle {
        Some(_) => Ok(()),
        None => adopt(daemon, &frozen, child, &mut offloader),
    }
    .and_then(|()| offload_frozen(&mut offloader, &frozen, &connect, pid, limits));
    let thawed = frozen.thaw();
    let frozen_us = micros(frozen_at.elapsed());
    let mut report = result?;
    thawed.map_err(|e| fail(ErrorKind::Internal, error_chain(&e)))?;
    report.rss_before_bytes = rss_before_bytes;
    report.rss_after_bytes = resident_bytes(pid);
    report.frozen_us = frozen_us;
    report.total_us = micros(t0.elapsed());
    tracing::info!(pid, pages_put = report.pages_put, clean = report.pages_clean_at_seed + report.pages_clean_at_node, us = report.total_us, "child offloaded");
    Ok(report)
}

/// Takes over the memory of frozen `child`, which no pager serves yet: a
/// userfaultfd made inside it, and a pager with no seed serving it from now
/// on, with write tracking (a page back from the node and not written since
/// is not put again).
fn adopt(daemon: &Daemon, frozen: &mitosis_capture::freeze::Frozen, child: &ChildRecord, offloader: &mut Offloader) -> Result<(), RemoteError> {
    let pid = child.pid;
    let internal = |e: String| fail(ErrorKind::Internal, e);
    let device = uffd::open_device().map_err(|e| fail(ErrorKind::Unsupported, format!("cannot adopt child {pid}'s memory: {e}")))?;
    let fd = match frozen.adopt_userfaultfd(&child.pidfd, &device) {
        Ok(fd) => fd,
        Err(e @ mitosis_capture::CaptureError::LeftDescriptors { .. }) => {
            // Its own code must never hold the device: it does not run on.
            tracing::error!(pid, error = %e, "killing a process the takeover of whose memory went wrong");
            let _ = mitosis_sys::pidfd::send_signal(&child.pidfd, libc::SIGKILL);
            return Err(internal(error_chain(&e)));
        }
        Err(e) => return Err(internal(error_chain(&e))),
    };
    let uffd = Uffd::from_fd(fd);
    uffd.api(features::PAGER | features::WP_ASYNC).map_err(|e| internal(format!("setting up child {pid}'s userfaultfd: {e}")))?;
    let (handle, control) = mitosis_pager::offload::channel().map_err(|e| internal(e.to_string()))?;
    let watch = child.pidfd.try_clone().map_err(|e| internal(e.to_string()))?;
    let pager = Pager::new(uffd, Regions::default(), Box::new(NoSeed), daemon.config.pager, Arc::new(Counters::default()), Some(watch))
        .with_keeper(Some(crate::janitor::Janitor::keeper(&daemon.janitor)))
        .with_write_tracking(true)
        .with_control(control)
        .adopting();
    let thread = std::thread::Builder::new()
        .name(format!("pager-{pid}"))
        .spawn(move || pager.run())
        .map_err(|e| internal(format!("cannot start a pager thread: {e}")))?;
    offloader.handle = Some(handle);
    offloader.adopted_pager = Some(thread);
    tracing::info!(pid, "adopted a running process's memory");
    Ok(())
}

/// Ends the current phase of `child`'s packets ([`mitosis_pager::packets`]),
/// adopting its memory first if no pager serves it yet (a cold-started
/// instance: the first barrier is at its runtime's start). Returns the
/// phase that runs from now on, the bytes written in the one it ended, and
/// how long the barrier took: all of it (an adoption before it not
/// counted), and its pager's part alone.
pub fn barrier(daemon: &Daemon, child: &ChildRecord) -> Result<(u32, u64, Duration, Duration), RemoteError> {
    let mut offloader = offloader_of(child)?;
    if offloader.handle.is_none() {
        let frozen = mitosis_capture::freeze::Frozen::freeze(child.pid, &daemon.vdso).map_err(|e| fail(ErrorKind::Internal, error_chain(&e)))?;
        let adopted = adopt(daemon, &frozen, child, &mut offloader);
        let thawed = frozen.thaw();
        adopted?;
        thawed.map_err(|e| fail(ErrorKind::Internal, error_chain(&e)))?;
    }
    let t = Instant::now();
    match offloader.handle()?.ask(Command::Barrier { pid: child.pid }).map_err(|e| fail(ErrorKind::Internal, e))? {
        Reply::Barrier { phase, written, took } => Ok((phase, written, t.elapsed(), took)),
        Reply::Refused(why) => Err(fail(ErrorKind::Unsupported, format!("no packets for child {}: {why}", child.pid))),
        _ => Err(fail(ErrorKind::Internal, "the pager answered a barrier out of turn")),
    }
}

/// Starts bringing `child`'s offloaded memory back (prefetch on reuse): all
/// of it, or the packets from phase `from_phase` on; returns the bytes to
/// come from the node and from the seed.
pub fn prefetch(child: &ChildRecord, from_phase: Option<u32>) -> Result<(u64, u64), RemoteError> {
    let offloader = offloader_of(child)?;
    match offloader.handle()?.ask(Command::Prefetch { from_phase }).map_err(|e| fail(ErrorKind::Internal, e))? {
        Reply::Prefetching { from_node, from_seed } => Ok((from_node, from_seed)),
        _ => Err(fail(ErrorKind::Internal, "the pager answered a prefetch out of turn")),
    }
}

/// The offload of a frozen child: scan, put, commit, drop, settle.
fn offload_frozen(
    offloader: &mut Offloader,
    frozen: &mitosis_capture::freeze::Frozen,
    connect: &Connect,
    pid: i32,
    limits: ScanLimits,
) -> Result<OffloadReport, RemoteError> {
    let internal = |e: String| fail(ErrorKind::Internal, e);
    let scanned = match offloader.handle()?.ask(Command::Scan { pid, limits }).map_err(internal)? {
        Reply::Scanned(s) => s,
        Reply::Refused(why) => return Err(fail(ErrorKind::Unsupported, format!("child {pid} cannot be offloaded: {why}"))),
        _ => return Err(internal("the pager answered a scan out of turn".into())),
    };
    let Put { offloaded, zeroed, node_bytes } = put_changed(offloader, &scanned, pid)?;
    // The pager's own connection, handed over with the first commit.
    let node: Option<Box<dyn NodeSource>> = if offloaded.is_empty() || offloader.node_given {
        None
    } else {
        let client = connect.open().map_err(|e| node_error(&e))?;
        Some(Box::new(NodeConn { client, instance: offloader.instance.clone(), connect: connect.clone() }))
    };
    let gave_node = node.is_some();
    let pages_put = offloaded.iter().map(|r| r.1 / PAGE).sum();
    let pages_zero = zeroed.iter().map(|r| r.1 / PAGE).sum::<u64>() + scanned.zero / PAGE;
    let committed = offloader.handle()?.ask(Command::Commit { offloaded, zeroed, node });
    let dropped = match committed {
        Ok(Reply::Committed { drop }) => {
            offloader.node_given |= gave_node;
            frozen.discard(&drop).map_err(|e| internal(error_chain(&e)))
        }
        Ok(_) => Err(internal("the pager answered a commit out of turn".into())),
        Err(e) => Err(internal(e)),
    };
    // Whatever happened: a commit the pager takes late must not leave it
    // taking the child's own drops for the daemon's.
    let settled = offloader.handle()?.ask(Command::Settled).map_err(internal);
    dropped?;
    settled?;
    Ok(OffloadReport {
        pid,
        pages_put,
        pages_clean_at_seed: scanned.clean_at_seed / PAGE,
        pages_clean_at_node: scanned.clean_at_node / PAGE,
        pages_zero,
        node_bytes,
        ..OffloadReport::default()
    })
}

/// What [`put_changed`] did: runs (child address, length) put on the node
/// and found all zero, and what the node holds for the child.
struct Put {
    offloaded: Vec<(u64, u64)>,
    zeroed: Vec<(u64, u64)>,
    node_bytes: u64,
}

/// Reads the changed pages of the scan and puts those that are not all
/// zero on the node, in batches.
fn put_changed(offloader: &mut Offloader, scanned: &Scanned, pid: i32) -> Result<Put, RemoteError> {
    let mut offloaded = Vec::new();
    let mut zeroed: Vec<(u64, u64)> = Vec::new();
    let mut node_bytes = 0;
    let node = offloader.node.as_mut().ok_or_else(|| fail(ErrorKind::Internal, "no memory node connection"))?;
    for batch in &batches(&scanned.changed) {
        let ranges: Vec<(u64, u64)> = batch.iter().map(|r| (r.0, r.2)).collect();
        let total: u64 = ranges.iter().map(|r| r.1).sum();
        let mut buf = vec![0u8; usize_of(total)];
        mem::read_ranges_fully(pid, None, &ranges, &mut buf).map_err(|e| fail(ErrorKind::Internal, format!("reading child {pid}'s changed pages: {e}")))?;
        // Page by page: all-zero pages are dropped, the rest put under their keys.
        let mut puts: Vec<(u64, &[u8])> = Vec::new();
        let mut off = 0usize;
        for &(child, key, len) in batch {
            for p in (0..len).step_by(usize_of(PAGE)) {
                let page = &buf[off..off + usize_of(PAGE)];
                off += usize_of(PAGE);
                if page.iter().all(|&b| b == 0) {
                    push_run(&mut zeroed, child + p);
                    continue;
                }
                match puts.last_mut() {
                    Some((k, data)) if *k + data.len() as u64 == key + p && data.as_ptr_range().end == page.as_ptr() => {
                        let start = off - usize_of(PAGE) - data.len();
                        *data = &buf[start..off];
                    }
                    _ => puts.push((key + p, page)),
                }
                push_run(&mut offloaded, child + p);
            }
        }
        if !puts.is_empty() {
            let receipt = node.put(&offloader.instance, &puts).map_err(|e| node_error(&e))?;
            node_bytes = receipt.instance_used_bytes;
        }
    }
    Ok(Put { offloaded, zeroed, node_bytes })
}

/// Most bytes and runs of one put (a quarter of what the node takes).
const PUT_BYTES: u64 = MAX_BATCH_BYTES / 4;
const PUT_RUNS: usize = MAX_RUNS / 4;

/// The changed runs (child address, key, length), in batches a put takes;
/// a run longer than a batch is cut.
fn batches(changed: &[(u64, u64, u64)]) -> Vec<Vec<(u64, u64, u64)>> {
    let mut out: Vec<Vec<(u64, u64, u64)>> = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0u64;
    for &(mut child, mut key, mut len) in changed {
        while len > 0 {
            if bytes == PUT_BYTES || current.len() == PUT_RUNS {
                out.push(std::mem::take(&mut current));
                bytes = 0;
            }
            let take = len.min(PUT_BYTES - bytes);
            current.push((child, key, take));
            bytes += take;
            (child, key, len) = (child + take, key + take, len - take);
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Adds the page at `page` to `runs` (start, length), joining the last run.
fn push_run(runs: &mut Vec<(u64, u64)>, page: u64) {
    match runs.last_mut() {
        Some(last) if last.0 + last.1 == page => last.1 += PAGE,
        _ => runs.push((page, PAGE)),
    }
}

pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The lock a child record holds its offloader under.
pub type OffloadSlot = Mutex<Offloader>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_stay_within_a_put_and_cut_long_runs() {
        let runs = [(0, PAGE, PUT_BYTES / 2), (PUT_BYTES, 9 * PUT_BYTES, PUT_BYTES), (8 * PUT_BYTES, 20 * PUT_BYTES, PAGE)];
        let b = batches(&runs);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0], vec![(0, PAGE, PUT_BYTES / 2), (PUT_BYTES, 9 * PUT_BYTES, PUT_BYTES / 2)]);
        assert_eq!(b[1], vec![(PUT_BYTES * 3 / 2, PUT_BYTES * 19 / 2, PUT_BYTES / 2), (8 * PUT_BYTES, 20 * PUT_BYTES, PAGE)]);
        assert!(b.iter().all(|batch| batch.iter().map(|r| r.2).sum::<u64>() <= PUT_BYTES));
        assert!(batches(&[]).is_empty());
    }

    #[test]
    fn runs_join_neighbouring_pages() {
        let mut runs = Vec::new();
        for p in [0, PAGE, 3 * PAGE] {
            push_run(&mut runs, p);
        }
        assert_eq!(runs, vec![(0, 2 * PAGE), (3 * PAGE, PAGE)]);
    }
}
