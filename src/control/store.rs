//! Where the controller's memory survives it: the `Store` trait, the redb
//! `Journal` (machines, the daemon) and `MemJournal` (the simulation).

use std::sync::Arc;

use super::journal::{Journal, Loaded, OpRecord, Resolved};
use crate::model::Fleet;
use crate::plan::Memory;
use crate::plan::action::{Action, Outcome};
use crate::plan::named::Named;

/// One action beginning (`outcome` None) or ending, as the controller
/// saves it: the store makes its log record (`OpRecord::of`) if it keeps a log.
#[derive(Clone, Copy, Debug)]
pub struct Op<'a> {
    pub action: &'a Action,
    pub at_ms: u64,
    pub outcome: Option<&'a Outcome>,
}

/// The controller's journal: what it saves is all that survives a crash;
/// what it loads is tied to the fleet by identity (`plan::named`), never by
/// position.
pub trait Store {
    /// The memory of the last run for `fleet`: each entry tied to its object
    /// by identity, the rest reported.
    fn load(&mut self, fleet: &Fleet) -> Result<Loaded, String>;
    /// Persists `memory` of `fleet` and appends `op` to the operations log,
    /// at once (durable when this returns, for a real journal).
    fn save_with(&mut self, memory: &Memory, fleet: &Arc<Fleet>, op: Option<Op<'_>>) -> Result<(), String>;
    /// Persists `memory` of `fleet` with the resolutions that made it.
    fn save_resolved(&mut self, memory: &Memory, fleet: &Arc<Fleet>, resolved: &[Resolved]) -> Result<(), String>;
}

impl Store for &Journal {
    fn load(&mut self, fleet: &Fleet) -> Result<Loaded, String> {
        Journal::load(self, fleet)
    }
    fn save_with(&mut self, memory: &Memory, fleet: &Arc<Fleet>, op: Option<Op<'_>>) -> Result<(), String> {
        let record = op.map(|o| OpRecord::of(fleet, o.action, o.at_ms, o.outcome));
        Journal::save_with(self, memory, fleet, record.as_ref()).map(drop)
    }
    fn save_resolved(&mut self, memory: &Memory, fleet: &Arc<Fleet>, resolved: &[Resolved]) -> Result<(), String> {
        Journal::save_resolved(self, memory, fleet, resolved)
    }
}

/// The resolutions a `MemJournal` keeps (the redb journal keeps as many).
const RESOLVED_KEPT: usize = super::journal::RESOLVED_KEPT as usize;

/// A journal in memory, for the deterministic simulation: it holds the last
/// saved memory with the fleet it was saved for, and a new controller
/// (after a crash, possibly under another spec) loads it through the same
/// identity mapping as the redb journal (`Named::of` then `resolve`), so a
/// restart under a reordered or renamed spec is what it would be on a
/// machine. Nothing else survives the controller.
#[derive(Clone, Debug, Default)]
pub struct MemJournal {
    saved: Option<(Memory, Arc<Fleet>)>,
    /// Operations logged (begins and ends).
    pub ops: u64,
    /// What opens and new specs could not carry over, oldest first.
    pub resolved: Vec<Resolved>,
}

impl MemJournal {
    fn keep(&mut self, memory: &Memory, fleet: &Arc<Fleet>) {
        match &mut self.saved {
            Some((m, f)) if Arc::ptr_eq(f, fleet) => m.clone_from(memory),
            slot => *slot = Some((memory.clone(), Arc::clone(fleet))),
        }
    }
}

impl Store for MemJournal {
    fn load(&mut self, fleet: &Fleet) -> Result<Loaded, String> {
        let Some((memory, saved_for)) = &self.saved else {
            return Ok(Loaded { memory: Memory::default(), resolutions: Vec::new(), format: super::journal::FORMAT });
        };
        let (memory, resolutions) = Named::of(memory, saved_for).resolve(fleet);
        Ok(Loaded { memory, resolutions, format: super::journal::FORMAT })
    }
    fn save_with(&mut self, memory: &Memory, fleet: &Arc<Fleet>, op: Option<Op<'_>>) -> Result<(), String> {
        self.keep(memory, fleet);
        self.ops += u64::from(op.is_some());
        Ok(())
    }
    fn save_resolved(&mut self, memory: &Memory, fleet: &Arc<Fleet>, resolved: &[Resolved]) -> Result<(), String> {
        self.keep(memory, fleet);
        self.resolved.extend(resolved.iter().cloned());
        let over = self.resolved.len().saturating_sub(RESOLVED_KEPT);
        self.resolved.drain(..over);
        Ok(())
    }
}
