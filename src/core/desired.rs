//! Pure: a profile and a namespace → the state nsguard wants that namespace in.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector as K8sSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;

use crate::core::crd::{
    HardeningProfileSpec, LabelSelector, Mode, PodOverride, PodSecurityLevel, PodSecurityMode, ReleasePolicy, Rollout,
    SelectorOperator, ServiceAccountScope,
};
use crate::core::model::{
    EXEMPT_ANNOTATION, GUARD_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, POD_TOKEN_GUARD_ANNOTATION, PROFILE_ANNOTATION,
    PSA_PREFIX, RELEASE_POLICY_ANNOTATION, policy_fingerprint,
};

/// Name of the default-deny NetworkPolicy.
pub const DEFAULT_DENY_POLICY: &str = "nsguard-default-deny";
/// Name of the DNS egress NetworkPolicy.
pub const ALLOW_DNS_POLICY: &str = "nsguard-allow-dns";
/// The label every namespace carries with its own name; the DNS policy selects by it.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The state a profile asks of one namespace.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub mode: Mode,
    /// Labels nsguard sets on the namespace (the Pod Security Admission labels, and in Enforce
    /// mode the tamper guard's marker).
    pub labels: BTreeMap<String, String>,
    /// Annotations nsguard sets on the namespace (its bookkeeping). Empty in Audit mode.
    pub annotations: BTreeMap<String, String>,
    /// The NetworkPolicies nsguard maintains, complete objects ready to apply, by name.
    pub network_policies: BTreeMap<String, NetworkPolicy>,
    /// Which ServiceAccounts get `automountServiceAccountToken: false`.
    pub service_accounts: ServiceAccountTarget,
    pub release_policy: ReleasePolicy,
    /// What the profile asks to enforce here (an exception may have lowered it; the rollout gate
    /// may hold the label below it).
    pub enforce: PodSecurityMode,
    pub rollout: Rollout,
}

/// The ServiceAccount every namespace has (the controller-manager creates it).
pub const DEFAULT_ACCOUNT: &str = "default";

/// Which ServiceAccounts of a namespace nsguard turns token automount off for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccountTarget {
    pub enabled: bool,
    pub scope: ServiceAccountScope,
    pub exempt: Vec<String>,
}

impl ServiceAccountTarget {
    pub fn includes(&self, name: &str) -> bool {
        self.enabled
            && (self.scope == ServiceAccountScope::All || name == DEFAULT_ACCOUNT)
            && !self.exempt.iter().any(|e| e == name)
    }
}

/// The desired state of `namespace` under the profile `profile_name`.
pub fn desired(profile_name: &str, spec: &HardeningProfileSpec, namespace: &str) -> Desired {
    let mut labels = BTreeMap::new();
    for (mode, setting) in [
        ("enforce", &spec.pod_security.enforce),
        ("audit", &spec.pod_security.audit),
        ("warn", &spec.pod_security.warn),
    ] {
        labels.insert(format!("{PSA_PREFIX}{mode}"), setting.level.as_str().to_owned());
        labels.insert(format!("{PSA_PREFIX}{mode}-version"), setting.version.clone());
    }
    let mut annotations = match spec.mode {
        Mode::Audit => BTreeMap::new(),
        Mode::Enforce => BTreeMap::from([
            (PROFILE_ANNOTATION.to_owned(), profile_name.to_owned()),
            (RELEASE_POLICY_ANNOTATION.to_owned(), release_policy_str(spec.release_policy).to_owned()),
        ]),
    };
    // The tamper guard's markers (Enforce mode only: nothing is guarded in Audit mode).
    let sa = &spec.service_accounts;
    if spec.mode == Mode::Enforce {
        labels.insert(GUARD_LABEL.to_owned(), "true".to_owned());
        if sa.disable_token_automount && sa.pod_override == PodOverride::Deny {
            let scope = match sa.scope {
                ServiceAccountScope::All => "All",
                ServiceAccountScope::Default => "Default",
            };
            annotations.insert(POD_TOKEN_GUARD_ANNOTATION.to_owned(), scope.to_owned());
            if !sa.exempt.is_empty() {
                annotations.insert(EXEMPT_ANNOTATION.to_owned(), sa.exempt.join(","));
            }
        }
    }
    let mut network_policies = BTreeMap::new();
    let deny = &spec.network_policy.default_deny;
    if deny.ingress || deny.egress {
        let mut types = Vec::new();
        if deny.ingress {
            types.push("Ingress".to_owned());
        }
        if deny.egress {
            types.push("Egress".to_owned());
        }
        let spec = NetworkPolicySpec {
            pod_selector: Some(K8sSelector::default()),
            policy_types: Some(types),
            ingress: None,
            egress: None,
        };
        network_policies
            .insert(DEFAULT_DENY_POLICY.to_owned(), policy(DEFAULT_DENY_POLICY, namespace, profile_name, spec));
    }
    let dns = &spec.network_policy.allow_dns;
    if dns.enabled {
        let port = |protocol: &str| NetworkPolicyPort {
            protocol: Some(protocol.to_owned()),
            port: Some(IntOrString::Int(53)),
            end_port: None,
        };
        let spec = NetworkPolicySpec {
            pod_selector: Some(K8sSelector::default()),
            policy_types: Some(vec!["Egress".to_owned()]),
            ingress: None,
            egress: Some(vec![NetworkPolicyEgressRule {
                to: Some(vec![NetworkPolicyPeer {
                    namespace_selector: Some(K8sSelector {
                        match_labels: Some(BTreeMap::from([(NAMESPACE_NAME_LABEL.to_owned(), dns.namespace.clone())])),
                        match_expressions: None,
                    }),
                    pod_selector: Some(to_k8s_selector(&dns.pod_selector)),
                    ip_block: None,
                }]),
                ports: Some(vec![port("UDP"), port("TCP")]),
            }]),
        };
        network_policies.insert(ALLOW_DNS_POLICY.to_owned(), policy(ALLOW_DNS_POLICY, namespace, profile_name, spec));
    }
    Desired {
        mode: spec.mode,
        labels,
        annotations,
        network_policies,
        service_accounts: ServiceAccountTarget {
            enabled: sa.disable_token_automount,
            scope: sa.scope,
            exempt: sa.exempt.clone(),
        },
        release_policy: spec.release_policy,
        enforce: spec.pod_security.enforce.clone(),
        rollout: spec.pod_security.rollout,
    }
}

impl Desired {
    /// An exception lowers what is enforced (audit and warn stay).
    pub fn lower_enforce(&mut self, to: &PodSecurityMode) {
        self.enforce = to.clone();
        self.set_enforce_labels(to.level, &to.version);
    }

    /// The rollout gate holds the enforce label at `level` (the target stays in `enforce`), or,
    /// with `keep`, exactly at the labels the namespace had (an absent one stays absent).
    pub fn hold_enforce(&mut self, level: PodSecurityLevel, keep: Option<&(Option<String>, Option<String>)>) {
        let Some((kept_level, kept_version)) = keep else {
            let version = self.enforce.version.clone();
            self.set_enforce_labels(level, &version);
            return;
        };
        for (key, value) in [("enforce", kept_level), ("enforce-version", kept_version)] {
            let key = format!("{PSA_PREFIX}{key}");
            match value {
                Some(v) => self.labels.insert(key, v.clone()),
                None => self.labels.remove(&key),
            };
        }
    }

    fn set_enforce_labels(&mut self, level: PodSecurityLevel, version: &str) {
        self.labels.insert(format!("{PSA_PREFIX}enforce"), level.as_str().to_owned());
        self.labels.insert(format!("{PSA_PREFIX}enforce-version"), version.to_owned());
    }

    /// The tamper guard's marker keys (labels and annotations) this desired state sets: what
    /// nsguard holds on a namespace it applied.
    #[cfg(test)]
    pub fn marker_keys(&self) -> Vec<&'static str> {
        self.labels.keys().chain(self.annotations.keys()).filter_map(|k| crate::core::model::marker(k)).collect()
    }
}

/// The annotation value for a release policy.
pub fn release_policy_str(policy: ReleasePolicy) -> &'static str {
    match policy {
        ReleasePolicy::Release => "Release",
        ReleasePolicy::Retain => "Retain",
    }
}

fn policy(name: &str, namespace: &str, profile: &str, spec: NetworkPolicySpec) -> NetworkPolicy {
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned())])),
            annotations: Some(BTreeMap::from([(PROFILE_ANNOTATION.to_owned(), profile.to_owned())])),
            ..Default::default()
        },
        spec: Some(spec),
    }
}

/// nsguard's selector as a Kubernetes `metav1.LabelSelector`.
pub fn to_k8s_selector(selector: &LabelSelector) -> K8sSelector {
    let labels: BTreeMap<String, String> =
        selector.match_labels.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect();
    let expressions: Vec<LabelSelectorRequirement> = selector
        .match_expressions
        .iter()
        .map(|r| LabelSelectorRequirement {
            key: r.key.clone(),
            operator: match r.operator {
                SelectorOperator::In => "In",
                SelectorOperator::NotIn => "NotIn",
                SelectorOperator::Exists => "Exists",
                SelectorOperator::DoesNotExist => "DoesNotExist",
            }
            .to_owned(),
            values: (!r.values.is_empty()).then(|| r.values.iter().map(|v| v.0.clone()).collect()),
        })
        .collect();
    K8sSelector {
        match_labels: (!labels.is_empty()).then_some(labels),
        match_expressions: (!expressions.is_empty()).then_some(expressions),
    }
}

/// After an apply of NetworkPolicy `want` returned `got`: another manager owns a field that was
/// edited (say, rules added to a list nsguard leaves empty), so applying cannot take it back, and
/// the policy must be deleted; its watch event brings a reconcile that re-creates it whole.
pub fn recreate_after_apply(want: &NetworkPolicy, got: Option<&NetworkPolicySpec>) -> bool {
    !same_policy(want.spec.as_ref(), got)
}

/// Compares two NetworkPolicy specs, treating absent and empty lists alike (the API server drops
/// empty lists, so a desired `[]` reads back as absent).
pub fn same_policy(want: Option<&NetworkPolicySpec>, got: Option<&NetworkPolicySpec>) -> bool {
    policy_fingerprint(want) == policy_fingerprint(got)
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn default_profile_enforces_restricted_latest_in_all_three_modes() {
        let d = desired("p", &HardeningProfileSpec::default(), "team-a");
        let mut expected: BTreeMap<String, String> = ["enforce", "audit", "warn"]
            .iter()
            .flat_map(|m| {
                [
                    (format!("{PSA_PREFIX}{m}"), "restricted".to_owned()),
                    (format!("{PSA_PREFIX}{m}-version"), "latest".to_owned()),
                ]
            })
            .collect();
        // And, in Enforce mode, the tamper guard's marker.
        expected.insert(GUARD_LABEL.to_owned(), "true".to_owned());
        assert_eq!(d.labels, expected);
        assert_eq!(d.annotations[PROFILE_ANNOTATION], "p");
        assert!(d.service_accounts.includes("default") && d.service_accounts.includes("builder"));
    }

    #[test]
    fn default_deny_denies_ingress_and_egress_with_no_rules() {
        let d = desired("p", &HardeningProfileSpec::default(), "team-a");
        let np = &d.network_policies[DEFAULT_DENY_POLICY];
        assert_eq!(
            serde_json::to_value(np.spec.as_ref()).expect("serializable"),
            json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
        );
        assert_eq!(np.metadata.labels.as_ref().expect("labels")[MANAGED_BY_LABEL], "nsguard");
    }

    #[test]
    fn dns_policy_allows_udp_and_tcp_53_to_dns_pods_by_namespace_name_label() {
        let d = desired("p", &HardeningProfileSpec::default(), "team-a");
        let np = &d.network_policies[ALLOW_DNS_POLICY];
        assert_eq!(
            serde_json::to_value(np.spec.as_ref()).expect("serializable"),
            json!({
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [{
                    "to": [{
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}
                    }],
                    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
                }]
            })
        );
    }

    #[test]
    fn audit_mode_sets_no_annotations() {
        let spec = HardeningProfileSpec { mode: Mode::Audit, ..Default::default() };
        assert!(desired("p", &spec, "n").annotations.is_empty());
    }

    #[test]
    fn disabled_parts_are_not_desired() {
        let mut spec = HardeningProfileSpec::default();
        spec.network_policy.default_deny.ingress = false;
        spec.network_policy.default_deny.egress = false;
        spec.network_policy.allow_dns.enabled = false;
        spec.service_accounts.disable_token_automount = false;
        let d = desired("p", &spec, "n");
        assert!(d.network_policies.is_empty());
        assert!(!d.service_accounts.includes("default"));
    }

    #[test]
    fn scope_and_exemptions_choose_service_accounts() {
        let mut spec = HardeningProfileSpec::default();
        spec.service_accounts.exempt = vec!["ci-bot".into()];
        let all = desired("p", &spec, "n").service_accounts;
        assert!(all.includes("builder") && !all.includes("ci-bot"));
        spec.service_accounts.scope = ServiceAccountScope::Default;
        let default_only = desired("p", &spec, "n").service_accounts;
        assert!(default_only.includes("default") && !default_only.includes("builder"));
    }

    #[test]
    fn policy_fingerprints_match_what_the_server_treats_as_the_same_spec() {
        let d = desired("p", &HardeningProfileSpec::default(), "team-a");
        let deny = d.network_policies[DEFAULT_DENY_POLICY].spec.clone().expect("spec");
        let mut empty_lists = deny.clone();
        empty_lists.ingress = Some(vec![]);
        empty_lists.egress = Some(vec![]);
        assert_eq!(policy_fingerprint(Some(&deny)), policy_fingerprint(Some(&empty_lists)));
        let mut opened = deny.clone();
        opened.ingress = Some(vec![Default::default()]);
        assert_ne!(policy_fingerprint(Some(&deny)), policy_fingerprint(Some(&opened)));
        let dns = d.network_policies[ALLOW_DNS_POLICY].spec.clone();
        assert_ne!(policy_fingerprint(Some(&deny)), policy_fingerprint(dns.as_ref()));
        assert!(same_policy(Some(&deny), Some(&empty_lists)) && !same_policy(Some(&deny), None));
    }
}
