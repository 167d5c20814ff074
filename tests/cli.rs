//! `nsguard plan` and `nsguard validate` over fixture directories (no cluster needed).

use std::process::{Command, Output};

use serde_json::{Value, json};

fn nsguard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nsguard"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run nsguard")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn plan_json() -> Value {
    let out = nsguard(&["plan", "-f", "tests/fixtures/gitops", "-o", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("plan -o json prints JSON")
}

fn entry<'a>(plan: &'a Value, namespace: &str) -> &'a Value {
    plan["namespaces"].as_array().expect("namespaces").iter().find(|n| n["namespace"] == namespace).expect(namespace)
}

#[test]
fn plan_resolves_overlapping_profiles_by_priority_then_name() {
    let plan = plan_json();
    let shop = entry(&plan, "shop");
    assert_eq!(shop["profile"], "prod");
    assert_eq!(shop["overriddenProfiles"], json!(["baseline-everywhere"]));
    assert_eq!(shop["mode"], "Enforce");
    // warehouse is selected by prod and audit-data at priority 10, and by baseline-everywhere at
    // 0: the tie goes to the first name.
    let warehouse = entry(&plan, "warehouse");
    assert_eq!(warehouse["profile"], "audit-data");
    assert_eq!(warehouse["overriddenProfiles"], json!(["prod", "baseline-everywhere"]));
}

#[test]
fn plan_shows_labels_policies_and_service_accounts() {
    let plan = plan_json();
    let shop = entry(&plan, "shop");
    let mut labels: serde_json::Map<String, Value> = ["enforce", "audit", "warn"]
        .iter()
        .flat_map(|m| {
            [
                (format!("pod-security.kubernetes.io/{m}"), json!("restricted")),
                (format!("pod-security.kubernetes.io/{m}-version"), json!("latest")),
            ]
        })
        .collect();
    // Enforce mode also marks the namespace for the tamper guard.
    labels.insert("nsguard.io/guarded".into(), json!("true"));
    let labels = Value::Object(labels);
    assert_eq!(shop["labels"], labels);
    assert_eq!(
        shop["networkPolicies"],
        json!([{"name": "nsguard-allow-dns", "change": "create"}, {"name": "nsguard-default-deny", "change": "create"}])
    );
    // ci-bot is exempt; the implicit `default` ServiceAccount and builder are changed.
    assert_eq!(
        shop["serviceAccounts"],
        json!([{"name": "builder", "change": "disableTokenAutomount"}, {"name": "default", "change": "disableTokenAutomount"}])
    );
    let sandbox = entry(&plan, "sandbox");
    assert_eq!(sandbox["profile"], "baseline-everywhere");
    assert_eq!(sandbox["labels"]["pod-security.kubernetes.io/enforce"], "baseline");
    assert_eq!(sandbox["networkPolicies"], json!([{"name": "nsguard-default-deny", "change": "create"}]));
    assert_eq!(sandbox["serviceAccounts"], json!([{"name": "default", "change": "disableTokenAutomount"}]));
}

#[test]
fn plan_reports_audit_mode_without_changes_to_apply() {
    let plan = plan_json();
    let warehouse = entry(&plan, "warehouse");
    assert_eq!(warehouse["mode"], "Audit");
    assert_eq!(warehouse["action"], "Audit");
    assert!(!warehouse["drift"].as_array().expect("drift").is_empty());
    let yaml = stdout(&nsguard(&["plan", "-f", "tests/fixtures/gitops", "-o", "yaml"]));
    assert!(!yaml.contains("name: warehouse"), "Audit mode applies nothing:\n{yaml}");
}

#[test]
fn plan_applies_exclusions_and_leaves_ungoverned_namespaces_alone() {
    let plan = plan_json();
    let system = entry(&plan, "kube-system");
    assert_eq!((&system["profile"], &system["action"]), (&Value::Null, &json!("Excluded")));
    let legacy = entry(&plan, "legacy-billing");
    assert_eq!((&legacy["profile"], &legacy["action"]), (&Value::Null, &json!("None")));
    assert_eq!(legacy["labels"], json!({}));
    assert_eq!(legacy["networkPolicies"], json!([]));
    // Opting in to system namespaces changes that, as it does for the controller.
    let out = nsguard(&["plan", "-f", "tests/fixtures/gitops", "-o", "json", "--include-system-namespaces"]);
    let plan: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(entry(&plan, "kube-system")["profile"], "baseline-everywhere");
}

#[test]
fn plan_yaml_is_kubernetes_manifests() {
    let out = nsguard(&["plan", "-f", "tests/fixtures/gitops", "-o", "yaml"]);
    assert!(out.status.success());
    let docs: Vec<Value> = serde_saphyr::from_multiple(&stdout(&out)).expect("valid YAML");
    let names: Vec<String> = docs
        .iter()
        .map(|d| format!("{}/{}", d["kind"].as_str().unwrap_or("?"), d["metadata"]["name"].as_str().unwrap_or("?")))
        .collect();
    assert_eq!(
        names,
        [
            "Namespace/sandbox",
            "NetworkPolicy/nsguard-default-deny",
            "ServiceAccount/default",
            "Namespace/shop",
            "NetworkPolicy/nsguard-allow-dns",
            "NetworkPolicy/nsguard-default-deny",
            "ServiceAccount/builder",
            "ServiceAccount/default",
        ]
    );
    for d in &docs {
        assert!(d["apiVersion"].is_string() && d["kind"].is_string(), "{d}");
    }
    serde_json::from_value::<k8s_openapi::api::networking::v1::NetworkPolicy>(docs[1].clone()).expect("NetworkPolicy");
}

#[test]
fn plan_table_has_a_line_per_namespace() {
    let out = stdout(&nsguard(&["plan", "-f", "tests/fixtures/gitops"]));
    // The table, then notes after a blank line.
    let lines: Vec<&str> = out.lines().take_while(|l| !l.is_empty()).collect();
    assert!(lines[0].starts_with("NAMESPACE") && lines[0].contains("PROFILE") && lines[0].contains("OVERRIDDEN"));
    assert_eq!(lines.len(), 6, "{out}");
    assert!(lines.iter().any(|l| l.starts_with("warehouse") && l.contains("audit-data") && l.contains("would report")));
}

#[test]
fn valid_profiles_validate() {
    let out = nsguard(&["validate", "-f", "tests/fixtures/gitops"]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(stdout(&out), "3 HardeningProfile(s) valid\n");
}

#[test]
fn invalid_files_are_reported_with_file_document_and_field() {
    let cases = [
        ("broken-yaml", 1, "invalid YAML: mapping values are not allowed in this context at line 7, column 12"),
        ("unknown-field", 1, "spec.podSecurity.enforce.levle: unknown field `levle`, expected `level` or `version`"),
        ("bad-enum", 1, "spec.mode: unknown variant `Enforced`, expected `Enforce` or `Audit`"),
        ("bad-version", 1, "spec.podSecurity.warn.version: \"1.30\" is not a Pod Security Standards version"),
        (
            "bad-selector",
            1,
            "spec.namespaceSelector.matchExpressions[0].values: values must be non-empty for operators In and NotIn",
        ),
        ("bad-label-value", 1, "spec.namespaceSelector.matchLabels.env: \"prod env\" is not a valid label value"),
        ("bad-glob", 1, "spec.excludeNamespaces[0]: \"Legacy_*\" is not a namespace-name glob"),
        ("bad-name", 1, "metadata.name: \"Bad_Name\" is not a valid name (RFC 1123 subdomain)"),
        ("wrong-api-version", 1, "apiVersion: \"nsguard.io/v1\" is not served; use \"nsguard.io/v1alpha1\""),
        ("second-document", 2, "spec.releasePolicy: unknown variant `Keep`, expected `Release` or `Retain`"),
    ];
    for (name, document, message) in cases {
        let file = format!("tests/fixtures/invalid/{name}.yaml");
        let out = nsguard(&["validate", "-f", &file]);
        assert_eq!(out.status.code(), Some(1), "{file}: exit status");
        let text = stdout(&out);
        let expected = format!("{file} (document {document}): {message}");
        assert!(text.starts_with(&expected), "{file}:\n  got      {text}\n  expected {expected}");
    }
    // All at once, as JSON: one error per file.
    let out = nsguard(&["validate", "-f", "tests/fixtures/invalid", "-o", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["errors"].as_array().map(Vec::len), Some(cases.len()));
    assert!(
        report["errors"].as_array().expect("errors").iter().all(|e| e["file"].is_string() && e["document"].is_number())
    );
}

#[test]
fn plan_fails_on_invalid_profiles_but_still_prints() {
    let out = nsguard(&["plan", "-f", "tests/fixtures/gitops", "-f", "tests/fixtures/invalid/bad-enum.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("spec.mode: unknown variant `Enforced`"));
    assert!(stdout(&out).starts_with("NAMESPACE"));
}

/// A profile with an exception ending in 3 days and one 200 days ahead (refused), and three
/// namespaces, written to a fresh directory (the dates are relative to now).
fn exceptions_fixture() -> std::path::PathBuf {
    let at = |days: i64| {
        let t = k8s_openapi::jiff::Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_hours(days * 24);
        t.round(k8s_openapi::jiff::Unit::Second).expect("round").to_string()
    };
    let dir = std::env::temp_dir().join(format!("nsguard-exceptions-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let manifests = format!(
        r#"apiVersion: nsguard.io/v1alpha1
kind: HardeningProfile
metadata: {{name: prod}}
spec:
  exceptions:
  - namespaces: ["legacy-*"]
    podSecurity: {{enforce: {{level: baseline}}}}
    expires: "{soon}"
    reason: "SEC-9 legacy workers run as root"
  - namespaces: ["never-*"]
    podSecurity: {{enforce: {{level: privileged}}}}
    expires: "{far}"
    reason: "forever, by accident"
---
apiVersion: v1
kind: Namespace
metadata: {{name: legacy-a}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: never-x}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: svc, labels: {{pod-security.kubernetes.io/enforce: restricted, pod-security.kubernetes.io/enforce-version: latest}}}}
"#,
        soon = at(3),
        far = at(200)
    );
    std::fs::write(dir.join("all.yaml"), manifests).expect("write fixture");
    dir
}

#[test]
fn validate_refuses_an_exception_more_than_90_days_ahead_and_warns_of_one_expiring_within_7_days() {
    let dir = exceptions_fixture();
    let out = nsguard(&["validate", "-f", dir.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1), "a refused exception fails validation");
    let text = stdout(&out);
    assert!(text.contains("spec.exceptions[1].expires"), "{text}");
    assert!(text.contains("more than 90 days after it was written"), "{text}");
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(
        warnings.contains("warning:") && warnings.contains("expires within 7 days: spec.exceptions[0]"),
        "{warnings}"
    );
}

#[test]
fn plan_shows_the_enforce_level_an_exception_sets_and_that_the_gate_needs_the_cluster() {
    let dir = exceptions_fixture();
    let out = nsguard(&["plan", "-f", dir.to_str().expect("utf-8"), "-o", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plan: Value = serde_json::from_slice(&out.stdout).expect("json");
    let legacy = entry(&plan, "legacy-a");
    assert_eq!(legacy["labels"]["pod-security.kubernetes.io/enforce"], "baseline");
    assert_eq!(legacy["labels"]["pod-security.kubernetes.io/audit"], "restricted");
    assert_eq!(legacy["enforce"]["level"], "baseline:latest");
    assert!(legacy["enforce"]["exception"].as_str().is_some_and(|e| e.contains("SEC-9")), "{legacy}");
    assert_eq!(legacy["enforce"]["rollout"], "Gated");
    assert!(legacy["enforce"]["note"].as_str().is_some_and(|n| n.contains("needs the cluster")), "{legacy}");
    // The refused exception does not apply.
    let never = entry(&plan, "never-x");
    assert_eq!(never["labels"]["pod-security.kubernetes.io/enforce"], "restricted");
    assert!(never["enforce"]["exception"].is_null());
    // Already at the target: nothing to gate.
    assert_eq!(entry(&plan, "svc")["enforce"]["rollout"], "Unchanged");
    let table = stdout(&nsguard(&["plan", "-f", dir.to_str().expect("utf-8")]));
    assert!(table.contains("legacy-a: enforce baseline:latest by exception 0"), "{table}");
    assert!(table.contains("2 namespace(s) raise enforce through the rollout gate"), "{table}");
}
