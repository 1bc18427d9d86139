//! The web console (issue 16) in a real headless browser: Chromium driven
//! over WebDriver by tests/console_browser.py (Selenium), against a real
//! cluster of processes. The status page shows every node up; a drain
//! started from the console's button completes and the node is removed
//! from its Remove button; after a SIGKILL the node shows down and health
//! degrades. Screenshots land in the test's temp directory under target/.
//! Console actions without a signed-in cookie are refused and change
//! nothing (curl).

mod common;

use std::path::Path;
use std::process::Command;

use common::{Cluster, curl};

fn browse(phase: &str, base: &str, token: &str, out: &Path, arg: &str) {
    let script = common::repo_root().join("tests/console_browser.py");
    let run = Command::new("python3")
        .arg(script)
        .args([phase, base, token])
        .arg(out)
        .arg(arg)
        .output()
        .expect("python3 must be installed (tools/test installs selenium and chromium)");
    assert!(
        run.status.success()
            && String::from_utf8_lossy(&run.stdout).contains("console checks passed"),
        "console phase {phase} failed (screenshots in {}):\n{}{}",
        out.display(),
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn console_shows_health_and_drains_removes_in_a_browser() {
    // Seven nodes: one drains while ec:4+2 still finds six.
    let mut c = Cluster::start_admin(7);
    let base = c.admin_url();
    c.ok(&["bucket", "create", "media"]);
    c.put_objects("media", &[("clip".into(), 5 << 20)], 3, &[]);
    let token = c.admin_token();
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console");

    // Without a signed-in cookie, console actions are refused.
    let victim = c.node_id(0);
    let r = curl(
        "POST",
        &format!("{base}/ui/nodes/{victim}/drain"),
        None,
        &["-H", "HX-Request: true"],
    );
    assert_eq!(r.status, 401, "{}", r.body);
    // ... and a cookie without htmx's header (a form posted from another
    // site) is refused too.
    let r = curl(
        "POST",
        &format!("{base}/ui/nodes/{victim}/drain"),
        None,
        &["-H", &format!("Cookie: tessera_admin={token}")],
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        c.node_entry(&c.status_fresh(), 0).unwrap()["admin"],
        "active"
    );

    browse("status", &base, &token, &out, "7");
    browse("drain", &base, &token, &out, &victim);
    assert!(c.node_entry(&c.status(), 0).is_none(), "node 0 not removed");

    c.kill_node(1);
    browse("down", &base, &token, &out, &c.node_id(1));
    eprintln!("console screenshots: {}", out.display());
}
