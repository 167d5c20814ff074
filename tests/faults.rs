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

use futures::{StreamExt, stream};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use support::operator::{SHARD_LABEL, profile_resource};
use support::process::Instance;
use support::proxy::Proxy;
use support::*;

const ENFORCE: &str = "pod-security.kubernetes.io/enforce";
const LEASE_SECONDS: u64 = 6;

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
    drift(admin, drifted).await;
    let fresh = new_namespaces(admin, shard, 20).await;
    let made = Instant::now();
    let everything: Vec<String> = drifted.iter().chain(&fresh).cloned().collect();
    eventually(&format!("20 new and 5 drifted namespaces to be hardened after {what}"), || async {
        all_restricted(admin, &everything).await.then_some(())
    })
    .await;
    record(&format!("heal-25-namespaces-after-{what}"), made.elapsed());
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

    apply_profile(&admin, &shard).await;
    let first = new_namespaces(&admin, &shard, 5).await;
    eventually("the first namespaces to be hardened", || async { all_restricted(&admin, &first).await.then_some(()) })
        .await;

    // kube-apiserver down for 10 s, restarted with the same flags; /readyz says so meanwhile.
    let stopped = stop_component("kube-apiserver").await;
    let down = Instant::now();
    eventually("/readyz to report the outage", || async {
        (http_get(nsguard.port, "/readyz").await.map(|(c, _)| c) == Some(503)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(down.elapsed())).await;
    start_component(stopped);
    api_back(&admin).await;
    eventually("/readyz to be 200 again", || async {
        (http_get(nsguard.port, "/readyz").await.map(|(c, _)| c) == Some(200)).then_some(())
    })
    .await;
    recovers(&admin, &nsguard, &shard, &first, "api-server-restart").await;

    // etcd down for 10 s, restarted with the same flags (its data is on tmpfs and survives).
    let stopped = stop_component("etcd").await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    start_component(stopped);
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

/// Exactly nsguard's baseline, nothing missing, nothing doubled: the six PSA labels and the profile
/// annotation, exactly nsguard's two NetworkPolicies, and the `default` ServiceAccount's token off.
async fn exactly_hardened(client: &Client, ns: &str) -> bool {
    let Ok(namespace) = Api::<Namespace>::all(client.clone()).get(ns).await else { return false };
    let labels = namespace.labels();
    let psa = ["enforce", "audit", "warn"].iter().all(|m| {
        labels.get(&format!("pod-security.kubernetes.io/{m}")).map(String::as_str) == Some("restricted")
            && labels.get(&format!("pod-security.kubernetes.io/{m}-version")).map(String::as_str) == Some("latest")
    });
    let annotated = namespace.annotations().contains_key("nsguard.io/profile");
    let Ok(policies) = Api::<NetworkPolicy>::namespaced(client.clone(), ns).list(&Default::default()).await else {
        return false;
    };
    let mut names: Vec<String> = policies.items.iter().map(ResourceExt::name_any).collect();
    names.sort();
    let token_off = Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .get_opt("default")
        .await
        .ok()
        .flatten()
        .is_some_and(|sa| sa.automount_service_account_token == Some(false));
    psa && annotated && names == ["nsguard-allow-dns", "nsguard-default-deny"] && token_off
}

async fn all_exactly_hardened(client: &Client, namespaces: &[String]) -> bool {
    for ns in namespaces {
        if !exactly_hardened(client, ns).await {
            return false;
        }
    }
    true
}

async fn apply_profile(admin: &Client, shard: &str) {
    apply_shard_profile(admin, "fault", shard, json!({})).await;
}

/// Every kind of drift, spread over `namespaces`: a PSA label, a deleted policy, a re-enabled token.
async fn drift_every_kind(client: &Client, namespaces: &[String]) {
    for (i, ns) in namespaces.iter().enumerate() {
        match i % 3 {
            0 => drift(client, std::slice::from_ref(ns)).await,
            1 => {
                let _ = Api::<NetworkPolicy>::namespaced(client.clone(), ns)
                    .delete("nsguard-default-deny", &DeleteParams::default())
                    .await;
            }
            _ => {
                let patch = json!({"automountServiceAccountToken": true});
                Api::<ServiceAccount>::namespaced(client.clone(), ns)
                    .patch("default", &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .expect("re-enable the token");
            }
        }
    }
}

#[tokio::test]
async fn a_burst_completes_when_nsguard_is_killed_midway_and_restarted() {
    let admin = admin_client().await;
    let _ = install();
    let kubeconfig = service_account_kubeconfig(&admin, "nsguard-system", "nsguard").await;
    let shard = unique_name("burst");
    let lease_name = unique_name("nsguard-burst");
    let mut first = Instance::spawn("first", &kubeconfig, &shard, &lease_name, LEASE_SECONDS).await;
    eventually("nsguard to lead", || async { first.is_leader().await.then_some(()) }).await;
    apply_profile(&admin, &shard).await;

    let creator = {
        let admin = admin.clone();
        let shard = shard.clone();
        tokio::spawn(async move {
            stream::iter(0..300)
                .map(|_| {
                    let admin = admin.clone();
                    let shard = shard.clone();
                    async move { create_namespace(&admin, "burst", &[(SHARD_LABEL, &shard)]).await }
                })
                .buffer_unordered(16)
                .collect::<Vec<String>>()
                .await
        })
    };
    // Kill nsguard (SIGKILL: no lease release, writes cut off mid-flight) once it is under way.
    eventually("nsguard to be under way", || async { (first.writes().await >= 50.0).then_some(()) }).await;
    first.child.start_kill().expect("kill");
    let _ = first.child.wait().await;
    let killed = Instant::now();
    let second = Instance::spawn("second", &kubeconfig, &shard, &lease_name, LEASE_SECONDS).await;
    let namespaces = creator.await.expect("creator");
    eventually_within("all 300 namespaces exactly hardened", Duration::from_secs(300), || async {
        all_exactly_hardened(&admin, &namespaces).await.then_some(())
    })
    .await;
    record("burst-300-complete-after-sigkill", killed.elapsed());
    assert!(second.is_leader().await);
}

#[tokio::test]
async fn changes_made_during_a_partition_converge_through_relists_alone() {
    let admin = admin_client().await;
    let _ = install();
    let proxy = Proxy::start(api_server_address()).await;
    let server = format!("https://127.0.0.1:{}", proxy.port);
    let kubeconfig = service_account_kubeconfig_via(&admin, "nsguard-system", "nsguard", Some(server)).await;
    let shard = unique_name("cut");
    let lease_name = unique_name("nsguard-cut");
    // The periodic resync is far beyond the deadline, and without leader election no "became
    // leader" pass reconciles everything after the cut: only relist handling can pass this test.
    let flags = ["--resync-seconds", "86400", "--leader-elect", "false"];
    let nsguard = Instance::spawn_with("cut", &kubeconfig, &shard, &lease_name, LEASE_SECONDS, &flags).await;
    apply_profile(&admin, &shard).await;
    let before = new_namespaces(&admin, &shard, 20).await;
    eventually("the first 20 namespaces exactly hardened", || async {
        all_exactly_hardened(&admin, &before).await.then_some(())
    })
    .await;

    proxy.cut();
    drift_every_kind(&admin, &before[..15]).await;
    let during = new_namespaces(&admin, &shard, 20).await;
    // Five namespaces are deleted (and gone) while nsguard cannot see it: no Delete event reaches
    // it, only a relist that no longer shows them.
    let namespaces = Api::<Namespace>::all(admin.clone());
    for ns in &before[15..] {
        namespaces.delete(ns, &DeleteParams::default()).await.expect("delete a namespace");
    }
    eventually("the 5 namespaces to be gone", || async {
        for ns in &before[15..] {
            if namespaces.get_opt(ns).await.expect("get").is_some() {
                return None;
            }
        }
        Some(())
    })
    .await;
    eventually("/readyz to report the partition", || async {
        (http_get(nsguard.port, "/readyz").await.map(|(c, _)| c) == Some(503)).then_some(())
    })
    .await;
    proxy.restore();
    let restored = Instant::now();
    let everything: Vec<String> = before[..15].iter().chain(&during).cloned().collect();
    eventually("all 35 namespaces exactly hardened after the partition", || async {
        all_exactly_hardened(&admin, &everything).await.then_some(())
    })
    .await;
    record("converge-35-namespaces-after-partition", restored.elapsed());
    // The profile counts what the cluster holds: the namespaces deleted unseen are forgotten
    // (through the Delete events of a resumed watch, or the relist of a new one), and stay so.
    let profiles = Api::<DynamicObject>::all_with(admin.clone(), &profile_resource());
    let counts_35 = || async {
        let status = profiles.get(&format!("fault-{shard}")).await.ok()?.data["status"].clone();
        let listed = status["nonCompliant"].as_array().cloned().unwrap_or_default();
        let names_deleted = listed.iter().any(|n| before[15..].iter().any(|d| n["namespace"] == d.as_str()));
        (status["matchedNamespaces"] == 35 && status["compliantNamespaces"] == 35 && !names_deleted).then_some(())
    };
    eventually("the profile to count 35 namespaces, not the 5 deleted unseen", counts_35).await;
    // Past a few status intervals (500 ms each), no stale entry brings them back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(counts_35().await.is_some(), "the profile still counts 35 namespaces");
}

#[tokio::test]
async fn a_namespace_with_2000_service_accounts_converges_with_bounded_writes() {
    let admin = admin_client().await;
    let _ = install();
    let kubeconfig = service_account_kubeconfig(&admin, "nsguard-system", "nsguard").await;
    let shard = unique_name("many");
    let ns = create_namespace(&admin, "many", &[(SHARD_LABEL, &shard)]).await;
    let accounts = Api::<ServiceAccount>::namespaced(admin.clone(), &ns);
    stream::iter(0..2000)
        .for_each_concurrent(32, |i| {
            let accounts = accounts.clone();
            async move {
                let sa: ServiceAccount =
                    serde_json::from_value(json!({"metadata": {"name": format!("sa-{i:04}")}})).expect("sa");
                accounts.create(&Default::default(), &sa).await.expect("create ServiceAccount");
            }
        })
        .await;
    let lease_name = unique_name("nsguard-many");
    let nsguard = Instance::spawn("many", &kubeconfig, &shard, &lease_name, LEASE_SECONDS).await;
    eventually("nsguard to lead", || async { nsguard.is_leader().await.then_some(()) }).await;
    let before = peak_rss_mib(nsguard.child.id().expect("pid"));
    let offset = audit_log_offset();
    let started = Instant::now();
    apply_profile(&admin, &shard).await;
    // The ServiceAccounts go out alongside the enforce dry-run and the namespace's labels after
    // both (`core::ahead`): the last ServiceAccount is seen a moment before the labels land.
    eventually_within(
        "all 2,001 ServiceAccounts with their token off, the namespace exactly hardened",
        Duration::from_secs(300),
        || async {
            let list = accounts.list(&Default::default()).await.ok()?;
            (list.items.len() == 2001
                && list.items.iter().all(|sa| sa.automount_service_account_token == Some(false))
                && exactly_hardened(&admin, &ns).await)
                .then_some(())
        },
    )
    .await;
    record("converge-2001-service-accounts", started.elapsed());
    // Bounded writes: each ServiceAccount written once (dry-runs are not writes), give or take a
    // few sent again. Counted once the audit log shows a write of every one and then nothing new
    // for three looks a second apart; a loop of rewrites never settles and fails here too.
    let account_writes = || -> Vec<String> {
        audited_writes(NSGUARD_USER, offset)
            .iter()
            .filter(|e| e["objectRef"]["resource"] == "serviceaccounts" && e["objectRef"]["namespace"] == ns.as_str())
            .map(|e| e["objectRef"]["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let (mut written, mut unchanged) = (Vec::new(), 0);
    let settle_by = Instant::now() + Duration::from_secs(120);
    while unchanged < 3 {
        assert!(
            Instant::now() < settle_by,
            "nsguard's ServiceAccount writes did not settle within 2 minutes ({} so far)",
            written.len()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = account_writes();
        unchanged = if now.len() == written.len() && now.len() >= 2001 { unchanged + 1 } else { 0 };
        written = now;
    }
    let distinct: std::collections::HashSet<&String> = written.iter().collect();
    record_figure("service-account-writes-2001-accounts", written.len());
    assert_eq!(distinct.len(), 2001, "every ServiceAccount written");
    assert!(
        written.len() <= 2001 + 20,
        "{} ServiceAccount writes for 2,001 ServiceAccounts: not bounded by one each",
        written.len()
    );
    let peak = peak_rss_mib(nsguard.child.id().expect("pid"));
    eprintln!("peak RSS before the profile: {before:.1} MiB");
    record_figure("peak-rss-mib-2001-service-accounts", format!("{peak:.1}"));
}

#[tokio::test]
async fn a_writer_fighting_for_90_seconds_meets_bounded_writes_and_one_report() {
    let admin = admin_client().await;
    let _ = install();
    let kubeconfig = service_account_kubeconfig(&admin, "nsguard-system", "nsguard").await;
    let shard = unique_name("fight");
    let lease_name = unique_name("nsguard-fight");
    let nsguard = Instance::spawn("fight", &kubeconfig, &shard, &lease_name, LEASE_SECONDS).await;
    eventually("nsguard to lead", || async { nsguard.is_leader().await.then_some(()) }).await;
    apply_profile(&admin, &shard).await;
    let namespaces = new_namespaces(&admin, &shard, 2).await;
    let (fought, other) = (namespaces[0].clone(), namespaces[1].clone());
    eventually("both namespaces exactly hardened", || async {
        all_exactly_hardened(&admin, &namespaces).await.then_some(())
    })
    .await;

    // A rival (another GitOps tool, say) applies enforce=privileged every 200 ms for 90 s.
    let offset = audit_log_offset();
    let rival = {
        let admin = admin.clone();
        let fought = fought.clone();
        tokio::spawn(async move {
            let api = Api::<Namespace>::all(admin);
            let patch = json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": fought, "labels": {ENFORCE: "privileged"}}});
            let until = Instant::now() + Duration::from_secs(90);
            while Instant::now() < until {
                let _ = api.patch(&fought, &PatchParams::apply("rival-gitops").force(), &Patch::Apply(&patch)).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let name = format!("fault-{shard}");
    let profiles = Api::<DynamicObject>::all_with(admin.clone(), &profile_resource());
    eventually("the profile's Drifted condition to name the rival", || async {
        let profile = profiles.get(&name).await.ok()?;
        let conditions = profile.data["status"]["conditions"].as_array()?.clone();
        conditions
            .iter()
            .any(|c| {
                c["type"] == "Drifted"
                    && c["reason"] == "DriftFight"
                    && c["message"].as_str().is_some_and(|m| m.contains("rival-gitops"))
            })
            .then_some(())
    })
    .await;
    // Meanwhile another namespace's drift heals as usual.
    drift(&admin, std::slice::from_ref(&other)).await;
    let drifted = Instant::now();
    eventually("the other namespace to heal during the fight", || async {
        exactly_hardened(&admin, &other).await.then_some(())
    })
    .await;
    record("heal-other-namespace-during-a-fight", drifted.elapsed());
    rival.await.expect("rival");

    let audited = audited_writes(NSGUARD_USER, offset);
    // Writes to the namespace: its labels, and its condition (status subresource).
    let writes = audited
        .iter()
        .filter(|e| e["objectRef"]["resource"] == "namespaces" && e["objectRef"]["name"] == fought.as_str())
        .count();
    record_figure("writes-during-a-90s-fight", writes);
    // 5 corrections before backing off, then 2 s, 4 s, 8 s, 16 s, 32 s... apart: bounded. The
    // condition says Conflicting once for the episode rather than flapping with each correction.
    assert!(writes <= 15, "{writes} writes in 90 s: nsguard is not backing off");
    let report_writes = audited
        .iter()
        .filter(|e| e["objectRef"]["resource"] == "reports" && e["objectRef"]["namespace"] == fought.as_str())
        .count();
    assert!(report_writes <= 2, "{report_writes} Report writes in one fight: the Report flaps");
    let fights: Vec<String> = nsguard_events(&admin, &fought)
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("DriftFight"))
        .filter_map(|e| e.note)
        .collect();
    assert_eq!(fights.len(), 1, "one DriftFight for one episode: {fights:?}");
    assert!(fights[0].contains("rival-gitops"), "the event names the other field manager: {}", fights[0]);
}

/// Runs last (tests run one at a time, by name): it deletes the CRD.
/// Installs the OpenReports Report CRD, fetched by the test tooling (tests/cluster/openreports.sh).
fn install_reports_crd() {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/cluster/openreports.sh");
    let out = std::process::Command::new(&script).output().expect("openreports.sh");
    assert!(out.status.success(), "openreports.sh: {}", String::from_utf8_lossy(&out.stderr));
    let crd = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let applied = kubectl(&["apply", "--server-side", "-f", &crd]);
    assert!(applied.status.success(), "apply the Report CRD: {}", String::from_utf8_lossy(&applied.stderr));
    let wait = kubectl(&["wait", "--for=condition=Established", "--timeout=60s", "crd/reports.openreports.io"]);
    assert!(wait.status.success(), "Report CRD not established: {}", String::from_utf8_lossy(&wait.stderr));
}

async fn report_exists(client: &Client, ns: &str) -> bool {
    let reports = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &nsguard::core::report::resource());
    matches!(reports.get_opt("nsguard").await, Ok(Some(_)))
}

#[tokio::test]
async fn reports_start_when_the_openreports_crd_appears_and_hardening_never_waits_for_it() {
    let admin = admin_client().await;
    let _ = install();
    let kubeconfig = service_account_kubeconfig(&admin, "nsguard-system", "nsguard").await;
    // The CRD is not nsguard's; start without it.
    let out = kubectl(&["delete", "crd", "reports.openreports.io", "--ignore-not-found", "--wait=true"]);
    assert!(out.status.success(), "delete the Report CRD: {}", String::from_utf8_lossy(&out.stderr));
    let shard = unique_name("reports");
    let lease_name = unique_name("nsguard-reports");
    let nsguard = Instance::spawn("reports", &kubeconfig, &shard, &lease_name, LEASE_SECONDS).await;
    eventually("nsguard to lead", || async { nsguard.is_leader().await.then_some(()) }).await;
    apply_profile(&admin, &shard).await;
    let namespaces = new_namespaces(&admin, &shard, 3).await;
    // Hardened and ready without Reports, and it says so.
    eventually("the namespaces exactly hardened without Reports", || async {
        all_exactly_hardened(&admin, &namespaces).await.then_some(())
    })
    .await;
    assert_eq!(nsguard.sample("nsguard_reports_enabled ").await, 0.0);
    assert_eq!(http_get(nsguard.port, "/readyz").await.map(|(code, _)| code), Some(200), "ready without Reports");

    // The CRD appears: every governed namespace gets its Report, without a restart.
    let installed = Instant::now();
    install_reports_crd();
    eventually_within("a Report in every namespace", Duration::from_secs(120), || async {
        for ns in &namespaces {
            if !report_exists(&admin, ns).await {
                return None;
            }
        }
        Some(())
    })
    .await;
    record("reports-after-crd-installed", installed.elapsed());
    assert_eq!(nsguard.sample("nsguard_reports_enabled ").await, 1.0);
}

#[tokio::test]
async fn zz_deleting_the_crd_releases_every_namespace_and_the_finalizer_command_unblocks_the_rest() {
    let admin = admin_client().await;
    let _ = install();
    let kubeconfig = service_account_kubeconfig(&admin, "nsguard-system", "nsguard").await;
    let shard = unique_name("uninstall");
    let lease_name = unique_name("nsguard-uninstall");
    let nsguard = Instance::spawn("uninstall", &kubeconfig, &shard, &lease_name, LEASE_SECONDS).await;
    eventually("nsguard to lead", || async { nsguard.is_leader().await.then_some(()) }).await;
    apply_profile(&admin, &shard).await;
    // A profile no running nsguard sees: its finalizer stays, as after nsguard was uninstalled.
    let orphan_profile = json!({"apiVersion": "nsguard.io/v1alpha1", "kind": "HardeningProfile",
        "metadata": {"name": format!("left-{shard}"), "finalizers": ["nsguard.io/release"]},
        "spec": {"namespaceSelector": {"matchLabels": {"nobody": "here"}}}});
    Api::<DynamicObject>::all_with(admin.clone(), &profile_resource())
        .patch(&format!("left-{shard}"), &PatchParams::apply("gitops"), &Patch::Apply(&orphan_profile))
        .await
        .expect("profile without a running nsguard");
    let namespaces = new_namespaces(&admin, &shard, 3).await;
    eventually("the namespaces exactly hardened", || async {
        all_exactly_hardened(&admin, &namespaces).await.then_some(())
    })
    .await;

    let profiles = Api::<DynamicObject>::all_with(admin.clone(), &profile_resource());
    let name = format!("fault-{shard}");
    eventually("nsguard's finalizer on its profile", || async {
        profiles.get(&name).await.ok()?.finalizers().iter().any(|f| f == "nsguard.io/release").then_some(())
    })
    .await;

    let out = kubectl(&["delete", "crd", "hardeningprofiles.nsguard.io", "--wait=false"]);
    assert!(out.status.success(), "kubectl delete crd: {}", String::from_utf8_lossy(&out.stderr));
    // With nsguard running, deleting the CRD deletes its profile, which releases its namespaces.
    eventually("every namespace released", || async {
        for ns in &namespaces {
            let namespace = Api::<Namespace>::all(admin.clone()).get(ns).await.ok()?;
            let labels = namespace.labels();
            let policies = Api::<NetworkPolicy>::namespaced(admin.clone(), ns).list(&Default::default()).await.ok()?;
            if labels.keys().any(|k| k.starts_with("pod-security.kubernetes.io/")) || !policies.items.is_empty() {
                return None;
            }
        }
        Some(())
    })
    .await;
    eventually("nsguard to let its released profile go", || async {
        profiles.get_opt(&name).await.ok()?.is_none().then_some(())
    })
    .await;
    // Profiles no running nsguard sees hold the CRD's deletion until the README's command removes
    // nsguard's finalizers.
    let command = "kubectl get hp -o name | xargs -r -I{} kubectl patch {} --type=merge -p '{\"metadata\":{\"finalizers\":null}}'";
    let bin = kubeconfig_path().parent().expect("cluster dir").join("bin");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let status = std::process::Command::new("bash")
        .args(["-c", command])
        .env("PATH", path)
        .env("KUBECONFIG", kubeconfig_path())
        .status()
        .expect("run the README's command");
    assert!(status.success(), "the README's finalizer command failed");
    eventually("the CRD to go", || async {
        let out = kubectl(&["get", "crd", "hardeningprofiles.nsguard.io", "--ignore-not-found", "-o", "name"]);
        (out.status.success() && out.stdout.is_empty()).then_some(())
    })
    .await;
}
