//! `drover plan`: resolved targets, drift, the next safe actions, and the
//! projected rollout (the same planner run against a traffic-free simulation).

use std::collections::BTreeMap;
use std::io::IsTerminal;

use super::{Cli, Output, exit, real, simulate};
use crate::diff::{drift_items, node_diff};
use crate::model::{Fleet, NodeId};
use crate::plan::{Action, Estimates, Memory, World};
use crate::sim::{Sim, SimConfig};

#[derive(Debug, Clone, clap::Args)]
pub struct PlanArgs {
    /// Plan against the simulated fleet instead of the real one.
    #[arg(long)]
    pub simulate: bool,
    /// Show every drifted node, not a summary.
    #[arg(long)]
    pub verbose: bool,
    #[command(flatten)]
    pub sim: simulate::SimArgs,
    #[command(flatten)]
    pub real: real::RealArgs,
}

pub fn run(cli: &Cli, args: &PlanArgs) -> u8 {
    let Some(fleet) = super::load_fleet(cli) else {
        return exit::ERROR;
    };
    let cfg = match simulate::config(&fleet, &args.sim) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let (observed, memory, now_ms, errors) = if args.simulate {
        (Sim::new(&fleet, cfg.clone()).observe(), Memory::default(), 0, BTreeMap::new())
    } else {
        match real::observe_once(&fleet, &cli.specs, &args.real) {
            Ok(o) => {
                for r in &o.resolved {
                    eprintln!("journal entry not carried over to this spec: {r}");
                }
                (o.observed, o.memory, o.now_ms, o.errors)
            }
            Err(e) => {
                eprintln!("error: {e}");
                return exit::ERROR;
            }
        }
    };
    let estimates = Estimates::default();
    let pass = crate::plan::plan(&World {
        fleet: &fleet,
        observed: &observed,
        memory: &memory,
        now_ms,
        estimates: &estimates,
    });

    // Drift.
    let mut drift = Vec::new();
    for n in 0..fleet.nodes.len() as NodeId {
        if !observed.nodes[n as usize].reachable {
            continue; // listed as unreachable: its state is not known
        }
        let d = node_diff(&fleet, n, &observed.nodes[n as usize]);
        if !d.is_clean() {
            drift.extend(drift_items(&fleet, n, &observed.nodes[n as usize], &d));
        }
    }
    // Projection: the same planner, no traffic, no faults, from the spec's
    // simulated starting state (only with --simulate: a real fleet's state
    // is not a simulation's starting point).
    let projection = args.simulate.then(|| {
        let mut pcfg = SimConfig { traffic: false, record_actions: true, faults: Default::default(), ..cfg };
        pcfg.strategy = crate::sim::Strategy::Drover;
        let mut sim = Sim::new(&fleet, pcfg);
        // On a terminal, a spinner says how far the projection is; nothing
        // on a pipe or in CI.
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.enable_steady_tick(std::time::Duration::from_millis(100));
            b.set_message("projecting the rollout");
            b
        });
        if let Some(b) = bar.clone() {
            sim.on_pass(move |ms, at_target, nodes| {
                b.set_message(format!(
                    "projecting the rollout: {} simulated, {at_target}/{nodes} nodes at target",
                    simulate::clock(ms)
                ));
            });
        }
        let report = sim.run();
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        report
    });

    // Nodes that did not answer: their state is unknown, so "nothing to do"
    // cannot be said of them (exit 4, which outranks "changes pending").
    let unobserved = observed.unobserved_nodes(&fleet, &errors);
    let unreachable: Vec<String> = unobserved.iter().map(ToString::to_string).collect();
    let pending = !drift.is_empty() || !pass.settled;
    super::quiet_on_closed_stdout();
    match cli.output {
        Output::Json => {
            let targets: Vec<_> = fleet
                .farms
                .iter()
                .map(|f| {
                    let t = fleet.farm_target(fleet.farm_by_name(&f.name).unwrap_or(0));
                    serde_json::json!({
                        "farm": f.name, "site": fleet.sites[f.site as usize].name,
                        "packages": t.packages.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                        "php": t.php, "release": t.release, "origin": f.target_origin,
                    })
                })
                .collect();
            let projection = projection.as_ref().map(|p| {
                let actions: Vec<_> = p
                    .started
                    .iter()
                    .map(|s| serde_json::json!({ "at_s": s.at_ms as f64 / 1000.0, "action": s.action, "describe": s.action.describe(&fleet), "why": s.why }))
                    .collect();
                serde_json::json!({ "makespan_s": p.makespan_s, "lower_bound_s": p.lower_bound_s, "converged": p.converged, "actions": actions })
            });
            println!(
                "{}",
                serde_json::json!({
                    "changes_pending": pending,
                    "converged": pass.converged,
                    "exit_code": code(pending, &unobserved),
                    "targets": targets,
                    "drift": drift,
                    "next": pass.actions.iter().map(|p| serde_json::json!({"action": p.action, "describe": p.action.describe(&fleet), "why": p.why, "wave": p.wave})).collect::<Vec<_>>(),
                    "blocked": pass.blocked,
                    "held": pass.held,
                    "unreachable": unreachable,
                    "unobserved": unobserved,
                    "projection": projection,
                })
            );
        }
        Output::Text => {
            print_text(&fleet, &drift, &pass, projection.as_ref(), &unreachable);
            if !unobserved.is_empty() {
                println!();
                println!(
                    "NOT OBSERVED: {} of {} nodes did not answer; their state is unknown and they are not counted as at target",
                    unobserved.len(),
                    fleet.nodes.len()
                );
            }
        }
    }
    code(pending, &unobserved)
}

/// Exit code of `plan`: 4 when nodes could not be observed, else 2 with
/// changes pending, else 0.
fn code(pending: bool, unobserved: &[crate::observe::Unobserved]) -> u8 {
    if !unobserved.is_empty() {
        exit::UNOBSERVED
    } else if pending {
        exit::CHANGES_PENDING
    } else {
        exit::OK
    }
}

fn print_text(
    fleet: &Fleet,
    drift: &[crate::diff::DriftItem],
    pass: &crate::plan::Pass,
    projection: Option<&crate::sim::Report>,
    unreachable: &[String],
) {
    println!("Targets (farm > site > fleet defaults):");
    let mut by_target: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
    for f in &fleet.farms {
        by_target.entry(f.target).or_default().push(&f.name);
    }
    for (t, farms) in &by_target {
        let target = &fleet.targets[*t as usize];
        let f0 = &fleet.farms[fleet.farm_by_name(farms[0]).unwrap_or(0) as usize];
        println!(
            "  php {} [{}], release {} [{}], packages [{}]: {} farm(s): {}",
            target.php,
            f0.target_origin.php,
            target.release,
            f0.target_origin.release,
            target.packages.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(" "),
            farms.len(),
            summarize(farms)
        );
    }
    println!();
    let mut kinds: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for d in drift {
        *kinds.entry((d.what.clone(), d.have.clone(), d.want.clone())).or_default() += 1;
    }
    println!("Drift ({} items):", drift.len());
    for ((what, have, want), n) in &kinds {
        println!("  {what}: {have} -> {want} on {n} node(s)");
    }
    for u in unreachable {
        println!("  unreachable: {u}");
    }
    for h in &pass.held {
        println!("  held by an operator (not touched): {h}");
    }
    println!();
    if let Some(projection) = projection {
        print_projection(fleet, projection);
    }
    print_next(pass);
}

fn print_projection(fleet: &Fleet, projection: &crate::sim::Report) {
    println!("Rollout (projected with the same planner, no faults):");
    let mut windows: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut waves: BTreeMap<u32, (u64, u64, usize)> = BTreeMap::new();
    let mut staging = 0usize;
    let mut migrations = Vec::new();
    let (mut warmups, mut snapshots) = (0usize, 0usize);
    for s in &projection.started {
        match &s.action {
            Action::SetFarm { farm, admin } => {
                let e = windows.entry(fleet.farms[*farm as usize].name.clone()).or_insert((s.at_ms, s.at_ms));
                if *admin == crate::observe::Admin::Ready {
                    e.1 = s.at_ms;
                }
            }
            Action::SetNode { node, admin: crate::observe::Admin::Drain } => {
                let m = fleet.nodes[*node as usize].member;
                let e = waves.entry(m).or_insert((s.at_ms, s.at_ms, 0));
                e.0 = e.0.min(s.at_ms);
                e.1 = e.1.max(s.at_ms);
                e.2 += 1;
            }
            Action::Fetch { .. } | Action::StagePhp { .. } | Action::StageRelease { .. } => staging += 1,
            Action::Migrate { .. } => migrations.push(s),
            Action::Warmup { .. } => warmups += 1,
            Action::Snapshot { .. } => snapshots += 1,
            _ => {}
        }
    }
    println!("  staging: {staging} fetch/rsync actions, online, before any window");
    for m in &migrations {
        println!("  [{}] {}", simulate::clock(m.at_ms), m.action.describe(fleet));
    }
    if warmups > 0 {
        println!("  warm-up: {warmups} node(s), each in its farm's window before the farm is back in");
    }
    if snapshots > 0 {
        println!("  snapshots: {snapshots}, each before a node's disruptive upgrade");
    }
    let mut w: Vec<_> = windows.into_iter().collect();
    w.sort_by_key(|(_, (a, _))| *a);
    for (farm, (a, b)) in &w {
        println!(
            "  [{} - {}] farm {farm}: out, memcached flushed, upgraded and switched as a unit, back in",
            simulate::clock(*a),
            simulate::clock(*b)
        );
    }
    for (m, (a, b, n)) in &waves {
        println!(
            "  [{} - {}] wave {m}: {n} node(s) (member {m} of their farm) drained, upgraded, back in",
            simulate::clock(*a),
            simulate::clock(*b)
        );
    }
    println!(
        "  projected makespan {} (lower bound {}), {}",
        simulate::clock((projection.makespan_s * 1000.0) as u64),
        simulate::clock((projection.lower_bound_s * 1000.0) as u64),
        if projection.converged { "converges" } else { "does NOT converge" }
    );
    println!();
}

fn print_next(pass: &crate::plan::Pass) {
    println!("Next actions now ({}):", pass.actions.len());
    let mut shown: BTreeMap<String, usize> = BTreeMap::new();
    for p in &pass.actions {
        *shown.entry(format!("{} ({})", p.action.kind().name(), p.why)).or_default() += 1;
    }
    for (what, n) in shown {
        println!("  {n} x {what}");
    }
    let mut blocked: BTreeMap<&str, usize> = BTreeMap::new();
    for b in &pass.blocked {
        *blocked.entry(&b.reason).or_default() += 1;
    }
    for (reason, n) in blocked {
        println!("  waiting ({n}): {reason}");
    }
}

fn summarize(names: &[&str]) -> String {
    if names.len() <= 4 {
        names.join(", ")
    } else {
        format!("{}, {} ... {}", names[0], names[1], names[names.len() - 1])
    }
}
