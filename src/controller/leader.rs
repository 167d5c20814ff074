//! Leader election over a `coordination.k8s.io/v1` Lease, with a local renew deadline.
//!
//! The model is client-go's leader election and kubert's `Claim { holder, expiry }`:
//! - a replica leads only until `renew deadline` after the start of its last successful renewal
//!   ([`Leadership::is_leader`] is checked before every write). The renew deadline is shorter than
//!   the lease duration, so a replica that stalls (GC pause, partition, SIGSTOP) stops writing
//!   before any other replica may take the lease;
//! - a follower takes the lease only after it has seen the same lease record, unchanged, for a whole
//!   lease duration on its own clock, so clock skew between replicas does not matter;
//! - a failed renewal is retried every retry period, and never latches: leadership comes back as
//!   soon as a renewal succeeds again (after an API-server restart, say);
//! - on shutdown the holder gives the lease up, so a successor need not wait for it to expire.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Whether this replica may write now. Cheap to clone and to check.
#[derive(Clone, Debug)]
pub struct Leadership {
    /// This replica's claim on the lease; `None` while it does not lead.
    until: watch::Receiver<Option<Claim>>,
    /// The last lease request got an answer (false while the API server cannot be reached).
    reachable: Arc<AtomicBool>,
    /// For [`Leadership::unconditional`], the sender that keeps the value in place.
    _fixed: Option<Arc<watch::Sender<Option<Claim>>>>,
}

/// A lease held: until when this replica may write, and which term of leadership this is (a new
/// term starts whenever leadership is won after not being held, even for a moment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    pub until: Instant,
    pub term: u64,
}

/// The elector's side of [`Leadership`].
pub struct Claims {
    until: watch::Sender<Option<Claim>>,
    reachable: Arc<AtomicBool>,
}

impl Leadership {
    /// A replica that always leads (leader election off, or a test).
    pub fn unconditional() -> Self {
        let (tx, until) = watch::channel(Some(Claim { until: far_future(), term: 1 }));
        Self { until, reachable: Arc::new(AtomicBool::new(true)), _fixed: Some(Arc::new(tx)) }
    }

    /// Leadership that an [`Elector`] (or a test) publishes through the returned [`Claims`].
    pub fn channel() -> (Claims, Self) {
        let (tx, until) = watch::channel(None);
        let reachable = Arc::new(AtomicBool::new(true));
        (Claims { until: tx, reachable: reachable.clone() }, Self { until, reachable, _fixed: None })
    }

    /// The Lease answered the last request (leader or follower): false during an API outage.
    pub fn lease_reachable(&self) -> bool {
        self.reachable.load(Ordering::Acquire)
    }

    /// This replica holds the lease and its renew deadline has not passed.
    pub fn is_leader(&self) -> bool {
        self.until.borrow().is_some_and(|claim| Instant::now() < claim.until)
    }

    /// The term of leadership this replica holds now, if it leads.
    pub fn term(&self) -> Option<u64> {
        self.until.borrow().filter(|claim| Instant::now() < claim.until).map(|claim| claim.term)
    }

    /// Resolves when leadership may have changed.
    pub async fn changed(&mut self) -> bool {
        self.until.changed().await.is_ok()
    }

    /// The time left before this replica must stop writing (zero when it does not lead).
    pub fn remaining(&self) -> Duration {
        self.until.borrow().map(|claim| claim.until.saturating_duration_since(Instant::now())).unwrap_or_default()
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

/// Lease timing. `renew_deadline < duration`, and `retry_period < renew_deadline`.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// How long a lease record stays valid without renewal: the longest a takeover waits.
    pub duration: Duration,
    /// How long after the start of its last successful renewal the holder may still write.
    pub renew_deadline: Duration,
    /// How often the holder renews and a follower checks.
    pub retry_period: Duration,
}

impl Timing {
    /// Checks the ordering the safety argument needs, naming the flag at fault.
    pub fn validate(&self) -> Result<(), String> {
        if self.renew_deadline >= self.duration {
            return Err("--lease-renew-deadline must be shorter than --lease-duration".into());
        }
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            return Err("--lease-retry-period must be positive and shorter than --lease-renew-deadline".into());
        }
        Ok(())
    }
}

/// Takes and renews the Lease `namespace/name` as `identity`.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    /// The lease record last seen and when it was first seen locally (for expiry on our clock).
    observed: Option<(Observed, Instant)>,
    /// The lease as this replica's last successful write returned it.
    held: Option<Lease>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Observed {
    holder: Option<String>,
    renew_time: Option<String>,
    resource_version: Option<String>,
}

impl Elector {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str, timing: Timing) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            timing,
            observed: None,
            held: None,
        }
    }

    /// Runs until `stop` resolves, publishing leadership to `leader`; then, if `stop` says so,
    /// releases the lease if this replica holds it (a replica whose writes may still be in flight
    /// lets its lease expire instead).
    pub async fn run(mut self, claims: Claims, stop: impl Future<Output = bool>) {
        let Claims { until: leader, reachable } = claims;
        tokio::pin!(stop);
        let mut term = 0u64;
        let release;
        loop {
            // A lapsed deadline is published as "not leading" even while the API does not answer.
            if leader.borrow().is_some_and(|claim| Instant::now() >= claim.until) {
                warn!("leader lease not renewed within the renew deadline; stopping writes");
                leader.send_replace(None);
            }
            let started = Instant::now();
            let attempt = tokio::time::timeout(self.timing.renew_deadline / 2, self.try_acquire_or_renew());
            tokio::select! {
                result = attempt => {
                reachable.store(matches!(result, Ok(Ok(_))), Ordering::Release);
                match result {
                    Ok(Ok(true)) => {
                        // Won after not holding it, even for a moment: a new term, so the
                        // controller reconciles everything again.
                        if leader.borrow().is_none_or(|claim| Instant::now() >= claim.until) {
                            term += 1;
                            info!(identity = %self.identity, term, "acquired the leader lease");
                        }
                        leader.send_replace(Some(Claim { until: started + self.timing.renew_deadline, term }));
                    }
                    Ok(Ok(false)) => {
                        if leader.send_replace(None).is_some() {
                            warn!(identity = %self.identity, "lost the leader lease to another replica");
                        }
                    }
                    Ok(Err(e)) => warn!(error = %e, "leader election: lease not renewed; retrying"),
                    Err(_) => warn!("leader election: lease request timed out; retrying"),
                }},
                give_up = &mut stop => { release = give_up; break }
            }
            tokio::select! {
                () = tokio::time::sleep(self.timing.retry_period) => {}
                give_up = &mut stop => { release = give_up; break }
            }
        }
        let held = leader.send_replace(None).is_some();
        if held && !release {
            warn!("writes may still be in flight: leaving the leader lease to expire");
        }
        if held && release {
            match tokio::time::timeout(self.timing.renew_deadline, self.release()).await {
                Ok(Ok(())) => info!("released the leader lease"),
                Ok(Err(e)) => warn!(error = %e, "releasing the leader lease"),
                Err(_) => warn!("timed out releasing the leader lease"),
            }
        }
    }

    /// One round: take the lease when it is free or expired, renew it when held. `Ok(true)` when
    /// this replica holds it afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        // While it holds the lease, the leader renews the object its last write returned, without
        // reading it first (a 409 then means someone else wrote it).
        let held = self.held.take();
        let lease = match held {
            Some(lease) => Some(lease),
            None => self.api.get_opt(&self.name).await?,
        };
        let Some(lease) = lease else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() },
                spec: Some(self.spec(now.clone(), now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let seen = Observed {
            holder: holder.clone(),
            renew_time: spec.renew_time.as_ref().map(|t| t.0.to_string()),
            resource_version: lease.resource_version(),
        };
        let first_seen = match &self.observed {
            Some((previous, at)) if *previous == seen => *at,
            _ => Instant::now(),
        };
        self.observed = Some((seen, first_seen));
        let ours = holder.as_deref() == Some(self.identity.as_str());
        if !ours && let Some(other) = &holder {
            let duration = spec
                .lease_duration_seconds
                .map_or(self.timing.duration, |s| Duration::from_secs(u64::try_from(s).unwrap_or_default()));
            if first_seen.elapsed() < duration {
                debug!(holder = %other, "the leader lease is held by another replica");
                return Ok(false);
            }
            info!(holder = %other, "the leader lease expired; taking it over");
        }
        let transitions = spec.lease_transitions.unwrap_or_default() + i32::from(!ours);
        let acquired = if ours { spec.acquire_time.unwrap_or_else(|| now.clone()) } else { now.clone() };
        let patch = json!({
            "metadata": {"resourceVersion": lease.resource_version()},
            "spec": self.spec(acquired, now, transitions),
        });
        match self.api.patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(renewed) => {
                self.held = Some(renewed);
                Ok(true)
            }
            // Another replica wrote the lease since we read it: it renewed or took it first.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn spec(&self, acquire_time: MicroTime, renew_time: MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(i32::try_from(self.timing.duration.as_secs()).unwrap_or(i32::MAX)),
            acquire_time: Some(acquire_time),
            renew_time: Some(renew_time),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Gives the lease up (only while this replica still holds it), so a successor takes over at once.
    async fn release(&self) -> Result<(), kube::Error> {
        let lease = self.api.get(&self.name).await?;
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        let patch = json!({
            "metadata": {"resourceVersion": lease.resource_version()},
            "spec": {"holderIdentity": null, "leaseDurationSeconds": 1,
                     "renewTime": MicroTime(k8s_openapi::jiff::Timestamp::now())},
        });
        self.api.patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_must_leave_the_renew_deadline_inside_the_lease() {
        let secs = Duration::from_secs;
        let ok = Timing { duration: secs(15), renew_deadline: secs(10), retry_period: secs(2) };
        assert!(ok.validate().is_ok());
        let late = Timing { renew_deadline: secs(15), ..ok };
        assert!(late.validate().unwrap_err().contains("--lease-renew-deadline"));
        let slow = Timing { retry_period: secs(10), ..ok };
        assert!(slow.validate().unwrap_err().contains("--lease-retry-period"));
    }

    #[tokio::test(start_paused = true)]
    async fn leadership_lapses_at_its_deadline_without_a_renewal() {
        let (claims, leadership) = Leadership::channel();
        assert!(!leadership.is_leader());
        claims.until.send_replace(Some(Claim { until: Instant::now() + Duration::from_secs(10), term: 1 }));
        assert!(leadership.is_leader());
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(leadership.is_leader());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!leadership.is_leader(), "a stalled replica must not write past its renew deadline");
    }

    #[test]
    fn unconditional_leadership_always_leads() {
        assert!(Leadership::unconditional().is_leader());
    }
}
