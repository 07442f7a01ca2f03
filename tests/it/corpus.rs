//! The invalid-spec corpus: every directory under tests/invalid/ is a spec
//! with one kind of mistake (one has many, across two files). Each must fail
//! with diagnostics that name file:line:column, snapshotted with the source
//! line and caret so a reviewer sees exactly what a user sees (the root
//! cause first: while a file fails to parse, what may follow from it is
//! counted, not shown).

use std::path::Path;

use drover::spec::{SourceFile, diag, load_dir, validate};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Loads a case with paths relative to the repository, so snapshots do not
/// depend on where the checkout lives.
fn load(dir: &Path) -> Vec<SourceFile> {
    let mut files = load_dir(dir).expect("case loads");
    for f in &mut files {
        f.path = Path::new(&f.path).strip_prefix(root()).map(|p| p.display().to_string()).unwrap_or(f.path.clone());
    }
    files
}

#[test]
fn the_base_of_the_corpus_is_valid() {
    let text = std::fs::read_to_string(root().join("tests/invalid/00-valid-base.yaml.txt")).unwrap();
    let files = [SourceFile { path: "base.yaml".into(), text }];
    if let Err(d) = validate::check(&files) {
        panic!("{}", diag::render(&d, &files));
    }
}

#[test]
fn every_invalid_spec_fails_with_located_diagnostics() {
    let mut cases: Vec<_> = std::fs::read_dir(root().join("tests/invalid"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && !p.ends_with("snapshots"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 40, "only {} invalid cases", cases.len());
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(root().join("tests/invalid/snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| {
        for dir in &cases {
            let name = dir.file_name().unwrap().to_string_lossy().to_string();
            let files = load(dir);
            let diags = match validate::check(&files) {
                Ok(_) => panic!("{name}: an invalid spec was accepted"),
                Err(d) => d,
            };
            for d in &diags {
                assert!(d.line > 0 && d.column > 0, "{name}: diagnostic without a position: {d:?}");
                assert!(d.file.starts_with("tests/invalid/"), "{name}: {}", d.file);
            }
            // What the user sees: the root cause first, and what was held back.
            let report = diag::Report::of(diags);
            let mut seen = report.render(&files);
            if report.suppressed > 0 {
                seen.push_str(&report.summary(&format!("tests/invalid/{name}"), ""));
                seen.push('\n');
            }
            insta::assert_snapshot!(name, seen);
        }
    });
}

#[test]
fn all_errors_are_reported_at_once_in_order() {
    let files = load(&root().join("tests/invalid/58-many-errors"));
    let diags = validate::check(&files).unwrap_err();
    assert!(diags.len() >= 5, "{diags:#?}");
    let keys: Vec<_> = diags.iter().map(|d| (d.file.clone(), d.line, d.column)).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert!(diags.iter().any(|d| d.file.ends_with("more.yaml")), "errors of both files");
}

#[test]
fn the_cli_reports_text_and_json() {
    let case = root().join("tests/invalid/24-atom-shell-injection");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["validate", "--specs"])
        .arg(&case)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("spec.yaml:18:13: error: package atom"), "{err}");
    assert!(err.contains("the shell operator `;`"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["validate", "--output", "json", "--specs"])
        .arg(&case)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    let e = &v["errors"][0];
    assert_eq!((e["line"].as_u64(), e["column"].as_u64()), (Some(18), Some(13)));
    assert!(e["hint"].as_str().unwrap().contains("category/package-version"));
}
