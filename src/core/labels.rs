//! A namespace's labels and annotations as nsguard keeps them: compact, because 10,000 namespaces
//! are cached and read far more often than they change.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::api::ObjectMeta;

/// A namespace's labels (or annotations): (key, value) pairs sorted by key, in one allocation. The strings are
/// shared (`Arc<str>`): the controller interns them, so the keys and the common values (`restricted`,
/// `latest`) that every namespace repeats are stored once. A `BTreeMap<String, String>` of ten labels
/// costs ~1.5 KiB; this, ~330 bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pairs(Box<[(Arc<str>, Arc<str>)]>);

impl Pairs {
    /// Pairs from pairs, with `share` making each string (e.g. looking it up in an interner).
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        mut share: impl FnMut(&str) -> Arc<str>,
    ) -> Self {
        let mut pairs: Vec<(Arc<str>, Arc<str>)> = pairs.into_iter().map(|(k, v)| (share(k), share(v))).collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        pairs.dedup_by(|a, b| a.0 == b.0);
        Self(pairs.into_boxed_slice())
    }

    /// The same labels with their strings made again by `share` (to intern them), except the
    /// values `unique` names by key: those are kept as they are (interning a value no other
    /// namespace has, such as `kubernetes.io/metadata.name`'s, would only add to the pool).
    pub fn shared(&self, mut share: impl FnMut(&str) -> Arc<str>, unique: impl Fn(&str) -> bool) -> Self {
        let pairs = self.0.iter().map(|(k, v)| (share(k), if unique(k) { v.clone() } else { share(v) }));
        Self(pairs.collect())
    }

    /// Sets one label (rebuilds the pairs: for building a namespace in tests).
    #[cfg(test)]
    pub fn insert(&mut self, key: impl AsRef<str>, value: impl AsRef<str>) {
        let (key, value) = (key.as_ref(), value.as_ref());
        let pairs = self.iter().filter(|(k, _)| *k != key).chain([(key, value)]);
        *self = Self::from_pairs(pairs, |s| Arc::from(s));
    }

    /// Removes one label.
    #[cfg(test)]
    pub fn remove(&mut self, key: &str) {
        *self = Self::from_pairs(self.iter().filter(|(k, _)| *k != key), |s| Arc::from(s));
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.binary_search_by(|(k, _)| k.as_ref().cmp(key)).ok().map(|at| self.0[at].1.as_ref())
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Every label, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + Clone {
        self.0.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_ref())
    }

    /// As a map (what kube's label selectors match against).
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.to_map_where(|_| true)
    }

    /// The pairs whose key `keep` accepts, as a map.
    pub fn to_map_where(&self, keep: impl Fn(&str) -> bool) -> BTreeMap<String, String> {
        self.iter().filter(|(k, _)| keep(k)).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
    }
}

impl From<BTreeMap<String, String>> for Pairs {
    fn from(map: BTreeMap<String, String>) -> Self {
        Self::from_pairs(map.iter().map(|(k, v)| (k.as_str(), v.as_str())), |s| Arc::from(s))
    }
}

impl<'a> FromIterator<(&'a str, &'a str)> for Pairs {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a str)>>(pairs: I) -> Self {
        Self::from_pairs(pairs, |s| Arc::from(s))
    }
}

/// A namespace's labels, from its metadata.
pub fn labels(meta: &ObjectMeta) -> Pairs {
    meta.labels.iter().flatten().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Of a namespace's annotations, nsguard's own (`nsguard.io/…`): the others (kubectl's
/// last-applied-configuration can be kilobytes) are never read, and 10,000 namespaces are cached.
pub fn nsguard_annotations(meta: &ObjectMeta) -> Pairs {
    let ours = |(k, _): &(&String, &String)| k.starts_with("nsguard.io/");
    meta.annotations.iter().flatten().filter(ours).map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_by_key_found_by_key_and_shared_when_interned() {
        let labels: Pairs = [("b", "2"), ("a", "1"), ("c", "restricted")].into_iter().collect();
        assert_eq!(labels.iter().collect::<Vec<_>>(), [("a", "1"), ("b", "2"), ("c", "restricted")]);
        assert_eq!((labels.get("b"), labels.get("z")), (Some("2"), None));
        let pool: Arc<str> = Arc::from("restricted");
        let shared = labels.shared(|s| if s == "restricted" { pool.clone() } else { Arc::from(s) }, |_| false);
        assert_eq!(shared, labels);
        assert_eq!(Arc::strong_count(&pool), 2, "the value is the pool's string, not a copy");
    }

    #[test]
    fn only_nsguards_annotations_are_kept() {
        let meta = ObjectMeta {
            annotations: Some(BTreeMap::from([
                ("nsguard.io/profile".to_owned(), "p".to_owned()),
                ("kubectl.kubernetes.io/last-applied-configuration".to_owned(), "{…}".to_owned()),
            ])),
            ..ObjectMeta::default()
        };
        assert_eq!(nsguard_annotations(&meta).iter().collect::<Vec<_>>(), [("nsguard.io/profile", "p")]);
    }
}
