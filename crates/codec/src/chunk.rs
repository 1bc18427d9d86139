use std::sync::Arc;

use bytes::Bytes;
use tessera_types::{Hash, Policy};

use crate::{CodecError, ErasureBackend};

/// BLAKE3 of a byte string.
pub fn hash(bytes: &[u8]) -> Hash {
    *blake3::hash(bytes).as_bytes()
}

/// BLAKE3 of the fragments' hashes in fragment order (32 bytes each): what
/// an erasure-coded chunk's record keeps as its hash. It commits to every
/// byte of every fragment, and so of the chunk, for the cost of hashing
/// a few hundred bytes instead of the chunk a second time.
pub fn fragment_digest(hashes: &[Hash]) -> Hash {
    let mut h = blake3::Hasher::new();
    for f in hashes {
        h.update(f);
    }
    *h.finalize().as_bytes()
}

/// Fragment shards are padded to a multiple of this: both RS backends want an
/// even length, and SIMD kernels run best on aligned multiples of 64.
const SHARD_ALIGN: usize = 64;

/// Length of every fragment of a chunk of `chunk_len` bytes under `policy`.
pub fn fragment_len(policy: Policy, chunk_len: usize) -> usize {
    match policy {
        Policy::Erasure { data, .. } => {
            let per = chunk_len.div_ceil(data as usize);
            per.div_ceil(SHARD_ALIGN).max(1) * SHARD_ALIGN
        }
        Policy::Replicated { .. } => chunk_len,
    }
}

/// A chunk as written to nodes: fragment `i` goes to the `i`-th placed node.
#[derive(Debug, Clone)]
pub struct EncodedChunk {
    /// Bytes of data in the chunk.
    pub len: usize,
    /// Bytes in each fragment (data shards padded to `SHARD_ALIGN`).
    pub fragment_len: usize,
    /// The chunk record's hash: under replication the BLAKE3 of the
    /// chunk (every replica's hash); under erasure coding the
    /// [`fragment_digest`] of `hashes`.
    pub chunk_hash: Hash,
    pub fragments: Vec<Bytes>,
    /// BLAKE3 of each fragment: what every read checks it against.
    pub hashes: Vec<Hash>,
}

/// Encodes and decodes chunks under any policy with one erasure backend.
#[derive(Clone)]
pub struct ChunkCodec {
    backend: Arc<dyn ErasureBackend>,
}

impl Default for ChunkCodec {
    fn default() -> Self {
        ChunkCodec::new(crate::default_backend())
    }
}

impl ChunkCodec {
    pub fn new(backend: Arc<dyn ErasureBackend>) -> Self {
        ChunkCodec { backend }
    }

    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Encodes `chunk` into the policy's fragments with their BLAKE3s and
    /// the chunk record's hash (see [`EncodedChunk::chunk_hash`]). Each
    /// byte is hashed once: as part of its fragment. Fragments that are
    /// whole slices of the chunk (every replica; every data shard but a
    /// padded last one) share its buffer instead of copying it: a 4 MiB
    /// chunk under ec:4+2 allocates only its two parity shards. Errors:
    /// the backend's.
    pub fn encode(&self, policy: Policy, chunk: Bytes) -> Result<EncodedChunk, CodecError> {
        let flen = fragment_len(policy, chunk.len());
        let (fragments, hashes) = match policy {
            Policy::Replicated { copies } => (
                vec![chunk.clone(); copies as usize],
                vec![hash(&chunk); copies as usize],
            ),
            Policy::Erasure { data, parity } => {
                let data_shards: Vec<Bytes> = (0..data as usize)
                    .map(|i| {
                        let start = (i * flen).min(chunk.len());
                        let end = ((i + 1) * flen).min(chunk.len());
                        if end - start == flen {
                            return chunk.slice(start..end);
                        }
                        let mut shard = Vec::with_capacity(flen);
                        shard.extend_from_slice(&chunk[start..end]);
                        shard.resize(flen, 0);
                        Bytes::from(shard)
                    })
                    .collect();
                let mut parity_shards = vec![vec![0u8; flen]; parity as usize];
                if parity > 0 {
                    let refs: Vec<&[u8]> = data_shards.iter().map(|s| &s[..]).collect();
                    self.backend.encode(&refs, &mut parity_shards)?;
                }
                let all: Vec<Bytes> = data_shards
                    .into_iter()
                    .chain(parity_shards.into_iter().map(Bytes::from))
                    .collect();
                let hashes = all.iter().map(|f| hash(f)).collect();
                (all, hashes)
            }
        };
        let chunk_hash = match policy {
            Policy::Replicated { .. } => hashes[0],
            Policy::Erasure { .. } => fragment_digest(&hashes),
        };
        Ok(EncodedChunk {
            len: chunk.len(),
            fragment_len: flen,
            chunk_hash,
            fragments,
            hashes,
        })
    }

    /// Rebuilds a chunk of `len` bytes from the fragments present, which the
    /// caller has verified against `hashes` (each fragment's recorded
    /// BLAKE3), as pieces that concatenate to it. When every data fragment
    /// is present they are the pieces, taken as they are (no copy, no
    /// second hash: verified data fragments concatenate to the chunk they
    /// were cut from); when some were rebuilt from parity the one piece is
    /// the decoded chunk, and each rebuilt data fragment is first checked
    /// against its hash, so a decoding fault or a wrong input fragment can
    /// never return wrong bytes. The record's chunk hash is not needed:
    /// records written before it became a [`fragment_digest`] decode the
    /// same way. Errors: `FragmentCount` (fragments or hashes),
    /// `NotEnoughFragments`, `FragmentLength`, `RebuiltFragmentMismatch`.
    pub fn decode(
        &self,
        policy: Policy,
        len: usize,
        hashes: &[Hash],
        mut fragments: Vec<Option<Vec<u8>>>,
    ) -> Result<Vec<Bytes>, CodecError> {
        for got in [fragments.len(), hashes.len()] {
            if got != policy.fragments() {
                return Err(CodecError::FragmentCount {
                    expected: policy.fragments(),
                    got,
                });
            }
        }
        let have = fragments.iter().filter(|f| f.is_some()).count();
        if have < policy.required() {
            return Err(CodecError::NotEnoughFragments {
                needed: policy.required(),
                have,
            });
        }
        let flen = fragment_len(policy, len);
        check_lengths(&fragments, flen)?;
        if let Policy::Erasure { data, parity } = policy
            && must_reconstruct(policy, &fragments)
        {
            let data = data as usize;
            let rebuilt: Vec<usize> = (0..data).filter(|&i| fragments[i].is_none()).collect();
            self.backend
                .reconstruct_data(data, parity as usize, &mut fragments)?;
            for &index in &rebuilt {
                if fragments[index]
                    .as_deref()
                    .is_none_or(|f| hash(f) != hashes[index])
                {
                    return Err(CodecError::RebuiltFragmentMismatch { index });
                }
            }
            let mut chunk = Vec::with_capacity(data * flen);
            for f in fragments.into_iter().take(data) {
                let f = f.ok_or(CodecError::NotEnoughFragments { needed: data, have })?;
                chunk.extend_from_slice(&f);
            }
            if chunk.len() < len {
                return Err(CodecError::FragmentsShorterThanChunk { len });
            }
            chunk.truncate(len);
            return Ok(vec![Bytes::from(chunk)]);
        }
        // Systematic code: the data fragments (or a replica) are the chunk,
        // then padding.
        let data = match policy {
            Policy::Replicated { .. } => 1,
            Policy::Erasure { data, .. } => data as usize,
        };
        let mut left = len;
        let mut pieces = Vec::with_capacity(data);
        for f in fragments.into_iter().flatten().take(data) {
            let mut piece = Bytes::from(f);
            piece.truncate(left);
            left -= piece.len();
            if !piece.is_empty() {
                pieces.push(piece);
            }
        }
        if left != 0 {
            return Err(CodecError::FragmentsShorterThanChunk { len });
        }
        Ok(pieces)
    }
}

impl ChunkCodec {
    /// The fragments `wanted` (indices into the policy's fragments) of a
    /// chunk of `len` bytes, computed from the `fragments` present, which
    /// the caller has verified against their own hashes: what repair
    /// writes in place of lost fragments. Unlike decoding the chunk and
    /// encoding it again, this touches only the shards the code needs and
    /// hashes nothing: the caller checks each rebuilt fragment against the
    /// hash recorded when it was first written, which is the stronger
    /// check. Returns `(index, bytes)` in the order of `wanted`. Errors:
    /// `FragmentCount`, `NotEnoughFragments`, `FragmentLength`, a wanted
    /// index out of range as `FragmentCount`, the backend's.
    pub fn rebuild_fragments(
        &self,
        policy: Policy,
        len: usize,
        mut fragments: Vec<Option<Vec<u8>>>,
        wanted: &[usize],
    ) -> Result<Vec<(usize, Bytes)>, CodecError> {
        let n = policy.fragments();
        if fragments.len() != n {
            return Err(CodecError::FragmentCount {
                expected: n,
                got: fragments.len(),
            });
        }
        if let Some(&bad) = wanted.iter().find(|&&i| i >= n) {
            return Err(CodecError::FragmentCount {
                expected: n,
                got: bad + 1,
            });
        }
        let have = fragments.iter().filter(|f| f.is_some()).count();
        let flen = fragment_len(policy, len);
        check_lengths(&fragments, flen)?;
        match policy {
            Policy::Replicated { .. } => {
                let copy = fragments
                    .into_iter()
                    .flatten()
                    .next()
                    .map(Bytes::from)
                    .ok_or(CodecError::NotEnoughFragments { needed: 1, have })?;
                Ok(wanted.iter().map(|&i| (i, copy.clone())).collect())
            }
            Policy::Erasure { data, parity } => {
                if have < data as usize {
                    return Err(CodecError::NotEnoughFragments {
                        needed: data as usize,
                        have,
                    });
                }
                if wanted.iter().any(|&i| fragments[i].is_none()) {
                    self.backend
                        .reconstruct_all(data as usize, parity as usize, &mut fragments)?;
                }
                wanted
                    .iter()
                    .map(|&i| {
                        let f = fragments[i].clone().ok_or(CodecError::NotEnoughFragments {
                            needed: data as usize,
                            have,
                        })?;
                        if f.len() != flen {
                            return Err(CodecError::FragmentLength {
                                index: i,
                                got: f.len(),
                                expected: flen,
                            });
                        }
                        Ok((i, Bytes::from(f)))
                    })
                    .collect()
            }
        }
    }
}

/// Every present fragment is `flen` bytes long, or `FragmentLength`.
fn check_lengths(fragments: &[Option<Vec<u8>>], flen: usize) -> Result<(), CodecError> {
    for (index, f) in fragments.iter().enumerate() {
        if let Some(f) = f
            && f.len() != flen
        {
            return Err(CodecError::FragmentLength {
                index,
                got: f.len(),
                expected: flen,
            });
        }
    }
    Ok(())
}

/// Whether `ChunkCodec::decode` must compute data from parity (a data
/// fragment is missing): the costly case, which callers run off their
/// async threads. Taking the chunk from its data fragments or a replica
/// is cheap.
pub fn must_reconstruct(policy: Policy, fragments: &[Option<Vec<u8>>]) -> bool {
    match policy {
        Policy::Replicated { .. } => false,
        Policy::Erasure { data, .. } => fragments.iter().take(data as usize).any(Option::is_none),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ReedSolomonErasure, ReedSolomonSimd};
    use rand::{Rng, SeedableRng, seq::SliceRandom};

    fn backends() -> Vec<ChunkCodec> {
        vec![
            ChunkCodec::new(Arc::new(ReedSolomonErasure::default())),
            ChunkCodec::new(Arc::new(ReedSolomonSimd)),
        ]
    }

    #[test]
    fn round_trips_losing_any_tolerated_set() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let policies = [
            "ec:4+2", "ec:1+0", "ec:1+1", "ec:3+0", "ec:8+3", "ec:10+4", "ec:32+16", "rep:1",
            "rep:3",
        ];
        for codec in backends() {
            for p in policies {
                let policy: Policy = p.parse().unwrap();
                for len in [1usize, 63, 64, 1000, 4096 + 1, 100_003] {
                    let data: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
                    let enc = codec.encode(policy, Bytes::from(data.clone())).unwrap();
                    assert_eq!(enc.fragments.len(), policy.fragments());
                    for (f, h) in enc.fragments.iter().zip(&enc.hashes) {
                        assert_eq!(f.len(), enc.fragment_len);
                        assert_eq!(&hash(f), h);
                    }
                    // Drop as many fragments as the policy tolerates, at random.
                    let mut idx: Vec<usize> = (0..policy.fragments()).collect();
                    idx.shuffle(&mut rng);
                    let mut frags: Vec<Option<Vec<u8>>> =
                        enc.fragments.iter().map(|f| Some(f.to_vec())).collect();
                    for &i in &idx[..policy.tolerated_losses()] {
                        frags[i] = None;
                    }
                    let out = codec
                        .decode(policy, len, &enc.hashes, frags.clone())
                        .unwrap()
                        .concat();
                    assert_eq!(out, data, "{} {p} len {len}", codec.backend_name());
                    // One more loss is too many.
                    if let Some(&i) = idx.get(policy.tolerated_losses()) {
                        frags[i] = None;
                        assert!(matches!(
                            codec.decode(policy, len, &enc.hashes, frags),
                            Err(CodecError::NotEnoughFragments { .. })
                        ));
                    }
                }
            }
        }
    }

    /// Repair's path: the lost fragments computed from the others are
    /// the ones first encoded, for any tolerated loss, data or parity.
    #[test]
    fn rebuilt_fragments_are_the_encoded_ones() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for codec in backends() {
            for p in ["ec:4+2", "ec:1+1", "ec:8+3", "ec:3+0", "rep:3"] {
                let policy: Policy = p.parse().unwrap();
                for len in [1usize, 1000, 100_003] {
                    let data: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
                    let enc = codec.encode(policy, Bytes::from(data.clone())).unwrap();
                    let mut idx: Vec<usize> = (0..policy.fragments()).collect();
                    idx.shuffle(&mut rng);
                    let lost = &idx[..policy.tolerated_losses().max(1).min(idx.len() - 1)];
                    let mut frags: Vec<Option<Vec<u8>>> =
                        enc.fragments.iter().map(|f| Some(f.to_vec())).collect();
                    for &i in lost {
                        frags[i] = None;
                    }
                    if lost.len() > policy.tolerated_losses() {
                        assert!(codec.rebuild_fragments(policy, len, frags, lost).is_err());
                        continue;
                    }
                    let out = codec.rebuild_fragments(policy, len, frags, lost).unwrap();
                    assert_eq!(out.len(), lost.len());
                    for (i, bytes) in out {
                        assert_eq!(
                            bytes,
                            enc.fragments[i],
                            "{} {p} len {len} fragment {i}",
                            codec.backend_name()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn wrong_bytes_are_refused() {
        let codec = ChunkCodec::default();
        let policy: Policy = "ec:4+2".parse().unwrap();
        let data = vec![7u8; 10_000];
        let enc = codec.encode(policy, Bytes::from(data.clone())).unwrap();
        let mut frags: Vec<Option<Vec<u8>>> =
            enc.fragments.iter().map(|f| Some(f.to_vec())).collect();
        // A wrong byte in a fragment used to rebuild a missing one.
        frags[0] = None;
        frags[1].as_mut().unwrap()[5] ^= 1;
        assert!(matches!(
            codec.decode(policy, data.len(), &enc.hashes, frags.clone()),
            Err(CodecError::RebuiltFragmentMismatch { index: 0 })
        ));
        frags[0] = Some(enc.fragments[0].to_vec());
        frags[1].as_mut().unwrap().pop();
        assert!(matches!(
            codec.decode(policy, data.len(), &enc.hashes, frags.clone()),
            Err(CodecError::FragmentLength { index: 1, .. })
        ));
        assert!(matches!(
            codec.decode(policy, data.len(), &enc.hashes[..5], frags),
            Err(CodecError::FragmentCount {
                expected: 6,
                got: 5
            })
        ));
    }

    /// A record's chunk hash: the chunk's own BLAKE3 under replication, the
    /// digest of the fragments' hashes under erasure coding (the chunk is
    /// not hashed a second time), so it changes with any byte of any
    /// fragment.
    #[test]
    fn the_chunk_hash_commits_to_every_fragment() {
        let codec = ChunkCodec::default();
        let data: Vec<u8> = (0..100_003u32).map(|i| (i * 7 % 251) as u8).collect();
        let rep: Policy = "rep:3".parse().unwrap();
        let enc = codec.encode(rep, Bytes::from(data.clone())).unwrap();
        assert_eq!(enc.chunk_hash, hash(&data));
        assert_eq!(enc.hashes, vec![hash(&data); 3]);
        let ec: Policy = "ec:4+2".parse().unwrap();
        let enc = codec.encode(ec, Bytes::from(data.clone())).unwrap();
        let joined: Vec<u8> = enc.hashes.iter().flatten().copied().collect();
        assert_eq!(enc.chunk_hash, hash(&joined));
        assert_ne!(enc.chunk_hash, hash(&data));
        let mut other = data.clone();
        other[99_999] ^= 1;
        let changed = codec.encode(ec, Bytes::from(other)).unwrap();
        assert_ne!(changed.chunk_hash, enc.chunk_hash);
    }
}
