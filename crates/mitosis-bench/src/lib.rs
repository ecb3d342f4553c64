//! Benchmarks and the demo of mitosis, and the workload programs they run.
//!
//! - [`workload`]: small single-threaded programs (run as hidden `mitosis
//!   workload ...` subcommands so that every host has them) that fill memory
//!   with known patterns, answer commands on stdin, and check themselves.
//! - [`micro`]: `mitosis bench micro`, MITOSIS's micro benchmark: prepare,
//!   resume, first and second touch per working-set size, each beside its
//!   physical baseline measured in the same run (local fork, raw TCP), and
//!   ([`modes`]) every paging mode side by side: lazy, second child with the
//!   page cache and working set, eager, no-prefetch, fault latency beside the
//!   TCP round trip, resident memory of two children, and a Python child's
//!   faults with and without its seed's recorded working set.
//! - [`throughput`]: `mitosis bench throughput`, MITOSIS's peak-throughput
//!   benchmark, beside fork+exit and bare lean containers.
//! - [`functions`]: `mitosis bench functions`, the serverless function suite
//!   (`functions/`): cold start, warm start, prepare, remote resume, child
//!   execution and end-to-end remote fork per function, and a chart
//!   ([`chart`], from `mitosis-trace`).
//! - [`crypto`]: `mitosis bench crypto`, the page throughput of one peer
//!   connection encrypted, integrity-only and as raw TCP, side by side.
//! - [`rpc`]: `mitosis bench rpc` (empty peer requests, latency and
//!   throughput per number of clients, pipelined and not, beside a raw TCP
//!   echo) and `mitosis stress rpc` (checksummed random payloads from many
//!   clients, every answer checked), MITOSIS's RPC stress programs.
//! - [`memnode`]: `mitosis bench memnode`, the memory node's put and get
//!   throughput and latency per compression, beside raw TCP and memcpy, and
//!   the compression ratio on a live Python process's heap.
//! - [`live_fuzz`]: `mitosis stress fuzz`, random and mutated frames
//!   against running daemons' peer port and local socket, with held
//!   slow-loris connections and real remote forks beside them.
//! - [`kernel_log`]: what the kernel logged while a stress program ran
//!   (MITOSIS's "clean kernel log").
//! - [`stress_fork`]: `mitosis stress fork`, MITOSIS's remote-fork stress
//!   tests (a C parent and the Python functions, every child checked), with
//!   pass rules checked by the program: steady throughput, no wrong result,
//!   no failed resume, nothing left behind, daemons' memory and descriptors
//!   flat; and [`soak`], `mitosis stress soak`: thousands of checked resumes
//!   while the seed is dropped, prepared again and replaced.
//! - [`demo`]: `mitosis demo`, two hosts, a Python seed, three children.
//! - [`hosts`]: what both share: two hosts with a daemon each, seeds,
//!   programs in a host and line conversations with them.
//!
//! Benchmarks build their own hosts (network namespaces) and tear them down.

#![forbid(unsafe_code)]

pub use mitosis_trace::chart;
pub mod crypto;
pub mod demo;
pub mod density;
pub mod faasmem;
pub mod functions;
pub mod gateway_overhead;
pub mod hosts;
pub mod kernel_log;
pub mod live_fuzz;
pub mod memnode;
pub mod micro;
pub mod offload;
pub mod modes;
pub mod platform;
pub mod replay;
pub mod rpc;
pub mod semi_warm;
pub mod soak;
pub mod spike;
pub mod starts;
pub mod stress_fork;
pub mod threads;
pub mod throughput;
pub mod workload;

/// A progress bar on stderr, hidden under `--json` or when stderr is not a terminal.
pub fn progress(json: bool, steps: u64) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    use std::io::IsTerminal;
    let bar = ProgressBar::new(steps);
    if json || !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    } else {
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}").expect("valid template").progress_chars("=> "),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
    }
    bar
}

/// Median of a sample (0 for none).
pub fn median(v: &[f64]) -> f64 {
    percentile(v, 50.0)
}

/// The p-th percentile by nearest rank.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

/// CLOCK_MONOTONIC in nanoseconds (the same clock in every network namespace).
pub fn now_ns() -> u64 {
    mitosis_sys::process::monotonic_ns()
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentiles() {
        let v = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(super::median(&v), 3.0);
        assert_eq!(super::percentile(&v, 99.0), 5.0);
        assert_eq!(super::percentile(&[], 50.0), 0.0);
    }
}
