"""boto3 against the Tessera S3 gateway: run by tests/s3_boto3.rs as
`python3 tests/s3_boto3.py ENDPOINT ACCESS_KEY SECRET_KEY`. Exits non-zero
with a message on the first difference from what S3 does."""

import io
import os
import sys
import time
import urllib.error
import urllib.request

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint, key, secret = sys.argv[1:4]


def client(**cfg):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(**cfg),
    )


s3 = client()
v4 = client(signature_version="s3v4")


def error_code(fn):
    try:
        fn()
    except ClientError as e:
        return e.response["Error"]["Code"]
    raise AssertionError("expected an error")


def http(url, method="GET", data=None, headers=None):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


s3.create_bucket(Bucket="boto")
assert "boto" in [b["Name"] for b in s3.list_buckets()["Buckets"]]

# PutObject as boto3 sends it today: aws-chunked with a CRC32 trailer.
data = os.urandom(3_000_000)
r = s3.put_object(Bucket="boto", Key="dir/a.bin", Body=data, Metadata={"k": "v"},
                  ContentType="application/x-test")
got = s3.get_object(Bucket="boto", Key="dir/a.bin")
assert got["Body"].read() == data, "GET returned other bytes"
assert got["Metadata"] == {"k": "v"}, got["Metadata"]
assert got["ContentType"] == "application/x-test"
assert got["ETag"] == r["ETag"]
part = s3.get_object(Bucket="boto", Key="dir/a.bin", Range="bytes=100-199")["Body"].read()
assert part == data[100:200]
assert error_code(lambda: s3.get_object(Bucket="boto", Key="dir/a.bin", Range="bytes=5000000-")) == "InvalidRange"
assert error_code(lambda: s3.get_object(Bucket="boto", Key="nope")) == "NoSuchKey"

# Presigned URLs through plain HTTP: GET with V2 and V4, PUT with V4.
for c in (s3, v4):
    url = c.generate_presigned_url("get_object", Params={"Bucket": "boto", "Key": "dir/a.bin"}, ExpiresIn=60)
    status, body = http(url)
    assert status == 200 and body == data, (status, body[:200])
url = v4.generate_presigned_url("put_object", Params={"Bucket": "boto", "Key": "presigned"}, ExpiresIn=60)
status, body = http(url, "PUT", b"via a presigned URL")
assert status == 200, (status, body)
assert s3.get_object(Bucket="boto", Key="presigned")["Body"].read() == b"via a presigned URL"
# Expired and tampered URLs are refused and store nothing.
url = v4.generate_presigned_url("put_object", Params={"Bucket": "boto", "Key": "late"}, ExpiresIn=1)
time.sleep(2)
status, body = http(url, "PUT", b"too late")
assert status == 403 and b"AccessDenied" in body, (status, body)
url = v4.generate_presigned_url("get_object", Params={"Bucket": "boto", "Key": "presigned"}, ExpiresIn=60)
status, body = http(url.replace("presigned", "dir/a.bin"))
assert status == 403 and b"SignatureDoesNotMatch" in body, (status, body)
assert error_code(lambda: s3.head_object(Bucket="boto", Key="late")) in ("404", "NoSuchKey")

# Multipart through the transfer manager (5 MiB parts, 3 at a time).
big = os.urandom(17 * 1024 * 1024)
cfg = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024, max_concurrency=3)
s3.upload_fileobj(io.BytesIO(big), "boto", "big.bin", Config=cfg)
head = s3.head_object(Bucket="boto", Key="big.bin")
assert head["ContentLength"] == len(big) and head["ETag"].endswith('-4"'), head
out = io.BytesIO()
s3.download_fileobj("boto", "big.bin", out, Config=cfg)
assert out.getvalue() == big, "multipart object differs"

# Listing pages, copy, batch delete.
for i in range(7):
    s3.put_object(Bucket="boto", Key=f"many/{i:02}", Body=b"x")
keys, token = [], None
while True:
    kw = {"Bucket": "boto", "Prefix": "many/", "MaxKeys": 3}
    if token:
        kw["ContinuationToken"] = token
    page = s3.list_objects_v2(**kw)
    keys += [o["Key"] for o in page.get("Contents", [])]
    if not page["IsTruncated"]:
        break
    token = page["NextContinuationToken"]
assert keys == [f"many/{i:02}" for i in range(7)], keys
top = s3.list_objects_v2(Bucket="boto", Delimiter="/")
assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["dir/", "many/"], top
s3.copy_object(Bucket="boto", Key="copy.bin", CopySource={"Bucket": "boto", "Key": "dir/a.bin"})
assert s3.get_object(Bucket="boto", Key="copy.bin")["Body"].read() == data
res = s3.delete_objects(Bucket="boto", Delete={"Objects": [{"Key": f"many/{i:02}"} for i in range(7)]})
assert len(res["Deleted"]) == 7, res
assert "Contents" not in s3.list_objects_v2(Bucket="boto", Prefix="many/")
assert error_code(lambda: s3.delete_bucket(Bucket="boto")) == "BucketNotEmpty"

# Conditional create, Content-MD5, response overrides.
s3.put_object(Bucket="boto", Key="once", Body=b"first", IfNoneMatch="*")
assert error_code(lambda: s3.put_object(Bucket="boto", Key="once", Body=b"second", IfNoneMatch="*")) == "PreconditionFailed"
assert s3.get_object(Bucket="boto", Key="once")["Body"].read() == b"first"
import base64, hashlib
good = base64.b64encode(hashlib.md5(b"digest").digest()).decode()
wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
s3.put_object(Bucket="boto", Key="md5", Body=b"digest", ContentMD5=good)
assert error_code(lambda: s3.put_object(Bucket="boto", Key="md5", Body=b"changed", ContentMD5=wrong)) == "BadDigest"
assert s3.get_object(Bucket="boto", Key="md5")["Body"].read() == b"digest"
url = v4.generate_presigned_url("get_object", Params={
    "Bucket": "boto", "Key": "md5", "ResponseContentType": "text/x-override",
    "ResponseContentDisposition": 'attachment; filename="d.txt"'}, ExpiresIn=60)
with urllib.request.urlopen(url) as r:
    assert r.headers["Content-Type"] == "text/x-override", dict(r.headers)
    assert r.headers["Content-Disposition"] == 'attachment; filename="d.txt"', dict(r.headers)

# A wrong secret is refused.
bad = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key,
                   aws_secret_access_key="not-the-secret-at-all", region_name="us-east-1")
assert error_code(lambda: bad.list_objects_v2(Bucket="boto")) == "SignatureDoesNotMatch"
print("boto3: all checks passed")
