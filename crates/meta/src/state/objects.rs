//! Objects: a commit makes a new version visible whole (its chunks already
//! stored), an overwrite or delete hands the old chunks to the collector,
//! and listings follow S3 (prefix, delimiter, start-after, pages).
//!
//! The commit's checks live here ([`check_commit`]): every object, however
//! it is written (S3, SDK, multipart parts, the file-system view's
//! copy-on-write patches), is checked by the same rules.

use std::collections::{HashMap, HashSet};

use tessera_proto::{
    ChunkRef, ListEntry, Listing, MAX_WRAPPED_KEY, NewObject, ObjectData, ObjectInfo,
    WriteCondition,
};
use tessera_types::validate_key;

use super::buckets::BucketQueries;
use super::chunks::{check_chunk_record, retire, store_chunks};
use super::tables::OBJECTS;
use super::tags::check_object_tags;
use super::versions::{VersionQueries, install};
use super::{Applied, Refused, Txn, refuse};
use crate::MetaError;
use crate::keys::ObjectKey;
use crate::store::{KeyCodec, Read, Step};

/// Most chunks one object may have: bounds the commit frame and the record.
pub const MAX_CHUNKS_PER_OBJECT: usize = 1 << 20;
/// Largest inline object meta accepts (bytes).
pub const MAX_INLINE: u64 = 64 * 1024;
/// Most entries in one listing page.
pub const MAX_LIST_PAGE: usize = 10_000;

pub(super) fn commit_object(
    tx: &mut Txn<'_, '_>,
    bucket: &str,
    key: &str,
    object: &NewObject,
    at_ms: u64,
    condition: &WriteCondition,
) -> Result<Applied, MetaError> {
    tx.bucket(bucket)?;
    validate_key(key).map_err(|e| refuse(Refused::InvalidKey, e.to_string()))?;
    check_object_tags(&object.headers.tags)?;
    let okey = ObjectKey::new(bucket, key);
    let old = tx.get(OBJECTS, &okey)?;
    if let Some(current) = old.as_ref().filter(|o| is_recommit(o, object)) {
        // The same commit again: a client resent it after its connection
        // to a meta leader died, not knowing it had been applied. Its
        // chunks are this object's; answer as the first time.
        return Ok(Applied::Object(Box::new(current.clone())));
    }
    check_new_object(tx, object)?;
    check_condition(condition, old.as_ref(), bucket, key)?;
    store_chunks(tx, &object.chunks)?;
    let info = install(tx, (bucket, key), old, committed(key, object, at_ms), at_ms)?;
    Ok(Applied::Object(Box::new(info)))
}

/// Whether `new` is the commit that made `current`, sent again: the same
/// chunks (fresh random ids a writer draws once per write), the same size
/// and ETag. Inline objects carry no such ids and are never taken for one.
fn is_recommit(current: &ObjectInfo, new: &NewObject) -> bool {
    match (&current.data, &new.data) {
        (ObjectData::Chunks(have), ObjectData::Chunks(want)) => {
            !want.is_empty()
                && have.len() == want.len()
                && have.iter().zip(want).all(|(a, b)| a.id == b.id)
                && current.size == new.size
                && current.etag == new.etag
        }
        _ => false,
    }
}

/// Checks a write's `condition` against the key's current object `old`, in
/// the command that commits the write: a compare-and-swap. Errors:
/// `NoSuchKey` (`Exists`, `ETag` on a free key: S3 answers 404 to `If-Match`
/// there), `PreconditionFailed`.
pub(super) fn check_condition(
    condition: &WriteCondition,
    old: Option<&ObjectInfo>,
    bucket: &str,
    key: &str,
) -> Result<(), MetaError> {
    match (condition, old) {
        (WriteCondition::Any, _)
        | (WriteCondition::Absent, None)
        | (WriteCondition::Exists, Some(_)) => Ok(()),
        (WriteCondition::ETag(want), Some(o)) if *want == o.etag => Ok(()),
        (WriteCondition::Absent, Some(_)) => Err(refuse(
            Refused::PreconditionFailed,
            format!("{bucket}/{key} exists"),
        )),
        (WriteCondition::ETag(want), Some(o)) => Err(refuse(
            Refused::PreconditionFailed,
            format!("{bucket}/{key} has ETag {}, not {want}", o.etag),
        )),
        (WriteCondition::Exists | WriteCondition::ETag(_), None) => Err(refuse(
            Refused::NoSuchKey,
            format!("no such key: {bucket}/{key}"),
        )),
    }
}

/// Deletes an object, its chunks to garbage; whether it existed.
/// Errors: `NoSuchBucket`.
pub(super) fn remove_object(
    tx: &mut Txn<'_, '_>,
    bucket: &str,
    key: &str,
    at_ms: u64,
) -> Result<bool, MetaError> {
    tx.bucket(bucket)?;
    let okey = ObjectKey::new(bucket, key);
    let Some(old) = tx.get(OBJECTS, &okey)? else {
        return Ok(false);
    };
    retire(tx, &old, at_ms)?;
    tx.delete(OBJECTS, &okey)?;
    Ok(true)
}

/// A new object keeps nothing of an older version: every chunk reference
/// comes with its record, in the same order; the rest is what any commit is
/// checked for.
pub(super) fn check_new_object(tx: &Txn<'_, '_>, o: &NewObject) -> Result<(), MetaError> {
    if let ObjectData::Chunks(refs) = &o.data
        && refs.len() <= MAX_CHUNKS_PER_OBJECT
        && (refs.len() != o.chunks.len() || refs.iter().zip(&o.chunks).any(|(r, c)| r.id != c.id))
    {
        return Err(refuse(
            Refused::BadRequest,
            "chunk references and chunk records differ",
        ));
    }
    check_commit(tx, o, None).map(|_| ())
}

/// Checks a commit against the current version `old` (if the commit may
/// keep chunks of it, copy-on-write) and returns the chunks of `old` it
/// drops. A commit must describe exactly the bytes it claims, with fresh,
/// well-placed chunks: anything else is refused before it is written.
/// Errors: `BadRequest` (malformed), `TooLarge`, `Conflict` (a kept chunk
/// is not part of the current version: the object changed meanwhile).
pub(super) fn check_commit(
    tx: &Txn<'_, '_>,
    o: &NewObject,
    old: Option<&ObjectInfo>,
) -> Result<Vec<ChunkRef>, MetaError> {
    let bad = |m: String| refuse(Refused::BadRequest, m);
    let old_refs: &[ChunkRef] = match old.map(|o| &o.data) {
        Some(ObjectData::Chunks(refs)) => refs,
        _ => &[],
    };
    // An encrypted object's size counts its plaintext; its data holds
    // the sealed bytes (`NewObject::stored_len`).
    let stored = o.stored_len();
    if let Some(e) = &o.headers.encryption
        && e.wrapped_key.len() > MAX_WRAPPED_KEY
    {
        return Err(bad(format!(
            "a wrapped key of {} bytes; at most {MAX_WRAPPED_KEY} are allowed",
            e.wrapped_key.len()
        )));
    }
    let refs = match &o.data {
        ObjectData::Inline(bytes) => {
            if bytes.len() as u64 != stored || stored > MAX_INLINE || !o.chunks.is_empty() {
                return Err(bad("malformed inline object".into()));
            }
            return Ok(old_refs.to_vec());
        }
        ObjectData::Chunks(refs) => refs,
    };
    if refs.len() > MAX_CHUNKS_PER_OBJECT {
        return Err(refuse(
            Refused::TooLarge,
            format!("{} chunks exceed the limit", refs.len()),
        ));
    }
    let total: u64 = refs.iter().map(|r| r.len).sum();
    if total != stored {
        return Err(bad(format!(
            "chunks hold {total} bytes, object claims {stored}"
        )));
    }
    let new: HashMap<_, _> = o.chunks.iter().map(|c| (c.id, c)).collect();
    if new.len() != o.chunks.len() {
        return Err(bad("a chunk record appears twice".into()));
    }
    let kept: HashMap<_, _> = old_refs.iter().map(|r| (r.id, r.len)).collect();
    let mut seen = HashSet::new();
    for r in refs {
        if !seen.insert(r.id) {
            return Err(bad(format!("chunk {} is referenced twice", r.id)));
        }
        if let Some(c) = new.get(&r.id) {
            if c.len != r.len || c.len == 0 {
                return Err(bad(format!("chunk {} does not match its reference", c.id)));
            }
            check_chunk_record(tx, c)?;
        } else if kept.get(&r.id) != Some(&r.len) {
            return Err(refuse(
                Refused::Conflict,
                format!(
                    "chunk {} is not part of the current version: the object changed meanwhile",
                    r.id
                ),
            ));
        }
    }
    if new.keys().any(|id| !seen.contains(id)) {
        return Err(bad("a chunk record is not referenced".into()));
    }
    Ok(old_refs
        .iter()
        .filter(|r| !seen.contains(&r.id))
        .copied()
        .collect())
}

/// The stored form of an object a writer committed at `at_ms`.
pub(super) fn committed(key: &str, o: &NewObject, at_ms: u64) -> ObjectInfo {
    ObjectInfo {
        key: key.to_string(),
        size: o.size,
        etag: o.etag.clone(),
        content_type: o.content_type.clone(),
        user_meta: o.user_meta.clone(),
        headers: o.headers.clone(),
        mtime_ms: at_ms,
        data: o.data.clone(),
        parts: Vec::new(),
        version_id: None,
        part_checksums: Vec::new(),
    }
}

/// Queries of objects.
pub trait ObjectQueries: Read {
    /// Errors: `NoSuchBucket`, `NoSuchKey`.
    fn object(&self, bucket: &str, key: &str) -> Result<ObjectInfo, MetaError> {
        self.bucket(bucket)?;
        self.get(OBJECTS, &ObjectKey::new(bucket, key))?
            .ok_or_else(|| refuse(Refused::NoSuchKey, format!("no such key: {bucket}/{key}")))
    }

    /// The object at `key`, if any (the bucket is not checked).
    fn object_at(&self, bucket: &str, key: &str) -> Result<Option<ObjectInfo>, MetaError> {
        self.get(OBJECTS, &ObjectKey::new(bucket, key))
    }

    /// Whether the bucket holds no object and no version (noncurrent
    /// versions and delete markers count: S3 refuses to delete a bucket
    /// with any).
    fn bucket_is_empty(&self, bucket: &str) -> Result<bool, MetaError> {
        let mut empty = true;
        self.scan_prefix(OBJECTS, &ObjectKey::bucket_prefix(bucket), |_, _, _| {
            empty = false;
            Ok(Step::Stop)
        })?;
        Ok(empty && !self.any_noncurrent(bucket)?)
    }

    /// Whether any object's key starts with `prefix`.
    fn any_object_under(&self, bucket: &str, prefix: &str) -> Result<bool, MetaError> {
        let mut found = false;
        // Bounded: after many deletions under the bucket, an unbounded seek
        // stepped over every tombstone up to the next live key, and the
        // mount asks this on every lookup and create.
        self.scan_prefix(
            OBJECTS,
            &ObjectKey::new(bucket, prefix).encode(),
            |_, _, _| {
                found = true;
                Ok(Step::Stop)
            },
        )?;
        Ok(found)
    }

    /// Lists a bucket in key order as S3 does: keys under `prefix` after
    /// `start_after`, with keys that share a prefix up to the next
    /// `delimiter` rolled into one common prefix; at most `max_keys`
    /// entries, with `next` set when more follow. Errors: `NoSuchBucket`.
    fn list(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        start_after: Option<&str>,
        max_keys: usize,
    ) -> Result<Listing, MetaError> {
        self.bucket(bucket)?;
        let delimiter = delimiter.filter(|d| !d.is_empty());
        let start_after = start_after.unwrap_or("");
        let mut start = ObjectKey::new(bucket, prefix).encode();
        if start_after > prefix {
            start = ObjectKey::new(bucket, start_after).encode();
            start.push(0); // strictly after
        }
        let mut entries: Vec<ListEntry> = Vec::new();
        let mut truncated = false;
        let under = ObjectKey::new(bucket, prefix).encode();
        self.scan_prefix_from(OBJECTS, &under, &start, |_, k, v| {
            if k.bucket != bucket || !k.key.starts_with(prefix) {
                return Ok(Step::Stop);
            }
            if entries.len() == max_keys {
                truncated = true;
                return Ok(Step::Stop);
            }
            if let Some(d) = delimiter
                && let Some(pos) = k.key[prefix.len()..].find(d)
            {
                let common = &k.key[..prefix.len() + pos + d.len()];
                if common > start_after {
                    entries.push(ListEntry::CommonPrefix(common.to_string()));
                }
                // Skip every key under this prefix: 0xff never occurs in UTF-8.
                let mut next = ObjectKey::new(bucket, common).encode();
                next.push(0xff);
                return Ok(Step::Seek(next));
            }
            entries.push(ListEntry::Object {
                key: k.key,
                size: v.size,
                etag: v.etag,
                mtime_ms: v.mtime_ms,
                storage_class: v.headers.storage_class,
            });
            Ok(Step::Continue)
        })?;
        let next = if truncated {
            entries.last().map(|e| match e {
                ListEntry::Object { key, .. } => key.clone(),
                ListEntry::CommonPrefix(p) => p.clone(),
            })
        } else {
            None
        };
        Ok(Listing { entries, next })
    }
}

impl<R: Read + ?Sized> ObjectQueries for R {}

#[cfg(test)]
mod tests {
    use super::super::StateQueries;
    use super::super::chunks::ChunkQueries;
    use super::super::cluster::ClusterQueries;
    use super::super::tables::GARBAGE;
    use super::super::tables::counter;
    use super::super::testkit::*;
    use super::*;
    use tessera_types::{ChunkId, NodeId};

    #[test]
    fn the_same_commit_sent_again_answers_as_the_first_time() {
        let t = Kit::new();
        t.bucket("bkt");
        let nodes = t.nodes(6);
        let object = t.one_chunk(1, &nodes);
        let first = t.put("bkt", "k", object.clone()).unwrap();
        let objects = t.sm.read().counter(counter::OBJECTS).unwrap();
        // Resent after a lost answer: the same object, nothing retired.
        assert_eq!(t.put("bkt", "k", object.clone()).unwrap(), first);
        let r = t.sm.read();
        assert_eq!(r.counter(counter::OBJECTS).unwrap(), objects);
        assert_eq!(r.counter(counter::GARBAGE).unwrap(), 0);
        drop(r);
        // The same chunks under another key are still refused.
        assert_eq!(
            t.put("bkt", "other", object).unwrap_err().kind,
            Refused::BadRequest
        );
    }

    #[test]
    fn lists_like_s3() {
        let t = Kit::new();
        t.bucket("bkt");
        for k in ["a", "b/1", "b/2", "b/c/3", "c", "d/", "d/x"] {
            t.put("bkt", k, inline(b"x")).unwrap();
        }
        let r = t.sm.read();
        let all = r.list("bkt", "", None, None, 100).unwrap();
        assert_eq!(keys(&all), ["a", "b/1", "b/2", "b/c/3", "c", "d/", "d/x"]);
        let top = r.list("bkt", "", Some("/"), None, 100).unwrap();
        assert_eq!(keys(&top), ["a", "b/*", "c", "d/*"]);
        let under_b = r.list("bkt", "b/", Some("/"), None, 100).unwrap();
        assert_eq!(keys(&under_b), ["b/1", "b/2", "b/c/*"]);
        // Pages continue after `next`, whether it is a key or a prefix.
        let p1 = r.list("bkt", "", Some("/"), None, 2).unwrap();
        assert_eq!(keys(&p1), ["a", "b/*"]);
        assert_eq!(p1.next.as_deref(), Some("b/"));
        let p2 = r.list("bkt", "", Some("/"), p1.next.as_deref(), 2).unwrap();
        assert_eq!(keys(&p2), ["c", "d/*"]);
        assert_eq!(p2.next, None, "nothing follows the last prefix");
        let p3 = r.list("bkt", "", Some("/"), Some("d/"), 2).unwrap();
        assert!(p3.entries.is_empty() && p3.next.is_none());
        assert_eq!(
            r.list("nope", "", None, None, 1).unwrap_err().refused(),
            Some(Refused::NoSuchBucket)
        );
    }

    #[test]
    fn counters_follow_commands() {
        let t = Kit::new();
        let nodes = t.nodes(6);
        t.bucket("bkt");
        t.put("bkt", "a", t.one_chunk(1, &nodes)).unwrap();
        t.put("bkt", "b", inline(b"tiny")).unwrap();
        t.put("bkt", "a", t.one_chunk(2, &nodes)).unwrap();
        let r = t.sm.read();
        assert_eq!(r.counter(counter::OBJECTS).unwrap(), 2);
        assert_eq!(r.counter(counter::CHUNKS).unwrap(), 2);
        assert_eq!(r.counter(counter::GARBAGE).unwrap(), 1);
        assert_eq!(r.counter(counter::GARBAGE_FRAGMENTS).unwrap(), 6);
        assert_eq!(r.counter(counter::GARBAGE_BYTES).unwrap(), 6 * 64);
        let s = r.node_stats(nodes[0]).unwrap();
        assert_eq!((s.fragments, s.bytes), (2, 128));
        drop(r);
        t.ok(Command::DeleteObject {
            bucket: "bkt".into(),
            key: "a".into(),
            at_ms: 3,
        });
        let r = t.sm.read();
        assert_eq!(r.counter(counter::OBJECTS).unwrap(), 1);
        assert_eq!(r.counter(counter::GARBAGE).unwrap(), 2);
    }

    #[test]
    fn overwritten_chunks_become_garbage_and_bad_commits_change_nothing() {
        let t = Kit::new();
        let nodes = t.nodes(6);
        t.bucket("bkt");
        t.put("bkt", "k", t.one_chunk(1, &nodes)).unwrap();
        // Reusing a chunk id is refused, and leaves no trace but the
        // refusal at its index.
        let applied = t.sm.applied_index().unwrap();
        assert_eq!(
            t.put("bkt", "other", t.one_chunk(1, &nodes))
                .unwrap_err()
                .kind,
            Refused::BadRequest
        );
        assert_eq!(t.sm.applied_index().unwrap(), applied + 1);
        let r = t.sm.read();
        assert!(r.object_at("bkt", "other").unwrap().is_none());
        drop(r);
        t.put("bkt", "k", t.one_chunk(2, &nodes)).unwrap();
        let r = t.sm.read();
        assert!(r.get(GARBAGE, &ChunkId([1; 16])).unwrap().is_some());
        assert!(r.get(GARBAGE, &ChunkId([2; 16])).unwrap().is_none());
        let (held, _) = r.node_fragments(NodeId(3), None, 10).unwrap();
        assert_eq!(
            held.len(),
            2,
            "node 3 holds one fragment of each chunk until GC"
        );
        // Malformed commits: size mismatch, unknown node, two fragments on
        // one node, too few fragments.
        drop(r);
        let mut bad = t.one_chunk(9, &nodes);
        bad.size = 11;
        assert_eq!(
            t.put("bkt", "x", bad).unwrap_err().kind,
            Refused::BadRequest
        );
        let mut rec = chunk_record(
            9,
            &[
                NodeId(1),
                NodeId(1),
                NodeId(2),
                NodeId(3),
                NodeId(4),
                NodeId(5),
            ],
        );
        let mut obj = t.one_chunk(9, &nodes);
        obj.chunks = vec![rec.clone()];
        let e = t.put("bkt", "x", obj.clone()).unwrap_err();
        assert!(e.message.contains("two fragments"), "{e}");
        rec.fragments[1].node = NodeId(77);
        obj.chunks = vec![rec.clone()];
        let e = t.put("bkt", "x", obj.clone()).unwrap_err();
        assert!(e.message.contains("unknown node"), "{e}");
        rec.fragments.truncate(2);
        obj.chunks = vec![rec];
        let e = t.put("bkt", "x", obj).unwrap_err();
        assert!(e.message.contains("needs 6"), "{e}");
        assert!(t.sm.read().object_at("bkt", "x").unwrap().is_none());
    }

    #[test]
    fn an_encrypted_objects_chunks_hold_its_sealed_length() {
        use tessera_proto::{ObjectEncryption, SseScheme, sealed_len};
        let t = Kit::new();
        let nodes = t.nodes(6);
        t.bucket("bkt");
        let key = ObjectEncryption {
            scheme: SseScheme::S3,
            key_id: "k1".into(),
            wrapped_key: vec![7; 64],
        };
        let encryption = Some(key.clone());
        // The object's size is its plaintext; its chunks hold the sealed
        // stream.
        let mut obj = sized_chunk(1, sealed_len(100_000), &nodes);
        obj.size = 100_000;
        obj.headers.encryption = encryption.clone();
        t.put("bkt", "enc", obj).unwrap();
        let r = t.sm.read();
        assert_eq!(r.object_at("bkt", "enc").unwrap().unwrap().size, 100_000);
        let listed = r.list("bkt", "", None, None, 10).unwrap().entries;
        assert!(
            matches!(listed.as_slice(), [ListEntry::Object { size: 100_000, .. }]),
            "{listed:?}"
        );
        drop(r);
        // Chunks holding the plaintext's length are a malformed commit.
        let mut bad = sized_chunk(2, 100_000, &nodes);
        bad.headers.encryption = encryption.clone();
        assert_eq!(
            t.put("bkt", "bad", bad).unwrap_err().kind,
            Refused::BadRequest
        );
        // A wrapped key beyond the limit too.
        let mut big = sized_chunk(3, sealed_len(10), &nodes);
        big.size = 10;
        big.headers.encryption = Some(ObjectEncryption {
            wrapped_key: vec![0; tessera_proto::MAX_WRAPPED_KEY + 1],
            ..key
        });
        assert_eq!(
            t.put("bkt", "big", big).unwrap_err().kind,
            Refused::BadRequest
        );
    }

    #[test]
    fn conditional_create_is_checked_in_the_commit() {
        let t = Kit::new();
        t.bucket("bkt");
        let cmd = |at_ms| Command::CommitObject {
            bucket: "bkt".into(),
            key: "k".into(),
            object: inline(b"v"),
            at_ms,
            condition: WriteCondition::Absent,
        };
        assert!(matches!(t.ok(cmd(1)), Applied::Object(o) if o.mtime_ms == 1));
        assert_eq!(t.refused(cmd(2)), Refused::PreconditionFailed);
        assert_eq!(t.sm.read().object("bkt", "k").unwrap().mtime_ms, 1);
    }

    #[test]
    fn if_match_is_a_compare_and_swap_in_the_commit() {
        let t = Kit::new();
        t.bucket("bkt");
        let cmd = |key: &str, body: &[u8], at_ms, condition| Command::CommitObject {
            bucket: "bkt".into(),
            key: key.into(),
            object: NewObject {
                etag: hex::encode(body),
                ..inline(body)
            },
            at_ms,
            condition,
        };
        let etag = |e: &[u8]| WriteCondition::ETag(hex::encode(e));
        // A free key: If-Match (an ETag or *) is NoSuchKey and creates
        // nothing.
        assert_eq!(
            t.refused(cmd("k", b"v1", 1, etag(b"v1"))),
            Refused::NoSuchKey
        );
        assert_eq!(
            t.refused(cmd("k", b"v1", 1, WriteCondition::Exists)),
            Refused::NoSuchKey
        );
        assert!(t.sm.read().object_at("bkt", "k").unwrap().is_none());
        t.ok(cmd("k", b"v1", 1, WriteCondition::Any));
        // A stale ETag keeps the object; the current one replaces it.
        assert_eq!(
            t.refused(cmd("k", b"v2", 2, etag(b"old"))),
            Refused::PreconditionFailed
        );
        assert_eq!(t.sm.read().object("bkt", "k").unwrap().mtime_ms, 1);
        t.ok(cmd("k", b"v2", 3, etag(b"v1")));
        // The swap moved the ETag on: the first writer's ETag is now stale.
        assert_eq!(
            t.refused(cmd("k", b"v3", 4, etag(b"v1"))),
            Refused::PreconditionFailed
        );
        t.ok(cmd("k", b"v3", 5, WriteCondition::Exists));
        let o = t.sm.read().object("bkt", "k").unwrap();
        assert_eq!((o.mtime_ms, o.etag), (5, hex::encode(b"v3")));
    }
}
