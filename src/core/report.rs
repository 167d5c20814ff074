//! Pure: a governed namespace → its compliance report, an OpenReports `Report`
//! (`openreports.io/v1alpha1`) named `nsguard` in the namespace, read by Policy Reporter and other
//! tools, and by the namespace's owners (`kubectl get reports -n NS`).
//!
//! One result per check, `policy` = the profile, `rule` = a stable check id, with the CIS
//! Kubernetes Benchmark controls the check maps to in `properties`. A check reads `fail` while its
//! drift stands (Audit mode, or a fight nsguard backs off from), `skip` when the profile turns it
//! off. The report carries no timestamps, so an unchanged namespace produces the same report and
//! nothing is written in steady state.

use serde_json::{Value, json};

use crate::core::crd::Mode;
use crate::core::desired::{ALLOW_DNS_POLICY, DEFAULT_DENY_POLICY, Desired};
pub use crate::core::model::ReportSeen as Seen;
use crate::core::model::{MANAGED_BY_LABEL, MANAGED_BY_VALUE, PSA_PREFIX};
use crate::core::plan::{Drift, Outcome, Plan};
use crate::core::status::NamespaceResult;

/// The Report's API group/version, kind and name.
pub const API_VERSION: &str = "openreports.io/v1alpha1";
pub const KIND: &str = "Report";
pub const NAME: &str = "nsguard";
/// The OpenReports `Report` resource (`reports.openreports.io/v1alpha1`).
pub fn resource() -> kube::core::ApiResource {
    kube::core::ApiResource {
        group: "openreports.io".into(),
        version: "v1alpha1".into(),
        api_version: API_VERSION.into(),
        kind: KIND.into(),
        plural: "reports".into(),
    }
}

/// The fields of a Report nsguard writes, and compares to tell whether it changed.
const CONTENT: [&str; 4] = ["scope", "source", "results", "summary"];

/// The outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    Warn,
    Skip,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::Warn => "warn",
            Self::Skip => "skip",
        }
    }
}

/// One check of a namespace against its profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub rule: &'static str,
    pub verdict: Verdict,
    pub message: String,
    pub category: &'static str,
    pub severity: &'static str,
    /// CIS Kubernetes Benchmark controls, comma-separated.
    pub cis: String,
}

/// CIS 5.2.x controls each Pod Security level enforces (5.2.1: a policy control mechanism in place).
fn pod_security_controls(level: &str) -> &'static str {
    match level {
        "restricted" => "5.2.1,5.2.2,5.2.3,5.2.4,5.2.5,5.2.6,5.2.7,5.2.8,5.2.9,5.2.10,5.2.11,5.2.12,5.2.13",
        "baseline" => "5.2.1,5.2.2,5.2.3,5.2.4,5.2.5,5.2.11,5.2.12,5.2.13",
        _ => "5.2.1",
    }
}

/// The checks of a namespace whose profile wants `want`, with `drift` still standing.
pub fn checks(want: &Desired, drift: &[Drift]) -> Vec<Check> {
    let mut out = Vec::new();
    let failing = |matches: &dyn Fn(&Drift) -> bool| -> Vec<String> {
        drift.iter().filter(|d| matches(d)).map(ToString::to_string).collect()
    };
    let verdict = |enabled: bool, failures: &[String]| match (enabled, failures.is_empty()) {
        (false, _) => Verdict::Skip,
        (true, true) => Verdict::Pass,
        (true, false) => Verdict::Fail,
    };
    for (mode, rule) in
        [("enforce", "pod-security-enforce"), ("audit", "pod-security-audit"), ("warn", "pod-security-warn")]
    {
        let level_key = format!("{PSA_PREFIX}{mode}");
        let version_key = format!("{level_key}-version");
        let level = want.labels.get(&level_key).cloned().unwrap_or_default();
        let version = want.labels.get(&version_key).cloned().unwrap_or_default();
        let failures = failing(&|d| matches!(d, Drift::Label { key, .. } if *key == level_key || *key == version_key));
        out.push(Check {
            rule,
            verdict: verdict(true, &failures),
            message: if failures.is_empty() {
                format!("{mode} level {level}, version {version}")
            } else {
                failures.join("; ")
            },
            category: "Pod Security",
            severity: if mode == "enforce" { "high" } else { "medium" },
            cis: if mode == "enforce" { pod_security_controls(&level).to_owned() } else { "5.2.1".to_owned() },
        });
    }
    let deny = want.network_policies.get(DEFAULT_DENY_POLICY);
    let policy_types = deny.and_then(|np| np.spec.as_ref()).and_then(|s| s.policy_types.clone()).unwrap_or_default();
    let policy_failures = |name: &'static str| {
        failing(
            &|d| matches!(d, Drift::NetworkPolicyMissing { name: n } | Drift::NetworkPolicyChanged { name: n } if n == name),
        )
    };
    for (direction, rule) in [("Ingress", "network-default-deny-ingress"), ("Egress", "network-default-deny-egress")] {
        let enabled = policy_types.iter().any(|t| t == direction);
        let failures = policy_failures(DEFAULT_DENY_POLICY);
        out.push(Check {
            rule,
            verdict: verdict(enabled, &failures),
            message: match (enabled, failures.is_empty()) {
                (false, _) => format!("default-deny {} is off in the profile", direction.to_lowercase()),
                (true, true) => format!("NetworkPolicy {DEFAULT_DENY_POLICY} denies all {}", direction.to_lowercase()),
                (true, false) => failures.join("; "),
            },
            category: "Network Policies",
            severity: "high",
            cis: "5.3.2".to_owned(),
        });
    }
    let dns = want.network_policies.contains_key(ALLOW_DNS_POLICY);
    let failures = policy_failures(ALLOW_DNS_POLICY);
    out.push(Check {
        rule: "network-dns-egress",
        verdict: verdict(dns, &failures),
        message: match (dns, failures.is_empty()) {
            (false, _) => "DNS egress is off in the profile".to_owned(),
            (true, true) => format!("NetworkPolicy {ALLOW_DNS_POLICY} allows DNS to the cluster DNS pods only"),
            (true, false) => failures.join("; "),
        },
        category: "Network Policies",
        severity: "low",
        cis: "5.3.2".to_owned(),
    });
    let tokens = want.service_accounts.enabled;
    let failures = failing(&|d| matches!(d, Drift::ServiceAccountAutomount { .. }));
    out.push(Check {
        rule: "serviceaccount-token-automount",
        verdict: verdict(tokens, &failures),
        message: match (tokens, failures.is_empty()) {
            (false, _) => "token automount is left as it is by the profile".to_owned(),
            (true, true) => "every ServiceAccount in scope has automountServiceAccountToken: false".to_owned(),
            (true, false) => failures.join("; "),
        },
        category: "Service Accounts",
        severity: "medium",
        cis: "5.1.5,5.1.6".to_owned(),
    });
    out
}

/// What a namespace's Report says: everything its apply body is made of. Its fingerprint is
/// computed from these parts, without building the body: a reconcile that finds the Report as it
/// should be (every echo of a write, every resync) builds no JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Content<'a> {
    pub namespace: &'a str,
    pub uid: Option<&'a crate::core::ids::Uid>,
    pub profile: &'a str,
    pub mode: Mode,
    pub checks: Vec<Check>,
}

/// The verdicts a Report's `summary` counts, in the (sorted) order of its keys.
const SUMMARY: [Verdict; 4] = [Verdict::Fail, Verdict::Pass, Verdict::Skip, Verdict::Warn];

impl Content<'_> {
    /// How many checks have `verdict`.
    pub fn count(&self, verdict: Verdict) -> u64 {
        self.checks.iter().filter(|c| c.verdict == verdict).count() as u64
    }

    /// `properties.mode` of every result.
    fn mode(&self) -> String {
        format!("{:?}", self.mode)
    }

    /// The apply body.
    pub fn body(&self) -> Value {
        let mode = self.mode();
        let results: Vec<Value> = self
            .checks
            .iter()
            .map(|c| {
                json!({
                    "policy": self.profile,
                    "rule": c.rule,
                    "result": c.verdict.as_str(),
                    "message": c.message,
                    "category": c.category,
                    "severity": c.severity,
                    "properties": {"cis-kubernetes": c.cis, "mode": mode},
                })
            })
            .collect();
        let mut summary = serde_json::Map::new();
        summary.insert("error".into(), json!(0));
        for verdict in SUMMARY {
            summary.insert(verdict.as_str().into(), json!(self.count(verdict)));
        }
        let mut scope = json!({"apiVersion": "v1", "kind": "Namespace", "name": self.namespace});
        if let Some(uid) = self.uid {
            scope["uid"] = json!(uid);
        }
        json!({
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": NAME, "namespace": self.namespace, "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE}},
            "scope": scope,
            "source": "nsguard",
            "results": results,
            "summary": summary,
        })
    }
}

/// The Report for a namespace with `plan` and `result`: `None` when the namespace should have
/// none (no profile governs it), `Some(None)` when nsguard leaves it as it is (an invalid or
/// unseen profile: the last good report stands).
pub fn desired<'a>(
    namespace: &'a str,
    uid: Option<&'a crate::core::ids::Uid>,
    plan: &Plan,
    result: &'a NamespaceResult,
) -> Option<Option<Content<'a>>> {
    let profile = result.profile.as_deref();
    match (result.outcome, &plan.desired, profile) {
        (Outcome::Held | Outcome::Orphaned, _, _) => Some(None),
        (Outcome::Untouched | Outcome::Releasing, _, _) | (_, None, _) | (_, _, None) => None,
        (_, Some(want), Some(profile)) => {
            let standing: &[Drift] = if result.outcome == Outcome::Compliant { &[] } else { &plan.drift };
            let mut checks = checks(want, standing);
            // The enforce check fails while the rollout gate holds it back, and warns while an
            // exception lowers it.
            if let Some(enforce) =
                checks.iter_mut().find(|c| c.rule == "pod-security-enforce" && c.verdict == Verdict::Pass)
            {
                if let Some(held) = &result.held {
                    enforce.verdict = Verdict::Fail;
                    enforce.message = held.clone();
                } else if let Some(exception) = &result.exception {
                    enforce.verdict = Verdict::Warn;
                    enforce.message = format!("{}; {exception}", enforce.message);
                }
            }
            Some(Some(Content { namespace, uid, profile, mode: want.mode, checks }))
        }
    }
}

/// The write that makes the namespace's Report `want` (see [`desired`]), given what is `seen`.
pub fn write(seen: &Seen, want: Option<Option<Content<'_>>>) -> Option<crate::core::plan::Action> {
    use crate::core::plan::Action;
    match (seen, want) {
        (Seen::Unavailable, _) | (_, Some(None)) => None,
        (Seen::Absent, None) => None,
        (Seen::Present { uid, .. }, None) => Some(Action::DeleteReport { uid: uid.clone() }),
        (Seen::Present { fingerprint: f, .. }, Some(Some(content))) if *f == content.fingerprint() => None,
        (_, Some(Some(content))) => Some(Action::ApplyReport(Box::new(content.body()))),
    }
}

#[path = "report_fingerprint.rs"]
mod fingerprinting;
pub use fingerprinting::fingerprint;

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
