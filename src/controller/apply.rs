//! Executes the writes a [`Decision`](crate::core::decide::Decision) names: server-side applies
//! with field manager `nsguard` (carrying the object's UID, so a write never re-creates an object
//! someone deleted), and deletes of nsguard's own NetworkPolicies. Each write is guarded by
//! leadership and a timeout, and remembered until the watch shows it.

use std::time::Instant;

use futures::{FutureExt, StreamExt, stream};
use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::context::Context;
use super::error::{Error, Result};
use super::gate::{Versioned, send_warned};
use crate::core::decide::action_key;
use crate::core::desired::recreate_after_apply;
use crate::core::ids::{revision, uid};
use crate::core::model::{FIELD_MANAGER, NamespaceView, NetworkPolicyView, TOKEN_GUARD_LABEL, Uid};
use crate::core::plan::Action;
use crate::core::report;

/// Writes one namespace sends at once (a namespace with 2,000 ServiceAccounts must not open 2,000
/// requests, nor hold 2,000 responses in memory).
pub const WRITE_CONCURRENCY: usize = 8;

/// What a write left behind.
enum Written {
    /// The object at this resourceVersion.
    Object(Option<u64>),
    /// The object is gone.
    Deleted,
    /// Nothing changed.
    Nothing,
}

/// What writing `after` left: the object at its resourceVersion.
fn written<K: kube::Resource>(after: &K) -> Written {
    Written::Object(revision(after.meta().resource_version.as_deref()))
}

/// A server-side apply of `patch` to `name` under `url_path` (to its `subresource`, if any), as
/// nsguard.
fn apply_request<P: serde::Serialize>(
    url_path: &str,
    subresource: Option<&str>,
    name: &str,
    patch: &P,
) -> std::result::Result<http::Request<Vec<u8>>, kube::core::request::Error> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let request = kube::core::Request::new(url_path);
    match subresource {
        Some(sub) => request.patch_subresource(sub, name, &params, &Patch::Apply(patch)),
        None => request.patch(name, &params, &Patch::Apply(patch)),
    }
}

/// Sends a write, reading only the resourceVersion of the answer (see [`Versioned`]): the object's
/// version after the write, and the answer's warnings.
async fn send_versioned(
    ctx: &Context,
    request: std::result::Result<http::Request<Vec<u8>>, kube::core::request::Error>,
) -> Result<std::result::Result<(Option<u64>, Vec<String>), kube::Error>> {
    let request = match request {
        Ok(request) => request,
        Err(e) => return Ok(Err(kube::Error::BuildRequest(e))),
    };
    let answer = ctx.guarded(send_warned::<Versioned>(&ctx.client, request)).await?;
    Ok(answer.map(|(after, warnings)| (revision(after.metadata.resource_version.as_deref()), warnings)))
}

/// 404: the object was deleted; 409 on an apply or delete with a UID precondition, or 422 on an
/// apply whose UID no longer matches: it was deleted (and maybe re-created). Either way its watch
/// event brings a fresh reconcile.
pub fn gone(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404 || s.code == 409 || (s.code == 422 && s.message.contains("uid")))
}

/// Runs `writes`: everything but the namespace, a bounded number at a time; the namespace (its
/// annotation marks it hardened) last. Returns the API's warnings to the namespace writes.
pub async fn execute(ctx: &Context, ns: &NamespaceView, writes: &[Action]) -> Result<Vec<String>> {
    let (namespace_writes, others): (Vec<&Action>, Vec<&Action>) =
        writes.iter().partition(|a| matches!(a, Action::ApplyNamespace { .. }));
    // Boxed: keeps the future's type nameable, so the controller's stream stays `Send`. Every
    // write runs to its end (and is recorded) even when another fails; the first error is returned.
    let writes: Vec<futures::future::BoxFuture<'_, Result<Vec<String>>>> =
        others.into_iter().map(|a| execute_one(ctx, ns, a).boxed()).collect();
    let results: Vec<Result<Vec<String>>> = stream::iter(writes).buffer_unordered(WRITE_CONCURRENCY).collect().await;
    results.into_iter().collect::<Result<Vec<_>>>()?;
    let mut warnings = Vec::new();
    for a in namespace_writes {
        warnings.extend(execute_one(ctx, ns, a).await?);
    }
    Ok(warnings)
}

async fn execute_one(ctx: &Context, ns: &NamespaceView, action: &Action) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let namespace = ns.name.as_str();
    let (written, resource, verb) = match action {
        Action::ApplyNamespace { labels, annotations } => {
            let mut metadata = json!({"name": namespace});
            if let Some(uid) = &ns.uid {
                metadata["uid"] = json!(uid);
            }
            if !labels.is_empty() {
                metadata["labels"] = json!(labels);
            }
            if !annotations.is_empty() {
                metadata["annotations"] = json!(annotations);
            }
            let patch = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": metadata});
            let before = ctx.namespaces.get(&ObjectRef::new(namespace)).and_then(|n| n.version);
            // Its warnings are Pod Security Admission's about existing pods.
            let written =
                match send_versioned(ctx, apply_request(&Namespace::url_path(&(), None), None, namespace, &patch))
                    .await?
                {
                    Ok((after, said)) => {
                        warnings = said;
                        if after.is_some() && after == before { Written::Nothing } else { Written::Object(after) }
                    }
                    Err(e) if gone(&e) => Written::Nothing,
                    Err(source) => return Err(Error::ApplyNamespace { namespace: namespace.to_owned(), source }),
                };
            (written, "namespaces", "apply")
        }
        Action::ApplyNetworkPolicy(np) if np.metadata.uid.is_none() => {
            // Not in nsguard's cache: create it, never apply over an object someone else made.
            let name = np.name_any();
            let api = Api::<NetworkPolicy>::namespaced(ctx.client.clone(), namespace);
            let params = PostParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..Default::default() };
            let body = serde_json::to_vec(np.as_ref()).map_err(|e| Error::ApplyNetworkPolicy {
                namespace: namespace.to_owned(),
                name: name.clone(),
                source: kube::Error::SerdeError(e),
            })?;
            let request = kube::core::Request::new(NetworkPolicy::url_path(&(), Some(namespace))).create(&params, body);
            match send_versioned(ctx, request).await? {
                Ok((after, _)) => (Written::Object(after), "networkpolicies", "create"),
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    // nsguard's own policy, not yet in the cache (a lost response, a lagging
                    // watch), or someone else's: only the label tells.
                    match ctx.guarded(api.get_opt(&name)).await? {
                        Ok(Some(found)) if NetworkPolicyView::from_object(&found).managed_by_nsguard() => {
                            (written(&found), "networkpolicies", "create")
                        }
                        Ok(Some(_)) => return Err(Error::Taken { namespace: namespace.to_owned(), name }),
                        Ok(None) => (Written::Nothing, "networkpolicies", "create"),
                        Err(source) => {
                            return Err(Error::ApplyNetworkPolicy { namespace: namespace.to_owned(), name, source });
                        }
                    }
                }
                Err(e) if gone(&e) => (Written::Nothing, "networkpolicies", "create"),
                Err(source) => {
                    return Err(Error::ApplyNetworkPolicy { namespace: namespace.to_owned(), name, source });
                }
            }
        }
        Action::ApplyNetworkPolicy(np) => {
            let name = np.name_any();
            let api = Api::<NetworkPolicy>::namespaced(ctx.client.clone(), namespace);
            match ctx.guarded(api.patch(&name, &apply, &Patch::Apply(np.as_ref()))).await? {
                Ok(after) if recreate_after_apply(np, after.spec.as_ref()) => {
                    ctx.metrics.write("apply", "networkpolicies");
                    (
                        delete_policy(ctx, &api, namespace, &name, uid(&after.metadata).as_ref()).await?,
                        "networkpolicies",
                        "delete",
                    )
                }
                Ok(after) => (written(&after), "networkpolicies", "apply"),
                Err(e) if gone(&e) => (Written::Nothing, "networkpolicies", "apply"),
                Err(source) => {
                    return Err(Error::ApplyNetworkPolicy { namespace: namespace.to_owned(), name, source });
                }
            }
        }
        Action::DeleteNetworkPolicy { name, uid } => {
            let api = Api::<NetworkPolicy>::namespaced(ctx.client.clone(), namespace);
            (delete_policy(ctx, &api, namespace, name, uid.as_ref()).await?, "networkpolicies", "delete")
        }
        Action::ApplyReport(body) => {
            let path = DynamicObject::url_path(&report::resource(), Some(namespace));
            let written = match send_versioned(ctx, apply_request(&path, None, report::NAME, body.as_ref())).await? {
                Ok((after, _)) => Written::Object(after),
                Err(e) if gone(&e) => Written::Nothing,
                Err(source) => return Err(Error::ApplyReport { namespace: namespace.to_owned(), source }),
            };
            (written, "reports", "apply")
        }
        Action::DeleteReport { uid } => {
            let api = Api::<DynamicObject>::namespaced_with(ctx.client.clone(), namespace, &report::resource());
            let params = DeleteParams { preconditions: same_object(uid.as_ref()), ..Default::default() };
            let written = match ctx.guarded(api.delete(report::NAME, &params)).await? {
                Ok(_) => Written::Deleted,
                Err(e) if gone(&e) => Written::Nothing,
                Err(source) => return Err(Error::DeleteReport { namespace: namespace.to_owned(), source }),
            };
            (written, "reports", "delete")
        }
        Action::ApplyCondition(condition) => {
            (apply_condition(ctx, ns, condition.as_deref()).await?, "namespaces/status", "apply")
        }
        Action::DisableAutomount { name, uid }
        | Action::ReleaseAutomount { name, uid }
        | Action::UnguardAccount { name, uid } => {
            let mut patch = json!({
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": name, "namespace": namespace},
            });
            if let Some(uid) = uid {
                patch["metadata"]["uid"] = json!(uid);
            }
            if matches!(action, Action::DisableAutomount { .. } | Action::UnguardAccount { .. }) {
                patch["automountServiceAccountToken"] = json!(false);
            }
            if matches!(action, Action::DisableAutomount { .. }) {
                // The tamper guard's marker: this ServiceAccount's token stays off.
                patch["metadata"]["labels"] = json!({TOKEN_GUARD_LABEL: "true"});
            }
            let path = ServiceAccount::url_path(&(), Some(namespace));
            let written = match send_versioned(ctx, apply_request(&path, None, name, &patch)).await? {
                Ok((after, _)) => Written::Object(after),
                Err(e) if gone(&e) => Written::Nothing,
                Err(source) => {
                    return Err(Error::ApplyServiceAccount {
                        namespace: namespace.to_owned(),
                        name: name.clone(),
                        source,
                    });
                }
            };
            (written, "serviceaccounts", "apply")
        }
    };
    ctx.metrics.write(verb, resource);
    // Remember the write until the cache shows it. The watch handler updates the cache before it
    // clears pending entries (under the state lock), so checking the cache under the same lock
    // cannot miss an event that raced ahead of this response.
    let key = action_key(namespace, action);
    let mut state = ctx.state();
    let cached = ctx.cached_version(&key);
    let (caught_up, version) = match written {
        Written::Nothing => (true, None),
        // The cache shows this write or a later version of the object (resourceVersions only
        // grow; a later writer's change is then the cache's to show, and is reconciled as drift).
        // An unknown version never counts as caught up: the write stays pending until an event.
        Written::Object(rv) => (cached.flatten().zip(rv).is_some_and(|(c, rv)| c >= rv), rv),
        Written::Deleted => (cached.is_none(), None),
    };
    if !caught_up {
        let pending = &mut state.namespaces.entry(namespace.to_owned()).or_default().pending;
        pending.record_version(key, Instant::now(), version);
    }
    Ok(warnings)
}

/// Applies nsguard's condition to the namespace's status subresource (only that condition: the list
/// is a map keyed by type, and nsguard owns only its entry), or removes it when `condition` is `None`.
async fn apply_condition(ctx: &Context, ns: &NamespaceView, condition: Option<&NamespaceCondition>) -> Result<Written> {
    let mut patch = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns.name}});
    if let Some(uid) = &ns.uid {
        patch["metadata"]["uid"] = json!(uid);
    }
    if let Some(condition) = condition {
        let mut condition = condition.clone();
        condition.last_transition_time.get_or_insert_with(|| Time(Timestamp::now()));
        patch["status"] = json!({"conditions": [condition]});
    }
    match send_versioned(ctx, apply_request(&Namespace::url_path(&(), None), Some("status"), &ns.name, &patch)).await? {
        Ok((after, _)) => Ok(Written::Object(after)),
        Err(e) if gone(&e) => Ok(Written::Nothing),
        Err(source) => Err(Error::ApplyCondition { namespace: ns.name.clone(), source }),
    }
}

/// A delete's precondition: only the object with this UID (not one recreated under its name).
fn same_object(uid: Option<&Uid>) -> Option<Preconditions> {
    uid.map(|uid| Preconditions { uid: Some(uid.to_string()), resource_version: None })
}

/// Deletes nsguard's NetworkPolicy `name`, only while it is still the object with `uid`.
async fn delete_policy(
    ctx: &Context,
    api: &Api<NetworkPolicy>,
    namespace: &str,
    name: &str,
    uid: Option<&Uid>,
) -> Result<Written> {
    let params = DeleteParams { preconditions: same_object(uid), ..Default::default() };
    match ctx.guarded(api.delete(name, &params)).await? {
        Ok(_) => Ok(Written::Deleted),
        Err(e) if gone(&e) => Ok(Written::Nothing),
        Err(source) => {
            Err(Error::DeleteNetworkPolicy { namespace: namespace.to_owned(), name: name.to_owned(), source })
        }
    }
}
