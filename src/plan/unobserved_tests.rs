//! "Converged" means observed at target: a node that did not answer is
//! never counted as converged, whatever it ran when last seen.

use super::*;
use crate::sim::fleetgen::{self, Change, Shape};
use crate::sim::{Sim, SimConfig};

fn fleet(change: Change) -> Fleet {
    fleetgen::fleet(&Shape { change, ..Shape::default() }).unwrap()
}

fn pass(fleet: &Fleet, obs: &Observed, memory: &Memory) -> Pass {
    plan(&World { fleet, observed: obs, memory, now_ms: 0, estimates: &Estimates::default() })
}

#[test]
fn a_fleet_observed_at_its_target_is_converged() {
    let fleet = fleet(Change::NONE);
    let obs = Sim::new(&fleet, SimConfig::new(&fleet, 1)).observe();
    let p = pass(&fleet, &obs, &Memory::default());
    assert!(p.converged && p.settled, "{p:?}");
    assert!(p.unobserved.is_empty());
}

#[test]
fn an_unreachable_node_at_its_target_keeps_the_fleet_from_converged() {
    let fleet = fleet(Change::NONE);
    let mut obs = Sim::new(&fleet, SimConfig::new(&fleet, 1)).observe();
    // Its last observation (or, never seen, its target) says "at target": not enough.
    obs.nodes[3].reachable = false;
    let p = pass(&fleet, &obs, &Memory::default());
    assert!(!p.converged, "an unreachable node counted as converged");
    assert!(p.settled, "everything that answered is done");
    assert_eq!(p.unobserved, vec![3]);
    assert!(p.actions.is_empty(), "{:?}", p.actions);
}

#[test]
fn with_every_node_unreachable_nothing_is_converged() {
    let fleet = fleet(Change::NONE);
    let mut obs = Sim::new(&fleet, SimConfig::new(&fleet, 1)).observe();
    for o in &mut obs.nodes {
        o.reachable = false;
    }
    let p = pass(&fleet, &obs, &Memory::default());
    assert!(!p.converged);
    assert_eq!(p.unobserved, (0..fleet.nodes.len() as NodeId).collect::<Vec<_>>());
    assert!(p.actions.is_empty(), "nothing is done to nodes whose state is unknown: {:?}", p.actions);
}

#[test]
fn a_failed_node_that_does_not_answer_is_not_converged_either() {
    let fleet = fleet(Change::NONE);
    let mut obs = Sim::new(&fleet, SimConfig::new(&fleet, 1)).observe();
    let mut memory = Memory::default();
    memory.failed_nodes.insert(2, "unreachable for 300s".into());
    obs.nodes[2].lb.admin = Admin::Maint;
    let p = pass(&fleet, &obs, &memory);
    assert!(p.converged, "a failed node that answers is reported as failed, not as unobserved: {p:?}");
    obs.nodes[2].reachable = false;
    let p = pass(&fleet, &obs, &memory);
    assert!(p.settled && !p.converged);
    assert_eq!(p.unobserved, vec![2]);
}
