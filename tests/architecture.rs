//! The shape of `src/`, checked: the folders are layers (`core` ← `ops` ← `controller`, and `core`
//! ← `cli`), no module imports one that imports it back, the pure core reaches for no client, no
//! clock and no I/O, and no file is over 400 lines. No cluster needed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 400;

/// Every `.rs` file under `src/`, with its module path (`core::plan`, `controller`, `main`).
fn modules() -> BTreeMap<String, (PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    files
        .into_iter()
        .map(|path| {
            let rel = path.strip_prefix(&src).expect("under src").with_extension("");
            let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            let text = std::fs::read_to_string(&path).expect("read");
            (parts.join("::"), (path, text))
        })
        .collect()
}

/// The code of a file without its comments (doc comments name other modules freely) and without
/// its inline test module (whose `super` is the file itself).
fn code(text: &str) -> String {
    let text = text.lines().map(|l| l.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n");
    without_test_items(&text)
}

/// `text` without its `#[cfg(test)]` items: each one up to its `;` (a `use`, a field) or to the end
/// of its `{ … }` block (a `mod tests`, a function), whichever comes first. Only those items: code
/// after a test-only item is still checked.
fn without_test_items(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at + "#[cfg(test)]".len()..];
        let end = match (item.find(';'), item.find('{')) {
            (Some(semi), Some(brace)) if semi < brace => semi + 1,
            (Some(semi), None) => semi + 1,
            (_, Some(brace)) => {
                let mut depth = 0usize;
                let mut close = item.len();
                for (i, c) in item[brace..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                close = brace + i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                close
            }
            (None, None) => item.len(),
        };
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

/// The modules `module`'s code refers to: `crate::a::b` paths and `super::x` siblings, resolved
/// to the longest known module path.
fn imports(module: &str, text: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    // `super` of `a::b` is `a` (for a `mod.rs` module `a`, `super` is the crate root).
    let parent: Vec<&str> = {
        let mut parts: Vec<&str> = module.split("::").collect();
        parts.pop();
        parts
    };
    let mut found = BTreeSet::new();
    let code = code(text);
    let mut resolve = |path: Vec<&str>| {
        for len in (1..=path.len()).rev() {
            let candidate = path[..len].join("::");
            if known.contains(&candidate) && candidate != module {
                found.insert(candidate);
                return;
            }
        }
    };
    let idents = |rest: &str| -> Vec<String> {
        rest.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .next()
            .unwrap_or_default()
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    for (i, _) in code.match_indices("crate::") {
        let path = idents(&code[i + "crate::".len()..]);
        resolve(path.iter().map(String::as_str).collect());
    }
    for (i, _) in code.match_indices("self::") {
        if code[..i].ends_with("::") || code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = idents(&code[i + "self::".len()..]);
        let mut path: Vec<&str> = module.split("::").collect();
        path.extend(rest.iter().map(String::as_str));
        resolve(path);
    }
    for (i, _) in code.match_indices("super::") {
        if code[..i].ends_with("::") {
            continue;
        }
        let rest = idents(&code[i + "super::".len()..]);
        let mut path: Vec<&str> = parent.clone();
        path.extend(rest.iter().map(String::as_str));
        resolve(path);
    }
    found
}

#[test]
fn no_file_in_src_is_over_400_lines() {
    let long: Vec<String> = modules()
        .values()
        .filter(|(_, text)| text.lines().count() > MAX_LINES)
        .map(|(path, text)| format!("{} ({} lines)", path.display(), text.lines().count()))
        .collect();
    assert!(long.is_empty(), "split these files: {long:?}");
}

#[test]
fn the_pure_core_has_no_client_no_clock_and_no_io() {
    // Tests of the core may use a clock to make instants; the core itself takes time as a parameter.
    let forbidden = [
        ("Client", true),
        ("kube::Api", true),
        ("api::Api", true),
        ("kube::runtime", true),
        ("tokio", true),
        ("std::fs", true),
        ("std::net", true),
        ("std::process", true),
        ("Instant::now", false),
        ("SystemTime::now", false),
        ("Timestamp::now", false),
    ];
    let mut found = Vec::new();
    for (module, (path, text)) in modules() {
        if !module.starts_with("core") {
            continue;
        }
        let is_test = path.to_string_lossy().ends_with("_tests.rs");
        let code = code(&text);
        for (word, also_in_tests) in forbidden {
            if code.contains(word) && (also_in_tests || !is_test) {
                found.push(format!("{}: {word}", path.display()));
            }
        }
    }
    assert!(found.is_empty(), "the core must stay pure: {found:?}");
}

#[test]
fn folders_are_layers() {
    // What each folder may import besides itself.
    let allowed: BTreeMap<&str, &[&str]> = [
        ("core", &[][..]),
        ("ops", &["core"][..]),
        ("controller", &["core", "ops"][..]),
        ("cli", &["core"][..]),
        ("lib", &["core", "ops", "controller", "cli"][..]),
        ("main", &["core", "ops", "controller", "cli"][..]),
    ]
    .into();
    let all = modules();
    let known: BTreeSet<String> = all.keys().cloned().collect();
    let mut wrong = Vec::new();
    for (module, (_, text)) in &all {
        let folder = module.split("::").next().unwrap_or_default();
        let Some(may) = allowed.get(folder) else { continue };
        for import in imports(module, text, &known) {
            let target = import.split("::").next().unwrap_or_default();
            if target != folder && !may.contains(&target) {
                wrong.push(format!("{module} imports {import}"));
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken: {wrong:?}");
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let all = modules();
    let known: BTreeSet<String> = all.keys().cloned().collect();
    let graph: BTreeMap<String, BTreeSet<String>> =
        all.iter().map(|(m, (_, text))| (m.clone(), imports(m, text, &known))).collect();
    // Depth-first search for a cycle.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, &graph, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
    // The check sees imports at all: crate::, super:: and self:: paths.
    assert!(graph["controller::reconcile"].contains("core::decide"), "{:?}", graph["controller::reconcile"]);
    assert!(graph["controller::reconcile"].contains("controller::context"), "{:?}", graph["controller::reconcile"]);
    assert!(graph["controller"].contains("controller::context"), "{:?}", graph["controller"]);
}

#[test]
fn only_test_items_are_left_out_of_the_checks() {
    let text = "use a;\n#[cfg(test)]\nuse b;\nfn f() { g(); }\n#[cfg(test)]\nmod tests { fn t() { if x { y() } } }\nfn h() {}\n";
    let code = code(text);
    assert!(code.contains("use a;") && code.contains("fn f() { g(); }") && code.contains("fn h() {}"), "{code}");
    assert!(!code.contains("use b") && !code.contains("mod tests") && !code.contains("y()"), "{code}");
}
