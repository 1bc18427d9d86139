//! s3cmd and rclone, as they come, against the gateway: s3cmd's bucket and
//! object commands, and `rclone copy` + `rclone check` of a tree of 500
//! small files and two files over 100 MiB (tools/test installs both); and
//! aws-cli's own ways of tagging (`s3api` tagging shorthand, `s3 cp
//! --storage-class`) and of versioning (shorthand configuration,
//! list-object-versions paged by the cli), refusals included.
//!
//! s3cmd keeps its default `bucket_location`, "US", which it signs into the
//! credential scope: upper-case regions are accepted (vendor/s3s).

mod common;

use std::path::Path;
use std::process::Command;

use common::{Aws, Cluster, random_file, same_file};

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .expect("the client must be installed (tools/test installs it)");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn credentials(c: &Cluster) -> (String, String) {
    let k = c.json(&["key", "create", "tools", "--json"]);
    (
        k["access_key"].as_str().unwrap().to_string(),
        k["secret_key"].as_str().unwrap().to_string(),
    )
}

#[test]
fn s3cmd_buckets_and_objects() {
    let mut c = Cluster::start(6);
    let endpoint = c.start_s3();
    let host = endpoint.trim_start_matches("http://").to_string();
    let (key, secret) = credentials(&c);
    let cfg = c.path("s3cfg");
    std::fs::write(
        &cfg,
        format!(
            "[default]\naccess_key = {key}\nsecret_key = {secret}\nhost_base = {host}\n\
             host_bucket = {host}\nuse_https = False\nsignature_v2 = False\n"
        ),
    )
    .unwrap();
    let s3cmd = |args: &[&str]| run(Command::new("s3cmd").arg("-c").arg(&cfg).args(args));
    s3cmd(&["mb", "s3://tools"]);
    let src = c.path("src");
    random_file(&src, 3_000_000, 5);
    s3cmd(&["put", src.to_str().unwrap(), "s3://tools/dir/file"]);
    let ls = s3cmd(&["ls", "-r", "s3://tools"]);
    assert!(
        ls.contains("s3://tools/dir/file") && ls.contains("3000000"),
        "{ls}"
    );
    let back = c.path("back");
    s3cmd(&["get", "s3://tools/dir/file", back.to_str().unwrap()]);
    assert!(same_file(&src, &back));
    let info = s3cmd(&["info", "s3://tools/dir/file"]);
    assert!(info.contains("3000000"), "{info}");
    s3cmd(&["del", "s3://tools/dir/file"]);
    s3cmd(&["rb", "s3://tools"]);
    assert!(!s3cmd(&["ls"]).contains("s3://tools"));
}

#[test]
fn rclone_copy_and_check_a_tree() {
    let mut c = Cluster::start(6);
    let endpoint = c.start_s3();
    let (key, secret) = credentials(&c);
    let tree = c.path("tree");
    for i in 0..500 {
        let dir = tree.join(format!("d{}", i % 10));
        std::fs::create_dir_all(&dir).unwrap();
        random_file(&dir.join(format!("f{i}")), 100 + (i * 37) % 5000, i as u64);
    }
    random_file(&tree.join("big1"), 101 << 20, 1001);
    random_file(&tree.join("big2"), 110 << 20, 1002);
    let rclone = |args: &[&str]| {
        run(Command::new("rclone")
            .args(args)
            // rclone 1.60 refuses a CA bundle on a plain-HTTP endpoint.
            .env_remove("AWS_CA_BUNDLE")
            .env("RCLONE_CONFIG", "/dev/null")
            .env("RCLONE_CONFIG_TESS_TYPE", "s3")
            .env("RCLONE_CONFIG_TESS_PROVIDER", "Other")
            .env("RCLONE_CONFIG_TESS_ACCESS_KEY_ID", &key)
            .env("RCLONE_CONFIG_TESS_SECRET_ACCESS_KEY", &secret)
            .env("RCLONE_CONFIG_TESS_ENDPOINT", &endpoint)
            .env("RCLONE_CONFIG_TESS_REGION", "us-east-1"))
    };
    rclone(&["mkdir", "tess:tree"]);
    rclone(&["copy", tree.to_str().unwrap(), "tess:tree/copy"]);
    // Sizes and MD5s (single-part ETags) of all 502 files agree.
    rclone(&["check", tree.to_str().unwrap(), "tess:tree/copy"]);
    let listed = rclone(&["lsf", "-R", "--files-only", "tess:tree/copy"]);
    assert_eq!(listed.lines().count(), 502, "{listed}");
    // And one big file comes back byte for byte.
    let back = c.path("big2.back");
    rclone(&["copyto", "tess:tree/copy/big2", back.to_str().unwrap()]);
    assert!(same_file(&tree.join("big2"), Path::new(&back)));
}

/// aws-cli writes tags in its shorthand (`TagSet=[{Key=..,Value=..}]`) and
/// storage classes through `s3 cp --storage-class`; refusals come back as
/// S3's codes in its error text.
#[test]
fn aws_cli_tags_and_storage_classes() {
    let mut c = Cluster::start(6);
    let endpoint = c.start_s3();
    let (key, secret) = credentials(&c);
    let aws = Aws {
        endpoint,
        key,
        secret,
    };
    let json = |args: &[&str]| -> serde_json::Value {
        serde_json::from_str(&aws.ok(args)).expect("aws JSON")
    };
    aws.ok(&["s3", "mb", "s3://tags"]);
    let file = c.path("f");
    random_file(&file, 10_000, 3);
    let f = file.to_str().unwrap();
    aws.ok(&[
        "s3",
        "cp",
        f,
        "s3://tags/ia",
        "--storage-class",
        "STANDARD_IA",
    ]);
    let head = json(&["s3api", "head-object", "--bucket", "tags", "--key", "ia"]);
    assert_eq!(head["StorageClass"], "STANDARD_IA", "{head}");
    let ls = json(&["s3api", "list-objects-v2", "--bucket", "tags"]);
    assert_eq!(ls["Contents"][0]["StorageClass"], "STANDARD_IA", "{ls}");
    let err = aws.fails(&["s3", "cp", f, "s3://tags/g", "--storage-class", "GLACIER"]);
    assert!(err.contains("InvalidStorageClass"), "{err}");

    let tag = |k: &str, tagging: &str| {
        aws.run(&[
            "s3api",
            "put-object-tagging",
            "--bucket",
            "tags",
            "--key",
            k,
            "--tagging",
            tagging,
        ])
    };
    // The shorthand cannot write an empty value; JSON can.
    let out = tag(
        "ia",
        r#"{"TagSet":[{"Key":"team","Value":"storage"},{"Key":"tier","Value":""}]}"#,
    );
    assert!(out.status.success(), "{out:?}");
    let object_tags = || {
        json(&[
            "s3api",
            "get-object-tagging",
            "--bucket",
            "tags",
            "--key",
            "ia",
        ])
    };
    let got = object_tags();
    let mut pairs: Vec<(String, String)> = got["TagSet"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["Key"].as_str().unwrap().to_string(),
                t["Value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    pairs.sort();
    assert_eq!(
        pairs,
        [
            ("team".to_string(), "storage".to_string()),
            ("tier".to_string(), String::new())
        ]
    );
    let refused = |out: std::process::Output, code: &str| {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(code), "{err}");
    };
    let eleven: Vec<String> = (0..11).map(|i| format!("{{Key=k{i},Value=v}}")).collect();
    refused(
        tag("ia", &format!("TagSet=[{}]", eleven.join(","))),
        "InvalidTag",
    );
    refused(
        tag("ia", "TagSet=[{Key=a,Value=1},{Key=a,Value=2}]"),
        "InvalidTag",
    );
    refused(
        tag(
            "ia",
            &format!("TagSet=[{{Key={},Value=v}}]", "k".repeat(129)),
        ),
        "InvalidTag",
    );
    refused(tag("missing", "TagSet=[{Key=a,Value=1}]"), "NoSuchKey");
    let got = object_tags();
    assert_eq!(got["TagSet"].as_array().unwrap().len(), 2, "{got}");

    // Bucket tags: none is NoSuchTagSet; set, read, delete.
    refused(
        aws.run(&["s3api", "get-bucket-tagging", "--bucket", "tags"]),
        "NoSuchTagSet",
    );
    aws.ok(&[
        "s3api",
        "put-bucket-tagging",
        "--bucket",
        "tags",
        "--tagging",
        "TagSet=[{Key=env,Value=test}]",
    ]);
    let got = json(&["s3api", "get-bucket-tagging", "--bucket", "tags"]);
    assert_eq!(got["TagSet"][0]["Key"], "env", "{got}");
    aws.ok(&["s3api", "delete-bucket-tagging", "--bucket", "tags"]);
    refused(
        aws.run(&["s3api", "get-bucket-tagging", "--bucket", "tags"]),
        "NoSuchTagSet",
    );

    // Versioning through aws-cli: its shorthand configuration, `s3 cp`
    // and `s3 rm` making versions and a delete marker, list-object-versions
    // paged by the cli itself, reads and deletes by version id.
    aws.ok(&["s3", "mb", "s3://vers"]);
    aws.ok(&[
        "s3api",
        "put-bucket-versioning",
        "--bucket",
        "vers",
        "--versioning-configuration",
        "Status=Enabled",
    ]);
    let got = json(&["s3api", "get-bucket-versioning", "--bucket", "vers"]);
    assert_eq!(got["Status"], "Enabled", "{got}");
    let (v1_file, v2_file) = (c.path("v1"), c.path("v2"));
    random_file(&v1_file, 10_000, 7);
    random_file(&v2_file, 20_000, 8);
    aws.ok(&["s3", "cp", v1_file.to_str().unwrap(), "s3://vers/doc"]);
    aws.ok(&["s3", "cp", v2_file.to_str().unwrap(), "s3://vers/doc"]);
    aws.ok(&["s3", "rm", "s3://vers/doc"]);
    assert!(!aws.ok(&["s3", "ls", "s3://vers/"]).contains("doc"));
    let listed = json(&[
        "s3api",
        "list-object-versions",
        "--bucket",
        "vers",
        "--page-size",
        "1",
    ]);
    let versions = listed["Versions"].as_array().expect("Versions");
    let markers = listed["DeleteMarkers"].as_array().expect("DeleteMarkers");
    assert_eq!((versions.len(), markers.len()), (2, 1), "{listed}");
    assert_eq!(markers[0]["IsLatest"], true, "{listed}");
    let oldest = versions
        .iter()
        .find(|v| v["Size"] == 10_000)
        .expect("the first version");
    let oldest = oldest["VersionId"].as_str().unwrap().to_string();
    let back = c.path("back");
    aws.ok(&[
        "s3api",
        "get-object",
        "--bucket",
        "vers",
        "--key",
        "doc",
        "--version-id",
        &oldest,
        back.to_str().unwrap(),
    ]);
    assert!(same_file(&back, &v1_file));
    refused(
        aws.run(&[
            "s3api",
            "get-object",
            "--bucket",
            "vers",
            "--key",
            "doc",
            "--version-id",
            "not-a-version",
            back.to_str().unwrap(),
        ]),
        "InvalidArgument",
    );
    refused(aws.run(&["s3", "rb", "s3://vers"]), "BucketNotEmpty");
    for v in versions.iter().chain(markers) {
        aws.ok(&[
            "s3api",
            "delete-object",
            "--bucket",
            "vers",
            "--key",
            "doc",
            "--version-id",
            v["VersionId"].as_str().unwrap(),
        ]);
    }
    aws.ok(&["s3", "rb", "s3://vers"]);
}
