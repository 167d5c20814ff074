//! nsguard keeps every selected Kubernetes namespace hardened to a declared baseline.
//!
//! The reconcile core is pure ([`selection`], [`desired`], [`plan`], [`status`]): observed state and
//! a profile in, drift and writes out. Reading the cluster happens before it and writing after it,
//! in [`controller`].

pub mod crd;
pub mod desired;
pub mod model;
pub mod plan;
pub mod selection;
pub mod validate;
