//! S3 bucket lifecycle (issue 15) with meta's lifecycle day shortened to
//! 2 s (`--lifecycle-day 2s`): boto3 puts, reads and refuses
//! configurations, then watches the worker expire current objects (gone,
//! or a delete marker in a versioned bucket), noncurrent versions (keeping
//! NewerNoncurrentVersions), lone delete markers and stale multipart
//! uploads, while versions under Object Lock survive every rule
//! (tests/s3_lifecycle.py). Then the worker's totals in `tessera status`
//! (human and `--json`) and meta's Prometheus metrics.

mod common;

use common::Cluster;

#[test]
fn lifecycle_rules_are_applied_by_the_meta_leader() {
    let mut c = Cluster::start_with(6, &["--lifecycle-day", "2s"]);
    let endpoint = c.start_s3();
    let k = c.json(&["key", "create", "lifecycle", "--json"]);
    let (id, secret) = (
        k["access_key"].as_str().unwrap(),
        k["secret_key"].as_str().unwrap(),
    );
    common::python_checks(
        "s3_lifecycle.py",
        &[&endpoint, id, secret, "2"],
        "lifecycle: all checks passed",
    );

    let status = c.json(&["status", "--json"]);
    let lc = &status["lifecycle"];
    assert!(lc["passes"].as_u64().unwrap() > 0, "{status}");
    for field in [
        "expired_objects",
        "removed_versions",
        "aborted_uploads",
        "kept_locked",
    ] {
        assert!(lc[field].as_u64().unwrap() > 0, "{field}: {status}");
    }
    let human = c.ok(&["status"]);
    assert!(human.contains("lifecycle: "), "{human}");
    assert!(human.contains("locked versions kept"), "{human}");

    let (status_line, metrics) = common::http_get(c.metrics_addr(None), "/metrics");
    assert!(status_line.contains("200"), "{status_line}");
    for sample in [
        "tessera_meta_lifecycle_passes_total",
        "tessera_meta_lifecycle_expired_objects_total",
        "tessera_meta_lifecycle_removed_versions_total",
        "tessera_meta_lifecycle_aborted_uploads_total",
        "tessera_meta_lifecycle_kept_locked_total",
    ] {
        let v = common::metric(&metrics, sample).unwrap_or(0.0);
        assert!(v > 0.0, "{sample} is {v}:\n{metrics}");
    }
    common::assert_no_error_lines(&c.path("s3.log"));
}
