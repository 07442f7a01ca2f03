//! The binary's contract: exit codes and output of `validate` and `schema`.

use std::process::Command;

fn drover() -> Command {
    Command::new(env!("CARGO_BIN_EXE_drover"))
}

fn root() -> &'static str {
    env!("CARGO_MANIFEST_DIR")
}

#[test]
fn reference_spec_is_valid() {
    let out = drover().args(["validate", "--specs"]).arg(format!("{}/specs", root())).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("518 nodes (512 production)"), "{stdout}");
}

#[test]
fn usage_error_has_its_own_exit_code() {
    let out = drover().args(["validate", "--no-such-flag"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let out = drover().arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn missing_spec_dir_is_an_error_not_a_panic() {
    let out = drover().args(["validate", "--specs", "/nonexistent/drover-specs"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read spec directory"));
}

#[test]
fn schema_command_prints_the_committed_schema() {
    let out = drover().arg("schema").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let committed = std::fs::read(format!("{}/schemas/drover-spec.schema.json", root())).unwrap();
    assert_eq!(out.stdout, committed);
}
