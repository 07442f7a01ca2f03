//! Where drover keeps its state (the journal, the lease, the `--git`
//! checkout) when `--state-dir` does not say: the platform's convention,
//! never the current directory (a state left in whatever directory drover
//! was started from is a second journal the next run does not see).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The system-wide state directory: root's, and the service's (the systemd
/// unit and the OpenRC script pass it explicitly too).
pub const SYSTEM: &str = "/var/lib/drover";

/// The state directory, first that applies:
/// 1. `--state-dir DIR`, or `$DROVER_STATE_DIR` (clap reads both into `explicit`);
/// 2. `$STATE_DIRECTORY` (systemd sets it for a unit with `StateDirectory=`; its first entry);
/// 3. `/var/lib/drover` when running as root;
/// 4. `$XDG_STATE_HOME/drover`;
/// 5. `$HOME/.local/state/drover`.
///
/// Empty and relative values of the environment variables are ignored (the
/// XDG base directory rule): a relative one would put the state in the
/// current directory again. Without any of them it is an error, not a guess.
pub fn resolve(explicit: Option<&Path>, root: bool, env: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf, String> {
    if let Some(dir) = explicit {
        return Ok(dir.to_path_buf());
    }
    let absolute = |name: &str| {
        env(name).and_then(|v| {
            // systemd: several directories are separated by colons; ours is the first.
            let first = if name == "STATE_DIRECTORY" {
                v.to_string_lossy().split(':').next().map(OsString::from).unwrap_or_default()
            } else {
                v
            };
            let p = PathBuf::from(first);
            p.is_absolute().then_some(p)
        })
    };
    if let Some(dir) = absolute("STATE_DIRECTORY") {
        return Ok(dir);
    }
    if root {
        return Ok(PathBuf::from(SYSTEM));
    }
    if let Some(base) = absolute("XDG_STATE_HOME") {
        return Ok(base.join("drover"));
    }
    if let Some(home) = absolute("HOME") {
        return Ok(home.join(".local/state/drover"));
    }
    Err("no state directory: HOME is not set (nor XDG_STATE_HOME) and drover does not run as root; \
         name one with --state-dir DIR or DROVER_STATE_DIR (it holds the journal and the lease)"
        .into())
}

/// Whether the state directory was named (`--state-dir`, `DROVER_STATE_DIR`,
/// or systemd's `STATE_DIRECTORY`) rather than taken by default: the
/// simulated daemon keeps its world only in a directory someone chose.
pub fn named(explicit: Option<&Path>, env: impl Fn(&str) -> Option<OsString>) -> bool {
    explicit.is_some() || resolve(None, false, |name| if name == "STATE_DIRECTORY" { env(name) } else { None }).is_ok()
}

/// `named` for this process.
pub fn named_for_this_process(explicit: Option<&Path>) -> bool {
    named(explicit, |name| std::env::var_os(name))
}

unsafe extern "C" {
    fn geteuid() -> u32;
}

/// `resolve` for this process: its effective user and environment.
pub fn for_this_process(explicit: Option<&Path>) -> Result<PathBuf, String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { geteuid() } == 0;
    resolve(explicit, root, |name| std::env::var_os(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| OsString::from(v))
    }

    #[test]
    fn the_state_directory_follows_the_platform_convention_in_order() {
        let all = [("STATE_DIRECTORY", "/srv/state:/other"), ("XDG_STATE_HOME", "/x/state"), ("HOME", "/home/op")];
        let at = |explicit: Option<&str>, root: bool, vars: &[(&str, &str)]| {
            resolve(explicit.map(Path::new), root, env(vars)).map(|p| p.display().to_string())
        };
        // --state-dir / DROVER_STATE_DIR win over everything, relative or not.
        assert_eq!(at(Some("here"), true, &all), Ok("here".into()));
        // systemd's StateDirectory=, its first entry.
        assert_eq!(at(None, false, &all), Ok("/srv/state".into()));
        assert_eq!(at(None, true, &all), Ok("/srv/state".into()));
        // Root: the system directory, whatever its HOME.
        assert_eq!(at(None, true, &all[1..]), Ok("/var/lib/drover".into()));
        // A user: XDG_STATE_HOME, else ~/.local/state.
        assert_eq!(at(None, false, &all[1..]), Ok("/x/state/drover".into()));
        assert_eq!(at(None, false, &all[2..]), Ok("/home/op/.local/state/drover".into()));
        // Empty or relative values are ignored (never the current directory).
        let odd = [("STATE_DIRECTORY", ""), ("XDG_STATE_HOME", "state"), ("HOME", "/home/op")];
        assert_eq!(at(None, false, &odd), Ok("/home/op/.local/state/drover".into()));
        // Nothing to go by: a clear error naming the way out.
        for vars in [&[][..], &[("HOME", "")][..], &[("HOME", "relative"), ("XDG_STATE_HOME", "")][..]] {
            let e = at(None, false, vars).unwrap_err();
            assert!(e.contains("--state-dir") && e.contains("DROVER_STATE_DIR") && e.contains("HOME"), "{e}");
        }
    }

    #[test]
    fn a_state_directory_is_named_by_the_option_or_systemd_never_by_default() {
        let named = |explicit: Option<&str>, vars: &[(&str, &str)]| super::named(explicit.map(Path::new), env(vars));
        assert!(named(Some("here"), &[]));
        assert!(named(None, &[("STATE_DIRECTORY", "/srv/state:/other")]));
        // The defaults are not a choice: XDG, HOME, and a relative or empty STATE_DIRECTORY.
        assert!(!named(None, &[("XDG_STATE_HOME", "/x/state"), ("HOME", "/home/op")]));
        assert!(!named(None, &[("STATE_DIRECTORY", "relative"), ("HOME", "/home/op")]));
        assert!(!named(None, &[("STATE_DIRECTORY", "")]));
    }
}
