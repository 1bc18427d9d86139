//! Reads of part of a chunk: only the data fragments that hold the bytes
//! asked for, when they answer. The code is systematic, so data fragment
//! `i` of an erasure-coded chunk is its bytes `i*F..(i+1)*F` (`F` the
//! fragment length, the last one zero-padded); a replicated chunk's every
//! fragment is the whole chunk. A fragment that fails falls back to the
//! full read path (K fragments, decoding from parity). Every fragment is
//! checked against its BLAKE3 as on the full path.

use std::ops::RangeInclusive;

use futures::future::join_all;
use tessera_proto::ChunkRecord;
use tessera_types::{NodeId, Policy};

use crate::{Client, SdkError};

impl Client {
    /// Data fragments `wanted` of `record`, in order (for a replicated
    /// chunk, fragment 0 is the whole chunk and is the only one there is).
    /// Each is `record.fragment_len` bytes (the chunk's length for a
    /// replicated chunk). Errors as `read_chunk`'s.
    pub async fn read_data_fragments(
        &self,
        record: &ChunkRecord,
        wanted: RangeInclusive<usize>,
    ) -> Result<Vec<Vec<u8>>, SdkError> {
        let data = match record.policy {
            Policy::Erasure { data, .. } => data as usize,
            Policy::Replicated { .. } => {
                return Ok(vec![self.read_chunk(record).await?]);
            }
        };
        if *wanted.end() >= data || wanted.start() > wanted.end() {
            return Err(SdkError::Invalid(format!(
                "data fragments {wanted:?} of a chunk with {data}"
            )));
        }
        // Asking for all of them is the full read anyway.
        if wanted.end() - wanted.start() + 1 < data {
            let ids: Vec<NodeId> = record.fragments.iter().map(|f| f.node).collect();
            let nodes = self.node_addrs(&ids).await?;
            let fetched = join_all(wanted.clone().map(|i| self.fetch(record, i, &nodes))).await;
            let mut out = Vec::with_capacity(fetched.len());
            let mut failed = false;
            for (i, result) in fetched {
                match result {
                    Ok(bytes) => out.push(bytes),
                    Err(e) => {
                        self.fetch_failed(record, i, e);
                        failed = true;
                    }
                }
            }
            if !failed {
                return Ok(out);
            }
        }
        let chunk = self.read_chunk(record).await?;
        let flen = record.fragment_len as usize;
        Ok(wanted
            .map(|i| {
                let start = (i * flen).min(chunk.len());
                let end = ((i + 1) * flen).min(chunk.len());
                let mut f = chunk[start..end].to_vec();
                f.resize(flen, 0);
                f
            })
            .collect())
    }
}
