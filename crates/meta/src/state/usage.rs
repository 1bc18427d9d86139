//! Bucket usage: how many objects, noncurrent versions and delete markers
//! each bucket holds, and their logical bytes (the objects' sizes).
//!
//! The `bucket_usage` table is derived from `objects` and `versions` and
//! kept by the transaction layer, not by the commands: every put or delete
//! of an entry of those tables ([`Txn`](super::Txn)) subtracts what the
//! entry it replaces counted and adds what the new one counts, and the sums
//! are written with the command's other changes, in the same atomic batch.
//! So no command (commit, delete, rename, copy-on-write patch, tagging,
//! version promotion, multipart completion) can change objects without its
//! bucket's usage following, and a refused command takes its share back
//! with the rest of its writes.
//!
//! What counts: current objects, and noncurrent versions, each with its
//! size; `BucketUsage::bytes` is both, as S3 and MinIO report a bucket's
//! size. Parts of multipart uploads in progress are not counted: they are
//! not objects until completed.
//!
//! A data directory written by a build that did not keep the table (or by
//! one that kept it and was followed by one that did not) has a
//! `bucket_usage_at` counter behind `applied`; [`recount`] counts it again
//! from the tables when meta opens it.

use std::collections::BTreeMap;

use serde::Deserialize;
use tessera_proto::BucketUsage;

use super::buckets::BucketQueries;
use super::tables::{BUCKET_USAGE, OBJECTS, VERSIONS};
use crate::MetaError;
use crate::store::{Read, ReadView, decode_value_head};

/// The leading fields of an `ObjectInfo`'s encoding: the key, then the size.
#[derive(Deserialize)]
struct ObjectHead<'a> {
    _key: &'a str,
    size: u64,
}

/// The head of an `ObjectVersion`'s encoding, its variants in the same
/// order: an object's size, or a delete marker.
#[derive(Deserialize)]
enum VersionHead<'a> {
    #[serde(borrow)]
    Object(ObjectHead<'a>),
    DeleteMarker,
}

/// A change to a bucket's usage: signed sums of [`BucketUsage`]'s fields.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct UsageDelta {
    objects: i64,
    object_bytes: i64,
    noncurrent: i64,
    noncurrent_bytes: i64,
    delete_markers: i64,
}

impl UsageDelta {
    pub(super) fn is_zero(&self) -> bool {
        *self == UsageDelta::default()
    }

    /// `self + sign * other`.
    fn add(&mut self, other: UsageDelta, sign: i64) {
        self.objects += sign * other.objects;
        self.object_bytes += sign * other.object_bytes;
        self.noncurrent += sign * other.noncurrent;
        self.noncurrent_bytes += sign * other.noncurrent_bytes;
        self.delete_markers += sign * other.delete_markers;
    }

    pub(super) fn merge(&mut self, other: UsageDelta) {
        self.add(other, 1);
    }

    /// `usage` with this change, never below zero.
    pub(super) fn applied_to(&self, mut u: BucketUsage) -> BucketUsage {
        u.objects = u.objects.saturating_add_signed(self.objects);
        u.object_bytes = u.object_bytes.saturating_add_signed(self.object_bytes);
        u.noncurrent = u.noncurrent.saturating_add_signed(self.noncurrent);
        u.noncurrent_bytes = u
            .noncurrent_bytes
            .saturating_add_signed(self.noncurrent_bytes);
        u.delete_markers = u.delete_markers.saturating_add_signed(self.delete_markers);
        u
    }
}

/// Whether writes to `table` change bucket usage.
pub(super) fn tracks(table: &str) -> bool {
    table == OBJECTS.name || table == VERSIONS.name
}

/// Signed sizes are at most `i64::MAX` bytes: a larger claimed size is
/// corruption (meta refuses objects beyond its chunk limits long before).
fn signed(size: u64, table: &str) -> Result<i64, MetaError> {
    i64::try_from(size).map_err(|_| MetaError::Corrupt(format!("{table}: object size {size}")))
}

/// What one stored entry of `objects` or `versions` counts.
fn entry_usage(table: &'static str, value: &[u8]) -> Result<UsageDelta, MetaError> {
    let mut d = UsageDelta::default();
    if table == OBJECTS.name {
        let h: ObjectHead = decode_value_head(table, value)?;
        d.objects = 1;
        d.object_bytes = signed(h.size, table)?;
    } else {
        match decode_value_head(table, value)? {
            VersionHead::Object(h) => {
                d.noncurrent = 1;
                d.noncurrent_bytes = signed(h.size, table)?;
            }
            VersionHead::DeleteMarker => d.delete_markers = 1,
        }
    }
    Ok(d)
}

/// The bucket of a key of `objects` or `versions`: both start with one
/// length byte and the bucket name.
fn bucket_of(key: &[u8]) -> Result<String, MetaError> {
    let bad = || MetaError::Corrupt("object or version key without a bucket".into());
    let (&len, rest) = key.split_first().ok_or_else(bad)?;
    let name = rest.get(..len as usize).ok_or_else(bad)?;
    String::from_utf8(name.to_vec()).map_err(|_| bad())
}

/// How `key`'s bucket usage changes when `table[key]` goes from what
/// `view` holds to `new` (`None`: deleted).
pub(super) fn change(
    view: &dyn ReadView,
    table: &'static str,
    key: &[u8],
    new: Option<&[u8]>,
) -> Result<(String, UsageDelta), MetaError> {
    let mut d = UsageDelta::default();
    view.read_raw(table, key, &mut |old| {
        d.add(entry_usage(table, old)?, -1);
        Ok(())
    })?;
    if let Some(new) = new {
        d.merge(entry_usage(table, new)?);
    }
    Ok((bucket_of(key)?, d))
}

/// Every bucket's usage counted from `objects` and `versions` (buckets
/// that hold nothing are absent): what the table must equal.
pub fn recount(view: &dyn ReadView) -> Result<BTreeMap<String, BucketUsage>, MetaError> {
    let mut sums: BTreeMap<String, UsageDelta> = BTreeMap::new();
    for table in [OBJECTS.name, VERSIONS.name] {
        let mut it = view.cursor(table)?;
        it.seek(&[]);
        while let Some((k, v)) = it.entry() {
            let d = entry_usage(table, v)?;
            sums.entry(bucket_of(k)?).or_default().merge(d);
            it.next();
        }
        it.status()?;
    }
    Ok(sums
        .into_iter()
        .map(|(b, d)| (b, d.applied_to(BucketUsage::default())))
        .collect())
}

/// Queries of bucket usage.
pub trait UsageQueries: Read {
    /// A bucket's usage (zeros for one that holds nothing; the bucket is
    /// not checked).
    fn bucket_usage(&self, bucket: &str) -> Result<BucketUsage, MetaError> {
        Ok(self
            .get(BUCKET_USAGE, &bucket.to_string())?
            .unwrap_or_default())
    }

    /// Every bucket with its usage, in name order.
    fn buckets_usage(&self) -> Result<Vec<(String, BucketUsage)>, MetaError> {
        self.buckets()?
            .into_iter()
            .map(|b| Ok((b.name.clone(), self.bucket_usage(&b.name)?)))
            .collect()
    }
}

impl<R: Read + ?Sized> UsageQueries for R {}

#[cfg(test)]
mod tests {
    use super::super::multipart::MIN_PART_SIZE;
    use super::super::testkit::*;
    use super::*;
    use tessera_proto::{Versioning, WriteCondition};

    fn usage(t: &Kit, bucket: &str) -> BucketUsage {
        let r = t.sm.read();
        let kept = r.bucket_usage(bucket).unwrap();
        // The kept figures always equal a count from the tables.
        let counted = recount(&*r).unwrap();
        let kept_all: BTreeMap<String, BucketUsage> = r
            .buckets_usage()
            .unwrap()
            .into_iter()
            .filter(|(_, u)| *u != BucketUsage::default())
            .collect();
        assert_eq!(kept_all, counted);
        kept
    }

    /// (objects, bytes of all versions, noncurrent, delete markers).
    fn figures(t: &Kit, bucket: &str) -> (u64, u64, u64, u64) {
        let u = usage(t, bucket);
        (u.objects, u.bytes(), u.noncurrent, u.delete_markers)
    }

    fn delete(t: &Kit, bucket: &str, key: &str) {
        t.ok(Command::DeleteObject {
            bucket: bucket.into(),
            key: key.into(),
            at_ms: 3,
        });
    }

    #[test]
    fn puts_overwrites_and_deletes_keep_exact_figures() {
        let t = Kit::new();
        let nodes = t.nodes(6);
        t.bucket("bkt");
        t.bucket("other");
        assert_eq!(figures(&t, "bkt"), (0, 0, 0, 0));
        t.put("bkt", "a", sized_chunk(1, 1000, &nodes)).unwrap();
        t.put("bkt", "b", inline(b"12345")).unwrap();
        t.put("other", "x", inline(b"xy")).unwrap();
        assert_eq!(figures(&t, "bkt"), (2, 1005, 0, 0));
        assert_eq!(figures(&t, "other"), (1, 2, 0, 0));
        // Overwrite: the new size replaces the old.
        t.put("bkt", "a", sized_chunk(2, 300, &nodes)).unwrap();
        assert_eq!(figures(&t, "bkt"), (2, 305, 0, 0));
        // A refused commit changes nothing.
        t.put("bkt", "c", sized_chunk(2, 300, &nodes)).unwrap_err();
        t.put("nope", "c", inline(b"z")).unwrap_err();
        assert_eq!(figures(&t, "bkt"), (2, 305, 0, 0));
        // Rename and retagging keep the figures; deletes take theirs away.
        assert_eq!(t.rename("b", "c", false), Ok(1));
        t.ok(Command::SetObjectTags {
            bucket: "bkt".into(),
            key: "c".into(),
            tags: [("k".to_string(), "v".to_string())].into(),
        });
        assert_eq!(figures(&t, "bkt"), (2, 305, 0, 0));
        delete(&t, "bkt", "a");
        delete(&t, "bkt", "a");
        assert_eq!(figures(&t, "bkt"), (1, 5, 0, 0));
        delete(&t, "bkt", "c");
        assert_eq!(figures(&t, "bkt"), (0, 0, 0, 0));
        assert_eq!(figures(&t, "other"), (1, 2, 0, 0));
        t.ok(Command::DeleteBucket { name: "bkt".into() });
        assert!(
            t.sm.read()
                .get(BUCKET_USAGE, &"bkt".to_string())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn versions_count_their_bytes_until_removed_for_good() {
        let t = Kit::new();
        let nodes = t.nodes(6);
        t.bucket("bkt");
        t.put("bkt", "k", sized_chunk(1, 100, &nodes)).unwrap(); // the null version
        t.ok(Command::SetVersioning {
            bucket: "bkt".into(),
            state: Versioning::Enabled,
        });
        let v1 = match t.put("bkt", "k", sized_chunk(2, 200, &nodes)).unwrap() {
            super::super::Applied::Object(o) => o.version_id.unwrap(),
            other => panic!("{other:?}"),
        };
        t.put("bkt", "k", inline(b"abc")).unwrap();
        // Current: 3 bytes; noncurrent: 100 (null) and 200 (v1).
        assert_eq!(figures(&t, "bkt"), (1, 303, 2, 0));
        delete(&t, "bkt", "k");
        assert_eq!(figures(&t, "bkt"), (0, 303, 3, 1));
        // Removing v1 for good takes its bytes away.
        t.ok(Command::DeleteVersion {
            bucket: "bkt".into(),
            key: "k".into(),
            version: v1,
            at_ms: 4,
            bypass_governance: false,
        });
        assert_eq!(figures(&t, "bkt"), (0, 103, 2, 1));
        // Suspended: a put replaces the noncurrent null version.
        t.ok(Command::SetVersioning {
            bucket: "bkt".into(),
            state: Versioning::Suspended,
        });
        t.put("bkt", "k", inline(b"s")).unwrap();
        let u = usage(&t, "bkt");
        assert_eq!((u.objects, u.object_bytes), (1, 1));
        assert_eq!((u.noncurrent, u.noncurrent_bytes), (1, 3));
        assert_eq!(u.delete_markers, 1);
    }

    #[test]
    fn a_completed_upload_counts_and_its_parts_before_do_not() {
        let t = Kit::new();
        let nodes = t.nodes(6);
        t.bucket("bkt");
        t.ok(Command::CreateUpload {
            upload: upload_info("u1", "bkt", "big"),
        });
        for (n, id, size) in [(1, 1, MIN_PART_SIZE), (2, 2, 10)] {
            t.ok(Command::CommitPart {
                upload: "u1".into(),
                number: n,
                part: sized_chunk(id, size, &nodes),
                at_ms: 2,
            });
        }
        assert_eq!(figures(&t, "bkt"), (0, 0, 0, 0));
        let e = |id: u8| hex::encode([id; 16]);
        t.ok(Command::CompleteUpload {
            upload: "u1".into(),
            parts: vec![(1, e(1)), (2, e(2))],
            condition: WriteCondition::Any,
            checksum: None,
            at_ms: 3,
        });
        assert_eq!(figures(&t, "bkt"), (1, MIN_PART_SIZE + 10, 0, 0));
    }

    #[test]
    fn a_directory_from_an_older_build_is_counted_again() {
        use super::super::tables::{COUNTERS, counter};
        use crate::store::{KeyCodec, MetaStore, WriteSet, encode_value};
        let t = Kit::new();
        t.bucket("bkt");
        t.put("bkt", "a", inline(b"123")).unwrap();
        t.put("bkt", "b", inline(b"4567")).unwrap();
        assert_eq!(t.sm.recount_usage_if_stale().unwrap(), None);
        // What an older build leaves: rows missing or stale, no mark.
        let mut older = WriteSet::default();
        older.set(BUCKET_USAGE.name, "bkt".to_string().encode(), None);
        older.set(
            BUCKET_USAGE.name,
            "gone".to_string().encode(),
            Some(
                encode_value(&BucketUsage {
                    objects: 9,
                    ..Default::default()
                })
                .unwrap(),
            ),
        );
        older.set(COUNTERS.name, counter::USAGE_AT.to_string().encode(), None);
        t.sm.store().write(older).unwrap();
        assert_eq!(t.sm.recount_usage_if_stale().unwrap(), Some(1));
        assert_eq!(figures(&t, "bkt"), (2, 7, 0, 0));
        assert!(
            t.sm.read()
                .get(BUCKET_USAGE, &"gone".to_string())
                .unwrap()
                .is_none()
        );
        assert_eq!(t.sm.recount_usage_if_stale().unwrap(), None);
        // Kept from here on.
        t.put("bkt", "c", inline(b"8")).unwrap();
        assert_eq!(figures(&t, "bkt"), (3, 8, 0, 0));
    }

    #[test]
    fn one_batch_of_commands_on_one_bucket_sums_them() {
        let t = Kit::new();
        t.bucket("bkt");
        let put = |key: &str, body: &[u8]| Command::CommitObject {
            bucket: if key == "refused" { "nope" } else { "bkt" }.into(),
            key: key.into(),
            object: inline(body),
            at_ms: 2,
            condition: WriteCondition::Any,
        };
        let (a, b, a2) = (put("a", b"1"), put("b", b"22"), put("a", b"4444"));
        let refused = put("refused", b"x");
        let entries: Vec<(u64, &Command)> = vec![(10, &a), (11, &b), (12, &refused), (13, &a2)];
        t.sm.apply_batch(&entries).unwrap();
        assert_eq!(figures(&t, "bkt"), (2, 6, 0, 0));
    }
}
