//! Reads at every revision of keys with long histories: a range must see, for each key, exactly
//! the version current at the revision read — however many versions the key has (reads seek past
//! long histories instead of reading them all).

mod support;

use std::collections::BTreeMap;

use strata_core::command::Request;
use strata_core::mvcc::read;
use strata_core::pb::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest};
use support::Store;

#[test]
fn ranges_at_every_revision_match_the_history() {
    let mut store = Store::new();
    // What each key held after each revision, written down as the writes happen.
    let mut expected: Vec<BTreeMap<String, String>> = vec![BTreeMap::new(); 2];
    let mut current = BTreeMap::new();
    let mut write = |request: Request, current: &BTreeMap<String, String>| {
        store.apply(request);
        let revision = store.state.revision as usize;
        expected.resize(revision + 1, current.clone());
        expected[revision] = current.clone();
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
    let state = store.state;
    for revision in 1..=state.revision {
        for (key, range_end) in [("a", "d"), ("a", ""), ("c", ""), ("b", "c")] {
            let request = RangeRequest {
                key: key.into(),
                range_end: range_end.into(),
                revision,
                ..Default::default()
            };
            // Through the key index, as a member serves it, and from the engine alone.
            let response = read::range(&store.indexed(), &state, &request).unwrap();
            assert_eq!(response, read::range(&store.plain(), &state, &request).unwrap());
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
