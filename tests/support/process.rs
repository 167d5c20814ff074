//! nsguard as its own process (the real binary, with leader election), for tests of leadership
//! and faults.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;

use super::operator::SHARD_LABEL;
use super::*;

pub struct Instance {
    pub name: &'static str,
    pub child: tokio::process::Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Instance {
    pub async fn spawn(name: &'static str, kubeconfig: &PathBuf, shard: &str, lease: &str, lease_seconds: u64) -> Self {
        Self::spawn_with(name, kubeconfig, shard, lease, lease_seconds, &[]).await
    }

    /// [`Instance::spawn`] with extra `nsguard run` flags.
    pub async fn spawn_with(
        name: &'static str,
        kubeconfig: &PathBuf,
        shard: &str,
        lease: &str,
        lease_seconds: u64,
        extra: &[&str],
    ) -> Self {
        let port = free_port();
        let log = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("target/test-kubeconfigs/{lease}-{name}.log"));
        let selector = format!("{SHARD_LABEL}={shard}");
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_nsguard"))
            .args(["run", "--log-format", "json", "--namespace", "nsguard-system", "--lease-name", lease])
            .args([
                "--lease-duration",
                &lease_seconds.to_string(),
                "--lease-renew-deadline",
                &(lease_seconds * 2 / 3).to_string(),
                "--lease-retry-period",
                "1",
            ])
            .args(["--identity", name, "--namespace-selector", &selector, "--profile-selector", &selector])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--metrics-address", &format!("127.0.0.1:{port}")])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn nsguard");
        let instance = Self { name, child, port, log };
        eventually(&format!("{name} to be ready (log: {})", instance.log.display()), || async {
            (http_get(port, "/readyz").await.map(|(code, _)| code) == Some(200)).then_some(())
        })
        .await;
        instance
    }

    pub async fn metrics(&self) -> String {
        http_get(self.port, "/metrics").await.map(|(_, body)| body).unwrap_or_default()
    }

    pub async fn sample(&self, prefix: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub async fn is_leader(&self) -> bool {
        self.sample("nsguard_leader ").await == 1.0
    }

    pub async fn writes(&self) -> f64 {
        self.sample("nsguard_write_requests_total{").await
    }
}
