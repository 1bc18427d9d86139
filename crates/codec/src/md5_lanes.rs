//! MD5 digests of many messages at once, for S3 ETags.
//!
//! S3 names a single-part object by the MD5 of its body (the ETag), and
//! clients such as rclone check it, so every PUT hashes every byte with MD5.
//! One MD5 stream is a serial chain of 64-byte blocks and runs at about
//! 550 MiB/s on one core: the largest single cost of a PUT. Independent
//! messages are independent chains, so [`Md5Lanes`] hashes up to 16 of them
//! side by side, one message per 32-bit lane of an AVX-512 register, on one
//! thread that every concurrent PUT feeds. Without AVX-512 the same thread
//! hashes lane by lane with the scalar block function.
//!
//! The algorithm is RFC 1321; the digests are checked against the `md-5`
//! crate in the tests.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::CodecError;

/// An MD5 digest: 16 bytes, RFC 1321 section 3.5 byte order.
pub type Md5Digest = [u8; 16];

/// Lanes in one AVX-512 register of 32-bit words.
const LANES: usize = 16;
/// Bytes a lagging hasher may hold on behalf of all streams, in units of
/// [`PERMIT_BYTES`]: the bodies are alive anyway while their chunks are
/// written, this bounds how long past that the hasher keeps them.
const BUDGET_PERMITS: usize = 2048;
/// The same bound for one message (8 MiB, two default chunks): a lone
/// writer reading faster than its bytes are hashed waits for the hasher, as
/// it did when it hashed them itself, instead of filling the whole budget.
const MESSAGE_PERMITS: usize = 128;
const PERMIT_BYTES: usize = 64 * 1024;
/// Blocks one lane hashes before the thread looks for new messages again
/// (256 KiB), so a stream that arrives late gets a lane soon.
const ROUND_BLOCKS: usize = 4096;
/// Longest a message's bytes wait for other messages to fill the lanes.
/// Nobody waits on them meanwhile: the PUT writes its chunks, and asking for
/// the digest ends the wait.
const FILL_WAIT: Duration = Duration::from_millis(10);

const INIT: [u32; 4] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];

/// RFC 1321 section 3.4: the sine table T[1..64].
const K: [u32; 64] = [
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
];

/// Per-step left rotations, RFC 1321 section 3.4.
const S: [u32; 64] = [
    7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, //
    5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, //
    4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, //
    6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
];

/// Which message word step `i` adds (RFC 1321 section 3.4, rounds 1-4).
const fn word(i: usize) -> usize {
    match i / 16 {
        0 => i,
        1 => (5 * i + 1) % 16,
        2 => (3 * i + 5) % 16,
        _ => (7 * i) % 16,
    }
}

/// One 64-byte block into one MD5 state.
fn compress(state: &mut [u32; 4], block: &[u8; 64]) {
    let mut m = [0u32; 16];
    for (w, b) in m.iter_mut().zip(block.chunks_exact(4)) {
        *w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    let [mut a, mut b, mut c, mut d] = *state;
    for i in 0..64 {
        let f = match i / 16 {
            0 => (b & c) | (!b & d),
            1 => (b & d) | (c & !d),
            2 => b ^ c ^ d,
            _ => c ^ (b | !d),
        };
        let rotated = a
            .wrapping_add(f)
            .wrapping_add(K[i])
            .wrapping_add(m[word(i)])
            .rotate_left(S[i]);
        (a, b, c, d) = (d, b.wrapping_add(rotated), b, c);
    }
    for (s, v) in state.iter_mut().zip([a, b, c, d]) {
        *s = s.wrapping_add(v);
    }
}

/// The final blocks of a message (RFC 1321 sections 3.1 and 3.2): the
/// `tail` of fewer than 64 bytes left after the whole blocks, a 1 bit,
/// zeros, and the length in bits, little-endian.
fn finish(mut state: [u32; 4], tail: &[u8], len: u64) -> Md5Digest {
    let mut last = [0u8; 128];
    last[..tail.len()].copy_from_slice(tail);
    last[tail.len()] = 0x80;
    let blocks = if tail.len() < 56 { 1 } else { 2 };
    last[blocks * 64 - 8..blocks * 64].copy_from_slice(&len.wrapping_mul(8).to_le_bytes());
    for block in last[..blocks * 64].chunks_exact(64) {
        let mut b = [0u8; 64];
        b.copy_from_slice(block);
        compress(&mut state, &b);
    }
    let mut out = [0u8; 16];
    for (o, s) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&s.to_le_bytes());
    }
    out
}

/// The states of 16 messages, word-major: `words[r][j]` is word `r` of
/// lane `j`'s state, the layout the vector kernel loads.
#[derive(Default)]
struct LaneStates {
    words: [[u32; LANES]; 4],
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{LANES, LaneStates};

    /// 16 rows of 16 words into 16 columns: `out[w]` holds word `w` of every
    /// row, row `j` in lane `j`. Four stages of shuffles: 32-bit pairs,
    /// 64-bit pairs, then 128-bit lanes twice.
    #[target_feature(enable = "avx512f")]
    fn transpose(r: &[__m512i; 16]) -> [__m512i; 16] {
        let mut t = [_mm512_setzero_si512(); 16];
        for p in 0..8 {
            t[2 * p] = _mm512_unpacklo_epi32(r[2 * p], r[2 * p + 1]);
            t[2 * p + 1] = _mm512_unpackhi_epi32(r[2 * p], r[2 * p + 1]);
        }
        // u[4g + m] holds word 4k + m of rows 4g..4g+3 in 128-bit lane k.
        let mut u = [_mm512_setzero_si512(); 16];
        for g in 0..4 {
            let (t0, t1, t2, t3) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
            u[4 * g] = _mm512_unpacklo_epi64(t0, t2);
            u[4 * g + 1] = _mm512_unpackhi_epi64(t0, t2);
            u[4 * g + 2] = _mm512_unpacklo_epi64(t1, t3);
            u[4 * g + 3] = _mm512_unpackhi_epi64(t1, t3);
        }
        let mut out = [_mm512_setzero_si512(); 16];
        for m in 0..4 {
            let x0 = _mm512_shuffle_i32x4::<0x44>(u[m], u[4 + m]);
            let x1 = _mm512_shuffle_i32x4::<0xEE>(u[m], u[4 + m]);
            let y0 = _mm512_shuffle_i32x4::<0x44>(u[8 + m], u[12 + m]);
            let y1 = _mm512_shuffle_i32x4::<0xEE>(u[8 + m], u[12 + m]);
            out[m] = _mm512_shuffle_i32x4::<0x88>(x0, y0);
            out[4 + m] = _mm512_shuffle_i32x4::<0xDD>(x0, y0);
            out[8 + m] = _mm512_shuffle_i32x4::<0x88>(x1, y1);
            out[12 + m] = _mm512_shuffle_i32x4::<0xDD>(x1, y1);
        }
        out
    }

    /// Hashes `blocks` consecutive 64-byte blocks in every lane whose bit is
    /// set in `active`, starting at `lanes[j]`; other lanes keep their state
    /// and their pointers are not read.
    ///
    /// # Safety
    /// The CPU must have AVX-512F, and each active `lanes[j]` must point to
    /// at least `64 * blocks` readable bytes.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn compress16(
        states: &mut LaneStates,
        lanes: &[*const u8; LANES],
        active: u16,
        blocks: usize,
    ) {
        // SAFETY: `words[r]` is 16 u32s, 64 bytes; unaligned loads.
        let load = |r: usize| unsafe { _mm512_loadu_si512(states.words[r].as_ptr().cast()) };
        let (mut a, mut b, mut c, mut d) = (load(0), load(1), load(2), load(3));
        for n in 0..blocks {
            let mut rows = [_mm512_setzero_si512(); 16];
            for (j, row) in rows.iter_mut().enumerate() {
                if active & (1 << j) != 0 {
                    // SAFETY: the caller vouches for 64 * blocks bytes.
                    *row = unsafe { _mm512_loadu_si512(lanes[j].add(64 * n).cast()) };
                }
            }
            let m = transpose(&rows);
            let (a0, b0, c0, d0) = (a, b, c, d);
            macro_rules! step {
                ($f:literal, $a:ident, $b:ident, $c:ident, $d:ident, $w:literal, $s:literal, $k:literal) => {
                    let mixed = _mm512_ternarylogic_epi32::<$f>($b, $c, $d);
                    let sum = _mm512_add_epi32(
                        _mm512_add_epi32($a, mixed),
                        _mm512_add_epi32(m[$w], _mm512_set1_epi32($k as u32 as i32)),
                    );
                    $a = _mm512_add_epi32($b, _mm512_rol_epi32::<$s>(sum));
                };
            }
            step!(0xCA, a, b, c, d, 0, 7, 0xd76aa478);
            step!(0xCA, d, a, b, c, 1, 12, 0xe8c7b756);
            step!(0xCA, c, d, a, b, 2, 17, 0x242070db);
            step!(0xCA, b, c, d, a, 3, 22, 0xc1bdceee);
            step!(0xCA, a, b, c, d, 4, 7, 0xf57c0faf);
            step!(0xCA, d, a, b, c, 5, 12, 0x4787c62a);
            step!(0xCA, c, d, a, b, 6, 17, 0xa8304613);
            step!(0xCA, b, c, d, a, 7, 22, 0xfd469501);
            step!(0xCA, a, b, c, d, 8, 7, 0x698098d8);
            step!(0xCA, d, a, b, c, 9, 12, 0x8b44f7af);
            step!(0xCA, c, d, a, b, 10, 17, 0xffff5bb1);
            step!(0xCA, b, c, d, a, 11, 22, 0x895cd7be);
            step!(0xCA, a, b, c, d, 12, 7, 0x6b901122);
            step!(0xCA, d, a, b, c, 13, 12, 0xfd987193);
            step!(0xCA, c, d, a, b, 14, 17, 0xa679438e);
            step!(0xCA, b, c, d, a, 15, 22, 0x49b40821);
            step!(0xE4, a, b, c, d, 1, 5, 0xf61e2562);
            step!(0xE4, d, a, b, c, 6, 9, 0xc040b340);
            step!(0xE4, c, d, a, b, 11, 14, 0x265e5a51);
            step!(0xE4, b, c, d, a, 0, 20, 0xe9b6c7aa);
            step!(0xE4, a, b, c, d, 5, 5, 0xd62f105d);
            step!(0xE4, d, a, b, c, 10, 9, 0x02441453);
            step!(0xE4, c, d, a, b, 15, 14, 0xd8a1e681);
            step!(0xE4, b, c, d, a, 4, 20, 0xe7d3fbc8);
            step!(0xE4, a, b, c, d, 9, 5, 0x21e1cde6);
            step!(0xE4, d, a, b, c, 14, 9, 0xc33707d6);
            step!(0xE4, c, d, a, b, 3, 14, 0xf4d50d87);
            step!(0xE4, b, c, d, a, 8, 20, 0x455a14ed);
            step!(0xE4, a, b, c, d, 13, 5, 0xa9e3e905);
            step!(0xE4, d, a, b, c, 2, 9, 0xfcefa3f8);
            step!(0xE4, c, d, a, b, 7, 14, 0x676f02d9);
            step!(0xE4, b, c, d, a, 12, 20, 0x8d2a4c8a);
            step!(0x96, a, b, c, d, 5, 4, 0xfffa3942);
            step!(0x96, d, a, b, c, 8, 11, 0x8771f681);
            step!(0x96, c, d, a, b, 11, 16, 0x6d9d6122);
            step!(0x96, b, c, d, a, 14, 23, 0xfde5380c);
            step!(0x96, a, b, c, d, 1, 4, 0xa4beea44);
            step!(0x96, d, a, b, c, 4, 11, 0x4bdecfa9);
            step!(0x96, c, d, a, b, 7, 16, 0xf6bb4b60);
            step!(0x96, b, c, d, a, 10, 23, 0xbebfbc70);
            step!(0x96, a, b, c, d, 13, 4, 0x289b7ec6);
            step!(0x96, d, a, b, c, 0, 11, 0xeaa127fa);
            step!(0x96, c, d, a, b, 3, 16, 0xd4ef3085);
            step!(0x96, b, c, d, a, 6, 23, 0x04881d05);
            step!(0x96, a, b, c, d, 9, 4, 0xd9d4d039);
            step!(0x96, d, a, b, c, 12, 11, 0xe6db99e5);
            step!(0x96, c, d, a, b, 15, 16, 0x1fa27cf8);
            step!(0x96, b, c, d, a, 2, 23, 0xc4ac5665);
            step!(0x39, a, b, c, d, 0, 6, 0xf4292244);
            step!(0x39, d, a, b, c, 7, 10, 0x432aff97);
            step!(0x39, c, d, a, b, 14, 15, 0xab9423a7);
            step!(0x39, b, c, d, a, 5, 21, 0xfc93a039);
            step!(0x39, a, b, c, d, 12, 6, 0x655b59c3);
            step!(0x39, d, a, b, c, 3, 10, 0x8f0ccc92);
            step!(0x39, c, d, a, b, 10, 15, 0xffeff47d);
            step!(0x39, b, c, d, a, 1, 21, 0x85845dd1);
            step!(0x39, a, b, c, d, 8, 6, 0x6fa87e4f);
            step!(0x39, d, a, b, c, 15, 10, 0xfe2ce6e0);
            step!(0x39, c, d, a, b, 6, 15, 0xa3014314);
            step!(0x39, b, c, d, a, 13, 21, 0x4e0811a1);
            step!(0x39, a, b, c, d, 4, 6, 0xf7537e82);
            step!(0x39, d, a, b, c, 11, 10, 0xbd3af235);
            step!(0x39, c, d, a, b, 2, 15, 0x2ad7d2bb);
            step!(0x39, b, c, d, a, 9, 21, 0xeb86d391);
            a = _mm512_mask_add_epi32(a0, active, a0, a);
            b = _mm512_mask_add_epi32(b0, active, b0, b);
            c = _mm512_mask_add_epi32(c0, active, c0, c);
            d = _mm512_mask_add_epi32(d0, active, d0, d);
        }
        for (r, v) in [a, b, c, d].into_iter().enumerate() {
            // SAFETY: as for the loads.
            unsafe { _mm512_storeu_si512(states.words[r].as_mut_ptr().cast(), v) };
        }
    }
}

/// How the hashing thread runs its lanes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Md5Kernel {
    /// 16 lanes in AVX-512 registers.
    Avx512,
    /// One lane at a time with the scalar block function.
    Scalar,
}

impl Md5Kernel {
    /// The fastest kernel this CPU runs.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Self::Avx512;
        }
        Self::Scalar
    }
}

/// A piece's share of the shared budget and of its message's.
type Permits = (OwnedSemaphorePermit, OwnedSemaphorePermit);

enum Job {
    Data(u64, Bytes, Permits),
    Finish(u64, oneshot::Sender<Md5Digest>),
    Abandon(u64),
}

/// A service that hashes many messages at once on one thread (see the module
/// doc). Cheap to share: clone the `Arc`.
pub struct Md5Lanes {
    jobs: mpsc::Sender<Job>,
    budget: Arc<Semaphore>,
    next: AtomicU64,
}

impl Md5Lanes {
    /// The process's service, started on first use with the fastest kernel.
    ///
    /// # Errors
    /// [`CodecError::Md5Lanes`] if the thread cannot be spawned.
    pub fn shared() -> Result<Arc<Md5Lanes>, CodecError> {
        static SHARED: OnceLock<Arc<Md5Lanes>> = OnceLock::new();
        if let Some(lanes) = SHARED.get() {
            return Ok(lanes.clone());
        }
        let lanes = Self::start(Md5Kernel::detect())?;
        Ok(SHARED.get_or_init(|| lanes).clone())
    }

    /// A service of its own with the given kernel (`Avx512` on a CPU
    /// without it runs the scalar kernel); its thread ends when the service
    /// and all its streams are dropped.
    ///
    /// # Errors
    /// [`CodecError::Md5Lanes`] if the thread cannot be spawned.
    pub fn start(kernel: Md5Kernel) -> Result<Arc<Md5Lanes>, CodecError> {
        // The vector kernel's safety rests on this check, not on the caller.
        let kernel = match kernel {
            Md5Kernel::Avx512 => Md5Kernel::detect(),
            Md5Kernel::Scalar => Md5Kernel::Scalar,
        };
        let (jobs, rx) = mpsc::channel();
        let budget = Arc::new(Semaphore::new(BUDGET_PERMITS));
        std::thread::Builder::new()
            .name("md5-lanes".into())
            .spawn({
                let budget = budget.clone();
                move || Hasher::new(kernel, budget).run(rx)
            })
            .map_err(|e| CodecError::Md5Lanes(format!("spawning the hashing thread: {e}")))?;
        Ok(Arc::new(Md5Lanes {
            jobs,
            budget,
            next: AtomicU64::new(0),
        }))
    }

    /// A new message to hash.
    pub fn stream(self: &Arc<Self>) -> Md5Stream {
        Md5Stream {
            lanes: self.clone(),
            id: None,
            own: Arc::new(Semaphore::new(MESSAGE_PERMITS)),
        }
    }
}

/// One message being hashed by an [`Md5Lanes`]: feed its bytes in order with
/// [`update`](Self::update), then [`finish`](Self::finish). Dropped before
/// `finish`, it is forgotten and its bytes released.
pub struct Md5Stream {
    lanes: Arc<Md5Lanes>,
    /// Given on the first update: a message never fed costs the thread
    /// nothing.
    id: Option<u64>,
    /// This message's bytes queued and not yet hashed.
    own: Arc<Semaphore>,
}

impl Md5Stream {
    /// Appends `data` to the message. Returns once it is queued, not hashed;
    /// waits only while the hashing thread holds 8 MiB of this message's
    /// bytes or 128 MiB of all messages'.
    ///
    /// # Errors
    /// [`CodecError::Md5Lanes`] if the hashing thread is gone.
    pub async fn update(&mut self, data: Bytes) -> Result<(), CodecError> {
        if data.is_empty() {
            return Ok(());
        }
        let id = *self
            .id
            .get_or_insert_with(|| self.lanes.next.fetch_add(1, Ordering::Relaxed));
        let closed = |_| CodecError::Md5Lanes("budget closed".into());
        let need = data.len().div_ceil(PERMIT_BYTES);
        let own = self
            .own
            .clone()
            .acquire_many_owned(need.min(MESSAGE_PERMITS) as u32)
            .await
            .map_err(closed)?;
        let shared = self
            .lanes
            .budget
            .clone()
            .acquire_many_owned(need.min(BUDGET_PERMITS) as u32)
            .await
            .map_err(closed)?;
        self.lanes
            .jobs
            .send(Job::Data(id, data, (shared, own)))
            .map_err(|_| CodecError::Md5Lanes("the hashing thread is gone".into()))
    }

    /// The digest of everything fed.
    ///
    /// # Errors
    /// [`CodecError::Md5Lanes`] if the hashing thread is gone.
    pub async fn finish(mut self) -> Result<Md5Digest, CodecError> {
        let Some(id) = self.id.take() else {
            return Ok(finish(INIT, &[], 0));
        };
        let (tx, rx) = oneshot::channel();
        let gone = || CodecError::Md5Lanes("the hashing thread is gone".into());
        self.lanes
            .jobs
            .send(Job::Finish(id, tx))
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }
}

impl Drop for Md5Stream {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            // The thread being gone leaves nothing to release.
            let _ = self.lanes.jobs.send(Job::Abandon(id));
        }
    }
}

/// One message on the hashing thread.
struct Message {
    state: [u32; 4],
    /// Bytes fed so far.
    len: u64,
    /// A partial block waiting for the next piece.
    carry: [u8; 64],
    carry_len: usize,
    /// Pieces not yet hashed; the first from `offset`.
    queue: VecDeque<(Bytes, Permits)>,
    offset: usize,
    /// When the oldest bytes still queued arrived.
    since: Option<Instant>,
    finish: Option<oneshot::Sender<Md5Digest>>,
}

impl Message {
    fn new() -> Self {
        Message {
            state: INIT,
            len: 0,
            carry: [0; 64],
            carry_len: 0,
            queue: VecDeque::new(),
            offset: 0,
            since: None,
            finish: None,
        }
    }

    /// Moves partial blocks into `carry` (hashing it when it fills) until the
    /// first piece has a whole block at `offset` or nothing is queued.
    fn settle(&mut self) {
        while let Some((piece, _)) = self.queue.front() {
            let left = &piece[self.offset..];
            if self.carry_len == 0 && left.len() >= 64 {
                return;
            }
            let take = left.len().min(64 - self.carry_len);
            self.carry[self.carry_len..self.carry_len + take].copy_from_slice(&left[..take]);
            self.carry_len += take;
            self.offset += take;
            if self.carry_len == 64 {
                let block = self.carry;
                compress(&mut self.state, &block);
                self.carry_len = 0;
            }
            if self.offset == piece.len() {
                self.queue.pop_front();
                self.offset = 0;
            }
        }
        self.since = None;
    }

    /// Whole blocks ready at `offset` (after [`settle`](Self::settle)).
    fn ready(&self) -> usize {
        self.queue
            .front()
            .map_or(0, |(p, _)| (p.len() - self.offset) / 64)
    }

    fn at(&self) -> *const u8 {
        self.queue
            .front()
            .map_or(std::ptr::null(), |(p, _)| p[self.offset..].as_ptr())
    }

    /// Marks `blocks` blocks at `offset` hashed.
    fn advance(&mut self, blocks: usize) {
        self.offset += blocks * 64;
        self.settle();
    }
}

/// When the thread should hash what is ready: `None` when nothing is,
/// `Some(ZERO)` now, else after the returned wait (unless more arrives).
/// Hashing at once would give most messages a lane of their own: 1 MiB
/// bodies arrive one at a time even with 16 PUTs in flight. So ready bytes
/// wait for the lanes to fill, unless someone asks for a digest, the budget
/// runs low, or the oldest has waited [`FILL_WAIT`].
fn hash_after(
    ready: usize,
    asked: bool,
    budget_low: bool,
    oldest: Option<Duration>,
) -> Option<Duration> {
    if ready == 0 {
        return None;
    }
    if ready >= LANES || asked || budget_low {
        return Some(Duration::ZERO);
    }
    Some(FILL_WAIT.saturating_sub(oldest.unwrap_or(FILL_WAIT)))
}

struct Hasher {
    kernel: Md5Kernel,
    budget: Arc<Semaphore>,
    messages: HashMap<u64, Message>,
    /// Message ids in the order they get lanes: a round takes lanes from the
    /// front and sends them to the back, so no message waits for long.
    turn: VecDeque<u64>,
}

impl Hasher {
    fn new(kernel: Md5Kernel, budget: Arc<Semaphore>) -> Self {
        Hasher {
            kernel,
            budget,
            messages: HashMap::new(),
            turn: VecDeque::new(),
        }
    }

    fn run(mut self, jobs: mpsc::Receiver<Job>) {
        loop {
            let now = Instant::now();
            let ready = || self.messages.values().filter(|m| m.ready() > 0);
            let wait = hash_after(
                ready().count(),
                ready().any(|m| m.finish.is_some()),
                self.budget.available_permits() < BUDGET_PERMITS / 4,
                ready()
                    .filter_map(|m| m.since)
                    .min()
                    .map(|t| now.saturating_duration_since(t)),
            );
            match wait {
                Some(Duration::ZERO) => self.round(),
                Some(wait) => match jobs.recv_timeout(wait) {
                    Ok(job) => self.take(job),
                    Err(mpsc::RecvTimeoutError::Timeout) => self.round(),
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                },
                None => match jobs.recv() {
                    Ok(job) => self.take(job),
                    Err(_) => return,
                },
            }
            while let Ok(job) = jobs.try_recv() {
                self.take(job);
            }
        }
    }

    fn take(&mut self, job: Job) {
        match job {
            Job::Data(id, data, permit) => {
                let m = self.messages.entry(id).or_insert_with(|| {
                    self.turn.push_back(id);
                    Message::new()
                });
                m.len += data.len() as u64;
                m.queue.push_back((data, permit));
                m.settle();
                if m.ready() > 0 {
                    m.since.get_or_insert_with(Instant::now);
                }
            }
            Job::Finish(id, reply) => {
                if let Some(m) = self.messages.get_mut(&id) {
                    m.finish = Some(reply);
                }
                self.complete(id);
            }
            Job::Abandon(id) => {
                self.messages.remove(&id);
                self.turn.retain(|t| *t != id);
            }
        }
    }

    /// Answers `id`'s finish once everything it was fed is hashed.
    fn complete(&mut self, id: u64) {
        let done = self
            .messages
            .get(&id)
            .is_some_and(|m| m.finish.is_some() && m.queue.is_empty());
        if !done {
            return;
        }
        if let Some(mut m) = self.messages.remove(&id) {
            self.turn.retain(|t| *t != id);
            let digest = finish(m.state, &m.carry[..m.carry_len], m.len);
            if let Some(reply) = m.finish.take() {
                // A caller that stopped waiting no longer needs it.
                let _ = reply.send(digest);
            }
        }
    }

    /// Hashes up to [`ROUND_BLOCKS`] blocks of up to 16 messages.
    fn round(&mut self) {
        let mut chosen = Vec::with_capacity(LANES);
        let mut looked = 0;
        while chosen.len() < LANES && looked < self.turn.len() {
            looked += 1;
            let Some(id) = self.turn.pop_front() else {
                break;
            };
            self.turn.push_back(id);
            if self.messages.get(&id).is_some_and(|m| m.ready() > 0) {
                chosen.push(id);
            }
        }
        if chosen.is_empty() {
            return;
        }
        let blocks = chosen
            .iter()
            .filter_map(|id| self.messages.get(id).map(Message::ready))
            .min()
            .unwrap_or(0)
            .min(ROUND_BLOCKS);
        match self.kernel {
            #[cfg(target_arch = "x86_64")]
            Md5Kernel::Avx512 => {
                let mut states = LaneStates::default();
                let mut lanes = [std::ptr::null(); LANES];
                let mut active = 0u16;
                for (j, id) in chosen.iter().enumerate() {
                    if let Some(m) = self.messages.get(id) {
                        for r in 0..4 {
                            states.words[r][j] = m.state[r];
                        }
                        lanes[j] = m.at();
                        active |= 1 << j;
                    }
                }
                // SAFETY: `start` keeps `Avx512` only when the CPU has it, and
                // every active lane's first piece has `blocks` whole blocks
                // from its pointer (`ready`), kept alive by the queue until
                // `advance` below.
                unsafe { avx512::compress16(&mut states, &lanes, active, blocks) };
                for (j, id) in chosen.iter().enumerate() {
                    if let Some(m) = self.messages.get_mut(id) {
                        for r in 0..4 {
                            m.state[r] = states.words[r][j];
                        }
                    }
                }
            }
            _ => {
                for id in &chosen {
                    if let Some(m) = self.messages.get_mut(id)
                        && let Some((piece, _)) = m.queue.front()
                    {
                        let start = m.offset;
                        for block in piece[start..start + blocks * 64].chunks_exact(64) {
                            let mut b = [0u8; 64];
                            b.copy_from_slice(block);
                            compress(&mut m.state, &b);
                        }
                    }
                }
            }
        }
        for id in chosen {
            if let Some(m) = self.messages.get_mut(&id) {
                m.advance(blocks);
            }
            self.complete(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::{Digest, Md5};
    use rand::{Rng, SeedableRng, rngs::StdRng};

    fn reference(data: &[u8]) -> Md5Digest {
        Md5::digest(data).into()
    }

    #[test]
    fn scalar_blocks_and_padding_match_rfc_1321() {
        // RFC 1321 appendix A.5.
        let hex = |d: Md5Digest| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let one = |data: &[u8]| {
            let mut state = INIT;
            let whole = data.len() / 64 * 64;
            for block in data[..whole].chunks_exact(64) {
                let mut b = [0u8; 64];
                b.copy_from_slice(block);
                compress(&mut state, &b);
            }
            finish(state, &data[whole..], data.len() as u64)
        };
        assert_eq!(hex(one(b"")), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(hex(one(b"abc")), "900150983cd24fb0d6963f7d28e17f72");
        let digits =
            b"12345678901234567890123456789012345678901234567890123456789012345678901234567890";
        assert_eq!(hex(one(digits)), "57edf4a22be3c955ac49da2e2107b67a");
        let mut rng = StdRng::seed_from_u64(7);
        for len in (0..300).chain([4095, 4096, 4097, 1 << 20]) {
            let data: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
            assert_eq!(one(&data), reference(&data), "length {len}");
        }
    }

    /// Many messages at once, each fed in pieces of random sizes (zero,
    /// partial blocks, several blocks), finished in random order.
    async fn many_streams_match(kernel: Md5Kernel) {
        let lanes = Md5Lanes::start(kernel).expect("hashing thread");
        let mut rng = StdRng::seed_from_u64(17);
        let mut tasks = Vec::new();
        for n in 0..40usize {
            let len = match n % 5 {
                0 => rng.gen_range(0..200),
                1 => rng.gen_range(0..5000),
                2 => 64 * rng.gen_range(1..300),
                3 => rng.gen_range(100_000..3_000_000),
                _ => 4 << 20,
            };
            let data: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
            let seed = rng.r#gen::<u64>();
            let mut stream = lanes.stream();
            tasks.push(tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed);
                let body = Bytes::from(data);
                let mut at = 0;
                while at < body.len() {
                    let piece = match rng.gen_range(0..4) {
                        0 => rng.gen_range(0..64),
                        1 => rng.gen_range(0..1000),
                        _ => rng.gen_range(0..(1 << 20)),
                    }
                    .min(body.len() - at);
                    stream
                        .update(body.slice(at..at + piece))
                        .await
                        .expect("update");
                    at += piece;
                    if rng.gen_range(0..8) == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                (stream.finish().await.expect("finish"), reference(&body))
            }));
        }
        // An abandoned message leaves the others alone.
        let mut dropped = lanes.stream();
        dropped
            .update(Bytes::from(vec![1u8; 100_000]))
            .await
            .expect("update");
        drop(dropped);
        for (n, task) in tasks.into_iter().enumerate() {
            let (got, want) = task.await.expect("task");
            assert_eq!(got, want, "message {n}");
        }
        assert_eq!(
            lanes.stream().finish().await.expect("empty"),
            reference(b"")
        );
    }

    #[test]
    fn ready_bytes_wait_for_full_lanes_a_digest_or_the_deadline() {
        let ms = Duration::from_millis;
        assert_eq!(hash_after(0, true, true, Some(ms(50))), None);
        assert_eq!(hash_after(3, false, false, Some(ms(4))), Some(ms(6)));
        assert_eq!(
            hash_after(3, false, false, Some(ms(11))),
            Some(Duration::ZERO)
        );
        assert_eq!(
            hash_after(LANES, false, false, Some(ms(0))),
            Some(Duration::ZERO)
        );
        assert_eq!(
            hash_after(1, true, false, Some(ms(0))),
            Some(Duration::ZERO)
        );
        assert_eq!(
            hash_after(1, false, true, Some(ms(0))),
            Some(Duration::ZERO)
        );
        assert_eq!(hash_after(1, false, false, None), Some(Duration::ZERO));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_streams_match_md5_with_the_scalar_kernel() {
        many_streams_match(Md5Kernel::Scalar).await;
    }

    /// CI's machines have AVX-512; elsewhere this runs the scalar kernel.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_streams_match_md5_with_the_detected_kernel() {
        many_streams_match(Md5Kernel::detect()).await;
    }
}
