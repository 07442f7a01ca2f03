//! One planning pass over generated fleets of 512, 10,000 and 100,000 nodes,
//! every node drifted (kernel, openssl, PHP and release all behind): time per
//! pass and memory (fleet + observation + pass) per node, measured with a
//! counting allocator. Baseline in the same run: computing the diff alone.
//! `--quick` skips the 100,000-node fleet (CI).
//!
//! Then many small sites (25 to 200 sites of 8 nodes): a first pass, a pass
//! in mid-rollout and a whole projected rollout, per node and as a ratio to
//! 25 sites (1.0 = linear), and the real `drover plan --simulate` on 200
//! sites. `--quick` stops at 50 sites and skips that 200-site binary run.
//!
//! First of all, what a user waits for: the real binary's `drover plan
//! --simulate` on the reference spec (`specs/`, 518 nodes), end to end,
//! beside `drover validate` on the same spec in the same run (reading and
//! checking the spec: the ratio is what the projection costs), against the
//! target of 2 s. Needs the release binary (`cargo build --release`; it is
//! found next to this bench's executable, in `target/release/`).

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
    reference_end_to_end();
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
    many_sites(quick);
}

/// `sites` production sites of 8 nodes each (4 farms of 2), behind on everything.
fn many_sites_shape(sites: u32) -> Shape {
    Shape {
        prod_sites: sites,
        farms_per_site: 4,
        nodes_per_farm: 2,
        profiles: 2,
        change: Change::ALL,
        ..Shape::default()
    }
}

/// Median time of one pass over `world`.
fn time_pass(world: &World, iters: usize) -> Duration {
    median(
        (0..iters)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(drover::plan::plan(world));
                t.elapsed()
            })
            .collect(),
    )
}

/// Many small sites: 25 to 200 sites of 8 nodes. One pass from the start
/// (everything drifted) and one in mid-rollout (the simulated rollout, with
/// traffic, stopped 15 virtual minutes in: farm windows open, new sessions
/// steered), per pass and per node, with the per-node ratio to 25 sites
/// (1.0 = linear). Then the whole projected rollout of `plan --simulate`
/// (every pass of it, no traffic) the same way, and the real binary on a
/// 200-site spec written to a temporary directory.
fn many_sites(quick: bool) {
    let sizes: &[u32] = if quick { &[25, 50] } else { &[25, 50, 100, 200] };
    println!();
    println!("many sites of 8 nodes: one pass (first, mid-rollout) and the projected rollout");
    println!(
        "{:>6} {:>6} {:>11} {:>9} {:>6} {:>11} {:>9} {:>6} {:>10} {:>9} {:>6}",
        "sites", "nodes", "first", "us/node", "ratio", "mid", "us/node", "ratio", "rollout", "us/node", "ratio"
    );
    let mut base: Option<(f64, f64, f64)> = None;
    for &sites in sizes {
        let fleet = fleet(&many_sites_shape(sites)).expect("generated spec is valid");
        let nodes = fleet.nodes.len() as f64;
        let est = Estimates::default();
        let mut cfg = SimConfig::new(&fleet, 1);
        cfg.traffic = false;
        let observed = Sim::new(&fleet, cfg).observe();
        let memory = Memory::default();
        let first =
            time_pass(&World { fleet: &fleet, observed: &observed, memory: &memory, now_ms: 0, estimates: &est }, 21);
        let (observed, memory, now_ms) = Sim::new(&fleet, SimConfig::new(&fleet, 1)).run_until(15 * 60_000);
        let world = World { fleet: &fleet, observed: &observed, memory: &memory, now_ms, estimates: &est };
        let windows = memory.farm_ops.len() + memory.node_ops.len();
        let mid = time_pass(&world, 21);
        let mut cfg = SimConfig::new(&fleet, 1);
        cfg.traffic = false;
        let t = Instant::now();
        let report = Sim::new(&fleet, cfg).run();
        let rollout = t.elapsed();
        assert!(report.converged && report.violations == 0, "{sites} sites: {report:?}");
        let per = |d: Duration| d.as_secs_f64() * 1e6 / nodes;
        let (f, m, r) = (per(first), per(mid), per(rollout));
        let (bf, bm, br) = *base.get_or_insert((f, m, r));
        println!(
            "{:>6} {:>6} {:>9.2}ms {:>9.2} {:>6.2} {:>9.2}ms {:>9.2} {:>6.2} {:>9.2}s {:>9.0} {:>6.2}   ({windows} windows open mid-rollout)",
            sites,
            nodes,
            first.as_secs_f64() * 1e3,
            f,
            f / bf,
            mid.as_secs_f64() * 1e3,
            m,
            m / bm,
            rollout.as_secs_f64(),
            r,
            r / br
        );
    }
    if !quick {
        end_to_end(200);
    }
}

/// The real binary's `plan --simulate` on a generated spec of `sites` sites.
fn end_to_end(sites: u32) {
    let dir = std::env::temp_dir().join(format!("drover-bench-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("fleet.yaml"), drover::sim::fleetgen::spec_text(&many_sites_shape(sites))).expect("spec");
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/drover");
    if !bin.exists() {
        println!("(build the release binary for the end-to-end figure: cargo build --release)");
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let t = Instant::now();
    let out = std::process::Command::new(&bin)
        .arg("--specs")
        .arg(&dir)
        .args(["plan", "--simulate"])
        .output()
        .expect("run drover");
    let wall = t.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout);
    let projected = text.lines().find(|l| l.contains("projected makespan")).unwrap_or("(no projection)").trim();
    println!("drover plan --simulate, {sites} sites of 8 nodes: {:.2}s wall; {projected}", wall.as_secs_f64());
}

/// The release binary next to this bench's executable
/// (`target/release/deps/plan-*` -> `target/release/drover`).
fn drover_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("bench executable path");
    let bin = exe.parent().and_then(|deps| deps.parent()).map(|dir| dir.join("drover"));
    match bin {
        Some(bin) if bin.is_file() => bin,
        _ => panic!("the release binary is not built next to {}: run `cargo build --release` first", exe.display()),
    }
}

/// Median wall time of the real binary run with `args` on the reference
/// spec, and its exit code.
fn wall(bin: &std::path::Path, args: &[&str], runs: usize) -> (Duration, Option<i32>) {
    let specs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("specs");
    let mut code = None;
    let times = (0..runs)
        .map(|_| {
            let t = Instant::now();
            let out = std::process::Command::new(bin)
                .arg("--specs")
                .arg(&specs)
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .expect("run drover");
            code = out.code();
            t.elapsed()
        })
        .collect();
    (median(times), code)
}

/// `drover plan --simulate` on the reference spec as a user runs it (the
/// real process, end to end), beside `drover validate` in the same run.
fn reference_end_to_end() {
    let bin = drover_binary();
    let runs = 5;
    let (validate, vcode) = wall(&bin, &["validate"], runs);
    let (plan, pcode) = wall(&bin, &["plan", "--simulate"], runs);
    assert_eq!((vcode, pcode), (Some(0), Some(2)), "validate exits 0, plan --simulate 2 (changes pending)");
    println!(
        "drover plan --simulate, reference spec (518 nodes), real binary: {:.2}s wall (median of {runs}); \
         drover validate on the same spec {:.3}s: the projection costs {:.1}x validate; target < 2 s: {}",
        plan.as_secs_f64(),
        validate.as_secs_f64(),
        plan.as_secs_f64() / validate.as_secs_f64().max(1e-9),
        if plan < Duration::from_secs(2) { "met" } else { "MISSED" }
    );
    println!();
}
