"""S3 server-side encryption through boto3 against the Tessera gateway: run
by tests/s3_sse.rs as `python3 tests/s3_sse.py ENDPOINT ACCESS_KEY
SECRET_KEY NO_MASTER_ENDPOINT MARKER`. ENDPOINT's gateway holds an SSE-S3
master key, NO_MASTER_ENDPOINT's does not. Objects whose content repeats
MARKER are written encrypted (the Rust side then greps the nodes' disks
for it). Exits non-zero with a message on the first difference from what
S3 documents (S3 User Guide, "Using server-side encryption with
customer-provided keys (SSE-C)", "Using server-side encryption with Amazon
S3 managed keys (SSE-S3)", "Setting default server-side encryption
behavior"; API reference for each operation)."""

import base64
import hashlib
import os
import sys

import boto3
from botocore.config import Config

from s3_refusals import refusal as failure

endpoint, key, secret, bare_endpoint, marker = sys.argv[1:6]


def client(url):
    return boto3.client("s3", endpoint_url=url, aws_access_key_id=key,
                        aws_secret_access_key=secret, region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}))


s3 = client(endpoint)
bare = client(bare_endpoint)
B = "sse"
PKG = 64 * 1024


def ckey(raw):
    return {
        "SSECustomerAlgorithm": "AES256",
        "SSECustomerKey": base64.b64encode(raw).decode(),
        "SSECustomerKeyMD5": base64.b64encode(hashlib.md5(raw).digest()).decode(),
    }


def source_key(raw):
    return {"CopySource" + k: v for k, v in ckey(raw).items()}


KA = ckey(b"A" * 32)
KB = ckey(b"B" * 32)


def content(n, seed):
    """n bytes, different at every offset and between seeds."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(b"%d-%d" % (seed, i)).digest()
        i += 1
    return bytes(out[:n])


def marked(n):
    """n bytes of the marker repeated (what the disks must never show)."""
    m = marker.encode()
    return (m * (n // len(m) + 1))[:n]


def get(k, rng=None, **kw):
    args = dict(Bucket=B, Key=k, **kw)
    if rng is not None:
        args["Range"] = "bytes=%d-%d" % rng
    return s3.get_object(**args)


def check_ranges(k, data, **kw):
    """Ranges around package boundaries read back as the content."""
    n = len(data)
    edges = [0, 1, PKG - 1, PKG, PKG + 1, 2 * PKG - 1, 2 * PKG, 3 * PKG + 7, n - PKG, n - 1]
    spots = sorted({e for e in edges if 0 <= e < n})
    for a in spots:
        for b in spots:
            if b < a or (b - a > 3 * PKG and a not in (0, 1)):
                continue
            r = get(k, (a, b), **kw)
            got = r["Body"].read()
            assert got == data[a:b + 1], (k, a, b, len(got))
            assert r["ContentLength"] == b - a + 1, (k, a, b)
            assert r["ContentRange"] == "bytes %d-%d/%d" % (a, b, n), r["ContentRange"]
    # A suffix range and an open-ended one.
    r = s3.get_object(Bucket=B, Key=k, Range="bytes=-%d" % min(n, PKG + 3), **kw)
    assert r["Body"].read() == data[-min(n, PKG + 3):]
    r = s3.get_object(Bucket=B, Key=k, Range="bytes=%d-" % (n // 2), **kw)
    assert r["Body"].read() == data[n // 2:]


s3.create_bucket(Bucket=B)

# --- SSE-C: PUT, GET, HEAD, ranges -------------------------------------
sizes = [0, 1, 13, PKG - 1, PKG, PKG + 1, 2 * PKG, 3 * PKG + 100, 4 * PKG - 1]
for i, n in enumerate(sizes):
    data = content(n, i)
    k = "c/%d" % n
    put = s3.put_object(Bucket=B, Key=k, Body=data, **KA)
    assert put["SSECustomerAlgorithm"] == "AES256", put
    assert put["SSECustomerKeyMD5"] == KA["SSECustomerKeyMD5"], put
    r = get(k, **KA)
    assert r["Body"].read() == data, k
    assert r["ContentLength"] == n
    assert r["SSECustomerAlgorithm"] == "AES256"
    assert r["SSECustomerKeyMD5"] == KA["SSECustomerKeyMD5"]
    assert r["ETag"] == put["ETag"]
    h = s3.head_object(Bucket=B, Key=k, **KA)
    assert h["ContentLength"] == n, (k, h["ContentLength"])
    assert h["SSECustomerKeyMD5"] == KA["SSECustomerKeyMD5"]
    if n:
        check_ranges(k, data, **KA)
# The ETag of an SSE-C object is not the MD5 of its content (S3 User
# Guide, "Checking object integrity").
data = content(1000, 99)
put = s3.put_object(Bucket=B, Key="c/etag", Body=data, **KA)
assert put["ETag"].strip('"') != hashlib.md5(data).hexdigest()
# Content-MD5 is checked against the content, not the stored bytes.
s3.put_object(Bucket=B, Key="c/md5", Body=data, ContentMD5=base64.b64encode(hashlib.md5(data).digest()).decode(), **KA)
assert failure(lambda: s3.put_object(Bucket=B, Key="c/md5", Body=data,
                                     ContentMD5=base64.b64encode(b"0" * 16).decode(), **KA)) == (400, "BadDigest")
assert get("c/md5", **KA)["Body"].read() == data

# Listings, HEAD and GetObjectAttributes show the content's size.
n = 3 * PKG + 100
listed = {o["Key"]: o for o in s3.list_objects_v2(Bucket=B, Prefix="c/")["Contents"]}
assert listed["c/%d" % n]["Size"] == n, listed["c/%d" % n]
assert listed["c/0"]["Size"] == 0
attrs = s3.get_object_attributes(Bucket=B, Key="c/%d" % n, ObjectAttributes=["ObjectSize", "ETag"], **KA)
assert attrs["ObjectSize"] == n, attrs
assert failure(lambda: s3.get_object_attributes(Bucket=B, Key="c/%d" % n, ObjectAttributes=["ObjectSize"]))[0] == 400

# --- SSE-C refusals --------------------------------------------------------
k = "c/%d" % (PKG + 1)
assert failure(lambda: s3.get_object(Bucket=B, Key=k)) == (400, "InvalidRequest")
assert failure(lambda: s3.head_object(Bucket=B, Key=k))[0] == 400
assert failure(lambda: s3.get_object(Bucket=B, Key=k, **KB)) == (403, "AccessDenied")
assert failure(lambda: s3.head_object(Bucket=B, Key=k, **KB))[0] == 403
assert failure(lambda: s3.get_object(Bucket=B, Key=k, Range="bytes=0-10", **KB)) == (403, "AccessDenied")
bad_md5 = dict(KA, SSECustomerKeyMD5=base64.b64encode(b"x" * 16).decode())
assert failure(lambda: s3.put_object(Bucket=B, Key="c/bad", Body=b"x", **bad_md5)) == (400, "InvalidArgument")
assert failure(lambda: s3.get_object(Bucket=B, Key=k, **bad_md5)) == (400, "InvalidArgument")
short_key = dict(KA, SSECustomerKey=base64.b64encode(b"k" * 16).decode(),
                 SSECustomerKeyMD5=base64.b64encode(hashlib.md5(b"k" * 16).digest()).decode())
assert failure(lambda: s3.put_object(Bucket=B, Key="c/bad", Body=b"x", **short_key)) == (400, "InvalidArgument")
wrong_alg = dict(KA, SSECustomerAlgorithm="AES128")
assert failure(lambda: s3.put_object(Bucket=B, Key="c/bad", Body=b"x", **wrong_alg))[0] == 400
# Both kinds of encryption at once.
assert failure(lambda: s3.put_object(Bucket=B, Key="c/bad", Body=b"x", ServerSideEncryption="AES256", **KA))[0] == 400
# A key for an object that is not under SSE-C.
s3.put_object(Bucket=B, Key="plain", Body=b"plain body")
assert failure(lambda: s3.get_object(Bucket=B, Key="plain", **KA)) == (400, "InvalidRequest")
# x-amz-server-side-encryption on a read.
def with_header(name, value):
    def add(params, **_):
        params["headers"][name] = value
    return add
ev = s3.meta.events
handler = with_header("x-amz-server-side-encryption", "AES256")
ev.register("before-call.s3.HeadObject", handler)
assert failure(lambda: s3.head_object(Bucket=B, Key="plain"))[0] == 400
ev.unregister("before-call.s3.HeadObject", handler)
assert failure(lambda: s3.put_object(Bucket=B, Key="c/bad", Body=b"x", ServerSideEncryption="aws:kms"))[0] == 400
assert "Contents" not in s3.list_objects_v2(Bucket=B, Prefix="c/bad"), "a refused write stored nothing"

# --- SSE-C copies ------------------------------------------------------------
src = content(2 * PKG + 5, 7)
s3.put_object(Bucket=B, Key="copy/src", Body=src, **KA)
# Without the source's key: 400; with a wrong one: 403.
assert failure(lambda: s3.copy_object(Bucket=B, Key="copy/x", CopySource={"Bucket": B, "Key": "copy/src"}))[0] == 400
assert failure(lambda: s3.copy_object(Bucket=B, Key="copy/x", CopySource={"Bucket": B, "Key": "copy/src"},
                                      **source_key(b"B" * 32)))[0] == 403
# Re-keyed: SSE-C A -> SSE-C B.
r = s3.copy_object(Bucket=B, Key="copy/b", CopySource={"Bucket": B, "Key": "copy/src"}, **source_key(b"A" * 32), **KB)
assert r["SSECustomerKeyMD5"] == KB["SSECustomerKeyMD5"], r
assert get("copy/b", **KB)["Body"].read() == src
assert failure(lambda: get("copy/b", **KA))[0] == 403
# SSE-C -> plain, SSE-C -> SSE-S3, plain -> SSE-C.
s3.copy_object(Bucket=B, Key="copy/plain", CopySource={"Bucket": B, "Key": "copy/src"}, **source_key(b"A" * 32))
assert get("copy/plain")["Body"].read() == src
r = s3.copy_object(Bucket=B, Key="copy/s3", CopySource={"Bucket": B, "Key": "copy/src"},
                   ServerSideEncryption="AES256", **source_key(b"A" * 32))
assert r["ServerSideEncryption"] == "AES256"
g = get("copy/s3")
assert g["ServerSideEncryption"] == "AES256" and g["Body"].read() == src
s3.copy_object(Bucket=B, Key="copy/c", CopySource={"Bucket": B, "Key": "copy/plain"}, **KA)
assert get("copy/c", **KA)["Body"].read() == src
assert failure(lambda: get("copy/c"))[0] == 400
# Onto itself with a new key is a change S3 allows.
s3.copy_object(Bucket=B, Key="copy/c", CopySource={"Bucket": B, "Key": "copy/c"}, **source_key(b"A" * 32), **KB)
assert get("copy/c", **KB)["Body"].read() == src

# --- SSE-C multipart, UploadPartCopy -------------------------------------
MP = 5 * 1024 * 1024
parts_data = [content(MP + 3, 20), content(MP, 21), content(PKG + 9, 22)]
up = s3.create_multipart_upload(Bucket=B, Key="mp/c", **KA)
assert up["SSECustomerKeyMD5"] == KA["SSECustomerKeyMD5"]
uid = up["UploadId"]
# A part without the key, or with another key: 400.
assert failure(lambda: s3.upload_part(Bucket=B, Key="mp/c", UploadId=uid, PartNumber=1, Body=b"x"))[0] == 400
assert failure(lambda: s3.upload_part(Bucket=B, Key="mp/c", UploadId=uid, PartNumber=1, Body=b"x", **KB))[0] == 400
etags = []
for i, d in enumerate(parts_data[:2]):
    r = s3.upload_part(Bucket=B, Key="mp/c", UploadId=uid, PartNumber=i + 1, Body=d, **KA)
    assert r["SSECustomerKeyMD5"] == KA["SSECustomerKeyMD5"]
    etags.append(r["ETag"])
# Part 3 copied from an SSE-C source (another key), a range of it.
copy_src = content(3 * PKG, 23)
s3.put_object(Bucket=B, Key="mp/src", Body=copy_src, **KB)
r = s3.upload_part_copy(Bucket=B, Key="mp/c", UploadId=uid, PartNumber=3,
                        CopySource={"Bucket": B, "Key": "mp/src"}, CopySourceRange="bytes=%d-%d" % (PKG - 4, 2 * PKG + 4),
                        **source_key(b"B" * 32), **KA)
etags.append(r["CopyPartResult"]["ETag"])
part3 = copy_src[PKG - 4:2 * PKG + 5]
done = s3.complete_multipart_upload(Bucket=B, Key="mp/c", UploadId=uid, MultipartUpload={
    "Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]})
whole = parts_data[0] + parts_data[1] + part3
g = get("mp/c", **KA)
assert g["ContentLength"] == len(whole)
assert g["Body"].read() == whole
assert s3.list_objects_v2(Bucket=B, Prefix="mp/c")["Contents"][0]["Size"] == len(whole)
assert failure(lambda: get("mp/c"))[0] == 400
assert failure(lambda: get("mp/c", **KB))[0] == 403
# Ranges across the parts' boundaries.
for a, b in [(MP - 10, MP + 10), (MP + 3 - 1, MP + 3), (0, 2 * MP + 100), (2 * MP + 3 - PKG, len(whole) - 1),
             (MP + 3 + MP - 1, MP + 3 + MP + PKG)]:
    assert get("mp/c", (a, b), **KA)["Body"].read() == whole[a:b + 1], (a, b)
# partNumber reads one part.
p2 = get("mp/c", PartNumber=2, **KA)
assert p2["Body"].read() == parts_data[1] and p2["PartsCount"] == 3

# --- SSE-S3 -------------------------------------------------------------------
data = content(3 * PKG + 17, 30)
r = s3.put_object(Bucket=B, Key="s3/obj", Body=data, ServerSideEncryption="AES256")
assert r["ServerSideEncryption"] == "AES256"
# SSE-S3 ETags are the content's MD5.
assert r["ETag"].strip('"') == hashlib.md5(data).hexdigest(), r["ETag"]
g = get("s3/obj")
assert g["ServerSideEncryption"] == "AES256" and g["Body"].read() == data
assert s3.head_object(Bucket=B, Key="s3/obj")["ServerSideEncryption"] == "AES256"
check_ranges("s3/obj", data)
# An SSE-S3 object refuses an SSE-C key.
assert failure(lambda: get("s3/obj", **KA))[0] == 400
# SSE-S3 multipart.
up = s3.create_multipart_upload(Bucket=B, Key="mp/s3", ServerSideEncryption="AES256")
assert up["ServerSideEncryption"] == "AES256"
uid = up["UploadId"]
p1, p2 = content(MP, 31), content(1000, 32)
e1 = s3.upload_part(Bucket=B, Key="mp/s3", UploadId=uid, PartNumber=1, Body=p1)["ETag"]
e2 = s3.upload_part(Bucket=B, Key="mp/s3", UploadId=uid, PartNumber=2, Body=p2)["ETag"]
assert e1.strip('"') == hashlib.md5(p1).hexdigest()
done = s3.complete_multipart_upload(Bucket=B, Key="mp/s3", UploadId=uid, MultipartUpload={
    "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
assert done.get("ServerSideEncryption") == "AES256", done
assert get("mp/s3")["Body"].read() == p1 + p2
assert get("mp/s3", (MP - 5, MP + 5))["Body"].read() == (p1 + p2)[MP - 5:MP + 6]
# A gateway without a master key refuses SSE-S3 writes, and cannot read
# SSE-S3 objects; SSE-C works there.
assert failure(lambda: bare.put_object(Bucket=B, Key="s3/no", Body=b"x", ServerSideEncryption="AES256")) == (501, "NotImplemented")
assert failure(lambda: bare.get_object(Bucket=B, Key="s3/obj"))[0] == 500
assert bare.get_object(Bucket=B, Key="c/13", **KA)["Body"].read() == content(13, 2)

# --- Bucket default encryption -------------------------------------------------
D = "sse-default"
s3.create_bucket(Bucket=D)
assert failure(lambda: s3.get_bucket_encryption(Bucket=D)) == (404, "ServerSideEncryptionConfigurationNotFoundError")
assert s3.delete_bucket_encryption(Bucket=D)["ResponseMetadata"]["HTTPStatusCode"] == 204
s3.put_object(Bucket=D, Key="before", Body=b"written before the default")
rule = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}
s3.put_bucket_encryption(Bucket=D, ServerSideEncryptionConfiguration=rule)
got = s3.get_bucket_encryption(Bucket=D)["ServerSideEncryptionConfiguration"]["Rules"][0]
assert got["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256", got
# aws:kms is kept as configured, and every write it would apply to is
# refused as S3 refuses a KMS key it cannot find: Tessera has no KMS.
K = "sse-kms"
s3.create_bucket(Bucket=K)
kms = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "k1"}}]}
s3.put_bucket_encryption(Bucket=K, ServerSideEncryptionConfiguration=kms)
got = s3.get_bucket_encryption(Bucket=K)["ServerSideEncryptionConfiguration"]["Rules"][0]
assert got["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "k1"}, got
assert failure(lambda: s3.put_object(Bucket=K, Key="x", Body=b"x")) == (400, "KMS.NotFoundException")
s3.put_object(Bucket=K, Key="own", Body=b"x", **KA)
bad_rule = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256", "KMSMasterKeyID": "k1"}}]}
assert failure(lambda: s3.put_bucket_encryption(Bucket=K, ServerSideEncryptionConfiguration=bad_rule))[0] == 400
data = content(2 * PKG + 1, 40)
r = s3.put_object(Bucket=D, Key="after", Body=data)
assert r["ServerSideEncryption"] == "AES256", r
h = s3.head_object(Bucket=D, Key="after")
assert h["ServerSideEncryption"] == "AES256" and h["ContentLength"] == len(data)
assert "ServerSideEncryption" not in s3.head_object(Bucket=D, Key="before")
assert s3.get_object(Bucket=D, Key="after")["Body"].read() == data
# The request's own SSE-C wins over the default.
s3.put_object(Bucket=D, Key="own", Body=b"own key", **KA)
assert "ServerSideEncryption" not in s3.head_object(Bucket=D, Key="own", **KA)
assert failure(lambda: s3.get_object(Bucket=D, Key="own"))[0] == 400
# Multipart and copies into the bucket take the default too.
up = s3.create_multipart_upload(Bucket=D, Key="mp")
assert up["ServerSideEncryption"] == "AES256"
e = s3.upload_part(Bucket=D, Key="mp", UploadId=up["UploadId"], PartNumber=1, Body=data)["ETag"]
s3.complete_multipart_upload(Bucket=D, Key="mp", UploadId=up["UploadId"],
                             MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e}]})
assert s3.get_object(Bucket=D, Key="mp")["Body"].read() == data
r = s3.copy_object(Bucket=D, Key="copied", CopySource={"Bucket": B, "Key": "plain"})
assert r["ServerSideEncryption"] == "AES256"
assert s3.get_object(Bucket=D, Key="copied")["Body"].read() == b"plain body"
# Without a master key, a default of AES256 refuses new objects.
assert failure(lambda: bare.put_object(Bucket=D, Key="x", Body=b"x"))[0] == 501
s3.delete_bucket_encryption(Bucket=D)
assert failure(lambda: s3.get_bucket_encryption(Bucket=D))[0] == 404
assert "ServerSideEncryption" not in s3.put_object(Bucket=D, Key="later", Body=b"x")

# --- Marked content, for the disk check ------------------------------------
M = "marked"
s3.create_bucket(Bucket=M)
s3.put_object(Bucket=M, Key="c", Body=marked(300 * 1024), **KA)
s3.put_object(Bucket=M, Key="s3", Body=marked(300 * 1024), ServerSideEncryption="AES256")
up = s3.create_multipart_upload(Bucket=M, Key="mp", **KA)
e = s3.upload_part(Bucket=M, Key="mp", UploadId=up["UploadId"], PartNumber=1, Body=marked(200 * 1024), **KA)["ETag"]
s3.complete_multipart_upload(Bucket=M, Key="mp", UploadId=up["UploadId"],
                             MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e}]})
assert s3.get_object(Bucket=M, Key="c", **KA)["Body"].read() == marked(300 * 1024)
assert s3.get_object(Bucket=M, Key="s3")["Body"].read() == marked(300 * 1024)

print("sse: all checks passed")
