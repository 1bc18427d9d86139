//! Object Lock (S3 User Guide, "Locking objects with Object Lock"): a
//! bucket's Object Lock configuration (table `bucket_object_lock`; a bucket
//! with an entry has Object Lock, for good), each version's retention and
//! legal hold (kept in the version's `ObjectHeaders`), and the rule that no
//! locked version is ever removed.
//!
//! This module is the authority: every path that removes a version for
//! good (S3's DeleteObject with a version id, DeleteObjects, lifecycle
//! expiry, the CLI, any other client of meta) goes through
//! [`check_removal`] in the command that removes it, so no frontend can
//! forget it. The decisions themselves ([`removal_fault`],
//! [`retention_change_fault`]) are pure functions of the version's headers
//! and the command's time.

use tessera_proto::{ObjectHeaders, ObjectInfo, ObjectLockConfig, Retention};

use super::buckets::BucketQueries;
use super::tables::{BUCKET_LOCK, BUCKET_VERSIONING};
use super::versions::{self, VersionQueries};
use super::{Applied, Refused, Txn, refuse};
use crate::MetaError;
use crate::store::Read;
use tessera_proto::{LockMode, Versioning, version_label};

/// Why a version with headers `h` may not be removed at `now_ms`, or
/// `None` when it may: a legal hold always refuses, a retention running
/// until after `now_ms` refuses unless it is GOVERNANCE and the caller
/// bypasses governance (S3 User Guide, "Retention modes", "Legal holds").
pub fn removal_fault(h: &ObjectHeaders, now_ms: u64, bypass_governance: bool) -> Option<String> {
    if h.legal_hold {
        return Some("the version is under a legal hold".to_string());
    }
    match h.retention {
        Some(r) if r.until_ms > now_ms => match r.mode {
            LockMode::Compliance => Some(format!(
                "the version is under COMPLIANCE retention until {} ms",
                r.until_ms
            )),
            LockMode::Governance if !bypass_governance => Some(format!(
                "the version is under GOVERNANCE retention until {} ms",
                r.until_ms
            )),
            LockMode::Governance => None,
        },
        _ => None,
    }
}

/// Why replacing retention `old` with `new` at `now_ms` is refused, or
/// `None` when it is allowed (S3 API reference, PutObjectRetention; S3
/// User Guide, "Retention modes"): a retention that has run out, or that
/// is only lengthened in the same mode, may change; shortening, removing
/// or changing the mode of a running COMPLIANCE retention is never
/// allowed, of a running GOVERNANCE one only when bypassing governance.
pub fn retention_change_fault(
    old: Option<&Retention>,
    new: Option<&Retention>,
    now_ms: u64,
    bypass_governance: bool,
) -> Option<String> {
    let old = old.filter(|o| o.until_ms > now_ms)?;
    let weakens = match new {
        None => true,
        Some(n) => n.mode != old.mode || n.until_ms < old.until_ms,
    };
    if !weakens {
        return None;
    }
    match old.mode {
        LockMode::Compliance => Some(format!(
            "a COMPLIANCE retention until {} ms cannot be shortened, removed or changed",
            old.until_ms
        )),
        LockMode::Governance if !bypass_governance => Some(format!(
            "a GOVERNANCE retention until {} ms can be shortened, removed or changed only \
             with x-amz-bypass-governance-retention",
            old.until_ms
        )),
        LockMode::Governance => None,
    }
}

/// Refuses the removal of `info` at `at_ms` while it is locked.
/// Errors: `ObjectLocked`.
pub(super) fn check_removal(
    info: &ObjectInfo,
    at_ms: u64,
    bypass_governance: bool,
) -> Result<(), MetaError> {
    match removal_fault(&info.headers, at_ms, bypass_governance) {
        None => Ok(()),
        Some(why) => Err(refuse(
            Refused::ObjectLocked,
            format!(
                "version {} of {} cannot be removed: {why}",
                version_label(&info.version_id),
                info.key
            ),
        )),
    }
}

/// What a new version of a key in `bucket` gets at `at_ms`, checked in the
/// command that installs it: a retention or legal hold is refused in a
/// bucket without Object Lock (`InvalidRequest`); a version written
/// without a retention in a bucket with a default retention gets it.
pub(super) fn on_install(
    tx: &Txn<'_, '_>,
    bucket: &str,
    info: &mut ObjectInfo,
    at_ms: u64,
) -> Result<(), MetaError> {
    match tx.object_lock(bucket)? {
        None if info.headers.retention.is_some() || info.headers.legal_hold => Err(refuse(
            Refused::InvalidRequest,
            format!("bucket {bucket} is missing Object Lock configuration"),
        )),
        None => Ok(()),
        Some(config) => {
            if info.headers.retention.is_none()
                && let Some(d) = config.default_retention
            {
                info.headers.retention = Some(d.applied_at(at_ms));
            }
            Ok(())
        }
    }
}

/// PutObjectLockConfiguration: sets `bucket`'s configuration, which needs
/// versioning Enabled, or enables it too when `enable_versioning` (a
/// bucket created with Object Lock). Errors: `NoSuchBucket`,
/// `InvalidBucketState`.
pub(super) fn set_object_lock(
    tx: &mut Txn<'_, '_>,
    bucket: &str,
    config: &ObjectLockConfig,
    enable_versioning: bool,
) -> Result<Applied, MetaError> {
    tx.bucket(bucket)?;
    if enable_versioning {
        tx.put(BUCKET_VERSIONING, &bucket.to_string(), &Versioning::Enabled)?;
    } else if tx.versioning(bucket)? != Some(Versioning::Enabled) {
        return Err(refuse(
            Refused::InvalidBucketState,
            format!("versioning must be Enabled on {bucket} to configure Object Lock"),
        ));
    }
    tx.put(BUCKET_LOCK, &bucket.to_string(), config)?;
    Ok(Applied::Done)
}

/// Refuses a change of versioning to `state` that Object Lock forbids:
/// a bucket with Object Lock cannot suspend versioning. Errors:
/// `InvalidBucketState`.
pub(super) fn check_versioning_change(
    tx: &Txn<'_, '_>,
    bucket: &str,
    state: Versioning,
) -> Result<(), MetaError> {
    if state != Versioning::Enabled && tx.object_lock(bucket)?.is_some() {
        return Err(refuse(
            Refused::InvalidBucketState,
            format!("versioning cannot be suspended on {bucket}: it has Object Lock"),
        ));
    }
    Ok(())
}

/// PutObjectRetention: replaces the retention of one version (`version`:
/// an id or `null`; `None`: the current object). Errors: `NoSuchBucket`,
/// `InvalidRequest` (no Object Lock), `BadRequest`, `NoSuchKey`,
/// `NoSuchVersion`, `MethodNotAllowed`, `ObjectLocked`.
pub(super) fn set_retention(
    tx: &mut Txn<'_, '_>,
    (bucket, key, version): (&str, &str, Option<&str>),
    retention: Option<Retention>,
    bypass_governance: bool,
    at_ms: u64,
) -> Result<Applied, MetaError> {
    change_version(tx, (bucket, key, version), |o| {
        if let Some(why) = retention_change_fault(
            o.headers.retention.as_ref(),
            retention.as_ref(),
            at_ms,
            bypass_governance,
        ) {
            return Err(refuse(Refused::ObjectLocked, why));
        }
        o.headers.retention = retention;
        Ok(())
    })
}

/// PutObjectLegalHold: turns one version's legal hold on or off. Errors
/// as [`set_retention`]'s, but `ObjectLocked`.
pub(super) fn set_legal_hold(
    tx: &mut Txn<'_, '_>,
    (bucket, key, version): (&str, &str, Option<&str>),
    on: bool,
) -> Result<Applied, MetaError> {
    change_version(tx, (bucket, key, version), |o| {
        o.headers.legal_hold = on;
        Ok(())
    })
}

/// Applies `change` to one version of a key in a bucket with Object Lock
/// (`versions::change_version`). Errors: `InvalidRequest` without
/// Object Lock, and `change_version`'s.
fn change_version(
    tx: &mut Txn<'_, '_>,
    (bucket, key, version): (&str, &str, Option<&str>),
    change: impl FnOnce(&mut ObjectInfo) -> Result<(), MetaError>,
) -> Result<Applied, MetaError> {
    tx.bucket(bucket)?;
    if tx.object_lock(bucket)?.is_none() {
        return Err(refuse(
            Refused::InvalidRequest,
            format!("bucket {bucket} is missing Object Lock configuration"),
        ));
    }
    versions::change_version(tx, (bucket, key, version), change)
}

/// Queries of Object Lock.
pub trait ObjectLockQueries: Read {
    /// A bucket's Object Lock configuration; `None` without Object Lock
    /// (the bucket is not checked).
    fn object_lock(&self, bucket: &str) -> Result<Option<ObjectLockConfig>, MetaError> {
        self.get(BUCKET_LOCK, &bucket.to_string())
    }
}

impl<R: Read + ?Sized> ObjectLockQueries for R {}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;
    use tessera_proto::{DefaultRetention, NewObject, Removal, WriteCondition};

    const DAY: u64 = tessera_proto::DAY_MS;

    fn gov(until_ms: u64) -> Retention {
        Retention {
            mode: LockMode::Governance,
            until_ms,
        }
    }

    fn comp(until_ms: u64) -> Retention {
        Retention {
            mode: LockMode::Compliance,
            until_ms,
        }
    }

    #[test]
    fn removal_is_refused_while_a_hold_or_a_running_retention_lasts() {
        let mut h = ObjectHeaders::default();
        assert_eq!(removal_fault(&h, 100, false), None);
        h.retention = Some(gov(200));
        assert!(removal_fault(&h, 100, false).is_some());
        assert_eq!(removal_fault(&h, 100, true), None, "governance bypassed");
        assert_eq!(removal_fault(&h, 200, false), None, "ran out");
        h.retention = Some(comp(200));
        assert!(removal_fault(&h, 100, true).is_some(), "compliance stays");
        assert_eq!(removal_fault(&h, 201, false), None);
        h.legal_hold = true;
        assert!(removal_fault(&h, 10_000, true).is_some(), "a hold stays");
    }

    #[test]
    fn a_running_retention_may_only_grow_unless_governance_is_bypassed() {
        let now = 100;
        // No retention, or one that ran out: anything goes.
        assert_eq!(
            retention_change_fault(None, Some(&gov(50)), now, false),
            None
        );
        assert_eq!(
            retention_change_fault(Some(&comp(90)), None, now, false),
            None
        );
        // Lengthening in the same mode.
        for r in [gov(200), comp(200)] {
            let longer = Retention { until_ms: 300, ..r };
            assert_eq!(
                retention_change_fault(Some(&r), Some(&longer), now, false),
                None
            );
            assert_eq!(retention_change_fault(Some(&r), Some(&r), now, false), None);
        }
        // Shortening, removing, changing mode.
        assert!(retention_change_fault(Some(&gov(200)), Some(&gov(150)), now, false).is_some());
        assert!(retention_change_fault(Some(&gov(200)), None, now, false).is_some());
        assert!(retention_change_fault(Some(&gov(200)), Some(&comp(200)), now, false).is_some());
        assert_eq!(
            retention_change_fault(Some(&gov(200)), Some(&gov(150)), now, true),
            None
        );
        assert_eq!(
            retention_change_fault(Some(&gov(200)), Some(&comp(200)), now, true),
            None
        );
        for new in [Some(comp(150)), None, Some(gov(300))] {
            assert!(
                retention_change_fault(Some(&comp(200)), new.as_ref(), now, true).is_some(),
                "{new:?}"
            );
        }
    }

    fn lock_bucket(t: &Kit, name: &str, default: Option<DefaultRetention>) {
        t.bucket(name);
        t.ok(Command::SetObjectLock {
            bucket: name.into(),
            config: ObjectLockConfig {
                default_retention: default,
            },
            enable_versioning: true,
        });
    }

    fn put(t: &Kit, bucket: &str, key: &str, headers: ObjectHeaders, at_ms: u64) -> ObjectInfo {
        let mut object = NewObject::inline(b"x");
        object.headers = headers;
        match t.ok(Command::CommitObject {
            bucket: bucket.into(),
            key: key.into(),
            object,
            at_ms,
            condition: WriteCondition::Any,
        }) {
            Applied::Object(o) => *o,
            other => panic!("{other:?}"),
        }
    }

    fn delete_version(key: &str, version: &str, at_ms: u64, bypass: bool) -> Command {
        Command::DeleteVersion {
            bucket: "bkt".into(),
            key: key.into(),
            version: version.into(),
            at_ms,
            bypass_governance: bypass,
        }
    }

    #[test]
    fn object_lock_needs_versioning_enabled_and_keeps_it_enabled() {
        let t = Kit::new();
        t.bucket("bkt");
        let set = Command::SetObjectLock {
            bucket: "bkt".into(),
            config: ObjectLockConfig::default(),
            enable_versioning: false,
        };
        assert_eq!(t.refused(set.clone()), Refused::InvalidBucketState);
        t.ok(Command::SetVersioning {
            bucket: "bkt".into(),
            state: Versioning::Suspended,
        });
        assert_eq!(t.refused(set.clone()), Refused::InvalidBucketState);
        t.ok(Command::SetVersioning {
            bucket: "bkt".into(),
            state: Versioning::Enabled,
        });
        t.ok(set);
        assert_eq!(
            t.refused(Command::SetVersioning {
                bucket: "bkt".into(),
                state: Versioning::Suspended,
            }),
            Refused::InvalidBucketState
        );
        assert!(t.sm.read().object_lock("bkt").unwrap().is_some());
        // It goes with the bucket.
        t.ok(Command::DeleteBucket { name: "bkt".into() });
        t.bucket("bkt");
        assert_eq!(t.sm.read().object_lock("bkt").unwrap(), None);
    }

    #[test]
    fn lock_settings_are_refused_in_a_bucket_without_object_lock() {
        let t = Kit::new();
        t.bucket("bkt");
        let mut object = NewObject::inline(b"x");
        object.headers.legal_hold = true;
        assert_eq!(
            t.refused(Command::CommitObject {
                bucket: "bkt".into(),
                key: "k".into(),
                object,
                at_ms: 1,
                condition: WriteCondition::Any,
            }),
            Refused::InvalidRequest
        );
        put(&t, "bkt", "k", ObjectHeaders::default(), 1);
        assert_eq!(
            t.refused(Command::SetLegalHold {
                bucket: "bkt".into(),
                key: "k".into(),
                version: None,
                on: true,
            }),
            Refused::InvalidRequest
        );
    }

    #[test]
    fn a_locked_version_survives_every_delete_until_its_lock_ends() {
        let t = Kit::new();
        lock_bucket(
            &t,
            "bkt",
            Some(DefaultRetention {
                mode: LockMode::Governance,
                days: Some(1),
                years: None,
            }),
        );
        // The default retention applies from the write's time.
        let a = put(&t, "bkt", "k", ObjectHeaders::default(), 1000);
        assert_eq!(a.headers.retention, Some(gov(1000 + DAY)));
        let va = a.version_id.clone().unwrap();
        assert_eq!(
            t.refused(delete_version("k", &va, 2000, false)),
            Refused::ObjectLocked
        );
        // A delete without a version only places a marker.
        let removal = t.ok(Command::DeleteObject {
            bucket: "bkt".into(),
            key: "k".into(),
            at_ms: 2000,
        });
        assert!(matches!(
            removal,
            Applied::Removed(Removal {
                delete_marker: true,
                ..
            })
        ));
        // Compliance and a legal hold refuse even with the bypass.
        let b = put(
            &t,
            "bkt",
            "c",
            ObjectHeaders {
                retention: Some(comp(5000)),
                ..Default::default()
            },
            1000,
        );
        let vb = b.version_id.clone().unwrap();
        assert_eq!(
            t.refused(delete_version("c", &vb, 2000, true)),
            Refused::ObjectLocked
        );
        let c = put(
            &t,
            "bkt",
            "h",
            ObjectHeaders {
                retention: Some(gov(0)),
                legal_hold: true,
                ..Default::default()
            },
            1000,
        );
        let vc = c.version_id.clone().unwrap();
        assert_eq!(
            t.refused(delete_version("h", &vc, 2000, true)),
            Refused::ObjectLocked
        );
        t.ok(Command::SetLegalHold {
            bucket: "bkt".into(),
            key: "h".into(),
            version: Some(vc.clone()),
            on: false,
        });
        t.ok(delete_version("h", &vc, 2000, false));
        // Governance with the bypass, compliance once its date passed.
        t.ok(delete_version("k", &va, 2000, true));
        t.ok(delete_version("c", &vb, 5000, false));
    }

    #[test]
    fn retention_changes_follow_the_rules_in_the_command() {
        let t = Kit::new();
        lock_bucket(&t, "bkt", None);
        let a = put(&t, "bkt", "k", ObjectHeaders::default(), 1000);
        assert_eq!(a.headers.retention, None);
        let set = |r: Option<Retention>, bypass| Command::SetRetention {
            bucket: "bkt".into(),
            key: "k".into(),
            version: None,
            retention: r,
            bypass_governance: bypass,
            at_ms: 2000,
        };
        t.ok(set(Some(gov(10_000)), false));
        t.ok(set(Some(gov(20_000)), false));
        assert_eq!(
            t.refused(set(Some(gov(15_000)), false)),
            Refused::ObjectLocked
        );
        t.ok(set(Some(gov(15_000)), true));
        t.ok(set(Some(comp(15_000)), true));
        assert_eq!(t.refused(set(None, true)), Refused::ObjectLocked);
        // By version id, on a noncurrent version too.
        let va = a.version_id.unwrap();
        put(&t, "bkt", "k", ObjectHeaders::default(), 3000);
        assert_eq!(
            t.refused(Command::SetRetention {
                bucket: "bkt".into(),
                key: "k".into(),
                version: Some(va.clone()),
                retention: Some(gov(1)),
                bypass_governance: true,
                at_ms: 3000,
            }),
            Refused::ObjectLocked
        );
        match t.ok(Command::SetRetention {
            bucket: "bkt".into(),
            key: "k".into(),
            version: Some(va),
            retention: Some(comp(30_000)),
            bypass_governance: false,
            at_ms: 3000,
        }) {
            Applied::Object(o) => assert_eq!(o.headers.retention, Some(comp(30_000))),
            other => panic!("{other:?}"),
        }
    }
}
