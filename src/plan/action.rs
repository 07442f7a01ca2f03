//! The planner's vocabulary: every step drover may take, as data.
//! Adapters (real fleet) and the simulation execute them; the journal records them.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::diff::Disruption;
use crate::model::{Atom, FarmId, Fleet, MigrationPhase, NodeId, PhpVersion, ReleaseId};
use crate::observe::Admin;

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// Download binary packages ahead of time (online).
    Fetch { node: NodeId, atoms: Vec<Atom> },
    /// rsync a PHP tree into /opt/php/<version> (online).
    StagePhp { node: NodeId, version: PhpVersion },
    /// rsync a release into releases/<id> (online).
    StageRelease { node: NodeId, release: ReleaseId },
    /// Install non-disruptive packages while serving.
    InstallOnline { node: NodeId, atoms: Vec<Atom> },
    /// Set the node's server in its farm listener.
    SetNode { node: NodeId, admin: Admin },
    /// Install disruptive packages, then restart services or reboot (node out of service).
    Upgrade { node: NodeId, atoms: Vec<Atom>, disruption: Disruption },
    /// Flip the PHP and/or release symlinks and reload (farm out of service).
    Activate { node: NodeId, php: Option<PhpVersion>, release: Option<ReleaseId>, rollback: bool },
    /// HTTP health check against the node itself.
    HealthCheck { node: NodeId },
    /// Set the farm's cookie pseudo-server in the site backend (ready implies weight 100).
    SetFarm { farm: FarmId, admin: Admin },
    /// Weight of the farm's pseudo-server: 0 keeps its sessions, takes no new ones.
    SetFarmWeight { farm: FarmId, weight: u16 },
    /// flush_all on the farm's memcached.
    FlushCache { farm: FarmId },
    /// Give up on a node (timeout): record it as failed. No I/O.
    MarkFailed { node: NodeId, reason: String },
    /// Run a release's migration hook on `node`, once for the node's
    /// environment (`releases/<id>/bin/<hook> expand|contract`). `resume`:
    /// the journal says a run began and never ended: ask the hook's
    /// `status` first and run only if it answers "not applied".
    Migrate { node: NodeId, release: ReleaseId, phase: MigrationPhase, resume: bool },
    /// Warm a switched node before its farm takes traffic: the policy's
    /// warm-up paths and the release's warm-up hook.
    Warmup { node: NodeId },
    /// Snapshot the node's root filesystem (drained, out) before a
    /// disruptive upgrade, under drover's name `name`; older ones beyond
    /// the profile's `keep` are removed.
    Snapshot { node: NodeId, name: String },
}

/// What one action is about; at most one action per subject is in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Subject {
    Node(NodeId),
    Farm(FarmId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Fetch,
    StagePhp,
    StageRelease,
    InstallOnline,
    SetNode,
    Upgrade,
    Activate,
    HealthCheck,
    SetFarm,
    SetFarmWeight,
    FlushCache,
    MarkFailed,
    Migrate,
    Warmup,
    Snapshot,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Fetch => "fetch",
            Kind::StagePhp => "stage_php",
            Kind::StageRelease => "stage_release",
            Kind::InstallOnline => "install_online",
            Kind::SetNode => "set_node",
            Kind::Upgrade => "upgrade",
            Kind::Activate => "activate",
            Kind::HealthCheck => "health_check",
            Kind::SetFarm => "set_farm",
            Kind::SetFarmWeight => "set_farm_weight",
            Kind::FlushCache => "flush_cache",
            Kind::MarkFailed => "mark_failed",
            Kind::Migrate => "migrate",
            Kind::Warmup => "warmup",
            Kind::Snapshot => "snapshot",
        }
    }
    pub const ALL: [Kind; 15] = [
        Kind::Fetch,
        Kind::StagePhp,
        Kind::StageRelease,
        Kind::InstallOnline,
        Kind::SetNode,
        Kind::Upgrade,
        Kind::Activate,
        Kind::HealthCheck,
        Kind::SetFarm,
        Kind::SetFarmWeight,
        Kind::FlushCache,
        Kind::MarkFailed,
        Kind::Migrate,
        Kind::Warmup,
        Kind::Snapshot,
    ];
}

impl Action {
    pub fn subject(&self) -> Subject {
        match self {
            Action::Fetch { node, .. }
            | Action::StagePhp { node, .. }
            | Action::StageRelease { node, .. }
            | Action::InstallOnline { node, .. }
            | Action::SetNode { node, .. }
            | Action::Upgrade { node, .. }
            | Action::Activate { node, .. }
            | Action::HealthCheck { node }
            | Action::MarkFailed { node, .. }
            | Action::Migrate { node, .. }
            | Action::Warmup { node }
            | Action::Snapshot { node, .. } => Subject::Node(*node),
            Action::SetFarm { farm, .. } | Action::SetFarmWeight { farm, .. } | Action::FlushCache { farm } => {
                Subject::Farm(*farm)
            }
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Action::Fetch { .. } => Kind::Fetch,
            Action::StagePhp { .. } => Kind::StagePhp,
            Action::StageRelease { .. } => Kind::StageRelease,
            Action::InstallOnline { .. } => Kind::InstallOnline,
            Action::SetNode { .. } => Kind::SetNode,
            Action::Upgrade { .. } => Kind::Upgrade,
            Action::Activate { .. } => Kind::Activate,
            Action::HealthCheck { .. } => Kind::HealthCheck,
            Action::SetFarm { .. } => Kind::SetFarm,
            Action::SetFarmWeight { .. } => Kind::SetFarmWeight,
            Action::FlushCache { .. } => Kind::FlushCache,
            Action::MarkFailed { .. } => Kind::MarkFailed,
            Action::Migrate { .. } => Kind::Migrate,
            Action::Warmup { .. } => Kind::Warmup,
            Action::Snapshot { .. } => Kind::Snapshot,
        }
    }

    /// A one-line description with names instead of ids.
    pub fn describe(&self, fleet: &Fleet) -> String {
        let node = |n: &NodeId| fleet.nodes[*n as usize].name.as_str();
        let farm = |f: &FarmId| fleet.farms[*f as usize].name.as_str();
        let atoms = |a: &[Atom]| a.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(" ");
        match self {
            Action::Fetch { node: n, atoms: a } => format!("{}: fetch {}", node(n), atoms(a)),
            Action::StagePhp { node: n, version } => format!("{}: rsync php {version}", node(n)),
            Action::StageRelease { node: n, release } => {
                format!("{}: rsync release {release}", node(n))
            }
            Action::InstallOnline { node: n, atoms: a } => {
                format!("{}: install online {}", node(n), atoms(a))
            }
            Action::SetNode { node: n, admin } => format!("{}: lb {}", node(n), admin_name(*admin)),
            Action::Upgrade { node: n, atoms: a, disruption } => format!(
                "{}: install {} then {}",
                node(n),
                atoms(a),
                if disruption.reboot {
                    "reboot".to_string()
                } else if disruption.restart.is_empty() {
                    "nothing".to_string()
                } else {
                    format!("restart {}", disruption.restart.join(", "))
                }
            ),
            Action::Activate { node: n, php, release, rollback } => format!(
                "{}: activate{}{}{}",
                node(n),
                php.as_ref().map(|p| format!(" php {p}")).unwrap_or_default(),
                release.as_ref().map(|r| format!(" release {r}")).unwrap_or_default(),
                if *rollback { " (ROLLBACK)" } else { "" }
            ),
            Action::HealthCheck { node: n } => format!("{}: health check", node(n)),
            Action::SetFarm { farm: f, admin } => {
                format!("farm {}: lb {}", farm(f), admin_name(*admin))
            }
            Action::SetFarmWeight { farm: f, weight } => {
                format!("farm {}: lb weight {weight}", farm(f))
            }
            Action::FlushCache { farm: f } => format!("farm {}: flush memcached", farm(f)),
            Action::MarkFailed { node: n, reason } => {
                format!("{}: mark failed ({reason})", node(n))
            }
            Action::Migrate { node: n, release, phase, resume } => {
                let site = &fleet.sites[fleet.nodes[*n as usize].site as usize];
                format!(
                    "{}: {} migration of release {release} for {}{}",
                    node(n),
                    phase.name(),
                    site.environment.name(),
                    if *resume { " (interrupted: ask its status first)" } else { "" }
                )
            }
            Action::Warmup { node: n } => format!("{}: warm up", node(n)),
            Action::Snapshot { node: n, name } => format!("{}: snapshot root filesystem as {name}", node(n)),
        }
    }
}

pub fn admin_name(a: Admin) -> &'static str {
    match a {
        Admin::Ready => "ready",
        Admin::Drain => "drain",
        Admin::Maint => "maint",
    }
}

/// How an action ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Ok,
    Failed(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok => f.write_str("ok"),
            Outcome::Failed(e) => write!(f, "failed: {e}"),
        }
    }
}
