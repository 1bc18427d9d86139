//! Storage classes and lifecycle transitions (issue 15; S3 User Guide,
//! "Transitioning objects using Amazon S3 Lifecycle"): the operator's map
//! from an S3 storage class to a Tessera policy (table `storage_classes`;
//! STANDARD is always each bucket's own policy), the queue of versions a
//! lifecycle rule moved to a mapped class (table `transitions`, filled by
//! the lifecycle worker), and `Transition`, which swaps a version's chunks
//! for the re-encoded ones the repairer wrote, only if the version is
//! still the one that was read (compare-and-swap), handing the old chunks
//! to garbage collection. Object Lock does not stop a transition: it keeps
//! a version from removal, and a transition removes nothing but copies
//! (S3 transitions locked objects too).

use tessera_proto::{
    ChunkRecord, ChunkRef, MAPPABLE_STORAGE_CLASSES, ObjectData, ObjectVersion, TransitionItem,
    version_label,
};
use tessera_types::{ChunkId, Policy};

use super::buckets::BucketQueries;
use super::chunks::{check_chunk_record, retire_chunk_ids, store_chunks};
use super::tables::{OBJECTS, STORAGE_CLASSES, TRANSITIONS, VERSIONS};
use super::versions::{VersionQueries, parse_version};
use super::{Applied, Refused, Txn, refuse};
use crate::MetaError;
use crate::keys::ObjectKey;
use crate::store::{Read, Step};

/// Most transitions handed out per `TransitionWork` query.
pub const MAX_TRANSITION_WORK: usize = 256;

/// Maps `class` to `policy`, or (`None`) removes its mapping: writes in
/// that class then take the bucket's policy again; what was written
/// before keeps its chunks' policy. Errors: `BadRequest` (STANDARD, or a
/// class an object cannot be written in: see
/// [`MAPPABLE_STORAGE_CLASSES`]), `InvalidPolicy`.
pub(super) fn set_storage_class(
    tx: &mut Txn<'_, '_>,
    class: &str,
    policy: Option<&Policy>,
) -> Result<Applied, MetaError> {
    if !MAPPABLE_STORAGE_CLASSES.contains(&class) {
        return Err(refuse(
            Refused::BadRequest,
            format!(
                "storage class {class} cannot be mapped (STANDARD is each bucket's policy); one of {}",
                MAPPABLE_STORAGE_CLASSES.join(", ")
            ),
        ));
    }
    match policy {
        Some(p) => {
            p.validate()
                .map_err(|e| refuse(Refused::InvalidPolicy, e.to_string()))?;
            tx.put(STORAGE_CLASSES, &class.to_string(), p)?;
        }
        None => tx.delete(STORAGE_CLASSES, &class.to_string())?,
    }
    Ok(Applied::Done)
}

/// Where a queued transition lies: one entry per version.
fn queue_key(bucket: &str, key: &str, version: &str) -> ObjectKey {
    // A version label (16 hex digits or `null`) holds no `/`.
    ObjectKey::new(bucket, &format!("{version}/{key}"))
}

/// Queues a version for re-encoding (the lifecycle worker's decision);
/// queuing it again changes nothing. Errors: `NoSuchBucket`.
pub(super) fn queue_transition(
    tx: &mut Txn<'_, '_>,
    item: &TransitionItem,
) -> Result<Applied, MetaError> {
    tx.bucket(&item.bucket)?;
    let qkey = queue_key(&item.bucket, &item.key, &item.version);
    if !tx.contains(TRANSITIONS, &qkey)? {
        tx.put(TRANSITIONS, &qkey, item)?;
    }
    Ok(Applied::Done)
}

/// The version `item` names, re-encoded: its chunks `old` (in order, as
/// read) become `chunks` (fresh records of the same lengths, in the item's
/// policy) and its storage class the item's, in the one step, if the
/// version is still there with the mtime and chunks it was read with;
/// the old chunks go to garbage. The queue entry goes either way. A
/// version that changed meanwhile (overwritten, removed, already
/// re-encoded) is left alone: `Deleted { existed: false }`, and the new
/// chunks were never recorded (the nodes collect their fragments as any
/// failed write's). Errors: `BadRequest` (new chunks that
/// do not match the old ones in number and length, or are not fresh).
pub(super) fn transition(
    tx: &mut Txn<'_, '_>,
    item: &TransitionItem,
    old: &[ChunkId],
    chunks: &[ChunkRecord],
    at_ms: u64,
) -> Result<Applied, MetaError> {
    // No bucket check: an entry whose bucket went must go too.
    tx.delete(
        TRANSITIONS,
        &queue_key(&item.bucket, &item.key, &item.version),
    )?;
    let okey = ObjectKey::new(&item.bucket, &item.key);
    let (slot, mut info) = match tx.get(OBJECTS, &okey)? {
        Some(cur) if version_label(&cur.version_id) == item.version => (None, cur),
        _ => {
            let Ok(sel) = parse_version(&item.version) else {
                return Ok(Applied::Deleted { existed: false });
            };
            match tx.find_noncurrent(&item.bucket, &item.key, &item.version, sel)? {
                Some((vkey, ObjectVersion::Object(o))) => (Some(vkey), o),
                _ => return Ok(Applied::Deleted { existed: false }),
            }
        }
    };
    let refs: Vec<ChunkRef> = match &info.data {
        ObjectData::Chunks(refs) => refs.clone(),
        ObjectData::Inline(_) => Vec::new(),
    };
    let unchanged = info.mtime_ms == item.mtime_ms
        && refs.len() == old.len()
        && refs.iter().zip(old).all(|(r, id)| r.id == *id)
        && info.headers.storage_class.as_deref() != Some(item.storage_class.as_str());
    if !unchanged {
        return Ok(Applied::Deleted { existed: false });
    }
    if chunks.len() != refs.len() || refs.iter().zip(chunks).any(|(r, c)| r.len != c.len) {
        return Err(refuse(
            Refused::BadRequest,
            "a transition's chunks must match the version's in number and length",
        ));
    }
    for c in chunks {
        check_chunk_record(tx, c)?;
    }
    store_chunks(tx, chunks)?;
    retire_chunk_ids(tx, old, at_ms)?;
    if let ObjectData::Chunks(_) = &info.data {
        info.data = ObjectData::Chunks(
            chunks
                .iter()
                .map(|c| ChunkRef {
                    id: c.id,
                    len: c.len,
                })
                .collect(),
        );
    }
    info.headers.storage_class = Some(item.storage_class.clone());
    match slot {
        None => tx.put(OBJECTS, &okey, &info)?,
        Some(vkey) => tx.put(VERSIONS, &vkey, &ObjectVersion::Object(info.clone()))?,
    }
    Ok(Applied::Object(Box::new(info)))
}

/// Queries of storage classes and transitions.
pub trait StorageClassQueries: Read {
    /// The operator's storage classes and their policies, by name.
    fn storage_classes(&self) -> Result<Vec<(String, Policy)>, MetaError> {
        let mut out = Vec::new();
        self.scan(STORAGE_CLASSES, &[], |_, k: String, p| {
            out.push((k, p));
            Ok(Step::Continue)
        })?;
        Ok(out)
    }

    /// The policy of `class`, if the operator mapped it.
    fn storage_class(&self, class: &str) -> Result<Option<Policy>, MetaError> {
        self.get(STORAGE_CLASSES, &class.to_string())
    }

    /// Up to `limit` (at most [`MAX_TRANSITION_WORK`]) queued transitions,
    /// in bucket and key order.
    fn transition_work(&self, limit: usize) -> Result<Vec<TransitionItem>, MetaError> {
        let limit = limit.min(MAX_TRANSITION_WORK);
        let mut out = Vec::new();
        self.scan(TRANSITIONS, &[], |_, _: ObjectKey, item| {
            out.push(item);
            Ok(if out.len() >= limit {
                Step::Stop
            } else {
                Step::Continue
            })
        })?;
        Ok(out)
    }

    /// Whether `version` of `bucket/key` is queued for a transition.
    fn transition_queued(&self, bucket: &str, key: &str, version: &str) -> Result<bool, MetaError> {
        self.contains(TRANSITIONS, &queue_key(bucket, key, version))
    }

    /// How many transitions are queued.
    fn transitions_queued(&self) -> Result<u64, MetaError> {
        let mut n = 0;
        self.scan(TRANSITIONS, &[], |_, _: ObjectKey, _: TransitionItem| {
            n += 1;
            Ok(Step::Continue)
        })?;
        Ok(n)
    }
}

impl<R: Read + ?Sized> StorageClassQueries for R {}

#[cfg(test)]
mod tests {
    use super::super::StateQueries;
    use super::super::chunks::ChunkQueries;
    use super::super::objects::ObjectQueries;
    use super::super::tables::{GARBAGE, counter};
    use super::super::testkit::*;
    use super::super::{Command, Refused};
    use super::*;

    fn item(version: &str, mtime_ms: u64) -> TransitionItem {
        TransitionItem {
            bucket: "bkt".into(),
            key: "k".into(),
            version: version.into(),
            mtime_ms,
            storage_class: "STANDARD_IA".into(),
            policy: "rep:2".parse().unwrap(),
        }
    }

    /// A copy of `rec` under a new id, in rep:2 on two of `nodes`.
    fn re_encoded(rec: &ChunkRecord, id: u8, nodes: &[tessera_types::NodeId]) -> ChunkRecord {
        let mut c = chunk_record(id, &nodes[..2]);
        c.policy = "rep:2".parse().unwrap();
        c.len = rec.len;
        c
    }

    #[test]
    fn classes_map_to_policies_but_standard_and_archives() {
        let t = Kit::new();
        let set = |class: &str, policy: Option<&str>| Command::SetStorageClass {
            class: class.into(),
            policy: policy.map(|p| p.parse().unwrap()),
        };
        t.ok(set("STANDARD_IA", Some("ec:6+3")));
        t.ok(set("GLACIER_IR", Some("rep:2")));
        assert_eq!(
            t.refused(set("STANDARD", Some("rep:3"))),
            Refused::BadRequest
        );
        assert_eq!(
            t.refused(set("GLACIER", Some("rep:3"))),
            Refused::BadRequest
        );
        let bad = Command::SetStorageClass {
            class: "ONEZONE_IA".into(),
            policy: Some(Policy::Erasure { data: 0, parity: 1 }),
        };
        assert_eq!(t.refused(bad), Refused::InvalidPolicy);
        t.ok(set("GLACIER_IR", None));
        let r = t.sm.read();
        assert_eq!(
            r.storage_classes().unwrap(),
            vec![("STANDARD_IA".to_string(), "ec:6+3".parse().unwrap())]
        );
    }

    #[test]
    fn a_transition_swaps_the_chunks_of_an_unchanged_version_only() {
        let t = Kit::new();
        let nodes = t.nodes(6);
        t.bucket("bkt");
        t.put("bkt", "k", t.one_chunk(1, &nodes)).unwrap();
        let old = t.sm.read().object("bkt", "k").unwrap();
        let ObjectData::Chunks(refs) = &old.data else {
            panic!("not chunks")
        };
        let old_ids: Vec<ChunkId> = refs.iter().map(|r| r.id).collect();
        let rec = t.sm.read().chunk(old_ids[0]).unwrap().unwrap();
        t.ok(Command::QueueTransition {
            item: item("null", old.mtime_ms),
        });
        t.ok(Command::QueueTransition {
            item: item("null", old.mtime_ms),
        });
        assert_eq!(t.sm.read().transition_work(10).unwrap().len(), 1);

        // Chunks that do not match in length are refused; nothing changes.
        let mut wrong = re_encoded(&rec, 2, &nodes);
        wrong.len += 1;
        let transition = |i: TransitionItem, old: Vec<ChunkId>, chunks| Command::Transition {
            item: i,
            old,
            chunks,
            at_ms: 5,
        };
        assert_eq!(
            t.refused(transition(
                item("null", old.mtime_ms),
                old_ids.clone(),
                vec![wrong]
            )),
            Refused::BadRequest
        );
        // A version read before it was rewritten is left alone.
        let stale = transition(
            item("null", old.mtime_ms + 1),
            old_ids.clone(),
            vec![re_encoded(&rec, 3, &nodes)],
        );
        assert_eq!(t.ok(stale), Applied::Deleted { existed: false });
        assert!(t.sm.read().transition_work(10).unwrap().is_empty());
        let garbage = t.sm.read().counter(counter::GARBAGE).unwrap();

        let Applied::Object(o) = t.ok(transition(
            item("null", old.mtime_ms),
            old_ids.clone(),
            vec![re_encoded(&rec, 4, &nodes)],
        )) else {
            panic!("not applied")
        };
        assert_eq!(o.headers.storage_class.as_deref(), Some("STANDARD_IA"));
        let r = t.sm.read();
        let now = r.object("bkt", "k").unwrap();
        assert_eq!(now.size, old.size);
        assert_eq!(now.etag, old.etag);
        let ObjectData::Chunks(new_refs) = &now.data else {
            panic!("not chunks")
        };
        assert_eq!(new_refs[0].id, ChunkId([4; 16]));
        assert_eq!(
            r.chunk(new_refs[0].id).unwrap().unwrap().policy.to_string(),
            "rep:2"
        );
        assert_eq!(r.counter(counter::GARBAGE).unwrap(), garbage + 1);
        assert!(r.get(GARBAGE, &old_ids[0]).unwrap().is_some());
        drop(r);
        // Done once: the same transition again finds the class reached.
        assert_eq!(
            t.ok(transition(
                item("null", old.mtime_ms),
                vec![ChunkId([4; 16])],
                vec![re_encoded(&rec, 5, &nodes)]
            )),
            Applied::Deleted { existed: false }
        );
    }
}
