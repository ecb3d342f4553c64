//! `mitosis daemon --etcd`: the daemon's membership in etcd
//! (`mitosis-cluster`), kept by a registrar process beside the daemon.
//!
//! Why a process and not a thread of the daemon: `Daemon::run` forks its
//! zygote while the daemon is still single-threaded and blocks its signals
//! on the main thread before any thread starts; a registrar thread (with
//! its tokio runtime) started before it would break both. So `mitosis
//! daemon` starts `mitosis etcd-registrar` (hidden) as its child, which
//! waits until the daemon's TCP listener answers, registers, and revokes
//! when it gets SIGTERM or SIGINT — sent by the daemon when it stops, or by
//! the kernel when the daemon dies (parent-death signal), so that a killed
//! daemon leaves the cluster at once rather than after the TTL.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// The daemon's etcd options.
#[derive(clap::Args, Clone, Default)]
pub struct EtcdArgs {
    /// etcd endpoints (URL,...): register this daemon there as a worker of the
    /// serverless platform, under a lease refreshed every TTL/3.
    #[arg(long, value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// The address gateways and other daemons reach this one at (default: --listen,
    /// unless that is 0.0.0.0 or ::).
    #[arg(long)]
    pub advertise: Option<SocketAddr>,
    /// Seconds the worker record outlives this daemon when it cannot revoke it (a crash).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub etcd_ttl: u64,
    /// Key prefix of the cluster's state in etcd.
    #[arg(long, default_value = mitosis_cluster::DEFAULT_PREFIX)]
    pub etcd_prefix: String,
}

/// The running registrar; stopping it revokes the worker's lease.
pub struct Registrar {
    child: Child,
}

/// Starts the registrar for a daemon about to listen on `listen`, or
/// nothing without `--etcd`. Call before `Daemon::run` (which blocks).
pub fn start(args: &EtcdArgs, listen: SocketAddr, log_level: &str) -> anyhow::Result<Option<Registrar>> {
    let endpoints: Vec<&str> = args.etcd.iter().map(|e| e.trim()).filter(|e| !e.is_empty()).collect();
    if endpoints.is_empty() {
        if args.advertise.is_some() {
            return Err(mitosis::Error::Usage("--advertise is only used with --etcd".into()).into());
        }
        return Ok(None);
    }
    let advertise = match args.advertise {
        Some(a) => a,
        None if listen.ip().is_unspecified() => {
            return Err(mitosis::Error::Usage(format!(
                "--etcd needs --advertise: --listen {listen} is no address others can reach"
            ))
            .into())
        }
        None => listen,
    };
    let exe = std::env::current_exe().context("cannot find the mitosis binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("etcd-registrar")
        .arg("--etcd")
        .arg(endpoints.join(","))
        .arg("--etcd-prefix")
        .arg(&args.etcd_prefix)
        .arg("--advertise")
        .arg(advertise.to_string())
        .arg("--etcd-ttl")
        .arg(args.etcd_ttl.to_string())
        .arg("--wait-for")
        .arg(reachable(listen).to_string())
        .arg("--log-level")
        .arg(log_level)
        .stdin(Stdio::null());
    // The daemon gone (even SIGKILLed), its registrar revokes and exits.
    mitosis_sys::process::parent_death_signal_on_spawn(&mut cmd, libc::SIGTERM);
    let child = cmd.spawn().context("cannot start the etcd registrar")?;
    Ok(Some(Registrar { child }))
}

impl Registrar {
    /// Asks the registrar to revoke and waits for it (a bounded while:
    /// the revoke's own timeout, then SIGKILL).
    pub fn stop(mut self) {
        let pid = i32::try_from(self.child.id()).unwrap_or(i32::MAX);
        let _ = mitosis_sys::process::kill(pid, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(8);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where to knock to see the daemon listening: its own address, or
/// loopback for a wildcard one.
fn reachable(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listen.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), listen.port()),
        _ => listen,
    }
}

/// The registrar process: waits for the daemon's listener at `wait_for`,
/// registers `advertise` (retrying while etcd does not answer), then
/// holds the registration until SIGTERM or SIGINT and revokes it.
pub fn run(args: &EtcdArgs, wait_for: SocketAddr) -> anyhow::Result<i32> {
    let advertise = args.advertise.context("--advertise is required")?.to_string();
    let ttl = Duration::from_secs(args.etcd_ttl);
    // Until registered, the default actions of SIGTERM and SIGINT (exit)
    // are right: there is nothing to revoke yet.
    while TcpStream::connect_timeout(&wait_for, Duration::from_secs(1)).is_err() {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Blocked before the registrar's thread starts, so that it inherits the
    // mask and the signals come to the wait below.
    let signals = mitosis_sys::signals::SignalSet::of(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP])?;
    signals.block()?;
    let parent = std::os::unix::process::parent_id();
    let registration = loop {
        if std::os::unix::process::parent_id() != parent {
            // The daemon died while etcd was unreachable (its death signal
            // is blocked and pending here): nothing was registered.
            return Ok(0);
        }
        match mitosis_cluster::register_worker_blocking(&args.etcd, &args.etcd_prefix, &advertise, ttl) {
            Ok(r) => break r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot register this daemon in etcd; retrying in 1 s");
                // A stop asked meanwhile stays pending and is taken at the
                // wait below (the daemon SIGKILLs a registrar slow to stop).
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    };
    tracing::info!(addr = %advertise, lease = registration.lease_id(), "registered in etcd");
    loop {
        // SIGHUP is the daemon's key rotation (a terminal's hangup reaches
        // both): not a reason to leave the cluster.
        if signals.wait()? != libc::SIGHUP {
            break;
        }
    }
    drop(registration);
    tracing::info!(addr = %advertise, "left etcd");
    Ok(0)
}
