//! A worker registration for synchronous programs (the daemon has no async
//! runtime): a thread of its own running a current-thread tokio runtime.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::Cluster;

/// A registration kept alive by its own thread. Dropping it revokes the
/// lease and waits for the thread (at most the request timeout).
pub struct BlockingRegistration {
    lease: i64,
    stop: Option<oneshot::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

impl BlockingRegistration {
    /// The lease the record was first put under.
    pub fn lease_id(&self) -> i64 {
        self.lease
    }

    /// Stops refreshing without revoking, as a crash would: the record
    /// expires after its TTL.
    pub fn abandon(mut self) {
        self.finish(false);
    }

    fn finish(&mut self, revoke: bool) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(revoke);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for BlockingRegistration {
    fn drop(&mut self) {
        self.finish(true);
    }
}

/// Connects to `endpoints` and registers worker `addr` with `ttl`
/// ([`Cluster::register_worker`]) from a thread named `etcd-registrar`;
/// returns once the record is in etcd, or with the reason it could not be
/// put there.
pub fn register_worker_blocking(endpoints: &[String], prefix: &str, addr: &str, ttl: Duration) -> std::io::Result<BlockingRegistration> {
    let (endpoints, prefix, addr) = (endpoints.to_vec(), prefix.to_string(), addr.to_string());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (registered_tx, registered) = mpsc::channel();
    let (stop, stop_rx) = oneshot::channel::<bool>();
    let thread = std::thread::Builder::new().name("etcd-registrar".into()).spawn(move || {
        runtime.block_on(async move {
            let lease = match Cluster::connect(&endpoints, &prefix).await {
                Ok(cluster) => cluster.register_worker(&addr, ttl).await,
                Err(e) => Err(e),
            };
            let lease = match lease {
                Ok(lease) => {
                    let _ = registered_tx.send(Ok(lease.lease_id()));
                    lease
                }
                Err(e) => {
                    let _ = registered_tx.send(Err(e));
                    return;
                }
            };
            // A dropped handle (the sender gone) revokes too.
            if stop_rx.await.unwrap_or(true) {
                lease.revoke().await;
            } else {
                lease.abandon().await;
            }
        });
    })?;
    match registered.recv() {
        Ok(Ok(lease)) => Ok(BlockingRegistration { lease, stop: Some(stop), thread: Some(thread) }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(std::io::Error::other(e))
        }
        Err(_) => {
            let _ = thread.join();
            Err(std::io::Error::other("the etcd registrar thread died"))
        }
    }
}
