//! Pure: a profile's Pod Security exceptions at a moment in time → which one applies to a
//! namespace, which are refused, which expire soon.
//!
//! An exception lowers what nsguard enforces on matching namespaces until `expires`. The CRD schema
//! checks that `expires` is an RFC 3339 date-time; CEL has no clock, so the bound on how far ahead
//! it may lie ([`MAX_AHEAD`]) is nsguard's: an exception beyond it is refused (not applied, named in
//! the profile status, and `nsguard validate` fails on it), so an exception cannot quietly become
//! permanent.

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::core::crd::{HardeningProfileSpec, PodSecurityMode};
use crate::core::field::FieldError;
use crate::core::globs::NamespaceGlobs;

/// How far ahead an exception's `expires` may lie: 90 days.
pub const MAX_AHEAD: SignedDuration = SignedDuration::from_hours(90 * 24);
/// Exceptions that end within this window are reported as a warning: 7 days.
pub const EXPIRING_SOON: SignedDuration = SignedDuration::from_hours(7 * 24);

/// One exception of a valid profile, compiled.
#[derive(Clone, Debug)]
pub struct Exception {
    /// Its index in `spec.exceptions`.
    pub index: usize,
    pub globs: NamespaceGlobs,
    pub enforce: PodSecurityMode,
    pub expires: Timestamp,
    pub reason: String,
    /// When `spec.exceptions` was last written (from the profile's managedFields), if known: the
    /// 90-day bound counts from then, so a refused exception does not switch itself on later.
    pub written: Option<Timestamp>,
}

/// Where an exception stands at a moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    Active,
    Expired,
    /// Refused: `expires` lies too far ahead.
    Refused(String),
}

impl Exception {
    /// Compiles `spec.exceptions[index]` (its globs and expiry were validated already).
    pub fn compile(index: usize, e: &crate::core::crd::PodSecurityException) -> Result<Self, FieldError> {
        let field = format!("spec.exceptions[{index}]");
        let expires = e.expires.parse::<Timestamp>().map_err(|err| FieldError {
            field: format!("{field}.expires"),
            message: format!("{:?} is not an RFC 3339 date-time: {err}", e.expires),
        })?;
        let globs = NamespaceGlobs::new(&e.namespaces)
            .map_err(|message| FieldError { field: format!("{field}.namespaces"), message })?;
        Ok(Self {
            index,
            globs,
            enforce: e.pod_security.enforce.clone(),
            expires,
            reason: e.reason.clone(),
            written: None,
        })
    }

    /// Its field path, for messages.
    pub fn field(&self) -> String {
        format!("spec.exceptions[{}]", self.index)
    }

    pub fn state(&self, now: Timestamp) -> State {
        if self.expires <= now {
            State::Expired
        } else if self.expires.duration_since(self.written.map_or(now, |w| w.min(now))) > MAX_AHEAD {
            State::Refused(format!(
                "{}: expires {} is more than 90 days after it was written; refused (not applied)",
                self.field(),
                self.expires
            ))
        } else {
            State::Active
        }
    }

    /// It ends within [`EXPIRING_SOON`] of `now`.
    pub fn expiring_soon(&self, now: Timestamp) -> bool {
        self.expires > now && self.expires.duration_since(now) <= EXPIRING_SOON
    }

    /// [`Self::describe`], saying so when it ends within 7 days.
    pub fn describe_at(&self, now: Timestamp) -> String {
        let mut text = self.describe();
        if self.expiring_soon(now) {
            text.push_str("; expires within 7 days");
        }
        text
    }

    /// How it reads in status, events and `nsguard plan`.
    pub fn describe(&self) -> String {
        format!(
            "exception {} enforces {}:{} until {} ({})",
            self.index,
            self.enforce.level.as_str(),
            self.enforce.version,
            self.expires,
            self.reason
        )
    }
}

/// The exception that applies to `namespace` at `now`: the first active one that matches.
pub fn applying<'a>(exceptions: &'a [Exception], namespace: &str, now: Timestamp) -> Option<&'a Exception> {
    exceptions.iter().find(|e| e.state(now) == State::Active && e.globs.matches(namespace))
}

/// A profile's exceptions at a moment, for its status, metrics and `nsguard plan`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub active: usize,
    /// The earliest expiry of an active exception.
    pub next_expiry: Option<Timestamp>,
    /// Why each refused exception is refused.
    pub refused: Vec<String>,
    /// Active exceptions that end within [`EXPIRING_SOON`].
    pub expiring_soon: Vec<String>,
}

pub fn summary(exceptions: &[Exception], now: Timestamp) -> Summary {
    let mut s = Summary::default();
    for e in exceptions {
        match e.state(now) {
            State::Active => {
                s.active += 1;
                s.next_expiry = Some(s.next_expiry.map_or(e.expires, |t| t.min(e.expires)));
                if e.expiring_soon(now) {
                    s.expiring_soon.push(format!("{} expires {} ({})", e.field(), e.expires, e.reason));
                }
            }
            State::Refused(why) => s.refused.push(why),
            State::Expired => {}
        }
    }
    s
}

/// Static checks of `spec.exceptions` (the schema's rules, and: an exception may only lower what
/// is enforced).
pub fn validate(spec: &HardeningProfileSpec, errors: &mut Vec<FieldError>) {
    if spec.exceptions.len() > 64 {
        errors.push(FieldError { field: "spec.exceptions".into(), message: "must have at most 64 items".into() });
    }
    for (i, e) in spec.exceptions.iter().enumerate() {
        let field = format!("spec.exceptions[{i}]");
        if e.namespaces.is_empty() {
            errors.push(FieldError {
                field: format!("{field}.namespaces"),
                message: "must name at least one namespace glob".into(),
            });
        }
        if e.reason.trim().is_empty() {
            errors.push(FieldError {
                field: format!("{field}.reason"),
                message: "must say why the exception exists".into(),
            });
        }
        if e.pod_security.enforce.level > spec.pod_security.enforce.level {
            errors.push(FieldError {
                field: format!("{field}.podSecurity.enforce.level"),
                message: format!(
                    "{} is stricter than spec.podSecurity.enforce.level ({}): an exception may only lower what is enforced",
                    e.pod_security.enforce.level.as_str(),
                    spec.pod_security.enforce.level.as_str()
                ),
            });
        }
        if let Err(err) = Exception::compile(i, e) {
            errors.push(err);
        }
    }
}

/// Exceptions nsguard refuses at `now` (for `nsguard validate`, which fails on them).
pub fn refusals(spec: &HardeningProfileSpec, now: Timestamp) -> Vec<FieldError> {
    spec.exceptions
        .iter()
        .enumerate()
        .filter_map(|(i, e)| Exception::compile(i, e).ok())
        .filter_map(|e| match e.state(now) {
            State::Refused(message) => Some(FieldError { field: format!("{}.expires", e.field()), message }),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::crd::{ExceptionPodSecurity, PodSecurityException, PodSecurityLevel};

    fn exception(globs: &[&str], level: PodSecurityLevel, expires: &str) -> PodSecurityException {
        PodSecurityException {
            namespaces: globs.iter().map(|g| (*g).to_owned()).collect(),
            pod_security: ExceptionPodSecurity { enforce: PodSecurityMode { level, version: "latest".into() } },
            expires: expires.into(),
            reason: "TICKET-1".into(),
        }
    }

    fn now() -> Timestamp {
        "2026-11-23T12:00:00Z".parse().expect("timestamp")
    }

    fn compiled(spec: &HardeningProfileSpec) -> Vec<Exception> {
        spec.exceptions.iter().enumerate().map(|(i, e)| Exception::compile(i, e).expect("valid")).collect()
    }

    #[test]
    fn an_active_exception_applies_to_matching_namespaces_until_it_expires() {
        let spec = HardeningProfileSpec {
            exceptions: vec![exception(&["legacy-*"], PodSecurityLevel::Baseline, "2026-12-01T00:00:00Z")],
            ..Default::default()
        };
        let all = compiled(&spec);
        assert_eq!(applying(&all, "legacy-db", now()).map(|e| e.index), Some(0));
        assert!(applying(&all, "payments", now()).is_none());
        let after: Timestamp = "2026-12-01T00:00:00Z".parse().expect("timestamp");
        assert!(applying(&all, "legacy-db", after).is_none(), "expired at its expiry");
    }

    #[test]
    fn an_exception_more_than_90_days_ahead_is_refused_and_not_applied() {
        let spec = HardeningProfileSpec {
            exceptions: vec![exception(&["*"], PodSecurityLevel::Privileged, "2027-06-01T00:00:00Z")],
            ..Default::default()
        };
        let mut all = compiled(&spec);
        assert!(applying(&all, "any", now()).is_none());
        // Months later it would be within 90 days of now, but not of when it was written.
        all[0].written = Some(now());
        let later: Timestamp = "2027-05-01T00:00:00Z".parse().expect("timestamp");
        assert!(applying(&all, "any", later).is_none(), "still refused");
        let refused = refusals(&spec, now());
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].field, "spec.exceptions[0].expires");
        assert!(refused[0].message.contains("more than 90 days after it was written"), "{}", refused[0].message);
        assert_eq!(summary(&all, now()).refused.len(), 1);
    }

    #[test]
    fn summary_counts_active_exceptions_their_next_expiry_and_those_expiring_within_7_days() {
        let spec = HardeningProfileSpec {
            exceptions: vec![
                exception(&["a"], PodSecurityLevel::Baseline, "2026-11-25T00:00:00Z"),
                exception(&["b"], PodSecurityLevel::Baseline, "2027-01-10T00:00:00Z"),
                exception(&["c"], PodSecurityLevel::Baseline, "2026-11-01T00:00:00Z"),
            ],
            ..Default::default()
        };
        let s = summary(&compiled(&spec), now());
        assert_eq!(s.active, 2);
        assert_eq!(s.next_expiry, Some("2026-11-25T00:00:00Z".parse().expect("timestamp")));
        assert_eq!(s.expiring_soon.len(), 1);
        assert!(s.expiring_soon[0].starts_with("spec.exceptions[0]"), "{:?}", s.expiring_soon);
    }

    #[test]
    fn an_exception_stricter_than_the_target_or_with_a_bad_date_is_a_field_error() {
        let mut spec = HardeningProfileSpec {
            exceptions: vec![exception(&["a"], PodSecurityLevel::Restricted, "tomorrow")],
            ..Default::default()
        };
        spec.pod_security.enforce.level = PodSecurityLevel::Baseline;
        let mut errors = Vec::new();
        validate(&spec, &mut errors);
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["spec.exceptions[0].podSecurity.enforce.level", "spec.exceptions[0].expires"]);
    }
}
