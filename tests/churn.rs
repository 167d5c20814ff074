//! Churn: three rounds of 500 namespaces created, hardened and deleted. Nobody touches them, so
//! nsguard must not report drift on any (a `DriftCorrected` event tells on-call "someone changed
//! this": it must be true), and every per-namespace structure and metric series is back to its
//! size after the first round. This process's peak RSS is recorded as a figure, not asserted.

mod support;

use k8s_openapi::api::events::v1::Event;
use kube::api::Api;
use nsguard::controller::Footprint;
use serde_json::json;
use std::collections::BTreeSet;

use support::churn::{left_behind, round, series};
use support::operator::Operator;
use support::*;

const ROUNDS: usize = 3;
const NAMESPACES: usize = 500;

/// nsguard's `DriftCorrected` events about namespaces of this test (their names start `forget-`
/// and the test's controller reports as `test-<shard>`).
async fn drift_corrected(op: &Operator) -> Vec<String> {
    let instance = format!("test-{}", op.shard);
    Api::<Event>::all(op.admin.clone())
        .list(&Default::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.reporting_instance.as_deref() == Some(instance.as_str()))
        .filter(|e| e.reason.as_deref() == Some("DriftCorrected"))
        .filter_map(|e| e.note)
        .collect()
}

#[tokio::test]
async fn churn_reports_no_false_drift_and_leaves_nothing_behind() {
    let op = Operator::start().await;
    op.profile("churn", json!({})).await;
    let settle = |op: &Operator| {
        let footprint = op.handle.footprint();
        (footprint.cached_namespaces == 0 && footprint.remembered_namespaces == 0 && footprint.queued == 0)
            .then_some(footprint)
    };
    let mut after_first: Option<(Footprint, BTreeSet<String>)> = None;
    for i in 1..=ROUNDS {
        round(&op, NAMESPACES).await;
        let footprint = eventually("nsguard to forget the round", || async { settle(&op) }).await;
        let now = series(&op);
        record_figure(&format!("churn-round-{i}-peak-rss-mib"), format!("{:.1}", peak_rss_mib(std::process::id())));
        match &after_first {
            None => after_first = Some((footprint, now)),
            Some((first, first_series)) => {
                assert_eq!(&footprint, first, "round {i}: structures back to round 1's");
                let behind = left_behind(first_series, &now);
                assert_eq!(behind, Vec::<String>::new(), "round {i}: no metric series left behind");
            }
        }
    }
    let false_reports = drift_corrected(&op).await;
    assert!(false_reports.is_empty(), "drift reported on namespaces nobody touched: {false_reports:?}");
    assert_eq!(op.corrections("label") + op.corrections("network_policy_missing"), 0);
}
