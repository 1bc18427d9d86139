//! Logs for collectors (issue 16): `--log-format json` (or
//! `TESSERA_LOG_FORMAT=json`) writes each log line as one JSON object, and
//! one S3 request can be followed by its id from the gateway's answer into
//! the nodes' logs.

mod common;

use std::time::Duration;

use aws_sdk_s3::operation::RequestId;
use aws_sdk_s3::primitives::ByteStream;
use common::{Cluster, wait_until};

#[test]
fn json_log_lines_are_json_objects() {
    let c = Cluster::start_with(1, &["--log-format", "json"]);
    c.ok(&["bucket", "create", "logged"]);
    let text = std::fs::read_to_string(c.dir.path().join("meta.log")).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 2, "meta logged {} lines", lines.len());
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        assert!(v["fields"]["message"].is_string(), "{line}");
    }
    assert!(lines.iter().any(|l| l.contains("meta listening")), "{text}");
}

/// The JSON log lines of `name`.log in the cluster's directory.
fn json_lines(c: &Cluster, name: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(c.path(&format!("{name}.log")))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The lines of the nodes' logs that carry request `id`, with what they
/// say (`fields.message`).
fn node_lines_of(c: &Cluster, id: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for i in 0..c.node_count {
        for v in json_lines(c, &format!("node-{i}")) {
            let spans = v["spans"].as_array().cloned().unwrap_or_default();
            if spans.iter().any(|s| s["request_id"].as_str() == Some(id)) {
                let said = v["fields"]["message"].as_str().unwrap_or("").to_string();
                out.push((i, said));
            }
        }
    }
    out
}

/// Issue 16: "every request carries an id that appears in the gateway's
/// log line, in the S3 error body and in node logs for the fragments it
/// touched".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_is_followed_from_the_gateway_into_the_nodes_logs() {
    let json = ["--log-format", "json"];
    // Nodes say what they did with each fragment at DEBUG.
    let mut c = Cluster::start_logging(3, &json, "info,quinn=warn,tessera_node=debug");
    let endpoint = c.start_s3_with(9000, &json);
    let k = c.json(&["key", "create", "tracer", "--json"]);
    let (key, secret) = (
        k["access_key"].as_str().unwrap().to_string(),
        k["secret_key"].as_str().unwrap().to_string(),
    );
    c.ok(&[
        "bucket", "create", "traced", "--policy", "ec:2+1", "--owner", &key,
    ]);
    let s3 = tessera_cli::s3_client(&endpoint, "us-east-1", &key, &secret);

    // Large enough to be stored as chunks on the nodes, not inline in meta.
    let body: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    let put = s3
        .put_object()
        .bucket("traced")
        .key("k")
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .expect("PUT");
    let put_id = put
        .request_id()
        .expect("x-amz-request-id on the PUT")
        .to_string();
    let get = s3
        .get_object()
        .bucket("traced")
        .key("k")
        .send()
        .await
        .expect("GET");
    let get_id = get
        .request_id()
        .expect("x-amz-request-id on the GET")
        .to_string();
    let got = get.body.collect().await.expect("GET body").into_bytes();
    assert_eq!(got.len(), body.len());
    assert_ne!(put_id, get_id, "two requests, one id");

    // The fragments the PUT wrote (three: ec:2+1) and the GET read (at
    // least the two data fragments) are logged with the request's id.
    let mut stored = Vec::new();
    let mut sent = Vec::new();
    wait_until(
        "node log lines of both requests",
        Duration::from_secs(20),
        || {
            stored = node_lines_of(&c, &put_id);
            sent = node_lines_of(&c, &get_id);
            stored
                .iter()
                .filter(|(_, m)| m == "fragment stored")
                .count()
                >= 3
                && sent.iter().filter(|(_, m)| m == "fragment sent").count() >= 2
        },
    );
    let nodes: std::collections::BTreeSet<usize> = stored.iter().map(|(i, _)| *i).collect();
    assert_eq!(
        nodes.len(),
        3,
        "the PUT's fragments went to three nodes: {stored:?}"
    );

    // A refusal: the id in the header, in the error body and on the
    // gateway's log line are one.
    let err = s3
        .get_object()
        .bucket("traced")
        .key("missing")
        .send()
        .await
        .expect_err("GET of a missing key");
    let raw = err.raw_response().expect("an HTTP answer");
    let header_id = raw
        .headers()
        .get("x-amz-request-id")
        .expect("x-amz-request-id on the refusal")
        .to_string();
    let text = String::from_utf8_lossy(raw.body().bytes().expect("a buffered error body"));
    assert!(
        text.contains(&format!("<RequestId>{header_id}</RequestId>")),
        "error body without the header's id {header_id}: {text}"
    );
    wait_until(
        "the gateway's line of the refusal",
        Duration::from_secs(10),
        || {
            json_lines(&c, "s3").iter().any(|v| {
                v["fields"]["request_id"].as_str() == Some(header_id.as_str())
                    && v["fields"]["code"].as_str() == Some("NoSuchKey")
            })
        },
    );
}
