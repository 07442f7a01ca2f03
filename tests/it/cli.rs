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

/// `drover status --simulate | head -1`: a reader that stops early ends the
/// output quietly (as for any Unix filter), without a panic.
#[test]
fn a_closed_stdout_is_not_a_panic() {
    use std::io::{BufRead, BufReader};
    for args in [&["status", "--simulate"][..], &["plan", "--simulate"][..], &["schema"][..]] {
        let mut child = drover()
            .args(args)
            .arg("--specs")
            .arg(format!("{}/specs", root()))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
        // The reader is gone now.
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!first.is_empty(), "{args:?}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn plan_and_reconcile_help_document_their_exit_codes() {
    for cmd in ["plan", "reconcile"] {
        let out = drover().args([cmd, "--help"]).output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{help}");
        assert!(help.contains("the first listed wins"), "{help}");
        for code in ["  0 ", "  1 ", "  2 ", "  4 ", "  64 "] {
            assert!(help.contains(code), "{cmd} --help lacks exit code{code}:\n{help}");
        }
        assert!(help.contains("4    some nodes could not be observed over SSH"), "{help}");
    }
}

/// A node that dies during a simulated rollout never answers again: the
/// run is not converged, names it, and exits 4 (not 0).
#[test]
fn a_simulated_node_death_is_not_converged_and_exits_4() {
    let out = drover()
        .args(["--output", "json", "--specs"])
        .arg(format!("{}/specs", root()))
        .args(["reconcile", "--once", "--simulate", "--faults", "node-death=1", "--sessions", "200"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(out.status.code(), Some(4), "{last}");
    assert_eq!((last["converged"].as_bool(), last["settled"].as_bool()), (Some(false), Some(true)), "{last}");
    assert_eq!(last["unobserved"].as_array().map(Vec::len), Some(1), "{last}");
    assert_eq!(last["violations"], 0, "{last}");
}

#[test]
fn without_a_named_known_hosts_file_drover_does_not_fall_back_to_the_users() {
    let home = std::env::temp_dir().join(format!("drover-home-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::write(home.join(".ssh/known_hosts"), "10.0.0.1 ssh-ed25519 AAAA\n").unwrap();
    let out = drover()
        .args(["plan", "--specs"])
        .arg(format!("{}/examples/minimal", root()))
        .arg("--state-dir")
        .arg(home.join("state"))
        .env("HOME", &home)
        .env_remove("DROVER_STATE_DIR")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("no known_hosts file") && stderr.contains("--known-hosts"), "{stderr}");
    std::fs::remove_dir_all(&home).unwrap();
}
