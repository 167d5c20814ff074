//! Fail closed: nsguard never weakens a namespace because its own view of the profiles went wrong.
//! A profile that merely vanishes from view (a `--profile-selector` that matches nothing, its labels
//! edited out of the selector) leaves its namespaces as they are, reported as orphaned; only the
//! explicit act of deleting it releases them, through nsguard's finalizer.

mod support;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Client, ResourceExt};
use nsguard::core::model::PROFILE_FINALIZER;
use serde_json::json;
use support::operator::{Operator, SHARD_LABEL, profile_resource};
use support::*;

const ENFORCE: &str = "pod-security.kubernetes.io/enforce";

/// What nsguard applied to `ns`: its enforce label and the names of its NetworkPolicies.
async fn hardening(client: &Client, ns: &str) -> (Option<String>, Vec<String>) {
    let namespace = Api::<Namespace>::all(client.clone()).get(ns).await.expect("namespace");
    let policies = Api::<NetworkPolicy>::namespaced(client.clone(), ns).list(&Default::default()).await.expect("list");
    let mut names: Vec<String> = policies.items.iter().map(ResourceExt::name_any).collect();
    names.sort();
    (namespace.labels().get(ENFORCE).cloned(), names)
}

fn hardened() -> (Option<String>, Vec<String>) {
    (Some("restricted".into()), vec!["nsguard-allow-dns".into(), "nsguard-default-deny".into()])
}

#[tokio::test]
async fn a_profile_out_of_view_releases_nothing_and_deleting_it_releases_its_namespaces() {
    let first = Operator::start().await;
    let admin = first.admin.clone();
    let shard = first.shard.clone();
    let profile = first.profile("fc", json!({})).await;
    let ns = first.namespace("fc", &[]).await;
    let profiles = Api::<DynamicObject>::all_with(admin.clone(), &profile_resource());
    eventually("the namespace to be hardened", || async { (hardening(&admin, &ns).await == hardened()).then_some(()) })
        .await;
    eventually("nsguard's finalizer on the profile", || async {
        profiles.get(&profile).await.ok()?.finalizers().iter().any(|f| f == PROFILE_FINALIZER).then_some(())
    })
    .await;
    drop(first);

    // 1. Restarted with a profile selector that matches no profile: nothing is released.
    let blind = Operator::start_with(|s| {
        s.namespace_selector = Some(format!("{SHARD_LABEL}={shard}"));
        s.profile_selector = Some(format!("{SHARD_LABEL}={shard},tier=canary"));
    })
    .await;
    eventually("the namespace to be reported orphaned", || async { (blind.metrics.orphaned.get() == 1).then_some(()) })
        .await;
    assert_eq!(hardening(&admin, &ns).await, hardened(), "a profile out of view released its namespace");
    eventually("an Orphaned event", || async {
        nsguard_events(&admin, &ns).await.iter().any(|e| e.reason.as_deref() == Some("Orphaned")).then_some(())
    })
    .await;
    drop(blind);

    // 2. The profile's labels edited out of the selector while nsguard runs: nothing is released.
    let watching = Operator::start_with(|s| {
        s.namespace_selector = Some(format!("{SHARD_LABEL}={shard}"));
        s.profile_selector = Some(format!("{SHARD_LABEL}={shard}"));
    })
    .await;
    let relabel = |value: &str| json!({"metadata": {"labels": {SHARD_LABEL: value}}});
    profiles.patch(&profile, &PatchParams::default(), &Patch::Merge(&relabel("elsewhere"))).await.expect("relabel");
    eventually("the namespace to be reported orphaned", || async {
        (watching.metrics.orphaned.get() == 1).then_some(())
    })
    .await;
    assert_eq!(hardening(&admin, &ns).await, hardened(), "a relabelled profile released its namespace");
    profiles.patch(&profile, &PatchParams::default(), &Patch::Merge(&relabel(&shard))).await.expect("relabel back");
    eventually("the profile back in view", || async { (watching.metrics.orphaned.get() == 0).then_some(()) }).await;

    // 3. Deleting the profile is the explicit act: its namespace is released, then the profile goes.
    profiles.delete(&profile, &DeleteParams::default()).await.expect("delete profile");
    eventually("the namespace to be released", || async {
        (hardening(&admin, &ns).await == (None, vec![])).then_some(())
    })
    .await;
    eventually("the deleted profile to go once released", || async {
        profiles.get_opt(&profile).await.expect("get profile").is_none().then_some(())
    })
    .await;
    let released = nsguard_events(&admin, &ns).await.iter().any(|e| e.reason.as_deref() == Some("Released"));
    assert!(released, "no Released event");
}

#[tokio::test]
async fn a_users_policy_with_nsguards_name_is_left_alone_and_reported() {
    let op = Operator::start().await;
    let admin = op.admin.clone();
    let ns = op.namespace("theirs", &[]).await;
    // Someone else's policy that happens to carry nsguard's name: it allows all ingress.
    let theirs: NetworkPolicy = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "nsguard-default-deny", "namespace": ns},
        "spec": {"podSelector": {}, "ingress": [{}], "policyTypes": ["Ingress"]},
    }))
    .expect("policy");
    let policies = Api::<NetworkPolicy>::namespaced(admin.clone(), &ns);
    let created = policies.create(&Default::default(), &theirs).await.expect("create their policy");
    let profile = op.profile("theirs", json!({})).await;

    eventually("the rest of the hardening", || async {
        let (enforce, names) = hardening(&admin, &ns).await;
        (enforce.as_deref() == Some("restricted") && names.contains(&"nsguard-allow-dns".to_owned())).then_some(())
    })
    .await;
    eventually("a NameConflict event naming the policy", || async {
        nsguard_events(&admin, &ns)
            .await
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("NameConflict")
                    && e.note.as_deref().unwrap_or_default().contains("nsguard-default-deny")
            })
            .then_some(())
    })
    .await;
    let now = policies.get("nsguard-default-deny").await.expect("their policy");
    assert_eq!(now.uid(), created.uid(), "their policy was replaced");
    assert_eq!(now.spec, created.spec, "their policy was changed");
    assert!(!now.labels().contains_key("app.kubernetes.io/managed-by"), "nsguard labelled it as its own");

    // Releasing the namespace leaves their policy in place.
    let profiles = Api::<DynamicObject>::all_with(admin.clone(), &profile_resource());
    profiles.delete(&profile, &DeleteParams::default()).await.expect("delete profile");
    eventually("the namespace to be released", || async {
        (hardening(&admin, &ns).await == (None, vec!["nsguard-default-deny".to_owned()])).then_some(())
    })
    .await;
    assert_eq!(policies.get("nsguard-default-deny").await.expect("their policy").uid(), created.uid());
}

/// A profile deleted moments after its creation — before or after nsguard put its finalizer on —
/// never leaves a namespace hardened under a profile that is gone (orphaned for good): nsguard
/// hardens nothing under a profile until the profile carries its finalizer.
#[tokio::test]
async fn a_profile_deleted_at_once_leaves_no_namespace_orphaned() {
    let op = Operator::start().await;
    let admin = op.admin.clone();
    let profiles = Api::<DynamicObject>::all_with(admin.clone(), &profile_resource());
    let mut pairs = Vec::new();
    for i in 0..8 {
        let name = format!("brief{i}");
        let ns = op.namespace(&name, &[("brief", &name)]).await;
        let profile = op.profile(&name, json!({"namespaceSelector": {"matchLabels": {"brief": name}}})).await;
        // Back to back, as a GitOps tool reverting a commit would: the race is the point.
        tokio::time::sleep(std::time::Duration::from_millis(20 * i)).await;
        profiles.delete(&profile, &DeleteParams::default()).await.expect("delete profile");
        pairs.push((ns, profile));
    }
    for (ns, profile) in &pairs {
        eventually("the deleted profile to go", || async {
            profiles.get_opt(profile).await.expect("get profile").is_none().then_some(())
        })
        .await;
        eventually("the namespace to carry no hardening and no claim of the gone profile", || async {
            let namespace = Api::<Namespace>::all(admin.clone()).get(ns).await.expect("namespace");
            let claimed = namespace.annotations().contains_key(nsguard::core::model::PROFILE_ANNOTATION);
            (!claimed && hardening(&admin, ns).await == (None, vec![])).then_some(())
        })
        .await;
    }
    assert_eq!(op.metrics.orphaned.get(), 0, "a namespace was left orphaned");
}
