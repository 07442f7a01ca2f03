//! The resolved fleet: what the specs mean once merged, defaulted and checked.
//!
//! Immutable and index-based (`SiteId`, `FarmId`, `NodeId` are positions in
//! the fleet's vectors) so that planning over 100,000 nodes stays cheap.
//! Farms that want the same target share one `Target` (`TargetId`).
//! This module does no I/O.

use std::time::Duration;

use serde::Serialize;

pub use crate::spec::file::{Environment, InitSystem};

impl Environment {
    pub fn name(self) -> &'static str {
        match self {
            Environment::Production => "production",
            Environment::Preproduction => "preproduction",
        }
    }
}
pub use crate::spec::values::{Atom, PhpVersion, ReleaseId};

pub type SiteId = u32;
pub type FarmId = u32;
pub type NodeId = u32;
pub type ProfileId = u32;
pub type TargetId = u32;

#[derive(Clone, Debug, Serialize)]
pub struct Fleet {
    pub profiles: Vec<Profile>,
    pub sites: Vec<Site>,
    pub farms: Vec<Farm>,
    pub nodes: Vec<Node>,
    pub targets: Vec<Target>,
    pub policy: Policy,
    pub ssh: SshSettings,
    pub sources: Sources,
    /// Starting state of the simulated fleet (`--simulate`), when the spec sets one.
    #[serde(skip)]
    pub simulation: Option<SimulationSettings>,
    /// Hooks of the releases that declare some (`releases:`), by id.
    pub releases: std::collections::BTreeMap<ReleaseId, ReleaseHooks>,
}

/// The hooks a release declares: names of executables in its tree
/// (`releases/<id>/bin/<hook>`), checked by `values::parse_hook_name`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReleaseHooks {
    pub expand: Option<String>,
    pub contract: Option<String>,
    pub warmup: Option<String>,
}

/// Which migration of a release.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MigrationPhase {
    /// Before the environment's first farm switches (backward compatible).
    Expand,
    /// After every farm of the environment serves the release.
    Contract,
}

impl MigrationPhase {
    pub fn name(self) -> &'static str {
        match self {
            MigrationPhase::Expand => "expand",
            MigrationPhase::Contract => "contract",
        }
    }
}

impl ReleaseHooks {
    pub fn migration(&self, phase: MigrationPhase) -> Option<&str> {
        match phase {
            MigrationPhase::Expand => self.expand.as_deref(),
            MigrationPhase::Contract => self.contract.as_deref(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Profile {
    pub name: String,
    pub binhost: String,
    pub init: InitSystem,
    /// Concurrent sessions one node carries at full load.
    pub capacity: u32,
    /// Root filesystem snapshot before each disruptive upgrade.
    pub snapshot: Option<Snapshot>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    pub method: SnapshotMethod,
    /// drover's snapshots kept per node (the newest).
    pub keep: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "method", rename_all = "lowercase")]
pub enum SnapshotMethod {
    /// `lvcreate --snapshot` of `vg/lv` with `size` of copy-on-write space.
    Lvm { vg: String, lv: String, size: String },
    /// A read-only `btrfs subvolume snapshot` of `path` into `dir`.
    Btrfs { path: String, dir: String },
    /// `/etc/drover/hooks/<hook> create|delete|rollback <name>`.
    Hook { hook: String },
}

#[derive(Clone, Debug, Serialize)]
pub struct Site {
    pub name: String,
    pub environment: Environment,
    pub lb: LbSettings,
    pub farms: Vec<FarmId>,
    /// Fraction of the site's full capacity that must keep serving.
    pub capacity_floor: f64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum LbApi {
    /// Runtime API socket on `host`, reached over SSH.
    Ssh { host: String, port: u16, socket: String },
    /// Runtime API on a TCP address reached directly.
    Tcp { host: String, port: u16 },
}

#[derive(Clone, Debug, Serialize)]
pub struct LbSettings {
    pub api: LbApi,
    pub backend: String,
    pub bind: String,
    pub state_file: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Farm {
    pub name: String,
    pub site: SiteId,
    pub memcached: Vec<(String, u16)>,
    /// Nodes ordered by member index.
    pub nodes: Vec<NodeId>,
    pub target: TargetId,
    pub max_unavailable: u32,
    /// Cookie pseudo-server name in the site backend (also the cookie value).
    pub lb_server: String,
    /// Weight of the farm's pseudo-server when it takes new sessions:
    /// proportional to its capacity (1..=256), so that round-robin fills
    /// farms of a site to the same fraction of their capacity.
    pub lb_weight: u16,
    /// `host:port` of the per-farm listener, when the spec names one.
    pub lb_listen: Option<(String, u16)>,
    /// For each target field, which spec level set it ("fleet", "site par1", "farm").
    pub target_origin: TargetOrigin,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct TargetOrigin {
    pub packages: String,
    pub php: String,
    pub release: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Node {
    pub name: String,
    pub address: String,
    pub ssh_port: u16,
    pub http_port: u16,
    pub member: u32,
    pub profile: ProfileId,
    pub farm: FarmId,
    pub site: SiteId,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Target {
    /// Exact atoms, one per package, sorted by `category/name`.
    pub packages: Vec<Atom>,
    pub php: PhpVersion,
    pub release: ReleaseId,
    pub allow_rollback: bool,
}

impl Serialize for Atom {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
impl Serialize for PhpVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}
impl Serialize for ReleaseId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// What installing a disruptive package needs before the node may serve again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Needs {
    Restart(Vec<String>),
    Reboot,
}

#[derive(Clone, Debug, Serialize)]
pub struct DisruptiveRule {
    pub pattern: String,
    pub needs: Needs,
}

#[derive(Clone, Debug, Serialize)]
pub struct HealthCheck {
    pub path: String,
    pub expect_status: u16,
    pub expect_release_marker: bool,
    pub timeout: Duration,
    pub retries: u32,
    /// PHP-FPM's pool status path on the node (the worker-age proof).
    pub pool_status: String,
    /// Health path requests per attempt.
    pub requests: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct Policy {
    pub disruptive: Vec<DisruptiveRule>,
    pub max_unavailable: u32,
    pub max_farms_down: u32,
    pub site_capacity_floor: f64,
    pub max_farm_load: f64,
    pub drain_timeout: Duration,
    /// A node outside any window that does not answer this long has failed.
    pub unreachable_timeout: Duration,
    pub health: HealthCheck,
    pub soak: Duration,
    pub waive_preproduction_gate: bool,
    pub failure_budget: u32,
    pub releases_kept: u32,
    /// When disruptive and farm-level work may start (UTC); empty: any time.
    pub change_windows: Vec<ChangeWindow>,
    pub migrations: Migrations,
    pub warmup: Warmup,
}

#[derive(Clone, Debug, Serialize)]
pub struct Migrations {
    /// The node that runs an environment's migrations, by name (checked to
    /// be a node of that environment); `None`: the first healthy one.
    pub production_node: Option<String>,
    pub preproduction_node: Option<String>,
    pub timeout: Duration,
}

impl Migrations {
    pub fn node(&self, env: Environment) -> Option<&str> {
        match env {
            Environment::Production => self.production_node.as_deref(),
            Environment::Preproduction => self.preproduction_node.as_deref(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Warmup {
    /// Paths requested once on every node of a switched farm.
    pub paths: Vec<String>,
    pub concurrency: u32,
    /// A node's whole warm-up (requests and hook).
    pub timeout: Duration,
    /// Fraction of requests that must answer 2xx.
    pub min_success: f64,
}

impl Fleet {
    /// Does a farm switching to `release` warm up before it returns?
    pub fn warms_up(&self, release: &ReleaseId) -> bool {
        !self.policy.warmup.paths.is_empty() || self.releases.get(release).is_some_and(|h| h.warmup.is_some())
    }
    /// The hook of `release`'s migration `phase`, if it declares one.
    pub fn migration_hook(&self, release: &ReleaseId, phase: MigrationPhase) -> Option<&str> {
        self.releases.get(release).and_then(|h| h.migration(phase))
    }
}

/// A weekly change window in UTC: on each of `days` from `start_min` to
/// `end_min` (minutes after midnight, end exclusive). An end at or before the
/// start wraps past midnight: the window belongs to the day it starts on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChangeWindow {
    /// Bit d set: open on weekday d (Monday = 0 … Sunday = 6).
    pub days: u8,
    pub start_min: u32,
    /// 0..=1440 (1440, written 24:00: the end of the day).
    pub end_min: u32,
}

impl ChangeWindow {
    /// Does the window start on weekday `d` (Monday = 0)?
    pub fn on(&self, d: u8) -> bool {
        self.days & (1 << d) != 0
    }
}

impl Policy {
    /// What installing `atom` needs, per the first matching disruptive rule;
    /// `None` for a non-disruptive package.
    pub fn needs(&self, atom: &Atom) -> Option<&Needs> {
        let key = atom.key();
        self.disruptive.iter().find(|r| crate::spec::values::glob_match(&r.pattern, &key)).map(|r| &r.needs)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct SshSettings {
    pub user: String,
    pub port: u16,
    pub known_hosts: Option<String>,
    pub identity: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Sources {
    pub php: Option<String>,
    pub releases: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SimulationSettings {
    /// What every node runs when the simulation starts.
    pub initial: Target,
    pub sessions_per_site: Option<u32>,
}

impl Fleet {
    /// Same profiles, sites, farms and nodes (by name, in the same order,
    /// in the same places): ids mean the same thing in both fleets.
    pub fn same_topology(&self, other: &Fleet) -> bool {
        self.profiles.iter().map(|p| &p.name).eq(other.profiles.iter().map(|p| &p.name))
            && self.sites.iter().map(|s| &s.name).eq(other.sites.iter().map(|s| &s.name))
            && self.farms.iter().map(|f| (&f.name, f.site)).eq(other.farms.iter().map(|f| (&f.name, f.site)))
            && self
                .nodes
                .iter()
                .map(|n| (&n.name, n.farm, n.profile))
                .eq(other.nodes.iter().map(|n| (&n.name, n.farm, n.profile)))
    }

    pub fn farm_target(&self, farm: FarmId) -> &Target {
        &self.targets[self.farms[farm as usize].target as usize]
    }
    pub fn node_target(&self, node: NodeId) -> &Target {
        self.farm_target(self.nodes[node as usize].farm)
    }
    pub fn site_of_farm(&self, farm: FarmId) -> &Site {
        &self.sites[self.farms[farm as usize].site as usize]
    }
    pub fn is_production(&self, site: SiteId) -> bool {
        self.sites[site as usize].environment == Environment::Production
    }
    pub fn farm_by_name(&self, name: &str) -> Option<FarmId> {
        self.farms.iter().position(|f| f.name == name).map(|i| i as FarmId)
    }
    pub fn node_by_name(&self, name: &str) -> Option<NodeId> {
        self.nodes.iter().position(|n| n.name == name).map(|i| i as NodeId)
    }
    pub fn site_by_name(&self, name: &str) -> Option<SiteId> {
        self.sites.iter().position(|s| s.name == name).map(|i| i as SiteId)
    }
}
