//! S3 access keys and per-bucket grants live in meta: created, listed
//! (never with secrets), granted and revoked through the CLI, kept across a
//! meta restart, and cleaned up with their key or bucket.

mod common;

use common::Cluster;

#[test]
fn access_keys_and_grants() {
    let mut c = Cluster::start(1);
    let k = c.json(&["key", "create", "backup", "--json"]);
    let id = k["access_key"].as_str().unwrap().to_string();
    let secret = k["secret_key"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 20, "{k}");
    assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()), "{k}");
    assert_eq!(secret.len(), 40, "{k}");
    // Operators may choose both (as `tessera dev --access-key` will).
    let human = c.ok(&[
        "key",
        "create",
        "fixed",
        "--access-key",
        "TESSERADEVKEY0001",
        "--secret-key",
        "devsecretdevsecret",
    ]);
    assert!(human.contains("access key: TESSERADEVKEY0001"), "{human}");
    assert!(human.contains("secret key: devsecretdevsecret"), "{human}");

    // Bad and duplicate keys are refused and change nothing.
    let err = c.fails(&["key", "create", "x", "--access-key", "short"]);
    assert!(err.contains("16 to 128 letters and digits"), "{err}");
    let err = c.fails(&["key", "create", "x", "--access-key", "TESSERADEVKEY0001"]);
    assert!(err.contains("already exists"), "{err}");
    let err = c.fails(&["key", "create", "x", "--secret-key", "short"]);
    assert!(err.contains("16 to 128 characters"), "{err}");

    c.ok(&["bucket", "create", "photos"]);
    c.ok(&["bucket", "create", "logs"]);
    c.ok(&["bucket", "allow", "photos", &id, "write"]);
    c.ok(&["bucket", "allow", "logs", &id, "read"]);
    c.ok(&["bucket", "allow", "logs", "TESSERADEVKEY0001", "owner"]);
    let err = c.fails(&["bucket", "allow", "nope", &id, "read"]);
    assert!(err.contains("no such bucket"), "{err}");
    let err = c.fails(&["bucket", "allow", "logs", "NOSUCHKEY0000000", "read"]);
    assert!(err.contains("no access key"), "{err}");
    let err = c.fails(&["bucket", "allow", "logs", &id, "admin"]);
    assert!(err.contains("read, write or owner"), "{err}");
    // `bucket create --owner KEY` grants the bucket to KEY; an unknown key
    // is refused before the bucket exists.
    let out = c.ok(&["bucket", "create", "owned", "--owner", "TESSERADEVKEY0001"]);
    assert!(out.contains("owned by TESSERADEVKEY0001"), "{out}");
    let err = c.fails(&["bucket", "create", "orphan", "--owner", "NOSUCHKEY0000000"]);
    assert!(err.contains("no access key"), "{err}");
    assert!(!c.ok(&["bucket", "ls"]).contains("orphan"));

    // Listing shows keys and grants, never a secret.
    let ls = c.ok(&["key", "ls", "--json"]);
    assert!(
        !ls.contains(&secret) && !ls.contains("devsecretdevsecret"),
        "{ls}"
    );
    let keys: serde_json::Value = serde_json::from_str(&ls).unwrap();
    let mine = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["access_key"] == id.as_str())
        .unwrap();
    assert_eq!(mine["name"], "backup");
    let grants: Vec<(String, String)> = mine["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["bucket"].as_str().unwrap().to_string(),
                g["permission"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        grants,
        [
            ("logs".into(), "read".into()),
            ("photos".into(), "write".into())
        ]
    );

    // Revoking, and a restart of meta: what is left stays.
    c.ok(&["bucket", "deny", "photos", &id]);
    c.kill_meta();
    c.start_meta();
    c.wait_nodes_up(1);
    let ls = c.ok(&["key", "ls"]);
    assert!(ls.contains(&format!("{id}  backup")), "{ls}");
    assert!(ls.contains("logs:read") && !ls.contains("photos:"), "{ls}");

    // A removed key takes its grants along; so does a removed bucket.
    c.ok(&["key", "rm", &id]);
    let err = c.fails(&["key", "rm", &id]);
    assert!(err.contains("no access key"), "{err}");
    c.ok(&["bucket", "rm", "logs"]);
    c.ok(&["bucket", "rm", "owned"]);
    let ls = c.json(&["key", "ls", "--json"]);
    let left = ls.as_array().unwrap();
    assert_eq!(left.len(), 1, "{ls}");
    assert_eq!(left[0]["grants"].as_array().unwrap().len(), 0, "{ls}");
}
