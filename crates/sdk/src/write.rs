//! The write path: chunk, encode, place, write fragments in parallel, commit.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{FuturesOrdered, FuturesUnordered, StreamExt};
use md5::{Digest, Md5};
use tessera_codec::{ChunkReader, EncodedChunk, Md5Lanes};
use tessera_net::{read_frame, write_frame};
use tessera_proto::{
    ChunkRecord, ChunkRef, ClusterMap, ErrorCode, FragmentRecord, FrameKind, Lease, MetaResponse,
    NewObject, NodeRequest, NodeResponse, ObjectData, ObjectInfo, PartInfo, Proposal, UploadInfo,
};
use tessera_types::{
    ChunkId, Hash, NodeId, PlacementCandidate, PlacementMap, Policy, validate_key,
};
use tokio::io::AsyncRead;
use tracing::debug;

use crate::{BodyCheck, Client, PutOptions, SdkError};

/// A spawned task that is cancelled when its handle is dropped: a put that
/// fails or is abandoned stops its remaining chunk writes.
pub(crate) struct AbortOnDrop<T>(pub(crate) tokio::task::JoinHandle<T>);

/// A write reservation and the task renewing it.
pub(crate) struct Reservation {
    pub(crate) id: u64,
    _renewer: AbortOnDrop<()>,
}

impl<T> std::future::Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Client {
    /// Stores `body` as `bucket/key`, replacing any object there. The object
    /// becomes visible, whole, only when meta commits it; if anything fails
    /// before, the previous version stays and the fragments written are
    /// garbage for the collector.
    pub async fn put<R: AsyncRead + Unpin + Send>(
        &self,
        bucket: &str,
        key: &str,
        body: R,
        opts: PutOptions,
    ) -> Result<ObjectInfo, SdkError> {
        validate_key(key).map_err(|e| Client::remote(ErrorCode::InvalidKey, e.to_string()))?;
        let class = opts.headers.storage_class.clone();
        // Asked only if the body is chunked: an inline object has no
        // fragments to place (its commit still refuses a missing bucket).
        let policy = self.write_policy(bucket, class.as_deref());
        let (condition, content_md5) = (opts.condition.clone(), opts.content_md5);
        let check = opts.body_check.clone();
        let content = opts.content.clone();
        let (mut object, write) = self.write_body(body, policy, opts, true).await?;
        if let Some(content) = content {
            (object.size, object.etag) = (content.0)()?;
        }
        if let Some(md5) = content_md5
            && hex::encode(md5) != object.etag
        {
            // The fragments written are garbage for the collector.
            return Err(Client::remote(
                ErrorCode::BadDigest,
                "the body does not match its Content-MD5",
            ));
        }
        if let Some(check) = check {
            object.headers.checksums = (check.0)()?;
        }
        match self
            .meta(Proposal::CommitObject {
                bucket: bucket.to_string(),
                key: key.to_string(),
                object,
                write: write.as_ref().map(|w| w.id),
                condition,
            })
            .await?
        {
            MetaResponse::Object(o) => Ok(o),
            other => Err(self.unexpected(other)),
        }
    }

    /// Stores `body` as part `number` of multipart upload `upload`,
    /// replacing an earlier upload of that part.
    pub async fn put_part<R: AsyncRead + Unpin + Send>(
        &self,
        upload: &UploadInfo,
        number: u32,
        body: R,
        check: Option<BodyCheck>,
    ) -> Result<PartInfo, SdkError> {
        let opts = PutOptions {
            body_check: check,
            ..Default::default()
        };
        self.put_part_with(upload, number, body, opts).await
    }

    /// [`Client::put_part`] with options: of `opts` only `body_check`,
    /// `content` and `headers.encryption` (an encrypted part) count; the
    /// upload holds the object's other headers.
    pub async fn put_part_with<R: AsyncRead + Unpin + Send>(
        &self,
        upload: &UploadInfo,
        number: u32,
        body: R,
        opts: PutOptions,
    ) -> Result<PartInfo, SdkError> {
        let policy = self.write_policy(&upload.bucket, upload.headers.storage_class.as_deref());
        let (check, content) = (opts.body_check.clone(), opts.content.clone());
        let opts = PutOptions {
            headers: tessera_proto::ObjectHeaders {
                encryption: opts.headers.encryption,
                ..Default::default()
            },
            // Tells `write_body` the ETag comes from elsewhere (no MD5).
            content: content.clone(),
            ..Default::default()
        };
        let (mut object, write) = self.write_body(body, policy, opts, false).await?;
        if let Some(content) = content {
            (object.size, object.etag) = (content.0)()?;
        }
        if let Some(check) = check {
            object.headers.checksums = (check.0)()?;
        }
        match self
            .meta(Proposal::CommitPart {
                upload: upload.id.clone(),
                number,
                part: object,
                write: write.as_ref().map(|w| w.id),
            })
            .await?
        {
            MetaResponse::Part(p) => Ok(p),
            other => Err(self.unexpected(other)),
        }
    }

    /// Cuts `body` into chunks and stores them in the policy `policy`
    /// resolves to (or keeps a small body inline when `allow_inline`,
    /// without resolving it), under a write reservation that lives as long
    /// as the returned guard (`None` for an inline body: no fragments to
    /// protect): the object to commit, not yet visible.
    async fn write_body<R: AsyncRead + Unpin + Send>(
        &self,
        body: R,
        policy: impl std::future::Future<Output = Result<Policy, SdkError>>,
        opts: PutOptions,
        allow_inline: bool,
    ) -> Result<(NewObject, Option<Reservation>), SdkError> {
        let map = self.cluster_map().await?;
        let mut reader = ChunkReader::new(body, self.inner.options.chunk_size);
        // The ETag is the body's MD5, hashed on the shared lanes thread
        // beside every other PUT's, while the chunks are written. A body
        // whose ETag comes from elsewhere (`content`: the plaintext of an
        // encrypted object) is not hashed here at all.
        let mut md5 = match opts.content {
            None => Some(Md5Lanes::shared()?.stream()),
            Some(_) => None,
        };
        let mut size = 0u64;
        let mut refs = Vec::new();
        let mut records = Vec::new();

        // A permit from the write budget for each chunk read in; it goes
        // with the chunk's task and is returned when its fragments are
        // stored. It is taken after the chunk is read, never while waiting
        // on the source: that source may be a read (a copy) waiting for
        // this very write to drain its pipe. Only chunk tasks hold write
        // permits, and they finish on their own, so waiting for one ends.
        let budget = self.inner.write_budget.clone();
        let permit = || async {
            budget
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| SdkError::Invalid("write budget closed".into()))
        };
        let first = reader.next_chunk().await?;
        let small = allow_inline
            && first.as_ref().is_none_or(|c| {
                c.len() <= map.inline_limit as usize && c.len() < self.inner.options.chunk_size
            });
        let mut write = None;
        let mut inline_etag = None;
        let data = if small {
            let bytes = first.unwrap_or_default();
            // Too small to be worth a trip to the lanes thread.
            if md5.take().is_some() {
                inline_etag = Some(hex::encode(Md5::digest(&bytes)));
            }
            size = bytes.len() as u64;
            ObjectData::Inline(bytes)
        } else {
            let policy = policy.await?;
            // Before any fragment is written: the collector must leave the
            // chunks alone until their commit.
            let reservation = write.insert(self.reserve(&map));
            let mut pending = first;
            let mut in_flight = FuturesOrdered::new();
            loop {
                while in_flight.len() < self.inner.options.parallel_chunks {
                    let chunk = match pending.take() {
                        Some(c) => c,
                        None => match reader.next_chunk().await? {
                            Some(c) => c,
                            None => break,
                        },
                    };
                    let held = permit().await?;
                    let chunk = Bytes::from(chunk);
                    if let Some(md5) = md5.as_mut() {
                        md5.update(chunk.clone()).await?;
                    }
                    size += chunk.len() as u64;
                    // A task per chunk: writes go on while the next chunk is
                    // read from a slow source.
                    let (client, map, id) = (self.clone(), map.clone(), reservation.id);
                    in_flight.push_back(AbortOnDrop(tokio::spawn(crate::carry_request_id(
                        async move {
                            let _held = held;
                            client.write_chunk(chunk, policy, &map, id).await
                        },
                    ))));
                }
                match in_flight.next().await {
                    Some(record) => {
                        let record: ChunkRecord = record
                            .map_err(|e| SdkError::Invalid(format!("chunk writer task: {e}")))??;
                        refs.push(ChunkRef {
                            id: record.id,
                            len: record.len,
                        });
                        records.push(record);
                    }
                    None => break,
                }
            }
            ObjectData::Chunks(refs)
        };
        let etag = match (inline_etag, md5) {
            (Some(etag), _) => etag,
            (None, Some(md5)) => hex::encode(md5.finish().await?),
            // Replaced by the caller from `content`.
            (None, None) => String::new(),
        };
        let object = NewObject {
            size,
            etag,
            content_type: opts.content_type,
            user_meta: opts.user_meta,
            headers: opts.headers,
            data,
            chunks: records,
        };
        Ok((object, write))
    }

    /// A write reservation in meta, renewed until the guard is dropped:
    /// chunks are reserved before their fragments are written, so the
    /// garbage collector leaves them alone until the commit however slow
    /// the source.
    pub(crate) fn reserve(&self, map: &ClusterMap) -> Reservation {
        let id: u64 = rand::random();
        let renew_every =
            std::time::Duration::from_millis((map.gc_grace_ms / 4).clamp(100, 60_000));
        let client = self.clone();
        let renewer = AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(renew_every).await;
                let req = Lease::ReserveChunks {
                    write: id,
                    chunks: vec![],
                };
                if let Err(e) = client.meta(req).await {
                    debug!(error = %e, "renewing the write's reservation failed");
                }
            }
        }));
        Reservation {
            id,
            _renewer: renewer,
        }
    }

    /// Encodes one chunk and writes its fragments to distinct nodes. A node
    /// that fails is replaced by the next one in the chunk's placement order,
    /// so a write succeeds while enough nodes remain; it never stores fewer
    /// fragments than the policy asks for.
    pub(crate) async fn write_chunk(
        &self,
        chunk: Bytes,
        policy: Policy,
        map: &ClusterMap,
        write: u64,
    ) -> Result<ChunkRecord, SdkError> {
        let id = ChunkId::random();
        self.meta(Lease::ReserveChunks {
            write,
            chunks: vec![id],
        })
        .await?;
        let codec = self.inner.codec.clone();
        let enc: EncodedChunk = tokio::task::spawn_blocking(move || codec.encode(policy, chunk))
            .await
            .map_err(|e| SdkError::Invalid(format!("encoder task: {e}")))??;
        let enc = Arc::new(enc);

        let up = map.nodes.iter().filter(|n| n.writable());
        let placement = PlacementMap::new(up.map(|n| PlacementCandidate {
            id: n.id,
            zone: n.zone.clone(),
            weight: n.capacity,
        }));
        let mut ranked = placement.ranking(id);
        let addr_of = |node: NodeId| -> Option<SocketAddr> {
            map.nodes
                .iter()
                .find(|n| n.id == node)
                .and_then(|n| n.addr.parse().ok())
        };
        let n = policy.fragments();
        let mut holders: Vec<Option<NodeId>> = vec![None; n];
        let mut failures = Vec::new();
        let mut full = false;
        let mut writes = FuturesUnordered::new();
        for index in 0..n {
            let Some(node) = ranked.next() else { break };
            writes.push(self.write_to(node, addr_of(node), id, index, enc.clone()));
        }
        while let Some((index, node, result)) = writes.next().await {
            match result {
                Ok(()) => holders[index] = Some(node),
                Err(e) => {
                    debug!(%id, index, %node, error = %e, "fragment write failed; trying the next node");
                    full |= e.code() == Some(ErrorCode::NoSpace);
                    failures.push(format!("node {node}: {e}"));
                    if let Some(next) = ranked.next() {
                        writes.push(self.write_to(next, addr_of(next), id, index, enc.clone()));
                    }
                }
            }
        }
        let stored = holders.iter().flatten().count();
        if stored < n {
            let message = format!(
                "{policy} needs {n} nodes, only {stored} accepted fragments of chunk {id} ({} nodes up){}",
                placement.len(),
                if failures.is_empty() {
                    String::new()
                } else {
                    format!(": {}", failures.join("; "))
                }
            );
            // Nodes out of room is the cluster being full, which callers
            // report as such (S3 and errno alike), not a generic failure.
            if full {
                return Err(SdkError::NoSpace(message));
            }
            return Err(SdkError::NotEnoughNodes(message));
        }
        let fragments = holders
            .into_iter()
            .zip(&enc.hashes)
            .map(|(node, hash)| FragmentRecord {
                node: node.unwrap_or(NodeId(0)),
                hash: *hash,
            })
            .collect();
        Ok(ChunkRecord {
            id,
            policy,
            len: enc.len as u64,
            fragment_len: enc.fragment_len as u64,
            hash: enc.chunk_hash,
            fragments,
        })
    }

    async fn write_to(
        &self,
        node: NodeId,
        addr: Option<SocketAddr>,
        chunk: ChunkId,
        index: usize,
        enc: Arc<EncodedChunk>,
    ) -> (usize, NodeId, Result<(), SdkError>) {
        let result = match addr {
            Some(addr) => {
                let body = enc.fragments[index].clone();
                self.store_fragment(addr, chunk, index as u8, body, enc.hashes[index])
                    .await
            }
            None => Err(SdkError::Invalid(format!(
                "node {node} has no valid address"
            ))),
        };
        (index, node, result)
    }

    pub(crate) async fn put_fragment(
        &self,
        addr: SocketAddr,
        chunk: ChunkId,
        index: u8,
        body: Bytes,
        hash: Hash,
    ) -> Result<(), SdkError> {
        let result = async {
            let conn = self.inner.pool.get(addr).await?;
            let (mut send, mut recv) = conn
                .open_bi()
                .await
                .map_err(|e| tessera_net::NetError::ConnectionLost(e.to_string()))?;
            let req = NodeRequest::PutFragment {
                chunk,
                index,
                len: body.len() as u64,
                hash,
                request: crate::current_request_id(),
            };
            write_frame(&mut send, FrameKind::Request, &req).await?;
            // The fragment's own buffer goes to QUIC, not a copy of it.
            send.write_chunk(body)
                .await
                .map_err(|e| tessera_net::NetError::ConnectionLost(e.to_string()))?;
            let _ = send.finish();
            read_frame::<NodeResponse>(&mut recv, FrameKind::Response).await
        }
        .await;
        match result {
            Ok(NodeResponse::Stored) => Ok(()),
            Ok(NodeResponse::Error(e)) => Err(SdkError::Remote(e)),
            Ok(other) => Err(SdkError::Protocol {
                peer: addr.to_string(),
                what: format!("{other:?}"),
            }),
            Err(e) => {
                if e.is_peer_failure() {
                    self.inner.pool.mark_failed(addr);
                }
                Err(e.into())
            }
        }
    }
}
