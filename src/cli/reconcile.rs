//! `drover reconcile`: converge the fleet (`--once`) or run as a daemon.

use std::io::IsTerminal;
use std::time::Duration;

use super::{Cli, Output, exit, real, simulate};
use crate::control::journal::Journal;
use crate::control::lease::{FileLeases, LeaseStore};
use crate::control::{Event, Finish, Options, reconcile_once_with};
use crate::plan::action::Outcome;
use crate::plan::progress::Event as Progress;

#[derive(Debug, Clone, clap::Args)]
pub struct ReconcileArgs {
    /// Converge once and exit (CI); without it drover runs as a daemon.
    #[arg(long)]
    pub once: bool,
    /// Run against the simulated fleet instead of the real one.
    #[arg(long)]
    pub simulate: bool,
    /// Give up when nothing could start and nothing ran for this long (real fleet).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub stall: Duration,
    #[command(flatten)]
    pub sim: simulate::SimArgs,
    #[command(flatten)]
    pub real: real::RealArgs,
    #[command(flatten)]
    pub daemon: super::daemon::DaemonArgs,
}

/// Calls `first` on the first SIGINT or SIGTERM; a second one exits at
/// once (130): the journal still knows what was in flight. Needs a runtime.
pub(crate) fn on_stop_signals(first: impl FnOnce() + Send + 'static) {
    tokio::spawn(async move {
        let mut first = Some(first);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        loop {
            let term_recv = async {
                match term.as_mut() {
                    Some(t) => {
                        t.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term_recv => {}
            }
            match first.take() {
                Some(f) => f(),
                None => {
                    eprintln!("second signal: exiting now; the journal holds what was in flight");
                    std::process::exit(i32::from(exit::INTERRUPTED));
                }
            }
        }
    });
}

pub fn run(cli: &Cli, args: &ReconcileArgs) -> u8 {
    if !args.once {
        let run =
            super::daemon::Run { simulate: args.simulate, sim: &args.sim, real: &args.real, daemon: &args.daemon };
        return super::daemon::run(cli, &run);
    }
    let Some(fleet) = super::load_fleet(cli) else {
        return exit::ERROR;
    };
    if args.simulate {
        return simulate::reconcile(cli, &fleet, &args.sim);
    }
    let rt = match real::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    let state_dir = match args.real.state_dir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    // One drover per fleet: held until this function returns (or the process dies).
    let _lease = match FileLeases::new(&state_dir).try_acquire(&crate::control::lease::this_process()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    let journal = Journal::new(&state_dir.join(crate::control::journal::FILE));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let opts = Options { tick: Duration::from_millis(500), stall: args.stall, stop: std::sync::Arc::clone(&stop) };
    let tty = std::io::stderr().is_terminal();
    let summary = rt.block_on(async {
        // SIGINT or SIGTERM: start nothing new, let what runs finish, exit.
        // A second signal exits at once (the journal still knows what was open).
        on_stop_signals(move || {
            eprintln!("stopping: no new action starts; waiting for the ones running (signal again to exit at once)");
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let rf = match real::connect(&fleet, &cli.specs, &args.real).await {
            Ok(rf) => rf,
            Err(e) => return Err(e),
        };
        let t0 = std::time::Instant::now();
        // On a terminal a status line shows what runs now (waves, farms,
        // nodes) below the event lines; elsewhere only the plain lines.
        let bar = tty.then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        let mut running: std::collections::BTreeMap<String, Option<u32>> = std::collections::BTreeMap::new();
        let (mut done, mut failed) = (0u64, 0u64);
        let mut on = |e: &Event| {
            let at = simulate::clock(t0.elapsed().as_millis() as u64);
            let line = match e {
                Event::Started { action, why, wave, .. } => {
                    running.insert(action.clone(), *wave);
                    let wave = wave.map(|w| format!("[wave {w}] ")).unwrap_or_default();
                    format!("{at} start  {wave}{action}  ({why})")
                }
                Event::Finished { action, outcome: Outcome::Ok, took, .. } => {
                    running.remove(action);
                    done += 1;
                    format!("{at} done   {action}  in {:.1}s", took.as_secs_f64())
                }
                Event::Finished { action, outcome: Outcome::Failed(err), took, .. } => {
                    running.remove(action);
                    failed += 1;
                    format!("{at} FAILED {action}  after {:.1}s: {err}", took.as_secs_f64())
                }
                Event::ObserveFailed(err) => format!("{at} observation failed (retrying): {err}"),
            };
            match &bar {
                Some(b) => {
                    b.println(line);
                    let waves: std::collections::BTreeSet<u32> = running.values().flatten().copied().collect();
                    let now: Vec<&str> = running.keys().map(String::as_str).take(4).collect();
                    b.set_message(format!(
                        "{} running{} | {done} done, {failed} failed | {}{}",
                        running.len(),
                        if waves.is_empty() { String::new() } else { format!(" (waves {waves:?})") },
                        now.join("; "),
                        if running.len() > 4 { " ..." } else { "" }
                    ));
                }
                None => eprintln!("{line}"),
            }
        };
        // Waits (soak, change window, capacity) and member waves as they
        // begin and end; farm windows show as their actions' lines already.
        let progress_bar = bar.clone();
        let mut progress = |fleet: &crate::model::Fleet, _now_ms: u64, e: &Progress| {
            if matches!(e, Progress::FarmOut { .. }) {
                return;
            }
            let at = simulate::clock(t0.elapsed().as_millis() as u64);
            let line = format!("{at} {}", e.line(fleet, &crate::plan::change_windows::format_utc));
            match &progress_bar {
                Some(b) => b.println(line),
                None => eprintln!("{line}"),
            }
        };
        let summary = reconcile_once_with(std::sync::Arc::clone(&rf), &journal, &opts, &mut on, &mut progress).await;
        if let Some(b) = &bar {
            b.finish_and_clear();
        }
        real::disconnect(&rf).await;
        Ok(summary)
    });
    let summary = match summary {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    let (code, verdict) = match &summary.finish {
        Finish::Converged => (exit::OK, "converged".to_string()),
        Finish::Halted => {
            (exit::HALTED, "HALTED: failures exceed the failure budget; nothing else was started".to_string())
        }
        Finish::Stuck => (exit::ERROR, "STUCK: nothing could start for the stall time".to_string()),
        Finish::OutsideWindow { opens_ms } => (
            exit::CHANGES_PENDING,
            format!(
                "WAITING: everything allowed outside change windows is done; the rest starts when the next window opens, {} (run again then)",
                crate::plan::change_windows::format_utc(*opens_ms)
            ),
        ),
        Finish::Unobserved => (
            exit::UNOBSERVED,
            format!(
                "NOT OBSERVED: {} of {} nodes did not answer for the stall time; every node that answered is at its target",
                summary.unobserved.len(),
                fleet.nodes.len()
            ),
        ),
        Finish::Interrupted => {
            (exit::INTERRUPTED, "INTERRUPTED: stopped on a signal once running actions had finished".to_string())
        }
        Finish::Error(e) => (exit::ERROR, format!("error: {e}")),
    };
    // Nodes it could not observe outrank a wait for a change window: the
    // fleet is not known to be where the exit code 2 would say it is.
    let code = if code == exit::CHANGES_PENDING && !summary.unobserved.is_empty() { exit::UNOBSERVED } else { code };
    for f in &summary.failed {
        eprintln!("failed: {f}");
    }
    let unreachable: Vec<String> = summary.unobserved.iter().map(ToString::to_string).collect();
    for u in &unreachable {
        eprintln!("unreachable: {u}");
    }
    for o in &summary.open {
        eprintln!("left open (the next run completes it): {o}");
    }
    for r in &summary.resolved {
        eprintln!("journal entry not carried over to this spec: {r}");
    }
    for h in &summary.held {
        eprintln!("held by an operator (not touched): {h}");
    }
    if summary.finish != Finish::Converged {
        for b in &summary.blocked {
            eprintln!("waiting: {}: {}", b.subject, b.reason);
        }
    }
    eprintln!(
        "{verdict} after {:.1}s: {} actions started, {} failed, {} passes",
        summary.elapsed.as_secs_f64(),
        summary.started,
        summary.failed.len(),
        summary.passes
    );
    if cli.output == Output::Json {
        println!(
            "{}",
            serde_json::json!({
                "converged": summary.finish == Finish::Converged,
                "halted": summary.finish == Finish::Halted,
                "exit_code": code,
                "finish": verdict,
                "actions_started": summary.started,
                "failed": summary.failed,
                "unreachable": unreachable,
                "unobserved": summary.unobserved,
                "held": summary.held,
                "open": summary.open,
                "journal_resolved": summary.resolved,
                "blocked": summary.blocked,
                "change_window_opens": match summary.finish {
                    Finish::OutsideWindow { opens_ms } => Some(crate::plan::change_windows::format_utc(opens_ms)),
                    _ => None,
                },
                "elapsed_s": summary.elapsed.as_secs_f64(),
            })
        );
    }
    code
}
