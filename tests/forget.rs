//! A deleted namespace leaves nothing behind: every per-namespace structure (the one memory map,
//! pending writes, caches) and the number of metric series return to their size once the
//! namespaces go. Sizes are asserted; the time the round took is recorded, not asserted.

mod support;

use std::time::Instant;

use nsguard::controller::Footprint;
use serde_json::json;
use support::churn::{round, series};
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
        (footprint.cached_namespaces == 0 && footprint.remembered_namespaces == 0).then_some(footprint)
    };
    let before: Footprint = eventually("nsguard to forget the first round", || async { settle(&op) }).await;
    let series_before = series(&op);

    let started = Instant::now();
    round(&op, NAMESPACES).await;
    let after: Footprint = eventually("nsguard to forget the namespaces", || async { settle(&op) }).await;
    eprintln!("measured forget-round-{NAMESPACES}: {:.1}s", started.elapsed().as_secs_f64());
    assert_eq!(after, before, "per-namespace structures back to their size");
    assert_eq!(series(&op), series_before, "metric series back to their number");
    assert_eq!(before.pending_writes, 0);
}
