//! Per-bucket usage (issue 16: the admin API covers "buckets (policy,
//! usage, object count)"): objects uploaded with aws-cli (single-part and
//! multipart), overwritten, deleted and versioned, and the same exact
//! figures in `tessera bucket ls --json`, the admin API's `/v1/buckets`,
//! meta's Prometheus metrics and the plain `bucket ls`, before and after
//! meta restarts.

mod common;

use common::{Aws, Cluster, curl, http_get, metric, random_file};
use serde_json::Value;

/// (current objects, bytes of every version, noncurrent versions, delete
/// markers) of one bucket.
type Figures = (u64, u64, u64, u64);

fn figures_of(doc: &Value, bucket: &str) -> Figures {
    let b = doc
        .as_array()
        .expect("a list of buckets")
        .iter()
        .find(|b| b["name"] == bucket)
        .unwrap_or_else(|| panic!("{bucket} not listed: {doc}"));
    let n = |field: &str| {
        b[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field} missing: {b}"))
    };
    (
        n("objects"),
        n("bytes"),
        n("noncurrent_versions"),
        n("delete_markers"),
    )
}

/// Every view of `bucket`'s usage says `want`.
fn check(c: &Cluster, token: &str, bucket: &str, want: Figures) {
    let cli = c.json(&["bucket", "ls", "--json"]);
    assert_eq!(figures_of(&cli, bucket), want, "bucket ls --json");
    let api = curl(
        "GET",
        &format!("{}/v1/buckets", c.admin_url()),
        Some(token),
        &[],
    );
    assert_eq!(api.status, 200, "{}", api.body);
    let api = api.json();
    assert_eq!(api, cli, "/v1/buckets is bucket ls --json");
    let (status, text) = http_get(c.metrics_addr(None), "/metrics");
    assert!(status.contains("200"), "{status}");
    let sample = |name: &str| {
        metric(&text, &format!("{name}{{bucket=\"{bucket}\"}}"))
            .unwrap_or_else(|| panic!("no {name} for {bucket}"))
    };
    assert_eq!(
        (
            sample("tessera_meta_bucket_objects"),
            sample("tessera_meta_bucket_bytes")
        ),
        (want.0 as f64, want.1 as f64),
        "metrics"
    );
    // The plain listing's row: objects, then the size for people.
    let ls = c.ok(&["bucket", "ls"]);
    let row = ls
        .lines()
        .find(|l| l.ends_with(&format!("  {bucket}")))
        .unwrap_or_else(|| panic!("{bucket} not in:\n{ls}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[3], want.0.to_string(), "{row}");
}

#[test]
fn bucket_usage_follows_uploads_overwrites_deletes_and_versions() {
    let mut c = Cluster::start_admin(6);
    let endpoint = c.start_s3();
    let k = c.json(&["key", "create", "usage", "--json"]);
    let aws = Aws {
        endpoint,
        key: k["access_key"].as_str().unwrap().to_string(),
        secret: k["secret_key"].as_str().unwrap().to_string(),
    };
    let token = c.admin_token();
    let file = |name: &str, len: usize, seed: u64| {
        let p = c.path(name);
        random_file(&p, len, seed);
        p.to_str().unwrap().to_string()
    };
    let (small, mid, big) = (10_000, 1_000_000, 20 << 20);
    let small_f = file("small", small, 1);
    let mid_f = file("mid", mid, 2);
    // Over aws-cli's 8 MiB threshold: a multipart upload of three parts.
    let big_f = file("big", big, 3);

    aws.ok(&["s3", "mb", "s3://usage"]);
    check(&c, &token, "usage", (0, 0, 0, 0));
    aws.ok(&["s3", "cp", &small_f, "s3://usage/small"]);
    aws.ok(&["s3", "cp", &mid_f, "s3://usage/dir/mid"]);
    aws.ok(&["s3", "cp", &big_f, "s3://usage/big"]);
    let head = aws.ok(&["s3api", "head-object", "--bucket", "usage", "--key", "big"]);
    assert!(head.contains("-3\\\""), "a three-part upload: {head}");
    let total = (small + mid + big) as u64;
    check(&c, &token, "usage", (3, total, 0, 0));

    // Overwrite: the new size replaces the old.
    let smaller_f = file("smaller", 300_000, 4);
    aws.ok(&["s3", "cp", &smaller_f, "s3://usage/dir/mid"]);
    let total = total - mid as u64 + 300_000;
    check(&c, &token, "usage", (3, total, 0, 0));
    // Delete: its bytes go (and deleting it again changes nothing).
    aws.ok(&["s3", "rm", "s3://usage/small"]);
    aws.ok(&["s3", "rm", "s3://usage/small"]);
    let total = total - small as u64;
    check(&c, &token, "usage", (2, total, 0, 0));

    // A versioned bucket keeps noncurrent versions' bytes, as S3 reports.
    aws.ok(&["s3", "mb", "s3://kept"]);
    aws.ok(&[
        "s3api",
        "put-bucket-versioning",
        "--bucket",
        "kept",
        "--versioning-configuration",
        "Status=Enabled",
    ]);
    aws.ok(&["s3", "cp", &small_f, "s3://kept/k"]);
    aws.ok(&["s3", "cp", &mid_f, "s3://kept/k"]);
    check(&c, &token, "kept", (1, (small + mid) as u64, 1, 0));
    aws.ok(&["s3", "rm", "s3://kept/k"]);
    check(&c, &token, "kept", (0, (small + mid) as u64, 2, 1));
    // The other bucket is untouched by all this.
    check(&c, &token, "usage", (2, total, 0, 0));

    // Kept across a restart of meta.
    c.kill_meta();
    c.start_meta();
    c.wait_nodes_up(6);
    check(&c, &token, "usage", (2, total, 0, 0));
    check(&c, &token, "kept", (0, (small + mid) as u64, 2, 1));
    // And an emptied bucket reads zero, then goes from the listings.
    aws.ok(&["s3", "rm", "--recursive", "s3://usage"]);
    check(&c, &token, "usage", (0, 0, 0, 0));
    aws.ok(&["s3", "rb", "s3://usage"]);
    let (_, text) = http_get(c.metrics_addr(None), "/metrics");
    assert!(!text.contains("bucket=\"usage\""), "{text}");
}
