//! `mitosis daemon --etcd`: the daemon appears as a worker in etcd once it
//! listens, and leaves at once when it stops or dies (its registrar revokes:
//! the TTL here is far longer than any wait, so expiry cannot pass for it).

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use mitosis_cluster::{Cluster, ClusterView};
use mitosis_testkit::{require_root, skip, write_key, EtcdCluster, ProcessGuard, TestDir};

const PREFIX: &str = "/cli-test/";
const SEEN_WITHIN: Duration = Duration::from_secs(15);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start_daemon(dir: &TestDir, etcd: &EtcdCluster, name: &str) -> (ProcessGuard, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let key = write_key(dir, &format!("{name}.key"), "etcd-registration-test-key");
    let log = std::fs::File::create(dir.path().join(format!("{name}.log"))).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mitosis"));
    cmd.arg("daemon")
        .args(["--listen", &addr])
        .arg("--socket")
        .arg(dir.path().join(format!("{name}.sock")))
        .arg("--key-file")
        .arg(&key)
        .args(["--container-pool", "0", "--etcd-ttl", "120", "--etcd-prefix", PREFIX])
        .arg("--etcd")
        .arg(etcd.endpoints().join(","))
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    (ProcessGuard::spawn(&mut cmd).unwrap(), addr)
}

async fn wait(view: &ClusterView, what: &str, ready: impl FnMut(&mitosis_cluster::ClusterState) -> bool) {
    if view.wait_for(SEEN_WITHIN, ready).await.is_none() {
        panic!("etcd did not show {what} within {SEEN_WITHIN:?}: {:#?}", view.snapshot());
    }
}

#[test]
fn a_daemon_registers_in_etcd_and_leaves_when_it_stops_or_dies() {
    if !require_root() {
        return;
    }
    if !EtcdCluster::available() {
        skip("etcd is not installed (scripts/setup installs etcd-server)");
        return;
    }
    let dir = TestDir::new("etcd-registration");
    let etcd = EtcdCluster::start(&dir, 1).expect("starting etcd");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let view = Cluster::connect(&etcd.endpoints(), PREFIX).await.unwrap().watch().await.unwrap();

        // Stopped by SIGTERM: it revokes on the way out.
        let (mut stopped, addr) = start_daemon(&dir, &etcd, "stopped");
        wait(&view, "the daemon", |s| s.workers.get(&addr).is_some_and(|w| w.addr == addr)).await;
        mitosis_sys::process::kill(stopped.pid(), libc::SIGTERM).unwrap();
        assert!(stopped.wait_timeout(SEEN_WITHIN).is_some(), "the daemon did not stop on SIGTERM");
        wait(&view, "the stopped daemon gone", |s| !s.workers.contains_key(&addr)).await;

        // SIGKILLed: its registrar, told by the kernel, revokes.
        let (killed, addr) = start_daemon(&dir, &etcd, "killed");
        wait(&view, "the second daemon", |s| s.workers.contains_key(&addr)).await;
        mitosis_sys::process::kill(killed.pid(), libc::SIGKILL).unwrap();
        wait(&view, "the killed daemon gone", |s| !s.workers.contains_key(&addr)).await;
        drop(killed);
    });
}
