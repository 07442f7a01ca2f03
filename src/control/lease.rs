//! Exclusivity: one drover acts on a fleet at a time. A `LeaseStore` hands
//! out at most one lease; the holder keeps it while it runs and loses it
//! when it ends, also when it crashes. `FileLeases` is an advisory lock
//! (`flock`) on a file in the state directory: the kernel releases it when
//! the holder dies, so a crashed drover never keeps it. A store shared by
//! several machines (a database row with a TTL, say) can implement the same
//! trait for replicas.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Someone else holds the lease.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    #[error("another drover holds the lease on this fleet ({holder}); wait for it to finish, or stop it")]
    Held { holder: String },
    #[error("cannot take the lease {path}: {reason}")]
    Io { path: String, reason: String },
}

pub trait LeaseStore {
    /// Held until dropped.
    type Lease;
    /// Takes the lease now, or says who holds it; never waits.
    fn try_acquire(&self, holder: &str) -> Result<Self::Lease, LeaseError>;
}

/// `flock` on `<state dir>/lease`.
pub struct FileLeases {
    path: PathBuf,
}

/// The held lock; the file records who holds it (for the error others see).
pub struct FileLease {
    _file: File,
}

impl FileLeases {
    pub fn new(state_dir: &Path) -> FileLeases {
        FileLeases { path: state_dir.join("lease") }
    }
}

impl LeaseStore for FileLeases {
    type Lease = FileLease;

    fn try_acquire(&self, holder: &str) -> Result<FileLease, LeaseError> {
        let io = |e: std::io::Error| LeaseError::Io { path: self.path.display().to_string(), reason: e.to_string() };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&self.path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut who = String::new();
                let _ = file.read_to_string(&mut who);
                let holder = if who.trim().is_empty() { "unknown holder".to_string() } else { who.trim().to_string() };
                return Err(LeaseError::Held { holder });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        file.write_all(holder.as_bytes()).map_err(io)?;
        Ok(FileLease { _file: file })
    }
}

/// How a drover process names itself as a holder.
pub fn this_process() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("pid {} on {}", std::process::id(), host.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_released_on_drop() {
        let dir = std::env::temp_dir().join(format!("drover-lease-{}", std::process::id()));
        let store = FileLeases::new(&dir);
        let first = store.try_acquire("pid 1 on a").unwrap();
        // A second open file description of the same file is refused (as another process would be).
        assert_eq!(store.try_acquire("pid 2 on b").err(), Some(LeaseError::Held { holder: "pid 1 on a".into() }));
        drop(first);
        let second = store.try_acquire("pid 2 on b");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(second.is_ok());
    }
}
