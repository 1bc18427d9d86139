//! `x-amz-checksum-*`: computed while a body streams through, checked
//! against what the client sent before anything is committed. A client may
//! send a value in a header (known up front) or in an aws-chunked trailer
//! (known only after the last byte), so the check runs at the end of the
//! body, through the SDK's `BodyCheck`.
//!
//! Multipart objects (S3 User Guide, "Checking object integrity", full
//! object and composite checksums): the upload's algorithm and type are
//! chosen in CreateMultipartUpload, every part is hashed as it arrives, and
//! CompleteMultipartUpload forms the object's checksum from the parts'
//! without reading them again: a composite one hashes the parts' binary
//! checksums (`-N` for N parts), a full-object CRC combines the parts' CRCs
//! with their lengths (`crc_fast::checksum_combine`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use s3s::checksum::ChecksumHasher;
use s3s::crypto::{Checksum as _, Crc32, Crc32c, Crc64Nvme, Sha1, Sha256};
use s3s::dto::{self, StreamingBlob};
use s3s::{S3Result, s3_error};
use tessera_proto::{ChecksumType, ErrorCode, PartInfo, RemoteError, UploadChecksum};
use tessera_sdk::{BodyCheck, SdkError};

/// The algorithms S3 defines, by the names used in headers and trailers.
pub const ALGORITHMS: [&str; 5] = ["crc32", "crc32c", "sha1", "sha256", "crc64nvme"];

/// Digest lengths in bytes, to refuse malformed values up front.
fn digest_len(algorithm: &str) -> usize {
    match algorithm {
        "crc32" | "crc32c" => 4,
        "crc64nvme" => 8,
        "sha1" => 20,
        _ => 32,
    }
}

/// The checksums one request body must be given and checked against.
pub struct BodyChecksums {
    hasher: Arc<Mutex<Option<ChecksumHasher>>>,
    /// Values sent in headers, by algorithm.
    expected: BTreeMap<&'static str, String>,
    /// An algorithm whose value arrives as a trailer.
    trailer: Option<&'static str>,
    trailers: Option<s3s::TrailingHeaders>,
    /// What the check computed, for responses that return it.
    results: Arc<Mutex<BTreeMap<String, String>>>,
    /// The algorithms the request named, in the order found.
    named: Vec<&'static str>,
}

/// Starts computing `algorithm` in `h`.
fn enable(h: &mut ChecksumHasher, algorithm: &str) {
    match algorithm {
        "crc32" => h.crc32 = Some(Crc32::new()),
        "crc32c" => h.crc32c = Some(Crc32c::new()),
        "sha1" => h.sha1 = Some(Sha1::new()),
        "sha256" => h.sha256 = Some(Sha256::new()),
        _ => h.crc64nvme = Some(Crc64Nvme::new()),
    }
}

fn algorithm_named(name: &str) -> S3Result<&'static str> {
    let lower = name.trim().to_ascii_lowercase();
    ALGORITHMS
        .iter()
        .copied()
        .find(|a| *a == lower)
        .ok_or_else(|| s3_error!(InvalidRequest, "unknown checksum algorithm {name}"))
}

impl BodyChecksums {
    /// What `headers` ask for. `always` adds an algorithm computed and
    /// stored even when the client asked for none (S3 keeps a CRC64NVME of
    /// every new object).
    pub fn from_request(
        headers: &HeaderMap,
        trailers: Option<s3s::TrailingHeaders>,
        always: Option<&'static str>,
    ) -> S3Result<Self> {
        let mut named: Vec<&'static str> = Vec::new();
        let mut expected = BTreeMap::new();
        for a in ALGORITHMS {
            let Some(v) = headers.get(format!("x-amz-checksum-{a}")) else {
                continue;
            };
            let v = v
                .to_str()
                .map_err(|_| s3_error!(InvalidRequest, "x-amz-checksum-{a} is not text"))?;
            check_value(a, v)?;
            expected.insert(a, v.to_string());
            named.push(a);
        }
        for name in ["x-amz-sdk-checksum-algorithm", "x-amz-checksum-algorithm"] {
            if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
                named.push(algorithm_named(v)?);
            }
        }
        let mut trailer = None;
        if let Some(t) = headers.get("x-amz-trailer").and_then(|v| v.to_str().ok()) {
            let t = t.trim().to_ascii_lowercase();
            if let Some(a) = t.strip_prefix("x-amz-checksum-") {
                let a = algorithm_named(a)?;
                trailer = Some(a);
                named.push(a);
            }
        }
        let mut seen = Vec::new();
        named.retain(|a| {
            let first = !seen.contains(a);
            seen.push(*a);
            first
        });
        let mut hasher = ChecksumHasher::default();
        for a in always.iter().chain(&named) {
            enable(&mut hasher, a);
        }
        Ok(BodyChecksums {
            hasher: Arc::new(Mutex::new(Some(hasher))),
            expected,
            trailer,
            trailers,
            results: Default::default(),
            named,
        })
    }

    /// Checksums of a body no client sent values for (a copied part).
    pub fn computing(algorithm: &'static str) -> Self {
        let mut hasher = ChecksumHasher::default();
        enable(&mut hasher, algorithm);
        BodyChecksums {
            hasher: Arc::new(Mutex::new(Some(hasher))),
            expected: BTreeMap::new(),
            trailer: None,
            trailers: None,
            results: Default::default(),
            named: Vec::new(),
        }
    }

    /// The algorithms the request named (a value, a trailer, or an
    /// algorithm header).
    pub fn named(&self) -> &[&'static str] {
        &self.named
    }

    /// Computes `algorithm` too.
    pub fn also(&self, algorithm: &'static str) {
        if let Ok(mut h) = self.hasher.lock()
            && let Some(h) = h.as_mut()
        {
            enable(h, algorithm);
        }
    }

    /// A body read from `reader` (a copy's source), hashed as it streams.
    pub fn watch_reader<R>(&self, reader: R) -> impl tokio::io::AsyncRead + Unpin + Send + use<R>
    where
        R: tokio::io::AsyncRead + Unpin + Send,
    {
        let hasher = self.hasher.clone();
        crate::gateway::body_reader(futures::TryStreamExt::inspect_ok(
            tokio_util::io::ReaderStream::new(reader),
            move |bytes: &bytes::Bytes| {
                if let Ok(mut h) = hasher.lock()
                    && let Some(h) = h.as_mut()
                {
                    h.update(bytes);
                }
            },
        ))
    }

    /// The body, hashed as it streams.
    pub fn watch(&self, body: StreamingBlob) -> impl tokio::io::AsyncRead + Unpin + Send + use<> {
        let hasher = self.hasher.clone();
        crate::gateway::body_reader(futures::TryStreamExt::inspect_ok(
            body,
            move |bytes: &bytes::Bytes| {
                if let Ok(mut h) = hasher.lock()
                    && let Some(h) = h.as_mut()
                {
                    h.update(bytes);
                }
            },
        ))
    }

    /// Where the check leaves the checksums it computed.
    pub fn results(&self) -> Arc<Mutex<BTreeMap<String, String>>> {
        self.results.clone()
    }

    /// The check to run at the end of the body: every value the client
    /// sent must match; the result is every checksum computed.
    pub fn check(self) -> BodyCheck {
        let this = Mutex::new(Some(self));
        BodyCheck(Arc::new(move || {
            let this = this
                .lock()
                .ok()
                .and_then(|mut t| t.take())
                .ok_or_else(|| refusal(ErrorCode::Internal, "the body was checked twice"))?;
            this.finish()
        }))
    }

    fn finish(self) -> Result<BTreeMap<String, String>, SdkError> {
        let hasher = self
            .hasher
            .lock()
            .ok()
            .and_then(|mut h| h.take())
            .ok_or_else(|| refusal(ErrorCode::Internal, "checksum state lost"))?;
        let sums = hasher.finalize();
        let mut computed = BTreeMap::new();
        for (a, v) in [
            ("crc32", sums.checksum_crc32),
            ("crc32c", sums.checksum_crc32c),
            ("sha1", sums.checksum_sha1),
            ("sha256", sums.checksum_sha256),
            ("crc64nvme", sums.checksum_crc64nvme),
        ] {
            if let Some(v) = v {
                computed.insert(a.to_string(), v);
            }
        }
        let mut expected = self.expected;
        if let Some(a) = self.trailer {
            let name = format!("x-amz-checksum-{a}");
            let sent = self
                .trailers
                .as_ref()
                .and_then(|t| {
                    t.read(|h| h.get(&name).and_then(|v| v.to_str().ok()).map(String::from))
                })
                .flatten()
                .ok_or_else(|| {
                    refusal(
                        ErrorCode::BadRequest,
                        format!("the body ended without its {name} trailer"),
                    )
                })?;
            expected.insert(a, sent);
        }
        for (a, sent) in expected {
            if computed.get(a).map(String::as_str) != Some(sent.trim()) {
                return Err(refusal(
                    ErrorCode::BadDigest,
                    format!(
                        "the {} you specified did not match the calculated checksum",
                        a.to_ascii_uppercase()
                    ),
                ));
            }
        }
        if let Ok(mut r) = self.results.lock() {
            r.clone_from(&computed);
        }
        Ok(computed)
    }
}

fn check_value(algorithm: &str, v: &str) -> S3Result<()> {
    use base64::Engine;
    match base64::engine::general_purpose::STANDARD.decode(v.trim()) {
        Ok(d) if d.len() == digest_len(algorithm) => Ok(()),
        _ => Err(s3_error!(
            InvalidRequest,
            "x-amz-checksum-{algorithm} is not a base64 {algorithm} digest"
        )),
    }
}

/// A refusal in Tessera's error classes, which the gateway maps to S3's.
fn refusal(code: ErrorCode, message: impl Into<String>) -> SdkError {
    SdkError::Remote(RemoteError::new(code, message))
}

/// Stored checksums as the fields of a GET or HEAD response.
pub struct ResponseChecksums {
    pub crc32: Option<String>,
    pub crc32c: Option<String>,
    pub sha1: Option<String>,
    pub sha256: Option<String>,
    pub crc64nvme: Option<String>,
    pub kind: Option<dto::ChecksumType>,
}

impl ResponseChecksums {
    /// S3 answers with checksums only when asked (`x-amz-checksum-mode:
    /// ENABLED`) and only for the whole object: a client would check them
    /// against whatever body it got.
    pub fn of(stored: &BTreeMap<String, String>, asked: bool, whole: bool) -> Self {
        let on = asked && whole && !stored.is_empty();
        let get = |a: &str| stored.get(a).filter(|_| on).cloned();
        ResponseChecksums {
            crc32: get("crc32"),
            crc32c: get("crc32c"),
            sha1: get("sha1"),
            sha256: get("sha256"),
            crc64nvme: get("crc64nvme"),
            kind: on.then(|| type_name(stored_type(stored))),
        }
    }

    /// GetObjectAttributes' form: a composite checksum without its `-N`
    /// (the part count is `TotalPartsCount` there), as the S3 User Guide's
    /// tutorial on additional checksums shows it.
    pub fn without_part_count(mut self) -> Self {
        for v in [
            &mut self.crc32,
            &mut self.crc32c,
            &mut self.sha1,
            &mut self.sha256,
            &mut self.crc64nvme,
        ]
        .into_iter()
        .flatten()
        {
            if let Some((sum, _)) = v.split_once('-') {
                *v = sum.to_string();
            }
        }
        self
    }
}

/// The type of an object's stored checksums: a composite value ends in
/// `-N` (base64 has no `-`); anything else covers the whole object.
fn stored_type(stored: &BTreeMap<String, String>) -> ChecksumType {
    if stored.values().any(|v| v.contains('-')) {
        ChecksumType::Composite
    } else {
        ChecksumType::FullObject
    }
}

/// S3's name of a checksum type (`x-amz-checksum-type`).
pub fn type_name(kind: ChecksumType) -> dto::ChecksumType {
    dto::ChecksumType::from_static(match kind {
        ChecksumType::FullObject => dto::ChecksumType::FULL_OBJECT,
        ChecksumType::Composite => dto::ChecksumType::COMPOSITE,
    })
}

/// S3's name of an algorithm (`CRC32`, ..., `CRC64NVME`).
pub fn algorithm_name(algorithm: &str) -> dto::ChecksumAlgorithm {
    dto::ChecksumAlgorithm::from(algorithm.to_ascii_uppercase())
}

/// An upload's checksum as S3 names it in its answers (algorithm, type):
/// CreateMultipartUpload, ListParts and ListMultipartUploads.
pub fn upload_names(
    checksum: Option<&UploadChecksum>,
) -> (Option<dto::ChecksumAlgorithm>, Option<dto::ChecksumType>) {
    (
        checksum.map(|c| algorithm_name(&c.algorithm)),
        checksum.map(|c| type_name(c.kind)),
    )
}

/// The checksums a copy keeps from its source: those of the whole object.
/// A composite checksum describes the source's parts, which the copy (one
/// piece) does not have.
pub fn copied(source: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    source
        .iter()
        .filter(|(_, v)| !v.contains('-'))
        .map(|(a, v)| (a.clone(), v.clone()))
        .collect()
}

/// The checksum a multipart upload keeps for its object, from
/// CreateMultipartUpload's `x-amz-checksum-algorithm` and
/// `x-amz-checksum-type` (S3 User Guide, "Checking object integrity"):
/// CRC32 and CRC32C allow both types (COMPOSITE when none is named),
/// CRC64NVME only FULL_OBJECT, SHA1 and SHA256 only COMPOSITE; a type needs
/// an algorithm. `None`: the client named none (the object then gets S3's
/// default, a full-object CRC64NVME). Errors: `InvalidRequest`.
pub fn upload_checksum(
    algorithm: Option<&str>,
    kind: Option<&str>,
) -> S3Result<Option<UploadChecksum>> {
    let kind = match kind.map(str::trim) {
        None => None,
        Some(k) if k.eq_ignore_ascii_case(dto::ChecksumType::COMPOSITE) => {
            Some(ChecksumType::Composite)
        }
        Some(k) if k.eq_ignore_ascii_case(dto::ChecksumType::FULL_OBJECT) => {
            Some(ChecksumType::FullObject)
        }
        Some(_) => {
            return Err(s3_error!(
                InvalidRequest,
                "Value for x-amz-checksum-type header is invalid."
            ));
        }
    };
    let Some(algorithm) = algorithm else {
        if kind.is_some() {
            return Err(s3_error!(
                InvalidRequest,
                "The x-amz-checksum-type header can only be used with the x-amz-checksum-algorithm header."
            ));
        }
        return Ok(None);
    };
    let algorithm = ALGORITHMS
        .iter()
        .copied()
        .find(|a| a.eq_ignore_ascii_case(algorithm.trim()))
        .ok_or_else(|| {
            s3_error!(
                InvalidRequest,
                "Checksum algorithm provided is unsupported. Please try again with any of the valid types: [CRC32, CRC32C, CRC64NVME, SHA1, SHA256]"
            )
        })?;
    let kind = match (algorithm, kind) {
        ("crc64nvme", None) => ChecksumType::FullObject,
        (_, None) => ChecksumType::Composite,
        ("crc64nvme", Some(ChecksumType::Composite)) => {
            return Err(s3_error!(
                InvalidRequest,
                "The COMPOSITE checksum type cannot be used with the crc64nvme checksum algorithm."
            ));
        }
        ("sha1" | "sha256", Some(ChecksumType::FullObject)) => {
            return Err(s3_error!(
                InvalidRequest,
                "The FULL_OBJECT checksum type cannot be used with the {algorithm} checksum algorithm."
            ));
        }
        (_, Some(k)) => k,
    };
    Ok(Some(UploadChecksum {
        algorithm: algorithm.to_string(),
        kind,
    }))
}

/// The algorithm every part of an upload is hashed with: the upload's, or
/// CRC64NVME (S3's default) for an upload that named none. A part of an
/// upload that named one must name the same (UploadPart's
/// `x-amz-checksum-*`, trailer or `x-amz-sdk-checksum-algorithm`);
/// otherwise `InvalidRequest`, as S3 answers.
pub fn part_algorithm(upload: Option<&UploadChecksum>, named: &[&str]) -> S3Result<&'static str> {
    let wanted = upload_algorithm(upload);
    if upload.is_none() {
        return Ok(wanted);
    }
    match named.iter().find(|a| **a != wanted).or(named.first()) {
        Some(a) if *a == wanted => Ok(wanted),
        other => Err(s3_error!(
            InvalidRequest,
            "Checksum Type mismatch occurred, expected checksum Type: {wanted}, actual checksum Type: {}",
            other.copied().unwrap_or("null")
        )),
    }
}

/// The algorithm an upload's parts are hashed with: its own, or CRC64NVME
/// for an upload that named none. A copied part (UploadPartCopy) names
/// none and takes this one.
pub fn upload_algorithm(upload: Option<&UploadChecksum>) -> &'static str {
    upload
        .and_then(|u| ALGORITHMS.iter().copied().find(|a| *a == u.algorithm))
        .unwrap_or("crc64nvme")
}

/// The checksums to answer for a part (UploadPart, UploadPartCopy,
/// ListParts): the upload's algorithm, or for an upload that named none,
/// what the part's request named, else CRC64NVME. One algorithm per part:
/// clients send back every part checksum they were given, and S3 refuses
/// a completion naming several.
pub fn part_answer(
    upload: Option<&UploadChecksum>,
    computed: &BTreeMap<String, String>,
    named: &[&str],
) -> BTreeMap<String, String> {
    let algorithm = match (upload, named.first()) {
        (Some(u), _) => u.algorithm.as_str(),
        (None, Some(a)) => a,
        (None, None) => "crc64nvme",
    };
    computed
        .get_key_value(algorithm)
        .map(|(a, v)| (a.clone(), v.clone()))
        .into_iter()
        .collect()
}

/// The checksums one part of a CompleteMultipartUpload body names, as
/// (algorithm, value); more than one, or a value that is not a base64
/// digest of its algorithm, is `InvalidArgument` as in S3.
pub fn listed_checksums(part: &dto::CompletedPart) -> S3Result<Option<(&'static str, String)>> {
    let named: Vec<(&'static str, &String)> = [
        ("crc32", &part.checksum_crc32),
        ("crc32c", &part.checksum_crc32c),
        ("sha1", &part.checksum_sha1),
        ("sha256", &part.checksum_sha256),
        ("crc64nvme", &part.checksum_crc64nvme),
    ]
    .into_iter()
    .filter_map(|(a, v)| v.as_ref().map(|v| (a, v)))
    .collect();
    match named.as_slice() {
        [] => Ok(None),
        [(a, v)] if check_value(a, v).is_ok() => Ok(Some((a, v.trim().to_string()))),
        _ => Err(s3_error!(
            InvalidArgument,
            "Invalid Base64 or multiple checksums present in request"
        )),
    }
}

/// One part as CompleteMultipartUpload lists it: number, ETag, and the
/// checksum named for it (algorithm, value).
pub type ListedPart = (u32, String, Option<(&'static str, String)>);

/// What CompleteMultipartUpload asks of the object's checksum besides the
/// parts: a full-object (or composite) value in `x-amz-checksum-<alg>`,
/// and the type in `x-amz-checksum-type`.
#[derive(Debug, Default)]
pub struct CompletionHeaders {
    pub value: Option<(&'static str, String)>,
    pub kind: Option<String>,
}

impl CompletionHeaders {
    /// From the request's fields. Errors: more than one value, or a value
    /// that is not a base64 digest of its algorithm (`InvalidRequest`).
    pub fn of(input: &dto::CompleteMultipartUploadInput) -> S3Result<Self> {
        let named: Vec<(&'static str, &String)> = [
            ("crc32", &input.checksum_crc32),
            ("crc32c", &input.checksum_crc32c),
            ("sha1", &input.checksum_sha1),
            ("sha256", &input.checksum_sha256),
            ("crc64nvme", &input.checksum_crc64nvme),
        ]
        .into_iter()
        .filter_map(|(a, v)| v.as_ref().map(|v| (a, v)))
        .collect();
        let value = match named.as_slice() {
            [] => None,
            [(a, v)] => {
                // A composite value may carry its `-N`.
                let sum = v.trim().split_once('-').map_or(v.trim(), |(s, _)| s);
                check_value(a, sum)?;
                Some((*a, v.trim().to_string()))
            }
            _ => {
                return Err(s3_error!(
                    InvalidRequest,
                    "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed."
                ));
            }
        };
        Ok(CompletionHeaders {
            value,
            kind: input.checksum_type.as_ref().map(|k| k.as_str().to_string()),
        })
    }
}

/// The object checksum of a completed multipart upload, as (algorithm,
/// value), from the listed parts (number, the checksum the request named
/// for it) and the stored parts (S3 User Guide, "Checking object
/// integrity"). Each checksum a part names must be the stored part's in
/// the upload's algorithm, or in any algorithm the part was hashed with
/// for an upload that named none (`InvalidPart` otherwise, as S3); a composite
/// upload needs one for every part (`InvalidRequest`); the header's value
/// and type, when sent, must match what the parts give (`BadDigest`), and
/// its algorithm must be the upload's (`InvalidRequest`). `None` when a
/// listed part is not stored (meta then refuses the completion) or, for an
/// upload that named no checksum, a part has no CRC64NVME.
pub fn completion(
    upload: Option<&UploadChecksum>,
    listed: &[ListedPart],
    stored: &[PartInfo],
    headers: &CompletionHeaders,
) -> S3Result<Option<(String, String)>> {
    let (algorithm, kind) = match upload {
        Some(u) => (u.algorithm.as_str(), u.kind),
        None => ("crc64nvme", ChecksumType::FullObject),
    };
    let mut parts = Vec::with_capacity(listed.len());
    for (number, etag, named) in listed {
        let etag = etag.trim_matches('"');
        let Some(part) = stored
            .iter()
            .find(|p| p.number == *number && p.etag == etag)
        else {
            return Ok(None);
        };
        let own = part.checksums.get(algorithm);
        // An upload that named no algorithm takes a part's checksum in
        // whatever algorithm the part was sent with (SDKs add CRC32 to
        // parts of such uploads by default); one that named an algorithm
        // takes only that one.
        let fits = |(a, v): &(&str, String)| {
            (upload.is_none() || *a == algorithm) && part.checksums.get(*a) == Some(v)
        };
        match named {
            Some(n) if !fits(n) => {
                return Err(s3_error!(
                    InvalidPart,
                    "One or more of the specified parts could not be found.  The part may not have been uploaded, or the specified entity tag may not match the part's entity tag."
                ));
            }
            None if upload.is_some() && kind == ChecksumType::Composite => {
                return Err(s3_error!(
                    InvalidRequest,
                    "The upload was created using a {algorithm} checksum. The complete request must include the checksum for each part. It was missing for part {number} in the request."
                ));
            }
            _ => {}
        }
        let Some(own) = own else {
            return Ok(None);
        };
        parts.push((own.as_str(), part.size));
    }
    let value = match kind {
        ChecksumType::Composite => composite(algorithm, &parts),
        ChecksumType::FullObject => full_object(algorithm, &parts),
    }
    .ok_or_else(|| {
        s3_error!(
            InternalError,
            "a stored part checksum is not a {algorithm} digest"
        )
    })?;
    if let Some(k) = &headers.kind
        && !type_name(kind).as_str().eq_ignore_ascii_case(k.trim())
    {
        return Err(s3_error!(
            BadDigest,
            "The upload was created using the {} checksum mode. The complete request must use the same checksum mode.",
            type_name(kind).as_str()
        ));
    }
    if let Some((a, sent)) = &headers.value {
        if *a != algorithm {
            return Err(s3_error!(
                InvalidRequest,
                "The upload was created using the {algorithm} checksum algorithm; x-amz-checksum-{a} does not apply"
            ));
        }
        // A composite value may be sent with or without its `-N`.
        let matches = sent == &value || value.split_once('-').is_some_and(|(v, _)| v == sent);
        if !matches {
            return Err(s3_error!(
                BadDigest,
                "The {} you specified did not match the calculated checksum.",
                algorithm.to_ascii_uppercase()
            ));
        }
    }
    Ok(Some((algorithm.to_string(), value)))
}

fn decode(value: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()
}

fn encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A composite checksum: `algorithm` over the parts' binary checksums,
/// base64, then `-N`. `None` if a part's value is not a digest.
fn composite(algorithm: &str, parts: &[(&str, u64)]) -> Option<String> {
    let mut joined = Vec::new();
    for (v, _) in parts {
        let d = decode(v).filter(|d| d.len() == digest_len(algorithm))?;
        joined.extend_from_slice(&d);
    }
    let digest: Vec<u8> = match algorithm {
        "crc32" => Crc32::checksum(&joined).to_vec(),
        "crc32c" => Crc32c::checksum(&joined).to_vec(),
        "sha1" => Sha1::checksum(&joined).to_vec(),
        "sha256" => Sha256::checksum(&joined).to_vec(),
        _ => Crc64Nvme::checksum(&joined).to_vec(),
    };
    Some(format!("{}-{}", encode(&digest), parts.len()))
}

/// The CRC of the whole object from its parts' CRCs and lengths, without
/// their bytes (CRC combination). `None` for an algorithm that is not a
/// CRC, or a part's value that is not one.
fn full_object(algorithm: &str, parts: &[(&str, u64)]) -> Option<String> {
    use crc_fast::CrcAlgorithm;
    let (crc, width) = match algorithm {
        "crc32" => (CrcAlgorithm::Crc32IsoHdlc, 4),
        "crc32c" => (CrcAlgorithm::Crc32Iscsi, 4),
        "crc64nvme" => (CrcAlgorithm::Crc64Nvme, 8),
        _ => return None,
    };
    let mut whole: Option<u64> = None;
    for (v, len) in parts {
        let d = decode(v).filter(|d| d.len() == width)?;
        let part = d.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        whole = Some(match whole {
            None => part,
            Some(w) => crc_fast::checksum_combine(crc, w, part, *len),
        });
    }
    let whole = whole?;
    Some(encode(&whole.to_be_bytes()[8 - width..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_checked_at_the_end() {
        let mut headers = HeaderMap::new();
        // CRC32 of "hello" is 0x3610a686.
        headers.insert("x-amz-checksum-crc32", "NhCmhg==".parse().unwrap());
        let sums = BodyChecksums::from_request(&headers, None, Some("crc64nvme")).unwrap();
        sums.hasher
            .lock()
            .unwrap()
            .as_mut()
            .unwrap()
            .update(b"hello");
        let got = (sums.check().0)().unwrap();
        assert_eq!(got["crc32"], "NhCmhg==");
        assert!(got.contains_key("crc64nvme"));

        let sums = BodyChecksums::from_request(&headers, None, None).unwrap();
        sums.hasher
            .lock()
            .unwrap()
            .as_mut()
            .unwrap()
            .update(b"hellO");
        let err = (sums.check().0)().unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::BadDigest));
    }

    #[test]
    fn malformed_values_are_refused_up_front() {
        let mut headers = HeaderMap::new();
        headers.insert("x-amz-checksum-sha256", "NhCmhg==".parse().unwrap());
        assert!(BodyChecksums::from_request(&headers, None, None).is_err());
        let mut headers = HeaderMap::new();
        headers.insert("x-amz-sdk-checksum-algorithm", "MD4".parse().unwrap());
        assert!(BodyChecksums::from_request(&headers, None, None).is_err());
    }

    fn b64(bytes: &[u8]) -> String {
        encode(bytes)
    }

    /// Each algorithm's digest of `data`, base64, as a client sends it.
    fn digest(algorithm: &str, data: &[u8]) -> String {
        match algorithm {
            "crc32" => b64(&Crc32::checksum(data)),
            "crc32c" => b64(&Crc32c::checksum(data)),
            "sha1" => b64(&Sha1::checksum(data)),
            "sha256" => b64(&Sha256::checksum(data)),
            _ => b64(&Crc64Nvme::checksum(data)),
        }
    }

    fn part(number: u32, data: &[u8]) -> PartInfo {
        PartInfo {
            number,
            size: data.len() as u64,
            etag: format!("e{number}"),
            mtime_ms: 0,
            chunks: vec![],
            checksums: ALGORITHMS
                .iter()
                .map(|a| (a.to_string(), digest(a, data)))
                .collect(),
        }
    }

    #[test]
    fn algorithms_allow_the_types_s3_documents() {
        let ok = |a, k| {
            upload_checksum(a, k)
                .unwrap()
                .map(|c| (c.algorithm, c.kind))
        };
        assert_eq!(ok(None, None), None);
        assert_eq!(
            ok(Some("CRC32"), None),
            Some(("crc32".into(), ChecksumType::Composite))
        );
        assert_eq!(
            ok(Some("CRC32C"), Some("FULL_OBJECT")),
            Some(("crc32c".into(), ChecksumType::FullObject))
        );
        assert_eq!(
            ok(Some("CRC64NVME"), None),
            Some(("crc64nvme".into(), ChecksumType::FullObject))
        );
        assert_eq!(
            ok(Some("SHA256"), Some("COMPOSITE")),
            Some(("sha256".into(), ChecksumType::Composite))
        );
        for (a, k) in [
            (Some("CRC64NVME"), Some("COMPOSITE")),
            (Some("SHA1"), Some("FULL_OBJECT")),
            (Some("SHA256"), Some("FULL_OBJECT")),
            (None, Some("COMPOSITE")),
            (Some("MD5"), None),
            (Some("CRC32"), Some("PARTIAL")),
        ] {
            let e = upload_checksum(a, k).unwrap_err();
            assert_eq!(e.code(), &s3s::S3ErrorCode::InvalidRequest, "{a:?} {k:?}");
        }
    }

    #[test]
    fn full_object_crcs_combine_to_the_crc_of_the_whole() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let cuts = [&data[..40_000], &data[40_000..40_001], &data[40_001..]];
        for a in ["crc32", "crc32c", "crc64nvme"] {
            let sums: Vec<String> = cuts.iter().map(|c| digest(a, c)).collect();
            let parts: Vec<(&str, u64)> = sums
                .iter()
                .zip(cuts)
                .map(|(s, c)| (s.as_str(), c.len() as u64))
                .collect();
            assert_eq!(full_object(a, &parts).unwrap(), digest(a, &data), "{a}");
        }
        assert_eq!(full_object("sha256", &[]), None);
    }

    #[test]
    fn composite_checksums_hash_the_parts_checksums() {
        let (one, two) = (b"hello".as_slice(), b"world".as_slice());
        let mut joined = Sha256::checksum(one).to_vec();
        joined.extend_from_slice(&Sha256::checksum(two));
        let want = format!("{}-2", b64(&Sha256::checksum(&joined)));
        let (s1, s2) = (digest("sha256", one), digest("sha256", two));
        assert_eq!(composite("sha256", &[(&s1, 5), (&s2, 5)]).unwrap(), want);
    }

    #[test]
    fn completions_check_the_parts_and_the_whole() {
        let big = vec![7u8; 1000];
        let stored = vec![part(1, &big), part(2, b"tail")];
        let crc32 = |kind| UploadChecksum {
            algorithm: "crc32".into(),
            kind,
        };
        let listed = |named: bool| -> Vec<ListedPart> {
            stored
                .iter()
                .map(|p| {
                    let sum = named.then(|| ("crc32", p.checksums["crc32"].clone()));
                    (p.number, p.etag.clone(), sum)
                })
                .collect()
        };
        let none = CompletionHeaders::default();
        let mut whole = big.clone();
        whole.extend_from_slice(b"tail");

        let full = crc32(ChecksumType::FullObject);
        let got = completion(Some(&full), &listed(false), &stored, &none).unwrap();
        assert_eq!(got, Some(("crc32".into(), digest("crc32", &whole))));
        let wrong = CompletionHeaders {
            value: Some(("crc32", digest("crc32", b"other"))),
            kind: None,
        };
        let e = completion(Some(&full), &listed(true), &stored, &wrong).unwrap_err();
        assert_eq!(e.code(), &s3s::S3ErrorCode::BadDigest);
        let right = CompletionHeaders {
            value: Some(("crc32", digest("crc32", &whole))),
            kind: Some("FULL_OBJECT".into()),
        };
        assert!(completion(Some(&full), &listed(true), &stored, &right).is_ok());
        let other_type = CompletionHeaders {
            value: None,
            kind: Some("COMPOSITE".into()),
        };
        let e = completion(Some(&full), &listed(true), &stored, &other_type).unwrap_err();
        assert_eq!(e.code(), &s3s::S3ErrorCode::BadDigest);

        let comp = crc32(ChecksumType::Composite);
        let e = completion(Some(&comp), &listed(false), &stored, &none).unwrap_err();
        assert_eq!(e.code(), &s3s::S3ErrorCode::InvalidRequest);
        let (_, v) = completion(Some(&comp), &listed(true), &stored, &none)
            .unwrap()
            .unwrap();
        assert!(v.ends_with("-2"), "{v}");
        let mut bad = listed(true);
        bad[1].2 = Some(("crc32", digest("crc32", b"tall")));
        let e = completion(Some(&comp), &bad, &stored, &none).unwrap_err();
        assert_eq!(e.code(), &s3s::S3ErrorCode::InvalidPart);
        bad[1].2 = Some(("crc32c", stored[1].checksums["crc32c"].clone()));
        let e = completion(Some(&comp), &bad, &stored, &none).unwrap_err();
        assert_eq!(e.code(), &s3s::S3ErrorCode::InvalidPart);
        // An upload that named nothing: CRC64NVME of the whole, and any
        // algorithm the parts were hashed with may be named.
        let (a, v) = completion(None, &bad, &stored, &none).unwrap().unwrap();
        assert_eq!((a.as_str(), v), ("crc64nvme", digest("crc64nvme", &whole)));
        // A part that is not stored is meta's to refuse.
        let mut missing = listed(true);
        missing[0].1 = "nope".into();
        assert_eq!(
            completion(Some(&comp), &missing, &stored, &none).unwrap(),
            None
        );
    }

    #[test]
    fn parts_of_an_upload_with_an_algorithm_must_name_it() {
        let up = UploadChecksum {
            algorithm: "sha256".into(),
            kind: ChecksumType::Composite,
        };
        assert_eq!(part_algorithm(Some(&up), &["sha256"]).unwrap(), "sha256");
        for named in [&[][..], &["crc32"], &["sha256", "crc32"]] {
            let e = part_algorithm(Some(&up), named).unwrap_err();
            assert_eq!(e.code(), &s3s::S3ErrorCode::InvalidRequest);
        }
        assert_eq!(part_algorithm(None, &["crc32"]).unwrap(), "crc64nvme");
        // A copied part names nothing and takes the upload's.
        assert_eq!(upload_algorithm(Some(&up)), "sha256");
        assert_eq!(upload_algorithm(None), "crc64nvme");
    }
}
