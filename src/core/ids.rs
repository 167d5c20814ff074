//! Compact forms of the identifiers every cached object carries. The API server assigns UUIDs as
//! UIDs and etcd revisions as resourceVersions; as strings they cost a 36- and a ~8-character heap
//! allocation per object, ~550 bytes per namespace over the seven objects nsguard caches for it.
//! As 16 bytes and a number they cost nothing on the heap.

use std::fmt;

/// An object's `metadata.uid`: 16 bytes when it is a UUID in the canonical lowercase form the API
/// server assigns, its text otherwise (files given to `nsguard plan` may carry anything). Either
/// way it reads back exactly as written.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Uid(Repr);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Repr {
    Uuid([u8; 16]),
    Text(Box<str>),
}

/// Where a canonical UUID has its hyphens.
const HYPHENS: [usize; 4] = [8, 13, 18, 23];

impl Uid {
    pub fn new(text: &str) -> Self {
        Self(uuid(text).map_or_else(|| Repr::Text(text.into()), Repr::Uuid))
    }
}

/// The 16 bytes of a canonical lowercase UUID (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`).
fn uuid(text: &str) -> Option<[u8; 16]> {
    if text.len() != 36 {
        return None;
    }
    let mut bytes = [0u8; 16];
    let mut digits = 0;
    for (at, c) in text.bytes().enumerate() {
        if HYPHENS.contains(&at) {
            if c != b'-' {
                return None;
            }
            continue;
        }
        let nibble = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        bytes[digits / 2] |= if digits % 2 == 0 { nibble << 4 } else { nibble };
        digits += 1;
    }
    Some(bytes)
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Text(text) => f.write_str(text),
            Repr::Uuid(bytes) => {
                for (i, byte) in bytes.iter().enumerate() {
                    if [4, 6, 8, 10].contains(&i) {
                        f.write_str("-")?;
                    }
                    write!(f, "{byte:02x}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Debug for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

impl From<&str> for Uid {
    fn from(text: &str) -> Self {
        Self::new(text)
    }
}

impl From<&String> for Uid {
    fn from(text: &String) -> Self {
        Self::new(text)
    }
}

impl serde::Serialize for Uid {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// An object's UID from its metadata.
pub fn uid(meta: &kube::api::ObjectMeta) -> Option<Uid> {
    meta.uid.as_deref().map(Uid::new)
}

/// A resourceVersion as a number, when it is one in canonical form (etcd's revisions are). Another
/// form (never seen from an etcd-backed API server) is `None`: unknown, which the callers treat as
/// "may have changed".
pub fn revision(text: Option<&str>) -> Option<u64> {
    let text = text?;
    let canonical =
        !text.is_empty() && text.bytes().all(|c| c.is_ascii_digit()) && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uuid_is_kept_as_16_bytes_and_reads_back_as_written() {
        let text = "0f3c2a9e-7b1d-4c5e-9a8f-1234567890ab";
        let uid = Uid::new(text);
        assert!(matches!(uid.0, Repr::Uuid(_)));
        assert_eq!(uid.to_string(), text);
        assert_eq!(serde_json::to_value(&uid).expect("serializes"), serde_json::json!(text));
        assert_eq!(uid, Uid::from(text));
    }

    #[test]
    fn anything_else_is_kept_as_text_exactly() {
        for text in ["uid-1", "", "0F3C2A9E-7B1D-4C5E-9A8F-1234567890AB", "0f3c2a9e07b1d-4c5e-9a8f-1234567890ab"] {
            let uid = Uid::new(text);
            assert!(matches!(uid.0, Repr::Text(_)), "{text}");
            assert_eq!(uid.to_string(), text);
        }
    }

    #[test]
    fn only_canonical_numbers_are_revisions() {
        assert_eq!(revision(Some("123456")), Some(123_456));
        assert_eq!(revision(Some("0")), Some(0));
        for other in ["", "+5", "007", "12a", "99999999999999999999999"] {
            assert_eq!(revision(Some(other)), None, "{other}");
        }
        assert_eq!(revision(None), None);
    }

    #[test]
    fn an_id_costs_no_more_than_a_string_inline() {
        assert!(std::mem::size_of::<Option<Uid>>() <= std::mem::size_of::<Option<String>>());
    }
}
