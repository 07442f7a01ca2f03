//! One node's work on the real stack, as a user waits for it: drover's
//! switch of a release (`Activate`: php-fpm -t, link swap, test through
//! `current`, PHP-FPM reload; then `HealthCheck`: every worker proven on the
//! new release) and one real `emerge` install (PyPI Portage, real binary
//! packages from the fleet's HTTP binhost), each as a ratio to a bare `true`
//! over the same OpenSSH master (the floor of any remote step).
//!
//! The node is a real one of tests/it/fleet (Debian's Apache + PHP-FPM with
//! OPcache, real Portage), driven through `drover::real::fleet::RealFleet`,
//! the executor `drover reconcile` uses. Switches alternate between two
//! staged releases, installs between two versions of a plain package.
//! `--quick`: 3 of each (CI); else 9. Must run as root (sshd, the node user).

#[allow(dead_code, unused_imports)]
#[path = "../tests/it/fleet/mod.rs"]
mod fleet;

use std::sync::Arc;
use std::time::{Duration, Instant};

use drover::plan::action::{Action, Outcome};
use drover::real::fleet::RealFleet;
use fleet::topology::Admin;
use fleet::{FleetOptions, TestFleet, Topology};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    if !fleet::procs::is_root() {
        println!("node: skipped (needs root: it starts sshd, Apache and PHP-FPM per node and a login user)");
        return;
    }
    let rounds = if quick { 3 } else { 9 };
    let test = TestFleet::start("bench-node", FleetOptions::full(Topology::single_site("bn", 1, 2, Admin::Tcp)));
    let model = Arc::new(test.model.clone());
    let node = model.nodes.iter().position(|n| n.name == "f1-n1").expect("node f1-n1") as u32;
    let addr = test.node("f1-n1").ssh;
    let (host, port) = (addr.ip().to_string(), addr.port());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let releases = ["2026.11.2", "2026.11.1"].map(|r| drover::model::ReleaseId(r.into()));
    // One executor per target release (the health check proves the target).
    let sides: Vec<RealFleet> = releases
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut m = (*model).clone();
            for t in &mut m.targets {
                t.release = r.clone();
            }
            fleet::harness::real_executor(&test, &format!("bench-node-{i}"), Arc::new(m), &rt)
        })
        .collect();
    // The baseline runs over the first executor's own SSH master.
    let pool = Arc::clone(&sides[0].pool);
    let exec = |side: usize, a: Action| {
        let t = Instant::now();
        let outcome = rt.block_on(sides[side].execute(&a));
        assert!(matches!(outcome, Outcome::Ok), "{a:?}: {outcome:?}");
        t.elapsed()
    };
    exec(0, Action::StageRelease { node, release: releases[0].clone() });

    let mut base = Vec::new();
    let mut switch = Vec::new();
    let mut install = Vec::new();
    let atoms = ["sys-apps/man-db-2.13.0", "sys-apps/man-db-2.12.1"]
        .map(|a| drover::spec::values::parse_atom(a).expect("atom"));
    for i in 0..rounds {
        for _ in 0..5 {
            let t = Instant::now();
            rt.block_on(pool.run(&host, port, "true", &[])).expect("true over ssh");
            base.push(t.elapsed());
        }
        let release = releases[i % 2].clone();
        let t = Instant::now();
        exec(i % 2, Action::Activate { node, php: None, release: Some(release), rollback: false });
        exec(i % 2, Action::HealthCheck { node });
        switch.push(t.elapsed());
        rt.block_on(sides[i % 2].observe()).expect("observe");
        install.push(exec(i % 2, Action::InstallOnline { node, atoms: vec![atoms[i % 2].clone()] }));
    }
    let (b, s, e) = (median(base), median(switch), median(install));
    let ratio = |d: Duration| d.as_secs_f64() / b.as_secs_f64();
    println!("node: real Apache + PHP-FPM (3 workers) + Portage 3.0.83 node, {rounds} rounds, medians");
    println!("  `true` over the SSH master            {b:>10.2?}  1x (baseline)");
    println!("  release switch, proven on every worker {s:>10.2?}  {:.0}x", ratio(s));
    println!("  one real emerge install (man-db)       {e:>10.2?}  {:.0}x", ratio(e));
}
