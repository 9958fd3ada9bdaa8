//! Golden scenario tests of Raft and replica behaviour, one test per script: each file under
//! `testdata/scenarios/` is a script (see `strata_sim::scenario` for the commands) with what
//! each command printed recorded beneath it. Regenerate after a deliberate change with
//! `UPDATE_GOLDEN=1 cargo test -p strata-sim --test scenarios` and review the diff.

use std::path::{Path, PathBuf};

use strata_sim::scenario::Scenario;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/scenarios")
}

/// Runs one script and compares its output with what it records.
fn run(name: &str) {
    let path = dir().join(format!("{name}.txt"));
    let script = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    let output = Scenario::run_script(&script);
    // A scenario replays exactly: running it twice gives the same output.
    assert_eq!(output, Scenario::run_script(&script), "{name} is not deterministic");
    if output == script {
        return;
    }
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &output).unwrap();
        return;
    }
    let line = (output.lines().zip(script.lines())).position(|(a, b)| a != b);
    let line = line.unwrap_or(output.lines().count().min(script.lines().count()));
    let context: Vec<&str> = output.lines().skip(line.saturating_sub(3)).take(12).collect();
    panic!(
        "{} differs from its recorded output from line {} (UPDATE_GOLDEN=1 to accept, then \
         review the diff); the output there:\n{}",
        path.display(),
        line + 1,
        context.join("\n")
    );
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run(stringify!($name));
            }
        )*

        /// Every script has a test above, so none is silently skipped.
        #[test]
        fn every_script_has_a_test() {
            let listed = [$(stringify!($name)),*];
            let mut found: Vec<String> = std::fs::read_dir(dir())
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "txt"))
                .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
                .collect();
            found.sort();
            let mut listed: Vec<String> = listed.iter().map(|s| s.to_string()).collect();
            listed.sort();
            assert_eq!(found, listed, "scripts in {} and tests in this file", dir().display());
        }
    };
}

scenarios!(
    crash_restart,
    election,
    follower_reads,
    leader_isolated,
    proposal_batching,
    reads,
    remove_leader,
);
