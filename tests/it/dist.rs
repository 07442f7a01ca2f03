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

/// A temporary directory removed when dropped.
struct Scratch(PathBuf);
impl Scratch {
    fn new(name: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("drover-dist-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
}
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn need(bin: &str, package: &str) -> PathBuf {
    which(bin)
        .or_else(|| ["/usr/sbin", "/usr/bin"].iter().map(|d| Path::new(d).join(bin)).find(|p| p.is_file()))
        .unwrap_or_else(|| panic!("{bin} is not installed: apt-get install {package} (tests/run-all does)"))
}

/// The node's PHP-FPM starts and reloads through /opt/php/current, and
/// tests its configuration before either (a reload onto a rejected
/// configuration kills the master).
#[test]
fn the_node_php_fpm_service_files_run_through_current_and_test_before_reload() {
    let fpm = "/opt/php/current/sbin/php-fpm";
    let conf = "--fpm-config /opt/php/current/etc/php-fpm.conf -c /opt/php/current/etc/php.ini";
    let unit = read("dist/node/systemd/php-fpm.service");
    assert_eq!(unit_value(&unit, "ExecStart"), [format!("{fpm} --nodaemonize {conf}")]);
    assert_eq!(unit_value(&unit, "ExecStartPre"), [format!("{fpm} -t {conf}")]);
    assert_eq!(unit_value(&unit, "ExecReload"), [format!("{fpm} -t {conf}"), "/bin/kill -USR2 $MAINPID".into()]);

    let rc = read("dist/node/openrc/php-fpm");
    assert!(rc.starts_with("#!/sbin/openrc-run\n"));
    let out = Command::new("sh").arg("-n").arg(root().join("dist/node/openrc/php-fpm")).output().unwrap();
    assert!(out.status.success(), "sh -n: {}", String::from_utf8_lossy(&out.stderr));
    assert!(rc.contains("fpm_root=\"/opt/php/current\"") && rc.contains("command=\"${fpm_root}/sbin/php-fpm\""));
    let reload = rc.split("reload() {").nth(1).expect("a reload function");
    let (test, signal) = (reload.find("checkconfig || return 1"), reload.find("--signal USR2"));
    assert!(test.is_some() && signal.is_some() && test < signal, "reload tests the configuration first:\n{reload}");
}

/// The shipped php-fpm.conf is one PHP-FPM accepts, keeps requests in
/// flight across a reload, and serves the pool status at the spec's default
/// `pool_status`.
#[test]
fn the_node_php_fpm_conf_is_accepted_by_php_fpm_and_serves_the_proof() {
    let text = read("dist/node/php-fpm.conf");
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.trim_start().strip_prefix('=')).map(str::trim))
            .unwrap_or_else(|| panic!("php-fpm.conf: no {key}"))
    };
    let secs = |v: &str| humantime::parse_duration(v).unwrap_or_else(|e| panic!("{v}: {e}")).as_secs();
    assert!(secs(value("process_control_timeout")) >= secs(value("request_terminate_timeout")));
    assert!(secs(value("process_control_timeout")) > 0, "0 kills every request in flight on a reload");
    // specs/ leaves `pool_status` at its default.
    assert!(!read("specs/fleet.yaml").contains("pool_status"));
    let files = drover::spec::load_dir(&root().join("specs")).unwrap();
    let spec = drover::spec::validate::check(&files).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(value("pm.status_path"), spec.policy.health.pool_status);

    // PHP-FPM's own test, on a copy whose paths are in a scratch directory
    // (the user and group of a node do not exist here).
    let dir = Scratch::new("fpm");
    let d = dir.0.display().to_string();
    let copy = text
        .replace("/run/", &format!("{d}/"))
        .replace("/var/log/", &format!("{d}/"))
        .replace("= apache", "= nobody")
        .replace("group = nobody", "group = nogroup")
        .replace("listen.group = nobody", "listen.group = nogroup");
    std::fs::write(dir.0.join("php-fpm.conf"), copy).unwrap();
    std::fs::write(dir.0.join("php.ini"), read("dist/node/php.ini")).unwrap();
    let out = Command::new(need("php-fpm8.2", "php8.2-fpm"))
        .arg("-t")
        .arg("--fpm-config")
        .arg(dir.0.join("php-fpm.conf"))
        .arg("-c")
        .arg(dir.0.join("php.ini"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.contains("test is successful"), "php-fpm -t:\n{said}");
}

/// The shipped health endpoint says release (from code it includes),
/// PHP tree and worker pid, and fails without a release marker.
#[test]
fn the_node_health_endpoint_names_release_php_and_worker() {
    let dir = Scratch::new("health");
    std::fs::create_dir_all(dir.0.join("2026.11.2/public")).unwrap();
    std::fs::write(dir.0.join("2026.11.2/public/health.php"), read("dist/node/health.php")).unwrap();
    let php = need("php8.2", "php8.2-cli");
    let run = || Command::new(&php).arg(dir.0.join("2026.11.2/public/health.php")).output().unwrap();
    let out = run();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(said.starts_with("no release marker"), "{said}");
    std::fs::write(dir.0.join("2026.11.2/release.php"), "<?php return '2026.11.2';\n").unwrap();
    let out = run();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    let words: Vec<&str> = said.split_whitespace().collect();
    assert!(out.status.success() && words.contains(&"release=2026.11.2"), "{said}");
    assert!(words.iter().any(|w| w.strip_prefix("pid=").is_some_and(|p| p.parse::<u32>().is_ok())), "{said}");
    assert!(words.iter().any(|w| w.starts_with("php=")) && words.contains(&"tree=2026.11.2"), "{said}");
}

/// The shipped vhost is one Apache accepts with the modules it names.
#[test]
fn the_node_apache_vhost_is_accepted_by_apache() {
    let dir = Scratch::new("apache");
    let mods = "/usr/lib/apache2/modules";
    let d = dir.0.display();
    let mut conf = format!("ServerRoot {d}\nServerName node.test\nListen 127.0.0.1:1\nErrorLog {d}/error.log\n");
    for m in ["mpm_event", "proxy", "proxy_fcgi", "authz_core", "authz_host", "dir"] {
        conf += &format!("LoadModule {m}_module {mods}/mod_{m}.so\n");
    }
    conf += &format!("Include {}\n", root().join("dist/node/apache-vhost.conf").display());
    std::fs::write(dir.0.join("httpd.conf"), conf).unwrap();
    let out = Command::new(need("apache2", "apache2"))
        .arg("-t")
        .arg("-f")
        .arg(dir.0.join("httpd.conf"))
        .env("APACHE_RUN_DIR", &dir.0)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.contains("Syntax OK"), "apache2 -t:\n{said}");
}
