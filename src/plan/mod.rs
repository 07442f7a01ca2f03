//! The planner: desired (fleet) x observed x memory x now -> the next actions
//! that are safe now. Level-triggered like a Kubernetes controller: called
//! again after every change it carries the rollout forward; called after a
//! crash with only the persisted memory it picks up where things stand.
//!
//! Pure: no I/O, no clock (time is an argument), no randomness. Every rule of
//! the product's invariants is enforced here; `invariants` checks them
//! independently.

pub mod action;
pub mod bound;
pub mod change_windows;
pub mod diffs;
pub mod gate;
pub mod memory;
pub mod named;
pub mod progress;
#[cfg(test)]
mod unobserved_tests;

use serde::Serialize;

pub use action::{Action, Kind, Outcome, Subject};
pub use diffs::DiffCache;
pub use memory::{FarmOp, FarmPhase, Memory, NodeOp, NodePhase};

use crate::diff::NodeDiff;
use crate::model::{Environment, FarmId, Fleet, MigrationPhase, NodeId, ReleaseId, SiteId};
use crate::observe::{Admin, Observed};
use memory::MigrationState;

/// Steering resumes only once upgraded farms are this far below `max_farm_load`.
pub const STEER_HYSTERESIS: f64 = 0.1;

/// A node outside any window that does not answer this long has failed
/// (`policy.unreachable_timeout`, ms).
pub fn unreachable_limit_ms(fleet: &Fleet) -> u64 {
    fleet.policy.unreachable_timeout.as_millis() as u64
}

/// A node that stays down this long after its upgrade started has failed.
pub const UPGRADE_TIMEOUT_MS: u64 = 15 * 60 * 1000;

/// Expected durations (seconds) the planner uses to judge whether a window
/// fits the capacity that stays in service. The simulation knows its own;
/// the real executor measures them.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Estimates {
    pub fetch_s: f64,
    pub rsync_s: f64,
    pub install_s: f64,
    pub lb_s: f64,
    pub drain_s: f64,
    pub flush_s: f64,
    pub activate_s: f64,
    pub health_s: f64,
    pub restart_s: f64,
    pub reboot_s: f64,
    /// One release migration (expand or contract) on one node.
    #[serde(default = "default_migrate_s")]
    pub migrate_s: f64,
    /// One node's warm-up.
    #[serde(default = "default_warmup_s")]
    pub warmup_s: f64,
    /// One root filesystem snapshot.
    #[serde(default = "default_snapshot_s")]
    pub snapshot_s: f64,
}

fn default_migrate_s() -> f64 {
    60.0
}
fn default_warmup_s() -> f64 {
    5.0
}
fn default_snapshot_s() -> f64 {
    3.0
}

impl Default for Estimates {
    fn default() -> Self {
        Estimates {
            fetch_s: 20.0,
            rsync_s: 15.0,
            install_s: 10.0,
            lb_s: 0.01,
            drain_s: 0.5,
            flush_s: 0.5,
            activate_s: 3.0,
            health_s: 2.0,
            restart_s: 20.0,
            reboot_s: 90.0,
            migrate_s: default_migrate_s(),
            warmup_s: default_warmup_s(),
            snapshot_s: default_snapshot_s(),
        }
    }
}

/// Everything the planner looks at.
pub struct World<'a> {
    pub fleet: &'a Fleet,
    pub observed: &'a Observed,
    pub memory: &'a Memory,
    pub now_ms: u64,
    pub estimates: &'a Estimates,
}

/// An action and why it is needed now.
#[derive(Clone, Debug, Serialize)]
pub struct Planned {
    pub action: Action,
    pub why: String,
    /// Member-index wave, for node-level disruptive work.
    pub wave: Option<u32>,
}

/// Something that wants to change but may not yet, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Blocked {
    pub subject: String,
    pub reason: String,
    /// What it waits for, for grouping (`progress`).
    pub cause: Cause,
    /// When the wait ends by itself, if known: a soak's end, a change
    /// window's opening (ms on the fleet's clock).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
    /// The farm or node `subject` names (`None`: the whole rollout).
    #[serde(skip)]
    pub on: Option<Subject>,
}

/// What a blocked subject waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// Preproduction has not run the value for the soak time yet.
    Preproduction,
    /// Outside every change window.
    ChangeWindow,
    /// Site or farm capacity: `max_farms_down`, the site's floor, the load
    /// the other farms or nodes would carry, the last serving farm or node.
    Capacity,
    /// PHP trees and releases are not staged on every node of the farm yet.
    Staging,
    /// The farm's node-level windows must close before its switch.
    NodeWindows,
    /// Only the operator can move it on (a rollback not allowed, a farm
    /// whose every node failed).
    Operator,
    /// The failure budget is spent.
    Halted,
    /// A release migration (expand) of the farm's environment has not
    /// completed yet: it runs first, once per environment.
    Migration,
}

/// One planning pass.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Pass {
    pub actions: Vec<Planned>,
    pub blocked: Vec<Blocked>,
    /// Every node was observed and runs its target (or has failed), nothing
    /// is out, nothing in flight: `settled` with `unobserved` empty.
    pub converged: bool,
    /// Nothing is left to do on what could be observed: every node that
    /// answered and has not failed runs its target, nothing is out, nothing
    /// in flight. Only `unobserved` nodes may keep the fleet from `converged`.
    pub settled: bool,
    /// Nodes that did not answer this pass's observation (failed or not).
    /// Their state is unknown: they are never counted as converged.
    pub unobserved: Vec<NodeId>,
    pub halted: bool,
    /// Nodes and farms an operator put out of service (respected, not touched).
    pub held: Vec<String>,
    /// Disruptive or farm-level work waits for a change window that opens
    /// then (ms since the epoch): a driver wakes up for it, and is not stuck.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_window_opens_ms: Option<u64>,
}

/// Per-farm facts computed once per pass.
#[derive(Clone, Debug, Default)]
struct FarmView {
    pending_switch: bool,
    staged_for_switch: bool,
    /// Capacity (sessions) of nodes serving now.
    serving_capacity: u64,
    full_capacity: u64,
    /// The pseudo-server is not in maint and some node serves.
    in_service: bool,
    takes_new: bool,
    /// Every serving node already runs the farm's target release and PHP.
    upgraded: bool,
    node_windows: u32,
    held_by_operator: bool,
}

/// Out of the LB with no window of drover's and no failure: an operator's
/// (or a window a new spec's journal closed, `named`). Reported as held,
/// never worked on.
fn node_held(mem: &Memory, o: &crate::observe::NodeObs, n: NodeId) -> bool {
    o.lb.admin != Admin::Ready && !mem.node_ops.contains_key(&n) && !mem.failed_nodes.contains_key(&n)
}

pub fn plan(w: &World) -> Pass {
    let diffs = diffs::all(w.fleet, w.observed);
    Planner::new(w, &diffs).run()
}

/// `plan`, with the node diffs kept in `cache` between passes: only the
/// nodes whose observed state changed since the last pass are diffed again.
/// Same result as `plan` (a driver that plans after every event, like the
/// simulation, would otherwise diff the whole fleet per event). A cache made
/// for another fleet is not used.
pub fn plan_with(w: &World, cache: &mut DiffCache) -> Pass {
    if !cache.serves(w.fleet) {
        return plan(w);
    }
    let diffs = cache.refresh(w.observed);
    Planner::new(w, diffs).run()
}

struct Planner<'a, 'w> {
    w: &'a World<'w>,
    diffs: &'a [NodeDiff],
    farms: Vec<FarmView>,
    pass: Pass,
    halted: bool,
    /// Farms out per site by drover (updated as the pass starts new windows).
    farms_out: Vec<u32>,
    /// Serving capacity per site (updated likewise).
    site_serving: Vec<u64>,
    site_full: Vec<u64>,
    /// Subjects that already have an action in this pass.
    planned: std::collections::HashSet<Subject>,
    /// Outside every change window: why new disruptive and farm-level work
    /// waits, and when the next window opens.
    closed: Option<(String, Option<u64>)>,
    /// The passed gates of `memory.gate`, borrowed for lookups that do not
    /// allocate (the gate is asked per node and per atom, every pass):
    /// (profile, component, value), and for packages (profile, category,
    /// name, version).
    passed: std::collections::HashSet<(u32, &'a str, &'a str)>,
    passed_packages: std::collections::HashSet<(u32, &'a str, &'a str, &'a str)>,
    /// A migration runs, is due, or waits: the rollout is not settled.
    hooks_pending: bool,
}

impl<'a, 'w> Planner<'a, 'w> {
    fn new(w: &'a World<'w>, diffs: &'a [NodeDiff]) -> Self {
        let fleet = w.fleet;
        let obs = w.observed;
        let mem = w.memory;
        let mut farms = vec![FarmView::default(); fleet.farms.len()];
        let mut site_serving = vec![0u64; fleet.sites.len()];
        let mut site_full = vec![0u64; fleet.sites.len()];
        let mut farms_out = vec![0u32; fleet.sites.len()];
        for (f, farm) in fleet.farms.iter().enumerate() {
            let v = &mut farms[f];
            let fo = &obs.farms[f];
            let target = fleet.farm_target(f as FarmId);
            let mut any_serving = false;
            v.upgraded = true;
            v.staged_for_switch = true;
            for &n in &farm.nodes {
                let node = &fleet.nodes[n as usize];
                let o = &obs.nodes[n as usize];
                let cap = fleet.profiles[node.profile as usize].capacity as u64;
                v.full_capacity += cap;
                let failed = mem.failed_nodes.contains_key(&n);
                let d = &diffs[n as usize];
                if !failed {
                    // A held node (out of the LB, no window of drover's) alone never
                    // takes its farm out for a switch: that would send sessions that
                    // saw the farm's release back to farms still on an older one.
                    if !node_held(mem, o, n) {
                        v.pending_switch |= d.needs_switch();
                    }
                    v.staged_for_switch &= d.stage_php.is_none() && d.stage_release.is_none();
                }
                if mem.node_ops.contains_key(&n) {
                    v.node_windows += 1;
                }
                if o.reachable && o.lb.admin == Admin::Ready && !failed {
                    any_serving = true;
                    v.serving_capacity += cap;
                    v.upgraded &= o.release_active.as_ref() == Some(&target.release)
                        && o.php_active.as_ref() == Some(&target.php);
                }
            }
            v.upgraded &= any_serving;
            v.in_service = fo.lb.admin != Admin::Maint && any_serving;
            v.takes_new = v.in_service && fo.lb.admin == Admin::Ready && fo.lb.weight > 0;
            v.held_by_operator = fo.lb.admin != Admin::Ready && !mem.farm_ops.contains_key(&(f as FarmId));
            let s = farm.site as usize;
            site_full[s] += v.full_capacity;
            if v.in_service {
                site_serving[s] += v.serving_capacity;
            }
            // A window whose every node failed is a failure, not work in progress:
            // it stays out but does not hold the site's max_farms_down.
            let all_failed = farm.nodes.iter().all(|n| mem.failed_nodes.contains_key(n));
            if mem.farm_ops.contains_key(&(f as FarmId)) && !all_failed {
                farms_out[s] += 1;
            }
        }
        let halted = mem.halted(fleet.policy.failure_budget);
        let windows = &fleet.policy.change_windows;
        let closed = (!change_windows::open_at(windows, w.now_ms)).then(|| {
            let next = change_windows::next_open(windows, w.now_ms);
            let why = match next {
                Some(t) => format!("outside change windows; next opens {}", change_windows::format_utc(t)),
                None => "outside change windows; none ever opens".to_string(),
            };
            (why, next)
        });
        let mut passed = std::collections::HashSet::new();
        let mut passed_packages = std::collections::HashSet::new();
        for ((profile, component, value), _) in mem.gate.iter().filter(|(_, r)| r.passed) {
            passed.insert((*profile, component.as_str(), value.as_str()));
            if let Some((category, name)) = gate::package_key(component) {
                passed_packages.insert((*profile, category, name, value.as_str()));
            }
        }
        Planner {
            w,
            diffs,
            farms,
            pass: Pass { halted, ..Pass::default() },
            halted,
            farms_out,
            site_serving,
            site_full,
            planned: std::collections::HashSet::new(),
            closed,
            passed,
            passed_packages,
            hooks_pending: false,
        }
    }

    fn run(mut self) -> Pass {
        let fleet = self.w.fleet;
        for f in 0..fleet.farms.len() as FarmId {
            if self.w.memory.farm_ops.contains_key(&f) {
                self.continue_farm(f);
            }
        }
        // A memory of another fleet (keys past this one's end) is never a panic.
        for (&n, op) in self.w.memory.node_ops.range(..fleet.nodes.len() as NodeId) {
            self.continue_node(n, op);
        }
        self.keep_failed_out();
        self.steer();
        self.migrations();
        if self.halted {
            self.pass.blocked.push(Blocked {
                subject: "rollout".into(),
                reason: format!(
                    "halted: {} failures exceed the failure budget of {}",
                    self.w.memory.failures(),
                    fleet.policy.failure_budget
                ),
                cause: Cause::Halted,
                until_ms: None,
                on: None,
            });
        } else {
            self.start_farm_windows();
            self.start_node_windows();
            self.online_work();
        }
        self.pass.settled = self.settled() && !self.hooks_pending;
        self.pass.unobserved = self.w.observed.unobserved().collect();
        self.pass.converged = self.pass.settled && self.pass.unobserved.is_empty();
        self.pass
    }

    fn push(&mut self, action: Action, why: impl Into<String>) {
        self.push_wave(action, why.into(), None);
    }

    /// At most one action per subject in a pass, none for a busy subject.
    fn push_wave(&mut self, action: Action, why: String, wave: Option<u32>) {
        let subject = action.subject();
        if self.w.memory.busy(subject) || !self.planned.insert(subject) {
            return;
        }
        self.pass.actions.push(Planned { action, why, wave });
    }

    fn block(&mut self, on: Subject, cause: Cause, reason: impl Into<String>) {
        self.block_until(on, cause, reason, None);
    }

    fn block_until(&mut self, on: Subject, cause: Cause, reason: impl Into<String>, until_ms: Option<u64>) {
        let fleet = self.w.fleet;
        let subject = match on {
            Subject::Farm(f) => format!("farm {}", fleet.farms[f as usize].name),
            Subject::Node(n) => format!("node {}", fleet.nodes[n as usize].name),
        };
        self.pass.blocked.push(Blocked { subject, reason: reason.into(), cause, until_ms, on: Some(on) });
    }

    /// Reports `on`, whose disruptive or farm-level work does not start
    /// outside every change window, as waiting for the next one.
    fn wait_for_change_window(&mut self, on: Subject) {
        if let Some((why, next)) = self.closed.clone() {
            self.block_until(on, Cause::ChangeWindow, why, next);
            self.pass.change_window_opens_ms = next;
        }
    }

    /// When node `n`'s gate for `component` = `value` opens: the soak's end
    /// once every preproduction node of its profile runs the value, `None`
    /// before (or when it has no record).
    fn gate_opens_ms(&self, n: NodeId, component: &str, value: &str) -> Option<u64> {
        let fleet = self.w.fleet;
        let profile = fleet.nodes[n as usize].profile;
        let rec = self.w.memory.gate.get(&(profile, component.to_string(), value.to_string()))?;
        Some(rec.since_ms + fleet.policy.soak.as_millis() as u64)
    }

    /// Node `n`'s profile snapshots its root filesystem before disruptive upgrades.
    fn snapshots(&self, n: NodeId) -> bool {
        let fleet = self.w.fleet;
        fleet.profiles[fleet.nodes[n as usize].profile as usize].snapshot.is_some()
    }

    fn node_failed(&self, n: NodeId) -> bool {
        self.w.memory.failed_nodes.contains_key(&n)
    }

    // ---- continuing operations -------------------------------------------

    fn continue_farm(&mut self, f: FarmId) {
        let w = self.w;
        let fleet = w.fleet;
        let op = &w.memory.farm_ops[&f];
        let fo = &w.observed.farms[f as usize];
        if w.memory.busy(Subject::Farm(f)) {
            return;
        }
        let name = &fleet.farms[f as usize].name;
        match op.phase {
            FarmPhase::Leaving => {
                if fo.lb.admin != Admin::Maint {
                    self.push(
                        Action::SetFarm { farm: f, admin: Admin::Maint },
                        format!("farm {name} leaves the LB for its switch"),
                    );
                } else if self.halted && !op.switched {
                    self.push(
                        Action::SetFarm { farm: f, admin: Admin::Ready },
                        "rollout halted before this farm changed: put it back unchanged",
                    );
                } else if fo.lb.active == 0
                    || w.now_ms.saturating_sub(op.since_ms) >= fleet.policy.drain_timeout.as_millis() as u64
                {
                    self.push(
                        Action::FlushCache { farm: f },
                        format!("farm {name} is out and drained: flush its memcached before switching"),
                    );
                }
            }
            FarmPhase::Flushing => {
                // Flush outcome unknown (restart): flushing again is harmless.
                self.push(
                    Action::FlushCache { farm: f },
                    format!("farm {name}: flush memcached (again, outcome unknown)"),
                );
            }
            FarmPhase::Working => self.farm_work(f, op),
            FarmPhase::Returning => {
                self.push(
                    Action::SetFarm { farm: f, admin: Admin::Ready },
                    format!("farm {name} switched and healthy: back into the LB"),
                );
            }
            FarmPhase::Aborting => {
                if fo.lb.admin != Admin::Ready {
                    self.push(
                        Action::SetFarm { farm: f, admin: Admin::Ready },
                        format!("farm {name}: switch aborted before any node changed, back in unchanged"),
                    );
                }
            }
        }
    }

    /// Inside a farm's window: coalesced upgrades, switches, health checks,
    /// then back in. Every node of the farm switches before the farm returns.
    fn farm_work(&mut self, f: FarmId, op: &FarmOp) {
        let w = self.w;
        let fleet = w.fleet;
        let farm = &fleet.farms[f as usize];
        let target = fleet.farm_target(f);
        let mut all_done = true;
        let mut any_alive = false;
        for &n in &farm.nodes {
            if self.node_failed(n) {
                if w.observed.nodes[n as usize].lb.admin != Admin::Maint {
                    all_done = false; // keep_failed_out puts it in maint first
                }
                continue;
            }
            let o = &w.observed.nodes[n as usize];
            if node_held(w.memory, o, n) {
                // Not drover's to work on, and it does not serve: as a failed one.
                continue;
            }
            any_alive = true;
            if w.memory.busy(Subject::Node(n)) {
                all_done = false;
                continue;
            }
            let d = &self.diffs[n as usize];
            if o.busy {
                all_done = false;
                continue;
            }
            if !o.reachable {
                all_done = false;
                if w.now_ms.saturating_sub(op.since_ms) > UPGRADE_TIMEOUT_MS {
                    self.push(
                        Action::MarkFailed { node: n, reason: "did not come back within the upgrade timeout".into() },
                        "node unreachable in its farm window",
                    );
                }
                continue;
            }
            if d.needs_window() && self.packages_gate_open(n, &d.disruptive) {
                all_done = false;
                if self.snapshots(n) && !op.snapshots.contains_key(&n) {
                    self.push(
                        Action::Snapshot { node: n, name: change_windows::snapshot_name(w.now_ms) },
                        format!("snapshot before the disruptive upgrade coalesced into farm {}'s window", farm.name),
                    );
                } else {
                    let atoms = d.disruptive.clone();
                    self.push(
                        Action::Upgrade { node: n, atoms, disruption: d.window_disruption() },
                        format!("coalesced into farm {}'s window (farm is out)", farm.name),
                    );
                }
            } else if d.needs_switch() {
                all_done = false;
                self.push(
                    Action::Activate {
                        node: n,
                        php: d.switch_php.clone(),
                        release: d.switch_release.clone(),
                        rollback: d.backwards,
                    },
                    format!("farm-atomic switch to php {} release {}", target.php, target.release),
                );
            } else if !op.checked.contains(&n) {
                all_done = false;
                self.push(Action::HealthCheck { node: n }, "health check before the farm returns");
            } else if fleet.warms_up(&target.release) && !op.warmed.contains(&n) {
                all_done = false;
                self.push(Action::Warmup { node: n }, "warm up before the farm takes traffic again");
            }
        }
        if all_done && any_alive {
            self.push(
                Action::SetFarm { farm: f, admin: Admin::Ready },
                format!("farm {} switched and healthy: back into the LB", farm.name),
            );
        } else if !any_alive {
            self.block(
                Subject::Farm(f),
                Cause::Operator,
                "every node of the farm failed or is held out of the LB: the farm stays out",
            );
        }
    }

    fn continue_node(&mut self, n: NodeId, op: &NodeOp) {
        let w = self.w;
        let fleet = w.fleet;
        if w.memory.busy(Subject::Node(n)) {
            return;
        }
        let o = &w.observed.nodes[n as usize];
        let d = &self.diffs[n as usize];
        let name = &fleet.nodes[n as usize].name;
        let elapsed = w.now_ms.saturating_sub(op.since_ms);
        match op.phase {
            NodePhase::Draining => {
                if self.halted {
                    self.push(
                        Action::SetNode { node: n, admin: Admin::Ready },
                        "rollout halted before this node changed: back to ready",
                    );
                } else if o.lb.admin != Admin::Drain && o.lb.admin != Admin::Maint {
                    self.push(
                        Action::SetNode { node: n, admin: Admin::Drain },
                        format!("{name}: drain before its disruptive upgrade"),
                    );
                } else if o.lb.active == 0 || elapsed >= fleet.policy.drain_timeout.as_millis() as u64 {
                    let why = if o.lb.active == 0 {
                        "drained (no active requests): maintenance before the upgrade".to_string()
                    } else {
                        format!(
                            "drain timeout ({}s) reached with {} requests: maintenance",
                            fleet.policy.drain_timeout.as_secs(),
                            o.lb.active
                        )
                    };
                    self.push(Action::SetNode { node: n, admin: Admin::Maint }, why);
                }
            }
            NodePhase::Out => {
                if self.halted {
                    self.push(
                        Action::SetNode { node: n, admin: Admin::Ready },
                        "rollout halted before this node changed: back to ready",
                    );
                } else if o.lb.admin != Admin::Maint {
                    self.push(
                        Action::SetNode { node: n, admin: Admin::Maint },
                        format!("{name}: maintenance before the upgrade"),
                    );
                } else if d.needs_window() && self.snapshots(n) && op.snapshot.is_none() {
                    self.push(
                        Action::Snapshot { node: n, name: change_windows::snapshot_name(w.now_ms) },
                        "node drained and in maintenance: snapshot before its disruptive upgrade",
                    );
                } else if d.needs_window() {
                    self.push(
                        Action::Upgrade { node: n, atoms: d.disruptive.clone(), disruption: d.window_disruption() },
                        "node drained and in maintenance: disruptive upgrade",
                    );
                } else {
                    self.push(Action::HealthCheck { node: n }, "health check before returning");
                }
            }
            NodePhase::Upgrading => {
                if o.busy {
                    // An upgrade is still running (e.g. started before a restart of drover).
                } else if !o.reachable {
                    if elapsed > UPGRADE_TIMEOUT_MS {
                        self.push(
                            Action::MarkFailed { node: n, reason: "did not come back from its upgrade".into() },
                            "upgrade timeout",
                        );
                    }
                } else if d.needs_window() {
                    // Outcome unknown (restart) or incomplete: upgrading is idempotent.
                    self.push(
                        Action::Upgrade { node: n, atoms: d.disruptive.clone(), disruption: d.window_disruption() },
                        "upgrade incomplete: run it again",
                    );
                } else {
                    self.push(Action::HealthCheck { node: n }, "upgraded: health check before returning");
                }
            }
            NodePhase::Checking => {
                if op.healthy {
                    self.push(Action::SetNode { node: n, admin: Admin::Ready }, "healthy: back into the farm");
                } else {
                    self.push(Action::HealthCheck { node: n }, "health check before returning");
                }
            }
            NodePhase::Returning => {
                self.push(Action::SetNode { node: n, admin: Admin::Ready }, "healthy: back into the farm");
            }
        }
    }

    fn keep_failed_out(&mut self) {
        let w = self.w;
        let nodes = ..w.fleet.nodes.len() as NodeId;
        for (&n, &since) in w.memory.unreachable_since.range(nodes) {
            let in_window =
                w.memory.node_ops.contains_key(&n) || w.memory.farm_ops.contains_key(&w.fleet.nodes[n as usize].farm);
            let limit = unreachable_limit_ms(w.fleet);
            if !in_window && !self.node_failed(n) && w.now_ms.saturating_sub(since) >= limit {
                self.push(
                    Action::MarkFailed { node: n, reason: format!("unreachable for {}s", limit / 1000) },
                    "node does not answer: reported and kept out",
                );
            }
        }
        for (&n, _) in w.memory.failed_nodes.range(nodes) {
            let o = &w.observed.nodes[n as usize];
            // Also when unreachable: HAProxy would put it back by itself once it answers health checks.
            if o.lb.admin == Admin::Ready {
                self.push(Action::SetNode { node: n, admin: Admin::Maint }, "failed node stays out of the LB");
            }
        }
    }

    // ---- steering new sessions -------------------------------------------

    /// New sessions go only to farms that already run their target once one
    /// farm of the site does, unless those farms run out of headroom: then
    /// old farms take new sessions again (safe: a new session has seen
    /// nothing) until the upgraded farms are back below the limit minus a
    /// hysteresis margin.
    fn steer(&mut self) {
        let w = self.w;
        let fleet = w.fleet;
        let limit = fleet.policy.max_farm_load;
        for site in &fleet.sites {
            let mut any_upgraded = false;
            let mut full = false;
            let mut calm = true;
            let mut switching = false;
            for &f in &site.farms {
                let v = &self.farms[f as usize];
                switching |= v.pending_switch || w.memory.farm_ops.contains_key(&f);
                if v.in_service && v.upgraded && !v.pending_switch {
                    any_upgraded = true;
                    let load = w.observed.farms[f as usize].sessions as f64;
                    let cap = v.serving_capacity as f64;
                    full |= load >= limit * cap;
                    calm &= load < (limit - STEER_HYSTERESIS) * cap;
                }
            }
            // Are pending farms currently relaxed (taking new sessions while an upgraded farm exists)?
            let relaxed = any_upgraded
                && site.farms.iter().any(|&f| {
                    let v = &self.farms[f as usize];
                    v.pending_switch
                        && !w.memory.farm_ops.contains_key(&f)
                        && w.observed.farms[f as usize].lb.weight > 0
                });
            // A halted rollout stops steering: old farms taking new sessions is
            // safe, and the upgraded ones alone would fill up.
            let steer_now = !self.halted && switching && any_upgraded && if relaxed { calm } else { !full };
            for &f in &site.farms {
                if w.memory.farm_ops.contains_key(&f) || self.farms[f as usize].held_by_operator {
                    continue;
                }
                let v = &self.farms[f as usize];
                let full_weight = fleet.farms[f as usize].lb_weight;
                let want = if steer_now && v.pending_switch { 0 } else { full_weight };
                let have = w.observed.farms[f as usize].lb.weight;
                // Steering a farm away from new sessions prepares its switch:
                // outside every change window it does not start (the farm's
                // switch is reported as waiting); giving weight back does.
                let prepares_switch = want == 0 && have > 0;
                if have != want && !(prepares_switch && self.closed.is_some()) {
                    let why = if want == 0 {
                        format!("site {}: new sessions only to upgraded farms", site.name)
                    } else if v.pending_switch && any_upgraded {
                        format!(
                            "site {}: upgraded farms are near capacity, old farms take new sessions again",
                            site.name
                        )
                    } else {
                        "farm takes new sessions at its capacity weight".to_string()
                    };
                    self.push(Action::SetFarmWeight { farm: f, weight: want }, why);
                }
            }
        }
    }

    // ---- starting new windows --------------------------------------------

    fn switch_gate_open(&self, f: FarmId) -> Result<(), (Cause, String, Option<u64>)> {
        let fleet = self.w.fleet;
        let target = fleet.farm_target(f);
        for &n in &fleet.farms[f as usize].nodes {
            if self.node_failed(n) {
                continue;
            }
            let d = &self.diffs[n as usize];
            if d.backwards && !target.allow_rollback {
                return Err((
                    Cause::Operator,
                    format!(
                        "the switch to release {} / php {} goes backwards: a rollback needs `allow_rollback: true` in the spec",
                        target.release, target.php
                    ),
                    None,
                ));
            }
            if let Some(r) = &d.switch_release
                && let Err(why) = self.expanded(n, r)
            {
                return Err(why);
            }
            if let Some(r) = &d.switch_release
                && !self.gate_open(n, "release", &r.0)
            {
                return Err((
                    Cause::Preproduction,
                    format!(
                        "preproduction has not run release {r} long enough (soak {}s)",
                        fleet.policy.soak.as_secs()
                    ),
                    self.gate_opens_ms(n, "release", &r.0),
                ));
            }
            if let Some(p) = &d.switch_php
                && !self.gate_open(n, "php", &p.0)
            {
                return Err((
                    Cause::Preproduction,
                    format!("preproduction has not run php {p} long enough (soak {}s)", fleet.policy.soak.as_secs()),
                    self.gate_opens_ms(n, "php", &p.0),
                ));
            }
        }
        Ok(())
    }

    /// Node `n` may switch to release `r` as far as migrations go: `r`
    /// declares no expand migration, or it completed for `n`'s environment.
    fn expanded(&self, n: NodeId, r: &ReleaseId) -> Result<(), (Cause, String, Option<u64>)> {
        let fleet = self.w.fleet;
        let Some(hook) = fleet.migration_hook(r, MigrationPhase::Expand) else {
            return Ok(());
        };
        let env = fleet.sites[fleet.nodes[n as usize].site as usize].environment;
        let what = format!("release {r}: {}'s expand migration (hook `{hook}`)", env.name());
        let Some(rec) = self.w.memory.migration(env, &r.0, MigrationPhase::Expand) else {
            return Err((Cause::Migration, format!("{what} runs before the first switch"), None));
        };
        match &rec.state {
            MigrationState::Done => Ok(()),
            MigrationState::Running => Err((Cause::Migration, format!("{what} runs on {}", rec.node), None)),
            MigrationState::Failed(e) => Err((
                Cause::Operator,
                format!(
                    "{what} failed on {}: {e}; the release stops in {}: fix it in a new release",
                    rec.node,
                    env.name()
                ),
                None,
            )),
            MigrationState::Unknown(e) => Err((
                Cause::Operator,
                format!(
                    "{what} was interrupted on {} and its status is unknown ({e}); drover asks the hook again",
                    rec.node
                ),
                None,
            )),
        }
    }

    /// Release migrations, once per environment: an expand before the
    /// environment's first switch to its release (production's after the
    /// preproduction gate), a contract once every node of the environment
    /// serves it; one interrupted by a crash is resumed through the hook's
    /// `status`, never run again blindly.
    fn migrations(&mut self) {
        let w = self.w;
        let fleet = w.fleet;
        if fleet.releases.is_empty() {
            return;
        }
        for env in [Environment::Preproduction, Environment::Production] {
            let mut releases: Vec<&ReleaseId> = Vec::new();
            for (f, farm) in fleet.farms.iter().enumerate() {
                if fleet.sites[farm.site as usize].environment != env {
                    continue;
                }
                let r = &fleet.farm_target(f as FarmId).release;
                if fleet.releases.contains_key(r) && !releases.contains(&r) {
                    releases.push(r);
                }
            }
            for r in releases {
                for phase in [MigrationPhase::Expand, MigrationPhase::Contract] {
                    if let Some(hook) = fleet.migration_hook(r, phase) {
                        self.migration(env, r, phase, hook);
                    }
                }
            }
        }
    }

    fn migration(&mut self, env: Environment, r: &ReleaseId, phase: MigrationPhase, hook: &str) {
        let w = self.w;
        let fleet = w.fleet;
        let what = format!("release {r}: {}'s {} migration (hook `{hook}`)", env.name(), phase.name());
        if let Some(rec) = w.memory.migration(env, &r.0, phase) {
            match &rec.state {
                MigrationState::Done => {}
                // Reported by the farms it stops (expand) or once (contract);
                // it counts against the failure budget.
                MigrationState::Failed(_) => {
                    if phase == MigrationPhase::Contract {
                        self.block_rollout(Cause::Operator, format!("{what} failed on {}", rec.node));
                    }
                }
                MigrationState::Running | MigrationState::Unknown(_) => {
                    self.hooks_pending = true;
                    if let (MigrationState::Unknown(e), MigrationPhase::Contract) = (&rec.state, phase) {
                        let why = format!("{what} was interrupted on {} and its status is unknown ({e})", rec.node);
                        self.block_rollout(Cause::Operator, why);
                    }
                    let recorded = fleet.node_by_name(&rec.node);
                    // Still running here: nothing to ask (`push` would skip
                    // that node, not one picked instead of it).
                    if recorded.is_some_and(|n| w.memory.busy(Subject::Node(n))) {
                        return;
                    }
                    let on = recorded.filter(|&n| self.usable_for_migration(n, r).is_ok());
                    if let Some(n) = on.or_else(|| self.migration_node(env, r).ok()) {
                        self.push(
                            Action::Migrate { node: n, release: r.clone(), phase, resume: true },
                            format!(
                                "{what} began on {} and its end was never recorded: ask the hook's status",
                                rec.node
                            ),
                        );
                    }
                }
            }
            return;
        }
        // Not begun: is it due?
        let env_nodes =
            || fleet.nodes.iter().enumerate().filter(move |(_, n)| fleet.sites[n.site as usize].environment == env);
        match phase {
            MigrationPhase::Expand => {
                let wanted = env_nodes()
                    .any(|(n, _)| !self.node_failed(n as NodeId) && self.diffs[n].switch_release.as_ref() == Some(r));
                if !wanted {
                    return;
                }
            }
            MigrationPhase::Contract => {
                let expanded = w.memory.migration(env, &r.0, MigrationPhase::Expand).map(|m| &m.state);
                if fleet.migration_hook(r, MigrationPhase::Expand).is_some() && expanded != Some(&MigrationState::Done)
                {
                    return; // the expand comes first (and holds the farms)
                }
                let mut other = None;
                let mut all_on = true;
                for (n, _) in env_nodes() {
                    let n = n as NodeId;
                    if self.node_failed(n) {
                        continue;
                    }
                    let o = &w.observed.nodes[n as usize];
                    all_on &= o.reachable && o.release_active.as_ref() == Some(r);
                    let t = &fleet.node_target(n).release;
                    if t != r && other.is_none() {
                        other = Some((fleet.farms[fleet.nodes[n as usize].farm as usize].name.clone(), t.clone()));
                    }
                }
                let quiet = env_nodes().all(|(n, node)| {
                    !w.memory.node_ops.contains_key(&(n as NodeId)) && !w.memory.farm_ops.contains_key(&node.farm)
                });
                if let Some((farm, t)) = other {
                    self.hooks_pending = true;
                    self.block_rollout(
                        Cause::Operator,
                        format!(
                            "{what} waits until every node of {} serves it: farm {farm} targets release {t}",
                            env.name()
                        ),
                    );
                    return;
                }
                if !(all_on && quiet) {
                    self.hooks_pending = true;
                    return; // the rollout is under way: it runs at the end
                }
            }
        }
        self.hooks_pending = true;
        if self.halted {
            return;
        }
        if let Some((why, next)) = self.closed.clone() {
            self.pass.change_window_opens_ms = next;
            self.pass.blocked.push(Blocked {
                subject: format!("migration {r} {}", env.name()),
                reason: format!("{what}: {why}"),
                cause: Cause::ChangeWindow,
                until_ms: next,
                on: None,
            });
            return;
        }
        let n = match self.migration_node(env, r) {
            Ok(n) => n,
            Err(why) => {
                self.block_rollout(Cause::Staging, format!("{what} waits: {why}"));
                return;
            }
        };
        if phase == MigrationPhase::Expand && !self.gate_open(n, "release", &r.0) {
            // Production's expand waits for preproduction's soak, as its switches do.
            return;
        }
        if w.memory.busy(Subject::Node(n)) {
            return;
        }
        self.push(
            Action::Migrate { node: n, release: r.clone(), phase, resume: false },
            match phase {
                MigrationPhase::Expand => format!("{what}, once, before {}'s first switch", env.name()),
                MigrationPhase::Contract => format!("{what}, once, now that every node of {} serves it", env.name()),
            },
        );
    }

    /// Why node `n` cannot run release `r`'s migration now, if it cannot.
    fn usable_for_migration(&self, n: NodeId, r: &ReleaseId) -> Result<(), &'static str> {
        let o = &self.w.observed.nodes[n as usize];
        if self.node_failed(n) {
            Err("has failed")
        } else if !o.reachable {
            Err("does not answer")
        } else if !o.releases_installed.contains(r) {
            Err("does not have the release staged yet")
        } else {
            Ok(())
        }
    }

    /// The node that runs `env`'s migration of `r`: the policy's, else the
    /// first usable node (sites, farms and members in spec order) of `env`.
    fn migration_node(&self, env: Environment, r: &ReleaseId) -> Result<NodeId, String> {
        let fleet = self.w.fleet;
        if let Some(name) = fleet.policy.migrations.node(env) {
            let n = fleet.node_by_name(name).ok_or_else(|| format!("migration node {name} is not in the spec"))?;
            return self.usable_for_migration(n, r).map(|()| n).map_err(|why| format!("migration node {name} {why}"));
        }
        for site in fleet.sites.iter().filter(|s| s.environment == env) {
            for &f in &site.farms {
                for &n in &fleet.farms[f as usize].nodes {
                    if self.usable_for_migration(n, r).is_ok() {
                        return Ok(n);
                    }
                }
            }
        }
        Err(format!("no node of {} answers with release {r} staged", env.name()))
    }

    fn block_rollout(&mut self, cause: Cause, reason: String) {
        self.pass.blocked.push(Blocked { subject: "rollout".into(), reason, cause, until_ms: None, on: None });
    }

    fn gate_open(&self, n: NodeId, component: &str, value: &str) -> bool {
        let fleet = self.w.fleet;
        let node = &fleet.nodes[n as usize];
        if fleet.sites[node.site as usize].environment == Environment::Preproduction
            || fleet.policy.waive_preproduction_gate
        {
            return true;
        }
        self.passed.contains(&(node.profile, component, value))
    }

    fn packages_gate_open(&self, n: NodeId, atoms: &[crate::model::Atom]) -> bool {
        let fleet = self.w.fleet;
        let node = &fleet.nodes[n as usize];
        if fleet.sites[node.site as usize].environment == Environment::Preproduction
            || fleet.policy.waive_preproduction_gate
        {
            return true;
        }
        atoms.iter().all(|a| self.passed_packages.contains(&(node.profile, &*a.category, &*a.name, &*a.version)))
    }

    /// Expected seconds a farm stays out for its switch.
    fn farm_window_s(&self, f: FarmId) -> f64 {
        let e = self.w.estimates;
        let mut t = e.drain_s + e.flush_s + e.activate_s + e.health_s;
        let fleet = self.w.fleet;
        let coalesced =
            fleet.farms[f as usize].nodes.iter().map(|&n| &self.diffs[n as usize]).fold(0.0f64, |acc, d| {
                if d.needs_window() {
                    acc.max(if d.window_disruption().reboot { e.reboot_s } else { e.restart_s })
                } else {
                    acc
                }
            });
        t += coalesced;
        t
    }

    fn start_farm_windows(&mut self) {
        let w = self.w;
        let fleet = w.fleet;
        for (s, site) in fleet.sites.iter().enumerate() {
            // Largest farms first: the first upgraded farms receive every new
            // session of the site, so they should have the most room.
            let mut order = site.farms.clone();
            order.sort_by_key(|&f| std::cmp::Reverse(self.farms[f as usize].full_capacity));
            for f in order {
                let v = &self.farms[f as usize];
                let wanted = v.pending_switch || self.packages_need_farm_window(f);
                if !wanted || w.memory.farm_ops.contains_key(&f) || w.memory.failed_farms.contains_key(&f) {
                    continue;
                }
                let name = fleet.farms[f as usize].name.clone();
                if v.held_by_operator {
                    self.pass.held.push(format!("farm {name}"));
                    continue;
                }
                if let Err((cause, why, until)) = self.switch_gate_open(f) {
                    self.block_until(Subject::Farm(f), cause, why, until);
                    continue;
                }
                if !v.staged_for_switch {
                    self.block(
                        Subject::Farm(f),
                        Cause::Staging,
                        "waiting for PHP trees / releases to be staged on every node",
                    );
                    continue;
                }
                if v.node_windows > 0 {
                    self.block(Subject::Farm(f), Cause::NodeWindows, "node-level windows still open in this farm");
                    continue;
                }
                if self.closed.is_some() {
                    self.wait_for_change_window(Subject::Farm(f));
                    continue;
                }
                if let Err(why) = self.farm_capacity_ok(s as SiteId, f) {
                    self.block(Subject::Farm(f), Cause::Capacity, why);
                    continue;
                }
                self.farms_out[s] += 1;
                if self.farms[f as usize].in_service {
                    self.site_serving[s] -= self.farms[f as usize].serving_capacity;
                }
                // Later decisions of this pass must see it out.
                self.farms[f as usize].in_service = false;
                self.farms[f as usize].takes_new = false;
                let target = fleet.farm_target(f);
                self.push(
                    Action::SetFarm { farm: f, admin: Admin::Maint },
                    format!(
                        "farm {name} switches to php {} release {} as a unit: out of the LB, its sessions move to farms taking new sessions",
                        target.php, target.release
                    ),
                );
            }
        }
    }

    /// Disruptive work that node-level windows cannot do: taking any one node
    /// out would overload the rest of the farm (a small farm, or one that lost
    /// nodes). Then the whole farm goes out and its sessions move to others.
    fn packages_need_farm_window(&self, f: FarmId) -> bool {
        let w = self.w;
        let fleet = w.fleet;
        let v = &self.farms[f as usize];
        let load = w.observed.farms[f as usize].sessions as f64;
        let mut biggest = 0u64;
        for &n in &fleet.farms[f as usize].nodes {
            let d = &self.diffs[n as usize];
            if d.needs_window()
                && !self.node_failed(n)
                && !node_held(w.memory, &w.observed.nodes[n as usize], n)
                && self.packages_gate_open(n, &d.disruptive)
            {
                biggest = biggest.max(fleet.profiles[fleet.nodes[n as usize].profile as usize].capacity as u64);
            }
        }
        let remaining = v.serving_capacity.saturating_sub(biggest);
        biggest > 0 && v.node_windows == 0 && (remaining == 0 || load > fleet.policy.max_farm_load * remaining as f64)
    }

    fn farm_capacity_ok(&self, s: SiteId, f: FarmId) -> Result<(), String> {
        let w = self.w;
        let fleet = w.fleet;
        let p = &fleet.policy;
        let site = &fleet.sites[s as usize];
        if self.farms_out[s as usize] >= p.max_farms_down {
            return Err(format!(
                "{} farm(s) of site {} already out (max_farms_down {})",
                self.farms_out[s as usize], site.name, p.max_farms_down
            ));
        }
        let v = &self.farms[f as usize];
        let others_serving = site.farms.iter().any(|&g| g != f && self.farms[g as usize].in_service);
        if !others_serving {
            return Err(format!("the last serving farm of site {} is never taken out", site.name));
        }
        let remaining = self.site_serving[s as usize] - if v.in_service { v.serving_capacity } else { 0 };
        let floor = site.capacity_floor * self.site_full[s as usize] as f64;
        if (remaining as f64) < floor {
            return Err(format!(
                "site {} would serve {remaining} of {} sessions capacity, below its floor",
                site.name, self.site_full[s as usize]
            ));
        }
        // Where this farm's sessions and the new ones go while it is out.
        let receivers: Vec<FarmId> = site
            .farms
            .iter()
            .copied()
            .filter(|&g| g != f && self.farms[g as usize].takes_new && !w.memory.farm_ops.contains_key(&g))
            .collect();
        if receivers.is_empty() {
            return Err("no other farm takes new sessions to receive this farm's sessions".into());
        }
        // HAProxy spreads displaced and new sessions over the receivers by
        // weight: check each receiver's share against its own capacity.
        let moving = w.observed.farms[f as usize].sessions as f64;
        let arriving = w.observed.sites[s as usize].arrivals_per_s * self.farm_window_s(f);
        let total_weight: f64 = receivers.iter().map(|&g| w.observed.farms[g as usize].lb.weight as f64).sum();
        for &g in &receivers {
            let share = (moving + arriving) * w.observed.farms[g as usize].lb.weight as f64 / total_weight.max(1.0);
            let load = w.observed.farms[g as usize].sessions as f64;
            let limit = p.max_farm_load * self.farms[g as usize].serving_capacity as f64;
            if load + share > limit {
                return Err(format!(
                    "farm {} would carry {:.0} sessions (now {load:.0}, +{share:.0} moved or new) above {limit:.0} ({}% of its capacity)",
                    fleet.farms[g as usize].name,
                    load + share,
                    (p.max_farm_load * 100.0).round()
                ));
            }
        }
        Ok(())
    }

    fn start_node_windows(&mut self) {
        let w = self.w;
        let fleet = w.fleet;
        let p = &fleet.policy;
        for (f, farm) in fleet.farms.iter().enumerate() {
            let f = f as FarmId;
            if w.memory.farm_ops.contains_key(&f) {
                continue;
            }
            let v = self.farms[f as usize].clone();
            // Coalesce: a farm about to switch takes its disruptive work in that window.
            let coalesce =
                v.pending_switch && self.switch_gate_open(f).is_ok() && !w.memory.failed_farms.contains_key(&f);
            // Held nodes are out too: with drover's windows they stay within
            // max_unavailable, so the farm keeps a node serving (a drain just
            // started still looks ready, and would not be counted otherwise).
            let held = farm.nodes.iter().filter(|&&n| node_held(w.memory, &w.observed.nodes[n as usize], n)).count();
            let mut open = v.node_windows + held as u32;
            let mut pending_before = 0u32;
            let mut serving_cap = v.serving_capacity;
            let load = w.observed.farms[f as usize].sessions as f64;
            let s = farm.site as usize;
            for &n in &farm.nodes {
                let d = &self.diffs[n as usize];
                if !d.needs_window() || self.node_failed(n) {
                    continue;
                }
                if w.memory.node_ops.contains_key(&n) {
                    pending_before += 1;
                    continue;
                }
                let node = &fleet.nodes[n as usize];
                let o = &w.observed.nodes[n as usize];
                let this_pending = pending_before;
                pending_before += 1;
                if coalesce {
                    continue;
                }
                if !o.reachable {
                    continue; // reported as unreachable, fails after the policy's timeout
                }
                if o.lb.admin != Admin::Ready {
                    self.pass.held.push(format!("node {}", node.name));
                    continue;
                }
                if this_pending >= farm.max_unavailable {
                    continue; // waits for its member-index wave
                }
                if open >= farm.max_unavailable {
                    continue;
                }
                if !self.packages_gate_open(n, &d.disruptive) {
                    // The gate opens when the last of these packages has soaked.
                    let until = d.disruptive.iter().try_fold(0u64, |t, a| {
                        Some(t.max(self.gate_opens_ms(n, &gate::package_component(&a.key()), &a.version)?))
                    });
                    self.block_until(
                        Subject::Node(n),
                        Cause::Preproduction,
                        "preproduction has not run these packages long enough",
                        until,
                    );
                    continue;
                }
                if self.closed.is_some() {
                    self.wait_for_change_window(Subject::Node(n));
                    continue;
                }
                let cap = fleet.profiles[node.profile as usize].capacity as u64;
                let after = serving_cap.saturating_sub(cap);
                if after == 0 {
                    self.block(
                        Subject::Node(n),
                        Cause::Capacity,
                        format!("last serving node of farm {}: the farm goes out as a whole instead", farm.name),
                    );
                    continue;
                }
                if load > p.max_farm_load * after as f64 {
                    self.block(
                        Subject::Node(n),
                        Cause::Capacity,
                        format!(
                            "farm {} load {load:.0} would exceed {}% of the capacity left",
                            farm.name,
                            (p.max_farm_load * 100.0).round()
                        ),
                    );
                    continue;
                }
                let site_after = self.site_serving[s].saturating_sub(cap);
                if (site_after as f64) < fleet.sites[s].capacity_floor * self.site_full[s] as f64 {
                    self.block(Subject::Node(n), Cause::Capacity, "site capacity would fall below its floor");
                    continue;
                }
                open += 1;
                serving_cap = after;
                self.site_serving[s] = site_after;
                let disruption = d.window_disruption();
                let atoms: Vec<String> = d.disruptive.iter().map(|a| a.to_string()).collect();
                let why = format!(
                    "wave {}: {} needs {}{}",
                    node.member,
                    if atoms.is_empty() { "the installed kernel".to_string() } else { atoms.join(" ") },
                    if disruption.reboot {
                        "a reboot".to_string()
                    } else {
                        format!("a restart of {}", disruption.restart.join(", "))
                    },
                    ": drain first"
                );
                self.push_wave(Action::SetNode { node: n, admin: Admin::Drain }, why, Some(node.member));
            }
        }
    }

    fn online_work(&mut self) {
        let w = self.w;
        let fleet = w.fleet;
        for n in 0..fleet.nodes.len() as NodeId {
            let in_window =
                w.memory.node_ops.contains_key(&n) || w.memory.farm_ops.contains_key(&fleet.nodes[n as usize].farm);
            if self.node_failed(n) || w.memory.busy(Subject::Node(n)) || in_window {
                continue;
            }
            let o = &w.observed.nodes[n as usize];
            if !o.reachable {
                continue;
            }
            let d = &self.diffs[n as usize];
            if !d.unfetched.is_empty() {
                self.push(
                    Action::Fetch { node: n, atoms: d.unfetched.clone() },
                    "stage binary packages ahead of the window",
                );
            } else if let Some(v) = &d.stage_php {
                self.push(
                    Action::StagePhp { node: n, version: v.clone() },
                    "stage the PHP tree ahead of the farm switch",
                );
            } else if let Some(r) = &d.stage_release {
                self.push(
                    Action::StageRelease { node: n, release: r.clone() },
                    "stage the release ahead of the farm switch",
                );
            } else if !d.online.is_empty() && self.packages_gate_open(n, &d.online) {
                self.push(
                    Action::InstallOnline { node: n, atoms: d.online.clone() },
                    "non-disruptive packages install online",
                );
            }
        }
    }

    /// Done with everything observed. A node that did not answer is not
    /// judged by what it ran when last seen (or, never seen, by its target):
    /// it keeps the fleet from `converged` instead, see `Pass::unobserved`.
    fn settled(&self) -> bool {
        let w = self.w;
        if !w.memory.in_flight.is_empty()
            || !w.memory.node_ops.is_empty()
            || !w.memory.farm_ops.is_empty()
            || !self.pass.actions.is_empty()
        {
            return false;
        }
        let nodes_ok = (0..w.fleet.nodes.len())
            .all(|n| self.node_failed(n as NodeId) || !w.observed.nodes[n].reachable || self.diffs[n].is_clean());
        let farms_ok = w.observed.farms.iter().enumerate().all(|(f, fo)| {
            w.memory.failed_farms.contains_key(&(f as FarmId))
                || self.farms[f].held_by_operator
                || (fo.lb.admin == Admin::Ready && fo.lb.weight > 0)
        });
        nodes_ok && farms_ok
    }
}

#[cfg(test)]
mod change_window_tests {
    //! Change windows in the planner: what waits outside every window, what
    //! still runs, and that a farm switch already under way completes.

    use super::*;
    use crate::observe::Health;
    use crate::sim::fleetgen::{Change, Shape, spec_text};
    use crate::sim::{Sim, SimConfig};

    const HOUR: u64 = 3_600_000;
    /// 01:00 to 05:00 UTC every day: virtual time 0 (Thursday 00:00) is outside.
    const WINDOW: &str = "    change_windows: [{ start: \"01:00\", end: \"05:00\" }]\n";

    /// A generated fleet behind on `change`, the preproduction gate waived
    /// (the gate is not what these tests look at), with `windows` as policy.
    fn fleet(change: Change, windows: &str) -> Fleet {
        let text = spec_text(&Shape { change, ..Shape::default() })
            .replace("preproduction: { soak: 10m }", "preproduction: { soak: 10m, waive_gate: true }")
            .replace("    failure_budget:", &format!("{windows}    failure_budget:"));
        let files = [crate::spec::SourceFile { path: "g.yaml".into(), text }];
        crate::spec::validate::check(&files).map_err(|d| crate::spec::diag::render(&d, &files)).unwrap()
    }

    fn initial(fleet: &Fleet) -> Observed {
        Sim::new(fleet, SimConfig::new(fleet, 1)).observe()
    }

    /// Every node has fetched its target packages and holds its target PHP
    /// tree and release: only windows remain to be opened.
    fn staged(fleet: &Fleet) -> Observed {
        let mut obs = initial(fleet);
        for (n, o) in obs.nodes.iter_mut().enumerate() {
            let t = fleet.node_target(n as NodeId);
            o.fetched = t.packages.iter().map(|a| (a.key().into(), a.version.clone())).collect();
            o.php_installed.push(t.php.clone());
            o.releases_installed.push(t.release.clone());
        }
        obs
    }

    fn plan_at(fleet: &Fleet, obs: &Observed, memory: &Memory, now_ms: u64) -> Pass {
        plan(&World { fleet, observed: obs, memory, now_ms, estimates: &Estimates::default() })
    }

    /// The farms a pass takes out of the LB (farm switches starting).
    fn farms_taken_out(pass: &Pass) -> Vec<FarmId> {
        pass.actions
            .iter()
            .filter_map(|p| match p.action {
                Action::SetFarm { farm, admin: Admin::Maint } => Some(farm),
                _ => None,
            })
            .collect()
    }

    fn takes_out(a: &Action) -> bool {
        matches!(
            a,
            Action::SetNode { admin: Admin::Drain | Admin::Maint, .. }
                | Action::SetFarm { admin: Admin::Maint, .. }
                | Action::SetFarmWeight { weight: 0, .. }
                | Action::Upgrade { .. }
                | Action::Activate { .. }
        )
    }

    #[test]
    fn outside_every_window_staging_runs_and_nothing_goes_out() {
        let fleet = fleet(Change::ALL, WINDOW);
        let memory = Memory::default();
        let pass = plan_at(&fleet, &initial(&fleet), &memory, 0);
        assert!(pass.actions.iter().any(|p| matches!(p.action, Action::Fetch { .. })), "{:#?}", pass.actions);
        assert!(!pass.actions.iter().any(|p| takes_out(&p.action)), "{:#?}", pass.actions);

        let obs = staged(&fleet);
        let pass = plan_at(&fleet, &obs, &memory, 30 * 60_000);
        let kinds: Vec<&str> = pass.actions.iter().map(|p| p.action.kind().name()).collect();
        assert!(!pass.actions.iter().any(|p| takes_out(&p.action)), "{kinds:?}");
        assert!(kinds.iter().all(|&k| k == "install_online"), "only online installs run: {kinds:?}");
        assert_eq!(kinds.len(), fleet.nodes.len(), "every node installs its non-disruptive packages");
        // Every farm waits for the window, and says when it opens.
        for farm in &fleet.farms {
            let b = pass.blocked.iter().find(|b| b.subject == format!("farm {}", farm.name));
            assert_eq!(
                b.map(|b| b.reason.as_str()),
                Some("outside change windows; next opens 1970-01-01 01:00 UTC"),
                "{:#?}",
                pass.blocked
            );
        }
        assert_eq!(pass.change_window_opens_ms, Some(HOUR));
        assert!(!pass.converged);
    }

    #[test]
    fn inside_a_window_farm_switches_start() {
        let fleet = fleet(Change::ALL, WINDOW);
        let pass = plan_at(&fleet, &staged(&fleet), &Memory::default(), HOUR);
        let out = farms_taken_out(&pass);
        // One farm per site (max_farms_down 1), every site at once.
        assert_eq!(out.len(), fleet.sites.len(), "{:#?}", pass.actions);
        assert!(!pass.blocked.iter().any(|b| b.reason.contains("change windows")), "{:#?}", pass.blocked);
        assert_eq!(pass.change_window_opens_ms, None);
        // The window's last minute still starts work; its end does not.
        let last = plan_at(&fleet, &staged(&fleet), &Memory::default(), 5 * HOUR - 1);
        assert!(last.actions.iter().any(|p| matches!(p.action, Action::SetFarm { admin: Admin::Maint, .. })));
        let closed = plan_at(&fleet, &staged(&fleet), &Memory::default(), 5 * HOUR);
        assert!(!closed.actions.iter().any(|p| takes_out(&p.action)));
        assert_eq!(closed.change_window_opens_ms, Some(25 * HOUR), "the next day's window");
    }

    #[test]
    fn disruptive_node_windows_wait_for_a_change_window() {
        let fleet = fleet(Change { disruptive_restart: true, ..Change::NONE }, WINDOW);
        let obs = staged(&fleet);
        let pass = plan_at(&fleet, &obs, &Memory::default(), 6 * HOUR);
        assert!(!pass.actions.iter().any(|p| takes_out(&p.action)), "{:#?}", pass.actions);
        // The front of each farm's member wave is reported as waiting.
        let waiting: Vec<&str> = pass
            .blocked
            .iter()
            .filter(|b| b.reason == "outside change windows; next opens 1970-01-02 01:00 UTC")
            .map(|b| b.subject.as_str())
            .collect();
        assert_eq!(waiting.len(), fleet.farms.len(), "{:#?}", pass.blocked);
        assert!(waiting.iter().all(|s| s.starts_with("node ")), "{waiting:?}");

        let pass = plan_at(&fleet, &obs, &Memory::default(), 25 * HOUR);
        let drained =
            pass.actions.iter().filter(|p| matches!(p.action, Action::SetNode { admin: Admin::Drain, .. })).count();
        assert_eq!(drained, fleet.farms.len(), "member 1 of every farm: {:#?}", pass.actions);
    }

    #[test]
    fn no_windows_means_work_starts_at_any_time() {
        let fleet = fleet(Change { disruptive_restart: true, ..Change::NONE }, "");
        assert!(fleet.policy.change_windows.is_empty());
        let pass = plan_at(&fleet, &staged(&fleet), &Memory::default(), 6 * HOUR);
        assert!(pass.actions.iter().any(|p| matches!(p.action, Action::SetNode { admin: Admin::Drain, .. })));
        assert_eq!(pass.change_window_opens_ms, None);
    }

    /// Carries out `action` on the observation as a perfect fleet would.
    fn apply(fleet: &Fleet, obs: &mut Observed, action: &Action) {
        match action {
            Action::SetFarm { farm, admin } => obs.farms[*farm as usize].lb.admin = *admin,
            Action::SetFarmWeight { farm, weight } => obs.farms[*farm as usize].lb.weight = *weight,
            Action::SetNode { node, admin } => obs.nodes[*node as usize].lb.admin = *admin,
            Action::Activate { node, .. } => {
                let t = fleet.node_target(*node);
                let o = &mut obs.nodes[*node as usize];
                o.php_active = Some(t.php.clone());
                o.release_active = Some(t.release.clone());
            }
            Action::HealthCheck { node } => obs.nodes[*node as usize].health = Health::Passing,
            _ => {}
        }
    }

    #[test]
    fn a_farm_switch_under_way_completes_after_its_window_closes() {
        let fleet = fleet(Change { release: true, ..Change::NONE }, WINDOW);
        let mut obs = staged(&fleet);
        let mut memory = Memory::default();
        // 04:59: the last minute of the window; the switches start.
        let t0 = 5 * HOUR - 60_000;
        let pass = plan_at(&fleet, &obs, &memory, t0);
        let started = farms_taken_out(&pass);
        assert!(!started.is_empty());
        for &f in &started {
            let a = Action::SetFarm { farm: f, admin: Admin::Maint };
            memory.begin(&a, t0, Some(f), obs.farms[f as usize].lb.weight);
            apply(&fleet, &mut obs, &a);
            memory.complete(&a, &Outcome::Ok, t0, Some(f));
            obs.farms[f as usize].sessions = 0;
            obs.farms[f as usize].lb.active = 0;
        }
        // The window closes; each farm under way goes on to the end of its switch.
        let mut now = 5 * HOUR;
        for _ in 0..20 {
            if memory.farm_ops.is_empty() {
                break;
            }
            let pass = plan_at(&fleet, &obs, &memory, now);
            for p in &pass.actions {
                let farm = match p.action.subject() {
                    Subject::Node(n) => fleet.nodes[n as usize].farm,
                    Subject::Farm(f) => f,
                };
                assert!(
                    started.contains(&farm) || !takes_out(&p.action),
                    "outside the window, farm {} starts {:?}",
                    fleet.farms[farm as usize].name,
                    p.action
                );
                memory.begin(&p.action, now, Some(farm), obs.farms[farm as usize].lb.weight);
                apply(&fleet, &mut obs, &p.action);
                memory.complete(&p.action, &Outcome::Ok, now, Some(farm));
            }
            now += 60_000;
        }
        assert!(memory.farm_ops.is_empty(), "a switch was left half-done: {:?}", memory.farm_ops);
        for &f in &started {
            assert_eq!(obs.farms[f as usize].lb.admin, Admin::Ready);
            for &n in &fleet.farms[f as usize].nodes {
                assert_eq!(obs.nodes[n as usize].release_active.as_ref(), Some(&fleet.node_target(n).release));
            }
        }
        // The other farms still wait for the next window.
        let pass = plan_at(&fleet, &obs, &memory, now);
        assert_eq!(pass.change_window_opens_ms, Some(25 * HOUR));
        assert!(!pass.actions.iter().any(|p| takes_out(&p.action)), "{:#?}", pass.actions);
    }
}
