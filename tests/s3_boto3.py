"""boto3 against the Tessera S3 gateway: run by tests/s3_boto3.rs as
`python3 tests/s3_boto3.py ENDPOINT ACCESS_KEY SECRET_KEY DOMAIN REGION_ENDPOINT REGION`,
where ENDPOINT's gateway serves virtual-hosted style for DOMAIN and
REGION_ENDPOINT's accepts only requests signed for REGION. Exits non-zero
with a message on the first difference from what S3 does."""

import base64
import datetime
import hashlib
import io
import os
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib

import botocore.auth
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint, key, secret, domain, region_endpoint, region = sys.argv[1:7]
gateway_ip = urllib.parse.urlsplit(endpoint).hostname
port = urllib.parse.urlsplit(endpoint).port


def client(url=None, region_name="us-east-1", **cfg):
    return boto3.client(
        "s3",
        endpoint_url=url or endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name=region_name,
        config=Config(**cfg),
    )


s3 = client()
v4 = client(signature_version="s3v4")


def refusal(fn):
    try:
        fn()
    except ClientError as e:
        print("refusal:", e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"], file=sys.stderr)
        return e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"]
    raise AssertionError("expected an error")


def error_code(fn):
    return refusal(fn)[1]


def http(url, method="GET", data=None, headers=None):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def signed(method, path, body=b"", headers=None, url=None):
    """A SigV4-signed request built by hand, for bodies boto3 would not send."""
    req = AWSRequest(method=method, url=(url or endpoint) + path, data=body, headers=headers or {})
    if "x-amz-content-sha256" not in req.headers:
        req.headers["x-amz-content-sha256"] = hashlib.sha256(body).hexdigest()
    SigV4Auth(Credentials(key, secret), "s3", "us-east-1").add_auth(req)
    return http(req.url, method, body or None, dict(req.headers.items()))


def b64(digest):
    return base64.b64encode(digest).decode()


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
# System metadata is stored and returned.
expires = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
s3.put_object(Bucket="boto", Key="headers", Body=b"\x1f\x8b not really gzip", ContentType="text/plain",
              ContentEncoding="gzip", ContentDisposition='attachment; filename="h.txt"',
              CacheControl="max-age=60", ContentLanguage="en", Expires=expires)
for r in (s3.head_object(Bucket="boto", Key="headers"), s3.get_object(Bucket="boto", Key="headers")):
    assert r["ContentEncoding"] == "gzip", r
    assert r["ContentDisposition"] == 'attachment; filename="h.txt"', r
    assert r["CacheControl"] == "max-age=60", r
    assert r["ContentLanguage"] == "en", r
    assert r["ResponseMetadata"]["HTTPHeaders"]["expires"] == "Wed, 02 Jan 2030 03:04:05 GMT", r
s3.copy_object(Bucket="boto", Key="headers-copy", CopySource={"Bucket": "boto", "Key": "headers"})
assert s3.head_object(Bucket="boto", Key="headers-copy")["CacheControl"] == "max-age=60"
s3.copy_object(Bucket="boto", Key="headers-copy", CopySource={"Bucket": "boto", "Key": "headers"},
               MetadataDirective="REPLACE", CacheControl="no-store", Metadata={"n": "1"})
h = s3.head_object(Bucket="boto", Key="headers-copy")
assert h["CacheControl"] == "no-store" and h["Metadata"] == {"n": "1"} and "ContentEncoding" not in h, h

# Checksums: boto3's default CRC32 trailer, SHA256 on request, a value in a
# header; all stored and returned when asked; a wrong value stores nothing.
crc32 = b64(zlib.crc32(data).to_bytes(4, "big"))
h = s3.head_object(Bucket="boto", Key="dir/a.bin", ChecksumMode="ENABLED")
assert h.get("ChecksumCRC32") == crc32, h
assert "ChecksumCRC64NVME" in h, h
assert "ChecksumCRC32" not in s3.head_object(Bucket="boto", Key="dir/a.bin"), "checksums unasked"
sha = b64(hashlib.sha256(data).digest())
s3.put_object(Bucket="boto", Key="sha", Body=data, ChecksumAlgorithm="SHA256")
g = s3.get_object(Bucket="boto", Key="sha", ChecksumMode="ENABLED")
assert g["ChecksumSHA256"] == sha, g
assert g["Body"].read() == data  # botocore checks the body against the checksum too
s3.put_object(Bucket="boto", Key="sha1", Body=b"abc", ChecksumSHA1=b64(hashlib.sha1(b"abc").digest()))
assert s3.head_object(Bucket="boto", Key="sha1", ChecksumMode="ENABLED")["ChecksumSHA1"] == b64(hashlib.sha1(b"abc").digest())
assert error_code(lambda: s3.put_object(Bucket="boto", Key="sha1", Body=b"abd",
                                        ChecksumSHA1=b64(hashlib.sha1(b"abc").digest()))) == "BadDigest"
assert s3.get_object(Bucket="boto", Key="sha1")["Body"].read() == b"abc"
# A trailer that does not match what was sent: aws-chunked by hand.
payload = b"trailer body"
chunked = (b"%x\r\n" % len(payload)) + payload + b"\r\n0\r\nx-amz-checksum-crc32:" + \
    b64(zlib.crc32(b"something else").to_bytes(4, "big")).encode() + b"\r\n\r\n"
status, body = signed("PUT", "/boto/trailer", chunked, {
    "Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(payload)),
    "x-amz-trailer": "x-amz-checksum-crc32", "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER"})
assert status == 400 and b"BadDigest" in body and b"<RequestId>" in body, (status, body)
assert error_code(lambda: s3.head_object(Bucket="boto", Key="trailer")) in ("404", "NoSuchKey")

# partNumber on a multipart object (parts of 5, 5, 5 and 2 MiB) and on a plain one.
MiB = 1024 * 1024
g = s3.get_object(Bucket="boto", Key="big.bin", PartNumber=2)
assert g["PartsCount"] == 4 and g["ContentRange"] == f"bytes {5 * MiB}-{10 * MiB - 1}/{len(big)}", g
assert g["Body"].read() == big[5 * MiB:10 * MiB]
h = s3.head_object(Bucket="boto", Key="big.bin", PartNumber=4)
assert h["ContentLength"] == 2 * MiB and h["PartsCount"] == 4, h
assert error_code(lambda: s3.get_object(Bucket="boto", Key="big.bin", PartNumber=5)) == "InvalidPartNumber"
assert s3.get_object(Bucket="boto", Key="once", PartNumber=1)["Body"].read() == b"first"

# UploadPartCopy: a range of one object and the whole of another.
up = s3.create_multipart_upload(Bucket="boto", Key="joined", CacheControl="max-age=5")["UploadId"]
p1 = s3.upload_part_copy(Bucket="boto", Key="joined", UploadId=up, PartNumber=1,
                         CopySource={"Bucket": "boto", "Key": "big.bin"}, CopySourceRange=f"bytes=0-{5 * MiB - 1}")
p2 = s3.upload_part_copy(Bucket="boto", Key="joined", UploadId=up, PartNumber=2,
                         CopySource={"Bucket": "boto", "Key": "dir/a.bin"})
assert error_code(lambda: s3.upload_part_copy(
    Bucket="boto", Key="joined", UploadId=up, PartNumber=3, CopySource={"Bucket": "boto", "Key": "once"},
    CopySourceRange="bytes=0-99")) == "InvalidRange"
s3.complete_multipart_upload(Bucket="boto", Key="joined", UploadId=up, MultipartUpload={"Parts": [
    {"PartNumber": 1, "ETag": p1["CopyPartResult"]["ETag"]},
    {"PartNumber": 2, "ETag": p2["CopyPartResult"]["ETag"]}]})
g = s3.get_object(Bucket="boto", Key="joined")
assert g["Body"].read() == big[:5 * MiB] + data and g["CacheControl"] == "max-age=5", g

# Malformed XML bodies are refused and change nothing.
up = s3.create_multipart_upload(Bucket="boto", Key="mp-xml")["UploadId"]
status, body = signed("POST", f"/boto/mp-xml?uploadId={up}", b"<CompleteMultipartUpload><Part>")
assert status == 400 and b"MalformedXML" in body, (status, body)
assert s3.list_parts(Bucket="boto", Key="mp-xml", UploadId=up)["UploadId"] == up
status, body = signed("POST", "/boto?delete", b"<Delete><Object><Key>once</Key></Obj", {
    "Content-MD5": b64(hashlib.md5(b"<Delete><Object><Key>once</Key></Obj").digest())})
assert status == 400 and b"MalformedXML" in body, (status, body)
assert s3.get_object(Bucket="boto", Key="once")["Body"].read() == b"first"

# Oversize headers, metadata and keys get 4xx and store nothing.
status, body = signed("PUT", "/boto/huge-header", b"x", {"x-amz-meta-big": "a" * 9000})
assert status == 400 and b"RequestHeaderSectionTooLarge" in body, (status, body)
status, body = http(f"{endpoint}/boto/huge-header", "PUT", b"x", {"x-junk": "a" * 100_000})
assert status == 400 and b"RequestHeaderSectionTooLarge" in body, (status, body)
# Past the HTTP layer's own limit the answer is 431 and the connection is
# closed, possibly before the client has finished sending.
with socket.create_connection((gateway_ip, port)) as sock:
    try:
        sock.sendall(b"PUT /boto/huge-header HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"a" * 1_000_000 + b"\r\n\r\n")
        reply = sock.recv(100)
        assert reply.startswith(b"HTTP/1.1 431") or reply == b"", reply
    except (BrokenPipeError, ConnectionResetError):
        pass
assert error_code(lambda: s3.put_object(Bucket="boto", Key="meta", Body=b"x",
                                        Metadata={"m": "v" * 2100})) == "MetadataTooLarge"
assert error_code(lambda: s3.put_object(Bucket="boto", Key="k" * 1025, Body=b"x")) == "KeyTooLongError"
for k in ("huge-header", "meta"):
    assert error_code(lambda: s3.head_object(Bucket="boto", Key=k)) in ("404", "NoSuchKey")

# Unsigned requests are refused.
status, body = http(f"{endpoint}/boto/dir/a.bin")
assert status == 403 and b"AccessDenied" in body, (status, body)
status, body = http(f"{endpoint}/boto/unsigned", "PUT", b"anonymous")
assert status == 403, status
assert error_code(lambda: s3.head_object(Bucket="boto", Key="unsigned")) in ("404", "NoSuchKey")

# Clock skew over 15 minutes is refused.
real_now = botocore.auth.get_current_datetime
botocore.auth.get_current_datetime = lambda: real_now() - datetime.timedelta(minutes=20)
try:
    assert error_code(lambda: client().list_objects_v2(Bucket="boto")) == "RequestTimeTooSkewed"
finally:
    botocore.auth.get_current_datetime = real_now

# Virtual-hosted style: BUCKET.DOMAIN resolves to the gateway (a name this
# test resolves itself, as DNS would).
real_getaddrinfo = socket.getaddrinfo
socket.getaddrinfo = lambda host, *a, **k: real_getaddrinfo(
    gateway_ip if isinstance(host, str) and host.endswith("." + domain) else host, *a, **k)
vh = client(url=f"http://{domain}:{port}", s3={"addressing_style": "virtual"})
vh.put_object(Bucket="boto", Key="virtual/x", Body=b"by host name")
assert vh.get_object(Bucket="boto", Key="virtual/x")["Body"].read() == b"by host name"
assert [o["Key"] for o in vh.list_objects_v2(Bucket="boto", Prefix="virtual/")["Contents"]] == ["virtual/x"]
url = vh.generate_presigned_url("get_object", Params={"Bucket": "boto", "Key": "virtual/x"}, ExpiresIn=60)
assert url.startswith(f"http://boto.{domain}:{port}/"), url
assert http(url) == (200, b"by host name")
assert s3.get_object(Bucket="boto", Key="virtual/x")["Body"].read() == b"by host name"

# A credential scope with an upper-case region (s3cmd's default "US") is
# accepted.
assert "boto" in [b["Name"] for b in client(region_name="US").list_buckets()["Buckets"]]

# A gateway configured with a region refuses others.
assert error_code(lambda: client(url=region_endpoint).list_buckets()) == "AuthorizationHeaderMalformed"
assert "boto" in [b["Name"] for b in client(url=region_endpoint, region_name=region).list_buckets()["Buckets"]]

# A storage policy through a header, or the location constraint; bad names.
def with_policy(policy):
    c = client()
    c.meta.events.register("before-sign.s3.CreateBucket",
                           lambda request, **kw: request.headers.__setitem__("x-tessera-policy", policy))
    return c
with_policy("rep:3").create_bucket(Bucket="replicated")
s3.create_bucket(Bucket="coded", CreateBucketConfiguration={"LocationConstraint": "ec:3+2"})
assert error_code(lambda: with_policy("raid5").create_bucket(Bucket="nope-policy")) == "InvalidArgument"
assert error_code(lambda: s3.create_bucket(Bucket="Bad_Name")) == "InvalidBucketName"
# Its owner re-creating a bucket gets US East's legacy 200 (the gateway has
# no --region here); the bucket keeps what it holds.
s3.create_bucket(Bucket="boto")
s3.head_bucket(Bucket="boto")

# Keys are stored and listed exactly as given.
odd = ["../x", "a//b", " space ", "%2F", "ü/ñ", "dots/./..", "trailing/"]
for k in odd:
    s3.put_object(Bucket="replicated", Key=k, Body=k.encode())
listed = [o["Key"] for o in s3.list_objects_v2(Bucket="replicated")["Contents"]]
assert sorted(listed) == sorted(odd), listed
for k in odd:
    assert s3.get_object(Bucket="replicated", Key=k)["Body"].read() == k.encode(), k

# Browser uploads: a presigned POST policy, sent as a multipart form.
def post_form(key, content):
    post = v4.generate_presigned_post("boto", key, Fields={"Content-Type": "text/plain"},
                                      Conditions=[{"Content-Type": "text/plain"}, ["content-length-range", 1, 1000]],
                                      ExpiresIn=60)
    boundary = "tesseraformboundary"
    form = b""
    for k, v in post["fields"].items():
        form += f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
    form += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="hello.txt"\r\n'
             f'Content-Type: text/plain\r\n\r\n').encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return http(post["url"], "POST", form, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
status, body = post_form("posted/hello.txt", b"posted through a form")
assert status in (200, 204), (status, body)
status, body = post_form("posted/too-big", b"x" * 1001)
assert status == 400, (status, body)
status, body = post_form("named/${filename}", b"named by the form")
assert status in (200, 204), (status, body)
assert s3.get_object(Bucket="boto", Key="named/hello.txt")["Body"].read() == b"named by the form"
assert [o["Key"] for o in s3.list_objects_v2(Bucket="boto", Prefix="posted/")["Contents"]] == ["posted/hello.txt"]
g = s3.get_object(Bucket="boto", Key="posted/hello.txt")
assert g["Body"].read() == b"posted through a form" and g["ContentType"] == "text/plain", g

# What is not implemented says so.
assert error_code(lambda: s3.put_bucket_website(
    Bucket="boto", WebsiteConfiguration={"IndexDocument": {"Suffix": "index.html"}})) \
    == "NotImplemented"

# ListMultipartUploads pages by key and upload id, and groups by delimiter.
ids = [s3.create_multipart_upload(Bucket="replicated", Key=k)["UploadId"] for k in ("mpu/a", "mpu/b", "mpu/b")]
page = s3.list_multipart_uploads(Bucket="replicated", Prefix="mpu/", MaxUploads=2)
assert page["IsTruncated"] and len(page["Uploads"]) == 2, page
rest = s3.list_multipart_uploads(Bucket="replicated", Prefix="mpu/", KeyMarker=page["NextKeyMarker"],
                                 UploadIdMarker=page["NextUploadIdMarker"])
assert not rest["IsTruncated"] and len(rest["Uploads"]) == 1, rest
assert sorted(u["UploadId"] for u in page["Uploads"] + rest["Uploads"]) == sorted(ids)
assert [u["Key"] for u in page["Uploads"] + rest["Uploads"]] == ["mpu/a", "mpu/b", "mpu/b"]
grouped = s3.list_multipart_uploads(Bucket="replicated", Delimiter="/")
assert [p["Prefix"] for p in grouped["CommonPrefixes"]] == ["mpu/"] and not grouped.get("Uploads"), grouped
for k, i in zip(("mpu/a", "mpu/b", "mpu/b"), ids):
    s3.abort_multipart_upload(Bucket="replicated", Key=k, UploadId=i)
assert not s3.list_multipart_uploads(Bucket="replicated").get("Uploads")

# S3's request-level rules (crates/s3/src/rules.rs), each refused in S3's
# XML error form with S3's status, and conditional writes.
# If-Match is a compare-and-swap: a stale ETag is 412 and keeps the object;
# on a free key it is 404 and creates nothing.
first = s3.put_object(Bucket="boto", Key="cas", Body=b"one")["ETag"]
stale = '"' + hashlib.md5(b"not the current body").hexdigest() + '"'
assert refusal(lambda: s3.put_object(Bucket="boto", Key="cas", Body=b"two", IfMatch=stale)) == (412, "PreconditionFailed")
assert s3.get_object(Bucket="boto", Key="cas")["Body"].read() == b"one"
second = s3.put_object(Bucket="boto", Key="cas", Body=b"two", IfMatch=first)["ETag"]
assert refusal(lambda: s3.put_object(Bucket="boto", Key="cas", Body=b"three", IfMatch=first)) == (412, "PreconditionFailed")
assert s3.get_object(Bucket="boto", Key="cas")["Body"].read() == b"two"
assert refusal(lambda: s3.put_object(Bucket="boto", Key="cas-free", Body=b"x", IfMatch=first)) == (404, "NoSuchKey")
assert refusal(lambda: s3.head_object(Bucket="boto", Key="cas-free"))[0] == 404
# If-None-Match: * creates only; an ETag there, or both headers, is not S3's.
assert refusal(lambda: s3.put_object(Bucket="boto", Key="cas", Body=b"x", IfNoneMatch="*")) == (412, "PreconditionFailed")
s3.put_object(Bucket="boto", Key="cas-free", Body=b"created", IfNoneMatch="*")
assert refusal(lambda: s3.put_object(Bucket="boto", Key="cas", Body=b"x", IfNoneMatch=second)) == (501, "NotImplemented")
assert refusal(lambda: s3.put_object(Bucket="boto", Key="cas", Body=b"x", IfMatch=second,
                                     IfNoneMatch="*")) == (501, "NotImplemented")
assert s3.get_object(Bucket="boto", Key="cas")["Body"].read() == b"two"

# CompleteMultipartUpload: If-Match as on PUT; a failed condition leaves the
# upload to complete later. A body listing no parts is MalformedXML; parts
# out of order are InvalidPartOrder.
up = s3.create_multipart_upload(Bucket="boto", Key="cas")["UploadId"]
etag1 = s3.upload_part(Bucket="boto", Key="cas", UploadId=up, PartNumber=1, Body=b"multi")["ETag"]
etag2 = s3.upload_part(Bucket="boto", Key="cas", UploadId=up, PartNumber=2, Body=b"part")["ETag"]
parts = {"Parts": [{"PartNumber": 1, "ETag": etag1}]}
assert refusal(lambda: s3.complete_multipart_upload(Bucket="boto", Key="cas", UploadId=up, MultipartUpload=parts,
                                                    IfMatch=first)) == (412, "PreconditionFailed")
assert refusal(lambda: s3.complete_multipart_upload(Bucket="boto", Key="cas", UploadId=up, MultipartUpload=parts,
                                                    IfNoneMatch="*")) == (412, "PreconditionFailed")
status, body = signed("POST", f"/boto/cas?uploadId={up}", b"<CompleteMultipartUpload></CompleteMultipartUpload>")
assert status == 400 and b"<Code>MalformedXML</Code>" in body, (status, body)
assert refusal(lambda: s3.complete_multipart_upload(
    Bucket="boto", Key="cas", UploadId=up,
    MultipartUpload={"Parts": [{"PartNumber": 2, "ETag": etag2}, {"PartNumber": 1, "ETag": etag1}]},
)) == (400, "InvalidPartOrder")
assert s3.get_object(Bucket="boto", Key="cas")["Body"].read() == b"two"
s3.complete_multipart_upload(Bucket="boto", Key="cas", UploadId=up, MultipartUpload=parts, IfMatch=second)
assert s3.get_object(Bucket="boto", Key="cas")["Body"].read() == b"multi"

# DeleteObjects names at most 1,000 keys: 1,001 is MalformedXML and deletes
# nothing.
keys = [{"Key": f"many/{i}"} for i in range(1001)]
s3.put_object(Bucket="boto", Key="many/0", Body=b"0")
assert refusal(lambda: s3.delete_objects(Bucket="boto", Delete={"Objects": keys})) == (400, "MalformedXML")
assert s3.get_object(Bucket="boto", Key="many/0")["Body"].read() == b"0"
assert len(s3.delete_objects(Bucket="boto", Delete={"Objects": keys[:1000]})["Deleted"]) == 1000
assert refusal(lambda: s3.get_object(Bucket="boto", Key="many/0"))[0] == 404

# Keys, metadata, part numbers, page sizes, copies.
assert refusal(lambda: s3.put_object(Bucket="boto", Key="k" * 1025, Body=b"x")) == (400, "KeyTooLongError")
s3.put_object(Bucket="boto", Key="k" * 1024, Body=b"x")
assert refusal(lambda: s3.create_multipart_upload(Bucket="boto", Key="k" * 1025)) == (400, "KeyTooLongError")
assert refusal(lambda: s3.put_object(Bucket="boto", Key="meta", Body=b"x",
                                     Metadata={"m": "v" * 2048})) == (400, "MetadataTooLarge")
up = s3.create_multipart_upload(Bucket="boto", Key="numbers")["UploadId"]
for n in (0, 10001):
    r = refusal(lambda: s3.upload_part(Bucket="boto", Key="numbers", UploadId=up, PartNumber=n,
                                       Body=b"x"))
    assert r == (400, "InvalidArgument"), (n, r)
s3.abort_multipart_upload(Bucket="boto", Key="numbers", UploadId=up)
assert refusal(lambda: s3.get_object(Bucket="boto", Key="cas", PartNumber=10001)) == (400, "InvalidArgument")
assert s3.list_objects_v2(Bucket="boto", MaxKeys=5000)["MaxKeys"] == 1000
status, body = signed("GET", "/boto?list-type=2&max-keys=-1")
assert status == 400 and b"<Code>InvalidArgument</Code>" in body, (status, body)
assert refusal(lambda: s3.copy_object(Bucket="boto", Key="cas", CopySource="boto/cas")) == (400, "InvalidRequest")
s3.copy_object(Bucket="boto", Key="cas", CopySource="boto/cas", MetadataDirective="REPLACE", Metadata={"n": "1"})
assert refusal(lambda: s3.copy_object(Bucket="boto", Key="copy", CopySource="boto/cas",
                                      CopySourceIfMatch=stale)) == (412, "PreconditionFailed")
assert refusal(lambda: s3.head_object(Bucket="boto", Key="copy"))[0] == 404

# Object tags (S3 API reference: PutObjectTagging, GetObjectTagging,
# DeleteObjectTagging; x-amz-tagging on PutObject, CopyObject and
# CreateMultipartUpload; x-amz-tagging-count on GET and HEAD).
def tagset(d):
    return [{"Key": k, "Value": v} for k, v in d.items()]


def tags_of(k, bucket="boto"):
    return {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=bucket, Key=k)["TagSet"]}


s3.put_object(Bucket="boto", Key="tagged", Body=b"t", Tagging="project=tessera&empty=&sp%20ace=a%26b")
assert tags_of("tagged") == {"project": "tessera", "empty": "", "sp ace": "a&b"}, tags_of("tagged")
assert s3.get_object(Bucket="boto", Key="tagged")["TagCount"] == 3
h = s3.head_object(Bucket="boto", Key="tagged")
assert h["ResponseMetadata"]["HTTPHeaders"]["x-amz-tagging-count"] == "3", h
assert "TagCount" not in s3.get_object(Bucket="boto", Key="cas")
assert s3.get_object_tagging(Bucket="boto", Key="cas")["TagSet"] == []
longest = {"k" * 128: "v" * 256, "é" * 128: "é" * 256}
s3.put_object_tagging(Bucket="boto", Key="tagged", Tagging={"TagSet": tagset(longest)})
assert tags_of("tagged") == longest
after = s3.head_object(Bucket="boto", Key="tagged")
assert (after["ETag"], after["LastModified"]) == (h["ETag"], h["LastModified"]), "tagging changes only the tags"
ten = {f"k{i}": f"v{i}" for i in range(10)}
s3.put_object_tagging(Bucket="boto", Key="tagged", Tagging={"TagSet": tagset(ten)})
eleven = dict(ten, k10="v10")
for bad in (tagset(eleven),
            [{"Key": "a", "Value": "1"}, {"Key": "a", "Value": "2"}],
            tagset({"k" * 129: "v"}),
            tagset({"k": "v" * 257}),
            tagset({"aws:reserved": "v"})):
    assert refusal(lambda: s3.put_object_tagging(Bucket="boto", Key="tagged", Tagging={"TagSet": bad})) == (400, "InvalidTag"), bad
assert tags_of("tagged") == ten, "refused taggings change nothing"
status, body = signed("PUT", "/boto/tagged?tagging", b"<Tagging><TagSet><Tag><Key>a</Key>")
assert status == 400 and b"<Code>MalformedXML</Code>" in body, (status, body)
assert tags_of("tagged") == ten
for op in (lambda: s3.put_object_tagging(Bucket="boto", Key="no-such", Tagging={"TagSet": tagset({"a": "b"})}),
           lambda: s3.get_object_tagging(Bucket="boto", Key="no-such"),
           lambda: s3.delete_object_tagging(Bucket="boto", Key="no-such")):
    assert refusal(op) == (404, "NoSuchKey")
# x-amz-tagging on PUT is checked as the XML is, and a refusal stores nothing.
header11 = "&".join(f"{k}={v}" for k, v in eleven.items())
assert refusal(lambda: s3.put_object(Bucket="boto", Key="tag-refused", Body=b"x", Tagging=header11)) == (400, "InvalidTag")
assert refusal(lambda: s3.put_object(Bucket="boto", Key="tag-refused", Body=b"x", Tagging="a=1&a=2")) == (400, "InvalidTag")
assert refusal(lambda: s3.head_object(Bucket="boto", Key="tag-refused"))[0] == 404
s3.delete_object_tagging(Bucket="boto", Key="tagged")
assert s3.get_object_tagging(Bucket="boto", Key="tagged")["TagSet"] == []
assert "TagCount" not in s3.get_object(Bucket="boto", Key="tagged")
# Tags belong to the version: an overwrite without tags has none.
s3.put_object_tagging(Bucket="boto", Key="tagged", Tagging={"TagSet": tagset({"a": "1"})})
s3.put_object(Bucket="boto", Key="tagged", Body=b"new")
assert tags_of("tagged") == {}
# Copies keep the source's tags (COPY, the default) or take the request's
# (x-amz-tagging-directive: REPLACE).
s3.put_object(Bucket="boto", Key="tag-src", Body=b"s", Tagging="from=source")
s3.copy_object(Bucket="boto", Key="tag-copy", CopySource="boto/tag-src")
assert tags_of("tag-copy") == {"from": "source"}
s3.copy_object(Bucket="boto", Key="tag-copy", CopySource="boto/tag-src", TaggingDirective="REPLACE", Tagging="new=1")
assert tags_of("tag-copy") == {"new": "1"}
s3.copy_object(Bucket="boto", Key="tag-copy", CopySource="boto/tag-src", TaggingDirective="REPLACE")
assert tags_of("tag-copy") == {}
assert refusal(lambda: s3.copy_object(Bucket="boto", Key="tag-copy", CopySource="boto/tag-src",
                                      TaggingDirective="REPLACE", Tagging=header11)) == (400, "InvalidTag")
# Multipart uploads carry their tags to the object.
up = s3.create_multipart_upload(Bucket="boto", Key="tag-mp", Tagging="mp=yes")["UploadId"]
e1 = s3.upload_part(Bucket="boto", Key="tag-mp", UploadId=up, PartNumber=1, Body=b"m")["ETag"]
s3.complete_multipart_upload(Bucket="boto", Key="tag-mp", UploadId=up,
                             MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}]})
assert tags_of("tag-mp") == {"mp": "yes"}
assert refusal(lambda: s3.create_multipart_upload(Bucket="boto", Key="tag-mp", Tagging=header11)) == (400, "InvalidTag")

# Bucket tags (PutBucketTagging, GetBucketTagging, DeleteBucketTagging): a
# bucket without tags is NoSuchTagSet; at most 50 tags.
assert refusal(lambda: s3.get_bucket_tagging(Bucket="boto")) == (404, "NoSuchTagSet")
s3.put_bucket_tagging(Bucket="boto", Tagging={"TagSet": tagset({"env": "test", "team": ""})})
got = {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket="boto")["TagSet"]}
assert got == {"env": "test", "team": ""}, got
fifty = {f"b{i}": "v" for i in range(50)}
s3.put_bucket_tagging(Bucket="boto", Tagging={"TagSet": tagset(fifty)})
assert len(s3.get_bucket_tagging(Bucket="boto")["TagSet"]) == 50
for bad in (tagset(dict(fifty, b50="v")), [{"Key": "a", "Value": "1"}, {"Key": "a", "Value": "2"}],
            tagset({"k" * 129: "v"})):
    assert refusal(lambda: s3.put_bucket_tagging(Bucket="boto", Tagging={"TagSet": bad})) == (400, "InvalidTag")
assert len(s3.get_bucket_tagging(Bucket="boto")["TagSet"]) == 50
s3.delete_bucket_tagging(Bucket="boto")
assert refusal(lambda: s3.get_bucket_tagging(Bucket="boto")) == (404, "NoSuchTagSet")
assert refusal(lambda: s3.get_bucket_tagging(Bucket="no-such-bucket")) == (404, "NoSuchBucket")

# Storage classes (x-amz-storage-class on PutObject, CopyObject and
# CreateMultipartUpload): kept and returned on HEAD, GET and listings;
# S3 names no class on HEAD/GET for STANDARD. Unknown and archive classes
# are InvalidStorageClass and store nothing.
s3.put_object(Bucket="boto", Key="class/ia", Body=b"i", StorageClass="STANDARD_IA")
assert s3.head_object(Bucket="boto", Key="class/ia")["StorageClass"] == "STANDARD_IA"
assert s3.get_object(Bucket="boto", Key="class/ia")["StorageClass"] == "STANDARD_IA"
s3.put_object(Bucket="boto", Key="class/std", Body=b"s", StorageClass="STANDARD")
assert "StorageClass" not in s3.head_object(Bucket="boto", Key="class/std")
for bad in ("GLACIER", "NOT_A_CLASS"):
    assert refusal(lambda: s3.put_object(Bucket="boto", Key="class/bad", Body=b"x",
                                         StorageClass=bad)) == (400, "InvalidStorageClass"), bad
assert refusal(lambda: s3.head_object(Bucket="boto", Key="class/bad"))[0] == 404
# A copy onto itself that changes only the class is allowed; a copy takes
# the request's class, STANDARD when it names none.
s3.copy_object(Bucket="boto", Key="class/std", CopySource="boto/class/std", StorageClass="ONEZONE_IA")
assert s3.head_object(Bucket="boto", Key="class/std")["StorageClass"] == "ONEZONE_IA"
s3.copy_object(Bucket="boto", Key="class/copy", CopySource="boto/class/ia")
assert "StorageClass" not in s3.head_object(Bucket="boto", Key="class/copy")
up = s3.create_multipart_upload(Bucket="boto", Key="class/mp", StorageClass="GLACIER_IR")["UploadId"]
p1 = s3.upload_part(Bucket="boto", Key="class/mp", UploadId=up, PartNumber=1, Body=b"a" * (5 << 20))["ETag"]
p2 = s3.upload_part(Bucket="boto", Key="class/mp", UploadId=up, PartNumber=2, Body=b"b" * 1000)["ETag"]
s3.complete_multipart_upload(Bucket="boto", Key="class/mp", UploadId=up, MultipartUpload={
    "Parts": [{"PartNumber": 1, "ETag": p1}, {"PartNumber": 2, "ETag": p2}]})
assert refusal(lambda: s3.create_multipart_upload(Bucket="boto", Key="class/x",
                                                  StorageClass="DEEP_ARCHIVE")) == (400, "InvalidStorageClass")
listed = {o["Key"]: o["StorageClass"] for o in s3.list_objects_v2(Bucket="boto", Prefix="class/")["Contents"]}
assert listed == {"class/copy": "STANDARD", "class/ia": "STANDARD_IA", "class/mp": "GLACIER_IR",
                  "class/std": "ONEZONE_IA"}, listed
assert {o["Key"]: o["StorageClass"] for o in s3.list_objects(Bucket="boto", Prefix="class/")["Contents"]} == listed

# ListObjectsV2 fetch-owner: objects show the bucket's owner key (the key
# that created it); without it no Owner.
owned = s3.list_objects_v2(Bucket="boto", Prefix="class/", FetchOwner=True)["Contents"]
assert all(o["Owner"]["ID"] == key and o["Owner"]["DisplayName"] == "boto" for o in owned), owned
assert all("Owner" not in o for o in s3.list_objects_v2(Bucket="boto", Prefix="class/")["Contents"])

# GetObjectAttributes: what was asked for; ObjectParts for multipart
# objects, paged; the stored whole-object checksums.
a = s3.get_object_attributes(Bucket="boto", Key="class/ia",
                             ObjectAttributes=["ETag", "ObjectSize", "StorageClass", "Checksum"])
assert a["ETag"].strip('"') == hashlib.md5(b"i").hexdigest(), a
assert a["ObjectSize"] == 1 and a["StorageClass"] == "STANDARD_IA", a
assert a["Checksum"]["ChecksumCRC64NVME"] and a["Checksum"]["ChecksumType"] == "FULL_OBJECT", a
assert "ObjectParts" not in a and "LastModified" in a, a
a = s3.get_object_attributes(Bucket="boto", Key="class/std", ObjectAttributes=["ObjectSize"])
assert a["ObjectSize"] == 1 and "ETag" not in a and "StorageClass" not in a, a
a = s3.get_object_attributes(Bucket="boto", Key="class/mp", ObjectAttributes=["ObjectParts", "StorageClass"],
                             MaxParts=1)
parts = a["ObjectParts"]
assert parts["TotalPartsCount"] == 2 and parts["IsTruncated"] and parts["NextPartNumberMarker"] == 1, a
assert [(p["PartNumber"], p["Size"]) for p in parts["Parts"]] == [(1, 5 << 20)], a
assert a["StorageClass"] == "GLACIER_IR", a
rest = s3.get_object_attributes(Bucket="boto", Key="class/mp", ObjectAttributes=["ObjectParts"],
                                PartNumberMarker=1)["ObjectParts"]
assert [(p["PartNumber"], p["Size"]) for p in rest["Parts"]] == [(2, 1000)] and not rest["IsTruncated"], rest
assert refusal(lambda: s3.get_object_attributes(Bucket="boto", Key="class/none",
                                                ObjectAttributes=["ETag"])) == (404, "NoSuchKey")
status, body = signed("GET", "/boto/class/ia?attributes", headers={"x-amz-object-attributes": "Size"})
assert status == 400 and b"<Code>InvalidArgument</Code>" in body, (status, body)

print("boto3: all checks passed")


