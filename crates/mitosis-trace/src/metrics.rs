//! The gateway's `/metrics` (Prometheus text exposition), read for memory:
//! the sum over functions of `mitosis_instance_memory_bytes` (the cgroup
//! memory of a function's instances) and of `mitosis_seed_memory_bytes`
//! (the seeds held for it), and of the live instances
//! (`mitosis_instances{state="live"}`).

/// The instances' and the seeds' memory, in bytes, and the live instances,
/// summed over functions; and each function's memory (instances and seed).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Memory {
    pub instance_bytes: u64,
    pub seed_bytes: u64,
    pub live_instances: u64,
    pub per_function: std::collections::BTreeMap<String, u64>,
}

/// The value of label `name` in `a="x",b="y"` (no escapes inside values).
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    labels.split(',').find_map(|l| l.trim().strip_prefix(name)?.strip_prefix("=\"")?.strip_suffix('"'))
}

pub const INSTANCE_MEMORY: &str = "mitosis_instance_memory_bytes";
pub const SEED_MEMORY: &str = "mitosis_seed_memory_bytes";
pub const INSTANCES: &str = "mitosis_instances";

/// Sums the two memory gauges (in all and per function) and the live
/// instances over all their label sets; other metrics, comments and lines
/// that do not parse are ignored (a gateway may add metrics).
pub fn parse_memory(text: &str) -> Memory {
    let mut m = Memory::default();
    for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
        // `name{labels} value [timestamp]`, or `name value [timestamp]`.
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => continue,
        };
        let (labels, rest) = match rest.strip_prefix('{') {
            Some(r) => match r.rfind('}') {
                Some(end) => (&r[..end], &r[end + 1..]),
                None => continue,
            },
            None => ("", rest),
        };
        let Some(Ok(value)) = rest.split_whitespace().next().map(str::parse::<f64>) else { continue };
        if !(value.is_finite() && value >= 0.0) {
            continue;
        }
        let sum = match name {
            INSTANCE_MEMORY => &mut m.instance_bytes,
            SEED_MEMORY => &mut m.seed_bytes,
            INSTANCES if label(labels, "state") == Some("live") => &mut m.live_instances,
            _ => continue,
        };
        *sum += value as u64;
        if name != INSTANCES {
            if let Some(f) = label(labels, "function") {
                *m.per_function.entry(f.to_string()).or_default() += value as u64;
            }
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_both_gauges_over_functions() {
        let text = "# HELP mitosis_instance_memory_bytes x\n# TYPE mitosis_instance_memory_bytes gauge\n\
            mitosis_instance_memory_bytes{function=\"json\"} 1000\n\
            mitosis_instance_memory_bytes{function=\"a}b\"} 2e3 1700000000\n\
            mitosis_seed_memory_bytes{function=\"json\"} 500\n\
            mitosis_seed_memory_bytes 7\n\
            mitosis_instance_memory_bytes_total{function=\"json\"} 99\n\
            mitosis_requests_total{function=\"json\"} 12\nbroken\n\
            mitosis_instances{function=\"json\",state=\"live\"} 3\n\
            mitosis_instances{function=\"json\",state=\"idle\"} 2\n\
            mitosis_instances{function=\"gzip\",state=\"live\"} 1\n";
        let m = parse_memory(text);
        assert_eq!((m.instance_bytes, m.seed_bytes, m.live_instances), (3000, 507, 4));
        // "a}b" has a brace in its value: the parser takes the last one, and
        // the label's value stops at the first quote it may.
        assert_eq!(m.per_function.get("json"), Some(&1500));
    }
}
