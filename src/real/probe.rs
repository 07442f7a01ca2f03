//! Observation of one node in one round trip: a constant POSIX sh script
//! (`probe.sh`) sent over the node's existing SSH master, whose `key value`
//! lines are parsed here. It needs only `sh` on the remote user's PATH, so it
//! also works for a restricted login shell (rbash) that may run `sh`.

use crate::model::{PhpVersion, ReleaseId};
use crate::spec::values::{parse_atom, parse_php_version, parse_release_id};

use super::ssh::{Pool, RemoteError, RemoteErrorKind};

/// The probe script (see `probe.sh`): read-only, no arguments.
pub const SCRIPT: &str = include_str!("probe.sh");

/// What the probe reports of a node.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Probe {
    /// `$NODE_ROOT` (empty on a real node): prefix of every path drover touches.
    pub root: String,
    pub boot_id: String,
    /// `uname -r` (`/proc/sys/kernel/osrelease`).
    pub kernel_running: Option<String>,
    /// What the boot loader boots next: the newest installed `sys-kernel/*`
    /// package, named as that kernel names itself (`6.6.62-gentoo-dist`).
    pub kernel_installed: Option<String>,
    /// Installed `(category/name, version)`, the newest per package (kernels are slotted).
    pub packages: Vec<(String, String)>,
    /// A merge is under way (`-MERGING-` entries in /var/db/pkg).
    pub merging: bool,
    /// Binary packages fetched into /var/cache/binpkgs.
    pub fetched: Vec<(String, String)>,
    pub php_installed: Vec<PhpVersion>,
    pub php_active: Option<PhpVersion>,
    pub releases_installed: Vec<ReleaseId>,
    pub release_active: Option<ReleaseId>,
}

/// Parses the probe's output; an answer without its `end` line was cut off.
pub fn parse(out: &str) -> Result<Probe, String> {
    let mut p = Probe::default();
    let mut lines = out.lines();
    match lines.next() {
        Some("drover-probe 1") => {}
        other => return Err(format!("not a drover probe answer (first line {:?})", other.unwrap_or(""))),
    }
    let mut ended = false;
    for line in lines {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "root" => p.root = value.to_string(),
            "boot" => p.boot_id = value.to_string(),
            "kernel" => p.kernel_running = Some(value.to_string()),
            "pkg" => {
                if let Some((k, v)) = split_package(value) {
                    upsert_newest(&mut p.packages, k, v);
                }
            }
            "merging" => p.merging = true,
            "binpkg" => {
                if let Some((k, v)) = binpkg_package(value) {
                    p.fetched.push((k, v));
                }
            }
            "php" => p.php_installed.extend(parse_php_version(value).ok()),
            "php-active" => p.php_active = last_component(value).and_then(|v| parse_php_version(v).ok()),
            "release" => p.releases_installed.extend(parse_release_id(value).ok()),
            "release-active" => p.release_active = last_component(value).and_then(|v| parse_release_id(v).ok()),
            "end" => ended = true,
            _ => {}
        }
    }
    if !ended {
        return Err("the probe's answer was cut off (no `end` line)".into());
    }
    if p.boot_id.is_empty() {
        return Err("the probe could not read the boot id (/proc/sys/kernel/random/boot_id)".into());
    }
    p.kernel_installed = p
        .packages
        .iter()
        .filter(|(k, _)| k.starts_with("sys-kernel/"))
        .max_by(|a, b| version_cmp(&a.1, &b.1))
        .map(|(k, v)| kernel_release(k, v));
    p.php_installed.sort();
    p.releases_installed.sort();
    p.fetched.sort();
    p.fetched.dedup();
    Ok(p)
}

fn last_component(path: &str) -> Option<&str> {
    path.rsplit('/').next().filter(|s| !s.is_empty())
}

/// `cat/pkg-ver` into (`cat/pkg`, `ver`).
fn split_package(cpv: &str) -> Option<(String, String)> {
    let a = parse_atom(cpv).ok()?;
    Some((a.key(), a.version.to_string()))
}

/// A binary package path under /var/cache/binpkgs: `cat/pf.tbz2`,
/// `cat/pf.gpkg.tar`, or with `binpkg-multi-instance` (Portage's default)
/// `cat/pn/pf-<build>.gpkg.tar` or, with `BINPKG_FORMAT=xpak`, `cat/pn/pf-<build>.xpak`.
fn binpkg_package(path: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        [cat, file] => {
            let pf = file.strip_suffix(".tbz2").or_else(|| file.strip_suffix(".gpkg.tar"))?;
            split_package(&format!("{cat}/{pf}"))
        }
        [cat, _pn, file] => {
            let stem = file.strip_suffix(".gpkg.tar").or_else(|| file.strip_suffix(".xpak"))?;
            let (pf, build) = stem.rsplit_once('-')?;
            if build.is_empty() || !build.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            split_package(&format!("{cat}/{pf}"))
        }
        _ => None,
    }
}

fn upsert_newest(list: &mut Vec<(String, String)>, key: String, version: String) {
    match list.iter_mut().find(|(k, _)| *k == key) {
        Some(entry) => {
            if version_cmp(&version, &entry.1).is_gt() {
                entry.1 = version;
            }
        }
        None => list.push((key, version)),
    }
}

/// Gentoo versions compared with natural order (digit runs as numbers):
/// right for the dotted versions and `-rN` revisions drover's targets use.
fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    ReleaseId(a.into()).cmp(&ReleaseId(b.into()))
}

/// The `uname -r` a kernel package boots: Gentoo's distribution kernels
/// (`gentoo-kernel`, `gentoo-kernel-bin`) name themselves `6.6.62-gentoo-dist`
/// (`6.6.62-gentoo-r1-dist` for a revision), `gentoo-sources` `6.6.62-gentoo`.
pub fn kernel_release(key: &str, version: &str) -> String {
    let (v, rev) = match version.rsplit_once("-r") {
        Some((v, r)) if !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()) => (v, Some(r)),
        _ => (version, None),
    };
    let rev = rev.map(|r| format!("-r{r}")).unwrap_or_default();
    match key {
        "sys-kernel/gentoo-kernel" | "sys-kernel/gentoo-kernel-bin" => format!("{v}-gentoo{rev}-dist"),
        "sys-kernel/gentoo-sources" => format!("{v}-gentoo{rev}"),
        _ => format!("{v}{rev}"),
    }
}

/// Runs the probe on one node.
pub async fn probe(pool: &Pool, host: &str, port: u16) -> Result<Probe, RemoteError> {
    let done = pool.run(host, port, "sh", &["-c", SCRIPT, "drover-probe"]).await?;
    parse(&done.stdout).map_err(|e| RemoteError {
        host: host.to_string(),
        command: "sh -c <probe>".into(),
        kind: RemoteErrorKind::Exit { code: Some(0), stderr: e },
    })
}

/// Runs the probe on every `(host, port)` at once (bounded by the pool).
pub async fn probe_all(pool: &Pool, targets: &[(String, u16)]) -> Vec<Result<Probe, RemoteError>> {
    futures::future::join_all(targets.iter().map(|(h, p)| probe(pool, h, *p))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = "drover-probe 1
root /tmp/n1/root
boot 3f2a-11
kernel 6.6.58-gentoo-dist
pkg dev-libs/openssl-3.0.15-r1
pkg sys-kernel/gentoo-kernel-bin-6.6.58
pkg sys-kernel/gentoo-kernel-bin-6.6.62
pkg sys-kernel/gentoo-kernel-bin-6.6.9
pkg www-servers/apache-2.4.62
binpkg dev-libs/openssl-3.0.16.gpkg.tar
binpkg sys-kernel/gentoo-kernel-bin/gentoo-kernel-bin-6.6.63-1.gpkg.tar
binpkg www-servers/apache-2.4.63.tbz2
binpkg Packages
php 8.2.26
php 8.3.14
php lost+found
php-active /tmp/n1/root/opt/php/8.3.14
release 2026.11.2
release 2026.10.30
release-active /tmp/n1/root/srv/app/releases/2026.11.2
end
";

    #[test]
    fn parses_every_fact() {
        let p = parse(ANSWER).unwrap();
        assert_eq!(p.root, "/tmp/n1/root");
        assert_eq!(p.boot_id, "3f2a-11");
        assert_eq!(p.kernel_running.as_deref(), Some("6.6.58-gentoo-dist"));
        // 6.6.62 is newer than 6.6.9 and 6.6.58 (not a string comparison).
        assert_eq!(p.kernel_installed.as_deref(), Some("6.6.62-gentoo-dist"));
        assert!(p.packages.contains(&("sys-kernel/gentoo-kernel-bin".into(), "6.6.62".into())));
        assert!(p.packages.contains(&("dev-libs/openssl".into(), "3.0.15-r1".into())));
        assert_eq!(p.packages.len(), 3);
        assert_eq!(
            p.fetched,
            vec![
                ("dev-libs/openssl".into(), "3.0.16".into()),
                ("sys-kernel/gentoo-kernel-bin".into(), "6.6.63".into()),
                ("www-servers/apache".into(), "2.4.63".into()),
            ]
        );
        assert_eq!(p.php_installed.iter().map(|v| v.to_string()).collect::<Vec<_>>(), ["8.2.26", "8.3.14"]);
        assert_eq!(p.php_active.unwrap().to_string(), "8.3.14");
        assert_eq!(p.releases_installed.iter().map(|v| v.to_string()).collect::<Vec<_>>(), ["2026.10.30", "2026.11.2"]);
        assert_eq!(p.release_active.unwrap().to_string(), "2026.11.2");
        assert!(!p.merging);
    }

    #[test]
    fn a_cut_off_or_foreign_answer_is_an_error() {
        assert!(parse(&ANSWER.replace("end\n", "")).unwrap_err().contains("cut off"));
        assert!(parse("Last login: yesterday\n").unwrap_err().contains("not a drover probe"));
        assert!(parse("").is_err());
    }

    #[test]
    fn a_merge_in_progress_is_reported() {
        let p =
            parse(&ANSWER.replace("pkg www-servers", "merging www-servers/-MERGING-apache-2.4.63\npkg www-servers"))
                .unwrap();
        assert!(p.merging);
    }

    #[test]
    fn kernel_names() {
        assert_eq!(kernel_release("sys-kernel/gentoo-kernel-bin", "6.6.62-r1"), "6.6.62-gentoo-r1-dist");
        assert_eq!(kernel_release("sys-kernel/gentoo-sources", "6.6.62"), "6.6.62-gentoo");
    }

    /// A node root laid out like a real one, in a fresh temporary directory.
    fn node_root(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("drover-probe-{tag}-{}", std::process::id()));
        let r = dir.join("root");
        for d in
            ["proc/sys/kernel/random", "var/db/pkg/dev-libs/openssl-3.0.15", "opt/php/8.3.14", "srv/app/releases/r1"]
        {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::write(r.join("proc/sys/kernel/random/boot_id"), "b-1\n").unwrap();
        std::fs::write(r.join("proc/sys/kernel/osrelease"), "6.6.62-gentoo-dist\n").unwrap();
        std::os::unix::fs::symlink("8.3.14", r.join("opt/php/current")).unwrap();
        std::os::unix::fs::symlink("releases/r1", r.join("srv/app/current")).unwrap();
        dir
    }

    /// A restricted login shell (the seeds' rbash user) whose PATH holds
    /// nothing but `sh`: sshd runs `rbash -c '<command line>'`, and the probe
    /// needs no other program.
    #[test]
    fn the_probe_runs_under_rbash_with_only_sh_on_the_path() {
        let rbash = ["/bin/rbash", "/usr/bin/rbash"].into_iter().find(|p| std::path::Path::new(p).exists());
        let Some(rbash) = rbash else {
            eprintln!("skipped: no rbash on this machine");
            return;
        };
        let dir = node_root("rbash");
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink("/bin/sh", bin.join("sh")).unwrap();
        // The command line as the remote shell receives it: each word single-quoted.
        let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
        let line = format!("sh -c {} drover-probe", quote(SCRIPT));
        let out = std::process::Command::new(rbash)
            .args(["-c", &line])
            .env_clear()
            .env("PATH", &bin)
            .env("NODE_ROOT", dir.join("root"))
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let p = parse(&String::from_utf8(out.stdout).unwrap()).unwrap();
        assert_eq!(p.boot_id, "b-1");
        assert_eq!(p.php_active.unwrap().to_string(), "8.3.14");
        assert_eq!(p.release_active.unwrap().to_string(), "r1");
        // And rbash itself refuses what the probe avoids: a command with a slash.
        let refused =
            std::process::Command::new(rbash).args(["-c", "/bin/sh -c true"]).env("PATH", &bin).output().unwrap();
        assert!(!refused.status.success());
    }

    /// Real Portage's multi-instance names in both formats (gpkg, the
    /// default since 2024, and xpak, which many nodes still use).
    #[test]
    fn multi_instance_binpkgs_of_both_formats_count_as_fetched() {
        let dir = node_root("multi-instance");
        let r = dir.join("root");
        for (d, f) in [
            ("var/cache/binpkgs/app-arch/tar", "tar-1.35-2.xpak"),
            ("var/cache/binpkgs/dev-libs/openssl", "openssl-3.0.15-r1-1.gpkg.tar"),
            ("var/cache/binpkgs/dev-libs/openssl", "openssl-3.0.16-1.gpkg.tar.partial"),
        ] {
            std::fs::create_dir_all(r.join(d)).unwrap();
            std::fs::write(r.join(d).join(f), "").unwrap();
        }
        let out = std::process::Command::new("sh")
            .args(["-c", SCRIPT, "drover-probe"])
            .env("NODE_ROOT", &r)
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let p = parse(&String::from_utf8(out.stdout).unwrap()).unwrap();
        assert_eq!(
            p.fetched,
            vec![
                ("app-arch/tar".to_string(), "1.35".to_string()),
                ("dev-libs/openssl".to_string(), "3.0.15-r1".to_string())
            ],
            "a download in progress (.partial) is not fetched"
        );
    }

    /// The script itself, run by the local sh on a node root laid out like a real one.
    #[test]
    fn the_script_reads_a_node_root() {
        let dir = node_root("script");
        let r = dir.join("root");
        for d in ["var/db/pkg/www-servers/-MERGING-apache-2.4.63", "var/cache/binpkgs/dev-libs", "srv/app/releases/r2"]
        {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::write(r.join("var/cache/binpkgs/dev-libs/openssl-3.0.16.gpkg.tar"), "").unwrap();
        std::fs::remove_file(r.join("srv/app/current")).unwrap();
        std::os::unix::fs::symlink("releases/r2", r.join("srv/app/current")).unwrap();
        let out = std::process::Command::new("sh")
            .args(["-c", SCRIPT, "drover-probe"])
            .env("NODE_ROOT", &r)
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let p = parse(&String::from_utf8(out.stdout).unwrap()).unwrap();
        assert_eq!(p.boot_id, "b-1");
        assert_eq!(p.packages, vec![("dev-libs/openssl".to_string(), "3.0.15".to_string())]);
        assert_eq!(p.fetched, vec![("dev-libs/openssl".to_string(), "3.0.16".to_string())]);
        assert!(p.merging);
        assert_eq!(p.php_installed.len(), 1, "the `current` link is not a PHP tree");
        assert_eq!(p.php_active.unwrap().to_string(), "8.3.14");
        assert_eq!(p.releases_installed.len(), 2);
        assert_eq!(p.release_active.unwrap().to_string(), "r2");
    }
}
