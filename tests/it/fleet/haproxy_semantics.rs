//! The HAProxy behaviour drover relies on, verified against a real HAProxy
//! running the configuration `drover render haproxy` generates. Every claim
//! of docs/haproxy-semantics.md names the test here that verifies it.
//!
//! Fleet: one site `hs`, farms f1, f2, f3 of two nodes each (`f1-n1`,
//! `f1-n2`, ...); the site backend is `site`, its pseudo-servers and cookie
//! values are the farm names, and each farm's listener is the proxy named
//! after the farm.

use std::collections::{BTreeMap, BTreeSet};
use std::thread;
use std::time::{Duration, Instant};

use super::http::{Client, Response};
use super::lb::{ADMIN_FDRAIN, ADMIN_FMAINT, OP_RUNNING, OP_STOPPED, SiteLb, parse_stat};
use super::loadgen::LoadOptions;
use super::node::fault;
use super::{Admin, FleetOptions, TestFleet, Topology};

const SITE: &str = "hs";
/// Health-check driven transitions (inter 1s, fall 1-2, rise 2) settle within this.
const SETTLE: Duration = Duration::from_secs(8);

fn fleet(test: &str, admin: Admin) -> TestFleet {
    TestFleet::start(test, FleetOptions::lb_only(Topology::single_site(SITE, 3, 2, admin)))
}

fn farm_of(node: &str) -> &str {
    node.rsplit_once("-n").map(|(f, _)| f).unwrap_or(node)
}

/// A session that already carries the farm cookie of `farm`.
fn session_on(lb: &SiteLb, farm: &str) -> Client {
    let mut c = Client::new(lb.frontend);
    c.jar.insert("FARMID".into(), farm.into());
    c
}

struct Hit {
    node: String,
    /// FARMID value set by this response, if any.
    set: Option<String>,
    response: Response,
}

fn hit(c: &mut Client) -> Hit {
    let r = c.get("/").expect("request through the site LB");
    assert_eq!(r.status, 200, "{}", r.body);
    Hit {
        node: r.node().to_string(),
        set: r.set_cookies().into_iter().find(|(k, _)| k == "FARMID").map(|(_, v)| v),
        response: r,
    }
}

fn hits(c: &mut Client, n: usize) -> Vec<Hit> {
    (0..n).map(|_| hit(c)).collect()
}

fn nodes(hits: &[Hit]) -> BTreeSet<String> {
    hits.iter().map(|h| h.node.clone()).collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// A 2-second request of a session of `farm`, returned once it is in flight
/// (counted in `site/<farm>` scur).
fn slow_request(lb: &SiteLb, farm: &str) -> thread::JoinHandle<std::io::Result<Response>> {
    let mut c = session_on(lb, farm);
    let slow = thread::spawn(move || c.get("/slow?s=2"));
    let in_flight =
        super::procs::wait_for(Duration::from_secs(5), || (lb.stat_of("site", farm).scur == 1).then_some(()));
    assert!(in_flight.is_some(), "the slow request on {farm} is in flight");
    slow
}

/// The farms `n` new sessions (no cookie) are assigned to, with their count.
fn new_sessions(lb: &SiteLb, n: usize) -> BTreeMap<String, usize> {
    let mut farms = BTreeMap::new();
    for _ in 0..n {
        let mut c = Client::new(lb.frontend);
        let h = hit(&mut c);
        let farm = h.set.expect("a new session gets a farm cookie");
        assert_eq!(farm_of(&h.node), farm, "served by the farm of its cookie");
        *farms.entry(farm).or_default() += 1;
    }
    farms
}

#[test]
fn cookie_pins_a_session_to_its_farm_and_balances_inside_it() {
    let fleet = fleet("hs-cookie", Admin::Tcp);
    let lb = &fleet.site(SITE).lb;

    // New sessions are shared round-robin between the farms.
    let farms = new_sessions(lb, 6);
    assert_eq!(farms, BTreeMap::from([("f1".into(), 2), ("f2".into(), 2), ("f3".into(), 2)]));

    // A session stays on its farm and alternates over the farm's nodes; the
    // cookie is set once, and never reaches the nodes (`indirect`).
    let mut c = Client::new(lb.frontend);
    let first = hit(&mut c);
    let farm = first.set.clone().expect("cookie set on the first response");
    let mut later = hits(&mut c, 10);
    c.disconnect(); // stickiness is the cookie's, not the connection's
    later.extend(hits(&mut c, 4));
    assert!(later.iter().all(|h| farm_of(&h.node) == farm));
    assert_eq!(nodes(&later), set(&[&format!("{farm}-n1"), &format!("{farm}-n2")]));
    assert!(later.iter().all(|h| h.set.is_none()), "cookie set only once");
    for h in std::iter::once(&first).chain(&later) {
        let names = h.response.header("x-cookie-names").unwrap_or("");
        assert!(!names.contains("FARMID"), "FARMID reached the node: {names}");
    }
    // `nocache`: a cacheable response that inserts the farm cookie is marked
    // private, so a shared cache never hands one farm cookie to everyone.
    let r = Client::new(lb.frontend).get("/static").unwrap();
    assert!(r.set_cookies().iter().any(|(k, _)| k == "FARMID"));
    let cache: Vec<&str> =
        r.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case("cache-control")).map(|(_, v)| v.as_str()).collect();
    assert!(cache.contains(&"private"), "{:?}", r.headers);
}

#[test]
fn node_drain_maint_or_weight_0_moves_only_that_nodes_traffic_inside_the_farm() {
    let fleet = fleet("hs-node", Admin::UnixOverSsh);
    let lb = &fleet.site(SITE).lb;
    for (action, undo) in [
        ("set server f1/f1-n1 state drain", "set server f1/f1-n1 state ready"),
        ("set server f1/f1-n1 state maint", "set server f1/f1-n1 state ready"),
        ("set weight f1/f1-n1 0", "set weight f1/f1-n1 100%"),
    ] {
        lb.set(action);
        let mut s1 = session_on(lb, "f1");
        let h1 = hits(&mut s1, 8);
        assert_eq!(nodes(&h1), set(&["f1-n2"]), "after `{action}`");
        assert!(h1.iter().all(|h| h.set.is_none()), "cookie kept after `{action}`");
        let mut s2 = session_on(lb, "f2");
        assert_eq!(nodes(&hits(&mut s2, 6)), set(&["f2-n1", "f2-n2"]));
        // The farm still takes new sessions: it has a usable node.
        assert!(new_sessions(lb, 6).contains_key("f1"), "after `{action}`");
        lb.set(undo);
    }

    // Draining every node of a farm one by one leaves its listener no usable
    // server: the farm reports itself down and its sessions move, re-stuck
    // with a new cookie. drover must drain a farm on the site backend instead.
    lb.set("set server f1/f1-n1 state drain");
    lb.set("set server f1/f1-n2 state drain");
    let t = Instant::now();
    lb.wait_status("site", "f1", "DOWN", SETTLE);
    let down_after = t.elapsed();
    let mut s1 = session_on(lb, "f1");
    let h = hit(&mut s1);
    let moved_to = h.set.clone().expect("a new farm cookie");
    assert_ne!(moved_to, "f1");
    assert_eq!(farm_of(&h.node), moved_to);
    assert!(hits(&mut s1, 4).iter().all(|h| farm_of(&h.node) == moved_to && h.set.is_none()));
    lb.set("set server f1/f1-n1 state ready");
    lb.set("set server f1/f1-n2 state ready");
    lb.wait_status("site", "f1", "UP", SETTLE);
    eprintln!("all nodes of f1 drained: site/f1 DOWN after {down_after:.2?}");
}

#[test]
fn farm_weight_0_or_drain_keeps_its_sessions_and_takes_no_new_ones() {
    let fleet = fleet("hs-farm-weight", Admin::Tcp);
    let lb = &fleet.site(SITE).lb;
    lb.set("set weight site/f2 0");
    lb.set("set server site/f3 state drain");

    for farm in ["f2", "f3"] {
        let mut s = session_on(lb, farm);
        let h = hits(&mut s, 8);
        assert_eq!(
            nodes(&h),
            set(&[&format!("{farm}-n1"), &format!("{farm}-n2")]),
            "old sessions of {farm} stay on it, balanced over its nodes"
        );
        assert!(h.iter().all(|h| h.set.is_none()));
    }
    assert_eq!(new_sessions(lb, 9), BTreeMap::from([("f1".into(), 9)]));

    let f2 = lb.stat_of("site", "f2");
    assert_eq!((f2.status.as_str(), f2.weight), ("UP", 0));
    let f3 = lb.stat_of("site", "f3");
    assert_eq!((f3.status.as_str(), f3.weight), ("DRAIN", 100));

    // With no farm taking new sessions, a new session is refused (503) while
    // existing sessions are still served.
    lb.set("set weight site/f1 0");
    let mut c = Client::new(lb.frontend);
    let r = c.get("/").unwrap();
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(hit(&mut session_on(lb, "f1")).node.starts_with("f1-"));
}

#[test]
fn farm_maint_hands_its_sessions_to_the_farms_taking_new_ones() {
    let fleet = fleet("hs-farm-maint", Admin::UnixOverSsh);
    let lb = &fleet.site(SITE).lb;
    // f1 is upgraded (takes new sessions), f2 is old and keeps its sessions
    // (weight 0), f3 is the farm being switched.
    lb.set("set weight site/f2 0");
    let mut old2 = session_on(lb, "f2");
    hit(&mut old2);
    let mut old3: Vec<Client> = (0..6).map(|_| session_on(lb, "f3")).collect();
    for c in &mut old3 {
        assert_eq!(farm_of(&hit(c).node), "f3");
    }
    // A request in flight on f3 when it goes to maint.
    let slow = slow_request(lb, "f3");
    lb.set("set server site/f3 state maint");

    for c in &mut old3 {
        let h = hit(c);
        assert_eq!(h.set.as_deref(), Some("f1"), "re-stuck to the farm taking new sessions");
        assert_eq!(farm_of(&h.node), "f1");
        let next = hits(c, 3);
        assert!(next.iter().all(|h| farm_of(&h.node) == "f1" && h.set.is_none()));
    }
    assert!(hits(&mut old2, 4).iter().all(|h| farm_of(&h.node) == "f2"));

    let r = slow.join().unwrap().expect("in-flight request");
    assert_eq!((r.status, farm_of(r.node())), (200, "f3"), "maint lets it finish");

    let st = lb.server_state("site", "f3");
    assert_eq!((st.op_state, st.admin_state), (OP_STOPPED, ADMIN_FMAINT));
    assert_eq!(lb.stat_of("site", "f3").status, "MAINT");
}

#[test]
fn runtime_api_reports_admin_and_operational_state() {
    let fleet = fleet("hs-api", Admin::Tcp);
    let lb = &fleet.site(SITE).lb;

    // `show stat`: CSV whose `# ` header has the columns drover reads at
    // these 1-based positions.
    let csv = lb.cmd("show stat");
    let header: Vec<&str> = csv.lines().next().unwrap()[2..].split(',').collect();
    for (pos, name) in [
        (1, "pxname"),
        (2, "svname"),
        (3, "qcur"),
        (5, "scur"),
        (8, "stot"),
        (18, "status"),
        (19, "weight"),
        (37, "check_status"),
    ] {
        assert_eq!(header[pos - 1], name, "show stat column {pos}");
    }
    assert!(parse_stat(&csv).iter().any(|r| r.svname == "FRONTEND"));

    // `show servers state`: a format version line, a `#` header, one line per server.
    let text = lb.cmd("show servers state");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("1"));
    assert!(
        lines.next().unwrap().starts_with(
            "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight"
        )
    );

    lb.set("set server f1/f1-n1 state drain");
    lb.set("set weight f2/f2-n1 0");
    lb.set("set server f3/f3-n1 state maint");
    let st = lb.server_state("f1", "f1-n1");
    assert_eq!((st.op_state, st.admin_state), (OP_RUNNING, ADMIN_FDRAIN));
    let st = lb.server_state("f2", "f2-n1");
    assert_eq!((st.op_state, st.admin_state), (OP_RUNNING, 0));
    assert_eq!((st.uweight, st.iweight), (0, 100));
    let st = lb.server_state("f3", "f3-n1");
    assert_eq!((st.op_state, st.admin_state), (OP_STOPPED, ADMIN_FMAINT));
    let row = lb.stat_of("f1", "f1-n1");
    assert_eq!((row.status.as_str(), row.weight), ("DRAIN", 100));
    let row = lb.stat_of("f2", "f2-n1");
    assert_eq!((row.status.as_str(), row.weight), ("UP", 0));
    assert_eq!(lb.stat_of("f3", "f3-n1").status, "MAINT");
    assert_eq!(lb.cmd("get weight f2/f2-n1").trim(), "0 (initial 100)");
    lb.set("set server f1/f1-n1 state ready");
    lb.set("set weight f2/f2-n1 100%");
    assert_eq!(lb.cmd("get weight f2/f2-n1").trim(), "100 (initial 100)");

    // scur counts requests in flight, per node and per farm; drain waits
    // for it to reach 0 while the request completes normally.
    let slow = slow_request(lb, "f1");
    let busy: Vec<_> =
        lb.stat().into_iter().filter(|r| r.pxname == "f1" && r.scur == 1 && r.svname.starts_with("f1-")).collect();
    assert_eq!(busy.len(), 1, "one f1 node serves the slow request");
    let node = busy[0].svname.clone();
    assert_eq!(lb.stat_of("site", "f1").scur, 1);
    assert_eq!(lb.stat_of("f1", "BACKEND").scur, 1);
    lb.set(&format!("set server f1/{node} state drain"));
    // Meanwhile the farm's other node serves the farm's sessions.
    let other = hits(&mut session_on(lb, "f1"), 4);
    assert!(other.iter().all(|h| h.node != node));
    let t = Instant::now();
    let drained = super::procs::wait_for(Duration::from_secs(5), || {
        let r = lb.stat_of("f1", &node);
        (r.scur == 0 && r.qcur == 0).then_some(())
    });
    assert!(drained.is_some(), "scur of drained {node} reached 0");
    let r = slow.join().unwrap().unwrap();
    assert_eq!((r.status, r.node()), (200, node.as_str()));
    eprintln!("drain wait: scur of f1/{node} reached 0 after {:.2?}", t.elapsed());
}

#[test]
fn server_state_file_keeps_runtime_state_across_reload() {
    let mut fleet = fleet("hs-reload", Admin::UnixOverSsh);
    let lb = &mut fleet.site_mut(SITE).lb;
    let drained = |lb: &SiteLb| lb.server_state("f1", "f1-n1").admin_state & ADMIN_FDRAIN != 0;
    let f2_weight = |lb: &SiteLb| lb.server_state("site", "f2").uweight;

    // 1. Without the file, a reload forgets runtime state.
    lb.set("set server f1/f1-n1 state drain");
    lb.set("set weight site/f2 0");
    lb.reload(false);
    assert!(!drained(lb));
    assert_eq!(f2_weight(lb), 100);

    // 2. Dumped right before the reload, it is kept.
    lb.set("set server f1/f1-n1 state drain");
    lb.set("set weight site/f2 0");
    lb.reload(true);
    assert!(drained(lb));
    assert_eq!(f2_weight(lb), 0);
    assert_eq!(lb.stat_of("f1", "f1-n1").status, "DRAIN");
    assert!(lb.log_text().contains("Server f1/f1-n1 remains in forced drain mode."), "{}", lb.log_text());

    // 3. A stale file is re-applied: state reset since the dump comes back.
    lb.set("set server f1/f1-n1 state ready");
    lb.set("set weight site/f2 100%");
    lb.reload(false);
    assert!(drained(lb));
    assert_eq!(f2_weight(lb), 0);
    lb.set("set server f1/f1-n1 state ready");
    lb.set("set weight site/f2 100%");
    lb.dump_state();

    // 4. A request in flight across maint and a reload completes (TCP hop);
    //    the old process lingers until it is done.
    let slow = slow_request(lb, "f1");
    lb.set("set server f1/f1-n1 state maint");
    lb.set("set server f1/f1-n2 state maint");
    lb.reload(true);
    assert_eq!(lb.old_processes_running(), 1, "the old process finishes its request");
    let r = slow.join().unwrap().expect("in-flight request across the reload");
    assert_eq!(r.status, 200);
    assert!(
        super::procs::wait_for(Duration::from_secs(5), || { (lb.old_processes_running() == 0).then_some(()) })
            .is_some(),
        "the old process exits once its request is done"
    );
    lb.set("set server f1/f1-n1 state ready");
    lb.set("set server f1/f1-n2 state ready");
    lb.wait_checked(SETTLE).unwrap();

    // 5. Sessions keep flowing across reloads (with the state dumped).
    let load = super::loadgen::LoadGen::start(lb.frontend, LoadOptions::default());
    for _ in 0..3 {
        load.wait_more(50, Duration::from_secs(10));
        lb.reload(true);
    }
    load.wait_more(50, Duration::from_secs(10));
    let report = load.stop();
    report.assert_clean();
    eprintln!("3 reloads under load: {}", report.summary());
}

#[test]
fn a_farm_whose_nodes_all_fail_their_health_check_hands_its_sessions_over() {
    let fleet = fleet("hs-farm-down", Admin::Tcp);
    let lb = &fleet.site(SITE).lb;
    let mut s = session_on(lb, "f2");
    assert_eq!(farm_of(&hit(&mut s).node), "f2");
    let t = Instant::now();
    for n in fleet.farm_nodes("f2") {
        n.set_fault(fault::HTTP_FAIL, "");
    }
    lb.wait_status("f2", "f2-n1", "DOWN", SETTLE);
    lb.wait_status("f2", "f2-n2", "DOWN", SETTLE);
    lb.wait_status("site", "f2", "DOWN", SETTLE);
    let down_after = t.elapsed();
    let h = hit(&mut s);
    let moved = h.set.expect("a new farm cookie");
    assert_ne!(moved, "f2");
    assert_eq!(farm_of(&h.node), moved);
    for n in fleet.farm_nodes("f2") {
        n.clear_fault(fault::HTTP_FAIL);
    }
    lb.wait_status("site", "f2", "UP", SETTLE);
    eprintln!("farm f2 DOWN {down_after:.2?} after its nodes started failing");
}
