//! `helm install` of charts/nsguard onto the local control plane, into a namespace that enforces
//! the restricted Pod Security level: the ReplicaSet's pods are admitted (they stay Pending, with
//! no scheduler or kubelet, but they exist only if admission let them in), and `helm uninstall`
//! leaves nothing of nsguard behind but, by design, the CRD and the profiles.

#[path = "support/render.rs"]
mod render;
mod support;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::json;
use support::*;

/// Runs helm against the test cluster, off the async runtime.
async fn helm(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
        let kubeconfig = kubeconfig_path();
        let kubeconfig = kubeconfig.to_str().expect("utf-8 path");
        all.extend(["--kubeconfig", kubeconfig]);
        render::helm(&all)
    })
    .await
    .expect("helm task")
}

async fn kubectl_async(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || kubectl(&args.iter().map(String::as_str).collect::<Vec<_>>()))
        .await
        .expect("kubectl task")
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[tokio::test]
async fn helm_install_is_admitted_under_restricted_and_uninstall_leaves_only_the_crd_and_profiles() {
    let admin = admin_client().await;
    // The CRD as config/default installs it (client-side apply, as every other test binary does):
    // Helm then skips its crds/, as it does on any cluster that already has the CRD.
    tokio::task::spawn_blocking(|| {
        let _ = install();
    })
    .await
    .expect("install");
    let ns = create_namespace(
        &admin,
        "helm",
        &[
            ("pod-security.kubernetes.io/enforce", "restricted"),
            ("pod-security.kubernetes.io/enforce-version", "latest"),
        ],
    )
    .await;
    let release = unique_name("nsg");
    let fullname = format!("{release}-nsguard");

    let out = helm(
        [
            "install",
            &release,
            "charts/nsguard",
            "--namespace",
            &ns,
            "--set",
            "image.repository=registry.example.com/nsguard",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    assert!(out.status.success(), "helm install:\n{}", text(&out));
    assert!(!text(&out).to_lowercase().contains("warning"), "helm install warned:\n{}", text(&out));
    let manifest = helm(["get", "manifest", &release, "--namespace", &ns].map(String::from).to_vec()).await;
    let manifest = String::from_utf8_lossy(&manifest.stdout).into_owned();
    assert!(manifest.contains("kind: Deployment"), "the release's manifest:\n{manifest}");
    assert!(
        !manifest.contains("kind: CustomResourceDefinition"),
        "the CRD is no release object (crds/), so uninstalling never deletes it"
    );

    // Deployment → ReplicaSet → two Pods, admitted under enforce=restricted.
    let pods = Api::<Pod>::namespaced(admin.clone(), &ns);
    let selector = ListParams::default().labels(&format!("app.kubernetes.io/instance={release}"));
    let admitted = eventually("the ReplicaSet to create both pods", || async {
        let list = pods.list(&selector).await.ok()?;
        (list.items.len() == 2).then_some(list.items)
    })
    .await;
    for pod in &admitted {
        let spec = pod.spec.as_ref().expect("spec");
        assert_eq!(spec.service_account_name.as_deref(), Some(fullname.as_str()));
        let sc = spec.containers[0].security_context.as_ref().expect("securityContext");
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(
            spec.containers[0].image.as_deref(),
            Some(&*format!("registry.example.com/nsguard:{}", env!("CARGO_PKG_VERSION")))
        );
    }
    let replica_sets = Api::<ReplicaSet>::namespaced(admin.clone(), &ns).list(&selector).await.expect("replicasets");
    for rs in &replica_sets.items {
        let failures: Vec<_> = rs
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.type_ == "ReplicaFailure" && c.status == "True")
            .collect();
        assert!(failures.is_empty(), "the ReplicaSet could not create pods: {failures:?}");
    }

    // A profile made while nsguard was installed outlives the uninstall (its selector matches
    // nothing, and no nsguard runs in this test to put a finalizer on it).
    let profile = unique_name("kept");
    let object = json!({"apiVersion": "nsguard.io/v1alpha1", "kind": "HardeningProfile",
        "metadata": {"name": profile}, "spec": {"namespaceSelector": {"matchLabels": {"nsguard-test/none": profile}}}});
    let profiles = Api::<kube::api::DynamicObject>::all_with(admin.clone(), &operator_resource());
    profiles.create(&Default::default(), &serde_json::from_value(object).expect("profile")).await.expect("profile");

    let out = helm(["uninstall", &release, "--namespace", &ns].map(String::from).to_vec()).await;
    assert!(out.status.success(), "helm uninstall:\n{}", text(&out));

    // Nothing of the release is left: namespaced objects (pods and ReplicaSets go through the
    // garbage collector), cluster-scoped ones by name, Helm's own release records.
    let kinds = "all,serviceaccounts,roles,rolebindings,poddisruptionbudgets,networkpolicies,secrets,configmaps,leases";
    let left = eventually("helm uninstall to remove every namespaced object", || {
        let ns = ns.clone();
        async move {
            let out = kubectl_async(["get", kinds, "-n", &ns, "-o", "name"].map(String::from).to_vec()).await;
            let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
            names.sort();
            let expected = ["configmap/kube-root-ca.crt", "serviceaccount/default"];
            (out.status.success() && names == expected).then_some(names)
        }
    })
    .await;
    assert_eq!(left, ["configmap/kube-root-ca.crt", "serviceaccount/default"]);
    let cluster_scoped = kubectl_async(
        [
            "get",
            "clusterroles,clusterrolebindings,validatingadmissionpolicies,validatingadmissionpolicybindings",
            "-o",
            "name",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    let cluster_scoped = String::from_utf8_lossy(&cluster_scoped.stdout).into_owned();
    assert!(!cluster_scoped.contains(&release), "cluster-scoped objects of {release} left:\n{cluster_scoped}");

    // By design, the CRD and the profiles stay (fail closed: no namespace is released by an uninstall).
    let crd =
        kubectl_async(["get", "crd", "hardeningprofiles.nsguard.io", "-o", "name"].map(String::from).to_vec()).await;
    assert!(crd.status.success(), "the CRD is gone: {}", text(&crd));
    profiles.get(&profile).await.expect("the profile outlives the uninstall");
    profiles.delete(&profile, &Default::default()).await.expect("clean up the profile");
}

fn operator_resource() -> kube::api::ApiResource {
    support::operator::profile_resource()
}
