//! Meta's own upkeep, a few times per grace period: abandoned multipart
//! uploads are aborted, and garbage chunks older than the grace period have
//! their records purged (the nodes then find their fragments unreferenced
//! and delete them).

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::{Meta, now_ms};
use crate::MetaError;
use crate::state::Command;
use crate::state::prelude::*;

/// Most garbage chunks purged per command.
const PURGE_BATCH: usize = 1000;

pub(super) async fn run(meta: Arc<Meta>) {
    let every =
        (meta.config.gc_grace / 4).clamp(Duration::from_millis(500), Duration::from_secs(60));
    loop {
        tokio::time::sleep(every).await;
        match meta.collect_garbage().await {
            Ok(0) => {}
            Ok(n) => {
                info!(chunks = n, "garbage chunk records purged");
                meta.status.invalidate();
            }
            Err(e) => warn!(error = %e, "garbage collection failed"),
        }
    }
}

impl Meta {
    /// Aborts expired uploads and purges expired garbage; returns the number
    /// of chunk records purged.
    pub async fn collect_garbage(&self) -> Result<usize, MetaError> {
        let expired = now_ms().saturating_sub(self.config.upload_expiry.as_millis() as u64);
        let uploads = self.sm().read().uploads(None)?;
        for u in uploads {
            if u.initiated_ms < expired {
                info!(upload = %u.id, bucket = %u.bucket, key = %u.key, "abandoned multipart upload aborted");
                let cmd = Command::AbortUpload {
                    upload: u.id,
                    at_ms: now_ms(),
                };
                // Refused: completed or aborted meanwhile.
                let _ = self.committer.propose(cmd, None).await?;
            }
        }
        let cutoff = now_ms().saturating_sub(self.config.gc_grace.as_millis() as u64);
        let mut purged = 0;
        loop {
            let ids = self.sm().read().garbage_before(cutoff, PURGE_BATCH)?;
            if ids.is_empty() {
                return Ok(purged);
            }
            purged += ids.len();
            let full = ids.len() == PURGE_BATCH;
            let _ = self
                .committer
                .propose(Command::PurgeChunks { ids }, None)
                .await?;
            if !full {
                return Ok(purged);
            }
        }
    }
}
