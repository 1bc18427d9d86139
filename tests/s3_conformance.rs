//! What Ceph's S3 conformance suite (s3-tests) found the gateway answering
//! unlike S3 (issue 15; BENCHMARKS.md, "S3 conformance: Ceph s3-tests"),
//! kept as boto3 checks (tests/s3_conformance.py): CreateBucket on an
//! existing name, ListObjects version 1's Marker, Owner, empty delimiter
//! and Prefix, a 304's ETag, GetObjectAttributes' bare ETag, POST Object's
//! `${filename}`, policy refusals, expiration form and redirect, and the
//! request time of V2-signed requests.

mod common;

use common::Cluster;

#[test]
fn s3_conformance_findings_through_boto3() {
    let mut c = Cluster::start(6);
    let endpoint = c.start_s3();
    let (id, secret) = c.create_key("main");
    let (other, other_secret) = c.create_key("other");
    common::python_checks(
        "s3_conformance.py",
        &[&endpoint, &id, &secret, &other, &other_secret],
        "conformance: all checks passed",
    );
}
