//! The daemon (`drover::daemon::run`) against the live simulation, in
//! paused tokio time (virtual time advances whenever every task waits): new
//! specs while a rollout runs, invalid specs, crashes and stop requests at
//! random instants. The simulation's independent checker must see zero
//! violations, and the daemon must converge to the newest valid spec.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover::control::Event;
use drover::control::journal::Journal;
use drover::daemon::source::SpecUpdate;
use drover::daemon::state::{DaemonStatus, Shared};
use drover::daemon::{self, Note};
use drover::model::Fleet;
use drover::sim::fleetgen::{Shape, spec_text};
use drover::sim::live::LiveSim;
use drover::sim::rng::Rng;
use drover::sim::{Report, SimConfig};
use tokio::sync::watch;

fn shape() -> Shape {
    Shape { prod_sites: 2, farms_per_site: 3, nodes_per_farm: 4, sessions_per_site: 300, ..Shape::default() }
}

fn parse(text: &str) -> Result<Arc<Fleet>, String> {
    let files = [drover::spec::SourceFile { path: "fleet.yaml".into(), text: text.to_string() }];
    drover::spec::validate::check(&files).map(Arc::new).map_err(|d| drover::spec::diag::render(&d, &files))
}

fn update(text: &str, commit: &str) -> Option<SpecUpdate> {
    Some(SpecUpdate { commit: Some(commit.into()), digest: format!("d-{commit}"), at_ms: 0, fleet: parse(text) })
}

/// The generated spec with the fleet's release changed (the default release is its first `2026.11.2`).
fn with_release(text: &str, release: &str) -> String {
    text.replacen("release: \"2026.11.2\"", &format!("release: \"{release}\""), 1)
}

struct Harness {
    dir: std::path::PathBuf,
    sim: Arc<Mutex<Option<Arc<LiveSim>>>>,
    notes: Arc<Mutex<Vec<Note>>>,
}

impl Harness {
    fn new(name: &str) -> Harness {
        let dir = std::env::temp_dir().join(format!("drover-daemon-sim-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Harness { dir, sim: Default::default(), notes: Default::default() }
    }

    fn journal(&self) -> Journal {
        Journal::new(&self.dir.join(drover::control::journal::FILE))
    }

    /// The journal's memory for the fleet the simulation runs now.
    fn memory(&self) -> drover::plan::Memory {
        let fleet = drover::control::Fleetside::fleet(&**self.sim.lock().unwrap().as_ref().unwrap());
        self.journal().load(&fleet).unwrap().memory
    }

    fn opts() -> daemon::Options {
        daemon::Options {
            detect_only: false,
            tick: Duration::from_millis(500),
            idle_tick: Duration::from_secs(5),
            resync: Duration::from_secs(30),
            stop_grace: Duration::from_secs(3600),
            ..Default::default()
        }
    }

    /// One daemon run until `stop` (or until dropped: a crash).
    async fn run(
        &self,
        specs: watch::Receiver<Option<SpecUpdate>>,
        shared: Arc<Shared>,
        stop: watch::Receiver<bool>,
    ) -> Result<daemon::Stopped, String> {
        self.run_with(specs, shared, stop, Self::opts()).await
    }

    async fn run_with(
        &self,
        specs: watch::Receiver<Option<SpecUpdate>>,
        shared: Arc<Shared>,
        stop: watch::Receiver<bool>,
        opts: daemon::Options,
    ) -> Result<daemon::Stopped, String> {
        let slot = Arc::clone(&self.sim);
        let connect = move |fleet: Arc<Fleet>, _current: Option<Arc<LiveSim>>| {
            let slot = Arc::clone(&slot);
            async move {
                // The world outlives the daemon: a restarted daemon finds it as it was.
                let existing = slot.lock().unwrap().clone();
                match existing {
                    Some(sim) => sim.set_fleet(fleet).map(|()| sim),
                    None => {
                        let sim = LiveSim::new(Arc::clone(&fleet), SimConfig::new(&fleet, 7), 1.0)?;
                        *slot.lock().unwrap() = Some(Arc::clone(&sim));
                        Ok(sim)
                    }
                }
            }
        };
        let notes = Arc::clone(&self.notes);
        let mut on = move |n: &Note| notes.lock().unwrap().push(n.clone());
        let journal = self.journal();
        daemon::run(connect, specs, None, &journal, shared, opts, stop, &mut on).await
    }

    fn started(&self) -> usize {
        self.notes.lock().unwrap().iter().filter(|n| matches!(n, Note::Action(Event::Started { .. }))).count()
    }

    fn report(&self) -> Report {
        self.sim.lock().unwrap().as_ref().expect("a simulation").report()
    }

    /// Every node runs `release` (the world as the checker sees it).
    async fn assert_release(&self, release: &str) {
        let sim = self.sim.lock().unwrap().clone().unwrap();
        let observed = drover::control::Fleetside::observe(&*sim).await;
        for (n, o) in observed.unwrap().nodes.iter().enumerate() {
            assert_eq!(o.release_active.as_ref().map(|r| r.to_string()).as_deref(), Some(release), "node {n}");
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn shared() -> Arc<Shared> {
    Arc::new(Shared::new(DaemonStatus::default()))
}

async fn until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let t0 = tokio::time::Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "timed out (virtual {limit:?}) waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn converged_at(shared: &Shared, generation: u64) -> bool {
    let st = shared.status();
    st.spec.generation == generation && st.rollout.phase == "converged"
}

fn assert_clean(r: &Report) {
    eprintln!("{} requests, {} actions, {} violations", r.requests, r.actions.values().sum::<u64>(), r.violations);
    assert_eq!(r.violations, 0, "{:?} {:?}", r.violations_by_invariant, r.violation_samples);
    assert_eq!(r.failed_requests, 0);
    assert!(r.requests > 1000, "{} requests", r.requests);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_new_spec_mid_rollout_supersedes_the_old_and_an_invalid_one_changes_nothing() {
    let h = Harness::new("supersede");
    let text = spec_text(&shape());
    let (tx, rx) = watch::channel(update(&text, "c1"));
    let (stop_tx, stop_rx) = watch::channel(false);
    let sh = shared();
    let driver = async {
        until("the rollout to start", Duration::from_secs(3600), || h.started() > 30).await;
        // A newer release while farms are mid-switch.
        tx.send(update(&with_release(&text, "2026.11.3"), "c2")).unwrap();
        until("the new spec applied", Duration::from_secs(3600), || sh.status().spec.generation == 2).await;
        let started = h.started();
        // An invalid spec: reported, not applied, the rollout goes on.
        tx.send(update(&with_release(&text, "not a release!"), "c3")).unwrap();
        until("the invalid spec reported", Duration::from_secs(600), || sh.status().spec.rejected.is_some()).await;
        let rejected = sh.status().spec.rejected.clone().unwrap();
        assert_eq!(rejected.commit.as_deref(), Some("c3"));
        assert!(rejected.error.contains("fleet.yaml:"), "{}", rejected.error);
        assert_eq!(sh.status().spec.generation, 2);
        until("convergence on the second spec", Duration::from_secs(6 * 3600), || converged_at(&sh, 2)).await;
        assert!(h.started() > started, "the rollout stopped at the invalid spec");
        stop_tx.send(true).unwrap();
    };
    let (r, ()) = tokio::join!(h.run(rx, Arc::clone(&sh), stop_rx), driver);
    let stopped = r.unwrap();
    assert!(stopped.parked.is_empty(), "{:?}", stopped.parked);
    assert_eq!(sh.status().spec.commit.as_deref(), Some("c2"));
    assert_clean(&h.report());
    h.assert_release("2026.11.3").await;
}

/// Crashes (the daemon's future dropped, as a SIGKILL would) at random
/// instants, each followed by a restart on the same journal and world.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn crashes_at_random_instants_resume_without_violation() {
    for seed in 1..=4u64 {
        let h = Harness::new(&format!("crash{seed}"));
        let mut rng = Rng::new(seed);
        let text = spec_text(&shape());
        let (_tx, rx) = watch::channel(update(&text, "c1"));
        let mut crashes = 0;
        loop {
            let sh = shared();
            let (_stop_tx, stop_rx) = watch::channel(false);
            let life = Duration::from_millis(rng.range(5_000, 900_000));
            let run = h.run(rx.clone(), Arc::clone(&sh), stop_rx);
            let converged = async {
                until("convergence", Duration::from_secs(6 * 3600), || converged_at(&sh, 1)).await;
            };
            tokio::select! {
                _ = tokio::time::sleep(life), if crashes < 3 => { crashes += 1; }
                _ = converged => break,
                r = run => panic!("the daemon ended by itself: {r:?}"),
            }
            // Down for a while; the world goes on (actions in flight complete unobserved).
            tokio::time::sleep(Duration::from_millis(rng.range(1_000, 20_000))).await;
        }
        assert!(crashes > 0, "seed {seed}: converged before any crash");
        assert_clean(&h.report());
        h.assert_release("2026.11.2").await;
    }
}

/// A stop request (SIGTERM) at a random instant: open windows close, nothing
/// new opens, the daemon returns with nothing parked; a restart converges.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stop_at_a_random_instant_closes_open_windows_then_a_restart_converges() {
    let mut mid_rollout = 0;
    for seed in 11..=14u64 {
        let h = Harness::new(&format!("stop{seed}"));
        let mut rng = Rng::new(seed);
        let text = spec_text(&shape());
        let (_tx, rx) = watch::channel(update(&text, "c1"));
        let sh = shared();
        let (stop_tx, stop_rx) = watch::channel(false);
        // A random instant of the rollout: after a random number of actions, plus up to a minute.
        let after = rng.range(10, 200) as usize;
        let extra = Duration::from_millis(rng.range(0, 60_000));
        let driver = async {
            until("the rollout to get going", Duration::from_secs(6 * 3600), || h.started() >= after).await;
            tokio::time::sleep(extra).await;
            let phase = sh.status().rollout.phase.clone();
            eprintln!("stop after {after} actions + {extra:?}, in phase {phase}");
            if phase == "rolling" {
                mid_rollout += 1;
            }
            stop_tx.send(true).unwrap();
        };
        let (r, ()) = tokio::join!(h.run(rx.clone(), Arc::clone(&sh), stop_rx), driver);
        let stopped = r.unwrap();
        assert!(stopped.parked.is_empty(), "seed {seed}: parked {:?}", stopped.parked);
        let memory = h.memory();
        assert!(memory.farm_ops.is_empty() && memory.node_ops.is_empty(), "seed {seed}: {memory:?}");
        assert_eq!(h.sim.lock().unwrap().as_ref().unwrap().running(), 0, "seed {seed}: an action still runs");
        // Restarted, it finishes the rollout.
        let sh = shared();
        let (stop_tx, stop_rx) = watch::channel(false);
        let driver = async {
            until("convergence after the restart", Duration::from_secs(6 * 3600), || converged_at(&sh, 1)).await;
            stop_tx.send(true).unwrap();
        };
        let (r, ()) = tokio::join!(h.run(rx.clone(), Arc::clone(&sh), stop_rx), driver);
        r.unwrap();
        assert_clean(&h.report());
        h.assert_release("2026.11.2").await;
    }
    assert!(mid_rollout >= 2, "only {mid_rollout} stops came mid-rollout");
}

/// Detect-only: the drift and what would be done are reported; nothing starts.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn detect_only_reports_drift_and_the_plan_and_starts_nothing() {
    let h = Harness::new("detect");
    let text = spec_text(&shape());
    let (_tx, rx) = watch::channel(update(&text, "c1"));
    let sh = shared();
    let (stop_tx, stop_rx) = watch::channel(false);
    let opts = daemon::Options { detect_only: true, status_every: Duration::ZERO, ..Harness::opts() };
    let driver = async {
        until("a pass", Duration::from_secs(600), || sh.status().rollout.passes >= 3).await;
        tokio::time::sleep(Duration::from_secs(600)).await;
        let st = sh.status().clone();
        stop_tx.send(true).unwrap();
        st
    };
    let (r, st) = tokio::join!(h.run_with(rx, Arc::clone(&sh), stop_rx, opts), driver);
    r.unwrap();
    assert_eq!(h.started(), 0, "detect-only started actions");
    assert_eq!(st.rollout.phase, "detect-only");
    assert!(st.rollout.drift_items > 0 && st.rollout.nodes_at_target == 0, "{:?}", st.rollout);
    assert!(!st.rollout.pending.is_empty() && st.rollout.pending.iter().all(|p| p.ends_with("(detect-only)")));
    assert_eq!(h.report().actions.values().sum::<u64>(), 0);
    assert!(h.memory().node_ops.is_empty());
}

/// The live simulation behind switches a test turns: observation that
/// fails, and a `simulation_report` that blocks until released (as a long
/// advance of the simulated world would).
struct Unruly {
    live: Arc<LiveSim>,
    broken: std::sync::atomic::AtomicBool,
    observes: std::sync::atomic::AtomicU64,
    /// (entered, release): armed, the next report says it entered and waits.
    gate: Mutex<Option<(std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>)>>,
}

impl Unruly {
    fn new(text: &str) -> Arc<Unruly> {
        let fleet = parse(text).unwrap();
        Arc::new(Unruly {
            live: LiveSim::new(Arc::clone(&fleet), SimConfig::new(&fleet, 7), 1.0).unwrap(),
            broken: Default::default(),
            observes: Default::default(),
            gate: Default::default(),
        })
    }
}

impl drover::control::Fleetside for Unruly {
    fn fleet(&self) -> Arc<Fleet> {
        self.live.fleet()
    }
    fn now_ms(&self) -> u64 {
        self.live.now_ms()
    }
    async fn observe(&self) -> Result<drover::observe::Observed, String> {
        self.observes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.broken.load(std::sync::atomic::Ordering::SeqCst) {
            return Err("site eu-1 LB: connection refused".into());
        }
        self.live.observe().await
    }
    async fn execute(&self, action: &drover::plan::Action) -> drover::plan::Outcome {
        self.live.execute(action).await
    }
    fn simulation_report(&self) -> Option<serde_json::Value> {
        if let Some((entered, release)) = self.gate.lock().unwrap().take() {
            let _ = entered.send(());
            let _ = release.recv_timeout(Duration::from_secs(30));
        }
        self.live.simulation_report()
    }
}

async fn run_unruly(
    side: &Arc<Unruly>,
    dir: &std::path::Path,
    specs: watch::Receiver<Option<SpecUpdate>>,
    errors: Option<watch::Receiver<Option<String>>>,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    opts: daemon::Options,
) -> Result<daemon::Stopped, String> {
    let side = Arc::clone(side);
    let connect = move |_: Arc<Fleet>, _: Option<Arc<Unruly>>| {
        let side = Arc::clone(&side);
        async move { Ok(side) }
    };
    let journal = Journal::new(&dir.join(drover::control::journal::FILE));
    daemon::run(connect, specs, errors, &journal, shared, opts, stop, &mut |_: &Note| {}).await
}

/// Counts the WARN and ERROR events of this thread's tracing.
#[derive(Clone, Default)]
struct WarnCounter(Arc<std::sync::atomic::AtomicU64>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for WarnCounter {
    fn on_event(&self, e: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *e.metadata().level() <= tracing::Level::WARN {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// Observation failing for an hour (an LB down): the daemon backs off
/// exponentially instead of retrying every tick, logs the error once, and
/// recovers when the fleet answers again.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn failed_observations_back_off_and_are_logged_once() {
    use tracing_subscriber::layer::SubscriberExt;
    let warns = WarnCounter::default();
    let _logs = tracing::subscriber::set_default(tracing_subscriber::registry().with(warns.clone()));
    let h = Harness::new("backoff");
    let text = spec_text(&Shape { change: drover::sim::fleetgen::Change::NONE, ..shape() });
    let side = Unruly::new(&text);
    side.broken.store(true, std::sync::atomic::Ordering::SeqCst);
    let (_tx, rx) = watch::channel(update(&text, "c1"));
    let sh = shared();
    let (stop_tx, stop_rx) = watch::channel(false);
    let opts = Harness::opts();
    let driver = async {
        until("an observation error", Duration::from_secs(60), || sh.status().last_error.is_some()).await;
        let warns_at_first = warns.0.load(std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let attempts = side.observes.load(std::sync::atomic::Ordering::SeqCst);
        // Every 0.5 s would be 7,200 attempts; doubling up to 30 s is about 130.
        assert!((100..=200).contains(&attempts), "{attempts} observations in an hour");
        assert_eq!(warns.0.load(std::sync::atomic::Ordering::SeqCst), warns_at_first, "the same error logged again");
        let st = sh.status().clone();
        assert!(st.last_error.as_deref().is_some_and(|e| e.contains("connection refused")), "{st:?}");
        assert!(st.ready().is_err());
        // The fleet answers again: seen within the longest back-off.
        side.broken.store(false, std::sync::atomic::Ordering::SeqCst);
        until("recovery", Duration::from_secs(31), || converged_at(&sh, 1) && sh.status().last_error.is_none()).await;
        stop_tx.send(true).unwrap();
    };
    let (r, ()) = tokio::join!(run_unruly(&side, &h.dir, rx, None, Arc::clone(&sh), stop_rx, opts), driver);
    r.unwrap();
    assert_eq!(daemon::observe_backoff(&Harness::opts(), 1), Duration::from_millis(500));
    assert_eq!(daemon::observe_backoff(&Harness::opts(), 3), Duration::from_secs(2));
    assert_eq!(daemon::observe_backoff(&Harness::opts(), 40), Duration::from_secs(30));
}

/// A spec source that fails before the first spec (a Git URL that cannot
/// be fetched) shows in `/readyz`, `/status` and the metrics at once.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_spec_source_error_before_the_first_spec_is_visible() {
    let h = Harness::new("source-error");
    let text = spec_text(&shape());
    let side = Unruly::new(&text);
    let (tx, rx) = watch::channel(None);
    let (err_tx, err_rx) = watch::channel(None);
    let sh = shared();
    let (stop_tx, stop_rx) = watch::channel(false);
    let driver = async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        err_tx.send(Some("git fetch -q origin failed: fatal: repository not found".into())).unwrap();
        until("the error in /status", Duration::from_secs(1), || sh.status().spec_source_error.is_some()).await;
        let ready = sh.status().ready().unwrap_err();
        assert!(ready.contains("spec source: git fetch -q origin failed"), "{ready}");
        assert!(sh.metrics.render().contains("\ndrover_spec_source_error 1\n"), "{}", sh.metrics.render());
        // It works again and brings a spec: the error goes.
        err_tx.send(None).unwrap();
        tx.send(update(&text, "c1")).unwrap();
        until("the spec applied", Duration::from_secs(60), || sh.status().spec.generation == 1).await;
        until("the error gone", Duration::from_secs(60), || sh.status().spec_source_error.is_none()).await;
        assert!(sh.metrics.render().contains("\ndrover_spec_source_error 0\n"));
        stop_tx.send(true).unwrap();
    };
    let (r, ()) =
        tokio::join!(run_unruly(&side, &h.dir, rx, Some(err_rx), Arc::clone(&sh), stop_rx, Harness::opts()), driver);
    r.unwrap();
}

/// Building the status document advances the simulated world; the endpoints
/// (which take the status lock) are not blocked meanwhile.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_status_lock_is_free_while_the_simulation_reports() {
    let h = Harness::new("publish-lock");
    let text = spec_text(&shape());
    let side = Unruly::new(&text);
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel();
    *side.gate.lock().unwrap() = Some((entered_tx, release_rx));
    let (_tx, rx) = watch::channel(update(&text, "c1"));
    let sh = shared();
    let (stop_tx, stop_rx) = watch::channel(false);
    // Outside the runtime (which the blocked report holds): an endpoint's view.
    let probe = {
        let sh = Arc::clone(&sh);
        std::thread::spawn(move || {
            entered.recv_timeout(Duration::from_secs(60)).expect("a status document was built");
            let (got_tx, got) = std::sync::mpsc::channel();
            let sh2 = Arc::clone(&sh);
            std::thread::spawn(move || {
                let phase = sh2.status().rollout.phase.clone();
                let _ = got_tx.send(phase);
            });
            let r = got.recv_timeout(Duration::from_secs(5));
            let _ = release.send(());
            r
        })
    };
    let driver = async {
        until("a pass published", Duration::from_secs(600), || sh.status().rollout.passes >= 1).await;
        stop_tx.send(true).unwrap();
    };
    let (r, ()) = tokio::join!(
        run_unruly(
            &side,
            &h.dir,
            rx,
            None,
            Arc::clone(&sh),
            stop_rx,
            daemon::Options { detect_only: true, ..Harness::opts() }
        ),
        driver
    );
    r.unwrap();
    let phase = probe.join().unwrap();
    assert!(phase.is_ok(), "the status lock was held while the simulation reported");
}

/// A converged daemon waiting a resync much longer than `/healthz`'s limit
/// stays healthy all along; one wedged past its wait does not.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn healthz_stays_ok_through_a_long_resync() {
    let h = Harness::new("liveness");
    let text = spec_text(&Shape { change: drover::sim::fleetgen::Change::NONE, ..shape() });
    let side = Unruly::new(&text);
    let (_tx, rx) = watch::channel(update(&text, "c1"));
    let sh = shared();
    let (stop_tx, stop_rx) = watch::channel(false);
    let limit = drover::daemon::http::HEARTBEAT_STALE_AFTER;
    let opts = daemon::Options { resync: limit * 5, ..Harness::opts() };
    let driver = async {
        until("convergence", Duration::from_secs(600), || converged_at(&sh, 1)).await;
        let observes = side.observes.load(std::sync::atomic::Ordering::SeqCst);
        // Over two resync periods, every second.
        for s in 0..(limit * 10).as_secs() {
            assert_eq!(sh.liveness(limit), Ok(()), "{s} s into the resync");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let now = side.observes.load(std::sync::atomic::Ordering::SeqCst);
        assert!((observes + 1..=observes + 3).contains(&now), "{observes} then {now} observations");
        stop_tx.send(true).unwrap();
    };
    let (r, ()) = tokio::join!(run_unruly(&side, &h.dir, rx, None, Arc::clone(&sh), stop_rx, opts), driver);
    r.unwrap();
    // The loop gone (wedged): late once its last wait plus the limit passed.
    tokio::time::sleep(limit * 6).await;
    assert!(sh.liveness(limit).unwrap_err().starts_with("stale: "));
}
