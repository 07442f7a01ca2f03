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

/// A copy of the reference spec with one space too many at the start of
/// line 10 of fleet.yaml (`packages:` of the fleet defaults), in a fresh directory.
fn reference_spec_with_a_bad_indent(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("drover-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let specs = dir.join("specs");
    std::fs::create_dir_all(specs.join("sites")).unwrap();
    for entry in std::fs::read_dir(format!("{}/specs/sites", root())).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, specs.join("sites").join(p.file_name().unwrap())).unwrap();
    }
    let fleet = std::fs::read_to_string(format!("{}/specs/fleet.yaml", root())).unwrap();
    let mut lines: Vec<String> = fleet.lines().map(str::to_string).collect();
    assert_eq!(lines[9], "    packages: [base, web-2026.11, kernel-6.6.62]", "line 10 of the reference fleet.yaml");
    lines[9].insert(0, ' ');
    std::fs::write(specs.join("fleet.yaml"), lines.join("\n") + "\n").unwrap();
    dir
}

#[test]
fn one_bad_indent_in_the_reference_spec_is_one_error_and_a_count() {
    let dir = reference_spec_with_a_bad_indent("indent");
    let specs = dir.join("specs");
    let out = drover().args(["validate", "--specs"]).arg(&specs).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let headlines: Vec<&str> = stderr.lines().filter(|l| l.contains(": error: ")).collect();
    assert_eq!(headlines.len(), 1, "{stderr}");
    assert!(headlines[0].ends_with("fleet.yaml:11:5: error: while parsing a block mapping, did not find expected key"));
    let last = stderr.lines().last().unwrap();
    assert!(last.starts_with(&format!("1 error in {}; ", specs.display())), "{stderr}");
    assert!(last.ends_with("errors that may follow from it were not reported (fix the parse error first)"), "{stderr}");
    assert!(stderr.lines().count() < 15, "{stderr}");

    let out = drover().args(["validate", "--output", "json", "--specs"]).arg(&specs).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["errors"].as_array().map(Vec::len), Some(1), "{v}");
    let suppressed = v["suppressed"].as_u64().unwrap();
    assert!(suppressed > 0 && last.contains(&format!("; {suppressed} errors")), "{v} {last}");

    // The commands that load the spec report it the same way.
    for args in [&["plan", "--simulate"][..], &["plan"], &["status", "--direct"], &["reconcile", "--once"]] {
        let out =
            drover().args(args).arg("--specs").arg(&specs).arg("--state-dir").arg(dir.join("state")).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().filter(|l| l.contains(": error: ")).count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains("(fix the parse error first)"), "{args:?}: {stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_rejected_spec_is_reported_root_cause_first_by_the_daemons_spec_source() {
    let dir = reference_spec_with_a_bad_indent("rejected");
    let update = drover::daemon::source::read(&dir.join("specs"), None);
    let error = update.fleet.err().expect("the spec is rejected");
    assert_eq!(error.lines().filter(|l| l.contains(": error: ")).count(), 1, "{error}");
    assert!(
        error
            .lines()
            .next()
            .unwrap()
            .ends_with("fleet.yaml:11:5: error: while parsing a block mapping, did not find expected key")
    );
    assert!(error.ends_with("(fix the parse error first)"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The lines of `stderr` that say what to do about a missing known_hosts file.
fn assert_known_hosts_hint(what: &str, stderr: &str, simulated: bool) {
    assert_eq!(stderr.contains("this spec describes its fleet for simulation"), simulated, "{what}: {stderr}");
    if simulated {
        assert!(
            stderr.contains("run the command with `--simulate`, e.g. `drover plan --simulate`"),
            "{what}: {stderr}"
        );
    }
    assert!(stderr.contains("point `fleet.ssh.known_hosts` (or --known-hosts FILE) at a file"), "{what}: {stderr}");
    assert!(stderr.contains("\n    ssh-keyscan "), "{what}: {stderr}");
}

#[test]
fn a_simulated_fleet_run_without_simulate_says_to_add_it_or_how_to_reach_a_real_fleet() {
    let state = std::env::temp_dir().join(format!("drover-kh-{}", std::process::id()));
    let specs = format!("{}/specs", root());
    for args in [&["plan"][..], &["status", "--direct"], &["reconcile", "--once"]] {
        let out = drover().args(args).args(["--specs", &specs]).arg("--state-dir").arg(&state).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: fleet.ssh.known_hosts "), "{args:?}: {stderr}");
        assert_known_hosts_hint(&format!("{args:?}"), &stderr, true);
        assert!(stderr.contains("its 518 nodes and 5 LB hosts"), "{stderr}");
        assert!(stderr.contains("ssh-keyscan -f HOSTS >> "), "{stderr}");
    }
    // A spec without a `simulation:` section: only how to reach the real
    // fleet, with the hosts listed (few) and --known-hosts named by the user.
    let minimal = format!("{}/examples/minimal", root());
    let out = drover()
        .args(["plan", "--specs", &minimal, "--known-hosts"])
        .arg(state.join("nowhere"))
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_known_hosts_hint("--known-hosts", &stderr, false);
    assert!(stderr.contains(&format!(">> {}", state.join("nowhere").display())), "{stderr}");
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn the_daemon_says_the_same_when_it_cannot_connect_a_simulated_fleet() {
    let state = std::env::temp_dir().join(format!("drover-kh-daemon-{}", std::process::id()));
    std::fs::create_dir_all(&state).unwrap();
    let log = state.join("log");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = drover()
        .args(["reconcile", "--specs", &format!("{}/specs", root()), "--listen", &format!("127.0.0.1:{port}")])
        .arg("--state-dir")
        .arg(state.join("state"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("ssh-keyscan records whatever answers") {
            break text;
        }
        if child.try_wait().unwrap().is_some() || t0.elapsed() > std::time::Duration::from_secs(60) {
            let _ = child.kill();
            panic!("no hint in the daemon's log:\n{text}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(text.contains("cannot connect the fleet"), "{text}");
    assert_known_hosts_hint("daemon", &text, true);
    let _ = std::fs::remove_dir_all(&state);
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
