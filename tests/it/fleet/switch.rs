//! drover's node switch on the real stack (real Apache + PHP-FPM nodes):
//! its health check is not fooled by a naive switch (a link swap without a
//! reload) or a static file, and a PHP tree whose configuration PHP-FPM
//! rejects is never reloaded onto.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use drover::model::{HealthCheck, PhpVersion, ReleaseId};
use drover::real::health::{Checker, Expect};

use super::e2e::{drover, summary};
use super::loadgen::LoadOptions;
use super::node::WebStack;
use super::topology::Target;
use super::{Admin, FleetOptions, TestFleet, Topology};

fn policy(path: &str) -> HealthCheck {
    HealthCheck {
        path: path.into(),
        expect_status: 200,
        expect_release_marker: true,
        timeout: Duration::from_secs(5),
        retries: 1,
        pool_status: "/fpm-status".into(),
        requests: 8,
    }
}

/// drover's own check (the library's), one attempt or up to `attempts`.
fn check(
    path: &str,
    addr: SocketAddr,
    release: &str,
    php: &str,
    since: Option<i64>,
    attempts: u32,
) -> Result<(), String> {
    let checker = Checker::new(&HealthCheck { retries: attempts, ..policy(path) }).unwrap();
    let (r, p) = (ReleaseId(release.into()), PhpVersion(php.into()));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(checker.check(
        &addr.ip().to_string(),
        addr.port(),
        Expect { release: Some(&r), php: Some(&p), reloaded_at: since },
    ))
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The negative test: a switch made naive (the link moved, PHP-FPM not
/// reloaded) and a static-file health check both fail drover's check on a
/// real node, although the static file already shows the new release; the
/// reload drover's switch does makes the same check pass.
#[test]
fn drovers_health_check_catches_a_naive_switch_and_a_static_file() {
    let fleet = TestFleet::start("sw-naive", FleetOptions::full(Topology::single_site("sw", 1, 2, Admin::Tcp)));
    let n = fleet.node("f1-n1");
    assert_eq!(n.stack, WebStack::Real);
    check("/health.php", n.http, "2026.11.1", "8.2.27", None, 1).expect("the node passes on its release");

    // The naive switch: the release staged as drover does, then only the link moves.
    let t0 = now_secs();
    let src = fleet.model.sources.releases.clone().unwrap();
    let out = fleet.ssh(
        n.ssh,
        &format!(
            "rsync -a {src}/2026.11.2/ $NODE_ROOT/srv/app/releases/2026.11.2/ && \
             ln -sfn releases/2026.11.2 $NODE_ROOT/srv/app/current.new && \
             mv -T $NODE_ROOT/srv/app/current.new $NODE_ROOT/srv/app/current"
        ),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let static_file = super::http::get(n.http, "/release.txt").unwrap();
    assert_eq!(static_file.body.trim(), "release=2026.11.2", "the static file shows the new release at once");
    let e = check("/health.php", n.http, "2026.11.2", "8.2.27", Some(t0), 2).unwrap_err();
    assert!(e.contains("does not serve release 2026.11.2"), "{e}");
    let e = check("/release.txt", n.http, "2026.11.2", "8.2.27", Some(t0), 1).unwrap_err();
    assert!(e.contains("no `pid=` word"), "a static file is not proof: {e}");

    // What drover's switch does after the swap: the node's init reloads PHP-FPM.
    let out = fleet.ssh(n.ssh, "sudo -n rc-service php-fpm reload");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    check("/health.php", n.http, "2026.11.2", "8.2.27", Some(t0), 10).expect("every worker serves the new release");
    // A check that asks for workers started after a later reload fails.
    let e = check("/health.php", n.http, "2026.11.2", "8.2.27", Some(now_secs() + 5), 1).unwrap_err();
    assert!(e.contains("started before the reload"), "{e}");
}

/// A new PHP tree whose php-fpm.conf PHP-FPM rejects: drover's switch fails
/// on every node it tries with PHP-FPM's message, no link moves, no
/// PHP-FPM is reloaded onto it, and no request fails.
#[test]
fn an_invalid_php_configuration_in_the_new_tree_is_refused_before_any_reload() {
    let mut fleet = TestFleet::start("sw-badphp", FleetOptions::full(Topology::single_site("sw", 2, 2, Admin::Tcp)));
    fleet.add_php("8.3.99", true);
    fleet.write_spec(&Target { php: "8.3.99".into(), ..Target::initial() });
    let masters: Vec<_> = fleet.nodes.iter().filter(|n| n.stack == WebStack::Real).map(|n| n.name.clone()).collect();
    assert_eq!(masters.len(), 2, "the first farm is real");
    let load = fleet.loadgen("sw", LoadOptions::default());
    load.wait_more(20, Duration::from_secs(10));
    let state = fleet.dir.join("drover-state");
    let out = drover(&fleet, &state, &["--output", "json", "reconcile", "--once", "--stall", "20s"]).output().unwrap();
    let report = load.stop();
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("{log}\nload: {}", report.summary());
    report.assert_clean();
    assert_ne!(out.status.code(), Some(0), "{log}");
    let json = summary(&out);
    assert_eq!(json["converged"], false, "{json}");
    let failed = json["failed"].to_string();
    assert!(failed.contains("php-fpm -t rejects the PHP tree") && failed.contains("8.3.99"), "{failed}");
    for n in &fleet.nodes {
        assert_eq!(n.active_php().as_deref(), Some("8.2.27"), "{}: the link moved", n.name);
        assert!(n.root.join("opt/php/8.3.99").is_dir(), "{}: the tree was staged", n.name);
    }
    // The real nodes' PHP-FPM was never reloaded onto the broken tree: it serves.
    for name in masters {
        let n = fleet.node(&name);
        check("/health.php", n.http, "2026.11.1", "8.2.27", None, 3).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// drover's switch by itself (`Activate`, no health check after it) leaves
/// PHP on the new release from every worker: a reload (same master, every
/// worker new), not a restart and not a bare link swap.
#[test]
fn drovers_switch_alone_reloads_every_worker_onto_the_new_release() {
    use drover::plan::action::{Action, Outcome};
    use std::sync::Arc;

    let test = TestFleet::start("sw-alone", FleetOptions::full(Topology::single_site("sw", 1, 2, Admin::Tcp)));
    let n = test.node("f1-n1");
    let model = Arc::new(test.model.clone());
    let node = model.nodes.iter().position(|m| m.name == "f1-n1").unwrap() as u32;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let real = super::harness::real_executor(&test, "sw-alone", model, &rt);
    let release = ReleaseId("2026.11.2".into());
    let staged = rt.block_on(real.execute(&Action::StageRelease { node, release: release.clone() }));
    assert!(matches!(staged, Outcome::Ok), "{staged:?}");
    let master = n.fpm_pid().expect("php-fpm runs");
    let t0 = now_secs();
    let switched =
        rt.block_on(real.execute(&Action::Activate { node, php: None, release: Some(release), rollback: false }));
    assert!(matches!(switched, Outcome::Ok), "{switched:?}");
    assert_eq!(n.active_release().as_deref(), Some("2026.11.2"));
    check("/health.php", n.http, "2026.11.2", "8.2.27", Some(t0), 10)
        .expect("after drover's switch every worker serves the new release");
    assert_eq!(n.fpm_pid(), Some(master), "a reload keeps the master; a restart would not");
}
