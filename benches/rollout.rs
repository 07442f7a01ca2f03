//! Makespan over the lower bound for each kind of rollout, coalescing vs one
//! kind after another, and a naive Ansible-style `serial: 10%` through the
//! same simulation and checker. Reference fleet (512 + 6 nodes) by default;
//! `--quick` uses a small generated fleet (CI). First: whole simulated
//! rollouts per second in the property test's shape.

use drover::model::{Fleet, Target};
use drover::sim::{Report, Sim, SimConfig, Strategy};

fn with_initial(fleet: &Fleet, f: impl Fn(&mut Target, &Target)) -> Fleet {
    let mut fl = fleet.clone();
    // One target for every farm (the reference pins one farm to an older PHP,
    // which would read as a rollback once every node starts from one state).
    for farm in &mut fl.farms {
        farm.target = 0;
    }
    let sim = fl.simulation.as_mut().expect("the spec has a simulation section");
    let target = fleet.targets[0].clone();
    let old = sim.initial.clone();
    let mut initial = target.clone();
    f(&mut initial, &old);
    sim.initial = initial;
    fl
}

fn run(fleet: &Fleet, strategy: Strategy, quick: bool) -> Report {
    let mut cfg = SimConfig::new(fleet, 7);
    cfg.jitter = 0.0;
    cfg.strategy = strategy;
    if quick {
        cfg.sessions_per_site = cfg.sessions_per_site.min(400);
    }
    Sim::new(fleet, cfg).run()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    cases_per_second(quick);
    let fleet = if quick {
        drover::sim::fleetgen::fleet(&drover::sim::fleetgen::Shape::default()).expect("valid")
    } else {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("specs");
        drover::spec::validate::check(&drover::spec::load_dir(&dir).expect("specs")).expect("valid reference spec")
    };
    let soak = fleet.policy.soak.as_secs_f64();
    let scenarios: Vec<(&str, Fleet)> = vec![
        ("disruptive (kernel+openssl)", with_initial(&fleet, |i, o| i.packages = o.packages.clone())),
        ("app switch", with_initial(&fleet, |i, o| i.release = o.release.clone())),
        ("php switch", with_initial(&fleet, |i, o| i.php = o.php.clone())),
        ("all together", with_initial(&fleet, |i, o| *i = o.clone())),
    ];
    println!("fleet: {} nodes; durations without jitter; soak {}s (in makespan and bound)", fleet.nodes.len(), soak);
    println!(
        "{:<30} {:>10} {:>10} {:>7} {:>10} {:>12}",
        "rollout", "makespan", "bound", "ratio", "violations", "requests"
    );
    let mut separate = 0.0;
    let mut all = 0.0;
    for (name, f) in &scenarios {
        let r = run(f, Strategy::Drover, quick);
        println!(
            "{:<30} {:>9.0}s {:>9.0}s {:>7.3} {:>10} {:>12}{}",
            name,
            r.makespan_s,
            r.lower_bound_s,
            r.ratio,
            r.violations,
            r.requests,
            if r.converged { "" } else { "  NOT CONVERGED" }
        );
        for v in r.violation_samples.iter().take(3) {
            println!("    violation at {}s {:?}: {}", v.at_ms / 1000, v.invariant, v.what);
        }
        if *name == "all together" {
            all = r.makespan_s;
        } else {
            // One after another: each pays its own preproduction phase, the soak only once.
            separate += r.makespan_s - soak;
        }
    }
    separate += soak;
    println!(
        "coalesced all-together {all:.0}s vs one kind after another {separate:.0}s: {:.2}x faster",
        separate / all.max(1.0)
    );
    let all_fleet = &scenarios[3].1;
    for percent in [10, 25] {
        let r = run(all_fleet, Strategy::SerialBatches { percent }, quick);
        let by: Vec<String> = r.violations_by_invariant.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!(
            "naive serial:{percent}% (Ansible-style): makespan {:.0}s, {} violations ({}), {} failed requests of {}",
            r.makespan_s,
            r.violations,
            by.join(", "),
            r.failed_requests,
            r.requests
        );
    }
}

/// How many whole simulated rollouts per second the property test can run:
/// small generated fleets (as `tests/it/props.rs` draws them) with faults
/// and controller crashes, each run through the production controller.
fn cases_per_second(quick: bool) {
    use drover::sim::fleetgen::{Shape, fleet};
    let n: u64 = if quick { 100 } else { 400 };
    let shape = Shape { sessions_per_site: 60, soak: "2m".into(), ..Shape::default() };
    let fleet = fleet(&shape).expect("valid");
    let faults = drover::sim::Faults::parse("action-fail=0.05,ssh-timeout=0.02,health-fail=0.02,crash=2").unwrap();
    let t0 = std::time::Instant::now();
    let (mut violations, mut crashes) = (0, 0);
    for seed in 1..=n {
        let mut cfg = SimConfig::new(&fleet, seed);
        cfg.faults = faults.clone();
        cfg.max_virtual_s = 2.0 * 3600.0;
        let r = Sim::new(&fleet, cfg).run();
        violations += r.violations;
        crashes += r.crashes;
    }
    let s = t0.elapsed().as_secs_f64();
    println!(
        "property-test shaped runs ({} nodes, faults and {crashes} controller crashes over {n} seeds): {:.0} runs/s, {violations} violations",
        fleet.nodes.len(),
        n as f64 / s
    );
}
