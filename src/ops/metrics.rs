//! Prometheus metrics, served in OpenMetrics text format on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// compliant, converging, drifted, releasing, held, untouched, backoff, error
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DriftLabels {
    /// label, annotation, network_policy_missing, network_policy_changed, ...
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// apply, delete, event, status
    pub verb: &'static str,
    /// namespaces, networkpolicies, serviceaccounts, hardeningprofiles, events
    pub resource: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// Namespace, ServiceAccount, NetworkPolicy, HardeningProfile
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProfileLabels {
    pub profile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartLabels {
    /// The part of the controller's task: runner (hand-offs and timers; each reconcile is a task
    /// of its own), watches, status, finalizers, tamper.
    pub part: &'static str,
}

/// A histogram family whose buckets are set by a plain function.
pub type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GateLabels {
    /// `clean` or `violations`.
    pub result: &'static str,
}

/// nsguard's metrics.
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Family<ResultLabels, Counter>,
    pub reconcile_duration: Histogram,
    /// How long one profile-status pass holds the per-namespace state (reconciles wait meanwhile).
    pub status_pass_duration: Histogram,
    pub drift_corrected: Family<DriftLabels, Counter>,
    pub drift_detected: Family<DriftLabels, Counter>,
    pub writes: Family<WriteLabels, Counter>,
    pub matched: Family<ProfileLabels, Gauge>,
    pub compliant: Family<ProfileLabels, Gauge>,
    pub leader: Gauge,
    pub ready: Gauge,
    /// Namespaces whose profile nsguard cannot see (left as they are).
    pub orphaned: Gauge,
    /// 1 while nsguard writes OpenReports Reports (the CRD is installed and its watch listed).
    pub reports_enabled: Gauge,
    /// 1 while the tamper guard (config/guard) is installed, every policy and binding of it.
    pub guard_active: Gauge,
    pub watch_errors: Family<KindLabels, Counter>,
    /// Dry-runs of a raised enforce level, by result.
    pub gate_checks: Family<GateLabels, Counter>,
    /// Rollout-gate checks of a namespace (first looks and re-checks), each one or more dry-runs.
    pub enforce_checks: Counter,
    /// Namespaces whose enforce level the rollout gate holds below the target.
    pub enforce_held: Gauge,
    /// Active Pod Security exceptions, by profile.
    pub exceptions_active: Family<ProfileLabels, Gauge>,
    /// Namespaces waiting for a reconcile (`controller::queue`).
    pub queue_depth: Gauge,
    /// How long each namespace waited for its reconcile to start, from its first waiting trigger.
    pub queue_wait: Histogram,
    /// How long one poll of each part of the controller's task took: every part waits meanwhile.
    pub poll_duration: Histograms<PartLabels>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("nsguard");
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register("reconciles", "Namespace reconciles, by result", reconciles.clone());
        // 100 µs .. ~6.5 s
        let reconcile_duration =
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 17));
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one namespace reconcile",
            reconcile_duration.clone(),
        );
        // 10 µs .. ~0.3 s
        let status_pass_duration =
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.00001, 2.0, 16));
        registry.register(
            "status_pass_duration_seconds",
            "How long one pass over every namespace's result (for the profile status) holds the state reconciles share",
            status_pass_duration.clone(),
        );
        let drift_corrected = Family::<DriftLabels, Counter>::default();
        registry.register("drift_corrected", "Drift corrected, by kind", drift_corrected.clone());
        let drift_detected = Family::<DriftLabels, Counter>::default();
        registry.register(
            "drift_detected",
            "Drift reported but not corrected (Audit mode), by kind",
            drift_detected.clone(),
        );
        let writes = Family::<WriteLabels, Counter>::default();
        registry.register("write_requests", "Write requests nsguard issued to the API server", writes.clone());
        let matched = Family::<ProfileLabels, Gauge>::default();
        registry.register("profile_matched_namespaces", "Namespaces governed by each profile", matched.clone());
        let compliant = Family::<ProfileLabels, Gauge>::default();
        registry.register(
            "profile_compliant_namespaces",
            "Governed namespaces that match the baseline, by profile",
            compliant.clone(),
        );
        let leader = Gauge::default();
        registry.register("leader", "1 while this replica leads (and writes)", leader.clone());
        let ready = Gauge::default();
        registry.register("ready", "1 once the caches have synced", ready.clone());
        let orphaned = Gauge::default();
        registry.register(
            "orphaned_namespaces",
            "Namespaces whose annotation names a profile nsguard cannot see; left as they are",
            orphaned.clone(),
        );
        let reports_enabled = Gauge::default();
        registry.register(
            "reports_enabled",
            "1 while nsguard writes an OpenReports Report per namespace; 0 while the reports.openreports.io CRD is not installed",
            reports_enabled.clone(),
        );
        let guard_active = Gauge::default();
        registry.register(
            "guard_active",
            "1 while nsguard's tamper guard (ValidatingAdmissionPolicies from config/guard) is installed",
            guard_active.clone(),
        );
        let watch_errors = Family::<KindLabels, Counter>::default();
        registry.register("watch_errors", "Failed watch requests, by kind (each is retried)", watch_errors.clone());
        let gate_checks = Family::<GateLabels, Counter>::default();
        registry.register(
            "enforce_dry_runs",
            "Dry-runs of a raised Pod Security enforce level (rollout: Gated), by result",
            gate_checks.clone(),
        );
        let enforce_checks = Counter::default();
        registry.register(
            "enforce_checks",
            "Rollout-gate checks of a namespace (a first look or a re-check), each one or more enforce dry-runs",
            enforce_checks.clone(),
        );
        let enforce_held = Gauge::default();
        registry.register(
            "enforce_held_namespaces",
            "Namespaces whose enforce level is held below the target because existing pods would violate it",
            enforce_held.clone(),
        );
        let exceptions_active = Family::<ProfileLabels, Gauge>::default();
        registry.register(
            "exceptions_active",
            "Active Pod Security exceptions (spec.exceptions), by profile",
            exceptions_active.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Namespaces waiting for a reconcile (another look ahead of first looks, each in arrival order)",
            queue_depth.clone(),
        );
        // 50 µs .. ~7 min (a burst's backlog at 10,000 namespaces waits minutes)
        let queue_wait = Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.00005, 2.0, 24));
        registry.register(
            "queue_wait_seconds",
            "How long a namespace waited for its reconcile to start, from its first waiting trigger (one that came \
             while the namespace's reconcile ran waits for that reconcile too)",
            queue_wait.clone(),
        );
        // 50 µs .. ~0.8 s
        let poll_duration: Histograms<PartLabels> = Family::new_with_constructor(|| {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.00005, 2.0, 15))
        });
        registry.register(
            "controller_poll_duration_seconds",
            "How long one poll of a part of the controller's task took (runner, watches, status, finalizers, \
             tamper); the other parts wait meanwhile",
            poll_duration.clone(),
        );
        Self {
            poll_duration,
            queue_depth,
            queue_wait,
            gate_checks,
            enforce_checks,
            enforce_held,
            exceptions_active,
            watch_errors,
            orphaned,
            reports_enabled,
            guard_active,
            registry,
            reconciles,
            reconcile_duration,
            status_pass_duration,
            drift_corrected,
            drift_detected,
            writes,
            matched,
            compliant,
            leader,
            ready,
        }
    }
}

impl Metrics {
    pub fn write(&self, verb: &'static str, resource: &'static str) {
        self.writes.get_or_create(&WriteLabels { verb, resource }).inc();
    }

    /// The metrics in OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
