use tokio::io::{AsyncRead, AsyncReadExt};

use crate::CodecError;

/// Cuts a byte stream into chunks of a fixed size (the last one shorter),
/// holding at most one chunk in memory.
pub struct ChunkReader<R> {
    inner: R,
    chunk_size: usize,
    done: bool,
    /// Whether a chunk has been cut: the first chunk's buffer starts at
    /// [`FIRST_BUFFER`] bytes and grows to the chunk size only if the stream
    /// is that long, so a 4 KiB object does not allocate (and the kernel
    /// does not zero) a 4 MiB buffer. Later chunks are full size at once.
    started: bool,
}

/// Bytes the first chunk's buffer starts with. Growing past it costs one
/// copy of at most this many bytes per stream.
const FIRST_BUFFER: usize = 64 * 1024;

impl<R: AsyncRead + Unpin> ChunkReader<R> {
    pub fn new(inner: R, chunk_size: usize) -> Self {
        assert!(chunk_size > 0, "chunk size must be positive");
        ChunkReader {
            inner,
            chunk_size,
            done: false,
            started: false,
        }
    }

    /// The next chunk, or `None` at the end of the stream. Only the last chunk
    /// is shorter than the chunk size; an empty stream yields no chunk.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, CodecError> {
        if self.done {
            return Ok(None);
        }
        let first = if self.started {
            self.chunk_size
        } else {
            self.chunk_size.min(FIRST_BUFFER)
        };
        self.started = true;
        let mut buf = Vec::with_capacity(first);
        while buf.len() < self.chunk_size {
            if buf.len() == buf.capacity() {
                // Straight to the chunk size: one copy, not a doubling series.
                buf.reserve_exact(self.chunk_size - buf.len());
            }
            let n = (&mut self.inner)
                .take((self.chunk_size - buf.len()) as u64)
                .read_buf(&mut buf)
                .await?;
            if n == 0 {
                self.done = true;
                break;
            }
        }
        Ok(if buf.is_empty() { None } else { Some(buf) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cuts_at_chunk_boundaries() {
        for (len, size, want) in [
            (0, 4, vec![]),
            (1, 4, vec![1]),
            (8, 4, vec![4, 4]),
            (9, 4, vec![4, 4, 1]),
        ] {
            let data: Vec<u8> = (0..len as u8).collect();
            let mut r = ChunkReader::new(&data[..], size);
            let mut got = vec![];
            let mut joined = vec![];
            while let Some(c) = r.next_chunk().await.unwrap() {
                got.push(c.len());
                joined.extend(c);
            }
            assert_eq!(got, want);
            assert_eq!(joined, data);
        }
    }

    #[tokio::test]
    async fn a_short_stream_gets_a_short_buffer_and_a_long_one_full_chunks() {
        let chunk = 4 * FIRST_BUFFER;
        let short = vec![7u8; 4096];
        let mut r = ChunkReader::new(&short[..], chunk);
        let c = r.next_chunk().await.unwrap().unwrap();
        assert_eq!(c, short);
        assert!(c.capacity() <= FIRST_BUFFER, "{}", c.capacity());

        let long: Vec<u8> = (0..2 * chunk + 5).map(|i| (i % 251) as u8).collect();
        let mut r = ChunkReader::new(&long[..], chunk);
        let mut joined = vec![];
        let mut lens = vec![];
        while let Some(c) = r.next_chunk().await.unwrap() {
            lens.push(c.len());
            if c.len() == chunk {
                assert_eq!(
                    c.capacity(),
                    chunk,
                    "grown once, straight to the chunk size"
                );
            }
            joined.extend(c);
        }
        assert_eq!(lens, vec![chunk, chunk, 5]);
        assert_eq!(joined, long);
    }
}
