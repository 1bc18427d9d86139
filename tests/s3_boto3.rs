//! boto3 (installed by tools/test) drives the gateway: checksum-trailer
//! uploads as boto3 sends them by default, presigned GET and PUT over plain
//! HTTP (and expired or tampered URLs refused), multipart through the
//! transfer manager, listing pages, copy and batch delete. The checks live
//! in tests/s3_boto3.py.

mod common;

use std::process::Command;

use common::Cluster;

#[test]
fn boto3_drives_the_gateway() {
    let mut c = Cluster::start(6);
    let endpoint = c.start_s3_with(9000, &["--domain", "s3.tessera.test"]);
    let regional = c.start_s3_with(9001, &["--region", "eu-test-1"]);
    let k = c.json(&["key", "create", "boto", "--json"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/s3_boto3.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&endpoint)
        .arg(k["access_key"].as_str().unwrap())
        .arg(k["secret_key"].as_str().unwrap())
        .args(["s3.tessera.test", &regional, "eu-test-1"])
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("python3 must be installed (tools/test installs boto3)");
    assert!(
        out.status.success(),
        "boto3 checks failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("all checks passed"));

    // Bucket versioning: tests/s3_versioning.py, on the same gateway.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/s3_versioning.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&endpoint)
        .arg(k["access_key"].as_str().unwrap())
        .arg(k["secret_key"].as_str().unwrap())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("python3 must be installed (tools/test installs boto3)");
    assert!(
        out.status.success(),
        "boto3 versioning checks failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("versioning: all checks passed"));

    // The run was refused many times (412, 404, 400, 403, 501 for what is
    // not implemented): each is an INFO line with its request id and S3
    // code; ERROR is for the server's own failures, and there were none.
    let log = std::fs::read_to_string(c.path("s3.log")).unwrap();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(
        errors.is_empty(),
        "client errors logged as ERROR:\n{}",
        errors.join("\n")
    );
    for code in [
        "PreconditionFailed",
        "MalformedXML",
        "SignatureDoesNotMatch",
        "NoSuchKey",
    ] {
        assert!(
            log.lines().any(|l| l.contains(" INFO ")
                && l.contains("request refused")
                && l.contains("request_id=")
                && l.contains(&format!("code={code}"))),
            "no INFO line for {code}:\n{log}"
        );
    }

    // The gateway's own routes: health, and Prometheus counters that saw
    // the run (bucket names cannot contain '_', so no bucket is hidden).
    let addr: std::net::SocketAddr = endpoint.trim_start_matches("http://").parse().unwrap();
    let (status, body) = common::http_get(addr, "/_tessera/health");
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, "ok\n");
    let (status, metrics) = common::http_get(addr, "/_tessera/metrics");
    assert!(status.contains("200"), "{status}");
    for sample in [
        r#"tessera_s3_requests_total{method="PUT",status="2xx"}"#,
        r#"tessera_s3_requests_total{method="GET",status="2xx"}"#,
        r#"tessera_s3_requests_total{method="PUT",status="4xx"}"#,
        "tessera_s3_header_refusals_total",
    ] {
        let v = common::metric(&metrics, sample).unwrap_or(0.0);
        assert!(v > 0.0, "{sample} is {v}:\n{metrics}");
    }
}
