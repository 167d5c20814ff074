//! The controller: the I/O around the pure core. One reconcile unit per Namespace.
//!
//! A watch event ([`watches`]) updates a cache and names namespaces → kube-runtime's `Controller`
//! schedules one [`reconcile`] per namespace → the core decides
//! ([`crate::core::decide::decide`]) → [`apply`] executes the writes → events are queued
//! ([`events`]) → the [`status_writer`] aggregates results into each profile's status. Only the
//! leader ([`leader`]) writes.

mod apply;
mod context;
mod error;
pub mod events;
pub mod index;
pub mod leader;
mod reconcile;
mod status_writer;
mod watches;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use futures::{Stream, StreamExt, future};
use kube::Client;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector;
use tokio::sync::{Notify, watch};
use tokio_stream::wrappers::WatchStream;
use tracing::{debug, info, warn};

pub use self::context::API_TIMEOUT;
use self::context::Context;
pub use self::error::{Error, Result};
use self::events::{EventQueue, Publisher};
use self::index::{NamedIndex, NamespacedIndex};
use self::leader::Leadership;
use crate::core::selection::Exclusions;
use crate::ops::metrics::Metrics;

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
        }
    }
}

/// A handle for observing a running controller (readiness, metrics, memory).
#[derive(Clone)]
pub struct Handle {
    ctx: Arc<Context>,
}

impl Handle {
    /// The caches are synced (the initial lists are complete).
    pub fn is_synced(&self) -> bool {
        self.ctx.is_synced()
    }

    /// This replica can do its job now (see [`Context::is_ready`]).
    pub fn is_ready(&self) -> bool {
        self.ctx.is_ready()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.ctx.metrics
    }

    /// How much the controller holds: every per-namespace structure and cache, by size.
    pub fn footprint(&self) -> Footprint {
        let (remembered, pending) = {
            let state = self.ctx.state();
            (state.namespaces.len(), state.namespaces.values().map(|m| m.pending.len()).sum())
        };
        Footprint {
            remembered_namespaces: remembered,
            pending_writes: pending,
            cached_namespaces: self.ctx.namespaces.state().len(),
            service_accounts: self.ctx.service_accounts.len(),
            network_policies: self.ctx.network_policies.len(),
            profiles: self.ctx.profiles.all().len(),
        }
    }
}

/// The sizes of what the controller holds (see [`Handle::footprint`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Namespaces with an entry in the per-namespace memory (results, reports, pending writes,
    /// fight history, failures: one entry each).
    pub remembered_namespaces: usize,
    pub pending_writes: usize,
    pub cached_namespaces: usize,
    pub service_accounts: usize,
    pub network_policies: usize,
    pub profiles: usize,
}

/// Emits once each time this replica becomes the leader (and at once if it leads already).
fn became_leader(leader: Leadership) -> impl Stream<Item = ()> + Send {
    futures::stream::unfold((leader, false), |(mut leader, mut was)| async move {
        loop {
            let is = leader.is_leader();
            if is && !was {
                return Some(((), (leader, true)));
            }
            was = is;
            if !leader.changed().await {
                return None;
            }
        }
    })
}

/// Runs the controller until `shutdown` resolves; in-flight reconciles finish first. `leader`
/// says whether this replica may write; the controller watches and decides regardless, so a new
/// leader is ready at once.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    leader: Leadership,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    on_start: impl FnOnce(Handle),
) -> Result<()> {
    let (namespaces, namespace_writer) = reflector::store();
    let (synced, synced_rx) = watch::channel(false);
    let ctx = Arc::new(Context {
        events: EventQueue::start(Publisher::new(client.clone(), settings.instance.clone()), metrics.clone()),
        client,
        profiles: NamedIndex::default(),
        profile_status: NamedIndex::default(),
        namespaces,
        namespaces_synced: AtomicBool::new(false),
        service_accounts: NamespacedIndex::default(),
        network_policies: NamespacedIndex::default(),
        metrics,
        state: std::sync::Mutex::default(),
        status_dirty: Notify::new(),
        leader: leader.clone(),
        synced,
        last_watch_error: std::sync::Mutex::default(),
        settings,
    });
    on_start(Handle { ctx: ctx.clone() });

    // Every namespace is reconciled once all caches are synced (before that, a reconcile would see
    // a namespace as ungoverned), and again whenever this replica becomes the leader.
    let caches_synced = WatchStream::new(synced_rx).filter(|s| future::ready(*s)).take(1).map(|_| ());
    let controller = Controller::for_stream(watches::namespaces(ctx.clone(), namespace_writer), ctx.namespaces.clone())
        .with_config(ControllerConfig::default().concurrency(ctx.settings.concurrency))
        .reconcile_on(watches::profiles(ctx.clone()))
        .reconcile_on(watches::service_accounts(ctx.clone()))
        .reconcile_on(watches::network_policies(ctx.clone()))
        .reconcile_all_on(caches_synced)
        .reconcile_all_on(became_leader(leader))
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, reconcile::error_policy, ctx.clone())
        .for_each(|result| {
            match result {
                Err(kube::runtime::controller::Error::ObjectNotFound(_)) | Ok(_) => {}
                Err(other) => debug!(error = %other, "reconcile stream"),
            }
            future::ready(())
        });
    // The controller ends on shutdown; the status writer ends with it.
    tokio::select! {
        () = controller => {},
        () = status_writer::run(ctx.clone()) => warn!("status writer ended"),
    }
    info!("controller stopped");
    Ok(())
}
