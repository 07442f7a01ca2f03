//! `Memory` by stable identity: the form the journal stores, and the one a
//! memory crosses from one spec to the next in.
//!
//! In process `Memory` is keyed by position in the fleet (`NodeId`,
//! `FarmId`, profile index): the planner is hot. Positions do not survive a
//! new spec (farms or nodes reordered, added, removed), so what is persisted
//! and carried over names its objects: a farm by its site and name, a node by
//! its site, farm, name and address, a profile by name. `Named::resolve`
//! ties every entry to the object of that identity in the fleet in force; an
//! entry whose object is gone, moved to another farm or site, or answers at
//! another address is never applied to another object: it is closed and
//! reported as a `Resolution` (ARCHITECTURE.md, "Identity across specs").
//!
//! Pure: no I/O, no clock.

use std::collections::btree_map::Entry as Slot;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::memory::{
    FarmOp, FarmPhase, GateRecord, Memory, MigrationRecord, NodeOp, NodePhase, RollbackRecord, SnapshotRecord,
};
use crate::model::{Environment, FarmId, Fleet, MigrationPhase, NodeId};

/// A node as the journal names it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeRef {
    pub site: String,
    pub farm: String,
    pub name: String,
    pub address: String,
}

impl fmt::Display for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {} ({}, farm {}/{})", self.name, self.address, self.site, self.farm)
    }
}

/// A farm as the journal names it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FarmRef {
    pub site: String,
    pub name: String,
}

impl fmt::Display for FarmRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "farm {}/{}", self.site, self.name)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamedNode {
    pub node: NodeRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<NodeOp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_since: Option<u64>,
    /// drover's root filesystem snapshots kept on it (newest last).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<SnapshotRecord>,
    /// The operator's last rollback of it to a snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackRecord>,
}

impl NamedNode {
    /// `node`, with nothing recorded about it yet.
    pub fn new(node: NodeRef) -> NamedNode {
        NamedNode { node, op: None, failed: None, unreachable_since: None, snapshots: Vec::new(), rollback: None }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamedFarmOp {
    pub phase: FarmPhase,
    pub since_ms: u64,
    /// Nodes health-checked in this window, by name.
    pub checked: BTreeSet<String>,
    pub switched: bool,
    pub weight_before: u16,
    /// Nodes warmed up in this window, by name.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub warmed: BTreeSet<String>,
    /// Snapshots taken in this window, by node name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub snapshots: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamedFarm {
    pub farm: FarmRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<NamedFarmOp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedGate {
    pub profile: String,
    pub component: String,
    pub value: String,
    pub record: GateRecord,
}

/// `Memory` keyed by identity (in-flight subjects are not kept: after a
/// restart whatever ran is observed again).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Named {
    pub nodes: Vec<NamedNode>,
    pub farms: Vec<NamedFarm>,
    pub gate: Vec<NamedGate>,
    /// Release migrations: already by name (environment, release, phase).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migrations: Vec<NamedMigration>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedMigration {
    pub environment: Environment,
    pub release: String,
    pub phase: MigrationPhase,
    pub record: MigrationRecord,
}

/// What the journal held about an object that it could not carry over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "entry")]
pub enum Entry {
    /// A node window (drained, out, upgrading, ...) in this phase.
    NodeWindow {
        phase: NodePhase,
    },
    /// A farm switch in this phase (`switched`: some node already changed).
    FarmSwitch {
        phase: FarmPhase,
        switched: bool,
    },
    FailedNode {
        reason: String,
    },
    FailedFarm {
        reason: String,
    },
    /// Preproduction evidence (this many records) of a journal too old to
    /// name its profiles: collected again (the soak starts over).
    GateEvidence {
        records: usize,
    },
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::NodeWindow { phase } => write!(f, "a node window ({phase:?})"),
            Entry::FarmSwitch { phase, switched: true } => write!(f, "a farm switch ({phase:?}, nodes switched)"),
            Entry::FarmSwitch { phase, switched: false } => write!(f, "a farm switch ({phase:?}, no node switched)"),
            Entry::FailedNode { reason } => write!(f, "a failure ({reason})"),
            Entry::FailedFarm { reason } => write!(f, "a farm failure ({reason})"),
            Entry::GateEvidence { records } => write!(f, "{records} preproduction gate records"),
        }
    }
}

/// Why it could not be carried over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "why")]
pub enum Reason {
    /// No object of that name in the spec in force.
    Gone,
    /// A node of that name is now in another farm (`to`: site/farm).
    MovedFarm { to: String },
    /// A node of that name answers at another address now.
    AddressChanged { to: String },
    /// A farm of that name is now in another site.
    MovedSite { to: String },
    /// A journal of the former, position-keyed format: its operations log
    /// does not tie the entry to one object (`candidates`: the names it
    /// could be, none when the log holds no record of it).
    Untied { candidates: Vec<String> },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Gone => write!(f, "it is no longer in the spec"),
            Reason::MovedFarm { to } => write!(f, "a node of that name is now in farm {to}"),
            Reason::AddressChanged { to } => write!(f, "a node of that name is now at {to}"),
            Reason::MovedSite { to } => write!(f, "a farm of that name is now in site {to}"),
            Reason::Untied { candidates } if candidates.is_empty() => {
                write!(f, "the former journal format keyed it by position and its log does not name it")
            }
            Reason::Untied { candidates } => write!(
                f,
                "the former journal format keyed it by position and its log could mean any of {}",
                candidates.join(", ")
            ),
        }
    }
}

/// One journal entry not carried over, and what became of it. Such an entry
/// is never applied to another object: drover closes it (it acts on the
/// object no more) and, as for any server it did not put out itself, leaves
/// an LB server it finds out of service alone and reports it as held.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// The object as the journal named it (`node web3 (10.0.0.3, farm s/f)`,
    /// `farm s/f`, `profile web`, or `position N` for the former format).
    pub object: String,
    #[serde(flatten)]
    pub entry: Entry,
    #[serde(flatten)]
    pub reason: Reason,
    /// What an operator should check.
    pub advice: String,
}

impl fmt::Display for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} closed, {}; {}", self.object, self.entry, self.reason, self.advice)
    }
}

fn advice(entry: &Entry, reason: &Reason) -> String {
    let server = match reason {
        Reason::Gone | Reason::MovedFarm { .. } | Reason::MovedSite { .. } | Reason::AddressChanged { .. } => {
            "the server it was about is no longer managed under that identity"
        }
        Reason::Untied { .. } => "drover cannot tell which server it was about",
    };
    match entry {
        Entry::NodeWindow { .. } | Entry::FarmSwitch { .. } => format!(
            "{server}: drover will not touch it; check its LB server and return it to service by hand if it is \
             still out (drover reports a server it finds out of service without a window as held)"
        ),
        Entry::FailedNode { .. } | Entry::FailedFarm { .. } => {
            format!("{server}: it is observed afresh (and fails again if it still fails)")
        }
        Entry::GateEvidence { .. } => "the evidence is collected again (the soak starts over)".into(),
    }
}

impl Resolution {
    pub fn new(object: impl Into<String>, entry: Entry, reason: Reason) -> Resolution {
        let advice = advice(&entry, &reason);
        Resolution { object: object.into(), entry, reason, advice }
    }
}

impl Named {
    /// `memory` (keyed by position in `fleet`) by identity. Keys outside
    /// `fleet` (a memory of another fleet) are left out, never a panic.
    pub fn of(memory: &Memory, fleet: &Fleet) -> Named {
        let node_ref = |n: NodeId| {
            let node = fleet.nodes.get(n as usize)?;
            let farm = fleet.farms.get(node.farm as usize)?;
            let site = fleet.sites.get(node.site as usize)?;
            Some(NodeRef {
                site: site.name.clone(),
                farm: farm.name.clone(),
                name: node.name.clone(),
                address: node.address.clone(),
            })
        };
        let mut nodes: BTreeMap<NodeId, NamedNode> = BTreeMap::new();
        fn entry(
            nodes: &mut BTreeMap<NodeId, NamedNode>,
            n: NodeId,
            r: impl Fn(NodeId) -> Option<NodeRef>,
        ) -> Option<&mut NamedNode> {
            match nodes.entry(n) {
                Slot::Occupied(e) => Some(e.into_mut()),
                Slot::Vacant(e) => Some(e.insert(NamedNode::new(r(n)?))),
            }
        }
        for (&n, op) in &memory.node_ops {
            if let Some(e) = entry(&mut nodes, n, node_ref) {
                e.op = Some(op.clone());
            }
        }
        for (&n, why) in &memory.failed_nodes {
            if let Some(e) = entry(&mut nodes, n, node_ref) {
                e.failed = Some(why.clone());
            }
        }
        for (&n, &t) in &memory.unreachable_since {
            if let Some(e) = entry(&mut nodes, n, node_ref) {
                e.unreachable_since = Some(t);
            }
        }
        for (&n, kept) in &memory.snapshots {
            if let Some(e) = entry(&mut nodes, n, node_ref) {
                e.snapshots = kept.clone();
            }
        }
        for (&n, r) in &memory.rollbacks {
            if let Some(e) = entry(&mut nodes, n, node_ref) {
                e.rollback = Some(r.clone());
            }
        }
        let farm_ref = |f: FarmId| {
            let farm = fleet.farms.get(f as usize)?;
            Some(FarmRef { site: fleet.sites.get(farm.site as usize)?.name.clone(), name: farm.name.clone() })
        };
        let mut farms: BTreeMap<FarmId, NamedFarm> = BTreeMap::new();
        fn farm_entry(
            farms: &mut BTreeMap<FarmId, NamedFarm>,
            f: FarmId,
            r: impl Fn(FarmId) -> Option<FarmRef>,
        ) -> Option<&mut NamedFarm> {
            match farms.entry(f) {
                Slot::Occupied(e) => Some(e.into_mut()),
                Slot::Vacant(e) => Some(e.insert(NamedFarm { farm: r(f)?, op: None, failed: None })),
            }
        }
        for (&f, op) in &memory.farm_ops {
            let name = |n: &NodeId| fleet.nodes.get(*n as usize).map(|n| n.name.clone());
            let checked = op.checked.iter().filter_map(name).collect();
            let warmed = op.warmed.iter().filter_map(name).collect();
            let snapshots = op.snapshots.iter().filter_map(|(n, s)| Some((name(n)?, s.clone()))).collect();
            if let Some(e) = farm_entry(&mut farms, f, farm_ref) {
                e.op = Some(NamedFarmOp {
                    phase: op.phase,
                    since_ms: op.since_ms,
                    checked,
                    switched: op.switched,
                    weight_before: op.weight_before,
                    warmed,
                    snapshots,
                });
            }
        }
        for (&f, why) in &memory.failed_farms {
            if let Some(e) = farm_entry(&mut farms, f, farm_ref) {
                e.failed = Some(why.clone());
            }
        }
        let gate = memory
            .gate
            .iter()
            .filter_map(|((p, c, v), r)| {
                Some(NamedGate {
                    profile: fleet.profiles.get(*p as usize)?.name.clone(),
                    component: c.clone(),
                    value: v.clone(),
                    record: r.clone(),
                })
            })
            .collect();
        let migrations = memory
            .migrations
            .iter()
            .map(|((environment, release, phase), record)| NamedMigration {
                environment: *environment,
                release: release.clone(),
                phase: *phase,
                record: record.clone(),
            })
            .collect();
        Named { nodes: nodes.into_values().collect(), farms: farms.into_values().collect(), gate, migrations }
    }

    /// This memory in `fleet`: every entry tied to the object of the same
    /// identity; those that cannot be are reported, not applied.
    /// Unreachable-since times and gate evidence of objects that are gone
    /// or changed are observations, not operations: collected again,
    /// without a report.
    pub fn resolve(&self, fleet: &Fleet) -> (Memory, Vec<Resolution>) {
        let mut m = Memory::default();
        let mut out = Vec::new();
        let node_id: BTreeMap<&str, NodeId> =
            fleet.nodes.iter().enumerate().map(|(i, n)| (n.name.as_str(), i as NodeId)).collect();
        let farm_id: BTreeMap<&str, FarmId> =
            fleet.farms.iter().enumerate().map(|(i, f)| (f.name.as_str(), i as FarmId)).collect();
        for e in &self.nodes {
            let now = node_id.get(e.node.name.as_str()).map(|&n| (n, &fleet.nodes[n as usize]));
            let reason = match now {
                None => Some(Reason::Gone),
                Some((_, n)) => {
                    let farm = &fleet.farms[n.farm as usize];
                    let site = &fleet.sites[n.site as usize].name;
                    if farm.name != e.node.farm || *site != e.node.site {
                        Some(Reason::MovedFarm { to: format!("{site}/{}", farm.name) })
                    } else if n.address != e.node.address {
                        Some(Reason::AddressChanged { to: n.address.clone() })
                    } else {
                        None
                    }
                }
            };
            match (reason, now) {
                (None, Some((id, _))) => {
                    if let Some(op) = &e.op {
                        m.node_ops.insert(id, op.clone());
                    }
                    if let Some(f) = &e.failed {
                        m.failed_nodes.insert(id, f.clone());
                    }
                    if let Some(t) = e.unreachable_since {
                        m.unreachable_since.insert(id, t);
                    }
                    if !e.snapshots.is_empty() {
                        m.snapshots.insert(id, e.snapshots.clone());
                    }
                    if let Some(r) = &e.rollback {
                        m.rollbacks.insert(id, r.clone());
                    }
                }
                (reason, _) => {
                    let reason = reason.unwrap_or(Reason::Gone);
                    if let Some(op) = &e.op {
                        out.push(Resolution::new(
                            e.node.to_string(),
                            Entry::NodeWindow { phase: op.phase },
                            reason.clone(),
                        ));
                    }
                    if let Some(f) = &e.failed {
                        out.push(Resolution::new(e.node.to_string(), Entry::FailedNode { reason: f.clone() }, reason));
                    }
                }
            }
        }
        for e in &self.farms {
            let now = farm_id.get(e.farm.name.as_str()).copied();
            let reason = match now {
                None => Some(Reason::Gone),
                Some(f) => {
                    let site = &fleet.sites[fleet.farms[f as usize].site as usize].name;
                    (*site != e.farm.site).then(|| Reason::MovedSite { to: site.clone() })
                }
            };
            match (reason, now) {
                (None, Some(f)) => {
                    if let Some(op) = &e.op {
                        // Only nodes of this farm count as checked in its window.
                        let members = &fleet.farms[f as usize].nodes;
                        let member =
                            |name: &String| node_id.get(name.as_str()).copied().filter(|n| members.contains(n));
                        m.farm_ops.insert(
                            f,
                            FarmOp {
                                phase: op.phase,
                                since_ms: op.since_ms,
                                checked: op.checked.iter().filter_map(member).collect(),
                                switched: op.switched,
                                weight_before: op.weight_before,
                                warmed: op.warmed.iter().filter_map(member).collect(),
                                snapshots: op
                                    .snapshots
                                    .iter()
                                    .filter_map(|(n, s)| Some((member(n)?, s.clone())))
                                    .collect(),
                            },
                        );
                    }
                    if let Some(why) = &e.failed {
                        m.failed_farms.insert(f, why.clone());
                    }
                }
                (reason, _) => {
                    let reason = reason.unwrap_or(Reason::Gone);
                    if let Some(op) = &e.op {
                        out.push(Resolution::new(
                            e.farm.to_string(),
                            Entry::FarmSwitch { phase: op.phase, switched: op.switched },
                            reason.clone(),
                        ));
                    }
                    if let Some(why) = &e.failed {
                        out.push(Resolution::new(
                            e.farm.to_string(),
                            Entry::FailedFarm { reason: why.clone() },
                            reason,
                        ));
                    }
                }
            }
        }
        for g in &self.gate {
            if let Some(p) = fleet.profiles.iter().position(|p| p.name == g.profile) {
                m.gate.insert((p as u32, g.component.clone(), g.value.clone()), g.record.clone());
            }
        }
        // Migrations are about an environment's database, not about an
        // object of the spec: they always carry over.
        for r in &self.migrations {
            m.migrations.insert((r.environment, r.release.clone(), r.phase), r.record.clone());
        }
        (m, out)
    }
}

/// Carries `memory` from the fleet `old` to `new` by identity (a new spec
/// in process): what cannot follow its object is reported.
pub fn carry(memory: &Memory, old: &Fleet, new: &Fleet) -> (Memory, Vec<Resolution>) {
    let (mut m, out) = Named::of(memory, old).resolve(new);
    // Nothing runs across a retarget; what did is observed again.
    m.in_flight.clear();
    (m, out)
}
