//! Which Debian packages the code needs, and whether the scripts in `deploy/` install them.
//!
//! A fresh machine has only what `deploy/` and `.ci/run` install; a program or firmware file
//! installed by hand on a developer's machine makes CI pass there and fail on a new one. This
//! module finds what the code names and asks `dpkg -S` which package owns it:
//!
//! ```text
//!  *.rs, *.py ── programs: Command::new("x"), run("x", …), find_program(Path::new("x")),
//!                          <field>: "x".into() when x is a program on PATH, Popen/run(["x", …])
//!             ── files:    absolute path literals under /usr, /bin, /sbin, /lib
//!       │
//!       ▼ which / realpath, then dpkg -S            deploy/*.sh, .ci/run ── ensure_packages …,
//!  owning packages ──────── each must be in ──────▶ RUNTIME_PACKAGES=(…), ensure_tools prog:pkg
//!                                                    + their Depends/Pre-Depends (installed)
//!                                                    + Essential / Priority: required packages
//! ```
//! A name that is neither installed nor a known placeholder is a finding too: dpkg cannot tell
//! its package, and nothing installed it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Paths and programs the code names as examples of what does not exist (unit tests).
const PLACEHOLDER_PATHS: &[&str] = &["/usr/bin/qemu"];
const PLACEHOLDER_PROGRAMS: &[&str] = &["definitely-not-a-program-xyz"];

/// Where something is named: `file:line`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Site {
    pub file: PathBuf,
    pub line: usize,
}

impl std::fmt::Display for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// A program or file the code needs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    /// A program looked up on PATH.
    Program(String),
    /// An absolute path.
    File(String),
}

impl std::fmt::Display for Need {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Need::Program(p) => write!(f, "program {p}"),
            Need::File(p) => write!(f, "file {p}"),
        }
    }
}

/// What the check found wrong about one need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// It comes from packages none of which `deploy/` installs.
    NotInstalledByDeploy { need: Need, packages: Vec<String>, named_at: Vec<Site> },
    /// It is not on this machine at all.
    Missing { need: Need, named_at: Vec<Site> },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sites = |s: &[Site]| s.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        match self {
            Finding::NotInstalledByDeploy { need, packages, named_at } => write!(
                f,
                "{need} (named at {}) comes from the Debian package {}, which no script in deploy/ installs: \
                 add it to deploy/common.sh",
                sites(named_at),
                packages.join(" or ")
            ),
            Finding::Missing { need, named_at } => write!(
                f,
                "{need} (named at {}) is not on this machine, so nothing in deploy/ installs it: \
                 find its package with `apt-file search` and add it to deploy/common.sh",
                sites(named_at)
            ),
        }
    }
}

/// The programs and files named by the project's source files under `repo`.
pub fn named_needs(repo: &Path) -> BTreeMap<Need, Vec<Site>> {
    let mut needs: BTreeMap<Need, Vec<Site>> = BTreeMap::new();
    for file in source_files(repo) {
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        let rel = file.strip_prefix(repo).unwrap_or(&file).to_owned();
        if rel == Path::new("tests/src/packages.rs") {
            continue; // its own patterns and examples
        }
        for (i, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") || code.starts_with('#') && !code.starts_with("#[") {
                continue;
            }
            for need in needs_in_line(line) {
                needs.entry(need).or_default().push(Site { file: rel.clone(), line: i + 1 });
            }
        }
    }
    needs
}

/// `*.rs` and `*.py` files of the repository, without build output and guest root filesystems.
fn source_files(repo: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![repo.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if !(name.starts_with('.') || name == "target" || name == "node_modules" || name == "rootfs") {
                    stack.push(path);
                }
            } else if name.ends_with(".rs") || name.ends_with(".py") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The string literals of a line, in order.
fn literals(line: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'"' {
            let start = i + 1;
            let mut j = start;
            while j < bytes.len() && bytes[j] != b'"' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            if j <= bytes.len() {
                out.push((i, &line[start..j.min(bytes.len())]));
            }
            i = j + 1;
        } else {
            i += 1;
        }
    }
    out
}

fn is_program_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
        && s.as_bytes()[0].is_ascii_alphanumeric()
}

/// What one line of source names.
fn needs_in_line(line: &str) -> Vec<Need> {
    let mut out = Vec::new();
    for (at, lit) in literals(line) {
        let before = line[..at].trim_end();
        let after = &line[(at + lit.len() + 2).min(line.len())..];
        if lit.starts_with('/') {
            let system = ["/usr/", "/bin/", "/sbin/", "/lib/"].iter().any(|p| lit.starts_with(p));
            if system && !lit.contains(['*', '{', ' ', '$']) && !PLACEHOLDER_PATHS.contains(&lit) {
                out.push(Need::File(lit.to_owned()));
            }
            continue;
        }
        if !is_program_name(lit) {
            continue;
        }
        let called = before.ends_with("Command::new(")
            || before.ends_with("Command::new(Path::new(")
            || before.ends_with("find_program(Path::new(")
            || (before.ends_with("run(") && after.starts_with(','))
            // Python: subprocess.run(["x", …]), Popen(["x", …]), a command list of one program
            || before.ends_with("run([")
            || before.ends_with("Popen([")
            || before.ends_with("Popen(")
            || before.ends_with("check_output([");
        if PLACEHOLDER_PROGRAMS.contains(&lit) {
            continue;
        }
        if called {
            out.push(Need::Program(lit.to_owned()));
        } else if after.starts_with(".into()") && before.ends_with(':') && which(lit).is_some() {
            // a configurable program's default, e.g. `qemu_img: "qemu-img".into()`
            out.push(Need::Program(lit.to_owned()));
        }
    }
    out
}

/// The program's path on PATH (or /usr/sbin, /sbin: root's tools).
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':').chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"]).map(|dir| Path::new(dir).join(program)).find(
        |p| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        },
    )
}

/// The packages that own `path` (as given, then with symlinks resolved, then with the merged
/// /usr spelled the other way: dpkg knows each file by the path its package ships).
pub fn owners(path: &Path) -> Vec<String> {
    let mut candidates = vec![path.to_owned()];
    if let Ok(real) = std::fs::canonicalize(path) {
        candidates.push(real);
    }
    for c in candidates.clone() {
        let s = c.to_string_lossy().into_owned();
        if let Some(rest) = s.strip_prefix("/usr") {
            candidates.push(PathBuf::from(rest));
        } else {
            candidates.push(PathBuf::from(format!("/usr{s}")));
        }
    }
    for c in candidates {
        let Ok(out) = Command::new("dpkg").arg("-S").arg(&c).output() else { continue };
        if !out.status.success() {
            continue;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut pkgs = BTreeSet::new();
        for line in text.lines() {
            // "pkg1, pkg2: /path" (diversions start with "diversion by")
            let Some((names, owned)) = line.rsplit_once(": ") else { continue };
            if Path::new(owned.trim()) != c || names.starts_with("diversion") {
                continue;
            }
            for name in names.split(", ") {
                pkgs.insert(name.split(':').next().unwrap_or(name).trim().to_owned());
            }
        }
        if !pkgs.is_empty() {
            return pkgs.into_iter().collect();
        }
    }
    Vec::new()
}

/// The packages the scripts in `deploy/` and `.ci/run` install by name.
pub fn deploy_packages(repo: &Path) -> BTreeSet<String> {
    let mut scripts = vec![repo.join(".ci/run")];
    let mut stack = vec![repo.join("deploy")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                if entry.file_name() != "rootfs" {
                    stack.push(p);
                }
            } else if p.extension().is_some_and(|e| e == "sh") || p.ends_with(".ci/run") {
                scripts.push(p);
            }
        }
    }
    let mut arrays: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut pkgs = BTreeSet::new();
    let mut lines = Vec::new();
    for script in scripts {
        let Ok(text) = std::fs::read_to_string(&script) else { continue };
        // join continuation lines
        lines.extend(text.replace("\\\n", " ").lines().map(str::to_owned).collect::<Vec<_>>());
    }
    let words = |s: &str| s.split_whitespace().map(|w| w.trim_matches('"').to_owned()).collect::<Vec<_>>();
    for line in &lines {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        if let Some((name, rest)) = line.split_once("=(")
            && name.chars().all(|c| c.is_ascii_uppercase() || c == '_')
            && name.ends_with("PACKAGES")
        {
            let list = rest.split(')').next().unwrap_or_default();
            arrays.insert(name.to_owned(), words(list));
        }
    }
    for line in &lines {
        let line = line.trim();
        let line = line.split(" #").next().unwrap_or(line);
        if let Some(rest) = line.strip_prefix("ensure_packages ") {
            for w in words(rest) {
                match w.strip_prefix("${").and_then(|v| v.strip_suffix("[@]}")) {
                    Some(array) => pkgs.extend(arrays.get(array).cloned().unwrap_or_default()),
                    None if !w.starts_with('$') => {
                        pkgs.insert(w);
                    }
                    None => {}
                }
            }
        }
        if let Some(rest) = line.strip_prefix("ensure_tools ") {
            for w in words(rest) {
                if let Some((_, pkg)) = w.split_once(':') {
                    pkgs.insert(pkg.to_owned());
                }
            }
        }
    }
    pkgs.extend(arrays.values().flatten().cloned());
    pkgs
}

/// Every installed package that `roots` bring in (Depends and Pre-Depends, with what provides
/// a virtual package), plus the essential and required packages of every Debian system.
pub fn closure(roots: &BTreeSet<String>) -> BTreeSet<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${Package}\t${Essential}\t${Priority}\t${Pre-Depends}, ${Depends}\t${Provides}\n"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run dpkg-query (this check needs Debian's dpkg): {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut deps: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
    let mut provided: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut done = BTreeSet::new();
    let mut todo: Vec<String> = roots.iter().cloned().collect();
    let name_of = |s: &str| s.split(['(', ':', ' ']).next().unwrap_or_default().trim().to_owned();
    for line in text.lines() {
        let mut f = line.split('\t');
        let (Some(pkg), Some(essential), Some(priority), Some(depends), provides) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let alternatives = depends
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(|d| d.split('|').map(|a| name_of(a.trim())).collect())
            .collect();
        deps.insert(pkg.to_owned(), alternatives);
        for p in provides.unwrap_or_default().split(',').map(|p| name_of(p.trim())).filter(|p| !p.is_empty()) {
            provided.entry(p).or_default().push(pkg.to_owned());
        }
        if essential == "yes" || priority == "required" {
            todo.push(pkg.to_owned());
        }
    }
    while let Some(pkg) = todo.pop() {
        if !done.insert(pkg.clone()) {
            continue;
        }
        for group in deps.get(&pkg).into_iter().flatten() {
            for alt in group {
                if deps.contains_key(alt) {
                    todo.push(alt.clone());
                }
                todo.extend(provided.get(alt).cloned().unwrap_or_default());
            }
        }
    }
    done
}

/// Checks every need against what `deploy` (package names the scripts install) brings in.
pub fn check(needs: &BTreeMap<Need, Vec<Site>>, deploy: &BTreeSet<String>) -> Vec<Finding> {
    let installed = closure(deploy);
    let mut findings = Vec::new();
    for (need, sites) in needs {
        let path = match need {
            Need::Program(p) => which(p),
            Need::File(p) => Some(PathBuf::from(p)).filter(|p| p.exists()),
        };
        let Some(path) = path else {
            findings.push(Finding::Missing { need: need.clone(), named_at: sites.clone() });
            continue;
        };
        let packages = owners(&path);
        if packages.is_empty() {
            // not from a package (e.g. a toolchain under /usr/local): nothing apt could install
            continue;
        }
        if !packages.iter().any(|p| installed.contains(p)) {
            findings.push(Finding::NotInstalledByDeploy { need: need.clone(), packages, named_at: sites.clone() });
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_and_files_in_a_line() {
        assert_eq!(
            needs_in_line(r#"let c = Command::new("ssh-keygen").arg("x");"#),
            [Need::Program("ssh-keygen".into())]
        );
        assert_eq!(needs_in_line(r#"run("ip", &["link"])"#), [Need::Program("ip".into())]);
        assert_eq!(
            needs_in_line(r#"pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";"#),
            [Need::File("/usr/share/OVMF/OVMF_CODE_4M.fd".into())]
        );
        assert_eq!(
            needs_in_line(r#"subprocess.run(["mkfs.vfat", "-n", "CIDATA", path])"#),
            [Need::Program("mkfs.vfat".into())]
        );
        assert!(needs_in_line(r#"let s = "running".to_owned();"#).is_empty());
        assert!(needs_in_line(r#"name: "no-such-program-here".into(),"#).is_empty());
    }
}
