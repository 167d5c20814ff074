//! How the controller is configured.

use std::time::Duration;

use crate::core::selection::Exclusions;

/// How the controller is configured.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespaces never governed.
    pub exclusions: Exclusions,
    /// Only namespaces with these labels are watched (a label selector), e.g. to shard.
    pub namespace_selector: Option<String>,
    /// Only profiles with these labels are watched (a label selector).
    pub profile_selector: Option<String>,
    /// Namespaces reconciled at once.
    pub concurrency: u16,
    /// Every namespace is re-checked this often, as a backstop to the watches.
    pub resync: Duration,
    /// Shown as the reporting instance of Events (the pod name).
    pub instance: Option<String>,
    /// How long status updates are coalesced.
    pub status_interval: Duration,
    /// How often a namespace whose enforce level is held is checked again (plus up to a fifth,
    /// spread by name).
    pub enforce_recheck: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            exclusions: Exclusions::default(),
            namespace_selector: None,
            profile_selector: None,
            concurrency: 16,
            resync: Duration::from_secs(30 * 60),
            instance: None,
            status_interval: Duration::from_millis(500),
            enforce_recheck: Duration::from_secs(300),
        }
    }
}
