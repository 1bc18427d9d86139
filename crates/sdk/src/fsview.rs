//! What a file-system mount needs beyond S3's object calls: lookups that
//! tell directories from objects, directory listings and entries, removals
//! that keep the directory, and writes of single chunks that a
//! copy-on-write commit then splices into an object.

use std::sync::Arc;

use tessera_proto::{
    ChunkRecord, ClusterMap, DirInfo, DirListing, Found, MetaQuery, MetaRequest, MetaResponse,
    NewObject, ObjectInfo, Proposal,
};
use tessera_types::Policy;

use crate::write::Reservation;
use crate::{Client, SdkError};

/// Chunks written one at a time under one write reservation, renewed while
/// this lives, for a later `Client::patch_object`. Chunks written and never
/// committed are garbage once this is dropped.
pub struct StagedWrite {
    client: Client,
    policy: Policy,
    map: Arc<ClusterMap>,
    reservation: Reservation,
}

impl StagedWrite {
    /// Writes in `policy` onto the nodes of `map`, under a new reservation.
    pub(crate) fn new(client: Client, policy: Policy, map: Arc<ClusterMap>) -> Self {
        let reservation = client.reserve(&map);
        StagedWrite {
            client,
            policy,
            map,
            reservation,
        }
    }

    /// The write reservation its chunks are under (what a commit names).
    pub fn reservation(&self) -> u64 {
        self.reservation.id
    }

    /// Encodes `data` as one chunk of the bucket's policy and stores its
    /// fragments; counts against the client's write budget.
    pub async fn write_chunk(&self, data: Vec<u8>) -> Result<ChunkRecord, SdkError> {
        let _permit = self
            .client
            .inner
            .write_budget
            .acquire()
            .await
            .map_err(|_| SdkError::Invalid("write budget closed".into()))?;
        self.client
            .write_chunk(data.into(), self.policy, &self.map, self.reservation.id)
            .await
    }
}

impl Client {
    /// The chunk size this client cuts objects into.
    pub fn chunk_size(&self) -> usize {
        self.inner.options.chunk_size
    }

    /// Starts chunk-at-a-time writes into `bucket`.
    pub async fn staged_write(&self, bucket: &str) -> Result<StagedWrite, SdkError> {
        let policy = self.bucket(bucket).await?.policy;
        let map = self.cluster_map().await?;
        Ok(StagedWrite::new(self.clone(), policy, map))
    }

    /// Commits a new version of `key` that may reuse chunks of the current
    /// one (see `Proposal::PatchObject`); new chunks must come from
    /// `staged`.
    pub async fn patch_object(
        &self,
        bucket: &str,
        key: &str,
        object: NewObject,
        staged: Option<&StagedWrite>,
        if_absent: bool,
    ) -> Result<ObjectInfo, SdkError> {
        let write = staged
            .filter(|_| !object.chunks.is_empty())
            .map(|s| s.reservation.id);
        match self
            .meta(Proposal::PatchObject {
                bucket: bucket.to_string(),
                key: key.to_string(),
                object,
                write,
                if_absent,
            })
            .await?
        {
            MetaResponse::Object(o) => Ok(o),
            other => Err(self.unexpected(other)),
        }
    }

    /// What `key` is in the file-system view.
    pub async fn lookup(&self, bucket: &str, key: &str) -> Result<Found, SdkError> {
        match self
            .meta(MetaQuery::Lookup {
                bucket: bucket.to_string(),
                key: key.to_string(),
            })
            .await?
        {
            MetaResponse::Found(f) => Ok(f),
            other => Err(self.unexpected(other)),
        }
    }

    /// One page of directory `prefix` (empty or ending in `/`).
    pub async fn list_dir(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<DirListing, SdkError> {
        match self
            .meta(MetaQuery::ListDir {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
                after: after.map(String::from),
                limit,
            })
            .await?
        {
            MetaResponse::DirListing(l) => Ok(l),
            other => Err(self.unexpected(other)),
        }
    }

    /// Records directory `path` (ending in `/`); with `create`, refused with
    /// `PreconditionFailed` if it exists.
    pub async fn put_dir(
        &self,
        bucket: &str,
        path: &str,
        info: DirInfo,
        create: bool,
    ) -> Result<(), SdkError> {
        self.expect_done(Proposal::PutDir {
            bucket: bucket.to_string(),
            path: path.to_string(),
            info,
            create,
        })
        .await
    }

    /// Removes empty directory `path` (`NotEmpty` otherwise).
    pub async fn remove_dir(
        &self,
        bucket: &str,
        path: &str,
        keep_dir: Option<&str>,
    ) -> Result<(), SdkError> {
        self.expect_done(Proposal::RemoveDir {
            bucket: bucket.to_string(),
            path: path.to_string(),
            keep_dir: keep_dir.map(String::from),
        })
        .await
    }

    /// Deletes object `key` (`NoSuchKey` if absent), giving `keep_dir` an
    /// entry so the directory it was in stays.
    pub async fn unlink(
        &self,
        bucket: &str,
        key: &str,
        keep_dir: Option<&str>,
    ) -> Result<(), SdkError> {
        self.expect_done(Proposal::Unlink {
            bucket: bucket.to_string(),
            key: key.to_string(),
            keep_dir: keep_dir.map(String::from),
        })
        .await
    }

    /// `rename`, also keeping directory `keep_dir`.
    pub async fn rename_keeping(
        &self,
        bucket: &str,
        from: &str,
        to: &str,
        replace: bool,
        keep_dir: Option<&str>,
    ) -> Result<u64, SdkError> {
        match self
            .meta(Proposal::Rename {
                bucket: bucket.to_string(),
                from: from.to_string(),
                to: to.to_string(),
                replace,
                keep_dir: keep_dir.map(String::from),
            })
            .await?
        {
            MetaResponse::Renamed { objects } => Ok(objects),
            other => Err(self.unexpected(other)),
        }
    }

    async fn expect_done(&self, req: impl Into<MetaRequest>) -> Result<(), SdkError> {
        match self.meta(req).await? {
            MetaResponse::Ok | MetaResponse::Deleted { .. } => Ok(()),
            other => Err(self.unexpected(other)),
        }
    }
}
