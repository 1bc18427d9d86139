//! Bucket access settings (CORS rules, policy, PublicAccessBlock, ACL) and
//! object ACLs: kept by meta, one command per change; their meaning is the
//! S3 gateway's.

use tessera_proto::{
    AccessChange, Acl, BucketAccess, MetaQuery, MetaResponse, ObjectInfo, Proposal,
};

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

    /// Replaces the ACL of one version of an object (`None`: the current
    /// object; `acl: None`: private) and returns the object. Errors:
    /// `NoSuchBucket`, `NoSuchKey`, `NoSuchVersion`, `MethodNotAllowed` (a
    /// delete marker), `BadRequest` beyond meta's limits.
    pub async fn set_object_acl(
        &self,
        (bucket, key, version): (&str, &str, Option<&str>),
        acl: Option<Acl>,
    ) -> Result<ObjectInfo, SdkError> {
        match self
            .meta(Proposal::SetObjectAcl {
                bucket: bucket.to_string(),
                key: key.to_string(),
                version: version.map(str::to_string),
                acl,
            })
            .await?
        {
            MetaResponse::Object(o) => Ok(o),
            other => Err(self.unexpected(other)),
        }
    }
}
