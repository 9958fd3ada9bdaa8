//! Leases, locks and elections, and membership changes.

use super::*;
use crate::kv::prefix;

/// Leases: grants with chosen ids (ids the server picks differ by nature), keys attached and
/// detached, time-to-live with keys, listing, revocation, and the errors.
pub(super) async fn leases(d: &mut Differ) {
    let grant = |ttl, id| Op::LeaseGrant(ttl, Some(id));
    d.step("lease: grant with an id", grant(60, 1000)).await;
    d.step("lease: grant a second", grant(30, 1001)).await;
    d.step("lease: grant an existing id", grant(60, 1000)).await;
    d.step("lease: grant a TTL too large", grant(9_000_000_001, 1002)).await;
    d.step("lease: grant with an id chosen by the server", Op::LeaseGrant(60, None)).await;
    let with = |id| Some(PutOptions::new().with_lease(id).with_prev_key());
    d.put("lease: put with a lease", "leased/a", "1", with(1000)).await;
    d.put("lease: second key on the lease", "leased/b", "1", with(1000)).await;
    d.put("lease: key on the other lease", "leased/c", "1", with(1001)).await;
    d.put("lease: put with a missing lease", "leased/x", "1", with(555)).await;
    let missing = TxnOp::put("leased/x", "1", Some(PutOptions::new().with_lease(555)));
    d.txn("lease: txn put with a missing lease", Txn::new().and_then([missing])).await;
    d.get("lease: keys carry their lease", "leased/", prefix()).await;
    let on_lease = Compare::lease("leased/a", CompareOp::Equal, 1000);
    let txn = Txn::new().when([on_lease]).and_then([TxnOp::get("leased/a", None)]);
    d.txn("lease: compare on lease", txn).await;
    d.step("lease: time to live with keys", Op::LeaseTimeToLive(1000, true)).await;
    d.step("lease: time to live without keys", Op::LeaseTimeToLive(1001, false)).await;
    d.step("lease: time to live of a missing lease", Op::LeaseTimeToLive(555, true)).await;
    d.step("lease: list", Op::LeaseLeases).await;
    d.step("lease: revoke deletes its keys", Op::LeaseRevoke(1000)).await;
    d.get("lease: after the revocation", "leased/", prefix()).await;
    d.step("lease: revoke a revoked lease", Op::LeaseRevoke(1000)).await;
    d.put(
        "lease: moving a key off its lease",
        "leased/c",
        "2",
        Some(PutOptions::new().with_prev_key()),
    )
    .await;
    d.step("lease: revoke a lease with no keys left", Op::LeaseRevoke(1001)).await;
    d.get("lease: the moved key stays", "leased/", prefix()).await;
    d.step("lease: list after revoking", Op::LeaseLeases).await;
}

/// Uncontended locks and an election on leases with chosen ids, so keys and revisions match.
pub(super) async fn locks_and_elections(d: &mut Differ) {
    d.step("lock: lease for the lock", Op::LeaseGrant(60, Some(0x7d0))).await;
    d.step("lock: lease for the election", Op::LeaseGrant(60, Some(0x7d1))).await;
    d.step("lock: take", Op::Lock("L".into(), 0x7d0)).await;
    d.get("lock: the lock key", "L/", prefix()).await;
    d.step("lock: take again with the same lease", Op::Lock("L".into(), 0x7d0)).await;
    d.step("lock: unlock", Op::Unlock("L/7d0".into())).await;
    d.get("lock: released", "L/", prefix()).await;

    d.step("election: leader before any campaign", Op::Leader("E".into())).await;
    let won = d.step("election: campaign", Op::Campaign("E".into(), "v1".into(), 0x7d1)).await;
    let rev = won["ok"]["leader"]["rev"].as_i64().expect("etcd's campaign answer has a rev");
    let leader = LeaderKey::new().with_name("E").with_key("E/7d1").with_rev(rev).with_lease(0x7d1);
    d.step("election: leader", Op::Leader("E".into())).await;
    d.step("election: proclaim", Op::Proclaim(leader.clone(), "v2".into())).await;
    d.step("election: leader after proclaiming", Op::Leader("E".into())).await;
    d.step("election: resign", Op::Resign(leader.clone())).await;
    d.step("election: leader after resigning", Op::Leader("E".into())).await;
    d.step("election: proclaim by a resigned leader", Op::Proclaim(leader.clone(), "v3".into()))
        .await;
    d.step("election: resign twice", Op::Resign(leader)).await;
}

/// Membership changes a single-member cluster can show: a learner that never starts is added,
/// refused promotion, given new URLs and removed; and the errors. Member ids differ between
/// the two servers, so members are named by their peer URL.
pub(super) async fn members(d: &mut Differ) {
    let learner = "http://127.0.0.1:1";
    d.step("member: add a learner", Op::MemberAdd(learner.into(), true)).await;
    // Sharing one of two URLs: etcd derives an added member's id from its URLs and the time in
    // seconds, so the same URL alone again is refused as an existing id within the second and
    // as an existing URL after it; two URLs make the id differ on both servers.
    let sharing = format!("{learner},http://127.0.0.1:9");
    d.step("member: add one sharing a peer URL", Op::MemberAdd(sharing, true)).await;
    d.step("member: add with an invalid URL", Op::MemberAdd("not a url".into(), true)).await;
    d.step("member: promote a learner not in sync", Op::MemberPromote(learner.into())).await;
    d.step("member: promote a voter", Op::MemberPromote(String::new())).await;
    let moved = "http://127.0.0.1:2";
    d.step("member: update a learner's peer URLs", Op::MemberUpdate(learner.into(), moved.into()))
        .await;
    d.step("member: list with the learner", Op::MemberList).await;
    d.step("member: remove the learner", Op::MemberRemove(moved.into())).await;
    d.step("member: remove a member that does not exist", Op::MemberRemove("nobody".into())).await;
}
