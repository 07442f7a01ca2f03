//! `TestFleet`: starts a whole test fleet on its own slot, and stops every
//! process of it by PID when dropped (also when the test panics).

use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use drover::spec::SourceFile;

use super::lb::{AdminAddr, SiteLb};
use super::loadgen::{LoadGen, LoadOptions};
use super::node::{self, Node, NodeEnv, Supervisor, WebStack, ensure_free, wait_listening};
use super::procs::{self, Daemon, require_binary};
use super::slot::Slot;
use super::topology::{
    self, Admin, NODE_HTTP_PORT, NODE_USER, PHP_VERSIONS, Plan, RELEASES, SSH_PORT, SpecPaths, Target, Topology,
};

pub struct FleetOptions {
    pub topology: Topology,
    /// sshd on every node and on the LB hosts of unix-socket sites.
    pub ssh: bool,
    /// A memcached per farm (the web servers keep sessions in it).
    pub memcached: bool,
    /// An rsync daemon serving the sources (else `file://` sources).
    pub rsync: bool,
    /// A web server per node and one HAProxy per site (else neither: no
    /// `sites`, and nodes run only their sshd).
    pub http: bool,
    /// What every node runs at start; also the spec's target until `write_spec`.
    pub initial: Target,
    /// How long a rebooting node stays down.
    pub reboot_down: Duration,
    /// The nodes of the first farm of every site run the real web stack
    /// (Debian's apache2 + php-fpm serving the release's PHP code) instead
    /// of `webserver.py`; needs `http` and `memcached`.
    pub real_web: bool,
    /// Real Portage (and the fleet's binhost) on the nodes of the first farm
    /// of every site; the other nodes keep the emerge stand-in (CPU: a real
    /// install costs ~2.5 s of CPU). Needs `ssh`.
    pub real_portage: bool,
    /// Farms (by name) whose nodes get a real Btrfs root filesystem on a
    /// loop device (btrfs.rs), for drover's snapshots.
    pub btrfs_farms: Vec<String>,
}

impl FleetOptions {
    /// Every component.
    pub fn full(topology: Topology) -> FleetOptions {
        FleetOptions {
            topology,
            ssh: true,
            memcached: true,
            rsync: true,
            http: true,
            initial: Target::initial(),
            reboot_down: Duration::from_secs(1),
            real_web: true,
            real_portage: true,
            btrfs_farms: Vec::new(),
        }
    }
    /// Only what load balancing needs: stand-in web servers and the site HAProxies.
    pub fn lb_only(topology: Topology) -> FleetOptions {
        FleetOptions {
            ssh: false,
            memcached: false,
            rsync: false,
            real_web: false,
            real_portage: false,
            ..FleetOptions::full(topology)
        }
    }
    /// Only an sshd per node (no web server, LB, memcached or rsync): cheap
    /// to start by the hundred, for observing nodes over SSH (benches/observe.rs).
    pub fn ssh_only(topology: Topology) -> FleetOptions {
        FleetOptions {
            memcached: false,
            rsync: false,
            http: false,
            real_web: false,
            real_portage: false,
            ..FleetOptions::full(topology)
        }
    }
}

pub struct Site {
    pub name: String,
    pub index: usize,
    pub lb: SiteLb,
    /// The LB host's sshd (unix admin socket sites with SSH).
    pub lb_ssh: Option<SocketAddr>,
    lb_sshd: Option<Daemon>,
}

pub struct TestFleet {
    pub plan: Plan,
    pub dir: PathBuf,
    pub topology: Topology,
    pub spec_dir: PathBuf,
    /// The spec as drover resolves it.
    pub model: drover::model::Fleet,
    /// The client key authorized on every node, and the known_hosts file.
    pub key: PathBuf,
    pub known_hosts: PathBuf,
    /// Directory with `php/<version>/` and `releases/<id>/`.
    pub sources: PathBuf,
    pub sites: Vec<Site>,
    pub nodes: Vec<Arc<Node>>,
    /// Time `start` took.
    pub startup: Duration,
    /// The real binhost of the real-Portage nodes (`FleetOptions::real_portage`).
    pub binhost: Option<super::portage::Binhost>,
    spec_paths: (String, String, Vec<(String, String)>),
    memcached: Vec<Daemon>,
    rsyncd: Option<Daemon>,
    supervisor: Option<Supervisor>,
    _slot: Slot,
}

impl TestFleet {
    pub fn start(test: &str, opts: FleetOptions) -> TestFleet {
        let t0 = Instant::now();
        assert!(
            procs::is_root(),
            "the real-fleet tests must run as root (sshd privilege separation, a dedicated \
             login user, ports 22 and 80 on 127.x.y.z): run ./tests/run-all as root"
        );
        let haproxy = if opts.http { require_binary("haproxy", "haproxy") } else { PathBuf::new() };
        let python = PathBuf::from("/usr/bin/python3");
        assert!(
            !opts.http || python.is_file(),
            "the test nodes' web servers need /usr/bin/python3 (Debian package python3-minimal)"
        );
        assert!(
            !opts.real_web || (opts.http && opts.memcached),
            "FleetOptions: real_web needs http (a web server per node) and memcached (the app's sessions)"
        );
        let apache = if opts.real_web {
            require_binary("php-fpm8.2", "php8.2-fpm");
            require_binary("apache2", "apache2")
        } else {
            PathBuf::new()
        };
        let sshd = if opts.ssh {
            require_binary("ssh", "openssh-client");
            require_binary("ssh-keygen", "openssh-client");
            require_binary("sshd", "openssh-server")
        } else {
            PathBuf::new()
        };
        let slot = Slot::acquire(test);
        let plan = Plan { slot: slot.n };
        let dir = slot.dir.clone();
        let topo = opts.topology.clone();

        // The release hooks' databases and logs (hooks/migrate), written by the node user.
        let hooks = dir.join("hooks");
        fs::create_dir_all(&hooks).unwrap();
        let user = node::node_user();
        std::os::unix::fs::chown(&hooks, Some(user.uid), Some(user.gid)).unwrap();
        // Sources, served over rsync:// (or file://).
        let sources = dir.join("sources");
        for v in PHP_VERSIONS {
            write_php_tree(&sources, v);
        }
        for r in RELEASES {
            write_release(&sources, r, false);
        }
        let mut rsyncd = None;
        let (php_src, rel_src) = if opts.rsync {
            rsyncd = Some(start_rsyncd(&dir, &sources, plan.rsync()));
            (format!("rsync://{}/php", plan.rsync().ip()), format!("rsync://{}/releases", plan.rsync().ip()))
        } else {
            // `file:///path` is refused by the spec (no host), `localhost` is not.
            (
                format!("file://localhost{}/php", sources.display()),
                format!("file://localhost{}/releases", sources.display()),
            )
        };

        // SSH: one client key per run, authorized for the node user everywhere.
        let ssh_dir = dir.join("ssh");
        fs::create_dir_all(&ssh_dir).unwrap();
        let key = ssh_dir.join("id_ed25519");
        let authorized_keys = ssh_dir.join("authorized_keys");
        let known_hosts = ssh_dir.join("known_hosts");
        if opts.ssh {
            node::node_user();
            node::keygen(&key, &format!("drover-test-{}", plan.slot)).unwrap();
            fs::copy(key.with_extension("pub"), &authorized_keys).unwrap();
            fs::set_permissions(&authorized_keys, fs::Permissions::from_mode(0o644)).unwrap();
        }

        let env = Arc::new(NodeEnv {
            python,
            sshd: sshd.clone(),
            webserver: dir.join("webserver.py"),
            apache,
            authorized_keys: authorized_keys.clone(),
            with_ssh: opts.ssh,
            with_web: opts.http,
            reboot_down: opts.reboot_down,
        });
        fs::write(&env.webserver, node::WEBSERVER_PY).unwrap();

        // Nodes and their roots.
        let portage = (opts.real_portage && opts.ssh).then(super::portage::get);
        let mut nodes = Vec::new();
        for (i, s) in topo.sites.iter().enumerate() {
            for (f, farm) in s.farms.iter().enumerate() {
                // The first farm of every site runs the real web stack.
                let stack = if opts.real_web && f == 0 { WebStack::Real } else { WebStack::StandIn };
                for (m, profile) in farm.profiles.iter().enumerate() {
                    let name = topology::node_name(farm, m);
                    let n = Node::new(
                        name.clone(),
                        s.name.clone(),
                        farm.name.clone(),
                        m as u32 + 1,
                        profile.clone(),
                        plan.node_ip(i, f, m),
                        NODE_HTTP_PORT,
                        SSH_PORT,
                        dir.join("nodes").join(&name),
                        opts.memcached.then(|| plan.memcached(i, f)),
                        stack,
                        Arc::clone(&env),
                    );
                    let n = match portage {
                        Some(p) if f == 0 => n.with_real_portage(p),
                        _ => n,
                    };
                    let n = if opts.btrfs_farms.contains(&farm.name) { n.with_btrfs_root() } else { n };
                    n.seed(
                        &topology::binhost(plan, profile),
                        &opts.initial.atoms(),
                        &opts.initial.php,
                        &opts.initial.release,
                        &sources,
                    )
                    .unwrap_or_else(|e| panic!("seed node {name}: {e}"));
                    nodes.push(Arc::new(n));
                }
            }
        }

        let binhost = portage.map(|p| {
            let profiles: Vec<&str> = topology::PROFILES.iter().map(|(name, _)| *name).collect();
            super::portage::Binhost::start(&dir, plan.binhost(), &profiles, p).unwrap_or_else(|e| panic!("{e}"))
        });

        // Site directories: admin socket, server-state file, LB host sshd.
        let user = if opts.ssh { Some(node::node_user()) } else { None };
        let mut lb_files = Vec::new();
        for s in &topo.sites {
            let sdir = dir.join("sites").join(&s.name);
            fs::create_dir_all(sdir.join("pids")).unwrap();
            // The SSH user dumps the server state here before a reload.
            if let Some(u) = user {
                std::os::unix::fs::chown(&sdir, Some(u.uid), Some(u.gid)).unwrap();
            }
            lb_files
                .push((sdir.join("admin.sock").display().to_string(), sdir.join("server-state").display().to_string()));
        }
        let lb_ssh: Vec<Option<SocketAddr>> = topo
            .sites
            .iter()
            .enumerate()
            .map(|(i, s)| {
                (opts.ssh && opts.http && s.admin == Admin::UnixOverSsh)
                    .then(|| SocketAddr::new(plan.lb_ip(i).into(), SSH_PORT))
            })
            .collect();
        if opts.ssh {
            let mut lines = Vec::new();
            for n in &nodes {
                lines.push(node::known_hosts_line(&n.dir.join("sshd"), n.ssh).unwrap());
            }
            for (i, s) in topo.sites.iter().enumerate() {
                if let Some(addr) = lb_ssh[i] {
                    let sshd_dir = dir.join("sites").join(&s.name).join("sshd");
                    node::write_sshd_files(
                        &sshd_dir,
                        addr,
                        &authorized_keys,
                        &[("PATH", "/usr/bin:/bin".into()), ("DROVER_TEST_LB", s.name.clone())],
                    )
                    .unwrap();
                    lines.push(node::known_hosts_line(&sshd_dir, addr).unwrap());
                }
            }
            fs::write(&known_hosts, lines.join("\n") + "\n").unwrap();
        }

        // The spec, which must be valid.
        let spec_dir = dir.join("specs");
        fs::create_dir_all(&spec_dir).unwrap();
        let spec_paths = (php_src, rel_src, lb_files);
        let model = write_and_check_spec(&spec_dir, &topo, plan, &key, &known_hosts, &spec_paths, &opts.initial);

        // memcached per farm.
        let mut memcached = Vec::new();
        if opts.memcached {
            let bin = require_binary("memcached", "memcached");
            fs::create_dir_all(dir.join("memcached/pids")).unwrap();
            for (i, s) in topo.sites.iter().enumerate() {
                for (f, farm) in s.farms.iter().enumerate() {
                    memcached.push(start_memcached(&bin, &dir.join("memcached"), &farm.name, plan.memcached(i, f)));
                }
            }
        }

        // Node services, in parallel (python's start-up dominates).
        let chunk = nodes.len().div_ceil(4).max(1);
        thread::scope(|sc| {
            for part in nodes.chunks(chunk) {
                sc.spawn(move || {
                    for n in part {
                        n.power_on().unwrap_or_else(|e| panic!("start node {}: {e}", n.name));
                    }
                });
            }
        });

        // Site LBs, on exactly what `drover render haproxy` prints; in
        // parallel, since each waits for its first health checks (up to 1 s).
        let start_site = |i: usize, s: &topology::SiteTopo| {
            let sdir = dir.join("sites").join(&s.name);
            let lb_sshd = lb_ssh[i].map(|addr| {
                node::start_sshd(
                    &format!("lb-{}-sshd", s.name),
                    &sdir.join("sshd"),
                    addr,
                    &sshd,
                    &sdir.join("pids/sshd.pid"),
                )
                .unwrap_or_else(|e| panic!("{e}"))
            });
            let cfg = sdir.join("haproxy.cfg");
            render_haproxy(&spec_dir, &s.name, &cfg);
            let admin = match s.admin {
                Admin::UnixOverSsh => AdminAddr::Unix(sdir.join("admin.sock")),
                Admin::Tcp => AdminAddr::Tcp(plan.lb_admin_tcp(i)),
            };
            let mut binds = vec![plan.lb_frontend(i)];
            binds.extend((0..s.farms.len()).map(|f| plan.farm_listen(i, f)));
            if s.admin == Admin::Tcp {
                binds.push(plan.lb_admin_tcp(i));
            }
            let lb = SiteLb::start(
                &s.name,
                &sdir,
                cfg,
                sdir.join("server-state"),
                plan.lb_frontend(i),
                admin,
                binds,
                haproxy.clone(),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            Site { name: s.name.clone(), index: i, lb, lb_ssh: lb_ssh[i], lb_sshd }
        };
        let started: Vec<thread::Result<Site>> = thread::scope(|sc| {
            let handles: Vec<_> = topo
                .sites
                .iter()
                .enumerate()
                .filter(|_| opts.http)
                .map(|(i, s)| sc.spawn(move || start_site(i, s)))
                .collect();
            handles.into_iter().map(|h| h.join()).collect()
        });
        // On a failure, the sites that did start are dropped (stopped) here.
        let sites: Vec<Site> =
            started.into_iter().collect::<thread::Result<_>>().unwrap_or_else(|e| std::panic::resume_unwind(e));

        let supervisor = Some(Supervisor::start(nodes.clone()));
        let startup = t0.elapsed();
        eprintln!(
            "test fleet `{test}` on 127.{}.0.0/16 ({}): {} sites, {} nodes, started in {startup:.2?}",
            plan.slot,
            dir.display(),
            sites.len(),
            nodes.len()
        );
        TestFleet {
            plan,
            dir,
            topology: topo,
            spec_dir,
            model,
            key,
            known_hosts,
            sources,
            sites,
            nodes,
            startup,
            binhost,
            spec_paths,
            memcached,
            rsyncd,
            supervisor,
            _slot: slot,
        }
    }

    pub fn node(&self, name: &str) -> &Arc<Node> {
        self.nodes.iter().find(|n| n.name == name).unwrap_or_else(|| panic!("no node {name} in the test fleet"))
    }

    pub fn farm_nodes(&self, farm: &str) -> Vec<&Arc<Node>> {
        self.nodes.iter().filter(|n| n.farm == farm).collect()
    }

    pub fn site(&self, name: &str) -> &Site {
        self.sites.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no site {name} in the test fleet"))
    }

    pub fn site_mut(&mut self, name: &str) -> &mut Site {
        self.sites.iter_mut().find(|s| s.name == name).unwrap_or_else(|| panic!("no site {name} in the test fleet"))
    }

    /// Sessions through a site's HAProxy.
    pub fn loadgen(&self, site: &str, opts: LoadOptions) -> LoadGen {
        LoadGen::start(self.site(site).lb.frontend, opts)
    }

    /// Rewrites the spec with `target` as the fleet defaults (what drover
    /// should converge to); panics if drover finds it invalid.
    pub fn write_spec(&mut self, target: &Target) {
        self.model = write_and_check_spec(
            &self.spec_dir,
            &self.topology,
            self.plan,
            &self.key,
            &self.known_hosts,
            &self.spec_paths,
            target,
        );
    }

    /// The release hooks' directory (`hooks/migrate`): per environment its
    /// SQLite database `db-<env>.sqlite`, its log `log-<env>`, its fault
    /// switches `fail-<env>-<verb>` and `hold-<env>-<verb>`; `log-warm`.
    pub fn hooks_dir(&self) -> PathBuf {
        self.dir.join("hooks")
    }

    /// Puts a release into the rsync source (a broken one fails health checks).
    pub fn add_release(&self, id: &str, broken: bool) {
        write_release(&self.sources, id, broken);
    }

    /// Puts a PHP tree into the rsync source; a broken one has an invalid
    /// php-fpm.conf (`php-fpm -t` fails, and a reload onto it kills the master).
    pub fn add_php(&self, version: &str, broken: bool) {
        write_php_tree(&self.sources, version);
        if broken {
            let conf = self.sources.join("php").join(version).join("etc/php-fpm.conf");
            let mut text = fs::read_to_string(&conf).unwrap();
            text.push_str("; broken on purpose (TestFleet::add_php): no such process manager\npm = broken\n");
            fs::write(&conf, text).unwrap();
        }
    }

    /// The system `ssh` to `addr` as the node user: batch mode, strict host
    /// key checking against `known_hosts`, the fleet's key, no user config.
    pub fn ssh_command(&self, addr: SocketAddr, known_hosts: &Path) -> Command {
        let mut c = Command::new("ssh");
        c.args(["-F", "/dev/null", "-i"])
            .arg(&self.key)
            .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args(["-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR", "-p"])
            .arg(addr.port().to_string())
            .arg(format!("{NODE_USER}@{}", addr.ip()));
        c
    }

    /// Runs `command` on the host at `addr` over SSH.
    pub fn ssh(&self, addr: SocketAddr, command: &str) -> Output {
        self.ssh_command(addr, &self.known_hosts).arg(command).output().expect("run ssh")
    }

    pub fn memcached_addr(&self, farm: &str) -> SocketAddr {
        for (i, s) in self.topology.sites.iter().enumerate() {
            if let Some(f) = s.farms.iter().position(|f| f.name == farm) {
                return self.plan.memcached(i, f);
            }
        }
        panic!("no farm {farm}")
    }
}

impl Site {
    /// Cuts every SSH connection open to the LB host (as an sshd restart or
    /// a network drop would); the listener stays. Returns how many sessions went.
    pub fn cut_ssh_connections(&self) -> usize {
        let Some(d) = &self.lb_sshd else {
            return 0;
        };
        let sessions = procs::descendants(d.pid()).len();
        procs::kill_descendants(d.pid());
        sessions
    }
}

impl Drop for TestFleet {
    fn drop(&mut self) {
        // The supervisor first: it could restart services while we stop them.
        self.supervisor = None;
        for s in &self.sites {
            if let Some(d) = &s.lb_sshd {
                procs::kill_descendants(d.pid()); // open SSH sessions outlive the listener
            }
        }
        self.sites.clear();
        for n in &self.nodes {
            n.shut_down();
        }
        self.memcached.clear();
        self.rsyncd = None;
        if thread::panicking() {
            eprintln!(
                "test fleet 127.{}.0.0/16 stopped; its files and logs are kept in {}",
                self.plan.slot,
                self.dir.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn write_and_check_spec(
    spec_dir: &Path,
    topo: &Topology,
    plan: Plan,
    key: &Path,
    known_hosts: &Path,
    (php, releases, lb_files): &(String, String, Vec<(String, String)>),
    target: &Target,
) -> drover::model::Fleet {
    let text = topology::spec_yaml(
        topo,
        plan,
        &SpecPaths { known_hosts, identity: key, php_source: php, release_source: releases, lb_files },
        target,
    );
    let path = spec_dir.join("fleet.yaml");
    fs::write(&path, &text).unwrap();
    let files = [SourceFile { path: path.display().to_string(), text }];
    drover::spec::validate::check(&files).unwrap_or_else(|d| {
        panic!("the generated test-fleet spec is invalid:\n{}", drover::spec::diag::render(&d, &files))
    })
}

/// `drover render haproxy --site <site> --out <cfg>`: the binary, so the
/// fleet's LBs run exactly what the command prints.
fn render_haproxy(spec_dir: &Path, site: &str, cfg: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["render", "haproxy", "--site", site, "--specs"])
        .arg(spec_dir)
        .arg("--out")
        .arg(cfg)
        .output()
        .expect("run drover render haproxy");
    assert!(
        out.status.success(),
        "drover render haproxy --site {site} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A PHP tree of the contract: `sbin/php-fpm` (a copy of Debian's
/// php-fpm8.2, so that PHP_BINARY names the tree), `etc/php-fpm.conf` and
/// `etc/php.ini`, whose `user_agent` is the tree's marker (the test
/// "versions" are the same binary).
fn write_php_tree(sources: &Path, version: &str) {
    let d = sources.join("php").join(version);
    fs::create_dir_all(d.join("sbin")).unwrap();
    fs::create_dir_all(d.join("etc")).unwrap();
    fs::write(d.join("VERSION"), format!("{version}\n")).unwrap();
    let fpm = require_binary("php-fpm8.2", "php8.2-fpm");
    fs::copy(&fpm, d.join("sbin/php-fpm")).unwrap_or_else(|e| panic!("copy {}: {e}", fpm.display()));
    fs::set_permissions(d.join("sbin/php-fpm"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(d.join("etc/php-fpm.conf"), node::PHP_FPM_CONF.replace("@VERSION@", version)).unwrap();
    fs::write(d.join("etc/php.ini"), node::PHP_INI.replace("@VERSION@", version)).unwrap();
}

/// The release hooks every test release carries (`bin/migrate`, `bin/warm`),
/// `@HOOKS@` standing for the fleet's `hooks/` directory.
const MIGRATE: &str = include_str!("hooks/migrate");
const WARM: &str = include_str!("hooks/warm");

/// A release: the PHP app (`public/index.php` front controller,
/// `public/health.php`, `lib/`), its marker in `lib/release.php`, a static
/// `public/release.txt`, the hooks `bin/migrate` and `bin/warm` (on the
/// fleet's `hooks/` databases and logs); a broken one has a `BROKEN` file
/// (every PHP page 500).
fn write_release(sources: &Path, id: &str, broken: bool) {
    let d = sources.join("releases").join(id);
    let hooks = sources.parent().expect("sources live in the fleet directory").join("hooks");
    fs::create_dir_all(d.join("bin")).unwrap();
    for (name, text) in [("migrate", MIGRATE), ("warm", WARM)] {
        let p = d.join("bin").join(name);
        fs::write(&p, text.replace("@HOOKS@", &hooks.display().to_string())).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::create_dir_all(d.join("lib")).unwrap();
    fs::create_dir_all(d.join("public")).unwrap();
    fs::write(d.join("RELEASE"), format!("{id}\n")).unwrap();
    fs::write(d.join("lib/release.php"), format!("<?php\nreturn '{id}';\n")).unwrap();
    fs::write(d.join("lib/app.php"), node::APP_PHP).unwrap();
    fs::write(d.join("public/index.php"), node::INDEX_PHP).unwrap();
    fs::write(d.join("public/health.php"), node::HEALTH_PHP).unwrap();
    fs::write(d.join("public/release.txt"), format!("release={id}\n")).unwrap();
    if broken {
        fs::write(d.join("BROKEN"), "this release fails its health check\n").unwrap();
    }
}

fn start_memcached(bin: &Path, dir: &Path, farm: &str, addr: SocketAddr) -> Daemon {
    ensure_free(addr, &format!("memcached of farm {farm}")).unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = Command::new(bin);
    cmd.arg("-l")
        .arg(addr.ip().to_string())
        .arg("-p")
        .arg(addr.port().to_string())
        .args(["-U", "0", "-t", "1", "-m", "16", "-c", "512", "-u", "nobody"]);
    let mut d = Daemon::spawn(
        &format!("memcached-{farm}"),
        &mut cmd,
        &dir.join(format!("pids/{farm}.pid")),
        &dir.join(format!("{farm}.log")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    wait_listening(&mut d, addr).unwrap_or_else(|e| panic!("{e}"));
    d
}

fn start_rsyncd(dir: &Path, sources: &Path, addr: SocketAddr) -> Daemon {
    let bin = require_binary("rsync", "rsync");
    ensure_free(addr, "rsync daemon").unwrap_or_else(|e| panic!("{e}"));
    let rdir = dir.join("rsyncd");
    fs::create_dir_all(rdir.join("pids")).unwrap();
    let conf = rdir.join("rsyncd.conf");
    fs::write(
        &conf,
        format!(
            "# rsync daemon of a drover test fleet: the PHP and release sources.\n\
             use chroot = no\n\
             uid = nobody\n\
             gid = nogroup\n\
             read only = yes\n\
             [php]\n\
             \x20   path = {src}/php\n\
             [releases]\n\
             \x20   path = {src}/releases\n",
            src = sources.display()
        ),
    )
    .unwrap();
    let IpAddr::V4(ip) = addr.ip() else { unreachable!() };
    let mut cmd = Command::new(bin);
    cmd.arg("--daemon")
        .arg("--no-detach")
        .arg(format!("--config={}", conf.display()))
        .arg(format!("--address={ip}"))
        .arg(format!("--port={}", addr.port()))
        .arg(format!("--log-file={}", rdir.join("rsyncd.log").display()));
    let mut d = Daemon::spawn("rsyncd", &mut cmd, &rdir.join("pids/rsyncd.pid"), &rdir.join("rsyncd.out"))
        .unwrap_or_else(|e| panic!("{e}"));
    wait_listening(&mut d, addr).unwrap_or_else(|e| panic!("{e}"));
    d
}

/// drover's own executor (`RealFleet`, what `drover reconcile` drives) on
/// this fleet for `model` (the fleet's spec, or a variant of it), connected
/// and observed once, with its SSH masters under `<fleet>/<name>`.
pub fn real_executor(
    fleet: &TestFleet,
    name: &str,
    model: Arc<drover::model::Fleet>,
    rt: &tokio::runtime::Runtime,
) -> drover::real::fleet::RealFleet {
    use drover::real::ssh::{Pool, SshConfig};
    let dir = fleet.dir.join(name);
    let pool = Pool::new(SshConfig {
        user: topology::NODE_USER.into(),
        identity: Some(fleet.key.clone()),
        known_hosts: fleet.known_hosts.clone(),
        connect_timeout: Duration::from_secs(10),
        command_timeout: Duration::from_secs(120),
        max_concurrency: 8,
        control_dir: dir.join("ssh"),
    })
    .expect("drover's ssh pool");
    let settings = drover::real::fleet::Settings {
        reboot_timeout: Duration::from_secs(60),
        io_timeout: Duration::from_secs(5),
        package_timeout: Duration::from_secs(300),
        runtime_dir: dir.join("run"),
        up_timeout: Duration::from_secs(30),
    };
    let real = rt
        .block_on(drover::real::fleet::RealFleet::connect(model, Arc::new(pool), settings, None))
        .expect("drover connects to the test fleet");
    rt.block_on(real.observe()).expect("drover observes the test fleet");
    real
}
