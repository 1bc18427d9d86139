//! S3 access keys (id -> secret, name, creation time) and grants on buckets
//! (read < write < owner). Secrets are stored as given: SigV4 verification
//! needs them, and meta answers only holders of cluster certificates.
//! Deleting a key or a bucket deletes its grants in the same command.

use tessera_proto::{AccessKey, Grant, Permission};

use super::buckets::BucketQueries;
use super::tables::{GRANTS, KEYS};
use super::{Applied, Refused, Txn, refuse};
use crate::MetaError;
use crate::keys::ObjectKey;
use crate::store::{Read, Step};

/// Access key ids: what S3 clients put in the credential scope.
pub fn validate_key_id(id: &str) -> Result<(), String> {
    if (16..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(format!(
            "access key id {id:?} must be 16 to 128 letters and digits"
        ))
    }
}

pub(super) fn create_key(tx: &mut Txn<'_, '_>, key: &AccessKey) -> Result<Applied, MetaError> {
    validate_key_id(&key.id).map_err(|e| refuse(Refused::BadRequest, e))?;
    if key.secret.len() < 16 || key.secret.len() > 128 || key.secret.contains(char::is_whitespace) {
        return Err(refuse(
            Refused::BadRequest,
            "a secret key must be 16 to 128 characters without spaces",
        ));
    }
    if tx.contains(KEYS, &key.id)? {
        return Err(refuse(
            Refused::Conflict,
            format!("access key {} already exists", key.id),
        ));
    }
    tx.put(KEYS, &key.id, key)?;
    Ok(Applied::Key(key.clone()))
}

pub(super) fn delete_key(tx: &mut Txn<'_, '_>, id: &str) -> Result<Applied, MetaError> {
    let existed = tx.contains(KEYS, &id.to_string())?;
    tx.delete(KEYS, &id.to_string())?;
    for g in tx.grants(None, Some(id))? {
        tx.delete(GRANTS, &ObjectKey::new(&g.bucket, &g.key))?;
    }
    Ok(Applied::Deleted { existed })
}

pub(super) fn set_grant(
    tx: &mut Txn<'_, '_>,
    bucket: &str,
    key: &str,
    permission: Option<Permission>,
) -> Result<Applied, MetaError> {
    tx.bucket(bucket)?;
    if !tx.contains(KEYS, &key.to_string())? {
        return Err(refuse(Refused::NotFound, format!("no access key {key}")));
    }
    let gkey = ObjectKey::new(bucket, key);
    match permission {
        Some(p) => tx.put(GRANTS, &gkey, &p)?,
        None => tx.delete(GRANTS, &gkey)?,
    }
    Ok(Applied::Done)
}

/// Drops every grant on a bucket (it is being deleted).
pub(super) fn drop_bucket_grants(tx: &mut Txn<'_, '_>, bucket: &str) -> Result<(), MetaError> {
    for g in tx.grants(Some(bucket), None)? {
        tx.delete(GRANTS, &ObjectKey::new(&g.bucket, &g.key))?;
    }
    Ok(())
}

/// Queries of keys and grants.
pub trait AccessQueries: Read {
    /// One key with its secret. Errors: `NotFound`.
    fn access_key(&self, id: &str) -> Result<AccessKey, MetaError> {
        self.get(KEYS, &id.to_string())?
            .ok_or_else(|| refuse(Refused::NotFound, format!("no access key {id}")))
    }

    /// Every key, secrets blanked.
    fn access_keys(&self) -> Result<Vec<AccessKey>, MetaError> {
        let mut out = Vec::new();
        self.scan(KEYS, &[], |_, _, mut k: AccessKey| {
            k.secret.clear();
            out.push(k);
            Ok(Step::Continue)
        })?;
        Ok(out)
    }

    /// Grants on `bucket` and/or to `key` (all when both are `None`).
    fn grants(&self, bucket: Option<&str>, key: Option<&str>) -> Result<Vec<Grant>, MetaError> {
        let start = bucket.map(ObjectKey::bucket_prefix).unwrap_or_default();
        let mut out = Vec::new();
        self.scan(GRANTS, &start, |_, k: ObjectKey, permission| {
            if bucket.is_some_and(|b| b != k.bucket) {
                return Ok(Step::Stop);
            }
            if key.is_none_or(|id| id == k.key) {
                out.push(Grant {
                    bucket: k.bucket,
                    key: k.key,
                    permission,
                });
            }
            Ok(Step::Continue)
        })?;
        Ok(out)
    }
}

impl<R: Read + ?Sized> AccessQueries for R {}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;

    fn key(id: &str) -> AccessKey {
        AccessKey {
            id: id.into(),
            secret: "0123456789abcdefghij".into(),
            name: "test".into(),
            created_ms: 1,
            may_create_buckets: true,
        }
    }

    #[test]
    fn keys_and_grants_go_with_their_key_or_bucket() {
        let t = Kit::new();
        t.bucket("one");
        t.bucket("two");
        t.ok(Command::CreateKey {
            key: key("AAAAAAAAAAAAAAAA"),
        });
        t.ok(Command::CreateKey {
            key: key("BBBBBBBBBBBBBBBB"),
        });
        assert_eq!(
            t.refused(Command::CreateKey {
                key: key("AAAAAAAAAAAAAAAA")
            }),
            Refused::Conflict
        );
        assert_eq!(
            t.refused(Command::CreateKey { key: key("short") }),
            Refused::BadRequest
        );
        let grant = |bucket: &str, id: &str, p| Command::SetGrant {
            bucket: bucket.into(),
            key: id.into(),
            permission: p,
        };
        t.ok(grant("one", "AAAAAAAAAAAAAAAA", Some(Permission::Read)));
        t.ok(grant("two", "AAAAAAAAAAAAAAAA", Some(Permission::Owner)));
        t.ok(grant("one", "BBBBBBBBBBBBBBBB", Some(Permission::Write)));
        assert_eq!(
            t.refused(grant("one", "CCCCCCCCCCCCCCCC", Some(Permission::Read))),
            Refused::NotFound
        );
        assert_eq!(
            t.refused(grant("three", "AAAAAAAAAAAAAAAA", Some(Permission::Read))),
            Refused::NoSuchBucket
        );
        let r = t.sm.read();
        assert_eq!(r.grants(Some("one"), None).unwrap().len(), 2);
        assert_eq!(r.grants(None, Some("AAAAAAAAAAAAAAAA")).unwrap().len(), 2);
        assert!(r.access_keys().unwrap().iter().all(|k| k.secret.is_empty()));
        assert!(!r.access_key("AAAAAAAAAAAAAAAA").unwrap().secret.is_empty());
        drop(r);
        t.ok(Command::DeleteKey {
            id: "AAAAAAAAAAAAAAAA".into(),
        });
        t.ok(Command::DeleteBucket { name: "one".into() });
        let r = t.sm.read();
        assert!(r.grants(None, None).unwrap().is_empty());
        assert_eq!(
            r.access_key("AAAAAAAAAAAAAAAA").unwrap_err().refused(),
            Some(Refused::NotFound)
        );
    }
}
