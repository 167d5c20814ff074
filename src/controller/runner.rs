//! Runs a reconcile for each name the [`queue`](super::queue) hands on, and keeps the one timer each
//! namespace's last reconcile asked for.
//!
//! This takes the place of kube-runtime's `Controller`, whose scheduler put every trigger through a
//! tokio-util `DelayQueue` even when it was due at once: its timers count whole milliseconds,
//! rounded up, so between a name handed on and its reconcile starting 1.4 ms passed on average
//! (0.4–12.8 ms, over the 4,134 reconciles of a 1,000 burst and its drift), a drift heal's delay
//! among them. Here a name handed on starts at once, as a task of its own. A retry (a failed write,
//! a hold's re-check, an exception's end) waits on its timer and then queues like any other look:
//! it takes a turn, and a trigger during it waits for it without holding one. A reconcile handed on
//! for any reason ends its namespace's timer (its own answer sets the next).
//!
//! The queue hands on no name that is already running, and no more than the
//! concurrency limit at once, so this runs every reconcile it is handed.

use std::collections::{BTreeSet, HashMap};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, ready};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::task::{self, JoinSet};
use tokio::time::{Instant, Sleep};

use super::context::Context;
use super::reconcile::{Requeue, error_policy, reconcile};

/// Runs reconciles until `shutdown` resolves, then lets those in flight finish. Each reconcile is
/// a task of its own, so reconciles run on every runtime thread (as kube-runtime's did) and none
/// holds up the watches.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()>) {
    let mut handed = pin!(ctx.queue.clone().handed());
    let mut shutdown = pin!(shutdown);
    let mut running = JoinSet::new();
    // The namespace of each running task (no more than the concurrency limit): a task that ends
    // without an answer still gives its namespace's turn back.
    let mut names: HashMap<task::Id, Arc<str>> = HashMap::new();
    let mut timers = Timers::default();
    let mut stopping = false;
    loop {
        tokio::select! {
            () = &mut shutdown, if !stopping => stopping = true,
            Some((name, since)) = handed.next(), if !stopping => {
                // This reconcile serves whatever the timer was for; its answer sets the next one.
                timers.set(name.clone(), Requeue::AwaitChange);
                let task = running.spawn(one(ctx.clone(), name.clone(), since));
                names.insert(task.id(), name);
            }
            Some(done) = running.join_next_with_id() => match done {
                // The answer first, then the turn: the namespace can be handed on again only after
                // its timer is this reconcile's (an answer landing after the next hand-off would
                // undo that hand-off's reset).
                Ok((id, next)) => {
                    let name = names.remove(&id);
                    debug_assert!(name.is_some(), "every task's namespace is kept until it ends");
                    if let Some(name) = name {
                        timers.set(name.clone(), next);
                        ctx.queue.finish(&name);
                    }
                }
                // A reconcile panicked: so does the controller, as under kube-runtime (the process
                // restarts with a clean slate).
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // Cancelled: defensive, as nothing cancels a task while this loop runs (dropping
                // the runner drops them all). Its turn is given back; not queued again, since a
                // cancel would come from a shutdown.
                Err(e) => {
                    if let Some(name) = names.remove(&e.id()) {
                        ctx.queue.finish(&name);
                    }
                }
            },
            Some(due) = timers.next(), if !stopping => ctx.enqueue(&due),
            else => break,
        }
    }
}

/// One reconcile of `name`, waiting `since`, and what it asks for next (a failure's retry among
/// them).
async fn one(ctx: Arc<Context>, name: Arc<str>, since: std::time::Instant) -> Requeue {
    // Observed as the reconcile starts, so the wait includes any for a worker thread to run it.
    ctx.metrics.queue_wait.observe(since.elapsed().as_secs_f64());
    match reconcile(&name, ctx.clone()).await {
        Ok(next) => next,
        Err(error) => error_policy(&name, &error, &ctx),
    }
}

/// The longest a timer is set for (an exception that ends years from now, a resync period set that
/// long): the reconcile it brings sets the timer again.
const LONGEST: Duration = Duration::from_secs(30 * 24 * 3600);

/// At most one timer per namespace: each reconcile's answer replaces the one before (it decided
/// from everything there is to know now, that timer's reason included). Yields a name when its
/// timer is due. One sleep, for the earliest.
struct Timers {
    due: BTreeSet<(Instant, Arc<str>)>,
    at: HashMap<Arc<str>, Instant>,
    sleep: Pin<Box<Sleep>>,
}

impl Default for Timers {
    fn default() -> Self {
        Self { due: BTreeSet::new(), at: HashMap::new(), sleep: Box::pin(tokio::time::sleep(Duration::ZERO)) }
    }
}

impl Timers {
    fn set(&mut self, name: Arc<str>, next: Requeue) {
        if let Some(when) = self.at.remove(&name) {
            self.due.remove(&(when, name.clone()));
        }
        if let Requeue::After(wait) = next {
            let when = Instant::now() + wait.min(LONGEST);
            self.due.insert((when, name.clone()));
            self.at.insert(name, when);
        }
        if self.at.is_empty() && self.at.capacity() > 1024 {
            // Give back what a burst of failures grew.
            self.at = HashMap::new();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.at.len()
    }
}

impl Stream for Timers {
    type Item = Arc<str>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Arc<str>>> {
        // Empty: nothing is due until a timer is set, which happens in the loop that polls this.
        let Some(&(when, _)) = self.due.first() else { return Poll::Ready(None) };
        if when > Instant::now() {
            if self.sleep.deadline() != when {
                self.sleep.as_mut().reset(when);
            }
            ready!(self.sleep.as_mut().poll(cx));
        }
        let Some((_, name)) = self.due.pop_first() else { return Poll::Ready(None) };
        self.at.remove(&name);
        Poll::Ready(Some(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(timers: &mut Timers) -> Option<String> {
        match futures::FutureExt::now_or_never(timers.next()) {
            Some(Some(name)) => Some(name.to_string()),
            _ => None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_is_due_after_its_wait() {
        let mut timers = Timers::default();
        timers.set(Arc::from("a"), Requeue::After(Duration::from_secs(5)));
        tokio::time::advance(Duration::from_millis(4_900)).await;
        assert_eq!(due(&mut timers), None);
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(due(&mut timers), Some("a".to_owned()));
        assert_eq!(timers.len(), 0, "a due timer is forgotten");
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_reconcile_decides_the_timer() {
        let mut timers = Timers::default();
        timers.set(Arc::from("a"), Requeue::After(Duration::from_secs(5)));
        timers.set(Arc::from("b"), Requeue::After(Duration::from_secs(5)));
        // a: a later answer moves the timer (later or sooner); b: a later answer with no timer ends it.
        timers.set(Arc::from("a"), Requeue::After(Duration::from_secs(60)));
        timers.set(Arc::from("b"), Requeue::AwaitChange);
        assert_eq!(timers.len(), 1);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(due(&mut timers), None, "neither the replaced nor the ended timer fires");
        tokio::time::advance(Duration::from_secs(51)).await;
        assert_eq!(due(&mut timers), Some("a".to_owned()));
        assert_eq!(due(&mut timers), None, "one timer per namespace");
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_years_away_is_cut_to_the_longest() {
        let mut timers = Timers::default();
        timers.set(Arc::from("a"), Requeue::After(Duration::from_secs(10 * 365 * 24 * 3600)));
        tokio::time::advance(LONGEST - Duration::from_secs(1)).await;
        assert_eq!(due(&mut timers), None);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(due(&mut timers), Some("a".to_owned()));
    }
}
