use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tessera_codec::ChunkCodec;
use tessera_meta_client::MetaClient;
use tessera_net::{ConnectionPool, Endpoint, Identity};
use tessera_proto::{
    BucketInfo, ChunkRecord, ClusterMap, ClusterStatus, ErrorCode, Listing, MetaQuery, MetaRequest,
    MetaResponse, NodeInfo, ObjectHeaders, ObjectInfo, Proposal, RemoteError, WriteCondition,
};
use tessera_types::{NodeId, Policy};

use crate::{ClusterConfig, SdkError};

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Bytes per chunk for new objects.
    pub chunk_size: usize,
    /// Chunks written or read at the same time by one put or get.
    pub parallel_chunks: usize,
    /// A fragment transfer slower than this counts as failed, and another
    /// fragment is fetched instead.
    pub fragment_timeout: Duration,
    /// How long a fetched cluster map is used before asking meta again.
    pub map_ttl: Duration,
    /// Chunks this client encodes and stores at once for all its writes
    /// together, and fetches and decodes at once for all its reads: what
    /// bounds a gateway's working memory however many requests it serves
    /// (a chunk being written costs about 2.5 chunk sizes with its
    /// fragments, one being read about 2). Requests beyond it wait their
    /// turn. Not counted: per request, the chunk being read in from its
    /// source and up to `parallel_chunks` decoded chunks waiting for a slow
    /// consumer.
    pub chunks_in_flight: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            chunk_size: tessera_codec::DEFAULT_CHUNK_SIZE,
            parallel_chunks: 4,
            fragment_timeout: Duration::from_secs(10),
            map_ttl: Duration::from_secs(5),
            chunks_in_flight: 24,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    pub content_type: Option<String>,
    pub user_meta: BTreeMap<String, String>,
    pub headers: ObjectHeaders,
    /// Runs once the whole body has been read and before anything is
    /// committed: an error refuses the write; checksums it returns are
    /// stored with the object.
    pub body_check: Option<BodyCheck>,
    /// What the key must hold for the object to be stored, checked by meta
    /// with the commit (refused with `PreconditionFailed` or `NoSuchKey`).
    pub condition: WriteCondition,
    /// The MD5 the body must have; otherwise nothing is committed
    /// (`BadDigest`).
    pub content_md5: Option<[u8; 16]>,
    /// For a body that is not the content itself (an encrypted one, whose
    /// `headers.encryption` says so): what the content was, asked once the
    /// whole body has been read and before the commit.
    pub content: Option<ContentOf>,
}

/// The content a body carried, when the bytes stored are not the content
/// (S3 server-side encryption): its size in bytes and its ETag, known
/// after the body's last byte; an error refuses the write (nothing is
/// committed).
#[derive(Clone)]
pub struct ContentOf(pub Arc<dyn Fn() -> Result<(u64, String), SdkError> + Send + Sync>);

impl std::fmt::Debug for ContentOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContentOf")
    }
}

/// A check of a body that can only be made after its last byte (trailing
/// checksums, for example).
#[derive(Clone)]
pub struct BodyCheck(pub Arc<dyn Fn() -> Result<BTreeMap<String, String>, SdkError> + Send + Sync>);

impl std::fmt::Debug for BodyCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BodyCheck")
    }
}

#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub prefix: String,
    pub delimiter: Option<String>,
    pub start_after: Option<String>,
    /// 0 means the server's default page (1000).
    pub max_keys: u32,
}

/// A connection to a Tessera cluster. Cheap to clone; clones share
/// connections and the cached cluster map.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// Meta is retried after one second, not ten: nothing works without
    /// it, so long-lived clients (gateways, the repairer) must be back as
    /// soon as it is.
    pub(crate) meta: MetaClient,
    pub(crate) pool: ConnectionPool,
    pub(crate) codec: ChunkCodec,
    pub(crate) options: ClientOptions,
    map: Mutex<Option<(Instant, Arc<ClusterMap>)>>,
    /// Permits for chunks in flight, one budget for writes and one for
    /// reads: separate, so a copy (a read feeding a write through a pipe)
    /// can never hold all of one kind while it waits for the other.
    pub(crate) write_budget: Arc<tokio::sync::Semaphore>,
    pub(crate) read_budget: Arc<tokio::sync::Semaphore>,
}

impl Client {
    pub async fn connect(config: &ClusterConfig) -> Result<Self, SdkError> {
        Self::connect_group(
            config.meta_addrs()?,
            &config.identity()?,
            ClientOptions::default(),
        )
        .await
    }

    /// A client of the meta at `meta` alone.
    pub async fn connect_with(
        meta: SocketAddr,
        identity: &Identity,
        options: ClientOptions,
    ) -> Result<Self, SdkError> {
        Self::connect_group(vec![meta], identity, options).await
    }

    /// A client of the meta group whose replicas are at `meta` (it finds
    /// the leader itself). Errors: `Invalid` options; meta's, when no
    /// replica answers with the cluster map.
    pub async fn connect_group(
        meta: Vec<SocketAddr>,
        identity: &Identity,
        options: ClientOptions,
    ) -> Result<Self, SdkError> {
        if options.chunks_in_flight < options.parallel_chunks.max(1) {
            return Err(SdkError::Invalid(format!(
                "chunks_in_flight ({}) must be at least parallel_chunks ({})",
                options.chunks_in_flight, options.parallel_chunks
            )));
        }
        if options.chunk_size == 0 || options.chunk_size > tessera_codec::MAX_CHUNK_SIZE {
            return Err(SdkError::Invalid(format!(
                "chunk size must be between 1 and {} bytes",
                tessera_codec::MAX_CHUNK_SIZE
            )));
        }
        let endpoint = Endpoint::client(identity)?;
        let pool = ConnectionPool::new(endpoint.clone());
        let client = Client {
            inner: Arc::new(Inner {
                meta: MetaClient::with_group(endpoint, meta, Duration::from_secs(1)),
                pool,
                codec: ChunkCodec::default(),
                write_budget: Arc::new(tokio::sync::Semaphore::new(options.chunks_in_flight)),
                read_budget: Arc::new(tokio::sync::Semaphore::new(options.chunks_in_flight)),
                options,
                map: Mutex::new(None),
            }),
        };
        // Fail here, with a clear reason, if meta cannot be reached or refuses us.
        client.cluster_map_fresh().await?;
        Ok(client)
    }

    /// One request to meta.
    pub(crate) async fn meta(&self, req: impl Into<MetaRequest>) -> Result<MetaResponse, SdkError> {
        self.inner.meta.call(req).await.map_err(SdkError::from)
    }

    /// The meta client this client uses (for the repairer and tools).
    pub fn meta_client(&self) -> &MetaClient {
        &self.inner.meta
    }

    pub(crate) fn unexpected(&self, resp: MetaResponse) -> SdkError {
        SdkError::Protocol {
            peer: "meta".into(),
            what: format!("{resp:?}"),
        }
    }

    /// The cluster map, fetched again when older than the TTL.
    pub async fn cluster_map(&self) -> Result<Arc<ClusterMap>, SdkError> {
        if let Some((at, map)) = self
            .inner
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            && at.elapsed() < self.inner.options.map_ttl
        {
            return Ok(map.clone());
        }
        self.cluster_map_fresh().await
    }

    pub async fn cluster_map_fresh(&self) -> Result<Arc<ClusterMap>, SdkError> {
        match self.meta(MetaQuery::ClusterMap).await? {
            MetaResponse::ClusterMap(m) => {
                let m = Arc::new(m);
                *self.inner.map.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((Instant::now(), m.clone()));
                Ok(m)
            }
            other => Err(self.unexpected(other)),
        }
    }

    pub(crate) async fn node_addrs(
        &self,
        ids: &[NodeId],
    ) -> Result<HashMap<NodeId, NodeInfo>, SdkError> {
        let mut map = self.cluster_map().await?;
        if ids.iter().any(|id| !map.nodes.iter().any(|n| n.id == *id)) {
            map = self.cluster_map_fresh().await?;
        }
        Ok(map
            .nodes
            .iter()
            .filter(|n| ids.contains(&n.id))
            .map(|n| (n.id, n.clone()))
            .collect())
    }

    /// What waits for garbage collection (deleted or replaced data).
    pub async fn garbage(&self) -> Result<tessera_proto::GarbageSummary, SdkError> {
        match self.meta(MetaQuery::Garbage).await? {
            MetaResponse::Garbage(g) => Ok(g),
            other => Err(self.unexpected(other)),
        }
    }

    pub async fn status(&self) -> Result<ClusterStatus, SdkError> {
        match self.meta(MetaQuery::Status).await? {
            MetaResponse::Status(s) => Ok(s),
            other => Err(self.unexpected(other)),
        }
    }

    pub async fn create_bucket(
        &self,
        name: &str,
        policy: Option<Policy>,
    ) -> Result<BucketInfo, SdkError> {
        match self
            .meta(Proposal::CreateBucket {
                name: name.to_string(),
                policy,
            })
            .await?
        {
            MetaResponse::Bucket(b) => Ok(b),
            other => Err(self.unexpected(other)),
        }
    }

    /// Deletes an empty bucket.
    pub async fn delete_bucket(&self, name: &str) -> Result<(), SdkError> {
        self.meta(Proposal::DeleteBucket {
            name: name.to_string(),
        })
        .await
        .map(|_| ())
    }

    pub async fn bucket(&self, name: &str) -> Result<BucketInfo, SdkError> {
        match self
            .meta(MetaQuery::GetBucket {
                name: name.to_string(),
            })
            .await?
        {
            MetaResponse::Bucket(b) => Ok(b),
            other => Err(self.unexpected(other)),
        }
    }

    pub async fn list_buckets(&self) -> Result<Vec<BucketInfo>, SdkError> {
        match self.meta(MetaQuery::ListBuckets).await? {
            MetaResponse::Buckets(b) => Ok(b),
            other => Err(self.unexpected(other)),
        }
    }

    /// Every bucket's usage (objects, versions, logical bytes), in name
    /// order.
    pub async fn bucket_usage(
        &self,
    ) -> Result<Vec<(String, tessera_proto::BucketUsage)>, SdkError> {
        match self.meta(MetaQuery::BucketUsage).await? {
            MetaResponse::BucketUsage(u) => Ok(u),
            other => Err(self.unexpected(other)),
        }
    }

    pub async fn head(&self, bucket: &str, key: &str) -> Result<ObjectInfo, SdkError> {
        match self
            .meta(MetaQuery::HeadObject {
                bucket: bucket.to_string(),
                key: key.to_string(),
            })
            .await?
        {
            MetaResponse::Object(o) => Ok(o),
            other => Err(self.unexpected(other)),
        }
    }

    /// The object `bucket`/`key` with the records of its first chunks (at
    /// most `max_chunks`, capped at `tessera_proto::MAX_CHUNKS_WITH_OBJECT`),
    /// in the object's order, from one meta round trip: hand both to
    /// [`Client::read_object_with_records_to`] (or let [`Client::get`] do
    /// it) and a read of a few chunks asks meta nothing more. Errors as
    /// [`Client::head`].
    pub async fn head_with_chunks(
        &self,
        bucket: &str,
        key: &str,
        max_chunks: u32,
    ) -> Result<(ObjectInfo, Vec<ChunkRecord>), SdkError> {
        match self
            .meta(MetaQuery::HeadObjectWithChunks {
                bucket: bucket.to_string(),
                key: key.to_string(),
                max_chunks,
            })
            .await?
        {
            MetaResponse::ObjectWithChunks { object, chunks } => Ok((object, chunks)),
            other => Err(self.unexpected(other)),
        }
    }

    /// Renames object `from` to `to` (replacing `to` only when `replace`),
    /// or, when both end in `/`, every object under prefix `from` to the
    /// same name under `to`, which must be empty. One meta command: atomic,
    /// and no data is copied. Returns how many objects moved.
    pub async fn rename(
        &self,
        bucket: &str,
        from: &str,
        to: &str,
        replace: bool,
    ) -> Result<u64, SdkError> {
        self.rename_keeping(bucket, from, to, replace, None).await
    }

    /// Deletes an object; `false` when there was none. In a bucket that
    /// keeps versions this places a delete marker (see `delete_object`).
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<bool, SdkError> {
        Ok(self.delete_object(bucket, key).await?.existed)
    }

    /// One page of a bucket listing; pass `next` back as `start_after`.
    pub async fn list(&self, bucket: &str, opts: &ListOptions) -> Result<Listing, SdkError> {
        let req = MetaQuery::ListObjects {
            bucket: bucket.to_string(),
            prefix: opts.prefix.clone(),
            delimiter: opts.delimiter.clone(),
            start_after: opts.start_after.clone(),
            max_keys: if opts.max_keys == 0 {
                1000
            } else {
                opts.max_keys
            },
        };
        match self.meta(req).await? {
            MetaResponse::Listing(l) => Ok(l),
            other => Err(self.unexpected(other)),
        }
    }

    pub(crate) fn remote(code: ErrorCode, msg: impl Into<String>) -> SdkError {
        SdkError::Remote(RemoteError::new(code, msg))
    }
}
