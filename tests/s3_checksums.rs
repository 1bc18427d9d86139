//! Multipart checksums (issue 15; S3 User Guide, "Checking object
//! integrity"): full-object and composite checksums with every algorithm
//! and the types it allows, through boto3 (tests/s3_checksums.py: every
//! value computed there from the bytes sent), aws-cli (`s3 cp
//! --checksum-algorithm` and the `s3api` multipart calls with a full-object
//! CRC32 checked on completion) and the AWS SDK for Rust (a full-object
//! CRC64NVME upload whose GET the SDK verifies against the bytes it reads).

mod common;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, ChecksumType, CompletedMultipartUpload, CompletedPart,
};
use base64::Engine;
use common::{Aws, Cluster};

/// CRC-32 (ISO-HDLC, as S3's CRC32), bit by bit: an independent check of
/// the gateway's combination of the parts' CRCs.
fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for b in data {
        c ^= u32::from(*b);
        for _ in 0..8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn multipart_checksums_through_boto3_aws_cli_and_the_rust_sdk() {
    let mut c = Cluster::start(6);
    let endpoint = c.start_s3();
    let k = c.json(&["key", "create", "sums", "--json"]);
    let (key, secret) = (
        k["access_key"].as_str().unwrap().to_string(),
        k["secret_key"].as_str().unwrap().to_string(),
    );
    common::python_checks(
        "s3_checksums.py",
        &[&endpoint, &key, &secret],
        "checksums: all checks passed",
    );

    // aws-cli: its managed multipart upload with a CRC32, read back verified.
    let aws = Aws {
        endpoint: endpoint.clone(),
        key: key.clone(),
        secret: secret.clone(),
    };
    let json = |args: &[&str]| -> serde_json::Value {
        serde_json::from_str(&aws.ok(args)).expect("aws JSON")
    };
    aws.ok(&["s3", "mb", "s3://cli"]);
    let file = c.path("big");
    common::random_file(&file, 12 << 20, 15);
    let data = std::fs::read(&file).unwrap();
    let f = file.to_str().unwrap();
    aws.ok(&[
        "s3",
        "cp",
        f,
        "s3://cli/cp",
        "--checksum-algorithm",
        "CRC32",
    ]);
    let head = json(&[
        "s3api",
        "head-object",
        "--bucket",
        "cli",
        "--key",
        "cp",
        "--checksum-mode",
        "ENABLED",
    ]);
    assert!(head["ChecksumCRC32"].is_string(), "{head}");
    assert!(head["ChecksumType"].is_string(), "{head}");
    let back = c.path("back");
    aws.ok(&[
        "s3",
        "cp",
        "s3://cli/cp",
        back.to_str().unwrap(),
        "--checksum-mode",
        "ENABLED",
    ]);
    assert!(common::same_file(&file, &back));

    // aws-cli's s3api: a full-object CRC32 upload; a wrong whole-object
    // checksum is refused with nothing stored, the right one accepted.
    let (first, rest) = data.split_at(5 << 20);
    std::fs::write(c.path("p1"), first).unwrap();
    std::fs::write(c.path("p2"), rest).unwrap();
    let up = json(&[
        "s3api",
        "create-multipart-upload",
        "--bucket",
        "cli",
        "--key",
        "full",
        "--checksum-algorithm",
        "CRC32",
        "--checksum-type",
        "FULL_OBJECT",
    ]);
    assert_eq!(up["ChecksumType"], "FULL_OBJECT", "{up}");
    let id = up["UploadId"].as_str().unwrap().to_string();
    let mut parts = Vec::new();
    for (n, p) in [(1, "p1"), (2, "p2")] {
        let part = json(&[
            "s3api",
            "upload-part",
            "--bucket",
            "cli",
            "--key",
            "full",
            "--upload-id",
            &id,
            "--part-number",
            &n.to_string(),
            "--body",
            c.path(p).to_str().unwrap(),
            "--checksum-algorithm",
            "CRC32",
        ]);
        parts.push(serde_json::json!({
            "PartNumber": n,
            "ETag": part["ETag"],
            "ChecksumCRC32": part["ChecksumCRC32"],
        }));
    }
    let listed = serde_json::json!({ "Parts": parts }).to_string();
    let whole = b64(&crc32(&data).to_be_bytes());
    let complete = |sum: &str| {
        aws.run(&[
            "s3api",
            "complete-multipart-upload",
            "--bucket",
            "cli",
            "--key",
            "full",
            "--upload-id",
            &id,
            "--multipart-upload",
            &listed,
            "--checksum-crc32",
            sum,
        ])
    };
    let refused = complete(&b64(&crc32(b"not the object").to_be_bytes()));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("BadDigest"),
        "{err}"
    );
    let missing = aws.run(&["s3api", "head-object", "--bucket", "cli", "--key", "full"]);
    assert!(
        !missing.status.success(),
        "a refused completion stored the object"
    );
    let done = complete(&whole);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let attrs = json(&[
        "s3api",
        "get-object-attributes",
        "--bucket",
        "cli",
        "--key",
        "full",
        "--object-attributes",
        "Checksum",
        "ObjectParts",
    ]);
    assert_eq!(attrs["Checksum"]["ChecksumCRC32"], whole, "{attrs}");
    assert_eq!(attrs["Checksum"]["ChecksumType"], "FULL_OBJECT", "{attrs}");
    assert_eq!(attrs["ObjectParts"]["TotalPartsCount"], 2, "{attrs}");
    assert_eq!(
        attrs["ObjectParts"]["Parts"][1]["ChecksumCRC32"],
        b64(&crc32(rest).to_be_bytes()),
        "{attrs}"
    );

    // The Rust SDK: a full-object CRC64NVME upload; its GET is verified by
    // the SDK against the bytes it reads.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s3 = tessera_cli::s3_client(&endpoint, "us-east-1", &key, &secret);
        s3.create_bucket().bucket("rust").send().await.unwrap();
        let up = s3
            .create_multipart_upload()
            .bucket("rust")
            .key("nvme")
            .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
            .checksum_type(ChecksumType::FullObject)
            .send()
            .await
            .unwrap();
        assert_eq!(up.checksum_type(), Some(&ChecksumType::FullObject));
        let id = up.upload_id().unwrap();
        let mut done = CompletedMultipartUpload::builder();
        for (n, bytes) in [(1, first), (2, rest)] {
            let p = s3
                .upload_part()
                .bucket("rust")
                .key("nvme")
                .upload_id(id)
                .part_number(n)
                .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
                .body(ByteStream::from(bytes.to_vec()))
                .send()
                .await
                .unwrap();
            assert!(p.checksum_crc64_nvme().is_some());
            done = done.parts(
                CompletedPart::builder()
                    .part_number(n)
                    .e_tag(p.e_tag().unwrap())
                    .set_checksum_crc64_nvme(p.checksum_crc64_nvme().map(String::from))
                    .build(),
            );
        }
        let out = s3
            .complete_multipart_upload()
            .bucket("rust")
            .key("nvme")
            .upload_id(id)
            .multipart_upload(done.build())
            .send()
            .await
            .unwrap();
        assert_eq!(out.checksum_type(), Some(&ChecksumType::FullObject));
        let sum = out.checksum_crc64_nvme().unwrap().to_string();
        assert!(!sum.contains('-'), "{sum}");
        let got = s3
            .get_object()
            .bucket("rust")
            .key("nvme")
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .unwrap();
        assert_eq!(got.checksum_crc64_nvme(), Some(sum.as_str()));
        let body = got.body.collect().await.expect("a verified body");
        assert_eq!(body.into_bytes().as_ref(), &data[..]);
    });
    common::assert_no_error_lines(&c.path("s3.log"));
}
