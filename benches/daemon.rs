//! The daemon's reaction latency, memory and idle CPU on the reference
//! fleet (`specs/`, 518 nodes), simulated.
//!
//! 1. Reaction latency: a spec file is changed (a new release) in a watched
//!    directory; the time until the daemon starts the first action, minus
//!    the time it spent observing the fleet in between (target < 250 ms).
//!    Baseline, same run: reading + validating the spec and one plan pass
//!    by direct calls (what the daemon cannot avoid).
//! 2. Memory and idle CPU: `drover reconcile --simulate` as a process on the
//!    converged fleet: RSS (VmRSS, VmHWM) and CPU time over an idle period
//!    (target < 64 MiB RSS), over several resync periods (a resync observes
//!    and plans the whole fleet: measuring less than one period misses it):
//!    the default 60 s resync over 130 s, 10 s over 35 s, 1 s over 20 s.
//!
//! `cargo bench --bench daemon` (add `-- --quick` for a short run).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use drover::control::Event;
use drover::control::journal::Journal;
use drover::daemon::{self, Note, source, state};

/// The reference spec, with the simulated fleet starting converged (no
/// `simulation.initial`), in a fresh directory.
fn converged_copy(dir: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("specs");
    let _ = std::fs::remove_dir_all(dir);
    copy_dir(&src, dir);
    let fleet = dir.join("fleet.yaml");
    let text = std::fs::read_to_string(&fleet).unwrap();
    // Drop the top-level `simulation:` block (it ends at the next top-level key).
    let mut skipping = false;
    let mut kept = String::new();
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "simulation:" {
            skipping = true;
            continue;
        }
        if skipping && !line.starts_with(' ') && !line.trim().is_empty() {
            skipping = false;
        }
        if !skipping {
            kept.push_str(line);
        }
    }
    std::fs::write(&fleet, kept).unwrap();
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
}

fn current_release(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("fleet.yaml")).unwrap();
    let line = text.lines().find(|l| l.trim_start().starts_with("release:")).expect("a fleet release");
    line.split(':').nth(1).unwrap().trim().trim_matches('"').to_string()
}

fn set_release(dir: &Path, from: &str, to: &str) {
    let p = dir.join("fleet.yaml");
    let text = std::fs::read_to_string(&p).unwrap();
    // An editor's atomic save: write a temporary file, rename it over.
    let tmp = dir.join(".fleet.yaml.swp");
    std::fs::write(
        &tmp,
        text.replacen(&format!("release: {from}"), &format!("release: {to}"), 1).replacen(
            &format!("release: \"{from}\""),
            &format!("release: \"{to}\""),
            1,
        ),
    )
    .unwrap();
    std::fs::rename(&tmp, &p).unwrap();
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn reaction_latency(rounds: usize) -> f64 {
    let dir = std::env::temp_dir().join(format!("drover-bench-daemon-{}", std::process::id()));
    converged_copy(&dir);
    // Baseline: read + validate + one plan pass, by direct calls.
    let mut base = Vec::new();
    for _ in 0..rounds.max(5) {
        let t = Instant::now();
        let u = source::read(&dir, None);
        let read = t.elapsed();
        let fleet = u.fleet.expect("the copied spec is valid");
        let obs = drover::sim::Sim::new(&fleet, drover::sim::SimConfig::new(&fleet, 1)).observe();
        let memory = drover::plan::Memory::default();
        let est = drover::plan::Estimates::default();
        let t = Instant::now();
        let _ = drover::plan::plan(&drover::plan::World {
            fleet: &fleet,
            observed: &obs,
            memory: &memory,
            now_ms: 0,
            estimates: &est,
        });
        base.push((read + t.elapsed()).as_secs_f64() * 1000.0);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let mut lat = Vec::new();
    let lat_ref = &mut lat;
    rt.block_on(async {
        let (specs, _watch) =
            source::watch_dir(dir.clone(), Duration::from_millis(100), Duration::from_secs(30)).unwrap();
        let shared = Arc::new(state::Shared::new(state::DaemonStatus::default()));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let jdir = dir.with_extension("state");
        let _ = std::fs::remove_dir_all(&jdir);
        std::fs::create_dir_all(&jdir).unwrap();
        let journal = Journal::new(&jdir.join(drover::control::journal::FILE));
        let opts = daemon::Options {
            tick: Duration::from_millis(20),
            idle_tick: Duration::from_millis(100),
            resync: Duration::from_secs(60),
            ..Default::default()
        };
        let connect = |fleet: Arc<drover::model::Fleet>, current: Option<Arc<drover::sim::live::LiveSim>>| async move {
            match current {
                Some(sim) => sim.set_fleet(fleet).map(|()| sim),
                None => {
                    let mut cfg = drover::sim::SimConfig::new(&fleet, 1);
                    cfg.traffic = false;
                    drover::sim::live::LiveSim::new(fleet, cfg, 100_000.0)
                }
            }
        };
        // Timeline of notes, shared with the driver below.
        let notes: Arc<std::sync::Mutex<Vec<(Instant, Note)>>> = Default::default();
        let sink = Arc::clone(&notes);
        let mut on = move |n: &Note| sink.lock().unwrap().push((Instant::now(), n.clone()));
        let sh = Arc::clone(&shared);
        let driver = {
            let dir = dir.clone();
            let notes = Arc::clone(&notes);
            async move {
                let converged = |sh: &state::Shared| sh.status().rollout.phase == "converged";
                let t0 = Instant::now();
                while !converged(&sh) {
                    assert!(t0.elapsed() < Duration::from_secs(60), "never converged");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let mut release = current_release(&dir);
                for i in 0..rounds {
                    let next = format!("2026.12.{}", i + 1);
                    notes.lock().unwrap().clear();
                    let t_write = Instant::now();
                    set_release(&dir, &release, &next);
                    release = next;
                    // Wait for the first action started.
                    let started = loop {
                        let found = notes
                            .lock()
                            .unwrap()
                            .iter()
                            .find_map(|(t, n)| matches!(n, Note::Action(Event::Started { .. })).then_some(*t));
                        if let Some(t) = found {
                            break t;
                        }
                        assert!(t_write.elapsed() < Duration::from_secs(20), "no action started");
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    };
                    let observing: Duration = notes
                        .lock()
                        .unwrap()
                        .iter()
                        .filter(|(t, _)| *t <= started)
                        .filter_map(|(_, n)| if let Note::Observed { took } = n { Some(*took) } else { None })
                        .sum();
                    let ms = (started - t_write).saturating_sub(observing).as_secs_f64() * 1000.0;
                    lat_ref.push(ms);
                    // Let the rollout finish before the next change.
                    let t1 = Instant::now();
                    while !(converged(&sh) && sh.status().spec.generation as usize == i + 2) {
                        assert!(t1.elapsed() < Duration::from_secs(120), "rollout {i} did not converge");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                let _ = stop_tx.send(true);
            }
        };
        let run = daemon::run(connect, specs, None, &journal, shared, opts, stop_rx, &mut on);
        let (r, ()) = tokio::join!(run, driver);
        r.expect("the daemon ran");
        let _ = std::fs::remove_dir_all(&jdir);
    });
    let _ = std::fs::remove_dir_all(&dir);
    let b = median(&mut base);
    let m = median(&mut lat);
    let p90 = {
        lat.sort_by(f64::total_cmp);
        lat[(lat.len() * 9 / 10).min(lat.len() - 1)]
    };
    println!(
        "reaction latency (spec change -> first action, observation excluded, {rounds} changes, 518 nodes): \
         median {m:.1} ms, p90 {p90:.1} ms (target < 250 ms; includes the 100 ms quiet period)"
    );
    println!("  baseline (read + validate + plan, direct calls): median {b:.2} ms; latency / baseline = {:.1}x", m / b);
    m
}

/// What the user sees: the real `drover reconcile --simulate` process on the
/// converged reference fleet; a spec file saved (an editor's rename) -> the
/// first `start action=` line in the process's log, observation included.
fn reaction_end_to_end(rounds: usize, in_process_ms: f64) {
    let dir = std::env::temp_dir().join(format!("drover-bench-daemon-e2e-{}", std::process::id()));
    converged_copy(&dir);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let state: PathBuf = dir.with_extension("state");
    let log_path = dir.with_extension("log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .arg("--specs")
        .arg(&dir)
        .args(["reconcile", "--simulate", "--listen", &addr, "--state-dir"])
        .arg(&state)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("drover runs");
    let converged_at = |generation: usize| {
        let generation = format!("\"generation\":{generation},");
        wait_for_status(&addr, Duration::from_secs(180), |r| {
            r.contains("\"phase\":\"converged\"") && r.contains(&generation)
        })
    };
    converged_at(1);
    let mut release = current_release(&dir);
    let mut lat = Vec::new();
    for i in 0..rounds {
        let next = format!("2026.12.{}", i + 1);
        let offset = std::fs::metadata(&log_path).unwrap().len() as usize;
        let t_write = Instant::now();
        set_release(&dir, &release, &next);
        release = next;
        loop {
            let text = std::fs::read(&log_path).unwrap();
            if String::from_utf8_lossy(&text[offset.min(text.len())..]).contains("start action=") {
                break;
            }
            assert!(t_write.elapsed() < Duration::from_secs(30), "no action logged 30 s after the spec was saved");
            std::thread::sleep(Duration::from_millis(2));
        }
        lat.push(t_write.elapsed().as_secs_f64() * 1000.0);
        converged_at(i + 2);
    }
    unsafe { kill(child.id() as i32, 15) };
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&state);
    let _ = std::fs::remove_file(&log_path);
    let m = median(&mut lat);
    let max = lat.iter().copied().fold(0.0, f64::max);
    println!(
        "reaction end to end (real `drover reconcile --simulate`, spec saved -> first action logged, {rounds} changes, \
         518 nodes): median {m:.1} ms, max {max:.1} ms (target < 1000 ms); / the in-process figure above = {:.1}x",
        m / in_process_ms
    );
}

fn proc_status(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
}

fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15; after ") " the state is field 3.
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// Polls the daemon's `/status` until `done` holds of its answer; panics
/// (the bench fails) after `limit`.
fn wait_for_status(addr: &str, limit: Duration, done: impl Fn(&str) -> bool) {
    let t0 = Instant::now();
    while !get(addr, "/status").is_some_and(|r| done(&r)) {
        assert!(t0.elapsed() < limit, "the daemon's /status never reached the awaited state in {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn process_footprint(idle: Duration, resync: &str) {
    let dir = std::env::temp_dir().join(format!("drover-bench-daemon-proc-{}-{resync}", std::process::id()));
    converged_copy(&dir);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let state: PathBuf = dir.with_extension("state");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .arg("--specs")
        .arg(&dir)
        .args(["reconcile", "--simulate", "--listen", &addr, "--resync", resync, "--state-dir"])
        .arg(&state)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("drover runs");
    let pid = child.id();
    wait_for_status(&addr, Duration::from_secs(60), |r| r.contains("\"phase\":\"converged\""));
    let c0 = cpu_ticks(pid);
    std::thread::sleep(idle);
    let c1 = cpu_ticks(pid);
    let rss = proc_status(pid, "VmRSS:");
    let hwm = proc_status(pid, "VmHWM:");
    unsafe { kill(pid as i32, 15) };
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&state);
    let hz = 100.0;
    let cpu_pct = (c1 - c0) as f64 / hz / idle.as_secs_f64() * 100.0;
    println!(
        "daemon process, 518 simulated nodes, converged, resync {resync}: RSS {:.1} MiB (peak {:.1} MiB; target < 64 MiB), \
         idle CPU {cpu_pct:.2}% of one core over {:.0} s",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        idle.as_secs_f64()
    );
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let in_process = reaction_latency(if quick { 3 } else { 20 });
    reaction_end_to_end(if quick { 3 } else { 10 }, in_process);
    // Several resync periods each (`--quick`: shorter runs, fewer periods).
    let (long, mid, short) = if quick { (65, 21, 3) } else { (130, 35, 20) };
    process_footprint(Duration::from_secs(long), "60s");
    process_footprint(Duration::from_secs(mid), "10s");
    process_footprint(Duration::from_secs(short), "1s");
}
