//! Pure: what nsguard sees of its OpenReports Report in a namespace (kept apart from the other
//! views so the report's content and the plan can both name it without importing each other).

use kube::api::ObjectMeta;

use crate::core::ids::Uid;

/// What nsguard sees of its Report in a namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ReportSeen {
    /// Reports are not available (the OpenReports CRD is not installed, or its watch has not
    /// listed yet): nothing is written or deleted.
    #[default]
    Unavailable,
    Absent,
    /// nsguard's Report, by the fingerprint of its content.
    Present {
        fingerprint: u64,
        uid: Option<Uid>,
    },
}

/// nsguard's Report as the cache keeps it: where it is and the fingerprint of its content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportView {
    pub name: String,
    pub uid: Option<Uid>,
    pub resource_version: Option<u64>,
    pub fingerprint: u64,
}

impl ReportView {
    /// The view of a Report with `meta` whose content has `fingerprint`.
    pub fn from_parts(meta: &ObjectMeta, fingerprint: u64) -> Self {
        Self {
            name: meta.name.clone().unwrap_or_default(),
            uid: crate::core::ids::uid(meta),
            resource_version: crate::core::ids::revision(meta.resource_version.as_deref()),
            fingerprint,
        }
    }

    pub fn seen(view: Option<&Self>) -> ReportSeen {
        match view {
            Some(v) => ReportSeen::Present { fingerprint: v.fingerprint, uid: v.uid.clone() },
            None => ReportSeen::Absent,
        }
    }
}
