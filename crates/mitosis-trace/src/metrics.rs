//! The gateway's `/metrics` (Prometheus text exposition), read for memory:
//! the sum over functions of `mitosis_instance_memory_bytes` (the cgroup
//! memory of a function's instances) and of `mitosis_seed_memory_bytes`
//! (the seeds held for it), and of the live instances
//! (`mitosis_instances{state="live"}`).

/// The instances' and the seeds' memory, in bytes, and the live instances,
/// summed over functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Memory {
    pub instance_bytes: u64,
    pub seed_bytes: u64,
    pub live_instances: u64,
}

pub const INSTANCE_MEMORY: &str = "mitosis_instance_memory_bytes";
pub const SEED_MEMORY: &str = "mitosis_seed_memory_bytes";
pub const INSTANCES: &str = "mitosis_instances";

/// Sums the two gauges over all their label sets; other metrics, comments
/// and lines that do not parse are ignored (a gateway may add metrics).
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
        match name {
            INSTANCE_MEMORY => m.instance_bytes += value as u64,
            SEED_MEMORY => m.seed_bytes += value as u64,
            INSTANCES if labels.split(',').any(|l| l.trim() == "state=\"live\"") => m.live_instances += value as u64,
            _ => {}
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
        assert_eq!(parse_memory(text), Memory { instance_bytes: 3000, seed_bytes: 507, live_instances: 4 });
    }
}
