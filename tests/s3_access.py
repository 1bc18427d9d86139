"""Access control and CORS through boto3 and urllib against the Tessera
gateway: run by tests/s3_access.rs as `python3 tests/s3_access.py ENDPOINT
OWNER_KEY OWNER_SECRET OTHER_KEY OTHER_SECRET`. OTHER has no grant on the
buckets made here: what it may do comes from bucket policies only.
Exits non-zero with a message on the first difference from what S3
documents (S3 User Guide, "Using cross-origin resource sharing (CORS)",
"Bucket policies for Amazon S3"; API reference, "Appendix: OPTIONS
object", PutBucketCors, PutBucketPolicy, GetBucketPolicyStatus)."""

import json
import sys
import urllib.error
import urllib.request

from botocore.exceptions import ClientError

from s3_refusals import client

endpoint, owner_key, owner_secret, other_key, other_secret = sys.argv[1:6]
owner = client(endpoint, owner_key, owner_secret)
other = client(endpoint, other_key, other_secret)
anon = client(endpoint)


def refusal(fn):
    """(status, code) of the S3 error `fn` raises."""
    try:
        fn()
    except ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"].get("Code")
    raise AssertionError("expected an error")


def http(method, url, headers=None, data=None):
    """(status, headers as a lower-cased dict, body) of a plain request."""
    r = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(r) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def s3_error(body, code):
    """The body is S3's error document with `code` and a request id."""
    text = body.decode()
    assert f"<Code>{code}</Code>" in text and "<RequestId>" in text, text


def preflight(bucket, key, origin, method, req_headers=None):
    h = {"Access-Control-Request-Method": method}
    if origin is not None:
        h["Origin"] = origin
    if req_headers:
        h["Access-Control-Request-Headers"] = req_headers
    return http("OPTIONS", f"{endpoint}/{bucket}/{key}", h)


# ---------------------------------------------------------------- CORS
C = "cors-bucket"
owner.create_bucket(Bucket=C)
owner.put_object(Bucket=C, Key="page.txt", Body=b"hello")
assert refusal(lambda: owner.get_bucket_cors(Bucket=C)) == (404, "NoSuchCORSConfiguration")
status, _, body = preflight(C, "page.txt", "https://app.example", "GET")
assert status == 403, status
s3_error(body, "AccessForbidden")

APP_RULE = {
    "ID": "app",
    "AllowedOrigins": ["https://app.example"],
    "AllowedMethods": ["GET", "PUT"],
    "AllowedHeaders": ["x-amz-*", "Content-Type"],
    "ExposeHeaders": ["ETag", "x-amz-request-id"],
    "MaxAgeSeconds": 600,
}
ANY_RULE = {"AllowedOrigins": ["*"], "AllowedMethods": ["GET", "HEAD"]}
SUB_RULE = {"AllowedOrigins": ["https://*.sub.example"], "AllowedMethods": ["DELETE"]}
owner.put_bucket_cors(Bucket=C, CORSConfiguration={"CORSRules": [APP_RULE, ANY_RULE, SUB_RULE]})
got = owner.get_bucket_cors(Bucket=C)["CORSRules"]
assert got == [APP_RULE, ANY_RULE, SUB_RULE], got

# An allowed preflight: the first matching rule's headers.
status, h, _ = preflight(C, "page.txt", "https://app.example", "PUT", "content-type, x-amz-meta-colour")
assert status == 200, status
assert h["access-control-allow-origin"] == "https://app.example", h
assert h["access-control-allow-methods"] == "GET, PUT", h
assert h["access-control-allow-headers"] == "content-type, x-amz-meta-colour", h
assert h["access-control-expose-headers"] == "ETag, x-amz-request-id", h
assert h["access-control-max-age"] == "600", h
assert h["access-control-allow-credentials"] == "true", h
assert "Origin" in h["vary"], h
# Any origin may GET: S3 answers `*` and no credentials.
status, h, _ = preflight(C, "page.txt", "https://elsewhere.example", "GET")
assert status == 200 and h["access-control-allow-origin"] == "*", (status, h)
assert "access-control-allow-credentials" not in h and "access-control-max-age" not in h, h
# A wildcard origin.
status, h, _ = preflight(C, "x", "https://a.b.sub.example", "DELETE")
assert status == 200 and h["access-control-allow-origin"] == "https://a.b.sub.example", (status, h)
# Refused preflights: 403 in S3's error form, and no CORS headers.
for origin, method, headers in [
    ("https://evil.example", "PUT", None),             # origin not allowed for PUT
    ("https://app.example", "PUT", "x-forbidden"),     # a header no rule allows
    ("https://app.example", "DELETE", None),           # a method no rule allows the origin
    ("https://sub.example", "DELETE", None),           # the wildcard needs a subdomain
    ("http://app.example", "PUT", None),               # scheme is part of the origin
]:
    status, h, body = preflight(C, "page.txt", origin, method, headers)
    assert status == 403, (origin, method, headers, status)
    s3_error(body, "AccessForbidden")
    assert "access-control-allow-origin" not in h, h
# Malformed preflights: 400.
status, _, body = preflight(C, "page.txt", None, "GET")
assert status == 400, status
s3_error(body, "BadRequest")
status, _, body = preflight(C, "page.txt", "https://app.example", "PATCH")
assert status == 400, status
# Without a method to ask about, nothing is allowed.
status, h, body = http("OPTIONS", f"{endpoint}/{C}/page.txt", {"Origin": "https://app.example"})
assert status == 403 and "access-control-allow-origin" not in h, (status, h)
s3_error(body, "AccessForbidden")
status, _, body = preflight("no-such-bucket-here", "x", "https://app.example", "GET")
assert status == 404, status
s3_error(body, "NoSuchBucket")

# Actual requests carry the matching rule's headers, presigned ones too.
url = owner.generate_presigned_url("get_object", Params={"Bucket": C, "Key": "page.txt"})
status, h, body = http("GET", url, {"Origin": "https://app.example"})
assert status == 200 and body == b"hello", status
assert h["access-control-allow-origin"] == "https://app.example", h
assert h["access-control-expose-headers"] == "ETag, x-amz-request-id", h
status, h, _ = http("GET", url, {"Origin": "https://elsewhere.example"})
assert status == 200 and h["access-control-allow-origin"] == "*", h
status, h, _ = http("GET", url)
assert status == 200 and "access-control-allow-origin" not in h, h
put_url = owner.generate_presigned_url("put_object", Params={"Bucket": C, "Key": "up.txt"})
status, h, _ = http("PUT", put_url, {"Origin": "https://app.example"}, b"from a browser")
assert status == 200 and h["access-control-allow-origin"] == "https://app.example", (status, h)
status, h, _ = http("PUT", put_url, {"Origin": "https://elsewhere.example"}, b"x")
assert status == 200 and "access-control-allow-origin" not in h, (status, h)
# Also on a refusal, so that the page's script can read the error.
status, h, body = http("GET", f"{endpoint}/{C}/page.txt", {"Origin": "https://app.example"})
assert status == 403 and h["access-control-allow-origin"] == "https://app.example", (status, h)
s3_error(body, "AccessDenied")

# Bad configurations are refused and change nothing.
for rules, want in [
    ([{"AllowedOrigins": ["*"], "AllowedMethods": ["PATCH"]}], (400, "InvalidRequest")),
    ([{"AllowedOrigins": ["https://*.*.example"], "AllowedMethods": ["GET"]}], (400, "InvalidRequest")),
    ([{"AllowedOrigins": ["*"], "AllowedMethods": ["GET"], "AllowedHeaders": ["*a*"]}], (400, "InvalidRequest")),
    ([ANY_RULE] * 101, (400, "MalformedXML")),
]:
    got = refusal(lambda: owner.put_bucket_cors(Bucket=C, CORSConfiguration={"CORSRules": rules}))
    assert got == want, (rules[:1], got)
assert owner.get_bucket_cors(Bucket=C)["CORSRules"] == [APP_RULE, ANY_RULE, SUB_RULE]
owner.put_bucket_cors(Bucket=C, CORSConfiguration={"CORSRules": [ANY_RULE] * 100})
# Only the owner manages CORS.
assert refusal(lambda: other.put_bucket_cors(
    Bucket=C, CORSConfiguration={"CORSRules": [ANY_RULE]})) == (403, "AccessDenied")
assert refusal(lambda: other.get_bucket_cors(Bucket=C)) == (403, "AccessDenied")
assert refusal(lambda: anon.delete_bucket_cors(Bucket=C)) == (403, "AccessDenied")
resp = owner.delete_bucket_cors(Bucket=C)
assert resp["ResponseMetadata"]["HTTPStatusCode"] == 204, resp
assert refusal(lambda: owner.get_bucket_cors(Bucket=C)) == (404, "NoSuchCORSConfiguration")
status, h, _ = preflight(C, "page.txt", "https://app.example", "GET")
assert status == 403, status
status, h, _ = http("GET", url, {"Origin": "https://app.example"})
assert status == 200 and "access-control-allow-origin" not in h, h
print("cors: checks passed")

# ---------------------------------------------------------------- policies
P = "policy-bucket"
owner.create_bucket(Bucket=P)
for k in ["public/a", "public/secret-1", "private/b", "home/x/1", "home/ro/r", "home/del/a",
          "other/y", "lan/f", "local/f"]:
    owner.put_object(Bucket=P, Key=k, Body=k.encode())

# Before any policy: anonymous and the other key are refused, in S3's form.
assert refusal(lambda: anon.get_object(Bucket=P, Key="public/a")) == (403, "AccessDenied")
assert refusal(lambda: anon.list_objects_v2(Bucket=P)) == (403, "AccessDenied")
assert refusal(lambda: other.get_object(Bucket=P, Key="public/a")) == (403, "AccessDenied")
status, _, body = http("GET", f"{endpoint}/{P}/public/a")
assert status == 403, status
s3_error(body, "AccessDenied")
assert refusal(lambda: owner.get_bucket_policy(Bucket=P)) == (404, "NoSuchBucketPolicy")
assert owner.get_bucket_policy_status(Bucket=P)["PolicyStatus"]["IsPublic"] is False
# A missing bucket is NoSuchBucket, also to anonymous callers.
assert refusal(lambda: anon.get_object(Bucket="no-such-bucket-here", Key="k")) == (404, "NoSuchBucket")

ARN = f"arn:aws:s3:::{P}"
OTHER = f"arn:aws:iam::tessera:user/{other_key}"
policy = {
    "Version": "2012-10-17",
    "Statement": [
        {"Sid": "PublicRead", "Effect": "Allow", "Principal": "*",
         "Action": "s3:GetObject", "Resource": f"{ARN}/public/*"},
        {"Sid": "NoSecrets", "Effect": "Deny", "Principal": {"AWS": "*"},
         "Action": "s3:GetObject", "Resource": f"{ARN}/public/secret*"},
        {"Sid": "ListHome", "Effect": "Allow", "Principal": {"AWS": OTHER},
         "Action": "s3:ListBucket", "Resource": ARN,
         "Condition": {"StringLike": {"s3:prefix": ["home/", "home/*"]}}},
        {"Sid": "UseHome", "Effect": "Allow", "Principal": {"AWS": [other_key]},
         "Action": ["s3:Get*", "s3:PutObject"], "Resource": f"{ARN}/home/*"},
        {"Sid": "HomeDelete", "Effect": "Allow", "Principal": {"AWS": other_key},
         "Action": "s3:DeleteObject", "Resource": f"{ARN}/home/del/*"},
        {"Sid": "ReadOnly", "Effect": "Deny", "Principal": {"AWS": OTHER},
         "Action": "s3:PutObject", "Resource": f"{ARN}/home/ro/*"},
        {"Sid": "Lan", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
         "Resource": f"{ARN}/lan/*", "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}},
        {"Sid": "Local", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
         "Resource": f"{ARN}/local/*", "Condition": {"IpAddress": {"aws:SourceIp": ["127.0.0.0/8", "::1"]}}},
        {"Sid": "TlsOnly", "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
         "Resource": f"{ARN}/tls/*", "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
    ],
}

# Malformed policies: MalformedPolicy (400), nothing stored.
for bad in [
    "{not json",
    json.dumps({"Statement": []}),
    json.dumps({"Version": "2030-01-01", "Statement": policy["Statement"]}),
    json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                               "Resource": "arn:aws:s3:::someone-else/*"}]}),
    json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "iam:PassRole",
                               "Resource": f"{ARN}/*"}]}),
    json.dumps({"Statement": [{"Principal": "*", "Action": "s3:GetObject", "Resource": f"{ARN}/*"}]}),
    json.dumps({"Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{ARN}/*"}]}),
    json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                               "Resource": f"{ARN}/*",
                               "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.999/8"}}}]}),
    json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                               "Resource": f"{ARN}/*",
                               "Condition": {"DateLessThan": {"aws:CurrentTime": "2030-01-01"}}}]}),
]:
    got = refusal(lambda: owner.put_bucket_policy(Bucket=P, Policy=bad))
    assert got == (400, "MalformedPolicy"), (bad, got)
assert refusal(lambda: owner.get_bucket_policy(Bucket=P)) == (404, "NoSuchBucketPolicy")
# Only the owner manages the policy.
text = json.dumps(policy)
assert refusal(lambda: other.put_bucket_policy(Bucket=P, Policy=text)) == (403, "AccessDenied")
assert refusal(lambda: anon.put_bucket_policy(Bucket=P, Policy=text)) == (403, "AccessDenied")

resp = owner.put_bucket_policy(Bucket=P, Policy=text)
assert resp["ResponseMetadata"]["HTTPStatusCode"] in (200, 204), resp
assert json.loads(owner.get_bucket_policy(Bucket=P)["Policy"]) == policy
assert owner.get_bucket_policy_status(Bucket=P)["PolicyStatus"]["IsPublic"] is True
assert refusal(lambda: other.get_bucket_policy(Bucket=P)) == (403, "AccessDenied")

# Anonymous: allowed by the policy, and only there.
assert anon.get_object(Bucket=P, Key="public/a")["Body"].read() == b"public/a"
status, _, body = http("GET", f"{endpoint}/{P}/public/a")
assert status == 200 and body == b"public/a", status
assert anon.head_object(Bucket=P, Key="public/a")["ContentLength"] == 8
for fn in [
    lambda: anon.get_object(Bucket=P, Key="public/secret-1"),   # Deny wins
    lambda: anon.get_object(Bucket=P, Key="private/b"),
    lambda: anon.list_objects_v2(Bucket=P, Prefix="public/"),
    lambda: anon.put_object(Bucket=P, Key="public/new", Body=b"x"),
    lambda: anon.delete_object(Bucket=P, Key="public/a"),
    lambda: anon.get_object(Bucket=P, Key="lan/f"),             # not from 10/8
    lambda: anon.list_buckets(),
]:
    assert refusal(fn) == (403, "AccessDenied")
assert anon.get_object(Bucket=P, Key="local/f")["Body"].read() == b"local/f"
assert owner.get_object(Bucket=P, Key="public/a")["Body"].read() == b"public/a"

# Deny wins over the owner's own grant too; the grant still covers the rest.
assert refusal(lambda: owner.get_object(Bucket=P, Key="public/secret-1")) == (403, "AccessDenied")
assert owner.get_object(Bucket=P, Key="private/b")["Body"].read() == b"private/b"
assert refusal(lambda: owner.put_object(Bucket=P, Key="tls/x", Body=b"x")) == (403, "AccessDenied")
owner.put_object(Bucket=P, Key="plain/x", Body=b"x")

# The other key: what the policy gives it, with the prefix condition.
keys = [o["Key"] for o in other.list_objects_v2(Bucket=P, Prefix="home/")["Contents"]]
assert keys == ["home/del/a", "home/ro/r", "home/x/1"], keys
other.list_objects_v2(Bucket=P, Prefix="home/x/")
other.list_objects(Bucket=P, Prefix="home/")
assert refusal(lambda: other.list_objects_v2(Bucket=P)) == (403, "AccessDenied")
assert refusal(lambda: other.list_objects_v2(Bucket=P, Prefix="other/")) == (403, "AccessDenied")
assert refusal(lambda: other.list_objects_v2(Bucket=P, Prefix="homework")) == (403, "AccessDenied")
assert other.get_object(Bucket=P, Key="home/x/1")["Body"].read() == b"home/x/1"
assert other.get_object_tagging(Bucket=P, Key="home/x/1")["TagSet"] == []
other.put_object(Bucket=P, Key="home/x/2", Body=b"mine")
assert owner.get_object(Bucket=P, Key="home/x/2")["Body"].read() == b"mine"
assert refusal(lambda: other.put_object(Bucket=P, Key="home/ro/w", Body=b"x")) == (403, "AccessDenied")
assert other.get_object(Bucket=P, Key="home/ro/r")["Body"].read() == b"home/ro/r"
assert refusal(lambda: other.get_object(Bucket=P, Key="private/b")) == (403, "AccessDenied")
assert refusal(lambda: other.delete_object(Bucket=P, Key="home/x/1")) == (403, "AccessDenied")
assert refusal(lambda: other.put_object_tagging(
    Bucket=P, Key="home/x/1", Tagging={"TagSet": []})) == (403, "AccessDenied")
assert refusal(lambda: other.delete_bucket(Bucket=P)) == (403, "AccessDenied")
# Multipart into home/ is PutObject too.
up = other.create_multipart_upload(Bucket=P, Key="home/x/mp")
part = other.upload_part(Bucket=P, Key="home/x/mp", UploadId=up["UploadId"], PartNumber=1, Body=b"mp")
other.complete_multipart_upload(Bucket=P, Key="home/x/mp", UploadId=up["UploadId"],
                                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
assert refusal(lambda: other.create_multipart_upload(Bucket=P, Key="home/ro/mp")) == (403, "AccessDenied")
# Copies need GetObject on the source and PutObject on the destination.
other.copy_object(Bucket=P, Key="home/x/copy", CopySource={"Bucket": P, "Key": "public/a"})
assert owner.get_object(Bucket=P, Key="home/x/copy")["Body"].read() == b"public/a"
assert refusal(lambda: other.copy_object(
    Bucket=P, Key="home/x/copy2", CopySource={"Bucket": P, "Key": "private/b"})) == (403, "AccessDenied")
assert refusal(lambda: other.copy_object(
    Bucket=P, Key="private/c", CopySource={"Bucket": P, "Key": "home/x/1"})) == (403, "AccessDenied")
# DeleteObjects: each key is its own DeleteObject.
resp = other.delete_objects(Bucket=P, Delete={"Objects": [{"Key": "home/del/a"}, {"Key": "home/x/1"}]})
assert [d["Key"] for d in resp.get("Deleted", [])] == ["home/del/a"], resp
assert [(e["Key"], e["Code"]) for e in resp.get("Errors", [])] == [("home/x/1", "AccessDenied")], resp
assert owner.get_object(Bucket=P, Key="home/x/1")["Body"].read() == b"home/x/1"
# A presigned URL signed by the other key works where the policy allows.
url = other.generate_presigned_url("get_object", Params={"Bucket": P, "Key": "home/x/1"})
status, _, body = http("GET", url)
assert status == 200 and body == b"home/x/1", status
url = other.generate_presigned_url("get_object", Params={"Bucket": P, "Key": "private/b"})
status, _, body = http("GET", url)
assert status == 403, status
s3_error(body, "AccessDenied")
# Other buckets are not touched by this policy.
assert refusal(lambda: other.get_object(Bucket=C, Key="page.txt")) == (403, "AccessDenied")

# An account principal is every signed key; NotPrincipal everyone but.
acct = {"Statement": [
    {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::tessera:root"}, "Action": "s3:GetObject",
     "Resource": f"{ARN}/other/*"},
    {"Effect": "Deny", "NotPrincipal": {"AWS": owner_key}, "Action": "s3:GetObject",
     "Resource": f"{ARN}/other/y"}]}
owner.put_bucket_policy(Bucket=P, Policy=json.dumps(acct))
assert owner.get_bucket_policy_status(Bucket=P)["PolicyStatus"]["IsPublic"] is False
owner.put_object(Bucket=P, Key="other/z", Body=b"z")
assert other.get_object(Bucket=P, Key="other/z")["Body"].read() == b"z"
assert refusal(lambda: anon.get_object(Bucket=P, Key="other/z")) == (403, "AccessDenied")
assert refusal(lambda: other.get_object(Bucket=P, Key="other/y")) == (403, "AccessDenied")
assert owner.get_object(Bucket=P, Key="other/y")["Body"].read() == b"other/y"

# A policy denying everything cannot lock the owner out of the policy.
lockout = {"Statement": [{"Effect": "Deny", "Principal": "*", "Action": "s3:*",
                          "Resource": [ARN, f"{ARN}/*"]}]}
owner.put_bucket_policy(Bucket=P, Policy=json.dumps(lockout))
assert refusal(lambda: owner.get_bucket_policy_status(Bucket=P)) == (403, "AccessDenied")
assert refusal(lambda: owner.get_object(Bucket=P, Key="private/b")) == (403, "AccessDenied")
assert refusal(lambda: owner.list_objects_v2(Bucket=P)) == (403, "AccessDenied")
assert json.loads(owner.get_bucket_policy(Bucket=P)["Policy"]) == lockout
resp = owner.delete_bucket_policy(Bucket=P)
assert resp["ResponseMetadata"]["HTTPStatusCode"] == 204, resp
assert owner.get_object(Bucket=P, Key="private/b")["Body"].read() == b"private/b"
assert refusal(lambda: anon.get_object(Bucket=P, Key="public/a")) == (403, "AccessDenied")
assert refusal(lambda: owner.get_bucket_policy(Bucket=P)) == (404, "NoSuchBucketPolicy")
# A policy pinned to an address range is not public.
pinned = {"Statement": [policy["Statement"][7]]}
owner.put_bucket_policy(Bucket=P, Policy=json.dumps(pinned))
assert owner.get_bucket_policy_status(Bucket=P)["PolicyStatus"]["IsPublic"] is False
owner.delete_bucket_policy(Bucket=P)
# A condition on the object's own tags (s3:ExistingObjectTag).
T = "tagged-bucket"
owner.create_bucket(Bucket=T)
owner.put_object(Bucket=T, Key="shared", Body=b"s", Tagging="share=yes")
owner.put_object(Bucket=T, Key="kept", Body=b"k", Tagging="share=no")
owner.put_object(Bucket=T, Key="plain", Body=b"p")
owner.put_bucket_policy(Bucket=T, Policy=json.dumps({"Statement": [
    {"Effect": "Allow", "Principal": {"AWS": other_key}, "Action": ["s3:GetObject", "s3:GetObjectVersion"],
     "Resource": f"arn:aws:s3:::{T}/*",
     "Condition": {"StringEquals": {"s3:ExistingObjectTag/share": "yes"}}}]}))
assert other.get_object(Bucket=T, Key="shared")["Body"].read() == b"s"
for k in ["kept", "plain", "missing"]:
    assert refusal(lambda: other.get_object(Bucket=T, Key=k)) == (403, "AccessDenied"), k
owner.put_object_tagging(Bucket=T, Key="kept", Tagging={"TagSet": [{"Key": "share", "Value": "yes"}]})
assert other.get_object(Bucket=T, Key="kept")["Body"].read() == b"k"
# A version is judged by its own tags.
owner.put_bucket_versioning(Bucket=T, VersioningConfiguration={"Status": "Enabled"})
v1 = owner.put_object(Bucket=T, Key="doc", Body=b"v1", Tagging="share=yes")["VersionId"]
v2 = owner.put_object(Bucket=T, Key="doc", Body=b"v2", Tagging="share=no")["VersionId"]
assert other.get_object(Bucket=T, Key="doc", VersionId=v1)["Body"].read() == b"v1"
assert refusal(lambda: other.get_object(Bucket=T, Key="doc", VersionId=v2)) == (403, "AccessDenied")
assert refusal(lambda: other.get_object(Bucket=T, Key="doc")) == (403, "AccessDenied")
print("policies: checks passed")

# ---------------------------------------------------------------- ACLs and PublicAccessBlock
A = "acl-bucket"
owner.create_bucket(Bucket=A, ACL="public-read")
owner.put_object(Bucket=A, Key="obj", Body=b"acl")


def grants(resp):
    return sorted((g["Grantee"].get("URI") or g["Grantee"].get("ID"), g["Permission"]) for g in resp["Grants"])


ALL = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTH = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"
acl = owner.get_bucket_acl(Bucket=A)
assert acl["Owner"]["ID"] == owner_key, acl
assert grants(acl) == sorted([(owner_key, "FULL_CONTROL"), (ALL, "READ")]), acl
assert owner.get_bucket_policy_status(Bucket=A)["PolicyStatus"]["IsPublic"] is True
# public-read on a bucket lists its objects to anyone; it reads none.
assert [o["Key"] for o in anon.list_objects_v2(Bucket=A)["Contents"]] == ["obj"]
assert refusal(lambda: anon.get_object(Bucket=A, Key="obj")) == (403, "AccessDenied")
assert refusal(lambda: anon.put_object(Bucket=A, Key="new", Body=b"x")) == (403, "AccessDenied")
assert refusal(lambda: anon.get_bucket_acl(Bucket=A)) == (403, "AccessDenied")
assert refusal(lambda: other.put_bucket_acl(Bucket=A, ACL="private")) == (403, "AccessDenied")
# public-read-write also writes and deletes.
owner.put_bucket_acl(Bucket=A, ACL="public-read-write")
assert grants(owner.get_bucket_acl(Bucket=A)) == sorted(
    [(owner_key, "FULL_CONTROL"), (ALL, "READ"), (ALL, "WRITE")])
anon.put_object(Bucket=A, Key="dropped", Body=b"from anyone")
assert owner.get_object(Bucket=A, Key="dropped")["Body"].read() == b"from anyone"
anon.delete_object(Bucket=A, Key="dropped")
assert refusal(lambda: anon.put_bucket_policy(Bucket=A, Policy="{}")) == (403, "AccessDenied")
# authenticated-read: any signed key lists, anonymous callers do not.
owner.put_bucket_acl(Bucket=A, ACL="authenticated-read")
assert grants(owner.get_bucket_acl(Bucket=A)) == sorted([(owner_key, "FULL_CONTROL"), (AUTH, "READ")])
assert [o["Key"] for o in other.list_objects_v2(Bucket=A)["Contents"]] == ["obj"]
assert refusal(lambda: anon.list_objects_v2(Bucket=A)) == (403, "AccessDenied")
# A body that amounts to a canned ACL reads back as one (named grantees:
# tests/s3_acl.py).
owner.put_bucket_acl(Bucket=A, AccessControlPolicy={
    "Owner": {"ID": owner_key},
    "Grants": [{"Grantee": {"Type": "CanonicalUser", "ID": owner_key}, "Permission": "FULL_CONTROL"},
               {"Grantee": {"Type": "Group", "URI": ALL}, "Permission": "READ"}]})
assert grants(owner.get_bucket_acl(Bucket=A)) == sorted([(owner_key, "FULL_CONTROL"), (ALL, "READ")])
# private again.
owner.put_bucket_acl(Bucket=A, ACL="private")
assert grants(owner.get_bucket_acl(Bucket=A)) == [(owner_key, "FULL_CONTROL")]
assert refusal(lambda: anon.list_objects_v2(Bucket=A)) == (403, "AccessDenied")
assert refusal(lambda: other.list_objects_v2(Bucket=A)) == (403, "AccessDenied")
assert owner.get_bucket_policy_status(Bucket=A)["PolicyStatus"]["IsPublic"] is False

# Object ACLs: objects are private unless their own ACL says otherwise
# (public and named ones: tests/s3_acl.py); the bucket owner owns them.
owner.put_object(Bucket=A, Key="private", Body=b"p", ACL="private")
owner.put_object(Bucket=A, Key="bofc", Body=b"p", ACL="bucket-owner-full-control")
assert grants(owner.get_object_acl(Bucket=A, Key="bofc")) == [(owner_key, "FULL_CONTROL")]
oacl = owner.get_object_acl(Bucket=A, Key="obj")
assert grants(oacl) == [(owner_key, "FULL_CONTROL")], oacl
owner.put_object_acl(Bucket=A, Key="obj", ACL="private")
assert refusal(lambda: owner.get_object_acl(Bucket=A, Key="missing")) == (404, "NoSuchKey")
assert refusal(lambda: anon.get_object_acl(Bucket=A, Key="obj")) == (403, "AccessDenied")

# PublicAccessBlock: refuses public ACLs and policies, or makes them void.
GET_PAB = lambda: owner.get_public_access_block(Bucket=A)
assert refusal(GET_PAB) == (404, "NoSuchPublicAccessBlockConfiguration")
owner.put_public_access_block(Bucket=A, PublicAccessBlockConfiguration={"BlockPublicAcls": True})
assert GET_PAB()["PublicAccessBlockConfiguration"] == {
    "BlockPublicAcls": True, "IgnorePublicAcls": False, "BlockPublicPolicy": False,
    "RestrictPublicBuckets": False}
assert refusal(lambda: owner.put_bucket_acl(Bucket=A, ACL="public-read")) == (403, "AccessDenied")
owner.put_bucket_acl(Bucket=A, ACL="private")
assert refusal(lambda: other.put_public_access_block(
    Bucket=A, PublicAccessBlockConfiguration={"BlockPublicAcls": False})) == (403, "AccessDenied")
# IgnorePublicAcls: an ACL set before grants nothing while it holds.
owner.delete_public_access_block(Bucket=A)
owner.put_bucket_acl(Bucket=A, ACL="public-read")
assert anon.list_objects_v2(Bucket=A)["KeyCount"] >= 1
owner.put_public_access_block(Bucket=A, PublicAccessBlockConfiguration={"IgnorePublicAcls": True})
assert refusal(lambda: anon.list_objects_v2(Bucket=A)) == (403, "AccessDenied")
# BlockPublicPolicy: a public policy is refused, a pinned one is not.
public_policy = json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                                           "Resource": f"arn:aws:s3:::{A}/*"}]})
pinned_policy = json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                                           "Resource": f"arn:aws:s3:::{A}/*",
                                           "Condition": {"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}}}]})
owner.put_public_access_block(Bucket=A, PublicAccessBlockConfiguration={"BlockPublicPolicy": True})
assert refusal(lambda: owner.put_bucket_policy(Bucket=A, Policy=public_policy)) == (403, "AccessDenied")
owner.put_bucket_policy(Bucket=A, Policy=pinned_policy)
assert anon.get_object(Bucket=A, Key="obj")["Body"].read() == b"acl"
# RestrictPublicBuckets: a public policy put before grants nothing to
# callers outside the bucket's keys while it holds.
owner.delete_public_access_block(Bucket=A)
owner.put_bucket_policy(Bucket=A, Policy=public_policy)
assert anon.get_object(Bucket=A, Key="obj")["Body"].read() == b"acl"
owner.put_public_access_block(Bucket=A, PublicAccessBlockConfiguration={"RestrictPublicBuckets": True})
assert refusal(lambda: anon.get_object(Bucket=A, Key="obj")) == (403, "AccessDenied")
assert refusal(lambda: other.get_object(Bucket=A, Key="obj")) == (403, "AccessDenied")
assert owner.get_object(Bucket=A, Key="obj")["Body"].read() == b"acl"
resp = owner.delete_public_access_block(Bucket=A)
assert resp["ResponseMetadata"]["HTTPStatusCode"] == 204, resp
assert refusal(GET_PAB) == (404, "NoSuchPublicAccessBlockConfiguration")
assert anon.get_object(Bucket=A, Key="obj")["Body"].read() == b"acl"
# A bucket's settings go with it.
owner.delete_bucket_policy(Bucket=A)
for k in ["obj", "private", "bofc"]:
    owner.delete_object(Bucket=A, Key=k)
owner.delete_bucket(Bucket=A)
owner.create_bucket(Bucket=A)
assert grants(owner.get_bucket_acl(Bucket=A)) == [(owner_key, "FULL_CONTROL")]
assert refusal(lambda: owner.get_bucket_policy(Bucket=A)) == (404, "NoSuchBucketPolicy")
assert refusal(GET_PAB) == (404, "NoSuchPublicAccessBlockConfiguration")
print("acls: checks passed")

print("access: all checks passed")
