//! What people expect of a Unix command: a state directory that follows the
//! platform convention instead of the current directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("drover-conv-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

unsafe extern "C" {
    fn geteuid() -> u32;
    fn kill(pid: i32, sig: i32) -> i32;
}

/// A command run as an ordinary user, with only `vars` of the state
/// directory's environment set: as root (tests/run-all) it runs as `nobody`,
/// since root's default is /var/lib/drover. `base` holds a link to the
/// binary (a checkout under /root is not reachable by `nobody`), the spec
/// and the directories the caller names; all are owned by that user.
struct AsUser {
    base: PathBuf,
    uid: Option<u32>,
}

impl AsUser {
    fn new(name: &str) -> AsUser {
        let base = scratch(name);
        // SAFETY: geteuid has no preconditions.
        let uid = (unsafe { geteuid() } == 0).then_some(65534);
        let bin = base.join("drover");
        if std::fs::hard_link(env!("CARGO_BIN_EXE_drover"), &bin).is_err() {
            std::fs::copy(env!("CARGO_BIN_EXE_drover"), &bin).unwrap();
        }
        std::fs::create_dir_all(base.join("specs")).unwrap();
        std::fs::copy(root().join("examples/minimal/spec.yaml"), base.join("specs/spec.yaml")).unwrap();
        let u = AsUser { base, uid };
        for d in ["home", "cwd", "xdg", "tmp"] {
            u.dir(d);
        }
        u
    }

    /// `base/name`, created and owned by the user the command runs as.
    fn dir(&self, name: &str) -> PathBuf {
        let d = self.base.join(name);
        std::fs::create_dir_all(&d).unwrap();
        if let Some(uid) = self.uid {
            std::os::unix::fs::chown(&d, Some(uid), Some(uid)).unwrap();
        }
        d
    }

    fn command(&self, vars: &[(&str, &Path)]) -> Command {
        use std::os::unix::process::CommandExt;
        let mut c = Command::new(self.base.join("drover"));
        c.current_dir(self.base.join("cwd")).env("TMPDIR", self.base.join("tmp"));
        for v in ["HOME", "XDG_STATE_HOME", "STATE_DIRECTORY", "DROVER_STATE_DIR", "DROVER_SPECS"] {
            c.env_remove(v);
        }
        for (k, v) in vars {
            c.env(k, v);
        }
        if let Some(uid) = self.uid {
            c.uid(uid).gid(uid);
        }
        c.arg("--specs").arg(self.base.join("specs"));
        c
    }

    /// Every path under `dir`, relative to it.
    fn tree(&self, dir: &str) -> Vec<String> {
        fn walk(d: &Path, root: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                out.push(e.path().strip_prefix(root).unwrap().display().to_string());
                if e.path().is_dir() {
                    walk(&e.path(), root, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.base.join(dir), &self.base.join(dir), &mut out);
        out.sort();
        out
    }
}

impl Drop for AsUser {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// `reconcile --once` against a real fleet without --state-dir: its lease is
/// under ~/.local/state/drover (or $XDG_STATE_HOME/drover), nothing is
/// written in the current directory, and without HOME it refuses clearly.
#[test]
fn reconcile_once_keeps_its_state_in_the_users_state_directory() {
    let u = AsUser::new("state-once");
    let (home, xdg) = (u.base.join("home"), u.base.join("xdg"));
    // The example's hosts do not resolve: the run fails after taking the lease.
    let run = |vars: &[(&str, &Path)]| -> Output {
        u.command(vars).args(["reconcile", "--once", "--known-hosts", "/dev/null"]).output().unwrap()
    };
    let out = run(&[("HOME", &home)]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("panicked"), "{}", text(&out.stderr));
    assert!(home.join(".local/state/drover/lease").is_file(), "{:?}\n{}", u.tree("home"), text(&out.stderr));
    assert_eq!(u.tree("cwd"), Vec::<String>::new(), "nothing in the current directory");

    let out = run(&[("HOME", &home), ("XDG_STATE_HOME", &xdg)]);
    assert!(xdg.join("drover/lease").is_file(), "{:?}\n{}", u.tree("xdg"), text(&out.stderr));
    assert_eq!(u.tree("cwd"), Vec::<String>::new(), "nothing in the current directory");

    // No HOME (a bare cron or container environment): refused, with the way out.
    let before = (u.tree("home"), u.tree("xdg"));
    let out = run(&[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no state directory") && stderr.contains("--state-dir"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!((u.tree("home"), u.tree("xdg")), before);
    assert_eq!(u.tree("cwd"), Vec::<String>::new());
    // --state-dir and DROVER_STATE_DIR still decide, HOME or not.
    let named = u.dir("named");
    run(&[("DROVER_STATE_DIR", &named)]);
    assert!(named.join("lease").is_file(), "{:?}", u.tree("named"));
}

/// The simulated daemon (`reconcile --simulate`, the README's "try it")
/// started from a checkout keeps its lease and journal in
/// ~/.local/state/drover/simulation: nothing in the current directory,
/// nothing in the real fleet's state.
#[test]
fn the_simulated_daemon_keeps_its_state_in_the_users_state_directory() {
    let u = AsUser::new("state-daemon");
    let home = u.base.join("home");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let log = u.base.join("daemon.log");
    let mut child = u
        .command(&[("HOME", &home)])
        .args(["reconcile", "--simulate", "--time-scale", "600", "--listen", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let sim = home.join(".local/state/drover/simulation");
    let t0 = Instant::now();
    while !(sim.join("lease").is_file() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()) {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(child.try_wait().unwrap().is_none(), "the daemon exited:\n{log}");
        assert!(t0.elapsed() < Duration::from_secs(60), "no lease in {}:\n{log}", sim.display());
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: signals our own child.
    unsafe { kill(child.id() as i32, 15) };
    let t0 = Instant::now();
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(0), "{}", std::fs::read_to_string(&log).unwrap_or_default());
    assert_eq!(u.tree("cwd"), Vec::<String>::new(), "nothing in the current directory");
    // Only the simulation's directory: the real fleet's journal and lease are untouched.
    let state: Vec<String> = u.tree("home").into_iter().filter(|p| p.starts_with(".local/state/drover/")).collect();
    assert!(
        state.iter().all(|p| p.starts_with(".local/state/drover/simulation")),
        "outside the simulation's directory: {state:?}"
    );
}
