//! The state a node shows on the status page: one of nine, each a colour,
//! a word and a count. Decided where the loop publishes its status (it has
//! the fleet, the observation and the journal's memory) and written into
//! the status document, so `/status` and the page always agree.

use std::collections::BTreeMap;

use crate::daemon::metrics::NodeState;
use crate::diff::node_diff;
use crate::model::{Fleet, NodeId};
use crate::observe::{Admin, Observed};
use crate::plan::Memory;

/// A node's state on the page. The first that applies wins, in this order:
/// `Failed`, `InWindow` (not answering in a window: restarting or
/// rebooting), `Unreachable`, `Held`, `Drained`, `InWindow`, `Switched`,
/// `AtTarget`, `Staging`, `Waiting`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cell {
    /// Observed with no drift from its target.
    AtTarget,
    /// Serving, with something still to stage (PHP tree, release, binary
    /// packages) or to install online.
    Staging,
    /// Serving and staged; waits for its window (a switch, a disruptive
    /// install or a reboot).
    Waiting,
    /// In a window of drover's and not drained: being drained, put back,
    /// restarted or rebooted (not answering meanwhile), or its farm's window
    /// is open and it has yet to switch.
    InWindow,
    /// Out of service in a window of drover's (drain or maint).
    Drained,
    /// Its farm's window is open and it already runs the farm's target release and PHP.
    Switched,
    /// Out of service by an operator's hand: drover leaves it alone.
    Held,
    /// Did not answer the last probe.
    Unreachable,
    /// Drover gave up on it (it counts against the failure budget).
    Failed,
}

impl Cell {
    /// In the legend's order.
    pub const ALL: [Cell; 9] = [
        Cell::AtTarget,
        Cell::Switched,
        Cell::InWindow,
        Cell::Drained,
        Cell::Staging,
        Cell::Waiting,
        Cell::Held,
        Cell::Unreachable,
        Cell::Failed,
    ];

    /// Its name in `/status` and its CSS class (`s-<name>`).
    pub fn name(self) -> &'static str {
        match self {
            Cell::AtTarget => "at-target",
            Cell::Staging => "staging",
            Cell::Waiting => "waiting",
            Cell::InWindow => "in-window",
            Cell::Drained => "drained",
            Cell::Switched => "switched",
            Cell::Held => "held",
            Cell::Unreachable => "unreachable",
            Cell::Failed => "failed",
        }
    }

    /// What a person reads (the legend, each cell's label).
    pub fn label(self) -> &'static str {
        match self {
            Cell::AtTarget => "at target",
            Cell::Staging => "staging",
            Cell::Waiting => "staged, waiting for its window",
            Cell::InWindow => "in its window",
            Cell::Drained => "drained (out of service)",
            Cell::Switched => "switched, farm window open",
            Cell::Held => "held by an operator",
            Cell::Unreachable => "unreachable",
            Cell::Failed => "failed",
        }
    }

    pub fn from_name(name: &str) -> Option<Cell> {
        Cell::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Node `n`'s state.
    pub fn of(fleet: &Fleet, observed: &Observed, memory: &Memory, n: NodeId) -> Cell {
        let farm = fleet.nodes[n as usize].farm;
        let in_window = memory.node_ops.contains_key(&n) || memory.farm_ops.contains_key(&farm);
        match NodeState::of(observed, memory, n) {
            NodeState::Failed => return Cell::Failed,
            // A node does not answer while it reboots in its window.
            NodeState::Unreachable if in_window => return Cell::InWindow,
            NodeState::Unreachable => return Cell::Unreachable,
            NodeState::Held => return Cell::Held,
            NodeState::Drained => return Cell::Drained,
            NodeState::Serving => {}
        }
        let o = &observed.nodes[n as usize];
        if memory.node_ops.contains_key(&n) {
            // Serving in a window: draining still (LB ready until it is set) or being put back.
            return if o.lb.admin == Admin::Ready { Cell::InWindow } else { Cell::Drained };
        }
        let d = node_diff(fleet, n, o);
        if memory.farm_ops.contains_key(&farm) {
            return if d.needs_switch() { Cell::InWindow } else { Cell::Switched };
        }
        if d.is_clean() {
            Cell::AtTarget
        } else if d.stage_php.is_some() || d.stage_release.is_some() || !d.unfetched.is_empty() || !d.online.is_empty()
        {
            Cell::Staging
        } else {
            Cell::Waiting
        }
    }
}

/// Adds the page's data to `status::view`'s document of `fleet`: each
/// node's `cell`, each farm's `capacity` (sessions its nodes carry at full
/// load). Returns the nodes per cell (every `Cell`, zeros included).
pub fn annotate(
    view: &mut serde_json::Value,
    fleet: &Fleet,
    observed: &Observed,
    memory: &Memory,
) -> BTreeMap<String, u64> {
    let mut counts: BTreeMap<String, u64> = Cell::ALL.iter().map(|c| (c.name().to_string(), 0)).collect();
    if !observed.matches(fleet) {
        return counts;
    }
    let Some(sites) = view.get_mut("sites").and_then(|s| s.as_array_mut()) else { return counts };
    // `view` lists sites, farms and nodes in the fleet's order; names are checked all the same.
    for (site, sv) in fleet.sites.iter().zip(sites.iter_mut()) {
        let Some(farms) = sv.get_mut("farms").and_then(|f| f.as_array_mut()) else { continue };
        for (&f, fv) in site.farms.iter().zip(farms.iter_mut()) {
            let farm = &fleet.farms[f as usize];
            if fv["name"] != farm.name.as_str() {
                continue;
            }
            let capacity: u64 = farm
                .nodes
                .iter()
                .map(|&n| u64::from(fleet.profiles[fleet.nodes[n as usize].profile as usize].capacity))
                .sum();
            fv["capacity"] = capacity.into();
            let Some(nodes) = fv.get_mut("nodes").and_then(|n| n.as_array_mut()) else { continue };
            for (&n, nv) in farm.nodes.iter().zip(nodes.iter_mut()) {
                if nv["name"] != fleet.nodes[n as usize].name.as_str() {
                    continue;
                }
                let cell = Cell::of(fleet, observed, memory, n);
                nv["cell"] = cell.name().into();
                *counts.entry(cell.name().to_string()).or_default() += 1;
            }
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::Admin;
    use crate::plan::memory::{FarmOp, FarmPhase, NodeOp, NodePhase};
    use crate::sim::fleetgen::{self, Change, Shape};
    use crate::sim::{Sim, SimConfig};

    #[test]
    fn each_node_gets_the_first_state_that_applies_and_the_counts_add_up() {
        let fleet = fleetgen::fleet(&Shape { change: Change::NONE, ..Shape::default() }).unwrap();
        let mut obs = Sim::new(&fleet, SimConfig::new(&fleet, 1)).observe();
        let mut memory = Memory::default();
        let cell = |obs: &Observed, memory: &Memory, n| Cell::of(&fleet, obs, memory, n);
        assert_eq!(cell(&obs, &memory, 0), Cell::AtTarget);
        // An operator's maint: held.
        obs.nodes[0].lb.admin = Admin::Maint;
        assert_eq!(cell(&obs, &memory, 0), Cell::Held);
        // drover's window: drained; put back to ready: in window.
        memory.node_ops.insert(0, NodeOp { phase: NodePhase::Out, since_ms: 0, healthy: false, snapshot: None });
        assert_eq!(cell(&obs, &memory, 0), Cell::Drained);
        obs.nodes[0].lb.admin = Admin::Ready;
        assert_eq!(cell(&obs, &memory, 0), Cell::InWindow);
        memory.node_ops.clear();
        // Its farm's window, nothing left to switch: switched.
        let farm = fleet.nodes[0].farm;
        memory.farm_ops.insert(farm, FarmOp { switched: true, ..FarmOp::new(FarmPhase::Working, 0, 100) });
        assert_eq!(cell(&obs, &memory, 0), Cell::Switched);
        memory.farm_ops.clear();
        // A release not staged yet: staging. Staged but not active: waiting.
        obs.nodes[0].releases_installed.clear();
        obs.nodes[0].release_active = None;
        assert_eq!(cell(&obs, &memory, 0), Cell::Staging);
        obs.nodes[0].releases_installed.push(fleet.node_target(0).release.clone());
        assert_eq!(cell(&obs, &memory, 0), Cell::Waiting);
        // Unreachable outranks the rest, but in a window it is rebooting; failed outranks all.
        obs.nodes[0].reachable = false;
        assert_eq!(cell(&obs, &memory, 0), Cell::Unreachable);
        memory.node_ops.insert(0, NodeOp { phase: NodePhase::Upgrading, since_ms: 0, healthy: false, snapshot: None });
        assert_eq!(cell(&obs, &memory, 0), Cell::InWindow);
        memory.node_ops.clear();
        memory.failed_nodes.insert(0, "emerge exited with 1".into());
        assert_eq!(cell(&obs, &memory, 0), Cell::Failed);

        let mut view = crate::status::view(&fleet, &obs, &memory, &Default::default());
        let counts = annotate(&mut view, &fleet, &obs, &memory);
        assert_eq!(counts.len(), Cell::ALL.len());
        assert_eq!(counts.values().sum::<u64>(), fleet.nodes.len() as u64);
        assert_eq!((counts["failed"], counts["at-target"]), (1, fleet.nodes.len() as u64 - 1));
        let first = &view["sites"][0]["farms"][0];
        assert_eq!(first["nodes"][0]["cell"], "failed");
        assert_eq!(first["nodes"][1]["cell"], "at-target");
        assert!(first["capacity"].as_u64().is_some_and(|c| c > 0));
        for c in Cell::ALL {
            assert_eq!(Cell::from_name(c.name()), Some(c));
        }
    }
}
