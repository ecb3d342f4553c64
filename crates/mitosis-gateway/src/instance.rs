//! One running function instance, as the gateway holds it.
//!
//! An instance is one authenticated connection to the worker that runs it
//! (see `mitosis_proto::instance`). A reader thread per instance reads its
//! events: it completes the request in flight when the `Reply` comes, and it
//! notices at once when the instance ends, busy or idle, so that a dead
//! instance is removed before anyone picks it. Requests are written by the
//! caller. Dropping the [`Instance`] (or [`Instance::kill`]) cuts the
//! connection, which makes the worker kill the process and remove its
//! container.

use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mitosis_proto::instance::{read_event, send_call, InstanceCall, InstanceEvent, InstanceSpec, Phase};
use mitosis_proto::ProtoError;
use tokio::sync::oneshot;

use crate::worker::{StartedOn, WorkerAuth, WorkerConn};

/// A handler's answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// False when the handler raised (then `body` is its message).
    pub ok: bool,
    pub body: Vec<u8>,
}

/// Why a request to an instance got no reply.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InstanceError {
    #[error("the instance ended: {reason}{}", tail(.stderr_tail))]
    Ended { reason: String, stderr_tail: String },
    #[error("lost the connection to the instance's worker: {0}")]
    Lost(String),
    #[error("the handler did not answer within {0:?}; the instance was killed")]
    Timeout(Duration),
}

fn tail(stderr: &str) -> String {
    let t = stderr.trim();
    if t.is_empty() {
        String::new()
    } else {
        format!("; its stderr ended with: {t}")
    }
}

/// Why an instance could not be started.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StartError {
    #[error("worker {worker} is unreachable: {message}")]
    Unreachable { worker: String, message: String },
    #[error("worker {worker} refused the instance: {message}")]
    Refused { worker: String, message: String },
    #[error("the instance on {worker} ended before it was ready: {reason}{}", tail(.stderr_tail))]
    Died { worker: String, reason: String, stderr_tail: String },
    #[error("the instance on {worker} was not ready within {within:?}")]
    Slow { worker: String, within: Duration },
}

impl StartError {
    /// True when the worker itself failed (not the function): try another.
    pub fn is_worker_fault(&self) -> bool {
        matches!(self, StartError::Unreachable { .. })
    }
}

/// Time stamps of a start, from the request to the instance's `Ready`.
#[derive(Debug, Clone, Default)]
pub struct StartTimes {
    /// The worker's own time to start the process.
    pub worker_us: u64,
    /// From the start request to `Ready`.
    pub ready_us: u64,
}

type Pending = Arc<Mutex<Option<oneshot::Sender<Result<Reply, InstanceError>>>>>;

/// A running instance (see the module doc).
pub struct Instance {
    pub name: String,
    pub worker: String,
    /// The worker whose seed it was forked from (a fork start): it dies at
    /// its next missing page once that worker is gone.
    pub seed_host: Option<String>,
    pub pid: i32,
    writer: Mutex<mitosis_proto::secure::SecureWriter<std::net::TcpStream>>,
    stream: std::net::TcpStream,
    pending: Pending,
    dead: Arc<AtomicBool>,
}

/// What a start yields besides the instance.
pub struct Started {
    pub instance: Arc<Instance>,
    /// The seed the instance prepared itself as (cold starts with `prepare_as`).
    pub prepared: Option<(String, u64)>,
    pub times: StartTimes,
}

impl Instance {
    /// Starts an instance of `spec` on `worker` and waits until it is ready
    /// (blocking). `on_end` runs on the reader thread when it ends later.
    pub fn start(
        worker: &str,
        auth: &WorkerAuth,
        spec: &InstanceSpec,
        ready_within: Duration,
        on_end: impl FnOnce() + Send + 'static,
    ) -> Result<Started, StartError> {
        let t0 = Instant::now();
        let unreachable = |e: ProtoError| StartError::Unreachable { worker: worker.to_string(), message: e.to_string() };
        let conn = WorkerConn::connect(worker, auth).map_err(unreachable)?;
        let (on, mut conn) = conn.start_instance(spec, ready_within).map_err(|e| match e {
            ProtoError::Remote(r) => StartError::Refused { worker: worker.to_string(), message: r.message },
            e => StartError::Unreachable { worker: worker.to_string(), message: e.to_string() },
        })?;
        let StartedOn { pid, start_us, .. } = on;
        let mut prepared = None;
        loop {
            let left = ready_within.saturating_sub(t0.elapsed()).max(Duration::from_millis(1));
            let _ = conn.stream.set_read_timeout(Some(left));
            match read_event(&mut conn.reader) {
                Ok(InstanceEvent::Phase(Phase::Ready)) => break,
                Ok(InstanceEvent::Phase(Phase::Prepared { seed_id, generation })) => prepared = Some((seed_id, generation)),
                Ok(InstanceEvent::Phase(_)) => {}
                Ok(InstanceEvent::Ended { reason, stderr_tail, .. }) => {
                    return Err(StartError::Died { worker: worker.to_string(), reason, stderr_tail })
                }
                Ok(InstanceEvent::Reply { .. }) => {
                    return Err(StartError::Died {
                        worker: worker.to_string(),
                        reason: "it answered before it was asked".into(),
                        stderr_tail: String::new(),
                    })
                }
                Err(ProtoError::Io(e)) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    let _ = conn.stream.shutdown(Shutdown::Both);
                    return Err(StartError::Slow { worker: worker.to_string(), within: ready_within });
                }
                Err(e) => {
                    return Err(StartError::Died { worker: worker.to_string(), reason: e.to_string(), stderr_tail: String::new() })
                }
            }
        }
        let _ = conn.stream.set_read_timeout(None);
        let times = StartTimes { worker_us: start_us, ready_us: u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX) };
        let WorkerConn { reader, writer, stream } = conn;
        let pending: Pending = Arc::new(Mutex::new(None));
        let dead = Arc::new(AtomicBool::new(false));
        let instance = Arc::new(Instance {
            name: spec.name.clone(),
            worker: worker.to_string(),
            seed_host: match &spec.start {
                mitosis_proto::instance::InstanceStart::Fork { seed_host, .. } => Some(seed_host.clone()),
                mitosis_proto::instance::InstanceStart::Cold { .. } => None,
            },
            pid,
            writer: Mutex::new(writer),
            stream: stream.try_clone().map_err(|e| unreachable(e.into()))?,
            pending: pending.clone(),
            dead: dead.clone(),
        });
        let name = spec.name.clone();
        std::thread::Builder::new()
            .name(format!("inst-{}", spec.name))
            .spawn(move || read_events(reader, pending, dead, on_end, name))
            .map_err(|e| unreachable(e.into()))?;
        Ok(Started { instance, prepared, times })
    }

    /// False once the instance has ended or its connection is lost.
    pub fn is_alive(&self) -> bool {
        !self.dead.load(Ordering::Acquire)
    }

    /// Runs the handler once with `body`; kills the instance if it takes
    /// longer than `timeout`. One request at a time per instance.
    pub async fn invoke(&self, body: Vec<u8>, timeout: Duration) -> Result<Reply, InstanceError> {
        let (tx, rx) = oneshot::channel();
        *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        if !self.is_alive() {
            return Err(InstanceError::Lost("the instance ended while idle".into()));
        }
        // A small blocking write on the connection's socket.
        let sent = tokio::task::block_in_place(|| {
            let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            send_call(&mut *w, &InstanceCall::Invoke { body })
        });
        if let Err(e) = sent {
            self.kill();
            return Err(InstanceError::Lost(e.to_string()));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(InstanceError::Lost("the instance's reader stopped".into())),
            Err(_) => {
                self.kill();
                Err(InstanceError::Timeout(timeout))
            }
        }
    }

    /// Ends the instance: the worker kills it when the connection goes.
    pub fn kill(&self) {
        self.dead.store(true, Ordering::Release);
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

fn read_events(
    mut reader: mitosis_proto::secure::SecureReader<std::io::BufReader<std::net::TcpStream>>,
    pending: Pending,
    dead: Arc<AtomicBool>,
    on_end: impl FnOnce(),
    name: String,
) {
    let take = || pending.lock().unwrap_or_else(|e| e.into_inner()).take();
    let failure = loop {
        match read_event(&mut reader) {
            Ok(InstanceEvent::Reply { ok, body }) => {
                if let Some(tx) = take() {
                    let _ = tx.send(Ok(Reply { ok, body }));
                }
            }
            Ok(InstanceEvent::Phase(_)) => {}
            Ok(InstanceEvent::Ended { reason, stderr_tail, .. }) => break InstanceError::Ended { reason, stderr_tail },
            Err(ProtoError::Closed) => break InstanceError::Lost("the worker closed the connection".into()),
            Err(e) => break InstanceError::Lost(e.to_string()),
        }
    };
    let was_killed = dead.swap(true, Ordering::AcqRel);
    if !was_killed {
        tracing::info!(instance = %name, why = %failure, "instance ended");
    }
    if let Some(tx) = take() {
        let _ = tx.send(Err(failure));
    }
    on_end();
}
