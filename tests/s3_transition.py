"""Lifecycle transitions through boto3 against the Tessera gateway: run by
tests/s3_transition.rs as `python3 tests/s3_transition.py ENDPOINT
ACCESS_KEY SECRET_KEY PHASE`, with STANDARD_IA mapped to ec:4+2 by the
operator and meta's lifecycle day shortened. PHASE `put` writes the
objects (in a bucket of policy rep:2) and the rules; `check` waits for
the transitions and checks every object's bytes and class (S3 User
Guide, "Transitioning objects using Amazon S3 Lifecycle"). Exits non-zero
with a message on the first difference."""

import hashlib
import sys
import time

import boto3
from botocore.config import Config

from s3_refusals import check, refusal

endpoint, key, secret, phase = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key,
                  aws_secret_access_key=secret, region_name="us-east-1", config=Config())
B = "tier"
COUNT = 24


def body(i, size):
    """Distinct, reproducible bytes for object `i`."""
    seed = hashlib.sha256(str(i).encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


OBJECTS = {f"t/{i:02}": body(i, (1 << 20) + i * 4099) for i in range(COUNT)}
OBJECTS["t/small"] = body(100, 1000)  # kept inline in meta
OBJECTS["g/archive"] = body(101, 300_000)
VERSIONED = "tier-v"


def storage_class(head):
    return head.get("StorageClass", "STANDARD")


if phase == "put":
    s3.create_bucket(Bucket=B, CreateBucketConfiguration={"LocationConstraint": "rep:2"})
    for k, data in OBJECTS.items():
        s3.put_object(Bucket=B, Key=k, Body=data)
    # A write naming a mapped class takes its policy right away.
    s3.put_object(Bucket=B, Key="direct", Body=body(102, 2 << 20), StorageClass="STANDARD_IA")
    up = s3.create_multipart_upload(Bucket=B, Key="multi", StorageClass="STANDARD_IA")
    p = s3.upload_part(Bucket=B, Key="multi", UploadId=up["UploadId"], PartNumber=1,
                       Body=body(103, 5 << 20))
    s3.complete_multipart_upload(Bucket=B, Key="multi", UploadId=up["UploadId"],
                                 MultipartUpload={"Parts": [{"PartNumber": 1,
                                                             "ETag": p["ETag"]}]})
    check(storage_class(s3.head_object(Bucket=B, Key="direct")), "STANDARD_IA", "direct")
    # GLACIER is not mapped: its writes stay refused, its transitions
    # stored and answered but not applied.
    check(refusal(lambda: s3.put_object(Bucket=B, Key="x", Body=b"x", StorageClass="GLACIER")),
          (400, "InvalidStorageClass"), "a PUT in GLACIER")
    s3.put_bucket_lifecycle_configuration(Bucket=B, LifecycleConfiguration={"Rules": [
        {"ID": "ia", "Status": "Enabled", "Filter": {"Prefix": "t/"},
         "Transitions": [{"Days": 1, "StorageClass": "STANDARD_IA"}]},
        {"ID": "glacier", "Status": "Enabled", "Filter": {"Prefix": "g/"},
         "Transitions": [{"Days": 1, "StorageClass": "GLACIER"}]},
    ]})
    # A versioned bucket: a noncurrent version transitions too, and one
    # under Object Lock (retention protects against removal, not
    # re-encoding).
    s3.create_bucket(Bucket=VERSIONED, ObjectLockEnabledForBucket=True,
                     CreateBucketConfiguration={"LocationConstraint": "rep:2"})
    s3.put_object(Bucket=VERSIONED, Key="k", Body=body(200, 600_000),
                  ObjectLockMode="GOVERNANCE",
                  ObjectLockRetainUntilDate=time.time() + 3600)
    s3.put_object(Bucket=VERSIONED, Key="k", Body=body(201, 700_000))
    s3.put_bucket_lifecycle_configuration(Bucket=VERSIONED, LifecycleConfiguration={"Rules": [
        {"ID": "nc", "Status": "Enabled", "Filter": {},
         "NoncurrentVersionTransitions": [{"NoncurrentDays": 1,
                                           "StorageClass": "STANDARD_IA"}]},
    ]})
    print("transition: put done")
elif phase == "check":
    deadline = time.time() + 180
    while time.time() < deadline:
        classes = {k: storage_class(s3.head_object(Bucket=B, Key=k))
                   for k in OBJECTS if k.startswith("t/")}
        versions = s3.list_object_versions(Bucket=VERSIONED)["Versions"]
        old = [v for v in versions if not v["IsLatest"]]
        if set(classes.values()) == {"STANDARD_IA"} and old[0].get(
                "StorageClass") == "STANDARD_IA":
            break
        time.sleep(1)
    else:
        raise AssertionError(f"not transitioned: {classes} {versions}")
    for k, data in OBJECTS.items():
        got = s3.get_object(Bucket=B, Key=k)
        check(got["Body"].read() == data, True, f"{k}: the bytes")
        want = "GLACIER" if k.startswith("g/") else "STANDARD_IA"
        if k.startswith("g/"):
            # Stored, not applied: the object keeps its class.
            want = "STANDARD"
        check(storage_class(got), want, f"{k}: GET's class")
    listed = {o["Key"]: o["StorageClass"]
              for o in s3.list_objects_v2(Bucket=B, Prefix="t/")["Contents"]}
    check(set(listed.values()), {"STANDARD_IA"}, "the listing's classes")
    check(s3.get_object(Bucket=B, Key="multi")["Body"].read(), body(103, 5 << 20), "multi")
    versions = s3.list_object_versions(Bucket=VERSIONED)["Versions"]
    old = [v for v in versions if not v["IsLatest"]][0]
    new = [v for v in versions if v["IsLatest"]][0]
    check(new.get("StorageClass"), "STANDARD", "the current version stays")
    got = s3.get_object(Bucket=VERSIONED, Key="k", VersionId=old["VersionId"])
    check(got["Body"].read() == body(200, 600_000), True, "the locked version's bytes")
    check(got.get("ObjectLockMode"), "GOVERNANCE", "its lock")
    print("transition: all checks passed")
