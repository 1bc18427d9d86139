"""ACLs with named grantees and object ACLs through boto3 against the
Tessera gateway: run by tests/s3_acl.rs as `python3 tests/s3_acl.py
ENDPOINT OWNER_KEY OWNER_SECRET OTHER_KEY OTHER_SECRET`. OWNER's key
creates the buckets (and so owns them and their objects); OTHER has no
grant on them (`tessera bucket allow`): what it may do comes from ACLs
only. Exits non-zero with a message on the first difference from what S3
documents (S3 User Guide, "Access control list (ACL) overview"; API
reference, PutBucketAcl, PutObjectAcl, GetObjectAcl, PutPublicAccessBlock)."""

import sys

from s3_refusals import check, client, refusal

endpoint, owner_key, owner_secret, other_key, other_secret = sys.argv[1:6]
owner = client(endpoint, owner_key, owner_secret)
other = client(endpoint, other_key, other_secret)
anon = client(endpoint)

ALL = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTH = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"
DENIED = (403, "AccessDenied")


def grants(resp):
    """The grants of a Get*Acl answer, in order, as (ID or URI, permission)."""
    return [(g["Grantee"].get("ID") or g["Grantee"].get("URI"), g["Permission"]) for g in resp["Grants"]]


def user(key, permission):
    return {"Grantee": {"Type": "CanonicalUser", "ID": key}, "Permission": permission}


def group(uri, permission):
    return {"Grantee": {"Type": "Group", "URI": uri}, "Permission": permission}


def body(key):
    return lambda c: c.get_object(Bucket=B, Key=key)["Body"].read()


# ------------------------------------------------ grants by id, on objects
B = "acl-grants"
owner.create_bucket(Bucket=B)
owner.put_object(Bucket=B, Key="doc", Body=b"doc")
check(refusal(lambda: other.get_object(Bucket=B, Key="doc")), DENIED, "other before any grant")
owner.put_object_acl(Bucket=B, Key="doc", GrantRead=f'id="{other_key}"')
check(grants(owner.get_object_acl(Bucket=B, Key="doc")), [(other_key, "READ")], "header grant read back")
check(body("doc")(other), b"doc", "other reads with an object READ grant")
check(other.head_object(Bucket=B, Key="doc")["ContentLength"], 3, "other heads it")
# READ on an object reads it; it neither lists the bucket nor reads the ACL
# or other objects.
check(refusal(lambda: other.list_objects_v2(Bucket=B)), DENIED, "object grant lists nothing")
check(refusal(lambda: other.get_object_acl(Bucket=B, Key="doc")), DENIED, "READ is not READ_ACP")
owner.put_object(Bucket=B, Key="else", Body=b"else")
check(refusal(lambda: other.get_object(Bucket=B, Key="else")), DENIED, "another object")
check(refusal(lambda: anon.get_object(Bucket=B, Key="doc")), DENIED, "anonymous, grant to a key")
# The owner key keeps its rights whatever the ACL says.
check(body("doc")(owner), b"doc", "owner still reads")
# The grant removed: refused again.
owner.put_object_acl(Bucket=B, Key="doc", ACL="private")
check(grants(owner.get_object_acl(Bucket=B, Key="doc")), [(owner_key, "FULL_CONTROL")], "private again")
check(refusal(lambda: other.get_object(Bucket=B, Key="doc")), DENIED, "other after the grant went")
# READ_ACP and WRITE_ACP: other reads the ACL and then changes it.
owner.put_object_acl(Bucket=B, Key="doc", AccessControlPolicy={
    "Owner": {"ID": owner_key},
    "Grants": [user(owner_key, "FULL_CONTROL"), user(other_key, "READ_ACP"), user(other_key, "WRITE_ACP")]})
acl = other.get_object_acl(Bucket=B, Key="doc")
check(acl["Owner"]["ID"], owner_key, "object owner is the bucket's owner key")
check(grants(acl), [(owner_key, "FULL_CONTROL"), (other_key, "READ_ACP"), (other_key, "WRITE_ACP")],
      "body grants read back in order")
names = {g["Grantee"].get("ID"): g["Grantee"].get("DisplayName") for g in acl["Grants"]}
check(names, {owner_key: "owner", other_key: "other"}, "display names are the keys' names")
check(refusal(lambda: other.get_object(Bucket=B, Key="doc")), DENIED, "ACP grants read nothing")
other.put_object_acl(Bucket=B, Key="doc", GrantFullControl=f"id={other_key}")
check(body("doc")(other), b"doc", "FULL_CONTROL reads")
check(refusal(lambda: other.delete_object(Bucket=B, Key="doc")), DENIED, "an object ACL never deletes")
owner.put_object_acl(Bucket=B, Key="doc", ACL="private")
print("object grants by id: checks passed")

# ------------------------------------------------ grants by id, on buckets
check(refusal(lambda: other.get_bucket_acl(Bucket=B)), DENIED, "other reads no bucket ACL")
owner.put_bucket_acl(Bucket=B, GrantRead=f"id={other_key}", GrantFullControl=f"id={owner_key}")
check(grants(owner.get_bucket_acl(Bucket=B)), [(other_key, "READ"), (owner_key, "FULL_CONTROL")],
      "bucket header grants read back")
check(sorted(o["Key"] for o in other.list_objects_v2(Bucket=B)["Contents"]), ["doc", "else"],
      "bucket READ lists")
check(refusal(lambda: other.get_object(Bucket=B, Key="doc")), DENIED, "bucket READ reads no object")
check(refusal(lambda: other.put_object(Bucket=B, Key="x", Body=b"x")), DENIED, "READ is not WRITE")
owner.put_bucket_acl(Bucket=B, AccessControlPolicy={
    "Owner": {"ID": owner_key},
    "Grants": [user(owner_key, "FULL_CONTROL"), user(other_key, "WRITE"), user(other_key, "READ_ACP")]})
other.put_object(Bucket=B, Key="from-other", Body=b"o")
check(body("from-other")(owner), b"o", "bucket WRITE writes")
other.delete_object(Bucket=B, Key="from-other")
check(refusal(lambda: other.list_objects_v2(Bucket=B)), DENIED, "WRITE does not list")
check(grants(other.get_bucket_acl(Bucket=B))[1], (other_key, "WRITE"), "READ_ACP reads the bucket ACL")
check(refusal(lambda: other.put_bucket_acl(Bucket=B, ACL="private")), DENIED, "READ_ACP is not WRITE_ACP")
check(refusal(lambda: other.put_bucket_policy(Bucket=B, Policy="{}")), DENIED, "ACLs give no policy rights")
owner.put_bucket_acl(Bucket=B, ACL="private")
check(refusal(lambda: other.put_object(Bucket=B, Key="x", Body=b"x")), DENIED, "bucket grant removed")
check(refusal(lambda: other.get_bucket_acl(Bucket=B)), DENIED, "bucket ACP grant removed")
print("bucket grants by id: checks passed")

# ------------------------------------------------ grants by uri
owner.put_object(Bucket=B, Key="signed-only", Body=b"s", GrantRead=f'uri="{AUTH}"')
check(body("signed-only")(other), b"s", "AuthenticatedUsers READ: any signed key")
check(refusal(lambda: anon.get_object(Bucket=B, Key="signed-only")), DENIED, "not anonymous callers")
owner.put_object(Bucket=B, Key="everyone", Body=b"e", GrantRead=f"uri={ALL}")
check(body("everyone")(anon), b"e", "AllUsers READ: anonymous too")
check(grants(owner.get_object_acl(Bucket=B, Key="everyone")), [(ALL, "READ")], "uri grant read back")
owner.put_bucket_acl(Bucket=B, GrantRead=f'uri="{AUTH}"')
check(len(other.list_objects_v2(Bucket=B)["Contents"]), 4, "AuthenticatedUsers lists the bucket")
check(refusal(lambda: anon.list_objects_v2(Bucket=B)), DENIED, "anonymous does not")
owner.put_bucket_acl(Bucket=B, ACL="private")
print("grants by uri: checks passed")

# ------------------------------------------------ public object ACLs
owner.put_object(Bucket=B, Key="pub", Body=b"pub", ACL="public-read")
owner.put_object(Bucket=B, Key="priv", Body=b"priv")
check(body("pub")(anon), b"pub", "public-read object: anonymous GET")
check(anon.head_object(Bucket=B, Key="pub")["ContentLength"], 3, "and HEAD")
check(grants(owner.get_object_acl(Bucket=B, Key="pub")), [(owner_key, "FULL_CONTROL"), (ALL, "READ")],
      "public-read read back")
check(refusal(lambda: anon.get_object(Bucket=B, Key="priv")), DENIED, "private object")
check(refusal(lambda: anon.put_object(Bucket=B, Key="pub", Body=b"x")), DENIED, "object READ writes nothing")
check(refusal(lambda: anon.get_object_acl(Bucket=B, Key="pub")), DENIED, "READ is not READ_ACP")
check(refusal(lambda: anon.list_objects_v2(Bucket=B)), DENIED, "an object ACL lists nothing")
# A copy starts private unless it asks; a copy's source may be read by ACL.
owner.copy_object(Bucket=B, Key="pub-copy", CopySource={"Bucket": B, "Key": "pub"})
check(refusal(lambda: anon.get_object(Bucket=B, Key="pub-copy")), DENIED, "a copy does not take the ACL")
owner.copy_object(Bucket=B, Key="pub-copy2", CopySource={"Bucket": B, "Key": "priv"}, ACL="public-read")
check(body("pub-copy2")(anon), b"priv", "a copy with its own ACL")
# Multipart: the ACL of CreateMultipartUpload is the object's.
up = owner.create_multipart_upload(Bucket=B, Key="mp", ACL="public-read")
part = owner.upload_part(Bucket=B, Key="mp", UploadId=up["UploadId"], PartNumber=1, Body=b"m" * 10)
owner.complete_multipart_upload(Bucket=B, Key="mp", UploadId=up["UploadId"],
                                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
check(body("mp")(anon), b"m" * 10, "multipart public-read")
# authenticated-read.
owner.put_object(Bucket=B, Key="auth", Body=b"a", ACL="authenticated-read")
check(body("auth")(other), b"a", "authenticated-read: signed")
check(refusal(lambda: anon.get_object(Bucket=B, Key="auth")), DENIED, "authenticated-read: not anonymous")
# An overwrite starts with its own ACL.
owner.put_object(Bucket=B, Key="pub", Body=b"pub2")
check(refusal(lambda: anon.get_object(Bucket=B, Key="pub")), DENIED, "overwritten without an ACL")
owner.put_object_acl(Bucket=B, Key="pub", ACL="public-read")
check(body("pub")(anon), b"pub2", "PutObjectAcl public-read")
# IgnorePublicAcls voids public grants (not named ones) while it holds.
owner.put_object_acl(Bucket=B, Key="doc", GrantRead=f"id={other_key},uri={ALL}")
owner.put_public_access_block(Bucket=B, PublicAccessBlockConfiguration={"IgnorePublicAcls": True})
check(refusal(lambda: anon.get_object(Bucket=B, Key="pub")), DENIED, "IgnorePublicAcls")
check(refusal(lambda: anon.get_object(Bucket=B, Key="doc")), DENIED, "IgnorePublicAcls, mixed ACL")
check(body("doc")(other), b"doc", "a named grant still counts")
owner.delete_public_access_block(Bucket=B)
check(body("pub")(anon), b"pub2", "public again without the block")
print("public object ACLs: checks passed")

# ------------------------------------------------ versions keep their ACLs
V = "acl-versions"
owner.create_bucket(Bucket=V)
owner.put_bucket_versioning(Bucket=V, VersioningConfiguration={"Status": "Enabled"})
v1 = owner.put_object(Bucket=V, Key="k", Body=b"one", ACL="public-read")["VersionId"]
v2 = owner.put_object(Bucket=V, Key="k", Body=b"two")["VersionId"]
check(refusal(lambda: anon.get_object(Bucket=V, Key="k")), DENIED, "the new version is private")
check(anon.get_object(Bucket=V, Key="k", VersionId=v1)["Body"].read(), b"one", "the old one stays public")
check(grants(owner.get_object_acl(Bucket=V, Key="k", VersionId=v1)), [(owner_key, "FULL_CONTROL"), (ALL, "READ")],
      "GetObjectAcl by version")
owner.put_object_acl(Bucket=V, Key="k", VersionId=v2, GrantRead=f"id={other_key}")
check(other.get_object(Bucket=V, Key="k")["Body"].read(), b"two", "PutObjectAcl by version")
check(grants(owner.get_object_acl(Bucket=V, Key="k", VersionId=v1)), [(owner_key, "FULL_CONTROL"), (ALL, "READ")],
      "only that version's ACL changed")
owner.delete_object(Bucket=V, Key="k", VersionId=v1)
check(refusal(lambda: anon.get_object(Bucket=V, Key="k", VersionId=v1))[0], 403, "deleted with its version")
check(refusal(lambda: owner.get_object_acl(Bucket=V, Key="k", VersionId=v1)), (404, "NoSuchVersion"),
      "no ACL of a deleted version")
marker = owner.delete_object(Bucket=V, Key="k")["VersionId"]
check(refusal(lambda: owner.put_object_acl(Bucket=V, Key="k", VersionId=marker, ACL="private"))[0], 405,
      "a delete marker has no ACL")
print("versions: checks passed")

# ------------------------------------------------ BlockPublicAcls
owner.put_public_access_block(Bucket=B, PublicAccessBlockConfiguration={"BlockPublicAcls": True})
check(refusal(lambda: owner.put_object(Bucket=B, Key="blocked", Body=b"b", ACL="public-read")), DENIED,
      "BlockPublicAcls refuses a public-read PUT")
check(refusal(lambda: owner.head_object(Bucket=B, Key="blocked")), (404, "404"), "nothing stored")
check(refusal(lambda: owner.put_object(Bucket=B, Key="blocked", Body=b"b", GrantRead=f"uri={AUTH}")), DENIED,
      "and a public grant header")
check(refusal(lambda: owner.create_multipart_upload(Bucket=B, Key="blocked", ACL="public-read-write")), DENIED,
      "and multipart")
check(refusal(lambda: owner.copy_object(Bucket=B, Key="blocked", CopySource={"Bucket": B, "Key": "priv"},
                                        ACL="authenticated-read")), DENIED, "and a copy")
check(refusal(lambda: owner.put_object_acl(Bucket=B, Key="priv", ACL="public-read")), DENIED, "and PutObjectAcl")
check(refusal(lambda: owner.put_bucket_acl(Bucket=B, AccessControlPolicy={
    "Owner": {"ID": owner_key}, "Grants": [group(ALL, "READ")]})), DENIED, "and PutBucketAcl")
owner.put_object(Bucket=B, Key="named", Body=b"n", GrantRead=f"id={other_key}")
check(body("named")(other), b"n", "named grants are not public")
owner.delete_public_access_block(Bucket=B)
print("BlockPublicAcls: checks passed")

# ------------------------------------------------ bad grantees, S3's errors
BAD_ID = "NOSUCHKEY0000000000000"
for what, call, want in [
    ("an id that is no key", lambda: owner.put_object_acl(Bucket=B, Key="priv", GrantRead=f"id={BAD_ID}"),
     (400, "InvalidArgument")),
    ("an id that is no key, in a body", lambda: owner.put_bucket_acl(Bucket=B, AccessControlPolicy={
        "Owner": {"ID": owner_key}, "Grants": [user(BAD_ID, "READ")]}), (400, "InvalidArgument")),
    ("an id that is no key, on PutObject",
     lambda: owner.put_object(Bucket=B, Key="bad", Body=b"b", GrantFullControl=f"id={BAD_ID}"),
     (400, "InvalidArgument")),
    ("an e-mail address", lambda: owner.put_bucket_acl(Bucket=B, GrantRead='emailAddress="a@example.com"'),
     (400, "UnresolvableGrantByEmailAddress")),
    ("an e-mail address in a body", lambda: owner.put_object_acl(Bucket=B, Key="priv", AccessControlPolicy={
        "Owner": {"ID": owner_key},
        "Grants": [{"Grantee": {"Type": "AmazonCustomerByEmail", "EmailAddress": "a@example.com"},
                    "Permission": "READ"}]}), (400, "UnresolvableGrantByEmailAddress")),
    ("an unknown group", lambda: owner.put_bucket_acl(
        Bucket=B, GrantRead='uri="http://acs.amazonaws.com/groups/global/Nobody"'), (400, "InvalidArgument")),
    ("an unknown permission", lambda: owner.put_bucket_acl(Bucket=B, AccessControlPolicy={
        "Owner": {"ID": owner_key}, "Grants": [user(other_key, "READ_WRITE")]}), (400, "MalformedACLError")),
    ("a user without an ID", lambda: owner.put_bucket_acl(Bucket=B, AccessControlPolicy={
        "Owner": {"ID": owner_key}, "Grants": [{"Grantee": {"Type": "CanonicalUser"}, "Permission": "READ"}]}),
     (400, "MalformedACLError")),
    ("a canned ACL with grant headers", lambda: owner.put_bucket_acl(
        Bucket=B, ACL="private", GrantRead=f"id={other_key}"), (400, "InvalidRequest")),
    ("an unknown canned ACL", lambda: owner.put_object_acl(Bucket=B, Key="priv", ACL="nonsense"),
     (400, "InvalidArgument")),
]:
    check(refusal(call), want, what)
check(refusal(lambda: owner.head_object(Bucket=B, Key="bad")), (404, "404"), "a refused PUT stores nothing")
check(grants(owner.get_bucket_acl(Bucket=B)), [(owner_key, "FULL_CONTROL")], "refusals changed nothing")
check(grants(owner.get_object_acl(Bucket=B, Key="priv")), [(owner_key, "FULL_CONTROL")], "nor the object's")
print("bad grantees: checks passed")

# ------------------------------------------------ exactly what was put
EXACT = [user(owner_key, "FULL_CONTROL"), user(other_key, "READ_ACP"), group(AUTH, "READ"), group(ALL, "READ"),
         user(other_key, "WRITE"), group(ALL, "WRITE")]
owner.put_bucket_acl(Bucket=B, AccessControlPolicy={"Owner": {"ID": owner_key}, "Grants": EXACT})
want = [(g["Grantee"].get("ID") or g["Grantee"].get("URI"), g["Permission"]) for g in EXACT]
check(grants(owner.get_bucket_acl(Bucket=B)), want, "GetBucketAcl answers the grants as put")
check(owner.get_bucket_policy_status(Bucket=B)["PolicyStatus"]["IsPublic"], True, "a public ACL is public")
owner.put_object_acl(Bucket=B, Key="priv", AccessControlPolicy={"Owner": {"ID": owner_key}, "Grants": EXACT[:4]})
check(grants(owner.get_object_acl(Bucket=B, Key="priv")), want[:4], "GetObjectAcl answers the grants as put")
owner.put_bucket_acl(Bucket=B, ACL="private")
check(owner.get_bucket_policy_status(Bucket=B)["PolicyStatus"]["IsPublic"], False, "private is not public")
# CreateBucket takes grant headers too.
owner.create_bucket(Bucket="acl-created", GrantRead=f"id={other_key}", GrantFullControl=f"id={owner_key}")
check(grants(owner.get_bucket_acl(Bucket="acl-created")), [(other_key, "READ"), (owner_key, "FULL_CONTROL")],
      "CreateBucket grant headers")
check(other.list_objects_v2(Bucket="acl-created")["KeyCount"], 0, "and they count")
check(refusal(lambda: owner.create_bucket(Bucket="acl-refused", GrantRead=f"id={BAD_ID}")),
      (400, "InvalidArgument"), "CreateBucket with an id that is no key")
check(refusal(lambda: owner.head_bucket(Bucket="acl-refused"))[0], 404, "is not created")
# ListBuckets shows the caller as the owner, as every ACL does.
check(owner.list_buckets()["Owner"], {"ID": owner_key, "DisplayName": "owner"}, "ListBuckets owner")
check(other.list_buckets()["Owner"], {"ID": other_key, "DisplayName": "other"}, "ListBuckets owner, other key")
print("exact answers: checks passed")

print("acl: all checks passed")
