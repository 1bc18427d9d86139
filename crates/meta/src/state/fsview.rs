//! The file-system view of a bucket, for mounts: directories that exist with
//! nothing under them, lookups that tell a directory from an object,
//! directory listings, and copy-on-write commits that keep the chunks a
//! write did not touch. S3 never sees any of this: directory entries live in
//! their own table.

use std::collections::{HashMap, HashSet};

use tessera_proto::{
    ChunkRef, DirEntry, DirInfo, DirListing, ErrorCode, Found, ListEntry, NewObject, ObjectData,
    ObjectInfo,
};
use tessera_types::validate_key;

use super::{Counted, MAX_INLINE, StateMachine, counter, refuse, tables::*};
use crate::MetaError;
use crate::keys::ObjectKey;
use crate::store::{KeyCodec, Step};

/// Whether anything lies under a directory prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Occupancy {
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

pub(super) fn check_dir_path(path: &str) -> Result<(), MetaError> {
    if !path.ends_with('/') {
        return Err(refuse(
            ErrorCode::BadRequest,
            format!("directory {path:?} must end in '/'"),
        ));
    }
    validate_key(path).map_err(|e| refuse(ErrorCode::InvalidKey, e.to_string()))
}

impl StateMachine {
    pub(super) fn occupancy(&self, bucket: &str, path: &str) -> Result<Occupancy, MetaError> {
        let mut objects = false;
        self.store.scan(
            OBJECTS,
            &ObjectKey::new(bucket, path).encode(),
            |_, k, _| {
                objects = k.bucket == bucket && k.key.starts_with(path);
                Ok(Step::Stop)
            },
        )?;
        let entry = self
            .store
            .get(DIRS, &ObjectKey::new(bucket, path))?
            .is_some();
        let mut start = ObjectKey::new(bucket, path).encode();
        start.push(0);
        let mut subdirs = false;
        self.store.scan(DIRS, &start, |_, k, _| {
            subdirs = k.bucket == bucket && k.key.starts_with(path);
            Ok(Step::Stop)
        })?;
        Ok(Occupancy {
            objects,
            subdirs,
            entry,
        })
    }

    /// Gives `dir` an entry if it has none, so that it outlives the name a
    /// command takes out of it.
    pub(super) fn keep_dir(
        &self,
        batch: &mut Counted<'_>,
        bucket: &str,
        dir: Option<&String>,
        at_ms: u64,
    ) -> Result<(), MetaError> {
        let Some(dir) = dir.filter(|d| !d.is_empty()) else {
            return Ok(());
        };
        check_dir_path(dir)?;
        let key = ObjectKey::new(bucket, dir);
        if self.store.get(DIRS, &key)?.is_none() {
            let info = DirInfo {
                mtime_ms: at_ms,
                ..DirInfo::default()
            };
            batch.put(DIRS, &key, &info)?;
        }
        Ok(())
    }

    pub(super) fn put_dir(
        &self,
        batch: &mut Counted<'_>,
        bucket: &str,
        path: &str,
        info: &DirInfo,
        create: bool,
    ) -> Result<(), MetaError> {
        self.bucket(bucket)?;
        check_dir_path(path)?;
        if create && self.occupancy(bucket, path)?.exists() {
            return Err(refuse(
                ErrorCode::PreconditionFailed,
                format!("{bucket}/{path} exists"),
            ));
        }
        let key = path.strip_suffix('/').unwrap_or(path);
        if create
            && self
                .store
                .get(OBJECTS, &ObjectKey::new(bucket, key))?
                .is_some()
        {
            return Err(refuse(
                ErrorCode::PreconditionFailed,
                format!("{bucket}/{key} exists as an object"),
            ));
        }
        batch.put(DIRS, &ObjectKey::new(bucket, path), info)
    }

    pub(super) fn remove_dir(
        &self,
        batch: &mut Counted<'_>,
        bucket: &str,
        path: &str,
    ) -> Result<(), MetaError> {
        self.bucket(bucket)?;
        check_dir_path(path)?;
        let occ = self.occupancy(bucket, path)?;
        if !occ.empty() {
            return Err(refuse(
                ErrorCode::NotEmpty,
                format!("{bucket}/{path} is not empty"),
            ));
        }
        if !occ.entry {
            return Err(refuse(
                ErrorCode::NoSuchKey,
                format!("no directory {bucket}/{path}"),
            ));
        }
        batch.delete(DIRS, &ObjectKey::new(bucket, path))
    }

    /// Directory entries under `from` (its own included), for a prefix
    /// rename.
    pub(super) fn dir_entries_under(
        &self,
        bucket: &str,
        from: &str,
    ) -> Result<Vec<(String, DirInfo)>, MetaError> {
        let mut out = Vec::new();
        self.store
            .scan(DIRS, &ObjectKey::new(bucket, from).encode(), |_, k, v| {
                if k.bucket != bucket || !k.key.starts_with(from) {
                    return Ok(Step::Stop);
                }
                out.push((k.key, v));
                Ok(Step::Continue)
            })?;
        Ok(out)
    }

    /// Drops every directory entry of a bucket (it is being deleted).
    pub(super) fn drop_dirs(&self, batch: &mut Counted<'_>, bucket: &str) -> Result<(), MetaError> {
        for (path, _) in self.dir_entries_under(bucket, "")? {
            batch.delete(DIRS, &ObjectKey::new(bucket, &path))?;
        }
        Ok(())
    }

    /// Checks a copy-on-write commit against the current version and
    /// returns the chunks it drops.
    pub(super) fn check_patch(
        &self,
        o: &NewObject,
        old: Option<&ObjectInfo>,
    ) -> Result<Vec<ChunkRef>, MetaError> {
        let bad = |m: String| refuse(ErrorCode::BadRequest, m);
        // Inline data (and its limit) is checked the same way for any
        // commit; chunk references may keep chunks of `old`.
        let old_refs: &[ChunkRef] = match old.map(|o| &o.data) {
            Some(ObjectData::Chunks(refs)) => refs,
            _ => &[],
        };
        let refs = match &o.data {
            ObjectData::Inline(bytes) => {
                if bytes.len() as u64 != o.size || o.size > MAX_INLINE || !o.chunks.is_empty() {
                    return Err(bad("malformed inline object".into()));
                }
                return Ok(old_refs.to_vec());
            }
            ObjectData::Chunks(refs) => refs,
        };
        if refs.len() > super::MAX_CHUNKS_PER_OBJECT {
            return Err(refuse(
                ErrorCode::TooLarge,
                format!("{} chunks exceed the limit", refs.len()),
            ));
        }
        let total: u64 = refs.iter().map(|r| r.len).sum();
        if total != o.size {
            return Err(bad(format!(
                "chunks hold {total} bytes, object claims {}",
                o.size
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
                self.check_chunk_record(c)?;
            } else if kept.get(&r.id) != Some(&r.len) {
                return Err(refuse(
                    ErrorCode::Conflict,
                    format!(
                        "chunk {} is not part of the current version: the object changed meanwhile",
                        r.id
                    ),
                ));
            }
        }
        if seen.len() != refs.len() || new.keys().any(|id| !seen.contains(id)) {
            return Err(bad("a chunk record is not referenced".into()));
        }
        Ok(old_refs
            .iter()
            .filter(|r| !seen.contains(&r.id))
            .copied()
            .collect())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn patch_object(
        &self,
        batch: &mut Counted<'_>,
        bucket: &str,
        key: &str,
        object: &NewObject,
        if_absent: bool,
        at_ms: u64,
    ) -> Result<(), MetaError> {
        self.bucket(bucket)?;
        validate_key(key).map_err(|e| refuse(ErrorCode::InvalidKey, e.to_string()))?;
        let okey = ObjectKey::new(bucket, key);
        let old = self.store.get(OBJECTS, &okey)?;
        if if_absent && old.is_some() {
            return Err(refuse(
                ErrorCode::PreconditionFailed,
                format!("{bucket}/{key} exists"),
            ));
        }
        let dropped = self.check_patch(object, old.as_ref())?;
        batch.retire_chunks(&dropped, at_ms)?;
        if old.is_none() {
            batch.add(counter::OBJECTS, 1)?;
        }
        batch.store_chunks(&object.chunks)?;
        batch.put(OBJECTS, &okey, &super::committed(key, object, at_ms))
    }

    /// See `MetaRequest::Lookup`.
    pub fn lookup(&self, bucket: &str, key: &str) -> Result<Found, MetaError> {
        self.bucket(bucket)?;
        if key.is_empty() {
            return Ok(Found::Dir(None));
        }
        let dir = format!("{key}/");
        if let Some(info) = self.store.get(DIRS, &ObjectKey::new(bucket, &dir))? {
            return Ok(Found::Dir(Some(info)));
        }
        if self.occupancy(bucket, &dir)?.exists() {
            return Ok(Found::Dir(None));
        }
        Ok(
            match self.store.get(OBJECTS, &ObjectKey::new(bucket, key))? {
                Some(o) => Found::Object(Box::new(o)),
                None => Found::Nothing,
            },
        )
    }

    /// See `MetaRequest::ListDir`. Holds the writer's lock so that the
    /// objects and the directory entries of a page come from one state.
    pub fn list_dir(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<DirListing, MetaError> {
        if !(prefix.is_empty() || prefix.ends_with('/')) {
            return Err(refuse(
                ErrorCode::BadRequest,
                format!("directory {prefix:?} must be empty or end in '/'"),
            ));
        }
        let limit = limit.clamp(1, 10_000);
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let after = after.filter(|a| a.starts_with(prefix) && a.len() > prefix.len());
        let objects = self.list(bucket, prefix, Some("/"), after, limit)?;
        // Directory entries directly in `prefix`, or implied by deeper ones.
        let mut dirs: Vec<String> = Vec::new();
        let mut dirs_cut = false;
        let mut start = ObjectKey::new(bucket, after.unwrap_or(prefix)).encode();
        start.push(0);
        self.store.scan(DIRS, &start, |_, k, _| {
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
        let mut merged: Vec<(String, DirEntry)> = Vec::new();
        for e in objects.entries {
            let (key, entry) = match e {
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
                    let entry = DirEntry {
                        name,
                        dir: true,
                        size: 0,
                        mtime_ms: 0,
                    };
                    (p, entry)
                }
            };
            merged.push((key, entry));
        }
        for d in dirs {
            let name = d[prefix.len()..d.len() - 1].to_string();
            merged.push((
                d,
                DirEntry {
                    name,
                    dir: true,
                    size: 0,
                    mtime_ms: 0,
                },
            ));
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
