//! Which file the storage engine was reading when opening a store failed.
//!
//! fjall's errors do not say which file they came from, but fjall and its LSM-tree log each
//! file and folder they recover, at debug level, just before reading it. While a store is being
//! opened, this layer remembers the last path they logged; if the open fails, that is where the
//! damage is, except among tables: fjall verifies their blocks only after opening every table of
//! a keyspace, so the server checks those one by one (`strata_storage::damaged_tables`). Outside
//! an open it records nothing.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

static RECORDING: AtomicBool = AtomicBool::new(false);
static LAST_PATH: Mutex<Option<String>> = Mutex::new(None);

/// Runs `open` while recording; returns its result and the last path the engine logged.
pub fn during_open<T>(open: impl FnOnce() -> T) -> (T, Option<String>) {
    *LAST_PATH.lock().expect("trail lock") = None;
    RECORDING.store(true, Ordering::SeqCst);
    let result = open();
    RECORDING.store(false, Ordering::SeqCst);
    (result, LAST_PATH.lock().expect("trail lock").take())
}

/// The recording layer; install it for targets `fjall` and `lsm_tree` at debug level.
pub struct OpenTrail;

impl<S: Subscriber> Layer<S> for OpenTrail {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if !RECORDING.load(Ordering::Relaxed) {
            return;
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        if let Some(path) = path_in(&message.0) {
            *LAST_PATH.lock().expect("trail lock") = Some(path);
        }
    }
}

/// The path a recovery message names (`... from file /x/y`, `... at /x/y`): a word with a
/// slash that exists on disk (messages also hold fragments such as `0/1`).
fn path_in(message: &str) -> Option<String> {
    message
        .split_whitespace()
        .map(|word| word.trim_end_matches([',', '.', ':']).trim_matches('"'))
        .rfind(|word| word.contains('/') && std::path::Path::new(word).exists())
        .map(str::to_string)
}

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_string();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::path_in;

    #[test]
    fn finds_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let table = dir.path().join("tables/3");
        std::fs::create_dir_all(&table).unwrap();
        let table = table.display().to_string();
        assert_eq!(path_in(&format!("Recovering table from file {table}")), Some(table.clone()));
        assert_eq!(path_in(&format!("Recovering LSM-tree at {table}, version 0/1")), Some(table));
        assert_eq!(path_in("Recovered table 0/1"), None);
        assert_eq!(path_in("no path here"), None);
    }
}
