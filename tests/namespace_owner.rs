//! What a namespace owner sees, with nothing but an `admin` RoleBinding in their namespace (the
//! tests act as that user by impersonation, never as cluster-admin): the `nsguard.io/Hardened`
//! condition on their Namespace, nsguard's events in their namespace, and nsguard's OpenReports
//! Report there — and that they can change neither.

mod support;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Client, ResourceExt};
use nsguard::core::report::resource as reports;
use serde_json::{Value, json};
use support::operator::{Operator, profile_resource};
use support::*;

const ENFORCE: &str = "pod-security.kubernetes.io/enforce";

/// nsguard's Report in `ns`, read as `client`.
async fn report(client: &Client, ns: &str) -> Option<DynamicObject> {
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, &reports()).get_opt("nsguard").await.expect("get report")
}

/// Waits for nsguard's Report in `ns` with `fail` failing results, and returns its results by rule.
async fn wait_report(client: &Client, ns: &str, fail: i64) -> std::collections::BTreeMap<String, Value> {
    let report = eventually(&format!("{ns}: the nsguard Report with {fail} failing results"), || async {
        report(client, ns).await.filter(|r| r.data["summary"]["fail"] == fail)
    })
    .await;
    assert_eq!(report.data["source"], "nsguard");
    assert_eq!(report.data["scope"]["kind"], "Namespace");
    assert_eq!(report.data["scope"]["name"], ns);
    let results = report.data["results"].as_array().expect("results").clone();
    results.into_iter().map(|r| (r["rule"].as_str().unwrap_or_default().to_owned(), r)).collect()
}

/// `kubectl events -n ns`, as `user`, once it lists every one of `reasons`.
async fn wait_kubectl_events(user: &str, ns: &str, reasons: &[&str]) -> String {
    eventually(&format!("kubectl events -n {ns} as {user} to list {reasons:?}"), || async {
        let (user, ns) = (user.to_owned(), ns.to_owned());
        // kubectl blocks: run it off the runtime that also runs the controller.
        let out =
            tokio::task::spawn_blocking(move || kubectl_as(&user, &["events", "-n", &ns])).await.expect("kubectl");
        assert!(out.status.success(), "kubectl events: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        reasons.iter().all(|r| text.contains(r)).then_some(text)
    })
    .await
}

fn forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("{what}: want 403 Forbidden, got {other:?}"),
    }
}

/// A user bound to `admin` in a new namespace of `op`'s shard.
async fn owner(op: &Operator, prefix: &str) -> (String, String, Client) {
    let ns = op.namespace(prefix, &[]).await;
    let user = format!("owner-{ns}");
    bind_namespace_admin(&op.admin, &ns, &user).await;
    let client = client_as_user(&user).await;
    (ns, user, client)
}

#[tokio::test]
async fn an_owner_sees_hardening_events_and_report_and_can_change_none_of_them() {
    let op = Operator::start().await;
    let profile = op.profile("owner", json!({})).await;
    let (ns, user, me) = owner(&op, "owner").await;
    // What the owner cannot do: read profiles (cluster-scoped).
    forbidden(
        Api::<DynamicObject>::all_with(me.clone(), &profile_resource()).list(&Default::default()).await,
        "list profiles",
    );

    // The condition, on the Namespace they can get, and in `kubectl describe ns`.
    let compliant = wait_condition(&me, &ns, "True", "Compliant").await;
    assert!(compliant.message.as_deref().is_some_and(|m| m.contains("Profile")), "{compliant:?}");
    let described = kubectl_as(&user, &["describe", "ns", &ns]);
    let text = String::from_utf8_lossy(&described.stdout);
    assert!(described.status.success() && text.contains("nsguard.io/Hardened") && text.contains("Compliant"), "{text}");

    // The Report: every check passes, each with its CIS controls; `kubectl get reports` lists it.
    let results = wait_report(&me, &ns, 0).await;
    let rules: Vec<&str> = results.keys().map(String::as_str).collect();
    assert_eq!(
        rules,
        [
            "network-default-deny-egress",
            "network-default-deny-ingress",
            "network-dns-egress",
            "pod-security-audit",
            "pod-security-enforce",
            "pod-security-warn",
            "serviceaccount-token-automount",
        ]
    );
    for (rule, result) in &results {
        assert_eq!(result["result"], "pass", "{rule}: {result}");
        assert!(result["policy"].as_str().is_some_and(|p| p.starts_with("owner")), "{result}");
    }
    assert_eq!(results["network-default-deny-ingress"]["properties"]["cis-kubernetes"], "5.3.2");
    assert_eq!(results["serviceaccount-token-automount"]["properties"]["cis-kubernetes"], "5.1.5,5.1.6");
    assert!(
        results["pod-security-enforce"]["properties"]["cis-kubernetes"].as_str().is_some_and(|c| c.contains("5.2."))
    );
    let listed = kubectl_as(&user, &["get", "reports", "-n", &ns]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("nsguard"), "{listed:?}");

    // `nsguard status -n` answers with the owner's rights alone.
    let kubeconfig = kubeconfig_as_user(&user);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_nsguard"))
        .args(["status", "-n", &ns, "-o", "json", "--kubeconfig"])
        .arg(&kubeconfig)
        .output()
        .await
        .expect("run nsguard status");
    assert!(out.status.success(), "nsguard status -n: {}", String::from_utf8_lossy(&out.stderr));
    let status: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(status["profile"], profile.as_str());
    assert_eq!(status["mode"], "Enforce");
    assert_eq!(status["condition"]["reason"], "Compliant");
    assert_eq!(status["checks"].as_array().map(Vec::len), Some(7));

    // Drift, healed: the owner reads both events in their own namespace, and the condition is True.
    let patch = json!({"metadata": {"labels": {ENFORCE: "privileged"}}});
    Api::<Namespace>::all(op.admin.clone())
        .patch(&ns, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("drift");
    wait_kubectl_events(&user, &ns, &["Hardened", "DriftCorrected"]).await;
    // On-call finds every event nsguard sent, cluster-wide, with one command (the README's).
    let all = kubectl(&["get", "events", "-A", "--field-selector", "reportingComponent=nsguard", "-o", "name"]);
    let listed = String::from_utf8_lossy(&all.stdout);
    assert!(all.status.success() && listed.contains(&ns), "kubectl get events -A --field-selector ...: {listed}");
    let healed = wait_condition(&me, &ns, "True", "Compliant").await;
    assert_eq!(healed.last_transition_time, compliant.last_transition_time, "never left True");

    // What the owner cannot change: nsguard's Report, nor the condition on their Namespace.
    let edit = json!({"summary": {"fail": 0, "pass": 99}});
    let report_api = Api::<DynamicObject>::namespaced_with(me.clone(), &ns, &reports());
    forbidden(report_api.patch("nsguard", &PatchParams::default(), &Patch::Merge(&edit)).await, "patch the Report");
    forbidden(report_api.delete("nsguard", &DeleteParams::default()).await, "delete the Report");
    let fake =
        json!({"status": {"conditions": [{"type": "nsguard.io/Hardened", "status": "True", "reason": "Compliant"}]}});
    forbidden(
        Api::<Namespace>::all(me.clone()).patch_status(&ns, &PatchParams::default(), &Patch::Merge(&fake)).await,
        "patch the Namespace's status",
    );

    // Released (the profile deleted): the owner reads that too, and the condition and Report go.
    Api::<DynamicObject>::all_with(op.admin.clone(), &profile_resource())
        .delete(&profile, &DeleteParams::default())
        .await
        .expect("delete profile");
    wait_kubectl_events(&user, &ns, &["Released"]).await;
    eventually("the condition removed", || async { hardened(&me, &ns).await.is_none().then_some(()) }).await;
    eventually("the Report deleted", || async { report(&me, &ns).await.is_none().then_some(()) }).await;
}

#[tokio::test]
async fn audit_drift_is_shown_to_the_owner_kept_across_a_restart_and_cleared_on_release() {
    let op = Operator::start().await;
    let profile = op.profile("owner-audit", json!({"mode": "Audit"})).await;
    let (ns, user, me) = owner(&op, "owner-audit").await;

    // Audit mode: False, naming each difference; the Report fails those checks; nothing audited
    // was written.
    let drifted = wait_condition(&me, &ns, "False", "Drifted").await;
    let message = drifted.message.clone().unwrap_or_default();
    assert!(
        message.contains(&profile) && message.contains("NetworkPolicy nsguard-default-deny was missing"),
        "{message}"
    );
    let results = wait_report(&me, &ns, 7).await;
    for rule in ["pod-security-enforce", "network-default-deny-ingress", "network-default-deny-egress"] {
        assert_eq!(results[rule]["result"], "fail", "{rule}: {}", results[rule]);
    }
    assert!(results["pod-security-enforce"]["message"].as_str().is_some_and(|m| m.contains(ENFORCE)));
    wait_kubectl_events(&user, &ns, &["DriftDetected"]).await;
    let detected = |events: &[k8s_openapi::api::events::v1::Event]| {
        events.iter().filter(|e| e.reason.as_deref() == Some("DriftDetected")).count()
    };
    // One per distinct set of differences (the `default` ServiceAccount may arrive after the
    // first look, making a second); none of them repeated.
    let before_restart = eventually("DriftDetected naming the default ServiceAccount", || async {
        let events = nsguard_events(&op.admin, &ns).await;
        let named = events.iter().any(|e| {
            e.reason.as_deref() == Some("DriftDetected")
                && e.note.as_deref().is_some_and(|n| n.contains("ServiceAccount default"))
        });
        named.then(|| detected(&events))
    })
    .await;
    assert!(before_restart <= 2, "{before_restart} DriftDetected events");

    // A restart: nothing the condition already shows is announced or written again. A new
    // difference after it is announced (and proves the restarted controller has looked).
    let version = Api::<Namespace>::all(op.admin.clone()).get(&ns).await.expect("ns").resource_version();
    let op = op.restart().await;
    eventually("the restarted controller to reconcile the namespace", || async {
        (op.handle.footprint().remembered_namespaces >= 1).then_some(())
    })
    .await;
    let after = Api::<Namespace>::all(op.admin.clone()).get(&ns).await.expect("ns").resource_version();
    assert_eq!(after, version, "the restarted controller rewrote the namespace");
    let patch = json!({"metadata": {"labels": {ENFORCE: "privileged"}}});
    Api::<Namespace>::all(op.admin.clone())
        .patch(&ns, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("drift");
    let changed = eventually("the new difference in the condition", || async {
        hardened(&me, &ns).await.filter(|c| c.message.as_deref().is_some_and(|m| m.contains("\"privileged\"")))
    })
    .await;
    assert_eq!(changed.last_transition_time, drifted.last_transition_time, "still False: no transition");
    eventually("the new difference announced", || async {
        (detected(&nsguard_events(&op.admin, &ns).await) == before_restart + 1).then_some(())
    })
    .await;

    // Release (the profile deleted): the condition and the Report go; the owner reads `Released`.
    Api::<DynamicObject>::all_with(op.admin.clone(), &profile_resource())
        .delete(&profile, &DeleteParams::default())
        .await
        .expect("delete profile");
    eventually("the condition removed", || async { hardened(&me, &ns).await.is_none().then_some(()) }).await;
    eventually("the Report deleted", || async { report(&me, &ns).await.is_none().then_some(()) }).await;
    let events = nsguard_events(&op.admin, &ns).await;
    assert_eq!(detected(&events), before_restart + 1, "no DriftDetected was announced again by the restart");
    let ns_object = Api::<Namespace>::all(op.admin.clone()).get(&ns).await.expect("ns");
    assert!(ns_object.labels().get(ENFORCE).is_some_and(|v| v == "privileged"), "Audit mode never wrote the labels");
}
