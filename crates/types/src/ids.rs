use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::TypesError;

/// A BLAKE3 digest.
pub type Hash = [u8; 32];

/// Identifies one chunk cluster-wide. Random, so that writers never coordinate
/// to name their chunks and placement spreads evenly.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChunkId(#[serde(with = "crate::fixed_bytes")] pub [u8; 16]);

impl ChunkId {
    pub fn random() -> Self {
        ChunkId(rand::random())
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({self})")
    }
}

impl FromStr for ChunkId {
    type Err = TypesError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 16];
        hex::decode_to_slice(s, &mut out).map_err(|_| TypesError::InvalidId(s.to_string()))?;
        Ok(ChunkId(out))
    }
}

/// Identifies one storage node. Chosen by the node on first start and kept in
/// its data directory, so that it survives restarts and address changes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

impl NodeId {
    pub fn random() -> Self {
        NodeId(rand::random())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

impl FromStr for NodeId {
    type Err = TypesError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(s, 16)
            .map(NodeId)
            .map_err(|_| TypesError::InvalidId(s.to_string()))
    }
}

/// Identifies one client request (an S3 request at the gateway) across
/// processes: the gateway answers it in `x-amz-request-id` and error
/// bodies, and sends it with every fragment request the request causes, so
/// that nodes log it. Shown as 16 upper-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestId(pub u64);

impl RequestId {
    pub fn random() -> Self {
        RequestId(rand::random())
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", self.0)
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text() {
        let c = ChunkId::random();
        assert_eq!(c.to_string().parse::<ChunkId>().unwrap(), c);
        let n = NodeId(0xdead_beef);
        assert_eq!(n.to_string(), "00000000deadbeef");
        assert_eq!(n.to_string().parse::<NodeId>().unwrap(), n);
        assert!("zz".parse::<ChunkId>().is_err());
        assert_eq!(RequestId(0xab).to_string(), "00000000000000AB");
    }
}
