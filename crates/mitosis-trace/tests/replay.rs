//! The replayer against a tiny gateway stand-in on 127.0.0.1 (hyper): one
//! record per scheduled request whatever the server does, memory from
//! `/metrics`, and open-loop sending against a server that serves one
//! request at a time.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use mitosis_trace::formats::synthetic::Spec;
use mitosis_trace::schedule::{Schedule, ScheduleOptions};
use mitosis_trace::{replay, ReplayConfig, ReplayError, Report, StartKind};
use tokio::time::Instant;

/// How the stand-in answers `POST /invoke/...`.
#[derive(Clone)]
struct Behaviour {
    delay: Duration,
    status: u16,
    start: &'static str,
    /// One request at a time (the others wait their turn).
    serial: bool,
}

/// What the stand-in saw.
#[derive(Default)]
struct Seen {
    /// When each invoke request arrived, and its function.
    arrivals: Vec<(Instant, String)>,
    /// Invoke requests arrived but not yet answered, at most.
    max_waiting: usize,
    waiting: usize,
}

struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

const METRICS: &str = "# TYPE mitosis_instance_memory_bytes gauge\n\
    mitosis_instance_memory_bytes{function=\"f0\"} 1048576\n\
    mitosis_instance_memory_bytes{function=\"f1\"} 1048576\n\
    mitosis_seed_memory_bytes{function=\"f0\"} 2097152\n";

async fn serve(b: Behaviour) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let turn = Arc::new(tokio::sync::Mutex::new(()));
    let state = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let (b, seen, turn) = (b.clone(), state.clone(), turn.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (b, seen, turn) = (b.clone(), seen.clone(), turn.clone());
                    async move { Ok::<_, Infallible>(answer(req, &b, &seen, &turn).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Server { addr, seen }
}

async fn answer(req: Request<hyper::body::Incoming>, b: &Behaviour, seen: &Mutex<Seen>, turn: &tokio::sync::Mutex<()>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    if path == "/metrics" {
        return Response::new(Full::new(Bytes::from_static(METRICS.as_bytes())));
    }
    let function = path.strip_prefix("/invoke/").unwrap_or("?").to_string();
    {
        let mut s = seen.lock().unwrap();
        s.arrivals.push((Instant::now(), function));
        s.waiting += 1;
        s.max_waiting = s.max_waiting.max(s.waiting);
    }
    let _body = req.into_body().collect().await;
    let _turn = if b.serial { Some(turn.lock().await) } else { None };
    tokio::time::sleep(b.delay).await;
    seen.lock().unwrap().waiting -= 1;
    let body = if b.status == 200 { r#"{"result":"ok"}"# } else { r#"{"error":"boom"}"# };
    Response::builder().status(b.status).header("x-mitosis-start", b.start).body(Full::new(Bytes::from_static(body.as_bytes()))).unwrap()
}

fn schedule(spec: &str, secs: f64) -> Schedule {
    let trace = spec.parse::<Spec>().unwrap().generate(secs).unwrap();
    let s = Schedule::build(&trace, &ScheduleOptions::new(Duration::from_secs_f64(secs))).unwrap();
    assert!(!s.invocations.is_empty());
    s
}

fn config(server: &Server, timeout: Duration) -> ReplayConfig {
    ReplayConfig { timeout, ..ReplayConfig::new(format!("http://{}", server.addr)) }
}

/// The records are the schedule, one for one, in order.
fn assert_one_record_each(run: &mitosis_trace::ReplayRun, s: &Schedule) {
    assert_eq!(run.records.len(), s.invocations.len());
    for (r, i) in run.records.iter().zip(&s.invocations) {
        assert_eq!((r.at_ms, r.function.as_str()), (i.at.as_micros() as f64 / 1000.0, i.function.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_record_per_request_with_starts_and_memory() {
    let server = serve(Behaviour { delay: Duration::from_millis(20), status: 200, start: "fork", serial: false }).await;
    let s = schedule("functions=2,rate=30,seed=1", 1.5);
    let run = replay(&config(&server, Duration::from_secs(10)), &s).await.unwrap();
    assert_one_record_each(&run, &s);
    assert!(run.records.iter().all(|r| r.ok() && r.start == Some(StartKind::Fork) && r.latency_ms > 0.0), "{:?}", run.records);
    assert_eq!(server.seen.lock().unwrap().arrivals.len(), s.invocations.len(), "no request sent twice, none left out");
    // Memory: instances (2 MiB) + seeds (2 MiB) at every sample, the first at 0.
    assert!(!run.memory.is_empty());
    assert_eq!(run.memory[0].t_s, 0.0);
    assert!(run.memory.iter().all(|m| m.total_bytes() == 4 << 20));
    let report = Report::new(&[run]);
    assert_eq!(report.runs[0].starts.fork, s.invocations.len() as u64);
    assert_eq!(report.runs[0].overall.errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_recorded() {
    let server = serve(Behaviour { delay: Duration::from_millis(5), status: 500, start: "cold", serial: false }).await;
    let s = schedule("functions=3,rate=20,seed=2", 1.0);
    let run = replay(&config(&server, Duration::from_secs(10)), &s).await.unwrap();
    assert_one_record_each(&run, &s);
    for r in &run.records {
        assert_eq!((r.status, r.error.as_deref()), (Some(500), Some("HTTP 500: boom")));
    }
    assert_eq!(Report::new(&[run]).runs[0].overall.errors, s.invocations.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_requests_time_out_once_each() {
    let server = serve(Behaviour { delay: Duration::from_secs(60), status: 200, start: "warm", serial: false }).await;
    let s = schedule("functions=2,rate=20,seed=3", 1.0);
    let run = replay(&config(&server, Duration::from_millis(300)), &s).await.unwrap();
    assert_one_record_each(&run, &s);
    for r in &run.records {
        assert_eq!(r.status, None);
        assert!(r.error.as_deref().unwrap().starts_with("timed out after 0.300 s"), "{r:?}");
        assert!(r.latency_ms >= 300.0, "latency runs to the timeout: {r:?}");
    }
}

/// A server that serves one request at a time, 400 ms each, and requests
/// every 125 ms: a closed-loop client would send the 16th at about 6 s; an
/// open-loop one at its scheduled 1.9 s, with several requests waiting at
/// the server at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_leave_at_their_scheduled_times() {
    let server = serve(Behaviour { delay: Duration::from_millis(400), status: 200, start: "warm", serial: true }).await;
    let s = schedule("functions=1,rate=8,cv=0,seed=4", 2.0);
    assert_eq!(s.invocations.len(), 16);
    let run = replay(&config(&server, Duration::from_secs(30)), &s).await.unwrap();
    assert_one_record_each(&run, &s);
    assert!(run.records.iter().all(|r| r.ok()));

    let seen = server.seen.lock().unwrap();
    assert_eq!(seen.arrivals.len(), 16);
    assert!(seen.max_waiting > 4, "requests queued at the server: at most {} at once", seen.max_waiting);
    // Arrival offsets against the schedule's, from the first arrival. The
    // bound is generous (a closed loop is seconds off): correctness, not speed.
    let mut arrivals: Vec<Instant> = seen.arrivals.iter().map(|a| a.0).collect();
    arrivals.sort();
    let first = s.invocations[0].at;
    for (arrived, inv) in arrivals.iter().zip(&s.invocations) {
        let seen_offset = arrived.duration_since(arrivals[0]).as_secs_f64();
        let scheduled = (inv.at - first).as_secs_f64();
        assert!((seen_offset - scheduled).abs() < 0.75, "arrived at +{seen_offset:.3} s, scheduled at +{scheduled:.3} s");
    }
    // Latency counts the queueing at the server: the last waits for the 15 before it.
    let last = run.records.last().unwrap();
    assert!(last.latency_ms > 400.0, "{last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_gateway_fails_before_the_start() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let s = schedule("functions=1,rate=5", 1.0);
    let cfg = ReplayConfig { timeout: Duration::from_secs(5), ..ReplayConfig::new(format!("http://127.0.0.1:{port}")) };
    let e = replay(&cfg, &s).await.unwrap_err();
    assert!(matches!(e, ReplayError::Unreachable { .. }), "{e}");
    assert_eq!(mitosis_trace::Error::from(e).exit_code(), 69);
    let e = replay(&ReplayConfig::new("127.0.0.1:1"), &s).await.unwrap_err();
    assert!(matches!(e, ReplayError::BadGateway(_)), "{e}");
}
