//! A lower bound on a rollout's duration under the policy, computed from the
//! diff and the expected durations alone, independently of any schedule:
//! staging, then per site either the coalesced farm windows or the
//! member-index waves and plain switches (whichever is shorter, as if they
//! overlapped perfectly), with production starting a soak after preproduction.
//! Release migrations lie on each environment's critical path (an expand
//! before its first switch, a contract after its last); warm-ups lengthen
//! farm windows, snapshots node upgrades. Pure.

use serde::Serialize;

use super::Estimates;
use crate::diff::node_diff;
use crate::model::{Environment, Fleet, MigrationPhase, NodeId};
use crate::observe::Observed;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Bound {
    pub preproduction_s: f64,
    pub soak_s: f64,
    pub production_s: f64,
    pub total_s: f64,
}

/// Time for one site's farms (and whether anything there changes at all).
fn site_time(fleet: &Fleet, obs: &Observed, site: usize, e: &Estimates) -> Option<(f64, f64)> {
    let p = &fleet.policy;
    let mut stage = 0.0f64;
    let mut any = false;
    let mut online = false;
    let mut switch_farms = 0u32;
    let mut coalesced_window = 0.0f64;
    let mut plain_window = 0.0f64;
    let mut waves = 0.0f64; // longest wave sequence of one farm
    for &f in &fleet.sites[site].farms {
        let farm = &fleet.farms[f as usize];
        let mut needs_switch = false;
        let mut window_nodes = 0u32;
        let mut upgrade = 0.0f64;
        let mut snapshot = 0.0f64;
        let warmup = if fleet.warms_up(&fleet.farm_target(f).release) { e.warmup_s } else { 0.0 };
        for &n in &farm.nodes {
            let d = node_diff(fleet, n, &obs.nodes[n as usize]);
            if d.is_clean() {
                continue;
            }
            any = true;
            let mut st = 0.0;
            if !d.unfetched.is_empty() {
                st += e.fetch_s;
            }
            if d.stage_php.is_some() {
                st += e.rsync_s;
            }
            if d.stage_release.is_some() {
                st += e.rsync_s;
            }
            stage = stage.max(st);
            online |= !d.online.is_empty();
            needs_switch |= d.needs_switch();
            if d.needs_window() {
                window_nodes += 1;
                upgrade = upgrade.max(if d.window_disruption().reboot { e.reboot_s } else { e.restart_s });
                if fleet.profiles[fleet.nodes[n as usize].profile as usize].snapshot.is_some() {
                    snapshot = e.snapshot_s;
                }
            }
        }
        let upgrade = upgrade + snapshot;
        let lb = 2.0 * e.lb_s;
        // Draining can take no time at all (no request in flight): not in the bound.
        let t_node = lb + lb + upgrade + e.health_s + lb;
        let farm_waves = (window_nodes as f64 / farm.max_unavailable as f64).ceil() * t_node;
        let plain = lb + e.flush_s + e.activate_s + e.health_s + warmup + lb;
        if needs_switch {
            switch_farms += 1;
            coalesced_window = coalesced_window.max(plain + upgrade);
            plain_window = plain_window.max(plain);
        }
        waves = waves.max(farm_waves);
        let _ = farm_waves;
    }
    if !any {
        return None;
    }
    let rounds = (switch_farms as f64 / p.max_farms_down as f64).ceil();
    let work = if switch_farms == 0 {
        waves
    } else {
        let coalesced = rounds * coalesced_window;
        let separate = (rounds * plain_window).max(waves);
        coalesced.min(separate)
    };
    let online_t = if online { e.install_s } else { 0.0 };
    Some((stage, work.max(online_t)))
}

/// The migrations an environment's rollout must run in sequence with its
/// switches: (an expand before them, a contract after), for the releases
/// some node of it switches to.
fn migrations_s(fleet: &Fleet, obs: &Observed, env: Environment, e: &Estimates) -> (f64, f64) {
    let mut releases = Vec::new();
    for (n, node) in fleet.nodes.iter().enumerate() {
        if fleet.sites[node.site as usize].environment != env {
            continue;
        }
        let d = node_diff(fleet, n as NodeId, &obs.nodes[n]);
        if let Some(r) = d.switch_release
            && !releases.contains(&r)
        {
            releases.push(r);
        }
    }
    let t = |phase| if releases.iter().any(|r| fleet.migration_hook(r, phase).is_some()) { e.migrate_s } else { 0.0 };
    (t(MigrationPhase::Expand), t(MigrationPhase::Contract))
}

pub fn lower_bound(fleet: &Fleet, obs: &Observed, e: &Estimates) -> Bound {
    let mut pre: Option<f64> = None;
    let mut prod_stage = 0.0f64;
    let mut prod_work = 0.0f64;
    let mut prod_any = false;
    for (s, site) in fleet.sites.iter().enumerate() {
        let Some((stage, work)) = site_time(fleet, obs, s, e) else {
            continue;
        };
        match site.environment {
            Environment::Preproduction => pre = Some(pre.unwrap_or(0.0).max(stage + work)),
            Environment::Production => {
                prod_any = true;
                prod_stage = prod_stage.max(stage);
                prod_work = prod_work.max(work);
            }
        }
    }
    let gated = prod_any && !fleet.policy.waive_preproduction_gate && pre.is_some();
    // Preproduction's expand precedes its switches; its contract overlaps the soak.
    let (pre_expand, pre_contract) = migrations_s(fleet, obs, Environment::Preproduction, e);
    let pre = pre.map(|t| t + pre_expand);
    if prod_any {
        let (expand, contract) = migrations_s(fleet, obs, Environment::Production, e);
        prod_work += expand + contract;
    }
    let pre_s = pre.unwrap_or(0.0);
    let pre_end = if pre.is_some() { pre_s + pre_contract } else { 0.0 };
    let soak_s = if gated { fleet.policy.soak.as_secs_f64() } else { 0.0 };
    // Production staging overlaps preproduction and the soak.
    let wait = if gated { pre_s + soak_s } else { 0.0 };
    let production_s = if prod_any { prod_work + (prod_stage - wait).max(0.0) } else { 0.0 };
    let total_s = if gated { (wait + production_s).max(pre_end) } else { pre_end.max(production_s) };
    Bound { preproduction_s: pre_s, soak_s, production_s, total_s }
}
