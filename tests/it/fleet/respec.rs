//! Identity across specs on the real test fleet (issue 9 item 1): drover is
//! killed (`kill -9`) while a farm is being switched, the spec is rewritten
//! (farms and nodes reordered, a node of another farm removed), and drover
//! restarted on the same state directory completes the switch of the farm
//! that was out — by name, not by position — and converges the new spec.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Output, Stdio};

use super::e2e::{drover, summary};
use super::topology::Target;
use super::{Admin, FleetOptions, TestFleet, Topology};

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// `spec` with its farms rotated by one (every farm changes position), each
/// farm's nodes in reverse order, and the node or farm `removed` left out.
fn reorder_without(spec: &str, removed: &str) -> String {
    let (head, farms) = spec.split_once("\nfarms:\n").expect("a farms section");
    let mut blocks: Vec<Vec<&str>> = Vec::new();
    for line in farms.lines() {
        if line.starts_with("  - name: ") {
            blocks.push(vec![line]);
        } else if !line.trim().is_empty() {
            blocks.last_mut().expect("a farm block").push(line);
        }
    }
    let node = |l: &str| l.starts_with("      - { name: ");
    let mut out = format!("{head}\nfarms:\n");
    blocks.rotate_left(1);
    blocks.retain(|b| b[0] != format!("  - name: {removed}"));
    for b in &blocks {
        let (nodes, header): (Vec<&str>, Vec<&str>) = b.iter().partition(|l| node(l));
        for l in header {
            out.push_str(l);
            out.push('\n');
        }
        for l in nodes.iter().rev() {
            if l.starts_with(&format!("      - {{ name: {removed}, ")) {
                continue;
            }
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// Starts `reconcile --once` on the fleet's spec and kills it (`kill -9`)
/// once a farm is being switched. The journal as it was left, the farm it
/// holds out (exactly one: `max_farms_down: 1`) and what drover printed.
fn kill_mid_switch(fleet: &TestFleet, state: &Path) -> (drover::plan::Memory, String, String) {
    // 1. A release change; kill -9 once a farm is being switched.
    let mut child = drover(&fleet, &state, &["reconcile", "--once", "--stall", "60s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = String::new();
    let mut killed = false;
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("start") && line.contains("activate") {
            unsafe { kill(child.id() as i32, 9) };
            killed = true;
            break;
        }
    }
    let _ = child.wait().unwrap();
    assert!(killed, "never saw a farm switch:\n{seen}");

    // The journal holds exactly one farm out (max_farms_down: 1): that farm.
    let memory = drover::control::journal::Journal::peek(&state.join(drover::control::journal::FILE), 0, &fleet.model)
        .unwrap()
        .loaded
        .memory;
    assert_eq!(memory.farm_ops.len(), 1, "one farm mid-switch: {memory:?}\n{seen}");
    let mid = *memory.farm_ops.keys().next().unwrap();
    let mid_farm = fleet.model.farms[mid as usize].name.clone();
    let st = fleet.site("rs").lb.server_state("site", &mid_farm);
    eprintln!("killed with farm {mid_farm} mid-switch; LB: {st:?}");
    (memory, mid_farm, seen)
}

#[test]
fn kill_9_mid_switch_then_a_reordered_spec_without_a_node_completes_the_same_farm() {
    let mut fleet = TestFleet::start("respec", FleetOptions::full(Topology::single_site("rs", 3, 3, Admin::Tcp)));
    let to = Target { release: "2026.11.2".into(), ..Target::initial() };
    fleet.write_spec(&to);
    let old_model = fleet.model.clone();
    let state = fleet.dir.join("drover-state");

    let (memory, mid_farm, seen) = kill_mid_switch(&fleet, &state);
    let mid = old_model.farms.iter().position(|f| f.name == mid_farm).unwrap() as u32;
    let lb = &fleet.site("rs").lb;

    // 2. The spec rewritten: farms and nodes reordered, the second node of
    // another farm removed.
    let other = old_model.farms.iter().map(|f| f.name.clone()).find(|f| *f != mid_farm).unwrap();
    let removed = format!("{other}-n2");
    let removed_id = old_model.nodes.iter().position(|n| n.name == removed).unwrap() as u32;
    // What the journal knew about the removed node: exactly that is reported.
    let about_removed = memory.node_ops.contains_key(&removed_id)
        || memory.failed_nodes.contains_key(&removed_id)
        || memory.unreachable_since.contains_key(&removed_id);
    let path = fleet.spec_dir.join("fleet.yaml");
    let new_text = reorder_without(&std::fs::read_to_string(&path).unwrap(), &removed);
    std::fs::write(&path, &new_text).unwrap();
    let files = [drover::spec::SourceFile { path: path.display().to_string(), text: new_text.clone() }];
    let new_model = drover::spec::validate::check(&files)
        .unwrap_or_else(|d| panic!("the rewritten spec is invalid:\n{}", drover::spec::diag::render(&d, &files)));
    assert_eq!(new_model.nodes.len(), old_model.nodes.len() - 1);
    assert_ne!(
        new_model.farms.iter().position(|f| f.name == mid_farm),
        Some(mid as usize),
        "the farm mid-switch moved position"
    );

    // 3. drover restarted on the same state with the new spec.
    let out = drover(&fleet, &state, &["--output", "json", "reconcile", "--once", "--stall", "60s"]).output().unwrap();
    let log = text(&out);
    eprintln!("{seen}\n--- restarted on the rewritten spec ---\n{log}");
    assert_eq!(out.status.code(), Some(0), "{log}");
    let s = summary(&out);
    assert_eq!(s["converged"], true, "{log}");
    assert_eq!(s["failed"], serde_json::json!([]), "a healthy node reported failed:\n{log}");
    assert!(!log.contains("failed: "), "{log}");
    // Resolutions: only about the removed node, and one iff the journal held an entry about it.
    let resolved = s["journal_resolved"].as_array().cloned().unwrap_or_default();
    for r in &resolved {
        assert!(r.to_string().contains(&removed), "resolved something other than {removed}: {r}\n{log}");
        assert!(!r.to_string().contains(&format!("farm rs/{mid_farm}\"")), "{r}");
    }
    assert_eq!(!resolved.is_empty(), about_removed, "journal_resolved {resolved:?}; memory {memory:?}");
    let resolved_lines = log.lines().filter(|l| l.contains("journal entry not carried over")).count();
    assert_eq!(resolved_lines, resolved.len(), "{log}");

    // The farm that was mid-switch is completed first, by name (it is now
    // last in the spec): it is back in the LB before any other farm is taken out.
    let restarted = String::from_utf8_lossy(&out.stderr);
    let ready = restarted
        .lines()
        .position(|l| l.contains(&format!("start  farm {mid_farm}: lb ready")))
        .unwrap_or_else(|| panic!("farm {mid_farm} was not returned to the LB:\n{log}"));
    let other_out = restarted.lines().position(|l| l.contains(": lb maint") && l.contains("start  farm "));
    assert!(other_out.is_none_or(|o| o > ready), "another farm was taken out before {mid_farm} returned:\n{log}");
    // Its nodes are on the new release.
    for n in fleet.farm_nodes(&mid_farm) {
        assert_eq!(n.active_release().as_deref(), Some(&*to.release), "release on {}", n.name);
    }
    // Every node of the new spec runs the new release; every farm of it is ready.
    for n in &new_model.nodes {
        assert_eq!(fleet.node(&n.name).active_release().as_deref(), Some(&*to.release), "release on {}", n.name);
    }
    for f in &new_model.farms {
        let st = lb.server_state("site", &f.name);
        assert_eq!(st.admin_state, 0, "farm {} left out of service: {st:?}\n{log}", f.name);
    }
    assert_eq!(lb.server_state("site", &mid_farm).admin_state, 0);
    // The journal now holds no window open and nothing failed.
    let after = drover::control::journal::Journal::peek(&state.join(drover::control::journal::FILE), 0, &new_model)
        .unwrap()
        .loaded
        .memory;
    assert!(after.farm_ops.is_empty() && after.node_ops.is_empty() && after.failures() == 0, "{after:?}");
}

#[test]
fn kill_9_mid_switch_then_a_spec_without_that_farm_resolves_it_and_converges_the_rest() {
    let mut fleet = TestFleet::start("respec-farm", FleetOptions::full(Topology::single_site("rs", 3, 2, Admin::Tcp)));
    let to = Target { release: "2026.11.2".into(), ..Target::initial() };
    fleet.write_spec(&to);
    let old_model = fleet.model.clone();
    let state = fleet.dir.join("drover-state");
    let (memory, mid_farm, seen) = kill_mid_switch(&fleet, &state);
    let lb = &fleet.site("rs").lb;

    // The farm that is out removed from the spec, the others reordered.
    let path = fleet.spec_dir.join("fleet.yaml");
    let new_text = reorder_without(&std::fs::read_to_string(&path).unwrap(), &mid_farm);
    std::fs::write(&path, &new_text).unwrap();
    let files = [drover::spec::SourceFile { path: path.display().to_string(), text: new_text.clone() }];
    let new_model = drover::spec::validate::check(&files)
        .unwrap_or_else(|d| panic!("the rewritten spec is invalid:\n{}", drover::spec::diag::render(&d, &files)));
    assert_eq!(new_model.farms.len(), old_model.farms.len() - 1);
    assert!(new_model.farms.iter().all(|f| f.name != mid_farm));

    let out = drover(&fleet, &state, &["--output", "json", "reconcile", "--once", "--stall", "60s"]).output().unwrap();
    let log = text(&out);
    eprintln!("{seen}\n--- restarted on the spec without farm {mid_farm} ---\n{log}");
    assert_eq!(out.status.code(), Some(0), "{log}");
    let s = summary(&out);
    assert_eq!(s["converged"], true, "{log}");
    assert_eq!(s["failed"], serde_json::json!([]), "a healthy node reported failed:\n{log}");
    // The farm's open switch is resolved (closed, reported), and nothing else.
    let resolved = s["journal_resolved"].as_array().cloned().unwrap_or_default();
    assert!(!resolved.is_empty(), "the open switch of farm {mid_farm} was not reported:\n{log}");
    for r in &resolved {
        // As printed: `<object>: <entry> closed, <reason>; <advice>`.
        let (object, _) = r.as_str().unwrap().split_once(": ").unwrap();
        assert!(object.contains(&format!("farm rs/{mid_farm}")), "resolved something else: {r}\n{log}");
    }
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("journal entry not carried over")).collect();
    assert_eq!(lines.len(), resolved.len(), "{log}");
    assert!(
        lines.iter().any(|l| l.contains(&format!("farm rs/{mid_farm}: ")) && l.contains("it is no longer in the spec")),
        "{log}"
    );
    // Not applied to another farm: every farm of the new spec was switched and is ready.
    for f in &new_model.farms {
        assert_eq!(lb.server_state("site", &f.name).admin_state, 0, "farm {} left out:\n{log}", f.name);
    }
    for n in &new_model.nodes {
        assert_eq!(fleet.node(&n.name).active_release().as_deref(), Some(&*to.release), "release on {}", n.name);
    }
    // The removed farm's server is no longer drover's: left as drover found it (out).
    assert_ne!(lb.server_state("site", &mid_farm).admin_state, 0, "drover acted on a farm the spec no longer names");
    let after = drover::control::journal::Journal::peek(&state.join(drover::control::journal::FILE), 0, &new_model)
        .unwrap()
        .loaded
        .memory;
    assert!(after.farm_ops.is_empty() && after.node_ops.is_empty() && after.failures() == 0, "{after:?} {memory:?}");
}
