//! boto3 (installed by tools/test) drives the gateway: checksum-trailer
//! uploads as boto3 sends them by default, presigned GET and PUT over plain
//! HTTP (and expired or tampered URLs refused), multipart through the
//! transfer manager, listing pages, copy and batch delete. The checks live
//! in tests/s3_boto3.py.

mod common;

use common::Cluster;

#[test]
fn boto3_drives_the_gateway() {
    let mut c = Cluster::start(6);
    let endpoint = c.start_s3_with(9000, &["--domain", "s3.tessera.test"]);
    let regional = c.start_s3_with(9001, &["--region", "eu-test-1"]);
    let k = c.json(&["key", "create", "boto", "--json"]);
    let (id, secret) = (
        k["access_key"].as_str().unwrap(),
        k["secret_key"].as_str().unwrap(),
    );
    common::python_checks(
        "s3_boto3.py",
        &[
            &endpoint,
            id,
            secret,
            "s3.tessera.test",
            &regional,
            "eu-test-1",
        ],
        "all checks passed",
    );

    // Bucket versioning: tests/s3_versioning.py, on the same gateway.
    common::python_checks(
        "s3_versioning.py",
        &[&endpoint, id, secret],
        "versioning: all checks passed",
    );

    // The run was refused many times (412, 404, 400, 403, 501 for what is
    // not implemented): each is an INFO line with its request id and S3
    // code; ERROR is for the server's own failures, and there were none.
    common::assert_no_error_lines(&c.path("s3.log"));
    let log = std::fs::read_to_string(c.path("s3.log")).unwrap();
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
