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
