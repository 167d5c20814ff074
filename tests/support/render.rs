//! The real tools, from the cache outside the clone: helm (`tests/cluster/helm.sh`, built from the
//! pinned Go module) and the control plane's kubectl (`tests/cluster/build.sh`), to render and
//! install nsguard's chart and kustomize config. Rendering needs no running cluster.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The last line a script prints: the path of what it built or found in the cache.
fn script_output(script: &str) -> PathBuf {
    let out = Command::new(repo().join(script)).output().unwrap_or_else(|e| panic!("running {script}: {e}"));
    assert!(out.status.success(), "{script} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(stdout.lines().last().unwrap_or_else(|| panic!("{script} printed nothing")).trim())
}

/// The helm binary (built once into the cache on a cold machine).
pub fn helm_bin() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| script_output("tests/cluster/helm.sh"))
}

/// The control plane's kubectl (built once into the cache on a cold machine).
pub fn kubectl_bin() -> &'static Path {
    static KUBECTL: OnceLock<PathBuf> = OnceLock::new();
    KUBECTL.get_or_init(|| script_output("tests/cluster/build.sh").join("kubectl"))
}

/// Runs helm with its own, empty configuration and cache (under target/), from the repository root.
pub fn helm(args: &[&str]) -> Output {
    let home = repo().join("target/helm-home");
    Command::new(helm_bin())
        .args(args)
        .current_dir(repo())
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .expect("run helm")
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every document of a multi-document YAML stream (empty ones dropped).
pub fn documents(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .expect("rendered YAML parses")
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// `helm template nsguard charts/nsguard -n nsguard-system ARGS...`, parsed.
pub fn helm_template(args: &[&str]) -> Vec<Value> {
    let mut all = vec!["template", "nsguard", "charts/nsguard", "--namespace", "nsguard-system"];
    all.extend_from_slice(args);
    documents(&ok(&helm(&all), &format!("helm {}", all.join(" "))))
}

/// `kubectl kustomize DIR`, parsed.
pub fn kustomize(dir: &str) -> Vec<Value> {
    let out = Command::new(kubectl_bin()).args(["kustomize", dir]).current_dir(repo()).output().expect("run kubectl");
    documents(&ok(&out, &format!("kubectl kustomize {dir}")))
}

/// The objects of `kind`.
pub fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// The one object of `kind`.
pub fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(objects, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    found[0]
}

/// Every container image the objects name.
pub fn images(objects: &[Value]) -> Vec<String> {
    fn walk(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("image", Value::String(image)) => out.push(image.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    objects.iter().for_each(|o| walk(o, &mut out));
    out
}

/// Whether an image reference is pinned: a digest, or a tag other than `latest`.
pub fn is_pinned(image: &str) -> bool {
    if let Some((_, digest)) = image.split_once('@') {
        return digest
            .strip_prefix("sha256:")
            .is_some_and(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()));
    }
    // The tag follows the last ':' after the last '/' (a registry may have a port).
    let last = image.rsplit('/').next().unwrap_or(image);
    matches!(last.split_once(':'), Some((_, tag)) if !tag.is_empty() && tag != "latest")
}
