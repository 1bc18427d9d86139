//! Tags: an object's tags belong to its current version (stored in its
//! `ObjectHeaders`, so an overwrite without tags drops them and a rename
//! moves them, as S3 does); a bucket's tags are a table of their own,
//! dropped with the bucket. Both are checked against S3's limits here too
//! (`tag_set_fault`), so nothing beyond them is ever stored, whoever asks.

use tessera_proto::{MAX_BUCKET_TAGS, MAX_OBJECT_TAGS, TagSet, tag_set_fault};

use super::buckets::BucketQueries;
use super::tables::{BUCKET_TAGS, OBJECTS};
use super::{Applied, Refused, Txn, refuse};
use crate::MetaError;
use crate::keys::ObjectKey;
use crate::store::Read;

/// Refuses an object tag set beyond S3's limits: `InvalidTag`.
pub(super) fn check_object_tags(tags: &TagSet) -> Result<(), MetaError> {
    match tag_set_fault(tags, MAX_OBJECT_TAGS) {
        Some(fault) => Err(refuse(Refused::InvalidTag, fault)),
        None => Ok(()),
    }
}

/// Replaces the tags of the object at `key`, keeping everything else of it
/// (its ETag and modification time too: S3 does not change them).
/// Errors: `NoSuchBucket`, `NoSuchKey`, `InvalidTag`.
pub(super) fn set_object_tags(
    tx: &mut Txn<'_, '_>,
    bucket: &str,
    key: &str,
    tags: &TagSet,
) -> Result<Applied, MetaError> {
    tx.bucket(bucket)?;
    check_object_tags(tags)?;
    let okey = ObjectKey::new(bucket, key);
    let mut info = tx
        .get(OBJECTS, &okey)?
        .ok_or_else(|| refuse(Refused::NoSuchKey, format!("no such key: {bucket}/{key}")))?;
    info.headers.tags = tags.clone();
    tx.put(OBJECTS, &okey, &info)?;
    Ok(Applied::Object(Box::new(info)))
}

/// Replaces a bucket's tags; an empty set removes them.
/// Errors: `NoSuchBucket`, `InvalidTag`.
pub(super) fn set_bucket_tags(
    tx: &mut Txn<'_, '_>,
    bucket: &str,
    tags: &TagSet,
) -> Result<Applied, MetaError> {
    tx.bucket(bucket)?;
    if let Some(fault) = tag_set_fault(tags, MAX_BUCKET_TAGS) {
        return Err(refuse(Refused::InvalidTag, fault));
    }
    if tags.is_empty() {
        tx.delete(BUCKET_TAGS, &bucket.to_string())?;
    } else {
        tx.put(BUCKET_TAGS, &bucket.to_string(), tags)?;
    }
    Ok(Applied::Done)
}

/// Queries of tags.
pub trait TagQueries: Read {
    /// A bucket's tags, empty when it has none. Errors: `NoSuchBucket`.
    fn bucket_tags(&self, bucket: &str) -> Result<TagSet, MetaError> {
        self.bucket(bucket)?;
        Ok(self
            .get(BUCKET_TAGS, &bucket.to_string())?
            .unwrap_or_default())
    }
}

impl<R: Read + ?Sized> TagQueries for R {}

#[cfg(test)]
mod tests {
    use super::super::objects::ObjectQueries;
    use super::super::testkit::*;
    use super::*;
    use tessera_proto::{MAX_TAG_KEY_CHARS, MAX_TAG_VALUE_CHARS, NewObject, WriteCondition};

    fn tags(pairs: &[(&str, &str)]) -> TagSet {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn many(n: usize) -> TagSet {
        (0..n).map(|i| (format!("k{i}"), format!("v{i}"))).collect()
    }

    fn set(bucket: &str, key: &str, t: TagSet) -> Command {
        Command::SetObjectTags {
            bucket: bucket.into(),
            key: key.into(),
            tags: t,
        }
    }

    fn tagged(body: &[u8], t: TagSet) -> NewObject {
        let mut o = inline(body);
        o.headers.tags = t;
        o
    }

    #[test]
    fn object_tags_belong_to_the_version() {
        let t = Kit::new();
        t.bucket("bkt");
        assert_eq!(t.refused(set("bkt", "k", tags(&[]))), Refused::NoSuchKey);
        assert_eq!(
            t.refused(set("nope", "k", tags(&[]))),
            Refused::NoSuchBucket
        );
        t.put("bkt", "k", tagged(b"v", tags(&[("a", "1")])))
            .unwrap();
        let before = t.sm.read().object("bkt", "k").unwrap();
        assert_eq!(before.headers.tags, tags(&[("a", "1")]));
        // Replacing tags keeps the object as it was otherwise.
        t.ok(set("bkt", "k", tags(&[("b", ""), ("c", "3")])));
        let after = t.sm.read().object("bkt", "k").unwrap();
        assert_eq!(after.headers.tags, tags(&[("b", ""), ("c", "3")]));
        assert_eq!(
            (after.etag, after.mtime_ms, after.data),
            (before.etag, before.mtime_ms, before.data)
        );
        // An overwrite without tags drops them.
        t.put("bkt", "k", inline(b"w")).unwrap();
        assert!(
            t.sm.read()
                .object("bkt", "k")
                .unwrap()
                .headers
                .tags
                .is_empty()
        );
    }

    #[test]
    fn object_tags_keep_s3s_limits() {
        let t = Kit::new();
        t.bucket("bkt");
        t.put("bkt", "k", inline(b"v")).unwrap();
        t.ok(set("bkt", "k", many(MAX_OBJECT_TAGS)));
        let long_key = "é".repeat(MAX_TAG_KEY_CHARS);
        let long_value = "é".repeat(MAX_TAG_VALUE_CHARS);
        // Limits count characters, not bytes.
        t.ok(set(
            "bkt",
            "k",
            tags(&[(long_key.as_str(), long_value.as_str())]),
        ));
        for bad in [
            many(MAX_OBJECT_TAGS + 1),
            tags(&[(format!("{long_key}x").as_str(), "")]),
            tags(&[("k", format!("{long_value}x").as_str())]),
            tags(&[("", "v")]),
        ] {
            assert_eq!(t.refused(set("bkt", "k", bad.clone())), Refused::InvalidTag);
            // Nor may a commit carry them.
            let cmd = Command::CommitObject {
                bucket: "bkt".into(),
                key: "other".into(),
                object: tagged(b"x", bad),
                at_ms: 1,
                condition: WriteCondition::Any,
            };
            assert_eq!(t.refused(cmd), Refused::InvalidTag);
        }
        let r = t.sm.read();
        assert_eq!(
            r.object("bkt", "k").unwrap().headers.tags,
            tags(&[(long_key.as_str(), long_value.as_str())])
        );
        assert!(r.object_at("bkt", "other").unwrap().is_none());
    }

    #[test]
    fn bucket_tags_set_replace_remove_and_go_with_the_bucket() {
        let t = Kit::new();
        t.bucket("bkt");
        let put = |tags: TagSet| Command::SetBucketTags {
            bucket: "bkt".into(),
            tags,
        };
        assert!(t.sm.read().bucket_tags("bkt").unwrap().is_empty());
        t.ok(put(many(MAX_BUCKET_TAGS)));
        assert_eq!(t.sm.read().bucket_tags("bkt").unwrap(), many(50));
        assert_eq!(
            t.refused(put(many(MAX_BUCKET_TAGS + 1))),
            Refused::InvalidTag
        );
        t.ok(put(tags(&[("env", "prod")])));
        assert_eq!(
            t.sm.read().bucket_tags("bkt").unwrap(),
            tags(&[("env", "prod")])
        );
        t.ok(put(TagSet::new()));
        assert!(t.sm.read().bucket_tags("bkt").unwrap().is_empty());
        assert_eq!(
            t.refused(Command::SetBucketTags {
                bucket: "nope".into(),
                tags: tags(&[("a", "b")])
            }),
            Refused::NoSuchBucket
        );
        // A bucket made again under the same name starts without tags.
        t.ok(put(tags(&[("env", "prod")])));
        t.ok(Command::DeleteBucket { name: "bkt".into() });
        t.bucket("bkt");
        assert!(t.sm.read().bucket_tags("bkt").unwrap().is_empty());
    }
}
