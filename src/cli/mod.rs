//! The companion commands: `plan`, `validate` (offline) and `status` (live).

pub mod crd;
pub mod load;
pub mod offline;
mod owner;

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use serde::Serialize;

use self::offline::{Inputs, Origin};
use crate::core::announce::event_namespace;
use crate::core::crd::HardeningProfile;
use crate::core::model::{
    MANAGED_BY_LABEL, MANAGED_BY_VALUE, NamespaceView, NetworkPolicyView, Profile, ServiceAccountView,
};
use crate::core::selection::Exclusions;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    /// One line per namespace.
    #[default]
    Table,
    /// The Namespace, NetworkPolicy and ServiceAccount manifests nsguard would apply.
    Yaml,
    /// `{"namespaces": [...]}` with every detail.
    Json,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum TextOrJson {
    #[default]
    Text,
    Json,
}

/// Which namespaces nsguard never governs, as in `nsguard run`.
#[derive(Args, Debug, Clone)]
pub struct ExclusionArgs {
    /// nsguard's own namespace (never governed).
    #[arg(long = "nsguard-namespace", default_value = "nsguard-system")]
    pub own_namespace: String,
    /// Also govern kube-system, kube-public, kube-node-lease and nsguard's own namespace.
    #[arg(long)]
    pub include_system_namespaces: bool,
    /// Namespace-name globs nsguard never governs (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub exclude_namespaces: Vec<String>,
}

impl ExclusionArgs {
    pub fn exclusions(&self) -> anyhow::Result<Exclusions> {
        Exclusions::new(Some(&self.own_namespace), self.include_system_namespaces, &self.exclude_namespaces)
            .map_err(|e| anyhow::anyhow!("--exclude-namespaces: {e}"))
    }
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// YAML or JSON files, or directories of them (multi-document; HardeningProfiles, Namespaces,
    /// ServiceAccounts, NetworkPolicies; other kinds are ignored).
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    pub paths: Vec<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = PlanFormat::Table)]
    pub output: PlanFormat,
    #[command(flatten)]
    pub exclusions: ExclusionArgs,
}

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// YAML or JSON files, or directories of them.
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    pub paths: Vec<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = TextOrJson::Text)]
    pub output: TextOrJson,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Kubeconfig file; without it, `$KUBECONFIG` (colon-separated files are merged), the default
    /// kubeconfig, or the in-cluster configuration.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = TextOrJson::Text)]
    pub output: TextOrJson,
    /// Only this namespace, answered from the namespace itself (its `nsguard.io/Hardened`
    /// condition, nsguard's Report and events there): namespace-scoped rights are enough.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Also list namespaces no profile governs.
    #[arg(long)]
    pub all: bool,
    /// Only namespaces matching this label selector (as `nsguard run --namespace-selector`).
    #[arg(long)]
    pub namespace_selector: Option<String>,
    /// Only profiles matching this label selector (as `nsguard run --profile-selector`).
    #[arg(long)]
    pub profile_selector: Option<String>,
    #[command(flatten)]
    pub exclusions: ExclusionArgs,
}

/// The name to show in help when the binary runs as a kubectl plugin: kubectl runs
/// `kubectl nsguard ARGS` as `kubectl-nsguard ARGS` (found on the PATH).
pub fn plugin_name(argv0: &std::path::Path) -> Option<&'static str> {
    let file = argv0.file_name()?.to_str()?;
    (file == "kubectl-nsguard" || file == "kubectl-nsguard.exe").then_some("kubectl nsguard")
}

/// `nsguard plan`. Exit status 1 when a profile is invalid (the plan is still printed).
pub fn plan(args: &PlanArgs) -> anyhow::Result<i32> {
    let inputs = offline::load(&args.paths).map_err(anyhow::Error::msg)?;
    let plans = offline::plan_all(&inputs, &args.exclusions.exclusions()?);
    let out = match args.output {
        PlanFormat::Table => offline::render_table(&plans),
        PlanFormat::Json => offline::render_json(&plans),
        PlanFormat::Yaml => offline::render_yaml(&plans),
    };
    std::io::stdout().write_all(out.as_bytes())?;
    for e in &inputs.errors {
        eprintln!("error: {e}");
    }
    Ok(if inputs.errors.is_empty() { 0 } else { 1 })
}

/// `nsguard validate`. Exit status 1 on any error (an exception whose `expires` lies more than 90
/// days ahead is one); exceptions expiring within 7 days are warnings.
pub fn validate(args: &ValidateArgs) -> anyhow::Result<i32> {
    let (errors, warnings, profiles) =
        offline::validate(&args.paths, k8s_openapi::jiff::Timestamp::now()).map_err(anyhow::Error::msg)?;
    match args.output {
        TextOrJson::Json => {
            println!("{}", serde_json::json!({"profiles": profiles, "errors": errors, "warnings": warnings}));
        }
        TextOrJson::Text => {
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            for e in &errors {
                println!("{e}");
            }
            if errors.is_empty() {
                println!("{profiles} HardeningProfile(s) valid");
            } else {
                println!("{} error(s) in {profiles} HardeningProfile(s)", errors.len());
            }
        }
    }
    Ok(if errors.is_empty() { 0 } else { 1 })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusRow {
    namespace: String,
    profile: Option<String>,
    mode: Option<crate::core::crd::Mode>,
    compliant: bool,
    differences: Vec<String>,
    last_drift: Option<LastDrift>,
    /// An active exception that lowers the enforce level nsguard sets here.
    #[serde(skip_serializing_if = "Option::is_none")]
    exception: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LastDrift {
    reason: String,
    time: String,
    note: String,
}

/// `nsguard status`: every governed namespace, its profile, whether it matches the baseline now,
/// and the last drift nsguard corrected or reported.
pub async fn status(args: &StatusArgs, client: Client) -> anyhow::Result<i32> {
    if let Some(namespace) = &args.namespace {
        return owner::status(namespace, args.output, client).await;
    }
    let ar = ApiResource::erase::<HardeningProfile>(&());
    let all = ListParams::default();
    let selected = |selector: &Option<String>| match selector {
        Some(s) => ListParams::default().labels(s),
        None => ListParams::default(),
    };
    let profiles = Api::<DynamicObject>::all_with(client.clone(), &ar)
        .list(&selected(&args.profile_selector))
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 404 => anyhow::anyhow!(
                "the HardeningProfile CRD (hardeningprofiles.nsguard.io) is not installed in this cluster: install nsguard first (kubectl apply -f crds/)"
            ),
            e => e.into(),
        })?;
    let namespaces = Api::<Namespace>::all(client.clone()).list(&selected(&args.namespace_selector)).await?;
    let service_accounts = Api::<ServiceAccount>::all(client.clone()).list(&all).await?;
    let managed = ListParams::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));
    let policies = Api::<NetworkPolicy>::all(client.clone()).list(&managed).await?;
    let events = Api::<Event>::all(client).list(&all).await?;

    let mut inputs = Inputs::default();
    for p in &profiles {
        let origin = Origin { file: PathBuf::from("cluster"), document: 0 };
        inputs.profiles.push((origin, std::sync::Arc::new(Profile::from_object(p))));
    }
    inputs.namespaces = namespaces.iter().map(NamespaceView::from_namespace).collect();
    let namespace = |meta: &kube::api::ObjectMeta| meta.namespace.clone().unwrap_or_default();
    inputs.service_accounts =
        service_accounts.iter().map(|sa| (namespace(&sa.metadata), ServiceAccountView::from_object(sa))).collect();
    inputs.network_policies =
        policies.iter().map(|np| (namespace(&np.metadata), NetworkPolicyView::from_object(np))).collect();

    let mut last: std::collections::HashMap<String, LastDrift> = std::collections::HashMap::new();
    let mut drift_events: Vec<&Event> = events.iter().filter(|e| is_drift_event(e)).collect();
    drift_events.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    for e in drift_events {
        if let (Some(ns), Some(time)) = (event_namespace(e), &e.event_time) {
            let ns = ns.to_owned();
            last.insert(
                ns,
                LastDrift {
                    reason: e.reason.clone().unwrap_or_default(),
                    time: time.0.to_string(),
                    note: e.note.clone().unwrap_or_default(),
                },
            );
        }
    }

    let rows: Vec<StatusRow> = offline::plan_all(&inputs, &args.exclusions.exclusions()?)
        .into_iter()
        .filter(|p| args.all || p.profile.is_some())
        .map(|p| StatusRow {
            compliant: p.profile.is_some() && p.drift.is_empty(),
            differences: p.drift.iter().map(ToString::to_string).collect(),
            last_drift: last.remove(&p.namespace),
            exception: p.enforce.as_ref().and_then(|e| e.exception.clone()),
            namespace: p.namespace,
            profile: p.profile,
            mode: p.mode,
        })
        .collect();
    match args.output {
        TextOrJson::Json => println!("{}", serde_json::to_string_pretty(&serde_json::json!({"namespaces": rows}))?),
        TextOrJson::Text => print!("{}", status_table(&rows)),
    }
    Ok(0)
}

/// An event of nsguard's about drift (corrected, detected, or fought over).
fn is_drift_event(e: &Event) -> bool {
    e.reporting_controller.as_deref() == Some("nsguard")
        && matches!(e.reason.as_deref(), Some("DriftCorrected" | "DriftDetected" | "DriftFight"))
}

fn status_table(rows: &[StatusRow]) -> String {
    let now = Timestamp::now();
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            let last = r.last_drift.as_ref().map_or_else(
                || "-".to_owned(),
                |d| {
                    let age = d.time.parse::<Timestamp>().map(|t| now.duration_since(t).as_secs()).unwrap_or(0);
                    format!("{} {} ago", d.reason, human(age))
                },
            );
            let mode = r.mode.map_or_else(|| "-".to_owned(), |m| format!("{m:?}"));
            let compliant = if r.profile.is_none() {
                "-".to_owned()
            } else if r.compliant {
                "yes".to_owned()
            } else {
                format!("no ({} difference(s))", r.differences.len())
            };
            [r.namespace.clone(), r.profile.clone().unwrap_or_else(|| "<none>".into()), mode, compliant, last]
        })
        .collect();
    let mut out = offline::columns(&["NAMESPACE", "PROFILE", "MODE", "COMPLIANT", "LAST DRIFT"], &cells);
    // Active exceptions follow the table, one line each, so none is read as plain compliance.
    for r in rows {
        if let Some(exception) = &r.exception {
            out.push_str(&format!("{}: {exception}\n", r.namespace));
        }
    }
    out
}

fn human(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}
