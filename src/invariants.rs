//! The product's invariants as checkable predicates, independent of the
//! planner: the simulation reports every request and every action start to a
//! `Checker`, which records each violation with the instant and the subject.
//! Pure: it sees only what it is told.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Which invariant of PRODUCT.md was broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Invariant {
    /// 1: nodes or farms out beyond the policy, a farm past its capacity, no serving farm.
    Capacity,
    /// 2: a session served an older release than it had seen, or a farm switched while serving.
    MonotonicSessions,
    /// 3: a disruptive step on a node still taking traffic, or back in without a health check.
    DrainedBeforeDisrupted,
    /// 4: a production change before preproduction ran it for the soak time.
    PreproductionFirst,
    /// 5: new work after the budget was spent, or a healthy node left out.
    FailureBudget,
    /// Service: a request failed.
    Service,
    /// Release hooks: a switch before its environment's expand migration, a
    /// contract while a node of the environment serves another release, a
    /// migration applied twice, a cold answer from a node not warmed up.
    Hooks,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Violation {
    pub at_ms: u64,
    pub invariant: Invariant,
    pub what: String,
}

/// Collects violations; keeps the first few in full and counts all.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Checker {
    pub count: u64,
    pub by_invariant: BTreeMap<String, u64>,
    pub samples: Vec<Violation>,
    pub requests: u64,
    pub failed_requests: u64,
    /// Failed requests explained by injected node deaths.
    pub lost_to_faults: u64,
}

pub const KEEP_SAMPLES: usize = 20;

impl Checker {
    pub fn violate(&mut self, at_ms: u64, invariant: Invariant, what: impl FnOnce() -> String) {
        self.count += 1;
        let key = serde_json::to_value(invariant).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        *self.by_invariant.entry(key).or_default() += 1;
        if self.samples.len() < KEEP_SAMPLES {
            self.samples.push(Violation { at_ms, invariant, what: what() });
        }
    }

    /// Invariant 2, on every request: `seen` is the newest release rank the
    /// session has seen, `served` the rank of the node that answers.
    pub fn request(&mut self, at_ms: u64, seen: u16, served: u16, session: u64, node: &str) {
        self.requests += 1;
        if served < seen {
            self.violate(at_ms, Invariant::MonotonicSessions, || {
                format!("session {session} saw release rank {seen} but {node} served rank {served}")
            });
        }
    }

    pub fn failed_request(&mut self, at_ms: u64, why: impl FnOnce() -> String) {
        self.requests += 1;
        self.failed_requests += 1;
        self.violate(at_ms, Invariant::Service, why);
    }

    /// A request lost to an injected fault (a node died): counted, not a violation of drover's.
    pub fn request_lost_to_fault(&mut self) {
        self.requests += 1;
        self.failed_requests += 1;
        self.lost_to_faults += 1;
    }

    pub fn ok(&self) -> bool {
        self.count == 0
    }
}

/// Node-level capacity: nodes out for drover's work in one farm.
pub fn node_capacity_ok(out_in_farm: u32, max_unavailable: u32) -> bool {
    out_in_farm <= max_unavailable
}

/// Farm-level capacity: farms out in a site, and some farm still serving.
pub fn farm_capacity_ok(out_in_site: u32, max_farms_down: u32, serving_farms: u32) -> bool {
    out_in_site <= max_farms_down && serving_farms >= 1
}

/// A disruptive step may run only on a node that gets no traffic and has no
/// request in progress (or whose drain timed out).
pub fn drained(takes_traffic: bool, active: u32, drain_timed_out: bool) -> bool {
    !takes_traffic && (active == 0 || drain_timed_out)
}
