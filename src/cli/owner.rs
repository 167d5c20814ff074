//! `nsguard status -n NS`: one namespace's hardening, with the rights its owners already have (get
//! on their Namespace, read on Reports and Events in it) — no cluster-wide list. It reads the
//! `nsguard.io/Hardened` condition, nsguard's Report and nsguard's events in the namespace.

use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition};
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams};
use serde::Serialize;
use serde_json::Value;

use super::offline::columns;
use super::{TextOrJson, is_drift_event};
use crate::core::condition::HARDENED;
use crate::core::model::PROFILE_ANNOTATION;
use crate::core::report;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct NamespaceStatus {
    namespace: String,
    profile: Option<String>,
    mode: Option<String>,
    condition: Option<NamespaceCondition>,
    checks: Vec<Value>,
    /// The last drift nsguard corrected or reported here (from events in the namespace).
    last_drift: Option<String>,
}

/// Prints the hardening of `namespace`. Without the Report (the OpenReports CRD is not installed,
/// or the namespace is not governed) it shows the condition alone.
pub async fn status(namespace: &str, output: TextOrJson, client: Client) -> anyhow::Result<i32> {
    let ns = Api::<Namespace>::all(client.clone()).get(namespace).await?;
    let condition =
        ns.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|c| c.iter().find(|c| c.type_ == HARDENED));
    let found = match Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &report::resource())
        .get_opt(report::NAME)
        .await
    {
        Ok(found) => found,
        // No OpenReports CRD: the condition still answers.
        Err(kube::Error::Api(s)) if s.code == 404 => None,
        Err(e) => return Err(e.into()),
    };
    let checks: Vec<Value> = found.as_ref().and_then(|r| r.data["results"].as_array().cloned()).unwrap_or_default();
    let first = checks.first();
    let profile = first
        .and_then(|c| c["policy"].as_str().map(str::to_owned))
        .or_else(|| ns.metadata.annotations.as_ref().and_then(|a| a.get(PROFILE_ANNOTATION).cloned()));
    let mode = first.and_then(|c| c["properties"]["mode"].as_str().map(str::to_owned));
    let events = Api::<Event>::namespaced(client, namespace).list(&ListParams::default()).await?;
    let last_drift =
        events.items.iter().filter(|e| is_drift_event(e)).max_by_key(|e| e.event_time.as_ref().map(|t| t.0)).map(|e| {
            let at = e.event_time.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
            format!("{} at {at}: {}", e.reason.as_deref().unwrap_or_default(), e.note.as_deref().unwrap_or_default())
        });
    let status = NamespaceStatus {
        namespace: namespace.to_owned(),
        profile,
        mode,
        condition: condition.cloned(),
        checks,
        last_drift,
    };
    match output {
        TextOrJson::Json => println!("{}", serde_json::to_string_pretty(&status)?),
        TextOrJson::Text => print!("{}", text(&status)),
    }
    Ok(0)
}

fn text(s: &NamespaceStatus) -> String {
    let mut out = format!("Namespace:  {}\n", s.namespace);
    let profile = match (&s.profile, &s.mode) {
        (Some(p), Some(m)) => format!("{p} ({m} mode)"),
        (Some(p), None) => p.clone(),
        (None, _) => "<none>".to_owned(),
    };
    out.push_str(&format!("Profile:    {profile}\n"));
    match &s.condition {
        Some(c) => out.push_str(&format!(
            "Hardened:   {} ({}) since {}\n            {}\n",
            c.status,
            c.reason.as_deref().unwrap_or_default(),
            c.last_transition_time.as_ref().map(|t| t.0.to_string()).unwrap_or_default(),
            c.message.as_deref().unwrap_or_default()
        )),
        None => out.push_str("Hardened:   - (no nsguard.io/Hardened condition: no profile governs this namespace)\n"),
    }
    if !s.checks.is_empty() {
        let cells: Vec<[String; 4]> = s
            .checks
            .iter()
            .map(|c| {
                let field = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
                [
                    field("result"),
                    field("rule"),
                    c["properties"]["cis-kubernetes"].as_str().unwrap_or("-").to_owned(),
                    field("message"),
                ]
            })
            .collect();
        out.push_str("Checks:\n");
        for line in columns(&["RESULT", "CHECK", "CIS", "DETAIL"], &cells).lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out.push_str(&format!("Last drift: {}\n", s.last_drift.as_deref().unwrap_or("-")));
    out
}
