//! The reconcile controller: the one loop every fleet side runs.
//!
//! `Controller` is the machinery between the pure planner and the adapters:
//! it records gate evidence and unreachable nodes, asks the planner, admits
//! what may start (not a subject backing off, not while stopping unless it
//! closes an open window, not in detect-only or while a new spec waits),
//! journals each action before it starts and after it ends, backs a failed
//! subject off (2 s doubling to a minute, on the fleet's clock), carries its
//! memory to a new spec by identity, decides when a run ends (converged,
//! halted, unobserved, stuck, outside the change window) and when it must
//! look again (a soak's end, a window's opening, a drain timeout, a back-off
//! ending). It does no I/O and reads no clock: time is an argument, the
//! journal is a `Store`, and executing an action is its driver's job.
//!
//! Its drivers only carry out what it decides, each with its own way of
//! waiting:
//! - `Runner` (tokio): each action in its own task, completions on a
//!   channel; `reconcile_once` (the real fleet and the live simulation) and
//!   `crate::daemon::run` drive it over a `Fleetside`.
//! - `crate::sim::Sim`: its discrete-event loop on a virtual clock, each
//!   action a timed event, the journal a `MemJournal`; a crash drops the
//!   controller and a restart opens a new one on the kept journal.

pub mod fleetside;
pub mod journal;
pub mod lease;
pub mod once;
pub mod runner;
pub mod store;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use fleetside::Fleetside;
use journal::Resolved;
pub use once::{Options, reconcile_once, reconcile_once_with};
pub use runner::Runner;
pub use store::{MemJournal, Op, Store};

use crate::model::{FarmId, Fleet};
use crate::observe::Observed;
use crate::plan::action::{Action, Outcome, Subject};
use crate::plan::{self, Blocked, DiffCache, Estimates, Memory, Planned, World};

/// What the loop reports as it goes.
#[derive(Clone, Debug)]
pub enum Event {
    Started {
        action: String,
        /// `ActionKind::name`.
        kind: &'static str,
        why: String,
        wave: Option<u32>,
    },
    Finished {
        action: String,
        kind: &'static str,
        outcome: Outcome,
        took: Duration,
    },
    /// An observation failed (the loop retries while actions run).
    ObserveFailed(String),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Finish {
    Converged,
    /// Failures exceed the budget; everything in flight finished.
    Halted,
    /// Nothing can start: these are the reasons.
    Stuck,
    /// Everything allowed now is done; the rest (disruptive or farm-level
    /// work) waits for the change window that opens then (fleet clock, ms),
    /// later than the stall time from now. Run again once it is open.
    OutsideWindow {
        opens_ms: u64,
    },
    /// Everything that answered is at its target and nothing is left to
    /// do, but these nodes (`Summary::unobserved`) did not answer for the
    /// stall time: the fleet is not known to be converged.
    Unobserved,
    /// Stopped on request once the actions in flight had finished.
    Interrupted,
    Error(String),
}

#[derive(Clone, Debug)]
pub struct Summary {
    pub finish: Finish,
    pub started: u64,
    pub failed: Vec<String>,
    pub blocked: Vec<Blocked>,
    pub held: Vec<String>,
    pub passes: u64,
    pub elapsed: Duration,
    /// Windows left open in the journal (a farm mid-switch, a node drained):
    /// the next run completes them.
    pub open: Vec<String>,
    /// Nodes that did not answer the last observation, and why.
    pub unobserved: Vec<crate::observe::Unobserved>,
    /// Journal entries this run could not carry over to the spec (their
    /// node or farm is gone, moved, or answers at another address): closed,
    /// never applied to another object (`plan::named`).
    pub resolved: Vec<String>,
}

/// Wall-clock time in ms since the epoch: the journal's times survive restarts.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Resolutions as recorded on `on` (`open`, `new spec`) at `at_ms`.
fn stamp(resolutions: Vec<plan::named::Resolution>, at_ms: u64, on: &str) -> Vec<Resolved> {
    resolutions.into_iter().map(|resolution| Resolved { at_ms, on: on.to_string(), resolution }).collect()
}

/// What a driver lets start in this pass, besides the planner's own rules.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mode {
    /// Observe and plan, start nothing (`--detect-only`).
    pub detect_only: bool,
    /// A new spec waits for a quiet point: nothing new starts.
    pub spec_pending: bool,
    /// Stopping: only what carries an open window to its end starts.
    pub stopping: bool,
    /// A run that made no progress for this long (fleet clock, ms) with
    /// nothing to wait for ends `Stuck`; silent nodes get as long to answer
    /// before it ends `Unobserved`; a change window further away ends it
    /// `OutsideWindow`.
    pub stall_ms: u64,
}

/// One pass of the loop, as decided.
#[derive(Debug)]
pub struct Step {
    /// The planner's pass (its `actions` as planned, started or not).
    pub pass: plan::Pass,
    /// The fleet clock of the pass (ms).
    pub now_ms: u64,
    /// Journaled and counted as running: the driver executes each and hands
    /// its outcome to `Controller::completed`.
    pub started: Vec<Planned>,
    /// Planned actions that did not start, each with why.
    pub held_back: Vec<String>,
    /// The run ends here (`reconcile --once`, the simulation): nothing
    /// started in this pass and none will without a change in the world.
    pub finish: Option<Finish>,
    /// The next instant (fleet clock) something the loop waits for happens
    /// without anything finishing: a soak's end, a change window's opening,
    /// an unreachable node's limit, a drain timeout, a back-off's end.
    pub wake_ms: Option<u64>,
}

/// The reconcile machinery: the journal-backed memory, the actions in flight
/// (by subject), their completions, the per-subject back-off and the run's
/// end. It decides nothing about the fleet itself: the planner does.
pub struct Controller<S: Store> {
    fleet: Arc<Fleet>,
    store: S,
    pub memory: Memory,
    /// Actions started and not completed, with when they started (fleet ms).
    running: Vec<(Action, u64)>,
    /// A subject whose action failed waits before it is tried again (2 s,
    /// doubling to a minute, on the fleet's clock): the planner asks again
    /// at once, level-triggered. Until when (ms), and how many failures in
    /// a row.
    cooldown: BTreeMap<Subject, (u64, u32)>,
    estimates: Estimates,
    /// Node diffs kept between passes: only nodes whose observed state
    /// changed are diffed again (the simulation plans once per event).
    diffs: DiffCache,
    tracker: plan::progress::Tracker,
    /// The last time (fleet ms) an action started or ended.
    last_progress_ms: u64,
    /// `Event`s are made for the driver (`quiet` turns them off).
    events: bool,
    pub started: u64,
    pub failed: Vec<String>,
    /// What the journal could not carry over to the spec, on open and on
    /// each new spec, oldest first (also recorded in the journal).
    pub resolved: Vec<Resolved>,
}

impl<S: Store> Controller<S> {
    /// Loads the journal for `fleet` (entries tied to their objects by
    /// identity, the rest reported in `resolved`); whatever a previous run
    /// had in flight is re-observed, not assumed.
    pub fn open(fleet: Arc<Fleet>, mut store: S, now_ms: u64) -> Result<Self, String> {
        let loaded = store.load(&fleet)?;
        let mut memory = loaded.memory;
        memory.restarted();
        let resolved = stamp(loaded.resolutions, now_ms, "open");
        store.save_resolved(&memory, &fleet, &resolved)?;
        Ok(Controller {
            diffs: DiffCache::new(Arc::clone(&fleet)),
            fleet,
            store,
            memory,
            running: Vec::new(),
            cooldown: BTreeMap::new(),
            estimates: Estimates::default(),
            tracker: plan::progress::Tracker::default(),
            last_progress_ms: now_ms,
            events: true,
            started: 0,
            failed: Vec::new(),
            resolved,
        })
    }

    /// What the planner is told to expect of each kind of action.
    pub fn with_estimates(mut self, estimates: Estimates) -> Self {
        self.estimates = estimates;
        self
    }

    /// Makes no `Event`s (their text costs a little per action): for a
    /// driver that reports from elsewhere (the simulation's own report).
    pub fn quiet(mut self) -> Self {
        self.events = false;
        self
    }

    pub fn fleet(&self) -> &Arc<Fleet> {
        &self.fleet
    }

    /// The journal, kept when the controller is dropped (a crash).
    pub fn into_store(self) -> S {
        self.store
    }

    /// Actions running now.
    pub fn running(&self) -> impl Iterator<Item = &Action> {
        self.running.iter().map(|(a, _)| a)
    }

    pub fn running_count(&self) -> usize {
        self.running.len()
    }

    /// Node diffs computed since the controller opened (the rest of its
    /// passes' diffs were reused): the planner's per-node work.
    pub fn diffs_computed(&self) -> u64 {
        self.diffs.computed()
    }

    /// Nodes at their target at the last pass.
    pub fn clean_nodes(&self) -> usize {
        self.diffs.clean()
    }

    /// Moves to a new spec's fleet: only when nothing runs, so every
    /// completion lands on the fleet it was planned on. The memory is
    /// carried over by identity (`plan::named::carry`); what cannot follow
    /// its object is recorded and returned.
    pub fn retarget(&mut self, fleet: Arc<Fleet>, now_ms: u64) -> Result<Vec<Resolved>, String> {
        if !self.running.is_empty() {
            return Err(format!("a new spec cannot apply while {} actions run", self.running.len()));
        }
        let (memory, resolutions) = plan::named::carry(&self.memory, &self.fleet, &fleet);
        let resolved = stamp(resolutions, now_ms, "new spec");
        if memory != self.memory || !resolved.is_empty() {
            self.memory = memory;
            self.store.save_resolved(&self.memory, &fleet, &resolved)?;
        }
        self.resolved.extend(resolved.iter().cloned());
        self.cooldown.clear();
        self.diffs = DiffCache::new(Arc::clone(&fleet));
        self.tracker = plan::progress::Tracker::default();
        self.fleet = fleet;
        Ok(resolved)
    }

    fn farm_of(&self, a: &Action) -> Option<FarmId> {
        match a.subject() {
            Subject::Node(n) => self.fleet.nodes.get(n as usize).map(|n| n.farm),
            Subject::Farm(f) => Some(f),
        }
    }

    /// Records one completion: memory, journal, back-off.
    pub fn completed(
        &mut self,
        action: Action,
        outcome: Outcome,
        took: Duration,
        now_ms: u64,
        on: &mut (dyn FnMut(&Event) + Send),
    ) -> Result<(), String> {
        if let Some(i) = self.running.iter().position(|(a, _)| *a == action) {
            self.running.swap_remove(i);
        }
        self.last_progress_ms = now_ms;
        let farm = self.farm_of(&action);
        self.memory.complete(&action, &outcome, now_ms, farm);
        if let Action::Migrate { node, release, phase, .. } = &action
            && let Some(n) = self.fleet.nodes.get(*node as usize)
        {
            let env = self.fleet.sites[n.site as usize].environment;
            self.memory.complete_migration(env, &release.0, *phase, &outcome, now_ms);
        }
        let op = Op { action: &action, at_ms: now_ms, outcome: Some(&outcome) };
        self.store.save_with(&self.memory, &self.fleet, Some(op))?;
        match &outcome {
            Outcome::Failed(e) => {
                let line = format!("{}: {e}", action.describe(&self.fleet));
                if !self.failed.contains(&line) {
                    self.failed.push(line);
                }
                let entry = self.cooldown.entry(action.subject()).or_insert((now_ms, 0));
                entry.1 += 1;
                entry.0 = now_ms + (1000u64 << entry.1.min(6)).min(60_000);
            }
            Outcome::Ok => {
                self.cooldown.remove(&action.subject());
                // Giving up on a node is a failure to report, though nothing failed to run.
                if let Action::MarkFailed { .. } = &action {
                    self.failed.push(action.describe(&self.fleet));
                }
            }
        }
        if self.events {
            on(&Event::Finished { action: action.describe(&self.fleet), kind: action.kind().name(), outcome, took });
        }
        Ok(())
    }

    /// Windows left open in the memory (a farm mid-switch, a node drained).
    pub fn open_windows(&self) -> Vec<String> {
        let fleet = &self.fleet;
        self.memory
            .farm_ops
            .iter()
            .filter_map(|(f, op)| Some(format!("farm {} ({:?})", fleet.farms.get(*f as usize)?.name, op.phase)))
            .chain(
                self.memory.node_ops.iter().filter_map(|(n, op)| {
                    Some(format!("node {} ({:?})", fleet.nodes.get(*n as usize)?.name, op.phase))
                }),
            )
            .collect()
    }

    /// True when the action only carries an open window to its end (its
    /// node or farm is already out): allowed while stopping.
    pub fn closes_open_window(&self, a: &Action) -> bool {
        match a.subject() {
            Subject::Farm(f) => self.memory.farm_ops.contains_key(&f),
            Subject::Node(n) => {
                self.memory.node_ops.contains_key(&n)
                    || self.fleet.nodes.get(n as usize).is_some_and(|x| self.memory.farm_ops.contains_key(&x.farm))
            }
        }
    }

    /// A subject cooling down after a failure at `now_ms`.
    pub fn cooling(&self, s: Subject, now_ms: u64) -> bool {
        self.cooldown.get(&s).is_some_and(|(until, _)| *until > now_ms)
    }

    /// One pass: records gate evidence and unreachable nodes, plans, starts
    /// (journals) what `mode` and the back-off allow, and decides whether
    /// the run ends here and when to look again.
    pub fn step(
        &mut self,
        observed: &Observed,
        now_ms: u64,
        mode: Mode,
        on: &mut (dyn FnMut(&Event) + Send),
    ) -> Result<Step, String> {
        self.record(observed, now_ms);
        let pass = plan::plan_with(
            &World { fleet: &self.fleet, observed, memory: &self.memory, now_ms, estimates: &self.estimates },
            &mut self.diffs,
        );
        let finish = self.finish(&pass, now_ms, mode);
        let mut started = Vec::new();
        let mut held_back = Vec::new();
        if finish.is_none() {
            for p in &pass.actions {
                let why_not = if mode.detect_only {
                    Some("detect-only")
                } else if mode.spec_pending {
                    Some("a new spec applies first")
                } else if mode.stopping && !self.closes_open_window(&p.action) {
                    Some("stopping")
                } else if self.cooling(p.action.subject(), now_ms) {
                    Some("backing off after a failure")
                } else {
                    None
                };
                match why_not {
                    Some(r) => held_back.push(format!("{} ({r})", p.action.describe(&self.fleet))),
                    None => {
                        self.start(p, observed, now_ms, on)?;
                        started.push(p.clone());
                    }
                }
            }
        }
        let wake_ms = self.next_wake(&pass, now_ms);
        Ok(Step { pass, now_ms, started, held_back, finish, wake_ms })
    }

    /// Records what an observation at `now_ms` proves: preproduction gate
    /// evidence, and which nodes do not answer since when.
    pub fn record(&mut self, observed: &Observed, now_ms: u64) {
        plan::gate::record(&self.fleet, observed, &mut self.memory, now_ms);
        self.memory.observe(observed, now_ms);
    }

    /// Journals one action and counts it as running.
    fn start(
        &mut self,
        p: &Planned,
        observed: &Observed,
        now_ms: u64,
        on: &mut (dyn FnMut(&Event) + Send),
    ) -> Result<(), String> {
        let farm = self.farm_of(&p.action);
        let weight = farm.and_then(|f| observed.farms.get(f as usize)).map_or(0, |f| f.lb.weight);
        self.memory.begin(&p.action, now_ms, farm, weight);
        if let Action::Migrate { node, release, phase, .. } = &p.action
            && let Some(n) = self.fleet.nodes.get(*node as usize)
        {
            let env = self.fleet.sites[n.site as usize].environment;
            self.memory.begin_migration(env, &release.0, *phase, &n.name, now_ms);
        }
        let op = Op { action: &p.action, at_ms: now_ms, outcome: None };
        self.store.save_with(&self.memory, &self.fleet, Some(op))?;
        self.started += 1;
        self.last_progress_ms = now_ms;
        if self.events {
            on(&Event::Started {
                action: p.action.describe(&self.fleet),
                kind: p.action.kind().name(),
                why: p.why.clone(),
                wave: p.wave,
            });
        }
        self.running.push((p.action.clone(), now_ms));
        Ok(())
    }

    /// Whether a run ends with this pass (before anything of it starts).
    fn finish(&self, pass: &plan::Pass, now_ms: u64, mode: Mode) -> Option<Finish> {
        if !self.running.is_empty() {
            return None;
        }
        let quiet_for = now_ms.saturating_sub(self.last_progress_ms);
        let stalled = quiet_for > mode.stall_ms;
        if pass.actions.is_empty() {
            if pass.converged {
                return Some(Finish::Converged);
            }
            if pass.halted {
                return Some(Finish::Halted);
            }
            // Done with everything that answered: the silent nodes get the
            // stall time to answer (re-observed on every pass), then the run
            // ends saying which they are. A node that answers with work to
            // do ends the wait (its actions are progress).
            if pass.settled {
                return stalled.then_some(Finish::Unobserved);
            }
            // Waiting for a window is not being stuck: one that opens within
            // the stall time is waited for, a later one ends the run. A wait
            // with a known end (a soak) is not stuck either.
            return match pass.change_window_opens_ms {
                Some(opens_ms) if opens_ms.saturating_sub(now_ms) > mode.stall_ms => {
                    Some(Finish::OutsideWindow { opens_ms })
                }
                Some(_) => None,
                None if stalled && !self.waits_for_a_deadline(now_ms) => Some(Finish::Stuck),
                None => None,
            };
        }
        // Everything the planner wants is backing off after failures, and
        // has been for the stall time.
        let cooling = pass.actions.iter().all(|p| self.cooling(p.action.subject(), now_ms));
        (cooling && stalled).then_some(Finish::Stuck)
    }

    /// A soak is under way: the gate opens at a known time.
    fn waits_for_a_deadline(&self, now_ms: u64) -> bool {
        let soak = self.fleet.policy.soak.as_millis() as u64;
        self.memory.gate.values().any(|r| !r.passed && r.since_ms + soak > now_ms)
    }

    /// The next instant after `now_ms` that something waited for happens by
    /// itself: a change window opens, a gate's soak ends, an unreachable node
    /// reaches its limit, a drain times out, a back-off ends.
    fn next_wake(&self, pass: &plan::Pass, now_ms: u64) -> Option<u64> {
        let fleet = &*self.fleet;
        let soak = fleet.policy.soak.as_millis() as u64;
        let drain = fleet.policy.drain_timeout.as_millis() as u64;
        let unreachable = plan::unreachable_limit_ms(fleet);
        let m = &self.memory;
        pass.change_window_opens_ms
            .into_iter()
            .chain(m.gate.values().filter(|r| !r.passed).map(|r| r.since_ms + soak))
            .chain(m.unreachable_since.values().map(|s| s + unreachable))
            .chain(m.node_ops.values().map(|op| op.since_ms + drain))
            .chain(m.farm_ops.values().map(|op| op.since_ms + drain))
            .chain(self.cooldown.values().map(|(until, _)| *until))
            .filter(|&t| t > now_ms)
            .min()
    }

    /// The progress events of `pass` (waits, farm windows, member waves that
    /// begin or end since the previous pass), for drivers that show them.
    pub fn progress(&mut self, pass: &plan::Pass, now_ms: u64) -> Vec<plan::progress::Event> {
        self.tracker.step(&self.fleet, pass, &self.memory, now_ms)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod unobserved_tests;

#[cfg(test)]
mod stop_tests;
