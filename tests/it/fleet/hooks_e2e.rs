//! Release hooks end to end (issue 13) on the real test fleet: `drover
//! reconcile --once` (the real binary) runs a release's `bin/migrate` (a real
//! SQLite schema migration per environment, tests/it/fleet/hooks/migrate)
//! and warms switched nodes (`policy.warmup`) while load generators run
//! sessions through every site's HAProxy.
//!
//! One small fleet per test: a preproduction site of 2 farms x 2 nodes and a
//! production site of 2 farms x 2 nodes (the first farm of each on the real
//! Apache + php-fpm stack), no real Portage (no package changes here).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Output, Stdio};
use std::time::{Duration, UNIX_EPOCH};

use super::e2e::{assert_rolled_out, drover, load_all, state_dir, stop_all, summary};
use super::procs::wait_for;
use super::topology::{FarmTopo, SiteTopo, Target};
use super::{Admin, FleetOptions, TestFleet, Topology};

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// `pp` (preproduction: pp-f1, pp-f2) and `hp` (production: hp-f1, hp-f2),
/// of two nodes each.
fn topology() -> Topology {
    let site = |name: &str, production: bool, nodes: usize| SiteTopo {
        name: name.into(),
        production,
        admin: Admin::Tcp,
        farms: (1..=2)
            .map(|f| FarmTopo { name: format!("{name}-f{f}"), profiles: vec!["r640".into(); nodes] })
            .collect(),
    };
    Topology { sites: vec![site("pp", false, 2), site("hp", true, 2)] }
}

fn start(test: &str) -> TestFleet {
    TestFleet::start(test, FleetOptions { real_portage: false, ..FleetOptions::full(topology()) })
}

/// Writes `to` as the target with `policy` lines added to `fleet.policy`
/// (indented by 4) and a `releases:` section (`id: hooks` flow maps).
pub(super) fn write_spec_with(fleet: &mut TestFleet, to: &Target, policy: &str, releases: &[(&str, &str)]) {
    fleet.write_spec(to);
    let path = fleet.spec_dir.join("fleet.yaml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text = text.replacen("    failure_budget:", &format!("{policy}    failure_budget:"), 1);
    if !releases.is_empty() {
        text.push_str("\nreleases:\n");
        for (id, hooks) in releases {
            text.push_str(&format!("  - {{ id: \"{id}\", hooks: {{ {hooks} }} }}\n"));
        }
    }
    std::fs::write(&path, &text).unwrap();
    let files = [drover::spec::SourceFile { path: path.display().to_string(), text }];
    fleet.model = drover::spec::validate::check(&files)
        .unwrap_or_else(|d| panic!("the spec with hooks is invalid:\n{}", drover::spec::diag::render(&d, &files)));
}

/// One line of a hook log: `<epoch.ns> <node> <release> <event...>`.
#[derive(Clone, Debug)]
pub(super) struct Event {
    pub at: f64,
    pub node: String,
    pub release: String,
    pub event: String,
}

pub(super) fn hook_log(fleet: &TestFleet, name: &str) -> Vec<Event> {
    let text = std::fs::read_to_string(fleet.hooks_dir().join(format!("log-{name}"))).unwrap_or_default();
    text.lines()
        .map(|l| {
            let mut f = l.splitn(4, ' ');
            let mut next = || f.next().unwrap_or_else(|| panic!("bad hook log line {l:?}")).to_string();
            let at = next().parse().unwrap_or_else(|_| panic!("bad time in {l:?}"));
            Event { at, node: next(), release: next(), event: next() }
        })
        .collect()
}

/// Events `event` of `release` in `log`.
pub(super) fn events<'a>(log: &'a [Event], release: &str, event: &str) -> Vec<&'a Event> {
    log.iter().filter(|e| e.release == release && e.event == event).collect()
}

/// When each node of `site` last switched release (its `current` link's mtime).
fn switch_times(fleet: &TestFleet, site: &str) -> BTreeMap<String, f64> {
    fleet
        .nodes
        .iter()
        .filter(|n| n.site == site)
        .map(|n| {
            let m = std::fs::symlink_metadata(n.root.join("srv/app/current")).unwrap().modified().unwrap();
            (n.name.clone(), m.duration_since(UNIX_EPOCH).unwrap().as_secs_f64())
        })
        .collect()
}

fn migrations_applied(fleet: &TestFleet, env: &str) -> Vec<String> {
    let db = fleet.hooks_dir().join(format!("db-{env}.sqlite"));
    let out = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg("SELECT version FROM schema_migrations ORDER BY version;")
        .output()
        .expect("run sqlite3 (Debian package sqlite3)");
    assert!(out.status.success(), "sqlite3 {}: {}", db.display(), text(&out));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

/// The expand ran once per environment (preproduction's first), done before
/// any node of that environment switched; the contract once per
/// environment, after every node of it switched.
fn assert_migrated_in_order(fleet: &TestFleet, release: &str) {
    let mut expand_done = BTreeMap::new();
    for (env, site) in [("preproduction", "pp"), ("production", "hp")] {
        let log = hook_log(fleet, env);
        let shown = format!("{env} hook log: {log:#?}");
        assert_eq!(events(&log, release, "expand").len(), 1, "one expand run: {shown}");
        let done = events(&log, release, "expand done");
        assert_eq!(done.len(), 1, "{shown}");
        assert_eq!(events(&log, release, "contract").len(), 1, "one contract run: {shown}");
        let contract = events(&log, release, "contract")[0];
        assert_eq!(events(&log, release, "contract done").len(), 1, "{shown}");
        let switched = switch_times(fleet, site);
        for (node, at) in &switched {
            assert!(
                done[0].at < *at,
                "{node} switched at {at} before the {env} expand was done ({}): {shown}",
                done[0].at
            );
            assert!(contract.at > *at, "the {env} contract began at {} before {node} switched at {at}", contract.at);
        }
        assert_eq!(
            migrations_applied(fleet, env),
            vec![format!("{release}:contract"), format!("{release}:expand")],
            "{env}'s database"
        );
        expand_done.insert(env, (done[0].at, switched.values().cloned().fold(0.0, f64::max)));
    }
    // Production's expand waits for preproduction (its expand, its switches, the gate).
    let prod = hook_log(fleet, "production");
    let prod_expand = events(&prod, release, "expand")[0].at;
    let (pp_done, pp_last_switch) = expand_done["preproduction"];
    assert!(
        prod_expand > pp_done && prod_expand > pp_last_switch,
        "production's expand ran before preproduction's rollout"
    );
}

#[test]
fn migrations_run_once_per_environment_in_order_and_warm_up_keeps_cold_answers_away() {
    let mut fleet = start("hooks-order");
    // 1. A release with an expand and a contract migration, warm-up paths set.
    let to = Target { release: "2026.11.2".into(), ..Target::initial() };
    let warm = "    warmup: { paths: [/warm], concurrency: 2, timeout: 20s, min_success: 1 }\n";
    write_spec_with(&mut fleet, &to, warm, &[("2026.11.2", "expand: migrate, contract: migrate")]);
    let gens = load_all(&fleet);
    let started = std::time::Instant::now();
    let out = drover(&fleet, &state_dir(&fleet), &["--output", "json", "reconcile", "--once", "--stall", "60s"])
        .output()
        .unwrap();
    let took = started.elapsed();
    let reports = stop_all(gens);
    let log = text(&out);
    eprintln!("{log}\nrollout with migrations and warm-up: {took:.1?}");
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert_eq!(summary(&out)["converged"], true, "{log}");
    assert_rolled_out(&fleet, &to, &reports);
    assert_migrated_in_order(&fleet, "2026.11.2");
    // Every farm switched and came back warm: no session got a cold answer.
    for (site, r) in &reports {
        assert!(r.cold().is_empty(), "{site}: cold answers {:?}: {}", r.cold_by_node(), r.summary());
        assert!(r.sessions.iter().flat_map(|s| &s.observations).all(|o| o.warm.is_some()), "no X-Warm header");
    }

    // 2. The same rollout without warm-up: the load sees cold answers (the
    // check above can fail), and a release without hooks runs none.
    fleet.add_release("2026.11.3", false);
    let to = Target { release: "2026.11.3".into(), ..Target::initial() };
    write_spec_with(&mut fleet, &to, "", &[]);
    let gens = load_all(&fleet);
    let out = drover(&fleet, &state_dir(&fleet), &["--output", "json", "reconcile", "--once", "--stall", "60s"])
        .output()
        .unwrap();
    let reports = stop_all(gens);
    let log = text(&out);
    eprintln!("{log}");
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert_rolled_out(&fleet, &to, &reports);
    let cold: usize = reports.iter().map(|(_, r)| r.cold().len()).sum();
    assert!(
        cold > 0,
        "no cold answer without warm-up: {:?}",
        reports.iter().map(|(_, r)| r.summary()).collect::<Vec<_>>()
    );
    for env in ["preproduction", "production"] {
        assert!(
            hook_log(&fleet, env).iter().all(|e| e.release != "2026.11.3"),
            "a hook ran for a release without hooks"
        );
    }
}

#[test]
fn a_failing_expand_stops_its_environment_and_a_killed_migration_is_asked_not_rerun() {
    let mut fleet = start("hooks-fail");
    let hooks = fleet.hooks_dir();
    // 1. Production's expand fails: preproduction rolls out, production
    // switches nothing, and the hook's own words are reported.
    let fail = hooks.join("fail-production-expand");
    std::fs::write(&fail, "ERROR 1060 (42S21): Duplicate column name 'r_2026_11_2' (injected by the test)\n").unwrap();
    let to = Target { release: "2026.11.2".into(), ..Target::initial() };
    write_spec_with(&mut fleet, &to, "", &[("2026.11.2", "expand: migrate")]);
    let gens = load_all(&fleet);
    let out = drover(&fleet, &state_dir(&fleet), &["--output", "json", "reconcile", "--once", "--stall", "20s"])
        .output()
        .unwrap();
    let reports = stop_all(gens);
    let log = text(&out);
    eprintln!("{log}");
    for (site, r) in &reports {
        eprintln!("{site}: {}", r.summary());
        r.assert_clean();
    }
    assert_ne!(out.status.code(), Some(0), "a failed migration is not success:\n{log}");
    let json = summary(&out);
    assert_eq!(json["converged"], false, "{log}");
    let failed = json["failed"].to_string();
    assert!(failed.contains("Duplicate column name") && failed.contains("bin/migrate expand"), "{failed}");
    assert!(failed.contains("hp-f1-n1"), "the first node of the first production farm runs it: {failed}");
    for n in &fleet.nodes {
        let want = if n.site == "pp" { "2026.11.2" } else { "2026.11.1" };
        assert_eq!(n.active_release().as_deref(), Some(want), "{}", n.name);
    }
    let prod = hook_log(&fleet, "production");
    assert_eq!(events(&prod, "2026.11.2", "expand").len(), 1, "{prod:#?}");
    assert_eq!(events(&prod, "2026.11.2", "expand failed").len(), 1, "{prod:#?}");
    // The journal keeps the failure, and it counts against the failure budget.
    let peek = drover::control::journal::Journal::peek(
        &state_dir(&fleet).join(drover::control::journal::FILE),
        0,
        &fleet.model,
    )
    .unwrap();
    let memory = peek.loaded.memory;
    let record = memory
        .migration(drover::model::Environment::Production, "2026.11.2", drover::model::MigrationPhase::Expand)
        .unwrap_or_else(|| panic!("no migration record: {memory:?}"));
    assert!(matches!(record.state, drover::plan::memory::MigrationState::Failed(_)), "{record:?}");
    assert!(memory.failures() >= 1, "{memory:?}");
    std::fs::remove_file(&fail).unwrap();

    // 2. kill -9 of drover while preproduction's expand of the next release
    // runs; the hook completes; the restarted drover asks its `status` and
    // does not run it again, then completes the rollout.
    fleet.add_release("2026.11.3", false);
    let to = Target { release: "2026.11.3".into(), ..Target::initial() };
    write_spec_with(&mut fleet, &to, "", &[("2026.11.3", "expand: migrate")]);
    let hold = hooks.join("hold-preproduction-expand");
    std::fs::write(&hold, "").unwrap();
    let state = fleet.dir.join("drover-state-2");
    let gens = load_all(&fleet);
    let mut child = drover(&fleet, &state, &["reconcile", "--once", "--stall", "60s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || BufReader::new(stderr).lines().map_while(Result::ok).collect::<Vec<_>>());
    let held = wait_for(Duration::from_secs(90), || {
        let log = hook_log(&fleet, "preproduction");
        (!events(&log, "2026.11.3", "expand held").is_empty()).then_some(())
    });
    unsafe { kill(child.id() as i32, 9) };
    let _ = child.wait();
    let seen = reader.join().unwrap().join("\n");
    assert!(held.is_some(), "the expand never ran:\n{seen}");
    let memory = drover::control::journal::Journal::peek(&state.join(drover::control::journal::FILE), 0, &fleet.model)
        .unwrap()
        .loaded
        .memory;
    let record = memory
        .migration(drover::model::Environment::Preproduction, "2026.11.3", drover::model::MigrationPhase::Expand)
        .unwrap_or_else(|| panic!("the journal did not record the migration before it began: {memory:?}"));
    assert_eq!(record.state, drover::plan::memory::MigrationState::Running, "{record:?}");
    // The migration finishes on its own (the node did not die with drover).
    std::fs::remove_file(&hold).unwrap();
    let done = wait_for(Duration::from_secs(30), || {
        let log = hook_log(&fleet, "preproduction");
        (!events(&log, "2026.11.3", "expand done").is_empty()).then_some(())
    });
    assert!(done.is_some(), "{:#?}", hook_log(&fleet, "preproduction"));
    let out = drover(&fleet, &state, &["--output", "json", "reconcile", "--once", "--stall", "60s"]).output().unwrap();
    let reports = stop_all(gens);
    let log = text(&out);
    eprintln!("{seen}\n--- restarted ---\n{log}");
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert_rolled_out(&fleet, &to, &reports);
    let pp = hook_log(&fleet, "preproduction");
    assert_eq!(events(&pp, "2026.11.3", "expand").len(), 1, "run again after the restart: {pp:#?}");
    assert_eq!(events(&pp, "2026.11.3", "status expand 0").len(), 1, "no status call: {pp:#?}");
    let prod = hook_log(&fleet, "production");
    assert_eq!(events(&prod, "2026.11.3", "expand").len(), 1, "{prod:#?}");
    assert_eq!(events(&prod, "2026.11.3", "status expand 0").len(), 0, "{prod:#?}");
    assert!(migrations_applied(&fleet, "preproduction").contains(&"2026.11.3:expand".to_string()));
    assert!(migrations_applied(&fleet, "production").contains(&"2026.11.3:expand".to_string()));
}
