//! One planning pass over generated fleets of 512, 10,000 and 100,000 nodes,
//! every node drifted (kernel, openssl, PHP and release all behind): time per
//! pass and memory (fleet + observation + pass) per node, measured with a
//! counting allocator. Baseline in the same run: computing the diff alone.
//! `--quick` skips the 100,000-node fleet (CI).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use drover::plan::{Estimates, Memory, World};
use drover::sim::fleetgen::{Change, Shape, fleet};
use drover::sim::{Sim, SimConfig};

struct Counting;
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(l.size(), Relaxed) + l.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        CURRENT.fetch_sub(l.size(), Relaxed);
    }
}

#[global_allocator]
static A: Counting = Counting;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let mut sizes = vec![(4, 8, 16), (10, 25, 40)];
    if !quick {
        sizes.push((25, 40, 100));
    }
    println!(
        "{:>8} {:>12} {:>12} {:>10} {:>14} {:>12}",
        "nodes", "pass", "diff only", "ratio", "bytes/node", "actions"
    );
    for (sites, farms, nodes) in sizes {
        let shape = Shape {
            prod_sites: sites,
            farms_per_site: farms,
            nodes_per_farm: nodes,
            profiles: 3,
            change: Change::ALL,
            ..Shape::default()
        };
        let before = CURRENT.load(Relaxed);
        let fleet = fleet(&shape).expect("generated spec is valid");
        let mut cfg = SimConfig::new(&fleet, 1);
        cfg.traffic = false;
        let observed = Sim::new(&fleet, cfg).observe();
        let memory = Memory::default();
        let est = Estimates::default();
        PEAK.store(CURRENT.load(Relaxed), Relaxed);
        let world = World { fleet: &fleet, observed: &observed, memory: &memory, now_ms: 0, estimates: &est };
        let iters = if fleet.nodes.len() > 50_000 { 3 } else { 20 };
        let mut times = Vec::new();
        let mut actions = 0;
        for _ in 0..iters {
            let t = Instant::now();
            let pass = drover::plan::plan(&world);
            times.push(t.elapsed());
            actions = pass.actions.len();
        }
        let peak = PEAK.load(Relaxed) - before;
        let mut base = Vec::new();
        for _ in 0..iters {
            let t = Instant::now();
            for n in 0..fleet.nodes.len() as u32 {
                std::hint::black_box(drover::diff::node_diff(&fleet, n, &observed.nodes[n as usize]));
            }
            base.push(t.elapsed());
        }
        let (p, b) = (median(times), median(base));
        println!(
            "{:>8} {:>10.2}ms {:>10.2}ms {:>9.2}x {:>14} {:>12}",
            fleet.nodes.len(),
            p.as_secs_f64() * 1e3,
            b.as_secs_f64() * 1e3,
            p.as_secs_f64() / b.as_secs_f64().max(1e-9),
            peak / fleet.nodes.len(),
            actions
        );
    }
    println!("targets: 512 nodes < 5 ms, 100,000 nodes < 1 s on one core, < 2 KiB per node");
}
