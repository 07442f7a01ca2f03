//! `reconcile --once` against the real fleet: the level-triggered loop of
//! ARCHITECTURE.md. Observe, record gate evidence, plan, journal each action
//! before it starts, run it in its own task, journal its end, and plan again
//! after every completion (or every tick while waiting for a drain, a soak
//! or a reboot). The loop ends converged, halted on the failure budget, or
//! stuck (nothing can start and nothing runs for longer than `stall`).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use super::fleet::RealFleet;
use super::journal::Journal;
use crate::plan::action::{Action, Outcome, Subject};
use crate::plan::{self, Blocked, Estimates, World};

#[derive(Clone, Debug)]
pub struct Options {
    /// Re-plan at least this often while actions run or wait.
    pub tick: Duration,
    /// Give up when nothing could start and nothing ran for this long.
    pub stall: Duration,
}

/// What the loop reports as it goes.
#[derive(Clone, Debug)]
pub enum Event {
    Started {
        action: String,
        why: String,
        wave: Option<u32>,
    },
    Finished {
        action: String,
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
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

pub async fn reconcile_once(
    real: Arc<RealFleet>,
    journal: &Journal,
    opts: &Options,
    on: &mut (dyn FnMut(&Event) + Send),
) -> Summary {
    let t0 = Instant::now();
    let fleet = Arc::clone(&real.fleet);
    let mut summary = Summary {
        finish: Finish::Converged,
        started: 0,
        failed: Vec::new(),
        blocked: Vec::new(),
        held: Vec::new(),
        passes: 0,
        elapsed: Duration::ZERO,
    };
    let done = |mut s: Summary, finish: Finish| {
        s.finish = finish;
        s.elapsed = t0.elapsed();
        s
    };
    let mut memory = match journal.load() {
        Ok(m) => m,
        Err(e) => return done(summary, Finish::Error(e)),
    };
    // Whatever a previous run had in flight is re-observed, not assumed.
    memory.restarted();
    if let Err(e) = journal.save(&memory) {
        return done(summary, Finish::Error(e));
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<(Action, Outcome, Duration)>();
    let mut running = 0usize;
    let mut last_progress = Instant::now();
    let estimates = Estimates::default();
    let farm_of = |a: &Action| match a.subject() {
        Subject::Node(n) => Some(fleet.nodes[n as usize].farm),
        Subject::Farm(f) => Some(f),
    };
    let mut finished: Vec<(Action, Outcome, Duration)> = Vec::new();
    // A subject whose action failed waits before it is tried again (1 s,
    // doubling to a minute): the planner asks again at once, level-triggered.
    let mut cooldown: std::collections::HashMap<Subject, (Instant, u32)> = std::collections::HashMap::new();
    loop {
        while let Ok(c) = rx.try_recv() {
            finished.push(c);
        }
        for (action, outcome, took) in finished.drain(..) {
            running -= 1;
            last_progress = Instant::now();
            memory.complete(&action, &outcome, now_ms(), farm_of(&action));
            if let Err(e) = journal.save(&memory) {
                return done(summary, Finish::Error(e));
            }
            match &outcome {
                Outcome::Failed(e) => {
                    let line = format!("{}: {e}", action.describe(&fleet));
                    if !summary.failed.contains(&line) {
                        summary.failed.push(line);
                    }
                    let entry = cooldown.entry(action.subject()).or_insert((Instant::now(), 0));
                    entry.1 += 1;
                    entry.0 = Instant::now() + Duration::from_secs(1 << entry.1.min(6)).min(Duration::from_secs(60));
                }
                Outcome::Ok => {
                    cooldown.remove(&action.subject());
                }
            }
            on(&Event::Finished { action: action.describe(&fleet), outcome, took });
        }
        let observed = match real.observe().await {
            Ok(o) => o,
            Err(e) => {
                let e = e.to_string();
                if running == 0 {
                    return done(summary, Finish::Error(e));
                }
                on(&Event::ObserveFailed(e));
                if let Some(c) = rx.recv().await {
                    finished.push(c);
                }
                continue;
            }
        };
        summary.passes += 1;
        let now = now_ms();
        plan::gate::record(&fleet, &observed, &mut memory, now);
        memory.observe(&observed, now);
        let pass = plan::plan(&World {
            fleet: &fleet,
            observed: &observed,
            memory: &memory,
            now_ms: now,
            estimates: &estimates,
        });
        summary.blocked = pass.blocked.clone();
        summary.held = pass.held.clone();
        if running == 0 && pass.actions.is_empty() {
            if pass.converged {
                return done(summary, Finish::Converged);
            }
            if pass.halted {
                return done(summary, Finish::Halted);
            }
            if last_progress.elapsed() > opts.stall {
                return done(summary, Finish::Stuck);
            }
        }
        let cooling = |s: Subject| cooldown.get(&s).is_some_and(|(until, _)| *until > Instant::now());
        let waiting = pass.actions.iter().filter(|p| cooling(p.action.subject())).count();
        if running == 0
            && waiting == pass.actions.len()
            && !pass.actions.is_empty()
            && last_progress.elapsed() > opts.stall
        {
            return done(summary, Finish::Stuck);
        }
        for p in pass.actions.into_iter().filter(|p| !cooling(p.action.subject())) {
            let farm = farm_of(&p.action);
            let weight = farm.map(|f| observed.farms[f as usize].lb.weight).unwrap_or(0);
            memory.begin(&p.action, now, farm, weight);
            if let Err(e) = journal.save(&memory) {
                return done(summary, Finish::Error(e));
            }
            summary.started += 1;
            running += 1;
            last_progress = Instant::now();
            on(&Event::Started { action: p.action.describe(&fleet), why: p.why, wave: p.wave });
            let (real, tx) = (Arc::clone(&real), tx.clone());
            tokio::spawn(async move {
                let t = Instant::now();
                let run = std::panic::AssertUnwindSafe(real.execute(&p.action));
                let outcome = futures::FutureExt::catch_unwind(run)
                    .await
                    .unwrap_or_else(|_| Outcome::Failed("drover's executor panicked (a bug): see the log".into()));
                let _ = tx.send((p.action, outcome, t.elapsed()));
            });
        }
        tokio::select! {
            Some(c) = rx.recv() => finished.push(c),
            _ = tokio::time::sleep(opts.tick) => {}
        }
    }
}
