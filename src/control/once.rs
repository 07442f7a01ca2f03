//! `reconcile --once`: the controller driven to the end of a run, against
//! the real fleet or the live simulation. Observe, step (record gate
//! evidence, plan, journal and start what is allowed), and again after
//! every completion or every tick while waiting for a drain, a soak or a
//! reboot. The run ends converged, halted on the failure budget, unobserved
//! (everything that answered is done, but some nodes did not answer for
//! `stall`), outside the change window, or stuck (nothing can start and
//! nothing ran for longer than `stall`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Event, Finish, Fleetside, Mode, Runner, Store, Summary};
use crate::model::Fleet;
use crate::plan;

#[derive(Clone, Debug)]
pub struct Options {
    /// Re-plan at least this often while actions run or wait.
    pub tick: Duration,
    /// Give up when nothing could start and nothing ran for this long, on
    /// the fleet's clock (virtual time for a simulated fleet).
    pub stall: Duration,
    /// Set (by a signal handler) to stop: nothing new starts, what runs
    /// finishes, the journal says what is left open for the next run.
    pub stop: Arc<std::sync::atomic::AtomicBool>,
}

pub async fn reconcile_once<F: Fleetside, S: Store>(
    side: Arc<F>,
    journal: S,
    opts: &Options,
    on: &mut (dyn FnMut(&Event) + Send),
) -> Summary {
    reconcile_once_with(side, journal, opts, on, &mut |_, _, _| {}).await
}

/// `reconcile_once`, also telling `progress` (fleet, fleet clock ms, event)
/// what begins and ends between passes: waits (until when), farm windows,
/// member waves (`plan::progress`, the simulation's lines too).
pub async fn reconcile_once_with<F: Fleetside, S: Store>(
    side: Arc<F>,
    journal: S,
    opts: &Options,
    on: &mut (dyn FnMut(&Event) + Send),
    progress: &mut (dyn FnMut(&Fleet, u64, &plan::progress::Event) + Send),
) -> Summary {
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
    let done = |mut s: Summary, r: Option<&Runner<S, F>>, finish: Finish| {
        if let Some(r) = r {
            s.started = r.ctl.started;
            s.failed = r.ctl.failed.clone();
            s.resolved = r.ctl.resolved.iter().map(|r| r.resolution.to_string()).collect();
        }
        s.finish = finish;
        s.elapsed = t0.elapsed();
        s
    };
    let mut r = match Runner::new(side, journal) {
        Ok(r) => r,
        Err(e) => return done(summary, None, Finish::Error(e)),
    };
    let mode = Mode { stall_ms: opts.stall.as_millis() as u64, ..Mode::default() };
    loop {
        if let Err(e) = r.settle(on) {
            return done(summary, Some(&r), Finish::Error(e));
        }
        if opts.stop.load(std::sync::atomic::Ordering::SeqCst) {
            if r.running_count() == 0 {
                summary.open = r.ctl.open_windows();
                return done(summary, Some(&r), Finish::Interrupted);
            }
            r.next_completion().await;
            continue;
        }
        let observed = match r.observe().await {
            Ok(o) => o,
            Err(e) => {
                if r.running_count() == 0 {
                    return done(summary, Some(&r), Finish::Error(e));
                }
                on(&Event::ObserveFailed(e));
                r.next_completion().await;
                continue;
            }
        };
        summary.passes += 1;
        let step = match r.step(&observed, mode, on) {
            Ok(s) => s,
            Err(e) => return done(summary, Some(&r), Finish::Error(e)),
        };
        summary.blocked = step.pass.blocked.clone();
        summary.held = step.pass.held.clone();
        summary.unobserved = observed.unobserved_nodes(r.fleet(), &r.side().unreachable_errors());
        if let Some(finish) = step.finish {
            return done(summary, Some(&r), finish);
        }
        let fleet = Arc::clone(r.fleet());
        for e in r.ctl.progress(&step.pass, step.now_ms) {
            progress(&fleet, step.now_ms, &e);
        }
        r.wait(opts.tick).await;
    }
}
