//! A deterministic simulation of a whole fleet: nodes with action durations,
//! failures and reboots; one HAProxy per site with the farm-stickiness
//! semantics verified against a real HAProxy (docs/haproxy-semantics.md);
//! memcached per farm; a population of user sessions sending requests with
//! cookies; a virtual clock; a seeded RNG. Same seed, same run, bit for bit.
//!
//! The reconciler inside is the production planner (`plan::plan`) with its
//! `Memory` as the journal: a crash drops everything else. An independent
//! `invariants::Checker` watches every request and every action start.

pub mod faults;
pub mod fleetgen;
pub mod live;
pub mod respec;
pub mod rng;
#[cfg(test)]
mod scale_tests;
pub mod snapshot;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::Arc;

use serde::Serialize;

pub use faults::Faults;
pub use respec::Respec;
use rng::Rng;

use crate::control::{Controller, MemJournal};
use crate::diff::node_diff;
use crate::invariants::{Checker, Invariant};
use crate::model::{Environment, FarmId, Fleet, MigrationPhase, Needs, NodeId, PhpVersion, ReleaseId, SiteId};
use crate::observe::{Admin, FarmObs, Health, LbServer, NodeObs, Observed, SiteObs, Str};
use crate::plan::{self, Action, Estimates, Memory, Outcome, Subject};

/// A run with nothing in flight and nothing started for this long is stuck.
pub const IDLE_LIMIT_MS: u64 = 30 * 60 * 1000;

/// Events allowed at one virtual instant before the run is declared livelocked.
pub const MAX_EVENTS_PER_INSTANT: u32 = 200_000;

/// How the simulated fleet is driven.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub enum Strategy {
    /// drover's planner.
    Drover,
    /// What Ansible's `serial: N%` does: batches of N% of hosts in inventory
    /// order, each host taken out, upgraded, switched and put back, with no
    /// farm-level coordination, no steering and no preproduction gate.
    SerialBatches { percent: u32 },
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct SimConfig {
    pub seed: u64,
    /// Mean action durations (also what the planner is told to expect).
    pub estimates: Estimates,
    /// Durations vary uniformly by this fraction around the mean.
    pub jitter: f64,
    /// Active sessions per production site; preproduction gets 1% of it.
    pub sessions_per_site: u32,
    pub session_life_s: f64,
    pub think_s: f64,
    pub request_ms: (u64, u64),
    pub faults: Faults,
    pub strategy: Strategy,
    /// Periodic resync of the reconciler.
    pub resync_s: f64,
    /// The run stops (not converged) at this virtual time.
    pub max_virtual_s: f64,
    /// Simulate user sessions and requests (off for fast projections).
    pub traffic: bool,
    /// Keep every started action (for `plan` projections and tests).
    pub record_actions: bool,
    /// Spec changes across reconciler restarts: on the k-th reconciler
    /// restart the spec becomes `respecs[k-1]` (a commit while drover was
    /// down); the world follows by identity (`Sim::respec`), the journal
    /// by its own (`plan::named::carry`). Default empty.
    #[serde(skip)]
    pub respecs: Vec<Arc<Fleet>>,
    /// Crash the reconciler this long (ms) after the first action of this
    /// kind starts (scenario tests: a crash in the middle of a migration).
    #[serde(skip)]
    pub crash_after_start: Option<(plan::Kind, u64)>,
}

impl SimConfig {
    pub fn new(fleet: &Fleet, seed: u64) -> Self {
        SimConfig {
            seed,
            estimates: Estimates::default(),
            jitter: 0.05,
            sessions_per_site: fleet.simulation.as_ref().and_then(|s| s.sessions_per_site).unwrap_or(2000),
            session_life_s: 600.0,
            think_s: 30.0,
            request_ms: (20, 300),
            faults: Faults::none(),
            strategy: Strategy::Drover,
            resync_s: 10.0,
            max_virtual_s: 6.0 * 3600.0,
            traffic: true,
            record_actions: false,
            respecs: Vec::new(),
            crash_after_start: None,
        }
    }
}

/// A started action, for logs and scenario tests.
#[derive(Clone, Debug, Serialize)]
pub struct Started {
    pub at_ms: u64,
    pub action: Action,
    pub why: String,
}

/// How a run ended, most serious first: the first word of the summary, the
/// JSON's `verdict` and the exit code all come from it, so a run that broke
/// an invariant or stopped is never called converged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// An invariant was violated, whatever else happened (a fast rollout
    /// that broke the rules is a failed one).
    Violated,
    /// Failures exceeded the failure budget: the rollout stopped.
    Halted,
    /// Nothing ran and nothing could start for `IDLE_LIMIT_MS`.
    Stuck,
    /// Still running at `max_virtual_s`.
    OutOfTime,
    /// Every node that answers is at its target; some do not answer.
    Unobserved,
    /// Every node observed at its target, no invariant violated.
    Converged,
}

impl Verdict {
    /// The makespan / lower-bound ratio means something only for a run
    /// that converged without violation: the bound is one for safe
    /// rollouts (one that breaks the rules can beat it), and a run that
    /// stopped has no makespan.
    pub fn has_ratio(self) -> bool {
        self == Verdict::Converged
    }
}

/// What a run produced. `converged`, `violations`, `requests`, `makespan_s`
/// and `lower_bound_s` are the CLI's machine-readable summary.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub seed: u64,
    pub strategy: Strategy,
    /// How the run ended (see `Verdict`).
    pub verdict: Verdict,
    /// Every node observed at its target (or failed) and no invariant
    /// violated: `verdict` is `Converged`.
    pub converged: bool,
    /// The rollout ended with nothing left to do on what answered.
    pub settled: bool,
    /// Nodes that did not answer at the end (a node death): never converged.
    pub unobserved_nodes: Vec<String>,
    pub halted: bool,
    pub violations: u64,
    pub violations_by_invariant: BTreeMap<String, u64>,
    pub violation_samples: Vec<crate::invariants::Violation>,
    pub requests: u64,
    pub failed_requests: u64,
    pub makespan_s: f64,
    pub lower_bound_s: f64,
    pub ratio: f64,
    pub actions: BTreeMap<String, u64>,
    pub failed_nodes: Vec<String>,
    /// Farms whose switch failed (memcached flush).
    pub failed_farms: Vec<String>,
    /// Release migrations the environments' databases went through, and
    /// how many times each applied (`production 2026.11.2 expand`: 1).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub migrations: BTreeMap<String, u32>,
    /// Migrations whose hook failed (they count against the failure budget).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed_migrations: Vec<String>,
    /// A preproduction node failed: production of its profile stays gated.
    pub preproduction_failed: bool,
    pub crashes: u32,
    pub blocked: Vec<plan::Blocked>,
    /// Servers a spec change left out of the LB under a new identity: the
    /// journal closed their windows, drover leaves them to an operator.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<String>,
    /// Journal entries a spec change could not carry (`plan::named::Resolution`s).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub journal_closed: Vec<String>,
    /// The spec changes the world went through (`SimConfig::respecs`, `LiveSim::set_fleet`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub respecs: Vec<Respec>,
    #[serde(skip)]
    pub started: Vec<Started>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    /// Reconciler pass (deduplicated by `plan_pending`).
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

#[derive(Clone, Debug)]
struct SimNode {
    dead: bool,
    /// Down (rebooting) until this instant.
    down_until: u64,
    /// Services restarting: not serving until this instant.
    disrupted_until: u64,
    packages: Vec<(Str, Str)>,
    fetched: Vec<(Str, Str)>,
    kernel_running: Option<Str>,
    boot: u64,
    php_installed: Vec<PhpVersion>,
    php_active: Option<PhpVersion>,
    releases: Vec<ReleaseId>,
    release_active: Option<ReleaseId>,
    /// The active release as an index into `Releases`.
    release: u16,
    admin: Admin,
    active: u32,
    left_ready_at: u64,
    unhealthy: bool,
    last_health: Health,
    /// Changed since its last passing health check.
    needs_health: bool,
    capacity: u32,
    /// Switched to a release that warms up, and not warmed yet: its
    /// answers are cold (a farm must not take traffic like this).
    cold: bool,
}

#[derive(Clone, Debug)]
struct SimFarm {
    admin: Admin,
    weight: u16,
    active: u32,
    sessions: u32,
    rr: u32,
    /// Smooth weighted round-robin state of the site backend.
    current: i64,
    left_ready_at: u64,
    flush_broken: bool,
    over_capacity: bool,
}

#[derive(Clone, Copy, Debug)]
struct Session {
    site: SiteId,
    farm: Option<FarmId>,
    /// The newest release the session has been served (an index into
    /// `Releases`), or `NONE_SEEN`.
    seen: u16,
    ended: bool,
}

const NONE_SEEN: u16 = u16::MAX;

/// Every release the simulation has met, each under an index that never
/// changes (sessions and nodes hold it), and each index's rank in
/// `ReleaseId`'s order, which the monotonic-sessions check compares. A
/// release added later (a new spec) gets the next index and the ranks are
/// recomputed, so a release between two known ones ranks between them and
/// what sessions have seen keeps its meaning.
#[derive(Clone, Debug, Default)]
struct Releases {
    ids: Vec<ReleaseId>,
    rank: Vec<u16>,
}

impl Releases {
    /// Indices stay below `NONE_SEEN`.
    const MAX: usize = NONE_SEEN as usize;

    /// The index of `r`, added when new; `None` when the table is full.
    fn index(&mut self, r: &ReleaseId) -> Option<u16> {
        if let Some(i) = self.ids.iter().position(|x| x == r) {
            return Some(i as u16);
        }
        if self.ids.len() >= Self::MAX {
            return None;
        }
        self.ids.push(r.clone());
        let mut order: Vec<usize> = (0..self.ids.len()).collect();
        order.sort_by(|&a, &b| self.ids[a].cmp(&self.ids[b]));
        self.rank = vec![0; self.ids.len()];
        for (rank, i) in order.into_iter().enumerate() {
            self.rank[i] = rank as u16;
        }
        Some((self.ids.len() - 1) as u16)
    }

    /// The rank of an index; nothing seen ranks lowest.
    fn rank(&self, i: u16) -> u16 {
        if i == NONE_SEEN { 0 } else { self.rank[i as usize] }
    }
}

struct InFlight {
    action: Action,
    incarnation: u32,
    outcome: Outcome,
    /// When it started (virtual ms).
    started_ms: u64,
    /// External driver only: the executor waiting for this outcome is gone
    /// (the reconciler crashed); the world still changes, nobody learns.
    abandoned: bool,
}

/// Who decides the actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Driver {
    /// `run()`: the planner (or the serial strategy) inside the event loop,
    /// with its crashes and restarts.
    Builtin,
    /// `live::LiveSim`: a reconciler outside calls `dispatch` and collects
    /// outcomes with `deliver`; no reconciler events are queued.
    External,
}

/// Serial-batches driver state.
struct Serial {
    order: Vec<NodeId>,
    batch: usize,
    per_batch: usize,
    step: BTreeMap<NodeId, u8>,
}

/// Receives milestone lines (virtual ms, text).
type Progress<'f> = Box<dyn FnMut(u64, &str) + Send + 'f>;

/// Receives (virtual ms, nodes at their target, nodes) now and then.
type PassProgress<'f> = Box<dyn FnMut(u64, usize, usize) + Send + 'f>;

/// `on_pass` listeners hear at most once per this much virtual time.
const PASS_PROGRESS_EVERY_MS: u64 = 10_000;

pub struct Sim<'f> {
    fleet: Arc<Fleet>,
    driver: Driver,
    cfg: SimConfig,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    rng: Rng,
    fault_rng: Rng,
    traffic_rng: Rng,
    nodes: Vec<SimNode>,
    farms: Vec<SimFarm>,
    sessions: Vec<Session>,
    /// External driver only: slots of ended sessions no event refers to,
    /// reused so that a simulation running for days stays small.
    free_sessions: Vec<u32>,
    releases: Releases,
    // reconciler
    /// The production controller (`Strategy::Drover`, built-in driver);
    /// `None` while crashed.
    ctl: Option<Controller<MemJournal>>,
    /// The journal, the only thing that survives a crash: held here while
    /// no controller runs.
    kept_journal: Option<MemJournal>,
    alive: bool,
    incarnation: u32,
    plan_pending: bool,
    in_flight: BTreeMap<u64, InFlight>,
    /// Future instants with a reconciler pass already queued.
    wakeups: BTreeSet<u64>,
    next_action: u64,
    crashes: u32,
    serial: Option<Serial>,
    // checker
    checker: Checker,
    failed: BTreeSet<NodeId>,
    failed_farms: BTreeSet<FarmId>,
    gate_since: BTreeMap<(u32, String, String), (u64, bool)>,
    // results
    converged_at: Option<u64>,
    halted: bool,
    /// Halted and settled: nothing more will happen.
    stopped: bool,
    last_activity: u64,
    /// Work waits for a change window opening then: idle, but not stuck.
    change_window_opens: Option<u64>,
    action_counts: BTreeMap<String, u64>,
    started: Vec<Started>,
    blocked: Vec<plan::Blocked>,
    progress: Option<Progress<'f>>,
    /// Someone listens to progress lines: the controller's progress events
    /// (waits, farm windows, waves) are turned into lines.
    show_progress: bool,
    /// Hears how far the rollout is (`on_pass`), and when it last did.
    pass_progress: Option<(PassProgress<'f>, Option<u64>)>,
    // external driver
    /// Finished actions whose outcome the executor has not collected yet.
    completed: BTreeMap<u64, InFlight>,
    /// Outcomes nobody collected (their executor was dropped).
    lost_outcomes: u64,
    /// The observation of the previous pass, overwritten by the next one.
    last_observation: Option<Observed>,
    /// What spec changes left behind (held servers, closed journal entries, a log).
    respecs: respec::Respecs,
    /// The environments' databases: how many times each release migration
    /// applied (more than once is a violation).
    migrations_applied: BTreeMap<(Environment, String, MigrationPhase), u32>,
    /// Migrations whose hook failed, as drover learnt it.
    failed_migrations: BTreeSet<(Environment, String, MigrationPhase)>,
}

fn kernel_of(fleet: &Fleet, pkgs: &[(Str, Str)]) -> Option<Str> {
    pkgs.iter()
        .find(|(k, _)| {
            fleet
                .policy
                .disruptive
                .iter()
                .any(|r| r.needs == Needs::Reboot && crate::spec::values::glob_match(&r.pattern, k))
        })
        .map(|(_, v)| v.clone())
}

pub(crate) use crate::observe::packages_of;

impl<'f> Sim<'f> {
    /// A fleet where every node runs `initial` (the spec's `simulation.initial`,
    /// or its targets when the spec has none).
    pub fn new(fleet: &Fleet, cfg: SimConfig) -> Self {
        Sim::build(Arc::new(fleet.clone()), cfg, Driver::Builtin)
    }

    fn build(fleet: Arc<Fleet>, cfg: SimConfig, driver: Driver) -> Self {
        let mut initial: BTreeSet<ReleaseId> = fleet.targets.iter().map(|t| t.release.clone()).collect();
        if let Some(s) = &fleet.simulation {
            initial.insert(s.initial.release.clone());
        }
        // Sorted first: the initial indices are the ranks.
        let mut releases = Releases::default();
        for r in &initial {
            releases.index(r);
        }
        let mut rng = Rng::new(cfg.seed);
        let fault_rng = rng.fork();
        let traffic_rng = rng.fork();
        let nodes = fleet
            .nodes
            .iter()
            .enumerate()
            .map(|(n, node)| {
                let t = fleet.simulation.as_ref().map(|s| &s.initial).unwrap_or_else(|| fleet.node_target(n as NodeId));
                let packages = packages_of(t);
                let kernel = kernel_of(&fleet, &packages);
                SimNode {
                    dead: false,
                    down_until: 0,
                    disrupted_until: 0,
                    fetched: packages.clone(),
                    packages,
                    kernel_running: kernel,
                    boot: 1,
                    php_installed: vec![t.php.clone()],
                    php_active: Some(t.php.clone()),
                    releases: vec![t.release.clone()],
                    release_active: Some(t.release.clone()),
                    release: releases.index(&t.release).unwrap_or(0),
                    admin: Admin::Ready,
                    active: 0,
                    left_ready_at: 0,
                    unhealthy: false,
                    last_health: Health::Passing,
                    needs_health: false,
                    cold: false,
                    capacity: fleet.profiles[node.profile as usize].capacity,
                }
            })
            .collect();
        let farms = fleet
            .farms
            .iter()
            .map(|f| SimFarm {
                admin: Admin::Ready,
                weight: f.lb_weight,
                active: 0,
                sessions: 0,
                rr: 0,
                current: 0,
                left_ready_at: 0,
                flush_broken: false,
                over_capacity: false,
            })
            .collect();
        let serial = match cfg.strategy {
            Strategy::SerialBatches { percent } => Some(Serial {
                order: (0..fleet.nodes.len() as NodeId).collect(),
                batch: 0,
                per_batch: ((fleet.nodes.len() as f64 * percent as f64 / 100.0).ceil() as usize).max(1),
                step: BTreeMap::new(),
            }),
            Strategy::Drover => None,
        };
        let ctl = (driver == Driver::Builtin && cfg.strategy == Strategy::Drover).then(|| {
            Controller::open(Arc::clone(&fleet), MemJournal::default(), 0)
                .expect("an empty journal in memory opens")
                .with_estimates(cfg.estimates.clone())
                .quiet()
        });
        Sim {
            fleet,
            driver,
            cfg,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            rng,
            fault_rng,
            traffic_rng,
            nodes,
            farms,
            sessions: Vec::new(),
            free_sessions: Vec::new(),
            releases,
            ctl,
            kept_journal: None,
            alive: true,
            incarnation: 0,
            plan_pending: false,
            in_flight: BTreeMap::new(),
            wakeups: BTreeSet::new(),
            next_action: 0,
            crashes: 0,
            serial,
            checker: Checker::default(),
            failed: BTreeSet::new(),
            failed_farms: BTreeSet::new(),
            gate_since: BTreeMap::new(),
            converged_at: None,
            halted: false,
            stopped: false,
            last_activity: 0,
            change_window_opens: None,
            action_counts: BTreeMap::new(),
            started: Vec::new(),
            blocked: Vec::new(),
            progress: None,
            show_progress: false,
            pass_progress: None,
            completed: BTreeMap::new(),
            lost_outcomes: 0,
            migrations_applied: BTreeMap::new(),
            failed_migrations: BTreeSet::new(),
            last_observation: None,
            respecs: respec::Respecs::default(),
        }
    }

    /// Receives milestone lines (virtual ms, text) as the run goes.
    pub fn on_progress(&mut self, f: impl FnMut(u64, &str) + Send + 'f) {
        self.progress = Some(Box::new(f));
        self.show_progress = true;
    }

    /// Hears, at most every `PASS_PROGRESS_EVERY_MS` of virtual time, how
    /// many nodes the built-in reconciler's last pass found at their target
    /// (a progress bar for a projection that prints no lines).
    pub fn on_pass(&mut self, f: impl FnMut(u64, usize, usize) + Send + 'f) {
        self.pass_progress = Some((Box::new(f), None));
    }

    fn say(&mut self, text: &str) {
        let now = self.now;
        if let Some(p) = self.progress.as_mut() {
            p(now, text);
        }
    }

    fn at(&mut self, t: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((t, self.seq, ev)));
    }

    fn dur(&mut self, mean_s: f64) -> u64 {
        let j = self.cfg.jitter;
        let f = 1.0 + j * (2.0 * self.rng.f64() - 1.0);
        (mean_s * f * 1000.0).max(1.0) as u64
    }

    fn request_plan(&mut self) {
        // An external reconciler plans on its own schedule.
        if self.driver == Driver::Builtin && !self.plan_pending {
            self.plan_pending = true;
            let now = self.now;
            self.at(now, Ev::Plan);
        }
    }

    /// A reconciler pass at a future instant (a timer: soak end, drain
    /// timeout, unreachable limit). Each instant is queued once, however
    /// many passes ask for it.
    fn wake_at(&mut self, t: u64) {
        if self.wakeups.insert(t) {
            self.at(t, Ev::Plan);
        }
    }

    /// The observation the reconciler gets (exact: the probe's view).
    pub fn observe(&self) -> Observed {
        let mut out = Observed { nodes: Vec::new(), farms: Vec::new(), sites: Vec::new() };
        self.observe_into(&mut out);
        out
    }

    /// `observe`, into the observation of the previous pass: the nodes'
    /// lists are overwritten in place instead of allocated again for every
    /// node on every pass.
    fn observe_into(&self, out: &mut Observed) {
        self.observe_nodes_into(&mut out.nodes);
        out.farms = self
            .farms
            .iter()
            .map(|f| FarmObs {
                lb: LbServer { admin: f.admin, weight: f.weight, active: f.active },
                sessions: f.sessions,
                memcached_reachable: !f.flush_broken,
            })
            .collect();
        out.sites = self
            .fleet
            .sites
            .iter()
            .map(|s| SiteObs { arrivals_per_s: self.arrival_rate(s.environment), lb_reachable: true })
            .collect();
    }

    /// The nodes' part of `observe`, overwriting `out` (same length as the
    /// fleet's nodes, or empty) field by field.
    fn observe_nodes_into(&self, out: &mut Vec<NodeObs>) {
        let now = self.now;
        if out.len() != self.nodes.len() {
            out.clear();
            out.resize_with(self.nodes.len(), || NodeObs {
                reachable: false,
                busy: false,
                packages: Vec::new(),
                fetched: Vec::new(),
                kernel_running: None,
                kernel_installed: None,
                boot_id: Str::from(""),
                php_installed: Vec::new(),
                php_active: None,
                releases_installed: Vec::new(),
                release_active: None,
                lb: LbServer { admin: Admin::Ready, weight: 100, active: 0 },
                health: Health::Unknown,
            });
        }
        for (n, o) in self.nodes.iter().zip(out.iter_mut()) {
            o.reachable = !n.dead && n.down_until <= now;
            o.busy = !n.dead && (n.down_until > now || n.disrupted_until > now);
            // The installed kernel follows from the packages (a glob match
            // per package): worked out again only when they changed.
            if o.packages != n.packages {
                o.packages.clone_from(&n.packages);
                o.kernel_installed = kernel_of(&self.fleet, &n.packages);
            }
            o.fetched.clone_from(&n.fetched);
            o.kernel_running.clone_from(&n.kernel_running);
            if o.boot_id.parse::<u64>() != Ok(n.boot) {
                o.boot_id = Str::from(n.boot.to_string());
            }
            o.php_installed.clone_from(&n.php_installed);
            o.php_active.clone_from(&n.php_active);
            o.releases_installed.clone_from(&n.releases);
            o.release_active.clone_from(&n.release_active);
            o.lb = LbServer { admin: n.admin, weight: 100, active: n.active };
            o.health = n.last_health;
        }
    }

    fn site_sessions(&self, env: Environment) -> u32 {
        match env {
            Environment::Production => self.cfg.sessions_per_site,
            Environment::Preproduction => (self.cfg.sessions_per_site / 100).max(1),
        }
    }

    fn arrival_rate(&self, env: Environment) -> f64 {
        if !self.cfg.traffic {
            return 0.0;
        }
        self.site_sessions(env) as f64 / self.cfg.session_life_s
    }

    // ---- the run -----------------------------------------------------------

    pub fn run(mut self) -> Report {
        let bound_s = self.run_events();
        self.report(bound_s)
    }

    /// The world a reconciler pass sees at virtual time `t_ms` of this run
    /// (or where the run ends, if earlier): the observation, the journal
    /// with that observation's gate evidence recorded, and the instant.
    /// For measuring a pass in mid-rollout (windows open, steering active).
    pub fn run_until(mut self, t_ms: u64) -> (Observed, Memory, u64) {
        self.cfg.max_virtual_s = self.cfg.max_virtual_s.min(t_ms as f64 / 1000.0);
        self.run_events();
        let obs = self.observe();
        let now = self.now;
        let memory = match self.ctl {
            Some(mut c) => {
                c.record(&obs, now);
                c.memory
            }
            None => Memory::default(),
        };
        (obs, memory, now)
    }

    /// The event loop of `run`, to its end or `max_virtual_s`; returns the
    /// rollout's lower bound (seconds).
    fn run_events(&mut self) -> f64 {
        let initial = self.observe();
        let bound = plan::bound::lower_bound(&self.fleet, &initial, &self.cfg.estimates);
        self.start_world(bound.total_s);
        self.at(0, Ev::Plan);
        self.plan_pending = true;
        let resync = (self.cfg.resync_s * 1000.0) as u64;
        self.at(resync, Ev::Resync);
        let max = (self.cfg.max_virtual_s * 1000.0) as u64;

        let mut same_instant = 0u32;
        while let Some(Reverse((t, _, ev))) = self.queue.pop() {
            if t > max {
                break;
            }
            // Every loop has a bound: a planner that acts again and again
            // without time passing is a livelock, reported as a violation.
            same_instant = if t == self.now { same_instant + 1 } else { 0 };
            if same_instant > MAX_EVENTS_PER_INSTANT && matches!(ev, Ev::Plan | Ev::ActionDone(_)) {
                let at = self.now;
                self.checker.violate(at, Invariant::Service, || {
                    "livelock: the reconciler kept acting without time passing".into()
                });
                break;
            }
            self.now = t;
            self.handle(ev);
            if self.finished() {
                break;
            }
        }
        bound.total_s
    }

    /// Starts what the world does by itself: sessions and their requests,
    /// and the injected faults, spread over `span_s` (the rollout's lower
    /// bound). Reconciler crashes are the built-in driver's only: an
    /// external reconciler is crashed by whoever runs it.
    fn start_world(&mut self, span_s: f64) {
        let fleet = Arc::clone(&self.fleet);
        let fleet = &*fleet;
        if self.cfg.traffic {
            for (s, site) in fleet.sites.iter().enumerate() {
                let n = self.site_sessions(site.environment);
                for _ in 0..n {
                    let sid = self.new_session(s as SiteId);
                    let first = (self.traffic_rng.f64() * self.cfg.think_s * 1000.0) as u64;
                    self.at(first, Ev::Request(sid));
                }
                let gap = self.gap_ms(site.environment);
                self.at(gap, Ev::Arrive(s as SiteId));
            }
        }
        // Faults scheduled over the rollout's expected span.
        let span_ms = ((span_s.max(60.0)) * 1000.0) as u64;
        if self.driver == Driver::Builtin {
            for _ in 0..self.cfg.faults.crash {
                let t = self.fault_rng.range(1, span_ms);
                self.at(t, Ev::Crash);
            }
        }
        for _ in 0..self.cfg.faults.node_death {
            let t = self.fault_rng.range(1, span_ms);
            let n = self.fault_rng.range(0, fleet.nodes.len() as u64 - 1) as NodeId;
            self.at(t, Ev::NodeDeath(n));
        }
        if self.cfg.faults.flush_fail > 0.0 {
            for f in 0..self.farms.len() {
                self.farms[f].flush_broken = self.fault_rng.chance(self.cfg.faults.flush_fail);
            }
        }
    }

    /// Processes every event due at or before `t`, in order, and leaves the
    /// clock at `t` (never earlier than it was). The external driver's way
    /// of letting virtual time pass; bounded because every event the world
    /// schedules for itself lies strictly in the future of the one that
    /// schedules it, except a new session's first request.
    /// `advance_to`, for at most about `budget` of wall time: returns whether
    /// it reached `t` (else `now` is the time of the last event handled).
    pub(crate) fn advance_within(&mut self, t: u64, budget: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + budget;
        let mut handled = 0u32;
        while let Some(&Reverse((at, _, _))) = self.queue.peek() {
            if at > t {
                break;
            }
            handled += 1;
            if handled.is_multiple_of(256) && std::time::Instant::now() >= deadline {
                return false;
            }
            let Some(Reverse((at, _, ev))) = self.queue.pop() else {
                break;
            };
            self.now = self.now.max(at);
            self.handle(ev);
        }
        self.now = self.now.max(t);
        true
    }

    /// One event at `self.now`.
    fn handle(&mut self, ev: Ev) {
        let t = self.now;
        match ev {
            Ev::Plan => {
                self.plan_pending = false;
                while self.wakeups.first().is_some_and(|&w| w <= t) {
                    self.wakeups.pop_first();
                }
                if self.alive {
                    self.reconcile();
                }
            }
            Ev::Resync => {
                self.request_plan();
                let resync = (self.cfg.resync_s * 1000.0) as u64;
                self.at(t + resync, Ev::Resync);
            }
            Ev::ActionDone(id) => self.action_done(id),
            Ev::Arrive(s) => {
                let sid = self.new_session(s);
                self.at(t, Ev::Request(sid));
                let gap = self.gap_ms(self.fleet.sites[s as usize].environment);
                self.at(t + gap, Ev::Arrive(s));
            }
            Ev::Request(sid) => self.request(sid),
            Ev::RequestEnd(n, f) => {
                let node = &mut self.nodes[n as usize];
                node.active = node.active.saturating_sub(1);
                let farm = &mut self.farms[f as usize];
                farm.active = farm.active.saturating_sub(1);
                if node.active == 0 && node.admin != Admin::Ready || farm.active == 0 && farm.admin == Admin::Maint {
                    self.request_plan();
                }
            }
            Ev::SessionEnd(sid) => self.end_session(sid),
            Ev::Crash => {
                if self.alive {
                    self.alive = false;
                    // Everything but the journal is dropped.
                    self.kept_journal = self.ctl.take().map(Controller::into_store);
                    self.crashes += 1;
                    self.say("reconciler crashed (SIGKILL): in-memory state lost, journal kept");
                    let back = self.fault_rng.range(1000, 10_000);
                    self.at(t + back, Ev::Restart);
                }
            }
            Ev::Restart => {
                self.alive = true;
                self.incarnation += 1;
                // A commit while drover was down: the world follows by
                // identity, the journal by its own (`plan::named`, when the
                // new controller opens it).
                if let Some(new) = self.cfg.respecs.get(self.incarnation as usize - 1).cloned() {
                    match self.respec(new) {
                        Ok(_) => self.last_observation = None,
                        Err(e) => self.say(&format!("the new spec is not applied: {e}")),
                    }
                }
                if let Some(journal) = self.kept_journal.take() {
                    // A new controller on the kept journal, as a restarted
                    // process opens its journal file.
                    match Controller::open(Arc::clone(&self.fleet), journal, t) {
                        Ok(c) => {
                            self.respecs.closed.extend(c.resolved.iter().map(|r| r.resolution.to_string()));
                            self.ctl = Some(c.with_estimates(self.cfg.estimates.clone()).quiet());
                        }
                        Err(e) => self.say(&format!("reconciler cannot open its journal: {e}")),
                    }
                }
                self.say("reconciler restarted from its journal");
                self.request_plan();
            }
            Ev::NodeDeath(n) => {
                self.nodes[n as usize].dead = true;
                let name = self.fleet.nodes[n as usize].name.clone();
                self.say(&format!("fault: node {name} died"));
                self.request_plan();
            }
        }
    }

    fn finished(&self) -> bool {
        if self.converged_at.is_some() || self.stopped {
            return true;
        }
        // Stuck: nothing in flight, no gate soaking, nothing started for a while
        // (capacity waits resolve within minutes as sessions end).
        let soaking = self.ctl.as_ref().is_some_and(|c| c.memory.gate.values().any(|r| !r.passed));
        let window_ahead = self.change_window_opens.is_some_and(|t| t > self.now);
        self.alive
            && self.in_flight.is_empty()
            && !soaking
            && !window_ahead
            && self.now.saturating_sub(self.last_activity) > IDLE_LIMIT_MS
    }

    fn gap_ms(&mut self, env: Environment) -> u64 {
        let rate = self.arrival_rate(env).max(1e-6);
        (self.traffic_rng.exp(1.0 / rate) * 1000.0) as u64 + 1
    }

    fn new_session(&mut self, site: SiteId) -> u32 {
        let fresh = Session { site, farm: None, seen: NONE_SEEN, ended: false };
        let sid = match self.free_sessions.pop() {
            Some(sid) => {
                self.sessions[sid as usize] = fresh;
                sid
            }
            None => {
                self.sessions.push(fresh);
                (self.sessions.len() - 1) as u32
            }
        };
        let life = (self.traffic_rng.exp(self.cfg.session_life_s) * 1000.0) as u64 + 1;
        let end = self.now + life;
        self.at(end, Ev::SessionEnd(sid));
        sid
    }

    fn end_session(&mut self, sid: u32) {
        let s = &mut self.sessions[sid as usize];
        s.ended = true;
        if let Some(f) = s.farm.take() {
            self.farms[f as usize].sessions -= 1;
        }
    }

    fn node_serving(&self, n: NodeId) -> bool {
        let node = &self.nodes[n as usize];
        !node.dead && node.down_until <= self.now && node.disrupted_until <= self.now && node.admin == Admin::Ready
    }

    fn farm_nbsrv(&self, f: FarmId) -> u32 {
        self.fleet.farms[f as usize].nodes.iter().filter(|&&n| self.node_serving(n)).count() as u32
    }

    fn farm_capacity(&self, f: FarmId) -> u64 {
        self.fleet.farms[f as usize]
            .nodes
            .iter()
            .filter(|&&n| self.node_serving(n))
            .map(|&n| self.nodes[n as usize].capacity as u64)
            .sum()
    }

    /// HAProxy's site backend: cookie first (unless the farm is in maint or
    /// down), else round-robin over farms that are ready with weight > 0.
    fn pick_farm(&mut self, site: SiteId, cookie: Option<FarmId>) -> Option<FarmId> {
        if let Some(f) = cookie
            && self.farms[f as usize].admin != Admin::Maint
            && self.farm_nbsrv(f) > 0
        {
            return Some(f);
        }
        // Smooth weighted round-robin (nginx/HAProxy-like): deterministic, proportional to weight.
        let farms = &self.fleet.sites[site as usize].farms;
        let mut total = 0i64;
        let mut best: Option<FarmId> = None;
        for &f in farms {
            let fs = &self.farms[f as usize];
            if fs.admin == Admin::Ready && fs.weight > 0 && self.farm_nbsrv(f) > 0 {
                let w = fs.weight as i64;
                total += w;
                self.farms[f as usize].current += w;
                let cur = self.farms[f as usize].current;
                if best.is_none_or(|b| cur > self.farms[b as usize].current) {
                    best = Some(f);
                }
            }
        }
        if let Some(b) = best {
            self.farms[b as usize].current -= total;
            if !self.respecs.unserved_sites.is_empty() {
                self.respecs.unserved_sites.remove(&site);
            }
        }
        best
    }

    fn request(&mut self, sid: u32) {
        let s = self.sessions[sid as usize];
        if s.ended {
            // The session's last event: its end came first, and this request
            // schedules no other. The slot is free (kept in batch runs, whose
            // violation texts name sessions by slot).
            if self.driver == Driver::External {
                self.free_sessions.push(sid);
            }
            return;
        }
        let now = self.now;
        match self.pick_farm(s.site, s.farm) {
            None => {
                let fleet = Arc::clone(&self.fleet);
                let fleet = &*fleet;
                let site = &fleet.sites[s.site as usize];
                let deaths = site
                    .farms
                    .iter()
                    .flat_map(|&f| &fleet.farms[f as usize].nodes)
                    .any(|&n| self.nodes[n as usize].dead);
                // A spec change that left no farm taking sessions is the operator's doing, as a death is a fault.
                if deaths || self.respecs.unserved_sites.contains(&s.site) {
                    self.checker.request_lost_to_fault();
                } else {
                    let name = site.name.clone();
                    self.checker.failed_request(now, || format!("site {name}: no farm takes sessions (503)"));
                }
            }
            Some(f) => {
                if s.farm != Some(f) {
                    if let Some(old) = s.farm {
                        self.farms[old as usize].sessions -= 1;
                    }
                    self.farms[f as usize].sessions += 1;
                    self.sessions[sid as usize].farm = Some(f);
                    self.check_farm_load(f);
                }
                let nodes = &self.fleet.farms[f as usize].nodes;
                let k = nodes.len() as u32;
                let mut chosen = None;
                for i in 0..k {
                    let idx = (self.farms[f as usize].rr + i) % k;
                    let n = nodes[idx as usize];
                    if self.node_serving(n) {
                        self.farms[f as usize].rr = idx + 1;
                        chosen = Some(n);
                        break;
                    }
                }
                let Some(n) = chosen else {
                    self.checker.failed_request(now, || "farm has no serving node".into());
                    return;
                };
                let served_ix = self.nodes[n as usize].release;
                let served = self.releases.rank(served_ix);
                let mut seen = self.releases.rank(s.seen);
                if served < seen && self.on_rollback_target(n) {
                    // The operator asked for this release back: sessions
                    // that saw a newer one go back with it, as declared.
                    seen = served;
                }
                let name = &self.fleet.nodes[n as usize].name;
                self.checker.request(now, seen, served, sid as u64, name);
                if self.nodes[n as usize].cold {
                    let name = name.clone();
                    self.checker.violate(now, Invariant::Hooks, || format!("{name} answered cold (not warmed up)"));
                }
                if served > self.releases.rank(s.seen) || s.seen == NONE_SEEN {
                    self.sessions[sid as usize].seen = served_ix;
                }
                self.nodes[n as usize].active += 1;
                self.farms[f as usize].active += 1;
                let (lo, hi) = self.cfg.request_ms;
                let dur = if self.traffic_rng.chance(self.cfg.faults.slow_drain) {
                    self.traffic_rng.range(30_000, 120_000)
                } else {
                    self.traffic_rng.range(lo, hi)
                };
                self.at(now + dur, Ev::RequestEnd(n, f));
            }
        }
        let think = (self.traffic_rng.exp(self.cfg.think_s) * 1000.0) as u64 + 1;
        self.at(now + think, Ev::Request(sid));
    }

    /// The node runs its target's release and that target allows going
    /// backwards (`allow_rollback`): an explicit rollback.
    fn on_rollback_target(&self, n: NodeId) -> bool {
        let target = self.fleet.node_target(n);
        target.allow_rollback && self.nodes[n as usize].release_active.as_ref() == Some(&target.release)
    }

    /// Invariant 1: a farm never carries more sessions than its serving nodes hold.
    fn check_farm_load(&mut self, f: FarmId) {
        if self.farms[f as usize].admin == Admin::Maint {
            // Out of the LB: its cookie holders are served elsewhere.
            self.farms[f as usize].over_capacity = false;
            return;
        }
        let cap = self.farm_capacity(f);
        let load = self.farms[f as usize].sessions as u64;
        let over = load > cap;
        // Capacity that injected node deaths took away is the fault's doing,
        // not drover's: count it as if those nodes still served.
        let lost_to_faults: u64 = self.fleet.farms[f as usize]
            .nodes
            .iter()
            .map(|&n| &self.nodes[n as usize])
            .filter(|n| n.dead)
            .map(|n| n.capacity as u64)
            .sum();
        if over && load > cap + lost_to_faults && !self.farms[f as usize].over_capacity {
            let name = self.fleet.farms[f as usize].name.clone();
            self.checker.violate(self.now, Invariant::Capacity, || {
                format!("farm {name} carries {load} sessions, capacity {cap}")
            });
        }
        self.farms[f as usize].over_capacity = over;
    }

    // ---- reconciler --------------------------------------------------------

    fn reconcile(&mut self) {
        self.update_gate_tracker();
        if self.serial.is_some() {
            self.serial_step();
            return;
        }
        let mut obs = self.last_observation.take().unwrap_or_else(|| Observed {
            nodes: Vec::new(),
            farms: Vec::new(),
            sites: Vec::new(),
        });
        self.observe_into(&mut obs);
        let now = self.now;
        let Some(ctl) = self.ctl.as_mut() else {
            return;
        };
        // The same controller as on machines: a run ends stuck after the
        // idle limit with nothing to wait for.
        let mode = crate::control::Mode { stall_ms: IDLE_LIMIT_MS, ..Default::default() };
        let step = match ctl.step(&obs, now, mode, &mut |_| {}) {
            Ok(s) => s,
            Err(e) => {
                // A journal in memory does not fail; a controller error is a bug.
                self.checker.violate(now, Invariant::Service, || format!("the controller failed: {e}"));
                self.stopped = true;
                return;
            }
        };
        let clean = ctl.clean_nodes();
        let events = if self.show_progress { ctl.progress(&step.pass, now) } else { Vec::new() };
        if let Some((listener, last)) = self.pass_progress.as_mut()
            && last.is_none_or(|t| now >= t + PASS_PROGRESS_EVERY_MS)
        {
            *last = Some(now);
            listener(now, clean, self.fleet.nodes.len());
        }
        self.last_observation = Some(obs);
        let pass = step.pass;
        self.halted = pass.halted;
        self.blocked = pass.blocked.clone();
        if pass.halted && step.started.is_empty() && self.in_flight.is_empty() {
            self.say("halted: failures exceed the budget; everything in flight finished safely");
            self.stopped = true;
            return;
        }
        // Done with everything that answered: the run ends (a dead node
        // never answers again; the report names it and is not converged).
        if pass.settled {
            self.settle(pass.unobserved.len());
            return;
        }
        if !step.started.is_empty() {
            self.last_activity = now;
        }
        for p in step.started {
            self.dispatch(p.action, p.why);
        }
        let fleet = Arc::clone(&self.fleet);
        for e in events {
            self.say(&e.line(&fleet, &plan::progress::hms));
        }
        // Wake up when something waited for happens by itself (a change
        // window opens, a soak ends, a drain times out, a back-off ends).
        self.change_window_opens = pass.change_window_opens_ms;
        if let Some(t) = step.wake_ms {
            self.wake_at(t);
        }
    }

    /// Starts an action now; returns its id and the virtual instant it ends.
    fn dispatch(&mut self, action: Action, why: String) -> (u64, u64) {
        let fleet = Arc::clone(&self.fleet);
        let fleet = &*fleet;
        let now = self.now;
        let kind = action.kind().name().to_string();
        *self.action_counts.entry(kind).or_default() += 1;
        if self.cfg.record_actions {
            self.started.push(Started { at_ms: now, action: action.clone(), why });
        }
        self.check_start(&action);
        if let Some((kind, after)) = self.cfg.crash_after_start
            && kind == action.kind()
            && self.driver == Driver::Builtin
        {
            self.cfg.crash_after_start = None;
            self.at(now + after, Ev::Crash);
        }
        let e = self.cfg.estimates.clone();
        let ssh_timeout = |s: &mut Self| s.fault_rng.chance(s.cfg.faults.ssh_timeout);
        let (dur, outcome) = match &action {
            Action::Fetch { .. }
            | Action::StagePhp { .. }
            | Action::StageRelease { .. }
            | Action::InstallOnline { .. } => {
                let mean = match &action {
                    Action::Fetch { .. } => e.fetch_s,
                    Action::InstallOnline { .. } => e.install_s,
                    _ => e.rsync_s,
                };
                let d = self.dur(mean);
                if ssh_timeout(self) {
                    (d, Outcome::Failed("ssh command timed out".into()))
                } else if matches!(action, Action::InstallOnline { .. })
                    && self.fault_rng.chance(self.cfg.faults.action_fail)
                {
                    (d, Outcome::Failed("emerge exited 1".into()))
                } else {
                    (d, Outcome::Ok)
                }
            }
            Action::SetNode { .. } | Action::SetFarm { .. } | Action::SetFarmWeight { .. } => {
                (self.dur(e.lb_s), Outcome::Ok)
            }
            Action::Upgrade { node, disruption, .. } => {
                let n = *node as usize;
                let restart = if disruption.reboot { e.reboot_s } else { e.restart_s };
                let d = self.dur(e.install_s.min(5.0) + restart);
                if ssh_timeout(self) {
                    (d, Outcome::Failed("ssh command timed out".into()))
                } else if self.fault_rng.chance(self.cfg.faults.action_fail) {
                    // emerge fails before anything restarts.
                    (self.dur(e.install_s.min(5.0)), Outcome::Failed("emerge exited 1".into()))
                } else {
                    let node = &mut self.nodes[n];
                    node.needs_health = true;
                    let until = now + d;
                    if disruption.reboot {
                        node.down_until = until;
                    } else {
                        node.disrupted_until = until;
                    }
                    if self.fault_rng.chance(self.cfg.faults.health_fail) {
                        self.nodes[n].unhealthy = true;
                    }
                    (d, Outcome::Ok)
                }
            }
            Action::Activate { node, .. } => {
                let d = self.dur(e.activate_s);
                self.nodes[*node as usize].needs_health = true;
                if self.fault_rng.chance(self.cfg.faults.health_fail) {
                    self.nodes[*node as usize].unhealthy = true;
                }
                if ssh_timeout(self) { (d, Outcome::Failed("ssh command timed out".into())) } else { (d, Outcome::Ok) }
            }
            Action::HealthCheck { node } => {
                let n = &self.nodes[*node as usize];
                // Services still restarting answer nothing.
                let ok = !n.dead && n.down_until <= now && n.disrupted_until <= now && !n.unhealthy;
                let d = self.dur(e.health_s);
                if ok {
                    (d, Outcome::Ok)
                } else {
                    (
                        d,
                        Outcome::Failed(format!(
                            "GET {} failed {} times",
                            fleet.policy.health.path, fleet.policy.health.retries
                        )),
                    )
                }
            }
            Action::FlushCache { farm } => {
                let d = self.dur(e.flush_s);
                if self.farms[*farm as usize].flush_broken {
                    (d, Outcome::Failed("memcached: connection refused".into()))
                } else {
                    (d, Outcome::Ok)
                }
            }
            Action::MarkFailed { .. } => (0, Outcome::Ok),
            Action::Migrate { node, release, phase, resume } => {
                let env = fleet.sites[fleet.nodes[*node as usize].site as usize].environment;
                let applied = self.migrations_applied.contains_key(&(env, release.0.to_string(), *phase));
                let hook = fleet.migration_hook(release, *phase).unwrap_or("?").to_string();
                // A run of a drover that crashed may still be going: its
                // hook's `status` cannot say "not applied" (the contract:
                // exit 3 only when no run is in progress).
                let running = self.in_flight.values().any(|f| match &f.action {
                    Action::Migrate { node: m, release: r2, phase: p2, .. } => {
                        r2 == release
                            && p2 == phase
                            && fleet.sites[fleet.nodes[*m as usize].site as usize].environment == env
                    }
                    _ => false,
                });
                if *resume && running && !applied {
                    let why = format!("{} exit 4: a run is in progress", plan::memory::STATUS_UNKNOWN);
                    (self.dur(e.health_s), Outcome::Failed(why))
                } else if *resume && applied {
                    // The hook's `status`: completed; nothing runs again.
                    (self.dur(e.health_s), Outcome::Ok)
                } else if ssh_timeout(self) {
                    (self.dur(e.migrate_s), Outcome::Failed("ssh command timed out".into()))
                } else if self.fault_rng.chance(self.cfg.faults.migration_fail) {
                    (self.dur(e.migrate_s / 2.0), Outcome::Failed(format!("hook `{hook}` exited 1")))
                } else {
                    (self.dur(e.migrate_s), Outcome::Ok)
                }
            }
            Action::Warmup { .. } => {
                let d = self.dur(e.warmup_s);
                if ssh_timeout(self) { (d, Outcome::Failed("warm-up timed out".into())) } else { (d, Outcome::Ok) }
            }
            Action::Snapshot { .. } => {
                let d = self.dur(e.snapshot_s);
                if ssh_timeout(self) { (d, Outcome::Failed("ssh command timed out".into())) } else { (d, Outcome::Ok) }
            }
        };
        // A dead node never answers: the executor's command timeout reports it.
        let (dur, outcome) = match action.subject() {
            Subject::Node(n)
                if self.nodes[n as usize].dead
                    && !matches!(action, Action::MarkFailed { .. } | Action::SetNode { .. }) =>
            {
                (60_000, Outcome::Failed("ssh: connect timed out".into()))
            }
            _ => (dur, outcome),
        };
        let id = self.next_action;
        self.next_action += 1;
        self.in_flight
            .insert(id, InFlight { action, incarnation: self.incarnation, outcome, started_ms: now, abandoned: false });
        self.at(now + dur, Ev::ActionDone(id));
        (id, now + dur)
    }

    fn action_done(&mut self, id: u64) {
        let Some(f) = self.in_flight.remove(&id) else {
            return;
        };
        if self.driver == Driver::External {
            // The world changes at the action's end whoever waits for it;
            // drover learns a failure only when its executor collects it.
            if f.outcome == Outcome::Ok {
                self.apply(&f.action);
            }
            if let Action::MarkFailed { node, .. } = &f.action {
                self.failed.insert(*node);
            }
            if f.abandoned {
                self.lost_outcomes += 1;
            } else {
                self.completed.insert(id, f);
            }
            return;
        }
        let now = self.now;
        // An outcome that reaches no live reconciler is lost (the node is
        // re-observed and the step retried): it only counts as a failure
        // when drover learns it.
        let delivered = f.incarnation == self.incarnation && self.alive;
        if f.outcome == Outcome::Ok {
            self.apply(&f.action);
        } else if delivered {
            self.learn_failure(&f.action, &f.outcome);
        }
        if let Action::MarkFailed { node, .. } = &f.action {
            self.failed.insert(*node);
        }
        if f.incarnation == self.incarnation && self.alive {
            if let Some(ctl) = self.ctl.as_mut() {
                let took = std::time::Duration::from_millis(now.saturating_sub(f.started_ms));
                if let Err(e) = ctl.completed(f.action.clone(), f.outcome.clone(), took, now, &mut |_| {}) {
                    self.checker.violate(now, Invariant::Service, || format!("the controller failed: {e}"));
                }
            }
            if let Some(serial) = self.serial.as_mut()
                && let Subject::Node(n) = f.action.subject()
            {
                if f.outcome == Outcome::Ok {
                    *serial.step.entry(n).or_default() += 1;
                } else {
                    serial.step.insert(n, u8::MAX);
                }
            }
        }
        self.last_activity = now;
        self.request_plan();
    }

    /// A failed outcome reaches drover: the node (or farm) is failed from
    /// now on, for the checker as for the planner.
    fn learn_failure(&mut self, action: &Action, outcome: &Outcome) {
        let fleet = Arc::clone(&self.fleet);
        let fleet = &*fleet;
        match action {
            Action::Upgrade { node, .. }
            | Action::Activate { node, .. }
            | Action::HealthCheck { node }
            | Action::Warmup { node }
            | Action::Snapshot { node, .. } => {
                self.failed.insert(*node);
                self.nodes[*node as usize].last_health = Health::Failing;
                let name = fleet.nodes[*node as usize].name.clone();
                self.say(&format!("{name}: {} {outcome}", action.kind().name()));
            }
            Action::FlushCache { farm } => {
                self.failed_farms.insert(*farm);
                let name = fleet.farms[*farm as usize].name.clone();
                self.say(&format!("farm {name}: memcached flush failed: the switch stops there"));
            }
            Action::Migrate { node, release, phase, .. } => {
                let env = fleet.sites[fleet.nodes[*node as usize].site as usize].environment;
                let unknown = matches!(outcome, Outcome::Failed(e) if e.starts_with(plan::memory::STATUS_UNKNOWN));
                if !unknown {
                    self.failed_migrations.insert((env, release.0.to_string(), *phase));
                    self.say(&format!("{} migration of {release} for {}: {outcome}", phase.name(), env.name()));
                }
            }
            _ => {}
        }
    }

    /// External driver: the outcome of action `id` if it has ended (and
    /// drover now knows it), else `None`.
    fn deliver(&mut self, id: u64) -> Option<Outcome> {
        let f = self.completed.remove(&id)?;
        if f.outcome != Outcome::Ok {
            self.learn_failure(&f.action, &f.outcome);
        }
        Some(f.outcome)
    }

    /// External driver: the executor of action `id` is gone. A running
    /// action still ends in the world; an ended one's outcome is dropped.
    fn abandon(&mut self, id: u64) {
        if let Some(f) = self.in_flight.get_mut(&id) {
            f.abandoned = true;
        } else if self.completed.remove(&id).is_some() {
            self.lost_outcomes += 1;
        }
    }

    /// Effects of a successful action on the simulated world.
    fn apply(&mut self, action: &Action) {
        let now = self.now;
        let fleet = Arc::clone(&self.fleet);
        let fleet = &*fleet;
        match action {
            Action::Fetch { node, atoms } => {
                let n = &mut self.nodes[*node as usize];
                for a in atoms {
                    n.fetched.retain(|(k, _)| **k != *a.key());
                    n.fetched.push((Str::from(a.key()), a.version.clone()));
                }
            }
            Action::StagePhp { node, version } => {
                let n = &mut self.nodes[*node as usize];
                if !n.php_installed.contains(version) {
                    n.php_installed.push(version.clone());
                }
            }
            Action::StageRelease { node, release } => {
                let keep = fleet.policy.releases_kept as usize;
                let n = &mut self.nodes[*node as usize];
                if !n.releases.contains(release) {
                    n.releases.push(release.clone());
                }
                // Prune the oldest, never the active one.
                while n.releases.len() > keep {
                    let active = n.release_active.clone();
                    if let Some(i) = n.releases.iter().position(|r| Some(r) != active.as_ref() && r != release) {
                        n.releases.remove(i);
                    } else {
                        break;
                    }
                }
            }
            Action::InstallOnline { node, atoms } | Action::Upgrade { node, atoms, .. } => {
                let n = &mut self.nodes[*node as usize];
                for a in atoms {
                    n.packages.retain(|(k, _)| **k != *a.key());
                    n.packages.push((Str::from(a.key()), a.version.clone()));
                }
                n.packages.sort();
                if let Action::Upgrade { disruption, .. } = action
                    && disruption.reboot
                {
                    n.kernel_running = kernel_of(fleet, &n.packages);
                    n.boot += 1;
                }
            }
            Action::Activate { node, php, release, .. } => {
                let n = &mut self.nodes[*node as usize];
                if let Some(p) = php {
                    n.php_active = Some(p.clone());
                }
                if let Some(r) = release {
                    n.cold = fleet.warms_up(r);
                    n.release_active = Some(r.clone());
                    // Every target's release is in the table (`set_fleet`
                    // refuses a spec that would overflow it); one that is
                    // not would rank lowest.
                    n.release = self.releases.index(r).unwrap_or(NONE_SEEN);
                }
            }
            Action::HealthCheck { node } => {
                let n = &mut self.nodes[*node as usize];
                n.needs_health = false;
                n.last_health = Health::Passing;
            }
            Action::Migrate { node, release, phase, resume } => {
                let env = fleet.sites[fleet.nodes[*node as usize].site as usize].environment;
                let runs = self.migrations_applied.entry((env, release.0.to_string(), *phase)).or_default();
                // A resumed migration whose status said "completed" did not run.
                if !(*resume && *runs > 0) {
                    *runs += 1;
                }
                if *runs > 1 {
                    let runs = *runs;
                    self.checker.violate(now, Invariant::Hooks, || {
                        format!(
                            "{} migration of release {release} for {} applied {runs} times",
                            phase.name(),
                            env.name()
                        )
                    });
                }
            }
            Action::Warmup { node } => self.nodes[*node as usize].cold = false,
            Action::Snapshot { .. } => {}
            Action::SetNode { node, admin } => {
                let n = &mut self.nodes[*node as usize];
                if n.admin == Admin::Ready && *admin != Admin::Ready {
                    n.left_ready_at = now;
                }
                n.admin = *admin;
                let f = fleet.nodes[*node as usize].farm;
                self.check_farm_load(f);
            }
            Action::SetFarm { farm, admin } => {
                let f = &mut self.farms[*farm as usize];
                if f.admin == Admin::Ready && *admin != Admin::Ready {
                    f.left_ready_at = now;
                }
                f.admin = *admin;
                if *admin == Admin::Ready {
                    f.weight = fleet.farms[*farm as usize].lb_weight;
                    self.check_farm_load(*farm);
                    let name = fleet.farms[*farm as usize].name.clone();
                    let t = fleet.farm_target(*farm);
                    let msg = format!("farm {name} back in on release {} php {}", t.release, t.php);
                    self.say(&msg);
                }
            }
            Action::SetFarmWeight { farm, weight } => self.farms[*farm as usize].weight = *weight,
            Action::FlushCache { .. } | Action::MarkFailed { .. } => {}
        }
    }

    // ---- the independent checker's view of action starts --------------------

    fn update_gate_tracker(&mut self) {
        let fleet = Arc::clone(&self.fleet);
        let fleet = &*fleet;
        let soak = fleet.policy.soak.as_millis() as u64;
        let mut per_profile: BTreeMap<u32, Option<BTreeSet<(String, String)>>> = BTreeMap::new();
        for (n, node) in fleet.nodes.iter().enumerate() {
            if fleet.sites[node.site as usize].environment != Environment::Preproduction {
                continue;
            }
            let s = &self.nodes[n];
            let healthy = self.node_serving(n as NodeId)
                && !self.failed.contains(&(n as NodeId))
                && !s.needs_health
                && self.farms[node.farm as usize].admin == Admin::Ready;
            let mut vals = BTreeSet::new();
            if healthy {
                for (k, v) in &s.packages {
                    vals.insert((format!("pkg:{k}"), v.to_string()));
                }
                if let Some(p) = &s.php_active {
                    vals.insert(("php".into(), p.0.to_string()));
                }
                if let Some(r) = &s.release_active {
                    vals.insert(("release".into(), r.0.to_string()));
                }
                if let Some(k) = &s.kernel_running {
                    vals.insert(("kernel".into(), k.to_string()));
                }
            }
            let e = per_profile.entry(node.profile).or_insert(None);
            *e = Some(match e.take() {
                None => vals,
                Some(prev) => prev.intersection(&vals).cloned().collect(),
            });
        }
        let mut present = BTreeSet::new();
        for (p, vals) in per_profile {
            for (c, v) in vals.unwrap_or_default() {
                present.insert((p, c, v));
            }
        }
        let now = self.now;
        for k in &present {
            let e = self.gate_since.entry(k.clone()).or_insert((now, false));
            if now.saturating_sub(e.0) >= soak {
                e.1 = true;
            }
        }
        self.gate_since.retain(|k, v| v.1 || present.contains(k));
    }

    fn prod_gate_ok(&self, n: NodeId, component: &str, value: &str) -> bool {
        let fleet = Arc::clone(&self.fleet);
        let fleet = &*fleet;
        let node = &fleet.nodes[n as usize];
        fleet.sites[node.site as usize].environment == Environment::Preproduction
            || fleet.policy.waive_preproduction_gate
            || self.gate_since.get(&(node.profile, component.to_string(), value.to_string())).is_some_and(|v| v.1)
    }

    fn check_start(&mut self, action: &Action) {
        let fleet = Arc::clone(&self.fleet);
        let fleet = &*fleet;
        let p = &fleet.policy;
        let now = self.now;
        let budget_spent =
            self.failed.len() + self.failed_farms.len() + self.failed_migrations.len() > p.failure_budget as usize;
        let drain_ms = p.drain_timeout.as_millis() as u64;
        self.prune_held();
        match action {
            Action::SetNode { node, admin } if *admin != Admin::Ready => {
                let n = *node;
                let f = fleet.nodes[n as usize].farm;
                if self.failed.contains(&n) || self.farms[f as usize].admin == Admin::Maint {
                    return;
                }
                if self.nodes[n as usize].admin == Admin::Ready {
                    if budget_spent {
                        self.checker.violate(now, Invariant::FailureBudget, || {
                            format!("new window on {} after the failure budget was spent", fleet.nodes[n as usize].name)
                        });
                    }
                    let out = fleet.farms[f as usize]
                        .nodes
                        .iter()
                        .filter(|&&m| {
                            m != n
                                && self.nodes[m as usize].admin != Admin::Ready
                                && !self.failed.contains(&m)
                                // Held after a spec change: out, but not for drover's work.
                                && !self.respecs.held_nodes.contains(&m)
                        })
                        .count() as u32
                        + 1;
                    let max = fleet.farms[f as usize].max_unavailable;
                    if !crate::invariants::node_capacity_ok(out, max) {
                        let name = fleet.farms[f as usize].name.clone();
                        self.checker.violate(now, Invariant::Capacity, || {
                            format!("farm {name}: {out} nodes out (max_unavailable {max})")
                        });
                    }
                }
            }
            Action::SetNode { node, admin: Admin::Ready } => {
                if self.nodes[*node as usize].needs_health && !self.failed.contains(node) {
                    let name = fleet.nodes[*node as usize].name.clone();
                    self.checker.violate(now, Invariant::DrainedBeforeDisrupted, || {
                        format!("{name} back in without a passing health check")
                    });
                }
            }
            Action::Upgrade { node, atoms, .. } => {
                let n = *node;
                let s = &self.nodes[n as usize];
                let f = fleet.nodes[n as usize].farm;
                let farm = &self.farms[f as usize];
                let farm_out = farm.admin == Admin::Maint;
                let takes_traffic = !farm_out && s.admin == Admin::Ready;
                let since = if farm_out { farm.left_ready_at } else { s.left_ready_at };
                let active = if farm_out { s.active.max(0) } else { s.active };
                if !crate::invariants::drained(takes_traffic, active, now.saturating_sub(since) >= drain_ms) {
                    let name = fleet.nodes[n as usize].name.clone();
                    self.checker.violate(now, Invariant::DrainedBeforeDisrupted, || {
                        format!("{name} upgraded while taking traffic ({active} requests in flight)")
                    });
                    // Requests in progress are cut.
                    for _ in 0..active {
                        self.checker.failed_request(now, || format!("request cut by a restart of {name}"));
                    }
                }
                for a in atoms.clone() {
                    if !self.prod_gate_ok(n, &format!("pkg:{}", a.key()), &a.version) {
                        let name = fleet.nodes[n as usize].name.clone();
                        self.checker.violate(now, Invariant::PreproductionFirst, || {
                            format!("{name} installs {a} before preproduction soaked it")
                        });
                    }
                }
            }
            Action::InstallOnline { node, atoms } => {
                for a in atoms.clone() {
                    if !self.prod_gate_ok(*node, &format!("pkg:{}", a.key()), &a.version) {
                        let name = fleet.nodes[*node as usize].name.clone();
                        self.checker.violate(now, Invariant::PreproductionFirst, || {
                            format!("{name} installs {a} before preproduction soaked it")
                        });
                    }
                }
            }
            Action::Activate { node, php, release, rollback } => {
                let n = *node;
                let f = fleet.nodes[n as usize].farm;
                let farm = &self.farms[f as usize];
                let timed_out = now.saturating_sub(farm.left_ready_at) >= drain_ms;
                if !*rollback && (farm.admin != Admin::Maint || (farm.active > 0 && !timed_out)) {
                    let name = fleet.farms[f as usize].name.clone();
                    self.checker.violate(now, Invariant::MonotonicSessions, || {
                        format!("a node of farm {name} switched while the farm was serving (not farm-atomic)")
                    });
                }
                let checks = [
                    ("php", php.as_ref().map(|p| p.0.to_string())),
                    ("release", release.as_ref().map(|r| r.0.to_string())),
                ];
                if let Some(r) = release
                    && fleet.migration_hook(r, MigrationPhase::Expand).is_some()
                {
                    let env = fleet.sites[fleet.nodes[n as usize].site as usize].environment;
                    if !self.migrations_applied.contains_key(&(env, r.0.to_string(), MigrationPhase::Expand)) {
                        let name = fleet.nodes[n as usize].name.clone();
                        self.checker.violate(now, Invariant::Hooks, || {
                            format!("{name} switches to release {r} before {}'s expand migration", env.name())
                        });
                    }
                }
                for (c, v) in checks {
                    if let Some(v) = v
                        && !self.prod_gate_ok(n, c, &v)
                    {
                        let name = fleet.nodes[n as usize].name.clone();
                        self.checker.violate(now, Invariant::PreproductionFirst, || {
                            format!("{name} switches {c} to {v} before preproduction soaked it")
                        });
                    }
                }
            }
            Action::SetFarm { farm, admin: Admin::Maint } => {
                let f = *farm;
                if self.farms[f as usize].admin == Admin::Maint || self.failed_farms.contains(&f) {
                    return;
                }
                if budget_spent {
                    let name = fleet.farms[f as usize].name.clone();
                    self.checker.violate(now, Invariant::FailureBudget, || {
                        format!("farm {name} taken out after the failure budget was spent")
                    });
                }
                let site = fleet.farms[f as usize].site;
                let farms = &fleet.sites[site as usize].farms;
                let out = farms
                    .iter()
                    .filter(|&&g| {
                        g != f
                            && self.farms[g as usize].admin == Admin::Maint
                            && !self.failed_farms.contains(&g)
                            && !self.respecs.held_farms.contains(&g)
                            // A farm whose every node failed is out by failure, not by work.
                            && !fleet.farms[g as usize].nodes.iter().all(|n| self.failed.contains(n))
                    })
                    .count() as u32
                    + 1;
                let serving = farms
                    .iter()
                    .filter(|&&g| g != f && self.farms[g as usize].admin != Admin::Maint && self.farm_nbsrv(g) > 0)
                    .count() as u32;
                if !crate::invariants::farm_capacity_ok(out, p.max_farms_down, serving) {
                    let name = fleet.sites[site as usize].name.clone();
                    self.checker.violate(now, Invariant::Capacity, || {
                        format!("site {name}: {out} farms out, {serving} serving (max_farms_down {})", p.max_farms_down)
                    });
                }
                let full: u64 = farms
                    .iter()
                    .flat_map(|&g| fleet.farms[g as usize].nodes.iter())
                    .map(|&n| self.nodes[n as usize].capacity as u64)
                    .sum();
                let left: u64 = farms
                    .iter()
                    .filter(|&&g| g != f && self.farms[g as usize].admin != Admin::Maint)
                    .map(|&g| self.farm_capacity(g))
                    .sum();
                if (left as f64) < fleet.sites[site as usize].capacity_floor * full as f64 {
                    let name = fleet.sites[site as usize].name.clone();
                    self.checker.violate(now, Invariant::Capacity, || {
                        format!("site {name}: serving capacity {left} of {full}, below the floor")
                    });
                }
            }
            Action::Migrate { node, release, phase: MigrationPhase::Contract, .. } => {
                let env = fleet.sites[fleet.nodes[*node as usize].site as usize].environment;
                let behind = fleet.nodes.iter().enumerate().find(|(m, n)| {
                    fleet.sites[n.site as usize].environment == env
                        && !self.failed.contains(&(*m as NodeId))
                        && !self.nodes[*m].dead
                        && self.nodes[*m].release_active.as_ref() != Some(release)
                });
                if let Some((_, n)) = behind {
                    let name = n.name.clone();
                    self.checker.violate(now, Invariant::Hooks, || {
                        format!("{}'s contract migration of {release} while {name} serves another release", env.name())
                    });
                }
            }
            Action::Migrate { node, release, phase: MigrationPhase::Expand, .. } => {
                let env = fleet.sites[fleet.nodes[*node as usize].site as usize].environment;
                let preprod_targets = fleet.farms.iter().enumerate().any(|(f, farm)| {
                    fleet.sites[farm.site as usize].environment == Environment::Preproduction
                        && fleet.farm_target(f as FarmId).release == *release
                });
                let preprod_done = self.migrations_applied.contains_key(&(
                    Environment::Preproduction,
                    release.0.to_string(),
                    MigrationPhase::Expand,
                ));
                if env == Environment::Production
                    && preprod_targets
                    && !preprod_done
                    && !fleet.policy.waive_preproduction_gate
                {
                    self.checker.violate(now, Invariant::PreproductionFirst, || {
                        format!("production's expand migration of {release} before preproduction's")
                    });
                }
            }
            Action::SetFarm { farm, admin: Admin::Ready } => {
                for &n in &fleet.farms[*farm as usize].nodes {
                    let s = &self.nodes[n as usize];
                    if s.cold && !self.failed.contains(&n) && s.admin == Admin::Ready {
                        let name = fleet.nodes[n as usize].name.clone();
                        self.checker
                            .violate(now, Invariant::Hooks, || format!("farm returns with {name} not warmed up"));
                    }
                    if s.needs_health && !self.failed.contains(&n) && s.admin == Admin::Ready {
                        let name = fleet.nodes[n as usize].name.clone();
                        self.checker.violate(now, Invariant::DrainedBeforeDisrupted, || {
                            format!("farm returns with {name} not health-checked")
                        });
                    }
                }
            }
            _ => {}
        }
    }

    // ---- the naive strategy --------------------------------------------------

    fn serial_step(&mut self) {
        let fleet = Arc::clone(&self.fleet);
        let fleet = &*fleet;
        let Some(mut serial) = self.serial.take() else {
            return;
        };
        let mut actions = Vec::new();
        loop {
            let start = serial.batch * serial.per_batch;
            if start >= serial.order.len() {
                break;
            }
            let batch: Vec<NodeId> = serial.order[start..(start + serial.per_batch).min(serial.order.len())].to_vec();
            let mut batch_done = true;
            for &n in &batch {
                let step = *serial.step.get(&n).unwrap_or(&0);
                if step == u8::MAX || step >= 7 {
                    continue;
                }
                batch_done = false;
                if self.in_flight.values().any(|f| f.action.subject() == Subject::Node(n)) {
                    continue;
                }
                let obs = self.observe();
                let d = node_diff(fleet, n, &obs.nodes[n as usize]);
                let a = match step {
                    0 => Action::SetNode { node: n, admin: Admin::Maint },
                    1 => Action::Upgrade {
                        node: n,
                        atoms: d.online.iter().chain(&d.disruptive).cloned().collect(),
                        disruption: d.window_disruption(),
                    },
                    2 => Action::StagePhp { node: n, version: fleet.node_target(n).php.clone() },
                    3 => Action::StageRelease { node: n, release: fleet.node_target(n).release.clone() },
                    4 => Action::Activate {
                        node: n,
                        php: d.switch_php.clone(),
                        release: d.switch_release.clone(),
                        rollback: false,
                    },
                    5 => Action::HealthCheck { node: n },
                    _ => Action::SetNode { node: n, admin: Admin::Ready },
                };
                actions.push(a);
            }
            if batch_done {
                serial.batch += 1;
                continue;
            }
            break;
        }
        let all_done = serial.batch * serial.per_batch >= serial.order.len();
        self.serial = Some(serial);
        if all_done && self.in_flight.is_empty() {
            self.settle(0);
            return;
        }
        for a in actions {
            self.last_activity = self.now;
            self.dispatch(a, "serial batch".into());
        }
    }

    /// Nothing is left to do on what answers: the run ends. "converged" is
    /// said only of a run that broke no invariant and sees every node.
    fn settle(&mut self, unobserved: usize) {
        self.converged_at = Some(self.now);
        let violations = self.checker.count;
        if violations > 0 {
            self.say(&format!(
                "every node that answers is at its target, but {violations} invariant violation(s): NOT converged"
            ));
        } else if unobserved > 0 {
            self.say(&format!("settled: every node that answers is at its target; {unobserved} node(s) do not answer"));
        } else {
            self.say("converged");
        }
    }

    fn report(&self, lower_bound_s: f64) -> Report {
        let fleet = &*self.fleet;
        // Invariant 5: nothing left out that did not fail.
        let mut checker = self.checker.clone();
        let end = self.now;
        if self.converged_at.is_some() || self.halted {
            for (n, s) in self.nodes.iter().enumerate() {
                let held = self.respecs.held_nodes.contains(&(n as NodeId));
                if s.admin != Admin::Ready && !self.failed.contains(&(n as NodeId)) && !s.dead && !held {
                    let name = fleet.nodes[n].name.clone();
                    checker.violate(end, Invariant::FailureBudget, || {
                        format!("{name} left out of the LB without having failed")
                    });
                }
            }
        }
        let settled = self.converged_at.is_some();
        let unobserved_nodes: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, s)| s.dead || s.down_until > end)
            .map(|(n, _)| fleet.nodes[n].name.clone())
            .collect();
        let verdict = if checker.count > 0 {
            Verdict::Violated
        } else if self.halted {
            Verdict::Halted
        } else if !settled {
            let idle = self.in_flight.is_empty() && end.saturating_sub(self.last_activity) > IDLE_LIMIT_MS;
            if idle { Verdict::Stuck } else { Verdict::OutOfTime }
        } else if !unobserved_nodes.is_empty() {
            Verdict::Unobserved
        } else {
            Verdict::Converged
        };
        let converged = verdict == Verdict::Converged;
        let makespan_s = self.converged_at.unwrap_or(end) as f64 / 1000.0;
        Report {
            seed: self.cfg.seed,
            strategy: self.cfg.strategy.clone(),
            verdict,
            converged,
            settled,
            unobserved_nodes,
            halted: self.halted,
            violations: checker.count,
            violations_by_invariant: checker.by_invariant.clone(),
            violation_samples: checker.samples.clone(),
            requests: checker.requests,
            failed_requests: checker.failed_requests,
            makespan_s,
            lower_bound_s,
            ratio: if lower_bound_s > 0.0 { makespan_s / lower_bound_s } else { 1.0 },
            actions: self.action_counts.clone(),
            failed_nodes: self.failed.iter().map(|&n| fleet.nodes[n as usize].name.clone()).collect(),
            failed_farms: self.failed_farms.iter().map(|&f| fleet.farms[f as usize].name.clone()).collect(),
            migrations: self
                .migrations_applied
                .iter()
                .map(|((env, r, phase), runs)| (format!("{} {r} {}", env.name(), phase.name()), *runs))
                .collect(),
            failed_migrations: self
                .failed_migrations
                .iter()
                .map(|(env, r, phase)| format!("{} {r} {}", env.name(), phase.name()))
                .collect(),
            preproduction_failed: self
                .failed
                .iter()
                .any(|&n| fleet.sites[fleet.nodes[n as usize].site as usize].environment == Environment::Preproduction),
            crashes: self.crashes,
            blocked: self.blocked.clone(),
            held: self.held_names(),
            journal_closed: self.respecs.closed.clone(),
            respecs: self.respecs.log.clone(),
            started: self.started.clone(),
        }
    }
}
