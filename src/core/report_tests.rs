//! Unit tests of `report`: the checks, their CIS controls, and when the Report is written.

use std::sync::Arc;

use super::*;
use crate::core::crd::HardeningProfileSpec;
use crate::core::model::{NamespaceView, Profile};
use crate::core::plan::{Observed, plan};
use crate::core::selection::{Exclusions, govern};
use crate::core::status::NamespaceResult;

fn want(spec: serde_json::Value) -> Desired {
    let spec: HardeningProfileSpec = serde_json::from_value(spec).expect("spec");
    crate::core::desired::desired("prod", &spec, "shop")
}

fn verdicts(checks: &[Check]) -> Vec<(&'static str, &'static str)> {
    checks.iter().map(|c| (c.rule, c.verdict.as_str())).collect()
}

#[test]
fn a_compliant_namespace_passes_every_enabled_check_with_its_cis_controls() {
    let checks = checks(&want(serde_json::json!({})), &[]);
    assert_eq!(
        verdicts(&checks),
        [
            ("pod-security-enforce", "pass"),
            ("pod-security-audit", "pass"),
            ("pod-security-warn", "pass"),
            ("network-default-deny-ingress", "pass"),
            ("network-default-deny-egress", "pass"),
            ("network-dns-egress", "pass"),
            ("serviceaccount-token-automount", "pass"),
        ]
    );
    let cis = |rule| checks.iter().find(|c| c.rule == rule).map(|c| c.cis.clone()).unwrap_or_default();
    assert!(cis("pod-security-enforce").starts_with("5.2.1,5.2.2"), "{}", cis("pod-security-enforce"));
    assert_eq!(cis("network-default-deny-ingress"), "5.3.2");
    assert_eq!(cis("serviceaccount-token-automount"), "5.1.5,5.1.6");
}

#[test]
fn standing_drift_fails_its_check_and_disabled_checks_are_skipped() {
    let want = want(serde_json::json!({
        "networkPolicy": {"defaultDeny": {"ingress": true, "egress": false}, "allowDNS": {"enabled": false}},
        "serviceAccounts": {"disableTokenAutomount": false},
    }));
    let drift = [
        Drift::Label {
            key: "pod-security.kubernetes.io/enforce".into(),
            expected: "restricted".into(),
            actual: Some("privileged".into()),
        },
        Drift::NetworkPolicyMissing { name: DEFAULT_DENY_POLICY.into() },
    ];
    let checks = checks(&want, &drift);
    assert_eq!(
        verdicts(&checks),
        [
            ("pod-security-enforce", "fail"),
            ("pod-security-audit", "pass"),
            ("pod-security-warn", "pass"),
            ("network-default-deny-ingress", "fail"),
            ("network-default-deny-egress", "skip"),
            ("network-dns-egress", "skip"),
            ("serviceaccount-token-automount", "skip"),
        ]
    );
    assert!(checks[0].message.contains("was \"privileged\""), "{}", checks[0].message);
}

fn planned(mode: &str, seen: Seen) -> (Plan, NamespaceResult) {
    let spec: HardeningProfileSpec = serde_json::from_value(serde_json::json!({"mode": mode})).expect("spec");
    let profiles = [Arc::new(Profile::from_spec("prod", spec))];
    let ns = NamespaceView { name: "shop".into(), uid: Some("ns-uid".into()), ..Default::default() };
    let observed = Observed { report: seen, ..Default::default() };
    let plan = plan(&ns, govern(&ns, &profiles, &Exclusions::default()), &observed);
    let result = NamespaceResult {
        profile: Some("prod".into()),
        overridden: vec![],
        outcome: plan.outcome,
        detail: String::new(),
        failed: false,
        fighting: false,
        rivals: vec![],
        taken: vec![],
        held: None,
        exception: None,
    };
    (plan, result)
}

#[test]
fn the_report_is_written_when_it_differs_and_never_when_reports_are_unavailable() {
    let (p, r) = planned("Audit", Seen::Absent);
    let uid = "ns-uid".into();
    let content = desired("shop", Some(&uid), &p, &r).expect("governed").expect("a report");
    let body = content.body();
    assert_eq!(
        body["scope"],
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "name": "shop", "uid": "ns-uid"})
    );
    assert_eq!(body["source"], "nsguard");
    assert_eq!(
        body["summary"]["fail"], 6,
        "Audit-mode drift fails (no ServiceAccount yet passes): {}",
        body["summary"]
    );
    assert!(body["results"].as_array().expect("results").iter().all(|r| r["policy"] == "prod"));
    // Absent: applied. Present and equal (keys in any order): nothing. Unavailable: nothing.
    assert_eq!(
        write(&Seen::Absent, Some(Some(content.clone()))),
        Some(crate::core::plan::Action::ApplyReport(Box::new(body.clone())))
    );
    let reordered: serde_json::Value = serde_json::from_str(&body.to_string()).expect("json");
    let same = Seen::Present { fingerprint: fingerprint(&reordered), uid: None };
    assert_eq!(write(&same, Some(Some(content.clone()))), None);
    assert_eq!(write(&Seen::Unavailable, Some(Some(content))), None);
    // Released: deleted when present.
    let present = Seen::Present { fingerprint: 1, uid: Some("r".into()) };
    assert_eq!(write(&present, None), Some(crate::core::plan::Action::DeleteReport { uid: Some("r".into()) }));
    assert_eq!(write(&Seen::Absent, None), None);
    // An invalid or unseen profile leaves the last report as it is.
    assert_eq!(write(&present, Some(None)), None);
}

#[test]
fn a_change_of_content_changes_the_fingerprint_and_metadata_does_not() {
    let (p, r) = planned("Enforce", Seen::Absent);
    let compliant = NamespaceResult { outcome: Outcome::Compliant, ..r.clone() };
    let a = desired("shop", None, &p, &compliant).expect("governed").expect("a report").body();
    let b = desired("shop", None, &p, &r).expect("governed").expect("a report").body();
    assert_ne!(fingerprint(&a), fingerprint(&b), "converging (drift stands) differs from compliant");
    let mut relabelled = a.clone();
    relabelled["metadata"]["resourceVersion"] = "7".into();
    assert_eq!(fingerprint(&a), fingerprint(&relabelled));
}

#[test]
fn a_reports_fingerprint_from_its_parts_is_that_of_its_body_as_the_api_server_returns_it() {
    let uid = crate::core::ids::Uid::new("5f0c6a2e-3b1d-4c8e-9f7a-2d4b6c8e0a1f");
    let text_uid = crate::core::ids::Uid::new("not-a-uuid");
    for mode in ["Audit", "Enforce"] {
        let (p, r) = planned(mode, Seen::Absent);
        let compliant = NamespaceResult { outcome: Outcome::Compliant, ..r.clone() };
        let held = NamespaceResult { held: Some("held: 2 pods would violate restricted".into()), ..compliant.clone() };
        let excepted = NamespaceResult { exception: Some("exception until 2027-01-01".into()), ..compliant.clone() };
        for result in [&r, &compliant, &held, &excepted] {
            for uid in [None, Some(&uid), Some(&text_uid)] {
                let content = desired("shop", uid, &p, result).expect("governed").expect("a report");
                let body = content.body();
                // As the API server returns it: parsed back, with metadata and status of its own.
                let mut returned: serde_json::Value = serde_json::from_str(&body.to_string()).expect("json");
                returned["metadata"]["resourceVersion"] = "12".into();
                assert_eq!(content.fingerprint(), fingerprint(&returned), "{mode}, {result:?}, {uid:?}");
                assert_eq!(body["summary"]["fail"], content.count(super::Verdict::Fail));
            }
        }
    }
    // Any change of a part changes it.
    let (p, r) = planned("Audit", Seen::Absent);
    let base = desired("shop", None, &p, &r).expect("governed").expect("a report");
    let mut renamed = base.clone();
    renamed.namespace = "shop2";
    let mut reworded = base.clone();
    reworded.checks[0].message.push('.');
    let mut enforced = base.clone();
    enforced.mode = crate::core::crd::Mode::Enforce;
    for changed in [renamed, reworded, enforced] {
        assert_ne!(base.fingerprint(), changed.fingerprint(), "{changed:?}");
        assert_eq!(changed.fingerprint(), fingerprint(&changed.body()));
    }
}
