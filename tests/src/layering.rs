//! The crates' module graph, from their source: which file refers to which module
//! (`crate::a::b`, `super::x`), so a test can hold the layering (no cycles between files, no
//! upward imports) and say exactly which references break it.
//!
//! A file's module path comes from its place under `src/` (`db/hosts.rs` is `db::hosts`,
//! `instances/mod.rs` is `instances`, `lib.rs`/`main.rs` the root). A reference names the
//! deepest module that has a file of its own. Re-exports (`pub use …`) and `mod` declarations
//! are not dependencies: they are how a parent shows its children.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path → the modules it refers to.
pub type Graph = BTreeMap<String, BTreeSet<String>>;

/// The module graph of the crate whose sources are in `src`.
pub fn module_graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    collect(src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(src, f)).collect();
    let mut graph = Graph::new();
    for file in &files {
        let me = module_of(src, file);
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let deps = graph.entry(me.clone()).or_default();
        for line in text.lines() {
            let code = line.trim_start();
            if code.starts_with("//") || code.starts_with("pub use") || code.starts_with("pub(crate) use") {
                continue;
            }
            for path in paths_in(code) {
                let absolute = resolve(&me, &path);
                if let Some(target) = deepest_module(&modules, &absolute)
                    && target != me
                {
                    deps.insert(target);
                }
            }
        }
    }
    graph
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `db::hosts` for `src/db/hosts.rs`, `instances` for `src/instances/mod.rs`, `` for the root.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap_or(file).with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts.join("::")
}

/// The `crate::…` and `super::…` paths of a line, as segment lists (`crate`/`super` kept).
fn paths_in(line: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for start in ["crate::", "super::"] {
        let mut rest = line;
        while let Some(at) = rest.find(start) {
            let before = rest[..at].chars().last();
            let tail = &rest[at..];
            rest = &rest[at + start.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // e.g. `my_crate::`
            }
            let path: String = tail.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
            let segments: Vec<String> = path.split("::").filter(|s| !s.is_empty()).map(str::to_owned).collect();
            out.push(segments);
        }
    }
    out
}

/// The absolute segments (without `crate`) of `path`, written in module `me` (`super` in
/// `a/b.rs` and in `a/b/mod.rs`, both module `a::b`, is `a`).
fn resolve(me: &str, path: &[String]) -> Vec<String> {
    let mut base: Vec<String> = if me.is_empty() { Vec::new() } else { me.split("::").map(str::to_owned).collect() };
    let mut segments = path.iter().peekable();
    if segments.peek().is_some_and(|s| *s == "crate") {
        segments.next();
        base.clear();
    } else {
        while segments.peek().is_some_and(|s| *s == "super") {
            segments.next();
            base.pop();
        }
    }
    base.extend(segments.cloned());
    base
}

fn deepest_module(modules: &BTreeSet<String>, segments: &[String]) -> Option<String> {
    (1..=segments.len()).rev().map(|n| segments[..n].join("::")).find(|m| modules.contains(m))
}

/// The cycles of `graph`: its strongly connected components of more than one module, each
/// sorted (Tarjan's algorithm).
pub fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.graph.contains_key(w) {
                continue;
            }
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.found.sort();
    s.found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_against_the_module_they_are_written_in() {
        assert_eq!(paths_in("use crate::db::hosts::{self, HostRow};"), vec![vec!["crate", "db", "hosts"]]);
        assert_eq!(paths_in("let x = super::runner::Ctx;"), vec![vec!["super", "runner", "Ctx"]]);
        assert!(paths_in("use cloud_proto::agent;").is_empty());
        let p = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        assert_eq!(resolve("instances::runner", &p(&["super", "driver", "X"])), p(&["instances", "driver", "X"]));
        assert_eq!(resolve("db::hosts", &p(&["crate", "auth", "Role"])), p(&["auth", "Role"]));
    }

    #[test]
    fn cycles_are_found_and_chains_are_not() {
        let mut g = Graph::new();
        let edge = |g: &mut Graph, a: &str, b: &str| {
            g.entry(a.to_owned()).or_default().insert(b.to_owned());
            g.entry(b.to_owned()).or_default();
        };
        edge(&mut g, "a", "b");
        edge(&mut g, "b", "c");
        assert!(cycles(&g).is_empty());
        edge(&mut g, "c", "a");
        edge(&mut g, "d", "a");
        assert_eq!(cycles(&g), vec![vec!["a".to_owned(), "b".to_owned(), "c".to_owned()]]);
    }
}
