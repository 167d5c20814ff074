//! One problem with a profile, located by its field path.

use std::fmt;

use serde::Serialize;

/// One problem with a profile, located by its field path (e.g. `spec.podSecurity.enforce.version`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Path of the offending field, from the object's root.
    pub field: String,
    /// Why the value is wrong.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}
