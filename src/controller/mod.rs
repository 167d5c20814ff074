//! The controller: the I/O around the pure core. One reconcile unit per Namespace.
//!
//! A watch event ([`watches`]) updates a cache and names namespaces → they [`queue`] (another look
//! first, each line in arrival order) → the [`runner`] runs one [`reconcile`] per namespace at a
//! time → the core decides ([`crate::core::decide::decide`]) → [`apply`] executes the writes
//! → events are queued ([`events`]) → the [`status_writer`] aggregates results into each profile's
//! status. Only the leader ([`leader`]) writes.

mod apply;
mod context;
mod error;
pub mod events;
mod gate;
pub mod index;
pub mod leader;
mod queue;
mod reconcile;
mod reports;
mod runner;
mod settings;
mod status_writer;
mod tamper;
mod watches;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt, future};
use kube::Client;
use kube::runtime::reflector;
use tokio::sync::{Notify, watch};
use tokio_stream::wrappers::WatchStream;
use tracing::{info, warn};

pub use self::context::API_TIMEOUT;
use self::context::Context;
pub use self::error::{Error, Result};
use self::events::{EventQueue, Publisher};
use self::index::{NamedIndex, NamespacedIndex};
use self::leader::Leadership;
pub use self::settings::Settings;
use crate::ops::metrics::{Metrics, PartLabels};

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

    /// How much the controller holds: every per-namespace structure and cache, by size (the
    /// runner's timers aside: one per namespace waiting for a retry or a re-check).
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
            reports: self.ctx.reports.len(),
            profiles: self.ctx.profiles.all().len(),
            queued: self.ctx.queue.len(),
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
    pub reports: usize,
    pub profiles: usize,
    /// Namespaces waiting for a reconcile or holding a turn.
    pub queued: usize,
}

/// Emits once for each new term of leadership (and at once if this replica leads already): a term
/// won back after a lapse, however short, is a new term.
fn became_leader(leader: Leadership) -> impl Stream<Item = ()> + Send {
    futures::stream::unfold((leader, None), |(mut leader, mut last)| async move {
        loop {
            let term = leader.term();
            if term.is_some() && term != last {
                return Some(((), (leader, term)));
            }
            if term.is_none() {
                last = None;
            }
            if !leader.changed().await {
                return None;
            }
        }
    })
}

/// Every cached namespace, each time `signal` emits.
fn every_namespace_on(
    ctx: Arc<Context>,
    signal: impl Stream<Item = ()> + Send + 'static,
) -> impl Stream<Item = watches::Trigger> + Send {
    signal.flat_map(move |()| futures::stream::iter(watches::every_namespace(&ctx)))
}

/// A poll this long is logged: every other part of the controller's task waited for it.
const SLOW_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// `inner`, with each of its polls timed into `nsguard_controller_poll_duration_seconds{part}`.
/// The parts share one task, so a long poll of one holds up all the others (a heal among them);
/// the reconciles the runner starts are tasks of their own.
fn timed<F: Future>(ctx: &Context, part: &'static str, inner: F) -> impl Future<Output = F::Output> {
    let histogram = ctx.metrics.poll_duration.get_or_create(&PartLabels { part }).clone();
    let mut inner = Box::pin(inner);
    future::poll_fn(move |cx| {
        let started = std::time::Instant::now();
        let polled = inner.as_mut().poll(cx);
        let took = started.elapsed();
        histogram.observe(took.as_secs_f64());
        if took >= SLOW_POLL {
            warn!(
                part,
                took_ms = took.as_millis(),
                "one poll of the controller's task took long; its other parts waited"
            );
        }
        polled
    })
}

/// How [`run`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Told to stop, and every reconcile in flight finished.
    Drained,
    /// This part of the controller ended by itself (none should): the reconciles in flight were
    /// cancelled, not drained.
    Ended(&'static str),
}

/// Whether a replica told to stop may give its lease up, from how its controller's task ended
/// within the time it had to drain (`None`: it did not end). Only if every reconcile in flight
/// finished: otherwise one may still be writing, and the lease is left to expire (a successor
/// waits a lease duration, by which time this replica's renew deadline has passed). A reconcile's
/// panic is resumed: the process goes down as it would have without the shutdown.
pub fn may_release(ended: Option<Result<Stopped, tokio::task::JoinError>>) -> bool {
    match ended {
        Some(Ok(Stopped::Drained)) => true,
        Some(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Some(Ok(Stopped::Ended(_)) | Err(_)) | None => false,
    }
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
) -> Stopped {
    let (namespaces, namespace_writer) = reflector::store();
    let (synced, synced_rx) = watch::channel(false);
    let ctx = Arc::new(Context {
        events: EventQueue::start(Publisher::new(client.clone(), settings.instance.clone()), metrics.clone()),
        queue: Arc::new(queue::Queue::new(usize::from(settings.concurrency), metrics.queue_depth.clone())),
        client,
        profiles: NamedIndex::default(),
        profile_status: NamedIndex::default(),
        namespaces,
        namespaces_synced: AtomicBool::new(false),
        service_accounts: NamespacedIndex::default(),
        network_policies: NamespacedIndex::default(),
        reports: NamespacedIndex::default(),
        reports_ready: AtomicBool::new(false),
        metrics,
        state: std::sync::Mutex::default(),
        results_generation: std::sync::atomic::AtomicU64::new(0),
        status_dirty: Notify::new(),
        finalizers_dirty: Notify::new(),
        leader: leader.clone(),
        synced,
        last_watch_error: std::sync::Mutex::default(),
        settings,
    });
    on_start(Handle { ctx: ctx.clone() });

    // Every trigger queues its namespace ([`queue`]); the [`runner`] takes them in that order. Every
    // namespace is reconciled once all caches are synced (before that, a reconcile would see a
    // namespace as ungoverned), and again whenever this replica becomes the leader.
    let caches_synced = WatchStream::new(synced_rx).filter(|s| future::ready(*s)).take(1).map(|_| ());
    let triggers: Vec<BoxStream<'static, watches::Trigger>> = vec![
        watches::namespaces(ctx.clone(), namespace_writer).boxed(),
        watches::profiles(ctx.clone()).boxed(),
        watches::service_accounts(ctx.clone()).boxed(),
        watches::network_policies(ctx.clone()).boxed(),
        reports::watch(ctx.clone()).boxed(),
        watches::resync(ctx.clone()).boxed(),
        every_namespace_on(ctx.clone(), caches_synced).boxed(),
        every_namespace_on(ctx.clone(), became_leader(leader)).boxed(),
    ];
    let queued = ctx.clone();
    let feed = futures::stream::select_all(triggers).for_each(move |trigger| {
        queued.enqueue(&trigger.name);
        future::ready(())
    });
    // The runner ends on shutdown (in-flight reconciles finish first); the rest ends with it.
    let stopped = tokio::select! {
        () = timed(&ctx, "runner", runner::run(ctx.clone(), shutdown)) => Stopped::Drained,
        () = timed(&ctx, "watches", feed) => Stopped::Ended("watches"),
        () = timed(&ctx, "status", status_writer::run(ctx.clone())) => Stopped::Ended("status"),
        () = timed(&ctx, "finalizers", status_writer::keep_finalizers(ctx.clone())) => Stopped::Ended("finalizers"),
        () = timed(&ctx, "tamper", tamper::watch(ctx.clone())) => Stopped::Ended("tamper"),
    };
    match stopped {
        Stopped::Drained => info!("controller stopped; reconciles in flight finished"),
        Stopped::Ended(part) => {
            warn!(part, "a part of the controller ended by itself; reconciles in flight were cancelled")
        }
    }
    stopped
}

#[cfg(test)]
mod tests {
    use std::panic::{AssertUnwindSafe, catch_unwind};

    use super::*;

    #[tokio::test]
    async fn only_reconciles_that_drained_release_the_lease() {
        assert!(may_release(Some(Ok(Stopped::Drained))));
        assert!(!may_release(Some(Ok(Stopped::Ended("watches")))), "a part ended: reconciles were cancelled");
        assert!(!may_release(None), "reconciles still ran when the time to drain was up");
        let cancelled = tokio::spawn(future::pending::<Stopped>());
        cancelled.abort();
        let cancelled = cancelled.await.expect_err("aborted");
        assert!(cancelled.is_cancelled());
        assert!(!may_release(Some(Err(cancelled))), "the controller's task was cancelled");
    }

    #[tokio::test]
    async fn a_panic_while_draining_takes_the_process_down() {
        let panicked = tokio::spawn(async { std::panic::panic_any("a reconcile panicked") as Stopped })
            .await
            .expect_err("panicked");
        let resumed = catch_unwind(AssertUnwindSafe(|| may_release(Some(Err(panicked)))));
        let payload = resumed.expect_err("the panic is resumed, not turned into an answer");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"a reconcile panicked"));
    }
}
