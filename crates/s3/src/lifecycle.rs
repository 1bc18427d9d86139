//! Bucket lifecycle at the S3 edge (S3 API reference,
//! PutBucketLifecycleConfiguration, GetBucketLifecycleConfiguration,
//! DeleteBucketLifecycle; User Guide, "Lifecycle configuration elements"):
//! it owns the configuration's XML form, S3's checks of it (each with S3's
//! error code) and the `x-amz-expiration` header of PUT, HEAD and GET.
//! Meta stores the configuration and its leader's worker applies it
//! (`tessera_proto::LifecycleConfig` holds the decisions).
//!
//! The header counts real days (S3's rounding to the next midnight UTC);
//! a shortened lifecycle day (`--lifecycle-day`, for tests) changes only
//! the worker's clock.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use s3s::dto::{self, Timestamp};
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use tessera_proto::{
    DAY_MS, Expiration, FilterForm, LifecycleConfig, LifecycleRule, MAX_LIFECYCLE_RULES,
    MAX_RULE_ID_CHARS, NoncurrentExpiration, ObjectInfo, Permission, RuleFilter, Transition,
};

use crate::gateway::{Gateway, timestamp, to_s3};

/// Storage classes a transition may name (S3 API reference, `Transition`).
const TRANSITION_CLASSES: &[&str] = &[
    "GLACIER",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "DEEP_ARCHIVE",
    "GLACIER_IR",
];

/// Most NewerNoncurrentVersions (S3 API reference,
/// `NoncurrentVersionExpiration`).
const MAX_NEWER_NONCURRENT: i32 = 100;

/// How long a gateway trusts a bucket's lifecycle configuration it read
/// for the `x-amz-expiration` header (a change made through this gateway
/// applies at once).
const CACHE_TTL: Duration = Duration::from_secs(1);
/// Buckets' configurations kept at most (a full cache starts afresh).
const CACHE_MAX: usize = 1024;

/// Configurations read from meta, by bucket, with when they were read.
pub(crate) type LifecycleCache =
    std::sync::Mutex<HashMap<String, (Instant, Option<Arc<LifecycleConfig>>)>>;

fn malformed(msg: impl Into<String>) -> S3Error {
    S3Error::with_message(S3ErrorCode::MalformedXML, msg.into())
}

fn invalid(msg: impl Into<String>) -> S3Error {
    S3Error::with_message(S3ErrorCode::InvalidArgument, msg.into())
}

fn ms_of(t: &Timestamp) -> S3Result<u64> {
    let ns = time::OffsetDateTime::from(t.clone()).unix_timestamp_nanos();
    u64::try_from(ns / 1_000_000).map_err(|_| invalid("a date before 1970"))
}

/// A count of days, which must be positive. Errors: `InvalidArgument`.
fn positive_days(n: i32, what: &str) -> S3Result<u32> {
    u32::try_from(n)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| invalid(format!("'{what}' must be a positive integer")))
}

/// A rule's date: midnight UTC (S3 API reference, `LifecycleExpiration`).
/// Errors: `InvalidArgument`.
fn midnight(t: &Timestamp) -> S3Result<u64> {
    let ms = ms_of(t)?;
    if ms % DAY_MS != 0 {
        return Err(invalid("'Date' must be at midnight GMT"));
    }
    Ok(ms)
}

fn tag_pair(t: &dto::Tag) -> S3Result<(String, String)> {
    match (&t.key, &t.value) {
        (Some(k), Some(v)) => Ok((k.clone(), v.clone())),
        _ => Err(malformed("a Tag needs a Key and a Value")),
    }
}

fn size(n: Option<i64>, what: &str) -> S3Result<Option<u64>> {
    n.map(|n| u64::try_from(n).map_err(|_| invalid(format!("{what} must not be negative"))))
        .transpose()
}

/// A rule's filter: the rule's own `Prefix` or a `Filter` with at most one
/// of `Prefix`, `Tag`, `ObjectSizeGreaterThan`, `ObjectSizeLessThan` and
/// `And` (else `MalformedXML`); both forms at once is `MalformedXML`.
fn filter(r: &dto::LifecycleRule) -> S3Result<RuleFilter> {
    let Some(f) = &r.filter else {
        return Ok(match &r.prefix {
            Some(p) => RuleFilter {
                form: FilterForm::RulePrefix,
                prefix: p.clone(),
                ..Default::default()
            },
            None => RuleFilter::default(),
        });
    };
    if r.prefix.is_some() {
        return Err(malformed(
            "a rule has either a Prefix or a Filter, not both",
        ));
    }
    let given = [
        f.prefix.is_some(),
        f.tag.is_some(),
        f.object_size_greater_than.is_some(),
        f.object_size_less_than.is_some(),
        f.and.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if given > 1 {
        return Err(malformed(
            "a Filter holds one condition; combine several with And",
        ));
    }
    let out = match &f.and {
        Some(and) => RuleFilter {
            form: FilterForm::And,
            prefix: and.prefix.clone().unwrap_or_default(),
            tags: and
                .tags
                .iter()
                .flatten()
                .map(tag_pair)
                .collect::<S3Result<_>>()?,
            size_greater_than: size(and.object_size_greater_than, "ObjectSizeGreaterThan")?,
            size_less_than: size(and.object_size_less_than, "ObjectSizeLessThan")?,
        },
        None => RuleFilter {
            form: if given == 0 {
                FilterForm::Empty
            } else {
                FilterForm::Single
            },
            prefix: f.prefix.clone().unwrap_or_default(),
            tags: f.tag.iter().map(tag_pair).collect::<S3Result<_>>()?,
            size_greater_than: size(f.object_size_greater_than, "ObjectSizeGreaterThan")?,
            size_less_than: size(f.object_size_less_than, "ObjectSizeLessThan")?,
        },
    };
    let keys: BTreeSet<&str> = out.tags.iter().map(|(k, _)| k.as_str()).collect();
    if keys.len() != out.tags.len() {
        return Err(invalid("a filter names a tag key twice"));
    }
    if let (Some(gt), Some(lt)) = (out.size_greater_than, out.size_less_than)
        && gt >= lt
    {
        return Err(invalid(
            "ObjectSizeGreaterThan must be less than ObjectSizeLessThan",
        ));
    }
    Ok(out)
}

/// A transition's storage class. Errors: `InvalidStorageClass`.
fn transition_class(c: Option<&dto::TransitionStorageClass>) -> S3Result<String> {
    let c = c.ok_or_else(|| malformed("a transition needs a StorageClass"))?;
    if !TRANSITION_CLASSES.contains(&c.as_str()) {
        return Err(s3_error!(
            InvalidStorageClass,
            "The storage class you specified is not valid"
        ));
    }
    Ok(c.as_str().to_string())
}

fn rule(r: &dto::LifecycleRule) -> S3Result<LifecycleRule> {
    let enabled = match r.status.as_str() {
        "Enabled" => true,
        "Disabled" => false,
        _ => return Err(malformed("Status must be Enabled or Disabled")),
    };
    let filter = filter(r)?;
    let expiration = r
        .expiration
        .as_ref()
        .map(|e| {
            let marker = e.expired_object_delete_marker == Some(true);
            let given = [
                e.days.is_some(),
                e.date.is_some(),
                e.expired_object_delete_marker.is_some(),
            ]
            .iter()
            .filter(|b| **b)
            .count();
            if given != 1 {
                return Err(malformed(
                    "an Expiration holds one of Days, Date and ExpiredObjectDeleteMarker",
                ));
            }
            if marker && !filter.tags.is_empty() {
                return Err(s3_error!(
                    InvalidRequest,
                    "ExpiredObjectDeleteMarker cannot be specified with object tags"
                ));
            }
            Ok(Expiration {
                days: e.days.map(|d| positive_days(d, "Days")).transpose()?,
                date_ms: e.date.as_ref().map(midnight).transpose()?,
                expired_delete_marker: marker,
            })
        })
        .transpose()?;
    let noncurrent_expiration = r
        .noncurrent_version_expiration
        .as_ref()
        .map(|n| {
            let days = n
                .noncurrent_days
                .ok_or_else(|| malformed("NoncurrentVersionExpiration needs NoncurrentDays"))?;
            let newer = n
                .newer_noncurrent_versions
                .map(|v| {
                    u32::try_from(v)
                        .ok()
                        .filter(|v| (1..=MAX_NEWER_NONCURRENT as u32).contains(v))
                        .ok_or_else(|| {
                            invalid(format!(
                                "NewerNoncurrentVersions must be 1 to {MAX_NEWER_NONCURRENT}"
                            ))
                        })
                })
                .transpose()?;
            Ok::<_, S3Error>(NoncurrentExpiration {
                days: positive_days(days, "NoncurrentDays")?,
                newer_versions: newer,
            })
        })
        .transpose()?;
    let abort_upload_days = r
        .abort_incomplete_multipart_upload
        .as_ref()
        .map(|a| {
            if !filter.tags.is_empty() {
                return Err(s3_error!(
                    InvalidRequest,
                    "AbortIncompleteMultipartUpload cannot be specified with object tags"
                ));
            }
            let d = a.days_after_initiation.ok_or_else(|| {
                malformed("AbortIncompleteMultipartUpload needs DaysAfterInitiation")
            })?;
            positive_days(d, "DaysAfterInitiation")
        })
        .transpose()?;
    let transitions = r
        .transitions
        .iter()
        .flatten()
        .map(|t| {
            if t.days.is_some() == t.date.is_some() {
                return Err(malformed("a Transition holds one of Days and Date"));
            }
            Ok(Transition {
                days: t
                    .days
                    .map(|d| u32::try_from(d).map_err(|_| invalid("'Days' must not be negative")))
                    .transpose()?,
                date_ms: t.date.as_ref().map(midnight).transpose()?,
                newer_versions: None,
                storage_class: transition_class(t.storage_class.as_ref())?,
            })
        })
        .collect::<S3Result<Vec<_>>>()?;
    let noncurrent_transitions = r
        .noncurrent_version_transitions
        .iter()
        .flatten()
        .map(|t| {
            let days = t
                .noncurrent_days
                .ok_or_else(|| malformed("a NoncurrentVersionTransition needs NoncurrentDays"))?;
            Ok::<_, S3Error>(Transition {
                days: Some(positive_days(days, "NoncurrentDays")?),
                date_ms: None,
                newer_versions: t
                    .newer_noncurrent_versions
                    .and_then(|v| u32::try_from(v).ok()),
                storage_class: transition_class(t.storage_class.as_ref())?,
            })
        })
        .collect::<S3Result<Vec<_>>>()?;
    if expiration.is_none()
        && noncurrent_expiration.is_none()
        && abort_upload_days.is_none()
        && transitions.is_empty()
        && noncurrent_transitions.is_empty()
    {
        return Err(s3_error!(
            InvalidRequest,
            "At least one action needs to be specified in a rule"
        ));
    }
    let id = r.id.clone().unwrap_or_default();
    if id.chars().count() > MAX_RULE_ID_CHARS {
        return Err(invalid(format!(
            "ID length should not exceed allowed limit of {MAX_RULE_ID_CHARS}"
        )));
    }
    Ok(LifecycleRule {
        id,
        enabled,
        filter,
        expiration,
        noncurrent_expiration,
        abort_upload_days,
        transitions,
        noncurrent_transitions,
    })
}

/// A PutBucketLifecycleConfiguration body, checked as S3 checks it: 1 to
/// 1,000 rules (`MalformedXML`), IDs unique and at most 255 characters
/// (`InvalidArgument`; a rule without one gets one), `Status` Enabled or
/// Disabled, day counts positive, dates at midnight UTC, at least one
/// action per rule.
pub(crate) fn lifecycle_configuration(
    c: Option<&dto::BucketLifecycleConfiguration>,
) -> S3Result<LifecycleConfig> {
    let c = c.ok_or_else(|| malformed("LifecycleConfiguration is missing"))?;
    if c.rules.is_empty() || c.rules.len() > MAX_LIFECYCLE_RULES {
        return Err(malformed(format!(
            "a configuration holds 1 to {MAX_LIFECYCLE_RULES} rules"
        )));
    }
    let mut rules = c.rules.iter().map(rule).collect::<S3Result<Vec<_>>>()?;
    let mut ids = BTreeSet::new();
    for r in &rules {
        if !r.id.is_empty() && !ids.insert(r.id.clone()) {
            return Err(invalid("Rule ID must be unique"));
        }
    }
    // S3 names rules given without an ID.
    let mut n = 0;
    for r in rules.iter_mut().filter(|r| r.id.is_empty()) {
        loop {
            n += 1;
            let id = format!("rule-{n}");
            if ids.insert(id.clone()) {
                r.id = id;
                break;
            }
        }
    }
    Ok(LifecycleConfig { rules })
}

fn tag_dto((k, v): &(String, String)) -> dto::Tag {
    dto::Tag {
        key: Some(k.clone()),
        value: Some(v.clone()),
    }
}

fn i32_of(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn size_dto(n: Option<u64>) -> Option<i64> {
    n.map(|n| i64::try_from(n).unwrap_or(i64::MAX))
}

/// The rules as GetBucketLifecycleConfiguration answers them, in the form
/// they were put.
pub(crate) fn lifecycle_rules_dto(c: &LifecycleConfig) -> Vec<dto::LifecycleRule> {
    c.rules
        .iter()
        .map(|r| {
            let f = &r.filter;
            let (prefix, filter) = match f.form {
                FilterForm::RulePrefix => (Some(f.prefix.clone()), None),
                FilterForm::Empty => (None, Some(dto::LifecycleRuleFilter::default())),
                FilterForm::Single => (
                    None,
                    Some(dto::LifecycleRuleFilter {
                        prefix: (!f.prefix.is_empty()
                            || (f.tags.is_empty()
                                && f.size_greater_than.is_none()
                                && f.size_less_than.is_none()))
                        .then(|| f.prefix.clone()),
                        tag: f.tags.first().map(tag_dto),
                        object_size_greater_than: size_dto(f.size_greater_than),
                        object_size_less_than: size_dto(f.size_less_than),
                        and: None,
                    }),
                ),
                FilterForm::And => (
                    None,
                    Some(dto::LifecycleRuleFilter {
                        and: Some(dto::LifecycleRuleAndOperator {
                            prefix: (!f.prefix.is_empty()).then(|| f.prefix.clone()),
                            tags: (!f.tags.is_empty())
                                .then(|| f.tags.iter().map(tag_dto).collect()),
                            object_size_greater_than: size_dto(f.size_greater_than),
                            object_size_less_than: size_dto(f.size_less_than),
                        }),
                        ..Default::default()
                    }),
                ),
            };
            let transition = |t: &Transition| dto::Transition {
                days: t.days.map(i32_of),
                date: t.date_ms.map(timestamp),
                storage_class: Some(dto::TransitionStorageClass::from(t.storage_class.clone())),
            };
            dto::LifecycleRule {
                id: Some(r.id.clone()),
                status: dto::ExpirationStatus::from(
                    if r.enabled { "Enabled" } else { "Disabled" }.to_string(),
                ),
                prefix,
                filter,
                expiration: r.expiration.map(|e| dto::LifecycleExpiration {
                    days: e.days.map(i32_of),
                    date: e.date_ms.map(timestamp),
                    expired_object_delete_marker: e.expired_delete_marker.then_some(true),
                }),
                noncurrent_version_expiration: r.noncurrent_expiration.map(|n| {
                    dto::NoncurrentVersionExpiration {
                        noncurrent_days: Some(i32_of(n.days)),
                        newer_noncurrent_versions: n.newer_versions.map(i32_of),
                    }
                }),
                abort_incomplete_multipart_upload: r.abort_upload_days.map(|d| {
                    dto::AbortIncompleteMultipartUpload {
                        days_after_initiation: Some(i32_of(d)),
                    }
                }),
                transitions: (!r.transitions.is_empty())
                    .then(|| r.transitions.iter().map(transition).collect()),
                noncurrent_version_transitions: (!r.noncurrent_transitions.is_empty()).then(|| {
                    r.noncurrent_transitions
                        .iter()
                        .map(|t| dto::NoncurrentVersionTransition {
                            noncurrent_days: t.days.map(i32_of),
                            newer_noncurrent_versions: t.newer_versions.map(i32_of),
                            storage_class: Some(dto::TransitionStorageClass::from(
                                t.storage_class.clone(),
                            )),
                        })
                        .collect()
                }),
            }
        })
        .collect()
}

/// The `x-amz-expiration` value for the current object `info` (S3 API
/// reference, PutObject, HeadObject: `expiry-date="DATE", rule-id="ID"`),
/// when a rule expires it: a Days rule's date is the write's time plus
/// that many days, rounded up to the next midnight UTC (S3 User Guide,
/// "Lifecycle rules: Based on an object's age").
pub(crate) fn expiration_header(c: &LifecycleConfig, info: &ObjectInfo) -> Option<String> {
    let (at, id) = c.current_expiry(
        &info.key,
        info.size,
        &info.headers.tags,
        info.mtime_ms,
        DAY_MS,
    )?;
    // Days rules end at a midnight already (`after_days`); dates are
    // midnights.
    let mut date = Vec::new();
    timestamp(at)
        .format(dto::TimestampFormat::HttpDate, &mut date)
        .ok()?;
    Some(format!(
        "expiry-date=\"{}\", rule-id=\"{id}\"",
        String::from_utf8_lossy(&date)
    ))
}

impl Gateway {
    /// PutBucketLifecycleConfiguration (bucket owner).
    pub(crate) async fn do_put_bucket_lifecycle_configuration(
        &self,
        req: S3Request<dto::PutBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<dto::PutBucketLifecycleConfigurationOutput>> {
        let bucket = &req.input.bucket;
        self.allow(&req, bucket, Permission::Owner).await?;
        let config = lifecycle_configuration(req.input.lifecycle_configuration.as_ref())?;
        self.client
            .set_lifecycle(bucket, Some(config))
            .await
            .map_err(to_s3)?;
        self.forget_lifecycle(bucket);
        Ok(S3Response::new(
            dto::PutBucketLifecycleConfigurationOutput::default(),
        ))
    }

    /// GetBucketLifecycleConfiguration: `NoSuchLifecycleConfiguration`
    /// (404) for a bucket without one.
    pub(crate) async fn do_get_bucket_lifecycle_configuration(
        &self,
        req: S3Request<dto::GetBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<dto::GetBucketLifecycleConfigurationOutput>> {
        let bucket = &req.input.bucket;
        self.allow(&req, bucket, Permission::Read).await?;
        let config = self
            .client
            .lifecycle(bucket)
            .await
            .map_err(to_s3)?
            .ok_or_else(|| {
                s3_error!(
                    NoSuchLifecycleConfiguration,
                    "The lifecycle configuration does not exist"
                )
            })?;
        Ok(S3Response::new(
            dto::GetBucketLifecycleConfigurationOutput {
                rules: Some(lifecycle_rules_dto(&config)),
                ..Default::default()
            },
        ))
    }

    /// DeleteBucketLifecycle (bucket owner): 204, with or without one.
    pub(crate) async fn do_delete_bucket_lifecycle(
        &self,
        req: S3Request<dto::DeleteBucketLifecycleInput>,
    ) -> S3Result<S3Response<dto::DeleteBucketLifecycleOutput>> {
        let bucket = &req.input.bucket;
        self.allow(&req, bucket, Permission::Owner).await?;
        self.client
            .set_lifecycle(bucket, None)
            .await
            .map_err(to_s3)?;
        self.forget_lifecycle(bucket);
        Ok(S3Response::new(dto::DeleteBucketLifecycleOutput::default()))
    }

    fn forget_lifecycle(&self, bucket: &str) {
        let mut cache = self.lifecycles.lock().unwrap_or_else(|e| e.into_inner());
        cache.remove(bucket);
    }

    /// `x-amz-expiration` for the current object `info` of `bucket`, from
    /// its configuration (read at most every [`CACHE_TTL`]); `None` when no
    /// rule expires it or the configuration cannot be read.
    pub(crate) async fn expiration_of(&self, bucket: &str, info: &ObjectInfo) -> Option<String> {
        let cached = {
            let cache = self.lifecycles.lock().unwrap_or_else(|e| e.into_inner());
            cache
                .get(bucket)
                .filter(|(at, _)| at.elapsed() < CACHE_TTL)
                .map(|(_, c)| c.clone())
        };
        let config = match cached {
            Some(c) => c,
            None => {
                let c = self.client.lifecycle(bucket).await.ok()?.map(Arc::new);
                let mut cache = self.lifecycles.lock().unwrap_or_else(|e| e.into_inner());
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
                cache.insert(bucket.to_string(), (Instant::now(), c.clone()));
                c
            }
        };
        expiration_header(config.as_deref()?, info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule_with(f: impl FnOnce(&mut dto::LifecycleRule)) -> dto::LifecycleRule {
        let mut r = dto::LifecycleRule {
            status: dto::ExpirationStatus::from("Enabled".to_string()),
            id: Some("r".into()),
            prefix: Some("logs/".into()),
            expiration: Some(dto::LifecycleExpiration {
                days: Some(1),
                ..Default::default()
            }),
            abort_incomplete_multipart_upload: None,
            filter: None,
            noncurrent_version_expiration: None,
            noncurrent_version_transitions: None,
            transitions: None,
        };
        f(&mut r);
        r
    }

    fn put(rules: Vec<dto::LifecycleRule>) -> S3Result<LifecycleConfig> {
        lifecycle_configuration(Some(&dto::BucketLifecycleConfiguration { rules }))
    }

    fn code(r: S3Result<LifecycleConfig>) -> String {
        r.unwrap_err().code().as_str().to_string()
    }

    #[test]
    fn configurations_round_trip_in_the_form_they_were_put() {
        let rules = vec![
            rule_with(|_| {}),
            rule_with(|r| {
                r.id = Some("f".into());
                r.prefix = None;
                r.filter = Some(dto::LifecycleRuleFilter {
                    and: Some(dto::LifecycleRuleAndOperator {
                        prefix: Some("a/".into()),
                        tags: Some(vec![dto::Tag {
                            key: Some("k".into()),
                            value: Some("v".into()),
                        }]),
                        object_size_greater_than: Some(10),
                        object_size_less_than: None,
                    }),
                    ..Default::default()
                });
                r.expiration = None;
                r.noncurrent_version_expiration = Some(dto::NoncurrentVersionExpiration {
                    noncurrent_days: Some(2),
                    newer_noncurrent_versions: Some(3),
                });
                r.transitions = Some(vec![dto::Transition {
                    days: Some(30),
                    date: None,
                    storage_class: Some(dto::TransitionStorageClass::from("GLACIER".to_string())),
                }]);
            }),
            rule_with(|r| {
                r.id = Some("e".into());
                r.prefix = None;
                r.filter = Some(dto::LifecycleRuleFilter::default());
                r.expiration = None;
                r.abort_incomplete_multipart_upload = Some(dto::AbortIncompleteMultipartUpload {
                    days_after_initiation: Some(2),
                });
            }),
        ];
        let c = put(rules.clone()).unwrap();
        assert_eq!(lifecycle_rules_dto(&c), rules);
        assert_eq!(c.rules[1].filter.tags, [("k".to_string(), "v".to_string())]);
    }

    #[test]
    fn bad_configurations_get_s3s_error_codes() {
        let dup = vec![rule_with(|_| {}), rule_with(|_| {})];
        assert_eq!(code(put(dup)), "InvalidArgument");
        assert_eq!(
            code(put(vec![rule_with(|r| r.id = Some("a".repeat(256)))])),
            "InvalidArgument"
        );
        assert_eq!(
            code(put(vec![rule_with(
                |r| r.status = dto::ExpirationStatus::from("enabled".to_string())
            )])),
            "MalformedXML"
        );
        assert_eq!(
            code(put(vec![rule_with(|r| r
                .expiration
                .as_mut()
                .unwrap()
                .days = Some(0))])),
            "InvalidArgument"
        );
        assert_eq!(
            code(put(vec![
                rule_with(|r| r.filter = Some(Default::default()))
            ])),
            "MalformedXML"
        );
        assert_eq!(
            code(put(vec![rule_with(|r| r.expiration = None)])),
            "InvalidRequest"
        );
        assert_eq!(code(put(vec![])), "MalformedXML");
        assert_eq!(
            code(put((0..1001)
                .map(|i| rule_with(|r| r.id = Some(i.to_string())))
                .collect())),
            "MalformedXML"
        );
        assert_eq!(
            code(put(vec![rule_with(|r| {
                r.expiration.as_mut().unwrap().days = None;
                r.expiration.as_mut().unwrap().date = Some(timestamp(DAY_MS + 1));
            })])),
            "InvalidArgument"
        );
        assert_eq!(
            code(put(vec![rule_with(|r| {
                r.transitions = Some(vec![dto::Transition {
                    days: Some(1),
                    date: None,
                    storage_class: Some(dto::TransitionStorageClass::from("COLD".to_string())),
                }]);
            })])),
            "InvalidStorageClass"
        );
        // Rules without an ID get one.
        let c = put(vec![rule_with(|r| r.id = None), rule_with(|r| r.id = None)]).unwrap();
        assert_eq!(c.rules[0].id, "rule-1");
        assert_eq!(c.rules[1].id, "rule-2");
    }

    #[test]
    fn the_expiration_header_rounds_up_to_midnight() {
        let c = put(vec![rule_with(|_| {})]).unwrap();
        let info = ObjectInfo {
            key: "logs/a".into(),
            size: 1,
            etag: String::new(),
            content_type: None,
            user_meta: Default::default(),
            headers: Default::default(),
            // 2024-01-01 10:00 UTC.
            mtime_ms: 1_704_103_200_000,
            data: tessera_proto::ObjectData::Inline(vec![]),
            parts: vec![],
            version_id: None,
            part_checksums: vec![],
        };
        assert_eq!(
            expiration_header(&c, &info).unwrap(),
            "expiry-date=\"Wed, 03 Jan 2024 00:00:00 GMT\", rule-id=\"r\""
        );
        let other = ObjectInfo {
            key: "x".into(),
            ..info
        };
        assert_eq!(expiration_header(&c, &other), None);
    }
}
