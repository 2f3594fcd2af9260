//! The layering holds and only improves: no new cycle between files of any crate, no module of
//! `control-plane/src/db/` refers to `http`, `auth`, `fleet`, `scheduler`, `operations` or
//! `config`, and nothing outside `http/` refers to `http/`. The violations that exist today are
//! listed in `tests/layering-known.txt`; one that is not listed fails the test, and so does a
//! listed one that was fixed (remove its line), so the list can only shrink.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cloud_tests::layering::{cycles, module_graph};

const CRATES: &[&str] = &["control-plane", "host-agent", "vmm", "cloudctl", "proto", "common"];
/// What `control-plane/src/db/` must not refer to.
const ABOVE_DB: &[&str] = &["http", "auth", "fleet", "scheduler", "operations", "config"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_owned()
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

/// Every violation, one line each, as the list spells them.
fn violations() -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for name in CRATES {
        let graph = module_graph(&repo().join(name).join("src"));
        for cycle in cycles(&graph) {
            found.insert(format!("cycle {name}: {}", cycle.join(", ")));
        }
        if *name != "control-plane" {
            continue;
        }
        for (module, deps) in &graph {
            for dep in deps {
                if top(module) == "db" && ABOVE_DB.contains(&top(dep)) {
                    found.insert(format!("upward {name}: {module} -> {dep}"));
                }
                if top(module) != "http" && top(dep) == "http" {
                    found.insert(format!("into-http {name}: {module} -> {dep}"));
                }
            }
        }
    }
    found
}

#[test]
fn no_new_cycle_or_upward_import_and_the_known_ones_only_go_away() {
    let list = repo().join("tests/layering-known.txt");
    let text = std::fs::read_to_string(&list).unwrap_or_default();
    let known: BTreeSet<String> =
        text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect();
    let now = violations();
    let new: Vec<&String> = now.difference(&known).collect();
    let fixed: Vec<&String> = known.difference(&now).collect();
    assert!(new.is_empty(), "new layering violations (fix them; do not list them):\n{}", lines(&new));
    assert!(fixed.is_empty(), "fixed, so remove these lines from {}:\n{}", list.display(), lines(&fixed));
}

fn lines(items: &[&String]) -> String {
    items.iter().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
}
