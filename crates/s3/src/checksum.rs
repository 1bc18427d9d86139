//! `x-amz-checksum-*`: computed while a body streams through, checked
//! against what the client sent before anything is committed. A client may
//! send a value in a header (known up front) or in an aws-chunked trailer
//! (known only after the last byte), so the check runs at the end of the
//! body, through the SDK's `BodyCheck`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use s3s::checksum::ChecksumHasher;
use s3s::crypto::{Checksum as _, Crc32, Crc32c, Crc64Nvme, Sha1, Sha256};
use s3s::dto::{self, StreamingBlob};
use s3s::{S3Result, s3_error};
use tessera_proto::{ErrorCode, RemoteError};
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
        let mut wanted: Vec<&'static str> = always.into_iter().collect();
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
            wanted.push(a);
        }
        for name in ["x-amz-sdk-checksum-algorithm", "x-amz-checksum-algorithm"] {
            if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
                wanted.push(algorithm_named(v)?);
            }
        }
        let mut trailer = None;
        if let Some(t) = headers.get("x-amz-trailer").and_then(|v| v.to_str().ok()) {
            let t = t.trim().to_ascii_lowercase();
            if let Some(a) = t.strip_prefix("x-amz-checksum-") {
                let a = algorithm_named(a)?;
                trailer = Some(a);
                wanted.push(a);
            }
        }
        let mut hasher = ChecksumHasher::default();
        for a in wanted {
            match a {
                "crc32" => hasher.crc32 = Some(Crc32::new()),
                "crc32c" => hasher.crc32c = Some(Crc32c::new()),
                "sha1" => hasher.sha1 = Some(Sha1::new()),
                "sha256" => hasher.sha256 = Some(Sha256::new()),
                _ => hasher.crc64nvme = Some(Crc64Nvme::new()),
            }
        }
        Ok(BodyChecksums {
            hasher: Arc::new(Mutex::new(Some(hasher))),
            expected,
            trailer,
            trailers,
            results: Default::default(),
        })
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
            kind: on.then(|| dto::ChecksumType::from_static(dto::ChecksumType::FULL_OBJECT)),
        }
    }
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
}
