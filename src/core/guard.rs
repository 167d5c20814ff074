//! Two small state machines that keep nsguard from writing more than it must. Both are pure
//! (time is a parameter), so they are tested without a clock.
//!
//! - [`PendingWrites`]: after nsguard writes an object, the watch cache shows the old object until
//!   the watch event for the write arrives. A reconcile triggered meanwhile (by another object's
//!   event) would see stale drift and write again. Writes in flight are remembered until their
//!   watch event arrives, and drift on those objects is left for that event's reconcile. An event
//!   that only brings nsguard's own write back, with nothing left for it, needs no reconcile.
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
    entries: HashMap<ObjectKey, InFlight>,
}

/// One object's write (or two in a row) in flight.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    /// When the last write was made.
    at: Instant,
    /// The resourceVersion the last write produced, when known.
    version: Option<u64>,
    /// The version an earlier write of the same flight produced (the namespace's labels before its
    /// status), when known: its event is nsguard's own as well.
    earlier: Option<u64>,
    /// The write's event must bring a look: a reconcile found the write in flight and left the
    /// object to that event ([`PendingWrites::defers`]), or the write's version is not known to be
    /// nsguard's alone (`own` was false when it was recorded).
    deferred: bool,
}

impl PendingWrites {
    /// After this long, a pending write is forgotten even if no watch event arrived. A write that
    /// changed nothing is not recorded (it produces no event) unless its resourceVersion is not a
    /// number (never so with an etcd-backed API server), so this is only a safety net; it is
    /// long enough that a watch lagging under load does not make nsguard's own write look like
    /// someone else's drift.
    pub const EXPIRY: Duration = Duration::from_secs(30);

    pub fn record(&mut self, key: ObjectKey, now: Instant) {
        self.record_version(key, now, None, false);
    }

    /// Records a write that produced `version`: only a watch event at least that new clears it (two
    /// writes to one object in a row — the namespace's labels, then its status — are one pending
    /// write until the second shows). `own`: that version holds nothing but what nsguard decided
    /// on (its write was made on a version it knew, or every field is nsguard's); only then may
    /// its event pass without a look.
    pub fn record_version(&mut self, key: ObjectKey, now: Instant, version: Option<u64>, own: bool) {
        let before = self.entries.get(&key).copied();
        let earlier = before.and_then(|b| b.version).filter(|v| version.is_some_and(|w| *v < w));
        // A reconcile that left the object to the first write's event waits for this one's now.
        let deferred = !own || before.is_some_and(|b| b.deferred);
        self.entries.insert(key, InFlight { at: now, version, earlier, deferred });
    }

    /// The version nsguard's last write to `key` produced, while it is in flight.
    pub fn version(&self, key: &ObjectKey) -> Option<u64> {
        self.entries.get(key).and_then(|entry| entry.version)
    }

    /// A reconcile is about to read the caches: whatever is still in flight, it may see from before
    /// its write, so every such write's event brings a look after it.
    pub fn defer_all(&mut self) {
        for entry in self.entries.values_mut() {
            entry.deferred = true;
        }
    }

    /// A watch event for `key` arrived: the cache now reflects the write. `seen` is the event's
    /// resourceVersion as a number ([`crate::core::ids::revision`]; `None` when unknown): only a
    /// known version older than the write's leaves a versioned write pending.
    ///
    /// Returns whether the event is only nsguard's own write coming back: the object is exactly as
    /// one of nsguard's writes in flight left it (same resourceVersion: nobody wrote in between),
    /// and no reconcile left anything for this event. The reconcile that wrote it decided on
    /// everything else it could see; any other change brings its own event. Then no look follows.
    pub fn observed(&mut self, key: &ObjectKey, seen: Option<u64>, now: Instant) -> bool {
        let Some(entry) = self.entries.get(key).copied() else { return false };
        let own = !entry.deferred
            && now.duration_since(entry.at) < Self::EXPIRY
            && seen.is_some()
            && (seen == entry.version || seen == entry.earlier);
        let older = matches!((entry.version, seen), (Some(wrote), Some(seen)) if seen < wrote);
        if !older {
            self.forget(key);
        }
        own
    }

    fn forget(&mut self, key: &ObjectKey) {
        if self.entries.remove(key).is_some() && self.entries.is_empty() {
            // One map per namespace: give its memory back once nothing is in flight.
            self.entries = HashMap::new();
        }
    }

    /// The cache may not reflect nsguard's last write to `key` yet, so a reconcile leaves the
    /// object's drift to that write's watch event: asking marks the write so that its event is
    /// not taken for a mere echo ([`Self::observed`]) and brings the next look.
    pub fn defers(&mut self, key: &ObjectKey, now: Instant) -> bool {
        match self.entries.get_mut(key) {
            Some(entry) if now.duration_since(entry.at) < Self::EXPIRY => {
                entry.deferred = true;
                true
            }
            Some(_) => {
                self.forget(key);
                false
            }
            None => false,
        }
    }

    /// A write to `key` is in flight, for a reader that leaves nothing to its event (the
    /// finalizer keeper's count).
    pub fn in_flight(&self, key: &ObjectKey, now: Instant) -> bool {
        self.entries.get(key).is_some_and(|entry| now.duration_since(entry.at) < Self::EXPIRY)
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
