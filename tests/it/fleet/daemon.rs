//! The daemon end to end on the real test fleet: `drover reconcile` (no
//! `--once`) follows a spec Git repository, converges each new commit under
//! load with no failed request and no release regression, rejects an invalid
//! commit without changing anything, survives `kill -9` in the middle of a
//! farm switch, and on SIGTERM closes the open window and exits 0.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::e2e::{assert_converged, assert_rolled_out, load_all, stop_all};
use super::loadgen::LoadGen;
use super::topology::Target;
use super::{FleetOptions, TestFleet, Topology};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "operator")
        .env("GIT_AUTHOR_EMAIL", "op@example.invalid")
        .env("GIT_COMMITTER_NAME", "operator")
        .env("GIT_COMMITTER_EMAIL", "op@example.invalid")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A spec repository: a bare origin and a working clone with the spec in `specs/`.
struct SpecRepo {
    origin: PathBuf,
    work: PathBuf,
}

impl SpecRepo {
    fn new(fleet: &TestFleet) -> SpecRepo {
        let origin = fleet.dir.join("spec-origin.git");
        let work = fleet.dir.join("spec-work");
        std::fs::create_dir_all(&origin).unwrap();
        git(&origin, &["init", "-q", "--bare", "-b", "main"]);
        git(&fleet.dir, &["clone", "-q", origin.to_str().unwrap(), work.to_str().unwrap()]);
        git(&work, &["checkout", "-q", "-b", "main"]);
        let repo = SpecRepo { origin, work };
        repo.commit_from(fleet, "initial spec");
        repo
    }

    /// Writes `to` as the fleet's spec, puts every site under load, then
    /// commits it: the rollout runs under load. The load and the commit.
    fn commit_target(&self, fleet: &mut TestFleet, to: &Target, message: &str) -> (Vec<(String, LoadGen)>, String) {
        fleet.write_spec(to);
        let gens = load_all(fleet);
        (gens, self.commit_from(fleet, message))
    }

    /// Copies the fleet's spec directory into the repository, commits and pushes.
    fn commit_from(&self, fleet: &TestFleet, message: &str) -> String {
        let dst = self.work.join("specs");
        let _ = std::fs::remove_dir_all(&dst);
        std::fs::create_dir_all(&dst).unwrap();
        for e in std::fs::read_dir(&fleet.spec_dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
            }
        }
        self.commit(message)
    }

    fn commit(&self, message: &str) -> String {
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "--allow-empty", "-m", message]);
        git(&self.work, &["push", "-q", "origin", "main"]);
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

/// A running daemon, its log lines collected; killed on drop.
struct Daemon {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    listen: String,
}

impl Daemon {
    fn start(fleet: &TestFleet, repo: &SpecRepo, state: &Path) -> Daemon {
        // A free port on the fleet's own loopback address.
        let ip = fleet.nodes[0].ssh.ip();
        let port = std::net::TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port();
        let listen = format!("{ip}:{port}");
        let mut child = Command::new(env!("CARGO_BIN_EXE_drover"))
            .env("DROVER_CREDENTIALS_DIR", &fleet.dir)
            .args(["--specs", "specs", "reconcile", "--git"])
            .arg(&repo.origin)
            .args(["--branch", "main", "--git-interval", "500ms", "--listen", &listen, "--log-format", "json"])
            .args(["--resync", "2s", "--stop-grace", "2m", "--state-dir"])
            .arg(state)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        Daemon { child, lines, listen }
    }

    fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        let r = super::http::get(self.listen.parse().unwrap(), path).ok()?;
        Some((r.status, r.body))
    }

    fn status(&self) -> Option<serde_json::Value> {
        let (code, body) = self.get("/status")?;
        (code == 200).then(|| serde_json::from_str(&body).ok()).flatten()
    }

    /// Waits until `/status` satisfies `cond`.
    fn wait_status(&self, what: &str, limit: Duration, cond: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.status()
                && cond(&s)
            {
                return s;
            }
            assert!(
                t0.elapsed() < limit,
                "timed out waiting for {what}; last status {:?}\nlog:\n{}",
                self.status(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until a log line satisfies `cond`.
    fn wait_line(&self, what: &str, limit: Duration, cond: impl Fn(&str) -> bool) {
        let t0 = Instant::now();
        while !self.lines.lock().unwrap().iter().any(|l| cond(l)) {
            assert!(t0.elapsed() < limit, "timed out waiting for {what}; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, sig: i32) {
        unsafe { kill(self.child.id() as i32, sig) };
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            assert!(t0.elapsed() < limit, "daemon did not exit; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

fn converged_on(commit: &str) -> impl Fn(&serde_json::Value) -> bool + '_ {
    move |s| {
        s["spec"]["commit"] == commit
            && s["rollout"]["phase"] == "converged"
            && s["rollout"]["nodes_at_target"] == s["rollout"]["nodes_total"]
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn daemon_follows_a_spec_repo_rejects_an_invalid_commit_and_survives_kill_9_and_sigterm() {
    let mut fleet = TestFleet::start("e2e-daemon", FleetOptions::full(Topology::standard()));
    fleet.add_release("2026.11.3", false);
    let repo = SpecRepo::new(&fleet);
    let state = fleet.dir.join("daemon-state");
    let mut d = Daemon::start(&fleet, &repo, &state);
    let first = git(&repo.work, &["rev-parse", "HEAD"]);
    d.wait_status("the first spec applied and converged", Duration::from_secs(60), converged_on(&first));
    assert_eq!(d.get("/healthz").map(|r| r.0), Some(200));
    assert_eq!(d.get("/readyz").map(|r| r.0), Some(200), "{}", d.log());
    // `drover status` shows the daemon's view when one answers.
    let status = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["--specs", "/nonexistent", "status", "--daemon", &d.listen])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert_eq!(status.status.code(), Some(0), "{text}");
    assert!(
        text.contains(&format!("daemon at {} (real fleet): spec generation 1 commit {}", d.listen, &first[..12])),
        "{text}"
    );
    assert!(text.contains("rollout: converged  16 of 16 nodes at target") && text.contains("par1-f1-n1"), "{text}");
    // One drover per fleet: another one on the same state is refused.
    let second = Command::new(env!("CARGO_BIN_EXE_drover"))
        .env("DROVER_CREDENTIALS_DIR", &fleet.dir)
        .arg("--specs")
        .arg(&fleet.spec_dir)
        .args(["reconcile", "--once", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&second.stderr).contains("another drover holds the lease"));

    // 1. A new target committed: the daemon converges to it under load.
    let connects = |d: &Daemon| metric(&d.get("/metrics").unwrap().1, "drover_ssh_connections_total");
    let connected = connects(&d);
    assert!(connected >= 16.0, "every node's SSH master was opened: {connected}");
    let to = Target { release: "2026.11.2".into(), ..Target::initial() };
    let (gens, c1) = repo.commit_target(&mut fleet, &to, "release 2026.11.2");
    let s = d.wait_status("release 2026.11.2 converged", Duration::from_secs(120), converged_on(&c1));
    assert_eq!(s["spec"]["generation"], 2, "{s}");
    assert_rolled_out(&fleet, &to, &stop_all(gens));
    // The new spec logs in as the old one did: its masters were kept (a
    // reconnect would open one per node and LB host again).
    let reconnected = connects(&d) - connected;
    assert!(reconnected < 3.0, "{reconnected} SSH connections opened for a release change; log:\n{}", d.log());
    // Drift behind drover's back: a node's release link moved back by hand
    // (repaired), and a server put in maint by an operator (reported, left alone).
    let node = fleet.node("fra1-f1-n2");
    let link = node.root.join("srv/app/current");
    let old = std::fs::read_link(&link).unwrap().to_string_lossy().replace("2026.11.2", "2026.11.1");
    let tmp = node.root.join("srv/app/current.tmp");
    std::os::unix::fs::symlink(&old, &tmp).unwrap();
    std::fs::rename(&tmp, &link).unwrap();
    assert_eq!(node.active_release().as_deref(), Some("2026.11.1"));
    fleet.site("par1").lb.set("set server par1-f1/par1-f1-n3 state maint");
    let s = d.wait_status("the drift repaired and the hold reported", Duration::from_secs(60), |s| {
        s["rollout"]["held"].to_string().contains("par1-f1-n3") && s["rollout"]["drift_items"] == 0
    });
    assert_eq!(node.active_release().as_deref(), Some("2026.11.2"), "{s}");
    std::thread::sleep(Duration::from_secs(3));
    let held = super::lb::parse_servers_state(&fleet.site("par1").lb.cmd("show servers state"))
        .into_iter()
        .find(|st| st.srv_name == "par1-f1-n3")
        .unwrap();
    assert_ne!(held.admin_state, 0, "drover lifted an operator's maint");
    fleet.site("par1").lb.set("set server par1-f1/par1-f1-n3 state ready");
    d.wait_status("the fleet converged again", Duration::from_secs(30), converged_on(&c1));
    // The LB host's SSH connections cut (its sshd restarted, a network drop):
    // the runtime API forward died with drover's master; it is forwarded
    // again over a new one and the daemon goes on observing.
    let passes = |s: &serde_json::Value| s["rollout"]["passes"].as_u64().unwrap_or(0);
    let before = passes(&d.status().unwrap());
    assert!(fleet.site("par1").cut_ssh_connections() > 0, "drover's master to the LB host was open");
    let s = d.wait_status("passes after the LB host's connections were cut", Duration::from_secs(30), |s| {
        passes(s) >= before + 3
    });
    assert!(s["last_error"].is_null(), "{s}");
    assert!(d.log().contains("forwarded again"), "{}", d.log());
    let started_before = metric(&d.get("/metrics").unwrap().1, "drover_actions_started_total");
    assert!(started_before > 0.0);

    // 2. An invalid commit: rejected with its position, nothing applied, nothing started.
    std::fs::write(repo.work.join("specs").join("zz-typo.yaml"), "fleet:\n  polcy: {}\n").unwrap();
    let bad = repo.commit("a typo");
    let s = d.wait_status("the invalid commit reported", Duration::from_secs(30), |s| {
        s["spec"]["rejected"]["commit"] == bad
    });
    assert_eq!(s["spec"]["generation"], 2, "{s}");
    assert_eq!(s["spec"]["commit"], c1, "{s}");
    let err = s["spec"]["rejected"]["error"].as_str().unwrap();
    assert!(err.contains("zz-typo.yaml:2:3") && err.contains("polcy"), "{err}");
    let metrics = d.get("/metrics").unwrap().1;
    assert!(metric(&metrics, "drover_spec_rejections_total") >= 1.0, "{metrics}");
    std::thread::sleep(Duration::from_secs(3));
    let metrics = d.get("/metrics").unwrap().1;
    assert_eq!(metric(&metrics, "drover_actions_started_total"), started_before, "an invalid spec started work");
    assert_converged(&fleet, &to);

    // 3. A good commit again, and kill -9 while a production farm is switched.
    let to = Target { release: "2026.11.3".into(), ..Target::initial() };
    let (gens, c2) = repo.commit_target(&mut fleet, &to, "release 2026.11.3");
    let farm_switch = |l: &str| l.contains("\"start\"") && l.contains("activate") && l.contains("par1-f1");
    d.wait_line("a production farm switch", Duration::from_secs(90), farm_switch);
    d.signal(9);
    d.wait_exit(Duration::from_secs(10));
    let mut d = Daemon::start(&fleet, &repo, &state);
    d.wait_status("2026.11.3 converged after kill -9", Duration::from_secs(150), converged_on(&c2));
    assert_rolled_out(&fleet, &to, &stop_all(gens));

    // 4. SIGTERM during a rollout: the open farm window closes, exit 0.
    let to = Target { release: "2026.11.3".into(), php: "8.3.14".into(), ..Target::initial() };
    let (gens, c3) = repo.commit_target(&mut fleet, &to, "php 8.3.14");
    let php_switch = |l: &str| l.contains("\"start\"") && l.contains("activate") && l.contains("php 8.3.14");
    d.wait_line("a PHP switch", Duration::from_secs(90), php_switch);
    d.signal(15);
    assert_eq!(d.wait_exit(Duration::from_secs(120)), Some(0), "{}", d.log());
    let log = d.log();
    assert!(log.contains("stopping"), "{log}");
    assert!(log.contains("\"parked\":0") && !log.contains("stop grace ran out"), "a window was left open:\n{log}");
    // Nothing is left out of service by the stop.
    let memory = journal_memory(&state, &fleet.model);
    assert!(memory.farm_ops.is_empty() && memory.node_ops.is_empty(), "{memory:?}");
    let mut d = Daemon::start(&fleet, &repo, &state);
    d.wait_status("php 8.3.14 converged after SIGTERM", Duration::from_secs(150), converged_on(&c3));
    assert_rolled_out(&fleet, &to, &stop_all(gens));
    d.signal(15);
    assert_eq!(d.wait_exit(Duration::from_secs(30)), Some(0), "{}", d.log());
}

/// The daemon's journal as it left it (read-only, as `drover status` reads it).
fn journal_memory(state: &Path, fleet: &drover::model::Fleet) -> drover::plan::Memory {
    drover::control::journal::Journal::peek(&state.join(drover::control::journal::FILE), 0, fleet)
        .unwrap()
        .loaded
        .memory
}
