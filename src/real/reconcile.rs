//! `reconcile --once` against the real fleet: the level-triggered loop of
//! ARCHITECTURE.md. Observe, record gate evidence, plan, journal each action
//! before it starts, run it in its own task, journal its end, and plan again
//! after every completion (or every tick while waiting for a drain, a soak
//! or a reboot). The loop ends converged, halted on the failure budget,
//! unobserved (everything that answered is done, but some nodes did not
//! answer for `stall`), or stuck (nothing can start and nothing runs for
//! longer than `stall`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use super::journal::{Journal, OpRecord, Resolved};
use crate::model::Fleet;
use crate::observe::Observed;
use crate::plan::action::{Action, Outcome, Subject};
use crate::plan::{self, Blocked, Estimates, Memory, World};

/// What the loop needs from a fleet: observe it whole, carry out one action.
/// `real::fleet::RealFleet` is the real one (SSH, HAProxy, memcached, HTTP);
/// tests use an in-memory one. The planner and the journal are the same.
pub trait Fleetside: Send + Sync + 'static {
    /// The fleet this side was built for (the spec in force).
    fn fleet(&self) -> Arc<Fleet>;
    /// The fleet's clock in ms since the epoch: wall time for machines,
    /// virtual time for the simulation. The journal's times are on it.
    fn now_ms(&self) -> u64 {
        now_ms()
    }
    /// The whole fleet now; `Err` when it cannot be observed at all (an LB
    /// that does not answer). A node that does not answer is not an error.
    fn observe(&self) -> impl std::future::Future<Output = Result<Observed, String>> + Send;
    /// Runs one action to its end.
    fn execute(&self, action: &Action) -> impl std::future::Future<Output = Outcome> + Send;
    /// Why each unreachable node did not answer its last probe.
    fn unreachable_errors(&self) -> std::collections::BTreeMap<crate::model::NodeId, String> {
        Default::default()
    }
    /// The simulation only: what its independent invariant checker saw so far.
    fn simulation_report(&self) -> Option<serde_json::Value> {
        None
    }
    /// Machines only: SSH connections opened and commands run by this process.
    fn transport(&self) -> Option<super::ssh::Totals> {
        None
    }
}

impl Fleetside for super::fleet::RealFleet {
    fn fleet(&self) -> Arc<Fleet> {
        Arc::clone(&self.fleet)
    }
    async fn observe(&self) -> Result<Observed, String> {
        super::fleet::RealFleet::observe(self).await.map_err(|e| e.to_string())
    }
    async fn execute(&self, action: &Action) -> Outcome {
        super::fleet::RealFleet::execute(self, action).await
    }
    fn unreachable_errors(&self) -> std::collections::BTreeMap<crate::model::NodeId, String> {
        self.last_errors.lock().map(|e| e.iter().map(|(k, v)| (*k, v.clone())).collect()).unwrap_or_default()
    }
    fn transport(&self) -> Option<super::ssh::Totals> {
        Some(super::ssh::totals())
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    /// Re-plan at least this often while actions run or wait.
    pub tick: Duration,
    /// Give up when nothing could start and nothing ran for this long.
    pub stall: Duration,
    /// Set (by a signal handler) to stop: nothing new starts, what runs
    /// finishes, the journal says what is left open for the next run.
    pub stop: Arc<std::sync::atomic::AtomicBool>,
}

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

/// Resolutions as recorded on `on` (`open`, `new spec`) at `at_ms`.
fn stamp(resolutions: Vec<plan::named::Resolution>, at_ms: u64, on: &str) -> Vec<Resolved> {
    resolutions.into_iter().map(|resolution| Resolved { at_ms, on: on.to_string(), resolution }).collect()
}

/// Wall-clock time in ms since the epoch: the journal's times survive restarts.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// What the loop is told about a pass, for status and metrics.
pub struct PassView<'a> {
    pub fleet: &'a Fleet,
    pub observed: &'a Observed,
    pub memory: &'a Memory,
    pub pass: &'a plan::Pass,
    pub now_ms: u64,
}

/// One completed action, as it came back from its task.
type Completion = (Action, Outcome, Duration);

/// The reconcile machinery both loops share (`reconcile_once` here, the
/// daemon in `crate::daemon`): the journal-backed memory, the actions
/// running in their own tasks, their completions, and the per-subject
/// back-off after a failure. It decides nothing: the planner does.
pub struct Controller<'j, F: Fleetside> {
    side: Arc<F>,
    fleet: Arc<Fleet>,
    journal: &'j Journal,
    pub memory: Memory,
    tx: mpsc::UnboundedSender<Completion>,
    rx: mpsc::UnboundedReceiver<Completion>,
    finished: Vec<Completion>,
    /// Actions running now, with when they started.
    running: Vec<(Action, Instant)>,
    /// A subject whose action failed waits before it is tried again (2 s,
    /// doubling to a minute, on the fleet's clock: virtual time in the
    /// simulation): the planner asks again at once, level-triggered.
    /// Until when (ms), and how many failures in a row.
    cooldown: HashMap<Subject, (u64, u32)>,
    estimates: Estimates,
    pub last_progress: Instant,
    pub started: u64,
    pub failed: Vec<String>,
    /// What the journal could not carry over to the spec, on open and on
    /// each new spec, oldest first (also recorded in the journal).
    pub resolved: Vec<Resolved>,
}

impl<'j, F: Fleetside> Controller<'j, F> {
    /// Loads the journal for the side's fleet (entries tied to their objects
    /// by identity, the rest reported in `resolved`); whatever a previous
    /// run had in flight is re-observed, not assumed.
    pub fn new(side: Arc<F>, journal: &'j Journal) -> Result<Self, String> {
        let fleet = side.fleet();
        let loaded = journal.load(&fleet)?;
        let mut memory = loaded.memory;
        memory.restarted();
        let resolved = stamp(loaded.resolutions, side.now_ms(), "open");
        journal.save_resolved(&memory, &fleet, &resolved)?;
        let (tx, rx) = mpsc::unbounded_channel();
        Ok(Controller {
            fleet,
            side,
            journal,
            memory,
            tx,
            rx,
            finished: Vec::new(),
            running: Vec::new(),
            cooldown: HashMap::new(),
            estimates: Estimates::default(),
            last_progress: Instant::now(),
            started: 0,
            failed: Vec::new(),
            resolved,
        })
    }

    pub fn fleet(&self) -> &Arc<Fleet> {
        &self.fleet
    }

    pub fn side(&self) -> &Arc<F> {
        &self.side
    }

    /// Actions running now.
    pub fn running(&self) -> impl Iterator<Item = &Action> {
        self.running.iter().map(|(a, _)| a)
    }

    pub fn running_count(&self) -> usize {
        self.running.len()
    }

    /// Moves to a new fleet side (a new spec): only when nothing runs, so
    /// every completion lands on the fleet it was planned on. The memory is
    /// carried over by identity (`plan::named::carry`); what cannot follow
    /// its object is recorded and returned.
    pub fn retarget(&mut self, side: Arc<F>) -> Result<Vec<Resolved>, String> {
        if !self.running.is_empty() {
            return Err(format!("a new spec cannot apply while {} actions run", self.running.len()));
        }
        let fleet = side.fleet();
        let (memory, resolutions) = plan::named::carry(&self.memory, &self.fleet, &fleet);
        let resolved = stamp(resolutions, side.now_ms(), "new spec");
        if memory != self.memory || !resolved.is_empty() {
            self.memory = memory;
            self.journal.save_resolved(&self.memory, &fleet, &resolved)?;
        }
        self.resolved.extend(resolved.iter().cloned());
        self.cooldown.clear();
        self.fleet = fleet;
        self.side = side;
        Ok(resolved)
    }

    fn farm_of(&self, a: &Action) -> Option<crate::model::FarmId> {
        match a.subject() {
            Subject::Node(n) => Some(self.fleet.nodes[n as usize].farm),
            Subject::Farm(f) => Some(f),
        }
    }

    /// Waits for a completion, at most `timeout`; true if one arrived.
    pub async fn wait(&mut self, timeout: Duration) -> bool {
        tokio::select! {
            Some(c) = self.rx.recv() => { self.finished.push(c); true }
            _ = tokio::time::sleep(timeout) => false,
        }
    }

    /// Waits for a completion (none running: never returns).
    pub async fn next_completion(&mut self) {
        if let Some(c) = self.rx.recv().await {
            self.finished.push(c);
        }
    }

    /// Records every completion that arrived: memory, journal, back-off.
    pub fn settle(&mut self, on: &mut (dyn FnMut(&Event) + Send)) -> Result<(), String> {
        while let Ok(c) = self.rx.try_recv() {
            self.finished.push(c);
        }
        let fleet = Arc::clone(&self.fleet);
        for (action, outcome, took) in std::mem::take(&mut self.finished) {
            if let Some(i) = self.running.iter().position(|(a, _)| *a == action) {
                self.running.swap_remove(i);
            }
            self.last_progress = Instant::now();
            let farm = self.farm_of(&action);
            let at = self.side.now_ms();
            self.memory.complete(&action, &outcome, at, farm);
            self.journal.save_with(&self.memory, &fleet, Some(&OpRecord::of(&fleet, &action, at, Some(&outcome))))?;
            match &outcome {
                Outcome::Failed(e) => {
                    let line = format!("{}: {e}", action.describe(&fleet));
                    if !self.failed.contains(&line) {
                        self.failed.push(line);
                    }
                    let entry = self.cooldown.entry(action.subject()).or_insert((at, 0));
                    entry.1 += 1;
                    entry.0 = at + (1000u64 << entry.1.min(6)).min(60_000);
                }
                Outcome::Ok => {
                    self.cooldown.remove(&action.subject());
                    // Giving up on a node is a failure to report, though nothing failed to run.
                    if let Action::MarkFailed { .. } = &action {
                        self.failed.push(action.describe(&fleet));
                    }
                }
            }
            on(&Event::Finished { action: action.describe(&fleet), kind: action.kind().name(), outcome, took });
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
                    || self.memory.farm_ops.contains_key(&self.fleet.nodes[n as usize].farm)
            }
        }
    }

    pub async fn observe(&self) -> Result<Observed, String> {
        self.side.observe().await
    }

    /// Records gate evidence and unreachable nodes, and plans.
    pub fn plan(&mut self, observed: &Observed) -> (plan::Pass, u64) {
        let now = self.side.now_ms();
        plan::gate::record(&self.fleet, observed, &mut self.memory, now);
        self.memory.observe(observed, now);
        let pass = plan::plan(&World {
            fleet: &self.fleet,
            observed,
            memory: &self.memory,
            now_ms: now,
            estimates: &self.estimates,
        });
        (pass, now)
    }

    /// A subject cooling down after a failure.
    pub fn cooling(&self, s: Subject) -> bool {
        self.cooldown.get(&s).is_some_and(|(until, _)| *until > self.side.now_ms())
    }

    /// Journals and starts one action in its own task.
    pub fn start(
        &mut self,
        p: plan::Planned,
        observed: &Observed,
        now: u64,
        on: &mut (dyn FnMut(&Event) + Send),
    ) -> Result<(), String> {
        let farm = self.farm_of(&p.action);
        let weight = farm.map(|f| observed.farms[f as usize].lb.weight).unwrap_or(0);
        self.memory.begin(&p.action, now, farm, weight);
        self.journal.save_with(&self.memory, &self.fleet, Some(&OpRecord::of(&self.fleet, &p.action, now, None)))?;
        self.started += 1;
        self.last_progress = Instant::now();
        on(&Event::Started {
            action: p.action.describe(&self.fleet),
            kind: p.action.kind().name(),
            why: p.why,
            wave: p.wave,
        });
        self.running.push((p.action.clone(), Instant::now()));
        let (side, tx) = (Arc::clone(&self.side), self.tx.clone());
        tokio::spawn(async move {
            let t = Instant::now();
            let run = std::panic::AssertUnwindSafe(side.execute(&p.action));
            let outcome = futures::FutureExt::catch_unwind(run)
                .await
                .unwrap_or_else(|_| Outcome::Failed("drover's executor panicked (a bug): see the log".into()));
            let _ = tx.send((p.action, outcome, t.elapsed()));
        });
        Ok(())
    }
}

pub async fn reconcile_once<F: Fleetside>(
    real: Arc<F>,
    journal: &Journal,
    opts: &Options,
    on: &mut (dyn FnMut(&Event) + Send),
) -> Summary {
    reconcile_once_with(real, journal, opts, on, &mut |_, _, _| {}).await
}

/// `reconcile_once`, also telling `progress` (fleet, fleet clock ms, event)
/// what begins and ends between passes: waits (until when), farm windows,
/// member waves (`plan::progress`, the simulation's lines too).
pub async fn reconcile_once_with<F: Fleetside>(
    real: Arc<F>,
    journal: &Journal,
    opts: &Options,
    on: &mut (dyn FnMut(&Event) + Send),
    progress: &mut (dyn FnMut(&Fleet, u64, &plan::progress::Event) + Send),
) -> Summary {
    let mut tracker = plan::progress::Tracker::default();
    let t0 = Instant::now();
    let mut summary = Summary {
        finish: Finish::Converged,
        started: 0,
        failed: Vec::new(),
        blocked: Vec::new(),
        held: Vec::new(),
        passes: 0,
        elapsed: Duration::ZERO,
        open: Vec::new(),
        unobserved: Vec::new(),
        resolved: Vec::new(),
    };
    let done = |mut s: Summary, ctl: Option<&Controller<'_, F>>, finish: Finish| {
        if let Some(c) = ctl {
            s.started = c.started;
            s.failed = c.failed.clone();
            s.resolved = c.resolved.iter().map(|r| r.resolution.to_string()).collect();
        }
        s.finish = finish;
        s.elapsed = t0.elapsed();
        s
    };
    let mut ctl = match Controller::new(real, journal) {
        Ok(c) => c,
        Err(e) => return done(summary, None, Finish::Error(e)),
    };
    loop {
        if let Err(e) = ctl.settle(on) {
            return done(summary, Some(&ctl), Finish::Error(e));
        }
        if opts.stop.load(std::sync::atomic::Ordering::SeqCst) {
            if ctl.running_count() == 0 {
                summary.open = ctl.open_windows();
                return done(summary, Some(&ctl), Finish::Interrupted);
            }
            ctl.next_completion().await;
            continue;
        }
        let observed = match ctl.observe().await {
            Ok(o) => o,
            Err(e) => {
                if ctl.running_count() == 0 {
                    return done(summary, Some(&ctl), Finish::Error(e));
                }
                on(&Event::ObserveFailed(e));
                ctl.next_completion().await;
                continue;
            }
        };
        summary.passes += 1;
        let (mut pass, now) = ctl.plan(&observed);
        summary.blocked = pass.blocked.clone();
        summary.held = pass.held.clone();
        summary.unobserved = observed.unobserved_nodes(ctl.fleet(), &ctl.side().unreachable_errors());
        let idle = ctl.running_count() == 0;
        if idle && pass.actions.is_empty() {
            if pass.converged {
                return done(summary, Some(&ctl), Finish::Converged);
            }
            if pass.halted {
                return done(summary, Some(&ctl), Finish::Halted);
            }
            // Done with everything that answered: the silent nodes get the
            // stall time to answer (re-observed every tick), then the run
            // ends saying which they are. A node that answers with work to
            // do ends the wait (its actions are progress).
            if pass.settled {
                if ctl.last_progress.elapsed() > opts.stall {
                    return done(summary, Some(&ctl), Finish::Unobserved);
                }
                ctl.wait(opts.tick).await;
                continue;
            }
            // Waiting for a window is not being stuck: one that opens within
            // the stall time is waited for, a later one ends the run.
            match pass.change_window_opens_ms {
                Some(opens_ms) if opens_ms.saturating_sub(now) > opts.stall.as_millis() as u64 => {
                    return done(summary, Some(&ctl), Finish::OutsideWindow { opens_ms });
                }
                None if ctl.last_progress.elapsed() > opts.stall => return done(summary, Some(&ctl), Finish::Stuck),
                _ => {}
            }
        }
        let waiting = pass.actions.iter().filter(|p| ctl.cooling(p.action.subject())).count();
        if idle && waiting == pass.actions.len() && !pass.actions.is_empty() && ctl.last_progress.elapsed() > opts.stall
        {
            return done(summary, Some(&ctl), Finish::Stuck);
        }
        for p in std::mem::take(&mut pass.actions) {
            if ctl.cooling(p.action.subject()) {
                continue;
            }
            if let Err(e) = ctl.start(p, &observed, now, on) {
                return done(summary, Some(&ctl), Finish::Error(e));
            }
        }
        for e in tracker.step(ctl.fleet(), &pass, &ctl.memory, now) {
            progress(ctl.fleet(), now, &e);
        }
        ctl.wait(opts.tick).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;
    use crate::model::Needs;
    use crate::observe::{Admin, Health, Str};
    use crate::real::journal::OpEvent;
    use crate::sim::fleetgen::{self, Change, Shape};

    /// A fleet in memory: each action takes effect at once. Exercises the
    /// loop (journal, tasks, completions, resume) without machines.
    struct InMemory {
        fleet: Fleet,
        state: Mutex<Observed>,
        executed: AtomicUsize,
        /// From the first action this matches on, `execute` never returns (a
        /// process about to be killed).
        hang_from: fn(&Action) -> bool,
        hung: AtomicBool,
        /// A stopped clock (ms since the epoch) instead of wall time.
        clock_ms: Option<u64>,
    }

    impl InMemory {
        fn new(fleet: Fleet, hang_from: fn(&Action) -> bool) -> InMemory {
            let state = crate::sim::Sim::new(&fleet, crate::sim::SimConfig::new(&fleet, 1)).observe();
            InMemory {
                fleet,
                state: Mutex::new(state),
                executed: AtomicUsize::new(0),
                hang_from,
                hung: AtomicBool::new(false),
                clock_ms: None,
            }
        }

        /// The same machines after drover restarted: their state carried
        /// over, nothing hangs, the clock at `clock_ms`.
        fn restarted(&self, clock_ms: Option<u64>) -> InMemory {
            InMemory {
                fleet: self.fleet.clone(),
                state: Mutex::new(self.state.lock().unwrap().clone()),
                executed: AtomicUsize::new(0),
                hang_from: never,
                hung: AtomicBool::new(false),
                clock_ms,
            }
        }

        fn apply(&self, action: &Action) {
            let fleet = &self.fleet;
            let mut st = self.state.lock().unwrap();
            let install = |o: &mut crate::observe::NodeObs, atoms: &[crate::model::Atom]| {
                for a in atoms {
                    let key = Str::from(a.key().as_str());
                    match o.packages.iter_mut().find(|(k, _)| *k == key) {
                        Some(e) => e.1 = a.version.clone(),
                        None => o.packages.push((key, a.version.clone())),
                    }
                    if matches!(fleet.policy.needs(a), Some(Needs::Reboot)) {
                        o.kernel_installed = Some(a.version.clone());
                    }
                }
            };
            match action {
                Action::Fetch { node, atoms } => {
                    let o = &mut st.nodes[*node as usize];
                    o.fetched.extend(atoms.iter().map(|a| (Str::from(a.key().as_str()), a.version.clone())));
                }
                Action::StagePhp { node, version } => st.nodes[*node as usize].php_installed.push(version.clone()),
                Action::StageRelease { node, release } => {
                    st.nodes[*node as usize].releases_installed.push(release.clone())
                }
                Action::InstallOnline { node, atoms } => install(&mut st.nodes[*node as usize], atoms),
                Action::Upgrade { node, atoms, disruption } => {
                    let o = &mut st.nodes[*node as usize];
                    install(o, atoms);
                    if disruption.reboot {
                        o.kernel_running = o.kernel_installed.clone();
                        o.boot_id = Str::from(format!("{}+", o.boot_id).as_str());
                    }
                }
                Action::SetNode { node, admin } => st.nodes[*node as usize].lb.admin = *admin,
                Action::Activate { node, php, release, .. } => {
                    let o = &mut st.nodes[*node as usize];
                    if let Some(p) = php {
                        o.php_active = Some(p.clone());
                    }
                    if let Some(r) = release {
                        o.release_active = Some(r.clone());
                    }
                }
                Action::HealthCheck { node } => st.nodes[*node as usize].health = Health::Passing,
                Action::SetFarm { farm, admin } => {
                    let f = &mut st.farms[*farm as usize];
                    f.lb.admin = *admin;
                    if *admin == Admin::Ready {
                        f.lb.weight = fleet.farms[*farm as usize].lb_weight;
                    }
                }
                Action::SetFarmWeight { farm, weight } => st.farms[*farm as usize].lb.weight = *weight,
                Action::FlushCache { .. } | Action::MarkFailed { .. } => {}
            }
        }
    }

    impl Fleetside for InMemory {
        fn fleet(&self) -> Arc<Fleet> {
            Arc::new(self.fleet.clone())
        }
        fn now_ms(&self) -> u64 {
            self.clock_ms.unwrap_or_else(now_ms)
        }
        async fn observe(&self) -> Result<Observed, String> {
            Ok(self.state.lock().unwrap().clone())
        }
        async fn execute(&self, action: &Action) -> Outcome {
            self.executed.fetch_add(1, Ordering::SeqCst);
            if self.hung.load(Ordering::SeqCst) || (self.hang_from)(action) {
                self.hung.store(true, Ordering::SeqCst);
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            self.apply(action);
            Outcome::Ok
        }
    }

    fn never(_: &Action) -> bool {
        false
    }

    fn shape() -> Shape {
        Shape {
            prod_sites: 2,
            farms_per_site: 2,
            nodes_per_farm: 3,
            profiles: 2,
            max_unavailable: 1,
            max_farms_down: 1,
            capacity_floor: 0.0,
            soak: "0s".into(),
            failure_budget: 2,
            change: Change::ALL,
            sessions_per_site: 0,
        }
    }

    fn opts() -> Options {
        Options { tick: Duration::from_millis(5), stall: Duration::from_secs(5), stop: Default::default() }
    }

    fn converged(f: &InMemory) -> bool {
        let st = f.state.lock().unwrap();
        (0..f.fleet.nodes.len() as u32).all(|n| crate::diff::node_diff(&f.fleet, n, &st.nodes[n as usize]).is_clean())
            && st.farms.iter().all(|fo| fo.lb.admin == Admin::Ready && fo.lb.weight > 0)
            && st.nodes.iter().all(|o| o.lb.admin == Admin::Ready)
    }

    fn journal(name: &str) -> (std::path::PathBuf, Journal) {
        let dir = std::env::temp_dir().join(format!("drover-loop-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let j = Journal::new(&dir.join("journal.redb"));
        (dir, j)
    }

    /// A new spec with fewer farms while a window is open on one of the
    /// removed ones: the retarget reports it, keeps the rest by identity,
    /// records it in the journal, and a restart on that spec plans (no panic).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_spec_without_a_farm_mid_switch_reports_it() {
        let big = fleetgen::fleet(&Shape { farms_per_site: 3, ..shape() }).unwrap();
        let small = fleetgen::fleet(&shape()).unwrap();
        let (dir, j) = journal("retarget");
        let mut ctl = Controller::new(Arc::new(InMemory::new(big.clone(), never)), &j).unwrap();
        let gone = big.farms.iter().position(|f| f.name == "s0-f2").unwrap() as u32;
        let kept = big.nodes.iter().position(|n| n.name == "s1-f1-n002").unwrap() as u32;
        ctl.memory.begin(&Action::SetFarm { farm: gone, admin: Admin::Maint }, 1, None, 100);
        ctl.memory.begin(&Action::SetNode { node: kept, admin: Admin::Drain }, 1, None, 100);
        ctl.memory.restarted();
        let resolved = ctl.retarget(Arc::new(InMemory::new(small.clone(), never))).unwrap();
        assert_eq!(resolved.len(), 1, "{resolved:?}");
        assert_eq!(resolved[0].resolution.object, "farm s0/s0-f2");
        assert_eq!(resolved[0].resolution.reason, plan::named::Reason::Gone);
        let kept_now = small.nodes.iter().position(|n| n.name == "s1-f1-n002").unwrap() as u32;
        assert_ne!(kept, kept_now, "the node moved position");
        assert_eq!(ctl.memory.node_ops.keys().copied().collect::<Vec<_>>(), vec![kept_now]);
        assert!(ctl.memory.farm_ops.is_empty());
        assert_eq!(j.resolutions(10).unwrap().len(), 1, "recorded in the journal");
        drop(ctl);
        // A restart on the small spec: the drained node is carried on, nothing to report.
        let world = Arc::new(InMemory::new(small, never));
        let s = reconcile_once(Arc::clone(&world), &j, &opts(), &mut |_| {}).await;
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(s.finish, Finish::Converged, "{s:?}");
        assert!(s.resolved.is_empty(), "{s:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn converges_a_fleet_with_every_kind_of_change() {
        let fleet = fleetgen::fleet(&shape()).unwrap();
        let world = Arc::new(InMemory::new(fleet, never));
        assert!(!converged(&world), "the generated fleet starts behind its targets");
        let (dir, j) = journal("converge");
        let s = reconcile_once(Arc::clone(&world), &j, &opts(), &mut |_| {}).await;
        let ops = j.recent(usize::MAX).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(s.finish, Finish::Converged, "{s:?}");
        assert!(converged(&world));
        assert!(s.failed.is_empty());
        // The operations log: every action began, then ended ok, in seq order.
        assert_eq!(ops.len() as u64, 2 * s.started, "one begin and one end per action");
        assert!(ops.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        for end in ops.iter().filter(|r| r.event == OpEvent::End) {
            assert_eq!(end.outcome.as_deref(), Some("ok"));
            let begin = ops.iter().rfind(|r| r.seq < end.seq && r.action == end.action).unwrap();
            assert_eq!(begin.event, OpEvent::Begin, "{end:?} ended without beginning");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn outside_change_windows_a_run_does_what_is_allowed_and_says_when_the_rest_can_start() {
        use crate::model::ChangeWindow;
        use crate::plan::change_windows::{DAY_MS, MINUTE_MS};
        const MONDAY: u64 = 20_780 * DAY_MS; // 2026-11-23
        let mut fleet = fleetgen::fleet(&shape()).unwrap();
        // Tuesdays 01:00-03:00 only; the clock stands on Monday at noon.
        fleet.policy.change_windows = vec![ChangeWindow { days: 1 << 1, start_min: 60, end_min: 180 }];
        let mut world = InMemory::new(fleet, never);
        world.clock_ms = Some(MONDAY + 12 * 60 * MINUTE_MS);
        let world = Arc::new(world);
        let (dir, j) = journal("window");
        let mut kinds = std::collections::BTreeSet::new();
        let s = reconcile_once(Arc::clone(&world), &j, &opts(), &mut |e| {
            if let Event::Started { kind, .. } = e {
                kinds.insert(*kind);
            }
        })
        .await;
        let _ = std::fs::remove_dir_all(&dir);
        let tuesday_1am = MONDAY + DAY_MS + 60 * MINUTE_MS;
        assert_eq!(s.finish, Finish::OutsideWindow { opens_ms: tuesday_1am }, "{s:?}");
        assert!(!converged(&world));
        // What needs no window ran (staging, fetching); nothing left the LB.
        assert!(kinds.contains("stage_release") && kinds.contains("fetch"), "{kinds:?}");
        for k in ["set_node", "set_farm", "set_farm_weight", "upgrade", "activate"] {
            assert!(!kinds.contains(k), "{k} started outside the window: {kinds:?}");
        }
        assert!(s.blocked.iter().any(|b| b.reason.contains("next opens 2026-11-24 01:00 UTC")), "{:?}", s.blocked);
        // In the window, the same journal carries the rollout to its end.
        let world2 = Arc::new(world.restarted(Some(tuesday_1am + MINUTE_MS)));
        let (dir, j) = journal("window-open");
        let s = reconcile_once(Arc::clone(&world2), &j, &opts(), &mut |_| {}).await;
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(s.finish, Finish::Converged, "{s:?}");
        assert!(converged(&world2));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_cut_off_mid_rollout_resumes_from_its_journal() {
        let fleet = fleetgen::fleet(&shape()).unwrap();
        // The first run stops answering from the first activation or upgrade
        // on: those only run inside a window, so one is open at the cut.
        let world = Arc::new(InMemory::new(fleet, |a| matches!(a, Action::Activate { .. } | Action::Upgrade { .. })));
        let (dir, j) = journal("resume");
        let (o, mut quiet) = (opts(), |_: &Event| {});
        let cut = tokio::time::timeout(Duration::from_secs(2), reconcile_once(Arc::clone(&world), &j, &o, &mut quiet));
        assert!(cut.await.is_err(), "the first run must be cut off");
        let mid = j.load(&world.fleet()).unwrap().memory;
        assert!(!j.unfinished().unwrap().is_empty(), "cut off with actions in flight");
        assert!(!mid.node_ops.is_empty() || !mid.farm_ops.is_empty(), "cut off inside a window: {mid:?}");
        // The restarted run: only the journal survives.
        let world2 = Arc::new(world.restarted(None));
        let s = reconcile_once(Arc::clone(&world2), &j, &opts(), &mut |_| {}).await;
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(s.finish, Finish::Converged, "{s:?}");
        assert!(converged(&world2));
    }
}

#[cfg(test)]
mod unobserved_tests;

#[cfg(test)]
mod stop_tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;

    /// A fleet that never changes and counts what it is asked to do.
    struct Still {
        fleet: Fleet,
        observed: Observed,
        executed: AtomicUsize,
        stop: Arc<AtomicBool>,
    }

    impl Fleetside for Still {
        fn fleet(&self) -> Arc<Fleet> {
            Arc::new(self.fleet.clone())
        }
        async fn observe(&self) -> Result<Observed, String> {
            Ok(self.observed.clone())
        }
        async fn execute(&self, _: &Action) -> Outcome {
            // The operator presses Ctrl-C while the first actions run.
            self.executed.fetch_add(1, Ordering::SeqCst);
            self.stop.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Outcome::Ok
        }
    }

    /// One site of two farms of two nodes, everything to change, as observed at the start.
    fn small_fleet(failure_budget: u32) -> (Fleet, Observed) {
        let shape = crate::sim::fleetgen::Shape {
            prod_sites: 1,
            farms_per_site: 2,
            nodes_per_farm: 2,
            profiles: 1,
            max_unavailable: 1,
            max_farms_down: 1,
            capacity_floor: 0.0,
            soak: "0s".into(),
            failure_budget,
            change: crate::sim::fleetgen::Change::ALL,
            sessions_per_site: 0,
        };
        let fleet = crate::sim::fleetgen::fleet(&shape).unwrap();
        let observed = crate::sim::Sim::new(&fleet, crate::sim::SimConfig::new(&fleet, 1)).observe();
        (fleet, observed)
    }

    #[tokio::test]
    async fn a_stop_request_starts_nothing_new_and_waits_for_what_runs() {
        let (fleet, observed) = small_fleet(2);
        let stop = Arc::new(AtomicBool::new(false));
        let world = Arc::new(Still { fleet, observed, executed: AtomicUsize::new(0), stop: Arc::clone(&stop) });
        let dir = std::env::temp_dir().join(format!("drover-stop-{}", std::process::id()));
        let j = Journal::new(&dir.join("journal.redb"));
        let opts = Options { tick: Duration::from_millis(5), stall: Duration::from_secs(5), stop };
        let mut finished = 0;
        let s = reconcile_once(Arc::clone(&world), &j, &opts, &mut |e| {
            if let Event::Finished { .. } = e {
                finished += 1;
            }
        })
        .await;
        let left = j.unfinished().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(s.finish, Finish::Interrupted);
        // Only the first pass's actions ran, and every one of them finished.
        assert_eq!(world.executed.load(Ordering::SeqCst) as u64, s.started);
        assert_eq!(finished as u64, s.started);
        assert!(s.started > 0);
        assert!(left.is_empty(), "nothing left in flight: {left:?}");
    }

    /// A fleet whose every action fails, on a clock the test moves.
    struct Failing {
        fleet: Fleet,
        observed: Observed,
        clock_ms: std::sync::atomic::AtomicU64,
    }

    impl Fleetside for Failing {
        fn fleet(&self) -> Arc<Fleet> {
            Arc::new(self.fleet.clone())
        }
        fn now_ms(&self) -> u64 {
            self.clock_ms.load(Ordering::SeqCst)
        }
        async fn observe(&self) -> Result<Observed, String> {
            Ok(self.observed.clone())
        }
        async fn execute(&self, _: &Action) -> Outcome {
            Outcome::Failed("emerge exited with 1".into())
        }
    }

    #[tokio::test]
    async fn a_failed_subject_backs_off_on_the_fleets_clock_doubling() {
        let (fleet, observed) = small_fleet(10);
        const T0: u64 = 1_800_000_000_000;
        let world = Arc::new(Failing { fleet, observed, clock_ms: T0.into() });
        let dir = std::env::temp_dir().join(format!("drover-backoff-{}", std::process::id()));
        let j = Journal::new(&dir.join("journal.redb"));
        let mut ctl = Controller::new(Arc::clone(&world), &j).unwrap();
        let mut quiet = |_: &Event| {};
        let observed = ctl.observe().await.unwrap();
        let (pass, now) = ctl.plan(&observed);
        let first = pass.actions.into_iter().next().expect("something to do");
        let subject = first.action.subject();
        ctl.start(first.clone(), &observed, now, &mut quiet).unwrap();
        ctl.next_completion().await;
        ctl.settle(&mut quiet).unwrap();
        // The wall clock goes on, the fleet's does not: still backing off.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(ctl.cooling(subject), "a failed subject waits");
        world.clock_ms.store(T0 + 1_999, Ordering::SeqCst);
        assert!(ctl.cooling(subject), "2 s after the first failure");
        world.clock_ms.store(T0 + 2_000, Ordering::SeqCst);
        assert!(!ctl.cooling(subject));
        // A second failure in a row waits twice as long.
        ctl.start(first, &observed, T0 + 2_000, &mut quiet).unwrap();
        ctl.next_completion().await;
        ctl.settle(&mut quiet).unwrap();
        world.clock_ms.store(T0 + 2_000 + 3_999, Ordering::SeqCst);
        assert!(ctl.cooling(subject), "4 s after the second failure");
        world.clock_ms.store(T0 + 2_000 + 4_000, Ordering::SeqCst);
        assert!(!ctl.cooling(subject));
        drop(ctl);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
