//! A real Btrfs root filesystem for a test node (`FleetOptions::btrfs_farms`):
//! what drover's snapshots (src/real/snapshot.rs) act on.
//!
//! Each such node gets a sparse image file on a loop device, formatted Btrfs,
//! laid out like a snapper machine: a subvolume `root`, the filesystem's
//! default subvolume, mounted (without `subvol=`, as a node booting from the
//! default subvolume does) as the node's root `NODE_ROOT`, and a subvolume
//! `snapshots` mounted at `NODE_ROOT/.snapshots`. One image per node, not per
//! fleet: the default subvolume, which a rollback changes, belongs to a
//! filesystem, as on real machines each with its own root filesystem.
//!
//! A "boot" of the node (`Disk::boot`, called by the node's reboot) mounts
//! the default subvolume again, so a rollback that made a snapshot the
//! default is what the node runs after its reboot. The guard unmounts,
//! detaches the loop device and removes the image when dropped (also when a
//! test panics); a run killed outright leaves mounts and loop devices that
//! the next holder of the slot releases (`release_stale`) before it cleans
//! the slot directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Image size: mkfs.btrfs needs ~110 MiB for a single device; sparse.
const IMAGE_BYTES: u64 = 256 << 20;

pub struct Disk {
    pub image: PathBuf,
    pub loopdev: String,
    /// NODE_ROOT: the default subvolume's mount point.
    pub root: PathBuf,
    /// NODE_ROOT/.snapshots: the `snapshots` subvolume's mount point.
    pub snapshots: PathBuf,
}

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program).args(args).output().map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{program} {}` exited with {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Why Btrfs on a loop device cannot be used here, if it cannot.
pub fn unavailable() -> Option<String> {
    for (bin, pkg) in [("mkfs.btrfs", "btrfs-progs"), ("btrfs", "btrfs-progs"), ("losetup", "mount")] {
        if !["/usr/sbin", "/usr/bin", "/sbin", "/bin"].iter().any(|d| Path::new(d).join(bin).is_file()) {
            return Some(format!("`{bin}` is missing (Debian package {pkg})"));
        }
    }
    let fs = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs.lines().any(|l| l.trim_end().ends_with("btrfs")) {
        let _ = Command::new("modprobe").arg("btrfs").output();
        let fs = fs::read_to_string("/proc/filesystems").unwrap_or_default();
        if !fs.lines().any(|l| l.trim_end().ends_with("btrfs")) {
            return Some("the kernel has no btrfs filesystem (/proc/filesystems)".into());
        }
    }
    None
}

impl Disk {
    /// An image in `node_dir`, formatted, its subvolumes created, and
    /// mounted at `root` (created if missing).
    pub fn create(node_dir: &Path, root: &Path) -> Result<Disk, String> {
        if let Some(why) = unavailable() {
            return Err(format!("a Btrfs node root needs Btrfs on a loop device: {why}"));
        }
        fs::create_dir_all(node_dir).map_err(|e| e.to_string())?;
        let image = node_dir.join("root.btrfs");
        let f = fs::File::create(&image).map_err(|e| format!("{}: {e}", image.display()))?;
        f.set_len(IMAGE_BYTES).map_err(|e| e.to_string())?;
        drop(f);
        let loopdev = run("losetup", &["-f", "--show", &image.display().to_string()])?.trim().to_string();
        let disk = Disk { image, loopdev, root: root.to_path_buf(), snapshots: root.join(".snapshots") };
        // From here on, dropping `disk` releases what exists.
        run("mkfs.btrfs", &["-q", "-f", &disk.loopdev])?;
        let top = node_dir.join("btrfs-top");
        fs::create_dir_all(&top).map_err(|e| e.to_string())?;
        let top_s = top.display().to_string();
        run("mount", &["-o", "subvolid=5", &disk.loopdev, &top_s])?;
        let layout = (|| {
            run("btrfs", &["-q", "subvolume", "create", &format!("{top_s}/root")])?;
            run("btrfs", &["-q", "subvolume", "create", &format!("{top_s}/snapshots")])?;
            fs::create_dir(top.join("root/.snapshots")).map_err(|e| e.to_string())?;
            run("btrfs", &["subvolume", "set-default", &format!("{top_s}/root")]).map(drop)
        })();
        let _ = run("umount", &[&top_s]);
        let _ = fs::remove_dir(&top);
        layout?;
        disk.boot()?;
        Ok(disk)
    }

    /// Mounts the default subvolume at the node root and `snapshots` on its
    /// `.snapshots`, as the node's boot would (`/etc/fstab`), after
    /// unmounting what was there.
    pub fn boot(&self) -> Result<(), String> {
        self.unmount();
        fs::create_dir_all(&self.root).map_err(|e| e.to_string())?;
        run("mount", &[&self.loopdev, &self.root.display().to_string()])?;
        fs::create_dir_all(&self.snapshots).map_err(|e| e.to_string())?;
        run("mount", &["-o", "subvol=snapshots", &self.loopdev, &self.snapshots.display().to_string()]).map(drop)
    }

    fn unmount(&self) {
        for m in [&self.snapshots, &self.root] {
            if mounted_at(m) {
                let _ = run("umount", &["-l", &m.display().to_string()]);
            }
        }
    }

    /// `btrfs subvolume list -o` of the snapshots subvolume: the names in it.
    pub fn snapshot_names(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&self.snapshots)
            .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Subvolumes of the filesystem (`btrfs subvolume list`): their paths.
    pub fn subvolumes(&self) -> Vec<String> {
        run("btrfs", &["subvolume", "list", &self.root.display().to_string()])
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.rsplit_once(" path ").map(|(_, p)| p.to_string()))
            .collect()
    }

    /// The default subvolume's path (`btrfs subvolume get-default`).
    pub fn default_subvolume(&self) -> String {
        run("btrfs", &["subvolume", "get-default", &self.root.display().to_string()])
            .unwrap_or_default()
            .trim()
            .rsplit_once(" path ")
            .map(|(_, p)| p.to_string())
            .unwrap_or_default()
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        self.unmount();
        let _ = run("losetup", &["-d", &self.loopdev]);
        let _ = fs::remove_file(&self.image);
    }
}

/// Mount points in /proc/self/mountinfo (field 5, octal escapes decoded).
fn mount_points() -> Vec<PathBuf> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")))
        .collect()
}

fn mounted_at(p: &Path) -> bool {
    mount_points().iter().any(|m| m == p)
}

/// What a killed run left under `dir`: its mounts (deepest first, lazily)
/// and the loop devices backed by files under it.
pub fn release_stale(dir: &Path) {
    let mut under: Vec<PathBuf> = mount_points().into_iter().filter(|m| m.starts_with(dir)).collect();
    under.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for m in under {
        let _ = run("umount", &["-l", &m.display().to_string()]);
    }
    let Ok(list) = run("losetup", &["-n", "-O", "NAME,BACK-FILE", "-l"]) else { return };
    for l in list.lines() {
        if let Some((dev, file)) = l.trim().split_once(char::is_whitespace)
            && Path::new(file.trim().trim_end_matches(" (deleted)")).starts_with(dir)
        {
            let _ = run("losetup", &["-d", dev]);
        }
    }
}
