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
    // The fleet's spec names its key and known_hosts by absolute path: the operator allows it.
    c.env("DROVER_CREDENTIALS_DIR", &fleet.dir);
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

pub fn state_dir(fleet: &TestFleet) -> PathBuf {
    fleet.dir.join("drover-state")
}

/// The load saw no failed request and no regression, every node runs `to`,
/// and no server is left out of service.
pub fn assert_rolled_out(fleet: &TestFleet, to: &Target, reports: &[(String, LoadReport)]) {
    for (site, r) in reports {
        eprintln!("{site}: {}", r.summary());
        r.assert_clean();
        // The sessions went through the site's real Apache + php-fpm nodes too.
        let by_node = r.by_node();
        let real: Vec<&str> = fleet
            .nodes
            .iter()
            .filter(|n| &n.site == site && n.stack == super::node::WebStack::Real)
            .map(|n| n.name.as_str())
            .collect();
        assert!(
            real.is_empty() || real.iter().any(|n| by_node.contains_key(*n)),
            "{site}: no session reached a real node {real:?}: {by_node:?}"
        );
    }
    assert_converged(fleet, to);
    assert!(servers_out(fleet, &[]).is_empty(), "{:?}", servers_out(fleet, &[]));
}

/// Writes `to` as the target and runs `reconcile --once` under load on every
/// site: it must exit 0, report converged, and `assert_rolled_out`.
/// Returns the whole output.
fn converge(fleet: &mut TestFleet, to: &Target) -> String {
    fleet.write_spec(to);
    let gens = load_all(fleet);
    let out = drover(fleet, &state_dir(fleet), &["--output", "json", "reconcile", "--once", "--stall", "60s"])
        .output()
        .unwrap();
    let reports = stop_all(gens);
    let log = text(&out);
    eprintln!("{log}");
    assert_eq!(out.status.code(), Some(0), "drover reconcile --once:\n{log}");
    assert_eq!(summary(&out)["converged"], true, "{log}");
    assert_rolled_out(fleet, to, &reports);
    log
}

/// `reconcile --once --output json <args>` with default load through `sites`,
/// which must see no failed request and no regression. Returns the exit
/// code, the JSON summary and the whole output.
pub fn reconcile_under_load(
    fleet: &TestFleet,
    sites: &[&str],
    args: &[&str],
) -> (Option<i32>, serde_json::Value, String) {
    let gens: Vec<_> = sites.iter().map(|s| (s.to_string(), fleet.loadgen(s, LoadOptions::default()))).collect();
    let mut all = vec!["--output", "json", "reconcile", "--once"];
    all.extend_from_slice(args);
    let out = drover(fleet, &state_dir(fleet), &all).output().unwrap();
    let log = text(&out);
    eprintln!("{log}");
    for (site, r) in stop_all(gens) {
        eprintln!("{site}: {}", r.summary());
        r.assert_clean();
    }
    (out.status.code(), summary(&out), log)
}

#[test]
fn app_release_switch_farm_by_farm_with_memcached_flushed() {
    let mut fleet = TestFleet::start("e2e-release", FleetOptions::full(Topology::standard()));
    let to = Target { release: "2026.11.2".into(), ..Target::initial() };
    let log = converge(&mut fleet, &to);
    assert!(log.contains("flush memcached"), "{log}");
    // Converged means nothing more to do: plan exits 0.
    let again = drover(&fleet, &state_dir(&fleet), &["plan"]).output().unwrap();
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));

    // Outside every change window: the next release is staged, nothing else
    // changes, and the run ends at once with 2, saying when the window opens.
    fleet.add_release("2026.11.3", false);
    fleet.write_spec(&Target { release: "2026.11.3".into(), ..Target::initial() });
    let today = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 86_400;
    let day = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][((today + 3 + 2) % 7) as usize]; // in two days
    let spec = fleet.spec_dir.join("fleet.yaml");
    let text_now = std::fs::read_to_string(&spec).unwrap();
    let windowed = text_now.replacen(
        "    failure_budget:",
        &format!("    change_windows: [{{ days: [{day}], start: \"01:00\", end: \"02:00\" }}]\n    failure_budget:"),
        1,
    );
    assert_ne!(windowed, text_now);
    std::fs::write(&spec, windowed).unwrap();
    let (code, json, log) = reconcile_under_load(&fleet, &["par1", "fra1"], &[]);
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("WAITING") && !log.contains("STUCK"), "{log}");
    assert!(json["change_window_opens"].as_str().unwrap().ends_with(" 01:00 UTC"), "{json}");
    for n in &fleet.nodes {
        assert_eq!(n.active_release().as_deref(), Some("2026.11.2"), "{} switched outside the window", n.name);
        assert!(n.root.join("srv/app/releases/2026.11.3").is_dir(), "{}: the release was not staged", n.name);
    }
    assert!(servers_out(&fleet, &[]).is_empty(), "{:?}", servers_out(&fleet, &[]));
}

/// Servers in drain or maint on any LB, except `allowed` (by server name).
pub fn servers_out(fleet: &TestFleet, allowed: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for s in &fleet.sites {
        for st in super::lb::parse_servers_state(&s.lb.cmd("show servers state")) {
            if st.admin_state != 0 && !allowed.contains(&st.srv_name.as_str()) {
                out.push(format!("{}/{}/{} admin {:#x}", s.name, st.be_name, st.srv_name, st.admin_state));
            }
        }
    }
    out
}

fn production_nodes(fleet: &TestFleet) -> Vec<&std::sync::Arc<super::node::Node>> {
    fleet.nodes.iter().filter(|n| n.site != "preprod").collect()
}

#[test]
fn disruptive_kernel_and_openssl_upgrade_in_member_waves() {
    let mut fleet = TestFleet::start("e2e-kernel", FleetOptions::full(Topology::standard()));
    let boot: Vec<String> = fleet.nodes.iter().map(|n| n.boot_id()).collect();
    let to = Target { packages: Target::upgraded().packages, ..Target::initial() };
    let log = converge(&mut fleet, &to);
    for (n, before) in fleet.nodes.iter().zip(&boot) {
        assert_ne!(&n.boot_id(), before, "{} did not reboot", n.name);
        assert_eq!(n.running_kernel(), "6.6.62-gentoo-dist", "{}", n.name);
    }
    // Member waves: in each farm at most one node (max_unavailable 1) out at a time.
    assert!(log.contains("[wave 1]") && log.contains("[wave 3]"), "{log}");
}

#[test]
fn php_switch_farm_by_farm() {
    let mut fleet = TestFleet::start("e2e-php", FleetOptions::full(Topology::standard()));
    let to = Target { php: "8.3.14".into(), ..Target::initial() };
    converge(&mut fleet, &to);
}

#[test]
fn kernel_openssl_php_and_release_at_once() {
    let mut fleet = TestFleet::start("e2e-all", FleetOptions::full(Topology::standard()));
    let to = Target::upgraded();
    converge(&mut fleet, &to);
    for n in &fleet.nodes {
        assert_eq!(n.running_kernel(), "6.6.62-gentoo-dist", "{}", n.name);
    }
}

#[test]
fn a_preproduction_health_failure_stops_production_from_changing() {
    let mut fleet = TestFleet::start("e2e-gate", FleetOptions::full(Topology::standard()));
    fleet.add_release("2026.11.9", true);
    let to = Target { release: "2026.11.9".into(), ..Target::initial() };
    fleet.write_spec(&to);
    let (code, json, log) = reconcile_under_load(&fleet, &["par1", "fra1"], &["--stall", "15s"]);
    assert_ne!(code, Some(0), "a failed preproduction must not report success:\n{log}");
    assert_eq!(json["converged"], false);
    let failed = json["failed"].to_string();
    // Either preproduction farm may be the first to switch (whichever finished staging first).
    let a_preprod_check_failed =
        ["pp-f1-n1", "pp-f1-n2", "pp-f2-n1", "pp-f2-n2"].iter().any(|n| failed.contains(&format!("{n}: health check")));
    assert!(a_preprod_check_failed && failed.contains("status 500"), "{failed}");
    assert!(!failed.contains("par1-") && !failed.contains("fra1-"), "{failed}");
    for n in production_nodes(&fleet) {
        assert_eq!(n.active_release().as_deref(), Some("2026.11.1"), "{} changed", n.name);
    }
    assert!(servers_out(&fleet, &["pp-f1", "pp-f2", "pp-f1-n1", "pp-f1-n2", "pp-f2-n1", "pp-f2-n2"]).is_empty());
}

#[test]
fn faults_name_the_node_and_the_step_and_stay_within_the_budget() {
    let mut fleet = TestFleet::start("e2e-faults", FleetOptions::full(Topology::standard()));
    // An emerge that fails on one node, and a node that never comes back from its reboot.
    fleet.node("par1-f1-n2").set_fault(super::node::fault::EMERGE_FAIL, "");
    fleet.node("fra1-f2-n3").set_fault(super::node::fault::REBOOT_HANG, "");
    let to = Target { packages: Target::upgraded().packages, ..Target::initial() };
    fleet.write_spec(&to);
    let (_, json, _) =
        reconcile_under_load(&fleet, &["preprod", "par1", "fra1"], &["--reboot-timeout", "6s", "--stall", "30s"]);
    let failed = json["failed"].to_string();
    assert!(failed.contains("par1-f1-n2") && failed.contains("emerge"), "{failed}");
    // par1-f1 runs real Portage: the packages were fetched, and the real
    // install died in the package's own pkg_preinst (the fault eclass).
    let bad = fleet.node("par1-f1-n2");
    assert!(bad.real_portage());
    super::packages_e2e::assert_failed_at_install(bad, "dev-libs/openssl-3.0.15-r1");
    assert!(failed.contains("fra1-f2-n3") && failed.contains("did not come back from reboot"), "{failed}");
    // Two failures are within the budget (2): every other node converged.
    for n in fleet.nodes.iter().filter(|n| n.name != "par1-f1-n2" && n.name != "fra1-f2-n3") {
        assert_eq!(n.running_kernel(), "6.6.62-gentoo-dist", "{}", n.name);
    }
    // No healthy node is left drained; the failed ones may stay out.
    assert!(
        servers_out(&fleet, &["par1-f1-n2", "fra1-f2-n3"]).is_empty(),
        "{:?}",
        servers_out(&fleet, &["par1-f1-n2", "fra1-f2-n3"])
    );
}

#[test]
fn a_wrong_host_key_an_unreachable_node_and_a_missing_lb_socket_are_clear_errors() {
    let fleet = TestFleet::start("e2e-refuse", FleetOptions::full(Topology::standard()));
    let state = state_dir(&fleet);
    // A known_hosts where one node's key is another node's.
    let a = fleet.node("par1-f1-n1");
    let b = fleet.node("par1-f1-n2");
    let lines = std::fs::read_to_string(&fleet.known_hosts).unwrap();
    let host = |ip: std::net::IpAddr| format!("{ip} ");
    let b_key = lines.lines().find(|l| l.starts_with(&host(b.ssh.ip()))).unwrap().to_string();
    let forged: String = lines
        .lines()
        .filter(|l| !l.starts_with(&host(a.ssh.ip())))
        .map(|l| format!("{l}\n"))
        .chain([b_key.replacen(&b.ssh.ip().to_string(), &a.ssh.ip().to_string(), 1) + "\n"])
        .collect();
    let wrong = fleet.dir.join("known_hosts.forged");
    std::fs::write(&wrong, forged).unwrap();
    let out = drover(&fleet, &state, &["plan", "--known-hosts", wrong.to_str().unwrap()]).output().unwrap();
    let log = text(&out);
    assert!(log.contains("par1-f1-n1") || log.contains(&a.ssh.ip().to_string()), "{log}");
    assert!(log.contains("unreachable") && log.to_lowercase().contains("host key"), "{log}");

    // An unreachable node (its sshd down) is reported by name.
    let c = fleet.node("fra1-f1-n1");
    let pid = c.sshd_pid().unwrap();
    unsafe { libc_kill(pid as i32, 9) };
    std::thread::sleep(Duration::from_millis(300));
    let out = drover(&fleet, &state, &["plan"]).output().unwrap();
    let log = text(&out);
    assert!(log.contains(&c.ssh.ip().to_string()) && log.contains("cannot connect"), "{log}");

    // The HAProxy socket of a site missing: an error naming the site, nothing touched.
    let par1 = fleet.site("par1");
    let super::lb::AdminAddr::Unix(sock) = &par1.lb.admin else { panic!("par1 has a unix socket") };
    std::fs::rename(sock, sock.with_extension("moved")).unwrap();
    let out = drover(&fleet, &state, &["reconcile", "--once", "--stall", "20s"]).output().unwrap();
    let log = text(&out);
    std::fs::rename(sock.with_extension("moved"), sock).unwrap();
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("par1") && log.contains(&*sock.to_string_lossy()), "{log}");
    assert!(servers_out(&fleet, &[]).is_empty());
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// Starts a rollout, sends `signal` to drover once a production farm is being
/// switched, checks what the journal then holds, and runs drover again: it
/// must resume and converge with no failed request and no regression.
fn stop_mid_switch_then_resume(test: &str, signal: i32) {
    use std::io::{BufRead, BufReader};
    let mut fleet = TestFleet::start(test, FleetOptions::full(Topology::standard()));
    let to = Target { release: "2026.11.2".into(), php: "8.3.14".into(), ..Target::initial() };
    fleet.write_spec(&to);
    let gens = load_all(&fleet);
    let state = state_dir(&fleet);
    let mut child = drover(&fleet, &state, &["reconcile", "--once", "--stall", "60s"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = String::new();
    let mut signalled = false;
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        // While it runs, a second drover on the same fleet is refused.
        if line.contains(" start ") && !seen.contains("second drover checked") {
            let second = drover(&fleet, &state, &["reconcile", "--once"]).output().unwrap();
            assert_eq!(second.status.code(), Some(1), "{}", text(&second));
            assert!(text(&second).contains("another drover holds the lease"), "{}", text(&second));
            seen.push_str("second drover checked\n");
        }
        // A production farm is out and being switched: signal now.
        if !signalled && line.contains("start") && line.contains("par1-f1") && line.contains("activate") {
            unsafe { libc_kill(child.id() as i32, signal) };
            signalled = true;
            if signal == 9 {
                break;
            }
        }
    }
    let status = child.wait().unwrap();
    assert!(signalled, "never saw a production farm switch:\n{seen}");
    // Read as `drover status` does (after a SIGKILL this recovers the file).
    let peek = drover::control::journal::Journal::peek(&state.join("journal.redb"), 100, &fleet.model).unwrap();
    let (memory, ops) = (peek.loaded.memory, peek.ops);
    let journal = serde_json::to_value(&memory).unwrap();
    // The operations log was written with the memory: the switch that was signalled is in it.
    assert!(ops.iter().any(|r| r.event == drover::control::journal::OpEvent::Begin && r.kind == "activate"), "{ops:?}");
    if signal == 9 {
        // Killed mid-switch: the journal knows the farm is out.
        assert!(journal["farm_ops"].as_object().is_some_and(|o| !o.is_empty()), "{journal}");
    } else {
        // Stopped: what ran has finished, and drover said what it left open.
        assert_eq!(status.code(), Some(130), "{seen}");
        assert!(seen.contains("INTERRUPTED"), "{seen}");
        assert_eq!(journal["in_flight"], serde_json::json!([]), "{journal}");
    }
    // The restarted drover resumes from its journal and converges.
    let out = drover(&fleet, &state, &["--output", "json", "reconcile", "--once", "--stall", "60s"]).output().unwrap();
    let log = text(&out);
    eprintln!("{seen}\n--- restarted ---\n{log}");
    let reports = stop_all(gens);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert_rolled_out(&fleet, &to, &reports);
}

#[test]
fn kill_9_in_the_middle_of_a_farm_switch_then_resume() {
    stop_mid_switch_then_resume("e2e-crash", 9);
}

#[test]
fn sigterm_in_the_middle_of_a_farm_switch_finishes_running_actions_then_resume() {
    stop_mid_switch_then_resume("e2e-term", 15);
}

#[test]
fn an_unreachable_node_fails_alone_and_an_operators_maint_is_respected() {
    let mut fleet = TestFleet::start("e2e-down", FleetOptions::full(Topology::standard()));
    // A node that is gone (sshd and web server), and one an operator holds out.
    fleet.node("fra1-f2-n2").shut_down();
    fleet.site("par1").lb.set("set server par1-f2/par1-f2-n1 state maint");
    // openssl needs a restart: a node window on every node.
    let to =
        Target { packages: vec!["base".into(), "web-2026.11".into(), "kernel-6.6.58".into()], ..Target::initial() };
    fleet.write_spec(&to);
    let plan = drover(&fleet, &state_dir(&fleet), &["plan"]).output().unwrap();
    let log = text(&plan);
    // Changes are pending, but a node could not be observed: that outranks them.
    assert_eq!(plan.status.code(), Some(4), "{log}");
    assert!(log.contains("held by an operator (not touched): node par1-f2-n1"), "{log}");
    assert!(log.contains("unreachable: node fra1-f2-n2"), "{log}");
    assert!(!log.contains("held by an operator (not touched): node fra1-f2-n2"), "{log}");
    // `drover status` shows the same fleet, node by node.
    let status = drover(&fleet, &state_dir(&fleet), &["--output", "json", "status", "--direct"]).output().unwrap();
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    let doc: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let nodes: Vec<&serde_json::Value> = doc["sites"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["farms"].as_array().unwrap())
        .flat_map(|f| f["nodes"].as_array().unwrap())
        .collect();
    assert_eq!(nodes.len(), 16);
    let node = |name: &str| *nodes.iter().find(|n| n["name"] == name).unwrap();
    assert_eq!(node("fra1-f2-n2")["reachable"], false);
    assert!(node("fra1-f2-n2")["error"].as_str().unwrap().contains("cannot connect"));
    assert_eq!(node("par1-f2-n1")["lb"]["admin"], "maint");
    assert_eq!(node("par1-f1-n1")["php"], "8.2.27");
    assert_eq!(node("par1-f1-n1")["release"], "2026.11.1");
    assert_eq!(node("par1-f1-n1")["kernel_running"], "6.6.58-gentoo-dist");
    assert!(node("par1-f1-n1")["drift"].to_string().contains("openssl"), "{}", node("par1-f1-n1"));
    let (code, json, log) = reconcile_under_load(&fleet, &["preprod", "par1", "fra1"], &["--stall", "10s"]);
    // Not converged while an operator holds a node that needs work: said so, not success.
    assert_eq!(code, Some(1), "{log}");
    let failed = json["failed"].to_string();
    assert!(failed.contains("fra1-f2-n2") && failed.contains("unreachable for 5s"), "{log}");
    assert!(json["held"].to_string().contains("par1-f2-n1"), "{log}");
    // The operator's maint stands, and counts as par1-f2's one node out
    // (max_unavailable 1): the rest of that farm waits, serving. Every other
    // reachable node was upgraded and is back.
    let out_now = servers_out(&fleet, &[]);
    assert!(out_now.iter().any(|s| s.contains("par1-f2-n1")), "operator maint was lifted: {out_now:?}");
    assert_eq!(servers_out(&fleet, &["par1-f2-n1", "fra1-f2-n2"]), Vec::<String>::new());
    assert!(log.contains("par1-f2") && json["blocked"].to_string().len() > 2 || log.contains("STUCK"), "{log}");
    for n in fleet.nodes.iter().filter(|n| n.name != "fra1-f2-n2" && n.farm != "par1-f2") {
        assert!(n.installed().contains(&"dev-libs/openssl-3.0.15-r1".to_string()), "{}", n.name);
    }
    assert!(!fleet.node("par1-f2-n1").installed().contains(&"dev-libs/openssl-3.0.15-r1".to_string()));
}
