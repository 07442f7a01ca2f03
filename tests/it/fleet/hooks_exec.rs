//! drover's release-hook executor (`real::hooks`, through `RealFleet::execute`)
//! on real nodes (real sshd, Apache + php-fpm), action by action, without
//! the planner: the migration hook's runs and `status` calls as the test
//! release's SQLite log records them, its failures as drover reports them,
//! a run whose connection dropped (asked, not re-run blindly), and a node's
//! warm-up (paths and hook) as the application sees it.

use std::sync::Arc;
use std::time::Duration;

use drover::model::{MigrationPhase, ReleaseId};
use drover::plan::action::{Action, Outcome};

use super::hooks_e2e::{events, hook_log, write_spec_with};
use super::procs::wait_for;
use super::topology::Target;
use super::{Admin, FleetOptions, TestFleet, Topology};

fn failed(o: Outcome) -> String {
    match o {
        Outcome::Failed(e) => e,
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// X-Warm of a session page of the node itself.
fn warm(addr: std::net::SocketAddr) -> String {
    let r = super::http::get(addr, "/").expect("GET / on the node");
    assert_eq!(r.status, 200, "{}", r.body);
    r.header("x-warm").unwrap_or("missing").to_string()
}

#[test]
fn migrations_status_failures_and_warm_up_on_real_nodes() {
    let mut fleet = TestFleet::start(
        "hooks-exec",
        FleetOptions { real_portage: false, ..FleetOptions::full(Topology::single_site("hx", 1, 2, Admin::Tcp)) },
    );
    let warmup = "    warmup: { paths: [/warm, /], concurrency: 2, timeout: 20s }\n";
    write_spec_with(
        &mut fleet,
        &Target::initial(),
        warmup,
        &[
            ("2026.11.1", "expand: migrate, contract: migrate, warmup: warm"),
            ("2026.11.2", "expand: migrate, contract: nosuch"),
            ("2026.11.3", "expand: migrate"),
        ],
    );
    let model = Arc::new(fleet.model.clone());
    let id = |name: &str| model.nodes.iter().position(|n| n.name == name).unwrap() as u32;
    let (n1, n2) = (id("f1-n1"), id("f1-n2"));
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let real = Arc::new(super::harness::real_executor(&fleet, "hooks-exec", model, &rt));
    let (r1, r2) = (ReleaseId("2026.11.1".into()), ReleaseId("2026.11.2".into()));
    let migrate = |node, release: &ReleaseId, phase, resume| {
        rt.block_on(real.execute(&Action::Migrate { node, release: release.clone(), phase, resume }))
    };
    let log = || hook_log(&fleet, "production");

    // A migration runs once; asked again after an "interruption", the hook's
    // status says it completed and nothing runs.
    assert_eq!(migrate(n1, &r1, MigrationPhase::Expand, false), Outcome::Ok);
    assert_eq!(events(&log(), "2026.11.1", "expand done").len(), 1, "{:#?}", log());
    assert_eq!(migrate(n2, &r1, MigrationPhase::Expand, true), Outcome::Ok);
    assert_eq!(events(&log(), "2026.11.1", "status expand 0").len(), 1, "{:#?}", log());
    assert_eq!(events(&log(), "2026.11.1", "expand").len(), 1, "ran again: {:#?}", log());
    // Not applied: status says 3, and the migration runs in the same action.
    assert_eq!(migrate(n1, &r1, MigrationPhase::Contract, true), Outcome::Ok);
    assert_eq!(events(&log(), "2026.11.1", "status contract 3").len(), 1, "{:#?}", log());
    assert_eq!(events(&log(), "2026.11.1", "contract done").len(), 1, "{:#?}", log());
    let who = log().iter().find(|e| e.event == "contract").map(|e| e.node.clone());
    assert_eq!(who.as_deref(), Some("f1-n1"), "DROVER_NODE");

    // A run blindly repeated fails in the database (the hook's own words),
    // reported with the node and the command.
    let e = failed(migrate(n1, &r1, MigrationPhase::Expand, false));
    assert!(e.starts_with("node f1-n1: `"), "{e}");
    assert!(e.contains("/srv/app/releases/2026.11.1/bin/migrate expand` exited with 1"), "{e}");
    assert!(e.contains("UNIQUE constraint failed: schema_migrations.version"), "{e}");
    // An injected failure: its output, escaped (no terminal escape reaches the operator).
    let fail = fleet.hooks_dir().join("fail-production-contract");
    std::fs::write(&fail, "ERROR \x1b[31m1146\x1b[0m: table 'shop.legacy' doesn't exist\n").unwrap();
    let e = failed(migrate(n2, &r1, MigrationPhase::Contract, false));
    assert!(e.contains("exited with 1: ERROR \\u{1b}[31m1146\\u{1b}[0m: table 'shop.legacy' doesn't exist"), "{e}");
    assert!(!e.contains('\x1b'), "{e}");
    std::fs::remove_file(&fail).unwrap();

    // A hook the release does not carry is refused, naming the file.
    for node in [n1, n2] {
        let staged = rt.block_on(real.execute(&Action::StageRelease { node, release: r2.clone() }));
        assert_eq!(staged, Outcome::Ok);
    }
    let e = failed(migrate(n1, &r2, MigrationPhase::Contract, false));
    assert!(e.contains("was refused") && e.contains("bin/nosuch is not a regular executable file"), "{e}");

    // While a run is in progress (held in the hook), status is neither
    // "completed" nor "not applied": the interrupted-run check reports it
    // as unknown (a message starting "status:") and runs nothing.
    let hold = fleet.hooks_dir().join("hold-production-expand");
    // n1's expand of `release`, started and held in the hook (until `hold` goes).
    let start_held = |release: &ReleaseId| {
        std::fs::write(&hold, "").unwrap();
        let running = {
            let real = Arc::clone(&real);
            let release = release.clone();
            rt.spawn(async move {
                real.execute(&Action::Migrate { node: n1, release, phase: MigrationPhase::Expand, resume: false }).await
            })
        };
        let held =
            wait_for(Duration::from_secs(30), || (!events(&log(), &release.0, "expand held").is_empty()).then_some(()));
        assert!(held.is_some(), "{:#?}", log());
        running
    };
    let running = start_held(&r2);
    let e = failed(migrate(n2, &r2, MigrationPhase::Expand, true));
    assert!(e.starts_with("status: node f1-n2: `"), "{e}");
    assert!(e.contains("status expand` exited with 4: a migration is running"), "{e}");
    std::fs::remove_file(&hold).unwrap();
    assert_eq!(rt.block_on(running).unwrap(), Outcome::Ok);
    assert_eq!(events(&log(), "2026.11.2", "expand").len(), 1, "{:#?}", log());

    // The connection drops while a migration runs (the node's SSH sessions
    // cut, the hook with them): the outcome is unknown, not a failure (a
    // message starting "status:": the journal holds it as unknown and the
    // planner asks again); the next try asks the hook's status, hears "not
    // applied" (the transaction never committed), and runs it once.
    let r3 = ReleaseId("2026.11.3".into());
    fleet.add_release("2026.11.3", false);
    assert_eq!(rt.block_on(real.execute(&Action::StageRelease { node: n1, release: r3.clone() })), Outcome::Ok);
    let running = start_held(&r3);
    let sshd = fleet.node("f1-n1").sshd_pid().expect("the node's sshd runs");
    assert!(!super::procs::descendants(sshd).is_empty(), "drover's session to f1-n1 is open");
    super::procs::kill_descendants(sshd);
    let ended = rt.block_on(async { tokio::time::timeout(Duration::from_secs(60), running).await });
    let e = failed(ended.expect("the migration's action ended once its connection dropped").unwrap());
    assert!(e.starts_with("status: node f1-n1: "), "{e}");
    assert!(e.contains("bin/migrate expand`") && e.contains("asks the hook's status"), "{e}");
    std::fs::remove_file(&hold).unwrap();
    // One run began (the transport did not start it again on a new connection).
    assert_eq!(events(&log(), "2026.11.3", "expand").len(), 1, "{:#?}", log());
    assert!(events(&log(), "2026.11.3", "expand done").is_empty(), "{:#?}", log());
    assert_eq!(migrate(n1, &r3, MigrationPhase::Expand, true), Outcome::Ok);
    assert_eq!(events(&log(), "2026.11.3", "status expand 3").len(), 1, "{:#?}", log());
    assert_eq!(events(&log(), "2026.11.3", "expand done").len(), 1, "{:#?}", log());

    // Warm-up. A node without its marker answers cold; the health check
    // does not warm it; drover's warm-up (paths, then the release's hook) does.
    let node = fleet.node("f1-n1");
    std::fs::remove_file(node.root.join("run/warm/2026.11.1")).unwrap();
    assert_eq!(warm(node.http), "0");
    let health = super::http::get(node.http, "/health.php").unwrap();
    assert_eq!(health.status, 200);
    assert_eq!(warm(node.http), "0", "the health check warmed the node");
    assert_eq!(rt.block_on(real.execute(&Action::Warmup { node: n1 })), Outcome::Ok);
    assert_eq!(warm(node.http), "1");
    let warm_log = hook_log(&fleet, "warm");
    assert!(warm_log.iter().any(|e| e.node == "f1-n1" && e.release == "2026.11.1"), "{warm_log:#?}");
    // A node that answers 503: the warm-up fails, naming the node and each path.
    node.set_fault(super::node::fault::HTTP_FAIL, "");
    let e = failed(rt.block_on(real.execute(&Action::Warmup { node: n1 })));
    node.clear_fault(super::node::fault::HTTP_FAIL);
    assert_eq!(
        e,
        "node f1-n1: warm-up: 0 of 2 requests answered 2xx (0%, at least 100% needed); failed: /: status 503, /warm: status 503"
    );
}
