//! Replays the committed fuzzing corpus (`fuzz/corpus/<target>/`) through the same entry points
//! the cargo-fuzz targets call, on the stable compiler, so every input the fuzzer ever kept —
//! and every crash it found, once added to the corpus — is checked on every test run.

use std::path::Path;

#[test]
fn the_fuzzing_corpus_runs_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    for (target, run) in tally::fuzzing::TARGETS {
        let dir = root.join(target);
        let mut inputs = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            // A fuzzer running beside the tests replaces corpus files as it goes.
            let Ok(data) = std::fs::read(&path) else { continue };
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{target} panics on {}", path.display());
            inputs += 1;
        }
        assert!(inputs > 0, "no corpus for {target}");
    }
}
