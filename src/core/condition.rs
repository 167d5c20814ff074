//! Pure: a namespace's result → the `nsguard.io/Hardened` condition on its status, which namespace
//! owners read with `kubectl describe ns` (they can get their Namespace, but not profiles or events
//! elsewhere).
//!
//! One reason list, shared with the profile status and the Report:
//!
//! | status  | reason           | when                                                           |
//! |---------|------------------|----------------------------------------------------------------|
//! | True    | `Compliant`      | Enforce mode, the namespace matches its profile                |
//! | True    | `AuditOnly`      | Audit mode, the namespace matches its profile                  |
//! | False   | `Drifted`        | Audit mode, the namespace differs (reported, not corrected)    |
//! | False   | `Conflicting`    | another writer keeps reverting nsguard, or holds a policy name |
//! | False   | `EnforceHeld`    | existing pods would violate the enforce level: held below it   |
//! | Unknown | `Converging`     | nsguard's writes are in flight, or failed and are retried      |
//! | Unknown | `ProfileInvalid` | the profile is invalid; the last good state is kept            |
//! | Unknown | `Orphaned`       | the profile is out of nsguard's view; nothing is released      |
//!
//! A namespace no profile governs carries no condition (it is removed on Release).

use k8s_openapi::api::core::v1::NamespaceCondition;

use crate::core::announce::truncate;
use crate::core::crd::Mode;
use crate::core::model::HARDENED_CONDITION;
use crate::core::plan::Outcome;
use crate::core::status::NamespaceResult;

/// The condition type nsguard keeps on every governed namespace.
pub const HARDENED: &str = HARDENED_CONDITION;

/// The longest message nsguard writes into the condition.
pub const MAX_MESSAGE: usize = 1000;

/// What the condition says: status, reason and message (the transition time is kept by [`write`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
}

/// The condition a namespace with `result` carries; `None` when no profile governs it. `mode` is
/// the governing profile's mode, when its spec is valid.
pub fn verdict(result: &NamespaceResult, mode: Option<Mode>) -> Option<Verdict> {
    let profile = result.profile.as_deref()?;
    let mut message = match result.outcome {
        Outcome::Untouched | Outcome::Releasing => return None,
        _ if result.fighting || !result.taken.is_empty() => {
            let rivals = match result.rivals.as_slice() {
                [] => String::new(),
                rivals => format!(" (field manager {})", rivals.join(", ")),
            };
            // One message for the whole episode (the drift comes and goes with each correction).
            let detail = if result.fighting {
                format!("another writer{rivals} keeps reverting nsguard's settings; corrections back off exponentially")
            } else {
                result.detail.clone()
            };
            return Some(finish("False", "Conflicting", format!("Profile {profile}: {detail}")));
        }
        Outcome::Compliant if mode == Some(Mode::Audit) => {
            format!("Profile {profile} (Audit mode): matches the baseline; drift is reported, not corrected")
        }
        Outcome::Compliant => match &result.held {
            Some(held) => format!("Profile {profile}: {held}; re-checked periodically, promoted once clean"),
            None => format!("Profile {profile}: hardened, matches the baseline"),
        },
        Outcome::Drifted => format!("Profile {profile} (Audit mode, not corrected): {}", result.detail),
        Outcome::Converging if result.failed => {
            format!("Profile {profile}: a write failed and is retried: {}", result.detail)
        }
        Outcome::Converging => format!("Profile {profile}: converging: {}", result.detail),
        Outcome::Held | Outcome::Orphaned => format!("Profile {profile}: {}", result.detail),
    };
    if let Some(exception) = &result.exception {
        message.push_str(&format!("; {exception}"));
    }
    if !result.overridden.is_empty() {
        message.push_str(&format!(
            "; profiles {} also select this namespace, {profile} governs it",
            result.overridden.join(", ")
        ));
    }
    let (status, reason) = match result.outcome {
        Outcome::Compliant if mode == Some(Mode::Audit) => ("True", "AuditOnly"),
        Outcome::Compliant if result.held.is_some() => ("False", "EnforceHeld"),
        Outcome::Compliant => ("True", "Compliant"),
        Outcome::Drifted => ("False", "Drifted"),
        Outcome::Held => ("Unknown", "ProfileInvalid"),
        Outcome::Orphaned => ("Unknown", "Orphaned"),
        _ => ("Unknown", "Converging"),
    };
    Some(finish(status, reason, message))
}

fn finish(status: &'static str, reason: &'static str, mut message: String) -> Verdict {
    truncate(&mut message, MAX_MESSAGE);
    Verdict { status, reason, message }
}

/// The cluster already shows `verdict` (status, reason and message).
pub fn shows(shown: Option<&NamespaceCondition>, verdict: Option<&Verdict>) -> bool {
    match (shown, verdict) {
        (None, None) => true,
        (Some(c), Some(v)) => {
            c.status == v.status && c.reason.as_deref() == Some(v.reason) && c.message.as_deref() == Some(&v.message)
        }
        _ => false,
    }
}

/// What to apply to the namespace's status so that it shows `verdict`: `None` when it already does,
/// `Some(None)` to remove nsguard's condition, `Some(Some(c))` to apply `c`. The transition time is
/// kept while the status stays the same; `None` in a new condition means "now" (the edge stamps it).
pub fn write(shown: Option<&NamespaceCondition>, verdict: Option<&Verdict>) -> Option<Option<NamespaceCondition>> {
    if shows(shown, verdict) {
        return None;
    }
    Some(verdict.map(|v| NamespaceCondition {
        type_: HARDENED.to_owned(),
        status: v.status.to_owned(),
        reason: Some(v.reason.to_owned()),
        message: Some(v.message.clone()),
        last_transition_time: shown.filter(|c| c.status == v.status).and_then(|c| c.last_transition_time.clone()),
    }))
}

#[cfg(test)]
#[path = "condition_tests.rs"]
mod tests;
