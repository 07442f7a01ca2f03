//! Stop requests and the per-subject back-off.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::journal::Journal;
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
    let mut r = Runner::new(Arc::clone(&world), &j).unwrap();
    let mut quiet = |_: &Event| {};
    let observed = r.observe().await.unwrap();
    let step = r.step(&observed, Mode::default(), &mut quiet).unwrap();
    let first = step.started.into_iter().next().expect("something to do");
    let subject = first.action.subject();
    while r.running_count() > 0 {
        r.next_completion().await;
        r.settle(&mut quiet).unwrap();
    }
    // The wall clock goes on, the fleet's does not: still backing off.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let cooling = |r: &Runner<&Journal, Failing>| r.ctl.cooling(subject, world.now_ms());
    assert!(cooling(&r), "a failed subject waits");
    // The controller says when to look again: when the back-off ends.
    let step = r.step(&observed, Mode::default(), &mut quiet).unwrap();
    assert!(step.started.is_empty(), "{:?}", step.started);
    assert!(step.held_back.iter().any(|h| h.contains("backing off")), "{:?}", step.held_back);
    assert_eq!(step.wake_ms, Some(T0 + 2_000));
    world.clock_ms.store(T0 + 1_999, Ordering::SeqCst);
    assert!(cooling(&r), "2 s after the first failure");
    world.clock_ms.store(T0 + 2_000, Ordering::SeqCst);
    assert!(!cooling(&r));
    // A second failure in a row waits twice as long.
    let step = r.step(&observed, Mode::default(), &mut quiet).unwrap();
    assert!(step.started.iter().any(|p| p.action.subject() == subject), "{:?}", step.started);
    while r.running_count() > 0 {
        r.next_completion().await;
        r.settle(&mut quiet).unwrap();
    }
    world.clock_ms.store(T0 + 2_000 + 3_999, Ordering::SeqCst);
    assert!(cooling(&r), "4 s after the second failure");
    world.clock_ms.store(T0 + 2_000 + 4_000, Ordering::SeqCst);
    assert!(!cooling(&r));
    drop(r);
    let _ = std::fs::remove_dir_all(&dir);
}
