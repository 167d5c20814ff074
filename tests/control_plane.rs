//! The local control plane is a real Kubernetes: these tests prove the behaviour nsguard relies on.

mod support;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, ServiceAccount};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use support::*;

#[tokio::test]
async fn api_server_reports_v1_36() {
    let client = admin_client().await;
    let version = client.apiserver_version().await.expect("version");
    assert!(version.git_version.starts_with("v1.36."), "got {}", version.git_version);
    assert_eq!((version.major.as_str(), version.minor.as_str()), ("1", "36"));
}

#[tokio::test]
async fn new_namespace_gets_default_service_account() {
    let client = admin_client().await;
    let ns = create_namespace(&client, "cp-sa", &[]).await;
    let sa = default_service_account(&client, &ns).await;
    assert_eq!(sa.metadata.namespace.as_deref(), Some(ns.as_str()));
}

fn pod(name: &str, privileged: bool) -> Pod {
    let container = if privileged {
        json!({"name": "c", "image": "registry.k8s.io/pause:3.10", "securityContext": {"privileged": true}})
    } else {
        json!({
            "name": "c", "image": "registry.k8s.io/pause:3.10",
            "securityContext": {
                "allowPrivilegeEscalation": false, "runAsNonRoot": true, "runAsUser": 65532,
                "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}
            }
        })
    };
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [container]}
    }))
    .expect("pod")
}

#[tokio::test]
async fn restricted_namespace_rejects_privileged_pod_and_admits_restricted_one() {
    let client = admin_client().await;
    let ns = create_namespace(&client, "cp-psa", &[("pod-security.kubernetes.io/enforce", "restricted")]).await;
    default_service_account(&client, &ns).await;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let dry_run = PostParams { dry_run: true, ..Default::default() };

    let err = pods.create(&dry_run, &pod("privileged", true)).await.expect_err("privileged pod must be rejected");
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(status.message.contains("violates PodSecurity \"restricted:latest\""), "{}", status.message);
        }
        other => panic!("unexpected error {other}"),
    }
    pods.create(&dry_run, &pod("restricted", false)).await.expect("restricted pod is admitted");
}

fn has_projected_token(pod: &Pod) -> bool {
    pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()).any(|v| {
        v.projected.as_ref().is_some_and(|p| p.sources.iter().flatten().any(|s| s.service_account_token.is_some()))
    })
}

#[tokio::test]
async fn automount_false_means_no_projected_token() {
    let client = admin_client().await;
    let hardened = create_namespace(&client, "cp-token-off", &[]).await;
    let untouched = create_namespace(&client, "cp-token-on", &[]).await;
    default_service_account(&client, &hardened).await;
    default_service_account(&client, &untouched).await;
    Api::<ServiceAccount>::namespaced(client.clone(), &hardened)
        .patch(
            "default",
            &PatchParams::apply("cp-test"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"},
                                  "automountServiceAccountToken": false})),
        )
        .await
        .expect("turn automount off");

    let created_in = |ns: String| {
        let pods = Api::<Pod>::namespaced(client.clone(), &ns);
        async move { pods.create(&PostParams::default(), &pod("p", false)).await.expect("create pod") }
    };
    assert!(!has_projected_token(&created_in(hardened).await), "no token volume where automount is off");
    assert!(has_projected_token(&created_in(untouched).await), "a token volume in an untouched namespace");
}

#[tokio::test]
async fn deleting_a_namespace_completes() {
    let client = admin_client().await;
    let ns = create_namespace(&client, "cp-delete", &[]).await;
    default_service_account(&client, &ns).await;
    let cm =
        ConfigMap { metadata: ObjectMeta { name: Some("content".into()), ..Default::default() }, ..Default::default() };
    Api::<ConfigMap>::namespaced(client.clone(), &ns).create(&PostParams::default(), &cm).await.expect("configmap");

    let namespaces = Api::<Namespace>::all(client.clone());
    namespaces.delete(&ns, &Default::default()).await.expect("delete");
    eventually(&format!("namespace {ns} to be gone"), || async {
        matches!(namespaces.get_opt(&ns).await, Ok(None)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn service_account_without_bindings_cannot_list_secrets() {
    let admin = admin_client().await;
    let ns = create_namespace(&admin, "cp-rbac", &[]).await;
    let sa = ServiceAccount {
        metadata: ObjectMeta { name: Some("nobody".into()), ..Default::default() },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(admin.clone(), &ns).create(&PostParams::default(), &sa).await.expect("sa");

    let nobody = client_as_service_account(&admin, &ns, "nobody").await;
    let err = Api::<Secret>::namespaced(nobody, &ns).list(&Default::default()).await.expect_err("forbidden");
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(status.message.contains(&format!("system:serviceaccount:{ns}:nobody")), "{}", status.message);
        }
        other => panic!("unexpected error {other}"),
    }
}
