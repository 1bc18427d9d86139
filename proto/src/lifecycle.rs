//! Bucket lifecycle configurations (S3 API reference,
//! PutBucketLifecycleConfiguration; S3 User Guide, "Managing the lifecycle
//! of objects"): the rules as meta stores them, their limits, and the pure
//! decisions taken from them by the meta leader's lifecycle worker and by
//! the S3 gateway (`x-amz-expiration`): which rules apply to an object,
//! when a current object, a noncurrent version, a delete marker or a
//! multipart upload expires. Time comes in as Unix milliseconds, and so
//! does the length of a lifecycle day (a real day in production; tests
//! shorten it); nothing here reads a clock.

use serde::{Deserialize, Serialize};

use crate::model::TagSet;

/// Most rules in one configuration (User Guide, "Lifecycle configuration
/// elements": up to 1,000 rules).
pub const MAX_LIFECYCLE_RULES: usize = 1000;
/// Longest rule ID, in characters (`InvalidArgument` beyond).
pub const MAX_RULE_ID_CHARS: usize = 255;

/// A bucket's lifecycle configuration: its rules in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleConfig {
    pub rules: Vec<LifecycleRule>,
}

/// How a rule's filter was written, so that
/// GetBucketLifecycleConfiguration answers it in the same form.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum FilterForm {
    /// No filter at all, or an empty `<Filter/>`: every object.
    #[default]
    Empty,
    /// The rule's own `<Prefix>` (the older form).
    RulePrefix,
    /// `<Filter>` with one condition.
    Single,
    /// `<Filter><And>...</And></Filter>`.
    And,
}

/// Which objects a rule applies to: all conditions hold (key prefix,
/// every tag, size strictly between the bounds, in bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleFilter {
    pub form: FilterForm,
    pub prefix: String,
    pub tags: Vec<(String, String)>,
    pub size_greater_than: Option<u64>,
    pub size_less_than: Option<u64>,
}

impl RuleFilter {
    /// Whether an object with `key`, `size` bytes and `tags` matches.
    pub fn matches(&self, key: &str, size: u64, tags: &TagSet) -> bool {
        key.starts_with(&self.prefix)
            && self
                .tags
                .iter()
                .all(|(k, v)| tags.get(k).is_some_and(|t| t == v))
            && self.size_greater_than.is_none_or(|n| size > n)
            && self.size_less_than.is_none_or(|n| size < n)
    }
}

/// When current objects expire: `days` after they were written, or on
/// `date_ms` (midnight UTC); `expired_delete_marker` removes a delete
/// marker left with no noncurrent version under it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expiration {
    pub days: Option<u32>,
    pub date_ms: Option<u64>,
    pub expired_delete_marker: bool,
}

/// When noncurrent versions are removed: `days` after they became
/// noncurrent, keeping the `newer_versions` newest noncurrent ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoncurrentExpiration {
    pub days: u32,
    pub newer_versions: Option<u32>,
}

/// A transition to another storage class. Applied (the version
/// re-encoded) when the operator mapped the class to a policy; otherwise
/// stored and answered only (see ARCHITECTURE.md). `days` is
/// NoncurrentDays in a noncurrent transition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub days: Option<u32>,
    pub date_ms: Option<u64>,
    pub newer_versions: Option<u32>,
    pub storage_class: String,
}

/// One lifecycle rule (S3 API reference, `LifecycleRule`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleRule {
    pub id: String,
    pub enabled: bool,
    pub filter: RuleFilter,
    pub expiration: Option<Expiration>,
    pub noncurrent_expiration: Option<NoncurrentExpiration>,
    /// AbortIncompleteMultipartUpload's DaysAfterInitiation.
    pub abort_upload_days: Option<u32>,
    pub transitions: Vec<Transition>,
    pub noncurrent_transitions: Vec<Transition>,
}

/// One version of a key as the decisions see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyVersion {
    /// As S3 names it: the id, or `null`.
    pub version: String,
    pub delete_marker: bool,
    /// Bytes (0 for a marker).
    pub size: u64,
    pub tags: TagSet,
    /// When it was written (Unix ms).
    pub mtime_ms: u64,
    /// Its storage class; `None` is STANDARD.
    pub storage_class: Option<String>,
}

/// What the lifecycle worker does to a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyAction {
    /// The current object expires: an S3 DeleteObject without a version
    /// (it goes, or a delete marker is placed in a versioned bucket).
    ExpireCurrent,
    /// This version (or delete marker) is removed for good, unless Object
    /// Lock keeps it (meta decides).
    RemoveVersion(String),
    /// This version moves to `storage_class` (it is re-encoded if the
    /// operator mapped the class to a policy).
    Transition {
        version: String,
        storage_class: String,
    },
}

/// The class the transitions in `list` that are due at `now_ms` move a
/// version to, counted from `from_ms` (its mtime, or when it became
/// noncurrent): of the due ones, the one due last (the furthest along the
/// rule's schedule).
fn due_class(list: &[Transition], from_ms: u64, now_ms: u64, day_ms: u64) -> Option<(u64, &str)> {
    list.iter()
        .filter_map(|t| {
            let at = match (t.days, t.date_ms) {
                (Some(d), _) => after_days(from_ms, d, day_ms),
                (None, Some(date)) => date,
                (None, None) => return None,
            };
            (at <= now_ms).then_some((at, t.storage_class.as_str()))
        })
        .max_by_key(|(at, _)| *at)
}

/// `days` lifecycle days after `from_ms`, rounded up to the next day's
/// start ("midnight UTC" for real days: S3 User Guide, "Lifecycle rules:
/// Based on an object's age"), in Unix ms.
pub fn after_days(from_ms: u64, days: u32, day_ms: u64) -> u64 {
    let day_ms = day_ms.max(1);
    from_ms
        .saturating_add(u64::from(days).saturating_mul(day_ms))
        .div_ceil(day_ms)
        .saturating_mul(day_ms)
}

impl LifecycleConfig {
    fn enabled(&self) -> impl Iterator<Item = &LifecycleRule> {
        self.rules.iter().filter(|r| r.enabled)
    }

    /// When the current object (`key`, `size`, `tags`, written at
    /// `mtime_ms`) expires by the earliest of the enabled rules that
    /// match it, and that rule's ID; `None` when no rule expires it.
    /// Days count from `mtime_ms` in days of `day_ms` ([`after_days`]).
    pub fn current_expiry(
        &self,
        key: &str,
        size: u64,
        tags: &TagSet,
        mtime_ms: u64,
        day_ms: u64,
    ) -> Option<(u64, &str)> {
        self.enabled()
            .filter(|r| r.filter.matches(key, size, tags))
            .filter_map(|r| {
                let e = r.expiration?;
                let at = match (e.days, e.date_ms) {
                    (Some(d), _) => after_days(mtime_ms, d, day_ms),
                    (None, Some(date)) => date,
                    (None, None) => return None,
                };
                Some((at, r.id.as_str()))
            })
            .min_by_key(|(at, _)| *at)
    }

    /// What to do with one key whose versions are `versions`, newest
    /// first (the first is the current object or the newest delete
    /// marker), at `now_ms`: expire the current object; remove
    /// noncurrent versions past NoncurrentDays (counted from when the
    /// next newer version was written) beyond the NewerNoncurrentVersions
    /// kept; remove a delete marker left alone (ExpiredObjectDeleteMarker,
    /// or Expiration Days past the marker's age); move a version that
    /// stays to the storage class its due transitions (Transition for the
    /// current object, NoncurrentVersionTransition, counted like
    /// NoncurrentDays and beyond its NewerNoncurrentVersions, for the
    /// others) name, unless it is in that class already.
    pub fn key_actions(
        &self,
        key: &str,
        versions: &[KeyVersion],
        now_ms: u64,
        day_ms: u64,
    ) -> Vec<KeyAction> {
        let mut out = Vec::new();
        let Some(newest) = versions.first() else {
            return out;
        };
        if !newest.delete_marker
            && self
                .current_expiry(key, newest.size, &newest.tags, newest.mtime_ms, day_ms)
                .is_some_and(|(at, _)| at <= now_ms)
        {
            out.push(KeyAction::ExpireCurrent);
        } else if !newest.delete_marker {
            let due = self
                .enabled()
                .filter(|r| r.filter.matches(key, newest.size, &newest.tags))
                .filter_map(|r| due_class(&r.transitions, newest.mtime_ms, now_ms, day_ms))
                .max_by_key(|(at, _)| *at);
            out.extend(transition_to(newest, due));
        }
        for (i, v) in versions.iter().enumerate().skip(1) {
            let since = versions[i - 1].mtime_ms;
            let rank = (i - 1) as u64;
            let expired = self.enabled().any(|r| {
                r.filter.matches(key, v.size, &v.tags)
                    && r.noncurrent_expiration.is_some_and(|n| {
                        after_days(since, n.days, day_ms) <= now_ms
                            && rank >= n.newer_versions.map_or(0, u64::from)
                    })
            });
            if expired {
                out.push(KeyAction::RemoveVersion(v.version.clone()));
            } else if !v.delete_marker {
                let due = self
                    .enabled()
                    .filter(|r| r.filter.matches(key, v.size, &v.tags))
                    .flat_map(|r| {
                        r.noncurrent_transitions
                            .iter()
                            .filter(move |t| rank >= t.newer_versions.map_or(0, u64::from))
                    })
                    .filter_map(|t| due_class(std::slice::from_ref(t), since, now_ms, day_ms))
                    .max_by_key(|(at, _)| *at);
                out.extend(transition_to(v, due));
            }
        }
        if newest.delete_marker && versions.len() == 1 {
            let lone_expired = self.enabled().any(|r| {
                r.filter.matches(key, 0, &newest.tags)
                    && r.expiration.is_some_and(|e| {
                        e.expired_delete_marker
                            || e.days
                                .is_some_and(|d| after_days(newest.mtime_ms, d, day_ms) <= now_ms)
                    })
            });
            if lone_expired {
                out.push(KeyAction::RemoveVersion(newest.version.clone()));
            }
        }
        out
    }

    /// Whether a multipart upload of `key` begun at `initiated_ms` is to
    /// be aborted at `now_ms` (AbortIncompleteMultipartUpload; its rules
    /// filter on the prefix only).
    pub fn upload_expired(&self, key: &str, initiated_ms: u64, now_ms: u64, day_ms: u64) -> bool {
        self.enabled().any(|r| {
            key.starts_with(&r.filter.prefix)
                && r.abort_upload_days
                    .is_some_and(|d| after_days(initiated_ms, d, day_ms) <= now_ms)
        })
    }

    /// Why the configuration breaks the limits meta keeps (rule count, ID
    /// length and uniqueness, a rule with no action), as a message for
    /// people; `None` when it keeps them. The gateway checks S3's finer
    /// rules first.
    pub fn fault(&self) -> Option<String> {
        if self.rules.is_empty() || self.rules.len() > MAX_LIFECYCLE_RULES {
            return Some(format!(
                "{} lifecycle rules; 1 to {MAX_LIFECYCLE_RULES} are allowed",
                self.rules.len()
            ));
        }
        let mut ids = std::collections::BTreeSet::new();
        for r in &self.rules {
            if r.id.chars().count() > MAX_RULE_ID_CHARS {
                return Some(format!("a rule ID is over {MAX_RULE_ID_CHARS} characters"));
            }
            if !ids.insert(r.id.as_str()) {
                return Some(format!("rule ID {:?} is used twice", r.id));
            }
        }
        None
    }
}

/// A transition of `v` to the class `due` names, unless it is there.
fn transition_to(v: &KeyVersion, due: Option<(u64, &str)>) -> Option<KeyAction> {
    let (_, class) = due?;
    (v.storage_class.as_deref().unwrap_or("STANDARD") != class).then(|| KeyAction::Transition {
        version: v.version.clone(),
        storage_class: class.to_string(),
    })
}

/// The lifecycle worker's progress and totals, kept by meta so that a new
/// leader resumes a pass where the old one stopped, and shown in status
/// and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleProgress {
    /// When the pass in progress began (Unix ms); `None` between passes.
    pub pass_started_ms: Option<u64>,
    /// The bucket the pass is in, and the last key it finished there.
    pub bucket: Option<String>,
    pub after_key: Option<String>,
    /// Passes finished since the cluster began, and when the last ended.
    pub passes: u64,
    pub last_pass_ms: Option<u64>,
    /// Current objects expired (deleted or given a delete marker).
    pub expired_objects: u64,
    /// Noncurrent versions and delete markers removed.
    pub removed_versions: u64,
    /// Multipart uploads aborted.
    pub aborted_uploads: u64,
    /// Removals refused because Object Lock keeps the version.
    pub kept_locked: u64,
    /// Versions queued for re-encoding into a mapped storage class.
    pub queued_transitions: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 1000;

    fn rule(id: &str, prefix: &str) -> LifecycleRule {
        LifecycleRule {
            id: id.into(),
            enabled: true,
            filter: RuleFilter {
                form: FilterForm::RulePrefix,
                prefix: prefix.into(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn v(version: &str, mtime_ms: u64) -> KeyVersion {
        KeyVersion {
            version: version.into(),
            delete_marker: false,
            size: 10,
            tags: TagSet::new(),
            mtime_ms,
            storage_class: None,
        }
    }

    fn marker(version: &str, mtime_ms: u64) -> KeyVersion {
        KeyVersion {
            delete_marker: true,
            size: 0,
            ..v(version, mtime_ms)
        }
    }

    #[test]
    fn days_end_at_the_start_of_a_day() {
        assert_eq!(after_days(0, 1, DAY), DAY);
        assert_eq!(after_days(1, 1, DAY), 2 * DAY);
        assert_eq!(after_days(DAY - 1, 2, DAY), 3 * DAY);
        assert_eq!(after_days(5, 0, DAY), DAY);
    }

    #[test]
    fn filters_match_prefix_tags_and_sizes_together() {
        let f = RuleFilter {
            form: FilterForm::And,
            prefix: "logs/".into(),
            tags: vec![("k".into(), "v".into())],
            size_greater_than: Some(10),
            size_less_than: Some(100),
        };
        let tags: TagSet = [("k".to_string(), "v".to_string())].into();
        assert!(f.matches("logs/a", 50, &tags));
        assert!(!f.matches("other/a", 50, &tags));
        assert!(!f.matches("logs/a", 50, &TagSet::new()));
        assert!(!f.matches("logs/a", 10, &tags), "strictly greater");
        assert!(!f.matches("logs/a", 100, &tags), "strictly less");
        assert!(RuleFilter::default().matches("anything", 0, &TagSet::new()));
    }

    #[test]
    fn current_objects_expire_by_the_earliest_matching_enabled_rule() {
        let mut a = rule("a", "x/");
        a.expiration = Some(Expiration {
            days: Some(3),
            ..Default::default()
        });
        let mut b = rule("b", "");
        b.expiration = Some(Expiration {
            date_ms: Some(2500),
            ..Default::default()
        });
        let mut off = rule("off", "");
        off.enabled = false;
        off.expiration = Some(Expiration {
            days: Some(0),
            ..Default::default()
        });
        let c = LifecycleConfig {
            rules: vec![a, b, off],
        };
        let none = TagSet::new();
        assert_eq!(c.current_expiry("x/k", 1, &none, 0, DAY), Some((2500, "b")));
        assert_eq!(c.current_expiry("x/k", 1, &none, 0, 100), Some((300, "a")));
        assert_eq!(c.key_actions("x/k", &[v("v1", 0)], 299, 100), vec![]);
        assert_eq!(
            c.key_actions("x/k", &[v("v1", 0)], 300, 100),
            vec![KeyAction::ExpireCurrent]
        );
    }

    #[test]
    fn noncurrent_versions_expire_from_when_they_were_replaced_keeping_the_newest() {
        let mut r = rule("n", "");
        r.noncurrent_expiration = Some(NoncurrentExpiration {
            days: 2,
            newer_versions: Some(1),
        });
        let c = LifecycleConfig { rules: vec![r] };
        // v4 current (written at 10 days), v3 replaced at day 10, v2 at day
        // 5, v1 at day 1.
        let versions = [
            v("v4", 10 * DAY),
            v("v3", 5 * DAY),
            v("v2", DAY),
            v("v1", 0),
        ];
        // Day 7: v2 (noncurrent since day 5) and v1 (since day 1) are past
        // two days; v3 (since day 10) is not, and is the newest kept.
        assert_eq!(
            c.key_actions("k", &versions, 7 * DAY, DAY),
            vec![
                KeyAction::RemoveVersion("v2".into()),
                KeyAction::RemoveVersion("v1".into())
            ]
        );
        // Day 20: v3 is past too but is the one newer version kept.
        assert_eq!(c.key_actions("k", &versions, 20 * DAY, DAY).len(), 2);
    }

    #[test]
    fn a_lone_delete_marker_expires_when_a_rule_says_so() {
        let mut dm = rule("dm", "");
        dm.expiration = Some(Expiration {
            expired_delete_marker: true,
            ..Default::default()
        });
        let c = LifecycleConfig { rules: vec![dm] };
        assert_eq!(
            c.key_actions("k", &[marker("m", 5)], 5, DAY),
            vec![KeyAction::RemoveVersion("m".into())]
        );
        // Not while a version remains under it.
        assert_eq!(
            c.key_actions("k", &[marker("m", 5), v("v", 0)], 5, DAY),
            vec![]
        );
        // Expiration Days removes it once it is that old.
        let mut days = rule("d", "");
        days.expiration = Some(Expiration {
            days: Some(5),
            ..Default::default()
        });
        let c = LifecycleConfig { rules: vec![days] };
        assert_eq!(c.key_actions("k", &[marker("m", 0)], 4 * DAY, DAY), vec![]);
        assert_eq!(
            c.key_actions("k", &[marker("m", 0)], 5 * DAY, DAY),
            vec![KeyAction::RemoveVersion("m".into())]
        );
    }

    #[test]
    fn uploads_are_aborted_after_their_days_under_a_matching_prefix() {
        let mut r = rule("mp", "tmp/");
        r.abort_upload_days = Some(2);
        let c = LifecycleConfig { rules: vec![r] };
        assert!(!c.upload_expired("tmp/a", 0, 2 * DAY - 1, DAY));
        assert!(c.upload_expired("tmp/a", 0, 2 * DAY, DAY));
        assert!(!c.upload_expired("keep/a", 0, 9 * DAY, DAY));
    }

    #[test]
    fn configurations_keep_their_limits() {
        assert!(LifecycleConfig::default().fault().is_some());
        let c = LifecycleConfig {
            rules: vec![rule("a", ""), rule("a", "x")],
        };
        assert!(c.fault().unwrap().contains("twice"));
        let c = LifecycleConfig {
            rules: vec![rule(&"i".repeat(256), "")],
        };
        assert!(c.fault().is_some());
        let c = LifecycleConfig {
            rules: (0..1001).map(|i| rule(&i.to_string(), "")).collect(),
        };
        assert!(c.fault().is_some());
        let c = LifecycleConfig {
            rules: vec![rule(&"i".repeat(255), "")],
        };
        assert_eq!(c.fault(), None);
    }

    #[test]
    fn due_transitions_move_versions_that_stay() {
        let mut r = rule("t", "logs/");
        r.transitions = vec![
            Transition {
                days: Some(1),
                storage_class: "STANDARD_IA".into(),
                ..Default::default()
            },
            Transition {
                days: Some(3),
                storage_class: "GLACIER_IR".into(),
                ..Default::default()
            },
        ];
        r.noncurrent_transitions = vec![Transition {
            days: Some(1),
            newer_versions: Some(1),
            storage_class: "STANDARD_IA".into(),
            ..Default::default()
        }];
        let c = LifecycleConfig { rules: vec![r] };
        let to = |version: &str, class: &str| KeyAction::Transition {
            version: version.into(),
            storage_class: class.into(),
        };
        let one = [v("a", 0)];
        assert_eq!(c.key_actions("logs/x", &one, DAY / 2, DAY), vec![]);
        assert_eq!(
            c.key_actions("logs/x", &one, DAY, DAY),
            vec![to("a", "STANDARD_IA")]
        );
        assert_eq!(
            c.key_actions("logs/x", &one, 3 * DAY, DAY),
            vec![to("a", "GLACIER_IR")]
        );
        assert_eq!(c.key_actions("other", &one, 3 * DAY, DAY), vec![]);
        let moved = [KeyVersion {
            storage_class: Some("GLACIER_IR".into()),
            ..v("a", 0)
        }];
        assert_eq!(c.key_actions("logs/x", &moved, 5 * DAY, DAY), vec![]);
        // Noncurrent: counted from when the next newer version came, the
        // newest noncurrent one kept where it is.
        let vs = [v("c", 2 * DAY), v("b", DAY), v("a", 0)];
        assert_eq!(
            c.key_actions("logs/x", &vs, 3 * DAY, DAY),
            vec![to("c", "STANDARD_IA"), to("a", "STANDARD_IA")]
        );
    }
}
