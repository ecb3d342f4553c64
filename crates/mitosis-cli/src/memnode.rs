//! `mitosis memnode`: run a memory node (crate `mitosis-memnode`), or ask
//! one for its counters (`mitosis memnode stats`).

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Subcommand, ValueEnum};
use mitosis_memnode::{MemnodeClient, ServerConfig, Store};
use mitosis_proto::auth::ClusterKey;
use mitosis_proto::memnode::Compression;
use mitosis_proto::secure::Protection;

use crate::{init_logging, parse_size, stdout_error, LogLevel, EXIT_USAGE};

/// Run a memory node in the foreground: it keeps pages the workers' daemons offload (FaaSMem's remote memory).
///
/// A memory node stores the pages a worker's daemon offloads from its idle instances, per
/// instance and page address, in memory, optionally compressed one page at a time, and gives
/// them back on request. Peers authenticate exactly as daemons authenticate each other (the
/// cluster key of --key-file; records encrypted unless --no-encrypt, which the daemons must
/// match), and every page carries a digest its daemon made, checked when it comes back: a
/// page never stored is an error, never zeros. A put that would take the node past
/// --capacity is refused whole: nothing of it is stored and nothing stored before is lost.
///
/// It runs in the foreground until killed (SIGTERM or SIGINT); its pages go with it. Without
/// a subcommand it serves; `mitosis memnode stats` asks a running node for its counters.
/// Exit status: 64 usage (also an unreadable or short key file), 69 the address cannot be
/// listened on; for `stats`: 69 node unreachable, 76 not a memory node or another protocol
/// version or protection, 77 cluster key refused.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct MemnodeArgs {
    #[command(subcommand)]
    action: Option<MemnodeAction>,
    /// Address to serve on (TCP), e.g. 0.0.0.0:7080.
    #[arg(long, required = true)]
    listen: Option<SocketAddr>,
    /// File holding the cluster key shared with the daemons (16 bytes or more).
    #[arg(long, required = true)]
    key_file: Option<PathBuf>,
    /// Memory for pages (bytes, or with K, M, G suffix, e.g. 8G): what pages take stored
    /// (compressed, or as put when compression does not help) plus 64 bytes of index per page.
    #[arg(long, required = true, value_parser = parse_size)]
    capacity: Option<u64>,
    /// How pages are stored: as put, or compressed one page at a time with lz4 (fast) or
    /// zstd level 1 (smaller); see `mitosis bench memnode` for both on this machine.
    #[arg(long, value_enum, default_value = "lz4")]
    compress: CompressArg,
    /// Authenticate records but do not encrypt them (the daemons must use --no-encrypt too).
    #[arg(long)]
    no_encrypt: bool,
    /// Peer connections held at once; over it a peer is told "busy" and closed.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// Peer connections one address may hold at once before they have authenticated.
    #[arg(long, default_value_t = 64)]
    max_handshakes_per_ip: usize,
    #[arg(long, value_enum, default_value = "info")]
    log_level: LogLevel,
}

#[derive(Subcommand)]
enum MemnodeAction {
    /// A running memory node's counters: pages and bytes stored (raw and compressed), per
    /// instance, puts, gets, misses, drops, refused puts (full) and malformed requests.
    Stats {
        /// The memory node (ADDR:PORT).
        #[arg(long)]
        peer: String,
        /// The cluster key the node was started with.
        #[arg(long)]
        key_file: PathBuf,
        /// The node runs with --no-encrypt.
        #[arg(long)]
        no_encrypt: bool,
        /// Print the counters as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum CompressArg {
    None,
    Lz4,
    Zstd,
}

impl CompressArg {
    fn compression(self) -> Compression {
        match self {
            CompressArg::None => Compression::None,
            CompressArg::Lz4 => Compression::Lz4,
            CompressArg::Zstd => Compression::Zstd,
        }
    }
}

fn protection(no_encrypt: bool) -> Protection {
    if no_encrypt {
        Protection::Integrity
    } else {
        Protection::Encrypted
    }
}

/// The key in `path`, or the usage error to exit with.
fn read_key(path: &Path) -> Result<ClusterKey, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read key file {}: {e}", path.display()))?;
    ClusterKey::from_file_contents(&bytes).map_err(|why| format!("key file {}: {why}", path.display()))
}

/// Exit status when the node cannot listen (EX_UNAVAILABLE).
const EXIT_UNAVAILABLE: i32 = 69;

impl MemnodeArgs {
    pub fn run(self) -> anyhow::Result<i32> {
        match self.action {
            Some(MemnodeAction::Stats { peer, key_file, no_encrypt, json }) => stats(&peer, &key_file, no_encrypt, json),
            None => {
                let (Some(listen), Some(key_file), Some(capacity)) = (self.listen, self.key_file, self.capacity) else {
                    unreachable!("clap requires --listen, --key-file and --capacity without a subcommand")
                };
                init_logging(self.log_level);
                let key = match read_key(&key_file) {
                    Ok(k) => k,
                    Err(why) => {
                        eprintln!("mitosis: {why}");
                        return Ok(EXIT_USAGE.into());
                    }
                };
                let listener = match TcpListener::bind(listen) {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("mitosis: cannot listen on {listen}: {e}");
                        return Ok(EXIT_UNAVAILABLE);
                    }
                };
                let compression = self.compress.compression();
                let store = Arc::new(Store::new(capacity, compression));
                let mut config = ServerConfig::new(key, protection(self.no_encrypt));
                config.max_connections = self.max_connections.max(1);
                config.max_handshakes_per_ip = self.max_handshakes_per_ip.max(1);
                tracing::info!(%listen, capacity, %compression, "memory node serving");
                let e = mitosis_memnode::serve(listener, store, config);
                Err(anyhow::Error::new(e).context(format!("accepting peers on {listen}")))
            }
        }
    }
}

fn stats(peer: &str, key_file: &Path, no_encrypt: bool, json: bool) -> anyhow::Result<i32> {
    let key = match read_key(key_file) {
        Ok(k) => k,
        Err(why) => {
            eprintln!("mitosis: {why}");
            return Ok(EXIT_USAGE.into());
        }
    };
    let s = match MemnodeClient::connect(peer, &key, protection(no_encrypt), Duration::from_secs(10)).and_then(|mut c| c.stats()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mitosis: {}", mitosis_proto::error_chain(&e));
            return Ok(e.kind().exit_code());
        }
    };
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&s)?).map_err(stdout_error)?;
        return Ok(0);
    }
    let mib = |b: u64| b as f64 / 1048576.0;
    let ratio = |raw: u64, stored: u64| if stored == 0 { 1.0 } else { raw as f64 / stored as f64 };
    let lines = [
        format!(
            "memory node {peer}: {} compression, {:.1} of {:.1} MiB used ({:.0}%)",
            s.compression,
            mib(s.used_bytes),
            mib(s.capacity_bytes),
            100.0 * s.used_bytes as f64 / s.capacity_bytes.max(1) as f64
        ),
        format!(
            "pages: {} ({:.1} MiB as put, {:.1} MiB stored, ratio {:.2}) of {} instances",
            s.pages,
            mib(s.raw_bytes),
            mib(s.stored_bytes),
            ratio(s.raw_bytes, s.stored_bytes),
            s.instances
        ),
        format!(
            "requests: {} puts ({} pages), {} gets ({} pages), {} misses, {} drops, {} puts refused (full), {} malformed",
            s.puts, s.pages_put, s.gets, s.pages_served, s.misses, s.drops, s.refusals, s.bad_requests
        ),
    ];
    for line in lines {
        writeln!(out, "{line}").map_err(stdout_error)?;
    }
    if !s.per_instance.is_empty() {
        writeln!(out, "{:<40} {:>10} {:>12} {:>12} {:>7}", "INSTANCE", "PAGES", "AS PUT", "STORED", "RATIO").map_err(stdout_error)?;
        for i in &s.per_instance {
            writeln!(
                out,
                "{:<40} {:>10} {:>10.1}Mi {:>10.1}Mi {:>7.2}",
                i.instance,
                i.pages,
                mib(i.raw_bytes),
                mib(i.stored_bytes),
                ratio(i.raw_bytes, i.stored_bytes)
            )
            .map_err(stdout_error)?;
        }
        if (s.per_instance.len() as u64) < s.instances {
            writeln!(out, "({} more instances not listed)", s.instances - s.per_instance.len() as u64).map_err(stdout_error)?;
        }
    }
    Ok(0)
}
