//! The reconciler against the local control plane, running with the `config/rbac` identity.

mod support;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use nsguard::core::crd::HardeningProfileStatus;
use serde_json::{Value, json};
use support::operator::{Operator, profile_resource};
use support::*;

const ENFORCE: &str = "pod-security.kubernetes.io/enforce";

fn psa_labels(level: &str) -> BTreeMap<String, String> {
    ["enforce", "audit", "warn"]
        .iter()
        .flat_map(|m| {
            [
                (format!("pod-security.kubernetes.io/{m}"), level.to_owned()),
                (format!("pod-security.kubernetes.io/{m}-version"), "latest".to_owned()),
            ]
        })
        .collect()
}

async fn namespace(client: &Client, name: &str) -> Namespace {
    Api::<Namespace>::all(client.clone()).get(name).await.expect("namespace")
}

fn has_labels(ns: &Namespace, want: &BTreeMap<String, String>) -> bool {
    let labels = ns.labels();
    want.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn no_psa_labels(ns: &Namespace) -> bool {
    !ns.labels().keys().any(|k| k.starts_with("pod-security.kubernetes.io/"))
}

async fn wait_namespace(client: &Client, name: &str, what: &str, check: impl Fn(&Namespace) -> bool) -> Namespace {
    eventually(&format!("namespace {name}: {what}"), || async {
        let ns = namespace(client, name).await;
        check(&ns).then_some(ns)
    })
    .await
}

async fn policy(client: &Client, ns: &str, name: &str) -> Option<NetworkPolicy> {
    Api::<NetworkPolicy>::namespaced(client.clone(), ns).get_opt(name).await.expect("get policy")
}

fn policy_spec(np: &NetworkPolicy) -> Value {
    serde_json::to_value(np.spec.as_ref()).expect("spec")
}

fn deny_spec() -> Value {
    json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
}

fn dns_spec() -> Value {
    json!({
        "podSelector": {},
        "policyTypes": ["Egress"],
        "egress": [{
            "to": [{
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}
            }],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
        }]
    })
}

async fn wait_policy(client: &Client, ns: &str, name: &str, spec: &Value) -> NetworkPolicy {
    eventually(&format!("NetworkPolicy {ns}/{name} with the expected rules"), || async {
        policy(client, ns, name).await.filter(|np| &policy_spec(np) == spec)
    })
    .await
}

async fn wait_policy_gone(client: &Client, ns: &str, name: &str) {
    eventually(&format!("NetworkPolicy {ns}/{name} to be gone"), || async {
        policy(client, ns, name).await.is_none().then_some(())
    })
    .await;
}

async fn automount(client: &Client, ns: &str, sa: &str) -> Option<Option<bool>> {
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .get_opt(sa)
        .await
        .expect("get sa")
        .map(|s| s.automount_service_account_token)
}

async fn wait_automount(client: &Client, ns: &str, sa: &str, want: Option<bool>) {
    eventually(&format!("ServiceAccount {ns}/{sa} automount {want:?}"), || async {
        (automount(client, ns, sa).await == Some(want)).then_some(())
    })
    .await;
}

async fn create_sa(client: &Client, ns: &str, name: &str) {
    let sa =
        ServiceAccount { metadata: ObjectMeta { name: Some(name.into()), ..Default::default() }, ..Default::default() };
    Api::<ServiceAccount>::namespaced(client.clone(), ns).create(&PostParams::default(), &sa).await.expect("create sa");
}

async fn wait_event(client: &Client, ns: &str, reason: &str, note_contains: &str) -> Event {
    eventually(&format!("a {reason} event for namespace {ns} mentioning {note_contains:?}"), || async {
        nsguard_events(client, ns).await.into_iter().find(|e| {
            e.reason.as_deref() == Some(reason) && e.note.as_deref().is_some_and(|n| n.contains(note_contains))
        })
    })
    .await
}

async fn status(client: &Client, profile: &str) -> Option<HardeningProfileStatus> {
    let obj = Api::<DynamicObject>::all_with(client.clone(), &profile_resource()).get(profile).await.expect("profile");
    obj.data.get("status").and_then(|s| serde_json::from_value(s.clone()).ok())
}

fn condition<'a>(
    s: &'a HardeningProfileStatus,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    s.conditions.iter().find(|c| c.type_ == type_)
}

async fn wait_status(
    client: &Client,
    profile: &str,
    what: &str,
    check: impl Fn(&HardeningProfileStatus) -> bool,
) -> HardeningProfileStatus {
    eventually(&format!("status of {profile}: {what}"), || async { status(client, profile).await.filter(|s| check(s)) })
        .await
}

/// Sets a namespace label as another tool would (its own field manager).
async fn label_as(client: &Client, ns: &str, manager: &str, key: &str, value: Option<&str>) {
    let patch = json!({"metadata": {"labels": {key: value}}});
    Api::<Namespace>::all(client.clone())
        .patch(ns, &PatchParams { field_manager: Some(manager.into()), ..Default::default() }, &Patch::Merge(&patch))
        .await
        .expect("label namespace");
}

/// Waits until `ns` is hardened by the default profile: labels, both policies, `default` SA.
async fn wait_hardened(client: &Client, ns: &str, profile: &str) {
    wait_namespace(client, ns, "PSA labels and profile annotation", |n| {
        has_labels(n, &psa_labels("restricted"))
            && n.annotations().get("nsguard.io/profile").map(String::as_str) == Some(profile)
    })
    .await;
    wait_policy(client, ns, "nsguard-default-deny", &deny_spec()).await;
    wait_policy(client, ns, "nsguard-allow-dns", &dns_spec()).await;
    wait_automount(client, ns, "default", Some(false)).await;
}

#[tokio::test]
async fn matching_namespace_is_hardened_and_others_are_left_alone() {
    let op = Operator::start().await;
    let c = &op.admin;
    let profile = op.profile("prod", json!({"namespaceSelector": {"matchLabels": {"env": "prod"}}})).await;
    let ns = op.namespace("harden", &[("env", "prod"), ("team", "payments")]).await;
    let other = op.namespace("other", &[("env", "dev")]).await;
    create_sa(c, &ns, "builder").await;

    // The `default` ServiceAccount is created by the controller-manager moments after the
    // namespace; nsguard turns its token off as it appears.
    wait_hardened(c, &ns, &profile).await;
    wait_automount(c, &ns, "builder", Some(false)).await;
    let hardened = namespace(c, &ns).await;
    assert_eq!(hardened.labels().get("team").map(String::as_str), Some("payments"), "other labels are kept");
    let np = policy(c, &ns, "nsguard-default-deny").await.expect("policy");
    assert_eq!(np.labels().get("app.kubernetes.io/managed-by").map(String::as_str), Some("nsguard"));
    // Created by nsguard (a create, so that it never applies over someone else's object of the same
    // name), and written by nothing else; later corrections are server-side applies.
    assert!(
        np.managed_fields()
            .iter()
            .all(|f| f.manager.as_deref() == Some("nsguard")
                && matches!(f.operation.as_deref(), Some("Apply" | "Update"))),
        "written by field manager nsguard only: {:?}",
        np.managed_fields()
    );
    wait_event(c, &ns, "Hardened", &profile).await;
    let st = wait_status(c, &profile, "1 matched, 1 compliant, Ready", |s| {
        s.matched_namespaces == 1
            && s.compliant_namespaces == 1
            && condition(s, "Ready").is_some_and(|r| r.status == "True")
    })
    .await;
    assert_eq!(condition(&st, "Conflicting").map(|c| c.status.as_str()), Some("False"));

    // The namespace that does not match is untouched, even after its default ServiceAccount appears.
    default_service_account(c, &other).await;
    let untouched = namespace(c, &other).await;
    assert!(no_psa_labels(&untouched) && !untouched.annotations().contains_key("nsguard.io/profile"));
    assert!(policy(c, &other, "nsguard-default-deny").await.is_none());
    assert_eq!(automount(c, &other, "default").await, Some(None));
}

#[tokio::test]
async fn every_kind_of_drift_is_corrected_and_recorded() {
    let op = Operator::start().await;
    let c = &op.admin;
    let profile = op.profile("heal", json!({})).await;
    let ns = op.namespace("drift", &[]).await;
    wait_hardened(c, &ns, &profile).await;
    let nps = Api::<NetworkPolicy>::namespaced(c.clone(), &ns);
    let sas = Api::<ServiceAccount>::namespaced(c.clone(), &ns);

    // A label removed.
    label_as(c, &ns, "someone", "pod-security.kubernetes.io/warn", None).await;
    wait_namespace(c, &ns, "warn label restored", |n| has_labels(n, &psa_labels("restricted"))).await;
    wait_event(c, &ns, "DriftCorrected", "label pod-security.kubernetes.io/warn was missing").await;

    // A label changed.
    label_as(c, &ns, "someone", ENFORCE, Some("privileged")).await;
    wait_namespace(c, &ns, "enforce label restored", |n| has_labels(n, &psa_labels("restricted"))).await;
    wait_event(c, &ns, "DriftCorrected", "label pod-security.kubernetes.io/enforce was \"privileged\"").await;

    // A NetworkPolicy deleted.
    nps.delete("nsguard-allow-dns", &DeleteParams::default()).await.expect("delete");
    wait_policy(c, &ns, "nsguard-allow-dns", &dns_spec()).await;
    wait_event(c, &ns, "DriftCorrected", "NetworkPolicy nsguard-allow-dns was missing").await;

    // A NetworkPolicy edited: someone opens ingress with their own field manager.
    let open = json!({"spec": {"ingress": [{}]}});
    nps.patch(
        "nsguard-default-deny",
        &PatchParams { field_manager: Some("someone".into()), ..Default::default() },
        &Patch::Merge(&open),
    )
    .await
    .expect("edit policy");
    wait_policy(c, &ns, "nsguard-default-deny", &deny_spec()).await;
    wait_event(c, &ns, "DriftCorrected", "NetworkPolicy nsguard-default-deny was edited").await;

    // A ServiceAccount token re-enabled.
    let on = json!({"automountServiceAccountToken": true});
    sas.patch(
        "default",
        &PatchParams { field_manager: Some("someone".into()), ..Default::default() },
        &Patch::Merge(&on),
    )
    .await
    .expect("re-enable token");
    wait_automount(c, &ns, "default", Some(false)).await;
    wait_event(c, &ns, "DriftCorrected", "ServiceAccount default had automountServiceAccountToken: true").await;

    // Recorded in the profile's status and in the metrics.
    wait_status(c, &profile, "Drifted=False/DriftCorrected naming the namespace", |s| {
        condition(s, "Drifted")
            .is_some_and(|d| d.status == "False" && d.reason == "DriftCorrected" && d.message.contains(&ns))
            && s.compliant_namespaces == 1
    })
    .await;
    assert!(op.corrections("label") >= 2);
    assert!(op.corrections("network_policy_missing") >= 1);
    assert!(op.corrections("network_policy_changed") >= 1);
    assert!(op.corrections("service_account_automount") >= 1);
}

#[tokio::test]
async fn audit_mode_reports_drift_and_writes_nothing() {
    let op = Operator::start().await;
    let c = &op.admin;
    let profile = op.profile("audit", json!({"mode": "Audit"})).await;
    let ns = op.namespace("audit", &[]).await;
    default_service_account(c, &ns).await;
    label_as(c, &ns, "someone", ENFORCE, Some("privileged")).await;

    wait_event(c, &ns, "DriftDetected", "label pod-security.kubernetes.io/enforce was \"privileged\"").await;
    let st = wait_status(c, &profile, "Drifted=True/DriftDetected", |s| {
        condition(s, "Drifted").is_some_and(|d| d.status == "True" && d.reason == "DriftDetected")
            && s.matched_namespaces == 1
    })
    .await;
    assert_eq!(st.compliant_namespaces, 0);
    assert_eq!(st.non_compliant.first().map(|n| n.namespace.as_str()), Some(ns.as_str()));
    assert!(st.non_compliant[0].reason.contains("NetworkPolicy nsguard-default-deny was missing"));

    // Nothing audited was written: no labels, no policies, no token change. nsguard's only field on
    // the namespace is its own condition, on the status subresource.
    let n = namespace(c, &ns).await;
    assert_eq!(n.labels().get(ENFORCE).map(String::as_str), Some("privileged"));
    for entry in n.managed_fields().iter().filter(|f| f.manager.as_deref() == Some("nsguard")) {
        assert_eq!(entry.subresource.as_deref(), Some("status"), "nsguard wrote outside the status: {entry:?}");
        let fields = serde_json::to_string(&entry.fields_v1).expect("fields");
        assert!(fields.contains("nsguard.io/Hardened") && !fields.contains("f:phase"), "{fields}");
    }
    assert!(policy(c, &ns, "nsguard-default-deny").await.is_none());
    assert!(policy(c, &ns, "nsguard-allow-dns").await.is_none());
    assert_eq!(automount(c, &ns, "default").await, Some(None));
    assert_eq!(
        op.metrics
            .writes
            .get_or_create(&nsguard::ops::metrics::WriteLabels { verb: "apply", resource: "namespaces" })
            .get(),
        0
    );
}

#[tokio::test]
async fn namespace_that_stops_matching_is_released_and_other_managers_fields_survive() {
    let op = Operator::start().await;
    let c = &op.admin;
    let profile = op.profile("rel", json!({"namespaceSelector": {"matchLabels": {"harden": "yes"}}})).await;
    let ns = op.namespace("release", &[("harden", "yes"), ("team", "search")]).await;
    // Another tool sets one of the same labels, to the same value, before nsguard does: it co-owns it.
    label_as(c, &ns, "gitops", "pod-security.kubernetes.io/warn", Some("restricted")).await;
    create_sa(c, &ns, "ci-bot").await;
    wait_hardened(c, &ns, &profile).await;
    wait_automount(c, &ns, "ci-bot", Some(false)).await;

    label_as(c, &ns, "someone", "harden", Some("no")).await;
    let released = wait_namespace(c, &ns, "released", |n| !n.annotations().contains_key("nsguard.io/profile")).await;
    let labels = released.labels();
    assert_eq!(labels.get("team").map(String::as_str), Some("search"), "labels of other managers survive");
    assert_eq!(
        labels.get("pod-security.kubernetes.io/warn").map(String::as_str),
        Some("restricted"),
        "co-owned label survives"
    );
    assert!(!labels.contains_key(ENFORCE), "nsguard's own labels are removed");
    assert!(!released.annotations().contains_key("nsguard.io/release-policy"));
    wait_policy_gone(c, &ns, "nsguard-default-deny").await;
    wait_policy_gone(c, &ns, "nsguard-allow-dns").await;
    wait_automount(c, &ns, "default", None).await;
    wait_automount(c, &ns, "ci-bot", None).await;
    wait_event(c, &ns, "Released", "released").await;
    wait_status(c, &profile, "0 matched", |s| s.matched_namespaces == 0).await;
}

#[tokio::test]
async fn deleted_profile_releases_or_retains_by_policy() {
    let op = Operator::start().await;
    let c = &op.admin;
    let released = op.profile("gone", json!({"namespaceSelector": {"matchLabels": {"p": "release"}}})).await;
    let retained = op
        .profile("kept", json!({"namespaceSelector": {"matchLabels": {"p": "retain"}}, "releasePolicy": "Retain"}))
        .await;
    let ns_rel = op.namespace("del-rel", &[("p", "release")]).await;
    let ns_ret = op.namespace("del-ret", &[("p", "retain")]).await;
    wait_hardened(c, &ns_rel, &released).await;
    wait_hardened(c, &ns_ret, &retained).await;

    let profiles = Api::<DynamicObject>::all_with(c.clone(), &profile_resource());
    profiles.delete(&released, &DeleteParams::default()).await.expect("delete");
    profiles.delete(&retained, &DeleteParams::default()).await.expect("delete");

    wait_namespace(c, &ns_rel, "released", |n| no_psa_labels(n) && !n.annotations().contains_key("nsguard.io/profile"))
        .await;
    wait_policy_gone(c, &ns_rel, "nsguard-default-deny").await;
    wait_policy_gone(c, &ns_rel, "nsguard-allow-dns").await;
    wait_automount(c, &ns_rel, "default", None).await;

    let kept = wait_namespace(c, &ns_ret, "no longer claims a profile", |n| {
        !n.annotations().contains_key("nsguard.io/profile")
    })
    .await;
    assert!(has_labels(&kept, &psa_labels("restricted")), "Retain keeps the labels");
    assert_eq!(policy_spec(&policy(c, &ns_ret, "nsguard-default-deny").await.expect("kept")), deny_spec());
    assert!(policy(c, &ns_ret, "nsguard-allow-dns").await.is_some());
    assert_eq!(automount(c, &ns_ret, "default").await, Some(Some(false)));
}

#[tokio::test]
async fn overlapping_profiles_resolve_by_priority_then_name() {
    let op = Operator::start().await;
    let c = &op.admin;
    let low = op.profile("a-low", json!({"priority": 1})).await;
    let high = op.profile(
        "z-high",
        json!({"priority": 10, "podSecurity": {"enforce": {"level": "baseline"}, "audit": {"level": "baseline"}, "warn": {"level": "baseline"}}}),
    )
    .await;
    let ns = op.namespace("overlap", &[]).await;
    wait_namespace(c, &ns, "governed by the higher priority", |n| {
        has_labels(n, &psa_labels("baseline")) && n.annotations().get("nsguard.io/profile") == Some(&high)
    })
    .await;
    wait_event(c, &ns, "ProfileConflict", &low).await;
    let st =
        wait_status(c, &low, "Conflicting=True", |s| condition(s, "Conflicting").is_some_and(|c| c.status == "True"))
            .await;
    assert!(condition(&st, "Conflicting").is_some_and(|c| c.message.contains(&high) && c.message.contains(&ns)));
    assert_eq!(st.matched_namespaces, 0);

    // On equal priority, the alphabetically first name wins.
    let tie_a = op.profile("b-tie", json!({"priority": 10, "podSecurity": {"enforce": {"level": "privileged"}}})).await;
    wait_namespace(c, &ns, "governed by the first name on a tie", |n| {
        n.annotations().get("nsguard.io/profile") == Some(&tie_a)
    })
    .await;
    wait_namespace(c, &ns, "privileged enforce from the winner", |n| {
        n.labels().get(ENFORCE).map(String::as_str) == Some("privileged")
    })
    .await;
    wait_status(c, &high, "z-high now reports the conflict", |s| {
        condition(s, "Conflicting").is_some_and(|c| c.status == "True")
    })
    .await;
}

#[tokio::test]
async fn invalid_profiles_are_rejected_at_apply_time_naming_the_field() {
    let _ = install();
    let c = admin_client().await;
    let api = Api::<DynamicObject>::all_with(c.clone(), &profile_resource());
    let cases = [
        (json!({"mode": "Enforced"}), "spec.mode"),
        (json!({"releasePolicy": "Keep"}), "spec.releasePolicy"),
        (json!({"podSecurity": {"enforce": {"level": "strict"}}}), "spec.podSecurity.enforce.level"),
        (json!({"podSecurity": {"audit": {"version": "1.30"}}}), "spec.podSecurity.audit.version"),
        (
            json!({"namespaceSelector": {"matchLabels": {"env": "not valid!"}}}),
            "spec.namespaceSelector.matchLabels.env",
        ),
        (json!({"namespaceSelector": {"matchLabels": {"bad key!": "x"}}}), "spec.namespaceSelector.matchLabels"),
        (
            json!({"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}),
            "spec.namespaceSelector.matchExpressions[0].values",
        ),
        (
            json!({"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["x"]}]}}),
            "spec.namespaceSelector.matchExpressions[0].operator",
        ),
        (json!({"excludeNamespaces": ["Legacy_*"]}), "spec.excludeNamespaces[0]"),
        (json!({"networkPolicy": {"allowDNS": {"podSelector": {}}}}), "spec.networkPolicy.allowDNS.podSelector"),
        (json!({"networkPolicy": {"allowDNS": {"namespace": "Kube_System"}}}), "spec.networkPolicy.allowDNS.namespace"),
        (json!({"serviceAccounts": {"exempt": ["-bad"]}}), "spec.serviceAccounts.exempt[0]"),
        (json!({"priority": 5_000_000}), "spec.priority"),
        (json!({"serviceAccounts": {"scope": "Everything"}}), "spec.serviceAccounts.scope"),
    ];
    for (spec, field) in cases {
        let obj = json!({"apiVersion": "nsguard.io/v1alpha1", "kind": "HardeningProfile", "metadata": {"name": unique_name("invalid")}, "spec": spec});
        let obj: DynamicObject = serde_json::from_value(obj).expect("object");
        match api.create(&PostParams::default(), &obj).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{spec}: {status:?}");
                assert!(status.message.contains(field), "{spec}: message {:?} does not name {field}", status.message);
            }
            other => panic!("{spec} was not rejected: {other:?}"),
        }
    }
    // Unknown fields are rejected too (strict field validation, as kubectl does by default).
    let obj = json!({"apiVersion": "nsguard.io/v1alpha1", "kind": "HardeningProfile", "metadata": {"name": unique_name("invalid")}, "spec": {"podSecurity": {"enforce": {"levle": "baseline"}}}});
    let strict = kube::api::PatchParams {
        field_validation: Some(kube::api::ValidationDirective::Strict),
        ..PatchParams::apply("test")
    };
    let name = obj["metadata"]["name"].as_str().expect("name").to_owned();
    match api.patch(&name, &strict, &Patch::Apply(&obj)).await {
        Err(kube::Error::Api(status)) => {
            assert!(status.message.contains("levle"), "{}", status.message)
        }
        other => panic!("unknown field was not rejected: {other:?}"),
    }
}

#[tokio::test]
async fn another_writer_that_keeps_reverting_is_backed_off_and_reported() {
    let op = Operator::start().await;
    let c = op.admin.clone();
    let profile = op.profile("fight", json!({})).await;
    let ns = op.namespace("fight", &[]).await;
    wait_hardened(&c, &ns, &profile).await;

    // A rival controller: whenever the enforce label is not "privileged", it sets it back.
    let rival = {
        let c = c.clone();
        let ns = ns.clone();
        tokio::spawn(async move {
            loop {
                if namespace(&c, &ns).await.labels().get(ENFORCE).map(String::as_str) != Some("privileged") {
                    label_as(&c, &ns, "rival", ENFORCE, Some("privileged")).await;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        })
    };
    wait_event(&c, &ns, "DriftFight", "another writer keeps reverting nsguard").await;
    wait_status(&c, &profile, "Drifted=True/DriftFight", |s| {
        condition(s, "Drifted").is_some_and(|d| d.status == "True" && d.reason == "DriftFight")
    })
    .await;
    // Backing off: the rival wins between nsguard's exponentially spaced corrections, and
    // nsguard's count of corrections stays small instead of racing the rival.
    let corrections = op.corrections("label");
    assert!(corrections <= 8, "{corrections} corrections: nsguard is not backing off");
    rival.abort();
    wait_namespace(&c, &ns, "healed once the rival stops", |n| has_labels(n, &psa_labels("restricted"))).await;
}
