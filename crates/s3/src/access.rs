//! Who may do what (issue 15; ARCHITECTURE.md, "Access evaluation"): the
//! S3 action each operation is, and the one decision that combines an
//! access key's grant on the bucket with the bucket policy, the bucket's
//! ACL, the object's ACL and the bucket's PublicAccessBlock. The decision is a pure function
//! ([`decide`]); the gateway gathers its inputs (one meta read for the
//! grant and one for the bucket's settings, made together).
//!
//! The order, as S3 evaluates a bucket owner's resources: an explicit
//! Deny in the policy refuses (except the bucket owner's key managing the
//! policy itself, so that no policy can lock the owner out, as the AWS
//! account's root user cannot be); then the key's grant allows what its
//! level covers; then a policy Allow; then a grant of the bucket's ACL or
//! of the object's; else `AccessDenied`. PublicAccessBlock's
//! `RestrictPublicBuckets` makes a public policy grant nothing to callers
//! without a grant on the bucket, and `IgnorePublicAcls` makes ACL grants
//! to AllUsers and AuthenticatedUsers grant nothing.

use s3s::S3Result;
use s3s::access::{S3Access, S3AccessContext};
use s3s::path::S3Path;
use tessera_proto::{Acl, AclPermission, Grantee, Permission, PublicAccessBlock};

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
    /// The bucket's ACL (`None`: the owner's FULL_CONTROL alone).
    pub bucket_acl: Option<&'a Acl>,
    /// The ACL of the object version the request names, when the gateway
    /// read it (only for actions an object ACL can grant,
    /// [`object_acl_may_grant`], and only when nothing else allowed).
    pub object_acl: Option<&'a Acl>,
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

/// The actions each ACL permission allows (S3 User Guide, "Access control
/// list (ACL) overview", "Mapping of ACL permissions and access policy
/// permissions"), on a bucket (READ lists its objects; WRITE creates,
/// overwrites and deletes them; the ACP permissions read and write the
/// bucket's ACL) and on an object (READ reads it; WRITE means nothing
/// there). FULL_CONTROL is all four.
fn permission_allows(permission: AclPermission, on_object: bool, action: &str) -> bool {
    let read = if on_object {
        ["s3:getobject", "s3:getobjectversion", "s3:getobjecttorrent"].as_slice()
    } else {
        [
            "s3:listbucket",
            "s3:listbucketversions",
            "s3:listbucketmultipartuploads",
        ]
        .as_slice()
    };
    let write = if on_object {
        [].as_slice()
    } else {
        [
            "s3:putobject",
            "s3:deleteobject",
            "s3:deleteobjectversion",
            "s3:abortmultipartupload",
        ]
        .as_slice()
    };
    let (read_acp, write_acp) = if on_object {
        (
            ["s3:getobjectacl", "s3:getobjectversionacl"].as_slice(),
            ["s3:putobjectacl", "s3:putobjectversionacl"].as_slice(),
        )
    } else {
        (
            ["s3:getbucketacl"].as_slice(),
            ["s3:putbucketacl"].as_slice(),
        )
    };
    let lists = match permission {
        AclPermission::Read => vec![read],
        AclPermission::Write => vec![write],
        AclPermission::ReadAcp => vec![read_acp],
        AclPermission::WriteAcp => vec![write_acp],
        AclPermission::FullControl => vec![read, write, read_acp, write_acp],
    };
    lists.iter().any(|l| l.contains(&action))
}

/// Whether an object's ACL could allow `action` (its READ, READ_ACP and
/// WRITE_ACP actions): only then is it worth reading the object before
/// the decision.
pub(crate) fn object_acl_may_grant(action: &str) -> bool {
    permission_allows(
        AclPermission::FullControl,
        true,
        &action.to_ascii_lowercase(),
    )
}

/// Whether `acl` lets the caller (`principal`: its key id; `None`:
/// anonymous) take `action` on the bucket or (`on_object`) the object.
/// `ignore_public`: grants to AllUsers and AuthenticatedUsers count for
/// nothing (PublicAccessBlock's `IgnorePublicAcls`). LogDelivery grants
/// nothing here.
fn acl_allows(
    acl: &Acl,
    on_object: bool,
    action: &str,
    principal: Option<&str>,
    ignore_public: bool,
) -> bool {
    let action = action.to_ascii_lowercase();
    acl.grants.iter().any(|g| {
        let to_caller = match &g.grantee {
            Grantee::CanonicalUser(id) => principal == Some(id.as_str()),
            Grantee::AllUsers => !ignore_public,
            Grantee::AuthenticatedUsers => !ignore_public && principal.is_some(),
            Grantee::LogDelivery => false,
        };
        to_caller && permission_allows(g.permission, on_object, &action)
    })
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
    let principal = f.request.principal.as_deref();
    let by = |acl: Option<&Acl>, on_object| {
        acl.is_some_and(|acl| {
            acl_allows(
                acl,
                on_object,
                &f.request.action,
                principal,
                pab.ignore_public_acls,
            )
        })
    };
    by(f.bucket_acl, false) || by(f.object_acl, true)
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
            bucket_acl: None,
            object_acl: None,
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

    fn acl(grants: &[(Grantee, AclPermission)]) -> Acl {
        Acl {
            grants: grants
                .iter()
                .map(|(grantee, permission)| tessera_proto::AclGrant {
                    grantee: grantee.clone(),
                    permission: *permission,
                })
                .collect(),
        }
    }

    #[test]
    fn acls_and_the_public_access_block() {
        use AclPermission::*;
        use Grantee::*;
        use Permission::{Owner, Read as R, Write as W};
        let anon_list = request(None, "s3:ListBucket", None);
        let anon_read = request(None, "s3:GetObject", Some("a"));
        let anon_put = request(None, "s3:PutObject", Some("a"));
        let anon_delete = request(None, "s3:DeleteObject", Some("a"));
        let anon_policy = request(None, "s3:PutBucketPolicy", None);
        let signed_list = request(Some("K"), "s3:ListBucketVersions", None);
        let signed_read = request(Some("K"), "s3:GetObject", Some("a"));
        let public_read = acl(&[(AllUsers, Read)]);
        let public_read_write = acl(&[(AllUsers, Read), (AllUsers, Write)]);
        let authenticated_read = acl(&[(AuthenticatedUsers, Read)]);
        let private = acl(&[(CanonicalUser("OWNER".into()), FullControl)]);
        let with_acl = |acl: &Acl, r: &PolicyRequest, need, pab: Option<PublicAccessBlock>| {
            decide(&AccessFacts {
                bucket_acl: Some(acl),
                public_access_block: pab,
                ..facts(None, need, None, r)
            })
        };
        assert!(with_acl(&public_read, &anon_list, R, None));
        // A bucket's ACL lists objects; it never reads them.
        assert!(!with_acl(&public_read, &anon_read, R, None));
        assert!(!with_acl(&public_read_write, &anon_read, R, None));
        assert!(!with_acl(&public_read, &anon_put, W, None));
        assert!(with_acl(&public_read_write, &anon_put, W, None));
        assert!(with_acl(&public_read_write, &anon_delete, W, None));
        assert!(!with_acl(&public_read_write, &anon_policy, Owner, None));
        assert!(!with_acl(&authenticated_read, &anon_list, R, None));
        assert!(with_acl(&authenticated_read, &signed_list, R, None));
        assert!(!with_acl(&authenticated_read, &signed_read, R, None));
        assert!(!with_acl(&private, &anon_list, R, None));
        assert!(!with_acl(&private, &signed_list, R, None));
        let ignore = PublicAccessBlock {
            ignore_public_acls: true,
            ..Default::default()
        };
        assert!(!with_acl(&public_read, &anon_list, R, Some(ignore)));
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
                ..facts(grant, R, Some(&p), r)
            })
        };
        assert!(public_policy(&anon_read, None, None));
        assert!(!public_policy(&anon_read, None, Some(restrict)));
        assert!(!public_policy(&signed_read, None, Some(restrict)));
        // The bucket's own keys keep their grants.
        assert!(public_policy(&signed_read, Some(R), Some(restrict)));
    }

    #[test]
    fn named_grants_on_buckets_and_objects() {
        use AclPermission::*;
        use Grantee::*;
        use Permission::{Owner, Read as R, Write as W};
        let k = || CanonicalUser("K".into());
        let on_bucket = |acl: &Acl, r: &PolicyRequest, need| {
            decide(&AccessFacts {
                bucket_acl: Some(acl),
                ..facts(None, need, None, r)
            })
        };
        let on_object = |acl: &Acl, r: &PolicyRequest, pab: Option<PublicAccessBlock>| {
            decide(&AccessFacts {
                object_acl: Some(acl),
                public_access_block: pab,
                ..facts(None, R, None, r)
            })
        };
        let by = |who: Option<&str>, action: &str, key: Option<&str>| request(who, action, key);
        // A bucket grant to a key by id: that key only, that permission only.
        let read = acl(&[(k(), Read)]);
        assert!(on_bucket(&read, &by(Some("K"), "s3:ListBucket", None), R));
        assert!(!on_bucket(&read, &by(Some("J"), "s3:ListBucket", None), R));
        assert!(!on_bucket(&read, &by(None, "s3:ListBucket", None), R));
        assert!(!on_bucket(
            &read,
            &by(Some("K"), "s3:PutObject", Some("a")),
            W
        ));
        assert!(!on_bucket(
            &read,
            &by(Some("K"), "s3:GetBucketAcl", None),
            Owner
        ));
        let write = acl(&[(k(), Write)]);
        assert!(on_bucket(
            &write,
            &by(Some("K"), "s3:PutObject", Some("a")),
            W
        ));
        assert!(on_bucket(
            &write,
            &by(Some("K"), "s3:DeleteObject", Some("a")),
            W
        ));
        assert!(!on_bucket(
            &write,
            &by(Some("K"), "s3:GetObject", Some("a")),
            R
        ));
        let acp = acl(&[(k(), ReadAcp), (k(), WriteAcp)]);
        assert!(on_bucket(
            &acp,
            &by(Some("K"), "s3:GetBucketAcl", None),
            Owner
        ));
        assert!(on_bucket(
            &acp,
            &by(Some("K"), "s3:PutBucketAcl", None),
            Owner
        ));
        assert!(!on_bucket(
            &acp,
            &by(Some("K"), "s3:PutBucketPolicy", None),
            Owner
        ));
        let full = acl(&[(k(), FullControl)]);
        for action in [
            "s3:ListBucket",
            "s3:PutObject",
            "s3:GetBucketAcl",
            "s3:PutBucketAcl",
        ] {
            assert!(
                on_bucket(&full, &by(Some("K"), action, None), Owner),
                "{action}"
            );
        }
        assert!(!on_bucket(
            &full,
            &by(Some("K"), "s3:DeleteBucket", None),
            Owner
        ));
        // An object's ACL: READ reads it (any version), the ACP
        // permissions its ACL; WRITE means nothing on an object.
        let get = by(Some("K"), "s3:GetObject", Some("a"));
        let get_version = by(Some("K"), "s3:GetObjectVersion", Some("a"));
        assert!(on_object(&acl(&[(k(), Read)]), &get, None));
        assert!(on_object(&acl(&[(k(), Read)]), &get_version, None));
        assert!(!on_object(&acl(&[(k(), Write)]), &get, None));
        assert!(!on_object(
            &acl(&[(k(), Read)]),
            &by(Some("K"), "s3:PutObjectAcl", Some("a")),
            None
        ));
        assert!(on_object(
            &acl(&[(k(), WriteAcp)]),
            &by(Some("K"), "s3:PutObjectAcl", Some("a")),
            None
        ));
        assert!(on_object(
            &acl(&[(k(), ReadAcp)]),
            &by(Some("K"), "s3:GetObjectVersionAcl", Some("a")),
            None
        ));
        assert!(on_object(
            &acl(&[(k(), FullControl)]),
            &by(Some("K"), "s3:GetObjectAcl", Some("a")),
            None
        ));
        assert!(!on_object(
            &acl(&[(k(), FullControl)]),
            &by(Some("K"), "s3:DeleteObject", Some("a")),
            None
        ));
        // Public object ACLs, and IgnorePublicAcls voiding them (not the
        // named grants).
        let public = acl(&[(AllUsers, Read)]);
        let anon_get = by(None, "s3:GetObject", Some("a"));
        assert!(on_object(&public, &anon_get, None));
        assert!(!on_object(
            &acl(&[(AuthenticatedUsers, Read)]),
            &anon_get,
            None
        ));
        assert!(on_object(&acl(&[(AuthenticatedUsers, Read)]), &get, None));
        assert!(!on_object(&acl(&[(LogDelivery, Read)]), &get, None));
        let ignore = PublicAccessBlock {
            ignore_public_acls: true,
            ..Default::default()
        };
        assert!(!on_object(&public, &anon_get, Some(ignore)));
        assert!(on_object(&acl(&[(k(), Read)]), &get, Some(ignore)));
        // A policy's Deny still wins over any ACL.
        let p = policy(
            serde_json::json!({"Statement": {"Effect": "Deny", "Principal": "*",
            "Action": "s3:GetObject", "Resource": "arn:aws:s3:::bkt/*"}}),
        );
        assert!(!decide(&AccessFacts {
            object_acl: Some(&public),
            ..facts(None, R, Some(&p), &anon_get)
        }));
        assert!(object_acl_may_grant("s3:GetObject"));
        assert!(object_acl_may_grant("s3:PutObjectVersionAcl"));
        assert!(!object_acl_may_grant("s3:PutObject"));
        assert!(!object_acl_may_grant("s3:ListBucket"));
    }
}
