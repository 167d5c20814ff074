//! Parsing and semantic validation of HardeningProfile specs.
//!
//! The API server already rejects what the CRD schema and its CEL rules can catch. The controller
//! still re-checks every profile it reads, because a profile may have been stored under an older
//! CRD, or with a field this version of nsguard does not know: such a profile is reported as
//! `InvalidSpec` and never half-applied. `nsguard validate` runs the same checks offline.

use regex::Regex;

use crate::core::crd::{
    DNS1123_LABEL, DNS1123_SUBDOMAIN, HardeningProfileSpec, LABEL_KEY, LABEL_VALUE, LabelSelector, NAMESPACE_GLOB,
    PSA_VERSION, SelectorOperator,
};

pub use crate::core::field::FieldError;

/// Joins several errors into one line, for a condition message.
pub fn summarize(errors: &[FieldError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// Parses a profile's `spec` from JSON, naming the field on failure (unknown fields, wrong types
/// and bad enum values included), then checks it with [`validate_spec`].
pub fn parse_spec(spec: &serde_json::Value) -> Result<HardeningProfileSpec, Vec<FieldError>> {
    let parsed: HardeningProfileSpec = serde_path_to_error::deserialize(spec).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "spec".to_owned() } else { format!("spec.{path}") };
        vec![FieldError::new(field, e.into_inner().to_string())]
    })?;
    let errors = validate_spec(&parsed);
    if errors.is_empty() { Ok(parsed) } else { Err(errors) }
}

struct Patterns {
    dns_label: Regex,
    dns_subdomain: Regex,
    glob: Regex,
    label_key: Regex,
    label_value: Regex,
    psa_version: Regex,
}

fn patterns() -> &'static Patterns {
    static PATTERNS: std::sync::OnceLock<Patterns> = std::sync::OnceLock::new();
    PATTERNS.get_or_init(|| {
        // The patterns are compile-time constants covered by tests; a failure here is a bug in
        // nsguard, not bad input.
        let re = |p: &str| Regex::new(p).unwrap_or_else(|e| panic!("invalid built-in pattern {p}: {e}"));
        Patterns {
            dns_label: re(DNS1123_LABEL),
            dns_subdomain: re(DNS1123_SUBDOMAIN),
            glob: re(NAMESPACE_GLOB),
            label_key: re(LABEL_KEY),
            label_value: re(LABEL_VALUE),
            psa_version: re(PSA_VERSION),
        }
    })
}

/// Every rule of the CRD schema and its CEL rules, checked in Rust.
pub fn validate_spec(spec: &HardeningProfileSpec) -> Vec<FieldError> {
    let p = patterns();
    let mut errors = Vec::new();
    if let Some(selector) = &spec.namespace_selector {
        validate_selector(selector, "spec.namespaceSelector", &mut errors);
    }
    if spec.exclude_namespaces.len() > 256 {
        errors.push(FieldError::new("spec.excludeNamespaces", "must have at most 256 items"));
    }
    for (i, glob) in spec.exclude_namespaces.iter().enumerate() {
        if glob.is_empty() || glob.len() > 63 || !p.glob.is_match(glob) {
            errors.push(FieldError::new(
                format!("spec.excludeNamespaces[{i}]"),
                format!("{glob:?} is not a namespace-name glob: 1 to 63 lowercase alphanumerics, '-', '*' or '?'"),
            ));
        }
    }
    if !(-1_000_000..=1_000_000).contains(&spec.priority) {
        errors.push(FieldError::new("spec.priority", "must be between -1000000 and 1000000"));
    }
    for (mode, setting) in [
        ("enforce", &spec.pod_security.enforce),
        ("audit", &spec.pod_security.audit),
        ("warn", &spec.pod_security.warn),
    ] {
        if setting.version.len() > 16 || !p.psa_version.is_match(&setting.version) {
            errors.push(FieldError::new(
                format!("spec.podSecurity.{mode}.version"),
                format!("{:?} is not a Pod Security Standards version: use \"latest\" or \"v1.N\"", setting.version),
            ));
        }
    }
    crate::core::exceptions::validate(spec, &mut errors);
    let dns = &spec.network_policy.allow_dns;
    if dns.namespace.is_empty() || dns.namespace.len() > 63 || !p.dns_label.is_match(&dns.namespace) {
        errors.push(FieldError::new(
            "spec.networkPolicy.allowDNS.namespace",
            format!("{:?} is not a namespace name (RFC 1123 label)", dns.namespace),
        ));
    }
    validate_selector(&dns.pod_selector, "spec.networkPolicy.allowDNS.podSelector", &mut errors);
    if dns.enabled && dns.pod_selector.match_labels.is_empty() && dns.pod_selector.match_expressions.is_empty() {
        errors.push(FieldError::new(
            "spec.networkPolicy.allowDNS.podSelector",
            "must select the DNS pods: an empty podSelector would allow egress to every pod in the DNS namespace",
        ));
    }
    if spec.service_accounts.exempt.len() > 256 {
        errors.push(FieldError::new("spec.serviceAccounts.exempt", "must have at most 256 items"));
    }
    for (i, name) in spec.service_accounts.exempt.iter().enumerate() {
        if name.len() > 253 || !p.dns_subdomain.is_match(name) {
            errors.push(FieldError::new(
                format!("spec.serviceAccounts.exempt[{i}]"),
                format!("{name:?} is not a ServiceAccount name (RFC 1123 subdomain)"),
            ));
        }
    }
    errors
}

fn validate_selector(selector: &LabelSelector, path: &str, errors: &mut Vec<FieldError>) {
    let p = patterns();
    if selector.match_labels.len() > 64 {
        errors.push(FieldError::new(format!("{path}.matchLabels"), "must have at most 64 entries"));
    }
    for (key, value) in &selector.match_labels {
        if key.len() > 317 || !p.label_key.is_match(key) {
            errors.push(FieldError::new(format!("{path}.matchLabels"), format!("{key:?} is not a valid label key")));
        }
        if value.0.len() > 63 || !p.label_value.is_match(&value.0) {
            errors.push(FieldError::new(
                format!("{path}.matchLabels.{key}"),
                format!(
                    "{:?} is not a valid label value: at most 63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric",
                    value.0
                ),
            ));
        }
    }
    if selector.match_expressions.len() > 32 {
        errors.push(FieldError::new(format!("{path}.matchExpressions"), "must have at most 32 items"));
    }
    for (i, req) in selector.match_expressions.iter().enumerate() {
        let at = format!("{path}.matchExpressions[{i}]");
        if req.key.is_empty() || req.key.len() > 317 || !p.label_key.is_match(&req.key) {
            errors.push(FieldError::new(format!("{at}.key"), format!("{:?} is not a valid label key", req.key)));
        }
        let needs_values = matches!(req.operator, SelectorOperator::In | SelectorOperator::NotIn);
        if needs_values == req.values.is_empty() {
            errors.push(FieldError::new(
                format!("{at}.values"),
                "values must be non-empty for operators In and NotIn, and absent for Exists and DoesNotExist",
            ));
        }
        for (j, value) in req.values.iter().enumerate() {
            if value.0.len() > 63 || !p.label_value.is_match(&value.0) {
                errors.push(FieldError::new(
                    format!("{at}.values[{j}]"),
                    format!("{:?} is not a valid label value", value.0),
                ));
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors_of(spec: serde_json::Value) -> Vec<FieldError> {
        parse_spec(&spec).err().unwrap_or_default()
    }

    #[test]
    fn empty_spec_is_valid_and_secure_by_default() {
        let spec = parse_spec(&json!({})).expect("valid");
        assert_eq!(spec, HardeningProfileSpec::default());
    }

    #[test]
    fn unknown_field_is_named() {
        let errors = errors_of(json!({"podSecurity": {"enforce": {"levle": "baseline"}}}));
        assert_eq!(errors[0].field, "spec.podSecurity.enforce.levle");
        assert!(errors[0].message.contains("unknown field `levle`"), "{errors:?}");
    }

    #[test]
    fn bad_enum_value_is_named() {
        let errors = errors_of(json!({"podSecurity": {"warn": {"level": "strict"}}}));
        assert_eq!(errors[0].field, "spec.podSecurity.warn.level");
        assert!(errors[0].message.contains("unknown variant `strict`"), "{errors:?}");
    }

    #[test]
    fn malformed_version_is_named() {
        let errors = errors_of(json!({"podSecurity": {"audit": {"version": "1.30"}}}));
        assert_eq!(
            errors,
            vec![FieldError::new(
                "spec.podSecurity.audit.version",
                "\"1.30\" is not a Pod Security Standards version: use \"latest\" or \"v1.N\""
            )]
        );
    }

    #[test]
    fn bad_selector_values_are_named() {
        let errors = errors_of(json!({"namespaceSelector": {
            "matchLabels": {"env": "not valid!"},
            "matchExpressions": [{"key": "tier", "operator": "In"}, {"key": "x", "operator": "Exists", "values": ["a"]}]
        }}));
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.namespaceSelector.matchLabels.env",
                "spec.namespaceSelector.matchExpressions[0].values",
                "spec.namespaceSelector.matchExpressions[1].values",
            ]
        );
    }

    #[test]
    fn bad_operator_is_named() {
        let errors = errors_of(
            json!({"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["b"]}]}}),
        );
        assert_eq!(errors[0].field, "spec.namespaceSelector.matchExpressions[0].operator");
    }

    #[test]
    fn empty_dns_pod_selector_is_rejected() {
        let errors = errors_of(json!({"networkPolicy": {"allowDNS": {"podSelector": {}}}}));
        assert_eq!(errors[0].field, "spec.networkPolicy.allowDNS.podSelector");
    }

    #[test]
    fn bad_globs_and_names_are_named() {
        let errors = errors_of(json!({
            "excludeNamespaces": ["ok-*", "Bad_Glob"],
            "serviceAccounts": {"exempt": ["ci-bot", "-nope"]},
            "networkPolicy": {"allowDNS": {"namespace": "Kube_System"}}
        }));
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["spec.excludeNamespaces[1]", "spec.networkPolicy.allowDNS.namespace", "spec.serviceAccounts.exempt[1]",]
        );
    }

    #[test]
    fn out_of_range_priority_is_named() {
        let errors = errors_of(json!({"priority": 2_000_000}));
        assert_eq!(errors[0].field, "spec.priority");
    }

    #[test]
    fn wrong_type_is_named() {
        let errors = errors_of(json!({"networkPolicy": {"defaultDeny": {"egress": "yes"}}}));
        assert_eq!(errors[0].field, "spec.networkPolicy.defaultDeny.egress");
        assert!(errors[0].message.contains("expected a boolean"), "{errors:?}");
    }
}
