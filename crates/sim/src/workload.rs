//! What simulated clients ask for, and how their answers are read back into the history.

use strata_core::Error;
use strata_core::command::Request;
use strata_core::mvcc::Response;
use strata_core::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use strata_core::pb::etcdserverpb::request_op;
use strata_core::pb::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RangeResponse, RequestOp, TxnRequest,
};

use crate::history::{Key, Kv, Op, Outcome, Value};
use strata_core::rng::Rng;

/// The keys clients fight over: few, so operations contend. With `spread`, as many again in
/// the ranges past the meta range (from `x` on), so that writes and reads go to several ranges.
pub fn keys(spread: bool) -> Vec<Key> {
    let meta = (0..5).map(|i| format!("k{i}"));
    let others = (0..5).filter(|_| spread).map(|i| format!("x{i}"));
    meta.chain(others).collect()
}

/// A put or delete whose fate is unknown or that failed is sent again, as applications do, up
/// to this many times (a compare-and-swap is not: it is not idempotent).
const RETRIES_MAX: u32 = 2;

/// One client's memory: the last value it saw per key, which its compare-and-swaps expect, and
/// a request to send again.
#[derive(Default)]
pub struct Client {
    pub id: usize,
    pub sent: u64,
    pub last_seen: std::collections::BTreeMap<Key, Option<Value>>,
    retry: Option<(Op, u32)>,
}

impl Client {
    pub fn new(id: usize) -> Self {
        Self { id, ..Self::default() }
    }

    pub fn next_op(&mut self, rng: &mut Rng, keys: &[Key]) -> Op {
        if let Some((op, _)) = &self.retry {
            return op.clone();
        }
        self.sent += 1;
        let key = rng.pick(keys).clone();
        let value = format!("c{}.{}", self.id, self.sent);
        match rng.range(0, 100) {
            0..30 => Op::Put { key, value },
            30..52 => Op::Get { key, serializable: false },
            52..60 => Op::Get { key, serializable: true },
            60..70 => Op::Delete { key },
            70..92 => {
                let expect = self.last_seen.get(&key).cloned().flatten();
                Op::Cas { key, expect, value }
            }
            _ => Op::Scan,
        }
    }

    /// Remembers what an answered operation showed about the keys, and whether to send it
    /// again.
    pub fn observe(&mut self, op: &Op, outcome: &Outcome) {
        let failed = matches!(outcome, Outcome::Unknown | Outcome::Failed(_));
        let retried = match self.retry.take() {
            Some((previous, attempts)) if previous == *op => attempts,
            _ => 0,
        };
        if failed && matches!(op, Op::Put { .. } | Op::Delete { .. }) && retried < RETRIES_MAX {
            self.retry = Some((op.clone(), retried + 1));
        }
        match (op, outcome) {
            (Op::Put { key, value }, Outcome::Put { .. }) => {
                self.last_seen.insert(key.clone(), Some(value.clone()));
            }
            (Op::Cas { key, value, .. }, Outcome::Cas { succeeded: true, .. }) => {
                self.last_seen.insert(key.clone(), Some(value.clone()));
            }
            (Op::Delete { key }, Outcome::Delete { .. }) => {
                self.last_seen.insert(key.clone(), None);
            }
            (Op::Get { key, .. }, Outcome::Read { kvs, .. }) => {
                let value = kvs.iter().find(|kv| &kv.key == key).map(|kv| kv.value.clone());
                self.last_seen.insert(key.clone(), value);
            }
            _ => {}
        }
    }
}

/// The request a write proposes.
pub fn write_request(op: &Op) -> Option<Request> {
    Some(match op {
        Op::Put { key, value } => Request::Put(PutRequest {
            key: key.clone().into_bytes(),
            value: value.clone().into_bytes(),
            ..Default::default()
        }),
        Op::Delete { key } => Request::DeleteRange(DeleteRangeRequest {
            key: key.clone().into_bytes(),
            ..Default::default()
        }),
        Op::Cas { key, expect, value } => {
            let compare = match expect {
                Some(expected) => Compare {
                    key: key.clone().into_bytes(),
                    target: CompareTarget::Value as i32,
                    result: CompareResult::Equal as i32,
                    target_union: Some(TargetUnion::Value(expected.clone().into_bytes())),
                    ..Default::default()
                },
                None => Compare {
                    key: key.clone().into_bytes(),
                    target: CompareTarget::Version as i32,
                    result: CompareResult::Equal as i32,
                    target_union: Some(TargetUnion::Version(0)),
                    ..Default::default()
                },
            };
            let put = PutRequest {
                key: key.clone().into_bytes(),
                value: value.clone().into_bytes(),
                ..Default::default()
            };
            Request::Txn(TxnRequest {
                compare: vec![compare],
                success: vec![RequestOp { request: Some(request_op::Request::RequestPut(put)) }],
                failure: Vec::new(),
            })
        }
        Op::Get { .. } | Op::Scan => return None,
    })
}

/// The range request a read sends.
pub fn read_request(op: &Op) -> RangeRequest {
    match op {
        Op::Get { key, serializable } => RangeRequest {
            key: key.clone().into_bytes(),
            serializable: *serializable,
            ..Default::default()
        },
        _ => RangeRequest { key: b"k".to_vec(), range_end: b"l".to_vec(), ..Default::default() },
    }
}

pub fn write_outcome(result: Result<Response, Error>) -> Outcome {
    let revision = |header: Option<strata_core::pb::etcdserverpb::ResponseHeader>| {
        header.map_or(0, |h| h.revision)
    };
    match result {
        Ok(Response::Put(r)) => Outcome::Put { revision: revision(r.header) },
        Ok(Response::DeleteRange(r)) => {
            Outcome::Delete { revision: revision(r.header), deleted: r.deleted }
        }
        Ok(Response::Txn(r)) => {
            Outcome::Cas { revision: revision(r.header), succeeded: r.succeeded }
        }
        Ok(other) => Outcome::Failed(format!("unexpected response {other:?}")),
        Err(e) => error_outcome(e),
    }
}

/// What an error says about a request's effect: "leader changed" and "timed out" leave it
/// open, as for etcd's clients; every other error means it had none.
pub fn error_outcome(error: Error) -> Outcome {
    match error {
        Error::LeaderChanged | Error::Timeout => Outcome::Unknown,
        other => Outcome::Failed(other.to_string()),
    }
}

pub fn read_outcome(result: Result<RangeResponse, Error>) -> Outcome {
    match result {
        Ok(r) => Outcome::Read {
            revision: r.header.map_or(0, |h| h.revision),
            kvs: r
                .kvs
                .into_iter()
                .map(|kv| Kv {
                    key: String::from_utf8_lossy(&kv.key).into_owned(),
                    value: String::from_utf8_lossy(&kv.value).into_owned(),
                    create_revision: kv.create_revision,
                    mod_revision: kv.mod_revision,
                    version: kv.version,
                })
                .collect(),
        },
        Err(e) => error_outcome(e),
    }
}
