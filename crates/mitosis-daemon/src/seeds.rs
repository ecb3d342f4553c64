//! The seeds prepared on this host.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mitosis_capture::CopiedMemory;
use mitosis_proto::image::SeedImage;
use mitosis_proto::local::{SeedInfo, SeedStats};
use mitosis_sys::mem::ProcMem;
use mitosis_sys::pidfd;

/// Where a seed's memory is.
pub enum SeedMemory {
    /// In the parked copy-on-write snapshot process, read by address.
    Snapshot { pid: i32, pidfd: OwnedFd, mem: ProcMem },
    /// Copied into the daemon at prepare (the snapshot is gone).
    Copied(CopiedMemory),
}

impl SeedMemory {
    /// Reads `ranges` back to back into `out`.
    pub fn read(&self, ranges: &[(u64, u64)], out: &mut [u8]) -> Result<(), String> {
        match self {
            SeedMemory::Snapshot { pid, mem, .. } => mitosis_sys::mem::read_ranges_fully(*pid, Some(mem), ranges, out)
                .map_err(|e| format!("its snapshot cannot be read ({e})")),
            SeedMemory::Copied(c) => c
                .read(ranges, out)
                .map_err(|page| format!("page {page:#x} could not be read from the seed when it was copied (past the end of its file?)")),
        }
    }

    /// The snapshot's pidfd, if there is a snapshot.
    pub fn snapshot(&self) -> Option<&OwnedFd> {
        match self {
            SeedMemory::Snapshot { pidfd, .. } => Some(pidfd),
            SeedMemory::Copied(_) => None,
        }
    }
}

/// A prepared seed: its image and its memory.
pub struct Seed {
    pub image: Arc<SeedImage>,
    pub memory: SeedMemory,
    pub created: Instant,
    /// Lives until dropped, rather than until its source process exits.
    pub pinned: bool,
    /// The pages its first child touched (seed ranges, in order); empty
    /// until a child reports it.
    pub working_set: Mutex<Arc<Vec<(u64, u64)>>>,
    /// Children started from it (images sent), pages and bytes served.
    pub children_served: AtomicU64,
    pub pages_served: AtomicU64,
    pub bytes_served: AtomicU64,
}

impl Seed {
    /// A seed with no children yet.
    pub fn new(image: SeedImage, memory: SeedMemory, pinned: bool) -> Seed {
        Seed {
            image: Arc::new(image),
            memory,
            created: Instant::now(),
            pinned,
            working_set: Mutex::default(),
            children_served: AtomicU64::new(0),
            pages_served: AtomicU64::new(0),
            bytes_served: AtomicU64::new(0),
        }
    }

    /// Keeps `ranges` as the working set unless one was recorded already.
    pub fn record_working_set(&self, ranges: Vec<(u64, u64)>) -> bool {
        let mut ws = self.working_set.lock().unwrap();
        if !ws.is_empty() || ranges.is_empty() {
            return false;
        }
        *ws = Arc::new(ranges);
        true
    }

    pub fn stats(&self) -> SeedStats {
        let ws = self.working_set.lock().unwrap();
        SeedStats {
            id: self.image.id.clone(),
            generation: self.image.generation,
            children: self.children_served.load(Ordering::Relaxed),
            pages_served: self.pages_served.load(Ordering::Relaxed),
            bytes_served: self.bytes_served.load(Ordering::Relaxed),
            working_set_pages: ws.iter().map(|r| r.1 / mitosis_sys::PAGE).sum(),
        }
    }

    pub fn info(&self) -> SeedInfo {
        let i = &self.image;
        SeedInfo {
            id: i.id.clone(),
            generation: i.generation,
            source_pid: i.source_pid,
            snapshot_pid: match &self.memory {
                SeedMemory::Snapshot { pid, .. } => *pid,
                SeedMemory::Copied(_) => 0,
            },
            uid: i.uid,
            mapped_bytes: i.mapped_bytes(),
            rss_bytes: i.rss_bytes,
            vmas: i.vmas.len() as u32,
            age_ms: self.created.elapsed().as_millis() as u64,
            prepare_us: i.prepare_us,
            pinned: self.pinned,
            copied_bytes: match &self.memory {
                SeedMemory::Snapshot { .. } => None,
                SeedMemory::Copied(c) => Some(c.bytes()),
            },
            closed_fds: i.closed_fds.clone(),
            threads: u32::try_from(i.threads.len() + 1).unwrap_or(u32::MAX),
        }
    }
}

impl Drop for Seed {
    fn drop(&mut self) {
        if let Some(snapshot) = self.memory.snapshot() {
            end_snapshot(snapshot);
        }
    }
}

/// Ends a snapshot parked in pause() (SIGKILL) and waits (bounded) until its
/// memory is freed, so that a prepare right after does not compete with that
/// teardown.
pub fn end_snapshot(pidfd: &OwnedFd) {
    let _ = pidfd::send_signal(pidfd, libc::SIGKILL);
    // A pidfd is readable once its process has exited.
    let _ = mitosis_sys::poll::wait_readable(pidfd, std::time::Duration::from_secs(2));
}

/// Seeds by id. Preparing an id again replaces (and frees) the old seed; readers
/// that still hold an `Arc<Seed>` finish their read first.
#[derive(Default)]
pub struct Seeds {
    map: Mutex<HashMap<String, Arc<Seed>>>,
}

impl Seeds {
    pub fn insert(&self, seed: Seed) -> Option<Arc<Seed>> {
        self.map.lock().unwrap().insert(seed.image.id.clone(), Arc::new(seed))
    }
    pub fn get(&self, id: &str) -> Option<Arc<Seed>> {
        self.map.lock().unwrap().get(id).cloned()
    }
    pub fn remove(&self, id: &str) -> Option<Arc<Seed>> {
        self.map.lock().unwrap().remove(id)
    }
    /// Removes seed `id` only if it is still `generation` (not prepared again).
    pub fn remove_generation(&self, id: &str, generation: u64) -> Option<Arc<Seed>> {
        let mut map = self.map.lock().unwrap();
        match map.get(id) {
            Some(s) if s.image.generation == generation => map.remove(id),
            _ => None,
        }
    }
    pub fn list(&self) -> Vec<Arc<Seed>> {
        let mut v: Vec<_> = self.map.lock().unwrap().values().cloned().collect();
        v.sort_by(|a, b| a.image.id.cmp(&b.image.id));
        v
    }
    pub fn clear(&self) {
        self.map.lock().unwrap().clear();
    }
}
