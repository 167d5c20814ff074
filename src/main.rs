//! The `nsguard` command: the controller (`run`) and its companions.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::watch;
use tracing::{info, warn};

use nsguard::controller::leader::{Elector, Leadership, Timing};
use nsguard::controller::{self, Settings};
use nsguard::core::selection::Exclusions;
use nsguard::ops::http::{self, Admin};
use nsguard::ops::metrics::Metrics;
use nsguard::ops::telemetry::{self, LogFormat};

/// nsguard keeps every selected namespace hardened to a declared baseline: Pod Security Admission
/// labels, default-deny NetworkPolicies with DNS allowed, and ServiceAccounts without automounted
/// tokens. Drift is healed as it happens, or only reported in Audit mode.
#[derive(Parser, Debug)]
#[command(name = "nsguard", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controller.
    Run(Box<RunArgs>),
    /// Preview, from manifests, what nsguard would do to each namespace (no cluster needed).
    Plan(nsguard::cli::PlanArgs),
    /// Check HardeningProfiles in files against the CRD's rules and nsguard's own checks.
    Validate(nsguard::cli::ValidateArgs),
    /// Show every governed namespace of a live cluster: profile, compliance, last drift.
    Status(nsguard::cli::StatusArgs),
    /// Print the HardeningProfile CustomResourceDefinition as YAML.
    Crd,
    /// Print nsguard's version.
    Version,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Kubeconfig file; without it, `$KUBECONFIG` (colon-separated files are merged), the
    /// in-cluster configuration or the default kubeconfig is used.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,

    /// Address of the HTTP server for /livez, /readyz and /metrics.
    #[arg(long, env = "NSGUARD_METRICS_ADDRESS", default_value = "0.0.0.0:8080")]
    metrics_address: SocketAddr,

    /// Log format.
    #[arg(long, env = "NSGUARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Log filter, in RUST_LOG syntax (e.g. `info,nsguard=debug`).
    #[arg(long, env = "NSGUARD_LOG", default_value = "info")]
    log_filter: String,

    /// The namespace nsguard runs in: never governed, and home of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "nsguard-system")]
    namespace: String,

    /// This replica's name: the leader-election identity and the reporting instance of Events.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,

    /// Elect a leader among replicas through a coordination.k8s.io Lease; only the leader writes.
    #[arg(long, env = "NSGUARD_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,

    /// Name of the leader-election Lease.
    #[arg(long, env = "NSGUARD_LEASE_NAME", default_value = "nsguard")]
    lease_name: String,

    /// Seconds a leader's lease stays valid without renewal: the longest a takeover can wait.
    #[arg(long, env = "NSGUARD_LEASE_DURATION", default_value_t = 15)]
    lease_duration: u64,

    /// Seconds after its last successful renewal during which the leader may still write; shorter
    /// than --lease-duration, so a stalled leader stops writing before another replica may take over.
    #[arg(long, env = "NSGUARD_LEASE_RENEW_DEADLINE", default_value_t = 10)]
    lease_renew_deadline: u64,

    /// Seconds between lease renewals (and a follower's checks of the lease).
    #[arg(long, env = "NSGUARD_LEASE_RETRY_PERIOD", default_value_t = 2)]
    lease_retry_period: u64,

    /// Also govern kube-system, kube-public, kube-node-lease and nsguard's own namespace.
    #[arg(long, env = "NSGUARD_INCLUDE_SYSTEM_NAMESPACES")]
    include_system_namespaces: bool,

    /// Namespace-name globs nsguard never governs, whatever the profiles say (comma-separated).
    #[arg(long, env = "NSGUARD_EXCLUDE_NAMESPACES", value_delimiter = ',')]
    exclude_namespaces: Vec<String>,

    /// Only watch namespaces matching this label selector (e.g. to shard, or to roll out gradually).
    #[arg(long, env = "NSGUARD_NAMESPACE_SELECTOR")]
    namespace_selector: Option<String>,

    /// Only watch HardeningProfiles matching this label selector.
    #[arg(long, env = "NSGUARD_PROFILE_SELECTOR")]
    profile_selector: Option<String>,

    /// Namespaces reconciled at once.
    #[arg(long, env = "NSGUARD_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,

    /// Seconds between full re-checks of every namespace (a backstop; drift is handled from watches).
    #[arg(long, env = "NSGUARD_RESYNC_SECONDS", default_value_t = 1800)]
    resync_seconds: u64,

    /// Seconds between re-checks of a namespace whose Pod Security enforce level is held below its
    /// profile's (rollout: Gated), plus up to a fifth more, spread by namespace name.
    #[arg(long, env = "NSGUARD_ENFORCE_RECHECK_SECONDS", default_value_t = 300)]
    enforce_recheck_seconds: u64,
}

/// mimalloc rather than glibc malloc: nsguard's work is bursts of small, short-lived allocations
/// (watch events, apply bodies, Reports) across the runtime's threads, where glibc's malloc and
/// its consolidation took about a quarter of nsguard's CPU samples (BENCHMARKS.md). Built without
/// transparent huge pages (`no_thp`) and set to return freed memory at once (`purge_delay` 0, in
/// [`tune_allocator`]): with mimalloc's defaults the resident set at 1,000 namespaces doubled.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    tune_allocator();
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?.block_on(start())
}

/// Freed memory goes back to the OS at once instead of after mimalloc's default second. A
/// `MIMALLOC_PURGE_DELAY` set in the environment still wins.
fn tune_allocator() {
    /// `mi_option_purge_delay` in mimalloc.h (v2 and v3 alike); libmimalloc-sys names no constant.
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's options, which it reads on each purge; no pointers.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

async fn start() -> anyhow::Result<()> {
    match parse_cli().command {
        Command::Crd => {
            print!("{}", nsguard::cli::crd::crd_yaml()?);
            Ok(())
        }
        Command::Version => {
            println!("nsguard {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Run(args) => run(*args).await,
        Command::Plan(args) => exit(nsguard::cli::plan(&args)?),
        Command::Validate(args) => exit(nsguard::cli::validate(&args)?),
        Command::Status(args) => {
            let client = client(args.kubeconfig.as_ref()).await?;
            exit(nsguard::cli::status(&args, client).await?)
        }
    }
}

/// The command line; named `kubectl nsguard` in help and errors when run as the kubectl plugin.
fn parse_cli() -> Cli {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let mut command = Cli::command();
    if let Some(name) = nsguard::cli::plugin_name(std::path::Path::new(&argv0)) {
        command = command.bin_name(name);
    }
    Cli::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit())
}

fn exit(code: i32) -> anyhow::Result<()> {
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}

async fn client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path).with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await.context("no kubeconfig and not in a cluster")?,
    };
    nsguard::ops::client::build(config).context("building the Kubernetes client")
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        () = term => {},
    }
    info!("shutting down");
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format, &args.log_filter)?;
    let client = client(args.kubeconfig.as_ref()).await?;
    let exclusions = Exclusions::new(Some(&args.namespace), args.include_system_namespaces, &args.exclude_namespaces)
        .map_err(|e| anyhow::anyhow!("--exclude-namespaces: {e}"))?;
    let identity = args.identity.clone().unwrap_or_else(|| {
        format!(
            "nsguard-{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0)
        )
    });
    let settings = Settings {
        exclusions,
        namespace_selector: args.namespace_selector.clone(),
        profile_selector: args.profile_selector.clone(),
        concurrency: args.concurrency.max(1),
        resync: Duration::from_secs(args.resync_seconds.max(10)),
        enforce_recheck: Duration::from_secs(args.enforce_recheck_seconds.max(1)),
        instance: Some(identity.clone()),
        ..Settings::default()
    };
    let metrics = Arc::new(Metrics::default());
    let handle: Arc<std::sync::OnceLock<controller::Handle>> = Arc::default();
    let ready = {
        let handle = handle.clone();
        Arc::new(move || handle.get().is_some_and(controller::Handle::is_ready))
    };
    let admin = Admin { ready, metrics: metrics.clone() };

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };

    // Leader election: only the leader writes, and only until its renew deadline.
    let (leader, elector) = if args.leader_elect {
        let timing = Timing {
            duration: Duration::from_secs(args.lease_duration),
            renew_deadline: Duration::from_secs(args.lease_renew_deadline),
            retry_period: Duration::from_secs(args.lease_retry_period),
        };
        timing.validate().map_err(anyhow::Error::msg)?;
        let (tx, leader) = Leadership::channel();
        let elector = Elector::new(client.clone(), &args.namespace, &args.lease_name, &identity, timing);
        // The elector stops when told whether it may release the lease (true once the reconciles
        // have drained).
        let (stop_lease, lease_stopped) = tokio::sync::oneshot::channel::<bool>();
        let task = tokio::spawn(elector.run(tx, async move { lease_stopped.await.unwrap_or(false) }));
        (leader, Some((stop_lease, task)))
    } else {
        (Leadership::unconditional(), None)
    };
    let leader_gauge = metrics.clone();
    let mut leader_changes = leader.clone();
    let leader_log = tokio::spawn(async move {
        let mut was = None;
        loop {
            let is = leader_changes.is_leader();
            if was != Some(is) {
                leader_gauge.leader.set(i64::from(is));
                info!(leader = is, "leadership");
                was = Some(is);
            }
            if !leader_changes.changed().await {
                break;
            }
        }
    });

    let server = tokio::spawn(http::serve(args.metrics_address, admin.clone(), stopped()));
    let handle_slot = handle.clone();
    // A task on the runtime's workers, not `block_on`'s main thread: the reconciles the controller
    // hands on then start on the worker already awake, instead of each waiting for a parked worker
    // thread to be woken (and each watch event for the main thread). Traced at 10,000 namespaces
    // under load, one reconcile waited 7.6 ms for that wake-up, longer than a drift heal's median.
    let mut controller =
        tokio::spawn(controller::run(client, settings, metrics, leader.clone(), stopped(), move |handle| {
            let _ = handle_slot.set(handle);
        }));
    // Whether the reconciles drained, and why the process fails if it does.
    let (drained, failed) = tokio::select! {
        result = &mut controller => {
            // It ended by itself (it said which part): its reconciles were cancelled, not drained,
            // so the lease is left to expire and the process exits with an error.
            let failed = match result {
                Ok(stopped) => anyhow::anyhow!("the controller stopped by itself: {stopped:?}"),
                // A reconcile panicked: so does the process, as before.
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => e.into(),
            };
            (false, Some(failed))
        }
        () = shutdown_signal() => {
            let _ = stop_tx.send(true);
            // Let in-flight reconciles finish.
            let ended = tokio::time::timeout(Duration::from_secs(20), &mut controller).await.ok();
            if ended.is_none() {
                warn!("reconciles still running after 20s; exiting without releasing the lease");
            }
            (controller::may_release(ended), None)
        }
    };
    // Stops it if it did not drain (a no-op once it ended).
    controller.abort();
    // In-flight reconciles have drained: only now give the lease up, so a successor never writes
    // while this replica still does. If they did not drain, the lease is left to expire: a
    // successor waits a lease duration, by which time this replica's renew deadline has passed.
    let _ = stop_tx.send(true);
    leader_log.abort();
    if let Some((stop_lease, task)) = elector {
        let _ = stop_lease.send(drained);
        if tokio::time::timeout(Duration::from_secs(15), task).await.is_err() {
            warn!("timed out releasing the leader lease");
        }
    }
    let served = match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Err(e))) => Err(anyhow::Error::from(e).context("HTTP server")),
        _ => Ok(()),
    };
    failed.map_or(served, Err)
}
