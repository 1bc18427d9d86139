//! S3's request-level rules: the limits and the forms a request must keep
//! before anything is read or written, each checked here and only here, as
//! the S3 API reference states it (the operation's page, "Request Syntax"
//! and "Errors"; the User Guide's "Amazon S3 multipart upload limits" and
//! "Conditional writes").
//!
//! Which error wins when several apply: the signature (s3s), then access to
//! the bucket (`AccessDenied`, `NoSuchBucket`), then these rules in the
//! order each operation calls them (all are pure: they look only at the
//! request), then what depends on stored state (`NoSuchKey`,
//! `NoSuchUpload`, `InvalidPart`, `PreconditionFailed`), which meta decides
//! in the step that commits, so that no other write slips in between.

use s3s::dto::{self, ETagCondition};
use s3s::{S3Result, s3_error};
use tessera_proto::{
    CorsRule, MAX_BUCKET_TAGS, MAX_CORS_RULES, MAX_OBJECT_TAGS, TagSet, Versioning, WriteCondition,
    tag_set_fault, version_id_is_valid,
};

/// Longest object key, in UTF-8 bytes (User Guide, "Naming Amazon S3
/// objects"): `KeyTooLongError`.
pub const MAX_KEY_BYTES: usize = 1024;

/// Most user-defined metadata on one object: the UTF-8 bytes of every name
/// and value together (User Guide, "Working with object metadata"):
/// `MetadataTooLarge`.
pub const MAX_USER_METADATA: usize = 2048;

/// Part numbers run from 1 to this (User Guide, "Amazon S3 multipart upload
/// limits"): `InvalidArgument`.
pub const MAX_PART_NUMBER: i32 = 10_000;

/// Largest object one PutObject may carry, and largest part, in bytes: 5 GiB
/// (PutObject; multipart upload limits): `EntityTooLarge`.
pub const MAX_PUT_BYTES: u64 = 5 << 30;

/// Largest source CopyObject and UploadPartCopy copy in one request (bytes):
/// 5 GiB (CopyObject, UploadPartCopy): `InvalidRequest`.
pub const MAX_COPY_BYTES: u64 = 5 << 30;

/// Most keys one DeleteObjects request may name (DeleteObjects): more, or
/// none, is `MalformedXML` and nothing is deleted.
pub const MAX_DELETE_KEYS: usize = 1000;

/// Most entries in one page of ListObjects(V2), ListParts and
/// ListMultipartUploads; larger `max-keys`, `max-parts` and `max-uploads`
/// are lowered to it, as S3 does.
pub const MAX_PAGE: i32 = 1000;

/// An object key: at most [`MAX_KEY_BYTES`].
pub fn key(key: &str) -> S3Result<()> {
    if key.len() > MAX_KEY_BYTES {
        return Err(s3_error!(
            KeyTooLongError,
            "the key is {} bytes; at most {MAX_KEY_BYTES} are allowed",
            key.len()
        ));
    }
    Ok(())
}

/// User metadata (`x-amz-meta-*`): at most [`MAX_USER_METADATA`] bytes.
pub fn metadata(meta: Option<&dto::Metadata>) -> S3Result<()> {
    let size: usize = meta
        .into_iter()
        .flatten()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    if size > MAX_USER_METADATA {
        return Err(s3_error!(
            MetadataTooLarge,
            "user metadata is {size} bytes; at most {MAX_USER_METADATA} are allowed"
        ));
    }
    Ok(())
}

/// A `partNumber` (UploadPart, UploadPartCopy, GetObject, HeadObject):
/// 1 to [`MAX_PART_NUMBER`].
pub fn part_number(n: i32) -> S3Result<u32> {
    match u32::try_from(n) {
        Ok(n) if (1..=MAX_PART_NUMBER as u32).contains(&n) => Ok(n),
        _ => Err(s3_error!(
            InvalidArgument,
            "Part number must be an integer between 1 and {MAX_PART_NUMBER}, inclusive"
        )),
    }
}

/// The declared length of a PutObject or UploadPart body (bytes): at most
/// [`MAX_PUT_BYTES`].
pub fn body_length(len: Option<i64>) -> S3Result<()> {
    match len {
        Some(n) if n > 0 && n as u64 > MAX_PUT_BYTES => Err(s3_error!(
            EntityTooLarge,
            "Your proposed upload exceeds the maximum allowed size of {MAX_PUT_BYTES} bytes"
        )),
        _ => Ok(()),
    }
}

/// The bytes a copy reads from its source: at most [`MAX_COPY_BYTES`].
pub fn copy_length(len: u64) -> S3Result<()> {
    if len > MAX_COPY_BYTES {
        return Err(s3_error!(
            InvalidRequest,
            "The specified copy source is larger than the maximum allowable size for a copy source: {MAX_COPY_BYTES}"
        ));
    }
    Ok(())
}

/// CopyObject onto its own source must change something: S3 refuses a copy
/// to itself that keeps the metadata (`x-amz-metadata-directive: COPY`) and
/// names no storage class (`changes` is false then).
pub fn copy_changes_something(same_object: bool, changes: bool) -> S3Result<()> {
    if same_object && !changes {
        return Err(s3_error!(
            InvalidRequest,
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes."
        ));
    }
    Ok(())
}

/// CreateBucket naming a bucket that exists (CreateBucket, "Errors"): the
/// caller owns it and the gateway serves US East (N. Virginia) or no region
/// in particular, so S3's legacy answer applies: 200 and the ACL reset to
/// the request's (`Ok`); the caller owns it elsewhere:
/// `BucketAlreadyOwnedByYou` (409); someone else owns it:
/// `BucketAlreadyExists` (409), bucket names being one namespace.
pub fn existing_bucket(bucket: &str, caller_owns: bool, region: Option<&str>) -> S3Result<()> {
    if !caller_owns {
        return Err(s3_error!(
            BucketAlreadyExists,
            "the bucket name {bucket} is not available; select a different name"
        ));
    }
    if region.is_none_or(|r| r.eq_ignore_ascii_case("us-east-1")) {
        return Ok(());
    }
    Err(s3_error!(
        BucketAlreadyOwnedByYou,
        "bucket {bucket} already exists and is yours"
    ))
}

/// The keys a DeleteObjects request names: 1 to [`MAX_DELETE_KEYS`].
pub fn delete_keys(n: usize) -> S3Result<()> {
    if n == 0 || n > MAX_DELETE_KEYS {
        return Err(s3_error!(
            MalformedXML,
            "a DeleteObjects request names from 1 to {MAX_DELETE_KEYS} keys; this one names {n}"
        ));
    }
    Ok(())
}

/// The parts a CompleteMultipartUpload body lists, as (number, ETag without
/// quotes): at least one (else `MalformedXML`), each with a PartNumber and
/// an ETag (`MalformedXML`), numbers in range (`InvalidArgument`) and
/// ascending (`InvalidPartOrder`). Whether each was uploaded is meta's to
/// say (`InvalidPart`).
pub fn completed_parts(parts: Option<Vec<dto::CompletedPart>>) -> S3Result<Vec<(u32, String)>> {
    let parts = parts.unwrap_or_default();
    if parts.is_empty() {
        return Err(s3_error!(
            MalformedXML,
            "CompleteMultipartUpload lists no parts"
        ));
    }
    let mut out: Vec<(u32, String)> = Vec::with_capacity(parts.len());
    for p in parts {
        let (Some(n), Some(etag)) = (p.part_number, p.e_tag) else {
            return Err(s3_error!(
                MalformedXML,
                "each part needs a PartNumber and an ETag"
            ));
        };
        let n = part_number(n)?;
        if out.last().is_some_and(|(last, _)| *last >= n) {
            return Err(s3_error!(
                InvalidPartOrder,
                "The list of parts was not in ascending order. Parts must be ordered by part number."
            ));
        }
        out.push((n, etag.value().to_string()));
    }
    Ok(out)
}

/// A write's `If-Match` and `If-None-Match` (PutObject,
/// CompleteMultipartUpload) as the condition meta checks with the commit.
/// S3 takes `If-None-Match` only as `*`, and not together with `If-Match`:
/// anything else is `NotImplemented`.
pub fn write_condition(
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
) -> S3Result<WriteCondition> {
    match (if_match, if_none_match) {
        (None, None) => Ok(WriteCondition::Any),
        (None, Some(ETagCondition::Any)) => Ok(WriteCondition::Absent),
        (Some(ETagCondition::Any), None) => Ok(WriteCondition::Exists),
        (Some(ETagCondition::ETag(e)), None) => Ok(WriteCondition::ETag(e.value().to_string())),
        (None, Some(ETagCondition::ETag(_))) => Err(s3_error!(
            NotImplemented,
            "A header you provided implies functionality that is not implemented: If-None-Match on a write takes only *"
        )),
        (Some(_), Some(_)) => Err(s3_error!(
            NotImplemented,
            "A header you provided implies functionality that is not implemented: If-Match with If-None-Match on a write"
        )),
    }
}

/// A `versionId` query parameter (GetObject, HeadObject, DeleteObject,
/// the tagging operations, and a copy source's `?versionId=`): `null` or
/// an id this gateway handed out; anything else, an empty value included,
/// is `InvalidArgument` ("Invalid version id specified"), before any
/// stored state is looked at. Absent stays absent.
pub fn version_id(v: Option<&str>) -> S3Result<Option<&str>> {
    match v {
        Some(v) if !version_id_is_valid(v) => Err(s3_error!(
            InvalidArgument,
            "Invalid version id specified: {v:?}"
        )),
        other => Ok(other),
    }
}

/// ListObjectVersions' markers (S3 API reference, ListObjectVersions): a
/// `version-id-marker` needs a `key-marker` ("A version-id marker cannot
/// be specified without a key marker", `InvalidArgument`) and must be a
/// version id. Empty markers are absent.
pub fn version_markers<'a>(
    key_marker: Option<&'a str>,
    version_marker: Option<&'a str>,
) -> S3Result<(Option<&'a str>, Option<&'a str>)> {
    let key_marker = key_marker.filter(|k| !k.is_empty());
    let version_marker = version_marker.filter(|v| !v.is_empty());
    if version_marker.is_some() && key_marker.is_none() {
        return Err(s3_error!(
            InvalidArgument,
            "A version-id marker cannot be specified without a key marker."
        ));
    }
    Ok((key_marker, version_id(version_marker)?))
}

/// PutBucketVersioning's body (S3 API reference, PutBucketVersioning):
/// `Status` must be `Enabled` or `Suspended` (a missing or other status is
/// `MalformedXML`: there is no going back to unversioned); `MfaDelete` may
/// only be `Disabled` (MFA delete is not offered: `NotImplemented`).
pub fn versioning_configuration(c: &dto::VersioningConfiguration) -> S3Result<Versioning> {
    if let Some(mfa) = &c.mfa_delete
        && mfa.as_str() != dto::MFADelete::DISABLED
    {
        return Err(s3_error!(NotImplemented, "MFA delete is not supported"));
    }
    match c.status.as_ref().map(|s| s.as_str()) {
        Some(dto::BucketVersioningStatus::ENABLED) => Ok(Versioning::Enabled),
        Some(dto::BucketVersioningStatus::SUSPENDED) => Ok(Versioning::Suspended),
        Some(other) => Err(s3_error!(
            MalformedXML,
            "versioning status {other:?} is neither Enabled nor Suspended"
        )),
        None => Err(s3_error!(
            MalformedXML,
            "the versioning configuration has no Status"
        )),
    }
}

/// A page size (`max-keys`, `max-parts`, `max-uploads`): absent means
/// [`MAX_PAGE`], larger is lowered to it, negative is `InvalidArgument`.
pub fn page_size(name: &str, value: Option<i32>) -> S3Result<i32> {
    match value {
        None => Ok(MAX_PAGE),
        Some(n) if n < 0 => Err(s3_error!(
            InvalidArgument,
            "{name} must be an integer from 0 to 2147483647"
        )),
        Some(n) => Ok(n.min(MAX_PAGE)),
    }
}

/// A `part-number-marker` (ListParts): not negative.
pub fn part_number_marker(value: Option<i32>) -> S3Result<i32> {
    match value {
        Some(n) if n < 0 => Err(s3_error!(
            InvalidArgument,
            "part-number-marker must be an integer from 0 to 2147483647"
        )),
        v => Ok(v.unwrap_or(0)),
    }
}

/// Tag keys users may not set: S3 reserves the `aws:` prefix for its own
/// (User Guide, "Categorizing your storage using tags").
const RESERVED_TAG_PREFIX: &str = "aws:";

/// A tag set as a request carries it: keys unique (else `InvalidTag`), not
/// `aws:`-prefixed, then S3's limits ([`tag_set_fault`]: at most `max`
/// tags, keys of 1 to 128 Unicode characters, values up to 256), each
/// broken limit `InvalidTag` (PutObjectTagging, PutBucketTagging,
/// `x-amz-tagging` on PutObject, CopyObject and CreateMultipartUpload).
fn checked_tags(pairs: Vec<(String, String)>, max: usize) -> S3Result<TagSet> {
    let mut tags = TagSet::new();
    for (k, v) in pairs {
        if k.starts_with(RESERVED_TAG_PREFIX) {
            return Err(s3_error!(
                InvalidTag,
                "tag keys beginning with {RESERVED_TAG_PREFIX} are reserved for system use"
            ));
        }
        if tags.insert(k, v).is_some() {
            return Err(s3_error!(
                InvalidTag,
                "Cannot provide multiple Tags with the same key"
            ));
        }
    }
    match tag_set_fault(&tags, max) {
        Some(fault) => Err(s3_error!(InvalidTag, "{fault}")),
        None => Ok(tags),
    }
}

/// The `<TagSet>` of a PutObjectTagging body: every `<Tag>` needs a `<Key>`
/// and a `<Value>` (else `MalformedXML`), then [`checked_tags`] with
/// [`MAX_OBJECT_TAGS`].
pub fn object_tagging(tagging: dto::Tagging) -> S3Result<TagSet> {
    checked_tags(tag_pairs(tagging)?, MAX_OBJECT_TAGS)
}

/// The `<TagSet>` of a PutBucketTagging body, as [`object_tagging`] but with
/// [`MAX_BUCKET_TAGS`].
pub fn bucket_tagging(tagging: dto::Tagging) -> S3Result<TagSet> {
    checked_tags(tag_pairs(tagging)?, MAX_BUCKET_TAGS)
}

fn tag_pairs(tagging: dto::Tagging) -> S3Result<Vec<(String, String)>> {
    tagging
        .tag_set
        .into_iter()
        .map(|t| match (t.key, t.value) {
            (Some(k), Some(v)) => Ok((k, v)),
            _ => Err(s3_error!(MalformedXML, "each Tag needs a Key and a Value")),
        })
        .collect()
}

/// `x-amz-tagging` (PutObject, CopyObject, CreateMultipartUpload): a URL
/// query string, `k1=v1&k2=v2`, percent-encoded; a key without `=` has an
/// empty value. Checked as [`object_tagging`]; absent is no tags.
pub fn tagging_header(header: Option<&str>) -> S3Result<TagSet> {
    let Some(h) = header else {
        return Ok(TagSet::new());
    };
    let pairs = form_urlencoded::parse(h.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    checked_tags(pairs, MAX_OBJECT_TAGS)
}

/// `x-amz-tagging-directive` (CopyObject): `COPY` (the default) keeps the
/// source's tags, `REPLACE` takes `x-amz-tagging`; whether to replace.
/// Anything else is `InvalidArgument`.
pub fn tagging_directive(d: Option<&dto::TaggingDirective>) -> S3Result<bool> {
    match d.map(|d| d.as_str()) {
        None | Some(dto::TaggingDirective::COPY) => Ok(false),
        Some(dto::TaggingDirective::REPLACE) => Ok(true),
        Some(other) => Err(s3_error!(
            InvalidArgument,
            "Unknown tagging directive {other:?}: expected COPY or REPLACE"
        )),
    }
}

/// Storage classes a write may name (`x-amz-storage-class` on PutObject,
/// CopyObject, CreateMultipartUpload; S3 API reference, PutObject): the
/// classes whose objects S3 serves at once. Tessera stores every class
/// under the bucket's policy and returns the name. The archive classes
/// (`GLACIER`, `DEEP_ARCHIVE`: reads need RestoreObject first) and those of
/// other products (`OUTPOSTS`, `SNOW`, `EXPRESS_ONEZONE`) would promise
/// behaviour that is not there, so they are refused like unknown names.
pub const STORAGE_CLASSES: &[&str] = &[
    dto::StorageClass::STANDARD,
    dto::StorageClass::REDUCED_REDUNDANCY,
    dto::StorageClass::STANDARD_IA,
    dto::StorageClass::ONEZONE_IA,
    dto::StorageClass::INTELLIGENT_TIERING,
    dto::StorageClass::GLACIER_IR,
];

/// A write's storage class: `None` for `STANDARD` or absent, the name for
/// another of [`STORAGE_CLASSES`], `InvalidStorageClass` otherwise.
pub fn storage_class(class: Option<&dto::StorageClass>) -> S3Result<Option<String>> {
    match class.map(|c| c.as_str()) {
        None | Some(dto::StorageClass::STANDARD) => Ok(None),
        Some(c) if STORAGE_CLASSES.contains(&c) => Ok(Some(c.to_string())),
        Some(c) => Err(s3_error!(
            InvalidStorageClass,
            "The storage class you specified is not valid: {c}"
        )),
    }
}

/// The attributes a GetObjectAttributes request asks for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Attributes {
    pub etag: bool,
    pub checksum: bool,
    pub parts: bool,
    pub storage_class: bool,
    pub size: bool,
}

/// `x-amz-object-attributes` (GetObjectAttributes): one or more of `ETag`,
/// `Checksum`, `ObjectParts`, `StorageClass`, `ObjectSize`; none, or any
/// other name, is `InvalidArgument`.
pub fn object_attributes(names: &[dto::ObjectAttributes]) -> S3Result<Attributes> {
    let mut a = Attributes::default();
    if names.is_empty() {
        return Err(s3_error!(
            InvalidArgument,
            "x-amz-object-attributes names no attribute"
        ));
    }
    for n in names {
        // s3s passes the comma-separated header as one value or several.
        for n in n.as_str().split(',').map(str::trim) {
            match n {
                dto::ObjectAttributes::ETAG => a.etag = true,
                dto::ObjectAttributes::CHECKSUM => a.checksum = true,
                dto::ObjectAttributes::OBJECT_PARTS => a.parts = true,
                dto::ObjectAttributes::STORAGE_CLASS => a.storage_class = true,
                dto::ObjectAttributes::OBJECT_SIZE => a.size = true,
                other => {
                    return Err(s3_error!(
                        InvalidArgument,
                        "Invalid attribute name specified: {other:?}"
                    ));
                }
            }
        }
    }
    Ok(a)
}

/// A CORS configuration (S3 API reference, PutBucketCors; User Guide,
/// "Elements of a CORS configuration"): 1 to [`MAX_CORS_RULES`] rules
/// (none or more is `MalformedXML`), each with at least one origin and
/// method (`MalformedXML`), methods among GET, PUT, HEAD, POST, DELETE
/// (`InvalidRequest`), at most one `*` in each origin and allowed header
/// (`InvalidRequest`), a non-negative `MaxAgeSeconds` (`MalformedXML`),
/// an ID of at most 255 characters (`InvalidArgument`).
pub fn cors(config: dto::CORSConfiguration) -> S3Result<Vec<CorsRule>> {
    let rules = config.cors_rules;
    if rules.is_empty() || rules.len() > MAX_CORS_RULES {
        return Err(s3_error!(
            MalformedXML,
            "a CORS configuration has 1 to {MAX_CORS_RULES} rules, not {}",
            rules.len()
        ));
    }
    rules
        .into_iter()
        .map(|r| {
            if r.allowed_origins.is_empty() || r.allowed_methods.is_empty() {
                return Err(s3_error!(
                    MalformedXML,
                    "each CORSRule needs an AllowedOrigin and an AllowedMethod"
                ));
            }
            if let Some(m) = r
                .allowed_methods
                .iter()
                .find(|m| !crate::cors::CORS_METHODS.contains(&m.as_str()))
            {
                return Err(s3_error!(
                    InvalidRequest,
                    "Found unsupported HTTP method in CORS config. Unsupported method is {m}"
                ));
            }
            for o in &r.allowed_origins {
                if o.matches('*').count() > 1 {
                    return Err(s3_error!(
                        InvalidRequest,
                        "AllowedOrigin \"{o}\" can not have more than one wildcard."
                    ));
                }
            }
            let headers = r.allowed_headers.unwrap_or_default();
            for h in &headers {
                if h.matches('*').count() > 1 {
                    return Err(s3_error!(
                        InvalidRequest,
                        "AllowedHeader \"{h}\" can not have more than one wildcard."
                    ));
                }
            }
            if r.max_age_seconds.is_some_and(|a| a < 0) {
                return Err(s3_error!(
                    MalformedXML,
                    "MaxAgeSeconds must not be negative"
                ));
            }
            if r.id.as_ref().is_some_and(|id| id.chars().count() > 255) {
                return Err(s3_error!(
                    InvalidArgument,
                    "a CORSRule ID has at most 255 characters"
                ));
            }
            Ok(CorsRule {
                id: r.id,
                allowed_origins: r.allowed_origins,
                allowed_methods: r.allowed_methods,
                allowed_headers: headers,
                expose_headers: r.expose_headers.unwrap_or_default(),
                max_age_seconds: r.max_age_seconds,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_bucket_is_legacy_ok_only_for_its_owner_in_us_east_1() {
        let code = |r: S3Result<()>| r.err().map(|e| e.code().as_str().to_string());
        assert_eq!(code(existing_bucket("b", true, None)), None);
        assert_eq!(code(existing_bucket("b", true, Some("us-east-1"))), None);
        assert_eq!(
            code(existing_bucket("b", true, Some("eu-west-1"))).as_deref(),
            Some("BucketAlreadyOwnedByYou")
        );
        for region in [None, Some("us-east-1"), Some("eu-west-1")] {
            assert_eq!(
                code(existing_bucket("b", false, region)).as_deref(),
                Some("BucketAlreadyExists")
            );
        }
    }
    use s3s::S3ErrorCode;

    fn code<T: std::fmt::Debug>(r: S3Result<T>) -> S3ErrorCode {
        r.unwrap_err().code().clone()
    }

    fn cors_rule(origins: &[&str], methods: &[&str], headers: &[&str]) -> dto::CORSRule {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        dto::CORSRule {
            allowed_origins: strings(origins),
            allowed_methods: strings(methods),
            allowed_headers: (!headers.is_empty()).then(|| strings(headers)),
            expose_headers: None,
            id: None,
            max_age_seconds: None,
        }
    }

    fn cors_of(rules: Vec<dto::CORSRule>) -> S3Result<Vec<CorsRule>> {
        cors(dto::CORSConfiguration { cors_rules: rules })
    }

    #[test]
    fn cors_configurations_keep_s3s_rules() {
        let ok = cors_rule(&["https://*.example"], &["GET", "PUT"], &["x-amz-*"]);
        let got = cors_of(vec![ok.clone()]).unwrap();
        assert_eq!(got[0].allowed_headers, vec!["x-amz-*".to_string()]);
        assert!(cors_of(vec![ok.clone(); MAX_CORS_RULES]).is_ok());
        assert_eq!(code(cors_of(vec![])), S3ErrorCode::MalformedXML);
        assert_eq!(
            code(cors_of(vec![ok.clone(); MAX_CORS_RULES + 1])),
            S3ErrorCode::MalformedXML
        );
        for bad in [
            cors_rule(&["*"], &["PATCH"], &[]),
            cors_rule(&["*"], &["get"], &[]),
            cors_rule(&["https://*.*.example"], &["GET"], &[]),
            cors_rule(&["*"], &["GET"], &["*a*"]),
        ] {
            assert_eq!(code(cors_of(vec![bad])), S3ErrorCode::InvalidRequest);
        }
        assert_eq!(
            code(cors_of(vec![cors_rule(&[], &["GET"], &[])])),
            S3ErrorCode::MalformedXML
        );
        let mut negative = ok;
        negative.max_age_seconds = Some(-1);
        assert_eq!(code(cors_of(vec![negative])), S3ErrorCode::MalformedXML);
    }

    #[test]
    fn keys_and_metadata_have_s3s_limits() {
        assert!(key(&"k".repeat(MAX_KEY_BYTES)).is_ok());
        assert_eq!(
            code(key(&"k".repeat(MAX_KEY_BYTES + 1))),
            S3ErrorCode::KeyTooLongError
        );
        // Bytes, not characters: 512 two-byte characters fit, 513 do not.
        assert!(key(&"é".repeat(512)).is_ok());
        assert!(key(&"é".repeat(513)).is_err());
        let mut m = dto::Metadata::default();
        m.insert("a".into(), "v".repeat(MAX_USER_METADATA - 1));
        assert!(metadata(Some(&m)).is_ok());
        m.insert("b".into(), String::new());
        assert_eq!(code(metadata(Some(&m))), S3ErrorCode::MetadataTooLarge);
    }

    #[test]
    fn part_numbers_and_sizes() {
        assert_eq!(part_number(1).unwrap(), 1);
        assert_eq!(part_number(10_000).unwrap(), 10_000);
        for bad in [0, -1, 10_001, i32::MAX] {
            assert_eq!(code(part_number(bad)), S3ErrorCode::InvalidArgument);
        }
        assert!(body_length(Some(5 << 30)).is_ok());
        assert!(body_length(None).is_ok());
        assert_eq!(
            code(body_length(Some((5 << 30) + 1))),
            S3ErrorCode::EntityTooLarge
        );
        assert!(copy_length(5 << 30).is_ok());
        assert_eq!(
            code(copy_length((5 << 30) + 1)),
            S3ErrorCode::InvalidRequest
        );
        assert_eq!(
            code(copy_changes_something(true, false)),
            S3ErrorCode::InvalidRequest
        );
        assert!(copy_changes_something(true, true).is_ok());
        assert!(copy_changes_something(false, false).is_ok());
    }

    #[test]
    fn delete_objects_names_one_to_a_thousand_keys() {
        assert!(delete_keys(1).is_ok());
        assert!(delete_keys(1000).is_ok());
        assert_eq!(code(delete_keys(1001)), S3ErrorCode::MalformedXML);
        assert_eq!(code(delete_keys(0)), S3ErrorCode::MalformedXML);
    }

    #[test]
    fn completions_list_parts_in_order() {
        let part = |n: i32| dto::CompletedPart {
            part_number: Some(n),
            e_tag: Some(dto::ETag::Strong(format!("e{n}"))),
            ..Default::default()
        };
        assert_eq!(
            completed_parts(Some(vec![part(1), part(3)])).unwrap(),
            vec![(1, "e1".to_string()), (3, "e3".to_string())]
        );
        assert_eq!(code(completed_parts(None)), S3ErrorCode::MalformedXML);
        assert_eq!(
            code(completed_parts(Some(vec![]))),
            S3ErrorCode::MalformedXML
        );
        let no_etag = dto::CompletedPart {
            part_number: Some(1),
            ..Default::default()
        };
        assert_eq!(
            code(completed_parts(Some(vec![no_etag]))),
            S3ErrorCode::MalformedXML
        );
        assert_eq!(
            code(completed_parts(Some(vec![part(2), part(1)]))),
            S3ErrorCode::InvalidPartOrder
        );
        assert_eq!(
            code(completed_parts(Some(vec![part(1), part(1)]))),
            S3ErrorCode::InvalidPartOrder
        );
        assert_eq!(
            code(completed_parts(Some(vec![part(0)]))),
            S3ErrorCode::InvalidArgument
        );
    }

    #[test]
    fn write_conditions() {
        let etag = ETagCondition::ETag(dto::ETag::Strong("abc".into()));
        let any = ETagCondition::Any;
        assert_eq!(write_condition(None, None).unwrap(), WriteCondition::Any);
        assert_eq!(
            write_condition(None, Some(&any)).unwrap(),
            WriteCondition::Absent
        );
        assert_eq!(
            write_condition(Some(&any), None).unwrap(),
            WriteCondition::Exists
        );
        assert_eq!(
            write_condition(Some(&etag), None).unwrap(),
            WriteCondition::ETag("abc".into())
        );
        assert_eq!(
            code(write_condition(None, Some(&etag))),
            S3ErrorCode::NotImplemented
        );
        assert_eq!(
            code(write_condition(Some(&etag), Some(&any))),
            S3ErrorCode::NotImplemented
        );
    }

    fn tagging(pairs: &[(&str, Option<&str>)]) -> dto::Tagging {
        dto::Tagging {
            tag_set: pairs
                .iter()
                .map(|(k, v)| dto::Tag {
                    key: Some(k.to_string()),
                    value: v.map(str::to_string),
                })
                .collect(),
        }
    }

    fn numbered(n: usize) -> Vec<(String, Option<&'static str>)> {
        (0..n).map(|i| (format!("k{i}"), Some("v"))).collect()
    }

    fn as_refs<'a>(
        v: &'a [(String, Option<&'static str>)],
    ) -> Vec<(&'a str, Option<&'static str>)> {
        v.iter().map(|(k, x)| (k.as_str(), *x)).collect()
    }

    #[test]
    fn tag_sets_keep_s3s_limits() {
        let ok = object_tagging(tagging(&[("a", Some("1")), ("b", Some(""))])).unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok["b"], "");
        let ten = numbered(10);
        assert_eq!(object_tagging(tagging(&as_refs(&ten))).unwrap().len(), 10);
        let eleven = numbered(11);
        assert_eq!(
            code(object_tagging(tagging(&as_refs(&eleven)))),
            S3ErrorCode::InvalidTag
        );
        // A bucket takes up to 50.
        assert!(bucket_tagging(tagging(&as_refs(&eleven))).is_ok());
        let fifty = numbered(50);
        assert!(bucket_tagging(tagging(&as_refs(&fifty))).is_ok());
        let fifty_one = numbered(51);
        assert_eq!(
            code(bucket_tagging(tagging(&as_refs(&fifty_one)))),
            S3ErrorCode::InvalidTag
        );
        assert_eq!(
            code(object_tagging(tagging(&[
                ("a", Some("1")),
                ("a", Some("2"))
            ]))),
            S3ErrorCode::InvalidTag
        );
        // Characters, not bytes.
        let key = "é".repeat(128);
        let value = "é".repeat(256);
        assert!(object_tagging(tagging(&[(key.as_str(), Some(value.as_str()))])).is_ok());
        let long_key = "k".repeat(129);
        let long_value = "v".repeat(257);
        assert_eq!(
            code(object_tagging(tagging(&[(long_key.as_str(), Some("v"))]))),
            S3ErrorCode::InvalidTag
        );
        assert_eq!(
            code(object_tagging(tagging(&[("k", Some(long_value.as_str()))]))),
            S3ErrorCode::InvalidTag
        );
        assert_eq!(
            code(object_tagging(tagging(&[("", Some("v"))]))),
            S3ErrorCode::InvalidTag
        );
        assert_eq!(
            code(object_tagging(tagging(&[("aws:x", Some("v"))]))),
            S3ErrorCode::InvalidTag
        );
        assert_eq!(
            code(object_tagging(tagging(&[("k", None)]))),
            S3ErrorCode::MalformedXML
        );
    }

    #[test]
    fn tagging_headers_are_query_strings() {
        assert!(tagging_header(None).unwrap().is_empty());
        let t = tagging_header(Some("a=1&b=&c&sp%20ace=x%26y")).unwrap();
        assert_eq!(t["a"], "1");
        assert_eq!(t["b"], "");
        assert_eq!(t["c"], "");
        assert_eq!(t["sp ace"], "x&y");
        assert_eq!(
            code(tagging_header(Some("a=1&a=2"))),
            S3ErrorCode::InvalidTag
        );
        let eleven: Vec<String> = (0..11).map(|i| format!("k{i}=v")).collect();
        assert_eq!(
            code(tagging_header(Some(eleven.join("&").as_str()))),
            S3ErrorCode::InvalidTag
        );
        assert!(!tagging_directive(None).unwrap());
        let d = |s: &'static str| dto::TaggingDirective::from_static(s);
        assert!(!tagging_directive(Some(&d("COPY"))).unwrap());
        assert!(tagging_directive(Some(&d("REPLACE"))).unwrap());
        assert_eq!(
            code(tagging_directive(Some(&d("MOVE")))),
            S3ErrorCode::InvalidArgument
        );
    }

    #[test]
    fn object_attribute_names() {
        let n = |s: &'static str| dto::ObjectAttributes::from_static(s);
        let a = object_attributes(&[n("ETag"), n("ObjectSize,StorageClass")]).unwrap();
        assert!(a.etag && a.size && a.storage_class && !a.parts && !a.checksum);
        assert_eq!(
            code(object_attributes(&[n("Size")])),
            S3ErrorCode::InvalidArgument
        );
        assert_eq!(code(object_attributes(&[])), S3ErrorCode::InvalidArgument);
    }

    #[test]
    fn storage_classes() {
        let c = |s: &'static str| dto::StorageClass::from_static(s);
        assert_eq!(storage_class(None).unwrap(), None);
        assert_eq!(storage_class(Some(&c("STANDARD"))).unwrap(), None);
        assert_eq!(
            storage_class(Some(&c("STANDARD_IA"))).unwrap().as_deref(),
            Some("STANDARD_IA")
        );
        for bad in ["GLACIER", "DEEP_ARCHIVE", "standard", "FOO", ""] {
            assert_eq!(
                code(storage_class(Some(&c(bad)))),
                S3ErrorCode::InvalidStorageClass,
                "{bad}"
            );
        }
    }

    #[test]
    fn page_sizes() {
        assert_eq!(page_size("max-keys", None).unwrap(), 1000);
        assert_eq!(page_size("max-keys", Some(0)).unwrap(), 0);
        assert_eq!(page_size("max-keys", Some(5000)).unwrap(), 1000);
        assert_eq!(
            code(page_size("max-keys", Some(-1))),
            S3ErrorCode::InvalidArgument
        );
        assert_eq!(part_number_marker(None).unwrap(), 0);
        assert_eq!(
            code(part_number_marker(Some(-1))),
            S3ErrorCode::InvalidArgument
        );
    }
}
