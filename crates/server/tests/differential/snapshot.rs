//! Backups: each server streams a snapshot of what the steps before left it with; each snapshot
//! must end with the SHA-256 of what precedes it (what `etcdctl snapshot save` checks); each is
//! restored with its own tool (`etcdctl snapshot restore`, `strata snapshot restore`) into a new
//! single-member cluster; and the two restored clusters must answer alike — keys, revisions,
//! history, compaction point and leases.

use sha2::{Digest, Sha256};

use super::*;

/// Replaces the differ's servers by ones restored from their snapshots, and compares them. The
/// restored servers are returned to keep them running until the comparison ends.
pub(super) async fn snapshot_and_restore(d: &mut Differ) -> (Etcd, Cluster, tempfile::TempDir) {
    d.step("snapshot: a lease to carry over", Op::LeaseGrant(600, Some(0x5eed))).await;
    let on_lease = Some(PutOptions::new().with_lease(0x5eed));
    d.put("snapshot: a key on the lease", "backup/leased", "v", on_lease).await;
    let dir = tempfile::tempdir().unwrap();
    let etcd_file = dir.path().join("etcd.db");
    let strata_file = dir.path().join("strata.db");
    for (who, client, file) in
        [("etcd", &mut d.etcd, &etcd_file), ("strata", &mut d.strata, &strata_file)]
    {
        let image = save(client).await;
        let (body, sum) = image.split_at(image.len().saturating_sub(32));
        assert_eq!(
            Sha256::digest(body).as_slice(),
            sum,
            "{who}'s snapshot does not end with the SHA-256 of what precedes it"
        );
        std::fs::write(file, &image).unwrap();
    }

    let etcd = Etcd::restore("m1", &etcd_file);
    let mut strata = Cluster::create(1, &[]);
    let data_dir = strata.members[0].data_dir.to_str().unwrap().to_string();
    let file = strata_file.to_str().unwrap();
    let (ok, out, err) =
        support::run(support::STRATA, &["snapshot", "restore", file, "--data-dir", &data_dir]);
    assert!(ok, "strata snapshot restore: {out}{err}");
    strata.start_all();
    d.etcd = client(std::slice::from_ref(&etcd.endpoint)).await;
    d.strata = client(&strata.endpoints()).await;

    let every_key = || GetOptions::new().with_from_key();
    d.get("restored: every key", "\0", Some(every_key())).await;
    let earlier = d.revision - 10;
    d.get("restored: every key, 10 revisions back", "\0", Some(every_key().with_revision(earlier)))
        .await;
    d.get("restored: a compacted revision", "\0", Some(every_key().with_revision(1))).await;
    d.step("restored: leases", Op::LeaseLeases).await;
    d.step("restored: a lease's keys", Op::LeaseTimeToLive(0x5eed, true)).await;
    d.put("restored: the next write takes the next revision", "restored", "1", None).await;
    (etcd, strata, dir)
}

/// The whole snapshot a server streams.
async fn save(client: &mut Client) -> Vec<u8> {
    let mut stream = client.snapshot().await.expect("the snapshot stream opens");
    let mut image = Vec::new();
    while let Some(chunk) = stream.message().await.expect("the snapshot streams") {
        image.extend_from_slice(chunk.blob());
    }
    image
}
