//! The pages a memory node holds: per instance, per page address, each
//! encoded by [`crate::codec`] with the digest its client made.
//!
//! A put is all or nothing: its pages are encoded first, then, under the
//! lock, either every one is stored or, if the node would go past its
//! capacity, none is and nothing stored before changes. Gets copy the stored
//! bytes out under the lock and decode outside it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use mitosis_proto::memnode::{Compression, InstanceUsage, MemnodeStats, PageDigest, MAX_STATS_INSTANCES};

use crate::codec::{decode, encode, Encoding, PAGE};
use crate::StoreError;

/// Bytes charged per stored page beside its stored bytes: its digest and
/// index entry (an estimate of the map node and allocation headers).
pub const PAGE_CHARGE: u64 = 64;

/// One stored page.
#[derive(Clone)]
struct StoredPage {
    encoding: Encoding,
    bytes: Arc<[u8]>,
    digest: PageDigest,
}

impl StoredPage {
    fn used(&self) -> u64 {
        self.bytes.len() as u64 + PAGE_CHARGE
    }
}

#[derive(Default)]
struct InstancePages {
    pages: BTreeMap<u64, StoredPage>,
    stored_bytes: u64,
}

#[derive(Default)]
struct Held {
    instances: HashMap<String, InstancePages>,
    pages: u64,
    stored_bytes: u64,
}

impl Held {
    fn used(&self) -> u64 {
        self.stored_bytes + self.pages * PAGE_CHARGE
    }
}

#[derive(Default)]
struct Counters {
    puts: AtomicU64,
    pages_put: AtomicU64,
    gets: AtomicU64,
    pages_served: AtomicU64,
    misses: AtomicU64,
    drops: AtomicU64,
    refusals: AtomicU64,
    bad_requests: AtomicU64,
}

/// What a stored put left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub pages: u64,
    pub instance_pages: u64,
    pub instance_used_bytes: u64,
}

/// The pages of a get, decoded, with their digests.
pub struct Got {
    pub digests: Vec<PageDigest>,
}

/// A memory node's pages and counters; shared by its connections.
pub struct Store {
    capacity: u64,
    compression: Compression,
    held: Mutex<Held>,
    counters: Counters,
}

impl Store {
    pub fn new(capacity: u64, compression: Compression) -> Store {
        Store { capacity, compression, held: Mutex::new(Held::default()), counters: Counters::default() }
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn compression(&self) -> Compression {
        self.compression
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        // A panic under the lock leaves whole values behind (each put is applied
        // only after its checks), so a poisoned lock is still consistent.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `data` (the runs' bytes back to back) for `instance`, one
    /// digest per page, replacing pages stored at the same addresses; refused
    /// whole with [`StoreError::Full`] if the node would go past its capacity.
    /// The runs are already checked (page aligned, not overlapping).
    pub fn put(&self, instance: &str, runs: &[(u64, u64)], data: &[u8], digests: &[PageDigest]) -> Result<Stored, StoreError> {
        let total: u64 = runs.iter().map(|r| r.1).sum();
        if total != data.len() as u64 || total / PAGE as u64 != digests.len() as u64 {
            return Err(StoreError::BadRequest(format!("{} bytes and {} digests for runs of {total} bytes", data.len(), digests.len())));
        }
        // Encoding is the slow part: done before taking the lock.
        let mut encoded = Vec::with_capacity(digests.len());
        let mut pages = data.chunks_exact(PAGE).zip(digests);
        for &(addr, len) in runs {
            for i in 0..len / PAGE as u64 {
                let (page, digest) = pages.next().expect("lengths checked above");
                let (encoding, bytes) = encode(self.compression, page)?;
                encoded.push((addr + i * PAGE as u64, StoredPage { encoding, bytes: bytes.into(), digest: *digest }));
            }
        }
        let mut held = self.held();
        let existing = held.instances.get(instance);
        let (mut grows, mut shrinks) = (0u64, 0u64);
        for (addr, page) in &encoded {
            grows += page.used();
            if let Some(old) = existing.and_then(|i| i.pages.get(addr)) {
                shrinks += old.used();
            }
        }
        let used = held.used();
        if used - shrinks + grows > self.capacity {
            self.counters.refusals.fetch_add(1, Ordering::Relaxed);
            return Err(StoreError::Full { needed: grows - shrinks.min(grows), used, capacity: self.capacity });
        }
        let held = &mut *held;
        let inst = held.instances.entry(instance.to_string()).or_default();
        let mut new_pages = 0u64;
        for (addr, page) in encoded {
            let size = page.bytes.len() as u64;
            inst.stored_bytes += size;
            held.stored_bytes += size;
            match inst.pages.insert(addr, page) {
                Some(old) => {
                    inst.stored_bytes -= old.bytes.len() as u64;
                    held.stored_bytes -= old.bytes.len() as u64;
                }
                None => new_pages += 1,
            }
        }
        held.pages += new_pages;
        let pages = digests.len() as u64;
        self.counters.puts.fetch_add(1, Ordering::Relaxed);
        self.counters.pages_put.fetch_add(pages, Ordering::Relaxed);
        let instance_pages = inst.pages.len() as u64;
        Ok(Stored { pages, instance_pages, instance_used_bytes: inst.stored_bytes + instance_pages * PAGE_CHARGE })
    }

    /// Decodes the pages of `runs` of `instance` into `out` (exactly the
    /// runs' bytes). Every page must have been put: a missing one is
    /// [`StoreError::Missing`], never zeros.
    pub fn get(&self, instance: &str, runs: &[(u64, u64)], out: &mut [u8]) -> Result<Got, StoreError> {
        let total: u64 = runs.iter().map(|r| r.1).sum();
        if total != out.len() as u64 {
            return Err(StoreError::BadRequest(format!("{} bytes of room for runs of {total} bytes", out.len())));
        }
        let mut found = Vec::with_capacity(out.len() / PAGE);
        {
            let held = self.held();
            let Some(inst) = held.instances.get(instance) else {
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                return Err(StoreError::Missing { instance: instance.to_string(), addr: runs[0].0, instance_known: false });
            };
            for &(addr, len) in runs {
                for page_addr in (addr..addr + len).step_by(PAGE) {
                    match inst.pages.get(&page_addr) {
                        Some(page) => found.push(page.clone()),
                        None => {
                            self.counters.misses.fetch_add(1, Ordering::Relaxed);
                            return Err(StoreError::Missing { instance: instance.to_string(), addr: page_addr, instance_known: true });
                        }
                    }
                }
            }
        }
        let mut digests = Vec::with_capacity(found.len());
        for (page, dst) in found.iter().zip(out.chunks_exact_mut(PAGE)) {
            decode(page.encoding, &page.bytes, dst)?;
            digests.push(page.digest);
        }
        self.counters.gets.fetch_add(1, Ordering::Relaxed);
        self.counters.pages_served.fetch_add(digests.len() as u64, Ordering::Relaxed);
        Ok(Got { digests })
    }

    /// Forgets `instance`'s pages; returns how many pages and raw bytes it held.
    pub fn drop_instance(&self, instance: &str) -> (u64, u64) {
        let mut held = self.held();
        self.counters.drops.fetch_add(1, Ordering::Relaxed);
        match held.instances.remove(instance) {
            Some(inst) => {
                let pages = inst.pages.len() as u64;
                held.pages -= pages;
                held.stored_bytes -= inst.stored_bytes;
                (pages, pages * PAGE as u64)
            }
            None => (0, 0),
        }
    }

    /// Counts a request refused as malformed.
    pub fn note_bad_request(&self) {
        self.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stats(&self) -> MemnodeStats {
        let held = self.held();
        let mut per_instance: Vec<InstanceUsage> = held
            .instances
            .iter()
            .map(|(id, i)| InstanceUsage {
                instance: id.clone(),
                pages: i.pages.len() as u64,
                raw_bytes: i.pages.len() as u64 * PAGE as u64,
                stored_bytes: i.stored_bytes,
            })
            .collect();
        per_instance.sort_by(|a, b| b.stored_bytes.cmp(&a.stored_bytes).then_with(|| a.instance.cmp(&b.instance)));
        per_instance.truncate(MAX_STATS_INSTANCES);
        let c = &self.counters;
        MemnodeStats {
            compression: self.compression,
            capacity_bytes: self.capacity,
            used_bytes: held.used(),
            pages: held.pages,
            raw_bytes: held.pages * PAGE as u64,
            stored_bytes: held.stored_bytes,
            instances: held.instances.len() as u64,
            per_instance,
            puts: c.puts.load(Ordering::Relaxed),
            pages_put: c.pages_put.load(Ordering::Relaxed),
            gets: c.gets.load(Ordering::Relaxed),
            pages_served: c.pages_served.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            drops: c.drops.load(Ordering::Relaxed),
            refusals: c.refusals.load(Ordering::Relaxed),
            bad_requests: c.bad_requests.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mitosis_proto::memnode::page_digest;

    const P: u64 = PAGE as u64;

    /// `n` pages of `instance` from `addr`, each different, with their digests.
    fn pages(instance: &str, addr: u64, n: usize, salt: u8) -> (Vec<u8>, Vec<PageDigest>) {
        let data: Vec<u8> = (0..n * PAGE).map(|i| ((i / 7) as u8).wrapping_add(salt).wrapping_mul(if i % 3 == 0 { 1 } else { 0 })).collect();
        let digests = data.chunks_exact(PAGE).enumerate().map(|(i, p)| page_digest(instance, addr + i as u64 * P, p)).collect();
        (data, digests)
    }

    fn get(store: &Store, instance: &str, addr: u64, n: usize) -> Result<Vec<u8>, StoreError> {
        let mut out = vec![0xEEu8; n * PAGE];
        store.get(instance, &[(addr, n as u64 * P)], &mut out)?;
        Ok(out)
    }

    #[test]
    fn put_then_get_gives_the_bytes_back_with_every_codec() {
        for compression in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let store = Store::new(1 << 30, compression);
            let (data, digests) = pages("i", 0x10000, 8, 1);
            let stored = store.put("i", &[(0x10000, 8 * P)], &data, &digests).unwrap();
            assert_eq!((stored.pages, stored.instance_pages), (8, 8));
            assert_eq!(get(&store, "i", 0x10000, 8).unwrap(), data, "{compression}");
            // A sub-range, and two runs at once.
            assert_eq!(get(&store, "i", 0x12000, 2).unwrap(), &data[2 * PAGE..4 * PAGE]);
            let mut two = vec![0u8; 2 * PAGE];
            let got = store.get("i", &[(0x17000, P), (0x10000, P)], &mut two).unwrap();
            assert_eq!(&two[..PAGE], &data[7 * PAGE..]);
            assert_eq!(&two[PAGE..], &data[..PAGE]);
            assert_eq!(got.digests, vec![digests[7], digests[0]]);
            let s = store.stats();
            assert_eq!((s.pages, s.raw_bytes, s.instances, s.puts, s.gets, s.pages_served), (8, 8 * P, 1, 1, 3, 12));
            if compression == Compression::None {
                assert_eq!(s.stored_bytes, 8 * P);
            } else {
                assert!(s.stored_bytes < 8 * P / 2, "{compression}: {} bytes stored", s.stored_bytes);
            }
        }
    }

    #[test]
    fn a_page_never_put_is_an_error_not_zeros() {
        let store = Store::new(1 << 30, Compression::Lz4);
        let (data, digests) = pages("i", 0x10000, 2, 1);
        store.put("i", &[(0x10000, 2 * P)], &data, &digests).unwrap();
        let err = get(&store, "i", 0x10000, 3).unwrap_err();
        assert_eq!(err, StoreError::Missing { instance: "i".into(), addr: 0x12000, instance_known: true });
        assert!(err.to_string().contains("0x12000") && err.to_string().contains("never put"), "{err}");
        assert!(matches!(get(&store, "other", 0x10000, 1), Err(StoreError::Missing { instance_known: false, .. })));
        assert_eq!(store.stats().misses, 2);
    }

    #[test]
    fn a_put_past_capacity_is_refused_whole_and_keeps_what_was_stored() {
        // Room for 4 raw pages and their charges.
        let store = Store::new(4 * (P + PAGE_CHARGE), Compression::None);
        let (old, old_digests) = pages("i", 0, 3, 1);
        store.put("i", &[(0, 3 * P)], &old, &old_digests).unwrap();
        let before = store.stats();
        // Two more pages (one replacing page 2, one new) fit exactly: 4 pages.
        let (new, new_digests) = pages("i", 2 * P, 2, 9);
        store.put("i", &[(2 * P, 2 * P)], &new, &new_digests).unwrap();
        assert_eq!(store.stats().used_bytes, 4 * (P + PAGE_CHARGE));
        // Now a batch of two runs whose second does not fit: neither is stored.
        let (more, more_digests) = pages("j", 0x100000, 2, 5);
        let err = store.put("j", &[(0x100000, P), (0x200000, P)], &more, &more_digests).unwrap_err();
        assert!(matches!(err, StoreError::Full { needed, capacity, .. } if needed == 2 * (P + PAGE_CHARGE) && capacity == 4 * (P + PAGE_CHARGE)), "{err}");
        assert!(err.to_string().contains("nothing of it was stored"), "{err}");
        assert!(matches!(get(&store, "j", 0x100000, 1), Err(StoreError::Missing { .. })));
        // Replacing existing pages with the same sizes still fits.
        store.put("i", &[(0, P)], &old[..PAGE], &old_digests[..1]).unwrap();
        // What was stored is intact.
        assert_eq!(get(&store, "i", 0, 2).unwrap(), &old[..2 * PAGE]);
        assert_eq!(get(&store, "i", 2 * P, 2).unwrap(), new);
        let after = store.stats();
        assert_eq!((after.pages, after.refusals, after.instances), (4, 1, 1));
        assert_eq!(before.refusals, 0);
    }

    #[test]
    fn drop_frees_the_instance_and_only_it() {
        let store = Store::new(1 << 30, Compression::Zstd);
        for (id, salt) in [("a", 1), ("b", 2)] {
            let (data, digests) = pages(id, 0x4000, 16, salt);
            store.put(id, &[(0x4000, 16 * P)], &data, &digests).unwrap();
        }
        let both = store.stats();
        assert_eq!((both.pages, both.instances), (32, 2));
        assert_eq!(store.drop_instance("a"), (16, 16 * P));
        assert_eq!(store.drop_instance("a"), (0, 0), "a second drop finds nothing");
        let s = store.stats();
        assert_eq!((s.pages, s.instances, s.drops), (16, 1, 2));
        assert_eq!(s.stored_bytes, s.per_instance[0].stored_bytes);
        assert_eq!(s.used_bytes, s.stored_bytes + 16 * PAGE_CHARGE);
        assert!(matches!(get(&store, "a", 0x4000, 1), Err(StoreError::Missing { .. })));
        let (b, _) = pages("b", 0x4000, 16, 2);
        assert_eq!(get(&store, "b", 0x4000, 16).unwrap(), b);
        store.drop_instance("b");
        let empty = store.stats();
        assert_eq!((empty.pages, empty.stored_bytes, empty.used_bytes, empty.instances), (0, 0, 0, 0));
    }

    #[test]
    fn replacing_pages_keeps_the_accounting_exact() {
        let store = Store::new(1 << 30, Compression::Lz4);
        let (a, ad) = pages("i", 0, 4, 1);
        store.put("i", &[(0, 4 * P)], &a, &ad).unwrap();
        let (b, bd) = pages("i", P, 2, 77);
        store.put("i", &[(P, 2 * P)], &b, &bd).unwrap();
        let s = store.stats();
        assert_eq!(s.pages, 4);
        let mut want = a.clone();
        want[PAGE..3 * PAGE].copy_from_slice(&b);
        assert_eq!(get(&store, "i", 0, 4).unwrap(), want);
        store.drop_instance("i");
        assert_eq!(store.stats().stored_bytes, 0);
    }

    #[test]
    fn mismatched_lengths_are_bad_requests() {
        let store = Store::new(1 << 30, Compression::None);
        let (data, digests) = pages("i", 0, 2, 1);
        assert!(matches!(store.put("i", &[(0, 3 * P)], &data, &digests), Err(StoreError::BadRequest(_))));
        assert!(matches!(store.put("i", &[(0, 2 * P)], &data, &digests[..1]), Err(StoreError::BadRequest(_))));
        assert_eq!(store.stats().pages, 0);
    }
}
