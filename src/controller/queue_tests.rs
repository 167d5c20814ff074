//! Unit tests of the queue's order ([`super::Order`]) and its stream.

use super::*;

/// A fixed moment for the tests that are not about waiting.
fn t0() -> Instant {
    static T0: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);
    *T0
}

fn drain(order: &mut Order) -> Vec<String> {
    std::iter::from_fn(|| order.next()).map(|(n, _)| n.to_string()).collect()
}

#[test]
fn names_go_in_arrival_order_no_more_than_the_limit_at_a_time() {
    let mut order = Order::new(2);
    for name in ["a", "b", "c", "d"] {
        assert!(order.push(name, false, t0()));
    }
    assert_eq!(drain(&mut order), ["a", "b"]);
    assert_eq!(order.taken(), 2, "a and b run: the limit is reached");
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
    for (name, looked) in [("new-1", false), ("new-2", false), ("seen-1", true), ("new-3", false), ("seen-2", true)] {
        assert!(order.push(name, looked, t0()));
    }
    assert!(!order.push("new-1", false, t0()), "waiting already");
    assert!(!order.push("seen-1", true, t0()), "waiting already");
    assert_eq!(order.len(), 5);
    assert_eq!(drain(&mut order), ["seen-1", "seen-2", "new-1", "new-2", "new-3"]);
}

/// A first look still waiting when another look is asked for (its memory came from an earlier
/// reconcile) moves up, once, and is handed on once.
#[test]
fn a_waiting_first_look_moves_up_when_another_look_is_asked_for() {
    let mut order = Order::new(8);
    order.push("new-1", false, t0());
    order.push("new-2", false, t0());
    assert!(order.push("new-2", true, t0()), "moved up");
    assert!(!order.push("new-2", true, t0()), "moved already");
    assert_eq!(order.len(), 2);
    assert_eq!(drain(&mut order), ["new-2", "new-1"]);
    assert!(order.is_empty());
}

/// nsguard's own writes come back while the first look that made them still runs: their
/// trigger is another look, not a first look at the back of the line.
#[test]
fn a_trigger_while_the_first_look_runs_is_another_look() {
    let mut order = Order::new(8);
    order.push("a", false, t0());
    order.push("b", false, t0());
    assert_eq!(drain(&mut order), ["a", "b"]);
    order.push("c", false, t0());
    assert!(order.push("a", false, t0()), "a runs: its writes came back");
    order.finish("a");
    assert_eq!(drain(&mut order), ["a", "c"]);
}

/// Another look at a namespace whose reconcile runs waits for that reconcile to end, and takes no
/// turn meanwhile: handed on, it would sit behind it (one reconcile of a namespace runs at a
/// time) holding a turn another namespace could use. In a burst, every first look's own
/// writes come back while it runs.
#[test]
fn another_look_at_a_running_namespace_waits_for_it_without_a_turn() {
    let mut order = Order::new(2);
    order.push("a", false, t0());
    assert_eq!(drain(&mut order), ["a"]);
    assert!(order.push("a", false, t0()), "its writes came back");
    assert!(!order.push("a", true, t0()), "waiting already");
    order.push("b", false, t0());
    assert_eq!(drain(&mut order), ["b"], "the other turn goes to b, not to a's next look");
    assert_eq!(order.len(), 1, "a's next look waits");
    order.finish("a");
    assert_eq!(drain(&mut order), ["a"]);
    order.finish("a");
    assert_eq!(drain(&mut order), Vec::<String>::new());
    assert!(order.is_empty());
}

/// A steady stream of other looks cannot keep first looks waiting: one turn in
/// [`FIRST_LOOK_EVERY`] goes to them.
#[test]
fn first_looks_get_a_turn_in_every_few() {
    let mut order = Order::new(100);
    order.push("new", false, t0());
    for i in 0..10 {
        order.push(&format!("seen-{i}"), true, t0());
    }
    let handed = drain(&mut order);
    let at = handed.iter().position(|n| n == "new").expect("handed on");
    assert_eq!(at, FIRST_LOOK_EVERY - 1, "{handed:?}");
}

/// The limit counts both lines: a first look waits while the turns go to other looks.
#[test]
fn the_limit_holds_across_both_lines() {
    let mut order = Order::new(1);
    order.push("new", false, t0());
    order.push("seen", true, t0());
    assert_eq!(drain(&mut order), ["seen"]);
    order.push("seen-2", true, t0());
    order.finish("seen");
    assert_eq!(drain(&mut order), ["seen-2"], "another look came before the turn freed up");
    order.finish("seen-2");
    assert_eq!(drain(&mut order), ["new"]);
    assert!(order.is_empty());
}

/// A trigger once a name is handed on is another look after it: the reconcile may have read the
/// caches before the change.
#[test]
fn a_name_waits_once_and_a_trigger_once_handed_on_comes_after_it() {
    let mut order = Order::new(2);
    assert!(order.push("a", false, t0()));
    assert!(!order.push("a", false, t0()), "already waiting");
    assert_eq!(drain(&mut order), ["a"]);
    assert!(order.push("a", false, t0()), "running: it may have read the caches before the change");
    assert_eq!(drain(&mut order), Vec::<String>::new(), "a turn is free, but a waits for its running reconcile");
    order.finish("a");
    assert_eq!(drain(&mut order), ["a"]);
    order.finish("a");
    assert!(order.is_empty());
    assert_eq!(order.taken(), 0);
}

/// A name that was not handed on (unknown, or waiting) holds no turn, and its end frees none and
/// takes it out of no line.
#[test]
fn finishing_a_name_not_handed_on_frees_no_turn() {
    let mut order = Order::new(1);
    order.push("a", false, t0());
    order.push("b", false, t0());
    assert_eq!(drain(&mut order), ["a"]);
    order.finish("x");
    order.finish("b");
    assert_eq!((order.len(), order.taken()), (1, 1), "b still waits; a still holds the one turn");
    assert_eq!(drain(&mut order), Vec::<String>::new());
    order.finish("a");
    assert_eq!(drain(&mut order), ["b"]);
}

#[tokio::test]
async fn the_stream_hands_on_a_name_when_a_turn_ends() {
    use futures::StreamExt;
    let queue = Arc::new(Queue::new(1, Gauge::default()));
    queue.push("a", false);
    queue.push("b", false);
    let mut handed = std::pin::pin!(queue.clone().handed());
    assert_eq!(handed.next().await.map(|(n, _)| n.to_string()), Some("a".to_owned()));
    assert!(futures::poll!(handed.next()).is_pending(), "the one turn is taken");
    queue.finish("a");
    assert_eq!(handed.next().await.map(|(n, _)| n.to_string()), Some("b".to_owned()));
}

/// A name waits from its first trigger: another trigger, or a move up to the other line, does not
/// restart its wait; another look asked for while it runs waits from that trigger; a name queued
/// again after it was served waits from its new trigger, even where a stale copy serves it.
#[test]
fn a_name_waits_from_its_first_trigger() {
    let at = |ms| t0() + std::time::Duration::from_millis(ms);
    let mut order = Order::new(2);
    assert!(order.push("a", false, at(0)));
    assert!(order.push("b", false, at(1)));
    assert!(!order.push("a", false, at(2)), "waiting already");
    assert!(order.push("b", true, at(3)), "moved up, leaving a stale copy in the first looks");
    assert_eq!(order.next(), Some((Arc::from("b"), at(1))));
    assert_eq!(order.next(), Some((Arc::from("a"), at(0))));
    order.finish("b");
    assert!(order.push("b", false, at(4)), "b again, where its stale copy still waits");
    assert!(order.push("a", true, at(5)), "another look while a runs");
    assert_eq!(
        order.next(),
        Some((Arc::from("b"), at(4))),
        "served from the stale copy, waiting since its new trigger"
    );
    order.finish("b");
    assert_eq!(order.next(), None, "a waits for its running reconcile, though a turn is free");
    order.finish("a");
    assert_eq!(order.next(), Some((Arc::from("a"), at(5))));
}
