//! `mitosis gateway` and `mitosis fn`: the serverless platform's commands
//! (crate `mitosis-gateway`).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use mitosis_gateway::client::{Client, ClientError};
use mitosis_gateway::{FunctionConfig, Policy};

/// Run a gateway in the foreground: the HTTP front door of the serverless platform.
///
/// It sends each invocation to an idle warm instance of the function (the most recently used
/// first); if none is idle, it starts one on the least loaded worker, by the function's start
/// policy: `fork` (default) remote-forks the function's seed (its first instance is a cold start
/// that prepares itself as the seed once its initialisation is done, and serves too); `cold`
/// cold-starts every new instance. Idle instances end after the function's keep-alive.
///
/// Each worker is a host running `mitosis daemon` with the same cluster key. API:
/// POST /invoke/{function}; GET, PUT, DELETE /functions/{function}; GET /functions;
/// GET /workers; GET /metrics (Prometheus); GET /healthz. SIGTERM or SIGINT stop it and end
/// every instance.
///
/// With --etcd, the cluster's state lives in etcd and several gateways share it: the workers are
/// the daemons registered there (`mitosis daemon --etcd ... --advertise ADDR`), plus any
/// --workers; registrations (PUT/DELETE /functions/{function}) are stored there and applied by
/// every gateway; seeds are published there per function and forked from by any gateway. Each
/// gateway routes from its own watched copy: no request waits on etcd. A worker that dies leaves
/// within 2 TTLs (at once if its daemon's registrar can revoke): its instances end, with an error
/// answer for those busy, and new ones start on the other workers.
#[derive(clap::Args)]
pub struct GatewayArgs {
    /// Address of the HTTP API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The workers' daemons (ADDR:PORT,...); with --etcd, workers besides those registered there.
    #[arg(long, value_delimiter = ',', required_unless_present = "etcd")]
    workers: Vec<String>,
    /// etcd endpoints (URL,...): keep the cluster's state (workers, functions, seeds) there.
    #[arg(long, value_delimiter = ',')]
    etcd: Vec<String>,
    /// Key prefix of the cluster's state in etcd (as the daemons' --etcd-prefix).
    #[arg(long, default_value = mitosis_cluster::DEFAULT_PREFIX)]
    etcd_prefix: String,
    /// Functions registered at start (TOML: [functions.NAME] dir = "...", memory_mb, max_instances,
    /// keep_alive_s, timeout_s, policy).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The cluster key file the workers' daemons use.
    #[arg(long)]
    key_file: PathBuf,
    /// Authenticate traffic to workers but do not encrypt it (as the daemons' --no-encrypt).
    #[arg(long)]
    no_encrypt: bool,
    /// Start policy of functions whose registration names none.
    #[arg(long, default_value = "fork")]
    policy: Policy,
    /// Seconds a new instance may take to be ready (a cold start's imports included).
    #[arg(long, default_value_t = 120)]
    start_timeout: u64,
    /// MiB of memory this gateway's instances and seeds may hold on its workers in all:
    /// over it, idle instances end, least recently used first (busy ones and seeds never).
    #[arg(long, value_name = "MIB")]
    memory_budget: Option<u64>,
    #[arg(long, value_enum, default_value = "info")]
    pub log_level: super::LogLevel,
}

impl GatewayArgs {
    pub fn run(self) -> anyhow::Result<i32> {
        use mitosis_proto::secure::Protection;
        let bytes = std::fs::read(&self.key_file)
            .map_err(|e| mitosis::Error::Usage(format!("cannot read the key file {}: {e}", self.key_file.display())))?;
        let key = mitosis_proto::auth::ClusterKey::from_file_contents(&bytes)
            .map_err(|e| mitosis::Error::Usage(format!("{}: {e}", self.key_file.display())))?;
        let protection = if self.no_encrypt { Protection::Integrity } else { Protection::Encrypted };
        let workers: Vec<String> = self.workers.iter().map(|w| w.trim().to_string()).filter(|w| !w.is_empty()).collect();
        let endpoints: Vec<String> = self.etcd.iter().map(|e| e.trim().to_string()).filter(|e| !e.is_empty()).collect();
        if workers.is_empty() && endpoints.is_empty() {
            return Err(mitosis::Error::Usage("give --workers, --etcd, or both".into()).into());
        }
        let etcd = (!endpoints.is_empty())
            .then(|| mitosis_gateway::cluster::EtcdOptions { endpoints, prefix: self.etcd_prefix.clone() });
        let config = mitosis_gateway::GatewayConfig {
            workers,
            auth: mitosis_gateway::worker::WorkerAuth { key, protection, connect_timeout: Duration::from_secs(5) },
            default_policy: self.policy,
            start_timeout: Duration::from_secs(self.start_timeout),
            worker_retry: Duration::from_secs(5),
            memory_budget: self.memory_budget.map(|m| m.saturating_mul(1 << 20)),
        };
        match mitosis_gateway::run::run(config, self.listen, self.config, etcd) {
            Ok(()) => Ok(0),
            Err(e @ mitosis_gateway::run::RunError::Config(_)) => Err(mitosis::Error::Usage(format!("{e:#}")).into()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Exit statuses of `mitosis fn`, by the gateway's answer.
fn exit_status(e: &ClientError) -> i32 {
    match e {
        ClientError::Unreachable { .. } => 69,
        ClientError::Status { status, .. } => match status {
            400 | 413 => 65,
            404 => 66,
            503 => 69,
            504 => 75,
            _ => 70,
        },
    }
}

/// Manage and call the gateway's functions.
///
/// Exit status: 0 success; 64 usage; 65 malformed registration or oversized body (HTTP 400,
/// 413); 66 unknown function (404); 69 gateway unreachable or no worker (503); 70 the handler
/// raised or its instance died (500); 75 timeout (504).
#[derive(Subcommand)]
pub enum FnCommand {
    /// Register (or replace) a function.
    Deploy {
        name: String,
        /// The function's directory (holding function.py), the same path on every worker.
        #[arg(long)]
        dir: PathBuf,
        /// Memory limit of each instance, MiB.
        #[arg(long, default_value_t = mitosis_gateway::function::DEFAULT_MEMORY_MB)]
        memory_mb: u64,
        #[arg(long, default_value_t = mitosis_gateway::function::DEFAULT_MAX_INSTANCES)]
        max_instances: u32,
        /// Seconds an idle instance is kept (0: each instance ends after its request).
        #[arg(long, default_value_t = mitosis_gateway::function::DEFAULT_KEEP_ALIVE_S)]
        keep_alive: u64,
        /// Seconds a request may take.
        #[arg(long, default_value_t = mitosis_gateway::function::DEFAULT_TIMEOUT_S)]
        timeout: u64,
        /// Start policy (default: the gateway's).
        #[arg(long)]
        policy: Option<Policy>,
        /// Seconds (at least) after which an idle instance's memory is offloaded to its
        /// worker's memory node; default: the worker's (`mitosis daemon
        /// --offload-idle-after`).
        #[arg(long, value_name = "SECS")]
        offload_idle: Option<u64>,
        /// How: `mitosis` (packets, drained gradually once idle, pages unchanged since the
        /// seed dropped free, the last requests' pages prefetched back on reuse) or
        /// `faasmem` (packets, drained gradually, every page to the memory node, no
        /// prefetch); either followed by ablations: `-no-packets`, `-no-semi-warm`,
        /// `-no-prefetch`. Or `tmo` (needs no --offload-idle and no memory node): from its
        /// start, every instance's memory is reclaimed a little at a time by the kernel, to
        /// its worker's swap (`mitosis daemon --zram-swap`), while its memory pressure
        /// stays low (FaaSMem's TMO baseline).
        #[arg(long, value_name = "POLICY", default_value = "mitosis")]
        offload_policy: mitosis_proto::instance::OffloadPolicy,
        #[command(flatten)]
        gateway: GatewayUrl,
    },
    /// List the registered functions with their instances and memory.
    Ls {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        gateway: GatewayUrl,
    },
    /// Remove a function, ending its instances and seed.
    Rm {
        name: String,
        #[command(flatten)]
        gateway: GatewayUrl,
    },
    /// Invoke a function and print its answer (JSON: result, output).
    Invoke {
        name: String,
        /// The handler's argument (default: read from stdin when it is not a terminal; else empty).
        #[arg(long)]
        data: Option<String>,
        /// Print how the instance started (cold, fork, warm) to stderr.
        #[arg(long)]
        show_start: bool,
        #[command(flatten)]
        gateway: GatewayUrl,
    },
}

#[derive(clap::Args)]
pub struct GatewayUrl {
    /// The gateway's URL.
    #[arg(long = "gateway", env = "MITOSIS_GATEWAY", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Seconds to wait for the gateway's answer.
    #[arg(long = "http-timeout", default_value_t = 3600)]
    http_timeout: u64,
}

impl GatewayUrl {
    fn client(&self) -> Client {
        Client::new(&self.url, Duration::from_secs(self.http_timeout))
    }
}

impl FnCommand {
    pub fn run(self) -> anyhow::Result<i32> {
        let mut stdout = std::io::stdout();
        let result = match self {
            FnCommand::Deploy { name, dir, memory_mb, max_instances, keep_alive, timeout, policy, offload_idle, offload_policy, gateway } => {
                let dir = std::path::absolute(&dir).unwrap_or(dir).to_string_lossy().into_owned();
                let config = FunctionConfig {
                    dir,
                    memory_mb,
                    max_instances,
                    keep_alive_s: keep_alive,
                    timeout_s: timeout,
                    policy,
                    offload_idle_s: offload_idle,
                    offload_policy,
                };
                gateway.client().deploy(&name, &config).map(|a| {
                    let what = if a.status == 201 { "registered" } else { "replaced" };
                    let _ = writeln!(stdout, "{name}: {what}");
                })
            }
            FnCommand::Ls { json, gateway } => gateway.client().list().map(|a| {
                if json {
                    let _ = stdout.write_all(&a.body);
                    let _ = writeln!(stdout);
                    return;
                }
                let all: Vec<serde_json::Value> = serde_json::from_slice(&a.body).unwrap_or_default();
                let _ = writeln!(stdout, "{:<20} {:<6} {:>7} {:>5} {:>5} {:>10} {:>6}  dir", "function", "policy", "mem MiB", "live", "idle", "keep-alive", "max");
                for f in all {
                    let s = |v: &serde_json::Value| v.to_string().trim_matches('"').to_string();
                    let _ = writeln!(
                        stdout,
                        "{:<20} {:<6} {:>7} {:>5} {:>5} {:>9}s {:>6}  {}",
                        s(&f["name"]),
                        s(&f["policy"]),
                        s(&f["config"]["memory_mb"]),
                        s(&f["instances"]["live"]),
                        s(&f["instances"]["idle"]),
                        s(&f["config"]["keep_alive_s"]),
                        s(&f["config"]["max_instances"]),
                        s(&f["config"]["dir"]),
                    );
                }
            }),
            FnCommand::Rm { name, gateway } => gateway.client().remove(&name).map(|_| {
                let _ = writeln!(stdout, "{name}: removed");
            }),
            FnCommand::Invoke { name, data, show_start, gateway } => {
                let body = match data {
                    Some(d) => d.into_bytes(),
                    None if !std::io::IsTerminal::is_terminal(&std::io::stdin()) => {
                        let mut b = Vec::new();
                        std::io::stdin().read_to_end(&mut b)?;
                        b
                    }
                    None => Vec::new(),
                };
                gateway.client().invoke(&name, &body).map(|a| {
                    if show_start {
                        eprintln!("start: {}", a.start.as_deref().unwrap_or("?"));
                    }
                    let _ = stdout.write_all(&a.body);
                    let _ = writeln!(stdout);
                })
            }
        };
        match result {
            Ok(()) => Ok(0),
            Err(e) => {
                eprintln!("mitosis: {e}");
                Ok(exit_status(&e))
            }
        }
    }
}

/// The platform's benchmarks (`mitosis bench gateway|starts|spike`); each needs root,
/// scripts/setup-functions, and runs two worker hosts with a gateway on this machine.
#[derive(Subcommand)]
pub enum PlatformBench {
    /// What the gateway adds to a warm instance's call (beside a direct call of the same
    /// instance), and invocations per second through it with closed-loop clients.
    Gateway {
        #[arg(long, default_value = "helloworld")]
        function: String,
        /// Sequential calls per path.
        #[arg(long, default_value_t = 2000)]
        calls: usize,
        /// Concurrent clients of the throughput runs.
        #[arg(long, value_delimiter = ',', default_values_t = [1usize, 4, 8])]
        clients: Vec<usize>,
        /// Seconds per throughput run.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long)]
        json: bool,
    },
    /// New instances per function of the suite: cold start, remote fork and warm, request to
    /// response through the gateway, and the start overheads (minus the warm run).
    Starts {
        /// Functions (default: all 13).
        #[arg(long, value_delimiter = ',')]
        functions: Vec<String>,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long)]
        json: bool,
    },
    /// MITOSIS's load-spike experiment: one function's rate jumps from --base/s to --peak/s at
    /// --at for --for seconds; the same open-loop schedule under cold (no keep-alive), cold with
    /// a 600 s keep-alive (a warm pool) and fork; P50, P99 and memory-seconds of each.
    Spike {
        /// The function: `spiky` (the benchmark's own: a 64 MiB initialisation, a handler that
        /// waits 100 ms and reads 1% of it) or one of the suite's.
        #[arg(long, default_value = "spiky")]
        function: String,
        #[arg(long, default_value_t = 1.0)]
        base: f64,
        #[arg(long, default_value_t = 50.0)]
        peak: f64,
        #[arg(long, default_value_t = 10.0)]
        at: f64,
        #[arg(long = "for", default_value_t = 10.0)]
        for_s: f64,
        /// Length of the schedule, seconds.
        #[arg(long, default_value_t = 40.0)]
        seconds: f64,
        /// Where the records, memory timelines, summary and charts go.
        #[arg(long, default_value = "target/bench-spike")]
        out: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// FaaSMem's evaluation (issue 11): one FaaSMem-shaped schedule on FaaSMem's functions
    /// through one gateway per arm at once, over the same workers and memory node. By
    /// default `none` (cold starts, keep-alive), `tmo` (cold starts, the kernel reclaiming to
    /// the workers' zram swap, whose memory counts), `faasmem` (cold starts, packets, semi-warm,
    /// every page to the node), `fork` and `mitosis` (remote forks, packets, semi-warm,
    /// unchanged pages dropped free, prefetch on reuse). Prints each arm's P50/P95/P99 and
    /// average memory (instances, seeds) with their ratios to the first arm, P95 ratios per
    /// function and the packet barriers' times; records, charts and faasmem.json in --out.
    /// `--experiment semi-warm` instead simulates keep-alive over whole traces (experiment 4):
    /// the share of idle instance-time, and of idle memory-time where the trace gives memory,
    /// that the semi-warm rule (P99 of reuse intervals, at least --offload-idle) makes
    /// semi-warm; a table, semi-warm.json and a CDF over functions (semi-warm-cdf.svg).
    /// `--experiment density` gives every arm's gateway the same memory budget (--budget)
    /// and measures how many instances each keeps live within it, against an unbudgeted
    /// `none`'s P95 (experiment 6); density.json and density-live.svg.
    Faasmem {
        /// `arms` (experiments 1, 3 and 5: replays through the gateways), `semi-warm`
        /// (experiment 4: a simulation over --traces) or `density` (experiment 6: the arms
        /// replayed with a memory budget, --budget).
        #[arg(long, value_enum, default_value_t = FaasmemExperiment::Arms)]
        experiment: FaasmemExperiment,
        /// Traces of `--experiment semi-warm`: files (Azure 2021 or 2019; an Azure 2019
        /// `...invocations...` file is weighted by the `...memory...` file beside it) or
        /// synthetic SPECs (a day each). Absent files are said to be and left out.
        #[arg(long, value_delimiter = ';', default_values_t = mitosis_bench::semi_warm::DEFAULT_TRACES.map(String::from))]
        traces: Vec<String>,
        /// Seconds an idle instance is kept (`--experiment semi-warm`; the gateway's is 600).
        #[arg(long, value_name = "SECS", default_value_t = 600)]
        keep_alive: u64,
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
        /// Seconds an instance is idle, at least, before it turns semi-warm (FaaSMem: 60;
        /// the P99 of its function's reuse intervals when that is longer).
        #[arg(long, value_name = "SECS", default_value_t = 60)]
        offload_idle: u64,
        /// Percent of its memory a semi-warm instance gives back a second (FaaSMem: 1).
        #[arg(long, value_name = "PCT", default_value_t = 1.0)]
        drain: f64,
        /// Suite functions, the most invoked trace function onto the first (bert is left
        /// out by default: at 1.8 GB an instance, five arms of it do not fit).
        #[arg(long, value_delimiter = ',', default_values_t = mitosis_bench::faasmem::FUNCTIONS.map(String::from))]
        functions: Vec<String>,
        /// The arms, the first the baseline: `none` (cold starts, keep-alive), `fork` (remote
        /// forks, keep-alive), or an offload policy (`mitosis...` on remote forks, `faasmem...`
        /// and `tmo` on cold starts), ablations included (`mitosis-no-packets`, `-no-semi-warm`,
        /// `-no-prefetch`). Default: none,tmo,faasmem,fork,mitosis; for `--experiment
        /// density`, none,tmo,faasmem,mitosis, each within --budget, after an unbudgeted `none`.
        #[arg(long, value_delimiter = ',')]
        arms: Vec<String>,
        /// `--experiment density`: MiB of local memory (instances and seeds) each budgeted
        /// gateway may hold; over it, its idle instances end, least recently used first.
        #[arg(long, value_name = "MIB", default_value_t = 512)]
        budget: u64,
        /// The synthetic trace (grammar: `mitosis replay --help`).
        #[arg(long, default_value = mitosis_bench::faasmem::DEFAULT_SPEC)]
        spec: String,
        #[arg(long, default_value = "target/bench-faasmem")]
        out: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// A FaaSMem-shaped open-loop replay of the suite's functions (synthetic trace, mapped by
    /// popularity rank, the most invoked onto the lightest handler), through a fork and a cold
    /// gateway at once over the same workers; a table per policy, records and charts in --out.
    /// With --offload-idle, a third gateway at once: fork starts whose idle instances are
    /// offloaded to a memory node after that many seconds.
    Replay {
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
        /// Also replay through a fork gateway that offloads instances idle this many seconds.
        #[arg(long, value_name = "SECS")]
        offload_idle: Option<u64>,
        /// The third gateway's offload policy (see `mitosis fn deploy --offload-policy`).
        #[arg(long, value_name = "POLICY", default_value = "mitosis", requires = "offload_idle")]
        offload_policy: mitosis_proto::instance::OffloadPolicy,
        /// The synthetic trace (grammar: `mitosis replay --help`).
        #[arg(long, default_value = mitosis_bench::replay::DEFAULT_SPEC)]
        spec: String,
        #[arg(long, default_value = "target/bench-replay")]
        out: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

impl PlatformBench {
    pub fn run(self, bin: &std::path::Path) -> anyhow::Result<i32> {
        match self {
            PlatformBench::Gateway { function, calls, clients, seconds, json } => {
                mitosis_bench::gateway_overhead::run(bin, &mitosis_bench::gateway_overhead::Options { function, calls, clients, seconds, json })?
            }
            PlatformBench::Starts { functions, runs, json } => {
                mitosis_bench::starts::run(bin, &mitosis_bench::starts::Options { functions, runs, json })?
            }
            PlatformBench::Spike { function, base, peak, at, for_s, seconds, out, json } => mitosis_bench::spike::run(
                bin,
                &mitosis_bench::spike::Options { function, base, peak, at_s: at, for_s, seconds, out, json },
            )?,
            PlatformBench::Faasmem { experiment: FaasmemExperiment::SemiWarm, traces, keep_alive, offload_idle, out, json, .. } => {
                let rule = mitosis_trace::keepalive::KeepAlive { keep_alive_s: keep_alive as f64, min_delay_s: offload_idle as f64 };
                mitosis_bench::semi_warm::run(&mitosis_bench::semi_warm::Options { traces, rule, out, json })?
            }
            PlatformBench::Faasmem { experiment, minutes, offload_idle, drain, functions, arms, budget, spec, out, json, .. } => {
                let defaults: &[&str] = match experiment {
                    FaasmemExperiment::Density => &mitosis_bench::density::DEFAULT_ARMS,
                    _ => &mitosis_bench::faasmem::DEFAULT_ARMS,
                };
                let arms = if arms.is_empty() { defaults.iter().map(|a| a.to_string()).collect() } else { arms };
                let opts = mitosis_bench::faasmem::Options { minutes, offload_idle, drain_percent: drain, functions, arms, spec, budget_mib: budget, out, json };
                match experiment {
                    FaasmemExperiment::Density => mitosis_bench::density::run(bin, &opts)?,
                    _ => mitosis_bench::faasmem::run(bin, &opts)?,
                }
            }
            PlatformBench::Replay { minutes, offload_idle, offload_policy, spec, out, json } => {
                mitosis_bench::replay::run(bin, &mitosis_bench::replay::Options { minutes, offload_idle, offload_policy, spec, out, json })?
            }
        }
        Ok(0)
    }
}

/// What `mitosis bench faasmem` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FaasmemExperiment {
    /// Experiments 1, 3 and 5: the arms replayed through gateways.
    Arms,
    /// Experiment 4: the semi-warm share of idle time, simulated over traces.
    SemiWarm,
    /// Experiment 6: live instances within a memory budget, against P95.
    Density,
}
