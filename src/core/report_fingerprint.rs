//! Pure: fingerprints of a Report's content, to tell without a write whether the Report in the
//! cache is the one nsguard wants: from the JSON the API server returns, and from the parts nsguard
//! builds a body from, fed alike so that the two are equal.

use std::hash::{Hash, Hasher};

use serde_json::Value;

use super::{CONTENT, Content, SUMMARY};

impl Content<'_> {
    /// [`fingerprint`] of [`Self::body`], fed the same way (object keys in sorted order) straight
    /// from the parts; `report_tests` holds the two equal.
    pub fn fingerprint(&self) -> u64 {
        let mut h = Feed::default();
        h.key("scope");
        h.key("apiVersion");
        h.str("v1");
        h.key("kind");
        h.str("Namespace");
        h.key("name");
        h.str(self.namespace);
        if let Some(uid) = self.uid {
            h.key("uid");
            h.str(&uid.to_string());
        }
        h.end_object();
        h.key("source");
        h.str("nsguard");
        h.key("results");
        let mode = self.mode();
        for c in &self.checks {
            h.key("category");
            h.str(c.category);
            h.key("message");
            h.str(&c.message);
            h.key("policy");
            h.str(self.profile);
            h.key("properties");
            h.key("cis-kubernetes");
            h.str(&c.cis);
            h.key("mode");
            h.str(&mode);
            h.end_object();
            h.key("result");
            h.str(c.verdict.as_str());
            h.key("rule");
            h.str(c.rule);
            h.key("severity");
            h.str(c.severity);
            h.end_object();
        }
        h.end_array();
        h.key("summary");
        h.key("error");
        h.number(0);
        for verdict in SUMMARY {
            h.key(verdict.as_str());
            h.number(self.count(verdict));
        }
        h.end_object();
        h.finish()
    }
}

/// A hasher fed a JSON value's structure: a key, a string, a number, the end of an object or an
/// array, each tagged, so that a value and the same parts fed by hand hash alike.
#[derive(Default)]
struct Feed(std::collections::hash_map::DefaultHasher);

impl Feed {
    fn key(&mut self, key: &str) {
        self.0.write_u8(b'k');
        key.hash(&mut self.0);
    }
    fn str(&mut self, s: &str) {
        self.0.write_u8(b's');
        s.hash(&mut self.0);
    }
    fn number(&mut self, n: u64) {
        self.0.write_u8(b'n');
        self.0.write_u64(n);
    }
    fn end_object(&mut self) {
        self.0.write_u8(b'}');
    }
    fn end_array(&mut self) {
        self.0.write_u8(b']');
    }
    fn value(&mut self, value: &Value) {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                for k in keys {
                    self.key(k);
                    self.value(&map[k]);
                }
                self.end_object();
            }
            Value::Array(items) => {
                items.iter().for_each(|v| self.value(v));
                self.end_array();
            }
            Value::String(s) => self.str(s),
            Value::Number(n) => match n.as_u64() {
                Some(n) => self.number(n),
                // Not a count nsguard writes: its text stands for it.
                None => {
                    self.0.write_u8(b'f');
                    n.to_string().hash(&mut self.0);
                }
            },
            Value::Bool(b) => {
                self.0.write_u8(b'b');
                self.0.write_u8(u8::from(*b));
            }
            Value::Null => self.0.write_u8(b'0'),
        }
    }
    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

/// A fingerprint of a Report's content (what nsguard writes), the same for the body nsguard builds
/// and the object the API server returns: object keys are fed in sorted order. A missing field
/// counts as absent, which no Report nsguard builds is.
pub fn fingerprint(report: &Value) -> u64 {
    let mut h = Feed::default();
    for key in CONTENT {
        h.key(key);
        h.value(report.get(key).unwrap_or(&Value::Null));
    }
    h.finish()
}
