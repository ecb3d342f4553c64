//! Replays the fuzzers' corpus (`fuzz/corpus/<target>/*`, kept in the
//! repository) through the same code the fuzz targets run
//! (`fuzz/src/decoders.rs`, included here by path), so that the normal test
//! suite exercises every decoder on every input the fuzzers kept, without
//! libFuzzer. Fails if a decoder panics (or a check of the target fails) on
//! any file, and if a target has no corpus at all (it cannot pass vacuously).

#[path = "../../../fuzz/src/decoders.rs"]
mod decoders;

use std::path::{Path, PathBuf};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus")
}

fn files_of(target: &str) -> Vec<PathBuf> {
    let dir = corpus_dir().join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus of fuzz target {target} ({}) cannot be read: {e}", dir.display()))
        .map(|entry| entry.expect("a corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_target_has_a_corpus_and_no_file_fails() {
    let mut failures = Vec::new();
    let mut summary = Vec::new();
    for &(target, run) in decoders::TARGETS {
        let files = files_of(target);
        assert!(!files.is_empty(), "fuzz target {target} has no corpus file in fuzz/corpus/{target}");
        for file in &files {
            let data = std::fs::read(file).expect("a corpus file reads");
            if std::panic::catch_unwind(|| run(&data)).is_err() {
                failures.push(file.display().to_string());
            }
        }
        summary.push(format!("{target}: {}", files.len()));
    }
    eprintln!("corpus files replayed: {}", summary.join(", "));
    assert!(failures.is_empty(), "{} corpus files failed their target's checks:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn every_corpus_directory_is_a_target() {
    // A corpus whose target was renamed or removed would no longer be replayed.
    for entry in std::fs::read_dir(corpus_dir()).expect("fuzz/corpus reads") {
        let name = entry.expect("a corpus entry").file_name().to_string_lossy().into_owned();
        assert!(
            decoders::TARGETS.iter().any(|&(target, _)| target == name),
            "fuzz/corpus/{name} belongs to no fuzz target"
        );
    }
}

/// Inputs at the edges (nothing, all zeros, all ones) pass every target.
#[test]
fn edge_inputs_pass_every_target() {
    for &(_, run) in decoders::TARGETS {
        for input in [&[][..], &[0u8; 64], &[0xff; 64]] {
            run(input);
        }
    }
}
