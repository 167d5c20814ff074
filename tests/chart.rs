//! The Helm chart (`charts/nsguard`), with the real helm: it lints strictly, renders what its
//! values say, rejects values its schema does not allow, pins the image, and renders the same RBAC
//! rules, Deployment security settings, PodDisruptionBudget, NetworkPolicy and tamper guard as the
//! kustomize config (`config/`). No cluster needed (tests/helm_install.rs installs it).

#[path = "support/render.rs"]
mod render;

use render::*;
use serde_json::{Value, json};

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn chart_lints_strictly_with_default_and_non_default_values() {
    for extra in [
        &[][..],
        &["--set", "guard.enabled=true,guard.mode=Warn,metrics.serviceMonitor.enabled=true"][..],
        &["--set", &format!("image.digest={DIGEST},replicaCount=1,leaderElection.enabled=false")][..],
    ] {
        let mut args = vec!["lint", "--strict", "charts/nsguard"];
        args.extend_from_slice(extra);
        let out = helm(&args);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && text.contains("0 chart(s) failed"), "helm {}:\n{text}", args.join(" "));
    }
}

#[test]
fn chart_version_is_the_crate_version_and_its_crd_and_guard_are_the_shipped_ones() {
    let chart: Value = serde_saphyr::from_str(&read("charts/nsguard/Chart.yaml")).expect("Chart.yaml");
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
    // Copies, kept identical (`make chart-sync`): Helm cannot read files outside the chart.
    assert!(
        read("charts/nsguard/crds/hardeningprofiles.nsguard.io.yaml") == read("crds/hardeningprofiles.nsguard.io.yaml"),
        "charts/nsguard/crds/ is stale: run `make crds`"
    );
    for file in ["namespaces", "networkpolicies", "serviceaccounts", "pods"] {
        assert!(
            read(&format!("charts/nsguard/files/guard/{file}.yaml")) == read(&format!("config/guard/{file}.yaml")),
            "charts/nsguard/files/guard/{file}.yaml differs from config/guard: run `make chart-sync`"
        );
    }
    // `helm template --include-crds` renders the CRD from crds/; without the flag it is not a
    // release object, so uninstalling never deletes it.
    let with_crds = helm_template(&["--include-crds"]);
    assert_eq!(one(&with_crds, "CustomResourceDefinition")["metadata"]["name"], "hardeningprofiles.nsguard.io");
    assert!(of_kind(&helm_template(&[]), "CustomResourceDefinition").is_empty());
}

#[test]
fn default_values_render_a_pinned_hardened_two_replica_install_without_optional_parts() {
    let objects = helm_template(&[]);
    let kinds: std::collections::BTreeSet<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    let want = [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ];
    assert_eq!(kinds, want.into_iter().collect(), "no ServiceMonitor, no tamper guard by default");
    let deployment = one(&objects, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["image"], format!("nsguard:{}", env!("CARGO_PKG_VERSION")));
    let term = &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(term["podAffinityTerm"]["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(one(&objects, "PodDisruptionBudget")["spec"]["minAvailable"], 1);

    let np = &one(&objects, "NetworkPolicy")["spec"];
    assert_eq!(np["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(np["ingress"].as_array().map(Vec::len), Some(1), "one ingress rule");
    assert_eq!(np["ingress"][0]["ports"], json!([{"port": 8080, "protocol": "TCP"}]), "only the metrics/probe port");
    let egress = np["egress"].as_array().expect("egress");
    assert_eq!(egress.len(), 2, "DNS and the API server, nothing else");
    assert_eq!(egress[0]["to"][0]["podSelector"]["matchLabels"], json!({"k8s-app": "kube-dns"}));
    assert_eq!(egress[1]["ports"], json!([{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]));
}

#[test]
fn non_default_values_render_what_they_say() {
    let objects = helm_template(&[
        "--set",
        "metrics.serviceMonitor.enabled=true,metrics.serviceMonitor.labels.release=prometheus",
        "--set",
        "guard.enabled=true,guard.breakGlassGroup=oncall",
        "--set",
        &format!("image.repository=registry.example.com/nsguard,image.digest={DIGEST}"),
        "--set",
        "networkPolicy.apiServer.cidrs={10.1.2.3/32},networkPolicy.apiServer.ports={6443}",
        "--set",
        "networkPolicy.metrics.namespaceSelector.matchLabels.team=observability",
        "--set",
        "podDisruptionBudget.enabled=false,podAntiAffinity=none,replicaCount=3",
    ]);
    let deployment = one(&objects, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["image"], format!("registry.example.com/nsguard@{DIGEST}"));
    assert!(pod["affinity"].is_null(), "podAntiAffinity=none");
    assert!(of_kind(&objects, "PodDisruptionBudget").is_empty());

    let monitor = one(&objects, "ServiceMonitor");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(monitor["spec"]["endpoints"], json!([{"port": "http", "path": "/metrics", "interval": "30s"}]));
    let service = one(&objects, "Service");
    for (key, value) in monitor["spec"]["selector"]["matchLabels"].as_object().expect("selector") {
        assert_eq!(&service["metadata"]["labels"][key], value, "the ServiceMonitor selects the metrics Service");
    }

    let np = &one(&objects, "NetworkPolicy")["spec"];
    assert_eq!(
        np["egress"][1],
        json!({"to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}], "ports": [{"port": 6443, "protocol": "TCP"}]})
    );
    assert_eq!(np["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["team"], "observability");

    let policies = of_kind(&objects, "ValidatingAdmissionPolicy");
    let bindings = of_kind(&objects, "ValidatingAdmissionPolicyBinding");
    assert_eq!((policies.len(), bindings.len()), (4, 4), "the four tamper-guard policies, bound");
    for binding in bindings {
        assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
    }
    for policy in policies {
        let text = policy.to_string();
        assert!(text.contains("system:serviceaccount:nsguard-system:nsguard"), "nsguard's identity in {text}");
        assert!(text.contains("'oncall' in request.userInfo.groups") && !text.contains("nsguard:break-glass"));
    }
}

#[test]
fn schema_rejects_latest_unknown_keys_and_malformed_digests() {
    for (set, why) in [
        ("image.tag=latest", "a mutable tag"),
        ("image.digest=sha256:1234", "a malformed digest"),
        ("replicas=3", "an unknown key (it is replicaCount)"),
        ("guard.mode=Block", "a guard mode that is not Deny or Warn"),
        ("networkPolicy.apiServer.ports={70000}", "a port out of range"),
    ] {
        let out = helm(&["template", "nsguard", "charts/nsguard", "--set", set]);
        assert!(!out.status.success(), "values.schema.json accepted {why}: --set {set}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("schema"),
            "{set}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = helm(&["template", "nsguard", "charts/nsguard", "--set", "replicaCount=2,leaderElection.enabled=false"]);
    assert!(!out.status.success(), "two replicas without leader election must not render");
}

#[test]
fn no_shipped_manifest_or_chart_default_uses_latest_or_an_untagged_image() {
    let kustomized = kustomize("config/default");
    let charted = helm_template(&["--set", "guard.enabled=true,metrics.serviceMonitor.enabled=true"]);
    for (what, objects) in [("config/default", &kustomized), ("charts/nsguard", &charted)] {
        let images = images(objects);
        assert_eq!(images.len(), 1, "{what}: one container image, got {images:?}");
        for image in images {
            assert!(is_pinned(&image), "{what}: image {image} is neither tagged (not latest) nor pinned by digest");
        }
    }
    for dir in ["config", "charts"] {
        for file in yaml_files(&repo().join(dir)) {
            let text = std::fs::read_to_string(&file).expect("read");
            assert!(!text.contains(":latest"), "{} names a :latest image", file.display());
        }
    }
    assert!(is_pinned("registry.example.com:5000/nsguard:0.1.0") && !is_pinned("registry.example.com:5000/nsguard"));
}

fn yaml_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    out
}

/// Drops what legitimately differs between the two renderings: Helm's bookkeeping labels (the
/// selectors carry `app.kubernetes.io/instance` too) and the image.
fn normalized(mut value: Value) -> Value {
    fn strip(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.remove("app.kubernetes.io/instance");
                map.remove("image");
                for (key, v) in map.iter_mut() {
                    if key != "labels" {
                        strip(v);
                    }
                }
                if let Some(Value::Object(labels)) = map.get_mut("labels") {
                    labels.retain(|k, _| k == "app.kubernetes.io/name" || k.starts_with("rbac.authorization.k8s.io/"));
                }
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut value);
    value
}

#[test]
fn kustomize_and_helm_render_the_same_rbac_and_deployment_security() {
    let kustomized = kustomize("config/default");
    let charted = helm_template(&[]);
    // RBAC: the same roles, by name (release `nsguard`), with the same rules and subjects.
    for kind in ["ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding", "ServiceAccount"] {
        let by_name = |objects: &[Value]| -> std::collections::BTreeMap<String, Value> {
            of_kind(objects, kind)
                .into_iter()
                .map(|o| {
                    let name = o["metadata"]["name"].as_str().expect("name").to_owned();
                    let body = json!({"namespace": o["metadata"]["namespace"], "rules": o["rules"],
                        "subjects": o["subjects"], "roleRef": o["roleRef"],
                        "automount": o["automountServiceAccountToken"],
                        "aggregate": o["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"]});
                    (name, body)
                })
                .collect()
        };
        let (k, h) = (by_name(&kustomized), by_name(&charted));
        assert!(!k.is_empty(), "config/default has no {kind}");
        assert_eq!(k, h, "{kind}s differ between config/ and the chart");
    }
    // The Deployment: replicas, selector, and the whole pod spec (security contexts, token
    // automount, args with leader election, env, probes, resources, anti-affinity), image aside.
    let (k, h) = (one(&kustomized, "Deployment"), one(&charted, "Deployment"));
    assert_eq!(k["spec"]["replicas"], h["spec"]["replicas"]);
    assert_eq!(normalized(k["spec"]["selector"].clone()), normalized(h["spec"]["selector"].clone()));
    let (kpod, hpod) = (&k["spec"]["template"]["spec"], &h["spec"]["template"]["spec"]);
    for field in ["securityContext", "automountServiceAccountToken", "serviceAccountName"] {
        assert_eq!(kpod[field], hpod[field], "pod {field}");
    }
    let (kc, hc) = (&kpod["containers"][0], &hpod["containers"][0]);
    for field in ["securityContext", "args", "env", "ports", "livenessProbe", "readinessProbe", "resources"] {
        assert_eq!(kc[field], hc[field], "container {field}");
    }
    assert!(kc["args"].as_array().expect("args").contains(&json!("--leader-elect=true")));
    assert_eq!(normalized(kpod.clone()), normalized(hpod.clone()), "the rest of the pod spec");
    // And what sits beside it: the PodDisruptionBudget, the metrics Service, the NetworkPolicy.
    for kind in ["PodDisruptionBudget", "Service", "NetworkPolicy"] {
        let (k, h) = (one(&kustomized, kind), one(&charted, kind));
        assert_eq!(k["metadata"]["namespace"], h["metadata"]["namespace"], "{kind} namespace");
        assert_eq!(normalized(k["spec"].clone()), normalized(h["spec"].clone()), "{kind} spec");
    }
}

/// Runs of whitespace in strings as one space: kustomize re-folds the long CEL expressions.
fn squeezed(value: Value) -> Value {
    match value {
        Value::String(s) => Value::String(s.split_whitespace().collect::<Vec<_>>().join(" ")),
        Value::Array(items) => Value::Array(items.into_iter().map(squeezed).collect()),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, squeezed(v))).collect()),
        other => other,
    }
}

#[test]
fn chart_guard_is_config_guard_in_deny_and_warn_mode() {
    for (dir, mode) in [("config/guard", "Deny"), ("config/guard-warn", "Warn")] {
        let kustomized = kustomize(dir);
        let charted = helm_template(&["--set", &format!("guard.enabled=true,guard.mode={mode}")]);
        let pick = |objects: &[Value]| -> Vec<Value> {
            let mut guard: Vec<Value> = objects
                .iter()
                .filter(|o| o["kind"].as_str().is_some_and(|k| k.starts_with("ValidatingAdmissionPolicy")))
                .map(|o| squeezed(json!({"kind": o["kind"], "name": o["metadata"]["name"], "spec": o["spec"]})))
                .collect();
            guard.sort_by_key(|o| o.to_string());
            guard
        };
        let (k, h) = (pick(&kustomized), pick(&charted));
        assert_eq!(k.len(), 8, "{dir}: four policies and four bindings");
        assert_eq!(k, h, "the chart's guard ({mode}) differs from {dir}");
    }
}

#[test]
fn readme_kustomize_overlay_pins_the_image_by_digest() {
    // The overlay README "Deploy" shows, read from the README (so the two cannot drift apart), put
    // two directories below the repository root as the README's `../../config/default` expects.
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let deploy = &readme[readme.find("## Deploy").expect("a Deploy section")..];
    let block = deploy
        .split("```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the kustomize overlay's YAML block");
    assert!(block.starts_with("# overlays/prod/kustomization.yaml"), "{block}");
    assert!(deploy.contains("```sh\nkubectl apply -k overlays/prod\n```"), "one command applies it");
    let overlay = repo().join("target/overlay-digest");
    std::fs::create_dir_all(&overlay).expect("mkdir");
    std::fs::write(overlay.join("kustomization.yaml"), block.replace("sha256:<digest>", DIGEST))
        .expect("write overlay");
    let objects = kustomize("target/overlay-digest");
    assert_eq!(images(&objects), [format!("registry.example.com/nsguard@{DIGEST}")]);
}
