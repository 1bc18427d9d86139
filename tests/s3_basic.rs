//! The S3 gateway as aws-cli sees it: buckets, single-part objects,
//! listings with prefixes and delimiters, ranges, metadata, and refusals
//! (wrong secret, unknown key, no grant, missing bucket or key, non-empty
//! bucket) in S3's own error codes; multipart uploads through `aws s3 cp`
//! and s3api; copies, batch deletes and conditions.

mod common;

use std::process::Output;

use common::{Aws, Cluster, random_file, same_file};

impl Aws {
    /// `complete-multipart-upload` of `key` with parts 1 and 2 of these ETags.
    fn complete(&self, bucket: &str, key: &str, id: &str, e1: &str, e2: &str) -> Output {
        let parts = format!(
            r#"{{"Parts":[{{"PartNumber":1,"ETag":{e1:?}}},{{"PartNumber":2,"ETag":{e2:?}}}]}}"#
        );
        self.run(&[
            "s3api",
            "complete-multipart-upload",
            "--bucket",
            bucket,
            "--key",
            key,
            "--upload-id",
            id,
            "--multipart-upload",
            &parts,
        ])
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Starts the gateway on `c` and an aws-cli signing with a new key `name`.
fn gateway(c: &mut Cluster, name: &str) -> Aws {
    let endpoint = c.start_s3();
    let (key, secret) = key(c, name);
    Aws {
        endpoint,
        key,
        secret,
    }
}

fn key(c: &Cluster, name: &str) -> (String, String) {
    let k = c.json(&["key", "create", name, "--json"]);
    (
        k["access_key"].as_str().unwrap().to_string(),
        k["secret_key"].as_str().unwrap().to_string(),
    )
}

#[test]
fn aws_cli_buckets_objects_listing_and_refusals() {
    let mut c = Cluster::start(6);
    let aws = gateway(&mut c, "alice");
    let (endpoint, id, secret) = (aws.endpoint.clone(), aws.key.clone(), aws.secret.clone());

    aws.ok(&["s3", "mb", "s3://photos"]);
    // The creator owns the bucket.
    let grants = c.ok(&["key", "ls"]);
    assert!(grants.contains("photos:owner"), "{grants}");

    let src = c.path("five");
    random_file(&src, 5_000_000, 1);
    aws.ok(&[
        "s3",
        "cp",
        src.to_str().unwrap(),
        "s3://photos/2026/five.bin",
    ]);
    let small = c.path("small");
    std::fs::write(&small, b"hello, tessera\n").unwrap();
    aws.ok(&[
        "s3api",
        "put-object",
        "--bucket",
        "photos",
        "--key",
        "notes/a b/../x.txt",
        "--body",
        small.to_str().unwrap(),
        "--content-type",
        "text/plain",
        "--metadata",
        "colour=blue",
    ]);

    // Keys that URL decoding would change: listings use encoding-type=url.
    let odd = "odd%2Fkey+plus é&<x>";
    aws.ok(&[
        "s3api",
        "put-object",
        "--bucket",
        "photos",
        "--key",
        odd,
        "--body",
        small.to_str().unwrap(),
    ]);
    let v2: serde_json::Value = serde_json::from_str(&aws.ok(&[
        "s3api",
        "list-objects-v2",
        "--bucket",
        "photos",
        "--prefix",
        "odd",
    ]))
    .unwrap();
    assert_eq!(v2["Contents"][0]["Key"], odd, "{v2}");
    let v1: serde_json::Value = serde_json::from_str(&aws.ok(&[
        "s3api",
        "list-objects",
        "--bucket",
        "photos",
        "--prefix",
        "odd",
    ]))
    .unwrap();
    assert_eq!(v1["Contents"][0]["Key"], odd, "{v1}");
    assert!(aws.ok(&["s3", "ls", "s3://photos/"]).contains(odd));
    aws.ok(&["s3api", "delete-object", "--bucket", "photos", "--key", odd]);

    // Listings: with the delimiter, and recursive.
    let top = aws.ok(&["s3", "ls", "s3://photos/"]);
    assert!(
        top.contains("PRE 2026/") && top.contains("PRE notes/"),
        "{top}"
    );
    let all = aws.ok(&["s3", "ls", "--recursive", "s3://photos/"]);
    assert!(
        all.contains("2026/five.bin") && all.contains("notes/a b/../x.txt"),
        "{all}"
    );
    let v2: serde_json::Value = serde_json::from_str(&aws.ok(&[
        "s3api",
        "list-objects-v2",
        "--bucket",
        "photos",
        "--prefix",
        "2026/",
    ]))
    .unwrap();
    assert_eq!(v2["Contents"].as_array().map(Vec::len), Some(1), "{v2}");
    assert_eq!(v2["Contents"][0]["Size"], 5_000_000, "{v2}");

    // Reads: whole, a range, head with metadata; the ETag is the MD5.
    let back = c.path("back");
    aws.ok(&[
        "s3",
        "cp",
        "s3://photos/2026/five.bin",
        back.to_str().unwrap(),
    ]);
    assert!(same_file(&src, &back));
    let ranged = c.path("ranged");
    aws.ok(&[
        "s3api",
        "get-object",
        "--bucket",
        "photos",
        "--key",
        "2026/five.bin",
        "--range",
        "bytes=4194300-4194309",
        ranged.to_str().unwrap(),
    ]);
    let whole = std::fs::read(&src).unwrap();
    assert_eq!(std::fs::read(&ranged).unwrap(), &whole[4194300..4194310]);
    let head: serde_json::Value = serde_json::from_str(&aws.ok(&[
        "s3api",
        "head-object",
        "--bucket",
        "photos",
        "--key",
        "notes/a b/../x.txt",
    ]))
    .unwrap();
    assert_eq!(head["ContentType"], "text/plain", "{head}");
    assert_eq!(head["Metadata"]["colour"], "blue", "{head}");
    let md5 = {
        use md5::{Digest, Md5};
        hex::encode(Md5::digest(b"hello, tessera\n"))
    };
    assert_eq!(head["ETag"], format!("\"{md5}\""), "{head}");

    // Refusals, each in S3's own terms, none changing anything.
    let bad = Aws {
        endpoint: endpoint.clone(),
        key: id.clone(),
        secret: "wrong-secret-wrong-secret".into(),
    };
    let err = bad.fails(&["s3", "ls", "s3://photos/"]);
    assert!(err.contains("SignatureDoesNotMatch"), "{err}");
    let unknown = Aws {
        endpoint: endpoint.clone(),
        key: "NOSUCHKEY00000000000".into(),
        secret: secret.clone(),
    };
    let err = unknown.fails(&["s3", "ls", "s3://photos/"]);
    assert!(err.contains("InvalidAccessKeyId"), "{err}");
    let (bob, bob_secret) = key(&c, "bob");
    let bob = Aws {
        endpoint: endpoint.clone(),
        key: bob,
        secret: bob_secret,
    };
    let err = bob.fails(&["s3", "rm", "s3://photos/2026/five.bin"]);
    assert!(err.contains("AccessDenied"), "{err}");
    let err = bob.fails(&["s3", "ls", "s3://photos/"]);
    assert!(err.contains("AccessDenied"), "{err}");
    c.ok(&["bucket", "allow", "photos", &bob.key, "read"]);
    assert!(bob.ok(&["s3", "ls", "s3://photos/"]).contains("PRE 2026/"));
    let err = bob.fails(&["s3", "rm", "s3://photos/2026/five.bin"]);
    assert!(err.contains("AccessDenied"), "{err}");
    let err = aws.fails(&["s3", "ls", "s3://nope/"]);
    assert!(err.contains("NoSuchBucket"), "{err}");
    let err = aws.fails(&[
        "s3api",
        "get-object",
        "--bucket",
        "photos",
        "--key",
        "missing",
        "/dev/null",
    ]);
    assert!(err.contains("NoSuchKey"), "{err}");
    let err = aws.fails(&[
        "s3api",
        "get-object",
        "--bucket",
        "photos",
        "--key",
        "2026/five.bin",
        "--range",
        "bytes=6000000-6000010",
        "/dev/null",
    ]);
    assert!(err.contains("InvalidRange"), "{err}");
    let err = aws.fails(&["s3", "rb", "s3://photos"]);
    assert!(err.contains("BucketNotEmpty"), "{err}");
    aws.ok(&[
        "s3",
        "cp",
        "s3://photos/2026/five.bin",
        back.to_str().unwrap(),
    ]);
    assert!(same_file(&src, &back), "refused requests changed the data");

    // Clean up through S3.
    aws.ok(&["s3", "rm", "--recursive", "s3://photos/"]);
    aws.ok(&["s3", "rb", "s3://photos"]);
    assert!(!aws.ok(&["s3", "ls"]).contains("photos"));
}

fn md5_hex(b: &[u8]) -> String {
    use md5::{Digest, Md5};
    hex::encode(Md5::digest(b))
}

#[test]
fn aws_cli_multipart_uploads() {
    let mut c = Cluster::start(6);
    let aws = gateway(&mut c, "mp");
    aws.ok(&["s3", "mb", "s3://big"]);
    let json = |args: &[&str]| -> serde_json::Value {
        serde_json::from_str(&aws.ok(args)).expect("aws JSON")
    };

    // aws s3 cp switches to multipart above 8 MiB by itself.
    let src = c.path("twenty");
    random_file(&src, 20 << 20, 7);
    aws.ok(&["s3", "cp", src.to_str().unwrap(), "s3://big/twenty"]);
    let back = c.path("twenty.back");
    aws.ok(&["s3", "cp", "s3://big/twenty", back.to_str().unwrap()]);
    assert!(same_file(&src, &back));

    // The explicit flow, with S3's ETag rule.
    let p1 = c.path("p1");
    let p2 = c.path("p2");
    random_file(&p1, 5 << 20, 8);
    random_file(&p2, 1 << 20, 9);
    let up = json(&[
        "s3api",
        "create-multipart-upload",
        "--bucket",
        "big",
        "--key",
        "joined",
    ]);
    let id = up["UploadId"].as_str().unwrap().to_string();
    let put_part = |n: &str, file: &std::path::Path| -> String {
        json(&[
            "s3api",
            "upload-part",
            "--bucket",
            "big",
            "--key",
            "joined",
            "--upload-id",
            &id,
            "--part-number",
            n,
            "--body",
            file.to_str().unwrap(),
        ])["ETag"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let e1 = put_part("1", &p1);
    let e2 = put_part("2", &p2);
    let b1 = std::fs::read(&p1).unwrap();
    let b2 = std::fs::read(&p2).unwrap();
    assert_eq!(e1, format!("\"{}\"", md5_hex(&b1)));
    let parts = json(&[
        "s3api",
        "list-parts",
        "--bucket",
        "big",
        "--key",
        "joined",
        "--upload-id",
        &id,
    ]);
    assert_eq!(parts["Parts"].as_array().unwrap().len(), 2, "{parts}");
    assert_eq!(parts["Parts"][0]["Size"], 5 << 20, "{parts}");
    let uploads = aws.ok(&["s3api", "list-multipart-uploads", "--bucket", "big"]);
    assert!(uploads.contains(&id), "{uploads}");
    // Not visible before completion.
    let listed = aws.ok(&["s3", "ls", "s3://big/"]);
    assert!(!listed.contains("joined"), "{listed}");

    let err = stderr(&aws.complete("big", "joined", &id, &e1, "\"0000\""));
    assert!(err.contains("InvalidPart"), "{err}");
    let out = aws.complete("big", "joined", &id, &e1, &e2);
    assert!(out.status.success(), "{}", stderr(&out));
    let out: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut both = hex::decode(md5_hex(&b1)).unwrap();
    both.extend(hex::decode(md5_hex(&b2)).unwrap());
    assert_eq!(out["ETag"], format!("\"{}-2\"", md5_hex(&both)), "{out}");
    let joined = c.path("joined");
    aws.ok(&["s3", "cp", "s3://big/joined", joined.to_str().unwrap()]);
    let mut want = b1.clone();
    want.extend(&b2);
    assert!(
        std::fs::read(&joined).unwrap() == want,
        "joined object differs"
    );

    // Parts below 5 MiB but the last are refused; aborting forgets the upload.
    let up = json(&[
        "s3api",
        "create-multipart-upload",
        "--bucket",
        "big",
        "--key",
        "small",
    ]);
    let id2 = up["UploadId"].as_str().unwrap().to_string();
    let small_part = |n: &str| -> String {
        json(&[
            "s3api",
            "upload-part",
            "--bucket",
            "big",
            "--key",
            "small",
            "--upload-id",
            &id2,
            "--part-number",
            n,
            "--body",
            p2.to_str().unwrap(),
        ])["ETag"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (s1, s2) = (small_part("1"), small_part("2"));
    let err = stderr(&aws.complete("big", "small", &id2, &s1, &s2));
    assert!(err.contains("EntityTooSmall"), "{err}");
    aws.ok(&[
        "s3api",
        "abort-multipart-upload",
        "--bucket",
        "big",
        "--key",
        "small",
        "--upload-id",
        &id2,
    ]);
    let uploads = aws.ok(&["s3api", "list-multipart-uploads", "--bucket", "big"]);
    assert!(!uploads.contains(&id2), "{uploads}");
    let err = aws.fails(&[
        "s3api",
        "upload-part",
        "--bucket",
        "big",
        "--key",
        "small",
        "--upload-id",
        &id2,
        "--part-number",
        "3",
        "--body",
        p2.to_str().unwrap(),
    ]);
    assert!(err.contains("NoSuchUpload"), "{err}");
    assert!(!aws.ok(&["s3", "ls", "s3://big/"]).contains("small"));
}

#[test]
fn abandoned_multipart_uploads_are_aborted_after_the_expiry() {
    let mut c = Cluster::start_with(6, &["--upload-expiry", "2s", "--gc-grace", "2s"]);
    let aws = gateway(&mut c, "mp");
    aws.ok(&["s3", "mb", "s3://bkt"]);
    let up: serde_json::Value = serde_json::from_str(&aws.ok(&[
        "s3api",
        "create-multipart-upload",
        "--bucket",
        "bkt",
        "--key",
        "k",
    ]))
    .unwrap();
    let id = up["UploadId"].as_str().unwrap().to_string();
    let part = c.path("part");
    random_file(&part, 1 << 20, 3);
    aws.ok(&[
        "s3api",
        "upload-part",
        "--bucket",
        "bkt",
        "--key",
        "k",
        "--upload-id",
        &id,
        "--part-number",
        "1",
        "--body",
        part.to_str().unwrap(),
    ]);
    common::wait_until(
        "the abandoned upload to be aborted",
        std::time::Duration::from_secs(60),
        || {
            !aws.ok(&["s3api", "list-multipart-uploads", "--bucket", "bkt"])
                .contains(&id)
        },
    );
    let err = aws.fails(&[
        "s3api",
        "upload-part",
        "--bucket",
        "bkt",
        "--key",
        "k",
        "--upload-id",
        &id,
        "--part-number",
        "2",
        "--body",
        part.to_str().unwrap(),
    ]);
    assert!(err.contains("NoSuchUpload"), "{err}");
    // Its part's chunks were garbage, and are gone after the grace period.
    common::wait_until(
        "the part's chunks to be purged",
        std::time::Duration::from_secs(60),
        || c.status()["chunks"]["total"] == 0,
    );
}

#[test]
fn aws_cli_copy_batch_delete_and_conditions() {
    let mut c = Cluster::start(6);
    let aws = gateway(&mut c, "cp");
    aws.ok(&["s3", "mb", "s3://src"]);
    aws.ok(&["s3", "mb", "s3://dst"]);
    let file = c.path("six");
    random_file(&file, 6 << 20, 11);
    aws.ok(&[
        "s3api",
        "put-object",
        "--bucket",
        "src",
        "--key",
        "a",
        "--body",
        file.to_str().unwrap(),
        "--content-type",
        "image/png",
        "--metadata",
        "who=alice",
    ]);
    let json = |args: &[&str]| -> serde_json::Value {
        serde_json::from_str(&aws.ok(args)).expect("aws JSON")
    };
    let etag = json(&["s3api", "head-object", "--bucket", "src", "--key", "a"])["ETag"]
        .as_str()
        .unwrap()
        .to_string();

    // Copy keeps the metadata, or replaces it.
    aws.ok(&[
        "s3api",
        "copy-object",
        "--bucket",
        "dst",
        "--key",
        "kept",
        "--copy-source",
        "src/a",
    ]);
    let kept = json(&["s3api", "head-object", "--bucket", "dst", "--key", "kept"]);
    assert_eq!(kept["ETag"], etag.as_str(), "{kept}");
    assert_eq!(kept["ContentType"], "image/png", "{kept}");
    assert_eq!(kept["Metadata"]["who"], "alice", "{kept}");
    aws.ok(&[
        "s3api",
        "copy-object",
        "--bucket",
        "dst",
        "--key",
        "new",
        "--copy-source",
        "src/a",
        "--metadata-directive",
        "REPLACE",
        "--content-type",
        "text/plain",
        "--metadata",
        "who=bob",
    ]);
    let new = json(&["s3api", "head-object", "--bucket", "dst", "--key", "new"]);
    assert_eq!(new["ContentType"], "text/plain", "{new}");
    assert_eq!(new["Metadata"]["who"], "bob", "{new}");
    let back = c.path("back");
    aws.ok(&["s3", "cp", "s3://dst/new", back.to_str().unwrap()]);
    assert!(same_file(&file, &back));

    // Conditions on GET and HEAD.
    let err = aws.fails(&[
        "s3api",
        "get-object",
        "--bucket",
        "src",
        "--key",
        "a",
        "--if-match",
        "\"0000\"",
        "/dev/null",
    ]);
    assert!(
        err.contains("PreconditionFailed") || err.contains("412"),
        "{err}"
    );
    let err = aws.fails(&[
        "s3api",
        "get-object",
        "--bucket",
        "src",
        "--key",
        "a",
        "--if-none-match",
        &etag,
        "/dev/null",
    ]);
    assert!(err.contains("304") || err.contains("Not Modified"), "{err}");
    aws.ok(&[
        "s3api",
        "get-object",
        "--bucket",
        "src",
        "--key",
        "a",
        "--if-match",
        &etag,
        "/dev/null",
    ]);
    let err = aws.fails(&[
        "s3api",
        "head-object",
        "--bucket",
        "src",
        "--key",
        "a",
        "--if-unmodified-since",
        "2001-01-01T00:00:00Z",
    ]);
    assert!(err.contains("412") || err.contains("Precondition"), "{err}");

    // Batch delete, verbose and quiet; missing keys count as deleted.
    let out = json(&[
        "s3api",
        "delete-objects",
        "--bucket",
        "dst",
        "--delete",
        r#"{"Objects":[{"Key":"kept"},{"Key":"missing"}]}"#,
    ]);
    assert_eq!(out["Deleted"].as_array().unwrap().len(), 2, "{out}");
    let out = aws.ok(&[
        "s3api",
        "delete-objects",
        "--bucket",
        "dst",
        "--delete",
        r#"{"Objects":[{"Key":"new"}],"Quiet":true}"#,
    ]);
    assert!(!out.contains("\"Key\""), "{out}");
    assert!(aws.ok(&["s3", "ls", "s3://dst/"]).trim().is_empty());
}

/// Every file below `dir`, relative, with its bytes.
fn tree(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn aws_cli_sync_and_presign() {
    let mut c = Cluster::start(6);
    let aws = gateway(&mut c, "sync");
    aws.ok(&["s3", "mb", "s3://mirror"]);
    let src = c.path("src");
    for (i, name) in ["a.txt", "sub/b.bin", "sub/deeper/c d.bin", "sub/é.txt"]
        .iter()
        .enumerate()
    {
        let p = src.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        random_file(&p, 1000 + i * 300_000, i as u64);
    }
    let src_s = src.to_str().unwrap();
    let up = aws.ok(&["s3", "sync", src_s, "s3://mirror/tree"]);
    assert_eq!(up.matches("upload:").count(), 4, "{up}");
    // A second sync finds nothing to do; a changed and a removed file are
    // uploaded and deleted (with --delete) and nothing else is touched.
    assert_eq!(aws.ok(&["s3", "sync", src_s, "s3://mirror/tree"]), "");
    std::fs::write(src.join("a.txt"), b"changed, and of another size").unwrap();
    std::fs::remove_file(src.join("sub/b.bin")).unwrap();
    let again = aws.ok(&["s3", "sync", "--delete", src_s, "s3://mirror/tree"]);
    assert_eq!(again.matches("upload:").count(), 1, "{again}");
    assert_eq!(again.matches("delete:").count(), 1, "{again}");
    let back = c.path("back");
    aws.ok(&["s3", "sync", "s3://mirror/tree", back.to_str().unwrap()]);
    assert_eq!(tree(&back), tree(&src));

    // `aws s3 presign`: a URL anyone can GET for a while, with plain HTTP.
    let url = aws.ok(&[
        "s3",
        "presign",
        "s3://mirror/tree/sub/deeper/c d.bin",
        "--expires-in",
        "60",
    ]);
    let rest = url.trim().strip_prefix("http://").expect("an http URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap());
    let got = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(authority).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).unwrap();
        let split = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        assert!(
            resp.starts_with(b"HTTP/1.0 200"),
            "{}",
            String::from_utf8_lossy(&resp[..split])
        );
        resp[split + 4..].to_vec()
    };
    assert_eq!(got, std::fs::read(src.join("sub/deeper/c d.bin")).unwrap());
    aws.ok(&["s3", "rm", "--recursive", "s3://mirror/tree"]);
    assert_eq!(aws.ok(&["s3", "ls", "--recursive", "s3://mirror/"]), "");
}
