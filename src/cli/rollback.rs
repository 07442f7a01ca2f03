//! `drover rollback-node <node> --snapshot <name>`: the operator's rollback
//! of one node's root filesystem to a snapshot drover took before an
//! upgrade. Never automatic. Refused unless the node is out of service and
//! the name is drover's; takes the lease (one drover per fleet); journals
//! the rollback before it starts and as it goes (operations log and the
//! node's record that `drover status` and `/status` show); the node stays
//! out of the LB.

use super::{Cli, exit, real};
use crate::control::journal::{Journal, OpEvent, OpRecord};
use crate::control::lease::{FileLeases, LeaseStore};
use crate::model::{Fleet, NodeId};
use crate::observe::Admin;
use crate::plan::Memory;
use crate::plan::memory::{RollbackRecord, RollbackState};
use crate::real::snapshot::is_drover_name;

#[derive(Debug, Clone, clap::Args)]
pub struct RollbackArgs {
    /// The node, by name.
    pub node: String,
    /// The snapshot to roll back to: one drover took (`drover status` lists them; `drover-YYYYmmddTHHMMSSZ`).
    #[arg(long, value_name = "NAME")]
    pub snapshot: String,
    #[command(flatten)]
    pub real: real::RealArgs,
}

/// Why the command stops before touching the node (exit 1).
fn refuse(msg: impl std::fmt::Display) -> u8 {
    eprintln!("refused: {msg}");
    exit::ERROR
}

/// The operations log record of the rollback (not a planner action).
fn op(fleet: &Fleet, n: NodeId, name: &str, at_ms: u64, outcome: Option<String>) -> OpRecord {
    let node = &fleet.nodes[n as usize].name;
    OpRecord {
        seq: 0,
        at_ms,
        event: if outcome.is_some() { OpEvent::End } else { OpEvent::Begin },
        action: format!("{node}: roll back the root filesystem to {name} (operator)"),
        kind: "rollback_node".into(),
        subject: node.clone(),
        outcome,
    }
}

/// Why node `n` may not be rolled back now, if it may not: it must be out of
/// service (its server in maint, or failed in the journal and not ready),
/// and not in a window of drover's.
pub fn not_out_of_service(memory: &Memory, n: NodeId, admin: Admin, name: &str) -> Option<String> {
    if memory.node_ops.contains_key(&n) || memory.in_flight.contains(&crate::plan::action::Subject::Node(n)) {
        return Some(format!("node {name} is in a window of drover's; let it end (or fail) first"));
    }
    let failed = memory.failed_nodes.contains_key(&n);
    match admin {
        Admin::Maint => None,
        Admin::Drain if failed => None,
        Admin::Ready => Some(format!(
            "node {name} is in service (its LB server is ready): put it in maint first \
             (`set server <farm>/{name} state maint` on the site's HAProxy)"
        )),
        _ => Some(format!("node {name} is draining, not out of service: put its LB server in maint first")),
    }
}

pub fn run(cli: &Cli, args: &RollbackArgs) -> u8 {
    let Some(fleet) = super::load_fleet(cli) else {
        return exit::ERROR;
    };
    let Some(n) = fleet.nodes.iter().position(|x| x.name == args.node).map(|i| i as NodeId) else {
        return refuse(format!("no node {:?} in the spec", args.node));
    };
    let name = args.snapshot.as_str();
    if !is_drover_name(name) {
        return refuse(format!(
            "{name:?} is not a snapshot drover took: drover rolls back only to its own (drover-YYYYmmddTHHMMSSZ)"
        ));
    }
    let node = &fleet.nodes[n as usize];
    let profile = &fleet.profiles[node.profile as usize];
    if profile.snapshot.is_none() {
        return refuse(format!("profile {} of node {} declares no snapshot method", profile.name, node.name));
    }
    let state_dir = match args.real.state_dir() {
        Ok(d) => d,
        Err(e) => return refuse(e),
    };
    // One drover per fleet: a running daemon holds the lease.
    let _lease = match FileLeases::new(&state_dir).try_acquire(&crate::control::lease::this_process()) {
        Ok(l) => l,
        Err(e) => return refuse(e),
    };
    let journal = Journal::new(&state_dir.join(crate::control::journal::FILE));
    let mut memory = match journal.load(&fleet) {
        Ok(l) => l.memory,
        Err(e) => return refuse(e),
    };
    let rt = match real::runtime() {
        Ok(rt) => rt,
        Err(e) => return refuse(e),
    };
    rt.block_on(async {
        let rf = match real::connect(&fleet, &cli.specs, &args.real).await {
            Ok(rf) => rf,
            Err(e) => return refuse(e),
        };
        let code = rollback(&rf, &fleet, &journal, &mut memory, n, name).await;
        real::disconnect(&rf).await;
        code
    })
}

async fn rollback(
    rf: &crate::real::fleet::RealFleet,
    fleet: &Fleet,
    journal: &Journal,
    memory: &mut Memory,
    n: NodeId,
    name: &str,
) -> u8 {
    let node = &fleet.nodes[n as usize].name;
    let observed = match rf.observe().await {
        Ok(o) => o,
        Err(e) => return refuse(e),
    };
    let o = &observed.nodes[n as usize];
    if !o.reachable {
        return refuse(format!("node {node} does not answer over SSH"));
    }
    if let Some(why) = not_out_of_service(memory, n, o.lb.admin, node) {
        return refuse(why);
    }
    let known = memory.snapshots.get(&n).is_some_and(|v| v.iter().any(|s| s.name == name));
    eprintln!(
        "rolling node {node} back to {name} ({}); it stays out of the LB",
        if known { "taken by drover, in the journal" } else { "not in the journal: the node must list it" }
    );
    let now = crate::control::now_ms();
    let mut record =
        RollbackRecord { snapshot: name.to_string(), at_ms: now, state: RollbackState::Started, since_ms: now };
    let save = |memory: &mut Memory, record: &RollbackRecord, op: OpRecord| {
        memory.rollbacks.insert(n, record.clone());
        journal.save_with(memory, fleet, Some(&op)).map(drop)
    };
    if let Err(e) = save(memory, &record, op(fleet, n, name, now, None)) {
        return refuse(e);
    }
    // Journaled from inside: the node's part ended, the reboot starts.
    let mut pending: Option<String> = None;
    let result = rf.rollback_node(n, name, |said| pending = Some(said.to_string())).await;
    let end = crate::control::now_ms();
    if let Some(said) = &pending {
        // The reboot was asked for: the record says so even if the wait fails.
        record.state = RollbackState::RebootPending(said.clone());
        record.since_ms = end;
    }
    let (code, outcome) = match result {
        Ok(done) => {
            record.state = RollbackState::Done;
            record.since_ms = end;
            println!("node {node}: rolled back to {name} and rebooted ({})", done.said);
            println!(
                "node {node} stays out of the LB: put it back in service when it is right (drover then treats it as any node)"
            );
            (exit::OK, "ok".to_string())
        }
        Err(e) => {
            eprintln!("error: {}", e.message);
            if pending.is_none() {
                record.state = RollbackState::Failed(e.message.clone());
                record.since_ms = end;
            }
            (exit::ERROR, format!("failed: {}", e.message))
        }
    };
    if let Err(e) = save(memory, &record, op(fleet, n, name, end, Some(outcome))) {
        eprintln!("error: {e}");
        return exit::ERROR;
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::memory::{NodeOp, NodePhase};

    #[test]
    fn a_node_in_service_or_in_a_window_is_never_rolled_back() {
        let mut m = Memory::default();
        assert!(not_out_of_service(&m, 1, Admin::Ready, "n").unwrap().contains("in service"));
        assert!(not_out_of_service(&m, 1, Admin::Drain, "n").unwrap().contains("draining"));
        assert_eq!(not_out_of_service(&m, 1, Admin::Maint, "n"), None);
        m.failed_nodes.insert(1, "upgrade: boom".into());
        assert_eq!(not_out_of_service(&m, 1, Admin::Drain, "n"), None);
        // Failed, but its server serves again (drover puts it back in maint first).
        assert!(not_out_of_service(&m, 1, Admin::Ready, "n").is_some());
        m.node_ops.insert(1, NodeOp { phase: NodePhase::Upgrading, since_ms: 0, healthy: false, snapshot: None });
        assert!(not_out_of_service(&m, 1, Admin::Maint, "n").unwrap().contains("window"));
    }
}
