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
}

#[derive(Debug, Clone)]
struct Region {
    start: u64,
    end: u64,
    /// Seed address of `start` (differs after an `mremap`).
    seed_start: u64,
    pages: Vec<PageState>,
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
        Regions {
            regions: ranges
                .iter()
                .map(|&(s, e)| Region { start: s, end: e, seed_start: s, pages: vec![PageState::Remote; ((e - s) / PAGE) as usize] })
                .collect(),
        }
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
            });
            page = end;
        }
        self.set(from, from + len, PageState::Zero);
        self.regions.extend(moved);
    }

    /// Runs of remote pages inside `[lo, hi)`: (child address, seed address, length).
    /// A run never crosses a region edge: one `UFFDIO_COPY` must stay inside one mapping.
    pub fn remote_runs(&self, lo: u64, hi: u64) -> Vec<(u64, u64, u64)> {
        self.runs_in(lo, hi, PageState::Remote)
    }

    /// Runs of pages in `state` inside `[lo, hi)`, as [`Regions::remote_runs`].
    pub fn runs_in(&self, lo: u64, hi: u64, state: PageState) -> Vec<(u64, u64, u64)> {
        let mut runs: Vec<(u64, u64, u64)> = Vec::new();
        let mut addr = lo;
        let mut last_region = usize::MAX;
        while addr < hi {
            if let Some(i) = self.find(addr) {
                let r = &self.regions[i];
                let page = ((addr - r.start) / PAGE) as usize;
                if r.pages[page] == state {
                    let seed = r.seed_start + (addr - r.start);
                    match runs.last_mut() {
                        Some(run) if last_region == i && run.0 + run.2 == addr => run.2 += PAGE,
                        _ => runs.push((addr, seed, PAGE)),
                    }
                    last_region = i;
                }
            }
            addr += PAGE;
        }
        runs
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
}
