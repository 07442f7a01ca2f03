//! `drover reconcile --once --simulate` and `drover plan --simulate`: the
//! planner against the simulated fleet.

use std::io::IsTerminal;

use super::{Cli, Output, exit};
use crate::model::Fleet;
use crate::sim::{Faults, Report, Sim, SimConfig, Strategy, Verdict};

#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Seed of the simulation (same seed, same run).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Fault schedule, e.g. `action-fail=0.02,node-death=1,crash=2` (see README).
    #[arg(long, default_value = "none")]
    pub faults: String,
    /// `drover` (default) or `serial:N` (Ansible-style batches of N% of hosts, for comparison).
    #[arg(long, default_value = "drover")]
    pub strategy: String,
    /// Active sessions per production site (default: the spec's simulation.sessions_per_site).
    #[arg(long)]
    pub sessions: Option<u32>,
}

pub fn parse_strategy(s: &str) -> Result<Strategy, String> {
    if s == "drover" {
        return Ok(Strategy::Drover);
    }
    match s.strip_prefix("serial:").map(str::parse::<u32>) {
        Some(Ok(p)) if (1..=100).contains(&p) => Ok(Strategy::SerialBatches { percent: p }),
        _ => Err(format!("unknown strategy `{s}`: use `drover` or `serial:N` with N in 1..=100")),
    }
}

pub fn config(fleet: &Fleet, args: &SimArgs) -> Result<SimConfig, String> {
    let mut cfg = SimConfig::new(fleet, args.seed);
    cfg.faults = Faults::parse(&args.faults)?;
    cfg.strategy = parse_strategy(&args.strategy)?;
    if let Some(s) = args.sessions {
        cfg.sessions_per_site = s;
    }
    Ok(cfg)
}

pub fn clock(ms: u64) -> String {
    let s = ms / 1000;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

pub fn reconcile(cli: &Cli, fleet: &Fleet, args: &SimArgs) -> u8 {
    let cfg = match config(fleet, args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let tty = std::io::stderr().is_terminal();
    eprintln!(
        "simulating {} nodes in {} sites, {} sessions per production site, seed {}, faults: {}",
        fleet.nodes.len(),
        fleet.sites.len(),
        cfg.sessions_per_site,
        cfg.seed,
        args.faults
    );
    let mut sim = Sim::new(fleet, cfg);
    sim.on_progress(move |ms, text| {
        // On a terminal, repeated "farm ... back in" lines collapse into one updating line.
        let line = format!("[{}] {text}", clock(ms));
        if tty {
            eprint!("\r\x1b[2K{line}");
            if !text.starts_with("farm ") {
                eprintln!();
            }
        } else {
            eprintln!("{line}");
        }
    });
    let report = sim.run();
    if tty {
        eprintln!();
    }
    print_report(cli, &report);
    code(&report)
}

/// Exit code of a simulated `reconcile --once`, from the run's verdict: a
/// violation (it outranks everything else), a run stuck or out of time (1),
/// a halt (3), nodes that do not answer (4), converged without violation (0).
fn code(r: &Report) -> u8 {
    match r.verdict {
        Verdict::Violated | Verdict::Stuck | Verdict::OutOfTime => exit::ERROR,
        Verdict::Halted => exit::HALTED,
        Verdict::Unobserved => exit::UNOBSERVED,
        Verdict::Converged => exit::OK,
    }
}

/// The summary's first line: the verdict first, then the figures that mean
/// something for it (a makespan and its ratio to the lower bound only for a
/// run that converged without violation).
pub fn headline(r: &Report) -> String {
    let at = clock((r.makespan_s * 1000.0) as u64);
    let checked = format!(
        "{} requests checked, {} failed, {} violations{}",
        r.requests,
        r.failed_requests,
        r.violations,
        if r.crashes > 0 { format!(", {} reconciler crashes survived", r.crashes) } else { String::new() }
    );
    match r.verdict {
        Verdict::Converged => format!(
            "converged: makespan {at} (lower bound {}, ratio {:.3}), {checked}",
            clock((r.lower_bound_s * 1000.0) as u64),
            r.ratio
        ),
        Verdict::Violated => {
            let by: Vec<String> = r.violations_by_invariant.iter().map(|(k, v)| format!("{k} {v}")).collect();
            format!(
                "FAILED: {} invariant violations ({}); the run ended at {at}{}, {checked}",
                r.violations,
                by.join(", "),
                if r.halted {
                    ", halted on the failure budget"
                } else if r.settled {
                    " with every node that answers at its target"
                } else {
                    ", not settled"
                }
            )
        }
        Verdict::Halted => format!(
            "HALTED at {at}: {} failure(s) exceed the failure budget; what was in flight finished, nothing else started, {checked}",
            r.failed_nodes.len() + r.failed_farms.len()
        ),
        Verdict::Stuck => format!(
            "STUCK at {at}: nothing ran and nothing could start for {} minutes (see blocked), {checked}",
            crate::sim::IDLE_LIMIT_MS / 60_000
        ),
        Verdict::OutOfTime => format!("NOT FINISHED: still running at the {at} limit of simulated time, {checked}"),
        Verdict::Unobserved => format!(
            "NOT OBSERVED: every node that answers is at its target at {at}, {} node(s) do not answer, {checked}",
            r.unobserved_nodes.len()
        ),
    }
}

fn print_report(cli: &Cli, r: &Report) {
    let summary = serde_json::json!({
        "verdict": r.verdict,
        "converged": r.converged,
        "settled": r.settled,
        "unobserved": r.unobserved_nodes,
        "exit_code": code(r),
        "halted": r.halted,
        "violations": r.violations,
        "violations_by_invariant": r.violations_by_invariant,
        "requests": r.requests,
        "failed_requests": r.failed_requests,
        "makespan_s": (r.makespan_s * 1000.0).round() / 1000.0,
        "lower_bound_s": (r.lower_bound_s * 1000.0).round() / 1000.0,
        // Null where it means nothing (see `Verdict::has_ratio`).
        "ratio": r.verdict.has_ratio().then(|| (r.ratio * 10000.0).round() / 10000.0),
        "actions": r.actions,
        "failed_nodes": r.failed_nodes,
        "crashes": r.crashes,
        "seed": r.seed,
        "strategy": match &r.strategy { Strategy::Drover => "drover".to_string(), Strategy::SerialBatches { percent } => format!("serial:{percent}") },
    });
    match cli.output {
        Output::Json => {
            if !r.violation_samples.is_empty() {
                eprintln!("{}", serde_json::to_string_pretty(&r.violation_samples).unwrap_or_default());
            }
            println!("{summary}");
        }
        Output::Text => {
            println!("{}", headline(r));
            for v in &r.violation_samples {
                println!("  violation [{}] {:?}: {}", clock(v.at_ms), v.invariant, v.what);
            }
            if !r.failed_nodes.is_empty() {
                println!("  failed nodes (kept out of the LB): {}", r.failed_nodes.join(", "));
            }
            if !r.unobserved_nodes.is_empty() {
                println!("  not observed (do not answer, state unknown): {}", r.unobserved_nodes.join(", "));
            }
            if !r.converged {
                for b in r.blocked.iter().take(10) {
                    println!("  blocked: {}: {}", b.subject, b.reason);
                }
            }
            let acts: Vec<String> = r.actions.iter().map(|(k, v)| format!("{k} {v}")).collect();
            println!("  actions: {}", acts.join(", "));
        }
    }
}
