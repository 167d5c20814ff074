//! `kubectl nsguard`: the nsguard binary installed on the PATH as `kubectl-nsguard` is a kubectl
//! plugin (`kubectl plugin list` finds it, `kubectl nsguard validate|plan|status` run it), and its
//! help names it as it was called. Uses the control plane's kubectl; `status` needs the local control
//! plane.

#[path = "support/render.rs"]
mod render;

use std::path::PathBuf;
use std::process::{Command, Output};

/// A directory holding only `kubectl-nsguard`, a symlink to the built binary (made once).
fn plugin_dir() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = render::repo().join("target/plugin-path");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_nsguard"), dir.join("kubectl-nsguard")).expect("symlink");
        dir
    })
}

/// Runs the cached kubectl with `dir` first on the PATH.
fn kubectl(dir: &std::path::Path, args: &[&str]) -> Output {
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default());
    Command::new(render::kubectl_bin())
        .args(args)
        .env("PATH", path)
        .current_dir(render::repo())
        .output()
        .expect("run kubectl")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn kubectl_finds_and_runs_nsguard_as_a_plugin() {
    let dir = plugin_dir();
    let list = kubectl(dir, &["plugin", "list"]);
    let plugin = dir.join("kubectl-nsguard");
    assert!(
        stdout(&list).lines().any(|l| l.trim() == plugin.to_str().expect("utf-8")),
        "kubectl plugin list does not show {}:\n{}{}",
        plugin.display(),
        stdout(&list),
        String::from_utf8_lossy(&list.stderr)
    );

    let valid = kubectl(dir, &["nsguard", "validate", "-f", "config/samples"]);
    assert!(valid.status.success(), "{}", String::from_utf8_lossy(&valid.stderr));
    assert_eq!(stdout(&valid).trim(), "2 HardeningProfile(s) valid");
    // Exit status and output come through kubectl unchanged.
    let invalid = kubectl(dir, &["nsguard", "validate", "-f", "tests/fixtures/invalid/bad-version.yaml"]);
    assert_eq!(invalid.status.code(), Some(1), "{}", stdout(&invalid));
    assert!(stdout(&invalid).contains("is not a Pod Security Standards version"), "{}", stdout(&invalid));
    let plan = kubectl(dir, &["nsguard", "plan", "-f", "tests/fixtures/gitops", "-o", "json"]);
    assert!(plan.status.success(), "{}", String::from_utf8_lossy(&plan.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).expect("plan -o json");
    assert!(plan["namespaces"].as_array().is_some_and(|n| !n.is_empty()));
}

#[test]
fn help_names_the_plugin_as_kubectl_nsguard() {
    let dir = plugin_dir();
    let help = kubectl(dir, &["nsguard", "--help"]);
    assert!(help.status.success());
    assert!(stdout(&help).contains("Usage: kubectl nsguard <COMMAND>"), "{}", stdout(&help));
    let help = kubectl(dir, &["nsguard", "validate", "--help"]);
    assert!(stdout(&help).contains("Usage: kubectl nsguard validate"), "{}", stdout(&help));
    let wrong = kubectl(dir, &["nsguard", "valdiate"]);
    assert_eq!(wrong.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("Usage: kubectl nsguard <COMMAND>"));
    // Called by its own name, it is still `nsguard`.
    let own = Command::new(env!("CARGO_BIN_EXE_nsguard")).arg("--help").output().expect("nsguard --help");
    assert!(stdout(&own).contains("Usage: nsguard <COMMAND>"), "{}", stdout(&own));
}

#[test]
fn kubectl_nsguard_status_reads_the_cluster() {
    // The plugin inherits kubectl's environment: KUBECONFIG names the local control plane (this
    // test fails without it, as every test that needs the cluster does).
    let kubeconfig = std::env::var_os("NSGUARD_KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| render::repo().join("target/cluster/kubeconfig"));
    let dir = plugin_dir();
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default());
    let run = |args: &[&str]| {
        Command::new(render::kubectl_bin())
            .args(args)
            .env("PATH", &path)
            .env("KUBECONFIG", &kubeconfig)
            .current_dir(render::repo())
            .output()
            .expect("run kubectl")
    };
    // nsguard's CRD and RBAC, as every cluster test installs them.
    let install = run(&["apply", "-k", "config/default"]);
    assert!(install.status.success(), "kubectl apply -k config/default: {}", String::from_utf8_lossy(&install.stderr));
    let crd = "crd/hardeningprofiles.nsguard.io";
    assert!(run(&["wait", "--for=condition=Established", "--timeout=60s", crd]).status.success());
    let out = run(&["nsguard", "status", "--all", "-o", "json"]);
    assert!(
        out.status.success(),
        "kubectl nsguard status (KUBECONFIG={}): {}",
        kubeconfig.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status -o json");
    let names: Vec<&str> =
        status["namespaces"].as_array().into_iter().flatten().filter_map(|n| n["namespace"].as_str()).collect();
    assert!(names.contains(&"kube-system") && names.contains(&"default"), "{names:?}");
}
