//! Object Lock at the S3 edge (S3 User Guide, "Locking objects with Object
//! Lock"; API reference, PutObjectLockConfiguration, PutObjectRetention,
//! PutObjectLegalHold and their Get counterparts, and the
//! `x-amz-object-lock-*` headers of PutObject, CopyObject and
//! CreateMultipartUpload): it owns the request forms (which XML and header
//! values are accepted, with S3's error codes) and the answers; meta owns
//! every rule about the stored state (a locked version is never removed,
//! a running retention only grows), checked in the command that changes
//! it, so no other path around the gateway can skip them.

use std::time::{SystemTime, UNIX_EPOCH};

use s3s::dto::{self, Timestamp};
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use tessera_proto::{
    DefaultRetention, LockMode, ObjectHeaders, ObjectLockConfig, Permission, Retention,
};

use crate::gateway::{Gateway, timestamp, to_s3};
use crate::rules;

/// The action a caller must be allowed to bypass GOVERNANCE retention.
pub(crate) const BYPASS_ACTION: &str = "s3:BypassGovernanceRetention";

/// Now, in Unix milliseconds (the gateway's clock: only to refuse a
/// retention date already past; meta decides with its own time).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Unix milliseconds of `t` (0 before 1970).
fn ms_of(t: &Timestamp) -> u64 {
    let ns = time::OffsetDateTime::from(t.clone()).unix_timestamp_nanos();
    u64::try_from(ns / 1_000_000).unwrap_or(0)
}

fn malformed(msg: &str) -> S3Error {
    S3Error::with_message(S3ErrorCode::MalformedXML, msg.to_string())
}

/// A mode as S3 spells it (upper case only). Errors: `MalformedXML`.
fn mode(m: Option<&str>) -> S3Result<LockMode> {
    m.and_then(LockMode::parse)
        .ok_or_else(|| malformed("the retention mode must be GOVERNANCE or COMPLIANCE"))
}

/// A PutObjectLockConfiguration body (S3 API reference): `ObjectLockEnabled`
/// must be `Enabled`; a `DefaultRetention` needs a mode and exactly one of
/// `Days` and `Years` (else `MalformedXML`), a positive one (else
/// `InvalidRetentionPeriod`).
pub(crate) fn lock_configuration(
    c: Option<&dto::ObjectLockConfiguration>,
) -> S3Result<ObjectLockConfig> {
    let c = c.ok_or_else(|| malformed("ObjectLockConfiguration is missing"))?;
    if c.object_lock_enabled.as_ref().map(|e| e.as_str()) != Some("Enabled") {
        return Err(malformed("ObjectLockEnabled must be Enabled"));
    }
    let Some(d) = c.rule.as_ref().and_then(|r| r.default_retention.as_ref()) else {
        if c.rule.is_some() {
            return Err(malformed("a Rule needs a DefaultRetention"));
        }
        return Ok(ObjectLockConfig::default());
    };
    let mode = mode(d.mode.as_ref().map(|m| m.as_str()))?;
    let period = |n: i32| {
        u32::try_from(n).ok().filter(|n| *n > 0).ok_or_else(|| {
            let mut e = S3Error::with_message(
                S3ErrorCode::Custom("InvalidRetentionPeriod".into()),
                "the retention period must be a positive number of days or years",
            );
            e.set_status_code(axum::http::StatusCode::BAD_REQUEST);
            e
        })
    };
    let (days, years) = match (d.days, d.years) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(malformed(
                "a DefaultRetention needs exactly one of Days and Years",
            ));
        }
        (Some(n), None) => (Some(period(n)?), None),
        (None, Some(n)) => (None, Some(period(n)?)),
    };
    Ok(ObjectLockConfig {
        default_retention: Some(DefaultRetention { mode, days, years }),
    })
}

/// A configuration as GetObjectLockConfiguration answers it.
pub(crate) fn lock_configuration_dto(c: &ObjectLockConfig) -> dto::ObjectLockConfiguration {
    dto::ObjectLockConfiguration {
        object_lock_enabled: Some(dto::ObjectLockEnabled::from("Enabled".to_string())),
        rule: c.default_retention.map(|d| dto::ObjectLockRule {
            default_retention: Some(dto::DefaultRetention {
                mode: Some(dto::ObjectLockRetentionMode::from(
                    d.mode.as_str().to_string(),
                )),
                days: d.days.map(|n| n as i32),
                years: d.years.map(|n| n as i32),
            }),
        }),
    }
}

/// A PutObjectRetention body: a mode (`MalformedXML` otherwise) and a
/// date in the future (`InvalidArgument` otherwise); an empty
/// `Retention` removes the retention (`None`).
pub(crate) fn retention(
    r: Option<&dto::ObjectLockRetention>,
    now_ms: u64,
) -> S3Result<Option<Retention>> {
    let Some(r) = r else {
        return Err(malformed("Retention is missing"));
    };
    if r.mode.is_none() && r.retain_until_date.is_none() {
        return Ok(None);
    }
    let mode = mode(r.mode.as_ref().map(|m| m.as_str()))?;
    let until = r
        .retain_until_date
        .as_ref()
        .ok_or_else(|| malformed("a Retention needs a RetainUntilDate"))?;
    Ok(Some(Retention {
        mode,
        until_ms: future(until, now_ms)?,
    }))
}

/// A retain-until date, which must lie after `now_ms`. Errors:
/// `InvalidArgument`.
fn future(t: &Timestamp, now_ms: u64) -> S3Result<u64> {
    let ms = ms_of(t);
    if ms <= now_ms {
        return Err(s3_error!(
            InvalidArgument,
            "The retain until date must be in the future!"
        ));
    }
    Ok(ms)
}

/// A legal hold status: `ON` or `OFF`. Errors: `bad` (S3 answers
/// `MalformedXML` for a body, `InvalidArgument` for a header).
fn hold(status: Option<&str>, bad: S3ErrorCode) -> S3Result<bool> {
    match status {
        Some("ON") => Ok(true),
        Some("OFF") => Ok(false),
        _ => Err(S3Error::with_message(
            bad,
            "the legal hold status must be ON or OFF",
        )),
    }
}

/// A PutObjectLegalHold body. Errors: `MalformedXML`.
pub(crate) fn legal_hold(h: Option<&dto::ObjectLockLegalHold>) -> S3Result<bool> {
    hold(
        h.and_then(|h| h.status.as_ref()).map(|s| s.as_str()),
        S3ErrorCode::MalformedXML,
    )
}

/// The `x-amz-object-lock-mode`, `-retain-until-date` and `-legal-hold`
/// headers of a write (PutObject, CopyObject, CreateMultipartUpload): the
/// mode and date come together (else `InvalidArgument`), the mode is
/// GOVERNANCE or COMPLIANCE and the date in the future (else
/// `InvalidArgument`), the hold ON or OFF (else `InvalidArgument`).
/// Whether the bucket has Object Lock is meta's to check.
pub(crate) fn write_headers(
    mode: Option<&dto::ObjectLockMode>,
    until: Option<&Timestamp>,
    legal_hold: Option<&dto::ObjectLockLegalHoldStatus>,
    now_ms: u64,
) -> S3Result<(Option<Retention>, bool)> {
    let retention = match (mode, until) {
        (None, None) => None,
        (Some(m), Some(t)) => Some(Retention {
            mode: LockMode::parse(m.as_str()).ok_or_else(|| {
                s3_error!(
                    InvalidArgument,
                    "x-amz-object-lock-mode must be GOVERNANCE or COMPLIANCE"
                )
            })?,
            until_ms: future(t, now_ms)?,
        }),
        _ => {
            return Err(s3_error!(
                InvalidArgument,
                "x-amz-object-lock-retain-until-date and x-amz-object-lock-mode must both be supplied"
            ));
        }
    };
    let hold = match legal_hold {
        None => false,
        Some(s) => hold(Some(s.as_str()), S3ErrorCode::InvalidArgument)?,
    };
    Ok((retention, hold))
}

/// Sets a write's Object Lock headers into `h` (see [`write_headers`]).
pub(crate) fn apply_write_headers(
    h: &mut ObjectHeaders,
    mode: Option<&dto::ObjectLockMode>,
    until: Option<&Timestamp>,
    legal_hold: Option<&dto::ObjectLockLegalHoldStatus>,
) -> S3Result<()> {
    let (retention, hold) = write_headers(mode, until, legal_hold, now_ms())?;
    h.retention = retention;
    h.legal_hold = hold;
    Ok(())
}

/// What GET and HEAD answer about a version's lock: mode, retain-until
/// date and legal hold status (the last only when the version has a
/// retention or a hold, so buckets without Object Lock answer none).
pub(crate) fn read_headers(
    h: &ObjectHeaders,
) -> (
    Option<dto::ObjectLockMode>,
    Option<Timestamp>,
    Option<dto::ObjectLockLegalHoldStatus>,
) {
    let mode = h
        .retention
        .map(|r| dto::ObjectLockMode::from(r.mode.as_str().to_string()));
    let until = h.retention.map(|r| timestamp(r.until_ms));
    let hold = (h.retention.is_some() || h.legal_hold).then(|| {
        dto::ObjectLockLegalHoldStatus::from(if h.legal_hold { "ON" } else { "OFF" }.to_string())
    });
    (mode, until, hold)
}

/// S3's answer for a bucket without Object Lock where a version's lock is
/// asked for or set: `InvalidRequest` (400).
fn no_lock(bucket: &str) -> S3Error {
    s3_error!(
        InvalidRequest,
        "Bucket {bucket} is missing Object Lock Configuration"
    )
}

impl Gateway {
    /// PutObjectLockConfiguration (bucket owner). Errors as
    /// [`lock_configuration`]'s, and `InvalidBucketState` (409) unless
    /// the bucket's versioning is Enabled.
    pub(crate) async fn do_put_object_lock_configuration(
        &self,
        req: S3Request<dto::PutObjectLockConfigurationInput>,
    ) -> S3Result<S3Response<dto::PutObjectLockConfigurationOutput>> {
        let bucket = &req.input.bucket;
        self.allow(&req, bucket, Permission::Owner).await?;
        let config = lock_configuration(req.input.object_lock_configuration.as_ref())?;
        self.client
            .set_object_lock(bucket, config, false)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(
            dto::PutObjectLockConfigurationOutput::default(),
        ))
    }

    /// GetObjectLockConfiguration: `ObjectLockConfigurationNotFoundError`
    /// (404) for a bucket without Object Lock.
    pub(crate) async fn do_get_object_lock_configuration(
        &self,
        req: S3Request<dto::GetObjectLockConfigurationInput>,
    ) -> S3Result<S3Response<dto::GetObjectLockConfigurationOutput>> {
        let bucket = &req.input.bucket;
        self.allow(&req, bucket, Permission::Read).await?;
        let config = self
            .client
            .object_lock(bucket)
            .await
            .map_err(to_s3)?
            .ok_or_else(|| {
                s3_error!(
                    ObjectLockConfigurationNotFoundError,
                    "Object Lock configuration does not exist for this bucket"
                )
            })?;
        Ok(S3Response::new(dto::GetObjectLockConfigurationOutput {
            object_lock_configuration: Some(lock_configuration_dto(&config)),
        }))
    }

    /// Whether the caller asked to bypass GOVERNANCE retention and may
    /// (`s3:BypassGovernanceRetention`: the bucket owner's grant, or a
    /// policy allowing it).
    pub(crate) async fn bypasses_governance<T>(
        &self,
        req: &S3Request<T>,
        bucket: &str,
        asked: Option<bool>,
    ) -> bool {
        asked == Some(true)
            && self
                .allow_action(req, bucket, Permission::Owner, BYPASS_ACTION)
                .await
                .is_ok()
    }

    /// PutObjectRetention (write grant): meta refuses shortening a running
    /// retention (`AccessDenied`), a bucket without Object Lock
    /// (`InvalidRequest`).
    pub(crate) async fn do_put_object_retention(
        &self,
        req: S3Request<dto::PutObjectRetentionInput>,
    ) -> S3Result<S3Response<dto::PutObjectRetentionOutput>> {
        let i = &req.input;
        self.allow(&req, &i.bucket, Permission::Write).await?;
        let version = rules::version_id(i.version_id.as_deref())?;
        let retention = retention(i.retention.as_ref(), now_ms())?;
        let bypass = self
            .bypasses_governance(&req, &i.bucket, i.bypass_governance_retention)
            .await;
        self.client
            .set_retention((&i.bucket, &i.key, version), retention, bypass)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(dto::PutObjectRetentionOutput::default()))
    }

    /// The version a GetObjectRetention or GetObjectLegalHold names, in a
    /// bucket with Object Lock (`InvalidRequest` otherwise).
    async fn locked_version<T>(
        &self,
        req: &S3Request<T>,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> S3Result<tessera_proto::ObjectInfo> {
        self.allow(req, bucket, Permission::Read).await?;
        let version = rules::version_id(version)?;
        if self
            .client
            .object_lock(bucket)
            .await
            .map_err(to_s3)?
            .is_none()
        {
            return Err(no_lock(bucket));
        }
        self.version_for_read(bucket, key, version).await
    }

    /// GetObjectRetention: `NoSuchObjectLockConfiguration` (404) for a
    /// version without a retention.
    pub(crate) async fn do_get_object_retention(
        &self,
        req: S3Request<dto::GetObjectRetentionInput>,
    ) -> S3Result<S3Response<dto::GetObjectRetentionOutput>> {
        let i = &req.input;
        let info = self
            .locked_version(&req, &i.bucket, &i.key, i.version_id.as_deref())
            .await?;
        let r = info.headers.retention.ok_or_else(|| {
            s3_error!(
                NoSuchObjectLockConfiguration,
                "The specified object does not have a ObjectLock configuration"
            )
        })?;
        Ok(S3Response::new(dto::GetObjectRetentionOutput {
            retention: Some(dto::ObjectLockRetention {
                mode: Some(dto::ObjectLockRetentionMode::from(
                    r.mode.as_str().to_string(),
                )),
                retain_until_date: Some(timestamp(r.until_ms)),
            }),
        }))
    }

    /// PutObjectLegalHold (write grant).
    pub(crate) async fn do_put_object_legal_hold(
        &self,
        req: S3Request<dto::PutObjectLegalHoldInput>,
    ) -> S3Result<S3Response<dto::PutObjectLegalHoldOutput>> {
        let i = &req.input;
        self.allow(&req, &i.bucket, Permission::Write).await?;
        let version = rules::version_id(i.version_id.as_deref())?;
        let on = legal_hold(i.legal_hold.as_ref())?;
        self.client
            .set_legal_hold((&i.bucket, &i.key, version), on)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(dto::PutObjectLegalHoldOutput::default()))
    }

    /// GetObjectLegalHold: the version's status, `OFF` when it never had
    /// a hold.
    pub(crate) async fn do_get_object_legal_hold(
        &self,
        req: S3Request<dto::GetObjectLegalHoldInput>,
    ) -> S3Result<S3Response<dto::GetObjectLegalHoldOutput>> {
        let i = &req.input;
        let info = self
            .locked_version(&req, &i.bucket, &i.key, i.version_id.as_deref())
            .await?;
        let status = if info.headers.legal_hold { "ON" } else { "OFF" };
        Ok(S3Response::new(dto::GetObjectLegalHoldOutput {
            legal_hold: Some(dto::ObjectLockLegalHold {
                status: Some(dto::ObjectLockLegalHoldStatus::from(status.to_string())),
            }),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(
        enabled: &str,
        mode: Option<&str>,
        days: Option<i32>,
        years: Option<i32>,
    ) -> dto::ObjectLockConfiguration {
        dto::ObjectLockConfiguration {
            object_lock_enabled: Some(dto::ObjectLockEnabled::from(enabled.to_string())),
            rule: Some(dto::ObjectLockRule {
                default_retention: Some(dto::DefaultRetention {
                    mode: mode.map(|m| dto::ObjectLockRetentionMode::from(m.to_string())),
                    days,
                    years,
                }),
            }),
        }
    }

    fn code(r: S3Result<impl std::fmt::Debug>) -> String {
        r.unwrap_err().code().as_str().to_string()
    }

    #[test]
    fn lock_configurations_are_checked_as_s3_does() {
        let ok = lock_configuration(Some(&config("Enabled", Some("GOVERNANCE"), Some(1), None)))
            .unwrap();
        assert_eq!(
            ok.default_retention,
            Some(DefaultRetention {
                mode: LockMode::Governance,
                days: Some(1),
                years: None
            })
        );
        let c = config("Enabled", Some("COMPLIANCE"), None, Some(2));
        assert_eq!(
            lock_configuration_dto(&lock_configuration(Some(&c)).unwrap()),
            c
        );
        let none = dto::ObjectLockConfiguration {
            object_lock_enabled: Some(dto::ObjectLockEnabled::from("Enabled".to_string())),
            rule: None,
        };
        assert_eq!(
            lock_configuration(Some(&none)).unwrap(),
            ObjectLockConfig::default()
        );
        for (bad, want) in [
            (
                config("Disabled", Some("GOVERNANCE"), Some(1), None),
                "MalformedXML",
            ),
            (
                config("Enabled", Some("governance"), Some(1), None),
                "MalformedXML",
            ),
            (
                config("Enabled", Some("abc"), Some(1), None),
                "MalformedXML",
            ),
            (config("Enabled", None, Some(1), None), "MalformedXML"),
            (
                config("Enabled", Some("GOVERNANCE"), Some(1), Some(1)),
                "MalformedXML",
            ),
            (
                config("Enabled", Some("GOVERNANCE"), None, None),
                "MalformedXML",
            ),
            (
                config("Enabled", Some("GOVERNANCE"), Some(0), None),
                "InvalidRetentionPeriod",
            ),
            (
                config("Enabled", Some("GOVERNANCE"), None, Some(-1)),
                "InvalidRetentionPeriod",
            ),
        ] {
            assert_eq!(code(lock_configuration(Some(&bad))), want, "{bad:?}");
        }
        assert_eq!(code(lock_configuration(None)), "MalformedXML");
    }

    #[test]
    fn write_headers_come_together_and_point_to_the_future() {
        let now = 1_000_000;
        let later = timestamp(now + 5000);
        let gov = dto::ObjectLockMode::from("GOVERNANCE".to_string());
        let on = dto::ObjectLockLegalHoldStatus::from("ON".to_string());
        assert_eq!(write_headers(None, None, None, now).unwrap(), (None, false));
        assert_eq!(
            write_headers(Some(&gov), Some(&later), Some(&on), now).unwrap(),
            (
                Some(Retention {
                    mode: LockMode::Governance,
                    until_ms: now + 5000
                }),
                true
            )
        );
        assert_eq!(
            code(write_headers(Some(&gov), None, None, now)),
            "InvalidArgument"
        );
        assert_eq!(
            code(write_headers(None, Some(&later), None, now)),
            "InvalidArgument"
        );
        let past = timestamp(now - 1);
        assert_eq!(
            code(write_headers(Some(&gov), Some(&past), None, now)),
            "InvalidArgument"
        );
        let odd = dto::ObjectLockMode::from("governance".to_string());
        assert_eq!(
            code(write_headers(Some(&odd), Some(&later), None, now)),
            "InvalidArgument"
        );
        let maybe = dto::ObjectLockLegalHoldStatus::from("MAYBE".to_string());
        assert_eq!(
            code(write_headers(None, None, Some(&maybe), now)),
            "InvalidArgument"
        );
        assert_eq!(
            code(legal_hold(Some(&dto::ObjectLockLegalHold {
                status: Some(maybe)
            }))),
            "MalformedXML"
        );
        assert_eq!(code(legal_hold(None)), "MalformedXML");
    }

    #[test]
    fn a_retention_body_needs_a_mode_and_a_future_date() {
        let now = 1_000_000;
        let r = |mode: Option<&str>, ms: Option<u64>| dto::ObjectLockRetention {
            mode: mode.map(|m| dto::ObjectLockRetentionMode::from(m.to_string())),
            retain_until_date: ms.map(timestamp),
        };
        assert_eq!(
            retention(Some(&r(Some("COMPLIANCE"), Some(now + 1))), now).unwrap(),
            Some(Retention {
                mode: LockMode::Compliance,
                until_ms: now + 1
            })
        );
        assert_eq!(retention(Some(&r(None, None)), now).unwrap(), None);
        assert_eq!(
            code(retention(Some(&r(Some("abc"), Some(now + 1))), now)),
            "MalformedXML"
        );
        assert_eq!(
            code(retention(Some(&r(Some("GOVERNANCE"), None)), now)),
            "MalformedXML"
        );
        assert_eq!(
            code(retention(Some(&r(Some("GOVERNANCE"), Some(now))), now)),
            "InvalidArgument"
        );
        assert_eq!(code(retention(None, now)), "MalformedXML");
    }

    #[test]
    fn reads_show_a_lock_only_where_there_is_one() {
        let mut h = ObjectHeaders::default();
        assert_eq!(read_headers(&h), (None, None, None));
        h.legal_hold = true;
        let (m, d, s) = read_headers(&h);
        assert_eq!((m, d), (None, None));
        assert_eq!(s.unwrap().as_str(), "ON");
        h.retention = Some(Retention {
            mode: LockMode::Compliance,
            until_ms: 5000,
        });
        let (m, d, _) = read_headers(&h);
        assert_eq!(m.unwrap().as_str(), "COMPLIANCE");
        assert_eq!(d, Some(timestamp(5000)));
    }
}
