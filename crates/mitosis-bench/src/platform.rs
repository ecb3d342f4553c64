//! The serverless platform on this machine, for benchmarks: two worker
//! hosts (network namespaces, a daemon each, instances running as `nobody`
//! with the suite's venv) and a gateway running in this process inside host
//! `a`'s network namespace, with its HTTP API on that host's loopback.
//!
//! Everything is torn down on drop, also when a benchmark fails half-way.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mitosis_gateway::worker::WorkerAuth;
use mitosis_gateway::{FunctionConfig, Gateway, GatewayConfig, Policy};

use crate::functions::Suite;
use crate::hosts::Cluster;

/// The user instances run as.
pub const INSTANCE_USER: &str = "nobody";

/// Worker hosts with their daemons, and the suite.
pub struct Workers {
    /// The instances' interpreter (and the mount that keeps its packages in
    /// reach); dropped first, before the cluster's directory goes.
    _python: mitosis_testkit::python::NobodyPython,
    /// The memory node in host a the workers offload to, if asked for
    /// (dropped before the hosts go).
    _memnode: Option<mitosis_testkit::Memnode>,
    pub cluster: Cluster,
    pub suite: Suite,
}

impl Workers {
    /// Starts both hosts' daemons as workers (the binary `bin`).
    pub fn start(bin: &Path, name: &str, suite: Suite) -> anyhow::Result<Workers> {
        Workers::start_with(bin, name, suite, false)
    }

    /// [`Workers::start`], with a memory node in host a that the workers
    /// offload idle instances to when `memnode`.
    pub fn start_with(bin: &Path, name: &str, suite: Suite, memnode: bool) -> anyhow::Result<Workers> {
        Workers::start_with_args(bin, name, suite, memnode, &[])
    }

    /// [`Workers::start_with`], with `extra` `mitosis daemon` arguments.
    pub fn start_with_args(bin: &Path, name: &str, suite: Suite, memnode: bool, extra: &[&str]) -> anyhow::Result<Workers> {
        crate::hosts::ensure_root(name)?;
        // Not under /tmp: a container has a /tmp of its own, and instances
        // must reach their daemon's socket (to prepare) and their interpreter.
        let dir = mitosis_testkit::TestDir::new_in(Path::new("/var/tmp"), name);
        let venv = suite.python.parent().and_then(Path::parent).context("the suite's python is not in a venv")?;
        let python = mitosis_testkit::python::python_for_nobody(venv, dir.path()).map_err(|e| anyhow::anyhow!(e))?;
        let interpreter = python.python.to_string_lossy().into_owned();
        let mut args = vec!["--instance-user", INSTANCE_USER, "--python", &interpreter];
        if memnode {
            args.extend(["--memnode", crate::hosts::MEMNODE_A]);
        }
        args.extend(extra);
        let cluster = Cluster::start_in(bin, dir, &args)?;
        let memnode = match memnode {
            true => {
                let key = cluster.dir.path().join("cluster.key");
                Some(mitosis_testkit::Memnode::start(bin, &cluster.hosts.a, &cluster.dir, "memnode", &key, &["--capacity", "8G"])?)
            }
            false => None,
        };
        Ok(Workers { _python: python, _memnode: memnode, cluster, suite })
    }

    pub fn key_file(&self) -> PathBuf {
        self.cluster.dir.path().join("cluster.key")
    }

    /// How a gateway reaches these workers.
    pub fn auth(&self) -> anyhow::Result<WorkerAuth> {
        let bytes = std::fs::read(self.key_file()).context("reading the cluster key")?;
        let key = mitosis_proto::auth::ClusterKey::from_file_contents(&bytes).map_err(|e| anyhow::anyhow!(e))?;
        Ok(WorkerAuth { key, protection: Default::default(), connect_timeout: Duration::from_secs(5) })
    }

    /// A gateway configuration over both workers.
    pub fn gateway_config(&self, policy: Policy) -> anyhow::Result<GatewayConfig> {
        Ok(GatewayConfig {
            workers: vec![self.cluster.a.addr(), self.cluster.b.addr()],
            auth: self.auth()?,
            default_policy: policy,
            start_timeout: Duration::from_secs(120),
            worker_retry: Duration::from_secs(5),
            memory_budget: None,
        })
    }

    /// The registration of suite function `name` (its directory in the repository).
    pub fn function(&self, name: &str) -> FunctionConfig {
        FunctionConfig::new(self.suite.dir.join(name).to_string_lossy().into_owned())
    }

    /// Writes a function of the benchmark's own (`function.py` = `source`)
    /// into the workers' directory and returns its registration.
    pub fn own_function(&self, name: &str, source: &str) -> anyhow::Result<FunctionConfig> {
        let dir = self.cluster.dir.path().join("functions").join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("function.py"), source).with_context(|| format!("writing {}", dir.display()))?;
        Ok(FunctionConfig::new(dir.to_string_lossy().into_owned()))
    }

    /// Runs `f` inside host `a`'s network namespace, with a tokio runtime
    /// whose threads are there too, and a gateway over both workers serving
    /// HTTP on that host's loopback (its URL is passed to `f`).
    pub fn with_gateway<T: Send + 'static>(
        &self,
        policy: Policy,
        f: impl FnOnce(&tokio::runtime::Runtime, &Arc<Gateway>, &str) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let config = self.gateway_config(policy)?;
        self.cluster.hosts.a.run_inside(move || -> anyhow::Result<T> {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            let gateway = Gateway::new(config);
            let (addr, stop) = rt.block_on(async {
                let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
                let addr = listener.local_addr()?;
                gateway.start_background();
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                tokio::spawn(mitosis_gateway::http::serve(gateway.clone(), listener, async move {
                    let _ = stopped.await;
                }));
                anyhow::Ok((addr, stop))
            })?;
            let url = format!("http://{addr}");
            let result = f(&rt, &gateway, &url);
            for function in gateway.functions() {
                gateway.unregister(&function.name);
            }
            let _ = stop.send(());
            rt.shutdown_timeout(Duration::from_secs(2));
            result
        })?
    }
}
