//! Replays every committed fuzz input (`fuzz/corpus/<target>/*`) through its target's
//! property check, so what the fuzzers found stays checked on stable, in CI, without them.

use std::path::{Path, PathBuf};

use stowage_proofs::props::TARGETS;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

#[test]
fn every_corpus_input_passes_its_property() {
    let mut failures = Vec::new();
    for (target, check) in TARGETS {
        let dir = corpus_dir(target);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus {} is missing: {e}", dir.display()));
        let mut inputs = 0;
        for entry in entries {
            let path = entry.expect("a readable corpus folder").path();
            let data = std::fs::read(&path).expect("a readable corpus file");
            inputs += 1;
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                failures.push(path.display().to_string());
            }
        }
        assert!(inputs > 0, "corpus {} is empty", dir.display());
    }
    assert!(
        failures.is_empty(),
        "inputs breaking their property:\n{}",
        failures.join("\n")
    );
}
