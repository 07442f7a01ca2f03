//! `Runner`: the controller driven on tokio over a `Fleetside`. Each started
//! action runs in its own task; its outcome comes back on a channel and is
//! handed to the controller on the next `settle`. Used by `reconcile_once`
//! and the daemon; the deterministic simulation drives the controller from
//! its event loop instead.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::journal::Resolved;
use super::{Controller, Event, Fleetside, Mode, Step, Store};
use crate::model::Fleet;
use crate::observe::Observed;
use crate::plan::action::{Action, Outcome};

/// One completed action, as it came back from its task.
type Completion = (Action, Outcome, Duration);

pub struct Runner<S: Store, F: Fleetside> {
    pub ctl: Controller<S>,
    side: Arc<F>,
    tx: mpsc::UnboundedSender<Completion>,
    rx: mpsc::UnboundedReceiver<Completion>,
    finished: Vec<Completion>,
}

impl<S: Store, F: Fleetside> Runner<S, F> {
    /// Opens the controller on `store` for the side's fleet.
    pub fn new(side: Arc<F>, store: S) -> Result<Self, String> {
        let ctl = Controller::open(side.fleet(), store, side.now_ms())?;
        let (tx, rx) = mpsc::unbounded_channel();
        Ok(Runner { ctl, side, tx, rx, finished: Vec::new() })
    }

    pub fn side(&self) -> &Arc<F> {
        &self.side
    }

    pub fn fleet(&self) -> &Arc<Fleet> {
        self.ctl.fleet()
    }

    pub fn running_count(&self) -> usize {
        self.ctl.running_count()
    }

    /// Moves to a new spec's fleet side (`Controller::retarget`).
    pub fn retarget(&mut self, side: Arc<F>) -> Result<Vec<Resolved>, String> {
        let resolved = self.ctl.retarget(side.fleet(), side.now_ms())?;
        self.side = side;
        Ok(resolved)
    }

    /// Waits for a completion, at most `timeout`; true if one arrived.
    pub async fn wait(&mut self, timeout: Duration) -> bool {
        tokio::select! {
            biased;
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

    /// Hands every completion that arrived to the controller.
    pub fn settle(&mut self, on: &mut (dyn FnMut(&Event) + Send)) -> Result<(), String> {
        while let Ok(c) = self.rx.try_recv() {
            self.finished.push(c);
        }
        for (action, outcome, took) in std::mem::take(&mut self.finished) {
            self.ctl.completed(action, outcome, took, self.side.now_ms(), on)?;
        }
        Ok(())
    }

    pub async fn observe(&self) -> Result<Observed, String> {
        self.side.observe().await
    }

    /// One controller pass on the side's clock; what it starts runs in
    /// tasks at once.
    pub fn step(
        &mut self,
        observed: &Observed,
        mode: Mode,
        on: &mut (dyn FnMut(&Event) + Send),
    ) -> Result<Step, String> {
        let step = self.ctl.step(observed, self.side.now_ms(), mode, on)?;
        for p in &step.started {
            self.spawn(p.action.clone());
        }
        Ok(step)
    }

    fn spawn(&self, action: Action) {
        let (side, tx) = (Arc::clone(&self.side), self.tx.clone());
        tokio::spawn(async move {
            let t = Instant::now();
            let run = std::panic::AssertUnwindSafe(side.execute(&action));
            let outcome = futures::FutureExt::catch_unwind(run)
                .await
                .unwrap_or_else(|_| Outcome::Failed("drover's executor panicked (a bug): see the log".into()));
            let _ = tx.send((action, outcome, t.elapsed()));
        });
    }
}
