//! Command-line shell: parse arguments, call the library, print, choose the
//! exit code. Deciding happens in the library; printing happens here.

mod render;
mod schema;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Exit codes shared by every subcommand.
pub mod exit {
    /// Success: valid, converged, nothing to do.
    pub const OK: u8 = 0;
    /// Invalid spec or an error.
    pub const ERROR: u8 = 1;
    /// `plan`: changes are pending.
    pub const CHANGES_PENDING: u8 = 2;
    /// `reconcile`: the rollout halted on the failure budget.
    pub const HALTED: u8 = 3;
    /// The command line itself was wrong (sysexits' EX_USAGE).
    pub const USAGE: u8 = 64;
}

#[derive(Debug, Parser)]
#[command(
    name = "drover",
    version,
    about = "Declarative, stickiness-safe reconciler for PHP web clusters"
)]
pub struct Cli {
    /// Directory of spec files (*.yaml), read recursively.
    #[arg(long, global = true, default_value = "specs", env = "DROVER_SPECS")]
    pub specs: PathBuf,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse and check the specs; report every error with file:line:column.
    Validate,
    /// Print the JSON Schema of spec files.
    Schema,
    /// Generate configuration from the spec (a site LB's HAProxy configuration).
    Render {
        #[command(subcommand)]
        what: render::What,
    },
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    exit::OK
                }
                _ => exit::USAGE,
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    ExitCode::from(run(&cli))
}

pub fn run(cli: &Cli) -> u8 {
    match &cli.command {
        Command::Validate => validate::run(cli),
        Command::Schema => schema::run(),
        Command::Render { what } => render::run(cli, what),
    }
}
