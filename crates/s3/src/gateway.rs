//! The S3 trait implemented over the SDK, and the axum router around it.

use std::time::{Duration, UNIX_EPOCH};

use s3s::auth::{S3Auth, SecretKey};
use s3s::dto::{self, StreamingBlob, Timestamp};
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use tessera_proto::{ErrorCode, ListEntry, ObjectInfo, Permission};
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
        let Some(cred) = &req.credentials else {
            return Err(s3_error!(
                AccessDenied,
                "anonymous requests are not allowed"
            ));
        };
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
        Some(ErrorCode::NoSpace | ErrorCode::NotEnoughNodes) => S3ErrorCode::ServiceUnavailable,
        _ => S3ErrorCode::InternalError,
    };
    debug!(error = %e, ?code, "request refused");
    S3Error::with_message(code, e.to_string())
}

fn timestamp(ms: u64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_millis(ms))
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
        let Some(cred) = &req.credentials else {
            return Err(s3_error!(
                AccessDenied,
                "anonymous requests are not allowed"
            ));
        };
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
        let Some(cred) = &req.credentials else {
            return Err(s3_error!(
                AccessDenied,
                "anonymous requests are not allowed"
            ));
        };
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
        let reader = StreamReader::new(futures::TryStreamExt::map_err(body, |e| {
            std::io::Error::other(e.to_string())
        }));
        let opts = PutOptions {
            content_type: input.content_type.map(|c| c.to_string()),
            user_meta: input.metadata.unwrap_or_default().into_iter().collect(),
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
            content_type: info.content_type.clone(),
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
        let info = self
            .client
            .head(&req.input.bucket, &req.input.key)
            .await
            .map_err(to_s3)?;
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
            )
            .await?;
        Ok(S3Response::new(dto::ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: input.prefix,
            delimiter: input.delimiter,
            max_keys: Some(max_keys),
            key_count: Some((contents.len() + prefixes.len()) as i32),
            is_truncated: Some(next.is_some()),
            continuation_token: input.continuation_token,
            next_continuation_token: next,
            start_after: input.start_after,
            contents: Some(contents),
            common_prefixes: Some(prefixes),
            encoding_type: input.encoding_type,
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
        let (contents, prefixes, next) = self
            .list(
                &input.bucket,
                input.prefix.clone(),
                input.delimiter.clone(),
                input.marker.clone(),
                max_keys,
            )
            .await?;
        Ok(S3Response::new(dto::ListObjectsOutput {
            name: Some(input.bucket),
            prefix: input.prefix,
            marker: input.marker,
            delimiter: input.delimiter.clone(),
            max_keys: Some(max_keys),
            is_truncated: Some(next.is_some()),
            // V1 clients page with the last key; they need NextMarker when a delimiter is used.
            next_marker: next.filter(|_| input.delimiter.is_some()),
            contents: Some(contents),
            common_prefixes: Some(prefixes),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }
}

type Listed = (Vec<dto::Object>, Vec<dto::CommonPrefix>, Option<String>);

impl Gateway {
    async fn list(
        &self,
        bucket: &str,
        prefix: Option<String>,
        delimiter: Option<String>,
        after: Option<String>,
        max_keys: i32,
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
                    key: Some(key),
                    size: Some(size as i64),
                    e_tag: Some(dto::ETag::Strong(etag)),
                    last_modified: Some(timestamp(mtime_ms)),
                    storage_class: Some(dto::ObjectStorageClass::from_static(
                        dto::ObjectStorageClass::STANDARD,
                    )),
                    ..Default::default()
                }),
                ListEntry::CommonPrefix(p) => prefixes.push(dto::CommonPrefix { prefix: Some(p) }),
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
