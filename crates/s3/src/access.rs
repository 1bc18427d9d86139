//! Who may do what (issue 15; ARCHITECTURE.md, "Access evaluation"): the
//! S3 action each operation is, and the one decision that combines an
//! access key's grant on the bucket with the bucket policy, the bucket's
//! canned ACL and its PublicAccessBlock. The decision is a pure function
//! ([`decide`]); the gateway gathers its inputs (one meta read for the
//! grant and one for the bucket's settings, made together).
//!
//! The order, as S3 evaluates a bucket owner's resources: an explicit
//! Deny in the policy refuses (except the bucket owner's key managing the
//! policy itself, so that no policy can lock the owner out, as the AWS
//! account's root user cannot be); then the key's grant allows what its
//! level covers; then a policy Allow; then a public ACL; else
//! `AccessDenied`. PublicAccessBlock's `RestrictPublicBuckets` makes a
//! public policy grant nothing to callers without a grant on the bucket,
//! and `IgnorePublicAcls` makes public ACLs grant nothing.

use s3s::S3Result;
use s3s::access::{S3Access, S3AccessContext};
use s3s::path::S3Path;
use tessera_proto::{CannedAcl, Permission, PublicAccessBlock};

use crate::policy::{BucketPolicy, PolicyDecision, PolicyRequest};

/// What the access hook learns of a request before the operation runs:
/// its S3 action and the object key it names, if any.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub action: String,
    pub key: Option<String>,
}

/// The S3 action an operation needs (S3 User Guide, "Policy actions for
/// Amazon S3"), `versioned` when the request names a `versionId`.
pub(crate) fn action_of(op: &str, versioned: bool) -> String {
    let v = |plain: &str, version: &str| if versioned { version } else { plain }.to_string();
    match op {
        "GetObject" | "HeadObject" => v("s3:GetObject", "s3:GetObjectVersion"),
        "GetObjectAttributes" => v("s3:GetObjectAttributes", "s3:GetObjectVersionAttributes"),
        "DeleteObject" => v("s3:DeleteObject", "s3:DeleteObjectVersion"),
        "GetObjectTagging" => v("s3:GetObjectTagging", "s3:GetObjectVersionTagging"),
        "PutObjectTagging" => v("s3:PutObjectTagging", "s3:PutObjectVersionTagging"),
        "DeleteObjectTagging" => v("s3:DeleteObjectTagging", "s3:DeleteObjectVersionTagging"),
        "GetObjectAcl" => v("s3:GetObjectAcl", "s3:GetObjectVersionAcl"),
        "PutObjectAcl" => v("s3:PutObjectAcl", "s3:PutObjectVersionAcl"),
        "PutObject"
        | "PostObject"
        | "CopyObject"
        | "CreateMultipartUpload"
        | "UploadPart"
        | "UploadPartCopy"
        | "CompleteMultipartUpload" => "s3:PutObject".into(),
        "DeleteObjects" => "s3:DeleteObject".into(),
        "ListParts" => "s3:ListMultipartUploadParts".into(),
        "ListObjects" | "ListObjectsV2" | "HeadBucket" => "s3:ListBucket".into(),
        "ListObjectVersions" => "s3:ListBucketVersions".into(),
        "ListMultipartUploads" => "s3:ListBucketMultipartUploads".into(),
        "ListBuckets" => "s3:ListAllMyBuckets".into(),
        "PutBucketCors" | "DeleteBucketCors" => "s3:PutBucketCORS".into(),
        "GetBucketCors" => "s3:GetBucketCORS".into(),
        "DeleteBucketTagging" => "s3:PutBucketTagging".into(),
        "PutPublicAccessBlock" | "DeletePublicAccessBlock" => {
            "s3:PutBucketPublicAccessBlock".into()
        }
        "GetPublicAccessBlock" => "s3:GetBucketPublicAccessBlock".into(),
        "PutBucketEncryption" | "DeleteBucketEncryption" => "s3:PutEncryptionConfiguration".into(),
        "GetBucketEncryption" => "s3:GetEncryptionConfiguration".into(),
        "PutObjectLockConfiguration" => "s3:PutBucketObjectLockConfiguration".into(),
        "GetObjectLockConfiguration" => "s3:GetBucketObjectLockConfiguration".into(),
        "PutBucketLifecycleConfiguration" | "DeleteBucketLifecycle" => {
            "s3:PutLifecycleConfiguration".into()
        }
        "GetBucketLifecycleConfiguration" => "s3:GetLifecycleConfiguration".into(),
        // The rest are named as their operation (PutBucketPolicy,
        // GetBucketVersioning, DeleteBucket, GetBucketAcl...).
        other => format!("s3:{other}"),
    }
}

/// The ARN a policy's `Resource` matches for a bucket or an object.
pub(crate) fn resource_of(bucket: &str, key: Option<&str>) -> String {
    match key {
        Some(k) => format!("arn:aws:s3:::{bucket}/{k}"),
        None => format!("arn:aws:s3:::{bucket}"),
    }
}

/// s3s's access hook: lets unsigned requests through to the operations
/// (which decide with the bucket's policy and ACL) and records each
/// request's [`Target`].
pub(crate) struct GatewayAccess;

#[async_trait::async_trait]
impl S3Access for GatewayAccess {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let versioned = cx
            .uri()
            .query()
            .is_some_and(|q| form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "versionId"));
        let key = match cx.s3_path() {
            S3Path::Object { key, .. } => Some(key.to_string()),
            _ => None,
        };
        let target = Target {
            action: action_of(cx.s3_op().name(), versioned),
            key,
        };
        cx.extensions_mut().insert(target);
        Ok(())
    }
}

/// Everything the decision looks at, as plain data.
#[derive(Debug, Clone)]
pub(crate) struct AccessFacts<'a> {
    /// The caller's grant on the bucket (`None`: none, or anonymous).
    pub grant: Option<Permission>,
    /// The grant level the operation needs without a policy.
    pub need: Permission,
    pub policy: Option<&'a BucketPolicy>,
    pub acl: Option<CannedAcl>,
    pub public_access_block: Option<PublicAccessBlock>,
    /// The request as the policy sees it (principal, action, resource,
    /// condition keys).
    pub request: &'a PolicyRequest,
}

/// Policy actions the bucket's owner key may always take, whatever the
/// policy denies: otherwise a policy could lock everyone out for good.
const OWNER_KEEPS: [&str; 3] = [
    "s3:getbucketpolicy",
    "s3:putbucketpolicy",
    "s3:deletebucketpolicy",
];

/// Whether a bucket's canned ACL lets a `signed` or anonymous caller take
/// `action` (S3 User Guide, "Access control list (ACL) overview": READ on
/// a bucket lists its objects, WRITE creates, overwrites and deletes
/// them; "Canned ACL": public-read grants READ to everyone,
/// public-read-write READ and WRITE, authenticated-read READ to any
/// signed caller). Reading an object is its own ACL's to grant, and
/// objects here are always private: a bucket ACL never lets anyone read
/// objects.
fn acl_allows(acl: CannedAcl, action: &str, signed: bool) -> bool {
    let action = action.to_ascii_lowercase();
    let read = matches!(
        action.as_str(),
        "s3:listbucket" | "s3:listbucketversions" | "s3:listbucketmultipartuploads"
    );
    let write = matches!(
        action.as_str(),
        "s3:putobject" | "s3:deleteobject" | "s3:deleteobjectversion" | "s3:abortmultipartupload"
    );
    match acl {
        CannedAcl::PublicRead => read,
        CannedAcl::PublicReadWrite => read || write,
        CannedAcl::AuthenticatedRead => signed && read,
        CannedAcl::Private | CannedAcl::BucketOwnerRead | CannedAcl::BucketOwnerFullControl => {
            false
        }
    }
}

/// Whether a canned ACL grants anything to callers outside the bucket's
/// keys (what PublicAccessBlock's ACL settings are about).
pub(crate) fn acl_is_public(acl: CannedAcl) -> bool {
    matches!(
        acl,
        CannedAcl::PublicRead | CannedAcl::PublicReadWrite | CannedAcl::AuthenticatedRead
    )
}

/// The decision: see the module comment. `true` allows.
pub(crate) fn decide(f: &AccessFacts<'_>) -> bool {
    let action = f.request.action.to_ascii_lowercase();
    if f.grant == Some(Permission::Owner) && OWNER_KEEPS.contains(&action.as_str()) {
        return true;
    }
    let pab = f.public_access_block.unwrap_or_default();
    let policy = f.policy.map(|p| {
        let d = p.evaluate(f.request);
        if d == PolicyDecision::Allow
            && pab.restrict_public_buckets
            && f.grant.is_none()
            && p.is_public()
        {
            PolicyDecision::NoOpinion
        } else {
            d
        }
    });
    if policy == Some(PolicyDecision::Deny) {
        return false;
    }
    if f.grant.is_some_and(|g| g >= f.need) {
        return true;
    }
    if policy == Some(PolicyDecision::Allow) {
        return true;
    }
    match f.acl {
        Some(acl) if !(pab.ignore_public_acls && acl_is_public(acl)) => {
            acl_allows(acl, &f.request.action, f.request.principal.is_some())
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(doc: serde_json::Value) -> BucketPolicy {
        BucketPolicy::parse(&doc.to_string(), "bkt").unwrap()
    }

    fn request(principal: Option<&str>, action: &str, key: Option<&str>) -> PolicyRequest {
        PolicyRequest {
            principal: principal.map(str::to_string),
            action: action.into(),
            resource: resource_of("bkt", key),
            ..Default::default()
        }
    }

    fn facts<'a>(
        grant: Option<Permission>,
        need: Permission,
        policy: Option<&'a BucketPolicy>,
        request: &'a PolicyRequest,
    ) -> AccessFacts<'a> {
        AccessFacts {
            grant,
            need,
            policy,
            acl: None,
            public_access_block: None,
            request,
        }
    }

    #[test]
    fn actions_of_operations() {
        assert_eq!(action_of("GetObject", false), "s3:GetObject");
        assert_eq!(action_of("HeadObject", true), "s3:GetObjectVersion");
        assert_eq!(action_of("ListObjectsV2", false), "s3:ListBucket");
        assert_eq!(action_of("UploadPart", false), "s3:PutObject");
        assert_eq!(action_of("DeleteObject", true), "s3:DeleteObjectVersion");
        assert_eq!(
            action_of("GetBucketPolicyStatus", false),
            "s3:GetBucketPolicyStatus"
        );
        assert_eq!(action_of("DeleteBucketCors", false), "s3:PutBucketCORS");
        assert_eq!(resource_of("b", Some("k/x")), "arn:aws:s3:::b/k/x");
    }

    #[test]
    fn grants_alone_work_as_before() {
        let r = request(Some("K"), "s3:PutObject", Some("a"));
        assert!(decide(&facts(
            Some(Permission::Write),
            Permission::Write,
            None,
            &r
        )));
        assert!(decide(&facts(
            Some(Permission::Owner),
            Permission::Write,
            None,
            &r
        )));
        assert!(!decide(&facts(
            Some(Permission::Read),
            Permission::Write,
            None,
            &r
        )));
        assert!(!decide(&facts(None, Permission::Read, None, &r)));
        let anon = request(None, "s3:GetObject", Some("a"));
        assert!(!decide(&facts(None, Permission::Read, None, &anon)));
    }

    #[test]
    fn policy_allows_beyond_grants_and_its_deny_wins_over_them() {
        let p = policy(serde_json::json!({"Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::bkt/pub/*"},
            {"Effect": "Allow", "Principal": {"AWS": "OTHER"}, "Action": "s3:PutObject", "Resource": "arn:aws:s3:::bkt/drop/*"},
            {"Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": "arn:aws:s3:::bkt/locked/*"},
            {"Effect": "Deny", "Principal": "*", "Action": "s3:*Policy", "Resource": "arn:aws:s3:::bkt"}
        ]}));
        let anon_pub = request(None, "s3:GetObject", Some("pub/a"));
        assert!(decide(&facts(None, Permission::Read, Some(&p), &anon_pub)));
        let anon_other = request(None, "s3:GetObject", Some("other"));
        assert!(!decide(&facts(
            None,
            Permission::Read,
            Some(&p),
            &anon_other
        )));
        let other_put = request(Some("OTHER"), "s3:PutObject", Some("drop/x"));
        assert!(decide(&facts(
            None,
            Permission::Write,
            Some(&p),
            &other_put
        )));
        let other_put_elsewhere = request(Some("OTHER"), "s3:PutObject", Some("x"));
        assert!(!decide(&facts(
            None,
            Permission::Write,
            Some(&p),
            &other_put_elsewhere
        )));
        // Deny beats even the owner's grant...
        let owner_locked = request(Some("OWNER"), "s3:GetObject", Some("locked/a"));
        assert!(!decide(&facts(
            Some(Permission::Owner),
            Permission::Read,
            Some(&p),
            &owner_locked
        )));
        // ...except for managing the policy itself.
        for action in [
            "s3:GetBucketPolicy",
            "s3:PutBucketPolicy",
            "s3:DeleteBucketPolicy",
        ] {
            let r = request(Some("OWNER"), action, None);
            assert!(decide(&facts(
                Some(Permission::Owner),
                Permission::Owner,
                Some(&p),
                &r
            )));
            assert!(!decide(&facts(
                Some(Permission::Write),
                Permission::Owner,
                Some(&p),
                &r
            )));
        }
    }

    #[test]
    fn acls_and_the_public_access_block() {
        let anon_list = request(None, "s3:ListBucket", None);
        let anon_read = request(None, "s3:GetObject", Some("a"));
        let anon_put = request(None, "s3:PutObject", Some("a"));
        let anon_delete = request(None, "s3:DeleteObject", Some("a"));
        let anon_policy = request(None, "s3:PutBucketPolicy", None);
        let signed_list = request(Some("K"), "s3:ListBucketVersions", None);
        let signed_read = request(Some("K"), "s3:GetObject", Some("a"));
        let with_acl = |acl, r: &PolicyRequest, need, pab: Option<PublicAccessBlock>| {
            decide(&AccessFacts {
                acl: Some(acl),
                public_access_block: pab,
                ..facts(None, need, None, r)
            })
        };
        use CannedAcl::*;
        use Permission::*;
        assert!(with_acl(PublicRead, &anon_list, Read, None));
        // A bucket's ACL lists objects; it never reads them.
        assert!(!with_acl(PublicRead, &anon_read, Read, None));
        assert!(!with_acl(PublicReadWrite, &anon_read, Read, None));
        assert!(!with_acl(PublicRead, &anon_put, Write, None));
        assert!(with_acl(PublicReadWrite, &anon_put, Write, None));
        assert!(with_acl(PublicReadWrite, &anon_delete, Write, None));
        assert!(!with_acl(PublicReadWrite, &anon_policy, Owner, None));
        assert!(!with_acl(AuthenticatedRead, &anon_list, Read, None));
        assert!(with_acl(AuthenticatedRead, &signed_list, Read, None));
        assert!(!with_acl(AuthenticatedRead, &signed_read, Read, None));
        assert!(!with_acl(Private, &anon_list, Read, None));
        assert!(!with_acl(BucketOwnerFullControl, &signed_list, Read, None));
        let ignore = PublicAccessBlock {
            ignore_public_acls: true,
            ..Default::default()
        };
        assert!(!with_acl(PublicRead, &anon_list, Read, Some(ignore)));
        let p = policy(
            serde_json::json!({"Statement": {"Effect": "Allow", "Principal": "*",
            "Action": "s3:GetObject", "Resource": "arn:aws:s3:::bkt/*"}}),
        );
        let restrict = PublicAccessBlock {
            restrict_public_buckets: true,
            ..Default::default()
        };
        let public_policy = |r: &PolicyRequest, grant, pab| {
            decide(&AccessFacts {
                public_access_block: pab,
                ..facts(grant, Read, Some(&p), r)
            })
        };
        assert!(public_policy(&anon_read, None, None));
        assert!(!public_policy(&anon_read, None, Some(restrict)));
        assert!(!public_policy(&signed_read, None, Some(restrict)));
        // The bucket's own keys keep their grants.
        assert!(public_policy(&signed_read, Some(Read), Some(restrict)));
    }
}
