//! Unit tests of `guard`.

use super::*;

#[test]
fn pending_write_hides_until_observed_or_expired() {
    let mut pending = PendingWrites::default();
    let t0 = Instant::now();
    let key = ObjectKey::new("ServiceAccount", "a", "default");
    pending.record(key.clone(), t0);
    assert!(pending.defers(&key, t0 + Duration::from_secs(1)));
    pending.observed(&key, None, t0);
    assert!(!pending.defers(&key, t0 + Duration::from_secs(1)));
    pending.record(key.clone(), t0);
    assert!(!pending.defers(&key, t0 + PendingWrites::EXPIRY));
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
    pending.record_version(key.clone(), t0, Some(12), true);
    pending.observed(&key, Some(10), t0);
    assert!(pending.defers(&key, t0));
    pending.observed(&key, Some(12), t0);
    assert!(!pending.defers(&key, t0));
    // An unknown version (one that is not a number: resourceVersions are opaque in general)
    // clears it.
    pending.record_version(key.clone(), t0, Some(12), true);
    pending.observed(&key, None, t0);
    assert!(!pending.defers(&key, t0));
}

#[test]
fn the_event_of_nsguards_own_write_needs_no_look() {
    let mut pending = PendingWrites::default();
    let t0 = Instant::now();
    let key = ObjectKey::new("NetworkPolicy", "shop", "nsguard-default-deny");
    pending.record_version(key.clone(), t0, Some(20), true);
    assert_eq!(pending.version(&key), Some(20));
    assert!(pending.observed(&key, Some(20), t0), "the object exactly as nsguard's write left it");
    assert!(pending.is_empty());
    // No write in flight: any event is someone's news.
    assert!(!pending.observed(&key, Some(20), t0));
}

#[test]
fn a_version_not_known_to_be_nsguards_alone_brings_a_look() {
    let mut pending = PendingWrites::default();
    let t0 = Instant::now();
    let key = ObjectKey::new("ServiceAccount", "shop", "default");
    // An apply that answered with a version nsguard did not write on (a no-op over someone's
    // change the cache has not shown yet): recorded, but its event is news.
    pending.record_version(key.clone(), t0, Some(20), false);
    assert!(pending.in_flight(&key, t0));
    assert!(!pending.observed(&key, Some(20), t0));
    assert!(pending.is_empty());
}

#[test]
fn an_event_nsguard_did_not_write_brings_a_look() {
    let mut pending = PendingWrites::default();
    let t0 = Instant::now();
    let key = ObjectKey::new("ServiceAccount", "shop", "default");
    // Someone wrote after nsguard (25 > 20): the event shows their change too.
    pending.record_version(key.clone(), t0, Some(20), true);
    assert!(!pending.observed(&key, Some(25), t0));
    assert!(pending.is_empty());
    // A write whose version is unknown is never taken for an echo.
    pending.record(key.clone(), t0);
    assert!(!pending.observed(&key, Some(20), t0));
    pending.record_version(key.clone(), t0, Some(20), true);
    assert!(!pending.observed(&key, None, t0));
    // Nor is an older event (someone's, before nsguard's write): it stays pending.
    pending.record_version(key.clone(), t0, Some(20), true);
    assert!(!pending.observed(&key, Some(15), t0));
    assert!(pending.in_flight(&key, t0));
}

#[test]
fn a_write_a_reconcile_deferred_to_brings_a_look_when_it_shows() {
    let mut pending = PendingWrites::default();
    let t0 = Instant::now();
    let key = ObjectKey::new("Namespace", "", "shop");
    pending.record_version(key.clone(), t0, Some(20), true);
    // Another reconcile saw stale drift on the namespace and left it to this write's event.
    assert!(pending.defers(&key, t0));
    assert!(!pending.observed(&key, Some(20), t0), "the deferred look must follow");
    // Asking only whether a write is in flight leaves nothing to the event.
    pending.record_version(key.clone(), t0, Some(30), true);
    assert!(pending.in_flight(&key, t0));
    assert!(pending.observed(&key, Some(30), t0));
    // A reconcile about to read the caches marks every write in flight.
    let account = ObjectKey::new("ServiceAccount", "shop", "default");
    pending.record_version(key.clone(), t0, Some(40), true);
    pending.record_version(account.clone(), t0, Some(41), true);
    pending.defer_all();
    assert!(!pending.observed(&key, Some(40), t0));
    assert!(!pending.observed(&account, Some(41), t0));
}

#[test]
fn an_expired_write_is_neither_pending_nor_an_echo() {
    let mut pending = PendingWrites::default();
    let t0 = Instant::now();
    let key = ObjectKey::new("Report", "shop", "nsguard");
    pending.record_version(key.clone(), t0, Some(40), true);
    assert!(!pending.in_flight(&key, t0 + PendingWrites::EXPIRY));
    // Not asked about before its event: the event is still not taken for an echo.
    assert!(!pending.observed(&key, Some(40), t0 + PendingWrites::EXPIRY));
    assert!(pending.is_empty());
    pending.record_version(key.clone(), t0, Some(40), true);
    assert!(!pending.defers(&key, t0 + PendingWrites::EXPIRY));
    assert!(pending.is_empty());
}

#[test]
fn two_writes_in_a_row_are_both_nsguards_own() {
    let mut pending = PendingWrites::default();
    let t0 = Instant::now();
    let key = ObjectKey::new("Namespace", "", "shop");
    // The labels at 10, then the condition at 12, both recorded before either event arrives.
    pending.record_version(key.clone(), t0, Some(10), true);
    pending.record_version(key.clone(), t0, Some(12), true);
    assert_eq!(pending.version(&key), Some(12), "the condition is written on the labels' version");
    assert!(pending.observed(&key, Some(10), t0), "the labels' event");
    assert!(pending.in_flight(&key, t0), "the condition is still in flight");
    assert!(pending.observed(&key, Some(12), t0), "the condition's event");
    assert!(pending.is_empty());
    // Someone's write between the two (11) is news; the reconcile it brings defers to the
    // condition's write, whose event then brings a look too.
    pending.record_version(key.clone(), t0, Some(10), true);
    pending.record_version(key.clone(), t0, Some(12), true);
    assert!(pending.observed(&key, Some(10), t0));
    assert!(!pending.observed(&key, Some(11), t0));
    assert!(pending.defers(&key, t0));
    assert!(!pending.observed(&key, Some(12), t0));
    // A deferral on the first write carries over to the second; so does a first write not
    // known to be nsguard's alone.
    pending.record_version(key.clone(), t0, Some(10), true);
    assert!(pending.defers(&key, t0));
    pending.record_version(key.clone(), t0, Some(12), true);
    assert!(!pending.observed(&key, Some(12), t0));
    pending.record_version(key.clone(), t0, Some(10), false);
    pending.record_version(key.clone(), t0, Some(12), true);
    assert!(!pending.observed(&key, Some(12), t0));
}
