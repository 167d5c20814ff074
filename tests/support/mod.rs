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

/// nsguard's identity as the API server's audit log names it (`config/rbac`'s ServiceAccount).
pub const NSGUARD_USER: &str = "system:serviceaccount:nsguard-system:nsguard";

/// How long a test waits for a condition before failing.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The kubeconfig `make cluster-up` writes (or `$NSGUARD_KUBECONFIG`).
pub fn kubeconfig_path() -> PathBuf {
    std::env::var_os("NSGUARD_KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/cluster/kubeconfig"))
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
    let client = nsguard::ops::client::build(admin_config().await).expect("client from kubeconfig");
    // Fail fast, with a clear message, when the kubeconfig is stale (the cluster was stopped).
    if let Err(e) = client.apiserver_version().await {
        panic!(
            "the local control plane in {} does not answer ({e}); start it with `make cluster-up`",
            kubeconfig_path().display()
        );
    }
    client
}

/// A token for ServiceAccount `namespace/name`, from the TokenRequest API (valid for an hour).
pub async fn service_account_token(admin: &Client, namespace: &str, name: &str) -> String {
    let request = TokenRequest {
        metadata: ObjectMeta::default(),
        spec: Some(TokenRequestSpec { audiences: None, expiration_seconds: Some(3600), bound_object_ref: None }),
        status: None,
    };
    Api::<ServiceAccount>::namespaced(admin.clone(), namespace)
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .expect("TokenRequest")
        .status
        .and_then(|s| s.token)
        .expect("a token in the TokenRequest status")
}

/// A client that acts as ServiceAccount `namespace/name`, with a token from the TokenRequest API,
/// so code runs with exactly the permissions RBAC grants that ServiceAccount.
pub async fn client_as_service_account(admin: &Client, namespace: &str, name: &str) -> Client {
    let token = service_account_token(admin, namespace, name).await;
    let mut config = admin_config().await;
    config.auth_info = AuthInfo { token: Some(token.into()), ..Default::default() };
    nsguard::ops::client::build(config).expect("client for ServiceAccount")
}

/// A client acting as user `user` (the admin impersonates it): only the rights RBAC gives `user`.
pub async fn client_as_user(user: &str) -> Client {
    let mut config = admin_config().await;
    config.auth_info.impersonate = Some(user.to_owned());
    nsguard::ops::client::build(config).expect("client for user")
}

/// A client acting as user `user` in `groups` (the admin impersonates them).
pub async fn client_as_member(user: &str, groups: &[&str]) -> Client {
    let mut config = admin_config().await;
    config.auth_info.impersonate = Some(user.to_owned());
    config.auth_info.impersonate_groups = Some(groups.iter().map(|g| (*g).to_owned()).collect());
    nsguard::ops::client::build(config).expect("client for user in groups")
}

/// Binds `user` to the built-in `admin` ClusterRole in `namespace` only: a namespace owner.
pub async fn bind_namespace_admin(admin: &Client, namespace: &str, user: &str) {
    use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
    let binding = RoleBinding {
        metadata: ObjectMeta { name: Some(format!("owner-{user}")), ..Default::default() },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: "admin".into(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "User".into(),
            name: user.to_owned(),
            namespace: None,
        }]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), namespace)
        .create(&PostParams::default(), &binding)
        .await
        .expect("RoleBinding to admin");
}

/// A kubeconfig file (JSON, in the cluster's directory) acting as user `user`: the admin's, with
/// `as: user`, for programs run as a process.
pub fn kubeconfig_as_user(user: &str) -> PathBuf {
    let mut kubeconfig = Kubeconfig::read_from(kubeconfig_path()).expect("kubeconfig");
    for named in &mut kubeconfig.auth_infos {
        if let Some(info) = &mut named.auth_info {
            info.impersonate = Some(user.to_owned());
        }
    }
    let path = kubeconfig_path().with_file_name(format!("kubeconfig-{user}.json"));
    std::fs::write(&path, serde_json::to_vec(&kubeconfig).expect("kubeconfig json")).expect("write kubeconfig");
    path
}

/// Runs kubectl as user `user` (impersonated by the admin kubeconfig).
pub fn kubectl_as(user: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--as", user];
    all.extend_from_slice(args);
    kubectl(&all)
}

/// A name no other test (or earlier run) uses: `prefix-<unique suffix>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{:x}{:x}{n}", std::process::id() % 4096, nanos % 65536)
}

/// Creates a uniquely named namespace with the given labels and returns its name.
pub async fn create_namespace(client: &Client, prefix: &str, labels: &[(&str, &str)]) -> String {
    let name = unique_name(prefix);
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("create namespace");
    name
}

/// Polls `check` until it returns `Some`, failing the test with `what` after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(what, DEADLINE, check).await
}

/// [`eventually`] with a deadline of its own, for work that scales with a test's size.
pub async fn eventually_within<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < until, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the controller-manager has created the `default` ServiceAccount in `namespace`.
pub async fn default_service_account(client: &Client, namespace: &str) -> ServiceAccount {
    let api = Api::<ServiceAccount>::namespaced(client.clone(), namespace);
    eventually(&format!("ServiceAccount {namespace}/default"), || async { api.get_opt("default").await.ok().flatten() })
        .await
}

/// `kubectl` from the control plane's tool directory, with the test kubeconfig.
pub fn kubectl(args: &[&str]) -> std::process::Output {
    let path = kubeconfig_path();
    let bin = path.parent().map(|d| d.join("bin/kubectl")).unwrap_or_else(|| "kubectl".into());
    std::process::Command::new(&bin)
        .arg("--kubeconfig")
        .arg(&path)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()))
}

/// Installs nsguard (`config/default`: CRD, RBAC, namespace, Deployment) once per test binary,
/// with a plain `kubectl apply -k config/default`, and returns what kubectl printed. Client-side
/// apply is not safe to run concurrently on a fresh cluster, so every test goes through here.
pub fn install() -> &'static std::process::Output {
    static INSTALLED: std::sync::OnceLock<std::process::Output> = std::sync::OnceLock::new();
    INSTALLED.get_or_init(|| {
        let out = kubectl(&["apply", "-k", "config/default"]);
        assert!(out.status.success(), "kubectl apply -k config/default: {}", String::from_utf8_lossy(&out.stderr));
        let wait =
            kubectl(&["wait", "--for=condition=Established", "--timeout=60s", "crd/hardeningprofiles.nsguard.io"]);
        assert!(wait.status.success(), "CRD not established: {}", String::from_utf8_lossy(&wait.stderr));
        out
    })
}

/// The API server's audit log (every write, metadata level), written by `up.sh`.
pub fn audit_log_path() -> PathBuf {
    kubeconfig_path().parent().map(|d| d.join("logs/audit.log")).unwrap_or_default()
}

/// Requests the audit log records for `user`, from byte `offset` of the log on: every request of
/// nsguard's ServiceAccount, and every write of any user.
pub fn audited_requests(user: &str, offset: u64) -> Vec<serde_json::Value> {
    use std::io::{BufRead, Seek};
    let path = audit_log_path();
    let mut file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("audit log {}: {e}", path.display()));
    file.seek(std::io::SeekFrom::Start(offset)).expect("seek");
    std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(&line).ok())
        .filter(|e| e["user"]["username"] == user && e["stage"] == "ResponseComplete")
        .collect()
}

/// Whether an audit event is a write (a dry-run persists nothing: not a write).
pub fn is_write(event: &serde_json::Value) -> bool {
    matches!(event["verb"].as_str(), Some("create" | "update" | "patch" | "delete" | "deletecollection"))
        && !is_dry_run(event)
}

/// Whether an audit event is a dry-run request.
pub fn is_dry_run(event: &serde_json::Value) -> bool {
    event["requestURI"].as_str().is_some_and(|uri| uri.contains("dryRun="))
}

/// Write requests (create/update/patch/delete) the audit log records for `user` from `offset` on.
pub fn audited_writes(user: &str, offset: u64) -> Vec<serde_json::Value> {
    audited_requests(user, offset).into_iter().filter(is_write).collect()
}

/// The audit log's current length: pass it to [`audited_writes`] to see what comes after.
pub fn audit_log_offset() -> u64 {
    std::fs::metadata(audit_log_path()).map(|m| m.len()).unwrap_or(0)
}

/// The sum of the API server's `apiserver_request_total` samples matching `filter`.
pub async fn apiserver_requests(client: &kube::Client, filter: impl Fn(&str) -> bool) -> f64 {
    let request = http::Request::get("/metrics").body(Vec::new()).expect("request");
    let text = client.request_text(request).await.expect("apiserver /metrics");
    text.lines()
        .filter(|l| l.starts_with("apiserver_request_total{") && filter(l))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Writes a kubeconfig that authenticates as ServiceAccount `namespace/name` (a TokenRequest
/// token), for running the `nsguard` binary with exactly that ServiceAccount's permissions.
pub async fn service_account_kubeconfig(admin: &Client, namespace: &str, name: &str) -> PathBuf {
    service_account_kubeconfig_via(admin, namespace, name, None).await
}

/// The API server's address, from the test kubeconfig.
pub fn api_server_address() -> std::net::SocketAddr {
    let config: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(kubeconfig_path()).expect("kubeconfig")).expect("yaml");
    let server = config["clusters"][0]["cluster"]["server"].as_str().expect("server").to_owned();
    server.trim_start_matches("https://").parse().expect("host:port")
}

/// [`service_account_kubeconfig`], reaching the API server at `server` (say, through a proxy).
pub async fn service_account_kubeconfig_via(
    admin: &Client,
    namespace: &str,
    name: &str,
    server: Option<String>,
) -> PathBuf {
    let token = service_account_token(admin, namespace, name).await;
    let admin_config: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(kubeconfig_path()).expect("kubeconfig")).expect("yaml");
    let cluster = &admin_config["clusters"][0]["cluster"];
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": {
            "server": server.as_deref().or(cluster["server"].as_str()),
            "certificate-authority-data": cluster["certificate-authority-data"].as_str(),
        }}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": name}}],
        "current-context": "sa",
    });
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-kubeconfigs");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let path = dir.join(format!("{}.yaml", unique_name(name)));
    std::fs::write(&path, serde_json::to_string(&kubeconfig).expect("json")).expect("write kubeconfig");
    path
}

/// A plain HTTP/1.0 GET on loopback: (status code, body), or None when nothing answers.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}

/// A free port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}
pub mod churn;
pub mod operator;
pub mod process;
pub mod proxy;

pub use nsguard::core::announce::event_namespace;

/// A Pod that passes Pod Security `restricted`, running as `service_account`, with
/// `automountServiceAccountToken` set to `mount_token` (or left unset).
pub fn restricted_pod(name: &str, service_account: &str, mount_token: Option<bool>) -> k8s_openapi::api::core::v1::Pod {
    let mut pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "serviceAccountName": service_account,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}],
        }
    });
    if let Some(mount) = mount_token {
        pod["spec"]["automountServiceAccountToken"] = serde_json::json!(mount);
    }
    serde_json::from_value(pod).expect("pod")
}

/// Events nsguard published about namespace `ns`, wherever they live.
pub async fn nsguard_events(client: &Client, ns: &str) -> Vec<k8s_openapi::api::events::v1::Event> {
    Api::<k8s_openapi::api::events::v1::Event>::all(client.clone())
        .list(&Default::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("nsguard") && event_namespace(e) == Some(ns))
        .collect()
}

/// The local control plane's state directory (holds `pids`, `logs/`, `kubeconfig`).
pub fn cluster_dir() -> PathBuf {
    kubeconfig_path().parent().map(PathBuf::from).unwrap_or_default()
}

/// A control-plane component killed by [`stop_component`], to be started again by [`start_component`].
pub struct Stopped {
    name: String,
    argv: Vec<String>,
}

/// Kills control-plane component `name` (as `up.sh` recorded it: `etcd`, `kube-apiserver`, ...)
/// with SIGKILL and waits until it is gone.
pub async fn stop_component(name: &str) -> Stopped {
    let pids_path = cluster_dir().join("pids");
    let pids = std::fs::read_to_string(&pids_path).unwrap_or_else(|e| panic!("{}: {e}", pids_path.display()));
    let line = pids
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("{name} is not in {}", pids_path.display()));
    let pid: u32 = line.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("pid");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("the component's command line");
    let argv: Vec<String> =
        cmdline.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let status = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().expect("kill");
    assert!(status.success(), "kill -KILL {pid}");
    eventually(&format!("{name} (pid {pid}) to exit"), || async {
        (!std::path::Path::new(&format!("/proc/{pid}/exe")).exists()).then_some(())
    })
    .await;
    Stopped { name: name.to_owned(), argv }
}

/// Starts a stopped component again with exactly the same command line, recording the new pid so
/// `down.sh` still stops it.
pub fn start_component(stopped: Stopped) {
    let Stopped { name, argv } = stopped;
    let log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(cluster_dir().join(format!("logs/{name}.log")))
        .expect("log");
    let child = std::process::Command::new("setsid")
        .args(&argv)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("restarting {name}: {e}"));
    let new_pid = child.id();
    // Detach: the component outlives this test process, and down.sh stops it.
    std::mem::forget(child);
    let pids_path = cluster_dir().join("pids");
    let pids = std::fs::read_to_string(&pids_path).expect("pids");
    let updated: String = pids
        .lines()
        .map(|l| {
            let mut fields = l.split_whitespace();
            match (fields.next(), fields.next(), fields.next()) {
                (Some(n), Some(_), Some(binary)) if n == name => format!("{n} {new_pid} {binary}\n"),
                _ => format!("{l}\n"),
            }
        })
        .collect();
    std::fs::write(&pids_path, updated).expect("update pids");
}

/// Records a measured figure in `target/measurements/NAME.txt` (for RELIABILITY.md), never asserted.
pub fn record_figure(name: &str, value: impl std::fmt::Display) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/measurements");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(format!("{name}.txt")), format!("{value}\n"));
    eprintln!("measured {name}: {value}");
}

/// Records how long something took, in seconds (see [`record_figure`]).
pub fn record(name: &str, value: Duration) {
    record_figure(name, format!("{:.2}", value.as_secs_f64()));
}

/// Peak resident memory (VmHWM) of process `pid`, in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .expect("VmHWM")
}

/// Server-side applies (as a GitOps tool would) the HardeningProfile `PREFIX-SHARD`, labelled into
/// `shard`, with `spec`; returns its name.
pub async fn apply_shard_profile(admin: &Client, prefix: &str, shard: &str, spec: serde_json::Value) -> String {
    let name = format!("{prefix}-{shard}");
    let profile = serde_json::json!({
        "apiVersion": "nsguard.io/v1alpha1",
        "kind": "HardeningProfile",
        "metadata": {"name": name, "labels": {operator::SHARD_LABEL: shard}},
        "spec": spec,
    });
    Api::<kube::api::DynamicObject>::all_with(admin.clone(), &operator::profile_resource())
        .patch(&name, &kube::api::PatchParams::apply("gitops").force(), &kube::api::Patch::Apply(&profile))
        .await
        .unwrap_or_else(|e| panic!("applying profile {name}: {e}"));
    name
}

/// The namespace's `nsguard.io/Hardened` condition, read as `client`.
pub async fn hardened(client: &Client, ns: &str) -> Option<k8s_openapi::api::core::v1::NamespaceCondition> {
    let namespace = Api::<Namespace>::all(client.clone()).get(ns).await.expect("get namespace");
    namespace.status?.conditions?.into_iter().find(|c| c.type_ == "nsguard.io/Hardened")
}

/// Waits until the namespace's `nsguard.io/Hardened` condition has `status` and `reason`.
pub async fn wait_condition(
    client: &Client,
    ns: &str,
    status: &str,
    reason: &str,
) -> k8s_openapi::api::core::v1::NamespaceCondition {
    eventually(&format!("{ns}: nsguard.io/Hardened={status}/{reason}"), || async {
        hardened(client, ns).await.filter(|c| c.status == status && c.reason.as_deref() == Some(reason))
    })
    .await
}
