//! Two small state machines that keep nsguard from writing more than it must. Both are pure
//! (time is a parameter), so they are tested without a clock.
//!
//! - [`PendingWrites`]: after nsguard writes an object, the watch cache shows the old object until
//!   the watch event for the write arrives. A reconcile triggered meanwhile (by another object's
//!   event) would see stale drift and write again. Writes in flight are remembered until their
//!   watch event arrives, and drift on those objects is left for that event's reconcile.
//! - [`CorrectionHistory`]: another writer that keeps reverting nsguard's fields must not cause a
//!   hot loop. Corrections of one namespace are counted in a sliding window; past a burst, nsguard
//!   backs off exponentially and says so.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use kube::ResourceExt;

use crate::core::plan::Action;
use crate::core::report;

/// Identifies an object nsguard writes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(kind: &'static str, namespace: &str, name: &str) -> Self {
        Self { kind, namespace: namespace.to_owned(), name: name.to_owned() }
    }
}

/// Writes whose watch events have not arrived yet.
#[derive(Debug, Default)]
pub struct PendingWrites {
    /// When each write was made, and the resourceVersion it produced (when known).
    entries: HashMap<ObjectKey, (Instant, Option<u64>)>,
}

impl PendingWrites {
    /// After this long, a pending write is forgotten even if no watch event arrived. A write that
    /// changed nothing is not recorded (it produces no event) unless its resourceVersion is not a
    /// number (never so with an etcd-backed API server), so this is only a safety net; it is
    /// long enough that a watch lagging under load does not make nsguard's own write look like
    /// someone else's drift.
    pub const EXPIRY: Duration = Duration::from_secs(30);

    pub fn record(&mut self, key: ObjectKey, now: Instant) {
        self.entries.insert(key, (now, None));
    }

    /// Records a write that produced `version`: only a watch event at least that new clears it (two
    /// writes to one object in a row — the namespace's labels, then its status — are one pending
    /// write until the second shows).
    pub fn record_version(&mut self, key: ObjectKey, now: Instant, version: Option<u64>) {
        self.entries.insert(key, (now, version));
    }

    /// A watch event for `key` arrived: the cache now reflects the write. `version` is the event's
    /// resourceVersion as a number ([`crate::core::ids::revision`]; `None` when unknown): only a
    /// known version older than the write's leaves a versioned write pending.
    pub fn observed(&mut self, key: &ObjectKey, seen: Option<u64>) {
        let older = matches!((self.entries.get(key), seen), (Some((_, Some(wrote))), Some(seen)) if seen < *wrote);
        if !older && self.entries.remove(key).is_some() && self.entries.is_empty() {
            // One map per namespace: give its memory back once nothing is in flight.
            self.entries = HashMap::new();
        }
    }

    /// The cache may not reflect nsguard's last write to `key` yet.
    pub fn is_pending(&mut self, key: &ObjectKey, now: Instant) -> bool {
        match self.entries.get(key) {
            Some((at, _)) if now.duration_since(*at) < Self::EXPIRY => true,
            Some(_) => {
                self.observed(key, None);
                false
            }
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Decision of the [`CorrectionHistory`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Correction {
    /// Correct the drift now.
    Allow,
    /// Another writer keeps reverting nsguard: wait this long before correcting again.
    BackOff(Duration),
}

/// The drift corrections of one namespace, to back off when they come too often.
#[derive(Debug, Default)]
pub struct CorrectionHistory {
    history: VecDeque<Instant>,
}

impl CorrectionHistory {
    /// Corrections allowed in [`Self::WINDOW`] before backing off.
    pub const BURST: usize = 5;
    pub const WINDOW: Duration = Duration::from_secs(60);
    pub const MAX_DELAY: Duration = Duration::from_secs(300);

    /// May the namespace be corrected now?
    pub fn check(&mut self, now: Instant) -> Correction {
        // Forget corrections older than the window, but keep enough history to size the delay.
        while self.history.front().is_some_and(|t| now.duration_since(*t) > Self::WINDOW + Self::MAX_DELAY) {
            self.history.pop_front();
        }
        if self.quiet(now) {
            return Correction::Allow;
        }
        // 2 s after the burst, doubling with each further correction, at most MAX_DELAY.
        let excess = u32::try_from(self.history.len().saturating_sub(Self::BURST)).unwrap_or(u32::MAX).min(16);
        let delay = Duration::from_secs(2u64.saturating_pow(excess + 1)).min(Self::MAX_DELAY);
        let last = self.history.back().copied().unwrap_or(now);
        let since = now.duration_since(last);
        if since >= delay { Correction::Allow } else { Correction::BackOff(delay - since) }
    }

    /// Fewer corrections than a burst in the last window: no writer is fighting nsguard.
    pub fn quiet(&self, now: Instant) -> bool {
        self.history.iter().filter(|t| now.duration_since(**t) <= Self::WINDOW).count() < Self::BURST
    }

    /// Records a correction.
    pub fn record(&mut self, now: Instant) {
        self.history.push_back(now);
    }
}

/// The object an action writes.
pub fn action_key(namespace: &str, action: &Action) -> ObjectKey {
    match action {
        Action::ApplyNamespace { .. } => ObjectKey::new("Namespace", "", namespace),
        Action::ApplyNetworkPolicy(np) => ObjectKey::new("NetworkPolicy", namespace, &np.name_any()),
        Action::DeleteNetworkPolicy { name, .. } => ObjectKey::new("NetworkPolicy", namespace, name),
        Action::DisableAutomount { name, .. }
        | Action::ReleaseAutomount { name, .. }
        | Action::UnguardAccount { name, .. } => ObjectKey::new("ServiceAccount", namespace, name),
        Action::ApplyCondition(_) => ObjectKey::new("Namespace", "", namespace),
        Action::ApplyReport(_) | Action::DeleteReport { .. } => ObjectKey::new("Report", namespace, report::NAME),
    }
}

#[cfg(test)]
#[path = "guard_tests.rs"]
mod tests;
