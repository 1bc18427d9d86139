//! s3cmd and rclone, as they come, against the gateway: s3cmd's bucket and
//! object commands, and `rclone copy` + `rclone check` of a tree of 500
//! small files and two files over 100 MiB (tools/test installs both).
//!
//! s3cmd keeps its default `bucket_location`, "US", which it signs into the
//! credential scope: upper-case regions are accepted (vendor/s3s).

mod common;

use std::path::Path;
use std::process::Command;

use common::{Cluster, random_file, same_file};

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
