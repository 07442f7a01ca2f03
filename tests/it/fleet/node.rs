//! A test node: its root directory (what a Gentoo web node has, under
//! `NODE_ROOT`), its sshd, its web server (Apache + php-fpm, or the
//! `webserver.py` stand-in), and the "init" that the
//! `rc-service`, `systemctl` and `reboot` stand-ins talk to (the
//! `Supervisor`, a thread of the test process that owns the processes).
//!
//! Node root layout (`NODE_ROOT`, owned by the node user unless noted):
//!
//! ```text
//! bin/                     stand-ins, first on PATH (root-owned): emerge qlist rc-service
//!                          systemctl reboot sudo node-ctl
//! etc/init.d/              services rc-service knows: apache2 php-fpm
//! etc/portage/binhost      this node's profile binhost (emerge checks PORTAGE_BINHOST against it)
//! var/db/pkg/<cat>/<pf>/   installed packages (CATEGORY PF SLOT BUILD_TIME repository BINPKG_BINHOST)
//!
//! A real-Portage node (portage.rs) has instead a real vdb, etc/portage/{make.conf,
//! repos.conf,make.profile}, var/cache/binpkgs, and bin/emerge runs the real emerge.
//! var/lib/portage/world    packages emerged without --oneshot
//! var/log/                 emerge.log, rc.log (service actions), reboot.log
//! proc/sys/kernel/random/boot_id   changes on every reboot
//! proc/sys/kernel/osrelease        the running kernel (`uname -r`): newest installed
//!                                  sys-kernel package at the last boot
//! opt/php/<version>/       PHP trees (sbin/php-fpm, etc/php-fpm.conf, etc/php.ini);
//!                          opt/php/current -> <version> is the active one
//! srv/app/releases/<id>/   releases (public/index.php, public/health.php, lib/);
//!                          srv/app/current -> releases/<id> is the active one
//! run/ctl/                 requests to the node's init (node-ctl), and the sudo stand-in's
//!                          privileged commands (btrfs, etc/drover/hooks/*), run as root by it
//! etc/drover/hooks/        snapshot hooks (profiles with `snapshot: {method: hook}`)
//! .snapshots/              Btrfs nodes (`with_btrfs_root`, btrfs.rs): NODE_ROOT is the default
//!                          subvolume of a loop-mounted image, .snapshots its `snapshots` subvolume
//! run/php-fpm.{sock,pid}   the pool's socket and the master's PID file (real nodes)
//! run/warm/<release>       warm-up marker: the app answers `X-Warm: 1` only when the
//!                          marker of the release it serves is newer than `srv/app/current`
//!                          (written by GET /warm or the release's bin/warm hook)
//! var/log/php-fpm.log      php-fpm's log (real nodes)
//! faults/                  fault files: emerge-fail, emerge-delay, reboot-hang, http-fail,
//!                          apache-fail
//! ```
//!
//! A real node (`WebStack::Real`) also has `<node dir>/apache/`: httpd.conf
//! (written at each start from webstack/httpd.conf), error.log and run/.

use std::fs;
use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle, sleep};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::http;
use super::procs::{self, Daemon, SIGHUP, wait_for};
use super::topology::NODE_USER;

const STANDINS: &[(&str, &str)] = &[
    ("emerge", include_str!("standins/emerge")),
    ("qlist", include_str!("standins/qlist")),
    ("rc-service", include_str!("standins/rc-service")),
    ("systemctl", include_str!("standins/systemctl")),
    ("reboot", include_str!("standins/reboot")),
    ("sudo", include_str!("standins/sudo")),
    ("node-ctl", include_str!("standins/node-ctl")),
];
pub const WEBSERVER_PY: &str = include_str!("webserver.py");
/// The real web stack's files (`WebStack::Real`): a PHP tree's php-fpm.conf
/// and php.ini, a release's PHP code, and a node's Apache configuration.
pub const PHP_FPM_CONF: &str = include_str!("webstack/php-fpm.conf");
pub const PHP_INI: &str = include_str!("webstack/php.ini");
pub const APP_PHP: &str = include_str!("webstack/app.php");
pub const INDEX_PHP: &str = include_str!("webstack/index.php");
pub const HEALTH_PHP: &str = include_str!("webstack/health.php");
const HTTPD_CONF: &str = include_str!("webstack/httpd.conf");
/// Services the rc-service/systemctl stand-ins know: on a stand-in node both
/// are the one web server process; on a real node, Apache and php-fpm.
pub const WEB_SERVICES: &[&str] = &["apache2", "php-fpm"];
/// How long a php-fpm reload may take: in-flight requests get
/// `process_control_timeout` (10 s, webstack/php-fpm.conf) to finish first.
const FPM_RELOAD_TIMEOUT: Duration = Duration::from_secs(25);
/// php-fpm's and Apache's log lines when they are ready again after a
/// start or a reload (log_level / LogLevel notice).
const FPM_READY: &str = "NOTICE: ready to handle connections";
const APACHE_READY: &str = "resuming normal operations";
/// How long a process may take to listen after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Between the `reboot` command returning and the node going down, so the
/// command's SSH session can report its exit status first.
const REBOOT_DELAY: Duration = Duration::from_millis(300);
/// How long after its sshd a rebooted node's web stack starts.
const BOOT_WEB_DELAY: Duration = Duration::from_millis(2500);

/// Fault files a test can put on a node (`Node::set_fault`).
pub mod fault {
    /// Every emerge fails (empty file), or those of the atoms listed.
    pub const EMERGE_FAIL: &str = "emerge-fail";
    /// Seconds every emerge sleeps first.
    pub const EMERGE_DELAY: &str = "emerge-delay";
    /// The node does not come back from its next reboot.
    pub const REBOOT_HANG: &str = "reboot-hang";
    /// The web server answers 503 to everything, /healthz included.
    pub const HTTP_FAIL: &str = "http-fail";
    /// Real web stack only: Apache's next start (a restart, a reboot) gets
    /// a configuration with a syntax error and fails, as a broken config
    /// would make it; a running Apache serves on.
    pub const APACHE_FAIL: &str = "apache-fail";
}

/// What serves a node's HTTP port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebStack {
    /// `webserver.py`, which plays Apache + PHP-FPM + the app.
    StandIn,
    /// Debian's apache2 (mpm_event, proxy_fcgi) in front of php-fpm started
    /// through `opt/php/current`, running the release's PHP code.
    Real,
}

/// The unprivileged login user of the test nodes.
pub struct NodeUser {
    pub name: &'static str,
    pub uid: u32,
    pub gid: u32,
}

/// Looks the node user up, creating it (POSIX shell, password field `*` so
/// that sshd with `UsePAM no` accepts it) if it does not exist.
pub fn node_user() -> &'static NodeUser {
    static USER: OnceLock<NodeUser> = OnceLock::new();
    USER.get_or_init(|| {
        if lookup_user(NODE_USER).is_none() {
            let out = Command::new(procs::require_binary("useradd", "passwd"))
                .args(["--create-home", "--home-dir"])
                .arg(format!("/home/{NODE_USER}"))
                .args(["--shell", "/bin/sh", "--password", "*", NODE_USER])
                .output()
                .expect("run useradd");
            // Another test process may have created it meanwhile.
            if !out.status.success() && lookup_user(NODE_USER).is_none() {
                panic!("cannot create the test node user {NODE_USER}: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        let (uid, gid) = lookup_user(NODE_USER).expect("node user exists");
        NodeUser { name: NODE_USER, uid, gid }
    })
}

fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() >= 4 && f[0] == name { Some((f[2].parse().ok()?, f[3].parse().ok()?)) } else { None }
    })
}

/// Binaries and files every node process needs.
pub struct NodeEnv {
    pub python: PathBuf,
    pub sshd: PathBuf,
    pub webserver: PathBuf,
    /// Debian's apache2 binary (fleets with real web nodes).
    pub apache: PathBuf,
    pub authorized_keys: PathBuf,
    pub with_ssh: bool,
    /// A web server per node (else the node runs only its sshd).
    pub with_web: bool,
    pub reboot_down: Duration,
}

pub struct Node {
    pub name: String,
    pub site: String,
    pub farm: String,
    pub member: u32,
    pub profile: String,
    pub ip: Ipv4Addr,
    pub http: SocketAddr,
    pub ssh: SocketAddr,
    /// `<slot>/nodes/<name>`: sshd files, logs, PID files.
    pub dir: PathBuf,
    /// NODE_ROOT.
    pub root: PathBuf,
    pub memcached: Option<SocketAddr>,
    pub stack: WebStack,
    /// Real Portage instead of the emerge stand-in (`with_real_portage`).
    portage: Option<&'static super::portage::Portage>,
    env: Arc<NodeEnv>,
    rt: Mutex<Runtime>,
    /// A real Btrfs root filesystem (`with_btrfs_root`), mounted at `root`.
    disk: Mutex<Option<super::btrfs::Disk>>,
}

#[derive(Default)]
struct Runtime {
    /// `webserver.py` (stand-in nodes).
    web: Option<Daemon>,
    /// The php-fpm master and Apache's parent (real nodes).
    fpm: Option<Daemon>,
    apache: Option<Daemon>,
    sshd: Option<Daemon>,
    shutting_down: bool,
}

impl Node {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        site: String,
        farm: String,
        member: u32,
        profile: String,
        ip: Ipv4Addr,
        http_port: u16,
        ssh_port: u16,
        dir: PathBuf,
        memcached: Option<SocketAddr>,
        stack: WebStack,
        env: Arc<NodeEnv>,
    ) -> Node {
        Node {
            root: dir.join("root"),
            name,
            site,
            farm,
            member,
            profile,
            ip,
            http: SocketAddr::new(ip.into(), http_port),
            ssh: SocketAddr::new(ip.into(), ssh_port),
            dir,
            memcached,
            stack,
            portage: None,
            env,
            rt: Mutex::new(Runtime::default()),
            disk: Mutex::new(None),
        }
    }

    /// The node runs real Portage (set before `seed`).
    pub fn with_real_portage(mut self, portage: &'static super::portage::Portage) -> Node {
        self.portage = Some(portage);
        self
    }
    /// The node root becomes a real Btrfs filesystem (btrfs.rs; set before
    /// `seed`): its default subvolume, booted again at every reboot.
    pub fn with_btrfs_root(self) -> Node {
        let disk = super::btrfs::Disk::create(&self.dir, &self.root)
            .unwrap_or_else(|e| panic!("node {}: Btrfs root: {e}", self.name));
        *self.disk.lock().unwrap() = Some(disk);
        self
    }
    /// The node's Btrfs root filesystem, if it has one.
    pub fn disk(&self) -> std::sync::MutexGuard<'_, Option<super::btrfs::Disk>> {
        self.disk.lock().unwrap()
    }
    pub fn real_portage(&self) -> bool {
        self.portage.is_some()
    }

    /// Creates the node root with `atoms` installed and `php` / `release`
    /// active (trees copied from the rsync source directory), and the sshd
    /// files (host key, config).
    pub fn seed(&self, binhost: &str, atoms: &[String], php: &str, release: &str, sources: &Path) -> io::Result<()> {
        let r = &self.root;
        for d in [
            "etc/init.d",
            "etc/portage",
            "var/db/pkg",
            "var/lib/portage",
            "var/log",
            "proc/sys/kernel/random",
            "opt/php",
            "srv/app/releases",
            "run/ctl",
            "faults",
        ] {
            fs::create_dir_all(r.join(d))?;
        }
        fs::create_dir_all(self.dir.join("pids"))?;
        fs::create_dir_all(self.dir.join("log"))?;
        for s in WEB_SERVICES {
            fs::write(r.join("etc/init.d").join(s), "#!/sbin/openrc-run\n")?;
        }
        fs::write(r.join("etc/portage/binhost"), format!("{binhost}\n"))?;
        fs::write(r.join("var/lib/portage/world"), "")?;
        match self.portage {
            Some(p) => p.seed_root(r, atoms, self.ip)?,
            None => {
                for a in atoms {
                    install_package(r, a, binhost)?;
                }
            }
        }
        copy_dir(&sources.join("php").join(php), &r.join("opt/php").join(php))?;
        symlink(php, r.join("opt/php/current"))?;
        copy_dir(&sources.join("releases").join(release), &r.join("srv/app/releases").join(release))?;
        symlink(format!("releases/{release}"), r.join("srv/app/current"))?;
        // A node that has served its release for a while is warm (the app's X-Warm).
        fs::create_dir_all(r.join("run/warm"))?;
        fs::write(r.join("run/warm").join(release), "")?;
        self.write_boot()?;
        let user = node_user();
        chown_tree(r, user.uid, user.gid)?;
        if self.stack == WebStack::Real {
            // Apache's configuration (written at each start), logs and runtime files.
            let a = self.dir.join("apache");
            fs::create_dir_all(a.join("run"))?;
            chown_tree(&a, user.uid, user.gid)?;
        }
        // The tools are root's: the node user runs them but cannot change them.
        let bin = r.join("bin");
        fs::create_dir_all(&bin)?;
        for (name, text) in STANDINS {
            let p = bin.join(name);
            fs::write(&p, text)?;
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755))?;
        }
        if let Some(p) = self.portage {
            p.write_emerge(&bin)?;
        }
        if self.env.with_ssh {
            write_sshd_files(
                &self.dir.join("sshd"),
                self.ssh,
                &self.env.authorized_keys,
                &[
                    ("PATH", format!("{}:/usr/bin:/bin", bin.display())),
                    ("NODE_ROOT", r.display().to_string()),
                    ("DROVER_TEST_NODE", self.name.clone()),
                ],
            )?;
        }
        Ok(())
    }

    /// A new boot id, and the newest installed kernel as the running one.
    fn write_boot(&self) -> io::Result<()> {
        let r = &self.root;
        fs::write(r.join("proc/sys/kernel/random/boot_id"), format!("{}\n", random_uuid()))?;
        let kernel = newest_kernel(r).map(|pf| kernel_release(&pf));
        fs::write(r.join("proc/sys/kernel/osrelease"), format!("{}\n", kernel.as_deref().unwrap_or("unknown")))?;
        append(&r.join("var/log/reboot.log"), &format!("{} boot {}", now_secs(), kernel.unwrap_or_default()));
        Ok(())
    }

    /// Starts the node's sshd (when the fleet has SSH) unless it runs.
    fn start_sshd(&self) -> io::Result<()> {
        let mut rt = self.rt.lock().unwrap();
        if rt.shutting_down || !self.env.with_ssh || rt.sshd.is_some() {
            return Ok(());
        }
        rt.sshd = Some(start_sshd(
            &format!("{}-sshd", self.name),
            &self.dir.join("sshd"),
            self.ssh,
            &self.env.sshd,
            &self.dir.join("pids/sshd.pid"),
        )?);
        Ok(())
    }

    /// Starts the node's services (sshd when the fleet has SSH, web server).
    pub fn power_on(&self) -> io::Result<()> {
        self.start_sshd()?;
        let mut rt = self.rt.lock().unwrap();
        if rt.shutting_down {
            return Ok(());
        }
        if self.env.with_web {
            match self.stack {
                WebStack::StandIn if rt.web.is_none() => rt.web = Some(self.start_web()?),
                WebStack::StandIn => {}
                WebStack::Real => {
                    if !running(&mut rt.fpm) {
                        rt.fpm = Some(self.start_fpm()?);
                    }
                    if !running(&mut rt.apache) {
                        rt.apache = Some(self.start_apache()?);
                    }
                }
            }
        }
        Ok(())
    }

    /// The php-fpm master, started THROUGH `opt/php/current` (the node
    /// contract), as the node user, with the environment its workers see.
    fn start_fpm(&self) -> io::Result<Daemon> {
        let user = node_user();
        let cur = self.root.join("opt/php/current");
        let mut cmd = Command::new(cur.join("sbin/php-fpm"));
        cmd.arg("--nodaemonize")
            .arg("--fpm-config")
            .arg(cur.join("etc/php-fpm.conf"))
            .arg("-c")
            .arg(cur.join("etc/php.ini"))
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("NODE_ROOT", &self.root)
            .env("DROVER_TEST_NODE", &self.name)
            .env("DROVER_TEST_MEMCACHED", self.memcached.map(|m| m.to_string()).unwrap_or_default())
            .current_dir(&self.root)
            .uid(user.uid)
            .gid(user.gid);
        let log = self.root.join("var/log/php-fpm.log");
        let before = count_lines(&log, FPM_READY);
        let mut d = Daemon::spawn(
            &format!("{}-php-fpm", self.name),
            &mut cmd,
            &self.dir.join("pids/php-fpm.pid"),
            &self.dir.join("log/php-fpm.out"),
        )?;
        let ready = wait_for(START_TIMEOUT, || {
            if !d.running() {
                return Some(false);
            }
            (count_lines(&log, FPM_READY) > before).then_some(true)
        });
        if ready != Some(true) {
            return Err(io::Error::other(format!(
                "php-fpm of node {} did not start (exit status {:?}): {}{}",
                self.name,
                d.exited(),
                d.log_text(),
                tail(&log, 5)
            )));
        }
        Ok(d)
    }

    /// Apache in the foreground as the node user, on a configuration written
    /// now (broken when the `apache-fail` fault is set).
    fn start_apache(&self) -> io::Result<Daemon> {
        let user = node_user();
        let a = self.dir.join("apache");
        let broken = self.root.join("faults").join(fault::APACHE_FAIL).exists();
        let conf = HTTPD_CONF
            .replace("@NODE@", &self.name)
            .replace("@DIR@", &a.display().to_string())
            .replace("@ROOT@", &self.root.display().to_string())
            .replace("@LISTEN@", &self.http.to_string())
            .replace(
                "@FAULT@",
                if broken { "DroverTestBrokenDirective \"faults/apache-fail: a broken configuration\"" } else { "" },
            );
        fs::write(a.join("httpd.conf"), conf)?;
        let mut cmd = Command::new(&self.env.apache);
        cmd.arg("-f")
            .arg(a.join("httpd.conf"))
            .arg("-DFOREGROUND")
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .current_dir(&self.root)
            .uid(user.uid)
            .gid(user.gid);
        ensure_free(self.http, &format!("Apache of node {}", self.name))?;
        // What this start writes (both logs accumulate over restarts): a bad
        // configuration is reported on stderr, other failures in error.log.
        let (out, err) = (self.dir.join("log/apache2.out"), a.join("error.log"));
        let offsets = (file_len(&out), file_len(&err));
        let mut d =
            Daemon::spawn(&format!("{}-apache2", self.name), &mut cmd, &self.dir.join("pids/apache2.pid"), &out)?;
        if let Err(e) = wait_listening_quiet(&mut d, self.http) {
            let said = format!("{}{}", read_from(&out, offsets.0), read_from(&err, offsets.1));
            return Err(io::Error::other(format!("Apache of node {}: {e}: {}", self.name, said.trim())));
        }
        Ok(d)
    }

    fn start_web(&self) -> io::Result<Daemon> {
        let user = node_user();
        let mut cmd = Command::new(&self.env.python);
        cmd.args(["-I", "-S"])
            .arg(&self.env.webserver)
            .args(["--node", &self.name, "--addr"])
            .arg(self.ip.to_string())
            .arg("--port")
            .arg(self.http.port().to_string())
            .arg("--root")
            .arg(&self.root);
        if let Some(m) = self.memcached {
            cmd.arg("--memcached").arg(m.to_string());
        }
        cmd.env_clear().current_dir(&self.root).uid(user.uid).gid(user.gid);
        ensure_free(self.http, &format!("web server of node {}", self.name))?;
        let mut d = Daemon::spawn(
            &format!("{}-web", self.name),
            &mut cmd,
            &self.dir.join("pids/web.pid"),
            &self.dir.join("log/web.log"),
        )?;
        wait_listening(&mut d, self.http)?;
        Ok(d)
    }

    /// Stops every process of the node for good (the fleet is going away).
    pub fn shut_down(&self) {
        let mut rt = self.rt.lock().unwrap();
        rt.shutting_down = true;
        rt.web = None;
        stop_stack(&mut rt);
        if let Some(s) = rt.sshd.take() {
            procs::kill_tree(s.pid());
            drop(s);
        }
        // Unmounted, detached and removed before the fleet's directory goes.
        drop(self.disk.lock().unwrap().take());
    }

    /// The web server's PID: `webserver.py`, or Apache's parent.
    pub fn web_pid(&self) -> Option<u32> {
        let rt = self.rt.lock().unwrap();
        rt.web.as_ref().or(rt.apache.as_ref()).map(Daemon::pid)
    }
    /// The php-fpm master's PID (real nodes).
    pub fn fpm_pid(&self) -> Option<u32> {
        self.rt.lock().unwrap().fpm.as_ref().map(Daemon::pid)
    }
    pub fn sshd_pid(&self) -> Option<u32> {
        self.rt.lock().unwrap().sshd.as_ref().map(Daemon::pid)
    }
    pub fn is_up(&self) -> bool {
        let rt = self.rt.lock().unwrap();
        let web = match self.stack {
            WebStack::StandIn => rt.web.is_some(),
            WebStack::Real => rt.fpm.is_some() && rt.apache.is_some(),
        };
        (web || !self.env.with_web) && (rt.sshd.is_some() || !self.env.with_ssh)
    }

    pub fn set_fault(&self, name: &str, content: &str) {
        let p = self.root.join("faults").join(name);
        fs::write(&p, content).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    }
    pub fn clear_fault(&self, name: &str) {
        let _ = fs::remove_file(self.root.join("faults").join(name));
    }

    /// `cat/pkg-ver` of every installed package, sorted.
    pub fn installed(&self) -> Vec<String> {
        let mut out = Vec::new();
        let db = self.root.join("var/db/pkg");
        for cat in read_names(&db) {
            for pf in read_names(&db.join(&cat)) {
                if !pf.starts_with("-MERGING-") {
                    out.push(format!("{cat}/{pf}"));
                }
            }
        }
        out.sort();
        out
    }
    pub fn active_release(&self) -> Option<String> {
        link_name(&self.root.join("srv/app/current"))
    }
    pub fn active_php(&self) -> Option<String> {
        link_name(&self.root.join("opt/php/current"))
    }
    pub fn boot_id(&self) -> String {
        read_trimmed(&self.root.join("proc/sys/kernel/random/boot_id"))
    }
    pub fn running_kernel(&self) -> String {
        read_trimmed(&self.root.join("proc/sys/kernel/osrelease"))
    }
    /// Lines of var/log/rc.log: `<time> <service> <action> <status>`.
    pub fn rc_log(&self) -> Vec<String> {
        fs::read_to_string(self.root.join("var/log/rc.log")).unwrap_or_default().lines().map(str::to_string).collect()
    }

    /// Takes the node's pending requests; each is served on its own thread
    /// (nodes restart and reboot concurrently, like real machines).
    fn poll(self: &Arc<Self>, workers: &Mutex<Vec<JoinHandle<()>>>) {
        let ctl = self.root.join("run/ctl");
        for name in read_names(&ctl) {
            let Some(token) = name.strip_suffix(".req") else {
                continue;
            };
            let path = ctl.join(&name);
            let request = fs::read_to_string(&path).unwrap_or_default();
            let _ = fs::remove_file(&path);
            let node = Arc::clone(self);
            let token = token.to_string();
            let worker = thread::spawn(move || node.serve(&token, &request));
            let mut w = workers.lock().unwrap();
            w.retain(|t| !t.is_finished());
            w.push(worker);
        }
    }

    fn serve(&self, token: &str, request: &str) {
        let words: Vec<&str> = request.split_whitespace().collect();
        let (status, message) = match words.as_slice() {
            // One argument per line (the sudo stand-in's privileged commands).
            ["root", ..] => self.as_root(&request.lines().skip(1).collect::<Vec<_>>()),
            // `reboot` does not wait for an answer.
            ["reboot"] => return self.reboot(),
            ["service", svc, action] => self.service(svc, action),
            _ => (1, format!("node init: unknown request {request:?}")),
        };
        let ctl = self.root.join("run/ctl");
        let tmp = ctl.join(format!("{token}.done.tmp"));
        if fs::write(&tmp, format!("{status}\n{message}\n")).is_ok() {
            let _ = fs::rename(&tmp, ctl.join(format!("{token}.done")));
        }
    }

    /// What the node's sudoers grants drover beyond the login user's rights
    /// (README, snapshots): `btrfs`, LVM's `lvcreate`, `lvs`, `lvremove`,
    /// `lvconvert`, and the snapshot hooks in
    /// `etc/drover/hooks/`, run as root by this "init" (the test process).
    /// Anything else is refused. Success: stdout; failure: stderr and stdout.
    fn as_root(&self, argv: &[&str]) -> (i32, String) {
        let hooks = self.root.join("etc/drover/hooks");
        let program = match argv.first() {
            Some(&"btrfs") => procs::require_binary("btrfs", "btrfs-progs"),
            Some(p @ (&"lvcreate" | &"lvs" | &"lvremove" | &"lvconvert")) => procs::require_binary(p, "lvm2"),
            Some(p) if Path::new(p).parent() == Some(hooks.as_path()) && !p.contains("..") => PathBuf::from(p),
            _ => return (1, format!("sudo: {argv:?} is not allowed for the node user")),
        };
        let out = Command::new(program)
            .args(&argv[1..])
            .env("NODE_ROOT", &self.root)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .current_dir("/")
            .output();
        match out {
            Ok(o) if o.status.success() => (0, String::from_utf8_lossy(&o.stdout).trim_end().to_string()),
            Ok(o) => (
                o.status.code().unwrap_or(1),
                format!("{}{}", String::from_utf8_lossy(&o.stderr), String::from_utf8_lossy(&o.stdout))
                    .trim_end()
                    .into(),
            ),
            Err(e) => (1, format!("sudo: {}: {e}", argv[0])),
        }
    }

    fn service(&self, svc: &str, action: &str) -> (i32, String) {
        let result = if WEB_SERVICES.contains(&svc) {
            match self.stack {
                WebStack::StandIn => self.web_service(svc, action),
                WebStack::Real => self.real_service(svc, action),
            }
        } else {
            (1, format!(" * {svc}: not a service of this test node"))
        };
        append(&self.root.join("var/log/rc.log"), &format!("{} {svc} {action} {}", now_secs(), result.0));
        result
    }

    fn web_service(&self, svc: &str, action: &str) -> (i32, String) {
        let mut rt = self.rt.lock().unwrap();
        if rt.shutting_down {
            return (1, " * the node is shutting down".into());
        }
        let ok = |m: String| (0, m);
        match action {
            "status" if rt.web.is_some() => ok(" * status: started".into()),
            "status" => (3, " * status: stopped".into()),
            "stop" => {
                rt.web = None;
                ok(format!(" * Stopping {svc} ...  [ ok ]"))
            }
            "start" | "restart" => {
                if action == "start" && rt.web.is_some() {
                    return ok(format!(" * WARNING: {svc} has already been started"));
                }
                rt.web = None;
                match self.start_web() {
                    Ok(d) => {
                        rt.web = Some(d);
                        ok(format!(" * Starting {svc} ...  [ ok ]"))
                    }
                    Err(e) => (1, format!(" * Starting {svc} ...  [ !! ] {e}")),
                }
            }
            "reload" => {
                let Some(web) = rt.web.as_ref() else {
                    return (1, format!(" * ERROR: {svc} is not running"));
                };
                // As on a real node: a graceful Apache reload does nothing
                // for PHP (its workers keep what they resolved); only a
                // php-fpm reload makes the stand-in re-read the links.
                if svc == "apache2" {
                    return ok(format!(" * Reloading {svc} ...  [ ok ]"));
                }
                let before = generation(self.http);
                web.signal(SIGHUP);
                let reloaded = wait_for(START_TIMEOUT, || generation(self.http).filter(|g| Some(*g) > before));
                match reloaded {
                    Some(_) => ok(format!(" * Reloading {svc} ...  [ ok ]")),
                    None => (1, format!(" * Reloading {svc} ...  [ !! ]")),
                }
            }
            _ => (1, format!(" * {svc}: unknown function `{action}'")),
        }
    }

    /// The init of a real node: apache2 and php-fpm are the real processes.
    /// start/stop/restart start and stop them (a restart gives new PIDs);
    /// `php-fpm reload` is SIGUSR2 to the master (it lets requests in flight
    /// finish, then re-executes its argv, i.e. through `opt/php/current`,
    /// keeping its PID and listening socket), `apache2 reload` a graceful
    /// restart (SIGUSR1). A reload returns once the server logged that it
    /// is ready again; one that kills it (a broken configuration) fails.
    /// Like systemd's units (not Gentoo's OpenRC script), the init runs no
    /// `php-fpm -t` of its own before a reload: drover must.
    fn real_service(&self, svc: &str, action: &str) -> (i32, String) {
        let mut rt = self.rt.lock().unwrap();
        if rt.shutting_down {
            return (1, " * the node is shutting down".into());
        }
        let fpm = svc == "php-fpm";
        let slot = if fpm { &mut rt.fpm } else { &mut rt.apache };
        let up = running(slot);
        let start = |slot: &mut Option<Daemon>| {
            let started = if fpm { self.start_fpm() } else { self.start_apache() };
            match started {
                Ok(d) => {
                    *slot = Some(d);
                    (0, format!(" * Starting {svc} ...  [ ok ]"))
                }
                Err(e) => (1, format!(" * Starting {svc} ...  [ !! ]\n{e}")),
            }
        };
        match action {
            "status" if up => (0, " * status: started".into()),
            "status" if slot.is_some() => (32, " * status: crashed".into()),
            "status" => (3, " * status: stopped".into()),
            "stop" => {
                if let Some(d) = slot.take() {
                    stop_tree(d);
                }
                (0, format!(" * Stopping {svc} ...  [ ok ]"))
            }
            "start" if up => (0, format!(" * WARNING: {svc} has already been started")),
            "start" | "restart" => {
                if let Some(d) = slot.take() {
                    stop_tree(d);
                }
                start(slot)
            }
            "reload" if !up => (1, format!(" * ERROR: {svc} is not running")),
            "reload" => {
                let d = slot.as_mut().expect("running");
                let (log, ready, signal, timeout) = if fpm {
                    (self.root.join("var/log/php-fpm.log"), FPM_READY, procs::SIGUSR2, FPM_RELOAD_TIMEOUT)
                } else {
                    (self.dir.join("apache/error.log"), APACHE_READY, procs::SIGUSR1, START_TIMEOUT)
                };
                let before = count_lines(&log, ready);
                d.signal(signal);
                let done = wait_for(timeout, || {
                    if !d.running() {
                        return Some(false);
                    }
                    (count_lines(&log, ready) > before).then_some(true)
                });
                match done {
                    Some(true) => (0, format!(" * Reloading {svc} ...  [ ok ]")),
                    Some(false) => (
                        1,
                        format!(
                            " * Reloading {svc} ...  [ !! ] it exited (status {:?}):\n{}",
                            d.exited(),
                            tail(&log, 5)
                        ),
                    ),
                    None => (1, format!(" * Reloading {svc} ...  [ !! ] not ready after {timeout:?}")),
                }
            }
            _ => (1, format!(" * {svc}: unknown function `{action}'")),
        }
    }

    /// Shuts the node's services down (its SSH connections drop), boots the
    /// newest installed kernel with a new boot id, and, unless the
    /// `reboot-hang` fault is set, starts the services again.
    fn reboot(&self) {
        sleep(REBOOT_DELAY);
        {
            let mut rt = self.rt.lock().unwrap();
            if rt.shutting_down {
                return;
            }
            rt.web = None;
            stop_stack(&mut rt);
            // Every session goes with the listener, also one it accepted
            // while going away: nothing of the old boot answers.
            if let Some(s) = rt.sshd.take() {
                procs::kill_tree(s.pid());
                drop(s);
            }
        }
        // A Btrfs root boots from its filesystem's default subvolume (a
        // rollback may have changed it).
        if let Some(d) = self.disk.lock().unwrap().as_ref()
            && let Err(e) = d.boot()
        {
            eprintln!("node {}: reboot: mounting its root filesystem: {e}", self.name);
        }
        if let Err(e) = self.write_boot() {
            eprintln!("node {}: reboot: {e}", self.name);
        }
        sleep(self.env.reboot_down);
        if self.root.join("faults").join(fault::REBOOT_HANG).exists() {
            append(&self.root.join("var/log/reboot.log"), &format!("{} hung (faults/reboot-hang)", now_secs()));
            return;
        }
        // As on a real node, sshd answers before the web stack has started
        // (both start at boot, independently): a reload or a health check
        // sent as soon as SSH answers finds php-fpm not running yet.
        let booted = self.start_sshd().and_then(|()| {
            sleep(BOOT_WEB_DELAY);
            self.power_on()
        });
        if let Err(e) = booted {
            eprintln!("node {}: services did not come back after reboot: {e}", self.name);
        }
    }
}

/// `d` is set and its process still runs.
fn running(d: &mut Option<Daemon>) -> bool {
    d.as_mut().is_some_and(Daemon::running)
}

/// Stops Apache, then php-fpm (each by PID; a master's workers with it).
fn stop_stack(rt: &mut Runtime) {
    for d in [rt.apache.take(), rt.fpm.take()].into_iter().flatten() {
        stop_tree(d);
    }
}

/// Stops a server and whatever of its children outlived it (a master
/// killed with SIGKILL leaves its workers behind).
fn stop_tree(mut d: Daemon) {
    let children = procs::descendants(d.pid());
    d.stop();
    for c in children {
        if procs::alive(c) {
            procs::signal(c, procs::SIGKILL);
        }
    }
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// What was appended to the file at `path` after byte `offset`.
fn read_from(path: &Path, offset: u64) -> String {
    let bytes = fs::read(path).unwrap_or_default();
    String::from_utf8_lossy(bytes.get(offset as usize..).unwrap_or_default()).into_owned()
}

/// Waits until `d` listens on `addr`; the error says only how it ended.
fn wait_listening_quiet(d: &mut Daemon, addr: SocketAddr) -> Result<(), String> {
    let ok = wait_for(START_TIMEOUT, || {
        if !d.running() {
            return Some(false);
        }
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok().then_some(true)
    });
    match ok {
        Some(true) => Ok(()),
        _ => Err(format!("did not listen on {addr} (exit status {:?})", d.exited())),
    }
}

/// How many lines of the log at `path` contain `needle`.
fn count_lines(path: &Path, needle: &str) -> usize {
    fs::read_to_string(path).map(|t| t.lines().filter(|l| l.contains(needle)).count()).unwrap_or(0)
}

/// The last `n` lines of a log, for error messages.
fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn generation(addr: SocketAddr) -> Option<u64> {
    http::get(addr, "/healthz").ok()?.header("x-generation")?.parse().ok()
}

/// The node's init: a thread polling every node's request directory, plus
/// the threads serving the requests. Stops and joins them when dropped.
pub struct Supervisor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    workers: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Supervisor {
    pub fn start(nodes: Vec<Arc<Node>>) -> Supervisor {
        let stop = Arc::new(AtomicBool::new(false));
        let workers = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let stop = Arc::clone(&stop);
            let workers = Arc::clone(&workers);
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for n in &nodes {
                        n.poll(&workers);
                    }
                    sleep(Duration::from_millis(50));
                }
            })
        };
        Supervisor { stop, thread: Some(thread), workers }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for t in self.workers.lock().unwrap().drain(..) {
            let _ = t.join();
        }
    }
}

/// sshd's host key, config and known_hosts line for one host, in `dir`.
pub fn write_sshd_files(
    dir: &Path,
    listen: SocketAddr,
    authorized_keys: &Path,
    env: &[(&str, String)],
) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    let key = dir.join("ssh_host_ed25519_key");
    keygen(&key, &format!("host {listen}"))?;
    let setenv: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let config = format!(
        "# sshd of a drover test host (tests/it/fleet), generated.\n\
         ListenAddress {listen}\n\
         HostKey {key}\n\
         PidFile {pid}\n\
         AuthorizedKeysFile {ak}\n\
         AllowUsers {NODE_USER}\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PermitRootLogin no\n\
         UsePAM no\n\
         # The fleet lives under /tmp (world-writable): the path checks would refuse it.\n\
         StrictModes no\n\
         SetEnv {setenv}\n\
         AcceptEnv PORTAGE_BINHOST LANG LC_*\n\
         MaxStartups 64:30:128\n\
         MaxSessions 32\n\
         LogLevel ERROR\n",
        key = key.display(),
        pid = dir.join("sshd.pid").display(),
        ak = authorized_keys.display(),
        setenv = setenv.join(" "),
    );
    fs::write(dir.join("sshd_config"), config)
}

/// The line of a known_hosts file for the host whose sshd files are in `dir`.
pub fn known_hosts_line(dir: &Path, listen: SocketAddr) -> io::Result<String> {
    let public = fs::read_to_string(dir.join("ssh_host_ed25519_key.pub"))?;
    let mut parts = public.split_whitespace();
    let (Some(kind), Some(key)) = (parts.next(), parts.next()) else {
        return Err(io::Error::other("malformed host public key"));
    };
    let host =
        if listen.port() == 22 { listen.ip().to_string() } else { format!("[{}]:{}", listen.ip(), listen.port()) };
    Ok(format!("{host} {kind} {key}"))
}

/// An ed25519 key pair without passphrase (private part mode 600).
pub fn keygen(path: &Path, comment: &str) -> io::Result<()> {
    let _ = fs::remove_file(path);
    let out = Command::new(procs::require_binary("ssh-keygen", "openssh-client"))
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!("ssh-keygen: {}", String::from_utf8_lossy(&out.stderr))));
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
}

/// Starts `sshd -D` with the files of `dir` and waits until it listens.
/// sshd exits with status 0 when it cannot bind, so "started" means: the
/// address was free before, the process still runs, it wrote its own PID
/// file with our child's PID, and it answers with an SSH banner.
pub fn start_sshd(name: &str, dir: &Path, listen: SocketAddr, sshd: &Path, pid_file: &Path) -> io::Result<Daemon> {
    ensure_free(listen, name)?;
    // The privilege separation directory: root's, not group/world writable.
    fs::create_dir_all("/run/sshd")?;
    fs::set_permissions("/run/sshd", fs::Permissions::from_mode(0o755))?;
    let own_pid = dir.join("sshd.pid");
    let _ = fs::remove_file(&own_pid);
    let log = dir.join("sshd.log");
    let mut cmd = Command::new(sshd);
    cmd.arg("-D").arg("-f").arg(dir.join("sshd_config")).arg("-E").arg(&log);
    let mut d = Daemon::spawn(name, &mut cmd, pid_file, &dir.join("sshd.out"))?;
    let pid = d.pid().to_string();
    let ready = wait_for(START_TIMEOUT, || {
        if !d.running() {
            return Some(false);
        }
        let own = fs::read_to_string(&own_pid).unwrap_or_default();
        (own.trim() == pid && banner(listen)).then_some(true)
    });
    if ready != Some(true) {
        return Err(io::Error::other(format!(
            "{name} did not start on {listen} (exit status {:?}): {}",
            d.exited(),
            fs::read_to_string(&log).unwrap_or_default()
        )));
    }
    Ok(d)
}

fn banner(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 8];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"SSH-2.0")
}

/// Fails if something already listens on `addr` (e.g. a process another
/// fleet left behind): never trust a start that might be someone else's.
pub fn ensure_free(addr: SocketAddr, what: &str) -> io::Result<()> {
    match TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("{what}: {addr} is not free ({e}); is another test fleet or a stale process listening there?"),
        )),
    }
}

/// Waits until `d` accepts TCP connections on `addr`.
pub fn wait_listening(d: &mut Daemon, addr: SocketAddr) -> io::Result<()> {
    let ok = wait_for(START_TIMEOUT, || {
        if !d.running() {
            return Some(false);
        }
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok().then_some(true)
    });
    if ok == Some(true) {
        Ok(())
    } else {
        let status = d.exited();
        Err(io::Error::other(format!("{} did not listen on {addr} (exit status {status:?}): {}", d.name, d.log_text())))
    }
}

/// Records an installed package the way the emerge stand-in does.
fn install_package(root: &Path, atom: &str, binhost: &str) -> io::Result<()> {
    let (cat, pf) = atom.split_once('/').ok_or_else(|| io::Error::other(format!("bad atom {atom}")))?;
    let version = pf_version(pf);
    let dir = root.join("var/db/pkg").join(cat).join(pf);
    fs::create_dir_all(&dir)?;
    let slot = if cat == "sys-kernel" { version.0.to_string() } else { "0".into() };
    for (file, value) in [
        ("CATEGORY", cat.to_string()),
        ("PF", pf.to_string()),
        ("SLOT", slot),
        ("BUILD_TIME", now_secs().to_string()),
        ("repository", "gentoo".into()),
        ("BINPKG_BINHOST", binhost.to_string()),
    ] {
        fs::write(dir.join(file), format!("{value}\n"))?;
    }
    Ok(())
}

/// (version, revision) of a `pkg-ver[-rN]`: ("6.6.62", Some("r1")).
fn pf_version(pf: &str) -> (&str, Option<&str>) {
    let (base, rev) = match pf.rsplit_once('-') {
        Some((b, r)) if r.starts_with('r') && r[1..].bytes().all(|c| c.is_ascii_digit()) => (b, Some(r)),
        _ => (pf, None),
    };
    (base.rsplit_once('-').map(|(_, v)| v).unwrap_or(base), rev)
}

/// `uname -r` of a kernel package, as Gentoo's distribution kernels name
/// themselves: gentoo-kernel-bin-6.6.62 -> 6.6.62-gentoo-dist,
/// ...-6.6.62-r1 -> 6.6.62-gentoo-r1-dist.
pub fn kernel_release(pf: &str) -> String {
    match pf_version(pf) {
        (v, Some(r)) => format!("{v}-gentoo-{r}-dist"),
        (v, None) => format!("{v}-gentoo-dist"),
    }
}

/// The newest installed sys-kernel package (what the boot loader boots).
fn newest_kernel(root: &Path) -> Option<String> {
    read_names(&root.join("var/db/pkg/sys-kernel")).into_iter().filter(|pf| !pf.starts_with("-MERGING-")).max_by(
        |a, b| {
            drover::model::ReleaseId(pf_version(a).0.into())
                .cmp(&drover::model::ReleaseId(pf_version(b).0.into()))
                .then_with(|| a.cmp(b))
        },
    )
}

pub fn copy_dir(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir_all(to)?;
    for e in fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            fs::copy(e.path(), &target)?;
        }
    }
    Ok(())
}

pub fn chown_tree(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    if fs::symlink_metadata(path)?.is_dir() {
        for e in fs::read_dir(path)? {
            chown_tree(&e?.path(), uid, gid)?;
        }
    }
    Ok(())
}

fn read_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| rd.flatten().filter_map(|e| e.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn link_name(link: &Path) -> Option<String> {
    let target = fs::read_link(link).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

fn read_trimmed(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_default().trim().to_string()
}

fn append(p: &Path, line: &str) {
    use std::io::Write;
    if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(p) {
        let _ = writeln!(f, "{line}");
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn random_uuid() -> String {
    let mut b = [0u8; 16];
    if let Ok(mut f) = fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}
