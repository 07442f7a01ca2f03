//! What drover observed: per node the installed packages, kernel, PHP trees
//! and releases, LB state and last health result; per farm the LB pseudo-
//! server and the load it carries. Plain data, filled by the real probe
//! (`real::probe`) or by the simulation; nothing here does I/O.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::model::{Fleet, NodeId, PhpVersion, ReleaseId};

/// An interned-by-sharing string: observations of 100,000 nodes share the
/// few distinct versions a fleet runs.
pub type Str = Arc<str>;

/// A server's administrative state in HAProxy (`set server ... state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Admin {
    Ready,
    Drain,
    Maint,
}

/// A server as the LB reports it (`show servers state` / `show stat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct LbServer {
    pub admin: Admin,
    /// User weight (0..=256); 0 takes no new sessions but keeps cookie holders.
    pub weight: u16,
    /// Requests in progress (`scur` + `qcur`).
    pub active: u32,
}

impl LbServer {
    pub const READY: LbServer = LbServer { admin: Admin::Ready, weight: 100, active: 0 };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Health {
    Unknown,
    Passing,
    Failing,
}

#[derive(Clone, Debug, Serialize)]
pub struct NodeObs {
    /// Answered the probe.
    pub reachable: bool,
    /// A package operation or service restart is running on the node (Portage
    /// lock held, restart in progress): after a crash drover waits for it
    /// instead of starting a second one.
    pub busy: bool,
    /// Installed version per `category/package` that the fleet's targets track.
    pub packages: Vec<(Str, Str)>,
    /// Binary packages already fetched (staged) for installation.
    pub fetched: Vec<(Str, Str)>,
    pub kernel_running: Option<Str>,
    pub kernel_installed: Option<Str>,
    pub boot_id: Str,
    pub php_installed: Vec<PhpVersion>,
    pub php_active: Option<PhpVersion>,
    pub releases_installed: Vec<ReleaseId>,
    pub release_active: Option<ReleaseId>,
    /// The node's server in its farm listener.
    pub lb: LbServer,
    pub health: Health,
}

impl NodeObs {
    /// Installed version of `atom`'s package, if any.
    pub fn installed_of(&self, atom: &crate::model::Atom) -> Option<&str> {
        self.packages.iter().find(|(k, _)| atom.key_is(k)).map(|(_, v)| &**v)
    }
    pub fn fetched_exactly(&self, atom: &crate::model::Atom) -> bool {
        self.fetched.iter().any(|(k, v)| atom.key_is(k) && **v == *atom.version)
    }
    pub fn installed(&self, key: &str) -> Option<&str> {
        self.packages.iter().find(|(k, _)| &**k == key).map(|(_, v)| &**v)
    }
    pub fn has_fetched(&self, key: &str, version: &str) -> bool {
        self.fetched.iter().any(|(k, v)| &**k == key && &**v == version)
    }
    /// Running a kernel other than the installed one: a reboot is pending.
    pub fn reboot_pending(&self) -> bool {
        matches!((&self.kernel_running, &self.kernel_installed), (Some(r), Some(i)) if r != i)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct FarmObs {
    /// The farm's cookie pseudo-server in the site backend.
    pub lb: LbServer,
    /// Sessions whose cookie points at this farm (its load).
    pub sessions: u32,
    pub memcached_reachable: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct SiteObs {
    /// New sessions per second arriving at the site (for capacity planning).
    pub arrivals_per_s: f64,
    /// The LB answered.
    pub lb_reachable: bool,
}

/// One observation of the whole fleet, indexed like `Fleet`'s vectors.
#[derive(Clone, Debug, Serialize)]
pub struct Observed {
    pub nodes: Vec<NodeObs>,
    pub farms: Vec<FarmObs>,
    pub sites: Vec<SiteObs>,
}

impl Observed {
    /// Is the observation shaped like the fleet (one entry per node, farm, site)?
    pub fn matches(&self, fleet: &Fleet) -> bool {
        self.nodes.len() == fleet.nodes.len()
            && self.farms.len() == fleet.farms.len()
            && self.sites.len() == fleet.sites.len()
    }

    /// Nodes that did not answer this observation (failed or not): their
    /// state is unknown, so they are never counted as at their target.
    pub fn unobserved(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes.iter().enumerate().filter(|(_, o)| !o.reachable).map(|(n, _)| n as NodeId)
    }

    /// The unobserved nodes as reported to an operator: name, SSH address
    /// and why the probe failed (`errors`, by node; a node without an entry
    /// is said not to have answered).
    pub fn unobserved_nodes(&self, fleet: &Fleet, errors: &BTreeMap<NodeId, String>) -> Vec<Unobserved> {
        self.unobserved()
            .filter(|&n| (n as usize) < fleet.nodes.len())
            .map(|n| {
                let node = &fleet.nodes[n as usize];
                let host =
                    if node.address.contains(':') { format!("[{}]", node.address) } else { node.address.clone() };
                Unobserved {
                    node: node.name.clone(),
                    address: format!("{host}:{}", node.ssh_port),
                    error: errors.get(&n).cloned().unwrap_or_else(|| "did not answer the probe".into()),
                }
            })
            .collect()
    }
}

/// A node drover could not observe, and why: it is neither converged nor
/// at its target, whatever it ran when last seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Unobserved {
    pub node: String,
    /// The SSH address drover probed (`host:port`).
    pub address: String,
    /// The SSH (or probe) error.
    pub error: String,
}

impl std::fmt::Display for Unobserved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "node {} ({}): {}", self.node, self.address, self.error)
    }
}

/// `(category/name, version)` of every atom of a target, as observations list them.
pub fn packages_of(t: &crate::model::Target) -> Vec<(Str, Str)> {
    t.packages.iter().map(|a| (Str::from(a.key()), a.version.clone())).collect()
}
