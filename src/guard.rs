//! Two small state machines that keep nsguard from writing more than it must. Both are pure
//! (time is a parameter), so they are tested without a clock.
//!
//! - [`PendingWrites`]: after nsguard writes an object, the watch cache shows the old object until
//!   the watch event for the write arrives. A reconcile triggered meanwhile (by another object's
//!   event) would see stale drift and write again. Writes in flight are remembered until their
//!   watch event arrives, and drift on those objects is left for that event's reconcile.
//! - [`CorrectionLimiter`]: another writer that keeps reverting nsguard's fields must not cause a
//!   hot loop. Corrections of one namespace are counted in a sliding window; past a burst, nsguard
//!   backs off exponentially and says so.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

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
    entries: HashMap<ObjectKey, Instant>,
}

impl PendingWrites {
    /// After this long, a pending write is forgotten even if no watch event arrived (a write that
    /// changed nothing produces none).
    pub const EXPIRY: Duration = Duration::from_secs(10);

    pub fn record(&mut self, key: ObjectKey, now: Instant) {
        self.entries.insert(key, now);
    }

    /// A watch event for `key` arrived: the cache now reflects the write.
    pub fn observed(&mut self, key: &ObjectKey) {
        self.entries.remove(key);
    }

    /// The cache may not reflect nsguard's last write to `key` yet.
    pub fn is_pending(&mut self, key: &ObjectKey, now: Instant) -> bool {
        match self.entries.get(key) {
            Some(at) if now.duration_since(*at) < Self::EXPIRY => true,
            Some(_) => {
                self.entries.remove(key);
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

/// Decision of the [`CorrectionLimiter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Correction {
    /// Correct the drift now.
    Allow,
    /// Another writer keeps reverting nsguard: wait this long before correcting again.
    BackOff(Duration),
}

/// Counts drift corrections per namespace and backs off when they come too often.
#[derive(Debug, Default)]
pub struct CorrectionLimiter {
    history: HashMap<String, VecDeque<Instant>>,
}

impl CorrectionLimiter {
    /// Corrections allowed in [`Self::WINDOW`] before backing off.
    pub const BURST: usize = 5;
    pub const WINDOW: Duration = Duration::from_secs(60);
    pub const MAX_DELAY: Duration = Duration::from_secs(300);

    /// May `namespace` be corrected now?
    pub fn check(&mut self, namespace: &str, now: Instant) -> Correction {
        let Some(history) = self.history.get_mut(namespace) else {
            return Correction::Allow;
        };
        // Forget corrections older than the window, but keep enough history to size the delay.
        while history.front().is_some_and(|t| now.duration_since(*t) > Self::WINDOW + Self::MAX_DELAY) {
            history.pop_front();
        }
        let recent = history.iter().filter(|t| now.duration_since(**t) <= Self::WINDOW).count();
        if recent < Self::BURST {
            return Correction::Allow;
        }
        // 2 s after the burst, doubling with each further correction, at most MAX_DELAY.
        let excess = u32::try_from(history.len().saturating_sub(Self::BURST)).unwrap_or(u32::MAX).min(16);
        let delay = Duration::from_secs(2u64.saturating_pow(excess + 1)).min(Self::MAX_DELAY);
        let last = history.back().copied().unwrap_or(now);
        let since = now.duration_since(last);
        if since >= delay { Correction::Allow } else { Correction::BackOff(delay - since) }
    }

    /// Records a correction of `namespace`.
    pub fn record(&mut self, namespace: &str, now: Instant) {
        self.history.entry(namespace.to_owned()).or_default().push_back(now);
    }

    /// Forgets a namespace (deleted, or quiet again).
    pub fn forget(&mut self, namespace: &str) {
        self.history.remove(namespace);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_write_hides_until_observed_or_expired() {
        let mut pending = PendingWrites::default();
        let t0 = Instant::now();
        let key = ObjectKey::new("ServiceAccount", "a", "default");
        pending.record(key.clone(), t0);
        assert!(pending.is_pending(&key, t0 + Duration::from_secs(1)));
        pending.observed(&key);
        assert!(!pending.is_pending(&key, t0 + Duration::from_secs(1)));
        pending.record(key.clone(), t0);
        assert!(!pending.is_pending(&key, t0 + PendingWrites::EXPIRY));
        assert!(pending.is_empty());
    }

    #[test]
    fn occasional_drift_is_always_corrected() {
        let mut limiter = CorrectionLimiter::default();
        let t0 = Instant::now();
        for i in 0..20 {
            let now = t0 + Duration::from_secs(30 * i);
            assert_eq!(limiter.check("a", now), Correction::Allow);
            limiter.record("a", now);
        }
    }

    #[test]
    fn a_writer_that_keeps_reverting_is_backed_off_exponentially() {
        let mut limiter = CorrectionLimiter::default();
        let mut now = Instant::now();
        for _ in 0..CorrectionLimiter::BURST {
            assert_eq!(limiter.check("a", now), Correction::Allow);
            limiter.record("a", now);
            now += Duration::from_millis(100);
        }
        let mut delays = Vec::new();
        for _ in 0..4 {
            let Correction::BackOff(wait) = limiter.check("a", now) else { panic!("expected a back-off") };
            now += wait;
            delays.push(wait.as_secs_f64().round() as u64);
            assert_eq!(limiter.check("a", now), Correction::Allow);
            limiter.record("a", now);
        }
        assert_eq!(delays, [2, 4, 8, 16]);
        // Other namespaces are unaffected.
        assert_eq!(limiter.check("b", now), Correction::Allow);
    }

    #[test]
    fn back_off_is_capped() {
        let mut limiter = CorrectionLimiter::default();
        let now = Instant::now();
        for i in 0..40 {
            limiter.record("a", now + Duration::from_millis(i));
        }
        let Correction::BackOff(wait) = limiter.check("a", now + Duration::from_secs(1)) else { panic!() };
        assert!(wait <= CorrectionLimiter::MAX_DELAY);
    }
}
