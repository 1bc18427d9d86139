//! Rename in meta (the ground the FUSE mount of issue 6 builds on): a
//! prefix of 3,000 objects moves in one command while another client lists
//! it, and every listing shows all of the old names or all of the new
//! ones; chunked objects move without a byte of data copied; `tessera mv`
//! renames one object and refuses to overwrite unless asked.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::Cluster;
use futures::StreamExt;
use tessera_sdk::{Client, ClusterConfig, ErrorCode, ListOptions, PutOptions};

const FILES: usize = 3_000;

async fn count(client: &Client, prefix: &str) -> usize {
    let opts = ListOptions {
        prefix: prefix.to_string(),
        max_keys: 10_000,
        ..Default::default()
    };
    client.list("tree", &opts).await.unwrap().entries.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_moves_at_once_and_copies_nothing() {
    let c = Cluster::start(6);
    let client = Client::connect(&ClusterConfig::load(&c.cluster_file).unwrap())
        .await
        .unwrap();
    client.create_bucket("tree", None).await.unwrap();
    let mut puts = futures::stream::iter(0..FILES)
        .map(|i| {
            let client = client.clone();
            async move {
                let key = format!("old/{:02}/{i:05}", i % 37);
                client
                    .put("tree", &key, key.as_bytes(), PutOptions::default())
                    .await
            }
        })
        .buffer_unordered(16);
    while let Some(r) = puts.next().await {
        r.unwrap();
    }
    // Two chunked objects among them: 9 MiB and 5 MiB.
    let big: Vec<u8> = (0..9 << 20).map(|i: u32| (i % 251) as u8).collect();
    client
        .put("tree", "old/big", &big[..], PutOptions::default())
        .await
        .unwrap();
    client
        .put("tree", "old/big2", &big[..5 << 20], PutOptions::default())
        .await
        .unwrap();
    let on_disk_before: u64 = (0..6).map(|i| c.fragment_bytes(i)).sum();

    // A lister runs while the rename happens: each listing is one meta
    // read, and must see the whole tree at one place or the other.
    let stop = Arc::new(AtomicBool::new(false));
    let lister = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let opts = ListOptions {
                    max_keys: 10_000,
                    ..Default::default()
                };
                let listing = client.list("tree", &opts).await.unwrap();
                let old = listing
                    .entries
                    .iter()
                    .filter(|e| matches!(e, tessera_sdk::ListEntry::Object { key, .. } if key.starts_with("old/")))
                    .count();
                seen.push((old, listing.entries.len() - old));
            }
            seen
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let moved = client.rename("tree", "old/", "new/", false).await.unwrap();
    assert_eq!(moved, FILES as u64 + 2);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let seen = lister.await.unwrap();
    let total = FILES + 2;
    assert!(seen.contains(&(total, 0)), "no listing before");
    assert!(seen.contains(&(0, total)), "no listing after");
    for s in &seen {
        assert!(
            *s == (total, 0) || *s == (0, total),
            "a half-moved tree: {s:?}"
        );
    }

    assert_eq!(count(&client, "old/").await, 0);
    assert_eq!(count(&client, "new/").await, total);
    let mut out = Vec::new();
    client.get("tree", "new/big", None, &mut out).await.unwrap();
    assert!(out == big, "moved object reads back");
    let mut small = Vec::new();
    client
        .get("tree", "new/12/00123", None, &mut small)
        .await
        .unwrap();
    assert_eq!(small, b"old/12/00123");
    let on_disk_after: u64 = (0..6).map(|i| c.fragment_bytes(i)).sum();
    assert_eq!(on_disk_after, on_disk_before, "a rename copies no data");

    // Refusals: onto a non-empty prefix, into itself.
    let e = client
        .rename("tree", "new/", "new/x/", false)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::BadRequest));
    client
        .put("tree", "other/x", &b"x"[..], PutOptions::default())
        .await
        .unwrap();
    let e = client
        .rename("tree", "new/", "other/", false)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotEmpty));

    // The CLI: one object, no overwrite unless asked.
    let out = c.tessera(&["mv", "tree/new/big2", "renamed"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("(1 object)"));
    let out = c.tessera(&["mv", "tree/renamed", "other/x"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exists"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = c.tessera(&["mv", "tree/renamed", "other/x", "--replace"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut got = Vec::new();
    client.get("tree", "other/x", None, &mut got).await.unwrap();
    assert!(got == big[..5 << 20]);
}
