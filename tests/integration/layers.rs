//! The library's imports run down one order, never up (the layout in
//! `src/lib.rs` states it): read from the sources, so a new import that
//! runs up a layer, or two modules that import each other, fail here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first. A module may import its own layer and those
/// below it. `policy` is two layers: the chain's contract (what plugins
/// are given and return, the catalog they read) sits below the plugin host;
/// the chain, policy files, cases and reload sit above it.
const LAYERS: &[&[&str]] = &[
    &[
        "limits",
        "body",
        "secret",
        "tls",
        "bulk",
        "accept",
        "server",
        "principal",
    ],
    &["mcp", "session", "client"],
    &["telemetry"],
    &["audit", "tunnel"],
    &["policy::verdict", "policy::catalog"],
    &["plugin"],
    &[
        "policy",
        "policy::chain",
        "policy::file",
        "policy::reload",
        "policy::pin",
        "policy::cases",
        "policy::replay",
    ],
    &["gateway", "relay", "demo", "fuzzing"],
    &["admin", "config"],
    &["up"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The module a source file belongs to: its top-level module, and for
/// `policy` the submodule.
fn module_of(rel: &Path) -> String {
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    match parts.as_slice() {
        [p, sub, ..] if p == "policy" && sub != "mod" => format!("policy::{sub}"),
        [first, ..] => first.clone(),
        [] => String::new(),
    }
}

/// The module a `crate::` path names, as `module_of` names them.
fn target(path: &str) -> String {
    let mut parts = path.split("::");
    let first = parts.next().unwrap_or_default().to_owned();
    match parts.next() {
        Some(sub) if first == "policy" && layer(&format!("policy::{sub}")).is_some() => {
            format!("policy::{sub}")
        }
        _ => first,
    }
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `crate::…` path in the code of `text` that is not a test or a
/// comment (doc links name modules without importing them). In a file
/// directly under `src/policy/`, `super::` is `crate::policy::` (the
/// policy layers import each other that way).
fn crate_paths(text: &str, in_policy: bool) -> Vec<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    let mut found = Vec::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        let owned;
        let mut rest = line;
        if in_policy {
            owned = line.replace("super::", "crate::policy::");
            rest = &owned;
        }
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            found.push(rest[..end].trim_end_matches(':').to_owned());
        }
    }
    found
}

#[test]
fn library_imports_run_down_the_layers_and_never_in_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut upward = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let from = module_of(rel);
        // The binary's composition roots sit above every layer; tests.rs
        // files are unit tests.
        if ["cli", "main", "lib"].contains(&from.as_str()) || rel.ends_with("tests.rs") {
            continue;
        }
        let from_layer =
            layer(&from).unwrap_or_else(|| panic!("{}: module {from} has no layer", rel.display()));
        let in_policy = rel.parent() == Some(Path::new("policy"));
        for path in crate_paths(&std::fs::read_to_string(file).unwrap(), in_policy) {
            let to = target(&path);
            // Macros exported at the crate root (`crate::mcp_span!`).
            let Some(to_layer) = layer(&to) else { continue };
            if to == from {
                continue;
            }
            if to_layer > from_layer {
                upward.push(format!("{}: crate::{path}", rel.display()));
            }
            edges.entry(from.clone()).or_default().insert(to);
        }
    }
    assert!(upward.is_empty(), "imports running up a layer: {upward:#?}");
    // Within a layer, no two modules may reach each other.
    let reaches = |a: &str, b: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![a.to_owned()];
        while let Some(m) = todo.pop() {
            for next in edges.get(&m).into_iter().flatten() {
                if next == b {
                    return true;
                }
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        false
    };
    let circles: Vec<String> = edges
        .iter()
        .flat_map(|(a, tos)| tos.iter().map(move |b| (a, b)))
        .filter(|(a, b)| reaches(b, a))
        .map(|(a, b)| format!("{a} -> {b}"))
        .collect();
    assert!(
        circles.is_empty(),
        "modules importing each other: {circles:#?}"
    );
    // The check reads what it means to: the gateway's imports are seen.
    assert!(
        edges
            .get("gateway")
            .is_some_and(|e| e.contains("policy::chain"))
    );
}
