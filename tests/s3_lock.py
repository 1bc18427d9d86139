"""S3 Object Lock through boto3 against the Tessera gateway: run by
tests/s3_lock.rs as `python3 tests/s3_lock.py ENDPOINT ACCESS_KEY SECRET_KEY`.
Exits non-zero with a message on the first difference from what S3
documents (S3 User Guide, "Locking objects with Object Lock"; API reference,
PutObjectLockConfiguration, PutObjectRetention, PutObjectLegalHold, and the
x-amz-object-lock-* headers of PutObject, CopyObject and
CreateMultipartUpload)."""

import datetime
import sys

import boto3
from botocore.config import Config

from s3_refusals import check, refusal

endpoint, key, secret = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key,
                  aws_secret_access_key=secret, region_name="us-east-1", config=Config())
UTC = datetime.timezone.utc


def days_from_now(n):
    return (datetime.datetime.now(UTC) + datetime.timedelta(days=n)).replace(microsecond=0)


def conf(mode="GOVERNANCE", days=None, years=None, enabled="Enabled"):
    period = {}
    if days is not None:
        period["Days"] = days
    if years is not None:
        period["Years"] = years
    return {"ObjectLockEnabled": enabled,
            "Rule": {"DefaultRetention": {"Mode": mode, **period}}}


# --- Buckets: created with Object Lock, or enabled on a versioned bucket ---
L = "locked"
s3.create_bucket(Bucket=L, ObjectLockEnabledForBucket=True)
check(s3.get_bucket_versioning(Bucket=L).get("Status"), "Enabled", "versioning of a lock bucket")
check(refusal(lambda: s3.put_bucket_versioning(
    Bucket=L, VersioningConfiguration={"Status": "Suspended"})),
    (409, "InvalidBucketState"), "suspending versioning under Object Lock")
got = s3.get_object_lock_configuration(Bucket=L)["ObjectLockConfiguration"]
check(got, {"ObjectLockEnabled": "Enabled"}, "configuration of a bucket made with Object Lock")

P = "plain"
s3.create_bucket(Bucket=P)
check(refusal(lambda: s3.get_object_lock_configuration(Bucket=P)),
      (404, "ObjectLockConfigurationNotFoundError"), "lock configuration of a plain bucket")
check(refusal(lambda: s3.put_object_lock_configuration(Bucket=P, ObjectLockConfiguration=conf(days=1))),
      (409, "InvalidBucketState"), "Object Lock on an unversioned bucket")
s3.put_bucket_versioning(Bucket=P, VersioningConfiguration={"Status": "Suspended"})
check(refusal(lambda: s3.put_object_lock_configuration(Bucket=P, ObjectLockConfiguration=conf(days=1))),
      (409, "InvalidBucketState"), "Object Lock on a suspended bucket")

# Malformed configurations.
for bad, want in [
    (conf(days=1, years=1), (400, "MalformedXML")),
    (conf(), (400, "MalformedXML")),
    (conf(days=0), (400, "InvalidRetentionPeriod")),
    (conf(years=-1), (400, "InvalidRetentionPeriod")),
    (conf(mode="abc", years=1), (400, "MalformedXML")),
    (conf(mode="governance", years=1), (400, "MalformedXML")),
    (conf(enabled="Disabled", years=1), (400, "MalformedXML")),
]:
    check(refusal(lambda: s3.put_object_lock_configuration(Bucket=L, ObjectLockConfiguration=bad)),
          want, f"configuration {bad}")

# Lock settings where there is no Object Lock: InvalidRequest.
s3.put_object(Bucket=P, Key="k", Body=b"x")
check(refusal(lambda: s3.put_object_retention(
    Bucket=P, Key="k", Retention={"Mode": "GOVERNANCE", "RetainUntilDate": days_from_now(1)})),
    (400, "InvalidRequest"), "retention in a bucket without Object Lock")
check(refusal(lambda: s3.get_object_retention(Bucket=P, Key="k")),
      (400, "InvalidRequest"), "GetObjectRetention without Object Lock")
check(refusal(lambda: s3.put_object_legal_hold(Bucket=P, Key="k", LegalHold={"Status": "ON"})),
      (400, "InvalidRequest"), "legal hold in a bucket without Object Lock")
check(refusal(lambda: s3.get_object_legal_hold(Bucket=P, Key="k")),
      (400, "InvalidRequest"), "GetObjectLegalHold without Object Lock")
check(refusal(lambda: s3.put_object(Bucket=P, Key="k2", Body=b"x", ObjectLockLegalHoldStatus="ON")),
      (400, "InvalidRequest"), "a PUT with a legal hold in a bucket without Object Lock")
s3.put_bucket_versioning(Bucket=P, VersioningConfiguration={"Status": "Enabled"})
s3.put_object_lock_configuration(Bucket=P, ObjectLockConfiguration=conf(days=1))
check(s3.get_object_lock_configuration(Bucket=P)["ObjectLockConfiguration"], conf(days=1),
      "Object Lock enabled on a versioned bucket")

# --- Default retention: new versions get it ---
s3.put_object_lock_configuration(Bucket=L, ObjectLockConfiguration=conf(days=1))
check(s3.get_object_lock_configuration(Bucket=L)["ObjectLockConfiguration"], conf(days=1),
      "configuration as put")
v1 = s3.put_object(Bucket=L, Key="doc", Body=b"one")["VersionId"]
r = s3.get_object_retention(Bucket=L, Key="doc")["Retention"]
check(r["Mode"], "GOVERNANCE", "default mode")
delta = r["RetainUntilDate"] - datetime.datetime.now(UTC)
assert datetime.timedelta(hours=23) < delta <= datetime.timedelta(days=1), delta
head = s3.head_object(Bucket=L, Key="doc")
check(head["ObjectLockMode"], "GOVERNANCE", "HEAD's lock mode")
check(head["ObjectLockRetainUntilDate"], r["RetainUntilDate"], "HEAD's retain-until date")
check(head["ObjectLockLegalHoldStatus"], "OFF", "HEAD's legal hold")

# A locked version cannot be removed; a delete without a version only
# places a marker; the GOVERNANCE bypass removes it.
check(refusal(lambda: s3.delete_object(Bucket=L, Key="doc", VersionId=v1)),
      (403, "AccessDenied"), "deleting a GOVERNANCE-locked version")
marker = s3.delete_object(Bucket=L, Key="doc")
check(marker.get("DeleteMarker"), True, "a delete without a version id")
check(refusal(lambda: s3.delete_object(Bucket=L, Key="doc", VersionId=v1)),
      (403, "AccessDenied"), "deleting it under a delete marker")
s3.delete_object(Bucket=L, Key="doc", VersionId=marker["VersionId"])
check(s3.get_object(Bucket=L, Key="doc")["Body"].read(), b"one", "the locked version, current again")
s3.delete_object(Bucket=L, Key="doc", VersionId=v1, BypassGovernanceRetention=True)
check(refusal(lambda: s3.head_object(Bucket=L, Key="doc"))[0], 404, "removed with the bypass")

# --- GOVERNANCE retention set per version ---
s3.put_object_lock_configuration(Bucket=L, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"})
g = s3.put_object(Bucket=L, Key="gov", Body=b"g")["VersionId"]
check(refusal(lambda: s3.get_object_retention(Bucket=L, Key="gov")),
      (404, "NoSuchObjectLockConfiguration"), "a version without retention")
far = datetime.datetime(2140, 1, 1, tzinfo=UTC)
later = datetime.datetime(2140, 1, 3, tzinfo=UTC)
s3.put_object_retention(Bucket=L, Key="gov", Retention={"Mode": "GOVERNANCE", "RetainUntilDate": far})
check(s3.get_object_retention(Bucket=L, Key="gov", VersionId=g)["Retention"],
      {"Mode": "GOVERNANCE", "RetainUntilDate": far}, "retention as put")
s3.put_object_retention(Bucket=L, Key="gov", Retention={"Mode": "GOVERNANCE", "RetainUntilDate": later})
check(refusal(lambda: s3.put_object_retention(
    Bucket=L, Key="gov", Retention={"Mode": "GOVERNANCE", "RetainUntilDate": far})),
    (403, "AccessDenied"), "shortening GOVERNANCE without the bypass")
check(refusal(lambda: s3.put_object_retention(
    Bucket=L, Key="gov", Retention={"Mode": "COMPLIANCE", "RetainUntilDate": later})),
    (403, "AccessDenied"), "changing GOVERNANCE's mode without the bypass")
s3.put_object_retention(Bucket=L, Key="gov", VersionId=g, BypassGovernanceRetention=True,
                        Retention={"Mode": "GOVERNANCE", "RetainUntilDate": far})
check(s3.get_object_retention(Bucket=L, Key="gov")["Retention"]["RetainUntilDate"], far,
      "shortened with the bypass")
for bad in [{"Mode": "governance", "RetainUntilDate": far}, {"Mode": "abc", "RetainUntilDate": far}]:
    check(refusal(lambda: s3.put_object_retention(Bucket=L, Key="gov", Retention=bad)),
          (400, "MalformedXML"), f"retention {bad}")
check(refusal(lambda: s3.put_object_retention(
    Bucket=L, Key="gov", Retention={"Mode": "GOVERNANCE",
                                    "RetainUntilDate": datetime.datetime(2000, 1, 1, tzinfo=UTC)})),
    (400, "InvalidArgument"), "a retain-until date in the past")
check(refusal(lambda: s3.put_object_retention(
    Bucket=L, Key="gov", VersionId="0123456789abcdef", Retention={"Mode": "GOVERNANCE", "RetainUntilDate": far})),
    (404, "NoSuchVersion"), "retention of an unknown version")

# --- COMPLIANCE: never shortened, never removed before its date ---
c = s3.put_object(Bucket=L, Key="comp", Body=b"c", ObjectLockMode="COMPLIANCE",
                  ObjectLockRetainUntilDate=far)["VersionId"]
head = s3.head_object(Bucket=L, Key="comp", VersionId=c)
check((head["ObjectLockMode"], head["ObjectLockRetainUntilDate"]), ("COMPLIANCE", far), "HEAD of COMPLIANCE")
got = s3.get_object(Bucket=L, Key="comp")
check((got["ObjectLockMode"], got["ObjectLockRetainUntilDate"]), ("COMPLIANCE", far), "GET of COMPLIANCE")
for retention in [{"Mode": "COMPLIANCE", "RetainUntilDate": days_from_now(30)},
                  {"Mode": "GOVERNANCE", "RetainUntilDate": far}]:
    check(refusal(lambda: s3.put_object_retention(Bucket=L, Key="comp", Retention=retention,
                                                  BypassGovernanceRetention=True)),
          (403, "AccessDenied"), f"weakening COMPLIANCE to {retention}")
check(refusal(lambda: s3.delete_object(Bucket=L, Key="comp", VersionId=c, BypassGovernanceRetention=True)),
      (403, "AccessDenied"), "deleting a COMPLIANCE version with the bypass")
s3.put_object_retention(Bucket=L, Key="comp", Retention={"Mode": "COMPLIANCE", "RetainUntilDate": later})
check(s3.get_object_retention(Bucket=L, Key="comp")["Retention"]["RetainUntilDate"], later,
      "COMPLIANCE lengthened")
# An overwrite makes a new version; the locked one stays.
s3.put_object(Bucket=L, Key="comp", Body=b"c2")
check(s3.get_object(Bucket=L, Key="comp", VersionId=c)["Body"].read(), b"c", "the locked version after an overwrite")

# Header forms on PUT.
check(refusal(lambda: s3.put_object(Bucket=L, Key="x", Body=b"x", ObjectLockMode="GOVERNANCE")),
      (400, "InvalidArgument"), "a mode without a date")
check(refusal(lambda: s3.put_object(Bucket=L, Key="x", Body=b"x", ObjectLockMode="GOVERNANCE",
                                    ObjectLockRetainUntilDate=datetime.datetime(2000, 1, 1, tzinfo=UTC))),
      (400, "InvalidArgument"), "a retain-until date in the past on PUT")

# --- Legal hold ---
h = s3.put_object(Bucket=L, Key="hold", Body=b"h", ObjectLockLegalHoldStatus="ON")["VersionId"]
check(s3.get_object_legal_hold(Bucket=L, Key="hold")["LegalHold"], {"Status": "ON"}, "hold at PUT")
check(refusal(lambda: s3.delete_object(Bucket=L, Key="hold", VersionId=h, BypassGovernanceRetention=True)),
      (403, "AccessDenied"), "deleting a version under legal hold")
check(refusal(lambda: s3.put_object_legal_hold(Bucket=L, Key="hold", LegalHold={"Status": "abc"})),
      (400, "MalformedXML"), "a legal hold status that is neither ON nor OFF")
s3.put_object_legal_hold(Bucket=L, Key="hold", VersionId=h, LegalHold={"Status": "OFF"})
check(s3.get_object_legal_hold(Bucket=L, Key="hold")["LegalHold"], {"Status": "OFF"}, "hold off")
s3.delete_object(Bucket=L, Key="hold", VersionId=h)

# Multipart: the upload's lock applies to the completed object.
up = s3.create_multipart_upload(Bucket=L, Key="mp", ObjectLockLegalHoldStatus="ON",
                                ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=far)
etag = s3.upload_part(Bucket=L, Key="mp", UploadId=up["UploadId"], PartNumber=1, Body=b"m" * 100)["ETag"]
mp = s3.complete_multipart_upload(Bucket=L, Key="mp", UploadId=up["UploadId"],
                                  MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})["VersionId"]
head = s3.head_object(Bucket=L, Key="mp")
check((head["ObjectLockMode"], head["ObjectLockLegalHoldStatus"]), ("GOVERNANCE", "ON"), "multipart lock")
check(refusal(lambda: s3.delete_object(Bucket=L, Key="mp", VersionId=mp)),
      (403, "AccessDenied"), "deleting a locked multipart object")

# Copy: the destination's lock is the request's, never the source's.
s3.copy_object(Bucket=L, Key="copy", CopySource={"Bucket": L, "Key": "comp", "VersionId": c})
check(refusal(lambda: s3.get_object_retention(Bucket=L, Key="copy")),
      (404, "NoSuchObjectLockConfiguration"), "a copy of a locked version")
s3.copy_object(Bucket=L, Key="copy2", CopySource={"Bucket": L, "Key": "comp"},
               ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=far)
check(s3.get_object_retention(Bucket=L, Key="copy2")["Retention"]["Mode"], "GOVERNANCE", "a copy's own lock")

# DeleteObjects: per-key AccessDenied for locked versions, the rest deleted.
free = s3.put_object(Bucket=L, Key="free", Body=b"f")["VersionId"]
res = s3.delete_objects(Bucket=L, Delete={"Objects": [
    {"Key": "comp", "VersionId": c}, {"Key": "free", "VersionId": free}]})
check([(e["Key"], e["Code"]) for e in res.get("Errors", [])], [("comp", "AccessDenied")], "DeleteObjects errors")
check([d["Key"] for d in res.get("Deleted", [])], ["free"], "DeleteObjects deleted")
gv = s3.put_object(Bucket=L, Key="gov2", Body=b"g", ObjectLockMode="GOVERNANCE",
                   ObjectLockRetainUntilDate=far)["VersionId"]
res = s3.delete_objects(Bucket=L, BypassGovernanceRetention=True,
                        Delete={"Objects": [{"Key": "gov2", "VersionId": gv}]})
check(res.get("Errors", []), [], "DeleteObjects with the bypass")

# A bucket with locked versions cannot be deleted.
check(refusal(lambda: s3.delete_bucket(Bucket=L))[1], "BucketNotEmpty", "deleting the bucket")

print("object lock: all checks passed")
