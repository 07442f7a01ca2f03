//! Root filesystem snapshots before disruptive upgrades (issue 13), and the
//! operator's rollback to one (`drover rollback-node`).
//!
//! Each operation is one SSH round trip of a constant POSIX sh script; the
//! spec's values (volume, paths, hook name) and drover's snapshot name reach
//! it as positional parameters, never as shell text. Privileged commands go
//! through `sudo -n` one by one (`lvcreate`, `lvs`, `lvremove`, `lvconvert`,
//! `btrfs`, the hook), so a node's sudoers names exactly those.
//!
//! Only drover's own snapshots are ever pruned or rolled back to: names of the
//! exact form `drover-YYYYmmddTHHMMSSZ` (`is_drover_name`); the scripts match
//! them with the same pattern (`GLOB`).

use std::time::Duration;

use super::fleet::RealFleet;
use crate::model::{NodeId, SnapshotMethod};

/// drover's snapshot names as a shell pattern (`case`, globs): the same set
/// as `is_drover_name`.
const GLOB: &str = "drover-[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z";

/// Shared by the scripts: `fail WHAT OUTPUT` reports a command that failed
/// (its words and its output) on stderr and exits 2; `prune KEEP LISTED`
/// prints the drover names among LISTED (one per line) beyond the newest KEEP,
/// oldest first.
const COMMON: &str = r#"set -u
fail() { printf '`%s` failed:\n%s\n' "$1" "$2" >&2; exit 2; }
ours() { while IFS= read -r l; do case $l in @GLOB@) printf '%s\n' "$l" ;; esac; done | LC_ALL=C sort -u; }
prune() {
  all=$(printf '%s\n' "$2" | ours)
  total=$(printf '%s\n' "$all" | grep -c .)
  excess=$((total - $1))
  [ "$excess" -gt 0 ] || return 0
  printf '%s\n' "$all" | head -n "$excess"
}
"#;

/// LVM: `$1` VG, `$2` LV, `$3` size, `$4` name, `$5` keep. A snapshot of
/// `vg/lv`, then drover's snapshots of that LV beyond `keep` removed.
const LVM_TAKE: &str = r#"vg=$1 lv=$2 size=$3 name=$4 keep=$5
out=$(sudo -n lvcreate --snapshot --size "$size" --name "$name" -- "$vg/$lv" 2>&1) ||
  fail "lvcreate --snapshot --size $size --name $name $vg/$lv" "$out"
listed=$(sudo -n lvs --noheadings -o lv_name,origin -- "$vg" 2>&1) || fail "lvs -o lv_name,origin $vg" "$listed"
mine=$(printf '%s\n' "$listed" | while read -r n o rest; do [ "$o" = "$lv" ] && printf '%s\n' "$n"; done)
for old in $(prune "$keep" "$mine"); do
  out=$(sudo -n lvremove -y -- "$vg/$old" 2>&1) || fail "lvremove -y $vg/$old" "$out"
  printf 'removed %s\n' "$old"
done"#;

/// Btrfs: `$1` node root prefix, `$2` root subvolume path, `$3` snapshot
/// directory, `$4` name, `$5` keep. The directory is created as a subvolume
/// when missing (snapshots are not part of the root's snapshots then).
const BTRFS_TAKE: &str = r#"R=$1 path=$2 dir=$3 name=$4 keep=$5
src=$R$path d=$R$dir
if [ ! -d "$d" ]; then
  out=$(sudo -n btrfs subvolume create -- "$d" 2>&1) || fail "btrfs subvolume create $d" "$out"
fi
# Into an existing directory btrfs would put the snapshot inside it.
[ ! -e "$d/$name" ] || fail "btrfs subvolume snapshot -r $src $d/$name" "not run: $d/$name exists already"
out=$(sudo -n btrfs subvolume snapshot -r -- "$src" "$d/$name" 2>&1) ||
  fail "btrfs subvolume snapshot -r $src $d/$name" "$out"
mine=$(for p in "$d"/@GLOB@; do [ -d "$p" ] && printf '%s\n' "${p##*/}"; done)
for old in $(prune "$keep" "$mine"); do
  out=$(sudo -n btrfs subvolume delete -- "$d/$old" 2>&1) || fail "btrfs subvolume delete $d/$old" "$out"
  printf 'removed %s\n' "$old"
done"#;

/// Hook: `$1` node root prefix, `$2` hook name, `$3` name, `$4` keep.
const HOOK_TAKE: &str = r#"R=$1 hook=$2 name=$3 keep=$4
h=$R/etc/drover/hooks/$hook
out=$(sudo -n "$h" create "$name" 2>&1) || fail "$h create $name" "$out"
listed=$(sudo -n "$h" list 2>/dev/null) || fail "$h list" "$(sudo -n "$h" list 2>&1)"
for old in $(prune "$keep" "$listed"); do
  out=$(sudo -n "$h" delete "$old" 2>&1) || fail "$h delete $old" "$out"
  printf 'removed %s\n' "$old"
done"#;

/// LVM rollback: `$1` VG, `$2` LV, `$3` name. The snapshot must be one of
/// `vg/lv` (exit 5 otherwise); `lvconvert --merge` of a mounted origin is
/// deferred to its next activation (the reboot that follows).
const LVM_ROLLBACK: &str = r#"vg=$1 lv=$2 name=$3
if ! origin=$(sudo -n lvs --noheadings -o origin -- "$vg/$name"); then
  printf 'no logical volume %s/%s on this node\n' "$vg" "$name" >&2; exit 5
fi
set -- $origin
[ "${1:-}" = "$lv" ] || { printf '%s/%s is not a snapshot of %s/%s\n' "$vg" "$name" "$vg" "$lv" >&2; exit 5; }
out=$(sudo -n lvconvert --merge -- "$vg/$name" 2>&1) || fail "lvconvert --merge $vg/$name" "$out"
printf '%s\n' "$out""#;

/// Btrfs rollback: `$1` node root prefix, `$2` root path, `$3` snapshot
/// directory, `$4` name. The node must boot from its filesystem's default
/// subvolume (the root mounted at `path` is the default; exit 7 otherwise,
/// nothing changed). A writable snapshot `<dir>/<name>.root` of the
/// snapshot becomes the default subvolume: the next boot mounts it as `/`.
/// The replaced root stays as it was (a subvolume), for inspection.
const BTRFS_ROLLBACK: &str = r#"R=$1 path=$2 dir=$3 name=$4
root=$R$path snap=$R$dir/$name new=$R$dir/$name.root
sudo -n btrfs subvolume show -- "$snap" >/dev/null 2>&1 || { printf 'no snapshot %s on this node\n' "$snap" >&2; exit 5; }
cur=$(sudo -n btrfs inspect-internal rootid -- "$root" 2>&1) || fail "btrfs inspect-internal rootid $root" "$cur"
# get-default and set-default take no `--`; their paths are absolute.
def=$(sudo -n btrfs subvolume get-default "$root" 2>&1) || fail "btrfs subvolume get-default $root" "$def"
set -- $def
if [ "${1:-}" != ID ] || [ "${2:-}" != "$cur" ]; then
  printf 'the root %s is subvolume %s, not the default subvolume of its filesystem (%s): this node does not boot from the default subvolume, so set-default would not roll it back; nothing was changed\n' "$root" "$cur" "$def" >&2
  exit 7
fi
if [ -e "$new" ]; then
  printf '%s exists (an earlier rollback to %s): delete it first (btrfs subvolume delete)\n' "$new" "$name" >&2; exit 6
fi
out=$(sudo -n btrfs subvolume snapshot -- "$snap" "$new" 2>&1) || fail "btrfs subvolume snapshot $snap $new" "$out"
out=$(sudo -n btrfs subvolume set-default "$new" 2>&1) || fail "btrfs subvolume set-default $new" "$out"
printf 'default subvolume: %s (was %s)\n' "$new" "$cur""#;

/// Hook rollback: `$1` node root prefix, `$2` hook, `$3` name. The hook must
/// list the snapshot (exit 5 otherwise).
const HOOK_ROLLBACK: &str = r#"R=$1 hook=$2 name=$3
h=$R/etc/drover/hooks/$hook
listed=$(sudo -n "$h" list 2>/dev/null) || fail "$h list" "$(sudo -n "$h" list 2>&1)"
printf '%s\n' "$listed" | grep -qxF -- "$name" || { printf 'no snapshot %s on this node (`%s list` does not name it)\n' "$name" "$h" >&2; exit 5; }
out=$(sudo -n "$h" rollback "$name" 2>&1) || fail "$h rollback $name" "$out"
printf '%s\n' "$out""#;

/// The script: the shared functions, then `body`.
fn script(body: &str) -> String {
    format!("{COMMON}{body}").replace("@GLOB@", GLOB)
}

/// A name drover gives its snapshots: `drover-YYYYmmddTHHMMSSZ` (UTC),
/// nothing else. Only such names are pruned or rolled back to.
pub fn is_drover_name(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 23
        && s.starts_with("drover-")
        && b[7..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'T'
        && b[16..22].iter().all(u8::is_ascii_digit)
        && b[22] == b'Z'
}

/// drover's snapshots among a listing from the node (one name per line, as
/// `lvs`, a directory or a hook prints them): other lines ignored, oldest
/// first (the names sort chronologically), each once.
pub fn drover_names(listing: &str) -> Vec<String> {
    let mut names: Vec<String> =
        listing.lines().map(str::trim).filter(|l| is_drover_name(l)).map(String::from).collect();
    names.sort();
    names.dedup();
    names
}

/// Why a rollback was refused or failed (node, command, output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackError {
    pub message: String,
}

/// What a rollback did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolledBack {
    /// What the node's tool said (lvconvert, the new default subvolume, the hook).
    pub said: String,
}

impl RealFleet {
    /// `Action::Snapshot`: takes `name` with the node's profile's method, then
    /// removes drover's snapshots of it beyond `keep`, oldest first. Fails
    /// (with the node, the command and its output) if the profile declares
    /// no snapshot or any command fails: the window's upgrade does not start.
    pub(super) async fn snapshot(&self, n: NodeId, name: &str) -> Result<(), String> {
        let node = &self.fleet.nodes[n as usize];
        let profile = &self.fleet.profiles[node.profile as usize];
        let Some(snap) = &profile.snapshot else {
            return Err(format!("node {}: profile {} declares no snapshot method", node.name, profile.name));
        };
        if !is_drover_name(name) {
            return Err(format!("node {}: {name:?} is not a drover snapshot name", node.name));
        }
        let root = self.root(n);
        let keep = snap.keep.max(1).to_string();
        let (body, args): (&str, Vec<&str>) = match &snap.method {
            SnapshotMethod::Lvm { vg, lv, size } => (LVM_TAKE, vec![vg, lv, size, name, &keep]),
            SnapshotMethod::Btrfs { path, dir } => (BTRFS_TAKE, vec![&root, path, dir, name, &keep]),
            SnapshotMethod::Hook { hook } => (HOOK_TAKE, vec![&root, hook, name, &keep]),
        };
        let text = script(body);
        let mut argv = vec!["-c", text.as_str(), "drover-snapshot"];
        argv.extend(args);
        self.run(n, "sh", &argv, self.pool.config().command_timeout.max(Duration::from_secs(120)))
            .await
            .map(drop)
            .map_err(|e| format!("snapshot {name}: {e}"))
    }

    /// The operator's rollback of node `n` to drover's snapshot `name`: the
    /// method's rollback on the node (one round trip; refused there if the
    /// node has no such snapshot), then a reboot, waiting for a new boot id.
    /// The caller checks that the node is out of service and journals it.
    pub async fn rollback_node(
        &self,
        n: NodeId,
        name: &str,
        on_rebooting: impl FnOnce(&str),
    ) -> Result<RolledBack, RollbackError> {
        let node = &self.fleet.nodes[n as usize];
        let fail = |message: String| RollbackError { message };
        let profile = &self.fleet.profiles[node.profile as usize];
        let Some(snap) = &profile.snapshot else {
            return Err(fail(format!("node {}: profile {} declares no snapshot method", node.name, profile.name)));
        };
        if !is_drover_name(name) {
            return Err(fail(format!("{name:?} is not a snapshot drover took (drover-YYYYmmddTHHMMSSZ)")));
        }
        let root = self.root(n);
        let (body, args): (&str, Vec<&str>) = match &snap.method {
            SnapshotMethod::Lvm { vg, lv, .. } => (LVM_ROLLBACK, vec![vg, lv, name]),
            SnapshotMethod::Btrfs { path, dir } => (BTRFS_ROLLBACK, vec![&root, path, dir, name]),
            SnapshotMethod::Hook { hook } => (HOOK_ROLLBACK, vec![&root, hook, name]),
        };
        let text = script(body);
        let mut argv = vec!["-c", text.as_str(), "drover-rollback"];
        argv.extend(args);
        let said = self
            .run(n, "sh", &argv, self.pool.config().command_timeout.max(Duration::from_secs(120)))
            .await
            .map_err(|e| fail(format!("rollback to {name}: {e}")))?;
        let said = said.trim().to_string();
        on_rebooting(&said);
        // Whatever kernel it comes back with: a rolled-back root may list another
        // kernel than the one `/boot` holds.
        self.reboot_and_wait(n, false).await.map_err(fail)?;
        Ok(RolledBack { said })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_drovers_exact_names_are_drovers() {
        assert!(is_drover_name("drover-20261201T093500Z"));
        for bad in [
            "",
            "drover-",
            "drover-20261201T093500",
            "drover-20261201T093500Z.root",
            "drover-20261201T093500ZZ",
            "drover-2026120xT093500Z",
            "Drover-20261201T093500Z",
            "drover-20261201t093500Z",
            "root",
            "../drover-20261201T093500Z",
            "drover-20261201T09350éZ",
            "drover-20261201T093500Z\n",
            " drover-20261201T093500Z",
            "drover-٢٠٢٦1201T093500Z",
        ] {
            assert!(!is_drover_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn hostile_listings_give_only_drovers_names_sorted_once() {
        let listing = "drover-20261201T093500Z\n\
                       garbage \u{0}\u{7f}\r\n\
                       drover-20251201T000000Z\r\n\
                       drover-20261201T093500Z\n\
                       drover-20261201T093500Z.root\n\
                       snap-manual\n  drover-20240101T010101Z  \n\
                       $(rm -rf /)\n\u{1b}[31mred\n";
        assert_eq!(
            drover_names(listing),
            ["drover-20240101T010101Z", "drover-20251201T000000Z", "drover-20261201T093500Z"]
        );
        assert!(drover_names("").is_empty());
        let huge: String = "x".repeat(1 << 20) + "\n\u{ffff}\n" + &"\n".repeat(1000);
        assert!(drover_names(&huge).is_empty());
        // Not valid UTF-8 on the wire is made lossy by the SSH layer first.
        let lossy = String::from_utf8_lossy(b"\xff\xfedrover-20261201T093500Z\ndrover-20261201T093501Z\n");
        assert_eq!(drover_names(&lossy), ["drover-20261201T093501Z"]);
    }

    /// The scripts' pattern and `is_drover_name` agree, and the scripts are
    /// valid sh (`sh -n`) that prune exactly drover's oldest names.
    #[test]
    fn the_scripts_prune_only_drovers_oldest_names() {
        for body in [LVM_TAKE, BTRFS_TAKE, HOOK_TAKE, LVM_ROLLBACK, BTRFS_ROLLBACK, HOOK_ROLLBACK] {
            let out = std::process::Command::new("sh").args(["-n", "-c", &script(body)]).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            assert!(!script(body).contains("@GLOB@"));
        }
        let listed = "drover-20261203T000000Z\nmine-by-hand\ndrover-20261201T000000Z\n\
                      drover-20261201T000000Z.root\ndrover-20261202T000000Z\n$(touch /tmp/x)\n";
        let prune = |keep: &str| {
            let s = format!("{}prune \"$1\" \"$2\"", script(""));
            let out = std::process::Command::new("sh").args(["-c", &s, "t", keep, listed]).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap()
        };
        assert_eq!(prune("1"), "drover-20261201T000000Z\ndrover-20261202T000000Z\n");
        assert_eq!(prune("2"), "drover-20261201T000000Z\n");
        assert_eq!(prune("3"), "");
        assert_eq!(prune("5"), "");
    }
}
