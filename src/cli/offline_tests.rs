//! Unit tests of `offline`.

use std::path::Path;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;

use super::*;
use crate::cli::load::load_text;

fn inputs(text: &str) -> Inputs {
    let mut inputs = Inputs::default();
    load_text(Path::new("fixture.yaml"), text, &mut inputs);
    inputs
}

#[test]
fn broken_yaml_is_located() {
    let i = inputs("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nkind: [unclosed\n");
    assert_eq!(i.namespaces.len(), 1);
    assert_eq!(i.errors.len(), 1);
    assert_eq!(i.errors[0].origin.document, 2);
    assert!(i.errors[0].message.starts_with("invalid YAML"), "{}", i.errors[0]);
}

#[test]
fn profile_errors_name_file_document_and_field() {
    let i = inputs(
        "apiVersion: nsguard.io/v1alpha1\nkind: HardeningProfile\nmetadata: {name: ok}\nspec: {}\n---\n\
         apiVersion: nsguard.io/v1alpha1\nkind: HardeningProfile\nmetadata: {name: bad}\nspec: {mode: Sometimes}\n",
    );
    assert_eq!(i.errors.len(), 1);
    assert_eq!(
        i.errors[0].to_string(),
        "fixture.yaml (document 2): spec.mode: unknown variant `Sometimes`, expected `Enforce` or `Audit`"
    );
}

#[test]
fn lists_are_read_and_other_kinds_ignored() {
    let i = inputs(
        "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: a}}\n\
         - {apiVersion: apps/v1, kind: Deployment, metadata: {name: d}}\n",
    );
    assert_eq!(i.namespaces.len(), 1);
    assert!(i.errors.is_empty());
}

#[test]
fn plan_names_winner_losers_and_changes() {
    let i = inputs(
        "apiVersion: nsguard.io/v1alpha1\nkind: HardeningProfile\nmetadata: {name: low}\nspec: {priority: 1}\n---\n\
         apiVersion: nsguard.io/v1alpha1\nkind: HardeningProfile\nmetadata: {name: high}\nspec: {priority: 5}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {name: kube-system}\n",
    );
    let plans = plan_all(&i, &Exclusions::default());
    let json: Value = serde_json::from_str(&render_json(&plans)).expect("json");
    let shop = &json["namespaces"][1];
    assert_eq!(shop["namespace"], "shop");
    assert_eq!(shop["profile"], "high");
    assert_eq!(shop["overriddenProfiles"], json!(["low"]));
    assert_eq!(shop["mode"], "Enforce");
    assert_eq!(shop["labels"]["pod-security.kubernetes.io/enforce"], "restricted");
    assert_eq!(
        shop["networkPolicies"],
        json!([{"name": "nsguard-allow-dns", "change": "create"}, {"name": "nsguard-default-deny", "change": "create"}])
    );
    assert_eq!(shop["serviceAccounts"], json!([{"name": "default", "change": "disableTokenAutomount"}]));
    let system = &json["namespaces"][0];
    assert_eq!((system["namespace"].as_str(), &system["profile"]), (Some("kube-system"), &Value::Null));
    assert_eq!(system["action"], "Excluded");
}

#[test]
fn yaml_output_is_applicable_manifests() {
    let i = inputs(
        "apiVersion: nsguard.io/v1alpha1\nkind: HardeningProfile\nmetadata: {name: p}\nspec: {}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
    );
    let out = render_yaml(&plan_all(&i, &Exclusions::default()));
    let docs: Vec<Value> = serde_saphyr::from_multiple::<Value>(&out).expect("yaml");
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(kinds, ["Namespace", "NetworkPolicy", "NetworkPolicy", "ServiceAccount"]);
    serde_json::from_value::<Namespace>(docs[0].clone()).expect("a Namespace");
    serde_json::from_value::<NetworkPolicy>(docs[1].clone()).expect("a NetworkPolicy");
    serde_json::from_value::<ServiceAccount>(docs[3].clone()).expect("a ServiceAccount");
}

#[test]
fn a_profile_without_spec_is_rejected_as_the_api_server_would() {
    let i = inputs("apiVersion: nsguard.io/v1alpha1\nkind: HardeningProfile\nmetadata: {name: bare}\n");
    assert_eq!(i.errors.len(), 1);
    assert_eq!(i.errors[0].field, "spec");
    assert!(i.profiles.is_empty());
}
