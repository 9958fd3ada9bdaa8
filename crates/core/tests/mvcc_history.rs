//! Reads at every revision of keys with long histories: a range must see, for each key, exactly
//! the version current at the revision read — however many versions the key has (reads seek past
//! long histories instead of reading them all).

use std::collections::BTreeMap;
use std::sync::RwLock;

use strata_core::command::Request;
use strata_core::mvcc::memo::Memo;
use strata_core::mvcc::view::View;
use strata_core::mvcc::{AppliedState, Applier, read};
use strata_core::pb::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest};
use strata_storage::{Durability, Engine, MemEngine};

#[test]
fn ranges_at_every_revision_match_the_history() {
    let engine = MemEngine::new();
    let mut state = AppliedState::initial();
    // What each key held after each revision, written down as the writes happen.
    let mut expected: Vec<BTreeMap<String, String>> = vec![BTreeMap::new(); 2];
    let mut current = BTreeMap::new();
    let mut index = 0;
    // Carried between requests as a replica does (debug builds check it against the store).
    let memo = RwLock::new(Memo::default());
    let mut write = |request: Request, current: &BTreeMap<String, String>| {
        index += 1;
        let mut applier = Applier::with_memo(&engine, 1, state, &memo);
        applier.mark_applied(index, 1);
        applier.apply(&request).unwrap();
        let (batch, new_state) = applier.finish();
        engine.write(&batch, Durability::Buffered).unwrap();
        state = new_state;
        expected.resize(state.revision as usize + 1, current.clone());
        expected[state.revision as usize] = current.clone();
    };
    let put = |key: &str, value: String| {
        Request::Put(PutRequest {
            key: key.into(),
            value: value.into_bytes(),
            ..Default::default()
        })
    };
    for round in 0..40 {
        // "a" is written every round, "c" every other round and deleted now and then, "b" once.
        current.insert("a".to_string(), format!("a{round}"));
        write(put("a", format!("a{round}")), &current);
        if round == 3 {
            current.insert("b".to_string(), "b".to_string());
            write(put("b", "b".to_string()), &current);
        }
        if round % 2 == 0 {
            current.insert("c".to_string(), format!("c{round}"));
            write(put("c", format!("c{round}")), &current);
        }
        if round % 13 == 12 {
            current.remove("c");
            let delete = DeleteRangeRequest { key: b"c".to_vec(), ..Default::default() };
            write(Request::DeleteRange(delete), &current);
        }
    }
    let view = View::new(&engine as &dyn Engine);
    for revision in 1..=state.revision {
        for (key, range_end) in [("a", "d"), ("a", ""), ("c", ""), ("b", "c")] {
            let request = RangeRequest {
                key: key.into(),
                range_end: range_end.into(),
                revision,
                ..Default::default()
            };
            let response = read::range(&view, &state, &request).unwrap();
            let found: BTreeMap<String, String> = response
                .kvs
                .iter()
                .map(|kv| {
                    (
                        String::from_utf8(kv.key.clone()).unwrap(),
                        String::from_utf8(kv.value.clone()).unwrap(),
                    )
                })
                .collect();
            let want: BTreeMap<String, String> = expected[revision as usize]
                .iter()
                .filter(|(k, _)| {
                    k.as_str() == key
                        || (!range_end.is_empty() && k.as_str() >= key && k.as_str() < range_end)
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            assert_eq!(found, want, "range [{key}, {range_end}) at revision {revision}");
        }
    }
}
