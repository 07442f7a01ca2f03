//! `drover reconcile`: converge the fleet (`--once`) or run as a daemon.

use super::{Cli, exit, simulate};
use crate::spec;

#[derive(Debug, Clone, clap::Args)]
pub struct ReconcileArgs {
    /// Converge once and exit (CI); without it drover runs as a daemon.
    #[arg(long)]
    pub once: bool,
    /// Run against the simulated fleet instead of the real one.
    #[arg(long)]
    pub simulate: bool,
    #[command(flatten)]
    pub sim: simulate::SimArgs,
}

pub fn run(cli: &Cli, args: &ReconcileArgs) -> u8 {
    let Some(fleet) = super::load_fleet(cli) else {
        return exit::ERROR;
    };
    if !args.simulate {
        eprintln!("error: the real-fleet reconciler is not available in this build yet; use --simulate");
        return exit::USAGE;
    }
    if !args.once {
        eprintln!("error: the daemon mode is not available in this build yet; use --once");
        return exit::USAGE;
    }
    let _ = spec::MAX_FILE_BYTES;
    simulate::reconcile(cli, &fleet, &args.sim)
}
