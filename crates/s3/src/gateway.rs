//! The S3 trait implemented over the SDK, and the axum router around it.

use std::time::{Duration, UNIX_EPOCH};

use s3s::auth::{S3Auth, SecretKey};
use s3s::dto::{self, StreamingBlob, Timestamp};
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use tessera_proto::{ErrorCode, ListEntry, ObjectInfo, Permission, UploadInfo};
use tessera_sdk::{Client, ListOptions, PutOptions, SdkError};
use tokio_util::io::{ReaderStream, StreamReader};
use tracing::debug;

/// Bytes buffered between the SDK's reader and the HTTP response.
const GET_PIPE: usize = 1 << 20;

/// The S3 service: one SDK client shared by every request.
#[derive(Clone)]
pub struct Gateway {
    client: Client,
}

impl Gateway {
    pub fn new(client: Client) -> Self {
        Gateway { client }
    }

    /// Refuses unless the request's key holds `need` (or more) on `bucket`.
    async fn allow<T>(&self, req: &S3Request<T>, bucket: &str, need: Permission) -> S3Result<()> {
        let cred = signed(req)?;
        let grants = self
            .client
            .grants(Some(bucket), Some(&cred.access_key))
            .await
            .map_err(to_s3)?;
        if grants.iter().any(|g| g.permission >= need) {
            return Ok(());
        }
        // A bucket that does not exist is NoSuchBucket to anyone signed.
        self.client.bucket(bucket).await.map_err(to_s3)?;
        Err(s3_error!(
            AccessDenied,
            "access key {} may not {} bucket {bucket}",
            cred.access_key,
            match need {
                Permission::Read => "read",
                Permission::Write => "write to",
                Permission::Owner => "administer",
            }
        ))
    }
}

/// The request's credentials: every operation needs a signed caller.
fn signed<T>(req: &S3Request<T>) -> S3Result<&s3s::auth::Credentials> {
    req.credentials
        .as_ref()
        .ok_or_else(|| s3_error!(AccessDenied, "anonymous requests are not allowed"))
}

/// Tessera's error classes as S3 error codes.
fn to_s3(e: SdkError) -> S3Error {
    let code = match e.code() {
        Some(ErrorCode::NoSuchBucket) => S3ErrorCode::NoSuchBucket,
        Some(ErrorCode::NoSuchKey) => S3ErrorCode::NoSuchKey,
        Some(ErrorCode::BucketExists) => S3ErrorCode::BucketAlreadyOwnedByYou,
        Some(ErrorCode::BucketNotEmpty) => S3ErrorCode::BucketNotEmpty,
        Some(ErrorCode::InvalidBucketName) => S3ErrorCode::InvalidBucketName,
        Some(ErrorCode::InvalidKey) => S3ErrorCode::KeyTooLongError,
        Some(ErrorCode::InvalidPolicy) => S3ErrorCode::InvalidArgument,
        Some(ErrorCode::NotFound) => S3ErrorCode::InvalidAccessKeyId,
        Some(ErrorCode::NoSuchUpload) => S3ErrorCode::NoSuchUpload,
        Some(ErrorCode::InvalidPart) => S3ErrorCode::InvalidPart,
        Some(ErrorCode::EntityTooSmall) => S3ErrorCode::EntityTooSmall,
        Some(ErrorCode::BadRequest) => S3ErrorCode::InvalidArgument,
        Some(ErrorCode::PreconditionFailed) => S3ErrorCode::PreconditionFailed,
        Some(ErrorCode::BadDigest) => S3ErrorCode::BadDigest,
        Some(ErrorCode::NoSpace | ErrorCode::NotEnoughNodes) => S3ErrorCode::ServiceUnavailable,
        _ => S3ErrorCode::InternalError,
    };
    debug!(error = %e, ?code, "request refused");
    S3Error::with_message(code, e.to_string())
}

fn timestamp(ms: u64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_millis(ms))
}

/// A Content-MD5 header: base64 of 16 bytes.
fn decode_md5(b64: &str) -> S3Result<[u8; 16]> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()
        .and_then(|v| <[u8; 16]>::try_from(v).ok())
        .ok_or_else(|| s3_error!(InvalidDigest, "Content-MD5 is not the base64 of 16 bytes"))
}

fn unix_seconds(t: &Timestamp) -> i64 {
    time::OffsetDateTime::from(t.clone()).unix_timestamp()
}

/// HTTP preconditions on GET and HEAD (RFC 9110 order): If-Match, else
/// If-Unmodified-Since, may fail with 412; If-None-Match, else
/// If-Modified-Since, may answer 304. Dates have one-second resolution.
fn preconditions(
    info: &ObjectInfo,
    if_match: Option<&dto::ETagCondition>,
    if_none_match: Option<&dto::ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> S3Result<()> {
    let matches = |c: &dto::ETagCondition| match c {
        dto::ETagCondition::Any => true,
        dto::ETagCondition::ETag(e) => e.value() == info.etag,
    };
    let mtime = (info.mtime_ms / 1000) as i64;
    if let Some(c) = if_match {
        if !matches(c) {
            return Err(s3_error!(PreconditionFailed, "If-Match: the ETag differs"));
        }
    } else if let Some(t) = if_unmodified_since
        && mtime > unix_seconds(t)
    {
        return Err(s3_error!(
            PreconditionFailed,
            "modified since the given time"
        ));
    }
    if let Some(c) = if_none_match {
        if matches(c) {
            return Err(S3Error::new(S3ErrorCode::NotModified));
        }
    } else if let Some(t) = if_modified_since
        && mtime <= unix_seconds(t)
    {
        return Err(S3Error::new(S3ErrorCode::NotModified));
    }
    Ok(())
}

fn etag(info: &ObjectInfo) -> dto::ETag {
    dto::ETag::Strong(info.etag.clone())
}

#[async_trait::async_trait]
impl S3 for Gateway {
    async fn list_buckets(
        &self,
        req: S3Request<dto::ListBucketsInput>,
    ) -> S3Result<S3Response<dto::ListBucketsOutput>> {
        let cred = signed(&req)?;
        let granted = self
            .client
            .grants(None, Some(&cred.access_key))
            .await
            .map_err(to_s3)?;
        let buckets = self
            .client
            .list_buckets()
            .await
            .map_err(to_s3)?
            .into_iter()
            .filter(|b| granted.iter().any(|g| g.bucket == b.name))
            .map(|b| dto::Bucket {
                name: Some(b.name),
                creation_date: Some(timestamp(b.created_ms)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(dto::ListBucketsOutput {
            buckets: Some(buckets),
            ..Default::default()
        }))
    }

    async fn create_bucket(
        &self,
        req: S3Request<dto::CreateBucketInput>,
    ) -> S3Result<S3Response<dto::CreateBucketOutput>> {
        let cred = signed(&req)?;
        let key = self
            .client
            .access_key(&cred.access_key)
            .await
            .map_err(to_s3)?;
        if !key.may_create_buckets {
            return Err(s3_error!(AccessDenied, "this key may not create buckets"));
        }
        // A storage policy may come as the location constraint (ec:4+2, rep:3).
        let policy = req
            .input
            .create_bucket_configuration
            .as_ref()
            .and_then(|c| c.location_constraint.as_ref())
            .and_then(|l| l.as_str().parse().ok());
        let bucket = &req.input.bucket;
        self.client
            .create_bucket(bucket, policy)
            .await
            .map_err(to_s3)?;
        self.client
            .set_grant(bucket, &cred.access_key, Some(Permission::Owner))
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(dto::CreateBucketOutput {
            location: Some(format!("/{bucket}")),
        }))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<dto::DeleteBucketInput>,
    ) -> S3Result<S3Response<dto::DeleteBucketOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Owner)
            .await?;
        self.client
            .delete_bucket(&req.input.bucket)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(dto::DeleteBucketOutput {}))
    }

    async fn head_bucket(
        &self,
        req: S3Request<dto::HeadBucketInput>,
    ) -> S3Result<S3Response<dto::HeadBucketOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Read)
            .await?;
        Ok(S3Response::new(dto::HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<dto::GetBucketLocationInput>,
    ) -> S3Result<S3Response<dto::GetBucketLocationOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Read)
            .await?;
        Ok(S3Response::new(dto::GetBucketLocationOutput::default()))
    }

    async fn put_object(
        &self,
        req: S3Request<dto::PutObjectInput>,
    ) -> S3Result<S3Response<dto::PutObjectOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Write)
            .await?;
        let input = req.input;
        let body = input.body.ok_or_else(|| s3_error!(IncompleteBody))?;
        let reader = body_reader(body);
        let content_md5 = match &input.content_md5 {
            Some(b64) => Some(decode_md5(b64)?),
            None => None,
        };
        // Conditional create: If-None-Match: * (other forms are for reads).
        let if_absent = matches!(input.if_none_match, Some(dto::ETagCondition::Any));
        let opts = PutOptions {
            content_type: input.content_type.map(|c| c.to_string()),
            user_meta: input.metadata.unwrap_or_default().into_iter().collect(),
            if_absent,
            content_md5,
        };
        let info = self
            .client
            .put(&input.bucket, &input.key, reader, opts)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(dto::PutObjectOutput {
            e_tag: Some(etag(&info)),
            size: Some(info.size as i64),
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<dto::GetObjectInput>,
    ) -> S3Result<S3Response<dto::GetObjectOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Read)
            .await?;
        let input = req.input;
        let info = self
            .client
            .head(&input.bucket, &input.key)
            .await
            .map_err(to_s3)?;
        preconditions(
            &info,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        let range = match &input.range {
            Some(r) => Some(
                r.check(info.size)
                    .map_err(|_| s3_error!(InvalidRange, "the range is outside the object"))?,
            ),
            None => None,
        };
        let len = range.as_ref().map_or(info.size, |r| r.end - r.start);
        let content_range = range.as_ref().map(|r| {
            format!(
                "bytes {}-{}/{}",
                r.start,
                r.end.saturating_sub(1),
                info.size
            )
        });
        // The SDK writes verified bytes into a pipe that the response reads:
        // memory stays at the pipe's size whatever the object's.
        let (mut tx, rx) = tokio::io::duplex(GET_PIPE);
        let client = self.client.clone();
        let object = info.clone();
        tokio::spawn(async move {
            if let Err(e) = client.read_object(&object, range, &mut tx).await {
                // The response ends short; the client sees a truncated body.
                tracing::warn!(key = %object.key, error = %e, "GET failed mid-stream");
            }
        });
        Ok(S3Response::new(dto::GetObjectOutput {
            body: Some(StreamingBlob::wrap(ReaderStream::new(rx))),
            content_length: Some(len as i64),
            content_range,
            // response-* query parameters (presigned downloads) override
            // what the object says.
            content_type: input.response_content_type.or(info.content_type.clone()),
            content_disposition: input.response_content_disposition,
            content_encoding: input.response_content_encoding,
            content_language: input.response_content_language,
            cache_control: input.response_cache_control,
            expires: input.response_expires,
            e_tag: Some(etag(&info)),
            last_modified: Some(timestamp(info.mtime_ms)),
            metadata: Some(info.user_meta.clone().into_iter().collect()),
            accept_ranges: Some("bytes".into()),
            ..Default::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<dto::HeadObjectInput>,
    ) -> S3Result<S3Response<dto::HeadObjectOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Read)
            .await?;
        let input = &req.input;
        let info = self
            .client
            .head(&input.bucket, &input.key)
            .await
            .map_err(to_s3)?;
        preconditions(
            &info,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        Ok(S3Response::new(dto::HeadObjectOutput {
            content_length: Some(info.size as i64),
            content_type: info.content_type.clone(),
            e_tag: Some(etag(&info)),
            last_modified: Some(timestamp(info.mtime_ms)),
            metadata: Some(info.user_meta.clone().into_iter().collect()),
            accept_ranges: Some("bytes".into()),
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<dto::DeleteObjectInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Write)
            .await?;
        self.client
            .delete(&req.input.bucket, &req.input.key)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(dto::DeleteObjectOutput::default()))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<dto::ListObjectsV2Input>,
    ) -> S3Result<S3Response<dto::ListObjectsV2Output>> {
        self.allow(&req, &req.input.bucket, Permission::Read)
            .await?;
        let input = req.input;
        let max_keys = input.max_keys.unwrap_or(1000).clamp(0, 1000);
        let url = wants_url(&input.encoding_type);
        // The continuation token is the last key or prefix returned.
        let after = input
            .continuation_token
            .clone()
            .or_else(|| input.start_after.clone());
        let (contents, prefixes, next) = self
            .list(
                &input.bucket,
                input.prefix.clone(),
                input.delimiter.clone(),
                after,
                max_keys,
                url,
            )
            .await?;
        let enc = |s: Option<String>| s.map(|s| encode_if(url, s));
        Ok(S3Response::new(dto::ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: enc(input.prefix),
            delimiter: enc(input.delimiter),
            max_keys: Some(max_keys),
            key_count: Some((contents.len() + prefixes.len()) as i32),
            is_truncated: Some(next.is_some()),
            continuation_token: input.continuation_token,
            next_continuation_token: next,
            start_after: enc(input.start_after),
            contents: Some(contents),
            common_prefixes: Some(prefixes),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn delete_objects(
        &self,
        req: S3Request<dto::DeleteObjectsInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectsOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Write)
            .await?;
        let input = req.input;
        let quiet = input.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for o in input.delete.objects {
            // Deleting a missing key succeeds, as in S3.
            match self.client.delete(&input.bucket, &o.key).await {
                Ok(_) if quiet => {}
                Ok(_) => deleted.push(dto::DeletedObject {
                    key: Some(o.key),
                    ..Default::default()
                }),
                Err(e) => {
                    let err = to_s3(e);
                    errors.push(dto::Error {
                        code: Some(err.code().as_str().to_string()),
                        key: Some(o.key),
                        message: err.message().map(str::to_string),
                        version_id: None,
                    });
                }
            }
        }
        Ok(S3Response::new(dto::DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: Some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<dto::CopyObjectInput>,
    ) -> S3Result<S3Response<dto::CopyObjectOutput>> {
        let dto::CopySource::Bucket {
            bucket: src_bucket,
            key: src_key,
            ..
        } = &req.input.copy_source
        else {
            return Err(s3_error!(NotImplemented, "copies from access points"));
        };
        self.allow(&req, src_bucket, Permission::Read).await?;
        self.allow(&req, &req.input.bucket, Permission::Write)
            .await?;
        let input = &req.input;
        let src = self.client.head(src_bucket, src_key).await.map_err(to_s3)?;
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == dto::MetadataDirective::REPLACE);
        let opts = if replace {
            PutOptions {
                content_type: input.content_type.clone(),
                user_meta: input
                    .metadata
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
                ..Default::default()
            }
        } else {
            PutOptions {
                content_type: src.content_type.clone(),
                user_meta: src.user_meta.clone(),
                ..Default::default()
            }
        };
        // Streamed through a pipe, as a GET into a PUT: memory stays bounded.
        let (mut tx, rx) = tokio::io::duplex(GET_PIPE);
        let client = self.client.clone();
        let source = src.clone();
        let reader = tokio::spawn(async move { client.read_object(&source, None, &mut tx).await });
        // A source read that fails ends the pipe early: the length check
        // turns that into an error, so the copy is never committed short.
        let body = ExactLength {
            inner: rx,
            left: src.size,
        };
        let info = self
            .client
            .put(&input.bucket, &input.key, body, opts)
            .await
            .map_err(to_s3)?;
        match reader.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(to_s3(e)),
            Err(e) => return Err(s3_error!(InternalError, "copy task: {e}")),
        }
        Ok(S3Response::new(dto::CopyObjectOutput {
            copy_object_result: Some(dto::CopyObjectResult {
                e_tag: Some(etag(&info)),
                last_modified: Some(timestamp(info.mtime_ms)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<dto::CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CreateMultipartUploadOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Write)
            .await?;
        let input = req.input;
        let opts = PutOptions {
            content_type: input.content_type.map(|c| c.to_string()),
            user_meta: input.metadata.unwrap_or_default().into_iter().collect(),
            ..Default::default()
        };
        let upload = self
            .client
            .create_upload(&input.bucket, &input.key, opts)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(dto::CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload.id),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<dto::UploadPartInput>,
    ) -> S3Result<S3Response<dto::UploadPartOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Write)
            .await?;
        let input = req.input;
        let upload = self
            .upload_of(&input.upload_id, &input.bucket, &input.key)
            .await?;
        let body = input.body.ok_or_else(|| s3_error!(IncompleteBody))?;
        let number = u32::try_from(input.part_number)
            .map_err(|_| s3_error!(InvalidArgument, "part numbers run from 1 to 10000"))?;
        let part = self
            .client
            .put_part(&upload, number, body_reader(body))
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(dto::UploadPartOutput {
            e_tag: Some(dto::ETag::Strong(part.etag)),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<dto::CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CompleteMultipartUploadOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Write)
            .await?;
        let input = req.input;
        self.upload_of(&input.upload_id, &input.bucket, &input.key)
            .await?;
        let mut parts = Vec::new();
        for p in input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default()
        {
            let (Some(n), Some(etag)) = (p.part_number, p.e_tag) else {
                return Err(s3_error!(
                    MalformedXML,
                    "each part needs a PartNumber and an ETag"
                ));
            };
            let n = u32::try_from(n).map_err(|_| s3_error!(InvalidPart))?;
            parts.push((n, etag.value().to_string()));
        }
        let info = self
            .client
            .complete_upload(&input.upload_id, parts)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(dto::CompleteMultipartUploadOutput {
            bucket: Some(input.bucket.clone()),
            key: Some(input.key.clone()),
            e_tag: Some(etag(&info)),
            location: Some(format!("/{}/{}", input.bucket, input.key)),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<dto::AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::AbortMultipartUploadOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Write)
            .await?;
        let input = req.input;
        self.upload_of(&input.upload_id, &input.bucket, &input.key)
            .await?;
        self.client
            .abort_upload(&input.upload_id)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(dto::AbortMultipartUploadOutput::default()))
    }

    async fn list_parts(
        &self,
        req: S3Request<dto::ListPartsInput>,
    ) -> S3Result<S3Response<dto::ListPartsOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Read)
            .await?;
        let input = req.input;
        self.upload_of(&input.upload_id, &input.bucket, &input.key)
            .await?;
        let after = input.part_number_marker.unwrap_or(0);
        let max = input.max_parts.unwrap_or(1000).clamp(1, 1000);
        let all = self
            .client
            .list_parts(&input.upload_id)
            .await
            .map_err(to_s3)?;
        let mut parts: Vec<dto::Part> = all
            .iter()
            .filter(|p| p.number as i32 > after)
            .map(|p| dto::Part {
                part_number: Some(p.number as i32),
                e_tag: Some(dto::ETag::Strong(p.etag.clone())),
                size: Some(p.size as i64),
                last_modified: Some(timestamp(p.mtime_ms)),
                ..Default::default()
            })
            .collect();
        let truncated = parts.len() > max as usize;
        parts.truncate(max as usize);
        Ok(S3Response::new(dto::ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            max_parts: Some(max),
            is_truncated: Some(truncated),
            next_part_number_marker: parts
                .last()
                .and_then(|p| p.part_number)
                .filter(|_| truncated),
            part_number_marker: input.part_number_marker,
            parts: Some(parts),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<dto::ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<dto::ListMultipartUploadsOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Read)
            .await?;
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let uploads = self
            .client
            .list_uploads(&input.bucket)
            .await
            .map_err(to_s3)?
            .into_iter()
            .filter(|u| u.key.starts_with(&prefix))
            .map(|u| dto::MultipartUpload {
                key: Some(u.key),
                upload_id: Some(u.id),
                initiated: Some(timestamp(u.initiated_ms)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(dto::ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            is_truncated: Some(false),
            uploads: Some(uploads),
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<dto::ListObjectsInput>,
    ) -> S3Result<S3Response<dto::ListObjectsOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Read)
            .await?;
        let input = req.input;
        let max_keys = input.max_keys.unwrap_or(1000).clamp(0, 1000);
        let url = wants_url(&input.encoding_type);
        let (contents, prefixes, next) = self
            .list(
                &input.bucket,
                input.prefix.clone(),
                input.delimiter.clone(),
                input.marker.clone(),
                max_keys,
                url,
            )
            .await?;
        let enc = |s: Option<String>| s.map(|s| encode_if(url, s));
        let has_delimiter = input.delimiter.is_some();
        Ok(S3Response::new(dto::ListObjectsOutput {
            name: Some(input.bucket),
            prefix: enc(input.prefix),
            marker: enc(input.marker),
            delimiter: enc(input.delimiter),
            max_keys: Some(max_keys),
            is_truncated: Some(next.is_some()),
            // V1 clients page with the last key; they need NextMarker when a delimiter is used.
            next_marker: enc(next.filter(|_| has_delimiter)),
            contents: Some(contents),
            common_prefixes: Some(prefixes),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }
}

type Listed = (Vec<dto::Object>, Vec<dto::CommonPrefix>, Option<String>);

fn wants_url(encoding: &Option<dto::EncodingType>) -> bool {
    encoding
        .as_ref()
        .is_some_and(|e| e.as_str() == dto::EncodingType::URL)
}

/// `encoding-type=url`: keys percent-encoded as S3 does (all but unreserved
/// characters and '/'), so keys with characters XML cannot carry, or with
/// '%' and '+', survive the clients' decoding.
fn encode_if(url: bool, s: String) -> String {
    if !url {
        return s;
    }
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads exactly `left` bytes from `inner`; an earlier end is an error.
struct ExactLength<R> {
    inner: R,
    left: u64,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for ExactLength<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_read(cx, buf) {
            std::task::Poll::Ready(Ok(())) => {
                let n = (buf.filled().len() - before) as u64;
                if n == 0 && this.left > 0 {
                    return std::task::Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("source ended {} bytes early", this.left),
                    )));
                }
                this.left = this.left.saturating_sub(n);
                std::task::Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

/// A request body as the SDK reads it.
fn body_reader(body: StreamingBlob) -> impl tokio::io::AsyncRead + Unpin + Send {
    StreamReader::new(futures::TryStreamExt::map_err(body, |e| {
        std::io::Error::other(e.to_string())
    }))
}

impl Gateway {
    /// The upload `id`, which must belong to `bucket/key`.
    async fn upload_of(&self, id: &str, bucket: &str, key: &str) -> S3Result<UploadInfo> {
        let upload = self.client.upload(id).await.map_err(to_s3)?;
        if upload.bucket != bucket || upload.key != key {
            return Err(s3_error!(NoSuchUpload, "no such upload for this key"));
        }
        Ok(upload)
    }

    async fn list(
        &self,
        bucket: &str,
        prefix: Option<String>,
        delimiter: Option<String>,
        after: Option<String>,
        max_keys: i32,
        url: bool,
    ) -> S3Result<Listed> {
        if max_keys == 0 {
            return Ok((vec![], vec![], None));
        }
        let opts = ListOptions {
            prefix: prefix.unwrap_or_default(),
            delimiter,
            start_after: after,
            max_keys: max_keys as u32,
        };
        let listing = self.client.list(bucket, &opts).await.map_err(to_s3)?;
        let mut contents = Vec::new();
        let mut prefixes = Vec::new();
        for e in listing.entries {
            match e {
                ListEntry::Object {
                    key,
                    size,
                    etag,
                    mtime_ms,
                } => contents.push(dto::Object {
                    key: Some(encode_if(url, key)),
                    size: Some(size as i64),
                    e_tag: Some(dto::ETag::Strong(etag)),
                    last_modified: Some(timestamp(mtime_ms)),
                    storage_class: Some(dto::ObjectStorageClass::from_static(
                        dto::ObjectStorageClass::STANDARD,
                    )),
                    ..Default::default()
                }),
                ListEntry::CommonPrefix(p) => prefixes.push(dto::CommonPrefix {
                    prefix: Some(encode_if(url, p)),
                }),
            }
        }
        Ok((contents, prefixes, listing.next))
    }
}

/// Secrets come from meta's access keys.
pub struct MetaKeys {
    client: Client,
}

#[async_trait::async_trait]
impl S3Auth for MetaKeys {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.client.access_key(access_key).await {
            Ok(k) => Ok(SecretKey::from(k.secret)),
            Err(e) if e.code() == Some(ErrorCode::NotFound) => Err(s3_error!(
                InvalidAccessKeyId,
                "the access key does not exist"
            )),
            Err(e) => Err(to_s3(e)),
        }
    }
}

/// The gateway's HTTP routes: S3 on every path, `/health` beside it.
pub fn router(client: Client) -> axum::Router {
    use axum::routing::get;
    let service = {
        let mut b = s3s::service::S3ServiceBuilder::new(Gateway::new(client.clone()));
        b.set_auth(MetaKeys { client });
        b.build()
    };
    let service = axum::error_handling::HandleError::new(service, |e: s3s::HttpError| async move {
        (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("{e:?}"),
        )
    });
    axum::Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .fallback_service(service)
}
