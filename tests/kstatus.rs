//! Flux's view of a HardeningProfile: the upstream kstatus module (sigs.k8s.io/cli-utils, run by
//! tests/kstatus, our own small Go program) over live profiles that an in-process nsguard keeps,
//! on the local control plane. kstatus reads `status.observedGeneration` and the `Reconciling` and
//! `Stalled` conditions: InProgress while namespaces converge (here: their writes keep failing),
//! Failed while the spec is invalid, Current once every namespace is compliant.

mod support;

use std::process::{Command, Stdio};
use std::sync::OnceLock;

use k8s_openapi::api::core::v1::ResourceQuota;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use serde_json::{Value, json};
use support::operator::{self, Operator, profile_resource};
use support::*;

/// The kstatus program, built once into the cache outside the clone.
fn kstatus_bin() -> &'static std::path::Path {
    static BIN: OnceLock<std::path::PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cluster/kstatus.sh");
        let out = Command::new(&script).output().expect("run tests/cluster/kstatus.sh");
        assert!(out.status.success(), "kstatus.sh: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().last().expect("a path").trim().into()
    })
}

/// kstatus's verdict on the live profile `name`: (status, message).
async fn kstatus(name: &str) -> (String, String) {
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || {
        let live = kubectl(&["get", "hardeningprofile", &name, "-o", "json"]);
        assert!(live.status.success(), "kubectl get hp {name}: {}", String::from_utf8_lossy(&live.stderr));
        let mut child = Command::new(kstatus_bin())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kstatus");
        std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), &live.stdout).expect("write stdin");
        let out = child.wait_with_output().expect("kstatus output");
        assert!(out.status.success(), "kstatus: {}", String::from_utf8_lossy(&out.stderr));
        let verdicts: Value = serde_json::from_slice(&out.stdout).expect("kstatus prints JSON");
        let v = &verdicts[0];
        (v["status"].as_str().unwrap_or_default().to_owned(), v["message"].as_str().unwrap_or_default().to_owned())
    })
    .await
    .expect("kstatus task")
}

/// Waits until kstatus says `want` of profile `name`, and returns its message.
async fn wait_kstatus(name: &str, want: &str) -> String {
    eventually(&format!("kstatus {want} for profile {name}"), || async {
        let (status, message) = kstatus(name).await;
        (status == want).then_some(message)
    })
    .await
}

/// The profile's status as nsguard wrote it (once it has written one for the current generation).
async fn written_status(admin: &kube::Client, name: &str) -> Option<Value> {
    let obj = Api::<DynamicObject>::all_with(admin.clone(), &profile_resource()).get(name).await.ok()?;
    let status = obj.data.get("status")?.clone();
    (status["observedGeneration"].as_i64() == obj.metadata.generation).then_some(status)
}

fn condition<'a>(status: &'a Value, type_: &str) -> Option<&'a Value> {
    status["conditions"].as_array()?.iter().find(|c| c["type"] == type_)
}

#[tokio::test]
async fn compliant_profile_is_current() {
    let op = Operator::start().await;
    op.namespace("kst-ok", &[("team", "current")]).await;
    let profile = op.profile("kst-current", json!({"namespaceSelector": {"matchLabels": {"team": "current"}}})).await;
    let status = eventually("nsguard's status: 1 of 1 compliant, Ready", || async {
        let s = written_status(&op.admin, &profile).await?;
        (s["matchedNamespaces"] == 1 && s["compliantNamespaces"] == 1 && condition(&s, "Ready")?["status"] == "True")
            .then_some(s)
    })
    .await;
    assert!(condition(&status, "Reconciling").is_none() && condition(&status, "Stalled").is_none(), "{status}");
    assert_eq!(kstatus(&profile).await.0, "Current");
}

#[tokio::test]
async fn converging_profile_is_in_progress_until_its_namespaces_comply() {
    let op = Operator::start().await;
    let admin = op.admin.clone();
    // A namespace where the API refuses nsguard's NetworkPolicies (a quota of none): its writes
    // fail and are retried, so it keeps converging.
    let ns = create_namespace(&admin, "kst-stuck", &[]).await;
    let quota: ResourceQuota = serde_json::from_value(json!({"metadata": {"name": "no-policies"},
        "spec": {"hard": {"count/networkpolicies.networking.k8s.io": "0"}}}))
    .expect("quota");
    let quotas = Api::<ResourceQuota>::namespaced(admin.clone(), &ns);
    quotas.create(&PostParams::default(), &quota).await.expect("quota");
    // What the resourcequota controller (not run here) would write; admission enforces it then.
    let status = json!({"status": {"hard": {"count/networkpolicies.networking.k8s.io": "0"},
        "used": {"count/networkpolicies.networking.k8s.io": "0"}}});
    quotas.patch_status("no-policies", &Default::default(), &kube::api::Patch::Merge(&status)).await.expect("status");
    let policies = Api::<k8s_openapi::api::networking::v1::NetworkPolicy>::namespaced(admin.clone(), &ns);
    let probe: k8s_openapi::api::networking::v1::NetworkPolicy =
        serde_json::from_value(json!({"metadata": {"name": "probe"}, "spec": {"podSelector": {}}})).expect("policy");
    let dry_run = PostParams { dry_run: true, ..Default::default() };
    eventually("the quota to refuse NetworkPolicies", || async {
        matches!(policies.create(&dry_run, &probe).await, Err(kube::Error::Api(s)) if s.code == 403).then_some(())
    })
    .await;
    let shard = format!("{}={}", operator::SHARD_LABEL, op.shard);
    let namespace = ns.clone();
    let label = tokio::task::spawn_blocking(move || kubectl(&["label", "namespace", &namespace, &shard, "team=stuck"]))
        .await
        .expect("task");
    assert!(label.status.success(), "{}", String::from_utf8_lossy(&label.stderr));
    let profile = op.profile("kst-progress", json!({"namespaceSelector": {"matchLabels": {"team": "stuck"}}})).await;

    let message = wait_kstatus(&profile, "InProgress").await;
    let status = written_status(&admin, &profile).await.expect("nsguard wrote the status");
    let reconciling = condition(&status, "Reconciling").expect("Reconciling");
    assert_eq!(reconciling["status"], "True");
    assert_eq!(message, reconciling["message"], "kstatus reports nsguard's Reconciling condition");
    assert!(message.contains(&ns), "the message names the namespace: {message}");

    // The quota goes: nsguard's retry succeeds, and kstatus says Current.
    quotas.delete("no-policies", &DeleteParams::default()).await.expect("delete quota");
    eventually("the namespace to comply", || async {
        let s = written_status(&admin, &profile).await?;
        (s["compliantNamespaces"] == 1 && condition(&s, "Reconciling").is_none()).then_some(())
    })
    .await;
    assert_eq!(kstatus(&profile).await.0, "Current");
}

/// Adds `spec.futureField` to the CRD's schema: a CRD newer than this nsguard (applied before its
/// upgrade), under which the API server stores a field nsguard does not know.
const ADD_FIELD: &str = r#"[{"op": "add", "path": "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/futureField", "value": {"type": "string"}}]"#;
const REMOVE_FIELD: &str = r#"[{"op": "test", "path": "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/futureField", "value": {"type": "string"}}, {"op": "remove", "path": "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/futureField"}]"#;

fn patch_crd(patch: &str) -> std::process::Output {
    kubectl(&["patch", "crd", "hardeningprofiles.nsguard.io", "--type=json", "-p", patch])
}

#[tokio::test]
async fn profile_with_an_invalid_spec_is_failed() {
    let admin = admin_client().await;
    let added = tokio::task::spawn_blocking(|| patch_crd(ADD_FIELD)).await.expect("task");
    assert!(added.status.success(), "patching the CRD: {}", String::from_utf8_lossy(&added.stderr));
    // The body runs in its own task, so the CRD is restored whatever happens in it.
    let body = tokio::spawn(async move {
        let name = unique_name("kst-failed");
        let profile = json!({"apiVersion": "nsguard.io/v1alpha1", "kind": "HardeningProfile",
            "metadata": {"name": name, "labels": {operator::SHARD_LABEL: "pending"}},
            "spec": {"namespaceSelector": {"matchLabels": {"team": "none"}}, "futureField": "on"}});
        let api = Api::<DynamicObject>::all_with(admin.clone(), &profile_resource());
        let object: DynamicObject = serde_json::from_value(profile).expect("profile");
        // The API server serves the new schema within moments of the patch. Applied again on every
        // try: a first write that raced the schema change had the field pruned, and a create-only
        // retry would then never store it.
        let apply = kube::api::PatchParams::apply("kstatus-test").force();
        eventually("the API server to store spec.futureField", || async {
            let _ = api.patch(&name, &apply, &kube::api::Patch::Apply(&object)).await;
            let stored = api.get(&name).await.ok()?;
            (stored.data["spec"]["futureField"] == "on").then_some(())
        })
        .await;
        // nsguard starts (its watches on the new schema's storage) and is handed the profile.
        let op = Operator::start().await;
        let patch = json!({"metadata": {"labels": {operator::SHARD_LABEL: op.shard}}});
        api.patch(&name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await.expect("label");
        let message = wait_kstatus(&name, "Failed").await;
        assert!(message.starts_with("spec.futureField:"), "kstatus names the field: {message}");
        let status = written_status(&admin, &name).await.expect("nsguard wrote the status");
        let stalled = condition(&status, "Stalled").expect("Stalled");
        assert_eq!((stalled["status"].as_str(), stalled["reason"].as_str()), (Some("True"), Some("InvalidSpec")));
        assert!(condition(&status, "Reconciling").is_none(), "{status}");
        api.delete(&name, &DeleteParams::default()).await.expect("delete the profile");
        eventually("the profile to go", || async { api.get_opt(&name).await.ok().flatten().is_none().then_some(()) })
            .await;
    })
    .await;
    let removed = tokio::task::spawn_blocking(|| patch_crd(REMOVE_FIELD)).await.expect("task");
    assert!(removed.status.success(), "restoring the CRD: {}", String::from_utf8_lossy(&removed.stderr));
    if let Err(e) = body {
        std::panic::resume_unwind(e.into_panic());
    }
}
