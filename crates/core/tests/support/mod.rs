//! A range's state machine as a replica runs it: an in-memory engine, the applied state, and
//! the key index carried from one apply run to the next (debug builds check every answer the
//! applier takes from it against the store).

#![allow(dead_code)]

use std::sync::RwLock;

use strata_core::command::Request;
use strata_core::mvcc::memo::Memo;
use strata_core::mvcc::view::View;
use strata_core::mvcc::{AppliedState, Applier, Response};
use strata_core::raftstore::oracle::Block;
use strata_storage::{Durability, Engine, MemEngine};

pub struct Store {
    pub engine: MemEngine,
    pub state: AppliedState,
    pub index: u64,
    pub memo: RwLock<Memo>,
    /// The user keys the range holds, `[first, past)` (an empty `past`: to the end).
    pub span: (Vec<u8>, Vec<u8>),
    pub range_id: strata_core::RangeId,
}

impl Store {
    pub fn new() -> Self {
        let engine = MemEngine::new();
        let memo = RwLock::new(Memo::load(&engine, (b"", b"")).expect("an empty store loads"));
        let state = AppliedState::initial();
        Self { engine, state, index: 0, memo, span: Default::default(), range_id: 1 }
    }

    /// A store of a range holding the user keys `[first, past)`.
    pub fn of_span(first: &str, past: &str) -> Self {
        Self { span: (first.into(), past.into()), ..Self::new() }
    }

    /// A store of range `range_id` holding the user keys `[first, past)`.
    pub fn of_range(range_id: strata_core::RangeId, first: &str, past: &str) -> Self {
        Self { range_id, ..Self::of_span(first, past) }
    }

    /// Applies `request` as one log entry, in an apply run of its own.
    pub fn write(&mut self, request: Request) -> Result<Response, strata_core::Error> {
        self.write_stamped(request, None)
    }

    /// [`Self::write`], for a request the revision oracle stamped with `block`.
    pub fn write_stamped(
        &mut self,
        request: Request,
        block: Option<Block>,
    ) -> Result<Response, strata_core::Error> {
        self.index += 1;
        let span = (self.span.0.as_slice(), self.span.1.as_slice());
        let mut applier =
            Applier::with_memo(&self.engine, self.range_id, self.state, &self.memo).with_span(span);
        applier.mark_applied(self.index, 1);
        let result = applier.apply_stamped(&request, block);
        let (batch, state) = applier.finish();
        self.engine.write(&batch, Durability::Buffered).unwrap();
        self.state = state;
        result
    }

    /// [`Self::write`], for a request that must succeed.
    pub fn apply(&mut self, request: Request) -> Response {
        self.write(request).expect("the request applies")
    }

    /// Reads of the engine alone.
    pub fn plain(&self) -> View<'_> {
        View::new(&self.engine)
    }

    /// Reads through the key index, as a member serves them.
    pub fn indexed(&self) -> View<'_> {
        View::with_memo(&self.engine, &self.memo)
    }
}
