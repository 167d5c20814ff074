//! Pure: the results of namespace reconciles → each profile's status.
//!
//! Work happens per namespace; a profile's status is only an aggregate of those results. Conditions
//! keep their `lastTransitionTime` while their status is unchanged, and the aggregate of an
//! unchanged cluster equals the status already stored, so nothing is written in steady state.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::core::crd::{HardeningProfileStatus, Mode, NonCompliantNamespace};
use crate::core::model::Profile;
use crate::core::plan::Outcome;
use crate::core::validate::summarize;

/// How many non-compliant namespaces a status lists.
pub const MAX_LISTED: usize = 20;

pub const READY: &str = "Ready";
pub const DRIFTED: &str = "Drifted";
pub const CONFLICTING: &str = "Conflicting";
/// kstatus (Flux, cli-utils): present, `True`, only while nsguard is still bringing namespaces to
/// the baseline (writes in flight, or failed and retried); absent otherwise ("abnormal-true").
pub const RECONCILING: &str = "Reconciling";
/// kstatus: present, `True`, only while nsguard cannot make progress without a change to the
/// profile (its spec is invalid); absent otherwise.
pub const STALLED: &str = "Stalled";

/// What the last reconcile of a namespace found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceResult {
    /// The governing (or held) profile.
    pub profile: Option<String>,
    /// Profiles that select the namespace but lost to `profile`.
    pub overridden: Vec<String>,
    pub outcome: Outcome,
    /// Why the namespace is not compliant: the drift, or the error.
    pub detail: String,
    /// The reconcile failed (the API refused a write); it will be retried.
    pub failed: bool,
    /// nsguard is backing off because another writer keeps reverting it.
    pub fighting: bool,
    /// The field managers whose writes nsguard is correcting (when known).
    pub rivals: Vec<String>,
    /// NetworkPolicy names another object holds (left alone).
    pub taken: Vec<String>,
    /// The rollout gate holds enforce below the target: why.
    pub held: Option<String>,
    /// An exception lowers what is enforced: which.
    pub exception: Option<String>,
}

/// The last drift corrected in a profile's namespaces (kept in memory, shown in `Drifted`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Correction {
    pub namespace: String,
    pub summary: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Tally {
    governed: i32,
    compliant: i32,
    converging: i32,
    drifted: i32,
    failed: Examples,
    fighting: Examples,
    /// The first [`MAX_LISTED`] by name.
    non_compliant: Vec<NonCompliantNamespace>,
    /// Namespaces this profile selects that another profile governs, by winner.
    lost_to: BTreeMap<String, Examples>,
}

/// Every namespace's result, tallied by profile: the one walk over all namespaces a profile-status
/// pass makes. It stands while no result changes (a correction alone changes only the statuses).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tallies {
    by_profile: HashMap<String, Tally>,
    /// Namespaces whose profile nsguard cannot see.
    pub orphaned: usize,
    /// Namespaces whose enforce level the rollout gate holds.
    pub held: usize,
}

/// Tallies the namespace results by profile.
pub fn tally<'a>(results: impl IntoIterator<Item = (&'a str, &'a NamespaceResult)>) -> Tallies {
    let mut tallies = Tallies::default();
    for (namespace, result) in results {
        tallies.orphaned += usize::from(result.outcome == Outcome::Orphaned);
        tallies.held += usize::from(result.held.is_some());
        let Some(profile) = result.profile.as_deref() else {
            continue;
        };
        for loser in &result.overridden {
            if let Some(t) = of(&mut tallies.by_profile, loser) {
                t.lost_to.entry(profile.to_owned()).or_default().push(|| namespace.to_owned());
            }
        }
        let Some(t) = of(&mut tallies.by_profile, profile) else {
            continue;
        };
        t.governed += 1;
        match result.outcome {
            Outcome::Compliant if result.held.is_some() => {}
            Outcome::Compliant => t.compliant += 1,
            Outcome::Converging => t.converging += 1,
            Outcome::Drifted => t.drifted += 1,
            Outcome::Held | Outcome::Orphaned | Outcome::Releasing | Outcome::Untouched => {}
        }
        if result.failed {
            t.failed.push(|| format!("{namespace}: {}", result.detail));
        }
        // The profile lists a fight while the rival's change stands (the namespace's own condition
        // keeps saying Conflicting for the whole episode).
        if result.fighting && result.outcome != Outcome::Compliant {
            t.fighting.push(|| match result.rivals.as_slice() {
                [] => namespace.to_owned(),
                rivals => format!("{namespace} (field manager {})", rivals.join(", ")),
            });
        }
        let reason = if result.outcome != Outcome::Compliant { Some(&result.detail) } else { result.held.as_ref() };
        if let Some(reason) = reason {
            t.non_compliant.push(NonCompliantNamespace { namespace: namespace.to_owned(), reason: reason.clone() });
            if t.non_compliant.len() >= 2 * MAX_LISTED {
                keep_first(&mut t.non_compliant);
            }
        }
    }
    for t in tallies.by_profile.values_mut() {
        keep_first(&mut t.non_compliant);
    }
    tallies
}

/// `profile`'s tally (its name copied only the first time).
fn of<'t>(by_profile: &'t mut HashMap<String, Tally>, profile: &str) -> Option<&'t mut Tally> {
    if !by_profile.contains_key(profile) {
        by_profile.insert(profile.to_owned(), Tally::default());
    }
    by_profile.get_mut(profile)
}

/// The first [`MAX_LISTED`] namespaces by name.
fn keep_first(listed: &mut Vec<NonCompliantNamespace>) {
    listed.sort_by(|a, b| a.namespace.cmp(&b.namespace));
    listed.truncate(MAX_LISTED);
}

/// Each profile's status from the tallies of its namespaces.
pub fn statuses(
    profiles: &[std::sync::Arc<Profile>],
    tallies: &Tallies,
    previous: &HashMap<String, HardeningProfileStatus>,
    corrections: &HashMap<String, Correction>,
    now: &Time,
) -> BTreeMap<String, HardeningProfileStatus> {
    let none = Tally::default();
    profiles
        .iter()
        .map(|profile| {
            let tally = tallies.by_profile.get(&profile.name).unwrap_or(&none);
            let prev = previous.get(&profile.name);
            let status = profile_status(profile, tally, prev, corrections.get(&profile.name), now);
            (profile.name.clone(), status)
        })
        .collect()
}

/// Computes the status of every profile from the namespace results (what `tally` and `statuses`
/// do in two steps).
pub fn aggregate<'a>(
    profiles: &[std::sync::Arc<Profile>],
    results: impl IntoIterator<Item = (&'a str, &'a NamespaceResult)>,
    previous: &HashMap<String, HardeningProfileStatus>,
    corrections: &HashMap<String, Correction>,
    now: &Time,
) -> BTreeMap<String, HardeningProfileStatus> {
    statuses(profiles, &tally(results), previous, corrections, now)
}

fn profile_status(
    profile: &Profile,
    t: &Tally,
    previous: Option<&HardeningProfileStatus>,
    correction: Option<&Correction>,
    now: &Time,
) -> HardeningProfileStatus {
    let generation = profile.generation;
    let prev_conditions = previous.map(|p| p.conditions.as_slice()).unwrap_or_default();
    let condition = |type_: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" };
        // Keep the transition time while the condition's status stays the same.
        let last_transition_time = prev_conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message,
            observed_generation: generation,
            last_transition_time,
        }
    };
    let mode = profile.spec.as_ref().map(|v| v.spec.mode).ok();

    let ready = match &profile.spec {
        Err(errors) => condition(READY, false, "InvalidSpec", summarize(errors)),
        Ok(_) if t.failed.total > 0 => condition(
            READY,
            false,
            "ReconcileFailed",
            format!("{} namespace(s) could not be reconciled, retrying: {}", t.failed.total, t.failed),
        ),
        Ok(_) if t.converging > 0 => condition(
            READY,
            false,
            "Progressing",
            format!("{} of {} namespace(s) are being brought to the baseline", t.converging, t.governed),
        ),
        Ok(_) => condition(
            READY,
            true,
            if mode == Some(Mode::Audit) { "Audited" } else { "Reconciled" },
            format!("{} namespace(s) governed, {} compliant", t.governed, t.compliant),
        ),
    };

    let drifted = if t.fighting.total > 0 {
        condition(
            DRIFTED,
            true,
            "DriftFight",
            format!("another writer keeps reverting nsguard in {}; corrections are backing off", t.fighting),
        )
    } else if t.drifted > 0 {
        condition(
            DRIFTED,
            true,
            "DriftDetected",
            format!("{} namespace(s) differ from the baseline (Audit mode: not corrected)", t.drifted),
        )
    } else if t.converging > 0 {
        condition(DRIFTED, true, "Converging", format!("{} namespace(s) are being corrected", t.converging))
    } else if let Some(c) = correction {
        condition(
            DRIFTED,
            false,
            "DriftCorrected",
            format!("last correction in namespace {}: {}", c.namespace, c.summary),
        )
    } else if let Some(prev) =
        prev_conditions.iter().find(|c| c.type_ == DRIFTED && c.status == "False" && c.reason == "DriftCorrected")
    {
        // Nothing new since the last status (e.g. after a restart): keep reporting the last correction.
        Condition { observed_generation: generation, ..prev.clone() }
    } else {
        condition(DRIFTED, false, "NoDrift", "every governed namespace matches the baseline".to_owned())
    };

    let conflicting = if t.lost_to.is_empty() {
        condition(
            CONFLICTING,
            false,
            "NoConflict",
            "no other profile governs a namespace this profile selects".to_owned(),
        )
    } else {
        let message = t
            .lost_to
            .iter()
            .map(|(winner, namespaces)| {
                format!("{winner} governs {} namespace(s) this profile selects ({})", namespaces.total, namespaces)
            })
            .collect::<Vec<_>>()
            .join("; ");
        condition(CONFLICTING, true, "Overridden", message)
    };

    // kstatus reads these two, not Ready: InProgress while Reconciling, Failed while Stalled, and
    // Current with neither once status.observedGeneration is metadata.generation.
    let kstatus = match (&profile.spec, ready.status.as_str()) {
        (Err(_), _) => Some(condition(STALLED, true, &ready.reason, ready.message.clone())),
        (Ok(_), "False") => Some(condition(RECONCILING, true, &ready.reason, ready.message.clone())),
        (Ok(_), _) => None,
    };

    let exceptions = profile.spec.as_ref().ok().filter(|v| !v.exceptions.is_empty()).map(|v| {
        let s = crate::core::exceptions::summary(&v.exceptions, now.0);
        crate::core::crd::ExceptionsStatus {
            active: i32::try_from(s.active).unwrap_or(i32::MAX),
            next_expiry: s.next_expiry.map(|t| t.to_string()),
            refused: s.refused,
            expiring_soon: s.expiring_soon,
        }
    });
    HardeningProfileStatus {
        observed_generation: generation,
        conditions: [ready, drifted, conflicting].into_iter().chain(kstatus).collect(),
        matched_namespaces: t.governed,
        compliant_namespaces: t.compliant,
        non_compliant: t.non_compliant.clone(),
        exceptions,
    }
}

/// How many, and the first three (in the order seen): what a status message names.
#[derive(Clone, Debug, Default, PartialEq)]
struct Examples {
    total: usize,
    first: Vec<String>,
}

impl Examples {
    fn push(&mut self, item: impl FnOnce() -> String) {
        self.total += 1;
        if self.first.len() < 3 {
            self.first.push(item());
        }
    }
}

/// At most three examples, then how many more.
impl std::fmt::Display for Examples {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.first.join(", "))?;
        if self.total > self.first.len() {
            write!(f, ", and {} more", self.total - self.first.len())?;
        }
        Ok(())
    }
}

/// Whether a profile's aggregated status must be written: it differs both from what the API shows
/// and from what nsguard last wrote (whose watch event may still be on its way).
pub fn needs_write(
    new: &HardeningProfileStatus,
    current: Option<&HardeningProfileStatus>,
    last_written: Option<&HardeningProfileStatus>,
) -> bool {
    current != Some(new) && last_written != Some(new)
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
