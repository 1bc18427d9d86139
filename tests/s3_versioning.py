"""S3 bucket versioning through boto3 against the Tessera gateway: run by
tests/s3_boto3.rs as `python3 tests/s3_versioning.py ENDPOINT ACCESS_KEY
SECRET_KEY`. Exits non-zero with a message on the first difference from
what S3 documents (S3 User Guide, "Retaining multiple versions of objects
with S3 Versioning"; API reference for each operation)."""

import hashlib
import os
import sys

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
import urllib.error
import urllib.request

endpoint, key, secret = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key,
                  aws_secret_access_key=secret, region_name="us-east-1", config=Config())
B = "ver"


def failure(fn):
    """(status, code, headers) of the error `fn` raises."""
    try:
        fn()
    except ClientError as e:
        meta = e.response["ResponseMetadata"]
        print("refusal:", meta["HTTPStatusCode"], e.response["Error"], file=sys.stderr)
        return meta["HTTPStatusCode"], e.response["Error"].get("Code"), meta.get("HTTPHeaders", {})
    raise AssertionError("expected an error")


def refusal(fn):
    return failure(fn)[:2]


def signed(method, path, body=b""):
    """A SigV4-signed request built by hand, for bodies boto3 would not send."""
    req = AWSRequest(method=method, url=endpoint + path, data=body, headers={})
    req.headers["x-amz-content-sha256"] = hashlib.sha256(body).hexdigest()
    SigV4Auth(Credentials(key, secret), "s3", "us-east-1").add_auth(req)
    r = urllib.request.Request(req.url, data=body or None, method=method, headers=dict(req.headers.items()))
    try:
        with urllib.request.urlopen(r) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def body(key, **kw):
    return s3.get_object(Bucket=B, Key=key, **kw)["Body"].read()


def versions(prefix="", **kw):
    """(key, version, latest, marker) in listing order, over every page."""
    out = []
    args = dict(Bucket=B, Prefix=prefix, **kw)
    while True:
        page = s3.list_object_versions(**args)
        rows = [(v["Key"], v["VersionId"], v["IsLatest"], False, v["LastModified"])
                for v in page.get("Versions", [])]
        rows += [(m["Key"], m["VersionId"], m["IsLatest"], True, m["LastModified"])
                 for m in page.get("DeleteMarkers", [])]
        # boto3 parses versions and markers into two lists: put them back in
        # S3's order (key, then newest first: the latest, then ids, which
        # sort newest first; a noncurrent null version last, as these
        # checks write them).
        rows.sort(key=lambda r: (r[0], not r[2], r[1] == "null", r[1]))
        out += [r[:4] for r in rows]
        if not page["IsTruncated"]:
            return out
        args["KeyMarker"] = page["NextKeyMarker"]
        args["VersionIdMarker"] = page.get("NextVersionIdMarker", "")


s3.create_bucket(Bucket=B)

# A bucket never versioned answers an empty configuration.
g = s3.get_bucket_versioning(Bucket=B)
assert "Status" not in g, g
# Written before versioning: the null version.
s3.put_object(Bucket=B, Key="pre", Body=b"before")
assert "VersionId" not in s3.head_object(Bucket=B, Key="pre")

# Bad configurations change nothing: MalformedXML.
NS = b'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
for bad in [b"<VersioningConfiguration " + NS + b"><Status>Bogus</Status></VersioningConfiguration>",
            b"<VersioningConfiguration " + NS + b"></VersioningConfiguration>",
            b"<VersioningConfiguration " + NS + b"><Status>Enabled</Status>"]:
    status, text = signed("PUT", f"/{B}?versioning", bad)
    assert status == 400 and b"<Code>MalformedXML</Code>" in text, (bad, status, text)
assert "Status" not in s3.get_bucket_versioning(Bucket=B)
assert refusal(lambda: s3.put_bucket_versioning(
    Bucket="no-such-bucket", VersioningConfiguration={"Status": "Enabled"})) == (404, "NoSuchBucket")

s3.put_bucket_versioning(Bucket=B, VersioningConfiguration={"Status": "Enabled"})
assert s3.get_bucket_versioning(Bucket=B)["Status"] == "Enabled"

# Every PUT is a new version with its own id.
v1 = s3.put_object(Bucket=B, Key="k", Body=b"one")["VersionId"]
v2 = s3.put_object(Bucket=B, Key="k", Body=b"two")["VersionId"]
assert v1 != v2 and "null" not in (v1, v2), (v1, v2)
g = s3.get_object(Bucket=B, Key="k")
assert g["Body"].read() == b"two" and g["VersionId"] == v2, g
assert body("k", VersionId=v1) == b"one"
h = s3.head_object(Bucket=B, Key="k", VersionId=v1)
assert h["VersionId"] == v1 and h["ContentLength"] == 3, h
assert body("pre", VersionId="null") == b"before"
assert versions() == [("k", v2, True, False), ("k", v1, False, False), ("pre", "null", True, False)], versions()

# Large versions keep their chunks: the old one reads back whole.
big1, big2 = os.urandom(5 << 20), os.urandom(5 << 20)
b1 = s3.put_object(Bucket=B, Key="big", Body=big1)["VersionId"]
s3.put_object(Bucket=B, Key="big", Body=big2)
assert hashlib.md5(body("big", VersionId=b1)).digest() == hashlib.md5(big1).digest()
assert hashlib.md5(body("big")).digest() == hashlib.md5(big2).digest()

# Unknown and malformed version ids.
unknown = "0123456789abcdef"
assert refusal(lambda: s3.get_object(Bucket=B, Key="k", VersionId=unknown)) == (404, "NoSuchVersion")
for bad in ["bogus", "0123456789ABCDEF", "x" * 16]:
    assert refusal(lambda: s3.get_object(Bucket=B, Key="k", VersionId=bad)) == (400, "InvalidArgument"), bad
    assert refusal(lambda: s3.delete_object(Bucket=B, Key="k", VersionId=bad)) == (400, "InvalidArgument"), bad
assert refusal(lambda: s3.head_object(Bucket=B, Key="k", VersionId=unknown))[0] == 404
assert refusal(lambda: s3.get_object_tagging(Bucket=B, Key="k", VersionId=unknown)) == (404, "NoSuchVersion")

# DELETE without a version id places a delete marker.
d = s3.delete_object(Bucket=B, Key="k")
m1 = d["VersionId"]
assert d["DeleteMarker"] is True and m1 not in (v1, v2, "null"), d
status, code, headers = failure(lambda: s3.get_object(Bucket=B, Key="k"))
assert (status, code) == (404, "NoSuchKey") and headers.get("x-amz-delete-marker") == "true", headers
assert headers.get("x-amz-version-id") == m1, headers
status, _, headers = failure(lambda: s3.head_object(Bucket=B, Key="k"))
assert status == 404 and headers.get("x-amz-delete-marker") == "true", headers
# The marker by its id: 405 MethodNotAllowed.
status, code, headers = failure(lambda: s3.get_object(Bucket=B, Key="k", VersionId=m1))
assert (status, code) == (405, "MethodNotAllowed") and headers.get("x-amz-delete-marker") == "true", headers
assert refusal(lambda: s3.head_object(Bucket=B, Key="k", VersionId=m1))[0] == 405
# Listings show current objects only; older versions still read.
assert "k" not in [o["Key"] for o in s3.list_objects_v2(Bucket=B).get("Contents", [])]
assert "k" not in [o["Key"] for o in s3.list_objects(Bucket=B).get("Contents", [])]
assert body("k", VersionId=v1) == b"one"
assert versions("k") == [("k", m1, True, True), ("k", v2, False, False), ("k", v1, False, False)], versions("k")
# Copying from a marker: by id 400, as the current version 404.
assert refusal(lambda: s3.copy_object(Bucket=B, Key="c", CopySource={"Bucket": B, "Key": "k", "VersionId": m1})) \
    == (400, "InvalidRequest")
assert refusal(lambda: s3.copy_object(Bucket=B, Key="c", CopySource={"Bucket": B, "Key": "k"}))[0] == 404

# DELETE with a version id removes that version for good.
d = s3.delete_object(Bucket=B, Key="k", VersionId=m1)
assert d["DeleteMarker"] is True and d["VersionId"] == m1, d
assert body("k") == b"two"
d = s3.delete_object(Bucket=B, Key="k", VersionId=v2)
assert d["VersionId"] == v2 and "DeleteMarker" not in d, d
assert s3.get_object(Bucket=B, Key="k")["VersionId"] == v1
assert versions("k") == [("k", v1, True, False)], versions("k")
# An unknown version: nothing to remove, 204 as S3.
d = s3.delete_object(Bucket=B, Key="k", VersionId=unknown)
assert d["ResponseMetadata"]["HTTPStatusCode"] == 204, d
assert body("k") == b"one"

# Copy from an old version, onto its own key too (that restores it).
v3 = s3.put_object(Bucket=B, Key="k", Body=b"three")["VersionId"]
c = s3.copy_object(Bucket=B, Key="copied", CopySource={"Bucket": B, "Key": "k", "VersionId": v1})
assert c["CopySourceVersionId"] == v1 and c["VersionId"] not in (v1, v3), c
assert body("copied") == b"one"
c = s3.copy_object(Bucket=B, Key="k", CopySource={"Bucket": B, "Key": "k", "VersionId": v1})
assert body("k") == b"one" and c["VersionId"] != v1
assert [r[1] for r in versions("k")] == [c["VersionId"], v3, v1], versions("k")

# Multipart completion makes a version.
u = s3.create_multipart_upload(Bucket=B, Key="mp")["UploadId"]
p = s3.upload_part(Bucket=B, Key="mp", UploadId=u, PartNumber=1, Body=b"part")
done = s3.complete_multipart_upload(Bucket=B, Key="mp", UploadId=u,
                                    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": p["ETag"]}]})
assert done["VersionId"] and done["VersionId"] != "null", done
assert s3.head_object(Bucket=B, Key="mp")["VersionId"] == done["VersionId"]

# Tags belong to a version.
s3.put_object_tagging(Bucket=B, Key="k", VersionId=v1, Tagging={"TagSet": [{"Key": "old", "Value": "yes"}]})
t = s3.get_object_tagging(Bucket=B, Key="k", VersionId=v1)
assert t["TagSet"] == [{"Key": "old", "Value": "yes"}] and t["VersionId"] == v1, t
assert s3.get_object_tagging(Bucket=B, Key="k")["TagSet"] == []
s3.delete_object_tagging(Bucket=B, Key="k", VersionId=v1)
assert s3.get_object_tagging(Bucket=B, Key="k", VersionId=v1)["TagSet"] == []
# GetObjectAttributes of an old version.
a = s3.get_object_attributes(Bucket=B, Key="k", VersionId=v1, ObjectAttributes=["ObjectSize", "ETag"])
assert a["ObjectSize"] == 3 and a["VersionId"] == v1, a
assert a["ETag"].strip('"') == hashlib.md5(b"one").hexdigest(), a

# Conditional writes look at the current version.
etag = s3.head_object(Bucket=B, Key="k")["ETag"]
assert refusal(lambda: s3.put_object(Bucket=B, Key="k", Body=b"x", IfMatch='"0000"')) == (412, "PreconditionFailed")
v4 = s3.put_object(Bucket=B, Key="k", Body=b"four", IfMatch=etag)["VersionId"]
assert body("k") == b"four" and s3.get_object(Bucket=B, Key="k")["VersionId"] == v4

# Suspended: writes and deletes replace the null version; older versions stay.
s3.put_bucket_versioning(Bucket=B, VersioningConfiguration={"Status": "Suspended"})
assert s3.get_bucket_versioning(Bucket=B)["Status"] == "Suspended"
s3.put_object(Bucket=B, Key="s", Body=b"s-null")  # null, never versioned before
sv = None
s3.put_bucket_versioning(Bucket=B, VersioningConfiguration={"Status": "Enabled"})
sv = s3.put_object(Bucket=B, Key="s", Body=b"s-versioned")["VersionId"]
s3.put_bucket_versioning(Bucket=B, VersioningConfiguration={"Status": "Suspended"})
assert s3.put_object(Bucket=B, Key="s", Body=b"s1")["VersionId"] == "null"
assert s3.get_object(Bucket=B, Key="s")["VersionId"] == "null"
assert versions("s") == [("s", "null", True, False), ("s", sv, False, False)], versions("s")
s3.put_object(Bucket=B, Key="s", Body=b"s2")
assert versions("s") == [("s", "null", True, False), ("s", sv, False, False)], versions("s")
assert body("s") == b"s2" and body("s", VersionId="null") == b"s2" and body("s", VersionId=sv) == b"s-versioned"
d = s3.delete_object(Bucket=B, Key="s")
assert d["DeleteMarker"] is True and d["VersionId"] == "null", d
assert versions("s") == [("s", "null", True, True), ("s", sv, False, False)], versions("s")
assert refusal(lambda: s3.get_object(Bucket=B, Key="s", VersionId="null")) == (405, "MethodNotAllowed")
# There is no going back to unversioned.
assert refusal(lambda: s3.put_bucket_versioning(Bucket=B, VersioningConfiguration={})) == (400, "MalformedXML")
assert s3.get_bucket_versioning(Bucket=B)["Status"] == "Suspended"
s3.put_bucket_versioning(Bucket=B, VersioningConfiguration={"Status": "Enabled"})

# Paging with small max-keys walks the same versions as one listing.
ids = {k: [s3.put_object(Bucket=B, Key=k, Body=f"{k}{i}".encode())["VersionId"] for i in range(n)]
       for k, n in [("pg/a", 5), ("pg/b", 3), ("pg/c", 1)]}
mk = s3.delete_object(Bucket=B, Key="pg/b")["VersionId"]
expected = [("pg/a", v, i == 0, False) for i, v in enumerate(reversed(ids["pg/a"]))]
expected += [("pg/b", mk, True, True)] + [("pg/b", v, False, False) for v in reversed(ids["pg/b"])]
expected += [("pg/c", ids["pg/c"][0], True, False)]
whole = versions("pg/")
assert whole == expected, (whole, expected)
for page in (1, 2, 3):
    got = versions("pg/", MaxKeys=page)
    assert got == expected, (page, got)
first = s3.list_object_versions(Bucket=B, Prefix="pg/", MaxKeys=2)
assert first["IsTruncated"] and first["NextKeyMarker"] == "pg/a" and first["MaxKeys"] == 2, first
assert first["NextVersionIdMarker"] == expected[1][1], first
pages = s3.get_paginator("list_object_versions").paginate(Bucket=B, Prefix="pg/", PaginationConfig={"PageSize": 2})
assert sum(len(p.get("Versions", [])) + len(p.get("DeleteMarkers", [])) for p in pages) == len(expected)
# Delimiter: common prefixes count as entries.
top = s3.list_object_versions(Bucket=B, Delimiter="/")
assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["pg/"], top
assert all("/" not in v["Key"] for v in top.get("Versions", []) + top.get("DeleteMarkers", []))
# A version marker needs a key marker; a malformed one is refused.
assert refusal(lambda: s3.list_object_versions(Bucket=B, VersionIdMarker=v1)) == (400, "InvalidArgument")
assert refusal(lambda: s3.list_object_versions(Bucket=B, KeyMarker="k", VersionIdMarker="bad")) \
    == (400, "InvalidArgument")

# DeleteObjects with version ids, markers and a bad id.
a_oldest = ids["pg/a"][0]
r = s3.delete_objects(Bucket=B, Delete={"Objects": [
    {"Key": "pg/a", "VersionId": a_oldest},
    {"Key": "pg/c"},
    {"Key": "pg/b", "VersionId": mk},
    {"Key": "pg/a", "VersionId": "bogus"},
]})
deleted = {(d["Key"], d.get("VersionId")): d for d in r["Deleted"]}
assert "DeleteMarker" not in deleted[("pg/a", a_oldest)], r
c_marker = deleted[("pg/c", None)]
assert c_marker["DeleteMarker"] is True and c_marker["DeleteMarkerVersionId"], r
b_marker = deleted[("pg/b", mk)]
assert b_marker["DeleteMarker"] is True and b_marker["DeleteMarkerVersionId"] == mk, r
assert [(e["Key"], e["Code"], e.get("VersionId")) for e in r["Errors"]] == [("pg/a", "InvalidArgument", "bogus")], r
assert a_oldest not in [v[1] for v in versions("pg/a")]
assert body("pg/b") == b"pg/b2"
assert refusal(lambda: s3.get_object(Bucket=B, Key="pg/c"))[1] == "NoSuchKey"

# A bucket with versions left is not empty: BucketNotEmpty until every
# version and marker is gone.
for o in s3.list_objects_v2(Bucket=B).get("Contents", []):
    s3.delete_object(Bucket=B, Key=o["Key"])
assert s3.list_objects_v2(Bucket=B)["KeyCount"] == 0
assert refusal(lambda: s3.delete_bucket(Bucket=B)) == (409, "BucketNotEmpty")
left = versions()
for n in range(0, len(left), 1000):
    s3.delete_objects(Bucket=B, Delete={"Objects": [{"Key": k, "VersionId": v} for k, v, _, _ in left[n:n + 1000]]})
assert versions() == []
s3.delete_bucket(Bucket=B)

print("versioning: all checks passed")
