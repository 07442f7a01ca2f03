//! `drover render haproxy --site S [--out FILE]`: a site LB's HAProxy
//! configuration, generated from the spec (`render::haproxy_config`).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::{Cli, Output, exit};
use crate::spec::{self, Loaded};

#[derive(Debug, Subcommand)]
pub enum What {
    /// The site LB's HAProxy configuration (farm-stickiness layout, server-state file, admin socket).
    Haproxy {
        /// Site whose LB configuration to render.
        #[arg(long)]
        site: String,
        /// Write the configuration to FILE (atomically: a reload never reads half a file) instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

pub fn run(cli: &Cli, what: &What) -> u8 {
    let What::Haproxy { site, out } = what;
    let fleet = match spec::load(&cli.specs) {
        Ok(Loaded::Valid { fleet, .. }) => fleet,
        Ok(Loaded::Invalid { diagnostics, files }) => {
            let report = spec::diag::Report::of(diagnostics);
            eprint!("{}", report.render(&files));
            eprintln!("error: {}", report.summary(&cli.specs.display().to_string(), ": nothing rendered"));
            return exit::ERROR;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    let Some(site_id) = fleet.site_by_name(site) else {
        let known: Vec<&str> = fleet.sites.iter().map(|s| s.name.as_str()).collect();
        eprintln!("error: no site `{site}` in {}; known sites: {}", cli.specs.display(), known.join(", "));
        return exit::ERROR;
    };
    let config = match crate::render::haproxy_config(&fleet, site_id) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot render the HAProxy configuration of site `{site}`: {e}");
            return exit::ERROR;
        }
    };
    if let Some(path) = out
        && let Err(e) = write_atomically(path, config.as_bytes())
    {
        eprintln!("error: cannot write {}: {e}", path.display());
        return exit::ERROR;
    }
    match (cli.output, out) {
        (Output::Text, None) => print!("{config}"),
        (Output::Text, Some(path)) => eprintln!("wrote {}", path.display()),
        (Output::Json, _) => println!(
            "{}",
            serde_json::json!({
                "site": site,
                "out": out.as_ref().map(|p| p.display().to_string()),
                "haproxy_cfg": config,
            })
        ),
    }
    exit::OK
}

/// Writes beside the target, then renames over it.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().ok_or_else(|| std::io::Error::other("not a file name"))?;
    let tmp = path.with_file_name(format!(".{}.tmp.{}", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
