//! Offloading a served process's memory: what a pager does for the daemon
//! that drops the pages of an idle child (FaaSMem's offload), and the memory
//! node its offloaded pages come back from.
//!
//! The daemon drives an offload in three steps, each a [`Command`] sent
//! through the child's [`OffloadHandle`] while the child is frozen (every
//! thread in a ptrace stop, so that no page of it changes meanwhile):
//!
//! 1. [`Command::Scan`]: the pager lists the child's pages that hold memory
//!    in the ranges its userfaultfd serves (`PAGEMAP_SCAN`). A page that
//!    came from the seed, or back from the memory node, and was not written
//!    since (with write tracking: `UFFD_FEATURE_WP_ASYNC`) is *clean*: its
//!    copy is where it came from, and dropping it costs no transfer. Every
//!    other page is *changed*: the daemon must read it and put it on the
//!    memory node (or find it all zero).
//! 2. [`Command::Commit`]: the daemon has put the changed pages (the memory
//!    node holds them, checked by digest) and says which were all zero. The
//!    pager now counts every listed page as where its copy lives (seed, node,
//!    zero) and expects the `REMOVE` events of the daemon's `MADV_DONTNEED`
//!    over them, which it must not take for the child's own (those pages
//!    would read as zero). It answers with the ranges to drop.
//! 3. [`Command::Settled`]: the drop is done (or failed): `REMOVE` events are
//!    the child's own again.
//!
//! [`Command::Prefetch`] brings an offloaded child's memory back ahead of its
//! touches (prefetch on reuse, which FaaSMem does not do): its offloaded
//! pages from the node in batches of [`PREFETCH_BATCH`], and the pages
//! offloads dropped unchanged from the seed, through the pager's push; a
//! fault waits for one batch at most.
//!
//! Nothing is dropped before the memory node holds it: a refused put (node
//! full, node gone) ends the offload before step 2 and the child keeps all
//! its memory. A later touch of a dropped page faults, and the pager brings
//! it back from where it lives, by the window, like any remote page; if that
//! fails the page is poisoned and the child killed with the reason, as for
//! a seed page: never a wrong page, never a zero.

use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;

use mitosis_sys::{mem, procfs, usize_of, PAGE};

use crate::{PageState, Pager};

/// Where offloaded pages come back from: the memory node, under this
/// child's instance name. The pager owns no sockets; the daemon makes it.
pub trait NodeSource: Send {
    /// Asks for `runs` (page-aligned keys and lengths) without waiting;
    /// answers come in the order asked.
    fn ask(&mut self, runs: &[(u64, u64)]) -> Result<(), String>;
    /// Takes the answer to the oldest [`NodeSource::ask`], for those `runs`:
    /// their bytes back to back into `out`, every page checked against its
    /// digest.
    fn take(&mut self, runs: &[(u64, u64)], out: &mut [u8]) -> Result<(), String>;
    /// An independent connection, for a forked child's pager.
    fn duplicate(&self) -> Result<Box<dyn NodeSource>, String>;
}

/// What a scan may list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanLimits {
    /// At most this many bytes of pages that hold memory (pages of the zero
    /// page, which hold none, always come along): the clean ones first,
    /// which cost nothing to drop, then the changed ones, each in address
    /// order. `None`: all of them. (This kernel cannot tell which pages
    /// were used last: no MGLRU, no idle-page tracking.)
    pub budget: Option<u64>,
    /// Pages unchanged since they came from the seed may be dropped as the
    /// seed's (`false`: they are put on the memory node like changed ones,
    /// as FaaSMem, which has no seed, must).
    pub seed_backed: bool,
    /// Only pages last touched before this phase ([`crate::packets`]): an
    /// offload by packet.
    pub older_than: Option<u32>,
}

impl Default for ScanLimits {
    fn default() -> Self {
        ScanLimits { budget: None, seed_backed: true, older_than: None }
    }
}

/// Where a scanned page's copy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    AtSeed,
    AtNode,
    Changed,
}

/// The runs of `found` a scan lists within `budget` bytes: clean ones
/// first, then changed ones, each in address order (a run is cut at the
/// budget, on a page boundary).
fn within_budget(found: Vec<(u64, u64, Found)>, budget: Option<u64>) -> Vec<(u64, u64, Found)> {
    let Some(mut left) = budget else { return found };
    let (clean, changed): (Vec<_>, Vec<_>) = found.into_iter().partition(|r| r.2 != Found::Changed);
    let mut out = Vec::new();
    for (start, end, kind) in clean.into_iter().chain(changed) {
        let take = (end - start).min(left / PAGE * PAGE);
        if take == 0 {
            break;
        }
        out.push((start, start + take, kind));
        left -= take;
    }
    out.sort_by_key(|r| r.0);
    out
}

/// A request of the daemon to a child's pager.
pub enum Command {
    /// List the resident pages of process `pid` (the pager's own), within `limits`.
    Scan { pid: i32, limits: ScanLimits },
    /// The changed pages are held by the node (`offloaded`) or were all zero
    /// (`zeroed`); `node` is the source to bring them back from (the first
    /// commit hands it over).
    Commit { offloaded: Vec<(u64, u64)>, zeroed: Vec<(u64, u64)>, node: Option<Box<dyn NodeSource>> },
    /// The pages are dropped (or the drop failed).
    Settled,
    /// Bring the offloaded pages back, ahead of the child's touches: every
    /// one, or those last touched in this phase or later.
    Prefetch { from_phase: Option<u32> },
    /// End the current phase of process `pid` (a packet barrier): its
    /// pages written since the last barrier are marked as touched in it.
    Barrier { pid: i32 },
}

/// What a scan found, in bytes and ranges (child addresses).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scanned {
    /// Clean pages whose copy is at the seed host (or this host's cache).
    pub clean_at_seed: u64,
    /// Clean pages whose copy is on the memory node already.
    pub clean_at_node: u64,
    /// Pages to read and put on the node (or found all zero): (child
    /// address, key on the node, length).
    pub changed: Vec<(u64, u64, u64)>,
    /// The zero page mapped (nothing to keep).
    pub zero: u64,
}

/// A pager's answer.
pub enum Reply {
    Scanned(Scanned),
    /// The ranges to drop (`MADV_DONTNEED`), every one inside memory the
    /// pager serves: a later touch faults and is served.
    Committed { drop: Vec<(u64, u64)> },
    Settled,
    /// A prefetch started: bytes to come from the node and from the seed.
    Prefetching { from_node: u64, from_seed: u64 },
    /// A barrier: the phase that runs from now on, the bytes written in the
    /// one it ended, and how long the pager's own part took.
    Barrier { phase: u32, written: u64, took: Duration },
    Refused(String),
}

/// Bytes of offloaded pages a prefetch asks the node for at once, and how
/// many such requests it keeps on the wire (the node reads and sends the
/// next while the last is copied in): a fault behind them waits for that
/// much at most. Smaller requests, more of them: the pager starts copying
/// the first sooner (`bench offload`: 1 MiB x 2 brought 64 MiB back at 0.49
/// of raw TCP, 512 KiB x 4 at 0.55 and 256 KiB x 6 at 0.57 in one session).
pub const PREFETCH_BATCH: u64 = 256 << 10;
const PREFETCH_DEPTH: usize = 6;

/// How long the daemon waits for its child's pager to answer (a pager
/// busy with a fetch answers when it is done).
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// The daemon's end: sends commands to one child's pager.
pub struct OffloadHandle {
    commands: mpsc::Sender<Command>,
    replies: mpsc::Receiver<Reply>,
    /// A byte here wakes the pager's poll.
    wake: UnixStream,
}

/// The pager's end.
pub(crate) struct Control {
    pub commands: mpsc::Receiver<Command>,
    pub replies: mpsc::Sender<Reply>,
    pub wake: UnixStream,
}

/// A connected handle and control.
pub fn channel() -> std::io::Result<(OffloadHandle, ControlEnd)> {
    let (ours, theirs) = UnixStream::pair()?;
    theirs.set_nonblocking(true)?;
    let (command_tx, command_rx) = mpsc::channel();
    let (reply_tx, reply_rx) = mpsc::channel();
    Ok((
        OffloadHandle { commands: command_tx, replies: reply_rx, wake: ours },
        ControlEnd(Control { commands: command_rx, replies: reply_tx, wake: theirs }),
    ))
}

/// The pager's end of a [`channel`], for [`crate::Pager::with_control`].
pub struct ControlEnd(pub(crate) Control);

impl OffloadHandle {
    /// Sends `command` and waits for the pager's answer. An error when the
    /// pager has ended (the child exited) or does not answer in time.
    pub fn ask(&self, command: Command) -> Result<Reply, String> {
        use std::io::Write;
        let gone = || "the child's pager has ended (the child exited)".to_string();
        // Answers to earlier commands that came after their wait ended.
        while self.replies.try_recv().is_ok() {}
        self.commands.send(command).map_err(|_| gone())?;
        (&self.wake).write_all(&[1]).map_err(|_| gone())?;
        match self.replies.recv_timeout(ANSWER_WITHIN) {
            Ok(reply) => Ok(reply),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(format!("the child's pager did not answer within {ANSWER_WITHIN:?}")),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(gone()),
        }
    }
}

impl Control {
    /// Empties the wake-up socket.
    pub fn drain_wake(&self) {
        use std::io::Read;
        let mut buf = [0u8; 64];
        while matches!((&self.wake).read(&mut buf), Ok(n) if n > 0) {}
    }
}

/// The ranges of process `pid` registered with a userfaultfd for missing
/// pages (`um` in `/proc/PID/smaps`): the memory a pager serves. Pages
/// anywhere else are never dropped (nobody would bring them back). Locked
/// ranges (`lo`: `mlock`) are left alone: the process asked for them to
/// stay, and `MADV_DONTNEED` refuses them.
fn served_ranges(pid: i32) -> Result<Vec<(u64, u64)>, String> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).map_err(|e| format!("reading /proc/{pid}/smaps: {e}"))?;
    Ok(procfs::parse_smaps_flags(&smaps)
        .into_iter()
        .filter(|(_, _, flags)| flags.contains(&"um") && !flags.contains(&"lo"))
        .map(|(start, end, _)| (start, end))
        .collect())
}

/// Is this mapping private anonymous memory a userfaultfd can serve
/// (`MISSING` faults work on anonymous, shmem and hugetlb memory only; a
/// private file mapping's written pages stay where they are)? Readable and
/// writable: a `PROT_NONE` guard holds nothing.
fn adoptable(map: &procfs::MapsEntry) -> bool {
    let anonymous = map.inode == 0 && (map.name.is_empty() || map.name == "[heap]" || map.name == "[stack]" || map.name.starts_with("[anon:"));
    anonymous && !map.shared && map.read && map.write
}

/// First key a pager gives a page on the memory node (keys are page-aligned
/// and never 0, which means "none").
pub(crate) const FIRST_KEY: u64 = PAGE;

impl Pager {
    /// Answers the daemon's commands waiting on the control channel.
    pub(crate) fn take_commands(&mut self) {
        let Some(control) = &self.control else { return };
        control.drain_wake();
        while let Some(command) = self.control.as_ref().and_then(|c| c.commands.try_recv().ok()) {
            let reply = match command {
                Command::Scan { pid, limits } => self.scan(pid, limits).map_or_else(Reply::Refused, Reply::Scanned),
                Command::Commit { offloaded, zeroed, node } => {
                    if node.is_some() {
                        self.node = node;
                    }
                    Reply::Committed { drop: self.commit(&offloaded, &zeroed) }
                }
                Command::Settled => {
                    self.dropping.clear();
                    Reply::Settled
                }
                Command::Prefetch { from_phase } => self.start_prefetch(from_phase),
                Command::Barrier { pid } => {
                    let t = std::time::Instant::now();
                    self.barrier(pid).map_or_else(Reply::Refused, |(phase, written)| Reply::Barrier { phase, written, took: t.elapsed() })
                }
            };
            if let Some(c) = &self.control {
                let _ = c.replies.send(reply);
            }
        }
    }

    /// Registers the adopted process's private anonymous memory that no
    /// userfaultfd serves yet (nothing for a process that was not adopted),
    /// so that its pages can be offloaded and served back. Its pages are not in any region: they
    /// are the process's own, and a page it never touched faults to a zero
    /// page, as the kernel would have given it.
    fn adopt_new_memory(&mut self, pid: i32) -> Result<(), String> {
        let Some(registered) = &self.adopted else { return Ok(()) };
        // `maps`, not `smaps`: a barrier runs this, and `smaps` walks every
        // page table. A mapping is registered again only when its bounds
        // are new (registering a registered range again changes nothing);
        // a locked one is registered too, and left alone by offloads.
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).map_err(|e| format!("reading /proc/{pid}/maps: {e}"))?;
        let mut seen = std::collections::HashSet::new();
        for map in procfs::parse_maps(&maps)?.iter().filter(|m| adoptable(m)) {
            seen.insert((map.start, map.end));
            if registered.contains(&(map.start, map.end)) {
                continue;
            }
            if let Err(e) = self.uffd.register(map.start, map.end - map.start, self.track_writes) {
                // Left out: its pages stay, they are never offloaded. Another
                // userfaultfd of the process's own (EBUSY) is one reason.
                tracing::debug!(pid, start = map.start, end = map.end, error = %e, "an adopted process's mapping was not registered");
            }
        }
        self.adopted = Some(seen);
        Ok(())
    }

    /// Ends the current phase: the pages written since the last barrier
    /// were touched in it (and are write-protected again).
    fn barrier(&mut self, pid: i32) -> Result<(u32, u64), String> {
        if !self.track_writes {
            return Err("its pages are not tracked for writes (resume it with --track-writes)".into());
        }
        self.adopt_new_memory(pid)?;
        let mut written = 0;
        // One scan of the whole address space: the kernel skips memory
        // that is not tracked for writes without walking it.
        let runs = mem::take_written_runs(pid, 0, mem::USER_END).map_err(|e| format!("taking the pages written since the last barrier: {e}"))?;
        for (s, e) in runs {
            self.phases.touch_range(s, e);
            // Protected again from here on, so a later scan would take them
            // for clean: what they hold is no longer their copy's at the
            // seed or on the node, whatever that scan says.
            self.regions.replace(s, e, PageState::Served, PageState::Filled);
            self.regions.replace(s, e, PageState::Restored, PageState::Filled);
            written += e - s;
        }
        Ok((self.phases.end_phase(), written))
    }

    fn scan(&mut self, pid: i32, limits: ScanLimits) -> Result<Scanned, String> {
        if self.forked {
            return Err("it has forked, and its children's pagers would read the pages it offloads (offloading a process that forked is not built)".into());
        }
        self.adopt_new_memory(pid)?;
        self.scanned_clean.clear();
        let mut scanned = Scanned::default();
        let mut zero = Vec::new();
        let mut found: Vec<(u64, u64, Found)> = Vec::new();
        for (start, end) in served_ranges(pid)? {
            let runs = mem::resident_runs(pid, start, end).map_err(|e| format!("scanning the pages of {start:#x}-{end:#x}: {e}"))?;
            for run in runs {
                if run.zero_page {
                    scanned.zero += run.end - run.start;
                    zero.push((run.start, run.end));
                    continue;
                }
                self.regions.cover(run.start, run.end);
                let clean = self.track_writes && !run.written;
                let mut page = run.start;
                while page < run.end {
                    if limits.older_than.is_some_and(|phase| self.phases.of(page) >= phase) {
                        page += PAGE;
                        continue;
                    }
                    let kind = match self.regions.lookup(page).map(|l| l.0) {
                        // Never in the process: a "swapped" page there is
                        // the write-protect marker a drop leaves in a
                        // mapping of the shared copy (a file), not a page.
                        // Reading it would fault while this pager waits.
                        Some(PageState::Remote | PageState::Offloaded) => {
                            page += PAGE;
                            continue;
                        }
                        Some(PageState::Served) if clean && limits.seed_backed => Found::AtSeed,
                        Some(PageState::Restored) if clean => Found::AtNode,
                        _ => Found::Changed,
                    };
                    match found.last_mut() {
                        Some(last) if last.1 == page && last.2 == kind => last.1 += PAGE,
                        _ => found.push((page, page + PAGE, kind)),
                    }
                    page += PAGE;
                }
            }
        }
        for (start, end, kind) in within_budget(found, limits.budget) {
            match kind {
                Found::AtSeed | Found::AtNode => {
                    *(if kind == Found::AtSeed { &mut scanned.clean_at_seed } else { &mut scanned.clean_at_node }) += end - start;
                    self.scanned_clean.push((start, end));
                }
                Found::Changed => {
                    for page in (start..end).step_by(usize_of(PAGE)) {
                        let key = self.regions.key_of(page, &mut self.next_key).ok_or_else(|| format!("no region at {page:#x} after covering it"))?;
                        match scanned.changed.last_mut() {
                            Some(r) if r.0 + r.2 == page && r.1 + r.2 == key => r.2 += PAGE,
                            _ => scanned.changed.push((page, key, PAGE)),
                        }
                    }
                }
            }
        }
        self.scanned_clean = merged(std::mem::take(&mut self.scanned_clean));
        self.scanned_zero = zero;
        Ok(scanned)
    }

    /// The pages of the last scan now live where their copies are: clean
    /// ones at the seed or node, `offloaded` ones on the node, `zeroed` ones
    /// nowhere (they read zero). Returns the ranges to drop.
    fn commit(&mut self, offloaded: &[(u64, u64)], zeroed: &[(u64, u64)]) -> Vec<(u64, u64)> {
        let clean = std::mem::take(&mut self.scanned_clean);
        for &(s, e) in &clean {
            self.regions.replace(s, e, PageState::Served, PageState::Remote);
            self.regions.replace(s, e, PageState::Restored, PageState::Offloaded);
        }
        for &(s, len) in offloaded {
            self.regions.set(s, s + len, PageState::Offloaded);
        }
        let zero = std::mem::take(&mut self.scanned_zero);
        for &(s, len) in zeroed {
            self.regions.set(s, s + len, PageState::Zero);
        }
        for &(s, e) in &zero {
            self.regions.set(s, e, PageState::Zero);
        }
        self.dropped_clean.extend(&clean);
        let all = clean.into_iter().chain(zero).chain(offloaded.iter().chain(zeroed).map(|&(s, len)| (s, s + len)));
        self.dropping = merged(all.collect());
        self.dropping.clone()
    }

    /// Starts bringing everything offloaded back: the node's pages by
    /// [`Pager::pump_node`], the seed's through the push.
    fn start_prefetch(&mut self, from_phase: Option<u32>) -> Reply {
        // Only the pages of the wanted packets (all, without a phase).
        let wanted = |phases: &crate::packets::Phases, start: u64, end: u64| match from_phase {
            None => vec![(start, end)],
            Some(phase) => phases.select(start, end, |p| p >= phase),
        };
        let mut from_node = 0;
        self.node_push.clear();
        for (s, e) in self.regions.spans() {
            for (addr, _, len) in self.regions.runs_in(s, e, PageState::Offloaded) {
                for (a, b) in wanted(&self.phases, addr, addr + len) {
                    from_node += b - a;
                    self.node_push.push_back((a, b));
                }
            }
        }
        let mut from_seed = 0;
        // A prefetch of some packets leaves the others' ranges for a later one.
        let dropped = match from_phase {
            None => merged(std::mem::take(&mut self.dropped_clean)),
            Some(_) => merged(self.dropped_clean.clone()),
        };
        for (s, e) in dropped {
            for (a, b) in wanted(&self.phases, s, e) {
                for (addr, _, len) in self.regions.remote_runs(a, b) {
                    from_seed += len;
                    self.push.push_back((addr, len));
                }
            }
        }
        self.push_started = true;
        Reply::Prefetching { from_node, from_seed }
    }

    /// One step of a prefetch from the node: keeps [`PREFETCH_DEPTH`]
    /// batches on the wire and copies the oldest answer in. A failure ends
    /// the prefetch; the next fault on an offloaded page meets it again and
    /// says so.
    pub(crate) fn pump_node(&mut self) {
        while self.node_asked.len() < PREFETCH_DEPTH {
            let Some(runs) = self.next_node_batch() else { break };
            let Some(node) = self.node.as_mut() else { break };
            if let Err(e) = node.ask(&key_ranges(&runs)) {
                return self.stop_prefetch(&e);
            }
            self.node_asked.push_back(runs);
        }
        if let Err(e) = self.take_node_answer() {
            self.stop_prefetch(&e);
        }
    }

    /// The offloaded pages of the next [`PREFETCH_BATCH`] of the prefetch.
    fn next_node_batch(&mut self) -> Option<Vec<(u64, u64, u64)>> {
        let mut runs = Vec::new();
        let mut bytes = 0;
        while bytes < PREFETCH_BATCH {
            let Some((start, end)) = self.node_push.pop_front() else { break };
            let take = (end - start).min(PREFETCH_BATCH - bytes);
            if start + take < end {
                self.node_push.push_front((start + take, end));
            }
            for run in self.regions.key_runs(start, start + take, PageState::Offloaded) {
                bytes += run.2;
                runs.push(run);
            }
        }
        (!runs.is_empty()).then_some(runs)
    }

    fn stop_prefetch(&mut self, why: &str) {
        tracing::warn!(error = %why, "prefetch from the memory node stopped");
        self.node_push.clear();
        // Their answers cannot be told from a fault's any more.
        self.node_asked.clear();
    }

    /// Takes the oldest prefetch answer on the wire in, if any.
    fn take_node_answer(&mut self) -> Result<(), String> {
        let Some(runs) = self.node_asked.pop_front() else { return Ok(()) };
        self.take_from_node(&runs)
    }

    /// Brings the offloaded pages of the window around `addr` back from the
    /// memory node. A failure poisons the page: the child is killed with
    /// the reason, never given a wrong or zero page.
    pub(crate) fn fetch_from_node(&mut self, addr: u64) -> Result<(), String> {
        // Answers come in order: the prefetch's and the read-ahead's on the
        // wire first (the page may be among them).
        while !self.node_asked.is_empty() {
            if let Err(e) = self.take_node_answer() {
                self.stop_prefetch(&e);
                return Err(self.lost_on_node(addr, &e));
            }
        }
        let w = self.window_pages.max(1) * PAGE;
        let lo = addr / w * w;
        let needed = self.regions.lookup(addr).map(|l| l.0) == Some(PageState::Offloaded);
        let runs = if needed { self.regions.key_runs(lo, lo + w, PageState::Offloaded) } else { Vec::new() };
        if needed {
            let Some(node) = self.node.as_mut() else {
                return Err(self.lost_on_node(addr, "this pager has no memory node connection"));
            };
            if let Err(e) = node.ask(&key_ranges(&runs)) {
                return Err(self.lost_on_node(addr, &e));
            }
        }
        // A child streaming through offloaded memory (this window follows
        // the last fault's): the next window goes on the wire before this
        // one is copied in, and is taken in by the next fault or between
        // events.
        let sequential = self.node_last_end == Some(lo);
        self.node_last_end = Some(lo + w);
        if sequential && self.config.read_ahead {
            let ahead = self.regions.key_runs(lo + w, lo + 2 * w, PageState::Offloaded);
            if !ahead.is_empty() && self.node.as_mut().is_some_and(|n| n.ask(&key_ranges(&ahead)).is_ok()) {
                self.node_asked.push_back(ahead);
            }
        }
        if !needed {
            self.uffd.wake(addr, PAGE);
            return Ok(());
        }
        if let Err(e) = self.take_from_node(&runs) {
            return Err(self.lost_on_node(addr, &e));
        }
        match self.regions.lookup(addr).map(|l| l.0) {
            Some(PageState::Offloaded) => Err(self.lost_on_node(addr, "the page did not come")),
            _ => {
                self.uffd.wake(addr, PAGE);
                Ok(())
            }
        }
    }

    /// Takes the oldest answer on the wire to the node, which is for `runs`,
    /// and copies the pages still offloaded in.
    fn take_from_node(&mut self, runs: &[(u64, u64, u64)]) -> Result<(), String> {
        let Some(node) = self.node.as_mut() else {
            return Err("this pager has no memory node connection".into());
        };
        let keys = key_ranges(runs);
        let total: u64 = keys.iter().map(|k| k.1).sum();
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(usize_of(total), 0);
        if let Err(e) = node.take(&keys, &mut buf) {
            self.buf = buf;
            return Err(e);
        }
        self.counters.pages_from_node.fetch_add(total / PAGE, Ordering::Relaxed);
        // Still offloaded, under the key its bytes came for: memory events
        // handled while copying (an `mremap`) may have moved other pages here.
        // The node's pages are the child's own: never through the shared copy.
        let copied = self.copy_wanted(runs, &mut buf, PageState::Offloaded, true, |regions, child, key| {
            regions.key_at(child) == Some((PageState::Offloaded, key))
        });
        self.buf = buf;
        copied
    }

    /// Poisons the page at `addr` and says why it is lost.
    fn lost_on_node(&self, addr: u64, reason: &str) -> String {
        let _ = self.uffd.poison(addr, PAGE);
        format!("offloaded page {addr:#x} could not be brought back from the memory node: {reason}")
    }
}

/// The keys and lengths of runs (child address, key, length).
fn key_ranges(runs: &[(u64, u64, u64)]) -> Vec<(u64, u64)> {
    runs.iter().map(|r| (r.1, r.2)).collect()
}

/// Removes `holes` from `[start, end)`: what is left, in order.
pub(crate) fn subtract(start: u64, end: u64, holes: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut left = vec![(start, end)];
    for &(hs, he) in holes {
        left = left
            .into_iter()
            .flat_map(|(s, e)| {
                if he <= s || e <= hs {
                    vec![(s, e)]
                } else {
                    [(s, hs.max(s)), (he.min(e), e)].into_iter().filter(|(a, b)| a < b).collect()
                }
            })
            .collect();
    }
    left
}

/// `ranges` sorted, with touching and overlapping ones merged.
pub(crate) fn merged(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtracting_holes_leaves_the_rest_in_order() {
        assert_eq!(subtract(0, 100, &[(10, 20), (50, 60)]), vec![(0, 10), (20, 50), (60, 100)]);
        assert_eq!(subtract(0, 100, &[(0, 100)]), vec![]);
        assert_eq!(subtract(10, 20, &[(0, 15)]), vec![(15, 20)]);
        assert_eq!(subtract(10, 20, &[(30, 40)]), vec![(10, 20)]);
    }

    #[test]
    fn a_budget_takes_clean_pages_first_and_cuts_on_a_page() {
        let found = vec![(0, 4 * PAGE, Found::Changed), (4 * PAGE, 6 * PAGE, Found::AtSeed), (8 * PAGE, 9 * PAGE, Found::AtNode)];
        assert_eq!(within_budget(found.clone(), None), found);
        assert_eq!(within_budget(found.clone(), Some(3 * PAGE)), vec![(4 * PAGE, 6 * PAGE, Found::AtSeed), (8 * PAGE, 9 * PAGE, Found::AtNode)]);
        assert_eq!(
            within_budget(found.clone(), Some(5 * PAGE + 100)),
            vec![(0, 2 * PAGE, Found::Changed), (4 * PAGE, 6 * PAGE, Found::AtSeed), (8 * PAGE, 9 * PAGE, Found::AtNode)]
        );
        assert!(within_budget(found, Some(PAGE - 1)).is_empty());
    }

    #[test]
    fn merging_joins_touching_ranges() {
        assert_eq!(merged(vec![(20, 30), (0, 10), (10, 15), (25, 40)]), vec![(0, 15), (20, 40)]);
    }
}
