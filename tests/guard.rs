//! The tamper guard (`config/guard`, ValidatingAdmissionPolicies) on the local control plane. It is
//! cluster-wide, so these tests run with the fault tests (`make faults`), one at a time, and take
//! it down when they end.
//!
//! NetworkPolicy, ServiceAccount and Pod rules act as a user with only an `admin` RoleBinding in
//! the namespace; Namespace rules as a user a ClusterRole lets patch namespaces (`admin` cannot).

mod support;

use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleBinding, RoleRef, Subject};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::operator::Operator;
use support::*;

const ENFORCE: &str = "pod-security.kubernetes.io/enforce";
const BREAK_GLASS: &str = "nsguard:break-glass";

/// The guard, installed for one test and taken down after it (also when it fails).
struct Guard;

impl Guard {
    fn install(dir: &str) -> Self {
        let out = kubectl(&["apply", "-k", dir]);
        assert!(out.status.success(), "kubectl apply -k {dir}: {}", String::from_utf8_lossy(&out.stderr));
        Guard
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "-k", "config/guard", "--ignore-not-found"]);
    }
}

/// A user that may patch every Namespace (and nothing else cluster-wide), bound by `group` or name.
async fn namespace_patcher(admin: &Client, subject: Subject) {
    let role = ClusterRole {
        metadata: ObjectMeta { name: Some("guard-test-namespace-patcher".into()), ..Default::default() },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["namespaces".into()]),
            verbs: vec!["get".into(), "patch".into(), "update".into()],
            ..Default::default()
        }]),
        ..Default::default()
    };
    let apply = PatchParams::apply("guard-test").force();
    Api::<ClusterRole>::all(admin.clone())
        .patch("guard-test-namespace-patcher", &apply, &Patch::Apply(&role))
        .await
        .expect("ClusterRole");
    let name = format!("guard-test-{}", subject.name.replace(':', "-"));
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta { name: Some(name.clone()), ..Default::default() },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: "guard-test-namespace-patcher".into(),
        },
        subjects: Some(vec![subject]),
    };
    Api::<ClusterRoleBinding>::all(admin.clone()).patch(&name, &apply, &Patch::Apply(&binding)).await.expect("binding");
}

fn user(name: &str) -> Subject {
    Subject {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: "User".into(),
        name: name.into(),
        namespace: None,
    }
}

fn group(name: &str) -> Subject {
    Subject {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: "Group".into(),
        name: name.into(),
        namespace: None,
    }
}

/// Binds the break-glass group to `admin` in `ns` (break-glass still needs RBAC rights).
async fn bind_break_glass(admin: &Client, ns: &str) {
    let binding = RoleBinding {
        metadata: ObjectMeta { name: Some("break-glass".into()), ..Default::default() },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: "admin".into(),
        },
        subjects: Some(vec![group(BREAK_GLASS)]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), ns).create(&PostParams::default(), &binding).await.expect("binding");
}

/// The request was denied by the guard, naming `profile`.
fn denied<T: std::fmt::Debug>(result: Result<T, kube::Error>, profile: &str, what: &str) {
    match result {
        Err(kube::Error::Api(s)) if s.code == 403 || s.code == 422 => {
            assert!(
                s.message.contains(profile),
                "{what}: the denial does not name the profile {profile}: {}",
                s.message
            );
            assert!(s.message.contains(BREAK_GLASS), "{what}: the denial does not say how to change it: {}", s.message);
        }
        other => panic!("{what}: want a denial by the tamper guard, got {other:?}"),
    }
}

fn allowed<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) -> T {
    result.unwrap_or_else(|e| panic!("{what}: want it allowed, got {e}"))
}

/// Waits until `ns` is hardened with the guard's markers, its `default` ServiceAccount labelled.
async fn wait_guarded(client: &Client, ns: &str) {
    eventually(&format!("{ns} hardened and marked for the guard"), || async {
        let namespace = Api::<Namespace>::all(client.clone()).get(ns).await.ok()?;
        let marked = namespace.labels().get("nsguard.io/guarded").is_some_and(|v| v == "true")
            && namespace.labels().get(ENFORCE).is_some_and(|v| v == "restricted");
        let sa = Api::<ServiceAccount>::namespaced(client.clone(), ns).get("default").await.ok()?;
        let sa_marked = sa.labels().get("nsguard.io/token-guard").is_some_and(|v| v == "true")
            && sa.automount_service_account_token == Some(false);
        let policy = Api::<NetworkPolicy>::namespaced(client.clone(), ns).get_opt("nsguard-default-deny").await.ok()?;
        (marked && sa_marked && policy.is_some()).then_some(())
    })
    .await;
}

/// Waits until the API server enforces the guard (it loads new policies within moments): a dry-run
/// relabelling of guarded namespace `ns` is denied.
async fn wait_in_force(admin: &Client, ns: &str) {
    eventually("the tamper guard in force", || async {
        let patch = json!({"metadata": {"labels": {ENFORCE: "privileged"}}});
        let dry = PatchParams { dry_run: true, ..Default::default() };
        Api::<Namespace>::all(admin.clone()).patch(ns, &dry, &Patch::Merge(&patch)).await.is_err().then_some(())
    })
    .await;
}

async fn enforce_level(client: &Client, ns: &str) -> Option<String> {
    Api::<Namespace>::all(client.clone()).get(ns).await.ok()?.labels().get(ENFORCE).cloned()
}

#[tokio::test]
async fn the_guard_denies_tampering_lets_nsguard_and_break_glass_through_and_never_blocks_deletion() {
    let op = Operator::start().await;
    let admin = op.admin.clone();
    let _guard = Guard::install("config/guard");
    let profile = op.profile("guarded", json!({"serviceAccounts": {"exempt": ["ci-bot"]}})).await;
    let ns = op.namespace("guarded", &[]).await;
    wait_guarded(&admin, &ns).await;
    wait_in_force(&admin, &ns).await;
    let sas = Api::<ServiceAccount>::namespaced(admin.clone(), &ns);
    let ci_bot = ServiceAccount {
        metadata: ObjectMeta { name: Some("ci-bot".into()), ..Default::default() },
        ..Default::default()
    };
    sas.create(&PostParams::default(), &ci_bot).await.expect("ci-bot");

    // A namespace owner (admin RoleBinding): NetworkPolicy, ServiceAccount and Pod rules.
    let owner = format!("owner-{ns}");
    bind_namespace_admin(&admin, &ns, &owner).await;
    let me = client_as_user(&owner).await;
    let policies = Api::<NetworkPolicy>::namespaced(me.clone(), &ns);
    denied(
        policies.delete("nsguard-default-deny", &DeleteParams::default()).await,
        &profile,
        "delete the default-deny policy",
    );
    let edit = json!({"metadata": {"labels": {"edited": "yes"}}, "spec": {"policyTypes": ["Ingress"]}});
    denied(
        policies.patch("nsguard-default-deny", &PatchParams::default(), &Patch::Merge(&edit)).await,
        &profile,
        "edit the default-deny policy",
    );
    let token_on = json!({"automountServiceAccountToken": true});
    let my_sas = Api::<ServiceAccount>::namespaced(me.clone(), &ns);
    denied(
        my_sas.patch("default", &PatchParams::default(), &Patch::Merge(&token_on)).await,
        &profile,
        "re-enable the token",
    );
    let unlabel =
        json!({"metadata": {"labels": {"nsguard.io/token-guard": null}}, "automountServiceAccountToken": true});
    denied(
        my_sas.patch("default", &PatchParams::default(), &Patch::Merge(&unlabel)).await,
        &profile,
        "remove the ServiceAccount's marker with the token",
    );
    let pods = Api::<Pod>::namespaced(me.clone(), &ns);
    denied(
        pods.create(&PostParams::default(), &restricted_pod("token", "default", Some(true))).await,
        &profile,
        "a Pod mounting a token",
    );
    allowed(
        pods.create(&PostParams::default(), &restricted_pod("exempt", "ci-bot", Some(true))).await,
        "a Pod of an exempt ServiceAccount",
    );
    // Exempt ServiceAccounts are not guarded.
    allowed(sas.patch("ci-bot", &PatchParams::default(), &Patch::Merge(&token_on)).await, "an exempt ServiceAccount");

    // A user who may patch Namespaces: the Namespace rules.
    let patcher = format!("patcher-{ns}");
    namespace_patcher(&admin, user(&patcher)).await;
    let namespaces = Api::<Namespace>::all(client_as_user(&patcher).await);
    let merge = |labels: Value| Patch::Merge(json!({"metadata": {"labels": labels}}));
    denied(
        namespaces.patch(&ns, &PatchParams::default(), &merge(json!({ENFORCE: "privileged"}))).await,
        &profile,
        "relabel to privileged",
    );
    denied(
        namespaces.patch(&ns, &PatchParams::default(), &merge(json!({ENFORCE: null}))).await,
        &profile,
        "remove enforce",
    );
    denied(
        namespaces
            .patch(&ns, &PatchParams::default(), &merge(json!({"nsguard.io/guarded": null, ENFORCE: "privileged"})))
            .await,
        &profile,
        "remove the marker with a label change",
    );
    let unannotate = Patch::Merge(json!({"metadata": {"annotations": {"nsguard.io/profile": null}}}));
    denied(namespaces.patch(&ns, &PatchParams::default(), &unannotate).await, &profile, "remove nsguard's annotation");
    let exempt_all =
        Patch::Merge(json!({"metadata": {"annotations": {"nsguard.io/exempt-service-accounts": "default"}}}));
    denied(namespaces.patch(&ns, &PatchParams::default(), &exempt_all).await, &profile, "change the exemption marker");
    let added = Patch::Merge(json!({"metadata": {"annotations": {"nsguard.io/pod-token-override": "Allow"}}}));
    denied(namespaces.patch(&ns, &PatchParams::default(), &added).await, &profile, "add an nsguard.io annotation");
    // Other labels are the owner's to change.
    allowed(
        namespaces.patch(&ns, &PatchParams::default(), &merge(json!({"team": "shop"}))).await,
        "an unrelated label",
    );

    // Break glass: allowed; nsguard then heals.
    bind_break_glass(&admin, &ns).await;
    namespace_patcher(&admin, group(BREAK_GLASS)).await;
    let glass = client_as_member("on-call", &[BREAK_GLASS]).await;
    allowed(
        Api::<NetworkPolicy>::namespaced(glass.clone(), &ns)
            .delete("nsguard-default-deny", &DeleteParams::default())
            .await,
        "break-glass deletes the policy",
    );
    allowed(
        Api::<Namespace>::all(glass.clone())
            .patch(&ns, &PatchParams::default(), &merge(json!({ENFORCE: "privileged"})))
            .await,
        "break-glass relabels",
    );
    allowed(
        Api::<ServiceAccount>::namespaced(glass.clone(), &ns)
            .patch("default", &PatchParams::default(), &Patch::Merge(&token_on))
            .await,
        "break-glass re-enables the token",
    );
    allowed(
        Api::<Pod>::namespaced(glass.clone(), &ns)
            .create(&PostParams::default(), &restricted_pod("glass", "default", Some(true)))
            .await,
        "break-glass creates a Pod mounting a token",
    );
    wait_guarded(&admin, &ns).await;
    eventually("nsguard to heal after break-glass", || async {
        (enforce_level(&admin, &ns).await.as_deref() == Some("restricted")).then_some(())
    })
    .await;

    // podOverride: Allow lets Pods opt in (nsguard takes the Pod marker down).
    op.profile("guarded", json!({"serviceAccounts": {"exempt": ["ci-bot"], "podOverride": "Allow"}})).await;
    eventually("the Pod marker taken down", || async {
        let n = Api::<Namespace>::all(admin.clone()).get(&ns).await.ok()?;
        (!n.annotations().contains_key("nsguard.io/pod-token-guard")).then_some(())
    })
    .await;
    // Admission reads the namespace from the API server's own informer, which may trail the read
    // above by moments: the Pod is allowed once that informer has seen the marker go too.
    eventually("a Pod under podOverride: Allow to be allowed", || async {
        match pods.create(&PostParams::default(), &restricted_pod("allowed", "default", Some(true))).await {
            Ok(_) => Some(()),
            Err(kube::Error::Api(s)) if s.code == 403 => None,
            Err(e) => panic!("a Pod under podOverride: Allow: want it allowed, got {e}"),
        }
    })
    .await;

    // Deleting a guarded namespace completes (the namespace controller removes its policies).
    let doomed = op.namespace("guarded-doomed", &[]).await;
    wait_guarded(&admin, &doomed).await;
    Api::<Namespace>::all(admin.clone()).delete(&doomed, &DeleteParams::default()).await.expect("delete namespace");
    eventually("the guarded namespace deleted", || async {
        Api::<Namespace>::all(admin.clone()).get_opt(&doomed).await.ok()?.is_none().then_some(())
    })
    .await;
    // Release after the profile's deletion completes: nsguard's own writes pass the guard.
    Api::<kube::api::DynamicObject>::all_with(admin.clone(), &support::operator::profile_resource())
        .delete(&profile, &DeleteParams::default())
        .await
        .expect("delete profile");
    eventually("the namespace released", || async {
        let n = Api::<Namespace>::all(admin.clone()).get(&ns).await.ok()?;
        let policies = Api::<NetworkPolicy>::namespaced(admin.clone(), &ns).list(&Default::default()).await.ok()?;
        (n.labels().keys().all(|k| !k.starts_with("pod-security.kubernetes.io/") && k != "nsguard.io/guarded")
            && policies.items.is_empty())
        .then_some(())
    })
    .await;
}

#[tokio::test]
async fn in_warn_mode_the_same_requests_succeed_with_a_warning_naming_the_profile() {
    let op = Operator::start().await;
    let admin = op.admin.clone();
    let _guard = Guard::install("config/guard-warn");
    let profile = op.profile("warned", json!({})).await;
    let ns = op.namespace("warned", &[]).await;
    wait_guarded(&admin, &ns).await;
    // nsguard says whether the guard is installed: it looks at start (and every minute).
    let op = op.restart().await;
    eventually("nsguard_guard_active = 1", || async { (op.metrics.guard_active.get() == 1).then_some(()) }).await;
    let owner = format!("owner-{ns}");
    bind_namespace_admin(&admin, &ns, &owner).await;
    // The API server loads the policies within moments: edit until the warning shows.
    let attempt = std::sync::atomic::AtomicU32::new(0);
    let stderr = eventually("an edit that succeeds with the guard's warning", || async {
        let label = format!("edited={}", attempt.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let out = tokio::task::spawn_blocking({
            let (owner, ns) = (owner.clone(), ns.clone());
            move || {
                kubectl_as(
                    &owner,
                    &["-n", &ns, "label", "--overwrite", "networkpolicy", "nsguard-default-deny", &label],
                )
            }
        })
        .await
        .expect("kubectl");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "in Warn mode the edit succeeds: {stderr}");
        stderr.contains("Warning").then_some(stderr)
    })
    .await;
    assert!(stderr.contains(&profile) && stderr.contains(BREAK_GLASS), "a warning naming the profile: {stderr}");
}
