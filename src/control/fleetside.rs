//! What the async drivers (`Runner`: `reconcile --once`, the daemon) need
//! from a fleet: observe it whole, carry out one action. `real::fleet::
//! RealFleet` (SSH, HAProxy, memcached, HTTP) and `sim::live::LiveSim` (the
//! simulated world in scaled real time) implement it; unit tests use
//! in-memory fleets. The deterministic simulation drives the controller
//! from its own event loop instead (`crate::sim::Sim`).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::model::{Fleet, NodeId};
use crate::observe::Observed;
use crate::plan::action::{Action, Outcome};

/// SSH connections opened and commands run by this process (machines only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transport {
    /// SSH connections (masters) opened.
    pub connects: u64,
    /// Remote commands run over them.
    pub commands: u64,
}

pub trait Fleetside: Send + Sync + 'static {
    /// The fleet this side was built for (the spec in force).
    fn fleet(&self) -> Arc<Fleet>;
    /// The fleet's clock in ms since the epoch: wall time for machines,
    /// virtual time for the simulation. The journal's times are on it.
    fn now_ms(&self) -> u64 {
        super::now_ms()
    }
    /// The whole fleet now; `Err` when it cannot be observed at all (an LB
    /// that does not answer). A node that does not answer is not an error.
    fn observe(&self) -> impl std::future::Future<Output = Result<Observed, String>> + Send;
    /// Runs one action to its end.
    fn execute(&self, action: &Action) -> impl std::future::Future<Output = Outcome> + Send;
    /// Why each unreachable node did not answer its last probe.
    fn unreachable_errors(&self) -> BTreeMap<NodeId, String> {
        Default::default()
    }
    /// The simulation only: what its independent invariant checker saw so far.
    fn simulation_report(&self) -> Option<serde_json::Value> {
        None
    }
    /// Machines only: SSH connections opened and commands run by this process.
    fn transport(&self) -> Option<Transport> {
        None
    }
}
