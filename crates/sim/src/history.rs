//! What simulated clients did and saw: one [`Operation`] per request, with the simulated times
//! it was invoked and answered. A request that timed out, or failed in a way that leaves its
//! fate open, has an unknown outcome: it may take effect at any later time, or never.

use std::fmt;

/// Keys and values are short strings so histories print readably.
pub type Key = String;
pub type Value = String;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put {
        key: Key,
        value: Value,
    },
    Delete {
        key: Key,
    },
    Get {
        key: Key,
        serializable: bool,
    },
    /// A transaction: if `key` holds `expect` (`None`: the key is absent), put `value`.
    Cas {
        key: Key,
        expect: Option<Value>,
        value: Value,
    },
    /// A linearizable read of every workload key at once (a prefix range).
    Scan,
}

impl Op {
    /// The key the operation concerns (a scan: where it starts).
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. }
            | Op::Delete { key }
            | Op::Get { key, .. }
            | Op::Cas { key, .. } => key,
            Op::Scan => "k",
        }
    }

    pub fn is_write(&self) -> bool {
        matches!(self, Op::Put { .. } | Op::Delete { .. } | Op::Cas { .. })
    }

    /// Whether the operation claims linearizability (serializable reads do not).
    pub fn is_linearizable(&self) -> bool {
        !matches!(self, Op::Get { serializable: true, .. })
    }
}

/// A key as a read returned it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kv {
    pub key: Key,
    pub value: Value,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not answered yet.
    Pending,
    /// Timed out, or failed in a way that leaves open whether it took effect.
    Unknown,
    /// Definitely had no effect.
    Failed(String),
    Put {
        revision: i64,
    },
    Delete {
        revision: i64,
        deleted: i64,
    },
    Cas {
        revision: i64,
        succeeded: bool,
    },
    /// A read's result: the header revision and the keys found.
    Read {
        revision: i64,
        kvs: Vec<Kv>,
    },
}

impl Outcome {
    /// The response header's revision, when the request was answered.
    pub fn revision(&self) -> Option<i64> {
        match self {
            Outcome::Put { revision }
            | Outcome::Delete { revision, .. }
            | Outcome::Cas { revision, .. }
            | Outcome::Read { revision, .. } => Some(*revision),
            Outcome::Pending | Outcome::Unknown | Outcome::Failed(_) => None,
        }
    }

    /// Whether this write changed the store (and so owns its header revision).
    pub fn changed_store(&self) -> bool {
        match self {
            Outcome::Put { .. } => true,
            Outcome::Delete { deleted, .. } => *deleted > 0,
            Outcome::Cas { succeeded, .. } => *succeeded,
            _ => false,
        }
    }
}

/// One request of one client.
#[derive(Clone, Debug)]
pub struct Operation {
    pub id: usize,
    pub client: usize,
    /// The node the request was sent to.
    pub node: u64,
    pub op: Op,
    /// Simulated microseconds.
    pub invoked: u64,
    pub completed: Option<u64>,
    pub outcome: Outcome,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let done = self.completed.map_or("?".to_string(), |t| t.to_string());
        write!(
            f,
            "#{} client {} via n{} [{}..{}] {:?} -> {:?}",
            self.id, self.client, self.node, self.invoked, done, self.op, self.outcome
        )
    }
}
