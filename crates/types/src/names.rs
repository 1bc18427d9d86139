use crate::TypesError;

/// Longest object key, in bytes of UTF-8 (the S3 limit).
pub const MAX_KEY_LEN: usize = 1024;

/// Bucket names follow S3's DNS-safe rules so that virtual-hosted addressing
/// works: 3..=63 characters of `a-z0-9.-`, starting and ending with a letter
/// or digit, no `..`, and not shaped like an IPv4 address.
pub fn validate_bucket_name(name: &str) -> Result<(), TypesError> {
    let bad = |why| {
        Err(TypesError::InvalidBucketName {
            name: name.to_string(),
            why,
        })
    };
    if !(3..=63).contains(&name.len()) {
        return bad("must be 3 to 63 characters long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return bad("may contain only lowercase letters, digits, '.' and '-'");
    }
    let first = name.as_bytes()[0];
    let last = name.as_bytes()[name.len() - 1];
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return bad("must start and end with a letter or digit");
    }
    if name.contains("..") || name.contains(".-") || name.contains("-.") {
        return bad("must not contain '..', '.-' or '-.'");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return bad("must not be formatted as an IP address");
    }
    Ok(())
}

/// Keys are any non-empty UTF-8 of at most 1024 bytes, stored as given:
/// `../x`, `a//b` and spaces are ordinary keys, not paths.
pub fn validate_key(key: &str) -> Result<(), TypesError> {
    if key.is_empty() {
        return Err(TypesError::InvalidKey("key must not be empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(TypesError::InvalidKey("key is longer than 1024 bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names() {
        for ok in ["abc", "my-bucket", "a.b.c", "x1y2z3", &"a".repeat(63)] {
            assert!(validate_bucket_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "Abc",
            "-abc",
            "abc-",
            "a..b",
            "a_b",
            "192.168.1.1",
            "a b",
            &"a".repeat(64),
        ] {
            assert!(validate_bucket_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys() {
        assert!(validate_key("../x").is_ok());
        assert!(validate_key("a//b c/ü").is_ok());
        assert!(validate_key(&"k".repeat(1024)).is_ok());
        assert!(validate_key(&"k".repeat(1025)).is_err());
        assert!(validate_key("").is_err());
    }
}
