//! This host's page cache: pages of other hosts' seeds that children here
//! fetched, so that each page crosses the network once per host.
//!
//! Entries are keyed by seed host, seed id and seed generation: a seed
//! prepared again under the same id has a new generation and never meets
//! the old one's pages (and the old generation's entry is dropped as soon
//! as a resume sees the new one). The cache has a size limit; past it, the
//! least recently used generations are evicted whole.
//!
//! Children do not share the cached pages: each gets its own copy
//! (`UFFDIO_COPY` from here), so a child's memory stays plain anonymous
//! memory with the semantics its program relies on (`MADV_DONTNEED` reads
//! zero). Sharing them copy-on-write would need file-backed private
//! mappings, where a dropped page reads the file's (the seed's) content
//! again.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use mitosis_pager::{Counters, FetchError, PageSource};
use mitosis_proto::local::CacheStats;
use mitosis_sys::PAGE;

use crate::peer::RemoteSource;

/// Pages per block: the unit of allocation and accounting.
const BLOCK_PAGES: u64 = 64;
const BLOCK_BYTES: u64 = BLOCK_PAGES * PAGE;

/// What a cache entry belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub host: String,
    pub id: String,
    pub generation: u64,
}

struct Block {
    data: Box<[u8]>,
    present: u64,
}

#[derive(Default)]
struct Entry {
    blocks: HashMap<u64, Block>,
    last_used: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Key, Entry>,
    bytes: u64,
    clock: u64,
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
                if let Some(e) = inner.entries.remove(&k) {
                    inner.bytes -= e.blocks.len() as u64 * BLOCK_BYTES;
                    gone.push(e);
                }
            }
        }
        free_in_background(gone);
    }

    /// Copies the page at seed address `page` into `out` if it is cached.
    fn read(&self, inner: &mut Inner, key: &Key, page: u64, out: &mut [u8]) -> bool {
        inner.clock += 1;
        let clock = inner.clock;
        let Some(entry) = inner.entries.get_mut(key) else { return false };
        entry.last_used = clock;
        let (block, bit) = (page / BLOCK_BYTES * BLOCK_BYTES, (page % BLOCK_BYTES) / PAGE);
        match entry.blocks.get(&block) {
            Some(b) if b.present & (1 << bit) != 0 => {
                let off = (bit * PAGE) as usize;
                out.copy_from_slice(&b.data[off..off + PAGE as usize]);
                true
            }
            _ => false,
        }
    }

    /// Stores `pages` (seed address, one page of bytes each), evicting the
    /// least recently used other generations if needed.
    fn store(&self, key: &Key, pages: &[(u64, &[u8])]) {
        let mut evicted = Vec::new();
        self.store_evicting(key, pages, &mut evicted);
        free_in_background(evicted);
    }

    fn store_evicting(&self, key: &Key, pages: &[(u64, &[u8])], evicted: &mut Vec<Entry>) {
        let mut inner = self.inner.lock().unwrap();
        inner.clock += 1;
        let clock = inner.clock;
        for &(page, data) in pages {
            let block = page / BLOCK_BYTES * BLOCK_BYTES;
            let new_block = !inner.entries.get(key).is_some_and(|e| e.blocks.contains_key(&block));
            if new_block {
                while inner.bytes + BLOCK_BYTES > self.limit {
                    let victim = inner.entries.iter().filter(|(k, _)| *k != key).min_by_key(|(_, e)| e.last_used).map(|(k, _)| k.clone());
                    let Some(victim) = victim else { return };
                    let e = inner.entries.remove(&victim).expect("victim exists");
                    inner.bytes -= e.blocks.len() as u64 * BLOCK_BYTES;
                    evicted.push(e);
                    self.evictions.fetch_add(1, Ordering::Relaxed);
                }
                inner.bytes += BLOCK_BYTES;
            }
            let entry = inner.entries.entry(key.clone()).or_default();
            entry.last_used = clock;
            let b = entry
                .blocks
                .entry(block)
                .or_insert_with(|| Block { data: vec![0u8; BLOCK_BYTES as usize].into_boxed_slice(), present: 0 });
            let bit = (page % BLOCK_BYTES) / PAGE;
            let off = (bit * PAGE) as usize;
            b.data[off..off + PAGE as usize].copy_from_slice(data);
            b.present |= 1 << bit;
        }
    }

    pub fn stats(&self) -> CacheStats {
        let inner = self.inner.lock().unwrap();
        CacheStats {
            limit_bytes: self.limit,
            bytes: inner.bytes,
            generations: inner.entries.len() as u64,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }
}

/// Frees evicted generations off the caller's path: giving back a gigabyte
/// of blocks takes tens of milliseconds, and the caller is a pager serving a
/// fault, or a resume.
fn free_in_background(entries: Vec<Entry>) {
    if entries.is_empty() {
        return;
    }
    if let Err(e) = std::thread::Builder::new().name("cache-free".into()).spawn(move || drop(entries)) {
        tracing::warn!(error = %e, "freeing evicted cache pages in place");
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
    cache: Arc<PageCache>,
    key: Key,
    pending: VecDeque<Pending>,
    counters: Arc<Counters>,
    scratch: Vec<u8>,
}

impl CachedSource {
    pub fn new(remote: RemoteSource, cache: Arc<PageCache>, counters: Arc<Counters>) -> CachedSource {
        let key = Key { host: remote.addr.clone(), id: remote.id.clone(), generation: remote.generation };
        CachedSource { remote, cache, key, pending: VecDeque::new(), counters, scratch: Vec::new() }
    }
}

fn pages_of(ranges: &[(u64, u64)]) -> impl Iterator<Item = u64> + '_ {
    ranges.iter().flat_map(|&(a, l)| (a..a + l).step_by(PAGE as usize))
}

impl PageSource for CachedSource {
    fn request(&mut self, ranges: &[(u64, u64)]) -> Result<(), String> {
        let mut hits = Vec::new();
        let mut missing: Vec<(u64, u64)> = Vec::new();
        {
            let mut inner = self.cache.inner.lock().unwrap();
            for page in pages_of(ranges) {
                let mut data = vec![0u8; PAGE as usize].into_boxed_slice();
                if self.cache.read(&mut inner, &self.key, page, &mut data) {
                    hits.push(Some(data));
                } else {
                    hits.push(None);
                    match missing.last_mut() {
                        Some(last) if last.0 + last.1 == page => last.1 += PAGE,
                        _ => missing.push((page, PAGE)),
                    }
                }
            }
        }
        let n_hits = hits.iter().filter(|h| h.is_some()).count() as u64;
        self.cache.hits.fetch_add(n_hits, Ordering::Relaxed);
        self.cache.misses.fetch_add(hits.len() as u64 - n_hits, Ordering::Relaxed);
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
        let mut new_pages = Vec::new();
        let mut next_fetched = 0usize;
        for (i, (page, hit)) in pages_of(&p.ranges).zip(&p.hits).enumerate() {
            let dst = &mut out[i * PAGE as usize..(i + 1) * PAGE as usize];
            match hit {
                Some(data) => dst.copy_from_slice(data),
                None => {
                    let src = &fetched[next_fetched..next_fetched + PAGE as usize];
                    dst.copy_from_slice(src);
                    new_pages.push((page, next_fetched));
                    next_fetched += PAGE as usize;
                }
            }
        }
        if self.cache.enabled() && !new_pages.is_empty() {
            let pages: Vec<(u64, &[u8])> = new_pages.iter().map(|&(a, off)| (a, &fetched[off..off + PAGE as usize])).collect();
            self.cache.store(&self.key, &pages);
        }
        self.scratch = fetched;
        Ok(())
    }

    fn duplicate(&self) -> Result<Box<dyn PageSource>, String> {
        Ok(Box::new(CachedSource::new(self.remote.duplicate_remote()?, self.cache.clone(), self.counters.clone())))
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

    #[test]
    fn stores_reads_and_keeps_generations_apart() {
        let c = PageCache::new(16 * BLOCK_BYTES);
        let p1 = page(1);
        c.store(&key(1), &[(0x10000, &p1)]);
        let mut out = page(0);
        let mut inner = c.inner.lock().unwrap();
        assert!(c.read(&mut inner, &key(1), 0x10000, &mut out));
        assert_eq!(out, p1);
        assert!(!c.read(&mut inner, &key(2), 0x10000, &mut out), "another generation never sees these pages");
        assert!(!c.read(&mut inner, &key(1), 0x11000, &mut out));
    }

    #[test]
    fn evicts_least_recently_used_generations_past_the_limit() {
        let c = PageCache::new(2 * BLOCK_BYTES);
        let p = page(7);
        c.store(&key(1), &[(0, &p)]);
        c.store(&key(2), &[(0, &p)]);
        c.store(&key(3), &[(0, &p)]);
        let s = c.stats();
        assert_eq!((s.generations, s.bytes, s.evictions), (2, 2 * BLOCK_BYTES, 1));
        let mut out = page(0);
        let mut inner = c.inner.lock().unwrap();
        assert!(!c.read(&mut inner, &key(1), 0, &mut out), "the oldest went first");
        assert!(c.read(&mut inner, &key(3), 0, &mut out));
    }

    #[test]
    fn keep_only_drops_other_generations() {
        let c = PageCache::new(16 * BLOCK_BYTES);
        let p = page(3);
        c.store(&key(1), &[(0, &p)]);
        c.store(&key(2), &[(0, &p)]);
        c.keep_only("h", "s", 2);
        assert_eq!(c.stats().generations, 1);
        assert_eq!(c.stats().bytes, BLOCK_BYTES);
    }
}
