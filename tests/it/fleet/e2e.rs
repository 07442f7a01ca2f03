//! End to end: `drover reconcile --once` (the real binary) converges the real
//! test fleet while load generators run real HTTP sessions through every
//! site's HAProxy, and none of them sees a failed request or an older
//! release than it has seen.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use super::loadgen::{LoadGen, LoadOptions, LoadReport};
use super::topology::Target;
use super::{FleetOptions, TestFleet, Topology};

pub fn drover(fleet: &TestFleet, state: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_drover"));
    c.arg("--specs").arg(&fleet.spec_dir).args(args).arg("--state-dir").arg(state).env("NO_COLOR", "1");
    c
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The last stdout line of `--output json`.
pub fn summary(o: &Output) -> serde_json::Value {
    let out = String::from_utf8_lossy(&o.stdout);
    let last = out.lines().last().unwrap_or_else(|| panic!("no JSON summary:\n{}", text(o)));
    serde_json::from_str(last).unwrap_or_else(|e| panic!("summary is not JSON ({e}):\n{}", text(o)))
}

/// Load through every site (production and preproduction).
pub fn load_all(fleet: &TestFleet) -> Vec<(String, LoadGen)> {
    let opts = LoadOptions { sessions: 6, think: Duration::from_millis(20), path: "/".into() };
    let gens: Vec<_> = fleet.sites.iter().map(|s| (s.name.clone(), fleet.loadgen(&s.name, opts.clone()))).collect();
    for (_, g) in &gens {
        g.wait_more(20, Duration::from_secs(10));
    }
    gens
}

pub fn stop_all(gens: Vec<(String, LoadGen)>) -> Vec<(String, LoadReport)> {
    gens.into_iter().map(|(s, g)| (s, g.stop())).collect()
}

/// Every node runs `target` (packages, kernel, PHP, release), every server is ready.
pub fn assert_converged(fleet: &TestFleet, target: &Target) {
    let atoms = target.atoms();
    for n in &fleet.nodes {
        assert_eq!(n.active_release().as_deref(), Some(&*target.release), "release on {}", n.name);
        assert_eq!(n.active_php().as_deref(), Some(&*target.php), "php on {}", n.name);
        let installed = n.installed();
        for a in &atoms {
            assert!(installed.contains(a), "{} lacks {a}: {installed:?}", n.name);
        }
    }
}

fn state_dir(fleet: &TestFleet) -> PathBuf {
    fleet.dir.join("drover-state")
}

fn converge(fleet: &mut TestFleet, to: &Target) -> (serde_json::Value, Vec<(String, LoadReport)>, String) {
    fleet.write_spec(to);
    let gens = load_all(fleet);
    let out = drover(fleet, &state_dir(fleet), &["--output", "json", "reconcile", "--once"]).output().unwrap();
    let reports = stop_all(gens);
    let log = text(&out);
    eprintln!("{log}");
    assert_eq!(out.status.code(), Some(0), "drover reconcile --once:\n{log}");
    (summary(&out), reports, log)
}

#[test]
fn app_release_switch_farm_by_farm_with_memcached_flushed() {
    let mut fleet = TestFleet::start("e2e-release", FleetOptions::full(Topology::standard()));
    let to = Target { release: "2026.11.2".into(), ..Target::initial() };
    let (json, reports, log) = converge(&mut fleet, &to);
    assert_eq!(json["converged"], true, "{log}");
    for (site, r) in &reports {
        eprintln!("{site}: {}", r.summary());
        r.assert_clean();
    }
    assert_converged(&fleet, &to);
    assert!(log.contains("flush memcached"), "{log}");
    // Converged means nothing more to do: plan exits 0.
    let again = drover(&fleet, &state_dir(&fleet), &["plan"]).output().unwrap();
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
}
