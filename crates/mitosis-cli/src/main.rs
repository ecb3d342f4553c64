//! `mitosis`: fast remote fork of Linux processes, from user space.
//!
//! This binary only parses arguments and dispatches: the daemon is
//! `mitosis-daemon`, clients use the `mitosis` library, benchmarks and the
//! demo live in `mitosis-bench`, trace replay in `mitosis-trace`, the
//! daemon's membership in etcd is `mitosis-cluster` (started by `registrar`),
//! the memory node is `mitosis-memnode` (`memnode`).

#![forbid(unsafe_code)]

mod memnode;
mod registrar;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use mitosis::{ChildEnd, Client};

mod platform;

/// Fast remote fork: prepare a live process once, resume it on any host in milliseconds,
/// its memory fetched over the network as the child touches it.
///
/// Every host runs `mitosis daemon`. `mitosis prepare` turns a running process into a seed
/// (the process keeps running); `mitosis resume` on any host starts a child that continues
/// from exactly that point. Exit status: the child's own status for `resume`; otherwise
/// 0 on success, 64 usage, 65 unsupported process, 66 unknown seed, 69 seed host or daemon
/// unreachable, 70 internal error, 73 an output file (`resume --log`) cannot be created, 76 protocol
/// version mismatch, 77 permission or cluster key refused, 141 stdout closed (e.g. piped into `head`).
#[derive(Parser)]
#[command(name = "mitosis", version, about, long_about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct SocketArg {
    /// The local daemon's Unix socket.
    #[arg(long, env = "MITOSIS_SOCKET", default_value = mitosis_proto::local::DEFAULT_SOCKET)]
    socket: PathBuf,
}

/// Limits and shape of a child's lean container.
#[derive(clap::Args, Clone, Default)]
struct ContainerArgs {
    /// Memory limit (bytes, or with K, M, G suffix, e.g. 256M); past it the OOM killer ends the child.
    #[arg(long, value_parser = parse_size)]
    memory: Option<u64>,
    /// CPU limit in CPUs (e.g. 0.5).
    #[arg(long)]
    cpus: Option<f64>,
    /// Limit on the number of processes and threads.
    #[arg(long)]
    pids: Option<u32>,
    /// Root directory of the container (made read-only) instead of the host's root.
    #[arg(long)]
    rootfs: Option<PathBuf>,
    /// Hostname inside (default: the container's name).
    #[arg(long)]
    hostname: Option<String>,
    /// Give the child its own network namespace (loopback only).
    #[arg(long)]
    isolate_network: bool,
}

impl ContainerArgs {
    fn spec(&self) -> anyhow::Result<mitosis::ContainerSpec> {
        let cpu_millis = match self.cpus {
            Some(c) if !(0.001..=1024.0).contains(&c) => {
                return Err(mitosis::Error::Usage("--cpus must be between 0.001 and 1024".into()).into())
            }
            c => c.map(|c| (c * 1000.0).round() as u32),
        };
        let rootfs = match &self.rootfs {
            Some(dir) => Some(
                std::fs::canonicalize(dir)
                    .map_err(|e| mitosis::Error::Usage(format!("--rootfs {}: {e}", dir.display())))?
                    .to_string_lossy()
                    .into_owned(),
            ),
            None => None,
        };
        Ok(mitosis::ContainerSpec {
            limits: mitosis::ContainerLimits { memory_bytes: self.memory, cpu_millis, pids: self.pids },
            rootfs,
            network: self.isolate_network,
            hostname: self.hostname.clone(),
        })
    }
}

/// "4096", "64K", "256M", "1G" (binary units; a trailing "i"/"B" is allowed).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().trim_end_matches(['B', 'b']).trim_end_matches('i');
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let n: u64 = digits.parse().map_err(|_| format!("{s:?} is not a size like 256M"))?;
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use K, M, G or T)")),
    };
    n.checked_mul(1 << shift).ok_or_else(|| format!("{s:?} is too large"))
}

/// How a child's memory comes in (default: adaptive fault windows with
/// read-ahead, the seed's recorded working set pushed, this host's page cache).
#[derive(clap::Args, Clone, Default)]
struct PagingArgs {
    /// Stream the whole snapshot in while the child runs.
    #[arg(long, conflicts_with = "no_prefetch")]
    eager: bool,
    /// One page per fault: no windows, no read-ahead, no push (for measurements).
    #[arg(long)]
    no_prefetch: bool,
    /// Neither push the seed's recorded working set nor record one.
    #[arg(long)]
    no_working_set: bool,
    /// Neither use nor fill this host's page cache.
    #[arg(long)]
    no_cache: bool,
    /// Track which pages the child writes (userfaultfd write protection), so that
    /// `mitosis offload` drops the pages it did not write without sending them
    /// anywhere: they come back from the seed. Costs a minor fault on each
    /// page's first write.
    #[arg(long)]
    track_writes: bool,
}

impl PagingArgs {
    fn paging(&self) -> mitosis::Paging {
        mitosis::Paging {
            eager: self.eager,
            no_prefetch: self.no_prefetch,
            no_working_set: self.no_working_set,
            no_cache: self.no_cache,
            track_writes: self.track_writes,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(Subcommand)]
enum Command {
    /// Run this host's daemon in the foreground.
    ///
    /// It keeps the seeds prepared here, serves their pages to other daemons over TCP
    /// (authenticated with the cluster key, encrypted unless --no-encrypt), and resumes children on this host.
    /// SIGTERM or SIGINT stop it: its seeds are dropped and its children killed.
    Daemon {
        /// Address for other daemons (TCP).
        #[arg(long, default_value = "0.0.0.0:7070")]
        listen: SocketAddr,
        #[command(flatten)]
        socket: SocketArg,
        /// File holding the cluster key shared by all daemons (16 bytes or more).
        /// SIGHUP makes the daemon read it again (key rotation).
        #[arg(long)]
        key_file: PathBuf,
        /// Authenticate page traffic but do not encrypt it (both daemons of a
        /// connection must agree; slower than encryption on hosts with AES hardware, see
        /// `mitosis bench crypto`).
        #[arg(long)]
        no_encrypt: bool,
        /// Pages fetched around a child's page fault; the window doubles while faults go
        /// on in order (up to --max-window-pages) and halves back to this on others.
        #[arg(long, default_value_t = 64)]
        window_pages: u64,
        #[arg(long, default_value_t = 512)]
        max_window_pages: u64,
        /// Keep the window at --window-pages.
        #[arg(long)]
        fixed_window: bool,
        /// Do not ask for the next window ahead of sequential faults (for measurements).
        #[arg(long)]
        no_read_ahead: bool,
        /// Size of this host's page cache of other hosts' seed pages (0 disables it).
        #[arg(long, value_parser = parse_size, default_value = "1G")]
        cache_size: u64,
        /// Give each child of another host's seed private copies of its pages. By
        /// default children map their memory from this host's page cache and share
        /// every page none of them wrote (the kernel copies a page on its first
        /// write); `mitosis ps` shows each child's shared and private memory.
        #[arg(long)]
        private_pages: bool,
        /// Seconds a page fetch may go without a byte from a seed host that is still
        /// reachable (its kernel acknowledges) before the child is killed. A seed
        /// host that stops answering altogether (a cut link, a dead machine) is given up
        /// after about 1.5 s of silence, whatever this says.
        #[arg(long, default_value_t = 10)]
        fetch_timeout: u64,
        /// Lean containers kept ready (namespace holders and cgroups), so that
        /// starting a child in one costs a setns and a few cgroup writes.
        #[arg(long, default_value_t = 4)]
        container_pool: usize,
        /// The cluster's other daemons (ADDR:PORT,...): the only seed hosts a non-root
        /// user may resume from (besides this daemon's own --listen address). Root may
        /// name any address.
        #[arg(long, value_delimiter = ',')]
        peers: Vec<String>,
        /// The user function instances run as (cold starts drop to it; fork starts
        /// must be of its seeds).
        #[arg(long, default_value = "nobody")]
        instance_user: String,
        /// The memory node (ADDR:PORT, a `mitosis memnode serve`) that `mitosis offload`
        /// puts children's changed pages on, reached with the cluster key.
        #[arg(long)]
        memnode: Option<String>,
        /// Give function instances' memory back to --memnode (FaaSMem's packets and
        /// semi-warm, under each function's --offload-policy): the pages an instance did
        /// not touch in its last two phases go after its first answer and every 10 s
        /// after, and once it has been idle this many seconds (or the P99 of its
        /// function's reuse intervals here, when that is longer) its memory drains step
        /// by step (see --semi-warm-drain). Pages a fork-started instance did not change
        /// since its seed are dropped instead, to come back from the seed. Its next request
        /// stops the drain and prefetches its recent pages back. A cold-started instance's
        /// memory is adopted when its runtime starts. A function's own setting (`mitosis
        /// fn deploy --offload-idle`) comes first. Needs --memnode.
        #[arg(long, value_name = "SECS", requires = "memnode", value_parser = parse_seconds)]
        offload_idle_after: Option<Duration>,
        /// Percent of what a semi-warm instance holds that it gives back each second
        /// (FaaSMem's 1%).
        #[arg(long, value_name = "PCT", default_value_t = 1.0, value_parser = parse_percent)]
        semi_warm_drain: f64,
        /// Resident memory a semi-warm instance drains down to, in MiB (FaaSMem's 8).
        #[arg(long, value_name = "MIB", default_value_t = 8)]
        semi_warm_floor: u64,
        /// Set up a zram swap device of this many MiB (lz4), the swap of the `tmo` offload
        /// policy, and remove it when the daemon stops (or its janitor, if it is killed).
        /// Containers other than `tmo` instances never swap anonymous memory
        /// (memory.swappiness 0).
        #[arg(long, value_name = "MIB")]
        zram_swap: Option<u64>,
        /// How often the `tmo` policy's controller has the kernel reclaim a `tmo` instance's
        /// memory (FaaSMem's TMO imitation: 6 s).
        #[arg(long, value_name = "SECS", default_value = "6", value_parser = parse_seconds)]
        tmo_interval: Duration,
        /// Share of a `tmo` instance's memory reclaimed per step at no memory pressure,
        /// less as its pressure (PSI some avg10) nears 0.1%, none above (FaaSMem: 0.0005).
        #[arg(long, value_name = "RATIO", default_value_t = 0.0005, value_parser = parse_ratio)]
        tmo_ratio: f64,
        /// The Python interpreter of cold-started function instances (with the
        /// `mitosis` package installed). Default: $MITOSIS_PYTHON, else python3 on PATH.
        #[arg(long)]
        python: Option<PathBuf>,
        /// Local connections one non-root user may hold at once (over it: refused, exit 75).
        #[arg(long, default_value_t = 128)]
        max_local_per_user: usize,
        /// Local connections held at once, root's included.
        #[arg(long, default_value_t = 4096)]
        max_local_connections: usize,
        /// Peer connections one address may hold at once before they have authenticated.
        #[arg(long, default_value_t = 64)]
        max_handshakes_per_ip: usize,
        /// Peer connections held at once, authenticated or not.
        #[arg(long, default_value_t = 4096)]
        max_peer_connections: usize,
        /// Seconds a local connection may wait before sending a request (a request, once
        /// its first byte came, must be whole within 5 s; a peer's handshake too).
        #[arg(long, default_value_t = 10)]
        local_idle_timeout: u64,
        #[command(flatten)]
        etcd: registrar::EtcdArgs,
        #[arg(long, value_enum, default_value = "info")]
        log_level: LogLevel,
    },
    Memnode(memnode::MemnodeArgs),
    /// The daemon's membership in etcd, started by `mitosis daemon --etcd`.
    #[command(hide = true)]
    EtcdRegistrar {
        #[command(flatten)]
        etcd: registrar::EtcdArgs,
        /// The daemon's listener: registered once it accepts connections.
        #[arg(long)]
        wait_for: SocketAddr,
        #[arg(long, value_enum, default_value = "info")]
        log_level: LogLevel,
    },
    /// Prepare a running process as a seed (ptrace; the process keeps running).
    Prepare {
        /// The process (every thread of it is prepared, all stopped at one instant).
        #[arg(long)]
        pid: i32,
        /// Name of the seed: 1-128 of [A-Za-z0-9._-]. Preparing an id again replaces the seed.
        #[arg(long)]
        id: String,
        /// Drop the seed when the process exits. By default a seed prepared
        /// from here is pinned: it stays until `mitosis drop`.
        #[arg(long)]
        until_exit: bool,
        /// Copy the process's memory into the daemon instead of keeping a
        /// copy-on-write snapshot process (slower prepare; nothing of the
        /// process stays behind).
        #[arg(long)]
        copy: bool,
        #[command(flatten)]
        socket: SocketArg,
        /// Print the seed as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Resume a seed from another host as a child here; exits with the child's status.
    ///
    /// The child's stdin, stdout and stderr are this command's. If the child is killed because
    /// a page cannot be fetched (seed host gone, network broken, seed dropped), the reason is
    /// printed and the status is 69; if the OOM killer kills it at its --memory limit, that is
    /// printed and the status is 137.
    ///
    /// The child runs in a lean container unless --no-container is given: its own PID, mount,
    /// UTS and IPC namespaces (it sees only its own processes, and its own hostname), a cgroup
    /// with the given limits, and a root file system that is read-only (the host's, or
    /// --rootfs) with private /tmp, /dev/shm and /proc. As after a fork, the files the seed had
    /// open stay open in the child, and it keeps the seed's working directory (also one outside
    /// the container's root). The container goes when the child ends.
    Resume {
        /// The seed host's daemon (ADDR:PORT).
        #[arg(long)]
        from: String,
        #[arg(long)]
        id: String,
        #[command(flatten)]
        socket: SocketArg,
        /// Print resume timings and page counters to stderr when the child ends.
        #[arg(long, conflicts_with = "in_place")]
        profile: bool,
        /// Become the child: this process is replaced by it (keeping its pid and parent)
        /// instead of starting a new process and waiting for it. No container.
        #[arg(long)]
        in_place: bool,
        /// Run the child as a plain process on this host, without a container.
        #[arg(long, conflicts_with_all = ["memory", "cpus", "pids", "rootfs", "hostname", "isolate_network"])]
        no_container: bool,
        #[command(flatten)]
        container: ContainerArgs,
        #[command(flatten)]
        paging: PagingArgs,
        /// Start the child and return at once, printing its pid and container; it keeps
        /// running (see `mitosis ps`, `mitosis kill`), its output going to --log.
        #[arg(long, conflicts_with_all = ["in_place", "profile"])]
        detach: bool,
        /// Where a detached child's stdout and stderr go (appended).
        /// Default: mitosis-<id>-<pid of this command>.log in the current directory.
        #[arg(long, requires = "detach")]
        log: Option<PathBuf>,
    },
    /// List the children running on this host, with their seed, container, memory and age.
    ///
    /// MEMORY is what the child's container is charged (its resident set without
    /// one). SHARED is what it maps from this host's page cache of its seed: pages
    /// none of the seed's children here wrote, held once for all of them and
    /// charged to the daemon. PRIVATE is its own: pages it wrote, and private
    /// copies (children of this host's own seeds, `--no-cache`, `--private-pages`).
    Ps {
        /// Also list recently ended children, with how they ended.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        socket: SocketArg,
        #[arg(long)]
        json: bool,
    },
    /// Counters of this host's daemon: per seed (children started, pages served, recorded
    /// working set), its page cache (size, hits, misses, evictions) and its containers.
    Stats {
        #[command(flatten)]
        socket: SocketArg,
        #[arg(long)]
        json: bool,
    },
    /// Offload an idle child's memory, by container name or pid: the pages it
    /// changed go to the daemon's memory node (--memnode), the pages it did not
    /// change are dropped (with --track-writes at resume; they come back from
    /// the seed), and all-zero pages are dropped. The child is held still
    /// meanwhile; afterwards each page it touches is brought back, never a
    /// wrong or zero page. If the memory node or the seed host is gone by then,
    /// the child is killed with the reason.
    Offload {
        /// The child: its container name or pid.
        id: String,
        #[command(flatten)]
        socket: SocketArg,
        #[arg(long)]
        json: bool,
    },
    /// Bring an offloaded child's memory back ahead of its touches (prefetch on
    /// reuse), by container name or pid: its pages on the memory node come back
    /// in batches, and the pages offloads dropped unchanged are pushed from the
    /// seed, while the child runs; a page it touches meanwhile waits for one batch
    /// at most. Returns once the prefetch has started.
    Prefetch {
        /// The child: its container name or pid.
        id: String,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Kill a running child (and its whole container), by container name or pid.
    Kill {
        id: String,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Drop a seed of this host and free its memory.
    Drop {
        #[arg(long)]
        id: String,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// List this host's seeds.
    Ls {
        #[command(flatten)]
        socket: SocketArg,
        #[arg(long)]
        json: bool,
    },
    /// Two hosts on this machine, a Python seed, three remote children (needs root).
    Demo,
    Gateway(platform::GatewayArgs),
    /// Manage and call the gateway's functions: deploy, ls, rm, invoke.
    #[command(subcommand)]
    Fn(platform::FnCommand),
    /// Replay a serverless trace against a gateway, open loop, and report latency and memory.
    ///
    /// The trace is an Azure Functions file (--trace; 2021 invocations or 2019 per-minute counts,
    /// told apart by their header unless --format says) or a generated one (--synthetic SPEC).
    /// Its first --duration seconds (after --skip, at --scale times its rate) become a schedule;
    /// every request is sent at its scheduled time, whatever became of the earlier ones, as
    /// `POST /invoke/FUNCTION` to the gateway, and its latency runs from that scheduled time
    /// (no coordinated omission). Every second the gateway's /metrics gives the memory of its
    /// instances and seeds.
    ///
    /// Trace functions become gateway functions by popularity rank: with `--map helloworld,json`
    /// the most invoked trace function of the window is sent to helloworld, the next to json, the
    /// rest dropped (or, with --wrap, assigned round the list again). `--map ID=NAME,...` pairs
    /// trace ids (or unique prefixes of them) with names, dropping the others. Without --map a
    /// trace function's id is the gateway function's name (as for `spike:function=json,...`).
    ///
    /// SPEC: `functions=N,rate=R,skew=S,cv=C,mu=M,sigma=G,seed=K` (all optional; rate is
    /// invocations/s over all functions, named f0 (most popular) to fN-1; Zipf popularity of
    /// exponent skew; inter-arrival CV: 1 Poisson, >1 bursty, 0 fixed; log-normal execution
    /// times), or `spike:function=F,base=1,peak=50,at=10,for=10,seed=1` (base/s, peak/s from
    /// second `at` for `for` seconds).
    ///
    /// Prints a table of P50/P90/P95/P99 of the successful requests per function, their errors,
    /// cold/fork/warm starts (the x-mitosis-start header), memory-seconds and peak memory (or
    /// JSON with --json). With --out DIR also writes one JSON line per request
    /// (replay-records.jsonl), the memory timeline (replay-memory.csv), summary.json,
    /// latency-cdf.svg and memory.svg. Exit status: 0 ok (also when requests failed: see the
    /// table), 64 usage (bad SPEC, --map, URL), 65 malformed trace, 66 trace file missing,
    /// 69 gateway unreachable, 73 --out not writable.
    Replay(ReplayArgs),
    /// Benchmarks that print tables (and JSON with --json).
    #[command(subcommand)]
    Bench(Bench),
    /// Stress programs: print a line every second and a summary; exit 1 on any wrong
    /// answer or error.
    #[command(subcommand)]
    Stress(Stress),
    /// Programs used by the tests and benchmarks.
    #[command(subcommand, hide = true)]
    Workload(Workload),
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["trace", "synthetic"])))]
struct ReplayArgs {
    /// The gateway's base URL (plain HTTP).
    #[arg(long, value_name = "URL")]
    gateway: String,
    /// An Azure Functions trace file (CSV).
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// The --trace file's format (default: told by its header).
    #[arg(long, requires = "trace", value_parser = ["azure2021", "azure2019"])]
    format: Option<String>,
    /// A generated trace instead of a file (see SPEC above).
    #[arg(long, value_name = "SPEC")]
    synthetic: Option<String>,
    /// Seconds of schedule to replay (the requests scheduled before then).
    #[arg(long, value_name = "S", value_parser = parse_seconds)]
    duration: Duration,
    /// Multiplies the trace's request rate (its offsets are divided by X).
    #[arg(long, value_name = "X", default_value_t = 1.0)]
    scale: f64,
    /// Trace seconds to skip at its start (before scaling).
    #[arg(long, value_name = "S", default_value_t = 0.0)]
    skip: f64,
    /// Gateway functions by popularity rank (NAME,NAME,...), or TRACEID=NAME,... pairs.
    #[arg(long, value_name = "LIST")]
    map: Option<String>,
    /// Trace functions ranked past the end of --map go round the list again instead of being dropped.
    #[arg(long, requires = "map")]
    wrap: bool,
    /// Seconds a request may take from its scheduled time before it counts as failed.
    #[arg(long, value_name = "S", value_parser = parse_seconds, default_value = "30")]
    timeout: Duration,
    /// Seed of the random placement of Azure 2019 invocations within their minute.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The body of every request (the handler's argument).
    #[arg(long, default_value = "{}")]
    body: String,
    /// Name of the run in the report and charts (and of its files in --out).
    #[arg(long, default_value = "replay")]
    label: String,
    /// Folder for the records, memory timeline, summary and charts.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Print the summary as JSON instead of the table.
    #[arg(long)]
    json: bool,
}

/// Positive seconds, fractions allowed ("2.5").
fn parse_percent(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if p > 0.0 && p <= 100.0 => Ok(p),
        _ => Err(format!("{s:?} is not a percentage above 0 and at most 100")),
    }
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r > 0.0 && r <= 1.0 => Ok(r),
        _ => Err(format!("{s:?} is not a ratio above 0 and at most 1")),
    }
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>().ok().and_then(|v| Duration::try_from_secs_f64(v).ok()) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

impl ReplayArgs {
    fn command(self) -> Result<mitosis_trace::command::ReplayCommand, mitosis_trace::Error> {
        use mitosis_trace::schedule::{Beyond, FunctionMap, ScheduleOptions};
        let source = match (self.trace, self.synthetic) {
            (Some(path), _) => mitosis_trace::TraceSource::File {
                path,
                format: self.format.map(|f| f.parse().expect("clap checked the format")),
                seed: self.seed,
            },
            (None, Some(spec)) => mitosis_trace::TraceSource::Synthetic(spec.parse()?),
            (None, None) => unreachable!("clap requires --trace or --synthetic"),
        };
        let map = match self.map.as_deref().map(FunctionMap::parse).transpose()? {
            Some(FunctionMap::ByRank { names, .. }) => {
                FunctionMap::ByRank { names, beyond: if self.wrap { Beyond::Wrap } else { Beyond::Drop } }
            }
            Some(other) => other,
            None => FunctionMap::Identity,
        };
        Ok(mitosis_trace::command::ReplayCommand {
            source,
            schedule: ScheduleOptions { duration: self.duration, scale: self.scale, skip_s: self.skip.max(0.0), map },
            replay: mitosis_trace::ReplayConfig {
                label: self.label,
                timeout: self.timeout,
                body: self.body.into_bytes().into(),
                progress: true,
                ..mitosis_trace::ReplayConfig::new(self.gateway)
            },
            out: self.out,
            json: self.json,
        })
    }
}

#[derive(Subcommand)]
enum Bench {
    #[command(flatten)]
    Platform(platform::PlatformBench),
    /// Peak throughput: N loops resuming children of one seed for S seconds, beside
    /// fork+exit and bare lean containers.
    Throughput {
        /// Size of the seed's working set (e.g. 1M, 16M).
        #[arg(long, value_parser = parse_size, default_value = "1M")]
        seed: u64,
        /// Concurrent loops, each resuming and waiting for one child at a time.
        #[arg(long, default_value_t = 2)]
        loops: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Resume children as plain processes instead of in lean containers.
        #[arg(long)]
        no_container: bool,
        /// Then measure the seed host's capacity: a seed host with 1, then this many client
        /// hosts (1 to 8), each running --loops loops against it: children/s, the seed
        /// host's CPU per child, pages served per second.
        #[arg(long, default_value_t = 0)]
        clients: usize,
        #[arg(long)]
        json: bool,
    },
    /// Prepare, resume and touch times per working-set size, beside local fork() and raw TCP;
    /// every paging mode side by side (lazy, second child with the page cache and working set,
    /// eager, no-prefetch), page-fault latency beside the TCP round trip, resident memory of two
    /// children, and a Python child's faults with and without the recorded working set.
    Micro {
        /// Working-set sizes in MiB.
        #[arg(long, value_delimiter = ',', default_values_t = [1usize, 16, 64, 256, 1024])]
        sizes: Vec<usize>,
        /// Repetitions per size (medians are reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long)]
        json: bool,
        /// Also write the JSON report (every sample) to this file.
        #[arg(long)]
        save_json: Option<PathBuf>,
        /// Daemons give children private copies instead of pages shared through the page
        /// cache (sharing's baseline: run once with and once without).
        #[arg(long)]
        private_pages: bool,
    },
    /// Page throughput of one peer connection: encrypted (AES-GCM, ChaCha20-Poly1305),
    /// integrity only (--no-encrypt) and raw TCP, on loopback in this process; then a child's
    /// first touch between two hosts with encrypting and --no-encrypt daemons, beside raw TCP.
    Crypto {
        /// MiB read per sample.
        #[arg(long, default_value_t = 512)]
        mib: usize,
        /// Samples per mode and window (medians are reported).
        #[arg(long, default_value_t = 7)]
        runs: usize,
        /// Seed size of the end-to-end part (root only; 0 skips it).
        #[arg(long, default_value_t = 256)]
        e2e_mib: usize,
        #[arg(long)]
        json: bool,
    },
    /// Empty peer requests (Ping -> Pong, authenticated and encrypted) from host b to the
    /// daemon of host a: requests/s per number of client connections, one request
    /// outstanding and pipelined, and the latency of one request; each beside the same
    /// clients against a raw TCP echo server in the same run. Targets: one request at most
    /// 1.2x the raw TCP round trip, at least 100K requests/s pipelined.
    Rpc {
        /// Numbers of client connections.
        #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2, 4, 8, 16])]
        clients: Vec<usize>,
        /// Requests in flight per pipelined connection.
        #[arg(long, default_value_t = 32)]
        depth: usize,
        /// Measured seconds per configuration and server.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        #[arg(long)]
        json: bool,
    },
    /// The memory node (`mitosis memnode`) on host a, its client on host b: put and get
    /// throughput (MiB/s) and per-request latency with 4 KiB and 64 KiB runs, one request
    /// outstanding, for each way it stores pages (none, lz4, zstd), every page got back
    /// compared with what was put; the compression ratio on the present anonymous pages of a
    /// live Python process's heap, and each codec alone on one core. Beside them in the same
    /// run: raw TCP bulk throughput over the same veth, the raw TCP round trip of each run size,
    /// and memcpy of the same bytes. Needs root.
    Memnode {
        /// Runs per configuration (medians are reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// MiB put and got per run with 64 KiB runs (a quarter with 4 KiB runs).
        #[arg(long, default_value_t = 64)]
        mib: usize,
        #[arg(long)]
        json: bool,
    },
    /// Offload and bring back: a child in host b of a pattern seed in host a, offloaded
    /// to a memory node in host a (unchanged memory, written memory, memory back from the
    /// node), and how fast it gets its memory back (lazily from the seed and the node,
    /// and with prefetch), beside its first touch, raw TCP and memcpy in the same run.
    /// Every page is checked. Needs root.
    Offload {
        /// Runs (medians are reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// MiB of the seed's pattern.
        #[arg(long, default_value_t = 64)]
        mib: usize,
        #[arg(long)]
        json: bool,
    },
    /// Multi-threaded seeds: prepare on host a and resume on host b of a C program with 1, 2,
    /// 8, 32 and 64 threads (extra ones blocked in a futex), each child checking its threads,
    /// beside a local fork+exit in the same run; reports microseconds per extra thread.
    /// Targets: at most 50 µs per extra thread on prepare, 100 µs on resume.
    Threads {
        /// Thread counts; the first must be 1 (the others are compared with it).
        #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2, 8, 32, 64])]
        counts: Vec<usize>,
        /// Prepares and resumes per thread count (medians are reported).
        #[arg(long, default_value_t = 9)]
        runs: usize,
        /// Resume without a container (fresh tids; glibc's cached tids are rewritten).
        #[arg(long)]
        no_container: bool,
        #[arg(long)]
        json: bool,
    },
    /// The serverless function suite (functions/): cold and warm start, prepare, remote resume,
    /// child execution and end-to-end remote fork per function (needs scripts/setup-functions).
    Functions {
        /// Functions to measure (default: all).
        #[arg(long, value_delimiter = ',')]
        functions: Vec<String>,
        /// Cold starts and remote children per function (medians are reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long)]
        json: bool,
        /// Where to write the chart (SVG).
        #[arg(long, default_value = "target/bench-functions.svg")]
        svg: PathBuf,
        /// The Python of the suite's venv (default: <repo>/.venv/bin/python).
        #[arg(long)]
        python: Option<PathBuf>,
        /// The suite's folder (default: functions/ of the repository).
        #[arg(long)]
        functions_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum Stress {
    /// Many clients call the peer protocol for S seconds, one request outstanding each, and
    /// check every answer: with --checksum a 2048-byte random payload and its BLAKE3 checksum,
    /// made by the daemon per request; else empty requests. Prints `passed: <us>us, thpt: <n>
    /// requests/s` every second (MITOSIS's line), any wrong answer or error as an `ERROR`
    /// line, and a summary. Exit status 0 when every answer was right, no error happened and
    /// at least one request was answered; 1 otherwise.
    ///
    /// Without --peer (root): against the daemon of a fresh test host a, from host b, with the
    /// real page path beside the RPCs: children of an 8 MiB seed on host a, resumed on host b
    /// one after another, each checking every byte of the pages it fetched; a child that
    /// fails or finds a wrong byte is an error.
    Rpc {
        /// Ask for checksummed random payloads and check them.
        #[arg(long)]
        checksum: bool,
        #[arg(long, default_value_t = 8)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// A daemon's peer address (ADDR:PORT) instead of a fresh test cluster.
        #[arg(long, requires = "key_file")]
        peer: Option<String>,
        /// The cluster key of --peer's daemon.
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// The daemon runs with --no-encrypt.
        #[arg(long)]
        no_encrypt: bool,
        /// Print the report (every second's sample) as JSON; the lines go to stderr.
        #[arg(long)]
        json: bool,
    },
    /// A bounded live fuzz of running daemons: random and mutated frames on connections of
    /// their own against the peer port (before authentication; after it too with
    /// --key-file) and the local socket (as user nobody: as root, mutated requests would be
    /// real orders), while --hold connections per target are held open and fed a byte a
    /// second (slow-loris), and a well-formed request every half second must get a
    /// well-formed answer. Prints `passed: <us>us, thpt: <n> inputs/s, ...` every second,
    /// every failure as an `ERROR` line, then a table of what became of the inputs.
    ///
    /// Without --peer and --socket (root): against a fresh two-host cluster, with real
    /// remote forks beside the garbage (children of a seed on host a resumed on host b,
    /// each checking every byte of its memory), and afterwards both daemons must be back
    /// to their descriptors and threads of before and near their memory. Exit status 0
    /// when every check held; 1 otherwise.
    Fuzz {
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Threads sending inputs, per kind of input.
        #[arg(long, default_value_t = 2)]
        senders: usize,
        /// Connections held open per target (slow-loris).
        #[arg(long, default_value_t = 1000)]
        hold: usize,
        /// Seed of the inputs (default: random, printed in the report).
        #[arg(long)]
        seed: Option<u64>,
        /// A daemon's peer address (ADDR:PORT) to fuzz.
        #[arg(long)]
        peer: Option<String>,
        /// The cluster key of --peer's daemon: also fuzz behind authentication.
        #[arg(long, requires = "peer")]
        key_file: Option<PathBuf>,
        /// The daemon runs with --no-encrypt.
        #[arg(long)]
        no_encrypt: bool,
        /// A daemon's local socket to fuzz (as user nobody).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Print the report (every second's sample) as JSON; the lines go to stderr.
        #[arg(long)]
        json: bool,
    },
    /// MITOSIS's remote-fork stress test, stricter. On a fresh cluster of two test hosts (root):
    /// for each workload, a seed on host a and --loops loops on host b resuming its children
    /// over and over for --seconds. Workloads: `c`, a C parent (crates/mitosis-bench/programs/
    /// stress_parent.c, compiled with the system cc) whose memory (--mib) holds a known
    /// pattern and whose every child checks every word of every page; `python:<fn>`, a
    /// function of the suite (functions/) prepared after its initialisation, whose every child
    /// runs the handler and must print its parent's result; `python:all`; `all` (the C parent,
    /// then every function). Comma-separated.
    ///
    /// Prints `[name] Throughput: X containers/sec, latency Y ms` every second (a child counts
    /// in each second by the share of its run in that second; latency: resume request to the
    /// child's exit, median of the second's children), every wrong result or failure as an
    /// `ERROR` line, a table beside same-run baselines (local fork+exit; the C program started
    /// locally, or the function's cold start) and PASS or FAIL per rule: no second under 50%
    /// of the workload's median (after the warm-up: the seconds in which its first child ran,
    /// fetching its pages over the network); zero wrong results; zero failed resumes; nothing
    /// left behind (processes under the daemons, their container cgroups, the run's network
    /// namespaces, the daemons' mounts, seed snapshots); each daemon's resident memory (less
    /// its page cache) and open descriptors, sampled 4 times a second, grew at most 10% between
    /// the first and last minute (runs under 3 minutes: first and last third; medians; under
    /// 30 s of samples it is printed SKIP, not judged). Exit status 0 when every rule passed, 1
    /// otherwise.
    ///
    /// The defaults are the long run (the C parent and 16 functions, 60 s each: about 25
    /// minutes); CI runs a few seconds of `c` and of `python:helloworld`.
    Fork {
        /// Loops resuming children at the same time.
        #[arg(long, default_value_t = 4)]
        loops: usize,
        /// Seconds of children per workload.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// c, python:<function>, python:all or all; comma-separated.
        #[arg(long, default_value = "all")]
        workload: String,
        /// Memory of the C parent, in MiB, every page checked by every child.
        #[arg(long, default_value_t = 64)]
        mib: u64,
        /// Print the report (every second's sample, every child, every resource sample) as
        /// JSON; the per-second lines go to stderr.
        #[arg(long)]
        json: bool,
        /// The venv's Python (default: .venv/bin/python of the repository).
        #[arg(long)]
        python: Option<PathBuf>,
        /// The suite's folder (default: functions/ of the repository).
        #[arg(long)]
        functions_dir: Option<PathBuf>,
        /// Checks the checker: C children are told to expect another pattern, so every one
        /// must report wrong bytes and the run must fail.
        #[arg(long, hide = true)]
        expect_wrong_pattern: bool,
    },
    /// Soak test: --resumes children of one seed id (on a fresh two-host cluster, root), every
    /// child checking every word of its memory, while a churn thread, every --churn-min-ms to
    /// --churn-max-ms at random, drops the seed (and prepares it again a moment later), prepares
    /// it again with its memory refilled with a new key (a new generation), or replaces it with
    /// the other of two C parents under the same id. A child checks its pages against the key
    /// in its own memory, and that key must be one some generation had: a page of another
    /// generation or process is a wrong result. A child whose generation went away must fail
    /// loudly (killed by mitosis with a reason, exit status 69; or its resume refused with 66
    /// or 69): an expected failure, counted apart. Prints `[soak] Throughput: ...` every second
    /// (children that ran and ended right or were killed as expected; resumes refused while the
    /// id had no seed are counted apart, and the loop waits 10 ms after one), then PASS or FAIL
    /// per rule: those of `stress fork` with zero wrong results and zero unexpected failures,
    /// all resumes done, and the seed churned at least once each way. Exit status 0 when every
    /// rule passed, 1 otherwise.
    ///
    /// The defaults are the long run (about 4 minutes here); CI runs 200 resumes.
    Soak {
        /// Loops resuming children at the same time.
        #[arg(long, default_value_t = 4)]
        loops: usize,
        /// Children in all.
        #[arg(long, default_value_t = 10_000)]
        resumes: usize,
        /// Memory of each C parent, in MiB.
        #[arg(long, default_value_t = 16)]
        mib: u64,
        /// Shortest wait between two changes of the seed, ms.
        #[arg(long, default_value_t = 100)]
        churn_min_ms: u64,
        /// Longest wait between two changes of the seed, ms.
        #[arg(long, default_value_t = 1000)]
        churn_max_ms: u64,
        /// Print the report (every second's sample, every child) as JSON; the lines go to stderr.
        #[arg(long)]
        json: bool,
        /// Checks the checker: children are told to expect a key no generation had.
        #[arg(long, hide = true)]
        expect_wrong_pattern: bool,
    },
}

#[derive(Subcommand)]
enum Workload {
    /// Fill memory with a pattern and answer commands on stdin.
    Pattern {
        #[arg(long, default_value_t = 1)]
        mb: usize,
        /// Prepare itself through the library under this id.
        #[arg(long)]
        self_prepare: Option<String>,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Raw TCP bulk transfer baseline: receive.
    TcpSink {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Raw TCP bulk transfer baseline: send MiB and print MB/s.
    TcpSource {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        mb: usize,
    },
    /// TCP round-trip baseline: answer each 16-byte request with --reply bytes.
    TcpEcho {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, default_value_t = 4096)]
        reply: usize,
        /// Connections to accept (each served by a thread) before exiting when all end.
        #[arg(long, default_value_t = 1)]
        connections: usize,
    },
    /// TCP round-trip baseline: --count round trips, print their percentiles (ns).
    TcpPing {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 5000)]
        count: usize,
        #[arg(long, default_value_t = 4096)]
        reply: usize,
    },
}

/// Exit status of a usage error (EX_USAGE), also for the ones clap finds.
const EXIT_USAGE: u8 = 64;

/// Exit status when stdout is a closed pipe (`mitosis ls | head -c0`):
/// 128 + SIGPIPE, what a shell reports for a command that SIGPIPE killed,
/// as it would `ls` or `cat`. The command stops printing, without a message.
///
/// mitosis does not take SIGPIPE's default disposition back instead (which
/// would give the same status): the client's writes to the daemon's socket
/// would then kill it too, silently, where it now reports the daemon gone.
const EXIT_STDOUT_CLOSED: u8 = 141;

/// Exit status when an output file cannot be created (EX_CANTCREAT): a
/// detached child's `--log` on a full or read-only disk. No child is started.
const EXIT_CANNOT_CREATE: u8 = 73;

/// An output file that cannot be created: the command ends with [`EXIT_CANNOT_CREATE`].
#[derive(Debug, thiserror::Error)]
#[error("cannot open log file {path}")]
struct CannotCreate {
    path: String,
    #[source]
    source: std::io::Error,
}

/// stdout is a closed pipe: the command ends with [`EXIT_STDOUT_CLOSED`].
#[derive(Debug, thiserror::Error)]
#[error("stdout is closed")]
struct StdoutClosed;

fn stdout_error(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        StdoutClosed.into()
    } else {
        anyhow::Error::new(e).context("cannot write to stdout")
    }
}

/// `println!` that ends the command when stdout is a closed pipe (see
/// [`EXIT_STDOUT_CLOSED`]) instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*).map_err(stdout_error)?
    };
}

/// `eprintln!` that ignores a closed stderr: the exit status still tells.
macro_rules! note {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// The benchmarks' tables and the demo (crate `mitosis-bench`) print with
/// `println!`, which panics on a closed pipe with "failed printing to
/// stdout: Broken pipe (os error 32)": that panic, and only it, ends the
/// process with [`EXIT_STDOUT_CLOSED`] as [`out!`] does. Other panics keep
/// the default report.
fn exit_quietly_on_closed_stdio() {
    let default = std::panic::take_hook();
    let broken_pipe = std::io::Error::from_raw_os_error(libc::EPIPE).to_string();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info.payload().downcast_ref::<String>().map(String::as_str).unwrap_or("");
        if msg.starts_with("failed printing to std") && msg.ends_with(&broken_pipe) {
            std::process::exit(EXIT_STDOUT_CLOSED.into());
        }
        default(info)
    }));
}

fn main() -> ExitCode {
    exit_quietly_on_closed_stdio();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // `--help` and `--version` exit 0 (their text on stdout); every
            // other parse error is a usage error, 64 as documented, not
            // clap's own 2.
            let _ = e.print();
            return ExitCode::from(if e.exit_code() == 0 { 0 } else { EXIT_USAGE });
        }
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) if e.downcast_ref::<StdoutClosed>().is_some() => ExitCode::from(EXIT_STDOUT_CLOSED),
        Err(e) if e.downcast_ref::<CannotCreate>().is_some() => {
            note!("mitosis: {e:#}");
            ExitCode::from(EXIT_CANNOT_CREATE)
        }
        Err(e) => {
            let code = e
                .downcast_ref::<mitosis::Error>()
                .map(|m| m.exit_code())
                .or_else(|| e.downcast_ref::<mitosis_trace::Error>().map(|t| t.exit_code()))
                .unwrap_or(1);
            note!("mitosis: {e:#}");
            ExitCode::from(code as u8)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Gateway(args) => {
            init_logging(args.log_level);
            args.run()
        }
        Command::Fn(command) => command.run(),
        Command::Daemon {
            listen,
            socket,
            key_file,
            no_encrypt,
            window_pages,
            max_window_pages,
            fixed_window,
            no_read_ahead,
            cache_size,
            private_pages,
            fetch_timeout,
            container_pool,
            peers,
            instance_user,
            memnode,
            offload_idle_after,
            semi_warm_drain,
            semi_warm_floor,
            zram_swap,
            tmo_interval,
            tmo_ratio,
            python,
            max_local_per_user,
            max_local_connections,
            max_handshakes_per_ip,
            max_peer_connections,
            local_idle_timeout,
            etcd,
            log_level,
        } => {
            init_logging(log_level);
            use mitosis_proto::secure::Protection;
            let protection = if no_encrypt { Protection::Integrity } else { Protection::Encrypted };
            let key = mitosis_daemon::WireKey::from_file(&key_file, protection)?;
            let mut instances = mitosis_daemon::instance::InstanceConfig::resolve(&instance_user, python)?;
            instances.offload_idle_after = offload_idle_after;
            instances.drain = mitosis_daemon::memory::Drain { percent_per_step: semi_warm_drain, floor_bytes: semi_warm_floor.saturating_mul(1 << 20) };
            instances.tmo = mitosis_daemon::memory::Tmo { interval: tmo_interval, ratio: tmo_ratio, ..Default::default() };
            // Started before the daemon (whose run blocks), it registers
            // once the daemon's listener answers.
            let registrar = registrar::start(&etcd, listen, log_level.name())?;
            let ran = mitosis_daemon::Daemon::run(mitosis_daemon::Config {
                listen,
                socket: socket.socket,
                key,
                pager: mitosis_daemon::PagerConfig {
                    window_pages: window_pages.max(1),
                    adaptive: !fixed_window,
                    max_window_pages: max_window_pages.max(window_pages).max(1),
                    read_ahead: !no_read_ahead,
                },
                cache_bytes: cache_size,
                share_pages: !private_pages,
                fetch_timeout: Duration::from_secs(fetch_timeout),
                container_pool,
                limits: mitosis_daemon::limits::Limits {
                    local_per_user: max_local_per_user.max(1),
                    local_total: max_local_connections.max(1),
                    handshakes_per_ip: max_handshakes_per_ip.max(1),
                    peer_total: max_peer_connections.max(1),
                    local_idle: Duration::from_secs(local_idle_timeout.max(1)),
                    ..Default::default()
                },
                peers: mitosis_daemon::limits::Peers::new(
                    &peers.iter().map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect::<Vec<_>>(),
                    listen,
                ),
                instances,
                memnode,
                zram_swap_bytes: zram_swap.map(|m| m.saturating_mul(1 << 20)),
            });
            if let Some(registrar) = registrar {
                registrar.stop();
            }
            ran?;
            Ok(0)
        }
        Command::Memnode(args) => args.run(),
        Command::EtcdRegistrar { etcd, wait_for, log_level } => {
            init_logging(log_level);
            registrar::run(&etcd, wait_for)
        }
        Command::Prepare { pid, id, until_exit, copy, socket, json } => {
            let info = Client::connect(&socket.socket)?.prepare_with(pid, &id, !until_exit, copy)?;
            // A process prepared from outside cannot know that it is cloned,
            // so nothing reseeds its children (stderr: --json stays JSON).
            eprintln!(
                "mitosis: warning: every child of seed {id} starts with the random-number state of pid {pid} \
                 (RNG seeds, key and UUID generators) and cannot tell it is a clone; \
                 see \"Clone uniqueness\" in the README"
            );
            if json {
                out!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                out!(
                    "prepared seed {} from pid {} in {:.2} ms: {} thread{}, {} mappings, {:.1} MiB mapped, {:.1} MiB resident",
                    info.id,
                    info.source_pid,
                    info.prepare_us as f64 / 1000.0,
                    info.threads,
                    if info.threads == 1 { "" } else { "s" },
                    info.vmas,
                    info.mapped_bytes as f64 / 1048576.0,
                    info.rss_bytes as f64 / 1048576.0
                );
                for (fd, what) in &info.closed_fds {
                    out!("note: descriptor {fd} ({what}) is closed in children");
                }
            }
            Ok(0)
        }
        Command::Resume { from, id, socket, in_place: true, .. } => {
            match mitosis::resume_in_place(&socket.socket, &from, &id)? {}
        }
        Command::Resume { from, id, socket, profile, in_place: false, no_container, container, paging, detach, log } => {
            let options = mitosis::ResumeOptions {
                container: (!no_container).then(|| container.spec()).transpose()?,
                detach,
                paging: paging.paging(),
            };
            if detach {
                let log = log.unwrap_or_else(|| PathBuf::from(format!("mitosis-{id}-{}.log", std::process::id())));
                let out = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .map_err(|source| CannotCreate { path: log.display().to_string(), source })?;
                let null = std::fs::File::open("/dev/null")?;
                use std::os::fd::AsRawFd;
                let stdio = [null.as_raw_fd(), out.as_raw_fd(), out.as_raw_fd()];
                let resumed = Client::connect(&socket.socket)?.resume_with(&from, &id, stdio, &options)?;
                out!(
                    "started child {} in {} (log: {})",
                    resumed.pid,
                    resumed.container.as_deref().unwrap_or("no container"),
                    log.display()
                );
                return Ok(0);
            }
            let resumed = Client::connect(&socket.socket)?.resume_with(&from, &id, [0, 1, 2], &options)?;
            let timings = resumed.timings.clone();
            let (end, stats) = match resumed.wait() {
                Ok(r) => r,
                Err(mitosis::Error::Io(_) | mitosis::Error::Proto(_)) => {
                    // The daemon went away; its children (whose pages it served) went with it.
                    note!("mitosis: child killed: the local daemon stopped");
                    return Ok(mitosis::ErrorKind::SeedGone.exit_code());
                }
                Err(e) => return Err(e.into()),
            };
            if profile {
                note!(
                    "mitosis: resume {:.2} ms (image {:.2} ms, {} bytes; fork {:.2} ms; restore {:.2} ms); faults {} ({} zero, {} waited for pages), fetched {} pages in {} requests ({} pushed ahead of faults, {} from this host's cache)",
                    timings.total_us as f64 / 1000.0,
                    timings.fetch_image_us as f64 / 1000.0,
                    timings.image_bytes,
                    timings.spawn_us as f64 / 1000.0,
                    timings.restore_us as f64 / 1000.0,
                    stats.faults,
                    stats.zero_faults,
                    stats.remote_faults,
                    stats.pages_fetched,
                    stats.fetches,
                    stats.pages_pushed,
                    stats.cache_hits
                );
            }
            match &end {
                ChildEnd::KilledByMitosis { reason } => note!("mitosis: child killed: {reason}"),
                ChildEnd::OutOfMemory { .. } => note!("mitosis: the child {end}"),
                _ => {}
            }
            Ok(end.exit_status())
        }
        Command::Ps { all, socket, json } => {
            let (children, pool) = Client::connect(&socket.socket)?.ps(all)?;
            if json {
                out!("{}", serde_json::json!({ "children": children, "pool": pool }));
            } else {
                out!(
                    "{:<8} {:<20} {:<22} {:<20} {:>10} {:>10} {:>10} {:>9}  STATE",
                    "PID", "SEED", "FROM", "CONTAINER", "MEMORY", "SHARED", "PRIVATE", "AGE"
                );
                for c in &children {
                    let state = match &c.end {
                        None if c.detached => "running (detached)".to_string(),
                        None => "running".to_string(),
                        Some(end) => end.to_string(),
                    };
                    out!(
                        "{:<8} {:<20} {:<22} {:<20} {:>8.1}Mi {:>8.1}Mi {:>8.1}Mi {:>8.1}s  {}",
                        c.pid,
                        c.seed_id,
                        c.seed_host,
                        c.container.as_deref().unwrap_or("-"),
                        c.memory_bytes as f64 / 1048576.0,
                        c.shared_bytes as f64 / 1048576.0,
                        c.private_bytes as f64 / 1048576.0,
                        c.age_ms as f64 / 1000.0,
                        state
                    );
                }
                out!("{pool}");
            }
            Ok(0)
        }
        Command::Stats { socket, json } => {
            let s = Client::connect(&socket.socket)?.stats()?;
            if json {
                out!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                let mib = |b: u64| b as f64 / 1048576.0;
                out!("{:<24} {:>18} {:>9} {:>14} {:>16}", "SEED", "GENERATION", "CHILDREN", "SERVED", "WORKING SET");
                for seed in &s.seeds {
                    out!(
                        "{:<24} {:>18x} {:>9} {:>12.1}Mi {:>10} pages",
                        seed.id,
                        seed.generation,
                        seed.children,
                        mib(seed.bytes_served),
                        seed.working_set_pages
                    );
                }
                let c = &s.cache;
                out!(
                    "page cache: {:.1} of {:.1} MiB, {} seed generations, {} hits, {} misses, {} evictions",
                    mib(c.bytes),
                    mib(c.limit_bytes),
                    c.generations,
                    c.hits,
                    c.misses,
                    c.evictions
                );
                out!("children running: {}; {}", s.children_running, s.pool);
                let b = &s.barriers;
                out!(
                    "packet barriers: {}, median {} µs, P99 {} µs, max {} µs (their pagers' part: median {} µs, P99 {} µs)",
                    b.count,
                    b.p50_us,
                    b.p99_us,
                    b.max_us,
                    b.pager_p50_us,
                    b.pager_p99_us
                );
            }
            Ok(0)
        }
        Command::Offload { id, socket, json } => {
            let r = Client::connect(&socket.socket)?.offload(&id)?;
            if json {
                out!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                let mib = |pages: u64| pages as f64 * 4096.0 / 1048576.0;
                out!(
                    "offloaded child {}: {:.1} MiB put on the memory node ({:.1} MiB stored), {:.1} MiB unchanged dropped ({:.1} MiB from the seed, {:.1} MiB already on the node), {:.1} MiB of zeros dropped",
                    r.pid,
                    mib(r.pages_put),
                    r.node_bytes as f64 / 1048576.0,
                    mib(r.pages_clean_at_seed + r.pages_clean_at_node),
                    mib(r.pages_clean_at_seed),
                    mib(r.pages_clean_at_node),
                    mib(r.pages_zero)
                );
                out!(
                    "resident {:.1} MiB -> {:.1} MiB; held still {:.1} ms of {:.1} ms",
                    r.rss_before_bytes as f64 / 1048576.0,
                    r.rss_after_bytes as f64 / 1048576.0,
                    r.frozen_us as f64 / 1000.0,
                    r.total_us as f64 / 1000.0
                );
            }
            Ok(0)
        }
        Command::Prefetch { id, socket } => {
            let (node, seed) = Client::connect(&socket.socket)?.prefetch(&id)?;
            out!("bringing back {:.1} MiB from the memory node and {:.1} MiB from the seed", node as f64 / 1048576.0, seed as f64 / 1048576.0);
            Ok(0)
        }
        Command::Kill { id, socket } => {
            let pid = Client::connect(&socket.socket)?.kill(&id)?;
            out!("killed child {pid}");
            Ok(0)
        }
        Command::Drop { id, socket } => {
            Client::connect(&socket.socket)?.drop_seed(&id)?;
            Ok(0)
        }
        Command::Ls { socket, json } => {
            let seeds = Client::connect(&socket.socket)?.list()?;
            if json {
                out!("{}", serde_json::to_string_pretty(&seeds)?);
            } else {
                out!("{:<24} {:>8} {:>8} {:>7} {:>12} {:>12} {:>10}", "ID", "PID", "UID", "THREADS", "MAPPED", "RESIDENT", "AGE");
                for s in seeds {
                    out!(
                        "{:<24} {:>8} {:>8} {:>7} {:>10.1}Mi {:>10.1}Mi {:>9.1}s",
                        s.id,
                        s.source_pid,
                        s.uid,
                        s.threads,
                        s.mapped_bytes as f64 / 1048576.0,
                        s.rss_bytes as f64 / 1048576.0,
                        s.age_ms as f64 / 1000.0
                    );
                }
            }
            Ok(0)
        }
        Command::Replay(args) => {
            mitosis_trace::command::run(&args.command()?)?;
            Ok(0)
        }
        Command::Demo => mitosis_bench::demo::run(&self_exe()?).map(|_| 0),
        Command::Bench(Bench::Throughput { seed, loops, seconds, no_container, clients, json }) => {
            let opts = mitosis_bench::throughput::Options { seed_bytes: seed, loops, seconds, container: !no_container, json, clients };
            mitosis_bench::throughput::run(&self_exe()?, &opts).map(|_| 0)
        }
        Command::Bench(Bench::Micro { sizes, runs, json, save_json, private_pages }) => {
            mitosis_bench::micro::run(&self_exe()?, &sizes, runs, json, save_json.as_deref(), private_pages).map(|_| 0)
        }
        Command::Bench(Bench::Crypto { mib, runs, e2e_mib, json }) => {
            mitosis_bench::crypto::run(&self_exe()?, mib, runs, e2e_mib, json).map(|_| 0)
        }
        Command::Bench(Bench::Platform(b)) => b.run(&self_exe()?),
        Command::Bench(Bench::Memnode { runs, mib, json }) => {
            mitosis_bench::memnode::run(&self_exe()?, &mitosis_bench::memnode::Options { runs, mib, json }).map(|_| 0)
        }
        Command::Bench(Bench::Offload { runs, mib, json }) => {
            mitosis_bench::offload::run(&self_exe()?, &mitosis_bench::offload::Options { runs, mib, json }).map(|_| 0)
        }
        Command::Bench(Bench::Threads { counts, runs, no_container, json }) => {
            let opts = mitosis_bench::threads::Options { counts, runs, no_container, json };
            mitosis_bench::threads::run(&self_exe()?, &opts).map(|_| 0)
        }
        Command::Bench(Bench::Rpc { clients, depth, seconds, json }) => {
            let opts = mitosis_bench::rpc::BenchOptions { clients, depth, seconds, json };
            mitosis_bench::rpc::bench(&self_exe()?, &opts).map(|_| 0)
        }
        Command::Stress(Stress::Rpc { checksum, clients, seconds, peer, key_file, no_encrypt, json }) => {
            let opts = mitosis_bench::rpc::StressOptions { checksum, clients, seconds, peer, key_file, no_encrypt, json };
            mitosis_bench::rpc::stress(&self_exe()?, &opts)
        }
        Command::Stress(Stress::Fuzz { seconds, senders, hold, seed, peer, key_file, no_encrypt, socket, json }) => {
            let opts = mitosis_bench::live_fuzz::FuzzOptions { peer, key_file, no_encrypt, socket, seconds, senders, hold, seed, json };
            mitosis_bench::live_fuzz::run(&self_exe()?, &opts)
        }
        Command::Stress(Stress::Fork { loops, seconds, workload, mib, json, python, functions_dir, expect_wrong_pattern }) => {
            let workloads = match mitosis_bench::stress_fork::parse_workloads(&workload) {
                Ok(w) => w,
                Err(e) => {
                    eprintln!("mitosis: {e:#}");
                    return Ok(64);
                }
            };
            let opts =
                mitosis_bench::stress_fork::ForkOptions { loops, seconds, workloads, mib, json, python, functions_dir, expect_wrong_pattern };
            mitosis_bench::stress_fork::fork(&self_exe()?, &opts)
        }
        Command::Stress(Stress::Soak { loops, resumes, mib, churn_min_ms, churn_max_ms, json, expect_wrong_pattern }) => {
            let opts = mitosis_bench::soak::SoakOptions { loops, resumes, mib, churn_min_ms, churn_max_ms, json, expect_wrong_pattern };
            mitosis_bench::soak::soak(&self_exe()?, &opts)
        }
        Command::Bench(Bench::Functions { functions, runs, json, svg, python, functions_dir }) => {
            let opts = mitosis_bench::functions::Options { functions, runs, json, svg, python, functions_dir };
            mitosis_bench::functions::run(&self_exe()?, &opts).map(|_| 0)
        }
        Command::Workload(w) => Ok(match w {
            Workload::Pattern { mb, self_prepare, socket } => {
                mitosis_bench::workload::pattern(mb, self_prepare.as_deref().map(|id| (socket.socket.as_path(), id)))
            }
            Workload::TcpSink { listen } => mitosis_bench::micro::tcp_sink(listen)?,
            Workload::TcpSource { to, mb } => mitosis_bench::micro::tcp_source(to, mb)?,
            Workload::TcpEcho { listen, reply, connections } => mitosis_bench::modes::tcp_echo(listen, reply, connections)?,
            Workload::TcpPing { to, count, reply } => mitosis_bench::modes::tcp_ping(to, count, reply)?,
        }),
    }
}

fn self_exe() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("cannot find the mitosis binary")
}

impl LogLevel {
    /// The name `--log-level` takes.
    fn name(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

fn init_logging(level: LogLevel) {
    let filter = level.name();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| filter.into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
