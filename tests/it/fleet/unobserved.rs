//! "Converged" means observed at target, on the real test fleet: nodes whose
//! sshd is stopped (by PID) are named with their address and the SSH error
//! by `plan` and `reconcile --once`, which exit 4 (not 0); the daemon's
//! `/status`, `/readyz` and metrics say the fleet is not converged. Also
//! with every node silent.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::e2e::{drover, summary};
use super::{Admin, FleetOptions, TestFleet, Topology};

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Stops the node's sshd by its PID, with its per-connection children (a
/// daemon's open SSH master would otherwise still answer), and waits until
/// its port refuses connections.
fn stop_sshd(fleet: &TestFleet, name: &str) {
    let node = fleet.node(name);
    let pid = node.sshd_pid().expect("the node's sshd runs");
    super::procs::kill_tree(pid);
    let t0 = Instant::now();
    while std::net::TcpStream::connect_timeout(&node.ssh, Duration::from_millis(200)).is_ok() {
        assert!(t0.elapsed() < Duration::from_secs(10), "sshd of {name} still answers");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts that the JSON `unobserved` list names exactly `names`, each with
/// its SSH address and the SSH error.
fn assert_unobserved(fleet: &TestFleet, json: &serde_json::Value, names: &[&str], log: &str) {
    let list = json["unobserved"].as_array().unwrap_or_else(|| panic!("no `unobserved` list:\n{log}"));
    let mut got: Vec<&str> = list.iter().map(|u| u["node"].as_str().unwrap()).collect();
    got.sort();
    let mut want = names.to_vec();
    want.sort();
    assert_eq!(got, want, "{log}");
    for u in list {
        let node = fleet.node(u["node"].as_str().unwrap());
        assert_eq!(u["address"], format!("{}:{}", node.ssh.ip(), node.ssh.port()), "{log}");
        assert!(u["error"].as_str().unwrap().contains("cannot connect over SSH"), "{u}");
    }
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let r = super::http::get(addr.parse().unwrap(), path).ok()?;
    Some((r.status, r.body))
}

fn wait_status(addr: &str, what: &str, cond: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let t0 = Instant::now();
    loop {
        let s = get(addr, "/status").and_then(|(c, b)| (c == 200).then(|| serde_json::from_str(&b).ok()).flatten());
        if let Some(s) = &s
            && cond(s)
        {
            return s.clone();
        }
        assert!(t0.elapsed() < Duration::from_secs(90), "timed out waiting for {what}; last status {s:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find(|l| l.split(' ').next() == Some(name)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn nodes_that_cannot_be_observed_are_never_converged_and_are_named() {
    let fleet = TestFleet::start("e2e-unobserved", FleetOptions::full(Topology::single_site("par1", 2, 2, Admin::Tcp)));
    // A silent node must not be marked failed while the test looks at it.
    let spec = fleet.spec_dir.join("fleet.yaml");
    let yaml = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(&spec, yaml.replace("unreachable_timeout: 5s", "unreachable_timeout: 1h")).unwrap();
    let state = fleet.dir.join("drover-state");

    // Everything answers and runs its target: nothing to do.
    let out = drover(&fleet, &state, &["plan"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // One node's sshd stopped: plan and reconcile --once say so and exit 4.
    stop_sshd(&fleet, "f1-n1");
    let addr = fleet.node("f1-n1").ssh;
    let out = drover(&fleet, &state, &["plan"]).output().unwrap();
    let log = text(&out);
    assert_eq!(out.status.code(), Some(4), "{log}");
    assert!(
        log.contains(&format!("unreachable: node f1-n1 ({addr}): ")) && log.contains("cannot connect over SSH"),
        "{log}"
    );
    assert!(log.contains("NOT OBSERVED: 1 of 4 nodes"), "{log}");
    let out = drover(&fleet, &state, &["--output", "json", "plan"]).output().unwrap();
    let (log, json) = (text(&out), summary(&out));
    assert_eq!(out.status.code(), Some(4), "{log}");
    assert_eq!((json["converged"].as_bool(), json["exit_code"].as_u64()), (Some(false), Some(4)), "{log}");
    assert_unobserved(&fleet, &json, &["f1-n1"], &log);

    let t0 = Instant::now();
    let out = drover(&fleet, &state, &["--output", "json", "reconcile", "--once", "--stall", "2s"]).output().unwrap();
    let (log, json) = (text(&out), summary(&out));
    assert_eq!(out.status.code(), Some(4), "{log}");
    assert!(t0.elapsed() < Duration::from_secs(60), "the run waits --stall for the silent node, not forever");
    assert_eq!(json["converged"], false, "{log}");
    assert!(json["finish"].as_str().unwrap().starts_with("NOT OBSERVED: 1 of 4 nodes"), "{log}");
    assert_unobserved(&fleet, &json, &["f1-n1"], &log);
    assert!(log.contains(&format!("unreachable: node f1-n1 ({addr}): ")), "{log}");

    // The daemon: not converged, ready with the reason, the metrics say so.
    let ip = fleet.nodes[0].ssh.ip();
    let port = std::net::TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port();
    let listen = format!("{ip}:{port}");
    let d = Daemon(
        Command::new(env!("CARGO_BIN_EXE_drover"))
            .arg("--specs")
            .arg(&fleet.spec_dir)
            .args(["reconcile", "--listen", &listen, "--resync", "1s", "--state-dir"])
            .arg(fleet.dir.join("daemon-state"))
            .env("DROVER_CREDENTIALS_DIR", &fleet.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let s = wait_status(&listen, "phase unobserved", |s| s["rollout"]["phase"] == "unobserved");
    assert_eq!(s["rollout"]["converged"], false, "{s}");
    assert_eq!(
        (s["rollout"]["nodes_unobserved"].as_u64(), s["rollout"]["nodes_at_target"].as_u64()),
        (Some(1), Some(3)),
        "{s}"
    );
    assert_unobserved(&fleet, &s["rollout"], &["f1-n1"], &s.to_string());
    assert_eq!(s["fleet"]["nodes_unobserved"], 1, "{s}");
    let (code, body) = get(&listen, "/readyz").unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(
        body.starts_with("ready; 1 of 4 nodes not observed") && body.contains(&format!("node f1-n1 ({addr})")),
        "{body}"
    );
    let metrics = get(&listen, "/metrics").unwrap().1;
    assert_eq!(metric(&metrics, "drover_nodes_unobserved"), Some(1.0), "{metrics}");
    assert_eq!(metric(&metrics, "drover_rollout_converged"), Some(0.0), "{metrics}");
    assert_eq!(metric(&metrics, "drover_rollout_nodes_at_target"), Some(3.0), "{metrics}");

    // Every node silent.
    for n in ["f1-n2", "f2-n1", "f2-n2"] {
        stop_sshd(&fleet, n);
    }
    let s = wait_status(&listen, "every node unobserved", |s| s["rollout"]["nodes_unobserved"] == 4);
    assert_eq!(
        (s["rollout"]["converged"].as_bool(), s["rollout"]["nodes_at_target"].as_u64()),
        (Some(false), Some(0)),
        "{s}"
    );
    let (code, body) = get(&listen, "/readyz").unwrap();
    assert!(code == 200 && body.starts_with("ready; 4 of 4 nodes not observed"), "{code} {body}");
    let metrics = get(&listen, "/metrics").unwrap().1;
    assert_eq!(metric(&metrics, "drover_nodes_unobserved"), Some(4.0), "{metrics}");
    assert_eq!(metric(&metrics, "drover_rollout_converged"), Some(0.0), "{metrics}");
    drop(d);

    let all = ["f1-n1", "f1-n2", "f2-n1", "f2-n2"];
    let out = drover(&fleet, &state, &["--output", "json", "plan"]).output().unwrap();
    let (log, json) = (text(&out), summary(&out));
    assert_eq!(out.status.code(), Some(4), "{log}");
    assert_unobserved(&fleet, &json, &all, &log);
    let out = drover(&fleet, &state, &["--output", "json", "reconcile", "--once", "--stall", "2s"]).output().unwrap();
    let (log, json) = (text(&out), summary(&out));
    assert_eq!(out.status.code(), Some(4), "{log}");
    assert_eq!(json["converged"], false, "{log}");
    assert_unobserved(&fleet, &json, &all, &log);
}
