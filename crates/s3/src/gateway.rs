//! The S3 trait implemented over the SDK, and the axum router around it.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::ConnectInfo;

use s3s::auth::{S3Auth, SecretKey};
use s3s::dto::{self, StreamingBlob, Timestamp};
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use tessera_proto::{
    AccessChange, Acl, BucketAccess, ErrorCode, ListEntry, MAX_POLICY_BYTES, NULL_VERSION,
    ObjectHeaders, ObjectInfo, ObjectVersion, Permission, PublicAccessBlock, TagSet, UploadInfo,
    VersionListEntry, version_label,
};
use tessera_sdk::{Client, ListOptions, PutOptions, SdkError, VersionListOptions};

use crate::access::{AccessFacts, Target, decide, resource_of};
use crate::acl::{self, AclRequest};
use crate::checksum::{self, BodyChecksums, ResponseChecksums};
use crate::lock;
use crate::policy::{BucketPolicy, PolicyRequest};
use crate::rules;
use crate::sse::{self, copy_source_customer_of, customer_of, set_sse_output};
use tokio_util::io::StreamReader;
use tracing::{Instrument, debug};

/// Largest object a POST form upload may carry (s3s buffers it).
const MAX_POST_OBJECT: u64 = 64 << 20;

/// CreateBucket's header for a storage policy.
const POLICY_HEADER: &str = "x-tessera-policy";

/// Bytes buffered between a copy's source read and its write.
const COPY_PIPE: usize = 1 << 20;

/// Verified pieces (chunk slices, up to a chunk each) queued between the
/// SDK's read and a GET's response body.
const GET_PIECES_QUEUED: usize = 2;

/// What an operator may set for a gateway.
#[derive(Debug, Clone, Default)]
pub struct GatewayConfig {
    /// The only region requests may be signed for; any when unset.
    pub region: Option<String>,
    /// Base domains for virtual-hosted-style requests (`bucket.DOMAIN`);
    /// path style works with or without them.
    pub domains: Vec<String>,
    /// The master key for SSE-S3; without it SSE-S3 writes (and bucket
    /// default encryption) are refused with `NotImplemented`.
    pub sse_master_key: Option<Arc<sse::MasterKey>>,
}

/// Parsed bucket policies kept at most (a full cache starts afresh).
const POLICY_CACHE: usize = 1024;

/// Parsed policies by bucket, each with the text it was parsed from: a
/// request whose bucket's policy text (read from meta, so never stale) is
/// the cached one's skips parsing it again.
type PolicyCache = std::sync::Mutex<HashMap<String, (String, Arc<BucketPolicy>)>>;

/// The S3 service: one SDK client shared by every request.
#[derive(Clone)]
pub struct Gateway {
    pub(crate) client: Client,
    config: GatewayConfig,
    policies: Arc<PolicyCache>,
    keys: sse::Keys,
    /// Lifecycle configurations, for `x-amz-expiration`.
    pub(crate) lifecycles: Arc<crate::lifecycle::LifecycleCache>,
}

impl Gateway {
    pub fn new(client: Client, config: GatewayConfig) -> Self {
        let keys = sse::Keys {
            master: config.sse_master_key.clone(),
        };
        Gateway {
            client,
            config,
            policies: Arc::default(),
            keys,
            lifecycles: Arc::default(),
        }
    }

    /// `text`, the policy of `bucket`, parsed (or as parsed before).
    fn parsed_policy(&self, bucket: &str, text: &str) -> S3Result<Arc<BucketPolicy>> {
        // A poisoned lock only means another request panicked meanwhile:
        // the map is still whole.
        let mut cache = self.policies.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((cached, policy)) = cache.get(bucket)
            && cached == text
        {
            return Ok(policy.clone());
        }
        let policy = Arc::new(BucketPolicy::parse(text, bucket).map_err(|e| {
            s3_error!(
                InternalError,
                "the stored policy of {bucket} is refused: {e}"
            )
        })?);
        if cache.len() >= POLICY_CACHE {
            cache.clear();
        }
        cache.insert(bucket.to_string(), (text.to_string(), policy.clone()));
        Ok(policy)
    }

    /// The request's credentials, `None` for an unsigned request; a
    /// signed one must be signed for this gateway's region when the
    /// operator set one.
    fn caller<'r, T>(&self, req: &'r S3Request<T>) -> S3Result<Option<&'r s3s::auth::Credentials>> {
        let Some(cred) = req.credentials.as_ref() else {
            return Ok(None);
        };
        if let Some(want) = &self.config.region {
            // s3s keeps regions lower-cased (vendor/s3s/TESSERA.md).
            let got = req.region.as_ref().map_or("", |r| r.as_str());
            if !got.eq_ignore_ascii_case(want) {
                return Err(s3_error!(
                    AuthorizationHeaderMalformed,
                    "the region '{got}' is wrong; expecting '{want}'"
                ));
            }
        }
        Ok(Some(cred))
    }

    /// The request's credentials, for operations that need a signed
    /// caller whatever policies say (ListBuckets, CreateBucket).
    fn signed<'r, T>(&self, req: &'r S3Request<T>) -> S3Result<&'r s3s::auth::Credentials> {
        self.caller(req)?
            .ok_or_else(|| s3_error!(AccessDenied, "anonymous requests are not allowed"))
    }

    /// Refuses unless the request may take its operation's action on
    /// `bucket` (and the object it names): a grant of `need` or more, or
    /// the bucket's policy or ACL (`access::decide`). Allowed, the bucket's
    /// settings as read for the decision.
    pub(crate) async fn allow<T>(
        &self,
        req: &S3Request<T>,
        bucket: &str,
        need: Permission,
    ) -> S3Result<BucketAccess> {
        let target = req
            .extensions
            .get::<Target>()
            .ok_or_else(|| s3_error!(InternalError, "the access hook did not run"))?;
        let access = self.access_of(req, bucket).await?;
        let version = req.uri.query().and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "versionId")
                .map(|(_, v)| v.into_owned())
        });
        self.check_object_access(
            access,
            (bucket, target.key.as_deref(), version.as_deref()),
            need,
            &target.action,
        )
        .await
    }

    /// Decides `access` for `action` on `bucket` or its object `key`
    /// (`version` of it). The object is read first only when its facts
    /// can matter: the policy tests `s3:ExistingObjectTag/<key>` (its
    /// tags, of the version named; a missing object has none), or nothing
    /// else allows an action an object ACL can grant (its ACL).
    async fn check_object_access(
        &self,
        mut access: RequestAccess,
        (bucket, key, version): (&str, Option<&str>, Option<&str>),
        need: Permission,
        action: &str,
    ) -> S3Result<BucketAccess> {
        if let Some(key) = key {
            let tags = access.policy_tests_object_tags();
            let acl = crate::access::object_acl_may_grant(action)
                && access.check(need, action, Some(key)).is_err();
            if (tags || acl)
                && let Ok(ObjectVersion::Object(o)) =
                    self.client.version(bucket, key, version).await
            {
                access.add_object_tags(&o.headers.tags);
                access.object_acl = o.headers.acl;
            }
        }
        access.check(need, action, key)?;
        Ok(access.settings)
    }

    /// Refuses unless the request may also take `action` (besides its
    /// operation's own) on `bucket` and the object it names, as `allow`
    /// decides (used for `s3:BypassGovernanceRetention`).
    pub(crate) async fn allow_action<T>(
        &self,
        req: &S3Request<T>,
        bucket: &str,
        need: Permission,
        action: &str,
    ) -> S3Result<()> {
        let target = req
            .extensions
            .get::<Target>()
            .ok_or_else(|| s3_error!(InternalError, "the access hook did not run"))?;
        let access = self.access_of(req, bucket).await?;
        access.check(need, action, target.key.as_deref())
    }

    /// What decides access to `bucket` for this request: the caller's
    /// grant and the bucket's settings, read together. `NoSuchBucket`
    /// comes first, to anyone.
    async fn access_of<T>(&self, req: &S3Request<T>, bucket: &str) -> S3Result<RequestAccess> {
        let cred = self.caller(req)?;
        // Read with the request's key when it was signed (`prefetch`).
        let prefetched = cred.and_then(|c| crate::prefetch::take(bucket, &c.access_key));
        let (grants, settings) = match prefetched {
            Some((grants, settings)) => (grants.map(Some), settings),
            None => {
                let grants = async {
                    match cred {
                        Some(c) => self
                            .client
                            .grants(Some(bucket), Some(&c.access_key))
                            .await
                            .map(Some),
                        None => Ok(None),
                    }
                };
                tokio::join!(grants, self.client.bucket_access(bucket))
            }
        };
        let settings = settings.map_err(to_s3)?;
        let grant = grants
            .map_err(to_s3)?
            .and_then(|gs| gs.iter().map(|g| g.permission).max());
        let policy = match &settings.policy {
            Some(text) => Some(self.parsed_policy(bucket, text)?),
            None => None,
        };
        let principal = cred.map(|c| c.access_key.clone());
        let mut context = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            context.insert(k.to_string(), vec![v]);
        };
        if let Some(ConnectInfo(addr)) = req.extensions.get::<ConnectInfo<SocketAddr>>() {
            put("aws:sourceip", addr.ip().to_canonical().to_string());
        }
        // The gateway speaks plain HTTP; TLS in front of it is not seen.
        put("aws:securetransport", "false".into());
        match &principal {
            Some(k) => {
                put("aws:principaltype", "User".into());
                put("aws:username", k.clone());
                put("aws:userid", k.clone());
            }
            None => put("aws:principaltype", "Anonymous".into()),
        }
        for h in [
            "x-amz-server-side-encryption",
            "x-amz-server-side-encryption-customer-algorithm",
        ] {
            if let Some(v) = req.headers.get(h).and_then(|v| v.to_str().ok()) {
                put(&format!("s3:{h}"), v.to_string());
            }
        }
        if let Some(q) = req.uri.query() {
            for (k, v) in form_urlencoded::parse(q.as_bytes()) {
                if matches!(k.as_ref(), "prefix" | "delimiter" | "max-keys") {
                    put(&format!("s3:{k}"), v.into_owned());
                }
            }
        }
        Ok(RequestAccess {
            bucket: bucket.to_string(),
            principal,
            grant,
            settings,
            policy,
            context,
            object_acl: None,
        })
    }
}

/// What decides one request's access to one bucket (see `access_of`).
struct RequestAccess {
    bucket: String,
    principal: Option<String>,
    grant: Option<Permission>,
    settings: BucketAccess,
    policy: Option<Arc<BucketPolicy>>,
    context: BTreeMap<String, Vec<String>>,
    /// The ACL of the object the request names, when it was read
    /// (`Gateway::check_object_access`).
    object_acl: Option<Acl>,
}

impl RequestAccess {
    /// Whether the bucket's policy has a condition on
    /// `s3:ExistingObjectTag/<key>`, whose values only the object holds.
    fn policy_tests_object_tags(&self) -> bool {
        self.policy
            .as_ref()
            .is_some_and(|p| p.tests_keys_starting("s3:existingobjecttag/"))
    }

    /// Supplies the object's tags as `s3:ExistingObjectTag/<key>`.
    fn add_object_tags(&mut self, tags: &TagSet) {
        for (k, v) in tags {
            self.context.insert(
                format!("s3:existingobjecttag/{}", k.to_ascii_lowercase()),
                vec![v.clone()],
            );
        }
    }

    /// Refuses with `AccessDenied` unless `action` on the bucket (or its
    /// object `key`) is allowed (`access::decide`).
    fn check(&self, need: Permission, action: &str, key: Option<&str>) -> S3Result<()> {
        let request = PolicyRequest {
            principal: self.principal.clone(),
            action: action.to_string(),
            resource: resource_of(&self.bucket, key),
            context: self.context.clone(),
        };
        let allowed = decide(&AccessFacts {
            grant: self.grant,
            need,
            policy: self.policy.as_deref(),
            bucket_acl: self.settings.acl.as_ref(),
            object_acl: self.object_acl.as_ref(),
            public_access_block: self.settings.public_access_block,
            request: &request,
        });
        if allowed {
            Ok(())
        } else {
            Err(s3_error!(AccessDenied, "Access Denied"))
        }
    }
}

/// Tessera's error classes as S3 error codes.
pub(crate) fn to_s3(e: SdkError) -> S3Error {
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
        Some(ErrorCode::InvalidPartOrder) => S3ErrorCode::InvalidPartOrder,
        Some(ErrorCode::EntityTooSmall) => S3ErrorCode::EntityTooSmall,
        Some(ErrorCode::BadRequest) => S3ErrorCode::InvalidArgument,
        Some(ErrorCode::PreconditionFailed) => S3ErrorCode::PreconditionFailed,
        Some(ErrorCode::BadDigest) => S3ErrorCode::BadDigest,
        Some(ErrorCode::InvalidTag) => S3ErrorCode::InvalidTag,
        Some(ErrorCode::NoSuchVersion) => S3ErrorCode::NoSuchVersion,
        Some(ErrorCode::MethodNotAllowed) => S3ErrorCode::MethodNotAllowed,
        Some(ErrorCode::NoSpace | ErrorCode::NotEnoughNodes) => S3ErrorCode::ServiceUnavailable,
        Some(ErrorCode::InvalidBucketState) => S3ErrorCode::InvalidBucketState,
        // A version under Object Lock: S3 answers 403.
        Some(ErrorCode::ObjectLocked) => S3ErrorCode::AccessDenied,
        Some(ErrorCode::InvalidRequest) => S3ErrorCode::InvalidRequest,
        _ => S3ErrorCode::InternalError,
    };
    debug!(error = %e, ?code, "request refused");
    S3Error::with_message(code, e.to_string())
}

pub(crate) fn timestamp(ms: u64) -> Timestamp {
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
            return Err(not_modified(info));
        }
    } else if let Some(t) = if_modified_since
        && mtime <= unix_seconds(t)
    {
        return Err(not_modified(info));
    }
    Ok(())
}

/// 304 Not Modified with the object's `ETag` and `Last-Modified`, which a
/// 304 carries (RFC 9110, section 15.4.5) so that a cache can tell which
/// copy it still holds.
fn not_modified(info: &ObjectInfo) -> S3Error {
    let mut e = S3Error::new(S3ErrorCode::NotModified);
    let mut h = axum::http::HeaderMap::new();
    if let Ok(v) = axum::http::HeaderValue::from_str(&format!("\"{}\"", info.etag)) {
        h.insert(axum::http::header::ETAG, v);
    }
    insert_last_modified(&mut h, info.mtime_ms);
    e.set_headers(h);
    e
}

/// `Last-Modified: <HTTP date of ms>` into `h`.
fn insert_last_modified(h: &mut axum::http::HeaderMap, ms: u64) {
    let mut date = Vec::new();
    if timestamp(ms)
        .format(dto::TimestampFormat::HttpDate, &mut date)
        .is_ok()
        && let Ok(v) = axum::http::HeaderValue::from_bytes(&date)
    {
        h.insert(axum::http::header::LAST_MODIFIED, v);
    }
}

/// [`preconditions`] on a copy's source, from the `x-amz-copy-source-if-*`
/// fields that CopyObject's and UploadPartCopy's (distinct) inputs share: a
/// copy that is not made is a failed precondition (412), never a 304.
macro_rules! copy_source_conditions {
    ($src:expr, $input:expr) => {
        preconditions(
            $src,
            $input.copy_source_if_match.as_ref(),
            $input.copy_source_if_none_match.as_ref(),
            $input.copy_source_if_modified_since.as_ref(),
            $input.copy_source_if_unmodified_since.as_ref(),
        )
        .map_err(|e| match e.code() {
            S3ErrorCode::NotModified => {
                s3_error!(PreconditionFailed, "the copy source's conditions failed")
            }
            _ => e,
        })
    };
}

/// Stored checksums into the `checksum_*` fields an S3 output shares.
macro_rules! set_checksums {
    ($out:ident, $sums:expr) => {{
        let sums = $sums;
        $out.checksum_crc32 = sums.crc32;
        $out.checksum_crc32c = sums.crc32c;
        $out.checksum_sha1 = sums.sha1;
        $out.checksum_sha256 = sums.sha256;
        $out.checksum_crc64nvme = sums.crc64nvme;
    }};
}

/// What GET and HEAD both answer about an object, as their (distinct but
/// same-named) output types.
macro_rules! object_output {
    ($ty:ty, $info:expr, $sums:expr, $parts_count:expr) => {{
        let info: &ObjectInfo = $info;
        let sums: ResponseChecksums = $sums;
        let h = &info.headers;
        let mut out = <$ty>::default();
        out.content_type = info.content_type.clone();
        out.content_encoding = h.content_encoding.clone();
        out.content_disposition = h.content_disposition.clone();
        out.content_language = h.content_language.clone();
        out.cache_control = h.cache_control.clone();
        out.expires = expires(h);
        out.e_tag = Some(etag(info));
        out.last_modified = Some(timestamp(info.mtime_ms));
        out.metadata = Some(info.user_meta.clone().into_iter().collect());
        out.accept_ranges = Some("bytes".into());
        out.parts_count = $parts_count;
        // S3 names the class only when it is not STANDARD.
        out.storage_class = h.storage_class.clone().map(dto::StorageClass::from);
        (
            out.object_lock_mode,
            out.object_lock_retain_until_date,
            out.object_lock_legal_hold_status,
        ) = lock::read_headers(h);
        out.checksum_type = sums.kind.clone();
        set_checksums!(out, sums);
        out
    }};
}

/// S3's headers on an answer about a delete marker (S3 User Guide,
/// "Working with delete markers"): `x-amz-delete-marker: true` and the
/// marker's `x-amz-version-id`, and, when given, its `Last-Modified`.
fn with_marker_headers(mut e: S3Error, version: &Option<String>, mtime_ms: Option<u64>) -> S3Error {
    let mut h = axum::http::HeaderMap::new();
    h.insert(
        "x-amz-delete-marker",
        axum::http::HeaderValue::from_static("true"),
    );
    // Version labels are hex digits or `null`: always valid header values.
    if let Ok(v) = axum::http::HeaderValue::from_str(version_label(version)) {
        h.insert("x-amz-version-id", v);
    }
    if let Some(ms) = mtime_ms {
        insert_last_modified(&mut h, ms);
    }
    e.set_headers(h);
    e
}

/// The `x-amz-version-id` to answer for `info`: its id, or `null` when the
/// request named the null version (a bucket never versioned answers none).
fn shown_version(info: &ObjectInfo, asked: bool) -> Option<String> {
    info.version_id
        .clone()
        .or_else(|| asked.then(|| NULL_VERSION.to_string()))
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
        let cred = self.signed(&req)?;
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
            owner: Some(self.canonical_user(&cred.access_key).await),
            ..Default::default()
        }))
    }

    async fn create_bucket(
        &self,
        req: S3Request<dto::CreateBucketInput>,
    ) -> S3Result<S3Response<dto::CreateBucketOutput>> {
        let cred = self.signed(&req)?;
        let key = self
            .client
            .access_key(&cred.access_key)
            .await
            .map_err(to_s3)?;
        if !key.may_create_buckets {
            return Err(s3_error!(AccessDenied, "this key may not create buckets"));
        }
        // A storage policy (ec:4+2, rep:3) may come in the
        // x-tessera-policy header, or as the location constraint; any
        // other location constraint (a region name) means the default.
        let policy = match req.headers.get(POLICY_HEADER) {
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .and_then(|p| p.trim().parse().ok())
                    .ok_or_else(|| {
                        s3_error!(InvalidArgument, "{POLICY_HEADER} must be ec:K+M or rep:N")
                    })?,
            ),
            None => req
                .input
                .create_bucket_configuration
                .as_ref()
                .and_then(|c| c.location_constraint.as_ref())
                .and_then(|l| l.as_str().parse().ok()),
        };
        let input = &req.input;
        let acl_request = acl::acl_request!(input, input.grant_write.as_deref(), None);
        // The creating key owns the bucket, so the ACL is known before the
        // bucket is made; its named keys are checked then too.
        let acl = acl::requested(&acl_request, Some(&cred.access_key))?;
        if let Some(acl) = &acl {
            self.check_named_keys(acl).await?;
        }
        let bucket = &req.input.bucket;
        match self.client.create_bucket(bucket, policy).await {
            Ok(_) => {}
            Err(e) if e.code() == Some(ErrorCode::BucketExists) => {
                let grants = self
                    .client
                    .grants(Some(bucket), Some(&cred.access_key))
                    .await
                    .map_err(to_s3)?;
                let owns = grants.iter().any(|g| g.permission == Permission::Owner);
                rules::existing_bucket(bucket, owns, self.config.region.as_deref())?;
                self.client
                    .set_bucket_access(bucket, AccessChange::Acl(acl.and_then(acl::stored)))
                    .await
                    .map_err(to_s3)?;
                return Ok(S3Response::new(dto::CreateBucketOutput {
                    location: Some(format!("/{bucket}")),
                }));
            }
            Err(e) => return Err(to_s3(e)),
        }
        self.client
            .set_grant(bucket, &cred.access_key, Some(Permission::Owner))
            .await
            .map_err(to_s3)?;
        if let Some(acl) = acl.and_then(acl::stored) {
            self.client
                .set_bucket_access(bucket, AccessChange::Acl(Some(acl)))
                .await
                .map_err(to_s3)?;
        }
        if req.input.object_lock_enabled_for_bucket == Some(true) {
            // Object Lock enables versioning for good (S3 User Guide,
            // "Configuring Object Lock").
            self.client
                .set_object_lock(bucket, Default::default(), true)
                .await
                .map_err(to_s3)?;
        }
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
        let settings = self
            .allow(&req, &req.input.bucket, Permission::Write)
            .await?;
        rules::key(&req.input.key)?;
        let acl = self
            .requested_acl(&req.input.bucket, acl::acl_request!(req.input))
            .await?;
        rules::metadata(req.input.metadata.as_ref())?;
        rules::body_length(req.input.content_length)?;
        let tags = rules::tagging_header(req.input.tagging.as_deref())?;
        let storage_class = rules::storage_class(req.input.storage_class.as_ref())?;
        let condition = rules::write_condition(
            req.input.if_match.as_ref(),
            req.input.if_none_match.as_ref(),
        )?;
        let sums = BodyChecksums::from_request(
            &req.headers,
            req.trailing_headers.clone(),
            Some("crc64nvme"),
        )?;
        let customer = customer_of!(req.input)?;
        let input = req.input;
        let sealing = sse::new_object_key(
            &self.client,
            &self.keys,
            &input.bucket,
            input.server_side_encryption.as_ref(),
            customer,
            Some(&settings),
        )
        .await?;
        let body = input.body.ok_or_else(|| s3_error!(IncompleteBody))?;
        let reader = sums.watch(body);
        let content_md5 = match &input.content_md5 {
            Some(b64) => Some(decode_md5(b64)?),
            None => None,
        };
        let mut opts = PutOptions {
            content_type: input.content_type.map(|c| c.to_string()),
            user_meta: input.metadata.unwrap_or_default().into_iter().collect(),
            headers: ObjectHeaders {
                storage_class,
                tags,
                ..object_headers(
                    input.content_encoding,
                    input.content_disposition,
                    input.content_language,
                    input.cache_control,
                    input.expires.as_ref(),
                )
            },
            condition,
            content_md5,
            body_check: Some(sums.check()),
            ..Default::default()
        };
        opts.headers.acl = acl;
        lock::apply_write_headers(
            &mut opts.headers,
            input.object_lock_mode.as_ref(),
            input.object_lock_retain_until_date.as_ref(),
            input.object_lock_legal_hold_status.as_ref(),
        )?;
        let reader = sse::body_for_write(reader, sealing.as_ref(), &mut opts);
        let info = self
            .client
            .put(&input.bucket, &input.key, reader, opts)
            .await
            .map_err(to_s3)?;
        let sums = ResponseChecksums::of(&info.headers.checksums, true, true);
        let mut out = dto::PutObjectOutput {
            e_tag: Some(etag(&info)),
            version_id: info.version_id.clone(),
            size: Some(info.size as i64),
            checksum_type: sums.kind.clone(),
            expiration: self.expiration_of(&input.bucket, &info).await,
            ..Default::default()
        };
        set_checksums!(out, sums);
        set_sse_output!(out, sealing.as_ref().map(|(_, o)| o));
        Ok(S3Response::new(out))
    }

    async fn get_object(
        &self,
        req: S3Request<dto::GetObjectInput>,
    ) -> S3Result<S3Response<dto::GetObjectOutput>> {
        sse::refuse_sse_header_on_read(&req.headers)?;
        let customer = customer_of!(req.input)?;
        let i = &req.input;
        let info = self
            .object_for_read(
                &req,
                &i.bucket,
                &i.key,
                i.version_id.as_deref(),
                [i.if_match.as_ref(), i.if_none_match.as_ref()],
                [i.if_modified_since.as_ref(), i.if_unmodified_since.as_ref()],
            )
            .await?;
        // Read with the object in the same meta round trip (a current
        // object's GET): the read asks meta only for chunks beyond them.
        let records = crate::prefetch::take_chunk_records(&i.bucket, &i.key);
        let opened = self
            .keys
            .open(info.headers.encryption.as_ref(), customer.as_ref())?;
        let input = req.input;
        let (range, parts_count) = match (&input.range, input.part_number) {
            (Some(_), Some(_)) => {
                return Err(s3_error!(
                    InvalidRequest,
                    "Range and partNumber cannot be used together"
                ));
            }
            (Some(r), None) => (
                Some(
                    r.check(info.size)
                        .map_err(|_| s3_error!(InvalidRange, "the range is outside the object"))?,
                ),
                None,
            ),
            (None, Some(n)) => part_range(&info, rules::part_number(n)?)?,
            (None, None) => (None, None),
        };
        let len = range.as_ref().map_or(info.size, |r| r.end - r.start);
        let sums = ResponseChecksums::of(
            &info.headers.checksums,
            checksum_mode(&input.checksum_mode),
            range.is_none(),
        );
        let content_range = range.as_ref().map(|r| {
            format!(
                "bytes {}-{}/{}",
                r.start,
                r.end.saturating_sub(1),
                info.size
            )
        });
        // The SDK hands verified chunk slices to the response body as they
        // are (no copy, no re-framing); memory stays at the SDK's chunks
        // in flight plus the channel's, whatever the object's size.
        let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(GET_PIECES_QUEUED);
        let client = self.client.clone();
        let object = info.clone();
        let key = opened.as_ref().map(|o| o.key);
        // The body streams after this handler returns: the task keeps the
        // request's id (for the nodes) and log span.
        let span = tracing::Span::current();
        tokio::spawn(tessera_sdk::carry_request_id(
            async move {
                let read = match key {
                    Some(key) => {
                        let range = range.unwrap_or(0..object.size);
                        sse::read_plain(client, object.clone(), key, range, tx).await
                    }
                    None => {
                        client
                            .read_object_with_records_to(&object, records, range, tx)
                            .await
                    }
                };
                match read {
                    Ok(()) | Err(SdkError::ReaderGone) => {}
                    // The response ends short; the client sees a truncated body.
                    Err(e) => {
                        tracing::warn!(key = %object.key, error = %e, "GET failed mid-stream")
                    }
                }
            }
            .instrument(span),
        ));
        let rx = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|piece| (Ok::<_, std::convert::Infallible>(piece), rx))
        });
        let mut out = object_output!(dto::GetObjectOutput, &info, sums, parts_count);
        out.version_id = shown_version(&info, input.version_id.is_some());
        if input.version_id.is_none() {
            out.expiration = self.expiration_of(&input.bucket, &info).await;
        }
        out.tag_count = tag_count(&info.headers.tags);
        set_sse_output!(out, opened.as_ref());
        out.body = Some(StreamingBlob::wrap(rx));
        out.content_length = Some(len as i64);
        out.content_range = content_range;
        // response-* query parameters (presigned downloads) override what
        // the object says.
        out.content_type = input.response_content_type.or(out.content_type);
        out.content_disposition = input
            .response_content_disposition
            .or(out.content_disposition);
        out.content_encoding = input.response_content_encoding.or(out.content_encoding);
        out.content_language = input.response_content_language.or(out.content_language);
        out.cache_control = input.response_cache_control.or(out.cache_control);
        out.expires = input.response_expires.or(out.expires);
        Ok(S3Response::new(out))
    }

    async fn head_object(
        &self,
        req: S3Request<dto::HeadObjectInput>,
    ) -> S3Result<S3Response<dto::HeadObjectOutput>> {
        sse::refuse_sse_header_on_read(&req.headers)?;
        let customer = customer_of!(req.input)?;
        let input = &req.input;
        let info = self
            .object_for_read(
                &req,
                &input.bucket,
                &input.key,
                input.version_id.as_deref(),
                [input.if_match.as_ref(), input.if_none_match.as_ref()],
                [
                    input.if_modified_since.as_ref(),
                    input.if_unmodified_since.as_ref(),
                ],
            )
            .await?;
        let opened = self
            .keys
            .open(info.headers.encryption.as_ref(), customer.as_ref())?;
        let (range, parts_count) = match input.part_number {
            Some(n) => part_range(&info, rules::part_number(n)?)?,
            None => (None, None),
        };
        let sums = ResponseChecksums::of(
            &info.headers.checksums,
            checksum_mode(&input.checksum_mode),
            range.is_none(),
        );
        let mut out = object_output!(dto::HeadObjectOutput, &info, sums, parts_count);
        out.version_id = shown_version(&info, input.version_id.is_some());
        if input.version_id.is_none() {
            out.expiration = self.expiration_of(&input.bucket, &info).await;
        }
        out.content_length = Some(range.as_ref().map_or(info.size, |r| r.end - r.start) as i64);
        set_sse_output!(out, opened.as_ref());
        let mut resp = S3Response::new(out);
        // HeadObjectOutput has no field for it; GET's header, on HEAD too.
        if let Some(n) = tag_count(&info.headers.tags) {
            resp.headers.insert(TAG_COUNT_HEADER, n.into());
        }
        Ok(resp)
    }

    async fn delete_object(
        &self,
        req: S3Request<dto::DeleteObjectInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Write)
            .await?;
        let input = &req.input;
        let version = rules::version_id(input.version_id.as_deref())?;
        let bypass = version.is_some()
            && self
                .bypasses_governance(&req, &input.bucket, input.bypass_governance_retention)
                .await;
        let removal = match version {
            Some(v) if bypass => {
                self.client
                    .delete_version_bypassing_governance(&input.bucket, &input.key, v)
                    .await
            }
            Some(v) => {
                self.client
                    .delete_version(&input.bucket, &input.key, v)
                    .await
            }
            None => self.client.delete_object(&input.bucket, &input.key).await,
        }
        .map_err(to_s3)?;
        Ok(S3Response::new(dto::DeleteObjectOutput {
            delete_marker: removal.delete_marker.then_some(true),
            version_id: removal.version_id,
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<dto::ListObjectsV2Input>,
    ) -> S3Result<S3Response<dto::ListObjectsV2Output>> {
        self.allow(&req, &req.input.bucket, Permission::Read)
            .await?;
        let mut input = req.input;
        input.delimiter = input.delimiter.filter(|d| !d.is_empty());
        let max_keys = rules::page_size("max-keys", input.max_keys)?;
        let url = wants_url(&input.encoding_type);
        // The continuation token is the last key or prefix returned.
        let after = input
            .continuation_token
            .clone()
            .or_else(|| input.start_after.clone());
        let (mut contents, prefixes, next) = self
            .list(
                &input.bucket,
                input.prefix.clone(),
                input.delimiter.clone(),
                after,
                max_keys,
                url,
            )
            .await?;
        if input.fetch_owner == Some(true) {
            let owner = self.bucket_owner(&input.bucket).await?;
            for o in &mut contents {
                o.owner = owner.clone();
            }
        }
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
        // Without a grant, a policy may allow some keys and not others:
        // each key is checked as its own DeleteObject (S3 API reference,
        // DeleteObjects: refused keys are AccessDenied errors).
        let access = self.access_of(&req, &req.input.bucket).await?;
        let may_delete = |key: &str, versioned: bool| {
            let action = if versioned {
                "s3:DeleteObjectVersion"
            } else {
                "s3:DeleteObject"
            };
            access.check(Permission::Write, action, Some(key))
        };
        let input = req.input;
        if access.policy.is_none() {
            // Without a policy every key gets the same answer: refuse the
            // request whole.
            access.check(Permission::Write, "s3:DeleteObject", None)?;
        }
        rules::delete_keys(input.delete.objects.len())?;
        let quiet = input.delete.quiet.unwrap_or(false);
        let bypass = input.bypass_governance_retention == Some(true);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for o in input.delete.objects {
            // Deleting a missing key succeeds, as in S3; a version id is
            // checked per key and a bad one fails that key only.
            let checked = may_delete(&o.key, o.version_id.is_some())
                .and_then(|()| rules::version_id(o.version_id.as_deref()));
            let removal = match checked {
                Err(e) => Err(e),
                Ok(Some(v))
                    if bypass
                        && access
                            .check(Permission::Owner, lock::BYPASS_ACTION, Some(&o.key))
                            .is_ok() =>
                {
                    self.client
                        .delete_version_bypassing_governance(&input.bucket, &o.key, v)
                        .await
                        .map_err(to_s3)
                }
                Ok(Some(v)) => self
                    .client
                    .delete_version(&input.bucket, &o.key, v)
                    .await
                    .map_err(to_s3),
                Ok(None) => self
                    .client
                    .delete_object(&input.bucket, &o.key)
                    .await
                    .map_err(to_s3),
            };
            match removal {
                Ok(_) if quiet => {}
                Ok(r) => deleted.push(dto::DeletedObject {
                    key: Some(o.key),
                    version_id: o.version_id,
                    delete_marker: r.delete_marker.then_some(true),
                    delete_marker_version_id: if r.delete_marker { r.version_id } else { None },
                }),
                Err(err) => {
                    errors.push(dto::Error {
                        code: Some(err.code().as_str().to_string()),
                        key: Some(o.key),
                        message: err.message().map(str::to_string),
                        version_id: o.version_id,
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
        let src = self
            .copy_source(&req, &req.input.copy_source, &req.input.bucket)
            .await?;
        let input = &req.input;
        rules::key(&input.key)?;
        let acl = self
            .requested_acl(&input.bucket, acl::acl_request!(input))
            .await?;
        let source_key = self.keys.open(
            src.headers.encryption.as_ref(),
            copy_source_customer_of!(input)?.as_ref(),
        )?;
        let customer = customer_of!(input)?;
        // Encryption asked for is a change, as S3 lets a copy onto itself
        // encrypt or re-key an object.
        let encrypts = customer.is_some() || input.server_side_encryption.is_some();
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == dto::MetadataDirective::REPLACE);
        // A copy of an older version onto its own key restores it: a change.
        let same = matches!(&input.copy_source, dto::CopySource::Bucket { bucket, key, version_id }
            if **bucket == *input.bucket && **key == *input.key && version_id.is_none());
        let storage_class = rules::storage_class(input.storage_class.as_ref())?;
        rules::copy_changes_something(same, replace || input.storage_class.is_some() || encrypts)?;
        let tags = if rules::tagging_directive(input.tagging_directive.as_ref())? {
            rules::tagging_header(input.tagging.as_deref())?
        } else {
            src.headers.tags.clone()
        };
        copy_source_conditions!(&src, input)?;
        rules::copy_length(src.size)?;
        let mut opts = if replace {
            rules::metadata(input.metadata.as_ref())?;
            let mut headers = object_headers(
                input.content_encoding.clone(),
                input.content_disposition.clone(),
                input.content_language.clone(),
                input.cache_control.clone(),
                input.expires.as_ref(),
            );
            // The bytes are the source's, so its checksums stay true.
            headers.checksums = src.headers.checksums.clone();
            PutOptions {
                content_type: input.content_type.clone(),
                user_meta: input
                    .metadata
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
                headers,
                ..Default::default()
            }
        } else {
            PutOptions {
                content_type: src.content_type.clone(),
                user_meta: src.user_meta.clone(),
                headers: src.headers.clone(),
                ..Default::default()
            }
        };
        // The class is the request's (STANDARD when absent), never the
        // source's, as in S3; tags follow x-amz-tagging-directive.
        opts.headers.storage_class = storage_class;
        opts.headers.tags = tags;
        opts.headers.checksums = checksum::copied(&opts.headers.checksums);
        // The destination is encrypted as this request (or its bucket)
        // says, never as the source was.
        opts.headers.encryption = None;
        let sealing = sse::new_object_key(
            &self.client,
            &self.keys,
            &input.bucket,
            input.server_side_encryption.as_ref(),
            customer,
            None,
        )
        .await?;
        // A copy's lock is the request's (or the bucket's default), never
        // the source's.
        opts.headers.acl = acl;
        lock::apply_write_headers(
            &mut opts.headers,
            input.object_lock_mode.as_ref(),
            input.object_lock_retain_until_date.as_ref(),
            input.object_lock_legal_hold_status.as_ref(),
        )?;
        let (body, reader) = self.read_source(&src, 0..src.size, source_key.map(|o| o.key));
        let body = sse::body_for_write(body, sealing.as_ref(), &mut opts);
        let info = self
            .client
            .put(&input.bucket, &input.key, body, opts)
            .await
            .map_err(to_s3)?;
        source_read(reader).await?;
        let source_version = matches!(
            &input.copy_source,
            dto::CopySource::Bucket {
                version_id: Some(_),
                ..
            }
        );
        let mut out = dto::CopyObjectOutput {
            copy_object_result: Some(dto::CopyObjectResult {
                e_tag: Some(etag(&info)),
                last_modified: Some(timestamp(info.mtime_ms)),
                ..Default::default()
            }),
            version_id: info.version_id.clone(),
            copy_source_version_id: shown_version(&src, source_version),
            ..Default::default()
        };
        set_sse_output!(out, sealing.as_ref().map(|(_, o)| o));
        Ok(S3Response::new(out))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<dto::CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CreateMultipartUploadOutput>> {
        let settings = self
            .allow(&req, &req.input.bucket, Permission::Write)
            .await?;
        rules::key(&req.input.key)?;
        let acl = self
            .requested_acl(&req.input.bucket, acl::acl_request!(req.input))
            .await?;
        rules::metadata(req.input.metadata.as_ref())?;
        let tags = rules::tagging_header(req.input.tagging.as_deref())?;
        let storage_class = rules::storage_class(req.input.storage_class.as_ref())?;
        let checksum = checksum::upload_checksum(
            req.input.checksum_algorithm.as_ref().map(|a| a.as_str()),
            req.input.checksum_type.as_ref().map(|t| t.as_str()),
        )?;
        let customer = customer_of!(req.input)?;
        let input = req.input;
        let sealing = sse::new_object_key(
            &self.client,
            &self.keys,
            &input.bucket,
            input.server_side_encryption.as_ref(),
            customer,
            Some(&settings),
        )
        .await?;
        let mut opts = PutOptions {
            content_type: input.content_type.map(|c| c.to_string()),
            user_meta: input.metadata.unwrap_or_default().into_iter().collect(),
            headers: ObjectHeaders {
                storage_class,
                tags,
                ..object_headers(
                    input.content_encoding,
                    input.content_disposition,
                    input.content_language,
                    input.cache_control,
                    input.expires.as_ref(),
                )
            },
            ..Default::default()
        };
        // The upload keeps the object key (wrapped); each part opens it.
        opts.headers.encryption = sealing.as_ref().map(|(record, _)| record.clone());
        opts.headers.acl = acl;
        lock::apply_write_headers(
            &mut opts.headers,
            input.object_lock_mode.as_ref(),
            input.object_lock_retain_until_date.as_ref(),
            input.object_lock_legal_hold_status.as_ref(),
        )?;
        let upload = self
            .client
            .create_upload(&input.bucket, &input.key, opts, checksum)
            .await
            .map_err(to_s3)?;
        let (checksum_algorithm, checksum_type) = checksum::upload_names(upload.checksum.as_ref());
        let mut out = dto::CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload.id),
            checksum_algorithm,
            checksum_type,
            ..Default::default()
        };
        set_sse_output!(out, sealing.as_ref().map(|(_, o)| o));
        Ok(S3Response::new(out))
    }

    async fn upload_part(
        &self,
        req: S3Request<dto::UploadPartInput>,
    ) -> S3Result<S3Response<dto::UploadPartOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Write)
            .await?;
        let number = rules::part_number(req.input.part_number)?;
        rules::body_length(req.input.content_length)?;
        let sums = BodyChecksums::from_request(&req.headers, req.trailing_headers.clone(), None)?;
        let customer = customer_of!(req.input)?;
        let input = req.input;
        let upload = self
            .upload_of(&input.upload_id, &input.bucket, &input.key)
            .await?;
        let opened = sse::open_upload(
            &self.keys,
            upload.headers.encryption.as_ref(),
            customer.as_ref(),
        )?;
        sums.also(checksum::part_algorithm(
            upload.checksum.as_ref(),
            sums.named(),
        )?);
        let named = sums.named().to_vec();
        let body = input.body.ok_or_else(|| s3_error!(IncompleteBody))?;
        let reader = sums.watch(body);
        let computed = sums.results();
        let mut opts = PutOptions {
            body_check: Some(sums.check()),
            ..Default::default()
        };
        let sealing = upload.headers.encryption.clone().zip(opened.clone());
        let reader = sse::body_for_write(reader, sealing.as_ref(), &mut opts);
        let part = self
            .client
            .put_part_with(&upload, number, reader, opts)
            .await
            .map_err(to_s3)?;
        let computed = computed.lock().map(|c| c.clone()).unwrap_or_default();
        let answer = checksum::part_answer(upload.checksum.as_ref(), &computed, &named);
        let sums = ResponseChecksums::of(&answer, true, true);
        let mut out = dto::UploadPartOutput {
            e_tag: Some(dto::ETag::Strong(part.etag)),
            ..Default::default()
        };
        set_checksums!(out, sums);
        set_sse_output!(out, opened.as_ref());
        Ok(S3Response::new(out))
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<dto::UploadPartCopyInput>,
    ) -> S3Result<S3Response<dto::UploadPartCopyOutput>> {
        let src = self
            .copy_source(&req, &req.input.copy_source, &req.input.bucket)
            .await?;
        let input = &req.input;
        let number = rules::part_number(input.part_number)?;
        let source_key = self.keys.open(
            src.headers.encryption.as_ref(),
            copy_source_customer_of!(input)?.as_ref(),
        )?;
        let customer = customer_of!(input)?;
        let upload = self
            .upload_of(&input.upload_id, &input.bucket, &input.key)
            .await?;
        let opened = sse::open_upload(
            &self.keys,
            upload.headers.encryption.as_ref(),
            customer.as_ref(),
        )?;
        copy_source_conditions!(&src, input)?;
        let range = match &input.copy_source_range {
            Some(r) => copy_range(r, src.size)?,
            None => 0..src.size,
        };
        rules::copy_length(range.end - range.start)?;
        let (body, reader) = self.read_source(&src, range, source_key.map(|o| o.key));
        // A copied part is hashed like an uploaded one: the completion
        // forms the object's checksum from every part's.
        let sums = BodyChecksums::computing(checksum::upload_algorithm(upload.checksum.as_ref()));
        let body = sums.watch_reader(body);
        let computed = sums.results();
        let mut opts = PutOptions {
            body_check: Some(sums.check()),
            ..Default::default()
        };
        let sealing = upload.headers.encryption.clone().zip(opened.clone());
        let body = sse::body_for_write(body, sealing.as_ref(), &mut opts);
        let part = self
            .client
            .put_part_with(&upload, number, body, opts)
            .await
            .map_err(to_s3)?;
        source_read(reader).await?;
        let computed = computed.lock().map(|c| c.clone()).unwrap_or_default();
        let sums = ResponseChecksums::of(
            &checksum::part_answer(upload.checksum.as_ref(), &computed, &[]),
            true,
            true,
        );
        let mut result = dto::CopyPartResult {
            e_tag: Some(dto::ETag::Strong(part.etag)),
            last_modified: Some(timestamp(part.mtime_ms)),
            ..Default::default()
        };
        set_checksums!(result, sums);
        let mut out = dto::UploadPartCopyOutput {
            copy_part_result: Some(result),
            ..Default::default()
        };
        set_sse_output!(out, opened.as_ref());
        Ok(S3Response::new(out))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<dto::CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CompleteMultipartUploadOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Write)
            .await?;
        let mut input = req.input;
        let listed = input
            .multipart_upload
            .as_ref()
            .and_then(|m| m.parts.as_ref())
            .map(|parts| {
                parts
                    .iter()
                    .map(checksum::listed_checksums)
                    .collect::<S3Result<Vec<_>>>()
            })
            .transpose()?
            .unwrap_or_default();
        let parts = rules::completed_parts(input.multipart_upload.take().and_then(|m| m.parts))?;
        let condition =
            rules::write_condition(input.if_match.as_ref(), input.if_none_match.as_ref())?;
        let wanted = checksum::CompletionHeaders::of(&input)?;
        let upload = self
            .upload_of(&input.upload_id, &input.bucket, &input.key)
            .await?;
        let stored = self
            .client
            .list_parts(&input.upload_id)
            .await
            .map_err(to_s3)?;
        let listed: Vec<_> = parts
            .iter()
            .cloned()
            .zip(listed)
            .map(|((n, etag), sum)| (n, etag, sum))
            .collect();
        let sum = checksum::completion(upload.checksum.as_ref(), &listed, &stored, &wanted)?;
        if let Some(want) = input.mpu_object_size {
            // S3 API reference, CompleteMultipartUpload: a size that is not
            // the object's is InvalidRequest.
            let total: u64 = listed
                .iter()
                .filter_map(|(n, etag, _)| {
                    stored
                        .iter()
                        .find(|p| p.number == *n && p.etag == etag.trim_matches('"'))
                })
                .map(|p| p.size)
                .sum();
            if u64::try_from(want).ok() != Some(total) {
                return Err(s3_error!(
                    InvalidRequest,
                    "The provided 'x-amz-mp-object-size' header value {want} does not match what was computed: {total}"
                ));
            }
        }
        // Parts are named by ETag, so the parts meta joins are the ones the
        // checksum was formed from (or meta refuses the completion).
        let info = self
            .client
            .complete_upload(&input.upload_id, parts, condition, sum)
            .await
            .map_err(to_s3)?;
        let sums = ResponseChecksums::of(&info.headers.checksums, true, true);
        let mut out = dto::CompleteMultipartUploadOutput {
            bucket: Some(input.bucket.clone()),
            key: Some(input.key.clone()),
            e_tag: Some(etag(&info)),
            version_id: info.version_id.clone(),
            location: Some(format!("/{}/{}", input.bucket, input.key)),
            server_side_encryption: sse::shown_scheme(&info),
            checksum_type: sums.kind.clone(),
            ..Default::default()
        };
        set_checksums!(out, sums);
        Ok(S3Response::new(out))
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
        let upload = self
            .upload_of(&input.upload_id, &input.bucket, &input.key)
            .await?;
        let after = rules::part_number_marker(input.part_number_marker)?;
        let max = rules::page_size("max-parts", input.max_parts)?.max(1);
        let all = self
            .client
            .list_parts(&input.upload_id)
            .await
            .map_err(to_s3)?;
        let mut parts: Vec<dto::Part> = all
            .iter()
            .filter(|p| p.number as i32 > after)
            .map(|p| {
                let mut part = dto::Part {
                    part_number: Some(p.number as i32),
                    e_tag: Some(dto::ETag::Strong(p.etag.clone())),
                    size: Some(p.size as i64),
                    last_modified: Some(timestamp(p.mtime_ms)),
                    ..Default::default()
                };
                let sums = checksum::part_answer(upload.checksum.as_ref(), &p.checksums, &[]);
                set_checksums!(part, ResponseChecksums::of(&sums, true, true));
                part
            })
            .collect();
        let truncated = parts.len() > max as usize;
        parts.truncate(max as usize);
        let (checksum_algorithm, checksum_type) = checksum::upload_names(upload.checksum.as_ref());
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
            checksum_algorithm,
            checksum_type,
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
        let max = rules::page_size("max-uploads", input.max_uploads)?.max(1) as usize;
        let url = wants_url(&input.encoding_type);
        let mut all = self
            .client
            .list_uploads(&input.bucket)
            .await
            .map_err(to_s3)?;
        // S3's order: by key, then by when the upload started.
        all.sort_by(|a, b| (&a.key, a.initiated_ms, &a.id).cmp(&(&b.key, b.initiated_ms, &b.id)));
        // After key-marker: later keys, or (with upload-id-marker) the
        // same key's uploads after that one.
        // Where the page starts: after key-marker's uploads, or with
        // upload-id-marker, after that one upload of key-marker.
        let start = match (&input.key_marker, &input.upload_id_marker) {
            (None, _) => 0,
            (Some(k), Some(id)) => match all.iter().position(|u| u.key == *k && u.id == *id) {
                Some(i) => i + 1,
                None => all.partition_point(|u| u.key <= *k),
            },
            (Some(k), None) => all.partition_point(|u| u.key <= *k),
        };
        let delimiter = input.delimiter.as_deref().filter(|d| !d.is_empty());
        let mut uploads = Vec::new();
        let mut prefixes: Vec<String> = Vec::new();
        let mut truncated = false;
        let mut last: Option<(String, String)> = None;
        for u in all[start..].iter().filter(|u| u.key.starts_with(&prefix)) {
            let common = delimiter.and_then(|d| {
                u.key[prefix.len()..]
                    .find(d)
                    .map(|pos| u.key[..prefix.len() + pos + d.len()].to_string())
            });
            // More uploads under the prefix just listed take no room.
            if common.is_some() && prefixes.last() == common.as_ref() {
                last = Some((u.key.clone(), u.id.clone()));
                continue;
            }
            if uploads.len() + prefixes.len() == max {
                truncated = true;
                break;
            }
            match common {
                Some(p) => prefixes.push(p),
                None => {
                    let (checksum_algorithm, checksum_type) =
                        checksum::upload_names(u.checksum.as_ref());
                    uploads.push(dto::MultipartUpload {
                        key: Some(encode_if(url, u.key.clone())),
                        upload_id: Some(u.id.clone()),
                        initiated: Some(timestamp(u.initiated_ms)),
                        checksum_algorithm,
                        checksum_type,
                        ..Default::default()
                    })
                }
            }
            last = Some((u.key.clone(), u.id.clone()));
        }
        let prefixes: Vec<dto::CommonPrefix> = prefixes
            .into_iter()
            .map(|p| dto::CommonPrefix {
                prefix: Some(encode_if(url, p)),
            })
            .collect();
        let (next_key, next_id) = match last.filter(|_| truncated) {
            Some((k, id)) => (Some(encode_if(url, k)), Some(id)),
            None => (None, None),
        };
        let enc = |s: Option<String>| s.map(|s| encode_if(url, s));
        Ok(S3Response::new(dto::ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: enc(input.prefix),
            delimiter: enc(input.delimiter),
            key_marker: enc(input.key_marker),
            upload_id_marker: input.upload_id_marker,
            max_uploads: Some(max as i32),
            is_truncated: Some(truncated),
            next_key_marker: next_key,
            next_upload_id_marker: next_id,
            uploads: Some(uploads),
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
        let max_keys = rules::page_size("max-keys", input.max_keys)?;
        let url = wants_url(&input.encoding_type);
        // An empty delimiter is no delimiter, and is not echoed.
        let delimiter = input.delimiter.filter(|d| !d.is_empty());
        let (mut contents, prefixes, next) = self
            .list(
                &input.bucket,
                input.prefix.clone(),
                delimiter.clone(),
                input.marker.clone(),
                max_keys,
                url,
            )
            .await?;
        // ListObjects (version 1) shows every object's Owner unasked;
        // version 2 only with `fetch-owner`.
        if !contents.is_empty() {
            let owner = self.bucket_owner(&input.bucket).await?;
            for o in &mut contents {
                o.owner = owner.clone();
            }
        }
        let enc = |s: Option<String>| s.map(|s| encode_if(url, s));
        let has_delimiter = delimiter.is_some();
        Ok(S3Response::new(dto::ListObjectsOutput {
            name: Some(input.bucket),
            // Version 1 encodes keys, prefixes, markers and the delimiter
            // for `encoding-type=url`, but not the request's Prefix (the
            // fields botocore decodes are those S3 encodes).
            prefix: input.prefix,
            // Marker is always answered, empty when the request had none.
            marker: Some(enc(input.marker).unwrap_or_default()),
            delimiter: enc(delimiter),
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

    /// ListObjectVersions (S3 API reference): versions and delete markers
    /// in key order, each key's newest first, paged by `key-marker` and
    /// `version-id-marker`; `NextKeyMarker` and `NextVersionIdMarker` name
    /// the last entry returned. Meta merges current objects and older
    /// versions from one snapshot, so a page is one consistent state.
    async fn list_object_versions(
        &self,
        req: S3Request<dto::ListObjectVersionsInput>,
    ) -> S3Result<S3Response<dto::ListObjectVersionsOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Read)
            .await?;
        let input = req.input;
        let max_keys = rules::page_size("max-keys", input.max_keys)?;
        let (key_marker, version_marker) = rules::version_markers(
            input.key_marker.as_deref(),
            input.version_id_marker.as_deref(),
        )?;
        let url = wants_url(&input.encoding_type);
        let enc = |s: String| encode_if(url, s);
        let page = if max_keys == 0 {
            tessera_proto::VersionListing {
                entries: Vec::new(),
                next_key: None,
                next_version: None,
            }
        } else {
            let opts = VersionListOptions {
                prefix: input.prefix.clone().unwrap_or_default(),
                delimiter: input.delimiter.clone(),
                key_marker: key_marker.map(str::to_string),
                version_marker: version_marker.map(str::to_string),
                max_keys: max_keys as u32,
            };
            self.client
                .list_versions(&input.bucket, &opts)
                .await
                .map_err(to_s3)?
        };
        let owner = self.bucket_owner(&input.bucket).await?;
        let (mut versions, mut markers, mut prefixes) = (Vec::new(), Vec::new(), Vec::new());
        for e in page.entries {
            match e {
                VersionListEntry::Version(v) if v.delete_marker => {
                    markers.push(dto::DeleteMarkerEntry {
                        is_latest: Some(v.is_latest),
                        last_modified: Some(timestamp(v.mtime_ms)),
                        owner: owner.clone(),
                        version_id: Some(version_label(&v.version_id).to_string()),
                        key: Some(enc(v.key)),
                    })
                }
                VersionListEntry::Version(v) => versions.push(dto::ObjectVersion {
                    e_tag: Some(dto::ETag::Strong(v.etag)),
                    is_latest: Some(v.is_latest),
                    last_modified: Some(timestamp(v.mtime_ms)),
                    owner: owner.clone(),
                    size: Some(v.size as i64),
                    storage_class: Some(dto::ObjectVersionStorageClass::from(
                        v.storage_class
                            .unwrap_or_else(|| dto::StorageClass::STANDARD.to_string()),
                    )),
                    version_id: Some(version_label(&v.version_id).to_string()),
                    key: Some(enc(v.key)),
                    ..Default::default()
                }),
                VersionListEntry::CommonPrefix(p) => prefixes.push(dto::CommonPrefix {
                    prefix: Some(enc(p)),
                }),
            }
        }
        Ok(S3Response::new(dto::ListObjectVersionsOutput {
            name: Some(input.bucket),
            prefix: Some(enc(input.prefix.unwrap_or_default())),
            delimiter: input.delimiter.map(enc),
            key_marker: Some(enc(key_marker.unwrap_or_default().to_string())),
            version_id_marker: Some(version_marker.unwrap_or_default().to_string()),
            max_keys: Some(max_keys),
            is_truncated: Some(page.next_key.is_some()),
            next_key_marker: page.next_key.map(enc),
            next_version_id_marker: page.next_version,
            versions: Some(versions),
            delete_markers: Some(markers),
            common_prefixes: Some(prefixes),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    /// PutBucketVersioning (S3 API reference): `Enabled` or `Suspended`,
    /// by the bucket's owner; a bucket never goes back to unversioned.
    async fn put_bucket_versioning(
        &self,
        req: S3Request<dto::PutBucketVersioningInput>,
    ) -> S3Result<S3Response<dto::PutBucketVersioningOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Owner)
            .await?;
        let state = rules::versioning_configuration(&req.input.versioning_configuration)?;
        self.client
            .set_versioning(&req.input.bucket, state)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(dto::PutBucketVersioningOutput::default()))
    }

    /// GetBucketVersioning (S3 API reference): the state, or an empty
    /// configuration for a bucket never versioned.
    async fn get_bucket_versioning(
        &self,
        req: S3Request<dto::GetBucketVersioningInput>,
    ) -> S3Result<S3Response<dto::GetBucketVersioningOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Read)
            .await?;
        let state = self
            .client
            .versioning(&req.input.bucket)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(dto::GetBucketVersioningOutput {
            status: state.map(|s| dto::BucketVersioningStatus::from(s.as_str().to_string())),
            mfa_delete: None,
        }))
    }

    /// PutObjectTagging: replaces the tag set of the current object
    /// (S3 API reference, PutObjectTagging).
    async fn put_object_tagging(
        &self,
        req: S3Request<dto::PutObjectTaggingInput>,
    ) -> S3Result<S3Response<dto::PutObjectTaggingOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Write)
            .await?;
        let input = req.input;
        let version = rules::version_id(input.version_id.as_deref())?;
        let tags = rules::object_tagging(input.tagging)?;
        let info = self
            .set_tags(&input.bucket, &input.key, version, tags)
            .await?;
        Ok(S3Response::new(dto::PutObjectTaggingOutput {
            version_id: shown_version(&info, version.is_some()),
        }))
    }

    /// GetObjectTagging: the object's tags, an empty `<TagSet/>` when it
    /// has none (S3 API reference, GetObjectTagging).
    async fn get_object_tagging(
        &self,
        req: S3Request<dto::GetObjectTaggingInput>,
    ) -> S3Result<S3Response<dto::GetObjectTaggingOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Read)
            .await?;
        let input = &req.input;
        let version = rules::version_id(input.version_id.as_deref())?;
        let info = self
            .version_for_read(&input.bucket, &input.key, version)
            .await?;
        Ok(S3Response::new(dto::GetObjectTaggingOutput {
            version_id: shown_version(&info, version.is_some()),
            tag_set: tag_set(info.headers.tags),
        }))
    }

    /// DeleteObjectTagging: removes every tag (204; NoSuchKey for a
    /// missing key).
    async fn delete_object_tagging(
        &self,
        req: S3Request<dto::DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectTaggingOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Write)
            .await?;
        let input = &req.input;
        let version = rules::version_id(input.version_id.as_deref())?;
        let info = self
            .set_tags(&input.bucket, &input.key, version, TagSet::new())
            .await?;
        Ok(S3Response::new(dto::DeleteObjectTaggingOutput {
            version_id: shown_version(&info, version.is_some()),
        }))
    }

    /// PutBucketTagging: replaces the bucket's tags; the bucket's owner
    /// only (S3 API reference, PutBucketTagging).
    async fn put_bucket_tagging(
        &self,
        req: S3Request<dto::PutBucketTaggingInput>,
    ) -> S3Result<S3Response<dto::PutBucketTaggingOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Owner)
            .await?;
        let input = req.input;
        let tags = rules::bucket_tagging(input.tagging)?;
        self.client
            .set_bucket_tags(&input.bucket, tags)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(dto::PutBucketTaggingOutput::default()))
    }

    /// GetBucketTagging: `NoSuchTagSet` (404) when the bucket has no tags
    /// (S3 API reference, GetBucketTagging).
    async fn get_bucket_tagging(
        &self,
        req: S3Request<dto::GetBucketTaggingInput>,
    ) -> S3Result<S3Response<dto::GetBucketTaggingOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Read)
            .await?;
        let tags = self
            .client
            .bucket_tags(&req.input.bucket)
            .await
            .map_err(to_s3)?;
        if tags.is_empty() {
            return Err(s3_error!(NoSuchTagSet, "The TagSet does not exist"));
        }
        Ok(S3Response::new(dto::GetBucketTaggingOutput {
            tag_set: tag_set(tags),
        }))
    }

    /// DeleteBucketTagging: removes the bucket's tags (204, also when it
    /// had none).
    async fn delete_bucket_tagging(
        &self,
        req: S3Request<dto::DeleteBucketTaggingInput>,
    ) -> S3Result<S3Response<dto::DeleteBucketTaggingOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Owner)
            .await?;
        self.client
            .set_bucket_tags(&req.input.bucket, TagSet::new())
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(dto::DeleteBucketTaggingOutput::default()))
    }

    /// PutBucketCors (owner): replaces the bucket's CORS rules, checked
    /// by `rules::cors` (S3 API reference, PutBucketCors).
    async fn put_bucket_cors(
        &self,
        req: S3Request<dto::PutBucketCorsInput>,
    ) -> S3Result<S3Response<dto::PutBucketCorsOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Owner)
            .await?;
        let input = req.input;
        let rules = rules::cors(input.cors_configuration)?;
        self.client
            .set_bucket_access(&input.bucket, AccessChange::Cors(rules))
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(dto::PutBucketCorsOutput::default()))
    }

    /// GetBucketCors (owner, as S3 needs `s3:GetBucketCORS`, which only
    /// the owner has by default): `NoSuchCORSConfiguration` (404) when
    /// the bucket has no rules.
    async fn get_bucket_cors(
        &self,
        req: S3Request<dto::GetBucketCorsInput>,
    ) -> S3Result<S3Response<dto::GetBucketCorsOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Owner)
            .await?;
        let access = self.bucket_access(&req.input.bucket).await?;
        if access.cors.is_empty() {
            return Err(s3_error!(
                NoSuchCORSConfiguration,
                "The CORS configuration does not exist"
            ));
        }
        let some = |v: Vec<String>| (!v.is_empty()).then_some(v);
        let rules = access
            .cors
            .into_iter()
            .map(|r| dto::CORSRule {
                id: r.id,
                allowed_origins: r.allowed_origins,
                allowed_methods: r.allowed_methods,
                allowed_headers: some(r.allowed_headers),
                expose_headers: some(r.expose_headers),
                max_age_seconds: r.max_age_seconds,
            })
            .collect();
        Ok(S3Response::new(dto::GetBucketCorsOutput {
            cors_rules: Some(rules),
        }))
    }

    /// DeleteBucketCors (owner): removes the rules (204, also when there
    /// were none).
    async fn delete_bucket_cors(
        &self,
        req: S3Request<dto::DeleteBucketCorsInput>,
    ) -> S3Result<S3Response<dto::DeleteBucketCorsOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Owner)
            .await?;
        self.client
            .set_bucket_access(&req.input.bucket, AccessChange::Cors(Vec::new()))
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(dto::DeleteBucketCorsOutput::default()))
    }

    /// PutBucketPolicy (owner): the document is checked
    /// (`policy::BucketPolicy::parse`: `MalformedPolicy`) and kept as
    /// given; a public one is refused with `AccessDenied` while the
    /// bucket's PublicAccessBlock has `BlockPublicPolicy` (S3 API
    /// reference, PutBucketPolicy and PutPublicAccessBlock).
    async fn put_bucket_policy(
        &self,
        req: S3Request<dto::PutBucketPolicyInput>,
    ) -> S3Result<S3Response<dto::PutBucketPolicyOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Owner)
            .await?;
        let input = req.input;
        let text = input.policy;
        if text.len() > MAX_POLICY_BYTES {
            return Err(s3_error!(
                MalformedPolicy,
                "Policies must be no more than {MAX_POLICY_BYTES} bytes"
            ));
        }
        let policy = BucketPolicy::parse(&text, &input.bucket)
            .map_err(|e| s3_error!(MalformedPolicy, "{e}"))?;
        let access = self.bucket_access(&input.bucket).await?;
        if policy.is_public()
            && access
                .public_access_block
                .is_some_and(|b| b.block_public_policy)
        {
            return Err(s3_error!(
                AccessDenied,
                "Access Denied: the bucket's PublicAccessBlock blocks public policies"
            ));
        }
        self.client
            .set_bucket_access(&input.bucket, AccessChange::Policy(Some(text)))
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(dto::PutBucketPolicyOutput::default()))
    }

    /// GetBucketPolicy (owner): the document as it was put;
    /// `NoSuchBucketPolicy` (404) when there is none.
    async fn get_bucket_policy(
        &self,
        req: S3Request<dto::GetBucketPolicyInput>,
    ) -> S3Result<S3Response<dto::GetBucketPolicyOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Owner)
            .await?;
        let access = self.bucket_access(&req.input.bucket).await?;
        let Some(policy) = access.policy else {
            return Err(s3_error!(
                NoSuchBucketPolicy,
                "The bucket policy does not exist"
            ));
        };
        Ok(S3Response::new(dto::GetBucketPolicyOutput {
            policy: Some(policy),
        }))
    }

    /// DeleteBucketPolicy (owner): 204, also when there was none.
    async fn delete_bucket_policy(
        &self,
        req: S3Request<dto::DeleteBucketPolicyInput>,
    ) -> S3Result<S3Response<dto::DeleteBucketPolicyOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Owner)
            .await?;
        self.client
            .set_bucket_access(&req.input.bucket, AccessChange::Policy(None))
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(dto::DeleteBucketPolicyOutput::default()))
    }

    /// GetBucketPolicyStatus (owner): `IsPublic` when the policy grants
    /// anything to everyone without pinning the caller to an address
    /// range (`BucketPolicy::is_public`) or the bucket's canned ACL is
    /// public; false without a policy (as Ceph RGW answers, rather than
    /// NoSuchBucketPolicy).
    async fn get_bucket_policy_status(
        &self,
        req: S3Request<dto::GetBucketPolicyStatusInput>,
    ) -> S3Result<S3Response<dto::GetBucketPolicyStatusOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Owner)
            .await?;
        let bucket = &req.input.bucket;
        let access = self.bucket_access(bucket).await?;
        let policy_public = match &access.policy {
            Some(text) => BucketPolicy::parse(text, bucket)
                .map_err(|e| s3_error!(InternalError, "the stored policy is refused: {e}"))?
                .is_public(),
            None => false,
        };
        let acl_public = access.acl.as_ref().is_some_and(acl::is_public);
        Ok(S3Response::new(dto::GetBucketPolicyStatusOutput {
            policy_status: Some(dto::PolicyStatus {
                is_public: Some(policy_public || acl_public),
            }),
        }))
    }

    /// PutBucketAcl (the owner key, or WRITE_ACP by the bucket's ACL): a
    /// canned ACL in `x-amz-acl`, grants in `x-amz-grant-*` headers, or an
    /// `AccessControlPolicy` body (`acl::requested`), replacing the
    /// bucket's ACL. A public ACL is refused with `AccessDenied` while the
    /// PublicAccessBlock has `BlockPublicAcls` (S3 API reference,
    /// PutBucketAcl, PutPublicAccessBlock).
    async fn put_bucket_acl(
        &self,
        req: S3Request<dto::PutBucketAclInput>,
    ) -> S3Result<S3Response<dto::PutBucketAclOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Owner)
            .await?;
        let input = &req.input;
        let acl = self
            .required_acl(&input.bucket, acl::acl_request!(input, put_acl))
            .await?;
        self.client
            .set_bucket_access(&input.bucket, AccessChange::Acl(acl::stored(acl)))
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(dto::PutBucketAclOutput::default()))
    }

    /// GetBucketAcl (the owner key, or READ_ACP by the bucket's ACL): the
    /// bucket's grants as they were put (the owner's FULL_CONTROL when none
    /// were).
    async fn get_bucket_acl(
        &self,
        req: S3Request<dto::GetBucketAclInput>,
    ) -> S3Result<S3Response<dto::GetBucketAclOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Owner)
            .await?;
        let access = self.bucket_access(&req.input.bucket).await?;
        let (owner, grants) = self
            .acl_answer(&req.input.bucket, access.acl.as_ref())
            .await?;
        Ok(S3Response::new(dto::GetBucketAclOutput {
            grants: Some(grants),
            owner,
        }))
    }

    /// GetObjectAcl (a key's read grant, or READ_ACP by the object's ACL):
    /// the grants of the version asked for (the current object without
    /// `versionId`) as they were put.
    async fn get_object_acl(
        &self,
        req: S3Request<dto::GetObjectAclInput>,
    ) -> S3Result<S3Response<dto::GetObjectAclOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Read)
            .await?;
        let input = &req.input;
        let version = rules::version_id(input.version_id.as_deref())?;
        let info = self
            .version_for_read(&input.bucket, &input.key, version)
            .await?;
        let (owner, grants) = self
            .acl_answer(&input.bucket, info.headers.acl.as_ref())
            .await?;
        Ok(S3Response::new(dto::GetObjectAclOutput {
            grants: Some(grants),
            owner,
            ..Default::default()
        }))
    }

    /// PutObjectAcl (a key's write grant, or WRITE_ACP by the object's
    /// ACL): replaces the ACL of the version asked for (the current object
    /// without `versionId`), in any of the three forms PutBucketAcl takes.
    async fn put_object_acl(
        &self,
        req: S3Request<dto::PutObjectAclInput>,
    ) -> S3Result<S3Response<dto::PutObjectAclOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Write)
            .await?;
        let input = &req.input;
        let version = rules::version_id(input.version_id.as_deref())?;
        let acl = self
            .required_acl(&input.bucket, acl::acl_request!(input, put_acl))
            .await?;
        // The version must be one to read (a delete marker is
        // MethodNotAllowed), as for GetObjectAcl.
        self.version_for_read(&input.bucket, &input.key, version)
            .await?;
        self.client
            .set_object_acl((&input.bucket, &input.key, version), acl::stored(acl))
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(dto::PutObjectAclOutput::default()))
    }

    /// PutPublicAccessBlock (owner): the four settings, absent ones false
    /// (S3 API reference, PutPublicAccessBlock).
    async fn put_public_access_block(
        &self,
        req: S3Request<dto::PutPublicAccessBlockInput>,
    ) -> S3Result<S3Response<dto::PutPublicAccessBlockOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Owner)
            .await?;
        let c = &req.input.public_access_block_configuration;
        let block = PublicAccessBlock {
            block_public_acls: c.block_public_acls.unwrap_or(false),
            ignore_public_acls: c.ignore_public_acls.unwrap_or(false),
            block_public_policy: c.block_public_policy.unwrap_or(false),
            restrict_public_buckets: c.restrict_public_buckets.unwrap_or(false),
        };
        self.client
            .set_bucket_access(
                &req.input.bucket,
                AccessChange::PublicAccessBlock(Some(block)),
            )
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(dto::PutPublicAccessBlockOutput::default()))
    }

    /// GetPublicAccessBlock (owner): `NoSuchPublicAccessBlockConfiguration`
    /// (404) when none was put.
    async fn get_public_access_block(
        &self,
        req: S3Request<dto::GetPublicAccessBlockInput>,
    ) -> S3Result<S3Response<dto::GetPublicAccessBlockOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Owner)
            .await?;
        let access = self.bucket_access(&req.input.bucket).await?;
        let Some(b) = access.public_access_block else {
            let mut e = S3Error::with_message(
                S3ErrorCode::Custom("NoSuchPublicAccessBlockConfiguration".into()),
                "The public access block configuration was not found",
            );
            e.set_status_code(axum::http::StatusCode::NOT_FOUND);
            return Err(e);
        };
        Ok(S3Response::new(dto::GetPublicAccessBlockOutput {
            public_access_block_configuration: Some(dto::PublicAccessBlockConfiguration {
                block_public_acls: Some(b.block_public_acls),
                ignore_public_acls: Some(b.ignore_public_acls),
                block_public_policy: Some(b.block_public_policy),
                restrict_public_buckets: Some(b.restrict_public_buckets),
            }),
        }))
    }

    /// DeletePublicAccessBlock (owner): 204, also when there was none.
    async fn delete_public_access_block(
        &self,
        req: S3Request<dto::DeletePublicAccessBlockInput>,
    ) -> S3Result<S3Response<dto::DeletePublicAccessBlockOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Owner)
            .await?;
        self.client
            .set_bucket_access(&req.input.bucket, AccessChange::PublicAccessBlock(None))
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(
            dto::DeletePublicAccessBlockOutput::default(),
        ))
    }

    /// GetObjectAttributes: the attributes asked for in
    /// `x-amz-object-attributes` (S3 API reference, GetObjectAttributes):
    /// ETag, ObjectSize, StorageClass, Checksum (the stored checksums with
    /// their type; a composite one without its `-N`), and ObjectParts for a
    /// multipart object (part numbers, sizes and checksums, paged by
    /// `max-parts` and `part-number-marker`).
    async fn put_bucket_lifecycle_configuration(
        &self,
        req: S3Request<dto::PutBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<dto::PutBucketLifecycleConfigurationOutput>> {
        self.do_put_bucket_lifecycle_configuration(req).await
    }

    async fn get_bucket_lifecycle_configuration(
        &self,
        req: S3Request<dto::GetBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<dto::GetBucketLifecycleConfigurationOutput>> {
        self.do_get_bucket_lifecycle_configuration(req).await
    }

    async fn delete_bucket_lifecycle(
        &self,
        req: S3Request<dto::DeleteBucketLifecycleInput>,
    ) -> S3Result<S3Response<dto::DeleteBucketLifecycleOutput>> {
        self.do_delete_bucket_lifecycle(req).await
    }

    async fn put_object_lock_configuration(
        &self,
        req: S3Request<dto::PutObjectLockConfigurationInput>,
    ) -> S3Result<S3Response<dto::PutObjectLockConfigurationOutput>> {
        self.do_put_object_lock_configuration(req).await
    }

    async fn get_object_lock_configuration(
        &self,
        req: S3Request<dto::GetObjectLockConfigurationInput>,
    ) -> S3Result<S3Response<dto::GetObjectLockConfigurationOutput>> {
        self.do_get_object_lock_configuration(req).await
    }

    async fn put_object_retention(
        &self,
        req: S3Request<dto::PutObjectRetentionInput>,
    ) -> S3Result<S3Response<dto::PutObjectRetentionOutput>> {
        self.do_put_object_retention(req).await
    }

    async fn get_object_retention(
        &self,
        req: S3Request<dto::GetObjectRetentionInput>,
    ) -> S3Result<S3Response<dto::GetObjectRetentionOutput>> {
        self.do_get_object_retention(req).await
    }

    async fn put_object_legal_hold(
        &self,
        req: S3Request<dto::PutObjectLegalHoldInput>,
    ) -> S3Result<S3Response<dto::PutObjectLegalHoldOutput>> {
        self.do_put_object_legal_hold(req).await
    }

    async fn get_object_legal_hold(
        &self,
        req: S3Request<dto::GetObjectLegalHoldInput>,
    ) -> S3Result<S3Response<dto::GetObjectLegalHoldOutput>> {
        self.do_get_object_legal_hold(req).await
    }

    async fn get_object_attributes(
        &self,
        req: S3Request<dto::GetObjectAttributesInput>,
    ) -> S3Result<S3Response<dto::GetObjectAttributesOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Read)
            .await?;
        let input = &req.input;
        let wanted = rules::object_attributes(&input.object_attributes)?;
        let max_parts = rules::page_size("max-parts", input.max_parts)?;
        let marker = rules::part_number_marker(input.part_number_marker)?;
        let version = rules::version_id(input.version_id.as_deref())?;
        let info = self
            .version_for_read(&input.bucket, &input.key, version)
            .await?;
        // An SSE-C object's attributes need its key, as its reads do.
        self.keys.open(
            info.headers.encryption.as_ref(),
            customer_of!(input)?.as_ref(),
        )?;
        let mut out = dto::GetObjectAttributesOutput {
            version_id: shown_version(&info, version.is_some()),
            last_modified: Some(timestamp(info.mtime_ms)),
            ..Default::default()
        };
        if wanted.etag {
            out.e_tag = Some(etag(&info));
        }
        if wanted.size {
            out.object_size = Some(info.size as i64);
        }
        if wanted.storage_class {
            out.storage_class = Some(dto::StorageClass::from(
                info.headers
                    .storage_class
                    .clone()
                    .unwrap_or_else(|| dto::StorageClass::STANDARD.to_string()),
            ));
        }
        if wanted.checksum {
            let sums =
                ResponseChecksums::of(&info.headers.checksums, true, true).without_part_count();
            if sums.kind.is_some() {
                out.checksum = Some(dto::Checksum {
                    checksum_crc32: sums.crc32,
                    checksum_crc32c: sums.crc32c,
                    checksum_crc64nvme: sums.crc64nvme,
                    checksum_sha1: sums.sha1,
                    checksum_sha256: sums.sha256,
                    checksum_type: sums.kind,
                });
            }
        }
        if wanted.parts && !info.parts.is_empty() {
            let first = marker as usize;
            let page: Vec<dto::ObjectPart> = info
                .parts
                .iter()
                .enumerate()
                .skip(first)
                .take(max_parts as usize)
                .map(|(i, size)| {
                    let mut part = dto::ObjectPart {
                        part_number: Some(i as i32 + 1),
                        size: Some(*size as i64),
                        ..Default::default()
                    };
                    // The object's one multipart checksum names the
                    // algorithm its parts' checksums are in.
                    let sum = info
                        .headers
                        .checksums
                        .keys()
                        .next()
                        .zip(info.part_checksums.get(i));
                    let sums: BTreeMap<String, String> = sum
                        .map(|(a, v)| (a.clone(), v.clone()))
                        .into_iter()
                        .collect();
                    set_checksums!(part, ResponseChecksums::of(&sums, true, true));
                    part
                })
                .collect();
            let last = page.last().and_then(|p| p.part_number);
            let truncated = first + page.len() < info.parts.len();
            out.object_parts = Some(dto::GetObjectAttributesParts {
                total_parts_count: Some(info.parts.len() as i32),
                part_number_marker: Some(marker),
                next_part_number_marker: last,
                max_parts: Some(max_parts),
                is_truncated: Some(truncated),
                parts: Some(page),
            });
        }
        Ok(S3Response::new(out))
    }

    /// PutBucketEncryption (owner): the bucket's default encryption for
    /// new objects without their own (`sse::bucket_rule`).
    async fn put_bucket_encryption(
        &self,
        req: S3Request<dto::PutBucketEncryptionInput>,
    ) -> S3Result<S3Response<dto::PutBucketEncryptionOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Owner)
            .await?;
        let input = req.input;
        let rule = sse::bucket_rule(input.server_side_encryption_configuration)?;
        self.client
            .set_bucket_access(&input.bucket, AccessChange::Encryption(Some(rule)))
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(dto::PutBucketEncryptionOutput::default()))
    }

    /// GetBucketEncryption (owner): `ServerSideEncryptionConfigurationNotFoundError`
    /// (404) when the bucket has no default.
    async fn get_bucket_encryption(
        &self,
        req: S3Request<dto::GetBucketEncryptionInput>,
    ) -> S3Result<S3Response<dto::GetBucketEncryptionOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Owner)
            .await?;
        let Some(rule) = self.bucket_access(&req.input.bucket).await?.encryption else {
            let mut e = s3_error!(
                ServerSideEncryptionConfigurationNotFoundError,
                "The server side encryption configuration was not found"
            );
            e.set_status_code(axum::http::StatusCode::NOT_FOUND);
            return Err(e);
        };
        Ok(S3Response::new(dto::GetBucketEncryptionOutput {
            server_side_encryption_configuration: Some(sse::bucket_config(rule)),
        }))
    }

    /// DeleteBucketEncryption (owner): 204, also when there was none.
    async fn delete_bucket_encryption(
        &self,
        req: S3Request<dto::DeleteBucketEncryptionInput>,
    ) -> S3Result<S3Response<dto::DeleteBucketEncryptionOutput>> {
        self.allow(&req, &req.input.bucket, Permission::Owner)
            .await?;
        self.client
            .set_bucket_access(&req.input.bucket, AccessChange::Encryption(None))
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(dto::DeleteBucketEncryptionOutput::default()))
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
pub(crate) fn body_reader<S, E>(body: S) -> impl tokio::io::AsyncRead + Unpin + Send + use<S, E>
where
    S: futures::Stream<Item = Result<bytes::Bytes, E>> + Unpin + Send,
    E: std::fmt::Display,
{
    StreamReader::new(futures::TryStreamExt::map_err(body, |e| {
        std::io::Error::other(e.to_string())
    }))
}

/// System metadata from a request's headers.
fn object_headers(
    content_encoding: Option<String>,
    content_disposition: Option<String>,
    content_language: Option<String>,
    cache_control: Option<String>,
    expires: Option<&Timestamp>,
) -> ObjectHeaders {
    ObjectHeaders {
        content_encoding: content_encoding.and_then(stored_content_encoding),
        content_disposition,
        content_language,
        cache_control,
        expires: expires.map(unix_seconds),
        ..Default::default()
    }
}

/// The Content-Encoding an object keeps: the request's without
/// `aws-chunked`, which names how the request's body was framed, not the
/// object (Authenticating Requests, "Signature Calculations for the
/// Authorization Header: Transferring Payload in Multiple Chunks"); none
/// when nothing else is left.
fn stored_content_encoding(encoding: String) -> Option<String> {
    let chunked = |e: &str| e.trim().eq_ignore_ascii_case("aws-chunked");
    if !encoding.split(',').any(chunked) {
        return Some(encoding);
    }
    let kept: Vec<&str> = encoding
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty() && !chunked(e))
        .collect();
    (!kept.is_empty()).then(|| kept.join(", "))
}

/// The `x-amz-tagging-count` header (GetObject): how many tags an object
/// has, left out when it has none, as S3 does.
const TAG_COUNT_HEADER: &str = "x-amz-tagging-count";

fn tag_count(tags: &TagSet) -> Option<i32> {
    (!tags.is_empty()).then_some(tags.len() as i32)
}

/// Tags as S3 writes them in a `<TagSet>`.
fn tag_set(tags: TagSet) -> dto::TagSet {
    tags.into_iter()
        .map(|(k, v)| dto::Tag {
            key: Some(k),
            value: Some(v),
        })
        .collect()
}

fn expires(h: &ObjectHeaders) -> Option<Timestamp> {
    h.expires
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .map(Timestamp::from)
}

fn checksum_mode(mode: &Option<dto::ChecksumMode>) -> bool {
    mode.as_ref()
        .is_some_and(|m| m.as_str().eq_ignore_ascii_case(dto::ChecksumMode::ENABLED))
}

/// `partNumber=N` on GET and HEAD: the bytes of part N of a multipart
/// object, and how many parts it has. An object written in one piece has
/// one part, itself.
fn part_range(info: &ObjectInfo, n: u32) -> S3Result<(Option<std::ops::Range<u64>>, Option<i32>)> {
    if info.parts.is_empty() {
        return match n {
            1 => Ok((None, None)),
            _ => Err(invalid_part_number()),
        };
    }
    let index = usize::try_from(n)
        .ok()
        .and_then(|n| n.checked_sub(1))
        .filter(|&i| i < info.parts.len())
        .ok_or_else(invalid_part_number)?;
    let start: u64 = info.parts[..index].iter().sum();
    let range = start..start + info.parts[index];
    Ok((Some(range), Some(info.parts.len() as i32)))
}

fn invalid_part_number() -> S3Error {
    let mut e = S3Error::with_message(
        S3ErrorCode::Custom("InvalidPartNumber".into()),
        "the requested part number is not satisfiable",
    );
    e.set_status_code(axum::http::StatusCode::RANGE_NOT_SATISFIABLE);
    e
}

/// `x-amz-copy-source-range: bytes=FIRST-LAST` (both inclusive, inside the
/// source).
fn copy_range(r: &str, size: u64) -> S3Result<std::ops::Range<u64>> {
    let parsed = r
        .trim()
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
    match parsed {
        Some((first, last)) if first <= last && last < size => Ok(first..last + 1),
        Some(_) => Err(s3_error!(
            InvalidRange,
            "x-amz-copy-source-range is outside the source object"
        )),
        None => Err(s3_error!(
            InvalidArgument,
            "x-amz-copy-source-range must be bytes=FIRST-LAST"
        )),
    }
}

type SourceRead = tokio::task::JoinHandle<Result<(), SdkError>>;

/// A copy's source as a body for a write: the stored bytes of a plain
/// object, or an encrypted one's plaintext, of a checked length.
type SourceBody = ExactLength<Box<dyn tokio::io::AsyncRead + Unpin + Send>>;

/// How the read behind a copy ended.
async fn source_read(reader: SourceRead) -> S3Result<()> {
    match reader.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(to_s3(e)),
        Err(e) => Err(s3_error!(InternalError, "copy task: {e}")),
    }
}

impl Gateway {
    /// The object a GET or HEAD reads, once the caller may read the bucket
    /// and the HTTP preconditions ([If-Match, If-None-Match],
    /// [If-Modified-Since, If-Unmodified-Since]) allow it.
    async fn object_for_read<T>(
        &self,
        req: &S3Request<T>,
        bucket: &str,
        key: &str,
        version: Option<&str>,
        [if_match, if_none_match]: [Option<&dto::ETagCondition>; 2],
        [if_modified_since, if_unmodified_since]: [Option<&Timestamp>; 2],
    ) -> S3Result<ObjectInfo> {
        self.allow(req, bucket, Permission::Read).await?;
        let version = rules::version_id(version)?;
        let info = self.version_for_read(bucket, key, version).await?;
        preconditions(
            &info,
            if_match,
            if_none_match,
            if_modified_since,
            if_unmodified_since,
        )?;
        Ok(info)
    }

    /// The object a read names (S3 API reference, GetObject): the current
    /// object, or version `version` (an id or `null`). A key whose newest
    /// version is a delete marker is `NoSuchKey` with
    /// `x-amz-delete-marker: true`; a version that is a delete marker is
    /// `MethodNotAllowed` (405) with the same header; an unknown version
    /// is `NoSuchVersion`.
    pub(crate) async fn version_for_read(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> S3Result<ObjectInfo> {
        let Some(version) = version else {
            let head = match crate::prefetch::take_object(bucket, key) {
                Some(read) => read,
                None => self.client.head(bucket, key).await,
            };
            return match head {
                Ok(info) => Ok(info),
                Err(e) if e.code() == Some(ErrorCode::NoSuchKey) => {
                    // Only a miss costs the second look: is it a marker?
                    let err = to_s3(e);
                    match self.client.version(bucket, key, None).await {
                        Ok(ObjectVersion::DeleteMarker(m)) => {
                            Err(with_marker_headers(err, &m.version_id, None))
                        }
                        _ => Err(err),
                    }
                }
                Err(e) => Err(to_s3(e)),
            };
        };
        match self
            .client
            .version(bucket, key, Some(version))
            .await
            .map_err(to_s3)?
        {
            ObjectVersion::Object(o) => Ok(o),
            ObjectVersion::DeleteMarker(m) => Err(with_marker_headers(
                s3_error!(
                    MethodNotAllowed,
                    "The specified method is not allowed against a delete marker"
                ),
                &m.version_id,
                Some(m.mtime_ms),
            )),
        }
    }

    /// Replaces the tags of the current object or of version `version`.
    async fn set_tags(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
        tags: TagSet,
    ) -> S3Result<ObjectInfo> {
        match version {
            Some(v) => self.client.set_version_tags(bucket, key, v, tags).await,
            None => self.client.set_object_tags(bucket, key, tags).await,
        }
        .map_err(to_s3)
    }

    /// The source of a copy, which the request's key must be allowed to
    /// read, as the destination bucket it must be allowed to write.
    async fn copy_source<T>(
        &self,
        req: &S3Request<T>,
        source: &dto::CopySource,
        dest_bucket: &str,
    ) -> S3Result<ObjectInfo> {
        let dto::CopySource::Bucket {
            bucket,
            key,
            version_id,
        } = source
        else {
            return Err(s3_error!(NotImplemented, "copies from access points"));
        };
        let action = if version_id.is_some() {
            "s3:GetObjectVersion"
        } else {
            "s3:GetObject"
        };
        let access = self.access_of(req, bucket).await?;
        let named = version_id.as_deref();
        self.check_object_access(access, (bucket, Some(key), named), Permission::Read, action)
            .await?;
        self.allow(req, dest_bucket, Permission::Write).await?;
        let version = rules::version_id(version_id.as_deref())?;
        match self.version_for_read(bucket, key, version).await {
            // S3: "The source of a copy request may not specifically refer
            // to a delete marker by version id" (400, not GET's 405).
            Err(e) if *e.code() == S3ErrorCode::MethodNotAllowed => Err(s3_error!(
                InvalidRequest,
                "The source of a copy request may not specifically refer to a delete marker by version id."
            )),
            other => other,
        }
    }

    /// `range` of `src` as a body for a write: streamed through a pipe, as
    /// a GET into a PUT, so memory stays bounded. A source read that fails
    /// ends the pipe early, and the length check turns that into an error:
    /// a copy is never committed short. With `key` (an encrypted
    /// source's object key) the body is the source's plaintext.
    fn read_source(
        &self,
        src: &ObjectInfo,
        range: std::ops::Range<u64>,
        key: Option<crate::package::Key>,
    ) -> (SourceBody, SourceRead) {
        if let Some(key) = key {
            let left = range.end - range.start;
            let (body, reader) = sse::plain_reader(self.client.clone(), src.clone(), key, range);
            return (
                ExactLength {
                    inner: Box::new(body),
                    left,
                },
                reader,
            );
        }
        let (mut tx, rx) = tokio::io::duplex(COPY_PIPE);
        let client = self.client.clone();
        let source = src.clone();
        let left = range.end - range.start;
        let span = tracing::Span::current();
        let reader = tokio::spawn(tessera_sdk::carry_request_id(
            async move { client.read_object(&source, Some(range), &mut tx).await }.instrument(span),
        ));
        (
            ExactLength {
                inner: Box::new(rx),
                left,
            },
            reader,
        )
    }

    /// Who owns a bucket's objects as listings show it (`fetch-owner`):
    /// objects record no writer, so every object shows the bucket's owner
    /// key (ID: the access key id; DisplayName: the key's name), or none
    /// when no key owns the bucket.
    async fn bucket_owner(&self, bucket: &str) -> S3Result<Option<dto::Owner>> {
        let grants = self
            .client
            .grants(Some(bucket), None)
            .await
            .map_err(to_s3)?;
        let Some(g) = grants.iter().find(|g| g.permission == Permission::Owner) else {
            return Ok(None);
        };
        Ok(Some(self.canonical_user(&g.key).await))
    }

    /// A key as S3 shows an owner or a grantee: ID its access key id,
    /// DisplayName its name (ARCHITECTURE.md, "Access evaluation").
    async fn canonical_user(&self, id: &str) -> dto::Owner {
        let name = match self.client.access_key(id).await {
            Ok(k) => k.name,
            // The key is gone (or meta did not answer): its id still says
            // who.
            Err(_) => id.to_string(),
        };
        dto::Owner {
            id: Some(id.to_string()),
            display_name: Some(name),
        }
    }

    /// The ACL a request asks for on `bucket` or one of its objects,
    /// checked (`acl::requested`; a named key that does not exist is
    /// `InvalidArgument`; a public ACL while the bucket's
    /// PublicAccessBlock has `BlockPublicAcls` is `AccessDenied`), in its
    /// stored form: `Ok(None)` when it asks for none or for `private`.
    async fn requested_acl(&self, bucket: &str, request: AclRequest<'_>) -> S3Result<Option<Acl>> {
        Ok(self
            .requested_acl_of(bucket, request)
            .await?
            .and_then(acl::stored))
    }

    /// The ACL a Put*Acl request asks for, checked as by `requested_acl`
    /// (`Acl::default()` for `private`); none is `MissingSecurityHeader`.
    async fn required_acl(&self, bucket: &str, request: AclRequest<'_>) -> S3Result<Acl> {
        self.requested_acl_of(bucket, request)
            .await?
            .ok_or_else(|| {
                s3_error!(
                    MissingSecurityHeader,
                    "an x-amz-acl or x-amz-grant header, or a body, is needed"
                )
            })
    }

    /// `requested_acl`, but `Ok(Some(Acl::default()))` for `private`.
    async fn requested_acl_of(
        &self,
        bucket: &str,
        request: AclRequest<'_>,
    ) -> S3Result<Option<Acl>> {
        if request.is_empty() {
            return Ok(None);
        }
        let owner = self.bucket_owner(bucket).await?;
        let owner_id = owner.as_ref().and_then(|o| o.id.as_deref());
        let Some(acl) = acl::requested(&request, owner_id)? else {
            return Ok(None);
        };
        self.check_named_keys(&acl).await?;
        if acl::is_public(&acl)
            && self
                .bucket_access(bucket)
                .await?
                .public_access_block
                .is_some_and(|b| b.block_public_acls)
        {
            return Err(s3_error!(
                AccessDenied,
                "Access Denied: the bucket's PublicAccessBlock blocks public ACLs"
            ));
        }
        Ok(Some(acl))
    }

    /// Refuses an ACL naming a key that does not exist: `InvalidArgument`
    /// (S3's answer for a grantee ID that is no account).
    async fn check_named_keys(&self, acl: &Acl) -> S3Result<()> {
        for id in acl::named_keys(acl) {
            match self.client.access_key(id).await {
                Ok(_) => {}
                Err(e) if e.code() == Some(ErrorCode::NotFound) => {
                    return Err(s3_error!(InvalidArgument, "Invalid id: {id}"));
                }
                Err(e) => return Err(to_s3(e)),
            }
        }
        Ok(())
    }

    /// The `Owner` and `Grant`s GetBucketAcl and GetObjectAcl answer for
    /// `acl` on `bucket` or one of its objects (`acl::answer`), keys
    /// named by their names.
    async fn acl_answer(
        &self,
        bucket: &str,
        acl: Option<&Acl>,
    ) -> S3Result<(Option<dto::Owner>, Vec<dto::Grant>)> {
        let owner = self.bucket_owner(bucket).await?;
        let mut names = BTreeMap::new();
        if let Some(o) = &owner
            && let (Some(id), Some(name)) = (&o.id, &o.display_name)
        {
            names.insert(id.clone(), name.clone());
        }
        for id in acl.map(acl::named_keys).unwrap_or_default() {
            if !names.contains_key(id)
                && let Some(name) = self.canonical_user(id).await.display_name
            {
                names.insert(id.to_string(), name);
            }
        }
        let grants = acl::answer(acl, owner.as_ref(), |id| names.get(id).cloned());
        Ok((owner, grants))
    }

    /// A bucket's access settings. Errors: `NoSuchBucket`.
    async fn bucket_access(&self, bucket: &str) -> S3Result<BucketAccess> {
        self.client.bucket_access(bucket).await.map_err(to_s3)
    }

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
                    storage_class,
                } => contents.push(dto::Object {
                    key: Some(encode_if(url, key)),
                    size: Some(size as i64),
                    e_tag: Some(dto::ETag::Strong(etag)),
                    last_modified: Some(timestamp(mtime_ms)),
                    storage_class: Some(match storage_class {
                        Some(c) => dto::ObjectStorageClass::from(c),
                        None => {
                            dto::ObjectStorageClass::from_static(dto::ObjectStorageClass::STANDARD)
                        }
                    }),
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
        match crate::prefetch::key_with_access(&self.client, access_key).await {
            Ok(k) => Ok(SecretKey::from(k.secret)),
            Err(e) if e.code() == Some(ErrorCode::NotFound) => Err(s3_error!(
                InvalidAccessKeyId,
                "the access key does not exist"
            )),
            Err(e) => Err(to_s3(e)),
        }
    }
}

/// Virtual-hosted-style addressing: `BUCKET.DOMAIN[:port]` names a bucket
/// for each configured domain; any other host (an IP address, `localhost`,
/// the domain itself) is path style. s3s's own hosts treat every unknown
/// host name as a bucket, which would break path-style requests to an IP.
struct GatewayHost {
    domains: Vec<String>,
}

/// The host name of a Host header (without its port) and the bucket it
/// names as `BUCKET.DOMAIN` for one of `domains`, with that domain.
fn virtual_bucket<'a>(
    host: &'a str,
    domains: &'a [String],
) -> (&'a str, Option<(&'a str, &'a str)>) {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    for domain in domains {
        if let Some(bucket) = name
            .strip_suffix(domain.as_str())
            .and_then(|b| b.strip_suffix('.'))
            .filter(|b| !b.is_empty())
        {
            return (name, Some((domain.as_str(), bucket)));
        }
    }
    (name, None)
}

/// The bucket a request names: by its Host (virtual-hosted style, as
/// [`GatewayHost`] reads it) or else by its path's first segment; `None`
/// for the service itself (`/`). For what runs before s3s (CORS).
pub(crate) fn bucket_of_request(
    headers: &axum::http::HeaderMap,
    uri: &axum::http::Uri,
    domains: &[String],
) -> Option<String> {
    bucket_and_key_of_request(headers, uri, domains).map(|(bucket, _)| bucket)
}

/// [`bucket_of_request`], with the rest of the path after the bucket (the
/// object key, still percent-encoded; empty when the request names none).
pub(crate) fn bucket_and_key_of_request<'u>(
    headers: &axum::http::HeaderMap,
    uri: &'u axum::http::Uri,
    domains: &[String],
) -> Option<(String, &'u str)> {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let path = uri.path().trim_start_matches('/');
    if let (_, Some((_, bucket))) = virtual_bucket(host, domains) {
        return Some((bucket.to_string(), path));
    }
    let (first, key) = path.split_once('/').unwrap_or((path, ""));
    (!first.is_empty()).then(|| (first.to_string(), key))
}

impl s3s::host::S3Host for GatewayHost {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<s3s::host::VirtualHost<'a>> {
        Ok(match virtual_bucket(host, &self.domains) {
            (_, Some((domain, bucket))) => s3s::host::VirtualHost::new(domain).with_bucket(bucket),
            (name, None) => s3s::host::VirtualHost::new(name),
        })
    }
}

/// The gateway's HTTP routes: S3 on every path, and `/_tessera/health` and
/// `/_tessera/metrics` beside it (no bucket name can contain `_`, so no
/// bucket is hidden by them).
pub fn router(client: Client, config: GatewayConfig) -> axum::Router {
    use axum::routing::get;
    let cors_domains = config.domains.clone();
    let prefetch_domains = config.domains.clone();
    let service = {
        let domains = config.domains.clone();
        let mut b = s3s::service::S3ServiceBuilder::new(Gateway::new(client.clone(), config));
        b.set_auth(MetaKeys {
            client: client.clone(),
        });
        b.set_access(crate::access::GatewayAccess);
        // s3s holds a POST (browser form) upload's file in memory to check
        // the policy's length range: keep that small. PUT and multipart
        // stream and have no such limit.
        let mut s3_config = s3s::config::S3Config::default();
        s3_config.post_object_max_file_size = MAX_POST_OBJECT;
        b.set_config(std::sync::Arc::new(s3s::config::StaticConfigProvider::new(
            std::sync::Arc::new(s3_config),
        )));
        if !domains.is_empty() {
            b.set_host(GatewayHost { domains });
        }
        b.build()
    };
    let service = axum::error_handling::HandleError::new(service, |e: s3s::HttpError| async move {
        (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("{e:?}"),
        )
    });
    let metrics = std::sync::Arc::new(crate::edge::GatewayMetrics::default());
    let m = metrics.clone();
    let meta = client.meta_client().clone();
    axum::Router::new()
        .route("/_tessera/health", get(|| async { "ok\n" }))
        .route(
            "/_tessera/metrics",
            get(move || {
                let (m, meta) = (m.clone(), meta.clone());
                async move { m.render(meta.round_trips()) }
            }),
        )
        .fallback_service(service)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(prefetch_domains),
            crate::prefetch::scope,
        ))
        .layer(axum::middleware::from_fn_with_state(
            crate::cors::CorsState {
                client: client.clone(),
                domains: cors_domains,
            },
            crate::cors::cors,
        ))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            crate::edge::edge,
        ))
}
