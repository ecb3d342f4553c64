//! Which pages of a child are still to be fetched, already served, or zero.

use mitosis_sys::PAGE;

/// State of one page of a served mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PageState {
    /// Not yet in the child: fetch from the seed.
    Remote = 0,
    /// Copied into the child.
    Served = 1,
    /// Dropped by the child (madvise, munmap): reads as zero from now on.
    Zero = 2,
    /// The child's own content: a zero page the pager gave (the page was
    /// `Zero`, or memory the seed did not have), or a page written before
    /// a packet barrier protected it again. Never dropped as clean.
    Filled = 3,
    /// Offloaded: on the memory node, not in the child.
    Offloaded = 4,
    /// Brought back from the memory node, which still holds its copy.
    Restored = 5,
}

#[derive(Debug, Clone)]
struct Region {
    start: u64,
    end: u64,
    /// Seed address of `start` (differs after an `mremap`).
    seed_start: u64,
    pages: Vec<PageState>,
    /// Each page's key on the memory node (0: none yet), once one of the
    /// region's pages was offloaded; empty before. A key names one page
    /// position for good: it moves with an `mremap`, so that no two pages
    /// share one.
    keys: Vec<u64>,
    /// The child maps this region privately from the host's shared copy
    /// of the seed's pages (offset = seed address): its unwritten pages are
    /// shared with the seed's other children here ([`crate::SharedPages`]).
    from_file: bool,
}

/// The served mappings of one child. Later regions shadow earlier ones where
/// they overlap (an `mremap` onto an old range).
#[derive(Debug, Clone, Default)]
pub struct Regions {
    regions: Vec<Region>,
}

impl Regions {
    /// Regions at their seed addresses, all pages still remote.
    pub fn new(ranges: &[(u64, u64)]) -> Regions {
        let ranges: Vec<(u64, u64, bool)> = ranges.iter().map(|&(s, e)| (s, e, false)).collect();
        Regions::with_sources(&ranges)
    }

    /// Regions at their seed addresses, all pages still remote; those
    /// marked `true` are mapped from the host's shared copy of the seed.
    pub fn with_sources(ranges: &[(u64, u64, bool)]) -> Regions {
        Regions {
            regions: ranges
                .iter()
                .map(|&(s, e, from_file)| Region {
                    start: s,
                    end: e,
                    seed_start: s,
                    pages: vec![PageState::Remote; ((e - s) / PAGE) as usize],
                    keys: Vec::new(),
                    from_file,
                })
                .collect(),
        }
    }

    /// Whether the page at `addr` is in a region mapped from the host's
    /// shared copy of the seed.
    pub fn from_file(&self, addr: u64) -> bool {
        self.find(addr).is_some_and(|i| self.regions[i].from_file)
    }

    fn find(&self, addr: u64) -> Option<usize> {
        self.regions.iter().rposition(|r| r.start <= addr && addr < r.end)
    }

    /// State and seed address of the page at `addr`.
    pub fn lookup(&self, addr: u64) -> Option<(PageState, u64)> {
        let r = &self.regions[self.find(addr)?];
        let i = ((addr - r.start) / PAGE) as usize;
        Some((r.pages[i], r.seed_start + (addr - r.start)))
    }

    /// Sets the state of every known page in `[start, end)`.
    pub fn set(&mut self, start: u64, end: u64, state: PageState) {
        for r in &mut self.regions {
            let (s, e) = (start.max(r.start), end.min(r.end));
            if s < e {
                let (a, b) = (mitosis_sys::usize_of((s - r.start) / PAGE), mitosis_sys::usize_of((e - r.start).div_ceil(PAGE)));
                r.pages[a..b].fill(state);
            }
        }
    }

    /// Sets the pages of `[start, end)` that are in state `from` to `to`.
    pub fn replace(&mut self, start: u64, end: u64, from: PageState, to: PageState) {
        for r in &mut self.regions {
            let (s, e) = (start.max(r.start), end.min(r.end));
            if s < e {
                let (a, b) = (mitosis_sys::usize_of((s - r.start) / PAGE), mitosis_sys::usize_of((e - r.start).div_ceil(PAGE)));
                for p in &mut r.pages[a..b] {
                    if *p == from {
                        *p = to;
                    }
                }
            }
        }
    }

    /// Adds regions for the parts of `[start, end)` that no region covers
    /// (memory the child grew), their pages `Zero`: they read as zero, as
    /// they did uncovered, and can now hold another state (offloaded).
    pub fn cover(&mut self, start: u64, end: u64) {
        let mut addr = start;
        while addr < end {
            if self.find(addr).is_some() {
                addr += PAGE;
                continue;
            }
            let from = addr;
            while addr < end && self.find(addr).is_none() {
                addr += PAGE;
            }
            let pages = mitosis_sys::usize_of((addr - from) / PAGE);
            self.regions.push(Region { start: from, end: addr, seed_start: from, pages: vec![PageState::Zero; pages], keys: Vec::new(), from_file: false });
        }
    }

    /// Records that `[from, from+len)` now lives at `to`.
    pub fn remap(&mut self, from: u64, to: u64, len: u64) {
        let mut moved = Vec::new();
        let mut page = from;
        while page < from + len {
            let Some(i) = self.find(page) else {
                page += PAGE;
                continue;
            };
            let r = &self.regions[i];
            let end = r.end.min(from + len);
            let (a, b) = (((page - r.start) / PAGE) as usize, ((end - r.start) / PAGE) as usize);
            moved.push(Region {
                start: to + (page - from),
                end: to + (end - from),
                seed_start: r.seed_start + (page - r.start),
                pages: r.pages[a..b].to_vec(),
                keys: if r.keys.is_empty() { Vec::new() } else { r.keys[a..b].to_vec() },
                // The mapping moves with its file offsets: still the seed's addresses.
                from_file: r.from_file,
            });
            page = end;
        }
        self.set(from, from + len, PageState::Zero);
        // The keys went with the pages: the old place gets new ones if it
        // is ever offloaded.
        for r in &mut self.regions {
            let (s, e) = (from.max(r.start), (from + len).min(r.end));
            if s < e && !r.keys.is_empty() {
                let (a, b) = (mitosis_sys::usize_of((s - r.start) / PAGE), mitosis_sys::usize_of((e - r.start) / PAGE));
                r.keys[a..b].fill(0);
            }
        }
        self.regions.extend(moved);
    }

    /// Runs of remote pages inside `[lo, hi)`: (child address, seed address, length).
    /// A run never crosses a region edge: one `UFFDIO_COPY` must stay inside one mapping.
    pub fn remote_runs(&self, lo: u64, hi: u64) -> Vec<(u64, u64, u64)> {
        self.runs_in(lo, hi, PageState::Remote)
    }

    /// Runs of pages in `state` inside `[lo, hi)`, as [`Regions::remote_runs`].
    pub fn runs_in(&self, lo: u64, hi: u64, state: PageState) -> Vec<(u64, u64, u64)> {
        self.runs_by(lo, hi, state, |r, _, addr| Some(r.seed_start + (addr - r.start)))
    }

    /// Runs of pages in `state` inside `[lo, hi)` whose second address
    /// (`second` of the region, page index and address; `None` leaves the
    /// page out) goes on with the first: (address, second address, length).
    /// A run never crosses a region edge.
    fn runs_by(&self, lo: u64, hi: u64, state: PageState, second: impl Fn(&Region, usize, u64) -> Option<u64>) -> Vec<(u64, u64, u64)> {
        let mut runs: Vec<(u64, u64, u64)> = Vec::new();
        let mut addr = lo;
        let mut last_region = usize::MAX;
        while addr < hi {
            if let Some(i) = self.find(addr) {
                let r = &self.regions[i];
                let page = mitosis_sys::usize_of((addr - r.start) / PAGE);
                let at = if r.pages[page] == state { second(r, page, addr) } else { None };
                if let Some(at) = at {
                    match runs.last_mut() {
                        Some(run) if last_region == i && run.0 + run.2 == addr && run.1 + run.2 == at => run.2 += PAGE,
                        _ => runs.push((addr, at, PAGE)),
                    }
                    last_region = i;
                }
            }
            addr += PAGE;
        }
        runs
    }

    /// The memory node key of the page at `addr`, given one from `next_key`
    /// (which then advances by a page) if it has none; `None` where no
    /// region is (cover it first).
    pub fn key_of(&mut self, addr: u64, next_key: &mut u64) -> Option<u64> {
        let i = self.find(addr)?;
        let r = &mut self.regions[i];
        if r.keys.is_empty() {
            r.keys = vec![0; r.pages.len()];
        }
        let key = &mut r.keys[mitosis_sys::usize_of((addr - r.start) / PAGE)];
        if *key == 0 {
            *key = *next_key;
            *next_key += PAGE;
        }
        Some(*key)
    }

    /// The state and memory node key of the page at `addr` (key 0: none).
    pub fn key_at(&self, addr: u64) -> Option<(PageState, u64)> {
        let r = &self.regions[self.find(addr)?];
        let i = mitosis_sys::usize_of((addr - r.start) / PAGE);
        Some((r.pages[i], r.keys.get(i).copied().unwrap_or(0)))
    }

    /// Runs of pages in `state` inside `[lo, hi)` whose keys follow each
    /// other: (child address, key, length). Pages without a key are left out.
    /// A run never crosses a region edge, as in [`Regions::remote_runs`].
    pub fn key_runs(&self, lo: u64, hi: u64, state: PageState) -> Vec<(u64, u64, u64)> {
        self.runs_by(lo, hi, state, |r, page, _| r.keys.get(page).copied().filter(|&k| k != 0))
    }

    /// Address ranges of all regions.
    pub fn spans(&self) -> Vec<(u64, u64)> {
        self.regions.iter().map(|r| (r.start, r.end)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = PAGE;

    #[test]
    fn window_runs_skip_served_pages_and_stop_at_region_edges() {
        let mut r = Regions::new(&[(10 * P, 20 * P), (20 * P, 30 * P)]);
        r.set(12 * P, 13 * P, PageState::Served);
        let runs = r.remote_runs(8 * P, 24 * P);
        assert_eq!(runs, vec![(10 * P, 10 * P, 2 * P), (13 * P, 13 * P, 7 * P), (20 * P, 20 * P, 4 * P)]);
    }

    #[test]
    fn dropped_pages_read_zero_and_never_remote_again() {
        let mut r = Regions::new(&[(0, 8 * P)]);
        r.set(0, 8 * P, PageState::Served);
        r.set(2 * P, 4 * P, PageState::Zero);
        assert_eq!(r.lookup(3 * P).unwrap().0, PageState::Zero);
        assert!(r.remote_runs(0, 8 * P).is_empty());
        assert_eq!(r.runs_in(0, 8 * P, PageState::Zero), vec![(2 * P, 2 * P, 2 * P)]);
    }

    #[test]
    fn replace_changes_only_pages_in_the_given_state() {
        let mut r = Regions::new(&[(0, 4 * P)]);
        r.set(0, 4 * P, PageState::Served);
        r.set(P, 2 * P, PageState::Zero);
        r.replace(0, 4 * P, PageState::Served, PageState::Remote);
        assert_eq!(r.remote_runs(0, 4 * P), vec![(0, 0, P), (2 * P, 2 * P, 2 * P)]);
        assert_eq!(r.lookup(P).unwrap().0, PageState::Zero, "a dropped page stays dropped");
    }

    #[test]
    fn covering_adds_only_what_no_region_has() {
        let mut r = Regions::new(&[(10 * P, 20 * P)]);
        r.set(10 * P, 20 * P, PageState::Served);
        r.cover(5 * P, 25 * P);
        assert_eq!(r.lookup(12 * P).unwrap().0, PageState::Served, "a seed page keeps its state");
        assert_eq!(r.lookup(6 * P), Some((PageState::Zero, 6 * P)));
        assert_eq!(r.lookup(24 * P), Some((PageState::Zero, 24 * P)));
        r.set(5 * P, 25 * P, PageState::Offloaded);
        assert_eq!(r.runs_in(0, 30 * P, PageState::Offloaded).len(), 3, "one run per region");
        assert!(r.remote_runs(0, 30 * P).is_empty());
    }

    #[test]
    fn keys_are_given_once_and_move_with_a_remap() {
        let mut r = Regions::new(&[(10 * P, 14 * P)]);
        let mut next = P;
        assert_eq!(r.key_of(11 * P, &mut next), Some(P));
        assert_eq!(r.key_of(12 * P, &mut next), Some(2 * P));
        assert_eq!(r.key_of(11 * P, &mut next), Some(P), "a page keeps its key");
        assert_eq!(r.key_of(40 * P, &mut next), None);
        r.set(10 * P, 14 * P, PageState::Offloaded);
        assert_eq!(r.key_runs(0, 20 * P, PageState::Offloaded), vec![(11 * P, P, 2 * P)]);
        r.remap(10 * P, 30 * P, 4 * P);
        assert_eq!(r.key_runs(30 * P, 34 * P, PageState::Offloaded), vec![(31 * P, P, 2 * P)]);
        // The old place is zero and, written and offloaded again, gets a new key.
        assert_eq!(r.key_of(11 * P, &mut next), Some(3 * P));
    }

    #[test]
    fn remapped_pages_keep_their_seed_address() {
        let mut r = Regions::new(&[(100 * P, 110 * P)]);
        r.set(100 * P, 101 * P, PageState::Served);
        r.remap(100 * P, 500 * P, 4 * P);
        assert_eq!(r.lookup(500 * P), Some((PageState::Served, 100 * P)));
        assert_eq!(r.lookup(502 * P), Some((PageState::Remote, 102 * P)));
        assert_eq!(r.lookup(102 * P).unwrap().0, PageState::Zero);
        assert_eq!(r.remote_runs(500 * P, 504 * P), vec![(501 * P, 101 * P, 3 * P)]);
        // Unknown addresses (memory the child grew) are not regions.
        assert_eq!(r.lookup(900 * P), None);
    }

    #[test]
    fn a_remap_keeps_whether_pages_are_mapped_from_the_shared_copy() {
        let mut r = Regions::with_sources(&[(10 * P, 14 * P, true), (20 * P, 22 * P, false)]);
        assert!(r.from_file(11 * P) && !r.from_file(21 * P) && !r.from_file(15 * P));
        r.remap(10 * P, 40 * P, 2 * P);
        assert!(r.from_file(41 * P));
        assert_eq!(r.lookup(41 * P), Some((PageState::Remote, 11 * P)));
        r.cover(50 * P, 51 * P);
        assert!(!r.from_file(50 * P), "memory the child grew is its own");
    }
}
