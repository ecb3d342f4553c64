//! A resume of a seed of this very host: its pages are read straight from
//! the seed's memory, as the peer server would read them for another host,
//! without the connection, the handshake and the record layer's sealing (and
//! not through the page cache, which holds other hosts' pages).
//!
//! A seed host is told by the address a resume names: this daemon's own
//! listening address. The source holds the seed weakly: a seed dropped or
//! prepared again (which replaces it) stops serving, as it does for a peer.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use mitosis_pager::{FetchError, PageSource};

use crate::seeds::Seed;
use crate::Daemon;

/// Whether `from` (a resume's seed host) is this daemon itself.
pub fn is_own_address(daemon: &Daemon, from: &str) -> bool {
    let listen = daemon.config.listen;
    !listen.ip().is_unspecified() && from.parse::<SocketAddr>().is_ok_and(|a| a == listen)
}

/// Pages of one seed generation of this host: the pager's [`PageSource`].
/// A seed's memory does not change, so an answer is read when it is taken,
/// straight into the pager's buffer.
pub struct OwnSeedSource {
    seed: Weak<Seed>,
    id: String,
    /// Requests not answered yet, oldest first.
    pending: VecDeque<Vec<(u64, u64)>>,
}

impl OwnSeedSource {
    pub fn new(seed: &Arc<Seed>) -> OwnSeedSource {
        OwnSeedSource { seed: Arc::downgrade(seed), id: seed.image.id.clone(), pending: VecDeque::new() }
    }

    fn read(&self, ranges: &[(u64, u64)], out: &mut [u8]) -> Result<(), String> {
        let seed = self.seed.upgrade().ok_or_else(|| format!("seed {:?} was dropped", self.id))?;
        let total: u64 = ranges.iter().map(|r| r.1).sum();
        if total != out.len() as u64 {
            return Err(format!("an answer of {total} bytes was taken into {} bytes", out.len()));
        }
        seed.memory.read(ranges, out).map_err(|e| format!("seed {:?}: {e}", self.id))?;
        seed.pages_served.fetch_add(total / mitosis_sys::PAGE, Ordering::Relaxed);
        seed.bytes_served.fetch_add(total, Ordering::Relaxed);
        Ok(())
    }
}

impl PageSource for OwnSeedSource {
    fn request(&mut self, ranges: &[(u64, u64)]) -> Result<(), String> {
        self.pending.push_back(ranges.to_vec());
        Ok(())
    }

    fn receive(&mut self, out: &mut [u8]) -> Result<(), FetchError> {
        let ranges = self.pending.pop_front().ok_or_else(|| FetchError::Broken("an answer was taken that was never asked for".into()))?;
        // As from a peer: this request is refused, later ones may be answered.
        self.read(&ranges, out).map_err(FetchError::Refused)
    }

    fn duplicate(&self) -> Result<Box<dyn PageSource>, String> {
        Ok(Box::new(OwnSeedSource { seed: self.seed.clone(), id: self.id.clone(), pending: VecDeque::new() }))
    }
}
