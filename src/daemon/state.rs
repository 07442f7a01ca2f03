//! What the daemon knows about itself and the fleet, shared between the
//! reconcile loop (the only writer) and the HTTP endpoints (readers).

use std::sync::{Mutex, MutexGuard};

use serde::Serialize;

/// The spec in force and the last spec drover saw.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SpecInfo {
    /// Increases by one each time a new valid spec is applied (1 = the first).
    pub generation: u64,
    /// The Git commit applied (`--git`), else `None`.
    pub commit: Option<String>,
    /// A short hash of the spec files' contents in force.
    pub digest: String,
    pub applied_at_ms: u64,
    /// The last spec seen failed validation: its diagnostics (the spec in force is unchanged).
    pub rejected: Option<Rejected>,
    /// A valid spec waits for the actions in flight to finish before it applies.
    pub pending: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Rejected {
    pub commit: Option<String>,
    pub digest: String,
    pub at_ms: u64,
    /// Rendered diagnostics (file:line:col: error: ...).
    pub error: String,
}

/// What the rollout is doing.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Rollout {
    /// `starting` (a spec was just applied: no pass yet), `converged`, `rolling`, `waiting` (nothing can start now:
    /// see `blocked`), `halted` (failure budget), `detect-only`, `stopping`.
    pub phase: String,
    /// Actions running now (`describe` text).
    pub running: Vec<String>,
    /// Actions the planner wants but that cannot start (cooling down after a
    /// failure, outside a change window, detect-only).
    pub pending: Vec<String>,
    pub blocked: Vec<String>,
    /// Nodes an operator holds (maint by hand): reported, left alone.
    pub held: Vec<String>,
    pub failed: Vec<String>,
    /// Drift items across the fleet (what differs from the target).
    pub drift_items: u64,
    /// Nodes whose observed state is the target, of all nodes.
    pub nodes_at_target: u64,
    pub nodes_total: u64,
    pub last_pass_at_ms: u64,
    pub passes: u64,
}

/// The daemon's state document (`/status` serves it as JSON).
#[derive(Clone, Debug, Default, Serialize)]
pub struct DaemonStatus {
    pub version: String,
    /// `real` or `simulated`.
    pub fleet_kind: String,
    pub detect_only: bool,
    pub spec: SpecInfo,
    pub rollout: Rollout,
    /// The last error of the loop (an observation that failed, a journal
    /// write), `None` once a pass succeeds again.
    pub last_error: Option<String>,
    /// The spec source's last error (a Git fetch that failed), `None` when it works.
    pub spec_source_error: Option<String>,
    /// Journal entries that could not be carried over to the spec in force
    /// (their node or farm is gone, moved, or answers at another address),
    /// on open and on each new spec: closed, never applied to another
    /// object (`plan::named`), oldest first.
    pub journal_resolved: Vec<String>,
    /// The fleet as last observed: `status::view`'s document.
    pub fleet: serde_json::Value,
    /// Simulation only: invariant violations and requests so far.
    pub simulation: Option<serde_json::Value>,
}

impl DaemonStatus {
    /// Ready to act: a valid spec is in force and the fleet was observed.
    pub fn ready(&self) -> Result<(), String> {
        if self.spec.generation == 0 {
            return Err(match &self.spec.rejected {
                Some(r) => format!("no valid spec yet: {}", r.error.lines().next().unwrap_or("")),
                None => "no spec loaded yet".into(),
            });
        }
        if self.rollout.passes == 0 {
            return Err("the fleet was not observed yet".into());
        }
        if let Some(e) = &self.last_error {
            return Err(e.clone());
        }
        Ok(())
    }
}

/// Shared between the loop and the endpoints.
pub struct Shared {
    status: Mutex<DaemonStatus>,
    pub metrics: super::metrics::Metrics,
    /// Wall-clock ms of the loop's last turn (for `/healthz`).
    heartbeat: std::sync::atomic::AtomicU64,
}

impl Shared {
    pub fn new(status: DaemonStatus) -> Shared {
        Shared {
            status: Mutex::new(status),
            metrics: super::metrics::Metrics::new(),
            heartbeat: std::sync::atomic::AtomicU64::new(crate::real::reconcile::now_ms()),
        }
    }

    pub fn status(&self) -> MutexGuard<'_, DaemonStatus> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn beat(&self) {
        self.heartbeat.store(crate::real::reconcile::now_ms(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Wall-clock ms of the loop's last turn.
    pub fn last_beat_ms(&self) -> u64 {
        self.heartbeat.load(std::sync::atomic::Ordering::Relaxed)
    }
}
