//! `make bench`: nsguard at 1,000 to 10,000 namespaces on the local control plane.
//!
//! nsguard runs as its own process (the release binary) with the ServiceAccount token `config/rbac`
//! grants, so API Priority and Fairness treats it as in production. An admin-side watcher observes
//! when each namespace becomes compliant (PSA labels, both NetworkPolicies, the `default`
//! ServiceAccount's token off, the `nsguard.io/Hardened` condition True and the `nsguard` Report —
//! what namespace owners read). The API server's audit log attributes every request to nsguard's
//! identity. Writes `target/bench/report.json` and `target/bench/report.md`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Client, ResourceExt};
use nsguard::controller::events::{EventQueue, Pending, Publisher};
use nsguard::core::announce::{self, Announcement, Severity, Subject};
use nsguard::core::drift::Drift;
use nsguard::core::ids::uid;
use serde_json::{Value, json};
use support::*;
use tokio::sync::{Notify, Semaphore};

/// nsguard's resync period, as its default (`--resync-seconds`), passed to it explicitly.
const RESYNC: Duration = Duration::from_secs(1800);

const RESTRICTED: [(&str, &str); 6] = [
    ("pod-security.kubernetes.io/enforce", "restricted"),
    ("pod-security.kubernetes.io/enforce-version", "latest"),
    ("pod-security.kubernetes.io/audit", "restricted"),
    ("pod-security.kubernetes.io/audit-version", "latest"),
    ("pod-security.kubernetes.io/warn", "restricted"),
    ("pod-security.kubernetes.io/warn-version", "latest"),
];

/// nsguard's scale benchmark.
#[derive(Parser, Debug, Clone)]
struct Args {
    /// Namespaces in the burst (and in the floor).
    #[arg(long, default_value_t = 1000)]
    namespaces: usize,
    /// Scenarios to run (comma-separated): burst, floor, steady, drift, fanout, held, restart, guard,
    /// memory.
    #[arg(long, value_delimiter = ',', default_value = "burst,floor,steady,drift,fanout,held,restart,guard,memory")]
    scenarios: Vec<String>,
    /// Drift events in the drift scenario.
    #[arg(long, default_value_t = 200)]
    drift_events: usize,
    /// Length of the steady-state window.
    #[arg(long, default_value_t = 60)]
    steady_seconds: u64,
    /// Total namespaces for the second memory reading (each with 3 ServiceAccounts).
    #[arg(long, default_value_t = 10_000)]
    memory_namespaces: usize,
    /// Namespaces the rollout gate holds in the `held` scenario (each has a pod running as root).
    #[arg(long, default_value_t = 50)]
    held_namespaces: usize,
    /// nsguard's --enforce-recheck-seconds (how often a held namespace is checked again).
    #[arg(long, default_value_t = 5)]
    recheck_seconds: u64,
    /// Length of the `held` scenario's window.
    #[arg(long, default_value_t = 30)]
    held_seconds: u64,
    /// nsguard's --concurrency, and the floor client's.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Namespaces created at once (by the "users" of the burst and the floor alike).
    #[arg(long, default_value_t = 32)]
    create_concurrency: usize,
    /// Namespaces hardened (then deleted) before the burst, not counted: see `Bench::warm_up`. Not
    /// with the memory scenario.
    #[arg(long, default_value_t = 100)]
    warm_up: usize,
    /// Install the tamper guard (config/guard) before the scenarios run: the burst and the floor
    /// then measure with it in force (the `guard` scenario measures its cost separately).
    #[arg(long)]
    guard_installed: bool,
    /// Burst-and-floor pairs, each on new namespaces: the burst's latency ratios and floor_ratio
    /// then pool every round's namespaces (one pair's p50 ratio moves by ±0.2 between runs on this
    /// machine). The later scenarios take every round's namespaces. Not with `memory`.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=20))]
    rounds: u16,
    /// Where to write report.json and report.md.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Ignored (cargo bench passes it).
    #[arg(long, hide = true)]
    bench: bool,
}

impl Args {
    fn runs(&self, scenario: &str) -> bool {
        self.scenarios.iter().any(|s| s == scenario)
    }
}

// ---------------------------------------------------------------------------------------------
// Compliance, as an outside observer sees it.

#[derive(Default)]
struct NsState {
    created: Option<Instant>,
    labels_ok: bool,
    policies: std::collections::BTreeSet<String>,
    default_sa_exists: bool,
    default_sa_ok: bool,
    /// The namespace's `nsguard.io/Hardened` condition is True.
    hardened: bool,
    /// The `nsguard` Report exists.
    report: bool,
    /// The namespace's `pod-security.kubernetes.io/warn` label.
    warn: Option<String>,
    /// (when, compliant) each time compliance changed.
    transitions: Vec<(Instant, bool)>,
}

impl NsState {
    fn compliant(&self) -> bool {
        self.labels_ok
            && self.policies.contains("nsguard-default-deny")
            && self.policies.contains("nsguard-allow-dns")
            && self.default_sa_ok
            && self.hardened
            && self.report
    }
    fn compliant_since(&self) -> Option<Instant> {
        match self.transitions.last() {
            Some((t, true)) => Some(*t),
            _ => None,
        }
    }
}

#[derive(Default)]
struct Observer {
    states: Mutex<HashMap<String, NsState>>,
    changed: Notify,
}

impl Observer {
    fn update(&self, ns: &str, f: impl FnOnce(&mut NsState)) {
        let mut states = self.states.lock().expect("lock");
        let state = states.entry(ns.to_owned()).or_default();
        let before = state.compliant();
        f(state);
        let after = state.compliant();
        if before != after || state.transitions.is_empty() {
            state.transitions.push((Instant::now(), after));
        }
        drop(states);
        self.changed.notify_waiters();
    }

    fn with<T>(&self, ns: &str, f: impl FnOnce(Option<&NsState>) -> T) -> T {
        f(self.states.lock().expect("lock").get(ns))
    }

    /// Waits until `pred` holds for every name, or the deadline passes. Cheap while waiting: each
    /// look checks only the names not yet seen to hold it, and looks are at least 20 ms apart. A
    /// look over every name on every change kept 0.2–0.35 of a core busy through nsguard's burst
    /// and fan-out at 10,000 namespaces — on a machine the API server saturates, and only while nsguard
    /// worked: the floors wait after their writes. (Durations come from the recorded transitions or
    /// from the return, 20 ms at most late for either side.)
    async fn wait_all(&self, names: &[String], what: &str, deadline: Duration, pred: impl Fn(&NsState) -> bool) {
        let end = Instant::now() + deadline;
        let mut remaining: Vec<&String> = names.iter().collect();
        loop {
            let notified = self.changed.notified();
            {
                let states = self.states.lock().expect("lock");
                remaining.retain(|n| !states.get(*n).is_some_and(&pred));
                if remaining.is_empty() {
                    // Each was seen to hold it: confirm they all hold it at once.
                    remaining = names.iter().filter(|n| !states.get(*n).is_some_and(&pred)).collect();
                    if remaining.is_empty() {
                        return;
                    }
                }
            }
            let missing = remaining.len();
            assert!(Instant::now() < end, "timed out waiting for {what}: {missing} of {} not there", names.len());
            let _ = tokio::time::timeout(Duration::from_millis(500), notified).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn start_observer(client: Client, run: &str) -> Arc<Observer> {
    let observer = Arc::new(Observer::default());
    let o = observer.clone();
    let ns_api = Api::<Namespace>::all(client.clone());
    let selector = format!("bench-run={run}");
    tokio::spawn(async move {
        let stream = watcher(ns_api, watcher::Config::default().labels(&selector));
        futures::pin_mut!(stream);
        while let Some(Ok(event)) = stream.next().await {
            if let Event::Apply(ns) | Event::InitApply(ns) = event {
                let ok = RESTRICTED.iter().all(|(k, v)| ns.labels().get(*k).map(String::as_str) == Some(*v));
                let hardened = ns
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "nsguard.io/Hardened" && c.status == "True"));
                let warn = ns.labels().get("pod-security.kubernetes.io/warn").cloned();
                o.update(&ns.name_any(), |s| {
                    s.labels_ok = ok;
                    s.hardened = hardened;
                    s.warn = warn;
                });
            }
        }
    });
    let o = observer.clone();
    let np_api = Api::<NetworkPolicy>::all(client.clone());
    tokio::spawn(async move {
        let stream = watcher(np_api, watcher::Config::default().labels("app.kubernetes.io/managed-by=nsguard"));
        futures::pin_mut!(stream);
        while let Some(Ok(event)) = stream.next().await {
            match event {
                Event::Apply(np) | Event::InitApply(np) => {
                    o.update(&np.namespace().unwrap_or_default(), |s| {
                        s.policies.insert(np.name_any());
                    });
                }
                Event::Delete(np) => {
                    o.update(&np.namespace().unwrap_or_default(), |s| {
                        s.policies.remove(&np.name_any());
                    });
                }
                _ => {}
            }
        }
    });
    let o = observer.clone();
    let report_api = Api::<DynamicObject>::all_with(client.clone(), &nsguard::core::report::resource());
    tokio::spawn(async move {
        // nsguard's Reports and the floor's (which carries its own manager label: nsguard must not
        // take it for one of its own in a namespace it does not govern).
        let stream = watcher(report_api, watcher::Config::default().fields("metadata.name=nsguard"));
        futures::pin_mut!(stream);
        while let Some(Ok(event)) = stream.next().await {
            match event {
                Event::Apply(r) | Event::InitApply(r) => {
                    o.update(&r.namespace().unwrap_or_default(), |s| s.report = true)
                }
                Event::Delete(r) => o.update(&r.namespace().unwrap_or_default(), |s| s.report = false),
                _ => {}
            }
        }
    });
    let o = observer.clone();
    let sa_api = Api::<ServiceAccount>::all(client);
    tokio::spawn(async move {
        let stream = watcher(sa_api, watcher::Config::default().fields("metadata.name=default"));
        futures::pin_mut!(stream);
        while let Some(Ok(event)) = stream.next().await {
            if let Event::Apply(sa) | Event::InitApply(sa) = event {
                let off = sa.automount_service_account_token == Some(false);
                o.update(&sa.namespace().unwrap_or_default(), |s| {
                    s.default_sa_exists = true;
                    s.default_sa_ok = off;
                });
            }
        }
    });
    observer
}

// ---------------------------------------------------------------------------------------------
// The nsguard process.

struct Nsguard {
    /// nsguard, or the wrapper that runs it (`NSGUARD_BENCH_WRAPPER`).
    child: tokio::process::Child,
    /// nsguard's own process (under a wrapper, found among the child's descendants).
    pid: u32,
    port: u16,
}

impl Drop for Nsguard {
    /// Not stopped (a scenario panicked): nsguard goes too, not only a wrapper (which
    /// `kill_on_drop` kills, and which does not pass a signal on: an nsguard left running would be
    /// a second writer in the next run's cluster).
    fn drop(&mut self) {
        if self.child.id().is_some() && is_nsguard(self.pid) {
            let _ = std::process::Command::new("kill").args(["-KILL", &self.pid.to_string()]).status();
        }
    }
}

/// `pid` runs the nsguard binary under test.
fn is_nsguard(pid: u32) -> bool {
    let binary = std::fs::canonicalize(env!("CARGO_BIN_EXE_nsguard")).ok();
    binary.is_some() && std::fs::read_link(format!("/proc/{pid}/exe")).ok() == binary
}

/// The fields of `/proc/PID/stat` after the command name (the state is field 0, the parent's pid
/// field 1); empty if the process is gone.
fn stat_fields(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().map(str::to_owned).collect()).unwrap_or_default()
}

/// The nsguard process under `root` (itself, or a descendant a few levels down).
fn nsguard_under(root: u32) -> Option<u32> {
    let parent = |pid: u32| -> Option<u32> { stat_fields(pid).get(1)?.parse().ok() };
    std::fs::read_dir("/proc").ok()?.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()).find(|&pid| {
        is_nsguard(pid)
            && std::iter::successors(Some(pid), |&p| parent(p).filter(|&q| q > 1)).take(8).any(|p| p == root)
    })
}

impl Nsguard {
    async fn start(kubeconfig: &PathBuf, args: &Args, log: &PathBuf) -> (Self, Duration) {
        let port = free_port();
        let started = Instant::now();
        // NSGUARD_BENCH_WRAPPER runs nsguard under a profiler, e.g. `heaptrack -o target/bench/heap`
        // (CPU and RSS are still read from nsguard's own process, the profiler's in-process part
        // included).
        let wrapper: Vec<String> =
            std::env::var("NSGUARD_BENCH_WRAPPER").unwrap_or_default().split_whitespace().map(str::to_owned).collect();
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = tokio::process::Command::new(program);
                c.args(args).arg(env!("CARGO_BIN_EXE_nsguard"));
                c
            }
            None => tokio::process::Command::new(env!("CARGO_BIN_EXE_nsguard")),
        };
        let child = command
            .args(["run", "--log-format", "json", "--namespace", "nsguard-system", "--identity", "bench"])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--metrics-address", &format!("127.0.0.1:{port}"), "--concurrency", &args.concurrency.to_string()])
            .args(["--enforce-recheck-seconds", &args.recheck_seconds.to_string()])
            .args(["--resync-seconds", &RESYNC.as_secs().to_string()])
            .env("NSGUARD_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log"))
            .kill_on_drop(true)
            .spawn()
            .expect("start nsguard");
        let root = child.id().expect("started");
        let mut me = Self { child, pid: root, port };
        let end = Instant::now() + Duration::from_secs(120);
        while http_get(port, "/readyz").await.map(|(c, _)| c) != Some(200) {
            assert!(Instant::now() < end, "nsguard not ready after 120 s; see {}", log.display());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !wrapper.is_empty() {
            me.pid = nsguard_under(root).expect("nsguard under its wrapper");
        }
        (me, started.elapsed())
    }

    /// Stops nsguard itself; a wrapper ends when it has (a profiler writes its data out first).
    async fn stop(mut self) {
        if self.child.id().is_some() {
            let _ = std::process::Command::new("kill").args(["-TERM", &self.pid.to_string()]).status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
    }

    fn pid(&self) -> u32 {
        self.pid
    }

    /// CPU seconds (user + system) so far.
    fn cpu_seconds(&self) -> f64 {
        let fields = stat_fields(self.pid());
        let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
            + fields.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        ticks / clock_ticks()
    }

    /// (current RSS, peak RSS) in MiB.
    fn memory_mib(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let kib = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
    }

    /// The sum of the samples of metric `prefix` (e.g. `nsguard_reconciles_total{`) whose labels
    /// include `label` (e.g. `resource="serviceaccounts"`, or "" for all).
    async fn metric_with(&self, prefix: &str, label: &str) -> f64 {
        let body = http_get(self.port, "/metrics").await.map(|(_, b)| b).unwrap_or_default();
        body.lines()
            .filter(|l| l.starts_with(prefix) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    async fn metric(&self, prefix: &str) -> f64 {
        self.metric_with(prefix, "").await
    }

    /// Waits until nsguard has written nothing for 2 s (at most a minute; says so if it never was).
    /// Before a restart, and between the fan-out's nsguard round and its floor's.
    async fn settle(&self) {
        self.quiet("nsguard_write_requests_total{", 0.0, "writing").await;
    }

    /// Waits until nsguard is back to its background rate of reconciles (at most a minute): after
    /// the fan-out's floor, whose writes nsguard watches and reconciles, before nsguard's next round
    /// is counted. The background is the resync backstop, which looks at every one of the cluster's
    /// `namespaces` once per `RESYNC` (11 a second at 20,000): idle is at most that, doubled, plus
    /// 20, in 2 s.
    async fn idle(&self, namespaces: usize) {
        let resync_per_2s = 2.0 * namespaces as f64 / RESYNC.as_secs_f64();
        self.quiet("nsguard_reconciles_total{", 20.0 + 2.0 * resync_per_2s, "reconciling").await;
    }

    /// Waits until the counter `prefix` has risen by at most `slack` in 2 s (at most a minute).
    async fn quiet(&self, prefix: &str, slack: f64, doing: &str) {
        let end = Instant::now() + Duration::from_secs(60);
        let mut count = self.metric(prefix).await;
        let mut quiet = Instant::now();
        while quiet.elapsed() < Duration::from_secs(2) {
            if Instant::now() >= end {
                eprintln!("warning: nsguard kept {doing} for a minute; what follows starts unsettled");
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = self.metric(prefix).await;
            if now - count > slack {
                (count, quiet) = (now, Instant::now());
            }
        }
        assert!(count > 0.0, "nsguard's counter {prefix} could not be read");
    }
}

/// The bench profile: every `bench=nsguard` namespace, restricted, with `warn` at `warn`.
async fn set_bench_profile(admin: &Client, warn: &str) {
    let profile = json!({"apiVersion": "nsguard.io/v1alpha1", "kind": "HardeningProfile",
        "metadata": {"name": "bench-restricted"},
        "spec": {"namespaceSelector": {"matchLabels": {"bench": "nsguard"}}, "podSecurity": {"warn": {"level": warn}}}});
    Api::<DynamicObject>::all_with(admin.clone(), &support::operator::profile_resource())
        .patch("bench-restricted", &PatchParams::apply("bench").force(), &Patch::Apply(&profile))
        .await
        .expect("profile");
}

/// The figures under stable keys (`burst.p50_ratio`, `memory.rss_mib_10k`, `burst10k.floor_ratio`,
/// `fanout10k.floor_ratio`, `startup10k.ready_s`, …). A run at 10,000 namespaces adds its `*10k`
/// keys to the figures an earlier run left in `path`, and the other way round, so one report.json
/// carries both the 1,000 and the 10,000 runs.
fn stable_keys(args: &Args, path: &PathBuf, run: &serde_json::Map<String, Value>) -> serde_json::Map<String, Value> {
    let mut report: serde_json::Map<String, Value> =
        std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
    let big = args.namespaces >= 10_000;
    for (k, v) in run {
        let key = match k.as_str() {
            "burst"
            | "fanout"
            | "floor"
            | "floor_ratio"
            | "restart"
            | "steady_state"
            | "steady_state_writes"
            | "drift"
                if big =>
            {
                format!("{k}10k")
            }
            _ => k.clone(),
        };
        report.insert(key, v.clone());
    }
    if let Some(r) = run.get("restart").filter(|_| big) {
        report.insert(
            "startup10k".into(),
            json!({"ready_s": r["seconds_to_ready"], "writes": r["writes"], "peak_rss_mib": r["peak_rss_mib"],
                "namespaces": r["namespaces"], "ready_plus_full_reconcile_s": r["ready_plus_full_reconcile_seconds"]}),
        );
    }
    if let Some(readings) = run.get("memory").and_then(Value::as_array) {
        let mut memory = report.get("memory").and_then(Value::as_object).cloned().unwrap_or_default();
        for r in readings {
            let n = r["namespaces"].as_u64().unwrap_or(0);
            let key = match n {
                1_000 => "rss_mib_1k",
                10_000 => "rss_mib_10k",
                _ => continue,
            };
            memory.insert(key.into(), r["peak_rss_mib"].clone());
        }
        memory.insert("readings".into(), json!(readings));
        report.insert("memory".into(), Value::Object(memory));
    }
    report
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(mut seconds: Vec<f64>) -> Value {
    seconds.sort_by(|a, b| a.total_cmp(b));
    json!({
        "count": seconds.len(),
        "p50_ms": (percentile(&seconds, 50.0) * 1000.0).round() as u64,
        "p95_ms": (percentile(&seconds, 95.0) * 1000.0).round() as u64,
        "p99_ms": (percentile(&seconds, 99.0) * 1000.0).round() as u64,
        "max_ms": (seconds.last().copied().unwrap_or(0.0) * 1000.0).round() as u64,
    })
}

/// The burst's p50 and p99 latencies ÷ the floor's, from two [`summary`]s.
fn latency_ratios(burst: &Value, floor: &Value) -> (f64, f64) {
    let ratio = |k: &str| burst[k].as_f64().unwrap_or(0.0) / floor[k].as_f64().unwrap_or(1.0).max(1.0);
    (ratio("p50_ms"), ratio("p99_ms"))
}

/// nsguard's writes per namespace since `offset`, by resource (`namespaces/status`, `reports`, ...).
fn nsguard_writes_per_namespace(offset: u64, namespaces: usize) -> BTreeMap<String, f64> {
    let mut by: BTreeMap<String, f64> = BTreeMap::new();
    for e in audited_requests(NSGUARD_USER, offset).iter().filter(|e| is_write(e)) {
        let r = &e["objectRef"];
        let resource = match r["subresource"].as_str() {
            Some(sub) => format!("{}/{sub}", r["resource"].as_str().unwrap_or_default()),
            None => r["resource"].as_str().unwrap_or_default().to_owned(),
        };
        *by.entry(resource).or_default() += 1.0 / namespaces as f64;
    }
    by
}

/// nsguard's requests in the audit log from `offset`: (all but leases, writes but leases, leases).
fn nsguard_requests(offset: u64) -> (usize, usize, usize) {
    let events = audited_requests(NSGUARD_USER, offset);
    let lease = |e: &Value| e["objectRef"]["resource"] == "leases";
    let all = events.iter().filter(|e| !lease(e)).count();
    let writes = events.iter().filter(|e| !lease(e) && is_write(e)).count();
    let leases = events.iter().filter(|e| lease(e)).count();
    (all, writes, leases)
}

async fn create_namespaces(
    client: &Client,
    names: &[String],
    labels: &[(&str, &str)],
    concurrency: usize,
    observer: &Observer,
) {
    let api = Api::<Namespace>::all(client.clone());
    let labels: BTreeMap<String, String> = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    futures::stream::iter(names.iter().cloned())
        .map(|name| {
            let api = api.clone();
            let labels = labels.clone();
            async move {
                let ns = Namespace {
                    metadata: ObjectMeta { name: Some(name.clone()), labels: Some(labels), ..Default::default() },
                    ..Default::default()
                };
                api.create(&PostParams::default(), &ns).await.map(|_| name)
            }
        })
        .buffer_unordered(concurrency)
        .try_for_each(|name| async move {
            observer.update(&name, |s| s.created = Some(Instant::now()));
            Ok(())
        })
        .await
        .expect("create namespaces");
}

async fn create_service_accounts(client: &Client, namespaces: &[String], per_namespace: usize, concurrency: usize) {
    let jobs: Vec<(String, String)> =
        namespaces.iter().flat_map(|ns| (1..=per_namespace).map(move |i| (ns.clone(), format!("app-{i}")))).collect();
    futures::stream::iter(jobs)
        .map(|(ns, name)| {
            let api = Api::<ServiceAccount>::namespaced(client.clone(), &ns);
            async move {
                let sa = ServiceAccount {
                    metadata: ObjectMeta { name: Some(name), ..Default::default() },
                    ..Default::default()
                };
                api.create(&PostParams::default(), &sa).await.map(|_| ())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await
        .expect("create service accounts");
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

struct Bench {
    args: Args,
    admin: Client,
    nsguard_client: Client,
    kubeconfig: PathBuf,
    observer: Arc<Observer>,
    run: String,
    log: PathBuf,
    report: serde_json::Map<String, Value>,
    burst_names: Vec<String>,
    floor_names: Vec<String>,
    /// The burst-and-floor round under way (`--rounds`), and what the finished ones left.
    round: u16,
    rounds: Vec<Round>,
}

/// One finished burst-and-floor round: its namespaces and report entries.
struct Round {
    burst_names: Vec<String>,
    floor_names: Vec<String>,
    burst: Value,
    floor: Value,
}

impl Bench {
    /// Part of the names of a round's namespaces after the first.
    fn round_tag(&self) -> String {
        if self.round == 0 { String::new() } else { format!("{}-", self.round) }
    }

    /// Keeps a finished round's namespaces and report entries.
    fn keep_round(&mut self) {
        self.rounds.push(Round {
            burst_names: self.burst_names.clone(),
            floor_names: self.floor_names.clone(),
            burst: self.report.get("burst").cloned().unwrap_or(Value::Null),
            floor: self.report.get("floor").cloned().unwrap_or(Value::Null),
        });
    }

    /// After more than one round with both sides: the burst's `floor_ratio` (total seconds over
    /// all rounds) and latency ratios (every round's namespaces pooled), each round's kept.
    fn pool_rounds(&mut self) {
        if self.rounds.len() < 2 || self.rounds.iter().any(|r| r.burst.is_null() || r.floor.is_null()) {
            return;
        }
        let all = |names: fn(&Round) -> &Vec<String>| -> Vec<String> {
            self.rounds.iter().flat_map(|r| names(r).iter().cloned()).collect()
        };
        let (burst_all, floor_all) = (all(|r| &r.burst_names), all(|r| &r.floor_names));
        let (b, f) = (summary(self.latencies(&burst_all).0), summary(self.latencies(&floor_all).0));
        let total = |side: fn(&Round) -> &Value| {
            self.rounds.iter().map(|r| side(r)["seconds"].as_f64().unwrap_or(0.0)).sum::<f64>()
        };
        let floor_ratio = total(|r| &r.burst) / total(|r| &r.floor);
        let each: Vec<Value> = self
            .rounds
            .iter()
            .map(|r| {
                json!({"seconds": r.burst["seconds"], "floor_seconds": r.floor["seconds"], "floor_ratio": r.burst["floor_ratio"],
                    "p50_ratio": r.burst["p50_ratio"], "p99_ratio": r.burst["p99_ratio"]})
            })
            .collect();
        let (p50, p99) = latency_ratios(&b, &f);
        // Each round's ratios compare the two sides under the same load; pooled percentiles can take
        // the burst's tail from one round and the floor's from another.
        let median = |key: &str| {
            let mut v: Vec<f64> = each.iter().filter_map(|r| r[key].as_f64()).collect();
            v.sort_by(|a, b| a.total_cmp(b));
            percentile(&v, 50.0)
        };
        let medians = json!({"floor_ratio": median("floor_ratio"), "p50_ratio": median("p50_ratio"), "p99_ratio": median("p99_ratio")});
        println!(
            "{} rounds pooled: floor_ratio {floor_ratio:.2}, burst latency ÷ floor latency: p50 {p50:.2}, p99 {p99:.2}; median of the rounds' ratios: {medians}",
            self.rounds.len()
        );
        if let Some(burst) = self.report.get_mut("burst").and_then(Value::as_object_mut) {
            burst.insert("rounds".into(), json!(each));
            burst.insert("round_medians".into(), medians);
            burst.insert("latency_all_rounds".into(), b);
            burst.insert("floor_latency_all_rounds".into(), f);
            burst.insert("floor_ratio".into(), json!(floor_ratio));
            burst.insert("p50_ratio".into(), json!(p50));
            burst.insert("p99_ratio".into(), json!(p99));
        }
        self.report.insert("floor_ratio".into(), json!(floor_ratio));
        self.report.insert("rounds".into(), json!(self.rounds.len()));
    }

    fn burst_labels(&self) -> [(&str, &str); 2] {
        [("bench", "nsguard"), ("bench-run", self.run.as_str())]
    }

    async fn burst(&mut self, nsguard: &Nsguard) {
        let n = self.args.namespaces;
        self.burst_names = (0..n).map(|i| format!("b-{}-{}{i:05}", self.run, self.round_tag())).collect();
        let offset = audit_log_offset();
        let reconciles_before = nsguard.metric("nsguard_reconciles_total{").await;
        let cpu_before = nsguard.cpu_seconds();
        let t0 = Instant::now();
        create_namespaces(
            &self.admin,
            &self.burst_names,
            &self.burst_labels(),
            self.args.create_concurrency,
            &self.observer,
        )
        .await;
        self.observer
            .wait_all(&self.burst_names, "burst compliance", Duration::from_secs(3600), NsState::compliant)
            .await;
        let (latencies, last) = self.latencies(&self.burst_names);
        let total = last.duration_since(t0).as_secs_f64();
        // Let nsguard's last writes (status, events) land before counting.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (requests, writes, _) = nsguard_requests(offset);
        let dry_runs = audited_requests(NSGUARD_USER, offset).iter().filter(|e| is_dry_run(e)).count();
        let reconciles = nsguard.metric("nsguard_reconciles_total{").await - reconciles_before;
        println!(
            "burst: {n} namespaces compliant in {total:.2}s; {writes} writes, {dry_runs} enforce dry-runs, {requests} requests by nsguard, {:.2} reconciles per namespace",
            reconciles / n as f64
        );
        self.report.insert(
            "burst".into(),
            json!({
                "namespaces": n,
                "seconds": total,
                "namespaces_per_second": n as f64 / total,
                "latency": summary(latencies),
                "nsguard_requests": requests,
                "nsguard_writes": writes,
                "enforce_dry_runs": dry_runs,
                "requests_per_namespace": requests as f64 / n as f64,
                "reconciles_per_namespace": reconciles / n as f64,
                "writes_per_namespace": writes as f64 / n as f64,
                "writes_per_namespace_by_resource": nsguard_writes_per_namespace(offset, n),
                "nsguard_cpu_seconds": nsguard.cpu_seconds() - cpu_before,
            }),
        );
    }

    /// Creation-to-compliant latencies and the time the last one became compliant.
    fn latencies(&self, names: &[String]) -> (Vec<f64>, Instant) {
        let mut latencies = Vec::new();
        let mut last = Instant::now();
        let mut latest: Option<Instant> = None;
        for name in names {
            self.observer.with(name, |s| {
                let s = s.expect("observed");
                let since = s.compliant_since().expect("compliant");
                let created = s.created.expect("created");
                latencies.push(since.saturating_duration_since(created).as_secs_f64());
                latest = Some(latest.map_or(since, |l| l.max(since)));
            });
        }
        if let Some(l) = latest {
            last = l;
        }
        (latencies, last)
    }

    /// Warms the control plane up before the burst, the first scenario: `--warm-up` namespaces
    /// (100 by default) created and hardened as the burst's are, then deleted (and waited for), none
    /// of it counted. A fresh API server pays once for what a running one has paid already (the
    /// first server-side applies of each kind, its heap and caches growing), and only the burst paid
    /// it; the floor, second, never did.
    async fn warm_up(&mut self) {
        let n = self.args.warm_up;
        if n == 0 {
            return;
        }
        let t0 = Instant::now();
        let names: Vec<String> = (0..n).map(|i| format!("w-{}-{i:05}", self.run)).collect();
        let labels = self.burst_labels();
        create_namespaces(&self.admin, &names, &labels, self.args.create_concurrency, &self.observer).await;
        self.observer.wait_all(&names, "warm-up compliance", Duration::from_secs(600), NsState::compliant).await;
        let api = Api::<Namespace>::all(self.admin.clone());
        for name in &names {
            api.delete(name, &DeleteParams::default()).await.expect("delete a warm-up namespace");
        }
        let end = Instant::now() + Duration::from_secs(600);
        let run = ListParams::default().labels(&format!("bench-run={}", self.run));
        loop {
            let left = api.list_metadata(&run).await.expect("list namespaces");
            if !left.items.iter().any(|ns| names.contains(&ns.name_any())) {
                break;
            }
            assert!(Instant::now() < end, "warm-up namespaces not deleted in 10 minutes");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let seconds = t0.elapsed().as_secs_f64();
        println!("warm-up: {n} namespaces hardened and deleted in {seconds:.1}s");
        self.report.insert("warm_up".into(), json!({"namespaces": n, "seconds": seconds}));
    }

    /// Waits until kube-controller-manager has caught up with the namespaces created so far: its
    /// root-ca-cert-publisher puts a `kube-root-ca.crt` ConfigMap in each, and after a burst of
    /// 10,000 it is minutes behind — catching up in spurts of ~100 creates a second whenever the
    /// API server has room. A scenario measured meanwhile shares the API server with that backlog,
    /// and only the one that happens to run then pays for it (the floor, right after nsguard's
    /// burst; drift and nsguard's fan-out, right after the floor's). Waits at most 10 minutes.
    async fn settle(&mut self, before: &str) {
        async fn count<K>(api: &Api<K>, params: &ListParams) -> usize
        where
            K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
        {
            let mut params = params.clone().limit(2000);
            let mut n = 0;
            loop {
                let page = api.list_metadata(&params).await.expect("list");
                n += page.items.len();
                match page.metadata.continue_.filter(|c| !c.is_empty()) {
                    Some(token) => params = params.continue_token(&token),
                    None => return n,
                }
            }
        }
        let t0 = Instant::now();
        let namespaces = Api::<Namespace>::all(self.admin.clone());
        let published = Api::<ConfigMap>::all(self.admin.clone());
        let root_ca = ListParams::default().fields("metadata.name=kube-root-ca.crt");
        let (mut have, mut want) = (0, 0);
        while t0.elapsed() < Duration::from_secs(600) {
            want = count(&namespaces, &ListParams::default()).await;
            have = count(&published, &root_ca).await;
            if have >= want {
                break;
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        let seconds = t0.elapsed().as_secs_f64();
        println!("settle before {before}: {seconds:.1}s ({have} of {want} namespaces have kube-root-ca.crt)");
        let entry = self.report.entry("settle").or_insert_with(|| json!({}));
        entry[before] = json!({"seconds": seconds, "published": have, "namespaces": want});
    }

    /// The same writes as nsguard, issued directly: both policies, labels and annotations, the
    /// condition and the Report, the `default` ServiceAccount (created hardened if the
    /// controller-manager has not made it yet), and the `Hardened` event.
    async fn floor(&mut self) {
        let n = self.args.namespaces;
        let names: Vec<String> = (0..n).map(|i| format!("f-{}-{}{i:05}", self.run, self.round_tag())).collect();
        let labels = [("bench", "floor"), ("bench-run", self.run.as_str())];
        let writer = self.nsguard_client.clone();
        let permits = Arc::new(Semaphore::new(self.args.concurrency));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let apply = PatchParams::apply("bench-floor").force();
        let policies = policies_for_floor();
        // The `Hardened` event nsguard sends each namespace, sent the way nsguard sends it: its own
        // bounded queue and publisher, after the namespace's writes.
        let (events, published) =
            EventQueue::start_joined(Publisher::new(writer.clone(), Some("bench-floor".into())), Arc::default());
        let note = Arc::new(floor_hardened_note());
        let hardener = tokio::spawn(async move {
            let mut tasks = Vec::new();
            while let Some(ns) = rx.recv().await {
                let permit = permits.clone().acquire_owned().await.expect("semaphore");
                let (writer, apply, policies) = (writer.clone(), apply.clone(), policies.clone());
                let (events, note) = (events.clone(), note.clone());
                tasks.push(tokio::spawn(async move {
                    let labels: BTreeMap<&str, &str> = RESTRICTED.iter().copied().collect();
                    let patch = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels,
                        "annotations": {"bench.nsguard.io/profile": "floor", "bench.nsguard.io/release-policy": "Release"}}});
                    let nps = Api::<NetworkPolicy>::namespaced(writer.clone(), &ns);
                    let namespaces = Api::<Namespace>::all(writer.clone());
                    // The `default` ServiceAccount is applied with the policies, as nsguard does:
                    // created hardened if the controller-manager has not made it yet.
                    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns},
                        "automountServiceAccountToken": false});
                    let (ns_patch, deny, dns, sa) =
                        (Patch::Apply(&patch), Patch::Apply(&policies[0]), Patch::Apply(&policies[1]), Patch::Apply(&sa));
                    let accounts = Api::<ServiceAccount>::namespaced(writer.clone(), &ns);
                    futures::try_join!(
                        nps.patch("nsguard-default-deny", &apply, &deny),
                        nps.patch("nsguard-allow-dns", &apply, &dns),
                        accounts.patch("default", &apply, &sa),
                    )
                    .expect("floor policy and ServiceAccount writes");
                    let namespace = namespaces.patch(&ns, &apply, &ns_patch).await.expect("floor namespace write");
                    let (condition, report) = floor_reporting(&ns, "restricted");
                    let reports = Api::<DynamicObject>::namespaced_with(
                        writer.clone(),
                        &ns,
                        &nsguard::core::report::resource(),
                    );
                    let (condition, report) = (Patch::Apply(&condition), Patch::Apply(&report));
                    let (_, report) = futures::try_join!(
                        namespaces.patch_status(&ns, &apply, &condition),
                        reports.patch("nsguard", &apply, &report),
                    )
                    .expect("floor condition and Report writes");
                    let announcement = Announcement {
                        severity: Severity::Normal,
                        reason: "Hardened",
                        action: "Harden",
                        note: note.as_ref().clone(),
                    };
                    let (namespace_uid, report_uid) = (uid(&namespace.metadata), uid(&report.metadata));
                    let subject = Subject::Report { uid: report_uid };
                    events.send(Pending { namespace: ns, namespace_uid, subject, announcement }).await;
                    drop(permit);
                }));
            }
            for t in tasks {
                t.await.expect("floor task");
            }
        });
        let t0 = Instant::now();
        // Hand each namespace to the hardener as soon as it exists, as a watch-driven controller would.
        {
            let api = Api::<Namespace>::all(self.admin.clone());
            let labels: BTreeMap<String, String> =
                labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
            let observer = self.observer.clone();
            futures::stream::iter(names.iter().cloned())
                .map(|name| {
                    let (api, labels) = (api.clone(), labels.clone());
                    async move {
                        let ns = Namespace {
                            metadata: ObjectMeta {
                                name: Some(name.clone()),
                                labels: Some(labels),
                                ..Default::default()
                            },
                            ..Default::default()
                        };
                        api.create(&PostParams::default(), &ns).await.map(|_| name)
                    }
                })
                .buffer_unordered(self.args.create_concurrency)
                .try_for_each(|name| {
                    observer.update(&name, |s| s.created = Some(Instant::now()));
                    let _ = tx.send(name);
                    async { Ok(()) }
                })
                .await
                .expect("create floor namespaces");
        }
        drop(tx);
        hardener.await.expect("hardener");
        // Its last events are sent before the next scenario (their time is not the floor's).
        published.await.expect("floor events");
        self.observer.wait_all(&names, "floor compliance", Duration::from_secs(3600), NsState::compliant).await;
        let (latencies, last) = self.latencies(&names);
        let total = last.duration_since(t0).as_secs_f64();
        println!("floor: {n} namespaces compliant in {total:.2}s");
        let burst = self.report.get("burst").and_then(|b| b["seconds"].as_f64());
        self.report.insert(
            "floor".into(),
            json!({"namespaces": n, "seconds": total, "latency": summary(latencies), "concurrency": self.args.concurrency}),
        );
        if let Some(burst) = burst {
            self.report.insert("floor_ratio".into(), json!(burst / total));
            println!("floor_ratio: {:.2}", burst / total);
        }
        // Each namespace's wait, at the median and the tail, against the floor's.
        let floor_latency = self.report["floor"]["latency"].clone();
        if let Some(b) = self.report.get_mut("burst").and_then(Value::as_object_mut) {
            let (p50, p99) = latency_ratios(&b["latency"], &floor_latency);
            b.insert("floor_ratio".into(), json!(burst.unwrap_or(0.0) / total));
            b.insert("p50_ratio".into(), json!(p50));
            b.insert("p99_ratio".into(), json!(p99));
            println!("burst latency ÷ floor latency: p50 {p50:.2}, p99 {p99:.2}");
        }
        self.floor_names = names;
    }

    /// A profile change fanned out to every burst namespace, against its floor: the same writes
    /// (each namespace's labels and its Report) issued directly on the floor's namespaces at the same
    /// concurrency. Two rounds, each nsguard's then the floor's: the `warn` level restricted →
    /// baseline, then back to restricted (so later scenarios see the baseline they expect), the
    /// floor's to privileged and back. `floor_ratio` is nsguard's total over both rounds ÷ the
    /// floor's: one round's ratio moves by ±0.2 from run to run on this machine. Also, once, the
    /// label change alone as a merge patch (`label_patch_floor_ratio`; nsguard writes more).
    async fn fanout(&mut self, nsguard: &Nsguard) {
        let names = self.burst_names.clone();
        let floor = self.floor_names.clone();
        let n = names.len();
        let mut rounds = Vec::new();
        // nsguard's reconciles and CPU during its own rounds only (the floor's writes to its
        // namespaces come to nsguard's watches too, and each costs it a reconcile).
        let (mut reconciles, mut cpu) = (0.0, 0.0);
        let mut label_floor = None;
        let mut writes: BTreeMap<String, f64> = BTreeMap::new();
        for (level, floor_level) in [("baseline", "privileged"), ("restricted", "restricted")] {
            let reconciles_before = nsguard.metric("nsguard_reconciles_total{").await;
            let cpu_before = nsguard.cpu_seconds();
            let offset = audit_log_offset();
            let t0 = Instant::now();
            set_bench_profile(&self.admin, level).await;
            let at_level = move |s: &NsState| s.warn.as_deref() == Some(level);
            self.observer.wait_all(&names, "fan-out", Duration::from_secs(3600), at_level).await;
            let seconds = t0.elapsed().as_secs_f64();
            println!("fanout: a profile change (warn → {level}) reached {n} namespaces in {seconds:.2}s");
            // The labels are seen before nsguard's last Reports and echoes are done: its tail counts
            // in its reconciles and CPU, and stays out of the floor's window.
            nsguard.settle().await;
            reconciles += nsguard.metric("nsguard_reconciles_total{").await - reconciles_before;
            cpu += nsguard.cpu_seconds() - cpu_before;
            for (resource, per) in nsguard_writes_per_namespace(offset, 2 * n) {
                *writes.entry(resource).or_default() += per;
            }
            let floor_seconds = if floor.is_empty() {
                None
            } else {
                if rounds.is_empty() {
                    let label_only = self.fanout_label_patches(&floor).await;
                    println!("fanout label-patch floor: {} label patches in {label_only:.2}s", floor.len());
                    label_floor = Some(label_only);
                }
                let f = self.fanout_same_writes(&floor, floor_level).await;
                // nsguard reconciles the floor's writes too: done before its next round is counted.
                nsguard.idle(names.len() + floor.len()).await;
                println!(
                    "fanout floor: {} namespace and Report applies in {f:.2}s; ratio {:.2}",
                    floor.len(),
                    seconds / f
                );
                Some(f)
            };
            rounds.push(json!({"level": level, "seconds": seconds, "floor_seconds": floor_seconds,
                "floor_ratio": floor_seconds.map(|f| seconds / f)}));
        }
        self.observer.wait_all(&names, "the profile set back", Duration::from_secs(3600), NsState::compliant).await;
        let (reconciles, cpu) = (reconciles / (2 * n) as f64, cpu / 2.0);
        let total = |key: &str| rounds.iter().filter_map(|r| r[key].as_f64()).sum::<f64>();
        let floor_ratio = (!floor.is_empty()).then(|| total("seconds") / total("floor_seconds"));
        let label_ratio = label_floor.map(|f| rounds[0]["seconds"].as_f64().unwrap_or(0.0) / f);
        println!(
            "fanout: {reconciles:.2} reconciles per namespace and {cpu:.2} CPU s per round; floor_ratio (both rounds) {}",
            floor_ratio.map_or("-".into(), |r| format!("{r:.2}"))
        );
        println!("fanout: nsguard's writes per namespace and round, by resource: {writes:?}");
        self.report.insert(
            "fanout".into(),
            json!({"namespaces": n, "seconds": rounds[0]["seconds"], "rounds": rounds, "floor_ratio": floor_ratio,
                "label_patch_floor_seconds": label_floor, "label_patch_floor_ratio": label_ratio,
                "reconciles_per_namespace": reconciles, "nsguard_cpu_seconds": cpu,
                "writes_per_namespace_by_resource": writes}),
        );
    }

    /// The fan-out's label change alone, as a merge patch on each of the floor's namespaces.
    async fn fanout_label_patches(&self, floor: &[String]) -> f64 {
        let api = Api::<Namespace>::all(self.nsguard_client.clone());
        let t0 = Instant::now();
        futures::stream::iter(floor.iter().cloned())
            .map(|ns| {
                let api = api.clone();
                async move {
                    let patch = json!({"metadata": {"labels": {"pod-security.kubernetes.io/warn": "baseline"}}});
                    api.patch(&ns, &PatchParams::default(), &Patch::Merge(&patch)).await.map(drop)
                }
            })
            .buffer_unordered(self.args.concurrency)
            .try_collect::<Vec<()>>()
            .await
            .expect("floor fan-out patches");
        let is_baseline = |s: &NsState| s.warn.as_deref() == Some("baseline");
        self.observer.wait_all(floor, "label-patch floor fan-out", Duration::from_secs(3600), is_baseline).await;
        t0.elapsed().as_secs_f64()
    }

    /// The fan-out's floor: what nsguard writes for a profile change, written by a minimal client at
    /// the same concurrency — each namespace's labels (server-side apply) and its Report, whose check
    /// message names the level, both at once. `warn` differs from the level the floor's namespaces
    /// have, so every write changes something.
    async fn fanout_same_writes(&self, floor: &[String], warn: &'static str) -> f64 {
        let writer = self.nsguard_client.clone();
        let apply = PatchParams::apply("bench-floor").force();
        let t0 = Instant::now();
        futures::stream::iter(floor.iter().cloned())
            .map(|ns| {
                let (writer, apply) = (writer.clone(), apply.clone());
                async move {
                    let mut labels: BTreeMap<&str, &str> = RESTRICTED.iter().copied().collect();
                    labels.insert("pod-security.kubernetes.io/warn", warn);
                    let patch = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels,
                        "annotations": {"bench.nsguard.io/profile": "floor", "bench.nsguard.io/release-policy": "Release"}}});
                    let (_, report) = floor_reporting(&ns, warn);
                    let namespaces = Api::<Namespace>::all(writer.clone());
                    let reports =
                        Api::<DynamicObject>::namespaced_with(writer, &ns, &nsguard::core::report::resource());
                    let (patch, report) = (Patch::Apply(&patch), Patch::Apply(&report));
                    futures::try_join!(
                        namespaces.patch(&ns, &apply, &patch),
                        reports.patch("nsguard", &apply, &report),
                    )
                    .map(drop)
                }
            })
            .buffer_unordered(self.args.concurrency)
            .try_collect::<Vec<()>>()
            .await
            .expect("same-writes floor fan-out");
        let at_level = move |s: &NsState| s.warn.as_deref() == Some(warn);
        self.observer.wait_all(floor, "floor fan-out", Duration::from_secs(3600), at_level).await;
        t0.elapsed().as_secs_f64()
    }

    /// The tamper guard's cost on the API server: the latency of requests it evaluates (and lets
    /// through) in hardened namespaces — a namespace label patch, an update of a user's
    /// NetworkPolicy, a Pod server-side dry-run create — without and then with `config/guard`.
    async fn guard(&mut self) {
        const EACH: usize = 200;
        let names: Vec<String> = self.burst_names.iter().take(EACH).cloned().collect();
        let admin = self.admin.clone();
        for ns in &names {
            let np = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "bench-user-policy"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}});
            Api::<NetworkPolicy>::namespaced(admin.clone(), ns)
                .patch("bench-user-policy", &PatchParams::apply("bench-user").force(), &Patch::Apply(&np))
                .await
                .expect("user policy");
        }
        let pod = restricted_pod("bench-pod", "default", None);
        let measure = |round: &'static str| {
            let (admin, names, pod) = (admin.clone(), names.clone(), pod.clone());
            async move {
                let mut out = serde_json::Map::new();
                let mut times = |name: &str, v: Vec<f64>| out.insert(name.to_owned(), summary(v));
                let mut label = Vec::new();
                for (i, ns) in names.iter().enumerate() {
                    let patch = json!({"metadata": {"labels": {"bench-touch": format!("{round}-{i}")}}});
                    let t = Instant::now();
                    Api::<Namespace>::all(admin.clone())
                        .patch(ns, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .expect("label patch");
                    label.push(t.elapsed().as_secs_f64());
                }
                times("namespace_label_patch", label);
                let mut update = Vec::new();
                for (i, ns) in names.iter().enumerate() {
                    let patch = json!({"metadata": {"labels": {"bench-touch": format!("{round}-{i}")}}});
                    let t = Instant::now();
                    Api::<NetworkPolicy>::namespaced(admin.clone(), ns)
                        .patch("bench-user-policy", &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .expect("policy update");
                    update.push(t.elapsed().as_secs_f64());
                }
                times("networkpolicy_update", update);
                let mut create = Vec::new();
                for ns in &names {
                    let t = Instant::now();
                    Api::<Pod>::namespaced(admin.clone(), ns)
                        .create(&PostParams { dry_run: true, ..Default::default() }, &pod)
                        .await
                        .expect("pod dry-run");
                    create.push(t.elapsed().as_secs_f64());
                }
                times("pod_dry_run_create", create);
                Value::Object(out)
            }
        };
        let without = measure("without").await;
        let out = kubectl(&["apply", "-k", "config/guard"]);
        assert!(out.status.success(), "install the guard: {}", String::from_utf8_lossy(&out.stderr));
        // The guard is in force once it denies what it must (the API server loads it within moments).
        let ns = names[0].clone();
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let patch = json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "privileged"}}});
            let denied = Api::<Namespace>::all(admin.clone())
                .patch(&ns, &PatchParams { dry_run: true, ..Default::default() }, &Patch::Merge(&patch))
                .await
                .is_err();
            if denied {
                break;
            }
            assert!(Instant::now() < end, "the guard never took effect");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let with = measure("with").await;
        let _ = kubectl(&["delete", "-k", "config/guard"]);
        println!("guard: without {without}\nguard: with {with}");
        self.report.insert("guard".into(), json!({"requests_each": EACH, "without": without, "with": with}));
    }

    async fn steady(&mut self, nsguard: &Nsguard) {
        let offset = audit_log_offset();
        let writes_before = nsguard.metric("nsguard_write_requests_total{").await;
        let reconciles_before = nsguard.metric("nsguard_reconciles_total{").await;
        let cpu = nsguard.cpu_seconds();
        tokio::time::sleep(Duration::from_secs(self.args.steady_seconds)).await;
        let cpu = nsguard.cpu_seconds() - cpu;
        let (requests, writes, leases) = nsguard_requests(offset);
        let own = nsguard.metric("nsguard_write_requests_total{").await - writes_before;
        let reconciles = nsguard.metric("nsguard_reconciles_total{").await - reconciles_before;
        println!("steady: {writes} writes, {requests} requests, {cpu:.3} CPU s over {}s", self.args.steady_seconds);
        self.report.insert("steady_state_writes".into(), json!(writes));
        self.report.insert(
            "steady_state".into(),
            json!({
                "seconds": self.args.steady_seconds,
                "writes": writes,
                "writes_counted_by_nsguard": own,
                "requests": requests,
                "lease_requests": leases,
                "reconciles": reconciles,
                "cpu_seconds": cpu,
            }),
        );
    }

    /// Namespaces the rollout gate holds (a pod in each runs as root: it passes baseline, not the
    /// profile's restricted): what holding them costs over a window of re-checks. Expected: one
    /// dry-run per re-check, no write.
    async fn held(&mut self, nsguard: &Nsguard) {
        let n = self.args.held_namespaces;
        let names: Vec<String> = (0..n).map(|i| format!("h-{}-{i:03}", self.run)).collect();
        let api = Api::<Namespace>::all(self.admin.clone());
        let label = ("bench-held", self.run.as_str());
        // Pods first (no profile selects the namespaces yet), then select them all.
        for name in &names {
            let ns = Namespace {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some(BTreeMap::from([(label.0.to_owned(), label.1.to_owned())])),
                    ..Default::default()
                },
                ..Default::default()
            };
            api.create(&PostParams::default(), &ns).await.expect("create namespace");
        }
        for name in &names {
            default_service_account(&self.admin, name).await;
            let pod: Pod =
                serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "root"},
                "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]}}))
                .expect("pod");
            Api::<Pod>::namespaced(self.admin.clone(), name).create(&PostParams::default(), &pod).await.expect("pod");
        }
        let select = json!({"metadata": {"labels": {"bench": "nsguard"}}});
        for name in &names {
            api.patch(name, &PatchParams::default(), &Patch::Merge(&select)).await.expect("select");
        }
        let selector = ListParams::default().labels(&format!("{}={}", label.0, label.1));
        let held = |ns: &Namespace| {
            ns.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| {
                c.iter().any(|c| c.type_ == "nsguard.io/Hardened" && c.reason.as_deref() == Some("EnforceHeld"))
            })
        };
        let deadline = Instant::now() + Duration::from_secs(300);
        while api.list(&selector).await.expect("list").items.iter().filter(|ns| held(ns)).count() < n {
            assert!(Instant::now() < deadline, "held: not every namespace held after 300 s");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // Let the first looks' writes settle, then count a window of re-checks only.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let checks = nsguard.metric("nsguard_enforce_checks_total").await;
        let dry_runs = nsguard.metric("nsguard_enforce_dry_runs_total{").await;
        let offset = audit_log_offset();
        tokio::time::sleep(Duration::from_secs(self.args.held_seconds)).await;
        let checks = nsguard.metric("nsguard_enforce_checks_total").await - checks;
        let dry_runs = nsguard.metric("nsguard_enforce_dry_runs_total{").await - dry_runs;
        let about = |e: &Value| {
            names.iter().any(|n| e["objectRef"]["name"] == n.as_str() || e["objectRef"]["namespace"] == n.as_str())
        };
        let seen: Vec<Value> = audited_requests(NSGUARD_USER, offset).into_iter().filter(|e| about(e)).collect();
        let audited_dry_runs = seen.iter().filter(|e| is_dry_run(e)).count();
        let writes = seen.iter().filter(|e| is_write(e)).count();
        println!(
            "held: {n} namespaces, {}s window, re-check every {}s: {checks} re-checks, {dry_runs} dry-runs ({audited_dry_runs} audited), {writes} writes",
            self.args.held_seconds, self.args.recheck_seconds
        );
        self.report.insert(
            "held".into(),
            json!({"namespaces": n, "window_s": self.args.held_seconds, "recheck_s": self.args.recheck_seconds,
                "rechecks": checks, "dry_runs": dry_runs, "audited_dry_runs": audited_dry_runs,
                "dry_runs_per_recheck": if checks > 0.0 { dry_runs / checks } else { 0.0 }, "writes": writes}),
        );
        // Gone before the next scenario.
        for name in &names {
            let _ = api.delete(name, &DeleteParams::default()).await;
        }
        let deadline = Instant::now() + Duration::from_secs(300);
        while !api.list(&selector).await.expect("list").items.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn drift(&mut self, nsguard: &Nsguard) {
        // From steady state: nsguard done with the floor's namespaces before (their objects come to
        // its watches too), and with nsguard's own drift before the floor's.
        let namespaces = self.burst_names.len() + self.floor_names.len();
        nsguard.idle(namespaces).await;
        let mut drift = self.drift_on(&self.burst_names, "drift").await;
        if !self.floor_names.is_empty() {
            // The same drift on the floor's namespaces, healed by the least a controller can do: a
            // watch of each kind and one apply per event (no cache, no decision, no status, no
            // Report), under nsguard's identity. What the API server and its watches take.
            nsguard.idle(namespaces).await;
            let healer = start_floor_healer(self.nsguard_client.clone(), format!("f-{}-", self.run)).await;
            drift["floor"] = self.drift_on(&self.floor_names, "drift floor").await;
            healer.abort();
        }
        self.report.insert("drift".into(), drift);
    }

    /// Drift on `names`, healed and timed ([`Self::heal_times`]), printed under `label`; the
    /// report's entry for it.
    async fn drift_on(&self, names: &[String], label: &str) -> Value {
        let events = self.args.drift_events.min(names.len());
        let (heal, by_kind, slowest) = heal_summary(self.heal_times(names, events).await);
        println!("{label}: {events} events healed, p50 {} ms, p99 {} ms", heal["p50_ms"], heal["p99_ms"]);
        println!("{label}: slowest {}", serde_json::to_string(&slowest).unwrap_or_default());
        json!({"events": events, "heal": heal, "by_kind": by_kind, "slowest": slowest})
    }

    /// `events` drift writes, spread over `names` (a label, a policy deleted, a token re-enabled, in
    /// turn), each timed from its response until the observer sees the namespace compliant again:
    /// (seconds, namespace, kind, when sent).
    async fn heal_times(&self, names: &[String], events: usize) -> Vec<(f64, String, &'static str, String)> {
        let step = (names.len() / events.max(1)).max(1);
        let mut each = Vec::new();
        for i in 0..events {
            let ns = &names[i * step];
            let kind = ["label", "network_policy", "service_account"][i % 3];
            let sent = Instant::now();
            let sent_at = k8s_openapi::jiff::Timestamp::now().to_string();
            match kind {
                "label" => {
                    let patch = json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "privileged"}}});
                    Api::<Namespace>::all(self.admin.clone())
                        .patch(ns, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map(|_| ())
                }
                "network_policy" => Api::<NetworkPolicy>::namespaced(self.admin.clone(), ns)
                    .delete("nsguard-default-deny", &DeleteParams::default())
                    .await
                    .map(|_| ()),
                _ => {
                    let patch = json!({"automountServiceAccountToken": true});
                    Api::<ServiceAccount>::namespaced(self.admin.clone(), ns)
                        .patch("default", &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map(|_| ())
                }
            }
            .expect("drift write");
            let done = Instant::now();
            // Healed: compliant again after a non-compliant moment observed since the write was sent.
            let end = Instant::now() + Duration::from_secs(120);
            let healed = loop {
                let notified = self.observer.changed.notified();
                let healed = self.observer.with(ns, |s| {
                    let t = &s.expect("observed").transitions;
                    let broke = t.iter().position(|(when, ok)| *when >= sent && !ok)?;
                    t[broke..].iter().find(|(_, ok)| *ok).map(|(when, _)| *when)
                });
                if let Some(h) = healed {
                    break h;
                }
                assert!(Instant::now() < end, "drift in {ns} ({kind}) not healed in 120 s");
                let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
            };
            each.push((healed.saturating_duration_since(done).as_secs_f64(), ns.clone(), kind, sent_at));
            // Spread the events out, as drift arrives in a real cluster.
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        each
    }

    async fn restart(&mut self, nsguard: Nsguard) -> Nsguard {
        // Start from a settled cluster: the scenario before may have ended with nsguard's last
        // profile-status write still due (it coalesces them every 500 ms), which the new process
        // would then make — a write owed before the restart, not one caused by it.
        nsguard.settle().await;
        nsguard.stop().await;
        // Every namespace there is (the held scenario's are gone; the observer remembers them).
        let total_namespaces = Api::<Namespace>::all(self.admin.clone())
            .list_metadata(&ListParams::default())
            .await
            .expect("list")
            .items
            .len();
        let offset = audit_log_offset();
        let started = Instant::now();
        let (nsguard, ready) = Nsguard::start(&self.kubeconfig, &self.args, &self.log).await;
        // Every namespace reconciled once since the restart, then a moment for status to settle.
        let end = Instant::now() + Duration::from_secs(600);
        while (nsguard.metric("nsguard_reconciles_total{").await as usize) < total_namespaces {
            assert!(Instant::now() < end, "nsguard did not reconcile every namespace after the restart");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let all_reconciled = started.elapsed();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (requests, writes, leases) = nsguard_requests(offset);
        let (_, peak) = nsguard.memory_mib();
        println!("restart: ready in {:.2}s, {writes} writes, peak RSS {peak:.1} MiB", ready.as_secs_f64());
        self.report.insert(
            "restart".into(),
            json!({
                "namespaces": total_namespaces,
                "seconds_to_ready": ready.as_secs_f64(),
                "writes": writes,
                "requests": requests,
                "lease_requests": leases,
                "ready_plus_full_reconcile_seconds": all_reconciled.as_secs_f64(),
                "peak_rss_mib": peak,
            }),
        );
        nsguard
    }

    async fn memory(&mut self, nsguard: &Nsguard) {
        let mut readings = Vec::new();
        // Every burst namespace gets 2 more ServiceAccounts (3 with `default`).
        let before = nsguard.metric_with("nsguard_write_requests_total{", "resource=\"serviceaccounts\"").await;
        let (rss_one_account, _) = nsguard.memory_mib();
        create_service_accounts(&self.admin, &self.burst_names, 2, self.args.create_concurrency).await;
        self.wait_sa_writes(nsguard, before + 2.0 * self.burst_names.len() as f64).await;
        let (rss, peak) = nsguard.memory_mib();
        // What 2 more ServiceAccounts per namespace added to the resident set, per ServiceAccount.
        let per_account = (rss - rss_one_account) * 1024.0 * 1024.0 / (2 * self.burst_names.len()) as f64;
        println!(
            "memory: {} namespaces, RSS {rss:.1} MiB, peak {peak:.1} MiB; {per_account:.0} bytes per added ServiceAccount",
            self.burst_names.len()
        );
        readings.push(json!({"namespaces": self.burst_names.len(), "service_accounts": 3 * self.burst_names.len(), "rss_mib": rss, "peak_rss_mib": peak,
            "rss_mib_before_added_service_accounts": rss_one_account, "bytes_per_added_service_account": per_account}));

        let more = self.args.memory_namespaces.saturating_sub(self.burst_names.len());
        if more > 0 {
            let names: Vec<String> = (0..more).map(|i| format!("m-{}-{i:05}", self.run)).collect();
            let before = nsguard.metric_with("nsguard_write_requests_total{", "resource=\"serviceaccounts\"").await;
            let t0 = Instant::now();
            create_namespaces(&self.admin, &names, &self.burst_labels(), self.args.create_concurrency, &self.observer)
                .await;
            create_service_accounts(&self.admin, &names, 2, self.args.create_concurrency).await;
            self.observer.wait_all(&names, "compliance at scale", Duration::from_secs(3600), NsState::compliant).await;
            self.wait_sa_writes(nsguard, before + 3.0 * names.len() as f64).await;
            let total = self.burst_names.len() + names.len();
            let rss_small = rss;
            let (rss, peak) = nsguard.memory_mib();
            // What each namespace (with its 3 ServiceAccounts, 2 policies, Report) added.
            let per_namespace = (rss - rss_small) * 1024.0 * 1024.0 / names.len() as f64;
            println!(
                "memory: {total} namespaces, RSS {rss:.1} MiB, peak {peak:.1} MiB ({:.0}s to grow); {per_namespace:.0} bytes per added namespace",
                t0.elapsed().as_secs_f64()
            );
            readings
                .push(json!({"namespaces": total, "service_accounts": 3 * total, "rss_mib": rss, "peak_rss_mib": peak,
                "seconds_to_grow_and_converge": t0.elapsed().as_secs_f64(), "bytes_per_added_namespace": per_namespace}));
        }
        self.report.insert("memory".into(), json!(readings));
    }

    async fn wait_sa_writes(&self, nsguard: &Nsguard, target: f64) {
        let end = Instant::now() + Duration::from_secs(3600);
        while nsguard.metric_with("nsguard_write_requests_total{", "resource=\"serviceaccounts\"").await < target {
            assert!(Instant::now() < end, "ServiceAccounts not all hardened");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// The condition and the Report the floor writes: the same objects, of the same size, as nsguard's.
fn floor_reporting(ns: &str, warn: &str) -> (Value, Value) {
    let warn_message = format!("warn level {warn}, version latest");
    let condition = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns},
        "status": {"conditions": [{"type": "nsguard.io/Hardened", "status": "True", "reason": "Compliant",
            "message": "Profile floor: hardened, matches the baseline", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    let checks = [
        ("pod-security-enforce", "enforce level restricted, version latest"),
        ("pod-security-audit", "audit level restricted, version latest"),
        ("pod-security-warn", warn_message.as_str()),
        ("network-default-deny-ingress", "NetworkPolicy nsguard-default-deny denies all ingress"),
        ("network-default-deny-egress", "NetworkPolicy nsguard-default-deny denies all egress"),
        ("network-dns-egress", "NetworkPolicy nsguard-allow-dns allows DNS to the cluster DNS pods only"),
        ("serviceaccount-token-automount", "every ServiceAccount in scope has automountServiceAccountToken: false"),
    ];
    let results: Vec<Value> = checks
        .iter()
        .map(|(rule, message)| {
            json!({"policy": "floor", "rule": rule, "result": "pass", "message": message, "category": "Pod Security",
                "severity": "high", "properties": {"cis-kubernetes": "5.2.1,5.2.2,5.2.3", "mode": "Enforce"}})
        })
        .collect();
    let report = json!({"apiVersion": "openreports.io/v1alpha1", "kind": "Report",
        "metadata": {"name": "nsguard", "namespace": ns, "labels": {"app.kubernetes.io/managed-by": "bench-floor"}},
        "scope": {"apiVersion": "v1", "kind": "Namespace", "name": ns}, "source": "nsguard", "results": results,
        "summary": {"pass": 7, "fail": 0, "warn": 0, "error": 0, "skip": 0}});
    (condition, report)
}

/// The note of nsguard's `Hardened` event for a namespace the floor hardens: what a new namespace
/// lacks, said as nsguard says it.
fn floor_hardened_note() -> String {
    let missing = |key: &str, expected: &str| Drift::Label { key: key.into(), expected: expected.into(), actual: None };
    let mut drift: Vec<Drift> = RESTRICTED.iter().map(|(k, v)| missing(k, v)).collect();
    drift.extend(
        [("bench.nsguard.io/profile", "floor"), ("bench.nsguard.io/release-policy", "Release")]
            .map(|(key, expected)| Drift::Annotation { key: key.into(), expected: expected.into(), actual: None }),
    );
    drift.extend(["nsguard-default-deny", "nsguard-allow-dns"].map(|n| Drift::NetworkPolicyMissing { name: n.into() }));
    drift.push(Drift::ServiceAccountAutomount { name: "default".into(), actual: None });
    format!("Hardened to profile floor: {}", announce::summary(&drift))
}

/// Heal times as the report shows them: the summary, by kind, and the three slowest (to match
/// against the audit log).
fn heal_summary(mut each: Vec<(f64, String, &'static str, String)>) -> (Value, Value, Vec<Value>) {
    let heal = summary(each.iter().map(|e| e.0).collect());
    let mut by_kind: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for (latency, _, kind, _) in &each {
        by_kind.entry(kind).or_default().push(*latency);
    }
    let by_kind: serde_json::Map<String, Value> =
        by_kind.into_iter().map(|(k, v)| (k.to_owned(), summary(v))).collect();
    each.sort_by(|a, b| b.0.total_cmp(&a.0));
    let slowest = each
        .iter()
        .take(3)
        .map(|(l, ns, kind, at)| json!({"ms": l * 1000.0, "namespace": ns, "kind": kind, "sent": at}))
        .collect();
    (heal, Value::Object(by_kind), slowest)
}

/// The drift floor's healer: watches the floor's namespaces (names starting with `prefix`), their
/// `nsguard-default-deny` policy and `default` ServiceAccount, and answers each drift event with
/// the one apply that undoes it. Returns once all three watches have listed.
async fn start_floor_healer(client: Client, prefix: String) -> tokio::task::JoinHandle<()> {
    let apply = PatchParams::apply("bench-floor").force();
    let (listed_tx, mut listed_rx) = tokio::sync::mpsc::channel::<()>(3);
    let floor = move |ns: &Option<String>| ns.as_deref().is_some_and(|n| n.starts_with(&prefix));
    let (namespaces, policies, accounts) = (
        Api::<Namespace>::all(client.clone()),
        Api::<NetworkPolicy>::all(client.clone()),
        Api::<ServiceAccount>::all(client.clone()),
    );
    let labels = watcher::Config::default().labels("bench=floor");
    let ns_task = {
        let (apply, listed, floor) = (apply.clone(), listed_tx.clone(), floor.clone());
        async move {
            let stream = watcher(namespaces.clone(), labels);
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(Event::InitDone) => drop(listed.send(()).await),
                    Ok(Event::Apply(ns)) if floor(&ns.metadata.name) => {
                        let drifted =
                            RESTRICTED.iter().any(|(k, v)| ns.labels().get(*k).map(String::as_str) != Some(*v));
                        if drifted {
                            let labels: BTreeMap<&str, &str> = RESTRICTED.iter().copied().collect();
                            let patch = json!({"apiVersion": "v1", "kind": "Namespace",
                                "metadata": {"name": ns.name_any(), "labels": labels}});
                            let _ = namespaces.patch(&ns.name_any(), &apply, &Patch::Apply(&patch)).await;
                        }
                    }
                    _ => {}
                }
            }
        }
    };
    let sa_client = client.clone();
    let np_task = {
        let (apply, listed, floor) = (apply.clone(), listed_tx.clone(), floor.clone());
        let deny = policies_for_floor()[0].clone();
        async move {
            let config = watcher::Config::default().fields("metadata.name=nsguard-default-deny");
            let stream = watcher(policies, config);
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(Event::InitDone) => drop(listed.send(()).await),
                    Ok(Event::Delete(np)) if floor(&np.metadata.namespace) => {
                        let api = Api::<NetworkPolicy>::namespaced(client.clone(), &np.namespace().unwrap_or_default());
                        let _ = api.patch("nsguard-default-deny", &apply, &Patch::Apply(&deny)).await;
                    }
                    _ => {}
                }
            }
        }
    };
    let sa_task = async move {
        let config = watcher::Config::default().fields("metadata.name=default");
        let stream = watcher(accounts, config);
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::InitDone) => drop(listed_tx.send(()).await),
                Ok(Event::Apply(sa))
                    if floor(&sa.metadata.namespace) && sa.automount_service_account_token != Some(false) =>
                {
                    let ns = sa.namespace().unwrap_or_default();
                    let patch = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns},
                        "automountServiceAccountToken": false});
                    let api = Api::<ServiceAccount>::namespaced(sa_client.clone(), &ns);
                    let _ = api.patch("default", &apply, &Patch::Apply(&patch)).await;
                }
                _ => {}
            }
        }
    };
    let handle = tokio::spawn(async move {
        tokio::join!(ns_task, np_task, sa_task);
    });
    for _ in 0..3 {
        listed_rx.recv().await.expect("the floor healer's watches list");
    }
    handle
}

fn policies_for_floor() -> Arc<Vec<Value>> {
    let deny = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "nsguard-default-deny", "labels": {"app.kubernetes.io/managed-by": "nsguard"}},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}});
    let dns = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "nsguard-allow-dns", "labels": {"app.kubernetes.io/managed-by": "nsguard"}},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{
            "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]}});
    Arc::new(vec![deny, dns])
}

fn machine(admin_version: &str) -> Value {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let etcd = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cluster/etcd/go.mod"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.contains("go.etcd.io/etcd/server/v3 v"))
        .and_then(|l| l.split_whitespace().find(|w| w.starts_with('v')).map(str::to_owned));
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu_model,
        "memory_gib": (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "kubernetes": admin_version,
        "etcd": etcd,
        "nsguard": env!("CARGO_PKG_VERSION"),
        "rustc": rustc,
    })
}

fn markdown(report: &serde_json::Map<String, Value>) -> String {
    let m = &report["machine"];
    let mut out = format!(
        "Machine: {} cores ({}), {} GiB; Kubernetes {}, etcd {}, nsguard {}; nsguard --concurrency {}.\n\n",
        m["cores"],
        m["cpu"].as_str().unwrap_or(""),
        m["memory_gib"],
        m["kubernetes"].as_str().unwrap_or(""),
        m["etcd"].as_str().unwrap_or(""),
        m["nsguard"].as_str().unwrap_or(""),
        report["concurrency"]
    );
    if report.get("guard_installed").is_some() {
        out += "With the tamper guard (config/guard) installed for the whole run.\n\n";
    }
    out += "| measure | value |\n| --- | --- |\n";
    let mut row = |k: &str, v: String| out += &format!("| {k} | {v} |\n");
    if let Some(b) = report.get("burst") {
        if let Some(rounds) = b["rounds"].as_array() {
            let each: Vec<String> = rounds
                .iter()
                .map(|r| {
                    let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
                    format!("{:.2} ({:.2} / {:.2})", f("floor_ratio"), f("p50_ratio"), f("p99_ratio"))
                })
                .collect();
            row(
                &format!(
                    "**{} rounds**: floor_ratio (p50 / p99 ratio), each round; the rows below show the last",
                    rounds.len()
                ),
                each.join(", "),
            );
            let f = |k: &str| b[k].as_f64().unwrap_or(0.0);
            row(
                "**pooled over the rounds**: floor_ratio, p50 / p99 ratio",
                format!("**{:.2}, {:.2} / {:.2}**", f("floor_ratio"), f("p50_ratio"), f("p99_ratio")),
            );
        }
        row(
            &format!("burst: {} namespaces compliant", b["namespaces"]),
            format!(
                "{:.2} s ({:.0} namespaces/s)",
                b["seconds"].as_f64().unwrap_or(0.0),
                b["namespaces_per_second"].as_f64().unwrap_or(0.0)
            ),
        );
        row(
            "burst: creation → compliant, p50 / p95 / p99",
            format!("{} / {} / {} ms", b["latency"]["p50_ms"], b["latency"]["p95_ms"], b["latency"]["p99_ms"]),
        );
        row(
            "burst: nsguard requests per namespace (writes)",
            format!(
                "{:.2} ({:.2})",
                b["requests_per_namespace"].as_f64().unwrap_or(0.0),
                b["writes_per_namespace"].as_f64().unwrap_or(0.0)
            ),
        );
        if let Some(by) = b["writes_per_namespace_by_resource"].as_object() {
            let parts: Vec<String> = by.iter().map(|(r, n)| format!("{r} {:.2}", n.as_f64().unwrap_or(0.0))).collect();
            row("burst: writes per namespace, by resource", parts.join(", "));
        }
    }
    if let Some(f) = report.get("floor") {
        row(
            "floor: same writes, minimal client, same concurrency",
            format!(
                "{:.2} s (p50 {} ms, p99 {} ms)",
                f["seconds"].as_f64().unwrap_or(0.0),
                f["latency"]["p50_ms"],
                f["latency"]["p99_ms"]
            ),
        );
    }
    if let Some(g) = report.get("guard") {
        for (key, what) in [
            ("namespace_label_patch", "namespace label patch"),
            ("networkpolicy_update", "NetworkPolicy update"),
            ("pod_dry_run_create", "Pod dry-run create"),
        ] {
            let (a, b) = (&g["without"][key], &g["with"][key]);
            row(
                &format!("guard: {what}, p50 / p99 without → with the policy"),
                format!("{} / {} ms → {} / {} ms", a["p50_ms"], a["p99_ms"], b["p50_ms"], b["p99_ms"]),
            );
        }
    }
    if let Some(r) = report.get("floor_ratio") {
        let what =
            if report.contains_key("rounds") { "total burst ÷ total floor, every round" } else { "burst ÷ floor" };
        row(&format!("**floor_ratio** ({what})"), format!("**{:.2}**", r.as_f64().unwrap_or(0.0)));
    }
    if let Some(h) = report.get("held") {
        row(
            &format!(
                "held: {} namespaces over {} s, re-check every {} s",
                h["namespaces"], h["window_s"], h["recheck_s"]
            ),
            format!(
                "{} re-checks, {} dry-runs ({:.2} per re-check), {} writes",
                h["rechecks"],
                h["dry_runs"],
                h["dry_runs_per_recheck"].as_f64().unwrap_or(0.0),
                h["writes"]
            ),
        );
    }
    if let Some(s) = report.get("steady_state") {
        row(&format!("**steady_state_writes** over {} s", s["seconds"]), format!("**{}**", s["writes"]));
        row(
            "steady state: nsguard CPU",
            format!(
                "{:.3} CPU s ({} reconciles, {} lease requests)",
                s["cpu_seconds"].as_f64().unwrap_or(0.0),
                s["reconciles"],
                s["lease_requests"]
            ),
        );
    }
    if let Some(d) = report.get("drift") {
        row(
            &format!("drift: {} events, time to heal p50 / p99", d["events"]),
            format!("{} / {} ms", d["heal"]["p50_ms"], d["heal"]["p99_ms"]),
        );
        for (kind, s) in d["by_kind"].as_object().into_iter().flatten() {
            row(&format!("drift: {kind}, p50 / p99"), format!("{} / {} ms", s["p50_ms"], s["p99_ms"]));
        }
        if let Some(f) = d.get("floor") {
            row(
                &format!("drift floor (one watch and one apply per event): {} events, p50 / p99", f["events"]),
                format!("{} / {} ms", f["heal"]["p50_ms"], f["heal"]["p99_ms"]),
            );
        }
    }
    if let Some(f) = report.get("fanout").filter(|f| f["floor_ratio"].is_number()) {
        let rounds: Vec<String> = f["rounds"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                format!(
                    "{:.2} / {:.2} s",
                    r["seconds"].as_f64().unwrap_or(0.0),
                    r["floor_seconds"].as_f64().unwrap_or(0.0)
                )
            })
            .collect();
        row(
            &format!(
                "fan-out: a profile change to {} namespaces, nsguard / same-writes floor, each round",
                f["namespaces"]
            ),
            rounds.join(", "),
        );
        row("**fan-out floor_ratio** (both rounds)", format!("**{:.2}**", f["floor_ratio"].as_f64().unwrap_or(0.0)));
    }
    if let Some(r) = report.get("restart") {
        row(
            &format!("restart with {} compliant namespaces: time to ready", r["namespaces"]),
            format!("{:.2} s", r["seconds_to_ready"].as_f64().unwrap_or(0.0)),
        );
        row("restart: **writes**", format!("**{}**", r["writes"]));
    }
    for reading in report.get("memory").and_then(Value::as_array).into_iter().flatten() {
        row(
            &format!(
                "memory: peak RSS at {} namespaces ({} ServiceAccounts)",
                reading["namespaces"], reading["service_accounts"]
            ),
            format!("{:.1} MiB", reading["peak_rss_mib"].as_f64().unwrap_or(0.0)),
        );
    }
    out
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    assert!(
        args.rounds == 1 || !args.runs("memory"),
        "--rounds: leave out the memory scenario (--scenarios ...), whose per-namespace figures count one burst"
    );
    let admin = admin_client().await;
    let _ = install();
    let version = admin.apiserver_version().await.map(|v| v.git_version).unwrap_or_default();
    let kubeconfig = service_account_kubeconfig(&admin, "nsguard-system", "nsguard").await;
    let nsguard_client = client_as_service_account(&admin, "nsguard-system", "nsguard").await;
    // A deployment in a real cluster has no replica running here; the bench runs its own.
    let _ = kubectl(&["-n", "nsguard-system", "scale", "deployment", "nsguard", "--replicas=0"]);
    std::fs::create_dir_all(&args.out).expect("output directory");
    let log = args.out.join("nsguard.log");
    let run = unique_name("r");
    let observer = start_observer(admin.clone(), &run);

    let mut report = serde_json::Map::new();
    report.insert("machine".into(), machine(&version));
    report.insert("concurrency".into(), json!(args.concurrency));
    report.insert("started".into(), json!(k8s_openapi::jiff::Timestamp::now().to_string()));
    let mut bench = Bench {
        args: args.clone(),
        admin: admin.clone(),
        nsguard_client,
        kubeconfig,
        observer,
        run,
        log,
        report,
        burst_names: vec![],
        floor_names: vec![],
        round: 0,
        rounds: vec![],
    };

    if args.guard_installed {
        let out = kubectl(&["apply", "-k", "config/guard"]);
        assert!(out.status.success(), "install the guard: {}", String::from_utf8_lossy(&out.stderr));
        bench.report.insert("guard_installed".into(), json!(true));
        println!("tamper guard installed (config/guard)");
    }
    let (mut nsguard, ready) = Nsguard::start(&bench.kubeconfig, &args, &bench.log).await;
    println!("nsguard ready in {:.2}s", ready.as_secs_f64());
    set_bench_profile(&admin, "restricted").await;
    // In place before the burst: nsguard hardens under a new profile once its finalizer has settled.
    tokio::time::sleep(nsguard::core::selection::FINALIZER_SETTLE + Duration::from_secs(1)).await;

    // Not before the memory scenario: it reports nsguard's high-water mark since its start, and
    // namespaces created and deleted before the burst would count in it.
    for round in 0..args.rounds {
        bench.round = round;
        if round > 0 {
            bench.settle("burst").await;
        }
        if args.runs("burst") {
            if round == 0 && !args.runs("memory") {
                bench.warm_up().await;
            }
            bench.burst(&nsguard).await;
        }
        if args.runs("floor") {
            bench.settle("floor").await;
            bench.floor().await;
        }
        bench.keep_round();
    }
    bench.pool_rounds();
    // The profile governs every round's namespaces: the later scenarios take them all.
    bench.burst_names = bench.rounds.iter().flat_map(|r| r.burst_names.iter().cloned()).collect();
    bench.floor_names = bench.rounds.iter().flat_map(|r| r.floor_names.iter().cloned()).collect();
    if args.runs("steady") {
        bench.steady(&nsguard).await;
    }
    if args.runs("drift") && !bench.burst_names.is_empty() {
        bench.settle("drift").await;
        bench.drift(&nsguard).await;
    }
    if args.runs("fanout") && !bench.burst_names.is_empty() {
        bench.settle("fanout").await;
        bench.fanout(&nsguard).await;
    }
    if args.runs("held") {
        bench.held(&nsguard).await;
    }
    if args.runs("restart") {
        nsguard = bench.restart(nsguard).await;
    }
    if args.runs("guard") && !bench.burst_names.is_empty() {
        bench.guard().await;
    }
    if args.runs("memory") && !bench.burst_names.is_empty() {
        bench.memory(&nsguard).await;
    }
    nsguard.stop().await;

    let json_path = args.out.join("report.json");
    let report = stable_keys(&args, &json_path, &bench.report);
    std::fs::write(&json_path, serde_json::to_string_pretty(&report).expect("json")).expect("write report.json");
    let md = markdown(&bench.report);
    std::fs::write(args.out.join("report.md"), &md).expect("write report.md");
    println!("\n{md}\nwrote {} and report.md", json_path.display());
}
