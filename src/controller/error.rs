//! What can go wrong while reconciling, named after the failing operation.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("applying labels and annotations to namespace {namespace}: {source}")]
    ApplyNamespace {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("applying nsguard's condition to the status of namespace {namespace}: {source}")]
    ApplyCondition {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("applying the Report nsguard in namespace {namespace}: {source}")]
    ApplyReport {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting the Report nsguard in namespace {namespace}: {source}")]
    DeleteReport {
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
    #[error("dry-running a raised Pod Security enforce level on namespace {namespace}: {source}")]
    DryRun {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("NetworkPolicy {namespace}/{name} exists and was not created by nsguard")]
    Taken { namespace: String, name: String },
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
