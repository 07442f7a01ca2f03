//! Real user sessions through a site's HAProxy for as long as a test runs:
//! N concurrent sessions, each a browser-like client with its own cookie jar,
//! requesting continuously. For every response it records the serving node
//! and release; the report flags every failed request and every session that
//! was served an older release than one it had already seen (the monotonic
//! sessions invariant), using drover's own release ordering.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle, sleep};
use std::time::{Duration, Instant};

use drover::model::ReleaseId;

use super::http::Client;
use super::procs::wait_for;

#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub sessions: usize,
    /// Pause between a session's requests.
    pub think: Duration,
    pub path: String,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { sessions: 8, think: Duration::from_millis(25), path: "/".into() }
    }
}

/// One response a session got.
#[derive(Clone, Debug)]
pub struct Observation {
    /// Since the load generator started.
    pub at: Duration,
    pub node: String,
    pub release: String,
    /// The FARMID cookie after this response, and whether it set a new one.
    pub farm: Option<String>,
    pub farm_cookie_set: bool,
    /// X-Session-Stale: the session data was written by this older release.
    pub stale_data: Option<String>,
    /// X-Warm: whether the node had been warmed for the release it served
    /// since it last switched (`None`: the page does not say).
    pub warm: Option<bool>,
}

#[derive(Clone, Debug)]
pub struct Failure {
    pub session: usize,
    pub at: Duration,
    pub what: String,
}

#[derive(Clone, Debug)]
pub struct Regression {
    pub session: usize,
    pub at: Duration,
    pub seen: String,
    pub served: String,
    pub node: String,
}

#[derive(Clone, Debug, Default)]
pub struct SessionLog {
    pub id: usize,
    pub observations: Vec<Observation>,
    pub failures: Vec<Failure>,
    pub retries: u64,
}

pub struct LoadGen {
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
    threads: Vec<JoinHandle<SessionLog>>,
    started: Instant,
}

impl LoadGen {
    pub fn start(addr: SocketAddr, opts: LoadOptions) -> LoadGen {
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let threads = (0..opts.sessions)
            .map(|id| {
                let stop = Arc::clone(&stop);
                let requests = Arc::clone(&requests);
                let opts = opts.clone();
                thread::spawn(move || session(id, addr, &opts, started, &stop, &requests))
            })
            .collect();
        LoadGen { stop, requests, threads, started }
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` more requests than now have been answered.
    pub fn wait_more(&self, n: u64, timeout: Duration) {
        let target = self.requests() + n;
        assert!(
            wait_for(timeout, || (self.requests() >= target).then_some(())).is_some(),
            "the load generator made fewer than {n} requests in {timeout:?}"
        );
    }

    pub fn stop(mut self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let sessions = std::mem::take(&mut self.threads)
            .into_iter()
            .map(|t| t.join().expect("load generator session panicked"))
            .collect();
        LoadReport { sessions, elapsed: self.started.elapsed() }
    }
}

impl Drop for LoadGen {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn session(
    id: usize,
    addr: SocketAddr,
    opts: &LoadOptions,
    started: Instant,
    stop: &AtomicBool,
    requests: &AtomicU64,
) -> SessionLog {
    let mut log = SessionLog { id, ..SessionLog::default() };
    let mut client = Client::new(addr);
    while !stop.load(Ordering::Relaxed) {
        let at = started.elapsed();
        match client.get(&opts.path) {
            Ok(r) if r.status == 200 => {
                let set = r.set_cookies().iter().any(|(k, _)| k == "FARMID");
                log.observations.push(Observation {
                    at,
                    node: r.node().to_string(),
                    release: r.release().to_string(),
                    farm: client.cookie("FARMID").map(str::to_string),
                    farm_cookie_set: set,
                    stale_data: r.header("x-session-stale").map(str::to_string),
                    warm: r.header("x-warm").map(|w| w == "1"),
                });
            }
            Ok(r) => log.failures.push(Failure {
                session: id,
                at,
                what: format!("HTTP {} from {}: {}", r.status, r.header("x-node").unwrap_or("the LB"), r.body.trim()),
            }),
            Err(e) => log.failures.push(Failure { session: id, at, what: e.to_string() }),
        }
        requests.fetch_add(1, Ordering::Relaxed);
        sleep(opts.think);
    }
    log.retries = client.retries;
    log
}

pub struct LoadReport {
    pub sessions: Vec<SessionLog>,
    pub elapsed: Duration,
}

impl LoadReport {
    pub fn responses(&self) -> usize {
        self.sessions.iter().map(|s| s.observations.len()).sum()
    }

    pub fn failures(&self) -> Vec<&Failure> {
        self.sessions.iter().flat_map(|s| &s.failures).collect()
    }

    /// Every response that served a session an older release than it had seen.
    pub fn regressions(&self) -> Vec<Regression> {
        let mut out = Vec::new();
        for s in &self.sessions {
            let mut newest: Option<ReleaseId> = None;
            for o in &s.observations {
                let r = ReleaseId(o.release.as_str().into());
                match &newest {
                    Some(n) if r < *n => out.push(Regression {
                        session: s.id,
                        at: o.at,
                        seen: n.0.to_string(),
                        served: o.release.clone(),
                        node: o.node.clone(),
                    }),
                    Some(n) if r <= *n => {}
                    _ => newest = Some(r),
                }
            }
        }
        out
    }

    /// Responses whose session data an older release had written (the farm's
    /// memcached was not flushed when it switched release).
    pub fn stale_session_data(&self) -> Vec<(usize, &Observation)> {
        self.sessions
            .iter()
            .flat_map(|s| s.observations.iter().filter(|o| o.stale_data.is_some()).map(move |o| (s.id, o)))
            .collect()
    }

    /// Responses from a node not warmed for the release it served (X-Warm: 0).
    pub fn cold(&self) -> Vec<&Observation> {
        self.sessions.iter().flat_map(|s| &s.observations).filter(|o| o.warm == Some(false)).collect()
    }

    /// Cold responses per node.
    pub fn cold_by_node(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for o in self.cold() {
            *m.entry(o.node.clone()).or_default() += 1;
        }
        m
    }

    pub fn retries(&self) -> u64 {
        self.sessions.iter().map(|s| s.retries).sum()
    }

    pub fn by_release(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for o in self.sessions.iter().flat_map(|s| &s.observations) {
            *m.entry(o.release.clone()).or_default() += 1;
        }
        m
    }

    pub fn by_node(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for o in self.sessions.iter().flat_map(|s| &s.observations) {
            *m.entry(o.node.clone()).or_default() += 1;
        }
        m
    }

    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} responses in {:.1?} over {} sessions, {} failed, {} regressions, {} stale session data, {} cold, {} retried; by release {:?}",
            self.responses(),
            self.elapsed,
            self.sessions.len(),
            self.failures().len(),
            self.regressions().len(),
            self.stale_session_data().len(),
            self.cold().len(),
            self.retries(),
            self.by_release()
        );
        for f in self.failures().iter().take(10) {
            let _ = write!(s, "\n  failed: session {} at {:.2?}: {}", f.session, f.at, f.what);
        }
        for r in self.regressions().iter().take(10) {
            let _ = write!(
                s,
                "\n  regression: session {} at {:.2?} saw {} then got {} from {}",
                r.session, r.at, r.seen, r.served, r.node
            );
        }
        for (id, o) in self.stale_session_data().iter().take(10) {
            let _ = write!(
                s,
                "\n  stale session data: session {id} at {:.2?} on {} ({}) written by {:?}",
                o.at, o.node, o.release, o.stale_data
            );
        }
        s
    }

    /// No failed request, no release regression, no stale session data, and
    /// some traffic at all.
    pub fn assert_clean(&self) {
        assert!(
            self.responses() > 0
                && self.failures().is_empty()
                && self.regressions().is_empty()
                && self.stale_session_data().is_empty(),
            "load generator: {}",
            self.summary()
        );
    }
}
