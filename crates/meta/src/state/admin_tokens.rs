//! Admin API tokens, by the BLAKE3 hash of the token (64 lower-case hex
//! digits). The token itself never reaches meta: the client that makes one
//! draws it and proposes its hash, and the admin API hashes what a request
//! presents and looks the hash up. A copy of meta's store therefore gives
//! no token away.

use tessera_proto::AdminToken;

use super::tables::ADMIN_TOKENS;
use super::{Applied, Refused, Txn, refuse};
use crate::MetaError;
use crate::store::{Read, Step};

/// Longest name an operator may give a token.
pub const MAX_TOKEN_NAME: usize = 128;

/// A token hash as stored: 64 lower-case hex digits (BLAKE3's 32 bytes).
pub fn validate_token_hash(hash: &str) -> Result<(), String> {
    if hash.len() == 64
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err("an admin token hash is 64 lower-case hex digits (BLAKE3)".into())
    }
}

pub(super) fn create_admin_token(
    tx: &mut Txn<'_, '_>,
    hash: &str,
    token: &AdminToken,
) -> Result<Applied, MetaError> {
    validate_token_hash(hash).map_err(|e| refuse(Refused::BadRequest, e))?;
    if token.name.len() > MAX_TOKEN_NAME {
        return Err(refuse(
            Refused::BadRequest,
            format!("an admin token name has at most {MAX_TOKEN_NAME} bytes"),
        ));
    }
    if tx.contains(ADMIN_TOKENS, &hash.to_string())? {
        return Err(refuse(Refused::Conflict, "this admin token already exists"));
    }
    tx.put(ADMIN_TOKENS, &hash.to_string(), token)?;
    Ok(Applied::Done)
}

pub(super) fn delete_admin_token(tx: &mut Txn<'_, '_>, hash: &str) -> Result<Applied, MetaError> {
    let existed = tx.contains(ADMIN_TOKENS, &hash.to_string())?;
    tx.delete(ADMIN_TOKENS, &hash.to_string())?;
    Ok(Applied::Deleted { existed })
}

/// Queries of admin tokens.
pub trait AdminTokenQueries: Read {
    /// The token with this hash. Errors: `NotFound`.
    fn admin_token(&self, hash: &str) -> Result<AdminToken, MetaError> {
        self.get(ADMIN_TOKENS, &hash.to_string())?
            .ok_or_else(|| refuse(Refused::NotFound, "no such admin token"))
    }

    /// Every token with its hash, in hash order.
    fn admin_tokens(&self) -> Result<Vec<(String, AdminToken)>, MetaError> {
        let mut out = Vec::new();
        self.scan(ADMIN_TOKENS, &[], |_, hash, token| {
            out.push((hash, token));
            Ok(Step::Continue)
        })?;
        Ok(out)
    }
}

impl<R: Read + ?Sized> AdminTokenQueries for R {}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;

    fn create(hash: &str, name: &str) -> Command {
        Command::CreateAdminToken {
            hash: hash.into(),
            token: AdminToken {
                name: name.into(),
                created_ms: 7,
            },
        }
    }

    #[test]
    fn tokens_are_found_by_their_hash_only() {
        let t = Kit::new();
        let hash = "ab".repeat(32);
        t.ok(create(&hash, "ops"));
        assert_eq!(t.refused(create(&hash, "again")), Refused::Conflict);
        assert_eq!(t.refused(create("abc", "short")), Refused::BadRequest);
        assert_eq!(
            t.refused(create(&"AB".repeat(32), "upper")),
            Refused::BadRequest
        );
        assert_eq!(
            t.refused(create(&"cd".repeat(32), &"n".repeat(MAX_TOKEN_NAME + 1))),
            Refused::BadRequest
        );
        let r = t.sm.read();
        assert_eq!(r.admin_token(&hash).unwrap().name, "ops");
        assert_eq!(
            r.admin_token(&"cd".repeat(32)).unwrap_err().refused(),
            Some(Refused::NotFound)
        );
        drop(r);
        t.ok(create(&"01".repeat(32), "ci"));
        let listed: Vec<String> =
            t.sm.read()
                .admin_tokens()
                .unwrap()
                .into_iter()
                .map(|(h, tok)| format!("{}:{}", &h[..2], tok.name))
                .collect();
        assert_eq!(listed, ["01:ci", "ab:ops"]);
        let delete = |hash: String| Command::DeleteAdminToken { hash };
        assert_eq!(
            t.ok(delete(hash.clone())),
            Applied::Deleted { existed: true }
        );
        assert_eq!(
            t.ok(delete(hash.clone())),
            Applied::Deleted { existed: false }
        );
        assert_eq!(
            t.sm.read().admin_token(&hash).unwrap_err().refused(),
            Some(Refused::NotFound)
        );
    }
}
