//! Function instances end to end: a tiny gateway in the test talks the
//! instance protocol (`mitosis_proto::instance`) to a daemon on each of two
//! hosts, which run the Python runtime (`mitosis.runtime`) as user nobody
//! in lean containers: cold starts, calls, failures, ends, fork starts from
//! a seed a cold instance prepared, bad requests, listing and dropping.
//!
//! Needs root and the repo's venv (`scripts/setup-python`); skipped
//! otherwise. Function directories and the daemons' sockets live under
//! /var/tmp, not /tmp: a container has a /tmp of its own.

#![forbid(unsafe_code)]

mod common;

use std::io::BufReader;
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use common::{alive, bin, in_netns, Workers, KEY};
use mitosis_proto::auth::{client_handshake, ClusterKey};
use mitosis_proto::frame::{read_msg, write_msg, MAX_CONTROL_FRAME};
use mitosis_proto::instance::{
    read_event, send_call, start_instance, InstanceCall, InstanceEvent, InstanceSpec, InstanceStart, OffloadPolicy, Phase, WorkerUsage,
    MAX_BODY,
};
use mitosis_proto::local::ChildEnd;
use mitosis_proto::peer::{PeerRequest, PeerResponse};
use mitosis_proto::secure::{Protection, SecureReader, SecureWriter};
use mitosis_proto::{ErrorKind, ProtoError};
use mitosis_testkit::{wait_until, Daemon, Host, Memnode};

/// Longest wait for anything (an event, a teardown); never a measurement.
const WAIT: Duration = Duration::from_secs(60);

/// The test's functions: (directory name, function.py).
const FUNCTIONS: [(&str, &str); 5] = [
    (
        "echo",
        r#"
from mitosis_wrapper import *  # as the suite's functions do

@tick_execution_time
def handler(body):
    return body
"#,
    ),
    (
        "raiser",
        r#"
CALLS = []

def handler(body):
    CALLS.append(body)
    if body == b"raise":
        raise ValueError("asked to raise, call %d" % len(CALLS))
    print("served", len(CALLS))
    return {"calls": len(CALLS)}
"#,
    ),
    (
        "killer",
        r#"
import os

def handler():
    os.kill(os.getpid(), 9)
"#,
    ),
    (
        "big",
        r#"
import hashlib

# A big initialisation: 64 MiB built at import, which every fork gets done.
DATA = bytes(range(256)) * (1 << 18)
DIGEST = hashlib.sha256(DATA).hexdigest()

def handler(body):
    return {"n": len(DATA), "digest": hashlib.sha256(DATA).hexdigest(), "init": DIGEST, "body": body.decode()}
"#,
    ),
    ("broken", "raise RuntimeError('broken at import')\n"),
];

/// A gateway's connection to one daemon.
struct Conn {
    reader: SecureReader<BufReader<TcpStream>>,
    writer: SecureWriter<TcpStream>,
}

impl Conn {
    fn open(host: &Host, addr: &str) -> Conn {
        let addr = addr.to_string();
        let stream = in_netns(host, move || TcpStream::connect(&addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}")));
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let key = ClusterKey::from_file_contents(KEY.as_bytes()).unwrap();
        let mut s = stream.try_clone().unwrap();
        let channel = client_handshake(&mut s, &key, Protection::Encrypted).expect("handshake");
        let (reader, writer) = channel.split(BufReader::new(stream.try_clone().unwrap()), stream);
        Conn { reader, writer }
    }

    fn start(&mut self, spec: &InstanceSpec) -> Result<(i32, Option<String>, u64), ProtoError> {
        start_instance(&mut self.reader, &mut self.writer, spec)
    }

    fn event(&mut self) -> InstanceEvent {
        read_event(&mut self.reader).expect("an instance event")
    }

    fn call(&mut self, call: &InstanceCall) {
        send_call(&mut self.writer, call).expect("sending a call");
    }

    /// Invokes the handler and returns its reply (`ok`, body).
    fn invoke(&mut self, body: &[u8]) -> (bool, Vec<u8>) {
        self.call(&InstanceCall::Invoke { body: body.to_vec() });
        match self.event() {
            InstanceEvent::Reply { ok, body } => (ok, body),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    /// Invokes and parses a successful reply's JSON.
    fn invoke_json(&mut self, body: &[u8]) -> serde_json::Value {
        let (ok, reply) = self.invoke(body);
        let text = String::from_utf8(reply).unwrap();
        assert!(ok, "the handler failed: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("reply is not JSON ({e}): {text}"))
    }

    fn request(&mut self, req: &PeerRequest) -> PeerResponse {
        write_msg(&mut self.writer, req).unwrap();
        std::io::Write::flush(&mut self.writer).unwrap();
        read_msg(&mut self.reader, MAX_CONTROL_FRAME).expect("an answer")
    }

    fn phases(&mut self, n: usize) -> Vec<Phase> {
        (0..n)
            .map(|_| match self.event() {
                InstanceEvent::Phase(p) => p,
                other => panic!("expected a phase, got {other:?}"),
            })
            .collect()
    }

    /// The `Ended` event (after any other events, which are returned too).
    fn ended(&mut self) -> (Option<ChildEnd>, String, String, Vec<InstanceEvent>) {
        let mut before = Vec::new();
        loop {
            match self.event() {
                InstanceEvent::Ended { end, reason, stderr_tail } => return (end, reason, stderr_tail, before),
                other => before.push(other),
            }
        }
    }
}

fn spec(name: &str, dir: &str, start: InstanceStart) -> InstanceSpec {
    InstanceSpec { name: name.into(), function: name.into(), dir: dir.into(), start, memory_bytes: Some(512 << 20), offload_idle_after_ms: None, offload_policy: OffloadPolicy::MITOSIS }
}

fn cold(name: &str, dir: &str) -> InstanceSpec {
    spec(name, dir, InstanceStart::Cold { prepare_as: None })
}

fn usage(host: &Host, addr: &str) -> WorkerUsage {
    match Conn::open(host, addr).request(&PeerRequest::ListInstances) {
        PeerResponse::Instances(u) => u,
        other => panic!("expected Instances, got {other:?}"),
    }
}

/// Directories named `container` in every cgroup hierarchy mounted here.
fn cgroup_dirs(container: &str) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mounts: Vec<PathBuf> = info
        .lines()
        .filter(|l| l.split(" - ").nth(1).is_some_and(|t| t.starts_with("cgroup")))
        .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
        .collect();
    let mut found = Vec::new();
    for m in mounts {
        let mut todo = vec![(m, 0)];
        while let Some((d, depth)) = todo.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    if e.file_name() == container {
                        found.push(e.path());
                    } else if depth < 6 {
                        todo.push((e.path(), depth + 1));
                    }
                }
            }
        }
    }
    found
}

#[test]
fn cold_instances_serve_fail_and_end() {
    let Some(w) = Workers::new("instances-cold", &FUNCTIONS) else { return };
    let (ha, addr) = (&w.hosts.a, w.a.addr());

    // Phases in order, then byte-identical echoes (and bytes that are not UTF-8).
    let mut echo = Conn::open(ha, &addr);
    let (pid, container, _) = echo.start(&cold("echo", &w.function("echo"))).unwrap_or_else(|e| panic!("start: {e}\n{}", w.logs()));
    let container = container.expect("instances run in containers");
    assert_eq!(echo.phases(3), vec![Phase::RuntimeReady, Phase::InitDone, Phase::Ready], "{}", w.logs());
    let body = "héllo \"world\"\n\u{1F600} {}[]\\";
    let reply = echo.invoke_json(body.as_bytes());
    assert_eq!(reply["result"].as_str(), Some(body));
    assert!(reply["output"].as_str().unwrap().contains("-execution] duration: "), "{reply}");
    let reply = echo.invoke_json(&[0xff, 0x00, 0xfe]);
    assert_eq!(reply["result"]["base64"].as_str(), Some("/wD+"));
    let big = vec![b'x'; 1 << 20];
    assert_eq!(echo.invoke_json(&big)["result"].as_str().map(str::len), Some(1 << 20));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("65534")), "runs as nobody: {status}");

    // A raise fails that request only; stray prints are the request's output.
    let mut raiser = Conn::open(ha, &addr);
    raiser.start(&cold("raiser", &w.function("raiser"))).unwrap();
    raiser.phases(3);
    assert_eq!(raiser.invoke_json(b"a")["result"]["calls"], 1);
    let (ok, message) = raiser.invoke(b"raise");
    let message = String::from_utf8(message).unwrap();
    assert!(!ok);
    assert!(message.starts_with("ValueError: asked to raise, call 2\n"), "{message}");
    assert!(message.contains("Traceback"), "{message}");
    let reply = raiser.invoke_json(b"b");
    assert_eq!(reply["result"]["calls"], 3);
    assert_eq!(reply["output"], "served 3\n");

    // A suite function, unchanged.
    let mut hello = Conn::open(ha, &addr);
    let hello_dir = w.suite_function("helloworld");
    hello.start(&cold("helloworld", &hello_dir)).unwrap();
    hello.phases(3);
    assert!(hello.invoke_json(b"")["output"].as_str().unwrap().contains("result: hello world"));

    // Listed, each with the memory of its container.
    let listed = usage(ha, &addr);
    for name in ["echo", "raiser", "helloworld"] {
        let i = listed.instances.iter().find(|i| i.name == name).unwrap_or_else(|| panic!("{name} not listed: {listed:?}"));
        assert!(i.memory_bytes > 0, "{name} has no memory: {listed:?}");
    }
    assert_eq!(listed.instances.iter().find(|i| i.name == "echo").unwrap().pid, pid);

    // An instance that kills itself.
    let mut killer = Conn::open(ha, &addr);
    killer.start(&cold("killer", &w.function("killer"))).unwrap();
    killer.phases(3);
    killer.call(&InstanceCall::Invoke { body: Vec::new() });
    let (end, reason, _, before) = killer.ended();
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(end, Some(ChildEnd::Signaled(9)));
    assert!(reason.contains("signal 9"), "{reason}");

    // Stop: killed, and said so.
    raiser.call(&InstanceCall::Stop);
    let (end, reason, _, _) = raiser.ended();
    assert!(matches!(end, Some(ChildEnd::KilledByMitosis { .. })), "{end:?}");
    assert!(reason.contains("stopped"), "{reason}");

    // Closing the connection: the process and its cgroups go.
    assert!(alive(pid));
    assert!(!cgroup_dirs(&container).is_empty(), "no cgroup directory named {container}");
    drop(echo);
    assert!(wait_until(WAIT, || !alive(pid) && cgroup_dirs(&container).is_empty()), "instance {pid} or its cgroups stayed\n{}", w.logs());
    drop(hello);
    assert!(wait_until(WAIT, || usage(ha, &addr).instances.is_empty()), "{:?}", usage(ha, &addr));
}

#[test]
fn forks_of_a_prepared_instance_compute_what_it_computes() {
    let Some(w) = Workers::new("instances-fork", &FUNCTIONS) else { return };
    let (ha, hb, addr_a, addr_b) = (&w.hosts.a, &w.hosts.b, w.a.addr(), w.b.addr());

    let mut seed = Conn::open(ha, &addr_a);
    let s = spec("big-seed", &w.function("big"), InstanceStart::Cold { prepare_as: Some("fn-big".into()) });
    seed.start(&s).unwrap_or_else(|e| panic!("start: {e}\n{}", w.logs()));
    let phases = seed.phases(4);
    assert_eq!(&phases[..2], &[Phase::RuntimeReady, Phase::InitDone], "{}", w.logs());
    assert!(matches!(&phases[2], Phase::Prepared { seed_id, .. } if seed_id == "fn-big"), "{phases:?}\n{}", w.logs());
    assert_eq!(phases[3], Phase::Ready);
    let want = seed.invoke_json(b"same");
    assert_eq!(want["result"]["n"], 64 << 20);

    let fork = |n: usize| -> Conn {
        let mut c = Conn::open(hb, &addr_b);
        let s = spec(&format!("big-{n}"), &w.function("big"), InstanceStart::Fork { seed_host: addr_a.clone(), seed_id: "fn-big".into() });
        c.start(&s).unwrap_or_else(|e| panic!("fork start: {e}\n{}", w.logs()));
        assert_eq!(c.phases(1), vec![Phase::Ready], "{}", w.logs());
        c
    };
    let mut child = fork(1);
    assert_eq!(child.invoke_json(b"same"), want);
    assert_eq!(child.invoke_json(b"again")["result"]["body"], "again");
    let listed = usage(hb, &addr_b);
    assert!(listed.instances.iter().any(|i| i.name == "big-1" && i.memory_bytes > 0), "{listed:?}");
    assert!(usage(ha, &addr_a).seeds.iter().map(|s| s.bytes).sum::<u64>() > 64 << 20, "the seed is a copy held by daemon a");

    // The seed's instance gone (and its container with it): the seed, a
    // copy, still serves new forks.
    drop(seed);
    assert!(wait_until(WAIT, || usage(ha, &addr_a).instances.is_empty()));
    let mut later = fork(2);
    assert_eq!(later.invoke_json(b"same"), want);
    assert_eq!(child.invoke_json(b"same"), want);

    // Dropped: no more forks; a second drop finds nothing.
    let mut admin = Conn::open(ha, &addr_a);
    assert_eq!(admin.request(&PeerRequest::DropSeed { id: "fn-big".into() }), PeerResponse::Dropped);
    match admin.request(&PeerRequest::DropSeed { id: "fn-big".into() }) {
        PeerResponse::Error(e) => assert_eq!(e.kind, ErrorKind::NotFound),
        other => panic!("expected NotFound, got {other:?}"),
    }
    let mut refused = Conn::open(hb, &addr_b);
    let s = spec("big-3", &w.function("big"), InstanceStart::Fork { seed_host: addr_a.clone(), seed_id: "fn-big".into() });
    match refused.start(&s) {
        Err(ProtoError::Remote(e)) => assert_eq!(e.kind, ErrorKind::NotFound, "{e:?}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    drop((child, later));
    assert!(wait_until(WAIT, || usage(hb, &addr_b).instances.is_empty()));
}

/// Fork-started and cold-started instances alike: a cold one has no pager
/// until its first offload adopts its memory (every page it holds is its
/// own, so all of them go to the memory node). They drain semi-warm, here
/// at 50% a second rather than FaaSMem's 1%. The daemons give children
/// private pages (`--private-pages`), so that what an offload gives back
/// shows in the instance's container (pages shared through the page cache
/// are the cache's, never charged to an instance).
#[test]
fn idle_instances_give_their_memory_back_and_answer_the_same() {
    let args = ["--memnode", "{memnode-a}", "--semi-warm-drain", "50", "--private-pages"];
    let Some(w) = Workers::with_args("instances-offload", &FUNCTIONS, &args) else { return };
    let node = Memnode::start(&bin(), &w.hosts.a, &w.dir, "memnode", &w.key_file(), &["--capacity", "1G"]).expect("starting the memory node");
    let (ha, hb, addr_a, addr_b) = (&w.hosts.a, &w.hosts.b, w.a.addr(), w.b.addr());
    let mut seed = Conn::open(ha, &addr_a);
    seed.start(&spec("big-seed", &w.function("big"), InstanceStart::Cold { prepare_as: Some("fn-big".into()) }))
        .unwrap_or_else(|e| panic!("start: {e}\n{}", w.logs()));
    assert_eq!(seed.phases(4).last(), Some(&Phase::Ready), "{}", w.logs());
    let want = seed.invoke_json(b"same");

    let memory_of = |name: &str| usage(hb, &addr_b).instances.iter().find(|i| i.name == name).map_or(0, |i| i.memory_bytes);
    let mut child = Conn::open(hb, &addr_b);
    // Offloaded after a second of idleness (a gateway's `offload_idle_s`).
    let s = InstanceSpec {
        offload_idle_after_ms: Some(1000),
        ..spec("big-1", &w.function("big"), InstanceStart::Fork { seed_host: addr_a.clone(), seed_id: "fn-big".into() })
    };
    child.start(&s).unwrap_or_else(|e| panic!("fork start: {e}\n{}", w.logs()));
    assert_eq!(child.phases(1), vec![Phase::Ready], "{}", w.logs());
    assert_eq!(child.invoke_json(b"same"), want);
    let memory = || memory_of("big-1");
    // Its handler read the 64 MiB its seed built; a second after its answer
    // they are given back (dropped: they are its seed's).
    let busy = memory();
    assert!(busy > 64 << 20, "the instance holds its data: {busy}");
    assert!(wait_until(WAIT, || memory() < busy - (48 << 20)), "the idle instance kept {} of {busy} bytes\n{}", memory(), w.logs());
    assert!(wait_until(WAIT, || w.b.log().contains("idle instance offloaded")), "{}", w.logs());
    // Reused: its memory comes back (prefetched), and it answers the same.
    assert_eq!(child.invoke_json(b"same"), want, "{}", w.logs());
    assert!(w.b.log().contains("instance reused: prefetching its memory"), "{}", w.logs());
    assert_eq!(child.invoke_json(b"again")["result"]["body"], "again");
    drop(child);

    let mut cold_one = Conn::open(hb, &addr_b);
    cold_one
        .start(&InstanceSpec { offload_idle_after_ms: Some(1000), ..cold("big-cold", &w.function("big")) })
        .unwrap_or_else(|e| panic!("cold start: {e}\n{}", w.logs()));
    assert_eq!(cold_one.phases(3).last(), Some(&Phase::Ready), "{}", w.logs());
    assert_eq!(cold_one.invoke_json(b"same"), want, "a cold start answers as the seed did");
    // Packets: its memory was adopted when its runtime came up, phases cut
    // there, at its import's end and at its answer; the runtime's packet
    // (the pages not touched since the import began) is offloaded after
    // the first answer.
    let log = w.b.log();
    assert!(log.contains("adopted a running process's memory"), "{}", w.logs());
    assert!(wait_until(WAIT, || w.b.log().matches("packet barrier").count() >= 3), "{}", w.logs());
    assert!(wait_until(WAIT, || w.b.log().contains("packets offloaded")), "{}", w.logs());
    let memory = || memory_of("big-cold");
    let busy = memory();
    assert!(busy > 64 << 20, "the cold instance holds its data: {busy}");
    assert!(wait_until(WAIT, || memory() < busy - (48 << 20)), "the idle cold instance kept {} of {busy} bytes\n{}", memory(), w.logs());
    // Every page it touches comes back from the node, not one is zero or stale.
    assert_eq!(cold_one.invoke_json(b"same"), want, "{}", w.logs());
    assert_eq!(cold_one.invoke_json(b"again")["result"]["body"], "again");
    // Idle again: offloaded a second time (pages back from the node and not
    // written since are not put again), and reused again.
    assert!(wait_until(WAIT, || memory() < busy - (48 << 20)), "the second offload left {} of {busy} bytes\n{}", memory(), w.logs());
    assert_eq!(cold_one.invoke_json(b"same"), want, "{}", w.logs());
    drop(cold_one);

    // FaaSMem's policy: no seed behind the pages, so the seed's pages the
    // handler read go to the node too (under `mitosis` they are dropped free).
    let mut faasmem = Conn::open(hb, &addr_b);
    let s = InstanceSpec {
        offload_idle_after_ms: Some(1000),
        offload_policy: OffloadPolicy::FAASMEM,
        ..spec("big-faasmem", &w.function("big"), InstanceStart::Fork { seed_host: addr_a.clone(), seed_id: "fn-big".into() })
    };
    faasmem.start(&s).unwrap_or_else(|e| panic!("fork start: {e}\n{}", w.logs()));
    assert_eq!(faasmem.phases(1), vec![Phase::Ready], "{}", w.logs());
    assert_eq!(faasmem.invoke_json(b"same"), want);
    let memory = || memory_of("big-faasmem");
    let busy = memory();
    assert!(wait_until(WAIT, || memory() < busy - (48 << 20)), "the faasmem instance kept {} of {busy} bytes\n{}", memory(), w.logs());
    let put = |log: &str| {
        log.lines()
            .filter(|l| l.contains("idle instance offloaded") && l.contains("faasmem"))
            .filter_map(|l| l.split("pages_put=").nth(1)?.split_whitespace().next()?.parse::<u64>().ok())
            .next()
    };
    let first_put = put(&w.b.log()).unwrap_or_else(|| panic!("no faasmem offload logged\n{}", w.logs()));
    assert!(first_put * 4096 > 20 << 20, "its first drain step put {first_put} pages on the node");
    assert_eq!(faasmem.invoke_json(b"same"), want, "{}", w.logs());
    drop(faasmem);

    // The memory node gone while a cold instance's data is on it: its next
    // request kills it, with the reason, never a zero or stale page.
    let mut lost = Conn::open(hb, &addr_b);
    lost.start(&InstanceSpec { offload_idle_after_ms: Some(1000), ..cold("big-lost", &w.function("big")) })
        .unwrap_or_else(|e| panic!("cold start: {e}\n{}", w.logs()));
    assert_eq!(lost.phases(3).last(), Some(&Phase::Ready), "{}", w.logs());
    assert_eq!(lost.invoke_json(b"same"), want);
    let memory = || memory_of("big-lost");
    let busy = memory();
    assert!(wait_until(WAIT, || memory() < busy - (48 << 20)), "the lost instance kept {} of {busy} bytes\n{}", memory(), w.logs());
    drop(node);
    lost.call(&InstanceCall::Invoke { body: b"same".to_vec() });
    let (end, reason, _, events) = lost.ended();
    assert!(events.iter().all(|e| !matches!(e, InstanceEvent::Reply { .. })), "no answer from lost memory: {events:?}");
    match end {
        Some(ChildEnd::KilledByMitosis { reason: why }) => assert!(why.contains("memory node"), "{why}"),
        other => panic!("expected a kill by mitosis, got {other:?} ({reason})\n{}", w.logs()),
    }
    drop((lost, seed));
    assert!(wait_until(WAIT, || usage(hb, &addr_b).instances.is_empty()));
}

/// The zram swap devices a daemon's log says it set up.
fn zram_devices(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("zram swap on"))
        .filter_map(|l| l.split("device=").nth(1)?.split_whitespace().next().map(|d| format!("/dev/zram{d}")))
        .collect()
}

fn swapped_on() -> String {
    std::fs::read_to_string("/proc/swaps").unwrap_or_default()
}

/// FaaSMem's TMO baseline: the kernel reclaims a `tmo` instance's memory to
/// the worker's zram swap from its start, here 20% every 0.2 s (FaaSMem's
/// 0.05% every 6 s would take the test hours); the swap devices go with
/// their daemons.
#[test]
fn tmo_instances_are_reclaimed_to_swap_and_answer_the_same() {
    let args = ["--zram-swap", "512", "--tmo-interval", "0.2", "--tmo-ratio", "0.2"];
    let Some(w) = Workers::with_args("instances-tmo", &FUNCTIONS, &args) else { return };
    let (hb, addr_b) = (&w.hosts.b, w.b.addr());
    let devices = zram_devices(&w.b.log());
    assert_eq!(devices.len(), 1, "one zram device for worker b\n{}", w.logs());
    assert!(swapped_on().contains(&devices[0]), "{}", swapped_on());
    let memory_of = |name: &str| usage(hb, &addr_b).instances.iter().find(|i| i.name == name).map_or(0, |i| i.memory_bytes);

    // A plain instance first: what the function answers.
    let mut plain = Conn::open(hb, &addr_b);
    plain.start(&cold("big-plain", &w.function("big"))).unwrap_or_else(|e| panic!("cold start: {e}\n{}", w.logs()));
    assert_eq!(plain.phases(3).last(), Some(&Phase::Ready), "{}", w.logs());
    let want = plain.invoke_json(b"same");

    let mut tmo = Conn::open(hb, &addr_b);
    tmo.start(&InstanceSpec { offload_policy: OffloadPolicy::TMO, ..cold("big-tmo", &w.function("big")) })
        .unwrap_or_else(|e| panic!("cold start: {e}\n{}", w.logs()));
    assert_eq!(tmo.phases(3).last(), Some(&Phase::Ready), "{}", w.logs());
    assert_eq!(tmo.invoke_json(b"same"), want);
    // Its 64 MiB go to swap a fifth at a time; the plain one, in a
    // container that may not swap, keeps all of its own.
    assert!(
        wait_until(WAIT, || memory_of("big-tmo") < 32 << 20),
        "the tmo instance kept {} bytes\n{}",
        memory_of("big-tmo"),
        w.logs()
    );
    assert!(w.b.log().contains("tmo: reclaimed"), "{}", w.logs());
    assert!(memory_of("big-plain") > 64 << 20, "the plain instance was reclaimed too: {}", memory_of("big-plain"));
    // Every page swapped out comes back as it was.
    assert_eq!(tmo.invoke_json(b"same"), want, "{}", w.logs());
    assert_eq!(tmo.invoke_json(b"again")["result"]["body"], "again");
    drop((tmo, plain));
    assert!(wait_until(WAIT, || usage(hb, &addr_b).instances.is_empty()));
    let all = [zram_devices(&w.a.log()), devices].concat();
    drop(w);
    for device in all {
        assert!(wait_until(WAIT, || !swapped_on().contains(&device)), "{device} still swapped on after its daemon stopped:\n{}", swapped_on());
    }
}

#[test]
fn bad_requests_get_clear_errors_and_the_daemon_serves_on() {
    let Some(w) = Workers::new("instances-bad", &FUNCTIONS) else { return };
    let (ha, addr) = (&w.hosts.a, w.a.addr());
    let mut c = Conn::open(ha, &addr);
    let refused = |c: &mut Conn, s: InstanceSpec| match c.start(&s) {
        Err(ProtoError::Remote(e)) => e,
        other => panic!("{s:?}: expected an error, got {other:?}"),
    };
    let e = refused(&mut c, cold("rel", "relative/dir"));
    assert_eq!(e.kind, ErrorKind::BadRequest);
    assert!(e.message.contains("absolute"), "{e:?}");
    // Offloading asked of a worker with no memory node.
    let fork = InstanceStart::Fork { seed_host: addr.clone(), seed_id: "any".into() };
    let e = refused(&mut c, InstanceSpec { offload_idle_after_ms: Some(60_000), ..spec("offloaded", &w.function("echo"), fork) });
    assert_eq!(e.kind, ErrorKind::Unsupported, "{e:?}");
    assert!(e.message.contains("no memory node"), "{e:?}");
    let e = refused(&mut c, cold("nodir", "/nonexistent/mitosis-function"));
    assert_eq!(e.kind, ErrorKind::NotFound);
    let e = refused(&mut c, cold("nofile", w.dir.path().to_str().unwrap()));
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(e.message.contains("function.py"), "{e:?}");
    let e = refused(&mut c, spec("noseed", &w.function("echo"), InstanceStart::Fork { seed_host: w.b.addr(), seed_id: "no-such-seed".into() }));
    assert_eq!(e.kind, ErrorKind::NotFound, "{e:?}");
    assert!(e.message.contains("no-such-seed"), "{e:?}");

    // The same connection still starts an instance.
    c.start(&cold("echo", &w.function("echo"))).unwrap_or_else(|e| panic!("start: {e}\n{}", w.logs()));
    c.phases(3);
    assert_eq!(c.invoke_json(b"still")["result"], "still");

    // A function that fails to initialise: its end, with its stderr.
    let mut broken = Conn::open(ha, &addr);
    broken.start(&cold("broken", &w.function("broken"))).unwrap();
    let (end, reason, stderr, before) = broken.ended();
    assert_eq!(before, vec![InstanceEvent::Phase(Phase::RuntimeReady)]);
    assert_eq!(end, Some(ChildEnd::Exited(1)), "{reason}: {stderr}");
    assert!(stderr.contains("RuntimeError: broken at import"), "{stderr}");

    // A body over the limit: the instance ends, saying why.
    c.call(&InstanceCall::Invoke { body: vec![0; MAX_BODY as usize + 1] });
    let (end, reason, _, _) = c.ended();
    assert!(matches!(end, Some(ChildEnd::KilledByMitosis { .. })), "{end:?}");
    assert!(reason.contains("exceeds the limit"), "{reason}");
    assert!(wait_until(WAIT, || usage(ha, &addr).instances.is_empty()));
}

/// The seed's recorded working set, in pages, as `mitosis stats` on `daemon` shows it.
fn working_set_pages(daemon: &Daemon, id: &str) -> u64 {
    let out = std::process::Command::new(bin())
        .args(["stats", "--json", "--socket"])
        .arg(daemon.socket())
        .output()
        .expect("running mitosis stats");
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let seeds = stats["seeds"].as_array().cloned().unwrap_or_default();
    seeds.iter().find(|s| s["id"] == id).and_then(|s| s["working_set_pages"].as_u64()).unwrap_or(0)
}

#[test]
fn a_fork_reports_its_working_set_at_its_first_answer_and_forks_on_the_seed_host_read_it_in_place() {
    let Some(w) = Workers::new("instances-working-set", &FUNCTIONS) else { return };
    let (ha, hb, addr_a, addr_b) = (&w.hosts.a, &w.hosts.b, w.a.addr(), w.b.addr());
    let mut seed = Conn::open(ha, &addr_a);
    let s = spec("echo-seed", &w.function("echo"), InstanceStart::Cold { prepare_as: Some("fn-echo".into()) });
    seed.start(&s).unwrap_or_else(|e| panic!("start: {e}\n{}", w.logs()));
    assert_eq!(seed.phases(4)[3], Phase::Ready, "{}", w.logs());
    assert_eq!(working_set_pages(&w.a, "fn-echo"), 0, "no child yet");

    let fork = |host: &Host, addr: &str, n: usize| -> Conn {
        let mut c = Conn::open(host, addr);
        let s = spec(&format!("echo-{n}"), &w.function("echo"), InstanceStart::Fork { seed_host: addr_a.clone(), seed_id: "fn-echo".into() });
        c.start(&s).unwrap_or_else(|e| panic!("fork start: {e}\n{}", w.logs()));
        assert_eq!(c.phases(1), vec![Phase::Ready], "{}", w.logs());
        c
    };
    // The first fork's answer makes the working set, while it lives on.
    let mut first = fork(hb, &addr_b, 1);
    assert_eq!(first.invoke_json(b"one")["result"], "one");
    assert!(wait_until(WAIT, || working_set_pages(&w.a, "fn-echo") > 0), "no working set recorded\n{}", w.logs());
    assert_eq!(first.invoke_json(b"two")["result"], "two");

    // Forks on the seed host itself (pages read in place) and on the other
    // (pages from the seed host and its cache), with the working set pushed.
    let mut own = fork(ha, &addr_a, 2);
    let mut other = fork(hb, &addr_b, 3);
    for (c, body) in [(&mut own, "own"), (&mut other, "other")] {
        assert_eq!(c.invoke_json(body.as_bytes())["result"], body, "{}", w.logs());
        assert_eq!(c.invoke_json(b"again")["result"], "again");
    }
    assert_eq!(first.invoke_json(b"three")["result"], "three");

    // Dropped: a fork on the seed host is refused like any other.
    let mut admin = Conn::open(ha, &addr_a);
    assert_eq!(admin.request(&PeerRequest::DropSeed { id: "fn-echo".into() }), PeerResponse::Dropped);
    let mut refused = Conn::open(ha, &addr_a);
    let s = spec("echo-4", &w.function("echo"), InstanceStart::Fork { seed_host: addr_a.clone(), seed_id: "fn-echo".into() });
    match refused.start(&s) {
        Err(ProtoError::Remote(e)) => assert_eq!(e.kind, ErrorKind::NotFound, "{e:?}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    drop((first, own, other, seed));
    assert!(wait_until(WAIT, || usage(ha, &addr_a).instances.is_empty() && usage(hb, &addr_b).instances.is_empty()));
}
