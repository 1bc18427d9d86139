//! Group commit over Raft: proposals queue for one committer task, which
//! takes every proposal waiting (up to `MAX_BATCH` commands or
//! `MAX_ENTRY_BYTES`) and proposes them as one log entry. A few entries are
//! in flight at once (`IN_FLIGHT`): while one is replicated and synced, the
//! next gathers, so a busy meta makes one append and one fsync per group,
//! however many concurrent commits there were.
//!
//! A write's reservation is pinned while its commit is in flight (the
//! collector never names its chunks meanwhile, however long replication
//! takes) and ends when the commit is applied.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::error;

use super::reservations::Reservations;
use crate::MetaError;
use crate::raft::{MetaRaft, Proposals};
use crate::state::{Command, Outcome, Refusal, Refused};

/// Most commands in one entry.
const MAX_BATCH: usize = 1024;

/// An entry stops growing past this many encoded bytes (commands of inline
/// objects are up to a few KiB each): Raft sends entries in frames of at
/// most 16 MiB, eight at a time.
pub(crate) const MAX_ENTRY_BYTES: usize = 1024 * 1024;

/// Entries proposed and not yet applied, at most: one replicated and
/// synced while the next gathers. Measured at 64 concurrent commits on one
/// replica: 1 gave 14-15k/s, 2 gave 16.5-17k/s, 3 gave 15-16k/s, 8 gave
/// 12-13.5k/s (smaller entries, more of openraft's per-entry work).
const IN_FLIGHT: usize = 2;

struct Pending {
    cmd: Command,
    /// The write reservation the command's chunks were stored under.
    write: Option<u64>,
    reply: oneshot::Sender<Result<Outcome, MetaError>>,
}

pub(super) struct Committer {
    queue: mpsc::UnboundedSender<Pending>,
}

impl Committer {
    pub fn start(raft: MetaRaft, reservations: Arc<Reservations>) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, reservations, rx));
        Committer { queue }
    }

    /// Applies `cmd` in the next entry. With `write`, the command is
    /// refused (`Conflict`) unless that reservation is still fresh when its
    /// entry is proposed, and the reservation ends with the commit.
    /// Errors: `NotLeader` when this replica is not (or stopped being) the
    /// leader before the entry was proposed; `Internal` when the outcome is
    /// unknown (leadership lost after proposing: the command may or may not
    /// be applied).
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
        "the write's reservation lapsed (idle longer than the garbage grace period): its fragments may be collected, so it was not committed; write it again",
    )
}

async fn run(
    raft: MetaRaft,
    reservations: Arc<Reservations>,
    mut rx: mpsc::UnboundedReceiver<Pending>,
) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        // The permit first: proposals gather while entries are in flight.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut size = postcard::experimental::serialized_size(&first.cmd).unwrap_or(0);
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && size < MAX_ENTRY_BYTES {
            match rx.try_recv() {
                Ok(p) => {
                    size += postcard::experimental::serialized_size(&p.cmd).unwrap_or(0);
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let ready: Vec<Pending> = {
            let mut held = reservations.lock();
            let now = std::time::Instant::now();
            let (ready, stale): (Vec<Pending>, Vec<Pending>) = batch
                .into_iter()
                .partition(|p| p.write.is_none_or(|w| held.pin(w, now)));
            for p in stale {
                let _ = p.reply.send(Ok(Err(lapsed())));
            }
            ready
        };
        if ready.is_empty() {
            continue;
        }
        let raft = raft.clone();
        let reservations = reservations.clone();
        tokio::spawn(async move {
            let (cmds, rest): (Vec<Command>, Vec<_>) = ready
                .into_iter()
                .map(|p| (p.cmd, (p.write, p.reply)))
                .unzip();
            let n = cmds.len();
            let result = raft.client_write(Proposals(cmds)).await;
            drop(permit);
            let outcomes = match result {
                Ok(resp) if resp.data.0.len() == n => Ok(resp.data.0),
                Ok(resp) => Err(MetaError::Internal(format!(
                    "an entry of {n} commands gave {} outcomes",
                    resp.data.0.len()
                ))),
                Err(e) => Err(super::raft_write_error(e)),
            };
            let mut held = reservations.lock();
            match outcomes {
                Ok(outcomes) => {
                    for ((write, reply), outcome) in rest.into_iter().zip(outcomes) {
                        if let Some(w) = write {
                            if outcome.is_ok() {
                                held.release(w);
                            } else {
                                held.unpin(w);
                            }
                        }
                        let _ = reply.send(Ok(outcome));
                    }
                }
                Err(e) => {
                    if !matches!(e, MetaError::NotLeader { .. }) {
                        error!(error = %e, commands = n, "an entry of commands failed");
                    }
                    for (write, reply) in rest {
                        if let Some(w) = write {
                            held.unpin(w);
                        }
                        let _ = reply.send(Err(e.duplicate()));
                    }
                }
            }
        });
    }
}
