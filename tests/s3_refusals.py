"""What the boto3 scripts in tests/ share: a client signed by a key or
unsigned, the S3 error a call raises, and a comparison that says what
differed. Imported by s3_lock.py, s3_lifecycle.py, s3_sse.py, s3_access.py
and s3_acl.py (python puts a script's own directory on its path)."""

import sys

import boto3
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError


def client(endpoint, key=None, secret=None):
    """A boto3 S3 client of `endpoint`, signing with SigV4 as `key`, or
    unsigned (anonymous) without one."""
    if key is None:
        return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                            config=Config(signature_version=UNSIGNED))
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key,
                        aws_secret_access_key=secret, region_name="us-east-1",
                        config=Config(signature_version="s3v4"))


def refusal(fn):
    """(status, code) of the error `fn` raises."""
    try:
        fn()
    except ClientError as e:
        meta = e.response["ResponseMetadata"]
        print("refusal:", meta["HTTPStatusCode"], e.response["Error"], file=sys.stderr)
        return meta["HTTPStatusCode"], e.response["Error"].get("Code")
    raise AssertionError("expected an error")


def check(got, want, what):
    assert got == want, f"{what}: got {got!r}, want {want!r}"
