//! Group commit: proposals queue for one committer thread, which takes
//! every proposal waiting (up to `MAX_BATCH`), gives each the next log
//! index, and applies them as one batch: one write, one fsync, for however
//! many concurrent commits (small-object PUTs, parts, repairs) there were.
//! While a batch is being written, the next one gathers.

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
        std::thread::Builder::new()
            .name("meta-committer".into())
            .spawn(move || run(sm, reservations, rx, next))
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

fn run(
    sm: Arc<StateMachine<RocksStore>>,
    reservations: Arc<Reservations>,
    rx: mpsc::Receiver<Pending>,
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
        match sm.apply_batch(&entries) {
            Ok(outcomes) => {
                next += ready.len() as u64;
                for (p, outcome) in ready.into_iter().zip(outcomes) {
                    if outcome.is_ok()
                        && let Some(w) = p.write
                    {
                        held.release(w);
                    }
                    let _ = p.reply.send(Ok(outcome));
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
