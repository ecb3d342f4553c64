//! The pager: serves a resumed child's missing pages through its userfaultfd.
//!
//! One pager thread serves one process. On a fault it fetches a window of
//! not-yet-served pages around the faulting address from a [`PageSource`]
//! (the seed's host) in one request and copies them in with one
//! `UFFDIO_COPY`. It follows the child's own memory operations through
//! userfaultfd events, so that a child is never given a page it should not see:
//!
//! - `MADV_DONTNEED` / `MADV_REMOVE` (REMOVE event) and `munmap` (UNMAP): those
//!   pages read as zero from then on, never as the seed's old content;
//! - `mremap` (REMAP): the moved pages keep their seed addresses;
//! - `fork` (FORK): the new process gets its own pager thread with a copy of
//!   the bookkeeping and its own source, so grandchildren fault correctly too
//!   (nested fork);
//! - a fault outside any seed mapping (memory the child grew) gets a zero page.
//!
//! If a page cannot be fetched (seed host dead, network broken, seed dropped)
//! the faulting page is poisoned (touching it raises SIGBUS, it never reads
//! as zero) and the child is killed; the reason is returned to the daemon.
//!
//! It also serves the pages the daemon *offloaded* from an idle child
//! ([`offload`]): they come back from the memory node (a [`NodeSource`]),
//! or from the seed when they were dropped unchanged.
//!
//! A process no seed stands behind (a cold-started instance the daemon took
//! over while it ran) is served too, with [`Pager::adopting`] and
//! [`NoSeed`]: it starts with no served regions, every page it had stays
//! its own, and the memory it maps is registered as an offload finds it.
//!
//! The pager owns no sockets itself and knows nothing of the wire protocol:
//! the daemon hands it a [`PageSource`] and a [`NodeSource`].

#![forbid(unsafe_code)]
#![deny(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)]

pub mod offload;
pub mod packets;
mod regions;
mod shared;

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mitosis_proto::local::PagerStats;
use mitosis_sys::uffd::{CopyResult, Event, Uffd};
use mitosis_sys::poll::{self, PollFd};
use mitosis_sys::{pidfd, usize_of, PAGE};

pub use offload::{NodeSource, OffloadHandle};
pub use regions::{PageState, Regions};
pub use shared::SharedPages;

/// Why the answer to a request did not come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// The source answered that it cannot give these pages (a seed dropped,
    /// or a page it cannot read, such as a never-touched `PROT_NONE` page of
    /// a seed that is itself a resumed child); later answers still come.
    Refused(String),
    /// The source is gone (connection broken, timeout): nothing more comes.
    Broken(String),
}

impl FetchError {
    pub fn reason(&self) -> &str {
        match self {
            FetchError::Refused(r) | FetchError::Broken(r) => r,
        }
    }
}

/// Where a pager gets page contents. Requests are answered in order, so a
/// pager may send the next request before it takes the previous answer.
pub trait PageSource: Send {
    /// Asks for `ranges` (page-aligned seed addresses and lengths).
    fn request(&mut self, ranges: &[(u64, u64)]) -> Result<(), String>;
    /// Takes the answer to the oldest outstanding request: its bytes back to back.
    fn receive(&mut self, out: &mut [u8]) -> Result<(), FetchError>;
    /// An independent source for a forked child's pager.
    fn duplicate(&self) -> Result<Box<dyn PageSource>, String>;
}

/// The source of a process that no seed stands behind: a running process
/// whose memory the daemon adopted ([`Pager::adopting`]). Its pager has no
/// page in the `Remote` state, so nothing is ever asked of it; if something
/// were, the answer is a refusal, never a page.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSeed;

impl PageSource for NoSeed {
    fn request(&mut self, _ranges: &[(u64, u64)]) -> Result<(), String> {
        Err("the process has no seed to fetch pages from (an adopted process)".into())
    }

    fn receive(&mut self, _out: &mut [u8]) -> Result<(), FetchError> {
        Err(FetchError::Broken("the process has no seed to fetch pages from (an adopted process)".into()))
    }

    fn duplicate(&self) -> Result<Box<dyn PageSource>, String> {
        Ok(Box::new(NoSeed))
    }
}

/// Tunables of a pager.
#[derive(Debug, Clone, Copy)]
pub struct PagerConfig {
    /// Pages fetched around the first fault (aligned window).
    pub window_pages: u64,
    /// Let the window grow (doubling, up to `max_window_pages`) while faults
    /// go on in order and shrink (halving, back down to `window_pages`) on
    /// others. It does not go below `window_pages`: programs whose faults are
    /// not in order still touch the neighbours of what they touch (a Python
    /// heap), and a full random touch uses every page a window brings.
    pub adaptive: bool,
    pub max_window_pages: u64,
    /// On sequential faults, ask for the next window before it is touched.
    pub read_ahead: bool,
}

impl Default for PagerConfig {
    fn default() -> Self {
        PagerConfig { window_pages: 64, adaptive: true, max_window_pages: 512, read_ahead: true }
    }
}

/// Counters shared by a child's pager and its forked children's pagers.
#[derive(Debug, Default)]
pub struct Counters {
    pub faults: AtomicU64,
    pub zero_faults: AtomicU64,
    pub remote_faults: AtomicU64,
    pub pages_fetched: AtomicU64,
    pub bytes_fetched: AtomicU64,
    pub fetches: AtomicU64,
    pub pages_pushed: AtomicU64,
    pub cache_hits: AtomicU64,
    /// Offloaded pages brought back from the memory node.
    pub pages_from_node: AtomicU64,
    /// Microseconds the child spent waiting in faults (from the pager's
    /// reading of the fault to its wake-up): for the daemon's debug log.
    pub fault_wait_us: AtomicU64,
}

impl Counters {
    pub fn snapshot(&self) -> PagerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PagerStats {
            faults: get(&self.faults),
            zero_faults: get(&self.zero_faults),
            remote_faults: get(&self.remote_faults),
            pages_fetched: get(&self.pages_fetched),
            bytes_fetched: get(&self.bytes_fetched),
            fetches: get(&self.fetches),
            pages_pushed: get(&self.pages_pushed),
            cache_hits: get(&self.cache_hits),
            pages_from_node: get(&self.pages_from_node),
        }
    }
}

/// The seed pages a child fetched because it touched them (fault windows and
/// their read-ahead, not pushes): what later children of the seed get pushed.
/// Shared by a child's pager and its forked children's pagers. It records
/// until it is taken once (the daemon takes it when the child has answered
/// its first request, or at its end): later fetches are not part of it.
#[derive(Debug, Default)]
pub struct Recorder {
    state: std::sync::Mutex<RecorderState>,
}

#[derive(Debug, Default)]
struct RecorderState {
    ranges: Vec<(u64, u64)>,
    taken: bool,
}

/// Most ranges a recorder keeps (a working set beyond it is cut off).
const RECORD_LIMIT: usize = 1 << 16;

impl Recorder {
    /// Records `runs` as fetched for a fault (a write fault: `written`).
    fn record(&self, runs: &[Run], written: bool) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.taken {
            return;
        }
        for &(_, seed, len) in runs {
            if st.ranges.len() < RECORD_LIMIT {
                st.ranges.push(mitosis_proto::peer::working_set_range(seed, len, written));
            }
        }
    }

    /// The recorded seed ranges in the order they were first fetched; the
    /// recording ends here (a second take is empty).
    pub fn take(&self) -> Vec<(u64, u64)> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.taken = true;
        std::mem::take(&mut st.ranges)
    }
}

/// How a pager ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The process exited (or its memory went away).
    Exited,
    /// A page could not be served; the process was killed for it.
    Failed(String),
}

/// Bytes written over served pages: the answer a self-prepared child finds in its buffer.
#[derive(Debug, Clone)]
pub struct Patch {
    pub addr: u64,
    pub bytes: Vec<u8>,
}

/// Why a request is on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// The window of a fault; the child waits for it.
    Fault,
    /// The window after a sequential fault's.
    ReadAhead,
    /// Part of a push (recorded working set, eager resume).
    Push,
}

/// A request on the wire: its runs (child address, seed address, length),
/// and for windows, where the window ends.
struct Outstanding {
    runs: Vec<Run>,
    purpose: Purpose,
    window_end: u64,
    /// Number of the request (a fault waits for its own).
    seq: u64,
    /// Its pages go in as the child's own copies, not shared through the
    /// host's copy: the child writes there (its fault was a write, or the
    /// working set's recording child wrote there).
    private: bool,
}

/// Bytes per push request, and push requests kept on the wire at once: two
/// so that the network fills the next while the last goes in. Answers come
/// in order, so a fault asked for behind pushes waits for them: the first
/// [`PUSH_SMALL_BYTES`] of a push (a working set, in the order its recording
/// child touched it, while the child starts) go in small requests, so that
/// a fault waits for half a megabyte at most; the rest of a long push (an
/// eager resume) in big ones.
const PUSH_CHUNK_SMALL: u64 = 128 << 10;
const PUSH_CHUNK: u64 = 1 << 20;
const PUSH_SMALL_BYTES: u64 = 4 << 20;
const PUSH_DEPTH: usize = 2;
/// Faults of other threads read and asked for while one fault's page is on
/// the wire ([`Pager::ask_for_faults_behind`]).
const MAX_FAULTS_BEHIND: usize = 64;
/// How long to wait for the event of an unmap that took a mapping away
/// under a copy (it is sent right after).
const EVENT_WAIT_MS: i32 = 1000;

/// Serves one process.
pub struct Pager {
    uffd: Uffd,
    regions: Regions,
    source: Box<dyn PageSource>,
    patches: Vec<Patch>,
    config: PagerConfig,
    counters: Arc<Counters>,
    recorder: Option<Arc<Recorder>>,
    /// The process, when known (the resumed child); forked ones are watched through the uffd.
    process: Option<OwnedFd>,
    buf: Vec<u8>,
    /// Requests on the wire, oldest first (answers come in this order).
    outstanding: std::collections::VecDeque<Outstanding>,
    /// Number of the next request.
    next_seq: u64,
    /// Child ranges still to push, in order.
    push: std::collections::VecDeque<(u64, u64)>,
    /// Pushing starts once this is set (the daemon has finished restoring
    /// the child: on few CPUs a push would slow the restore down) and the
    /// child has faulted once.
    push_go: Arc<std::sync::atomic::AtomicBool>,
    push_started: bool,
    /// Bytes asked for by pushes so far.
    push_asked: u64,
    /// Current fault window, in pages.
    window_pages: u64,
    /// End of the last fault's (or consumed read-ahead's) window, to tell
    /// sequential access.
    last_end: Option<u64>,
    /// Why the source can no longer be used (a read-ahead or push failed):
    /// the next page that is actually needed fails with this reason.
    broken: Option<String>,
    /// Where to tell why the process is killed, when nobody else will (its stderr).
    notice: Option<std::fs::File>,
    /// Why the source last refused a request.
    refused: Option<String>,
    /// Gets every userfaultfd this pager and its forks' pagers serve.
    keeper: Option<Keeper>,
    /// Faults read while another was being fetched (their requests already
    /// on the wire), served next, in order.
    deferred: std::collections::VecDeque<Event>,
    /// Pages go in write-protected, so that a scan tells which were written
    /// since (the daemon registered the ranges with `track_writes`).
    track_writes: bool,
    /// The daemon's offload commands.
    control: Option<offload::Control>,
    /// Where offloaded pages come back from.
    node: Option<Box<dyn NodeSource>>,
    /// This process has forked: its offloaded pages are the forks' too, so
    /// it offloads no more (a new put would change what they read).
    forked: bool,
    /// Clean pages of the last scan (dropped at the commit), and pages of
    /// the zero page.
    scanned_clean: Vec<(u64, u64)>,
    scanned_zero: Vec<(u64, u64)>,
    /// The next page's key on the memory node.
    next_key: u64,
    /// Ranges the daemon is dropping: their `REMOVE` events are not the
    /// child's own.
    dropping: Vec<(u64, u64)>,
    /// Ranges dropped as the seed's (unchanged) by offloads: what a
    /// prefetch pushes back from the seed.
    dropped_clean: Vec<(u64, u64)>,
    /// Ranges whose offloaded pages a prefetch brings back from the node,
    /// a batch at a time, whenever the child waits for nothing.
    node_push: std::collections::VecDeque<(u64, u64)>,
    /// The prefetch's and read-ahead's batches on the wire to the node,
    /// oldest first.
    node_asked: std::collections::VecDeque<Vec<(u64, u64, u64)>>,
    /// End of the last window asked of the node for a fault, to tell
    /// sequential access.
    node_last_end: Option<u64>,
    /// The process was adopted while it ran (`Some`): each scan and barrier
    /// first registers its anonymous memory that the userfaultfd does not
    /// serve yet; these are the bounds of the mappings registered so far.
    adopted: Option<std::collections::HashSet<(u64, u64)>>,
    /// The phase each page was last touched in ([`packets`]).
    phases: packets::Phases,
    /// This host's shared copy of the seed, which the regions marked
    /// `from_file` map ([`shared`]).
    shared: Option<Arc<dyn SharedPages>>,
    /// The fault being served is a write: its window goes in private (a
    /// shared page would be copied by the kernel at once).
    fault_write: bool,
}

/// Keeps a copy of each userfaultfd outside this process (the daemon's
/// janitor), so that should the pager's process die, the memory it served
/// never falls back to zero pages: faults wait until the process is killed.
pub type Keeper = Arc<dyn Fn(&Uffd) + Send + Sync>;

/// A run of pages: child address, seed address, length.
type Run = (u64, u64, u64);

/// Address used to ask the kernel whether a uffd's memory still exists (see
/// [`Uffd::memory_alive`]); nothing can be mapped below `vm.mmap_min_addr`'s default.
pub const PROBE_ADDR: u64 = 4096;

impl Pager {
    pub fn new(
        uffd: Uffd,
        regions: Regions,
        source: Box<dyn PageSource>,
        config: PagerConfig,
        counters: Arc<Counters>,
        process: Option<OwnedFd>,
    ) -> Pager {
        Pager {
            uffd,
            regions,
            source,
            patches: Vec::new(),
            config,
            counters,
            recorder: None,
            process,
            buf: Vec::new(),
            outstanding: Default::default(),
            next_seq: 0,
            push: Default::default(),
            push_go: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            push_started: false,
            push_asked: 0,
            window_pages: config.window_pages.max(1),
            last_end: None,
            broken: None,
            notice: None,
            refused: None,
            keeper: None,
            deferred: Default::default(),
            track_writes: false,
            control: None,
            node: None,
            forked: false,
            scanned_clean: Vec::new(),
            scanned_zero: Vec::new(),
            next_key: offload::FIRST_KEY,
            dropping: Vec::new(),
            dropped_clean: Vec::new(),
            node_push: Default::default(),
            node_asked: Default::default(),
            node_last_end: None,
            adopted: None,
            phases: packets::Phases::default(),
            shared: None,
            fault_write: false,
        }
    }

    /// Serves a process adopted while it ran (with [`NoSeed`] and no
    /// regions): before each offload's scan, the pager registers the
    /// private anonymous memory the process has mapped since (see
    /// [`offload`]).
    pub fn adopting(mut self) -> Pager {
        self.adopted = Some(Default::default());
        self
    }

    /// Puts pages in write-protected (the ranges must be registered with
    /// `track_writes`, the userfaultfd made with `WP_ASYNC`).
    pub fn with_write_tracking(mut self, track_writes: bool) -> Pager {
        self.track_writes = track_writes;
        self
    }

    /// Takes the daemon's offload commands from `control`.
    pub fn with_control(mut self, control: offload::ControlEnd) -> Pager {
        self.control = Some(control.0);
        self
    }

    /// Hands this pager's userfaultfd, and each forked process's, to `keeper`.
    pub fn with_keeper(mut self, keeper: Option<Keeper>) -> Pager {
        if let Some(k) = &keeper {
            k(&self.uffd);
        }
        self.keeper = keeper;
        self
    }

    pub fn with_patches(mut self, patches: Vec<Patch>) -> Pager {
        self.patches = patches;
        self
    }

    /// Writes the reason to `notice` (the process's stderr) before a kill.
    pub fn with_notice(mut self, notice: Option<std::fs::File>) -> Pager {
        self.notice = notice;
        self
    }

    /// Records what the child fetches on demand into `recorder`.
    pub fn with_recorder(mut self, recorder: Option<Arc<Recorder>>) -> Pager {
        self.recorder = recorder;
        self
    }

    /// Pushes these child ranges in, in order, ahead of faults, whenever the
    /// child does not wait for anything (faults come first), from its first
    /// fault after `go` is set on.
    pub fn with_push(mut self, ranges: Vec<(u64, u64)>, go: Arc<std::sync::atomic::AtomicBool>) -> Pager {
        self.push = ranges.into();
        self.push_go = go;
        self
    }

    /// Serves until the process exits or a page cannot be served.
    ///
    /// A process must never run on without its pager (its next missing page
    /// would wait forever): whenever serving ends while the process still
    /// lives, for whatever reason, the process is killed with that reason.
    ///
    /// Nor may anyone wait for a page this pager will never serve: another
    /// process reading the child's memory (the daemon reads its command
    /// line for `ps`) would wait forever, since the daemon's janitor keeps
    /// the userfaultfd open. So a pager that fails poisons every page it has
    /// not served: such reads then fail at once.
    pub fn run(mut self) -> Outcome {
        let outcome = self.serve_until_done();
        let still_running = self.process.as_ref().is_some_and(|p| !pidfd::has_exited(p));
        let outcome = match outcome {
            Outcome::Exited if still_running => {
                let reason = "its pager stopped while it still ran (its userfaultfd reported an error)".to_string();
                tracing::error!(%reason, "killing a child without a pager");
                Outcome::Failed(reason)
            }
            other => other,
        };
        match &outcome {
            Outcome::Failed(reason) => {
                self.kill(reason);
                self.settle_unserved();
            }
            // The child has exited, but its memory lives on while someone
            // reads it from outside (the daemon bringing in its command
            // line, a debugger): their next fault would wait for this pager
            // for ever, since the janitor keeps the userfaultfd open.
            Outcome::Exited if self.uffd.memory_alive(PROBE_ADDR) => self.settle_unserved(),
            Outcome::Exited => {}
        }
        outcome
    }

    /// Leaves no page that a fault would wait for once this pager is gone:
    /// pages not served yet are poisoned (a touch raises SIGBUS, a read from
    /// outside fails with EFAULT: never a wrong page), and dropped ones are
    /// filled with the zeros they hold. Either wakes a fault waiting there
    /// now. Errors are ignored: the memory may be gone already.
    fn settle_unserved(&self) {
        for (start, end) in self.regions.spans() {
            for (addr, _, len) in self.regions.remote_runs(start, end).into_iter().chain(self.regions.runs_in(start, end, PageState::Offloaded)) {
                let _ = self.uffd.poison(addr, len);
            }
            for (addr, _, len) in self.regions.runs_in(start, end, PageState::Zero) {
                let _ = self.uffd.zero(addr, len);
            }
        }
    }

    fn serve_until_done(&mut self) -> Outcome {
        let mut events = Vec::with_capacity(64);
        loop {
            if let Some(ev) = self.deferred.pop_front() {
                if let Err(reason) = self.handle(ev) {
                    return Outcome::Failed(reason);
                }
                continue;
            }
            // With pushing to do, only look for events, then go on pushing. (A
            // read-ahead stays on the wire until the child gets to it.)
            let busy = (self.broken.is_none()
                && self.push_started
                && (!self.push.is_empty() || self.outstanding.iter().any(|o| o.purpose == Purpose::Push)))
                || !self.node_push.is_empty()
                || !self.node_asked.is_empty();
            let mut fds = [
                PollFd::readable(self.uffd.as_fd()),
                self.process.as_ref().map_or(PollFd::none(), |p| PollFd::readable(p.as_fd())),
                self.control.as_ref().map_or(PollFd::none(), |c| PollFd::readable(c.wake.as_fd())),
            ];
            let n = match poll::poll(&mut fds, if busy { 0 } else { 1000 }) {
                Ok(n) => n,
                Err(e) if e.errno == libc::EINTR => continue,
                Err(e) => return Outcome::Failed(e.to_string()),
            };
            let (uffd_events, process_events) = (fds[0].revents(), fds[1].revents());
            if fds[2].revents() != 0 {
                self.take_commands();
            }
            if uffd_events & libc::POLLIN == 0 {
                if process_events != 0 {
                    return Outcome::Exited;
                }
                if n == 0 && !busy && self.process.is_none() && !self.uffd.memory_alive(PROBE_ADDR) {
                    return Outcome::Exited;
                }
                if uffd_events & (libc::POLLERR | libc::POLLHUP) != 0 {
                    return Outcome::Exited;
                }
                if busy {
                    self.pump();
                    self.pump_node();
                }
                continue;
            }
            events.clear();
            if let Err(e) = self.uffd.read_events(&mut events, 64) {
                return Outcome::Failed(e.to_string());
            }
            // Several threads may have faulted: all their pages are asked
            // for first, then the events are handled in order (above).
            self.ask_for_leading_faults(&events);
            self.deferred.extend(events.drain(..));
        }
    }

    /// One step of pushing: keeps [`PUSH_DEPTH`] push requests on the wire and
    /// installs the oldest answer. A failure is kept for the next page that
    /// is actually needed.
    fn pump(&mut self) {
        let pushes = |o: &std::collections::VecDeque<Outstanding>| o.iter().filter(|o| o.purpose == Purpose::Push).count();
        while self.broken.is_none() && pushes(&self.outstanding) < PUSH_DEPTH {
            let Some((runs, written)) = self.next_push_chunk() else { break };
            let runs = match self.map_held(runs, Purpose::Push, written) {
                Ok(runs) => runs,
                Err(e) => {
                    self.broken = Some(e);
                    break;
                }
            };
            if runs.is_empty() {
                continue;
            }
            match self.source.request(&seed_ranges(&runs)) {
                Ok(()) => {
                    self.on_the_wire(runs, Purpose::Push, 0, written);
                }
                Err(e) => self.broken = Some(e),
            }
        }
        // Answers come in order: a read-ahead in front of the pushes is taken
        // in too (its window was asked for because the child was streaming
        // through memory: the next fault after it still counts as sequential).
        if let Some(front) = self.outstanding.front() {
            if front.purpose == Purpose::ReadAhead {
                self.last_end = Some(front.window_end);
            }
            self.receive_oldest();
        }
        if self.broken.is_some() {
            self.push.clear();
        }
    }

    /// The still-remote pages of the next chunk of the push list.
    fn next_push_chunk(&mut self) -> Option<(Vec<Run>, bool)> {
        use mitosis_proto::peer::{working_set_parts, working_set_range};
        let mut runs = Vec::new();
        let mut bytes = 0;
        let chunk = if self.push_asked < PUSH_SMALL_BYTES { PUSH_CHUNK_SMALL } else { PUSH_CHUNK };
        // With a shared copy, a chunk is all written ranges or all others:
        // they go in differently (without one, alike: no need to cut).
        let mut chunk_written = None;
        while bytes < chunk {
            let Some(range) = self.push.pop_front() else { break };
            let (start, len, written) = working_set_parts(range);
            let written = written && self.shared.is_some();
            if chunk_written.is_some_and(|w| w != written) {
                self.push.push_front(range);
                break;
            }
            chunk_written = Some(written);
            let take = len.min(chunk - bytes);
            if take < len {
                self.push.push_front(working_set_range(start + take, len - take, written));
            }
            for run in self.regions.remote_runs(start, start + take) {
                bytes += run.2;
                runs.push(run);
            }
            if runs.len() >= mitosis_proto::peer::MAX_READ_RANGES / 2 {
                break;
            }
        }
        self.push_asked += bytes;
        (!runs.is_empty() || chunk_written.is_some()).then_some((runs, chunk_written.unwrap_or(false)))
    }

    fn kill(&self, reason: &str) {
        if let Some(f) = &self.notice {
            use std::io::Write;
            let _ = writeln!(&*f, "mitosis: child killed: {reason}");
        }
        if let Some(p) = &self.process {
            let _ = pidfd::send_signal(p, libc::SIGKILL);
        }
    }

    fn handle(&mut self, ev: Event) -> Result<(), String> {
        if let Event::Fork { uffd } = ev {
            // First, with the bookkeeping as of the fork: pages that come in
            // from now on (the answers on the wire included) go into this
            // process only, not into the new one.
            self.spawn_forked(uffd);
            self.receive_all_outstanding();
            return Ok(());
        }
        // A memory event is sent once the change is done (a remap has
        // moved the pages, an unmap has removed them; a REMOVE zaps them as
        // soon as it is read): the bookkeeping changes first, then the
        // answers on the wire go in where their pages are still wanted
        // (into a moved page's old place, or an unmapped one, they could
        // not: the kernel refuses, and no event would come to explain it).
        let memory_event = !matches!(ev, Event::Fault { .. });
        let handled = self.handle_event(ev);
        if memory_event {
            self.receive_all_outstanding();
        }
        handled
    }

    fn handle_event(&mut self, ev: Event) -> Result<(), String> {
        match ev {
            Event::Fault { addr, write } => {
                self.fault_write = write;
                self.phases.touch(addr);
                self.push_started |= self.push_go.load(Ordering::Relaxed);
                let t = std::time::Instant::now();
                let served = self.serve(addr);
                let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.counters.fault_wait_us.fetch_add(us, Ordering::Relaxed);
                served
            }
            // The daemon's own drop of offloaded pages: their states are set.
            Event::Remove { start, end } => {
                for (s, e) in offload::subtract(start, end, &self.dropping) {
                    self.regions.set(s, e, PageState::Zero);
                    self.phases.forget(s, e);
                }
                Ok(())
            }
            Event::Unmap { start, end } => {
                self.regions.set(start, end, PageState::Zero);
                self.phases.forget(start, end);
                Ok(())
            }
            Event::Remap { from, to, len } => {
                self.regions.remap(from, to, len);
                self.phases.remap(from, to, len);
                Ok(())
            }
            // Handled above (the event owns the new descriptor).
            Event::Fork { .. } => Ok(()),
            Event::Unknown(kind) => {
                tracing::warn!(kind, "unknown userfaultfd event");
                Ok(())
            }
        }
    }

    /// The layout changed under the requests on the wire (a fork, a remap,
    /// an unmap): takes their answers in now, each page where it is still
    /// wanted (pages moved or dropped since wait for their next fault).
    fn receive_all_outstanding(&mut self) {
        while !self.outstanding.is_empty() {
            self.receive_oldest();
        }
    }

    fn spawn_forked(&mut self, uffd: Uffd) {
        self.forked = true;
        let source = match self.source.duplicate() {
            Ok(s) => s,
            Err(e) => {
                // Without a source every missing page would be lost: poison them all.
                tracing::error!(error = %e, "no page source for a forked child; its missing pages will raise SIGBUS");
                for (s, e) in self.regions.spans() {
                    let _ = uffd.poison(s, e - s);
                }
                return;
            }
        };
        let node = match self.node.as_ref().map(|n| n.duplicate()) {
            Some(Ok(n)) => Some(n),
            Some(Err(e)) => {
                // Its offloaded pages cannot come back: poison them.
                tracing::error!(error = %e, "no memory node connection for a forked child; its offloaded pages will raise SIGBUS");
                for (s, e) in self.regions.spans() {
                    for (addr, _, len) in self.regions.runs_in(s, e, PageState::Offloaded) {
                        let _ = uffd.poison(addr, len);
                    }
                }
                None
            }
            None => None,
        };
        let mut pager = Pager::new(uffd, self.regions.clone(), source, self.config, self.counters.clone(), None)
            .with_recorder(self.recorder.clone())
            .with_keeper(self.keeper.clone())
            .with_write_tracking(self.track_writes)
            .with_shared(self.shared.clone());
        pager.node = node;
        let spawned = std::thread::Builder::new().name("mitosis-pager-fork".into()).spawn(move || {
            if let Outcome::Failed(reason) = pager.run() {
                tracing::error!(%reason, "pager of a forked child failed");
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start a pager thread for a forked child");
        }
    }

    fn serve(&mut self, addr: u64) -> Result<(), String> {
        self.counters.faults.fetch_add(1, Ordering::Relaxed);
        let Some((state, _)) = self.regions.lookup(addr) else {
            self.counters.zero_faults.fetch_add(1, Ordering::Relaxed);
            return self.fill_zero(addr);
        };
        match state {
            PageState::Zero => {
                self.counters.zero_faults.fetch_add(1, Ordering::Relaxed);
                self.fill_zero(addr)
            }
            // A served page of the shared copy that faults again: the copy
            // gave it back (an eviction) and the child never wrote it. It
            // is fetched again. A fault that raced with its serving (another
            // thread's on the same page) finds it there: the kernel refuses
            // the map or copy (EEXIST) and, refusing, wakes nobody, so the
            // faulting thread is woken here.
            PageState::Served if self.shareable(addr, PAGE) => {
                self.regions.set(addr, addr + PAGE, PageState::Remote);
                let served = self.serve_remote(addr);
                self.uffd.wake(addr, PAGE);
                served
            }
            PageState::Served | PageState::Filled | PageState::Restored => {
                self.uffd.wake(addr, PAGE);
                Ok(())
            }
            PageState::Offloaded => self.fetch_from_node(addr),
            PageState::Remote => self.serve_remote(addr),
        }
    }

    fn serve_remote(&mut self, addr: u64) -> Result<(), String> {
        self.counters.remote_faults.fetch_add(1, Ordering::Relaxed);
        // On the wire already: take answers in until it is there.
        if let Some(i) = self.outstanding.iter().position(|o| o.runs.iter().any(|r| r.0 <= addr && addr < r.0 + r.2)) {
            if self.outstanding[i].purpose == Purpose::ReadAhead {
                // The child got to the read-ahead: keep the stream
                // going, the next window goes out first.
                self.last_end = Some(self.outstanding[i].window_end);
                self.outstanding[i].purpose = Purpose::Fault;
                self.grow_window();
                self.read_ahead();
            }
            let seq = self.outstanding[i].seq;
            self.receive_through(seq);
            if self.regions.lookup(addr).map(|l| l.0) == Some(PageState::Served) {
                self.uffd.wake(addr, PAGE);
                return Ok(());
            }
        }
        self.fetch_window(addr)
    }

    /// Fills the page at `addr` with zeros. The kernel refuses (EAGAIN)
    /// while a memory event of another thread is under way (its
    /// `madvise`/`munmap` waits for us to read the event, and then still has
    /// to run): the events are handled and the fill retried, for up to
    /// [`EVENT_WAIT_MS`].
    fn fill_zero(&mut self, addr: u64) -> Result<(), String> {
        let before = self.regions.lookup(addr).map(|l| l.0);
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(EVENT_WAIT_MS.unsigned_abs().into());
        while std::time::Instant::now() < deadline {
            self.regions.set(addr, addr + PAGE, PageState::Filled);
            match self.uffd.zero(addr, PAGE) {
                CopyResult::Gone | CopyResult::Done => return Ok(()),
                // Unmapped since the fault (another thread's munmap, whose
                // event comes right after): nothing to fill; the faulting
                // thread retries against what is there now.
                CopyResult::Failed(libc::ENOENT) => {
                    self.drain_events()?;
                    self.uffd.wake(addr, PAGE);
                    return Ok(());
                }
                CopyResult::Failed(errno) => return Err(copy_failed("zero page", addr, errno)),
                // As in `copy_in`: the page is as it was while the events are handled.
                CopyResult::Again { .. } => {
                    if let Some(b) = before {
                        self.regions.replace(addr, addr + PAGE, PageState::Filled, b);
                    }
                    if self.drain_events()? == 0 {
                        // Read already: the other thread has yet to finish its call.
                        std::thread::yield_now();
                    }
                    if self.regions.lookup(addr).map(|l| l.0) != before {
                        // Served, moved or dropped meanwhile: the kernel retries the access.
                        self.uffd.wake(addr, PAGE);
                        return Ok(());
                    }
                }
            }
        }
        Err(format!("kernel kept refusing a zero page at {addr:#x} for {EVENT_WAIT_MS} ms"))
    }

    /// Poisons the page at `addr` (it can never read anything now) and says why.
    fn unfetchable(&self, addr: u64, reason: &str) -> String {
        let _ = self.uffd.poison(addr, PAGE);
        format!("page {addr:#x} could not be fetched from the seed host: {reason}")
    }

    /// Size and start of the aligned window of the current size around `addr`.
    /// The window a fault at `addr` fetches: its page alone while the
    /// daemon is still restoring the child (the restore's touches, each
    /// thread's control block, are scattered: a window each would fetch
    /// their neighbours one after another before the child runs), else the
    /// aligned window around it.
    fn window(&self, addr: u64) -> (u64, u64) {
        if self.restoring() {
            return (PAGE, addr);
        }
        let w = self.window_pages * PAGE;
        (w, addr / w * w)
    }

    /// The daemon has not finished restoring the child yet (it lets pushes
    /// go when it has).
    fn restoring(&self) -> bool {
        !self.push_go.load(Ordering::Relaxed)
    }

    /// The child streams through memory: a bigger window costs fewer faults.
    fn grow_window(&mut self) {
        if self.config.adaptive {
            self.window_pages = (self.window_pages * 2).min(self.config.max_window_pages.max(1));
        }
    }

    /// Whether a fault at `addr` comes right after the last window.
    fn sequential(&self, addr: u64) -> bool {
        self.last_end.is_some_and(|end| addr >= end && addr < end + self.window_pages * PAGE)
    }

    fn fetch_window(&mut self, addr: u64) -> Result<(), String> {
        if let Some(reason) = &self.broken {
            return Err(self.unfetchable(addr, reason));
        }
        let sequential = self.sequential(addr) && !self.restoring();
        if sequential {
            self.grow_window();
        } else if self.config.adaptive && self.last_end.is_some() {
            // The child jumped: a smaller window wastes less.
            self.window_pages = (self.window_pages / 2).max(self.config.window_pages.max(1));
        }
        let (w, lo) = self.window(addr);
        let ours = self.request_for_fault(addr, lo, lo + w)?;
        self.last_end = Some(lo + w);
        // Ask for the next window before this one goes in (which wakes the
        // child): the network works while the child does.
        if sequential {
            self.read_ahead();
        }
        if let Some(ours) = ours {
            self.ask_for_faults_behind();
            self.receive_through(ours);
        }
        let still_remote = self.regions.lookup(addr).map(|l| l.0) == Some(PageState::Remote);
        if still_remote && self.broken.is_none() && self.refused.is_some() && w > PAGE {
            // The window was refused (a neighbour the source cannot read):
            // the faulting page alone.
            self.refused = None;
            if let Some(ours) = self.request_for_fault(addr, addr, addr + PAGE)? {
                self.receive_through(ours);
            }
        }
        match self.regions.lookup(addr).map(|l| l.0) {
            Some(PageState::Served) => Ok(()),
            Some(PageState::Remote) => {
                let why = self.broken.clone().or(self.refused.take()).unwrap_or_else(|| "the page did not come".into());
                Err(self.unfetchable(addr, &why))
            }
            // Unmapped or dropped meanwhile (the child is exiting, say): the
            // kernel retries the access against what is there now.
            _ => {
                self.uffd.wake(addr, PAGE);
                Ok(())
            }
        }
    }

    /// Several threads faulted (two faults or more read at once): asks for
    /// the windows of the faults at the head of `events` (up to the first
    /// other event, which may change what the pages hold) that are not on
    /// the wire yet, without waiting for any, so that they travel together.
    /// A lone fault is left to [`Pager::fetch_window`], whose window follows
    /// the child's access pattern.
    fn ask_for_leading_faults(&mut self, events: &[Event]) {
        let leading = events.iter().take_while(|e| matches!(e, Event::Fault { .. })).count();
        if leading < 2 {
            return;
        }
        for ev in &events[..leading] {
            let Event::Fault { addr, write } = *ev else { return };
            if !self.ask_for_fault(addr, write) {
                return;
            }
        }
    }

    /// Asks for the window of a fault at `addr` unless its page is not
    /// remote or already on the wire; false if the source failed (the
    /// fault's own fetch then reports it).
    fn ask_for_fault(&mut self, addr: u64, write: bool) -> bool {
        let remote = self.regions.lookup(addr).map(|l| l.0) == Some(PageState::Remote);
        let on_the_wire = self.outstanding.iter().any(|o| o.runs.iter().any(|r| r.0 <= addr && addr < r.0 + r.2));
        if !remote || on_the_wire || self.broken.is_some() {
            return true;
        }
        let (w, lo) = self.window(addr);
        let runs = self.regions.remote_runs(lo, lo + w);
        let Ok(runs) = self.map_held(runs, Purpose::Fault, write) else { return false };
        if runs.is_empty() {
            return true;
        }
        if self.source.request(&seed_ranges(&runs)).is_err() {
            return false;
        }
        self.on_the_wire(runs, Purpose::Fault, lo + w, write);
        true
    }

    /// Other threads of the child fault while this fault's page is on the
    /// wire: their faults are read now and their windows asked for at once,
    /// so that each thread waits for its own page (and those asked for
    /// before it, which travel together), not for a round trip per thread
    /// before it. They are served next, in order ([`Pager::deferred`]). A
    /// memory event (an unmap, a fork...) stops the reading and is handled
    /// at once, as it would be next in line; a failure to ask is left to
    /// the fault's own fetch.
    fn ask_for_faults_behind(&mut self) {
        let mut one = Vec::with_capacity(1);
        for _ in 0..MAX_FAULTS_BEHIND {
            one.clear();
            if self.uffd.read_events(&mut one, 1).is_err() {
                return;
            }
            let Some(ev) = one.pop() else { return };
            let Event::Fault { addr, write } = ev else {
                if let Err(reason) = self.handle(ev) {
                    self.broken.get_or_insert(reason);
                }
                return;
            };
            self.deferred.push_back(ev);
            if !self.ask_for_fault(addr, write) {
                return;
            }
        }
    }

    /// Asks for the still-remote pages of `[lo, hi)` for a fault at `addr`
    /// (those the shared copy holds are mapped from it at once); returns
    /// the request's number, if one went out.
    fn request_for_fault(&mut self, addr: u64, lo: u64, hi: u64) -> Result<Option<u64>, String> {
        let runs = self.regions.remote_runs(lo, hi);
        let runs = self.map_held(runs, Purpose::Fault, self.fault_write)?;
        if runs.is_empty() {
            return Ok(None);
        }
        if let Err(e) = self.source.request(&seed_ranges(&runs)) {
            return Err(self.unfetchable(addr, &e));
        }
        Ok(Some(self.on_the_wire(runs, Purpose::Fault, hi, self.fault_write)))
    }

    /// Answers come in order: takes everything up to request `seq`'s in
    /// (events handled meanwhile may have taken it in already).
    fn receive_through(&mut self, seq: u64) {
        while self.outstanding.iter().any(|o| o.seq == seq) {
            self.receive_oldest();
        }
    }

    /// Asks for the window after the last one, so that it is on its way
    /// before a sequentially faulting child gets there. (Two windows ahead
    /// measured no faster here.)
    fn read_ahead(&mut self) {
        let Some(from) = self.last_end else { return };
        let ahead = self.outstanding.iter().any(|o| o.purpose == Purpose::ReadAhead);
        if !self.config.read_ahead || ahead || self.broken.is_some() {
            return;
        }
        let to = from + self.window_pages * PAGE;
        let runs = self.regions.remote_runs(from, to);
        let runs = match self.map_held(runs, Purpose::ReadAhead, self.fault_write) {
            Ok(runs) => runs,
            Err(e) => {
                self.broken = Some(e);
                return;
            }
        };
        if runs.is_empty() {
            return;
        }
        match self.source.request(&seed_ranges(&runs)) {
            Ok(()) => {
                self.on_the_wire(runs, Purpose::ReadAhead, to, self.fault_write);
            }
            Err(e) => self.broken = Some(e),
        }
    }

    /// Records a request just sent; returns its number.
    fn on_the_wire(&mut self, runs: Vec<Run>, purpose: Purpose, window_end: u64, private: bool) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.outstanding.push_back(Outstanding { runs, purpose, window_end, seq, private });
        seq
    }

    /// Takes the oldest answer off the wire and installs whatever of it is
    /// still wanted; a failure is kept in `broken` for the next page that is
    /// actually needed.
    fn receive_oldest(&mut self) {
        let Some(o) = self.outstanding.pop_front() else { return };
        let mut buf = self.take_buf(&o.runs);
        match self.source.receive(&mut buf) {
            Ok(()) => {}
            // Its pages stay remote: a fault on one asks for that page alone.
            Err(FetchError::Refused(e)) => {
                self.refused = Some(e);
                self.buf = buf;
                return;
            }
            Err(FetchError::Broken(e)) => {
                self.broken = Some(e);
                self.buf = buf;
                // Later answers on the same stream cannot come either.
                self.outstanding.clear();
                return;
            }
        }
        if o.purpose == Purpose::Push {
            let pages: u64 = o.runs.iter().map(|r| r.2 / PAGE).sum();
            self.counters.pages_pushed.fetch_add(pages, Ordering::Relaxed);
        } else if let Some(r) = &self.recorder {
            r.record(&o.runs, o.private);
        }
        if let Err(e) = self.install(&o.runs, &mut buf, o.private) {
            self.broken = Some(e);
        }
        self.buf = buf;
    }

    fn take_buf(&mut self, runs: &[Run]) -> Vec<u8> {
        let total: u64 = runs.iter().map(|r| r.2).sum();
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(usize_of(total), 0);
        buf
    }

    /// Copies fetched `runs` into the child: the pages still remote at the
    /// same seed address (the data was asked for before the child's latest
    /// memory events, and events handled while copying change it again).
    fn install(&mut self, runs: &[Run], buf: &mut [u8], private: bool) -> Result<(), String> {
        let total: u64 = runs.iter().map(|r| r.2).sum();
        self.counters.fetches.fetch_add(1, Ordering::Relaxed);
        self.counters.pages_fetched.fetch_add(total / PAGE, Ordering::Relaxed);
        self.counters.bytes_fetched.fetch_add(total, Ordering::Relaxed);
        self.copy_wanted(runs, buf, PageState::Remote, private, |regions, child, seed| regions.lookup(child) == Some((PageState::Remote, seed)))
    }

    /// Copies `runs` (child address, source address, length) of `buf` into
    /// the child, pages in state `from` that are still `wanted` (given the
    /// bookkeeping, a child address and its source address: a seed address
    /// or a memory node key), in the longest pieces that are; `private`:
    /// never through the shared copy.
    fn copy_wanted(&mut self, runs: &[Run], buf: &mut [u8], from: PageState, private: bool, wanted: impl Fn(&Regions, u64, u64) -> bool) -> Result<(), String> {
        let mut off = 0usize;
        for &(child, source, len) in runs {
            let run_buf = &mut buf[off..off + usize_of(len)];
            off += usize_of(len);
            let mut page = 0u64;
            while page < len {
                if !wanted(&self.regions, child + page, source + page) {
                    page += PAGE;
                    continue;
                }
                let mut end = page + PAGE;
                while end < len && wanted(&self.regions, child + end, source + end) {
                    end += PAGE;
                }
                page += self.copy_in(child + page, &mut run_buf[usize_of(page)..usize_of(end)], from, private)?;
            }
        }
        Ok(())
    }

    /// Copies `chunk` to `child`, whose pages were in state `from` (`Remote`:
    /// from the seed; `Offloaded`: from the memory node), and marks it
    /// served (`Served`, `Restored`); returns how many bytes went in. When
    /// the kernel first wants the child's memory events handled (a fork, a
    /// remap, an unmap in progress), the part not copied is in state `from`
    /// again while they are, so that they see it as it is (a new process
    /// does not have it, a remap moves it as still to be fetched); the
    /// caller then looks again at what is still wanted. Seed pages of a
    /// region mapped from the shared copy go in through it unless `private`.
    fn copy_in(&mut self, child: u64, chunk: &mut [u8], from: PageState, private: bool) -> Result<u64, String> {
        let len = chunk.len() as u64;
        let to = if from == PageState::Offloaded { PageState::Restored } else { PageState::Served };
        if from == PageState::Remote {
            for p in &self.patches {
                apply_patch(chunk, child, p);
            }
        }
        let shared =
            if from == PageState::Remote && !private && self.shareable(child, len) { self.put_and_map(child, chunk) } else { None };
        self.regions.set(child, child + len, to);
        let copied = match shared {
            Some(mapped) => mapped,
            None if self.track_writes => self.uffd.copy_protected(child, chunk),
            None => self.uffd.copy(child, chunk),
        };
        match copied {
            CopyResult::Done | CopyResult::Gone => Ok(len),
            CopyResult::Again { copied } => {
                self.regions.replace(child + copied, child + len, to, from);
                self.drain_events()?;
                Ok(copied)
            }
            // A chunk over two mappings (the child split one since, with
            // `mprotect`, which sends no event): the first page alone.
            CopyResult::Failed(libc::ENOENT) if len > PAGE => {
                self.regions.replace(child, child + len, to, from);
                self.copy_in(child, &mut chunk[..usize_of(PAGE)], from, private)
            }
            // No mapping there any more: the child unmapped or moved it, and
            // its event comes right after; anything else is an error.
            CopyResult::Failed(libc::ENOENT) => {
                self.regions.replace(child, child + len, to, from);
                self.drain_events()?;
                if self.regions.lookup(child).map(|l| l.0) == Some(from) {
                    self.uffd.wait_readable(EVENT_WAIT_MS);
                    self.drain_events()?;
                }
                if self.regions.lookup(child).map(|l| l.0) == Some(from) {
                    return Err(copy_failed("copy", child, libc::ENOENT));
                }
                Ok(0)
            }
            CopyResult::Failed(errno) => Err(copy_failed("copy", child, errno)),
        }
    }

    /// Handles the events the kernel is waiting on before it accepts a copy (EAGAIN).
    /// Returns how many events there were.
    fn drain_events(&mut self) -> Result<usize, String> {
        let mut pending = Vec::new();
        self.uffd.read_events(&mut pending, 64).map_err(|e| e.to_string())?;
        let n = pending.len();
        for ev in pending {
            self.handle(ev)?;
        }
        Ok(n)
    }
}

/// Seed addresses and lengths of runs (child address, seed address, length).
fn seed_ranges(runs: &[Run]) -> Vec<(u64, u64)> {
    runs.iter().map(|r| (r.1, r.2)).collect()
}

fn copy_failed(what: &str, addr: u64, errno: i32) -> String {
    format!("the kernel refused to {what} at {addr:#x}: {}", std::io::Error::from_raw_os_error(errno))
}

fn apply_patch(chunk: &mut [u8], chunk_addr: u64, p: &Patch) {
    let (cs, ce) = (chunk_addr, chunk_addr + chunk.len() as u64);
    let (ps, pe) = (p.addr, p.addr + p.bytes.len() as u64);
    let (s, e) = (cs.max(ps), ce.min(pe));
    if s < e {
        chunk[usize_of(s - cs)..usize_of(e - cs)].copy_from_slice(&p.bytes[usize_of(s - ps)..usize_of(e - ps)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorder_stops_at_its_take() {
        let r = Recorder::default();
        r.record(&[(0x1000, 0x1000, PAGE)], false);
        r.record(&[(0x5000, 0x5000, 2 * PAGE)], true);
        assert_eq!(r.take(), vec![(0x1000, PAGE), (0x5001, 2 * PAGE)], "a written range says so in bit 0 of its start");
        r.record(&[(0x9000, 0x9000, PAGE)], false);
        assert!(r.take().is_empty(), "what comes after the take is not the working set");
    }

    #[test]
    fn patches_apply_across_chunk_edges() {
        let mut chunk = vec![0u8; 8];
        apply_patch(&mut chunk, 100, &Patch { addr: 98, bytes: vec![1, 2, 3, 4] });
        assert_eq!(chunk, [3, 4, 0, 0, 0, 0, 0, 0]);
        apply_patch(&mut chunk, 100, &Patch { addr: 106, bytes: vec![7, 8, 9] });
        assert_eq!(chunk, [3, 4, 0, 0, 0, 0, 7, 8]);
    }
}
