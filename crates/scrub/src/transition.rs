//! Lifecycle transitions (issue 15): versions a lifecycle rule moved to a
//! storage class the operator mapped to another policy are re-encoded
//! here, after repair work and under the same byte pacer. Each version's
//! chunks are read (verified, decoded from parity when a fragment is
//! missing), written again in the class's policy under a write
//! reservation, and swapped in by meta's compare-and-swap `Transition`:
//! a version that changed meanwhile keeps its chunks, and the new ones
//! are garbage. A repairer killed midway leaves the queue entry for the
//! next one; nothing of the version is lost, since its old chunks stay
//! until meta has recorded the new ones.

use tessera_proto::{ObjectData, ObjectVersion};
use tracing::{debug, info};

use crate::{Repairer, ScrubError};

/// Versions taken from the queue per round.
const TRANSITION_BATCH: usize = 16;

impl Repairer {
    /// Re-encodes up to a batch of queued transitions; how many versions
    /// were swapped.
    pub async fn transition_round(&self) -> Result<usize, ScrubError> {
        let work = self.client.transition_work(TRANSITION_BATCH).await?;
        let mut done = 0;
        for item in work {
            let version = self
                .client
                .version(&item.bucket, &item.key, Some(&item.version))
                .await;
            let info = match version {
                Ok(ObjectVersion::Object(o)) if o.mtime_ms == item.mtime_ms => o,
                // Gone, a marker, or rewritten: meta drops the entry.
                _ => {
                    self.client
                        .commit_transition(&item, Vec::new(), Vec::new(), None)
                        .await?;
                    continue;
                }
            };
            let old: Vec<_> = match &info.data {
                ObjectData::Chunks(refs) => refs.iter().map(|r| r.id).collect(),
                ObjectData::Inline(_) => Vec::new(),
            };
            let staged = self.client.staged_write_in(item.policy).await?;
            let mut chunks = Vec::with_capacity(old.len());
            for record in self.client.chunk_records(&info).await? {
                let data = self.client.read_chunk(&record).await?;
                self.pacer.take(data.len() as u64).await;
                let written = staged.write_chunk(data).await?;
                self.pacer
                    .take(written.fragment_len * written.fragments.len() as u64)
                    .await;
                chunks.push(written);
            }
            match self
                .client
                .commit_transition(&item, old, chunks, Some(&staged))
                .await?
            {
                Some(_) => {
                    info!(bucket = %item.bucket, key = %item.key, version = %item.version,
                        class = %item.storage_class, policy = %item.policy,
                        "lifecycle transition re-encoded a version");
                    done += 1;
                }
                None => {
                    debug!(bucket = %item.bucket, key = %item.key, version = %item.version,
                        "the version changed during its transition; left as it is")
                }
            }
        }
        Ok(done)
    }
}
