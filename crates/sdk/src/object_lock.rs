//! Object Lock (S3 User Guide, "Locking objects with Object Lock"): a
//! bucket's configuration, a version's retention and legal hold, and the
//! delete that may bypass a GOVERNANCE retention. Meta decides every rule
//! in the command that changes or removes a version.

use tessera_proto::{
    MetaQuery, MetaResponse, ObjectInfo, ObjectLockConfig, Proposal, Removal, Retention,
};

use crate::{Client, SdkError};

impl Client {
    /// Sets `bucket`'s Object Lock configuration; `enable_versioning`
    /// enables versioning in the same step (a bucket created with Object
    /// Lock). Errors: `NoSuchBucket`, `InvalidBucketState` (versioning not
    /// Enabled).
    pub async fn set_object_lock(
        &self,
        bucket: &str,
        config: ObjectLockConfig,
        enable_versioning: bool,
    ) -> Result<(), SdkError> {
        self.meta(Proposal::SetObjectLock {
            bucket: bucket.to_string(),
            config,
            enable_versioning,
        })
        .await
        .map(|_| ())
    }

    /// A bucket's Object Lock configuration; `None` without Object Lock.
    /// Errors: `NoSuchBucket`.
    pub async fn object_lock(&self, bucket: &str) -> Result<Option<ObjectLockConfig>, SdkError> {
        match self
            .meta(MetaQuery::GetObjectLock {
                bucket: bucket.to_string(),
            })
            .await?
        {
            MetaResponse::ObjectLock(c) => Ok(c),
            other => Err(self.unexpected(other)),
        }
    }

    /// Sets (`None`: removes) the retention of a version (`version`: an id
    /// or `null`; `None`: the current object) and returns it. Errors:
    /// `InvalidRequest` (no Object Lock), `ObjectLocked` (a running
    /// retention shortened), `NoSuchKey`, `NoSuchVersion`,
    /// `MethodNotAllowed`.
    pub async fn set_retention(
        &self,
        (bucket, key, version): (&str, &str, Option<&str>),
        retention: Option<Retention>,
        bypass_governance: bool,
    ) -> Result<ObjectInfo, SdkError> {
        match self
            .meta(Proposal::SetRetention {
                bucket: bucket.to_string(),
                key: key.to_string(),
                version: version.map(str::to_string),
                retention,
                bypass_governance,
            })
            .await?
        {
            MetaResponse::Object(o) => Ok(o),
            other => Err(self.unexpected(other)),
        }
    }

    /// Turns a version's legal hold on or off and returns it. Errors as
    /// `set_retention`'s, but `ObjectLocked`.
    pub async fn set_legal_hold(
        &self,
        (bucket, key, version): (&str, &str, Option<&str>),
        on: bool,
    ) -> Result<ObjectInfo, SdkError> {
        match self
            .meta(Proposal::SetLegalHold {
                bucket: bucket.to_string(),
                key: key.to_string(),
                version: version.map(str::to_string),
                on,
            })
            .await?
        {
            MetaResponse::Object(o) => Ok(o),
            other => Err(self.unexpected(other)),
        }
    }

    /// `delete_version` for a caller allowed to bypass GOVERNANCE
    /// retention. Errors: `ObjectLocked` (COMPLIANCE, legal hold).
    pub async fn delete_version_bypassing_governance(
        &self,
        bucket: &str,
        key: &str,
        version: &str,
    ) -> Result<Removal, SdkError> {
        match self
            .meta(Proposal::DeleteVersionBypassingGovernance {
                bucket: bucket.to_string(),
                key: key.to_string(),
                version: version.to_string(),
            })
            .await?
        {
            MetaResponse::Removed(r) => Ok(r),
            other => Err(self.unexpected(other)),
        }
    }
}
