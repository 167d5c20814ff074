//! A deleted namespace leaves nothing behind: every per-namespace structure (the one memory map,
//! pending writes, caches) and the number of metric series return to their size once the
//! namespaces go. Sizes are asserted; the time the round took is recorded, not asserted.

mod support;

use std::time::Instant;

use nsguard::controller::Footprint;
use serde_json::json;
use support::churn::{left_behind, round, series};
use support::operator::Operator;
use support::*;

const NAMESPACES: usize = 1000;
#[tokio::test]
async fn deleted_namespaces_leave_no_state_and_no_metric_series_behind() {
    let op = Operator::start().await;
    op.profile("forget", json!({})).await;
    // A first, small round brings every kind of metric series into being.
    round(&op, 20).await;
    let settle = |op: &Operator| {
        let footprint = op.handle.footprint();
        (footprint.cached_namespaces == 0 && footprint.remembered_namespaces == 0 && footprint.queued == 0)
            .then_some(footprint)
    };
    let before: Footprint = eventually("nsguard to forget the first round", || async { settle(&op) }).await;
    let series_before = series(&op);

    let started = Instant::now();
    round(&op, NAMESPACES).await;
    let after: Footprint = eventually("nsguard to forget the namespaces", || async { settle(&op) }).await;
    eprintln!("measured forget-round-{NAMESPACES}: {:.1}s", started.elapsed().as_secs_f64());
    assert_eq!(after, before, "per-namespace structures back to their size");
    let series_after = series(&op);
    assert_eq!(left_behind(&series_before, &series_after), Vec::<String>::new(), "no series left behind");
    assert!(
        series_after.len() <= series_before.len() + 8,
        "series back to their number, but for the first of a bounded family: {:?}",
        series_after.difference(&series_before).collect::<Vec<_>>()
    );
    assert_eq!(before.pending_writes, 0);
}
