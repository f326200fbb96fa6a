//! The fuzz corpora replayed on stable: every committed input in fuzz/corpus/<target>/
//! runs through its cargo-fuzz target's body (fuzz/bodies/<target>.rs, the very code the
//! fuzz targets call), so `cargo test` checks the regressions the fuzzer found without a
//! nightly toolchain. Live fuzzing stays in scripts/fuzz.sh.
//!
//! Ports: 12700-12999 (the fuzz suite's range: registry_file 12700-12763, c_api_sequence
//! 12800-12863 and probes 12900-12963), below the kernel's ephemeral range.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

#[path = "../fuzz/bodies/c_api_sequence.rs"]
mod c_api_sequence;
#[path = "../fuzz/bodies/natpmp_reply.rs"]
mod natpmp_reply;
#[path = "../fuzz/bodies/range_parse.rs"]
mod range_parse;
#[path = "../fuzz/bodies/registry_file.rs"]
mod registry_file;

/// Every fuzz target with its body: a corpus directory without an entry here fails
/// `every_corpus_has_a_replay`.
/// A fuzz target's name and body.
type Target = (&'static str, fn(&[u8]));

const TARGETS: &[Target] = &[
    ("range_parse", range_parse::run),
    ("registry_file", registry_file::run),
    ("c_api_sequence", c_api_sequence::run),
    ("natpmp_reply", natpmp_reply::run),
];

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

/// The input files of `target`'s corpus, sorted (hidden files skipped).
fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = corpus_root().join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    files
}

/// Run every input of `target`'s corpus through `run`; fail with the names of the inputs
/// that panicked, and unless every file ran.
fn replay(target: &str, run: fn(&[u8])) {
    let files = corpus(target);
    assert!(!files.is_empty(), "fuzz/corpus/{target} has no inputs");
    let mut ran = 0;
    let mut failed = Vec::new();
    for f in &files {
        let data = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        match catch_unwind(AssertUnwindSafe(|| run(&data))) {
            Ok(()) => {}
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| e.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
                failed.push(format!("{}: {msg}", f.display()));
            }
        }
        ran += 1;
    }
    eprintln!("RESULT fuzz_replay {target}: inputs={} ran={ran} failed={}", files.len(), failed.len());
    assert!(failed.is_empty(), "{target}: {} of {} corpus inputs failed:\n{}", failed.len(), files.len(), failed.join("\n"));
    assert_eq!(ran, files.len(), "{target}: not every corpus input ran");
}

fn body_of(target: &str) -> fn(&[u8]) {
    TARGETS.iter().find(|(t, _)| *t == target).unwrap().1
}

#[test]
fn natpmp_reply_corpus() {
    replay("natpmp_reply", body_of("natpmp_reply"));
}

#[test]
fn range_parse_corpus() {
    replay("range_parse", body_of("range_parse"));
}

#[test]
fn registry_file_corpus() {
    replay("registry_file", body_of("registry_file"));
    registry_file::cleanup();
}

#[test]
fn c_api_sequence_corpus() {
    replay("c_api_sequence", body_of("c_api_sequence"));
    c_api_sequence::cleanup();
}

#[test]
fn every_corpus_has_a_replay() {
    let mut dirs: Vec<String> = std::fs::read_dir(corpus_root())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut known: Vec<String> = TARGETS.iter().map(|(t, _)| t.to_string()).collect();
    known.sort();
    assert_eq!(dirs, known, "fuzz/corpus/ and the replayed targets differ");
    // Every target the fuzz crate builds has a body here, too.
    let manifest = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/Cargo.toml")).unwrap();
    let mut bins: Vec<String> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .map(|n| n.trim_end_matches('"').to_string())
        .filter(|n| n != "portmgr-fuzz")
        .collect();
    bins.sort();
    assert_eq!(bins, known, "fuzz/Cargo.toml's targets and the replayed targets differ");
}
