//! Real Portage on the test nodes (issue 12): the real `emerge` of PyPI's
//! `portage` (pinned, in a venv that `tests/it/fleet/portage/install-portage`
//! creates), real binary packages built at test setup from the fleet's own
//! ebuild repository (`tests/it/fleet/portage/repo`), and a real binhost over
//! HTTP per fleet. The recipe and its gotchas are measured in
//! ../shared/research/portage-on-debian.md; the numbers below refer to it.
//!
//! ```text
//! <venv>/                          Portage's own "build host" root (gotcha 3): a stub `gentoo`
//!                                  repo and profile, make.conf, a frozen empty binrepo (gotcha 10)
//! /tmp/drover-fleet/portage-<key>/ built once per inputs (repo, recipe, Portage version), under
//!   build/                         a file lock: concurrent test processes share it
//!   pkgs/                          the binary packages (gpkg, multi-instance) + Packages index
//!   template-<atoms>/              a node root with those packages installed by real emerge
//! <slot>/binhost/<profile> -> pkgs what the fleet's HTTP binhost serves (a path per profile:
//!                                  Portage caches indexes by host and path, gotcha 15)
//! ```
//!
//! A real-Portage node gets a copy of a template (installing the initial
//! packages per node would cost ~2.5 s of CPU each), its own make.conf (its
//! downloads leave from its own address, so the binhost's access log names
//! the node), and a root-owned `bin/emerge` that runs the venv's emerge on
//! `$NODE_ROOT` as the node user (Portage's unprivileged mode, gotcha 7).
//! drover's command lines run unchanged.

use std::collections::HashMap;
use std::fs::{self, File};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::node::{ensure_free, wait_listening};
use super::procs::Daemon;
use super::slot;
use super::topology::NODE_USER;

/// The Portage release the tests pin (PyPI `portage`).
pub const VERSION: &str = "3.0.83";
/// Overrides where the venv is (default: `target/fleet-tools/portage-<VERSION>`).
pub const VENV_ENV: &str = "DROVER_TEST_PORTAGE_VENV";
/// Creates the venv; tests/run-all runs it.
pub const INSTALL_SCRIPT: &str = "tests/it/fleet/portage/install-portage";
const ECLASS: &str = include_str!("portage/repo/eclass/drover-test.eclass");

/// The user and group http.server runs as (Debian's nobody/nogroup).
const NOBODY: u32 = 65534;

/// Real Portage, set up once per test process.
pub struct Portage {
    pub venv: PathBuf,
    /// `/tmp/drover-fleet/portage-<key>`.
    pub store: PathBuf,
    /// The binary packages and their `Packages` index.
    pub pkgs: PathBuf,
    /// What building the binhost cost in this process (zero: reused).
    pub build_cost: Cost,
    templates: Mutex<HashMap<Vec<String>, PathBuf>>,
}

/// Wall and CPU (user+sys of the children) time of a setup step.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cost {
    pub wall: Duration,
    pub cpu: Duration,
}

/// The venv, checked; the build host config; the binhost, built if this
/// process's inputs have not been built before. Panics with what to run
/// when Portage is not installed.
pub fn get() -> &'static Portage {
    static PORTAGE: OnceLock<Portage> = OnceLock::new();
    PORTAGE.get_or_init(|| {
        let venv = venv_path();
        check_venv(&venv);
        let _lock = lock();
        write_build_host(&venv).unwrap_or_else(|e| panic!("write Portage's build host config in the venv: {e}"));
        let repo = repo_dir();
        let store = PathBuf::from(slot::BASE).join(format!("portage-{:016x}", inputs_key(&venv, &repo)));
        let pkgs = store.join("pkgs");
        let build_cost = if store.join("complete").is_file() {
            Cost::default()
        } else {
            build_binhost(&venv, &repo, &store).unwrap_or_else(|e| panic!("build the test binhost: {e}"))
        };
        if build_cost.wall > Duration::ZERO {
            eprintln!(
                "real Portage {VERSION}: built the test binhost {} in {:.2?} (CPU {:.2?})",
                pkgs.display(),
                build_cost.wall,
                build_cost.cpu
            );
        }
        Portage { venv, store, pkgs, build_cost, templates: Mutex::new(HashMap::new()) }
    })
}

pub fn venv_path() -> PathBuf {
    match std::env::var_os(VENV_ENV) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("target/fleet-tools/portage-{VERSION}")),
    }
}

fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fleet/portage/repo")
}

fn check_venv(venv: &Path) {
    let stamp = fs::read_to_string(venv.join(".drover-complete")).unwrap_or_default();
    assert!(
        venv.join("bin/emerge").is_file() && stamp.trim() == format!("portage=={VERSION}"),
        "real Portage {VERSION} is not installed for the real-fleet tests (no complete venv at {}): \
         run {INSTALL_SCRIPT} (tests/run-all does), or set {VENV_ENV} to a venv it made",
        venv.display()
    );
    // The node user runs the venv's python: every directory above it must let it through.
    let mut dir = Some(venv);
    while let Some(d) = dir {
        let mode = fs::metadata(d).map(|m| m.permissions().mode()).unwrap_or(0);
        assert!(
            mode & 0o001 != 0,
            "the test nodes' user {NODE_USER} cannot reach real Portage at {}: {} is mode {:o}; \
             put the clone where others may traverse, or set {VENV_ENV} to a venv elsewhere",
            venv.display(),
            d.display(),
            mode & 0o7777
        );
        dir = d.parent();
    }
}

/// Serialises the shared setup across test processes (flock, released on exit).
fn lock() -> File {
    fs::create_dir_all(slot::BASE).expect("create /tmp/drover-fleet");
    let f = File::create(Path::new(slot::BASE).join("portage.lock")).expect("create the Portage lock file");
    f.lock().expect("lock the Portage setup");
    f
}

fn write_if_changed(path: &Path, text: &str) -> io::Result<()> {
    if fs::read_to_string(path).ok().as_deref() == Some(text) {
        return Ok(());
    }
    if let Some(d) = path.parent() {
        fs::create_dir_all(d)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, text)?;
    fs::rename(tmp, path)
}

fn symlink_force(target: &Path, link: &Path) -> io::Result<()> {
    if fs::read_link(link).ok().as_deref() == Some(target) {
        return Ok(());
    }
    let _ = fs::remove_file(link);
    symlink(target, link)
}

/// The profile every root uses (the venv's stub `gentoo` repo).
const MAKE_DEFAULTS: &str = r#"# The drover test profile (tests/it/fleet/portage.rs): no sandbox binary,
# no portage user, licences from a repo without license groups.
ARCH="amd64"
ACCEPT_KEYWORDS="amd64"
CHOST="x86_64-pc-linux-gnu"
ELIBC="glibc"
KERNEL="linux"
USERLAND="GNU"
ACCEPT_LICENSE="*"
FEATURES="-sandbox -usersandbox -userpriv -userfetch -usersync -network-sandbox -ipc-sandbox -pid-sandbox -mount-sandbox -news -merge-sync -parallel-fetch"
"#;

fn gentoo_repo(venv: &Path) -> PathBuf {
    venv.join("var/db/repos/gentoo")
}
fn profile(venv: &Path) -> PathBuf {
    gentoo_repo(venv).join("profiles/drover")
}

/// Portage's second config, for the running root (the venv, gotcha 3), and
/// the `gtar` name xpak needs (gotcha 13). Idempotent.
fn write_build_host(venv: &Path) -> io::Result<()> {
    let repo = gentoo_repo(venv);
    write_if_changed(&repo.join("profiles/repo_name"), "gentoo\n")?;
    write_if_changed(&repo.join("metadata/layout.conf"), "masters =\nthin-manifests = true\nsign-manifests = false\n")?;
    write_if_changed(&profile(venv).join("eapi"), "8\n")?;
    write_if_changed(&profile(venv).join("make.defaults"), MAKE_DEFAULTS)?;
    let etc = venv.join("etc/portage");
    fs::create_dir_all(&etc)?;
    symlink_force(Path::new("../../var/db/repos/gentoo/profiles/drover"), &etc.join("make.profile"))?;
    write_if_changed(&etc.join("repos.conf"), &repos_conf(venv, None))?;
    write_if_changed(&etc.join("make.conf"), "PORTAGE_USERNAME=\"root\"\nPORTAGE_GRPNAME=\"root\"\n")?;
    // An empty, frozen binrepo with a local index: the build host asks for
    // none otherwise and warns on every node emerge (gotcha 10); its
    // location is inside the venv, never the real /var/cache/binhost (12b).
    let host_index = venv.join("var/cache/host-binhost");
    write_if_changed(&host_index.join("Packages"), "PACKAGES: 0\nTIMESTAMP: 1\nVERSION: 0\n\n")?;
    write_if_changed(
        &etc.join("binrepos.conf"),
        &format!(
            "[host-none]\nsync-uri = file://{h}\nlocation = {h}\nfrozen = true\nverify-signature = false\n",
            h = host_index.display()
        ),
    )?;
    symlink_force(Path::new("/usr/bin/tar"), &venv.join("bin/gtar"))?;
    // Readable by the node user (unprivileged emerge reads all of it).
    for p in [venv.join("etc"), venv.join("var")] {
        chmod_readable(&p)?;
    }
    Ok(())
}

fn chmod_readable(p: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(p)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = meta.permissions().mode();
    let want = if meta.is_dir() { mode | 0o055 } else { mode | 0o044 };
    if want != mode {
        fs::set_permissions(p, fs::Permissions::from_mode(want))?;
    }
    if meta.is_dir() {
        for e in fs::read_dir(p)? {
            chmod_readable(&e?.path())?;
        }
    }
    Ok(())
}

fn repos_conf(venv: &Path, test_repo: Option<&Path>) -> String {
    let mut s = format!(
        "# Repositories of a drover test root (tests/it/fleet/portage.rs), generated.\n\
         [DEFAULT]\nmain-repo = gentoo\n[gentoo]\nlocation = {}\n",
        gentoo_repo(venv).display()
    );
    if let Some(r) = test_repo {
        s.push_str(&format!("[drover-test]\nlocation = {}\n", r.display()));
    }
    s
}

/// make.conf of a node root (and of a template). `${EROOT}` expands in
/// make.conf (gotcha 9); the log goes under the root, not the venv (8). With
/// `ip`, downloads leave from the node's own address.
fn node_make_conf(ip: Option<Ipv4Addr>) -> String {
    let mut s = String::from(
        "# Real Portage on a drover test node (tests/it/fleet/portage.rs), generated.\n\
         PKGDIR=\"${EROOT}var/cache/binpkgs\"\n\
         PORTAGE_TMPDIR=\"${EROOT}var/tmp\"\n\
         EMERGE_LOG_DIR=\"${EROOT}var/log\"\n\
         # A failed merge writes its log here (default: under the venv, not writable).\n\
         PORTAGE_LOGDIR=\"${EROOT}var/log/portage\"\n",
    );
    if let Some(ip) = ip {
        s.push_str(&format!(
            "# Downloads leave from the node's address: the binhost's access log names the node.\n\
             FETCHCOMMAND=\"wget --bind-address={ip} -t 3 -T 60 --passive-ftp -O \\\"\\${{DISTDIR}}/\\${{FILE}}\\\" \\\"\\${{URI}}\\\"\"\n\
             RESUMECOMMAND=\"wget --bind-address={ip} -c -t 3 -T 60 --passive-ftp -O \\\"\\${{DISTDIR}}/\\${{FILE}}\\\" \\\"\\${{URI}}\\\"\"\n"
        ));
    }
    s
}

fn builder_make_conf(pkgs: &Path) -> String {
    format!(
        "# The drover test binhost's builder (tests/it/fleet/portage.rs), generated.\n\
         PKGDIR=\"{}\"\n\
         BINPKG_FORMAT=\"gpkg\"\n\
         PORTAGE_TMPDIR=\"${{EROOT}}var/tmp\"\n\
         EMERGE_LOG_DIR=\"${{EROOT}}var/log\"\n\
         PORTAGE_USERNAME=\"root\"\n\
         PORTAGE_GRPNAME=\"root\"\n",
        pkgs.display()
    )
}

/// A root's etc/portage: make.conf, repos.conf, make.profile.
fn write_config_root(root: &Path, venv: &Path, make_conf: &str, test_repo: Option<&Path>) -> io::Result<()> {
    let etc = root.join("etc/portage");
    fs::create_dir_all(&etc)?;
    fs::write(etc.join("make.conf"), make_conf)?;
    fs::write(etc.join("repos.conf"), repos_conf(venv, test_repo))?;
    symlink_force(&profile(venv), &etc.join("make.profile"))
}

/// Every package version the test fleet's spec names, and nothing else.
pub fn all_atoms() -> Vec<String> {
    let mut v: Vec<String> =
        super::topology::PACKAGE_SETS.iter().flat_map(|(_, atoms)| atoms.iter().map(|a| a.to_string())).collect();
    v.sort();
    v.dedup();
    v
}

/// What the binhost is built from: if any of it changes, it is rebuilt.
fn inputs_key(venv: &Path, repo: &Path) -> u64 {
    let mut h = DefaultHasher::new();
    VERSION.hash(&mut h);
    venv.hash(&mut h);
    MAKE_DEFAULTS.hash(&mut h);
    builder_make_conf(Path::new("")).hash(&mut h);
    all_atoms().hash(&mut h);
    let mut files = Vec::new();
    collect_files(repo, &mut files);
    files.sort();
    for f in files {
        f.hash(&mut h);
        fs::read(&f).unwrap_or_default().hash(&mut h);
    }
    h.finish()
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() { collect_files(&p, out) } else { out.push(p) }
    }
}

/// Runs the venv's emerge (as root) on `root`, the way the node wrapper
/// does: ROOT = PORTAGE_CONFIGROOT = root, EPREFIX empty (gotcha 2).
fn emerge(venv: &Path, root: &Path, home: &Path, env: &[(&str, &Path)], args: &[String]) -> io::Result<(Output, Cost)> {
    let t0 = Instant::now();
    let cpu0 = children_cpu();
    let out = Command::new(venv.join("bin/emerge"))
        .env_clear()
        .env("PATH", format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", venv.join("bin").display()))
        .env("HOME", home)
        .env("LC_ALL", "C.UTF-8")
        .env("ROOT", format!("{}/", root.display()))
        .env("PORTAGE_CONFIGROOT", format!("{}/", root.display()))
        .env("EPREFIX", "")
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .args(["--oneshot", "--quiet", "--color=n", "--nospinner"])
        .args(args)
        .output()?;
    let cost = Cost { wall: t0.elapsed(), cpu: children_cpu().saturating_sub(cpu0) };
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "emerge {} for {} failed ({}):\n{}{}",
            args.join(" "),
            root.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok((out, cost))
}

/// User+system CPU time of this process's waited-for children so far (the
/// test process's other threads may add theirs: an upper bound).
fn children_cpu() -> Duration {
    // /proc/self/stat after the `(comm)`: field 3 (state) is index 0, so
    // cutime (16) and cstime (17) are indexes 13 and 14, in clock ticks (100 Hz).
    let stat = fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis((tick(13) + tick(14)) * 10)
}

/// Builds every package version of the spec with real `emerge
/// --buildpkgonly` into `store/pkgs` (which gets its `Packages` index), in
/// one call (each build is ~1 s of CPU).
fn build_binhost(venv: &Path, repo: &Path, store: &Path) -> io::Result<Cost> {
    let _ = fs::remove_dir_all(store);
    let build = store.join("build");
    let pkgs = store.join("pkgs");
    fs::create_dir_all(&pkgs)?;
    fs::set_permissions(store, fs::Permissions::from_mode(0o755))?;
    write_config_root(&build, venv, &builder_make_conf(&pkgs), Some(repo))?;
    let atoms: Vec<String> = all_atoms().iter().map(|a| format!("={a}")).collect();
    let mut args = vec!["--buildpkgonly".to_string()];
    args.extend(atoms);
    let (_, cost) = emerge(venv, &build, store, &[], &args)?;
    assert!(pkgs.join("Packages").is_file(), "emerge --buildpkgonly wrote no Packages index in {}", pkgs.display());
    chmod_readable(&pkgs)?;
    fs::write(store.join("complete"), format!("portage=={VERSION}\n"))?;
    Ok(cost)
}

impl Portage {
    /// A root with exactly `atoms` installed by real emerge from the built
    /// packages (no download: `--usepkgonly` from the local PKGDIR), made
    /// once per atom set and shared by the test processes.
    pub fn template(&self, atoms: &[String]) -> io::Result<PathBuf> {
        let mut atoms = atoms.to_vec();
        atoms.sort();
        let mut templates = self.templates.lock().unwrap();
        if let Some(t) = templates.get(&atoms) {
            return Ok(t.clone());
        }
        let mut h = DefaultHasher::new();
        atoms.hash(&mut h);
        let dir = self.store.join(format!("template-{:016x}", h.finish()));
        let _lock = lock();
        if !dir.with_extension("complete").is_file() {
            let tmp = self.store.join(format!("template.tmp{}", std::process::id()));
            let _ = fs::remove_dir_all(&tmp);
            fs::create_dir_all(&tmp)?;
            write_config_root(&tmp, &self.venv, &node_make_conf(None), None)?;
            if !atoms.is_empty() {
                let args: Vec<String> =
                    ["--usepkgonly".to_string()].into_iter().chain(atoms.iter().map(|a| format!("={a}"))).collect();
                let root_user: &[(&str, &Path)] = &[
                    ("PKGDIR", &self.pkgs),
                    ("PORTAGE_USERNAME", Path::new("root")),
                    ("PORTAGE_GRPNAME", Path::new("root")),
                ];
                let (_, cost) = emerge(&self.venv, &tmp, &self.store, root_user, &args)?;
                eprintln!(
                    "real Portage: installed {} packages into a node template in {:.2?} (CPU {:.2?})",
                    atoms.len(),
                    cost.wall,
                    cost.cpu
                );
            }
            let _ = fs::remove_dir_all(&dir);
            fs::rename(&tmp, &dir)?;
            fs::write(dir.with_extension("complete"), "")?;
        }
        templates.insert(atoms, dir.clone());
        Ok(dir)
    }

    /// Makes `root` a real-Portage node root with `atoms` installed (a copy
    /// of the template, ownership fixed by the caller's chown) and its own
    /// make.conf. `ip`: the node's address, for its downloads.
    pub fn seed_root(&self, root: &Path, atoms: &[String], ip: Ipv4Addr) -> io::Result<()> {
        let template = self.template(atoms)?;
        fs::create_dir_all(root)?;
        let out = Command::new("cp").arg("-a").arg(format!("{}/.", template.display())).arg(root).output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "cp -a {} {}: {}",
                template.display(),
                root.display(),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        write_config_root(root, &self.venv, &node_make_conf(Some(ip)), None)
    }

    /// The node's `bin/emerge`: the venv's emerge on `$NODE_ROOT`.
    pub fn write_emerge(&self, bin: &Path) -> io::Result<()> {
        let venv = self.venv.display();
        let text = format!(
            "#!/bin/sh\n\
             # Real Portage {VERSION} on a drover test node (tests/it/fleet/portage.rs): the\n\
             # venv's emerge with $NODE_ROOT as ROOT and config root; EPREFIX must be set\n\
             # and empty, else it defaults to the venv. Run as the node user: Portage's\n\
             # unprivileged mode (the root is the user's and not world-writable).\n\
             : \"${{NODE_ROOT:?NODE_ROOT is not set: not a drover test node}}\"\n\
             ROOT=\"$NODE_ROOT/\" PORTAGE_CONFIGROOT=\"$NODE_ROOT/\" EPREFIX=\"\" PATH=\"{venv}/bin:$PATH\"\n\
             export ROOT PORTAGE_CONFIGROOT EPREFIX PATH\n\
             exec \"{venv}/bin/emerge\" \"$@\"\n"
        );
        let p = bin.join("emerge");
        fs::write(&p, text)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755))
    }
}

/// The fleet's binhost: python's http.server (as nobody) serving
/// `<slot>/binhost/<profile>/` (each a link to the built packages), with an
/// access log. Stopped by PID when dropped.
pub struct Binhost {
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub log: PathBuf,
    daemon: Option<Daemon>,
}

/// One download seen in the binhost's access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub client: IpAddr,
    /// `/r640/dev-libs/openssl/openssl-3.0.15-r1-1.gpkg.tar`
    pub path: String,
    pub status: u16,
}

impl Binhost {
    pub fn start(slot_dir: &Path, addr: SocketAddr, profiles: &[&str], portage: &Portage) -> io::Result<Binhost> {
        let dir = slot_dir.join("binhost");
        let run = slot_dir.join("binhost-server");
        fs::create_dir_all(&dir)?;
        fs::create_dir_all(&run)?;
        for p in profiles {
            symlink_force(&portage.pkgs, &dir.join(p))?;
        }
        let log = run.join("access.log");
        let mut b = Binhost { addr, dir, log, daemon: None };
        b.power_on()?;
        Ok(b)
    }

    /// (Re)starts the server.
    pub fn power_on(&mut self) -> io::Result<()> {
        if self.daemon.is_some() {
            return Ok(());
        }
        ensure_free(self.addr, "the test binhost")?;
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.args(["-I", "-m", "http.server", "--bind"])
            .arg(self.addr.ip().to_string())
            .arg("--directory")
            .arg(&self.dir)
            .arg(self.addr.port().to_string())
            .env_clear()
            .current_dir("/")
            .uid(NOBODY)
            .gid(NOBODY);
        let pid = self.log.with_file_name("http.pid");
        let mut d = Daemon::spawn("binhost", &mut cmd, &pid, &self.log)?;
        wait_listening(&mut d, self.addr)?;
        self.daemon = Some(d);
        Ok(())
    }

    /// Stops the server (a binhost that is down).
    pub fn stop(&mut self) {
        self.daemon = None;
    }

    /// Every request in the access log.
    pub fn requests(&self) -> Vec<Request> {
        fs::read_to_string(&self.log).unwrap_or_default().lines().filter_map(parse_access).collect()
    }

    /// Successful downloads of binary packages (not indexes), by path.
    pub fn package_downloads(&self) -> Vec<Request> {
        self.requests().into_iter().filter(|r| r.status == 200 && r.path.ends_with(".gpkg.tar")).collect()
    }
}

/// `127.0.0.1 - - [01/Dec/2026 06:13:58] "GET /r640/x HTTP/1.1" 200 -`
fn parse_access(line: &str) -> Option<Request> {
    let client = line.split_whitespace().next()?.parse().ok()?;
    let (_, rest) = line.split_once("] \"GET ")?;
    let (path, rest) = rest.split_once(' ')?;
    let (_, rest) = rest.split_once("\" ")?;
    let status = rest.split_whitespace().next()?.parse().ok()?;
    Some(Request { client, path: path.to_string(), status })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_log_lines_parse() {
        let r = parse_access(
            "127.20.2.11 - - [01/Dec/2026 06:13:58] \"GET /r640/dev-libs/openssl/openssl-3.0.15-r1-1.gpkg.tar HTTP/1.1\" 200 -",
        )
        .unwrap();
        assert_eq!(r.client, "127.20.2.11".parse::<IpAddr>().unwrap());
        assert_eq!(r.path, "/r640/dev-libs/openssl/openssl-3.0.15-r1-1.gpkg.tar");
        assert_eq!(r.status, 200);
        assert!(parse_access("127.0.0.1 - - [x] code 404, message File not found").is_none());
    }

    #[test]
    fn the_eclass_fails_and_delays_from_the_nodes_fault_files() {
        // The fault files are the stand-in's (node::fault): same names, same meaning.
        assert!(ECLASS.contains(&format!("${{faults}}/{}", super::super::node::fault::EMERGE_FAIL)));
        assert!(ECLASS.contains(&format!("${{faults}}/{}", super::super::node::fault::EMERGE_DELAY)));
    }
}
