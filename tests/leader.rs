//! Two nsguard processes on one cluster, each with the `config/rbac` identity: only the leader
//! writes; when it dies, the other takes over and heals drift made after the kill; SIGTERM
//! releases the lease and exits cleanly. How long takeovers take is measured (written to
//! `target/measurements/`), not asserted: speed belongs in the benchmark.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use openmetrics_parser::OpenMetricsValue;
use serde_json::json;
use support::operator::SHARD_LABEL;
use support::process::Instance;
use support::*;

/// Lease timing for the test: a takeover waits at most this long after a leader dies.
const LEASE_SECONDS: u64 = 6;

async fn events_by(client: &kube::Client, ns: &str, reason: &str) -> Vec<String> {
    nsguard_events(client, ns)
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter_map(|e| e.reporting_instance)
        .collect()
}

#[tokio::test]
async fn only_the_leader_writes_and_a_follower_takes_over_when_it_dies() {
    let admin = admin_client().await;
    let _ = install();
    let kubeconfig = service_account_kubeconfig(&admin, "nsguard-system", "nsguard").await;
    let shard = unique_name("lead");
    let lease = unique_name("nsguard-test");

    let mut a = Instance::spawn("a", &kubeconfig, &shard, &lease, LEASE_SECONDS).await;
    eventually("a to lead", || async { a.is_leader().await.then_some(()) }).await;
    let b = Instance::spawn("b", &kubeconfig, &shard, &lease, LEASE_SECONDS).await;

    // A profile and a namespace in this shard: hardened, by the leader only.
    apply_shard_profile(&admin, "lead", &shard, json!({})).await;
    let ns = create_namespace(&admin, "lead", &[(SHARD_LABEL, &shard)]).await;
    let namespaces = Api::<Namespace>::all(admin.clone());
    let enforce = |n: &Namespace| n.labels().get("pod-security.kubernetes.io/enforce").cloned();
    eventually("the namespace to be hardened", || async {
        (enforce(&namespaces.get(&ns).await.ok()?).as_deref() == Some("restricted")).then_some(())
    })
    .await;
    assert!(a.writes().await > 0.0, "the leader wrote");
    assert!(!b.is_leader().await, "b follows");
    assert_eq!(b.writes().await, 0.0, "the follower wrote nothing");
    // The event follows the writes (it is published once they succeeded): wait for it.
    let hardened = eventually("the Hardened event", || async {
        let by = events_by(&admin, &ns, "Hardened").await;
        (!by.is_empty()).then_some(by)
    })
    .await;
    assert!(hardened.iter().all(|i| i == "a"), "only the leader published events: {hardened:?}");

    // Kill the leader without a chance to release its lease, then weaken the namespace.
    a.child.start_kill().expect("kill a");
    let killed = Instant::now();
    let _ = a.child.wait().await;
    let drift = json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "privileged"}}});
    namespaces.patch(&ns, &PatchParams::default(), &Patch::Merge(&drift)).await.expect("drift");

    eventually("b to take over", || async { b.is_leader().await.then_some(()) }).await;
    let takeover = killed.elapsed();
    eventually("the drift made after the kill to be healed", || async {
        (enforce(&namespaces.get(&ns).await.ok()?).as_deref() == Some("restricted")).then_some(())
    })
    .await;
    let healed = killed.elapsed();
    record("leader-takeover-after-sigkill", takeover);
    record("heal-after-leader-sigkill", healed);
    // Events are published off the reconcile path: wait for it, then check who sent it.
    let corrected = eventually("a DriftCorrected event", || async {
        let corrected = events_by(&admin, &ns, "DriftCorrected").await;
        (!corrected.is_empty()).then_some(corrected)
    })
    .await;
    assert!(corrected.iter().all(|i| i == "b"), "the new leader healed it: {corrected:?}");

    // The new leader's /metrics is valid OpenMetrics, and its drift counter moved.
    let text = b.metrics().await;
    let exposition = openmetrics_parser::openmetrics::parse_openmetrics(&text)
        .unwrap_or_else(|e| panic!("/metrics is not valid OpenMetrics: {e:?}\n{text}"));
    let family = exposition.families.get("nsguard_drift_corrected").expect("drift counter family");
    let label_corrections: f64 = family
        .iter_samples()
        .filter(|s| s.get_labelset().ok().and_then(|l| l.get_label_value("kind").map(|v| v == "label")) == Some(true))
        .filter_map(|s| match s.value {
            OpenMetricsValue::Counter(ref c) => Some(c.value.as_f64()),
            _ => None,
        })
        .sum();
    assert!(label_corrections >= 1.0, "drift counter did not move: {text}");

    // A graceful stop: SIGTERM makes b release the lease and exit 0; c takes over.
    let c = Instance::spawn("c", &kubeconfig, &shard, &lease, LEASE_SECONDS).await;
    let mut b = b;
    let pid = b.child.id().expect("pid").to_string();
    let stopped = Instant::now();
    let status = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM");
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(30), b.child.wait()).await.expect("b exits").expect("wait");
    assert!(exit.success(), "b exited with {exit} (log: {})", b.log.display());
    let log = std::fs::read_to_string(&b.log).unwrap_or_default();
    assert!(log.contains("released the leader lease"), "b did not release its lease: {log}");
    eventually("c to take over", || async { c.is_leader().await.then_some(()) }).await;
    record("leader-takeover-after-sigterm", stopped.elapsed());
    let _ = b.name;
}

fn signal(child: &tokio::process::Child, sig: &str) {
    let pid = child.id().expect("pid").to_string();
    let status = std::process::Command::new("kill").args([sig, &pid]).status().expect("kill");
    assert!(status.success(), "kill {sig} {pid}");
}

#[tokio::test]
async fn a_stalled_leader_writes_nothing_once_another_took_over() {
    let admin = admin_client().await;
    let _ = install();
    let kubeconfig = service_account_kubeconfig(&admin, "nsguard-system", "nsguard").await;
    let shard = unique_name("stall");
    let lease = unique_name("nsguard-stall");
    let a = Instance::spawn("a", &kubeconfig, &shard, &lease, LEASE_SECONDS).await;
    eventually("a to lead", || async { a.is_leader().await.then_some(()) }).await;
    let b = Instance::spawn("b", &kubeconfig, &shard, &lease, LEASE_SECONDS).await;

    apply_shard_profile(&admin, "stall", &shard, json!({})).await;
    let drifting = create_namespace(&admin, "stall", &[(SHARD_LABEL, &shard)]).await;
    let quiet = create_namespace(&admin, "quiet", &[(SHARD_LABEL, &shard)]).await;
    let namespaces = Api::<Namespace>::all(admin.clone());
    let enforce = |n: &Namespace| n.labels().get("pod-security.kubernetes.io/enforce").cloned();
    for ns in [&drifting, &quiet] {
        eventually("the namespaces to be hardened", || async {
            (enforce(&namespaces.get(ns).await.ok()?).as_deref() == Some("restricted")).then_some(())
        })
        .await;
    }
    // Everything a writes for them done: the condition last, the default ServiceAccount's token,
    // and a's write counter no longer moving (a response still in flight when a is stopped would
    // count after it resumes, for a write made while it led).
    for ns in [&drifting, &quiet] {
        eventually("the namespaces' condition and tokens", || async {
            let n = namespaces.get(ns).await.ok()?;
            let hardened = n.status?.conditions?.iter().any(|c| c.type_ == "nsguard.io/Hardened" && c.status == "True");
            let sa = Api::<ServiceAccount>::namespaced(admin.clone(), ns).get("default").await.ok()?;
            (hardened && sa.automount_service_account_token == Some(false)).then_some(())
        })
        .await;
    }
    let last = std::sync::Mutex::new(a.writes().await);
    let a_writes = eventually("a's writes to settle", || async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = a.writes().await;
        let mut previous = last.lock().expect("lock");
        let settled = now == *previous;
        *previous = now;
        settled.then_some(now)
    })
    .await;
    let quiet_events = nsguard_events(&admin, &quiet).await.len();

    // a stalls (SIGSTOP) past its lease; b takes over and heals drift made meanwhile.
    signal(&a.child, "-STOP");
    let drift = json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "privileged"}}});
    namespaces.patch(&drifting, &PatchParams::default(), &Patch::Merge(&drift)).await.expect("drift");
    eventually("b to take over", || async { b.is_leader().await.then_some(()) }).await;
    eventually("b to heal the drift", || async {
        (enforce(&namespaces.get(&drifting).await.ok()?).as_deref() == Some("restricted")).then_some(())
    })
    .await;

    // a resumes believing it led; it sees the drift and the heal, and must write nothing.
    let a_reconciles = || async { a.sample("nsguard_reconciles_total{").await };
    signal(&a.child, "-CONT");
    eventually("a to answer again, as a follower", || async {
        (http_get(a.port, "/metrics").await.is_some() && !a.is_leader().await).then_some(())
    })
    .await;
    let before = a_reconciles().await;
    namespaces.patch(&drifting, &PatchParams::default(), &Patch::Merge(&drift)).await.expect("drift again");
    eventually("b to heal the drift again", || async {
        (enforce(&namespaces.get(&drifting).await.ok()?).as_deref() == Some("restricted")).then_some(())
    })
    .await;
    eventually("a to have reconciled the drift (as a follower)", || async {
        (a_reconciles().await > before).then_some(())
    })
    .await;
    assert_eq!(a.writes().await, a_writes, "the stalled replica wrote after losing its lease");

    // The takeover announced nothing about a namespace whose state did not change.
    assert_eq!(nsguard_events(&admin, &quiet).await.len(), quiet_events, "events re-published on takeover");
    let corrected = eventually("b's DriftCorrected event", || async {
        let corrected = events_by(&admin, &drifting, "DriftCorrected").await;
        corrected.iter().any(|i| i == "b").then_some(corrected)
    })
    .await;
    assert!(corrected.iter().all(|i| i == "b" || i == "a"), "{corrected:?}");
}
