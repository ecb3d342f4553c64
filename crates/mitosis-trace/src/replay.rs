//! The open-loop replayer: every request of a [`Schedule`] leaves at its
//! scheduled time, whatever happened to the earlier ones.
//!
//! - One task per request, spawned at its time; no client-side limit on
//!   requests in flight but [`ReplayConfig::max_in_flight`], a safety bound
//!   far above any gateway's capacity (past it a request is recorded as an
//!   error, not sent, so the rest of the schedule still leaves on time).
//!   HTTP/1.1 over a keep-alive pool (hyper-util's client): concurrent
//!   requests use concurrent connections, so the process's descriptor limit
//!   (`ulimit -n`) bounds them too; connection errors are recorded.
//! - Latency runs from the *scheduled* time to the whole response, so a
//!   request that left late because the client was behind still counts its
//!   wait (no coordinated omission). Each request gives up at its scheduled
//!   time plus [`ReplayConfig::timeout`].
//! - Exactly one [`Record`] per scheduled request, in schedule order: also
//!   for non-2xx answers, timeouts, connection errors and requests not sent.
//! - Every [`ReplayConfig::memory_interval`] (1 s) over the replay window,
//!   `/metrics` is read and the sum of the instances' and seeds' memory
//!   recorded ([`MemorySample`]); [`ReplayRun::memory_byte_seconds`] is its
//!   integral.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use crate::metrics::{parse_memory, Memory};
use crate::schedule::{Invocation, Schedule};

/// Requests in flight at most, by default: far above what one gateway
/// serves, low enough to stop a runaway replay from exhausting the machine.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 20_000;

/// The response header that says how the serving instance started.
pub const START_HEADER: &str = "x-mitosis-start";

/// How to replay.
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    /// The gateway's base URL, `http://HOST:PORT` (plain HTTP).
    pub gateway: String,
    /// Name of the run in reports and charts (e.g. the gateway's policy).
    pub label: String,
    /// Per request, from its scheduled time.
    pub timeout: Duration,
    /// The body of every `POST /invoke/{function}` (the handler's argument).
    pub body: Bytes,
    /// A progress bar on stderr (drawn only when stderr is a terminal).
    pub progress: bool,
    pub memory_interval: Duration,
    pub max_in_flight: usize,
}

impl ReplayConfig {
    pub fn new(gateway: impl Into<String>) -> Self {
        ReplayConfig {
            gateway: gateway.into(),
            label: "replay".into(),
            timeout: Duration::from_secs(30),
            body: Bytes::from_static(b"{}"),
            progress: false,
            memory_interval: Duration::from_secs(1),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

/// How the instance that served a request started (header [`START_HEADER`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartKind {
    Cold,
    Fork,
    Warm,
}

impl StartKind {
    fn from_header(v: &[u8]) -> Option<Self> {
        match v {
            b"cold" => Some(StartKind::Cold),
            b"fork" => Some(StartKind::Fork),
            b"warm" => Some(StartKind::Warm),
            _ => None,
        }
    }
}

/// What became of one scheduled request (one JSON line in the records file).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// Scheduled time, ms from the replay's start.
    pub at_ms: f64,
    /// When it actually left, ms from the start (None: not sent).
    pub sent_ms: Option<f64>,
    pub function: String,
    pub trace_function: String,
    /// HTTP status, None when there was no answer.
    pub status: Option<u16>,
    /// From the scheduled time to the whole answer, or to the failure.
    pub latency_ms: f64,
    pub start: Option<StartKind>,
    /// Why it failed: the gateway's `{"error"}`, a timeout, a connection error.
    pub error: Option<String>,
}

impl Record {
    /// A 2xx answer.
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// The gateway's memory at one instant of the replay.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MemorySample {
    /// Seconds from the replay's start.
    pub t_s: f64,
    pub instance_bytes: u64,
    pub seed_bytes: u64,
    /// Instances alive (idle or busy); 0 in records of older builds.
    #[serde(default)]
    pub live_instances: u64,
    /// Each function's instances' and seed's memory, bytes.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub per_function: std::collections::BTreeMap<String, u64>,
}

impl MemorySample {
    pub fn total_bytes(&self) -> u64 {
        self.instance_bytes + self.seed_bytes
    }
}

/// One replay's outcome.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReplayRun {
    pub label: String,
    /// One per scheduled request, in schedule order.
    pub records: Vec<Record>,
    pub memory: Vec<MemorySample>,
    /// `/metrics` reads that failed (missing samples).
    pub memory_failures: usize,
    /// The replay window, seconds.
    pub window_s: f64,
}

impl ReplayRun {
    /// The integral of the summed memory over the samples (trapezoids),
    /// byte-seconds; divide by 2^20 for MiB·s, 2^30 for GiB·s.
    pub fn memory_byte_seconds(&self) -> f64 {
        self.byte_seconds_of(MemorySample::total_bytes)
    }

    /// [`ReplayRun::memory_byte_seconds`] of one `part` of each sample
    /// (its instances', or its seeds').
    pub fn byte_seconds_of(&self, part: impl Fn(&MemorySample) -> u64) -> f64 {
        self.memory.windows(2).map(|w| (w[1].t_s - w[0].t_s) * (part(&w[0]) + part(&w[1])) as f64 / 2.0).sum()
    }

    /// The mean of `part` of the samples over the window (the integral of
    /// [`ReplayRun::byte_seconds_of`] over its length); NaN for an empty window.
    pub fn mean_of(&self, part: impl Fn(&MemorySample) -> u64) -> f64 {
        if self.window_s > 0.0 {
            self.byte_seconds_of(part) / self.window_s
        } else {
            f64::NAN
        }
    }

    pub fn peak_memory_bytes(&self) -> u64 {
        self.memory.iter().map(MemorySample::total_bytes).max().unwrap_or(0)
    }

    /// Writes the records, one JSON object a line.
    pub fn write_records(&self, path: &Path) -> std::io::Result<()> {
        let mut out = String::new();
        for r in &self.records {
            out.push_str(&serde_json::to_string(r).map_err(std::io::Error::other)?);
            out.push('\n');
        }
        std::fs::write(path, out)
    }

    /// Writes the memory timeline as CSV: `t_s,instance_bytes,seed_bytes,total_bytes,live_instances`.
    pub fn write_memory(&self, path: &Path) -> std::io::Result<()> {
        let mut out = String::from("t_s,instance_bytes,seed_bytes,total_bytes,live_instances\n");
        for m in &self.memory {
            out.push_str(&format!("{:.3},{},{},{},{}\n", m.t_s, m.instance_bytes, m.seed_bytes, m.total_bytes(), m.live_instances));
        }
        std::fs::write(path, out)
    }
}

/// A replay that could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("gateway URL {0:?} is not http://HOST:PORT")]
    BadGateway(String),
    #[error("gateway {url} is unreachable")]
    Unreachable {
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("gateway {0} did not answer GET /metrics within the timeout")]
    NoAnswer(String),
    #[error("cannot start the replayer's runtime")]
    Runtime(#[source] std::io::Error),
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// What every request task shares.
struct Shared {
    client: HttpClient,
    base: String,
    body: Bytes,
    timeout: Duration,
    origin: Instant,
    in_flight: AtomicUsize,
    max_in_flight: usize,
    errors: AtomicUsize,
    progress: indicatif::ProgressBar,
}

/// Replays `schedule` against the gateway (see the module docs). Fails only
/// when the gateway's URL is bad or it cannot be reached at all before the
/// start; everything after that is in the records.
pub async fn replay(cfg: &ReplayConfig, schedule: &Schedule) -> Result<ReplayRun, ReplayError> {
    let base = base_url(&cfg.gateway)?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient =
        Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(90)).pool_max_idle_per_host(usize::MAX).build(connector);

    // One look before the start, so that a wrong address fails at once
    // instead of as a schedule full of connection errors.
    let probe = tokio::time::timeout(cfg.timeout, read_memory(&client, &base));
    match probe.await {
        Err(_) => return Err(ReplayError::NoAnswer(base)),
        Ok(Err(MetricsError::Connect(source))) => return Err(ReplayError::Unreachable { url: base, source }),
        Ok(_) => {}
    }

    let progress = progress_bar(cfg.progress, schedule.invocations.len());
    // A short lead, so that the first requests are not late by the setup.
    let origin = Instant::now() + Duration::from_millis(20);
    let shared = Arc::new(Shared {
        client,
        base,
        body: cfg.body.clone(),
        timeout: cfg.timeout,
        origin,
        in_flight: AtomicUsize::new(0),
        max_in_flight: cfg.max_in_flight.max(1),
        errors: AtomicUsize::new(0),
        progress: progress.clone(),
    });
    let sampler = tokio::spawn(sample_memory(shared.clone(), cfg.memory_interval.max(Duration::from_millis(10)), schedule.duration));

    let mut tasks = Vec::with_capacity(schedule.invocations.len());
    for inv in &schedule.invocations {
        tokio::time::sleep_until(origin + inv.at).await;
        tasks.push(tokio::spawn(send(shared.clone(), inv.clone())));
    }
    let mut records = Vec::with_capacity(tasks.len());
    for (task, inv) in tasks.into_iter().zip(&schedule.invocations) {
        records.push(task.await.unwrap_or_else(|e| failed(inv, None, origin.elapsed(), format!("internal error: the request's task ended: {e}"))));
    }
    let (memory, memory_failures) = sampler.await.unwrap_or_default();
    progress.finish_and_clear();
    Ok(ReplayRun { label: cfg.label.clone(), records, memory, memory_failures, window_s: schedule.duration.as_secs_f64() })
}

/// [`replay`] on a runtime of its own, for callers without one (not from
/// inside a tokio runtime).
pub fn replay_blocking(cfg: &ReplayConfig, schedule: &Schedule) -> Result<ReplayRun, ReplayError> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(ReplayError::Runtime)?.block_on(replay(cfg, schedule))
}

/// Fails as [`replay`] would on a gateway URL that is not `http://HOST:PORT`.
pub fn check_gateway(gateway: &str) -> Result<(), ReplayError> {
    base_url(gateway).map(|_| ())
}

/// `http://host:port` without a trailing slash.
fn base_url(gateway: &str) -> Result<String, ReplayError> {
    let bad = || ReplayError::BadGateway(gateway.to_string());
    let uri: Uri = gateway.parse().map_err(|_| bad())?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() || uri.query().is_some() {
        return Err(bad());
    }
    Ok(gateway.trim_end_matches('/').to_string())
}

fn progress_bar(wanted: bool, len: usize) -> indicatif::ProgressBar {
    if !wanted || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::with_draw_target(Some(len as u64), indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} answered  {msg}")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    bar
}

/// Percent-encodes a function name for the path (names are normally safe).
fn path_segment(name: &str) -> String {
    let mut s = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// Milliseconds, to the microsecond (records stay short and readable).
fn ms(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

fn failed(inv: &Invocation, sent: Option<Duration>, latency: Duration, error: String) -> Record {
    Record {
        at_ms: ms(inv.at),
        sent_ms: sent.map(ms),
        function: inv.function.clone(),
        trace_function: inv.trace_function.clone(),
        status: None,
        latency_ms: ms(latency),
        start: None,
        error: Some(error),
    }
}

/// Sends one request and records what became of it.
async fn send(shared: Arc<Shared>, inv: Invocation) -> Record {
    let scheduled = shared.origin + inv.at;
    let record = if shared.in_flight.fetch_add(1, Ordering::Relaxed) >= shared.max_in_flight {
        failed(&inv, None, Duration::ZERO, format!("not sent: {} requests in flight (the replayer's safety bound)", shared.max_in_flight))
    } else {
        let sent = shared.origin.elapsed();
        let outcome = tokio::time::timeout_at(scheduled + shared.timeout, call(&shared, &inv.function)).await;
        let latency = Instant::now().saturating_duration_since(scheduled);
        match outcome {
            Err(_) => failed(&inv, Some(sent), latency, format!("timed out after {:.3} s", shared.timeout.as_secs_f64())),
            Ok(Err(e)) => failed(&inv, Some(sent), latency, e),
            Ok(Ok((status, start, body))) => {
                let error = (!(200..300).contains(&status)).then(|| error_text(status, &body));
                Record {
                    at_ms: ms(inv.at),
                    sent_ms: Some(ms(sent)),
                    function: inv.function,
                    trace_function: inv.trace_function,
                    status: Some(status),
                    latency_ms: ms(latency),
                    start,
                    error,
                }
            }
        }
    };
    shared.in_flight.fetch_sub(1, Ordering::Relaxed);
    let errors = shared.errors.fetch_add(usize::from(record.error.is_some()), Ordering::Relaxed) + usize::from(record.error.is_some());
    shared.progress.inc(1);
    if !shared.progress.is_hidden() {
        shared.progress.set_message(format!("{} in flight, {errors} failed", shared.in_flight.load(Ordering::Relaxed)));
    }
    record
}

/// `POST /invoke/{function}`: status, start header, whole body.
async fn call(shared: &Shared, function: &str) -> Result<(u16, Option<StartKind>, Bytes), String> {
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("{}/invoke/{}", shared.base, path_segment(function)))
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(shared.body.clone()))
        .map_err(|e| format!("bad request: {e}"))?;
    let response = shared.client.request(request).await.map_err(|e| describe(&e))?;
    let status = response.status().as_u16();
    let start = response.headers().get(START_HEADER).and_then(|v| StartKind::from_header(v.as_bytes()));
    let body = response.into_body().collect().await.map_err(|e| format!("reading the answer: {e}"))?.to_bytes();
    Ok((status, start, body))
}

/// The gateway's `{"error": "..."}`, or the start of whatever it sent.
fn error_text(status: u16, body: &[u8]) -> String {
    if let Ok(serde_json::Value::Object(o)) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(serde_json::Value::String(e)) = o.get("error") {
            return format!("HTTP {status}: {e}");
        }
    }
    let text = String::from_utf8_lossy(body);
    let text: String = text.chars().take(200).collect();
    format!("HTTP {status}: {}", text.trim())
}

/// An error with its causes (hyper-util's own message is only "client error (Connect)").
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

enum MetricsError {
    Connect(hyper_util::client::legacy::Error),
    Other,
}

async fn read_memory(client: &HttpClient, base: &str) -> Result<Memory, MetricsError> {
    let request = Request::builder().uri(format!("{base}/metrics")).body(Full::new(Bytes::new())).map_err(|_| MetricsError::Other)?;
    let response = client.request(request).await.map_err(|e| if e.is_connect() { MetricsError::Connect(e) } else { MetricsError::Other })?;
    let ok = response.status().is_success();
    let body = response.into_body().collect().await.map_err(|_| MetricsError::Other)?.to_bytes();
    if !ok {
        return Err(MetricsError::Other);
    }
    Ok(parse_memory(&String::from_utf8_lossy(&body)))
}

/// Samples at 0, interval, 2 interval, ... up to the window's end; each
/// read may take at most one interval (a slow one is a missing sample).
async fn sample_memory(shared: Arc<Shared>, interval: Duration, window: Duration) -> (Vec<MemorySample>, usize) {
    let mut samples = Vec::new();
    let mut failures = 0;
    let mut ticks = tokio::time::interval_at(shared.origin, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let tick = ticks.tick().await;
        let t = tick.saturating_duration_since(shared.origin);
        if t > window {
            break;
        }
        match tokio::time::timeout(interval, read_memory(&shared.client, &shared.base)).await {
            Ok(Ok(m)) => samples.push(MemorySample {
                t_s: t.as_secs_f64(),
                instance_bytes: m.instance_bytes,
                seed_bytes: m.seed_bytes,
                live_instances: m.live_instances,
                per_function: m.per_function,
            }),
            _ => failures += 1,
        }
    }
    (samples, failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_urls() {
        assert_eq!(base_url("http://127.0.0.1:8080/").unwrap(), "http://127.0.0.1:8080");
        for bad in ["127.0.0.1:8080", "https://x:1", "http://", "ftp://x", "http://x:1/?a=b"] {
            assert!(base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn error_texts_and_paths() {
        assert_eq!(error_text(500, br#"{"error":"boom"}"#), "HTTP 500: boom");
        assert_eq!(error_text(502, b"bad gateway\n"), "HTTP 502: bad gateway");
        assert_eq!(path_segment("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn memory_integral() {
        let s = |t_s, b| MemorySample { t_s, instance_bytes: b, seed_bytes: 0, live_instances: 1, per_function: Default::default() };
        let run = ReplayRun { label: "x".into(), records: vec![], memory: vec![s(0.0, 0), s(1.0, 100), s(3.0, 100)], memory_failures: 0, window_s: 3.0 };
        assert_eq!(run.memory_byte_seconds(), 50.0 + 200.0);
        assert_eq!(run.peak_memory_bytes(), 100);
    }
}
