//! Object and bucket tags: kept by meta, one command each (S3's
//! PutObjectTagging and PutBucketTagging replace the whole set).

use tessera_proto::{MetaQuery, MetaResponse, ObjectInfo, Proposal, TagSet};

use crate::{Client, SdkError};

impl Client {
    /// Replaces the tags of the object at `key` (empty: removes them) and
    /// returns the object. Errors: `NoSuchKey`, `InvalidTag`.
    pub async fn set_object_tags(
        &self,
        bucket: &str,
        key: &str,
        tags: TagSet,
    ) -> Result<ObjectInfo, SdkError> {
        match self
            .meta(Proposal::SetObjectTags {
                bucket: bucket.to_string(),
                key: key.to_string(),
                tags,
            })
            .await?
        {
            MetaResponse::Object(o) => Ok(o),
            other => Err(self.unexpected(other)),
        }
    }

    /// Replaces a bucket's tags (empty: removes them). Errors:
    /// `NoSuchBucket`, `InvalidTag`.
    pub async fn set_bucket_tags(&self, bucket: &str, tags: TagSet) -> Result<(), SdkError> {
        self.meta(Proposal::SetBucketTags {
            bucket: bucket.to_string(),
            tags,
        })
        .await
        .map(|_| ())
    }

    /// A bucket's tags, empty when it has none.
    pub async fn bucket_tags(&self, bucket: &str) -> Result<TagSet, SdkError> {
        match self
            .meta(MetaQuery::GetBucketTags {
                bucket: bucket.to_string(),
            })
            .await?
        {
            MetaResponse::Tags(t) => Ok(t),
            other => Err(self.unexpected(other)),
        }
    }
}
