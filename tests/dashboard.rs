//! The Grafana dashboard (`config/grafana/nsguard.json`) queries only what nsguard exports: every
//! metric name in every PromQL expression is one `Metrics::encode` produces (with the `_total`,
//! `_bucket`, `_sum` and `_count` series its types imply), and every label it groups by is one
//! those metrics carry (or one Prometheus adds to every scraped series). No cluster needed.

use std::collections::{BTreeMap, BTreeSet};

use nsguard::ops::metrics::{DriftLabels, KindLabels, Metrics, ProfileLabels, ResultLabels};
use serde_json::Value;

/// Labels Prometheus puts on every series it scrapes (a ServiceMonitor adds pod, namespace, service).
const TARGET_LABELS: [&str; 5] = ["instance", "job", "pod", "namespace", "service"];
/// PromQL functions and aggregations the dashboard may call.
const FUNCTIONS: [&str; 9] =
    ["sum", "max", "min", "avg", "count", "rate", "increase", "histogram_quantile", "clamp_min"];

/// Every series name nsguard exports, with the labels each carries, from its own encoder.
fn exported() -> BTreeMap<String, BTreeSet<String>> {
    let metrics = Metrics::default();
    // One sample in each family, so the encoding shows their labels too.
    metrics.reconciles.get_or_create(&ResultLabels { result: "compliant" }).inc();
    metrics.drift_corrected.get_or_create(&DriftLabels { kind: "label" }).inc();
    metrics.drift_detected.get_or_create(&DriftLabels { kind: "label" }).inc();
    metrics.write("apply", "namespaces");
    metrics.matched.get_or_create(&ProfileLabels { profile: "p".into() }).set(1);
    metrics.compliant.get_or_create(&ProfileLabels { profile: "p".into() }).set(1);
    metrics.watch_errors.get_or_create(&KindLabels { kind: "Namespace" }).inc();
    metrics.reconcile_duration.observe(0.01);
    let text = metrics.encode();
    let mut series: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            // The declared family: the series its type implies exist even before a sample.
            let mut parts = rest.split_whitespace();
            let (name, kind) = (parts.next().expect("name"), parts.next().expect("type"));
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            for suffix in suffixes {
                series.entry(format!("{name}{suffix}")).or_default();
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let name_end = line.find(['{', ' ']).expect("a sample line");
            let labels = series.entry(line[..name_end].to_owned()).or_default();
            if let Some(inner) = line[name_end..].strip_prefix('{').and_then(|l| l.split_once('}')).map(|(l, _)| l) {
                labels.extend(inner.split(',').filter_map(|kv| kv.split_once('=')).map(|(k, _)| k.to_owned()));
            }
        }
    }
    assert!(series.contains_key("nsguard_reconcile_duration_seconds_bucket"), "encoded: {text}");
    series
}

fn dashboard() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/grafana/nsguard.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("config/grafana/nsguard.json")).expect("JSON")
}

/// Every `expr` of every panel (rows' nested panels included), with its panel's title.
fn expressions(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or_default();
            for target in panel["targets"].as_array().into_iter().flatten() {
                out.push((title.to_owned(), target["expr"].as_str().expect("a PromQL expr").to_owned()));
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// The metric names an expression selects, and the labels it groups by.
fn parse(expr: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    // Drop range selectors (`[$__rate_interval]`); number literals are skipped below.
    let mut text = String::new();
    let mut depth = 0;
    for c in expr.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ if depth == 0 => text.push(c),
            _ => {}
        }
    }
    let tokens: Vec<(usize, &str)> = {
        let mut tokens = Vec::new();
        let mut start = None;
        for (i, c) in text.char_indices().chain([(text.len(), ' ')]) {
            let word = c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '.';
            match (start, word) {
                (None, true) => start = Some(i),
                (Some(s), false) => {
                    tokens.push((s, &text[s..i]));
                    start = None;
                }
                _ => {}
            }
        }
        tokens
    };
    let (mut metrics, mut labels) = (BTreeSet::new(), BTreeSet::new());
    let mut grouping = false;
    for (at, token) in tokens {
        let after = text[at + token.len()..].trim_start();
        let next = after.chars().next();
        // `sum by (x) (...)`: an aggregation whose grouping comes first.
        let aggregation = after.starts_with("by ") || after.starts_with("by(") || after.starts_with("without");
        if token.chars().next().is_some_and(|c| c.is_ascii_digit()) {
            continue;
        }
        if token == "by" || token == "without" {
            grouping = true;
        } else if grouping {
            labels.insert(token.to_owned());
            grouping = !text[at + token.len()..].trim_start().starts_with(')');
        } else if next == Some('(') || aggregation {
            assert!(FUNCTIONS.contains(&token), "{expr}: calls {token}, not a function this test knows");
        } else {
            metrics.insert(token.to_owned());
        }
    }
    (metrics, labels)
}

#[test]
fn every_query_names_only_metrics_and_labels_nsguard_exports() {
    let exported = exported();
    let expressions = expressions(&dashboard());
    assert!(!expressions.is_empty(), "the dashboard has no queries");
    for (title, expr) in &expressions {
        let (metrics, labels) = parse(expr);
        assert!(!metrics.is_empty(), "panel {title:?}: {expr} names no metric");
        let mut available: BTreeSet<&str> = TARGET_LABELS.into_iter().collect();
        for metric in &metrics {
            let carried = exported
                .get(metric)
                .unwrap_or_else(|| panic!("panel {title:?}: {metric} is not a metric nsguard exports ({expr})"));
            available.extend(carried.iter().map(String::as_str));
        }
        for label in &labels {
            assert!(available.contains(label.as_str()), "panel {title:?}: groups by {label}, which {metrics:?} lack");
        }
    }
}

#[test]
fn dashboard_shows_compliance_drift_latency_writes_leadership_and_the_queue() {
    let all: String = expressions(&dashboard()).into_iter().map(|(_, e)| e + "\n").collect();
    for (what, needle) in [
        ("compliant namespaces per profile", "max by (profile) (nsguard_profile_compliant_namespaces)"),
        ("matched namespaces per profile", "max by (profile) (nsguard_profile_matched_namespaces)"),
        ("drift corrected per kind", "sum by (kind) (increase(nsguard_drift_corrected_total"),
        (
            "reconcile latency p99",
            "histogram_quantile(0.99, sum by (le) (rate(nsguard_reconcile_duration_seconds_bucket",
        ),
        ("writes per second", "rate(nsguard_write_requests_total"),
        ("leadership", "nsguard_leader"),
        ("queue wait p99", "histogram_quantile(0.99, sum by (le) (rate(nsguard_queue_wait_seconds_bucket"),
        ("queue depth", "nsguard_queue_depth"),
    ] {
        assert!(all.contains(needle), "no panel shows {what} ({needle})");
    }
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "nsguard");
    assert_eq!(
        dashboard["templating"]["list"][0]["type"], "datasource",
        "the Prometheus data source is chosen on import"
    );
}
