//! `etcdserverpb.Maintenance`: `Status`, `Alarm`, `Hash`, `HashKV` and `MoveLeader`; the rest
//! answers "not implemented yet".

use std::sync::Arc;
use std::sync::atomic::Ordering;

use std::time::{Duration, Instant};

use strata_core::command::Request as Command;
use strata_core::mvcc::{Response as Applied, alarm, compaction, hash, read, view::View};
use strata_core::pb::etcdserverpb::alarm_request::AlarmAction;
use strata_core::pb::etcdserverpb::*;
use strata_core::raftstore::local_read;
use strata_core::{Error, FIRST_RANGE_ID};
use tonic::{Request, Response, Status};

use super::{Api, not_yet, observed, status};
use crate::pb::etcd::maintenance_server::Maintenance;

/// The etcd API version Strata speaks (what `etcdctl endpoint status` shows as the version).
pub const ETCD_API_VERSION: &str = "3.5.0";

pub struct MaintenanceService {
    pub api: Arc<Api>,
}

impl Api {
    pub fn status_response(&self) -> StatusResponse {
        let range = self.range();
        let revision = self.shell.shared_ranges().newest_revision();
        let db_size = self.store.disk_bytes() as i64;
        StatusResponse {
            header: self.header(revision),
            version: ETCD_API_VERSION.to_string(),
            db_size,
            leader: range.leader_id.load(Ordering::Acquire),
            raft_index: range.commit_index.load(Ordering::Acquire),
            raft_term: range.term.load(Ordering::Acquire),
            raft_applied_index: range.applied_index.load(Ordering::Acquire),
            errors: alarm::all(&View::new(self.engine.as_ref()))
                .unwrap_or_default()
                .iter()
                .map(|a| {
                    let name = AlarmType::try_from(a.alarm).map_or("UNKNOWN", |t| t.as_str_name());
                    format!("memberID:{} alarm:{name}", a.member_id)
                })
                .collect(),
            db_size_in_use: self.store.data_bytes() as i64,
            is_learner: false,
            storage_version: String::new(),
            db_size_quota: 0,
            downgrade_info: None,
        }
    }
}

/// Runs a whole-store scan off the async runtime's workers.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Internal(format!("scan task failed: {e}")))?
}

/// The member's one snapshot in progress; released when its stream is dropped.
struct Busy(Arc<Api>);

impl Busy {
    fn claim(api: Arc<Api>) -> Option<Self> {
        let taken = api.snapshot_busy.swap(true, Ordering::AcqRel);
        (!taken).then_some(Busy(api))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.snapshot_busy.store(false, Ordering::Release);
    }
}

/// Bytes per message of a snapshot stream.
const SNAPSHOT_CHUNK_BYTES: usize = 64 * 1024;

/// How long a measured store size is reused by the quota check, which runs on every write.
const DB_SIZE_REUSE: Duration = Duration::from_millis(200);

impl Api {
    fn db_size_recent(&self) -> u64 {
        let mut cached = self.db_size_cache.lock().expect("db size lock");
        match *cached {
            Some((at, size)) if at.elapsed() < DB_SIZE_REUSE => size,
            _ => {
                let size = self.store.data_bytes();
                *cached = Some((Instant::now(), size));
                size
            }
        }
    }

    /// Whether writing `adding` more bytes would take this member past its storage quota.
    pub fn over_quota(&self, adding: u64) -> bool {
        let quota = self.config.quota_bytes;
        quota > 0 && self.db_size_recent() + adding > quota
    }

    /// Raises the `NOSPACE` alarm for this member unless one is active already.
    pub async fn raise_no_space(&self) {
        if alarm::no_space(&View::new(self.engine.as_ref())).unwrap_or(false) {
            return;
        }
        let raise = AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: self.config.member_id(),
            alarm: AlarmType::Nospace as i32,
        };
        match self.shell.propose(FIRST_RANGE_ID, Command::Alarm(raise), self.timeout()).await {
            Ok(_) => tracing::warn!(
                quota_bytes = self.config.quota_bytes,
                "storage quota exceeded: NOSPACE alarm raised; writes that add data are refused \
                 until it is disarmed"
            ),
            Err(e) => tracing::warn!(error = %e, "storage quota exceeded; cannot raise the alarm"),
        }
    }

    /// Reclaims this member's space of deleted and compacted data, on a blocking thread: the
    /// store keeps serving reads and writes meanwhile.
    pub async fn defragment(&self) -> Result<DefragmentResponse, Error> {
        let store = self.store.clone();
        let done = tokio::task::spawn_blocking(move || store.defragment()).await;
        done.map_err(|e| Error::Internal(format!("defragment: {e}")))??;
        *self.db_size_cache.lock().expect("db size lock") = None;
        // etcd answers a defragmentation without a header.
        Ok(DefragmentResponse { header: None })
    }

    /// Lists, raises or clears alarms (etcd answers these without a header).
    pub async fn alarm(&self, req: AlarmRequest) -> Result<AlarmResponse, Error> {
        if req.action == AlarmAction::Get as i32 {
            self.shell.read_index(FIRST_RANGE_ID, self.timeout()).await?;
            let alarms = alarm::all(&View::new(self.engine.as_ref()))?;
            return Ok(AlarmResponse { header: None, alarms });
        }
        match self.write(Command::Alarm(req)).await? {
            Applied::Alarm(r) => Ok(AlarmResponse { header: None, ..r }),
            other => Err(Error::Internal(format!("unexpected response {other:?}"))),
        }
    }

    /// A hash of every key version up to a revision (0: the current one), with the compaction
    /// revision it was taken at: members at the same compaction revision must agree.
    pub fn hash_kv(&self, req: HashKvRequest) -> Result<HashKvResponse, Error> {
        let view = View::new(self.engine.as_ref());
        if self.shell.shared_ranges().all().len() > 1 {
            return self.hash_kv_across(&view, req);
        }
        let ((hash, revision), state) = local_read::read_stable(&self.range(), |state| {
            let revision = read::read_revision(&state, req.revision)?;
            Ok((hash::hash_kv(&view, revision, state.compact_revision)?, revision))
        })?;
        Ok(HashKvResponse {
            header: self.header(state.revision),
            hash,
            compact_revision: state.compact_revision,
            hash_revision: revision,
        })
    }

    /// `HashKV` of a member holding several ranges (every range, while ranges are not placed):
    /// every version of every range at one revision, by default the member's frontier — the
    /// newest revision at or below which every range has applied everything — and it answers
    /// with that revision in its header, so members answering the same revision agree. Versions
    /// the cluster's compaction dooms are left out, whether deleted yet or not; each range's
    /// own compaction revision is at or below the cluster's with nothing written between them.
    fn hash_kv_across(&self, view: &View, req: HashKvRequest) -> Result<HashKvResponse, Error> {
        let frontier = self.shell.shared_ranges().watermarks().frontier;
        let revision = match req.revision {
            0 => frontier,
            asked if asked > frontier => return Err(Error::FutureRevision),
            asked => asked,
        };
        let compact_revision = self.cluster_compaction(view)?;
        if revision < compact_revision {
            return Err(Error::Compacted);
        }
        Ok(HashKvResponse {
            header: self.header(revision),
            hash: hash::hash_kv(view, revision, compact_revision)?,
            compact_revision,
            hash_revision: revision,
        })
    }

    /// Where a backup of a member holding several ranges is cut (0 with one range): the newest
    /// revision it has applied in any range (or the cluster's compaction revision, if above),
    /// once every range has applied everything up to it — so the backup holds every write the
    /// member had applied when it was asked.
    async fn backup_revision(&self) -> Result<i64, Error> {
        let ranges = self.shell.shared_ranges();
        if ranges.all().len() == 1 {
            return Ok(0);
        }
        let view = View::new(self.engine.as_ref());
        let revision = ranges.newest_revision().max(self.cluster_compaction(&view)?);
        let deadline = tokio::time::Instant::now() + self.timeout();
        self.wait_for(deadline, || ranges.watermarks().frontier >= revision).await?;
        Ok(revision)
    }

    /// The cluster's compaction revision, as this member's meta range has applied it.
    fn cluster_compaction(&self, view: &View) -> Result<i64, Error> {
        let meta_compacted = self.range().compact_revision.load(Ordering::Acquire);
        compaction::cluster_revision(view, meta_compacted)
    }

    pub fn hash(&self) -> Result<HashResponse, Error> {
        let revision = self.range().revision.load(Ordering::Acquire);
        let hash = hash::hash_all(&View::new(self.engine.as_ref()))?;
        Ok(HashResponse { header: self.header(revision), hash })
    }

    /// Hands leadership to `target` and waits until it leads (or the request times out).
    pub async fn move_leader(&self, req: MoveLeaderRequest) -> Result<MoveLeaderResponse, Error> {
        self.shell.transfer_leader(req.target_id).await?;
        let deadline = tokio::time::Instant::now() + self.timeout();
        let leader = &self.range().leader_id;
        self.wait_for(deadline, || leader.load(Ordering::Acquire) == req.target_id).await?;
        let revision = self.range().revision.load(Ordering::Acquire);
        Ok(MoveLeaderResponse { header: self.header(revision) })
    }
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        let work = self.api.alarm(request.into_inner());
        observed(&self.api, "Alarm", work).await
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(self.api.status_response()))
    }

    async fn defragment(
        &self,
        _: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        let work = self.api.defragment();
        observed(&self.api, "Defragment", work).await
    }

    async fn hash(&self, _: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        let api = self.api.clone();
        let work = blocking(move || api.hash());
        observed(&self.api, "Hash", work).await
    }

    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        let (api, req) = (self.api.clone(), request.into_inner());
        let work = blocking(move || api.hash_kv(req));
        observed(&self.api, "HashKV", work).await
    }

    type SnapshotStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<SnapshotResponse, Status>> + Send>,
    >;

    /// Streams a backup of this member's state machine (see `crate::backup`), one chunk copied
    /// at a time as the client reads. One snapshot at a time per member: the image is held in
    /// memory while it streams.
    async fn snapshot(
        &self,
        _: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let api = self.api.clone();
        let Some(busy) = Busy::claim(api.clone()) else {
            return Err(status(Error::TooManyRequests));
        };
        let revision = api.backup_revision().await.map_err(status)?;
        let image = api.shell.snapshot_image(revision);
        let image = api.observe("Snapshot", image).await.map_err(status)?;
        let file = Arc::new(crate::backup::frame(&image));
        drop(image);
        let header = api.header(api.range().revision.load(Ordering::Acquire));
        let chunks = file.len().div_ceil(SNAPSHOT_CHUNK_BYTES);
        let responses = (0..chunks).map(move |i| {
            let _still_streaming = &busy;
            let start = i * SNAPSHOT_CHUNK_BYTES;
            let end = file.len().min(start + SNAPSHOT_CHUNK_BYTES);
            Ok(SnapshotResponse {
                header,
                remaining_bytes: (file.len() - end) as u64,
                blob: file[start..end].to_vec(),
                version: ETCD_API_VERSION.to_string(),
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(responses))))
    }

    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        let work = self.api.move_leader(request.into_inner());
        observed(&self.api, "MoveLeader", work).await
    }

    async fn downgrade(
        &self,
        _: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Err(not_yet("Maintenance.Downgrade"))
    }
}
