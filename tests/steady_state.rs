//! With the cluster converged and nothing changing, nsguard writes nothing — even while it keeps
//! re-checking every namespace. Alone in its test binary, so no other controller runs meanwhile.

mod support;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use nsguard::ops::metrics::ResultLabels;
use serde_json::json;
use support::operator::{Operator, profile_resource};
use support::*;

const NAMESPACES: usize = 5;

fn nsguard_writes(op: &Operator) -> u64 {
    // Every write nsguard makes is counted by family; sum them all.
    let text = op.metrics.encode();
    text.lines()
        .filter(|l| l.starts_with("nsguard_write_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Reconciles whose wait in the queue was observed (`nsguard_queue_wait_seconds_count`).
fn queue_waits(op: &Operator) -> u64 {
    let text = op.metrics.encode();
    text.lines()
        .find_map(|l| l.strip_prefix("nsguard_queue_wait_seconds_count ")?.parse().ok())
        .expect("nsguard_queue_wait_seconds_count")
}

fn reconciles(op: &Operator) -> u64 {
    ["compliant", "converging", "untouched"]
        .iter()
        .map(|r| op.metrics.reconciles.get_or_create(&ResultLabels { result: r }).get())
        .sum()
}

/// SSA writes to the resources nsguard manages, as the API server counts them. Nothing else in the
/// local control plane server-side applies these.
async fn applies(client: &kube::Client) -> f64 {
    apiserver_requests(client, |l| {
        l.contains("verb=\"APPLY\"")
            && ["namespaces", "serviceaccounts", "networkpolicies", "hardeningprofiles"]
                .iter()
                .any(|r| l.contains(&format!("resource=\"{r}\"")))
    })
    .await
}

#[tokio::test]
async fn converged_cluster_gets_no_writes() {
    // Re-check every namespace every second, so the window below sees many full passes.
    let op = Operator::start_with(|s| s.resync = std::time::Duration::from_secs(1)).await;
    let c = op.admin.clone();
    let profile = op.profile("steady", json!({})).await;
    let mut names = Vec::new();
    for _ in 0..NAMESPACES {
        names.push(op.namespace("steady", &[]).await);
    }
    // Converged: every namespace hardened (including its `default` ServiceAccount) and the
    // profile's status says so.
    for ns in &names {
        let sa = default_service_account(&c, ns).await;
        let sas = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(c.clone(), ns);
        eventually(&format!("{ns}/default token off"), || async {
            (sas.get("default").await.ok()?.automount_service_account_token == Some(false)).then_some(())
        })
        .await;
        drop(sa);
    }
    let profiles = Api::<DynamicObject>::all_with(c.clone(), &profile_resource());
    eventually("the profile's status to show every namespace compliant", || async {
        let p = profiles.get(&profile).await.ok()?;
        let s = p.data.get("status")?;
        (s["compliantNamespaces"] == json!(NAMESPACES) && s["matchedNamespaces"] == json!(NAMESPACES)).then_some(())
    })
    .await;

    // The audit log does attribute nsguard's writes: convergence made some.
    let converging = audited_writes(NSGUARD_USER, 0);
    assert!(
        converging.iter().any(|e| e["verb"] == "patch" && e["objectRef"]["resource"] == "namespaces"),
        "the audit log shows no write by {NSGUARD_USER}; is auditing on?"
    );

    // Each reconcile's wait in the queue is observed as it starts: at least as many as ended.
    let ended = reconciles(&op);
    let waits = queue_waits(&op);
    assert!(ended > 0 && waits >= ended, "{waits} waits observed for {ended} reconciles");

    let audit_offset = audit_log_offset();
    let writes_before = nsguard_writes(&op);
    let applies_before = applies(&c).await;
    let reconciles_before = reconciles(&op);

    // Nothing nsguard owns changes, but plenty happens: labels other tools own change on every
    // namespace, and the profile gets an annotation (a new resourceVersion, the same spec).
    for ns in &names {
        let patch = json!({"metadata": {"labels": {"unrelated": "touched"}}});
        Api::<Namespace>::all(c.clone())
            .patch(ns, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("label");
    }
    let note = json!({"metadata": {"annotations": {"reviewed-by": "platform-team"}}});
    profiles.patch(&profile, &PatchParams::default(), &Patch::Merge(&note)).await.expect("annotate profile");

    // Wait for several full passes over every namespace.
    let target = reconciles_before + 5 * NAMESPACES as u64;
    eventually("five reconciles of every namespace", || async { (reconciles(&op) >= target).then_some(()) }).await;

    assert_eq!(nsguard_writes(&op), writes_before, "nsguard counted its own writes in steady state");
    let audited = audited_writes(NSGUARD_USER, audit_offset);
    assert!(audited.is_empty(), "the API server audited writes by nsguard in steady state: {audited:#?}");
    assert_eq!(applies(&c).await, applies_before, "the API server counted server-side applies in steady state");
}
