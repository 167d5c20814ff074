//! nsguard's own writes coming back: their watch events need no reconcile, and what makes that safe
//! (a write made on a version nsguard knew is refused once the object has moved past it), against
//! the local control plane.
mod support;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use nsguard::ops::metrics::ResultLabels;
use serde_json::{Value, json};
use support::operator::Operator;
use support::*;

const ENFORCE: &str = "pod-security.kubernetes.io/enforce";
const RESULTS: [&str; 8] = ["compliant", "converging", "drifted", "releasing", "held", "untouched", "backoff", "error"];

fn reconciles(op: &Operator) -> u64 {
    RESULTS.iter().map(|&result| op.metrics.reconciles.get_or_create(&ResultLabels { result }).get()).sum()
}

fn skipped(op: &Operator) -> u64 {
    op.metrics.own_events_skipped.get()
}

async fn enforce(client: &Client, ns: &str) -> Option<String> {
    let ns = Api::<Namespace>::all(client.clone()).get(ns).await.expect("namespace");
    ns.labels().get(ENFORCE).cloned()
}

/// Hardened and settled: the labels, the `default` ServiceAccount's token off, none of nsguard's
/// writes still on their way back, and no reconcile ended since the last poll.
async fn wait_settled(op: &Operator, ns: &str) {
    let c = &op.admin;
    let mut last = u64::MAX;
    eventually(&format!("{ns} hardened, nothing in flight"), || {
        let (before, now) = (last, reconciles(op));
        last = now;
        async move {
            let quiet = before == now;
            let labelled = enforce(c, ns).await.as_deref() == Some("restricted");
            let account = Api::<ServiceAccount>::namespaced(c.clone(), ns).get_opt("default").await.expect("get");
            let token_off = account.is_some_and(|a| a.automount_service_account_token == Some(false));
            let policies =
                Api::<NetworkPolicy>::namespaced(c.clone(), ns).list(&Default::default()).await.expect("list");
            let settled = op.handle.footprint().pending_writes == 0;
            (quiet && labelled && token_off && policies.items.len() == 2 && settled).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn a_heal_costs_one_reconcile_and_its_own_event_brings_none() {
    // No resync slice may look at the namespace during the test.
    let op = Operator::start_with(|s| s.resync = std::time::Duration::from_secs(3600)).await;
    op.profile("echo", json!({"namespaceSelector": {"matchLabels": {"env": "echo"}}})).await;
    let ns = op.namespace("echo", &[("env", "echo")]).await;
    wait_settled(&op, &ns).await;
    assert!(skipped(&op) > 0, "hardening a namespace writes objects whose events come back as nsguard's own");

    let (looked, echoes) = (reconciles(&op), skipped(&op));
    let drift = json!({"metadata": {"labels": {ENFORCE: "privileged"}}});
    Api::<Namespace>::all(op.admin.clone())
        .patch(&ns, &PatchParams::default(), &Patch::Merge(&drift))
        .await
        .expect("drift");
    eventually("the heal's own event to come back and be skipped", || async {
        let healed = enforce(&op.admin, &ns).await.as_deref() == Some("restricted");
        (healed && skipped(&op) > echoes && reconciles(&op) > looked).then_some(())
    })
    .await;
    wait_settled(&op, &ns).await;
    // The drift's event brought one look, which healed it; the heal's event brought none.
    assert_eq!(reconciles(&op) - looked, 1, "one reconcile for one drift event");
    assert_eq!(op.corrections("label"), 1);
}

/// An apply carrying `version` as its resourceVersion.
fn on(mut patch: Value, version: &str) -> Value {
    patch["metadata"]["resourceVersion"] = json!(version);
    patch
}

fn conflict<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(ref s)) if s.code == 409)
}

#[tokio::test]
async fn an_apply_on_a_version_the_object_has_moved_past_is_refused() {
    // What makes an echo safe to skip: nsguard sends each apply on the newest version it knows; the
    // API server applies it on exactly that version or refuses it, so a version nsguard's write
    // produced carries nothing nsguard has not seen.
    let admin = admin_client().await;
    let ns = create_namespace(&admin, "precondition", &[]).await;
    let apply = PatchParams::apply("precondition-test").force();
    let namespaces = Api::<Namespace>::all(admin.clone());
    let labels =
        |v: &str| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"a": v}}});
    let first = namespaces.patch(&ns, &apply, &Patch::Apply(labels("1"))).await.expect("apply").resource_version();
    let first = first.expect("a version");
    let second = namespaces.patch(&ns, &apply, &Patch::Apply(on(labels("2"), &first))).await.expect("on the newest");
    assert_ne!(second.resource_version().as_deref(), Some(first.as_str()));
    assert!(conflict(namespaces.patch(&ns, &apply, &Patch::Apply(on(labels("3"), &first))).await));
    // The status subresource, as nsguard's condition is written.
    let status = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns},
        "status": {"conditions": [{"type": "nsguard.io/Hardened", "status": "True", "reason": "Test", "message": "m"}]}});
    assert!(conflict(namespaces.patch_status(&ns, &apply, &Patch::Apply(on(status.clone(), &first))).await));
    let newest = second.resource_version().expect("a version");
    namespaces.patch_status(&ns, &apply, &Patch::Apply(on(status, &newest))).await.expect("status on the newest");

    let accounts = Api::<ServiceAccount>::namespaced(admin.clone(), &ns);
    let account = ServiceAccount {
        metadata: kube::api::ObjectMeta { name: Some("app".into()), ..Default::default() },
        ..Default::default()
    };
    let created =
        accounts.create(&PostParams::default(), &account).await.expect("create").resource_version().expect("v");
    let off = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app", "namespace": ns},
        "automountServiceAccountToken": false});
    accounts.patch("app", &apply, &Patch::Apply(on(off.clone(), &created))).await.expect("on the newest");
    assert!(conflict(accounts.patch("app", &apply, &Patch::Apply(on(off, &created))).await));

    let policies = Api::<NetworkPolicy>::namespaced(admin.clone(), &ns);
    let policy = |types: &[&str]| {
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": ns}, "spec": {"podSelector": {}, "policyTypes": types}})
    };
    let made = policies.patch("p", &apply, &Patch::Apply(policy(&["Ingress"]))).await.expect("apply");
    let made = made.resource_version().expect("v");
    policies.patch("p", &apply, &Patch::Apply(on(policy(&["Ingress", "Egress"]), &made))).await.expect("on the newest");
    assert!(conflict(policies.patch("p", &apply, &Patch::Apply(on(policy(&["Egress"]), &made))).await));
}
