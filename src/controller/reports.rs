//! The OpenReports `Report` watch. The CRD is not nsguard's: while it is not installed, nsguard
//! runs without Reports (says so once, and `nsguard_reports_enabled` is 0) and looks for it again
//! every [`RECHECK`]; once it is served and listed, every namespace is reconciled so each gets its
//! Report. If the CRD goes away, nsguard goes back to waiting for it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::api::{Api, DynamicObject};
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{info, warn};

use super::context::Context;
use super::watches::{Trigger, config, namespace_of, namespaced_triggers, relisting};
use crate::core::model::ReportView;
use crate::core::model::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::core::report;

/// How often nsguard looks for the OpenReports CRD while it is not installed.
pub const RECHECK: Duration = Duration::from_secs(15);

/// The API server serves Reports.
async fn served(client: &Client) -> bool {
    match client.list_api_group_resources(report::API_VERSION).await {
        Ok(list) => list.resources.iter().any(|r| r.name == "reports"),
        Err(_) => false,
    }
}

/// The CRD is gone (or not served any more), or nsguard may not read Reports (an older RBAC):
/// Reports are optional, so either means "run without them", not "unready".
fn unavailable(error: &watcher::Error) -> bool {
    matches!(
        error,
        watcher::Error::InitialListFailed(kube::Error::Api(s))
            | watcher::Error::WatchStartFailed(kube::Error::Api(s))
            | watcher::Error::WatchFailed(kube::Error::Api(s)) if matches!(s.code, 401 | 403 | 404)
    )
}

/// Triggers from nsguard's Reports: a changed Report's namespace, and every namespace once Reports
/// become available.
pub fn watch(ctx: Arc<Context>) -> impl Stream<Item = Trigger> + Send {
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(follow(ctx, tx));
    ReceiverStream::new(rx)
}

async fn follow(ctx: Arc<Context>, tx: mpsc::Sender<Trigger>) {
    let mut said_missing = false;
    loop {
        if !served(&ctx.client).await {
            if !said_missing {
                info!(
                    "the OpenReports CRD (reports.openreports.io, v1alpha1) is not installed: running without Reports; nsguard starts writing them when it appears"
                );
                said_missing = true;
            }
            tokio::time::sleep(RECHECK).await;
            continue;
        }
        said_missing = false;
        let api = Api::<DynamicObject>::all_with(ctx.client.clone(), &report::resource());
        let mut events = relisting(api, config(Some(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}")))).boxed();
        while let Some(event) = events.next().await {
            let names = match event {
                Ok(event) => {
                    let relisted = ctx.reports.apply(&event, namespace_of, |r| {
                        ReportView::from_parts(&r.metadata, report::fingerprint(&r.data))
                    });
                    let listed = matches!(event, WatchEvent::InitDone);
                    let mut names = namespaced_triggers(&ctx, "Report", &event, relisted);
                    if listed && !ctx.reports_ready.swap(true, Ordering::AcqRel) {
                        info!("OpenReports CRD found: writing a Report in every governed namespace");
                        ctx.metrics.reports_enabled.set(1);
                        names = ctx.namespaces.state().iter().map(|ns| ns.name_any()).collect();
                    }
                    names
                }
                Err(e) if unavailable(&e) => {
                    warn!(error = %e, "Reports unavailable (the OpenReports CRD went away, or RBAC forbids them): running without Reports; looking again every 15 s");
                    ctx.reports_ready.store(false, Ordering::Release);
                    ctx.metrics.reports_enabled.set(0);
                    break;
                }
                Err(e) => {
                    ctx.watch_failed("Report", &e);
                    vec![]
                }
            };
            for name in names {
                if tx.send(Trigger::new(&name)).await.is_err() {
                    return;
                }
            }
        }
        // The watch ended (Reports unavailable): wait before looking again.
        tokio::time::sleep(RECHECK).await;
    }
}
