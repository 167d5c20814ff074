//! Runs nsguard's controller in-process, with the identity and permissions `config/rbac` grants
//! (a token of ServiceAccount nsguard-system/nsguard), confined to one test's objects.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use nsguard::controller::{self, Handle, Settings};
use nsguard::core::selection::Exclusions;
use nsguard::ops::metrics::Metrics;

use super::*;

/// Label that ties namespaces and profiles to one test's controller.
pub const SHARD_LABEL: &str = "nsguard-test/shard";

pub struct Operator {
    /// The shard value: put `SHARD_LABEL: shard` on every namespace and profile of the test.
    pub shard: String,
    pub admin: Client,
    pub handle: Handle,
    pub metrics: Arc<Metrics>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Operator {
    fn drop(&mut self) {
        // Never told to stop, the controller ends only if a part of it stopped (or it panicked):
        // the test then ran without it, so it fails here if nothing failed it before.
        let ended = self.task.is_finished();
        self.task.abort();
        assert!(
            !ended || std::thread::panicking(),
            "nsguard's controller stopped by itself during the test (its panic is above)"
        );
    }
}

/// The client nsguard runs with in tests: ServiceAccount nsguard-system/nsguard, bound by
/// `config/rbac`.
pub async fn nsguard_client(admin: &Client) -> Client {
    let _ = install();
    client_as_service_account(admin, "nsguard-system", "nsguard").await
}

impl Operator {
    /// Starts a controller for a new shard and waits until its caches are synced.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Settings)) -> Self {
        Self::launch(unique_name("s"), tweak).await
    }

    /// Starts a controller for an existing `shard` (one an earlier, stopped controller served).
    pub async fn start_in(shard: String, tweak: impl FnOnce(&mut Settings)) -> Self {
        Self::launch(shard, tweak).await
    }

    /// Stops this controller and starts a new one on the same shard (a restart: memory is lost,
    /// the cluster keeps what nsguard wrote), and waits until its caches are synced.
    pub async fn restart(self) -> Self {
        let shard = self.shard.clone();
        drop(self);
        Self::launch(shard, |_| {}).await
    }

    async fn launch(shard: String, tweak: impl FnOnce(&mut Settings)) -> Self {
        if let Ok(filter) = std::env::var("NSGUARD_TEST_LOG") {
            let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        }
        let admin = admin_client().await;
        let client = nsguard_client(&admin).await;
        let selector = format!("{SHARD_LABEL}={shard}");
        let mut settings = Settings {
            exclusions: Exclusions::new(Some("nsguard-system"), false, &[]).expect("exclusions"),
            namespace_selector: Some(selector.clone()),
            profile_selector: Some(selector),
            status_interval: Duration::from_millis(200),
            instance: Some(format!("test-{shard}")),
            ..Settings::default()
        };
        tweak(&mut settings);
        let metrics = Arc::new(Metrics::default());
        let leader = nsguard::controller::leader::Leadership::unconditional();
        let (handle_tx, mut handle_rx) = tokio::sync::mpsc::unbounded_channel();
        let task_metrics = metrics.clone();
        let task = tokio::spawn(async move {
            let stopped = controller::run(client, settings, task_metrics, leader, std::future::pending(), move |h| {
                let _ = handle_tx.send(h);
            })
            .await;
            // Never told to stop: it ended by itself.
            panic!("controller stopped: {stopped:?}");
        });
        let handle = handle_rx.recv().await.expect("controller started");
        let ready = handle.clone();
        eventually("the controller's caches to sync", || {
            let ready = ready.clone();
            async move { ready.is_synced().then_some(()) }
        })
        .await;
        Self { shard, admin, handle, metrics, task }
    }

    /// Labels that put a namespace or profile in this controller's shard, plus `extra`.
    pub fn labels<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut labels = vec![(SHARD_LABEL, self.shard.as_str())];
        labels.extend_from_slice(extra);
        labels
    }

    /// Creates a namespace in this shard.
    pub async fn namespace(&self, prefix: &str, extra: &[(&str, &str)]) -> String {
        create_namespace(&self.admin, prefix, &self.labels(extra)).await
    }

    /// Creates (server-side applies, as a GitOps tool would) a profile in this shard from a spec.
    pub async fn profile(&self, name: &str, spec: serde_json::Value) -> String {
        apply_shard_profile(&self.admin, name, &self.shard, spec).await
    }

    /// How many drift corrections of `kind` this controller counted.
    pub fn corrections(&self, kind: &'static str) -> u64 {
        self.metrics.drift_corrected.get_or_create(&nsguard::ops::metrics::DriftLabels { kind }).get()
    }
}

pub fn profile_resource() -> kube::api::ApiResource {
    kube::api::ApiResource::erase::<nsguard::core::crd::HardeningProfile>(&())
}
