//! The simulated fleet as a `Fleetside`: the same world as `Sim::run()`
//! (nodes, HAProxy farm cookies, memcached, sessions, faults, the
//! independent `invariants::Checker`), but with no reconciler inside. A
//! reconciler outside (`control::reconcile_once`, the daemon) observes
//! it and executes actions on it, in real time scaled by a factor, so that a
//! 48-minute rollout takes seconds, and so that it can be crashed or stopped
//! at any instant while the checker watches.
//!
//! Virtual time is `(tokio::time::Instant::now() - start) * scale`: under
//! `#[tokio::test(start_paused = true)]` it advances only when every task
//! waits, so tests run in little wall time. The world moves lazily: each
//! call processes the events due up to now (requests, session ends, action
//! ends) before it looks or acts. It never plans, never reads the wall
//! clock, and keeps no journal: only what a real fleet would hold.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

mod keep;

use super::snapshot::{LiveState, Snapshot};
use super::{Driver, Releases, Report, Sim, SimConfig, Strategy};
use crate::control::Fleetside;
use crate::diff::node_diff;
use crate::model::{Fleet, NodeId};
use crate::observe::{Admin, Observed};
use crate::plan::{self, Action, Outcome};

/// A simulated fleet that runs in scaled real time, driven from outside.
pub struct LiveSim {
    start: Instant,
    /// Virtual ms at `start`: 0, or the virtual time of the world resumed.
    offset_ms: u64,
    /// Resumed from a snapshot (at `offset_ms`), not started fresh.
    resumed: bool,
    /// Where the world is kept (`keep_in`), if it is.
    keeper: OnceLock<Arc<keep::Keeper>>,
    /// Virtual ms per wall ms.
    scale: f64,
    state: Mutex<State>,
    /// Virtual ms given up because the world could not be simulated as fast
    /// as `scale` asks (a busy world, a slow machine): virtual time is
    /// scaled wall time minus this, so the world never falls ever further
    /// behind while holding its lock. Only `world()` raises it, to the gap
    /// between scaled wall time and where the world got, so a gap is
    /// counted once however often the world is asked to catch up.
    slipped_ms: AtomicU64,
    /// How fast virtual time really goes, and when that was last said.
    pace: Mutex<Pace>,
}

/// The effective time scale, measured over windows of `PACE_WINDOW`.
#[derive(Clone, Copy, Debug)]
struct Pace {
    /// The current window: its wall start and the virtual and slipped ms then.
    since: Instant,
    virtual_then: u64,
    slipped_then: u64,
    /// Virtual ms per wall ms over the last complete window (`scale` until one ends).
    effective: f64,
    /// When the world last fell behind was logged (rate-limited), and whether it is behind now.
    logged_at: Option<Instant>,
    behind: bool,
}

/// The window over which the effective time scale is measured.
const PACE_WINDOW: Duration = Duration::from_secs(5);
/// At most one "cannot keep up" log line per this much wall time.
const PACE_LOG_EVERY: Duration = Duration::from_secs(60);

/// The longest one call advances the world before virtual time slips.
const ADVANCE_BUDGET: Duration = Duration::from_millis(20);

struct State {
    sim: Sim<'static>,
    /// When the target in force was set (start or `set_fleet`), virtual ms.
    epoch_ms: u64,
    /// The rollout's lower bound from the state at `epoch_ms` to that target.
    bound_s: f64,
    /// The first observation since `epoch_ms` that found the fleet at its target.
    at_target_since: Option<u64>,
    /// After an advance that used its whole budget the world rests as long
    /// (wall time): however many callers ask (hundreds of actions ending at
    /// once), simulating takes at most about half a core and never holds
    /// the lock (and a runtime thread) back to back.
    rest_until: Option<std::time::Instant>,
    /// Dispatches and collected outcomes so far: a saved snapshot covers
    /// the changes counted when it was taken.
    changes: u64,
}

impl LiveSim {
    /// The fleet of `fleet.simulation.initial` (as `Sim::new`), its traffic
    /// started, with virtual time 0 now. `scale` is virtual ms per wall ms.
    /// Of the faults, node deaths (spread over the rollout's lower bound),
    /// memcached flush failures and every per-action fault apply; reconciler
    /// crashes (`faults.crash`) are the caller's to cause. `max_virtual_s`,
    /// `resync_s` and `strategy` belong to `Sim::run()`: the strategy must be
    /// `Drover` (the reconciler is the caller's).
    pub fn new(fleet: Arc<Fleet>, cfg: SimConfig, scale: f64) -> Result<Arc<LiveSim>, String> {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(format!("the time scale must be a positive number of virtual ms per wall ms, not {scale}"));
        }
        if cfg.strategy != Strategy::Drover {
            return Err(format!(
                "a live simulation is driven by the reconciler outside it: strategy {:?} belongs to `Sim::run()`",
                cfg.strategy
            ));
        }
        let mut sim = Sim::build(fleet, cfg, Driver::External);
        let bound_s = plan::bound::lower_bound(&sim.fleet, &sim.observe(), &sim.cfg.estimates).total_s;
        sim.start_world(bound_s);
        let state = State { sim, epoch_ms: 0, bound_s, at_target_since: None, rest_until: None, changes: 0 };
        Ok(LiveSim::around(state, scale, false))
    }

    /// The world of `snapshot` (read from `path`, named in errors), going on
    /// from its virtual time now, under `fleet`: the snapshot's topology,
    /// whose targets may have changed meanwhile (as with `set_fleet`). The
    /// world keeps the settings it was made with (seed, traffic, faults).
    /// The executors that waited for the actions under way are gone (the
    /// process that ran them was killed or stopped): those actions end in
    /// the world and nobody collects their outcomes, as on a real fleet.
    pub fn resume(
        fleet: Arc<Fleet>,
        snapshot: Snapshot,
        path: &std::path::Path,
        scale: f64,
    ) -> Result<Arc<LiveSim>, String> {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(format!("the time scale must be a positive number of virtual ms per wall ms, not {scale}"));
        }
        let live = snapshot.live.clone();
        let mut sim = snapshot.restore(Arc::clone(&fleet), path)?;
        let waited: Vec<u64> = sim.in_flight.keys().chain(sim.completed.keys()).copied().collect();
        for id in waited {
            sim.abandon(id);
        }
        adopt(&mut sim, fleet)?;
        let (epoch_ms, bound_s, at_target_since) = match live {
            Some(l) => (l.epoch_ms, l.bound_s, l.at_target_since),
            None => (sim.now, plan::bound::lower_bound(&sim.fleet, &sim.observe(), &sim.cfg.estimates).total_s, None),
        };
        let state = State { sim, epoch_ms, bound_s, at_target_since, rest_until: None, changes: 0 };
        Ok(LiveSim::around(state, scale, true))
    }

    /// A live world around `state`, its virtual time going on from the world's now.
    fn around(state: State, scale: f64, resumed: bool) -> Arc<LiveSim> {
        let start = Instant::now();
        let offset_ms = state.sim.now;
        Arc::new(LiveSim {
            start,
            offset_ms,
            resumed,
            keeper: OnceLock::new(),
            scale,
            state: Mutex::new(state),
            slipped_ms: AtomicU64::new(0),
            pace: Mutex::new(Pace {
                since: start,
                virtual_then: offset_ms,
                slipped_then: 0,
                effective: scale,
                logged_at: None,
                behind: false,
            }),
        })
    }

    /// The world now, as a snapshot, and the changes it covers. The world
    /// is held only while it is copied (encoding and writing happen after).
    pub fn snapshot(&self) -> (Snapshot, u64) {
        copy(&self.world())
    }

    /// The world as the last call left it (not advanced: a world nobody
    /// looks at does not move, and costs nothing), unless it is still at
    /// `unless` (virtual ms, changes); and how long the copy held it.
    fn snapshot_as_is(&self, unless: Option<(u64, u64)>) -> Option<(Snapshot, u64, Duration)> {
        let st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if unless == Some((st.sim.now, st.changes)) {
            return None;
        }
        let t0 = std::time::Instant::now();
        let (snapshot, changes) = copy(&st);
        Some((snapshot, changes, t0.elapsed()))
    }

    /// The virtual ms the world was resumed at, if it was resumed.
    pub fn resumed_at_ms(&self) -> Option<u64> {
        self.resumed.then_some(self.offset_ms)
    }

    /// Scaled wall time since the start (plus the virtual time resumed at), slips not counted.
    fn raw_ms(&self) -> u64 {
        self.offset_ms + (self.start.elapsed().as_nanos() as f64 * self.scale / 1e6) as u64
    }

    /// Virtual ms since the start: the world's time, advanced to now (it
    /// never goes back, and is never ahead of the world).
    fn virtual_ms(&self) -> u64 {
        self.world().sim.now
    }

    /// The instant virtual time reaches `t_ms` (rounded up; later if it slips meanwhile).
    fn instant_of(&self, t_ms: u64) -> Instant {
        let raw = t_ms.saturating_add(self.slipped_ms.load(Ordering::Relaxed)).saturating_sub(self.offset_ms);
        self.start + Duration::from_nanos((raw as f64 * 1e6 / self.scale).ceil() as u64 + 1)
    }

    /// Virtual seconds given up so far because the world could not be
    /// simulated at the time scale asked for.
    pub fn slipped_s(&self) -> f64 {
        self.slipped_ms.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// The time scale asked for (virtual ms per wall ms).
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Virtual ms per wall ms over the last complete measuring window
    /// (`PACE_WINDOW`): the scale asked for, or less while the world
    /// cannot be simulated that fast.
    pub fn effective_scale(&self) -> f64 {
        self.pace.lock().unwrap_or_else(PoisonError::into_inner).effective
    }

    /// Measures the pace at virtual time `now_ms`; says (in the log, at
    /// most once per `PACE_LOG_EVERY`) when the world falls behind the time
    /// scale asked for, and once when it keeps up again.
    fn measure_pace(&self, now_ms: u64) {
        let mut p = self.pace.lock().unwrap_or_else(PoisonError::into_inner);
        let wall = p.since.elapsed();
        if wall < PACE_WINDOW {
            return;
        }
        let slipped = self.slipped_ms.load(Ordering::Relaxed);
        p.effective = now_ms.saturating_sub(p.virtual_then) as f64 / (wall.as_nanos() as f64 / 1e6);
        let behind = slipped > p.slipped_then;
        if behind && p.logged_at.is_none_or(|t| t.elapsed() >= PACE_LOG_EVERY) {
            tracing::warn!(
                time_scale = self.scale,
                effective_scale = p.effective,
                slipped_s = slipped / 1000,
                "simulation cannot keep up with --time-scale {}: running at ~{:.0}x (slipped {}): the simulated clock \
                 slows instead (a lower --time-scale or less simulated traffic keeps up)",
                self.scale,
                p.effective,
                hms(slipped / 1000)
            );
            p.logged_at = Some(Instant::now());
        } else if !behind && p.behind {
            tracing::info!(
                time_scale = self.scale,
                slipped_s = slipped / 1000,
                "simulation keeps up with --time-scale {} again",
                self.scale
            );
        }
        p.behind = behind;
        p.since = Instant::now();
        p.virtual_then = now_ms;
        p.slipped_then = slipped;
    }

    /// The world, advanced to now. A panic while it was held (a bug) leaves
    /// the world as it was at that event; it is still the best state to show.
    ///
    /// Advancing takes at most about `ADVANCE_BUDGET`: a world that cannot
    /// be simulated that fast (heavy traffic at a high time scale) makes
    /// virtual time slip to where the simulation got, instead of holding the
    /// lock (and a runtime thread) ever longer to catch up.
    fn world(&self) -> MutexGuard<'_, State> {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if st.rest_until.is_some_and(|t| std::time::Instant::now() < t) {
            // Resting: the world as it is (its time slips at the next advance).
            return st;
        }
        st.rest_until = None;
        let now = self.raw_ms().saturating_sub(self.slipped_ms.load(Ordering::Relaxed));
        if !st.sim.advance_within(now, ADVANCE_BUDGET) {
            st.rest_until = Some(std::time::Instant::now() + ADVANCE_BUDGET);
            // Virtual time goes on from where the world got, now. (Adding the
            // gap at each call instead counted it again at every call until the
            // world caught up: the clock stood still for minutes, actions in
            // flight never ended and a stop request waited for them.)
            let gap = self.raw_ms().saturating_sub(st.sim.now);
            self.slipped_ms.fetch_max(gap, Ordering::Relaxed);
        }
        self.measure_pace(st.sim.now);
        st
    }

    /// The spec changed: new targets, new policy, and possibly a new
    /// topology (farms and nodes reordered, renamed, added or removed): the
    /// world follows by identity (`Sim::respec`: a machine by site and SSH
    /// endpoint, a farm by site and name or as the same machines renamed),
    /// so what ran keeps running on the same machine. Actions running
    /// finish under the new spec; one whose node or farm left is dropped
    /// (its executor, if any, learns that). Releases the new targets bring
    /// in rank by `ReleaseId`'s order among those already seen, which keep
    /// their meaning for sessions; `Err` (nothing changed) when the release
    /// table would overflow. Makespan and lower bound count from here.
    /// What changed is logged and kept in the report (`respecs`).
    pub fn set_fleet(&self, fleet: Arc<Fleet>) -> Result<(), String> {
        let mut st = self.world();
        let r = st.sim.respec(fleet)?;
        if r.reindexed || !r.nodes_renamed.is_empty() || !r.farms_renamed.is_empty() {
            tracing::info!(
                nodes_kept = r.nodes_kept,
                nodes_added = r.nodes_added.len(),
                nodes_removed = r.nodes_removed.len(),
                nodes_renamed = r.nodes_renamed.len(),
                farms_added = r.farms_added.len(),
                farms_removed = r.farms_removed.len(),
                farms_renamed = r.farms_renamed.len(),
                held = ?r.held,
                "simulated fleet follows the new topology"
            );
        }
        st.epoch_ms = st.sim.now;
        st.at_target_since = None;
        let observed = st.sim.observe();
        st.bound_s = plan::bound::lower_bound(&st.sim.fleet, &observed, &st.sim.cfg.estimates).total_s;
        Ok(())
    }

    /// What the checker has seen so far, at any time. `converged`: the
    /// fleet is at its target now (every node's diff clean, every node and
    /// farm ready with a weight). `makespan_s`: virtual seconds from the
    /// start (or the last `set_fleet`) to the first observation that found
    /// the fleet at its target, or to now while it is not yet;
    /// `lower_bound_s`: the schedule-independent bound over the same span,
    /// from the state it started from. `halted`, `blocked` and
    /// `failed_farms` are the reconciler's business and stay empty here but
    /// for what drover learnt; `crashes` is 0 (see `lost_outcomes`).
    pub fn report(&self) -> Report {
        let st = self.world();
        let mut r = st.sim.report(st.bound_s);
        r.converged = at_target(&st.sim.fleet, &st.sim.observe());
        let end = st.at_target_since.unwrap_or(st.sim.now);
        r.makespan_s = end.saturating_sub(st.epoch_ms) as f64 / 1000.0;
        r.ratio = if r.lower_bound_s > 0.0 { r.makespan_s / r.lower_bound_s } else { 1.0 };
        r
    }

    /// Actions running in the world now (started, not yet ended).
    pub fn running(&self) -> usize {
        self.world().sim.in_flight.len()
    }

    /// Outcomes nobody collected: actions whose executor was dropped.
    pub fn lost_outcomes(&self) -> u64 {
        self.world().sim.lost_outcomes
    }
}

/// The world of `st` as a snapshot, and the changes it covers.
fn copy(st: &State) -> (Snapshot, u64) {
    let live = LiveState { epoch_ms: st.epoch_ms, bound_s: st.bound_s, at_target_since: st.at_target_since };
    (Snapshot::of(&st.sim, Some(live)), st.changes)
}

/// `fleet` becomes the spec of `sim` (same topology: checked by the
/// caller): the releases its targets bring in are ranked among those seen,
/// the nodes' capacities follow their profiles.
fn adopt(sim: &mut Sim<'static>, fleet: Arc<Fleet>) -> Result<(), String> {
    let new: std::collections::BTreeSet<&crate::model::ReleaseId> =
        fleet.targets.iter().map(|t| &t.release).filter(|r| !sim.releases.ids.contains(r)).collect();
    if sim.releases.ids.len() + new.len() > Releases::MAX {
        return Err(format!(
            "the simulation has seen {} releases, the most it can rank: restart it",
            sim.releases.ids.len()
        ));
    }
    for r in new {
        sim.releases.index(r);
    }
    for (n, node) in fleet.nodes.iter().enumerate() {
        if let (Some(s), Some(p)) = (sim.nodes.get_mut(n), fleet.profiles.get(node.profile as usize)) {
            s.capacity = p.capacity;
        }
    }
    sim.fleet = fleet;
    Ok(())
}

/// Seconds as `H:MM:SS`.
pub fn hms(s: u64) -> String {
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Every node at its target and in service, every farm in service.
fn at_target(fleet: &Fleet, observed: &Observed) -> bool {
    observed
        .nodes
        .iter()
        .enumerate()
        .all(|(n, o)| o.lb.admin == Admin::Ready && o.reachable && node_diff(fleet, n as NodeId, o).is_clean())
        && observed.farms.iter().all(|f| f.lb.admin == Admin::Ready && f.lb.weight > 0)
}

/// The executor's claim on an action's outcome: dropped uncollected, the
/// outcome is lost, as when drover dies while a node works.
struct Claim<'a> {
    live: &'a LiveSim,
    id: u64,
    /// Taken from the world, not yet handed to the executor (it waits for
    /// the world to be saved).
    delivered: bool,
    collected: bool,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.collected {
            return;
        }
        let mut st = self.live.world();
        if self.delivered {
            st.sim.lost_outcomes += 1;
        } else {
            st.sim.release(self.id);
        }
    }
}

impl Fleetside for LiveSim {
    fn fleet(&self) -> Arc<Fleet> {
        Arc::clone(&self.world().sim.fleet)
    }

    fn now_ms(&self) -> u64 {
        self.virtual_ms()
    }

    async fn observe(&self) -> Result<Observed, String> {
        let (observed, changes) = {
            let mut st = self.world();
            st.sim.update_gate_tracker();
            let observed = st.sim.observe();
            if st.at_target_since.is_none() && at_target(&st.sim.fleet, &observed) {
                st.at_target_since = Some(st.sim.now);
            }
            (observed, st.changes)
        };
        // A kept world is seen only once every action it shows was saved:
        // what drover learns and journals, a world resumed from the file
        // goes through too (see `keep`).
        self.durable(changes).await?;
        Ok(observed)
    }

    fn simulation_report(&self) -> Option<serde_json::Value> {
        let r = self.report();
        Some(serde_json::json!({
            "virtual_s": self.now_ms() as f64 / 1000.0,
            // Virtual time given up because the world could not be simulated that fast.
            "slipped_s": self.slipped_s(),
            // Virtual seconds per wall second asked for (`--time-scale`) and
            // achieved over the last few seconds (less when the world cannot keep up).
            "time_scale": self.scale,
            "effective_time_scale": self.effective_scale(),
            "at_target": r.converged,
            "requests": r.requests,
            "failed_requests": r.failed_requests,
            "violations": r.violations,
            "violations_by_invariant": r.violations_by_invariant,
            "violation_samples": r.violation_samples.iter().take(5).collect::<Vec<_>>(),
            // Actions started in the world, by kind (kept with it).
            "actions": r.actions,
            // Kept in the state directory (a restart resumes it), or fresh at every start.
            "persisted": self.keeper.get().is_some(),
            "path": self.keeper.get().map(|k| k.path.display().to_string()),
            "resumed_at_s": self.resumed_at_ms().map(|ms| ms as f64 / 1000.0),
            "saved": self.keeper.get().map(|k| k.report()),
        }))
    }

    async fn execute(&self, action: &Action) -> Outcome {
        let (id, due, changes) = {
            let mut st = self.world();
            // The checker judges the start against the preproduction it saw up to now.
            st.sim.update_gate_tracker();
            let (id, due) = st.sim.dispatch(action.clone(), String::new());
            st.changes += 1;
            (id, due, st.changes)
        };
        let mut claim = Claim { live: self, id, delivered: false, collected: false };
        // Saved after it starts (a failed save is said by `observe` and the log).
        let _ = self.durable(changes).await;
        // Bounded: each turn waits a wall ms or more, and `due` is fixed. When
        // virtual time slipped meanwhile, `due` is later in wall time: wait
        // for it again rather than ask the world every millisecond.
        loop {
            tokio::time::sleep_until(self.instant_of(due).max(Instant::now() + Duration::from_millis(1))).await;
            let delivered = {
                let mut st = self.world();
                st.sim.collect(id).map(|o| {
                    st.changes += 1;
                    (o, st.changes)
                })
            };
            if let Some((outcome, changes)) = delivered {
                // The world that knows the outcome is collected is saved
                // before drover hears it (and journals it).
                claim.delivered = true;
                let _ = self.durable(changes).await;
                claim.collected = true;
                return outcome;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::sync::watch;

    use super::*;
    use crate::control::journal::Journal;
    use crate::control::{Finish, Options, Summary, reconcile_once};
    use crate::sim::fleetgen::{self, Change, Shape, Variation};
    use crate::sim::rng::Rng;

    /// Virtual ms per wall ms: a 48-minute rollout in under five seconds.
    const SCALE: f64 = 600.0;

    fn shape() -> Shape {
        Shape {
            prod_sites: 2,
            farms_per_site: 3,
            nodes_per_farm: 3,
            profiles: 2,
            max_unavailable: 1,
            max_farms_down: 1,
            capacity_floor: 0.5,
            soak: "2m".into(),
            failure_budget: 2,
            change: Change::ALL,
            sessions_per_site: 300,
        }
    }

    fn spec(text: &str) -> Arc<Fleet> {
        let files = [crate::spec::SourceFile { path: "g.yaml".into(), text: text.into() }];
        Arc::new(
            crate::spec::validate::check(&files)
                .unwrap_or_else(|d| panic!("{}", crate::spec::diag::render(&d, &files))),
        )
    }

    fn live(fleet: &Arc<Fleet>, seed: u64) -> Arc<LiveSim> {
        LiveSim::new(Arc::clone(fleet), SimConfig::new(fleet, seed), SCALE).unwrap()
    }

    /// The stall time is on the fleet's clock: virtual time here, so as
    /// long as the simulation's own idle limit (a reboot takes minutes).
    fn opts() -> Options {
        let stall = Duration::from_millis(crate::sim::IDLE_LIMIT_MS);
        Options { tick: Duration::from_millis(5), stall, stop: Default::default() }
    }

    /// A journal in a directory of its own, removed when dropped.
    struct TempJournal(PathBuf);

    impl TempJournal {
        fn new(name: &str) -> TempJournal {
            let dir = std::env::temp_dir().join(format!("drover-live-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            TempJournal(dir)
        }
        fn journal(&self) -> Journal {
            Journal::new(&self.0.join(crate::control::journal::FILE))
        }
    }

    impl Drop for TempJournal {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// One reconcile run, bounded in virtual time (six hours).
    async fn reconcile<F: Fleetside>(side: Arc<F>, j: &Journal, o: &Options) -> Summary {
        let mut quiet = |_: &crate::control::Event| {};
        let run = reconcile_once(side, j, o, &mut quiet);
        tokio::time::timeout(Duration::from_secs_f64(6.0 * 3600.0 * 1000.0 / SCALE / 1000.0), run)
            .await
            .expect("the reconcile loop ends within six virtual hours")
    }

    /// Waits until virtual time `t_ms`.
    async fn until(live: &LiveSim, t_ms: u64) {
        tokio::time::sleep_until(live.instant_of(t_ms)).await;
    }

    /// Every node runs exactly its target (packages, kernel, PHP, release)
    /// and serves; every farm serves. Judged on the observation, not on
    /// the simulation's own report.
    async fn assert_at_target(live: &LiveSim) {
        let fleet = live.fleet();
        let observed = live.observe().await.unwrap();
        for (n, o) in observed.nodes.iter().enumerate() {
            let name = &fleet.nodes[n].name;
            let d = node_diff(&fleet, n as NodeId, o);
            assert!(d.is_clean(), "{name} differs from its target: {d:?}");
            let t = fleet.node_target(n as NodeId);
            assert_eq!(o.release_active.as_ref(), Some(&t.release), "{name}");
            assert_eq!(o.php_active.as_ref(), Some(&t.php), "{name}");
            assert_eq!(o.lb.admin, Admin::Ready, "{name}");
        }
        assert!(observed.farms.iter().all(|f| f.lb.admin == Admin::Ready && f.lb.weight > 0));
    }

    fn assert_clean(r: &Report) {
        assert_eq!(r.violations, 0, "{:?}: {:#?}", r.violations_by_invariant, r.violation_samples);
        assert_eq!(r.failed_requests, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_outside_reconciler_converges_the_live_fleet() {
        let fleet = Arc::new(fleetgen::fleet(&shape()).unwrap());
        let live = live(&fleet, 1);
        assert!(!live.report().converged, "the generated fleet starts behind its targets");
        let tmp = TempJournal::new("converge");
        let s = reconcile(Arc::clone(&live), &tmp.journal(), &opts()).await;
        assert_eq!(s.finish, Finish::Converged, "{s:?}");
        assert!(s.failed.is_empty(), "{:?}", s.failed);
        assert_at_target(&live).await;
        let r = live.report();
        eprintln!(
            "live rollout: makespan {:.0} s, lower bound {:.0} s, {} requests, {} actions",
            r.makespan_s, r.lower_bound_s, r.requests, s.started
        );
        assert_clean(&r);
        assert!(r.converged);
        assert!(r.requests > 10_000, "traffic ran the whole rollout: {} requests", r.requests);
        assert_eq!(r.actions.values().sum::<u64>(), s.started, "every action the loop started ran in the world");
        assert!(r.makespan_s >= r.lower_bound_s && r.lower_bound_s > 0.0, "{} vs {}", r.makespan_s, r.lower_bound_s);
        assert_eq!(live.running(), 0);
        assert_eq!(live.lost_outcomes(), 0);
    }

    /// `LiveSim` as a process that can be killed: once `dead` is set, every
    /// execute of this incarnation is dropped (the world goes on with it).
    struct Mortal {
        live: Arc<LiveSim>,
        dead: watch::Receiver<bool>,
    }

    impl Fleetside for Mortal {
        fn fleet(&self) -> Arc<Fleet> {
            self.live.fleet()
        }
        fn now_ms(&self) -> u64 {
            self.live.now_ms()
        }
        async fn observe(&self) -> Result<Observed, String> {
            self.live.observe().await
        }
        async fn execute(&self, action: &Action) -> Outcome {
            let mut dead = self.dead.clone();
            let killed = async move {
                loop {
                    let now_dead = *dead.borrow_and_update();
                    if now_dead || dead.changed().await.is_err() {
                        return;
                    }
                }
            };
            tokio::select! {
                outcome = self.live.execute(action) => outcome,
                _ = killed => std::future::pending().await,
            }
        }
    }

    /// Runs a reconcile loop until virtual `at_ms`, then kills it (the loop
    /// and its executors are dropped mid-flight). Returns whether it was
    /// still running then.
    async fn kill_at(live: &Arc<LiveSim>, tmp: &TempJournal, at_ms: u64) -> bool {
        let (kill, dead) = watch::channel(false);
        let side = Arc::new(Mortal { live: Arc::clone(live), dead });
        let j = tmp.journal();
        let task = tokio::spawn(async move { reconcile(side, &j, &opts()).await });
        until(live, at_ms).await;
        let running = !task.is_finished();
        task.abort();
        let _ = kill.send(true);
        let _ = task.await;
        running
    }

    #[tokio::test(start_paused = true)]
    async fn a_reconciler_killed_at_any_instant_resumes_from_its_journal() {
        let fleet = Arc::new(fleetgen::fleet(&shape()).unwrap());
        let mut lost = 0;
        for seed in 1..=4 {
            let live = live(&fleet, seed);
            let tmp = TempJournal::new(&format!("crash-{seed}"));
            let mut rng = Rng::new(seed);
            // Somewhere in the rollout (about 12 minutes long).
            let at = rng.range(30_000, 10 * 60_000);
            assert!(kill_at(&live, &tmp, at).await, "seed {seed}: killed mid-rollout at {at} ms");
            assert!(!live.report().converged, "seed {seed}");
            // Down for a while: what ran goes on in the world.
            until(&live, at + rng.range(1_000, 60_000)).await;
            lost += live.lost_outcomes();
            let s = reconcile(Arc::clone(&live), &tmp.journal(), &opts()).await;
            assert_eq!(s.finish, Finish::Converged, "seed {seed}: {s:?}");
            assert_at_target(&live).await;
            let r = live.report();
            assert_clean(&r);
            assert!(r.requests > 0);
        }
        assert!(lost > 0, "some kill dropped an action in flight");
    }

    /// The daemon's `kill -9` on a kept world: the reconciler and the world
    /// die together at a random instant (the file may be up to a save
    /// behind), a new world is resumed from the file and a new reconciler
    /// from the journal: it converges with no invariant broken, virtual
    /// time and the checker's counts going on from the file.
    #[tokio::test(start_paused = true)]
    async fn a_kept_world_killed_with_its_reconciler_resumes_from_its_file() {
        let fleet = Arc::new(fleetgen::fleet(&shape()).unwrap());
        let mut running = 0;
        for seed in 1..=3 {
            let tmp = TempJournal::new(&format!("kept-{seed}"));
            std::fs::create_dir_all(&tmp.0).unwrap();
            let file = tmp.0.join("world.json");
            let first = live(&fleet, seed);
            first.keep_in(file.clone()).await.unwrap();
            let at = Rng::new(seed).range(60_000, 8 * 60_000);
            assert!(kill_at(&first, &tmp, at).await, "seed {seed}: killed mid-rollout");
            let before = first.report();
            drop(first);
            let snapshot = Snapshot::load(&file).unwrap();
            let saved_at = snapshot.now_ms;
            let world = LiveSim::resume(Arc::clone(&fleet), snapshot, &file, SCALE).unwrap();
            assert_eq!(world.resumed_at_ms(), Some(saved_at));
            assert!(
                world.now_ms() >= saved_at && saved_at + 2 * SCALE as u64 * 1000 >= at,
                "seed {seed}: {saved_at} vs {at}"
            );
            let r = world.report();
            assert!(
                r.requests > 0 && r.requests <= before.requests,
                "seed {seed}: the checker's counts come from the file"
            );
            // Actions under way still land in the world; nobody collects them.
            let under_way = world.running();
            running += under_way;
            world.keep_in(file.clone()).await.unwrap();
            let s = reconcile(Arc::clone(&world), &tmp.journal(), &opts()).await;
            assert_eq!(s.finish, Finish::Converged, "seed {seed}: {s:?}");
            assert_at_target(&world).await;
            let r = world.report();
            assert_clean(&r);
            assert!(r.requests > before.requests, "seed {seed}");
            assert!(world.lost_outcomes() as usize >= under_way, "seed {seed}");
        }
        assert!(running > 0, "some kill left an action under way in the file");
    }

    /// The fleetgen spec with its target release (and rollback permission) replaced.
    fn with_release(release: &str, allow_rollback: bool) -> Arc<Fleet> {
        let text = fleetgen::spec_text(&shape());
        let from = "    release: \"2026.11.2\"\n  policy:";
        assert!(text.contains(from));
        let allow = if allow_rollback { "    allow_rollback: true\n" } else { "" };
        spec(&text.replace(from, &format!("    release: \"{release}\"\n{allow}  policy:")))
    }

    /// Some farm is back in service with every node on `release`.
    fn farm_serving(live: &LiveSim, release: &str) -> bool {
        let st = live.world();
        let sim = &st.sim;
        sim.fleet.farms.iter().enumerate().any(|(f, farm)| {
            sim.farms[f].admin == Admin::Ready
                && farm
                    .nodes
                    .iter()
                    .all(|&n| sim.nodes[n as usize].release_active.as_ref().is_some_and(|r| &*r.0 == release))
        })
    }

    fn releases_running(live: &LiveSim) -> BTreeSet<String> {
        let st = live.world();
        st.sim.nodes.iter().filter_map(|n| n.release_active.as_ref().map(|r| r.to_string())).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_spec_mid_rollout_forward_then_back() {
        let first = with_release("2026.11.2", false);
        for seed in [3, 8] {
            let live = live(&first, seed);
            let tmp = TempJournal::new(&format!("respec-{seed}"));
            let mut rng = Rng::new(seed);
            // A newer release while the first rollout runs (the daemon
            // applies a spec between loops; here the old loop dies first).
            let at = rng.range(2 * 60_000, 8 * 60_000);
            assert!(kill_at(&live, &tmp, at).await);
            live.set_fleet(with_release("2026.11.10", false)).unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let o = Options { stop: Arc::clone(&stop), ..opts() };
            let j = tmp.journal();
            let side = Arc::clone(&live);
            let task = tokio::spawn(async move { reconcile(side, &j, &o).await });
            // Stop once a farm serves the newest release, then roll back to the first.
            let mut t = live.now_ms();
            while !farm_serving(&live, "2026.11.10") {
                assert!(!task.is_finished(), "seed {seed}: the second loop ended before any switch");
                t += 10_000;
                until(&live, t).await;
            }
            stop.store(true, Ordering::SeqCst);
            let s = task.await.unwrap();
            assert!(matches!(s.finish, Finish::Interrupted | Finish::Converged), "{s:?}");
            // Backwards without permission: the planner refuses and says why
            // (the loop gives up at once: `stall` is wall time).
            live.set_fleet(with_release("2026.11.2", false)).unwrap();
            let o = Options { stall: Duration::from_millis(200), ..opts() };
            let s = reconcile(Arc::clone(&live), &tmp.journal(), &o).await;
            assert_eq!(s.finish, Finish::Stuck, "seed {seed}");
            assert!(s.blocked.iter().any(|b| b.reason.contains("allow_rollback")), "{:?}", s.blocked);
            assert!(farm_serving(&live, "2026.11.10"), "seed {seed}: no rollback without permission");
            live.set_fleet(with_release("2026.11.2", true)).unwrap();
            let s = reconcile(Arc::clone(&live), &tmp.journal(), &opts()).await;
            assert_eq!(s.finish, Finish::Converged, "seed {seed}: {s:?}");
            assert_at_target(&live).await;
            assert_eq!(releases_running(&live), BTreeSet::from(["2026.11.2".to_string()]));
            let r = live.report();
            assert_clean(&r);
            assert!(r.actions.get("activate").is_some_and(|&a| a > fleet_nodes(&first)), "switched more than once");
        }
    }

    fn fleet_nodes(f: &Fleet) -> u64 {
        f.nodes.len() as u64
    }

    /// A world that cannot be simulated at the scale asked for (heavy
    /// traffic, a million times real time): its clock slows, counting each
    /// gap once, and goes on (the former accounting added the gap at every
    /// call, so the clock stood still for minutes); no call holds the
    /// world much longer than its budget; the slowdown is measured.
    #[tokio::test]
    async fn a_world_that_cannot_keep_up_slows_its_clock_and_goes_on() {
        let heavy = Shape { sessions_per_site: 20_000, ..shape() };
        let fleet = Arc::new(fleetgen::fleet(&heavy).unwrap());
        let live = LiveSim::new(Arc::clone(&fleet), SimConfig::new(&fleet, 1), 1e6).unwrap();
        let wall = std::time::Instant::now();
        let mut seen = Vec::new();
        let mut longest = Duration::ZERO;
        while wall.elapsed() < PACE_WINDOW + Duration::from_secs(1) {
            let t = std::time::Instant::now();
            live.observe().await.unwrap();
            seen.push(live.now_ms());
            longest = longest.max(t.elapsed());
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        let slipped = live.slipped_ms.load(Ordering::Relaxed);
        assert!(slipped > 0, "the world kept up at a million times real time?");
        assert!(slipped <= live.raw_ms(), "a gap counted more than once: slipped {slipped} ms of {} ms", live.raw_ms());
        // The clock goes on: it moved across every few calls, never back.
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
        let moved = seen.windows(4).filter(|w| w[3] > w[0]).count();
        assert_eq!(moved, seen.len() - 3, "the clock stood still: {seen:?}");
        assert!(longest < Duration::from_millis(500), "one call held the world {longest:?}");
        let effective = live.effective_scale();
        assert!(effective > 0.0 && effective < 1e6 * 0.9, "effective scale {effective}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_release_ranks_among_the_known_ones() {
        let live = live(&with_release("2026.11.2", false), 1);
        live.set_fleet(with_release("2026.11.10", false)).unwrap();
        live.set_fleet(with_release("2026.11.1a", false)).unwrap();
        let st = live.world();
        let r = &st.sim.releases;
        let rank = |id: &str| r.rank(r.ids.iter().position(|x| &*x.0 == id).unwrap() as u16);
        // 2026.11.1 (initial) < 2026.11.1a < 2026.11.2 < 2026.11.10.
        assert!(rank("2026.11.1") < rank("2026.11.1a"));
        assert!(rank("2026.11.1a") < rank("2026.11.2"));
        assert!(rank("2026.11.2") < rank("2026.11.10"));
        assert_eq!(r.rank(super::super::NONE_SEEN), 0);
    }

    /// A restart under a new topology (farms and nodes reordered, a node
    /// added, a farm and a node removed, mid-rollout): the world follows by
    /// identity, the journal by its own, and the rollout converges cleanly.
    #[tokio::test(start_paused = true)]
    async fn a_new_topology_mid_rollout_is_followed_by_identity() {
        let first = Arc::new(fleetgen::fleet(&shape()).unwrap());
        for seed in [2, 5] {
            let live = live(&first, seed);
            let tmp = TempJournal::new(&format!("topology-{seed}"));
            let at = Rng::new(seed).range(2 * 60_000, 8 * 60_000);
            assert!(kill_at(&live, &tmp, at).await, "seed {seed}: killed mid-rollout");
            let v = Variation {
                seed,
                reorder_farms: true,
                reorder_nodes: true,
                add_node: true,
                remove_node: true,
                remove_farm: true,
                ..Variation::default()
            };
            let new = Arc::new(fleetgen::vary(&shape(), &first, &v).unwrap());
            let before = live.observe().await.unwrap();
            live.set_fleet(Arc::clone(&new)).unwrap();
            assert_eq!(live.fleet().nodes.len(), new.nodes.len());
            let after = live.observe().await.unwrap();
            // Every machine kept shows the state it had, at its new position.
            for (n, node) in new.nodes.iter().enumerate() {
                if let Some(o) = first.nodes.iter().position(|m| m.address == node.address) {
                    assert_eq!(after.nodes[n].release_active, before.nodes[o].release_active, "{}", node.name);
                    assert_eq!(after.nodes[n].packages, before.nodes[o].packages, "{}", node.name);
                }
            }
            let r = live.report();
            let respec = &r.respecs[0];
            assert!(respec.reindexed);
            assert_eq!((respec.nodes_added.len(), respec.farms_removed.len()), (1, 1), "{respec:?}");
            assert_eq!(respec.nodes_kept + respec.nodes_removed.len(), first.nodes.len(), "{respec:?}");
            let s = reconcile(Arc::clone(&live), &tmp.journal(), &opts()).await;
            assert_eq!(s.finish, Finish::Converged, "seed {seed}: {s:?}");
            assert_at_target(&live).await;
            assert_clean(&live.report());
        }
    }

    /// An executor waiting on a node the new spec removes learns it, instead of waiting forever.
    #[tokio::test(start_paused = true)]
    async fn an_action_on_a_node_that_left_ends_for_its_executor() {
        let first = Arc::new(fleetgen::fleet(&shape()).unwrap());
        let live = live(&first, 1);
        let gone = first.nodes.len() as NodeId - 1;
        let name = first.nodes[gone as usize].name.clone();
        let side = Arc::clone(&live);
        let task = tokio::spawn(async move { side.execute(&Action::HealthCheck { node: gone }).await });
        while live.running() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let without = fleetgen::edit(&shape(), &first, |farms| {
            for f in farms {
                f.nodes.retain(|n| n.name != name);
            }
        })
        .unwrap();
        live.set_fleet(Arc::new(without)).unwrap();
        assert_eq!(live.running(), 0);
        let outcome = task.await.unwrap();
        assert!(matches!(&outcome, Outcome::Failed(why) if why.contains("left the spec")), "{outcome:?}");
        assert_eq!(live.lost_outcomes(), 0);
        assert_eq!(live.report().respecs[0].actions_dropped, vec![format!("health_check on node {name}")]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_request_ends_with_nothing_running_and_a_new_loop_converges() {
        let fleet = Arc::new(fleetgen::fleet(&shape()).unwrap());
        for seed in 11..=13 {
            let live = live(&fleet, seed);
            let tmp = TempJournal::new(&format!("stop-{seed}"));
            let stop = Arc::new(AtomicBool::new(false));
            let o = Options { stop: Arc::clone(&stop), ..opts() };
            let j = tmp.journal();
            let side = Arc::clone(&live);
            let task = tokio::spawn(async move { reconcile(side, &j, &o).await });
            let at = Rng::new(seed).range(30_000, 10 * 60_000);
            until(&live, at).await;
            stop.store(true, Ordering::SeqCst);
            let s = task.await.unwrap();
            assert_eq!(s.finish, Finish::Interrupted, "seed {seed}");
            assert_eq!(live.running(), 0, "seed {seed}: stopped with an action running");
            assert_eq!(live.lost_outcomes(), 0);
            assert!(tmp.journal().unfinished().unwrap().is_empty());
            assert_clean(&live.report());
            let s = reconcile(Arc::clone(&live), &tmp.journal(), &opts()).await;
            assert_eq!(s.finish, Finish::Converged, "seed {seed}: {s:?}");
            assert_at_target(&live).await;
            assert_clean(&live.report());
        }
    }
}
