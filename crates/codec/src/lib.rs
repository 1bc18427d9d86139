//! Turns chunks of bytes into protected fragments and back.
//!
//! Owns the chunk layout (how a chunk is cut into fragments and padded), the
//! Reed-Solomon backends behind one small trait, replication, BLAKE3 hashing
//! of fragments and chunks, cutting a byte stream into chunks, and the MD5 of
//! whole bodies (S3's ETag), many bodies at once in SIMD lanes. It must not
//! know where fragments live: no network, no disk, no metadata.

mod backend;
mod chunk;
mod md5_lanes;
mod reader;

pub use backend::{ErasureBackend, ReedSolomonErasure, ReedSolomonSimd, default_backend};
pub use chunk::{ChunkCodec, EncodedChunk, fragment_digest, fragment_len, hash, must_reconstruct};
pub use md5_lanes::{Md5Digest, Md5Kernel, Md5Lanes, Md5Stream};
pub use reader::ChunkReader;

/// Default chunk size: large enough that per-chunk overhead (one metadata
/// record, K+M fragment writes) is small next to the data, small enough that a
/// random read touches little more than it needs.
pub const DEFAULT_CHUNK_SIZE: usize = 4 * 1024 * 1024;
/// Largest chunk a writer may use; fragments never exceed this, which bounds
/// what a node accepts in one put.
pub const MAX_CHUNK_SIZE: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("need {needed} fragments to decode, have {have}")]
    NotEnoughFragments { needed: usize, have: usize },
    #[error("fragment {index} has length {got}, expected {expected}")]
    FragmentLength {
        index: usize,
        got: usize,
        expected: usize,
    },
    #[error("expected {expected} fragment slots, got {got}")]
    FragmentCount { expected: usize, got: usize },
    /// A data fragment computed from parity differs from the one written:
    /// one of the fragments it was computed from was wrong although its
    /// caller took it as verified.
    #[error("fragment {index} rebuilt from parity does not match its recorded BLAKE3 hash")]
    RebuiltFragmentMismatch { index: usize },
    #[error("the data fragments hold fewer bytes than the chunk's {len}")]
    FragmentsShorterThanChunk { len: usize },
    #[error("erasure coding failed: {0}")]
    Backend(String),
    #[error("reading the input failed: {0}")]
    Io(#[from] std::io::Error),
    /// The MD5 hashing thread could not start or has stopped.
    #[error("MD5 hashing: {0}")]
    Md5Lanes(String),
}
