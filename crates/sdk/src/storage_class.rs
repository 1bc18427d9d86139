//! Storage classes (issue 15): the operator's map from an S3 storage class
//! to a policy, the policy a write in a class takes, and the calls the
//! repairer uses to re-encode versions a lifecycle transition moved to
//! another class.

use tessera_proto::{ChunkRecord, MetaQuery, MetaResponse, ObjectInfo, Proposal, TransitionItem};
use tessera_types::{ChunkId, Policy};

use crate::fsview::StagedWrite;
use crate::{Client, SdkError};

impl Client {
    /// The operator's storage classes and their policies, by name.
    pub async fn storage_classes(&self) -> Result<Vec<(String, Policy)>, SdkError> {
        match self.meta(MetaQuery::StorageClasses).await? {
            MetaResponse::StorageClasses(c) => Ok(c),
            other => Err(self.unexpected(other)),
        }
    }

    /// Maps `class` to `policy`, or (`None`) removes its mapping. Errors:
    /// `BadRequest` (STANDARD, or a class objects cannot be written in),
    /// `InvalidPolicy`.
    pub async fn set_storage_class(
        &self,
        class: &str,
        policy: Option<Policy>,
    ) -> Result<(), SdkError> {
        self.meta(Proposal::SetStorageClass {
            class: class.to_string(),
            policy,
        })
        .await
        .map(|_| ())
    }

    /// The policy a write into `bucket` in storage class `class` takes: the
    /// class's when the operator mapped it, else the bucket's.
    pub async fn write_policy(
        &self,
        bucket: &str,
        class: Option<&str>,
    ) -> Result<Policy, SdkError> {
        if let Some(class) = class
            && let Some((_, p)) = self
                .storage_classes()
                .await?
                .into_iter()
                .find(|(c, _)| c == class)
        {
            // The bucket must still exist; its policy is not used.
            self.bucket(bucket).await?;
            return Ok(p);
        }
        Ok(self.bucket(bucket).await?.policy)
    }

    /// Up to `limit` versions waiting to be re-encoded for a lifecycle
    /// transition.
    pub async fn transition_work(&self, limit: usize) -> Result<Vec<TransitionItem>, SdkError> {
        match self.meta(MetaQuery::TransitionWork { limit }).await? {
            MetaResponse::Transitions(t) => Ok(t),
            other => Err(self.unexpected(other)),
        }
    }

    /// Chunk-at-a-time writes in `policy` (a transition's re-encoding).
    pub async fn staged_write_in(&self, policy: Policy) -> Result<StagedWrite, SdkError> {
        let map = self.cluster_map().await?;
        Ok(StagedWrite::new(self.clone(), policy, map))
    }

    /// Swaps the version `item` names from its chunks `old` (as read) to
    /// `chunks` (written through `staged`), if it is unchanged: the version
    /// as stored now, or `None` when it changed meanwhile and was left
    /// alone (the new chunks are then garbage).
    pub async fn commit_transition(
        &self,
        item: &TransitionItem,
        old: Vec<ChunkId>,
        chunks: Vec<ChunkRecord>,
        staged: Option<&StagedWrite>,
    ) -> Result<Option<ObjectInfo>, SdkError> {
        match self
            .meta(Proposal::Transition {
                item: item.clone(),
                old,
                chunks,
                write: staged.map(StagedWrite::reservation),
            })
            .await?
        {
            MetaResponse::Object(o) => Ok(Some(o)),
            MetaResponse::Deleted { .. } => Ok(None),
            other => Err(self.unexpected(other)),
        }
    }
}
