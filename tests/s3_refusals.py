"""What the boto3 scripts in tests/ share: the S3 error a call raises, and
a comparison that says what differed. Imported by s3_lock.py,
s3_lifecycle.py and s3_sse.py (python puts a script's own directory on
its path)."""

import sys

from botocore.exceptions import ClientError


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
