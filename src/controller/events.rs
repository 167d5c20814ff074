//! Kubernetes Events about namespaces (`kubectl events -n NS`, `kubectl describe`).
//!
//! kube's `Recorder` folds repeats of one reason into a series that keeps the first note; nsguard's
//! notes say exactly what drifted, and nsguard only sends an event when something changed, so each
//! event is created as its own object. An event lives in the namespace of the object it regards:
//! one of nsguard's objects in the namespace it is about (so that namespace's owners can read it),
//! with the Namespace as `related`; or, when nsguard owns nothing there, the Namespace itself, in
//! `default` (the Events API requires a namespace; cluster-scoped objects' events go there).

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use tokio::sync::mpsc;

use kube::api::{Api, ObjectMeta, PostParams};

use crate::core::announce::{Announcement, Severity, Subject, truncate};
use crate::core::ids::Uid;
use crate::core::report;
use crate::ops::metrics::Metrics;

/// Publishes events as controller `nsguard`.
#[derive(Clone)]
pub struct Publisher {
    client: Client,
    instance: String,
}

/// Events allow 1 kB of note.
pub const MAX_NOTE: usize = 1000;

impl Publisher {
    pub fn new(client: Client, instance: Option<String>) -> Self {
        Self { client, instance: instance.unwrap_or_else(|| "nsguard".to_owned()) }
    }

    /// Creates an event about `regarding` (and `related`), in `regarding`'s namespace (`default` for
    /// a cluster-scoped object).
    pub async fn publish(
        &self,
        regarding: ObjectReference,
        related: Option<ObjectReference>,
        severity: Severity,
        reason: &str,
        action: &str,
        note: &str,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let mut note = note.to_owned();
        truncate(&mut note, MAX_NOTE);
        let about = related.as_ref().unwrap_or(&regarding).name.as_deref().unwrap_or("nsguard");
        let name = format!("{about}.{:x}", now.as_nanosecond());
        let namespace = regarding.namespace.clone().unwrap_or_else(|| "default".to_owned());
        let event = Event {
            metadata: ObjectMeta { name: Some(name), namespace: Some(namespace.clone()), ..Default::default() },
            action: Some(action.to_owned()),
            reason: Some(reason.to_owned()),
            note: Some(note),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding),
            related,
            reporting_controller: Some("nsguard".into()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(
                match severity {
                    Severity::Normal => "Normal",
                    Severity::Warning => "Warning",
                }
                .into(),
            ),
            ..Default::default()
        };
        Api::<Event>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &event)
            .await
            .map(|_| ())
    }
}

/// One event waiting to be published: what it says and what it is about, compact (up to 1,024
/// wait in the queue); its object references are built as it is sent.
pub struct Pending {
    pub namespace: String,
    pub namespace_uid: Option<Uid>,
    pub subject: Subject,
    pub announcement: Announcement,
}

impl Pending {
    /// The object the event regards, and the related one: one of nsguard's objects in the
    /// namespace with the Namespace as related, or the Namespace itself.
    fn references(self) -> (ObjectReference, Option<ObjectReference>, Announcement) {
        let Pending { namespace, namespace_uid, subject, announcement } = self;
        let object = |api_version: &str, kind: &str, name: String, uid: Option<Uid>| ObjectReference {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
            namespace: Some(namespace.clone()),
            name: Some(name),
            uid: uid.as_ref().map(ToString::to_string),
            ..Default::default()
        };
        let regarding = match subject {
            Subject::Report { uid } => Some(object(report::API_VERSION, report::KIND, report::NAME.into(), uid)),
            Subject::NetworkPolicy { name, uid } => Some(object("networking.k8s.io/v1", "NetworkPolicy", name, uid)),
            Subject::Namespace => None,
        };
        let this = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Namespace".into()),
            uid: namespace_uid.as_ref().map(ToString::to_string),
            name: Some(namespace),
            ..Default::default()
        };
        match regarding {
            Some(regarding) => (regarding, Some(this), announcement),
            None => (this, None, announcement),
        }
    }
}

/// Events are published by a background task, so a reconcile frees its slot as soon as its
/// writes to the namespace are done. The queue is bounded: when the API server is slow to take
/// events, reconciles wait for room (backpressure) rather than events being dropped.
#[derive(Clone)]
pub struct EventQueue {
    tx: mpsc::Sender<Pending>,
}

impl EventQueue {
    /// Events published at once.
    const CONCURRENCY: usize = 8;
    const CAPACITY: usize = 1024;

    /// Starts the publishing task; it ends when every queue handle is dropped.
    pub fn start(publisher: Publisher, metrics: std::sync::Arc<Metrics>) -> Self {
        Self::start_joined(publisher, metrics).0
    }

    /// [`Self::start`], and the publishing task: it ends once every queue handle is dropped and
    /// every event queued has been sent (the bench's floor waits for its own).
    pub fn start_joined(publisher: Publisher, metrics: std::sync::Arc<Metrics>) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel::<Pending>(Self::CAPACITY);
        let task = tokio::spawn(
            tokio_stream::wrappers::ReceiverStream::new(rx)
                .map(move |e| publish(publisher.clone(), metrics.clone(), e))
                .buffer_unordered(Self::CONCURRENCY)
                .for_each(|()| async {}),
        );
        (Self { tx }, task)
    }

    /// Queues an event.
    pub async fn send(&self, event: Pending) {
        if self.tx.send(event).await.is_err() {
            tracing::warn!("event publisher stopped; event dropped");
        }
    }
}

async fn publish(publisher: Publisher, metrics: std::sync::Arc<Metrics>, e: Pending) {
    let (regarding, related, a) = e.references();
    match publisher.publish(regarding, related, a.severity, a.reason, a.action, &a.note).await {
        Ok(()) => metrics.write("create", "events"),
        Err(err) => tracing::warn!(error = %err, reason = a.reason, "could not publish event"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(subject: Subject) -> Pending {
        let announcement =
            Announcement { severity: Severity::Normal, reason: "Hardened", action: "Harden", note: "n".into() };
        Pending { namespace: "team-a".into(), namespace_uid: None, subject, announcement }
    }

    #[test]
    fn an_event_regards_nsguards_object_in_the_namespace_with_the_namespace_related() {
        let (regarding, related, _) = pending(Subject::Report { uid: None }).references();
        assert_eq!((regarding.kind.as_deref(), regarding.namespace.as_deref()), (Some(report::KIND), Some("team-a")));
        let related = related.expect("the Namespace is related");
        assert_eq!((related.kind.as_deref(), related.name.as_deref()), (Some("Namespace"), Some("team-a")));
        let (regarding, _, _) = pending(Subject::NetworkPolicy { name: "p".into(), uid: None }).references();
        assert_eq!((regarding.kind.as_deref(), regarding.name.as_deref()), (Some("NetworkPolicy"), Some("p")));
    }

    #[test]
    fn without_an_object_of_nsguards_the_event_regards_the_namespace_itself() {
        let (regarding, related, _) = pending(Subject::Namespace).references();
        assert_eq!((regarding.kind.as_deref(), regarding.namespace.as_deref()), (Some("Namespace"), None));
        assert!(related.is_none());
    }
}
