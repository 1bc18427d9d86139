//! S3 server-side encryption (issue 15) against a cluster of processes:
//! SSE-C and SSE-S3 through boto3 (tests/s3_sse.py: PUT, GET, HEAD,
//! ranges around the 64 KiB packages, copies, multipart and UploadPartCopy,
//! bucket default encryption, and the refusals: no key 400, wrong key 403,
//! bad key MD5 400, SSE-S3 on a gateway without a master key) and through
//! aws-cli (`s3 cp --sse-c`, `--sse AES256`, a multipart SSE-C upload);
//! then the nodes' disks are searched for the content of the encrypted
//! objects, which must not be there, while an unencrypted control object's
//! content is.

mod common;

use std::path::Path;

use common::{Aws, Cluster, random_file, same_file};

/// Whether any fragment file on any of the cluster's `nodes` nodes holds
/// `needle`.
fn on_disk(c: &Cluster, nodes: usize, needle: &[u8]) -> bool {
    (0..nodes).any(|i| {
        c.fragment_files(i).iter().any(|f| {
            std::fs::read(f).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        })
    })
}

fn write_marked(path: &Path, marker: &str, len: usize) {
    let body: Vec<u8> = marker.bytes().cycle().take(len).collect();
    std::fs::write(path, body).unwrap();
}

#[test]
fn sse_c_and_sse_s3_through_boto3_and_aws_cli() {
    let mut c = Cluster::start(6);
    let master = c.path("sse-master.key");
    std::fs::write(&master, format!("{}\n", "7f".repeat(32))).unwrap();
    let endpoint = c.start_s3_with(9000, &["--sse-master-key", master.to_str().unwrap()]);
    let bare = c.start_s3_with(9001, &[]);
    let k = c.json(&["key", "create", "sse", "--json"]);
    let (id, secret) = (
        k["access_key"].as_str().unwrap().to_string(),
        k["secret_key"].as_str().unwrap().to_string(),
    );
    let marker = "TESSERA-SSE-PLAINTEXT-MARKER-7f3a";
    common::python_checks(
        "s3_sse.py",
        &[&endpoint, &id, &secret, &bare, marker],
        "sse: all checks passed",
    );

    // aws-cli: its own SSE-C and SSE-S3 flags, and a multipart SSE-C
    // upload (files over 8 MiB go in parts).
    let aws = Aws {
        endpoint: endpoint.clone(),
        key: id,
        secret,
    };
    let key_file = c.path("customer.key");
    std::fs::write(&key_file, [0x42u8; 32]).unwrap();
    let other_key = c.path("other.key");
    std::fs::write(&other_key, [0x43u8; 32]).unwrap();
    let sse_c = |file: &Path| {
        vec![
            "--sse-c".to_string(),
            "AES256".to_string(),
            "--sse-c-key".to_string(),
            format!("fileb://{}", file.display()),
        ]
    };
    let args = |base: &[&str], extra: &[String]| -> Vec<String> {
        base.iter()
            .map(|s| s.to_string())
            .chain(extra.iter().cloned())
            .collect()
    };
    let run_ok = |a: Vec<String>| aws.ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let run_fails = |a: Vec<String>| aws.fails(&a.iter().map(String::as_str).collect::<Vec<_>>());
    aws.ok(&["s3", "mb", "s3://cli"]);
    let big = c.path("big");
    random_file(&big, 20 * 1024 * 1024 + 12_345, 5);
    let big_s = big.to_str().unwrap();
    run_ok(args(
        &["s3", "cp", big_s, "s3://cli/big"],
        &sse_c(&key_file),
    ));
    let back = c.path("big.back");
    let back_s = back.to_str().unwrap();
    run_ok(args(
        &["s3", "cp", "s3://cli/big", back_s],
        &sse_c(&key_file),
    ));
    assert!(same_file(&big, &back), "SSE-C multipart round trip differs");
    let err = aws.fails(&[
        "s3api",
        "get-object",
        "--bucket",
        "cli",
        "--key",
        "big",
        back_s,
    ]);
    assert!(err.contains("InvalidRequest"), "{err}");
    let err = run_fails(args(
        &["s3", "cp", "s3://cli/big", back_s],
        &sse_c(&other_key),
    ));
    assert!(err.contains("403") || err.contains("Forbidden"), "{err}");
    let listed = aws.ok(&["s3", "ls", "s3://cli/big"]);
    assert!(
        listed.contains(&(20 * 1024 * 1024 + 12_345).to_string()),
        "{listed}"
    );

    let small = c.path("small");
    random_file(&small, 300_000, 6);
    let small_s = small.to_str().unwrap();
    aws.ok(&["s3", "cp", small_s, "s3://cli/s3", "--sse", "AES256"]);
    let head = aws.ok(&["s3api", "head-object", "--bucket", "cli", "--key", "s3"]);
    assert!(
        head.contains("\"ServerSideEncryption\": \"AES256\""),
        "{head}"
    );
    assert!(head.contains("\"ContentLength\": 300000"), "{head}");
    aws.ok(&["s3", "cp", "s3://cli/s3", back_s]);
    assert!(same_file(&small, &back), "SSE-S3 round trip differs");

    // The disks: no encrypted object's content on any node, while an
    // unencrypted control's content is there (the search works).
    let control = "TESSERA-UNENCRYPTED-CONTROL-91c2";
    let control_file = c.path("control");
    write_marked(&control_file, control, 300 * 1024);
    aws.ok(&[
        "s3",
        "cp",
        control_file.to_str().unwrap(),
        "s3://cli/control",
    ]);
    assert!(
        on_disk(&c, 6, control.as_bytes()),
        "the control object's content is not on the nodes: the search is broken"
    );
    assert!(
        !on_disk(&c, 6, marker.as_bytes()),
        "an encrypted object's content is on a node's disk in the clear"
    );

    // Outside S3 an encrypted object is refused, never handed out as
    // ciphertext: the CLI says why, the mount answers EACCES; the
    // unencrypted control reads as usual through both.
    let out = c.tessera(&["get", "cli/s3", back_s]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("server-side encryption"),
        "tessera get of an SSE-S3 object: {err}"
    );
    let out = c.tessera(&["get", "cli/control", back_s]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(same_file(&control_file, &back), "the control reads back");
    let m = c.mount("cli", &["--read-only"]);
    let refused = std::fs::read(m.path.join("s3")).expect_err("reading an SSE object");
    assert_eq!(
        refused.kind(),
        std::io::ErrorKind::PermissionDenied,
        "{refused}"
    );
    let control_back = std::fs::read(m.path.join("control")).expect("read the control");
    assert_eq!(control_back, std::fs::read(&control_file).unwrap());
    drop(m);
}
