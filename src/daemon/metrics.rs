//! Prometheus metrics of the daemon: what the fleet looks like (nodes by
//! state, release and PHP version, drift, rollout progress), what the loop
//! does (actions, passes) and which spec is in force.
//!
//! One registry per `Metrics` (no global registry), so several daemons can
//! live in one process (tests). Every label takes values from a closed set
//! or is capped (`MAX_VERSION_SERIES`): a node's name, an error text or a
//! package version never becomes a label.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::diff::{drift_items, node_diff};
use crate::model::{Fleet, NodeId};
use crate::observe::{Admin, Observed};
use crate::plan::Memory;
use crate::plan::action::Kind;

/// At most this many release (and PHP) series; rarer values are summed
/// under `other`. A fleet converging runs two or three of each.
pub const MAX_VERSION_SERIES: usize = 16;

/// Action durations: a drain or an LB change takes seconds, an upgrade with
/// a reboot many minutes (0.5 s .. ~2.3 h).
const ACTION_BUCKETS: (f64, f64, u16) = (0.5, 2.0, 15);
/// Reconcile passes: observing a fleet over SSH takes from tens of
/// milliseconds to seconds (10 ms .. ~82 s).
const PASS_BUCKETS: (f64, f64, u16) = (0.01, 2.0, 14);

/// What a node is doing, as the `state` label of `drover_nodes`
/// (declaration order = index in `ALL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Reachable, ready in its farm listener, not failed.
    Serving,
    /// Out of service (drain or maint) in a window drover opened.
    Drained,
    /// Out of service by an operator's hand: drover leaves it alone.
    Held,
    /// Did not answer the last probe.
    Unreachable,
    /// Drover gave up on it (it counts against the failure budget).
    Failed,
}

impl NodeState {
    pub const ALL: [NodeState; 5] =
        [NodeState::Serving, NodeState::Drained, NodeState::Held, NodeState::Unreachable, NodeState::Failed];

    pub fn name(self) -> &'static str {
        match self {
            NodeState::Serving => "serving",
            NodeState::Drained => "drained",
            NodeState::Held => "held",
            NodeState::Unreachable => "unreachable",
            NodeState::Failed => "failed",
        }
    }

    /// Node `n`'s state. A failure outranks what the node shows now; a node
    /// out of service is drover's only while drover has a window open on it
    /// (the planner's own rule for "held by an operator").
    pub fn of(observed: &Observed, memory: &Memory, n: NodeId) -> NodeState {
        let o = &observed.nodes[n as usize];
        if memory.failed_nodes.contains_key(&n) {
            NodeState::Failed
        } else if !o.reachable {
            NodeState::Unreachable
        } else if o.lb.admin == Admin::Ready {
            NodeState::Serving
        } else if memory.node_ops.contains_key(&n) {
            NodeState::Drained
        } else {
            NodeState::Held
        }
    }
}

/// The kinds of drift item (`DriftItem::what`).
/// Every kind `diff::drift_items` reports.
const DRIFT_KINDS: [&str; 4] = ["package", "kernel", "php", "release"];

/// What one observation counts, beside the gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FleetCounts {
    /// Drift items across the reachable nodes.
    pub drift_items: u64,
    /// Reachable nodes with no drift.
    pub nodes_at_target: u64,
    /// Nodes that did not answer (failed or not).
    pub nodes_unobserved: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReleaseLabels {
    release: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhpLabels {
    php: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DriftLabels {
    what: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SubjectLabels {
    subject: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

impl KindLabels {
    /// Only the planner's action kinds become label values (anything else is `other`).
    fn of(kind: &str) -> KindLabels {
        KindLabels { kind: Kind::ALL.iter().map(|k| k.name()).find(|k| *k == kind).unwrap_or("other") }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SpecLabels {
    commit: String,
    digest: String,
}

/// `drover_spec_info`: an info metric whose one series is replaced when a
/// new spec applies (prometheus-client's `Info` is fixed at registration).
#[derive(Debug, Default)]
struct SpecInfoCollector {
    labels: Mutex<Option<SpecLabels>>,
}

impl Collector for SpecInfoCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let labels = self.labels.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // Before the first spec there is no series, not an empty one.
        if let Some(labels) = labels {
            let info = Info::new(labels);
            let metric = encoder.encode_descriptor(
                "spec",
                "The spec in force: its Git commit (empty without --git) and content digest",
                None,
                info.metric_type(),
            )?;
            info.encode(metric)?;
        }
        Ok(())
    }
}

type GaugeF64 = Gauge<f64, AtomicU64>;

pub struct Metrics {
    registry: Registry,
    /// Held while the fleet's gauges are rewritten and while rendering, so a
    /// scrape never sees half of one observation and half of the next.
    consistent: Mutex<()>,
    nodes: Family<StateLabels, Gauge>,
    nodes_by_release: Family<ReleaseLabels, Gauge>,
    nodes_by_php: Family<PhpLabels, Gauge>,
    drift_items: Family<DriftLabels, Gauge>,
    nodes_at_target: Gauge,
    nodes_total: Gauge,
    nodes_unobserved: Gauge,
    converged: Gauge,
    farms_switching: Gauge,
    halted: Gauge,
    failures: Family<SubjectLabels, Gauge>,
    failure_budget: Gauge,
    actions_started: Family<KindLabels, Counter>,
    actions_succeeded: Family<KindLabels, Counter>,
    actions_failed: Family<KindLabels, Counter>,
    action_duration: Family<KindLabels, Histogram>,
    pass_duration: Histogram,
    last_pass: GaugeF64,
    spec_generation: Gauge,
    spec_info: Arc<SpecInfoCollector>,
    spec_applied_at: GaugeF64,
    spec_rejections: Counter,
    spec_rejected: Gauge,
    last_error: Gauge,
    last_error_at: GaugeF64,
    ssh_connects: Counter,
    ssh_commands: Counter,
    spec_source_error: Gauge,
    spec_pending: Gauge,
    sim_time_scale: GaugeF64,
    sim_effective_time_scale: GaugeF64,
    sim_slipped: GaugeF64,
}

fn now_s() -> f64 {
    crate::control::now_ms() as f64 / 1000.0
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::with_prefix("drover"),
            consistent: Mutex::new(()),
            nodes: Family::default(),
            nodes_by_release: Family::default(),
            nodes_by_php: Family::default(),
            drift_items: Family::default(),
            nodes_at_target: Gauge::default(),
            nodes_total: Gauge::default(),
            nodes_unobserved: Gauge::default(),
            converged: Gauge::default(),
            farms_switching: Gauge::default(),
            halted: Gauge::default(),
            failures: Family::default(),
            failure_budget: Gauge::default(),
            actions_started: Family::default(),
            actions_succeeded: Family::default(),
            actions_failed: Family::default(),
            action_duration: Family::new_with_constructor(|| {
                let (start, factor, n) = ACTION_BUCKETS;
                Histogram::new(exponential_buckets(start, factor, n))
            }),
            pass_duration: {
                let (start, factor, n) = PASS_BUCKETS;
                Histogram::new(exponential_buckets(start, factor, n))
            },
            last_pass: GaugeF64::default(),
            spec_generation: Gauge::default(),
            spec_info: Arc::new(SpecInfoCollector::default()),
            spec_applied_at: GaugeF64::default(),
            spec_rejections: Counter::default(),
            spec_rejected: Gauge::default(),
            last_error: Gauge::default(),
            last_error_at: GaugeF64::default(),
            ssh_connects: Counter::default(),
            ssh_commands: Counter::default(),
            spec_source_error: Gauge::default(),
            spec_pending: Gauge::default(),
            sim_time_scale: GaugeF64::default(),
            sim_effective_time_scale: GaugeF64::default(),
            sim_slipped: GaugeF64::default(),
        };
        // Every state, drift kind and failure subject has a series from the
        // start (0), so alerts on them work before the first occurrence.
        for s in NodeState::ALL {
            m.nodes.get_or_create(&StateLabels { state: s.name() }).set(0);
        }
        for what in DRIFT_KINDS {
            m.drift_items.get_or_create(&DriftLabels { what }).set(0);
        }
        for subject in ["node", "farm"] {
            m.failures.get_or_create(&SubjectLabels { subject }).set(0);
        }
        // A counter that appears at 1 is invisible to `increase()`: the
        // first failure of a kind must be a change from 0.
        for kind in Kind::ALL {
            let labels = KindLabels { kind: kind.name() };
            for counters in [&m.actions_started, &m.actions_succeeded, &m.actions_failed] {
                counters.get_or_create(&labels).inc_by(0);
            }
        }
        m.register()
    }

    fn register(mut self) -> Metrics {
        let r = &mut self.registry;
        r.register(
            "nodes",
            "Nodes by state: serving, drained (by drover), held (by an operator), unreachable, failed",
            self.nodes.clone(),
        );
        r.register(
            "nodes_by_release",
            "Nodes by active release (none: no release active; unknown: unreachable)",
            self.nodes_by_release.clone(),
        );
        r.register(
            "nodes_by_php",
            "Nodes by active PHP version (none: no PHP active; unknown: unreachable)",
            self.nodes_by_php.clone(),
        );
        r.register("drift_items", "What differs from the target across the fleet, by kind", self.drift_items.clone());
        r.register(
            "rollout_nodes_at_target",
            "Reachable nodes whose observed state is their target",
            self.nodes_at_target.clone(),
        );
        r.register("rollout_nodes_total", "Nodes in the fleet", self.nodes_total.clone());
        r.register(
            "nodes_unobserved",
            "Nodes that did not answer the last observation, failed or not (their state is unknown)",
            self.nodes_unobserved.clone(),
        );
        r.register(
            "rollout_converged",
            "1 when every node was observed at its target (or failed), nothing out and nothing in flight; \
             0 while any node does not answer",
            self.converged.clone(),
        );
        r.register(
            "rollout_farms_switching",
            "Farms out of service for a PHP or release switch (open farm windows)",
            self.farms_switching.clone(),
        );
        r.register(
            "rollout_halted",
            "1 when the failures exceed the failure budget: the rollout is halted",
            self.halted.clone(),
        );
        r.register("failures", "Nodes and farms drover gave up on", self.failures.clone());
        r.register(
            "failure_budget",
            "Failures the policy tolerates before the rollout halts",
            self.failure_budget.clone(),
        );
        r.register("actions_started", "Actions started, by kind", self.actions_started.clone());
        r.register("actions_succeeded", "Actions that ended well, by kind", self.actions_succeeded.clone());
        r.register("actions_failed", "Actions that failed, by kind", self.actions_failed.clone());
        r.register_with_unit(
            "action_duration",
            "How long actions took, by kind",
            Unit::Seconds,
            self.action_duration.clone(),
        );
        r.register_with_unit(
            "reconcile_pass_duration",
            "How long one reconcile pass (observe, plan, start) took",
            Unit::Seconds,
            self.pass_duration.clone(),
        );
        r.register_with_unit(
            "last_pass_timestamp",
            "When the last reconcile pass ended (Unix time)",
            Unit::Seconds,
            self.last_pass.clone(),
        );
        r.register(
            "spec_generation",
            "Generation of the spec in force (0: none yet; +1 per valid spec applied)",
            self.spec_generation.clone(),
        );
        r.register_collector(Box::new(self.spec_info.clone()));
        r.register_with_unit(
            "spec_applied_timestamp",
            "When the spec in force was applied (Unix time)",
            Unit::Seconds,
            self.spec_applied_at.clone(),
        );
        r.register(
            "spec_rejections",
            "Specs that failed validation and were not applied",
            self.spec_rejections.clone(),
        );
        r.register(
            "spec_rejected",
            "1 when the last spec seen failed validation (the one in force is older)",
            self.spec_rejected.clone(),
        );
        r.register("last_error", "1 while the loop's last pass ended in an error", self.last_error.clone());
        r.register_with_unit(
            "last_error_timestamp",
            "When the loop last reported an error (Unix time; 0: never)",
            Unit::Seconds,
            self.last_error_at.clone(),
        );
        r.register(
            "ssh_connections",
            "SSH connections (multiplexed masters) opened; a jump without a spec login change or reboots is a reconnect storm (0 in the simulation)",
            self.ssh_connects.clone(),
        );
        r.register("ssh_commands", "Remote commands run over SSH (0 in the simulation)", self.ssh_commands.clone());
        r.register(
            "spec_source_error",
            "1 while the spec source fails (a Git fetch or checkout; the text is in /status spec_source_error)",
            self.spec_source_error.clone(),
        );
        r.register(
            "spec_pending",
            "1 while a valid new spec waits for the actions running to finish (see /status spec.pending_since)",
            self.spec_pending.clone(),
        );
        r.register(
            "simulation_time_scale",
            "--simulate: simulated seconds per second asked for (--time-scale; 0 on a real fleet)",
            self.sim_time_scale.clone(),
        );
        r.register(
            "simulation_effective_time_scale",
            "--simulate: simulated seconds per second achieved over the last few seconds (below the time scale \
             when the simulated world cannot keep up; 0 on a real fleet)",
            self.sim_effective_time_scale.clone(),
        );
        r.register_with_unit(
            "simulation_slipped",
            "--simulate: simulated time given up because the world could not be simulated at the time scale",
            Unit::Seconds,
            self.sim_slipped.clone(),
        );
        self
    }

    fn hold(&self) -> MutexGuard<'_, ()> {
        self.consistent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The transport's process-wide totals (they only grow).
    pub fn transport(&self, t: crate::real::ssh::Totals) {
        let _g = self.hold();
        self.ssh_connects.inc_by(t.connects.saturating_sub(self.ssh_connects.get()));
        self.ssh_commands.inc_by(t.commands.saturating_sub(self.ssh_commands.get()));
    }

    /// An action started (`kind` is `ActionKind::name`).
    pub fn action_started(&self, kind: &str) {
        self.actions_started.get_or_create(&KindLabels::of(kind)).inc();
    }

    /// An action ended.
    pub fn action_finished(&self, kind: &str, ok: bool, took: Duration) {
        let labels = KindLabels::of(kind);
        if ok { &self.actions_succeeded } else { &self.actions_failed }.get_or_create(&labels).inc();
        self.action_duration.get_or_create(&labels).observe(took.as_secs_f64());
    }

    /// One reconcile pass (observe + plan + start) took this long.
    pub fn reconcile_pass(&self, took: Duration) {
        self.pass_duration.observe(took.as_secs_f64());
        self.last_pass.set(now_s());
    }

    /// The fleet as observed by the last pass.
    /// Returns the drift and progress counts it set, for the status document.
    pub fn fleet_observed(&self, fleet: &Fleet, observed: &Observed, memory: &Memory) -> FleetCounts {
        if !observed.matches(fleet) {
            // A bug in the caller, not the fleet: keep the last good picture.
            tracing::error!("metrics: an observation not shaped like the fleet was ignored");
            return FleetCounts::default();
        }
        let mut states = [0i64; NodeState::ALL.len()];
        let mut releases = BTreeMap::<String, i64>::new();
        let mut phps = BTreeMap::<String, i64>::new();
        let mut drift = [0i64; DRIFT_KINDS.len()];
        let mut at_target = 0;
        let mut unobserved = 0;
        for (n, o) in observed.nodes.iter().enumerate() {
            let n = n as NodeId;
            let state = NodeState::of(observed, memory, n);
            states[state as usize] += 1;
            if !o.reachable {
                unobserved += 1;
                *releases.entry("unknown".into()).or_default() += 1;
                *phps.entry("unknown".into()).or_default() += 1;
                continue;
            }
            let release = o.release_active.as_ref().map_or_else(|| "none".into(), |r| r.to_string());
            *releases.entry(release).or_default() += 1;
            let php = o.php_active.as_ref().map_or_else(|| "none".into(), |p| p.to_string());
            *phps.entry(php).or_default() += 1;
            let items = drift_items(fleet, n, o, &node_diff(fleet, n, o));
            if items.is_empty() {
                at_target += 1;
            }
            for item in &items {
                if let Some(i) = DRIFT_KINDS.iter().position(|k| *k == item.what) {
                    drift[i] += 1;
                }
            }
        }
        let failed_farms = memory.failed_farms.keys().filter(|f| (**f as usize) < fleet.farms.len()).count();

        let _consistent = self.hold();
        for (s, count) in NodeState::ALL.iter().zip(states) {
            self.nodes.get_or_create(&StateLabels { state: s.name() }).set(count);
        }
        replace_series(&self.nodes_by_release, capped(releases), |release| ReleaseLabels { release });
        replace_series(&self.nodes_by_php, capped(phps), |php| PhpLabels { php });
        for (what, count) in DRIFT_KINDS.iter().zip(drift) {
            self.drift_items.get_or_create(&DriftLabels { what }).set(count);
        }
        self.nodes_at_target.set(at_target);
        self.nodes_total.set(fleet.nodes.len() as i64);
        self.nodes_unobserved.set(unobserved);
        self.farms_switching.set(memory.farm_ops.len() as i64);
        self.halted.set(memory.halted(fleet.policy.failure_budget) as i64);
        self.failures.get_or_create(&SubjectLabels { subject: "node" }).set(states[NodeState::Failed as usize]);
        self.failures.get_or_create(&SubjectLabels { subject: "farm" }).set(failed_farms as i64);
        self.failure_budget.set(fleet.policy.failure_budget as i64);
        FleetCounts {
            drift_items: drift.iter().sum::<i64>() as u64,
            nodes_at_target: at_target as u64,
            nodes_unobserved: unobserved as u64,
        }
    }

    /// The last pass's verdict (`Pass::converged`: never with a node unobserved).
    pub fn rollout_converged(&self, converged: bool) {
        let _consistent = self.hold();
        self.converged.set(converged as i64);
    }

    /// A valid spec was applied.
    pub fn spec_applied(&self, generation: u64, commit: Option<&str>, digest: &str) {
        let _consistent = self.hold();
        self.spec_generation.set(generation as i64);
        *self.spec_info.labels.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(SpecLabels { commit: commit.unwrap_or("").to_string(), digest: digest.to_string() });
        self.spec_applied_at.set(now_s());
        self.spec_rejected.set(0);
    }

    /// A spec failed validation and was not applied.
    pub fn spec_rejected(&self) {
        self.spec_rejections.inc();
        self.spec_rejected.set(1);
    }

    /// The loop's last error (`None` once a pass succeeds).
    pub fn last_error(&self, error: Option<&str>) {
        // The text stays out of the metrics (unbounded); `/status` has it.
        match error {
            Some(_) => {
                self.last_error_at.set(now_s());
                self.last_error.set(1);
            }
            None => {
                self.last_error.set(0);
            }
        }
    }

    /// Whether a valid new spec waits for a quiet point.
    pub fn spec_pending(&self, pending: bool) {
        self.spec_pending.set(i64::from(pending));
    }

    /// The simulated clock: the time scale asked for, the one achieved, and
    /// the simulated seconds given up so far.
    pub fn simulation_pace(&self, scale: f64, effective: f64, slipped_s: f64) {
        self.sim_time_scale.set(scale);
        self.sim_effective_time_scale.set(effective);
        self.sim_slipped.set(slipped_s);
    }

    /// The spec source's error (`None` once it works again).
    pub fn spec_source_error(&self, failing: bool) {
        self.spec_source_error.set(i64::from(failing));
    }

    /// Prometheus text exposition (OpenMetrics 1.0, ending in `# EOF`).
    pub fn render(&self) -> String {
        let _consistent = self.hold();
        let mut out = String::new();
        // Writing into a String cannot fail; an encoder error would be a bug
        // in a label value, which only come from closed sets or versions.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("metrics: encoding failed: {e}");
        }
        out
    }
}

/// Counts by label value, the `MAX_VERSION_SERIES - 1` largest kept (ties by
/// name) and the rest summed as `other`.
fn capped(counts: BTreeMap<String, i64>) -> BTreeMap<String, i64> {
    if counts.len() <= MAX_VERSION_SERIES {
        return counts;
    }
    let mut by_size: Vec<(String, i64)> = counts.into_iter().collect();
    by_size.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let rest: i64 = by_size[MAX_VERSION_SERIES - 1..].iter().map(|(_, c)| c).sum();
    let mut out: BTreeMap<String, i64> = by_size.into_iter().take(MAX_VERSION_SERIES - 1).collect();
    *out.entry("other".into()).or_default() += rest;
    out
}

/// One series per value seen now: the series of values no longer seen go.
/// The caller holds `Metrics::consistent`, so no scrape sees the family empty.
fn replace_series<L>(family: &Family<L, Gauge>, counts: BTreeMap<String, i64>, labels: impl Fn(String) -> L)
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug,
{
    family.clear();
    for (value, count) in counts {
        family.get_or_create(&labels(value)).set(count);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    use std::time::Duration;

    use super::*;
    use crate::model::ReleaseId;
    use crate::plan::{NodeOp, NodePhase};
    use crate::sim::fleetgen::{self, Change, Shape};
    use crate::sim::{Sim, SimConfig};

    /// One sample as an independent parser (Python's prometheus_client, the
    /// reference implementation's) read it.
    #[derive(Debug)]
    pub(crate) struct Sample {
        pub family: String,
        pub kind: String,
        pub name: String,
        pub labels: BTreeMap<String, String>,
        pub value: f64,
    }

    const PARSER: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    for s in f.samples:
        out.append({"family": f.name, "kind": f.type, "name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;

    /// Parses OpenMetrics text with `python3-prometheus-client`; panics with
    /// the parser's complaint when the text is not valid OpenMetrics.
    pub(crate) fn parse(text: &str) -> Vec<Sample> {
        // The system Python (Debian's package), not a pyenv shim.
        let mut child = Command::new("/usr/bin/python3")
            .args(["-c", PARSER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run /usr/bin/python3 (apt-get install python3-prometheus-client)");
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "the OpenMetrics parser refused the exposition (or python3-prometheus-client is missing):\n{}\n--- text:\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| Sample {
                family: s["family"].as_str().unwrap().into(),
                kind: s["kind"].as_str().unwrap().into(),
                name: s["name"].as_str().unwrap().into(),
                labels: s["labels"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect(),
                value: s["value"].as_f64().unwrap(),
            })
            .collect()
    }

    /// The value of the sample `name` with exactly these labels.
    pub(crate) fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let found: Vec<_> = samples.iter().filter(|s| s.name == name && s.labels == want).collect();
        assert!(found.len() <= 1, "{name}{labels:?} appears {} times", found.len());
        found.first().map(|s| s.value)
    }

    /// Every series of `name`, as (value of `label`, sample value).
    fn series(samples: &[Sample], name: &str, label: &str) -> BTreeMap<String, f64> {
        samples.iter().filter(|s| s.name == name).map(|s| (s.labels[label].clone(), s.value)).collect()
    }

    fn kind_of(samples: &[Sample], family: &str) -> String {
        samples.iter().find(|s| s.family == family).map(|s| s.kind.clone()).unwrap_or_default()
    }

    #[test]
    fn actions_spec_and_errors_are_counted_in_valid_openmetrics() {
        let m = Metrics::new();
        m.action_started("upgrade");
        m.action_started("upgrade");
        m.action_started("set_farm");
        m.action_finished("upgrade", true, Duration::from_secs(3));
        m.action_finished("upgrade", false, Duration::from_secs(200));
        // A kind the planner does not have cannot grow the label set.
        m.action_started("rm -rf /; node-4711");
        m.reconcile_pass(Duration::from_millis(30));
        m.reconcile_pass(Duration::from_millis(70));
        m.spec_applied(3, Some("0123abc"), "d1");
        m.spec_rejected();
        m.spec_rejected();
        m.spec_applied(4, None, "d2");
        m.last_error(Some("observe: ssh node-1: connection refused"));
        m.transport(crate::real::ssh::Totals { connects: 5, commands: 9 });
        m.transport(crate::real::ssh::Totals { connects: 7, commands: 30 });

        let s = parse(&m.render());
        assert_eq!(value(&s, "drover_ssh_connections_total", &[]), Some(7.0));
        assert_eq!(value(&s, "drover_ssh_commands_total", &[]), Some(30.0));
        assert_eq!(kind_of(&s, "drover_ssh_connections"), "counter");
        let up = [("kind", "upgrade")];
        assert_eq!(value(&s, "drover_actions_started_total", &up), Some(2.0));
        assert_eq!(value(&s, "drover_actions_succeeded_total", &up), Some(1.0));
        assert_eq!(value(&s, "drover_actions_failed_total", &up), Some(1.0));
        assert_eq!(value(&s, "drover_actions_started_total", &[("kind", "set_farm")]), Some(1.0));
        assert_eq!(value(&s, "drover_actions_failed_total", &[("kind", "set_farm")]), Some(0.0));
        assert_eq!(value(&s, "drover_actions_started_total", &[("kind", "flush_cache")]), Some(0.0));
        assert_eq!(value(&s, "drover_actions_started_total", &[("kind", "other")]), Some(1.0));
        assert_eq!(kind_of(&s, "drover_actions_started"), "counter");

        assert_eq!(kind_of(&s, "drover_action_duration_seconds"), "histogram");
        assert_eq!(value(&s, "drover_action_duration_seconds_count", &up), Some(2.0));
        assert_eq!(value(&s, "drover_action_duration_seconds_sum", &up), Some(203.0));
        // 3 s falls in the 4 s bucket, 200 s only from the 256 s bucket on.
        assert_eq!(
            value(&s, "drover_action_duration_seconds_bucket", &[("kind", "upgrade"), ("le", "4.0")]),
            Some(1.0)
        );
        assert_eq!(
            value(&s, "drover_action_duration_seconds_bucket", &[("kind", "upgrade"), ("le", "128.0")]),
            Some(1.0)
        );
        assert_eq!(
            value(&s, "drover_action_duration_seconds_bucket", &[("kind", "upgrade"), ("le", "256.0")]),
            Some(2.0)
        );

        assert_eq!(value(&s, "drover_reconcile_pass_duration_seconds_count", &[]), Some(2.0));
        let sum = value(&s, "drover_reconcile_pass_duration_seconds_sum", &[]).unwrap();
        assert!((sum - 0.1).abs() < 1e-9, "{sum}");
        assert!(value(&s, "drover_last_pass_timestamp_seconds", &[]).unwrap() > 1.7e9);

        assert_eq!(value(&s, "drover_spec_generation", &[]), Some(4.0));
        // One info series: the spec applied last replaced the first.
        assert_eq!(kind_of(&s, "drover_spec"), "info");
        let infos: Vec<_> = s.iter().filter(|x| x.name == "drover_spec_info").collect();
        assert_eq!(infos.len(), 1, "{infos:?}");
        assert_eq!(infos[0].labels["digest"], "d2");
        assert_eq!(infos[0].labels["commit"], "");
        assert_eq!(infos[0].value, 1.0);
        assert_eq!(value(&s, "drover_spec_rejections_total", &[]), Some(2.0));
        assert_eq!(value(&s, "drover_spec_rejected", &[]), Some(0.0), "a later valid spec clears it");

        assert_eq!(value(&s, "drover_last_error", &[]), Some(1.0));
        let at = value(&s, "drover_last_error_timestamp_seconds", &[]).unwrap();
        assert!(at > 1.7e9, "{at}");
        m.last_error(None);
        m.spec_rejected();
        let s = parse(&m.render());
        assert_eq!(value(&s, "drover_last_error", &[]), Some(0.0));
        assert_eq!(value(&s, "drover_last_error_timestamp_seconds", &[]), Some(at), "when it last happened stays");
        assert_eq!(value(&s, "drover_spec_rejected", &[]), Some(1.0));
        assert_eq!(value(&s, "drover_spec_generation", &[]), Some(4.0), "a rejected spec changes nothing in force");
    }

    #[test]
    fn a_new_registry_has_no_spec_and_zeroed_states() {
        let s = parse(&Metrics::new().render());
        assert!(s.iter().all(|x| x.name != "drover_spec_info"));
        assert_eq!(value(&s, "drover_spec_generation", &[]), Some(0.0));
        for state in NodeState::ALL {
            assert_eq!(value(&s, "drover_nodes", &[("state", state.name())]), Some(0.0));
        }
        assert_eq!(value(&s, "drover_last_error_timestamp_seconds", &[]), Some(0.0));
    }

    fn fleet(change: Change) -> Fleet {
        fleetgen::fleet(&Shape { change, ..Shape::default() }).unwrap()
    }

    #[test]
    fn nodes_by_state_follow_windows_operators_and_failures() {
        let fleet = fleet(Change::NONE);
        let mut obs = Sim::new(&fleet, SimConfig::new(&fleet, 1)).observe();
        let total = fleet.nodes.len();
        assert!(total >= 8);
        let mut mem = Memory::default();
        // Node 0: an operator's maint. Node 1: drained in drover's window.
        // Node 2: does not answer. Node 3: failed, though it looks serving.
        obs.nodes[0].lb.admin = Admin::Maint;
        obs.nodes[1].lb.admin = Admin::Drain;
        mem.node_ops.insert(1, NodeOp { phase: NodePhase::Draining, since_ms: 0, healthy: false, snapshot: None });
        obs.nodes[2].reachable = false;
        mem.failed_nodes.insert(3, "health check timed out".into());
        let m = Metrics::new();
        m.fleet_observed(&fleet, &obs, &mem);

        let s = parse(&m.render());
        let states = series(&s, "drover_nodes", "state");
        let want: BTreeMap<String, f64> =
            [("serving", total as f64 - 4.0), ("drained", 1.0), ("held", 1.0), ("unreachable", 1.0), ("failed", 1.0)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
        assert_eq!(states, want);
        assert_eq!(value(&s, "drover_failures", &[("subject", "node")]), Some(1.0));
        assert_eq!(value(&s, "drover_failure_budget", &[]), Some(2.0));
        assert_eq!(value(&s, "drover_rollout_halted", &[]), Some(0.0));
        // Nothing to change: every reachable node is at its target.
        assert_eq!(value(&s, "drover_rollout_nodes_total", &[]), Some(total as f64));
        assert_eq!(value(&s, "drover_rollout_nodes_at_target", &[]), Some(total as f64 - 1.0));
        for what in DRIFT_KINDS {
            assert_eq!(value(&s, "drover_drift_items", &[("what", what)]), Some(0.0));
        }

        // Past the budget the rollout is halted.
        mem.failed_nodes.insert(4, "x".into());
        mem.failed_nodes.insert(5, "x".into());
        m.fleet_observed(&fleet, &obs, &mem);
        let s = parse(&m.render());
        assert_eq!(value(&s, "drover_rollout_halted", &[]), Some(1.0));
        assert_eq!(value(&s, "drover_nodes", &[("state", "failed")]), Some(3.0));
    }

    #[test]
    fn releases_drift_and_rollout_progress_follow_the_fleet() {
        let fleet = fleet(Change { release: true, ..Change::NONE });
        let mut obs = Sim::new(&fleet, SimConfig::new(&fleet, 1)).observe();
        let total = fleet.nodes.len();
        let target: ReleaseId = fleet.node_target(0).release.clone();
        let old = obs.nodes[0].release_active.clone().expect("the sim starts with a release active");
        assert_ne!(old, target, "the fleet starts behind on its release");
        obs.nodes[total - 1].reachable = false;
        let mut mem = Memory::default();
        let m = Metrics::new();
        m.fleet_observed(&fleet, &obs, &mem);

        let s = parse(&m.render());
        let by_release = series(&s, "drover_nodes_by_release", "release");
        let want: BTreeMap<String, f64> =
            [(old.to_string(), total as f64 - 1.0), ("unknown".to_string(), 1.0)].into_iter().collect();
        assert_eq!(by_release, want);
        let php = obs.nodes[0].php_active.as_ref().unwrap().to_string();
        assert_eq!(value(&s, "drover_nodes_by_php", &[("php", &php)]), Some(total as f64 - 1.0));
        assert_eq!(value(&s, "drover_drift_items", &[("what", "release")]), Some(total as f64 - 1.0));
        assert_eq!(value(&s, "drover_drift_items", &[("what", "package")]), Some(0.0));
        assert_eq!(value(&s, "drover_rollout_nodes_at_target", &[]), Some(0.0));

        // The first farm switches: its nodes reach the target.
        let first = fleet.farms[0].nodes.clone();
        mem.farm_ops.insert(
            0,
            crate::plan::FarmOp {
                phase: crate::plan::FarmPhase::Working,
                since_ms: 0,
                switched: true,
                ..crate::plan::FarmOp::new(crate::plan::FarmPhase::Working, 0, 100)
            },
        );
        for &n in &first {
            obs.nodes[n as usize].release_active = Some(target.clone());
        }
        m.fleet_observed(&fleet, &obs, &mem);
        let s = parse(&m.render());
        assert_eq!(value(&s, "drover_rollout_farms_switching", &[]), Some(1.0));
        assert_eq!(value(&s, "drover_rollout_nodes_at_target", &[]), Some(first.len() as f64));
        assert_eq!(value(&s, "drover_nodes_by_release", &[("release", &target.to_string())]), Some(first.len() as f64));

        // All switched and reachable: the old release's series is gone.
        mem.farm_ops.clear();
        for o in &mut obs.nodes {
            o.reachable = true;
            o.release_active = Some(target.clone());
        }
        m.fleet_observed(&fleet, &obs, &mem);
        let s = parse(&m.render());
        let by_release = series(&s, "drover_nodes_by_release", "release");
        assert_eq!(by_release, [(target.to_string(), total as f64)].into_iter().collect());
        assert_eq!(value(&s, "drover_rollout_nodes_at_target", &[]), Some(total as f64));
        assert_eq!(value(&s, "drover_drift_items", &[("what", "release")]), Some(0.0));
        assert_eq!(value(&s, "drover_rollout_farms_switching", &[]), Some(0.0));
    }

    #[test]
    fn version_series_are_capped() {
        let counts: BTreeMap<String, i64> =
            (0..40).map(|i| (format!("v{i:02}"), if i == 7 { 100 } else { 1 })).collect();
        let capped = capped(counts);
        assert_eq!(capped.len(), MAX_VERSION_SERIES);
        assert_eq!(capped["v07"], 100, "the biggest value keeps its series");
        assert_eq!(capped["other"], 40 - MAX_VERSION_SERIES as i64 + 1);
        assert_eq!(capped.values().sum::<i64>(), 139);
    }

    #[test]
    fn an_observation_of_another_fleet_is_ignored() {
        let fleet = fleet(Change::NONE);
        let mut obs = Sim::new(&fleet, SimConfig::new(&fleet, 1)).observe();
        let m = Metrics::new();
        m.fleet_observed(&fleet, &obs, &Memory::default());
        obs.nodes.pop();
        m.fleet_observed(&fleet, &obs, &Memory::default());
        let s = parse(&m.render());
        assert_eq!(value(&s, "drover_nodes", &[("state", "serving")]), Some(fleet.nodes.len() as f64));
    }
}
