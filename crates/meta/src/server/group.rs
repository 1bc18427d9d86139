//! The meta group as the server sees it: who leads, what a change of
//! leader resets, the group's status, and membership changes
//! (`tessera meta status|add|remove`).

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::Instant;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, RaftMetrics};
use tessera_proto::{GroupRequest, MetaGroupStatus, MetaMember, MetaResponse};
use tracing::info;

use super::Meta;
use crate::MetaError;
use crate::raft::{NodeId, replica_id};
use crate::state::{Refused, refuse};

/// A failed Raft write as meta's error: `NotLeader` when the entry was
/// never proposed here (safe to send to the leader), `Internal` otherwise.
pub(crate) fn raft_write_error(
    e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
) -> MetaError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => MetaError::NotLeader {
            leader: f.leader_node.map(|n| n.addr),
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            refuse(Refused::Conflict, c.to_string())
        }
        RaftError::Fatal(f) => MetaError::Internal(format!("meta's Raft stopped: {f}")),
    }
}

/// Whether `me` leads, by these metrics: its Raft runs and knows itself
/// as the leader. A replica whose storage failed stops its Raft, and its
/// last metrics still name it leader: it must not act on them.
fn leads(m: &RaftMetrics<NodeId, BasicNode>, me: NodeId) -> bool {
    m.running_state.is_ok() && m.current_leader == Some(me)
}

impl Meta {
    /// Whether this replica leads the group now (as far as it knows: a
    /// leader cut off from the others learns it lost only when it hears of
    /// a later term; reads confirm leadership first, see `confirm_leader`).
    /// Never while its Raft is stopped.
    pub fn is_leader(&self) -> bool {
        leads(&self.raft.metrics().borrow(), self.me)
    }

    /// Waits until this replica's Raft stops for good, and says why. Raft
    /// stops on a storage error (the log or the state could not be
    /// written: a full or failing disk), after which the replica can do
    /// nothing useful: `tessera meta` then exits. Pending while Raft runs.
    pub async fn stopped(&self) -> String {
        let mut metrics = self.raft.metrics();
        loop {
            if let Err(fatal) = &metrics.borrow_and_update().running_state {
                return fatal.to_string();
            }
            if metrics.changed().await.is_err() {
                return "meta's Raft ended".into();
            }
        }
    }

    /// The leader's address, if one is known.
    pub fn leader_addr(&self) -> Option<String> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let leader = m.current_leader?;
        m.membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())
    }

    /// Confirms with a majority that this replica still leads, and waits
    /// until everything committed before now is applied here (Raft's
    /// read-index): a read after it sees every write acknowledged before
    /// it began. Errors: `NotLeader`.
    pub(super) async fn confirm_leader(&self) -> Result<(), MetaError> {
        self.raft
            .ensure_linearizable()
            .await
            .map(|_| ())
            .map_err(|e| MetaError::NotLeader {
                leader: e
                    .forward_to_leader()
                    .and_then(|f| f.leader_node.clone())
                    .map(|n: BasicNode| n.addr),
            })
    }

    /// Answers a request about the group (leader only).
    pub(super) async fn group(&self, req: GroupRequest) -> Result<MetaResponse, MetaError> {
        match req {
            GroupRequest::Status => {}
            GroupRequest::Add { addr } => {
                tessera_net::check_host_port(&addr).map_err(|e| refuse(Refused::BadRequest, e))?;
                let id = replica_id(&addr);
                info!(id, %addr, "adding a meta replica");
                // A learner first: it catches up (from a snapshot if the
                // log is purged) before it counts towards a majority.
                self.raft
                    .add_learner(id, BasicNode::new(&addr), true)
                    .await
                    .map_err(raft_write_error)?;
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                    .await
                    .map_err(raft_write_error)?;
            }
            GroupRequest::Remove { id } => {
                let (voters, known) = {
                    let m = self.raft.metrics();
                    let m = m.borrow();
                    let membership = m.membership_config.membership();
                    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
                    (voters, membership.get_node(&id).is_some())
                };
                if !voters.contains(&id) {
                    if !known {
                        return Err(refuse(
                            Refused::NotFound,
                            format!("no meta replica has id {id}"),
                        ));
                    }
                } else if voters.len() == 1 {
                    return Err(refuse(
                        Refused::BadRequest,
                        "the last voting replica of the meta group cannot be removed",
                    ));
                }
                info!(id, "removing a meta replica");
                if voters.contains(&id) {
                    self.raft
                        .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                        .await
                        .map_err(raft_write_error)?;
                }
                self.raft
                    .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                    .await
                    .map_err(raft_write_error)?;
            }
        }
        Ok(MetaResponse::Group(self.group_status()))
    }

    /// The group as this replica sees it (complete on the leader).
    pub fn group_status(&self) -> MetaGroupStatus {
        let m = self.raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let last = m.last_log_index;
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let role = if Some(*id) == m.current_leader {
                    "leader"
                } else if voters.contains(id) {
                    "follower"
                } else {
                    "learner"
                };
                let match_index = match &m.replication {
                    Some(r) => r.get(id).and_then(|l| l.map(|l| l.index)),
                    None if *id == self.me => m.last_applied.map(|l| l.index),
                    None => None,
                };
                let match_index = if *id == self.me && m.current_leader == Some(self.me) {
                    last
                } else {
                    match_index
                };
                MetaMember {
                    id: *id,
                    addr: node.addr.clone(),
                    role: role.into(),
                    match_index,
                    lag: match (last, match_index) {
                        (Some(l), Some(mi)) => Some(l.saturating_sub(mi)),
                        _ => None,
                    },
                }
            })
            .collect();
        MetaGroupStatus {
            leader: m.current_leader,
            term: m.current_term,
            committed: m.last_applied.map(|l| l.index),
            members,
        }
    }
}

/// Resets the leader's soft state whenever this replica becomes leader: a
/// fresh grace period for every node's heartbeats and for writes in
/// progress, and a fresh status. Ends with the meta.
pub(super) async fn watch_leadership(meta: Weak<Meta>) {
    let (mut metrics, me) = match meta.upgrade() {
        Some(m) => (m.raft.metrics(), m.me),
        None => return,
    };
    let mut leading = false;
    loop {
        let now_leading = leads(&metrics.borrow_and_update(), me);
        if now_leading != leading {
            leading = now_leading;
            let Some(m) = meta.upgrade() else { return };
            if leading {
                let term = m.raft.metrics().borrow().current_term;
                info!(term, "this meta replica leads the group");
                m.liveness.lead_from(m.mono_ms());
                m.reservations.lead_from(Instant::now());
            } else {
                info!("this meta replica no longer leads the group");
            }
            m.status.invalidate();
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Spawns `work` whenever this replica leads and aborts it when it stops
/// leading, so that the work (repair, upkeep) never runs on two replicas
/// for long: an old leader stops as soon as it learns of a new one.
pub fn while_leading<F, Fut>(meta: Arc<Meta>, work: F) -> tokio::task::JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    /// The work's task, aborted when dropped (with the watcher, when it is
    /// aborted itself).
    struct Running(tokio::task::JoinHandle<()>);
    impl Drop for Running {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    tokio::spawn(async move {
        let mut metrics = meta.raft.metrics();
        let me = meta.me;
        drop(meta);
        let mut task: Option<Running> = None;
        loop {
            let leading = leads(&metrics.borrow_and_update(), me);
            match (leading, task.is_some()) {
                (true, false) => task = Some(Running(tokio::spawn(work()))),
                (false, true) => task = None,
                _ => {}
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    })
}
