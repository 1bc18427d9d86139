//! Renames: one object, or every object and directory entry under a prefix,
//! in one command. Nothing is copied: chunks stay where they are. One write
//! batch, so every read (and every listing page, one snapshot) sees all old
//! names or all new ones. Multipart uploads under a renamed prefix still
//! complete to their old key.

use super::versions::refuse_if_versioned;
use tessera_proto::{DirInfo, ObjectInfo};
use tessera_types::validate_key;

use super::buckets::BucketQueries;
use super::chunks::retire;
use super::fsview::{FsQueries, keep_dir};
use super::tables::{DIRS, OBJECTS};
use super::{Applied, Refused, Txn, refuse};
use crate::MetaError;
use crate::keys::ObjectKey;
use crate::store::{KeyCodec, Read, Step};

/// Most objects one prefix rename moves (one write batch in meta).
pub const MAX_RENAME_OBJECTS: usize = 1_000_000;

#[allow(clippy::too_many_arguments)]
pub(super) fn rename(
    tx: &mut Txn<'_, '_>,
    bucket: &str,
    from: &str,
    to: &str,
    replace: bool,
    keep: Option<&str>,
    at_ms: u64,
) -> Result<Applied, MetaError> {
    tx.bucket(bucket)?;
    refuse_if_versioned(tx, bucket, "rename")?;
    validate_key(to).map_err(|e| refuse(Refused::InvalidKey, e.to_string()))?;
    keep_dir(tx, bucket, keep, at_ms)?;
    if from.ends_with('/') || to.ends_with('/') {
        let (moves, dirs) = prefix_moves(tx, bucket, from, to, replace)?;
        for (old, info) in dirs {
            let new_key = format!("{to}{}", &old[from.len()..]);
            tx.delete(DIRS, &ObjectKey::new(bucket, &old))?;
            tx.put(DIRS, &ObjectKey::new(bucket, &new_key), &info)?;
        }
        let objects = moves.len() as u64;
        for (old, mut info) in moves {
            let new_key = format!("{to}{}", &old[from.len()..]);
            validate_key(&new_key).map_err(|e| refuse(Refused::InvalidKey, e.to_string()))?;
            tx.delete(OBJECTS, &ObjectKey::new(bucket, &old))?;
            info.key = new_key.clone();
            tx.put(OBJECTS, &ObjectKey::new(bucket, &new_key), &info)?;
        }
        return Ok(Applied::Renamed { objects });
    }
    let okey = ObjectKey::new(bucket, from);
    let Some(mut info) = tx.get(OBJECTS, &okey)? else {
        return Err(refuse(
            Refused::NoSuchKey,
            format!("{bucket}/{from} does not exist"),
        ));
    };
    if from == to {
        return Ok(Applied::Renamed { objects: 1 });
    }
    let tkey = ObjectKey::new(bucket, to);
    if let Some(old) = tx.get(OBJECTS, &tkey)? {
        if !replace {
            return Err(refuse(
                Refused::PreconditionFailed,
                format!("{bucket}/{to} exists"),
            ));
        }
        retire(tx, &old, at_ms)?;
    }
    tx.delete(OBJECTS, &okey)?;
    info.key = to.to_string();
    tx.put(OBJECTS, &tkey, &info)?;
    Ok(Applied::Renamed { objects: 1 })
}

/// The objects and directory entries a prefix rename from `from` to `to`
/// moves, after its checks: both are prefixes (end in `/`), `to` is not
/// inside `from`, nothing exists under `to` (an entry for `to` itself only
/// with `replace`; the move overwrites it), something exists under `from`.
#[allow(clippy::type_complexity)]
fn prefix_moves(
    tx: &Txn<'_, '_>,
    bucket: &str,
    from: &str,
    to: &str,
    replace: bool,
) -> Result<(Vec<(String, ObjectInfo)>, Vec<(String, DirInfo)>), MetaError> {
    if !(from.ends_with('/') && to.ends_with('/')) {
        return Err(refuse(
            Refused::BadRequest,
            "a prefix rename names two prefixes ending in '/'",
        ));
    }
    if to.starts_with(from) {
        return Err(refuse(
            Refused::BadRequest,
            format!("cannot move {from} into itself ({to})"),
        ));
    }
    let target = tx.occupancy(bucket, to)?;
    if !target.empty() {
        return Err(refuse(
            Refused::NotEmpty,
            format!("{bucket}/{to} is not empty"),
        ));
    }
    if target.entry && !replace {
        return Err(refuse(
            Refused::PreconditionFailed,
            format!("directory {bucket}/{to} exists"),
        ));
    }
    let mut moves = Vec::new();
    let mut too_many = false;
    tx.scan(
        OBJECTS,
        &ObjectKey::new(bucket, from).encode(),
        |_, k, v| {
            if k.bucket != bucket || !k.key.starts_with(from) {
                return Ok(Step::Stop);
            }
            if moves.len() == MAX_RENAME_OBJECTS {
                too_many = true;
                return Ok(Step::Stop);
            }
            moves.push((k.key, v));
            Ok(Step::Continue)
        },
    )?;
    if too_many {
        return Err(refuse(
            Refused::TooLarge,
            format!("a rename moves at most {MAX_RENAME_OBJECTS} objects"),
        ));
    }
    let dirs = tx.dir_entries_under(bucket, from)?;
    if moves.is_empty() && dirs.is_empty() {
        return Err(refuse(
            Refused::NoSuchKey,
            format!("nothing under {bucket}/{from}"),
        ));
    }
    if moves.len() + dirs.len() > MAX_RENAME_OBJECTS {
        return Err(refuse(
            Refused::TooLarge,
            format!("a rename moves at most {MAX_RENAME_OBJECTS} names"),
        ));
    }
    Ok((moves, dirs))
}

#[cfg(test)]
mod tests {
    use super::super::StateQueries;
    use super::super::objects::ObjectQueries;
    use super::super::tables::counter;
    use super::super::testkit::*;
    use super::*;

    #[test]
    fn renames_objects_and_prefixes_in_one_command() {
        let t = Kit::new();
        t.bucket("bkt");
        for k in ["a", "b", "d/1", "d/2", "d/e/3", "dz"] {
            t.put("bkt", k, inline(k.as_bytes())).unwrap();
        }
        assert_eq!(t.rename("a", "c", false), Ok(1));
        assert_eq!(t.rename("b", "c", false), Err(Refused::PreconditionFailed));
        assert_eq!(t.rename("b", "c", true), Ok(1));
        assert_eq!(t.rename("zz", "y", false), Err(Refused::NoSuchKey));
        assert_eq!(t.rename("d/", "d/x/", false), Err(Refused::BadRequest));
        assert_eq!(t.rename("d/", "x/", false), Ok(3));
        assert_eq!(t.rename("q/", "r/", false), Err(Refused::NoSuchKey));
        let r = t.sm.read();
        let all = r.list("bkt", "", None, None, 100).unwrap();
        assert_eq!(keys(&all), ["c", "dz", "x/1", "x/2", "x/e/3"]);
        assert_eq!(r.object("bkt", "c").unwrap().data, inline(b"b").data);
        assert_eq!(r.object("bkt", "x/e/3").unwrap().key, "x/e/3");
        assert_eq!(r.counter(counter::OBJECTS).unwrap(), 5);
        drop(r);
        // Into an occupied prefix: refused.
        t.put("bkt", "y/1", inline(b"y")).unwrap();
        assert_eq!(t.rename("x/", "y/", true), Err(Refused::NotEmpty));
    }
}
