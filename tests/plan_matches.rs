//! `nsguard plan` over a fixture predicts exactly what the controller applies on a real cluster,
//! `nsguard status` reports it, and `nsguard validate` agrees with the API server.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, ListParams};
use serde_json::{Value, json};
use support::operator::{Operator, SHARD_LABEL, profile_resource};
use support::*;

fn nsguard(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nsguard"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run nsguard")
}

fn documents(dir: &str) -> Vec<Value> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<PathBuf> = Vec::new();
    let mut stack = vec![root];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).expect("dir").map(|e| e.expect("entry").path()));
        } else {
            files.push(path);
        }
    }
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).expect("read");
            serde_saphyr::from_multiple::<Value>(&text).expect("yaml")
        })
        .collect()
}

/// The fixture, moved into this test's shard: names get a suffix, namespaces and profiles the
/// shard label. The system namespace stays out (the cluster has the real one).
fn shard_fixture(shard: &str) -> Vec<Value> {
    let mut docs: Vec<Value> = documents("tests/fixtures/gitops")
        .into_iter()
        .filter(|d| matches!(d["kind"].as_str(), Some("Namespace" | "ServiceAccount" | "HardeningProfile")))
        .filter(|d| d["metadata"]["name"] != "kube-system")
        .collect();
    for d in &mut docs {
        let kind = d["kind"].as_str().unwrap_or_default().to_owned();
        let meta = &mut d["metadata"];
        match kind.as_str() {
            "ServiceAccount" => {
                meta["namespace"] = json!(format!("{}-{shard}", meta["namespace"].as_str().unwrap_or_default()));
            }
            _ => {
                meta["name"] = json!(format!("{}-{shard}", meta["name"].as_str().unwrap_or_default()));
                if !meta["labels"].is_object() {
                    meta["labels"] = json!({});
                }
                meta["labels"][SHARD_LABEL] = json!(shard);
            }
        }
    }
    // Profiles first, then namespaces, then what lives in them.
    docs.sort_by_key(|d| match d["kind"].as_str() {
        Some("HardeningProfile") => 0,
        Some("Namespace") => 1,
        _ => 2,
    });
    docs
}

/// The labels nsguard sets: Pod Security's, and (Enforce mode) the tamper guard's marker.
fn psa_labels(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels
        .iter()
        .filter(|(k, _)| k.starts_with("pod-security.kubernetes.io/") || *k == "nsguard.io/guarded")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[tokio::test]
async fn plan_equals_what_the_controller_applies() {
    let op = Operator::start().await;
    let c = op.admin.clone();
    let shard = op.shard.clone();

    // The plan, from files.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-fixtures").join(&shard);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let file = dir.join("fixture.yaml");
    let docs = shard_fixture(&shard);
    let text: String = docs.iter().map(|d| serde_saphyr::to_string(d).expect("yaml")).collect::<Vec<_>>().join("---\n");
    std::fs::write(&file, text).expect("write fixture");
    let file = file.to_str().expect("path");
    let plan: Value = serde_json::from_slice(&nsguard(&["plan", "-f", file, "-o", "json"]).stdout).expect("plan json");
    let manifests: Vec<Value> =
        serde_saphyr::from_multiple(&String::from_utf8_lossy(&nsguard(&["plan", "-f", file, "-o", "yaml"]).stdout))
            .expect("yaml");
    let entries = plan["namespaces"].as_array().expect("namespaces").clone();
    assert_eq!(entries.len(), 4);

    // The same inputs, on the cluster: the profiles first, and only once nsguard has seen them all
    // (each has a status) the namespaces, so that no namespace is briefly governed by a profile
    // that loses once the rest arrive.
    let (profiles, rest): (Vec<&Value>, Vec<&Value>) = docs.iter().partition(|d| d["kind"] == "HardeningProfile");
    for (part, objects) in [("profiles", &profiles), ("namespaces", &rest)] {
        let path = dir.join(format!("{part}.yaml"));
        let text: String =
            objects.iter().map(|d| serde_saphyr::to_string(d).expect("yaml")).collect::<Vec<_>>().join("---\n");
        std::fs::write(&path, text).expect("write");
        let out = kubectl(&["apply", "-f", path.to_str().expect("path")]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        if part == "profiles" {
            let api = Api::<DynamicObject>::all_with(c.clone(), &profile_resource());
            for p in &profiles {
                let name = p["metadata"]["name"].as_str().expect("name").to_owned();
                eventually(&format!("nsguard to report on {name}"), || async {
                    api.get(&name).await.ok()?.data.get("status").map(|_| ())
                })
                .await;
            }
        }
    }

    let namespaces = Api::<Namespace>::all(c.clone());
    for entry in &entries {
        let name = entry["namespace"].as_str().expect("name").to_owned();
        let expected_profile = entry["profile"].as_str().map(str::to_owned);
        let mode = entry["mode"].as_str().unwrap_or_default().to_owned();
        let planned_labels: BTreeMap<String, String> = serde_json::from_value(entry["labels"].clone()).expect("labels");
        let nps = Api::<NetworkPolicy>::namespaced(c.clone(), &name);
        let sas = Api::<ServiceAccount>::namespaced(c.clone(), &name);

        if mode == "Enforce" {
            // Wait for the controller to converge on this namespace, then compare with the plan.
            let planned_sas: Vec<String> = entry["serviceAccounts"]
                .as_array()
                .expect("sas")
                .iter()
                .map(|s| s["name"].as_str().unwrap_or_default().to_owned())
                .collect();
            eventually(&format!("{name} to match the plan"), || async {
                let ns = namespaces.get(&name).await.ok()?;
                let labels_match = psa_labels(ns.labels()) == planned_labels;
                let governed = ns.annotations().get("nsguard.io/profile").cloned() == expected_profile;
                let mut all_off = true;
                for sa in &planned_sas {
                    all_off &= sas.get_opt(sa).await.ok()??.automount_service_account_token == Some(false);
                }
                (labels_match && governed && all_off).then_some(())
            })
            .await;
            let live: BTreeMap<String, Value> = nps
                .list(&ListParams::default().labels("app.kubernetes.io/managed-by=nsguard"))
                .await
                .expect("policies")
                .items
                .into_iter()
                .map(|np| (np.name_any(), serde_json::to_value(np.spec).expect("spec")))
                .collect();
            let planned: BTreeMap<String, Value> = manifests
                .iter()
                .filter(|m| m["kind"] == "NetworkPolicy" && m["metadata"]["namespace"] == name.as_str())
                .map(|m| (m["metadata"]["name"].as_str().unwrap_or_default().to_owned(), m["spec"].clone()))
                .collect();
            assert_eq!(live, planned, "{name}: NetworkPolicies differ from the plan");
            // ServiceAccounts the plan leaves alone (exempt ones) are untouched.
            for sa in sas.list(&ListParams::default()).await.expect("sas").items {
                if !planned_sas.contains(&sa.name_any()) {
                    assert_eq!(
                        sa.automount_service_account_token,
                        None,
                        "{name}/{} was not in the plan",
                        sa.name_any()
                    );
                }
            }
        } else {
            // Audit mode and ungoverned namespaces: nothing written, ever.
            if let Some(profile) = &expected_profile {
                let profiles = Api::<DynamicObject>::all_with(c.clone(), &profile_resource());
                eventually(&format!("{profile} to report drift in {name}"), || async {
                    let p = profiles.get(profile).await.ok()?;
                    let listed =
                        p.data["status"]["nonCompliant"].as_array()?.iter().any(|n| n["namespace"] == name.as_str());
                    listed.then_some(())
                })
                .await;
            }
            let ns = namespaces.get(&name).await.expect("namespace");
            assert!(psa_labels(ns.labels()).is_empty(), "{name}: labels written");
            assert!(!ns.annotations().contains_key("nsguard.io/profile"), "{name}: annotated");
            assert!(
                nps.list(&ListParams::default()).await.expect("policies").items.is_empty(),
                "{name}: policies written"
            );
        }

        // The losers the plan names report the conflict.
        for loser in entry["overriddenProfiles"].as_array().expect("overridden") {
            let loser = loser.as_str().expect("name").to_owned();
            let winner = expected_profile.clone().expect("a winner");
            let profiles = Api::<DynamicObject>::all_with(c.clone(), &profile_resource());
            eventually(&format!("{loser} to report that {winner} governs {name}"), || async {
                let p = profiles.get(&loser).await.ok()?;
                let conditions = p.data["status"]["conditions"].as_array()?.clone();
                conditions
                    .iter()
                    .any(|c| {
                        c["type"] == "Conflicting"
                            && c["status"] == "True"
                            && c["message"].as_str().is_some_and(|m| m.contains(&winner))
                    })
                    .then_some(())
            })
            .await;
        }
    }

    // `nsguard status` against the live cluster agrees.
    let kubeconfig = kubeconfig_path();
    let kubeconfig = kubeconfig.to_str().expect("path");
    let selector = format!("{SHARD_LABEL}={shard}");
    let status_of = |extra: &[&str]| {
        let mut args = vec![
            "status",
            "--kubeconfig",
            kubeconfig,
            "--namespace-selector",
            &selector,
            "--profile-selector",
            &selector,
        ];
        args.extend_from_slice(extra);
        nsguard(&args)
    };
    let out = status_of(&["-o", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status: Value = serde_json::from_slice(&out.stdout).expect("status json");
    let row = |ns: &str| {
        status["namespaces"]
            .as_array()
            .expect("rows")
            .iter()
            .find(|r| r["namespace"] == ns)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let shop = row(&format!("shop-{shard}"));
    assert_eq!(
        (shop["profile"].as_str(), shop["compliant"].as_bool()),
        (Some(format!("prod-{shard}").as_str()), Some(true))
    );
    let warehouse = row(&format!("warehouse-{shard}"));
    assert_eq!(warehouse["compliant"], false, "Audit mode: drift is reported, not fixed");
    assert_eq!(warehouse["lastDrift"]["reason"], "DriftDetected");
    assert_eq!(row(&format!("legacy-billing-{shard}")), Value::Null, "ungoverned namespaces are not listed");
    let table = String::from_utf8_lossy(&status_of(&[]).stdout).into_owned();
    assert!(table.lines().any(|l| l.starts_with(&format!("shop-{shard}")) && l.contains("yes")), "{table}");
}

#[tokio::test]
async fn api_server_rejects_what_validate_rejects() {
    let _ = install();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).expect("dir").map(|e| e.expect("entry").path()).collect();
    files.sort();
    for file in files {
        let out = nsguard(&["validate", "-f", file.to_str().expect("path")]);
        assert_eq!(out.status.code(), Some(1), "{}: validate accepts it", file.display());
        let applied = kubectl(&["apply", "--dry-run=server", "-f", file.to_str().expect("path")]);
        assert!(!applied.status.success(), "{}: the API server accepted what validate rejects", file.display());
    }
    let valid = kubectl(&["apply", "--dry-run=server", "-f", "tests/fixtures/gitops/profiles"]);
    assert!(valid.status.success(), "{}", String::from_utf8_lossy(&valid.stderr));
}
