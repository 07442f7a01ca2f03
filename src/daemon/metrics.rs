//! Prometheus metrics of the daemon (being written: API fixed, bodies to come).

use std::time::Duration;

use crate::model::Fleet;
use crate::observe::Observed;
use crate::plan::Memory;

pub struct Metrics {}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {}
    }
    /// An action started (`kind` is `ActionKind::name`).
    pub fn action_started(&self, _kind: &str) {}
    /// An action ended.
    pub fn action_finished(&self, _kind: &str, _ok: bool, _took: Duration) {}
    /// One reconcile pass (observe + plan + start) took this long.
    pub fn reconcile_pass(&self, _took: Duration) {}
    /// The fleet as observed by the last pass.
    pub fn fleet_observed(&self, _fleet: &Fleet, _observed: &Observed, _memory: &Memory) {}
    /// A valid spec was applied.
    pub fn spec_applied(&self, _generation: u64, _commit: Option<&str>, _digest: &str) {}
    /// A spec failed validation and was not applied.
    pub fn spec_rejected(&self) {}
    /// The loop's last error (`None` once a pass succeeds).
    pub fn last_error(&self, _error: Option<&str>) {}
    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        String::new()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
