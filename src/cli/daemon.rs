//! `drover reconcile` without `--once`: the daemon, against the real fleet
//! or (`--simulate`) the simulated one in scaled time.

use std::path::Component;
use std::sync::Arc;
use std::time::Duration;

use super::{Cli, exit, real, simulate::SimArgs};
use crate::control::journal::Journal;
use crate::control::lease::{FileLeases, LeaseStore};
use crate::daemon::source::{self, GitSource};
use crate::daemon::state::{DaemonStatus, Shared};
use crate::daemon::{self as d, http};
use crate::sim::live::LiveSim;
use crate::sim::snapshot::Snapshot;

/// The simulated world's file, in the simulation's directory.
pub const WORLD_FILE: &str = "world.json";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, clap::Args)]
pub struct DaemonArgs {
    /// Serve /healthz, /readyz, /metrics and /status here (loopback only).
    #[arg(long, default_value = "127.0.0.1:9731", env = "DROVER_LISTEN")]
    pub listen: String,
    /// Follow this Git repository instead of watching `--specs`; `--specs`
    /// is then the spec directory inside the repository (`.` for its root).
    #[arg(long)]
    pub git: Option<String>,
    /// File holding the password or token of the `--git` remote (its user name goes in the
    /// URL, `https://USER@host/repo.git`). Also `DROVER_GIT_TOKEN`. Never put it in the URL:
    /// drover's arguments are visible in `ps`.
    #[arg(long, requires = "git")]
    pub git_token_file: Option<std::path::PathBuf>,
    /// The branch to follow with `--git`.
    #[arg(long, default_value = "main", requires = "git")]
    pub branch: String,
    /// How often to fetch the branch.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub git_interval: Duration,
    /// Observe, plan and report drift; start nothing.
    #[arg(long)]
    pub detect_only: bool,
    /// Re-observe the whole fleet this often when it is converged (drift detection).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub resync: Duration,
    /// On SIGTERM, how long open windows may take to close before the daemon exits leaving them parked.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub stop_grace: Duration,
    /// Quiet period after a change in the spec directory before it is read.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub debounce: Duration,
    /// Log lines as text (default) or JSON objects.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// `--simulate`: simulated seconds per real second.
    #[arg(long, default_value_t = 60.0)]
    pub time_scale: f64,
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = match format {
        LogFormat::Json => b.json().flatten_event(true).try_init(),
        LogFormat::Text => b.try_init(),
    };
}

/// What `drover reconcile` (without `--once`) hands the daemon.
pub struct Run<'a> {
    pub simulate: bool,
    pub sim: &'a SimArgs,
    pub real: &'a real::RealArgs,
    pub daemon: &'a DaemonArgs,
}

pub fn run(cli: &Cli, args: &Run<'_>) -> u8 {
    let da = &args.daemon;
    init_logs(da.log_format);
    if args.simulate && !(da.time_scale > 0.0 && da.time_scale.is_finite()) {
        eprintln!("error: --time-scale must be a positive number");
        return exit::USAGE;
    }
    let rt = match real::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    match rt.block_on(serve(cli, args)) {
        Ok(stopped) => {
            tracing::info!(
                started = stopped.started,
                failed = stopped.failed.len(),
                parked = stopped.parked.len(),
                "stopped"
            );
            exit::OK
        }
        Err(e) => {
            tracing::error!("{e}");
            exit::ERROR
        }
    }
}

async fn serve(cli: &Cli, args: &Run<'_>) -> Result<d::Stopped, String> {
    let da = &args.daemon;
    let kept = args.simulate && super::state_dir::named_for_this_process(args.real.state_dir.as_deref());
    // A simulation that is not kept writes nothing in the state directory
    // (unless `--git` checks out its spec there).
    let state_dir = if !args.simulate || kept || da.git.is_some() {
        let dir = args.real.state_dir()?;
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Some(dir)
    } else {
        None
    };
    // One drover per fleet. The simulation keeps its lease and journal apart
    // from the real fleet's (never its journal). With a state directory
    // someone named, in `<state-dir>/simulation`, beside the world it keeps
    // (no temporary directory to leak on SIGKILL). Else the world is this
    // process's alone, and so are its journal and lease: a directory of its
    // own under $TMPDIR, removed at exit (one a kill left, by the next such
    // start), never the state directory a kept world may use.
    let scratch = if args.simulate && !kept { Some(Scratch::new()?) } else { None };
    let dir = match (&scratch, &state_dir) {
        (Some(s), _) => s.0.clone(),
        (None, Some(d)) if args.simulate => d.join("simulation"),
        (None, Some(d)) => d.clone(),
        (None, None) => return Err("no state directory".into()),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let _lease =
        FileLeases::new(&dir).try_acquire(&crate::control::lease::this_process()).map_err(|e| e.to_string())?;
    let world_file = dir.join(WORLD_FILE);
    // A kept world is read (and refused if damaged or newer) before anything starts.
    let resume = if kept && world_file.exists() { Some(Snapshot::load(&world_file)?) } else { None };
    if args.simulate && resume.is_none() {
        // A fresh world: the journal of any world before it must not drive it.
        let old = dir.join(crate::control::journal::FILE);
        if let Err(e) = std::fs::remove_file(&old)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(format!("cannot reset the simulation's journal {}: {e}", old.display()));
        }
        if kept {
            tracing::info!(path = %world_file.display(), "the simulated world starts fresh, kept in {}", world_file.display());
        } else {
            tracing::info!(
                "the simulation starts fresh and is not kept: a restart starts it again (name a state directory with \
                 --state-dir, DROVER_STATE_DIR or systemd's STATE_DIRECTORY to keep it and resume it)"
            );
        }
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let (reread_tx, mut reread_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let on_stop = Arc::clone(&stop_tx);
    on_signals(
        move || {
            tracing::info!("signal: stopping (signal again to exit at once)");
            let _ = on_stop.send(true);
        },
        reread_tx,
    );
    // The spec: a Git branch, or the directory watched.
    let (specs, source_errors, source_watch, spec_dir) = match &da.git {
        Some(url) => {
            let relative = cli.specs.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
            if !relative {
                return Err(format!(
                    "with --git, --specs names the spec directory inside the repository \
                     (a relative path, `.` for its root), not {}",
                    cli.specs.display()
                ));
            }
            let (url, auth) = crate::daemon::gitauth::resolve(
                url,
                da.git_token_file.as_deref(),
                std::env::var("DROVER_GIT_TOKEN").ok(),
            )?;
            let src = GitSource {
                url,
                auth,
                branch: da.branch.clone(),
                subdir: cli.specs.clone(),
                checkout: state_dir.as_ref().ok_or("no state directory for the --git checkout")?.join("spec-repo"),
                interval: da.git_interval,
            };
            let spec_dir = src.spec_dir();
            let (rx, err, following) = source::follow_git(src);
            (rx, Some(err), following, spec_dir)
        }
        None => {
            let (rx, w) = source::watch_dir(cli.specs.clone(), da.debounce, Duration::from_secs(30))?;
            (rx, None, w, cli.specs.clone())
        }
    };
    let shared = Arc::new(Shared::new(DaemonStatus {
        version: env!("CARGO_PKG_VERSION").into(),
        fleet_kind: if args.simulate { "simulated" } else { "real" }.into(),
        ..Default::default()
    }));
    // SIGHUP: read the spec again now (rescan the directory, fetch the branch).
    let watching = Arc::new(source_watch);
    let rescan = Arc::clone(&watching);
    tokio::spawn(async move {
        while reread_rx.recv().await.is_some() {
            tracing::info!("SIGHUP: reading the spec again");
            rescan.rescan();
        }
    });
    let listener = http::bind(&da.listen, false).await?;
    tracing::info!(listen = %da.listen, "serving /healthz /readyz /metrics /status");
    let (down_tx, down_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http::serve(listener, Arc::clone(&shared), async {
        let _ = down_rx.await;
    }));
    let journal = Journal::new(&dir.join(crate::control::journal::FILE));
    let mut on = |_: &d::Note| {};
    let result = if args.simulate {
        let opts = d::Options {
            tick: Duration::from_millis(20),
            idle_tick: Duration::from_millis(100),
            resync: da.resync,
            detect_only: da.detect_only,
            stop_grace: da.stop_grace,
            status_every: Duration::from_millis(500),
        };
        let scale = da.time_scale;
        let sim_args = args.sim.clone();
        // The world in force (saved once more at the end), and a world that
        // cannot be resumed (it stops the daemon: it is the user's to remove).
        let last: Arc<std::sync::Mutex<Option<Arc<LiveSim>>>> = Default::default();
        let refused: Arc<std::sync::Mutex<Option<String>>> = Default::default();
        let resume = Arc::new(std::sync::Mutex::new(resume));
        let connect = |fleet: Arc<crate::model::Fleet>, current: Option<Arc<LiveSim>>| {
            let (sim_args, last, refused, resume) =
                (sim_args.clone(), Arc::clone(&last), Arc::clone(&refused), Arc::clone(&resume));
            let (world_file, stop) = (world_file.clone(), Arc::clone(&stop_tx));
            async move {
                if let Some(sim) = current {
                    return sim.set_fleet(fleet).map(|()| sim);
                }
                let snapshot = resume.lock().unwrap_or_else(|p| p.into_inner()).take();
                let sim = match snapshot {
                    Some(snapshot) => {
                        match (snapshot.cfg.clone(), LiveSim::resume(Arc::clone(&fleet), snapshot, &world_file, scale))
                        {
                            (kept_cfg, Ok(sim)) => {
                                // The kept world goes on with the settings it was made with.
                                if let Ok(asked) = super::simulate::config(&fleet, &sim_args) {
                                    let ignored = settings_not_applied(&asked, &kept_cfg);
                                    if !ignored.is_empty() {
                                        tracing::warn!(
                                            ignored = %ignored.join(", "),
                                            "the resumed world keeps the settings it was made with, not {} (they shape \
                                             only a fresh world: remove {} to start one)",
                                            ignored.join(", "),
                                            world_file.display()
                                        );
                                    }
                                }
                                let at = sim.resumed_at_ms().unwrap_or(0) / 1000;
                                tracing::info!(
                                    path = %world_file.display(),
                                    virtual_s = at,
                                    "resuming the simulated world from {} at virtual time {}",
                                    world_file.display(),
                                    crate::sim::live::hms(at)
                                );
                                sim
                            }
                            (_, Err(e)) => {
                                *refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
                                let _ = stop.send(true);
                                return Err(e);
                            }
                        }
                    }
                    None => LiveSim::new(Arc::clone(&fleet), super::simulate::config(&fleet, &sim_args)?, scale)?,
                };
                if kept {
                    sim.keep_in(world_file.clone()).await?;
                }
                *last.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&sim));
                Ok(sim)
            }
        };
        let r = d::run(connect, specs, source_errors, &journal, Arc::clone(&shared), opts, stop_rx, &mut on).await;
        let refused = refused.lock().unwrap_or_else(|p| p.into_inner()).take();
        let r = match refused {
            Some(e) => Err(e),
            None => r,
        };
        let world = last.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(world) = world.filter(|w| w.kept_in().is_some()) {
            match world.save_now().await {
                Ok(at) => tracing::info!(
                    path = %world_file.display(),
                    "the simulated world is saved in {} at virtual time {}",
                    world_file.display(),
                    crate::sim::live::hms(at / 1000)
                ),
                Err(e) => tracing::error!("{e}"),
            }
        }
        // What the independent checker saw over the whole run.
        if let Some(s) = shared.status().simulation.clone() {
            tracing::info!(requests = %s["requests"], failed_requests = %s["failed_requests"],
                violations = %s["violations"], virtual_s = %s["virtual_s"], "simulation checked");
        }
        r
    } else {
        let opts = d::Options {
            resync: da.resync,
            detect_only: da.detect_only,
            stop_grace: da.stop_grace,
            ..Default::default()
        };
        let (real_args, dir) = (args.real.clone(), spec_dir.clone());
        // The side in force, to close its connections at the end.
        let last: Arc<std::sync::Mutex<Option<Arc<crate::real::fleet::RealFleet>>>> = Default::default();
        let slot = Arc::clone(&last);
        let connect = move |fleet: Arc<crate::model::Fleet>, current: Option<Arc<crate::real::fleet::RealFleet>>| {
            let (real_args, dir, slot) = (real_args.clone(), dir.clone(), Arc::clone(&slot));
            async move {
                // The new fleet's connections open first: if they cannot, the
                // spec in force keeps its own. Nothing runs on the old ones now.
                // A spec that logs in the same way keeps the old SSH masters.
                let side = match current {
                    None => real::connect(&fleet, &dir, &real_args).await?,
                    Some(cur) => {
                        let (side, how) = real::reconnect(&cur, &fleet, &dir, &real_args).await?;
                        tracing::info!(ssh = ?how, "connections for the new spec");
                        if how == real::Connected::New {
                            real::disconnect(&cur).await;
                        }
                        side
                    }
                };
                *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&side));
                Ok(side)
            }
        };
        let r = d::run(connect, specs, source_errors, &journal, Arc::clone(&shared), opts, stop_rx, &mut on).await;
        let side = last.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(cur) = side {
            real::disconnect(&cur).await;
        }
        r
    };
    let _ = down_tx.send(());
    let _ = server.await;
    drop(watching);
    result
}

/// The directory of a simulation that is not kept: its journal and lease,
/// private to this process (`drover-simulation-<pid>-<ns>` under $TMPDIR),
/// removed when the daemon ends.
struct Scratch(std::path::PathBuf);

/// The start of a scratch directory's name.
const SCRATCH: &str = "drover-simulation-";

impl Scratch {
    fn new() -> Result<Scratch, String> {
        let tmp = std::env::temp_dir();
        // Those a kill left behind: nobody holds their lease (the kernel
        // dropped it with the process). Only older ones: a daemon starting
        // now may not have taken its own yet.
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for e in entries.flatten() {
                let old = e.path();
                let stale = e.file_name().to_string_lossy().starts_with(SCRATCH)
                    && e.metadata()
                        .ok()
                        .and_then(|m| m.modified().ok())
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > Duration::from_secs(60));
                if stale && FileLeases::new(&old).try_acquire(&crate::control::lease::this_process()).is_ok() {
                    let _ = std::fs::remove_dir_all(&old);
                }
            }
        }
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let dir = tmp.join(format!("{SCRATCH}{}-{nanos}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// SIGTERM and SIGINT stop the daemon (`stop`; a second one exits at once,
/// 130); SIGHUP asks for the spec to be read again (`reread`), never a stop.
fn on_signals(stop: impl FnOnce() + Send + 'static, reread: tokio::sync::mpsc::UnboundedSender<()>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
    else {
        tracing::warn!("cannot install signal handlers: SIGTERM, SIGINT and SIGHUP keep their default actions");
        return;
    };
    tokio::spawn(async move {
        let mut stop = Some(stop);
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
                _ = hup.recv() => {
                    let _ = reread.send(());
                    continue;
                }
            }
            match stop.take() {
                Some(f) => f(),
                None => {
                    eprintln!("second signal: exiting now; the journal holds what was in flight");
                    std::process::exit(i32::from(exit::INTERRUPTED));
                }
            }
        }
    });
}

/// The simulation options asked for that differ from a resumed world's own
/// settings (and so do not apply), by option name.
fn settings_not_applied(asked: &crate::sim::SimConfig, kept: &crate::sim::SimConfig) -> Vec<&'static str> {
    let mut out = Vec::new();
    if asked.seed != kept.seed {
        out.push("--seed");
    }
    if asked.faults != kept.faults {
        out.push("--faults");
    }
    if asked.sessions_per_site != kept.sessions_per_site {
        out.push("--sessions");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_a_resumed_world_does_not_take_are_named() {
        let fleet = crate::sim::fleetgen::fleet(&crate::sim::fleetgen::Shape::default()).unwrap();
        let kept = crate::sim::SimConfig::new(&fleet, 1);
        assert!(settings_not_applied(&kept.clone(), &kept).is_empty());
        let mut asked = kept.clone();
        asked.seed = 2;
        asked.faults = crate::sim::Faults::parse("crash=1").unwrap();
        assert_eq!(settings_not_applied(&asked, &kept), vec!["--seed", "--faults"]);
        asked = kept.clone();
        asked.sessions_per_site += 1;
        assert_eq!(settings_not_applied(&asked, &kept), vec!["--sessions"]);
    }
}
