//! Worker membership: a record under a lease that a background task keeps
//! alive, and that is revoked when the worker leaves.

use std::time::Duration;

use etcd_client::{LeaseKeepAliveStream, LeaseKeeper, PutOptions};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::error::is_lease_not_found;
use crate::schema::WorkerRecord;
use crate::{Cluster, ClusterError};

/// How a registration ends.
enum Stop {
    /// Revoke the lease: the record (and the worker's seeds) go at once.
    Revoke,
    /// Just stop refreshing, as a crashed worker would: the record expires
    /// after its TTL.
    Abandon,
}

/// A worker's live registration. Dropping it stops the keep-alive and
/// revokes the lease (in the background; [`WorkerLease::revoke`] waits for
/// it).
pub struct WorkerLease {
    addr: String,
    lease: watch::Receiver<i64>,
    stop: Option<oneshot::Sender<Stop>>,
    task: Option<JoinHandle<()>>,
}

impl WorkerLease {
    /// The worker's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The lease the record lives under now (a new one after each
    /// re-registration).
    pub fn lease_id(&self) -> i64 {
        *self.lease.borrow()
    }

    /// Changes to [`WorkerLease::lease_id`]: one per re-registration.
    pub fn lease_changes(&self) -> watch::Receiver<i64> {
        self.lease.clone()
    }

    /// Stops the keep-alive and revokes the lease, and waits until etcd
    /// has answered (or the request timeout has passed).
    pub async fn revoke(mut self) {
        self.finish(Stop::Revoke).await;
    }

    /// Stops the keep-alive without revoking, as if the worker had
    /// crashed: the record and its seeds expire after the TTL.
    pub async fn abandon(mut self) {
        self.finish(Stop::Abandon).await;
    }

    async fn finish(&mut self, how: Stop) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(how);
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for WorkerLease {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(Stop::Revoke);
        }
    }
}

/// A TTL as etcd takes it: whole seconds, rounded up, at least 1.
fn ttl_seconds(ttl: Duration) -> Result<i64, ClusterError> {
    if ttl < Duration::from_secs(1) {
        return Err(ClusterError::InvalidTtl(ttl));
    }
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i64::try_from(secs).map_err(|_| ClusterError::InvalidTtl(ttl))
}

impl Cluster {
    /// Registers worker `addr` under a new lease of `ttl` (whole seconds)
    /// and keeps it alive from a background task (a refresh every ttl/3),
    /// until the returned [`WorkerLease`] is dropped.
    ///
    /// When etcd stays unreachable for longer than the TTL the record
    /// expires there (and the worker's seeds with it); once etcd answers
    /// again the task registers anew, under a new lease.
    pub async fn register_worker(&self, addr: &str, ttl: Duration) -> Result<WorkerLease, ClusterError> {
        let ttl = ttl_seconds(ttl)?;
        let key = self.schema.worker(addr)?;
        let lease = self.grant_and_put(&key, addr, ttl).await?;
        let (lease_tx, lease_rx) = watch::channel(lease);
        let (stop_tx, stop_rx) = oneshot::channel();
        let keeper = Keeper {
            cluster: self.clone(),
            key,
            addr: addr.to_string(),
            ttl,
            lease,
            lease_tx,
            stream: None,
        };
        let task = tokio::spawn(keeper.run(stop_rx));
        Ok(WorkerLease { addr: addr.to_string(), lease: lease_rx, stop: Some(stop_tx), task: Some(task) })
    }

    /// A new lease of `ttl` seconds and the worker record under it.
    async fn grant_and_put(&self, key: &str, addr: &str, ttl: i64) -> Result<i64, ClusterError> {
        let granted = self
            .request("grant lease", |mut c| async move { c.lease_grant(ttl, None).await })
            .await?;
        let lease = granted.id();
        let record = serde_json::to_string(&WorkerRecord { addr: addr.to_string(), lease })
            .expect("a WorkerRecord is plain data and always serializes");
        let put = self
            .request("put worker", |mut c| {
                let (key, record) = (key.to_string(), record.clone());
                async move { c.put(key, record, Some(PutOptions::new().with_lease(lease))).await }
            })
            .await;
        if let Err(e) = put {
            // Not left to expire with a record-less lease's TTL for nothing.
            let _ = self.request("revoke lease", |mut c| async move { c.lease_revoke(lease).await }).await;
            return Err(e);
        }
        Ok(lease)
    }
}

/// What a refresh found.
enum Refresh {
    Alive,
    /// The lease is gone from etcd (expired while etcd was unreachable, or
    /// revoked by someone else): so is the record.
    Expired,
}

/// The background task of one registration.
struct Keeper {
    cluster: Cluster,
    key: String,
    addr: String,
    ttl: i64,
    lease: i64,
    lease_tx: watch::Sender<i64>,
    /// The open keep-alive stream, reused from one refresh to the next.
    stream: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
}

impl Keeper {
    async fn run(mut self, mut stop: oneshot::Receiver<Stop>) {
        let ttl = Duration::from_secs(self.ttl.unsigned_abs());
        let period = ttl / 3;
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; the lease was just granted.
        tick.tick().await;
        let how = loop {
            // A step blocked on an unreachable etcd must not hold up a stop.
            tokio::select! {
                how = &mut stop => break how.unwrap_or(Stop::Revoke),
                () = self.step(&mut tick, period) => {}
            }
        };
        if let Stop::Revoke = how {
            let lease = self.lease;
            if let Err(e) = self.cluster.request("revoke lease", |mut c| async move { c.lease_revoke(lease).await }).await {
                tracing::warn!(addr = %self.addr, lease, error = %e, "cannot revoke the worker's lease; it expires by its TTL");
            }
        }
    }

    /// Waits for the next tick and refreshes the lease, or registers anew
    /// if it expired. A refresh that fails (the member it went to just
    /// died) is tried again at once, on a new stream, a few times within
    /// the period: waiting for the next tick let a 2 s lease expire while
    /// the channel still tried the dead member.
    async fn step(&mut self, tick: &mut tokio::time::Interval, period: Duration) {
        tick.tick().await;
        let until = tokio::time::Instant::now() + period;
        let mut pause = Duration::from_millis(50);
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now()).max(Duration::from_millis(50));
            match self.refresh(left).await {
                Ok(Refresh::Alive) => return,
                Ok(Refresh::Expired) => {
                    self.stream = None;
                    match self.cluster.grant_and_put(&self.key, &self.addr, self.ttl).await {
                        Ok(lease) => {
                            tracing::warn!(addr = %self.addr, old = self.lease, new = lease, "worker lease had expired; registered again");
                            self.lease = lease;
                            self.lease_tx.send_replace(lease);
                        }
                        Err(e) => tracing::warn!(addr = %self.addr, error = %e, "worker lease expired and registering again failed; retrying"),
                    }
                    return;
                }
                Err(e) => {
                    self.stream = None;
                    tracing::warn!(addr = %self.addr, lease = self.lease, error = %e, "cannot refresh the worker's lease; retrying");
                    if tokio::time::Instant::now() + pause >= until {
                        return;
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(250));
                }
            }
        }
    }

    /// One keep-alive round trip, answered within `period` (the next
    /// refresh is due then anyway).
    async fn refresh(&mut self, period: Duration) -> Result<Refresh, etcd_client::Error> {
        let lease = self.lease;
        let answer = tokio::time::timeout(period, async {
            match &mut self.stream {
                Some((keeper, stream)) => {
                    keeper.keep_alive().await?;
                    match stream.message().await? {
                        Some(r) if r.ttl() <= 0 => Ok(Refresh::Expired),
                        Some(_) => Ok(Refresh::Alive),
                        None => Err(etcd_client::Error::LeaseKeepAliveError("keep-alive stream ended".into())),
                    }
                }
                None => {
                    // Opening the stream sends the first keep-alive and
                    // reads its answer.
                    match self.cluster.client.clone().lease_keep_alive(lease).await {
                        Ok(opened) => {
                            self.stream = Some(opened);
                            Ok(Refresh::Alive)
                        }
                        Err(e) if is_lease_not_found(&e) => Ok(Refresh::Expired),
                        Err(e) => Err(e),
                    }
                }
            }
        })
        .await;
        answer.unwrap_or_else(|_| Err(etcd_client::Error::LeaseKeepAliveError(format!("no answer within {period:?}"))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_whole_seconds() {
        assert_eq!(ttl_seconds(Duration::from_secs(3)).unwrap(), 3);
        assert_eq!(ttl_seconds(Duration::from_millis(1500)).unwrap(), 2);
        assert!(ttl_seconds(Duration::from_millis(999)).is_err());
    }
}
