//! The pure core: what nsguard decides, with no client, no clock and no I/O.
//!
//! A watch event's namespace flows through [`selection::govern`] (who governs it) →
//! [`desired::desired`] (the baseline) → [`plan::plan`] (drift and the writes that fix it) →
//! [`decide::decide`] (what the controller writes, announces and records now). Profile status is
//! [`status::tally`] of the namespaces' results, then [`status::statuses`]. `nsguard plan` runs the same functions.

pub mod ahead;
pub mod announce;
pub mod condition;
pub mod crd;
pub mod decide;
pub mod desired;
pub mod drift;
pub mod exceptions;
pub mod field;
pub mod gate;
pub mod globs;
pub mod guard;
pub mod ids;
pub mod labels;
pub mod model;
pub mod plan;
pub mod pod_security;
pub mod report;
pub mod report_view;
pub mod selection;
pub mod status;
pub mod validate;
