//! Throwaway etcd clusters on loopback, for the cluster-state tests.
//!
//! Each member is a `/usr/bin/etcd` (Debian's `etcd-server`, installed by
//! `scripts/setup`) listening on 127.0.0.1 only, with free ports, its data
//! on tmpfs (`/dev/shm`) and its log in the test's [`TestDir`]. Members are
//! bootstrapped statically (`--initial-cluster`); dropping the cluster kills
//! every member and removes the data, whether the test passed or not.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::{wait_until, ProcessGuard, TestDir};

/// Where Debian's `etcd-server` puts the server.
pub const ETCD_BINARY: &str = "/usr/bin/etcd";

/// How long a new cluster may take to elect a leader and answer.
const HEALTHY_WITHIN: Duration = Duration::from_secs(30);

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    /// `None` once killed.
    proc: Option<ProcessGuard>,
}

/// A running etcd cluster of N members on 127.0.0.1.
pub struct EtcdCluster {
    members: Vec<Member>,
    data: PathBuf,
    /// `--initial-cluster` (every member's peer URL).
    initial: String,
    token: String,
    /// Where the members' logs go.
    logs: PathBuf,
}

impl EtcdCluster {
    /// Whether etcd is installed here (tests without it call [`crate::skip`]).
    pub fn available() -> bool {
        Path::new(ETCD_BINARY).is_file()
    }

    /// Starts `members` members, logging to `<dir>/etcd-<i>.log`, and waits
    /// until every one reports healthy (it has a leader and a quorum).
    pub fn start(dir: &TestDir, members: usize) -> anyhow::Result<EtcdCluster> {
        if !EtcdCluster::available() {
            bail!("{ETCD_BINARY} is not installed (run scripts/setup)");
        }
        if members == 0 {
            bail!("an etcd cluster needs at least one member");
        }
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let token = format!("mitosis-test-{}-{n}", std::process::id());
        // tmpfs: etcd fsyncs its WAL on every write, which a disk makes slow.
        let data = PathBuf::from(format!("/dev/shm/{token}"));
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
        let mut cluster =
            EtcdCluster { members: Vec::new(), data, initial: String::new(), token: String::new(), logs: PathBuf::new() };
        // All ports are taken while every listener is still open, so that
        // no two members are handed the same port.
        let ports = free_ports(members * 2)?;
        for i in 0..members {
            cluster.members.push(Member {
                name: format!("m{i}"),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                proc: None,
            });
        }
        let initial: Vec<String> =
            cluster.members.iter().map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port)).collect();
        cluster.initial = initial.join(",");
        cluster.token = token;
        cluster.logs = dir.path().to_path_buf();
        for i in 0..members {
            cluster.spawn(i)?;
        }
        for i in 0..members {
            let port = cluster.members[i].client_port;
            let healthy = wait_until(HEALTHY_WITHIN, || {
                let exited = cluster.members[i].proc.as_mut().and_then(|p| p.wait_timeout(Duration::ZERO)).is_some();
                exited || is_healthy(port)
            });
            let exited = cluster.members[i].proc.as_mut().and_then(|p| p.wait_timeout(Duration::ZERO));
            if !healthy || exited.is_some() {
                let log = std::fs::read_to_string(cluster.log_path(i)).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!(
                    "etcd member {i} (client port {port}) {} within {HEALTHY_WITHIN:?}; its log ends:\n{}",
                    if exited.is_some() { "exited" } else { "was not healthy" },
                    tail.join("\n")
                );
            }
        }
        Ok(cluster)
    }

    /// The client URLs of every member, killed ones included (a client
    /// must cope with endpoints that do not answer).
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| format!("http://127.0.0.1:{}", m.client_port)).collect()
    }

    /// The client URL of member `i`.
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].client_port)
    }

    /// SIGKILLs member `i` (its data stays until the cluster is dropped).
    pub fn kill_member(&mut self, i: usize) {
        // Dropping the guard kills the member's process group and reaps it.
        self.members[i].proc = None;
    }

    /// Starts killed member `i` again on its old data and ports, and waits
    /// until it is healthy (it rejoins the cluster it was in).
    pub fn restart_member(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill_member(i);
        self.spawn(i)?;
        let port = self.members[i].client_port;
        if !wait_until(HEALTHY_WITHIN, || is_healthy(port)) {
            bail!("restarted etcd member {i} was not healthy within {HEALTHY_WITHIN:?} (see {})", self.log_path(i).display());
        }
        Ok(())
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.logs.join(format!("etcd-{i}.log"))
    }

    /// Starts member `i`'s process (on its data dir: a restarted member
    /// ignores the bootstrap flags and rejoins).
    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let log_path = self.log_path(i);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let m = &self.members[i];
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let mut cmd = Command::new(ETCD_BINARY);
        cmd.arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(self.data.join(&m.name))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial, "--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.token])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // A test binary killed outright leaves no etcd behind.
        mitosis_sys::process::parent_death_signal_on_spawn(&mut cmd, libc::SIGKILL);
        let proc = ProcessGuard::spawn(&mut cmd).with_context(|| format!("starting {ETCD_BINARY}"))?;
        self.members[i].proc = Some(proc);
        Ok(())
    }

    /// Whether member `i` answers `/health` as healthy right now.
    pub fn member_healthy(&self, i: usize) -> bool {
        self.members[i].proc.is_some() && is_healthy(self.members[i].client_port)
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            m.proc = None;
        }
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// `count` distinct free TCP ports on 127.0.0.1.
/// Ports members listen on: below Linux's ephemeral range (32768 and up by
/// default), from which the kernel picks the source port of every outgoing
/// connection. A port found free there and let go until etcd binds it
/// could be taken meanwhile by any connection made on this machine, such as
/// another cluster's members connecting to their peers (seen: "bind:
/// address already in use"); below it, only a listener asking for it by
/// number can.
const MEMBER_PORTS: std::ops::Range<u16> = 20000..32000;

/// `count` ports of [`MEMBER_PORTS`] free on 127.0.0.1 now, never handed out
/// before by this process (clusters started at the same time get distinct
/// ones).
fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap();
    let span = MEMBER_PORTS.end - MEMBER_PORTS.start;
    // Each test process starts at its own place in the range.
    let start = u16::try_from(std::process::id() % u32::from(span)).expect("below span, a u16");
    let mut listeners = Vec::new();
    for i in 0..span {
        if listeners.len() == count {
            break;
        }
        let port = MEMBER_PORTS.start + (start + i) % span;
        if handed_out.contains(&port) {
            continue;
        }
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            listeners.push(l);
        }
    }
    if listeners.len() < count {
        bail!("only {} free ports in {MEMBER_PORTS:?} on 127.0.0.1, {count} needed", listeners.len());
    }
    let ports: Vec<u16> = listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect::<Result<_, _>>().context("finding free ports")?;
    handed_out.extend(&ports);
    Ok(ports)
}

/// One `GET /health` on 127.0.0.1:`port`: etcd answers `{"health":"true"}`
/// once the member has a leader and its cluster a quorum.
fn is_healthy(port: u16) -> bool {
    let ask = || -> std::io::Result<String> {
        let mut conn = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1))?;
        conn.set_read_timeout(Some(Duration::from_secs(2)))?;
        conn.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer)?;
        Ok(answer)
    };
    ask().map(|a| a.contains("\"health\":\"true\"")).unwrap_or(false)
}
