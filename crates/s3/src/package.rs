//! The stored form of S3 server-side encryption: how an object key is
//! wrapped, and how a stream of content (an object written whole, or one
//! multipart part) becomes authenticated, seekable packages. Pure bytes in
//! and out: no I/O, no S3 requests, no meta. What the layout means to meta
//! (sizes) is `tessera_proto::sealed_len`; which key wraps what, and when,
//! is `sse.rs`'s.
//!
//! A stream is a 32-byte header (`TSSE`, version 1, three zero bytes, a
//! random 24-byte salt), then packages: the content cut into pieces of
//! [`PACKAGE`] bytes (the last shorter; an empty stream has one empty
//! package), each AES-256-GCM sealed and followed by its 16-byte tag. The
//! stream key is HMAC-SHA256(object key, "tessera-sse-stream-v1" || salt),
//! so every stream (each part, each re-sent part) has its own key under one
//! object key. Package `i`'s nonce is `i` (8 bytes, big-endian) then 1 for
//! the final package or 0 (4 bytes): a package moved to another place, a
//! stream cut short at a package boundary, or a package of another stream
//! fails its tag. The header is the packages' associated data. Package `i`
//! of the content starts at stored byte `HEADER + i * (PACKAGE + TAG)`, so
//! a range reads only the packages it touches (the idea of MinIO's DARE
//! format; the bytes are Tessera's own).

use std::ops::Range;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hmac;
use tessera_proto::{SSE_HEADER, SSE_PACKAGE, SSE_TAG};

/// Plaintext bytes in a package.
pub(crate) const PACKAGE: usize = SSE_PACKAGE as usize;
/// Bytes a package's tag adds.
pub(crate) const TAG: usize = SSE_TAG as usize;
/// Bytes of a stream's header.
pub(crate) const HEADER: usize = SSE_HEADER as usize;

const MAGIC: &[u8; 4] = b"TSSE";
const VERSION: u8 = 1;
const SALT: usize = 24;
/// Bytes of a wrapped object key: salt, sealed key, tag.
pub(crate) const WRAPPED_LEN: usize = WRAP_SALT + 32 + TAG;
const WRAP_SALT: usize = 16;

/// A 256-bit AES key.
pub(crate) type Key = [u8; 32];

/// Why stored bytes are refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PackageError {
    #[error("not an encrypted stream header (magic or version)")]
    BadHeader,
    #[error("package {0} fails authentication (altered, moved or cut short)")]
    Forged(u64),
    #[error("the stream ends {0} bytes early")]
    Truncated(u64),
    #[error("the stream has bytes past its last package")]
    TooLong,
    #[error("the wrapped key does not open with this key")]
    WrongKey,
}

/// HMAC-SHA256 of `parts` under `key`: how keys are derived.
pub(crate) fn derive(key: &[u8], parts: &[&[u8]]) -> Key {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&k);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

fn aead(key: &Key) -> LessSafeKey {
    // A 32-byte key is always a valid AES-256 key.
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).unwrap_or_else(|_| unreachable!()))
}

/// Seals `object_key` under `wrapping` (a master key or a customer's key):
/// [`WRAPPED_LEN`] bytes. `context` (the scheme) is authenticated with it,
/// so a key wrapped for one scheme does not open as another.
pub(crate) fn wrap(wrapping: &Key, context: &[u8], object_key: &Key) -> Vec<u8> {
    let salt: [u8; WRAP_SALT] = rand::random();
    // A fresh key per wrap (from the salt), so the zero nonce is used once.
    let k = aead(&derive(wrapping, &[b"tessera-sse-wrap-v1", &salt]));
    let mut sealed = object_key.to_vec();
    let tag = k
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key([0; 12]),
            Aad::from(context),
            &mut sealed,
        )
        .unwrap_or_else(|_| unreachable!("32 bytes are within AES-GCM's limits"));
    let mut out = Vec::with_capacity(WRAPPED_LEN);
    out.extend_from_slice(&salt);
    out.extend_from_slice(&sealed);
    out.extend_from_slice(tag.as_ref());
    out
}

/// Opens a key [`wrap`] sealed. Errors: `WrongKey` for another wrapping
/// key or context, or altered bytes.
pub(crate) fn unwrap(wrapping: &Key, context: &[u8], wrapped: &[u8]) -> Result<Key, PackageError> {
    if wrapped.len() != WRAPPED_LEN {
        return Err(PackageError::WrongKey);
    }
    let (salt, sealed) = wrapped.split_at(WRAP_SALT);
    let k = aead(&derive(wrapping, &[b"tessera-sse-wrap-v1", salt]));
    let mut buf = sealed.to_vec();
    let plain = k
        .open_in_place(
            Nonce::assume_unique_for_key([0; 12]),
            Aad::from(context),
            &mut buf,
        )
        .map_err(|_| PackageError::WrongKey)?;
    let mut key = [0u8; 32];
    key.copy_from_slice(plain);
    Ok(key)
}

/// Packages in a stream of `plain` content bytes.
pub(crate) fn packages(plain: u64) -> u64 {
    plain.div_ceil(SSE_PACKAGE).max(1)
}

/// Content bytes in package `i` of a stream of `plain` bytes.
fn package_len(plain: u64, i: u64) -> usize {
    plain.saturating_sub(i * SSE_PACKAGE).min(SSE_PACKAGE) as usize
}

/// Stored bytes, from the stream's start, that hold packages `first..end`
/// of a stream of `plain` content bytes (`end` at most [`packages`]).
pub(crate) fn package_span(plain: u64, first: u64, end: u64) -> Range<u64> {
    let unit = SSE_PACKAGE + SSE_TAG;
    let body_end = tessera_proto::sealed_len(plain);
    let at = |i: u64| (SSE_HEADER + i * unit).min(body_end);
    at(first)..at(end)
}

/// One stream's key and header: seals and opens its packages.
pub(crate) struct StreamKey {
    aead: LessSafeKey,
    header: [u8; HEADER],
}

impl StreamKey {
    /// A new stream under `object_key`, with a random salt.
    pub(crate) fn fresh(object_key: &Key) -> Self {
        let mut header = [0u8; HEADER];
        header[..4].copy_from_slice(MAGIC);
        header[4] = VERSION;
        let salt: [u8; SALT] = rand::random();
        header[HEADER - SALT..].copy_from_slice(&salt);
        Self::with_header(object_key, header)
    }

    /// The stream whose stored header is `bytes` (its first [`HEADER`]).
    /// Errors: `BadHeader`.
    pub(crate) fn of_header(object_key: &Key, bytes: &[u8]) -> Result<Self, PackageError> {
        let header: [u8; HEADER] = bytes
            .get(..HEADER)
            .and_then(|h| h.try_into().ok())
            .ok_or(PackageError::BadHeader)?;
        if &header[..4] != MAGIC || header[4] != VERSION || header[5..8] != [0, 0, 0] {
            return Err(PackageError::BadHeader);
        }
        Ok(Self::with_header(object_key, header))
    }

    fn with_header(object_key: &Key, header: [u8; HEADER]) -> Self {
        let key = derive(
            object_key,
            &[b"tessera-sse-stream-v1", &header[HEADER - SALT..]],
        );
        StreamKey {
            aead: aead(&key),
            header,
        }
    }

    /// The stored header.
    pub(crate) fn header(&self) -> &[u8; HEADER] {
        &self.header
    }

    fn nonce(index: u64, last: bool) -> Nonce {
        let mut n = [0u8; 12];
        n[..8].copy_from_slice(&index.to_be_bytes());
        n[11] = u8::from(last);
        Nonce::assume_unique_for_key(n)
    }

    /// Seals `package` (at most [`PACKAGE`] bytes) in place, appending its
    /// tag.
    pub(crate) fn seal(&self, index: u64, last: bool, package: &mut Vec<u8>) {
        debug_assert!(package.len() <= PACKAGE);
        let tag = self
            .aead
            .seal_in_place_separate_tag(Self::nonce(index, last), Aad::from(&self.header), package)
            .unwrap_or_else(|_| unreachable!("a package is within AES-GCM's limits"));
        package.extend_from_slice(tag.as_ref());
    }

    /// Opens sealed package `index` (content then tag) in place; the
    /// content is the returned slice. Errors: `Forged`.
    pub(crate) fn open<'a>(
        &self,
        index: u64,
        last: bool,
        sealed: &'a mut [u8],
    ) -> Result<&'a mut [u8], PackageError> {
        self.aead
            .open_in_place(Self::nonce(index, last), Aad::from(&self.header), sealed)
            .map_err(|_| PackageError::Forged(index))
    }
}

/// Turns content, pushed in pieces of any size, into sealed packages (the
/// stream's header first). A package is sealed only once the next byte
/// (or the end) is seen, so the final one carries the final flag.
pub(crate) struct Sealer {
    key: StreamKey,
    next: u64,
    pending: Vec<u8>,
    header_out: bool,
}

impl Sealer {
    pub(crate) fn new(key: StreamKey) -> Self {
        Sealer {
            key,
            next: 0,
            pending: Vec::with_capacity(PACKAGE + TAG),
            header_out: false,
        }
    }

    /// Takes `content`; returns the stored bytes ready so far (the header,
    /// and every package known not to be the last).
    pub(crate) fn push(&mut self, mut content: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.header_out {
            out.extend_from_slice(self.key.header());
            self.header_out = true;
        }
        while !content.is_empty() {
            if self.pending.len() == PACKAGE {
                // More content follows: this package is not the last.
                let mut p = std::mem::replace(&mut self.pending, Vec::with_capacity(PACKAGE + TAG));
                self.key.seal(self.next, false, &mut p);
                self.next += 1;
                out.extend_from_slice(&p);
            }
            let take = (PACKAGE - self.pending.len()).min(content.len());
            self.pending.extend_from_slice(&content[..take]);
            content = &content[take..];
        }
        out
    }

    /// Ends the stream: the header if nothing was pushed, and the final
    /// package.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        let mut out = self.push(&[]);
        let mut p = std::mem::take(&mut self.pending);
        self.key.seal(self.next, true, &mut p);
        out.extend_from_slice(&p);
        out
    }
}

/// Opens packages `first..` of a stream of `plain` content bytes from its
/// stored bytes (from package `first`'s start), pushed in pieces of any
/// size.
pub(crate) struct Opener {
    key: StreamKey,
    plain: u64,
    next: u64,
    end: u64,
    buf: Vec<u8>,
}

impl Opener {
    /// Opens packages `first..end` (`end` at most [`packages`]`(plain)`).
    pub(crate) fn new(key: StreamKey, plain: u64, first: u64, end: u64) -> Self {
        Opener {
            key,
            plain,
            next: first,
            end,
            buf: Vec::with_capacity(PACKAGE + TAG),
        }
    }

    /// Takes stored bytes; calls `out` with each package's content (and its
    /// index) as soon as it is whole and authentic. Errors: `Forged`,
    /// `TooLong`.
    pub(crate) fn push(
        &mut self,
        mut stored: &[u8],
        out: &mut impl FnMut(u64, &[u8]),
    ) -> Result<(), PackageError> {
        while !stored.is_empty() {
            if self.next >= self.end {
                return Err(PackageError::TooLong);
            }
            let want = package_len(self.plain, self.next) + TAG;
            let take = (want - self.buf.len()).min(stored.len());
            self.buf.extend_from_slice(&stored[..take]);
            stored = &stored[take..];
            if self.buf.len() == want {
                let last = self.next + 1 == packages(self.plain);
                let content = self.key.open(self.next, last, &mut self.buf)?;
                out(self.next, content);
                self.buf.clear();
                self.next += 1;
            }
        }
        Ok(())
    }

    /// Refuses a stream that ended before package `end`. Errors:
    /// `Truncated`.
    pub(crate) fn finish(self) -> Result<(), PackageError> {
        if self.next < self.end {
            let missing = package_span(self.plain, self.next, self.end);
            return Err(PackageError::Truncated(
                (missing.end - missing.start).saturating_sub(self.buf.len() as u64),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn seal_all(key: &Key, data: &[u8], piece: usize) -> Vec<u8> {
        let mut s = Sealer::new(StreamKey::fresh(key));
        let mut out = Vec::new();
        for p in data.chunks(piece.max(1)) {
            out.extend(s.push(p));
        }
        out.extend(s.finish());
        out
    }

    fn open_all(
        key: &Key,
        plain: u64,
        stored: &[u8],
        piece: usize,
    ) -> Result<Vec<u8>, PackageError> {
        let k = StreamKey::of_header(key, stored)?;
        let mut o = Opener::new(k, plain, 0, packages(plain));
        let mut out = Vec::new();
        for p in stored[HEADER..].chunks(piece.max(1)) {
            o.push(p, &mut |_, c| out.extend_from_slice(c))?;
        }
        o.finish()?;
        Ok(out)
    }

    #[test]
    fn round_trip_at_every_size_around_packages() {
        let key: Key = rand::random();
        for n in [
            0,
            1,
            13,
            PACKAGE - 1,
            PACKAGE,
            PACKAGE + 1,
            3 * PACKAGE,
            3 * PACKAGE + 5,
        ] {
            let data = content(n);
            for piece in [1000, PACKAGE, 7 * PACKAGE] {
                let stored = seal_all(&key, &data, piece);
                assert_eq!(
                    stored.len() as u64,
                    tessera_proto::sealed_len(n as u64),
                    "size {n}"
                );
                assert_eq!(
                    open_all(&key, n as u64, &stored, 4097).unwrap(),
                    data,
                    "size {n}"
                );
            }
        }
    }

    #[test]
    fn a_range_opens_from_its_first_package() {
        let key: Key = rand::random();
        let n = 5 * PACKAGE + 100;
        let data = content(n);
        let stored = seal_all(&key, &data, 9000);
        let plain = n as u64;
        for (first, end) in [(0, 1), (2, 4), (5, 6), (1, 6)] {
            let span = package_span(plain, first, end);
            let k = StreamKey::of_header(&key, &stored).unwrap();
            let mut o = Opener::new(k, plain, first, end);
            let mut got = Vec::new();
            o.push(
                &stored[span.start as usize..span.end as usize],
                &mut |_, c| got.extend_from_slice(c),
            )
            .unwrap();
            o.finish().unwrap();
            let from = first as usize * PACKAGE;
            let to = (end as usize * PACKAGE).min(n);
            assert_eq!(got, data[from..to]);
        }
    }

    #[test]
    fn truncation_is_refused() {
        let key: Key = rand::random();
        let n = 3 * PACKAGE;
        let stored = seal_all(&key, &content(n), PACKAGE);
        // Cut inside a package.
        let cut = &stored[..stored.len() - 10];
        assert!(matches!(
            open_all(&key, n as u64, cut, 5000),
            Err(PackageError::Truncated(_))
        ));
        // Cut at a package boundary, and claimed shorter: the new last
        // package was not sealed as the last.
        let cut = &stored[..package_span(n as u64, 0, 2).end as usize];
        assert_eq!(
            open_all(&key, 2 * PACKAGE as u64, cut, 5000),
            Err(PackageError::Forged(1))
        );
        // Bytes past the end.
        let mut long = stored.clone();
        long.push(0);
        assert_eq!(
            open_all(&key, n as u64, &long, 5000),
            Err(PackageError::TooLong)
        );
    }

    #[test]
    fn reordered_packages_are_refused() {
        let key: Key = rand::random();
        let n = 3 * PACKAGE;
        let mut stored = seal_all(&key, &content(n), PACKAGE);
        let a = package_span(n as u64, 0, 1);
        let b = package_span(n as u64, 1, 2);
        let first = stored[a.start as usize..a.end as usize].to_vec();
        let second = stored[b.start as usize..b.end as usize].to_vec();
        stored[a.start as usize..a.end as usize].copy_from_slice(&second);
        stored[b.start as usize..b.end as usize].copy_from_slice(&first);
        assert_eq!(
            open_all(&key, n as u64, &stored, 5000),
            Err(PackageError::Forged(0))
        );
        // A package of another stream of the same object, in its place.
        let other = seal_all(&key, &content(n), PACKAGE);
        let mut mixed = seal_all(&key, &content(n), PACKAGE);
        mixed[a.start as usize..a.end as usize]
            .copy_from_slice(&other[a.start as usize..a.end as usize]);
        assert_eq!(
            open_all(&key, n as u64, &mixed, 5000),
            Err(PackageError::Forged(0))
        );
    }

    #[test]
    fn a_flipped_bit_anywhere_is_refused() {
        let key: Key = rand::random();
        let n = 2 * PACKAGE + 3;
        let stored = seal_all(&key, &content(n), PACKAGE);
        for at in [
            0,
            4,
            9,
            HEADER - 1,
            HEADER,
            HEADER + PACKAGE,
            stored.len() - 1,
        ] {
            let mut bad = stored.clone();
            bad[at] ^= 0x10;
            assert!(open_all(&key, n as u64, &bad, 5000).is_err(), "bit at {at}");
        }
    }

    #[test]
    fn a_wrong_key_is_refused() {
        let key: Key = rand::random();
        let stored = seal_all(&key, &content(100), 50);
        let other: Key = rand::random();
        assert_eq!(
            open_all(&other, 100, &stored, 50),
            Err(PackageError::Forged(0))
        );
    }

    #[test]
    fn wrapped_keys_open_only_with_their_key_and_context() {
        let master: Key = rand::random();
        let object: Key = rand::random();
        let w = wrap(&master, b"s3", &object);
        assert_eq!(w.len(), WRAPPED_LEN);
        assert_eq!(unwrap(&master, b"s3", &w).unwrap(), object);
        assert_eq!(
            unwrap(&rand::random(), b"s3", &w),
            Err(PackageError::WrongKey)
        );
        assert_eq!(unwrap(&master, b"c", &w), Err(PackageError::WrongKey));
        let mut bad = w.clone();
        bad[20] ^= 1;
        assert_eq!(unwrap(&master, b"s3", &bad), Err(PackageError::WrongKey));
        assert_ne!(
            wrap(&master, b"s3", &object),
            w,
            "each wrap has its own salt"
        );
    }
}
