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
                                "error": errors.get(&n),
                                "lb": lb(&o.lb),
                                "php": o.php_active.as_ref().map(|p| p.to_string()),
                                "release": o.release_active.as_ref().map(|r| r.to_string()),
                                "kernel_running": o.kernel_running.as_deref(),
                                "kernel_installed": o.kernel_installed.as_deref(),
                                "drift": drift,
                                "window": memory.node_ops.get(&n).map(|op| format!("{:?}", op.phase)),
                                "failed": memory.failed_nodes.get(&n),
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
    serde_json::json!({ "sites": sites, "failures": memory.failures(), "failure_budget": fleet.policy.failure_budget })
}
