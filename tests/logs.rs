//! Logs for collectors (issue 16): `--log-format json` (or
//! `TESSERA_LOG_FORMAT=json`) writes each log line as one JSON object.

mod common;

use common::Cluster;

#[test]
fn json_log_lines_are_json_objects() {
    let c = Cluster::start_with(1, &["--log-format", "json"]);
    c.ok(&["bucket", "create", "logged"]);
    let text = std::fs::read_to_string(c.dir.path().join("meta.log")).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 2, "meta logged {} lines", lines.len());
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        assert!(v["fields"]["message"].is_string(), "{line}");
    }
    assert!(lines.iter().any(|l| l.contains("meta listening")), "{text}");
}
