//! The Pod Security part of the `HardeningProfile` spec: the three PSA modes, how a raised enforce
//! level is rolled out, and time-boxed exceptions.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Pod Security Standards version: `latest` or `v1.N`.
pub const PSA_VERSION: &str = r"^(latest|v1\.(0|[1-9][0-9]{0,3}))$";

/// A namespace-name glob: the characters of a namespace name plus `*` and `?`.
pub const NAMESPACE_GLOB: &str = r"^[-a-z0-9*?]+$";

/// Pod Security Admission settings for the three PSA modes.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSecurity {
    /// Pods that violate this level are rejected.
    #[serde(default)]
    pub enforce: PodSecurityMode,
    /// Violations are recorded in the API server's audit log.
    #[serde(default)]
    pub audit: PodSecurityMode,
    /// Violations are returned to the user as warnings.
    #[serde(default)]
    pub warn: PodSecurityMode,
    /// How a raised enforce level reaches a namespace. `Gated` (the default): nsguard first asks
    /// the API server (a dry-run) whether existing pods would violate it; if some would, enforce is
    /// held at the strictest level they all pass (audit and warn still go to the target), the
    /// namespace is reported `EnforceHeld` with the violating pods, and nsguard promotes it as soon
    /// as a re-check is clean. `Immediate`: the target is enforced at once.
    #[serde(default)]
    pub rollout: Rollout,
}

/// A Pod Security Standards level and version.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSecurityMode {
    /// The Pod Security Standards level: `privileged`, `baseline` or `restricted` (the default).
    #[serde(default)]
    pub level: PodSecurityLevel,
    /// The version of the standard: `latest` (the default) or `v1.N`, e.g. `v1.36`.
    #[serde(default = "latest")]
    #[schemars(length(max = 16), regex(pattern = PSA_VERSION))]
    pub version: String,
}

fn latest() -> String {
    "latest".to_owned()
}

impl Default for PodSecurityMode {
    fn default() -> Self {
        Self { level: PodSecurityLevel::Restricted, version: latest() }
    }
}

/// A Pod Security Standards level.
/// Ordered from the least to the most strict.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum PodSecurityLevel {
    /// Unrestricted.
    Privileged,
    /// Prevents known privilege escalations.
    Baseline,
    /// Current pod hardening best practice.
    #[default]
    Restricted,
}

impl PodSecurityLevel {
    /// The label value Pod Security Admission reads.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Privileged => "privileged",
            Self::Baseline => "baseline",
            Self::Restricted => "restricted",
        }
    }
}

impl PodSecurityLevel {
    /// Parses a `pod-security.kubernetes.io/enforce` label value.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "privileged" => Some(Self::Privileged),
            "baseline" => Some(Self::Baseline),
            "restricted" => Some(Self::Restricted),
            _ => None,
        }
    }
}

/// How a raised enforce level reaches a namespace.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Rollout {
    /// Dry-run first; hold enforce at the strictest level the existing pods pass.
    #[default]
    Gated,
    /// Enforce the target at once.
    Immediate,
}

/// An exception that lowers the enforced Pod Security level of some namespaces until it expires.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSecurityException {
    /// The namespaces it applies to, as globs (`*` any run of characters, `?` any one).
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 63), regex(pattern = NAMESPACE_GLOB)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub namespaces: Vec<String>,
    /// What is enforced instead while the exception lasts: a level no stricter than the
    /// profile's.
    pub pod_security: ExceptionPodSecurity,
    /// When the exception ends: an RFC 3339 date-time (e.g. `2026-12-31T00:00:00Z`), at most 90
    /// days ahead.
    #[schemars(length(max = 64), extend("format" = "date-time"))]
    pub expires: String,
    /// Why the exception exists (shown in status, events and `nsguard plan`), e.g. a ticket.
    #[schemars(length(min = 1, max = 512))]
    pub reason: String,
}

/// The enforce setting an exception puts in place.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExceptionPodSecurity {
    /// The enforced level and version while the exception lasts.
    pub enforce: PodSecurityMode,
}

/// Where a profile's exceptions stand (in its status).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ExceptionsStatus {
    /// Exceptions in force now.
    pub active: i32,
    /// When the next one expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_expiry: Option<String>,
    /// Exceptions nsguard refuses (not applied), and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
    /// Exceptions in force that expire within 7 days.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expiring_soon: Vec<String>,
}
