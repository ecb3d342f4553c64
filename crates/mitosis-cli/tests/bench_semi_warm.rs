//! `mitosis bench faasmem --experiment semi-warm` end to end: a synthetic
//! trace and an absent file on the command line, the JSON on stdout and the
//! files it says it wrote. Needs neither root nor hosts.

#![forbid(unsafe_code)]

use std::process::Command;

use serde_json::Value;

#[test]
fn the_semi_warm_experiment_simulates_each_trace_and_names_the_absent() {
    let out_dir = std::env::temp_dir().join(format!("mitosis-semi-warm-{}", std::process::id()));
    let result = Command::new(env!("CARGO_BIN_EXE_mitosis"))
        .args(["bench", "faasmem", "--experiment", "semi-warm", "--json", "--offload-idle", "30"])
        .arg("--traces")
        .arg("functions=8,rate=0.1,cv=2,seed=1;/nonexistent-mitosis/gone.csv")
        .arg("--out")
        .arg(&out_dir)
        .output()
        .expect("running mitosis bench faasmem");
    let files = [out_dir.join("semi-warm.json"), out_dir.join("semi-warm-cdf.svg")];
    let written: Vec<bool> = files.iter().map(|f| f.is_file()).collect();
    let _ = std::fs::remove_dir_all(&out_dir);
    assert!(result.status.success(), "failed ({}):\n{}", result.status, String::from_utf8_lossy(&result.stderr));
    assert_eq!(written, [true, true]);
    let r: Value = serde_json::from_slice(&result.stdout).expect("JSON on stdout");
    assert_eq!(r["experiment"], "semi-warm");
    assert_eq!(r["absent"][0], "/nonexistent-mitosis/gone.csv");
    let summary = &r["traces"][0]["summary"];
    assert_eq!(summary["functions"], 8);
    let share = summary["share_of_time"].as_f64().unwrap();
    assert!(share > 0.0 && share < 1.0, "{summary}");
    assert!(r["note"].as_str().unwrap().contains("at least 30 s"), "{}", r["note"]);

    // No trace there at all: a clear error and a failing status.
    let none = Command::new(env!("CARGO_BIN_EXE_mitosis"))
        .args(["bench", "faasmem", "--experiment", "semi-warm", "--traces", "/nonexistent-mitosis/gone.csv", "--out"])
        .arg(&out_dir)
        .output()
        .expect("running mitosis bench faasmem");
    let _ = std::fs::remove_dir_all(&out_dir);
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("none of the traces"), "{}", String::from_utf8_lossy(&none.stderr));
}
