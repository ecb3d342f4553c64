//! The pager serving this very test process: pages come from a fake source,
//! read-ahead is pipelined, and pages the process drops read as zero after.
//! Needs the privilege to create a userfaultfd (root); skipped otherwise.

#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use mitosis_pager::{Counters, FetchError, Outcome, PageSource, Pager, PagerConfig, Regions};
use mitosis_sys::mem::AnonMap;
use mitosis_sys::uffd::{features, Uffd};
use mitosis_sys::{usize_of, PAGE};

/// Page contents derived from the seed address, so that any misplaced page shows.
fn word_at(seed_addr: u64) -> u64 {
    seed_addr.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
}

#[derive(Default)]
struct Log {
    /// A page the source cannot read: a request that includes it is refused.
    unreadable: Option<u64>,
    requests: Vec<Vec<(u64, u64)>>,
    /// Highest address the test has touched so far.
    frontier: u64,
    /// Requests for pages beyond the frontier: read-ahead.
    ahead: usize,
}

struct FakeSource {
    log: Arc<Mutex<Log>>,
    pending: VecDeque<Vec<(u64, u64)>>,
}

impl PageSource for FakeSource {
    fn request(&mut self, ranges: &[(u64, u64)]) -> Result<(), String> {
        let mut log = self.log.lock().unwrap();
        if ranges[0].0 > log.frontier {
            log.ahead += 1;
        }
        log.requests.push(ranges.to_vec());
        self.pending.push_back(ranges.to_vec());
        Ok(())
    }

    fn receive(&mut self, out: &mut [u8]) -> Result<(), FetchError> {
        let ranges = self.pending.pop_front().ok_or_else(|| FetchError::Broken("receive without a request".into()))?;
        if let Some(bad) = self.log.lock().unwrap().unreadable {
            if ranges.iter().any(|&(a, l)| a <= bad && bad < a + l) {
                return Err(FetchError::Refused(format!("page {bad:#x} cannot be read")));
            }
        }
        let mut off = 0;
        for (addr, len) in ranges {
            for w in 0..len / 8 {
                out[off..off + 8].copy_from_slice(&word_at(addr + w * 8).to_ne_bytes());
                off += 8;
            }
        }
        Ok(())
    }

    fn duplicate(&self) -> Result<Box<dyn PageSource>, String> {
        Err("not needed".into())
    }
}

struct Served {
    /// The memory served; unmapped (as the last field dropped) after the pager ended.
    map: AnonMap,
    log: Arc<Mutex<Log>>,
    counters: Arc<Counters>,
    watched: std::process::Child,
    pager: Option<std::thread::JoinHandle<Outcome>>,
}

impl Served {
    /// Maps `pages` anonymous pages served by a pager with the given fixed window.
    fn new(pages: usize, window: u64) -> Option<Served> {
        Served::with(pages, PagerConfig { window_pages: window, adaptive: false, max_window_pages: window, read_ahead: true })
    }

    /// Maps `pages` anonymous pages served by a pager configured so.
    fn with(pages: usize, config: PagerConfig) -> Option<Served> {
        Served::restored_when(pages, config, Arc::new(AtomicBool::new(true)))
    }

    /// [`Served::with`], the restore of "the child" ending when `restored` is set.
    fn restored_when(pages: usize, config: PagerConfig, restored: Arc<AtomicBool>) -> Option<Served> {
        let uffd = match Uffd::create() {
            Ok(u) => u,
            Err(e) => {
                mitosis_testkit::skip(format!("no userfaultfd here ({e})"));
                return None;
            }
        };
        uffd.api(features::EVENT_REMOVE | features::EVENT_UNMAP | features::EVENT_REMAP).unwrap();
        let map = AnonMap::new(pages * usize_of(PAGE)).unwrap();
        let (base, len) = (map.addr(), map.len());
        uffd.register_missing(base, len as u64).unwrap();
        let log = Arc::new(Mutex::new(Log::default()));
        let counters = Arc::new(Counters::default());
        // The pager ends when this process ends; it stands for "the child".
        let watched = std::process::Command::new("sleep").arg("60").spawn().unwrap();
        let pidfd = mitosis_sys::pidfd::open(i32::try_from(watched.id()).unwrap()).unwrap();
        let source = FakeSource { log: log.clone(), pending: VecDeque::new() };
        let pager = Pager::new(
            uffd,
            Regions::new(&[(base, base + len as u64)]),
            Box::new(source),
            config,
            counters.clone(),
            Some(pidfd),
        )
        .with_push(Vec::new(), restored);
        let pager = Some(std::thread::spawn(move || pager.run()));
        Some(Served { map, log, counters, watched, pager })
    }

    /// Reads word `i` after recording it as the frontier of what was touched.
    fn touch(&self, i: usize) -> u64 {
        let mut log = self.log.lock().unwrap();
        log.frontier = log.frontier.max(self.addr_of(i));
        drop(log);
        self.word(i)
    }

    fn word(&self, i: usize) -> u64 {
        // A missing page is served by the pager.
        self.map.read(i)
    }

    fn words(&self) -> usize {
        self.map.words()
    }

    fn addr_of(&self, i: usize) -> u64 {
        self.map.addr() + i as u64 * 8
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.watched.kill();
        let _ = self.watched.wait();
        if let Some(p) = self.pager.take() {
            assert_eq!(p.join().unwrap(), Outcome::Exited);
        }
    }
}

#[test]
fn sequential_touch_gets_every_page_and_pipelines_read_ahead() {
    let Some(s) = Served::new(256, 16) else { return };
    for i in (0..s.words()).step_by(7) {
        assert_eq!(s.touch(i), word_at(s.addr_of(i)), "word {i}");
    }
    let log = s.log.lock().unwrap();
    let fetched: u64 = log.requests.iter().flatten().map(|r| r.1).sum();
    assert_eq!(fetched, 256 * PAGE, "each page is fetched exactly once");
    // 16 aligned windows of 16 pages; an unaligned mapping spans one more.
    assert!((16..=17).contains(&log.requests.len()), "one request per window: {:x?}", log.requests);
    // The first two windows are fetched on demand; from the second on, each
    // next window is asked for before the process gets there.
    assert!(log.ahead >= log.requests.len() - 3, "read-ahead: {} of {} requests", log.ahead, log.requests.len());
    assert_eq!(s.counters.snapshot().pages_fetched, 256);
}

#[test]
fn random_touch_is_served_without_read_ahead() {
    let Some(s) = Served::new(128, 8) else { return };
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = usize_of(x % s.words() as u64);
        assert_eq!(s.word(i), word_at(s.addr_of(i)), "word {i}");
    }
}

#[test]
fn dropped_pages_read_zero_never_the_seed() {
    let Some(mut s) = Served::new(64, 8) else { return };
    assert_eq!(s.word(0), word_at(s.addr_of(0)));
    s.map.discard(0, usize_of(4 * PAGE)).unwrap();
    assert_eq!(s.word(0), 0, "a page dropped by the process reads zero afterwards");
    assert_eq!(s.word(3 * 512 + 5), 0);
    assert_eq!(s.word(4 * 512), word_at(s.addr_of(4 * 512)), "pages after the dropped range still come from the seed");
    assert!(s.counters.snapshot().zero_faults >= 2);
}

#[test]
fn adaptive_window_grows_on_sequential_touch_and_shrinks_back_on_random() {
    let config = PagerConfig { window_pages: 4, adaptive: true, max_window_pages: 64, read_ahead: true };
    let Some(s) = Served::with(1024, config) else { return };
    for i in (0..s.words()).step_by(512) {
        assert_eq!(s.touch(i), word_at(s.addr_of(i)), "word {i}");
    }
    let log = s.log.lock().unwrap();
    let sizes: Vec<u64> = log.requests.iter().map(|r| r.iter().map(|x| x.1).sum::<u64>() / PAGE).collect();
    assert!(log.requests.len() < 40, "1024 pages in windows growing from 4 to 64 pages: {sizes:?}");
    assert!(sizes.contains(&64), "the window reaches its maximum: {sizes:?}");
    drop(log);

    // Grown first, then random faults: back to the initial window.
    let Some(s) = Served::with(1024, config) else { return };
    for i in (0..s.words() / 2).step_by(512) {
        s.touch(i);
    }
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = (s.words() / 2 + usize_of(x % (s.words() / 2) as u64)).min(s.words() - 1);
        assert_eq!(s.word(i), word_at(s.addr_of(i)), "word {i}");
    }
    let log = s.log.lock().unwrap();
    let last: u64 = log.requests.last().unwrap().iter().map(|x| x.1).sum::<u64>() / PAGE;
    assert!(last <= 4, "random faults shrink the window back to its initial 4 pages: {last}");
}

/// A window the source refuses because of one page it cannot read (a
/// never-touched PROT_NONE page of a nested seed) does not cost the child
/// its neighbours: the faulting page is asked for alone.
#[test]
fn refused_window_falls_back_to_the_faulting_page() {
    let Some(s) = Served::new(64, 16) else { return };
    let unreadable = s.addr_of(5 * 512);
    s.log.lock().unwrap().unreadable = Some(unreadable);
    for page in [4usize, 6, 20] {
        let i = page * 512;
        assert_eq!(s.word(i), word_at(s.addr_of(i)), "page {page}");
    }
    let log = s.log.lock().unwrap();
    let singles = log.requests.iter().filter(|r| r.iter().map(|x| x.1).sum::<u64>() == PAGE).count();
    // (Which of pages 4 and 6 share a window with page 5 depends on where the
    // mapping starts: at least one of them does.)
    assert!(singles >= 1, "a page came alone after its window was refused: {:x?}", log.requests);
}

/// While the daemon is still restoring the child (each thread's control
/// block, its rseq area: scattered touches), a fault fetches its page alone;
/// once the restore is over, windows again.
#[test]
fn faults_during_the_restore_fetch_their_page_alone() {
    let restored = Arc::new(AtomicBool::new(false));
    let config = PagerConfig { window_pages: 16, adaptive: false, max_window_pages: 16, read_ahead: true };
    let Some(s) = Served::restored_when(256, config, restored.clone()) else { return };
    for page in [3usize, 40, 41, 200] {
        assert_eq!(s.word(page * 512), word_at(s.addr_of(page * 512)), "page {page}");
    }
    let sizes = |log: &Log| -> Vec<u64> { log.requests.iter().map(|r| r.iter().map(|x| x.1).sum::<u64>() / PAGE).collect() };
    assert_eq!(sizes(&s.log.lock().unwrap()), [1, 1, 1, 1], "one page per fault while restoring");
    restored.store(true, Ordering::Relaxed);
    assert_eq!(s.word(100 * 512), word_at(s.addr_of(100 * 512)));
    let log = s.log.lock().unwrap();
    assert!(sizes(&log).last().is_some_and(|&n| n > 1), "a window after the restore: {:?}", sizes(&log));
}

/// Eight threads fault at once on pages far apart: every one gets its own
/// page right, and each page is fetched once.
#[test]
fn concurrent_faults_of_several_threads() {
    let Some(s) = Served::new(1024, 4) else { return };
    let go = std::sync::Barrier::new(8);
    let map = &s.map;
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..8usize)
            .map(|t| {
                let go = &go;
                scope.spawn(move || {
                    go.wait();
                    // Each thread its own window: pages t*128 .. t*128+4.
                    (0..4usize).map(|p| (t * 128 + p) * 512 + t).map(|i| (i, map.read(i))).collect::<Vec<_>>()
                })
            })
            .collect();
        for t in threads {
            for (i, word) in t.join().unwrap() {
                assert_eq!(word, word_at(s.addr_of(i)), "word {i}");
            }
        }
    });
    let log = s.log.lock().unwrap();
    let mut pages: Vec<u64> = log.requests.iter().flatten().flat_map(|&(a, l)| (0..l / PAGE).map(move |i| a + i * PAGE)).collect();
    let n = pages.len();
    pages.sort_unstable();
    pages.dedup();
    assert_eq!(pages.len(), n, "no page was fetched twice: {:x?}", log.requests);
}

/// The child exits while its memory lives on (the daemon reads its command
/// line from outside, holding it): a read of a page never served fails once
/// the pager has ended, and does not wait for it for ever nor read zeros; a
/// page the child had dropped reads the zeros it holds.
#[test]
fn after_the_child_exits_unserved_pages_fail_and_dropped_ones_read_zero() {
    let Some(mut s) = Served::new(64, 1) else { return };
    assert_eq!(s.word(0), word_at(s.addr_of(0)));
    assert_eq!(s.word(512), word_at(s.addr_of(512)));
    s.map.discard(usize_of(PAGE), usize_of(PAGE)).unwrap();
    // Let the pager take the drop in before "the child" goes.
    assert_eq!(s.word(2 * 512), word_at(s.addr_of(2 * 512)));
    s.watched.kill().unwrap();
    s.watched.wait().unwrap();
    let pager = s.pager.take().unwrap();
    assert_eq!(pager.join().unwrap(), Outcome::Exited);
    let me = i32::try_from(std::process::id()).unwrap();
    let page = |i: u64| (s.map.addr() + i * PAGE, PAGE);
    let mut bytes = vec![0xAAu8; usize_of(PAGE)];
    let unserved = mitosis_sys::mem::read_ranges(me, &[page(5)], &mut bytes);
    assert!(!matches!(unserved, Ok(n) if n > 0), "a page never served read {unserved:?} after its pager ended");
    assert_eq!(mitosis_sys::mem::read_ranges(me, &[page(1)], &mut bytes).unwrap(), usize_of(PAGE));
    assert!(bytes.iter().all(|&b| b == 0), "a dropped page reads zero");
    assert_eq!(mitosis_sys::mem::read_ranges(me, &[page(0)], &mut bytes).unwrap(), usize_of(PAGE));
    assert_eq!(u64::from_ne_bytes(bytes[..8].try_into().unwrap()), word_at(s.addr_of(0)), "a served page keeps its bytes");
}
