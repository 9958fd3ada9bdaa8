//! Golden scenario tests of Raft and replica behaviour: each file under
//! `testdata/scenarios/` is a script (see `strata_sim::scenario` for the commands) with what
//! each command printed recorded beneath it. Regenerate after a deliberate change with
//! `UPDATE_GOLDEN=1 cargo test -p strata-sim --test scenarios` and review the diff.

use std::path::Path;

use strata_sim::scenario::Scenario;

#[test]
fn scenarios_match_their_recorded_output() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/scenarios");
    let mut paths: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    assert!(paths.len() >= 4, "expected scenario files in {}", dir.display());
    let mut differing = Vec::new();
    for path in paths {
        let script = std::fs::read_to_string(&path).unwrap();
        let output = Scenario::run_script(&script);
        // A scenario replays exactly: running it twice gives the same output.
        assert_eq!(
            output,
            Scenario::run_script(&script),
            "{} is not deterministic",
            path.display()
        );
        if output != script {
            if update {
                std::fs::write(&path, &output).unwrap();
            } else {
                differing.push(format!("--- {}\n{output}", path.display()));
            }
        }
    }
    assert!(
        differing.is_empty(),
        "golden files differ (UPDATE_GOLDEN=1 to accept):\n{}",
        differing.join("\n")
    );
}
