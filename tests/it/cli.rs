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

/// `reconcile --once --simulate` with its output: (exit code, stdout, the
/// last stdout line as JSON when `json`).
fn simulate_once(args: &[&str], json: bool) -> (Option<i32>, String, Option<serde_json::Value>) {
    let mut cmd = drover();
    if json {
        cmd.args(["--output", "json"]);
    }
    let out = cmd
        .arg("--specs")
        .arg(format!("{}/specs", root()))
        .args(["reconcile", "--once", "--simulate", "--sessions", "200"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let last = json.then(|| serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_default());
    (out.status.code(), stdout, last)
}

/// A strategy that breaks invariants reaches every target fast, under the
/// safe lower bound: it is a failure, never "converged", and a ratio to a
/// bound for safe rollouts means nothing there.
#[test]
fn a_run_with_violations_is_not_called_converged() {
    let (code, stdout, _) = simulate_once(&["--strategy", "serial:10"], false);
    let first = stdout.lines().next().unwrap_or("");
    assert_eq!(code, Some(1), "{stdout}");
    assert!(first.starts_with("FAILED: ") && first.contains("invariant violations"), "{first}");
    assert!(!stdout.contains("converged") && !stdout.contains("ratio"), "{stdout}");
    let (code, _, json) = simulate_once(&["--strategy", "serial:10"], true);
    let json = json.unwrap();
    assert_eq!(code, Some(1), "{json}");
    assert_eq!((json["verdict"].as_str(), json["converged"].as_bool()), (Some("violated"), Some(false)), "{json}");
    assert!(json["ratio"].is_null() && json["violations"].as_u64() > Some(0), "{json}");
}

/// Faults that exhaust the failure budget: the run says it halted, exits 3
/// and prints no makespan ratio.
#[test]
fn a_halted_run_says_halted() {
    let (code, stdout, _) = simulate_once(&["--faults", "action-fail=0.05"], false);
    let first = stdout.lines().next().unwrap_or("");
    assert_eq!(code, Some(3), "{stdout}");
    assert!(first.starts_with("HALTED at ") && first.contains("failure budget"), "{first}");
    assert!(!stdout.contains("converged") && !stdout.contains("ratio"), "{stdout}");
    let (code, _, json) = simulate_once(&["--faults", "action-fail=0.05"], true);
    let json = json.unwrap();
    assert_eq!(code, Some(3), "{json}");
    assert_eq!((json["verdict"].as_str(), json["halted"].as_bool()), (Some("halted"), Some(true)), "{json}");
    assert!(json["ratio"].is_null() && json["converged"] == false, "{json}");
}

/// The main job tells a newcomer what it waits for: the preproduction soak
/// with its end time when it begins, "gate passed" when it ends (at that
/// time), before the first production farm leaves the LB; and the whole
/// run stays readable (a few lines per farm, none per node).
#[test]
fn the_main_job_shows_the_soak_wait_and_the_gate_passing() {
    let out = drover()
        .arg("--specs")
        .arg(format!("{}/specs", root()))
        .args(["reconcile", "--once", "--simulate"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    let soak = lines.iter().position(|l| l.contains("production gated on preproduction soak until "));
    let soak = soak.unwrap_or_else(|| panic!("no soak wait with its end:\n{stderr}"));
    let until = lines[soak].split("soak until ").nth(1).and_then(|r| r.split(' ').next()).unwrap();
    let passed = lines.iter().position(|l| l.contains("gate passed: production may start"));
    let passed = passed.unwrap_or_else(|| panic!("no gate-passed line:\n{stderr}"));
    assert!(lines[passed].starts_with(&format!("[{until}]")), "the gate passes when the soak said: {}", lines[passed]);
    let first_prod_out = lines.iter().position(|l| l.contains(" out of the LB ") && !l.contains("farm pp-"));
    let first_prod_out = first_prod_out.unwrap_or_else(|| panic!("no production farm window:\n{stderr}"));
    assert!(soak < passed && passed < first_prod_out, "soak wait, gate passed, then production:\n{stderr}");
    assert!(lines.len() <= 200, "{} lines for 518 nodes:\n{stderr}", lines.len());
}

/// `plan --simulate` shows its progress on a terminal (here a pseudo-terminal
/// from `script`), and prints nothing of it on a pipe.
#[test]
fn plan_simulate_shows_progress_on_a_terminal_only() {
    let specs = format!("{}/specs", root());
    let out = drover().args(["--specs", &specs, "plan", "--simulate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    let cmd = format!("{} --specs {specs} plan --simulate >/dev/null", env!("CARGO_BIN_EXE_drover"));
    let Ok(tty) = std::process::Command::new("script").args(["-qec", &cmd, "/dev/null"]).output() else {
        eprintln!("skipped: `script` (util-linux) is not installed to give drover a terminal");
        return;
    };
    let shown = String::from_utf8_lossy(&tty.stdout);
    assert!(shown.contains("projecting the rollout"), "{shown}");
}
