//! A slot is one fleet's private piece of the machine: the loopback range
//! 127.<n>.0.0/16 and the directory /tmp/drover-fleet/s<n>. Tests of one
//! binary run in parallel threads, and other test runs may share the machine,
//! so a slot is held with an flock(2) on its lock file: the kernel releases it
//! when the holder exits, however it dies. Taking a slot first kills what a
//! dead holder left running (by the PID files in the slot directory).

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::procs;

pub const BASE: &str = "/tmp/drover-fleet";
/// Second octets handed out: 127.0.x.x is left to the machine's own services.
const FIRST: u8 = 20;
const LAST: u8 = 250;

pub struct Slot {
    /// The second octet of every address of this fleet.
    pub n: u8,
    pub dir: PathBuf,
    _lock: File,
}

impl Slot {
    pub fn acquire(test: &str) -> Slot {
        let base = PathBuf::from(BASE);
        fs::create_dir_all(&base).expect("create /tmp/drover-fleet");
        // The node user must traverse it to reach node roots.
        let _ = fs::set_permissions(&base, fs::Permissions::from_mode(0o755));
        for n in FIRST..=LAST {
            let lock = match File::create(base.join(format!("s{n}.lock"))) {
                Ok(f) => f,
                Err(e) => panic!("cannot create the lock file of slot {n} in {BASE}: {e}"),
            };
            if lock.try_lock().is_err() {
                continue;
            }
            let dir = base.join(format!("s{n}"));
            if dir.exists() {
                let markers = [format!("{}/", dir.display()), format!("127.{n}.")];
                procs::kill_stale(&dir, &markers);
                // Btrfs node roots (btrfs.rs) of a run killed outright.
                super::btrfs::release_stale(&dir);
                fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("cannot clean {}: {e}", dir.display()));
            }
            fs::create_dir_all(&dir).expect("create slot dir");
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod slot dir");
            fs::write(dir.join("owner"), format!("test {test}, pid {}\n", std::process::id()))
                .expect("write slot owner");
            return Slot { n, dir, _lock: lock };
        }
        panic!("no free test-fleet slot in {BASE} ({FIRST}..={LAST} are all held)");
    }
}
