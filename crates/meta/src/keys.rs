//! Key encodings. Integers are big-endian and strings are length-prefixed
//! where something follows them, so byte order matches logical order and a
//! prefix scan never runs into a neighbour's keys.

use tessera_types::{ChunkId, NodeId};

use crate::MetaError;
use crate::store::KeyCodec;

fn fixed<const N: usize>(bytes: &[u8], what: &str) -> Result<[u8; N], MetaError> {
    bytes
        .try_into()
        .map_err(|_| MetaError::Corrupt(format!("{what} key: {} bytes, expected {N}", bytes.len())))
}

impl KeyCodec for NodeId {
    fn encode(&self) -> Vec<u8> {
        self.0.to_be_bytes().to_vec()
    }
    fn decode(bytes: &[u8]) -> Result<Self, MetaError> {
        Ok(NodeId(u64::from_be_bytes(fixed(bytes, "node")?)))
    }
}

impl KeyCodec for ChunkId {
    fn encode(&self) -> Vec<u8> {
        self.0.to_vec()
    }
    fn decode(bytes: &[u8]) -> Result<Self, MetaError> {
        Ok(ChunkId(fixed(bytes, "chunk")?))
    }
}

impl KeyCodec for u64 {
    fn encode(&self) -> Vec<u8> {
        self.to_be_bytes().to_vec()
    }
    fn decode(bytes: &[u8]) -> Result<Self, MetaError> {
        Ok(u64::from_be_bytes(fixed(bytes, "sequence")?))
    }
}

impl KeyCodec for String {
    fn encode(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
    fn decode(bytes: &[u8]) -> Result<Self, MetaError> {
        String::from_utf8(bytes.to_vec())
            .map_err(|_| MetaError::Corrupt("name key is not UTF-8".into()))
    }
}

/// (bucket, key): one length byte, the bucket name, then the object key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectKey {
    pub bucket: String,
    pub key: String,
}

impl ObjectKey {
    pub fn new(bucket: &str, key: &str) -> Self {
        ObjectKey {
            bucket: bucket.to_string(),
            key: key.to_string(),
        }
    }

    /// Every key of a bucket starts with this.
    pub fn bucket_prefix(bucket: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + bucket.len());
        out.push(bucket.len() as u8);
        out.extend_from_slice(bucket.as_bytes());
        out
    }
}

impl KeyCodec for ObjectKey {
    fn encode(&self) -> Vec<u8> {
        let mut out = ObjectKey::bucket_prefix(&self.bucket);
        out.extend_from_slice(self.key.as_bytes());
        out
    }
    fn decode(bytes: &[u8]) -> Result<Self, MetaError> {
        let bad = || MetaError::Corrupt("object key is malformed".into());
        let (&blen, rest) = bytes.split_first().ok_or_else(bad)?;
        if rest.len() < blen as usize {
            return Err(bad());
        }
        let (bucket, key) = rest.split_at(blen as usize);
        Ok(ObjectKey {
            bucket: String::from_utf8(bucket.to_vec()).map_err(|_| bad())?,
            key: String::from_utf8(key.to_vec()).map_err(|_| bad())?,
        })
    }
}

/// (node, chunk, fragment index): the index from a node to what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeFragmentKey {
    pub node: NodeId,
    pub chunk: ChunkId,
    pub index: u8,
}

impl KeyCodec for NodeFragmentKey {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(25);
        out.extend_from_slice(&self.node.0.to_be_bytes());
        out.extend_from_slice(&self.chunk.0);
        out.push(self.index);
        out
    }
    fn decode(bytes: &[u8]) -> Result<Self, MetaError> {
        let b: [u8; 25] = fixed(bytes, "node fragment")?;
        Ok(NodeFragmentKey {
            node: NodeId(u64::from_be_bytes(fixed(&b[..8], "node")?)),
            chunk: ChunkId(fixed(&b[8..24], "chunk")?),
            index: b[24],
        })
    }
}

/// (chunk, fragment index): one fragment wherever it lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FragmentKey {
    pub chunk: ChunkId,
    pub index: u8,
}

impl KeyCodec for FragmentKey {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(17);
        out.extend_from_slice(&self.chunk.0);
        out.push(self.index);
        out
    }
    fn decode(bytes: &[u8]) -> Result<Self, MetaError> {
        let b: [u8; 17] = fixed(bytes, "fragment")?;
        Ok(FragmentKey {
            chunk: ChunkId(fixed(&b[..16], "chunk")?),
            index: b[16],
        })
    }
}

/// (bucket, key, order): one version of an object. The key is escaped so
/// that a key's versions sort together and keys keep their byte order: each
/// 0x00 in it becomes 0x00 0x01, and 0x00 0x00 ends it (keys may contain
/// NUL, and a plain terminator would interleave "a" + order with "a\0b").
/// `order` is big-endian; meta draws it so that newer versions have lower
/// values, so a key's versions come out newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionKey {
    pub bucket: String,
    pub key: String,
    pub order: u64,
}

impl VersionKey {
    pub fn new(bucket: &str, key: &str, order: u64) -> Self {
        VersionKey {
            bucket: bucket.to_string(),
            key: key.to_string(),
            order,
        }
    }

    /// Every version of a key under `prefix` (any key starting with it)
    /// starts with this: the bucket and the escaped prefix, unterminated.
    pub fn prefix(bucket: &str, prefix: &str) -> Vec<u8> {
        let mut out = ObjectKey::bucket_prefix(bucket);
        for &b in prefix.as_bytes() {
            out.push(b);
            if b == 0 {
                out.push(1);
            }
        }
        out
    }

    /// Where the versions of `key` begin.
    pub fn key_start(bucket: &str, key: &str) -> Vec<u8> {
        let mut out = Self::prefix(bucket, key);
        out.extend_from_slice(&[0, 0]);
        out
    }

    /// The first position after every version of `key` (the key "key\0").
    pub fn key_end(bucket: &str, key: &str) -> Vec<u8> {
        let mut out = Self::prefix(bucket, key);
        out.extend_from_slice(&[0, 1]);
        out
    }
}

impl KeyCodec for VersionKey {
    fn encode(&self) -> Vec<u8> {
        let mut out = Self::key_start(&self.bucket, &self.key);
        out.extend_from_slice(&self.order.to_be_bytes());
        out
    }
    fn decode(bytes: &[u8]) -> Result<Self, MetaError> {
        let bad = || MetaError::Corrupt("version key is malformed".into());
        let (&blen, rest) = bytes.split_first().ok_or_else(bad)?;
        if rest.len() < blen as usize + 10 {
            return Err(bad());
        }
        let (bucket, rest) = rest.split_at(blen as usize);
        let (escaped, order) = rest.split_at(rest.len() - 8);
        let mut key = Vec::with_capacity(escaped.len());
        let mut i = 0;
        loop {
            match escaped.get(i) {
                Some(0) => match escaped.get(i + 1) {
                    Some(1) => {
                        key.push(0);
                        i += 2;
                    }
                    Some(0) if i + 2 == escaped.len() => break,
                    _ => return Err(bad()),
                },
                Some(&b) => {
                    key.push(b);
                    i += 1;
                }
                None => return Err(bad()),
            }
        }
        Ok(VersionKey {
            bucket: String::from_utf8(bucket.to_vec()).map_err(|_| bad())?,
            key: String::from_utf8(key).map_err(|_| bad())?,
            order: u64::from_be_bytes(fixed(order, "version order")?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_sort_by_bucket_then_key() {
        let a = ObjectKey::new("abc", "zzz").encode();
        let b = ObjectKey::new("abcd", "a").encode();
        let c = ObjectKey::new("abc", "zzzz").encode();
        // Length prefix keeps "abc"'s keys together and before "abcd"'s.
        assert!(a < c && c < b);
        assert_eq!(ObjectKey::decode(&a).unwrap(), ObjectKey::new("abc", "zzz"));
        assert!(ObjectKey::decode(&[9, b'a']).is_err());
    }

    #[test]
    fn version_keys_sort_by_key_then_order_and_round_trip() {
        let keys = [
            VersionKey::new("b", "a", 5),
            VersionKey::new("b", "a", 9),
            VersionKey::new("b", "a\0", 1),
            VersionKey::new("b", "a\0b", 0),
            VersionKey::new("b", "ab", 0),
            VersionKey::new("b", "b", u64::MAX),
            VersionKey::new("c", "", 0),
        ];
        let enc: Vec<Vec<u8>> = keys.iter().map(|k| k.encode()).collect();
        assert!(enc.windows(2).all(|w| w[0] < w[1]), "{enc:?}");
        for (k, e) in keys.iter().zip(&enc) {
            assert_eq!(&VersionKey::decode(e).unwrap(), k);
        }
        // A key's versions lie between its start and end, and nothing else.
        let (start, end) = (
            VersionKey::key_start("b", "a"),
            VersionKey::key_end("b", "a"),
        );
        let inside: Vec<_> = enc.iter().filter(|e| **e >= start && **e < end).collect();
        assert_eq!(inside.len(), 2);
        assert!(
            enc.iter()
                .all(|e| e.starts_with(&VersionKey::prefix("b", "")) || e[1] == b'c')
        );
        for cut in 0..enc[2].len() {
            assert!(VersionKey::decode(&enc[2][..cut]).is_err());
        }
    }

    #[test]
    fn fixed_keys_refuse_wrong_lengths() {
        assert!(NodeId::decode(&[1, 2, 3]).is_err());
        assert!(ChunkId::decode(&[0; 15]).is_err());
        let k = NodeFragmentKey {
            node: NodeId(5),
            chunk: ChunkId([9; 16]),
            index: 3,
        };
        assert_eq!(NodeFragmentKey::decode(&k.encode()).unwrap(), k);
    }
}

/// (volume id, extent index, sequence): the sequence is stored inverted so
/// that, within an extent, the newest record comes first and a seek to
/// `(volume, index, view)` lands on the newest record a view at `view`
/// sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtentKey {
    pub volume: u64,
    pub index: u64,
    pub seq: u64,
}

impl KeyCodec for ExtentKey {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24);
        out.extend_from_slice(&self.volume.to_be_bytes());
        out.extend_from_slice(&self.index.to_be_bytes());
        out.extend_from_slice(&(u64::MAX - self.seq).to_be_bytes());
        out
    }
    fn decode(bytes: &[u8]) -> Result<Self, MetaError> {
        let b: [u8; 24] = fixed(bytes, "extent")?;
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i * 8..i * 8 + 8]);
            u64::from_be_bytes(w)
        };
        Ok(ExtentKey {
            volume: word(0),
            index: word(1),
            seq: u64::MAX - word(2),
        })
    }
}
