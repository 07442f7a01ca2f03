//! `drover completions` and `drover man`: shell completion scripts and
//! manual pages generated from the clap definitions, so they never drift
//! from what the binary accepts. The committed copy of the pages is
//! `dist/man/` (a test fails when it is stale).

use std::path::{Path, PathBuf};

use clap::CommandFactory;

use super::{Cli, exit};

/// The command tree the pages describe: `drover help` is clap's, not a
/// page of its own (as `clap_mangen::generate_to` does it).
fn man_command() -> clap::Command {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// Prints the completion script of `shell` on stdout.
pub fn completions(shell: clap_complete::Shell) -> u8 {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "drover", &mut std::io::stdout());
    exit::OK
}

/// Prints drover.1 on stdout, or writes drover.1 and one page per
/// subcommand (`drover-reconcile.1`, `drover-render-haproxy.1`, ...) into `out_dir`.
pub fn man(out_dir: Option<&Path>) -> u8 {
    let result = match out_dir {
        None => clap_mangen::Man::new(man_command()).render(&mut std::io::stdout().lock()),
        Some(dir) => write_pages(dir).map(|written| {
            for p in written {
                println!("{}", p.display());
            }
        }),
    };
    match result {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("error: {e}");
            exit::ERROR
        }
    }
}

/// Writes every page into `dir` (created if missing) and returns their
/// paths. Pages of subcommands that no longer exist are not removed.
fn write_pages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    fn write(cmd: &clap::Command, dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        out.push(clap_mangen::Man::new(cmd.clone()).generate_to(dir)?);
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            write(sub, dir, out)?;
        }
        Ok(())
    }
    let in_dir = |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(in_dir)?;
    let mut pages = Vec::new();
    write(&man_command(), dir, &mut pages).map_err(in_dir)?;
    Ok(pages)
}
