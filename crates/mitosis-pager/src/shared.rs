//! Pages shared with the seed's other children on this host.
//!
//! A child's regions may be private mappings of this host's shared copy of
//! its seed: a sparse shmem file whose offset is the seed address (the
//! daemon's page cache). A page the copy holds is *mapped* into the child
//! (`UFFDIO_CONTINUE`), read-only and shared with every other child that
//! did not write it; the kernel copies it on the child's first write, and
//! the copy keeps the seed's content. A page the copy lacks is fetched as
//! always, put into the copy, then mapped.
//!
//! The rest is as with private copies, and a child never sees a wrong page:
//! - a page the child dropped (`MADV_DONTNEED`, `munmap`) gets a private zero
//!   page on its next touch (a *minor* fault, the copy still holding the
//!   seed's page: the region is registered for minor faults so that this
//!   touch stops here instead of reading the seed's content);
//! - a page the copy gives back (the cache evicts the generation) leaves
//!   every child that did not write it; its next touch faults on a page the
//!   pager had served, which is then fetched again, as the child's own
//!   private copy once the copy takes no more;
//! - a page patched for this child alone (a self-prepared child's answer)
//!   is never taken from, nor put into, the copy.

use std::sync::atomic::Ordering;

use mitosis_sys::uffd::CopyResult;

use crate::{PageState, Pager, Purpose, Run};

/// This host's shared copy of a seed generation's pages, as the pager uses it.
pub trait SharedPages: Send + Sync {
    /// The runs `(seed address, length)` of `[seed, seed+len)` the copy holds.
    fn held(&self, seed: u64, len: u64) -> Vec<(u64, u64)>;
    /// Puts whole pages of the seed at `seed` into the copy; false once the
    /// copy takes no more (the cache let its generation go): the child
    /// then gets a private copy.
    fn put(&self, seed: u64, bytes: &[u8]) -> bool;
}

impl Pager {
    /// Serves the shared copy through this pager: its regions marked
    /// `from_file` must be private mappings of it at offset = seed address,
    /// registered for missing and minor faults.
    pub fn with_shared(mut self, shared: Option<std::sync::Arc<dyn SharedPages>>) -> Pager {
        self.shared = shared;
        self
    }

    /// Whether `[child, child+len)` may be given from the shared copy: in
    /// a region mapped from it, and no patch of this child alone there.
    pub(crate) fn shareable(&self, child: u64, len: u64) -> bool {
        self.shared.is_some()
            && self.regions.from_file(child)
            && !self.patches.iter().any(|p| p.addr < child + len && child < p.addr + p.bytes.len() as u64)
    }

    /// Maps the pages of `runs` (child address, seed address, length, all
    /// remote) that the shared copy holds; returns the runs still to fetch.
    /// Mapped pages count as brought in for `purpose` (fetched, and pushed
    /// or recorded as touched on demand), as fetched ones do. Nothing is
    /// mapped for a `private` request (the child writes there: a shared
    /// page would only be copied by the kernel at its first write, a fault
    /// more per page); its pages come from the source, which reads what the
    /// copy holds.
    pub(crate) fn map_held(&mut self, runs: Vec<Run>, purpose: Purpose, private: bool) -> Result<Vec<Run>, String> {
        let Some(shared) = self.shared.clone() else { return Ok(runs) };
        if private {
            return Ok(runs);
        }
        let mut left = Vec::with_capacity(runs.len());
        let mut mapped_runs = Vec::new();
        // Once memory events were handled (a remap, an unmap), the runs
        // asked about may mean something else: the rest is left to the
        // fetch, which looks again at what is still remote.
        let mut events_handled = false;
        for (child, seed, len) in runs {
            if events_handled || !self.shareable(child, len) {
                left.push((child, seed, len));
                continue;
            }
            let mut at = seed;
            for (held_seed, held_len) in shared.held(seed, len) {
                if held_seed > at {
                    left.push((child + (at - seed), at, held_seed - at));
                }
                let from = child + (held_seed - seed);
                let (mapped, handled) = if events_handled { (0, true) } else { self.map_from_copy(from, held_len)? };
                events_handled |= handled;
                if mapped > 0 {
                    mapped_runs.push((from, held_seed, mapped));
                }
                if mapped < held_len {
                    left.push((from + mapped, held_seed + mapped, held_len - mapped));
                }
                at = held_seed + held_len;
            }
            if at < seed + len {
                left.push((child + (at - seed), at, seed + len - at));
            }
        }
        let pages: u64 = mapped_runs.iter().map(|r| r.2 / mitosis_sys::PAGE).sum();
        self.counters.cache_hits.fetch_add(pages, Ordering::Relaxed);
        self.counters.pages_fetched.fetch_add(pages, Ordering::Relaxed);
        self.counters.bytes_fetched.fetch_add(pages * mitosis_sys::PAGE, Ordering::Relaxed);
        if purpose == Purpose::Push {
            self.counters.pages_pushed.fetch_add(pages, Ordering::Relaxed);
        } else if let Some(r) = &self.recorder {
            r.record(&mapped_runs, false);
        }
        if !events_handled {
            return Ok(left);
        }
        Ok(left.into_iter().flat_map(|(child, _, len)| self.regions.remote_runs(child, child + len)).collect())
    }

    /// Maps `len` bytes of the copy at `child` (pages in state `Remote`) and
    /// marks them served; returns how many bytes went in, and whether the
    /// child's memory events were handled meanwhile. Stops short (the rest
    /// stays remote, to be fetched) where the copy lost a page since it
    /// said it held it, or where the events must be handled first.
    fn map_from_copy(&mut self, child: u64, len: u64) -> Result<(u64, bool), String> {
        self.regions.set(child, child + len, PageState::Served);
        match self.uffd.map_from_file(child, len, self.track_writes) {
            CopyResult::Done | CopyResult::Gone => Ok((len, false)),
            CopyResult::Again { copied } => {
                self.regions.replace(child + copied, child + len, PageState::Served, PageState::Remote);
                self.drain_events()?;
                Ok((copied, true))
            }
            // EFAULT: evicted since; ENOENT: no mapping there now (its event
            // comes next) or one split since: the fetch path takes it from here.
            CopyResult::Failed(libc::EFAULT | libc::ENOENT) => {
                self.regions.replace(child, child + len, PageState::Served, PageState::Remote);
                Ok((0, false))
            }
            CopyResult::Failed(errno) => Err(crate::copy_failed("map from the shared copy", child, errno)),
        }
    }

    /// Puts a fetched chunk for `child` (remote pages of a region mapped
    /// from the copy) into the shared copy and maps it; `None` when the
    /// copy takes no more (the caller copies it in privately).
    pub(crate) fn put_and_map(&mut self, child: u64, chunk: &[u8]) -> Option<CopyResult> {
        let shared = self.shared.as_ref()?;
        let (_, seed) = self.regions.lookup(child)?;
        if !shared.put(seed, chunk) {
            return None;
        }
        match self.uffd.map_from_file(child, chunk.len() as u64, self.track_writes) {
            // Given back since the put (an eviction): a private copy.
            CopyResult::Failed(libc::EFAULT) => None,
            other => Some(other),
        }
    }
}
