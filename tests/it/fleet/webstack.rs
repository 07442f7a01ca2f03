//! The real web stack of the test nodes (`WebStack::Real`: Debian's apache2
//! with mpm_event and proxy_fcgi, php-fpm with OPcache in production
//! settings started through `opt/php/current`, the release's PHP code), and
//! the traps of research/php-fpm-release-switch.md measured on it: a bare
//! `current` swap leaves PHP on the old release while a static file shows the
//! new one; a php-fpm reload switches every worker without failing a request
//! in flight; a PHP tree switch reaches the binary on reload because the
//! master runs through the link; an Apache that does not come back after a
//! restart leaves its node failed and out of service.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::e2e::{drover, summary};
use super::http::{self, Client};
use super::loadgen::{LoadGen, LoadOptions, LoadReport};
use super::node::{Node, WebStack, fault};
use super::procs::wait_for;
use super::topology::Target;
use super::{Admin, FleetOptions, TestFleet, Topology};

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Runs `cmd` on `n` over SSH (as drover does) and asserts it succeeded.
fn run(fleet: &TestFleet, n: &Node, cmd: &str) -> String {
    let out = fleet.ssh(n.ssh, cmd);
    assert!(out.status.success(), "{} `{cmd}`: {}", n.name, text(&out));
    text(&out)
}

/// The words `key=value` of a health.php body.
fn word<'a>(body: &'a str, key: &str) -> Option<&'a str> {
    body.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// `n` answers of /health.php on new connections: (release, php, pid).
fn health(addr: SocketAddr, n: usize) -> Vec<(String, String, u32)> {
    (0..n)
        .map(|_| {
            let r = http::get(addr, "/health.php").expect("GET /health.php");
            assert_eq!(r.status, 200, "/health.php: {}", r.body);
            let w = |k| word(&r.body, k).unwrap_or_else(|| panic!("no {k}= in {:?}", r.body)).to_string();
            (w("release"), w("php"), w("pid").parse().expect("pid"))
        })
        .collect()
}

/// The pool's processes from php-fpm's own status page: (pid, start time).
fn pool(addr: SocketAddr) -> Vec<(u32, u64)> {
    let r = http::get(addr, "/fpm-status?json&full").expect("GET /fpm-status");
    assert_eq!(r.status, 200, "/fpm-status: {}", r.body);
    let doc: serde_json::Value = serde_json::from_str(&r.body).expect("pool status JSON");
    doc["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .map(|p| (p["pid"].as_u64().unwrap() as u32, p["start time"].as_u64().unwrap()))
        .collect()
}

/// VmRSS of a process in kB (0 if it is gone).
fn vm_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Slow requests (`/slow?s=`) one after another on their own connection,
/// so that one is always in flight: (started, finished, status, release).
struct Slow {
    stop: Arc<AtomicBool>,
    /// When the last request finished.
    last: Arc<std::sync::Mutex<Option<Instant>>>,
    thread: thread::JoinHandle<Vec<(Instant, Instant, u16, String)>>,
}

impl Slow {
    fn start(addr: SocketAddr, secs: f64) -> Slow {
        let stop = Arc::new(AtomicBool::new(false));
        let last = Arc::new(std::sync::Mutex::new(None));
        let (s, l) = (Arc::clone(&stop), Arc::clone(&last));
        let thread = thread::spawn(move || {
            let mut done = Vec::new();
            let mut c = Client::new(addr);
            while !s.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let (status, release) = match c.get(&format!("/slow?s={secs}")) {
                    Ok(r) => (r.status, r.release().to_string()),
                    Err(e) => (0, e.to_string()),
                };
                done.push((t0, Instant::now(), status, release));
                *l.lock().unwrap() = Some(Instant::now());
            }
            done
        });
        Slow { stop, last, thread }
    }
    /// Waits until a request that started after `t` has finished.
    fn wait_started_after(&self, t: Instant, timeout: Duration) {
        // The one in flight at `t` finishes first, then the next one runs.
        let finished_after = |t: Instant| wait_for(timeout, || self.last.lock().unwrap().filter(|l| *l > t));
        let first = finished_after(t).expect("a slow request finished");
        finished_after(first).expect("another slow request finished");
    }
    fn stop(self) -> Vec<(Instant, Instant, u16, String)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("slow requests")
    }
}

/// No failed request and no session served an older release than it had
/// seen (session data goes stale here: nobody flushes memcached).
fn assert_no_failure_no_regression(r: &LoadReport) {
    eprintln!("load: {}", r.summary());
    assert!(r.responses() > 0 && r.failures().is_empty() && r.regressions().is_empty(), "{}", r.summary());
}

/// A one-farm site (its first farm is real) of two nodes (a farm of one
/// is not a valid spec with max_unavailable 1); the tests use the first.
fn real_farm(test: &str, opts: impl FnOnce(&mut FleetOptions)) -> TestFleet {
    let mut o = FleetOptions::full(Topology::single_site("ws", 1, 2, Admin::Tcp));
    opts(&mut o);
    let fleet = TestFleet::start(test, o);
    assert!(fleet.nodes.iter().all(|n| n.stack == WebStack::Real));
    fleet
}

#[test]
fn a_bare_swap_leaves_php_on_the_old_release_until_the_php_fpm_reload_switches_every_worker() {
    let fleet = real_farm("ws-trap", |_| {});
    let n = &fleet.nodes[0];
    let master = n.fpm_pid().expect("php-fpm runs");
    // Sessions straight to the node, and a slow request always in flight.
    let load = LoadGen::start(n.http, LoadOptions { sessions: 3, think: Duration::from_millis(20), path: "/".into() });
    load.wait_more(30, Duration::from_secs(10));
    let slow = Slow::start(n.http, 1.5);
    assert!(health(n.http, 6).iter().all(|(r, _, _)| r == "2026.11.1"));

    // Stage and swap `current` as drover does, without any reload.
    let src = fleet.model.sources.releases.clone().unwrap();
    run(
        &fleet,
        n,
        &format!(
            "rsync -a {src}/2026.11.2/ $NODE_ROOT/srv/app/releases/2026.11.2/ && \
             ln -sfn releases/2026.11.2 $NODE_ROOT/srv/app/current.new && \
             mv -T $NODE_ROOT/srv/app/current.new $NODE_ROOT/srv/app/current"
        ),
    );
    // A static file of the release shows the new one at once: a false proof.
    let static_new = wait_for(Duration::from_secs(30), || {
        http::get(n.http, "/release.txt").ok().filter(|r| r.body.trim() == "release=2026.11.2")
    });
    assert!(static_new.is_some(), "the static file never showed the new release");
    // PHP stays on the old release: the health page and the app, every
    // worker, for as long as we look (OPcache and the realpath cache).
    let t_swap = Instant::now();
    let mut answers = Vec::new();
    while t_swap.elapsed() < Duration::from_secs(2) {
        answers.extend(health(n.http, 4));
        let r = http::get(n.http, "/").unwrap();
        assert_eq!((r.status, r.release()), (200, "2026.11.1"), "the app switched without a reload");
        thread::sleep(Duration::from_millis(50)); // pace: what a health checker would do
    }
    let pids: BTreeSet<u32> = answers.iter().map(|a| a.2).collect();
    assert!(answers.iter().all(|(r, _, _)| r == "2026.11.1"), "{answers:?}");
    eprintln!("after a bare swap: {} health answers from {} workers, all 2026.11.1", answers.len(), pids.len());

    // An Apache graceful reload does nothing for PHP.
    run(&fleet, n, "rc-service apache2 reload");
    assert!(health(n.http, 6).iter().all(|(r, _, _)| r == "2026.11.1"), "Apache's reload switched PHP");

    // The init's php-fpm reload (what drover runs) switches every worker.
    let clock = now_secs();
    let t_reload = Instant::now();
    run(&fleet, n, "rc-service php-fpm reload");
    let reload_took = t_reload.elapsed();
    let t_reloaded = Instant::now();
    let workers = pool(n.http);
    assert_eq!(workers.len(), 3, "{workers:?}");
    assert!(workers.iter().all(|(_, start)| *start >= clock), "a worker older than the reload: {workers:?} < {clock}");
    let answers = health(n.http, 12);
    assert!(answers.iter().all(|(r, _, _)| r == "2026.11.2"), "{answers:?}");
    let pool_pids: BTreeSet<u32> = workers.iter().map(|w| w.0).collect();
    assert!(answers.iter().all(|a| pool_pids.contains(&a.2)), "{answers:?} not in the pool {pool_pids:?}");
    assert_eq!(n.fpm_pid(), Some(master), "a reload keeps the master");
    assert!(n.rc_log().last().unwrap().ends_with("php-fpm reload 0"), "{:?}", n.rc_log());

    // Under load: nothing failed, no session went back, and a slow request
    // in flight at the reload finished (process_control_timeout) on the old
    // release it started on.
    load.wait_more(30, Duration::from_secs(10));
    slow.wait_started_after(t_reloaded, Duration::from_secs(10));
    let report = load.stop();
    let slow = slow.stop();
    assert_no_failure_no_regression(&report);
    assert!(slow.iter().all(|s| s.2 == 200), "slow requests failed: {slow:?}");
    let across: Vec<_> = slow.iter().filter(|s| s.0 < t_reload && s.1 > t_reload).collect();
    assert!(!across.is_empty(), "no slow request was in flight at the reload");
    assert!(across.iter().all(|s| s.3 == "2026.11.1"), "{across:?}");
    let after: Vec<_> = slow.iter().filter(|s| s.0 > t_reloaded).collect();
    assert!(!after.is_empty() && after.iter().all(|s| s.3 == "2026.11.2"), "{slow:?}");
    eprintln!("php-fpm reload under load took {reload_took:.2?} (a slow request was in flight)");
}

#[test]
fn a_php_switch_through_opt_php_current_and_a_reload_changes_the_tree_and_keeps_the_master() {
    let fleet = real_farm("ws-php", |_| {});
    let n = &fleet.nodes[0];
    let master = n.fpm_pid().expect("php-fpm runs");
    let exe = || std::fs::read_link(format!("/proc/{master}/exe")).unwrap();
    assert!(exe().ends_with("opt/php/8.2.27/sbin/php-fpm"), "{:?}", exe());
    let load = LoadGen::start(n.http, LoadOptions { sessions: 3, think: Duration::from_millis(20), path: "/".into() });
    load.wait_more(30, Duration::from_secs(10));

    let src = fleet.model.sources.php.clone().unwrap();
    run(
        &fleet,
        n,
        &format!(
            "rsync -a {src}/8.3.14/ $NODE_ROOT/opt/php/8.3.14/ && \
             ln -sfn 8.3.14 $NODE_ROOT/opt/php/current.new && mv -T $NODE_ROOT/opt/php/current.new $NODE_ROOT/opt/php/current"
        ),
    );
    // The link alone changes nothing that runs.
    assert!(health(n.http, 4).iter().all(|(_, php, _)| php == "8.2.27"));
    run(&fleet, n, "systemctl reload php-fpm.service");
    assert_eq!(n.fpm_pid(), Some(master), "a reload keeps the master");
    assert!(exe().ends_with("opt/php/8.3.14/sbin/php-fpm"), "the master runs {:?}", exe());
    assert!(health(n.http, 8).iter().all(|(_, php, _)| php == "8.3.14"));
    let r = http::get(n.http, "/").unwrap();
    assert_eq!(r.header("x-php"), Some("8.3.14"));
    assert_eq!(r.header("x-php-ini"), Some("drover-test-php/8.3.14"), "the new tree's php.ini");
    load.wait_more(30, Duration::from_secs(10));
    assert_no_failure_no_regression(&load.stop());
}

#[test]
fn the_init_of_a_real_node_restarts_reloads_and_reboots_the_real_processes() {
    let fleet = real_farm("ws-init", |o| o.reboot_down = Duration::from_millis(300));
    let n = &fleet.nodes[0];
    let (apache, fpm) = (n.web_pid().unwrap(), n.fpm_pid().unwrap());
    assert!(run(&fleet, n, "rc-service apache2 status").contains("started"));
    // What a real node costs, after some traffic.
    let load = LoadGen::start(n.http, LoadOptions { sessions: 3, think: Duration::from_millis(5), path: "/".into() });
    load.wait_more(100, Duration::from_secs(10));
    load.stop().assert_clean();
    let rss = |pid: u32| -> (usize, u64) {
        let pids: Vec<u32> = std::iter::once(pid).chain(super::procs::descendants(pid)).collect();
        (pids.len(), pids.iter().map(|p| vm_rss_kb(*p)).sum())
    };
    let (a, f) = (rss(apache), rss(fpm));
    eprintln!(
        "real node RSS: Apache {} processes {} kB, php-fpm {} processes {} kB, total {} MB",
        a.0,
        a.1,
        f.0,
        f.1,
        (a.1 + f.1) / 1024
    );
    assert_eq!(f.0, 4, "php-fpm: a master and 3 static workers");

    // A graceful reload keeps Apache's parent; a restart gives new processes.
    run(&fleet, n, "rc-service apache2 reload");
    assert_eq!(n.web_pid(), Some(apache));
    run(&fleet, n, "rc-service apache2 restart");
    run(&fleet, n, "systemctl restart php-fpm");
    let (apache2, fpm2) = (n.web_pid().unwrap(), n.fpm_pid().unwrap());
    assert!(apache2 != apache && fpm2 != fpm, "restart kept a PID");
    assert!(!super::procs::alive(apache) && !super::procs::alive(fpm));
    assert_eq!(health(n.http, 3).len(), 3);

    // Stopped is stopped: a reload fails, status says so, start brings it back.
    run(&fleet, n, "rc-service php-fpm stop");
    let out = fleet.ssh(n.ssh, "rc-service php-fpm status");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let out = fleet.ssh(n.ssh, "rc-service php-fpm reload");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(http::get(n.http, "/health.php").unwrap().status, 503, "Apache without its pool");
    run(&fleet, n, "rc-service php-fpm start");
    assert_eq!(health(n.http, 3).len(), 3);

    // A reboot stops and starts both (new PIDs) with the node.
    let (apache3, fpm3) = (n.web_pid().unwrap(), n.fpm_pid().unwrap());
    run(&fleet, n, "reboot");
    assert!(wait_for(Duration::from_secs(30), || (!n.is_up()).then_some(())).is_some(), "node went down");
    assert!(wait_for(Duration::from_secs(60), || n.is_up().then_some(())).is_some(), "node came back");
    assert!(n.web_pid() != Some(apache3) && n.fpm_pid() != Some(fpm3));
    assert_eq!(health(n.http, 3).len(), 3);

    // faults/http-fail: Apache answers 503 to everything.
    n.set_fault(fault::HTTP_FAIL, "");
    let r = http::get(n.http, "/health.php").unwrap();
    assert_eq!((r.status, r.node()), (503, n.name.as_str()));
    n.clear_fault(fault::HTTP_FAIL);
    // faults/apache-fail: the next start fails like a broken configuration.
    n.set_fault(fault::APACHE_FAIL, "");
    let out = fleet.ssh(n.ssh, "rc-service apache2 restart");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("Syntax error"), "{}", text(&out));
    assert!(!n.is_up());
    n.clear_fault(fault::APACHE_FAIL);
    run(&fleet, n, "rc-service apache2 start");
    assert_eq!(health(n.http, 3).len(), 3);
}

#[test]
fn an_apache_that_does_not_come_back_after_the_openssl_restart_leaves_its_node_failed_and_out_of_service() {
    // f1 (real web stack) and f2 (stand-ins), two nodes each.
    let mut fleet =
        TestFleet::start("ws-apache-fail", FleetOptions::full(Topology::single_site("ws", 2, 2, Admin::Tcp)));
    let bad = Arc::clone(fleet.node("f1-n1"));
    assert_eq!(bad.stack, WebStack::Real);
    bad.set_fault(fault::APACHE_FAIL, "");
    // openssl: `restart: [apache2, php-fpm]` on every node.
    let to =
        Target { packages: vec!["base".into(), "web-2026.11".into(), "kernel-6.6.58".into()], ..Target::initial() };
    fleet.write_spec(&to);
    let load = fleet.loadgen("ws", LoadOptions::default());
    load.wait_more(20, Duration::from_secs(10));
    let state = fleet.dir.join("drover-state");
    let out = drover(&fleet, &state, &["--output", "json", "reconcile", "--once", "--stall", "20s"]).output().unwrap();
    let log = text(&out);
    eprintln!("{log}");
    let report = load.stop();
    eprintln!("load: {}", report.summary());
    report.assert_clean();

    // Within the failure budget (2) a failed node does not stop the run, and
    // the others reach the target: the run reports converged (exit 0) and
    // names the node in `failed` (README, "Failures").
    let json = summary(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert_eq!(json["exit_code"], 0, "{json}");
    let failed = json["failed"].to_string();
    assert!(failed.contains("f1-n1") && failed.contains("apache2") && failed.contains("Syntax error"), "{failed}");
    for other in ["f1-n2", "f2-n1", "f2-n2"] {
        assert!(!failed.contains(other), "{failed}");
        let n = fleet.node(other);
        assert!(n.installed().contains(&"dev-libs/openssl-3.0.15-r1".to_string()), "{other}");
    }
    // The failed node is out of service on the LB; every other server is in.
    let states = fleet.site("ws").lb.servers_state();
    let st = states.iter().find(|s| s.srv_name == "f1-n1").expect("f1-n1 on the LB");
    assert_ne!(st.admin_state, 0, "f1-n1 is back in service with no Apache: {st:?}");
    for s in states.iter().filter(|s| s.srv_name != "f1-n1") {
        assert_eq!(s.admin_state, 0, "{} left out: {s:?}", s.srv_name);
    }
    assert!(bad.web_pid().is_none() || !bad.is_up(), "Apache came back");
}

#[test]
fn a_php_fpm_reload_onto_a_broken_tree_kills_the_master_and_the_init_says_so() {
    let fleet = real_farm("ws-php-broken", |_| {});
    fleet.add_php("8.3.99", true);
    let n = &fleet.nodes[0];
    let src = fleet.model.sources.php.clone().unwrap();
    run(&fleet, n, &format!("rsync -a {src}/8.3.99/ $NODE_ROOT/opt/php/8.3.99/"));
    // `php-fpm -t` of the tree (what drover must run first) refuses it.
    let t = "$NODE_ROOT/opt/php/8.3.99";
    let out =
        fleet.ssh(n.ssh, &format!("sudo -n {t}/sbin/php-fpm -t --fpm-config {t}/etc/php-fpm.conf -c {t}/etc/php.ini"));
    assert!(!out.status.success(), "php-fpm -t passed a broken tree: {}", text(&out));
    assert!(text(&out).contains("invalid process manager"), "{}", text(&out));
    // A reload onto it anyway: the master exits, every PHP request fails
    // until something starts it again, and the init reports it.
    run(
        &fleet,
        n,
        "ln -sfn 8.3.99 $NODE_ROOT/opt/php/current.new && mv -T $NODE_ROOT/opt/php/current.new $NODE_ROOT/opt/php/current",
    );
    let out = fleet.ssh(n.ssh, "rc-service php-fpm reload");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("exited"), "{}", text(&out));
    assert_eq!(http::get(n.http, "/health.php").unwrap().status, 503);
    // The link put back and the master started: serving again.
    run(
        &fleet,
        n,
        "ln -sfn 8.2.27 $NODE_ROOT/opt/php/current.new && mv -T $NODE_ROOT/opt/php/current.new $NODE_ROOT/opt/php/current",
    );
    run(&fleet, n, "rc-service php-fpm start");
    assert!(health(n.http, 3).iter().all(|(_, php, _)| php == "8.2.27"));
}
