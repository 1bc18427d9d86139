//! The Rust SDK against a real multi-process cluster: the API users import.

mod common;

use std::collections::{BTreeMap, HashSet};

use common::Cluster;
use tessera_sdk::{Client, ClusterConfig, ErrorCode, ListEntry, ListOptions, PutOptions};

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn client(c: &Cluster) -> Client {
    Client::connect(&ClusterConfig::load(&c.cluster_file).unwrap())
        .await
        .unwrap()
}

/// A client with 1 MiB chunks and the smallest budgets: two chunks per
/// read or write, two in flight for all of them together.
async fn small_budget_client(c: &Cluster) -> Client {
    let cfg = ClusterConfig::load(&c.cluster_file).unwrap();
    let options = tessera_sdk::ClientOptions {
        chunk_size: 1 << 20,
        parallel_chunks: 2,
        chunks_in_flight: 2,
        ..Default::default()
    };
    Client::connect_with(cfg.meta_addr().unwrap(), &cfg.identity().unwrap(), options)
        .await
        .unwrap()
}

async fn get(
    client: &Client,
    bucket: &str,
    key: &str,
    range: Option<std::ops::Range<u64>>,
) -> Vec<u8> {
    let mut out = Vec::new();
    client.get(bucket, key, range, &mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_round_trip_with_ranges_metadata_and_listing() {
    let c = Cluster::start(6);
    let client = client(&c).await;
    client.create_bucket("sdk-test", None).await.unwrap();

    // Streams from any AsyncRead; metadata comes back as given.
    let body = data(13 * 1024 * 1024 + 5, 1);
    let mut meta = BTreeMap::new();
    meta.insert("owner".to_string(), "ada".to_string());
    let opts = PutOptions {
        content_type: Some("application/x-test".into()),
        user_meta: meta.clone(),
        ..Default::default()
    };
    let info = client
        .put("sdk-test", "dir/big", &body[..], opts)
        .await
        .unwrap();
    assert_eq!(info.size, body.len() as u64);
    let md5 = {
        use md5::Digest;
        hex::encode(md5::Md5::digest(&body))
    };
    assert_eq!(info.etag, md5, "etag is the MD5 of the content");
    let head = client.head("sdk-test", "dir/big").await.unwrap();
    assert_eq!(head.content_type.as_deref(), Some("application/x-test"));
    assert_eq!(head.user_meta, meta);
    assert_eq!(get(&client, "sdk-test", "dir/big", None).await, body);

    // The object comes with its first chunk records from one snapshot, so
    // a GET of a few chunks is one meta round trip (it was two: the
    // object, then its records); a cluster map refresh (every 5 s) may
    // add one now and then.
    let records = client.chunk_records(&head).await.unwrap();
    assert_eq!(records.len(), 4, "13 MiB in 4 MiB chunks");
    let (object, first) = client
        .head_with_chunks("sdk-test", "dir/big", 2)
        .await
        .unwrap();
    assert_eq!(object, head);
    assert_eq!(first, records[..2]);
    let (_, all) = client
        .head_with_chunks("sdk-test", "dir/big", u32::MAX)
        .await
        .unwrap();
    assert_eq!(all, records);
    let before = client.meta_client().round_trips();
    for _ in 0..5 {
        assert_eq!(get(&client, "sdk-test", "dir/big", None).await, body);
    }
    let trips = client.meta_client().round_trips() - before;
    assert!(trips < 10, "5 GETs took {trips} meta round trips");

    // Ranges: inside a chunk, across chunk boundaries, at the end, empty.
    let mib = 1u64 << 20;
    for r in [
        0..1,
        5..4096,
        4 * mib - 3..4 * mib + 3,
        3 * mib..9 * mib + 1,
        body.len() as u64 - 7..body.len() as u64,
        10..10,
    ] {
        let got = get(&client, "sdk-test", "dir/big", Some(r.clone())).await;
        assert_eq!(got, &body[r.start as usize..r.end as usize], "range {r:?}");
    }
    let mut sink = Vec::new();
    let err = client
        .get(
            "sdk-test",
            "dir/big",
            Some(0..body.len() as u64 + 1),
            &mut sink,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid range"), "{err}");

    // Overwrite replaces whole; the old version is gone.
    let small = data(3000, 9);
    client
        .put("sdk-test", "dir/big", &small[..], PutOptions::default())
        .await
        .unwrap();
    assert_eq!(get(&client, "sdk-test", "dir/big", None).await, small);
    let (_, none) = client
        .head_with_chunks("sdk-test", "dir/big", 16)
        .await
        .unwrap();
    assert!(none.is_empty(), "an inline object has no chunk records");
    let err = client
        .head_with_chunks("sdk-test", "dir/none", 16)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NoSuchKey));

    // Listing: many keys, pages, delimiter.
    for i in 0..25 {
        client
            .put(
                "sdk-test",
                &format!("many/{i:03}"),
                &b"x"[..],
                PutOptions::default(),
            )
            .await
            .unwrap();
    }
    client
        .put(
            "sdk-test",
            "many/sub/deep",
            &b"y"[..],
            PutOptions::default(),
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut opts = ListOptions {
        prefix: "many/".into(),
        delimiter: Some("/".into()),
        max_keys: 7,
        ..Default::default()
    };
    loop {
        let page = client.list("sdk-test", &opts).await.unwrap();
        assert!(page.entries.len() <= 7);
        seen.extend(page.entries.iter().map(|e| match e {
            ListEntry::Object { key, .. } => key.clone(),
            ListEntry::CommonPrefix(p) => p.clone(),
        }));
        match page.next {
            Some(n) => opts.start_after = Some(n),
            None => break,
        }
    }
    let mut want: Vec<String> = (0..25).map(|i| format!("many/{i:03}")).collect();
    want.push("many/sub/".into());
    assert_eq!(seen, want);

    // Delete: gone, and a second delete says so.
    assert!(client.delete("sdk-test", "many/000").await.unwrap());
    assert!(!client.delete("sdk-test", "many/000").await.unwrap());
    let err = client.head("sdk-test", "many/000").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NoSuchKey));
    assert_eq!(client.list_buckets().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_and_readers_see_whole_objects() {
    let c = Cluster::start(6);
    let client = client(&c).await;
    client
        .create_bucket("shared", Some("rep:3".parse().unwrap()))
        .await
        .unwrap();
    let versions: Vec<Vec<u8>> = (0..4)
        .map(|v| data(5 * 1024 * 1024 + v * 1000, v as u8))
        .collect();
    client
        .put("shared", "key", &versions[0][..], PutOptions::default())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for w in 0..4 {
        let (client, versions) = (client.clone(), versions.clone());
        tasks.push(tokio::spawn(async move {
            for round in 0..3 {
                let v = &versions[(w + round) % versions.len()];
                client
                    .put("shared", "key", &v[..], PutOptions::default())
                    .await
                    .unwrap();
                client
                    .put("shared", &format!("own-{w}"), &v[..], PutOptions::default())
                    .await
                    .unwrap();
                // Read-your-writes on a key only this writer touches.
                assert_eq!(&get(&client, "shared", &format!("own-{w}"), None).await, v);
                // On the contended key, any reader sees one whole version, never a mix.
                let seen = get(&client, "shared", "key", None).await;
                assert!(
                    versions.contains(&seen),
                    "a read returned a torn object of {} bytes",
                    seen.len()
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragments_spread_over_zones() {
    // Six nodes in three zones: the three fragments of ec:2+1 go one per zone.
    let c = Cluster::start_zoned(&["a", "a", "b", "b", "c", "c"]);
    let client = client(&c).await;
    client
        .create_bucket("zoned", Some("ec:2+1".parse().unwrap()))
        .await
        .unwrap();
    let body = data(10 * 1024 * 1024, 3);
    let info = client
        .put("zoned", "obj", &body[..], PutOptions::default())
        .await
        .unwrap();
    let zone_of = |id: &str| ["a", "a", "b", "b", "c", "c"][c.node_index(id)];
    for record in client.chunk_records(&info).await.unwrap() {
        let zones: HashSet<&str> = record
            .fragments
            .iter()
            .map(|f| zone_of(&f.node.to_string()))
            .collect();
        assert_eq!(
            zones.len(),
            3,
            "ec:2+1 over three zones: one fragment per zone"
        );
    }
    // Losing a whole zone loses one fragment per chunk: still readable.
    let mut c = c;
    c.kill_node(0);
    c.kill_node(1);
    assert_eq!(get(&client, "zoned", "obj", None).await, body);
}

/// Reads whose consumers stop reading (stalled HTTP clients) must not
/// hold the client-wide read budget: another read of the same client
/// still finishes. When a read's chunk reads were polled only by the
/// read itself, a permit released to a queued chunk read of a stalled
/// read (tokio's semaphore hands permits to waiters in turn, polled or
/// not) stayed with it until its consumer read again, and other reads
/// could wait for ever (the GETs the AWS SDK aborted as stalled in
/// issue 17). Chunk reads now run as tasks of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_does_not_starve_other_reads() {
    let c = Cluster::start(6);
    let client = small_budget_client(&c).await;
    client.create_bucket("stall", None).await.unwrap();
    let body = data(12 << 20, 9);
    for key in ["stalled", "other"] {
        client
            .put("stall", key, &body[..], PutOptions::default())
            .await
            .unwrap();
    }
    // Three reads into one-piece channels nobody reads: each blocks on
    // its second piece with chunks still to go.
    let info = client.head("stall", "stalled").await.unwrap();
    let mut stalled = Vec::new();
    let mut receivers = Vec::new();
    for _ in 0..3 {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        receivers.push(rx);
        let (client, info) = (client.clone(), info.clone());
        stalled.push(tokio::spawn(async move {
            client.read_object_to(&info, None, tx).await
        }));
    }
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let other = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        get(&client, "stall", "other", None).await
    })
    .await
    .expect("a read must not wait for another read's consumer");
    assert_eq!(other, body);
    for s in &stalled {
        assert!(!s.is_finished(), "a stalled read cannot have ended");
        s.abort();
    }
    drop(receivers);
}

/// The client-wide budgets for chunks in flight, at their smallest: many
/// puts, gets and copies (a read feeding a write through a pipe) at once
/// all finish, with the right bytes. One budget for both directions could
/// deadlock here: copies holding every read permit while their writes wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_transfers_share_a_small_budget_without_deadlock() {
    let c = Cluster::start(6);
    let client = small_budget_client(&c).await;
    client.create_bucket("budget", None).await.unwrap();
    let bodies: Vec<Vec<u8>> = (0..6)
        .map(|i| data((5 << 20) + i * 4099, i as u8))
        .collect();
    for (i, b) in bodies.iter().enumerate() {
        client
            .put("budget", &format!("src{i}"), &b[..], PutOptions::default())
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for (i, b) in bodies.iter().cloned().enumerate() {
        let client = client.clone();
        // A put, a get and a copy per object, all at once.
        tasks.push(tokio::spawn(async move {
            let (new, src_key, copy_key) =
                (format!("new{i}"), format!("src{i}"), format!("copy{i}"));
            let put = client.put("budget", &new, &b[..], PutOptions::default());
            let get = async {
                let mut out = Vec::new();
                client
                    .get("budget", &src_key, None, &mut out)
                    .await
                    .map(|_| out)
            };
            let copy = async {
                let src = client.head("budget", &src_key).await?;
                let (mut tx, rx) = tokio::io::duplex(64 * 1024);
                let read = async {
                    let r = client.read_object(&src, None, &mut tx).await;
                    drop(tx);
                    r
                };
                let write = client.put("budget", &copy_key, rx, PutOptions::default());
                let (r, w) = tokio::join!(read, write);
                r?;
                w
            };
            let (p, g, cp) = tokio::join!(put, get, copy);
            p.unwrap();
            assert_eq!(g.unwrap(), b);
            cp.unwrap();
        }));
    }
    tokio::time::timeout(std::time::Duration::from_secs(120), async {
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await
    .expect("transfers under a small budget must all finish");
    for (i, b) in bodies.iter().enumerate() {
        assert_eq!(&get(&client, "budget", &format!("new{i}"), None).await, b);
        assert_eq!(&get(&client, "budget", &format!("copy{i}"), None).await, b);
    }
}
