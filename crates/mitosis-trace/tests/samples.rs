//! The parsers and schedules on the real Azure samples in `../shared/traces`
//! (relative to the repository; skipped where they are absent).

use std::path::PathBuf;
use std::time::Duration;

use mitosis_testkit::TestDir;
use mitosis_trace::formats::{self, Format, TraceError};
use mitosis_trace::schedule::{FunctionMap, Schedule, ScheduleOptions};

fn samples() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/traces");
    if dir.join("azure2021-first200.csv").is_file() && dir.join("azure2019-sample-invocations.csv").is_file() {
        Some(dir)
    } else {
        mitosis_testkit::skip(format!("no trace samples in {}", dir.display()));
        None
    }
}

#[test]
fn azure2021_sample() {
    let Some(dir) = samples() else { return };
    let trace = formats::load(&dir.join("azure2021-first200.csv"), Format::Azure2021, 0).unwrap();
    // 199 rows (the traces README says 198; the file has 199 after its header).
    assert_eq!(trace.invocations.len(), 199);
    let mut functions: Vec<&str> = trace.invocations.iter().map(|i| i.function.as_str()).collect();
    functions.sort();
    functions.dedup();
    assert_eq!(functions.len(), 31);
    assert!(trace.invocations.iter().all(|i| i.start_s >= 0.0 && i.duration_s.is_some()));
    // The first row: ends at 0.0795 after 0.078 s.
    let first = &trace.invocations[0];
    assert!(first.function.starts_with("e3cdb488") && (first.start_s - 0.0015).abs() < 1e-3, "{first:?}");

    // By rank onto two suite functions: the two most invoked of the window, the rest dropped.
    let map = FunctionMap::parse("helloworld,json").unwrap();
    let end = trace.invocations.iter().map(|i| i.start_s).fold(0.0, f64::max);
    let window = Duration::from_secs_f64(end + 1.0);
    let s = Schedule::build(&trace, &ScheduleOptions { map, ..ScheduleOptions::new(window) }).unwrap();
    assert_eq!(s.ranking.len(), 31);
    assert!(s.ranking.windows(2).all(|w| w[0].invocations >= w[1].invocations));
    let top2 = s.ranking[0].invocations + s.ranking[1].invocations;
    assert_eq!(s.invocations.len(), top2);
    assert_eq!(s.invocations.iter().filter(|i| i.function == "helloworld").count(), s.ranking[0].invocations);
    assert!(s.invocations.iter().all(|i| i.at < window));

    // Half the window at twice the rate is the same requests, twice as dense.
    let map = FunctionMap::parse("helloworld,json").unwrap();
    let fast = Schedule::build(&trace, &ScheduleOptions { scale: 2.0, map, ..ScheduleOptions::new(window / 2) }).unwrap();
    assert_eq!(fast.invocations.len(), s.invocations.len());
    for (a, b) in fast.invocations.iter().zip(&s.invocations) {
        assert!((a.at.as_secs_f64() * 2.0 - b.at.as_secs_f64()).abs() < 1e-6);
    }
}

#[test]
fn azure2019_sample() {
    let Some(dir) = samples() else { return };
    let path = dir.join("azure2019-sample-invocations.csv");
    let trace = formats::load(&path, Format::Azure2019, 1).unwrap();
    // The row sums of the sample: 1150 + 3 x 1125.
    assert_eq!(trace.invocations.len(), 4525);
    assert!(trace.invocations.iter().all(|i| (0.0..86400.0).contains(&i.start_s) && i.duration_s.is_none()));
    assert_eq!(formats::load(&path, Format::Azure2019, 1).unwrap().invocations, trace.invocations, "same seed, same trace");
    assert_ne!(formats::load(&path, Format::Azure2019, 2).unwrap().invocations, trace.invocations);
    // The first hour, explicit pair by a prefix of the timer function's hash.
    let map = FunctionMap::parse("ae8a1640=helloworld").unwrap();
    let s = Schedule::build(&trace, &ScheduleOptions { map, ..ScheduleOptions::new(Duration::from_secs(3600)) }).unwrap();
    assert!(!s.invocations.is_empty());
    assert!(s.invocations.iter().all(|i| i.function == "helloworld" && i.trace_function.starts_with("ae8a1640")));
}

#[test]
fn malformed_samples_name_the_line() {
    let Some(dir) = samples() else { return };
    let tmp = TestDir::new("trace-malformed");
    let text = std::fs::read_to_string(dir.join("azure2021-first200.csv")).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[5] = "app,func,soon,0.1";
    let bad = tmp.path().join("bad2021.csv");
    std::fs::write(&bad, lines.join("\n")).unwrap();
    let e = formats::load(&bad, Format::Azure2021, 0).unwrap_err();
    assert!(matches!(e, TraceError::Malformed { line: 6, .. }), "{e}");
    assert!(e.to_string().contains("bad2021.csv:6: end_timestamp \"soon\""), "{e}");

    let text = std::fs::read_to_string(dir.join("azure2019-sample-invocations.csv")).unwrap();
    let truncated: String = text.lines().take(3).map(|l| format!("{l}\n")).collect::<String>() + "o,a,f,http,1,2\n";
    let bad = tmp.path().join("bad2019.csv");
    std::fs::write(&bad, truncated).unwrap();
    let e = formats::load(&bad, Format::Azure2019, 0).unwrap_err();
    assert!(matches!(e, TraceError::Malformed { line: 4, .. }), "{e}");

    let e = formats::load(&tmp.path().join("absent.csv"), Format::Azure2021, 0).unwrap_err();
    assert!(e.is_missing());
}

#[test]
fn semi_warm_over_the_azure2019_sample_is_weighted_by_its_memory_file() {
    use mitosis_trace::keepalive::{simulate, KeepAlive, Summary};
    let Some(dir) = samples() else { return };
    let trace = formats::load(&dir.join("azure2019-sample-invocations.csv"), Format::Azure2019, 7).unwrap();
    let memory = formats::azure2019::parse_function_memory(&std::fs::read_to_string(dir.join("azure2019-sample-memory.csv")).unwrap()).unwrap();
    let functions = simulate(&trace, KeepAlive::default(), 86_400.0);
    assert_eq!(functions.len(), 4);
    assert!(functions.iter().all(|f| memory.contains_key(&f.function)), "every function of the sample has its memory");
    let s = Summary::of(&functions, &memory);
    assert_eq!(s.invocations as usize, trace.invocations.len());
    let by_memory = s.share_of_memory_time.expect("weighted");
    assert!((0.0..1.0).contains(&by_memory) && (0.0..1.0).contains(&s.share_of_time), "{s:?}");
    // Idle time is bounded by the instances' lives within the day.
    assert!(s.idle_hours > 0.0 && s.idle_hours <= s.instances as f64 * 24.0, "{s:?}");
}
