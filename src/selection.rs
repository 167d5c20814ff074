//! Which profile governs a namespace: label selectors, name globs, the system-namespace exclusion,
//! and the priority rule (highest priority, then the alphabetically first name).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::crd::{LabelSelector, SelectorOperator};
use crate::model::{NamespaceView, Profile, ValidProfile};

/// Namespaces that are never governed unless nsguard is told otherwise.
pub const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// A label selector ready to match. An absent or empty selector matches everything.
#[derive(Clone, Debug, Default)]
pub struct CompiledSelector {
    selector: LabelSelector,
}

impl CompiledSelector {
    pub fn new(selector: Option<&LabelSelector>) -> Self {
        Self { selector: selector.cloned().unwrap_or_default() }
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let all_labels = self.selector.match_labels.iter().all(|(k, v)| labels.get(k) == Some(&v.0));
        all_labels
            && self.selector.match_expressions.iter().all(|req| {
                let value = labels.get(&req.key);
                let listed = || value.is_some_and(|v| req.values.iter().any(|x| &x.0 == v));
                match req.operator {
                    SelectorOperator::In => listed(),
                    SelectorOperator::NotIn => !listed(),
                    SelectorOperator::Exists => value.is_some(),
                    SelectorOperator::DoesNotExist => value.is_none(),
                }
            })
    }
}

/// Namespace-name globs (`*` any run, `?` any one character), matched against the whole name.
#[derive(Clone, Debug)]
pub struct NamespaceGlobs(GlobSet);

impl Default for NamespaceGlobs {
    fn default() -> Self {
        Self(GlobSet::empty())
    }
}

impl NamespaceGlobs {
    pub fn new(globs: &[String]) -> Result<Self, String> {
        let mut set = GlobSetBuilder::new();
        for glob in globs {
            let compiled = GlobBuilder::new(glob)
                .literal_separator(false)
                .backslash_escape(false)
                .build()
                .map_err(|e| format!("{glob:?}: {e}"))?;
            set.add(compiled);
        }
        set.build().map(Self).map_err(|e| e.to_string())
    }

    pub fn matches(&self, name: &str) -> bool {
        self.0.is_match(name)
    }
}

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
    !profile.excluded.matches(&ns.name) && profile.selector.matches(&ns.labels)
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

/// Whether `ns` still waits to be released from `profile` before the profile may go.
pub fn awaits_release(ns: &NamespaceView, profile: &str, exclusions: &Exclusions) -> bool {
    ns.governing_annotation() == Some(profile) && !ns.terminating && !exclusions.excludes(&ns.name)
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use crate::crd::{HardeningProfileSpec, LabelSelectorRequirement, LabelValue};
    use crate::model::PROFILE_ANNOTATION;

    fn ns(name: &str, labels: &[(&str, &str)]) -> NamespaceView {
        NamespaceView {
            name: name.into(),
            labels: labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
            ..Default::default()
        }
    }

    fn profile(name: &str, priority: i32, labels: &[(&str, &str)]) -> Arc<Profile> {
        let spec = HardeningProfileSpec {
            priority,
            namespace_selector: Some(LabelSelector {
                match_labels: labels.iter().map(|(k, v)| ((*k).into(), LabelValue((*v).into()))).collect(),
                match_expressions: vec![],
            }),
            ..Default::default()
        };
        Arc::new(Profile::from_spec(name, spec))
    }

    fn winner(g: &Governance) -> (Option<&str>, Vec<String>) {
        match g {
            Governance::Governed { profile, overridden } => (Some(profile.name.as_str()), overridden.clone()),
            other => (other.profile_name(), vec![]),
        }
    }

    #[test]
    fn empty_selector_selects_every_namespace() {
        let g = govern(&ns("team-a", &[]), &[profile("all", 0, &[])], &Exclusions::default());
        assert_eq!(winner(&g).0, Some("all"));
    }

    #[test]
    fn system_namespaces_are_never_governed_by_default() {
        for name in SYSTEM_NAMESPACES {
            let g = govern(&ns(name, &[]), &[profile("all", 0, &[])], &Exclusions::default());
            assert!(matches!(g, Governance::Excluded), "{name}");
        }
        let own = Exclusions::new(Some("nsguard-system"), false, &[]).expect("valid");
        assert!(own.excludes("nsguard-system"));
        let included = Exclusions::new(Some("nsguard-system"), true, &[]).expect("valid");
        assert!(!included.excludes("kube-system") && !included.excludes("nsguard-system"));
    }

    #[test]
    fn highest_priority_wins_and_others_are_overridden() {
        let profiles = [profile("b-low", 1, &[]), profile("a-high", 10, &[]), profile("c-mid", 5, &[])];
        let g = govern(&ns("x", &[]), &profiles, &Exclusions::default());
        assert_eq!(winner(&g), (Some("a-high"), vec!["c-mid".to_owned(), "b-low".to_owned()]));
    }

    #[test]
    fn priority_tie_goes_to_first_name() {
        let profiles = [profile("zeta", 3, &[]), profile("alpha", 3, &[])];
        let g = govern(&ns("x", &[]), &profiles, &Exclusions::default());
        assert_eq!(winner(&g), (Some("alpha"), vec!["zeta".to_owned()]));
    }

    #[test]
    fn match_labels_and_expressions_must_all_hold() {
        let mut spec = HardeningProfileSpec::default();
        spec.namespace_selector = Some(LabelSelector {
            match_labels: [("env".to_owned(), LabelValue("prod".into()))].into(),
            match_expressions: vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: SelectorOperator::In,
                    values: vec![LabelValue("web".into()), LabelValue("api".into())],
                },
                LabelSelectorRequirement {
                    key: "legacy".into(),
                    operator: SelectorOperator::DoesNotExist,
                    values: vec![],
                },
                LabelSelectorRequirement { key: "team".into(), operator: SelectorOperator::Exists, values: vec![] },
                LabelSelectorRequirement {
                    key: "stage".into(),
                    operator: SelectorOperator::NotIn,
                    values: vec![LabelValue("canary".into())],
                },
            ],
        });
        let p = [Arc::new(Profile::from_spec("p", spec))];
        let ex = Exclusions::default();
        let selected = |labels: &[(&str, &str)]| govern(&ns("n", labels), &p, &ex).profile_name().is_some();
        assert!(selected(&[("env", "prod"), ("tier", "api"), ("team", "a")]));
        assert!(!selected(&[("env", "dev"), ("tier", "api"), ("team", "a")]));
        assert!(!selected(&[("env", "prod"), ("tier", "db"), ("team", "a")]));
        assert!(!selected(&[("env", "prod"), ("tier", "api"), ("team", "a"), ("legacy", "")]));
        assert!(!selected(&[("env", "prod"), ("tier", "api")]));
        assert!(!selected(&[("env", "prod"), ("tier", "api"), ("team", "a"), ("stage", "canary")]));
    }

    #[test]
    fn excluded_globs_match_whole_names() {
        let spec =
            HardeningProfileSpec { exclude_namespaces: vec!["legacy-*".into(), "tmp-?".into()], ..Default::default() };
        let p = [Arc::new(Profile::from_spec("p", spec))];
        let ex = Exclusions::default();
        let governed = |name: &str| govern(&ns(name, &[]), &p, &ex).profile_name().is_some();
        assert!(!governed("legacy-billing"));
        assert!(!governed("tmp-1"));
        assert!(governed("tmp-12"));
        assert!(governed("not-legacy-x"));
    }

    fn annotated(name: &str, profile: &str) -> NamespaceView {
        let mut n = ns(name, &[]);
        n.annotations.insert(PROFILE_ANNOTATION.into(), profile.into());
        n
    }

    #[test]
    fn namespace_of_a_profile_out_of_view_is_orphaned_not_released() {
        let g = govern(&annotated("x", "gone"), &[profile("other", 0, &[("team", "b")])], &Exclusions::default());
        assert!(matches!(&g, Governance::Orphaned { profile } if profile == "gone"), "{g:?}");
        assert_eq!(g.profile_name(), Some("gone"));
    }

    #[test]
    fn a_visible_profile_that_selects_an_orphan_takes_it_over() {
        let g = govern(&annotated("x", "gone"), &[profile("all", 0, &[])], &Exclusions::default());
        assert_eq!(winner(&g).0, Some("all"));
    }

    #[test]
    fn namespace_a_visible_profile_stopped_selecting_is_released() {
        let g = govern(&annotated("x", "prod"), &[profile("prod", 0, &[("env", "prod")])], &Exclusions::default());
        assert!(matches!(g, Governance::Ungoverned), "{g:?}");
    }

    #[test]
    fn a_profile_being_deleted_governs_nothing_and_its_namespaces_are_released() {
        let mut deleting = (*profile("prod", 0, &[])).clone();
        deleting.deleting = true;
        let profiles = [Arc::new(deleting)];
        assert!(matches!(govern(&annotated("x", "prod"), &profiles, &Exclusions::default()), Governance::Ungoverned));
        assert!(!may_affect(&profiles[0], &ns("fresh", &[])), "a deleting profile selects no new namespace");
        assert!(may_affect(&profiles[0], &annotated("x", "prod")));
    }

    #[test]
    fn the_finalizer_goes_on_live_profiles_and_comes_off_once_every_namespace_is_released() {
        let mut p = (*profile("prod", 0, &[])).clone();
        assert_eq!(finalizer_change(&p, 3), FinalizerChange::Add);
        p.finalizers = vec![crate::model::PROFILE_FINALIZER.into()];
        assert_eq!(finalizer_change(&p, 3), FinalizerChange::None);
        p.deleting = true;
        assert_eq!(finalizer_change(&p, 1), FinalizerChange::None, "a namespace is still to be released");
        assert_eq!(finalizer_change(&p, 0), FinalizerChange::Remove);
        p.finalizers.clear();
        assert_eq!(finalizer_change(&p, 0), FinalizerChange::None, "never re-added while deleting");
    }

    #[test]
    fn only_live_governed_namespaces_hold_a_profile_back() {
        let ex = Exclusions::default();
        assert!(awaits_release(&annotated("x", "prod"), "prod", &ex));
        assert!(!awaits_release(&annotated("x", "other"), "prod", &ex));
        let mut terminating = annotated("x", "prod");
        terminating.terminating = true;
        assert!(!awaits_release(&terminating, "prod", &ex));
        assert!(!awaits_release(&annotated("kube-system", "prod"), "prod", &ex));
    }

    #[test]
    fn namespace_of_an_invalid_profile_is_held() {
        let mut bad = HardeningProfileSpec::default();
        bad.pod_security.enforce.version = "1.30".into();
        let profiles = [Arc::new(Profile::from_spec("broken", bad)), profile("other", 0, &[])];
        let mut n = ns("x", &[]);
        n.annotations.insert(PROFILE_ANNOTATION.into(), "broken".into());
        assert!(matches!(govern(&n, &profiles, &Exclusions::default()), Governance::Held { .. }));
        // A namespace the invalid profile never governed goes to the valid one.
        assert_eq!(winner(&govern(&ns("y", &[]), &profiles, &Exclusions::default())).0, Some("other"));
    }
}
