//! The RPC edge: one request per QUIC stream, dispatched as a query (read
//! from a snapshot on a blocking thread), a proposal (a command for the
//! committer) or a lease (soft state). Refusals are typed inside meta and
//! become wire error codes only here.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tessera_net::{PeerIdentity, RecvStream, SendStream, read_frame, role, write_frame};
use tessera_proto::{
    AccessKey, CorruptReport, ErrorCode, FrameKind, GroupRequest, Heartbeat, HeartbeatReply, Lease,
    MAX_BATCHED_REQUESTS, MetaQuery, MetaRequest, MetaResponse, NodeAdmin, ObjectData, Proposal,
    RemoteError, UploadInfo,
};
use tracing::{debug, info, warn};

use super::liveness::NodeReport;
use super::{Meta, now_ms};
use crate::MetaError;
use crate::state::prelude::*;
use crate::state::tables::{NodeRecord, counter};
use crate::state::{Applied, Command, Refused, refuse};

/// A request must arrive whole within this time, or the stream is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes the answers of a batch's queries without a small, bounded answer
/// (reads of one object) may take together: half a frame, leaving the
/// rest for the bounded answers and the batch's proposals.
const MAX_BATCH_READ_BYTES: usize = tessera_proto::MAX_FRAME_LEN / 2;

/// `answer` if it fits in `room` (which it then takes from), else
/// `TooLarge`: the client asks that query again alone
/// (`MetaQuery::reads_one_object`).
fn fit(
    answer: Result<MetaResponse, MetaError>,
    room: &mut usize,
) -> Result<MetaResponse, MetaError> {
    let resp = answer?;
    let size = postcard::experimental::serialized_size(&resp).unwrap_or(usize::MAX);
    if size > *room {
        return Err(refuse(
            Refused::TooLarge,
            "this answer does not fit in the batch's frame: ask alone",
        ));
    }
    *room -= size;
    Ok(resp)
}

/// The wire's error class for a refusal.
fn wire_code(kind: Refused) -> ErrorCode {
    match kind {
        Refused::BadRequest => ErrorCode::BadRequest,
        Refused::InvalidBucketName => ErrorCode::InvalidBucketName,
        Refused::InvalidKey => ErrorCode::InvalidKey,
        Refused::InvalidPolicy => ErrorCode::InvalidPolicy,
        Refused::NoSuchBucket => ErrorCode::NoSuchBucket,
        Refused::BucketExists => ErrorCode::BucketExists,
        Refused::BucketNotEmpty => ErrorCode::BucketNotEmpty,
        Refused::NoSuchKey => ErrorCode::NoSuchKey,
        Refused::NotFound => ErrorCode::NotFound,
        Refused::TooLarge => ErrorCode::TooLarge,
        Refused::Conflict => ErrorCode::Conflict,
        Refused::NodeRemoved => ErrorCode::NodeRemoved,
        Refused::NoSuchUpload => ErrorCode::NoSuchUpload,
        Refused::InvalidPart => ErrorCode::InvalidPart,
        Refused::EntityTooSmall => ErrorCode::EntityTooSmall,
        Refused::InvalidPartOrder => ErrorCode::InvalidPartOrder,
        Refused::PreconditionFailed => ErrorCode::PreconditionFailed,
        Refused::NotEmpty => ErrorCode::NotEmpty,
        Refused::InvalidTag => ErrorCode::InvalidTag,
        Refused::NoSuchVersion => ErrorCode::NoSuchVersion,
        Refused::MethodNotAllowed => ErrorCode::MethodNotAllowed,
        Refused::NoSuchVolume => ErrorCode::NoSuchVolume,
        Refused::VolumeExists => ErrorCode::VolumeExists,
        Refused::VolumeBusy => ErrorCode::VolumeBusy,
        Refused::Fenced => ErrorCode::Fenced,
        Refused::Forbidden => ErrorCode::Forbidden,
        Refused::InvalidBucketState => ErrorCode::InvalidBucketState,
        Refused::ObjectLocked => ErrorCode::ObjectLocked,
        Refused::InvalidRequest => ErrorCode::InvalidRequest,
    }
}

/// An error as the wire carries it.
pub(super) fn to_remote(e: &MetaError) -> RemoteError {
    match e {
        MetaError::Refused(r) => RemoteError::new(wire_code(r.kind), r.message.clone()),
        MetaError::NotLeader { .. } => RemoteError::new(ErrorCode::NotLeader, e.to_string()),
        other => RemoteError::new(ErrorCode::Internal, other.to_string()),
    }
}

/// Refuses `what` unless `peer`'s certificate is a meta replica's (CN
/// `meta`). Errors: `Forbidden`, naming the peer and its role.
pub(super) fn only_meta(peer: &PeerIdentity, what: &str) -> Result<(), MetaError> {
    if peer.has_role(role::META) {
        return Ok(());
    }
    warn!(peer = %peer.addr, role = peer.role_name(), "refused {what} from a peer without a meta certificate");
    Err(refuse(
        Refused::Forbidden,
        format!(
            "{what} are accepted only from peers with a meta certificate (CN {:?}); {} presented {:?}",
            role::META,
            peer.addr,
            peer.role_name()
        ),
    ))
}

/// What an applied command answers.
fn response(applied: Applied) -> MetaResponse {
    match applied {
        Applied::Done | Applied::Repaired { .. } => MetaResponse::Ok,
        Applied::Bucket(b) => MetaResponse::Bucket(b),
        Applied::Object(o) => MetaResponse::Object(*o),
        Applied::Deleted { existed } => MetaResponse::Deleted { existed },
        Applied::Renamed { objects } => MetaResponse::Renamed { objects },
        Applied::Upload(u) => MetaResponse::Upload(*u),
        Applied::Part(p) => MetaResponse::Part(p),
        Applied::Key(k) => MetaResponse::Key(k),
        Applied::ScrubRequested { seq } => MetaResponse::ScrubStarted { seq },
        Applied::Removed(r) => MetaResponse::Removed(r),
        Applied::Volume(v) => MetaResponse::Volume(*v),
        Applied::Extents(e) => MetaResponse::Extents(e),
    }
}

const KEY_ID_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const UPLOAD_ID_CHARS: &[u8] = b"0123456789abcdef";
const SECRET_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// `len` characters of `alphabet` from the OS random source.
fn random_text(alphabet: &[u8], len: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rngs::OsRng;
    (0..len)
        .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
        .collect()
}

impl Meta {
    /// Answers one request from `peer`, or each request of a batch.
    /// Raft's own traffic is answered by every replica; everything else
    /// only by the leader (a follower answers `NotLeader` with the
    /// leader's address, and does nothing). Raft's RPCs and changes of the
    /// group come only from meta replicas (and operators holding a meta
    /// certificate): anyone else is refused with `Forbidden`, whichever
    /// replica they ask.
    pub async fn handle(
        self: &Arc<Self>,
        req: MetaRequest,
        peer: &PeerIdentity,
    ) -> Result<MetaResponse, MetaError> {
        if let MetaRequest::Raft(msg) = req {
            only_meta(peer, "Raft's RPCs")?;
            return Ok(MetaResponse::Raft(
                crate::raft::answer_rpc(&self.raft, msg).await?,
            ));
        }
        if let MetaRequest::Group(GroupRequest::Add { .. } | GroupRequest::Remove { .. }) = req {
            only_meta(peer, "changes of the meta group")?;
        }
        if !self.is_leader() {
            return Ok(MetaResponse::NotLeader {
                leader: self.leader_addr(),
            });
        }
        match req {
            MetaRequest::Batch(reqs) => self.handle_batch(reqs).await,
            MetaRequest::Group(g) => self.group(g).await,
            one => self.handle_one(one, false).await,
        }
    }

    /// One request; `confirmed` when leadership was confirmed after it
    /// arrived (for a whole batch), so a query need not confirm again.
    async fn handle_one(
        self: &Arc<Self>,
        req: MetaRequest,
        confirmed: bool,
    ) -> Result<MetaResponse, MetaError> {
        match req {
            MetaRequest::Query(q) => {
                if !confirmed {
                    self.confirm_leader().await?;
                }
                self.blocking(move |m| m.query(q)).await
            }
            MetaRequest::Propose(p) => self.propose(p).await,
            MetaRequest::Lease(l) => self.lease(l).await,
            MetaRequest::Batch(_) => Err(refuse(
                Refused::BadRequest,
                "a batch of requests inside a batch",
            )),
            MetaRequest::Raft(_) | MetaRequest::Group(_) => Err(refuse(
                Refused::BadRequest,
                "Raft and group requests go alone, not in a batch",
            )),
        }
    }

    /// The requests of a batch, handled concurrently as if each had come
    /// on its own stream; an answer per request, in order. Errors:
    /// `BadRequest` for more than `MAX_BATCHED_REQUESTS` (none is
    /// handled).
    async fn handle_batch(
        self: &Arc<Self>,
        reqs: Vec<MetaRequest>,
    ) -> Result<MetaResponse, MetaError> {
        if reqs.len() > MAX_BATCHED_REQUESTS {
            return Err(refuse(
                Refused::BadRequest,
                format!(
                    "{} requests in one batch, at most {MAX_BATCHED_REQUESTS}",
                    reqs.len()
                ),
            ));
        }
        // The stream counts as one request; the others are counted here.
        let more = reqs.len().saturating_sub(1) as u64;
        self.counters.requests.fetch_add(more, Ordering::Relaxed);
        // One read-index for all the batch's queries: it starts after each
        // of them arrived, so every one still sees every write
        // acknowledged before it was sent.
        let confirmed = if reqs.iter().any(|r| matches!(r, MetaRequest::Query(_))) {
            self.confirm_leader().await?;
            true
        } else {
            false
        };
        // The queries are read in one blocking task (a thread hop for the
        // batch rather than one per query: a gateway's batches are mostly
        // small point reads); the rest are handled concurrently beside it.
        let mut queries = Vec::new();
        let mut others = Vec::new();
        for (i, r) in reqs.into_iter().enumerate() {
            match r {
                MetaRequest::Query(q) => queries.push((i, q)),
                other => others.push((i, other)),
            }
        }
        let read = async {
            if queries.is_empty() {
                return Ok(Vec::new());
            }
            self.blocking(move |m| {
                let mut room = MAX_BATCH_READ_BYTES;
                Ok(queries
                    .into_iter()
                    .map(|(i, q)| {
                        let unbounded = !q.has_small_answer();
                        let answer = m.query(q);
                        (
                            i,
                            if unbounded {
                                fit(answer, &mut room)
                            } else {
                                answer
                            },
                        )
                    })
                    .collect::<Vec<_>>())
            })
            .await
        };
        let rest = futures::future::join_all(
            others
                .into_iter()
                .map(|(i, r)| async move { (i, self.handle_one(r, confirmed).await) }),
        );
        let (read, rest) = tokio::join!(read, rest);
        let mut answers: Vec<(usize, Result<MetaResponse, MetaError>)> = read?;
        answers.extend(rest);
        answers.sort_unstable_by_key(|(i, _)| *i);
        Ok(MetaResponse::Batch(
            answers
                .into_iter()
                .map(|(_, answer)| match answer {
                    Ok(resp) => resp,
                    Err(e) => {
                        self.counters.refused.fetch_add(1, Ordering::Relaxed);
                        MetaResponse::Error(to_remote(&e))
                    }
                })
                .collect(),
        ))
    }

    /// Runs reads of the store off the async threads.
    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Meta) -> Result<T, MetaError> + Send + 'static,
    ) -> Result<T, MetaError> {
        let m = self.clone();
        tokio::task::spawn_blocking(move || f(&m))
            .await
            .map_err(|e| MetaError::Internal(format!("query task: {e}")))?
    }

    /// Applies a command through the committer; a refusal is an error.
    pub(super) async fn commit(
        &self,
        cmd: Command,
        write: Option<u64>,
    ) -> Result<Applied, MetaError> {
        Ok(self.committer.propose(cmd, write).await??)
    }

    /// Answers a query from one snapshot. Blocking.
    pub fn query(&self, q: MetaQuery) -> Result<MetaResponse, MetaError> {
        use MetaQuery as Q;
        if let Q::ClusterMap = q {
            return Ok(MetaResponse::ClusterMap(self.cluster_map()?));
        }
        if let Q::Status = q {
            return Ok(MetaResponse::Status(self.status()?));
        }
        if let Q::RepairWork { limit } = q {
            let map = self.cluster_map()?;
            let a = self.assess(&map)?;
            let limit = (limit as usize).min(a.work.len());
            return Ok(MetaResponse::RepairWork(a.work[..limit].to_vec()));
        }
        if let Q::UnknownFragments { node, items } = q {
            // Under the reservations' lock, so a commit is wholly before or
            // after this answer.
            let held = self.reservations.lock();
            let unknown = self.sm().read().unknown_fragments(node, &items)?;
            let now = Instant::now();
            return Ok(MetaResponse::UnknownFragments(
                unknown
                    .into_iter()
                    .filter(|(c, _)| !held.reserved(c, now))
                    .collect(),
            ));
        }
        let sm = self.sm();
        let r = sm.read();
        Ok(match q {
            Q::GetBucket { name } => MetaResponse::Bucket(r.bucket(&name)?),
            Q::ListBuckets => MetaResponse::Buckets(r.buckets()?),
            Q::BucketUsage => MetaResponse::BucketUsage(r.buckets_usage()?),
            Q::HeadObject { bucket, key } => MetaResponse::Object(r.object(&bucket, &key)?),
            Q::GetChunks { ids } => MetaResponse::Chunks(r.chunks(&ids)?),
            Q::HeadObjectWithChunks {
                bucket,
                key,
                max_chunks,
            } => {
                let object = r.object(&bucket, &key)?;
                let chunks = match &object.data {
                    ObjectData::Chunks(refs) => {
                        let first = max_chunks.min(tessera_proto::MAX_CHUNKS_WITH_OBJECT) as usize;
                        let ids: Vec<_> = refs.iter().take(first).map(|c| c.id).collect();
                        r.chunks(&ids)?
                    }
                    ObjectData::Inline(_) => Vec::new(),
                };
                MetaResponse::ObjectWithChunks { object, chunks }
            }
            Q::ListObjects {
                bucket,
                prefix,
                delimiter,
                start_after,
                max_keys,
            } => {
                let max_keys = (max_keys as usize).clamp(1, 10_000);
                MetaResponse::Listing(r.list(
                    &bucket,
                    &prefix,
                    delimiter.as_deref(),
                    start_after.as_deref(),
                    max_keys,
                )?)
            }
            Q::NodeFragments { node, after, limit } => {
                let limit = (limit as usize).clamp(1, 10_000);
                let (items, more) = r.node_fragments(node, after, limit)?;
                MetaResponse::NodeFragments { items, more }
            }
            Q::ScanChunks { after, limit } => {
                let limit = (limit as usize).clamp(1, 10_000);
                MetaResponse::Chunks(r.scan_chunks(after, limit)?)
            }
            Q::ListKeys => MetaResponse::Keys(r.access_keys()?),
            Q::GetKey { id } => MetaResponse::Key(r.access_key(&id)?),
            Q::ListGrants { bucket, key } => {
                MetaResponse::Grants(r.grants(bucket.as_deref(), key.as_deref())?)
            }
            Q::GetUpload { upload } => MetaResponse::Upload(r.upload(&upload)?),
            Q::ListParts { upload } => {
                r.upload(&upload)?;
                MetaResponse::Parts(r.parts(&upload)?)
            }
            Q::ListUploads { bucket } => {
                r.bucket(&bucket)?;
                MetaResponse::Uploads(r.uploads(Some(&bucket))?)
            }
            Q::Lookup { bucket, key } => MetaResponse::Found(r.lookup(&bucket, &key)?),
            Q::ListDir {
                bucket,
                prefix,
                after,
                limit,
            } => MetaResponse::DirListing(r.list_dir(
                &bucket,
                &prefix,
                after.as_deref(),
                limit as usize,
            )?),
            Q::GetBucketTags { bucket } => MetaResponse::Tags(r.bucket_tags(&bucket)?),
            Q::GetBucketAccess { bucket } => MetaResponse::BucketAccess(r.bucket_access(&bucket)?),
            Q::GetLifecycle { bucket } => {
                r.bucket(&bucket)?;
                MetaResponse::Lifecycle(r.lifecycle(&bucket)?)
            }
            Q::LifecycleStatus => MetaResponse::LifecycleProgress(r.lifecycle_progress()?),
            Q::StorageClasses => MetaResponse::StorageClasses(r.storage_classes()?),
            Q::TransitionWork { limit } => MetaResponse::Transitions(r.transition_work(limit)?),
            Q::GetObjectLock { bucket } => {
                r.bucket(&bucket)?;
                MetaResponse::ObjectLock(r.object_lock(&bucket)?)
            }
            Q::GetVersioning { bucket } => {
                r.bucket(&bucket)?;
                MetaResponse::Versioning(r.versioning(&bucket)?)
            }
            Q::GetVersion {
                bucket,
                key,
                version,
            } => MetaResponse::Version(r.version(&bucket, &key, version.as_deref())?),
            Q::ListVersions {
                bucket,
                prefix,
                delimiter,
                key_marker,
                version_marker,
                max_keys,
            } => MetaResponse::Versions(r.list_versions(
                &bucket,
                &prefix,
                delimiter.as_deref(),
                key_marker.as_deref(),
                version_marker.as_deref(),
                (max_keys as usize).clamp(1, 10_000),
            )?),
            Q::GetAdminToken { hash } => MetaResponse::AdminToken(r.admin_token(&hash)?),
            Q::ListAdminTokens => MetaResponse::AdminTokens(r.admin_tokens()?),
            Q::Garbage => MetaResponse::Garbage(tessera_proto::GarbageSummary {
                chunks: r.counter(counter::GARBAGE)?,
                fragments: r.counter(counter::GARBAGE_FRAGMENTS)?,
                bytes: r.counter(counter::GARBAGE_BYTES)?,
                oldest_ms: r.oldest_garbage_ms()?,
                grace_ms: self.config.gc_grace.as_millis() as u64,
            }),
            Q::GetVolume { name } => MetaResponse::Volume(r.volume(&name)?),
            Q::ListVolumes => MetaResponse::Volumes(r.volumes()?),
            Q::VolumeExtents {
                name,
                snapshot,
                first,
                count,
            } => {
                MetaResponse::Extents(r.volume_extents(&name, snapshot.as_deref(), first, count)?)
            }
            Q::ClusterMap | Q::Status | Q::RepairWork { .. } | Q::UnknownFragments { .. } => {
                return Err(MetaError::Internal("query answered above".into()));
            }
        })
    }

    /// Turns a proposal into a command (adding the time and any ids it
    /// draws), applies it, and answers with what it did.
    pub async fn propose(&self, p: Proposal) -> Result<MetaResponse, MetaError> {
        use Proposal as P;
        let at_ms = now_ms();
        let (cmd, write) = match p {
            P::CreateBucket { name, policy } => (
                Command::CreateBucket {
                    name,
                    policy: policy.unwrap_or(self.config.default_policy),
                    at_ms,
                },
                None,
            ),
            P::DeleteBucket { name } => (Command::DeleteBucket { name }, None),
            P::CommitObject {
                bucket,
                key,
                object,
                write,
                condition,
            } => (
                Command::CommitObject {
                    bucket,
                    key,
                    object,
                    at_ms,
                    condition,
                },
                write,
            ),
            P::DeleteObject { bucket, key } => (Command::DeleteObject { bucket, key, at_ms }, None),
            P::ReportCorrupt {
                chunk,
                index,
                node,
                reason,
            } => {
                warn!(%chunk, index, %node, %reason, "corrupt fragment reported");
                let report = CorruptReport {
                    chunk,
                    index,
                    node,
                    reason,
                    at_ms,
                };
                (Command::ReportCorrupt { report }, None)
            }
            P::CommitRepair { chunk, moves } => {
                debug!(%chunk, ?moves, "repair proposed");
                (Command::CommitRepair { chunk, moves }, None)
            }
            P::StartScrub => (Command::RequestScrub, None),
            P::DrainNode { node } => (
                Command::SetNodeAdmin {
                    node,
                    admin: NodeAdmin::Draining,
                },
                None,
            ),
            P::RemoveNode { node } => (Command::RemoveNode { node }, None),
            P::CreateKey { name, id, secret } => {
                let key = AccessKey {
                    id: id.unwrap_or_else(|| random_text(KEY_ID_CHARS, 20)),
                    secret: secret.unwrap_or_else(|| random_text(SECRET_CHARS, 40)),
                    name,
                    created_ms: at_ms,
                    may_create_buckets: true,
                };
                (Command::CreateKey { key }, None)
            }
            P::DeleteKey { id } => (Command::DeleteKey { id }, None),
            P::SetGrant {
                bucket,
                key,
                permission,
            } => (
                Command::SetGrant {
                    bucket,
                    key,
                    permission,
                },
                None,
            ),
            P::CreateUpload {
                bucket,
                key,
                content_type,
                user_meta,
                headers,
                checksum,
            } => {
                let upload = UploadInfo {
                    id: random_text(UPLOAD_ID_CHARS, 32),
                    bucket,
                    key,
                    initiated_ms: at_ms,
                    content_type,
                    user_meta,
                    headers,
                    checksum,
                };
                (Command::CreateUpload { upload }, None)
            }
            P::CommitPart {
                upload,
                number,
                part,
                write,
            } => (
                Command::CommitPart {
                    upload,
                    number,
                    part,
                    at_ms,
                },
                write,
            ),
            P::CompleteUpload {
                upload,
                parts,
                condition,
                checksum,
            } => (
                Command::CompleteUpload {
                    upload,
                    parts,
                    condition,
                    checksum,
                    at_ms,
                },
                None,
            ),
            P::AbortUpload { upload } => (Command::AbortUpload { upload, at_ms }, None),
            P::Rename {
                bucket,
                from,
                to,
                replace,
                keep_dir,
            } => (
                Command::Rename {
                    bucket,
                    from,
                    to,
                    replace,
                    keep_dir,
                    at_ms,
                },
                None,
            ),
            P::PutDir {
                bucket,
                path,
                info,
                create,
            } => (
                Command::PutDir {
                    bucket,
                    path,
                    info,
                    create,
                },
                None,
            ),
            P::RemoveDir {
                bucket,
                path,
                keep_dir,
            } => (
                Command::RemoveDir {
                    bucket,
                    path,
                    keep_dir,
                    at_ms,
                },
                None,
            ),
            P::PatchObject {
                bucket,
                key,
                object,
                write,
                if_absent,
            } => (
                Command::PatchObject {
                    bucket,
                    key,
                    object,
                    if_absent,
                    at_ms,
                },
                write,
            ),
            P::Unlink {
                bucket,
                key,
                keep_dir,
            } => (
                Command::Unlink {
                    bucket,
                    key,
                    keep_dir,
                    at_ms,
                },
                None,
            ),
            P::SetObjectTags { bucket, key, tags } => {
                (Command::SetObjectTags { bucket, key, tags }, None)
            }
            P::SetBucketTags { bucket, tags } => (Command::SetBucketTags { bucket, tags }, None),
            P::SetBucketAccess { bucket, change } => {
                (Command::SetBucketAccess { bucket, change }, None)
            }
            P::SetVersioning { bucket, state } => (Command::SetVersioning { bucket, state }, None),
            P::DeleteVersion {
                bucket,
                key,
                version,
            } => (
                Command::DeleteVersion {
                    bucket,
                    key,
                    version,
                    at_ms,
                    bypass_governance: false,
                },
                None,
            ),
            P::DeleteVersionBypassingGovernance {
                bucket,
                key,
                version,
            } => (
                Command::DeleteVersion {
                    bucket,
                    key,
                    version,
                    at_ms,
                    bypass_governance: true,
                },
                None,
            ),
            P::SetLifecycle { bucket, config } => (Command::SetLifecycle { bucket, config }, None),
            P::SetObjectAcl {
                bucket,
                key,
                version,
                acl,
            } => (
                Command::SetObjectAcl {
                    bucket,
                    key,
                    version,
                    acl,
                },
                None,
            ),
            P::SetStorageClass { class, policy } => {
                (Command::SetStorageClass { class, policy }, None)
            }
            P::Transition {
                item,
                old,
                chunks,
                write,
            } => (
                Command::Transition {
                    item,
                    old,
                    chunks,
                    at_ms,
                },
                write,
            ),
            P::SetObjectLock {
                bucket,
                config,
                enable_versioning,
            } => (
                Command::SetObjectLock {
                    bucket,
                    config,
                    enable_versioning,
                },
                None,
            ),
            P::SetRetention {
                bucket,
                key,
                version,
                retention,
                bypass_governance,
            } => (
                Command::SetRetention {
                    bucket,
                    key,
                    version,
                    retention,
                    bypass_governance,
                    at_ms,
                },
                None,
            ),
            P::SetLegalHold {
                bucket,
                key,
                version,
                on,
            } => (
                Command::SetLegalHold {
                    bucket,
                    key,
                    version,
                    on,
                },
                None,
            ),
            P::SetVersionTags {
                bucket,
                key,
                version,
                tags,
            } => (
                Command::SetVersionTags {
                    bucket,
                    key,
                    version,
                    tags,
                },
                None,
            ),
            P::CreateAdminToken { name, hash } => (
                Command::CreateAdminToken {
                    hash,
                    token: tessera_proto::AdminToken {
                        name,
                        created_ms: at_ms,
                    },
                },
                None,
            ),
            P::DeleteAdminToken { hash } => (Command::DeleteAdminToken { hash }, None),
            P::CreateVolume {
                name,
                size,
                policy,
                block_size,
            } => (
                Command::CreateVolume {
                    name,
                    size,
                    policy: policy.unwrap_or(self.config.default_policy),
                    block_size,
                    at_ms,
                },
                None,
            ),
            P::ResizeVolume {
                name,
                size,
                allow_shrink,
            } => (
                Command::ResizeVolume {
                    name,
                    size,
                    allow_shrink,
                    at_ms,
                },
                None,
            ),
            P::DeleteVolume { name } => (Command::DeleteVolume { name, at_ms }, None),
            P::SnapshotVolume { name, snapshot } => (
                Command::SnapshotVolume {
                    name,
                    snapshot,
                    at_ms,
                },
                None,
            ),
            P::DeleteSnapshot { name, snapshot } => (
                Command::DeleteSnapshot {
                    name,
                    snapshot,
                    at_ms,
                },
                None,
            ),
            P::CloneVolume {
                name,
                snapshot,
                new_name,
            } => (
                Command::CloneVolume {
                    name,
                    snapshot,
                    new_name,
                    at_ms,
                },
                None,
            ),
            P::RollbackVolume { name, snapshot } => (
                Command::RollbackVolume {
                    name,
                    snapshot,
                    at_ms,
                },
                None,
            ),
            P::AttachVolume {
                name,
                holder,
                epoch,
                force,
            } => (
                Command::AttachVolume {
                    name,
                    holder,
                    epoch,
                    force,
                    at_ms,
                },
                None,
            ),
            P::DetachVolume { name, epoch } => (Command::DetachVolume { name, epoch }, None),
            P::CommitVolumeWrites {
                name,
                epoch,
                chunks,
                writes,
                write,
            } => (
                Command::CommitVolumeWrites {
                    name,
                    epoch,
                    chunks,
                    writes,
                    at_ms,
                },
                write,
            ),
        };
        let touches_health = matches!(
            cmd,
            Command::ReportCorrupt { .. }
                | Command::CommitRepair { .. }
                | Command::SetNodeAdmin { .. }
                | Command::RemoveNode { .. }
        );
        let removed = match &cmd {
            Command::RemoveNode { node } => Some(*node),
            _ => None,
        };
        let applied = self.commit(cmd, write).await?;
        match &applied {
            Applied::Repaired { bytes, .. } => self.status.repaired(*bytes),
            Applied::Key(k) => info!(id = %k.id, name = %k.name, "access key created"),
            Applied::ScrubRequested { seq } => info!(seq, "deep scrub requested"),
            _ => {}
        }
        if let Some(node) = removed {
            self.liveness.forget(node);
            info!(%node, "node removed");
        }
        if touches_health {
            self.status.invalidate();
        }
        Ok(response(applied))
    }

    /// Updates soft state.
    async fn lease(self: &Arc<Self>, l: Lease) -> Result<MetaResponse, MetaError> {
        match l {
            Lease::Heartbeat(hb) => Ok(MetaResponse::HeartbeatReply(self.heartbeat(hb).await?)),
            Lease::ReserveChunks { write, chunks } => {
                self.reservations.reserve(write, chunks, Instant::now());
                Ok(MetaResponse::Ok)
            }
        }
    }

    async fn heartbeat(self: &Arc<Self>, hb: Heartbeat) -> Result<HeartbeatReply, MetaError> {
        let node = hb.node;
        let (admin, known) = self
            .blocking(move |m| {
                let sm = m.sm();
                let r = sm.read();
                Ok((r.node_admin(node)?, r.node(node)?))
            })
            .await?;
        if admin == NodeAdmin::Removed {
            return Err(refuse(
                Refused::NodeRemoved,
                format!(
                    "node {node} was removed from the cluster; to join again, start it on an empty data directory"
                ),
            ));
        }
        let changed = match &known {
            Some(n) => n.addr != hb.addr || n.zone != hb.zone || n.capacity != hb.capacity,
            None => true,
        };
        if changed {
            let joined_ms = known.as_ref().map(|n| n.joined_ms).unwrap_or_else(now_ms);
            let record = NodeRecord {
                id: node,
                addr: hb.addr.clone(),
                zone: hb.zone.clone(),
                capacity: hb.capacity,
                joined_ms,
            };
            self.commit(Command::RegisterNode { node: record }, None)
                .await?;
            info!(%node, addr = %hb.addr, zone = ?hb.zone, capacity = hb.capacity, "node registered");
        }
        self.liveness.heard(
            node,
            NodeReport {
                used: hb.used,
                scrub: hb.scrub,
                put_bytes: hb.put_bytes,
                get_bytes: hb.get_bytes,
                ..NodeReport::default()
            },
            self.mono_ms(),
        );
        let scrub_seq = self
            .blocking(|m| m.sm().read().counter(counter::SCRUB_SEQ))
            .await?;
        Ok(HeartbeatReply {
            scrub_seq,
            gc_grace_ms: self.config.gc_grace.as_millis() as u64,
        })
    }
}

pub(super) async fn handle_stream(
    meta: Arc<Meta>,
    peer: PeerIdentity,
    mut send: SendStream,
    mut recv: RecvStream,
) {
    let response = match tokio::time::timeout(
        REQUEST_TIMEOUT,
        read_frame::<MetaRequest>(&mut recv, FrameKind::Request),
    )
    .await
    {
        Err(_) => MetaResponse::Error(RemoteError::new(
            ErrorCode::BadRequest,
            "request not received in time",
        )),
        Ok(Err(e)) => {
            debug!(error = %e, "bad request frame");
            meta.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            MetaResponse::Error(RemoteError::new(
                ErrorCode::BadRequest,
                format!("bad request: {e}"),
            ))
        }
        Ok(Ok(req)) => match meta.handle(req, &peer).await {
            Ok(resp) => resp,
            Err(e) => MetaResponse::Error(to_remote(&e)),
        },
    };
    meta.counters.requests.fetch_add(1, Ordering::Relaxed);
    if matches!(response, MetaResponse::Error(_)) {
        meta.counters.refused.fetch_add(1, Ordering::Relaxed);
    }
    if write_frame(&mut send, FrameKind::Response, &response)
        .await
        .is_ok()
    {
        let _ = send.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads of one object share a batch only while their answers fit in
    /// its frame: past the room left, an answer becomes `TooLarge` (the
    /// client asks alone) and the room is not taken; refusals pass as
    /// they are.
    #[test]
    fn batched_reads_fit_their_frame_or_are_refused_too_large() {
        let answer = || Ok(MetaResponse::Deleted { existed: true });
        let one = postcard::experimental::serialized_size(&MetaResponse::Deleted { existed: true })
            .unwrap();
        let mut room = 2 * one + 1;
        assert!(fit(answer(), &mut room).is_ok());
        assert!(fit(answer(), &mut room).is_ok());
        assert_eq!(room, 1);
        match fit(answer(), &mut room) {
            Err(MetaError::Refused(r)) => assert_eq!(r.kind, Refused::TooLarge),
            other => panic!("{other:?}"),
        }
        assert_eq!(room, 1);
        let refused = Err(refuse(Refused::NoSuchKey, "gone"));
        match fit(refused, &mut room) {
            Err(MetaError::Refused(r)) => assert_eq!(r.kind, Refused::NoSuchKey),
            other => panic!("{other:?}"),
        }
    }
}
