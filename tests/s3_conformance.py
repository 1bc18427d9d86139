"""What Ceph's S3 conformance suite (s3-tests) found the gateway answering
unlike S3, each checked as the S3 API reference states it: run by
tests/s3_conformance.rs as
`python3 tests/s3_conformance.py ENDPOINT KEY SECRET OTHER_KEY OTHER_SECRET`.
Exits non-zero with a message on the first difference."""

import base64
import datetime
import email.utils
import hashlib
import hmac
import json
import sys
import urllib.error
import urllib.parse
import urllib.request

import boto3
from botocore.config import Config

from s3_refusals import check, refusal

endpoint, key, secret, other_key, other_secret = sys.argv[1:6]


def client(k, s):
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=k,
                        aws_secret_access_key=s, region_name="us-east-1", config=Config())


s3 = client(key, secret)
other = client(other_key, other_secret)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def http(method, url, body=None, headers=None):
    """(status, headers, body) of one plain HTTP request, redirects not followed."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.build_opener(NoRedirect).open(req) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def error_code(body):
    text = body.decode()
    return text.split("<Code>")[1].split("</Code>")[0] if "<Code>" in text else None


# --- CreateBucket on a name that exists (CreateBucket, "Errors") ---
B = "conformance"
s3.create_bucket(Bucket=B)
s3.put_object(Bucket=B, Key="kept", Body=b"kept")
# Its owner, with no region configured (US East's legacy answer): 200,
# and the bucket keeps its objects.
s3.create_bucket(Bucket=B)
check([o["Key"] for o in s3.list_objects_v2(Bucket=B)["Contents"]], ["kept"],
      "objects after the owner re-created the bucket")
check(refusal(lambda: other.create_bucket(Bucket=B)), (409, "BucketAlreadyExists"),
      "another key creating an existing bucket")

# --- ListObjects (version 1) ---
for k in ["a/1", "a/2", "b"]:
    s3.put_object(Bucket=B, Key=k, Body=b"x")
listed = s3.list_objects(Bucket=B)
check(listed.get("Marker"), "", "Marker of a listing without one")
owner = s3.get_object_acl(Bucket=B, Key="b")["Owner"]
check({o["Key"]: o.get("Owner") for o in listed["Contents"]},
      {k: owner for k in ["a/1", "a/2", "b", "kept"]}, "Owner of each object in ListObjects")
empty = s3.list_objects(Bucket=B, Delimiter="")
check("Delimiter" in empty, False, "an empty delimiter echoed")
check(len(empty["Contents"]), 4, "objects listed with an empty delimiter")
check("Delimiter" in s3.list_objects_v2(Bucket=B, Delimiter=""), False,
      "an empty delimiter echoed by ListObjectsV2")
# boto3 asks for encoding-type=url and decodes what S3 encodes; version 1
# does not encode the Prefix.
check(s3.list_objects(Bucket=B, Prefix="\n").get("Prefix"), "\n", "Prefix of a V1 listing")

# --- 304 Not Modified carries the ETag and Last-Modified ---
put = s3.put_object(Bucket=B, Key="cached", Body=b"cached")
url = s3.generate_presigned_url("get_object", Params={"Bucket": B, "Key": "cached"})
status, headers, _ = http("GET", url, headers={"If-None-Match": put["ETag"]})
check(status, 304, "GET with a matching If-None-Match")
check(headers.get("ETag"), put["ETag"], "ETag of a 304")
check(headers.get("Last-Modified") is not None, True, "Last-Modified on a 304")

# --- GetObjectAttributes answers the ETag without quotes ---
attrs = s3.get_object_attributes(Bucket=B, Key="cached", ObjectAttributes=["ETag"])
check(attrs["ETag"], put["ETag"].strip('"'), "GetObjectAttributes' ETag")

# --- Content-Encoding: aws-chunked frames the request, the object keeps the rest ---
for sent, kept in [("gzip", "gzip"), ("deflate, gzip", "deflate, gzip"),
                   ("gzip, aws-chunked", "gzip"), ("aws-chunked, gzip", "gzip")]:
    s3.put_object(Bucket=B, Key="encoded", Body=b"x", ContentEncoding=sent)
    check(s3.head_object(Bucket=B, Key="encoded").get("ContentEncoding"), kept,
          f"Content-Encoding stored for {sent!r}")

# --- POST Object (browser form uploads) ---


def post(bucket, fields, filename="photo.jpg", content=b"form body", policy=None):
    """A form upload signed with signature version 2; (status, headers, body)."""
    if policy is None:
        policy = {"expiration": (datetime.datetime.now(datetime.timezone.utc)
                                 + datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "conditions": [{"bucket": bucket}, ["starts-with", "$key", "up/"],
                                 ["content-length-range", 0, 1024]]}
    doc = base64.b64encode(json.dumps(policy).encode())
    sig = base64.b64encode(hmac.new(secret.encode(), doc, hashlib.sha1).digest())
    form = dict(fields, AWSAccessKeyId=key, policy=doc.decode(), signature=sig.decode())
    boundary = "tessera-form-boundary"
    body = b""
    for name, value in form.items():
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"
                 f"{value}\r\n").encode()
    body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
             f"filename=\"{filename}\"\r\nContent-Type: text/plain\r\n\r\n").encode()
    body += content + f"\r\n--{boundary}--\r\n".encode()
    return http("POST", f"{endpoint}/{bucket}", body,
                {"Content-Type": f"multipart/form-data; boundary={boundary}"})


# `${filename}` in the key is the uploaded file's name.
status, _, body = post(B, {"key": "up/${filename}"})
check(status, 204, f"POST with ${{filename}}: {body!r}")
check(s3.get_object(Bucket=B, Key="up/photo.jpg")["Body"].read(), b"form body",
      "object stored under the file's name")
# A form outside its policy's conditions is refused with 403 AccessDenied.
status, _, body = post(B, {"key": "elsewhere/x"})
check((status, error_code(body)), (403, "AccessDenied"), "POST outside the policy's key prefix")
status, _, body = post(B, {"key": "up/x", "bucket": "another-bucket"})
check((status, error_code(body)), (403, "AccessDenied"), "POST naming another bucket in the form")
# A policy without a signature is refused as a malformed form.
boundary = "tessera-form-boundary"
unsigned = "".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{n}\"\r\n\r\n{v}\r\n"
                   for n, v in [("key", "up/u"), ("policy", "e30=")])
unsigned += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"u\"\r\n\r\n"
             f"u\r\n--{boundary}--\r\n")
status, _, body = http("POST", f"{endpoint}/{B}", unsigned.encode(),
                       {"Content-Type": f"multipart/form-data; boundary={boundary}"})
check((status, error_code(body)), (400, "InvalidArgument"), "POST with a policy and no signature")
# The policy's expiration is ISO 8601 UTC.
later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
status, _, _ = post(B, {"key": "up/y"}, policy={
    "expiration": str(later), "conditions": [{"bucket": B}, ["starts-with", "$key", "up/"]]})
check(status, 400, "POST with an expiration not in ISO 8601 form")
# success_action_redirect appends the quoted ETag.
target = "http://example.com/done"
status, headers, _ = post(B, {"key": "up/z", "success_action_redirect": target}, policy={
    "expiration": later.strftime("%Y-%m-%dT%H:%M:%SZ"),
    "conditions": [{"bucket": B}, ["starts-with", "$key", "up/"],
                   ["eq", "$success_action_redirect", target]]})
check(status, 303, "POST with success_action_redirect")
etag = s3.head_object(Bucket=B, Key="up/z")["ETag"]
check(headers.get("Location"),
      f"{target}?bucket={B}&key=up%2Fz&etag={urllib.parse.quote(etag)}", "redirect Location")

# --- Signature version 2: the request time is checked ---


def v2_put(date_header, date):
    """PUT signed with signature version 2 whose time is `date` in `date_header`."""
    path = f"/{B}/v2-object"
    amz = f"x-amz-date:{date}\n" if date_header == "x-amz-date" else ""
    shown = date if date_header == "Date" else ""
    to_sign = f"PUT\n\ntext/plain\n{shown}\n{amz}{path}"
    sig = base64.b64encode(hmac.new(secret.encode(), to_sign.encode(), hashlib.sha1).digest())
    return http("PUT", endpoint + path, b"v2", {
        "Content-Type": "text/plain", date_header: date,
        "Authorization": f"AWS {key}:{sig.decode()}"})


now = email.utils.formatdate(usegmt=True)
status, _, body = v2_put("Date", now)
check(status, 200, f"V2 PUT signed now: {body!r}")
old = "Tue, 07 Jul 2010 21:53:04 GMT"
for header in ["Date", "x-amz-date"]:
    status, _, body = v2_put(header, old)
    check((status, error_code(body)), (403, "RequestTimeTooSkewed"), f"V2 PUT with {header} in 2010")
    status, _, body = v2_put(header, "Bad Date")
    check((status, error_code(body)), (403, "AccessDenied"), f"V2 PUT with {header} not a date")

print("conformance: all checks passed")
