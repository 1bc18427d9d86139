//! The file-system view of a bucket, for mounts: directories that exist with
//! nothing under them, lookups that tell a directory from an object,
//! directory listings, unlinks that keep the directory a name leaves, and
//! copy-on-write commits that keep the chunks a write did not touch. S3
//! never sees any of this: directory entries live in their own table.

use super::versions::refuse_if_versioned;
use std::collections::HashSet;

use tessera_proto::{DirEntry, DirInfo, DirListing, Found, ListEntry, NewObject};
use tessera_types::validate_key;

use super::buckets::BucketQueries;
use super::chunks::{retire_chunks, store_chunks};
use super::objects::{ObjectQueries, check_commit, committed, remove_object};
use super::tables::{DIRS, OBJECTS, counter};
use super::{Applied, Refused, Txn, refuse};
use crate::MetaError;
use crate::keys::ObjectKey;
use crate::store::{KeyCodec, Read, Step};

/// Whether anything lies under a directory prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occupancy {
    pub objects: bool,
    /// Directory entries under the prefix, not counting its own.
    pub subdirs: bool,
    pub entry: bool,
}

impl Occupancy {
    pub fn exists(&self) -> bool {
        self.objects || self.subdirs || self.entry
    }
    pub fn empty(&self) -> bool {
        !self.objects && !self.subdirs
    }
}

/// Errors: `BadRequest` unless `path` ends in `/`; `InvalidKey`.
pub(super) fn check_dir_path(path: &str) -> Result<(), MetaError> {
    if !path.ends_with('/') {
        return Err(refuse(
            Refused::BadRequest,
            format!("directory {path:?} must end in '/'"),
        ));
    }
    validate_key(path).map_err(|e| refuse(Refused::InvalidKey, e.to_string()))
}

/// Gives `dir` an entry if it has none, so that it outlives the name a
/// command takes out of it.
pub(super) fn keep_dir(
    tx: &mut Txn<'_, '_>,
    bucket: &str,
    dir: Option<&str>,
    at_ms: u64,
) -> Result<(), MetaError> {
    let Some(dir) = dir.filter(|d| !d.is_empty()) else {
        return Ok(());
    };
    check_dir_path(dir)?;
    let key = ObjectKey::new(bucket, dir);
    if !tx.contains(DIRS, &key)? {
        let info = DirInfo {
            mtime_ms: at_ms,
            ..DirInfo::default()
        };
        tx.put(DIRS, &key, &info)?;
    }
    Ok(())
}

pub(super) fn put_dir(
    tx: &mut Txn<'_, '_>,
    bucket: &str,
    path: &str,
    info: &DirInfo,
    create: bool,
) -> Result<Applied, MetaError> {
    tx.bucket(bucket)?;
    check_dir_path(path)?;
    if create && tx.occupancy(bucket, path)?.exists() {
        return Err(refuse(
            Refused::PreconditionFailed,
            format!("{bucket}/{path} exists"),
        ));
    }
    let key = path.strip_suffix('/').unwrap_or(path);
    if create && tx.object_at(bucket, key)?.is_some() {
        return Err(refuse(
            Refused::PreconditionFailed,
            format!("{bucket}/{key} exists as an object"),
        ));
    }
    tx.put(DIRS, &ObjectKey::new(bucket, path), info)?;
    Ok(Applied::Done)
}

pub(super) fn remove_dir(
    tx: &mut Txn<'_, '_>,
    bucket: &str,
    path: &str,
    keep: Option<&str>,
    at_ms: u64,
) -> Result<Applied, MetaError> {
    tx.bucket(bucket)?;
    check_dir_path(path)?;
    let occ = tx.occupancy(bucket, path)?;
    if !occ.empty() {
        return Err(refuse(
            Refused::NotEmpty,
            format!("{bucket}/{path} is not empty"),
        ));
    }
    if !occ.entry {
        return Err(refuse(
            Refused::NoSuchKey,
            format!("no directory {bucket}/{path}"),
        ));
    }
    tx.delete(DIRS, &ObjectKey::new(bucket, path))?;
    if keep != Some(path) {
        keep_dir(tx, bucket, keep, at_ms)?;
    }
    Ok(Applied::Deleted { existed: true })
}

/// Deletes an object and keeps the directory it leaves. Errors:
/// `NoSuchKey` if there is none.
pub(super) fn unlink(
    tx: &mut Txn<'_, '_>,
    bucket: &str,
    key: &str,
    keep: Option<&str>,
    at_ms: u64,
) -> Result<Applied, MetaError> {
    refuse_if_versioned(tx, bucket, "unlink")?;
    if !remove_object(tx, bucket, key, at_ms)? {
        return Err(refuse(
            Refused::NoSuchKey,
            format!("no such key: {bucket}/{key}"),
        ));
    }
    keep_dir(tx, bucket, keep, at_ms)?;
    Ok(Applied::Deleted { existed: true })
}

/// Drops every directory entry of a bucket (it is being deleted).
pub(super) fn drop_bucket_dirs(tx: &mut Txn<'_, '_>, bucket: &str) -> Result<(), MetaError> {
    for (path, _) in tx.dir_entries_under(bucket, "")? {
        tx.delete(DIRS, &ObjectKey::new(bucket, &path))?;
    }
    Ok(())
}

/// A commit whose chunk references may keep chunks of the current version
/// (see `Proposal::PatchObject`); dropped chunks go to garbage.
pub(super) fn patch_object(
    tx: &mut Txn<'_, '_>,
    bucket: &str,
    key: &str,
    object: &NewObject,
    if_absent: bool,
    at_ms: u64,
) -> Result<Applied, MetaError> {
    tx.bucket(bucket)?;
    refuse_if_versioned(tx, bucket, "a copy-on-write commit")?;
    validate_key(key).map_err(|e| refuse(Refused::InvalidKey, e.to_string()))?;
    let okey = ObjectKey::new(bucket, key);
    let old = tx.get(OBJECTS, &okey)?;
    if if_absent && old.is_some() {
        return Err(refuse(
            Refused::PreconditionFailed,
            format!("{bucket}/{key} exists"),
        ));
    }
    let dropped = check_commit(tx, object, old.as_ref())?;
    retire_chunks(tx, &dropped, at_ms)?;
    if old.is_none() {
        tx.add(counter::OBJECTS, 1);
    }
    store_chunks(tx, &object.chunks)?;
    let info = committed(key, object, at_ms);
    tx.put(OBJECTS, &okey, &info)?;
    Ok(Applied::Object(Box::new(info)))
}

/// Queries of the file-system view.
pub trait FsQueries: Read {
    /// What lies under directory prefix `path`.
    fn occupancy(&self, bucket: &str, path: &str) -> Result<Occupancy, MetaError> {
        let objects = self.any_object_under(bucket, path)?;
        let entry = self.contains(DIRS, &ObjectKey::new(bucket, path))?;
        let under = ObjectKey::new(bucket, path).encode();
        let mut start = under.clone();
        start.push(0);
        let mut subdirs = false;
        self.scan_prefix_from(DIRS, &under, &start, |_, k, _| {
            subdirs = k.bucket == bucket && k.key.starts_with(path);
            Ok(Step::Stop)
        })?;
        Ok(Occupancy {
            objects,
            subdirs,
            entry,
        })
    }

    /// Directory entries under `from` (its own included).
    fn dir_entries_under(
        &self,
        bucket: &str,
        from: &str,
    ) -> Result<Vec<(String, DirInfo)>, MetaError> {
        let mut out = Vec::new();
        self.scan_prefix(DIRS, &ObjectKey::new(bucket, from).encode(), |_, k, v| {
            if k.bucket != bucket || !k.key.starts_with(from) {
                return Ok(Step::Stop);
            }
            out.push((k.key, v));
            Ok(Step::Continue)
        })?;
        Ok(out)
    }

    /// See `MetaQuery::Lookup`.
    fn lookup(&self, bucket: &str, key: &str) -> Result<Found, MetaError> {
        self.bucket(bucket)?;
        if key.is_empty() {
            return Ok(Found::Dir(None));
        }
        let dir = format!("{key}/");
        if let Some(info) = self.get(DIRS, &ObjectKey::new(bucket, &dir))? {
            return Ok(Found::Dir(Some(info)));
        }
        if self.occupancy(bucket, &dir)?.exists() {
            return Ok(Found::Dir(None));
        }
        Ok(match self.object_at(bucket, key)? {
            Some(o) => Found::Object(Box::new(o)),
            None => Found::Nothing,
        })
    }

    /// See `MetaQuery::ListDir`. Read from one snapshot, so the objects and
    /// the directory entries of a page come from one state.
    fn list_dir(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<DirListing, MetaError> {
        if !(prefix.is_empty() || prefix.ends_with('/')) {
            return Err(refuse(
                Refused::BadRequest,
                format!("directory {prefix:?} must be empty or end in '/'"),
            ));
        }
        let limit = limit.clamp(1, 10_000);
        let after = after.filter(|a| a.starts_with(prefix) && a.len() > prefix.len());
        let objects = self.list(bucket, prefix, Some("/"), after, limit)?;
        // Directory entries directly in `prefix`, or implied by deeper ones.
        let mut dirs: Vec<String> = Vec::new();
        let mut dirs_cut = false;
        let mut start = ObjectKey::new(bucket, after.unwrap_or(prefix)).encode();
        start.push(0);
        let under = ObjectKey::new(bucket, prefix).encode();
        self.scan_prefix_from(DIRS, &under, &start, |_, k, _| {
            if k.bucket != bucket || !k.key.starts_with(prefix) {
                return Ok(Step::Stop);
            }
            let rest = &k.key[prefix.len()..];
            let Some(pos) = rest.find('/') else {
                return Ok(Step::Continue);
            };
            if pos == 0 {
                return Ok(Step::Continue);
            }
            if dirs.len() == limit {
                dirs_cut = true;
                return Ok(Step::Stop);
            }
            let child = k.key[..prefix.len() + pos + 1].to_string();
            let mut next = ObjectKey::new(bucket, &child).encode();
            next.push(0xff);
            if after.is_none_or(|a| child.as_str() > a) {
                dirs.push(child);
            }
            Ok(Step::Seek(next))
        })?;
        let dir_entry = |name: String| DirEntry {
            name,
            dir: true,
            size: 0,
            mtime_ms: 0,
        };
        let mut merged: Vec<(String, DirEntry)> = Vec::new();
        for e in objects.entries {
            merged.push(match e {
                ListEntry::Object {
                    key,
                    size,
                    mtime_ms,
                    ..
                } => {
                    let name = key[prefix.len()..].to_string();
                    let entry = DirEntry {
                        name,
                        dir: false,
                        size,
                        mtime_ms,
                    };
                    (key, entry)
                }
                ListEntry::CommonPrefix(p) => {
                    let name = p[prefix.len()..p.len() - 1].to_string();
                    (p, dir_entry(name))
                }
            });
        }
        for d in dirs {
            let name = d[prefix.len()..d.len() - 1].to_string();
            merged.push((d, dir_entry(name)));
        }
        merged.sort_by(|a, b| a.0.cmp(&b.0));
        merged.dedup_by(|a, b| a.0 == b.0);
        let mut cut = objects.next.is_some() || dirs_cut;
        if merged.len() > limit {
            merged.truncate(limit);
            cut = true;
        }
        // A directory hides an object of the same name (both cannot be one
        // name in a file system); checked within the page.
        let dir_names: HashSet<String> = merged
            .iter()
            .filter(|(_, e)| e.dir)
            .map(|(_, e)| e.name.clone())
            .collect();
        let next = if cut {
            merged.last().map(|(k, _)| k.clone())
        } else {
            None
        };
        let entries = merged
            .into_iter()
            .map(|(_, e)| e)
            .filter(|e| e.dir || !dir_names.contains(&e.name))
            .filter(|e| !e.name.is_empty())
            .collect();
        Ok(DirListing { entries, next })
    }
}

impl<R: Read + ?Sized> FsQueries for R {}

#[cfg(test)]
mod tests {
    use super::super::StateQueries;
    use super::super::testkit::*;
    use super::*;
    use tessera_proto::{ChunkRef, ObjectData};
    use tessera_types::ChunkId;

    fn names(l: &DirListing) -> Vec<String> {
        l.entries
            .iter()
            .map(|e| format!("{}{}", e.name, if e.dir { "/" } else { "" }))
            .collect()
    }

    #[test]
    fn directories_of_the_file_system_view() {
        let t = Kit::new();
        t.bucket("bkt");
        let dir = |path: &str, create: bool| {
            t.apply(Command::PutDir {
                bucket: "bkt".into(),
                path: path.into(),
                info: DirInfo::default(),
                create,
            })
            .map_err(|r| r.kind)
        };
        let rmdir = |path: &str, keep: Option<&str>| {
            t.apply(Command::RemoveDir {
                bucket: "bkt".into(),
                path: path.into(),
                keep_dir: keep.map(String::from),
                at_ms: 3,
            })
            .map_err(|r| r.kind)
        };
        for k in ["a/1", "a/b/2", "c", "c!", "d"] {
            t.put("bkt", k, inline(b"x")).unwrap();
        }
        dir("e/", true).unwrap();
        dir("a/f/g/", true).unwrap();
        assert_eq!(dir("e/", true), Err(Refused::PreconditionFailed));
        assert_eq!(dir("a/", true), Err(Refused::PreconditionFailed));
        assert_eq!(dir("c/", true), Err(Refused::PreconditionFailed));
        assert_eq!(dir("x", true), Err(Refused::BadRequest));
        let r = t.sm.read();
        // Entries never show in S3 listings.
        let all = r.list("bkt", "", None, None, 100).unwrap();
        assert_eq!(keys(&all), ["a/1", "a/b/2", "c", "c!", "d"]);
        // Lookups tell directories (with or without an entry) from objects.
        assert_eq!(r.lookup("bkt", "a").unwrap(), Found::Dir(None));
        assert!(matches!(r.lookup("bkt", "e").unwrap(), Found::Dir(Some(_))));
        assert!(matches!(r.lookup("bkt", "a/f").unwrap(), Found::Dir(None)));
        assert!(matches!(r.lookup("bkt", "c").unwrap(), Found::Object(_)));
        assert_eq!(r.lookup("bkt", "zz").unwrap(), Found::Nothing);
        // Listings merge both, in key order, one name per directory.
        let l = r.list_dir("bkt", "", None, 100).unwrap();
        assert_eq!(names(&l), ["a/", "c", "c!", "d", "e/"]);
        assert_eq!(l.next, None);
        let l = r.list_dir("bkt", "a/", None, 100).unwrap();
        assert_eq!(names(&l), ["1", "b/", "f/"]);
        // Pages of two, continued from `next`, see each name once.
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let l = r.list_dir("bkt", "", after.as_deref(), 2).unwrap();
            seen.extend(names(&l));
            match l.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, ["a/", "c", "c!", "d", "e/"]);
        drop(r);
        // rmdir: only when empty; an implied directory has nothing to remove.
        assert_eq!(rmdir("a/f/", None), Err(Refused::NotEmpty));
        assert_eq!(rmdir("a/b/", None), Err(Refused::NotEmpty));
        assert_eq!(rmdir("q/", None), Err(Refused::NoSuchKey));
        rmdir("a/f/g/", Some("a/f/")).unwrap();
        assert!(matches!(
            t.sm.read().lookup("bkt", "a/f").unwrap(),
            Found::Dir(Some(_))
        ));
        rmdir("a/f/", None).unwrap();
        // Unlinking the last file keeps its directory when asked.
        let unlink = |key: &str, keep: Option<&str>| {
            t.apply(Command::Unlink {
                bucket: "bkt".into(),
                key: key.into(),
                keep_dir: keep.map(String::from),
                at_ms: 4,
            })
            .map_err(|r| r.kind)
        };
        unlink("a/b/2", Some("a/b/")).unwrap();
        assert!(matches!(
            t.sm.read().lookup("bkt", "a/b").unwrap(),
            Found::Dir(Some(_))
        ));
        assert_eq!(unlink("a/b/2", None), Err(Refused::NoSuchKey));
        // A directory rename moves entries too, and may replace an empty
        // directory; a non-empty target is refused.
        dir("e/x/", true).unwrap();
        assert_eq!(t.rename("a/", "e/", true), Err(Refused::NotEmpty));
        rmdir("e/x/", None).unwrap();
        assert_eq!(
            t.rename("a/", "e/", false),
            Err(Refused::PreconditionFailed)
        );
        assert_eq!(t.rename("a/", "e/", true), Ok(1));
        let r = t.sm.read();
        assert_eq!(
            names(&r.list_dir("bkt", "e/", None, 10).unwrap()),
            ["1", "b/"]
        );
        assert_eq!(r.lookup("bkt", "a").unwrap(), Found::Nothing);
        drop(r);
        // An empty directory renames too.
        assert_eq!(t.rename("e/b/", "h/", false), Ok(0));
        assert!(matches!(
            t.sm.read().lookup("bkt", "h").unwrap(),
            Found::Dir(Some(_))
        ));
        // Deleting the bucket drops its entries.
        for k in ["c", "c!", "d", "e/1"] {
            unlink(k, None).unwrap();
        }
        rmdir("h/", None).unwrap();
        dir("z/", true).unwrap();
        t.ok(Command::DeleteBucket { name: "bkt".into() });
        t.bucket("bkt");
        assert_eq!(t.sm.read().lookup("bkt", "z").unwrap(), Found::Nothing);
    }

    #[test]
    fn patches_keep_untouched_chunks_and_retire_the_rest() {
        let t = Kit::new();
        let nodes = t.nodes(7);
        t.bucket("bkt");
        let patch = |object: NewObject, if_absent: bool| {
            t.apply(Command::PatchObject {
                bucket: "bkt".into(),
                key: "f".into(),
                object,
                if_absent,
                at_ms: 9,
            })
            .map_err(|r| r.kind)
        };
        // Two chunks, then a patch that keeps the first and replaces the
        // second.
        let mut first = t.one_chunk(1, &nodes);
        let second = t.one_chunk(2, &nodes);
        let ObjectData::Chunks(mut refs) = first.data.clone() else {
            unreachable!()
        };
        refs.push(ChunkRef {
            id: ChunkId([2; 16]),
            len: 10,
        });
        first.chunks.extend(second.chunks.clone());
        first.data = ObjectData::Chunks(refs.clone());
        first.size = 20;
        patch(first.clone(), true).unwrap();
        assert_eq!(patch(first.clone(), true), Err(Refused::PreconditionFailed));
        let mut next = t.one_chunk(3, &nodes);
        next.data = ObjectData::Chunks(vec![
            refs[0],
            ChunkRef {
                id: ChunkId([3; 16]),
                len: 10,
            },
        ]);
        next.size = 20;
        patch(next.clone(), false).unwrap();
        let r = t.sm.read();
        assert_eq!(r.counter(counter::GARBAGE).unwrap(), 1);
        assert_eq!(r.counter(counter::OBJECTS).unwrap(), 1);
        assert_eq!(r.object("bkt", "f").unwrap().data, next.data);
        drop(r);
        // A chunk of an older version (or of nobody) is refused: the object
        // changed meanwhile.
        let mut stale = inline(b"");
        stale.data = ObjectData::Chunks(vec![refs[1]]);
        stale.size = 10;
        assert_eq!(patch(stale, false), Err(Refused::Conflict));
        // A chunk referenced twice is refused.
        let mut twice = inline(b"");
        twice.data = ObjectData::Chunks(vec![refs[0], refs[0]]);
        twice.size = 20;
        assert_eq!(patch(twice, false), Err(Refused::BadRequest));
        // Shrinking to inline data retires every chunk.
        patch(inline(b"tiny"), false).unwrap();
        assert_eq!(t.sm.read().counter(counter::GARBAGE).unwrap(), 3);
    }
}
