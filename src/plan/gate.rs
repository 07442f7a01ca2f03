//! Preproduction gate evidence: a production node of profile P may take a
//! value (package version, PHP version, release) only after every
//! preproduction node of P ran that value, healthy, for the soak time.
//! Evidence is recorded from observations and kept in `Memory` (persisted),
//! so preproduction moving on to a newer target does not erase it.
//! Pure: time is an argument.

use std::collections::{BTreeMap, BTreeSet};

use super::memory::{GateKey, GateRecord, Memory};
use crate::model::{Environment, Fleet, NodeId};
use crate::observe::{Admin, Health, Observed};

pub fn package_component(key: &str) -> String {
    format!("pkg:{key}")
}

/// The package (category, name) a `package_component` names, if it names one.
pub fn package_key(component: &str) -> Option<(&str, &str)> {
    component.strip_prefix("pkg:")?.split_once('/')
}

/// The values a node runs, as gate components.
fn running_values(fleet: &Fleet, obs: &Observed, n: NodeId) -> Vec<(String, String)> {
    let o = &obs.nodes[n as usize];
    let mut out = Vec::new();
    for atom in &fleet.node_target(n).packages {
        let key = atom.key();
        if let Some(v) = o.installed(&key) {
            // A kernel only counts once it runs.
            let needs_reboot =
                matches!(fleet.policy.needs(atom), Some(crate::model::Needs::Reboot)) && o.reboot_pending();
            if !needs_reboot {
                out.push((package_component(&key), v.to_string()));
            }
        }
    }
    if let Some(p) = &o.php_active {
        out.push(("php".into(), p.0.to_string()));
    }
    if let Some(r) = &o.release_active {
        out.push(("release".into(), r.0.to_string()));
    }
    out
}

/// Updates gate evidence from one observation at `now_ms`.
pub fn record(fleet: &Fleet, obs: &Observed, memory: &mut Memory, now_ms: u64) {
    let soak = fleet.policy.soak.as_millis() as u64;
    // Per profile: the (component, value) pairs that every preproduction node runs healthy.
    let mut common: BTreeMap<u32, Option<BTreeSet<(String, String)>>> = BTreeMap::new();
    for (n, node) in fleet.nodes.iter().enumerate() {
        if fleet.sites[node.site as usize].environment != Environment::Preproduction {
            continue;
        }
        let n = n as NodeId;
        let o = &obs.nodes[n as usize];
        let healthy = o.reachable
            && o.lb.admin == Admin::Ready
            && o.health != Health::Failing
            && !memory.failed_nodes.contains_key(&n)
            && !memory.node_ops.contains_key(&n)
            && !memory.farm_ops.contains_key(&node.farm)
            && obs.farms[node.farm as usize].lb.admin == Admin::Ready;
        let values: BTreeSet<(String, String)> =
            if healthy { running_values(fleet, obs, n).into_iter().collect() } else { BTreeSet::new() };
        let entry = common.entry(node.profile).or_insert(None);
        *entry = Some(match entry.take() {
            None => values,
            Some(prev) => prev.intersection(&values).cloned().collect(),
        });
    }
    let mut present: BTreeSet<GateKey> = BTreeSet::new();
    for (profile, values) in common {
        for (component, value) in values.unwrap_or_default() {
            present.insert((profile, component, value));
        }
    }
    for key in &present {
        let rec = memory.gate.entry(key.clone()).or_insert(GateRecord { since_ms: now_ms, passed: false });
        if !rec.passed && now_ms.saturating_sub(rec.since_ms) >= soak {
            rec.passed = true;
        }
    }
    // Evidence that stopped before the soak completed starts over.
    memory.gate.retain(|k, r| r.passed || present.contains(k));
}

/// When the gate for (profile, component, value) opens, if it is counting.
pub fn opens_at(fleet: &Fleet, memory: &Memory, key: &GateKey) -> Option<u64> {
    memory.gate.get(key).map(|r| r.since_ms + fleet.policy.soak.as_millis() as u64)
}
