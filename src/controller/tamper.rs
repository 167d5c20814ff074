//! Whether the tamper guard (`config/guard`: ValidatingAdmissionPolicies) is installed. nsguard
//! does not install it itself, so it says whether it is active: one log line at start and on every
//! change, and the `nsguard_guard_active` gauge (1 while every policy and binding exists).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
use kube::api::Api;
use tracing::{info, warn};

use super::context::Context;

/// The guard's policies, each with a binding of the same name.
pub const POLICIES: [&str; 4] = [
    "nsguard-guard-namespaces",
    "nsguard-guard-networkpolicies",
    "nsguard-guard-serviceaccounts",
    "nsguard-guard-pods",
];

/// How often nsguard looks.
const INTERVAL: Duration = Duration::from_secs(60);

/// What nsguard found of the guard.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Found {
    /// Every policy and binding, with the bindings' actions (`Deny`, or `Warn` and `Audit`).
    Active(String),
    /// Not installed, or only in part (the missing pieces are named).
    Missing(Vec<String>),
    /// Could not tell (the API failed; nsguard looks again).
    Unknown(String),
}

async fn look(ctx: &Context) -> Found {
    let policies = Api::<ValidatingAdmissionPolicy>::all(ctx.client.clone());
    let bindings = Api::<ValidatingAdmissionPolicyBinding>::all(ctx.client.clone());
    let mut missing = Vec::new();
    let mut actions = std::collections::BTreeSet::new();
    for name in POLICIES {
        match policies.get_opt(name).await {
            Ok(Some(_)) => {}
            Ok(None) => missing.push(format!("ValidatingAdmissionPolicy {name}")),
            Err(e) => return Found::Unknown(e.to_string()),
        }
        match bindings.get_opt(name).await {
            Ok(Some(b)) => actions.extend(b.spec.validation_actions),
            Ok(None) => missing.push(format!("ValidatingAdmissionPolicyBinding {name}")),
            Err(e) => return Found::Unknown(e.to_string()),
        }
    }
    if missing.is_empty() {
        Found::Active(actions.into_iter().collect::<Vec<_>>().join(","))
    } else {
        Found::Missing(missing)
    }
}

/// Looks for the guard every [`INTERVAL`], for as long as the controller runs.
pub async fn watch(ctx: Arc<Context>) {
    let mut last: Option<Found> = None;
    loop {
        let found = look(&ctx).await;
        if last.as_ref() != Some(&found) {
            match &found {
                Found::Active(actions) => info!(actions = %actions, "tamper guard active (config/guard)"),
                Found::Missing(missing) if missing.len() == 2 * POLICIES.len() => {
                    info!(
                        "tamper guard not installed: drift is healed after the fact, not prevented (kubectl apply -k config/guard)"
                    )
                }
                Found::Missing(missing) => warn!(missing = %missing.join(", "), "tamper guard installed only in part"),
                Found::Unknown(error) => warn!(error = %error, "cannot tell whether the tamper guard is installed"),
            }
        }
        if !matches!(found, Found::Unknown(_)) {
            ctx.metrics.guard_active.set(i64::from(matches!(found, Found::Active(_))));
        }
        last = Some(found);
        tokio::time::sleep(INTERVAL).await;
    }
}
