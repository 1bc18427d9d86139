//! Bucket lifecycle configurations (S3 User Guide, "Managing the lifecycle
//! of objects"): kept by meta, applied by the meta leader's lifecycle
//! worker, whose progress is read here.

use tessera_proto::{LifecycleConfig, LifecycleProgress, MetaQuery, MetaResponse, Proposal};

use crate::{Client, SdkError};

impl Client {
    /// Sets (`Some`) or removes (`None`) a bucket's lifecycle
    /// configuration. Errors: `NoSuchBucket`, `BadRequest` beyond meta's
    /// limits.
    pub async fn set_lifecycle(
        &self,
        bucket: &str,
        config: Option<LifecycleConfig>,
    ) -> Result<(), SdkError> {
        self.meta(Proposal::SetLifecycle {
            bucket: bucket.to_string(),
            config,
        })
        .await
        .map(|_| ())
    }

    /// A bucket's lifecycle configuration; `None` without one. Errors:
    /// `NoSuchBucket`.
    pub async fn lifecycle(&self, bucket: &str) -> Result<Option<LifecycleConfig>, SdkError> {
        match self
            .meta(MetaQuery::GetLifecycle {
                bucket: bucket.to_string(),
            })
            .await?
        {
            MetaResponse::Lifecycle(c) => Ok(c),
            other => Err(self.unexpected(other)),
        }
    }

    /// The lifecycle worker's progress and totals.
    pub async fn lifecycle_status(&self) -> Result<LifecycleProgress, SdkError> {
        match self.meta(MetaQuery::LifecycleStatus).await? {
            MetaResponse::LifecycleProgress(p) => Ok(p),
            other => Err(self.unexpected(other)),
        }
    }
}
