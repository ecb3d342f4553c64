//! mitosis-cluster against a real 3-member etcd cluster on loopback.
//!
//! Every wait is bounded; the only time bound asserted is the correctness
//! one of membership: a worker that stopped refreshing is gone from every
//! view within 2 TTLs (plus a margin for etcd's lease checker).

use std::time::Duration;

use mitosis_cluster::{Cluster, ClusterError, ClusterView, SeedRecord};
use mitosis_testkit::{skip, EtcdCluster, TestDir};

const TTL: Duration = Duration::from_secs(2);
/// Bound on a change made by one client reaching another's view.
const SEEN_WITHIN: Duration = Duration::from_secs(10);
/// A worker that stops refreshing has expired by then.
const EXPIRED_WITHIN: Duration = Duration::from_millis(2 * 2000 + 1000);

/// A fresh 3-member cluster and a test-private prefix, or `None` (skipped)
/// where etcd is not installed.
fn etcd(name: &str) -> Option<(TestDir, EtcdCluster)> {
    if !EtcdCluster::available() {
        skip("etcd is not installed (scripts/setup installs etcd-server)");
        return None;
    }
    let dir = TestDir::new(name);
    let etcd = EtcdCluster::start(&dir, 3).expect("starting a 3-member etcd cluster");
    Some((dir, etcd))
}

async fn connect(etcd: &EtcdCluster) -> Cluster {
    Cluster::connect(&etcd.endpoints(), "/test/").await.expect("connecting to etcd")
}

fn seed(function: &str, host: &str, generation: u64) -> SeedRecord {
    SeedRecord { function: function.into(), host: host.into(), seed_id: format!("{function}-seed"), generation }
}

async fn seen(view: &ClusterView, what: &str, ready: impl FnMut(&mitosis_cluster::ClusterState) -> bool) {
    if view.wait_for(SEEN_WITHIN, ready).await.is_none() {
        panic!("the view did not show {what} within {SEEN_WITHIN:?}: {:#?}", view.snapshot());
    }
}

#[tokio::test]
async fn workers_functions_and_seeds_show_in_a_watchers_view() {
    let Some((_dir, etcd)) = etcd("cluster-view") else { return };
    let gateway = connect(&etcd).await;
    let view = gateway.watch().await.unwrap();
    assert!(view.snapshot().workers.is_empty());

    // The worker talks to etcd through its own client, as a daemon would.
    let worker = connect(&etcd).await;
    let lease = worker.register_worker("127.0.0.1:7070", TTL).await.unwrap();
    let id = lease.lease_id();
    seen(&view, "the worker", |s| s.workers.get("127.0.0.1:7070").is_some_and(|w| w.lease == id)).await;

    gateway.put_function("resize", r#"{"image":"resize:1"}"#).await.unwrap();
    gateway.put_seed(&seed("resize", "127.0.0.1:7070", 1)).await.unwrap();
    seen(&view, "the function and its seed", |s| {
        s.functions.get("resize").map(String::as_str) == Some(r#"{"image":"resize:1"}"#)
            && s.seeds_of("resize") == [seed("resize", "127.0.0.1:7070", 1)]
    })
    .await;

    // A newer generation replaces the record.
    gateway.put_seed(&seed("resize", "127.0.0.1:7070", 2)).await.unwrap();
    seen(&view, "the seed's new generation", |s| s.seeds_of("resize").first().is_some_and(|r| r.generation == 2)).await;

    gateway.delete_seed("resize", "127.0.0.1:7070").await.unwrap();
    gateway.delete_function("resize").await.unwrap();
    seen(&view, "the function and seed gone", |s| s.functions.is_empty() && s.seeds.is_empty()).await;

    // A seed on a host with no live record is refused, and stored nowhere.
    match gateway.put_seed(&seed("resize", "127.0.0.9:7070", 1)).await {
        Err(ClusterError::NoLiveWorker { addr }) => assert_eq!(addr, "127.0.0.9:7070"),
        other => panic!("a seed on an unregistered host: {:?}", other.map(|()| "stored")),
    }

    // Leaving revokes: the worker goes at once, with its seeds.
    gateway.put_seed(&seed("thumb", "127.0.0.1:7070", 1)).await.unwrap();
    seen(&view, "the second seed", |s| !s.seeds_of("thumb").is_empty()).await;
    lease.revoke().await;
    seen(&view, "the worker and its seed gone after revoke", |s| s.workers.is_empty() && s.seeds.is_empty()).await;
    // Another view, loaded from scratch, agrees.
    assert_eq!(gateway.watch().await.unwrap().snapshot().workers.len(), 0);
}

#[tokio::test]
async fn a_crashed_worker_and_its_seeds_vanish_within_two_ttls() {
    let Some((_dir, etcd)) = etcd("cluster-crash") else { return };
    let gateway = connect(&etcd).await;
    let view = gateway.watch().await.unwrap();
    let worker = connect(&etcd).await;
    let crashing = worker.register_worker("127.0.0.1:7001", TTL).await.unwrap();
    let staying = worker.register_worker("127.0.0.1:7002", TTL).await.unwrap();
    gateway.put_seed(&seed("f", "127.0.0.1:7001", 1)).await.unwrap();
    gateway.put_seed(&seed("f", "127.0.0.1:7002", 1)).await.unwrap();
    seen(&view, "two workers and two seeds", |s| s.workers.len() == 2 && s.seeds_of("f").len() == 2).await;

    // Stops refreshing without revoking, as a crashed daemon would.
    crashing.abandon().await;
    let gone = view
        .wait_for(EXPIRED_WITHIN, |s| !s.workers.contains_key("127.0.0.1:7001") && s.seeds_of("f").len() == 1)
        .await;
    let state = gone.unwrap_or_else(|| panic!("the crashed worker is still there after {EXPIRED_WITHIN:?}: {:#?}", view.snapshot()));
    // The live worker, refreshed meanwhile, stays, and so does its seed.
    assert!(state.workers.contains_key("127.0.0.1:7002"));
    assert_eq!(state.seeds_of("f")[0].host, "127.0.0.1:7002");
    drop(staying);
}

#[tokio::test]
async fn the_cluster_serves_with_one_member_killed() {
    let Some((_dir, mut etcd)) = etcd("cluster-quorum") else { return };
    let gateway = connect(&etcd).await;
    let view = gateway.watch().await.unwrap();
    let worker = connect(&etcd).await;
    let lease = worker.register_worker("127.0.0.1:7070", TTL).await.unwrap();
    let id = lease.lease_id();
    seen(&view, "the worker", |s| s.workers.contains_key("127.0.0.1:7070")).await;

    // Whichever member the clients were talking to, two of three remain.
    etcd.kill_member(0);
    gateway.put_function("f", "{}").await.expect("a write with 2 of 3 members");
    let other = worker.register_worker("127.0.0.1:7071", TTL).await.expect("registering with 2 of 3 members");
    seen(&view, "the writes made after the kill", |s| s.functions.contains_key("f") && s.workers.contains_key("127.0.0.1:7071")).await;
    // A newcomer connecting with every endpoint (one dead) gets the state.
    let late = Cluster::connect(&etcd.endpoints(), "/test/").await.unwrap().watch().await.unwrap();
    assert!(late.snapshot().workers.contains_key("127.0.0.1:7070"));

    // The first worker's keep-alive survived the kill: after two TTLs it is
    // still registered, under the same lease.
    tokio::time::sleep(2 * TTL).await;
    let state = view.snapshot();
    assert_eq!(state.workers.get("127.0.0.1:7070").map(|w| w.lease), Some(id), "{state:#?}");
    assert_eq!(lease.lease_id(), id);
    drop(other);
}

#[tokio::test]
async fn a_worker_whose_lease_expired_registers_again() {
    let Some((_dir, etcd)) = etcd("cluster-reregister") else { return };
    let gateway = connect(&etcd).await;
    let view = gateway.watch().await.unwrap();
    let worker = connect(&etcd).await;
    let lease = worker.register_worker("127.0.0.1:7070", TTL).await.unwrap();
    let first = lease.lease_id();
    gateway.put_seed(&seed("f", "127.0.0.1:7070", 1)).await.unwrap();
    seen(&view, "the worker and its seed", |s| s.workers.contains_key("127.0.0.1:7070") && !s.seeds.is_empty()).await;

    // The lease disappearing from etcd is what a worker cut off for longer
    // than the TTL finds when it reaches etcd again.
    revoke_from_outside(&etcd, first).await;
    let mut changes = lease.lease_changes();
    let renewed = tokio::time::timeout(SEEN_WITHIN, changes.wait_for(|&id| id != first)).await;
    let second = *renewed.expect("the worker did not register again").unwrap();
    seen(&view, "the worker under its new lease", |s| {
        s.workers.get("127.0.0.1:7070").is_some_and(|w| w.lease == second)
    })
    .await;
    // The seed went with the old lease; a new one goes under the new lease.
    assert!(view.snapshot().seeds.is_empty());
    gateway.put_seed(&seed("f", "127.0.0.1:7070", 2)).await.unwrap();
    seen(&view, "the seed put again", |s| !s.seeds.is_empty()).await;
    lease.revoke().await;
    seen(&view, "everything gone after revoke", |s| s.workers.is_empty() && s.seeds.is_empty()).await;
}

/// Revokes `lease` through a client of its own (an operator, or etcd
/// expiring it).
async fn revoke_from_outside(etcd: &EtcdCluster, lease: i64) {
    let mut client = etcd_client::Client::connect(etcd.endpoints(), None).await.unwrap();
    client.lease_revoke(lease).await.unwrap();
}

#[tokio::test]
async fn the_blocking_registrar_registers_and_revokes_on_drop() {
    let Some((_dir, etcd)) = etcd("cluster-blocking") else { return };
    let view = connect(&etcd).await.watch().await.unwrap();
    let endpoints = etcd.endpoints();
    let registrar = tokio::task::spawn_blocking(move || {
        mitosis_cluster::register_worker_blocking(&endpoints, "/test/", "127.0.0.1:7070", TTL)
    })
    .await
    .unwrap()
    .unwrap();
    let id = registrar.lease_id();
    seen(&view, "the worker", |s| s.workers.get("127.0.0.1:7070").is_some_and(|w| w.lease == id)).await;
    tokio::task::spawn_blocking(move || drop(registrar)).await.unwrap();
    seen(&view, "the worker gone after drop", |s| s.workers.is_empty()).await;
}

#[tokio::test]
async fn connecting_to_no_live_endpoint_fails_clearly() {
    let Some((_dir, mut etcd)) = etcd("cluster-unreachable") else { return };
    let endpoint = etcd.endpoint(1);
    for i in 0..3 {
        etcd.kill_member(i);
    }
    let timeouts = mitosis_cluster::Timeouts { connect: Duration::from_secs(1), request: Duration::from_secs(1) };
    match Cluster::connect_with(std::slice::from_ref(&endpoint), "/test/", timeouts).await {
        Err(e @ ClusterError::Unreachable { .. }) => assert!(e.to_string().contains(&endpoint), "{e}"),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("connected to a dead cluster"),
    }
    assert!(matches!(Cluster::connect(&[], "/test/").await, Err(ClusterError::NoEndpoints)));
}

#[tokio::test]
async fn a_view_cut_off_past_a_compaction_reloads() {
    let Some((_dir, mut etcd)) = etcd("cluster-compaction") else { return };
    // Logs the view's warnings (resume, reload) to the test's output.
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("mitosis_cluster=info").try_init();
    // The view reaches etcd through member 0 only; the writer through the others.
    let view = Cluster::connect(&[etcd.endpoint(0)], "/test/").await.unwrap().watch().await.unwrap();
    let writer = Cluster::connect(&etcd.endpoints()[1..], "/test/").await.unwrap();
    writer.put_function("before", "1").await.unwrap();
    seen(&view, "the first function", |s| s.functions.contains_key("before")).await;

    etcd.kill_member(0);
    writer.put_function("during", "2").await.unwrap();
    writer.delete_function("before").await.unwrap();
    // History up to now is dropped: the view cannot resume from its revision.
    let mut admin = etcd_client::Client::connect(&etcd.endpoints()[1..], None).await.unwrap();
    let revision = admin.get("/", None).await.unwrap().header().unwrap().revision();
    admin.compact(revision, None).await.unwrap();
    etcd.restart_member(0).unwrap();

    let state = view
        .wait_for(SEEN_WITHIN, |s| s.functions.len() == 1 && s.functions.contains_key("during"))
        .await
        .unwrap_or_else(|| panic!("the view did not catch up after the compaction: {:#?}", view.snapshot()));
    assert!(state.revision >= revision, "{state:#?}");
}
