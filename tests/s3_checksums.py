"""Multipart checksums through boto3 against the Tessera gateway: run by
tests/s3_checksums.rs as `python3 tests/s3_checksums.py ENDPOINT
ACCESS_KEY SECRET_KEY`. Every expected value is computed here, from the
bytes sent (CRC32C and CRC64NVME in pure Python: botocore needs awscrt
for them), so the gateway's CRC combination is checked against an
independent CRC of the whole object. Exits non-zero with a message on the
first difference from what S3 documents (User Guide, "Checking object
integrity"; API reference, CreateMultipartUpload, UploadPart,
CompleteMultipartUpload, GetObjectAttributes)."""

import base64
import hashlib
import io
import os
import sys
import zlib

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from s3_refusals import check, refusal

endpoint, key, secret = sys.argv[1:4]


def client(**config):
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key,
                        aws_secret_access_key=secret, region_name="us-east-1",
                        config=Config(**config))


# Recent boto3 adds a CRC32 to every upload unless told otherwise.
s3 = client()
bare = client(request_checksum_calculation="when_required",
              response_checksum_validation="when_required")


def crc_table(poly):
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


CRC32C, CRC64NVME = crc_table(0x82F63B78), crc_table(0x9A6C9329AC4BC9B5)


def crc(data, table, width):
    mask = (1 << width) - 1
    c = mask
    for b in data:
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return (c ^ mask).to_bytes(width // 8, "big")


def raw(alg, data):
    """The binary checksum of `data` in S3's algorithm `alg`."""
    if alg == "CRC32":
        return zlib.crc32(data).to_bytes(4, "big")
    if alg == "CRC32C":
        return crc(data, CRC32C, 32)
    if alg == "CRC64NVME":
        return crc(data, CRC64NVME, 64)
    return hashlib.new(alg.lower(), data).digest()


def b64(b):
    return base64.b64encode(b).decode()


SUMS = {}


def digest(alg, data):
    k = (alg, hashlib.md5(data).digest())
    if k not in SUMS:
        SUMS[k] = b64(raw(alg, data))
    return SUMS[k]


def composite(alg, parts):
    joined = b"".join(raw(alg, p) for p in parts)
    return f"{b64(raw(alg, joined))}-{len(parts)}"


B = "sums"
s3.create_bucket(Bucket=B)
P1, P2 = os.urandom(5 << 20), os.urandom(3000)
WHOLE = P1 + P2


def upload_parts(k, alg, parts, named=True, c=s3):
    """Starts an upload of `k` with `alg` and uploads `parts` with their
    checksums; the upload id and the completion's part list."""
    listed = []
    for n, data in enumerate(parts, 1):
        extra = {"Checksum" + alg: digest(alg, data)} if alg else {}
        r = c.upload_part(Bucket=B, Key=k, UploadId=UPLOAD, PartNumber=n, Body=data, **extra)
        if alg:
            check(r.get("Checksum" + alg), digest(alg, data), f"{k}: part {n}'s checksum")
        part = {"PartNumber": n, "ETag": r["ETag"]}
        if alg and named:
            part["Checksum" + alg] = digest(alg, data)
        listed.append(part)
    return listed


def create(k, alg=None, kind=None, c=s3):
    global UPLOAD
    args = {}
    if alg:
        args["ChecksumAlgorithm"] = alg
    if kind:
        args["ChecksumType"] = kind
    up = c.create_multipart_upload(Bucket=B, Key=k, **args)
    UPLOAD = up["UploadId"]
    return up


# --- Every algorithm with every type it allows ---
for alg, kind in [("CRC32", "COMPOSITE"), ("CRC32", "FULL_OBJECT"), ("CRC32C", "COMPOSITE"),
                  ("CRC32C", "FULL_OBJECT"), ("CRC64NVME", "FULL_OBJECT"),
                  ("SHA1", "COMPOSITE"), ("SHA256", "COMPOSITE")]:
    k = f"{alg}-{kind}"
    up = create(k, alg, kind)
    check((up.get("ChecksumAlgorithm"), up.get("ChecksumType")), (alg, kind), f"{k}: create")
    parts = upload_parts(k, alg, [P1, P2])
    listing = s3.list_parts(Bucket=B, Key=k, UploadId=UPLOAD)
    check((listing.get("ChecksumAlgorithm"), listing.get("ChecksumType")), (alg, kind),
          f"{k}: ListParts")
    check([p.get("Checksum" + alg) for p in listing["Parts"]],
          [digest(alg, P1), digest(alg, P2)], f"{k}: ListParts' checksums")
    uploads = s3.list_multipart_uploads(Bucket=B, Prefix=k)["Uploads"]
    check([(u.get("ChecksumAlgorithm"), u.get("ChecksumType")) for u in uploads], [(alg, kind)],
          f"{k}: ListMultipartUploads")
    want = digest(alg, WHOLE) if kind == "FULL_OBJECT" else composite(alg, [P1, P2])
    # A full-object checksum may be sent with the completion, and is checked.
    extra = {"Checksum" + alg: want, "ChecksumType": kind} if kind == "FULL_OBJECT" else {}
    done = s3.complete_multipart_upload(Bucket=B, Key=k, UploadId=UPLOAD,
                                        MultipartUpload={"Parts": parts}, **extra)
    check((done.get("Checksum" + alg), done.get("ChecksumType")), (want, kind),
          f"{k}: CompleteMultipartUpload")
    head = s3.head_object(Bucket=B, Key=k)
    check(head.get("Checksum" + alg), None, f"{k}: HEAD without checksum mode")
    head = s3.head_object(Bucket=B, Key=k, ChecksumMode="ENABLED")
    check((head.get("Checksum" + alg), head.get("ChecksumType")), (want, kind), f"{k}: HEAD")
    got = s3.get_object(Bucket=B, Key=k, ChecksumMode="ENABLED")
    check((got.get("Checksum" + alg), got.get("ChecksumType")), (want, kind), f"{k}: GET")
    check(got["Body"].read() == WHOLE, True, f"{k}: the bytes")
    attrs = s3.get_object_attributes(Bucket=B, Key=k,
                                     ObjectAttributes=["Checksum", "ObjectParts", "ObjectSize"])
    check(attrs["Checksum"].get("Checksum" + alg), want.split("-")[0],
          f"{k}: GetObjectAttributes' Checksum")
    check(attrs["Checksum"].get("ChecksumType"), kind, f"{k}: GetObjectAttributes' type")
    op = attrs["ObjectParts"]
    check(op["TotalPartsCount"], 2, f"{k}: TotalPartsCount")
    check([(p["PartNumber"], p["Size"], p.get("Checksum" + alg)) for p in op["Parts"]],
          [(1, len(P1), digest(alg, P1)), (2, len(P2), digest(alg, P2))],
          f"{k}: GetObjectAttributes' ObjectParts")
    print("ok:", k)

# --- Refusals ---
for alg, kind in [("CRC64NVME", "COMPOSITE"), ("SHA1", "FULL_OBJECT"),
                  ("SHA256", "FULL_OBJECT")]:
    check(refusal(lambda: s3.create_multipart_upload(Bucket=B, Key="x", ChecksumAlgorithm=alg,
                                                     ChecksumType=kind)),
          (400, "InvalidRequest"), f"{alg} with {kind}")
check(refusal(lambda: bare.create_multipart_upload(Bucket=B, Key="x", ChecksumType="COMPOSITE")),
      (400, "InvalidRequest"), "a checksum type without an algorithm")

# A wrong full-object checksum: BadDigest, nothing stored, the upload kept.
k = "wrong-whole"
create(k, "CRC32", "FULL_OBJECT")
parts = upload_parts(k, "CRC32", [P1, P2])
check(refusal(lambda: s3.complete_multipart_upload(
    Bucket=B, Key=k, UploadId=UPLOAD, MultipartUpload={"Parts": parts},
    ChecksumCRC32=digest("CRC32", b"other bytes"))), (400, "BadDigest"),
    "a wrong full-object checksum")
check(refusal(lambda: s3.head_object(Bucket=B, Key=k)), (404, "404"), "nothing stored")
check(refusal(lambda: s3.complete_multipart_upload(
    Bucket=B, Key=k, UploadId=UPLOAD, MultipartUpload={"Parts": parts},
    ChecksumType="COMPOSITE")), (400, "BadDigest"), "another checksum type")
check(refusal(lambda: s3.complete_multipart_upload(
    Bucket=B, Key=k, UploadId=UPLOAD, MultipartUpload={"Parts": parts},
    MpuObjectSize=len(WHOLE) + 1)), (400, "InvalidRequest"), "a wrong x-amz-mp-object-size")
check(refusal(lambda: s3.head_object(Bucket=B, Key=k)), (404, "404"), "still nothing stored")
done = s3.complete_multipart_upload(Bucket=B, Key=k, UploadId=UPLOAD,
                                    MultipartUpload={"Parts": parts}, MpuObjectSize=len(WHOLE),
                                    ChecksumCRC32=digest("CRC32", WHOLE))
check(done.get("ChecksumCRC32"), digest("CRC32", WHOLE), "the upload completes after a refusal")

# A composite upload's completion must name every part's checksum, and
# the right one.
k = "composite-parts"
create(k, "SHA256")
parts = upload_parts(k, "SHA256", [P1, P2], named=False)
check(refusal(lambda: s3.complete_multipart_upload(
    Bucket=B, Key=k, UploadId=UPLOAD, MultipartUpload={"Parts": parts})),
    (400, "InvalidRequest"), "a composite completion without part checksums")
wrong = [dict(parts[0], ChecksumSHA256=digest("SHA256", P2)),
         dict(parts[1], ChecksumSHA256=digest("SHA256", P2))]
check(refusal(lambda: s3.complete_multipart_upload(
    Bucket=B, Key=k, UploadId=UPLOAD, MultipartUpload={"Parts": wrong})),
    (400, "InvalidPart"), "a part's wrong checksum")
check(refusal(lambda: s3.head_object(Bucket=B, Key=k)), (404, "404"), "no composite object")
# A part must name the upload's algorithm.
check(refusal(lambda: s3.upload_part(Bucket=B, Key=k, UploadId=UPLOAD, PartNumber=3, Body=P2,
                                     ChecksumCRC32=digest("CRC32", P2))),
      (400, "InvalidRequest"), "a part in another algorithm")
check(refusal(lambda: bare.upload_part(Bucket=B, Key=k, UploadId=UPLOAD, PartNumber=3, Body=P2)),
      (400, "InvalidRequest"), "a part without a checksum")
check(refusal(lambda: s3.upload_part(Bucket=B, Key=k, UploadId=UPLOAD, PartNumber=3, Body=P2,
                                     ChecksumSHA256=digest("SHA256", P1))),
      (400, "BadDigest"), "a part whose checksum is wrong")
s3.abort_multipart_upload(Bucket=B, Key=k, UploadId=UPLOAD)
print("ok: refusals")

# --- An upload that names no checksum gets S3's default: a full-object
# CRC64NVME, whatever the parts were sent with ---
k = "default"
up = create(k, c=bare)
check(up.get("ChecksumAlgorithm"), None, "no algorithm named")
parts = upload_parts(k, None, [P1, P2], c=bare)
bare.complete_multipart_upload(Bucket=B, Key=k, UploadId=UPLOAD,
                               MultipartUpload={"Parts": parts})
head = bare.head_object(Bucket=B, Key=k, ChecksumMode="ENABLED")
check((head.get("ChecksumCRC64NVME"), head.get("ChecksumType")),
      (digest("CRC64NVME", WHOLE), "FULL_OBJECT"), "the default checksum")

# A copied part is hashed like an uploaded one.
k = "copied"
s3.put_object(Bucket=B, Key="source", Body=WHOLE)
create(k, "CRC32", "FULL_OBJECT")
first = upload_parts(k, "CRC32", [P1])
r = s3.upload_part_copy(Bucket=B, Key=k, UploadId=UPLOAD, PartNumber=2,
                        CopySource={"Bucket": B, "Key": "source"},
                        CopySourceRange=f"bytes={len(P1)}-{len(WHOLE) - 1}")
check(r["CopyPartResult"].get("ChecksumCRC32"), digest("CRC32", P2), "a copied part's CRC32")
parts = first + [{"PartNumber": 2, "ETag": r["CopyPartResult"]["ETag"],
                  "ChecksumCRC32": r["CopyPartResult"]["ChecksumCRC32"]}]
done = s3.complete_multipart_upload(Bucket=B, Key=k, UploadId=UPLOAD,
                                    MultipartUpload={"Parts": parts})
check(done.get("ChecksumCRC32"), digest("CRC32", WHOLE), "with a copied part")
# A copy of a composite object is one piece: it keeps no composite checksum.
s3.copy_object(Bucket=B, Key="copy", CopySource={"Bucket": B, "Key": "SHA256-COMPOSITE"})
head = s3.head_object(Bucket=B, Key="copy", ChecksumMode="ENABLED")
check(head.get("ChecksumSHA256"), None, "a copy's composite checksum")
print("ok: default and copied")

# --- boto3's own multipart upload, with the checksums it adds by default ---
data = os.urandom(12 << 20)
chunk = 5 << 20
s3.upload_fileobj(io.BytesIO(data), B, "managed",
                  Config=TransferConfig(multipart_threshold=chunk, multipart_chunksize=chunk))
head = s3.head_object(Bucket=B, Key="managed", ChecksumMode="ENABLED")
kind = head.get("ChecksumType")
algs = [a for a in ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"] if "Checksum" + a in head]
check(len(algs), 1, f"one checksum on boto3's upload: {head}")
alg = algs[0]
pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)]
want = digest(alg, data) if kind == "FULL_OBJECT" else composite(alg, pieces)
check(head["Checksum" + alg], want, f"boto3's upload ({alg} {kind})")
out = io.BytesIO()
s3.download_fileobj(B, "managed", out)
check(out.getvalue() == data, True, "boto3's download")
print("ok: boto3 managed upload,", alg, kind)

print("checksums: all checks passed")
