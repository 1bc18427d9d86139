//! The read path: fetch K fragments, verify each against the chunk record,
//! decode from parity only when a data fragment is missing, slow or corrupt.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::Range;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use tessera_net::{NetError, read_body, read_frame, write_frame};
use tessera_proto::{
    ChunkRecord, ChunkRef, FrameKind, MetaQuery, MetaResponse, NodeInfo, NodeRequest, NodeResponse,
    NodeState, ObjectData, ObjectInfo, Proposal,
};
use tessera_types::{ChunkId, NodeId};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tracing::{debug, warn};

use crate::write::AbortOnDrop;
use crate::{Client, SdkError};

/// How long the fragments of a chunk may all stay silent before one more is
/// asked for.
const HEDGE_AFTER: std::time::Duration = std::time::Duration::from_millis(500);

/// Chunk records fetched from meta per request.
const RECORD_BATCH: usize = 256;

/// Chunk records [`Client::get`] asks for with the object: 16 of the
/// default 4 MiB chunks cover a 64 MiB object, so most reads ask meta
/// once; a longer object asks for the rest as it goes.
pub const RECORDS_WITH_OBJECT: u32 = 16;

/// Where a read's verified pieces go, in order.
trait PieceSink: Send {
    fn put(&mut self, piece: Bytes) -> impl Future<Output = Result<(), SdkError>> + Send;
}

/// Pieces written to a byte stream (a file, a pipe, a FUSE reply).
struct WriterSink<'a, W>(&'a mut W);

impl<W: AsyncWrite + Unpin + Send> PieceSink for WriterSink<'_, W> {
    async fn put(&mut self, piece: Bytes) -> Result<(), SdkError> {
        self.0.write_all(&piece).await?;
        Ok(())
    }
}

/// Pieces handed on whole (an HTTP response body).
struct ChannelSink(tokio::sync::mpsc::Sender<Bytes>);

impl PieceSink for ChannelSink {
    async fn put(&mut self, piece: Bytes) -> Result<(), SdkError> {
        self.0.send(piece).await.map_err(|_| SdkError::ReaderGone)
    }
}

pub(crate) enum FetchError {
    /// The bytes came back wrong: reported to meta as corruption.
    Corrupt(String),
    /// The node or the path to it failed: other requests skip it for a while.
    Unreachable(String),
    /// The node answered but could not serve the fragment.
    Failed(String),
}

impl Client {
    /// Writes the object (or `range` of it) to `out`. Every byte written has
    /// been checked against its BLAKE3; if a chunk cannot be read correctly
    /// the call fails rather than write wrong bytes.
    pub async fn get<W: AsyncWrite + Unpin + Send>(
        &self,
        bucket: &str,
        key: &str,
        range: Option<Range<u64>>,
        out: &mut W,
    ) -> Result<ObjectInfo, SdkError> {
        let (info, records) = self
            .head_with_chunks(bucket, key, RECORDS_WITH_OBJECT)
            .await?;
        self.write_object(&info, records, range, out).await?;
        Ok(info)
    }

    /// Reads an object whose metadata the caller already has.
    pub async fn read_object<W: AsyncWrite + Unpin + Send>(
        &self,
        info: &ObjectInfo,
        range: Option<Range<u64>>,
        out: &mut W,
    ) -> Result<(), SdkError> {
        self.write_object(info, Vec::new(), range, out).await
    }

    /// [`Client::read_object`] with the chunk records at hand (`known`, as
    /// `read_object_into` takes them), flushed at the end.
    async fn write_object<W: AsyncWrite + Unpin + Send>(
        &self,
        info: &ObjectInfo,
        known: Vec<ChunkRecord>,
        range: Option<Range<u64>>,
        out: &mut W,
    ) -> Result<(), SdkError> {
        self.read_object_into(info, known, range, &mut WriterSink(out))
            .await?;
        out.flush().await?;
        Ok(())
    }

    /// Reads an object (or `range` of it) into `out` as a sequence of
    /// verified pieces (the chunks' slices, not copied): a server streams
    /// them into a response body without copying them again. The call
    /// ends with an error if a chunk cannot be read correctly, or with
    /// `SdkError::ReaderGone` when `out`'s receiver is dropped; the pieces
    /// sent so far are then all that was read.
    pub async fn read_object_to(
        &self,
        info: &ObjectInfo,
        range: Option<Range<u64>>,
        out: tokio::sync::mpsc::Sender<Bytes>,
    ) -> Result<(), SdkError> {
        self.read_object_into(info, Vec::new(), range, &mut ChannelSink(out))
            .await
    }

    /// [`Client::read_object_to`] with chunk records the caller already
    /// has (from [`Client::head_with_chunks`], read with `info`): meta is
    /// asked only for the records of chunks not among them. A record
    /// counts only for the chunk id it names, so records of another
    /// object cost nothing but their memory.
    pub async fn read_object_with_records_to(
        &self,
        info: &ObjectInfo,
        records: Vec<ChunkRecord>,
        range: Option<Range<u64>>,
        out: tokio::sync::mpsc::Sender<Bytes>,
    ) -> Result<(), SdkError> {
        self.read_object_into(info, records, range, &mut ChannelSink(out))
            .await
    }

    async fn read_object_into<S: PieceSink>(
        &self,
        info: &ObjectInfo,
        known: Vec<ChunkRecord>,
        range: Option<Range<u64>>,
        out: &mut S,
    ) -> Result<(), SdkError> {
        let range = range.unwrap_or(0..info.size);
        if range.start > range.end || range.end > info.size {
            return Err(SdkError::InvalidRange {
                start: range.start,
                end: range.end,
                size: info.size,
            });
        }
        match &info.data {
            ObjectData::Inline(bytes) => {
                out.put(Bytes::copy_from_slice(
                    &bytes[range.start as usize..range.end as usize],
                ))
                .await?;
            }
            ObjectData::Chunks(refs) => {
                // (chunk, slice of it that the range covers)
                let mut wanted: Vec<(ChunkRef, Range<usize>)> = Vec::new();
                let mut offset = 0u64;
                for r in refs {
                    let (start, end) = (offset, offset + r.len);
                    offset = end;
                    if end <= range.start || start >= range.end {
                        continue;
                    }
                    let from = range.start.max(start) - start;
                    let to = range.end.min(end) - start;
                    wanted.push((*r, from as usize..to as usize));
                }
                let mut known: HashMap<ChunkId, ChunkRecord> =
                    known.into_iter().map(|r| (r.id, r)).collect();
                for batch in wanted.chunks(RECORD_BATCH) {
                    let ids: Vec<ChunkId> = batch.iter().map(|(r, _)| r.id).collect();
                    let records = self.records_of(&ids, &mut known).await?;
                    // Owned jobs and a named async fn keep this future Send for
                    // callers that spawn it (closures over borrows do not).
                    let jobs: Vec<(ChunkRecord, Range<usize>)> = records
                        .into_iter()
                        .zip(batch.iter().map(|(_, slice)| slice.clone()))
                        .collect();
                    // Each chunk is read by a task of its own, so a read
                    // that holds a budget permit makes progress while this
                    // one waits for its consumer. Polled from here, a read
                    // granted a permit (tokio's semaphore hands permits to
                    // waiters in turn, polled or not) sat on it for as long
                    // as a slow HTTP client took, and other GETs starved
                    // for seconds.
                    let mut chunks = futures::stream::iter(jobs)
                        .map(|(record, slice)| {
                            let client = self.clone();
                            AbortOnDrop(tokio::spawn(crate::carry_request_id(async move {
                                client.read_slice(record, slice).await
                            })))
                        })
                        .buffered(self.inner.options.parallel_chunks);
                    while let Some(chunk) = chunks.next().await {
                        let (pieces, slice) = chunk
                            .map_err(|e| SdkError::Invalid(format!("chunk reader task: {e}")))??;
                        let mut at = 0;
                        for piece in pieces {
                            let (start, end) = (at, at + piece.len());
                            at = end;
                            let (from, to) = (slice.start.max(start), slice.end.min(end));
                            if from < to {
                                out.put(piece.slice(from - start..to - start)).await?;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The records of chunks `ids`, in their order: those in `known`, and
    /// the rest from meta in one request. Errors: meta's, and `Protocol`
    /// when meta answers with the wrong records.
    async fn records_of(
        &self,
        ids: &[ChunkId],
        known: &mut HashMap<ChunkId, ChunkRecord>,
    ) -> Result<Vec<ChunkRecord>, SdkError> {
        let missing: Vec<ChunkId> = ids
            .iter()
            .filter(|id| !known.contains_key(id))
            .copied()
            .collect();
        if !missing.is_empty() {
            match self
                .meta(MetaQuery::GetChunks {
                    ids: missing.clone(),
                })
                .await?
            {
                MetaResponse::Chunks(c)
                    if c.len() == missing.len()
                        && c.iter().zip(&missing).all(|(r, id)| r.id == *id) =>
                {
                    known.extend(c.into_iter().map(|r| (r.id, r)));
                }
                other => return Err(self.unexpected(other)),
            }
        }
        ids.iter()
            .map(|id| {
                known.get(id).cloned().ok_or_else(|| SdkError::Protocol {
                    peer: "meta".into(),
                    what: format!("no record of chunk {id}"),
                })
            })
            .collect()
    }

    async fn read_slice(
        &self,
        record: ChunkRecord,
        slice: Range<usize>,
    ) -> Result<(Vec<Bytes>, Range<usize>), SdkError> {
        // The read budget covers fetching and decoding, not the wait for
        // the consumer: a reader that never reads (a stalled HTTP client)
        // must not hold permits that every other read needs. Chunks
        // waiting for their consumer are bounded per read by
        // `parallel_chunks`.
        let _permit = self
            .inner
            .read_budget
            .acquire()
            .await
            .map_err(|_| SdkError::Invalid("read budget closed".into()))?;
        Ok((self.read_chunk_pieces(&record, &[]).await?, slice))
    }

    /// The chunk records of an object, in order: where every fragment lives.
    pub async fn chunk_records(&self, info: &ObjectInfo) -> Result<Vec<ChunkRecord>, SdkError> {
        let ObjectData::Chunks(refs) = &info.data else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(refs.len());
        for batch in refs.chunks(RECORD_BATCH) {
            let ids: Vec<ChunkId> = batch.iter().map(|r| r.id).collect();
            out.extend(self.records_of(&ids, &mut HashMap::new()).await?);
        }
        Ok(out)
    }

    /// Reads one whole chunk: the data fragments first (no decoding needed),
    /// and for each one that fails, the next fragment in line.
    pub async fn read_chunk(&self, record: &ChunkRecord) -> Result<Vec<u8>, SdkError> {
        self.read_chunk_avoiding(record, &[]).await
    }

    /// Reads a chunk without asking for the fragments in `avoid` (known lost
    /// or rotten): what repair decodes from.
    pub async fn read_chunk_avoiding(
        &self,
        record: &ChunkRecord,
        avoid: &[usize],
    ) -> Result<Vec<u8>, SdkError> {
        let mut pieces = self.read_chunk_pieces(record, avoid).await?;
        if pieces.len() == 1 {
            // The decoder's own buffer: no copy.
            return Ok(Vec::from(pieces.remove(0)));
        }
        Ok(pieces.concat())
    }

    /// A chunk as pieces that concatenate to it (`ChunkCodec::decode`): its
    /// verified data fragments as they arrived when all are at hand, else
    /// the one buffer decoded from parity, off the async threads.
    async fn read_chunk_pieces(
        &self,
        record: &ChunkRecord,
        avoid: &[usize],
    ) -> Result<Vec<Bytes>, SdkError> {
        let fragments = self.read_fragments_avoiding(record, avoid).await?;
        let (policy, len) = (record.policy, record.len as usize);
        let hashes: Vec<tessera_types::Hash> = record.fragments.iter().map(|f| f.hash).collect();
        let codec = self.inner.codec.clone();
        if !tessera_codec::must_reconstruct(policy, &fragments) {
            return Ok(codec.decode(policy, len, &hashes, fragments)?);
        }
        let pieces =
            tokio::task::spawn_blocking(move || codec.decode(policy, len, &hashes, fragments))
                .await
                .map_err(|e| SdkError::Invalid(format!("decoder task: {e}")))??;
        Ok(pieces)
    }

    /// Enough fragments of a chunk to decode it (the policy's `required()`,
    /// data fragments first), each checked against its recorded BLAKE3,
    /// never reading the indices in `avoid`: slot `i` holds fragment `i`
    /// or `None`. Repair computes lost fragments from these directly.
    /// Errors: `Unavailable` when too few could be read.
    pub async fn read_fragments_avoiding(
        &self,
        record: &ChunkRecord,
        avoid: &[usize],
    ) -> Result<Vec<Option<Vec<u8>>>, SdkError> {
        let n = record.fragments.len();
        let needed = record.policy.required();
        let node_ids: Vec<NodeId> = record.fragments.iter().map(|f| f.node).collect();
        let nodes: HashMap<NodeId, NodeInfo> = self.node_addrs(&node_ids).await?;
        let mut order: Vec<usize> = (0..n).filter(|i| !avoid.contains(i)).collect();
        // Data fragments first, parity after; nodes meta reports down, and
        // nodes this client just failed to reach or is still waiting on, last.
        order.sort_by_cached_key(|&i| {
            let avoid = nodes.get(&record.fragments[i].node).is_none_or(|n| {
                n.state != NodeState::Up
                    || n.addr
                        .parse()
                        .is_ok_and(|addr| self.inner.pool.is_suspect(addr))
            });
            (avoid, i >= needed, i)
        });
        let mut order = order.into_iter().peekable();
        let mut fragments: Vec<Option<Vec<u8>>> = vec![None; n];
        let mut failures = Vec::new();
        let mut fetches = FuturesUnordered::new();
        for i in order.by_ref().take(needed) {
            fetches.push(self.fetch(record, i, &nodes));
        }
        // A fragment that is slow (a dead node costs a whole connect timeout)
        // should not hold the chunk up while parity is at hand: after each
        // quiet spell, one more fragment is asked for; the first K win.
        let hedge = tokio::time::sleep(HEDGE_AFTER);
        tokio::pin!(hedge);
        let mut got = 0;
        while got < needed {
            tokio::select! {
                next = fetches.next() => {
                    let Some((i, result)) = next else { break };
                    // Progress: the quiet spell starts again.
                    hedge.as_mut().reset(tokio::time::Instant::now() + HEDGE_AFTER);
                    match result {
                        Ok(bytes) => {
                            fragments[i] = Some(bytes);
                            got += 1;
                        }
                        Err(e) => {
                            failures.push(self.fetch_failed(record, i, e));
                            if let Some(next) = order.next() {
                                fetches.push(self.fetch(record, next, &nodes));
                            }
                        }
                    }
                }
                () = &mut hedge, if order.peek().is_some() => {
                    // Every fetch still out may be stuck: back each one up.
                    for next in order.by_ref().take(fetches.len()) {
                        fetches.push(self.fetch(record, next, &nodes));
                    }
                    hedge.as_mut().reset(tokio::time::Instant::now() + HEDGE_AFTER);
                }
            }
        }
        drop(fetches);
        if got < needed {
            return Err(SdkError::Unavailable {
                chunk: record.id.to_string(),
                needed,
                got,
                failures: failures.join("; "),
            });
        }
        Ok(fragments)
    }

    /// Logs a failed fragment read (reporting corruption to meta) and says why.
    pub(crate) fn fetch_failed(&self, record: &ChunkRecord, i: usize, e: FetchError) -> String {
        let node = record.fragments[i].node;
        let why = match e {
            FetchError::Corrupt(why) => {
                warn!(chunk = %record.id, index = i, %node, %why, "corrupt fragment; reading another and reporting it");
                self.report_corrupt(record.id, i as u8, node, why.clone());
                why
            }
            FetchError::Unreachable(why) | FetchError::Failed(why) => {
                debug!(chunk = %record.id, index = i, %node, %why, "fragment unavailable; reading another");
                why
            }
        };
        format!("fragment {i} on node {node}: {why}")
    }

    fn report_corrupt(&self, chunk: ChunkId, index: u8, node: NodeId, reason: String) {
        let client = self.clone();
        tokio::spawn(async move {
            if let Err(e) = client
                .meta(Proposal::ReportCorrupt {
                    chunk,
                    index,
                    node,
                    reason,
                })
                .await
            {
                warn!(%chunk, index, error = %e, "could not report corrupt fragment to meta");
            }
        });
    }

    pub(crate) async fn fetch(
        &self,
        record: &ChunkRecord,
        index: usize,
        nodes: &HashMap<NodeId, NodeInfo>,
    ) -> (usize, Result<Vec<u8>, FetchError>) {
        let node = record.fragments[index].node;
        let Some(addr) = nodes
            .get(&node)
            .and_then(|n| n.addr.parse::<SocketAddr>().ok())
        else {
            return (
                index,
                Err(FetchError::Unreachable(format!(
                    "node {node} is not in the cluster map"
                ))),
            );
        };
        let result = match tokio::time::timeout(
            self.inner.options.fragment_timeout,
            self.get_fragment(addr, record, index),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(FetchError::Unreachable(format!(
                "no answer within {:?}",
                self.inner.options.fragment_timeout
            ))),
        };
        if let Err(FetchError::Unreachable(_)) = &result {
            self.inner.pool.mark_failed(addr);
        }
        (index, result)
    }

    async fn get_fragment(
        &self,
        addr: SocketAddr,
        record: &ChunkRecord,
        index: usize,
    ) -> Result<Vec<u8>, FetchError> {
        let net = |e: NetError| FetchError::Unreachable(e.to_string());
        let conn = self.inner.pool.get(addr).await.map_err(net)?;
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| FetchError::Unreachable(e.to_string()))?;
        let req = NodeRequest::GetFragment {
            chunk: record.id,
            index: index as u8,
            request: crate::current_request_id(),
        };
        write_frame(&mut send, FrameKind::Request, &req)
            .await
            .map_err(net)?;
        let _ = send.finish();
        let len = match read_frame::<NodeResponse>(&mut recv, FrameKind::Response)
            .await
            .map_err(net)?
        {
            NodeResponse::Fragment { len, .. } => len,
            NodeResponse::Error(e) if e.code == tessera_proto::ErrorCode::NotFound => {
                return Err(FetchError::Corrupt(format!(
                    "missing on its node: {}",
                    e.message
                )));
            }
            NodeResponse::Error(e) if e.code == tessera_proto::ErrorCode::Corrupt => {
                return Err(FetchError::Corrupt(e.message));
            }
            other => return Err(FetchError::Failed(format!("node answered {other:?}"))),
        };
        if len != record.fragment_len {
            return Err(FetchError::Corrupt(format!(
                "{len} bytes on disk, {} expected",
                record.fragment_len
            )));
        }
        let body = read_body(&mut recv, len as usize).await.map_err(net)?;
        // Checked against the hash meta recorded at write time, not the one
        // the node keeps: a fragment rewritten wrongly on disk is still caught.
        if blake3::hash(&body).as_bytes() != &record.fragments[index].hash {
            return Err(FetchError::Corrupt("BLAKE3 mismatch".into()));
        }
        Ok(body)
    }
}
