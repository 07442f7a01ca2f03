//! What the reconciler remembers between passes and across crashes: the
//! operations it has under way (which node it drained and why, which farm is
//! mid-switch), the nodes that failed, preproduction gate evidence, and which
//! actions are in flight. The journal persists exactly this.
//!
//! `begin` is called (and persisted) before an action starts, `complete` when
//! it ends: write-ahead, so a restart knows what may have half-happened.
//! Pure state transitions: no I/O, time comes in as an argument.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::action::{Action, Outcome, Subject};
use crate::model::{Environment, FarmId, MigrationPhase, NodeId};
use crate::observe::Admin;

/// Where a node-level window stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodePhase {
    /// Set to drain; waiting for active requests to reach zero (or the timeout).
    Draining,
    /// In maintenance, nothing disruptive done yet.
    Out,
    /// Disruptive install + restart/reboot started.
    Upgrading,
    /// Health check started or passed (`healthy`).
    Checking,
    /// Being put back to ready.
    Returning,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeOp {
    pub phase: NodePhase,
    /// When the current phase began (ms).
    pub since_ms: u64,
    pub healthy: bool,
    /// The root filesystem snapshot taken in this window (before its upgrade).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

/// Where a farm-level switch stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FarmPhase {
    /// Pseudo-server in maint; waiting for the farm's requests to finish.
    Leaving,
    /// memcached flush started.
    Flushing,
    /// Flushed: nodes upgrade (coalesced work), switch, and are health-checked.
    Working,
    /// Back to ready (and weight 100).
    Returning,
    /// The switch failed before any node changed: back to ready, unchanged.
    Aborting,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FarmOp {
    pub phase: FarmPhase,
    pub since_ms: u64,
    /// Nodes health-checked since their last change in this window.
    pub checked: BTreeSet<NodeId>,
    /// Some node of the farm has switched (the window can no longer be aborted).
    pub switched: bool,
    /// Weight the pseudo-server had before (restored on abort).
    pub weight_before: u16,
    /// Nodes warmed up since their last change in this window.
    #[serde(default)]
    pub warmed: BTreeSet<NodeId>,
    /// Snapshots taken in this window before a node's coalesced upgrade.
    #[serde(default)]
    pub snapshots: BTreeMap<NodeId, String>,
}

impl FarmOp {
    pub fn new(phase: FarmPhase, since_ms: u64, weight_before: u16) -> FarmOp {
        FarmOp {
            phase,
            since_ms,
            checked: BTreeSet::new(),
            switched: false,
            weight_before,
            warmed: BTreeSet::new(),
            snapshots: BTreeMap::new(),
        }
    }
}

/// Which migration a journal record is about: an environment's run of a
/// release's expand or contract (each runs once per environment).
pub type MigrationKey = (Environment, String, MigrationPhase);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "detail")]
pub enum MigrationState {
    /// Begun (journaled before the hook started), not ended.
    Running,
    Done,
    /// The hook failed: the release stops in that environment (counts
    /// against the failure budget).
    Failed(String),
    /// Interrupted (drover restarted during the run) and the hook's
    /// `status` does not say it completed, nor that it did not apply: held
    /// for an operator; asked again after a back-off.
    Unknown(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationRecord {
    pub state: MigrationState,
    /// The node that ran (or runs) it, by name.
    pub node: String,
    /// When the state began (ms).
    pub since_ms: u64,
}

/// Snapshot records kept per node in the journal (the node keeps its
/// profile's `keep`; the journal a little history beyond).
pub const SNAPSHOT_RECORDS: usize = 100;

/// How a resumed migration's failure starts when the hook's `status`
/// answered neither 0 (completed) nor 3 (not applied).
pub const STATUS_UNKNOWN: &str = "status:";

/// A root filesystem snapshot drover took on a node (newest last).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub name: String,
    pub taken_ms: u64,
}

/// An operator's rollback of a node to one of its snapshots
/// (`drover rollback-node`): journaled before it starts, shown in status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackRecord {
    pub snapshot: String,
    /// When the command began (ms).
    pub at_ms: u64,
    pub state: RollbackState,
    /// When the state last changed (ms).
    pub since_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "detail")]
pub enum RollbackState {
    /// Journaled, the node's rollback command not yet known to have ended.
    Started,
    /// The snapshot is set to become the root (what the node's tool said);
    /// the reboot that makes it so is pending.
    RebootPending(String),
    /// The node came back from the reboot on the snapshot.
    Done,
    /// Refused by the node or failed (why).
    Failed(String),
}

impl RollbackRecord {
    /// One line for status: "rolled back to drover-… at …, reboot pending".
    pub fn line(&self, fmt_ms: impl Fn(u64) -> String) -> String {
        let state = match &self.state {
            RollbackState::Started => "started, not known to have ended".to_string(),
            RollbackState::RebootPending(_) => "reboot pending".to_string(),
            RollbackState::Done => format!("reboot done {}", fmt_ms(self.since_ms)),
            RollbackState::Failed(why) => format!("FAILED: {why}"),
        };
        format!("rolled back to {} at {}, {state}", self.snapshot, fmt_ms(self.at_ms))
    }
}

/// Preproduction evidence: since when all preproduction nodes of a profile
/// run a value healthy; `passed` once that lasted the soak time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateRecord {
    pub since_ms: u64,
    pub passed: bool,
}

/// (profile, component such as `pkg:dev-libs/openssl`, `php`, `release`, value)
pub type GateKey = (u32, String, String);

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    pub node_ops: BTreeMap<NodeId, NodeOp>,
    pub farm_ops: BTreeMap<FarmId, FarmOp>,
    pub failed_nodes: BTreeMap<NodeId, String>,
    pub failed_farms: BTreeMap<FarmId, String>,
    /// A list of pairs in JSON (its keys are tuples).
    #[serde(with = "pairs")]
    pub gate: BTreeMap<GateKey, GateRecord>,
    /// Actions started and not yet completed. Cleared on restart: whatever
    /// they did is re-observed.
    pub in_flight: BTreeSet<Subject>,
    /// Since when a node outside any window has not answered.
    pub unreachable_since: BTreeMap<NodeId, u64>,
    /// Release migrations begun, done, failed or interrupted, per environment.
    #[serde(with = "pairs", default)]
    pub migrations: BTreeMap<MigrationKey, MigrationRecord>,
    /// Snapshots drover took and keeps per node (newest last).
    #[serde(default)]
    pub snapshots: BTreeMap<NodeId, Vec<SnapshotRecord>>,
    /// The last operator rollback of each node (`drover rollback-node`).
    #[serde(default)]
    pub rollbacks: BTreeMap<NodeId, RollbackRecord>,
}

impl Memory {
    pub fn failures(&self) -> usize {
        self.failed_nodes.len()
            + self.failed_farms.len()
            + self.migrations.values().filter(|r| matches!(r.state, MigrationState::Failed(_))).count()
    }

    pub fn migration(&self, env: Environment, release: &str, phase: MigrationPhase) -> Option<&MigrationRecord> {
        self.migrations.get(&(env, release.to_string(), phase))
    }

    pub fn halted(&self, budget: u32) -> bool {
        self.failures() > budget as usize
    }

    pub fn busy(&self, s: Subject) -> bool {
        self.in_flight.contains(&s)
    }

    /// Notes which nodes stopped answering, and since when (from one observation).
    pub fn observe(&mut self, obs: &crate::observe::Observed, now_ms: u64) {
        for (n, o) in obs.nodes.iter().enumerate() {
            let n = n as NodeId;
            if o.reachable {
                self.unreachable_since.remove(&n);
            } else {
                self.unreachable_since.entry(n).or_insert(now_ms);
            }
        }
    }

    /// This memory for another fleet (a new spec with nodes, farms or
    /// profiles added, removed or reordered): every entry follows its node,
    /// farm or profile by name; entries of those that are gone are dropped
    /// (drover no longer manages them).
    pub fn remap(&self, old: &crate::model::Fleet, new: &crate::model::Fleet) -> Memory {
        let node = |n: &NodeId| {
            let name = &old.nodes.get(*n as usize)?.name;
            new.nodes.iter().position(|m| m.name == *name).map(|i| i as NodeId)
        };
        let farm = |f: &FarmId| {
            let name = &old.farms.get(*f as usize)?.name;
            new.farms.iter().position(|m| m.name == *name).map(|i| i as FarmId)
        };
        let profile = |p: &u32| {
            let name = &old.profiles.get(*p as usize)?.name;
            new.profiles.iter().position(|m| m.name == *name).map(|i| i as u32)
        };
        let subject = |s: &Subject| match s {
            Subject::Node(n) => node(n).map(Subject::Node),
            Subject::Farm(f) => farm(f).map(Subject::Farm),
        };
        Memory {
            node_ops: self.node_ops.iter().filter_map(|(n, op)| Some((node(n)?, op.clone()))).collect(),
            farm_ops: self
                .farm_ops
                .iter()
                .filter_map(|(f, op)| {
                    let mut op = op.clone();
                    op.checked = op.checked.iter().filter_map(node).collect();
                    op.warmed = op.warmed.iter().filter_map(node).collect();
                    op.snapshots = op.snapshots.iter().filter_map(|(n, s)| Some((node(n)?, s.clone()))).collect();
                    Some((farm(f)?, op))
                })
                .collect(),
            failed_nodes: self.failed_nodes.iter().filter_map(|(n, e)| Some((node(n)?, e.clone()))).collect(),
            failed_farms: self.failed_farms.iter().filter_map(|(f, e)| Some((farm(f)?, e.clone()))).collect(),
            gate: self
                .gate
                .iter()
                .filter_map(|((p, c, v), r)| Some(((profile(p)?, c.clone(), v.clone()), r.clone())))
                .collect(),
            in_flight: self.in_flight.iter().filter_map(subject).collect(),
            unreachable_since: self.unreachable_since.iter().filter_map(|(n, t)| Some((node(n)?, *t))).collect(),
            migrations: self.migrations.clone(),
            snapshots: self.snapshots.iter().filter_map(|(n, v)| Some((node(n)?, v.clone()))).collect(),
            rollbacks: self.rollbacks.iter().filter_map(|(n, r)| Some((node(n)?, r.clone()))).collect(),
        }
    }

    /// After a restart nothing of ours is running any more.
    pub fn restarted(&mut self) {
        self.in_flight.clear();
    }

    /// The snapshot taken before node `n`'s upgrade in its open window
    /// (node window, or its farm's), if any.
    pub fn window_snapshot(&self, n: NodeId, farm: Option<FarmId>) -> Option<&str> {
        self.node_ops.get(&n).and_then(|op| op.snapshot.as_deref()).or_else(|| {
            farm.and_then(|f| self.farm_ops.get(&f)).and_then(|op| op.snapshots.get(&n)).map(|s| s.as_str())
        })
    }

    /// Records that a migration starts now on node `node` (write-ahead,
    /// beside `begin`): from here a crash is answered by the hook's `status`.
    pub fn begin_migration(&mut self, env: Environment, release: &str, phase: MigrationPhase, node: &str, now_ms: u64) {
        let record = MigrationRecord { state: MigrationState::Running, node: node.to_string(), since_ms: now_ms };
        self.migrations.insert((env, release.to_string(), phase), record);
    }

    /// Records how a migration ended. One whose outcome is unknown
    /// (`Failed("status: …")`: a resumed one's `status` answer was neither
    /// "completed" nor "not applied", or the executor lost sight of the run)
    /// is `Unknown`: held, its status asked again.
    pub fn complete_migration(
        &mut self,
        env: Environment,
        release: &str,
        phase: MigrationPhase,
        outcome: &Outcome,
        now_ms: u64,
    ) {
        let Some(r) = self.migrations.get_mut(&(env, release.to_string(), phase)) else {
            return;
        };
        r.since_ms = now_ms;
        r.state = match outcome {
            Outcome::Ok => MigrationState::Done,
            Outcome::Failed(e) if e.starts_with(STATUS_UNKNOWN) => MigrationState::Unknown(e.clone()),
            Outcome::Failed(e) => MigrationState::Failed(e.clone()),
        };
    }

    /// Records that `action` starts now (write-ahead).
    /// `farm` is the node's farm for node actions; `farm_weight` the farm's
    /// current pseudo-server weight (restored if a switch aborts).
    pub fn begin(&mut self, action: &Action, now_ms: u64, farm: Option<FarmId>, farm_weight: u16) {
        self.in_flight.insert(action.subject());
        let set_node = |m: &mut Memory, n: NodeId, phase: NodePhase| {
            let op = m.node_ops.entry(n).or_insert(NodeOp { phase, since_ms: now_ms, healthy: false, snapshot: None });
            if op.phase != phase {
                op.phase = phase;
                op.since_ms = now_ms;
            }
        };
        match action {
            Action::SetNode { node, admin: Admin::Drain } => set_node(self, *node, NodePhase::Draining),
            Action::SetNode { node, admin: Admin::Maint } if self.node_ops.contains_key(node) => {
                set_node(self, *node, NodePhase::Out)
            }
            Action::SetNode { node, admin: Admin::Ready } if self.node_ops.contains_key(node) => {
                set_node(self, *node, NodePhase::Returning)
            }
            Action::Upgrade { node, .. } if self.node_ops.contains_key(node) => {
                set_node(self, *node, NodePhase::Upgrading)
            }
            Action::HealthCheck { node } if self.node_ops.contains_key(node) => {
                set_node(self, *node, NodePhase::Checking)
            }
            Action::Activate { .. } => {
                if let Some(op) = farm.and_then(|f| self.farm_ops.get_mut(&f)) {
                    op.switched = true;
                }
            }
            Action::SetFarm { farm, admin: Admin::Maint } => {
                self.farm_ops.entry(*farm).or_insert(FarmOp::new(FarmPhase::Leaving, now_ms, farm_weight));
            }
            Action::SetFarm { farm, admin: Admin::Ready } => {
                if let Some(op) = self.farm_ops.get_mut(farm)
                    && op.phase != FarmPhase::Aborting
                {
                    op.phase = FarmPhase::Returning;
                    op.since_ms = now_ms;
                }
            }
            Action::FlushCache { farm } => {
                if let Some(op) = self.farm_ops.get_mut(farm) {
                    op.phase = FarmPhase::Flushing;
                    op.since_ms = now_ms;
                }
            }
            _ => {}
        }
    }

    /// Records that `action` ended with `outcome`. `farm` is the node's farm
    /// for node actions (used to keep farm windows up to date).
    pub fn complete(&mut self, action: &Action, outcome: &Outcome, now_ms: u64, farm: Option<FarmId>) {
        self.in_flight.remove(&action.subject());
        let farm_op = farm.and_then(|f| self.farm_ops.get_mut(&f).map(|op| (f, op)));
        match (action, outcome) {
            (Action::MarkFailed { node, reason }, _) => {
                self.node_ops.remove(node);
                self.failed_nodes.insert(*node, reason.clone());
            }
            (Action::SetNode { node, admin: Admin::Ready }, Outcome::Ok) => {
                if self.node_ops.get(node).is_some_and(|op| op.phase == NodePhase::Returning) {
                    self.node_ops.remove(node);
                }
            }
            (Action::HealthCheck { node }, Outcome::Ok) => {
                if let Some((_, op)) = farm_op {
                    op.checked.insert(*node);
                } else if let Some(op) = self.node_ops.get_mut(node) {
                    op.healthy = true;
                }
            }
            (Action::Warmup { node }, Outcome::Ok) => {
                if let Some((_, op)) = farm_op {
                    op.warmed.insert(*node);
                }
            }
            (Action::Upgrade { node, .. } | Action::Activate { node, .. }, Outcome::Ok) => {
                if let Some((_, op)) = farm_op {
                    op.checked.remove(node);
                    op.warmed.remove(node);
                }
            }
            (Action::Snapshot { node, name }, Outcome::Ok) => {
                if let Some(op) = self.node_ops.get_mut(node) {
                    op.snapshot = Some(name.clone());
                } else if let Some((_, op)) = farm_op {
                    op.snapshots.insert(*node, name.clone());
                }
                let kept = self.snapshots.entry(*node).or_default();
                kept.retain(|r| r.name != *name);
                kept.push(SnapshotRecord { name: name.clone(), taken_ms: now_ms });
                let over = kept.len().saturating_sub(SNAPSHOT_RECORDS);
                kept.drain(..over);
            }
            (Action::FlushCache { farm }, Outcome::Ok) => {
                if let Some(op) = self.farm_ops.get_mut(farm) {
                    op.phase = FarmPhase::Working;
                    op.since_ms = now_ms;
                }
            }
            (Action::FlushCache { farm }, Outcome::Failed(e)) => {
                self.failed_farms.insert(*farm, format!("memcached flush failed: {e}"));
                if let Some(op) = self.farm_ops.get_mut(farm) {
                    op.phase = FarmPhase::Aborting;
                    op.since_ms = now_ms;
                }
            }
            (Action::SetFarm { farm, admin: Admin::Ready }, Outcome::Ok) => {
                self.farm_ops.remove(farm);
            }
            // A node-level step failed: the node stays out and is reported,
            // with the snapshot to roll back to when one was taken first.
            (
                Action::Upgrade { node, .. }
                | Action::Activate { node, .. }
                | Action::HealthCheck { node }
                | Action::Warmup { node }
                | Action::Snapshot { node, .. },
                Outcome::Failed(e),
            ) => {
                let snapshot = self.window_snapshot(*node, farm).map(str::to_string);
                self.node_ops.remove(node);
                let mut why = format!("{}: {e}", action.kind().name());
                if let (Action::Upgrade { .. }, Some(s)) = (action, snapshot) {
                    why.push_str(&format!(
                        "; snapshot {s} was taken before it (roll back: drover rollback-node <node> --snapshot {s})"
                    ));
                }
                self.failed_nodes.insert(*node, why);
            }
            // Staging and LB steps that fail are retried on a later pass;
            // an LB that keeps refusing shows up as a blocked rollout.
            _ => {}
        }
    }
}

/// A map with non-string keys as a list of `[key, value]` pairs (JSON).
mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(m: &BTreeMap<K, V>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter())
    }

    pub fn deserialize<'de, K, V, D>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::fleetgen::{Shape, fleet};

    #[test]
    fn a_migration_whose_outcome_is_unknown_is_held_not_failed() {
        let (env, phase) = (Environment::Production, MigrationPhase::Expand);
        let state = |outcome: Outcome| {
            let mut m = Memory::default();
            m.begin_migration(env, "r1", phase, "web1", 1);
            m.complete_migration(env, "r1", phase, &outcome, 2);
            (m.migration(env, "r1", phase).unwrap().state.clone(), m.failures())
        };
        assert_eq!(state(Outcome::Ok), (MigrationState::Done, 0));
        // The hook exited non-zero: failed, and it counts against the budget.
        let failed = Outcome::Failed("node web1: `…/bin/migrate expand` exited with 1: boom".into());
        assert!(matches!(state(failed), (MigrationState::Failed(_), 1)));
        // The connection dropped while it ran (first run or resumed): unknown,
        // not a failure; the planner asks the hook's status next.
        let lost = Outcome::Failed(format!("{STATUS_UNKNOWN} node web1: connection lost during `…`"));
        assert!(matches!(state(lost), (MigrationState::Unknown(e), 0) if e.contains("connection lost")));
    }

    #[test]
    fn remap_follows_nodes_and_farms_by_name_and_drops_the_gone() {
        let small = fleet(&Shape { farms_per_site: 2, capacity_floor: 0.3, ..Shape::default() }).unwrap();
        let big = fleet(&Shape { farms_per_site: 3, capacity_floor: 0.3, ..Shape::default() }).unwrap();
        assert!(small.same_topology(&small.clone()));
        assert!(!small.same_topology(&big));
        let id = |f: &crate::model::Fleet, name: &str| f.nodes.iter().position(|n| n.name == name).unwrap() as NodeId;
        let farm = |f: &crate::model::Fleet, name: &str| f.farms.iter().position(|n| n.name == name).unwrap() as FarmId;
        // In the big fleet s0 has a third farm: s1's nodes move to other ids.
        let n = id(&small, "s1-f1-n002");
        assert_ne!(n, id(&big, "s1-f1-n002"));
        let mut m = Memory::default();
        m.node_ops.insert(n, NodeOp { phase: NodePhase::Out, since_ms: 5, healthy: false, snapshot: None });
        m.farm_ops.insert(
            farm(&small, "s1-f0"),
            FarmOp {
                phase: FarmPhase::Working,
                since_ms: 7,
                checked: [id(&small, "s1-f0-n001")].into(),
                switched: true,
                ..FarmOp::new(FarmPhase::Working, 7, 100)
            },
        );
        m.failed_nodes.insert(id(&small, "s0-f0-n001"), "emerge exited 1".into());
        m.in_flight.insert(Subject::Node(n));
        let there = m.remap(&small, &big);
        assert_eq!(there.node_ops[&id(&big, "s1-f1-n002")].phase, NodePhase::Out);
        let op = &there.farm_ops[&farm(&big, "s1-f0")];
        assert!(op.checked.contains(&id(&big, "s1-f0-n001")) && op.switched);
        assert!(there.failed_nodes.contains_key(&id(&big, "s0-f0-n001")));
        assert!(there.in_flight.contains(&Subject::Node(id(&big, "s1-f1-n002"))));
        // And back: s0-f2 does not exist in the small fleet; its entries go.
        let mut m2 = there.clone();
        m2.node_ops.insert(
            id(&big, "s0-f2-n001"),
            NodeOp { phase: NodePhase::Draining, since_ms: 1, healthy: false, snapshot: None },
        );
        let back = m2.remap(&big, &small);
        assert_eq!(back.node_ops.len(), 1);
        assert_eq!(back, m);
    }
}
