//! `nsguard plan` and `nsguard validate`: the controller's pure core run over manifests in files,
//! for previews in GitOps CI. Never a second implementation of the rules: profiles go through
//! [`crate::core::validate`], namespaces through [`crate::core::selection::govern`] and [`crate::core::plan::plan`].

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Value, json};

pub use super::load::{FileError, Inputs, Origin, load, validate};
use crate::core::crd::{Mode, Rollout};
use crate::core::desired::release_policy_str;
use crate::core::model::{NamespaceView, Profile, ServiceAccountView};
use crate::core::plan::{Action, Drift, Observed, Outcome, Plan, plan};
use crate::core::selection::{Exclusions, Governance, govern};

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
    /// The Pod Security enforce level nsguard would set, and how (Enforce mode only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enforce: Option<EnforcePreview>,
    #[serde(skip)]
    plan: Plan,
}

/// The enforce level a namespace would get: the profile's, or an exception's, through the rollout
/// gate when it is raised.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnforcePreview {
    /// `level:version` nsguard aims for (an exception's, while one applies).
    pub level: String,
    /// The exception that lowers it, if any.
    pub exception: Option<String>,
    /// `Unchanged`, `Immediate`, or `Gated`: raised only as far as the existing pods allow.
    pub rollout: &'static str,
    /// What the gate depends on.
    pub note: Option<String>,
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

/// The views of the objects (each read with its namespace) in `namespace`.
fn in_namespace<V: Clone>(objects: &[(String, V)], namespace: &str) -> Vec<Arc<V>> {
    objects.iter().filter(|(at, _)| at == namespace).map(|(_, view)| Arc::new(view.clone())).collect()
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
            let mut service_accounts = in_namespace(&inputs.service_accounts, &ns.name);
            // Kubernetes creates a `default` ServiceAccount in every namespace; manifests rarely
            // contain it.
            if !service_accounts.iter().any(|sa| sa.name == "default") {
                service_accounts.push(Arc::new(ServiceAccountView { name: "default".into(), ..Default::default() }));
            }
            // In name order, as the controller's cache returns them.
            service_accounts.sort_by(|a, b| a.name.cmp(&b.name));
            let mut network_policies = in_namespace(&inputs.network_policies, &ns.name);
            network_policies.sort_by(|a, b| a.name.cmp(&b.name));
            let observed = Observed {
                network_policies,
                service_accounts,
                now: k8s_openapi::jiff::Timestamp::now(),
                ..Default::default()
            };
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
        enforce: enforce_preview(ns, &plan),
        plan,
    }
}

fn enforce_preview(ns: &NamespaceView, plan: &Plan) -> Option<EnforcePreview> {
    let want = plan.desired.as_ref().filter(|d| d.mode == Mode::Enforce)?;
    let level = format!("{}:{}", want.enforce.level.as_str(), want.enforce.version);
    let raised = crate::core::gate::raises(crate::core::gate::enforced(ns), &want.enforce);
    let (rollout, note) = match want.rollout {
        _ if !raised => ("Unchanged", None),
        Rollout::Immediate => ("Immediate", None),
        Rollout::Gated => (
            "Gated",
            Some(format!(
                "before enforcing {level}, nsguard asks the API server (a dry-run) whether existing pods would violate it, and holds enforce at the strictest level they pass until they do not; that check needs the cluster"
            )),
        ),
    };
    Some(EnforcePreview { level, exception: plan.exception.as_ref().map(|e| e.describe()), rollout, note })
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
    let mut out = columns(&["NAMESPACE", "PROFILE", "ACTION", "OVERRIDDEN", "CHANGES"], &rows);
    // Notes follow the table, after a blank line.
    let table = out.len();
    for p in plans {
        if let Some(e) = &p.enforce
            && let Some(exception) = &e.exception
        {
            out.push_str(&format!("{}: enforce {} by {exception}\n", p.namespace, e.level));
        }
    }
    let gated = plans.iter().filter(|p| p.enforce.as_ref().is_some_and(|e| e.rollout == "Gated")).count();
    if gated > 0 {
        out.push_str(&format!(
            "{gated} namespace(s) raise enforce through the rollout gate (rollout: Gated): whether existing pods allow it is decided by a dry-run on the cluster, which a plan cannot do; enforce may be held at a lower level until they do\n"
        ));
    }
    if out.len() > table {
        out.insert(table, '\n');
    }
    out
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
                    crate::core::model::PROFILE_ANNOTATION: profile,
                    crate::core::model::RELEASE_POLICY_ANNOTATION: release_policy_str(desired.release_policy),
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
    serde_saphyr::to_string(value).unwrap_or_default()
}

#[cfg(test)]
#[path = "offline_tests.rs"]
mod tests;
