//! Reading manifests for `nsguard plan` and `nsguard validate`: files and directories, YAML
//! streams split into documents, each object routed to profiles, namespaces, ServiceAccounts or
//! NetworkPolicies, and every problem located by file, document and field.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::Serialize;
use serde_json::Value;

use crate::core::model::{NamespaceView, NetworkPolicyView, Profile, ServiceAccountView};
use crate::core::validate::FieldError;

/// Where a document came from: a file and the document's position in it (from 1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Origin {
    pub file: PathBuf,
    pub document: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (document {})", self.file.display(), self.document)
    }
}

/// A problem with one document, located by file, document and field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileError {
    #[serde(flatten)]
    pub origin: Origin,
    pub field: String,
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.origin, self.message)
        } else {
            write!(f, "{}: {}: {}", self.origin, self.field, self.message)
        }
    }
}

/// The objects read from files.
#[derive(Default, Debug)]
pub struct Inputs {
    pub profiles: Vec<(Origin, Arc<Profile>)>,
    pub namespaces: Vec<NamespaceView>,
    /// Each with its namespace (the views do not carry it).
    pub service_accounts: Vec<(String, ServiceAccountView)>,
    pub network_policies: Vec<(String, NetworkPolicyView)>,
    /// Problems: unreadable files, broken YAML, invalid profiles.
    pub errors: Vec<FileError>,
}

/// YAML files under `paths` (files as given; directories recursively, `*.yaml`/`*.yml`/`*.json`).
pub fn files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for path in paths {
        collect(path, &mut out).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(out)
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> =
            std::fs::read_dir(path)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
        entries.sort();
        for entry in entries {
            let manifest =
                entry.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
            if entry.is_dir() || manifest {
                collect(&entry, out)?;
            }
        }
    } else {
        std::fs::metadata(path)?;
        out.push(path.to_owned());
    }
    Ok(())
}

/// Reads every document of every file.
pub fn load(paths: &[PathBuf]) -> Result<Inputs, String> {
    let mut inputs = Inputs::default();
    for file in files(paths)? {
        match std::fs::read_to_string(&file) {
            Ok(text) => load_text(&file, &text, &mut inputs),
            Err(e) => inputs.errors.push(FileError {
                origin: Origin { file: file.clone(), document: 0 },
                field: String::new(),
                message: format!("cannot read: {e}"),
            }),
        }
    }
    Ok(inputs)
}

/// Reads the documents of one file's text.
pub fn load_text(file: &Path, text: &str, inputs: &mut Inputs) {
    for (i, document) in documents(text).into_iter().enumerate() {
        let origin = Origin { file: file.to_owned(), document: i + 1 };
        match serde_saphyr::from_str::<Value>(document) {
            Ok(value) => load_object(&origin, value, inputs),
            Err(e) => {
                inputs.errors.push(FileError {
                    origin,
                    field: String::new(),
                    message: format!("invalid YAML: {}", e.without_snippet()),
                });
            }
        }
    }
}

/// The documents of a YAML stream: the text between `---` lines (a leading `---` opens the first).
/// Split by hand so that one broken document is reported as itself and the others still load.
fn documents(text: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        if bare == "---" || bare.starts_with("--- ") {
            if offset > 0 {
                docs.push(&text[start..offset]);
            }
            // Content after `--- ` on the same line belongs to the new document.
            start = offset + 3;
        }
        offset += line.len();
    }
    docs.push(&text[start.min(text.len())..]);
    docs
}

fn load_object(origin: &Origin, value: Value, inputs: &mut Inputs) {
    if value.is_null() {
        return;
    }
    let api_version = value["apiVersion"].as_str().unwrap_or_default();
    let kind = value["kind"].as_str().unwrap_or_default();
    let error = |field: &str, message: String| FileError { origin: origin.clone(), field: field.to_owned(), message };
    match (api_version, kind) {
        ("v1", "List") => {
            for item in value["items"].as_array().cloned().unwrap_or_default() {
                load_object(origin, item, inputs);
            }
        }
        (_, "HardeningProfile") => {
            if api_version != "nsguard.io/v1alpha1" {
                inputs
                    .errors
                    .push(error("apiVersion", format!("{api_version:?} is not served; use \"nsguard.io/v1alpha1\"")));
                return;
            }
            match profile_from(&value) {
                Ok(profile) => {
                    if let Err(errors) = &profile.spec {
                        inputs.errors.extend(errors.iter().map(|e| error(&e.field, e.message.clone())));
                    }
                    inputs.profiles.push((origin.clone(), Arc::new(profile)));
                }
                Err(e) => inputs.errors.push(e.located(origin)),
            }
        }
        ("v1", "Namespace") => match serde_json::from_value::<Namespace>(value) {
            Ok(ns) => inputs.namespaces.push(NamespaceView::from_namespace(&ns)),
            Err(e) => inputs.errors.push(error("", format!("invalid Namespace: {e}"))),
        },
        ("v1", "ServiceAccount") => match serde_json::from_value::<ServiceAccount>(value) {
            Ok(sa) => {
                let namespace = sa.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned());
                inputs.service_accounts.push((namespace, ServiceAccountView::from_object(&sa)));
            }
            Err(e) => inputs.errors.push(error("", format!("invalid ServiceAccount: {e}"))),
        },
        ("networking.k8s.io/v1", "NetworkPolicy") => match serde_json::from_value::<NetworkPolicy>(value) {
            Ok(np) => {
                let namespace = np.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned());
                inputs.network_policies.push((namespace, NetworkPolicyView::from_object(&np)));
            }
            Err(e) => inputs.errors.push(error("", format!("invalid NetworkPolicy: {e}"))),
        },
        // Everything else in a GitOps repository (Deployments, ...) is not nsguard's concern.
        _ => {}
    }
}

impl FieldError {
    fn located(&self, origin: &Origin) -> FileError {
        FileError { origin: origin.clone(), field: self.field.clone(), message: self.message.clone() }
    }
}

/// A profile from a whole object (`metadata` and `spec`), checked as the API server would.
fn profile_from(value: &Value) -> Result<Profile, FieldError> {
    let name = value["metadata"]["name"].as_str().unwrap_or_default();
    let name_ok = !name.is_empty()
        && name.len() <= 253
        && regex::Regex::new(crate::core::crd::DNS1123_SUBDOMAIN).is_ok_and(|re| re.is_match(name));
    if !name_ok {
        return Err(FieldError {
            field: "metadata.name".into(),
            message: format!("{name:?} is not a valid name (RFC 1123 subdomain)"),
        });
    }
    if let Some(extra) = value
        .as_object()
        .and_then(|o| o.keys().find(|k| !["apiVersion", "kind", "metadata", "spec", "status"].contains(&k.as_str())))
    {
        return Err(FieldError { field: extra.clone(), message: "unknown field".into() });
    }
    // The CRD requires `spec` (`spec: {}` selects every namespace with the default baseline).
    let Some(spec) = value.get("spec") else {
        return Err(FieldError {
            field: "spec".into(),
            message: "Required value: a HardeningProfile needs a spec (use `spec: {}` for the defaults)".into(),
        });
    };
    Ok(Profile::parse(name, None, None, spec))
}

/// Checks every HardeningProfile in the files. Returns the errors and how many profiles were read.
/// What `nsguard validate` finds at `now`: errors (invalid profiles, and exceptions nsguard
/// refuses), warnings (exceptions expiring within 7 days), and how many profiles were read.
pub fn validate(
    paths: &[PathBuf],
    now: k8s_openapi::jiff::Timestamp,
) -> Result<(Vec<FileError>, Vec<FileError>, usize), String> {
    let inputs = load(paths)?;
    let mut errors = inputs.errors;
    let mut warnings = Vec::new();
    for (origin, profile) in &inputs.profiles {
        let Ok(valid) = &profile.spec else { continue };
        let located = |field: String, message: String| FileError { origin: origin.clone(), field, message };
        for e in crate::core::exceptions::refusals(&valid.spec, now) {
            errors.push(located(e.field, e.message));
        }
        for soon in crate::core::exceptions::summary(&valid.exceptions, now).expiring_soon {
            warnings.push(located(String::new(), format!("expires within 7 days: {soon}")));
        }
    }
    Ok((errors, warnings, inputs.profiles.len()))
}
