//! Pure: what nsguard tells people about a namespace — the Kubernetes Events a reconcile
//! announces, sent on change only, and the object each event regards.

use crate::core::crd::{Mode, Rollout};
use crate::core::desired::DEFAULT_DENY_POLICY;
use crate::core::ids::Uid;
use crate::core::model::ReportSeen;
use crate::core::plan::{Action, Drift, Observed, Outcome, Plan};
use crate::core::selection::Governance;

/// What was last announced about a namespace.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reported {
    /// A reconcile has announced anything at all (false after a restart).
    pub seen: bool,
    pub drift: Vec<Drift>,
    pub overridden: Vec<String>,
    pub orphaned: bool,
    /// The level the rollout gate held enforce at.
    pub held: Option<crate::core::crd::PodSecurityLevel>,
    /// The exception that applied (as the condition shows it), and when it expires.
    pub exception: Option<(String, k8s_openapi::jiff::Timestamp)>,
}

/// Normal or Warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Normal,
    Warning,
}

/// A Kubernetes Event to publish about the namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    pub severity: Severity,
    /// PascalCase reason: `Hardened`, `DriftCorrected`, `DriftDetected`, `DriftFight`, ...
    pub reason: &'static str,
    pub action: &'static str,
    pub note: String,
}

/// Events for what a reconcile does or finds, sent on change only, so a converged cluster sends
/// none. What the namespace's condition already `shown` is not announced again (after a restart or
/// a leader takeover, memory is empty but the cluster remembers). Returns them with the drift newly
/// detected in Audit mode.
pub fn announcements(
    plan: &Plan,
    reported: &Reported,
    correcting: bool,
    writing: bool,
    shown: bool,
) -> (Vec<Announcement>, Vec<Drift>) {
    let profile = plan.governance.profile_name().unwrap_or_default();
    let mode = plan.desired.as_ref().map(|d| d.mode);
    let overridden = plan.governance.overridden();
    let mut out = Vec::new();
    let mut detected = Vec::new();
    let mut say = |severity, reason, action, note| out.push(Announcement { severity, reason, action, note });
    let enforcing = mode == Some(Mode::Enforce) && !plan.drift.is_empty() && writing;
    if correcting {
        let by = match plan.rivals.as_slice() {
            [] => String::new(),
            rivals => format!(" (overriding field manager {})", rivals.join(", ")),
        };
        say(
            Severity::Warning,
            "DriftCorrected",
            "Correct",
            format!("Profile {profile}: {}; set back{by}", summary(&plan.drift)),
        );
    } else if enforcing && plan.first_hardening {
        say(Severity::Normal, "Hardened", "Harden", format!("Hardened to profile {profile}: {}", summary(&plan.drift)));
    } else if mode == Some(Mode::Audit) && !plan.drift.is_empty() && reported.drift != plan.drift && !shown {
        detected = plan.drift.clone();
        say(
            Severity::Warning,
            "DriftDetected",
            "Audit",
            format!("Profile {profile} (Audit mode, not corrected): {}", summary(&plan.drift)),
        );
    }
    if let Governance::Orphaned { profile } = &plan.governance
        && !reported.orphaned
        && !shown
    {
        say(
            Severity::Warning,
            "Orphaned",
            "Hold",
            format!(
                "Profile {profile} is not visible to nsguard (filtered out by --profile-selector, unreadable, or deleted without nsguard's finalizer); the namespace keeps its hardening and is not released"
            ),
        );
    }
    if plan.outcome == Outcome::Releasing && writing {
        say(
            Severity::Normal,
            "Released",
            "Release",
            "No profile governs this namespace any more; nsguard released what it applied".to_owned(),
        );
    }
    if let Governance::Governed { overridden: others, .. } = &plan.governance
        && !others.is_empty()
        && reported.overridden != overridden
        && (reported.seen || plan.first_hardening)
        && !shown
    {
        say(
            Severity::Warning,
            "ProfileConflict",
            "Resolve",
            format!(
                "Profiles {} also select this namespace; {profile} governs it (higher priority, or the first name on a tie)",
                others.join(", ")
            ),
        );
    }
    gate_announcements(plan, reported, writing, shown, &mut say);
    (out, detected)
}

/// The rollout gate's and the exceptions' events.
fn gate_announcements(
    plan: &Plan,
    reported: &Reported,
    writing: bool,
    shown: bool,
    say: &mut impl FnMut(Severity, &'static str, &'static str, String),
) {
    let profile = plan.governance.profile_name().unwrap_or_default();
    let shown_held = plan.shown.as_ref().and_then(|c| c.reason.as_deref()) == Some("EnforceHeld");
    match (&plan.held, plan.desired.as_ref()) {
        (Some(hold), _) if reported.held != Some(hold.level) && !shown => say(
            Severity::Warning,
            "EnforceHeld",
            "Hold",
            format!("Profile {profile}: {}; re-checked periodically, promoted once clean", hold.describe()),
        ),
        (None, Some(want)) if (reported.held.is_some() || shown_held) && writing && want.rollout == Rollout::Gated => {
            say(
                Severity::Normal,
                "EnforcePromoted",
                "Promote",
                format!(
                    "Profile {profile}: no existing pod violates {}:{} any more; enforcing it",
                    want.enforce.level.as_str(),
                    want.enforce.version
                ),
            )
        }
        _ => {}
    }
    if let Some(e) = &plan.exception
        && e.expiring_soon(plan.now)
        && !shown
        && reported.exception.as_ref().map(|(what, _)| what.as_str()) != Some(e.describe_at(plan.now).as_str())
    {
        say(
            Severity::Warning,
            "ExceptionExpiring",
            "Warn",
            format!(
                "Profile {profile}: {} ends within 7 days; then the profile's level is enforced (through the rollout gate)",
                e.describe()
            ),
        );
    }
    if let Some((what, expires)) = &reported.exception
        && *expires <= plan.now
        && plan.exception.as_ref().is_none_or(|e| e.expires != *expires)
    {
        say(
            Severity::Warning,
            "ExceptionExpired",
            "Expire",
            format!(
                "Profile {profile}: {what} has expired; the profile's level is enforced again (through the rollout gate)"
            ),
        );
    }
}

/// What an event about a namespace regards. Namespace owners can read events only in their own
/// namespace, and the Events API accepts an event there only if it regards an object in that
/// namespace — so it regards one nsguard owns, with the Namespace as `related`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// nsguard's Report in the namespace (existing, being written or just deleted).
    Report { uid: Option<Uid> },
    /// nsguard's NetworkPolicy `name` in the namespace (existing, being created or just deleted).
    NetworkPolicy { name: String, uid: Option<Uid> },
    /// nsguard owns nothing in the namespace (say, Audit mode without NetworkPolicies): the event
    /// regards the Namespace and lives in `default`; the namespace's condition carries the verdict.
    Namespace,
}

/// The subject of events about a namespace whose objects are `observed` and that gets `writes`
/// (with `reports`): nsguard's Report when it has one, else its default-deny policy, else any
/// policy of nsguard's.
pub fn subject(writes: &[Action], reports: &[Action], observed: &Observed) -> Subject {
    if let ReportSeen::Present { uid, .. } = &observed.report {
        return Subject::Report { uid: uid.clone() };
    }
    if reports.iter().any(|a| matches!(a, Action::ApplyReport(_))) {
        return Subject::Report { uid: None };
    }
    let mut candidates: Vec<(&str, Option<&Uid>)> = observed
        .network_policies
        .iter()
        .filter(|np| np.managed_by_nsguard())
        .map(|np| (np.name.as_str(), np.uid.as_ref()))
        .collect();
    for write in writes {
        if let Action::ApplyNetworkPolicy(np) = write {
            candidates.push((np.metadata.name.as_deref().unwrap_or_default(), None));
        }
    }
    candidates.sort_by_key(|(name, _)| (*name != DEFAULT_DENY_POLICY, *name));
    match candidates.first() {
        Some((name, uid)) if !name.is_empty() => Subject::NetworkPolicy { name: (*name).to_owned(), uid: uid.cloned() },
        _ => Subject::Namespace,
    }
}

/// Drift as one line, short enough for an Event's note and for the profile status.
pub fn summary(drift: &[Drift]) -> String {
    let mut text = drift.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
    truncate(&mut text, 900);
    text
}

/// The namespace an event of nsguard's is about: the Namespace it regards (such an event lives in
/// `default`) or is related to (such an event lives in that namespace and regards an object of
/// nsguard's there).
pub fn event_namespace(e: &k8s_openapi::api::events::v1::Event) -> Option<&str> {
    [e.related.as_ref(), e.regarding.as_ref()]
        .into_iter()
        .flatten()
        .find(|r| r.kind.as_deref() == Some("Namespace"))
        .and_then(|r| r.name.as_deref())
}

/// Shortens `text` to at most `max` bytes, on a character boundary, marking the cut with " …".
pub fn truncate(text: &mut String, max: usize) {
    const MARK: &str = " …";
    if text.len() > max {
        let mut cut = max.saturating_sub(MARK.len());
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str(MARK);
    }
}
