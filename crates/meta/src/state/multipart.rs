//! Multipart uploads (S3's rules): parts are committed as they arrive,
//! each with its own chunks; completion joins the listed parts' chunks into
//! one object without copying data (the ETag is S3's MD5 of the parts' MD5s
//! and "-N"); parts not listed, and aborted uploads, become garbage.

use tessera_proto::{
    ChunkRef, NewObject, ObjectData, ObjectInfo, PartInfo, UploadInfo, WriteCondition,
};
use tessera_types::validate_key;

use super::buckets::BucketQueries;
use super::chunks::{retire_chunks, store_chunks};
use super::objects::{MAX_CHUNKS_PER_OBJECT, check_condition, check_new_object};
use super::tables::{OBJECTS, PARTS, UPLOADS};
use super::versions::install;
use super::{Applied, Refused, Txn, refuse};
use crate::MetaError;
use crate::keys::ObjectKey;
use crate::store::{Read, Step};

/// Smallest part S3 accepts, except for the last one (bytes).
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// Part numbers run from 1 to this.
pub const MAX_PART_NUMBER: u32 = 10_000;

fn part_key(upload: &str, number: u32) -> ObjectKey {
    ObjectKey::new(upload, &format!("{number:05}"))
}

pub(super) fn create_upload(
    tx: &mut Txn<'_, '_>,
    upload: &UploadInfo,
) -> Result<Applied, MetaError> {
    tx.bucket(&upload.bucket)?;
    validate_key(&upload.key).map_err(|e| refuse(Refused::InvalidKey, e.to_string()))?;
    super::tags::check_object_tags(&upload.headers.tags)?;
    if tx.get(UPLOADS, &upload.id)?.is_some() {
        return Err(refuse(
            Refused::Conflict,
            format!("upload id {} is in use", upload.id),
        ));
    }
    tx.put(UPLOADS, &upload.id, upload)?;
    Ok(Applied::Upload(Box::new(upload.clone())))
}

pub(super) fn commit_part(
    tx: &mut Txn<'_, '_>,
    upload: &str,
    number: u32,
    part: &NewObject,
    at_ms: u64,
) -> Result<Applied, MetaError> {
    tx.upload(upload)?;
    if !(1..=MAX_PART_NUMBER).contains(&number) {
        return Err(refuse(
            Refused::BadRequest,
            format!("part numbers run from 1 to {MAX_PART_NUMBER}"),
        ));
    }
    let ObjectData::Chunks(refs) = &part.data else {
        return Err(refuse(Refused::BadRequest, "parts are stored as chunks"));
    };
    check_new_object(tx, part)?;
    let pkey = part_key(upload, number);
    if let Some(old) = tx.get(PARTS, &pkey)? {
        retire_chunks(tx, &old.chunks, at_ms)?;
    }
    store_chunks(tx, &part.chunks)?;
    let info = PartInfo {
        number,
        size: part.size,
        etag: part.etag.clone(),
        mtime_ms: at_ms,
        chunks: refs.clone(),
        checksums: part.headers.checksums.clone(),
    };
    tx.put(PARTS, &pkey, &info)?;
    Ok(Applied::Part(info))
}

pub(super) fn complete_upload(
    tx: &mut Txn<'_, '_>,
    upload: &str,
    parts: &[(u32, String)],
    condition: &WriteCondition,
    checksum: Option<&(String, String)>,
    at_ms: u64,
) -> Result<Applied, MetaError> {
    let info = tx.upload(upload)?;
    let stored = tx.parts(upload)?;
    // S3 answers MalformedXML to a completion without parts: a request
    // fault, which the gateway catches first.
    if parts.is_empty() {
        return Err(refuse(Refused::BadRequest, "a completion needs parts"));
    }
    let mut refs: Vec<ChunkRef> = Vec::new();
    let mut md5s = Vec::new();
    let mut size = 0u64;
    let mut sizes = Vec::with_capacity(parts.len());
    let mut part_checksums = Vec::new();
    let mut last = 0;
    for (i, (number, etag)) in parts.iter().enumerate() {
        if *number <= last {
            return Err(refuse(
                Refused::InvalidPartOrder,
                "parts must be listed in ascending order",
            ));
        }
        last = *number;
        let etag = etag.trim_matches('"');
        let Some(p) = stored
            .iter()
            .find(|p| p.number == *number && p.etag == etag)
        else {
            return Err(refuse(
                Refused::InvalidPart,
                format!("part {number} with ETag {etag} was not uploaded"),
            ));
        };
        if i + 1 < parts.len() && p.size < MIN_PART_SIZE {
            return Err(refuse(
                Refused::EntityTooSmall,
                format!(
                    "part {number} is {} bytes; all but the last must be at least 5 MiB",
                    p.size
                ),
            ));
        }
        if let Some((algorithm, _)) = checksum {
            // The object's checksum was computed from these parts' checksums
            // (by the gateway, from the parts it listed): a part without one
            // cannot have been among them.
            let Some(sum) = p.checksums.get(algorithm) else {
                return Err(refuse(
                    Refused::InvalidPart,
                    format!("part {number} has no {algorithm} checksum"),
                ));
            };
            part_checksums.push(sum.clone());
        }
        size += p.size;
        sizes.push(p.size);
        refs.extend(p.chunks.iter().copied());
        md5s.push(p.etag.clone());
    }
    if refs.len() > MAX_CHUNKS_PER_OBJECT {
        return Err(refuse(Refused::TooLarge, "too many chunks in one object"));
    }
    let okey = ObjectKey::new(&info.bucket, &info.key);
    let old = tx.get(OBJECTS, &okey)?;
    // A failed condition leaves the upload as it was: the client may retry.
    check_condition(condition, old.as_ref(), &info.bucket, &info.key)?;
    for p in &stored {
        if !parts.iter().any(|(n, _)| *n == p.number) {
            retire_chunks(tx, &p.chunks, at_ms)?;
        }
        tx.delete(PARTS, &part_key(upload, p.number))?;
    }
    tx.delete(UPLOADS, &upload.to_string())?;
    let mut headers = info.headers.clone();
    headers.checksums = checksum.into_iter().cloned().collect();
    let object = ObjectInfo {
        key: info.key.clone(),
        size,
        etag: multipart_etag(&md5s),
        content_type: info.content_type.clone(),
        user_meta: info.user_meta.clone(),
        headers,
        mtime_ms: at_ms,
        data: ObjectData::Chunks(refs),
        parts: sizes,
        version_id: None,
        part_checksums,
    };
    let object = install(tx, (&info.bucket, &info.key), old, object, at_ms)?;
    Ok(Applied::Object(Box::new(object)))
}

pub(super) fn abort_upload(
    tx: &mut Txn<'_, '_>,
    upload: &str,
    at_ms: u64,
) -> Result<Applied, MetaError> {
    tx.upload(upload)?;
    for p in tx.parts(upload)? {
        retire_chunks(tx, &p.chunks, at_ms)?;
        tx.delete(PARTS, &part_key(upload, p.number))?;
    }
    tx.delete(UPLOADS, &upload.to_string())?;
    Ok(Applied::Deleted { existed: true })
}

/// S3's multipart ETag: the MD5 of the parts' binary MD5s, then "-N".
pub fn multipart_etag(part_md5s: &[String]) -> String {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    for e in part_md5s {
        h.update(hex::decode(e).unwrap_or_default());
    }
    format!("{}-{}", hex::encode(h.finalize()), part_md5s.len())
}

/// Queries of uploads in progress.
pub trait MultipartQueries: Read {
    /// Errors: `NoSuchUpload`.
    fn upload(&self, id: &str) -> Result<UploadInfo, MetaError> {
        self.get(UPLOADS, &id.to_string())?
            .ok_or_else(|| refuse(Refused::NoSuchUpload, format!("no such upload: {id}")))
    }

    fn part(&self, upload: &str, number: u32) -> Result<Option<PartInfo>, MetaError> {
        self.get(PARTS, &part_key(upload, number))
    }

    /// An upload's parts in part-number order.
    fn parts(&self, upload: &str) -> Result<Vec<PartInfo>, MetaError> {
        let mut out = Vec::new();
        self.scan_prefix(
            PARTS,
            &ObjectKey::bucket_prefix(upload),
            |_, k: ObjectKey, p| {
                if k.bucket != upload {
                    return Ok(Step::Stop);
                }
                out.push(p);
                Ok(Step::Continue)
            },
        )?;
        Ok(out)
    }

    /// Uploads in progress, of one bucket or (with `None`) all.
    fn uploads(&self, bucket: Option<&str>) -> Result<Vec<UploadInfo>, MetaError> {
        let mut out = Vec::new();
        self.scan(UPLOADS, &[], |_, _, u: UploadInfo| {
            if bucket.is_none_or(|b| b == u.bucket) {
                out.push(u);
            }
            Ok(Step::Continue)
        })?;
        Ok(out)
    }
}

impl<R: Read + ?Sized> MultipartQueries for R {}

#[cfg(test)]
mod tests {
    use super::super::StateQueries;
    use super::super::objects::ObjectQueries;
    use super::super::tables::counter;
    use super::super::testkit::*;
    use super::*;

    #[test]
    fn uploads_complete_from_listed_parts_and_retire_the_rest() {
        let t = Kit::new();
        let nodes = t.nodes(6);
        t.bucket("bkt");
        let upload = upload_info("u1", "bkt", "big");
        let upload2 = upload.clone();
        t.ok(Command::CreateUpload {
            upload: upload.clone(),
        });
        assert_eq!(
            t.refused(Command::CreateUpload { upload }),
            Refused::Conflict
        );
        let part = |n: u32, id: u8, size: u64| Command::CommitPart {
            upload: "u1".into(),
            number: n,
            part: sized_chunk(id, size, &nodes),
            at_ms: 2,
        };
        t.ok(part(1, 1, MIN_PART_SIZE));
        t.ok(part(2, 2, 10));
        t.ok(part(3, 3, 10));
        // Part 2 again replaces the first upload of it.
        t.ok(part(2, 4, 10));
        assert_eq!(t.refused(part(0, 5, 10)), Refused::BadRequest);
        let r = t.sm.read();
        assert_eq!(r.parts("u1").unwrap().len(), 3);
        assert_eq!(r.counter(counter::GARBAGE).unwrap(), 1);
        drop(r);
        let complete = |parts: Vec<(u32, String)>| Command::CompleteUpload {
            upload: "u1".into(),
            parts,
            condition: WriteCondition::Any,
            checksum: None,
            at_ms: 3,
        };
        let e = |id: u8| hex::encode([id; 16]);
        assert_eq!(t.refused(complete(vec![])), Refused::BadRequest);
        assert_eq!(
            t.refused(complete(vec![(1, e(1)), (1, e(1))])),
            Refused::InvalidPartOrder
        );
        assert_eq!(t.refused(complete(vec![(2, e(2))])), Refused::InvalidPart);
        assert_eq!(
            t.refused(complete(vec![(2, e(4)), (3, e(3))])),
            Refused::EntityTooSmall
        );
        // A condition that fails leaves the upload to be completed again.
        let conditional = |condition| Command::CompleteUpload {
            upload: "u1".into(),
            parts: vec![(1, e(1)), (2, e(4))],
            condition,
            checksum: None,
            at_ms: 3,
        };
        assert_eq!(
            t.refused(conditional(WriteCondition::ETag("nope".into()))),
            Refused::NoSuchKey
        );
        assert_eq!(t.sm.read().parts("u1").unwrap().len(), 3);
        let Applied::Object(o) = t.ok(complete(vec![(1, e(1)), (2, format!("\"{}\"", e(4)))]))
        else {
            panic!("no object")
        };
        assert_eq!(o.size, MIN_PART_SIZE + 10);
        assert_eq!(o.parts, vec![MIN_PART_SIZE, 10]);
        assert!(o.etag.ends_with("-2"));
        let r = t.sm.read();
        assert_eq!(r.object("bkt", "big").unwrap().etag, o.etag);
        drop(r);
        // The key now holds an object: a second upload completes only while
        // the ETag it names is still the current one.
        t.ok(Command::CreateUpload {
            upload: UploadInfo {
                id: "u2".into(),
                ..upload2
            },
        });
        t.ok(Command::CommitPart {
            upload: "u2".into(),
            number: 1,
            part: sized_chunk(6, 10, &nodes),
            at_ms: 4,
        });
        let second = |condition| Command::CompleteUpload {
            upload: "u2".into(),
            parts: vec![(1, e(6))],
            condition,
            checksum: None,
            at_ms: 5,
        };
        assert_eq!(
            t.refused(second(WriteCondition::ETag("stale".into()))),
            Refused::PreconditionFailed
        );
        assert_eq!(
            t.refused(second(WriteCondition::Absent)),
            Refused::PreconditionFailed
        );
        assert_eq!(t.sm.read().object("bkt", "big").unwrap().etag, o.etag);
        t.ok(second(WriteCondition::ETag(o.etag.clone())));
        assert_eq!(t.sm.read().object("bkt", "big").unwrap().size, 10);
        let r = t.sm.read();
        // Part 3 was not listed: garbage, with the replaced part 2 and the
        // two chunks of the object the second upload replaced.
        assert_eq!(r.counter(counter::GARBAGE).unwrap(), 4);
        assert!(r.uploads(None).unwrap().is_empty());
        assert_eq!(
            r.upload("u1").unwrap_err().refused(),
            Some(Refused::NoSuchUpload)
        );
        drop(r);
        assert_eq!(
            t.refused(Command::AbortUpload {
                upload: "u1".into(),
                at_ms: 4
            }),
            Refused::NoSuchUpload
        );
    }

    #[test]
    fn a_completion_keeps_the_object_checksum_and_its_parts() {
        let t = Kit::new();
        let nodes = t.nodes(6);
        t.bucket("bkt");
        t.ok(Command::CreateUpload {
            upload: upload_info("u1", "bkt", "k"),
        });
        let part = |n: u32, id: u8, size: u64, sums: &[(&str, &str)]| {
            let mut p = sized_chunk(id, size, &nodes);
            p.headers.checksums = sums
                .iter()
                .map(|(a, v)| (a.to_string(), v.to_string()))
                .collect();
            Command::CommitPart {
                upload: "u1".into(),
                number: n,
                part: p,
                at_ms: 2,
            }
        };
        t.ok(part(
            1,
            1,
            MIN_PART_SIZE,
            &[("crc32", "AAAAAQ=="), ("crc64nvme", "x")],
        ));
        t.ok(part(2, 2, 10, &[("crc64nvme", "y")]));
        assert_eq!(t.sm.read().parts("u1").unwrap()[0].checksums.len(), 2);
        let e = |id: u8| hex::encode([id; 16]);
        let complete = |algorithm: &str| Command::CompleteUpload {
            upload: "u1".into(),
            parts: vec![(1, e(1)), (2, e(2))],
            condition: WriteCondition::Any,
            checksum: Some((algorithm.into(), "whole".into())),
            at_ms: 3,
        };
        // Part 2 has no CRC32: the checksum cannot have come from it.
        assert_eq!(t.refused(complete("crc32")), Refused::InvalidPart);
        let Applied::Object(o) = t.ok(complete("crc64nvme")) else {
            panic!("no object")
        };
        assert_eq!(o.headers.checksums.len(), 1);
        assert_eq!(o.headers.checksums["crc64nvme"], "whole");
        assert_eq!(o.part_checksums, vec!["x".to_string(), "y".to_string()]);
        let stored = t.sm.read().object("bkt", "k").unwrap();
        assert_eq!(stored.part_checksums, o.part_checksums);
    }
}
