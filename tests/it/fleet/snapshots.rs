//! Snapshots before disruptive upgrades (issue 13) on real filesystems:
//! drover's executor takes and prunes them on a node's real Btrfs root
//! (btrfs.rs: a loop-mounted image per node, booted from its default
//! subvolume), and `drover rollback-node` (the real binary) rolls a node out
//! of service back to one, journaled and shown in `drover status`.
//!
//! LVM needs device-mapper, which the CI machine's kernel lacks
//! (`/dev/mapper/control: open failed`): the LVM test says so and runs the
//! same scenario through the hook method, with a hook that wraps Btrfs.
//! Where device-mapper works, it also takes and prunes real LVM snapshots.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use drover::plan::action::{Action, Outcome};

use super::e2e::{drover, state_dir};
use super::node::Node;
use super::{Admin, FleetOptions, TestFleet, Topology};

const SNAP: [&str; 5] = [
    "drover-20261201T100000Z",
    "drover-20261201T100100Z",
    "drover-20261201T100200Z",
    "drover-20261201T100300Z",
    "drover-20261201T100400Z",
];

/// One site, farm f1 (r640) and farm f2 (r650, Btrfs roots); stand-in web
/// servers and emerge (cheap).
fn start(test: &str) -> TestFleet {
    let mut topo = Topology::single_site("sn", 2, 2, Admin::Tcp);
    topo.sites[0].farms[1].profiles = vec!["r650".into(); 2];
    TestFleet::start(
        test,
        FleetOptions {
            real_web: false,
            real_portage: false,
            btrfs_farms: vec!["f2".into()],
            ..FleetOptions::full(topo)
        },
    )
}

/// Rewrites the spec with profile r650 declaring `snapshot` (YAML flow map).
pub fn write_spec_with_snapshot(fleet: &mut TestFleet, target: &super::topology::Target, snapshot: &str) {
    fleet.write_spec(target);
    let path = fleet.spec_dir.join("fleet.yaml");
    let text = fs::read_to_string(&path).unwrap();
    let patched = text.replacen(
        "init: systemd, capacity: 400 }",
        &format!("init: systemd, capacity: 400, snapshot: {snapshot} }}"),
        1,
    );
    assert_ne!(patched, text, "the r650 profile line was not found");
    fs::write(&path, &patched).unwrap();
    fleet.model = match drover::spec::load(&fleet.spec_dir).unwrap() {
        drover::spec::Loaded::Valid { fleet, .. } => fleet,
        drover::spec::Loaded::Invalid { diagnostics, files } => {
            panic!("{}", drover::spec::diag::render(&diagnostics, &files))
        }
    };
}

fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The executor's snapshot of node `name` as `snap`.
fn take(
    real: &drover::real::fleet::RealFleet,
    rt: &tokio::runtime::Runtime,
    fleet: &TestFleet,
    name: &str,
    snap: &str,
) -> Outcome {
    let node = fleet.model.nodes.iter().position(|n| n.name == name).unwrap() as u32;
    rt.block_on(real.execute(&Action::Snapshot { node, name: snap.into() }))
}

/// The node's Btrfs snapshot directory, as names.
fn listed(n: &Node) -> Vec<String> {
    n.disk().as_ref().expect("a Btrfs root").snapshot_names()
}

/// The shared scenario, for the btrfs method and for the hook: drover's
/// snapshots are read-only copies of the root taken when asked, pruned to
/// `keep` (2) oldest first and never another name; a snapshot that cannot be
/// taken fails with node, command and output; `drover rollback-node` refuses
/// a node in service, a name not drover's, a held lease and an unknown
/// snapshot, then restores the snapshot's content through a reboot, with a
/// journal record that `drover status` shows; the node stays out of the LB.
fn scenario(fleet: &mut TestFleet, snapshot_spec: &str, method: &str) {
    let target = super::topology::Target::initial();
    write_spec_with_snapshot(fleet, &target, snapshot_spec);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let real = super::harness::real_executor(fleet, &format!("snap-{method}"), Arc::new(fleet.model.clone()), &rt);
    let n = Arc::clone(fleet.node("f2-n1"));
    let marker = n.root.join("etc/marker");

    // Taken when asked: its content is the root's at that moment.
    fs::write(&marker, "v1\n").unwrap();
    assert!(matches!(take(&real, &rt, fleet, "f2-n1", SNAP[0]), Outcome::Ok));
    let snaps = n.root.join(".snapshots");
    assert_eq!(fs::read_to_string(snaps.join(SNAP[0]).join("etc/marker")).unwrap(), "v1\n");
    assert!(snaps.join(SNAP[0]).join("var/db/pkg/sys-kernel/gentoo-kernel-bin-6.6.58").is_dir());
    let ro = sh("btrfs", &["property", "get", "-ts", &snaps.join(SNAP[0]).display().to_string(), "ro"]);
    assert_eq!(ro.trim(), "ro=true", "{method}: drover's snapshots are read-only");
    assert!(
        n.disk().as_ref().unwrap().subvolumes().contains(&format!("snapshots/{}", SNAP[0])),
        "{method}: btrfs subvolume list shows it"
    );

    // Names that are not drover's are never pruned: one older than any of
    // drover's (a rollback's writable root) and one by hand.
    let foreign_root = format!("{}.root", "drover-20200101T000000Z");
    sh(
        "btrfs",
        &[
            "-q",
            "subvolume",
            "snapshot",
            &n.root.display().to_string(),
            &snaps.join(&foreign_root).display().to_string(),
        ],
    );
    sh(
        "btrfs",
        &[
            "-q",
            "subvolume",
            "snapshot",
            "-r",
            &n.root.display().to_string(),
            &snaps.join("by-hand").display().to_string(),
        ],
    );
    fs::write(&marker, "v2\n").unwrap();
    assert!(matches!(take(&real, &rt, fleet, "f2-n1", SNAP[1]), Outcome::Ok));
    fs::write(&marker, "v3\n").unwrap();
    assert!(matches!(take(&real, &rt, fleet, "f2-n1", SNAP[2]), Outcome::Ok));
    assert_eq!(listed(&n), ["by-hand", foreign_root.as_str(), SNAP[1], SNAP[2]], "{method}: keep 2, oldest pruned");

    // A snapshot that cannot be taken names node, command and output.
    fs::create_dir(snaps.join(SNAP[3])).unwrap();
    let failed = take(&real, &rt, fleet, "f2-n1", SNAP[3]);
    let Outcome::Failed(why) = failed else { panic!("{method}: a snapshot onto an existing path succeeded") };
    assert!(why.contains("f2-n1") && why.contains("exists"), "{method}: {why}");
    assert!(why.contains(if method == "hook" { "create drover-" } else { "btrfs subvolume snapshot -r" }), "{why}");
    fs::remove_dir(snaps.join(SNAP[3])).unwrap();
    let Outcome::Failed(why) = take(&real, &rt, fleet, "f2-n1", "by-hand") else { panic!("a foreign name was taken") };
    assert!(why.contains("not a drover snapshot name"), "{why}");
    assert_eq!(listed(&n), ["by-hand", foreign_root.as_str(), SNAP[1], SNAP[2]]);

    // rollback-node: refused while the node serves, for names not drover's,
    // while another drover holds the lease, and for a snapshot the node lacks.
    let state = state_dir(fleet);
    let rollback =
        |snap: &str| drover(fleet, &state, &["rollback-node", "f2-n1", "--snapshot", snap]).output().unwrap();
    let o = rollback(SNAP[1]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("in service"), "{}", text(&o));
    fleet.site("sn").lb.set("set server f2/f2-n1 state maint");
    let o = rollback("by-hand");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("not a snapshot drover took"), "{}", text(&o));
    {
        fs::create_dir_all(&state).unwrap();
        let lease = fs::OpenOptions::new().create(true).truncate(false).write(true).open(state.join("lease")).unwrap();
        lease.try_lock().unwrap();
        let o = rollback(SNAP[1]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(text(&o).contains("another drover holds the lease"), "{}", text(&o));
    }
    let o = rollback(SNAP[4]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("no snapshot") && text(&o).contains("f2-n1"), "{}", text(&o));
    assert_eq!(fs::read_to_string(&marker).unwrap(), "v3\n", "a refused rollback changed nothing");

    // The rollback: the snapshot's content is the root after the reboot.
    let boot = n.boot_id();
    let o = rollback(SNAP[1]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(fs::read_to_string(&marker).unwrap(), "v2\n", "{method}: the root is the snapshot's again");
    assert_ne!(n.boot_id(), boot, "{method}: the node rebooted");
    assert_eq!(n.disk().as_ref().unwrap().default_subvolume(), format!("snapshots/{}.root", SNAP[1]));
    // Journaled and shown; the node stays out of the LB.
    let o = drover(fleet, &state, &["--output", "json", "status", "--direct"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let node = v["sites"][0]["farms"][1]["nodes"][0].clone();
    assert_eq!(node["name"], "f2-n1");
    assert_eq!(node["rollback"]["snapshot"], SNAP[1], "{node}");
    assert_eq!(node["rollback"]["state"]["state"], "done", "{node}");
    assert!(node["rollback"]["line"].as_str().unwrap().starts_with(&format!("rolled back to {}", SNAP[1])), "{node}");
    assert_eq!(node["lb"]["admin"], "maint", "{node}");
    let o = drover(fleet, &state, &["status", "--direct"]).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("rolled back to {}", SNAP[1])), "{}", text(&o));
    // The operations log has its begin and end.
    let journal = drover::control::journal::Journal::open(&state.join("journal.redb")).unwrap();
    let ops: Vec<_> = journal.recent(20).unwrap().into_iter().filter(|r| r.kind == "rollback_node").collect();
    assert!(ops.iter().any(|r| r.outcome.as_deref() == Some("ok") && r.action.contains(SNAP[1])), "{ops:?}");
    drop(journal);

    // The rolled-back node takes snapshots again, on the same layout.
    let real = super::harness::real_executor(fleet, &format!("snap-{method}-2"), Arc::new(fleet.model.clone()), &rt);
    assert!(matches!(take(&real, &rt, fleet, "f2-n1", SNAP[4]), Outcome::Ok));
    let kept: Vec<String> = listed(&n).into_iter().filter(|s| drover::real::snapshot::is_drover_name(s)).collect();
    assert_eq!(kept, [SNAP[2], SNAP[4]], "{method}");
}

#[test]
fn btrfs_snapshots_are_taken_pruned_and_rolled_back_by_the_operator() {
    let mut fleet = start("snap-btrfs");
    scenario(&mut fleet, "{ method: btrfs, path: /, dir: /.snapshots, keep: 2 }", "btrfs");
}

/// A site's snapshot hook (README, "the hook contract"), for the test: a
/// snapper-like wrapper of Btrfs on the node's root. Prints a line that is
/// no snapshot name on `list`, which drover must ignore.
const HOOK: &str = r##"#!/bin/sh
set -eu
d=$NODE_ROOT/.snapshots
case ${1:-} in
  create) [ ! -e "$d/$2" ] || { echo "$d/$2 exists already" >&2; exit 1; }
    btrfs -q subvolume snapshot -r "$NODE_ROOT" "$d/$2" ;;
  list) echo "# snapshots of $NODE_ROOT"; for p in "$d"/*; do [ -e "$p" ] && echo "${p##*/}"; done; true ;;
  delete) btrfs -q subvolume delete "$d/$2" ;;
  rollback) btrfs -q subvolume snapshot "$d/$2" "$d/$2.root" && btrfs subvolume set-default "$d/$2.root" ;;
  *) echo "usage: $0 create|list|delete|rollback [name]" >&2; exit 2 ;;
esac
"##;

#[test]
fn lvm_snapshots_or_where_device_mapper_is_missing_the_same_through_the_hook() {
    let dm = Command::new("dmsetup").arg("version").output();
    let why = match &dm {
        Ok(o) if o.status.success() && String::from_utf8_lossy(&o.stdout).contains("Driver version") => None,
        Ok(o) => Some(String::from_utf8_lossy(&o.stderr).trim().replace('\n', " ")),
        Err(e) => Some(format!("dmsetup: {e}")),
    };
    let mut fleet = start("snap-lvm");
    match &why {
        Some(why) => eprintln!(
            "LVM snapshots cannot be tested on this machine: no device-mapper in its kernel ({why}); \
             running the same scenario through the hook method"
        ),
        None => lvm_take_and_prune(&mut fleet),
    }
    for n in fleet.farm_nodes("f2") {
        let hooks = n.root.join("etc/drover/hooks");
        fs::create_dir_all(&hooks).unwrap();
        fs::write(hooks.join("rootsnap"), HOOK).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(hooks.join("rootsnap"), fs::Permissions::from_mode(0o755)).unwrap();
    }
    scenario(&mut fleet, "{ method: hook, hook: rootsnap, keep: 2 }", "hook");
}

/// Where device-mapper works: drover's LVM snapshots of a logical volume on
/// a loop device, pruned to `keep`. (Not run on the CI machine.)
fn lvm_take_and_prune(fleet: &mut TestFleet) {
    struct Vg {
        name: String,
        loopdev: String,
        image: std::path::PathBuf,
    }
    impl Drop for Vg {
        fn drop(&mut self) {
            let _ = Command::new("vgremove").args(["-f", &self.name]).output();
            let _ = Command::new("pvremove").args(["-f", &self.loopdev]).output();
            let _ = Command::new("losetup").args(["-d", &self.loopdev]).output();
            let _ = fs::remove_file(&self.image);
        }
    }
    let image = fleet.dir.join("lvm.img");
    fs::File::create(&image).unwrap().set_len(128 << 20).unwrap();
    let loopdev = sh("losetup", &["-f", "--show", &image.display().to_string()]).trim().to_string();
    let vg = Vg { name: format!("drovert{}", fleet.plan.slot), loopdev, image };
    sh("pvcreate", &["-q", &vg.loopdev]);
    sh("vgcreate", &["-q", &vg.name, &vg.loopdev]);
    sh("lvcreate", &["-q", "-L", "16M", "-n", "root", &vg.name]);
    write_spec_with_snapshot(
        fleet,
        &super::topology::Target::initial(),
        &format!("{{ method: lvm, volume: {}/root, size: 8M, keep: 2 }}", vg.name),
    );
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let real = super::harness::real_executor(fleet, "snap-lvm", Arc::new(fleet.model.clone()), &rt);
    for s in &SNAP[..3] {
        assert!(matches!(take(&real, &rt, fleet, "f2-n1", s), Outcome::Ok));
    }
    let lvs = sh("lvs", &["--noheadings", "-o", "lv_name", &vg.name]);
    let mut names: Vec<&str> = lvs.split_whitespace().collect();
    names.sort();
    assert_eq!(names, [SNAP[1], SNAP[2], "root"], "LVM: keep 2");
}

/// drover's drover-* snapshots on a node (its Btrfs `.snapshots`).
fn drovers(n: &Node) -> Vec<String> {
    listed(n).into_iter().filter(|s| drover::real::snapshot::is_drover_name(s)).collect()
}

/// The rollout: every disruptive upgrade of a node whose profile declares a
/// snapshot is preceded by one (its content is the root before the
/// upgrade), three upgrades leave `keep` (2); a failed upgrade's report and
/// `drover status` name the snapshot; `drover rollback-node` on that node
/// brings back a package database the upgrade changed; nodes of a profile
/// without snapshots get none.
#[test]
fn a_rollout_snapshots_before_each_disruptive_upgrade_and_a_failed_node_is_rolled_back() {
    use super::e2e::reconcile_under_load;
    use super::topology::Target;
    let mut fleet = start("snap-e2e");
    let spec = "{ method: btrfs, path: /, dir: /.snapshots, keep: 2 }";
    // man-db becomes disruptive (a restart), for a third disruptive upgrade.
    let write = |fleet: &mut TestFleet, to: &Target| {
        write_spec_with_snapshot(fleet, to, spec);
        let path = fleet.spec_dir.join("fleet.yaml");
        let text = fs::read_to_string(&path).unwrap().replacen(
            "    disruptive:\n",
            "    disruptive:\n      - { match: \"sys-apps/man-db\", restart: [apache2] }\n",
            1,
        );
        fs::write(&path, text).unwrap();
    };
    let f2: Vec<Arc<Node>> = fleet.farm_nodes("f2").into_iter().cloned().collect();
    let pkg = |n: &Node, base: &Path, atom: &str| {
        base.join("var/db/pkg").join(atom).is_dir() || {
            let _ = n;
            false
        }
    };

    // 1: the kernel (a reboot).
    let kernel =
        Target { packages: vec!["base".into(), "web-2026.10".into(), "kernel-6.6.62".into()], ..Target::initial() };
    write(&mut fleet, &kernel);
    let (code, json, log) = reconcile_under_load(&fleet, &["sn"], &["--stall", "60s"]);
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(json["converged"], true, "{log}");
    let mut first = Vec::new();
    for n in &f2 {
        let snaps = drovers(n);
        assert_eq!(snaps.len(), 1, "{}: {snaps:?}\n{log}", n.name);
        let s = n.root.join(".snapshots").join(&snaps[0]);
        // Taken before the upgrade's effect: the old kernel only.
        assert!(pkg(n, &s, "sys-kernel/gentoo-kernel-bin-6.6.58"), "{}", n.name);
        assert!(!pkg(n, &s, "sys-kernel/gentoo-kernel-bin-6.6.62"), "{}: snapshot after the upgrade", n.name);
        assert!(pkg(n, &n.root, "sys-kernel/gentoo-kernel-bin-6.6.62"), "{}", n.name);
        assert!(n.disk().as_ref().unwrap().subvolumes().contains(&format!("snapshots/{}", snaps[0])));
        first.push(snaps[0].clone());
    }
    assert!(log.contains("snapshot root filesystem as drover-"), "{log}");
    for n in fleet.farm_nodes("f1") {
        assert!(!n.root.join(".snapshots").exists(), "{}: its profile declares no snapshot", n.name);
    }

    // 2: openssl (a restart).
    let openssl = Target { packages: vec!["base".into(), "web-2026.11".into(), "kernel-6.6.62".into()], ..kernel };
    write(&mut fleet, &openssl);
    let (code, _, log) = reconcile_under_load(&fleet, &["sn"], &["--stall", "60s"]);
    assert_eq!(code, Some(0), "{log}");
    let second: Vec<String> = f2.iter().map(|n| drovers(n).last().unwrap().clone()).collect();

    // 3: man-db, failing on f2-n2 once its window opened (after the fetch).
    let mandb =
        Target { packages: vec!["base-2026.11".into(), "web-2026.11".into(), "kernel-6.6.62".into()], ..openssl };
    write(&mut fleet, &mandb);
    let bad = Arc::clone(&f2[1]);
    let lb = &fleet.site("sn").lb;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (code, json, log) = std::thread::scope(|sc| {
        sc.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let out = lb.cmd("show servers state f2");
                if super::lb::parse_servers_state(&out).iter().any(|s| s.srv_name == "f2-n2" && s.admin_state != 0) {
                    bad.set_fault(super::node::fault::EMERGE_FAIL, "sys-apps/man-db-2.13.0\n");
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        });
        let r = reconcile_under_load(&fleet, &["sn"], &["--stall", "30s"]);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        r
    });
    // One failure is within the budget (2): the run ends as for any failed node.
    assert!(code.is_some(), "{log}");
    let third = drovers(&bad).last().unwrap().clone();
    let failed = json["failed"].to_string();
    assert!(failed.contains("f2-n2") && failed.contains("man-db"), "{failed}\n{log}");
    // keep 2 over three upgrades: the first snapshots are gone.
    for (i, n) in f2.iter().enumerate() {
        let snaps = drovers(n);
        assert_eq!(snaps.len(), 2, "{}: {snaps:?}", n.name);
        assert!(!snaps.contains(&first[i]) && snaps.contains(&second[i]), "{}: {snaps:?}", n.name);
    }
    let state = state_dir(&fleet);
    let o = drover(&fleet, &state, &["--output", "json", "status", "--direct"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    let node = v["sites"][0]["farms"][1]["nodes"][1].clone();
    assert_eq!(node["name"], "f2-n2");
    // The journal's failure names the snapshot to roll back to.
    let why = node["failed"].as_str().unwrap_or("");
    assert!(why.contains(&third) && why.contains("rollback-node"), "{node}");
    assert_eq!(node["snapshots"], serde_json::json!(drovers(&bad)), "{node}");

    // Rolled back (the node is failed, in maint) to before the openssl upgrade.
    let o = drover(&fleet, &state, &["rollback-node", "f2-n1", "--snapshot", &second[0]]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "f2-n1 serves: {}", text(&o));
    assert!(pkg(&bad, &bad.root, "dev-libs/openssl-3.0.15-r1"));
    let o = drover(&fleet, &state, &["rollback-node", "f2-n2", "--snapshot", &second[1]]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(pkg(&bad, &bad.root, "dev-libs/openssl-3.0.15"), "the upgrade's package database is back");
    assert!(!pkg(&bad, &bad.root, "dev-libs/openssl-3.0.15-r1"));
    let o = drover(&fleet, &state, &["status", "--direct"]).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out.lines().find(|l| l.contains("    f2-n2 ")).unwrap_or_default().to_string();
    assert!(line.contains(&format!("rolled back to {}", second[1])) && line.contains("reboot done"), "{out}");
    assert!(super::e2e::servers_out(&fleet, &["f2-n2"]).is_empty());
    assert!(!super::e2e::servers_out(&fleet, &[]).is_empty(), "f2-n2 stays out of the LB");
}
