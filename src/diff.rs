//! Desired x observed -> drift: for each node, what differs from its farm's
//! target and what kind of change that is (online, disruptive, farm switch).
//! Pure: no I/O, no clock.

use serde::Serialize;

use crate::model::{Atom, Fleet, Needs, NodeId, PhpVersion, ReleaseId};
use crate::observe::NodeObs;

/// What a disruptive install needs before the node may serve again.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Disruption {
    pub reboot: bool,
    pub restart: Vec<String>,
}

impl Disruption {
    pub fn add(&mut self, needs: &Needs) {
        match needs {
            Needs::Reboot => self.reboot = true,
            Needs::Restart(s) => {
                for svc in s {
                    if !self.restart.contains(svc) {
                        self.restart.push(svc.clone());
                    }
                }
            }
        }
    }
    pub fn is_empty(&self) -> bool {
        !self.reboot && self.restart.is_empty()
    }
}

/// Everything node `n` lacks to match its target.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NodeDiff {
    /// Non-disruptive packages to install (online).
    pub online: Vec<Atom>,
    /// Disruptive packages to install in a drained window.
    pub disruptive: Vec<Atom>,
    pub disruption: Disruption,
    /// Target packages whose binary package is not fetched yet.
    pub unfetched: Vec<Atom>,
    /// The installed kernel is not the running one.
    pub reboot_pending: bool,
    pub stage_php: Option<PhpVersion>,
    pub stage_release: Option<ReleaseId>,
    pub switch_php: Option<PhpVersion>,
    pub switch_release: Option<ReleaseId>,
    /// The switch goes backwards (older release or PHP).
    pub backwards: bool,
}

impl NodeDiff {
    pub fn is_clean(&self) -> bool {
        self.online.is_empty()
            && self.disruptive.is_empty()
            && !self.reboot_pending
            && self.stage_php.is_none()
            && self.stage_release.is_none()
            && !self.needs_switch()
    }
    /// Needs the node out of service (drained) for package work.
    pub fn needs_window(&self) -> bool {
        !self.disruptive.is_empty() || self.reboot_pending
    }
    /// Needs the farm out of service for a PHP or release switch.
    pub fn needs_switch(&self) -> bool {
        self.switch_php.is_some() || self.switch_release.is_some()
    }
    /// What the window must do after installing: reboot when a kernel waits.
    pub fn window_disruption(&self) -> Disruption {
        let mut d = self.disruption.clone();
        if self.reboot_pending {
            d.reboot = true;
        }
        d
    }
    pub fn staged(&self) -> bool {
        self.stage_php.is_none() && self.stage_release.is_none() && self.unfetched.is_empty()
    }
}

/// Computes node `n`'s diff against its farm's target.
pub fn node_diff(fleet: &Fleet, n: NodeId, obs: &NodeObs) -> NodeDiff {
    let target = fleet.node_target(n);
    let mut d = NodeDiff::default();
    for atom in &target.packages {
        if obs.installed_of(atom) == Some(&*atom.version) {
            continue;
        }
        if !obs.fetched_exactly(atom) {
            d.unfetched.push(atom.clone());
        }
        match fleet.policy.needs(atom) {
            Some(needs) => {
                d.disruption.add(needs);
                d.disruptive.push(atom.clone());
            }
            None => d.online.push(atom.clone()),
        }
    }
    d.reboot_pending = obs.reboot_pending();
    if !obs.php_installed.contains(&target.php) {
        d.stage_php = Some(target.php.clone());
    }
    if !obs.releases_installed.contains(&target.release) {
        d.stage_release = Some(target.release.clone());
    }
    if obs.php_active.as_ref() != Some(&target.php) {
        d.switch_php = Some(target.php.clone());
        if obs.php_active.as_ref().is_some_and(|a| *a > target.php) {
            d.backwards = true;
        }
    }
    if obs.release_active.as_ref() != Some(&target.release) {
        d.switch_release = Some(target.release.clone());
        if obs.release_active.as_ref().is_some_and(|a| *a > target.release) {
            d.backwards = true;
        }
    }
    d
}

/// One line of drift for people: which node, what is wanted, what was seen,
/// and which spec level asked for it.
#[derive(Clone, Debug, Serialize)]
pub struct DriftItem {
    pub node: String,
    pub farm: String,
    pub what: String,
    pub want: String,
    pub have: String,
    pub why: String,
}

pub fn drift_items(fleet: &Fleet, n: NodeId, obs: &NodeObs, d: &NodeDiff) -> Vec<DriftItem> {
    let node = &fleet.nodes[n as usize];
    let farm = &fleet.farms[node.farm as usize];
    let item = |what: &str, want: String, have: String, why: String| DriftItem {
        node: node.name.clone(),
        farm: farm.name.clone(),
        what: what.to_string(),
        want,
        have,
        why,
    };
    let mut out = Vec::new();
    let pk_origin = format!("packages from {}", farm.target_origin.packages);
    for a in d.online.iter().chain(&d.disruptive) {
        let kind = match fleet.policy.needs(a) {
            None => "online install".to_string(),
            Some(Needs::Reboot) => "disruptive: reboot".to_string(),
            Some(Needs::Restart(s)) => format!("disruptive: restart {}", s.join(", ")),
        };
        out.push(item(
            "package",
            a.to_string(),
            obs.installed(&a.key()).map(|v| format!("{}-{v}", a.key())).unwrap_or_else(|| "not installed".into()),
            format!("{pk_origin}; {kind}"),
        ));
    }
    if d.reboot_pending {
        out.push(item(
            "kernel",
            obs.kernel_installed.as_deref().unwrap_or("?").to_string(),
            obs.kernel_running.as_deref().unwrap_or("?").to_string(),
            "installed kernel is not running: reboot pending".into(),
        ));
    }
    if let Some(p) = &d.switch_php {
        out.push(item(
            "php",
            p.to_string(),
            obs.php_active.as_ref().map(|v| v.to_string()).unwrap_or_else(|| "none".into()),
            format!("php from {}; farm-atomic switch", farm.target_origin.php),
        ));
    }
    if let Some(r) = &d.switch_release {
        out.push(item(
            "release",
            r.to_string(),
            obs.release_active.as_ref().map(|v| v.to_string()).unwrap_or_else(|| "none".into()),
            format!(
                "release from {}; farm-atomic switch{}",
                farm.target_origin.release,
                if d.backwards { " (BACKWARDS: rollback)" } else { "" }
            ),
        ));
    }
    out
}
