//! Pure: one difference between a namespace and its baseline, as nsguard reports it.

use std::fmt;

use serde::Serialize;

use std::sync::Arc;

use crate::core::model::{NamespaceView, ServiceAccountView};

/// One difference between a namespace and its baseline.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Drift {
    /// A namespace label nsguard sets is missing or has another value.
    #[serde(rename_all = "camelCase")]
    Label { key: String, expected: String, actual: Option<String> },
    /// nsguard's bookkeeping annotation is missing or has another value.
    #[serde(rename_all = "camelCase")]
    Annotation { key: String, expected: String, actual: Option<String> },
    /// A NetworkPolicy nsguard maintains does not exist.
    #[serde(rename_all = "camelCase")]
    NetworkPolicyMissing { name: String },
    /// A NetworkPolicy nsguard maintains was changed.
    #[serde(rename_all = "camelCase")]
    NetworkPolicyChanged { name: String },
    /// A NetworkPolicy nsguard created is no longer wanted by the profile.
    #[serde(rename_all = "camelCase")]
    NetworkPolicyUnwanted { name: String },
    /// A ServiceAccount in scope does not have `automountServiceAccountToken: false`.
    #[serde(rename_all = "camelCase")]
    ServiceAccountAutomount { name: String, actual: Option<bool> },
}

impl Drift {
    /// Whether this is a correction of something that was changed, rather than the first hardening
    /// of an object nsguard never touched (a ServiceAccount created after the namespace was
    /// hardened has its token setting unset and not owned by nsguard), or an update nsguard makes
    /// to its own value because the profile changed (a Pod Security label that no other field
    /// manager owns holds what nsguard set before).
    pub fn is_correction(&self, ns: &NamespaceView, service_accounts: &[Arc<ServiceAccountView>]) -> bool {
        match self {
            Self::ServiceAccountAutomount { name, actual: None } => {
                service_accounts.iter().any(|sa| &sa.name == name && sa.automount_owned)
            }
            Self::Label { key, actual: Some(_), .. } => ns.label_managers.get(key).is_some_and(|m| !m.is_empty()),
            _ => true,
        }
    }

    /// A short, stable name of the kind of drift, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Label { .. } => "label",
            Self::Annotation { .. } => "annotation",
            Self::NetworkPolicyMissing { .. } => "network_policy_missing",
            Self::NetworkPolicyChanged { .. } => "network_policy_changed",
            Self::NetworkPolicyUnwanted { .. } => "network_policy_unwanted",
            Self::ServiceAccountAutomount { .. } => "service_account_automount",
        }
    }
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Label { key, expected, actual } | Self::Annotation { key, expected, actual } => {
                let what = if matches!(self, Self::Label { .. }) { "label" } else { "annotation" };
                match actual {
                    Some(actual) => write!(f, "{what} {key} was {actual:?}, want {expected:?}"),
                    None => write!(f, "{what} {key} was missing, want {expected:?}"),
                }
            }
            Self::NetworkPolicyMissing { name } => write!(f, "NetworkPolicy {name} was missing"),
            Self::NetworkPolicyChanged { name } => write!(f, "NetworkPolicy {name} was edited"),
            Self::NetworkPolicyUnwanted { name } => {
                write!(f, "NetworkPolicy {name} is no longer wanted")
            }
            Self::ServiceAccountAutomount { name, actual } => match actual {
                Some(v) => write!(f, "ServiceAccount {name} had automountServiceAccountToken: {v}, want false"),
                None => write!(f, "ServiceAccount {name} had automountServiceAccountToken unset, want false"),
            },
        }
    }
}
