//! The seeds prepared on this host.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mitosis_proto::image::SeedImage;
use mitosis_proto::local::SeedInfo;
use mitosis_sys::mem::ProcMem;
use mitosis_sys::pidfd;

/// A prepared seed: its image and the stopped snapshot holding its memory.
pub struct Seed {
    pub image: Arc<SeedImage>,
    pub snapshot_pid: i32,
    pub snapshot: OwnedFd,
    pub mem: ProcMem,
    pub created: Instant,
    /// Lives until dropped, rather than until its source process exits.
    pub pinned: bool,
}

impl Seed {
    pub fn info(&self) -> SeedInfo {
        let i = &self.image;
        SeedInfo {
            id: i.id.clone(),
            generation: i.generation,
            source_pid: i.source_pid,
            snapshot_pid: self.snapshot_pid,
            uid: i.uid,
            mapped_bytes: i.mapped_bytes(),
            rss_bytes: i.rss_bytes,
            vmas: i.vmas.len() as u32,
            age_ms: self.created.elapsed().as_millis() as u64,
            prepare_us: i.prepare_us,
            pinned: self.pinned,
            closed_fds: i.closed_fds.clone(),
        }
    }
}

impl Drop for Seed {
    fn drop(&mut self) {
        // The snapshot is parked in pause(); SIGKILL ends it. Wait (bounded) until
        // its memory is freed, so that a prepare right after a drop does not
        // compete with that teardown.
        let _ = pidfd::send_signal(&self.snapshot, libc::SIGKILL);
        let mut p = libc::pollfd { fd: self.snapshot.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, 2000) };
    }
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
