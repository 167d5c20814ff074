//! `plan` and `decide` with the rollout gate's hold and Pod Security exceptions: what is enforced,
//! what the condition says, what is announced, and when the namespace is looked at again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;

use super::tests::{NS, reasons};
use super::*;
use crate::core::crd::{HardeningProfileSpec, PodSecurityLevel};
use crate::core::gate::{Hold, evaluate};
use crate::core::model::{NamespaceView, Profile, ServiceAccountView};
use crate::core::plan::{Observed, plan};
use crate::core::selection::{Exclusions, govern};

const ENFORCE: &str = "pod-security.kubernetes.io/enforce";

fn profile(spec: serde_json::Value) -> Vec<Arc<Profile>> {
    let spec: HardeningProfileSpec = serde_json::from_value(spec).expect("spec");
    vec![Arc::new(Profile::from_spec("prod", spec))]
}

fn observed(now: Timestamp, hold: Option<Hold>) -> Observed {
    let default = ServiceAccountView {
        name: "default".into(),
        automount_token: Some(false),
        automount_owned: true,
        guarded: true,
        ..Default::default()
    };
    Observed { service_accounts: vec![Arc::new(default)], now, hold, ..Default::default() }
}

fn hold(now: Instant) -> Hold {
    Hold {
        target: Default::default(),
        level: PodSecurityLevel::Baseline,
        against: PodSecurityLevel::Restricted,
        evaluation: evaluate(&[
            "existing pods in namespace \"team-a\" violate the new PodSecurity enforce level \"restricted:latest\""
                .to_owned(),
            "web-0 (and 2 other pods): runAsNonRoot != true".to_owned(),
        ]),
        checked: now,
        recheck: Duration::from_secs(300),
        keep: None,
    }
}

fn namespace_labels(d: &Decision) -> Option<&std::collections::BTreeMap<String, String>> {
    d.writes.iter().find_map(|a| match a {
        Action::ApplyNamespace { labels, .. } => Some(labels),
        _ => None,
    })
}

fn condition(d: &Decision) -> Option<(String, String, String)> {
    d.reports.iter().find_map(|a| match a {
        Action::ApplyCondition(Some(c)) => {
            Some((c.status.clone(), c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default()))
        }
        _ => None,
    })
}

#[test]
fn a_held_namespace_enforces_the_held_level_audits_and_warns_at_the_target_and_says_why() {
    let now = Instant::now();
    let profiles = profile(serde_json::json!({}));
    let ns = NamespaceView { name: NS.into(), ..Default::default() };
    let p = plan(&ns, govern(&ns, &profiles, &Exclusions::default()), &observed(Timestamp::now(), Some(hold(now))));
    let mut memory = Memory::default();
    let d = decide(NS, &p, &mut memory, true, now);
    let labels = namespace_labels(&d).expect("the namespace is written");
    assert_eq!(labels[ENFORCE], "baseline");
    assert_eq!(labels["pod-security.kubernetes.io/audit"], "restricted");
    assert_eq!(labels["pod-security.kubernetes.io/warn"], "restricted");
    let (status, reason, message) = condition(&d).expect("a condition");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "EnforceHeld"));
    assert!(message.contains("pod web-0 (and 2 other pods): runAsNonRoot != true"), "{message}");
    assert!(reasons(&d).contains(&"EnforceHeld"), "{:?}", reasons(&d));
    // Looked at again when the re-check is due, not at the half-hour resync.
    assert_eq!(d.next, Next::After(Duration::from_secs(300)));
    d.succeeded(&p, &mut memory, now);
    // The same hold again: nothing new to say.
    let d = decide(NS, &p, &mut memory, true, now);
    assert!(!reasons(&d).contains(&"EnforceHeld"), "{:?}", reasons(&d));
}

#[test]
fn a_clean_recheck_promotes_the_namespace_to_the_target_once_with_an_event() {
    let now = Instant::now();
    let profiles = profile(serde_json::json!({}));
    let ns = NamespaceView { name: NS.into(), ..Default::default() };
    let governance = || govern(&ns, &profiles, &Exclusions::default());
    let held = plan(&ns, governance(), &observed(Timestamp::now(), Some(hold(now))));
    let mut memory = Memory::default();
    let d = decide(NS, &held, &mut memory, true, now);
    d.succeeded(&held, &mut memory, now);
    let promoted = plan(&ns, governance(), &observed(Timestamp::now(), None));
    let d = decide(NS, &promoted, &mut memory, true, now);
    assert_eq!(namespace_labels(&d).expect("written")[ENFORCE], "restricted");
    assert_eq!(reasons(&d), ["Hardened", "EnforcePromoted"]);
}

#[test]
fn an_exception_lowers_enforce_until_it_expires_then_the_target_returns_with_an_event() {
    let now = Instant::now();
    let today: Timestamp = "2026-11-23T12:00:00Z".parse().expect("time");
    let profiles = profile(serde_json::json!({"exceptions": [{
        "namespaces": ["team-*"],
        "podSecurity": {"enforce": {"level": "baseline"}},
        "expires": "2026-11-24T12:00:00Z",
        "reason": "SEC-42: migrate the legacy workers"
    }]}));
    let ns = NamespaceView { name: NS.into(), ..Default::default() };
    let governance = || govern(&ns, &profiles, &Exclusions::default());
    let p = plan(&ns, governance(), &observed(today, None));
    let mut memory = Memory::default();
    let d = decide(NS, &p, &mut memory, true, now);
    assert_eq!(namespace_labels(&d).expect("written")[ENFORCE], "baseline");
    assert_eq!(namespace_labels(&d).expect("written")["pod-security.kubernetes.io/audit"], "restricted");
    let (status, _, message) = condition(&d).expect("a condition");
    assert_eq!(status, "True");
    assert!(message.contains("exception 0 enforces baseline:latest until 2026-11-24T12:00:00Z (SEC-42"), "{message}");
    // Looked at again at the expiry.
    assert!(
        matches!(d.next, Next::After(w) if w >= Duration::from_secs(24 * 3600) && w < Duration::from_secs(24 * 3600 + 1)),
        "{:?}",
        d.next
    );
    // It ends within 7 days: a warning, once.
    assert!(message.ends_with("; expires within 7 days"), "{message}");
    assert!(reasons(&d).contains(&"ExceptionExpiring"), "{:?}", reasons(&d));
    d.succeeded(&p, &mut memory, now);
    assert!(!reasons(&decide(NS, &p, &mut memory, true, now)).contains(&"ExceptionExpiring"));

    let tomorrow: Timestamp = "2026-11-24T12:00:01Z".parse().expect("time");
    let mut at_baseline = ns.clone();
    at_baseline.labels = p.desired.as_ref().expect("desired").labels.clone().into();
    let p = plan(&at_baseline, govern(&at_baseline, &profiles, &Exclusions::default()), &observed(tomorrow, None));
    assert!(p.exception.is_none());
    let d = decide(NS, &p, &mut memory, true, now);
    assert_eq!(namespace_labels(&d).expect("written")[ENFORCE], "restricted");
    assert!(reasons(&d).contains(&"ExceptionExpired"), "{:?}", reasons(&d));
}
