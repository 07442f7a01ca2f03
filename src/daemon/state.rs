//! What the daemon knows about itself and the fleet, shared between the
//! reconcile loop (the only writer) and the HTTP endpoints (readers).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

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
    /// Since when (wall-clock ms) a valid spec waits, while `pending`.
    pub pending_since_ms: Option<u64>,
    /// What it waits for, while `pending` (e.g. `3 running actions to finish`).
    pub pending_reason: Option<String>,
    /// Its digest (and commit with `--git`), while `pending`.
    pub pending_digest: Option<String>,
    pub pending_commit: Option<String>,
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
    /// see `blocked`), `unobserved` (every node that answered is at its target, but some did not answer: see
    /// `unobserved`), `halted` (failure budget), `detect-only`, `stopping`.
    pub phase: String,
    /// Every node was observed at its target (or failed), nothing out, nothing in flight.
    /// Never true while a node does not answer.
    pub converged: bool,
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
    /// Nodes whose observed state is the target, of all nodes (an
    /// unreachable node is never counted: its state is unknown).
    pub nodes_at_target: u64,
    pub nodes_total: u64,
    /// Nodes that did not answer the last observation (failed or not).
    pub nodes_unobserved: u64,
    /// Those nodes: name, SSH address, the SSH error.
    pub unobserved: Vec<crate::observe::Unobserved>,
    pub last_pass_at_ms: u64,
    pub passes: u64,
    /// `blocked` with what each waits for and until when (the status page's table).
    pub blocked_items: Vec<BlockedItem>,
    /// Nodes by the status page's state (`web::Cell::name`: `at-target`,
    /// `staging`, `waiting`, `in-window`, `drained`, `switched`, `held`,
    /// `unreachable`, `failed`); every node is in exactly one. Each node of
    /// `fleet` names its own under `cell`.
    pub cells: BTreeMap<String, u64>,
}

/// Something the planner wants but may not start yet (`plan::Blocked`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct BlockedItem {
    pub subject: String,
    /// `preproduction`, `change_window`, `capacity`, `staging`, `node_windows`, `operator`, `halted`.
    pub cause: String,
    pub reason: String,
    /// When the wait ends by itself, if known (ms on the fleet's clock).
    pub until_ms: Option<u64>,
}

/// Most farm windows kept closed in `History` (the open ones are always kept).
pub const HISTORY_WINDOWS: usize = 200;
/// Most finished actions kept in `History`.
pub const HISTORY_ACTIONS: usize = 40;
/// Most points of the progress series; when full, every other point goes
/// (the first and the newest stay), so the whole rollout keeps its shape.
pub const HISTORY_POINTS: usize = 400;

/// What the rollout did lately, for the status page: farm windows (open
/// and closed), finished actions, and nodes at target over time. Bounded
/// (`HISTORY_*`); kept in memory only (a restart starts it again).
#[derive(Clone, Debug, Default, Serialize)]
pub struct History {
    /// Oldest first.
    pub windows: VecDeque<FarmWindow>,
    /// Oldest first.
    pub actions: VecDeque<ActionRecord>,
    /// Oldest first; a point each time the count changed.
    pub progress: Vec<ProgressPoint>,
}

/// A farm window (its farm-level switch) seen open by the daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FarmWindow {
    pub site: String,
    pub farm: String,
    /// The pass that first saw it open (ms on the fleet's clock).
    pub opened_ms: u64,
    /// The pass that first saw it closed; `None` while open.
    pub closed_ms: Option<u64>,
}

/// An action that finished.
#[derive(Clone, Debug, Serialize)]
pub struct ActionRecord {
    /// `Action::describe` text.
    pub action: String,
    pub kind: String,
    pub took_ms: u64,
    /// `None` when it succeeded.
    pub error: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ProgressPoint {
    pub at_ms: u64,
    pub nodes_at_target: u64,
}

impl History {
    /// One pass at `now_ms`: `open` are the farms (site, farm) whose window
    /// is open now.
    pub fn pass(&mut self, now_ms: u64, nodes_at_target: u64, open: &[(String, String)]) {
        for w in self.windows.iter_mut().filter(|w| w.closed_ms.is_none()) {
            if !open.iter().any(|(s, f)| *s == w.site && *f == w.farm) {
                w.closed_ms = Some(now_ms);
            }
        }
        for (site, farm) in open {
            if !self.windows.iter().any(|w| w.closed_ms.is_none() && w.site == *site && w.farm == *farm) {
                self.windows.push_back(FarmWindow {
                    site: site.clone(),
                    farm: farm.clone(),
                    opened_ms: now_ms,
                    closed_ms: None,
                });
            }
        }
        while self.windows.iter().filter(|w| w.closed_ms.is_some()).count() > HISTORY_WINDOWS {
            let Some(i) = self.windows.iter().position(|w| w.closed_ms.is_some()) else { break };
            self.windows.remove(i);
        }
        if self.progress.last().is_none_or(|p| p.nodes_at_target != nodes_at_target) {
            self.progress.push(ProgressPoint { at_ms: now_ms, nodes_at_target });
            if self.progress.len() > HISTORY_POINTS {
                let last = self.progress.len() - 1;
                let mut i = 0;
                self.progress.retain(|_| {
                    i += 1;
                    (i - 1) % 2 == 0 || i - 1 == last
                });
            }
        }
    }

    /// An action finished.
    pub fn finished(&mut self, record: ActionRecord) {
        self.actions.push_back(record);
        while self.actions.len() > HISTORY_ACTIONS {
            self.actions.pop_front();
        }
    }
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
    /// What the rollout did lately (the status page's timeline, actions and progress plot).
    pub history: History,
}

impl DaemonStatus {
    /// Ready to act: a valid spec is in force and the fleet was observed.
    pub fn ready(&self) -> Result<(), String> {
        if self.spec.generation == 0 {
            return Err(match &self.spec.rejected {
                Some(r) => format!("no valid spec yet: {}", r.error.lines().next().unwrap_or("")),
                None => match &self.spec_source_error {
                    // A Git source that cannot fetch: say why nothing came.
                    Some(e) => format!("no spec loaded yet: spec source: {}", e.lines().next().unwrap_or("")),
                    None => "no spec loaded yet".into(),
                },
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

    /// What a ready daemon adds to `/readyz`: the nodes it could not
    /// observe. They are the fleet's trouble, not the daemon's (it goes on
    /// observing them and converging the rest), so readiness stays 200 and
    /// says why the fleet is not known to be converged.
    pub fn readiness_note(&self) -> Option<String> {
        const SHOWN: usize = 5;
        let r = &self.rollout;
        if r.nodes_unobserved == 0 {
            return None;
        }
        let mut note = format!(
            "{} of {} nodes not observed, so the fleet is not known to be converged: ",
            r.nodes_unobserved, r.nodes_total
        );
        let names: Vec<String> = r.unobserved.iter().take(SHOWN).map(ToString::to_string).collect();
        note.push_str(&names.join("; "));
        if r.unobserved.len() > SHOWN {
            note.push_str(&format!("; ... and {} more (see /status)", r.unobserved.len() - SHOWN));
        }
        Some(note)
    }
}

/// Shared between the loop and the endpoints.
pub struct Shared {
    status: Mutex<DaemonStatus>,
    pub metrics: super::metrics::Metrics,
    /// Wall-clock ms of the loop's last turn (for `/healthz`).
    heartbeat: std::sync::atomic::AtomicU64,
    /// When the loop turned last and when it expects to turn next (for `/healthz`).
    liveness: Mutex<Liveness>,
}

/// The loop's progress, on tokio's clock (paused time in tests moves it).
#[derive(Clone, Copy, Debug)]
struct Liveness {
    last_turn: tokio::time::Instant,
    /// The loop is waiting until then (a resync, a tick, a back-off); at its
    /// last turn while it works.
    due: tokio::time::Instant,
}

impl Shared {
    pub fn new(status: DaemonStatus) -> Shared {
        Shared {
            status: Mutex::new(status),
            metrics: super::metrics::Metrics::new(),
            heartbeat: std::sync::atomic::AtomicU64::new(crate::control::now_ms()),
            liveness: Mutex::new(Liveness { last_turn: tokio::time::Instant::now(), due: tokio::time::Instant::now() }),
        }
    }

    pub fn status(&self) -> MutexGuard<'_, DaemonStatus> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The loop turns (and works until it says it waits).
    pub fn beat(&self) {
        self.heartbeat.store(crate::control::now_ms(), std::sync::atomic::Ordering::Relaxed);
        let now = tokio::time::Instant::now();
        *self.liveness.lock().unwrap_or_else(|p| p.into_inner()) = Liveness { last_turn: now, due: now };
    }

    /// The loop waits, on purpose, for at most `wait` (a resync, a tick, a
    /// back-off): it is not late before then.
    pub fn waiting(&self, wait: Duration) {
        let mut l = self.liveness.lock().unwrap_or_else(|p| p.into_inner());
        l.due = tokio::time::Instant::now() + wait;
    }

    /// Liveness for `/healthz`: `Err` when the loop is more than `slack`
    /// late, i.e. it has been working (observing, connecting, planning)
    /// for longer than `slack` or it has not woken up `slack` after the
    /// end of a wait it chose. A converged daemon that waits a long resync
    /// is live all along.
    pub fn liveness(&self, slack: Duration) -> Result<(), String> {
        let l = *self.liveness.lock().unwrap_or_else(|p| p.into_inner());
        let now = tokio::time::Instant::now();
        let late = now.saturating_duration_since(l.due);
        if late <= slack {
            return Ok(());
        }
        Err(format!(
            "stale: the reconcile loop last turned {:.1} s ago and is {:.1} s late (limit {} s)",
            now.saturating_duration_since(l.last_turn).as_secs_f64(),
            late.as_secs_f64(),
            slack.as_secs_f64()
        ))
    }

    /// Wall-clock ms of the loop's last turn.
    pub fn last_beat_ms(&self) -> u64 {
        self.heartbeat.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(s, f)| (s.to_string(), f.to_string())).collect()
    }

    #[test]
    fn history_opens_and_closes_farm_windows_by_name() {
        let mut h = History::default();
        h.pass(1_000, 0, &open(&[("eu", "f1")]));
        h.pass(2_000, 3, &open(&[("eu", "f1"), ("us", "f1")]));
        h.pass(3_000, 3, &open(&[("us", "f1")]));
        assert_eq!(
            h.windows.iter().map(|w| (w.site.as_str(), w.farm.as_str(), w.opened_ms, w.closed_ms)).collect::<Vec<_>>(),
            [("eu", "f1", 1_000, Some(3_000)), ("us", "f1", 2_000, None)]
        );
        // The same farm again: a new window.
        h.pass(4_000, 5, &open(&[("eu", "f1")]));
        assert_eq!(h.windows.len(), 3);
        assert_eq!(h.windows[1].closed_ms, Some(4_000));
        assert_eq!(h.windows[2].closed_ms, None);
        // A point per change of the count only.
        assert_eq!(
            h.progress.iter().map(|p| (p.at_ms, p.nodes_at_target)).collect::<Vec<_>>(),
            [(1_000, 0), (2_000, 3), (4_000, 5)]
        );
    }

    #[test]
    fn history_is_bounded_and_keeps_the_first_and_newest_point() {
        let mut h = History::default();
        for i in 0..5_000u64 {
            let open = if i % 2 == 0 { open(&[("s", &format!("f{i}"))]) } else { Vec::new() };
            h.pass(i * 10, i, &open);
            h.finished(ActionRecord { action: format!("a{i}"), kind: "k".into(), took_ms: i, error: None });
        }
        assert!(h.windows.len() <= HISTORY_WINDOWS + 1, "{}", h.windows.len());
        assert_eq!(h.windows.back().unwrap().farm, "f4998");
        assert_eq!(h.actions.len(), HISTORY_ACTIONS);
        assert_eq!(h.actions.back().unwrap().action, "a4999");
        assert!(h.progress.len() <= HISTORY_POINTS, "{}", h.progress.len());
        assert_eq!(h.progress.first().unwrap().nodes_at_target, 0);
        assert_eq!(h.progress.last().unwrap().nodes_at_target, 4_999);
        assert!(h.progress.windows(2).all(|w| w[0].at_ms < w[1].at_ms));
    }
}
