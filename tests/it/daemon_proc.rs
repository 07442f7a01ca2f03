//! The daemon as a process (`drover reconcile --simulate`): signals, its
//! state directory, no temporary directory left behind, and endpoints that
//! answer while slow clients hold connections.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub(crate) fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, out.split("\r\n\r\n").nth(1).unwrap_or("").to_string()))
}

pub(crate) struct Daemon {
    child: Child,
    pub(crate) addr: String,
    log: PathBuf,
}

impl Daemon {
    fn start(base: &Path, state: &str, addr: &str) -> Daemon {
        Daemon::start_at(base, state, addr, "600")
    }

    /// At `--time-scale scale`.
    pub(crate) fn start_at(base: &Path, state: &str, addr: &str, scale: &str) -> Daemon {
        let log = base.join(format!("{state}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_drover"))
            .arg("--specs")
            .arg(base.join("specs"))
            .args(["reconcile", "--simulate", "--time-scale", scale, "--listen", addr, "--state-dir"])
            .arg(base.join(state))
            .env("TMPDIR", base.join("tmp"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon { child, addr: addr.to_string(), log }
    }

    pub(crate) fn running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn wait_until(&mut self, what: &str, limit: Duration, cond: impl Fn(&mut Daemon) -> bool) {
        let t0 = Instant::now();
        while !cond(self) {
            assert!(self.child.try_wait().unwrap().is_none(), "exited waiting for {what}:\n{}", self.log());
            assert!(t0.elapsed() < limit, "timed out waiting for {what}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, sig: i32) {
        unsafe { kill(self.child.id() as i32, sig) };
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn setup(name: &str) -> PathBuf {
    let base = std::env::temp_dir().join(format!("drover-proc-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(base.join("specs")).unwrap();
    std::fs::create_dir_all(base.join("tmp")).unwrap();
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/minimal/spec.yaml");
    std::fs::copy(spec, base.join("specs/spec.yaml")).unwrap();
    base
}

fn tmp_entries(base: &Path) -> Vec<String> {
    std::fs::read_dir(base.join("tmp")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect()
}

#[test]
fn sighup_rereads_slow_clients_wait_and_no_temporary_directory_is_left() {
    let base = setup("signals");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut d = Daemon::start(&base, "state", &addr);
    d.wait_until("readiness", Duration::from_secs(60), |d| get(&d.addr, "/readyz").is_some_and(|(c, _)| c == 200));
    // --state-dir is honoured: the simulation's lease and journal are there.
    assert!(base.join("state/simulation").is_dir());
    assert!(base.join("state/simulation").read_dir().unwrap().next().is_some());

    // 40 clients that open a connection and send nothing or half a header.
    let mut slow = Vec::new();
    for i in 0..40 {
        let mut s = TcpStream::connect(&addr).unwrap();
        if i % 2 == 1 {
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
        }
        slow.push(s);
    }
    let t0 = Instant::now();
    assert_eq!(get(&addr, "/healthz").map(|(c, _)| c), Some(200));
    assert!(t0.elapsed() < Duration::from_secs(3), "healthz took {:?} behind slow clients", t0.elapsed());

    // SIGHUP: the spec is read again; the daemon goes on.
    d.signal(1);
    d.wait_until("the SIGHUP log line", Duration::from_secs(20), |d| {
        d.log().contains("SIGHUP: reading the spec again")
    });
    assert_eq!(get(&addr, "/healthz").map(|(c, _)| c), Some(200));

    // A second daemon on the same address: the bind fails, exit 1.
    let mut second = Daemon::start(&base, "state2", &addr);
    assert_eq!(second.wait_exit(Duration::from_secs(60)), Some(1), "{}", second.log());
    assert!(second.log().contains("cannot serve HTTP on"), "{}", second.log());

    // SIGTERM then a second one: exit 0 (stopped) or 130 (at once).
    d.signal(15);
    d.signal(15);
    let code = d.wait_exit(Duration::from_secs(60));
    assert!(matches!(code, Some(0) | Some(130)), "{code:?}: {}", d.log());

    // SIGKILL cannot clean up: there is nothing to.
    let mut third = Daemon::start(&base, "state", &format!("127.0.0.1:{}", free_port()));
    third.wait_until("readiness", Duration::from_secs(60), |d| get(&d.addr, "/readyz").is_some_and(|(c, _)| c == 200));
    third.signal(9);
    assert!(third.wait_exit(Duration::from_secs(10)).is_none());
    assert!(tmp_entries(&base).is_empty(), "left in the temporary directory: {:?}", tmp_entries(&base));
    drop(slow);
    let _ = std::fs::remove_dir_all(&base);
}

/// `/status` as JSON (`None` while it does not answer).
pub(crate) fn status(addr: &str) -> Option<serde_json::Value> {
    get(addr, "/status").and_then(|(_, body)| serde_json::from_str(&body).ok())
}

/// Replaces `from` by `to` in `file` as `sed -i` does: a new file renamed over it.
fn edit(file: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains(from), "{from} not in {}", file.display());
    let tmp = file.with_extension("tmp~");
    std::fs::write(&tmp, text.replacen(from, to, 1)).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

/// A valid spec that arrives while actions run is shown as pending (with
/// what it waits for, and one log line) exactly while they run, then
/// applies; one that arrives when nothing runs applies at once.
#[test]
fn a_new_spec_is_pending_while_actions_run_then_applies() {
    let base = setup("pending");
    let file = base.join("specs/spec.yaml");
    let addr = format!("127.0.0.1:{}", free_port());
    // Slow enough that staging a release takes seconds of wall time.
    let mut d = Daemon::start_at(&base, "state", &addr, "2");
    d.wait_until("convergence", Duration::from_secs(60), |d| {
        status(&d.addr).is_some_and(|s| s["rollout"]["phase"] == "converged")
    });
    // Nothing runs: the edit applies without being pending.
    edit(&file, "release: \"2026.11.2\"", "release: \"2026.11.3\"");
    d.wait_until("generation 2 with actions running", Duration::from_secs(30), |d| {
        status(&d.addr).is_some_and(|s| {
            s["spec"]["generation"] == 2 && s["rollout"]["running"].as_array().is_some_and(|r| !r.is_empty())
        })
    });
    assert!(!d.log().contains("pending: waiting"), "{}", d.log());
    // Actions run: the next edit waits, and says so.
    edit(&file, "release: \"2026.11.3\"", "release: \"2026.11.4\"");
    let seen_pending = std::cell::Cell::new(false);
    d.wait_until("generation 3", Duration::from_secs(120), |d| {
        let Some(s) = status(&d.addr) else { return false };
        let spec = &s["spec"];
        if spec["pending"] == true {
            assert_eq!(spec["generation"], 2, "{spec}");
            let why = spec["pending_reason"].as_str().unwrap_or_default();
            assert!(why.contains("running action"), "{spec}");
            assert!(spec["pending_since_ms"].as_u64().is_some(), "{spec}");
            // Pending only while something runs (the status is one document).
            assert!(s["rollout"]["running"].as_array().is_some_and(|r| !r.is_empty()), "{s}");
            seen_pending.set(true);
        }
        spec["generation"] == 3
    });
    assert!(seen_pending.get(), "the spec was never shown as pending:\n{}", d.log());
    let s = status(&addr).unwrap();
    assert_eq!(s["spec"]["pending"], false, "{}", s["spec"]);
    assert!(s["spec"]["pending_reason"].is_null(), "{}", s["spec"]);
    let log = d.log();
    assert!(log.contains("spec generation 3 pending: waiting for"), "{log}");
    let pending_at = log.find("spec generation 3 pending").unwrap();
    let applied_at = log.find("spec applied generation=3").expect("generation 3 applied");
    assert!(pending_at < applied_at);
    let metrics = get(&addr, "/metrics").unwrap().1;
    assert!(metrics.contains("drover_spec_pending 0"), "{metrics}");
    d.signal(15);
    assert_eq!(d.wait_exit(Duration::from_secs(60)), Some(0), "{}", d.log());
    let _ = std::fs::remove_dir_all(&base);
}

/// The reference fleet (20,000 simulated sessions per site) at time scales
/// this machine cannot simulate: every `/healthz` and `/status` answers
/// within a bound throughout the rollout (also the first, at start), the
/// simulated clock goes on (slower, and says so), and SIGHUP and SIGTERM
/// (with hundreds of actions running) are handled promptly.
#[test]
fn the_live_simulation_never_stalls_its_daemon_at_any_time_scale() {
    // Generous: this asserts "never stalls", not speed, on a loaded box.
    const BOUND: Duration = Duration::from_secs(2);
    for scale in ["600", "6000"] {
        let base = std::env::temp_dir().join(format!("drover-proc-scale{scale}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("tmp")).unwrap();
        copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("specs"), &base.join("specs"));
        let addr = format!("127.0.0.1:{}", free_port());
        let mut d = Daemon::start_at(&base, "state", &addr, scale);
        // From the first answer on (the listener is bound before the world is built).
        d.wait_until("the first answer", Duration::from_secs(60), |d| TcpStream::connect(&d.addr).is_ok());
        let timed = |path: &str| {
            let t0 = Instant::now();
            let answer = get(&addr, path);
            let took = t0.elapsed();
            assert!(took < BOUND, "scale {scale}: {path} took {took:?}");
            answer.unwrap_or_else(|| panic!("scale {scale}: {path} did not answer"))
        };
        let mut virtual_s = Vec::new();
        let t0 = Instant::now();
        // A rollout's first 20 s: hundreds of actions start and end at once.
        while t0.elapsed() < Duration::from_secs(20) {
            assert!(d.child.try_wait().unwrap().is_none(), "{}", d.log());
            assert_eq!(timed("/healthz").0, 200, "scale {scale}");
            let s: serde_json::Value = serde_json::from_str(&timed("/status").1).unwrap();
            if let Some(v) = s["simulation"]["virtual_s"].as_f64() {
                virtual_s.push(v);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // The clock went on all along (it once stood still for minutes).
        let n = virtual_s.len();
        assert!(n > 20, "scale {scale}: {n} status documents with a simulation");
        assert!(virtual_s[n - 1] > virtual_s[n / 2], "scale {scale}: the simulated clock stood still: {virtual_s:?}");
        let s = status(&addr).unwrap();
        let sim = &s["simulation"];
        assert_eq!(sim["time_scale"].as_f64(), Some(scale.parse().unwrap()), "{sim}");
        let effective = sim["effective_time_scale"].as_f64().unwrap();
        if sim["slipped_s"].as_f64().unwrap() > 0.0 {
            assert!(d.log().contains(&format!("simulation cannot keep up with --time-scale {scale}")), "{}", d.log());
            let metrics = timed("/metrics").1;
            assert!(metrics.contains("drover_simulation_effective_time_scale"), "{metrics}");
        }
        assert!(effective > 0.0, "{sim}");
        // SIGHUP is handled at once.
        d.signal(1);
        let t = Instant::now();
        d.wait_until("the SIGHUP log line", BOUND, |d| d.log().contains("SIGHUP: reading the spec again"));
        assert!(t.elapsed() < BOUND);
        // SIGTERM with actions running: they finish (in scaled time), then exit 0.
        let running = s["rollout"]["running"].as_array().map_or(0, Vec::len);
        let t = Instant::now();
        d.signal(15);
        let code = d.wait_exit(Duration::from_secs(60));
        assert_eq!(code, Some(0), "scale {scale}: SIGTERM with {running} actions running:\n{}", d.log());
        eprintln!("scale {scale}: stopped {:?} after SIGTERM with {running} actions running", t.elapsed());
        assert!(t.elapsed() < Duration::from_secs(30), "scale {scale}: SIGTERM took {:?}", t.elapsed());
        let _ = std::fs::remove_dir_all(&base);
    }
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// The minimal example behind its target (release 2026.11.1 everywhere, the
/// spec asks for 2026.11.2) with a two-minute soak: preproduction switches,
/// soaks, then production farm by farm.
fn setup_behind(name: &str) -> PathBuf {
    let base = setup(name);
    let file = base.join("specs/spec.yaml");
    edit(
        &file,
        "    release: \"2026.11.2\"\n  sources:",
        "    release: \"2026.11.2\"\n  policy:\n    preproduction: { soak: 2m }\n  sources:",
    );
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str(
        "simulation:\n  initial:\n    packages: [base]\n    php: \"8.3.14\"\n    release: \"2026.11.1\"\n  sessions_per_site: 500\n",
    );
    std::fs::write(&file, text).unwrap();
    base
}

/// Every farm of the status: (name, LB admin state, all its nodes at target).
fn farms(s: &serde_json::Value) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    for site in s["fleet"]["sites"].as_array().into_iter().flatten() {
        for f in site["farms"].as_array().into_iter().flatten() {
            let nodes = f["nodes"].as_array().map(Vec::as_slice).unwrap_or_default();
            let at_target = !nodes.is_empty() && nodes.iter().all(|n| n["at_target"] == true);
            out.push((
                f["name"].as_str().unwrap_or_default().into(),
                f["lb"]["admin"].as_str().unwrap_or_default().into(),
                at_target,
            ));
        }
    }
    out
}

/// Nodes at their target in the status, by name.
fn nodes_at_target(s: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for site in s["fleet"]["sites"].as_array().into_iter().flatten() {
        for f in site["farms"].as_array().into_iter().flatten() {
            for n in f["nodes"].as_array().into_iter().flatten() {
                if n["at_target"] == true {
                    out.push(n["name"].as_str().unwrap_or_default().to_string());
                }
            }
        }
    }
    out
}

/// `kill -9` in mid-rollout, then a restart on the same state directory:
/// the simulated world resumes where the file left it (virtual time, the
/// nodes and farms, the checker's counts), the journal with it, and the
/// rollout converges with every farm window opened once and closed, and no
/// invariant broken over the two lives.
#[test]
fn a_simulated_daemon_killed_mid_rollout_resumes_its_world() {
    let base = setup_behind("resume");
    let world = base.join("state/simulation/world.json");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut d = Daemon::start_at(&base, "state", &addr, "20");
    // Part-way: some farm switched, the rollout not over.
    let at_kill = std::cell::RefCell::new(serde_json::Value::Null);
    d.wait_until("a farm switched mid-rollout", Duration::from_secs(120), |d| {
        let Some(s) = status(&d.addr) else { return false };
        assert_ne!(s["rollout"]["phase"], "converged", "converged before any kill: {s}");
        let switched = farms(&s).iter().any(|(_, admin, at_target)| admin == "ready" && *at_target);
        if switched && s["simulation"]["persisted"] == true {
            *at_kill.borrow_mut() = s;
        }
        switched
    });
    let s1 = at_kill.into_inner();
    assert_eq!(s1["simulation"]["path"], world.display().to_string(), "{}", s1["simulation"]);
    assert!(d.log().contains("the simulated world starts fresh, kept in"), "{}", d.log());
    let v1 = s1["simulation"]["virtual_s"].as_f64().unwrap();
    let requests1 = s1["simulation"]["requests"].as_u64().unwrap();
    let kept_at_target = nodes_at_target(&s1);
    assert!(!kept_at_target.is_empty());
    // Once the file holds that instant (a save every second), kill -9.
    d.wait_until("a save past the switch", Duration::from_secs(60), |d| {
        status(&d.addr).is_some_and(|s| s["simulation"]["saved"]["virtual_s"].as_f64().is_some_and(|v| v >= v1))
    });
    d.signal(9);
    assert!(d.wait_exit(Duration::from_secs(10)).is_none(), "SIGKILL gives no exit code");
    assert!(world.is_file());

    let mut d = Daemon::start_at(&base, "state", &addr, "20");
    d.wait_until("the resumed world", Duration::from_secs(60), |d| {
        status(&d.addr).is_some_and(|s| s["simulation"]["resumed_at_s"].is_number())
    });
    let log = d.log();
    assert!(log.contains(&format!("resuming the simulated world from {} at virtual time", world.display())), "{log}");
    assert!(!log.contains("starts fresh"), "{log}");
    let s2 = status(&addr).unwrap();
    let resumed = s2["simulation"]["resumed_at_s"].as_f64().unwrap();
    assert!(resumed >= v1, "virtual time went back: killed after {v1} s, resumed at {resumed} s");
    assert!(
        s2["simulation"]["requests"].as_u64().unwrap() >= requests1,
        "the checker's counts restarted: {}",
        s2["simulation"]
    );
    // To convergence: what was at its target stays there.
    d.wait_until("convergence", Duration::from_secs(180), |d| {
        let Some(s) = status(&d.addr) else { return false };
        if s["simulation"].is_object() {
            let now = nodes_at_target(&s);
            for n in &kept_at_target {
                assert!(now.contains(n), "{n} was at its target before the kill and is not now: {}", s["fleet"]);
            }
            assert_eq!(s["simulation"]["violations"], 0, "{}", s["simulation"]);
        }
        s["rollout"]["phase"] == "converged" && s["simulation"]["at_target"] == true
    });
    let s3 = status(&addr).unwrap();
    let sim = &s3["simulation"];
    assert_eq!(sim["violations"], 0, "{sim}");
    assert_eq!(sim["failed_requests"], 0, "{sim}");
    assert!(sim["requests"].as_u64().unwrap() > requests1);
    // Every farm switched once: one window opened and closed each (the
    // world's count, kept with it across the kill), none left open.
    let all = farms(&s3);
    assert!(all.iter().all(|(_, admin, at_target)| admin == "ready" && *at_target), "{all:?}");
    assert_eq!(sim["actions"]["set_farm"].as_u64(), Some(2 * all.len() as u64), "{sim}");
    d.signal(15);
    assert_eq!(d.wait_exit(Duration::from_secs(60)), Some(0), "{}", d.log());
    assert!(d.log().contains(&format!("the simulated world is saved in {}", world.display())), "{}", d.log());
    let _ = std::fs::remove_dir_all(&base);
}

/// Without a state directory named, the simulation says it starts fresh and
/// is not kept (log and `/status`), and writes nothing where it runs nor in
/// the default state directory; its journal lives and dies with it.
#[test]
fn a_simulated_daemon_without_a_state_directory_starts_fresh_and_keeps_nothing() {
    let base = setup_behind("unkept");
    let cwd = base.join("cwd");
    let home = base.join("home");
    std::fs::create_dir_all(&cwd).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let log = base.join("unkept.log");
    let child = Command::new(env!("CARGO_BIN_EXE_drover"))
        .current_dir(&cwd)
        .arg("--specs")
        .arg(base.join("specs"))
        .args(["reconcile", "--simulate", "--time-scale", "20", "--listen", &addr])
        .env_remove("DROVER_STATE_DIR")
        .env_remove("STATE_DIRECTORY")
        .env("HOME", &home)
        .env("XDG_STATE_HOME", base.join("xdg"))
        .env("TMPDIR", base.join("tmp"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut d = Daemon { child, addr: addr.clone(), log };
    d.wait_until("a first pass", Duration::from_secs(60), |d| {
        status(&d.addr)
            .is_some_and(|s| s["simulation"].is_object() && s["rollout"]["passes"].as_u64().is_some_and(|p| p > 0))
    });
    let s = status(&addr).unwrap();
    assert_eq!(s["simulation"]["persisted"], false, "{}", s["simulation"]);
    assert!(s["simulation"]["path"].is_null(), "{}", s["simulation"]);
    assert!(d.log().contains("the simulation starts fresh and is not kept"), "{}", d.log());
    // Its journal and lease: in a directory of its own under TMPDIR.
    let tmp = tmp_entries(&base);
    assert!(tmp.len() == 1 && tmp[0].starts_with("drover-simulation-"), "{tmp:?}");
    d.signal(15);
    assert_eq!(d.wait_exit(Duration::from_secs(60)), Some(0), "{}", d.log());
    assert_eq!(std::fs::read_dir(&cwd).unwrap().count(), 0, "written in the current directory");
    assert!(!home.exists() && !base.join("xdg").exists(), "written in the default state directory");
    assert!(tmp_entries(&base).is_empty(), "left behind: {:?}", tmp_entries(&base));
    let _ = std::fs::remove_dir_all(&base);
}

/// A world file that cannot be resumed stops the daemon at start, naming
/// the file and the way out, and is left as it was: one damaged, one made
/// for another topology (a node renamed in the spec since).
#[test]
fn a_world_that_cannot_be_resumed_is_refused_by_name() {
    let base = setup_behind("refused");
    let world = base.join("state/simulation/world.json");
    // Damaged: refused before anything starts.
    std::fs::create_dir_all(world.parent().unwrap()).unwrap();
    std::fs::write(&world, b"{\"format\": 1, \"nodes\": [").unwrap();
    let mut d = Daemon::start_at(&base, "state", &format!("127.0.0.1:{}", free_port()), "20");
    assert_eq!(d.wait_exit(Duration::from_secs(60)), Some(1), "{}", d.log());
    let log = d.log();
    assert!(log.contains(&format!("the simulated world in {} is damaged", world.display())), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(std::fs::read(&world).unwrap(), b"{\"format\": 1, \"nodes\": [");
    // A good one, then another topology.
    std::fs::remove_file(&world).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut d = Daemon::start_at(&base, "state", &addr, "20");
    d.wait_until("a saved world", Duration::from_secs(60), |d| {
        status(&d.addr).is_some_and(|s| s["simulation"]["saved"]["saves"].as_u64().is_some_and(|n| n > 0))
    });
    d.signal(9);
    assert!(d.wait_exit(Duration::from_secs(10)).is_none());
    let kept = std::fs::read(&world).unwrap();
    edit(&base.join("specs/spec.yaml"), "name: web22,", "name: web23,");
    let mut d = Daemon::start_at(&base, "state", &addr, "20");
    assert_eq!(d.wait_exit(Duration::from_secs(60)), Some(1), "{}", d.log());
    let log = d.log();
    assert!(
        log.contains(&format!("the simulated world in {} was made for another spec", world.display()))
            && log.contains("web22")
            && log.contains("remove it or use another --state-dir"),
        "{log}"
    );
    assert_eq!(std::fs::read(&world).unwrap(), kept, "the refused world was rewritten");
    let _ = std::fs::remove_dir_all(&base);
}
