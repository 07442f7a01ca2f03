//! `drover validate`: check the specs, print every error at once.

use super::{Cli, Output, exit};
use crate::spec::{self, Loaded};

pub fn run(cli: &Cli) -> u8 {
    let loaded = match spec::load(&cli.specs) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    match loaded {
        Loaded::Valid { fleet, files } => {
            let prod = fleet.nodes.iter().filter(|n| fleet.is_production(n.site)).count();
            match cli.output {
                Output::Text => println!(
                    "ok: {} files, {} sites, {} farms, {} nodes ({} production), {} distinct targets",
                    files.len(),
                    fleet.sites.len(),
                    fleet.farms.len(),
                    fleet.nodes.len(),
                    prod,
                    fleet.targets.len()
                ),
                Output::Json => println!(
                    "{}",
                    serde_json::json!({
                        "valid": true,
                        "files": files.len(),
                        "sites": fleet.sites.len(),
                        "farms": fleet.farms.len(),
                        "nodes": fleet.nodes.len(),
                        "targets": fleet.targets.len(),
                        "errors": [],
                    })
                ),
            }
            exit::OK
        }
        Loaded::Invalid { diagnostics, files } => {
            let report = spec::diag::Report::of(diagnostics);
            match cli.output {
                Output::Text => {
                    eprint!("{}", report.render(&files));
                    eprintln!("{}", report.summary(&cli.specs.display().to_string(), ""));
                }
                Output::Json => println!(
                    "{}",
                    serde_json::json!({ "valid": false, "errors": report.shown, "suppressed": report.suppressed })
                ),
            }
            exit::ERROR
        }
    }
}
