//! The spec files as written: one `SpecFile` per YAML file, every section
//! optional, merged across all files of the spec directory.
//!
//! Scalars stay strings (`Sp<String>`) here so that semantic checks can report
//! every bad value at once, each at its own line and column; `validate` turns
//! them into the typed, resolved `model::Fleet`. The JSON Schema of the spec
//! is derived from these types (`drover schema`).

use schemars::JsonSchema;
use serde::Deserialize;

use super::located::Sp;

/// One drover spec file. Every section is optional; all files under the spec
/// directory are merged (a site's farms can live in their own file).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpecFile {
    /// Fleet-wide settings: target defaults, policy, SSH access, sources. At most one file may set it.
    #[serde(default)]
    pub fleet: Option<Sp<FleetSpec>>,
    /// Hardware profiles: each has its own binhost and init system.
    #[serde(default)]
    pub profiles: Vec<ProfileSpec>,
    /// Named sets of exact Gentoo atoms; targets compose them.
    #[serde(default)]
    pub package_sets: Vec<PackageSetSpec>,
    /// Sites (data centres or the preproduction environment), each behind its own HAProxy.
    #[serde(default)]
    pub sites: Vec<SiteSpec>,
    /// Farms: groups of nodes sharing a memcached, switched as a unit.
    #[serde(default)]
    pub farms: Vec<FarmSpec>,
    /// Starting state and load of the simulated fleet (`--simulate` only; ignored for real fleets).
    #[serde(default)]
    pub simulation: Option<Sp<SimulationSpec>>,
    /// Hooks of application releases (migrations, warm-up), by release id. A release not listed has none.
    #[serde(default)]
    pub releases: Vec<ReleaseSpec>,
}

/// What a release brings beside its files: hooks, each the name of an
/// executable in the release tree (`releases/<id>/bin/<hook>`), never a
/// command. drover runs it with fixed arguments and environment (README,
/// "Release hooks").
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseSpec {
    /// The release id, as targets name it, e.g. "2026.12.1" (quote it).
    pub id: Sp<String>,
    #[serde(default)]
    pub hooks: ReleaseHooksSpec,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseHooksSpec {
    /// Backward-compatible schema change run once per environment before its first farm switches (`bin/<hook> expand`).
    pub expand: Option<Sp<String>>,
    /// Clean-up run once per environment after every farm of it serves the release (`bin/<hook> contract`).
    pub contract: Option<Sp<String>>,
    /// Run on every node of a switched farm before it goes back into the LB (`bin/<hook> warmup`).
    pub warmup: Option<Sp<String>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FleetSpec {
    /// Target every farm gets unless its site or the farm itself says otherwise.
    #[serde(default)]
    pub defaults: TargetSpec,
    #[serde(default)]
    pub policy: PolicySpec,
    #[serde(default)]
    pub ssh: SshSpec,
    #[serde(default)]
    pub sources: SourcesSpec,
    /// Port of the web server on every node (health checks, LB servers). Default 80.
    pub http_port: Option<Sp<u16>>,
}

/// What a farm should run. Every field is optional at each level; the farm's
/// value wins over its site's, which wins over the fleet's defaults.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// Names of package sets, applied in order: a later set overrides an earlier one for the same package.
    pub packages: Option<Sp<Vec<Sp<String>>>>,
    /// PHP version, installed under /opt/php/<version>, e.g. "8.3.14" (quote it).
    pub php: Option<Sp<String>>,
    /// Application release id, installed under releases/<id>, e.g. "2026.11.2".
    pub release: Option<Sp<String>>,
    /// Allow the release or PHP version to go backwards (an explicit rollback). Default false.
    pub allow_rollback: Option<Sp<bool>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Which packages are disruptive and what they need (first matching rule wins).
    #[serde(default)]
    pub disruptive: Vec<DisruptiveRuleSpec>,
    /// Nodes of one farm out of service at once for node-level work. Default 1.
    pub max_unavailable: Option<Sp<u32>>,
    /// Farms of one site out at once for farm-level switches. Default 1.
    pub max_farms_down: Option<Sp<u32>>,
    /// Fraction (0..1) of a site's full capacity that must keep serving. Default 0.5.
    pub site_capacity_floor: Option<Sp<f64>>,
    /// Fraction (0..1] of a farm's capacity it may be loaded to when it takes displaced sessions. Default 0.9.
    pub max_farm_load: Option<Sp<f64>>,
    /// How long to wait for a drained server's sessions to reach zero, e.g. "5m". Default 5m.
    pub drain_timeout: Option<Sp<String>>,
    /// How long a node outside any window may not answer before it counts as failed, e.g. "5m". Default 5m.
    pub unreachable_timeout: Option<Sp<String>>,
    #[serde(default)]
    pub health: HealthSpec,
    #[serde(default)]
    pub preproduction: PreproductionSpec,
    /// Failed nodes tolerated before the rollout halts. Default 2.
    pub failure_budget: Option<Sp<u32>>,
    /// Releases kept on each node for rollback (the active one included). Default 5.
    pub releases_kept: Option<Sp<u32>>,
    /// When disruptive node work and farm switches may start (UTC). Outside every window drover still stages, installs online and finishes what is under way. Default: any time.
    #[serde(default)]
    pub change_windows: Vec<ChangeWindowSpec>,
    /// Where and how long release migrations (`releases[].hooks.expand`/`contract`) run.
    #[serde(default)]
    pub migrations: MigrationsSpec,
    /// Requests to a switched farm's nodes before it takes traffic again.
    #[serde(default)]
    pub warmup: WarmupSpec,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrationsSpec {
    /// Node that runs production's migrations. Default: the first healthy node (member order) of the first farm of the first production site that has the release.
    pub production_node: Option<Sp<String>>,
    /// Node that runs preproduction's migrations. Default: as for production.
    pub preproduction_node: Option<Sp<String>>,
    /// Longest a migration may run before it counts as failed, e.g. "30m". Default 30m.
    pub timeout: Option<Sp<String>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WarmupSpec {
    /// Paths requested once on every node of a switched farm (the node itself, like the health path), e.g. ["/", "/catalog"]. Default: none.
    #[serde(default)]
    pub paths: Vec<Sp<String>>,
    /// Requests in flight at once per node. Default 4.
    pub concurrency: Option<Sp<u32>>,
    /// Longest a node's warm-up (requests and the release's warm-up hook) may take, e.g. "60s". Default 60s.
    pub timeout: Option<Sp<String>>,
    /// Fraction (0..1] of the requests that must answer 2xx. Default 1.
    pub min_success: Option<Sp<f64>>,
}

/// A weekly window in UTC, e.g. `{ days: [mon, tue, wed, thu, fri], start: "02:00", end: "06:00" }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeWindowSpec {
    /// Days the window starts on. Default: every day.
    #[schemars(with = "Option<Vec<Weekday>>")]
    pub days: Option<Sp<Vec<Sp<String>>>>,
    /// Opening time, "HH:MM" in UTC (quote it).
    pub start: Sp<String>,
    /// Closing time, "HH:MM" in UTC, exclusive. Earlier than `start`: wraps past midnight (the window belongs to the day it starts on). "24:00" is the end of the day.
    pub end: Sp<String>,
}

// Only the schema uses this type (editors complete the days): days are
// parsed by `values::parse_weekday`, so a wrong one is reported at its position.
/// A day of the week.
#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DisruptiveRuleSpec {
    /// `category/package` pattern; `*` matches any run of characters, e.g. "sys-kernel/*".
    #[serde(rename = "match")]
    pub pattern: Sp<String>,
    /// Services to restart after installing (OpenRC or systemd names).
    #[serde(default)]
    pub restart: Vec<Sp<String>>,
    /// Reboot the node after installing (kernel, glibc).
    #[serde(default)]
    pub reboot: Option<Sp<bool>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    /// HTTP path requested on the node itself. Default "/healthz".
    pub path: Option<Sp<String>>,
    /// Expected HTTP status. Default 200.
    pub expect_status: Option<Sp<u16>>,
    /// The body must contain the active release id. Default true.
    pub expect_release_marker: Option<Sp<bool>>,
    /// Timeout of one attempt, e.g. "5s". Default 5s.
    pub timeout: Option<Sp<String>>,
    /// Attempts before the node is declared failed. Default 3.
    pub retries: Option<Sp<u32>>,
    /// PHP-FPM's pool status page (`pm.status_path`) as the node's web server serves it to drover. After a switch every worker it lists must have started after the reload, and every health answer must come from one of them (its `pid=`). Default "/fpm-status".
    pub pool_status: Option<Sp<String>>,
    /// Requests to the health path per attempt (4 at a time); each must pass. Default 8.
    pub requests: Option<Sp<u32>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PreproductionSpec {
    /// How long preproduction nodes must run a target, healthy, before production of the same profile may take it, e.g. "1h". Default 30m.
    pub soak: Option<Sp<String>>,
    /// Let production change without a preproduction node of its profile. Default false: that is an error.
    pub waive_gate: Option<Sp<bool>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SshSpec {
    /// Remote user drover logs in as. Default "drover".
    pub user: Option<Sp<String>>,
    /// SSH port on every node unless the node says otherwise. Default 22.
    pub port: Option<Sp<u16>>,
    /// known_hosts file checked strictly: relative to the spec directory and inside it (an absolute path only under the operator's --credentials-dir). No default: without it (or --known-hosts) drover does not connect.
    pub known_hosts: Option<Sp<String>>,
    /// Private key file: relative to the spec directory and inside it (an absolute path only under the operator's --credentials-dir). Default: ssh's own choice.
    pub identity: Option<Sp<String>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourcesSpec {
    /// rsync URL under which each PHP version is a directory: <php>/<version>/.
    pub php: Option<Sp<String>>,
    /// rsync URL under which each release is a directory: <releases>/<id>/.
    pub releases: Option<Sp<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileSpec {
    pub name: Sp<String>,
    /// PORTAGE_BINHOST for nodes of this profile, e.g. "https://binhost.example.net/r640".
    pub binhost: Sp<String>,
    /// Init system: openrc or systemd.
    pub init: Sp<InitSystem>,
    /// Concurrent sessions one node of this profile carries at full load. Default 500.
    pub capacity: Option<Sp<u32>>,
    /// Snapshot of the root filesystem before each disruptive upgrade. Default: none.
    pub snapshot: Option<Sp<SnapshotSpec>>,
}

/// How a node of the profile snapshots its root filesystem before a
/// disruptive upgrade (drained, out of the LB). Rolling back is an operator's
/// command (`drover rollback-node`), never automatic.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotSpec {
    pub method: Sp<SnapshotMethodSpec>,
    /// lvm: the root logical volume, `vg/lv`.
    pub volume: Option<Sp<String>>,
    /// lvm: copy-on-write space of each snapshot, e.g. "10G". Default "10G".
    pub size: Option<Sp<String>>,
    /// btrfs: the root subvolume's mount point. Default "/".
    pub path: Option<Sp<String>>,
    /// btrfs: directory (on the same filesystem) holding the snapshots. Default "/.snapshots".
    pub dir: Option<Sp<String>>,
    /// hook: name of the executable `/etc/drover/hooks/<hook>` on the node (`create|delete|rollback <name>`).
    pub hook: Option<Sp<String>>,
    /// Snapshots kept per node (drover's own, the newest). Default 3.
    pub keep: Option<Sp<u32>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotMethodSpec {
    Lvm,
    Btrfs,
    Hook,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InitSystem {
    Openrc,
    Systemd,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PackageSetSpec {
    pub name: Sp<String>,
    /// Exact atoms, `category/package-version`.
    pub atoms: Vec<Sp<String>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Production,
    Preproduction,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteSpec {
    pub name: Sp<String>,
    pub environment: Sp<Environment>,
    pub lb: LbSpec,
    /// Override of policy.site_capacity_floor for this site (e.g. a small preproduction site).
    pub capacity_floor: Option<Sp<f64>>,
    /// Target overrides for every farm of this site.
    #[serde(default)]
    pub defaults: TargetSpec,
}

/// The site's HAProxy and how drover reaches its runtime API.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LbSpec {
    /// LB host reached over SSH (with the fleet's SSH settings) to use `socket`.
    pub host: Option<Sp<String>>,
    /// SSH port of the LB host. Default: the fleet's SSH port.
    pub ssh_port: Option<Sp<u16>>,
    /// Path of the runtime API socket on the LB host, e.g. "/run/haproxy/admin.sock".
    pub socket: Option<Sp<String>>,
    /// Alternatively, a TCP runtime API endpoint `host:port` reached directly.
    pub admin_tcp: Option<Sp<String>>,
    /// Site backend holding one cookie pseudo-server per farm. Default "site".
    pub backend: Option<Sp<String>>,
    /// Frontend bind `host:port` for `drover render haproxy`. Default "0.0.0.0:80".
    pub bind: Option<Sp<String>>,
    /// Server-state file path for `drover render haproxy`. Default "/var/lib/haproxy/server-state".
    pub state_file: Option<Sp<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FarmSpec {
    pub name: Sp<String>,
    /// The site this farm belongs to.
    pub site: Sp<String>,
    /// memcached endpoints of the farm's session store, `host:port`.
    #[serde(default)]
    pub memcached: Vec<Sp<String>>,
    /// Target overrides for this farm (wins over site and fleet defaults).
    #[serde(default)]
    pub target: TargetSpec,
    /// Per-farm override of policy.max_unavailable.
    pub max_unavailable: Option<Sp<u32>>,
    #[serde(default)]
    pub lb: FarmLbSpec,
    /// Nodes written one by one.
    #[serde(default)]
    pub nodes: Vec<NodeSpec>,
    /// Nodes generated from patterns (the compact form for uniform farms).
    #[serde(default)]
    pub node_pattern: Option<NodePatternSpec>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FarmLbSpec {
    /// Name of the farm's cookie pseudo-server in the site backend (and its cookie value), unique within the site. Default: the farm name.
    pub server: Option<Sp<String>>,
    /// Address `host:port` of the per-farm listener the pseudo-server points to (for `render haproxy`), unique within the site.
    pub listen: Option<Sp<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub name: Sp<String>,
    /// IP address or DNS name, used for SSH, health checks and the LB.
    pub address: Sp<String>,
    /// Position of the node in its farm, 1-based; disruptive waves go by member index.
    pub member: Sp<u32>,
    pub profile: Sp<String>,
    pub ssh_port: Option<Sp<u16>>,
    pub http_port: Option<Sp<u16>>,
}

/// `count` nodes, members `first_member`.. with names and addresses from
/// patterns. `{member}` is the member index, `{member:02}` zero-pads it,
/// `{member+10}` adds an offset (e.g. `10.1.3.{member+10}`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodePatternSpec {
    pub count: Sp<u32>,
    /// First member index. Default 1.
    pub first_member: Option<Sp<u32>>,
    /// e.g. "par1-f03-n{member:02}".
    pub name: Sp<String>,
    /// e.g. "10.1.3.{member+10}".
    pub address: Sp<String>,
    pub profile: Sp<String>,
    pub ssh_port: Option<Sp<u16>>,
    pub http_port: Option<Sp<u16>>,
}

/// The simulated fleet's starting point and workload.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulationSpec {
    /// What every node runs when the simulation starts (package sets, PHP, release).
    #[serde(default)]
    pub initial: TargetSpec,
    /// Active user sessions per production site at the start. Default: 40% of site capacity.
    pub sessions_per_site: Option<Sp<u32>>,
}
