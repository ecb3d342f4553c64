//! The children running on this host (for `mitosis ps` and `mitosis kill`),
//! and a bounded record of the ones that ended.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mitosis_container::Container;
use mitosis_proto::local::{ChildEnd, ChildStatus};
use mitosis_sys::procfs;

/// Ended children remembered for `mitosis ps --all`.
const ENDED_KEPT: usize = 256;

/// A running child.
pub struct ChildRecord {
    pub pid: i32,
    pub pidfd: Arc<OwnedFd>,
    pub seed_id: String,
    pub seed_host: String,
    pub uid: u32,
    pub container: Option<Arc<Container>>,
    pub started: Instant,
    pub detached: bool,
    /// Its pager's offload handle (children this daemon's pager serves).
    pub offload: Option<crate::offload::OffloadSlot>,
}

impl ChildRecord {
    pub fn status(&self, end: Option<ChildEnd>) -> ChildStatus {
        let memory_bytes = match (&self.container, &end) {
            (_, Some(_)) => 0,
            (Some(c), None) => c.memory_usage().unwrap_or(0),
            (None, None) => resident_bytes(self.pid),
        };
        let (shared_bytes, private_bytes) = match end {
            Some(_) => (0, 0),
            None => status_of(self.pid).map_or((0, 0), |s| (s.rss_shmem_kb * 1024, s.rss_anon_kb * 1024)),
        };
        ChildStatus {
            pid: self.pid,
            seed_id: self.seed_id.clone(),
            seed_host: self.seed_host.clone(),
            container: self.container.as_ref().map(|c| c.name.clone()),
            memory_bytes,
            shared_bytes,
            private_bytes,
            age_ms: self.started.elapsed().as_millis() as u64,
            detached: self.detached,
            uid: self.uid,
            end,
        }
    }

    /// Does `id` (a container name or a pid) name this child?
    pub fn is(&self, id: &str) -> bool {
        self.container.as_ref().is_some_and(|c| c.name == id) || id.parse::<i32>().is_ok_and(|p| p == self.pid)
    }
}

#[derive(Default)]
pub struct Children {
    live: Mutex<Vec<Arc<ChildRecord>>>,
    ended: Mutex<VecDeque<ChildStatus>>,
}

impl Children {
    pub fn add(&self, record: Arc<ChildRecord>) {
        self.live.lock().unwrap().push(record);
    }

    /// Forgets a child that ended; with `end`, remembers how.
    pub fn finish(&self, pid: i32, end: Option<ChildEnd>) -> Option<Arc<ChildRecord>> {
        let record = {
            let mut live = self.live.lock().unwrap();
            let i = live.iter().position(|r| r.pid == pid)?;
            live.swap_remove(i)
        };
        if let Some(offloader) = &record.offload {
            offloader.lock().unwrap_or_else(|e| e.into_inner()).release();
        }
        if let Some(end) = end {
            let mut ended = self.ended.lock().unwrap();
            if ended.len() == ENDED_KEPT {
                ended.pop_front();
            }
            ended.push_back(record.status(Some(end)));
        }
        Some(record)
    }

    pub fn find(&self, id: &str) -> Option<Arc<ChildRecord>> {
        self.live.lock().unwrap().iter().find(|r| r.is(id)).cloned()
    }

    pub fn live(&self) -> Vec<Arc<ChildRecord>> {
        self.live.lock().unwrap().clone()
    }

    /// The children `uid` may see (root: all), oldest first; with `all`,
    /// the ended ones first.
    pub fn list(&self, uid: u32, all: bool) -> Vec<ChildStatus> {
        let visible = |u: u32| uid == 0 || u == uid;
        let mut out: Vec<ChildStatus> =
            if all { self.ended.lock().unwrap().iter().filter(|s| visible(s.uid)).cloned().collect() } else { Vec::new() };
        let mut live: Vec<ChildStatus> = self.live().iter().filter(|r| visible(r.uid)).map(|r| r.status(None)).collect();
        live.sort_by_key(|s| std::cmp::Reverse(s.age_ms));
        out.extend(live);
        out
    }
}

fn status_of(pid: i32) -> Option<procfs::Status> {
    std::fs::read_to_string(format!("/proc/{pid}/status")).ok().map(|s| procfs::parse_status(&s))
}

/// Process `pid`'s resident memory (0 if it is gone).
pub(crate) fn resident_bytes(pid: i32) -> u64 {
    status_of(pid).map(|s| s.rss_kb * 1024).unwrap_or(0)
}

/// The pid of `pid` as the process sees itself (innermost PID namespace).
pub fn own_view_pid(pid: i32) -> i32 {
    status_of(pid).map(|s| s.ns_pid).filter(|&p| p > 0).unwrap_or(pid)
}
