//! What Ceph's S3 conformance suite (s3-tests) found the gateway answering
//! unlike S3 (issue 15; BENCHMARKS.md, "S3 conformance: Ceph s3-tests"),
//! kept as boto3 checks (tests/s3_conformance.py): CreateBucket on an
//! existing name, ListObjects version 1's Marker, Owner, empty delimiter
//! and Prefix, a 304's ETag, GetObjectAttributes' bare ETag, POST Object's
//! `${filename}`, policy refusals, expiration form and redirect, and the
//! request time of V2-signed requests.

mod common;

use common::Cluster;

fn key(c: &Cluster, name: &str) -> (String, String) {
    let k = c.json(&["key", "create", name, "--json"]);
    (
        k["access_key"].as_str().unwrap().to_string(),
        k["secret_key"].as_str().unwrap().to_string(),
    )
}

#[test]
fn s3_conformance_findings_through_boto3() {
    let mut c = Cluster::start(6);
    let endpoint = c.start_s3();
    let (id, secret) = key(&c, "main");
    let (other, other_secret) = key(&c, "other");
    common::python_checks(
        "s3_conformance.py",
        &[&endpoint, &id, &secret, &other, &other_secret],
        "conformance: all checks passed",
    );
}
