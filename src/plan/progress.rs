//! A rollout's progress as things that begin and end: what waits (and until
//! when), which farm windows open, which member waves run. Derived from
//! consecutive planner passes (`Pass::blocked`, each with its `Cause`) and
//! the memory's open windows, as *changes* between passes: a driver that
//! plans after every event gets a line when a wait or a wave starts or
//! stops, never one per pass. Grouped fleet-wide, per site or per farm,
//! never per node, so the output stays bounded whatever the fleet's size.
//! The simulation and the real `reconcile --once` print the same events.
//!
//! Pure: no I/O, no clock (time is an argument).

use std::collections::{BTreeMap, BTreeSet};

use super::{Blocked, Cause, Memory, Pass, Subject};
use crate::model::{FarmId, Fleet, NodeId, SiteId};

/// What a group of blocked subjects waits for: the unit of a wait's
/// begin and end. Capacity waits are per site (each site has its own
/// floor and `max_farms_down`); the others are fleet-wide.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct WaitKey {
    pub cause: Cause,
    pub site: Option<SiteId>,
}

/// One change in the rollout's progress.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Subjects began waiting for `key`: how many farms and nodes, one
    /// example (its subject and the planner's reason), and when the wait ends by itself
    /// if that is known (a soak's end, a change window's opening).
    WaitBegan { key: WaitKey, farms: usize, nodes: usize, subject: String, reason: String, until_ms: Option<u64> },
    /// The end of an ongoing wait became known or moved.
    WaitUntil { key: WaitKey, until_ms: Option<u64> },
    /// Nothing waits for `key` any more; it had waited since `since_ms`.
    WaitEnded { key: WaitKey, since_ms: u64 },
    /// A farm left the LB for its window (switch, or disruptive work no
    /// node-level window can do).
    FarmOut { farm: FarmId },
    /// The first node-level window of member wave `member` opened.
    WaveBegan { member: u32 },
    /// No node-level window of wave `member` is open any more; `nodes`
    /// went through it since it began.
    WaveEnded { member: u32, nodes: usize },
}

#[derive(Clone, Debug)]
struct OpenWait {
    since_ms: u64,
    until_ms: Option<u64>,
}

/// The progress state carried from one pass to the next.
#[derive(Clone, Debug, Default)]
pub struct Tracker {
    waits: BTreeMap<WaitKey, OpenWait>,
    farms_out: BTreeSet<FarmId>,
    /// Open waves: the nodes seen in each since it began.
    waves: BTreeMap<u32, BTreeSet<NodeId>>,
}

/// The site of a blocked subject, if it has one.
fn site_of(fleet: &Fleet, b: &Blocked) -> Option<SiteId> {
    match b.on? {
        Subject::Farm(f) => fleet.farms.get(f as usize).map(|f| f.site),
        Subject::Node(n) => fleet.nodes.get(n as usize).map(|n| n.site),
    }
}

impl Tracker {
    /// The events between the previous pass and `pass` at `now_ms`, with
    /// `memory` as it stands once the pass's actions were started (its
    /// farm and node windows). Order: waits that ended, windows and waves,
    /// waits that began or moved.
    pub fn step(&mut self, fleet: &Fleet, pass: &Pass, memory: &Memory, now_ms: u64) -> Vec<Event> {
        let mut events = Vec::new();

        // Waits, grouped.
        struct Group<'p> {
            farms: usize,
            nodes: usize,
            example: &'p Blocked,
            until_ms: Option<u64>,
            /// Some subject's wait has no known end.
            unknown_end: bool,
        }
        let mut groups: BTreeMap<WaitKey, Group> = BTreeMap::new();
        for b in &pass.blocked {
            let site = if b.cause == Cause::Capacity { site_of(fleet, b) } else { None };
            let key = WaitKey { cause: b.cause, site };
            let g = groups.entry(key).or_insert(Group {
                farms: 0,
                nodes: 0,
                example: b,
                until_ms: None,
                unknown_end: false,
            });
            match b.on {
                Some(Subject::Node(_)) => g.nodes += 1,
                _ => g.farms += 1,
            }
            match b.until_ms {
                // Everything waits until the last of them.
                Some(t) => g.until_ms = Some(g.until_ms.map_or(t, |u| u.max(t))),
                None => g.unknown_end = true,
            }
        }
        let ended: Vec<WaitKey> = self.waits.keys().filter(|k| !groups.contains_key(k)).copied().collect();
        for key in ended {
            if let Some(w) = self.waits.remove(&key) {
                events.push(Event::WaitEnded { key, since_ms: w.since_ms });
            }
        }

        // Farm windows.
        self.farms_out.retain(|f| memory.farm_ops.contains_key(f));
        for &f in memory.farm_ops.keys() {
            if (f as usize) < fleet.farms.len() && self.farms_out.insert(f) {
                events.push(Event::FarmOut { farm: f });
            }
        }

        // Member waves (node-level windows).
        let mut open: BTreeMap<u32, Vec<NodeId>> = BTreeMap::new();
        for &n in memory.node_ops.keys() {
            if let Some(node) = fleet.nodes.get(n as usize) {
                open.entry(node.member).or_default().push(n);
            }
        }
        let done: Vec<u32> = self.waves.keys().filter(|m| !open.contains_key(m)).copied().collect();
        for member in done {
            if let Some(nodes) = self.waves.remove(&member) {
                events.push(Event::WaveEnded { member, nodes: nodes.len() });
            }
        }
        for (member, nodes) in open {
            let seen = self.waves.entry(member).or_insert_with(|| {
                events.push(Event::WaveBegan { member });
                BTreeSet::new()
            });
            seen.extend(nodes);
        }

        // Waits that began or whose end moved.
        for (key, g) in groups {
            let until_ms = if g.unknown_end { None } else { g.until_ms };
            match self.waits.get_mut(&key) {
                None => {
                    self.waits.insert(key, OpenWait { since_ms: now_ms, until_ms });
                    events.push(Event::WaitBegan {
                        key,
                        farms: g.farms,
                        nodes: g.nodes,
                        subject: g.example.subject.clone(),
                        reason: g.example.reason.clone(),
                        until_ms,
                    });
                }
                Some(w) if w.until_ms != until_ms => {
                    w.until_ms = until_ms;
                    events.push(Event::WaitUntil { key, until_ms });
                }
                Some(_) => {}
            }
        }
        events
    }
}

fn count(farms: usize, nodes: usize) -> String {
    match (farms, nodes) {
        (f, 0) => format!("{f} farm(s)"),
        (0, n) => format!("{n} node(s)"),
        (f, n) => format!("{f} farm(s) and {n} node(s)"),
    }
}

/// `H:MM:SS` of `ms` since the start (the simulation's clock).
pub fn hms(ms: u64) -> String {
    let s = ms / 1000;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// A minutes-or-hours rendering of a policy duration.
fn span(ms: u64) -> String {
    let m = ms / 60_000;
    if m >= 60 && m % 60 == 0 {
        format!("{}h", m / 60)
    } else if m > 0 {
        format!("{m}m")
    } else {
        format!("{}s", ms / 1000)
    }
}

impl Event {
    /// The progress line (without its timestamp); `at` renders an instant
    /// of the fleet's clock as the caller's lines do.
    pub fn line(&self, fleet: &Fleet, at: &dyn Fn(u64) -> String) -> String {
        let site = |k: &WaitKey| k.site.and_then(|s| fleet.sites.get(s as usize)).map_or("?", |s| s.name.as_str());
        let soak = span(fleet.policy.soak.as_millis() as u64);
        match self {
            Event::WaitBegan { key, farms, nodes, subject, reason, until_ms } => {
                let who = count(*farms, *nodes);
                match key.cause {
                    Cause::Preproduction => match until_ms {
                        Some(t) => format!(
                            "waiting: production gated on preproduction soak until {} ({soak}): {who} wait",
                            at(*t)
                        ),
                        None => format!(
                            "waiting: production gated on preproduction: it has not run the new values yet, then soaks {soak}: {who} wait"
                        ),
                    },
                    Cause::ChangeWindow => format!(
                        "waiting for the change window{}: disruptive and farm-level work of {who} waits",
                        until_ms.map(|t| format!(", opens {}", at(t))).unwrap_or_else(|| " (none ever opens)".into())
                    ),
                    Cause::Capacity => {
                        format!("waiting: site {} at its capacity limits: {who} wait ({subject}: {reason})", site(key))
                    }
                    Cause::Staging => format!("waiting: {who} wait for PHP trees and releases staged on every node"),
                    Cause::NodeWindows => {
                        format!("waiting: {who} wait for their node-level windows to close before the farm switch")
                    }
                    Cause::Operator => format!("waiting for the operator: {who} ({subject}: {reason})"),
                    Cause::Halted => format!("halting ({reason}): nothing new starts, what runs finishes"),
                    Cause::Migration => format!("waiting: {who} wait for a release migration ({reason})"),
                }
            }
            Event::WaitUntil { key, until_ms } => match (key.cause, until_ms) {
                (Cause::Preproduction, Some(t)) => {
                    format!("waiting: production gated on preproduction soak until {} ({soak})", at(*t))
                }
                (Cause::ChangeWindow, Some(t)) => format!("waiting for the change window, opens {}", at(*t)),
                (_, Some(t)) => format!("waiting: until {}", at(*t)),
                (_, None) => "waiting: its end is not known yet".to_string(),
            },
            Event::WaitEnded { key, since_ms } => {
                let since = at(*since_ms);
                match key.cause {
                    Cause::Preproduction => format!("gate passed: production may start (gated since {since})"),
                    Cause::ChangeWindow => format!("change window open: waiting work may start (waited since {since})"),
                    Cause::Capacity => format!("site {}: nothing waits for capacity any more", site(key)),
                    Cause::Staging => "staged: no farm waits for staging any more".to_string(),
                    Cause::NodeWindows => "node-level windows closed: no farm switch waits for them".to_string(),
                    Cause::Operator => format!("no longer waiting for the operator (since {since})"),
                    Cause::Halted => "no longer halted".to_string(),
                    Cause::Migration => format!("migration done: no switch waits for it (waited since {since})"),
                }
            }
            Event::FarmOut { farm } => {
                let f = &fleet.farms[*farm as usize];
                let t = fleet.farm_target(*farm);
                format!(
                    "farm {} out of the LB for its window: {} node(s) to php {} release {}, its sessions move to the site's other farms",
                    f.name,
                    f.nodes.len(),
                    t.php,
                    t.release
                )
            }
            Event::WaveBegan { member } => format!(
                "wave {member} begins: member {member} of each farm drained, upgraded, back in (at most max_unavailable per farm)"
            ),
            Event::WaveEnded { member, nodes } => format!("wave {member} done: {nodes} node(s)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{FarmOp, FarmPhase, NodeOp, NodePhase};
    use crate::sim::fleetgen::{Shape, fleet};

    fn blocked(on: Subject, cause: Cause, until_ms: Option<u64>) -> Blocked {
        Blocked { subject: format!("{on:?}"), reason: format!("{cause:?}"), cause, until_ms, on: Some(on) }
    }

    fn pass(blocked: Vec<Blocked>) -> Pass {
        Pass { blocked, ..Pass::default() }
    }

    fn farm_op(since_ms: u64) -> FarmOp {
        FarmOp::new(FarmPhase::Leaving, since_ms, 100)
    }

    fn node_op(since_ms: u64) -> NodeOp {
        NodeOp { phase: NodePhase::Draining, since_ms, healthy: false, snapshot: None }
    }

    /// The production farms of a generated fleet (preproduction comes last).
    fn prod_farms(fleet: &Fleet) -> Vec<FarmId> {
        (0..fleet.farms.len() as FarmId)
            .filter(|&f| {
                fleet.sites[fleet.farms[f as usize].site as usize].environment == crate::model::Environment::Production
            })
            .collect()
    }

    /// The soak: the wait begins without a known end, learns it, repeats
    /// nothing while it lasts, and ends (gate passed) in the pass where the
    /// first production farm goes out, before that farm's line.
    #[test]
    fn a_soak_wait_begins_learns_its_end_and_ends_once() {
        let fleet = fleet(&Shape::default()).unwrap();
        let prod = prod_farms(&fleet);
        let gated =
            |until| pass(prod.iter().map(|&f| blocked(Subject::Farm(f), Cause::Preproduction, until)).collect());
        let mut t = Tracker::default();
        let mem = Memory::default();
        let e = t.step(&fleet, &gated(None), &mem, 0);
        assert!(matches!(&e[..], [Event::WaitBegan { until_ms: None, farms, .. }] if *farms == prod.len()), "{e:?}");
        assert_eq!(t.step(&fleet, &gated(None), &mem, 1_000), vec![], "no repetition");
        let key = WaitKey { cause: Cause::Preproduction, site: None };
        assert_eq!(
            t.step(&fleet, &gated(Some(2_000_000)), &mem, 200_000),
            vec![Event::WaitUntil { key, until_ms: Some(2_000_000) }]
        );
        assert_eq!(t.step(&fleet, &gated(Some(2_000_000)), &mem, 300_000), vec![]);
        // The gate passes: the first farm goes out, the others wait for capacity.
        let mut mem = Memory::default();
        mem.farm_ops.insert(prod[0], farm_op(2_000_000));
        let site = fleet.farms[prod[0] as usize].site;
        let rest = prod[1..].iter().map(|&f| blocked(Subject::Farm(f), Cause::Capacity, None)).collect();
        let e = t.step(&fleet, &pass(rest), &mem, 2_000_000);
        assert_eq!(e[0], Event::WaitEnded { key, since_ms: 0 }, "{e:?}");
        assert_eq!(e[1], Event::FarmOut { farm: prod[0] }, "{e:?}");
        assert!(
            e[2..].iter().all(|e| matches!(e, Event::WaitBegan { key: WaitKey { cause: Cause::Capacity, .. }, .. }))
        );
        assert!(e[2..].iter().any(|e| matches!(e, Event::WaitBegan { key, .. } if key.site == Some(site))), "{e:?}");
        let line = e[0].line(&fleet, &|ms| format!("t{ms}"));
        assert_eq!(line, "gate passed: production may start (gated since t0)");
    }

    /// Capacity waits are per site; a farm window that stays open is
    /// reported once; waves begin and end with their node windows.
    #[test]
    fn capacity_waits_are_per_site_and_waves_begin_and_end() {
        let fleet = fleet(&Shape { prod_sites: 2, ..Shape::default() }).unwrap();
        let prod = prod_farms(&fleet);
        let (a, b) = (
            prod[0],
            *prod.iter().find(|&&f| fleet.farms[f as usize].site != fleet.farms[prod[0] as usize].site).unwrap(),
        );
        let mut t = Tracker::default();
        let both = pass(vec![
            blocked(Subject::Farm(a), Cause::Capacity, None),
            blocked(Subject::Farm(b), Cause::Capacity, None),
        ]);
        let e = t.step(&fleet, &both, &Memory::default(), 0);
        assert_eq!(e.len(), 2, "one wait per site: {e:?}");
        let only_b = pass(vec![blocked(Subject::Farm(b), Cause::Capacity, None)]);
        let e = t.step(&fleet, &only_b, &Memory::default(), 10);
        let site_a = fleet.farms[a as usize].site;
        assert_eq!(
            e,
            vec![Event::WaitEnded { key: WaitKey { cause: Cause::Capacity, site: Some(site_a) }, since_ms: 0 }]
        );

        // Member 1 of two farms, then member 2 of one while the other's member 1 still runs.
        let n = |f: FarmId, i: usize| fleet.farms[f as usize].nodes[i];
        let mut mem = Memory::default();
        mem.node_ops.insert(n(a, 0), node_op(20));
        mem.node_ops.insert(n(b, 0), node_op(20));
        assert_eq!(
            t.step(&fleet, &only_b, &mem, 20),
            vec![Event::WaveBegan { member: fleet.nodes[n(a, 0) as usize].member }]
        );
        mem.node_ops.remove(&n(a, 0));
        mem.node_ops.insert(n(a, 1), node_op(30));
        let m2 = fleet.nodes[n(a, 1) as usize].member;
        assert_eq!(t.step(&fleet, &only_b, &mem, 30), vec![Event::WaveBegan { member: m2 }]);
        mem.node_ops.clear();
        let m1 = fleet.nodes[n(a, 0) as usize].member;
        assert_eq!(
            t.step(&fleet, &pass(vec![]), &mem, 40),
            vec![
                Event::WaitEnded {
                    key: WaitKey { cause: Cause::Capacity, site: Some(fleet.farms[b as usize].site) },
                    since_ms: 0
                },
                Event::WaveEnded { member: m1, nodes: 2 },
                Event::WaveEnded { member: m2, nodes: 1 },
            ]
        );
        // Farm windows: reported when they open, once.
        mem.farm_ops.insert(a, farm_op(50));
        assert_eq!(t.step(&fleet, &pass(vec![]), &mem, 50), vec![Event::FarmOut { farm: a }]);
        assert_eq!(t.step(&fleet, &pass(vec![]), &mem, 60), vec![]);
    }
}
