//! Bucket access settings (issue 15): CORS rules, the bucket policy, the
//! PublicAccessBlock and the canned ACL, one record per bucket that has
//! any, dropped with the bucket. Meta keeps them and their size limits
//! (`access_change_fault`); what they mean (matching origins, evaluating
//! policies) is the S3 gateway's, which checks S3's finer rules first.

use tessera_proto::{AccessChange, BucketAccess, access_change_fault};

use super::buckets::BucketQueries;
use super::tables::BUCKET_ACCESS;
use super::{Applied, Refused, Txn, refuse};
use crate::MetaError;
use crate::store::Read;

/// Applies one change to `bucket`'s settings; a bucket left with none has
/// no record. Errors: `NoSuchBucket`, `BadRequest` beyond the limits.
pub(super) fn set_bucket_access(
    tx: &mut Txn<'_, '_>,
    bucket: &str,
    change: &AccessChange,
) -> Result<Applied, MetaError> {
    tx.bucket(bucket)?;
    if let Some(fault) = access_change_fault(change) {
        return Err(refuse(Refused::BadRequest, fault));
    }
    let name = bucket.to_string();
    let mut access = tx.get(BUCKET_ACCESS, &name)?.unwrap_or_default();
    access.apply(change);
    if access.is_empty() {
        tx.delete(BUCKET_ACCESS, &name)?;
    } else {
        tx.put(BUCKET_ACCESS, &name, &access)?;
    }
    Ok(Applied::Done)
}

/// Queries of bucket access settings.
pub trait BucketAccessQueries: Read {
    /// A bucket's settings (all empty when it has none). Errors:
    /// `NoSuchBucket`.
    fn bucket_access(&self, bucket: &str) -> Result<BucketAccess, MetaError> {
        self.bucket(bucket)?;
        Ok(self
            .get(BUCKET_ACCESS, &bucket.to_string())?
            .unwrap_or_default())
    }
}

impl<R: Read + ?Sized> BucketAccessQueries for R {}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;
    use tessera_proto::{
        Acl, AclGrant, AclPermission, CorsRule, Grantee, MAX_ACL_GRANTS, MAX_CORS_RULES,
        MAX_POLICY_BYTES, PublicAccessBlock,
    };

    fn set(bucket: &str, change: AccessChange) -> Command {
        Command::SetBucketAccess {
            bucket: bucket.into(),
            change,
        }
    }

    fn rule(origin: &str) -> CorsRule {
        CorsRule {
            allowed_origins: vec![origin.into()],
            allowed_methods: vec!["GET".into()],
            ..Default::default()
        }
    }

    #[test]
    fn settings_change_one_at_a_time_and_go_with_the_bucket() {
        let t = Kit::new();
        t.bucket("bkt");
        assert!(t.sm.read().bucket_access("bkt").unwrap().is_empty());
        t.ok(set("bkt", AccessChange::Cors(vec![rule("https://a")])));
        t.ok(set("bkt", AccessChange::Policy(Some("{}".into()))));
        let pab = PublicAccessBlock {
            block_public_policy: true,
            ..Default::default()
        };
        t.ok(set("bkt", AccessChange::PublicAccessBlock(Some(pab))));
        let public_read = Acl {
            grants: vec![AclGrant {
                grantee: Grantee::AllUsers,
                permission: AclPermission::Read,
            }],
        };
        t.ok(set("bkt", AccessChange::Acl(Some(public_read.clone()))));
        let aes = tessera_proto::BucketEncryption {
            algorithm: "AES256".into(),
            ..Default::default()
        };
        t.ok(set("bkt", AccessChange::Encryption(Some(aes.clone()))));
        let got = t.sm.read().bucket_access("bkt").unwrap();
        assert_eq!(
            got,
            BucketAccess {
                cors: vec![rule("https://a")],
                policy: Some("{}".into()),
                public_access_block: Some(pab),
                acl: Some(public_read),
                encryption: Some(aes),
            }
        );
        // Removing one keeps the others.
        t.ok(set("bkt", AccessChange::Cors(vec![])));
        let got = t.sm.read().bucket_access("bkt").unwrap();
        assert!(got.cors.is_empty());
        assert_eq!(got.policy.as_deref(), Some("{}"));
        for change in [
            AccessChange::Policy(None),
            AccessChange::PublicAccessBlock(None),
            AccessChange::Acl(None),
            AccessChange::Encryption(None),
        ] {
            t.ok(set("bkt", change));
        }
        assert!(t.sm.read().bucket_access("bkt").unwrap().is_empty());
        // A bucket made again under the same name starts without settings.
        t.ok(set("bkt", AccessChange::Policy(Some("{}".into()))));
        t.ok(Command::DeleteBucket { name: "bkt".into() });
        assert_eq!(
            t.refused(set("bkt", AccessChange::Policy(None))),
            Refused::NoSuchBucket
        );
        t.bucket("bkt");
        assert!(t.sm.read().bucket_access("bkt").unwrap().is_empty());
    }

    #[test]
    fn settings_beyond_the_limits_are_refused_and_change_nothing() {
        let t = Kit::new();
        t.bucket("bkt");
        t.ok(set(
            "bkt",
            AccessChange::Cors(vec![rule("*"); MAX_CORS_RULES]),
        ));
        let no_method = CorsRule {
            allowed_methods: vec![],
            ..rule("*")
        };
        for bad in [
            AccessChange::Cors(vec![rule("*"); MAX_CORS_RULES + 1]),
            AccessChange::Cors(vec![no_method]),
            AccessChange::Cors(vec![CorsRule::default()]),
            AccessChange::Policy(Some(" ".repeat(MAX_POLICY_BYTES + 1))),
            AccessChange::Policy(Some(" ".into())),
            AccessChange::Acl(Some(Acl {
                grants: vec![
                    AclGrant {
                        grantee: Grantee::CanonicalUser("K".into()),
                        permission: AclPermission::Read,
                    };
                    MAX_ACL_GRANTS + 1
                ],
            })),
            AccessChange::Acl(Some(Acl {
                grants: vec![AclGrant {
                    grantee: Grantee::CanonicalUser(String::new()),
                    permission: AclPermission::Read,
                }],
            })),
        ] {
            assert_eq!(t.refused(set("bkt", bad)), Refused::BadRequest);
        }
        let got = t.sm.read().bucket_access("bkt").unwrap();
        assert_eq!(got.cors.len(), MAX_CORS_RULES);
        assert_eq!(got.policy, None);
    }
}
