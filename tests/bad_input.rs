//! Bad input gets a clear error and changes nothing; the server keeps serving.

mod common;

use common::{Cluster, http_get, metric};
use tessera_net::{Connection, Endpoint, read_frame, write_frame};
use tessera_proto::{
    ChunkRecord, ErrorCode, FRAME_HEADER_LEN, FragmentRecord, FrameKind, MAGIC, MetaQuery,
    MetaRequest, MetaResponse, NewObject, NodeRequest, NodeResponse, PROTOCOL_VERSION, Proposal,
};
use tessera_sdk::ClusterConfig;
use tessera_types::{ChunkId, NodeId, Policy};

async fn connect(c: &Cluster, addr: std::net::SocketAddr) -> Connection {
    let cfg = ClusterConfig::load(&c.cluster_file).unwrap();
    let ep = Endpoint::client(&cfg.identity().unwrap()).unwrap();
    ep.connect(addr).await.unwrap()
}

/// Sends raw bytes on a fresh stream and returns the server's answer frame.
async fn raw<T: serde::de::DeserializeOwned>(conn: &Connection, bytes: &[u8]) -> T {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    send.finish().unwrap();
    read_frame(&mut recv, FrameKind::Response).await.unwrap()
}

fn header(kind: u8, len: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(FRAME_HEADER_LEN);
    h.extend_from_slice(&MAGIC);
    h.push(PROTOCOL_VERSION);
    h.push(kind);
    h.extend_from_slice(&len.to_be_bytes());
    h
}

fn bad_frames() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let mut truncated = header(1, 100);
    truncated.extend_from_slice(&[1; 10]);
    let mut wrong_version = header(1, 0);
    wrong_version[2] = 99;
    let mut garbage_payload = header(1, 6);
    garbage_payload.extend_from_slice(&[0xff; 6]);
    vec![
        ("garbage", b"GET / HTTP/1.1\r\n\r\n".to_vec(), "magic"),
        ("truncated header", vec![b'T', b'S', 1], "ended"),
        ("truncated payload", truncated, "ended"),
        ("oversize frame", header(1, u32::MAX), "exceeds"),
        ("wrong version", wrong_version, "version"),
        ("response as request", header(2, 0), "expected"),
        ("garbage payload", garbage_payload, "malformed"),
    ]
}

async fn put_fragment(
    conn: &Connection,
    chunk: ChunkId,
    len: u64,
    hash: [u8; 32],
    body: &[u8],
) -> NodeResponse {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    write_frame(
        &mut send,
        FrameKind::Request,
        &NodeRequest::PutFragment {
            chunk,
            index: 0,
            len,
            hash,
            request: None,
        },
    )
    .await
    .unwrap();
    send.write_all(body).await.unwrap();
    send.finish().unwrap();
    read_frame(&mut recv, FrameKind::Response).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_refuse_bad_frames_and_keep_serving() {
    let c = Cluster::start(1);
    let conn = connect(&c, c.node_addr(0)).await;
    for (what, bytes, expect) in bad_frames() {
        match raw::<NodeResponse>(&conn, &bytes).await {
            NodeResponse::Error(e) => {
                assert_eq!(e.code, ErrorCode::BadRequest, "{what}");
                assert!(
                    e.message.to_lowercase().contains(expect),
                    "{what}: {}",
                    e.message
                );
            }
            other => panic!("{what}: got {other:?}"),
        }
    }
    // Bodies that do not match their frame are refused and nothing is kept.
    let body = vec![7u8; 1000];
    let hash = *blake3::hash(&body).as_bytes();
    let chunk = ChunkId([1; 16]);
    let cases = [
        ("short body", 2000, hash, &body[..], "ended after 1000"),
        ("long body", 500, hash, &body[..], "longer"),
        ("wrong hash", 1000, [0u8; 32], &body[..], "blake3"),
        ("too large", 1 << 40, hash, &body[..], "exceeds"),
    ];
    for (what, len, hash, body, expect) in cases {
        match put_fragment(&conn, chunk, len, hash, body).await {
            NodeResponse::Error(e) => assert!(
                e.message.to_lowercase().contains(expect),
                "{what}: {}",
                e.message
            ),
            other => panic!("{what}: got {other:?}"),
        }
    }
    match tessera_net::call::<_, NodeResponse>(
        &conn,
        &NodeRequest::ListFragments {
            after: None,
            limit: 10,
        },
    )
    .await
    .unwrap()
    {
        NodeResponse::Fragments { items, .. } => {
            assert!(items.is_empty(), "refused puts left {items:?}")
        }
        other => panic!("{other:?}"),
    }
    // A stream opened and dropped without a word does no harm either.
    drop(conn.open_bi().await.unwrap());
    // Still serving, on this connection and on a new one.
    assert!(matches!(
        put_fragment(&conn, chunk, 1000, hash, &body).await,
        NodeResponse::Stored
    ));
    let (_, text) = http_get(c.metrics_addr(Some(0)), "/metrics");
    let sample = format!(
        "tessera_node_bad_requests_total{{node=\"{}\"}}",
        c.node_id(0)
    );
    // Every bad frame, and the stream dropped without a word, is counted.
    assert_eq!(
        metric(&text, &sample),
        Some(bad_frames().len() as f64 + 1.0),
        "{text}"
    );
    let conn2 = connect(&c, c.node_addr(0)).await;
    assert!(matches!(
        tessera_net::call::<_, NodeResponse>(&conn2, &NodeRequest::Ping)
            .await
            .unwrap(),
        NodeResponse::Pong { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_refuses_bad_frames_and_bad_commits() {
    let c = Cluster::start(1);
    let conn = connect(&c, c.meta_addr()).await;
    for (what, bytes, expect) in bad_frames() {
        match raw::<MetaResponse>(&conn, &bytes).await {
            MetaResponse::Error(e) => assert!(
                e.message.to_lowercase().contains(expect),
                "{what}: {}",
                e.message
            ),
            other => panic!("{what}: got {other:?}"),
        }
    }
    let call = |req: MetaRequest| {
        let conn = conn.clone();
        async move {
            tessera_net::call::<_, MetaResponse>(&conn, &req)
                .await
                .unwrap()
        }
    };
    assert!(matches!(
        call(MetaRequest::Propose(Proposal::CreateBucket {
            name: "data".into(),
            policy: None
        }))
        .await,
        MetaResponse::Bucket(_)
    ));
    // Commits that do not describe real, well-placed data are refused.
    let record = |node: NodeId, frags: usize| ChunkRecord {
        id: ChunkId([5; 16]),
        policy: Policy::erasure(4, 2).unwrap(),
        len: 100,
        fragment_len: 64,
        hash: [0; 32],
        fragments: (0..frags)
            .map(|_| FragmentRecord {
                node,
                hash: [0; 32],
            })
            .collect(),
    };
    let known: NodeId = c.node_id(0).parse().unwrap();
    let commit = |rec: ChunkRecord, size: u64| {
        MetaRequest::Propose(Proposal::CommitObject {
            bucket: "data".into(),
            key: "k".into(),
            write: None,
            condition: Default::default(),
            object: NewObject {
                size,
                ..NewObject::of_chunks(vec![rec])
            },
        })
    };

    let cases = [
        (
            "unknown node",
            commit(record(NodeId(12345), 6), 100),
            "unknown node",
        ),
        (
            "two fragments on one node",
            commit(record(known, 6), 100),
            "two fragments",
        ),
        (
            "too few fragments",
            commit(record(known, 2), 100),
            "needs 6",
        ),
        ("size mismatch", commit(record(known, 6), 999), "claims"),
    ];
    for (what, req, expect) in cases {
        match call(req).await {
            MetaResponse::Error(e) => assert!(e.message.contains(expect), "{what}: {}", e.message),
            other => panic!("{what}: got {other:?}"),
        }
    }
    match call(MetaRequest::Query(MetaQuery::ListObjects {
        bucket: "data".into(),
        prefix: String::new(),
        delimiter: None,
        start_after: None,
        max_keys: 10,
    }))
    .await
    {
        MetaResponse::Listing(l) => assert!(l.entries.is_empty(), "a refused commit left {l:?}"),
        other => panic!("{other:?}"),
    }
}

/// A batch of requests is answered request by request, in order, each
/// refusal in its own slot; an oversized or nested batch is refused. The
/// client sends concurrent proposals together and every caller still gets
/// its own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_answers_each_request_of_a_batch() {
    let c = Cluster::start(1);
    let conn = connect(&c, c.meta_addr()).await;
    let bucket = |name: &str| {
        MetaRequest::Propose(Proposal::CreateBucket {
            name: name.into(),
            policy: None,
        })
    };
    let batch = MetaRequest::Batch(vec![
        bucket("bkt-one"),
        bucket("bkt-one"),
        MetaRequest::Query(MetaQuery::ListBuckets),
    ]);
    let answers = match tessera_net::call::<_, MetaResponse>(&conn, &batch)
        .await
        .unwrap()
    {
        MetaResponse::Batch(a) => a,
        other => panic!("{other:?}"),
    };
    assert_eq!(answers.len(), 3, "{answers:?}");
    assert!(matches!(answers[0], MetaResponse::Bucket(_)), "{answers:?}");
    assert!(
        matches!(&answers[1], MetaResponse::Error(e) if e.code == ErrorCode::BucketExists),
        "{answers:?}"
    );
    // Handled concurrently: the listing may or may not see the new bucket.
    assert!(
        matches!(answers[2], MetaResponse::Buckets(_)),
        "{answers:?}"
    );
    // Batches do not nest: a batch inside one is a malformed frame, and
    // nothing of it is done.
    let nested = MetaRequest::Batch(vec![MetaRequest::Batch(vec![bucket("bkt-two")])]);
    match tessera_net::call::<_, MetaResponse>(&conn, &nested)
        .await
        .unwrap()
    {
        MetaResponse::Error(e) => {
            assert_eq!(e.code, ErrorCode::BadRequest);
            assert!(e.message.contains("bad request"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    match tessera_net::call::<_, MetaResponse>(&conn, &MetaRequest::Query(MetaQuery::ListBuckets))
        .await
        .unwrap()
    {
        MetaResponse::Buckets(b) => assert!(
            !b.iter().any(|b| b.name == "bkt-two"),
            "a refused batch made {b:?}"
        ),
        other => panic!("{other:?}"),
    }
    let too_many = MetaRequest::Batch(vec![MetaRequest::Query(MetaQuery::ListBuckets); 257]);
    match tessera_net::call::<_, MetaResponse>(&conn, &too_many)
        .await
        .unwrap()
    {
        MetaResponse::Error(e) => {
            assert_eq!(e.code, ErrorCode::BadRequest);
            assert!(e.message.contains("at most 256"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }

    // Through the client: many concurrent commits, some refused.
    let cfg = ClusterConfig::load(&c.cluster_file).unwrap();
    let client = tessera_meta_client::MetaClient::new(
        Endpoint::client(&cfg.identity().unwrap()).unwrap(),
        c.meta_addr(),
        std::time::Duration::from_secs(1),
    );
    let calls = (0..300).map(|i| {
        let client = client.clone();
        async move {
            let bucket = if i % 10 == 9 { "missing" } else { "bkt-one" };
            let r = client
                .call(Proposal::CommitObject {
                    bucket: bucket.into(),
                    key: format!("k{i:03}"),
                    object: NewObject::inline(format!("body {i}").as_bytes()),
                    write: None,
                    condition: Default::default(),
                })
                .await;
            (i, r)
        }
    });
    for (i, r) in futures::future::join_all(calls).await {
        match r {
            Ok(MetaResponse::Object(o)) => {
                assert!(i % 10 != 9, "{i}: committed to a missing bucket");
                assert_eq!(o.key, format!("k{i:03}"));
                assert_eq!(o.size, format!("body {i}").len() as u64);
            }
            Err(tessera_meta_client::MetaCallError::Refused(e)) => {
                assert!(i % 10 == 9, "{i}: refused {e:?}");
                assert_eq!(e.code, ErrorCode::NoSuchBucket);
            }
            other => panic!("{i}: {other:?}"),
        }
    }
    match client
        .call(MetaQuery::ListObjects {
            bucket: "bkt-one".into(),
            prefix: String::new(),
            delimiter: None,
            start_after: None,
            max_keys: 1000,
        })
        .await
    {
        Ok(MetaResponse::Listing(l)) => assert_eq!(l.entries.len(), 270),
        other => panic!("{other:?}"),
    }
    // A batch whose frame would be too large goes request by request.
    let big = vec![7u8; 600 << 10];
    let calls = (0..40).map(|i| {
        let (client, big) = (client.clone(), big.clone());
        async move {
            client
                .call(Proposal::CommitObject {
                    bucket: "bkt-one".into(),
                    key: format!("big{i}"),
                    object: NewObject::inline(&big),
                    write: None,
                    condition: Default::default(),
                })
                .await
        }
    });
    for r in futures::future::join_all(calls).await {
        match r {
            Ok(MetaResponse::Object(_)) => {}
            // Inline bodies have their own limit; what matters is that
            // each call gets meta's own answer, not a frame error.
            Err(tessera_meta_client::MetaCallError::Refused(e)) => {
                assert_eq!(e.code, ErrorCode::BadRequest, "{e:?}")
            }
            other => panic!("{other:?}"),
        }
    }
    // Small queries (what the S3 gateway asks for every request) go in
    // batches too, mixed with commits: each caller gets its own answer,
    // refusals included, and a read sees a commit acknowledged before it.
    let calls = (0..200).map(|i| {
        let client = client.clone();
        async move {
            let req: MetaRequest = match i % 5 {
                0 => MetaQuery::GetBucket {
                    name: "bkt-one".into(),
                }
                .into(),
                1 => MetaQuery::GetBucket {
                    name: "missing".into(),
                }
                .into(),
                2 => MetaQuery::ListGrants {
                    bucket: Some("bkt-one".into()),
                    key: Some("no-such-key".into()),
                }
                .into(),
                3 => MetaQuery::GetBucketAccess {
                    bucket: "bkt-one".into(),
                }
                .into(),
                _ => Proposal::CreateBucket {
                    name: format!("bkt-q{i:03}"),
                    policy: None,
                }
                .into(),
            };
            (i, client.call(req).await)
        }
    });
    for (i, r) in futures::future::join_all(calls).await {
        match (i % 5, r) {
            (0, Ok(MetaResponse::Bucket(b))) => assert_eq!(b.name, "bkt-one"),
            (1, Err(tessera_meta_client::MetaCallError::Refused(e))) => {
                assert_eq!(e.code, ErrorCode::NoSuchBucket, "{e:?}")
            }
            (2, Ok(MetaResponse::Grants(g))) => assert!(g.is_empty(), "{g:?}"),
            (3, Ok(MetaResponse::BucketAccess(_))) => {}
            (4, Ok(MetaResponse::Bucket(b))) => {
                let read = client
                    .call(MetaQuery::GetBucket {
                        name: b.name.clone(),
                    })
                    .await;
                assert!(matches!(read, Ok(MetaResponse::Bucket(_))), "{i}: {read:?}");
            }
            (_, other) => panic!("{i}: {other:?}"),
        }
    }
}

#[test]
fn cli_gives_clear_errors_for_bad_requests() {
    let c = Cluster::start(6);
    let src = c.path("f");
    std::fs::write(&src, b"hello").unwrap();
    let f = src.to_str().unwrap();
    let err = c.fails(&["put", f, "missing/key"]);
    assert!(err.contains("no such bucket"), "{err}");
    c.ok(&["bucket", "create", "data"]);
    let long_key = format!("data/{}", "k".repeat(1025));
    let err = c.fails(&["put", f, &long_key]);
    assert!(err.contains("longer than 1024"), "{err}");
    c.ok(&["put", f, &format!("data/{}", "k".repeat(1024))]);
    for bad in ["Bad_Name", "ab", "trail-", "192.168.0.1", "a..b"] {
        let err = c.fails(&["bucket", "create", bad]);
        assert!(err.contains("invalid bucket name"), "{bad}: {err}");
    }
    let err = c.fails(&["bucket", "create", "data"]);
    assert!(err.contains("already exists"), "{err}");
    let err = c.fails(&["bucket", "create", "other", "--policy", "ec:40+2"]);
    assert!(err.contains("invalid storage policy"), "{err}");
    let err = c.fails(&["get", "data/nope", c.path("out").to_str().unwrap()]);
    assert!(err.contains("no such key"), "{err}");
    let err = c.fails(&["bucket", "rm", "data"]);
    assert!(err.contains("not empty"), "{err}");
    // Keys are stored as given, not as paths.
    for key in ["../x", "a//b", "%2F", "ünï cødé key", "trailing/"] {
        c.ok(&["put", f, &format!("data/{key}")]);
        c.ok(&["stat", &format!("data/{key}")]);
    }
    let listing = c.ok(&["ls", "--recursive", "data"]);
    for key in ["../x", "a//b", "%2F", "ünï cødé key", "trailing/"] {
        assert!(listing.contains(key), "{key} missing from {listing}");
    }
}
