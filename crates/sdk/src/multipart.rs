//! Multipart uploads: parts are stored (and reserved, and committed) one by
//! one as they arrive, and completion makes their chunks one object in one
//! meta command, copying no data.

use std::collections::BTreeMap;

use tessera_proto::{
    MetaQuery, MetaResponse, ObjectInfo, PartInfo, Proposal, UploadChecksum, UploadInfo,
    WriteCondition,
};
use tessera_types::validate_key;

use crate::{Client, PutOptions, SdkError};

impl Client {
    /// Starts a multipart upload of `bucket/key` whose object gets `opts`'
    /// metadata and, when given, a `checksum` formed from its parts'.
    pub async fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        opts: PutOptions,
        checksum: Option<UploadChecksum>,
    ) -> Result<UploadInfo, SdkError> {
        validate_key(key)
            .map_err(|e| Client::remote(tessera_proto::ErrorCode::InvalidKey, e.to_string()))?;
        let req = Proposal::CreateUpload {
            bucket: bucket.to_string(),
            key: key.to_string(),
            content_type: opts.content_type,
            user_meta: opts.user_meta.into_iter().collect::<BTreeMap<_, _>>(),
            headers: opts.headers,
            checksum,
        };
        match self.meta(req).await? {
            MetaResponse::Upload(u) => Ok(u),
            other => Err(self.unexpected(other)),
        }
    }

    pub async fn upload(&self, id: &str) -> Result<UploadInfo, SdkError> {
        let req = MetaQuery::GetUpload {
            upload: id.to_string(),
        };
        match self.meta(req).await? {
            MetaResponse::Upload(u) => Ok(u),
            other => Err(self.unexpected(other)),
        }
    }

    /// Makes `parts` (number, ETag), in ascending order, the object, if
    /// the key's current object meets `condition` at that moment.
    /// `checksum` (algorithm, base64 value, `-N` ending a composite one) is
    /// stored as the object's, with the parts' checksums of that algorithm;
    /// a listed part without one refuses the completion (`InvalidPart`).
    pub async fn complete_upload(
        &self,
        id: &str,
        parts: Vec<(u32, String)>,
        condition: WriteCondition,
        checksum: Option<(String, String)>,
    ) -> Result<ObjectInfo, SdkError> {
        let req = Proposal::CompleteUpload {
            upload: id.to_string(),
            parts,
            condition,
            checksum,
        };
        match self.meta(req).await? {
            MetaResponse::Object(o) => Ok(o),
            other => Err(self.unexpected(other)),
        }
    }

    pub async fn abort_upload(&self, id: &str) -> Result<(), SdkError> {
        let req = Proposal::AbortUpload {
            upload: id.to_string(),
        };
        match self.meta(req).await? {
            MetaResponse::Deleted { .. } | MetaResponse::Ok => Ok(()),
            other => Err(self.unexpected(other)),
        }
    }

    pub async fn list_parts(&self, id: &str) -> Result<Vec<PartInfo>, SdkError> {
        let req = MetaQuery::ListParts {
            upload: id.to_string(),
        };
        match self.meta(req).await? {
            MetaResponse::Parts(p) => Ok(p),
            other => Err(self.unexpected(other)),
        }
    }

    pub async fn list_uploads(&self, bucket: &str) -> Result<Vec<UploadInfo>, SdkError> {
        let req = MetaQuery::ListUploads {
            bucket: bucket.to_string(),
        };
        match self.meta(req).await? {
            MetaResponse::Uploads(u) => Ok(u),
            other => Err(self.unexpected(other)),
        }
    }
}
