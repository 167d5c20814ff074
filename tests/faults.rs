//! Faults of the control plane itself: kube-apiserver and etcd killed and restarted while nsguard
//! runs, as its own process with leader election and the `config/rbac` identity. These tests stop
//! components of the control plane, so they run on a control plane of their own (`make faults`),
//! one at a time, never beside the other integration tests.
//!
//! End states are asserted with generous deadlines; how long recovery took is recorded in
//! `target/measurements/` (see RELIABILITY.md), never asserted.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use support::operator::{SHARD_LABEL, profile_resource};
use support::process::Instance;
use support::*;

const ENFORCE: &str = "pod-security.kubernetes.io/enforce";
const LEASE_SECONDS: u64 = 6;

fn record(name: &str, value: Duration) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/measurements");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(format!("{name}.txt")), format!("{:.2}\n", value.as_secs_f64()));
    eprintln!("measured {name}: {:.2}s", value.as_secs_f64());
}

async fn enforce_level(client: &Client, ns: &str) -> Option<String> {
    Api::<Namespace>::all(client.clone()).get(ns).await.ok()?.labels().get(ENFORCE).cloned()
}

async fn all_restricted(client: &Client, namespaces: &[String]) -> bool {
    for ns in namespaces {
        if enforce_level(client, ns).await.as_deref() != Some("restricted") {
            return false;
        }
    }
    true
}

/// Waits until the API server answers a request that needs etcd.
async fn api_back(client: &Client) {
    eventually("the API server to answer again", || async {
        Api::<Namespace>::all(client.clone()).get("default").await.ok().map(|_| ())
    })
    .await;
}

/// Weakens every namespace in `namespaces` (as a rival writer would).
async fn drift(client: &Client, namespaces: &[String]) {
    let patch = json!({"metadata": {"labels": {ENFORCE: "privileged"}}});
    for ns in namespaces {
        Api::<Namespace>::all(client.clone())
            .patch(ns, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("drift");
    }
}

async fn new_namespaces(client: &Client, shard: &str, n: usize) -> Vec<String> {
    let mut names = Vec::new();
    for _ in 0..n {
        names.push(create_namespace(client, "fault", &[(SHARD_LABEL, shard)]).await);
    }
    names
}

/// After `fault`, nsguard is leader again (without a restart), and 20 new and 5 drifted namespaces
/// made after the recovery are healed.
async fn recovers(admin: &Client, nsguard: &Instance, shard: &str, drifted: &[String], what: &str) {
    let back = Instant::now();
    eventually(&format!("nsguard to lead again after {what}"), || async { nsguard.is_leader().await.then_some(()) })
        .await;
    record(&format!("leader-again-after-{what}"), back.elapsed());
    let lease = Api::<Lease>::namespaced(admin.clone(), "nsguard-system");
    drift(admin, drifted).await;
    let fresh = new_namespaces(admin, shard, 20).await;
    let made = Instant::now();
    let everything: Vec<String> = drifted.iter().chain(&fresh).cloned().collect();
    eventually(&format!("20 new and 5 drifted namespaces to be hardened after {what}"), || async {
        all_restricted(admin, &everything).await.then_some(())
    })
    .await;
    record(&format!("heal-25-namespaces-after-{what}"), made.elapsed());
    let _ = lease;
}

#[tokio::test]
async fn nsguard_keeps_leading_and_healing_across_api_server_and_etcd_restarts() {
    let admin = admin_client().await;
    let _ = install();
    let kubeconfig = service_account_kubeconfig(&admin, "nsguard-system", "nsguard").await;
    let shard = unique_name("fault");
    let lease_name = unique_name("nsguard-fault");
    let nsguard = Instance::spawn("solo", &kubeconfig, &shard, &lease_name, LEASE_SECONDS).await;
    eventually("nsguard to lead", || async { nsguard.is_leader().await.then_some(()) }).await;

    let profile = json!({"apiVersion": "nsguard.io/v1alpha1", "kind": "HardeningProfile",
        "metadata": {"name": format!("fault-{shard}"), "labels": {SHARD_LABEL: shard}}, "spec": {}});
    Api::<DynamicObject>::all_with(admin.clone(), &profile_resource())
        .patch(&format!("fault-{shard}"), &PatchParams::apply("gitops"), &Patch::Apply(&profile))
        .await
        .expect("profile");
    let first = new_namespaces(&admin, &shard, 5).await;
    eventually("the first namespaces to be hardened", || async { all_restricted(&admin, &first).await.then_some(()) })
        .await;

    // kube-apiserver down for 10 s, restarted with the same flags.
    restart_component("kube-apiserver", Duration::from_secs(10)).await;
    api_back(&admin).await;
    eventually("/readyz to be 200 again", || async {
        (http_get(nsguard.port, "/readyz").await.map(|(c, _)| c) == Some(200)).then_some(())
    })
    .await;
    recovers(&admin, &nsguard, &shard, &first, "api-server-restart").await;

    // etcd down for 10 s, restarted with the same flags (its data is on tmpfs and survives).
    restart_component("etcd", Duration::from_secs(10)).await;
    api_back(&admin).await;
    recovers(&admin, &nsguard, &shard, &first, "etcd-restart").await;

    let holder = Api::<Lease>::namespaced(admin.clone(), "nsguard-system")
        .get(&lease_name)
        .await
        .expect("lease")
        .spec
        .and_then(|s| s.holder_identity);
    assert_eq!(holder.as_deref(), Some("solo"), "nsguard holds its lease again");
}
