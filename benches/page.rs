//! The status page's render cost on the reference fleet (`specs/`, 518
//! nodes) mid-rollout: `daemon::web::page` (what `/` renders) and
//! `daemon::web::live` (what the page polls), each as a ratio to the
//! baseline measured in the same run: serialising the same status document
//! as `/status` does (`serde_json::to_string`). Fails above 50 ms.
//!
//! The document is the one the daemon publishes: the reference fleet as the
//! simulation starts it (every node with drift), four production farms in
//! their windows (one node each drained, in its window, switched), the
//! history full (farm windows, actions, progress points) and a blocked item
//! per farm.
//!
//! `cargo bench --bench page` (add `-- --quick` for a short run).

use std::path::Path;
use std::time::{Duration, Instant};

use drover::daemon::state::{ActionRecord, BlockedItem, DaemonStatus, HISTORY_ACTIONS, HISTORY_POINTS};
use drover::daemon::web;
use drover::plan::Memory;
use drover::plan::memory::{FarmOp, FarmPhase, NodeOp, NodePhase};
use drover::sim::{Sim, SimConfig};

fn document() -> DaemonStatus {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("specs");
    let files = drover::spec::load_dir(&dir).expect("the reference spec");
    let fleet = drover::spec::validate::check(&files).unwrap_or_else(|_| panic!("the reference spec is valid"));
    let mut observed = Sim::new(&fleet, SimConfig::new(&fleet, 1)).observe();
    let mut memory = Memory::default();
    // Four production farms in their windows.
    let farms: Vec<u32> = (0..fleet.farms.len() as u32)
        .filter(|&f| fleet.farms[f as usize].nodes.len() == 16)
        .step_by(8)
        .take(4)
        .collect();
    for &f in &farms {
        memory.farm_ops.insert(f, FarmOp { switched: true, ..FarmOp::new(FarmPhase::Working, 0, 100) });
        let nodes = &fleet.farms[f as usize].nodes;
        memory
            .node_ops
            .insert(nodes[0], NodeOp { phase: NodePhase::Upgrading, since_ms: 0, healthy: false, snapshot: None });
        observed.nodes[nodes[0] as usize].lb.admin = drover::observe::Admin::Maint;
    }
    let mut view = drover::status::view(&fleet, &observed, &memory, &Default::default());
    let cells = web::annotate(&mut view, &fleet, &observed, &memory);
    let mut st = DaemonStatus { version: "bench".into(), fleet_kind: "simulated".into(), ..Default::default() };
    st.spec.generation = 1;
    st.spec.digest = "0123456789abcdef".into();
    st.rollout.phase = "rolling".into();
    st.rollout.passes = 1000;
    st.rollout.nodes_total = fleet.nodes.len() as u64;
    st.rollout.nodes_at_target = cells["at-target"];
    st.rollout.cells = cells;
    st.rollout.running = (0..8).map(|i| format!("farm ams1-f0{i}: install dev-libs/openssl-3.0.15-r1")).collect();
    st.rollout.blocked_items = fleet
        .farms
        .iter()
        .map(|f| BlockedItem {
            subject: format!("farm {}", f.name),
            cause: "capacity".into(),
            reason: "max_farms_down 1 reached in its site".into(),
            until_ms: Some(7_200_000),
        })
        .collect();
    st.rollout.last_pass_at_ms = 3_600_000;
    for i in 0..(HISTORY_POINTS as u64 * 2) {
        let open: Vec<(String, String)> = fleet
            .farms
            .iter()
            .skip((i / 20) as usize % fleet.farms.len())
            .take(2)
            .map(|f| ("site".into(), f.name.clone()))
            .collect();
        st.history.pass(i * 1_000, i / 2, &open);
    }
    for i in 0..HISTORY_ACTIONS {
        st.history.finished(ActionRecord {
            action: format!("node ams1-f01-n{i:02}: install dev-libs/openssl-3.0.15-r1 then restart"),
            kind: "install".into(),
            took_ms: 1_700,
            error: (i % 10 == 0).then(|| "emerge exited with 1".into()),
        });
    }
    st.fleet = view;
    st
}

fn median(f: &mut dyn FnMut() -> usize, rounds: usize) -> (Duration, usize) {
    let mut times = Vec::with_capacity(rounds);
    let mut size = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        size = std::hint::black_box(f());
        times.push(t.elapsed());
    }
    times.sort();
    (times[rounds / 2], size)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 21 } else { 201 };
    let st = document();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (json, json_bytes) = median(&mut || serde_json::to_string(&st).unwrap().len(), rounds);
    let (page, page_bytes) = median(&mut || web::page(&st).len(), rounds);
    let (live, _) = median(&mut || web::live(&st).len(), rounds);
    println!(
        "page: {} nodes; /status JSON (baseline) {:.2} ms ({} KiB); page {:.2} ms ({} KiB) = {:.2}x the baseline; \
         /live {:.2} ms = {:.2}x (medians of {rounds})",
        st.rollout.nodes_total,
        ms(json),
        json_bytes / 1024,
        ms(page),
        page_bytes / 1024,
        ms(page) / ms(json),
        ms(live),
        ms(live) / ms(json),
    );
    assert!(ms(page) < 50.0, "the page took {:.1} ms to render (limit 50 ms)", ms(page));
}
