//! Argo CD's health check for HardeningProfiles (`config/argocd/health.lua`), run as Argo CD runs
//! it (Lua 5.1, `obj` global, returns `hs`) against status fixtures (`tests/fixtures/argocd/`) and
//! against statuses nsguard's own aggregation writes. No cluster needed.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use mlua::serde::SerializeOptions;
use mlua::{Lua, LuaSerdeExt};
use nsguard::core::model::Profile;
use nsguard::core::plan::Outcome;
use nsguard::core::status::{NamespaceResult, aggregate};
use serde_json::{Value, json};

fn read(path: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs the health check on `obj`: (status, message).
fn health(obj: &Value) -> (String, String) {
    let lua = Lua::new();
    // JSON null is nil in Argo CD's Lua, as here.
    let options = SerializeOptions::new().serialize_none_to_null(false).serialize_unit_to_null(false);
    let value = lua.to_value_with(obj, options).expect("obj as a Lua value");
    lua.globals().set("obj", value).expect("set obj");
    let hs: mlua::Table =
        lua.load(read("config/argocd/health.lua")).set_name("health.lua").eval().expect("health.lua runs");
    let status: String = hs.get("status").expect("hs.status");
    let message: String = hs.get("message").expect("hs.message");
    (status, message)
}

#[test]
fn fixtures_get_the_health_argo_cd_should_show() {
    for (fixture, want, says) in [
        ("healthy", "Healthy", "42 namespace(s) governed, 42 compliant"),
        ("audit-drift", "Healthy", "2 namespace(s) differ from the baseline (Audit mode: not corrected)"),
        ("invalid-spec", "Degraded", "Invalid spec: spec.futureField: unknown field"),
        ("conflicting", "Degraded", "baseline-everywhere governs 2 namespace(s)"),
        ("drift-fight", "Degraded", "field manager argocd-controller"),
        ("converging", "Progressing", "2 of 42 namespace(s) are being brought to the baseline"),
        ("retrying", "Progressing", "could not be reconciled, retrying"),
        ("generation-behind", "Progressing", "not yet acted on generation 2"),
        ("no-status", "Progressing", "Waiting for nsguard"),
    ] {
        let obj: Value =
            serde_json::from_str(&read(&format!("tests/fixtures/argocd/{fixture}.json"))).expect("fixture");
        let (status, message) = health(&obj);
        assert_eq!(status, want, "{fixture}: {message}");
        assert!(message.contains(says), "{fixture}: {message:?} should say {says:?}");
    }
}

fn result(outcome: Outcome, failed: bool, overridden: &[&str]) -> NamespaceResult {
    NamespaceResult {
        profile: Some("prod".into()),
        overridden: overridden.iter().map(|s| (*s).to_owned()).collect(),
        outcome,
        detail: if outcome == Outcome::Compliant { String::new() } else { "label x was missing".into() },
        failed,
        fighting: false,
        rivals: vec![],
        taken: vec![],
        held: None,
        exception: None,
    }
}

/// The profile object `name` with the status nsguard's aggregation computes from `results`.
fn live(name: &str, spec: Value, results: &[(&str, NamespaceResult)]) -> Value {
    let profiles = [Arc::new(Profile::parse(name, None, Some(3), &spec))];
    let now = Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).expect("time"));
    let statuses = aggregate(&profiles, results.iter().map(|(n, r)| (*n, r)), &HashMap::new(), &HashMap::new(), &now);
    json!({"apiVersion": "nsguard.io/v1alpha1", "kind": "HardeningProfile",
        "metadata": {"name": name, "generation": 3}, "spec": spec, "status": statuses[name]})
}

#[test]
fn statuses_nsguard_writes_get_the_right_health() {
    let spec = json!({"namespaceSelector": {"matchLabels": {"env": "prod"}}});
    let compliant = live("prod", spec.clone(), &[("a", result(Outcome::Compliant, false, &[]))]);
    assert_eq!(health(&compliant).0, "Healthy");
    let converging = live("prod", spec.clone(), &[("a", result(Outcome::Converging, false, &[]))]);
    assert_eq!(health(&converging).0, "Progressing");
    let retrying = live("prod", spec.clone(), &[("a", result(Outcome::Converging, true, &[]))]);
    assert_eq!(health(&retrying).0, "Progressing");
    // "other" wins namespace a over this profile ("prod" names the governing profile in the result).
    let overridden = live("other", spec.clone(), &[("a", result(Outcome::Compliant, false, &["other"]))]);
    assert_eq!(health(&overridden).0, "Degraded");
    let invalid = live("prod", json!({"podSecurity": {"warn": {"version": "1.30"}}}), &[]);
    let (status, message) = health(&invalid);
    assert_eq!(status, "Degraded");
    assert!(message.contains("spec.podSecurity.warn.version"), "{message}");
}

#[test]
fn argocd_cm_patch_carries_health_lua_verbatim() {
    let patch: Value = serde_saphyr::from_str(&read("config/argocd/argocd-cm-patch.yaml")).expect("yaml");
    assert_eq!(patch["kind"], "ConfigMap");
    assert_eq!(patch["metadata"]["name"], "argocd-cm");
    let script = patch["data"]["resource.customizations.health.nsguard.io_HardeningProfile"].as_str().expect("script");
    assert!(script == read("config/argocd/health.lua"), "argocd-cm-patch.yaml differs from health.lua");
}
