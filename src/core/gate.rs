//! Pure: the rollout gate for Pod Security `enforce`.
//!
//! Raising a namespace's enforce level makes every future pod that violates it fail to create: the
//! next rollout, drain or crash of a workload whose pods run as root becomes an outage. With
//! `rollout: Gated`, before nsguard raises enforce it asks the API server what would happen (a
//! dry-run of the label change): Pod Security Admission answers with warnings naming the existing
//! pods that violate the new level. If any do, enforce is held at the strictest level they all pass
//! (audit and warn still go to the target, so the gap stays visible), and the namespace is
//! re-checked on a jittered timer and promoted once the dry-run is clean.
//!
//! This module decides when a dry-run is needed ([`step`]), reads its warnings ([`evaluate`]) and
//! turns the answers into a hold ([`resolve`]); the controller only sends the requests.
//!
//! A namespace with no ServiceAccount needs no dry-run: the ServiceAccount admission plugin admits
//! no pod there (a pod needs its ServiceAccount to exist), so no pod can violate anything. That is
//! every namespace nsguard hardens in its first moments. The write itself still returns Pod Security
//! Admission's warnings, and nsguard reads them: a pod that slipped in is caught there, and the
//! namespace goes through the gate at once.

use std::time::{Duration, Instant};

use crate::core::crd::{Mode, PodSecurityLevel, PodSecurityMode, Rollout};
use crate::core::desired::Desired;
use crate::core::model::{NamespaceView, PROFILE_ANNOTATION, PSA_PREFIX};

/// How many violations a report lists before it only counts the rest.
pub const MAX_LISTED: usize = 5;

/// One group of pods that would violate the level: PSA groups pods that fail the same checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The first pod of the group (by name).
    pub pod: String,
    /// How many other pods fail the same checks.
    pub others: u32,
    /// The failed checks, as PSA words them.
    pub checks: String,
}

/// What the API server said about raising enforce to one level.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Evaluation {
    pub violations: Vec<Violation>,
    /// The check could not look at every pod (it stopped at its pod or time budget, or could not
    /// list them): not clean, whatever it found.
    pub incomplete: Vec<String>,
}

impl Evaluation {
    /// No existing pod violates the level, and every pod was checked.
    pub fn clean(&self) -> bool {
        self.violations.is_empty() && self.incomplete.is_empty()
    }

    /// How many pods violate it.
    pub fn pods(&self) -> u32 {
        self.violations.iter().map(|v| v.others + 1).sum()
    }

    /// The violations of `level` in a bounded line: the first [`MAX_LISTED`] groups, then a count.
    pub fn describe(&self, level: PodSecurityLevel) -> String {
        let mut parts: Vec<String> = self
            .violations
            .iter()
            .take(MAX_LISTED)
            .map(|v| match v.others {
                0 => format!("pod {}: {}", v.pod, v.checks),
                n => format!("pod {} (and {n} other pod{}): {}", v.pod, if n == 1 { "" } else { "s" }, v.checks),
            })
            .collect();
        if self.violations.len() > MAX_LISTED {
            let rest: u32 = self.violations[MAX_LISTED..].iter().map(|v| v.others + 1).sum();
            parts.push(format!("and {rest} more pod(s)"));
        }
        parts.extend(self.incomplete.iter().cloned());
        format!("{} pod(s) would violate {}: {}", self.pods(), level.as_str(), parts.join("; "))
    }
}

/// Reads Pod Security Admission's warnings about existing pods (from a namespace write or its
/// dry-run): the heading `existing pods in namespace "x" violate the new PodSecurity enforce level
/// "l:v"`, then one line per group of pods. The heading alone makes the answer "not clean" (the
/// API server may drop lines past its warning budget); lines of other warnings are ignored.
pub fn evaluate(warnings: &[String]) -> Evaluation {
    /// The API server truncates each warning to 256 characters and drops warnings past 4 KiB.
    const ONE: usize = 256;
    const ALL: usize = 4096;
    let mut out = Evaluation::default();
    let mut heading = false;
    for w in warnings {
        if w.starts_with("existing pods in namespace ") && w.contains(" violate the new PodSecurity enforce level ") {
            heading = true;
            continue;
        }
        if w.starts_with("new PodSecurity enforce level only checked against")
            || w.starts_with("failed to list pods while checking new PodSecurity")
        {
            out.incomplete.push(w.clone());
            continue;
        }
        if !heading {
            continue; // pod lines follow the heading
        }
        // `pod: checks` or `pod (and N other pod[s]): checks`; pod names hold no spaces or colons.
        let Some((who, checks)) = w.split_once(": ") else { continue };
        let (pod, others) = match who.split_once(" (and ") {
            None => (who, 0),
            Some((pod, rest)) => {
                let n = rest.split_whitespace().next().and_then(|n| n.parse().ok());
                match n {
                    Some(n) if rest.ends_with(')') => (pod, n),
                    _ => continue,
                }
            }
        };
        if pod.is_empty() || pod.contains(char::is_whitespace) {
            continue;
        }
        out.violations.push(Violation { pod: pod.to_owned(), others, checks: checks.to_owned() });
    }
    let total: usize = warnings.iter().map(String::len).sum();
    if heading && (out.violations.is_empty() || total + 64 >= ALL || warnings.iter().any(|w| w.chars().count() >= ONE))
    {
        out.incomplete.push("the API server's warnings were cut short: more pods may violate it".to_owned());
    }
    out
}

/// What a namespace write's warnings ask of nsguard.
#[derive(Clone, Debug, PartialEq)]
pub enum AfterWrite {
    /// Nothing: no existing pod violates what the write set, or the rollout is `Immediate`.
    Done,
    /// A tampered enforce label was set back; pods started while it was down violate it. They
    /// stay, the label stays (their next replacement is refused): only logged.
    Restored,
    /// Pods the view did not show violate what was just enforced: back to where enforce was
    /// (this hold), and through the gate at once.
    HoldBack(Hold),
}

/// Decides what follows a namespace write that applied `want` to `before` and drew `warnings`.
pub fn after_write(
    before: &NamespaceView,
    want: &Desired,
    cached: Option<&Hold>,
    warnings: &[String],
    now: Instant,
) -> AfterWrite {
    if evaluate(warnings).clean() {
        AfterWrite::Done
    } else if tampered(before, want, cached) {
        AfterWrite::Restored
    } else if want.rollout == Rollout::Gated {
        AfterWrite::HoldBack(provisional(before, &want.enforce, warnings, now))
    } else {
        AfterWrite::Done
    }
}

/// The text of an HTTP `Warning` header (`299 - "text"`, RFC 7234), unescaped.
pub fn warning_text(header: &str) -> Option<String> {
    let rest = header.trim().strip_prefix("299")?.trim_start().strip_prefix('-')?.trim_start();
    let quoted = rest.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return Some(out),
            c => out.push(c),
        }
    }
    None
}

/// Enforce held below the target because existing pods would violate it.
#[derive(Clone, Debug, PartialEq)]
pub struct Hold {
    /// What the profile asks to enforce.
    pub target: PodSecurityMode,
    /// What is enforced meanwhile: the strictest level every existing pod passes.
    pub level: PodSecurityLevel,
    /// The level the pods fail that blocks the next step up, and its dry-run's answer.
    pub against: PodSecurityLevel,
    pub evaluation: Evaluation,
    /// When it was checked, and how long until the next check (jittered).
    pub checked: Instant,
    pub recheck: Duration,
    /// Held where the namespace was: its enforce and enforce-version labels then (absent ones
    /// stay absent: the cluster's default applies), restored exactly.
    pub keep: Option<(Option<String>, Option<String>)>,
}

impl Hold {
    pub fn due_in(&self, now: Instant) -> Duration {
        (self.checked + self.recheck).saturating_duration_since(now)
    }

    /// The namespace's condition and events say this.
    pub fn describe(&self) -> String {
        format!(
            "enforce held at {} (target {}:{}): {}",
            self.level.as_str(),
            self.target.level.as_str(),
            self.target.version,
            self.evaluation.describe(self.against)
        )
    }
}

/// What the gate asks of a reconcile.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Enforce the target as planned.
    Pass,
    /// Keep enforce where the last check held it (the check is still fresh).
    Held(Hold),
    /// Dry-run these levels, strictest first, before raising enforce.
    Probe(Vec<PodSecurityLevel>),
}

/// The enforce level and version a namespace's labels set (no label: PSA's default, privileged).
pub fn enforced(ns: &NamespaceView) -> (PodSecurityLevel, Option<&str>) {
    let level = ns.labels.get(&format!("{PSA_PREFIX}enforce")).and_then(PodSecurityLevel::parse);
    let version = ns.labels.get(&format!("{PSA_PREFIX}enforce-version"));
    (level.unwrap_or(PodSecurityLevel::Privileged), version)
}

/// Whether enforcing `target` on a namespace at `current` makes it stricter (a new level, or a new
/// version of a level that checks anything). Lowering needs no gate.
pub fn raises(current: (PodSecurityLevel, Option<&str>), target: &PodSecurityMode) -> bool {
    target.level > current.0
        || (target.level == current.0
            && target.level != PodSecurityLevel::Privileged
            && current.1 != Some(target.version.as_str()))
}

/// Decides whether raising enforce on `ns` to what `want` asks needs a dry-run first. `accounts`:
/// how many ServiceAccounts the namespace has; `cached`: the last hold; `suspect`: a write's
/// warnings said existing pods violate the level it set (see [`provisional`]); `settled`: no
/// namespace write of nsguard's is in flight (the view shows the namespace as it is).
pub fn step(
    ns: &NamespaceView,
    want: &Desired,
    accounts: usize,
    cached: Option<&Hold>,
    suspect: bool,
    settled: bool,
    now: Instant,
) -> Step {
    let target = &want.enforce;
    let current = enforced(ns);
    if want.mode != Mode::Enforce || want.rollout == Rollout::Immediate {
        return Step::Pass;
    }
    let cached = cached.filter(|h| h.target == *target);
    if let Some(hold) = cached
        && suspect
    {
        // nsguard's own write got ahead of the gate: back to the hold, and check only once the
        // view shows the namespace there (a dry-run from the raised level would evaluate nothing).
        return if settled && current.0 == hold.level {
            Step::Probe(levels(current.0, target, None))
        } else {
            Step::Held(hold.clone())
        };
    }
    // Without a hold, an in-flight write of nsguard's to the namespace answers for it: its own
    // warnings were read ([`after_write`]), and nothing is written there before the cache shows it
    // (a dry-run from a view that old would evaluate the wrong change).
    let answered = cached.is_none() && (accounts == 0 || !settled);
    if !raises(current, target) || answered || tampered(ns, want, cached) {
        return Step::Pass;
    }
    if let Some(hold) = cached
        && (!settled || (hold.due_in(now) > Duration::ZERO && current.0 == hold.level))
    {
        return Step::Held(hold.clone());
    }
    Step::Probe(levels(current.0, target, cached))
}

/// Someone else lowered (or removed) the enforce label nsguard had set: a correction, healed at
/// once, not a raise to gate (gating it would let a pod created while the label was down keep the
/// namespace held). The namespace is nsguard's under this profile, no hold of nsguard's stands
/// (none remembered, none shown), and another field manager owns the label now, or it is gone.
pub fn tampered(ns: &NamespaceView, want: &Desired, cached: Option<&Hold>) -> bool {
    let key = format!("{PSA_PREFIX}enforce");
    let shown_held = ns.hardened.as_ref().and_then(|c| c.reason.as_deref()) == Some("EnforceHeld");
    let ours = want.annotations.get(PROFILE_ANNOTATION).is_some_and(|p| ns.governing_annotation() == Some(p.as_str()));
    ours && cached.is_none()
        && !shown_held
        && (!ns.labels.contains_key(&key) || ns.label_managers.get(&key).is_some_and(|m| !m.is_empty()))
}

/// The levels to dry-run from `current` towards `target`. A first look asks about the target first,
/// so the report names every check the pods fail. A re-check of a namespace held below baseline
/// asks about baseline first: while that fails, the target must too (each level's checks include
/// the lower one's), and one dry-run answers.
fn levels(current: PodSecurityLevel, target: &PodSecurityMode, cached: Option<&Hold>) -> Vec<PodSecurityLevel> {
    let mut levels = vec![target.level];
    if PodSecurityLevel::Baseline < target.level && PodSecurityLevel::Baseline > current {
        levels.push(PodSecurityLevel::Baseline);
    }
    if cached.is_some_and(|h| h.level < PodSecurityLevel::Baseline) {
        levels.reverse();
    }
    levels
}

/// A namespace write that raised enforce to `target` drew warnings that existing pods violate it
/// (pods nsguard's view did not show): hold enforce where it was before the write (its labels
/// restored exactly), and check again once the view shows it back there.
pub fn provisional(before: &NamespaceView, target: &PodSecurityMode, warnings: &[String], now: Instant) -> Hold {
    Hold {
        target: target.clone(),
        level: enforced(before).0,
        against: target.level,
        evaluation: evaluate(warnings),
        checked: now,
        recheck: Duration::ZERO,
        keep: Some(enforce_labels(before)),
    }
}

/// The namespace's enforce and enforce-version labels.
fn enforce_labels(ns: &NamespaceView) -> (Option<String>, Option<String>) {
    (
        ns.labels.get(&format!("{PSA_PREFIX}enforce")).map(str::to_owned),
        ns.labels.get(&format!("{PSA_PREFIX}enforce-version")).map(str::to_owned),
    )
}

/// Of the levels [`Step::Probe`] named, those the answers so far leave open (ask the first next).
/// Pods that pass a level pass every lower one; pods that fail a level fail every higher one.
pub fn open(levels: &[PodSecurityLevel], results: &[(PodSecurityLevel, Evaluation)]) -> Vec<PodSecurityLevel> {
    levels
        .iter()
        .copied()
        .filter(|l| !results.iter().any(|(at, e)| if e.clean() { *l <= *at } else { *l >= *at }))
        .collect()
}

/// The dry-runs' answers → the hold, or `None` when the target is clean. Held at the strictest
/// level known clean, else where the namespace is.
pub fn resolve(
    ns: &NamespaceView,
    target: &PodSecurityMode,
    results: &[(PodSecurityLevel, Evaluation)],
    now: Instant,
    recheck: Duration,
) -> Option<Hold> {
    let clean = |l: PodSecurityLevel| results.iter().any(|(at, e)| e.clean() && l <= *at);
    if clean(target.level) {
        return None;
    }
    let clean_level = [PodSecurityLevel::Baseline, PodSecurityLevel::Privileged]
        .into_iter()
        .find(|l| *l < target.level && *l > enforced(ns).0 && clean(*l));
    // No level above where the namespace is passes: it stays exactly as it is.
    let (level, keep) = match clean_level {
        Some(level) => (level, None),
        None => (enforced(ns).0, Some(enforce_labels(ns))),
    };
    // What blocks the next step up: the lowest failing level's answer (the same on a first look
    // and on re-checks, so the report does not flip between them).
    let (against, evaluation) = results
        .iter()
        .filter(|(_, e)| !e.clean())
        .min_by_key(|(l, _)| *l)
        .map(|(l, e)| (*l, e.clone()))
        .unwrap_or((target.level, Evaluation::default()));
    Some(Hold { target: target.clone(), level, against, evaluation, checked: now, recheck, keep })
}

/// `interval` plus up to a fifth more, spread by the namespace's name, so that held namespaces are
/// not all re-checked at once.
pub fn jittered(interval: Duration, namespace: &str) -> Duration {
    let hash =
        namespace.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    interval + interval.mul_f64((hash % 1000) as f64 / 5000.0)
}

#[cfg(test)]
#[path = "gate_tests.rs"]
mod tests;
