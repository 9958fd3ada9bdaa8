//! The oracle clients' side of the world: their asks reach the node they believe leads the
//! meta range, as a range leader's or a reader's asks will, and the answers go back to
//! `crate::oracle`.

use strata_core::raftstore::Grant;

use super::{CLIENT_TIMEOUT, Event, MS, Reply, World};
use crate::oracle::Outcome;

impl World {
    pub(super) fn oracle_next(&mut self, client: usize) {
        if !self.faults_on {
            return; // the asks stop with the faults
        }
        let (ask, preferred) = self.oracle.next(client);
        let node = preferred.unwrap_or_else(|| self.any_member());
        let asked = self.oracle.invoke(client, node, ask, self.now);
        let latency = self.client_rng.range(100, 2 * MS);
        self.schedule(latency, Event::OracleAsk { node, asked });
        self.schedule(CLIENT_TIMEOUT, Event::OracleAnswer { asked, outcome: Outcome::Failed });
    }

    /// An ask reaches node `id`: its oracle answers once a quorum check confirms it leads the
    /// meta range, or says at once that it does not run the oracle.
    pub(super) fn oracle_ask(&mut self, id: u64, asked: usize) {
        let ask = self.oracle.asks[asked].ask;
        let deadline = self.now + CLIENT_TIMEOUT;
        let handled =
            self.with_node(id, |_, driver| driver.ask_oracle(ask, deadline, Reply::Oracle(asked)));
        match handled {
            None => self.oracle_reply(asked, Err(strata_core::Error::Stopped)),
            Some(answers) => self.answer(id, answers),
        }
        self.round(id);
    }

    pub(super) fn oracle_reply(&mut self, asked: usize, result: strata_core::Result<Grant>) {
        let outcome = match result {
            Ok(grant) => Outcome::Granted(grant),
            Err(_) => Outcome::Failed,
        };
        let latency = self.client_rng.range(100, 2 * MS);
        self.schedule(latency, Event::OracleAnswer { asked, outcome });
    }
}
