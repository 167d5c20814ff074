//! What the reconcile core sees of the cluster: compact, owned views of the objects nsguard reads,
//! built from the watch caches (or, for `nsguard plan`, from files). Keeping views small keeps
//! memory flat at 10,000 namespaces and keeps the core free of client types.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    core::v1::{Namespace, NamespaceCondition, ServiceAccount},
    networking::v1::NetworkPolicy,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use kube::api::ObjectMeta;

pub use crate::core::ids::Uid;
pub use crate::core::report_view::{ReportSeen, ReportView};

use kube::core::{Expression, Selector};

use crate::core::crd::{HardeningProfileSpec, LabelSelector, SelectorOperator};
pub use crate::core::globs::NamespaceGlobs;
use crate::core::ids;
use crate::core::validate::{self, FieldError};

/// nsguard's field manager for server-side apply.
pub const FIELD_MANAGER: &str = "nsguard";
/// Annotation naming the profile that governs a namespace.
pub const PROFILE_ANNOTATION: &str = "nsguard.io/profile";
/// Annotation recording that profile's release policy, so a namespace can be released as its
/// profile asked even after the profile is deleted.
pub const RELEASE_POLICY_ANNOTATION: &str = "nsguard.io/release-policy";
/// Finalizer nsguard puts on every HardeningProfile it sees, so that deleting a profile releases
/// its namespaces (per `releasePolicy`) before the object goes. Releasing happens only on such an
/// explicit act, never because a profile merely vanished from nsguard's view.
pub const PROFILE_FINALIZER: &str = "nsguard.io/release";
/// Label on every NetworkPolicy nsguard creates; nsguard watches only policies that carry it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY_VALUE: &str = "nsguard";

/// The tamper guard's markers (`config/guard`): nsguard writes them in Enforce mode only, as
/// bookkeeping (a missing or stale marker is rewritten without being reported as drift). The
/// Namespace label says the namespace is guarded; the annotations carry what the Pod rule needs.
pub const GUARD_LABEL: &str = "nsguard.io/guarded";
pub const POD_TOKEN_GUARD_ANNOTATION: &str = "nsguard.io/pod-token-guard";
pub const EXEMPT_ANNOTATION: &str = "nsguard.io/exempt-service-accounts";
/// Label on every ServiceAccount whose token setting nsguard manages (the guard keeps it off).
pub const TOKEN_GUARD_LABEL: &str = "nsguard.io/token-guard";

/// A namespace label or annotation that is one of the tamper guard's markers.
pub fn is_marker(key: &str) -> bool {
    marker(key).is_some()
}

/// The tamper guard's marker with this key, as the constant (a view keeps these, not copies).
pub fn marker(key: &str) -> Option<&'static str> {
    [GUARD_LABEL, POD_TOKEN_GUARD_ANNOTATION, EXEMPT_ANNOTATION].into_iter().find(|m| *m == key)
}

/// The condition type nsguard keeps on every governed namespace's status.
pub const HARDENED_CONDITION: &str = "nsguard.io/Hardened";

/// A Namespace as the core needs it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NamespaceView {
    pub name: String,
    pub uid: Option<Uid>,
    pub labels: crate::core::labels::Pairs,
    /// nsguard's own annotations (`nsguard.io/…`; the others are not kept).
    pub annotations: crate::core::labels::Pairs,
    /// The namespace is being deleted: nsguard leaves it alone.
    pub terminating: bool,
    /// For each Pod Security label, the field managers other than nsguard that own it (to name a
    /// rival writer).
    pub label_managers: BTreeMap<String, Vec<String>>,
    /// nsguard's `nsguard.io/Hardened` condition on the namespace's status, if any.
    pub hardened: Option<NamespaceCondition>,
    /// The tamper-guard markers nsguard's field manager holds (it may take down only these).
    pub owned_markers: Vec<&'static str>,
}

impl NamespaceView {
    /// A namespace with its status: nsguard's condition included.
    pub fn from_namespace(ns: &Namespace) -> Self {
        let hardened = ns
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|conditions| conditions.iter().find(|c| c.type_ == HARDENED_CONDITION).cloned());
        Self { hardened, ..Self::from_meta(&ns.metadata) }
    }

    /// A namespace as nsguard's watch caches it: nsguard's condition only if nsguard's field
    /// manager applied it (one another manager wrote is not nsguard's to show or remove).
    pub fn from_watched(ns: &Namespace) -> Self {
        let mut view = Self::from_namespace(ns);
        if !owns_condition(&ns.metadata) {
            view.hardened = None;
        }
        view
    }

    /// A namespace from its metadata alone (no condition).
    pub fn from_meta(meta: &ObjectMeta) -> Self {
        Self {
            name: meta.name.clone().unwrap_or_default(),
            uid: ids::uid(meta),
            labels: crate::core::labels::labels(meta),
            annotations: crate::core::labels::nsguard_annotations(meta),
            terminating: meta.deletion_timestamp.is_some(),
            label_managers: label_managers(meta),
            hardened: None,
            owned_markers: nsguard_markers(meta),
        }
    }

    /// The profile named in the namespace's [`PROFILE_ANNOTATION`], if any.
    pub fn governing_annotation(&self) -> Option<&str> {
        self.annotations.get(PROFILE_ANNOTATION)
    }
}

/// The Pod Security labels each field manager other than nsguard owns, by label.
fn label_managers(meta: &ObjectMeta) -> BTreeMap<String, Vec<String>> {
    let mut owners: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for entry in meta.managed_fields.iter().flatten() {
        let Some(manager) = entry.manager.as_deref().filter(|m| *m != FIELD_MANAGER) else { continue };
        for label in psa_labels_owned(entry) {
            owners.entry(label.to_owned()).or_default().push(manager.to_owned());
        }
    }
    owners
}

/// The tamper-guard markers (label or annotation keys) a managedFields entry owns.
fn markers_owned(entry: &ManagedFieldsEntry) -> Vec<&'static str> {
    let Some(metadata) = entry.fields_v1.as_ref().and_then(|f| f.0.get("f:metadata")) else { return vec![] };
    ["f:labels", "f:annotations"]
        .into_iter()
        .filter_map(|path| metadata.get(path)?.as_object())
        .flat_map(|keys| keys.keys())
        .filter_map(|key| marker(key.strip_prefix("f:")?))
        .collect()
}

/// The tamper-guard markers nsguard's field manager holds on a namespace.
fn nsguard_markers(meta: &ObjectMeta) -> Vec<&'static str> {
    let ours = meta.managed_fields.iter().flatten().filter(|e| e.manager.as_deref() == Some(FIELD_MANAGER));
    ours.filter(|e| e.subresource.as_deref().is_none_or(str::is_empty)).flat_map(markers_owned).collect()
}

/// The Pod Security labels a managedFields entry owns.
fn psa_labels_owned(entry: &ManagedFieldsEntry) -> impl Iterator<Item = &str> {
    entry
        .fields_v1
        .as_ref()
        .and_then(|f| f.0.get("f:metadata")?.get("f:labels")?.as_object())
        .into_iter()
        .flat_map(|labels| labels.keys())
        .filter_map(|key| key.strip_prefix("f:").filter(|k| k.starts_with(PSA_PREFIX)))
}

/// nsguard's field manager owns the `nsguard.io/Hardened` condition on the namespace's status (it
/// applied it). A condition of that type someone else wrote is not nsguard's to show or remove.
pub fn owns_condition(meta: &ObjectMeta) -> bool {
    let key = format!("k:{{\"type\":\"{HARDENED_CONDITION}\"}}");
    meta.managed_fields.iter().flatten().any(|entry| {
        entry.manager.as_deref() == Some(FIELD_MANAGER)
            && entry.subresource.as_deref() == Some("status")
            && entry.fields_v1.as_ref().and_then(|f| f.0.get("f:status")?.get("f:conditions")?.get(&key)).is_some()
    })
}

/// The prefix of the Pod Security Admission labels.
pub const PSA_PREFIX: &str = "pod-security.kubernetes.io/";

/// A ServiceAccount as the core needs it. (Its namespace is where it is kept: the caches group
/// views by namespace, and a copy of the name in each view cost ~56 bytes.)
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceAccountView {
    pub name: String,
    pub uid: Option<Uid>,
    /// The resourceVersion as a number ([`ids::revision`]).
    pub resource_version: Option<u64>,
    pub automount_token: Option<bool>,
    /// nsguard's field manager owns `automountServiceAccountToken` (it applied the value).
    pub automount_owned: bool,
    /// The ServiceAccount carries the tamper guard's [`TOKEN_GUARD_LABEL`].
    pub guarded: bool,
}

impl ServiceAccountView {
    pub fn from_object(sa: &ServiceAccount) -> Self {
        let automount_owned = sa.metadata.managed_fields.iter().flatten().any(|entry| {
            entry.manager.as_deref() == Some(FIELD_MANAGER)
                && entry.operation.as_deref() == Some("Apply")
                && entry.fields_v1.as_ref().and_then(|f| f.0.get("f:automountServiceAccountToken")).is_some()
        });
        Self {
            name: sa.metadata.name.clone().unwrap_or_default(),
            uid: ids::uid(&sa.metadata),
            resource_version: ids::revision(sa.metadata.resource_version.as_deref()),
            automount_token: sa.automount_service_account_token,
            automount_owned,
            guarded: sa.metadata.labels.as_ref().and_then(|l| l.get(TOKEN_GUARD_LABEL)).is_some_and(|v| v == "true"),
        }
    }
}

/// A NetworkPolicy as the core needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkPolicyView {
    pub name: String,
    pub uid: Option<Uid>,
    pub resource_version: Option<u64>,
    /// It carries nsguard's [`MANAGED_BY_LABEL`], the one label nsguard sets on its policies (the
    /// others are not nsguard's to compare; a copy of them per policy cost ~190 bytes).
    pub managed: bool,
    /// [`policy_fingerprint`] of the spec.
    pub spec_fingerprint: u64,
}

impl NetworkPolicyView {
    pub fn from_object(np: &NetworkPolicy) -> Self {
        Self {
            name: np.metadata.name.clone().unwrap_or_default(),
            uid: ids::uid(&np.metadata),
            resource_version: ids::revision(np.metadata.resource_version.as_deref()),
            managed: np
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(MANAGED_BY_LABEL))
                .is_some_and(|v| v == MANAGED_BY_VALUE),
            spec_fingerprint: policy_fingerprint(np.spec.as_ref()),
        }
    }

    /// nsguard created this policy.
    pub fn managed_by_nsguard(&self) -> bool {
        self.managed
    }

    /// The value of one of the labels kept: [`MANAGED_BY_LABEL`]'s, if it is nsguard's.
    pub fn label(&self, key: &str) -> Option<&str> {
        (self.managed && key == MANAGED_BY_LABEL).then_some(MANAGED_BY_VALUE)
    }
}

/// A fingerprint of a NetworkPolicy spec, equal for specs the API server treats as the same (an
/// empty rule list is none): what the cache keeps of a policy instead of the spec, 8 bytes where a
/// DNS policy's spec takes a kilobyte in a dozen allocations.
pub fn policy_fingerprint(spec: Option<&k8s_openapi::api::networking::v1::NetworkPolicySpec>) -> u64 {
    use std::hash::Hasher;
    let mut spec = spec.cloned().unwrap_or_default();
    if spec.ingress.as_ref().is_some_and(Vec::is_empty) {
        spec.ingress = None;
    }
    if spec.egress.as_ref().is_some_and(Vec::is_empty) {
        spec.egress = None;
    }
    // Serialized straight into the hasher (no JSON tree, no string): the fields of the typed spec in
    // their fixed order, its maps sorted, hashed with fixed keys. The same spec gives the same
    // fingerprint every time in one process, which is all a comparison with the cache needs.
    struct Hashing(std::hash::DefaultHasher);
    impl std::io::Write for Hashing {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.write(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut hashing = Hashing(std::hash::DefaultHasher::new());
    // A typed spec (string map keys only) always serializes, and the writer never fails.
    serde_json::to_writer(&mut hashing, &spec).ok();
    hashing.0.finish()
}

/// A HardeningProfile, parsed once when it changes. A profile whose spec does not parse or
/// validate is kept, with its errors, so that it can be reported and so that the namespaces it
/// governs keep their last good state.
#[derive(Clone, Debug)]
pub struct Profile {
    pub name: String,
    pub uid: Option<String>,
    pub generation: Option<i64>,
    /// The profile is being deleted (it has a deletionTimestamp): it governs nothing, and the
    /// namespaces it governed are released before nsguard lets it go.
    pub deleting: bool,
    /// The profile's finalizers (nsguard's is [`PROFILE_FINALIZER`]).
    pub finalizers: Vec<String>,
    pub spec: Result<ValidProfile, Vec<FieldError>>,
}

/// A valid profile spec with its selectors compiled.
#[derive(Clone, Debug)]
pub struct ValidProfile {
    pub spec: HardeningProfileSpec,
    /// The namespace selector (absent or empty selects every namespace).
    pub selector: Selector,
    /// The label keys the selector reads, sorted: only these are handed to it.
    pub selector_keys: Vec<String>,
    pub excluded: NamespaceGlobs,
    /// `spec.exceptions`, compiled.
    pub exceptions: Vec<crate::core::exceptions::Exception>,
}

impl Profile {
    /// Builds a profile from its name, metadata and raw `spec` JSON.
    pub fn parse(name: &str, uid: Option<String>, generation: Option<i64>, spec: &serde_json::Value) -> Self {
        let spec = validate::parse_spec(spec).and_then(ValidProfile::new);
        Self { name: name.to_owned(), uid, generation, deleting: false, finalizers: vec![], spec }
    }

    /// Builds a profile from a HardeningProfile as the API returns it (a missing spec is `{}`).
    pub fn from_object(obj: &kube::api::DynamicObject) -> Self {
        let spec = obj.data.get("spec").cloned().unwrap_or_else(|| serde_json::json!({}));
        let name = obj.metadata.name.clone().unwrap_or_default();
        let mut profile = Self::parse(&name, obj.metadata.uid.clone(), obj.metadata.generation, &spec);
        profile.deleting = obj.metadata.deletion_timestamp.is_some();
        // When spec.exceptions was last written: the newest managedFields entry that owns it.
        let written = obj
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .filter(|e| e.fields_v1.as_ref().and_then(|f| f.0.get("f:spec")?.get("f:exceptions")).is_some())
            .filter_map(|e| e.time.as_ref().map(|t| t.0))
            .max();
        if let Ok(valid) = &mut profile.spec {
            valid.exceptions.iter_mut().for_each(|e| e.written = written);
        }
        profile.finalizers = obj.metadata.finalizers.clone().unwrap_or_default();
        profile
    }

    /// Whether the profile carries nsguard's [`PROFILE_FINALIZER`].
    pub fn finalized(&self) -> bool {
        self.finalizers.iter().any(|f| f == PROFILE_FINALIZER)
    }

    /// Builds a profile from an already typed spec (tests and offline tools).
    pub fn from_spec(name: &str, spec: HardeningProfileSpec) -> Self {
        let errors = validate::validate_spec(&spec);
        let spec = if errors.is_empty() { ValidProfile::new(spec) } else { Err(errors) };
        Self { name: name.to_owned(), uid: None, generation: None, deleting: false, finalizers: vec![], spec }
    }
}

impl ValidProfile {
    fn new(spec: HardeningProfileSpec) -> Result<Self, Vec<FieldError>> {
        let selector = selector(spec.namespace_selector.as_ref());
        let mut selector_keys: Vec<String> = spec
            .namespace_selector
            .iter()
            .flat_map(|s| s.match_labels.keys().cloned().chain(s.match_expressions.iter().map(|req| req.key.clone())))
            .collect();
        selector_keys.sort();
        selector_keys.dedup();
        let excluded = NamespaceGlobs::new(&spec.exclude_namespaces)
            .map_err(|e| vec![FieldError { field: "spec.excludeNamespaces".into(), message: e }])?;
        let exceptions = spec
            .exceptions
            .iter()
            .enumerate()
            .map(|(i, e)| crate::core::exceptions::Exception::compile(i, e))
            .collect::<Result<_, _>>()
            .map_err(|e| vec![e])?;
        Ok(Self { spec, selector, selector_keys, excluded, exceptions })
    }
}

/// kube's [`Selector`] for a profile's namespace selector: one implementation of label-selector
/// semantics, shared with the rest of the ecosystem.
fn selector(selector: Option<&LabelSelector>) -> Selector {
    let Some(selector) = selector else { return Selector::default() };
    let mut compiled: Selector = selector.match_labels.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect();
    compiled.extend(selector.match_expressions.iter().map(|req| {
        let key = req.key.clone();
        let values = req.values.iter().map(|v| v.0.clone()).collect();
        match req.operator {
            SelectorOperator::In => Expression::In(key, values),
            SelectorOperator::NotIn => Expression::NotIn(key, values),
            SelectorOperator::Exists => Expression::Exists(key),
            SelectorOperator::DoesNotExist => Expression::DoesNotExist(key),
        }
    }));
    compiled
}
