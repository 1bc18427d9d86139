//! Bucket versioning (S3 User Guide, "Retaining multiple versions of
//! objects with S3 Versioning"): meta keeps every version; these calls
//! name them. A version is named as S3 names it: its id, or `null`.

use tessera_proto::{
    MetaQuery, MetaResponse, ObjectInfo, ObjectVersion, Proposal, Removal, TagSet, VersionListing,
    Versioning,
};

use crate::{Client, SdkError};

/// What a page of versions is asked for (S3's ListObjectVersions).
#[derive(Debug, Clone, Default)]
pub struct VersionListOptions {
    pub prefix: String,
    pub delimiter: Option<String>,
    /// Start after this key (or, with `version_marker`, after that version
    /// of it).
    pub key_marker: Option<String>,
    pub version_marker: Option<String>,
    /// Entries per page (versions and common prefixes); 0 means 1000.
    pub max_keys: u32,
}

impl Client {
    /// Enables or suspends versioning of `bucket`. Errors: `NoSuchBucket`.
    pub async fn set_versioning(&self, bucket: &str, state: Versioning) -> Result<(), SdkError> {
        self.meta(Proposal::SetVersioning {
            bucket: bucket.to_string(),
            state,
        })
        .await
        .map(|_| ())
    }

    /// A bucket's versioning state; `None` if it was never versioned.
    pub async fn versioning(&self, bucket: &str) -> Result<Option<Versioning>, SdkError> {
        match self
            .meta(MetaQuery::GetVersioning {
                bucket: bucket.to_string(),
            })
            .await?
        {
            MetaResponse::Versioning(v) => Ok(v),
            other => Err(self.unexpected(other)),
        }
    }

    /// One version of `key` (`version`: an id or `null`), or its newest
    /// version, which may be a delete marker, when `None`. Errors:
    /// `NoSuchKey`, `NoSuchVersion`, `BadRequest` (a malformed id).
    pub async fn version(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> Result<ObjectVersion, SdkError> {
        match self
            .meta(MetaQuery::GetVersion {
                bucket: bucket.to_string(),
                key: key.to_string(),
                version: version.map(str::to_string),
            })
            .await?
        {
            MetaResponse::Version(v) => Ok(v),
            other => Err(self.unexpected(other)),
        }
    }

    /// One page of versions and delete markers; pass `next_key` and
    /// `next_version` back as the markers for the next.
    pub async fn list_versions(
        &self,
        bucket: &str,
        opts: &VersionListOptions,
    ) -> Result<VersionListing, SdkError> {
        let req = MetaQuery::ListVersions {
            bucket: bucket.to_string(),
            prefix: opts.prefix.clone(),
            delimiter: opts.delimiter.clone(),
            key_marker: opts.key_marker.clone(),
            version_marker: opts.version_marker.clone(),
            max_keys: if opts.max_keys == 0 {
                1000
            } else {
                opts.max_keys
            },
        };
        match self.meta(req).await? {
            MetaResponse::Versions(l) => Ok(l),
            other => Err(self.unexpected(other)),
        }
    }

    /// S3's DeleteObject without a version id: removes the object, or,
    /// in a bucket that keeps versions, places a delete marker.
    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<Removal, SdkError> {
        match self
            .meta(Proposal::DeleteObject {
                bucket: bucket.to_string(),
                key: key.to_string(),
            })
            .await?
        {
            MetaResponse::Removed(r) => Ok(r),
            other => Err(self.unexpected(other)),
        }
    }

    /// Removes one version for good (`version`: an id or `null`).
    /// Errors: `BadRequest` (a malformed id).
    pub async fn delete_version(
        &self,
        bucket: &str,
        key: &str,
        version: &str,
    ) -> Result<Removal, SdkError> {
        match self
            .meta(Proposal::DeleteVersion {
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

    /// Replaces the tags of one version and returns it. Errors:
    /// `NoSuchVersion`, `MethodNotAllowed` (a delete marker), `InvalidTag`.
    pub async fn set_version_tags(
        &self,
        bucket: &str,
        key: &str,
        version: &str,
        tags: TagSet,
    ) -> Result<ObjectInfo, SdkError> {
        match self
            .meta(Proposal::SetVersionTags {
                bucket: bucket.to_string(),
                key: key.to_string(),
                version: version.to_string(),
                tags,
            })
            .await?
        {
            MetaResponse::Object(o) => Ok(o),
            other => Err(self.unexpected(other)),
        }
    }
}
