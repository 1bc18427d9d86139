//! The AWS SDK for Rust (`aws-sdk-s3`, with its default request and
//! response checksums) against the gateway: buckets, objects with system and
//! user metadata, checksums, ranges and part numbers, paginated listings,
//! multipart with UploadPartCopy, copies, batch deletes, presigned URLs, and
//! refusals; then `tessera bench` (which is built on the same SDK) runs a
//! short load and reports in JSON.

mod common;

use aws_sdk_s3::Client;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, CompletedMultipartUpload, CompletedPart, Delete,
    ObjectIdentifier,
};
use common::Cluster;

fn client(endpoint: &str, key: &str, secret: &str) -> Client {
    tessera_cli::s3_client(endpoint, "us-east-1", key, secret)
}

fn code<E, R>(e: &aws_sdk_s3::error::SdkError<E, R>) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata,
{
    e.as_service_error()
        .and_then(|s| s.code())
        .unwrap_or("not a service error")
        .to_string()
}

async fn body(out: aws_sdk_s3::operation::get_object::GetObjectOutput) -> Vec<u8> {
    out.body
        .collect()
        .await
        .expect("read the body")
        .into_bytes()
        .to_vec()
}

/// A GET over plain HTTP/1.0, as a browser or curl would fetch a presigned
/// URL; the body of a 200 answer.
fn plain_get(url: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut s = std::net::TcpStream::connect(authority).expect("connect");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header section");
    let head = String::from_utf8_lossy(&resp[..split]).into_owned();
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    resp[split + 4..].to_vec()
}

fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::Rng::fill(&mut rand::thread_rng(), &mut v[..]);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_sdk_for_rust_drives_the_gateway() {
    let mut c = Cluster::start(6);
    let endpoint = c.start_s3();
    let k = c.json(&["key", "create", "rust", "--json"]);
    let (key, secret) = (
        k["access_key"].as_str().unwrap().to_string(),
        k["secret_key"].as_str().unwrap().to_string(),
    );
    let s3 = client(&endpoint, &key, &secret);

    s3.create_bucket().bucket("rust").send().await.unwrap();
    let listed = s3.list_buckets().send().await.unwrap();
    assert!(listed.buckets().iter().any(|b| b.name() == Some("rust")));
    s3.head_bucket().bucket("rust").send().await.unwrap();

    // A PUT as the SDK sends it (CRC32 by default), with metadata.
    let data = random(3_000_123);
    let put = s3
        .put_object()
        .bucket("rust")
        .key("dir/a b+c.bin")
        .body(ByteStream::from(data.clone()))
        .content_type("application/x-rust")
        .content_disposition("inline")
        .cache_control("max-age=9")
        .metadata("colour", "blue")
        .send()
        .await
        .unwrap();
    let md5 = {
        use md5::{Digest, Md5};
        hex::encode(Md5::digest(&data))
    };
    assert_eq!(put.e_tag(), Some(format!("\"{md5}\"").as_str()));
    let got = s3
        .get_object()
        .bucket("rust")
        .key("dir/a b+c.bin")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert_eq!(got.content_type(), Some("application/x-rust"));
    assert_eq!(got.content_disposition(), Some("inline"));
    assert_eq!(got.cache_control(), Some("max-age=9"));
    assert_eq!(
        got.metadata()
            .and_then(|m| m.get("colour"))
            .map(String::as_str),
        Some("blue")
    );
    assert!(got.checksum_crc32().is_some(), "the CRC32 the SDK sent");
    // The SDK validates the body against the returned checksum as it reads.
    assert_eq!(body(got).await, data);

    // A GET of a chunked object costs one meta round trip: the object and
    // its chunk records come in the batch that looks up the access key.
    // It was two (the records after the object); the gateway's caches of
    // the cluster map (5 s) and the bucket's lifecycle (1 s) add a few
    // while the GETs run, far fewer than one per GET.
    let addr: std::net::SocketAddr = endpoint.trim_start_matches("http://").parse().unwrap();
    let trips = || {
        let (_, metrics) = common::http_get(addr, "/_tessera/metrics");
        common::metric(&metrics, "tessera_s3_meta_round_trips_total")
            .expect("the gateway reports its meta round trips")
    };
    let before = trips();
    for _ in 0..20 {
        let got = s3
            .get_object()
            .bucket("rust")
            .key("dir/a b+c.bin")
            .send()
            .await
            .unwrap();
        assert_eq!(body(got).await, data);
    }
    let per_get = (trips() - before) / 20.0;
    assert!(per_get < 2.0, "{per_get} meta round trips per GET");

    // SHA-256 on request; a range; a missing key.
    s3.put_object()
        .bucket("rust")
        .key("sha")
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap();
    let head = s3
        .head_object()
        .bucket("rust")
        .key("sha")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert!(head.checksum_sha256().is_some());
    let part = s3
        .get_object()
        .bucket("rust")
        .key("sha")
        .range("bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(body(part).await, &data[1000..2000]);
    let e = s3
        .get_object()
        .bucket("rust")
        .key("nope")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchKey");

    // Multipart: one uploaded part, one copied from a range of another object.
    let first = random(5 << 20);
    let up = s3
        .create_multipart_upload()
        .bucket("rust")
        .key("multi")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap().to_string();
    let p1 = s3
        .upload_part()
        .bucket("rust")
        .key("multi")
        .upload_id(&id)
        .part_number(1)
        .body(ByteStream::from(first.clone()))
        .send()
        .await
        .unwrap();
    let p2 = s3
        .upload_part_copy()
        .bucket("rust")
        .key("multi")
        .upload_id(&id)
        .part_number(2)
        .copy_source("rust/sha")
        .copy_source_range("bytes=0-99999")
        .send()
        .await
        .unwrap();
    let parts = s3
        .list_parts()
        .bucket("rust")
        .key("multi")
        .upload_id(&id)
        .send()
        .await
        .unwrap();
    assert_eq!(parts.parts().len(), 2);
    let done = s3
        .complete_multipart_upload()
        .bucket("rust")
        .key("multi")
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .parts(
                    CompletedPart::builder()
                        .part_number(1)
                        .e_tag(p1.e_tag().unwrap())
                        .set_checksum_crc32(p1.checksum_crc32().map(String::from))
                        .build(),
                )
                .parts(
                    CompletedPart::builder()
                        .part_number(2)
                        .e_tag(p2.copy_part_result().unwrap().e_tag().unwrap())
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(
        done.e_tag().unwrap().ends_with("-2\""),
        "{:?}",
        done.e_tag()
    );
    let whole = s3
        .get_object()
        .bucket("rust")
        .key("multi")
        .send()
        .await
        .unwrap();
    let mut expected = first.clone();
    expected.extend_from_slice(&data[..100_000]);
    assert_eq!(body(whole).await, expected);
    let second = s3
        .get_object()
        .bucket("rust")
        .key("multi")
        .part_number(2)
        .send()
        .await
        .unwrap();
    assert_eq!(second.parts_count(), Some(2));
    assert_eq!(body(second).await, &data[..100_000]);

    // Copy, listing pages, batch delete.
    s3.copy_object()
        .bucket("rust")
        .key("copy")
        .copy_source("rust/dir/a%20b%2Bc.bin")
        .send()
        .await
        .unwrap();
    let copied = s3
        .get_object()
        .bucket("rust")
        .key("copy")
        .send()
        .await
        .unwrap();
    assert_eq!(copied.cache_control(), Some("max-age=9"));
    assert_eq!(body(copied).await, data);
    for i in 0..25 {
        s3.put_object()
            .bucket("rust")
            .key(format!("many/{i:03}"))
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap();
    }
    let mut keys = Vec::new();
    let mut pages = s3
        .list_objects_v2()
        .bucket("rust")
        .prefix("many/")
        .max_keys(10)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        keys.extend(
            page.unwrap()
                .contents()
                .iter()
                .filter_map(|o| o.key().map(String::from)),
        );
    }
    assert_eq!(
        keys,
        (0..25).map(|i| format!("many/{i:03}")).collect::<Vec<_>>()
    );
    let delete = Delete::builder()
        .set_objects(Some(
            keys.iter()
                .map(|k| ObjectIdentifier::builder().key(k).build().unwrap())
                .collect(),
        ))
        .build()
        .unwrap();
    let deleted = s3
        .delete_objects()
        .bucket("rust")
        .delete(delete)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.deleted().len(), 25);

    // Presigned GET through plain HTTP.
    let presigned = s3
        .get_object()
        .bucket("rust")
        .key("sha")
        .presigned(PresigningConfig::expires_in(std::time::Duration::from_secs(60)).unwrap())
        .await
        .unwrap();
    let fetched = plain_get(presigned.uri());
    assert_eq!(fetched, data);

    // Refusals: a wrong secret, a key without a grant.
    let wrong = client(&endpoint, &key, "not-the-secret");
    let e = wrong
        .list_objects_v2()
        .bucket("rust")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "SignatureDoesNotMatch");
    let other = c.json(&["key", "create", "other", "--json"]);
    let stranger = client(
        &endpoint,
        other["access_key"].as_str().unwrap(),
        other["secret_key"].as_str().unwrap(),
    );
    let e = stranger
        .put_object()
        .bucket("rust")
        .key("dir/a b+c.bin")
        .body(ByteStream::from_static(b"overwrite"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    let still = s3
        .get_object()
        .bucket("rust")
        .key("dir/a b+c.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(body(still).await, data);

    // `tessera bench`: a short run of small objects, reported in JSON.
    let out = c.tessera(&[
        "bench",
        "--endpoint",
        &endpoint,
        "--access-key",
        &key,
        "--secret-key",
        &secret,
        "--bucket",
        "bench",
        "--size",
        "4KiB",
        "--concurrency",
        "4",
        "--duration",
        "2s",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "tessera bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bench JSON");
    let phases = report["phases"].as_array().expect("phases");
    assert_eq!(phases.len(), 2);
    for p in phases {
        assert!(p["ops"].as_u64().unwrap() > 0, "{p}");
        assert_eq!(p["errors"].as_u64(), Some(0), "{p}");
        assert!(p["p99_ms"].as_f64().unwrap() >= p["p50_ms"].as_f64().unwrap());
    }
    // The benchmark cleans up after itself.
    let left = s3.list_objects_v2().bucket("bench").send().await.unwrap();
    assert_eq!(left.key_count(), Some(0));
}
