//! S3 Object Lock (issue 15): boto3 drives buckets with Object Lock,
//! default and per-version retention, legal holds, the GOVERNANCE bypass
//! and every refusal (tests/s3_lock.py); aws-cli reads and refuses the
//! same way; a key with only a write grant may not bypass GOVERNANCE.

mod common;

use common::{Aws, Cluster};

fn key(c: &Cluster, name: &str) -> (String, String) {
    let k = c.json(&["key", "create", name, "--json"]);
    (
        k["access_key"].as_str().unwrap().to_string(),
        k["secret_key"].as_str().unwrap().to_string(),
    )
}

#[test]
fn object_lock_through_boto3_and_aws_cli() {
    let mut c = Cluster::start(6);
    let endpoint = c.start_s3();
    let (id, secret) = key(&c, "lock");
    common::python_checks(
        "s3_lock.py",
        &[&endpoint, &id, &secret],
        "object lock: all checks passed",
    );

    let aws = Aws {
        endpoint: endpoint.clone(),
        key: id.clone(),
        secret,
    };
    let json = |aws: &Aws, args: &[&str]| -> serde_json::Value {
        serde_json::from_str(&aws.ok(args)).expect("aws JSON")
    };
    aws.ok(&[
        "s3api",
        "create-bucket",
        "--bucket",
        "vault",
        "--object-lock-enabled-for-bucket",
    ]);
    aws.ok(&[
        "s3api",
        "put-object-lock-configuration",
        "--bucket",
        "vault",
        "--object-lock-configuration",
        r#"{"ObjectLockEnabled":"Enabled","Rule":{"DefaultRetention":{"Mode":"COMPLIANCE","Days":3}}}"#,
    ]);
    let conf = json(
        &aws,
        &[
            "s3api",
            "get-object-lock-configuration",
            "--bucket",
            "vault",
        ],
    );
    assert_eq!(
        conf["ObjectLockConfiguration"]["Rule"]["DefaultRetention"]["Mode"], "COMPLIANCE",
        "{conf}"
    );
    let file = c.path("backup");
    std::fs::write(&file, b"immutable backup").unwrap();
    let put = json(
        &aws,
        &[
            "s3api",
            "put-object",
            "--bucket",
            "vault",
            "--key",
            "b1",
            "--body",
            file.to_str().unwrap(),
        ],
    );
    let version = put["VersionId"].as_str().unwrap().to_string();
    let head = json(
        &aws,
        &["s3api", "head-object", "--bucket", "vault", "--key", "b1"],
    );
    assert_eq!(head["ObjectLockMode"], "COMPLIANCE", "{head}");
    let err = aws.fails(&[
        "s3api",
        "delete-object",
        "--bucket",
        "vault",
        "--key",
        "b1",
        "--version-id",
        &version,
        "--bypass-governance-retention",
    ]);
    assert!(err.contains("AccessDenied"), "{err}");
    let err = aws.fails(&[
        "s3api",
        "put-bucket-versioning",
        "--bucket",
        "vault",
        "--versioning-configuration",
        "Status=Suspended",
    ]);
    assert!(err.contains("InvalidBucketState"), "{err}");

    // A key with a write grant (not the owner's) may write and lock, but
    // not bypass GOVERNANCE: s3:BypassGovernanceRetention is the owner's
    // unless a policy allows it.
    let (writer, writer_secret) = key(&c, "writer");
    c.ok(&["bucket", "allow", "vault", &writer, "write"]);
    let w = Aws {
        endpoint,
        key: writer,
        secret: writer_secret,
    };
    let put = json(
        &w,
        &[
            "s3api",
            "put-object",
            "--bucket",
            "vault",
            "--key",
            "g1",
            "--body",
            file.to_str().unwrap(),
            "--object-lock-mode",
            "GOVERNANCE",
            "--object-lock-retain-until-date",
            "2140-01-01T00:00:00Z",
        ],
    );
    let g1 = put["VersionId"].as_str().unwrap().to_string();
    let err = w.fails(&[
        "s3api",
        "delete-object",
        "--bucket",
        "vault",
        "--key",
        "g1",
        "--version-id",
        &g1,
        "--bypass-governance-retention",
    ]);
    assert!(err.contains("AccessDenied"), "{err}");
    // The owner may.
    aws.ok(&[
        "s3api",
        "delete-object",
        "--bucket",
        "vault",
        "--key",
        "g1",
        "--version-id",
        &g1,
        "--bypass-governance-retention",
    ]);
    common::assert_no_error_lines(&c.path("s3.log"));
}
