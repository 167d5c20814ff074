//! Generated files are checked, not trusted: the CRD YAML in `crds/` and `config/crd/bases/` must
//! equal what the Rust types generate (`make crds` regenerates both).

use std::path::Path;

const FILES: [&str; 2] =
    ["crds/hardeningprofiles.nsguard.io.yaml", "config/crd/bases/hardeningprofiles.nsguard.io.yaml"];

fn read(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn committed_crd_matches_the_rust_types() {
    let generated = nsguard::cli::crd::crd_yaml().expect("CRD serializes");
    for file in FILES {
        assert!(read(file) == generated, "{file} is stale: run `make crds` and commit the result");
    }
}

#[test]
fn nsguard_crd_prints_the_committed_crd() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nsguard")).arg("crd").output().expect("run nsguard crd");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).expect("utf-8"), read(FILES[0]));
}

#[test]
fn crd_has_the_names_columns_and_scope_users_rely_on() {
    let crd: serde_json::Value = serde_saphyr::from_str(&read(FILES[0])).expect("yaml");
    assert_eq!(crd["spec"]["scope"], "Cluster");
    assert_eq!(crd["spec"]["group"], "nsguard.io");
    assert_eq!(crd["spec"]["names"]["shortNames"], serde_json::json!(["hp"]));
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .expect("columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    for want in ["Mode", "Matched", "Compliant", "Ready", "Age"] {
        assert!(columns.contains(&want), "printer column {want} missing: {columns:?}");
    }
    assert!(version["subresources"]["status"].is_object(), "status subresource");
}
