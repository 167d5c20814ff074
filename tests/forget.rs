//! A deleted namespace leaves nothing behind: every per-namespace structure (the one memory map,
//! pending writes, caches) and the number of metric series return to their size once the
//! namespaces go. Sizes are asserted; the time the round took is recorded, not asserted.

mod support;

use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, ResourceExt};
use nsguard::controller::Footprint;
use serde_json::json;
use support::operator::{Operator, SHARD_LABEL};
use support::*;

const NAMESPACES: usize = 1000;
/// Creating, hardening and deleting 1,000 namespaces (the namespace controller empties each one)
/// scales with the cluster's speed: a deadline of its own.
const ROUND_DEADLINE: Duration = Duration::from_secs(900);

fn series(op: &Operator) -> usize {
    op.metrics.encode().lines().filter(|l| !l.starts_with('#') && !l.is_empty()).count()
}

async fn shard_namespaces(client: &Client, shard: &str) -> Vec<Namespace> {
    let params = ListParams::default().labels(&format!("{SHARD_LABEL}={shard}"));
    Api::<Namespace>::all(client.clone()).list(&params).await.expect("list").items
}

/// Creates `n` namespaces in the shard, waits until nsguard has hardened them all, deletes them and
/// waits until they are gone from the API and from nsguard.
async fn round(op: &Operator, n: usize) {
    let admin = op.admin.clone();
    let labels = op.labels(&[]);
    stream::iter(0..n)
        .for_each_concurrent(32, |_| {
            let admin = admin.clone();
            let labels = labels.clone();
            async move {
                create_namespace(&admin, "forget", &labels).await;
            }
        })
        .await;
    eventually_within(&format!("{n} namespaces hardened"), ROUND_DEADLINE, || async {
        let all = shard_namespaces(&admin, &op.shard).await;
        let hardened = all.iter().filter(|ns| ns.annotations().contains_key("nsguard.io/profile")).count();
        (all.len() == n && hardened == n).then_some(())
    })
    .await;
    eventually_within("every namespace remembered", ROUND_DEADLINE, || async {
        (op.handle.footprint().remembered_namespaces >= n).then_some(())
    })
    .await;
    let names: Vec<String> = shard_namespaces(&admin, &op.shard).await.iter().map(ResourceExt::name_any).collect();
    stream::iter(names)
        .for_each_concurrent(32, |name| {
            let api = Api::<Namespace>::all(admin.clone());
            async move {
                let _ = api.delete(&name, &DeleteParams::default()).await;
            }
        })
        .await;
    eventually_within("the namespaces to be gone", ROUND_DEADLINE, || async {
        shard_namespaces(&admin, &op.shard).await.is_empty().then_some(())
    })
    .await;
}

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
