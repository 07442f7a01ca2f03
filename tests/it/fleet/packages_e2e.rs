//! End to end on real Portage (portage.rs): drover's real binary converges
//! farms whose nodes run the real `emerge` against the fleet's real binhost,
//! and its package failure paths (an install that fails mid-wave, a binhost
//! that is down) end with the node out of service or never taken out, and a
//! report naming node and command. Asserts on exit codes, the JSON summary,
//! the LB state, the package database and the binhost's access log, never on
//! Portage's message text (it changes between releases).

use std::sync::Arc;

use super::e2e::{reconcile_under_load, servers_out};
use super::node::{Node, fault};
use super::topology::Target;
use super::{Admin, FleetOptions, TestFleet, Topology};

/// The kernel and openssl upgrade: a reboot and a restart per node.
fn upgrade() -> Target {
    Target { packages: Target::upgraded().packages, ..Target::initial() }
}

fn real_nodes(fleet: &TestFleet) -> Vec<Arc<Node>> {
    let real: Vec<Arc<Node>> = fleet.nodes.iter().filter(|n| n.real_portage()).cloned().collect();
    assert!(!real.is_empty(), "the test fleet has no real-Portage node");
    real
}

/// `/<profile>/<cat>/<pn>/<pf>-<build>.gpkg.tar` -> `<cat>/<pf>`.
fn package_of(path: &str) -> Option<String> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let [_profile, cat, _pn, file] = parts.as_slice() else { return None };
    let (pf, _build) = file.strip_suffix(".gpkg.tar")?.rsplit_once('-')?;
    Some(format!("{cat}/{pf}"))
}

/// The package database entry is Portage's own (written by a real merge).
fn assert_real_vdb(n: &Node, atom: &str) {
    let entry = n.root.join("var/db/pkg").join(atom);
    for f in ["CONTENTS", "COUNTER", "SLOT", "environment.bz2"] {
        assert!(entry.join(f).is_file(), "{}: {atom} has no {f} in its vdb entry", n.name);
    }
}

#[test]
fn real_portage_stages_ahead_then_installs_without_downloading_again() {
    let mut fleet = TestFleet::start("pkg-staging", FleetOptions::full(Topology::single_site("pk", 2, 2, Admin::Tcp)));
    let real = real_nodes(&fleet);
    assert_eq!(real.iter().map(|n| n.farm.as_str()).collect::<Vec<_>>(), ["f1", "f1"]);
    for n in &real {
        for a in Target::initial().atoms() {
            assert_real_vdb(n, &a);
        }
    }
    let to = upgrade();
    fleet.write_spec(&to);
    let (code, json, log) = reconcile_under_load(&fleet, &["pk"], &["--stall", "60s"]);
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(json["converged"], true, "{log}");
    super::e2e::assert_converged(&fleet, &to);
    assert!(servers_out(&fleet, &[]).is_empty(), "{:?}", servers_out(&fleet, &[]));

    // Each new package was downloaded exactly once per real node, from its
    // own address and its profile's path: the --fetchonly ahead of the
    // window fetched it, and the install used that copy.
    let binhost = fleet.binhost.as_ref().expect("a fleet with real Portage has a binhost");
    let downloads = binhost.package_downloads();
    let new = ["dev-libs/openssl-3.0.15-r1", "sys-kernel/gentoo-kernel-bin-6.6.62"];
    for n in &real {
        let mut mine: Vec<String> = downloads
            .iter()
            .filter(|d| d.client == n.ip)
            .map(|d| {
                assert!(d.path.starts_with(&format!("/{}/", n.profile)), "{}: {d:?} is another profile's", n.name);
                package_of(&d.path).unwrap_or_else(|| panic!("not a package path: {d:?}"))
            })
            .collect();
        mine.sort();
        assert_eq!(mine, new, "{}: downloads {downloads:?}", n.name);
        for a in new {
            assert_real_vdb(n, a);
        }
        // The merge read the staged file from the node's own PKGDIR.
        let emerge_log = std::fs::read_to_string(n.root.join("var/log/emerge.log")).unwrap();
        let pkgdir = format!("::{}/var/cache/binpkgs/", n.root.display());
        for a in new {
            assert!(
                emerge_log.lines().any(|l| l.contains("Merging Binary") && l.contains(a) && l.contains(&pkgdir)),
                "{}: {a} not merged from the staged copy:\n{emerge_log}",
                n.name
            );
        }
        assert_eq!(n.running_kernel(), "6.6.62-gentoo-dist", "{}", n.name);
    }
    assert_eq!(downloads.len(), new.len() * real.len(), "only real nodes download: {downloads:?}");
    // Portage ran unprivileged, as the node user (the merged files are its),
    // through the root-owned wrapper it cannot change.
    use std::os::unix::fs::MetadataExt;
    let user = super::node::node_user();
    for n in &real {
        let entry = std::fs::metadata(n.root.join("var/db/pkg").join(new[1])).unwrap();
        assert_eq!((entry.uid(), entry.gid()), (user.uid, user.gid), "{}", n.name);
        let kernel = std::fs::metadata(n.root.join("boot/vmlinuz-6.6.62-gentoo-dist")).unwrap();
        assert_eq!(kernel.uid(), user.uid, "{}", n.name);
        assert_eq!(std::fs::metadata(n.root.join("bin/emerge")).unwrap().uid(), 0, "{}", n.name);
    }
    // Members of later waves were staged (--fetchonly) before their window:
    // their one download above was that fetch. Wave 1 installs at once.
    let staged: Vec<&str> = real
        .iter()
        .filter(|n| {
            let line = |verb: &str| log.lines().position(|l| l.contains(&format!("start  {}: {verb} ", n.name)));
            let (fetch, install) = (line("fetch"), line("install"));
            assert!(install.is_some(), "{}: never installed:\n{log}", n.name);
            fetch.is_some_and(|f| Some(f) < install)
        })
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(staged, ["f1-n2"], "{log}");
}

/// The node's vdb lacks `atom`, whose binary package it had fetched: the
/// real install failed after the download (in pkg_preinst), not before.
pub fn assert_failed_at_install(n: &Node, atom: &str) {
    assert!(!n.installed().contains(&atom.to_string()), "{}: {atom} got installed", n.name);
    let (_, pf) = atom.split_once('/').unwrap();
    let key = drover::spec::values::parse_atom(atom).unwrap().key(); // cat/pn
    let fetched = n.root.join("var/cache/binpkgs").join(key);
    let files: Vec<String> = std::fs::read_dir(&fetched)
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(files.iter().any(|f| f.starts_with(pf)), "{}: {atom} was not fetched: {files:?}", n.name);
}

#[test]
fn a_real_emerge_failing_mid_wave_leaves_the_node_out_and_named() {
    let mut fleet = TestFleet::start("pkg-fail", FleetOptions::full(Topology::single_site("pf", 2, 3, Admin::Tcp)));
    let bad = Arc::clone(fleet.node("f1-n2"));
    assert!(bad.real_portage());
    // Only the kernel fails: openssl merges first, then the kernel's own
    // pkg_preinst dies on the node (the eclass reads faults/emerge-fail).
    bad.set_fault(fault::EMERGE_FAIL, "sys-kernel/gentoo-kernel-bin-6.6.62\n");
    let boot = bad.boot_id();
    let to = upgrade();
    fleet.write_spec(&to);
    let (code, json, log) = reconcile_under_load(&fleet, &["pf"], &["--stall", "30s"]);
    // One failure is within the budget (2): no halt (exit 3), the others converge.
    // (drover then reports `converged`, exit 0, with the failure listed: see
    // the report of issue 12; not asserted either way here.)
    assert_ne!(code, Some(3), "{log}");
    assert_eq!(json["halted"], false, "{log}");
    let failed = json["failed"].to_string();
    assert!(failed.contains("f1-n2") && failed.contains("emerge --usepkgonly --getbinpkg"), "{failed}");
    assert!(failed.contains("=sys-kernel/gentoo-kernel-bin-6.6.62"), "{failed}");
    // It stays out of service, not rebooted; nothing else is left out.
    let out = servers_out(&fleet, &["f1-n2"]);
    assert!(out.is_empty(), "{out:?}");
    assert!(servers_out(&fleet, &[]).iter().any(|s| s.contains("f1-n2")), "f1-n2 was put back in service");
    assert_eq!(bad.boot_id(), boot, "f1-n2 rebooted after a failed install");
    assert_eq!(bad.running_kernel(), "6.6.58-gentoo-dist");
    assert_failed_at_install(&bad, "sys-kernel/gentoo-kernel-bin-6.6.62");
    for n in fleet.nodes.iter().filter(|n| n.name != "f1-n2") {
        assert_eq!(n.running_kernel(), "6.6.62-gentoo-dist", "{}", n.name);
    }
}

#[test]
fn a_binhost_that_is_down_fails_the_real_nodes_by_name_and_keeps_them_out() {
    let mut fleet = TestFleet::start("pkg-binhost", FleetOptions::full(Topology::single_site("pd", 2, 2, Admin::Tcp)));
    let real = real_nodes(&fleet);
    fleet.binhost.as_mut().unwrap().stop();
    let to = upgrade();
    fleet.write_spec(&to);
    let (code, json, log) = reconcile_under_load(&fleet, &["pd"], &["--stall", "20s"]);
    assert_ne!(code, Some(0), "{log}");
    assert_eq!(json["converged"], false, "{log}");
    let failed = json["failed"].to_string();
    for n in &real {
        assert!(failed.contains(&n.name) && failed.contains("emerge"), "{}: {failed}", n.name);
        assert!(!n.installed().contains(&"sys-kernel/gentoo-kernel-bin-6.6.62".to_string()), "{}", n.name);
        assert_eq!(n.running_kernel(), "6.6.58-gentoo-dist", "{}", n.name);
    }
    // A staging fetch that failed is reported as such, naming the command.
    assert!(failed.contains("emerge --fetchonly --usepkgonly --getbinpkg"), "{failed}");
    // Stuck (exit 1): the failed nodes stay out of service, waiting for the
    // operator; the other farm was never touched by the failure.
    assert_eq!(code, Some(1), "{log}");
    assert!(servers_out(&fleet, &["f1", "f1-n1", "f1-n2"]).is_empty(), "{:?}", servers_out(&fleet, &[]));
    let out = servers_out(&fleet, &[]);
    for n in &real {
        assert!(out.iter().any(|s| s.ends_with(&format!("/{} admin 0x1", n.name))), "{}: {out:?}", n.name);
    }
    // drover remembers the failed nodes (its journal): they stay out, even
    // once the binhost is back, until an operator acts.
    fleet.binhost.as_mut().unwrap().power_on().unwrap();
    let (code, _, log) = reconcile_under_load(&fleet, &["pd"], &["--stall", "5s"]);
    assert_eq!(code, Some(1), "{log}");
    assert!(servers_out(&fleet, &["f1", "f1-n1", "f1-n2"]).is_empty(), "{:?}", servers_out(&fleet, &[]));
}
