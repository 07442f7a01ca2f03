//! Release and upgrade hooks in the simulation: migrations (expand before
//! an environment's first switch, contract after its last, preproduction
//! first, once, crash-safe through the hook's `status`), warm-up before a
//! farm takes traffic again, snapshots before disruptive upgrades. Each
//! runs the production controller against the simulated world, whose
//! checker counts a switch before its expand, a contract while an older
//! release serves, a migration applied twice, and a cold answer as
//! violations (`Invariant::Hooks`).

use drover::model::{Environment, Fleet, MigrationPhase, NodeId};
use drover::plan::{Action, Kind};
use drover::sim::fleetgen::{Change, Hooks, Shape, spec_text, with_hooks};
use drover::sim::{Report, Sim, SimConfig, Started, Strategy};

fn hooked(change: Change, hooks: Hooks) -> Fleet {
    let text = with_hooks(&spec_text(&Shape { change, ..Shape::default() }), hooks);
    let files = [drover::spec::SourceFile { path: "hooks.yaml".into(), text }];
    drover::spec::validate::check(&files).unwrap_or_else(|d| panic!("{}", drover::spec::diag::render(&d, &files)))
}

fn run(fleet: &Fleet, cfg: impl FnOnce(&mut SimConfig)) -> Report {
    let mut c = SimConfig::new(fleet, 17);
    c.record_actions = true;
    cfg(&mut c);
    Sim::new(fleet, c).run()
}

fn env_of(fleet: &Fleet, n: NodeId) -> Environment {
    fleet.sites[fleet.nodes[n as usize].site as usize].environment
}

fn migrations<'a>(started: &'a [Started], phase: MigrationPhase) -> impl Iterator<Item = (&'a Started, NodeId, bool)> {
    started.iter().filter_map(move |s| match &s.action {
        Action::Migrate { node, phase: p, resume, .. } if *p == phase => Some((s, *node, *resume)),
        _ => None,
    })
}

/// Starts of release switches in `env`.
fn switches(fleet: &Fleet, started: &[Started], env: Environment) -> Vec<u64> {
    started
        .iter()
        .filter(|s| matches!(&s.action, Action::Activate { node, release: Some(_), .. } if env_of(fleet, *node) == env))
        .map(|s| s.at_ms)
        .collect()
}

#[test]
fn migrations_run_once_per_environment_expand_before_its_switches_and_contract_after() {
    let fleet = hooked(Change::ALL, Hooks { expand: true, contract: true, ..Hooks::default() });
    let r = run(&fleet, |_| {});
    assert!(r.converged, "{:?} {:?}", r.verdict, r.blocked);
    assert_eq!(r.violations, 0, "{:#?}", r.violation_samples);
    // Each migration applied exactly once in each environment's database.
    let expect: Vec<(String, u32)> = [
        "production 2026.11.2 expand",
        "production 2026.11.2 contract",
        "preproduction 2026.11.2 expand",
        "preproduction 2026.11.2 contract",
    ]
    .iter()
    .map(|k| (k.to_string(), 1))
    .collect();
    for (k, v) in &expect {
        assert_eq!(r.migrations.get(k), Some(v), "{:?}", r.migrations);
    }
    assert_eq!(r.actions.get("migrate"), Some(&4), "{:?}", r.actions);
    for env in [Environment::Preproduction, Environment::Production] {
        let expand: Vec<_> =
            migrations(&r.started, MigrationPhase::Expand).filter(|m| env_of(&fleet, m.1) == env).collect();
        let contract: Vec<_> =
            migrations(&r.started, MigrationPhase::Contract).filter(|m| env_of(&fleet, m.1) == env).collect();
        assert_eq!((expand.len(), contract.len()), (1, 1), "{env:?}");
        let sw = switches(&fleet, &r.started, env);
        assert!(!sw.is_empty());
        let first = *sw.iter().min().unwrap();
        let last = *sw.iter().max().unwrap();
        // The simulated expand takes its estimate (60 s): the first switch
        // comes after its end, the contract after the last switch.
        assert!(expand[0].0.at_ms + 50_000 <= first, "{env:?}: expand at {} first switch {first}", expand[0].0.at_ms);
        assert!(contract[0].0.at_ms > last, "{env:?}: contract at {} last switch {last}", contract[0].0.at_ms);
    }
    let pre =
        migrations(&r.started, MigrationPhase::Expand).find(|m| env_of(&fleet, m.1) == Environment::Preproduction);
    let prod = migrations(&r.started, MigrationPhase::Expand).find(|m| env_of(&fleet, m.1) == Environment::Production);
    // Production's expand waits for the preproduction gate (soak 10m).
    assert!(prod.unwrap().0.at_ms >= pre.unwrap().0.at_ms + 600_000);
    // The bound counts the migrations: the ratio stays a ratio to something real.
    let plain = run(&hooked(Change::ALL, Hooks::default()), |_| {});
    assert!(r.lower_bound_s > plain.lower_bound_s + 100.0, "{} vs {}", r.lower_bound_s, plain.lower_bound_s);
}

#[test]
fn a_failed_expand_stops_the_release_in_its_environment_before_any_switch() {
    let fleet = hooked(Change { release: true, ..Change::NONE }, Hooks { expand: true, ..Hooks::default() });
    let r = run(&fleet, |c| {
        c.faults.migration_fail = 1.0;
        c.max_virtual_s = 3600.0;
    });
    assert_eq!(r.violations, 0, "{:#?}", r.violation_samples);
    assert!(!r.converged);
    // Preproduction's expand failed once and was not run again; nothing switched anywhere.
    assert_eq!(r.failed_migrations, vec!["preproduction 2026.11.2 expand".to_string()]);
    assert_eq!(r.actions.get("migrate"), Some(&1), "{:?}", r.actions);
    assert!(r.started.iter().all(|s| !matches!(s.action, Action::Activate { .. })), "a node switched");
    assert!(
        r.blocked.iter().any(|b| b.reason.contains("expand migration") && b.reason.contains("failed")),
        "{:#?}",
        r.blocked
    );
}

#[test]
fn a_crash_during_a_migration_asks_the_hooks_status_and_never_runs_it_twice() {
    let fleet =
        hooked(Change { release: true, ..Change::NONE }, Hooks { expand: true, contract: true, ..Hooks::default() });
    // The reconciler dies 5 s into the first migration (it takes 60 s).
    let r = run(&fleet, |c| c.crash_after_start = Some((Kind::Migrate, 5_000)));
    assert_eq!(r.crashes, 1);
    assert_eq!(r.violations, 0, "{:#?}", r.violation_samples);
    assert!(r.converged, "{:?} {:?}", r.verdict, r.blocked);
    let resumed = r.started.iter().filter(|s| matches!(s.action, Action::Migrate { resume: true, .. })).count();
    let fresh = r.started.iter().filter(|s| matches!(s.action, Action::Migrate { resume: false, .. })).count();
    // The killed drover's hook still runs when the new one asks: its status
    // says so (neither completed nor not applied), and drover asks again,
    // backing off, until it completes. Never a second blind run.
    assert!(resumed >= 2, "asked {resumed} times");
    assert_eq!(fresh, 4, "expand and contract, once per environment");
    assert!(r.migrations.values().all(|&n| n == 1), "{:?}", r.migrations);
}

#[test]
fn switched_nodes_warm_up_before_their_farm_takes_traffic_again() {
    let fleet = hooked(Change { release: true, ..Change::NONE }, Hooks { warmup: true, ..Hooks::default() });
    let r = run(&fleet, |_| {});
    assert!(r.converged, "{:?} {:?}", r.verdict, r.blocked);
    assert_eq!(r.violations, 0, "{:#?}", r.violation_samples);
    // Every node switched once, and warmed once, after its switch and before its farm returned.
    assert_eq!(r.actions.get("warmup"), r.actions.get("activate"), "{:?}", r.actions);
    for s in r.started.iter().filter(|s| matches!(s.action, Action::Warmup { .. })) {
        let Action::Warmup { node } = s.action else { unreachable!() };
        let farm = fleet.nodes[node as usize].farm;
        let switched = r
            .started
            .iter()
            .any(|a| matches!(a.action, Action::Activate { node: m, .. } if m == node) && a.at_ms < s.at_ms);
        let back = r.started.iter().find(|a| {
            a.at_ms > s.at_ms
                && matches!(a.action, Action::SetFarm { farm: f, admin: drover::observe::Admin::Ready } if f == farm)
        });
        assert!(switched && back.is_some(), "warm-up of {} out of order", fleet.nodes[node as usize].name);
    }
    // Without warm-up, the same rollout has no Warmup: the checker's cold
    // answers are the warm-up's doing, not luck.
    let plain = run(&hooked(Change { release: true, ..Change::NONE }, Hooks::default()), |_| {});
    assert_eq!(plain.actions.get("warmup"), None);
}

#[test]
fn every_disruptive_upgrade_is_preceded_by_a_snapshot_of_its_node() {
    let fleet = hooked(
        Change { disruptive_reboot: true, disruptive_restart: true, ..Change::NONE },
        Hooks { snapshot: true, ..Hooks::default() },
    );
    let r = run(&fleet, |_| {});
    assert!(r.converged, "{:?} {:?}", r.verdict, r.blocked);
    assert_eq!(r.violations, 0, "{:#?}", r.violation_samples);
    let upgrades: Vec<_> = r.started.iter().filter(|s| matches!(s.action, Action::Upgrade { .. })).collect();
    assert!(!upgrades.is_empty());
    for u in upgrades {
        let Action::Upgrade { node, .. } = u.action else { unreachable!() };
        let snap = r
            .started
            .iter()
            .rev()
            .find(|s| s.at_ms <= u.at_ms && matches!(&s.action, Action::Snapshot { node: m, .. } if *m == node));
        assert!(snap.is_some(), "{} upgraded without a snapshot", fleet.nodes[node as usize].name);
    }
    assert_eq!(r.actions.get("snapshot"), r.actions.get("upgrade"), "{:?}", r.actions);
}

#[test]
fn the_checker_catches_a_switch_before_its_expand_and_a_cold_farm() {
    // Ansible-style batches know nothing of hooks: the checker must say so.
    let fleet =
        hooked(Change { release: true, ..Change::NONE }, Hooks { expand: true, warmup: true, ..Hooks::default() });
    let r = run(&fleet, |c| c.strategy = Strategy::SerialBatches { percent: 25 });
    let hooks = r.violations_by_invariant.get("hooks").copied().unwrap_or(0);
    assert!(hooks > 0, "{:?}", r.violations_by_invariant);
    assert!(
        r.violation_samples.iter().any(|v| v.what.contains("before production's expand migration")
            || v.what.contains("before preproduction's expand migration")),
        "{:#?}",
        r.violation_samples
    );
}
