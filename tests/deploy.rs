//! The manifests in `config/` install cleanly, and the identity they give nsguard is least-privilege.

mod support;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use support::*;

#[tokio::test]
async fn config_default_applies_without_warnings_and_creates_everything() {
    let client = admin_client().await;
    let out = install();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kubectl apply -k config/default failed: {stderr}");
    assert!(!stderr.to_lowercase().contains("warning"), "kubectl printed warnings: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for object in [
        "customresourcedefinition.apiextensions.k8s.io/hardeningprofiles.nsguard.io",
        "clusterrole.rbac.authorization.k8s.io/nsguard",
        "deployment.apps/nsguard",
    ] {
        assert!(stdout.contains(object), "kubectl did not report {object}: {stdout}");
    }
    // Applying again is clean too.
    let again = kubectl(&["apply", "-k", "config/default"]);
    assert!(again.status.success() && !String::from_utf8_lossy(&again.stderr).to_lowercase().contains("warning"));

    Api::<CustomResourceDefinition>::all(client.clone()).get("hardeningprofiles.nsguard.io").await.expect("CRD");
    Api::<ClusterRole>::all(client.clone()).get("nsguard").await.expect("ClusterRole");
    Api::<ClusterRoleBinding>::all(client.clone()).get("nsguard").await.expect("ClusterRoleBinding");
    Api::<Role>::namespaced(client.clone(), "nsguard-system").get("nsguard-leader-election").await.expect("Role");
    Api::<RoleBinding>::namespaced(client.clone(), "nsguard-system")
        .get("nsguard-leader-election")
        .await
        .expect("RoleBinding");
    Api::<ServiceAccount>::namespaced(client.clone(), "nsguard-system").get("nsguard").await.expect("ServiceAccount");

    let ns = Api::<Namespace>::all(client.clone()).get("nsguard-system").await.expect("namespace");
    assert_eq!(
        ns.metadata.labels.unwrap_or_default().get("pod-security.kubernetes.io/enforce").map(String::as_str),
        Some("restricted")
    );

    let deployment =
        Api::<Deployment>::namespaced(client.clone(), "nsguard-system").get("nsguard").await.expect("Deployment");
    let spec = deployment.spec.expect("spec");
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.expect("pod spec");
    let pod_sc = pod.security_context.clone().expect("pod securityContext");
    assert_eq!(pod_sc.run_as_non_root, Some(true));
    assert_eq!(pod_sc.seccomp_profile.map(|s| s.type_), Some("RuntimeDefault".to_owned()));
    let container = &pod.containers[0];
    let sc = container.security_context.clone().expect("container securityContext");
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.capabilities.and_then(|c| c.drop), Some(vec!["ALL".to_owned()]));
    let resources = container.resources.clone().expect("resources");
    assert!(resources.requests.is_some() && resources.limits.is_some());
    assert!(container.liveness_probe.is_some() && container.readiness_probe.is_some());

    // The pod template itself passes the restricted Pod Security Standard of its namespace.
    let template = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "psa-check"},
        "spec": serde_json::to_value(&pod).expect("pod spec")});
    let pod: Pod = serde_json::from_value(template).expect("pod");
    let dry_run = kube::api::PostParams { dry_run: true, ..Default::default() };
    Api::<Pod>::namespaced(client.clone(), "nsguard-system")
        .create(&dry_run, &pod)
        .await
        .expect("nsguard's pod is admitted under enforce=restricted");
}

fn forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{what}: {status:?}"),
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

#[tokio::test]
async fn nsguard_identity_cannot_read_secrets_or_pods() {
    let admin = admin_client().await;
    let nsguard = support::operator::nsguard_client(&admin).await;
    forbidden(Api::<Secret>::all(nsguard.clone()).list(&Default::default()).await, "list Secrets cluster-wide");
    forbidden(
        Api::<Secret>::namespaced(nsguard.clone(), "nsguard-system").list(&Default::default()).await,
        "list Secrets in its own namespace",
    );
    forbidden(Api::<Secret>::namespaced(nsguard.clone(), "default").get("anything").await, "get a Secret");
    forbidden(Api::<Pod>::all(nsguard.clone()).list(&Default::default()).await, "list Pods cluster-wide");
    forbidden(
        Api::<Pod>::namespaced(nsguard.clone(), "default").list(&Default::default()).await,
        "list Pods in a namespace",
    );
    // And what it does need works.
    Api::<Namespace>::all(nsguard.clone()).list(&Default::default()).await.expect("list namespaces");
}

/// nsguard creates the `default` ServiceAccount hardened when it reaches a new namespace before the
/// controller-manager: RBAC lets it create that name and no other. A server-side apply that would
/// create an object is authorized as `create`, with the name.
#[tokio::test]
async fn nsguard_identity_can_create_the_default_service_account_and_no_other() {
    let admin = admin_client().await;
    let namespace = create_namespace(&admin, "accounts", &[]).await;
    let may_create = |name: &str| {
        let review: SubjectAccessReview = serde_json::from_value(json!({
            "spec": {"user": NSGUARD_USER, "groups": ["system:serviceaccounts"],
                "resourceAttributes": {"verb": "create", "resource": "serviceaccounts", "namespace": namespace, "name": name}}
        }))
        .expect("review");
        let admin = admin.clone();
        async move {
            let answer =
                Api::<SubjectAccessReview>::all(admin).create(&Default::default(), &review).await.expect("review");
            answer.status.is_some_and(|s| s.allowed)
        }
    };
    assert!(may_create("default").await, "create the default ServiceAccount");
    assert!(!may_create("builder").await, "create any other ServiceAccount");
    // And a server-side apply that would create another is refused.
    let nsguard = support::operator::nsguard_client(&admin).await;
    let builder = json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "builder", "namespace": namespace}, "automountServiceAccountToken": false});
    let params = PatchParams::apply("nsguard").dry_run();
    let api = Api::<ServiceAccount>::namespaced(nsguard, &namespace);
    forbidden(api.patch("builder", &params, &Patch::Apply(&builder)).await, "apply a new ServiceAccount builder");
}

#[test]
fn rbac_names_exact_resources_and_verbs_without_wildcards() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/rbac");
    for entry in std::fs::read_dir(&dir).expect("config/rbac") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        for value in serde_saphyr::from_multiple::<serde_json::Value>(&text).expect("yaml") {
            for rule in value["rules"].as_array().into_iter().flatten() {
                for field in ["apiGroups", "resources", "verbs"] {
                    for item in rule[field].as_array().into_iter().flatten() {
                        let item = item.as_str().unwrap_or_default();
                        assert_ne!(item, "*", "{}: wildcard in {field}", path.display());
                        assert!(!["secrets", "pods"].contains(&item), "{}: grants {item}", path.display());
                    }
                }
            }
        }
    }
}

#[test]
fn shipped_manifests_pin_the_image_and_never_use_latest() {
    let out = kubectl(&["kustomize", "config/default"]);
    assert!(out.status.success(), "kubectl kustomize config/default: {}", String::from_utf8_lossy(&out.stderr));
    let rendered = String::from_utf8_lossy(&out.stdout);
    let images: Vec<&str> = rendered.lines().filter_map(|l| l.trim().strip_prefix("image: ")).collect();
    assert_eq!(
        images,
        [format!("nsguard:{}", env!("CARGO_PKG_VERSION"))],
        "the Deployment's image, pinned to this release"
    );
    assert!(!rendered.contains(":latest"), "a shipped manifest uses :latest");
}
