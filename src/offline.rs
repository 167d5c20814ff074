//! `nsguard plan` and `nsguard validate`: the controller's pure core run over manifests in files,
//! for previews in GitOps CI. Never a second implementation of the rules: profiles go through
//! [`crate::validate`], namespaces through [`crate::selection::govern`] and [`crate::plan::plan`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::Serialize;
use serde_json::{Value, json};

use crate::crd::Mode;
use crate::desired::release_policy_str;
use crate::model::{NamespaceView, NetworkPolicyView, Profile, ServiceAccountView};
use crate::plan::{Action, Drift, Observed, Outcome, Plan, plan};
use crate::selection::{Exclusions, Governance, govern};
use crate::validate::FieldError;

/// Where a document came from: a file and the document's position in it (from 1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Origin {
    pub file: PathBuf,
    pub document: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (document {})", self.file.display(), self.document)
    }
}

/// A problem with one document, located by file, document and field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileError {
    #[serde(flatten)]
    pub origin: Origin,
    pub field: String,
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.origin, self.message)
        } else {
            write!(f, "{}: {}: {}", self.origin, self.field, self.message)
        }
    }
}

/// The objects read from files.
#[derive(Default, Debug)]
pub struct Inputs {
    pub profiles: Vec<(Origin, Arc<Profile>)>,
    pub namespaces: Vec<NamespaceView>,
    pub service_accounts: Vec<ServiceAccountView>,
    pub network_policies: Vec<NetworkPolicyView>,
    /// Problems: unreadable files, broken YAML, invalid profiles.
    pub errors: Vec<FileError>,
}

/// YAML files under `paths` (files as given; directories recursively, `*.yaml`/`*.yml`/`*.json`).
pub fn files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for path in paths {
        collect(path, &mut out).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(out)
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> =
            std::fs::read_dir(path)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
        entries.sort();
        for entry in entries {
            let manifest =
                entry.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
            if entry.is_dir() || manifest {
                collect(&entry, out)?;
            }
        }
    } else {
        std::fs::metadata(path)?;
        out.push(path.to_owned());
    }
    Ok(())
}

/// Reads every document of every file.
pub fn load(paths: &[PathBuf]) -> Result<Inputs, String> {
    let mut inputs = Inputs::default();
    for file in files(paths)? {
        match std::fs::read_to_string(&file) {
            Ok(text) => load_text(&file, &text, &mut inputs),
            Err(e) => inputs.errors.push(FileError {
                origin: Origin { file: file.clone(), document: 0 },
                field: String::new(),
                message: format!("cannot read: {e}"),
            }),
        }
    }
    Ok(inputs)
}

/// Reads the documents of one file's text.
pub fn load_text(file: &Path, text: &str, inputs: &mut Inputs) {
    for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let origin = Origin { file: file.to_owned(), document: i + 1 };
        let value: Value = match serde::Deserialize::deserialize(document) {
            Ok(v) => v,
            Err(e) => {
                inputs.errors.push(FileError { origin, field: String::new(), message: format!("invalid YAML: {e}") });
                // A syntax error ends the stream: later documents cannot be found reliably.
                break;
            }
        };
        load_object(&origin, value, inputs);
    }
}

fn load_object(origin: &Origin, value: Value, inputs: &mut Inputs) {
    if value.is_null() {
        return;
    }
    let api_version = value["apiVersion"].as_str().unwrap_or_default();
    let kind = value["kind"].as_str().unwrap_or_default();
    let error = |field: &str, message: String| FileError { origin: origin.clone(), field: field.to_owned(), message };
    match (api_version, kind) {
        ("v1", "List") => {
            for item in value["items"].as_array().cloned().unwrap_or_default() {
                load_object(origin, item, inputs);
            }
        }
        (_, "HardeningProfile") => {
            if api_version != "nsguard.io/v1alpha1" {
                inputs
                    .errors
                    .push(error("apiVersion", format!("{api_version:?} is not served; use \"nsguard.io/v1alpha1\"")));
                return;
            }
            match profile_from(&value) {
                Ok(profile) => {
                    if let Err(errors) = &profile.spec {
                        inputs.errors.extend(errors.iter().map(|e| error(&e.field, e.message.clone())));
                    }
                    inputs.profiles.push((origin.clone(), Arc::new(profile)));
                }
                Err(e) => inputs.errors.push(e.located(origin)),
            }
        }
        ("v1", "Namespace") => match serde_json::from_value::<Namespace>(value) {
            Ok(ns) => inputs.namespaces.push(NamespaceView::from_meta(&ns.metadata)),
            Err(e) => inputs.errors.push(error("", format!("invalid Namespace: {e}"))),
        },
        ("v1", "ServiceAccount") => match serde_json::from_value::<ServiceAccount>(value) {
            Ok(mut sa) => {
                sa.metadata.namespace.get_or_insert_with(|| "default".to_owned());
                inputs.service_accounts.push(ServiceAccountView::from_object(&sa));
            }
            Err(e) => inputs.errors.push(error("", format!("invalid ServiceAccount: {e}"))),
        },
        ("networking.k8s.io/v1", "NetworkPolicy") => match serde_json::from_value::<NetworkPolicy>(value) {
            Ok(mut np) => {
                np.metadata.namespace.get_or_insert_with(|| "default".to_owned());
                inputs.network_policies.push(NetworkPolicyView::from_object(&np));
            }
            Err(e) => inputs.errors.push(error("", format!("invalid NetworkPolicy: {e}"))),
        },
        // Everything else in a GitOps repository (Deployments, ...) is not nsguard's concern.
        _ => {}
    }
}

impl FieldError {
    fn located(&self, origin: &Origin) -> FileError {
        FileError { origin: origin.clone(), field: self.field.clone(), message: self.message.clone() }
    }
}

/// A profile from a whole object (`metadata` and `spec`), checked as the API server would.
fn profile_from(value: &Value) -> Result<Profile, FieldError> {
    let name = value["metadata"]["name"].as_str().unwrap_or_default();
    let name_ok = !name.is_empty()
        && name.len() <= 253
        && regex::Regex::new(crate::crd::DNS1123_SUBDOMAIN).is_ok_and(|re| re.is_match(name));
    if !name_ok {
        return Err(FieldError {
            field: "metadata.name".into(),
            message: format!("{name:?} is not a valid name (RFC 1123 subdomain)"),
        });
    }
    if let Some(extra) = value
        .as_object()
        .and_then(|o| o.keys().find(|k| !["apiVersion", "kind", "metadata", "spec", "status"].contains(&k.as_str())))
    {
        return Err(FieldError { field: extra.clone(), message: "unknown field".into() });
    }
    let spec = value.get("spec").cloned().unwrap_or_else(|| json!({}));
    Ok(Profile::parse(name, None, None, &spec))
}

/// Checks every HardeningProfile in the files. Returns the errors and how many profiles were read.
pub fn validate(paths: &[PathBuf]) -> Result<(Vec<FileError>, usize), String> {
    let inputs = load(paths)?;
    Ok((inputs.errors, inputs.profiles.len()))
}

/// What nsguard would do to one namespace.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespacePlan {
    pub namespace: String,
    /// The governing profile, or null.
    pub profile: Option<String>,
    /// Profiles that select the namespace but lost to `profile` (priority, then name).
    pub overridden_profiles: Vec<String>,
    /// The governing profile's mode, or null.
    pub mode: Option<Mode>,
    /// Enforce: apply the baseline; Audit: report only; Release: hand back what nsguard applied;
    /// Hold: the profile is invalid, nothing changes; Excluded: never governed; None: no profile.
    pub action: &'static str,
    /// The labels nsguard sets on the namespace.
    pub labels: BTreeMap<String, String>,
    /// nsguard's NetworkPolicies and what happens to each.
    pub network_policies: Vec<PolicyChange>,
    /// ServiceAccounts whose token setting changes.
    pub service_accounts: Vec<ServiceAccountChange>,
    /// What differs from the baseline now.
    pub drift: Vec<Drift>,
    #[serde(skip)]
    plan: Plan,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyChange {
    pub name: String,
    /// create, update, delete or unchanged
    pub change: &'static str,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountChange {
    pub name: String,
    /// disableTokenAutomount, or release (nsguard gives the field back)
    pub change: &'static str,
}

/// Plans every namespace in the inputs, sorted by name.
pub fn plan_all(inputs: &Inputs, exclusions: &Exclusions) -> Vec<NamespacePlan> {
    let profiles: Vec<Arc<Profile>> = inputs.profiles.iter().map(|(_, p)| p.clone()).collect();
    let mut namespaces = inputs.namespaces.clone();
    namespaces.sort_by(|a, b| a.name.cmp(&b.name));
    namespaces.dedup_by(|a, b| a.name == b.name);
    namespaces
        .iter()
        .map(|ns| {
            let mut service_accounts: Vec<Arc<ServiceAccountView>> =
                inputs.service_accounts.iter().filter(|sa| sa.namespace == ns.name).cloned().map(Arc::new).collect();
            // Kubernetes creates a `default` ServiceAccount in every namespace; manifests rarely
            // contain it.
            if !service_accounts.iter().any(|sa| sa.name == "default") {
                service_accounts.push(Arc::new(ServiceAccountView {
                    namespace: ns.name.clone(),
                    name: "default".into(),
                    uid: None,
                    resource_version: None,
                    automount_token: None,
                    automount_owned: false,
                }));
            }
            // In name order, as the controller's cache returns them.
            service_accounts.sort_by(|a, b| a.name.cmp(&b.name));
            let mut network_policies: Vec<Arc<NetworkPolicyView>> =
                inputs.network_policies.iter().filter(|np| np.namespace == ns.name).cloned().map(Arc::new).collect();
            network_policies.sort_by(|a, b| a.name.cmp(&b.name));
            let observed = Observed { network_policies, service_accounts };
            {
                // Offline, the files are the whole truth: a profile missing from them is one the
                // GitOps tool will delete, which releases its namespaces.
                let governance = match govern(ns, &profiles, exclusions) {
                    Governance::Orphaned { .. } => Governance::Ungoverned,
                    other => other,
                };
                namespace_plan(ns, plan(ns, governance, &observed))
            }
        })
        .collect()
}

fn namespace_plan(ns: &NamespaceView, plan: Plan) -> NamespacePlan {
    let profile = plan.governance.profile_name().map(str::to_owned);
    let overridden = plan.governance.overridden().to_vec();
    let mode = plan.desired.as_ref().map(|d| d.mode);
    let action = match (&plan.governance, plan.outcome) {
        (Governance::Excluded, _) => "Excluded",
        (Governance::Held { .. } | Governance::Orphaned { .. }, _) => "Hold",
        (_, Outcome::Releasing) => "Release",
        (Governance::Ungoverned, _) => "None",
        (Governance::Governed { .. }, _) if mode == Some(Mode::Audit) => "Audit",
        (Governance::Governed { .. }, _) => "Enforce",
    };
    let labels = plan.desired.as_ref().map(|d| d.labels.clone()).unwrap_or_default();
    let mut network_policies: Vec<PolicyChange> = Vec::new();
    if let Some(desired) = &plan.desired {
        for name in desired.network_policies.keys() {
            let change = if plan.drift.contains(&Drift::NetworkPolicyMissing { name: name.clone() }) {
                "create"
            } else if plan.drift.contains(&Drift::NetworkPolicyChanged { name: name.clone() }) {
                "update"
            } else {
                "unchanged"
            };
            network_policies.push(PolicyChange { name: name.clone(), change });
        }
    }
    let mut service_accounts = Vec::new();
    for d in &plan.drift {
        match d {
            Drift::NetworkPolicyUnwanted { name } => {
                network_policies.push(PolicyChange { name: name.clone(), change: "delete" })
            }
            Drift::ServiceAccountAutomount { name, .. } => {
                service_accounts.push(ServiceAccountChange { name: name.clone(), change: "disableTokenAutomount" })
            }
            _ => {}
        }
    }
    for a in &plan.actions {
        match a {
            Action::DeleteNetworkPolicy { name, .. } if !network_policies.iter().any(|p| &p.name == name) => {
                network_policies.push(PolicyChange { name: name.clone(), change: "delete" })
            }
            Action::ReleaseAutomount { name, .. } => {
                service_accounts.push(ServiceAccountChange { name: name.clone(), change: "release" })
            }
            _ => {}
        }
    }
    NamespacePlan {
        namespace: ns.name.clone(),
        profile,
        overridden_profiles: overridden,
        mode,
        action,
        labels,
        network_policies,
        service_accounts,
        drift: plan.drift.clone(),
        plan,
    }
}

/// `-o json`: `{"namespaces": [...]}`.
pub fn render_json(plans: &[NamespacePlan]) -> String {
    serde_json::to_string_pretty(&json!({ "namespaces": plans })).unwrap_or_default() + "\n"
}

/// `-o table`: one line per namespace.
pub fn render_table(plans: &[NamespacePlan]) -> String {
    let rows: Vec<[String; 5]> = plans
        .iter()
        .map(|p| {
            let changes = if p.drift.is_empty() && p.plan.actions.is_empty() {
                "-".to_owned()
            } else if p.action == "Release" {
                format!("{} write(s) to release", p.plan.actions.len())
            } else {
                let verb = if p.action == "Audit" { "would report" } else { "would fix" };
                format!("{verb} {} difference(s)", p.drift.len())
            };
            [
                p.namespace.clone(),
                p.profile.clone().unwrap_or_else(|| "<none>".into()),
                p.action.to_owned(),
                if p.overridden_profiles.is_empty() { "-".into() } else { p.overridden_profiles.join(",") },
                changes,
            ]
        })
        .collect();
    columns(&["NAMESPACE", "PROFILE", "ACTION", "OVERRIDDEN", "CHANGES"], &rows)
}

/// Left-aligned columns separated by three spaces, as kubectl prints tables.
pub fn columns<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let widths: Vec<usize> =
        (0..N).map(|i| rows.iter().map(|r| r[i].len()).chain([header[i].len()]).max().unwrap_or(0)).collect();
    let line = |cells: &[String]| {
        cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("   ").trim_end().to_owned()
    };
    let mut out = line(&header.map(str::to_owned)) + "\n";
    for row in rows {
        out += &(line(row) + "\n");
    }
    out
}

/// `-o yaml`: the objects nsguard would apply, as Kubernetes manifests (Enforce mode only; Audit
/// mode applies nothing).
pub fn render_yaml(plans: &[NamespacePlan]) -> String {
    let mut docs: Vec<String> = Vec::new();
    for p in plans {
        let (Some(desired), Some(profile)) = (&p.plan.desired, &p.profile) else { continue };
        if desired.mode != Mode::Enforce {
            continue;
        }
        let namespace = json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {
                "name": p.namespace,
                "labels": desired.labels,
                "annotations": {
                    crate::model::PROFILE_ANNOTATION: profile,
                    crate::model::RELEASE_POLICY_ANNOTATION: release_policy_str(desired.release_policy),
                },
            },
        });
        docs.push(yaml(&namespace));
        for np in desired.network_policies.values() {
            docs.push(yaml(&serde_json::to_value(np).unwrap_or_default()));
        }
        for sa in p.service_accounts.iter().filter(|s| s.change == "disableTokenAutomount") {
            docs.push(yaml(&json!({
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": sa.name, "namespace": p.namespace},
                "automountServiceAccountToken": false,
            })));
        }
    }
    docs.join("---\n")
}

fn yaml(value: &Value) -> String {
    serde_yaml::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

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
            "apiVersion: nsguard.io/v1alpha1\nkind: HardeningProfile\nmetadata: {name: ok}\n---\n\
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
            "apiVersion: nsguard.io/v1alpha1\nkind: HardeningProfile\nmetadata: {name: p}\n---\n\
             apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
        );
        let out = render_yaml(&plan_all(&i, &Exclusions::default()));
        let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&out)
            .map(|d| serde::Deserialize::deserialize(d).expect("yaml"))
            .collect();
        let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        assert_eq!(kinds, ["Namespace", "NetworkPolicy", "NetworkPolicy", "ServiceAccount"]);
        serde_json::from_value::<Namespace>(docs[0].clone()).expect("a Namespace");
        serde_json::from_value::<NetworkPolicy>(docs[1].clone()).expect("a NetworkPolicy");
        serde_json::from_value::<ServiceAccount>(docs[3].clone()).expect("a ServiceAccount");
    }
}
