//! `drover status`: the fleet as observed now, per site, farm and node: LB
//! state and load, PHP, release and kernel, what drifts from the target,
//! and what the reconciler's journal has open. Read-only.

use super::{Cli, Output, exit, real, simulate};
use crate::plan::Memory;
use crate::status::view;

#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// Show the simulated fleet's starting state instead of the real one.
    #[arg(long)]
    pub simulate: bool,
    #[command(flatten)]
    pub sim: simulate::SimArgs,
    #[command(flatten)]
    pub real: real::RealArgs,
    /// Ask the daemon listening here first (its `/status`); observe directly when none answers.
    #[arg(long, default_value = "127.0.0.1:9731", env = "DROVER_LISTEN")]
    pub daemon: String,
    /// Observe directly even when a daemon runs.
    #[arg(long)]
    pub direct: bool,
}

/// The daemon's `/status`, or `None` when no daemon answers at `addr`.
fn from_daemon(addr: &str) -> Option<serde_json::Value> {
    let rt = real::runtime().ok()?;
    rt.block_on(async {
        let client = reqwest::Client::builder().no_proxy().timeout(std::time::Duration::from_secs(3)).build().ok()?;
        let r = client.get(format!("http://{addr}/status")).send().await.ok()?;
        if !r.status().is_success() {
            return None;
        }
        serde_json::from_str(&r.text().await.ok()?).ok()
    })
}

fn print_daemon(v: &serde_json::Value, addr: &str) {
    let s = |v: &serde_json::Value| v.as_str().map(str::to_string).unwrap_or_else(|| "-".into());
    let spec = &v["spec"];
    let commit = spec["commit"].as_str().map(|c| format!(" commit {}", &c[..c.len().min(12)])).unwrap_or_default();
    println!(
        "daemon at {addr} ({} fleet{}): spec generation {}{commit} digest {}",
        s(&v["fleet_kind"]),
        if v["detect_only"] == true { ", detect-only" } else { "" },
        spec["generation"],
        s(&spec["digest"]),
    );
    if let Some(r) = spec["rejected"].as_object() {
        let first = r.get("error").and_then(|e| e.as_str()).and_then(|e| e.lines().next()).unwrap_or("");
        println!("  REJECTED spec (not applied): {first}");
    }
    if spec["pending"] == true {
        println!("  a new spec applies once the running actions finish");
    }
    let r = &v["rollout"];
    println!(
        "rollout: {}  {} of {} nodes at target, {} drift item(s), {} running",
        s(&r["phase"]),
        r["nodes_at_target"],
        r["nodes_total"],
        r["drift_items"],
        r["running"].as_array().map_or(0, Vec::len)
    );
    for (key, label) in
        [("running", "running"), ("pending", "pending"), ("blocked", "waiting"), ("held", "held"), ("failed", "failed")]
    {
        let items = r[key].as_array().map(Vec::as_slice).unwrap_or_default();
        for item in items.iter().take(10) {
            println!("  {label}: {}", s(item));
        }
        if items.len() > 10 {
            println!("  ... and {} more {label} (--output json lists all)", items.len() - 10);
        }
    }
    if let Some(sim) = v["simulation"].as_object() {
        println!(
            "simulation: {} virtual s, {} requests checked, {} failed, {} violations",
            sim.get("virtual_s").cloned().unwrap_or_default(),
            sim.get("requests").cloned().unwrap_or_default(),
            sim.get("failed_requests").cloned().unwrap_or_default(),
            sim.get("violations").cloned().unwrap_or_default()
        );
    }
    if let Some(e) = v["last_error"].as_str() {
        println!("  last error: {e}");
    }
    if let Some(e) = v["spec_source_error"].as_str() {
        println!("  spec source error: {e}");
    }
}

pub fn run(cli: &Cli, args: &StatusArgs) -> u8 {
    if !args.direct
        && !args.simulate
        && let Some(v) = from_daemon(&args.daemon)
    {
        super::quiet_on_closed_stdout();
        match cli.output {
            Output::Json => println!("{v}"),
            Output::Text => {
                print_daemon(&v, &args.daemon);
                print_text(&v["fleet"]);
            }
        }
        return exit::OK;
    }
    let Some(fleet) = super::load_fleet(cli) else {
        return exit::ERROR;
    };
    let mut resolved: Vec<String> = Vec::new();
    let (observed, memory, errors) = if args.simulate {
        let cfg = match simulate::config(&fleet, &args.sim) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::USAGE;
            }
        };
        (crate::sim::Sim::new(&fleet, cfg).observe(), Memory::default(), Default::default())
    } else {
        match real::observe_once(&fleet, &cli.specs, &args.real) {
            Ok(o) => {
                resolved = o.resolved;
                (o.observed, o.memory, o.errors)
            }
            Err(e) => {
                eprintln!("error: {e}");
                return exit::ERROR;
            }
        }
    };
    let mut view = view(&fleet, &observed, &memory, &errors);
    // Journal entries not carried over to this spec (`plan::named`).
    if !resolved.is_empty() {
        view["journal_resolved"] = serde_json::json!(resolved);
    }
    super::quiet_on_closed_stdout();
    match cli.output {
        Output::Json => println!("{view}"),
        Output::Text => print_text(&view),
    }
    exit::OK
}

fn print_text(v: &serde_json::Value) {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    let lb = |v: &serde_json::Value| format!("{} w{} active {}", s(&v["admin"]), v["weight"], v["active"]);
    for site in v["sites"].as_array().into_iter().flatten() {
        println!("site {} ({})", s(&site["name"]), s(&site["environment"]));
        for farm in site["farms"].as_array().into_iter().flatten() {
            let switch = farm["switch"].as_str().map(|p| format!("  SWITCHING ({p})")).unwrap_or_default();
            println!(
                "  farm {}  lb {}  sessions {}  memcached {}  target php {} release {}{switch}",
                s(&farm["name"]),
                lb(&farm["lb"]),
                farm["sessions"],
                if farm["memcached_reachable"] == true { "ok" } else { "UNREACHABLE" },
                s(&farm["target"]["php"]),
                s(&farm["target"]["release"]),
            );
            for node in farm["nodes"].as_array().into_iter().flatten() {
                if node["reachable"] != true {
                    println!("    {}  UNREACHABLE: {}", s(&node["name"]), s(&node["error"]));
                    continue;
                }
                let drift = node["drift"].as_array().map(Vec::len).unwrap_or(0);
                let mut extra = String::new();
                if let Some(w) = node["window"].as_str() {
                    extra.push_str(&format!("  window {w}"));
                }
                if let Some(f) = node["failed"].as_str() {
                    // One line per node: a command's output may hold several.
                    extra.push_str(&format!("  FAILED: {}", f.replace('\n', " / ")));
                }
                if let Some(snaps) = node["snapshots"].as_array().filter(|a| !a.is_empty()) {
                    let names: Vec<String> = snaps.iter().map(s).collect();
                    extra.push_str(&format!("  snapshots {}", names.join(" ")));
                }
                if let Some(r) = node["rollback"]["line"].as_str() {
                    extra.push_str(&format!("  {r}"));
                }
                println!(
                    "    {}  lb {}  php {}  release {}  kernel {}  {}{extra}",
                    s(&node["name"]),
                    lb(&node["lb"]),
                    s(&node["php"]),
                    s(&node["release"]),
                    s(&node["kernel_running"]),
                    if drift == 0 { "in sync".to_string() } else { format!("{drift} drift item(s)") },
                );
            }
        }
    }
    for m in v["migrations"].as_array().into_iter().flatten() {
        println!("migration {}", s(&m["line"]));
    }
    println!("failures: {} of a budget of {}", v["failures"], v["failure_budget"]);
    for r in v["journal_resolved"].as_array().into_iter().flatten() {
        println!("journal entry not carried over to this spec: {}", s(r));
    }
}
