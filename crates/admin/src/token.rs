//! Admin tokens: 32 random bytes as 64 hex digits, known only to whoever
//! made them; meta keeps the BLAKE3 hash (see `Proposal::CreateAdminToken`).

use tessera_sdk::{Client, SdkError};

/// Draws a new token from the OS random source.
pub fn new_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The hash meta stores for `token`: BLAKE3, 64 lower-case hex digits.
pub fn token_hash(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

/// How people name a token: the first 16 hex digits of its hash (unique
/// in practice, and no help in guessing the token).
pub fn token_id(hash: &str) -> &str {
    hash.get(..16).unwrap_or(hash)
}

/// Makes a token called `name`, records its hash in meta, and returns it:
/// the only time the token is seen.
pub async fn create_token(client: &Client, name: &str) -> Result<String, SdkError> {
    let token = new_token();
    client.create_admin_token(name, &token_hash(&token)).await?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_fresh_and_hash_to_hex() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        let h = token_hash(&a);
        assert_eq!(h.len(), 64);
        assert!(
            h.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(h, a);
        assert_eq!(h, token_hash(&a));
    }
}
