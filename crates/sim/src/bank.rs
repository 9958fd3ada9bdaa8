//! Bank clients, and their checker: transfers between accounts in two ranges by transactions
//! across ranges (two-phase commit, run by the core's coordinator on the node a client
//! reaches), and audits that read every account in one snapshot across both ranges.
//!
//! The accounts lie in the meta range (`lz0`, `lz1`) and in range 2 (`m0`, `m1`), and no other
//! client's key lies between them, so one read of `["lz0", "m2")` is every account. What must hold: every
//! audit that is answered finds either no account (before the first opening committed) or all
//! of them with the whole total — no transfer half done, no money made or lost — whatever the
//! faults; and at the end, once the faults stopped, a final audit does, and no lock is left.

use strata_core::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use strata_core::pb::etcdserverpb::request_op::Request as OpRequest;
use strata_core::pb::etcdserverpb::response_op::Response as OpResponse;
use strata_core::pb::etcdserverpb::{
    Compare, PutRequest, RangeRequest, RequestOp, TxnRequest, TxnResponse,
};
use strata_core::pb::mvccpb::KeyValue;

use strata_core::rng::Rng;

pub const ACCOUNTS: [&str; 4] = ["lz0", "lz1", "m0", "m1"];
pub const OPENING: u64 = 100;
pub const TOTAL: u64 = OPENING * ACCOUNTS.len() as u64;

/// Every account, in one read.
pub fn audit_request() -> RangeRequest {
    RangeRequest { key: b"lz0".to_vec(), range_end: b"m2".to_vec(), ..Default::default() }
}

/// What a bank client does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BankOp {
    /// Puts the opening balance in every account, unless the first exists.
    Open,
    /// Moves `amount` from one account to another (always across the two ranges), if both
    /// hold what the client last saw.
    Transfer {
        from: usize,
        to: usize,
        amount: u64,
    },
    Audit,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub transfers: u64,
    /// Transfers whose comparisons failed (stale balances), or that ended in an error.
    pub refused: u64,
    pub unknown: u64,
    pub audits: u64,
    /// Audits that could not be served (a lock in the way, a timeout).
    pub audits_failed: u64,
    pub resolved: u64,
}

impl Counts {
    pub fn add(&mut self, other: &Counts) {
        self.transfers += other.transfers;
        self.refused += other.refused;
        self.unknown += other.unknown;
        self.audits += other.audits;
        self.audits_failed += other.audits_failed;
        self.resolved += other.resolved;
    }
}

pub struct Bank {
    rng: Rng,
    /// Per client, the balances it last saw (`None`: unknown).
    known: Vec<[Option<u64>; 4]>,
    opened: Vec<bool>,
    pub counts: Counts,
    pub violations: Vec<String>,
}

impl Bank {
    pub fn new(rng: Rng, clients: usize) -> Self {
        Self {
            rng,
            known: vec![[None; 4]; clients],
            opened: vec![false; clients],
            counts: Counts::default(),
            violations: Vec::new(),
        }
    }

    pub fn clients(&self) -> usize {
        self.known.len()
    }

    pub fn next_op(&mut self, client: usize) -> BankOp {
        if !self.opened[client] {
            return BankOp::Open;
        }
        if self.rng.chance(0.3) {
            return BankOp::Audit;
        }
        let from = self.rng.range(0, 4) as usize;
        let to = (from + 2 + self.rng.range(0, 2) as usize) % 4; // in the other range
        BankOp::Transfer { from, to, amount: self.rng.range(1, 20) }
    }

    /// The transaction of a bank operation (not an audit).
    pub fn txn(&self, client: usize, op: &BankOp) -> TxnRequest {
        match op {
            BankOp::Open => TxnRequest {
                compare: vec![Compare {
                    key: ACCOUNTS[0].into(),
                    target: CompareTarget::Create as i32,
                    result: CompareResult::Equal as i32,
                    target_union: Some(TargetUnion::CreateRevision(0)),
                    ..Default::default()
                }],
                success: (0..4).map(|i| put(i, OPENING)).collect(),
                failure: vec![read_all()],
            },
            BankOp::Transfer { from, to, amount } => {
                let (a, b) = (self.balance(client, *from), self.balance(client, *to));
                TxnRequest {
                    compare: vec![value_is(*from, a), value_is(*to, b)],
                    success: match a >= *amount {
                        true => vec![put(*from, a - amount), put(*to, b + amount)],
                        false => vec![read_all()],
                    },
                    failure: vec![read_all()],
                }
            }
            BankOp::Audit => unreachable!("an audit is a read"),
        }
    }

    fn balance(&self, client: usize, account: usize) -> u64 {
        self.known[client][account].unwrap_or(OPENING)
    }

    /// A bank transaction ended: the client learns the balances it wrote or read.
    pub fn done(
        &mut self,
        client: usize,
        op: &BankOp,
        outcome: Option<Result<TxnResponse, String>>,
    ) {
        let response = match outcome {
            Some(Ok(response)) => response,
            Some(Err(_)) => {
                self.counts.refused += 1;
                return;
            }
            None => {
                // Timed out, or its node stopped: it may have committed.
                self.counts.unknown += 1;
                self.known[client] = [None; 4];
                return;
            }
        };
        if *op == BankOp::Open {
            self.opened[client] = true;
        }
        match (op, response.succeeded) {
            (BankOp::Transfer { from, to, amount }, true) => {
                let (a, b) = (self.balance(client, *from), self.balance(client, *to));
                if a >= *amount {
                    self.counts.transfers += 1;
                    self.known[client][*from] = Some(a - amount);
                    self.known[client][*to] = Some(b + amount);
                    return;
                }
            }
            (BankOp::Open, true) => {
                self.known[client] = [Some(OPENING); 4];
                return;
            }
            _ => self.counts.refused += 1,
        }
        for op in &response.responses {
            if let Some(OpResponse::ResponseRange(range)) = &op.response {
                self.learn(client, &range.kvs);
            }
        }
    }

    fn learn(&mut self, client: usize, kvs: &[KeyValue]) {
        for kv in kvs {
            if let Some(i) = ACCOUNTS.iter().position(|name| name.as_bytes() == kv.key) {
                self.known[client][i] =
                    std::str::from_utf8(&kv.value).ok().and_then(|v| v.parse().ok());
            }
        }
    }

    /// An audit's answer, at revision `at` (`what` names it in a violation).
    pub fn audited(&mut self, client: Option<usize>, kvs: &[KeyValue], at: i64, what: &str) {
        self.counts.audits += 1;
        let balances: Vec<(String, Option<u64>)> = (kvs.iter())
            .map(|kv| {
                let key = String::from_utf8_lossy(&kv.key).into_owned();
                (key, std::str::from_utf8(&kv.value).ok().and_then(|v| v.parse().ok()))
            })
            .collect();
        let sum: Option<u64> = balances.iter().map(|(_, b)| *b).sum();
        let whole = kvs.is_empty() || (kvs.len() == ACCOUNTS.len() && sum == Some(TOTAL));
        if !whole && self.violations.len() < 5 {
            self.violations.push(format!(
                "bank: {what} at revision {at} found {balances:?}, not the whole total of {TOTAL}"
            ));
        }
        if let Some(client) = client {
            self.learn(client, kvs);
        }
    }
}

fn put(account: usize, balance: u64) -> RequestOp {
    let put = PutRequest {
        key: ACCOUNTS[account].into(),
        value: balance.to_string().into_bytes(),
        ..Default::default()
    };
    RequestOp { request: Some(OpRequest::RequestPut(put)) }
}

fn read_all() -> RequestOp {
    RequestOp { request: Some(OpRequest::RequestRange(audit_request())) }
}

fn value_is(account: usize, balance: u64) -> Compare {
    Compare {
        key: ACCOUNTS[account].into(),
        target: CompareTarget::Value as i32,
        result: CompareResult::Equal as i32,
        target_union: Some(TargetUnion::Value(balance.to_string().into_bytes())),
        ..Default::default()
    }
}
