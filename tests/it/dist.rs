//! The files to run drover as a daemon (dist/: systemd, OpenRC) and the CI
//! examples for a spec repository (examples/ci/): they parse, and the drover
//! flags they use exist.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn flags_in(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("--") && w.len() > 2 && w.as_bytes()[2].is_ascii_lowercase())
        .map(str::to_string)
        .collect()
}

/// The flags `drover <sub> --help` lists.
fn flags_of(sub: &str) -> BTreeSet<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_drover")).args([sub, "--help"]).output().unwrap();
    assert!(out.status.success(), "drover {sub} --help");
    flags_in(&String::from_utf8_lossy(&out.stdout))
}

/// Checks that every flag of `used` exists in `drover <sub>`.
fn check_flags(file: &str, sub: &str, used: &BTreeSet<String>) {
    assert!(!used.is_empty(), "{file}: found no drover flags to check");
    let known = flags_of(sub);
    for f in used {
        assert!(known.contains(f), "{file}: `drover {sub} {f}` does not exist");
    }
}

/// The lines of `text` from the one starting with `start` through the end of
/// its continuation (lines ending in `\`, or up to a closing quote).
fn block(text: &str, start: &str, quoted: bool) -> String {
    let mut lines = text.lines().skip_while(|l| !l.starts_with(start));
    let first = lines.next().unwrap_or_else(|| panic!("no line starting with {start}"));
    let mut out = vec![first];
    let mut open = if quoted { first.matches('"').count() % 2 == 1 } else { first.ends_with('\\') };
    for l in lines {
        if !open {
            break;
        }
        out.push(l);
        open = if quoted { l.matches('"').count() % 2 == 0 } else { l.ends_with('\\') };
    }
    out.join("\n")
}

fn unit_value<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines().filter_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('='))).collect()
}

#[test]
fn the_systemd_unit_is_valid_and_stops_gracefully() {
    let unit = read("dist/systemd/drover.service");
    for (key, value) in [
        ("Type", "simple"),
        ("User", "drover"),
        ("StateDirectory", "drover"),
        ("KillSignal", "SIGTERM"),
        ("KillMode", "mixed"),
        ("TimeoutStopSec", "15min"),
        ("Restart", "on-failure"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ReadWritePaths", "/var/lib/drover"),
        ("EnvironmentFile", "-/etc/default/drover"),
    ] {
        assert_eq!(unit_value(&unit, key), vec![value], "{key}");
    }
    let exec = block(&unit, "ExecStart=", false);
    assert!(exec.contains("--state-dir /var/lib/drover"), "{exec}");
    let used = flags_in(&exec);
    assert!(used.contains("--listen") && used.contains("--specs"), "{exec}");
    check_flags("drover.service", "reconcile", &used);
    // Every variable ExecStart uses is set in the example environment file.
    let env = read("dist/systemd/drover.env");
    for var in exec
        .split('$')
        .skip(1)
        .map(|v| v.trim_start_matches('{').split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next().unwrap())
    {
        assert!(env.lines().any(|l| l.starts_with(&format!("{var}="))), "{var} not in drover.env");
    }

    let Some(analyze) = which("systemd-analyze") else {
        println!("systemd-analyze verify: skipped (systemd-analyze is not installed)");
        return;
    };
    // verify wants the binary of ExecStart to exist: point it at this build.
    let dir = std::env::temp_dir().join(format!("drover-dist-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("drover.service");
    std::fs::write(&copy, unit.replace("/usr/bin/drover", env!("CARGO_BIN_EXE_drover"))).unwrap();
    let out = Command::new(analyze).arg("verify").arg(&copy).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // verify exits 0 on unknown keys and bad values (it ignores them): any
    // message about the unit is a failure.
    assert!(out.status.success() && !stderr.contains("drover.service"), "systemd-analyze verify:\n{stderr}");
}

#[test]
fn the_openrc_script_parses_and_supervises() {
    let script = read("dist/openrc/drover");
    assert!(script.starts_with("#!/sbin/openrc-run\n"));
    let out = Command::new("sh").arg("-n").arg(root().join("dist/openrc/drover")).output().unwrap();
    assert!(out.status.success(), "sh -n: {}", String::from_utf8_lossy(&out.stderr));
    for needle in ["supervisor=supervise-daemon", "TERM/900/KILL/5", "command_user=", "respawn_max=", "depend()"] {
        assert!(script.contains(needle), "{needle}");
    }
    let args = block(&script, "command_args=", true);
    check_flags("openrc/drover", "reconcile", &flags_in(&args));
    // Every setting the script reads is documented in the conf.d file.
    let confd = read("dist/openrc/drover.confd");
    let mut read_vars: BTreeSet<&str> = BTreeSet::new();
    for part in script.split("${").skip(1) {
        let var = part.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next().unwrap();
        if var.starts_with("DROVER_") {
            read_vars.insert(var);
        }
    }
    assert!(read_vars.len() >= 8, "{read_vars:?}");
    for var in read_vars {
        assert!(confd.contains(&format!("{var}=")), "{var} not in drover.confd");
    }
    match which("openrc-run") {
        Some(_) => println!("openrc-run is installed; the script was checked with sh -n only"),
        None => println!("openrc-run: not installed (sh -n only)"),
    }
}

#[test]
fn the_ci_examples_parse_and_use_real_flags() {
    for file in ["examples/ci/github-actions.yml", "examples/ci/gitlab-ci.yml"] {
        let text = read(file);
        let doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        let scripts: Vec<String> = match file.contains("github") {
            true => {
                assert!(doc["on"]["pull_request"].is_null() && doc["on"].get("pull_request").is_some(), "{file}: on");
                assert_eq!(doc["permissions"]["pull-requests"], "write");
                let steps = doc["jobs"]["plan"]["steps"].as_array().expect("jobs.plan.steps");
                steps.iter().filter_map(|s| s["run"].as_str().map(str::to_string)).collect()
            }
            false => {
                assert_eq!(doc["plan"]["rules"][0]["if"], "$CI_PIPELINE_SOURCE == \"merge_request_event\"");
                ["validate", "plan"]
                    .iter()
                    .flat_map(|j| doc[j]["script"].as_array().unwrap_or_else(|| panic!("{file}: {j}.script")).clone())
                    .map(|s| s.as_str().unwrap().to_string())
                    .collect()
            }
        };
        let all = scripts.join("\n");
        assert!(all.contains("drover validate"), "{file}");
        assert!(all.contains("--output json") && all.contains("--output text"), "{file}");
        // Exit code 2 (changes pending) must not fail the job.
        assert!(all.contains("-eq 2") || all.contains("-ne 2"), "{file}");
        let (mut validate, mut plan) = (BTreeSet::new(), BTreeSet::new());
        for line in all.lines() {
            if line.contains("drover validate") {
                validate.extend(flags_in(line));
            }
            if line.contains("drover plan") || line.trim_start().starts_with("common=") {
                plan.extend(flags_in(line));
            }
        }
        check_flags(file, "validate", &validate);
        check_flags(file, "plan", &plan);
    }
}

fn which(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(bin)).find(|p| p.is_file())
}

/// Both service files raise the descriptor limit (an SSH master and socket
/// per node) and turn reload into SIGHUP, which drover takes as "read the
/// spec again" (not a stop).
#[test]
fn service_files_raise_the_descriptor_limit_and_reload_with_sighup() {
    let unit = read("dist/systemd/drover.service");
    let limit = unit_value(&unit, "LimitNOFILE");
    assert_eq!(limit.len(), 1, "drover.service: one LimitNOFILE");
    assert!(limit[0].parse::<u64>().is_ok_and(|n| n >= 65536), "LimitNOFILE={}", limit[0]);
    assert_eq!(unit_value(&unit, "ExecReload"), ["/bin/kill -HUP $MAINPID"]);
    let rc = read("dist/openrc/drover");
    let ulimit = rc.lines().find(|l| l.starts_with("rc_ulimit=")).expect("dist/openrc/drover: rc_ulimit");
    let n: u64 = ulimit.split("-n ").nth(1).and_then(|r| r.trim_end_matches(['"', '}']).parse().ok()).expect(ulimit);
    assert!(n >= 65536, "{ulimit}");
    assert!(rc.contains("--signal HUP"), "dist/openrc/drover: reload sends SIGHUP");
}
