//! The order in which namespaces are reconciled: another look at a namespace before the first look
//! at a newer one, each in the order the triggers came.
//!
//! Every trigger (watch events, profile fan-outs, the resync, start-up and leadership) names a
//! namespace; they queue here, once each, and go to kube-runtime's `Controller` no more at a time
//! than it runs (`--concurrency`). Given more than it can run, kube's runner parks the rest in a hash
//! set and takes them in hash order: in a burst of 1,000 the namespaces created first could wait for
//! the last. A name is a few dozen bytes here, where a started reconcile waiting for its turn would
//! be kilobytes. (A fan-out or a reconcile of every namespace queues them in the cache's order; the
//! retries a reconcile asks for — a hold's re-check, a failed write — are kube's own timers and take
//! no turn.)
//!
//! Two lines: namespaces nsguard has looked at before (a ServiceAccount appeared, its own write came
//! back, someone drifted it, a profile changed) go ahead of first looks. In arrival order alone,
//! every namespace of a burst waited between its first look and its second (its `default`
//! ServiceAccount's hardening) for the first looks of all that came after it, and held what a
//! half-done namespace holds meanwhile: at 10,000 namespaces peak RSS rose from 58 to 98 MiB.
//!
//! [`Order`] is the bookkeeping (pure, unit-tested); [`Queue`] shares it with a stream and wakes it.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use futures::Stream;
use kube::runtime::reflector::ObjectRef;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

use super::context::NamespaceMeta;

/// Names waiting for a reconcile, and those handed on that count against the limit.
#[derive(Debug)]
pub struct Order {
    limit: usize,
    /// Waiting for another look, in arrival order: handed on before any first look.
    again: VecDeque<Arc<str>>,
    /// Waiting for a first look, in arrival order (`queued` holds the names of both lines).
    first: VecDeque<Arc<str>>,
    queued: HashSet<Arc<str>>,
    /// Handed to the Controller, not started yet: a trigger for one of these is already served
    /// (the reconcile reads the namespace and the caches after it takes its turn, `reconcile`).
    handed: HashSet<Arc<str>>,
    /// Started from a turn handed on here, not finished.
    running: HashSet<Arc<str>>,
}

impl Order {
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            again: VecDeque::new(),
            first: VecDeque::new(),
            queued: HashSet::new(),
            handed: HashSet::new(),
            running: HashSet::new(),
        }
    }

    /// A trigger for `name` (`looked`: nsguard has looked at it before): queued at the back of its
    /// line unless it waits already or a reconcile that has not started yet will see it. Returns
    /// whether it was queued.
    pub fn push(&mut self, name: &str, looked: bool) -> bool {
        if self.queued.contains(name) || self.handed.contains(name) {
            return false;
        }
        let name: Arc<str> = Arc::from(name);
        self.queued.insert(name.clone());
        if looked {
            self.again.push_back(name)
        } else {
            self.first.push_back(name)
        }
        true
    }

    /// The next name to hand on, if one waits and fewer than the limit are handed on or running.
    pub fn next(&mut self) -> Option<Arc<str>> {
        if self.handed.len() + self.running.len() >= self.limit {
            return None;
        }
        let name = self.again.pop_front().or_else(|| self.first.pop_front())?;
        self.queued.remove(&name);
        self.handed.insert(name.clone());
        Some(name)
    }

    /// A reconcile of `name` starts. True if it is a turn handed on here (it counts until
    /// [`Self::finish`]); false for one kube-runtime scheduled itself (a requeue).
    pub fn start(&mut self, name: &str) -> bool {
        match self.handed.take(name) {
            Some(name) => {
                self.running.insert(name);
                true
            }
            None => false,
        }
    }

    /// The reconcile of a turn from [`Self::start`] ended.
    pub fn finish(&mut self, name: &str) {
        self.running.remove(name);
        self.shrink();
    }

    /// A name handed on never started (the namespace left the cache first).
    pub fn dropped(&mut self, name: &str) {
        self.handed.remove(name);
        self.shrink();
    }

    /// Names waiting.
    pub fn len(&self) -> usize {
        self.again.len() + self.first.len()
    }

    pub fn is_empty(&self) -> bool {
        self.again.is_empty() && self.first.is_empty()
    }

    /// Gives back what a burst grew, once it has drained.
    fn shrink(&mut self) {
        if self.is_empty() && self.again.capacity().max(self.first.capacity()) > 1024 {
            self.again = VecDeque::new();
            self.first = VecDeque::new();
            self.queued = HashSet::new();
        }
    }
}

/// The [`Order`], shared between the triggers, the Controller's input and the reconciles.
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
        let mut order = self.order();
        if order.push(name, looked) {
            self.depth.set(i64::try_from(order.len()).unwrap_or(i64::MAX));
            drop(order);
            self.ready.notify_one();
        }
    }

    /// Names waiting.
    pub fn len(&self) -> usize {
        self.order().len()
    }

    /// A reconcile of `name` starts; its turn (if it has one) ends when the returned guard drops.
    pub fn turn(&self, name: &str) -> Option<Turn<'_>> {
        self.order().start(name).then(|| Turn { queue: self, name: name.to_owned() })
    }

    /// A name handed on never started.
    pub fn dropped(&self, name: &str) {
        self.order().dropped(name);
        self.ready.notify_one();
    }

    /// The Controller's input: the names in order, as turns free up. One consumer.
    pub fn handed(self: Arc<Self>) -> impl Stream<Item = ObjectRef<NamespaceMeta>> + Send {
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
                if let Some(name) = next {
                    return Some((ObjectRef::new(&name), queue));
                }
                queue.ready.notified().await;
            }
        })
    }
}

/// A reconcile's turn: ends (and lets the next name go) when dropped.
pub struct Turn<'a> {
    queue: &'a Queue,
    name: String,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.queue.order().finish(&self.name);
        self.queue.ready.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(order: &mut Order) -> Vec<String> {
        std::iter::from_fn(|| order.next()).map(|n| n.to_string()).collect()
    }

    #[test]
    fn names_go_in_arrival_order_no_more_than_the_limit_at_a_time() {
        let mut order = Order::new(2);
        for name in ["a", "b", "c", "d"] {
            assert!(order.push(name, false));
        }
        assert_eq!(drain(&mut order), ["a", "b"]);
        assert!(order.start("a"));
        assert_eq!(drain(&mut order), Vec::<String>::new(), "a runs, b is handed on: the limit is reached");
        order.finish("a");
        assert_eq!(drain(&mut order), ["c"]);
        assert_eq!(order.len(), 1);
    }

    /// Another look at a namespace goes ahead of first looks at newer ones, each line in arrival
    /// order: a burst's second looks (its ServiceAccounts hardened, its own writes come back) do
    /// not wait for every namespace created after it.
    #[test]
    fn another_look_goes_ahead_of_first_looks_each_in_arrival_order() {
        let mut order = Order::new(8);
        for (name, looked) in [("new-1", false), ("new-2", false), ("seen-1", true), ("new-3", false), ("seen-2", true)]
        {
            assert!(order.push(name, looked));
        }
        assert!(!order.push("new-2", true), "waiting already, in the line it came in");
        assert_eq!(order.len(), 5);
        assert_eq!(drain(&mut order), ["seen-1", "seen-2", "new-1", "new-2", "new-3"]);
    }

    /// The limit counts both lines: a first look waits while the turns go to other looks.
    #[test]
    fn the_limit_holds_across_both_lines() {
        let mut order = Order::new(1);
        order.push("new", false);
        order.push("seen", true);
        assert_eq!(drain(&mut order), ["seen"]);
        assert!(order.start("seen"));
        order.push("seen-2", true);
        order.finish("seen");
        assert_eq!(drain(&mut order), ["seen-2"], "another look came before the turn freed up");
        assert!(order.start("seen-2"));
        order.finish("seen-2");
        assert_eq!(drain(&mut order), ["new"]);
        assert!(order.is_empty());
    }

    #[test]
    fn a_name_waits_once_and_a_trigger_before_its_start_is_already_served() {
        let mut order = Order::new(1);
        assert!(order.push("a", false));
        assert!(!order.push("a", false), "already waiting");
        assert_eq!(drain(&mut order), ["a"]);
        assert!(!order.push("a", false), "handed on, not started: the reconcile will read the change");
        assert!(order.start("a"));
        assert!(order.push("a", false), "running: it may have read the caches before the change");
        order.finish("a");
        assert_eq!(drain(&mut order), ["a"]);
    }

    #[test]
    fn a_requeue_from_kube_takes_no_turn_and_a_dropped_name_frees_its_own() {
        let mut order = Order::new(1);
        assert!(!order.start("x"), "not handed on here: kube-runtime's own requeue");
        order.finish("x");
        order.push("a", false);
        order.push("b", false);
        assert_eq!(drain(&mut order), ["a"]);
        order.dropped("a");
        assert_eq!(drain(&mut order), ["b"]);
        assert!(order.is_empty());
    }

    #[tokio::test]
    async fn the_stream_hands_on_a_name_when_a_turn_ends() {
        use futures::StreamExt;
        let queue = Arc::new(Queue::new(1, Gauge::default()));
        queue.push("a", false);
        queue.push("b", false);
        let mut handed = std::pin::pin!(queue.clone().handed());
        assert_eq!(handed.next().await.map(|r| r.name), Some("a".to_owned()));
        let turn = queue.turn("a").expect("a turn");
        assert!(futures::poll!(handed.next()).is_pending(), "the one turn is taken");
        drop(turn);
        assert_eq!(handed.next().await.map(|r| r.name), Some("b".to_owned()));
    }
}
