//! `mitosis gateway --etcd` end to end: two gateways share one cluster
//! through a real 3-member etcd.
//!
//! Layout. etcd listens on 127.0.0.1 of the root network namespace, which
//! the test hosts (network namespaces joined only to each other) cannot
//! reach. So the test runs a small TCP relay per host: it listens on the
//! host's own 127.0.0.1 at each member's client port (the socket is made
//! inside the host's namespace) and forwards every connection, from the
//! root namespace, to that member. The etcd URLs are then the same
//! everywhere: the daemons' registrars (`mitosis daemon --etcd ...
//! --advertise <host ip>:7070 --etcd-ttl 2`) on hosts a and b, both
//! gateways (the real `mitosis gateway --etcd` binary inside host a, each on
//! its own port of a's loopback) and the test's own view. Instances run as
//! nobody, so the function directory lives under /var/tmp.
//!
//! Needs root, etcd (`scripts/setup`) and the repo's venv
//! (`scripts/setup-python`); skipped otherwise. The only time bound checked
//! is the correctness one: a worker that is gone leaves the gateways' views
//! within 2 TTLs (plus a margin for the relays and a loaded machine).

#![forbid(unsafe_code)]

mod common;

use std::io::ErrorKind;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{bin, in_netns, KEY};
use mitosis_gateway::client::{Answer, Client, ClientError};
use mitosis_gateway::{FunctionConfig, WorkerStatus};
use mitosis_testkit::{require_root, skip, wait_until, write_key, Daemon, EtcdCluster, Host, ProcessGuard, TestDir, TwoHosts};

const PREFIX: &str = "/platform-test/";
const TTL: Duration = Duration::from_secs(2);
/// The bound on a dead worker's leaving: 2 TTLs, plus a margin.
const GONE_WITHIN: Duration = Duration::from_secs(2 * 2 + 4);
/// Longest wait for anything else (a cold start, a registration showing up); never a measurement.
const WAIT: Duration = Duration::from_secs(60);
/// How long the in-flight requests of the kill scenarios sleep in the handler.
const SLOW_S: u64 = 12;

const FUNCTION: &str = r#"
import time

def handler(body):
    if body.startswith(b"sleep"):
        time.sleep(float(body[5:]))
    return body
"#;

/// Forwards connections made to 127.0.0.1:<port> inside a host to
/// 127.0.0.1:<port> of the root namespace (see the module doc).
struct Relay {
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accepters: Vec<JoinHandle<()>>,
}

impl Relay {
    fn start(host: &Host, ports: &[u16]) -> Relay {
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let mut accepters = Vec::new();
        for &port in ports {
            let listener = in_netns(host, move || TcpListener::bind(("127.0.0.1", port)).expect("binding a relay inside the host"));
            listener.set_nonblocking(true).unwrap();
            let (stop, conns) = (stop.clone(), conns.clone());
            // Spawned from the test's thread: it connects from the root namespace.
            accepters.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((inside, _)) => {
                            if let Ok(outside) = TcpStream::connect(("127.0.0.1", port)) {
                                pipe(inside, outside, &conns);
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(10)),
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            }));
        }
        Relay { stop, conns, accepters }
    }
}

fn pipe(a: TcpStream, b: TcpStream, conns: &Mutex<Vec<TcpStream>>) {
    let _ = a.set_nonblocking(false);
    let _ = a.set_nodelay(true);
    let _ = b.set_nodelay(true);
    let mut all = conns.lock().unwrap();
    all.extend([a.try_clone().unwrap(), b.try_clone().unwrap()]);
    for (mut from, mut to) in [(a.try_clone().unwrap(), b.try_clone().unwrap()), (b, a)] {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        });
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for c in self.conns.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        for a in self.accepters.drain(..) {
            let _ = a.join();
        }
    }
}

/// Two worker hosts registered in etcd, two gateways in host a. Fields drop
/// in order: gateways, daemons (their registrars revoke through the relays),
/// relays, etcd, hosts, directory.
struct Platform {
    gateways: Vec<(ProcessGuard, String)>,
    a: Daemon,
    b: Daemon,
    _relays: Vec<Relay>,
    etcd: EtcdCluster,
    hosts: TwoHosts,
    function_dir: String,
    /// The instances' interpreter (and the mount that keeps its packages in reach).
    _python: mitosis_testkit::python::NobodyPython,
    dir: TestDir,
}

impl Platform {
    fn start(name: &str) -> Option<Platform> {
        if !require_root() {
            return None;
        }
        if !EtcdCluster::available() {
            skip("etcd is not installed (scripts/setup installs etcd-server)");
            return None;
        }
        if !common::nobody_can_run_mitosis() {
            return None;
        }
        let dir = TestDir::new_in(Path::new("/var/tmp"), name);
        let python = match mitosis_testkit::python::python_for_nobody(&common::repo().join(".venv"), dir.path()) {
            Ok(p) => p,
            Err(e) => {
                skip(e);
                return None;
            }
        };
        let fdir = dir.path().join("echo");
        std::fs::create_dir(&fdir).unwrap();
        std::fs::write(fdir.join("function.py"), FUNCTION).unwrap();
        let etcd = EtcdCluster::start(&dir, 3).expect("starting etcd");
        let ports: Vec<u16> = etcd.endpoints().iter().map(|e| e.rsplit(':').next().unwrap().parse().unwrap()).collect();
        let hosts = TwoHosts::new().expect("creating test hosts");
        let relays = vec![Relay::start(&hosts.a, &ports), Relay::start(&hosts.b, &ports)];
        let key = write_key(&dir, "key", KEY);
        let endpoints = etcd.endpoints().join(",");
        let daemon = |host: &Host, name: &str| {
            let advertise = format!("{}:7070", host.ip);
            let ttl = TTL.as_secs().to_string();
            let args = [
                "--instance-user",
                "nobody",
                "--python",
                python.python.to_str().unwrap(),
                "--etcd",
                &endpoints,
                "--etcd-prefix",
                PREFIX,
                "--advertise",
                &advertise,
                "--etcd-ttl",
                &ttl,
            ];
            Daemon::start_with_args(&bin(), host, &dir, name, &key, &args).expect("starting a daemon")
        };
        let (a, b) = (daemon(&hosts.a, "a"), daemon(&hosts.b, "b"));
        let gateways = (1..=2).map(|i| start_gateway(&hosts.a, &dir, &key, &endpoints, i)).collect();
        let function_dir = fdir.to_str().unwrap().to_string();
        let p = Platform { gateways, a, b, _relays: relays, etcd, hosts, function_dir, _python: python, dir };
        for i in 0..2 {
            let up = wait_until(WAIT, || p.call(i, |c| c.get("/healthz")).is_ok());
            assert!(up, "gateway {} did not answer at {}\n{}", i + 1, p.gateways[i].1, p.logs());
        }
        Some(p)
    }

    /// Runs `f` with a client of gateway `i` (0 or 1), inside host a.
    fn call<T: Send + 'static>(&self, i: usize, f: impl FnOnce(&Client) -> T + Send + 'static) -> T {
        let url = self.gateways[i].1.clone();
        in_netns(&self.hosts.a, move || f(&Client::new(&url, WAIT)))
    }

    fn workers_of(&self, i: usize) -> Vec<String> {
        let answer = self.call(i, |c| c.get("/workers")).expect("GET /workers");
        let workers: Vec<WorkerStatus> = serde_json::from_slice(&answer.body).unwrap();
        workers.into_iter().map(|w| w.addr).collect()
    }

    fn function_of(&self, i: usize) -> Option<serde_json::Value> {
        match self.call(i, |c| c.get("/functions/echo")) {
            Ok(a) => Some(serde_json::from_slice(&a.body).unwrap()),
            Err(ClientError::Status { status: 404, .. }) => None,
            Err(e) => panic!("GET /functions/echo on gateway {}: {e}", i + 1),
        }
    }

    fn invoke(&self, i: usize, body: &str) -> Result<Answer, ClientError> {
        let body = body.as_bytes().to_vec();
        self.call(i, move |c| c.invoke("echo", &body))
    }

    /// Invokes through gateway `i` and checks the handler's result.
    fn invoke_ok(&self, i: usize, body: &str) -> Answer {
        let answer = self.invoke(i, body).unwrap_or_else(|e| panic!("invoking through gateway {}: {e}\n{}", i + 1, self.logs()));
        let reply: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(reply["result"].as_str(), Some(body), "{reply}");
        answer
    }

    fn registration(&self) -> FunctionConfig {
        FunctionConfig::new(self.function_dir.clone())
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for name in ["a.log", "b.log", "gateway-1.log", "gateway-2.log"] {
            let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            // The etcd client's and HTTP stack's debug lines say little here.
            let lines: Vec<&str> = text.lines().filter(|l| l.contains("mitosis")).collect();
            out += &format!("--- {name} ---\n{}\n", lines[lines.len().saturating_sub(30)..].join("\n"));
        }
        out
    }

    /// Waits until both gateways' workers are `want` (sorted).
    fn wait_workers(&self, want: &[String], within: Duration, what: &str) {
        let ok = wait_until(within, || (0..2).all(|i| sorted(self.workers_of(i)) == want));
        assert!(ok, "{what}: the gateways' workers are {:?} and {:?}, not {want:?} within {within:?}\n{}", self.workers_of(0), self.workers_of(1), self.logs());
    }

    /// Registers the function through gateway 1 and waits for gateway 2 to have it.
    fn register(&self) {
        let config = self.registration();
        let answer = self.call(0, move |c| c.deploy("echo", &config)).expect("PUT /functions/echo");
        assert_eq!(answer.status, 201, "a new registration");
        assert!(self.function_of(0).is_some(), "gateway 1 shows its own registration when it answers");
        let config = self.registration();
        let again = self.call(0, move |c| c.deploy("echo", &config)).expect("PUT /functions/echo again");
        assert_eq!(again.status, 200, "a replaced registration");
        assert!(wait_until(WAIT, || self.function_of(1).is_some()), "gateway 2 never saw the registration\n{}", self.logs());
    }

    /// Gets idle instances of the function on both workers, through gateway
    /// `i`: rounds of concurrent calls until both workers have served.
    fn instances_on_both(&self, i: usize) {
        let mut seen: Vec<String> = Vec::new();
        for round in 1..=8 {
            let calls: Vec<JoinHandle<Answer>> = (0..round + 1)
                .map(|n| {
                    let (url, host) = (self.gateways[i].1.clone(), self.hosts.a.clone());
                    std::thread::spawn(move || {
                        in_netns(&host, move || Client::new(&url, WAIT).invoke("echo", format!("sleep0.{n}").as_bytes())).expect("a warm-up call")
                    })
                })
                .collect();
            for c in calls {
                seen.extend(c.join().unwrap().worker);
            }
            if [&self.a, &self.b].iter().all(|d| seen.contains(&d.addr())) {
                return;
            }
        }
        panic!("gateway {} used only {seen:?} in 8 rounds\n{}", i + 1, self.logs());
    }

    /// Occupies every idle instance of gateway `i` with a slow request
    /// (LIFO reuse takes each of them), and returns those requests once all are busy.
    fn slow_requests(&self, i: usize) -> Vec<JoinHandle<Result<Answer, ClientError>>> {
        let idle = self.function_of(i).unwrap()["instances"]["idle"].as_u64().unwrap();
        assert!(idle >= 2, "instances on both workers are idle");
        let calls = (0..idle)
            .map(|_| {
                let (url, host) = (self.gateways[i].1.clone(), self.hosts.a.clone());
                std::thread::spawn(move || in_netns(&host, move || Client::new(&url, WAIT).invoke("echo", format!("sleep{SLOW_S}").as_bytes())))
            })
            .collect();
        let busy = wait_until(WAIT, || self.function_of(i).unwrap()["instances"]["busy"].as_u64() == Some(idle));
        assert!(busy, "the slow requests did not all reach an instance: {}", self.function_of(i).unwrap());
        calls
    }

    /// Checks that every slow request got an answer: 200 from worker a,
    /// or an error for those that were on b (at least one).
    fn check_slow_answers(&self, calls: Vec<JoinHandle<Result<Answer, ClientError>>>) {
        let mut errors = 0;
        for c in calls {
            match c.join().unwrap() {
                Ok(a) => assert_eq!(a.worker.as_deref(), Some(self.a.addr().as_str()), "only a's instances can finish"),
                Err(ClientError::Status { status, message }) => {
                    assert!(status >= 500, "an error answer ({status}: {message})");
                    errors += 1;
                }
                Err(e) => panic!("a request in flight got no answer: {e}\n{}", self.logs()),
            }
        }
        assert!(errors >= 1, "the request on b got an error answer\n{}", self.logs());
    }

    /// Calls through both gateways now succeed, on worker a.
    fn later_calls_use_a(&self) {
        for n in 0..3 {
            for i in 0..2 {
                let answer = self.invoke_ok(i, &format!("after-{n}-{i}"));
                assert_eq!(answer.worker.as_deref(), Some(self.a.addr().as_str()));
            }
        }
    }

    /// Whether etcd (read from the root namespace) still holds worker `addr`.
    fn in_etcd(&self, addr: &str) -> bool {
        let endpoints = self.etcd.endpoints();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let cluster = mitosis_cluster::Cluster::connect(&endpoints, PREFIX).await.expect("connecting to etcd");
            cluster.load().await.expect("reading etcd").0.workers.contains_key(addr)
        })
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn start_gateway(host: &Host, dir: &TestDir, key: &Path, endpoints: &str, i: usize) -> (ProcessGuard, String) {
    let listen = format!("127.0.0.1:{}", 8080 + i);
    let log = std::fs::File::create(dir.path().join(format!("gateway-{i}.log"))).unwrap();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &host.ns])
        .arg(bin())
        .args(["gateway", "--listen", &listen, "--etcd", endpoints, "--etcd-prefix", PREFIX, "--log-level", "debug"])
        .arg("--key-file")
        .arg(key)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    (ProcessGuard::spawn(&mut cmd).expect("starting a gateway"), format!("http://{listen}"))
}

/// The pid of daemon `daemon`'s etcd registrar (its child `mitosis etcd-registrar`).
fn registrar_of(daemon: i32) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let ppid: i32 = stat.rsplit(')').next()?.split_whitespace().nth(1)?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        (ppid == daemon && String::from_utf8_lossy(&cmdline).contains("etcd-registrar")).then_some(pid)
    })
}

#[test]
fn gateways_share_functions_and_seeds_and_survive_a_killed_worker() {
    let Some(p) = Platform::start("platform-etcd-kill") else { return };
    let both = sorted(vec![p.a.addr(), p.b.addr()]);
    p.wait_workers(&both, WAIT, "the daemons registered");

    // Registered through gateway 1, invoked through gateway 2 and 1.
    p.register();
    let first = p.invoke_ok(1, "hello");
    assert_eq!(first.start.as_deref(), Some("cold"), "the first instance is a cold start that prepares the seed");
    // Gateway 1 has no seed of its own: it forks from the one gateway 2 published.
    let published = wait_until(WAIT, || p.function_of(0).unwrap()["cluster_seeds"].as_array().is_some_and(|s| !s.is_empty()));
    assert!(published, "gateway 2's seed never reached gateway 1: {}\n{}", p.function_of(0).unwrap(), p.logs());
    let second = p.invoke_ok(0, "world");
    assert_eq!(second.start.as_deref(), Some("fork"), "{}", p.logs());
    assert_eq!(p.function_of(0).unwrap()["seed"]["shared"], true);

    // Requests in flight on both workers; daemon b SIGKILLed (its registrar revokes).
    p.instances_on_both(1);
    let calls = p.slow_requests(1);
    let killed = Instant::now();
    mitosis_sys::process::kill(p.b.pid(), libc::SIGKILL).unwrap();
    let only_a = vec![p.a.addr()];
    p.wait_workers(&only_a, GONE_WITHIN.saturating_sub(killed.elapsed()), "daemon b killed");
    assert!(!p.in_etcd(&p.b.addr()), "b's record left etcd");
    p.check_slow_answers(calls);
    p.later_calls_use_a();
}

#[test]
fn a_worker_whose_registrar_is_gone_expires_and_its_instances_end() {
    let Some(p) = Platform::start("platform-etcd-expiry") else { return };
    let both = sorted(vec![p.a.addr(), p.b.addr()]);
    p.wait_workers(&both, WAIT, "the daemons registered");
    p.register();
    p.instances_on_both(1);
    p.instances_on_both(0);
    let calls = p.slow_requests(1);

    // Daemon b lives on, but nothing refreshes its lease: it expires, and the
    // gateways end its instances (the busy ones with an error answer).
    let registrar = registrar_of(p.b.pid()).expect("daemon b's registrar");
    let killed = Instant::now();
    mitosis_sys::process::kill(registrar, libc::SIGKILL).unwrap();
    let only_a = vec![p.a.addr()];
    p.wait_workers(&only_a, GONE_WITHIN.saturating_sub(killed.elapsed()), "b's lease expired");
    assert!(!p.in_etcd(&p.b.addr()), "b's record left etcd");
    p.check_slow_answers(calls);
    p.later_calls_use_a();
}
