//! The lifecycle worker (S3 User Guide, "Managing the lifecycle of
//! objects"), on the meta leader only (`while_leading`, as upkeep): passes
//! over every bucket that has a lifecycle configuration, in name order,
//! and over its keys in order, deciding with the pure
//! `LifecycleConfig::key_actions` and `upload_expired` on a snapshot and
//! applying each decision as its own command (`Expire`, `AbortUpload`),
//! which meta applies only if the version is still the one decided on and
//! Object Lock does not keep it. A transition to a storage class the
//! operator mapped to a policy is queued (`QueueTransition`) for the
//! repairer to re-encode; one to an unmapped class is left alone.
//!
//! Rate-limited (`MetaConfig::lifecycle_rate` commands per second) and
//! resumable: the pass's position (bucket, last key finished) is recorded
//! in meta after every page, so a new leader carries on where the old one
//! stopped. Totals are kept in the same record, shown by `tessera status`
//! and the metrics.

use std::sync::Arc;
use std::time::Duration;

use tessera_proto::{
    KeyAction, KeyVersion, LifecycleConfig, LifecycleProgress, ObjectVersion, TagSet,
    TransitionItem, VersionListEntry,
};
use tracing::{debug, info, warn};

use super::{Meta, now_ms};
use crate::MetaError;
use crate::state::prelude::*;
use crate::state::{Applied, Command, Refused};

/// Versions read from a bucket per page (the position is recorded after
/// each).
const PAGE: usize = 1000;

/// How long the worker waits between passes: a fraction of a lifecycle
/// day, at least 250 ms and at most an hour.
pub(super) fn pass_interval(day: Duration) -> Duration {
    (day / 24).clamp(Duration::from_millis(250), Duration::from_secs(3600))
}

pub(super) async fn run(meta: Arc<Meta>) {
    let every = pass_interval(meta.config.lifecycle_day);
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = meta.lifecycle_pass().await {
            warn!(error = %e, "lifecycle pass failed; it resumes at the next");
        }
    }
}

/// One key's versions as the listing gives them, newest first.
struct KeyGroup {
    key: String,
    versions: Vec<KeyVersion>,
}

impl Meta {
    /// Runs (or resumes) one lifecycle pass to its end.
    pub async fn lifecycle_pass(&self) -> Result<(), MetaError> {
        let mut p = self.sm().read().lifecycle_progress()?;
        if p.pass_started_ms.is_none() {
            p.pass_started_ms = Some(now_ms());
            p.bucket = None;
            p.after_key = None;
        }
        let buckets = self.sm().read().lifecycle_buckets(None)?;
        for bucket in buckets {
            if p.bucket.as_ref().is_some_and(|b| bucket < *b) {
                continue;
            }
            if p.bucket.as_ref() != Some(&bucket) {
                p.bucket = Some(bucket.clone());
                p.after_key = None;
            }
            self.lifecycle_bucket(&bucket, &mut p).await?;
        }
        p.passes += 1;
        p.last_pass_ms = Some(now_ms());
        p.pass_started_ms = None;
        p.bucket = None;
        p.after_key = None;
        self.record(&p).await?;
        Ok(())
    }

    async fn record(&self, p: &LifecycleProgress) -> Result<(), MetaError> {
        let cmd = Command::SetLifecycleProgress {
            progress: p.clone(),
        };
        self.committer
            .propose(cmd, None)
            .await?
            .map_err(|r| MetaError::Internal(format!("recording lifecycle progress: {r}")))?;
        Ok(())
    }

    /// Waits as long as one command may take under the rate limit.
    async fn pace(&self) {
        let rate = self.config.lifecycle_rate.max(1);
        tokio::time::sleep(Duration::from_secs(1) / rate).await;
    }

    /// Applies `bucket`'s configuration: stale uploads (at the start of
    /// the bucket), then every key after `p.after_key`.
    async fn lifecycle_bucket(
        &self,
        bucket: &str,
        p: &mut LifecycleProgress,
    ) -> Result<(), MetaError> {
        let day_ms = self.config.lifecycle_day.as_millis().max(1) as u64;
        let Some(config) = self.sm().read().lifecycle(bucket)? else {
            return Ok(());
        };
        if p.after_key.is_none() {
            let uploads = self.sm().read().uploads(Some(bucket))?;
            for u in uploads {
                if config.upload_expired(&u.key, u.initiated_ms, now_ms(), day_ms) {
                    let cmd = Command::AbortUpload {
                        upload: u.id.clone(),
                        at_ms: now_ms(),
                    };
                    if self.committer.propose(cmd, None).await?.is_ok() {
                        info!(bucket, key = %u.key, upload = %u.id, "lifecycle aborted a stale multipart upload");
                        p.aborted_uploads += 1;
                    }
                    self.pace().await;
                }
            }
        }
        let mut key_marker = p.after_key.clone();
        let mut version_marker: Option<String> = None;
        let mut group: Option<KeyGroup> = None;
        loop {
            let page = {
                let sm = self.sm();
                let r = sm.read();
                match r.list_versions(
                    bucket,
                    "",
                    None,
                    key_marker.as_deref(),
                    version_marker.as_deref(),
                    PAGE,
                ) {
                    Ok(page) => {
                        let mut rows = Vec::with_capacity(page.entries.len());
                        for e in &page.entries {
                            let VersionListEntry::Version(v) = e else {
                                continue;
                            };
                            let label = tessera_proto::version_label(&v.version_id).to_string();
                            // Tags and class live in the version itself.
                            let (tags, storage_class) = if v.delete_marker {
                                (TagSet::new(), None)
                            } else {
                                match r.version(bucket, &v.key, Some(label.as_str())) {
                                    Ok(ObjectVersion::Object(o)) => {
                                        (o.headers.tags, o.headers.storage_class)
                                    }
                                    _ => (TagSet::new(), None),
                                }
                            };
                            rows.push((
                                v.key.clone(),
                                KeyVersion {
                                    version: label,
                                    delete_marker: v.delete_marker,
                                    size: v.size,
                                    tags,
                                    mtime_ms: v.mtime_ms,
                                    storage_class,
                                },
                            ));
                        }
                        (rows, page.next_key, page.next_version)
                    }
                    // The bucket went meanwhile.
                    Err(MetaError::Refused(r)) if r.kind == Refused::NoSuchBucket => {
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                }
            };
            let (rows, next_key, next_version) = page;
            for (key, v) in rows {
                if group.as_ref().is_some_and(|g| g.key != key)
                    && let Some(done) = group.take()
                {
                    self.apply_key(bucket, &config, done, day_ms, p).await?;
                }
                group
                    .get_or_insert_with(|| KeyGroup {
                        key,
                        versions: Vec::new(),
                    })
                    .versions
                    .push(v);
            }
            if next_key.is_none() {
                break;
            }
            key_marker = next_key;
            version_marker = next_version;
            self.record(p).await?;
        }
        if let Some(done) = group.take() {
            self.apply_key(bucket, &config, done, day_ms, p).await?;
        }
        self.record(p).await?;
        Ok(())
    }

    /// Decides on one key and applies the decisions, then records it as
    /// the last key finished.
    async fn apply_key(
        &self,
        bucket: &str,
        config: &LifecycleConfig,
        g: KeyGroup,
        day_ms: u64,
        p: &mut LifecycleProgress,
    ) -> Result<(), MetaError> {
        for action in config.key_actions(&g.key, &g.versions, now_ms(), day_ms) {
            let (version, current) = match &action {
                KeyAction::ExpireCurrent => (g.versions[0].version.clone(), true),
                KeyAction::RemoveVersion(v) => (v.clone(), false),
                KeyAction::Transition {
                    version,
                    storage_class,
                } => {
                    self.queue_transition(bucket, &g, version, storage_class, p)
                        .await?;
                    continue;
                }
            };
            let Some(mtime_ms) = g
                .versions
                .iter()
                .find(|v| v.version == version)
                .map(|v| v.mtime_ms)
            else {
                continue;
            };
            let cmd = Command::Expire {
                bucket: bucket.to_string(),
                key: g.key.clone(),
                version: version.clone(),
                mtime_ms,
                current,
                at_ms: now_ms(),
            };
            match self.committer.propose(cmd, None).await? {
                Ok(Applied::Removed(r)) if r.existed => {
                    debug!(bucket, key = %g.key, version, current, "lifecycle expired");
                    if current {
                        p.expired_objects += 1;
                    } else {
                        p.removed_versions += 1;
                    }
                }
                Ok(_) => {}
                Err(r) if r.kind == Refused::ObjectLocked => {
                    debug!(bucket, key = %g.key, version, "lifecycle kept a locked version");
                    p.kept_locked += 1;
                }
                Err(r) => {
                    debug!(bucket, key = %g.key, version, refusal = %r, "lifecycle expiry refused")
                }
            }
            self.pace().await;
        }
        p.after_key = Some(g.key);
        Ok(())
    }

    /// Queues `version` of `g`'s key for re-encoding into `class`, if the
    /// operator mapped the class to a policy and it is not queued yet.
    async fn queue_transition(
        &self,
        bucket: &str,
        g: &KeyGroup,
        version: &str,
        class: &str,
        p: &mut LifecycleProgress,
    ) -> Result<(), MetaError> {
        let Some(v) = g.versions.iter().find(|v| v.version == version) else {
            return Ok(());
        };
        let policy = {
            let sm = self.sm();
            let r = sm.read();
            if r.transition_queued(bucket, &g.key, version)? {
                return Ok(());
            }
            r.storage_class(class)?
        };
        // An unmapped class (GLACIER, say): stored and answered, not applied.
        let Some(policy) = policy else {
            return Ok(());
        };
        let item = TransitionItem {
            bucket: bucket.to_string(),
            key: g.key.clone(),
            version: version.to_string(),
            mtime_ms: v.mtime_ms,
            storage_class: class.to_string(),
            policy,
        };
        if self
            .committer
            .propose(Command::QueueTransition { item }, None)
            .await?
            .is_ok()
        {
            debug!(bucket, key = %g.key, version, class, "lifecycle queued a transition");
            p.queued_transitions += 1;
        }
        self.pace().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_come_a_few_times_a_lifecycle_day() {
        assert_eq!(
            pass_interval(Duration::from_secs(86_400)),
            Duration::from_secs(3600)
        );
        assert_eq!(
            pass_interval(Duration::from_secs(2)),
            Duration::from_millis(250)
        );
        assert_eq!(
            pass_interval(Duration::from_secs(48)),
            Duration::from_secs(2)
        );
    }
}
