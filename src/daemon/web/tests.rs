use super::*;
use crate::daemon::state::{ActionRecord, BlockedItem, DaemonStatus, Rejected};
use crate::plan::Memory;
use crate::sim::fleetgen::{self, Change, Shape};
use crate::sim::{Sim, SimConfig};

/// A status document of a generated fleet mid-rollout, as the loop publishes it.
fn published() -> DaemonStatus {
    let fleet = fleetgen::fleet(&Shape { change: Change::NONE, ..Shape::default() }).unwrap();
    let mut obs = Sim::new(&fleet, SimConfig::new(&fleet, 1)).observe();
    obs.nodes[2].reachable = false;
    let memory = Memory::default();
    let mut view = crate::status::view(&fleet, &obs, &memory, &Default::default());
    let cells = annotate(&mut view, &fleet, &obs, &memory);
    let mut st = DaemonStatus { version: "0.1.0".into(), fleet_kind: "simulated".into(), ..Default::default() };
    st.spec.generation = 2;
    st.rollout.phase = "rolling".into();
    st.rollout.passes = 7;
    st.rollout.nodes_total = fleet.nodes.len() as u64;
    st.rollout.nodes_at_target = cells["at-target"];
    st.rollout.last_pass_at_ms = 3_600_000;
    st.rollout.cells = cells;
    st.fleet = view;
    st.history.pass(1_000_000, 0, &[("s1".into(), "f1".into())]);
    st.history.pass(3_000_000, 1, &[]);
    st
}

/// Puts `name` everywhere the page shows a spec-derived or error string.
fn hostile(st: &mut DaemonStatus, name: &str) {
    st.fleet["sites"][0]["name"] = name.into();
    st.fleet["sites"][0]["farms"][0]["name"] = name.into();
    st.fleet["sites"][0]["farms"][0]["target"]["release"] = name.into();
    st.fleet["sites"][0]["farms"][0]["nodes"][0]["name"] = name.into();
    st.fleet["sites"][0]["farms"][0]["nodes"][0]["error"] = name.into();
    st.spec.commit = Some(name.into());
    st.spec.rejected = Some(Rejected {
        commit: Some(name.into()),
        digest: name.into(),
        at_ms: 0,
        error: format!("a.yaml:1:1: {name}"),
    });
    st.rollout.running = vec![name.into()];
    st.rollout.failed = vec![name.into()];
    st.rollout.blocked_items =
        vec![BlockedItem { subject: name.into(), cause: name.into(), reason: name.into(), until_ms: Some(4_000_000) }];
    st.history.pass(3_500_000, 2, &[(name.into(), name.into())]);
    st.history.finished(ActionRecord { action: name.into(), kind: "k".into(), took_ms: 5, error: Some(name.into()) });
    st.last_error = Some(name.into());
}

#[test]
fn every_untrusted_string_is_escaped() {
    let mut st = published();
    let evil = "<script>alert(1)</script><img src=x onerror=alert(2)>\"'&";
    hostile(&mut st, evil);
    let page = page(&st);
    assert_eq!(page.matches("<script").count(), 1, "only the page's own script tag");
    assert!(!page.contains("<img"), "no markup from the document");
    assert!(!page.contains(evil));
    let escaped = "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;&quot;&#39;&amp;";
    // Site, farm, node (label and title), release, commit (twice), digest, rejected error,
    // running, failed, blocked (3), timeline (title, label, aria), action (2), last error.
    assert!(page.matches(escaped).count() >= 15, "{}", page.matches(escaped).count());
}

#[test]
fn the_page_shows_counts_cells_charts_and_the_rejected_spec() {
    let mut st = published();
    st.spec.rejected = Some(Rejected {
        commit: None,
        digest: "d9".into(),
        at_ms: 0,
        error: "fleet.yaml:3:7: error: unknown key `farmz`".into(),
    });
    let page = page(&st);
    let total = st.rollout.nodes_total as usize;
    assert_eq!(page.matches("<span class=\"c s-").count(), total, "one cell per node");
    assert_eq!(page.matches("<span class=\"c s-unreachable\"").count(), 1);
    for c in Cell::ALL {
        assert!(page.contains(&format!("<li data-cell=\"{}\">", c.name())), "{}", c.name());
    }
    assert!(page.contains(&format!("<b class=\"count\">{}</b>", total - 1)), "at-target count");
    assert!(page.contains("fleet.yaml:3:7: error: unknown key `farmz`"));
    assert_eq!(page.matches("<svg class=\"chart\" role=\"img\" aria-label=\"").count(), 2);
    assert_eq!(page.matches("<title>").count(), 4, "the page's, each chart's and the window's bar");
    assert!(page.contains("data-farm=\"s1/f1\" data-state=\"done\""), "the window that closed");
    assert!(page.contains("1 done, 0 open"));
    // The live part is the page's <main>.
    let live = live(&st);
    assert!(page.contains(&format!("<main id=\"live\" data-poll-ms=\"500\">{live}</main>")));
    assert!(!page.contains("<h3>Migrations</h3>"), "no migration, no section");
    st.fleet["migrations"] = serde_json::json!([{ "line": "production 2026.12.1 expand: running on <web11>" }]);
    let page = super::page(&st);
    assert!(page.contains(
        "<h3>Migrations</h3><ul id=\"migrations\"><li>production 2026.12.1 expand: running on &lt;web11&gt;</li>"
    ));
}

#[test]
fn a_page_renders_before_any_spec_and_from_any_document() {
    let st = DaemonStatus::default();
    let p = page(&st);
    assert!(p.contains("none yet"));
    // A document of the wrong shape renders without panicking.
    let st = DaemonStatus {
        fleet: serde_json::json!({"sites": [{"farms": [{"nodes": [1, "x", null]}]}, 3]}),
        ..Default::default()
    };
    assert!(page(&st).contains("class=\"c s-waiting\""));
}

#[test]
fn projected_end_follows_the_recent_pace() {
    let mut st = published();
    st.history = Default::default();
    st.rollout.nodes_total = 100;
    assert_eq!(projected_end(&st), None);
    st.history.pass(0, 0, &[]);
    st.history.pass(60_000, 10, &[]);
    st.rollout.last_pass_at_ms = 60_000;
    // 10 nodes a minute, 90 left: 9 more minutes.
    let (end, rate) = projected_end(&st).unwrap();
    assert_eq!((end, rate.round()), (600_000, 10.0));
    // A stall longer than the pace's span: not known; then the recent pace only.
    st.rollout.last_pass_at_ms = 3_600_000;
    assert_eq!(projected_end(&st), None, "no progress in the last 15 min");
    st.history.pass(3_600_000, 40, &[]);
    let (end, rate) = projected_end(&st).unwrap();
    // 30 nodes in 15 min: 2 a minute, 60 left.
    assert_eq!((end, rate.round()), (3_600_000 + 30 * 60_000, 2.0));
    st.history.pass(3_700_000, 100, &[]);
    assert_eq!(projected_end(&st), None, "done");
}

#[test]
fn clock_and_durations_read_as_people_write_them() {
    assert_eq!(clock(3_723_000), "01:02:03 UTC");
    assert_eq!(clock(86_400_000 + 5_000), "00:00:05 UTC");
    assert_eq!(duration(850), "850 ms");
    assert_eq!(duration(12_340), "12.3 s");
    assert_eq!(duration(245_000), "4 min 05 s");
    assert_eq!(duration(7_380_000), "2 h 03 min");
}
