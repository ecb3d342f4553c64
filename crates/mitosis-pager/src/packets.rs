//! Packets (FaaSMem's "puckets"): the phase of its life in which each page
//! of a process was last touched.
//!
//! The daemon cuts phases at the process's own boundaries (the runtime is
//! up, its initialisation is done, each request answered) with a *barrier*
//! ([`crate::offload::Command::Barrier`]). A page is touched in a phase
//! when it faults in during it (the pager serves it), or when it is written
//! during it: a barrier takes the pages written since the last one with
//! `PAGEMAP_SCAN` and write-protects them again in the same step
//! (`UFFD_FEATURE_WP_ASYNC`: the kernel resolves the next write itself,
//! at no cost to the pager). A page that is only read while present is not
//! seen: this kernel has no MGLRU, no idle-page tracking and no soft-dirty,
//! so a packet is a page's last write or fault, not its last access.
//!
//! FaaSMem offloads by packet: the runtime's pages after the first request,
//! and periodically everything not touched in the last two phases.

use std::collections::BTreeMap;

use mitosis_sys::PAGE;

/// Each page's last phase, and the current phase. A page never seen is in
/// phase 0 (the oldest).
#[derive(Debug, Clone, Default)]
pub struct Phases {
    current: u32,
    last: BTreeMap<u64, u32>,
}

impl Phases {
    /// The phase running now.
    pub fn current(&self) -> u32 {
        self.current
    }

    /// Ends the current phase; returns the new one.
    pub fn end_phase(&mut self) -> u32 {
        self.current += 1;
        self.current
    }

    /// The page at `addr` was touched now.
    pub fn touch(&mut self, addr: u64) {
        self.last.insert(addr & !(PAGE - 1), self.current);
    }

    /// Every page of `[start, end)` was touched now.
    pub fn touch_range(&mut self, start: u64, end: u64) {
        for page in (start..end).step_by(mitosis_sys::usize_of(PAGE)) {
            self.last.insert(page, self.current);
        }
    }

    /// The phase the page at `addr` was last touched in (0: never seen).
    pub fn of(&self, addr: u64) -> u32 {
        self.last.get(&(addr & !(PAGE - 1))).copied().unwrap_or(0)
    }

    /// The pages of `[start, end)` are gone (unmapped): forgotten.
    pub fn forget(&mut self, start: u64, end: u64) {
        let gone: Vec<u64> = self.last.range(start..end).map(|(&p, _)| p).collect();
        for p in gone {
            self.last.remove(&p);
        }
    }

    /// `[from, from+len)` moved to `to` (an `mremap`): the pages keep their phases.
    pub fn remap(&mut self, from: u64, to: u64, len: u64) {
        let moved: Vec<(u64, u32)> = self.last.range(from..from + len).map(|(&p, &ph)| (p, ph)).collect();
        for (p, _) in &moved {
            self.last.remove(p);
        }
        for (p, ph) in moved {
            self.last.insert(p - from + to, ph);
        }
    }

    /// The parts of `[start, end)` whose pages' phases satisfy `keep`, as runs.
    pub fn select(&self, start: u64, end: u64, keep: impl Fn(u32) -> bool) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for page in (start..end).step_by(mitosis_sys::usize_of(PAGE)) {
            if !keep(self.of(page)) {
                continue;
            }
            match out.last_mut() {
                Some(last) if last.1 == page => last.1 += PAGE,
                _ => out.push((page, page + PAGE)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_keep_the_phase_they_were_last_touched_in() {
        let mut p = Phases::default();
        p.touch_range(0, 4 * PAGE);
        assert_eq!(p.end_phase(), 1);
        p.touch(PAGE + 7);
        p.end_phase();
        p.touch(3 * PAGE);
        assert_eq!([0, 1, 2, 3].map(|i| p.of(i * PAGE)), [0, 1, 0, 2]);
        assert_eq!(p.of(9 * PAGE), 0, "never seen: the oldest");
        assert_eq!(p.select(0, 4 * PAGE, |ph| ph < 1), [(0, PAGE), (2 * PAGE, 3 * PAGE)]);
        assert_eq!(p.select(0, 4 * PAGE, |ph| ph >= 1), [(PAGE, 2 * PAGE), (3 * PAGE, 4 * PAGE)]);
        p.remap(PAGE, 10 * PAGE, 3 * PAGE);
        assert_eq!((p.of(PAGE), p.of(10 * PAGE), p.of(12 * PAGE)), (0, 1, 2));
        p.forget(10 * PAGE, 11 * PAGE);
        assert_eq!(p.of(10 * PAGE), 0);
    }
}
