use tokio::io::{AsyncRead, AsyncReadExt};

use crate::CodecError;

/// Cuts a byte stream into chunks of a fixed size (the last one shorter),
/// holding at most one chunk in memory.
pub struct ChunkReader<R> {
    inner: R,
    chunk_size: usize,
    done: bool,
}

impl<R: AsyncRead + Unpin> ChunkReader<R> {
    pub fn new(inner: R, chunk_size: usize) -> Self {
        assert!(chunk_size > 0, "chunk size must be positive");
        ChunkReader {
            inner,
            chunk_size,
            done: false,
        }
    }

    /// The next chunk, or `None` at the end of the stream. Only the last chunk
    /// is shorter than the chunk size; an empty stream yields no chunk.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, CodecError> {
        if self.done {
            return Ok(None);
        }
        let mut buf = Vec::with_capacity(self.chunk_size);
        while buf.len() < self.chunk_size {
            let n = (&mut self.inner)
                .take((self.chunk_size - buf.len()) as u64)
                .read_to_end(&mut buf)
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
}
