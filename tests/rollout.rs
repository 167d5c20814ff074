//! Rolling out Pod Security without breaking running workloads, on the local control plane: the
//! rollout gate holds enforce below the target while existing pods would violate it (the pods stay
//! Pending — there is no scheduler — but they exist, so Pod Security Admission evaluates them),
//! promotes the namespace once they are gone, and time-boxed exceptions lower enforce until they
//! expire.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::operator::{Operator, SHARD_LABEL, profile_resource};
use support::*;

const ENFORCE: &str = "pod-security.kubernetes.io/enforce";
const AUDIT: &str = "pod-security.kubernetes.io/audit";
const WARN: &str = "pod-security.kubernetes.io/warn";
const SELECTED: &str = "nsguard-test/rollout";

/// An operator that re-checks held namespaces every couple of seconds.
async fn operator() -> Operator {
    Operator::start_with(|s| s.enforce_recheck = Duration::from_secs(2)).await
}

async fn labels(client: &Client, ns: &str) -> BTreeMap<String, String> {
    Api::<Namespace>::all(client.clone()).get(ns).await.expect("get namespace").labels().clone()
}

/// A pod that runs privileged (fails `baseline` and `restricted`).
fn privileged_pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
            "securityContext": {"privileged": true}}]}
    }))
    .expect("pod")
}

/// A pod with no security settings: passes `baseline`, fails `restricted` (runs as root).
fn root_pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]}
    }))
    .expect("pod")
}

/// A namespace in the operator's shard that no profile selects yet, with `pods` in it.
async fn namespace_with_pods(op: &Operator, prefix: &str, pods: Vec<Pod>) -> String {
    let ns = op.namespace(prefix, &[]).await;
    default_service_account(&op.admin, &ns).await;
    let api = Api::<Pod>::namespaced(op.admin.clone(), &ns);
    for pod in pods {
        api.create(&PostParams::default(), &pod).await.expect("create pod");
    }
    ns
}

/// Puts `ns` under the profile that selects `SELECTED=value`.
async fn select(client: &Client, ns: &str, value: &str) {
    let patch = json!({"metadata": {"labels": {SELECTED: value}}});
    Api::<Namespace>::all(client.clone())
        .patch(ns, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("label namespace");
}

fn selecting(value: &str, extra: Value) -> Value {
    let mut spec = json!({"namespaceSelector": {"matchLabels": {SELECTED: value}}});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    spec
}

async fn delete_pods(client: &Client, ns: &str) {
    let api = Api::<Pod>::namespaced(client.clone(), ns);
    let params = DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
    api.delete_collection(&params, &Default::default()).await.expect("delete pods");
    eventually(&format!("{ns}: pods gone"), || async {
        api.list(&Default::default()).await.expect("list pods").items.is_empty().then_some(())
    })
    .await;
}

/// `nsguard status -n ns -o json`, as the cluster admin.
async fn nsguard_status(ns: &str) -> Value {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_nsguard"))
        .args(["status", "-n", ns, "-o", "json", "--kubeconfig"])
        .arg(kubeconfig_path())
        .output()
        .await
        .expect("run nsguard status");
    assert!(out.status.success(), "nsguard status -n: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json")
}

/// `nsguard status` over the whole cluster, as the cluster admin: its standard output.
/// `nsguard status --all`, scoped to the test's shard as `nsguard run` is (other tests' profiles,
/// e.g. ones selecting every namespace, share the cluster).
async fn nsguard_status_all(op: &Operator, args: &[&str]) -> String {
    let shard = format!("{SHARD_LABEL}={}", op.shard);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_nsguard"))
        .args(["status", "--all", "--namespace-selector", &shard, "--profile-selector", &shard])
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig_path())
        .output()
        .await
        .expect("run nsguard status");
    assert!(out.status.success(), "nsguard status: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

async fn events(client: &Client, ns: &str) -> Vec<String> {
    nsguard_events(client, ns).await.into_iter().filter_map(|e| e.reason).collect()
}

#[tokio::test]
async fn a_privileged_pod_holds_enforce_at_privileged_until_it_is_gone_then_the_namespace_is_promoted() {
    let op = operator().await;
    let value = unique_name("priv");
    op.profile("rollout", selecting(&value, json!({}))).await;
    let ns = namespace_with_pods(&op, "priv", vec![privileged_pod("priv-app")]).await;
    select(&op.admin, &ns, &value).await;

    let held = wait_condition(&op.admin, &ns, "False", "EnforceHeld").await;
    let message = held.message.unwrap_or_default();
    assert!(message.contains("enforce held at privileged (target restricted:latest)"), "{message}");
    assert!(message.contains("pod priv-app: privileged"), "names the pod and its failed checks: {message}");
    // Enforce stays exactly where it was: no label, so the API server's default level, which on
    // this control plane is privileged (nsguard never writes a level the cluster default may
    // exceed); audit and warn at the target.
    let l = labels(&op.admin, &ns).await;
    assert_eq!(l.get(ENFORCE), None, "{l:?}");
    assert_eq!((l[AUDIT].as_str(), l[WARN].as_str()), ("restricted", "restricted"));
    // The Report's enforce check fails with the same detail.
    let report = Api::<DynamicObject>::namespaced_with(op.admin.clone(), &ns, &nsguard::core::report::resource());
    let report = eventually("the Report to show the hold", || async {
        report.get_opt("nsguard").await.expect("report").filter(|r| r.data["summary"]["fail"] == 1)
    })
    .await;
    let enforce =
        report.data["results"].as_array().expect("results").iter().find(|r| r["rule"] == "pod-security-enforce");
    assert!(enforce.is_some_and(|r| r["result"] == "fail" && r["message"].as_str().unwrap_or("").contains("priv-app")));
    // Events are published off the reconcile path, after the condition and the Report are written.
    eventually("an EnforceHeld event", || async {
        events(&op.admin, &ns).await.contains(&"EnforceHeld".to_owned()).then_some(())
    })
    .await;
    let status = nsguard_status(&ns).await;
    assert_eq!(status["condition"]["reason"], "EnforceHeld", "{status}");

    delete_pods(&op.admin, &ns).await;
    wait_condition(&op.admin, &ns, "True", "Compliant").await;
    assert_eq!(labels(&op.admin, &ns).await[ENFORCE], "restricted");
    eventually("an EnforcePromoted event", || async {
        events(&op.admin, &ns).await.contains(&"EnforcePromoted".to_owned()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_root_pod_holds_enforce_at_baseline_and_many_pods_are_counted() {
    let op = operator().await;
    let value = unique_name("root");
    op.profile("rollout", selecting(&value, json!({}))).await;
    let root = namespace_with_pods(&op, "root", vec![root_pod("web")]).await;
    // Eight privileged pods, and a root one: more pods than one warning names.
    let mut many: Vec<Pod> = (0..8).map(|i| privileged_pod(&format!("agent-{i}"))).collect();
    many.push(root_pod("web"));
    let crowd = namespace_with_pods(&op, "crowd", many).await;
    select(&op.admin, &root, &value).await;
    select(&op.admin, &crowd, &value).await;

    let held = wait_condition(&op.admin, &root, "False", "EnforceHeld").await;
    let message = held.message.unwrap_or_default();
    assert!(message.contains("enforce held at baseline"), "{message}");
    assert!(message.contains("pod web: "), "{message}");
    let l = labels(&op.admin, &root).await;
    assert_eq!((l[ENFORCE].as_str(), l[AUDIT].as_str(), l[WARN].as_str()), ("baseline", "restricted", "restricted"));

    // The first hardening's events are published after its writes: wait for them, so the window
    // below holds only re-checks.
    eventually("the first hardening's events", || async {
        let seen = events(&op.admin, &root).await;
        (seen.contains(&"Hardened".to_owned()) && seen.contains(&"EnforceHeld".to_owned())).then_some(())
    })
    .await;
    // Held costs re-checks, one dry-run each, and nothing else: no write to the namespace.
    let offset = audit_log_offset();
    let about_root =
        |e: &Value| e["objectRef"]["name"] == root.as_str() || e["objectRef"]["namespace"] == root.as_str();
    let dry_runs = eventually_within("three re-checks of the held namespace", Duration::from_secs(90), || async {
        let seen: Vec<Value> = audited_requests(NSGUARD_USER, offset).into_iter().filter(|e| about_root(e)).collect();
        (seen.iter().filter(|e| is_dry_run(e)).count() >= 3).then_some(seen)
    })
    .await;
    let writes: Vec<&Value> = dry_runs.iter().filter(|e| is_write(e)).collect();
    assert!(writes.is_empty(), "a held namespace is not written: {writes:#?}");

    let held = wait_condition(&op.admin, &crowd, "False", "EnforceHeld").await;
    let message = held.message.unwrap_or_default();
    assert!(message.contains("enforce held at privileged"), "{message}");
    // What keeps it from baseline: the eight privileged pods, counted (the root pod passes it).
    assert!(message.contains("8 pod(s) would violate baseline"), "the count: {message}");
    assert!(message.contains("pod agent-0 (and 7 other pods): privileged"), "{message}");
    assert_eq!(labels(&op.admin, &crowd).await.get(ENFORCE), None, "held where it was: the default, privileged");
    // The profile counts them as not compliant, with the reason.
    let profiles = Api::<DynamicObject>::all_with(op.admin.clone(), &profile_resource());
    let name = format!("rollout-{}", op.shard);
    eventually("the profile to list both held namespaces", || async {
        let p = profiles.get(&name).await.expect("profile");
        let listed = p.data["status"]["nonCompliant"].as_array().cloned().unwrap_or_default();
        (listed.len() == 2 && listed.iter().all(|n| n["reason"].as_str().unwrap_or("").contains("enforce held")))
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn rollout_immediate_enforces_the_target_at_once() {
    let op = operator().await;
    let value = unique_name("now");
    op.profile("rollout", selecting(&value, json!({"podSecurity": {"rollout": "Immediate"}}))).await;
    let ns = namespace_with_pods(&op, "now", vec![privileged_pod("priv-app")]).await;
    select(&op.admin, &ns, &value).await;
    wait_condition(&op.admin, &ns, "True", "Compliant").await;
    assert_eq!(labels(&op.admin, &ns).await[ENFORCE], "restricted");
}

#[tokio::test]
async fn new_empty_namespaces_in_a_burst_get_restricted_directly() {
    let op = operator().await;
    let value = unique_name("burst");
    op.profile("rollout", selecting(&value, json!({}))).await;
    // Every enforce value any of these namespaces ever shows, from before the first is created.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let api = Api::<Namespace>::all(op.admin.clone());
    let config = watcher::Config::default().labels(&format!("{SELECTED}={value}"));
    let recorder = {
        let seen = seen.clone();
        let stream = watcher(api.clone(), config).default_backoff();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(Ok(event)) = stream.next().await {
                if let watcher::Event::Apply(ns) | watcher::Event::InitApply(ns) = event
                    && let Some(level) = ns.labels().get(ENFORCE)
                {
                    seen.lock().expect("lock").push(level.clone());
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut names = Vec::new();
    for _ in 0..20 {
        names.push(op.namespace("burst", &[(SELECTED, value.as_str())]).await);
    }
    for ns in &names {
        wait_condition(&op.admin, ns, "True", "Compliant").await;
        assert_eq!(labels(&op.admin, ns).await[ENFORCE], "restricted");
    }
    recorder.abort();
    let seen = seen.lock().expect("lock").clone();
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|l| l == "restricted"), "no namespace passed through a lower level: {seen:?}");
}

fn in_seconds(s: i64) -> String {
    let t = k8s_openapi::jiff::Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_secs(s);
    t.round(k8s_openapi::jiff::Unit::Second).expect("round").to_string()
}

#[tokio::test]
async fn an_exception_lowers_enforce_until_it_expires_and_one_too_far_ahead_is_refused() {
    let op = operator().await;
    let value = unique_name("exc");
    let exceptions = json!({"exceptions": [
        {"namespaces": ["exc-*"], "podSecurity": {"enforce": {"level": "baseline"}},
         "expires": in_seconds(20), "reason": "SEC-1 legacy batch"},
        {"namespaces": ["never-*"], "podSecurity": {"enforce": {"level": "privileged"}},
         "expires": in_seconds(200 * 24 * 3600), "reason": "too long"},
    ]});
    let name = op.profile("rollout", selecting(&value, exceptions)).await;
    let ns = op.namespace("exc", &[(SELECTED, value.as_str())]).await;
    let never = op.namespace("never", &[(SELECTED, value.as_str())]).await;

    let c = wait_condition(&op.admin, &ns, "True", "Compliant").await;
    assert!(c.message.unwrap_or_default().contains("exception 0 enforces baseline:latest until"));
    let status = nsguard_status(&ns).await;
    let shown = status["condition"]["message"].as_str().unwrap_or_default().to_owned();
    assert!(shown.contains("exception 0 enforces baseline:latest") && shown.contains("SEC-1"), "{status}");
    let enforce =
        status["checks"].as_array().and_then(|c| c.iter().find(|c| c["rule"] == "pod-security-enforce").cloned());
    assert!(enforce.as_ref().is_some_and(|c| c["result"] == "warn"), "the Report warns of the exception: {status}");
    // The cluster-wide view names it too, in JSON and after the table.
    let all = nsguard_status_all(&op, &["-o", "json"]).await;
    let all: Value = serde_json::from_str(&all).expect("json");
    let row = all["namespaces"].as_array().and_then(|r| r.iter().find(|r| r["namespace"] == ns.as_str()).cloned());
    let shown = row.as_ref().and_then(|r| r["exception"].as_str()).unwrap_or_default();
    assert!(shown.starts_with("exception 0 enforces baseline:latest until") && shown.contains("SEC-1"), "{row:?}");
    let table = nsguard_status_all(&op, &[]).await;
    assert!(table.contains(&format!("{ns}: exception 0 enforces baseline:latest until")), "{table}");
    let l = labels(&op.admin, &ns).await;
    assert_eq!((l[ENFORCE].as_str(), l[AUDIT].as_str(), l[WARN].as_str()), ("baseline", "restricted", "restricted"));
    // The refused exception is not applied: its namespace enforces the target.
    wait_condition(&op.admin, &never, "True", "Compliant").await;
    assert_eq!(labels(&op.admin, &never).await[ENFORCE], "restricted");
    let profiles = Api::<DynamicObject>::all_with(op.admin.clone(), &profile_resource());
    let status = eventually("the profile status to show its exceptions", || async {
        let p = profiles.get(&name).await.expect("profile");
        let e = p.data["status"]["exceptions"].clone();
        (e["active"] == 1).then_some(e)
    })
    .await;
    assert!(status["nextExpiry"].is_string(), "{status}");
    let refused = status["refused"].as_array().expect("refused").clone();
    assert_eq!(refused.len(), 1, "{status}");
    assert!(refused[0].as_str().unwrap_or("").contains("spec.exceptions[1]: expires"), "{status}");
    assert!(status["expiringSoon"].as_array().is_some_and(|s| s.len() == 1), "{status}");
    let active = op
        .metrics
        .exceptions_active
        .get_or_create(&nsguard::ops::metrics::ProfileLabels { profile: name.clone() })
        .get();
    assert_eq!(active, 1);

    // At expiry: the target again (no pods: straight through the gate), with an event.
    eventually_within("the exception to expire", Duration::from_secs(90), || async {
        (labels(&op.admin, &ns).await[ENFORCE] == "restricted").then_some(())
    })
    .await;
    eventually("an ExceptionExpired event", || async {
        events(&op.admin, &ns).await.contains(&"ExceptionExpired".to_owned()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_exception_that_expires_over_a_violating_pod_leaves_the_namespace_held_not_broken() {
    let op = operator().await;
    let value = unique_name("exh");
    let exceptions = json!({"exceptions": [
        {"namespaces": ["exh-*"], "podSecurity": {"enforce": {"level": "baseline"}},
         "expires": in_seconds(30), "reason": "SEC-2 root batch job"},
    ]});
    op.profile("rollout", selecting(&value, exceptions)).await;
    // A pod that passes baseline and fails restricted (it runs as root).
    let ns = namespace_with_pods(&op, "exh", vec![root_pod("batch")]).await;
    select(&op.admin, &ns, &value).await;

    // Inside the window the exception sets baseline, which the pod passes: compliant.
    let c = wait_condition(&op.admin, &ns, "True", "Compliant").await;
    assert!(c.message.unwrap_or_default().contains("exception 0 enforces baseline:latest until"));
    assert_eq!(labels(&op.admin, &ns).await[ENFORCE], "baseline");

    // At expiry the target goes through the gate: the pod would violate restricted, so enforce is
    // held at baseline (never raised over the pod), reported, and the expiry is announced.
    let held = eventually_within("the exception to expire into a hold", Duration::from_secs(90), || async {
        hardened(&op.admin, &ns).await.filter(|c| c.reason.as_deref() == Some("EnforceHeld"))
    })
    .await;
    assert_eq!(held.status, "False");
    let message = held.message.unwrap_or_default();
    assert!(message.contains("enforce held at baseline (target restricted:latest)"), "{message}");
    assert!(message.contains("pod batch: "), "names the pod: {message}");
    let l = labels(&op.admin, &ns).await;
    assert_eq!((l[ENFORCE].as_str(), l[AUDIT].as_str(), l[WARN].as_str()), ("baseline", "restricted", "restricted"));
    eventually("ExceptionExpired and EnforceHeld events", || async {
        let seen = events(&op.admin, &ns).await;
        (seen.contains(&"ExceptionExpired".to_owned()) && seen.contains(&"EnforceHeld".to_owned())).then_some(())
    })
    .await;

    // Once the pod is gone the namespace is promoted to the target.
    delete_pods(&op.admin, &ns).await;
    wait_condition(&op.admin, &ns, "True", "Compliant").await;
    assert_eq!(labels(&op.admin, &ns).await[ENFORCE], "restricted");
}

#[tokio::test]
async fn an_exception_whose_expiry_is_not_a_date_time_is_rejected_at_apply_naming_the_field() {
    let admin = admin_client().await;
    let profile = json!({
        "apiVersion": "nsguard.io/v1alpha1", "kind": "HardeningProfile",
        "metadata": {"name": unique_name("bad-exception")},
        "spec": {"exceptions": [{"namespaces": ["a"], "podSecurity": {"enforce": {"level": "baseline"}},
                 "expires": "next tuesday", "reason": "r"}]},
    });
    let name = profile["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    let profiles = Api::<DynamicObject>::all_with(admin, &profile_resource());
    let err = profiles.patch(&name, &PatchParams::apply("test"), &Patch::Apply(&profile)).await.expect_err("rejected");
    let text = err.to_string();
    assert!(text.contains("spec.exceptions[0].expires"), "{text}");
    // And one without an expiry at all.
    let mut endless = profile.clone();
    if let Some(e) = endless["spec"]["exceptions"][0].as_object_mut() {
        e.remove("expires");
    }
    let err = profiles.patch(&name, &PatchParams::apply("test"), &Patch::Apply(&endless)).await.expect_err("rejected");
    let text = err.to_string();
    assert!(text.contains("spec.exceptions[0].expires") && text.contains("Required"), "{text}");
}

#[tokio::test]
async fn a_tampered_enforce_label_is_restored_at_once_even_with_a_violating_pod_created_meanwhile() {
    let op = operator().await;
    let value = unique_name("tamper");
    op.profile("rollout", selecting(&value, json!({}))).await;
    let ns = op.namespace("tamper", &[(SELECTED, value.as_str())]).await;
    wait_condition(&op.admin, &ns, "True", "Compliant").await;
    // While no nsguard runs: someone lowers enforce and starts a privileged pod.
    let shard = op.shard.clone();
    drop(op);
    let admin = admin_client().await;
    let patch = json!({"metadata": {"labels": {ENFORCE: "privileged"}}});
    Api::<Namespace>::all(admin.clone())
        .patch(
            &ns,
            &PatchParams::apply("tamperer").force(),
            &Patch::Apply(&json!({
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": patch["metadata"]["labels"]}
            })),
        )
        .await
        .expect("lower enforce");
    Api::<Pod>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &privileged_pod("intruder"))
        .await
        .expect("pod");
    // nsguard again: a correction, healed at once, not a raise held back by the pod.
    let op = Operator::start_in(shard, |s| s.enforce_recheck = Duration::from_secs(2)).await;
    eventually("enforce restored to restricted", || async {
        (labels(&op.admin, &ns).await.get(ENFORCE).map(String::as_str) == Some("restricted")).then_some(())
    })
    .await;
    let c = wait_condition(&op.admin, &ns, "True", "Compliant").await;
    assert_ne!(c.reason.as_deref(), Some("EnforceHeld"));
    assert!(!events(&op.admin, &ns).await.contains(&"EnforceHeld".to_owned()));
}
