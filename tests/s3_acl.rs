//! ACLs with named grantees and object ACLs (issue 15) through real
//! clients: boto3 drives grants by id and by uri on buckets and objects,
//! public object ACLs, versions, PublicAccessBlock and every refusal
//! (tests/s3_acl.py); aws-cli puts and reads the same ACLs, signed by the
//! owner key, by a second key and unsigned (`--no-sign-request`).

mod common;

use common::{Aws, Cluster};

const ALL_USERS: &str = "http://acs.amazonaws.com/groups/global/AllUsers";

#[test]
fn acls_through_boto3_and_aws_cli() {
    let mut c = Cluster::start(6);
    let endpoint = c.start_s3();
    let (owner_id, owner_secret) = c.create_key("owner");
    let (other_id, other_secret) = c.create_key("other");
    common::python_checks(
        "s3_acl.py",
        &[
            &endpoint,
            &owner_id,
            &owner_secret,
            &other_id,
            &other_secret,
        ],
        "acl: all checks passed",
    );

    let owner = Aws {
        endpoint: endpoint.clone(),
        key: owner_id.clone(),
        secret: owner_secret,
    };
    let other = Aws {
        endpoint: endpoint.clone(),
        key: other_id.clone(),
        secret: other_secret,
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, b"from aws-cli").unwrap();
    let file = file.to_str().unwrap();
    let anon_get = |key: &str| owner.run(&["--no-sign-request", "s3", "cp", key, "-"]);

    owner.ok(&["s3", "mb", "s3://acl-cli"]);
    owner.ok(&["s3", "cp", file, "s3://acl-cli/pub", "--acl", "public-read"]);
    owner.ok(&["s3", "cp", file, "s3://acl-cli/priv"]);
    let got = anon_get("s3://acl-cli/pub");
    assert!(
        got.status.success(),
        "anonymous GET of a public-read object"
    );
    assert_eq!(got.stdout, b"from aws-cli");
    let refused = anon_get("s3://acl-cli/priv");
    assert!(
        !refused.status.success(),
        "anonymous GET of a private object"
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("403"));

    // A grant by id, read back exactly, honoured, then removed.
    let put_object_acl = |acl: &[&str]| {
        let mut args = vec![
            "s3api",
            "put-object-acl",
            "--bucket",
            "acl-cli",
            "--key",
            "priv",
        ];
        args.extend_from_slice(acl);
        owner.ok(&args)
    };
    put_object_acl(&["--grant-read", &format!("id={other_id}")]);
    let acl: serde_json::Value = serde_json::from_str(&owner.ok(&[
        "s3api",
        "get-object-acl",
        "--bucket",
        "acl-cli",
        "--key",
        "priv",
    ]))
    .unwrap();
    assert_eq!(acl["Owner"]["ID"], owner_id.as_str(), "{acl}");
    assert_eq!(
        acl["Grants"],
        serde_json::json!([{
            "Grantee": {"ID": other_id, "DisplayName": "other", "Type": "CanonicalUser"},
            "Permission": "READ"
        }]),
        "{acl}"
    );
    other.ok(&["s3", "cp", "s3://acl-cli/priv", "-"]);
    put_object_acl(&["--acl", "private"]);
    assert!(
        other
            .fails(&["s3", "cp", "s3://acl-cli/priv", "-"])
            .contains("403")
    );

    // A bucket grant by uri: anyone lists.
    owner.ok(&[
        "s3api",
        "put-bucket-acl",
        "--bucket",
        "acl-cli",
        "--grant-read",
        &format!("uri={ALL_USERS}"),
    ]);
    let listed = owner.ok(&["--no-sign-request", "s3", "ls", "s3://acl-cli"]);
    assert!(
        listed.contains("pub") && listed.contains("priv"),
        "{listed}"
    );

    // Refusals in S3's form.
    let bad = owner.fails(&[
        "s3api",
        "put-object-acl",
        "--bucket",
        "acl-cli",
        "--key",
        "pub",
        "--grant-read",
        "id=NOSUCHKEY000000000000",
    ]);
    assert!(bad.contains("InvalidArgument"), "{bad}");
    let bad = owner.fails(&[
        "s3api",
        "put-bucket-acl",
        "--bucket",
        "acl-cli",
        "--grant-full-control",
        "emailAddress=someone@example.com",
    ]);
    assert!(bad.contains("UnresolvableGrantByEmailAddress"), "{bad}");

    // BlockPublicAcls refuses a public-read PUT; IgnorePublicAcls voids
    // the one already there.
    owner.ok(&[
        "s3api",
        "put-public-access-block",
        "--bucket",
        "acl-cli",
        "--public-access-block-configuration",
        "BlockPublicAcls=true,IgnorePublicAcls=true",
    ]);
    let blocked = owner.fails(&["s3", "cp", file, "s3://acl-cli/new", "--acl", "public-read"]);
    assert!(blocked.contains("AccessDenied"), "{blocked}");
    assert!(!anon_get("s3://acl-cli/pub").status.success());
    owner.ok(&["s3api", "delete-public-access-block", "--bucket", "acl-cli"]);
    assert!(anon_get("s3://acl-cli/pub").status.success());
    common::assert_no_error_lines(&c.path("s3.log"));
}
