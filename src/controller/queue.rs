//! The order in which namespaces are reconciled: another look at a namespace before the first look
//! at a newer one, each in the order the triggers came (another look asked for while a reconcile
//! of the namespace runs joins its line when that reconcile ends).
//!
//! Every trigger (watch events, profile fan-outs, the resync, start-up and leadership) names a
//! namespace; they queue here, once each, and go to the [`runner`](super::runner) no more at a
//! time than `--concurrency`, and never a namespace that is running already. (Given more than it
//! could run, kube-runtime's runner, used before, parked the rest in a hash set and took them in
//! hash order: in a burst of 1,000 the namespaces created first could wait for the last.) A name
//! is a few dozen bytes here, where a started reconcile waiting for its turn would be kilobytes. A
//! fan-out or a reconcile of every namespace queues them in the cache's order; the retries a
//! reconcile asks for (a hold's re-check, a failed write) queue here when their timer is due, as
//! another look.
//!
//! Two lines: namespaces nsguard has looked at before (a ServiceAccount appeared, its own write came
//! back, someone drifted it, a profile changed) go ahead of first looks. In arrival order alone,
//! every namespace of a burst waited between its first look and its second (its `default`
//! ServiceAccount's hardening) for the first looks of all that came after it, and held what a
//! half-done namespace holds meanwhile: at 10,000 namespaces peak RSS rose from 58 to 98 MiB.
//!
//! [`Order`] is the bookkeeping (pure, unit-tested); [`Queue`] shares it with a stream and wakes it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use futures::Stream;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

/// Which line a waiting name is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Line {
    Again,
    First,
}

/// Names waiting for a reconcile, and those handed on (running) that count against the limit.
#[derive(Debug)]
pub struct Order {
    limit: usize,
    /// Waiting for another look, in arrival order (those from `after` as their reconcile ended):
    /// handed on before first looks.
    again: VecDeque<Arc<str>>,
    /// Waiting for a first look, in arrival order. A name moved up to `again` leaves a stale copy
    /// here, skipped when it comes up (`queued` says which line each waiting name is in).
    first: VecDeque<Arc<str>>,
    /// Every waiting name, its line and when it was first asked for; a name in `after` counts as
    /// `Again` (and is in neither line until its reconcile ends).
    queued: HashMap<Arc<str>, Waiting>,
    /// Handed on to the runner, which starts each one at once: not finished.
    running: HashSet<Arc<str>>,
    /// Waiting for another look while their reconcile runs (its own writes came back): they join
    /// `again` when it ends. Handed on before, each would hold a turn behind it doing nothing
    /// (one reconcile of a namespace runs at a time).
    after: HashSet<Arc<str>>,
    /// Names waiting in the line of first looks (`first` may hold stale copies besides).
    firsts: usize,
    /// Turns handed on from `again` in a row while first looks waited.
    passed_over: usize,
}

/// A waiting name's line, and when its first waiting trigger came.
#[derive(Clone, Copy, Debug)]
struct Waiting {
    line: Line,
    since: Instant,
}

/// First looks get at least one turn in this many: a steady stream of other looks (a fan-out, a
/// namespace fought over) cannot keep new namespaces waiting.
const FIRST_LOOK_EVERY: usize = 4;

impl Order {
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            again: VecDeque::new(),
            first: VecDeque::new(),
            queued: HashMap::new(),
            running: HashSet::new(),
            after: HashSet::new(),
            firsts: 0,
            passed_over: 0,
        }
    }

    /// A trigger for `name` (`looked`: nsguard has looked at it before; a reconcile of it running
    /// now counts too, as its own writes come back before it ends): queued at the back of its line
    /// unless it waits already. A first look still waiting moves up to the other line when another
    /// look is asked for. Another look at a namespace whose reconcile runs (handed on, even if not
    /// yet reading) joins the line when that reconcile ends. Returns whether it was queued or moved.
    /// A name waits from its first trigger (`now`): a later one, or a move up, does not restart it.
    pub fn push(&mut self, name: &str, looked: bool, now: Instant) -> bool {
        let line = if looked || self.running.contains(name) { Line::Again } else { Line::First };
        if let Some((waiting, was)) = self.queued.get_key_value(name) {
            if was.line == Line::Again || line == Line::First {
                return false;
            }
            let (waiting, since) = (waiting.clone(), was.since);
            self.queued.insert(waiting.clone(), Waiting { line: Line::Again, since });
            self.firsts -= 1;
            self.again.push_back(waiting);
            return true;
        }
        let name: Arc<str> = Arc::from(name);
        self.queued.insert(name.clone(), Waiting { line, since: now });
        match line {
            Line::Again if self.running.contains(&name) => {
                self.after.insert(name);
            }
            Line::Again => self.again.push_back(name),
            Line::First => {
                self.firsts += 1;
                self.first.push_back(name);
            }
        }
        true
    }

    /// The next name to hand on, if one waits in a line and fewer than the limit run: from the
    /// line of other looks, but from the first looks at least one turn in [`FIRST_LOOK_EVERY`]. It
    /// counts as running from here until [`Self::finish`] (the runner starts it at once). With it,
    /// when it started waiting (its first waiting trigger).
    pub fn next(&mut self) -> Option<(Arc<str>, Instant)> {
        if self.taken() >= self.limit {
            return None;
        }
        let first_due = self.passed_over + 1 >= FIRST_LOOK_EVERY;
        let (name, since) = if first_due {
            self.pop(Line::First).or_else(|| self.pop(Line::Again))
        } else {
            self.pop(Line::Again).or_else(|| self.pop(Line::First))
        }?;
        self.running.insert(name.clone());
        Some((name, since))
    }

    /// The next name waiting in `line` (skipping stale copies of names moved up), and since when.
    fn pop(&mut self, line: Line) -> Option<(Arc<str>, Instant)> {
        loop {
            let name = match line {
                Line::Again => self.again.pop_front(),
                Line::First => self.first.pop_front(),
            }?;
            if let Some(&Waiting { line: was, since }) = self.queued.get(&name)
                && was == line
            {
                self.queued.remove(&name);
                if line == Line::First {
                    self.firsts -= 1;
                    self.passed_over = 0;
                } else if self.firsts > 0 {
                    self.passed_over += 1;
                } else {
                    self.passed_over = 0;
                }
                return Some((name, since));
            }
        }
    }

    /// The reconcile of a name handed on by [`Self::next`] ended.
    pub fn finish(&mut self, name: &str) {
        self.running.remove(name);
        if let Some(next) = self.after.take(name) {
            self.again.push_back(next);
        }
        self.shrink();
    }

    /// Names waiting.
    pub fn len(&self) -> usize {
        self.queued.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    /// Names handed on (running): turns taken.
    pub fn taken(&self) -> usize {
        self.running.len()
    }

    /// Gives back what a burst grew, once it has drained.
    fn shrink(&mut self) {
        if self.is_empty() && self.again.capacity().max(self.first.capacity()) > 1024 {
            // (Empty: any copies left in the lines are stale.)
            self.again = VecDeque::new();
            self.first = VecDeque::new();
            self.queued = HashMap::new();
        }
    }
}

/// The [`Order`], shared between the triggers, the runner's input and the reconciles.
#[derive(Debug)]
pub struct Queue {
    order: Mutex<Order>,
    /// Something may be handed on: a name was queued or a turn ended.
    ready: Notify,
    /// Names waiting (`nsguard_queue_depth`).
    depth: Gauge,
}

impl Queue {
    pub fn new(limit: usize, depth: Gauge) -> Self {
        Self { order: Mutex::new(Order::new(limit)), ready: Notify::new(), depth }
    }

    fn order(&self) -> std::sync::MutexGuard<'_, Order> {
        self.order.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A trigger for the namespace `name` (`looked`: nsguard has looked at it before).
    pub fn push(&self, name: &str, looked: bool) {
        let now = Instant::now();
        let mut order = self.order();
        if order.push(name, looked, now) {
            self.depth.set(i64::try_from(order.len()).unwrap_or(i64::MAX));
            drop(order);
            self.ready.notify_one();
        }
    }

    /// Names waiting or running: nothing once everything is done (a turn that was
    /// never given back would show here).
    pub fn len(&self) -> usize {
        let order = self.order();
        order.len() + order.taken()
    }

    /// The reconcile of `name` ended: its turn is free, and another look asked for meanwhile joins
    /// its line.
    pub fn finish(&self, name: &str) {
        self.order().finish(name);
        self.ready.notify_one();
    }

    /// The runner's input: the names in order, as turns free up, each with when it started
    /// waiting; each holds its turn until [`Self::finish`]. One consumer.
    pub fn handed(self: Arc<Self>) -> impl Stream<Item = (Arc<str>, Instant)> + Send {
        futures::stream::unfold(self, |queue| async move {
            loop {
                // `notify_one` keeps a permit when no one waits: a wake between the check and the
                // wait is not lost.
                let next = {
                    let mut order = queue.order();
                    let next = order.next();
                    queue.depth.set(i64::try_from(order.len()).unwrap_or(i64::MAX));
                    next
                };
                if let Some(next) = next {
                    return Some((next, queue));
                }
                queue.ready.notified().await;
            }
        })
    }
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
