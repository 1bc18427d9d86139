//! The files in deploy/ (issue 16): Prometheus' scrape configuration and
//! alert rules pass `promtool check` and their unit tests; every metric the
//! rules and the Grafana dashboard name is one a real cluster exports; and
//! what meta, a node and the S3 gateway export passes `promtool check
//! metrics` (Prometheus' naming conventions: `_total` counters, base units);
//! and docs/s3-compatibility.md lists what the gateway's code implements.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{Cluster, http_get};

fn deploy(rel: &str) -> PathBuf {
    common::repo_root().join("deploy").join(rel)
}

/// Runs promtool; its output when it fails.
fn promtool(args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool must be installed (Debian's prometheus package; tools/test installs it)");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// Metric names (`tessera_...`) a text mentions.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("tessera_") {
        let tail = &rest[at..];
        let len = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..len].to_string());
        rest = &tail[len..];
    }
    names
}

#[test]
fn prometheus_config_and_rules_pass_promtool() {
    let config = deploy("prometheus/prometheus.yml");
    let rules = deploy("prometheus/alerts.yml");
    let tests = deploy("prometheus/alerts.test.yml");
    for args in [
        vec!["check", "config", config.to_str().unwrap()],
        vec!["check", "rules", rules.to_str().unwrap()],
        vec!["test", "rules", tests.to_str().unwrap()],
    ] {
        if let Err(out) = promtool(&args, None) {
            panic!("promtool {args:?} failed:\n{out}");
        }
    }
}

#[test]
fn exported_metrics_follow_conventions_and_cover_rules_and_dashboard() {
    let mut c = Cluster::start(1);
    let s3 = c.start_s3();
    c.ok(&["bucket", "create", "metered", "--policy", "rep:1"]);
    c.put_objects("metered", &[("o".into(), 10_000)], 1, &[]);
    // An S3 request, so the gateway's per-method series exist.
    let _ = http_get(
        s3.trim_start_matches("http://").parse().unwrap(),
        "/metered/o",
    );
    let mut exported = BTreeSet::new();
    for (what, addr, path) in [
        ("meta", c.metrics_addr(None), "/metrics"),
        ("node", c.metrics_addr(Some(0)), "/metrics"),
        (
            "s3",
            s3.trim_start_matches("http://").parse().unwrap(),
            "/_tessera/metrics",
        ),
    ] {
        let (status, body) = http_get(addr, path);
        assert!(status.contains("200"), "{what} metrics: {status}");
        if let Err(problems) = promtool(&["check", "metrics"], Some(&body)) {
            panic!("{what}'s metrics break Prometheus conventions:\n{problems}");
        }
        exported.extend(
            body.lines()
                .filter(|l| !l.starts_with('#'))
                .flat_map(metric_names),
        );
    }
    let rules = std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap();
    let dashboard = std::fs::read_to_string(deploy("grafana/tessera.json")).unwrap();
    let parsed: serde_json::Value =
        serde_json::from_str(&dashboard).expect("the Grafana dashboard is JSON");
    assert_eq!(parsed["uid"], "tessera-overview");
    assert!(parsed["panels"].as_array().unwrap().len() > 10);
    for (what, text) in [("alerts.yml", &rules), ("tessera.json", &dashboard)] {
        let unknown: Vec<_> = metric_names(text)
            .into_iter()
            .filter(|m| !exported.contains(m))
            .collect();
        assert!(
            unknown.is_empty(),
            "{what} names metrics no process exports: {unknown:?}"
        );
    }
}

/// `systemd-analyze` on a copy of a unit whose ExecStart runs the binary
/// under test (verify checks that the command exists).
fn systemd_analyze(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .current_dir(dir)
        .output()
        .expect(
            "systemd-analyze must be installed (Debian's systemd package; tools/test installs it)",
        )
}

#[test]
fn systemd_units_verify_and_are_hardened() {
    let dir = tempfile::tempdir().unwrap();
    let units = deploy("systemd");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&units).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if !name.ends_with(".service") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("/usr/local/bin/tessera", common::BIN);
        std::fs::write(dir.path().join(&name), text).unwrap();
        // A template is verified through an instance of it.
        names.push(name.replace("@.service", "@disk1.service"));
    }
    names.sort();
    assert_eq!(
        names,
        [
            "tessera-meta.service",
            "tessera-nbd.service",
            "tessera-node@disk1.service",
            "tessera-repairer.service",
            "tessera-s3.service"
        ],
        "a unit for every role"
    );
    for name in &names {
        let out = systemd_analyze(dir.path(), &["verify", "--man=no", name]);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !said.contains(name.as_str()),
            "systemd-analyze verify {name}:\n{said}"
        );
        // Exposure on systemd's 0-10 scale, times ten: at most 2.0.
        let out = systemd_analyze(
            dir.path(),
            &["security", "--offline=true", "--threshold=20", name],
        );
        assert!(
            out.status.success(),
            "{name} is not hardened enough:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// Runs a checker; panics with its output unless it succeeds.
fn check(tool: &str, args: &[&str], install: &str) {
    let out = Command::new(tool).args(args).output().unwrap_or_else(|e| {
        panic!("{tool} must be installed ({install}; tools/test installs it): {e}")
    });
    assert!(
        out.status.success(),
        "{tool} {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn kubernetes_manifests_and_compose_file_pass_schema_checks() {
    let manifests = deploy("kubernetes/tessera.yaml");
    check(
        "kubernetes-validate",
        &["--strict", "--quiet", manifests.to_str().unwrap()],
        "PyPI's kubernetes-validate, which ships the Kubernetes schemas",
    );
    let compose = deploy("compose/compose.yaml");
    check(
        "docker-compose",
        &["-f", compose.to_str().unwrap(), "config", "-q"],
        "Debian's docker-compose",
    );
}

/// docs/s3-compatibility.md is what `tools/s3-compat` writes from the
/// gateway's code, so the list of implemented S3 operations stays true.
#[test]
fn s3_compatibility_page_is_current() {
    let script = common::repo_root().join("tools/s3-compat");
    check(
        "python3",
        &[script.to_str().unwrap(), "--check"],
        "Debian's python3",
    );
}
