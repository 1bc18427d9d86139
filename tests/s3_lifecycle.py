"""S3 bucket lifecycle through boto3 against the Tessera gateway, with meta
running a short lifecycle day: run by tests/s3_lifecycle.rs as `python3
tests/s3_lifecycle.py ENDPOINT ACCESS_KEY SECRET_KEY DAY_SECONDS`. Exits
non-zero with a message on the first difference from what S3 documents
(User Guide, "Managing the lifecycle of objects"; API reference,
PutBucketLifecycleConfiguration and its Get and Delete)."""

import datetime
import re
import sys
import time

import boto3
from botocore.config import Config

from s3_refusals import check, refusal

endpoint, key, secret, day = sys.argv[1:5]
DAY = float(day)
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key,
                  aws_secret_access_key=secret, region_name="us-east-1", config=Config())
UTC = datetime.timezone.utc


def eventually(what, cond, days=12):
    """Waits up to `days` lifecycle days for `cond()` to hold."""
    deadline = time.time() + days * DAY
    while time.time() < deadline:
        if cond():
            return
        time.sleep(DAY / 4)
    raise AssertionError(f"not within {days} lifecycle days: {what}")


def keys(bucket):
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def versions(bucket, prefix=""):
    page = s3.list_object_versions(Bucket=bucket, Prefix=prefix)
    return ([(v["Key"], v["VersionId"]) for v in page.get("Versions", [])],
            [(m["Key"], m["VersionId"]) for m in page.get("DeleteMarkers", [])])


def put_lc(bucket, rules):
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": rules})


# --- Configuration: put, get, delete, and S3's refusals ---
C = "conf"
s3.create_bucket(Bucket=C)
check(refusal(lambda: s3.get_bucket_lifecycle_configuration(Bucket=C)),
      (404, "NoSuchLifecycleConfiguration"), "a bucket without lifecycle")
rules = [{"ID": "test1/", "Expiration": {"Days": 31}, "Prefix": "test1/", "Status": "Enabled"},
         {"ID": "test2/", "Expiration": {"Days": 120}, "Prefix": "test2/", "Status": "Disabled"}]
put_lc(C, rules)
check(s3.get_bucket_lifecycle_configuration(Bucket=C)["Rules"], rules, "rules as put")
filtered = [{"ID": "f", "Status": "Enabled",
             "Filter": {"And": {"Prefix": "logs/", "Tags": [{"Key": "k", "Value": "v"}],
                                "ObjectSizeGreaterThan": 10, "ObjectSizeLessThan": 1000}},
             "NoncurrentVersionExpiration": {"NoncurrentDays": 3, "NewerNoncurrentVersions": 2},
             "Transitions": [{"Days": 30, "StorageClass": "GLACIER"}]},
            {"ID": "g", "Status": "Enabled", "Filter": {"Prefix": "tmp/"},
             "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 2}},
            {"ID": "h", "Status": "Enabled", "Filter": {"ObjectSizeLessThan": 5},
             "Expiration": {"Date": datetime.datetime(2040, 1, 1, tzinfo=UTC)}},
            {"ID": "i", "Status": "Enabled", "Filter": {},
             "Expiration": {"ExpiredObjectDeleteMarker": True}}]
put_lc(C, filtered)
check(s3.get_bucket_lifecycle_configuration(Bucket=C)["Rules"], filtered, "filtered rules as put")
for bad, want in [
    ([dict(rules[0]), dict(rules[0])], (400, "InvalidArgument")),
    ([dict(rules[0], ID="a" * 256)], (400, "InvalidArgument")),
    ([dict(rules[0], Status="enabled")], (400, "MalformedXML")),
    ([dict(rules[0], Expiration={"Days": 0})], (400, "InvalidArgument")),
    ([dict(rules[0], Expiration={"Date": datetime.datetime(2040, 1, 1, 12, tzinfo=UTC)})],
     (400, "InvalidArgument")),
    ([{"ID": "x", "Prefix": "p", "Filter": {"Prefix": "p"}, "Status": "Enabled",
       "Expiration": {"Days": 1}}], (400, "MalformedXML")),
    ([{"ID": "x", "Prefix": "p", "Status": "Enabled"}], (400, "InvalidRequest")),
    ([{"ID": "x", "Filter": {"Tag": {"Key": "k", "Value": "v"}}, "Status": "Enabled",
       "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}], (400, "InvalidRequest")),
    ([dict(rules[0], Transitions=[{"Days": 1, "StorageClass": "COLD"}])], (400, "InvalidStorageClass")),
]:
    check(refusal(lambda: put_lc(C, bad)), want, f"rules {bad}")
# A refused configuration changes nothing.
check(s3.get_bucket_lifecycle_configuration(Bucket=C)["Rules"], filtered, "rules after refusals")
put_lc(C, [{"Expiration": {"Days": 31}, "Prefix": "a/", "Status": "Enabled"}])
assert s3.get_bucket_lifecycle_configuration(Bucket=C)["Rules"][0]["ID"], "a rule without ID gets one"
check(s3.delete_bucket_lifecycle(Bucket=C)["ResponseMetadata"]["HTTPStatusCode"], 204, "delete")
check(refusal(lambda: s3.get_bucket_lifecycle_configuration(Bucket=C))[1],
      "NoSuchLifecycleConfiguration", "after delete")

# x-amz-expiration (real days: expiry at the midnight UTC after mtime + Days).
put_lc(C, [{"ID": "rule1", "Expiration": {"Days": 1}, "Prefix": "days1/", "Status": "Enabled"}])
now = datetime.datetime.now(UTC).replace(tzinfo=None)
for resp in [s3.put_object(Bucket=C, Key="days1/foo", Body=b"bar"),
             s3.head_object(Bucket=C, Key="days1/foo"),
             s3.get_object(Bucket=C, Key="days1/foo")]:
    header = resp["ResponseMetadata"]["HTTPHeaders"].get("x-amz-expiration", "")
    m = re.fullmatch(r'expiry-date="(.+)", rule-id="(.+)"', header)
    assert m, f"x-amz-expiration: {header!r}"
    expiry = datetime.datetime.strptime(m.group(1), "%a, %d %b %Y %H:%M:%S GMT")
    check(((expiry - now).days, m.group(2)), (1, "rule1"), "x-amz-expiration")
    check((expiry.hour, expiry.minute), (0, 0), "expiry at midnight")
resp = s3.put_object(Bucket=C, Key="other/foo", Body=b"bar")
assert "x-amz-expiration" not in resp["ResponseMetadata"]["HTTPHeaders"], "no rule, no header"
s3.delete_bucket_lifecycle(Bucket=C)

# --- Expiry of current objects, unversioned: they go ---
E = "expire"
s3.create_bucket(Bucket=E)
for k in ["expire1/a", "expire1/b", "keep/c"]:
    s3.put_object(Bucket=E, Key=k, Body=b"x")
s3.put_object(Bucket=E, Key="big/large", Body=b"x" * 2000)
s3.put_object(Bucket=E, Key="big/small", Body=b"x" * 10)
put_lc(E, [{"ID": "e1", "Expiration": {"Days": 1}, "Prefix": "expire1/", "Status": "Enabled"},
           {"ID": "off", "Expiration": {"Days": 1}, "Prefix": "keep/", "Status": "Disabled"},
           {"ID": "big", "Expiration": {"Days": 1}, "Status": "Enabled",
            "Filter": {"And": {"Prefix": "big/", "ObjectSizeGreaterThan": 1000}}}])
eventually("expire1/ and big/large expire", lambda: keys(E) == ["big/small", "keep/c"])
# Written now, it lives a lifecycle day first.
s3.put_object(Bucket=E, Key="expire1/new", Body=b"x")
assert "expire1/new" in keys(E)
eventually("expire1/new expires", lambda: "expire1/new" not in keys(E))

# --- Versioned: expiry places a delete marker; noncurrent versions go ---
V = "versioned"
s3.create_bucket(Bucket=V)
s3.put_bucket_versioning(Bucket=V, VersioningConfiguration={"Status": "Enabled"})
for i in range(3):
    s3.put_object(Bucket=V, Key="nc/a", Body=b"%d" % i)
for i in range(6):
    s3.put_object(Bucket=V, Key="newer/b", Body=b"%d" % i)
s3.put_object(Bucket=V, Key="cur/c", Body=b"c")
s3.put_object(Bucket=V, Key="dm/d", Body=b"d")
s3.delete_object(Bucket=V, Key="dm/d")
put_lc(V, [{"ID": "nc", "NoncurrentVersionExpiration": {"NoncurrentDays": 1}, "Prefix": "nc/",
            "Status": "Enabled"},
           {"ID": "newer", "NoncurrentVersionExpiration": {"NoncurrentDays": 1, "NewerNoncurrentVersions": 2},
            "Filter": {"Prefix": "newer/"}, "Status": "Enabled"},
           {"ID": "cur", "Expiration": {"Days": 1}, "Prefix": "cur/", "Status": "Enabled"},
           {"ID": "dm", "Expiration": {"ExpiredObjectDeleteMarker": True},
            "NoncurrentVersionExpiration": {"NoncurrentDays": 1}, "Prefix": "dm/", "Status": "Enabled"}])
eventually("noncurrent versions of nc/a go", lambda: len(versions(V, "nc/")[0]) == 1)
check(s3.get_object(Bucket=V, Key="nc/a")["Body"].read(), b"2", "the current version stays")
eventually("newer/b keeps its current and 2 newest noncurrent", lambda: len(versions(V, "newer/")[0]) == 3)
time.sleep(3 * DAY)
check(len(versions(V, "newer/")[0]), 3, "NewerNoncurrentVersions kept")
eventually("cur/c gets a delete marker", lambda: len(versions(V, "cur/")[1]) == 1)
check(len(versions(V, "cur/")[0]), 1, "the expired object stays as a noncurrent version")
# dm/d: its one object version goes after a day, then the lone marker.
eventually("dm/d's marker and version go", lambda: versions(V, "dm/") == ([], []))

# --- Stale multipart uploads are aborted ---
M = "uploads"
s3.create_bucket(Bucket=M)
stale = s3.create_multipart_upload(Bucket=M, Key="tmp/a")["UploadId"]
kept = s3.create_multipart_upload(Bucket=M, Key="keep/b")["UploadId"]
put_lc(M, [{"ID": "mp", "Filter": {"Prefix": "tmp/"}, "Status": "Enabled",
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}])
eventually("the stale upload is aborted",
           lambda: [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=M).get("Uploads", [])] == [kept])
check(refusal(lambda: s3.list_parts(Bucket=M, Key="tmp/a", UploadId=stale))[1], "NoSuchUpload", "aborted")

# --- A locked version survives every rule ---
L = "locked"
s3.create_bucket(Bucket=L, ObjectLockEnabledForBucket=True)
far = datetime.datetime(2140, 1, 1, tzinfo=UTC)
locked = s3.put_object(Bucket=L, Key="k", Body=b"locked", ObjectLockMode="COMPLIANCE",
                       ObjectLockRetainUntilDate=far)["VersionId"]
held = s3.put_object(Bucket=L, Key="k", Body=b"held", ObjectLockLegalHoldStatus="ON")["VersionId"]
free = s3.put_object(Bucket=L, Key="k", Body=b"free")["VersionId"]
s3.put_object(Bucket=L, Key="k", Body=b"current")
put_lc(L, [{"ID": "all", "Filter": {}, "Status": "Enabled", "Expiration": {"Days": 1},
            "NoncurrentVersionExpiration": {"NoncurrentDays": 1}}])
eventually("the unlocked noncurrent versions go and a marker is placed",
           lambda: sorted(v for _, v in versions(L)[0]) == sorted([locked, held])
           and len(versions(L)[1]) == 1)
time.sleep(3 * DAY)
check(sorted(v for _, v in versions(L)[0]), sorted([locked, held]), "locked versions after more passes")
check(s3.get_object(Bucket=L, Key="k", VersionId=locked)["Body"].read(), b"locked", "the locked version")

print("lifecycle: all checks passed")
