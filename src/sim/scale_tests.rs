//! The planner's work over a whole simulated rollout grows linearly with the
//! number of sites. Counted, not timed: the built-in reconciler plans at
//! every action's completion, so a rollout of twice the sites has about
//! twice the passes; diffing every node in each of them made `plan
//! --simulate` quadratic in the fleet (50 sites 3.6 s, 200 sites > 60 s).

use super::*;
use crate::plan::World;
use crate::sim::fleetgen::{Shape, fleet};

/// `sites` production sites of 8 nodes (4 farms of 2), behind on everything.
fn many_sites(sites: u32) -> Fleet {
    fleet(&Shape { prod_sites: sites, farms_per_site: 4, nodes_per_farm: 2, ..Shape::default() }).unwrap()
}

/// Node diffs computed per node over a projected rollout (no traffic, as
/// `plan --simulate` projects it), and the rollout's report.
fn diffs_per_node(fleet: &Fleet) -> (f64, Report) {
    let mut cfg = SimConfig::new(fleet, 1);
    cfg.traffic = false;
    let mut sim = Sim::new(fleet, cfg);
    let bound = sim.run_events();
    let computed = sim.ctl.as_ref().map_or(0, |c| c.diffs_computed());
    (computed as f64 / fleet.nodes.len() as f64, sim.report(bound))
}

#[test]
fn diffing_over_a_rollout_is_linear_in_the_sites() {
    let (small, r_small) = diffs_per_node(&many_sites(10));
    let (big, r_big) = diffs_per_node(&many_sites(20));
    for r in [&r_small, &r_big] {
        assert!(r.converged && r.violations == 0, "{r:?}");
    }
    // Each node is diffed again only when its state changed: a bounded
    // number of times (a handful of steps per node), however many sites.
    // Diffing every node in every pass would double this per-node figure.
    assert!(big <= small * 1.25, "node diffs per node: {small:.1} at 10 sites, {big:.1} at 20");
    assert!(big < 40.0, "node diffs per node: {big:.1}");
}

#[test]
fn a_pass_in_mid_rollout_sees_open_windows() {
    let fleet = many_sites(4);
    let mut cfg = SimConfig::new(&fleet, 1);
    cfg.traffic = false;
    let (obs, memory, now) = Sim::new(&fleet, cfg).run_until(15 * 60_000);
    assert!(now <= 15 * 60_000 && now > 10 * 60_000, "{now}");
    assert!(!memory.farm_ops.is_empty() || !memory.node_ops.is_empty(), "{memory:?}");
    let pass = plan::plan(&World {
        fleet: &fleet,
        observed: &obs,
        memory: &memory,
        now_ms: now,
        estimates: &Estimates::default(),
    });
    assert!(!pass.converged);
}
