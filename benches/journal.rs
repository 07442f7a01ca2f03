//! The journal's commit latency: `Journal::save_with` (redb, memory and one
//! operations-log record in one durable transaction) against the JSON journal
//! drover wrote before (encode, write a temporary file, fsync, rename, fsync
//! the directory), in the same run, on the same file system, interleaved in
//! rounds so that other load on the machine falls on both alike.
//!
//! The memory is the reference fleet's (specs/, 518 nodes) mid-rollout: the
//! first planning pass's actions in flight, gate evidence recorded, one farm
//! per production site mid-switch, one node per other farm drained, a few
//! failures. `--quick` (CI): 20 saves of each instead of 200.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use drover::control::journal::{Journal, OpRecord};
use drover::observe::Admin;
use drover::plan::action::Action;
use drover::plan::memory::{FarmOp, FarmPhase, NodeOp, NodePhase};
use drover::plan::{Estimates, Memory, World};
use drover::sim::{Sim, SimConfig};

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let saves = if quick { 20 } else { 200 };
    let specs = Path::new(env!("CARGO_MANIFEST_DIR")).join("specs");
    let files = drover::spec::load_dir(&specs).expect("the reference specs load");
    let fleet = drover::spec::validate::check(&files).expect("the reference specs are valid");
    let memory = mid_rollout(&fleet);
    let json_bytes = serde_json::to_vec_pretty(&memory).unwrap().len();

    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("bench-journal-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let t = Instant::now();
    let journal = Journal::open(&dir.join("journal.redb")).unwrap();
    let created = t.elapsed();
    let op = OpRecord::of(&fleet, &Action::SetNode { node: 7, admin: Admin::Drain }, 0, None);

    // Warm both paths (first allocation of the file, directory entries).
    journal.save_with(&memory, &fleet, Some(&op)).unwrap();
    save_json(&dir.join("journal.json"), &memory);

    let (mut redb, mut json) = (Vec::new(), Vec::new());
    let mut m = memory.clone();
    let round = 10;
    for r in 0..saves / round {
        for k in 0..round {
            // Each save differs from the last, as between two actions.
            m.unreachable_since.insert(0, (r * round + k) as u64);
            let t = Instant::now();
            journal.save_with(&m, &fleet, Some(&op)).unwrap();
            redb.push(t.elapsed());
        }
        for k in 0..round {
            m.unreachable_since.insert(0, (r * round + k) as u64);
            let t = Instant::now();
            save_json(&dir.join("journal.json"), &m);
            json.push(t.elapsed());
        }
    }
    drop(journal);
    let redb_file = fs::metadata(dir.join("journal.redb")).map(|m| m.len()).unwrap_or(0);
    let t = Instant::now();
    let reopened = Journal::open(&dir.join("journal.redb")).unwrap();
    assert_eq!(
        reopened.load(&fleet).unwrap().memory,
        Memory { in_flight: Default::default(), ..m.clone() },
        "the journal holds the last save"
    );
    let reopen = t.elapsed();
    drop(reopened);
    let _ = fs::remove_dir_all(&dir);

    println!(
        "journal: reference fleet ({} nodes) mid-rollout: {} in flight, {} node and {} farm windows, {} gate records; \
         memory {:.1} KiB as JSON",
        fleet.nodes.len(),
        memory.in_flight.len(),
        memory.node_ops.len(),
        memory.farm_ops.len(),
        memory.gate.len(),
        json_bytes as f64 / 1024.0
    );
    println!("{saves} saves of each, interleaved in rounds of {round}, on {}", dir.display());
    println!("{:<44} {:>10} {:>10} {:>10}", "", "median", "p90", "max");
    row("redb: memory + log record, one commit", &redb);
    row("JSON: tmp file, fsync, rename, fsync dir", &json);
    println!(
        "ratio redb / JSON (medians): {:.2}x;  redb open (create) {:.1?}, reopen with integrity check + load {:.1?}, \
         file {:.0} KiB",
        median(&redb).as_secs_f64() / median(&json).as_secs_f64().max(1e-9),
        created,
        reopen,
        redb_file as f64 / 1024.0
    );
}

/// drover's JSON journal before redb, as it was written.
fn save_json(path: &Path, memory: &Memory) {
    let dir = path.parent().unwrap();
    let tmp = path.with_extension("tmp");
    let json = serde_json::to_vec_pretty(memory).unwrap();
    let mut f = fs::File::create(&tmp).unwrap();
    f.write_all(&json).unwrap();
    f.sync_all().unwrap();
    fs::rename(&tmp, path).unwrap();
    fs::File::open(dir).and_then(|d| d.sync_all()).unwrap();
}

fn mid_rollout(fleet: &drover::model::Fleet) -> Memory {
    let mut cfg = SimConfig::new(fleet, 1);
    cfg.traffic = false;
    let observed = Sim::new(fleet, cfg).observe();
    let mut memory = Memory::default();
    let now = 3_600_000;
    drover::plan::gate::record(fleet, &observed, &mut memory, now);
    let est = Estimates::default();
    let pass = drover::plan::plan(&World { fleet, observed: &observed, memory: &memory, now_ms: now, estimates: &est });
    for p in &pass.actions {
        let farm = match p.action.subject() {
            drover::plan::action::Subject::Node(n) => Some(fleet.nodes[n as usize].farm),
            drover::plan::action::Subject::Farm(f) => Some(f),
        };
        memory.begin(&p.action, now, farm, 100);
    }
    let mut switching = std::collections::BTreeSet::new();
    for (f, farm) in fleet.farms.iter().enumerate() {
        let f = f as u32;
        if switching.insert(farm.site) {
            let checked = farm.nodes.iter().take(farm.nodes.len() / 2).copied().collect();
            memory.farm_ops.insert(f, FarmOp { checked, switched: true, ..FarmOp::new(FarmPhase::Working, now, 100) });
        } else if let Some(&n) = farm.nodes.first() {
            memory
                .node_ops
                .insert(n, NodeOp { phase: NodePhase::Upgrading, since_ms: now, healthy: false, snapshot: None });
        }
    }
    for n in [11u32, 200, 401] {
        if (n as usize) < fleet.nodes.len() {
            memory.failed_nodes.insert(n, "health check failed after the upgrade: HTTP 502".into());
            memory.unreachable_since.insert(n + 1, now - 60_000);
        }
    }
    memory
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

fn row(name: &str, v: &[Duration]) {
    let mut s = v.to_vec();
    s.sort();
    let ms = |d: Duration| format!("{:.2}ms", d.as_secs_f64() * 1e3);
    println!("{name:<44} {:>10} {:>10} {:>10}", ms(median(v)), ms(s[s.len() * 9 / 10]), ms(*s.last().unwrap()));
}
