//! The gateway's Prometheus metrics (`GET /metrics`).
//!
//! Per function: invocations by outcome, starts by kind (cold, fork, warm),
//! request latency and new-instance readiness histograms, and, as of the last
//! scrape, live/idle/busy/starting instances and the memory of the function's
//! instances (the sum of their containers' memory cgroups) and of its seed.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::gateway::{Gateway, InvokeError, Invoked, StartKind};
use crate::instance::InstanceError;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionLabel {
    function: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    function: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    function: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    function: String,
    state: String,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms to about 68 s.
    Histogram::new(exponential_buckets(0.00025, 2.0, 19))
}

/// The metric families and their registry.
pub struct Metrics {
    registry: Mutex<Registry>,
    invocations: Family<OutcomeLabels, Counter>,
    starts: Family<KindLabels, Counter>,
    latency: Family<FunctionLabel, Histogram, fn() -> Histogram>,
    ready: Family<KindLabels, Histogram, fn() -> Histogram>,
    instances: Family<StateLabels, Gauge>,
    instance_memory: Family<FunctionLabel, Gauge>,
    seed_memory: Family<FunctionLabel, Gauge>,
    evictions: Family<FunctionLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let invocations = Family::<OutcomeLabels, Counter>::default();
        let starts = Family::<KindLabels, Counter>::default();
        let latency = Family::<FunctionLabel, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        let ready = Family::<KindLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        let instances = Family::<StateLabels, Gauge>::default();
        let instance_memory = Family::<FunctionLabel, Gauge>::default();
        let seed_memory = Family::<FunctionLabel, Gauge>::default();
        let evictions = Family::<FunctionLabel, Counter>::default();
        registry.register("mitosis_invocations", "Invocations by outcome (ok, handler_error, timeout, instance_died, start_failed, queue_timeout, unknown)", invocations.clone());
        registry.register("mitosis_starts", "Which instance served a request: cold start, remote fork or a warm (reused) one", starts.clone());
        registry.register("mitosis_request_duration_seconds", "Time from the request's arrival to its answer", latency.clone());
        registry.register("mitosis_instance_ready_seconds", "Time from a new instance's start request to its readiness, by kind", ready.clone());
        registry.register("mitosis_instances", "Instances by state as of this scrape", instances.clone());
        registry.register("mitosis_instance_memory_bytes", "Memory of the function's instances (sum of their containers' memory cgroup usage), last polled", instance_memory.clone());
        registry.register("mitosis_seed_memory_bytes", "Memory held for the function's seed outside any container, last polled", seed_memory.clone());
        registry.register("mitosis_budget_evictions", "Idle instances ended to keep the gateway within its memory budget", evictions.clone());
        Metrics { registry: Mutex::new(registry), invocations, starts, latency, ready, instances, instance_memory, seed_memory, evictions }
    }

    /// An idle instance of `function` ended for the memory budget.
    pub(crate) fn evicted(&self, function: &str) {
        self.evictions.get_or_create(&FunctionLabel { function: function.into() }).inc();
    }

    pub(crate) fn observe(&self, function: &str, result: &Result<Invoked, InvokeError>, took: Duration) {
        let outcome = match result {
            Ok(i) => {
                self.starts.get_or_create(&KindLabels { function: function.into(), kind: i.start.as_str().into() }).inc();
                "ok"
            }
            Err(InvokeError::UnknownFunction(_)) => return,
            Err(InvokeError::Handler(_)) => "handler_error",
            Err(InvokeError::Instance(InstanceError::Timeout(_))) => "timeout",
            Err(InvokeError::Instance(_)) => "instance_died",
            Err(InvokeError::Start { .. } | InvokeError::NoWorker) => "start_failed",
            Err(InvokeError::QueueTimeout { .. }) => "queue_timeout",
            Err(InvokeError::Removed(_)) => "removed",
        };
        self.invocations.get_or_create(&OutcomeLabels { function: function.into(), outcome: outcome.into() }).inc();
        self.latency.get_or_create(&FunctionLabel { function: function.into() }).observe(took.as_secs_f64());
    }

    pub(crate) fn started(&self, function: &str, kind: StartKind, ready_us: u64) {
        let labels = KindLabels { function: function.into(), kind: kind.as_str().into() };
        self.ready.get_or_create(&labels).observe(ready_us as f64 / 1e6);
    }

    /// The text exposition, with the gauges refreshed from `gateway`.
    pub fn render(&self, gateway: &Gateway) -> String {
        self.instances.clear();
        self.instance_memory.clear();
        self.seed_memory.clear();
        for f in gateway.functions() {
            let c = f.counts();
            for (state, n) in [("live", c.live), ("idle", c.idle), ("busy", c.busy), ("starting", c.starting)] {
                let labels = StateLabels { function: f.name.clone(), state: state.into() };
                self.instances.get_or_create(&labels).set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            let m = gateway.memory_of(&f.name);
            let label = FunctionLabel { function: f.name.clone() };
            self.instance_memory.get_or_create(&label).set(i64::try_from(m.instances_bytes).unwrap_or(i64::MAX));
            self.seed_memory.get_or_create(&label).set(i64::try_from(m.seed_bytes).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}
