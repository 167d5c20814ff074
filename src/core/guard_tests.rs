//! Unit tests of `guard`.

use super::*;

#[test]
fn pending_write_hides_until_observed_or_expired() {
    let mut pending = PendingWrites::default();
    let t0 = Instant::now();
    let key = ObjectKey::new("ServiceAccount", "a", "default");
    pending.record(key.clone(), t0);
    assert!(pending.is_pending(&key, t0 + Duration::from_secs(1)));
    pending.observed(&key, None);
    assert!(!pending.is_pending(&key, t0 + Duration::from_secs(1)));
    pending.record(key.clone(), t0);
    assert!(!pending.is_pending(&key, t0 + PendingWrites::EXPIRY));
    assert!(pending.is_empty());
}

#[test]
fn occasional_drift_is_always_corrected() {
    let mut limiter = CorrectionHistory::default();
    let t0 = Instant::now();
    for i in 0..20 {
        let now = t0 + Duration::from_secs(30 * i);
        assert_eq!(limiter.check(now), Correction::Allow);
        limiter.record(now);
    }
}

#[test]
fn a_writer_that_keeps_reverting_is_backed_off_exponentially() {
    let mut limiter = CorrectionHistory::default();
    let mut now = Instant::now();
    for _ in 0..CorrectionHistory::BURST {
        assert_eq!(limiter.check(now), Correction::Allow);
        limiter.record(now);
        now += Duration::from_millis(100);
    }
    assert!(!limiter.quiet(now));
    let mut delays = Vec::new();
    for _ in 0..4 {
        let Correction::BackOff(wait) = limiter.check(now) else { panic!("expected a back-off") };
        now += wait;
        delays.push(wait.as_secs_f64().round() as u64);
        assert_eq!(limiter.check(now), Correction::Allow);
        limiter.record(now);
    }
    assert_eq!(delays, [2, 4, 8, 16]);
    assert!(limiter.quiet(now + CorrectionHistory::WINDOW + Duration::from_secs(1)), "quiet once the window passes");
}

#[test]
fn back_off_is_capped() {
    let mut limiter = CorrectionHistory::default();
    let now = Instant::now();
    for i in 0..40 {
        limiter.record(now + Duration::from_millis(i));
    }
    let Correction::BackOff(wait) = limiter.check(now + Duration::from_secs(1)) else { panic!() };
    assert!(wait <= CorrectionHistory::MAX_DELAY);
}

#[test]
fn a_versioned_write_stays_pending_until_an_event_at_least_as_new() {
    let mut pending = PendingWrites::default();
    let t0 = Instant::now();
    let key = ObjectKey::new("Namespace", "", "shop");
    // The labels were written at 10, then the status at 12: the event of the label write (10)
    // must not clear the status write.
    pending.record_version(key.clone(), t0, Some(12));
    pending.observed(&key, Some(10));
    assert!(pending.is_pending(&key, t0));
    pending.observed(&key, Some(12));
    assert!(!pending.is_pending(&key, t0));
    // An unknown version (one that is not a number: resourceVersions are opaque in general)
    // clears it.
    pending.record_version(key.clone(), t0, Some(12));
    pending.observed(&key, None);
    assert!(!pending.is_pending(&key, t0));
}
