//! `mitosis`: fast remote fork of Linux processes, from user space.
//!
//! This binary only parses arguments and dispatches: the daemon is
//! `mitosis-daemon`, clients use the `mitosis` library, benchmarks and the
//! demo live in `mitosis-bench`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use mitosis::{ChildEnd, Client};

/// Fast remote fork: prepare a live process once, resume it on any host in milliseconds,
/// its memory fetched over the network as the child touches it.
///
/// Every host runs `mitosis daemon`. `mitosis prepare` turns a running process into a seed
/// (the process keeps running); `mitosis resume` on any host starts a child that continues
/// from exactly that point. Exit status: the child's own status for `resume`; otherwise
/// 0 on success, 64 usage, 65 unsupported process, 66 unknown seed, 69 seed host or daemon
/// unreachable, 70 internal error, 76 protocol version mismatch, 77 permission or cluster key refused.
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
    /// (authenticated with the cluster key), and resumes children on this host.
    /// SIGTERM or SIGINT stop it: its seeds are dropped and its children killed.
    Daemon {
        /// Address for other daemons (TCP).
        #[arg(long, default_value = "0.0.0.0:7070")]
        listen: SocketAddr,
        #[command(flatten)]
        socket: SocketArg,
        /// File holding the cluster key shared by all daemons (16 bytes or more).
        #[arg(long)]
        key_file: PathBuf,
        /// Pages fetched around each page fault of a child.
        #[arg(long, default_value_t = 64)]
        window_pages: u64,
        /// Do not ask for the next window ahead of sequential faults (for measurements).
        #[arg(long)]
        no_read_ahead: bool,
        /// Seconds a page fetch may take before the child is killed.
        #[arg(long, default_value_t = 10)]
        fetch_timeout: u64,
        #[arg(long, value_enum, default_value = "info")]
        log_level: LogLevel,
    },
    /// Prepare a running process as a seed (ptrace; the process keeps running).
    Prepare {
        /// The process (single-threaded).
        #[arg(long)]
        pid: i32,
        /// Name of the seed: 1-128 of [A-Za-z0-9._-]. Preparing an id again replaces the seed.
        #[arg(long)]
        id: String,
        /// Drop the seed when the process exits. By default a seed prepared
        /// from here is pinned: it stays until `mitosis drop`.
        #[arg(long)]
        until_exit: bool,
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
    /// printed and the status is 69.
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
        /// instead of starting a new process and waiting for it.
        #[arg(long)]
        in_place: bool,
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
    /// Benchmarks that print tables (and JSON with --json).
    #[command(subcommand)]
    Bench(Bench),
    /// Programs used by the tests and benchmarks.
    #[command(subcommand, hide = true)]
    Workload(Workload),
}

#[derive(Subcommand)]
enum Bench {
    /// Prepare, resume and touch times per working-set size, beside local fork() and raw TCP.
    Micro {
        /// Working-set sizes in MiB.
        #[arg(long, value_delimiter = ',', default_values_t = [1usize, 16, 64, 256, 1024])]
        sizes: Vec<usize>,
        /// Repetitions per size (medians are reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            let code = e.downcast_ref::<mitosis::Error>().map(|m| m.exit_code()).unwrap_or(1);
            eprintln!("mitosis: {e:#}");
            ExitCode::from(code as u8)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Daemon { listen, socket, key_file, window_pages, no_read_ahead, fetch_timeout, log_level } => {
            init_logging(log_level);
            let key = std::fs::read(&key_file).with_context(|| format!("cannot read key file {}", key_file.display()))?;
            let key = mitosis_proto::auth::ClusterKey::from_file_contents(&key)
                .map_err(|e| anyhow::anyhow!("key file {}: {e}", key_file.display()))?;
            mitosis_daemon::Daemon::run(mitosis_daemon::Config {
                listen,
                socket: socket.socket,
                key,
                window_pages,
                read_ahead: !no_read_ahead,
                fetch_timeout: Duration::from_secs(fetch_timeout),
            })?;
            Ok(0)
        }
        Command::Prepare { pid, id, until_exit, socket, json } => {
            let info = Client::connect(&socket.socket)?.prepare(pid, &id, !until_exit)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                println!(
                    "prepared seed {} from pid {} in {:.2} ms: {} mappings, {:.1} MiB mapped, {:.1} MiB resident",
                    info.id,
                    info.source_pid,
                    info.prepare_us as f64 / 1000.0,
                    info.vmas,
                    info.mapped_bytes as f64 / 1048576.0,
                    info.rss_bytes as f64 / 1048576.0
                );
                for (fd, what) in &info.closed_fds {
                    println!("note: descriptor {fd} ({what}) is closed in children");
                }
            }
            Ok(0)
        }
        Command::Resume { from, id, socket, in_place: true, .. } => {
            match mitosis::resume_in_place(&socket.socket, &from, &id)? {}
        }
        Command::Resume { from, id, socket, profile, in_place: false } => {
            let resumed = Client::connect(&socket.socket)?.resume(&from, &id, [0, 1, 2])?;
            let timings = resumed.timings.clone();
            let (end, stats) = match resumed.wait() {
                Ok(r) => r,
                Err(mitosis::Error::Io(_) | mitosis::Error::Proto(_)) => {
                    // The daemon went away; its children (whose pages it served) went with it.
                    eprintln!("mitosis: child killed: the local daemon stopped");
                    return Ok(mitosis::ErrorKind::SeedGone.exit_code());
                }
                Err(e) => return Err(e.into()),
            };
            if profile {
                eprintln!(
                    "mitosis: resume {:.2} ms (image {:.2} ms, {} bytes; fork {:.2} ms; restore {:.2} ms); faults {} ({} zero), fetched {} pages in {} requests",
                    timings.total_us as f64 / 1000.0,
                    timings.fetch_image_us as f64 / 1000.0,
                    timings.image_bytes,
                    timings.spawn_us as f64 / 1000.0,
                    timings.restore_us as f64 / 1000.0,
                    stats.faults,
                    stats.zero_faults,
                    stats.pages_fetched,
                    stats.fetches
                );
            }
            Ok(match end {
                ChildEnd::Exited(c) => c,
                ChildEnd::Signaled(s) => 128 + s,
                ChildEnd::KilledByMitosis { reason } => {
                    eprintln!("mitosis: child killed: {reason}");
                    mitosis::ErrorKind::SeedGone.exit_code()
                }
            })
        }
        Command::Drop { id, socket } => {
            Client::connect(&socket.socket)?.drop_seed(&id)?;
            Ok(0)
        }
        Command::Ls { socket, json } => {
            let seeds = Client::connect(&socket.socket)?.list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&seeds)?);
            } else {
                println!("{:<24} {:>8} {:>8} {:>12} {:>12} {:>10}", "ID", "PID", "UID", "MAPPED", "RESIDENT", "AGE");
                for s in seeds {
                    println!(
                        "{:<24} {:>8} {:>8} {:>10.1}Mi {:>10.1}Mi {:>9.1}s",
                        s.id,
                        s.source_pid,
                        s.uid,
                        s.mapped_bytes as f64 / 1048576.0,
                        s.rss_bytes as f64 / 1048576.0,
                        s.age_ms as f64 / 1000.0
                    );
                }
            }
            Ok(0)
        }
        Command::Demo => mitosis_bench::demo::run(&self_exe()?).map(|_| 0),
        Command::Bench(Bench::Micro { sizes, runs, json }) => {
            mitosis_bench::micro::run(&self_exe()?, &sizes, runs, json).map(|_| 0)
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
        }),
    }
}

fn self_exe() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("cannot find the mitosis binary")
}

fn init_logging(level: LogLevel) {
    let filter = match level {
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
        LogLevel::Trace => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| filter.into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
