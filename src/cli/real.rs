//! Options and set-up shared by `plan` and `reconcile` against the real
//! fleet: the SSH pool, the LB connections, the journal.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::model::Fleet;
use crate::real::fleet::{RealFleet, Settings};
use crate::real::ssh::{Pool, SshConfig};

#[derive(Debug, Clone, clap::Args)]
pub struct RealArgs {
    /// known_hosts file with every node's and LB host's key (default: the spec's `fleet.ssh.known_hosts`).
    #[arg(long)]
    pub known_hosts: Option<PathBuf>,
    /// SSH private key (default: the spec's `fleet.ssh.identity`, else ssh's default keys).
    #[arg(long)]
    pub identity: Option<PathBuf>,
    /// Directory under which the spec may name credential files by absolute path
    /// (`fleet.ssh.known_hosts`, `fleet.ssh.identity`). Without it the spec may only name
    /// files inside the spec directory; --known-hosts and --identity are never restricted.
    #[arg(long, env = "DROVER_CREDENTIALS_DIR")]
    pub credentials_dir: Option<PathBuf>,
    /// Remote commands running at once across the fleet.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// SSH connect timeout.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Timeout of one remote command (package commands get `--package-timeout`).
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub command_timeout: Duration,
    /// Timeout of one emerge or rsync.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    pub package_timeout: Duration,
    /// How long a node may take to come back from a reboot.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub reboot_timeout: Duration,
    /// Directory of drover's state: the journal (`journal.redb`, which imports an older `journal.json` once)
    /// and the lease [default: /var/lib/drover as root, else ~/.local/state/drover]
    ///
    /// Default: $STATE_DIRECTORY (set by systemd's StateDirectory=), else /var/lib/drover as root,
    /// else $XDG_STATE_HOME/drover, else ~/.local/state/drover; never the current directory.
    /// The simulated daemon (`reconcile --simulate`) keeps its own in DIR/simulation, with its
    /// simulated world (`world.json`, resumed at the next start) when the directory is named
    /// here, by DROVER_STATE_DIR or by STATE_DIRECTORY; else it starts fresh every time.
    #[arg(long, env = "DROVER_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

impl RealArgs {
    /// `--state-dir`, or the platform's default (`state_dir::resolve`).
    pub fn state_dir(&self) -> Result<PathBuf, String> {
        super::state_dir::for_this_process(self.state_dir.as_deref())
    }
}

/// A tokio runtime for one command.
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| format!("cannot start tokio: {e}"))
}

/// Opens the SSH pool and connects the site LBs.
/// Paths in the spec are relative to the spec directory; on the command line, to the working directory.
pub async fn connect(fleet: &Fleet, specs: &Path, args: &RealArgs) -> Result<Arc<RealFleet>, String> {
    let cfg = ssh_config(fleet, specs, args)?;
    let pool = Arc::new(Pool::new(cfg).map_err(|e| e.to_string())?);
    let settings = settings(args, pool.config().control_dir.clone());
    RealFleet::connect(Arc::new(fleet.clone()), pool, settings, None).await.map(Arc::new)
}

/// How the side of a new spec came to be (the daemon's spec change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connected {
    /// The new spec logs in as the old one did: the SSH masters and the LB
    /// connections of the old side are kept (masters of removed nodes closed).
    Reused,
    /// The login changed (user, key, known_hosts, timeouts): a new pool.
    New,
}

/// Connects the side of a new spec. If it logs in as `current` does, the
/// pool and LB connections are kept: a spec change on a 500-node fleet does
/// not reconnect 500 SSH masters. Otherwise a new pool opens, and the caller
/// closes the old one after (`disconnect`).
pub async fn reconnect(
    current: &RealFleet,
    fleet: &Fleet,
    specs: &Path,
    args: &RealArgs,
) -> Result<(Arc<RealFleet>, Connected), String> {
    let cfg = ssh_config(fleet, specs, args)?;
    if !current.pool.serves(&cfg) {
        return connect(fleet, specs, args).await.map(|side| (side, Connected::New));
    }
    let pool = Arc::clone(&current.pool);
    let side =
        RealFleet::connect(Arc::new(fleet.clone()), Arc::clone(&pool), current.settings.clone(), Some(current)).await?;
    let mut keep: std::collections::HashSet<String> =
        fleet.nodes.iter().map(|n| Pool::host_key(&n.address, n.ssh_port)).collect();
    keep.extend(fleet.sites.iter().filter_map(|s| match &s.lb.api {
        crate::model::LbApi::Ssh { host, port, .. } => Some(Pool::host_key(host, *port)),
        crate::model::LbApi::Tcp { .. } => None,
    }));
    let closed = pool.retain(&keep).await;
    if closed > 0 {
        tracing::info!(closed, "SSH masters of hosts the new spec no longer names closed");
    }
    Ok((Arc::new(side), Connected::Reused))
}

fn settings(args: &RealArgs, runtime_dir: PathBuf) -> Settings {
    Settings {
        reboot_timeout: args.reboot_timeout,
        io_timeout: Duration::from_secs(5),
        package_timeout: args.package_timeout,
        runtime_dir,
        up_timeout: Duration::from_secs(60),
    }
}

/// The login the spec and the command line ask for, with a control directory of its own.
fn ssh_config(fleet: &Fleet, specs: &Path, args: &RealArgs) -> Result<SshConfig, String> {
    let from_spec = |p: &String, field: &str| spec_credential(p, field, specs, args.credentials_dir.as_deref());
    // No default: ssh checks host keys against this file only (our ssh_config
    // sets GlobalKnownHostsFile /dev/null), never silently ~/.ssh/known_hosts.
    let known_hosts = match (&args.known_hosts, &fleet.ssh.known_hosts) {
        (Some(k), _) => {
            // Read by the pool; a missing one is said here, with what to do.
            if let Err(e) = std::fs::metadata(k) {
                return Err(format!("known_hosts file {}: {e}{}", k.display(), known_hosts_hint(fleet, k)));
            }
            k.clone()
        }
        (None, Some(p)) => from_spec(p, "fleet.ssh.known_hosts").map_err(|e| {
            let written = if Path::new(p).is_absolute() { PathBuf::from(p) } else { specs.join(p) };
            if std::fs::metadata(&written).is_err() { format!("{e}{}", known_hosts_hint(fleet, &written)) } else { e }
        })?,
        (None, None) => {
            return Err(format!(
                "no known_hosts file: name one with --known-hosts (or in the spec, `fleet.ssh.known_hosts`); \
                 drover only connects to hosts whose keys it is given{}",
                known_hosts_hint(fleet, &specs.join("known_hosts"))
            ));
        }
    };
    let identity = match (&args.identity, &fleet.ssh.identity) {
        (Some(k), _) => Some(k.clone()),
        (None, Some(p)) => Some(from_spec(p, "fleet.ssh.identity")?),
        (None, None) => None,
    };
    // Control sockets need a short path (108 bytes): keep them under /tmp.
    // One directory per connection set: the daemon opens a new set for a new
    // spec before it closes (and removes) the old one.
    static SETS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let set = SETS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let control_dir = std::env::temp_dir().join(format!("drover-{}-{set}", std::process::id()));
    Ok(SshConfig {
        user: fleet.ssh.user.clone(),
        identity,
        known_hosts,
        connect_timeout: args.connect_timeout,
        command_timeout: args.command_timeout,
        max_concurrency: args.concurrency,
        control_dir,
    })
}

/// What to do when the fleet's known_hosts file is missing (`file`: where it
/// was looked for, or where to put one). A spec with a `simulation:` section
/// (the reference fleet, whose addresses are examples) is most likely meant
/// to be simulated: that is said first. Then how to reach a real fleet: a
/// known_hosts file with its hosts' keys, and the `ssh-keyscan` command that
/// collects them (its hosts grouped by SSH port, listed when few).
pub fn known_hosts_hint(fleet: &Fleet, file: &Path) -> String {
    let mut hosts: std::collections::BTreeMap<u16, Vec<String>> = std::collections::BTreeMap::new();
    let mut add = |host: &str, port: u16| {
        let list = hosts.entry(port).or_default();
        if !list.iter().any(|h| h == host) {
            list.push(host.to_string());
        }
    };
    for n in &fleet.nodes {
        add(&n.address, n.ssh_port);
    }
    let mut lbs = 0;
    for s in &fleet.sites {
        if let crate::model::LbApi::Ssh { host, port, .. } = &s.lb.api {
            add(host, *port);
            lbs += 1;
        }
    }
    let mut out = String::new();
    if fleet.simulation.is_some() {
        out.push_str(
            "\n  hint: this spec describes its fleet for simulation (it has a `simulation:` section): \
             run the command with `--simulate`, e.g. `drover plan --simulate` or `drover reconcile --once --simulate`",
        );
    }
    let file = crate::spec::diag::shown(&file.display().to_string());
    let _ = write!(
        out,
        "\n  hint: to run against the real fleet, point `fleet.ssh.known_hosts` (or --known-hosts FILE) at a file \
         with the SSH host keys of its {} node{} and {lbs} LB host{}; to collect them into {file}:",
        fleet.nodes.len(),
        if fleet.nodes.len() == 1 { "" } else { "s" },
        if lbs == 1 { "" } else { "s" },
    );
    const LISTED: usize = 8;
    for (port, list) in &hosts {
        let p = if *port == 22 { String::new() } else { format!(" -p {port}") };
        let shown: Vec<String> = list.iter().map(|h| crate::spec::diag::shown(h)).collect();
        if list.len() <= LISTED {
            let _ = write!(out, "\n    ssh-keyscan{p} {} >> {file}", shown.join(" "));
        } else {
            let _ = write!(
                out,
                "\n    ssh-keyscan{p} -f HOSTS >> {file}    # HOSTS: a file of its {} hosts on port {port}, one per line ({}, {}, … {})",
                list.len(),
                shown[0],
                shown[1],
                shown[list.len() - 1]
            );
        }
    }
    out.push_str(
        "\n    then compare each key with the host's own (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on it): \
         ssh-keyscan records whatever answers",
    );
    out
}

/// A credential file the spec names, within the boundary the operator set:
/// credentials belong to the daemon host's operator, not to the spec's
/// authors. A relative path is inside the spec directory; an absolute one
/// only inside `--credentials-dir`. Either way the file's real path
/// (symbolic links resolved) must stay inside, so a link in the spec
/// repository cannot hand over, e.g., the host's own private keys.
/// (`..` and `~` are refused by spec validation already.)
pub fn spec_credential(value: &str, field: &str, specs: &Path, allowed: Option<&Path>) -> Result<PathBuf, String> {
    let path = Path::new(value);
    let root = if path.is_absolute() {
        allowed.ok_or_else(|| {
            format!(
                "the spec names {field} {value:?} by absolute path: name the file with --{} instead, \
                 or allow a directory of credentials with --credentials-dir",
                if field.ends_with("identity") { "identity" } else { "known-hosts" }
            )
        })?
    } else {
        specs
    };
    let real = |p: &Path| std::fs::canonicalize(p).map_err(|e| format!("{field} {}: {e}", p.display()));
    let (root_real, file_real) = (real(root)?, real(&root.join(path))?);
    if !file_real.starts_with(&root_real) {
        return Err(format!(
            "{field} {value:?} leads out of {} (to {}): the spec may only name credential files inside it",
            root.display(),
            file_real.display()
        ));
    }
    Ok(file_real)
}

/// Closes the SSH masters and removes the control directory.
pub async fn disconnect(real: &RealFleet) {
    real.pool.shutdown().await;
    let _ = std::fs::remove_dir_all(&real.settings.runtime_dir);
}

/// One observation of the real fleet, with the reconciler's journal.
pub struct Observation {
    pub observed: crate::observe::Observed,
    /// What the reconciler has under way (its journal).
    pub memory: crate::plan::Memory,
    /// Journal entries not carried over to this spec (`plan::named`).
    pub resolved: Vec<String>,
    pub now_ms: u64,
    /// Why each unreachable node did not answer.
    pub errors: std::collections::BTreeMap<crate::model::NodeId, String>,
}

/// Connects, observes every node and LB once, and disconnects.
pub fn observe_once(fleet: &Fleet, specs: &Path, args: &RealArgs) -> Result<Observation, String> {
    // Read-only: a reconcile may be running and writing it.
    let peek =
        crate::control::journal::Journal::peek(&args.state_dir()?.join(crate::control::journal::FILE), 20, fleet)?;
    let resolved = peek.resolution_lines();
    let memory = peek.loaded.memory;
    let rt = runtime()?;
    rt.block_on(async {
        let rf = connect(fleet, specs, args).await?;
        let observed = rf.observe().await.map_err(|e| e.to_string());
        let errors = rf.last_errors.lock().map(|e| e.clone()).unwrap_or_default();
        disconnect(&rf).await;
        let now_ms = crate::control::now_ms();
        Ok(Observation { observed: observed?, memory, resolved, now_ms, errors: errors.into_iter().collect() })
    })
}

#[cfg(test)]
mod tests {
    use super::spec_credential;

    #[test]
    fn spec_credentials_stay_inside_the_spec_or_the_operators_directory() {
        let d = std::env::temp_dir().join(format!("drover-cred-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let (specs, creds) = (d.join("specs"), d.join("creds"));
        std::fs::create_dir_all(&specs).unwrap();
        std::fs::create_dir_all(&creds).unwrap();
        std::fs::write(specs.join("known_hosts"), "").unwrap();
        std::fs::write(creds.join("id"), "").unwrap();
        std::fs::write(d.join("host_key"), "").unwrap();
        assert!(spec_credential("known_hosts", "fleet.ssh.known_hosts", &specs, None).is_ok());
        // Absolute: only with, and under, --credentials-dir.
        let abs = creds.join("id").display().to_string();
        let e = spec_credential(&abs, "fleet.ssh.identity", &specs, None).unwrap_err();
        assert!(e.contains("--identity") && e.contains("--credentials-dir"), "{e}");
        assert!(spec_credential(&abs, "fleet.ssh.identity", &specs, Some(&creds)).is_ok());
        let outside = d.join("host_key").display().to_string();
        assert!(spec_credential(&outside, "fleet.ssh.identity", &specs, Some(&creds)).is_err());
        // A link in the spec repository to a key elsewhere is refused.
        std::os::unix::fs::symlink(d.join("host_key"), specs.join("id")).unwrap();
        let e = spec_credential("id", "fleet.ssh.identity", &specs, None).unwrap_err();
        assert!(e.contains("leads out of"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
