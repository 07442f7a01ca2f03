//! `reconcile_once` with nodes that do not answer: it converges what
//! answers, gives the silent nodes the stall time, then ends `Unobserved`
//! naming them; it never ends `Converged` with a node it could not observe.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::time::Instant;

use super::journal::Journal;
use super::*;
use crate::observe::Str;
use crate::sim::fleetgen::{self, Change, Shape};

/// A fleet in memory whose `silent` nodes never answer; the others take
/// online installs at once.
struct Partial {
    fleet: Fleet,
    state: Mutex<Observed>,
    executed: AtomicUsize,
}

impl Partial {
    fn new(change: Change, silent: &[NodeId]) -> Partial {
        let shape = Shape {
            prod_sites: 1,
            farms_per_site: 2,
            nodes_per_farm: 2,
            profiles: 1,
            soak: "0s".into(),
            capacity_floor: 0.0,
            change,
            sessions_per_site: 0,
            ..Shape::default()
        };
        let fleet = fleetgen::fleet(&shape).unwrap();
        let mut state = crate::sim::Sim::new(&fleet, crate::sim::SimConfig::new(&fleet, 1)).observe();
        for &n in silent {
            state.nodes[n as usize].reachable = false;
        }
        Partial { fleet, state: Mutex::new(state), executed: AtomicUsize::new(0) }
    }
}

impl Fleetside for Partial {
    fn fleet(&self) -> Arc<Fleet> {
        Arc::new(self.fleet.clone())
    }
    async fn observe(&self) -> Result<Observed, String> {
        Ok(self.state.lock().unwrap().clone())
    }
    async fn execute(&self, action: &Action) -> Outcome {
        self.executed.fetch_add(1, Ordering::SeqCst);
        let mut st = self.state.lock().unwrap();
        match action {
            Action::Fetch { node, atoms } => st.nodes[*node as usize]
                .fetched
                .extend(atoms.iter().map(|a| (Str::from(a.key().as_str()), a.version.clone()))),
            Action::InstallOnline { node, atoms } => {
                let o = &mut st.nodes[*node as usize];
                for a in atoms {
                    let key = Str::from(a.key().as_str());
                    match o.packages.iter_mut().find(|(k, _)| *k == key) {
                        Some(e) => e.1 = a.version.clone(),
                        None => o.packages.push((key, a.version.clone())),
                    }
                }
            }
            Action::HealthCheck { node } => st.nodes[*node as usize].health = crate::observe::Health::Passing,
            other => return Outcome::Failed(format!("not expected here: {other:?}")),
        }
        Outcome::Ok
    }
    fn unreachable_errors(&self) -> std::collections::BTreeMap<NodeId, String> {
        let st = self.state.lock().unwrap();
        st.unobserved().map(|n| (n, "127.0.9.9: cannot connect over SSH: Connection refused".to_string())).collect()
    }
}

fn opts(stall: Duration) -> Options {
    Options { tick: Duration::from_millis(5), stall, stop: Default::default() }
}

async fn run(world: &Arc<Partial>, name: &str, stall: Duration) -> Summary {
    let dir = std::env::temp_dir().join(format!("drover-unobserved-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let j = Journal::new(&dir.join("journal.redb"));
    let s = reconcile_once(Arc::clone(world), &j, &opts(stall), &mut |_| {}).await;
    let _ = std::fs::remove_dir_all(&dir);
    s
}

use crate::model::NodeId;

#[tokio::test]
async fn a_silent_node_ends_the_run_unobserved_after_the_stall_time_naming_it() {
    let world = Arc::new(Partial::new(Change::NONE, &[1]));
    let t0 = Instant::now();
    let s = run(&world, "one", Duration::from_millis(300)).await;
    assert_eq!(s.finish, Finish::Unobserved, "{s:?}");
    assert!(t0.elapsed() >= Duration::from_millis(300), "the silent node was given the stall time");
    assert!(s.passes > 1, "re-observed while waiting: {s:?}");
    let name = &world.fleet.nodes[1].name;
    assert_eq!(s.unobserved.len(), 1, "{:?}", s.unobserved);
    let u = &s.unobserved[0];
    assert_eq!(&u.node, name);
    assert_eq!(u.address, format!("{}:{}", world.fleet.nodes[1].address, world.fleet.nodes[1].ssh_port));
    assert!(u.error.contains("Connection refused"), "{u}");
}

#[tokio::test]
async fn what_answers_is_converged_first() {
    // The silent node is a production node (a silent preproduction node holds production back by design).
    let last = 7;
    let world = Arc::new(Partial::new(Change { online: true, ..Change::NONE }, &[last]));
    let s = run(&world, "online", Duration::from_millis(300)).await;
    assert_eq!(s.finish, Finish::Unobserved, "{s:?}");
    assert!(s.started > 0 && s.failed.is_empty(), "{s:?}");
    let st = world.state.lock().unwrap();
    for n in 0..last {
        assert!(crate::diff::node_diff(&world.fleet, n, &st.nodes[n as usize]).is_clean(), "node {n} not converged");
    }
    let silent = &st.nodes[last as usize];
    assert!(!crate::diff::node_diff(&world.fleet, last, silent).is_clean(), "nothing ran on the silent node");
}

#[tokio::test]
async fn with_every_node_silent_the_run_is_never_converged() {
    let all: Vec<NodeId> = (0..8).collect();
    let world = Arc::new(Partial::new(Change::NONE, &all));
    assert_eq!(world.fleet.nodes.len(), 8, "one preproduction and one production site of 2 x 2");
    let s = run(&world, "all", Duration::from_millis(200)).await;
    assert_eq!(s.finish, Finish::Unobserved, "{s:?}");
    assert_eq!(s.unobserved.len(), 8);
    assert_eq!(world.executed.load(Ordering::SeqCst), 0, "nothing is done to nodes whose state is unknown");
}

#[tokio::test]
async fn a_node_that_answers_again_ends_the_wait_converged() {
    let world = Arc::new(Partial::new(Change::NONE, &[2]));
    let back = Arc::clone(&world);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        back.state.lock().unwrap().nodes[2].reachable = true;
    });
    let s = run(&world, "back", Duration::from_secs(30)).await;
    assert_eq!(s.finish, Finish::Converged, "{s:?}");
    assert!(s.unobserved.is_empty());
}
