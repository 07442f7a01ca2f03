//! The loop over in-memory fleets: journal, tasks, completions, resume,
//! retarget, change windows.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::journal::Journal;
use super::*;
use crate::control::journal::OpEvent;
use crate::model::Needs;
use crate::observe::{Admin, Health, Str};
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
            Action::StageRelease { node, release } => st.nodes[*node as usize].releases_installed.push(release.clone()),
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
            Action::FlushCache { .. }
            | Action::MarkFailed { .. }
            | Action::Migrate { .. }
            | Action::Warmup { .. }
            | Action::Snapshot { .. } => {}
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
    let mut ctl = Runner::new(Arc::new(InMemory::new(big.clone(), never)), &j).unwrap();
    let gone = big.farms.iter().position(|f| f.name == "s0-f2").unwrap() as u32;
    let kept = big.nodes.iter().position(|n| n.name == "s1-f1-n002").unwrap() as u32;
    ctl.ctl.memory.begin(&Action::SetFarm { farm: gone, admin: Admin::Maint }, 1, None, 100);
    ctl.ctl.memory.begin(&Action::SetNode { node: kept, admin: Admin::Drain }, 1, None, 100);
    ctl.ctl.memory.restarted();
    let resolved = ctl.retarget(Arc::new(InMemory::new(small.clone(), never))).unwrap();
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    assert_eq!(resolved[0].resolution.object, "farm s0/s0-f2");
    assert_eq!(resolved[0].resolution.reason, plan::named::Reason::Gone);
    let kept_now = small.nodes.iter().position(|n| n.name == "s1-f1-n002").unwrap() as u32;
    assert_ne!(kept, kept_now, "the node moved position");
    assert_eq!(ctl.ctl.memory.node_ops.keys().copied().collect::<Vec<_>>(), vec![kept_now]);
    assert!(ctl.ctl.memory.farm_ops.is_empty());
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

/// The simulation's journal in memory loads what the redb journal loads:
/// saved under one spec, opened under another where farms moved (one was
/// removed), every entry is tied to its object by identity and the same
/// ones are reported.
#[test]
fn a_journal_in_memory_crosses_a_spec_change_like_the_file() {
    let big = Arc::new(fleetgen::fleet(&Shape { farms_per_site: 3, ..shape() }).unwrap());
    let small = fleetgen::fleet(&shape()).unwrap();
    let gone = big.farms.iter().position(|f| f.name == "s0-f2").unwrap() as u32;
    let kept = big.nodes.iter().position(|n| n.name == "s1-f1-n002").unwrap() as u32;
    let mut memory = Memory::default();
    memory.begin(&Action::SetFarm { farm: gone, admin: Admin::Maint }, 1, None, 100);
    memory.begin(&Action::SetNode { node: kept, admin: Admin::Drain }, 2, None, 100);
    let (dir, file) = journal("mem-vs-file");
    let mut mem = MemJournal::default();
    let op = Op { action: &Action::SetNode { node: kept, admin: Admin::Drain }, at_ms: 2, outcome: None };
    Store::save_with(&mut mem, &memory, &big, Some(op)).unwrap();
    Store::save_with(&mut &file, &memory, &big, Some(op)).unwrap();
    let from_mem = Store::load(&mut mem, &small).unwrap();
    let from_file = Store::load(&mut &file, &small).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(from_mem, from_file);
    let kept_now = small.nodes.iter().position(|n| n.name == "s1-f1-n002").unwrap() as u32;
    assert_ne!(kept, kept_now, "the node moved position");
    assert_eq!(from_mem.memory.node_ops.keys().copied().collect::<Vec<_>>(), vec![kept_now]);
    assert_eq!(from_mem.resolutions.len(), 1, "{:?}", from_mem.resolutions);
    assert_eq!(from_mem.resolutions[0].object, "farm s0/s0-f2");
}

/// A crash of the simulation's controller: a new one opened on the kept
/// journal does not count the old one's actions as running (it
/// re-observes them) and plans on.
#[test]
fn a_controller_opened_on_a_kept_journal_carries_on() {
    let fleet = Arc::new(fleetgen::fleet(&shape()).unwrap());
    let sim = crate::sim::Sim::new(&fleet, crate::sim::SimConfig::new(&fleet, 3));
    let observed = sim.observe();
    let mut ctl = Controller::open(Arc::clone(&fleet), MemJournal::default(), 0).unwrap();
    let step = ctl.step(&observed, 0, Mode::default(), &mut |_| {}).unwrap();
    assert!(!step.started.is_empty());
    assert_eq!(ctl.running_count(), step.started.len());
    let journal = ctl.into_store();
    assert_eq!(journal.ops, step.started.len() as u64, "one begin per start");
    // The new controller knows nothing runs (it re-observes) and plans again.
    let mut ctl = Controller::open(Arc::clone(&fleet), journal, 1_000).unwrap();
    assert_eq!(ctl.running_count(), 0);
    let again = ctl.step(&sim.observe(), 1_000, Mode::default(), &mut |_| {}).unwrap();
    assert!(again.finish.is_none(), "{:?}", again.finish);
}
