//! The Azure Functions 2019 invocation counts: a CSV with the header
//! `HashOwner,HashApp,HashFunction,Trigger,1,2,...,1440`, one row per
//! function and day, column `m` holding the invocations in minute `m`
//! (1-based) of the day.
//!
//! Counts say nothing of where in its minute an invocation fell: each one
//! is placed uniformly at random in its minute, `[60(m-1), 60m)` seconds,
//! by a generator seeded with the caller's seed (the same file and seed
//! give the same trace with the same build). A function is named by its
//! `HashFunction`; the trace has no execution times.

use rand::{Rng, SeedableRng};

use std::collections::HashMap;

use super::{csv_rows, number, RowError, Trace, TraceInvocation};

const HEADER: [&str; 4] = ["HashOwner", "HashApp", "HashFunction", "Trigger"];
const MINUTES: usize = 1440;

/// Parses the whole text of a 2019 invocations file.
pub fn parse(text: &str, seed: u64) -> Result<Trace, RowError> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut invocations = Vec::new();
    for (line, fields) in csv_rows(text, &HEADER)? {
        if fields.len() != HEADER.len() + MINUTES {
            return Err(RowError { line, message: format!("{} fields where 4 hashes and triggers and 1440 minutes are 1444", fields.len()) });
        }
        let function = fields[2];
        if function.is_empty() {
            return Err(RowError { line, message: "empty HashFunction".into() });
        }
        for (minute, field) in fields[HEADER.len()..].iter().enumerate() {
            let count: u64 = field
                .parse()
                .map_err(|_| RowError { line, message: format!("minute {} count {field:?} is not a whole number", minute + 1) })?;
            let minute_start = 60.0 * minute as f64;
            for _ in 0..count {
                invocations.push(TraceInvocation {
                    start_s: minute_start + rng.random_range(0.0..60.0),
                    function: function.to_string(),
                    duration_s: None,
                });
            }
        }
    }
    Ok(Trace { invocations })
}

const MEMORY_HEADER: [&str; 5] = ["HashOwner", "HashApp", "HashFunction", "SampleCount", "AverageAllocatedMb"];

/// Parses a 2019 memory file with a `HashFunction` column (the samples'
/// `azure2019-sample-memory.csv`; the full dataset's per-app files have
/// none): each function's average allocated memory, MB. A function listed
/// twice keeps its last row.
pub fn parse_function_memory(text: &str) -> Result<HashMap<String, f64>, RowError> {
    let mut memory = HashMap::new();
    for (line, fields) in csv_rows(text, &MEMORY_HEADER)? {
        if fields.len() < MEMORY_HEADER.len() {
            return Err(RowError { line, message: format!("{} fields where at least {} are needed", fields.len(), MEMORY_HEADER.len()) });
        }
        if fields[2].is_empty() {
            return Err(RowError { line, message: "empty HashFunction".into() });
        }
        memory.insert(fields[2].to_string(), number(line, "AverageAllocatedMb", fields[4])?);
    }
    Ok(memory)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(counts: &[(usize, u64)]) -> String {
        let mut minutes = vec![0u64; MINUTES];
        for &(m, c) in counts {
            minutes[m - 1] = c;
        }
        let header: Vec<String> = HEADER.iter().map(|s| s.to_string()).chain((1..=MINUTES).map(|m| m.to_string())).collect();
        let minutes: Vec<String> = minutes.iter().map(|c| c.to_string()).collect();
        format!("{}\no,a,f,http,{}\n", header.join(","), minutes.join(","))
    }

    #[test]
    fn counts_are_spread_in_their_minute() {
        let t = parse(&row(&[(1, 3), (1440, 2)]), 7).unwrap();
        assert_eq!(t.invocations.len(), 5);
        assert!(t.invocations[..3].iter().all(|i| (0.0..60.0).contains(&i.start_s)));
        assert!(t.invocations[3..].iter().all(|i| (86340.0..86400.0).contains(&i.start_s)));
        assert_eq!(parse(&row(&[(1, 3), (1440, 2)]), 7).unwrap().invocations, t.invocations, "same seed, same trace");
    }

    #[test]
    fn malformed_rows_name_their_line() {
        let bad = row(&[]).replacen(",0,", ",x,", 1);
        let e = parse(&bad, 0).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("minute 1 "), "{e}");
        assert_eq!(parse("HashOwner,HashApp,HashFunction,Trigger,1\no,a,f,http,1\n", 0).unwrap_err().line, 2);
    }

    #[test]
    fn function_memory_is_the_average_by_function() {
        let text = "HashOwner,HashApp,HashFunction,SampleCount,AverageAllocatedMb,AverageAllocatedMb_pct1\no,a,f1,10,120.0,100\no,a,f2,3,64,60\n";
        let m = parse_function_memory(text).unwrap();
        assert_eq!((m["f1"], m["f2"], m.len()), (120.0, 64.0, 2));
        assert_eq!(parse_function_memory("HashOwner,HashApp,HashFunction,SampleCount,AverageAllocatedMb\no,a,f,1,-3\n").unwrap_err().line, 2);
        assert_eq!(parse_function_memory("HashOwner,HashApp,SampleCount\n").unwrap_err().line, 1);
    }
}
