//! The rollout gate's I/O: dry-runs of an enforce label change, and namespace writes whose API
//! warnings are read (kube's typed `Api::patch` drops the response's `Warning` headers, so these
//! go through the raw request path). What the answers mean is decided in [`crate::core::gate`].

use http::Request;
use kube::Client;
use kube::api::{Patch, PatchParams};
use kube::client::Body;
use kube::core::Status;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::debug;

use super::context::Context;
use super::error::{Error, Result};
use crate::core::crd::{PodSecurityLevel, PodSecurityMode};
use crate::core::gate::{Evaluation, evaluate, open, warning_text};
use crate::core::model::{FIELD_MANAGER, PSA_PREFIX};
use crate::ops::metrics::GateLabels;

/// What nsguard reads from a write's response: the object's resourceVersion. The rest of the body
/// (managedFields and all) is skipped by the parser, not decoded into a typed object or a JSON tree.
#[derive(Debug, serde::Deserialize)]
pub struct Versioned {
    #[serde(default)]
    pub metadata: VersionedMeta,
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct VersionedMeta {
    #[serde(rename = "resourceVersion")]
    pub resource_version: Option<String>,
}

/// Sends a request built by `kube::core::Request` and returns the decoded object with the
/// response's warnings.
pub async fn send_warned<K: DeserializeOwned>(
    client: &Client,
    request: Request<Vec<u8>>,
) -> Result<(K, Vec<String>), kube::Error> {
    let response = client.send(request.map(Body::from)).await?;
    let warnings: Vec<String> = response
        .headers()
        .get_all(http::header::WARNING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(warning_text)
        .collect();
    let status = response.status();
    let bytes = response.into_body().collect_bytes().await?;
    if status.is_client_error() || status.is_server_error() {
        let status = serde_json::from_slice::<Status>(&bytes).unwrap_or_else(|_| {
            Status::failure(&String::from_utf8_lossy(&bytes), "Failed to parse error data").with_code(status.as_u16())
        });
        return Err(kube::Error::Api(status.boxed()));
    }
    let object = serde_json::from_slice(&bytes).map_err(kube::Error::SerdeError)?;
    Ok((object, warnings))
}

/// Dry-runs `levels` as the namespace's enforce level, one at a time, until the answers settle
/// every level ([`open`]), and returns each answer.
pub async fn probe(
    ctx: &Context,
    namespace: &str,
    target: &PodSecurityMode,
    levels: &[PodSecurityLevel],
) -> Result<Vec<(PodSecurityLevel, Evaluation)>> {
    let mut results: Vec<(PodSecurityLevel, Evaluation)> = Vec::new();
    while let Some(level) = open(levels, &results).first() {
        let patch = json!({"metadata": {"labels": {
            format!("{PSA_PREFIX}enforce"): level.as_str(),
            format!("{PSA_PREFIX}enforce-version"): target.version,
        }}});
        let params = PatchParams { dry_run: true, field_manager: Some(FIELD_MANAGER.to_owned()), ..Default::default() };
        let request =
            kube::core::Request::new("/api/v1/namespaces")
                .patch(namespace, &params, &Patch::Merge(&patch))
                .map_err(|e| Error::DryRun { namespace: namespace.to_owned(), source: kube::Error::BuildRequest(e) })?;
        let (_, warnings): (serde::de::IgnoredAny, _) = ctx
            .guarded(send_warned(&ctx.client, request))
            .await?
            .map_err(|source| Error::DryRun { namespace: namespace.to_owned(), source })?;
        let evaluation = evaluate(&warnings);
        let result = if evaluation.clean() { "clean" } else { "violations" };
        ctx.metrics.gate_checks.get_or_create(&GateLabels { result }).inc();
        debug!(namespace, level = level.as_str(), result, "enforce dry-run");
        results.push((*level, evaluation));
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write's answer is read for its resourceVersion alone, whatever else the object holds.
    #[test]
    fn a_write_answer_is_read_for_its_resource_version() {
        let answer = json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "team-a", "uid": "6b1f2c3d-0000-4000-8000-000000000001", "resourceVersion": "4711",
                "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
                "managedFields": [{"manager": "nsguard", "operation": "Apply", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:metadata": {"f:labels": {"f:pod-security.kubernetes.io/enforce": {}}}}}]},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"},
        });
        let read: Versioned = serde_json::from_value(answer).expect("a Namespace");
        assert_eq!(read.metadata.resource_version.as_deref(), Some("4711"));
        let bare: Versioned = serde_json::from_str("{}").expect("an answer without metadata");
        assert_eq!(bare.metadata.resource_version, None);
    }
}
