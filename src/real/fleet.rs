//! The real fleet behind the planner: observation (the probe on every node,
//! every site LB's runtime API, every farm's memcached) and the execution of
//! each `Action` over SSH, the runtime API, memcached and HTTP.
//!
//! Remote commands are argument vectors (quoted for the remote shell by
//! `openssh`); the only scripts are constants here and in `probe.sh`, and
//! values reach them as positional parameters.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::cache;
use super::haproxy::{Lb, LbError, Snapshot};
use super::health::{Checker, Expect};
use super::hooks;
use super::probe::{self, Probe};
use super::ssh::{Pool, RemoteError};
use crate::diff::Disruption;
use crate::model::{Atom, FarmId, Fleet, InitSystem, NodeId, PhpVersion, ReleaseId};
use crate::observe::{Admin, FarmObs, Health, LbServer, NodeObs, Observed, SiteObs, Str};
use crate::plan::action::{Action, Outcome};

/// Stages a tree atomically: rsync into a hidden directory beside the
/// target, then rename it into place. `$1` source URL, `$2` directory, `$3` name.
/// One stage at a time per directory (`flock` on it): a stage a killed
/// drover left running on the node goes on, and a second one in the same
/// hidden directory would pull it from under the first.
const STAGE: &str = r#"set -eu
src=$1 dir=$2 name=$3
tmp="$dir/.partial-$name"
mkdir -p "$dir"
exec 9<"$dir"
flock 9
rsync -a --delete -- "$src" "$tmp/"
rm -rf -- "${dir:?}/$name"
mv -- "$tmp" "$dir/$name""#;

/// The PHP-FPM part of a switch, sourced by `ACTIVATE` and `RELOAD`.
/// `fpm_test DIR`: PHP-FPM's own configuration test of the tree DIR, run as
/// the master would be (its binary, `php-fpm.conf` and `php.ini` under DIR).
/// `reload INIT`: the test through `current` (the exact paths the master
/// re-executes), then the node's clock in epoch seconds on stdout (every
/// worker must start at or after it), then a reload (SIGUSR2 to the master,
/// started through `/opt/php/current`: it re-executes the new tree). Never a
/// restart, and never a reload onto a configuration PHP-FPM rejects: the
/// master would exit and the node answer 503 until someone starts it.
const FPM: &str = r#"set -u
fpm_test() {
  if ! out=$(sudo -n "$1/sbin/php-fpm" -t --fpm-config "$1/etc/php-fpm.conf" -c "$1/etc/php.ini" 2>&1); then
    printf 'php-fpm -t rejects the PHP tree %s:\n%s\n' "$1" "$out" >&2
    return 1
  fi
}
reload() {
  fpm_test "$R/opt/php/current" || return 3
  date +%s
  case $1 in
  openrc) sudo -n rc-service php-fpm reload ;;
  *) sudo -n systemctl reload php-fpm ;;
  esac || { echo "the PHP-FPM reload failed" >&2; return 4; }
}
"#;

/// Switches a node to a PHP tree and/or a release: `$1` node root prefix,
/// `$2` PHP version or empty, `$3` release id or empty, `$4` init system.
/// The new PHP tree is tested before anything changes; both links are
/// swapped atomically (new link renamed over the old one); the test through
/// `current` must pass or both links are put back; then the reload.
/// Exit 2: the new tree is rejected (nothing changed); 3: rejected through
/// `current` (links put back); 4: the reload failed.
const ACTIVATE: &str = r#"R=$1 php=$2 rel=$3
swap() { ln -sfn -- "$1" "$2.drover-new" && mv -T -- "$2.drover-new" "$2"; }
old_php=$(readlink -- "$R/opt/php/current") || old_php=
old_rel=$(readlink -- "$R/srv/app/current") || old_rel=
if [ -n "$php" ]; then fpm_test "$R/opt/php/$php" || exit 2; fi
if [ -n "$php" ]; then swap "$php" "$R/opt/php/current" || exit 1; fi
if [ -n "$rel" ]; then swap "releases/$rel" "$R/srv/app/current" || exit 1; fi
if ! fpm_test "$R/opt/php/current"; then
  if [ -n "$php" ] && [ -n "$old_php" ]; then swap "$old_php" "$R/opt/php/current"; fi
  if [ -n "$rel" ] && [ -n "$old_rel" ]; then swap "$old_rel" "$R/srv/app/current"; fi
  echo "the links are back on ${old_php:-?} and ${old_rel:-?}" >&2
  exit 3
fi
reload "$4""#;

/// Reloads PHP-FPM after testing its configuration: `$1` node root prefix,
/// `$2` init system.
const RELOAD: &str = r#"R=$1
reload "$2""#;

/// A switch script: the shared PHP-FPM functions, then `body`.
fn script(body: &str) -> String {
    format!("{FPM}{body}")
}

/// Knobs of the real executor (command line and defaults).
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long a rebooting node may take to come back with a new boot id.
    pub reboot_timeout: Duration,
    /// Timeout of one LB or memcached exchange.
    pub io_timeout: Duration,
    /// Timeout of one package command (emerge can take minutes).
    pub package_timeout: Duration,
    /// Where forwarded LB sockets live.
    pub runtime_dir: PathBuf,
    /// How long a server put back to ready may take to pass its health checks.
    pub up_timeout: Duration,
}

/// Why an observation could not be made at all (a node that does not
/// answer is not an error: it is observed as unreachable).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ObserveError {
    #[error("site `{site}`: {error}")]
    Lb { site: String, error: LbError },
    #[error(
        "site `{site}`: HAProxy has no server `{proxy}/{server}` for {what}: render the LB configuration from the spec (`drover render haproxy --site {site}`) and reload HAProxy"
    )]
    Missing { site: String, proxy: String, server: String, what: String },
}

pub struct RealFleet {
    pub fleet: Arc<Fleet>,
    pub pool: Arc<Pool>,
    pub lbs: Vec<Lb>,
    pub settings: Settings,
    health: Checker,
    /// Warm-up requests to switched nodes (`hooks::Warmup`).
    warmup_client: reqwest::Client,
    /// Last probe of each node (its root prefix and releases).
    probes: Mutex<HashMap<NodeId, Probe>>,
    /// Last health check result of each node (reset when it changes).
    health_results: Mutex<HashMap<NodeId, Health>>,
    /// The node's clock right before this process last reloaded its
    /// PHP-FPM (the health check's worker-age proof).
    reloaded_at: Mutex<HashMap<NodeId, i64>>,
    /// `category/name` of every package the targets track, plus kernels.
    tracked: BTreeSet<String>,
    /// Last failure per node, to report why it is unreachable.
    pub last_errors: Mutex<HashMap<NodeId, String>>,
}

impl RealFleet {
    /// Connects the site LBs (forwarding unix sockets over SSH where the spec says so).
    /// Connects every site's LB. With `previous` (the side of the spec in
    /// force, on the same pool), a site whose LB is reached the same way keeps
    /// its connection (its forwarded socket) instead of opening another.
    pub async fn connect(
        fleet: Arc<Fleet>,
        pool: Arc<Pool>,
        settings: Settings,
        previous: Option<&RealFleet>,
    ) -> Result<RealFleet, String> {
        let mut lbs = Vec::new();
        for site in &fleet.sites {
            let kept = previous.and_then(|p| {
                let mut same = p.fleet.sites.iter().zip(&p.lbs);
                same.find(|(s, _)| s.name == site.name && s.lb.api == site.lb.api).map(|(_, lb)| lb.clone())
            });
            let lb = match kept {
                Some(lb) => lb,
                None => Lb::connect(&site.name, &site.lb, &pool, &settings.runtime_dir, settings.io_timeout)
                    .await
                    .map_err(|e| format!("site `{}`: {e}", site.name))?,
            };
            lbs.push(lb);
        }
        let health = Checker::new(&fleet.policy.health)?;
        let warmup_client = hooks::client(fleet.policy.warmup.timeout)?;
        let tracked = fleet.targets.iter().flat_map(|t| t.packages.iter().map(Atom::key)).collect();
        Ok(RealFleet {
            fleet,
            pool,
            lbs,
            settings,
            health,
            warmup_client,
            probes: Mutex::new(HashMap::new()),
            health_results: Mutex::new(HashMap::new()),
            reloaded_at: Mutex::new(HashMap::new()),
            tracked,
            last_errors: Mutex::new(HashMap::new()),
        })
    }

    pub(super) fn node_addr(&self, n: NodeId) -> (&str, u16) {
        let node = &self.fleet.nodes[n as usize];
        (&node.address, node.ssh_port)
    }

    /// Observes the whole fleet: every node probed at once, every LB read.
    pub async fn observe(&self) -> Result<Observed, ObserveError> {
        let fleet = &*self.fleet;
        let targets: Vec<(String, u16)> = fleet.nodes.iter().map(|n| (n.address.clone(), n.ssh_port)).collect();
        let probing = probe::probe_all(&self.pool, &targets);
        let reading = futures::future::join_all(self.lbs.iter().map(|lb| lb.snapshot()));
        let caches = futures::future::join_all(
            fleet.farms.iter().map(|f| cache::reachable(&f.memcached, self.settings.io_timeout)),
        );
        let (probes, snaps, caches) = futures::join!(probing, reading, caches);
        let mut snapshots: Vec<Snapshot> = Vec::new();
        for (site, snap) in fleet.sites.iter().zip(snaps) {
            snapshots.push(snap.map_err(|error| ObserveError::Lb { site: site.name.clone(), error })?);
        }
        let server = |site: usize, proxy: &str, server: &str, what: String| -> Result<LbServer, ObserveError> {
            snapshots[site].servers.get(&(proxy.to_string(), server.to_string())).map(|s| s.lb()).ok_or_else(|| {
                ObserveError::Missing {
                    site: fleet.sites[site].name.clone(),
                    proxy: proxy.into(),
                    server: server.into(),
                    what,
                }
            })
        };
        let mut nodes = Vec::with_capacity(fleet.nodes.len());
        let mut kept = self.probes.lock().unwrap();
        let health = self.health_results.lock().unwrap();
        let mut errors = self.last_errors.lock().unwrap();
        for (i, (node, result)) in fleet.nodes.iter().zip(probes).enumerate() {
            let n = i as NodeId;
            let farm = &fleet.farms[node.farm as usize];
            let lb = server(node.site as usize, &farm.name, &node.name, format!("node `{}`", node.name))?;
            let health = health.get(&n).copied().unwrap_or(Health::Unknown);
            nodes.push(match result {
                Ok(p) => {
                    errors.remove(&n);
                    let obs = self.node_obs(&p, lb, health);
                    kept.insert(n, p);
                    obs
                }
                Err(e) => {
                    // The error alone: reports add the node's name and address.
                    errors.insert(n, e.to_string());
                    // What it ran when last seen; a node never seen in this
                    // run is taken to be at its target, so that a silent node
                    // cannot start farm-level work. Either way it is reported
                    // unreachable, and fails after `unreachable_timeout`.
                    let mut obs = match kept.get(&n) {
                        Some(p) => self.node_obs(p, lb, health),
                        None => at_target(fleet, n, lb),
                    };
                    obs.reachable = false;
                    obs
                }
            });
        }
        let mut farms = Vec::with_capacity(fleet.farms.len());
        for (f, reachable) in fleet.farms.iter().zip(caches) {
            let site = &fleet.sites[f.site as usize];
            let lb = server(f.site as usize, &site.lb.backend, &f.lb_server, format!("farm `{}`", f.name))?;
            let current = snapshots[f.site as usize]
                .servers
                .get(&(site.lb.backend.clone(), f.lb_server.clone()))
                .map(|s| s.current)
                .unwrap_or(0);
            farms.push(FarmObs { lb, sessions: current, memcached_reachable: reachable });
        }
        // HAProxy counts connections, not user sessions: its `rate` of new
        // connections would be read as thousands of new user sessions per
        // second. Load is measured as what the farms carry now (above).
        let sites = fleet.sites.iter().map(|_| SiteObs { arrivals_per_s: 0.0, lb_reachable: true }).collect();
        Ok(Observed { nodes, farms, sites })
    }

    fn node_obs(&self, p: &Probe, lb: LbServer, health: Health) -> NodeObs {
        let keep = |k: &str| self.tracked.contains(k) || k.starts_with("sys-kernel/");
        let pair = |(k, v): &(String, String)| (Str::from(k.as_str()), Str::from(v.as_str()));
        NodeObs {
            reachable: true,
            busy: p.merging,
            packages: p.packages.iter().filter(|(k, _)| keep(k)).map(pair).collect(),
            fetched: p.fetched.iter().filter(|(k, _)| keep(k)).map(pair).collect(),
            kernel_running: p.kernel_running.as_deref().map(Str::from),
            kernel_installed: p.kernel_installed.as_deref().map(Str::from),
            boot_id: Str::from(p.boot_id.as_str()),
            php_installed: p.php_installed.clone(),
            php_active: p.php_active.clone(),
            releases_installed: p.releases_installed.clone(),
            release_active: p.release_active.clone(),
            lb,
            health,
        }
    }

    pub(super) fn root(&self, n: NodeId) -> String {
        self.probes.lock().unwrap().get(&n).map(|p| p.root.clone()).unwrap_or_default()
    }

    fn set_health(&self, n: NodeId, h: Health) {
        self.health_results.lock().unwrap().insert(n, h);
    }

    /// Runs one action to its end.
    pub async fn execute(&self, action: &Action) -> Outcome {
        match self.try_execute(action).await {
            Ok(()) => Outcome::Ok,
            Err(e) => Outcome::Failed(e),
        }
    }

    async fn try_execute(&self, action: &Action) -> Result<(), String> {
        let fleet = &*self.fleet;
        match action {
            Action::Fetch { node, atoms } => self.emerge(*node, atoms, true).await,
            Action::InstallOnline { node, atoms } => self.emerge(*node, atoms, false).await,
            Action::StagePhp { node, version } => {
                let src = fleet.sources.php.as_deref().ok_or("the spec names no PHP source (fleet.sources.php)")?;
                let root = self.root(*node);
                self.stage(*node, &format!("{src}/{version}/"), &format!("{root}/opt/php"), &version.0).await
            }
            Action::StageRelease { node, release } => {
                let src = fleet
                    .sources
                    .releases
                    .as_deref()
                    .ok_or("the spec names no release source (fleet.sources.releases)")?;
                let root = self.root(*node);
                self.stage(*node, &format!("{src}/{release}/"), &format!("{root}/srv/app/releases"), &release.0).await
            }
            Action::SetNode { node, admin } => {
                let n = &fleet.nodes[*node as usize];
                let farm = &fleet.farms[n.farm as usize];
                let lb = &self.lbs[n.site as usize];
                lb.set_state(&farm.name, &n.name, *admin).await.map_err(|e| e.to_string())?;
                // Back in service means serving: HAProxy needs its `rise`
                // checks first, and the next wave must not start before.
                if *admin == Admin::Ready {
                    lb.wait_up(&farm.name, &n.name, self.settings.up_timeout).await.map_err(|e| e.to_string())?;
                }
                Ok(())
            }
            Action::Upgrade { node, atoms, disruption } => self.upgrade(*node, atoms, disruption).await,
            Action::Activate { node, php, release, .. } => self.activate(*node, php.as_ref(), release.as_ref()).await,
            Action::HealthCheck { node } => {
                let n = &fleet.nodes[*node as usize];
                let target = fleet.node_target(*node);
                let expect =
                    |reloaded_at| Expect { release: Some(&target.release), php: Some(&target.php), reloaded_at };
                let since = self.reloaded_at.lock().unwrap().get(node).copied();
                let mut r = self.health.check(&n.address, n.http_port, expect(since)).await;
                // The links point at the target but PHP does not serve it,
                // and this drover did not reload PHP-FPM since: the reload
                // was lost (drover killed between the link swap and the
                // reload). The node is out of service in its window: test
                // the configuration, reload, and check again.
                if r.is_err() && since.is_none() {
                    self.reload(*node).await?;
                    let since = self.reloaded_at.lock().unwrap().get(node).copied();
                    r = self.health.check(&n.address, n.http_port, expect(since)).await;
                }
                self.set_health(*node, if r.is_ok() { Health::Passing } else { Health::Failing });
                r.map_err(|e| format!("{}: {e}", n.name))
            }
            Action::SetFarm { farm, admin } => {
                let (lb, backend, server) = self.farm_server(*farm);
                if *admin == Admin::Ready {
                    // The farm's own listener must see its nodes up first:
                    // after a reboot or restart HAProxy needs `rise` checks,
                    // and a pseudo-server leaving maint may show a stale UP
                    // until its first check finds no usable node.
                    let f = &fleet.farms[*farm as usize];
                    lb.wait_nodes_up(&f.name, self.settings.up_timeout)
                        .await
                        .map_err(|e| format!("farm `{}`: {e}", f.name))?;
                }
                lb.set_state(backend, server, *admin).await.map_err(|e| e.to_string())?;
                if *admin == Admin::Ready {
                    lb.set_weight(backend, server, fleet.farms[*farm as usize].lb_weight)
                        .await
                        .map_err(|e| e.to_string())?;
                    // The farm carries sessions only once its pseudo-server passes its checks.
                    lb.wait_up(backend, server, self.settings.up_timeout).await.map_err(|e| e.to_string())?;
                }
                Ok(())
            }
            Action::SetFarmWeight { farm, weight } => {
                let (lb, backend, server) = self.farm_server(*farm);
                lb.set_weight(backend, server, *weight).await.map_err(|e| e.to_string())
            }
            Action::FlushCache { farm } => {
                let f = &fleet.farms[*farm as usize];
                cache::flush_all(&f.memcached, self.settings.io_timeout)
                    .await
                    .map_err(|e| format!("farm `{}`: {e}", f.name))
            }
            Action::MarkFailed { .. } => Ok(()),
            Action::Snapshot { node, name } => self.snapshot(*node, name).await,
            Action::Migrate { node, release, phase, resume } => {
                let hook = fleet.migration_hook(release, *phase).ok_or_else(|| {
                    format!("release {release} declares no {} hook (releases[].hooks.{})", phase.name(), phase.name())
                })?;
                let root = self.root(*node);
                let call = self.hook_call(*node, &root, release, hook);
                hooks::migrate(&call, *phase, *resume, fleet.policy.migrations.timeout).await
            }
            Action::Warmup { node } => {
                let n = &fleet.nodes[*node as usize];
                let release = &fleet.node_target(*node).release;
                let root = self.root(*node);
                let hook = fleet.releases.get(release).and_then(|h| h.warmup.as_deref());
                let policy = &fleet.policy.warmup;
                let warmup = hooks::Warmup {
                    client: &self.warmup_client,
                    address: &n.address,
                    http_port: n.http_port,
                    paths: &policy.paths,
                    concurrency: policy.concurrency,
                    min_success: policy.min_success,
                    limit: policy.timeout,
                    hook: hook.map(|h| self.hook_call(*node, &root, release, h)),
                };
                warmup.run(&n.name).await
            }
        }
    }

    /// A release hook's run on node `n` (`hooks::HOOK`).
    fn hook_call<'a>(&'a self, n: NodeId, root: &'a str, release: &'a ReleaseId, hook: &'a str) -> hooks::Call<'a> {
        let node = &self.fleet.nodes[n as usize];
        let site = &self.fleet.sites[node.site as usize];
        hooks::Call {
            pool: &self.pool,
            host: &node.address,
            port: node.ssh_port,
            root,
            node: &node.name,
            site: &site.name,
            farm: &self.fleet.farms[node.farm as usize].name,
            environment: site.environment,
            release,
            hook,
        }
    }

    fn farm_server(&self, farm: FarmId) -> (&Lb, &str, &str) {
        let f = &self.fleet.farms[farm as usize];
        let site = &self.fleet.sites[f.site as usize];
        (&self.lbs[f.site as usize], &site.lb.backend, &f.lb_server)
    }

    pub(super) async fn run(
        &self,
        n: NodeId,
        program: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<String, String> {
        let (host, port) = self.node_addr(n);
        let name = &self.fleet.nodes[n as usize].name;
        self.pool
            .run_with_timeout(host, port, program, args, timeout)
            .await
            .map(|d| d.stdout)
            .map_err(|e: RemoteError| format!("node {name}: {e}"))
    }

    /// `emerge` of exact binary packages from the node's profile binhost.
    /// `--usepkgonly --getbinpkg`: a missing binary package fails instead of
    /// compiling on a web node; `--oneshot`: the world file is the
    /// operator's, drover pins versions in the spec.
    async fn emerge(&self, n: NodeId, atoms: &[Atom], fetch_only: bool) -> Result<(), String> {
        let node = &self.fleet.nodes[n as usize];
        let binhost = format!("PORTAGE_BINHOST={}", self.fleet.profiles[node.profile as usize].binhost);
        let atoms: Vec<String> = atoms.iter().map(|a| format!("={a}")).collect();
        // `sudo VAR=value command`: sudo sets PORTAGE_BINHOST for emerge
        // only (sudoers: `env_keep += PORTAGE_BINHOST` for emerge), so the
        // node's sudoers never has to allow `env`, which would run anything.
        let mut args: Vec<&str> = vec!["-n", &binhost, "emerge"];
        if fetch_only {
            args.push("--fetchonly");
        }
        args.extend(["--usepkgonly", "--getbinpkg", "--oneshot", "--color=n", "--nospinner"]);
        args.extend(atoms.iter().map(String::as_str));
        self.run(n, "sudo", &args, self.settings.package_timeout).await.map(drop)
    }

    async fn stage(&self, n: NodeId, src: &str, dir: &str, name: &str) -> Result<(), String> {
        self.run(n, "sh", &["-c", STAGE, "drover-stage", src, dir, name], self.settings.package_timeout).await.map(drop)
    }

    async fn service(&self, n: NodeId, service: &str, verb: &str) -> Result<(), String> {
        let init = self.fleet.profiles[self.fleet.nodes[n as usize].profile as usize].init;
        let timeout = self.pool.config().command_timeout;
        match init {
            InitSystem::Openrc => self.run(n, "sudo", &["-n", "rc-service", service, verb], timeout).await,
            InitSystem::Systemd => self.run(n, "sudo", &["-n", "systemctl", verb, service], timeout).await,
        }
        .map(drop)
    }

    /// Tests PHP-FPM's configuration and reloads it (`RELOAD`), keeping the
    /// node's clock before the reload for the health check's worker-age proof.
    async fn reload(&self, n: NodeId) -> Result<(), String> {
        let root = self.root(n);
        let init = self.init_name(n);
        let out =
            self.run(n, "sh", &["-c", &script(RELOAD), "drover-reload", &root, init], self.switch_timeout()).await?;
        self.reloaded(n, &out)
    }

    fn init_name(&self, n: NodeId) -> &'static str {
        match self.fleet.profiles[self.fleet.nodes[n as usize].profile as usize].init {
            InitSystem::Openrc => "openrc",
            InitSystem::Systemd => "systemd",
        }
    }

    /// A switch waits for PHP-FPM's reload, which waits for requests in
    /// flight up to its `process_control_timeout`.
    fn switch_timeout(&self) -> Duration {
        self.pool.config().command_timeout.max(Duration::from_secs(60))
    }

    /// Keeps the node clock a switch script printed before its reload.
    fn reloaded(&self, n: NodeId, stdout: &str) -> Result<(), String> {
        let name = &self.fleet.nodes[n as usize].name;
        let at = stdout.lines().rev().find_map(|l| l.trim().parse::<i64>().ok()).ok_or_else(|| {
            format!("node {name}: the switch did not report the node's clock before the reload (stdout {stdout:?})")
        })?;
        self.reloaded_at.lock().unwrap().insert(n, at);
        Ok(())
    }

    async fn upgrade(&self, n: NodeId, atoms: &[Atom], disruption: &Disruption) -> Result<(), String> {
        if !atoms.is_empty() {
            self.emerge(n, atoms, false).await?;
        }
        if disruption.reboot {
            return self.reboot(n).await;
        }
        for s in &disruption.restart {
            self.service(n, s, "restart").await?;
        }
        Ok(())
    }

    /// `reboot`, then wait for the node to answer with a new boot id and
    /// running the kernel it installed.
    async fn reboot(&self, n: NodeId) -> Result<(), String> {
        self.reboot_and_wait(n, true).await
    }

    /// `reboot`, then wait for the node to answer with a new boot id; with
    /// `installed_kernel`, it must run the kernel it installed (a rolled-back
    /// root may list another kernel than the one `/boot` holds: not then).
    /// A node is back once its init says php-fpm is started: sshd answers
    /// while the boot still starts the rest, and a reload sent then fails
    /// with "php-fpm is not running".
    pub(super) async fn reboot_and_wait(&self, n: NodeId, installed_kernel: bool) -> Result<(), String> {
        let name = self.fleet.nodes[n as usize].name.clone();
        let (host, port) = self.node_addr(n);
        let before = probe::probe(&self.pool, host, port).await.map_err(|e| format!("node {name}: {e}"))?;
        // The connection may drop before `reboot` answers: that is success
        // too. Never a second `reboot` on a new connection: it could land
        // after the node came back.
        let timeout = self.pool.config().command_timeout;
        if let Err(e) = self.pool.run_once_with_timeout(host, port, "sudo", &["-n", "reboot"], timeout).await
            && !matches!(e.kind, super::ssh::RemoteErrorKind::Lost(_) | super::ssh::RemoteErrorKind::Timeout(_))
        {
            return Err(format!("node {name}: {e}"));
        }
        let deadline = Instant::now() + self.settings.reboot_timeout;
        let mut last = String::from("no answer yet");
        let mut booted = false;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if Instant::now() > deadline {
                return Err(format!(
                    "node {name}: did not come back from reboot within {} ({last})",
                    humantime::format_duration(self.settings.reboot_timeout)
                ));
            }
            if !booted {
                self.pool.forget(host, port).await;
                match probe::probe(&self.pool, host, port).await {
                    Ok(p) if p.boot_id != before.boot_id => {
                        if installed_kernel && p.kernel_running != p.kernel_installed {
                            return Err(format!(
                                "node {name}: rebooted into {} instead of the installed kernel {}",
                                p.kernel_running.as_deref().unwrap_or("?"),
                                p.kernel_installed.as_deref().unwrap_or("?")
                            ));
                        }
                        self.probes.lock().unwrap().insert(n, p);
                        booted = true;
                    }
                    Ok(_) => {
                        last = "still the old boot id".into();
                        continue;
                    }
                    Err(e) => {
                        last = e.to_string();
                        continue;
                    }
                }
            }
            match self.service(n, "php-fpm", "status").await {
                Ok(()) => return Ok(()),
                Err(e) => last = format!("back with a new boot id, php-fpm not started yet: {e}"),
            }
        }
    }

    /// Switches the PHP tree and/or the release (`ACTIVATE`: PHP-FPM's
    /// configuration tested before and after the links move, the links put
    /// back if it is rejected, a reload, never a restart), then prunes old
    /// releases. The health check that follows proves the switch.
    async fn activate(&self, n: NodeId, php: Option<&PhpVersion>, release: Option<&ReleaseId>) -> Result<(), String> {
        let root = self.root(n);
        let init = self.init_name(n);
        let php_arg = php.map(|v| v.0.to_string()).unwrap_or_default();
        let rel_arg = release.map(|r| r.0.to_string()).unwrap_or_default();
        self.set_health(n, Health::Unknown);
        self.reloaded_at.lock().unwrap().remove(&n);
        let args = ["-c", &script(ACTIVATE), "drover-activate", &root, &php_arg, &rel_arg, init];
        let out = self.run(n, "sh", &args, self.switch_timeout()).await?;
        self.reloaded(n, &out)?;
        if let Some(r) = release {
            self.prune(n, &root, r).await?;
        }
        Ok(())
    }

    /// Keeps the newest `releases_kept` releases (and always the active one).
    async fn prune(&self, n: NodeId, root: &str, active: &ReleaseId) -> Result<(), String> {
        let keep = self.fleet.policy.releases_kept.max(1) as usize;
        let mut installed =
            self.probes.lock().unwrap().get(&n).map(|p| p.releases_installed.clone()).unwrap_or_default();
        if !installed.contains(active) {
            installed.push(active.clone());
        }
        installed.sort();
        let excess = installed.len().saturating_sub(keep);
        let doomed: Vec<String> = installed
            .iter()
            .take(excess)
            .filter(|r| *r != active)
            .map(|r| format!("{root}/srv/app/releases/{r}"))
            .collect();
        if doomed.is_empty() {
            return Ok(());
        }
        let mut args = vec!["-rf", "--"];
        args.extend(doomed.iter().map(String::as_str));
        self.run(n, "rm", &args, self.pool.config().command_timeout).await.map(drop)
    }
}

/// A node's observation as if it ran its target (for a node never seen).
fn at_target(fleet: &Fleet, n: NodeId, lb: LbServer) -> NodeObs {
    let t = fleet.node_target(n);
    let packages = crate::observe::packages_of(t);
    let kernel = t
        .packages
        .iter()
        .find(|a| &*a.category == "sys-kernel")
        .map(|a| Str::from(probe::kernel_release(&a.key(), &a.version).as_str()));
    NodeObs {
        reachable: false,
        busy: false,
        packages,
        fetched: Vec::new(),
        kernel_running: kernel.clone(),
        kernel_installed: kernel,
        boot_id: Str::from(""),
        php_installed: vec![t.php.clone()],
        php_active: Some(t.php.clone()),
        releases_installed: vec![t.release.clone()],
        release_active: Some(t.release.clone()),
        lb,
        health: Health::Unknown,
    }
}

impl crate::control::Fleetside for RealFleet {
    fn fleet(&self) -> Arc<Fleet> {
        Arc::clone(&self.fleet)
    }
    async fn observe(&self) -> Result<Observed, String> {
        RealFleet::observe(self).await.map_err(|e| e.to_string())
    }
    async fn execute(&self, action: &Action) -> Outcome {
        RealFleet::execute(self, action).await
    }
    fn unreachable_errors(&self) -> std::collections::BTreeMap<NodeId, String> {
        self.last_errors.lock().map(|e| e.iter().map(|(k, v)| (*k, v.clone())).collect()).unwrap_or_default()
    }
    fn transport(&self) -> Option<crate::control::fleetside::Transport> {
        Some(super::ssh::totals())
    }
}
