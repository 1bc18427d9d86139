//! Versions (S3 User Guide, "Retaining multiple versions of objects with
//! S3 Versioning"): a bucket's versioning state, the versions of its keys,
//! delete markers, and the listing of them all.
//!
//! Layout: the current object of a key (its newest version, when that is
//! an object) stays in `objects`, as in a bucket never versioned, so reads,
//! listings, conditional writes and everything else that works on current
//! objects is unchanged. Every other version (noncurrent objects, and every
//! delete marker, current or not) is in `versions` under (bucket, key,
//! order). Invariant: a key with an entry in `objects` has its newest
//! version there; a key without one has, if anything, a delete marker as
//! its newest `versions` entry.
//!
//! Orders are drawn from one counter, `u64::MAX - n` for the n-th version
//! drawn, so a key's versions sort newest first and a version id is its
//! order in 16 hex digits: a lookup by id is one point read, and a listing
//! is a key-order scan. The `null` version (written while the bucket was
//! unversioned or suspended) has no id: in `objects` it is simply the
//! current object with `version_id` `None` (written unversioned) or
//! `null` (written suspended, so S3's `x-amz-version-id: null` follows); when it becomes noncurrent it
//! draws an order then (it is newer than every other `versions` entry of
//! its key, older than what replaces it), recorded in `null_versions`.
//!
//! Nothing here moves data: a version keeps its chunks, which stay live
//! (out of the garbage table) until the version is removed for good.

use std::collections::VecDeque;

use tessera_proto::{
    Acl, DeleteMarker, NULL_VERSION, ObjectInfo, ObjectVersion, Removal, TagSet, VersionListEntry,
    VersionListing, VersionSummary, Versioning, acl_fault, is_null_version, version_id_is_valid,
    version_label,
};
use tessera_types::validate_key;

use super::buckets::BucketQueries;
use super::chunks::{retire, retire_chunks};
use super::object_lock;
use super::objects::{ObjectQueries, remove_object};
use super::tables::{BUCKET_VERSIONING, NULL_VERSIONS, OBJECTS, VERSIONS, counter};
use super::tags::check_object_tags;
use super::{Applied, Refused, Txn, refuse};
use crate::MetaError;
use crate::keys::{ObjectKey, VersionKey};
use crate::store::{KeyCodec, Read, Step, Table};
use serde::de::DeserializeOwned;

/// Entries read from each table at a time while merging a listing.
const LIST_BATCH: usize = 256;

/// A version as a request names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSel {
    Null,
    /// The version with this order (its id is the order in hex).
    Order(u64),
}

/// Parses a version as S3 names it: `null` or an id meta handed out.
/// Errors: `BadRequest` (S3's `InvalidArgument`, "Invalid version id").
pub fn parse_version(s: &str) -> Result<VersionSel, MetaError> {
    if s == NULL_VERSION {
        return Ok(VersionSel::Null);
    }
    if !version_id_is_valid(s) {
        return Err(refuse(
            Refused::BadRequest,
            format!("invalid version id specified: {s:?}"),
        ));
    }
    u64::from_str_radix(s, 16)
        .map(VersionSel::Order)
        .map_err(|_| refuse(Refused::BadRequest, format!("invalid version id: {s:?}")))
}

/// The id of the version at `order`: 16 lower-case hex digits, so ids sort
/// as orders do (newest first).
pub fn version_id(order: u64) -> String {
    format!("{order:016x}")
}

/// The order of a stored version id; a stored id that does not parse is
/// corruption, not a client's mistake.
fn order_of(id: &str) -> Result<u64, MetaError> {
    match parse_version(id) {
        Ok(VersionSel::Order(o)) => Ok(o),
        _ => Err(MetaError::Corrupt(format!("stored version id {id:?}"))),
    }
}

/// Draws the next version's order: lower than every order drawn before.
fn draw_order(tx: &mut Txn<'_, '_>) -> Result<u64, MetaError> {
    tx.add(counter::VERSION_SEQ, 1);
    Ok(u64::MAX - tx.counter_now(counter::VERSION_SEQ)?)
}

/// PutBucketVersioning: `Enabled` or `Suspended`; a bucket never returns to
/// unversioned (there is no such state to ask for). Errors: `NoSuchBucket`,
/// `InvalidBucketState` (suspending a bucket with Object Lock).
pub(super) fn set_versioning(
    tx: &mut Txn<'_, '_>,
    bucket: &str,
    state: Versioning,
) -> Result<Applied, MetaError> {
    tx.bucket(bucket)?;
    object_lock::check_versioning_change(tx, bucket, state)?;
    tx.put(BUCKET_VERSIONING, &bucket.to_string(), &state)?;
    Ok(Applied::Done)
}

/// Makes `info` the current object of `key` as the bucket's versioning
/// says, and returns it as stored (with its version id). Unversioned: the
/// old object goes, its chunks to garbage. Enabled: `info` gets a new id
/// and the old current object becomes noncurrent. Suspended: `info` is the
/// `null` version, replacing the old `null` version wherever it is (S3 User
/// Guide, "Adding objects to versioning-suspended buckets"). The caller has
/// checked the bucket, the key and any write condition against `old`, the
/// key's current object as it read it in this command. Object Lock
/// settings are checked and the bucket's default retention applied here
/// (`object_lock::on_install`): errors `InvalidRequest`.
pub(super) fn install(
    tx: &mut Txn<'_, '_>,
    (bucket, key): (&str, &str),
    old: Option<ObjectInfo>,
    mut info: ObjectInfo,
    at_ms: u64,
) -> Result<ObjectInfo, MetaError> {
    if let Some(fault) = info.headers.acl.as_ref().and_then(acl_fault) {
        return Err(refuse(Refused::BadRequest, fault));
    }
    let okey = ObjectKey::new(bucket, key);
    object_lock::on_install(tx, bucket, &mut info, at_ms)?;
    match tx.versioning(bucket)? {
        None => {
            if let Some(old) = old {
                retire(tx, &old, at_ms)?;
            }
            info.version_id = None;
        }
        Some(Versioning::Enabled) => {
            if let Some(old) = old {
                demote(tx, bucket, key, old)?;
            }
            info.version_id = Some(version_id(draw_order(tx)?));
        }
        Some(Versioning::Suspended) => {
            drop_noncurrent_null(tx, bucket, key, at_ms)?;
            match old {
                Some(old) if is_null_version(&old.version_id) => retire(tx, &old, at_ms)?,
                Some(old) => demote(tx, bucket, key, old)?,
                None => {}
            }
            // The null version, named: S3 answers `x-amz-version-id: null`.
            info.version_id = Some(NULL_VERSION.to_string());
        }
    }
    tx.put(OBJECTS, &okey, &info)?;
    tx.add(counter::OBJECTS, 1);
    Ok(info)
}

/// Moves the current object `old` of `key` into `versions` (the caller
/// replaces or deletes its `objects` entry). A `null` version draws its
/// order now: it is newer than the key's other noncurrent versions.
fn demote(tx: &mut Txn<'_, '_>, bucket: &str, key: &str, old: ObjectInfo) -> Result<(), MetaError> {
    let order = match &old.version_id {
        Some(id) if id != NULL_VERSION => order_of(id)?,
        _ => {
            let order = draw_order(tx)?;
            tx.put(NULL_VERSIONS, &ObjectKey::new(bucket, key), &order)?;
            order
        }
    };
    tx.put(
        VERSIONS,
        &VersionKey::new(bucket, key, order),
        &ObjectVersion::Object(old),
    )?;
    tx.add(counter::OBJECTS, -1);
    tx.add(counter::VERSIONS, 1);
    Ok(())
}

/// Removes a `versions` entry for good: an object's chunks become garbage.
fn forget(
    tx: &mut Txn<'_, '_>,
    vkey: &VersionKey,
    v: &ObjectVersion,
    at_ms: u64,
) -> Result<(), MetaError> {
    tx.delete(VERSIONS, vkey)?;
    if let ObjectVersion::Object(o) = v
        && let tessera_proto::ObjectData::Chunks(refs) = &o.data
    {
        retire_chunks(tx, refs, at_ms)?;
    }
    tx.add(counter::VERSIONS, -1);
    Ok(())
}

/// Removes the key's noncurrent `null` version, if it has one.
fn drop_noncurrent_null(
    tx: &mut Txn<'_, '_>,
    bucket: &str,
    key: &str,
    at_ms: u64,
) -> Result<(), MetaError> {
    let okey = ObjectKey::new(bucket, key);
    let Some(order) = tx.get(NULL_VERSIONS, &okey)? else {
        return Ok(());
    };
    tx.delete(NULL_VERSIONS, &okey)?;
    let vkey = VersionKey::new(bucket, key, order);
    if let Some(v) = tx.get(VERSIONS, &vkey)? {
        forget(tx, &vkey, &v, at_ms)?;
    }
    Ok(())
}

/// After the current version went: the newest remaining version becomes
/// current if it is an object (a delete marker stays where it is).
fn promote(tx: &mut Txn<'_, '_>, bucket: &str, key: &str) -> Result<(), MetaError> {
    let Some((vkey, ObjectVersion::Object(o))) = tx.newest_noncurrent(bucket, key)? else {
        return Ok(());
    };
    let okey = ObjectKey::new(bucket, key);
    tx.delete(VERSIONS, &vkey)?;
    if is_null_version(&o.version_id) {
        tx.delete(NULL_VERSIONS, &okey)?;
    }
    tx.put(OBJECTS, &okey, &o)?;
    tx.add(counter::OBJECTS, 1);
    tx.add(counter::VERSIONS, -1);
    Ok(())
}

/// DeleteObject without a version id (S3 User Guide, "Deleting object
/// versions"): unversioned, the object goes; Enabled, a delete marker with
/// a new id becomes the newest version (even for a key with no object, as
/// S3 does); Suspended, the `null` version goes wherever it is and a
/// `null` delete marker becomes the newest. Errors: `NoSuchBucket`,
/// `InvalidKey`.
pub(super) fn delete_current(
    tx: &mut Txn<'_, '_>,
    bucket: &str,
    key: &str,
    at_ms: u64,
) -> Result<Removal, MetaError> {
    tx.bucket(bucket)?;
    let Some(state) = tx.versioning(bucket)? else {
        let existed = remove_object(tx, bucket, key, at_ms)?;
        return Ok(Removal {
            existed,
            delete_marker: false,
            version_id: None,
        });
    };
    validate_key(key).map_err(|e| refuse(Refused::InvalidKey, e.to_string()))?;
    let okey = ObjectKey::new(bucket, key);
    let suspended = state == Versioning::Suspended;
    if suspended {
        drop_noncurrent_null(tx, bucket, key, at_ms)?;
    }
    if let Some(old) = tx.get(OBJECTS, &okey)? {
        tx.delete(OBJECTS, &okey)?;
        if suspended && is_null_version(&old.version_id) {
            retire(tx, &old, at_ms)?;
        } else {
            demote(tx, bucket, key, old)?;
        }
    }
    let order = draw_order(tx)?;
    let version = if suspended {
        tx.put(NULL_VERSIONS, &okey, &order)?;
        None
    } else {
        Some(version_id(order))
    };
    let marker = DeleteMarker {
        key: key.to_string(),
        version_id: version.clone(),
        mtime_ms: at_ms,
    };
    tx.put(
        VERSIONS,
        &VersionKey::new(bucket, key, order),
        &ObjectVersion::DeleteMarker(marker),
    )?;
    tx.add(counter::VERSIONS, 1);
    Ok(Removal {
        existed: true,
        delete_marker: true,
        version_id: Some(version_label(&version).to_string()),
    })
}

/// DeleteObject with a version id: removes that version for good (its
/// chunks to garbage); when it was the newest, the next newest object
/// becomes current. An unknown version removes nothing (`existed: false`),
/// as S3 answers 204 for it. A version under Object Lock stays
/// (`object_lock::check_removal`; `bypass_governance` lets a GOVERNANCE
/// retention pass). Errors: `NoSuchBucket`, `BadRequest` (a malformed id),
/// `ObjectLocked`.
pub(super) fn delete_version(
    tx: &mut Txn<'_, '_>,
    (bucket, key, version): (&str, &str, &str),
    at_ms: u64,
    bypass_governance: bool,
) -> Result<Removal, MetaError> {
    tx.bucket(bucket)?;
    let sel = parse_version(version)?;
    let okey = ObjectKey::new(bucket, key);
    let removal = |existed, delete_marker| Removal {
        existed,
        delete_marker,
        version_id: Some(version.to_string()),
    };
    if let Some(cur) = tx.get(OBJECTS, &okey)?
        && version_label(&cur.version_id) == version
    {
        object_lock::check_removal(&cur, at_ms, bypass_governance)?;
        tx.delete(OBJECTS, &okey)?;
        retire(tx, &cur, at_ms)?;
        promote(tx, bucket, key)?;
        return Ok(removal(true, false));
    }
    let Some((vkey, v)) = tx.find_noncurrent(bucket, key, version, sel)? else {
        return Ok(removal(false, false));
    };
    if let ObjectVersion::Object(o) = &v {
        object_lock::check_removal(o, at_ms, bypass_governance)?;
    }
    if sel == VersionSel::Null {
        tx.delete(NULL_VERSIONS, &okey)?;
    }
    forget(tx, &vkey, &v, at_ms)?;
    if tx.get(OBJECTS, &okey)?.is_none() {
        // The newest version may have been a delete marker over an object.
        promote(tx, bucket, key)?;
    }
    Ok(removal(true, matches!(v, ObjectVersion::DeleteMarker(_))))
}

/// PutObjectTagging with a version id: replaces that version's tags.
/// Errors: `NoSuchBucket`, `BadRequest`, `NoSuchVersion`, `InvalidTag`,
/// `MethodNotAllowed` (a delete marker has no tags).
pub(super) fn set_version_tags(
    tx: &mut Txn<'_, '_>,
    bucket: &str,
    key: &str,
    version: &str,
    tags: &TagSet,
) -> Result<Applied, MetaError> {
    check_object_tags(tags)?;
    change_version(tx, (bucket, key, Some(version)), |o| {
        o.headers.tags = tags.clone();
        Ok(())
    })
}

/// PutObjectAcl: replaces the ACL of one version (`None`: the current
/// object); `acl: None` leaves the owner's FULL_CONTROL only. Errors:
/// `NoSuchBucket`, `NoSuchKey`, `BadRequest` (a bad version id, beyond
/// `acl_fault`'s limits), `NoSuchVersion`, `MethodNotAllowed` (a delete
/// marker has no ACL).
pub(super) fn set_object_acl(
    tx: &mut Txn<'_, '_>,
    (bucket, key, version): (&str, &str, Option<&str>),
    acl: Option<&Acl>,
) -> Result<Applied, MetaError> {
    if let Some(fault) = acl.and_then(acl_fault) {
        return Err(refuse(Refused::BadRequest, fault));
    }
    change_version(tx, (bucket, key, version), |o| {
        o.headers.acl = acl.cloned();
        Ok(())
    })
}

/// Applies `change` to one version of a key (`version: None`: the current
/// object) where it is stored, keeping its ETag and modification time (S3
/// changes neither for tags, ACLs or locks); answers the object as
/// changed. Errors: `NoSuchBucket`, `BadRequest` (a bad version id),
/// `NoSuchKey`, `NoSuchVersion`, `MethodNotAllowed` (a delete marker),
/// and `change`'s.
pub(super) fn change_version(
    tx: &mut Txn<'_, '_>,
    (bucket, key, version): (&str, &str, Option<&str>),
    change: impl FnOnce(&mut ObjectInfo) -> Result<(), MetaError>,
) -> Result<Applied, MetaError> {
    tx.bucket(bucket)?;
    let sel = version.map(parse_version).transpose()?;
    let okey = ObjectKey::new(bucket, key);
    if let Some(mut cur) = tx.get(OBJECTS, &okey)?
        && version.is_none_or(|v| version_label(&cur.version_id) == v)
    {
        change(&mut cur)?;
        tx.put(OBJECTS, &okey, &cur)?;
        return Ok(Applied::Object(Box::new(cur)));
    }
    let (Some(version), Some(sel)) = (version, sel) else {
        return Err(refuse(
            Refused::NoSuchKey,
            format!("no such key: {bucket}/{key}"),
        ));
    };
    match tx.find_noncurrent(bucket, key, version, sel)? {
        Some((vkey, ObjectVersion::Object(mut o))) => {
            change(&mut o)?;
            tx.put(VERSIONS, &vkey, &ObjectVersion::Object(o.clone()))?;
            Ok(Applied::Object(Box::new(o)))
        }
        Some((_, ObjectVersion::DeleteMarker(_))) => Err(refuse(
            Refused::MethodNotAllowed,
            format!("version {version} of {bucket}/{key} is a delete marker"),
        )),
        None => Err(no_such_version(bucket, key, version)),
    }
}

/// Refuses `what` (a file-system view write) in a bucket that keeps
/// versions: those writes replace or move current objects in place
/// (copy-on-write patches share chunks with the version they patch, a
/// rename moves one key's object to another), which would bypass or break
/// the versions. Errors: `BadRequest`.
pub(super) fn refuse_if_versioned(
    tx: &Txn<'_, '_>,
    bucket: &str,
    what: &str,
) -> Result<(), MetaError> {
    match tx.versioning(bucket)? {
        None => Ok(()),
        Some(_) => Err(refuse(
            Refused::BadRequest,
            format!("bucket {bucket} keeps versions: {what} is not supported there"),
        )),
    }
}

fn no_such_version(bucket: &str, key: &str, version: &str) -> MetaError {
    refuse(
        Refused::NoSuchVersion,
        format!("no version {version} of {bucket}/{key}"),
    )
}

/// One source of a version listing, read a batch at a time.
struct Run<T> {
    items: VecDeque<(String, T)>,
    /// Where the next batch starts; `None` when the source is exhausted.
    from: Option<Vec<u8>>,
    /// The encoded prefix every entry of the listing starts with: the
    /// scans stop at its end instead of stepping over deleted keys after it.
    under: Vec<u8>,
}

impl<T> Run<T> {
    fn new(from: Vec<u8>, under: Vec<u8>) -> Self {
        Run {
            items: VecDeque::new(),
            from: Some(from),
            under,
        }
    }

    /// Drops every item under `common` and moves the next batch to `past`
    /// (the first position after the prefix) if it would start before it.
    fn skip(&mut self, common: &str, past: Vec<u8>) {
        while self
            .items
            .front()
            .is_some_and(|(k, _)| k.starts_with(common))
        {
            self.items.pop_front();
        }
        if self.items.is_empty()
            && let Some(from) = &mut self.from
            && *from < past
        {
            *from = past;
        }
    }

    fn front_key(&self) -> Option<&str> {
        self.items.front().map(|(k, _)| k.as_str())
    }

    /// Refills the run from `table` when it is empty: entries of `bucket`
    /// under `prefix`, as `item` gives them (bucket, key, item).
    fn fill<R: Read + ?Sized, K: KeyCodec, V: DeserializeOwned>(
        &mut self,
        r: &R,
        table: Table<K, V>,
        (bucket, prefix): (&str, &str),
        item: impl Fn(K, V) -> (String, String, T),
    ) -> Result<(), MetaError> {
        if !self.items.is_empty() {
            return Ok(());
        }
        let Some(from) = self.from.take() else {
            return Ok(());
        };
        r.scan_prefix_from(table, &self.under, &from, |raw, k, v| {
            let (b, key, t) = item(k, v);
            if b != bucket || !key.starts_with(prefix) {
                return Ok(Step::Stop);
            }
            if self.items.len() == LIST_BATCH {
                self.from = Some(raw.to_vec());
                return Ok(Step::Stop);
            }
            self.items.push_back((key, t));
            Ok(Step::Continue)
        })
    }
}

fn summary(key: String, v: &ObjectVersion, is_latest: bool) -> VersionSummary {
    match v {
        ObjectVersion::Object(o) => VersionSummary {
            key,
            version_id: o.version_id.clone(),
            is_latest,
            delete_marker: false,
            size: o.size,
            etag: o.etag.clone(),
            mtime_ms: o.mtime_ms,
            storage_class: o.headers.storage_class.clone(),
        },
        ObjectVersion::DeleteMarker(m) => VersionSummary {
            key,
            version_id: m.version_id.clone(),
            is_latest,
            delete_marker: true,
            size: 0,
            etag: String::new(),
            mtime_ms: m.mtime_ms,
            storage_class: None,
        },
    }
}

/// Queries of versions.
pub trait VersionQueries: Read {
    /// A bucket's versioning state; `None` if never versioned (the bucket
    /// is not checked).
    fn versioning(&self, bucket: &str) -> Result<Option<Versioning>, MetaError> {
        self.get(BUCKET_VERSIONING, &bucket.to_string())
    }

    /// The newest `versions` entry of `key`.
    fn newest_noncurrent(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<(VersionKey, ObjectVersion)>, MetaError> {
        let end = VersionKey::key_end(bucket, key);
        let mut found = None;
        self.scan(
            VERSIONS,
            &VersionKey::key_start(bucket, key),
            |raw, k, v| {
                if raw < end.as_slice() {
                    found = Some((k, v));
                }
                Ok(Step::Stop)
            },
        )?;
        Ok(found)
    }

    /// The `versions` entry that `version` (as S3 names it, parsed as
    /// `sel`) names, if any: an id never finds a `null` entry.
    fn find_noncurrent(
        &self,
        bucket: &str,
        key: &str,
        version: &str,
        sel: VersionSel,
    ) -> Result<Option<(VersionKey, ObjectVersion)>, MetaError> {
        let order = match sel {
            VersionSel::Order(o) => o,
            VersionSel::Null => match self.get(NULL_VERSIONS, &ObjectKey::new(bucket, key))? {
                Some(o) => o,
                None => return Ok(None),
            },
        };
        let vkey = VersionKey::new(bucket, key, order);
        Ok(self
            .get(VERSIONS, &vkey)?
            .filter(|v| version_label(v.version_id()) == version)
            .map(|v| (vkey, v)))
    }

    /// One version of `key`: `version` as S3 names it, or the newest
    /// (object or delete marker) when `None`. Errors: `NoSuchBucket`,
    /// `NoSuchKey` (no version at all), `NoSuchVersion`, `BadRequest` (a
    /// malformed id).
    fn version(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> Result<ObjectVersion, MetaError> {
        self.bucket(bucket)?;
        let sel = version.map(parse_version).transpose()?;
        let current = self.object_at(bucket, key)?;
        let (Some(version), Some(sel)) = (version, sel) else {
            if let Some(o) = current {
                return Ok(ObjectVersion::Object(o));
            }
            return self
                .newest_noncurrent(bucket, key)?
                .map(|(_, v)| v)
                .ok_or_else(|| refuse(Refused::NoSuchKey, format!("no such key: {bucket}/{key}")));
        };
        if let Some(o) = current
            && version_label(&o.version_id) == version
        {
            return Ok(ObjectVersion::Object(o));
        }
        self.find_noncurrent(bucket, key, version, sel)?
            .map(|(_, v)| v)
            .ok_or_else(|| no_such_version(bucket, key, version))
    }

    /// Whether the bucket holds any noncurrent version or delete marker.
    fn any_noncurrent(&self, bucket: &str) -> Result<bool, MetaError> {
        let mut found = false;
        self.scan_prefix(VERSIONS, &ObjectKey::bucket_prefix(bucket), |_, k, _| {
            found = k.bucket == bucket;
            Ok(Step::Stop)
        })?;
        Ok(found)
    }

    /// ListObjectVersions (S3 API reference): versions and delete markers
    /// of keys under `prefix`, in key order and newest first within a key,
    /// after `key_marker` (and, within that key, after `version_marker`:
    /// an id or `null`); keys sharing a prefix up to the next `delimiter`
    /// are one common prefix. At most `max_keys` entries; `next_key` and
    /// `next_version` are set when more follow. The current objects and
    /// the other versions are two tables, merged here in key order (the
    /// current object first: it is its key's newest version).
    /// Errors: `NoSuchBucket`, `BadRequest` (a malformed version marker).
    fn list_versions(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        key_marker: Option<&str>,
        version_marker: Option<&str>,
        max_keys: usize,
    ) -> Result<VersionListing, MetaError> {
        self.bucket(bucket)?;
        let delimiter = delimiter.filter(|d| !d.is_empty());
        let key_marker = key_marker.filter(|k| !k.is_empty());
        let version_marker = version_marker.filter(|v| !v.is_empty());
        let mut cur_from = ObjectKey::new(bucket, prefix).encode();
        let mut old_from = VersionKey::prefix(bucket, prefix);
        if let Some(k) = key_marker {
            let mut after_key = ObjectKey::new(bucket, k).encode();
            after_key.push(0);
            let old_after = match version_marker {
                None => VersionKey::key_end(bucket, k),
                Some(v) => {
                    let order = match parse_version(v)? {
                        VersionSel::Order(o) => Some(o),
                        // The current object is the null version: every
                        // noncurrent version comes after it.
                        VersionSel::Null
                            if self
                                .object_at(bucket, k)?
                                .is_some_and(|o| is_null_version(&o.version_id)) =>
                        {
                            None
                        }
                        // A null version gone since: past the whole key.
                        VersionSel::Null => Some(
                            self.get(NULL_VERSIONS, &ObjectKey::new(bucket, k))?
                                .unwrap_or(u64::MAX),
                        ),
                    };
                    match order {
                        Some(o) if o < u64::MAX => VersionKey::new(bucket, k, o + 1).encode(),
                        Some(_) => VersionKey::key_end(bucket, k),
                        None => VersionKey::key_start(bucket, k),
                    }
                }
            };
            cur_from = cur_from.max(after_key);
            old_from = old_from.max(old_after);
        }
        let mut cur: Run<ObjectInfo> = Run::new(cur_from, ObjectKey::new(bucket, prefix).encode());
        let mut old: Run<(u64, ObjectVersion)> =
            Run::new(old_from, VersionKey::prefix(bucket, prefix));
        let mut entries: Vec<VersionListEntry> = Vec::new();
        let mut truncated = false;
        let mut last_key: Option<String> = None;
        loop {
            cur.fill(self, OBJECTS, (bucket, prefix), |k, v| (k.bucket, k.key, v))?;
            old.fill(self, VERSIONS, (bucket, prefix), |k, v| {
                (k.bucket, k.key, (k.order, v))
            })?;
            let take_current = match (cur.front_key(), old.front_key()) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                // A key's current object is its newest version.
                (Some(a), Some(b)) => a <= b,
            };
            let key = if take_current {
                cur.front_key()
            } else {
                old.front_key()
            }
            .unwrap_or_default()
            .to_string();
            if let Some(d) = delimiter
                && let Some(pos) = key[prefix.len()..].find(d)
            {
                let common = key[..prefix.len() + pos + d.len()].to_string();
                if key_marker.is_none_or(|m| common.as_str() > m) {
                    if entries.len() == max_keys {
                        truncated = true;
                        break;
                    }
                    entries.push(VersionListEntry::CommonPrefix(common.clone()));
                }
                // 0xff never occurs in UTF-8 (nor in the escaped form).
                let mut past = ObjectKey::new(bucket, &common).encode();
                past.push(0xff);
                cur.skip(&common, past);
                let mut past = VersionKey::prefix(bucket, &common);
                past.push(0xff);
                old.skip(&common, past);
                continue;
            }
            if entries.len() == max_keys {
                truncated = true;
                break;
            }
            let summary = if take_current {
                let Some((key, o)) = cur.items.pop_front() else {
                    break;
                };
                summary(key, &ObjectVersion::Object(o), true)
            } else {
                let Some((key, (order, v))) = old.items.pop_front() else {
                    break;
                };
                let is_latest = if last_key.as_deref() == Some(key.as_str()) {
                    false
                } else if key_marker == Some(key.as_str()) {
                    // The page began inside this key: look at what is newer.
                    self.object_at(bucket, &key)?.is_none()
                        && self
                            .newest_noncurrent(bucket, &key)?
                            .is_some_and(|(k, _)| k.order == order)
                } else {
                    // A current object of this key would have come first.
                    true
                };
                summary(key, &v, is_latest)
            };
            last_key = Some(summary.key.clone());
            entries.push(VersionListEntry::Version(summary));
        }
        let (next_key, next_version) = match entries.last() {
            Some(VersionListEntry::Version(v)) if truncated => (
                Some(v.key.clone()),
                Some(version_label(&v.version_id).to_string()),
            ),
            Some(VersionListEntry::CommonPrefix(p)) if truncated => (Some(p.clone()), None),
            _ => (None, None),
        };
        Ok(VersionListing {
            entries,
            next_key,
            next_version,
        })
    }
}

impl<R: Read + ?Sized> VersionQueries for R {}

#[cfg(test)]
mod tests {
    use super::super::StateQueries;
    use super::super::chunks::ChunkQueries;
    use super::super::tables::GARBAGE;
    use super::super::testkit::*;
    use super::*;
    use tessera_proto::WriteCondition;
    use tessera_types::ChunkId;

    fn enable(t: &Kit, state: Versioning) {
        t.ok(Command::SetVersioning {
            bucket: "bkt".into(),
            state,
        });
    }

    /// Puts `body` inline and returns the version id meta gave it.
    fn put(t: &Kit, key: &str, body: &[u8]) -> Option<String> {
        match t.put("bkt", key, inline(body)).unwrap() {
            Applied::Object(o) => o.version_id,
            other => panic!("{other:?}"),
        }
    }

    fn delete(t: &Kit, key: &str) -> Removal {
        match t.ok(Command::DeleteObject {
            bucket: "bkt".into(),
            key: key.into(),
            at_ms: 9,
        }) {
            Applied::Removed(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn delete_version(t: &Kit, key: &str, version: &str) -> Removal {
        match t.ok(Command::DeleteVersion {
            bucket: "bkt".into(),
            key: key.into(),
            version: version.into(),
            at_ms: 9,
            bypass_governance: false,
        }) {
            Applied::Removed(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn body(v: &ObjectVersion) -> Vec<u8> {
        match v {
            ObjectVersion::Object(o) => match &o.data {
                tessera_proto::ObjectData::Inline(b) => b.clone(),
                other => panic!("{other:?}"),
            },
            ObjectVersion::DeleteMarker(m) => panic!("marker {m:?}"),
        }
    }

    /// (key, version label, latest, marker) of every entry, common prefixes
    /// as (prefix, "", false, false).
    fn rows(l: &VersionListing) -> Vec<(String, String, bool, bool)> {
        l.entries
            .iter()
            .map(|e| match e {
                VersionListEntry::Version(v) => (
                    v.key.clone(),
                    version_label(&v.version_id).to_string(),
                    v.is_latest,
                    v.delete_marker,
                ),
                VersionListEntry::CommonPrefix(p) => (p.clone(), String::new(), false, false),
            })
            .collect()
    }

    fn all_versions(t: &Kit) -> Vec<(String, String, bool, bool)> {
        rows(
            &t.sm
                .read()
                .list_versions("bkt", "", None, None, None, 1000)
                .unwrap(),
        )
    }

    #[test]
    fn versioning_state_is_set_read_and_dropped_with_the_bucket() {
        let t = Kit::new();
        t.bucket("bkt");
        assert_eq!(t.sm.read().versioning("bkt").unwrap(), None);
        enable(&t, Versioning::Enabled);
        assert_eq!(
            t.sm.read().versioning("bkt").unwrap(),
            Some(Versioning::Enabled)
        );
        enable(&t, Versioning::Suspended);
        assert_eq!(
            t.sm.read().versioning("bkt").unwrap(),
            Some(Versioning::Suspended)
        );
        assert_eq!(
            t.refused(Command::SetVersioning {
                bucket: "nope".into(),
                state: Versioning::Enabled
            }),
            Refused::NoSuchBucket
        );
        t.ok(Command::DeleteBucket { name: "bkt".into() });
        t.bucket("bkt");
        assert_eq!(t.sm.read().versioning("bkt").unwrap(), None);
    }

    #[test]
    fn enabled_puts_keep_every_version_newest_first() {
        let t = Kit::new();
        t.bucket("bkt");
        // Written before versioning: the null version.
        assert_eq!(put(&t, "k", b"v0"), None);
        enable(&t, Versioning::Enabled);
        let v1 = put(&t, "k", b"v1").unwrap();
        let v2 = put(&t, "k", b"v2").unwrap();
        assert!(v2 < v1, "newer ids sort first: {v2} {v1}");
        assert_eq!(v1.len(), 16);
        let r = t.sm.read();
        assert_eq!(body(&r.version("bkt", "k", None).unwrap()), b"v2");
        assert_eq!(body(&r.version("bkt", "k", Some(&v1)).unwrap()), b"v1");
        assert_eq!(body(&r.version("bkt", "k", Some("null")).unwrap()), b"v0");
        assert_eq!(r.object("bkt", "k").unwrap().version_id, Some(v2.clone()));
        // The plain listing shows the current object only.
        assert_eq!(keys(&r.list("bkt", "", None, None, 10).unwrap()), ["k"]);
        assert_eq!(r.counter(counter::OBJECTS).unwrap(), 1);
        assert_eq!(r.counter(counter::VERSIONS).unwrap(), 2);
        drop(r);
        let s = |x: &str| x.to_string();
        assert_eq!(
            all_versions(&t),
            [
                (s("k"), v2.clone(), true, false),
                (s("k"), v1.clone(), false, false),
                (s("k"), s("null"), false, false),
            ]
        );
        // Unknown and malformed ids.
        let r = t.sm.read();
        let unknown = version_id(7);
        let e = r.version("bkt", "k", Some(&unknown)).unwrap_err();
        assert_eq!(e.refused(), Some(Refused::NoSuchVersion));
        for bad in ["NULL", "xyz", "0123456789ABCDEF", "0123456789abcde", ""] {
            let e = r.version("bkt", "k", Some(bad)).unwrap_err();
            assert_eq!(e.refused(), Some(Refused::BadRequest), "{bad:?}");
        }
        assert_eq!(
            r.version("bkt", "other", None).unwrap_err().refused(),
            Some(Refused::NoSuchKey)
        );
    }

    #[test]
    fn delete_markers_hide_the_key_and_removing_them_brings_it_back() {
        let t = Kit::new();
        t.bucket("bkt");
        enable(&t, Versioning::Enabled);
        let v1 = put(&t, "k", b"v1").unwrap();
        let d = delete(&t, "k");
        assert!(d.delete_marker && d.existed);
        let marker = d.version_id.unwrap();
        let r = t.sm.read();
        assert!(r.object_at("bkt", "k").unwrap().is_none());
        assert!(
            r.list("bkt", "", None, None, 10)
                .unwrap()
                .entries
                .is_empty()
        );
        assert!(matches!(
            r.version("bkt", "k", None).unwrap(),
            ObjectVersion::DeleteMarker(m) if m.version_id.as_deref() == Some(marker.as_str())
        ));
        drop(r);
        // A second delete stacks another marker, as in S3.
        let d2 = delete(&t, "k").version_id.unwrap();
        let s = |x: &str| x.to_string();
        assert_eq!(
            all_versions(&t),
            [
                (s("k"), d2.clone(), true, true),
                (s("k"), marker.clone(), false, true),
                (s("k"), v1.clone(), false, false),
            ]
        );
        // The bucket is not empty while versions remain.
        assert_eq!(
            t.refused(Command::DeleteBucket { name: "bkt".into() }),
            Refused::BucketNotEmpty
        );
        // Removing the newest marker leaves the older one newest; removing
        // that brings v1 back as the current object.
        let r1 = delete_version(&t, "k", &d2);
        assert!(r1.existed && r1.delete_marker);
        assert!(t.sm.read().object_at("bkt", "k").unwrap().is_none());
        delete_version(&t, "k", &marker);
        let o = t.sm.read().object("bkt", "k").unwrap();
        assert_eq!(o.version_id, Some(v1.clone()));
        assert_eq!(all_versions(&t), [(s("k"), v1.clone(), true, false)]);
        // An unknown version removes nothing.
        let r2 = delete_version(&t, "k", &version_id(3));
        assert!(!r2.existed);
        assert_eq!(
            t.refused(Command::DeleteVersion {
                bucket: "bkt".into(),
                key: "k".into(),
                version: "bad".into(),
                at_ms: 1,
                bypass_governance: false,
            }),
            Refused::BadRequest
        );
        delete_version(&t, "k", &v1);
        let r = t.sm.read();
        assert!(r.bucket_is_empty("bkt").unwrap());
        assert_eq!(r.counter(counter::OBJECTS).unwrap(), 0);
        assert_eq!(r.counter(counter::VERSIONS).unwrap(), 0);
        drop(r);
        t.ok(Command::DeleteBucket { name: "bkt".into() });
    }

    #[test]
    fn old_versions_keep_their_chunks_until_removed_for_good() {
        let t = Kit::new();
        let nodes = t.nodes(6);
        t.bucket("bkt");
        enable(&t, Versioning::Enabled);
        let v1 = match t.put("bkt", "k", t.one_chunk(1, &nodes)).unwrap() {
            Applied::Object(o) => o.version_id.unwrap(),
            other => panic!("{other:?}"),
        };
        t.put("bkt", "k", t.one_chunk(2, &nodes)).unwrap();
        delete(&t, "k");
        let r = t.sm.read();
        assert_eq!(r.counter(counter::GARBAGE).unwrap(), 0);
        assert!(r.get(GARBAGE, &ChunkId([1; 16])).unwrap().is_none());
        assert_eq!(r.chunks(&[ChunkId([1; 16])]).unwrap().len(), 1);
        drop(r);
        delete_version(&t, "k", &v1);
        let r = t.sm.read();
        assert!(r.get(GARBAGE, &ChunkId([1; 16])).unwrap().is_some());
        assert!(r.get(GARBAGE, &ChunkId([2; 16])).unwrap().is_none());
        assert_eq!(r.counter(counter::GARBAGE).unwrap(), 1);
    }

    #[test]
    fn suspended_writes_replace_the_null_version_wherever_it_is() {
        let t = Kit::new();
        let nodes = t.nodes(6);
        t.bucket("bkt");
        t.put("bkt", "k", t.one_chunk(1, &nodes)).unwrap(); // null
        enable(&t, Versioning::Enabled);
        let v1 = put(&t, "k", b"v1").unwrap(); // null now noncurrent
        enable(&t, Versioning::Suspended);
        // The new null version replaces the noncurrent null one (its
        // chunk to garbage) and v1 becomes noncurrent.
        assert_eq!(put(&t, "k", b"s1").as_deref(), Some("null"));
        let s = |x: &str| x.to_string();
        assert_eq!(
            all_versions(&t),
            [
                (s("k"), s("null"), true, false),
                (s("k"), v1.clone(), false, false),
            ]
        );
        assert!(
            t.sm.read()
                .get(GARBAGE, &ChunkId([1; 16]))
                .unwrap()
                .is_some()
        );
        // Another suspended put replaces the current null version.
        assert_eq!(put(&t, "k", b"s2").as_deref(), Some("null"));
        assert_eq!(all_versions(&t).len(), 2);
        assert_eq!(
            body(&t.sm.read().version("bkt", "k", Some("null")).unwrap()),
            b"s2"
        );
        // A suspended delete: the null version goes, a null marker comes.
        let d = delete(&t, "k");
        assert_eq!(
            (d.delete_marker, d.version_id.as_deref()),
            (true, Some("null"))
        );
        assert_eq!(
            all_versions(&t),
            [
                (s("k"), s("null"), true, true),
                (s("k"), v1.clone(), false, false),
            ]
        );
        // Enabled again: a put stacks on top of the null marker.
        enable(&t, Versioning::Enabled);
        let v3 = put(&t, "k", b"v3").unwrap();
        assert_eq!(
            all_versions(&t),
            [
                (s("k"), v3.clone(), true, false),
                (s("k"), s("null"), false, true),
                (s("k"), v1.clone(), false, false),
            ]
        );
        // Removing the null marker by name.
        let r = delete_version(&t, "k", "null");
        assert!(r.delete_marker);
        assert_eq!(all_versions(&t).len(), 2);
    }

    #[test]
    fn unversioned_buckets_answer_the_null_version() {
        let t = Kit::new();
        t.bucket("bkt");
        put(&t, "k", b"x");
        let r = t.sm.read();
        assert_eq!(body(&r.version("bkt", "k", Some("null")).unwrap()), b"x");
        assert_eq!(
            r.version("bkt", "k", Some(&version_id(1)))
                .unwrap_err()
                .refused(),
            Some(Refused::NoSuchVersion)
        );
        drop(r);
        let d = delete(&t, "k");
        assert_eq!(
            (d.existed, d.delete_marker, d.version_id),
            (true, false, None)
        );
        put(&t, "k", b"y");
        assert!(delete_version(&t, "k", "null").existed);
        assert!(t.sm.read().bucket_is_empty("bkt").unwrap());
    }

    #[test]
    fn listing_pages_with_markers_prefixes_and_delimiters() {
        let t = Kit::new();
        t.bucket("bkt");
        put(&t, "a", b"0"); // null
        enable(&t, Versioning::Enabled);
        let mut expected = Vec::new();
        let s = |x: &str| x.to_string();
        for key in ["a", "b/1", "b/2", "c"] {
            let mut ids = Vec::new();
            for i in 0..3 {
                ids.push(put(&t, key, format!("{key}{i}").as_bytes()).unwrap());
            }
            if key == "b/2" {
                ids.push(delete(&t, key).version_id.unwrap());
            }
            ids.reverse();
            let marker_on_top = key == "b/2";
            for (i, id) in ids.iter().enumerate() {
                expected.push((s(key), id.clone(), i == 0, marker_on_top && i == 0));
            }
            if key == "a" {
                expected.push((s("a"), s("null"), false, false));
            }
        }
        assert_eq!(all_versions(&t), expected);
        // Every page size walks the same sequence.
        for page in 1..=expected.len() + 1 {
            let mut got = Vec::new();
            let (mut km, mut vm): (Option<String>, Option<String>) = (None, None);
            loop {
                let l =
                    t.sm.read()
                        .list_versions("bkt", "", None, km.as_deref(), vm.as_deref(), page)
                        .unwrap();
                assert!(l.entries.len() <= page);
                got.extend(rows(&l));
                if l.next_key.is_none() {
                    break;
                }
                (km, vm) = (l.next_key, l.next_version);
            }
            assert_eq!(got, expected, "page size {page}");
        }
        // A key marker alone starts after every version of that key.
        let r = t.sm.read();
        let after_a = rows(
            &r.list_versions("bkt", "", None, Some("a"), None, 1000)
                .unwrap(),
        );
        assert_eq!(after_a[0].0, "b/1");
        // Prefix and delimiter.
        let top = rows(
            &r.list_versions("bkt", "", Some("/"), None, None, 1000)
                .unwrap(),
        );
        let names: Vec<&str> = top.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(names, ["a", "a", "a", "a", "b/", "c", "c", "c"]);
        let under_b = rows(
            &r.list_versions("bkt", "b/", Some("/"), None, None, 1000)
                .unwrap(),
        );
        assert_eq!(under_b.len(), 7);
        let p = r
            .list_versions("bkt", "", Some("/"), None, None, 5)
            .unwrap();
        assert_eq!(
            (p.next_key.as_deref(), p.next_version.as_deref()),
            (Some("b/"), None)
        );
        let p2 = rows(
            &r.list_versions("bkt", "", Some("/"), Some("b/"), None, 5)
                .unwrap(),
        );
        assert_eq!(p2.len(), 3);
        assert!(p2.iter().all(|r| r.0 == "c"));
        assert_eq!(
            r.list_versions("bkt", "", None, Some("a"), Some("bad"), 5)
                .unwrap_err()
                .refused(),
            Some(Refused::BadRequest)
        );
        assert_eq!(
            r.list_versions("nope", "", None, None, None, 5)
                .unwrap_err()
                .refused(),
            Some(Refused::NoSuchBucket)
        );
    }

    #[test]
    fn version_tags_and_conditions_follow_the_right_version() {
        let t = Kit::new();
        t.bucket("bkt");
        enable(&t, Versioning::Enabled);
        let v1 = put(&t, "k", b"v1").unwrap();
        let v2 = put(&t, "k", b"v2").unwrap();
        let tags: TagSet = [("a".to_string(), "1".to_string())].into();
        let set = |version: &str| Command::SetVersionTags {
            bucket: "bkt".into(),
            key: "k".into(),
            version: version.into(),
            tags: tags.clone(),
        };
        t.ok(set(&v1));
        let r = t.sm.read();
        let ObjectVersion::Object(o1) = r.version("bkt", "k", Some(&v1)).unwrap() else {
            panic!("v1 is an object");
        };
        assert_eq!(o1.headers.tags, tags);
        assert!(r.object("bkt", "k").unwrap().headers.tags.is_empty());
        drop(r);
        t.ok(set(&v2));
        assert_eq!(t.sm.read().object("bkt", "k").unwrap().headers.tags, tags);
        assert_eq!(t.refused(set(&version_id(1))), Refused::NoSuchVersion);
        let marker = delete(&t, "k").version_id.unwrap();
        assert_eq!(t.refused(set(&marker)), Refused::MethodNotAllowed);
        // If-Match looks at the current object: behind a marker, none.
        let cond = Command::CommitObject {
            bucket: "bkt".into(),
            key: "k".into(),
            object: inline(b"v3"),
            at_ms: 5,
            condition: WriteCondition::Exists,
        };
        assert_eq!(t.refused(cond), Refused::NoSuchKey);
    }

    #[test]
    fn object_acls_belong_to_their_version() {
        use tessera_proto::{AclGrant, AclPermission, Grantee, MAX_ACL_GRANTS};
        let t = Kit::new();
        t.bucket("bkt");
        let acl = |n: usize| Acl {
            grants: vec![
                AclGrant {
                    grantee: Grantee::AllUsers,
                    permission: AclPermission::Read,
                };
                n
            ],
        };
        let set = |version: Option<&str>, acl: Option<Acl>| Command::SetObjectAcl {
            bucket: "bkt".into(),
            key: "k".into(),
            version: version.map(str::to_string),
            acl,
        };
        let current = |t: &Kit| t.sm.read().object("bkt", "k").unwrap().headers.acl;
        assert_eq!(t.refused(set(None, Some(acl(1)))), Refused::NoSuchKey);
        // Unversioned: the object's ACL goes with an overwrite.
        put(&t, "k", b"v0");
        t.ok(set(None, Some(acl(1))));
        assert_eq!(current(&t), Some(acl(1)));
        put(&t, "k", b"v0'");
        assert_eq!(current(&t), None);
        // Versioned: each version keeps its own; a new one starts with its
        // PUT's.
        enable(&t, Versioning::Enabled);
        let v1 = put(&t, "k", b"v1").unwrap();
        t.ok(set(Some(&v1), Some(acl(2))));
        let mut with_acl = inline(b"v2");
        with_acl.headers.acl = Some(acl(3));
        t.put("bkt", "k", with_acl).unwrap();
        assert_eq!(current(&t), Some(acl(3)));
        let ObjectVersion::Object(o1) = t.sm.read().version("bkt", "k", Some(&v1)).unwrap() else {
            panic!("v1 is an object");
        };
        assert_eq!(o1.headers.acl, Some(acl(2)));
        t.ok(set(None, None));
        assert_eq!(current(&t), None);
        assert_eq!(
            t.refused(set(Some(&version_id(1)), None)),
            Refused::NoSuchVersion
        );
        // Beyond the limit: refused on a change and on a write alike.
        assert_eq!(
            t.refused(set(None, Some(acl(MAX_ACL_GRANTS + 1)))),
            Refused::BadRequest
        );
        let mut too_many = inline(b"v3");
        too_many.headers.acl = Some(acl(MAX_ACL_GRANTS + 1));
        assert!(t.put("bkt", "k", too_many).is_err());
        let marker = delete(&t, "k").version_id.unwrap();
        assert_eq!(
            t.refused(set(Some(&marker), None)),
            Refused::MethodNotAllowed
        );
        // Removing the version removes its ACL with it.
        delete_version(&t, "k", &v1);
        assert_eq!(t.refused(set(Some(&v1), None)), Refused::NoSuchVersion);
    }

    #[test]
    fn the_file_system_view_does_not_write_to_versioned_buckets() {
        let t = Kit::new();
        t.bucket("bkt");
        put(&t, "k", b"x");
        enable(&t, Versioning::Enabled);
        assert_eq!(t.rename("k", "j", false), Err(Refused::BadRequest));
        assert_eq!(
            t.refused(Command::Unlink {
                bucket: "bkt".into(),
                key: "k".into(),
                keep_dir: None,
                at_ms: 1
            }),
            Refused::BadRequest
        );
        assert_eq!(
            t.refused(Command::PatchObject {
                bucket: "bkt".into(),
                key: "k".into(),
                object: inline(b"y"),
                if_absent: false,
                at_ms: 1
            }),
            Refused::BadRequest
        );
    }
}
