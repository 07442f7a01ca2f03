//! Node diffs for a planning pass, and a cache that keeps them between
//! passes. A driver that plans after every event (the simulation plans at
//! each action's completion, so a rollout has passes in proportion to its
//! nodes) would otherwise diff the whole fleet per pass: quadratic in the
//! fleet over a rollout. With the cache a pass diffs only the nodes whose
//! observed state changed since the previous one.
//!
//! Pure: a diff is a function of the fleet, the node and the node's
//! observation; the cache compares exactly the observed fields `node_diff`
//! reads, so a cached diff is the diff that would be computed.

use std::sync::Arc;

use crate::diff::{NodeDiff, node_diff};
use crate::model::{Fleet, NodeId};
use crate::observe::{NodeObs, Observed};

/// Every node's diff, computed afresh.
pub fn all(fleet: &Fleet, obs: &Observed) -> Vec<NodeDiff> {
    (0..fleet.nodes.len() as NodeId).map(|n| node_diff(fleet, n, &obs.nodes[n as usize])).collect()
}

/// The diffs of one fleet's nodes, kept from pass to pass.
pub struct DiffCache {
    /// Held, so that the fleet a pass plans for is recognised by address.
    fleet: Arc<Fleet>,
    /// Per node: the observation its diff was computed from.
    seen: Vec<Option<NodeObs>>,
    diffs: Vec<NodeDiff>,
    computed: u64,
}

impl DiffCache {
    pub fn new(fleet: Arc<Fleet>) -> Self {
        let n = fleet.nodes.len();
        DiffCache { fleet, seen: vec![None; n], diffs: vec![NodeDiff::default(); n], computed: 0 }
    }

    /// Whether this cache holds diffs against `fleet` (the very same value).
    pub fn serves(&self, fleet: &Fleet) -> bool {
        std::ptr::eq(Arc::as_ptr(&self.fleet), fleet)
    }

    /// How many node diffs were computed since the cache was made (the rest
    /// of the passes' diffs were reused): the planner's per-node work.
    pub fn computed(&self) -> u64 {
        self.computed
    }

    /// How many nodes were at their target (a clean diff) at the last
    /// `refresh`.
    pub fn clean(&self) -> usize {
        self.diffs.iter().filter(|d| d.is_clean()).count()
    }

    /// Every node's diff against `obs`, recomputing only those whose
    /// observed inputs changed. `obs` must describe this cache's fleet.
    pub fn refresh(&mut self, obs: &Observed) -> &[NodeDiff] {
        let fleet = &*self.fleet;
        for (n, o) in obs.nodes.iter().enumerate().take(self.diffs.len()) {
            if self.seen[n].as_ref().is_some_and(|s| same_diff_inputs(s, o)) {
                continue;
            }
            self.diffs[n] = node_diff(fleet, n as NodeId, o);
            self.seen[n] = Some(o.clone());
            self.computed += 1;
        }
        &self.diffs
    }
}

/// The fields of a node's observation that `node_diff` reads are equal.
fn same_diff_inputs(a: &NodeObs, b: &NodeObs) -> bool {
    a.packages == b.packages
        && a.fetched == b.fetched
        && a.kernel_running == b.kernel_running
        && a.kernel_installed == b.kernel_installed
        && a.php_installed == b.php_installed
        && a.php_active == b.php_active
        && a.releases_installed == b.releases_installed
        && a.release_active == b.release_active
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::fleetgen::{Shape, fleet};
    use crate::sim::{Sim, SimConfig};

    #[test]
    fn cached_diffs_are_the_diffs_and_only_changed_nodes_are_diffed_again() {
        let fleet = Arc::new(fleet(&Shape::default()).unwrap());
        let mut obs = Sim::new(&fleet, SimConfig::new(&fleet, 1)).observe();
        let mut cache = DiffCache::new(Arc::clone(&fleet));
        let n = fleet.nodes.len() as u64;
        let same =
            |a: &[NodeDiff], b: &[NodeDiff]| serde_json::to_string(a).unwrap() == serde_json::to_string(b).unwrap();

        assert!(same(cache.refresh(&obs), &all(&fleet, &obs)));
        assert_eq!(cache.computed(), n);
        // Nothing changed: nothing is diffed again.
        cache.refresh(&obs);
        assert_eq!(cache.computed(), n);
        // Fields the diff does not read (LB state, health, boot id) change: still nothing.
        obs.nodes[0].lb.active += 3;
        obs.nodes[1].boot_id = "other boot".into();
        cache.refresh(&obs);
        assert_eq!(cache.computed(), n);
        // Each input the diff reads: that node alone is diffed again, and right.
        let t = fleet.node_target(2);
        obs.nodes[2].release_active = Some(t.release.clone());
        obs.nodes[3].fetched = t.packages.iter().map(|a| (a.key().into(), a.version.clone())).collect();
        obs.nodes[4].php_installed.push(t.php.clone());
        obs.nodes[5].kernel_running = Some("6.6.1".into());
        assert!(same(cache.refresh(&obs), &all(&fleet, &obs)));
        assert_eq!(cache.computed(), n + 4);
    }

    #[test]
    fn a_cache_serves_only_its_own_fleet() {
        let fleet = Arc::new(fleet(&Shape::default()).unwrap());
        let copy = (*fleet).clone();
        let cache = DiffCache::new(Arc::clone(&fleet));
        assert!(cache.serves(&fleet));
        assert!(!cache.serves(&copy));
    }
}
