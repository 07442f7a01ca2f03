//! The layering of ARCHITECTURE.md, checked on the source: the pure core
//! depends on nothing above it; the controller (`src/control/`) on the core
//! only; the two adapters (`src/real/`, `src/sim/`) on the controller and
//! the core, never on each other; only the controller moves the memory
//! through an action's begin and end (one reconcile loop); the CLI's daemon
//! does not reach back into `cli/reconcile.rs`. Test modules may use the
//! simulation's fleet generator, so test code does not count.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The non-test code of a file, comments left out.
fn code(path: &Path) -> Vec<(usize, String)> {
    let name = path.file_name().unwrap().to_string_lossy();
    if name == "tests.rs" || name.ends_with("_tests.rs") {
        return Vec::new();
    }
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.trim() == "#[cfg(test)]" {
            let next = lines.get(i + 1).map_or("", |l| l.trim());
            // An inline test module runs to the end of the file; an item
            // (`mod x;`, a `use`, a function) is one item.
            if next.starts_with("mod ") && next.ends_with('{') {
                break;
            }
            i += 2;
            continue;
        }
        if !line.trim_start().starts_with("//") {
            out.push((i + 1, line.to_string()));
        }
        i += 1;
    }
    out
}

/// Every use of a forbidden path in the files under `dir`.
fn uses(dir: &str, forbidden: &[&str]) -> Vec<String> {
    let mut files = Vec::new();
    let path = root().join(dir);
    if path.is_file() {
        files.push(path);
    } else {
        rust_files(&path, &mut files);
    }
    let mut found = Vec::new();
    for f in files {
        for (n, line) in code(&f) {
            for bad in forbidden {
                if line.contains(bad) {
                    found.push(format!("{}:{n}: {bad}: {}", f.strip_prefix(root()).unwrap().display(), line.trim()));
                }
            }
        }
    }
    found
}

#[test]
fn the_pure_core_depends_on_nothing_above_it() {
    let above = ["crate::control", "crate::real", "crate::sim", "crate::daemon", "crate::cli", "tokio::"];
    for dir in ["plan", "model", "observe", "spec", "render", "diff.rs", "invariants.rs", "status.rs"] {
        let found = uses(dir, &above);
        assert!(found.is_empty(), "the pure core reaches up:\n{}", found.join("\n"));
    }
}

#[test]
fn the_controller_depends_on_the_core_only() {
    let found = uses("control", &["crate::real", "crate::sim", "crate::daemon", "crate::cli"]);
    assert!(found.is_empty(), "the controller reaches into an adapter or a shell:\n{}", found.join("\n"));
}

#[test]
fn the_adapters_do_not_import_each_other() {
    let found = uses("real", &["crate::sim", "crate::daemon", "crate::cli"]);
    assert!(found.is_empty(), "real/ reaches into another adapter:\n{}", found.join("\n"));
    let found = uses("sim", &["crate::real", "crate::daemon", "crate::cli"]);
    assert!(found.is_empty(), "sim/ reaches into another adapter:\n{}", found.join("\n"));
}

#[test]
fn only_the_controller_journals_actions() {
    // `Memory::begin` / `complete` are the journal transitions of an action;
    // a second loop would call them (or plan pass after pass) itself.
    for dir in ["sim", "real", "daemon", "cli"] {
        let found = uses(dir, &[".begin(&", ".complete(&", "plan_with(", "gate::record("]);
        assert!(found.is_empty(), "a second reconcile loop in {dir}/:\n{}", found.join("\n"));
    }
}

#[test]
fn the_cli_has_no_circle_between_daemon_and_reconcile() {
    let found = uses("cli/daemon.rs", &["reconcile::", "super::reconcile"]);
    assert!(found.is_empty(), "cli/daemon.rs uses cli/reconcile.rs, which uses it:\n{}", found.join("\n"));
}
