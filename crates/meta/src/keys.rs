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
