//! Buckets: created with a storage policy, deleted only when empty, and
//! then without a trace (their directory entries, grants, tags,
//! versioning state and access settings go with them). A bucket with noncurrent versions or
//! delete markers is not empty.

use tessera_proto::BucketInfo;
use tessera_types::{Policy, validate_bucket_name};

use super::access::drop_bucket_grants;
use super::fsview::drop_bucket_dirs;
use super::objects::ObjectQueries;
use super::tables::{
    BUCKET_ACCESS, BUCKET_LIFECYCLE, BUCKET_LOCK, BUCKET_TAGS, BUCKET_USAGE, BUCKET_VERSIONING,
    BUCKETS, counter,
};
use super::{Applied, Refused, Txn, refuse};
use crate::MetaError;
use crate::store::{Read, Step};

pub(super) fn create_bucket(
    tx: &mut Txn<'_, '_>,
    name: &str,
    policy: Policy,
    at_ms: u64,
) -> Result<Applied, MetaError> {
    validate_bucket_name(name).map_err(|e| refuse(Refused::InvalidBucketName, e.to_string()))?;
    policy
        .validate()
        .map_err(|e| refuse(Refused::InvalidPolicy, e.to_string()))?;
    if tx.get(BUCKETS, &name.to_string())?.is_some() {
        return Err(refuse(
            Refused::BucketExists,
            format!("bucket {name} already exists"),
        ));
    }
    let info = BucketInfo {
        name: name.to_string(),
        policy,
        created_ms: at_ms,
    };
    tx.put(BUCKETS, &info.name, &info)?;
    tx.add(counter::BUCKETS, 1);
    Ok(Applied::Bucket(info))
}

pub(super) fn delete_bucket(tx: &mut Txn<'_, '_>, name: &str) -> Result<Applied, MetaError> {
    tx.bucket(name)?;
    if !tx.bucket_is_empty(name)? {
        return Err(refuse(
            Refused::BucketNotEmpty,
            format!("bucket {name} is not empty"),
        ));
    }
    tx.delete(BUCKETS, &name.to_string())?;
    tx.add(counter::BUCKETS, -1);
    drop_bucket_dirs(tx, name)?;
    drop_bucket_grants(tx, name)?;
    tx.delete(BUCKET_TAGS, &name.to_string())?;
    tx.delete(BUCKET_VERSIONING, &name.to_string())?;
    tx.delete(BUCKET_ACCESS, &name.to_string())?;
    tx.delete(BUCKET_LOCK, &name.to_string())?;
    tx.delete(BUCKET_LIFECYCLE, &name.to_string())?;
    // Zeros by now (the bucket is empty); the row goes with the bucket.
    tx.delete(BUCKET_USAGE, &name.to_string())?;
    Ok(Applied::Deleted { existed: true })
}

/// Queries of buckets.
pub trait BucketQueries: Read {
    /// Errors: `NoSuchBucket`.
    fn bucket(&self, name: &str) -> Result<BucketInfo, MetaError> {
        self.get(BUCKETS, &name.to_string())?
            .ok_or_else(|| refuse(Refused::NoSuchBucket, format!("no such bucket: {name}")))
    }

    fn buckets(&self) -> Result<Vec<BucketInfo>, MetaError> {
        let mut out = Vec::new();
        self.scan(BUCKETS, &[], |_, _, v| {
            out.push(v);
            Ok(Step::Continue)
        })?;
        Ok(out)
    }
}

impl<R: Read + ?Sized> BucketQueries for R {}

#[cfg(test)]
mod tests {
    use super::super::StateQueries;
    use super::super::testkit::*;
    use super::*;

    #[test]
    fn buckets_delete_only_when_empty() {
        let t = Kit::new();
        t.bucket("bkt");
        assert_eq!(
            t.refused(Command::CreateBucket {
                name: "bkt".into(),
                policy: Policy::default(),
                at_ms: 2
            }),
            Refused::BucketExists
        );
        assert_eq!(
            t.refused(Command::CreateBucket {
                name: "No_Good".into(),
                policy: Policy::default(),
                at_ms: 2
            }),
            Refused::InvalidBucketName
        );
        t.put("bkt", "k", inline(b"x")).unwrap();
        assert_eq!(
            t.refused(Command::DeleteBucket { name: "bkt".into() }),
            Refused::BucketNotEmpty
        );
        t.ok(Command::DeleteObject {
            bucket: "bkt".into(),
            key: "k".into(),
            at_ms: 2,
        });
        t.ok(Command::DeleteBucket { name: "bkt".into() });
        assert_eq!(
            t.refused(Command::DeleteBucket { name: "bkt".into() }),
            Refused::NoSuchBucket
        );
        let r = t.sm.read();
        assert_eq!(r.counter(counter::BUCKETS).unwrap(), 0);
        assert!(r.buckets().unwrap().is_empty());
    }
}
