//! A new namespace's first hardening, whole: the controller-manager creates its `default`
//! ServiceAccount moments after the namespace. Left to its own watch event, that ServiceAccount
//! would be hardened by a second reconcile queued behind the first reconciles of every namespace
//! created meanwhile (in a burst of 1,000, seconds later). Instead the first reconcile waits for it,
//! briefly, and hardens it in the same turn, as a hand-written controller would.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::crd::Mode;
use super::model::ServiceAccountView;
use super::plan::Plan;

/// How long after a namespace's creation its first reconcile may wait for the `default`
/// ServiceAccount. Bounded: where no ServiceAccount controller runs, a reconcile holds its slot no
/// longer than this, and the ServiceAccount's own watch event remains the fallback.
pub const DEFAULT_ACCOUNT_WAIT: Duration = Duration::from_secs(5);

/// The name of the ServiceAccount every namespace gets.
pub const DEFAULT_ACCOUNT: &str = "default";

/// How much longer (from `now`) the reconcile that produced `plan` should wait for the namespace's
/// `default` ServiceAccount, created at `created`: only for a namespace younger than
/// [`DEFAULT_ACCOUNT_WAIT`] that nsguard hardens (Enforce mode, `default` in scope), is not
/// deleting, and has no `default` ServiceAccount yet. `None`: no wait.
pub fn await_default_account(
    plan: &Plan,
    accounts: &[Arc<ServiceAccountView>],
    created: Option<Timestamp>,
    now: Timestamp,
) -> Option<Duration> {
    let desired = plan.desired.as_ref()?;
    if plan.terminating
        || desired.mode != Mode::Enforce
        || !desired.service_accounts.includes(DEFAULT_ACCOUNT)
        || accounts.iter().any(|sa| sa.name == DEFAULT_ACCOUNT)
    {
        return None;
    }
    let age = Duration::try_from(now.duration_since(created?)).ok()?;
    DEFAULT_ACCOUNT_WAIT.checked_sub(age).filter(|left| !left.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::crd::HardeningProfileSpec;
    use crate::core::model::{NamespaceView, Profile};
    use crate::core::plan::{Observed, plan};
    use crate::core::selection::Governance;

    /// The plan for a new, empty namespace under a profile in `mode` that does or does not turn
    /// token automount off.
    fn plan_for_tests(mode: Mode, tokens: bool) -> Plan {
        let spec: HardeningProfileSpec = serde_json::from_value(serde_json::json!({
            "mode": mode,
            "serviceAccounts": {"disableTokenAutomount": tokens},
        }))
        .expect("spec");
        let profile = Arc::new(Profile::from_spec("prod", spec));
        let ns = NamespaceView { name: "ns".into(), ..Default::default() };
        plan(&ns, Governance::Governed { profile, overridden: vec![] }, &Observed::default())
    }

    fn account(name: &str) -> Arc<ServiceAccountView> {
        Arc::new(ServiceAccountView { name: name.into(), namespace: "ns".into(), ..Default::default() })
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("time")
    }

    #[test]
    fn a_new_namespace_without_its_default_account_waits_for_what_is_left_of_the_bound() {
        let plan = plan_for_tests(Mode::Enforce, true);
        assert_eq!(await_default_account(&plan, &[], Some(at(0)), at(2)), Some(Duration::from_secs(3)));
        assert_eq!(await_default_account(&plan, &[account("builder")], Some(at(0)), at(0)), Some(DEFAULT_ACCOUNT_WAIT));
    }

    #[test]
    fn no_wait_once_it_exists_past_the_bound_or_when_nothing_would_harden_it() {
        let plan = plan_for_tests(Mode::Enforce, true);
        assert_eq!(await_default_account(&plan, &[account("default")], Some(at(0)), at(1)), None);
        assert_eq!(await_default_account(&plan, &[], Some(at(0)), at(5)), None, "at the bound");
        assert_eq!(await_default_account(&plan, &[], Some(at(0)), at(60)), None, "an old namespace");
        assert_eq!(await_default_account(&plan, &[], None, at(0)), None, "no creation time");
        assert_eq!(await_default_account(&plan_for_tests(Mode::Audit, true), &[], Some(at(0)), at(1)), None);
        assert_eq!(await_default_account(&plan_for_tests(Mode::Enforce, false), &[], Some(at(0)), at(1)), None);
        let mut deleting = plan_for_tests(Mode::Enforce, true);
        deleting.terminating = true;
        assert_eq!(await_default_account(&deleting, &[], Some(at(0)), at(1)), None);
        let ungoverned = Plan { desired: None, ..plan_for_tests(Mode::Enforce, true) };
        assert_eq!(await_default_account(&ungoverned, &[], Some(at(0)), at(1)), None);
    }
}
