//! Churn: rounds of namespaces created, hardened by nsguard and deleted, for tests of what nsguard
//! keeps (and forgets) per namespace.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::time::Duration;

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, ResourceExt};

use super::operator::{Operator, SHARD_LABEL};
use super::*;

/// Creating, hardening and deleting 1,000 namespaces (the namespace controller empties each one)
/// scales with the cluster's speed: a deadline of its own.
pub const ROUND_DEADLINE: Duration = Duration::from_secs(900);

/// The metric series nsguard exports: each line's name and labels, without its value.
pub fn series(op: &Operator) -> BTreeSet<String> {
    op.metrics
        .encode()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.rsplit_once(' ').map_or(l, |(key, _)| key).to_owned())
        .collect()
}

/// Families whose labels come from a fixed set (a result, a drift kind, a verb and resource): a
/// first error, back-off or dry-run under load adds one series of theirs, once, never one per
/// namespace.
const BOUNDED: &[&str] = &[
    "nsguard_reconciles_total{",
    "nsguard_drift_corrected_total{",
    "nsguard_drift_detected_total{",
    "nsguard_write_requests_total{",
    "nsguard_watch_errors_total{",
    "nsguard_enforce_dry_runs_total{",
];

/// The series in `after` that `before` lacked, other than the first of a bounded family: these are
/// what a namespace left behind.
pub fn left_behind(before: &BTreeSet<String>, after: &BTreeSet<String>) -> Vec<String> {
    after.difference(before).filter(|key| !BOUNDED.iter().any(|family| key.starts_with(family))).cloned().collect()
}

pub async fn shard_namespaces(client: &Client, shard: &str) -> Vec<Namespace> {
    let params = ListParams::default().labels(&format!("{SHARD_LABEL}={shard}"));
    Api::<Namespace>::all(client.clone()).list(&params).await.expect("list").items
}

/// Creates `n` namespaces in the shard, waits until nsguard has hardened them all, deletes them and
/// waits until they are gone from the API and from nsguard.
pub async fn round(op: &Operator, n: usize) {
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
