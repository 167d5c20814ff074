//! The `HardeningProfile` custom resource (`hardeningprofiles.nsguard.io/v1alpha1`).
//!
//! The CRD in `crds/` is generated from these types. Everything the API server can check is in the
//! schema (types, enums, patterns, bounds) or in CEL rules, so bad YAML is rejected at
//! `kubectl apply` time with a message that names the field. The same patterns are checked again by
//! [`crate::core::validate`], which also serves `nsguard validate`.

// The repeated `printcolumn(type_ = ...)` arguments are distinct columns, not duplicates.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::core::pod_security::{
    ExceptionPodSecurity, ExceptionsStatus, NAMESPACE_GLOB, PSA_VERSION, PodSecurity, PodSecurityException,
    PodSecurityLevel, PodSecurityMode, Rollout,
};

/// API group of nsguard's resources.
pub const GROUP: &str = "nsguard.io";

/// RFC 1123 label: a namespace name.
pub const DNS1123_LABEL: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// RFC 1123 subdomain: a ServiceAccount name.
pub const DNS1123_SUBDOMAIN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A label value (may be empty).
pub const LABEL_VALUE: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";
/// A label key: an optional DNS subdomain prefix and `/`, then a name of at most 63 characters.
pub const LABEL_KEY: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";

/// HardeningProfile declares the security baseline of the namespaces it selects: Pod Security
/// Admission labels, default-deny NetworkPolicies with DNS egress allowed, and ServiceAccounts
/// without automounted API tokens. nsguard keeps every selected namespace at that baseline and
/// heals drift as soon as it happens (or only reports it, in Audit mode).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "nsguard.io",
    version = "v1alpha1",
    kind = "HardeningProfile",
    plural = "hardeningprofiles",
    shortname = "hp",
    category = "nsguard",
    status = "HardeningProfileStatus",
    doc = "HardeningProfile declares the security baseline of the namespaces it selects.",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Priority", type_ = "integer", json_path = ".spec.priority", priority = "1"),
    printcolumn(name = "Matched", type_ = "integer", json_path = ".status.matchedNamespaces"),
    printcolumn(name = "Compliant", type_ = "integer", json_path = ".status.compliantNamespaces"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HardeningProfileSpec {
    /// Selects the namespaces this profile governs, by their labels. Omitted or empty (`{}`)
    /// selects every namespace. The system namespaces (kube-system, kube-public, kube-node-lease)
    /// and nsguard's own namespace are never governed unless nsguard is started with
    /// `--include-system-namespaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// Namespace names this profile never governs, as globs: `*` matches any run of characters,
    /// `?` any one character (for example `legacy-*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 63), regex(pattern = NAMESPACE_GLOB)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub exclude_namespaces: Vec<String>,

    /// Where several profiles select one namespace, the highest priority governs it; a tie goes to
    /// the profile whose name sorts first. The others report the conflict in their `Conflicting`
    /// condition.
    #[serde(default)]
    #[schemars(range(min = -1_000_000, max = 1_000_000))]
    pub priority: i32,

    /// `Enforce` (the default) applies the baseline and corrects drift; `Audit` only reports drift
    /// in status and Events and never writes to the namespace.
    #[serde(default)]
    pub mode: Mode,

    /// What happens to what nsguard applied when a namespace stops being selected or the profile is
    /// deleted: `Release` (the default) removes exactly what nsguard applied; `Retain` leaves it.
    #[serde(default)]
    pub release_policy: ReleasePolicy,

    /// Pod Security Admission labels (`pod-security.kubernetes.io/<mode>` and `<mode>-version`).
    /// Each mode defaults to `restricted` at version `latest`.
    #[serde(default)]
    pub pod_security: PodSecurity,

    /// NetworkPolicies nsguard maintains in each namespace. By default, all ingress and egress is
    /// denied except DNS.
    #[serde(default)]
    pub network_policy: NetworkPolicySettings,

    /// ServiceAccount settings. By default, token automount is turned off for every ServiceAccount.
    #[serde(default)]
    pub service_accounts: ServiceAccountSettings,

    /// Time-boxed exceptions that lower the enforced Pod Security level of some namespaces until
    /// they expire (audit and warn stay at the profile's levels, so the gap stays visible). At
    /// expiry the profile's level is enforced again, through the rollout gate. An exception whose
    /// `expires` lies more than 90 days ahead is refused: not applied, and named in the status.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub exceptions: Vec<PodSecurityException>,
}

/// Whether nsguard corrects drift or only reports it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Apply the baseline and correct drift.
    #[default]
    Enforce,
    /// Report drift in status and Events; never write.
    Audit,
}

/// What happens to what nsguard applied when a namespace is no longer governed by the profile.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ReleasePolicy {
    /// Remove exactly what nsguard applied: its labels and annotations, its NetworkPolicies and
    /// its ServiceAccount field. Values other tools set are kept.
    #[default]
    Release,
    /// Leave everything in place.
    Retain,
}

/// A label selector: the same shape as Kubernetes' `metav1.LabelSelector`, with bounds so that its
/// validation rules stay cheap. All requirements must hold; an empty selector selects everything.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Labels that must all be present with exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = kube::core::Rule::new(format!("self.all(k, size(k) <= 317 && k.matches(r'{LABEL_KEY}'))"))
        .message("keys must be valid label keys: an optional DNS subdomain prefix and '/', then at most 63 characters of alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"))]
    pub match_labels: BTreeMap<String, LabelValue>,

    /// Label requirements that must all hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// A label value: at most 63 characters, alphanumerics, `-`, `_` or `.`, starting and ending with
/// an alphanumeric; may be empty.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
#[serde(transparent)]
pub struct LabelValue(#[schemars(length(max = 63), regex(pattern = LABEL_VALUE))] pub String);

/// One label requirement: a key, an operator and, for `In` and `NotIn`, a set of values.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = kube::core::Rule::new("(self.operator in ['In', 'NotIn']) == (has(self.values) && size(self.values) > 0)")
    .message("values must be non-empty for operators In and NotIn, and absent for Exists and DoesNotExist")
    .field_path(".values"))]
pub struct LabelSelectorRequirement {
    /// The label key the requirement applies to.
    #[schemars(length(min = 1, max = 317), regex(pattern = LABEL_KEY))]
    pub key: String,
    /// How the key's value is compared to `values`.
    pub operator: SelectorOperator,
    /// The values for `In` and `NotIn`; must be empty for `Exists` and `DoesNotExist`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub values: Vec<LabelValue>,
}

/// A label selector operator.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelectorOperator {
    /// The label's value is one of `values`.
    In,
    /// The label is absent or its value is none of `values`.
    NotIn,
    /// The label is present, whatever its value.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// The NetworkPolicies nsguard maintains.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicySettings {
    /// A policy `nsguard-default-deny` that selects every pod and allows no traffic in the denied
    /// directions.
    #[serde(default)]
    pub default_deny: DefaultDeny,
    /// A policy `nsguard-allow-dns` that allows DNS egress (UDP and TCP port 53) to the cluster DNS
    /// pods only.
    #[serde(default, rename = "allowDNS")]
    pub allow_dns: AllowDns,
}

/// Which directions the default-deny policy denies.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DefaultDeny {
    /// Deny all ingress traffic to every pod (default true).
    #[serde(default = "yes")]
    pub ingress: bool,
    /// Deny all egress traffic from every pod (default true).
    #[serde(default = "yes")]
    pub egress: bool,
}

fn yes() -> bool {
    true
}

impl Default for DefaultDeny {
    fn default() -> Self {
        Self { ingress: true, egress: true }
    }
}

/// Where the cluster DNS pods run.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = kube::core::Rule::new("!self.enabled || (has(self.podSelector.matchLabels) && size(self.podSelector.matchLabels) > 0) || (has(self.podSelector.matchExpressions) && size(self.podSelector.matchExpressions) > 0)")
    .message("must select the DNS pods: an empty podSelector would allow egress to every pod in the DNS namespace")
    .field_path(".podSelector"))]
pub struct AllowDns {
    /// Maintain the DNS egress policy (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The namespace the DNS pods run in (default `kube-system`). It is selected by its
    /// `kubernetes.io/metadata.name` label, which every namespace has.
    #[serde(default = "kube_system")]
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS1123_LABEL))]
    pub namespace: String,
    /// Selects the DNS pods in that namespace (default `k8s-app: kube-dns`, which both CoreDNS and
    /// kube-dns deployments carry).
    #[serde(default = "kube_dns_selector")]
    pub pod_selector: LabelSelector,
}

fn kube_system() -> String {
    "kube-system".to_owned()
}

fn kube_dns_selector() -> LabelSelector {
    LabelSelector {
        match_labels: BTreeMap::from([("k8s-app".to_owned(), LabelValue("kube-dns".to_owned()))]),
        match_expressions: Vec::new(),
    }
}

impl Default for AllowDns {
    fn default() -> Self {
        Self { enabled: true, namespace: kube_system(), pod_selector: kube_dns_selector() }
    }
}

/// ServiceAccount settings.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceAccountSettings {
    /// Set `automountServiceAccountToken: false` on the ServiceAccounts in scope (default true).
    #[serde(default = "yes")]
    pub disable_token_automount: bool,
    /// Whether Pods may opt back in with `automountServiceAccountToken: true` for a ServiceAccount
    /// in scope that is not exempt: `Deny` (the default; enforced by the tamper guard,
    /// `config/guard`, CIS 5.1.6) or `Allow`.
    #[serde(default)]
    pub pod_override: PodOverride,
    /// Which ServiceAccounts are in scope: `All` (the default) or `Default` (only the ServiceAccount
    /// named `default`).
    #[serde(default)]
    pub scope: ServiceAccountScope,
    /// Names of ServiceAccounts nsguard leaves alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 253), regex(pattern = DNS1123_SUBDOMAIN)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub exempt: Vec<String>,
}

impl Default for ServiceAccountSettings {
    fn default() -> Self {
        Self {
            disable_token_automount: true,
            pod_override: PodOverride::Deny,
            scope: ServiceAccountScope::All,
            exempt: Vec::new(),
        }
    }
}

/// Whether Pods may mount a token that nsguard turned off on their ServiceAccount.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PodOverride {
    #[default]
    Deny,
    Allow,
}

/// Which ServiceAccounts nsguard manages.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServiceAccountScope {
    /// Every ServiceAccount in the namespace except the exempt ones.
    #[default]
    All,
    /// Only the ServiceAccount named `default`.
    Default,
}

/// The observed state of a HardeningProfile: an aggregate of its namespaces.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HardeningProfileStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: the spec is valid and every governed namespace has been reconciled.
    /// `Drifted`: some governed namespace differs from the baseline right now.
    /// `Conflicting`: a higher-priority profile governs some namespace this profile selects.
    /// `Reconciling` (present only while True): namespaces are being brought to the baseline, or
    /// their writes are retried. `Stalled` (present only while True): the spec is invalid. Both are
    /// what Flux's kstatus reads, with `observedGeneration`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// How many namespaces this profile governs.
    #[serde(default)]
    pub matched_namespaces: i32,
    /// How many of them match the baseline.
    #[serde(default)]
    pub compliant_namespaces: i32,
    /// Up to 20 governed namespaces that do not match the baseline, with the reason; see
    /// `nsguard status` for all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub non_compliant: Vec<NonCompliantNamespace>,
    /// The profile's Pod Security exceptions: how many are in force, the next expiry, and those
    /// refused or expiring within 7 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exceptions: Option<ExceptionsStatus>,
}

/// A namespace that does not match its profile's baseline.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NonCompliantNamespace {
    /// The namespace.
    pub namespace: String,
    /// What differs, or why it could not be reconciled.
    pub reason: String,
}
