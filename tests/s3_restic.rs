//! restic, the backup tool, as it comes (Debian's package; tools/test
//! installs it) against the S3 gateway: `init`, `backup`, `check
//! --read-data` (every pack read back and its hashes checked), `restore`
//! compared byte for byte with the source tree, a second incremental
//! backup, and `forget --prune` (which rewrites and deletes packs). Then the
//! same while a storage node is SIGKILLed in the middle of a backup.
//!
//! restic's packs are 4-16 MiB objects written once and read by range,
//! its index and snapshot files small objects, and `prune` deletes many at
//! a time: a fair stand-in for the backup tools (restic, Kopia, Velero)
//! users point at S3.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Cluster, random_file, wait_until};

const PASSWORD: &str = "correct horse battery staple";

struct Restic {
    repository: String,
    key: String,
    secret: String,
    cache: PathBuf,
}

impl Restic {
    /// A gateway, a key of its own, and a repository in `bucket`, which
    /// `restic init` creates.
    fn new(c: &mut Cluster, bucket: &str) -> Restic {
        let endpoint = c.start_s3();
        let k = c.json(&["key", "create", "restic", "--json"]);
        Restic {
            repository: format!("s3:{endpoint}/{bucket}"),
            key: k["access_key"].as_str().unwrap().to_string(),
            secret: k["secret_key"].as_str().unwrap().to_string(),
            cache: c.path("restic-cache"),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("restic");
        cmd.args(args)
            .arg("--cache-dir")
            .arg(&self.cache)
            .env("RESTIC_REPOSITORY", &self.repository)
            .env("RESTIC_PASSWORD", PASSWORD)
            .env("AWS_ACCESS_KEY_ID", &self.key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env_remove("AWS_PROFILE");
        cmd
    }

    fn ok(&self, args: &[&str], dir: &Path) -> String {
        let out = self
            .command(args)
            .current_dir(dir)
            .output()
            .expect("restic must be installed (tools/test installs it)");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "restic {args:?} failed: {}{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    fn spawn(&self, args: &[&str], dir: &Path, log: &Path) -> Child {
        let log = std::fs::File::create(log).unwrap();
        self.command(args)
            .current_dir(dir)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("restic must be installed (tools/test installs it)")
    }
}

/// A tree of `small` files of a few bytes to 60 KiB in nested directories,
/// the `big` sizes as random files, a symlink and an empty directory.
fn make_tree(root: &Path, small: usize, big: &[usize], seed: u64) {
    for i in 0..small {
        let dir = root.join(format!("d{}/e{}", i % 7, i % 3));
        std::fs::create_dir_all(&dir).unwrap();
        random_file(
            &dir.join(format!("f{i}.bin")),
            1 + (i * 7919) % 60_000,
            seed + i as u64,
        );
    }
    for (n, len) in big.iter().enumerate() {
        random_file(
            &root.join(format!("big{n}")),
            *len,
            seed + 10_000 + n as u64,
        );
    }
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::os::unix::fs::symlink("d0/e0/f0.bin", root.join("link")).unwrap();
}

/// `diff -r --no-dereference` finds no difference between the two trees.
fn same_tree(a: &Path, b: &Path) {
    let out = Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(a)
        .arg(b)
        .output()
        .expect("diff");
    assert!(
        out.status.success(),
        "restored tree differs from the source: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn restore_and_compare(restic: &Restic, c: &Cluster, tree: &Path, name: &str) {
    let target = c.path(name);
    restic.ok(
        &["restore", "latest", "--target", target.to_str().unwrap()],
        tree,
    );
    same_tree(tree, &target);
}

#[test]
fn restic_backs_up_checks_restores_and_prunes() {
    let mut c = Cluster::start(6);
    let restic = Restic::new(&mut c, "backups");
    let tree = c.path("tree");
    make_tree(&tree, 400, &[30 << 20, 12 << 20, 5 << 20], 1);

    restic.ok(&["init"], &tree);
    restic.ok(&["backup", "."], &tree);
    restic.ok(&["check", "--read-data"], &tree);
    restore_and_compare(&restic, &c, &tree, "restore1");

    // An incremental backup after changes: new, changed and removed files.
    random_file(&tree.join("d1/e1/f1.bin"), 70_000, 99);
    random_file(&tree.join("new-big"), 9 << 20, 98);
    std::fs::remove_file(tree.join("big1")).unwrap();
    let out = restic.ok(&["backup", ".", "--json"], &tree);
    assert!(out.contains("\"files_new\""), "{out}");
    let snapshots = restic.ok(&["snapshots", "--json"], &tree);
    let snapshots: serde_json::Value = serde_json::from_str(&snapshots).unwrap();
    assert_eq!(snapshots.as_array().map(Vec::len), Some(2), "{snapshots}");

    // Forgetting the first snapshot and pruning rewrites packs and deletes
    // the unused ones (DeleteObjects and single deletes); what is left is
    // whole and restores the second state.
    restic.ok(&["forget", "--keep-last", "1", "--prune"], &tree);
    restic.ok(&["check", "--read-data"], &tree);
    restore_and_compare(&restic, &c, &tree, "restore2");
}

#[test]
fn restic_backup_survives_a_node_killed_midway() {
    // Seven nodes for ec:4+2: writes never go to a down node, so once meta
    // has noticed the dead one, six are left for every stripe.
    let mut c = Cluster::start(7);
    let restic = Restic::new(&mut c, "backups");
    let tree = c.path("tree");
    make_tree(&tree, 300, &[60 << 20, 60 << 20, 40 << 20], 7);
    restic.ok(&["init"], &tree);

    let log = c.path("restic-backup.log");
    let mut backup = restic.spawn(&["backup", "."], &tree, &log);
    // Kill a node once restic has stored a few packs, so the backup is
    // surely in the middle of its uploads.
    let victim = 3;
    let before = c.fragment_files(victim).len();
    wait_until(
        "restic storing its first packs",
        Duration::from_secs(120),
        || c.fragment_files(victim).len() >= before + 8,
    );
    assert!(
        backup.try_wait().unwrap().is_none(),
        "the backup finished before the node could be killed: make the tree larger"
    );
    let killed = Instant::now();
    c.kill_node(victim);
    eprintln!("node {victim} SIGKILLed while restic was backing up");
    let status = backup.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.success(),
        "restic backup failed after a node died: {text}"
    );
    eprintln!(
        "backup finished {:.1}s after the kill; restic said: {}",
        killed.elapsed().as_secs_f64(),
        text.lines()
            .filter(|l| l.contains("rror") || l.contains("etry") || l.contains("processed"))
            .collect::<Vec<_>>()
            .join(" | ")
    );

    // Everything restic wrote reads back whole, through degraded reads
    // where a fragment was on the dead node.
    restic.ok(&["check", "--read-data"], &tree);
    restore_and_compare(&restic, &c, &tree, "restore");
}
