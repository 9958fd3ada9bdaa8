//! Leases whose keys lie in several ranges (`docs/sharding.md`, "Leases across ranges").
//!
//! A lease's record is the meta range's. Another range cannot read it — its node's meta replica
//! may have applied more or less of the meta range's log than another node's, and the range's
//! replicas would disagree — so it decides from its own records, its **marks**: a put with a
//! lease applies in a range only once the lease was registered for the range's keys (the meta
//! range records the range's span in the lease's record, `LeaseRegister`, and the range is
//! told, `LeaseMark`); otherwise it is refused with `LeaseUnregistered`, alike on every
//! replica, and the server registers the lease and tries again. Revoking such a lease is a
//! transaction across ranges (`coordinator`): the meta range and every range overlapping the
//! registered spans lock the keys attached to it (and puts with it), and commit the deletion at
//! one revision; each marks the lease's incarnation revoked, so a registration of it arriving
//! late is refused.

use super::{Applier, Response, Writes};
use crate::command::{LeaseMarkRequest, LeaseRegister, TxnPrepare};
use crate::mvcc::lease;
use crate::mvcc::locks::Span;
use crate::mvcc::record::{LeaseMark, VersionRecord};
use crate::range::META_RANGE_ID;
use crate::{Error, Result, keys};

impl Applier<'_> {
    fn mark(&self, id: i64) -> Result<Option<LeaseMark>> {
        let record = self.view().get_raw(&keys::lease_mark(&self.span.0, id))?;
        record.map(|bytes| LeaseMark::decode(&bytes)).transpose()
    }

    fn write_mark(&mut self, id: i64, mark: LeaseMark) {
        use prost::Message as _;
        self.write_raw(keys::lease_mark(&self.span.0, id), Some(mark.encode_to_vec()));
    }

    /// In a range other than the meta range: whether lease `id` may be given to keys here.
    pub(super) fn lease_marked(&self, id: i64) -> Result<bool> {
        match self.mark(id)? {
            Some(mark) if !mark.revoked => Ok(true),
            _ => Err(Error::LeaseUnregistered(id)),
        }
    }

    /// The meta range records that keys of a range's span are given a lease.
    pub(super) fn lease_register(&mut self, register: &LeaseRegister) -> Result<Response> {
        if self.range_id != META_RANGE_ID {
            return Err(Error::Internal("a lease registered outside the meta range".into()));
        }
        let span = (register.span.clone())
            .ok_or_else(|| Error::Internal("a lease registered for no span".into()))?;
        let mut record = lease::get(&self.view(), register.lease)?.ok_or(Error::LeaseNotFound)?;
        if !record.spans.contains(&span) {
            use prost::Message as _;
            record.spans.push(span);
            self.write_raw(keys::lease(register.lease), Some(record.encode_to_vec()));
        }
        Ok(Response::LeaseRegistered(record.incarnation))
    }

    /// A range learns that a lease's incarnation was registered for its keys, unless it has
    /// revoked that incarnation (or knows a later one).
    pub(super) fn lease_mark(&mut self, mark: &LeaseMarkRequest) -> Result<Response> {
        if self.range_id == META_RANGE_ID {
            return Err(Error::Internal("a lease mark in the meta range".into()));
        }
        if self.mark(mark.lease)?.is_none_or(|known| known.incarnation < mark.incarnation) {
            let registered = LeaseMark { incarnation: mark.incarnation, revoked: false };
            self.write_mark(mark.lease, registered);
        }
        Ok(Response::LeaseMarked)
    }

    /// The keys of this range attached to lease `id`, as point spans.
    pub(super) fn leased_spans(&self, id: i64) -> Result<Vec<Span>> {
        let attached = lease::attached_keys(&self.view(), id)?;
        let mut point = |key: Vec<u8>| {
            let mut end = key.clone();
            end.push(0);
            Span { start: key, end }
        };
        Ok(attached.into_iter().filter(|key| self.holds(key)).map(&mut point).collect())
    }

    /// Deletes this range's keys attached to lease `id`, and the attachments.
    pub(super) fn delete_leased_keys(&mut self, writes: &mut Writes, id: i64) -> Result<()> {
        let tombstone = VersionRecord { tombstone: true, ..Default::default() };
        for span in self.leased_spans(id)? {
            let key = span.start;
            if self.current(&key, self.read_revision(writes), false)?.is_some() {
                self.write_version(writes, &key, &tombstone);
            }
            self.write_raw(keys::lease_key(id, &key), None);
        }
        Ok(())
    }

    /// What a revocation across ranges locks here (the keys attached to the lease), the
    /// lease's incarnation, and what the prepare answers: in the meta range, the incarnation
    /// and the registered spans ("lease not found" if there is no such lease).
    pub(super) fn lease_prepare(&self, prepare: &TxnPrepare) -> Result<(Vec<Span>, u64, Response)> {
        self.check_expiry_term(prepare.expiry_term)?;
        let spans = self.leased_spans(prepare.revoke_lease)?;
        if self.range_id != META_RANGE_ID {
            return Ok((spans, prepare.lease_incarnation, Response::TxnPrepared(Vec::new())));
        }
        let record = lease::get(&self.view(), prepare.revoke_lease)?.ok_or(Error::LeaseNotFound)?;
        let prepared =
            Response::LeasePrepared { incarnation: record.incarnation, spans: record.spans };
        Ok((spans, record.incarnation, prepared))
    }

    /// Refuses, in the meta range, a step of an expiry decided by the meta leader of another
    /// term than the entry's (`TxnPrepare::expiry_term`): it was carried to another leader,
    /// whose lease clock may have renewed the lease since.
    pub(super) fn check_expiry_term(&self, expiry_term: u64) -> Result<()> {
        let deposed = expiry_term != 0 && expiry_term != self.state.applied_term;
        match self.range_id == META_RANGE_ID && deposed {
            true => Err(Error::NotLeader),
            false => Ok(()),
        }
    }

    /// Commits a revocation's part here: deletes the keys attached to the lease; the meta range
    /// deletes the lease, another range marks its incarnation revoked.
    pub(super) fn lease_commit(
        &mut self,
        writes: &mut Writes,
        id: i64,
        incarnation: u64,
    ) -> Result<()> {
        self.delete_leased_keys(writes, id)?;
        if self.range_id == META_RANGE_ID {
            self.write_raw(keys::lease(id), None);
            self.lease_changes.push(super::LeaseChange::Revoked { id });
        } else if self.mark(id)?.is_none_or(|known| known.incarnation <= incarnation) {
            self.write_mark(id, LeaseMark { incarnation, revoked: true });
        }
        Ok(())
    }
}
