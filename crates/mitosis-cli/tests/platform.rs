//! The serverless platform end to end: the real `mitosis gateway` runs
//! inside host a, over the daemons of hosts a and b as workers; a real
//! HTTP client (inside host a's network namespace) deploys and invokes
//! functions: start policies, keep-alive and LIFO reuse, queueing at the
//! instance cap, failures of handlers, instances and workers, bad input,
//! and a short open-loop replay.
//!
//! Needs root and the repo's venv (`scripts/setup-python`); skipped otherwise.

#![forbid(unsafe_code)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{bin, in_netns, tail, Workers};
use mitosis_gateway::client::{Answer, Client, ClientError};
use mitosis_gateway::{FunctionConfig, Policy};
use mitosis_testkit::{wait_until, Host, ProcessGuard};

/// Longest wait for anything; never a measurement.
const WAIT: Duration = Duration::from_secs(60);
/// The gateway's address inside host a.
const GATEWAY: &str = "127.0.0.1:8080";

const FUNCTIONS: [(&str, &str); 1] = [(
    "tool",
    r#"
import os, time

# The initialisation: what every instance has before its first request.
TABLE = {i: i * i for i in range(1000)}

def handler(body):
    cmd = body.decode()
    if cmd.startswith("sleep:"):
        time.sleep(float(cmd[len("sleep:"):]))
        return "slept"
    if cmd == "raise":
        raise ValueError("the handler was asked to raise")
    if cmd == "die":
        os.kill(os.getpid(), 9)
    print("result: echo", cmd, sum(TABLE.values()))
    return {"echo": cmd, "sum": sum(TABLE.values())}
"#,
)];

/// Workers, and the gateway over them inside host a.
struct Platform {
    gateway: Option<ProcessGuard>,
    log: std::path::PathBuf,
    workers: Workers,
}

impl Platform {
    fn new(name: &str) -> Option<Platform> {
        Platform::with_args(name, &[])
    }

    /// With more `mitosis gateway` arguments.
    fn with_args(name: &str, extra: &[&str]) -> Option<Platform> {
        let workers = Workers::new(name, &FUNCTIONS)?;
        let log = workers.dir.path().join("gateway.log");
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let workers_arg = format!("{},{}", workers.a.addr(), workers.b.addr());
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &workers.hosts.a.ns])
            .arg(bin())
            .args(["gateway", "--listen", GATEWAY, "--workers", &workers_arg, "--key-file"])
            .arg(workers.key_file())
            .args(["--log-level", "debug"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let gateway = ProcessGuard::spawn(&mut cmd).expect("spawning the gateway");
        let p = Platform { gateway: Some(gateway), log, workers };
        let host = p.host();
        let up = in_netns(&host, || wait_until(WAIT, || client().get("/healthz").is_ok()));
        assert!(up, "the gateway did not come up\n{}", p.logs());
        Some(p)
    }

    fn host(&self) -> Host {
        self.workers.hosts.a.clone()
    }

    /// Runs `f` with a client of the gateway, inside host a.
    fn with<T: Send + 'static>(&self, f: impl FnOnce(&Client) -> T + Send + 'static) -> T {
        in_netns(&self.host(), move || f(&client()))
    }

    fn deploy(&self, name: &str, config: FunctionConfig) {
        let c = config.clone();
        let name2 = name.to_string();
        let answer = self.with(move |g| g.deploy(&name2, &c));
        assert!(answer.is_ok(), "deploying {name}: {answer:?}\n{}", self.logs());
    }

    fn config(&self, policy: Policy, keep_alive_s: u64) -> FunctionConfig {
        FunctionConfig { policy: Some(policy), keep_alive_s, ..FunctionConfig::new(self.workers.function("tool")) }
    }

    fn logs(&self) -> String {
        format!("--- gateway ---\n{}\n{}", tail(&std::fs::read_to_string(&self.log).unwrap_or_default(), 40), self.workers.logs())
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        // The gateway first: it ends its instances while the daemons still run.
        if let Some(g) = self.gateway.take() {
            let pid = g.pid();
            let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
            let mut g = g;
            g.wait_timeout(Duration::from_secs(5));
        }
    }
}

fn client() -> Client {
    Client::new(&format!("http://{GATEWAY}"), Duration::from_secs(120))
}

fn invoke(g: &Client, name: &str, body: &str) -> Result<Answer, ClientError> {
    g.invoke(name, body.as_bytes())
}

fn json(a: &Answer) -> serde_json::Value {
    serde_json::from_slice(&a.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&a.body)))
}

fn status(e: Result<Answer, ClientError>) -> (u16, String) {
    match e {
        Err(ClientError::Status { status, message }) => (status, message),
        other => panic!("expected an error status, got {other:?}"),
    }
}

#[test]
fn every_policy_gives_the_same_results() {
    let Some(p) = Platform::new("platform-policies") else { return };
    p.deploy("viafork", p.config(Policy::Fork, 0));
    p.deploy("viacold", p.config(Policy::Cold, 0));
    p.deploy("viawarm", p.config(Policy::Fork, 600));
    let hello = p.workers.suite_function("helloworld");
    p.deploy("hello", FunctionConfig { keep_alive_s: 0, ..FunctionConfig::new(hello) });
    let logs = p.logs();
    let (starts, bodies, hello_outputs) = p.with(|g| {
        let mut starts = Vec::new();
        let mut bodies = Vec::new();
        for f in ["viafork", "viafork", "viafork", "viacold", "viacold", "viawarm", "viawarm"] {
            let a = invoke(g, f, "same input").unwrap_or_else(|e| panic!("{f}: {e}"));
            starts.push((f, a.start.clone().unwrap_or_default()));
            bodies.push(json(&a));
        }
        let mut hello = Vec::new();
        for _ in 0..3 {
            let a = invoke(g, "hello", "").unwrap();
            hello.push((a.start.clone().unwrap_or_default(), json(&a)["output"].clone()));
        }
        (starts, bodies, hello)
    });
    let kinds: Vec<&str> = starts.iter().map(|(_, k)| k.as_str()).collect();
    // fork, no keep-alive: the seed's own cold start, then forks of it;
    // cold: cold starts; fork with keep-alive: a cold start, then warm.
    assert_eq!(kinds, ["cold", "fork", "fork", "cold", "cold", "cold", "warm"], "{logs}");
    for b in &bodies {
        assert_eq!(b, &bodies[0], "every policy and start gives the same answer");
    }
    assert_eq!(bodies[0]["result"]["echo"], "same input");
    assert_eq!(bodies[0]["output"], "result: echo same input 332833500\n");
    // A suite function, unchanged, by cold start and by remote fork.
    let kinds: Vec<&str> = hello_outputs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["cold", "fork", "fork"]);
    for (_, out) in &hello_outputs {
        // The suite's handlers also print their run time.
        let results: Vec<&str> = out.as_str().unwrap_or("").lines().filter(|l| l.starts_with("result:")).collect();
        assert_eq!(results, ["result: hello world"], "{out}");
    }
}

#[test]
fn keep_alive_lifo_and_the_instance_cap() {
    let Some(p) = Platform::new("platform-keepalive") else { return };
    p.deploy("short", FunctionConfig { max_instances: 1, ..p.config(Policy::Fork, 2) });
    let logs = p.logs();
    let (first, second, listed) = p.with(|g| {
        // Two at once with a cap of one: the second waits for the first's instance.
        let t = std::thread::spawn(|| invoke(&client(), "short", "sleep:1").map(|a| a.start));
        std::thread::sleep(Duration::from_millis(200));
        let second = invoke(g, "short", "sleep:0").map(|a| a.start);
        let first = t.join().unwrap();
        let listed = serde_json::from_slice::<serde_json::Value>(&g.get("/functions/short").unwrap().body).unwrap();
        (first, second, listed)
    });
    assert_eq!(first.unwrap().as_deref(), Some("cold"), "{logs}");
    assert_eq!(second.unwrap().as_deref(), Some("warm"), "the queued request got the freed instance");
    assert_eq!(listed["instances"]["live"], 1);
    // Idle past its 2 s keep-alive, the instance ends.
    let gone = p.with(|g| {
        wait_until(WAIT, || {
            let v: serde_json::Value = serde_json::from_slice(&g.get("/functions/short").unwrap().body).unwrap();
            v["instances"]["live"] == 0
        })
    });
    assert!(gone, "the idle instance outlived its keep-alive\n{}", p.logs());
    // LIFO: of two idle instances, the one used last serves next.
    p.deploy("lifo", p.config(Policy::Cold, 600));
    let order = p.with(|g| {
        let slow = std::thread::spawn(|| invoke(&client(), "lifo", "sleep:1.5").unwrap());
        std::thread::sleep(Duration::from_millis(300));
        let quick = invoke(g, "lifo", "sleep:0.2").unwrap();
        let slow = slow.join().unwrap();
        // Both idle now; the slow one was released last.
        let next = invoke(g, "lifo", "pid-check").unwrap();
        (quick, slow, next)
    });
    assert_eq!(order.0.start.as_deref(), Some("cold"));
    assert_eq!(order.1.start.as_deref(), Some("cold"));
    assert_eq!(order.2.start.as_deref(), Some("warm"));
    assert_ne!(order.0.instance, order.1.instance, "two instances");
    assert_eq!(order.2.instance, order.1.instance, "the instance released last serves next (LIFO)");
    let metrics = p.with(|g| String::from_utf8(g.get("/metrics").unwrap().body).unwrap());
    assert!(metrics.contains("mitosis_starts_total{function=\"lifo\",kind=\"warm\"} 1"), "{metrics}");
    assert!(metrics.contains("mitosis_instances{function=\"lifo\",state=\"idle\"} 2"), "{metrics}");
}

/// Over its memory budget (here 1 MiB: any instance is over it), the
/// gateway ends idle instances, the least recently used first, never a busy
/// one, and the next request starts a new instance.
#[test]
fn a_memory_budget_ends_idle_instances_least_recently_used_first() {
    let Some(p) = Platform::with_args("platform-budget", &["--memory-budget", "1"]) else { return };
    p.deploy("f", p.config(Policy::Cold, 600));
    let logs = p.logs();
    let (older, newer, busy) = p.with(|g| {
        // Two instances at once; the quick one goes idle first.
        let slow = std::thread::spawn(|| invoke(&client(), "f", "sleep:1").unwrap());
        std::thread::sleep(Duration::from_millis(300));
        let quick = invoke(g, "f", "sleep:0").unwrap();
        let slow = slow.join().unwrap();
        // Busy through several memory polls, each over the budget.
        let busy = invoke(g, "f", "sleep:4").unwrap();
        (quick, slow, busy)
    });
    assert_eq!((older.start.as_deref(), newer.start.as_deref()), (Some("cold"), Some("cold")), "{logs}");
    assert_ne!(older.instance, newer.instance);
    assert_eq!(json(&busy)["result"], "slept", "a busy instance is never ended for the budget");
    let ended = |log: &str| -> Vec<String> {
        log.lines()
            .filter(|l| l.contains("over the memory budget"))
            .filter_map(|l| l.split("instance=").nth(1)?.split_whitespace().next().map(str::to_string))
            .collect()
    };
    let log = || std::fs::read_to_string(&p.log).unwrap_or_default();
    assert!(wait_until(WAIT, || ended(&log()).len() >= 2), "idle instances outlived the budget\n{}", p.logs());
    let order = ended(&log());
    let (older, newer) = (older.instance.unwrap(), newer.instance.unwrap());
    let at = |name: &str| order.iter().position(|n| *n == name).unwrap_or_else(|| panic!("{name} not ended: {order:?}"));
    assert!(at(&older) < at(&newer), "the least recently used first: {order:?}");
    let (next, metrics) = p.with(|g| (invoke(g, "f", "after").unwrap(), String::from_utf8(g.get("/metrics").unwrap().body).unwrap()));
    assert_eq!(json(&next)["result"]["echo"], "after");
    assert!(metrics.contains("mitosis_budget_evictions_total{function=\"f\"}"), "{metrics}");
}

#[test]
fn handler_and_instance_failures_get_clear_errors() {
    let Some(p) = Platform::new("platform-failures") else { return };
    p.deploy("f", FunctionConfig { timeout_s: 2, ..p.config(Policy::Fork, 600) });
    let logs = p.logs();
    let r = p.with(|g| {
        let ok = invoke(g, "f", "x").map(|a| a.start);
        let raised = status(invoke(g, "f", "raise"));
        let after_raise = invoke(g, "f", "x").map(|a| a.start);
        let died = status(invoke(g, "f", "die"));
        let after_death = invoke(g, "f", "x").map(|a| a.start);
        let slow = status(invoke(g, "f", "sleep:30"));
        let after_timeout = invoke(g, "f", "x").map(|a| a.start);
        (ok, raised, after_raise, died, after_death, slow, after_timeout)
    });
    assert_eq!(r.0.unwrap().as_deref(), Some("cold"), "{logs}");
    assert_eq!(r.1.0, 500);
    assert!(r.1.1.contains("ValueError: the handler was asked to raise"), "{}", r.1.1);
    assert_eq!(r.2.unwrap().as_deref(), Some("warm"), "a handler that raised leaves its instance serving");
    assert_eq!(r.3.0, 500);
    assert!(r.3.1.contains("signal 9"), "{}", r.3.1);
    assert_eq!(r.4.unwrap().as_deref(), Some("fork"), "a dead instance is replaced, here by a fork of the seed");
    assert_eq!(r.5.0, 504);
    assert!(r.5.1.contains("did not answer within"), "{}", r.5.1);
    assert_eq!(r.6.unwrap().as_deref(), Some("fork"), "the timed-out instance was killed and replaced");
}

#[test]
fn bad_requests_get_clear_errors_and_the_gateway_keeps_serving() {
    let Some(p) = Platform::new("platform-bad") else { return };
    p.deploy("f", p.config(Policy::Fork, 600));
    let dir = p.workers.function("tool");
    let r = p.with(move |g| {
        let unknown = status(invoke(g, "nope", "x"));
        let oversized = status(g.invoke("f", &vec![b'x'; 7 << 20]));
        let put = |name: &str, body: &str| match g.put(&format!("/functions/{name}"), body.as_bytes()) {
            Ok(a) => (a.status, String::from_utf8_lossy(&a.body).into_owned()),
            Err(e) => status(Err(e)),
        };
        let garbage = put("f2", "{not json");
        let unknown_field = put("f2", &format!(r#"{{"dir": "{dir}", "memroy_mb": 5}}"#));
        let relative = put("f2", r#"{"dir": "relative/dir"}"#);
        let bad_name = put("bad..name", &format!(r#"{{"dir": "{dir}"}}"#));
        let missing = put("ghost", r#"{"dir": "/nonexistent/function"}"#);
        let ghost = status(invoke(g, "ghost", "x"));
        // Malformed HTTP on a raw connection.
        let mut raw = TcpStream::connect(GATEWAY).unwrap();
        raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        raw.write_all(b"\x16\x03\x01 garbage that is not HTTP\r\n\r\n").unwrap();
        let mut answer = String::new();
        let _ = raw.read_to_string(&mut answer);
        let still = invoke(g, "f", "x").map(|a| a.start);
        let removed = g.remove("f").map(|a| a.status);
        let after_remove = status(invoke(g, "f", "x"));
        (unknown, oversized, garbage, unknown_field, relative, bad_name, missing, ghost, answer, still, removed, after_remove)
    });
    assert_eq!(r.0.0, 404);
    assert!(r.0.1.contains("no function \"nope\""), "{}", r.0.1);
    assert_eq!(r.1.0, 413);
    assert!(r.1.1.contains("exceeds the limit"), "{}", r.1.1);
    for (what, (code, message)) in [("garbage", &r.2), ("unknown field", &r.3), ("relative dir", &r.4), ("bad name", &r.5)] {
        assert_eq!(*code, 400, "{what}: {message}");
        assert!(!message.is_empty(), "{what}: a message says what is wrong");
    }
    assert!(r.3.1.contains("memroy_mb"), "{}", r.3.1);
    assert_eq!(r.6.0, 201, "a directory is checked where it is used, on the workers");
    assert_eq!(r.7.0, 500);
    assert!(r.7.1.contains("/nonexistent/function"), "{}", r.7.1);
    assert!(r.8.starts_with("HTTP/1.1 400"), "{}", r.8);
    assert!(r.9.is_ok(), "the gateway still serves: {:?}\n{}", r.9, p.logs());
    assert_eq!(r.10.unwrap(), 204);
    assert_eq!(r.11.0, 404);
}

#[test]
fn a_killed_worker_gives_error_answers_and_the_other_worker_serves() {
    let Some(mut p) = Platform::new("platform-worker-death") else { return };
    p.deploy("f", p.config(Policy::Fork, 0));
    // The seed's cold start, and forks on both workers.
    let starts = p.with(|g| (0..4).map(|_| invoke(g, "f", "x").map(|a| a.start)).collect::<Vec<_>>());
    assert!(starts.iter().all(|s| s.is_ok()), "{starts:?}\n{}", p.logs());
    // A request in flight on some worker, and worker b's daemon killed under it.
    let inflight = {
        let host = p.host();
        std::thread::spawn(move || in_netns(&host, || (0..4).map(|_| invoke(&client(), "f", "sleep:2").map(|a| a.start)).collect::<Vec<_>>()))
    };
    std::thread::sleep(Duration::from_millis(500));
    p.workers.b.kill_hard();
    let done = inflight.join().unwrap();
    for r in &done {
        if let Err(e) = r {
            assert!(matches!(e, ClientError::Status { status: 500 | 503, .. }), "an error answer, not a hang: {e}");
        }
    }
    // Every later request is served, by worker a (forking or cold-starting).
    let later = p.with(|g| (0..4).map(|_| invoke(g, "f", "x").map(|a| a.start)).collect::<Vec<_>>());
    assert!(later.iter().all(|s| s.is_ok()), "{later:?}\n{}", p.logs());
}

#[test]
fn a_short_synthetic_replay_yields_one_record_per_request() {
    let Some(p) = Platform::new("platform-replay") else { return };
    p.deploy("f", p.config(Policy::Fork, 600));
    let (scheduled, run) = p.with(|_| {
        use mitosis_trace::schedule::{FunctionMap, Schedule, ScheduleOptions};
        let spec: mitosis_trace::formats::synthetic::Spec = "functions=3,rate=15,seed=7".parse().unwrap();
        let trace = spec.generate(4.0).unwrap();
        let opts = ScheduleOptions { map: FunctionMap::parse("f").unwrap(), ..ScheduleOptions::new(Duration::from_secs(4)) };
        let schedule = Schedule::build(&trace, &opts).unwrap();
        let cfg = mitosis_trace::ReplayConfig { body: "replayed".into(), ..mitosis_trace::ReplayConfig::new(format!("http://{GATEWAY}")) };
        let run = mitosis_trace::replay_blocking(&cfg, &schedule).unwrap();
        (schedule.invocations.len(), run)
    });
    assert!(scheduled > 10, "the schedule has {scheduled} requests");
    assert_eq!(run.records.len(), scheduled, "one record per scheduled request");
    let failed: Vec<_> = run.records.iter().filter(|r| !r.ok()).collect();
    assert!(failed.is_empty(), "{failed:?}\n{}", p.logs());
    assert!(run.records.iter().any(|r| r.start == Some(mitosis_trace::StartKind::Cold)));
    assert!(!run.memory.is_empty() && run.memory.iter().any(|m| m.instance_bytes > 0), "memory was sampled: {:?}", run.memory);
}
