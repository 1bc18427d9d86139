//! The admin HTTP API (issue 16) against a real cluster of processes, with
//! curl as the client: every endpoint, and every refusal (no token, a bad
//! token, an unknown or malformed node, removing a node that holds data).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Cluster, curl, wait_until};
use serde_json::Value;

/// A status with what changes between two reads of an idle cluster taken
/// out: the time since each node's last heartbeat, the bytes used on the
/// file system the nodes share with everything else on this machine, and
/// the traffic rates (the last writes may still be in them).
fn steady(mut s: Value) -> Value {
    for n in s["nodes"].as_array_mut().expect("nodes") {
        n["last_seen_ms"] = Value::Null;
        n["used"] = Value::Null;
        n["write_bytes_per_s"] = Value::Null;
        n["read_bytes_per_s"] = Value::Null;
    }
    s["throughput"] = Value::Null;
    s
}

#[test]
fn admin_api_serves_every_endpoint_and_refuses_without_a_known_token() {
    // Seven nodes: one can drain while ec:4+2 still finds six.
    let c = Cluster::start_admin(7);
    let base = c.admin_url();
    let url = |path: &str| format!("{base}{path}");
    c.ok(&["bucket", "create", "photos"]);
    c.put_objects(
        "photos",
        &[("a".into(), 3 << 20), ("b".into(), 100_000)],
        1,
        &[],
    );
    let token = c.admin_token();
    let t = Some(token.as_str());

    // The OpenAPI document is open and names the bearer scheme.
    let doc = curl("GET", &url("/v1/openapi.json"), None, &[]);
    assert_eq!(doc.status, 200, "{}", doc.body);
    let doc = doc.json();
    assert!(doc["paths"]["/v1/nodes/{id}/remove"]["post"].is_object());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );

    // No token, a bad token, another scheme: 401 with a JSON error body.
    let victim = c.node_id(0);
    for auth in [
        vec![],
        vec!["-H", "Authorization: Bearer 0123456789abcdef"],
        vec!["-H", "Authorization: Basic dXNlcjpwYXNz"],
    ] {
        for (method, path) in [
            ("GET", "/v1/status".to_string()),
            ("GET", "/v1/nodes".to_string()),
            ("GET", "/v1/buckets".to_string()),
            ("GET", "/v1/keys".to_string()),
            ("GET", "/v1/volumes".to_string()),
            ("GET", "/v1/repair".to_string()),
            ("POST", "/v1/scrub".to_string()),
            ("POST", format!("/v1/nodes/{victim}/drain")),
            ("POST", format!("/v1/nodes/{victim}/remove")),
            ("GET", "/v1/no-such-thing".to_string()),
        ] {
            let r = curl(method, &url(&path), None, &auth);
            assert_eq!(r.status, 401, "{method} {path} {auth:?}: {}", r.body);
            assert_eq!(r.json()["error"]["code"], "unauthorized", "{}", r.body);
            assert!(
                r.header("www-authenticate")
                    .is_some_and(|h| h.starts_with("Bearer")),
                "{method} {path}: no WWW-Authenticate"
            );
        }
    }
    // ... and changed nothing: no drain, no scrub.
    let s = c.status_fresh();
    assert_eq!(c.node_entry(&s, 0).unwrap()["admin"], "active");
    assert_eq!(s["scrub_seq"], 0);

    // GET /v1/status is `tessera status --json`.
    let mut same = false;
    for _ in 0..10 {
        let api = curl("GET", &url("/v1/status"), t, &[]);
        assert_eq!(api.status, 200, "{}", api.body);
        let cli = c.status();
        if steady(api.json()) == steady(cli.clone()) {
            same = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(same, "GET /v1/status differs from tessera status --json");
    let status = c.status();
    assert_eq!(status["nodes"].as_array().unwrap().len(), 7);
    assert!(status["chunks"]["total"].as_u64().unwrap() > 0);

    // Nodes: all of them, one of them, an unknown one, a malformed id.
    let nodes = curl("GET", &url("/v1/nodes"), t, &[]).json();
    let nodes = nodes.as_array().unwrap();
    assert_eq!(nodes.len(), 7);
    assert!(nodes.iter().all(|n| n["state"] == "up"), "{nodes:?}");
    let one = curl("GET", &url(&format!("/v1/nodes/{victim}")), t, &[]);
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["id"], victim.as_str());
    let unknown = "00000000deadbeef";
    for (method, path) in [
        ("GET", format!("/v1/nodes/{unknown}")),
        ("POST", format!("/v1/nodes/{unknown}/drain")),
        ("POST", format!("/v1/nodes/{unknown}/remove")),
    ] {
        let r = curl(method, &url(&path), t, &[]);
        assert_eq!(r.status, 404, "{method} {path}: {}", r.body);
        assert_eq!(r.json()["error"]["code"], "not_found");
    }
    let bad = curl("POST", &url("/v1/nodes/not-a-node/drain"), t, &[]);
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(bad.json()["error"]["code"], "bad_request");
    let nowhere = curl("GET", &url("/v1/no-such-thing"), t, &[]);
    assert_eq!(nowhere.status, 404);

    // Buckets and keys, with grants.
    let key = c.json(&["key", "create", "reader", "--json"]);
    let key_id = key["access_key"].as_str().unwrap();
    c.ok(&["bucket", "allow", "photos", key_id, "read"]);
    let buckets = curl("GET", &url("/v1/buckets"), t, &[]).json();
    let photos = buckets
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "photos")
        .expect("bucket listed")
        .clone();
    assert_eq!(photos["policy"], "ec:4+2");
    assert!(
        photos["grants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["access_key"] == key_id && g["permission"] == "read"),
        "{photos}"
    );
    let keys = curl("GET", &url("/v1/keys"), t, &[]);
    assert_eq!(keys.status, 200);
    assert_eq!(keys.json(), c.json(&["key", "ls", "--json"]));
    assert!(!keys.body.contains(key["secret_key"].as_str().unwrap()));

    // Volumes: the document `tessera volume ls --json` prints.
    c.ok(&["volume", "create", "disk", "--size", "1GiB"]);
    c.ok(&["volume", "snapshot", "disk", "s1"]);
    let volumes = curl("GET", &url("/v1/volumes"), t, &[]);
    assert_eq!(volumes.status, 200, "{}", volumes.body);
    assert_eq!(volumes.json(), c.json(&["volume", "ls", "--json"]));
    assert_eq!(volumes.json()[0]["size"], 1u64 << 30);
    assert_eq!(volumes.json()[0]["snapshots"][0]["name"], "s1");
    assert!(doc["paths"]["/v1/volumes"]["get"].is_object());

    // Repair and scrub progress; a scrub started over the API.
    let repair = curl("GET", &url("/v1/repair"), t, &[]).json();
    assert_eq!(repair["chunks"]["total"], status["chunks"]["total"]);
    assert_eq!(repair["scrub"].as_array().unwrap().len(), 7);
    let scrub = curl("POST", &url("/v1/scrub"), t, &[]);
    assert_eq!(scrub.status, 202, "{}", scrub.body);
    assert_eq!(scrub.json()["seq"], 1);
    assert_eq!(c.status()["scrub_seq"], 1);

    // A node that holds data is not removed (as `tessera node rm` refuses).
    let held = c.node_entry(&c.status(), 0).unwrap()["fragments"]
        .as_u64()
        .unwrap();
    assert!(held > 0, "node 0 holds nothing to refuse over");
    let refused = curl("POST", &url(&format!("/v1/nodes/{victim}/remove")), t, &[]);
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert_eq!(refused.json()["error"]["code"], "conflict");
    assert!(
        refused.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("drain it first")
    );
    assert!(c.node_entry(&c.status(), 0).is_some());

    // Drain, wait for the repairer to empty it, then remove it.
    let drain = curl("POST", &url(&format!("/v1/nodes/{victim}/drain")), t, &[]);
    assert_eq!(drain.status, 202, "{}", drain.body);
    assert_eq!(drain.json()["admin"], "draining");
    wait_until("node 0 drained", Duration::from_secs(180), || {
        let n = curl("GET", &url(&format!("/v1/nodes/{victim}")), t, &[]).json();
        n["admin"] == "draining" && n["fragments"] == 0
    });
    let removed = curl("POST", &url(&format!("/v1/nodes/{victim}/remove")), t, &[]);
    assert_eq!(removed.status, 200, "{}", removed.body);
    assert_eq!(removed.json()["admin"], "removed");
    let gone = curl("GET", &url(&format!("/v1/nodes/{victim}")), t, &[]);
    assert_eq!(gone.status, 404, "{}", gone.body);
    assert_eq!(
        curl("GET", &url("/v1/nodes"), t, &[])
            .json()
            .as_array()
            .unwrap()
            .len(),
        6
    );
    for obj in ["photos/a", "photos/b"] {
        c.ok(&["get", obj, c.path("check").to_str().unwrap()]);
    }

    // Deleted data awaits garbage collection, and status says so (issue
    // 16: "chunks: 0 total" while the nodes still held the fragments).
    c.ok(&["rm", "photos/b"]);
    let g = c.status()["garbage"].clone();
    assert!(g["fragments"].as_u64().unwrap() >= 6, "{g}");
    assert!(g["bytes"].as_u64().unwrap() >= 100_000, "{g}");
    assert_eq!(
        g["collect_from_ms"].as_u64().unwrap(),
        g["oldest_ms"].as_u64().unwrap() + g["grace_ms"].as_u64().unwrap()
    );
    assert_eq!(curl("GET", &url("/v1/status"), t, &[]).json()["garbage"], g);
    let human = c.ok(&["status"]);
    assert!(human.contains("awaiting garbage collection:"), "{human}");

    // Tokens are listed by id (the start of their hash) and revoked at once.
    let other = c.admin_token();
    let id = |token: &str| blake3::hash(token.as_bytes()).to_hex()[..16].to_string();
    let listed = c.json(&["admin-token", "ls", "--json"]);
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&id(&token).as_str()) && ids.contains(&id(&other).as_str()));
    assert!(
        !listed.to_string().contains(&other),
        "a listing shows a token"
    );
    c.ok(&["admin-token", "rm", &id(&other)[..10]]);
    let revoked = curl("GET", &url("/v1/status"), Some(&other), &[]);
    assert_eq!(revoked.status, 401, "{}", revoked.body);
    assert_eq!(curl("GET", &url("/v1/status"), t, &[]).status, 200);
    assert!(
        c.fails(&["admin-token", "rm", &id(&other)])
            .contains("no admin token")
    );
}

/// The nodes' traffic reaches status (and so the API, the CLI and the
/// console's charts): while a writer runs, bytes written per second show
/// on the nodes and in the cluster's sum; while a reader runs, bytes read;
/// once both stop, the rates fall back to zero.
#[test]
fn status_shows_the_traffic_the_nodes_see() {
    let c = Cluster::start_admin(6);
    let token = c.admin_token();
    c.ok(&["bucket", "create", "traffic"]);
    let src = c.path("object");
    common::random_file(&src, 8 << 20, 3);
    let stop = Arc::new(AtomicBool::new(false));

    let moving = |what: &'static str, args: Vec<String>| {
        let (cli, stop) = (c.cli(), stop.clone());
        std::thread::spawn(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            while !stop.load(Ordering::Relaxed) {
                let out = cli.tessera(&args);
                assert!(out.status.success(), "{what}: {out:?}");
            }
        })
    };
    let api_status = || {
        let r = curl(
            "GET",
            &format!("{}/v1/status", c.admin_url()),
            Some(&token),
            &[],
        );
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    };
    let figure = |s: &Value, field: &str| {
        let total = s["throughput"][field].as_u64().expect("throughput figure");
        let per_node: u64 = s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n[field].as_u64().expect("node figure"))
            .sum();
        assert_eq!(total, per_node, "the sum is not the nodes' sum: {s}");
        total
    };

    let writer = moving(
        "put",
        vec![
            "put".into(),
            src.to_str().unwrap().into(),
            "traffic/w".into(),
        ],
    );
    wait_until(
        "bytes written per second in status",
        Duration::from_secs(60),
        || figure(&api_status(), "write_bytes_per_s") > 0,
    );
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();

    stop.store(false, Ordering::Relaxed);
    let reader = moving("get", vec!["get".into(), "traffic/w".into(), "-".into()]);
    wait_until(
        "bytes read per second in status",
        Duration::from_secs(60),
        || figure(&api_status(), "read_bytes_per_s") > 0,
    );
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    let text = c.ok(&["status"]);
    assert!(text.contains("throughput on the nodes:"), "{text}");

    wait_until(
        "an idle cluster's rates back at zero",
        Duration::from_secs(60),
        || {
            let s = api_status();
            figure(&s, "write_bytes_per_s") == 0 && figure(&s, "read_bytes_per_s") == 0
        },
    );
}

/// `tessera --admin URL` (or TESSERA_ADMIN_URL) runs the admin commands
/// through the admin HTTP API with the token from TESSERA_ADMIN_TOKEN, and
/// prints what the QUIC path prints; it refuses without a good token and
/// refuses commands the API does not carry rather than taking QUIC.
#[test]
fn the_cli_runs_admin_commands_through_the_admin_api() {
    let c = Cluster::start_admin(7);
    c.ok(&["bucket", "create", "viaapi"]);
    c.put_objects("viaapi", &[("a".into(), 200_000)], 9, &[]);
    c.ok(&["key", "create", "someone"]);
    let token = c.admin_token();
    let over_api = |args: &[&str], token: Option<&str>| {
        let mut cmd = c.cli().command(args);
        cmd.env("TESSERA_ADMIN_URL", c.admin_url());
        match token {
            Some(t) => cmd.env("TESSERA_ADMIN_TOKEN", t),
            None => cmd.env_remove("TESSERA_ADMIN_TOKEN"),
        };
        cmd.output().expect("run tessera")
    };
    let json_over_api = |args: &[&str]| -> Value {
        let out = over_api(args, Some(&token));
        assert!(out.status.success(), "{args:?} over the API: {out:?}");
        serde_json::from_slice(&out.stdout).expect("JSON from the API")
    };

    for args in [
        &["bucket", "ls", "--json"][..],
        &["key", "ls", "--json"],
        &["volume", "ls", "--json"],
    ] {
        assert_eq!(json_over_api(args), c.json(args), "{args:?}");
    }
    let mut same = false;
    for _ in 0..10 {
        if steady(json_over_api(&["status", "--json"])) == steady(c.status()) {
            same = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(same, "status --json over the API differs from over QUIC");

    // Drain through the API; removing a node that still holds data is
    // refused with the API's reason.
    let holder = (0..7)
        .find(|&i| c.node_entry(&c.status(), i).unwrap()["fragments"].as_u64() > Some(0))
        .expect("a node with fragments");
    let id = c.node_id(holder);
    let out = over_api(&["node", "rm", &id], Some(&token));
    assert!(!out.status.success(), "removing a node that holds data");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("fragments") || err.contains("drain"), "{err}");
    let out = over_api(&["node", "drain", &id], Some(&token));
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("is draining"));
    assert_eq!(
        c.node_entry(&c.status(), holder).unwrap()["admin"],
        "draining"
    );

    // No token, a wrong token, and a command the API does not carry.
    let out = over_api(&["status", "--json"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("TESSERA_ADMIN_TOKEN"));
    let out = over_api(&["status", "--json"], Some("0123456789abcdef"));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused the token"),
        "{out:?}"
    );
    let out = over_api(&["ls", "viaapi"], Some(&token));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("without --admin"),
        "{out:?}"
    );
}
