//! The fuzz corpora (`fuzz/corpus/<target>/`, grown and minimised by
//! cargo-fuzz on nightly) replayed on stable through the same properties
//! the fuzz targets check (`portcullis::fuzzing`), so every input that once
//! found a bug, and every input that reached new code, keeps passing.

use std::path::Path;

use portcullis::fuzzing::{TARGETS, Violation};

/// Runs every file of one target's corpus through its property; names
/// every file that fails.
fn replay(target: &str) {
    let (_, check) = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no fuzz target {target}"));
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs = 0;
    let mut failures: Vec<(String, Violation)> = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        inputs += 1;
        if let Err(v) = check(&data) {
            failures.push((path.display().to_string(), v));
        }
    }
    assert!(inputs > 0, "{} holds no inputs", dir.display());
    assert!(failures.is_empty(), "{target}: {failures:#?}");
}

#[test]
fn every_property_has_a_fuzz_target_and_a_corpus() {
    for (name, _) in TARGETS {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(name);
        assert!(dir.is_dir(), "{} is missing", dir.display());
        let target = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/fuzz_targets")
            .join(format!("{name}.rs"));
        assert!(target.is_file(), "{} is missing", target.display());
    }
}

#[test]
fn jsonrpc_parse_agrees_with_a_second_reader_on_the_corpus() {
    replay("jsonrpc");
}

#[test]
fn sse_decoding_is_the_same_whole_and_cut_on_the_corpus() {
    replay("sse");
}

#[test]
fn tunnel_upgrade_accepts_only_the_tunnel_credential_on_the_corpus() {
    replay("handshake");
}

#[test]
fn rewrites_keep_kind_id_and_method_on_the_corpus() {
    replay("rewrite");
}

#[test]
fn sealed_event_ids_open_only_as_sealed_on_the_corpus() {
    replay("event_id");
}
