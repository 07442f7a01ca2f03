//! Command-line shell: parse arguments, call the library, print, choose the
//! exit code. Deciding happens in the library; printing happens here.

mod daemon;
mod generate;
mod plan;
mod real;
mod reconcile;
mod render;
mod rollback;
mod schema;
mod simulate;
mod state_dir;
mod status;
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
    /// `plan`: changes are pending. `reconcile --once`: what remains waits
    /// for a change window (everything allowed now was done).
    pub const CHANGES_PENDING: u8 = 2;
    /// `reconcile`: the rollout halted on the failure budget.
    pub const HALTED: u8 = 3;
    /// `plan`, `reconcile --once`: some nodes could not be observed (SSH
    /// failed), so the fleet is not known to be converged; everything that
    /// answered is done (`reconcile`) or planned (`plan`). It outranks 0 and
    /// 2; an error or a stuck run (1), a halt (3) and a signal (130) outrank it.
    pub const UNOBSERVED: u8 = 4;
    /// `reconcile`: stopped by SIGINT/SIGTERM after the running actions finished.
    pub const INTERRUPTED: u8 = 130;
    /// The command line itself was wrong (sysexits' EX_USAGE).
    pub const USAGE: u8 = 64;
}

#[derive(Debug, Parser)]
#[command(name = "drover", version, about = "Declarative, stickiness-safe reconciler for PHP web clusters")]
pub struct Cli {
    /// Directory of spec files (*.yaml and *.yml), read recursively.
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

/// `drover plan --help`: what each exit code means, most severe first.
const PLAN_EXIT_CODES: &str = "\
Exit codes (when several apply, the first listed wins):
  1    error (invalid spec, an LB that does not answer, ...)
  4    some nodes could not be observed over SSH (listed with their address and the SSH error):
       the fleet is not known to be converged, whatever else is pending
  2    changes pending
  0    nothing to do: every node was observed at its target
  64   usage error";

/// `drover reconcile --help`: what each exit code means, most severe first.
const RECONCILE_EXIT_CODES: &str = "\
Exit codes of --once (when several apply, the first listed wins):
  130  stopped by SIGINT/SIGTERM (running actions finished; a second signal exits at once)
  1    error, or stuck: nothing could start for --stall
  3    halted: failures exceed the failure budget
  4    some nodes could not be observed over SSH (listed with their address and the SSH error):
       everything that answered is done, the silent nodes were re-probed for --stall
       (also when what is left waits for a change window)
  2    what is left waits for a change window that opens later than --stall from now
  0    converged: every node was observed at its target
  64   usage error
The daemon (without --once) exits 0 on SIGTERM/SIGINT, 1 on an error, 130 on a second signal.";

/// `drover rollback-node --help`.
const ROLLBACK_EXIT_CODES: &str = "\
Exit codes:
  0    rolled back: the node's tool set the snapshot to become the root and the node came back from its reboot
  1    refused (unknown node, a name that is not drover's, the node in service or in a window, no snapshot
       method, no such snapshot on the node, another drover holds the lease) or failed (the message says
       which command on which node, and `drover status` shows the record)
  64   usage error";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse and check the specs; report every error with file:line:column.
    Validate,
    /// Print the JSON Schema of spec files.
    Schema,
    /// Observe, diff, and show the ordered plan (waves, farm switches, why).
    #[command(after_help = PLAN_EXIT_CODES)]
    Plan(plan::PlanArgs),
    /// Converge the fleet: `--once` for CI, else the daemon.
    #[command(after_help = RECONCILE_EXIT_CODES)]
    Reconcile(reconcile::ReconcileArgs),
    /// The fleet as observed now: per site, farm and node the LB state, versions, drift, open windows.
    Status(status::StatusArgs),
    /// Roll a node out of service back to a root filesystem snapshot drover took before an upgrade, and reboot it.
    #[command(name = "rollback-node", after_help = ROLLBACK_EXIT_CODES)]
    RollbackNode(rollback::RollbackArgs),
    /// Generate configuration from the spec (a site LB's HAProxy configuration).
    Render {
        #[command(subcommand)]
        what: render::What,
    },
    /// Print the shell completion script (e.g. `source <(drover completions bash)`).
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff; `drover man | man -l -`), or write drover.1 and a page per subcommand.
    Man {
        /// Write drover.1 and drover-<subcommand>.1 into this directory (created if missing) instead.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => exit::OK,
                _ => exit::USAGE,
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    ExitCode::from(run(&cli))
}

unsafe extern "C" {
    fn signal(signum: i32, handler: usize) -> usize;
}

/// Lets a closed stdout end the process quietly, as for any Unix filter
/// (`drover plan | head`), instead of a panic in `println!`. Called before
/// printing, never while sockets are in use: a peer closing an SSH control
/// or HAProxy socket must stay an error drover handles, not a signal.
pub(crate) fn quiet_on_closed_stdout() {
    const SIGPIPE: i32 = 13;
    const SIG_DFL: usize = 0;
    // SAFETY: restores the default disposition of one signal; no handler runs Rust code.
    unsafe {
        signal(SIGPIPE, SIG_DFL);
    }
}

pub fn run(cli: &Cli) -> u8 {
    match &cli.command {
        Command::Validate => {
            quiet_on_closed_stdout();
            validate::run(cli)
        }
        Command::Schema => {
            quiet_on_closed_stdout();
            schema::run()
        }
        Command::Plan(a) => plan::run(cli, a),
        Command::Reconcile(a) => reconcile::run(cli, a),
        Command::Render { what } => {
            quiet_on_closed_stdout();
            render::run(cli, what)
        }
        Command::Status(a) => status::run(cli, a),
        Command::RollbackNode(a) => rollback::run(cli, a),
        Command::Completions { shell } => {
            quiet_on_closed_stdout();
            generate::completions(*shell)
        }
        Command::Man { out_dir } => {
            quiet_on_closed_stdout();
            generate::man(out_dir.as_deref())
        }
    }
}

/// Loads and validates the specs, printing diagnostics on failure.
pub(crate) fn load_fleet(cli: &Cli) -> Option<crate::model::Fleet> {
    match crate::spec::load(&cli.specs) {
        Err(e) => {
            eprintln!("error: {e}");
            None
        }
        Ok(crate::spec::Loaded::Invalid { diagnostics, files }) => {
            let report = crate::spec::diag::Report::of(diagnostics);
            eprint!("{}", report.render(&files));
            eprintln!("{}", report.summary(&cli.specs.display().to_string(), ": nothing was planned"));
            None
        }
        Ok(crate::spec::Loaded::Valid { fleet, .. }) => Some(fleet),
    }
}
