//! nsguard keeps every selected Kubernetes namespace hardened to a declared baseline.
//!
//! The reconcile core is pure ([`selection`], [`desired`], [`plan`], [`status`]): observed state and
//! a profile in, drift and writes out. Reading the cluster happens before it and writing after it,
//! in [`controller`].

pub mod cli;
pub mod controller;
pub mod crd;
pub mod desired;
pub mod events;
pub mod guard;
pub mod http;
pub mod index;
pub mod leader;
pub mod metrics;
pub mod model;
pub mod offline;
pub mod plan;
pub mod selection;
pub mod status;
pub mod telemetry;
pub mod validate;

/// What can go wrong while reconciling, named after the failing operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("applying labels and annotations to namespace {namespace}: {source}")]
    ApplyNamespace {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("applying NetworkPolicy {namespace}/{name}: {source}")]
    ApplyNetworkPolicy {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting NetworkPolicy {namespace}/{name}: {source}")]
    DeleteNetworkPolicy {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("applying automountServiceAccountToken on ServiceAccount {namespace}/{name}: {source}")]
    ApplyServiceAccount {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("not written: this replica does not hold the leader lease")]
    NotLeader,
    #[error("an API write did not answer within its deadline")]
    Timeout,
    #[error("writing the status of HardeningProfile {name}: {source}")]
    PatchStatus {
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// Errors that end a reconcile quietly: this replica may not write (it does not lead).
    pub fn not_leading(&self) -> bool {
        matches!(self, Self::NotLeader)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
