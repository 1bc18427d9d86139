//! S3 server-side encryption in the gateway (S3 User Guide, "Protecting
//! data with server-side encryption"): SSE-C (the client's key on every
//! request) and SSE-S3 (object keys wrapped by the cluster's master key),
//! and bucket default encryption. Owns the request headers' rules and
//! their S3 errors, which key opens which object, and the streams that
//! encrypt a body before the SDK erasure-codes it and decrypt a range
//! after the SDK has read it. Must not know chunks, nodes or meta's tables
//! (it goes through the SDK), nor the stored bytes' format (`package.rs`).
//!
//! Keys: each object (or multipart upload) gets a random 256-bit object
//! key, stored in meta only wrapped (`ObjectEncryption::wrapped_key`): by
//! the master key for SSE-S3, by the customer's key for SSE-C (which is
//! never stored: a wrong key fails to unwrap, 403 AccessDenied).

use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use bytes::Bytes;
use md5::{Digest, Md5};
use s3s::dto;
use s3s::{S3Error, S3ErrorCode, S3Result, s3_error};
use tessera_proto::{
    BucketAccess, BucketEncryption, ErrorCode, ObjectData, ObjectEncryption, ObjectInfo,
    RemoteError, SseScheme, sealed_len,
};
use tessera_sdk::{Client, ContentOf, SdkError};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

use crate::package::{self, HEADER, Key, Opener, PACKAGE, Sealer, StreamKey};

/// The only algorithm S3 offers for SSE-S3 and SSE-C.
pub(crate) const AES256: &str = "AES256";
const SSE_HEADER: &str = "x-amz-server-side-encryption";

/// What a wrapped key is bound to, per scheme.
fn context(scheme: SseScheme) -> &'static [u8] {
    match scheme {
        SseScheme::S3 => b"tessera-sse-s3",
        SseScheme::Customer => b"tessera-sse-c",
    }
}

/// Why a master key cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum SseError {
    #[error("master key file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("master key file {0}: expected 64 hex digits (32 bytes)")]
    Malformed(String),
}

/// The cluster's master key for SSE-S3, given to the gateway in a file of
/// 64 hex digits (`tessera s3 --sse-master-key FILE`). Its id (the first 8
/// bytes of SHA-256 of the key, hex) is stored beside each key it wraps,
/// so an object wrapped by another key is told apart from a forged one.
pub struct MasterKey {
    id: String,
    key: Key,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        f.debug_struct("MasterKey").field("id", &self.id).finish()
    }
}

impl MasterKey {
    /// The key of `bytes`.
    pub fn from_bytes(key: [u8; 32]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, &key);
        MasterKey {
            id: hex::encode(&digest.as_ref()[..8]),
            key,
        }
    }

    /// Reads a key file. Errors: `Io`, `Malformed`.
    pub fn load(path: &Path) -> Result<Self, SseError> {
        let text = std::fs::read_to_string(path).map_err(|source| SseError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let key = hex::decode(text.trim())
            .ok()
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
            .ok_or_else(|| SseError::Malformed(path.display().to_string()))?;
        Ok(Self::from_bytes(key))
    }

    /// The key in `path`, made (random, mode 0600) if the file does not
    /// exist: what `tessera dev` does in its data directory. Errors:
    /// `Io`, `Malformed`.
    pub fn load_or_create(path: &Path) -> Result<Self, SseError> {
        if !path.exists() {
            let key: [u8; 32] = rand::random();
            let io = |source| SseError::Io {
                path: path.display().to_string(),
                source,
            };
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(path).map_err(io)?;
            std::io::Write::write_all(&mut f, format!("{}\n", hex::encode(key)).as_bytes())
                .map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        Self::load(path)
    }

    /// The key's id, as stored with what it wraps.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// A customer's key from a request's SSE-C headers (checked against its
/// MD5); kept only for the request.
#[derive(Clone)]
pub(crate) struct CustomerKey {
    key: Key,
    /// The base64 MD5 of the key, as the request sent it (echoed back).
    md5: String,
}

/// Parses the three SSE-C headers (`...-customer-algorithm`, `-key`,
/// `-key-MD5`, or their `x-amz-copy-source-` forms); `None` when none is
/// sent. Errors (400, S3's messages): `InvalidEncryptionAlgorithmError`
/// for an algorithm other than AES256, `InvalidArgument` for a missing
/// header, a key that is not the base64 of 32 bytes, or an MD5 that does
/// not match the key.
pub(crate) fn customer_key(
    algorithm: Option<&str>,
    key: Option<&str>,
    md5: Option<&str>,
) -> S3Result<Option<CustomerKey>> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    if algorithm.is_none() && key.is_none() && md5.is_none() {
        return Ok(None);
    }
    let Some(algorithm) = algorithm else {
        return Err(s3_error!(
            InvalidArgument,
            "Requests specifying Server Side Encryption with Customer provided keys must provide a valid encryption algorithm."
        ));
    };
    if algorithm != AES256 {
        return Err(s3_error!(
            InvalidEncryptionAlgorithmError,
            "The encryption request you specified is not valid. The valid value is AES256."
        ));
    }
    let Some(key) = key else {
        return Err(s3_error!(
            InvalidArgument,
            "Requests specifying Server Side Encryption with Customer provided keys must provide an appropriate secret key."
        ));
    };
    let Some(md5) = md5 else {
        return Err(s3_error!(
            InvalidArgument,
            "Requests specifying Server Side Encryption with Customer provided keys must provide the client calculated MD5 of the secret key."
        ));
    };
    let key: Key = b64
        .decode(key.trim())
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| {
            s3_error!(
                InvalidArgument,
                "The secret key was invalid for the specified algorithm."
            )
        })?;
    let sent = b64.decode(md5.trim()).ok();
    if sent.as_deref() != Some(Md5::digest(key).as_slice()) {
        return Err(s3_error!(
            InvalidArgument,
            "The calculated MD5 hash of the key did not match the hash that was provided."
        ));
    }
    Ok(Some(CustomerKey {
        key,
        md5: md5.trim().to_string(),
    }))
}

/// S3's answer to an `aws:kms` request: Tessera has no KMS, so every KMS
/// key id is unknown (400 `KMS.NotFoundException`, as S3 answers for a key
/// it cannot find).
fn no_kms() -> S3Error {
    let mut e = S3Error::with_message(
        S3ErrorCode::Custom("KMS.NotFoundException".into()),
        "Tessera has no key management service: use SSE-S3 (AES256) or SSE-C",
    );
    e.set_status_code(axum::http::StatusCode::BAD_REQUEST);
    e
}

/// The encryption a write asks for.
pub(crate) enum WriteSse {
    S3,
    Customer(CustomerKey),
}

/// The encryption a new object (PutObject, CopyObject's destination,
/// CreateMultipartUpload) gets: the request's `x-amz-server-side-encryption`
/// or SSE-C key, else the bucket's default (S3 API reference, PutObject;
/// PutBucketEncryption), else none. Errors (400): both kinds at once
/// (`InvalidArgument`), an algorithm other than AES256 (`InvalidArgument`),
/// `aws:kms` (`KMS.NotFoundException`, see [`no_kms`]).
pub(crate) fn for_write(
    sse: Option<&dto::ServerSideEncryption>,
    customer: Option<CustomerKey>,
    default: Option<&BucketEncryption>,
) -> S3Result<Option<WriteSse>> {
    match (sse.map(|s| s.as_str()), customer) {
        (Some(_), Some(_)) => Err(s3_error!(
            InvalidArgument,
            "Server Side Encryption with Customer provided key is incompatible with the encryption method specified"
        )),
        (None, Some(c)) => Ok(Some(WriteSse::Customer(c))),
        (Some(AES256), None) => Ok(Some(WriteSse::S3)),
        (Some("aws:kms" | "aws:kms:dsse"), None) => Err(no_kms()),
        (Some(_), None) => Err(s3_error!(
            InvalidArgument,
            "The encryption method specified is not supported"
        )),
        (None, None) => match default.map(|d| d.algorithm.as_str()) {
            None => Ok(None),
            Some(AES256) => Ok(Some(WriteSse::S3)),
            Some(_) => Err(no_kms()),
        },
    }
}

/// Refuses `x-amz-server-side-encryption` on a request that reads (GET,
/// HEAD): S3 answers 400 `InvalidArgument`, since an SSE-S3 object needs
/// no header to be read.
pub(crate) fn refuse_sse_header_on_read(headers: &HeaderMap) -> S3Result<()> {
    if headers.contains_key(SSE_HEADER) {
        return Err(s3_error!(
            InvalidArgument,
            "x-amz-server-side-encryption header is not supported for this operation."
        ));
    }
    Ok(())
}

/// The bucket default encryption rule of a PutBucketEncryption body: one
/// rule with `ApplyServerSideEncryptionByDefault`. `aws:kms` is kept as
/// given (S3 does not look the KMS key up here) and every write it would
/// apply to is refused as for a KMS key S3 cannot find ([`for_write`]).
/// Errors (400): `MalformedXML` for no rule, several rules or a rule
/// without the default; `InvalidArgument` for an algorithm other than
/// AES256, `aws:kms` or `aws:kms:dsse`, or a `KMSMasterKeyID` with
/// AES256.
pub(crate) fn bucket_rule(
    config: dto::ServerSideEncryptionConfiguration,
) -> S3Result<BucketEncryption> {
    let mut rules = config.rules.into_iter();
    let (Some(rule), None) = (rules.next(), rules.next()) else {
        return Err(s3_error!(
            MalformedXML,
            "a default encryption configuration has exactly one rule"
        ));
    };
    let Some(by_default) = rule.apply_server_side_encryption_by_default else {
        return Err(s3_error!(
            MalformedXML,
            "the rule needs ApplyServerSideEncryptionByDefault"
        ));
    };
    let algorithm = by_default.sse_algorithm.as_str().to_string();
    match algorithm.as_str() {
        AES256 if by_default.kms_master_key_id.is_some() => Err(s3_error!(
            InvalidArgument,
            "a KMSMasterKeyID is allowed only with aws:kms"
        )),
        AES256 | "aws:kms" | "aws:kms:dsse" => Ok(BucketEncryption {
            algorithm,
            kms_key_id: by_default.kms_master_key_id,
            bucket_key_enabled: rule.bucket_key_enabled.unwrap_or(false),
        }),
        _ => Err(s3_error!(
            InvalidArgument,
            "The encryption method specified is not supported"
        )),
    }
}

/// A stored default rule as GetBucketEncryption shows it.
pub(crate) fn bucket_config(rule: BucketEncryption) -> dto::ServerSideEncryptionConfiguration {
    dto::ServerSideEncryptionConfiguration {
        rules: vec![dto::ServerSideEncryptionRule {
            apply_server_side_encryption_by_default: Some(dto::ServerSideEncryptionByDefault {
                kms_master_key_id: rule.kms_key_id,
                sse_algorithm: dto::ServerSideEncryption::from(rule.algorithm),
            }),
            bucket_key_enabled: Some(rule.bucket_key_enabled),
        }],
    }
}

/// The keys a gateway holds: the master key, when the operator gave one.
#[derive(Clone, Debug, Default)]
pub(crate) struct Keys {
    pub(crate) master: Option<Arc<MasterKey>>,
}

/// An object key, open for one request, and how the object is encrypted.
#[derive(Clone)]
pub(crate) struct Opened {
    pub(crate) key: Key,
    pub(crate) scheme: SseScheme,
    /// The SSE-C key's MD5 as the request sent it (echoed in answers).
    pub(crate) customer_md5: Option<String>,
}

impl Keys {
    fn master(&self) -> S3Result<&MasterKey> {
        self.master.as_deref().ok_or_else(|| {
            s3_error!(
                NotImplemented,
                "SSE-S3 is not available: this gateway was started without --sse-master-key"
            )
        })
    }

    /// A fresh object key for a new object or upload, wrapped as `sse`
    /// asks: the record meta keeps, and the key open. Errors:
    /// `NotImplemented` for SSE-S3 without a master key.
    pub(crate) fn create(&self, sse: &WriteSse) -> S3Result<(ObjectEncryption, Opened)> {
        let key: Key = rand::random();
        let (scheme, wrapping, key_id, customer_md5) = match sse {
            WriteSse::S3 => {
                let m = self.master()?;
                (SseScheme::S3, m.key, m.id.clone(), None)
            }
            WriteSse::Customer(c) => (
                SseScheme::Customer,
                c.key,
                String::new(),
                Some(c.md5.clone()),
            ),
        };
        let record = ObjectEncryption {
            scheme,
            key_id,
            wrapped_key: package::wrap(&wrapping, context(scheme), &key),
        };
        Ok((
            record,
            Opened {
                key,
                scheme,
                customer_md5,
            },
        ))
    }

    /// Opens the key of an object (or upload) encrypted as `enc`, with the
    /// request's SSE-C key `customer`. Errors: an SSE-C object without a
    /// key, or a key sent for an object not under SSE-C, 400
    /// `InvalidRequest`; a wrong key 403 `AccessDenied` (S3 User Guide,
    /// "Using server-side encryption with customer-provided keys");
    /// SSE-S3 without the master key that wrapped it 500 `InternalError`.
    pub(crate) fn open(
        &self,
        enc: Option<&ObjectEncryption>,
        customer: Option<&CustomerKey>,
    ) -> S3Result<Option<Opened>> {
        let Some(enc) = enc else {
            return match customer {
                Some(_) => Err(not_applicable()),
                None => Ok(None),
            };
        };
        match (enc.scheme, customer) {
            (SseScheme::Customer, None) => Err(s3_error!(
                InvalidRequest,
                "The object was stored using a form of Server Side Encryption. The correct parameters must be provided to retrieve the object."
            )),
            (SseScheme::Customer, Some(c)) => {
                let key = package::unwrap(&c.key, context(enc.scheme), &enc.wrapped_key).map_err(
                    |_| {
                        s3_error!(
                            AccessDenied,
                            "The provided customer key does not match the object's"
                        )
                    },
                )?;
                Ok(Some(Opened {
                    key,
                    scheme: enc.scheme,
                    customer_md5: Some(c.md5.clone()),
                }))
            }
            (SseScheme::S3, Some(_)) => Err(not_applicable()),
            (SseScheme::S3, None) => {
                let m = self.master.as_deref().filter(|m| m.id == enc.key_id).ok_or_else(|| {
                    s3_error!(
                        InternalError,
                        "the object's key was wrapped by master key {}, which this gateway does not hold",
                        enc.key_id
                    )
                })?;
                let key = package::unwrap(&m.key, context(enc.scheme), &enc.wrapped_key).map_err(
                    |_| {
                        s3_error!(
                            InternalError,
                            "the object's wrapped key does not open with master key {}",
                            enc.key_id
                        )
                    },
                )?;
                Ok(Some(Opened {
                    key,
                    scheme: enc.scheme,
                    customer_md5: None,
                }))
            }
        }
    }
}

fn not_applicable() -> S3Error {
    s3_error!(
        InvalidRequest,
        "The encryption parameters are not applicable to this object."
    )
}

/// The key of a multipart upload for one of its parts, opened with the
/// part's SSE-C key (S3 API reference, UploadPart: the key must be the
/// one the upload was created with). Errors (400 `InvalidRequest`): SSE-C
/// headers missing, sent for an upload not under SSE-C, or another key.
pub(crate) fn open_upload(
    keys: &Keys,
    enc: Option<&ObjectEncryption>,
    customer: Option<&CustomerKey>,
) -> S3Result<Option<Opened>> {
    match keys.open(enc, customer) {
        Err(e) if *e.code() == S3ErrorCode::AccessDenied => Err(s3_error!(
            InvalidRequest,
            "The provided customer key does not match the one the multipart upload was created with"
        )),
        Err(e) if *e.code() == S3ErrorCode::InvalidRequest && customer.is_none() => Err(s3_error!(
            InvalidRequest,
            "The multipart upload was created with SSE-C: each part needs the same key"
        )),
        other => other,
    }
}

/// Sets the encryption fields S3 answers with (`x-amz-server-side-
/// encryption: AES256` for SSE-S3; for SSE-C the algorithm and the key's
/// MD5) on an output type that has them.
macro_rules! set_sse_output {
    ($out:ident, $opened:expr) => {{
        if let Some(o) = $opened {
            match o.scheme {
                tessera_proto::SseScheme::S3 => {
                    $out.server_side_encryption = Some(
                        s3s::dto::ServerSideEncryption::from_static(crate::sse::AES256),
                    );
                }
                tessera_proto::SseScheme::Customer => {
                    $out.sse_customer_algorithm = Some(crate::sse::AES256.to_string());
                    $out.sse_customer_key_md5 = o.customer_md5.clone();
                }
            }
        }
    }};
}
pub(crate) use set_sse_output;

/// `x-amz-server-side-encryption` for an answer about `info` that has no
/// customer key to echo (CompleteMultipartUpload): AES256 for SSE-S3.
pub(crate) fn shown_scheme(info: &ObjectInfo) -> Option<dto::ServerSideEncryption> {
    info.headers
        .encryption
        .as_ref()
        .filter(|e| e.scheme == SseScheme::S3)
        .map(|_| dto::ServerSideEncryption::from_static(AES256))
}

/// The ETag of encrypted content whose MD5 is `md5`: that MD5 for SSE-S3
/// (S3 User Guide, "Checking object integrity": SSE-S3 objects' ETags are
/// the MD5 of their content); for SSE-C a keyed hash of it under the
/// object key (S3: "not an MD5 digest of their object data"), so nobody
/// without the key learns the content's MD5 from a listing.
fn etag_of(opened: &Opened, md5: &[u8; 16]) -> String {
    match opened.scheme {
        SseScheme::S3 => hex::encode(md5),
        SseScheme::Customer => {
            hex::encode(&package::derive(&opened.key, &[b"tessera-sse-etag-v1", md5])[..16])
        }
    }
}

/// What a [`SealReader`] saw of the content.
#[derive(Default)]
struct Seen {
    md5: Md5,
    size: u64,
    done: Option<[u8; 16]>,
}

/// Encrypts a content stream into its stored form as it is read (see
/// `package.rs`), holding at most two packages: the body the SDK stores
/// for an encrypted object or part.
pub(crate) struct SealReader<R> {
    inner: R,
    sealer: Option<Sealer>,
    out: Vec<u8>,
    at: usize,
    scratch: Box<[u8]>,
    seen: Arc<Mutex<Seen>>,
}

/// `body` (the content) sealed under `opened`'s key, and the
/// [`ContentOf`] that tells the SDK the content's size and ETag once it
/// has read the whole body. With `content_md5`, content whose MD5 differs
/// is refused there (`BadDigest`) and nothing is committed.
pub(crate) fn seal<R>(
    body: R,
    opened: &Opened,
    content_md5: Option<[u8; 16]>,
) -> (SealReader<R>, ContentOf) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let reader = SealReader {
        inner: body,
        sealer: Some(Sealer::new(StreamKey::fresh(&opened.key))),
        out: Vec::new(),
        at: 0,
        scratch: vec![0u8; PACKAGE].into_boxed_slice(),
        seen: seen.clone(),
    };
    let opened = opened.clone();
    let content = ContentOf(Arc::new(move || {
        let seen = seen
            .lock()
            .map_err(|_| SdkError::Invalid("a sealing body panicked".into()))?;
        let (Some(md5), size) = (seen.done, seen.size) else {
            return Err(SdkError::Invalid("the body was not read to its end".into()));
        };
        if content_md5.is_some_and(|want| want != md5) {
            return Err(SdkError::Remote(RemoteError::new(
                ErrorCode::BadDigest,
                "the body does not match its Content-MD5",
            )));
        }
        Ok((size, etag_of(&opened, &md5)))
    }));
    (reader, content)
}

impl<R: AsyncRead + Unpin> AsyncRead for SealReader<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let this = &mut *self;
        loop {
            if this.at < this.out.len() {
                let n = (this.out.len() - this.at).min(buf.remaining());
                buf.put_slice(&this.out[this.at..this.at + n]);
                this.at += n;
                return Poll::Ready(Ok(()));
            }
            let Some(sealer) = this.sealer.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            let mut rb = ReadBuf::new(&mut this.scratch);
            match std::pin::Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let got = rb.filled();
            let mut seen = this
                .seen
                .lock()
                .map_err(|_| std::io::Error::other("a sealing body panicked"))?;
            if got.is_empty() {
                seen.done = Some(std::mem::take(&mut seen.md5).finalize().into());
                drop(seen);
                this.out = this.sealer.take().map(Sealer::finish).unwrap_or_default();
            } else {
                seen.md5.update(got);
                seen.size += got.len() as u64;
                drop(seen);
                this.out = sealer.push(got);
            }
            this.at = 0;
        }
    }
}

/// One encrypted stream of an object: where its content and its stored
/// bytes start, and its content length.
struct Stream {
    plain_start: u64,
    plain_len: u64,
    stored_start: u64,
}

/// The streams an encrypted object's data holds: one per part of a
/// multipart object, else one.
fn streams(info: &ObjectInfo) -> Vec<Stream> {
    let lens: Vec<u64> = if info.parts.is_empty() {
        vec![info.size]
    } else {
        info.parts.clone()
    };
    let (mut plain, mut stored) = (0, 0);
    lens.into_iter()
        .map(|len| {
            let s = Stream {
                plain_start: plain,
                plain_len: len,
                stored_start: stored,
            };
            plain += len;
            stored += sealed_len(len);
            s
        })
        .collect()
}

/// Bytes `info`'s data holds (its chunks or inline bytes).
fn stored_size(info: &ObjectInfo) -> u64 {
    match &info.data {
        ObjectData::Inline(b) => b.len() as u64,
        ObjectData::Chunks(refs) => refs.iter().map(|r| r.len).sum(),
    }
}

fn forged(e: package::PackageError) -> SdkError {
    SdkError::Invalid(format!("encrypted object: {e}"))
}

/// Reads stored bytes `range` of `stored` (the object as the SDK sees its
/// data) and hands each piece to `f`.
async fn read_stored(
    client: &Client,
    stored: &ObjectInfo,
    range: Range<u64>,
    mut f: impl FnMut(Bytes) -> Result<(), SdkError>,
) -> Result<(), SdkError> {
    let (tx, mut rx) = mpsc::channel::<Bytes>(2);
    let read = client.read_object_to(stored, Some(range), tx);
    let consume = async {
        let done = async {
            while let Some(piece) = rx.recv().await {
                f(piece)?;
            }
            Ok::<(), SdkError>(())
        }
        .await;
        // A refusal stops the read too (it would wait on a full channel).
        rx.close();
        done
    };
    let (read, consumed) = tokio::join!(read, consume);
    consumed?;
    read
}

/// Streams content bytes `range` of the encrypted object `info` into
/// `out`, reading and opening only the packages the range touches (and
/// each touched stream's header). Every byte sent was authenticated; a
/// package that fails ends the read with an error. Errors: the SDK's, a
/// forged or short stream (`SdkError::Invalid`), `ReaderGone` when `out`
/// is dropped.
pub(crate) async fn read_plain(
    client: Client,
    info: ObjectInfo,
    key: Key,
    range: Range<u64>,
    out: mpsc::Sender<Bytes>,
) -> Result<(), SdkError> {
    // The SDK reads the stored bytes: the object as they make it.
    let mut stored = info.clone();
    stored.size = stored_size(&info);
    stored.parts.clear();
    for s in streams(&info) {
        let (start, end) = (
            range.start.max(s.plain_start),
            range.end.min(s.plain_start + s.plain_len),
        );
        if start >= end {
            continue;
        }
        let want = start - s.plain_start..end - s.plain_start;
        let first = want.start / PACKAGE as u64;
        let last = want.end.div_ceil(PACKAGE as u64);
        let span = package::package_span(s.plain_len, first, last);
        // A read from the stream's start brings the header with it;
        // otherwise the header is read first, on its own.
        let (header, read_from) = if first == 0 {
            (None, 0)
        } else {
            let mut h = Vec::with_capacity(HEADER);
            read_stored(
                &client,
                &stored,
                s.stored_start..s.stored_start + HEADER as u64,
                |p| {
                    h.extend_from_slice(&p);
                    Ok(())
                },
            )
            .await?;
            (Some(h), span.start)
        };
        let (tx, mut rx) = mpsc::channel::<Bytes>(2);
        let reader = client.read_object_to(
            &stored,
            Some(s.stored_start + read_from..s.stored_start + span.end),
            tx,
        );
        let open = async {
            let mut opening = Opening {
                key: &key,
                plain_len: s.plain_len,
                packages: first..last,
                want: want.clone(),
                head: header.unwrap_or_default(),
                opener: None,
            };
            let done = opening.run(&mut rx, &out).await;
            // A refusal (or a consumer gone) stops the read, which would
            // otherwise wait on a full channel.
            rx.close();
            done
        };
        let (read, opened) = tokio::join!(reader, open);
        // A consumer that went away ends the read first; say so.
        opened?;
        read?;
    }
    Ok(())
}

/// Opening packages `packages` of one stream, wanting its content bytes
/// `want`.
struct Opening<'k> {
    key: &'k Key,
    plain_len: u64,
    packages: Range<u64>,
    want: Range<u64>,
    /// The stream's header, as far as it has come.
    head: Vec<u8>,
    opener: Option<Opener>,
}

impl Opening<'_> {
    /// Takes stored pieces from `rx` (the header first unless `head` has
    /// it) and sends the wanted content to `out`. Errors: a forged or
    /// short stream, `ReaderGone`.
    async fn run(
        &mut self,
        rx: &mut mpsc::Receiver<Bytes>,
        out: &mpsc::Sender<Bytes>,
    ) -> Result<(), SdkError> {
        let mut ready: Vec<Bytes> = Vec::new();
        loop {
            if self.opener.is_none() && self.head.len() == HEADER {
                self.opener = Some(Opener::new(
                    StreamKey::of_header(self.key, &self.head).map_err(forged)?,
                    self.plain_len,
                    self.packages.start,
                    self.packages.end,
                ));
            }
            let Some(mut piece) = rx.recv().await else {
                break;
            };
            if self.opener.is_none() {
                let take = (HEADER - self.head.len()).min(piece.len());
                self.head.extend_from_slice(&piece[..take]);
                piece = piece.slice(take..);
                if self.head.len() < HEADER {
                    continue;
                }
                self.opener = Some(Opener::new(
                    StreamKey::of_header(self.key, &self.head).map_err(forged)?,
                    self.plain_len,
                    self.packages.start,
                    self.packages.end,
                ));
            }
            let want = &self.want;
            if let Some(o) = self.opener.as_mut() {
                o.push(&piece, &mut |index, content| {
                    // The part of this package's content the range wants.
                    let at = index * PACKAGE as u64;
                    let from = want.start.saturating_sub(at) as usize;
                    let to = want.end.saturating_sub(at).min(content.len() as u64) as usize;
                    if from < to {
                        ready.push(Bytes::copy_from_slice(&content[from..to]));
                    }
                })
                .map_err(forged)?;
            }
            for p in ready.drain(..) {
                out.send(p).await.map_err(|_| SdkError::ReaderGone)?;
            }
        }
        match self.opener.take() {
            Some(o) => o.finish().map_err(forged),
            None => Err(forged(package::PackageError::BadHeader)),
        }
    }
}

/// `range` of an encrypted object's content as a reader (for a copy's
/// source), and the task reading it; the reader ends early if the read
/// fails, which the task's result says.
pub(crate) fn plain_reader(
    client: Client,
    info: ObjectInfo,
    key: Key,
    range: Range<u64>,
) -> (
    impl AsyncRead + Unpin + Send + use<>,
    tokio::task::JoinHandle<Result<(), SdkError>>,
) {
    let (tx, rx) = mpsc::channel::<Bytes>(2);
    let span = tracing::Span::current();
    let task = tokio::spawn(tessera_sdk::carry_request_id(
        tracing::Instrument::instrument(read_plain(client, info, key, range, tx), span),
    ));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|p| (Ok::<_, std::io::Error>(p), rx))
    });
    (tokio_util::io::StreamReader::new(Box::pin(stream)), task)
}

/// The SSE-C key of a request's `sse_customer_*` fields (PutObject,
/// GetObject, UploadPart...: same names on distinct input types).
macro_rules! customer_of {
    ($input:expr) => {
        crate::sse::customer_key(
            $input.sse_customer_algorithm.as_deref(),
            $input.sse_customer_key.as_deref(),
            $input.sse_customer_key_md5.as_deref(),
        )
    };
}
pub(crate) use customer_of;

/// The SSE-C key of a copy's source (`x-amz-copy-source-server-side-
/// encryption-customer-*`).
macro_rules! copy_source_customer_of {
    ($input:expr) => {
        crate::sse::customer_key(
            $input.copy_source_sse_customer_algorithm.as_deref(),
            $input.copy_source_sse_customer_key.as_deref(),
            $input.copy_source_sse_customer_key_md5.as_deref(),
        )
    };
}
pub(crate) use copy_source_customer_of;

/// The key a new object (or upload) in `bucket` is written under, from
/// the request's own encryption headers or else the bucket's default
/// (taken from `settings` when the caller read them already, else read
/// from meta only then): the record meta keeps and the key open;
/// `None` for a plain object. Errors: as [`for_write`] and
/// [`Keys::create`], and meta's (`NoSuchBucket`).
pub(crate) async fn new_object_key(
    client: &Client,
    keys: &Keys,
    bucket: &str,
    sse: Option<&dto::ServerSideEncryption>,
    customer: Option<CustomerKey>,
    settings: Option<&BucketAccess>,
) -> S3Result<Option<(ObjectEncryption, Opened)>> {
    let default = if sse.is_none() && customer.is_none() {
        match settings {
            Some(s) => s.encryption.clone(),
            None => {
                client
                    .bucket_access(bucket)
                    .await
                    .map_err(crate::gateway::to_s3)?
                    .encryption
            }
        }
    } else {
        None
    };
    match for_write(sse, customer, default.as_ref())? {
        Some(w) => keys.create(&w).map(Some),
        None => Ok(None),
    }
}

/// The body the SDK stores for content `body`: sealed under `sealing`'s
/// key when there is one, and then `opts` says so (the record, the
/// content's size and ETag asked at the end, its Content-MD5 checked
/// there rather than against the stored bytes).
pub(crate) fn body_for_write<R: AsyncRead + Unpin + Send + 'static>(
    body: R,
    sealing: Option<&(ObjectEncryption, Opened)>,
    opts: &mut tessera_sdk::PutOptions,
) -> Box<dyn AsyncRead + Unpin + Send> {
    match sealing {
        None => Box::new(body),
        Some((record, opened)) => {
            let (sealed, content) = seal(body, opened, opts.content_md5.take());
            opts.headers.encryption = Some(record.clone());
            opts.content = Some(content);
            Box::new(sealed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "pO3upElrwuEXSoFwCfnZPdSsmt/xWeFa0N9KgDijwVs=";
    const MD5_A: &str = "DWygnHRtgiJ77HCm+1rvHw==";

    fn code(r: S3Result<Option<CustomerKey>>) -> String {
        match r {
            Err(e) => e.code().as_str().to_string(),
            Ok(_) => "ok".into(),
        }
    }

    #[test]
    fn customer_key_headers_are_checked_as_s3_does() {
        assert_eq!(code(customer_key(None, None, None)), "ok");
        assert_eq!(
            code(customer_key(Some(AES256), Some(KEY_A), Some(MD5_A))),
            "ok"
        );
        assert_eq!(
            code(customer_key(Some("AES128"), Some(KEY_A), Some(MD5_A))),
            "InvalidEncryptionAlgorithmError"
        );
        assert_eq!(
            code(customer_key(None, Some(KEY_A), Some(MD5_A))),
            "InvalidArgument"
        );
        assert_eq!(
            code(customer_key(Some(AES256), None, Some(MD5_A))),
            "InvalidArgument"
        );
        assert_eq!(
            code(customer_key(Some(AES256), Some(KEY_A), None)),
            "InvalidArgument"
        );
        assert_eq!(
            code(customer_key(
                Some(AES256),
                Some(KEY_A),
                Some("AAAAAAAAAAAAAAAAAAAAAA==")
            )),
            "InvalidArgument"
        );
        assert_eq!(
            code(customer_key(Some(AES256), Some("c2hvcnQ="), Some(MD5_A))),
            "InvalidArgument"
        );
    }

    #[test]
    fn keys_open_only_as_they_were_wrapped() {
        let keys = Keys {
            master: Some(Arc::new(MasterKey::from_bytes([7; 32]))),
        };
        let c = customer_key(Some(AES256), Some(KEY_A), Some(MD5_A))
            .unwrap()
            .unwrap();
        let (record, opened) = keys.create(&WriteSse::Customer(c.clone())).unwrap();
        assert_eq!(
            keys.open(Some(&record), Some(&c)).unwrap().unwrap().key,
            opened.key
        );
        let err = |r: S3Result<Option<Opened>>| r.err().map(|e| e.code().as_str().to_string());
        assert_eq!(
            err(keys.open(Some(&record), None)).as_deref(),
            Some("InvalidRequest")
        );
        let other = CustomerKey {
            key: [1; 32],
            md5: String::new(),
        };
        assert_eq!(
            err(keys.open(Some(&record), Some(&other))).as_deref(),
            Some("AccessDenied")
        );
        assert_eq!(
            err(open_upload(&keys, Some(&record), Some(&other))).as_deref(),
            Some("InvalidRequest")
        );
        let (record, opened) = keys.create(&WriteSse::S3).unwrap();
        assert_eq!(
            keys.open(Some(&record), None).unwrap().unwrap().key,
            opened.key
        );
        assert_eq!(
            err(keys.open(Some(&record), Some(&c))).as_deref(),
            Some("InvalidRequest")
        );
        assert_eq!(
            err(keys.open(None, Some(&c))).as_deref(),
            Some("InvalidRequest")
        );
        let without = Keys::default();
        assert_eq!(
            err(without.create(&WriteSse::S3).map(|_| None)).as_deref(),
            Some("NotImplemented")
        );
        assert_eq!(
            err(without.open(Some(&record), None)).as_deref(),
            Some("InternalError")
        );
    }

    #[test]
    fn default_encryption_applies_only_without_the_requests_own() {
        let aes = BucketEncryption {
            algorithm: AES256.into(),
            ..Default::default()
        };
        assert!(matches!(
            for_write(None, None, Some(&aes)),
            Ok(Some(WriteSse::S3))
        ));
        assert!(matches!(for_write(None, None, None), Ok(None)));
        let kms = dto::ServerSideEncryption::from_static("aws:kms");
        assert!(for_write(Some(&kms), None, None).is_err());
        let bad = dto::ServerSideEncryption::from_static("AES192");
        assert!(for_write(Some(&bad), None, None).is_err());
    }

    #[test]
    fn bucket_rules_keep_one_default() {
        let rule = |alg: &'static str, kms: Option<&str>| dto::ServerSideEncryptionConfiguration {
            rules: vec![dto::ServerSideEncryptionRule {
                apply_server_side_encryption_by_default: Some(dto::ServerSideEncryptionByDefault {
                    kms_master_key_id: kms.map(str::to_string),
                    sse_algorithm: dto::ServerSideEncryption::from_static(alg),
                }),
                bucket_key_enabled: None,
            }],
        };
        assert_eq!(bucket_rule(rule(AES256, None)).unwrap().algorithm, AES256);
        let kms = bucket_rule(rule("aws:kms", Some("k1"))).unwrap();
        assert_eq!(kms.kms_key_id.as_deref(), Some("k1"));
        // Writes under an aws:kms default are refused: there is no KMS.
        assert!(for_write(None, None, Some(&kms)).is_err());
        let code = |r: S3Result<BucketEncryption>| r.unwrap_err().code().as_str().to_string();
        assert_eq!(
            code(bucket_rule(rule(AES256, Some("k1")))),
            "InvalidArgument"
        );
        assert_eq!(code(bucket_rule(rule("AES192", None))), "InvalidArgument");
        let none = dto::ServerSideEncryptionConfiguration { rules: vec![] };
        assert_eq!(code(bucket_rule(none)), "MalformedXML");
        let back = bucket_config(kms);
        assert_eq!(bucket_rule(back).unwrap().kms_key_id.as_deref(), Some("k1"));
    }

    #[tokio::test]
    async fn a_sealing_reader_stores_what_the_package_format_opens() {
        use tokio::io::AsyncReadExt;
        let keys = Keys {
            master: Some(Arc::new(MasterKey::from_bytes([9; 32]))),
        };
        let (_, opened) = keys.create(&WriteSse::S3).unwrap();
        let data: Vec<u8> = (0..3 * PACKAGE + 11).map(|i| i as u8).collect();
        let (mut r, content) = seal(&data[..], &opened, Some(Md5::digest(&data).into()));
        let mut stored = Vec::new();
        r.read_to_end(&mut stored).await.unwrap();
        assert_eq!(stored.len() as u64, sealed_len(data.len() as u64));
        let (size, etag) = (content.0)().unwrap();
        assert_eq!(size, data.len() as u64);
        assert_eq!(etag, hex::encode(Md5::digest(&data)));
        let k = StreamKey::of_header(&opened.key, &stored).unwrap();
        let mut o = Opener::new(k, size, 0, package::packages(size));
        let mut back = Vec::new();
        o.push(&stored[HEADER..], &mut |_, c| back.extend_from_slice(c))
            .unwrap();
        o.finish().unwrap();
        assert_eq!(back, data);
        // A Content-MD5 that differs refuses the write.
        let (mut r, content) = seal(&data[..], &opened, Some([0; 16]));
        r.read_to_end(&mut Vec::new()).await.unwrap();
        assert!((content.0)().is_err());
    }
}
