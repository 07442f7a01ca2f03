//! What people expect of a Unix command: shell completions and manual pages
//! generated from the clap definitions (`drover completions`, `drover man`,
//! the committed `dist/man/`), and a state directory that follows the
//! platform convention instead of the current directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use clap::CommandFactory;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn drover() -> Command {
    Command::new(env!("CARGO_BIN_EXE_drover"))
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
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

/// Every subcommand name, from the same clap definitions the binary uses.
fn subcommands() -> Vec<String> {
    let names: Vec<String> = drover::cli::Cli::command().get_subcommands().map(|s| s.get_name().to_string()).collect();
    assert!(names.len() >= 8, "{names:?}");
    names
}

#[test]
fn completions_for_each_shell_name_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let out = drover().args(["completions", shell]).output().unwrap();
        let script = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", text(&out.stderr));
        assert!(script.len() > 1000, "{shell}: {script}");
        for sub in subcommands() {
            assert!(script.contains(&sub), "the {shell} completion does not mention `{sub}`");
        }
        // The flags of a subcommand and their values complete as well (fish
        // writes `-l state-dir`).
        for word in ["state-dir", "simulate", "out-dir", "json"] {
            assert!(script.contains(word), "the {shell} completion does not mention `{word}`");
        }
        // The script parses in its shell, where that shell is installed
        // (tests/run-all installs bash only; zsh and fish are optional).
        let check: &[&str] = match shell {
            "zsh" => &["-n"],
            "fish" => &["--no-execute"],
            _ => &["-n"],
        };
        match which(shell) {
            Some(bin) => {
                let path = scratch(&format!("completion-{shell}")).join("drover.completion");
                std::fs::write(&path, &script).unwrap();
                let out = Command::new(bin).args(check).arg(&path).output().unwrap();
                assert!(out.status.success(), "{shell} {check:?}: {}", text(&out.stderr));
                let _ = std::fs::remove_dir_all(path.parent().unwrap());
            }
            None => println!("{shell}: not installed, its completion script was not parsed"),
        }
    }
    let out = drover().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64), "an unknown shell is a usage error");
}

/// `source <(drover completions bash)` in a real bash registers the
/// completion, and it completes subcommands and their arguments.
#[test]
fn the_bash_completion_loads_and_completes_in_bash() {
    let script = format!(
        r#"source <("{bin}" completions bash) || exit 3
complete -p drover
f=$(complete -p drover | sed -n 's/.* -F \([^ ]*\) .*/\1/p')
COMP_WORDS=(drover rec); COMP_CWORD=1; COMP_LINE="drover rec"; COMP_POINT=${{#COMP_LINE}}
"$f" drover rec drover
echo "sub: ${{COMPREPLY[*]}}"
COMP_WORDS=(drover completions ""); COMP_CWORD=2; COMP_LINE="drover completions "; COMP_POINT=${{#COMP_LINE}}
"$f" drover "" completions
echo "shells: ${{COMPREPLY[*]}}"
COMP_WORDS=(drover reconcile --once --state); COMP_CWORD=3; COMP_LINE="drover reconcile --once --state"; COMP_POINT=${{#COMP_LINE}}
"$f" drover --state --once
echo "flags: ${{COMPREPLY[*]}}"
"#,
        bin = env!("CARGO_BIN_EXE_drover")
    );
    let out = Command::new("bash").arg("-c").arg(&script).output().unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "bash: {stdout}{}", text(&out.stderr));
    assert!(stdout.lines().next().is_some_and(|l| l.starts_with("complete ") && l.ends_with(" drover")), "{stdout}");
    let line = |tag: &str| stdout.lines().find_map(|l| l.strip_prefix(tag)).unwrap_or_default().to_string();
    assert_eq!(line("sub: "), "reconcile", "{stdout}");
    for shell in ["bash", "fish", "zsh"] {
        assert!(line("shells: ").split(' ').any(|w| w == shell), "{stdout}");
    }
    assert_eq!(line("flags: "), "--state-dir", "{stdout}");
}

/// The pages `drover man --out-dir DIR` writes, by file name.
fn generate_pages(dir: &Path) -> BTreeMap<String, String> {
    let out = drover().args(["man", "--out-dir"]).arg(dir).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let listed: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    let pages = pages_in(dir);
    assert_eq!(listed.len(), pages.len(), "{listed:?}");
    pages
}

fn pages_in(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "1"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
        .collect()
}

#[test]
fn man_pages_cover_every_subcommand_and_render_without_warnings() {
    let dir = scratch("man");
    let pages = generate_pages(&dir.join("man"));
    assert!(pages.contains_key("drover.1"), "{:?}", pages.keys());
    for sub in subcommands().iter().filter(|s| *s != "help") {
        let page = format!("drover-{sub}.1");
        assert!(pages.contains_key(&page), "no {page} in {:?}", pages.keys());
        assert!(pages["drover.1"].contains(&sub.replace('-', "\\-")), "drover.1 does not list {sub}");
    }
    assert!(pages.contains_key("drover-render-haproxy.1"), "{:?}", pages.keys());
    assert!(pages["drover-reconcile.1"].contains("DROVER_STATE_DIR"), "the environment variables are documented");
    // `drover man` without --out-dir prints drover.1.
    let out = drover().arg("man").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), pages["drover.1"]);

    // groff (groff-base, installed by tests/run-all) formats each page with
    // every warning enabled, and finds nothing to say.
    let groff = which("groff").expect("groff is not installed (tests/run-all installs groff-base)");
    for (name, _) in &pages {
        let out = Command::new(&groff)
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(dir.join("man").join(name))
            .output()
            .unwrap();
        assert!(out.status.success() && out.stderr.is_empty(), "groff {name}: {}", text(&out.stderr));
    }
    // man -l, where man is installed, shows the page as a reader sees it.
    match which("man") {
        Some(man) => {
            let out = Command::new(man)
                .args(["-l", "-P", "cat"])
                .arg(dir.join("man/drover-reconcile.1"))
                .env("MANWIDTH", "100")
                .env("MAN_KEEP_FORMATTING", "")
                .output()
                .unwrap();
            let shown = text(&out.stdout);
            assert!(out.status.success(), "man -l: {}", text(&out.stderr));
            assert!(shown.contains("drover-reconcile") && shown.contains("--state-dir"), "{shown}");
        }
        None => println!("man: not installed; the pages were checked with groff only"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The committed pages are what this build generates.
#[test]
fn the_committed_man_pages_in_dist_are_current() {
    let dir = scratch("man-dist");
    let fresh = generate_pages(&dir);
    let committed = pages_in(&root().join("dist/man"));
    let regen = "rm -rf dist/man && cargo run --release -- man --out-dir dist/man";
    let names = |m: &BTreeMap<String, String>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&committed), names(&fresh), "dist/man is stale (pages added or removed): run `{regen}`");
    for (name, page) in &fresh {
        assert!(committed[name] == *page, "dist/man/{name} is stale: run `{regen}`");
    }
    let _ = std::fs::remove_dir_all(&dir);
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
/// started from a checkout without a state directory named keeps nothing:
/// its lease and journal live in a directory of its own under $TMPDIR,
/// removed at exit; nothing in the current directory, nothing in the user's
/// state directory (the real fleet's, and a kept simulation's).
#[test]
fn the_simulated_daemon_without_a_state_directory_keeps_nothing_in_the_users() {
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
    let scratch = || {
        let tmp = u.tree("tmp");
        tmp.iter().find(|p| p.starts_with("drover-simulation-") && p.ends_with("/lease")).cloned()
    };
    let t0 = Instant::now();
    while !(scratch().is_some() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()) {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(child.try_wait().unwrap().is_none(), "the daemon exited:\n{log}");
        assert!(t0.elapsed() < Duration::from_secs(60), "no lease in $TMPDIR ({:?}):\n{log}", u.tree("tmp"));
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
    let state: Vec<String> = u.tree("home").into_iter().filter(|p| p.starts_with(".local/state/")).collect();
    assert_eq!(state, Vec::<String>::new(), "written in the user's state directory");
    assert_eq!(u.tree("tmp"), Vec::<String>::new(), "left in $TMPDIR");
}

/// Spec files end in `.yaml` or `.yml` (both are read, as the README says);
/// anything else in the directory is not a spec.
#[test]
fn yml_files_are_specs_too() {
    let dir = scratch("yml");
    let spec = std::fs::read_to_string(root().join("examples/minimal/spec.yaml")).unwrap();
    std::fs::write(dir.join("fleet.yml"), &spec).unwrap();
    std::fs::write(dir.join("notes.txt"), "not: [a spec").unwrap();
    let out = drover().arg("--specs").arg(&dir).arg("validate").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    // The same file twice (.yml and .yaml) defines everything twice: both were read.
    std::fs::write(dir.join("again.yaml"), &spec).unwrap();
    let out = drover().arg("--specs").arg(&dir).arg("validate").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("fleet.yml"), "{}", text(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}
