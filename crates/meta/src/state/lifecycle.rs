//! Bucket lifecycle (S3 User Guide, "Managing the lifecycle of objects"):
//! each bucket's configuration (table `bucket_lifecycle`, dropped with the
//! bucket) and the lifecycle worker's progress (table
//! `lifecycle_progress`, one record), kept here so that a new meta leader
//! resumes the worker's pass where the old one stopped. The rules'
//! meaning is `tessera_proto::LifecycleConfig`'s; the worker
//! (`server::lifecycle`) applies them through the ordinary commands
//! (`DeleteObject`, `DeleteVersion`, `AbortUpload`), so Object Lock and
//! every other rule of those commands hold for it too.

use tessera_proto::{LifecycleConfig, LifecycleProgress, ObjectVersion, Removal, version_label};

use super::buckets::BucketQueries;
use super::tables::{BUCKET_LIFECYCLE, LIFECYCLE_PROGRESS, OBJECTS};
use super::versions::{VersionQueries, delete_current, delete_version, parse_version};
use super::{Applied, Refused, Txn, refuse};
use crate::MetaError;
use crate::keys::ObjectKey;
use crate::store::{Read, Step};

/// The key of the worker's one progress record.
const PROGRESS: &str = "worker";

/// PutBucketLifecycleConfiguration (`Some`) or DeleteBucketLifecycle
/// (`None`). Errors: `NoSuchBucket`, `BadRequest` beyond the limits
/// (`LifecycleConfig::fault`).
pub(super) fn set_lifecycle(
    tx: &mut Txn<'_, '_>,
    bucket: &str,
    config: Option<&LifecycleConfig>,
) -> Result<Applied, MetaError> {
    tx.bucket(bucket)?;
    match config {
        Some(c) => {
            if let Some(fault) = c.fault() {
                return Err(refuse(Refused::BadRequest, fault));
            }
            tx.put(BUCKET_LIFECYCLE, &bucket.to_string(), c)?;
        }
        None => tx.delete(BUCKET_LIFECYCLE, &bucket.to_string())?,
    }
    Ok(Applied::Done)
}

/// The lifecycle worker's expiry of one version of `key`, decided on a
/// snapshot and applied only if it still holds: the version named
/// (`version` as S3 names it, written at `mtime_ms`) is still the current
/// object (`current`: then S3's DeleteObject without a version, a delete
/// marker in a versioned bucket) or still a noncurrent version or delete
/// marker (removed for good, unless Object Lock keeps it). Anything else
/// (overwritten, promoted, removed meanwhile) changes nothing:
/// `Removed { existed: false }`. Errors: `NoSuchBucket`, `ObjectLocked`.
pub(super) fn expire(
    tx: &mut Txn<'_, '_>,
    (bucket, key, version): (&str, &str, &str),
    mtime_ms: u64,
    current: bool,
    at_ms: u64,
) -> Result<Applied, MetaError> {
    tx.bucket(bucket)?;
    let untouched = Applied::Removed(Removal {
        existed: false,
        delete_marker: false,
        version_id: None,
    });
    let cur = tx.get(OBJECTS, &ObjectKey::new(bucket, key))?;
    let is_current = cur
        .as_ref()
        .is_some_and(|o| version_label(&o.version_id) == version);
    if current {
        if !is_current || cur.is_some_and(|o| o.mtime_ms != mtime_ms) {
            return Ok(untouched);
        }
        return Ok(Applied::Removed(delete_current(tx, bucket, key, at_ms)?));
    }
    if is_current {
        return Ok(untouched);
    }
    let Ok(sel) = parse_version(version) else {
        return Ok(untouched);
    };
    match tx.find_noncurrent(bucket, key, version, sel)? {
        Some((_, v)) if version_mtime(&v) == mtime_ms => Ok(Applied::Removed(delete_version(
            tx,
            (bucket, key, version),
            at_ms,
            false,
        )?)),
        _ => Ok(untouched),
    }
}

fn version_mtime(v: &ObjectVersion) -> u64 {
    match v {
        ObjectVersion::Object(o) => o.mtime_ms,
        ObjectVersion::DeleteMarker(m) => m.mtime_ms,
    }
}

/// Records the lifecycle worker's progress.
pub(super) fn set_progress(
    tx: &mut Txn<'_, '_>,
    progress: &LifecycleProgress,
) -> Result<Applied, MetaError> {
    tx.put(LIFECYCLE_PROGRESS, &PROGRESS.to_string(), progress)?;
    Ok(Applied::Done)
}

/// Queries of lifecycle configurations.
pub trait LifecycleQueries: Read {
    /// A bucket's configuration; `None` without one (the bucket is not
    /// checked).
    fn lifecycle(&self, bucket: &str) -> Result<Option<LifecycleConfig>, MetaError> {
        self.get(BUCKET_LIFECYCLE, &bucket.to_string())
    }

    /// The buckets that have a configuration, in name order after `after`.
    fn lifecycle_buckets(&self, after: Option<&str>) -> Result<Vec<String>, MetaError> {
        let mut out = Vec::new();
        self.scan(BUCKET_LIFECYCLE, &[], |_, k: String, _| {
            if after.is_none_or(|a| k.as_str() > a) {
                out.push(k);
            }
            Ok(Step::Continue)
        })?;
        Ok(out)
    }

    /// The worker's progress (all zero before its first pass).
    fn lifecycle_progress(&self) -> Result<LifecycleProgress, MetaError> {
        Ok(self
            .get(LIFECYCLE_PROGRESS, &PROGRESS.to_string())?
            .unwrap_or_default())
    }
}

impl<R: Read + ?Sized> LifecycleQueries for R {}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;
    use tessera_proto::LifecycleRule;

    fn config(ids: &[&str]) -> LifecycleConfig {
        LifecycleConfig {
            rules: ids
                .iter()
                .map(|id| LifecycleRule {
                    id: id.to_string(),
                    enabled: true,
                    abort_upload_days: Some(1),
                    ..Default::default()
                })
                .collect(),
        }
    }

    #[test]
    fn configurations_are_kept_checked_and_go_with_the_bucket() {
        let t = Kit::new();
        t.bucket("aaa");
        t.bucket("bbb");
        let set = |bucket: &str, config: Option<LifecycleConfig>| Command::SetLifecycle {
            bucket: bucket.into(),
            config,
        };
        t.ok(set("aaa", Some(config(&["r1"]))));
        t.ok(set("bbb", Some(config(&["r2"]))));
        assert_eq!(t.sm.read().lifecycle("aaa").unwrap(), Some(config(&["r1"])));
        assert_eq!(t.sm.read().lifecycle_buckets(None).unwrap(), ["aaa", "bbb"]);
        assert_eq!(t.sm.read().lifecycle_buckets(Some("aaa")).unwrap(), ["bbb"]);
        assert_eq!(
            t.refused(set("aaa", Some(config(&["x", "x"])))),
            Refused::BadRequest
        );
        assert_eq!(t.refused(set("nope", None)), Refused::NoSuchBucket);
        t.ok(set("aaa", None));
        assert_eq!(t.sm.read().lifecycle("aaa").unwrap(), None);
        t.ok(Command::DeleteBucket { name: "bbb".into() });
        assert!(t.sm.read().lifecycle_buckets(None).unwrap().is_empty());
        let p = LifecycleProgress {
            passes: 3,
            ..Default::default()
        };
        t.ok(Command::SetLifecycleProgress {
            progress: p.clone(),
        });
        assert_eq!(t.sm.read().lifecycle_progress().unwrap(), p);
    }

    fn put(t: &Kit, key: &str, at_ms: u64, headers: tessera_proto::ObjectHeaders) -> String {
        let mut object = tessera_proto::NewObject::inline(b"x");
        object.headers = headers;
        match t.ok(Command::CommitObject {
            bucket: "bkt".into(),
            key: key.into(),
            object,
            at_ms,
            condition: tessera_proto::WriteCondition::Any,
        }) {
            Applied::Object(o) => version_label(&o.version_id).to_string(),
            other => panic!("{other:?}"),
        }
    }

    fn expire(key: &str, version: &str, mtime_ms: u64, current: bool) -> Command {
        Command::Expire {
            bucket: "bkt".into(),
            key: key.into(),
            version: version.into(),
            mtime_ms,
            current,
            at_ms: 100,
        }
    }

    fn existed(a: Applied) -> bool {
        match a {
            Applied::Removed(r) => r.existed,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_expiry_applies_only_to_the_version_it_was_decided_for() {
        let t = Kit::new();
        t.bucket("bkt");
        t.ok(Command::SetVersioning {
            bucket: "bkt".into(),
            state: tessera_proto::Versioning::Enabled,
        });
        let v1 = put(&t, "k", 1, Default::default());
        // Overwritten since the decision: nothing happens.
        let v2 = put(&t, "k", 2, Default::default());
        assert!(!existed(t.ok(expire("k", &v1, 1, true))));
        // The current one, as decided: a delete marker.
        assert!(existed(t.ok(expire("k", &v2, 2, true))));
        let marker = match t.sm.read().version("bkt", "k", None).unwrap() {
            ObjectVersion::DeleteMarker(m) => m,
            other => panic!("{other:?}"),
        };
        // A noncurrent version with another time is not the one decided.
        assert!(!existed(t.ok(expire("k", &v1, 7, false))));
        assert!(existed(t.ok(expire("k", &v1, 1, false))));
        // A current object is never removed as noncurrent.
        let v3 = put(&t, "c", 3, Default::default());
        assert!(!existed(t.ok(expire("c", &v3, 3, false))));
        assert!(existed(t.ok(expire(
            "k",
            version_label(&marker.version_id),
            marker.mtime_ms,
            false
        ))));
    }

    #[test]
    fn an_expiry_never_removes_a_locked_version() {
        let t = Kit::new();
        t.bucket("bkt");
        t.ok(Command::SetObjectLock {
            bucket: "bkt".into(),
            config: Default::default(),
            enable_versioning: true,
        });
        let held = tessera_proto::ObjectHeaders {
            legal_hold: true,
            ..Default::default()
        };
        let v1 = put(&t, "k", 1, held);
        put(&t, "k", 2, Default::default());
        assert_eq!(t.refused(expire("k", &v1, 1, false)), Refused::ObjectLocked);
        assert!(matches!(
            t.sm.read().version("bkt", "k", Some(v1.as_str())).unwrap(),
            ObjectVersion::Object(_)
        ));
    }
}
