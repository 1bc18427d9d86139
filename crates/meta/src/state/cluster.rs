//! The cluster map: storage nodes, their operator state (active, draining,
//! removed) and the epoch that counts changes to it; deep scrub requests.

use tessera_proto::NodeAdmin;
use tessera_types::NodeId;

use super::chunks::ChunkQueries;
use super::tables::{NODE_ADMIN, NODE_STATS, NODES, NodeRecord, NodeStats, counter};
use super::{Applied, Refused, Txn, refuse};
use crate::MetaError;
use crate::store::{Read, Step};

pub(super) fn register_node(tx: &mut Txn<'_, '_>, node: &NodeRecord) -> Result<Applied, MetaError> {
    if tx.node_admin(node.id)? == NodeAdmin::Removed {
        return Err(refuse(
            Refused::NodeRemoved,
            format!("node {} was removed from the cluster", node.id),
        ));
    }
    tx.put(NODES, &node.id, node)?;
    tx.add(counter::EPOCH, 1);
    Ok(Applied::Done)
}

pub(super) fn set_node_admin(
    tx: &mut Txn<'_, '_>,
    node: NodeId,
    admin: NodeAdmin,
) -> Result<Applied, MetaError> {
    if tx.node(node)?.is_none() {
        return Err(refuse(Refused::NotFound, format!("no node {node}")));
    }
    if admin == NodeAdmin::Removed {
        return Err(refuse(
            Refused::BadRequest,
            "nodes are removed with RemoveNode",
        ));
    }
    tx.put(NODE_ADMIN, &node, &admin)?;
    tx.add(counter::EPOCH, 1);
    Ok(Applied::Done)
}

pub(super) fn remove_node(tx: &mut Txn<'_, '_>, node: NodeId) -> Result<Applied, MetaError> {
    if tx.node(node)?.is_none() {
        return Err(refuse(Refused::NotFound, format!("no node {node}")));
    }
    if tx.holds_fragments(node)? {
        let n = tx.node_stats(node)?.fragments.max(1);
        return Err(refuse(
            Refused::Conflict,
            format!(
                "node {node} still holds {n} fragments: drain it first (tessera node drain {node})"
            ),
        ));
    }
    tx.delete(NODES, &node)?;
    tx.put(NODE_ADMIN, &node, &NodeAdmin::Removed)?;
    tx.add(counter::EPOCH, 1);
    Ok(Applied::Done)
}

pub(super) fn request_scrub(tx: &mut Txn<'_, '_>) -> Result<Applied, MetaError> {
    tx.add(counter::SCRUB_SEQ, 1);
    Ok(Applied::ScrubRequested {
        seq: tx.counter_now(counter::SCRUB_SEQ)?,
    })
}

/// Queries of the cluster map.
pub trait ClusterQueries: Read {
    fn nodes(&self) -> Result<Vec<NodeRecord>, MetaError> {
        let mut out = Vec::new();
        self.scan(NODES, &[], |_, _, v| {
            out.push(v);
            Ok(Step::Continue)
        })?;
        Ok(out)
    }

    fn node(&self, id: NodeId) -> Result<Option<NodeRecord>, MetaError> {
        self.get(NODES, &id)
    }

    /// Active unless an operator said otherwise.
    fn node_admin(&self, id: NodeId) -> Result<NodeAdmin, MetaError> {
        Ok(self.get(NODE_ADMIN, &id)?.unwrap_or_default())
    }

    /// What the records place on a node.
    fn node_stats(&self, id: NodeId) -> Result<NodeStats, MetaError> {
        Ok(self.get(NODE_STATS, &id)?.unwrap_or_default())
    }

    /// Every node with its admin state and what the records place on it, in
    /// id order: three scans, not a lookup per node (the cluster map is
    /// asked for often).
    fn node_table(&self) -> Result<Vec<(NodeRecord, NodeAdmin, NodeStats)>, MetaError> {
        // The tables are small and keyed alike: sorted vectors and a binary
        // search cost less than hashing every id twice.
        let mut admins = Vec::new();
        self.scan(NODE_ADMIN, &[], |_, id: NodeId, a| {
            admins.push((id, a));
            Ok(Step::Continue)
        })?;
        let mut stats = Vec::new();
        self.scan(NODE_STATS, &[], |_, id: NodeId, s| {
            stats.push((id, s));
            Ok(Step::Continue)
        })?;
        admins.sort_unstable_by_key(|(id, _)| *id);
        stats.sort_unstable_by_key(|(id, _)| *id);
        fn find<T: Copy + Default>(table: &[(NodeId, T)], id: NodeId) -> T {
            table
                .binary_search_by_key(&id, |(k, _)| *k)
                .map(|i| table[i].1)
                .unwrap_or_default()
        }
        Ok(self
            .nodes()?
            .into_iter()
            .map(|n| {
                let (admin, s) = (find(&admins, n.id), find(&stats, n.id));
                (n, admin, s)
            })
            .collect())
    }
}

impl<R: Read + ?Sized> ClusterQueries for R {}

#[cfg(test)]
mod tests {
    use super::super::StateQueries;
    use super::super::testkit::*;
    use super::*;

    #[test]
    fn nodes_register_drain_and_leave_only_when_empty() {
        let t = Kit::new();
        let nodes = t.nodes(7);
        assert_eq!(t.sm.read().counter(counter::EPOCH).unwrap(), 7);
        t.bucket("bkt");
        t.put("bkt", "k", t.one_chunk(1, &nodes)).unwrap();
        assert_eq!(
            t.refused(Command::SetNodeAdmin {
                node: NodeId(99),
                admin: NodeAdmin::Draining
            }),
            Refused::NotFound
        );
        t.ok(Command::SetNodeAdmin {
            node: nodes[6],
            admin: NodeAdmin::Draining,
        });
        assert_eq!(
            t.sm.read().node_admin(nodes[6]).unwrap(),
            NodeAdmin::Draining
        );
        // Node 1 holds a fragment: it may not go; node 7 holds none.
        assert_eq!(
            t.refused(Command::RemoveNode { node: nodes[0] }),
            Refused::Conflict
        );
        t.ok(Command::RemoveNode { node: nodes[6] });
        let r = t.sm.read();
        assert!(r.node(nodes[6]).unwrap().is_none());
        assert_eq!(r.node_admin(nodes[6]).unwrap(), NodeAdmin::Removed);
        drop(r);
        // A removed node's id cannot come back.
        let again = NodeRecord {
            id: nodes[6],
            addr: "127.0.0.1:1".into(),
            zone: None,
            capacity: 1,
            joined_ms: 0,
        };
        assert_eq!(
            t.refused(Command::RegisterNode { node: again }),
            Refused::NodeRemoved
        );
        assert_eq!(
            t.ok(Command::RequestScrub),
            Applied::ScrubRequested { seq: 1 }
        );
    }

    use super::super::Command;
}
