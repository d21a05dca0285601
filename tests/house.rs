//! The one-way house (issue #25): no import cycle among the `icl-lab` crate's modules. Every
//! `crate::a::b` and `super::a` path outside comments and `#[cfg(test)]` code is an edge from the
//! module that writes it to the most specific module it names; a cycle is a module that reaches
//! itself. `scripts/module-cycles.py` prints the same graph's strongly connected components.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module name (`figures::vo2023_fig2`) → its source without tests and comment lines.
fn modules(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(root).unwrap().with_extension("");
            let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            let name = parts.join("::");
            if name == "main" || name == "lib" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            let code: Vec<&str> = code.lines().filter(|l| !l.trim_start().starts_with("//")).collect();
            out.insert(name, code.join("\n"));
        }
    }
    out
}

/// The identifiers after each `prefix` in `src`: (first, optional second) path segment.
fn paths_after<'a>(src: &'a str, prefix: &str) -> Vec<(&'a str, Option<&'a str>)> {
    let ident = |s: &'a str| -> &'a str {
        let end = s.find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')).unwrap_or(s.len());
        &s[..end]
    };
    src.match_indices(prefix)
        .filter_map(|(i, _)| {
            let rest = &src[i + prefix.len()..];
            let first = ident(rest);
            if first.is_empty() {
                return None;
            }
            let second = rest[first.len()..].strip_prefix("::").map(ident).filter(|s| !s.is_empty());
            Some((first, second))
        })
        .collect()
}

fn edges(mods: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, src) in mods {
        let targets = edges.entry(m.clone()).or_default();
        let most_specific = |base: &str, first: &str, second: Option<&str>| -> Option<String> {
            let join = |a: &str, b: &str| if a.is_empty() { b.to_string() } else { format!("{a}::{b}") };
            let one = join(base, first);
            if let Some(s) = second {
                let two = join(&one, s);
                if mods.contains_key(&two) {
                    return Some(two);
                }
            }
            if mods.contains_key(&one) {
                Some(one)
            } else if !base.is_empty() && mods.contains_key(base) {
                Some(base.to_string()) // an item of the parent module
            } else {
                None
            }
        };
        for (first, second) in paths_after(src, "crate::") {
            if let Some(t) = most_specific("", first, second) {
                targets.insert(t);
            }
        }
        let parent = m.rsplit_once("::").map_or("", |(p, _)| p);
        for (first, second) in paths_after(src, "super::") {
            if let Some(t) = most_specific(parent, first, second) {
                targets.insert(t);
            }
        }
        targets.remove(m);
    }
    edges
}

#[test]
fn the_crate_has_no_import_cycle() {
    let mods = modules(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(mods.len() > 20, "found only {} modules", mods.len());
    let graph = edges(&mods);
    // A module that reaches itself is on a cycle; report each with the path back.
    let mut on_cycles = Vec::new();
    for start in graph.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<String> = graph[start].iter().cloned().collect();
        while let Some(m) = stack.pop() {
            if &m == start {
                on_cycles.push(start.clone());
                break;
            }
            if seen.insert(m.clone()) {
                stack.extend(graph.get(&m).into_iter().flatten().cloned());
            }
        }
    }
    let detail: Vec<String> = on_cycles
        .iter()
        .map(|m| format!("{m} -> {:?}", graph[m].iter().filter(|t| on_cycles.contains(t)).collect::<Vec<_>>()))
        .collect();
    assert!(on_cycles.is_empty(), "modules on an import cycle:\n{}", detail.join("\n"));
}

#[test]
fn the_cycle_check_finds_a_cycle_when_there_is_one() {
    // a → b → a, and c → a with no way back.
    let mods: BTreeMap<String, String> = [
        ("a", "use crate::b::thing;"),
        ("b", "fn f() { crate::a::g() }"),
        ("c", "use crate::a;"),
        ("d::e", "use super::x; // a parent item"),
        ("d", "// crate::e in a comment"),
    ]
    .into_iter()
    .map(|(k, v)| {
        (k.to_string(), v.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n"))
    })
    .collect();
    let g = edges(&mods);
    assert!(g["a"].contains("b") && g["b"].contains("a") && g["c"].contains("a"));
    assert!(g["d::e"].contains("d"));
    assert!(g["d"].is_empty());
}
