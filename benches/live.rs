//! A live rollout of the reference fleet (512 + 6 nodes, traffic on): the
//! production reconcile loop (`reconcile_once`, journal on disk) drives
//! `sim::live::LiveSim` in real time scaled by `--scale` (virtual ms per wall
//! ms, default 600). Prints wall time, the report's figures and the peak
//! resident memory (VmHWM). `--batch` runs `Sim::run()` on the same fleet
//! instead, for the memory the batch simulation needs; `--quick` uses a small
//! generated fleet. The journal goes to `$TMPDIR` and is fsynced before and
//! after every action: on a disk that alone stretches the virtual makespan
//! (`TMPDIR=/dev/shm` takes it out). Past the scale at which the machine can
//! simulate the traffic in time, each look at the world processes a backlog
//! and the reconciler reacts late in virtual time: the ratio shows it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use drover::control::journal::Journal;
use drover::control::{Options, reconcile_once};
use drover::sim::live::LiveSim;
use drover::sim::{Sim, SimConfig};

/// Peak resident set of this process, from /proc (Linux), in KiB.
fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let batch = std::env::args().any(|a| a == "--batch");
    let scale: f64 = arg("--scale").map(|s| s.parse().expect("--scale takes a number")).unwrap_or(600.0);
    let fleet = if quick {
        drover::sim::fleetgen::fleet(&drover::sim::fleetgen::Shape::default()).expect("valid")
    } else {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("specs");
        drover::spec::validate::check(&drover::spec::load_dir(&dir).expect("specs")).expect("valid reference spec")
    };
    let cfg = SimConfig::new(&fleet, 1);
    let loaded = vm_hwm_kib().unwrap_or(0);
    let t0 = Instant::now();
    let report = if batch {
        Sim::new(&fleet, cfg).run()
    } else {
        let live = LiveSim::new(Arc::new(fleet), cfg, scale).expect("a valid live simulation");
        let dir = std::env::temp_dir().join(format!("drover-bench-live-{}", std::process::id()));
        let journal = Journal::new(&dir.join(drover::control::journal::FILE));
        let opts =
            Options { tick: Duration::from_millis(5), stall: Duration::from_secs(30 * 60), stop: Default::default() };
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
        let summary = rt.block_on(reconcile_once(Arc::clone(&live), &journal, &opts, &mut |_| {}));
        let _ = std::fs::remove_dir_all(&dir);
        println!("loop: {:?}, {} actions, {} passes", summary.finish, summary.started, summary.passes);
        live.report()
    };
    let wall = t0.elapsed().as_secs_f64();
    let peak = vm_hwm_kib().unwrap_or(0);
    println!(
        "{}: wall {wall:.1} s; converged {}, makespan {:.0} s (virtual), lower bound {:.0} s, ratio {:.3}",
        if batch { "batch".to_string() } else { format!("live at scale {scale}") },
        report.converged,
        report.makespan_s,
        report.lower_bound_s,
        report.ratio
    );
    println!(
        "{} requests, {} failed, {} violations {:?}",
        report.requests, report.failed_requests, report.violations, report.violations_by_invariant
    );
    for v in report.violation_samples.iter().take(5) {
        println!("  {} ms {:?}: {}", v.at_ms, v.invariant, v.what);
    }
    println!("peak RSS (VmHWM): {} KiB after loading the fleet, {} KiB at the end", loaded, peak);
}
