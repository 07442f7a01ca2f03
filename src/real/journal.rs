//! The journal: `plan::Memory` in a JSON file, written before every action
//! starts and after it ends (write to a temporary file, fsync, rename, fsync
//! the directory), so a drover killed at any instant restarts knowing which
//! node it drained and which farm was mid-switch.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::plan::memory::Memory;

pub struct Journal {
    path: PathBuf,
}

impl Journal {
    pub fn new(path: &Path) -> Journal {
        Journal { path: path.to_path_buf() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The memory of the last run, or a fresh one when there is no journal.
    pub fn load(&self) -> Result<Memory, String> {
        match fs::read(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Memory::default()),
            Err(e) => Err(format!("cannot read the journal {}: {e}", self.path.display())),
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                format!(
                    "the journal {} is not readable ({e}); it holds what drover was doing when it stopped: \
                     inspect it, and remove it only when no node or farm is out of service",
                    self.path.display()
                )
            }),
        }
    }

    pub fn save(&self, memory: &Memory) -> Result<(), String> {
        let fail = |e: std::io::Error| format!("cannot write the journal {}: {e}", self.path.display());
        let dir = self.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(fail)?;
        let tmp = self.path.with_extension("tmp");
        let json = serde_json::to_vec_pretty(memory).map_err(|e| format!("cannot encode the journal: {e}"))?;
        let mut f = fs::File::create(&tmp).map_err(fail)?;
        f.write_all(&json).map_err(fail)?;
        f.sync_all().map_err(fail)?;
        fs::rename(&tmp, &self.path).map_err(fail)?;
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::Admin;
    use crate::plan::action::{Action, Outcome};

    #[test]
    fn round_trips_memory() {
        let dir = std::env::temp_dir().join(format!("drover-journal-{}", std::process::id()));
        let j = Journal::new(&dir.join("journal.json"));
        assert_eq!(j.load().unwrap(), Memory::default());
        let mut m = Memory::default();
        m.begin(&Action::SetNode { node: 3, admin: Admin::Drain }, 1000, Some(1), 100);
        m.begin(&Action::SetFarm { farm: 1, admin: Admin::Maint }, 1000, Some(1), 100);
        m.complete(&Action::SetFarm { farm: 1, admin: Admin::Maint }, &Outcome::Ok, 1200, Some(1));
        m.gate
            .insert((0, "php".into(), "8.3.14".into()), crate::plan::memory::GateRecord { since_ms: 5, passed: true });
        j.save(&m).unwrap();
        assert_eq!(j.load().unwrap(), m);
        std::fs::write(j.path(), "{ not json").unwrap();
        assert!(j.load().unwrap_err().contains("not readable"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
