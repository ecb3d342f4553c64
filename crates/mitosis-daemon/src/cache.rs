//! This host's page cache: pages of other hosts' seeds that children here
//! fetched, so that each page crosses the network once per host.
//!
//! Entries are keyed by seed host, seed id and seed generation: a seed
//! prepared again under the same id has a new generation and never meets
//! the old one's pages (and the old generation's entry is dropped as soon
//! as a resume sees the new one). The cache has a size limit; past it, the
//! least recently used generations are evicted whole.
//!
//! A generation's pages live in a sparse shmem file (a memfd) whose offset
//! is the seed address, so that children can *share* them: the daemon maps
//! the child's anonymous memory privately from that file, and its pager
//! maps the pages the file holds (see `mitosis_pager::SharedPages`): N
//! children of a seed here hold one copy of every page none of them wrote.
//! An evicted generation's file is emptied (hole-punched): its pages leave
//! every child that did not write them, whose pagers fetch them again as
//! private copies. Children of this host's own seeds, children resumed in
//! place, and `--no-cache` resumes get private copies (`UFFDIO_COPY`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use mitosis_pager::{Counters, FetchError, PageSource, SharedPages};
use mitosis_proto::local::CacheStats;
use mitosis_sys::shmem::SparseFile;
use mitosis_sys::PAGE;

use crate::peer::RemoteSource;

/// Pages per block of the presence map.
const BLOCK_PAGES: u64 = 64;
const BLOCK_BYTES: u64 = BLOCK_PAGES * PAGE;

/// What a cache entry belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub host: String,
    pub id: String,
    pub generation: u64,
}

/// The file of one generation's pages. Retired when the cache lets the
/// generation go (its entry is gone, see [`Inner::current`]): from then on
/// it holds nothing and takes nothing.
#[derive(Debug)]
pub struct GenerationFile {
    file: SparseFile,
    /// The same file opened read-only: what children get to map it
    /// privately, so that none can ever write the copy the others share.
    read_only: std::fs::File,
}

impl GenerationFile {
    fn create() -> Result<GenerationFile, String> {
        let file = SparseFile::create(c"mitosis-seed").map_err(|e| format!("cannot make the shared page cache file: {e}"))?;
        let read_only = std::fs::File::open(format!("/proc/self/fd/{}", file.raw()))
            .map_err(|e| format!("cannot open the shared page cache file read-only: {e}"))?;
        Ok(GenerationFile { file, read_only })
    }

    /// The read-only descriptor children map their memory from.
    pub fn read_only_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.read_only.as_raw_fd()
    }

    /// Empties the file: every page leaves the children that did not write it.
    fn retire(&self) {
        if let Err(e) = self.file.punch(0, mitosis_sys::shmem::ADDRESS_SPACE) {
            tracing::warn!(error = %e, "could not give back an evicted cache generation's pages");
        }
    }
}

struct Entry {
    file: Arc<GenerationFile>,
    /// Per block of [`BLOCK_PAGES`] pages (by seed address): which pages
    /// the file holds.
    blocks: HashMap<u64, u64>,
    pages: u64,
    last_used: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Key, Entry>,
    bytes: u64,
    clock: u64,
}

impl Inner {
    /// The entry of `key` if it is still the one of `file`.
    fn current(&mut self, key: &Key, file: &Arc<GenerationFile>) -> Option<&mut Entry> {
        self.entries.get_mut(key).filter(|e| Arc::ptr_eq(&e.file, file))
    }

    fn remove(&mut self, key: &Key) -> Option<Entry> {
        let e = self.entries.remove(key)?;
        self.bytes -= e.pages * PAGE;
        Some(e)
    }

    fn usage(&self) -> Vec<(String, u64)> {
        let mut by_id: HashMap<String, u64> = HashMap::new();
        for (k, e) in &self.entries {
            *by_id.entry(k.id.clone()).or_default() += e.pages * PAGE;
        }
        by_id.into_iter().collect()
    }
}

/// Runs `(start, len)` of consecutive pages among `pages` (ascending).
fn runs_of(pages: &[u64]) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for &p in pages {
        match runs.last_mut() {
            Some(r) if r.0 + r.1 == p => r.1 += PAGE,
            _ => runs.push((p, PAGE)),
        }
    }
    runs
}

fn holds(e: &Entry, page: u64) -> bool {
    e.blocks.get(&(page / BLOCK_BYTES)).is_some_and(|bits| bits & (1 << ((page % BLOCK_BYTES) / PAGE)) != 0)
}

pub struct PageCache {
    limit: u64,
    inner: Mutex<Inner>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

impl PageCache {
    /// A cache of at most `limit` bytes (0 disables it).
    pub fn new(limit: u64) -> PageCache {
        PageCache {
            limit,
            inner: Mutex::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        self.limit > 0
    }

    /// Forgets every generation of `host`/`id` other than `generation`.
    pub fn keep_only(&self, host: &str, id: &str, generation: u64) {
        let mut gone = Vec::new();
        {
            let mut inner = self.inner.lock().unwrap();
            let stale: Vec<Key> =
                inner.entries.keys().filter(|k| k.host == host && k.id == id && k.generation != generation).cloned().collect();
            for k in stale {
                gone.extend(inner.remove(&k));
            }
        }
        retire_in_background(gone);
    }

    /// The generation `key`'s shared file (made if it has none yet).
    pub fn generation(self: &Arc<Self>, key: Key) -> Result<Generation, String> {
        let mut inner = self.inner.lock().unwrap();
        inner.clock += 1;
        let clock = inner.clock;
        let file = match inner.entries.get_mut(&key) {
            Some(e) => {
                e.last_used = clock;
                e.file.clone()
            }
            None => {
                let file = Arc::new(GenerationFile::create()?);
                inner.entries.insert(key.clone(), Entry { file: file.clone(), blocks: HashMap::new(), pages: 0, last_used: clock });
                file
            }
        };
        Ok(Generation { cache: self.clone(), key, file })
    }

    /// Bytes held per seed id (all hosts and generations of the id together).
    pub fn usage(&self) -> Vec<(String, u64)> {
        self.inner.lock().unwrap().usage()
    }

    pub fn stats(&self) -> CacheStats {
        let inner = self.inner.lock().unwrap();
        let seeds = inner.usage();
        CacheStats {
            limit_bytes: self.limit,
            bytes: inner.bytes,
            generations: inner.entries.len() as u64,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            seeds,
        }
    }
}

/// Empties evicted generations off the caller's path: giving back a
/// gigabyte takes tens of milliseconds, and the caller is a pager serving a
/// fault, or a resume.
fn retire_in_background(entries: Vec<Entry>) {
    if entries.is_empty() {
        return;
    }
    let retire = move || entries.iter().for_each(|e| e.file.retire());
    if let Err(e) = std::thread::Builder::new().name("cache-free".into()).spawn(retire) {
        tracing::warn!(error = %e, "could not start a thread to free evicted cache pages");
    }
}

/// One generation of the cache, as a child's pager and source use it.
#[derive(Clone)]
pub struct Generation {
    cache: Arc<PageCache>,
    key: Key,
    file: Arc<GenerationFile>,
}

impl Generation {
    pub fn file(&self) -> &GenerationFile {
        &self.file
    }

    /// Which pages of `pages` the file holds, their bytes read in one read
    /// per run (under the cache's lock: an eviction cannot empty the file
    /// between the check and the read).
    fn read(&self, inner: &mut Inner, pages: &[u64]) -> Vec<Option<Box<[u8]>>> {
        inner.clock += 1;
        let clock = inner.clock;
        let mut out: Vec<Option<Box<[u8]>>> = vec![None; pages.len()];
        let Some(e) = inner.current(&self.key, &self.file) else { return out };
        e.last_used = clock;
        let held: Vec<u64> = pages.iter().copied().filter(|&p| holds(e, p)).collect();
        let mut buf = Vec::new();
        for (start, len) in runs_of(&held) {
            buf.resize(mitosis_sys::usize_of(len), 0);
            if self.file.file.read_at(start, &mut buf).is_err() {
                continue;
            }
            for (i, page) in pages.iter().enumerate().filter(|(_, &p)| p >= start && p < start + len) {
                let off = mitosis_sys::usize_of(page - start);
                out[i] = Some(buf[off..off + PAGE as usize].into());
            }
        }
        out
    }

    /// Stores whole pages at `seed` that the file does not hold yet,
    /// evicting the least recently used other generations if needed;
    /// false if the generation was let go or cannot fit.
    fn store(&self, seed: u64, bytes: &[u8]) -> bool {
        let len = bytes.len() as u64;
        let missing: Vec<u64> = {
            let mut evicted = Vec::new();
            let mut inner = self.cache.inner.lock().unwrap();
            inner.clock += 1;
            let clock = inner.clock;
            let Some(e) = inner.current(&self.key, &self.file) else { return false };
            e.last_used = clock;
            let missing: Vec<u64> = (seed..seed + len).step_by(PAGE as usize).filter(|&p| !holds(e, p)).collect();
            let need = missing.len() as u64 * PAGE;
            while inner.bytes + need > self.cache.limit {
                let victim = inner.entries.iter().filter(|(k, _)| **k != self.key).min_by_key(|(_, e)| e.last_used).map(|(k, _)| k.clone());
                let Some(victim) = victim else { break };
                evicted.extend(inner.remove(&victim));
                self.cache.evictions.fetch_add(1, Ordering::Relaxed);
            }
            let fits = inner.bytes + need <= self.cache.limit;
            drop(inner);
            retire_in_background(evicted);
            if !fits {
                return false;
            }
            missing
        };
        // Written outside the lock, one write per run of missing pages;
        // the pages count as held once written.
        for (start, len) in runs_of(&missing) {
            let off = mitosis_sys::usize_of(start - seed);
            if self.file.file.write_at(start, &bytes[off..off + mitosis_sys::usize_of(len)]).is_err() {
                return false;
            }
        }
        let mut inner = self.cache.inner.lock().unwrap();
        let Some(e) = inner.current(&self.key, &self.file) else {
            drop(inner);
            // Retired meanwhile: what was written after its emptying goes too.
            for (start, len) in runs_of(&missing) {
                let _ = self.file.file.punch(start, len);
            }
            return false;
        };
        let mut added = 0;
        for &p in &missing {
            let bits = e.blocks.entry(p / BLOCK_BYTES).or_insert(0);
            let bit = 1 << ((p % BLOCK_BYTES) / PAGE);
            if *bits & bit == 0 {
                *bits |= bit;
                added += 1;
            }
        }
        e.pages += added;
        inner.bytes += added * PAGE;
        true
    }
}

impl SharedPages for Generation {
    fn held(&self, seed: u64, len: u64) -> Vec<(u64, u64)> {
        let mut inner = self.cache.inner.lock().unwrap();
        let Some(e) = inner.current(&self.key, &self.file) else { return Vec::new() };
        let held: Vec<u64> = (seed..seed + len).step_by(PAGE as usize).filter(|&p| holds(e, p)).collect();
        self.cache.hits.fetch_add(held.len() as u64, Ordering::Relaxed);
        runs_of(&held)
    }

    fn put(&self, seed: u64, bytes: &[u8]) -> bool {
        self.store(seed, bytes)
    }
}

/// A request as the pager made it: which pages came from the cache (their
/// bytes copied at request time, so an eviction in between cannot lose
/// them) and whether the rest went to the seed host.
struct Pending {
    ranges: Vec<(u64, u64)>,
    /// Per page of `ranges`: its bytes if it was a hit.
    hits: Vec<Option<Box<[u8]>>>,
    missing_bytes: u64,
}

/// A [`PageSource`] that answers from this host's cache what it can and asks
/// the seed host for the rest, filling the cache with it.
pub struct CachedSource {
    remote: RemoteSource,
    generation: Generation,
    pending: VecDeque<Pending>,
    counters: Arc<Counters>,
    scratch: Vec<u8>,
}

impl CachedSource {
    pub fn new(remote: RemoteSource, generation: Generation, counters: Arc<Counters>) -> CachedSource {
        CachedSource { remote, generation, pending: VecDeque::new(), counters, scratch: Vec::new() }
    }
}

fn pages_of(ranges: &[(u64, u64)]) -> impl Iterator<Item = u64> + '_ {
    ranges.iter().flat_map(|&(a, l)| (a..a + l).step_by(PAGE as usize))
}

impl PageSource for CachedSource {
    fn request(&mut self, ranges: &[(u64, u64)]) -> Result<(), String> {
        let pages: Vec<u64> = pages_of(ranges).collect();
        let hits = {
            let mut inner = self.generation.cache.inner.lock().unwrap();
            self.generation.read(&mut inner, &pages)
        };
        let missing_pages: Vec<u64> = pages.iter().zip(&hits).filter(|(_, hit)| hit.is_none()).map(|(&page, _)| page).collect();
        let missing = runs_of(&missing_pages);
        let n_hits = hits.iter().filter(|h| h.is_some()).count() as u64;
        self.generation.cache.hits.fetch_add(n_hits, Ordering::Relaxed);
        self.generation.cache.misses.fetch_add(hits.len() as u64 - n_hits, Ordering::Relaxed);
        self.counters.cache_hits.fetch_add(n_hits, Ordering::Relaxed);
        let missing_bytes = missing.iter().map(|r| r.1).sum();
        if !missing.is_empty() {
            self.remote.request(&missing)?;
        }
        self.pending.push_back(Pending { ranges: ranges.to_vec(), hits, missing_bytes });
        Ok(())
    }

    fn receive(&mut self, out: &mut [u8]) -> Result<(), FetchError> {
        let p = self.pending.pop_front().ok_or_else(|| FetchError::Broken("an answer was taken that was never asked for".into()))?;
        let mut fetched = std::mem::take(&mut self.scratch);
        fetched.resize(p.missing_bytes as usize, 0);
        if p.missing_bytes > 0 {
            self.remote.receive(&mut fetched)?;
        }
        // Runs of fetched pages that follow each other in the seed: (seed address, offset in `fetched`, length).
        let mut new_runs: Vec<(u64, usize, usize)> = Vec::new();
        let mut next_fetched = 0usize;
        for (i, (page, hit)) in pages_of(&p.ranges).zip(&p.hits).enumerate() {
            let dst = &mut out[i * PAGE as usize..(i + 1) * PAGE as usize];
            match hit {
                Some(data) => dst.copy_from_slice(data),
                None => {
                    dst.copy_from_slice(&fetched[next_fetched..next_fetched + PAGE as usize]);
                    match new_runs.last_mut() {
                        Some(r) if r.0 + r.2 as u64 == page => r.2 += PAGE as usize,
                        _ => new_runs.push((page, next_fetched, PAGE as usize)),
                    }
                    next_fetched += PAGE as usize;
                }
            }
        }
        for (seed, off, len) in new_runs {
            self.generation.store(seed, &fetched[off..off + len]);
        }
        self.scratch = fetched;
        Ok(())
    }

    fn duplicate(&self) -> Result<Box<dyn PageSource>, String> {
        Ok(Box::new(CachedSource::new(self.remote.duplicate_remote()?, self.generation.clone(), self.counters.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(g: u64) -> Key {
        Key { host: "h".into(), id: "s".into(), generation: g }
    }

    fn page(fill: u8) -> Vec<u8> {
        vec![fill; PAGE as usize]
    }

    fn read(g: &Generation, at: u64) -> Option<Vec<u8>> {
        let mut inner = g.cache.inner.lock().unwrap();
        g.read(&mut inner, &[at]).pop().flatten().map(|b| b.to_vec())
    }

    #[test]
    fn stores_reads_and_keeps_generations_apart() {
        let c = Arc::new(PageCache::new(16 * BLOCK_BYTES));
        let (g1, g2) = (c.generation(key(1)).unwrap(), c.generation(key(2)).unwrap());
        assert!(g1.store(0x10000, &page(1)));
        assert_eq!(read(&g1, 0x10000), Some(page(1)));
        assert_eq!(read(&g2, 0x10000), None, "another generation never sees these pages");
        assert_eq!(read(&g1, 0x11000), None);
        assert_eq!(g1.held(0xf000, 3 * PAGE), vec![(0x10000, PAGE)]);
        assert_eq!(c.stats().bytes, PAGE);
    }

    #[test]
    fn evicts_least_recently_used_generations_past_the_limit() {
        let c = Arc::new(PageCache::new(2 * PAGE));
        let g: Vec<Generation> = (1..=3).map(|n| c.generation(key(n)).unwrap()).collect();
        assert!(g[0].store(0, &page(7)));
        assert!(g[1].store(0, &page(7)));
        assert!(g[2].store(0, &page(7)));
        let s = c.stats();
        assert_eq!((s.generations, s.bytes, s.evictions), (2, 2 * PAGE, 1));
        assert_eq!(read(&g[0], 0), None, "the oldest went first");
        assert!(!g[0].put(PAGE, &page(1)), "an evicted generation takes nothing more");
        assert!(g[0].held(0, PAGE).is_empty());
        assert_eq!(read(&g[2], 0), Some(page(7)));
        assert!(!g[2].store(PAGE, &[1u8; 3 * PAGE as usize]), "what cannot fit, even alone, is refused");
    }

    #[test]
    fn keep_only_drops_other_generations_and_empties_their_files() {
        let c = Arc::new(PageCache::new(16 * BLOCK_BYTES));
        let (g1, g2) = (c.generation(key(1)).unwrap(), c.generation(key(2)).unwrap());
        assert!(g1.store(0, &page(3)));
        assert!(g2.store(0, &page(3)));
        c.keep_only("h", "s", 2);
        assert_eq!(c.stats().generations, 1);
        assert_eq!(c.stats().bytes, PAGE);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut bytes = page(1);
        loop {
            g1.file.file.read_at(0, &mut bytes).unwrap();
            if bytes == page(0) || std::time::Instant::now() > deadline {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(bytes, page(0), "the old generation's file was emptied");
    }
}
