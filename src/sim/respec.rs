//! The simulated world under a changed spec (`Sim::respec`): farms and nodes
//! reordered, renamed, added or removed, as when drover restarts after a Git
//! commit. The world is re-indexed to the new spec's positions by identity,
//! never by position:
//!
//! - A machine is its site and SSH endpoint (`address`, `ssh_port`): found in
//!   the new spec, it keeps its whole state (packages, releases, LB admin,
//!   requests in progress, boot, death, ...) whatever its new position, name,
//!   member index or farm label. A machine the world does not know is a new
//!   one, provisioned from its farm's image: a clone of a sibling (see
//!   `representative`) with a fresh boot, in service, no requests. A machine
//!   no longer in the spec leaves the world (out of the LB configuration):
//!   its requests in progress and the actions on it are dropped.
//! - A farm (its LB state: admin, weight, sessions, round-robin state) is its
//!   site and name. A new name whose known machines all come from one farm of
//!   the site that is no longer in the spec is that farm renamed (the same
//!   machines behind a new label: HAProxy keeps the pseudo-server's state
//!   across a reload only by name, but the operator moved the label, not the
//!   servers); any other new farm starts ready with its spec weight.
//!   Sessions whose cookie farm left are displaced: HAProxy sends them to
//!   another farm, and what they had seen was served by servers drover no
//!   longer manages, so the checker starts their release history over. A
//!   site the change leaves with no farm taking sessions (the farms that
//!   served removed while the others were out for their switch) fails
//!   requests by the operator's doing: they count as lost to a fault, not
//!   as drover's violations, until a farm of the site takes sessions again.
//! - A site is its name (a new one starts its traffic, a removed one's
//!   sessions end).
//!
//! What drover's journal knows crosses by its own identity (`plan::named`: a
//! node by site, farm, name and address; a farm by site and name). The world
//! mirrors it for what the checker holds about drover: a failure learnt of an
//! object whose journal identity changed is forgotten (the journal closes it,
//! the object is observed afresh), and a server out of the LB whose journal
//! identity changed is *held*: drover closes its window and leaves it out
//! until an operator returns it, so the checker does not count it as out
//! for drover's work (capacity), nor as "left out without having failed".

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;

use std::cmp::Reverse;

use super::{Driver, InFlight, NONE_SEEN, Session, Sim, SimFarm, SimNode, kernel_of, packages_of};
use crate::model::{FarmId, Fleet, NodeId, SiteId};
use crate::observe::{Admin, Health};
use crate::plan::{Action, Outcome, Subject};

/// What a respec did, by name.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Respec {
    pub at_ms: u64,
    /// Machines of the new spec the world knew (whatever their new position or name).
    pub nodes_kept: usize,
    /// New machines: (name, the node it was cloned from, or `initial` for the spec's starting state).
    pub nodes_added: Vec<(String, String)>,
    /// Machines no longer in the spec, by their former name.
    pub nodes_removed: Vec<String>,
    /// (former name, new name) of kept machines.
    pub nodes_renamed: Vec<(String, String)>,
    /// (node, former farm, new farm) of kept machines under another farm label
    /// (a farm renamed moves all of its nodes).
    pub nodes_moved: Vec<(String, String, String)>,
    pub farms_added: Vec<String>,
    pub farms_removed: Vec<String>,
    /// (former name, new name): the same machines behind a new label.
    pub farms_renamed: Vec<(String, String)>,
    pub sites_added: Vec<String>,
    pub sites_removed: Vec<String>,
    /// Some node or farm has another position than before.
    pub reindexed: bool,
    /// Servers out of the LB whose journal identity changed: left out (see the module doc).
    pub held: Vec<String>,
    /// Sites left with no farm taking new sessions (see `Respecs::unserved_sites`).
    pub sites_unserved: Vec<String>,
    /// Sessions whose cookie farm left.
    pub sessions_displaced: u32,
    /// Requests in progress on machines that left.
    pub requests_dropped: u32,
    /// Actions running (or ended, not collected) on subjects that left.
    pub actions_dropped: Vec<String>,
}

/// What the world keeps about respecs (a field of `Sim`).
#[derive(Debug, Default)]
pub(super) struct Respecs {
    /// Nodes and farms held by a respec (positions in the spec in force).
    pub(super) held_nodes: BTreeSet<NodeId>,
    pub(super) held_farms: BTreeSet<FarmId>,
    /// Sites a respec left with no farm taking new sessions, where some
    /// farm took them before: their failed requests are the spec's doing
    /// (counted as lost to faults) until a farm takes sessions again.
    pub(super) unserved_sites: BTreeSet<SiteId>,
    /// External driver: outcomes for executors whose action's subject left.
    departed: BTreeMap<u64, Outcome>,
    pub(super) log: Vec<Respec>,
    /// Journal entries the built-in reconciler closed at a respec.
    pub(super) closed: Vec<String>,
}

/// A machine: site name and SSH endpoint.
type MachineKey<'a> = (&'a str, &'a str, u16);

fn machine(fleet: &Fleet, n: usize) -> MachineKey<'_> {
    let node = &fleet.nodes[n];
    (fleet.sites[node.site as usize].name.as_str(), node.address.as_str(), node.ssh_port)
}

/// The journal's identity of a node (`plan::named::NodeRef`).
fn journal_node(fleet: &Fleet, n: usize) -> (&str, &str, &str, &str) {
    let node = &fleet.nodes[n];
    (
        fleet.sites[node.site as usize].name.as_str(),
        fleet.farms[node.farm as usize].name.as_str(),
        node.name.as_str(),
        node.address.as_str(),
    )
}

/// How positions of the spec in force map to the new spec's, by identity.
struct Map {
    site: Vec<Option<SiteId>>,
    /// Old node → new node (machine kept).
    node: Vec<Option<NodeId>>,
    /// New node → old node.
    node_back: Vec<Option<NodeId>>,
    /// Old farm → new farm (same name, or renamed).
    farm: Vec<Option<FarmId>>,
    farm_back: Vec<Option<FarmId>>,
    /// New farm carried from an old one under another name.
    renamed: Vec<bool>,
}

impl Map {
    fn new(old: &Fleet, new: &Fleet) -> Map {
        let site_ix: BTreeMap<&str, SiteId> =
            new.sites.iter().enumerate().map(|(i, s)| (s.name.as_str(), i as SiteId)).collect();
        let site: Vec<Option<SiteId>> = old.sites.iter().map(|s| site_ix.get(s.name.as_str()).copied()).collect();
        let mut old_machines: BTreeMap<MachineKey<'_>, NodeId> = BTreeMap::new();
        for n in 0..old.nodes.len() {
            old_machines.entry(machine(old, n)).or_insert(n as NodeId);
        }
        let mut node = vec![None; old.nodes.len()];
        let mut node_back = vec![None; new.nodes.len()];
        for (n, back) in node_back.iter_mut().enumerate() {
            if let Some(&o) = old_machines.get(&machine(new, n))
                && node[o as usize].is_none()
            {
                node[o as usize] = Some(n as NodeId);
                *back = Some(o);
            }
        }
        // Farms by site and name first.
        let old_farms: BTreeMap<(&str, &str), FarmId> = old
            .farms
            .iter()
            .enumerate()
            .map(|(i, f)| ((old.sites[f.site as usize].name.as_str(), f.name.as_str()), i as FarmId))
            .collect();
        let mut farm = vec![None; old.farms.len()];
        let mut farm_back = vec![None; new.farms.len()];
        for (f, nf) in new.farms.iter().enumerate() {
            if let Some(&o) = old_farms.get(&(new.sites[nf.site as usize].name.as_str(), nf.name.as_str())) {
                farm[o as usize] = Some(f as FarmId);
                farm_back[f] = Some(o);
            }
        }
        // Then renames: a new farm whose known machines all come from one
        // old farm of the same site that no new farm carries by name, and
        // that no other new farm claims so.
        let mut claims: BTreeMap<FarmId, Vec<FarmId>> = BTreeMap::new();
        for (f, nf) in new.farms.iter().enumerate() {
            if farm_back[f].is_some() {
                continue;
            }
            let from: BTreeSet<FarmId> =
                nf.nodes.iter().filter_map(|&n| node_back[n as usize]).map(|o| old.nodes[o as usize].farm).collect();
            let mut from = from.into_iter();
            if let (Some(o), None) = (from.next(), from.next())
                && farm[o as usize].is_none()
                && old.sites[old.farms[o as usize].site as usize].name == new.sites[nf.site as usize].name
            {
                claims.entry(o).or_default().push(f as FarmId);
            }
        }
        let mut renamed = vec![false; new.farms.len()];
        for (o, fs) in claims {
            if let [f] = fs[..] {
                farm[o as usize] = Some(f);
                farm_back[f as usize] = Some(o);
                renamed[f as usize] = true;
            }
        }
        Map { site, node, node_back, farm, farm_back, renamed }
    }

    fn node(&self, n: NodeId) -> Option<NodeId> {
        self.node.get(n as usize).copied().flatten()
    }

    fn farm(&self, f: FarmId) -> Option<FarmId> {
        self.farm.get(f as usize).copied().flatten()
    }

    fn subject(&self, s: Subject) -> Option<Subject> {
        match s {
            Subject::Node(n) => self.node(n).map(Subject::Node),
            Subject::Farm(f) => self.farm(f).map(Subject::Farm),
        }
    }

    /// `a` about the same machine or farm in the new spec.
    fn action(&self, a: &Action) -> Option<Action> {
        let mut a = a.clone();
        match &mut a {
            Action::Fetch { node, .. }
            | Action::StagePhp { node, .. }
            | Action::StageRelease { node, .. }
            | Action::InstallOnline { node, .. }
            | Action::SetNode { node, .. }
            | Action::Upgrade { node, .. }
            | Action::Activate { node, .. }
            | Action::HealthCheck { node }
            | Action::MarkFailed { node, .. }
            | Action::Migrate { node, .. }
            | Action::Warmup { node }
            | Action::Snapshot { node, .. } => *node = self.node(*node)?,
            Action::SetFarm { farm, .. } | Action::SetFarmWeight { farm, .. } | Action::FlushCache { farm } => {
                *farm = self.farm(*farm)?
            }
        }
        Some(a)
    }
}

/// Names an action by the spec it was started under.
fn describe(fleet: &Fleet, a: &Action) -> String {
    let on = match a.subject() {
        Subject::Node(n) => fleet.nodes.get(n as usize).map(|n| format!("node {}", n.name)),
        Subject::Farm(f) => fleet.farms.get(f as usize).map(|f| format!("farm {}", f.name)),
    };
    format!("{} on {}", a.kind().name(), on.unwrap_or_else(|| "?".into()))
}

impl Sim<'_> {
    /// The world under the spec `new`, re-indexed by identity (see the
    /// module doc): what is kept keeps its state, what is new joins, what is
    /// gone leaves; every queued event, action in flight, session and the
    /// checker's state follow. `Err` (nothing changed) when the releases the
    /// new spec brings would overflow the release table.
    ///
    /// The built-in driver calls it at a reconciler restart (its journal is
    /// carried separately, `plan::named::carry`); `live::LiveSim::set_fleet`
    /// at a spec change.
    pub fn respec(&mut self, new: Arc<Fleet>) -> Result<Respec, String> {
        let old = Arc::clone(&self.fleet);
        let mut releases: BTreeSet<&crate::model::ReleaseId> = new.targets.iter().map(|t| &t.release).collect();
        if let Some(s) = &new.simulation {
            releases.insert(&s.initial.release);
        }
        let unknown = releases.iter().filter(|r| !self.releases.ids.contains(r)).count();
        if self.releases.ids.len() + unknown > super::Releases::MAX {
            return Err(format!(
                "the simulation has seen {} releases, the most it can rank: restart it",
                self.releases.ids.len()
            ));
        }
        for r in releases {
            self.releases.index(r);
        }
        let map = Map::new(&old, &new);
        let mut r = Respec { at_ms: self.now, ..Respec::default() };
        let served_before: Vec<bool> = (0..old.sites.len()).map(|s| self.takes_sessions(s as SiteId)).collect();

        // Sites.
        for (s, site) in old.sites.iter().enumerate() {
            if map.site[s].is_none() {
                r.sites_removed.push(site.name.clone());
            }
        }
        let known_sites: BTreeSet<SiteId> = map.site.iter().flatten().copied().collect();
        let new_sites: Vec<SiteId> = (0..new.sites.len() as SiteId).filter(|s| !known_sites.contains(s)).collect();
        r.sites_added = new_sites.iter().map(|&s| new.sites[s as usize].name.clone()).collect();

        // Farms.
        for (f, farm) in old.farms.iter().enumerate() {
            if map.farm[f].is_none() {
                r.farms_removed.push(farm.name.clone());
            }
        }
        let mut farms = Vec::with_capacity(new.farms.len());
        for (f, nf) in new.farms.iter().enumerate() {
            match map.farm_back[f] {
                Some(o) => {
                    if map.renamed[f] {
                        r.farms_renamed.push((old.farms[o as usize].name.clone(), nf.name.clone()));
                    }
                    farms.push(self.farms[o as usize].clone());
                }
                None => {
                    r.farms_added.push(nf.name.clone());
                    // The faults apply to new farms as to the first ones.
                    let flush_broken =
                        self.cfg.faults.flush_fail > 0.0 && self.fault_rng.chance(self.cfg.faults.flush_fail);
                    farms.push(SimFarm {
                        admin: Admin::Ready,
                        weight: nf.lb_weight,
                        active: 0,
                        sessions: 0,
                        rr: 0,
                        current: 0,
                        left_ready_at: 0,
                        flush_broken,
                        over_capacity: false,
                    });
                }
            }
        }

        // Machines.
        for (n, node) in old.nodes.iter().enumerate() {
            if map.node[n].is_none() {
                r.nodes_removed.push(node.name.clone());
            }
        }
        let mut nodes: Vec<SimNode> = Vec::with_capacity(new.nodes.len());
        for (n, nn) in new.nodes.iter().enumerate() {
            let capacity = new.profiles.get(nn.profile as usize).map_or(0, |p| p.capacity);
            let mut s = match map.node_back[n] {
                Some(o) => {
                    r.nodes_kept += 1;
                    let on = &old.nodes[o as usize];
                    if on.name != nn.name {
                        r.nodes_renamed.push((on.name.clone(), nn.name.clone()));
                    }
                    let (from, to) = (&old.farms[on.farm as usize].name, &new.farms[nn.farm as usize].name);
                    if from != to {
                        r.nodes_moved.push((nn.name.clone(), from.clone(), to.clone()));
                    }
                    self.nodes[o as usize].clone()
                }
                None => {
                    let (s, from) = self.provision(&old, &new, &map, n as NodeId);
                    r.nodes_added.push((nn.name.clone(), from));
                    s
                }
            };
            s.capacity = capacity;
            nodes.push(s);
        }
        r.reindexed = map.node.iter().enumerate().any(|(o, n)| *n != Some(o as NodeId))
            || old.nodes.len() != new.nodes.len()
            || map.farm.iter().enumerate().any(|(o, f)| *f != Some(o as FarmId))
            || old.farms.len() != new.farms.len();

        // Queued events: requests in progress follow their machine (counted
        // in its farm now), departed subjects' events go.
        let mut gone_sessions: BTreeSet<u32> = BTreeSet::new();
        for (sid, s) in self.sessions.iter_mut().enumerate() {
            if s.ended {
                if map.site.get(s.site as usize).copied().flatten().is_none() {
                    s.site = 0;
                }
                continue;
            }
            match map.site.get(s.site as usize).copied().flatten() {
                None => {
                    // Its site left: the session ends, its events go.
                    *s = Session { site: 0, farm: None, seen: NONE_SEEN, ended: true };
                    gone_sessions.insert(sid as u32);
                }
                Some(site) => {
                    s.site = site;
                    if let Some(f) = s.farm {
                        match map.farm(f) {
                            Some(nf) => s.farm = Some(nf),
                            None => {
                                s.farm = None;
                                s.seen = NONE_SEEN;
                                r.sessions_displaced += 1;
                            }
                        }
                    }
                }
            }
        }
        if self.driver == Driver::External {
            self.free_sessions.extend(gone_sessions.iter().copied());
        }
        let queue = std::mem::take(&mut self.queue).into_vec();
        for Reverse((t, seq, ev)) in queue {
            use super::Ev;
            let ev = match ev {
                Ev::Arrive(s) => map.site.get(s as usize).copied().flatten().map(Ev::Arrive),
                Ev::RequestEnd(n, _) => match map.node(n) {
                    Some(n) => Some(Ev::RequestEnd(n, new.nodes[n as usize].farm)),
                    None => {
                        r.requests_dropped += 1;
                        None
                    }
                },
                Ev::NodeDeath(n) => map.node(n).map(Ev::NodeDeath),
                Ev::Request(sid) | Ev::SessionEnd(sid) if gone_sessions.contains(&sid) => None,
                ev => Some(ev),
            };
            if let Some(ev) = ev {
                self.queue.push(Reverse((t, seq, ev)));
            }
        }
        // `active` is exactly the requests in progress: count them again.
        for s in &mut nodes {
            s.active = 0;
        }
        for f in &mut farms {
            f.active = 0;
            f.sessions = 0;
        }
        for Reverse((_, _, ev)) in self.queue.iter() {
            if let super::Ev::RequestEnd(n, f) = *ev {
                nodes[n as usize].active += 1;
                farms[f as usize].active += 1;
            }
        }
        for s in &self.sessions {
            if let (false, Some(f)) = (s.ended, s.farm) {
                farms[f as usize].sessions += 1;
            }
        }

        // Actions: those on kept subjects go on, the others are dropped (an
        // executor still waiting learns that its subject left).
        let why = |a: &Action| Outcome::Failed(format!("{} left the spec while this ran", describe(&old, a)));
        let mut in_flight = BTreeMap::new();
        for (id, f) in std::mem::take(&mut self.in_flight) {
            match map.action(&f.action) {
                Some(action) => {
                    in_flight.insert(id, InFlight { action, ..f });
                }
                None => {
                    r.actions_dropped.push(describe(&old, &f.action));
                    if self.driver == Driver::External && !f.abandoned {
                        self.respecs.departed.insert(id, why(&f.action));
                    }
                }
            }
        }
        self.in_flight = in_flight;
        let mut completed = BTreeMap::new();
        for (id, f) in std::mem::take(&mut self.completed) {
            match map.action(&f.action) {
                Some(action) => {
                    completed.insert(id, InFlight { action, ..f });
                }
                None => {
                    r.actions_dropped.push(describe(&old, &f.action));
                    self.respecs.departed.insert(id, why(&f.action));
                }
            }
        }
        self.completed = completed;

        // What the checker holds about drover, by the journal's identity.
        let same_node = |o: NodeId, n: NodeId| journal_node(&old, o as usize) == journal_node(&new, n as usize);
        let same_farm = |n: FarmId| map.farm_back[n as usize].is_some() && !map.renamed[n as usize];
        self.failed = self.failed.iter().filter_map(|&o| map.node(o).filter(|&n| same_node(o, n))).collect();
        self.failed_farms = self.failed_farms.iter().filter_map(|&o| map.farm(o).filter(|&f| same_farm(f))).collect();
        let mut held_nodes: BTreeSet<NodeId> = self.respecs.held_nodes.iter().filter_map(|&o| map.node(o)).collect();
        for (n, s) in nodes.iter().enumerate() {
            if let Some(o) = map.node_back[n]
                && s.admin != Admin::Ready
                && !same_node(o, n as NodeId)
            {
                held_nodes.insert(n as NodeId);
            }
        }
        let mut held_farms: BTreeSet<FarmId> = self.respecs.held_farms.iter().filter_map(|&o| map.farm(o)).collect();
        for (f, s) in farms.iter().enumerate() {
            if map.renamed[f] && s.admin != Admin::Ready {
                held_farms.insert(f as FarmId);
            }
        }
        r.held = held_farms
            .iter()
            .map(|&f| format!("farm {}", new.farms[f as usize].name))
            .chain(held_nodes.iter().map(|&n| format!("node {}", new.nodes[n as usize].name)))
            .collect();
        self.respecs.held_nodes = held_nodes;
        self.respecs.held_farms = held_farms;
        let profile = |p: u32| {
            let name = &old.profiles.get(p as usize)?.name;
            new.profiles.iter().position(|q| q.name == *name).map(|i| i as u32)
        };
        self.gate_since = std::mem::take(&mut self.gate_since)
            .into_iter()
            .filter_map(|((p, c, v), since)| Some(((profile(p)?, c, v), since)))
            .collect();

        // The reconciler's last pass and the serial strategy, by identity;
        // the progress tracker (a reconciler's in-memory state) starts over.
        self.blocked.retain_mut(|b| match b.on {
            None => true,
            Some(s) => match map.subject(s) {
                Some(s) => {
                    b.on = Some(s);
                    true
                }
                None => false,
            },
        });
        let history = std::mem::take(&mut self.started);
        self.started =
            history.into_iter().filter_map(|s| Some(super::Started { action: map.action(&s.action)?, ..s })).collect();
        if let Some(serial) = self.serial.as_mut() {
            let mut order: Vec<NodeId> = serial.order.iter().filter_map(|&n| map.node(n)).collect();
            order.extend((0..new.nodes.len() as NodeId).filter(|&n| map.node_back[n as usize].is_none()));
            serial.order = order;
            serial.step = serial.step.iter().filter_map(|(&n, &s)| Some((map.node(n)?, s))).collect();
        }

        self.nodes = nodes;
        self.farms = farms;
        self.fleet = Arc::clone(&new);
        // A farm the new spec leaves over its capacity is the spec's doing:
        // counted once it is back under and goes over again.
        for f in 0..self.farms.len() {
            let over =
                self.farms[f].admin != Admin::Maint && self.farms[f].sessions as u64 > self.farm_capacity(f as FarmId);
            self.farms[f].over_capacity = over;
        }
        let mut unserved: BTreeSet<SiteId> =
            self.respecs.unserved_sites.iter().filter_map(|&s| map.site.get(s as usize).copied().flatten()).collect();
        for (o, &before) in served_before.iter().enumerate() {
            if let Some(s) = map.site[o]
                && before
                && !self.takes_sessions(s)
            {
                unserved.insert(s);
            }
        }
        r.sites_unserved = unserved.iter().map(|&s| new.sites[s as usize].name.clone()).collect();
        self.respecs.unserved_sites = unserved;
        if self.cfg.traffic {
            for &s in &new_sites {
                let env = new.sites[s as usize].environment;
                for _ in 0..self.site_sessions(env) {
                    let sid = self.new_session(s);
                    let first = self.now + (self.traffic_rng.f64() * self.cfg.think_s * 1000.0) as u64;
                    self.at(first, super::Ev::Request(sid));
                }
                let gap = self.gap_ms(env);
                let at = self.now + gap;
                self.at(at, super::Ev::Arrive(s));
            }
        }
        self.say(&format!(
            "new spec: {} nodes kept, {} added, {} removed, {} renamed; {} farms added, {} removed, {} renamed{}",
            r.nodes_kept,
            r.nodes_added.len(),
            r.nodes_removed.len(),
            r.nodes_renamed.len(),
            r.farms_added.len(),
            r.farms_removed.len(),
            r.farms_renamed.len(),
            if r.held.is_empty() { String::new() } else { format!("; held: {}", r.held.join(", ")) }
        ));
        self.respecs.log.push(r.clone());
        Ok(r)
    }

    /// A new machine `n` of the new spec, provisioned from its farm's image:
    /// a clone of `representative`'s software (packages, fetched, PHP trees
    /// and active version, releases and active release), booted on the
    /// kernel it has installed, in service (a server added to a farm
    /// listener's configuration starts ready), healthy, no requests. With no
    /// machine to clone, the spec's starting state (as at the start).
    /// Returns the state and what it was cloned from.
    fn provision(&self, old: &Fleet, new: &Fleet, map: &Map, n: NodeId) -> (SimNode, String) {
        let nn = &new.nodes[n as usize];
        let capacity = new.profiles.get(nn.profile as usize).map_or(0, |p| p.capacity);
        let fresh = |s: &SimNode| SimNode {
            dead: false,
            down_until: 0,
            disrupted_until: 0,
            packages: s.packages.clone(),
            fetched: s.fetched.clone(),
            kernel_running: kernel_of(new, &s.packages),
            boot: 1,
            php_installed: s.php_installed.clone(),
            php_active: s.php_active.clone(),
            releases: s.releases.clone(),
            release_active: s.release_active.clone(),
            release: s.release,
            admin: Admin::Ready,
            active: 0,
            left_ready_at: 0,
            unhealthy: false,
            last_health: Health::Passing,
            needs_health: false,
            cold: false,
            capacity,
        };
        if let Some(o) = self.representative(old, new, map, n) {
            return (fresh(&self.nodes[o as usize]), old.nodes[o as usize].name.clone());
        }
        let t = new.simulation.as_ref().map(|s| &s.initial).unwrap_or_else(|| new.node_target(n));
        let packages = packages_of(t);
        let s = SimNode {
            dead: false,
            down_until: 0,
            disrupted_until: 0,
            fetched: packages.clone(),
            kernel_running: kernel_of(new, &packages),
            packages,
            boot: 1,
            php_installed: vec![t.php.clone()],
            php_active: Some(t.php.clone()),
            releases: vec![t.release.clone()],
            release_active: Some(t.release.clone()),
            release: self.releases.ids.iter().position(|r| *r == t.release).map_or(NONE_SEEN, |i| i as u16),
            admin: Admin::Ready,
            active: 0,
            left_ready_at: 0,
            unhealthy: false,
            last_health: Health::Passing,
            needs_health: false,
            cold: false,
            capacity,
        };
        (s, "initial".into())
    }

    /// The machine a new node `n` is cloned from (an old position): a kept
    /// machine of its own farm (as the new spec draws it), else of another
    /// farm of its site (the site's farms in the new spec's order); within
    /// those, one in service (up, ready in a ready farm, health-checked,
    /// not failed) before one that is not, the same profile before another,
    /// then the first by member order. Sessions on a serving farm thus meet
    /// the release that farm serves.
    fn representative(&self, old: &Fleet, new: &Fleet, map: &Map, n: NodeId) -> Option<NodeId> {
        let nn = &new.nodes[n as usize];
        let in_service = |o: NodeId| {
            let s = &self.nodes[o as usize];
            let farm = &self.farms[old.nodes[o as usize].farm as usize];
            !s.dead
                && s.down_until <= self.now
                && s.disrupted_until <= self.now
                && s.admin == Admin::Ready
                && !s.needs_health
                && !s.unhealthy
                && farm.admin == Admin::Ready
                && !self.failed.contains(&o)
        };
        let best = |members: &mut dyn Iterator<Item = NodeId>| {
            members
                .filter_map(|m| map.node_back[m as usize].map(|o| (m, o)))
                .enumerate()
                .min_by_key(|&(i, (m, o))| (!in_service(o), new.nodes[m as usize].profile != nn.profile, i))
                .map(|(_, (_, o))| o)
        };
        let own = &new.farms[nn.farm as usize].nodes;
        if let Some(o) = best(&mut own.iter().copied().filter(|&m| m != n)) {
            return Some(o);
        }
        let site = &new.sites[nn.site as usize];
        best(
            &mut site
                .farms
                .iter()
                .filter(|&&f| f != nn.farm)
                .flat_map(|&f| new.farms[f as usize].nodes.iter().copied()),
        )
    }

    /// Some farm of site `s` takes new sessions (ready, weight > 0, a node serving).
    fn takes_sessions(&self, s: SiteId) -> bool {
        self.fleet.sites[s as usize].farms.iter().any(|&f| {
            let farm = &self.farms[f as usize];
            farm.admin == Admin::Ready && farm.weight > 0 && self.farm_nbsrv(f) > 0
        })
    }

    /// Drops held servers that are back in service (whoever returned them):
    /// from then on they are drover's again.
    pub(super) fn prune_held(&mut self) {
        let nodes = &self.nodes;
        let farms = &self.farms;
        self.respecs.held_nodes.retain(|&n| nodes.get(n as usize).is_some_and(|s| s.admin != Admin::Ready));
        self.respecs.held_farms.retain(|&f| farms.get(f as usize).is_some_and(|s| s.admin != Admin::Ready));
    }

    /// Servers held by a respec and still out, by name (for the report).
    pub(super) fn held_names(&self) -> Vec<String> {
        let fleet = &*self.fleet;
        let farms = self
            .respecs
            .held_farms
            .iter()
            .filter(|&&f| self.farms.get(f as usize).is_some_and(|s| s.admin != Admin::Ready))
            .map(|&f| format!("farm {}", fleet.farms[f as usize].name));
        let nodes = self
            .respecs
            .held_nodes
            .iter()
            .filter(|&&n| self.nodes.get(n as usize).is_some_and(|s| s.admin != Admin::Ready))
            .map(|&n| format!("node {}", fleet.nodes[n as usize].name));
        farms.chain(nodes).collect()
    }

    /// External driver: the outcome of action `id` for its executor, also
    /// when a respec dropped it (its subject left).
    pub(super) fn collect(&mut self, id: u64) -> Option<Outcome> {
        if let Some(o) = self.respecs.departed.remove(&id) {
            return Some(o);
        }
        self.deliver(id)
    }

    /// External driver: the executor of action `id` is gone.
    pub(super) fn release(&mut self, id: u64) {
        if self.respecs.departed.remove(&id).is_none() {
            self.abandon(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cmp::Reverse;
    use std::sync::Arc;

    use super::super::fleetgen::{self, Change, Shape, Variation, vary};
    use super::super::{Ev, Report, Sim, SimConfig};
    use crate::model::{Fleet, NodeId};
    use crate::observe::Admin;

    fn shape() -> Shape {
        Shape {
            prod_sites: 1,
            farms_per_site: 3,
            nodes_per_farm: 3,
            profiles: 2,
            max_unavailable: 1,
            max_farms_down: 1,
            capacity_floor: 0.3,
            soak: "2m".into(),
            failure_budget: 2,
            change: Change::ALL,
            sessions_per_site: 200,
        }
    }

    /// A built-in simulation started as `run` starts it, driven by hand.
    struct Driven<'f> {
        sim: Sim<'f>,
        bound_s: f64,
    }

    impl<'f> Driven<'f> {
        fn new(fleet: &Fleet, seed: u64) -> Driven<'f> {
            let mut sim = Sim::new(fleet, SimConfig::new(fleet, seed));
            let initial = sim.observe();
            let bound_s = crate::plan::bound::lower_bound(&sim.fleet, &initial, &sim.cfg.estimates).total_s;
            sim.start_world(bound_s);
            sim.at(0, Ev::Plan);
            sim.plan_pending = true;
            let resync = (sim.cfg.resync_s * 1000.0) as u64;
            sim.at(resync, Ev::Resync);
            Driven { sim, bound_s }
        }

        /// Events until `stop` holds (true) or the run ends (false).
        fn until(&mut self, stop: impl Fn(&Sim) -> bool) -> bool {
            let max = (self.sim.cfg.max_virtual_s * 1000.0) as u64;
            while let Some(Reverse((t, _, ev))) = self.sim.queue.pop() {
                if t > max {
                    return false;
                }
                self.sim.now = t;
                self.sim.handle(ev);
                if stop(&self.sim) {
                    return true;
                }
                if self.sim.finished() {
                    return false;
                }
            }
            false
        }

        /// The reconciler is killed now and restarts under `new`; the run goes on to its end.
        fn restart_under(mut self, new: Fleet) -> Report {
            self.sim.cfg.respecs.push(Arc::new(new));
            let now = self.sim.now;
            self.sim.at(now, Ev::Crash);
            self.until(|_| false);
            self.sim.report(self.bound_s)
        }
    }

    fn assert_clean(r: &Report) {
        assert_eq!(r.violations, 0, "{:?}: {:#?}", r.violations_by_invariant, r.violation_samples);
    }

    #[test]
    fn a_reorder_permutes_the_world_and_the_run_converges() {
        let s = shape();
        let fleet = fleetgen::fleet(&s).unwrap();
        let v = Variation { seed: 5, reorder_farms: true, reorder_nodes: true, ..Variation::default() };
        let reordered = vary(&s, &fleet, &v).unwrap();
        let mut d = Driven::new(&fleet, 1);
        assert!(d.until(|sim| sim.now > 3 * 60_000 && sim.farms.iter().any(|f| f.admin != Admin::Ready)));
        let before = d.sim.observe();
        let r = d.sim.respec(Arc::new(reordered.clone())).unwrap();
        assert!(r.reindexed, "{r:?}");
        assert_eq!(r.nodes_kept, fleet.nodes.len());
        assert!(
            r.nodes_added.is_empty() && r.nodes_removed.is_empty() && r.farms_renamed.is_empty() && r.held.is_empty()
        );
        let after = d.sim.observe();
        // The observation is the old one permuted, by name.
        let mut moved = 0;
        for (n, node) in reordered.nodes.iter().enumerate() {
            let o = fleet.nodes.iter().position(|m| m.name == node.name).unwrap();
            moved += usize::from(o != n);
            assert_eq!(format!("{:?}", after.nodes[n]), format!("{:?}", before.nodes[o]), "{}", node.name);
        }
        assert!(moved > 0, "the variation moved no node");
        for (f, farm) in reordered.farms.iter().enumerate() {
            let o = fleet.farms.iter().position(|g| g.name == farm.name).unwrap();
            assert_eq!(format!("{:?}", after.farms[f]), format!("{:?}", before.farms[o]), "{}", farm.name);
        }
        // Through a restart, the run converges without violation.
        for seed in 1..=3 {
            let mut d = Driven::new(&fleet, seed);
            assert!(d.until(|sim| sim.now > 3 * 60_000 && sim.farms.iter().any(|f| f.admin != Admin::Ready)));
            let r = d.restart_under(reordered.clone());
            assert_clean(&r);
            assert!(r.converged, "seed {seed}: {:?} {:?}", r.verdict, r.blocked);
            assert_eq!(r.respecs.len(), 1);
            assert!(r.journal_closed.is_empty(), "{:?}", r.journal_closed);
        }
    }

    #[test]
    fn a_node_removed_mid_drain_leaves_and_the_rollout_goes_on() {
        // Packages that need a restart and nothing to switch: node windows, no farm window.
        let s = Shape { change: Change { disruptive_restart: true, online: true, ..Change::NONE }, ..shape() };
        let fleet = fleetgen::fleet(&s).unwrap();
        let mut d = Driven::new(&fleet, 2);
        let out = |sim: &Sim| {
            sim.nodes
                .iter()
                .enumerate()
                .position(|(n, m)| m.admin == Admin::Drain && sim.fleet.nodes[n].name.starts_with('s'))
                .map(|n| n as NodeId)
        };
        assert!(d.until(|sim| out(sim).is_some()), "no production node drained");
        let n = out(&d.sim).unwrap();
        let name = fleet.nodes[n as usize].name.clone();
        let active = d.sim.nodes[n as usize].active;
        let without = fleetgen::edit(&s, &fleet, |farms| {
            for f in farms {
                f.nodes.retain(|m| m.name != name);
            }
        })
        .unwrap();
        let r = d.restart_under(without);
        assert_clean(&r);
        let respec = &r.respecs[0];
        assert_eq!(respec.nodes_removed, vec![name.clone()]);
        assert!(respec.requests_dropped >= active, "{respec:?}");
        assert!(r.journal_closed.iter().any(|c| c.contains(&name)), "{:?}", r.journal_closed);
        assert!(r.held.is_empty(), "{:?}", r.held);
        assert!(r.converged, "{:?} {:?}", r.verdict, r.blocked);
    }

    /// A production farm (sites `s*`) out of the LB for its switch.
    fn production_farm_out(sim: &Sim) -> Option<usize> {
        sim.farms
            .iter()
            .enumerate()
            .position(|(f, farm)| farm.admin == Admin::Maint && sim.fleet.farms[f].name.starts_with('s'))
    }

    #[test]
    fn a_farm_renamed_mid_switch_is_held_not_reworked() {
        let s = shape();
        let fleet = fleetgen::fleet(&s).unwrap();
        let mut d = Driven::new(&fleet, 3);
        // Mid-switch: the farm is out and some node of it already switched.
        assert!(d.until(|sim| production_farm_out(sim).is_some_and(|f| {
            let release = &sim.fleet.farm_target(f as u32).release;
            sim.fleet.farms[f].nodes.iter().any(|&n| sim.nodes[n as usize].release_active.as_ref() == Some(release))
        })));
        let f = production_farm_out(&d.sim).unwrap();
        let name = fleet.farms[f].name.clone();
        let renamed = format!("{name}-new");
        let new = fleetgen::edit(&s, &fleet, |farms| {
            for g in farms.iter_mut().filter(|g| g.name == name) {
                g.name = renamed.clone();
            }
        })
        .unwrap();
        let sessions = d.sim.farms[f].sessions;
        let r = d.restart_under(new);
        assert_clean(&r);
        let respec = &r.respecs[0];
        assert_eq!(respec.farms_renamed, vec![(name.clone(), renamed.clone())]);
        assert!(respec.farms_added.is_empty() && respec.farms_removed.is_empty());
        assert_eq!(respec.nodes_kept, fleet.nodes.len());
        assert_eq!(respec.sessions_displaced, 0, "the renamed farm kept its {sessions} sessions");
        // The journal closed the switch (a new name is another object): the
        // farm stays out, held, and the run says so instead of converging.
        assert!(r.journal_closed.iter().any(|c| c.contains(&name)), "{:?}", r.journal_closed);
        // (Its nodes may all have switched already: nothing else is left, and
        // the run may settle with the farm held.)
        assert!(r.held.contains(&format!("farm {renamed}")), "{:?}", r.held);
    }

    #[test]
    fn an_added_node_is_a_clone_of_its_farm_in_service() {
        let s = shape();
        let fleet = fleetgen::fleet(&s).unwrap();
        let mut d = Driven::new(&fleet, 4);
        // Some farm switched and back in service, another not yet.
        let done = |sim: &Sim| {
            sim.fleet.farms.iter().enumerate().position(|(f, farm)| {
                let t = sim.fleet.farm_target(f as u32);
                farm.name.starts_with('s')
                    && sim.farms[f].admin == Admin::Ready
                    && farm.nodes.iter().all(|&n| sim.nodes[n as usize].release_active.as_ref() == Some(&t.release))
            })
        };
        assert!(d.until(|sim| done(sim).is_some()));
        let f = done(&d.sim).unwrap();
        let farm = fleet.farms[f].name.clone();
        let new = fleetgen::edit(&s, &fleet, |farms| {
            let g = farms.iter_mut().find(|g| g.name == farm).unwrap();
            let mut n = g.nodes[0].clone();
            n.name = format!("{farm}-added");
            n.address = format!("{farm}-added.example.net");
            n.member = 99;
            g.nodes.push(n);
        })
        .unwrap();
        let r = d.sim.respec(Arc::new(new.clone())).unwrap();
        let added = new.nodes.iter().position(|n| n.name == format!("{farm}-added")).unwrap();
        let (name, from) = &r.nodes_added[0];
        assert_eq!(name, &format!("{farm}-added"));
        let sibling = new.nodes.iter().position(|n| &n.name == from).unwrap();
        assert_eq!(new.nodes[sibling].farm, new.nodes[added].farm, "cloned from its own farm");
        let (a, b) = (&d.sim.nodes[added], &d.sim.nodes[sibling]);
        assert_eq!(a.packages, b.packages);
        assert_eq!((&a.php_active, &a.release_active, a.release), (&b.php_active, &b.release_active, b.release));
        assert_eq!(a.admin, Admin::Ready);
        assert_eq!((a.boot, a.active, a.dead, a.needs_health), (1, 0, false, false));
        assert_eq!(a.release_active.as_ref(), Some(&new.node_target(added as NodeId).release), "the farm's release");
        // And the rollout goes on with it, without violation.
        d.until(|_| false);
        let r = d.sim.report(d.bound_s);
        assert_clean(&r);
        assert!(r.converged, "{:?} {:?}", r.verdict, r.blocked);
    }

    #[test]
    fn a_site_whose_serving_farms_are_removed_fails_requests_by_the_spec_not_by_drover() {
        let s = shape();
        let fleet = fleetgen::fleet(&s).unwrap();
        let mut d = Driven::new(&fleet, 6);
        assert!(d.until(|sim| production_farm_out(sim).is_some()));
        let keep = fleet.farms[production_farm_out(&d.sim).unwrap()].name.clone();
        // Only the farm out for its switch is left in the site.
        let new = fleetgen::edit(&s, &fleet, |farms| farms.retain(|f| f.site != "s0" || f.name == keep)).unwrap();
        let r = d.restart_under(new);
        assert_clean(&r);
        assert_eq!(r.respecs[0].sites_unserved, vec!["s0".to_string()]);
        assert!(r.failed_requests > 0, "the site served nothing for a while");
        assert!(r.converged, "{:?} {:?}", r.verdict, r.blocked);
    }

    /// Every change at each of two restarts (whatever they hit).
    fn changed_twice(s: &Shape, fleet: &Fleet) -> Vec<Arc<Fleet>> {
        let all = |seed| Variation {
            seed,
            reorder_farms: true,
            reorder_nodes: true,
            rename_farm: true,
            rename_node: true,
            add_node: true,
            remove_node: true,
            remove_farm: true,
        };
        let first = vary(s, fleet, &all(1)).unwrap();
        let second = vary(s, &first, &all(2)).unwrap();
        vec![Arc::new(first), Arc::new(second)]
    }

    #[test]
    fn same_seed_same_respecs_same_run() {
        let s = Shape { farms_per_site: 4, ..shape() };
        let fleet = fleetgen::fleet(&s).unwrap();
        let respecs = changed_twice(&s, &fleet);
        let run = || {
            let mut cfg = SimConfig::new(&fleet, 9);
            cfg.faults.crash = 2;
            cfg.respecs = respecs.clone();
            Sim::new(&fleet, cfg).run()
        };
        let (a, b) = (run(), run());
        assert!(!a.respecs.is_empty(), "no restart happened");
        assert_clean(&a);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
    }

    #[test]
    fn variations_change_what_they_say() {
        let s = Shape { farms_per_site: 3, ..shape() };
        let fleet = fleetgen::fleet(&s).unwrap();
        let names = |f: &Fleet| f.farms.iter().map(|g| g.name.clone()).collect::<Vec<_>>();
        let one = |v: Variation| vary(&s, &fleet, &v).unwrap();
        let removed = one(Variation { seed: 1, remove_farm: true, ..Variation::default() });
        assert_eq!(removed.farms.len(), fleet.farms.len() - 1);
        let removed = one(Variation { seed: 1, remove_node: true, ..Variation::default() });
        assert_eq!(removed.nodes.len(), fleet.nodes.len() - 1);
        let added = one(Variation { seed: 1, add_node: true, ..Variation::default() });
        assert_eq!(added.nodes.len(), fleet.nodes.len() + 1);
        let renamed = one(Variation { seed: 1, rename_farm: true, ..Variation::default() });
        assert_eq!(names(&renamed).iter().filter(|n| !names(&fleet).contains(n)).count(), 1);
        let reordered = one(Variation { seed: 1, reorder_farms: true, ..Variation::default() });
        assert_ne!(names(&reordered), names(&fleet));
        let mut sorted = names(&reordered);
        sorted.sort();
        let mut before = names(&fleet);
        before.sort();
        assert_eq!(sorted, before);
        // Deterministic.
        let v = Variation { seed: 7, reorder_nodes: true, add_node: true, rename_node: true, ..Variation::default() };
        assert_eq!(format!("{:?}", one(v.clone())), format!("{:?}", one(v)));
        // A site with two farms keeps both.
        let two = Shape { farms_per_site: 2, ..shape() };
        let base = fleetgen::fleet(&two).unwrap();
        let kept = vary(&two, &base, &Variation { seed: 3, remove_farm: true, ..Variation::default() }).unwrap();
        assert_eq!(kept.farms.len(), base.farms.len());
    }
}
