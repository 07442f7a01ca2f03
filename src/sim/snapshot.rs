//! A snapshot of a simulated world driven from outside (`Driver::External`,
//! the world of `live::LiveSim`): everything a real fleet would hold and
//! everything the simulation needs to go on exactly as if it had not
//! stopped: virtual time, the event queue with its sequence numbers (the
//! order of events at one instant), the three random streams, nodes, farms
//! and HAProxy state, sessions, actions under way in the world and outcomes
//! not yet collected, the independent checker, counters. Restoring a
//! snapshot and continuing is bit for bit the same run as not stopping.
//!
//! Not in it: the built-in reconciler's state (its journal, incarnation,
//! wake-ups, diff cache, serial batches, progress): a reconciler is not part
//! of the world, and the one that drives a live world keeps its own journal.
//!
//! The world refers to nodes, farms and sites by their position in the spec,
//! so a snapshot records the topology it was made for (every site, farm and
//! node by name, a node also by address, in order) and is restored only
//! onto exactly that topology. The file is JSON, versioned (`FORMAT`); a
//! damaged file, a newer format or another topology is refused with a
//! message naming the file, never guessed at.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::rng::Rng;
use super::{Driver, Ev, InFlight, NONE_SEEN, Releases, Session, Sim, SimConfig, SimFarm, SimNode, Started, Strategy};
use crate::diff::Disruption;
use crate::invariants::Checker;
use crate::model::{Atom, FarmId, Fleet, MigrationPhase, NodeId, PhpVersion, ReleaseId, SiteId};
use crate::observe::{Admin, Health, Str};
use crate::plan::{Action, Outcome};

/// The snapshot format this drover writes and reads.
pub const FORMAT: u32 = 1;

/// The whole simulated world at one virtual instant.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Snapshot {
    /// `FORMAT` when written.
    pub format: u32,
    /// The drover version that wrote it (for people; not checked).
    pub written_by: String,
    /// The spec's topology the world was made for.
    pub topology: Topology,
    /// The world's settings (seed, durations, traffic, faults).
    pub cfg: SimConfig,
    /// Virtual time, ms.
    pub now_ms: u64,
    seq: u64,
    /// Pending events in the order they run, each `[instant - previous
    /// instant, sequence, kind, a, b]` (`SEv::code`): the world has a
    /// hundred thousand and more, and this is most of the file.
    queue: Vec<[u64; 5]>,
    rng: Rng,
    fault_rng: Rng,
    traffic_rng: Rng,
    nodes: Vec<SNode>,
    farms: Vec<SFarm>,
    sessions: Vec<SSession>,
    free_sessions: Vec<u32>,
    /// Every release met, in index order (the ranks follow from them).
    releases: Vec<String>,
    /// Actions under way in the world, by id.
    in_flight: Vec<(u64, SInFlight)>,
    /// Ended actions whose outcome no executor has collected yet.
    completed: Vec<(u64, SInFlight)>,
    next_action: u64,
    checker: Checker,
    failed: Vec<NodeId>,
    failed_farms: Vec<FarmId>,
    /// The checker's view of preproduction: (profile, component, value) -> (since, soaked).
    gate_since: Vec<GateSince>,
    last_activity: u64,
    action_counts: BTreeMap<String, u64>,
    lost_outcomes: u64,
    started: Vec<SStarted>,
    /// The environments' databases: how many times each migration applied.
    #[serde(default)]
    migrations_applied: Vec<((crate::model::Environment, String, MigrationPhase), u32)>,
    #[serde(default)]
    failed_migrations: Vec<(crate::model::Environment, String, MigrationPhase)>,
    /// What `live::LiveSim` keeps beside the world (absent for a bare world).
    pub live: Option<LiveState>,
}

/// The checker's record of what preproduction ran: `((profile, component, value), (since, soaked))`.
type GateSince = ((u32, String, String), (u64, bool));

/// `live::LiveSim`'s own accounting, beside the world.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LiveState {
    pub epoch_ms: u64,
    pub bound_s: f64,
    pub at_target_since: Option<u64>,
}

/// Sites, farms (name, site) and nodes (name, address, farm), in spec order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    pub sites: Vec<String>,
    pub farms: Vec<(String, String)>,
    pub nodes: Vec<(String, String, String)>,
}

impl Topology {
    pub fn of(fleet: &Fleet) -> Topology {
        let site = |s: SiteId| fleet.sites.get(s as usize).map(|s| s.name.clone()).unwrap_or_default();
        let farm = |f: FarmId| fleet.farms.get(f as usize).map(|f| f.name.clone()).unwrap_or_default();
        Topology {
            sites: fleet.sites.iter().map(|s| s.name.clone()).collect(),
            farms: fleet.farms.iter().map(|f| (f.name.clone(), site(f.site))).collect(),
            nodes: fleet.nodes.iter().map(|n| (n.name.clone(), n.address.clone(), farm(n.farm))).collect(),
        }
    }

    /// The first difference from `other` (this one the snapshot's), in words.
    fn difference(&self, spec: &Topology) -> Option<String> {
        fn first<T: PartialEq + std::fmt::Debug>(what: &str, a: &[T], b: &[T]) -> Option<String> {
            if a == b {
                return None;
            }
            if let Some(i) = (0..a.len().min(b.len())).find(|&i| a[i] != b[i]) {
                return Some(format!("{what} {}: {:?} in the world, {:?} in the spec", i + 1, a[i], b[i]));
            }
            Some(format!("{} {what}s in the world, {} in the spec", a.len(), b.len()))
        }
        first("site", &self.sites, &spec.sites)
            .or_else(|| first("farm", &self.farms, &spec.farms))
            .or_else(|| first("node", &self.nodes, &spec.nodes))
    }
}

#[derive(Clone, Copy, Debug)]
enum SEv {
    Plan,
    Resync,
    ActionDone(u64),
    Arrive(SiteId),
    Request(u32),
    RequestEnd(NodeId, FarmId),
    SessionEnd(u32),
    Crash,
    Restart,
    NodeDeath(NodeId),
}

impl SEv {
    /// `(kind, a, b)`.
    fn code(self) -> (u64, u64, u64) {
        match self {
            SEv::Plan => (0, 0, 0),
            SEv::Resync => (1, 0, 0),
            SEv::ActionDone(i) => (2, i, 0),
            SEv::Arrive(s) => (3, s as u64, 0),
            SEv::Request(s) => (4, s as u64, 0),
            SEv::RequestEnd(n, f) => (5, n as u64, f as u64),
            SEv::SessionEnd(s) => (6, s as u64, 0),
            SEv::Crash => (7, 0, 0),
            SEv::Restart => (8, 0, 0),
            SEv::NodeDeath(n) => (9, n as u64, 0),
        }
    }

    fn decode(kind: u64, a: u64, b: u64) -> Option<SEv> {
        let small = |x: u64| u32::try_from(x).ok();
        Some(match kind {
            0 => SEv::Plan,
            1 => SEv::Resync,
            2 => SEv::ActionDone(a),
            3 => SEv::Arrive(small(a)?),
            4 => SEv::Request(small(a)?),
            5 => SEv::RequestEnd(small(a)?, small(b)?),
            6 => SEv::SessionEnd(small(a)?),
            7 => SEv::Crash,
            8 => SEv::Restart,
            9 => SEv::NodeDeath(small(a)?),
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
enum SHealth {
    Unknown,
    Passing,
    Failing,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct SNode {
    dead: bool,
    down_until: u64,
    disrupted_until: u64,
    packages: Vec<(String, String)>,
    fetched: Vec<(String, String)>,
    kernel_running: Option<String>,
    boot: u64,
    php_installed: Vec<String>,
    php_active: Option<String>,
    releases: Vec<String>,
    release_active: Option<String>,
    release: u16,
    admin: Admin,
    active: u32,
    left_ready_at: u64,
    unhealthy: bool,
    last_health: SHealth,
    needs_health: bool,
    capacity: u32,
    #[serde(default)]
    cold: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct SFarm {
    admin: Admin,
    weight: u16,
    active: u32,
    sessions: u32,
    rr: u32,
    current: i64,
    left_ready_at: u64,
    flush_broken: bool,
    over_capacity: bool,
}

/// `(site, farm, seen, ended)`: a tuple, the world has tens of thousands.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct SSession(SiteId, Option<FarmId>, u16, bool);

/// An atom as `[category, name, version]`.
type SAtom = (String, String, String);

/// `plan::Action`, by the spec positions the topology pins.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum SAction {
    Fetch { node: NodeId, atoms: Vec<SAtom> },
    StagePhp { node: NodeId, version: String },
    StageRelease { node: NodeId, release: String },
    InstallOnline { node: NodeId, atoms: Vec<SAtom> },
    SetNode { node: NodeId, admin: Admin },
    Upgrade { node: NodeId, atoms: Vec<SAtom>, reboot: bool, restart: Vec<String> },
    Activate { node: NodeId, php: Option<String>, release: Option<String>, rollback: bool },
    HealthCheck { node: NodeId },
    SetFarm { farm: FarmId, admin: Admin },
    SetFarmWeight { farm: FarmId, weight: u16 },
    FlushCache { farm: FarmId },
    MarkFailed { node: NodeId, reason: String },
    Migrate { node: NodeId, release: String, phase: MigrationPhase, resume: bool },
    Warmup { node: NodeId },
    Snapshot { node: NodeId, name: String },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct SInFlight {
    action: SAction,
    outcome: Outcome,
    /// When it started (virtual ms).
    started_ms: u64,
    abandoned: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct SStarted {
    at_ms: u64,
    action: SAction,
    why: String,
}

/// Only the format, read before the rest.
#[derive(Deserialize)]
struct Header {
    format: u32,
}

fn s(x: &str) -> String {
    x.to_string()
}

fn ev_out(e: Ev) -> SEv {
    match e {
        Ev::Plan => SEv::Plan,
        Ev::Resync => SEv::Resync,
        Ev::ActionDone(i) => SEv::ActionDone(i),
        Ev::Arrive(s) => SEv::Arrive(s),
        Ev::Request(s) => SEv::Request(s),
        Ev::RequestEnd(n, f) => SEv::RequestEnd(n, f),
        Ev::SessionEnd(s) => SEv::SessionEnd(s),
        Ev::Crash => SEv::Crash,
        Ev::Restart => SEv::Restart,
        Ev::NodeDeath(n) => SEv::NodeDeath(n),
    }
}

fn ev_in(e: SEv) -> Ev {
    match e {
        SEv::Plan => Ev::Plan,
        SEv::Resync => Ev::Resync,
        SEv::ActionDone(i) => Ev::ActionDone(i),
        SEv::Arrive(s) => Ev::Arrive(s),
        SEv::Request(s) => Ev::Request(s),
        SEv::RequestEnd(n, f) => Ev::RequestEnd(n, f),
        SEv::SessionEnd(s) => Ev::SessionEnd(s),
        SEv::Crash => Ev::Crash,
        SEv::Restart => Ev::Restart,
        SEv::NodeDeath(n) => Ev::NodeDeath(n),
    }
}

fn atoms_out(atoms: &[Atom]) -> Vec<SAtom> {
    atoms.iter().map(|a| (s(&a.category), s(&a.name), s(&a.version))).collect()
}

fn action_out(a: &Action) -> SAction {
    match a {
        Action::Fetch { node, atoms } => SAction::Fetch { node: *node, atoms: atoms_out(atoms) },
        Action::StagePhp { node, version } => SAction::StagePhp { node: *node, version: s(&version.0) },
        Action::StageRelease { node, release } => SAction::StageRelease { node: *node, release: s(&release.0) },
        Action::InstallOnline { node, atoms } => SAction::InstallOnline { node: *node, atoms: atoms_out(atoms) },
        Action::SetNode { node, admin } => SAction::SetNode { node: *node, admin: *admin },
        Action::Upgrade { node, atoms, disruption } => SAction::Upgrade {
            node: *node,
            atoms: atoms_out(atoms),
            reboot: disruption.reboot,
            restart: disruption.restart.clone(),
        },
        Action::Activate { node, php, release, rollback } => SAction::Activate {
            node: *node,
            php: php.as_ref().map(|p| s(&p.0)),
            release: release.as_ref().map(|r| s(&r.0)),
            rollback: *rollback,
        },
        Action::HealthCheck { node } => SAction::HealthCheck { node: *node },
        Action::SetFarm { farm, admin } => SAction::SetFarm { farm: *farm, admin: *admin },
        Action::SetFarmWeight { farm, weight } => SAction::SetFarmWeight { farm: *farm, weight: *weight },
        Action::FlushCache { farm } => SAction::FlushCache { farm: *farm },
        Action::MarkFailed { node, reason } => SAction::MarkFailed { node: *node, reason: reason.clone() },
        Action::Migrate { node, release, phase, resume } => {
            SAction::Migrate { node: *node, release: s(&release.0), phase: *phase, resume: *resume }
        }
        Action::Warmup { node } => SAction::Warmup { node: *node },
        Action::Snapshot { node, name } => SAction::Snapshot { node: *node, name: name.clone() },
    }
}

fn in_flight_out(f: &InFlight) -> SInFlight {
    SInFlight {
        action: action_out(&f.action),
        outcome: f.outcome.clone(),
        started_ms: f.started_ms,
        abandoned: f.abandoned,
    }
}

fn health_out(h: Health) -> SHealth {
    match h {
        Health::Unknown => SHealth::Unknown,
        Health::Passing => SHealth::Passing,
        Health::Failing => SHealth::Failing,
    }
}

fn pairs_out(v: &[(Str, Str)]) -> Vec<(String, String)> {
    v.iter().map(|(k, x)| (s(k), s(x))).collect()
}

impl Snapshot {
    /// The world of `sim` now. For a world driven from outside (the
    /// built-in reconciler's state is not in it).
    pub(crate) fn of(sim: &Sim<'_>, live: Option<LiveState>) -> Snapshot {
        let mut events: Vec<(u64, u64, SEv)> =
            sim.queue.iter().map(|Reverse((t, q, e))| (*t, *q, ev_out(*e))).collect();
        events.sort_unstable_by_key(|&(t, q, _)| (t, q));
        let mut previous = 0;
        let queue = events
            .into_iter()
            .map(|(t, q, e)| {
                let (kind, a, b) = e.code();
                let dt = t - previous;
                previous = t;
                [dt, q, kind, a, b]
            })
            .collect();
        let nodes = sim
            .nodes
            .iter()
            .map(|n| SNode {
                dead: n.dead,
                down_until: n.down_until,
                disrupted_until: n.disrupted_until,
                packages: pairs_out(&n.packages),
                fetched: pairs_out(&n.fetched),
                kernel_running: n.kernel_running.as_deref().map(s),
                boot: n.boot,
                php_installed: n.php_installed.iter().map(|p| s(&p.0)).collect(),
                php_active: n.php_active.as_ref().map(|p| s(&p.0)),
                releases: n.releases.iter().map(|r| s(&r.0)).collect(),
                release_active: n.release_active.as_ref().map(|r| s(&r.0)),
                release: n.release,
                admin: n.admin,
                active: n.active,
                left_ready_at: n.left_ready_at,
                unhealthy: n.unhealthy,
                last_health: health_out(n.last_health),
                needs_health: n.needs_health,
                capacity: n.capacity,
                cold: n.cold,
            })
            .collect();
        let farms = sim
            .farms
            .iter()
            .map(|f| SFarm {
                admin: f.admin,
                weight: f.weight,
                active: f.active,
                sessions: f.sessions,
                rr: f.rr,
                current: f.current,
                left_ready_at: f.left_ready_at,
                flush_broken: f.flush_broken,
                over_capacity: f.over_capacity,
            })
            .collect();
        Snapshot {
            format: FORMAT,
            written_by: env!("CARGO_PKG_VERSION").into(),
            topology: Topology::of(&sim.fleet),
            cfg: sim.cfg.clone(),
            now_ms: sim.now,
            seq: sim.seq,
            queue,
            rng: sim.rng.clone(),
            fault_rng: sim.fault_rng.clone(),
            traffic_rng: sim.traffic_rng.clone(),
            nodes,
            farms,
            sessions: sim.sessions.iter().map(|x| SSession(x.site, x.farm, x.seen, x.ended)).collect(),
            free_sessions: sim.free_sessions.clone(),
            releases: sim.releases.ids.iter().map(|r| s(&r.0)).collect(),
            in_flight: sim.in_flight.iter().map(|(id, f)| (*id, in_flight_out(f))).collect(),
            completed: sim.completed.iter().map(|(id, f)| (*id, in_flight_out(f))).collect(),
            next_action: sim.next_action,
            checker: sim.checker.clone(),
            failed: sim.failed.iter().copied().collect(),
            failed_farms: sim.failed_farms.iter().copied().collect(),
            gate_since: sim.gate_since.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            last_activity: sim.last_activity,
            action_counts: sim.action_counts.clone(),
            lost_outcomes: sim.lost_outcomes,
            migrations_applied: sim.migrations_applied.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            failed_migrations: sim.failed_migrations.iter().cloned().collect(),
            started: sim
                .started
                .iter()
                .map(|x| SStarted { at_ms: x.at_ms, action: action_out(&x.action), why: x.why.clone() })
                .collect(),
            live,
        }
    }

    /// The snapshot as written to its file.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing plain data to memory cannot fail (no maps with non-string keys).
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A snapshot read from `bytes` (the contents of `path`, named in errors).
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Snapshot, String> {
        let damaged = |why: String| {
            format!(
                "the simulated world in {} is damaged ({why}); remove it to start a fresh simulation",
                path.display()
            )
        };
        let header: Header = serde_json::from_slice(bytes).map_err(|e| damaged(e.to_string()))?;
        if header.format > FORMAT {
            return Err(format!(
                "the simulated world in {} is in format {}, newer than this drover reads ({FORMAT}): \
                 run a newer drover, or remove it to start a fresh simulation",
                path.display(),
                header.format
            ));
        }
        if header.format < 1 {
            return Err(damaged(format!("format {}", header.format)));
        }
        serde_json::from_slice(bytes).map_err(|e| damaged(e.to_string()))
    }

    /// Reads `path`.
    pub fn load(path: &Path) -> Result<Snapshot, String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read the simulated world {}: {e}", path.display()))?;
        Snapshot::from_bytes(&bytes, path)
    }

    /// The world again, on `fleet`, which must have the snapshot's topology
    /// (its targets and policy may differ: a spec changed while drover was
    /// stopped). `path` names the file in errors. Every reference inside is
    /// checked, so a file edited by hand is refused rather than panicked on.
    pub(crate) fn restore(self, fleet: Arc<Fleet>, path: &Path) -> Result<Sim<'static>, String> {
        if let Some(diff) = self.topology.difference(&Topology::of(&fleet)) {
            return Err(format!(
                "the simulated world in {} was made for another spec ({diff}); remove it or use another --state-dir",
                path.display()
            ));
        }
        let damaged = |why: String| {
            format!(
                "the simulated world in {} is damaged ({why}); remove it to start a fresh simulation",
                path.display()
            )
        };
        if self.cfg.strategy != Strategy::Drover {
            return Err(damaged(format!("strategy {:?}: a live world is driven from outside", self.cfg.strategy)));
        }
        let events = self.check(&fleet).map_err(damaged)?;
        let mut strings: BTreeMap<String, Str> = BTreeMap::new();
        let mut intern = |x: String| -> Str {
            if let Some(a) = strings.get(&x) {
                return Arc::clone(a);
            }
            let a: Str = Str::from(x.as_str());
            strings.insert(x, Arc::clone(&a));
            a
        };
        let mut releases = Releases::default();
        for r in &self.releases {
            releases.index(&ReleaseId(intern(r.clone())));
        }
        let nodes = self
            .nodes
            .into_iter()
            .map(|n| SimNode {
                dead: n.dead,
                down_until: n.down_until,
                disrupted_until: n.disrupted_until,
                packages: n.packages.into_iter().map(|(k, v)| (intern(k), intern(v))).collect(),
                fetched: n.fetched.into_iter().map(|(k, v)| (intern(k), intern(v))).collect(),
                kernel_running: n.kernel_running.map(&mut intern),
                boot: n.boot,
                php_installed: n.php_installed.into_iter().map(|p| PhpVersion(intern(p))).collect(),
                php_active: n.php_active.map(|p| PhpVersion(intern(p))),
                releases: n.releases.into_iter().map(|r| ReleaseId(intern(r))).collect(),
                release_active: n.release_active.map(|r| ReleaseId(intern(r))),
                release: n.release,
                admin: n.admin,
                active: n.active,
                left_ready_at: n.left_ready_at,
                unhealthy: n.unhealthy,
                last_health: match n.last_health {
                    SHealth::Unknown => Health::Unknown,
                    SHealth::Passing => Health::Passing,
                    SHealth::Failing => Health::Failing,
                },
                needs_health: n.needs_health,
                capacity: n.capacity,
                cold: n.cold,
            })
            .collect();
        let farms = self
            .farms
            .into_iter()
            .map(|f| SimFarm {
                admin: f.admin,
                weight: f.weight,
                active: f.active,
                sessions: f.sessions,
                rr: f.rr,
                current: f.current,
                left_ready_at: f.left_ready_at,
                flush_broken: f.flush_broken,
                over_capacity: f.over_capacity,
            })
            .collect();
        let mut action_in = |a: SAction| -> Action {
            let mut atoms = |v: Vec<SAtom>| -> Vec<Atom> {
                v.into_iter()
                    .map(|(c, n, x)| Atom { category: intern(c), name: intern(n), version: intern(x) })
                    .collect()
            };
            match a {
                SAction::Fetch { node, atoms: v } => Action::Fetch { node, atoms: atoms(v) },
                SAction::StagePhp { node, version } => Action::StagePhp { node, version: PhpVersion(version.into()) },
                SAction::StageRelease { node, release } => {
                    Action::StageRelease { node, release: ReleaseId(release.into()) }
                }
                SAction::InstallOnline { node, atoms: v } => Action::InstallOnline { node, atoms: atoms(v) },
                SAction::SetNode { node, admin } => Action::SetNode { node, admin },
                SAction::Upgrade { node, atoms: v, reboot, restart } => {
                    Action::Upgrade { node, atoms: atoms(v), disruption: Disruption { reboot, restart } }
                }
                SAction::Activate { node, php, release, rollback } => Action::Activate {
                    node,
                    php: php.map(|p| PhpVersion(p.into())),
                    release: release.map(|r| ReleaseId(r.into())),
                    rollback,
                },
                SAction::HealthCheck { node } => Action::HealthCheck { node },
                SAction::SetFarm { farm, admin } => Action::SetFarm { farm, admin },
                SAction::SetFarmWeight { farm, weight } => Action::SetFarmWeight { farm, weight },
                SAction::FlushCache { farm } => Action::FlushCache { farm },
                SAction::MarkFailed { node, reason } => Action::MarkFailed { node, reason },
                SAction::Migrate { node, release, phase, resume } => {
                    Action::Migrate { node, release: ReleaseId(release.into()), phase, resume }
                }
                SAction::Warmup { node } => Action::Warmup { node },
                SAction::Snapshot { node, name } => Action::Snapshot { node, name },
            }
        };
        let mut flight = |f: SInFlight| InFlight {
            action: action_in(f.action),
            // The reconciler's incarnation: the driver outside has its own.
            incarnation: 0,
            outcome: f.outcome,
            started_ms: f.started_ms,
            abandoned: f.abandoned,
        };
        let in_flight: BTreeMap<u64, InFlight> = self.in_flight.into_iter().map(|(id, f)| (id, flight(f))).collect();
        let completed: BTreeMap<u64, InFlight> = self.completed.into_iter().map(|(id, f)| (id, flight(f))).collect();
        let started = self
            .started
            .into_iter()
            .map(|x| Started { at_ms: x.at_ms, action: action_in(x.action), why: x.why })
            .collect();
        let mut sim = Sim::build(fleet, self.cfg, Driver::External);
        sim.now = self.now_ms;
        sim.seq = self.seq;
        sim.queue = events.into_iter().map(|(t, q, e)| Reverse((t, q, ev_in(e)))).collect::<BinaryHeap<_>>();
        sim.rng = self.rng;
        sim.fault_rng = self.fault_rng;
        sim.traffic_rng = self.traffic_rng;
        sim.nodes = nodes;
        sim.farms = farms;
        sim.sessions = self
            .sessions
            .into_iter()
            .map(|SSession(site, farm, seen, ended)| Session { site, farm, seen, ended })
            .collect();
        sim.free_sessions = self.free_sessions;
        sim.releases = releases;
        sim.in_flight = in_flight;
        sim.completed = completed;
        sim.next_action = self.next_action;
        sim.checker = self.checker;
        sim.failed = self.failed.into_iter().collect();
        sim.failed_farms = self.failed_farms.into_iter().collect();
        sim.gate_since = self.gate_since.into_iter().collect();
        sim.last_activity = self.last_activity;
        sim.action_counts = self.action_counts;
        sim.lost_outcomes = self.lost_outcomes;
        sim.migrations_applied = self.migrations_applied.into_iter().collect();
        sim.failed_migrations = self.failed_migrations.into_iter().collect();
        sim.started = started;
        Ok(sim)
    }

    /// Every position and index inside refers to something that exists;
    /// returns the event queue decoded.
    fn check(&self, fleet: &Fleet) -> Result<Vec<(u64, u64, SEv)>, String> {
        let (n_nodes, n_farms, n_sites) =
            (fleet.nodes.len() as u64, fleet.farms.len() as u64, fleet.sites.len() as u64);
        let n_sessions = self.sessions.len() as u64;
        let n_releases = self.releases.len();
        if self.nodes.len() as u64 != n_nodes || self.farms.len() as u64 != n_farms {
            return Err(format!(
                "{} nodes and {} farms for a topology of {n_nodes} and {n_farms}",
                self.nodes.len(),
                self.farms.len()
            ));
        }
        if n_releases >= Releases::MAX {
            return Err(format!("{n_releases} releases"));
        }
        let distinct: BTreeSet<&String> = self.releases.iter().collect();
        if distinct.len() != n_releases {
            return Err("a release listed twice".into());
        }
        let release_ok = |i: u16| i == NONE_SEEN || (i as usize) < n_releases;
        let bad = |what: &str, i: u64| Err(format!("{what} {i} out of range"));
        for n in &self.nodes {
            if !release_ok(n.release) {
                return bad("release index", n.release as u64);
            }
        }
        for x in &self.sessions {
            if x.0 as u64 >= n_sites {
                return bad("site", x.0 as u64);
            }
            if let Some(f) = x.1
                && f as u64 >= n_farms
            {
                return bad("farm", f as u64);
            }
            if !release_ok(x.2) {
                return bad("release index", x.2 as u64);
            }
        }
        if let Some(&i) = self.free_sessions.iter().find(|&&i| i as u64 >= n_sessions) {
            return bad("session", i as u64);
        }
        let mut last = None;
        let mut events = Vec::with_capacity(self.queue.len());
        let mut t = 0u64;
        for &[dt, q, kind, a, b] in &self.queue {
            t = t.checked_add(dt).ok_or("event instant out of range")?;
            let e = SEv::decode(kind, a, b).ok_or_else(|| format!("event kind {kind} with {a}, {b}"))?;
            if q > self.seq || last.is_some_and(|l| l >= (t, q)) {
                return Err(format!("event queue out of order at ({t}, {q})"));
            }
            last = Some((t, q));
            events.push((t, q, e));
            let ok = match e {
                SEv::Arrive(s) => (s as u64) < n_sites,
                SEv::Request(i) | SEv::SessionEnd(i) => (i as u64) < n_sessions,
                SEv::RequestEnd(n, f) => (n as u64) < n_nodes && (f as u64) < n_farms,
                SEv::NodeDeath(n) => (n as u64) < n_nodes,
                SEv::ActionDone(id) => id < self.next_action,
                SEv::Plan | SEv::Resync | SEv::Crash | SEv::Restart => true,
            };
            if !ok {
                return Err(format!("event {e:?} refers to nothing"));
            }
        }
        let action_ok = |a: &SAction| match a {
            SAction::Fetch { node, .. }
            | SAction::StagePhp { node, .. }
            | SAction::StageRelease { node, .. }
            | SAction::InstallOnline { node, .. }
            | SAction::SetNode { node, .. }
            | SAction::Upgrade { node, .. }
            | SAction::Activate { node, .. }
            | SAction::HealthCheck { node }
            | SAction::MarkFailed { node, .. }
            | SAction::Migrate { node, .. }
            | SAction::Warmup { node }
            | SAction::Snapshot { node, .. } => (*node as u64) < n_nodes,
            SAction::SetFarm { farm, .. } | SAction::SetFarmWeight { farm, .. } | SAction::FlushCache { farm } => {
                (*farm as u64) < n_farms
            }
        };
        for (id, f) in self.in_flight.iter().chain(&self.completed) {
            if *id >= self.next_action || !action_ok(&f.action) {
                return Err(format!("action {id} refers to nothing"));
            }
        }
        if self.started.iter().any(|x| !action_ok(&x.action)) {
            return Err("a started action refers to nothing".into());
        }
        if let Some(&n) = self.failed.iter().find(|&&n| n as u64 >= n_nodes) {
            return bad("node", n as u64);
        }
        if let Some(&f) = self.failed_farms.iter().find(|&&f| f as u64 >= n_farms) {
            return bad("farm", f as u64);
        }
        if self.sessions.len() > u32::MAX as usize {
            return Err("too many sessions".into());
        }
        Ok(events)
    }
}

/// Writes `bytes` to `path` so that a crash at any instant leaves either the
/// old file or the new one, whole: a temporary file beside it, synced, then
/// renamed over it, and the directory synced.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    let fail = |e: std::io::Error| format!("cannot save the simulated world to {}: {e}", path.display());
    let mut f = std::fs::File::create(&tmp).map_err(fail)?;
    f.write_all(bytes).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(fail)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::sim::fleetgen::{self, Shape};
    use crate::sim::{Faults, Report};

    fn shape() -> Shape {
        Shape { prod_sites: 2, farms_per_site: 3, nodes_per_farm: 3, sessions_per_site: 300, ..Shape::default() }
    }

    fn world(fleet: &Arc<Fleet>, seed: u64) -> Sim<'static> {
        let mut cfg = SimConfig::new(fleet, seed);
        // Every random draw of the world in play: action failures, slow requests, deaths.
        cfg.faults = Faults {
            action_fail: 0.1,
            ssh_timeout: 0.05,
            health_fail: 0.05,
            node_death: 1,
            slow_drain: 0.05,
            crash: 0,
            flush_fail: 0.2,
            migration_fail: 0.0,
        };
        let mut sim = Sim::build(Arc::clone(fleet), cfg, Driver::External);
        let bound = crate::plan::bound::lower_bound(&sim.fleet, &sim.observe(), &sim.cfg.estimates).total_s;
        sim.start_world(bound);
        sim
    }

    fn path() -> PathBuf {
        PathBuf::from("/state/simulation/world.json")
    }

    /// The same outside driver for both worlds: at each step, collect the
    /// outcomes that ended, then start a fixed cycle of actions on the next
    /// nodes and farms (by step number, not by what it sees: the two worlds
    /// must get the same dispatches).
    fn drive(sim: &mut Sim<'_>, step: u64, ids: &mut Vec<u64>) -> Vec<Option<Outcome>> {
        let fleet = Arc::clone(&sim.fleet);
        let outcomes: Vec<Option<Outcome>> = ids.iter().map(|&id| sim.deliver(id)).collect();
        let n = (step % fleet.nodes.len() as u64) as NodeId;
        let f = (step % fleet.farms.len() as u64) as FarmId;
        let t = fleet.node_target(n).clone();
        let a = match step % 6 {
            0 => Action::SetNode { node: n, admin: Admin::Maint },
            1 => Action::Upgrade { node: n, atoms: t.packages.clone(), disruption: Disruption::default() },
            2 => Action::StageRelease { node: n, release: t.release.clone() },
            3 => Action::SetFarm { farm: f, admin: if step % 12 == 3 { Admin::Maint } else { Admin::Ready } },
            4 => Action::Activate {
                node: n,
                php: Some(t.php.clone()),
                release: Some(t.release.clone()),
                rollback: false,
            },
            _ => Action::FlushCache { farm: f },
        };
        sim.update_gate_tracker();
        ids.push(sim.dispatch(a, format!("step {step}")).0);
        if step.is_multiple_of(5) {
            sim.dispatch(Action::HealthCheck { node: n }, String::new());
        }
        outcomes
    }

    fn report(sim: &Sim<'_>) -> String {
        let r: Report = sim.report(1.0);
        serde_json::to_string(&(r, &r_started(sim))).unwrap()
    }

    fn r_started(sim: &Sim<'_>) -> Vec<(u64, String)> {
        sim.started.iter().map(|x| (x.at_ms, format!("{:?}", x.action))).collect()
    }

    #[test]
    fn a_restored_world_goes_on_bit_for_bit_as_if_it_had_not_stopped() {
        let fleet = Arc::new(fleetgen::fleet(&shape()).unwrap());
        for seed in [1, 7] {
            let mut a = world(&fleet, seed);
            a.cfg.record_actions = true;
            let mut ids = Vec::new();
            let mut step = 0;
            // To t: traffic, actions under way and ended but not collected.
            while a.now < 400_000 {
                let t = a.now + 7_000;
                assert!(a.advance_within(t, Duration::from_secs(60)));
                drive(&mut a, step, &mut ids);
                step += 1;
            }
            let snap = Snapshot::of(&a, None);
            assert!(!snap.in_flight.is_empty() && !snap.queue.is_empty(), "seed {seed}: nothing under way");
            // Through the file's bytes.
            let bytes = snap.to_bytes();
            let mut b = Snapshot::from_bytes(&bytes, &path()).unwrap().restore(Arc::clone(&fleet), &path()).unwrap();
            assert_eq!(Snapshot::of(&b, None).to_bytes(), bytes, "seed {seed}: restored differently");
            let mut ids_b = ids.clone();
            // To t2, with the same dispatches.
            while a.now < 1_500_000 {
                let t = a.now + 7_000;
                assert!(a.advance_within(t, Duration::from_secs(60)));
                assert!(b.advance_within(t, Duration::from_secs(60)));
                let oa = drive(&mut a, step, &mut ids);
                let ob = drive(&mut b, step, &mut ids_b);
                assert_eq!(oa, ob, "seed {seed} step {step}: outcomes differ");
                assert_eq!(
                    serde_json::to_string(&a.observe()).unwrap(),
                    serde_json::to_string(&b.observe()).unwrap(),
                    "seed {seed} step {step}: observations differ"
                );
                step += 1;
            }
            assert!(a.checker.requests > 1000, "seed {seed}: traffic ran");
            assert_eq!(report(&a), report(&b), "seed {seed}");
            assert_eq!(Snapshot::of(&a, None).to_bytes(), Snapshot::of(&b, None).to_bytes(), "seed {seed}");
        }
    }

    #[test]
    fn a_damaged_newer_or_foreign_snapshot_is_refused_with_the_file_named() {
        let fleet = Arc::new(fleetgen::fleet(&shape()).unwrap());
        let mut sim = world(&fleet, 3);
        assert!(sim.advance_within(60_000, Duration::from_secs(60)));
        let bytes = Snapshot::of(&sim, None).to_bytes();
        let p = path();
        let named = |e: &str| assert!(e.contains("/state/simulation/world.json"), "{e}");
        // Damaged: cut short, garbage, empty, not an object.
        for bad in [&bytes[..bytes.len() / 2], b"\x00\xffgarbage", b"", b"[1,2,3]", b"{\"format\":1}"] {
            let e = Snapshot::from_bytes(bad, &p).unwrap_err();
            named(&e);
            assert!(e.contains("damaged"), "{e}");
        }
        // Newer.
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["format"] = (FORMAT + 1).into();
        let e = Snapshot::from_bytes(&serde_json::to_vec(&v).unwrap(), &p).unwrap_err();
        named(&e);
        assert!(e.contains("newer"), "{e}");
        // Readable, but its references point nowhere: refused, not panicked on.
        for (field, value) in [
            ("sessions", serde_json::json!([[99, null, 65535, false]])),
            ("free_sessions", serde_json::json!([1_000_000])),
            ("queue", serde_json::json!([[5, 1, 5, 9999, 0]])),
            ("queue", serde_json::json!([[5, 2, 0, 0, 0], [0, 1, 0, 0, 0]])),
            ("queue", serde_json::json!([[5, 1, 42, 0, 0]])),
            ("queue", serde_json::json!([[5, 1, 4, 1u64 << 40, 0]])),
            ("failed", serde_json::json!([4000])),
            ("releases", serde_json::json!(["1", "1"])),
        ] {
            let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            v[field] = value;
            let snap = Snapshot::from_bytes(&serde_json::to_vec(&v).unwrap(), &p).unwrap();
            let Err(e) = snap.restore(Arc::clone(&fleet), &p) else { panic!("{field}: accepted") };
            named(&e);
            assert!(e.contains("damaged"), "{field}: {e}");
        }
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["nodes"][0]["release"] = 500.into();
        let e = Snapshot::from_bytes(&serde_json::to_vec(&v).unwrap(), &p).unwrap().restore(Arc::clone(&fleet), &p);
        assert!(e.err().unwrap().contains("release index"));
        // Another topology: more nodes, renamed sites.
        for other in [Shape { nodes_per_farm: 4, ..shape() }, Shape { prod_sites: 3, ..shape() }] {
            let other = Arc::new(fleetgen::fleet(&other).unwrap());
            let e = Snapshot::from_bytes(&bytes, &p).unwrap().restore(other, &p).err().unwrap();
            named(&e);
            assert!(e.contains("made for another spec") && e.contains("use another --state-dir"), "{e}");
        }
        // The same topology, other targets: accepted.
        assert!(Snapshot::from_bytes(&bytes, &p).unwrap().restore(Arc::clone(&fleet), &p).is_ok());
    }
}
