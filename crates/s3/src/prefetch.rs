//! A request's access facts read together with its access key: the
//! caller's grants on the bucket the request names and the bucket's
//! settings (and, for a GET or HEAD of the current object, that object)
//! are asked from meta in the same batch as the key's secret (which SigV4
//! needs first), instead of one round trip after it: a GET of an inline
//! object is then one meta round trip. The answers are read after the
//! request arrived, as they were when asked later, and each is used at
//! most once, by that request's own access decision (`Gateway::access_of`)
//! and read (`Gateway::version_for_read`), and only if the bucket, key and
//! access key s3s parsed are the ones read; nothing is kept between
//! requests. The object is read before access is decided but returned
//! only after it allowed the read, as before. For a GET the object comes
//! with the records of its first chunks (`Client::head_with_chunks`, one
//! snapshot), which the read then uses instead of asking meta for them:
//! a GET of an object of up to 16 chunks is one meta round trip too.
//!
//! s3s asks for the secret (`S3Auth::get_secret_key`) with nothing but the
//! key id; the bucket reaches it through a task-local value that
//! [`scope`] sets around the rest of the request (s3s runs the whole
//! request on the task that calls it).

use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use tessera_proto::{AccessKey, BucketAccess, ChunkRecord, Grant, ObjectInfo};
use tessera_sdk::{Client, RECORDS_WITH_OBJECT, SdkError};

tokio::task_local! {
    static REQUEST: Arc<Prefetch>;
}

/// What one request's key lookup read besides the key.
struct Prefetch {
    /// The bucket the request names (path or virtual host), if any.
    bucket: Option<String>,
    /// The object key a GET or HEAD of the current object names.
    object: Option<String>,
    /// Whether the request reads the object's content (a GET), so that
    /// its first chunk records are worth reading with it.
    with_chunks: bool,
    read: Mutex<Option<Read>>,
    /// The object as read for (bucket, key).
    head: Mutex<Option<ObjectRead>>,
    /// The chunk records read with the object, once `take_object` took
    /// it: (bucket, key, records).
    records: Mutex<Option<(String, String, Vec<ChunkRecord>)>>,
}

/// (bucket, key, the object and its first chunk records as meta answered
/// for them; no records for a HEAD).
type ObjectRead = (
    String,
    String,
    Result<(ObjectInfo, Vec<ChunkRecord>), SdkError>,
);

/// The facts read for `access_key` on `bucket`.
struct Read {
    access_key: String,
    bucket: String,
    grants: Result<Vec<Grant>, SdkError>,
    settings: Result<BucketAccess, SdkError>,
}

/// The facts [`key_with_access`] read for this request, `access_key` and
/// `bucket`: the caller's grants and the bucket's settings (each as meta
/// answered, an error included). `None` when nothing was read for them
/// (another bucket, an anonymous request, or taken already).
pub(crate) type Facts = (Result<Vec<Grant>, SdkError>, Result<BucketAccess, SdkError>);

/// Takes the facts read for `access_key` on `bucket` during this request's
/// key lookup, if there are any.
pub(crate) fn take(bucket: &str, access_key: &str) -> Option<Facts> {
    let prefetch = REQUEST.try_with(Arc::clone).ok()?;
    take_if(&prefetch.read, |r| {
        r.bucket == bucket && r.access_key == access_key
    })
    .map(|r| (r.grants, r.settings))
}

/// What `slot` holds if `wanted` says it is the one asked for (it is then
/// taken: each answer serves once); else `None`, and the slot keeps it.
fn take_if<T>(slot: &Mutex<Option<T>>, wanted: impl FnOnce(&T) -> bool) -> Option<T> {
    // A poisoned lock only means another request panicked meanwhile:
    // the value is still whole.
    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
    if slot.as_ref().is_some_and(wanted) {
        slot.take()
    } else {
        None
    }
}

/// The secret of `access_key`; when the request names a bucket, its grants
/// there and the bucket's settings are read in the same batch and kept for
/// [`take`]. Errors: meta's answer for the key (`NotFound` for an unknown
/// one); the other two answers' errors are kept, not returned.
pub(crate) async fn key_with_access(
    client: &Client,
    access_key: &str,
) -> Result<AccessKey, SdkError> {
    let prefetch = REQUEST.try_with(Arc::clone).ok();
    let Some((prefetch, bucket)) = prefetch.and_then(|p| p.bucket.clone().map(|b| (p, b))) else {
        return client.access_key(access_key).await;
    };
    let object = prefetch.object.clone();
    let head = async {
        match &object {
            Some(key) if prefetch.with_chunks => Some(
                client
                    .head_with_chunks(&bucket, key, RECORDS_WITH_OBJECT)
                    .await,
            ),
            Some(key) => Some(client.head(&bucket, key).await.map(|o| (o, Vec::new()))),
            None => None,
        }
    };
    // Polled together, the reads join one batch (`MetaClient::call`).
    let (key, grants, settings, head) = tokio::join!(
        client.access_key(access_key),
        client.grants(Some(&bucket), Some(access_key)),
        client.bucket_access(&bucket),
        head,
    );
    if let (Ok(_), Some(object), Some(head)) = (&key, object, head) {
        *prefetch.head.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((bucket.clone(), object, head));
    }
    if key.is_ok() {
        *prefetch.read.lock().unwrap_or_else(|e| e.into_inner()) = Some(Read {
            access_key: access_key.to_string(),
            bucket,
            grants,
            settings,
        });
    }
    key
}

/// The middleware: runs the rest of the request with the bucket it names
/// known to [`key_with_access`].
pub(crate) async fn scope(
    State(domains): State<Arc<Vec<String>>>,
    req: Request,
    next: Next,
) -> Response {
    let named = crate::gateway::bucket_and_key_of_request(req.headers(), req.uri(), &domains);
    let object = named
        .as_ref()
        .and_then(|(_, key)| current_object_read(&req, key));
    let prefetch = Arc::new(Prefetch {
        bucket: named.map(|(bucket, _)| bucket),
        object,
        with_chunks: *req.method() == Method::GET,
        read: Mutex::new(None),
        head: Mutex::new(None),
        records: Mutex::new(None),
    });
    REQUEST.scope(prefetch, next.run(req)).await
}

/// Takes the object read for `bucket`/`key` during this request's key
/// lookup, if there is one: as `Client::head` answered it. The chunk
/// records read with it wait for [`take_chunk_records`].
pub(crate) fn take_object(bucket: &str, key: &str) -> Option<Result<ObjectInfo, SdkError>> {
    let prefetch = REQUEST.try_with(Arc::clone).ok()?;
    let (bucket, key, read) = take_if(&prefetch.head, |(b, k, _)| b == bucket && k == key)?;
    Some(read.map(|(info, records)| {
        if !records.is_empty() {
            *prefetch.records.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((bucket, key, records));
        }
        info
    }))
}

/// Takes the chunk records read with the object `bucket`/`key` that
/// [`take_object`] returned during this request (empty when there are
/// none): `Client::read_object_with_records_to` reads with them.
pub(crate) fn take_chunk_records(bucket: &str, key: &str) -> Vec<ChunkRecord> {
    REQUEST
        .try_with(Arc::clone)
        .ok()
        .and_then(|p| take_if(&p.records, |(b, k, _)| b == bucket && k == key))
        .map(|(_, _, records)| records)
        .unwrap_or_default()
}

/// The key of the current object a GET or HEAD request reads (GetObject,
/// HeadObject: no `versionId` and no subresource such as `?acl` or
/// `?tagging`), decoded from `raw`, the path after the bucket; `None` for
/// any other request. A key decoded differently from s3s's only costs the
/// read: it is used only for the key s3s parsed.
fn current_object_read(req: &Request, raw: &str) -> Option<String> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return None;
    }
    let plain = req.uri().query().is_none_or(|q| {
        form_urlencoded::parse(q.as_bytes()).all(|(k, _)| {
            k == "x-id"
                || k == "partNumber"
                || k.starts_with("response-")
                || k.starts_with("X-Amz-")
        })
    });
    if !plain || raw.is_empty() {
        return None;
    }
    let key = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()?;
    Some(key.into_owned())
}
