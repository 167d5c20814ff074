//! Support for integration tests against the local control plane (`make cluster-up`).
//!
//! Every test makes its own uniquely named namespaces, so tests run in parallel, and waits on
//! conditions with a deadline instead of sleeping. A test that needs the cluster fails, with a
//! message saying how to start it, when the cluster is absent.
#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// How long a test waits for a condition before failing.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The kubeconfig `make cluster-up` writes (or `$NSGUARD_KUBECONFIG`).
pub fn kubeconfig_path() -> PathBuf {
    std::env::var_os("NSGUARD_KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/cluster/kubeconfig")
        })
}

async fn admin_config() -> Config {
    let path = kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(&path).unwrap_or_else(|e| {
        panic!(
            "this test needs the local control plane, but {} cannot be read ({e}); \
             start it with `make cluster-up` (or run everything with `make test`)",
            path.display()
        )
    });
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("invalid kubeconfig {}: {e}", path.display()))
}

/// A client with the admin identity (`system:masters`).
pub async fn admin_client() -> Client {
    let client = Client::try_from(admin_config().await).expect("client from kubeconfig");
    // Fail fast, with a clear message, when the kubeconfig is stale (the cluster was stopped).
    if let Err(e) = client.apiserver_version().await {
        panic!(
            "the local control plane in {} does not answer ({e}); start it with `make cluster-up`",
            kubeconfig_path().display()
        );
    }
    client
}

/// A client that acts as ServiceAccount `namespace/name`, with a token from the TokenRequest API,
/// so code runs with exactly the permissions RBAC grants that ServiceAccount.
pub async fn client_as_service_account(admin: &Client, namespace: &str, name: &str) -> Client {
    let request = TokenRequest {
        metadata: ObjectMeta::default(),
        spec: Some(TokenRequestSpec {
            audiences: None,
            expiration_seconds: Some(3600),
            bound_object_ref: None,
        }),
        status: None,
    };
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), namespace)
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .expect("TokenRequest")
        .status
        .expect("TokenRequest status")
        .token
        .expect("token");
    let mut config = admin_config().await;
    config.auth_info = AuthInfo {
        token: Some(token.into()),
        ..Default::default()
    };
    Client::try_from(config).expect("client for ServiceAccount")
}

/// A name no other test (or earlier run) uses: `prefix-<unique suffix>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{prefix}-{:x}{:x}{n}",
        std::process::id() % 4096,
        nanos % 65536
    )
}

/// Creates a uniquely named namespace with the given labels and returns its name.
pub async fn create_namespace(client: &Client, prefix: &str, labels: &[(&str, &str)]) -> String {
    let name = unique_name(prefix);
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    name
}

/// Polls `check` until it returns `Some`, failing the test with `what` after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the controller-manager has created the `default` ServiceAccount in `namespace`.
pub async fn default_service_account(client: &Client, namespace: &str) -> ServiceAccount {
    let api = Api::<ServiceAccount>::namespaced(client.clone(), namespace);
    eventually(&format!("ServiceAccount {namespace}/default"), || async {
        api.get_opt("default").await.ok().flatten()
    })
    .await
}
