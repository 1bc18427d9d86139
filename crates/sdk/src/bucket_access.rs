//! Bucket access settings (CORS rules, policy, PublicAccessBlock, canned
//! ACL): kept by meta, one command per change; their meaning is the S3
//! gateway's.

use tessera_proto::{AccessChange, BucketAccess, MetaQuery, MetaResponse, Proposal};

use crate::{Client, SdkError};

impl Client {
    /// A bucket's access settings (all empty when it has none). Errors:
    /// `NoSuchBucket`.
    pub async fn bucket_access(&self, bucket: &str) -> Result<BucketAccess, SdkError> {
        match self
            .meta(MetaQuery::GetBucketAccess {
                bucket: bucket.to_string(),
            })
            .await?
        {
            MetaResponse::BucketAccess(a) => Ok(a),
            other => Err(self.unexpected(other)),
        }
    }

    /// Changes one of a bucket's access settings. Errors: `NoSuchBucket`,
    /// `BadRequest` beyond meta's limits.
    pub async fn set_bucket_access(
        &self,
        bucket: &str,
        change: AccessChange,
    ) -> Result<(), SdkError> {
        self.meta(Proposal::SetBucketAccess {
            bucket: bucket.to_string(),
            change,
        })
        .await
        .map(|_| ())
    }
}
