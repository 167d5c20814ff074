//! Pure: the writes a reconcile sends while the rollout gate's enforce dry-run runs.
//!
//! Raising enforce on a namespace that may already hold pods waits for a dry-run
//! ([`crate::core::gate`]), and only the namespace's labels (and what the condition and Report say
//! about them) depend on its answer. The namespace's NetworkPolicies and ServiceAccounts do not, so
//! they go out alongside the dry-run instead of after it: a gated hardening takes as many round
//! trips as an ungated one. [`crate::core::decide::decide_after`] then decides the rest, knowing
//! these were sent.

use std::time::Instant;

use kube::ResourceExt;

use crate::core::decide::{Memory, action_key};
use crate::core::plan::{Action, Plan};

/// The writes of `plan` that may go out before the gate's answer: those to NetworkPolicies and
/// ServiceAccounts, none in flight already, none to a policy name another object holds. None from
/// a follower, and none while correcting someone else's change (a correction waits for
/// [`crate::core::decide::decide`]'s fight back-off, which sees the whole plan).
pub fn ahead_of_gate(namespace: &str, plan: &Plan, memory: &mut Memory, leader: bool, now: Instant) -> Vec<Action> {
    if !leader || !plan.corrections.is_empty() {
        return Vec::new();
    }
    plan.actions
        .iter()
        .filter(|a| independent(a))
        .filter(|a| !matches!(a, Action::ApplyNetworkPolicy(np) if memory.taken.contains_key(&np.name_any())))
        .filter(|a| !memory.pending.is_pending(&action_key(namespace, a), now))
        .cloned()
        .collect()
}

/// A write whose content does not depend on the enforce level.
fn independent(action: &Action) -> bool {
    match action {
        Action::ApplyNetworkPolicy(_)
        | Action::DeleteNetworkPolicy { .. }
        | Action::DisableAutomount { .. }
        | Action::ReleaseAutomount { .. }
        | Action::UnguardAccount { .. } => true,
        Action::ApplyNamespace { .. }
        | Action::ApplyCondition(_)
        | Action::ApplyReport(_)
        | Action::DeleteReport { .. } => false,
    }
}

#[cfg(test)]
#[path = "ahead_tests.rs"]
mod tests;
