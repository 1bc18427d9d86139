//! Access control lists (issue 15; S3 User Guide, "Access control list
//! (ACL) overview"; S3 API reference, PutBucketAcl, PutObjectAcl): the
//! three forms a request gives an ACL in (a canned ACL in `x-amz-acl`,
//! grants in `x-amz-grant-*` headers, an `AccessControlPolicy` body) turned
//! into the [`Acl`] meta keeps, and an `Acl` turned back into the grants
//! GetBucketAcl and GetObjectAcl answer. What a grant allows is decided
//! with everything else in `access.rs`.
//!
//! Keys are canonical users: a key's canonical user ID is its access key
//! id, its DisplayName the key's name (as ListBuckets, `fetch-owner` and
//! the `Owner` of every ACL show them). Every object is owned by its
//! bucket's owner key (objects record no writer), so `bucket-owner-read`
//! and `bucket-owner-full-control` amount to `private`.

use s3s::dto;
use s3s::{S3Result, s3_error};
use tessera_proto::{Acl, AclGrant, AclPermission, Grantee, MAX_ACL_GRANTS};

const ALL_USERS: &str = "http://acs.amazonaws.com/groups/global/AllUsers";
const AUTHENTICATED_USERS: &str = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers";
const LOG_DELIVERY: &str = "http://acs.amazonaws.com/groups/s3/LogDelivery";

/// A canned ACL (S3 User Guide, "Canned ACL").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CannedAcl {
    Private,
    PublicRead,
    PublicReadWrite,
    AuthenticatedRead,
    BucketOwnerRead,
    BucketOwnerFullControl,
    LogDeliveryWrite,
}

impl CannedAcl {
    /// A canned ACL by its S3 name; `aws-exec-read` (a grant to EC2) is
    /// `NotImplemented`, an unknown name `InvalidArgument`.
    pub(crate) fn parse(name: &str) -> S3Result<CannedAcl> {
        Ok(match name {
            "private" => CannedAcl::Private,
            "public-read" => CannedAcl::PublicRead,
            "public-read-write" => CannedAcl::PublicReadWrite,
            "authenticated-read" => CannedAcl::AuthenticatedRead,
            "bucket-owner-read" => CannedAcl::BucketOwnerRead,
            "bucket-owner-full-control" => CannedAcl::BucketOwnerFullControl,
            "log-delivery-write" => CannedAcl::LogDeliveryWrite,
            "aws-exec-read" => return Err(s3_error!(NotImplemented, "the aws-exec-read ACL")),
            other => return Err(s3_error!(InvalidArgument, "unknown canned ACL {other:?}")),
        })
    }

    /// The grants it makes for a bucket or object owned by `owner` (a key
    /// id; `None` when no key owns the bucket): the owner's FULL_CONTROL,
    /// then the groups' grants.
    fn grants(self, owner: Option<&str>) -> Vec<AclGrant> {
        let grant = |grantee, permission| AclGrant {
            grantee,
            permission,
        };
        let mut grants: Vec<AclGrant> = owner
            .map(|id| {
                grant(
                    Grantee::CanonicalUser(id.to_string()),
                    AclPermission::FullControl,
                )
            })
            .into_iter()
            .collect();
        match self {
            CannedAcl::PublicRead => grants.push(grant(Grantee::AllUsers, AclPermission::Read)),
            CannedAcl::PublicReadWrite => {
                grants.push(grant(Grantee::AllUsers, AclPermission::Read));
                grants.push(grant(Grantee::AllUsers, AclPermission::Write));
            }
            CannedAcl::AuthenticatedRead => {
                grants.push(grant(Grantee::AuthenticatedUsers, AclPermission::Read));
            }
            CannedAcl::LogDeliveryWrite => {
                grants.push(grant(Grantee::LogDelivery, AclPermission::Write));
                grants.push(grant(Grantee::LogDelivery, AclPermission::ReadAcp));
            }
            CannedAcl::Private | CannedAcl::BucketOwnerRead | CannedAcl::BucketOwnerFullControl => {
            }
        }
        grants
    }
}

/// The `x-amz-grant-*` headers of a request, as given (objects have no
/// `write`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GrantHeaders<'a> {
    pub read: Option<&'a str>,
    pub write: Option<&'a str>,
    pub read_acp: Option<&'a str>,
    pub write_acp: Option<&'a str>,
    pub full_control: Option<&'a str>,
}

/// The ACL a request asks for, in whichever forms it came.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AclRequest<'a> {
    /// `x-amz-acl`.
    pub canned: Option<&'a str>,
    pub headers: GrantHeaders<'a>,
    /// An `AccessControlPolicy` body (PutBucketAcl, PutObjectAcl).
    pub body: Option<&'a dto::AccessControlPolicy>,
}

impl GrantHeaders<'_> {
    fn is_empty(&self) -> bool {
        [
            self.read,
            self.write,
            self.read_acp,
            self.write_acp,
            self.full_control,
        ]
        .iter()
        .all(Option::is_none)
    }
}

impl AclRequest<'_> {
    /// Whether the request asks for no ACL in any form.
    pub(crate) fn is_empty(&self) -> bool {
        self.canned.is_none() && self.headers.is_empty() && self.body.is_none()
    }
}

/// The ACL a request asks for in its `x-amz-acl` and `x-amz-grant-*`
/// headers: `acl_request!(input)` for an object write (PutObject,
/// CopyObject, CreateMultipartUpload: no `x-amz-grant-write`, no body),
/// `acl_request!(input, put_acl)` for PutBucketAcl and PutObjectAcl (all
/// five headers and the body), `acl_request!(input, write, body)` for the
/// others.
macro_rules! acl_request {
    ($input:expr) => {
        crate::acl::acl_request!($input, None, None)
    };
    ($input:expr, put_acl) => {
        crate::acl::acl_request!(
            $input,
            $input.grant_write.as_deref(),
            $input.access_control_policy.as_ref()
        )
    };
    ($input:expr, $write:expr, $body:expr) => {
        crate::acl::AclRequest {
            canned: $input.acl.as_ref().map(|a| a.as_str()),
            headers: crate::acl::GrantHeaders {
                read: $input.grant_read.as_deref(),
                write: $write,
                read_acp: $input.grant_read_acp.as_deref(),
                write_acp: $input.grant_write_acp.as_deref(),
                full_control: $input.grant_full_control.as_deref(),
            },
            body: $body,
        }
    };
}
pub(crate) use acl_request;

/// The ACL `request` asks for, for a bucket or object owned by `owner`;
/// `Ok(None)` when it asks for none (the caller decides what that means).
/// The result is as it will be stored: an ACL that is only the owner's
/// FULL_CONTROL (what `private` means) is `Some(Acl::default())`, stored
/// as no ACL. Errors: a canned ACL with grant headers `InvalidRequest`,
/// either with a body `UnexpectedContent`, a grantee by e-mail
/// `UnresolvableGrantByEmailAddress` (keys have no e-mail addresses), an
/// unknown group or a malformed header `InvalidArgument`, a body grant
/// without grantee, permission or the grantee's ID or URI, or with an
/// unknown permission or grantee type, or more than [`MAX_ACL_GRANTS`]
/// grants, `MalformedACLError`. Whether named keys exist is the caller's
/// to check ([`named_keys`]).
pub(crate) fn requested(request: &AclRequest<'_>, owner: Option<&str>) -> S3Result<Option<Acl>> {
    let h = &request.headers;
    let headers = [
        (h.read, AclPermission::Read),
        (h.write, AclPermission::Write),
        (h.read_acp, AclPermission::ReadAcp),
        (h.write_acp, AclPermission::WriteAcp),
        (h.full_control, AclPermission::FullControl),
    ];
    let has_headers = !h.is_empty();
    if request.body.is_some() && (has_headers || request.canned.is_some()) {
        return Err(s3_error!(
            UnexpectedContent,
            "This request does not support content with an x-amz-acl or x-amz-grant header"
        ));
    }
    let grants = match (request.canned, has_headers, request.body) {
        (Some(_), true, _) => {
            return Err(s3_error!(
                InvalidRequest,
                "Specifying both Canned ACLs and Header Grants is not allowed"
            ));
        }
        (Some(name), false, _) => CannedAcl::parse(name)?.grants(owner),
        (None, true, _) => {
            let mut grants = Vec::new();
            for (value, permission) in headers {
                for grantee in value
                    .map(header_grantees)
                    .transpose()?
                    .into_iter()
                    .flatten()
                {
                    grants.push(AclGrant {
                        grantee,
                        permission,
                    });
                }
            }
            grants
        }
        (None, false, Some(body)) => body_grants(body)?,
        (None, false, None) => return Ok(None),
    };
    if grants.len() > MAX_ACL_GRANTS {
        return Err(s3_error!(
            MalformedACLError,
            "an ACL of {} grants; at most {MAX_ACL_GRANTS} are allowed",
            grants.len()
        ));
    }
    let owner_only = match (owner, grants.as_slice()) {
        (Some(id), [g]) => {
            g.grantee == Grantee::CanonicalUser(id.to_string())
                && g.permission == AclPermission::FullControl
        }
        (None, []) => true,
        _ => false,
    };
    Ok(Some(if owner_only {
        Acl::default()
    } else {
        Acl { grants }
    }))
}

/// The stored form of a requested ACL: `None` for the owner's FULL_CONTROL
/// alone.
pub(crate) fn stored(acl: Acl) -> Option<Acl> {
    (acl != Acl::default()).then_some(acl)
}

/// The key ids an ACL names (each once), for the caller to check that
/// they exist (S3: `InvalidArgument` for a grantee that does not).
pub(crate) fn named_keys(acl: &Acl) -> Vec<&str> {
    let mut ids: Vec<&str> = acl
        .grants
        .iter()
        .filter_map(|g| match &g.grantee {
            Grantee::CanonicalUser(id) => Some(id.as_str()),
            _ => None,
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Whether an ACL grants anything to everyone or to every signed caller
/// (what PublicAccessBlock's ACL settings and `IsPublic` are about).
pub(crate) fn is_public(acl: &Acl) -> bool {
    acl.grants.iter().any(|g| grantee_is_public(&g.grantee))
}

/// The groups that make a grant public.
pub(crate) fn grantee_is_public(grantee: &Grantee) -> bool {
    matches!(grantee, Grantee::AllUsers | Grantee::AuthenticatedUsers)
}

/// A group by its URI. Errors: `InvalidArgument` for another.
fn group(uri: &str) -> S3Result<Grantee> {
    match uri {
        ALL_USERS => Ok(Grantee::AllUsers),
        AUTHENTICATED_USERS => Ok(Grantee::AuthenticatedUsers),
        LOG_DELIVERY => Ok(Grantee::LogDelivery),
        other => Err(s3_error!(InvalidArgument, "Invalid group uri {other:?}")),
    }
}

fn unresolvable(email: &str) -> s3s::S3Error {
    s3_error!(
        UnresolvableGrantByEmailAddress,
        "The email address you provided ({email}) does not match any account on record"
    )
}

/// The grantees of one `x-amz-grant-*` header: a comma-separated list of
/// `id="..."`, `uri="..."` or `emailAddress="..."` (quotes optional).
fn header_grantees(value: &str) -> S3Result<Vec<Grantee>> {
    let bad = || s3_error!(InvalidArgument, "malformed grant header {value:?}");
    let mut grantees = Vec::new();
    for item in value.split(',') {
        let (kind, v) = item.trim().split_once('=').ok_or_else(bad)?;
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        if v.is_empty() {
            return Err(bad());
        }
        grantees.push(match kind.trim().to_ascii_lowercase().as_str() {
            "id" => Grantee::CanonicalUser(v.to_string()),
            "uri" => group(v)?,
            "emailaddress" => return Err(unresolvable(v)),
            _ => return Err(bad()),
        });
    }
    Ok(grantees)
}

/// The grants of an `AccessControlPolicy` body, in its order. Its `Owner`
/// is not compared: the owner is the bucket's owner key, whatever the body
/// says.
fn body_grants(body: &dto::AccessControlPolicy) -> S3Result<Vec<AclGrant>> {
    let malformed = |why: &str| {
        s3_error!(
            MalformedACLError,
            "The XML you provided was not well-formed or did not validate against our published schema: {why}"
        )
    };
    let mut grants = Vec::new();
    for g in body.grants.iter().flatten() {
        let (Some(grantee), Some(permission)) = (&g.grantee, &g.permission) else {
            return Err(malformed("each Grant needs a Grantee and a Permission"));
        };
        let permission = match permission.as_str() {
            dto::Permission::READ => AclPermission::Read,
            dto::Permission::WRITE => AclPermission::Write,
            dto::Permission::READ_ACP => AclPermission::ReadAcp,
            dto::Permission::WRITE_ACP => AclPermission::WriteAcp,
            dto::Permission::FULL_CONTROL => AclPermission::FullControl,
            _ => return Err(malformed("an unknown Permission")),
        };
        let grantee = match grantee.type_.as_str() {
            dto::Type::CANONICAL_USER => match grantee.id.as_deref() {
                Some(id) if !id.is_empty() => Grantee::CanonicalUser(id.to_string()),
                _ => return Err(malformed("a CanonicalUser grantee needs an ID")),
            },
            dto::Type::GROUP => match grantee.uri.as_deref() {
                Some(uri) => group(uri)?,
                None => return Err(malformed("a Group grantee needs a URI")),
            },
            dto::Type::AMAZON_CUSTOMER_BY_EMAIL => {
                return Err(unresolvable(
                    grantee.email_address.as_deref().unwrap_or_default(),
                ));
            }
            _ => return Err(malformed("an unknown grantee type")),
        };
        grants.push(AclGrant {
            grantee,
            permission,
        });
    }
    Ok(grants)
}

/// The grants GetBucketAcl and GetObjectAcl answer for `acl` (`None`: the
/// owner's FULL_CONTROL alone), a key's DisplayName from `name_of` (its
/// name; its id when it is gone).
pub(crate) fn answer(
    acl: Option<&Acl>,
    owner: Option<&dto::Owner>,
    name_of: impl Fn(&str) -> Option<String>,
) -> Vec<dto::Grant> {
    let owner_only;
    let grants = match acl {
        Some(acl) => &acl.grants,
        None => {
            owner_only = owner
                .and_then(|o| o.id.clone())
                .map(|id| AclGrant {
                    grantee: Grantee::CanonicalUser(id),
                    permission: AclPermission::FullControl,
                })
                .into_iter()
                .collect::<Vec<_>>();
            &owner_only
        }
    };
    grants
        .iter()
        .map(|g| {
            let (type_, id, uri) = match &g.grantee {
                Grantee::CanonicalUser(id) => (dto::Type::CANONICAL_USER, Some(id.clone()), None),
                Grantee::AllUsers => (dto::Type::GROUP, None, Some(ALL_USERS)),
                Grantee::AuthenticatedUsers => (dto::Type::GROUP, None, Some(AUTHENTICATED_USERS)),
                Grantee::LogDelivery => (dto::Type::GROUP, None, Some(LOG_DELIVERY)),
            };
            dto::Grant {
                grantee: Some(dto::Grantee {
                    type_: dto::Type::from_static(type_),
                    display_name: id
                        .as_deref()
                        .map(|id| name_of(id).unwrap_or_else(|| id.to_string())),
                    id,
                    uri: uri.map(str::to_string),
                    email_address: None,
                }),
                permission: Some(dto::Permission::from_static(match g.permission {
                    AclPermission::Read => dto::Permission::READ,
                    AclPermission::Write => dto::Permission::WRITE,
                    AclPermission::ReadAcp => dto::Permission::READ_ACP,
                    AclPermission::WriteAcp => dto::Permission::WRITE_ACP,
                    AclPermission::FullControl => dto::Permission::FULL_CONTROL,
                })),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use s3s::S3ErrorCode;

    fn code<T: std::fmt::Debug>(r: S3Result<T>) -> S3ErrorCode {
        r.unwrap_err().code().clone()
    }

    fn grant(grantee: Grantee, permission: AclPermission) -> AclGrant {
        AclGrant {
            grantee,
            permission,
        }
    }

    fn user(id: &str) -> Grantee {
        Grantee::CanonicalUser(id.into())
    }

    fn canned(name: &str) -> S3Result<Option<Acl>> {
        requested(
            &AclRequest {
                canned: Some(name),
                ..Default::default()
            },
            Some("OWNER"),
        )
    }

    fn dto_grant(
        type_: &'static str,
        id: Option<&str>,
        uri: Option<&str>,
        p: &'static str,
    ) -> dto::Grant {
        dto::Grant {
            grantee: Some(dto::Grantee {
                type_: dto::Type::from_static(type_),
                id: id.map(str::to_string),
                uri: uri.map(str::to_string),
                display_name: None,
                email_address: None,
            }),
            permission: Some(dto::Permission::from_static(p)),
        }
    }

    fn body(grants: Vec<dto::Grant>) -> S3Result<Option<Acl>> {
        let policy = dto::AccessControlPolicy {
            grants: Some(grants),
            owner: None,
        };
        requested(
            &AclRequest {
                body: Some(&policy),
                ..Default::default()
            },
            Some("OWNER"),
        )
    }

    #[test]
    fn canned_acls_expand_to_their_grants() {
        use AclPermission::*;
        for private in ["private", "bucket-owner-read", "bucket-owner-full-control"] {
            assert_eq!(canned(private).unwrap(), Some(Acl::default()));
        }
        assert_eq!(
            canned("public-read-write").unwrap().unwrap().grants,
            vec![
                grant(user("OWNER"), FullControl),
                grant(Grantee::AllUsers, Read),
                grant(Grantee::AllUsers, Write)
            ]
        );
        assert_eq!(
            canned("authenticated-read").unwrap().unwrap().grants[1],
            grant(Grantee::AuthenticatedUsers, Read)
        );
        assert_eq!(code(canned("nonsense")), S3ErrorCode::InvalidArgument);
        assert_eq!(code(canned("aws-exec-read")), S3ErrorCode::NotImplemented);
        assert_eq!(
            requested(&AclRequest::default(), Some("OWNER")).unwrap(),
            None
        );
        assert_eq!(stored(Acl::default()), None);
    }

    #[test]
    fn grant_headers_name_keys_and_groups() {
        let req = |headers| AclRequest {
            headers,
            ..Default::default()
        };
        let got = requested(
            &req(GrantHeaders {
                read: Some(r#"id="K1", uri="http://acs.amazonaws.com/groups/global/AllUsers""#),
                write_acp: Some("id=K2"),
                ..Default::default()
            }),
            Some("OWNER"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            got.grants,
            vec![
                grant(user("K1"), AclPermission::Read),
                grant(Grantee::AllUsers, AclPermission::Read),
                grant(user("K2"), AclPermission::WriteAcp),
            ]
        );
        assert_eq!(named_keys(&got), ["K1", "K2"]);
        assert!(is_public(&got));
        let one = |v| {
            requested(
                &req(GrantHeaders {
                    full_control: Some(v),
                    ..Default::default()
                }),
                Some("OWNER"),
            )
        };
        assert_eq!(
            code(one(r#"emailAddress="a@example.com""#)),
            S3ErrorCode::UnresolvableGrantByEmailAddress
        );
        assert_eq!(
            code(one(
                r#"uri="http://acs.amazonaws.com/groups/global/Nobody""#
            )),
            S3ErrorCode::InvalidArgument
        );
        for bad in ["K1", "id=", r#"name="x""#] {
            assert_eq!(code(one(bad)), S3ErrorCode::InvalidArgument, "{bad}");
        }
        // The owner's FULL_CONTROL alone is private.
        assert_eq!(one("id=OWNER").unwrap(), Some(Acl::default()));
        let both = AclRequest {
            canned: Some("private"),
            headers: GrantHeaders {
                read: Some("id=K1"),
                ..Default::default()
            },
            body: None,
        };
        assert_eq!(
            code(requested(&both, Some("OWNER"))),
            S3ErrorCode::InvalidRequest
        );
    }

    #[test]
    fn bodies_keep_their_grants_in_order_or_are_refused() {
        use dto::Permission as P;
        use dto::Type as T;
        let got = body(vec![
            dto_grant(T::CANONICAL_USER, Some("OWNER"), None, P::FULL_CONTROL),
            dto_grant(T::GROUP, None, Some(AUTHENTICATED_USERS), P::READ),
            dto_grant(T::CANONICAL_USER, Some("K1"), None, P::READ_ACP),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            got.grants,
            vec![
                grant(user("OWNER"), AclPermission::FullControl),
                grant(Grantee::AuthenticatedUsers, AclPermission::Read),
                grant(user("K1"), AclPermission::ReadAcp),
            ]
        );
        // What is answered is what was put.
        let owner = dto::Owner {
            id: Some("OWNER".into()),
            display_name: Some("owner".into()),
        };
        let answered = answer(Some(&got), Some(&owner), |id| Some(format!("name-{id}")));
        let policy = dto::AccessControlPolicy {
            grants: Some(answered.clone()),
            owner: Some(owner.clone()),
        };
        let again = requested(
            &AclRequest {
                body: Some(&policy),
                ..Default::default()
            },
            Some("OWNER"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(again, got);
        assert_eq!(
            answered[0]
                .grantee
                .as_ref()
                .unwrap()
                .display_name
                .as_deref(),
            Some("name-OWNER")
        );
        // No ACL: the owner's FULL_CONTROL.
        let default = answer(None, Some(&owner), |_| None);
        assert_eq!(default.len(), 1);
        assert_eq!(
            default[0].permission.as_ref().unwrap().as_str(),
            P::FULL_CONTROL
        );
        assert_eq!(body(vec![]).unwrap(), Some(Acl::default()));
        for bad in [
            dto_grant(T::CANONICAL_USER, None, None, P::READ),
            dto_grant(T::GROUP, None, None, P::READ),
            dto_grant(T::CANONICAL_USER, Some("K1"), None, "READ_WRITE"),
            dto_grant("Nobody", Some("K1"), None, P::READ),
            dto::Grant {
                grantee: None,
                permission: None,
            },
        ] {
            assert_eq!(code(body(vec![bad])), S3ErrorCode::MalformedACLError);
        }
        assert_eq!(
            code(body(vec![dto_grant(
                T::AMAZON_CUSTOMER_BY_EMAIL,
                None,
                None,
                P::READ
            )])),
            S3ErrorCode::UnresolvableGrantByEmailAddress
        );
        let many =
            vec![dto_grant(T::CANONICAL_USER, Some("K1"), None, P::READ); MAX_ACL_GRANTS + 1];
        assert_eq!(code(body(many)), S3ErrorCode::MalformedACLError);
    }
}
