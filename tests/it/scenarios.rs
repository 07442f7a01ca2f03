//! Named rollout scenarios on a small generated fleet (2 production sites x
//! 3 farms x 4 nodes, preproduction with 2 farms), one per upgrade kind of
//! the seeds. Each asserts the order of actions and zero violations, with
//! user sessions flowing through the simulated HAProxy the whole time.

use drover::model::{Environment, Fleet, NodeId};
use drover::observe::Admin;
use drover::plan::Action;
use drover::sim::fleetgen::{Change, Shape, fleet};
use drover::sim::{Report, Sim, SimConfig, Started};

fn run(change: Change) -> (Fleet, Report) {
    let shape = Shape { change, ..Shape::default() };
    let fleet = fleet(&shape).expect("generated spec is valid");
    let report = converged_run(&fleet, SimConfig::new(&fleet, 11));
    assert!(report.requests > 10_000, "traffic was simulated ({} requests)", report.requests);
    (fleet, report)
}

/// Runs `fleet` recording every action, and asserts it converged with no violation.
fn converged_run(fleet: &Fleet, mut cfg: SimConfig) -> Report {
    cfg.record_actions = true;
    let report = Sim::new(fleet, cfg).run();
    assert!(report.converged, "did not converge: {:?}", report.blocked);
    assert_eq!(report.violations, 0, "violations: {:#?}", report.violation_samples);
    report
}

fn is_prod(fleet: &Fleet, n: NodeId) -> bool {
    fleet.sites[fleet.nodes[n as usize].site as usize].environment == Environment::Production
}

fn node_of(a: &Action) -> Option<NodeId> {
    match a.subject() {
        drover::plan::Subject::Node(n) => Some(n),
        _ => None,
    }
}

fn last_preprod_change(fleet: &Fleet, started: &[Started]) -> u64 {
    started
        .iter()
        .filter(|s| matches!(s.action, Action::Upgrade { .. } | Action::Activate { .. } | Action::InstallOnline { .. }))
        .filter(|s| node_of(&s.action).is_some_and(|n| !is_prod(fleet, n)))
        .map(|s| s.at_ms)
        .max()
        .expect("preproduction changed")
}

fn first_prod_change(fleet: &Fleet, started: &[Started]) -> u64 {
    started
        .iter()
        .filter(|s| matches!(s.action, Action::Upgrade { .. } | Action::Activate { .. } | Action::InstallOnline { .. }))
        .filter(|s| node_of(&s.action).is_some_and(|n| is_prod(fleet, n)))
        .map(|s| s.at_ms)
        .min()
        .expect("production changed")
}

#[test]
fn non_disruptive_packages_install_online_without_leaving_the_lb() {
    let (fleet, r) = run(Change { online: true, ..Change::NONE });
    assert!(r.started.iter().any(|s| matches!(s.action, Action::InstallOnline { .. })));
    assert!(
        !r.started
            .iter()
            .any(|s| matches!(s.action, Action::SetNode { .. } | Action::SetFarm { .. } | Action::Upgrade { .. })),
        "an online install took something out of service"
    );
    // Fetch before install on each node.
    for n in 0..fleet.nodes.len() as NodeId {
        let fetch = r.started.iter().position(|s| matches!(&s.action, Action::Fetch { node, .. } if *node == n));
        let install =
            r.started.iter().position(|s| matches!(&s.action, Action::InstallOnline { node, .. } if *node == n));
        assert!(fetch < install, "node {n}: install before fetch");
    }
    assert!(
        first_prod_change(&fleet, &r.started) >= last_preprod_change(&fleet, &r.started) + 600_000,
        "production before the soak"
    );
}

#[test]
fn disruptive_upgrades_go_in_member_waves_drained_first() {
    let (fleet, r) = run(Change { disruptive_restart: true, disruptive_reboot: true, ..Change::NONE });
    // Every node: drain -> maint -> upgrade -> health check -> ready, in that order.
    for n in 0..fleet.nodes.len() as NodeId {
        let steps: Vec<String> = r
            .started
            .iter()
            .filter(|s| node_of(&s.action) == Some(n) && !matches!(s.action, Action::Fetch { .. }))
            .map(|s| match &s.action {
                Action::SetNode { admin, .. } => format!("{admin:?}"),
                a => a.kind().name().to_string(),
            })
            .collect();
        assert_eq!(
            steps,
            ["Drain", "Maint", "upgrade", "health_check", "Ready"],
            "node {}",
            fleet.nodes[n as usize].name
        );
    }
    // Waves: in each farm, member m+1 is drained only after member m is back.
    for farm in &fleet.farms {
        let mut back_prev = 0;
        for &n in &farm.nodes {
            let drained = r
                .started
                .iter()
                .find(|s| matches!(&s.action, Action::SetNode { node, admin: Admin::Drain } if *node == n))
                .unwrap()
                .at_ms;
            let back = r
                .started
                .iter()
                .find(|s| matches!(&s.action, Action::SetNode { node, admin: Admin::Ready } if *node == n))
                .unwrap()
                .at_ms;
            assert!(
                drained >= back_prev,
                "farm {}: member {} drained before the previous member returned",
                farm.name,
                fleet.nodes[n as usize].member
            );
            back_prev = back;
        }
    }
    // Waves run across all farms and sites at once: member 1 of every
    // production farm of a profile starts together (the gate opens per profile).
    for profile in 0..fleet.profiles.len() as u32 {
        let firsts: Vec<u64> = fleet
            .farms
            .iter()
            .filter(|f| fleet.sites[f.site as usize].environment == Environment::Production)
            .filter(|f| fleet.nodes[f.nodes[0] as usize].profile == profile)
            .map(|f| {
                r.started
                    .iter()
                    .find(|s| matches!(&s.action, Action::SetNode { node, admin: Admin::Drain } if *node == f.nodes[0]))
                    .unwrap()
                    .at_ms
            })
            .collect();
        assert!(firsts.len() >= 2);
        assert!(
            firsts.iter().max().unwrap() - firsts.iter().min().unwrap() < 1000,
            "wave 1 not simultaneous: {firsts:?}"
        );
    }
    assert!(
        !r.started.iter().any(|s| matches!(s.action, Action::SetFarm { .. })),
        "no farm-level work for packages alone"
    );
}

fn assert_farm_switches(fleet: &Fleet, r: &Report) {
    for (f, farm) in fleet.farms.iter().enumerate() {
        let f = f as u32;
        let out = r
            .started
            .iter()
            .find(|s| matches!(s.action, Action::SetFarm { farm, admin: Admin::Maint } if farm == f))
            .expect("farm out")
            .at_ms;
        let flush = r
            .started
            .iter()
            .find(|s| matches!(s.action, Action::FlushCache { farm } if farm == f))
            .expect("flush")
            .at_ms;
        let back = r
            .started
            .iter()
            .find(|s| matches!(s.action, Action::SetFarm { farm, admin: Admin::Ready } if farm == f))
            .expect("farm back")
            .at_ms;
        assert!(out < flush && flush < back, "farm {}: out, flush, back in that order", farm.name);
        for &n in &farm.nodes {
            let act = r
                .started
                .iter()
                .find(|s| matches!(&s.action, Action::Activate { node, .. } if *node == n))
                .expect("every node switches")
                .at_ms;
            let hc = r
                .started
                .iter()
                .filter(|s| matches!(&s.action, Action::HealthCheck { node } if *node == n))
                .map(|s| s.at_ms)
                .max()
                .unwrap();
            assert!(
                flush < act && act < hc && hc < back,
                "node {}: switched and checked inside the farm window",
                fleet.nodes[n as usize].name
            );
        }
    }
    // One farm per site out at a time (max_farms_down 1).
    for site in &fleet.sites {
        let mut windows: Vec<(u64, u64)> = site
            .farms
            .iter()
            .map(|&f| {
                let out = r
                    .started
                    .iter()
                    .find(|s| matches!(s.action, Action::SetFarm { farm, admin: Admin::Maint } if farm == f))
                    .unwrap()
                    .at_ms;
                let back = r
                    .started
                    .iter()
                    .find(|s| matches!(s.action, Action::SetFarm { farm, admin: Admin::Ready } if farm == f))
                    .unwrap()
                    .at_ms;
                (out, back)
            })
            .collect();
        windows.sort();
        for w in windows.windows(2) {
            assert!(w[1].0 >= w[0].1, "site {}: two farms out at once {w:?}", site.name);
        }
        // After the first farm returns, the others stop taking new sessions before their own window.
        let first_back = windows[0].1;
        for &f in &site.farms[..] {
            let out = r
                .started
                .iter()
                .find(|s| matches!(s.action, Action::SetFarm { farm, admin: Admin::Maint } if farm == f))
                .unwrap()
                .at_ms;
            if out > first_back {
                assert!(
                    r.started.iter().any(
                        |s| matches!(s.action, Action::SetFarmWeight { farm, weight: 0 } if farm == f)
                            && s.at_ms >= first_back
                            && s.at_ms <= out
                    ),
                    "farm {} kept taking new sessions after an upgraded farm returned",
                    fleet.farms[f as usize].name
                );
            }
        }
    }
}

#[test]
fn php_switch_is_farm_atomic() {
    let (fleet, r) = run(Change { php: true, ..Change::NONE });
    assert_farm_switches(&fleet, &r);
    assert!(r.started.iter().any(|s| matches!(&s.action, Action::Activate { php: Some(_), release: None, .. })));
    assert!(first_prod_change(&fleet, &r.started) >= last_preprod_change(&fleet, &r.started) + 600_000);
}

#[test]
fn app_release_switch_is_farm_atomic_with_memcached_flushed() {
    let (fleet, r) = run(Change { release: true, ..Change::NONE });
    assert_farm_switches(&fleet, &r);
    assert!(r.started.iter().any(|s| matches!(&s.action, Action::Activate { release: Some(_), php: None, .. })));
}

#[test]
fn everything_at_once_coalesces_into_farm_windows() {
    let (fleet, all) = run(Change::ALL);
    assert_farm_switches(&fleet, &all);
    // Coalesced: no node-level windows at all, upgrades happen inside farm windows.
    assert!(!all.started.iter().any(|s| matches!(s.action, Action::SetNode { admin: Admin::Drain, .. })));
    // And that beats doing the packages and the switches one after another.
    let (_, pk) = run(Change { online: true, disruptive_restart: true, disruptive_reboot: true, ..Change::NONE });
    let (_, sw) = run(Change { php: true, release: true, ..Change::NONE });
    let soak = fleet.policy.soak.as_secs_f64();
    let sequential = pk.makespan_s + (sw.makespan_s - soak);
    assert!(all.makespan_s < sequential, "coalesced {} vs sequential {}", all.makespan_s, sequential);
    assert!(all.ratio <= 1.10, "makespan {} vs lower bound {}", all.makespan_s, all.lower_bound_s);
}

#[test]
fn preproduction_goes_first_and_soaks() {
    let (fleet, r) = run(Change::ALL);
    let pre_done = last_preprod_change(&fleet, &r.started);
    let prod_first = first_prod_change(&fleet, &r.started);
    assert!(
        prod_first >= pre_done + fleet.policy.soak.as_millis() as u64,
        "production at {prod_first} ms, preproduction done at {pre_done} ms"
    );
}

#[test]
fn a_failing_preproduction_health_check_stops_production_from_changing() {
    let shape = Shape { change: Change { release: true, ..Change::NONE }, ..Shape::default() };
    let fleet = fleet(&shape).unwrap();
    let mut cfg = SimConfig::new(&fleet, 5);
    cfg.record_actions = true;
    cfg.faults.health_fail = 1.0; // every changed node comes back unhealthy
    cfg.max_virtual_s = 4.0 * 3600.0;
    let r = Sim::new(&fleet, cfg).run();
    assert_eq!(r.violations, 0, "{:#?}", r.violation_samples);
    assert!(!r.converged);
    assert!(
        !r.started
            .iter()
            .any(|s| matches!(s.action, Action::Activate { .. })
                && node_of(&s.action).is_some_and(|n| is_prod(&fleet, n))),
        "production switched although preproduction failed its health checks"
    );
    assert!(!r.failed_nodes.is_empty());
}

#[test]
fn rollback_needs_an_explicit_request() {
    // Target older than what runs: blocked unless allow_rollback.
    let mut text = drover::sim::fleetgen::spec_text(&Shape { change: Change::NONE, ..Shape::default() });
    text = text.replace("release: \"2026.11.2\"\n  policy", "release: \"2026.11.0\"\n  policy");
    let files = [drover::spec::SourceFile { path: "g.yaml".into(), text: text.clone() }];
    let fleet = drover::spec::validate::check(&files).unwrap();
    let r = Sim::new(&fleet, SimConfig::new(&fleet, 1)).run();
    assert!(!r.converged);
    assert!(r.blocked.iter().any(|b| b.reason.contains("allow_rollback")), "{:?}", r.blocked);

    let text = text.replace("release: \"2026.11.0\"\n", "release: \"2026.11.0\"\n    allow_rollback: true\n");
    let files = [drover::spec::SourceFile { path: "g.yaml".into(), text }];
    let fleet = drover::spec::validate::check(&files).unwrap();
    let mut cfg = SimConfig::new(&fleet, 1);
    cfg.record_actions = true;
    let r = Sim::new(&fleet, cfg).run();
    assert!(r.converged);
    assert!(r.started.iter().any(|s| matches!(s.action, Action::Activate { rollback: true, .. })));
}

#[test]
fn same_seed_same_run() {
    let fleet = fleet(&Shape::default()).unwrap();
    let go = || {
        let mut cfg = SimConfig::new(&fleet, 42);
        cfg.faults = drover::sim::Faults::parse("action-fail=0.05,crash=2,slow-drain=0.01").unwrap();
        serde_json::to_string(&Sim::new(&fleet, cfg).run()).unwrap()
    };
    assert_eq!(go(), go());
}

#[test]
fn the_checker_catches_an_unsafe_strategy() {
    // Ansible-style serial batches switch half a farm, skip drains and the
    // preproduction gate: the checker must see it.
    let fleet = fleet(&Shape::default()).unwrap();
    let mut cfg = SimConfig::new(&fleet, 3);
    cfg.strategy = drover::sim::Strategy::SerialBatches { percent: 10 };
    cfg.sessions_per_site = 2000;
    let r = Sim::new(&fleet, cfg).run();
    for inv in ["monotonic_sessions", "preproduction_first", "drained_before_disrupted"] {
        assert!(
            r.violations_by_invariant.get(inv).copied().unwrap_or(0) > 0,
            "{inv} not caught: {:?}",
            r.violations_by_invariant
        );
    }
}

/// The default generated fleet behind on everything, with `windows` as its
/// policy's change windows.
fn fleet_with_windows(windows: &str) -> Fleet {
    let text = drover::sim::fleetgen::spec_text(&Shape::default())
        .replace("    failure_budget:", &format!("    change_windows: {windows}\n    failure_budget:"));
    let files = [drover::spec::SourceFile { path: "g.yaml".into(), text }];
    drover::spec::validate::check(&files).map_err(|d| drover::spec::diag::render(&d, &files)).unwrap()
}

/// Takes a node or farm out of service, changes what it runs, or steers a
/// farm away from new sessions: what only a change window may start.
fn starts_disruption(a: &Action) -> bool {
    matches!(
        a,
        Action::SetNode { admin: Admin::Drain | Admin::Maint, .. }
            | Action::SetFarm { admin: Admin::Maint, .. }
            | Action::SetFarmWeight { weight: 0, .. }
    )
}

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;

#[test]
fn a_change_window_holds_the_rollout_until_it_opens() {
    // Virtual time starts on Thursday 1970-01-01 00:00 UTC; the window opens at 01:00.
    let fleet = fleet_with_windows(r#"[{ start: "01:00", end: "06:00" }]"#);
    let r = converged_run(&fleet, SimConfig::new(&fleet, 11));
    assert!(r.requests > 10_000, "traffic was simulated ({} requests)", r.requests);
    // Staging ran ahead, before the window.
    for kind in ["fetch", "stage_php", "stage_release"] {
        assert!(
            r.started.iter().any(|s| s.action.kind().name() == kind && s.at_ms < HOUR_MS),
            "no {kind} before the window opened"
        );
    }
    // Nothing went out before 01:00, and the first drain or farm switch came right at it.
    let first = r.started.iter().filter(|s| starts_disruption(&s.action)).map(|s| s.at_ms).min().unwrap();
    assert!((HOUR_MS..HOUR_MS + 60_000).contains(&first), "first disruptive start at {first} ms");
    assert!(r.makespan_s * 1000.0 > HOUR_MS as f64, "converged at {} s, before the window", r.makespan_s);
    assert_farm_switches(&fleet, &r);
}

#[test]
fn short_windows_spread_the_rollout_over_days_and_finish_what_they_start() {
    // Four minutes on Mondays and Fridays. Virtual day 0 is a Thursday:
    // preproduction goes on Friday (day 1), soaks, and production waits over
    // the weekend for Monday (day 4), where a site's three farm switches take
    // longer than the window: the last one runs past the close.
    let fleet = fleet_with_windows(r#"[{ days: [mon, fri], start: "01:00", end: "01:04" }]"#);
    let mut cfg = SimConfig::new(&fleet, 7);
    cfg.max_virtual_s = 8.0 * 24.0 * 3600.0;
    let r = converged_run(&fleet, cfg);
    let open = |t: u64| {
        let weekday = (t / DAY_MS + 3) % 7; // Monday = 0
        (weekday == 0 || weekday == 4) && (HOUR_MS..HOUR_MS + 4 * 60_000).contains(&(t % DAY_MS))
    };
    for s in r.started.iter().filter(|s| starts_disruption(&s.action)) {
        assert!(open(s.at_ms), "{:?} started at {} ms, outside the windows ({})", s.action, s.at_ms, s.why);
    }
    let days: std::collections::BTreeSet<u64> =
        r.started.iter().filter(|s| starts_disruption(&s.action)).map(|s| s.at_ms / DAY_MS).collect();
    assert_eq!(days.into_iter().collect::<Vec<_>>(), [1, 4], "Friday, then Monday after the weekend");
    // Work under way when the window closed went on to its end: farms came back after the close.
    let late: Vec<&Started> = r
        .started
        .iter()
        .filter(|s| matches!(s.action, Action::SetFarm { admin: Admin::Ready, .. }) && !open(s.at_ms))
        .collect();
    assert!(!late.is_empty(), "every farm switch happened to fit inside a window");
    assert_farm_switches(&fleet, &r);
}

/// The simulation runs the production controller, back-off included: an
/// action that failed (an SSH timeout while fetching) is tried again on its
/// node no sooner than 2 s (virtual) after it failed, not at the next pass.
#[test]
fn a_failed_action_is_retried_after_the_controllers_back_off() {
    let fleet = fleet(&Shape { change: Change { online: true, ..Change::NONE }, ..Shape::default() }).unwrap();
    let mut cfg = SimConfig::new(&fleet, 5);
    cfg.jitter = 0.0;
    cfg.faults = drover::sim::Faults::parse("ssh-timeout=0.3").unwrap();
    cfg.record_actions = true;
    let fetch_ms = (cfg.estimates.fetch_s * 1000.0) as u64;
    let r = Sim::new(&fleet, cfg).run();
    assert_eq!(r.violations, 0, "{:#?}", r.violation_samples);
    let mut retries = 0;
    let fetches: Vec<&Started> = r.started.iter().filter(|s| matches!(s.action, Action::Fetch { .. })).collect();
    for (i, s) in fetches.iter().enumerate() {
        if let Some(again) = fetches[i + 1..].iter().find(|t| node_of(&t.action) == node_of(&s.action)) {
            retries += 1;
            // Failed at s.at_ms + fetch_ms (no jitter); the back-off is 2 s.
            assert!(
                again.at_ms >= s.at_ms + fetch_ms + 2_000,
                "retried {} ms after the failure: {s:?} then {again:?}",
                again.at_ms as i64 - (s.at_ms + fetch_ms) as i64
            );
        }
    }
    assert!(retries > 0, "some fetch failed and was retried");
}
