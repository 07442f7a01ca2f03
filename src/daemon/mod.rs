//! `drover reconcile` without `--once`: the daemon. It follows the spec
//! (a watched directory or a Git branch), keeps the fleet converged with the
//! same planner and journal as `--once`, repairs drift, and serves its
//! state over HTTP on localhost.
//!
//! - `state`: the status document and the shared state of loop and endpoints.
//! - `metrics`: Prometheus metrics.
//! - `http`: the endpoints on localhost (`/healthz`, `/readyz`, `/metrics`, `/status`,
//!   and the status page `/`).
//! - `web`: the status page, rendered from the status document.

pub mod gitauth;
pub mod http;
pub mod metrics;
pub mod source;
pub mod state;
pub mod web;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::control::journal::Journal;
use crate::control::{Event, Fleetside, Mode, Runner};
use crate::model::Fleet;
use crate::observe::Observed;
use crate::plan::action::Outcome;
use source::SpecUpdate;
use state::{Rejected, Shared};

#[derive(Clone, Debug)]
pub struct Options {
    /// Re-plan at least this often while actions run or windows are open.
    pub tick: Duration,
    /// Re-plan this often while work is pending but nothing can start
    /// (a soak, a change window, a back-off).
    pub idle_tick: Duration,
    /// Re-observe this often when converged, halted or detect-only (drift).
    pub resync: Duration,
    /// Observe, plan and report; start nothing.
    pub detect_only: bool,
    /// On stop, how long open windows may take to close before the daemon
    /// exits leaving them to the next start (parked, in the journal).
    pub stop_grace: Duration,
    /// Rebuild the status document at most this often.
    pub status_every: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tick: Duration::from_millis(500),
            idle_tick: Duration::from_secs(5),
            resync: Duration::from_secs(60),
            detect_only: false,
            stop_grace: Duration::from_secs(15 * 60),
            status_every: Duration::from_secs(1),
        }
    }
}

/// What the daemon tells its caller as it goes (besides its logs).
#[derive(Clone, Debug)]
pub enum Note {
    Action(Event),
    /// One observation of the whole fleet.
    Observed {
        took: Duration,
    },
}

/// How the daemon ended (on a stop request; errors are `Err`).
#[derive(Clone, Debug, Default)]
pub struct Stopped {
    /// Windows still open (the grace period ran out): the journal has them
    /// and the next start completes them.
    pub parked: Vec<String>,
    pub started: u64,
    pub failed: Vec<String>,
}

/// Runs until `stop` turns true. `connect` builds the fleet side for a spec
/// (for the real fleet: SSH pool and LB connections; for the simulation:
/// the same world retargeted); it is called with the current side when the
/// spec changes.
#[allow(clippy::too_many_arguments)]
pub async fn run<F, C, Fut>(
    mut connect: C,
    mut specs: watch::Receiver<Option<SpecUpdate>>,
    mut source_errors: Option<watch::Receiver<Option<String>>>,
    journal: &Journal,
    shared: Arc<Shared>,
    opts: Options,
    mut stop: watch::Receiver<bool>,
    on: &mut (dyn FnMut(&Note) + Send),
) -> Result<Stopped, String>
where
    F: Fleetside,
    C: FnMut(Arc<Fleet>, Option<Arc<F>>) -> Fut,
    Fut: Future<Output = Result<Arc<F>, String>>,
{
    let mut ctl: Option<Runner<&Journal, F>> = None;
    let mut pending: Option<SpecUpdate> = None;
    let mut generation = 0u64;
    let mut stopping: Option<Instant> = None;
    let mut last_view: Option<Instant> = None;
    let mut passes = 0u64;
    let mut specs_open = true;
    let mut fresh_spec = true;
    let mut fresh_source = false;
    let mut source_error: Option<String> = None;
    // A fleet that could not be connected is tried again after `idle_tick`.
    let mut retry_connect_at: Option<Instant> = None;
    // Observations failed in a row, and the last error logged (logged again when it changes).
    let mut observe_failures = 0u32;
    let mut observe_error_logged: Option<String> = None;
    // The pending spec last logged (its digest) and since when one waits.
    let mut pending_shown: Option<(String, u64)> = None;
    {
        let mut st = shared.status();
        st.detect_only = opts.detect_only;
        st.rollout.phase = "starting".into();
    }
    loop {
        shared.beat();
        // The newest spec: valid ones wait for a quiet point, invalid ones are reported.
        if fresh_spec || specs.has_changed().unwrap_or(false) {
            fresh_spec = false;
            if let Some(u) = specs.borrow_and_update().clone() {
                match &u.fleet {
                    Ok(_) => pending = Some(u),
                    Err(e) => {
                        tracing::error!(commit = u.commit.as_deref(), digest = %u.digest, "spec rejected, the spec in force stays:\n{e}");
                        shared.metrics.spec_rejected();
                        shared.status().spec.rejected = Some(Rejected {
                            commit: u.commit.clone(),
                            digest: u.digest.clone(),
                            at_ms: u.at_ms,
                            error: e.clone(),
                        });
                        // A later valid spec supersedes one still waiting; an invalid one does not.
                    }
                }
            }
        }
        if let Some(rx) = source_errors.as_mut()
            && (std::mem::take(&mut fresh_source) || rx.has_changed().unwrap_or(false))
        {
            source_error = rx.borrow_and_update().clone();
            match &source_error {
                Some(e) => tracing::warn!("spec source: {e}"),
                None => tracing::info!("spec source: works again"),
            }
            // Visible at once, also before any spec is in force (`/readyz` names it then).
            shared.metrics.spec_source_error(source_error.is_some());
            shared.status().spec_source_error = source_error.clone();
        }
        // Every action event is logged, counted and passed on.
        macro_rules! log_event {
            () => {
                &mut |e: &Event| {
                    log_action(&shared, e);
                    on(&Note::Action(e.clone()));
                }
            };
        }
        if let Some(c) = ctl.as_mut() {
            c.settle(log_event!())?;
        }
        // A stop request: nothing new opens; open windows close within the grace period.
        if *stop.borrow() && stopping.is_none() {
            stopping = Some(Instant::now() + opts.stop_grace);
            let open = ctl.as_ref().map(|c| c.ctl.open_windows()).unwrap_or_default();
            tracing::info!(
                open = open.len(),
                running = ctl.as_ref().map_or(0, |c| c.running_count()),
                "stopping: no new window opens; open windows are closed first"
            );
            shared.status().rollout.phase = "stopping".into();
        }
        if let Some(deadline) = stopping {
            let (running, open) = ctl.as_ref().map(|c| (c.running_count(), c.ctl.open_windows())).unwrap_or_default();
            let past = Instant::now() >= deadline;
            if running == 0 && (open.is_empty() || past || opts.detect_only) {
                if !open.is_empty() {
                    tracing::warn!(?open, "stop grace ran out: windows parked in the journal for the next start");
                }
                let (started, failed) = ctl.as_ref().map(|c| (c.ctl.started, c.ctl.failed.clone())).unwrap_or_default();
                return Ok(Stopped { parked: open, started, failed });
            }
            if past && let Some(c) = ctl.as_mut() {
                // Bounded by the actions' own timeouts.
                shared.waiting(opts.stop_grace);
                c.next_completion().await;
                continue;
            }
        }
        // A new spec applies when nothing runs, so every completion lands on
        // the spec it was planned with; meanwhile nothing new starts.
        if stopping.is_none()
            && ctl.as_ref().is_none_or(|c| c.running_count() == 0)
            && retry_connect_at.is_none_or(|t| Instant::now() >= t)
            && let Some(u) = pending.take()
        {
            let Ok(fleet) = u.fleet.clone() else { unreachable!("only valid specs wait") };
            match connect(Arc::clone(&fleet), ctl.as_ref().map(|c| Arc::clone(c.side()))).await {
                Ok(side) => {
                    retry_connect_at = None;
                    let resolved = match ctl.as_mut() {
                        None => {
                            let c = ctl.insert(Runner::new(side, journal)?);
                            c.ctl.resolved.clone()
                        }
                        Some(c) => c.retarget(side)?,
                    };
                    for r in &resolved {
                        tracing::warn!(on = %r.on, "journal entry not carried over: {}", r.resolution);
                    }
                    if let Some(c) = ctl.as_ref() {
                        shared.status().journal_resolved =
                            c.ctl.resolved.iter().map(|r| format!("{} ({})", r.resolution, r.on)).collect();
                    }
                    generation += 1;
                    tracing::info!(generation, commit = u.commit.as_deref(), digest = %u.digest,
                        nodes = fleet.nodes.len(), "spec applied");
                    shared.metrics.spec_applied(generation, u.commit.as_deref(), &u.digest);
                    {
                        let mut st = shared.status();
                        st.spec.generation = generation;
                        st.spec.commit = u.commit.clone();
                        st.spec.digest = u.digest.clone();
                        st.spec.applied_at_ms = crate::control::now_ms();
                        st.spec.pending = false;
                        // What the rollout does under this spec is known after its first pass.
                        st.rollout.phase = "starting".into();
                        if st.spec.rejected.as_ref().is_some_and(|r| r.at_ms <= u.at_ms) {
                            st.spec.rejected = None;
                        }
                    }
                    last_view = None;
                }
                Err(e) => {
                    tracing::error!("cannot connect the fleet of the new spec (retrying): {e}");
                    set_error(&shared, Some(format!("connecting the fleet: {e}")));
                    pending = Some(u);
                    retry_connect_at = Some(Instant::now() + opts.idle_tick);
                }
            }
        }
        {
            let running = ctl.as_ref().map_or(0, |c| c.running_count());
            let why = pending.as_ref().map(|_| {
                if stopping.is_some() {
                    "the daemon to stop (a new spec applies at the next start)".to_string()
                } else if running > 0 {
                    format!("{running} running action{} to finish", if running == 1 { "" } else { "s" })
                } else {
                    "the fleet of the new spec to connect (retrying)".to_string()
                }
            });
            show_pending(&shared, pending.as_ref(), why, generation + 1, &mut pending_shown);
        }
        let Some(c) = ctl.as_mut() else {
            // No spec in force yet: wait for one (or a stop).
            shared.waiting(opts.idle_tick);
            tokio::select! {
                // `changed()` marks the value seen: read it on the next turn.
                r = specs.changed(), if specs_open => match r {
                    Ok(()) => fresh_spec = true,
                    Err(_) => specs_open = false,
                },
                _ = stop.changed() => {}
                _ = tokio::time::sleep(opts.idle_tick) => {}
                // A spec source error shows at once (`changed()` marks it seen: read it next turn).
                true = source_changed(source_errors.as_mut()) => fresh_source = true,
            }
            continue;
        };
        let t0 = Instant::now();
        let observed = match c.observe().await {
            Ok(o) => {
                if observe_failures > 0 {
                    tracing::info!(failed_attempts = observe_failures, "observation works again");
                }
                observe_failures = 0;
                observe_error_logged = None;
                o
            }
            Err(e) => {
                // Exponential back-off; one log line per distinct error, not per attempt.
                observe_failures = observe_failures.saturating_add(1);
                let retry_in = observe_backoff(&opts, observe_failures);
                if observe_error_logged.as_deref() != Some(e.as_str()) {
                    tracing::warn!(
                        attempt = observe_failures,
                        retry_in_ms = retry_in.as_millis() as u64,
                        "observation failed (retrying with back-off; logged again when the error changes): {e}"
                    );
                    observe_error_logged = Some(e.clone());
                } else {
                    tracing::debug!(
                        attempt = observe_failures,
                        retry_in_ms = retry_in.as_millis() as u64,
                        "observation failed again: {e}"
                    );
                }
                set_error(&shared, Some(format!("observing the fleet: {e}")));
                (log_event!())(&Event::ObserveFailed(e));
                fresh_spec |= pause(c, retry_in, &shared, &mut specs, &mut specs_open, &mut stop).await;
                continue;
            }
        };
        on(&Note::Observed { took: t0.elapsed() });
        let mode = Mode {
            detect_only: opts.detect_only,
            spec_pending: pending.is_some(),
            stopping: stopping.is_some(),
            // A daemon never ends a run: it waits for the world or the spec to change.
            stall_ms: u64::MAX,
        };
        let step = c.step(&observed, mode, log_event!())?;
        let (pass, now, started, held_back) = (step.pass, step.now_ms, step.started.len(), step.held_back);
        passes += 1;
        shared.metrics.reconcile_pass(t0.elapsed());
        if shared.status().last_error.is_some() {
            set_error(&shared, None);
        }
        let busy = c.running_count() > 0 || !c.ctl.memory.node_ops.is_empty() || !c.ctl.memory.farm_ops.is_empty();
        // The status document: at most once per `status_every`, and on every change of phase.
        let phase = if stopping.is_some() {
            "stopping"
        } else if opts.detect_only {
            "detect-only"
        } else if pass.halted {
            "halted"
        } else if pass.converged {
            "converged"
        } else if pass.settled && !busy {
            // Everything that answered is done; some nodes did not answer.
            "unobserved"
        } else if busy {
            "rolling"
        } else {
            "waiting"
        };
        let phase_changed = shared.status().rollout.phase != phase;
        if phase_changed || last_view.is_none_or(|t| t.elapsed() >= opts.status_every) {
            last_view = Some(Instant::now());
            publish(&shared, c, &observed, &pass, phase, held_back, passes, now, source_error.clone());
        }
        let wait = if busy || started > 0 {
            opts.tick
        } else if pass.settled || pass.halted || opts.detect_only {
            // Settled with nodes unobserved re-observes them as often as a
            // converged fleet (their unreachable timeout is counted anyway).
            opts.resync
        } else {
            opts.idle_tick
        };
        fresh_spec |= pause(c, wait, &shared, &mut specs, &mut specs_open, &mut stop).await;
    }
}

/// Waits up to `wait` (telling `/healthz` how long), cut short by a
/// completion, a new spec or a stop request; true when a new spec came.
/// `changed()` marks it seen: the caller reads it on its next turn.
async fn pause<F: Fleetside>(
    c: &mut Runner<&Journal, F>,
    wait: Duration,
    shared: &Shared,
    specs: &mut watch::Receiver<Option<SpecUpdate>>,
    specs_open: &mut bool,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    shared.waiting(wait);
    tokio::select! {
        _ = c.wait(wait) => false,
        r = specs.changed(), if *specs_open => match r {
            Ok(()) => true,
            Err(_) => {
                *specs_open = false;
                false
            }
        },
        _ = stop.changed() => false,
    }
}

/// Completes (true) when the spec source's error changes; never without a source.
async fn source_changed(rx: Option<&mut watch::Receiver<Option<String>>>) -> bool {
    if let Some(rx) = rx
        && rx.changed().await.is_ok()
    {
        return true;
    }
    std::future::pending().await
}

/// How long to wait before observing again after `failures` failed
/// observations in a row: `tick` (at least 200 ms), doubling, at most the
/// resync period and never more than 30 s (a fleet that comes back is seen
/// within that).
pub fn observe_backoff(opts: &Options, failures: u32) -> Duration {
    let base = opts.tick.max(Duration::from_millis(200));
    let cap = opts.resync.min(Duration::from_secs(30)).max(base);
    base.saturating_mul(1u32 << failures.saturating_sub(1).min(16)).min(cap)
}

/// Shows a valid spec that waits for a quiet point (`/status`
/// `spec.pending`, `pending_since_ms`, `pending_reason`, the metric
/// `drover_spec_pending`), and logs each such spec once as it starts waiting.
/// `shown` remembers the spec logged and since when one waits.
fn show_pending(
    shared: &Shared,
    pending: Option<&SpecUpdate>,
    why: Option<String>,
    next_generation: u64,
    shown: &mut Option<(String, u64)>,
) {
    let Some(u) = pending else {
        if shown.take().is_some() {
            shared.metrics.spec_pending(false);
        }
        let mut st = shared.status();
        st.spec.pending = false;
        st.spec.pending_since_ms = None;
        st.spec.pending_reason = None;
        st.spec.pending_digest = None;
        st.spec.pending_commit = None;
        return;
    };
    let why = why.unwrap_or_default();
    // A newer spec that replaces a waiting one goes on waiting from then.
    let since = shown.as_ref().map_or_else(crate::control::now_ms, |(_, t)| *t);
    if shown.as_ref().is_none_or(|(d, _)| *d != u.digest) {
        tracing::info!(commit = u.commit.as_deref(), digest = %u.digest,
            "spec generation {next_generation} pending: waiting for {why}");
        shared.metrics.spec_pending(true);
    }
    *shown = Some((u.digest.clone(), since));
    let mut st = shared.status();
    st.spec.pending = true;
    st.spec.pending_since_ms = Some(since);
    st.spec.pending_reason = Some(why);
    st.spec.pending_digest = Some(u.digest.clone());
    st.spec.pending_commit = u.commit.clone();
}

fn set_error(shared: &Shared, e: Option<String>) {
    shared.metrics.last_error(e.as_deref());
    shared.status().last_error = e;
}

fn log_action(shared: &Shared, e: &Event) {
    match e {
        Event::Started { action, kind, why, wave } => {
            shared.metrics.action_started(kind);
            tracing::info!(target: "drover::action", action = %action, step = kind, wave = *wave, why = %why, "start");
        }
        Event::Finished { action, kind, outcome, took } => {
            let ok = *outcome == Outcome::Ok;
            shared.metrics.action_finished(kind, ok, *took);
            shared.status().history.finished(state::ActionRecord {
                action: action.clone(),
                kind: kind.to_string(),
                took_ms: took.as_millis() as u64,
                error: match outcome {
                    Outcome::Ok => None,
                    Outcome::Failed(e) => Some(e.clone()),
                },
            });
            match outcome {
                Outcome::Ok => tracing::info!(target: "drover::action", action = %action, step = kind,
                    duration_ms = took.as_millis() as u64, outcome = "ok", "done"),
                Outcome::Failed(err) => tracing::warn!(target: "drover::action", action = %action, step = kind,
                    duration_ms = took.as_millis() as u64, outcome = "failed", error = %err, "failed"),
            }
        }
        Event::ObserveFailed(_) => {}
    }
}

/// Rebuilds the status document and the fleet metrics from one pass.
#[allow(clippy::too_many_arguments)]
fn publish<F: Fleetside>(
    shared: &Shared,
    r: &Runner<&Journal, F>,
    observed: &Observed,
    pass: &crate::plan::Pass,
    phase: &str,
    pending: Vec<String>,
    passes: u64,
    now_ms: u64,
    source_error: Option<String>,
) {
    let (fleet, c) = (r.fleet(), &r.ctl);
    // The simulation's report advances the simulated world: never under the
    // status lock, which the endpoints need.
    let simulation = r.side().simulation_report();
    if let Some(s) = &simulation
        && let (Some(scale), Some(effective), Some(slipped)) =
            (s["time_scale"].as_f64(), s["effective_time_scale"].as_f64(), s["slipped_s"].as_f64())
    {
        shared.metrics.simulation_pace(scale, effective, slipped);
    }
    let counts = shared.metrics.fleet_observed(fleet, observed, &c.memory);
    shared.metrics.rollout_converged(pass.converged);
    if let Some(t) = r.side().transport() {
        shared.metrics.transport(t);
    }
    let errors = r.side().unreachable_errors();
    let mut view = crate::status::view(fleet, observed, &c.memory, &errors);
    let cells = web::annotate(&mut view, fleet, observed, &c.memory);
    let blocked_items = pass
        .blocked
        .iter()
        .map(|b| state::BlockedItem {
            subject: b.subject.clone(),
            cause: serde_json::to_value(b.cause).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
            reason: b.reason.clone(),
            until_ms: b.until_ms,
        })
        .collect();
    let open_farm_windows: Vec<(String, String)> = c
        .memory
        .farm_ops
        .keys()
        .filter_map(|&f| fleet.farms.get(f as usize))
        .map(|farm| (fleet.sites[farm.site as usize].name.clone(), farm.name.clone()))
        .collect();
    let unobserved = observed.unobserved_nodes(fleet, &errors);
    let mut failed: Vec<String> = c
        .memory
        .failed_nodes
        .iter()
        .map(|(n, e)| format!("node {}: {e}", fleet.nodes[*n as usize].name))
        .chain(c.memory.failed_farms.iter().map(|(f, e)| format!("farm {}: {e}", fleet.farms[*f as usize].name)))
        .collect();
    failed.sort();
    // Held by an operator: what the planner names, and every node out of
    // service that drover did not take out (also when nothing needs it).
    let mut held = pass.held.clone();
    for n in 0..fleet.nodes.len() {
        if metrics::NodeState::of(observed, &c.memory, n as u32) == metrics::NodeState::Held {
            let name = format!("node {}", fleet.nodes[n].name);
            if !held.contains(&name) {
                held.push(name);
            }
        }
    }
    let mut st = shared.status();
    st.rollout = state::Rollout {
        phase: phase.into(),
        converged: pass.converged,
        running: c.running().map(|a| a.describe(fleet)).collect(),
        pending,
        blocked: pass.blocked.iter().map(|b| format!("{}: {}", b.subject, b.reason)).collect(),
        held,
        failed,
        drift_items: counts.drift_items,
        nodes_at_target: counts.nodes_at_target,
        nodes_total: fleet.nodes.len() as u64,
        nodes_unobserved: counts.nodes_unobserved,
        unobserved,
        last_pass_at_ms: now_ms,
        passes,
        blocked_items,
        cells,
    };
    st.history.pass(now_ms, counts.nodes_at_target, &open_farm_windows);
    st.spec_source_error = source_error;
    st.fleet = view;
    st.simulation = simulation;
}
