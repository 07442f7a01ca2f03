//! The fleet's status document, shared by `drover status` and the daemon's
//! `/status`: per site, farm and node the LB state and load, versions,
//! drift from the target, open windows and failures. *Pure.*

use crate::diff::{drift_items, node_diff};
use crate::model::{Fleet, NodeId};
use crate::observe::{LbServer, Observed};
use crate::plan::Memory;
use crate::plan::action::admin_name;

fn lb(s: &LbServer) -> serde_json::Value {
    serde_json::json!({ "admin": admin_name(s.admin), "weight": s.weight, "active": s.active })
}

/// The status document of the fleet: `drover status --output json` prints
/// it, the daemon's `/status` serves it under `fleet`.
pub fn view(
    fleet: &Fleet,
    obs: &Observed,
    memory: &Memory,
    errors: &std::collections::BTreeMap<NodeId, String>,
) -> serde_json::Value {
    let sites: Vec<_> = fleet
        .sites
        .iter()
        .enumerate()
        .map(|(s, site)| {
            let farms: Vec<_> = site
                .farms
                .iter()
                .map(|&f| {
                    let farm = &fleet.farms[f as usize];
                    let fo = &obs.farms[f as usize];
                    let t = fleet.farm_target(f);
                    let nodes: Vec<_> = farm
                        .nodes
                        .iter()
                        .map(|&n| {
                            let o = &obs.nodes[n as usize];
                            let drift: Vec<String> = if o.reachable {
                                let d = node_diff(fleet, n, o);
                                drift_items(fleet, n, o, &d)
                                    .into_iter()
                                    .map(|i| format!("{}: {} -> {}", i.what, i.have, i.want))
                                    .collect()
                            } else {
                                Vec::new()
                            };
                            serde_json::json!({
                                "name": fleet.nodes[n as usize].name,
                                "reachable": o.reachable,
                                // Only what was observed is at target: an unreachable node's drift is unknown.
                                "at_target": o.reachable && drift.is_empty(),
                                "error": errors.get(&n),
                                "lb": lb(&o.lb),
                                "php": o.php_active.as_ref().map(|p| p.to_string()),
                                "release": o.release_active.as_ref().map(|r| r.to_string()),
                                "kernel_running": o.kernel_running.as_deref(),
                                "kernel_installed": o.kernel_installed.as_deref(),
                                "drift": drift,
                                "window": memory.node_ops.get(&n).map(|op| format!("{:?}", op.phase)),
                                "failed": memory.failed_nodes.get(&n),
                                // drover's root filesystem snapshots kept on it, oldest first.
                                // (the journal keeps some history beyond: the newest `keep` are the ones on the node).
                                "snapshots": kept_snapshots(fleet, memory, n),
                                "rollback": memory.rollbacks.get(&n).map(|r| serde_json::json!({
                                    "snapshot": r.snapshot,
                                    "at_ms": r.at_ms,
                                    "state": r.state,
                                    "since_ms": r.since_ms,
                                    "line": r.line(crate::plan::change_windows::format_utc),
                                })),
                            })
                        })
                        .collect();
                    serde_json::json!({
                        "name": farm.name,
                        "lb": lb(&fo.lb),
                        "sessions": fo.sessions,
                        "memcached_reachable": fo.memcached_reachable,
                        "target": { "php": t.php.to_string(), "release": t.release.to_string(),
                                    "packages": t.packages.iter().map(|a| a.to_string()).collect::<Vec<_>>() },
                        "switch": memory.farm_ops.get(&f).map(|op| format!("{:?}", op.phase)),
                        "nodes": nodes,
                    })
                })
                .collect();
            serde_json::json!({
                "name": site.name,
                "environment": format!("{:?}", site.environment).to_lowercase(),
                "lb_reachable": obs.sites[s].lb_reachable,
                "farms": farms,
            })
        })
        .collect();
    let unobserved = obs.unobserved_nodes(fleet, errors);
    let at_target = (0..fleet.nodes.len() as NodeId)
        .filter(|&n| {
            let o = &obs.nodes[n as usize];
            o.reachable && node_diff(fleet, n, o).is_clean()
        })
        .count();
    // Release migrations, per environment: what the journal knows of each.
    let migrations: Vec<_> = memory
        .migrations
        .iter()
        .map(|((env, release, phase), r)| {
            use crate::plan::memory::MigrationState as S;
            let (state, detail) = match &r.state {
                S::Running => ("running", None),
                S::Done => ("done", None),
                S::Failed(e) => ("failed", Some(e.as_str())),
                S::Unknown(e) => ("unknown", Some(e.as_str())),
            };
            let since = crate::plan::change_windows::format_utc(r.since_ms);
            let mut line = format!("{} {release} {}: {state} on {} since {since}", env.name(), phase.name(), r.node);
            if let Some(d) = detail {
                line.push_str(&format!(": {}", d.replace('\n', " / ")));
            }
            serde_json::json!({
                "environment": env.name(), "release": release, "phase": phase.name(),
                "state": state, "detail": detail, "node": r.node, "since_ms": r.since_ms, "line": line,
            })
        })
        .collect();
    serde_json::json!({
        "sites": sites,
        "migrations": migrations,
        "failures": memory.failures(),
        "failure_budget": fleet.policy.failure_budget,
        "nodes_total": fleet.nodes.len(),
        "nodes_at_target": at_target,
        "nodes_unobserved": unobserved.len(),
        "unobserved": unobserved,
    })
}

/// The snapshots drover keeps on node `n`: the newest `keep` of its
/// profile among those the journal recorded, oldest first.
fn kept_snapshots(fleet: &Fleet, memory: &Memory, n: NodeId) -> Vec<String> {
    let keep =
        fleet.profiles[fleet.nodes[n as usize].profile as usize].snapshot.as_ref().map_or(0, |s| s.keep) as usize;
    let all = memory.snapshots.get(&n).map(Vec::as_slice).unwrap_or_default();
    all[all.len().saturating_sub(keep)..].iter().map(|s| s.name.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::fleetgen::{self, Change, Shape};
    use crate::sim::{Sim, SimConfig};

    fn nodes(doc: &serde_json::Value) -> Vec<serde_json::Value> {
        doc["sites"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["farms"].as_array().unwrap())
            .flat_map(|f| f["nodes"].as_array().unwrap().clone())
            .collect()
    }

    #[test]
    fn migrations_show_their_state_node_and_the_hooks_answer() {
        use crate::model::{Environment, MigrationPhase};
        use crate::plan::Outcome;
        let fleet = fleetgen::fleet(&Shape { change: Change::NONE, ..Shape::default() }).unwrap();
        let obs = Sim::new(&fleet, SimConfig::new(&fleet, 1)).observe();
        let mut m = Memory::default();
        m.begin_migration(Environment::Preproduction, "2026.11.2", MigrationPhase::Expand, "pre-f0-n0", 60_000);
        m.complete_migration(Environment::Preproduction, "2026.11.2", MigrationPhase::Expand, &Outcome::Ok, 120_000);
        m.begin_migration(Environment::Production, "2026.11.2", MigrationPhase::Expand, "s0-f0-n001", 3_600_000);
        let failed = Outcome::Failed("status: exit 4\nlocked".into());
        m.complete_migration(Environment::Production, "2026.11.2", MigrationPhase::Expand, &failed, 3_700_000);
        let doc = view(&fleet, &obs, &m, &Default::default());
        let lines: Vec<&str> =
            doc["migrations"].as_array().unwrap().iter().map(|m| m["line"].as_str().unwrap()).collect();
        assert_eq!(
            lines,
            [
                "production 2026.11.2 expand: unknown on s0-f0-n001 since 1970-01-01 01:01 UTC: status: exit 4 / locked",
                "preproduction 2026.11.2 expand: done on pre-f0-n0 since 1970-01-01 00:02 UTC",
            ]
        );
        // Unknown is held, not failed: it does not count against the budget.
        assert_eq!(doc["failures"], 0);
    }

    #[test]
    fn an_unreachable_node_is_never_at_target_and_is_named_with_its_error() {
        let fleet = fleetgen::fleet(&Shape { change: Change::NONE, ..Shape::default() }).unwrap();
        let mut obs = Sim::new(&fleet, SimConfig::new(&fleet, 1)).observe();
        let total = fleet.nodes.len();
        let doc = view(&fleet, &obs, &Memory::default(), &Default::default());
        assert_eq!(
            (doc["nodes_total"].as_u64(), doc["nodes_at_target"].as_u64()),
            (Some(total as u64), Some(total as u64))
        );
        assert_eq!(doc["nodes_unobserved"], 0);

        // Its last observation says "at target"; it did not answer now.
        obs.nodes[1].reachable = false;
        let errors = [(1, "127.0.1.2: cannot connect over SSH: Connection refused".to_string())].into_iter().collect();
        let doc = view(&fleet, &obs, &Memory::default(), &errors);
        assert_eq!(doc["nodes_at_target"].as_u64(), Some(total as u64 - 1));
        assert_eq!(doc["nodes_unobserved"], 1);
        let node = &fleet.nodes[1];
        assert_eq!(
            doc["unobserved"],
            serde_json::json!([{ "node": node.name, "address": format!("{}:{}", node.address, node.ssh_port),
                                 "error": "127.0.1.2: cannot connect over SSH: Connection refused" }])
        );
        let n = nodes(&doc).into_iter().find(|n| n["name"] == node.name.as_str()).unwrap();
        assert_eq!((n["reachable"].as_bool(), n["at_target"].as_bool()), (Some(false), Some(false)), "{n}");

        // Every node silent: none at target, every one named.
        for o in &mut obs.nodes {
            o.reachable = false;
        }
        let doc = view(&fleet, &obs, &Memory::default(), &errors);
        assert_eq!(doc["nodes_at_target"], 0);
        assert_eq!(doc["nodes_unobserved"].as_u64(), Some(total as u64));
        assert!(nodes(&doc).iter().all(|n| n["at_target"] == false));
        assert_eq!(doc["unobserved"][0]["error"], "did not answer the probe", "a node without an error entry");
    }
}
