//! Group commit: proposals queue for one committer thread, which takes
//! every proposal waiting (up to `MAX_BATCH`), gives each the next log
//! index, and applies them as one batch: one write, one fsync, for however
//! many concurrent commits (small-object PUTs, parts, repairs) there were.
//! The fsync is pipelined: the committer writes a batch without waiting
//! and hands its replies to a syncer thread, which syncs once for every
//! batch written so far and only then answers them; meanwhile the next
//! batch is applied.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Instant;

use tokio::sync::oneshot;
use tracing::error;

use super::reservations::Reservations;
use crate::MetaError;
use crate::state::{Command, Outcome, Refusal, Refused, StateMachine};
use crate::store::RocksStore;

/// Most commands in one batch.
const MAX_BATCH: usize = 1024;

struct Pending {
    cmd: Command,
    /// The write reservation the command's chunks were stored under.
    write: Option<u64>,
    reply: oneshot::Sender<Result<Outcome, MetaError>>,
}

pub(super) struct Committer {
    queue: mpsc::Sender<Pending>,
}

impl Committer {
    pub fn start(
        sm: Arc<StateMachine<RocksStore>>,
        reservations: Arc<Reservations>,
    ) -> Result<Self, MetaError> {
        let (queue, rx) = mpsc::channel();
        let next = sm.applied_index()? + 1;
        let (synced, to_sync) = mpsc::channel();
        let syncer_sm = sm.clone();
        std::thread::Builder::new()
            .name("meta-syncer".into())
            .spawn(move || sync_and_answer(syncer_sm, to_sync))
            .map_err(|e| MetaError::Internal(format!("starting the syncer: {e}")))?;
        std::thread::Builder::new()
            .name("meta-committer".into())
            .spawn(move || run(sm, reservations, rx, synced, next))
            .map_err(|e| MetaError::Internal(format!("starting the committer: {e}")))?;
        Ok(Committer { queue })
    }

    /// Applies `cmd` in the next batch. With `write`, the command is
    /// refused (`Conflict`) unless that reservation is still fresh when its
    /// batch is applied, and the reservation ends with the commit.
    pub async fn propose(&self, cmd: Command, write: Option<u64>) -> Result<Outcome, MetaError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { cmd, write, reply })
            .map_err(|_| MetaError::Internal("the committer stopped".into()))?;
        answer
            .await
            .map_err(|_| MetaError::Internal("the committer dropped a proposal".into()))?
    }
}

fn lapsed() -> Refusal {
    Refusal::new(
        Refused::Conflict,
        "the write's reservation lapsed (idle longer than the garbage grace period, or meta restarted): its fragments may be collected, so it was not committed; write it again",
    )
}

/// A written batch waiting for its sync: each reply with its outcome.
type Written = Vec<(oneshot::Sender<Result<Outcome, MetaError>>, Outcome)>;

/// Syncs once for every batch written so far, then answers them.
fn sync_and_answer(sm: Arc<StateMachine<RocksStore>>, rx: mpsc::Receiver<Written>) {
    while let Ok(first) = rx.recv() {
        let mut batches = vec![first];
        while let Ok(more) = rx.try_recv() {
            batches.push(more);
        }
        match sm.sync() {
            Ok(()) => {
                for (reply, outcome) in batches.into_iter().flatten() {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                error!(error = %e, "syncing committed batches failed");
                for (reply, _) in batches.into_iter().flatten() {
                    let _ = reply.send(Err(MetaError::Internal(format!("syncing the batch: {e}"))));
                }
            }
        }
    }
}

fn run(
    sm: Arc<StateMachine<RocksStore>>,
    reservations: Arc<Reservations>,
    rx: mpsc::Receiver<Pending>,
    synced: mpsc::Sender<Written>,
    mut next: u64,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        // Held across the write: the collector asks before or after it.
        let mut held = reservations.lock();
        let now = Instant::now();
        let (ready, stale): (Vec<Pending>, Vec<Pending>) = batch
            .into_iter()
            .partition(|p| p.write.is_none_or(|w| held.fresh(w, now)));
        for p in stale {
            let _ = p.reply.send(Ok(Err(lapsed())));
        }
        if ready.is_empty() {
            continue;
        }
        let entries: Vec<(u64, &Command)> = ready
            .iter()
            .enumerate()
            .map(|(i, p)| (next + i as u64, &p.cmd))
            .collect();
        match sm.apply_batch_buffered(&entries) {
            Ok(outcomes) => {
                next += ready.len() as u64;
                let mut written = Vec::with_capacity(ready.len());
                for (p, outcome) in ready.into_iter().zip(outcomes) {
                    if outcome.is_ok()
                        && let Some(w) = p.write
                    {
                        held.release(w);
                    }
                    written.push((p.reply, outcome));
                }
                if let Err(mpsc::SendError(lost)) = synced.send(written) {
                    for (reply, _) in lost {
                        let _ = reply.send(Err(MetaError::Internal("the syncer stopped".into())));
                    }
                }
            }
            Err(e) => {
                error!(error = %e, commands = ready.len(), "a batch of commands could not be written");
                for p in ready {
                    let _ = p
                        .reply
                        .send(Err(MetaError::Internal(format!("writing the batch: {e}"))));
                }
            }
        }
    }
}
