//! Namespace-name globs, as profiles and flags write them.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// Namespace-name globs (`*` any run, `?` any one character), matched against the whole name.
#[derive(Clone, Debug)]
pub struct NamespaceGlobs(GlobSet);

impl Default for NamespaceGlobs {
    fn default() -> Self {
        Self(GlobSet::empty())
    }
}

impl NamespaceGlobs {
    pub fn new(globs: &[String]) -> Result<Self, String> {
        let mut set = GlobSetBuilder::new();
        for glob in globs {
            let compiled = GlobBuilder::new(glob)
                .literal_separator(false)
                .backslash_escape(false)
                .build()
                .map_err(|e| format!("{glob:?}: {e}"))?;
            set.add(compiled);
        }
        set.build().map(Self).map_err(|e| e.to_string())
    }

    pub fn matches(&self, name: &str) -> bool {
        self.0.is_match(name)
    }
}
