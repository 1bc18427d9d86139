//! Calls for operators and for the repairer: node drain and removal, deep
//! scrub requests, and the fragment-level reads and writes that repair and
//! rebalancing are built from. Applications do not need these.

use std::net::SocketAddr;

use bytes::Bytes;
use tessera_codec::ChunkCodec;
use tessera_proto::{
    AccessKey, AdminToken, ChunkRecord, FragmentMove, Grant, MetaQuery, MetaResponse, Permission,
    Proposal, RepairItem,
};
use tessera_types::{ChunkId, Hash, NodeId};

use crate::{Client, SdkError};

impl Client {
    /// The codec this client encodes and decodes with.
    pub fn codec(&self) -> &ChunkCodec {
        &self.inner.codec
    }

    /// Chunks that lost fragments or sit on draining nodes, the fewest
    /// spare fragments first.
    pub async fn repair_work(&self, limit: u32) -> Result<Vec<RepairItem>, SdkError> {
        match self.meta(MetaQuery::RepairWork { limit }).await? {
            MetaResponse::RepairWork(w) => Ok(w),
            other => Err(self.unexpected(other)),
        }
    }

    /// Live chunk records in id order after `after`.
    pub async fn scan_chunks(
        &self,
        after: Option<ChunkId>,
        limit: u32,
    ) -> Result<Vec<ChunkRecord>, SdkError> {
        match self.meta(MetaQuery::ScanChunks { after, limit }).await? {
            MetaResponse::Chunks(c) => Ok(c),
            other => Err(self.unexpected(other)),
        }
    }

    /// Points fragments at the nodes that now hold verified copies.
    pub async fn commit_repair(
        &self,
        chunk: ChunkId,
        moves: Vec<FragmentMove>,
    ) -> Result<(), SdkError> {
        match self.meta(Proposal::CommitRepair { chunk, moves }).await? {
            MetaResponse::Ok => Ok(()),
            other => Err(self.unexpected(other)),
        }
    }

    /// Commits the repairs of several chunks, each on its own (one refused
    /// does not hold back the others), and answers in their order. They
    /// are sent at the same moment, so the meta client carries them in
    /// batched requests (up to 16 a request) and meta's committer puts
    /// what is waiting in one log entry and one sync: a repairer that
    /// commits chunk by chunk pays a request and a log entry for each.
    pub async fn commit_repairs(
        &self,
        repairs: Vec<(ChunkId, Vec<FragmentMove>)>,
    ) -> Vec<Result<(), SdkError>> {
        futures::future::join_all(
            repairs
                .into_iter()
                .map(|(chunk, moves)| self.commit_repair(chunk, moves)),
        )
        .await
    }

    /// Asks every node for a deep scrub; returns the request's number.
    pub async fn start_scrub(&self) -> Result<u64, SdkError> {
        match self.meta(Proposal::StartScrub).await? {
            MetaResponse::ScrubStarted { seq } => Ok(seq),
            other => Err(self.unexpected(other)),
        }
    }

    pub async fn drain_node(&self, node: NodeId) -> Result<(), SdkError> {
        match self.meta(Proposal::DrainNode { node }).await? {
            MetaResponse::Ok => Ok(()),
            other => Err(self.unexpected(other)),
        }
    }

    pub async fn remove_node(&self, node: NodeId) -> Result<(), SdkError> {
        match self.meta(Proposal::RemoveNode { node }).await? {
            MetaResponse::Ok => Ok(()),
            other => Err(self.unexpected(other)),
        }
    }

    /// Creates an S3 access key; meta draws the id and secret unless given.
    pub async fn create_key(
        &self,
        name: &str,
        id: Option<String>,
        secret: Option<String>,
    ) -> Result<AccessKey, SdkError> {
        let req = Proposal::CreateKey {
            name: name.to_string(),
            id,
            secret,
        };
        match self.meta(req).await? {
            MetaResponse::Key(k) => Ok(k),
            other => Err(self.unexpected(other)),
        }
    }

    /// Records an admin API token by its BLAKE3 hash (64 hex digits); the
    /// token itself stays with the caller.
    pub async fn create_admin_token(&self, name: &str, hash: &str) -> Result<(), SdkError> {
        let req = Proposal::CreateAdminToken {
            name: name.to_string(),
            hash: hash.to_string(),
        };
        match self.meta(req).await? {
            MetaResponse::Ok => Ok(()),
            other => Err(self.unexpected(other)),
        }
    }

    /// The admin token with this hash; `NotFound` if there is none.
    pub async fn admin_token(&self, hash: &str) -> Result<AdminToken, SdkError> {
        let req = MetaQuery::GetAdminToken {
            hash: hash.to_string(),
        };
        match self.meta(req).await? {
            MetaResponse::AdminToken(t) => Ok(t),
            other => Err(self.unexpected(other)),
        }
    }

    /// Every admin token as `(hash, token)`, in hash order.
    pub async fn admin_tokens(&self) -> Result<Vec<(String, AdminToken)>, SdkError> {
        match self.meta(MetaQuery::ListAdminTokens).await? {
            MetaResponse::AdminTokens(t) => Ok(t),
            other => Err(self.unexpected(other)),
        }
    }

    /// Revokes the admin token with this hash; whether it existed.
    pub async fn delete_admin_token(&self, hash: &str) -> Result<bool, SdkError> {
        let req = Proposal::DeleteAdminToken {
            hash: hash.to_string(),
        };
        match self.meta(req).await? {
            MetaResponse::Deleted { existed } => Ok(existed),
            other => Err(self.unexpected(other)),
        }
    }

    /// Every access key, secrets blanked.
    pub async fn list_keys(&self) -> Result<Vec<AccessKey>, SdkError> {
        match self.meta(MetaQuery::ListKeys).await? {
            MetaResponse::Keys(k) => Ok(k),
            other => Err(self.unexpected(other)),
        }
    }

    /// One access key with its secret.
    pub async fn access_key(&self, id: &str) -> Result<AccessKey, SdkError> {
        match self.meta(MetaQuery::GetKey { id: id.to_string() }).await? {
            MetaResponse::Key(k) => Ok(k),
            other => Err(self.unexpected(other)),
        }
    }

    /// Deletes a key and its grants; whether it existed.
    pub async fn delete_key(&self, id: &str) -> Result<bool, SdkError> {
        match self
            .meta(Proposal::DeleteKey { id: id.to_string() })
            .await?
        {
            MetaResponse::Deleted { existed } => Ok(existed),
            other => Err(self.unexpected(other)),
        }
    }

    /// Grants `permission` on `bucket` to `key`, or revokes with `None`.
    pub async fn set_grant(
        &self,
        bucket: &str,
        key: &str,
        permission: Option<Permission>,
    ) -> Result<(), SdkError> {
        let req = Proposal::SetGrant {
            bucket: bucket.to_string(),
            key: key.to_string(),
            permission,
        };
        match self.meta(req).await? {
            MetaResponse::Ok => Ok(()),
            other => Err(self.unexpected(other)),
        }
    }

    pub async fn grants(
        &self,
        bucket: Option<&str>,
        key: Option<&str>,
    ) -> Result<Vec<Grant>, SdkError> {
        let req = MetaQuery::ListGrants {
            bucket: bucket.map(str::to_string),
            key: key.map(str::to_string),
        };
        match self.meta(req).await? {
            MetaResponse::Grants(g) => Ok(g),
            other => Err(self.unexpected(other)),
        }
    }

    /// Reads fragment `index` of a chunk from the node the record names,
    /// checked against the record's hash.
    pub async fn read_fragment(
        &self,
        record: &ChunkRecord,
        index: usize,
    ) -> Result<Vec<u8>, SdkError> {
        let node = record
            .fragments
            .get(index)
            .ok_or_else(|| {
                SdkError::Invalid(format!("chunk {} has no fragment {index}", record.id))
            })?
            .node;
        let nodes = self.node_addrs(&[node]).await?;
        match self.fetch(record, index, &nodes).await.1 {
            Ok(bytes) => Ok(bytes),
            Err(e) => Err(SdkError::Invalid(self.fetch_failed(record, index, e))),
        }
    }

    /// Stores one fragment on the node at `addr`; the node checks `hash`.
    pub async fn store_fragment(
        &self,
        addr: SocketAddr,
        chunk: ChunkId,
        index: u8,
        body: Bytes,
        hash: Hash,
    ) -> Result<(), SdkError> {
        let put = self.put_fragment(addr, chunk, index, body, hash);
        match tokio::time::timeout(self.inner.options.fragment_timeout * 3, put).await {
            Ok(r) => r,
            Err(_) => {
                self.inner.pool.mark_failed(addr);
                Err(SdkError::Invalid(format!(
                    "fragment write to {addr} timed out"
                )))
            }
        }
    }
}
