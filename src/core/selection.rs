//! Which profile governs a namespace: label selectors, name globs, the system-namespace exclusion,
//! and the priority rule (highest priority, then the alphabetically first name).

use std::collections::BTreeSet;
use std::sync::Arc;

use kube::core::SelectorExt;

use crate::core::model::{NamespaceGlobs, NamespaceView, Profile, ValidProfile};

/// Namespaces that are never governed unless nsguard is told otherwise.
pub const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// Which namespaces nsguard never governs.
#[derive(Clone, Debug)]
pub struct Exclusions {
    names: BTreeSet<String>,
    globs: NamespaceGlobs,
}

impl Exclusions {
    /// The system namespaces and nsguard's own namespace (unless `include_system`), plus extra
    /// name globs from the operator's configuration.
    pub fn new(own_namespace: Option<&str>, include_system: bool, extra: &[String]) -> Result<Self, String> {
        let mut names = BTreeSet::new();
        if !include_system {
            names.extend(SYSTEM_NAMESPACES.iter().map(|s| (*s).to_owned()));
            names.extend(own_namespace.map(str::to_owned));
        }
        Ok(Self { names, globs: NamespaceGlobs::new(extra)? })
    }

    pub fn excludes(&self, namespace: &str) -> bool {
        self.names.contains(namespace) || self.globs.matches(namespace)
    }
}

impl Default for Exclusions {
    fn default() -> Self {
        Self { names: SYSTEM_NAMESPACES.iter().map(|s| (*s).to_owned()).collect(), globs: NamespaceGlobs::default() }
    }
}

/// Who governs a namespace.
#[derive(Clone, Debug)]
pub enum Governance {
    /// A system or configured exclusion: nsguard never touches it.
    Excluded,
    /// No profile selects it.
    Ungoverned,
    /// `profile` governs it; `overridden` are the other profiles that select it, in rank order.
    Governed { profile: Arc<Profile>, overridden: Vec<String> },
    /// The profile that governs it has an invalid spec: the namespace keeps its last good state.
    Held { profile: Arc<Profile> },
    /// Its annotation names a profile nsguard cannot see (filtered out by `--profile-selector`,
    /// not yet listed, or gone without nsguard's finalizer) and no visible profile selects it. It
    /// keeps everything: only an explicit act releases hardening.
    Orphaned { profile: String },
}

impl Governance {
    /// The profiles that select the namespace but lost to the governing one, in rank order.
    pub fn overridden(&self) -> &[String] {
        match self {
            Self::Governed { overridden, .. } => overridden,
            Self::Held { .. } | Self::Excluded | Self::Ungoverned | Self::Orphaned { .. } => &[],
        }
    }

    /// The name of the governing (or held) profile.
    pub fn profile_name(&self) -> Option<&str> {
        match self {
            Self::Governed { profile, .. } | Self::Held { profile } => Some(&profile.name),
            Self::Orphaned { profile } => Some(profile),
            Self::Excluded | Self::Ungoverned => None,
        }
    }
}

fn selects(profile: &ValidProfile, ns: &NamespaceView) -> bool {
    // Only the labels the selector reads (usually one or two), not a copy of all of them: this runs
    // for every namespace and profile on a fan-out.
    let read = |key: &str| profile.selector_keys.binary_search_by(|k| k.as_str().cmp(key)).is_ok();
    !profile.excluded.matches(&ns.name) && profile.selector.matches(&ns.labels.to_map_where(read))
}

/// Decides which profile governs `ns`.
///
/// Valid profiles that select the namespace compete: the highest priority wins, a tie goes to the
/// alphabetically first name. A namespace whose current profile (its annotation) has become invalid
/// is held rather than handed to another profile or released, so that a typo in a profile never
/// strips a namespace of its hardening.
///
/// Fail closed: a namespace is released (`Ungoverned` while it carries nsguard's annotation) only
/// when its profile is visible and either no longer selects it (its spec or the namespace's labels
/// changed) or is being deleted. A profile nsguard cannot see leaves the namespace `Orphaned`.
pub fn govern(ns: &NamespaceView, profiles: &[Arc<Profile>], exclusions: &Exclusions) -> Governance {
    if exclusions.excludes(&ns.name) {
        return Governance::Excluded;
    }
    let current = ns.governing_annotation().map(|name| (name, profiles.iter().find(|p| p.name == name)));
    if let Some((_, Some(profile))) = current
        && profile.spec.is_err()
        && !profile.deleting
    {
        return Governance::Held { profile: profile.clone() };
    }
    let mut candidates: Vec<(&Arc<Profile>, i32)> = profiles
        .iter()
        .filter_map(|p| match &p.spec {
            Ok(valid) if !p.deleting && selects(valid, ns) => Some((p, valid.spec.priority)),
            _ => None,
        })
        .collect();
    candidates.sort_by(|(a, pa), (b, pb)| pb.cmp(pa).then_with(|| a.name.cmp(&b.name)));
    let mut ranked = candidates.into_iter().map(|(p, _)| p);
    match ranked.next() {
        None => match current {
            Some((name, None)) => Governance::Orphaned { profile: name.to_owned() },
            _ => Governance::Ungoverned,
        },
        Some(winner) => {
            Governance::Governed { profile: winner.clone(), overridden: ranked.map(|p| p.name.clone()).collect() }
        }
    }
}

/// Whether a change to `profile` can affect `ns`: the profile selects it now, or governed it, or
/// competed for it. Used to fan a profile change out to the namespaces it touches.
pub fn may_affect(profile: &Profile, ns: &NamespaceView) -> bool {
    ns.governing_annotation() == Some(profile.name.as_str())
        || matches!(&profile.spec, Ok(valid) if !profile.deleting && selects(valid, ns))
}

/// Whether a profile's watch event must fan out to its namespaces: it is new, its spec changed
/// (generation), its deletion began, or it just received nsguard's finalizer (its namespaces wait
/// for that, see [`awaits_finalizer`]). A status write nsguard made itself changes none of these,
/// so it re-reconciles nothing.
pub fn fans_out(previous: Option<&Profile>, now: &Profile) -> bool {
    previous.is_none_or(|p| {
        p.uid != now.uid
            || p.generation != now.generation
            || p.deleting != now.deleting
            || (!p.finalized() && now.finalized())
    })
}

/// Whether the namespace must wait, writing nothing, until its profile carries nsguard's
/// finalizer. Otherwise a profile deleted moments after its creation could go before nsguard
/// released the namespaces it had just hardened, and leave them orphaned. The finalizer is put on
/// within one round trip of the profile's creation; its watch event fans out to the namespaces.
pub fn awaits_finalizer(governance: &Governance) -> bool {
    matches!(governance, Governance::Governed { profile, .. } if !profile.finalized() && !profile.deleting)
}

/// How long a profile must have carried nsguard's finalizer (as nsguard saw it arrive) before
/// anything is hardened under it. The API server can answer a finalizer's apply with success while
/// a DELETE that read the profile just before removes it anyway (kubernetes/kubernetes#77988):
/// hardening at once could leave namespaces claimed by a profile gone without its release.
/// A DELETE in flight ends well within this.
pub const FINALIZER_SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// How much longer the namespace waits, writing nothing, for its profile's finalizer to settle:
/// `finalized_at` is when nsguard saw the finalizer arrive (`None`: it was there when first seen,
/// as after a start, or the wait is over).
pub fn finalizer_settling(
    finalized_at: Option<std::time::Instant>,
    now: std::time::Instant,
) -> Option<std::time::Duration> {
    let left = FINALIZER_SETTLE.checked_sub(now.saturating_duration_since(finalized_at?))?;
    (!left.is_zero()).then_some(left)
}

/// What to do with nsguard's finalizer on a profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalizerChange {
    /// Put it on: a live profile must not go before its namespaces are released.
    Add,
    /// Take it off: the profile is being deleted and no namespace it governed is left to release.
    Remove,
    None,
}

/// Decides the finalizer of `profile`, given how many namespaces still carry its annotation
/// (excluded and terminating namespaces aside: nsguard releases neither).
pub fn finalizer_change(profile: &Profile, still_annotated: usize) -> FinalizerChange {
    match (profile.deleting, profile.finalized()) {
        (false, false) => FinalizerChange::Add,
        (true, true) if still_annotated == 0 => FinalizerChange::Remove,
        _ => FinalizerChange::None,
    }
}

/// Whether `ns` still waits to be released from `profile` before the profile may go: it carries
/// the profile's annotation and nsguard will release it (not excluded, not terminating, and not
/// handed over to another profile that carries its finalizer, which takes it as it is).
pub fn awaits_release(ns: &NamespaceView, profile: &str, profiles: &[Arc<Profile>], exclusions: &Exclusions) -> bool {
    ns.governing_annotation() == Some(profile) && !ns.terminating && {
        // A profile taking it over that has no finalizer yet has written nothing: the namespace
        // still claims the deleted profile, and would be orphaned if that went first.
        let governance = govern(ns, profiles, exclusions);
        matches!(governance, Governance::Ungoverned) || awaits_finalizer(&governance)
    }
}

#[cfg(test)]
#[path = "selection_tests.rs"]
mod tests;
