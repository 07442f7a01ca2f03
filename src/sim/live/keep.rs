//! Keeping a live world in a file (`<state-dir>/simulation/world.json`), so
//! that the daemon on the simulated fleet can be killed (`kill -9`) and
//! resume it, as a real fleet outlives the drover that drives it.
//!
//! When: once at `keep_in`; after every action dispatched and every outcome
//! collected (coalesced: whoever waits while a save runs is covered by the
//! next one, which takes the world as it is then); and every `SAVE_EVERY`
//! of wall time (traffic, the checker's counts, virtual time) if the world
//! moved: the world is saved as the last call left it, never advanced for
//! the save, so an idle daemon's world neither moves nor is written. How:
//! the world is held only while it is copied (`Snapshot::of`); encoding and
//! writing (a temporary file, fsync, rename, fsync of the directory) run on
//! a blocking thread, one save at a time and in order.
//!
//! What it guarantees (ARCHITECTURE.md has the argument): an observation
//! leaves `LiveSim` only once the dispatches it reflects are saved, and an
//! outcome reaches the executor only once the world that handed it over is
//! saved. So everything drover learnt and journalled before a kill happens
//! again, at the same virtual instants, in the world resumed from the file;
//! what the file lacks is an action drover journalled as begun and never
//! heard of, which the journal already treats as "re-observe".

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::LiveSim;
use crate::sim::snapshot::write_atomically;

/// The periodic save, in wall time.
pub const SAVE_EVERY: Duration = Duration::from_secs(1);

/// At most one "cannot save" warning per this much wall time.
const WARN_EVERY: Duration = Duration::from_secs(60);

pub(super) struct Keeper {
    pub(super) path: PathBuf,
    /// One save at a time, in order: a later snapshot is never overwritten by an earlier one.
    writing: tokio::sync::Mutex<()>,
    status: Mutex<Saved>,
}

/// The saves so far.
#[derive(Clone, Debug, Default)]
struct Saved {
    /// The changes (dispatches, collected outcomes) the last good save covers.
    through: u64,
    /// The last save's error, until one succeeds.
    error: Option<String>,
    /// Virtual time of the last good save.
    virtual_ms: u64,
    saves: u64,
    bytes: usize,
    /// The last save: the world held to copy it (not counting catching up
    /// with now, which any call does), and the whole save.
    hold: Duration,
    took: Duration,
    longest_hold: Duration,
    longest: Duration,
}

impl Keeper {
    fn status(&self) -> std::sync::MutexGuard<'_, Saved> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// For `/status`.
    pub(super) fn report(&self) -> serde_json::Value {
        let s = self.status().clone();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        serde_json::json!({
            "virtual_s": s.virtual_ms as f64 / 1000.0,
            "saves": s.saves,
            "bytes": s.bytes,
            "last_ms": ms(s.took),
            "last_hold_ms": ms(s.hold),
            "longest_ms": ms(s.longest),
            "longest_hold_ms": ms(s.longest_hold),
            "error": s.error,
        })
    }
}

impl LiveSim {
    /// Keeps the world in `path` from now on (see the module). It is saved
    /// at once: an error if it cannot be. Needs a tokio runtime.
    pub async fn keep_in(self: &Arc<Self>, path: PathBuf) -> Result<(), String> {
        let keeper = Arc::new(Keeper { path, writing: tokio::sync::Mutex::new(()), status: Mutex::default() });
        if self.keeper.set(keeper).is_err() {
            return Err("the simulated world is already kept".into());
        }
        self.save_now().await?;
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut warned: Option<std::time::Instant> = None;
            loop {
                tokio::time::sleep(SAVE_EVERY).await;
                let Some(live) = weak.upgrade() else { return };
                match live.save_now().await {
                    Err(e) => {
                        if warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                            tracing::warn!("{e}");
                            warned = Some(std::time::Instant::now());
                        }
                    }
                    Ok(_) if warned.take().is_some() => {
                        tracing::info!(path = %live.kept_in().unwrap_or_default(), "the simulated world is saved again");
                    }
                    Ok(_) => {}
                }
            }
        });
        Ok(())
    }

    /// Where the world is kept, if it is.
    pub fn kept_in(&self) -> Option<String> {
        self.keeper.get().map(|k| k.path.display().to_string())
    }

    /// Saves the world as the last call left it, if it is kept and moved
    /// since the last save; returns its virtual time.
    pub async fn save_now(&self) -> Result<u64, String> {
        let Some(k) = self.keeper.get() else { return Ok(self.world().sim.now) };
        let _one = k.writing.lock().await;
        self.save(k, true).await
    }

    /// Once a save covers `changes` (the count of dispatches and collected
    /// outcomes when the caller looked), if the world is kept: saves it
    /// unless a save since did. `Err` when that save failed.
    pub(super) async fn durable(&self, changes: u64) -> Result<(), String> {
        let Some(k) = self.keeper.get() else { return Ok(()) };
        if k.status().through >= changes {
            return Ok(());
        }
        let _one = k.writing.lock().await;
        if k.status().through >= changes {
            return Ok(());
        }
        self.save(k, false).await.map(|_| ())
    }

    /// One save (none when `if_moved` and the world is where the last good
    /// save left it); the caller holds `k.writing`.
    async fn save(&self, k: &Keeper, if_moved: bool) -> Result<u64, String> {
        let t0 = std::time::Instant::now();
        let unless = {
            let s = k.status();
            (if_moved && s.saves > 0 && s.error.is_none()).then_some((s.virtual_ms, s.through))
        };
        let Some((snapshot, changes, hold)) = self.snapshot_as_is(unless) else {
            return Ok(k.status().virtual_ms);
        };
        let virtual_ms = snapshot.now_ms;
        let path = k.path.clone();
        let written = tokio::task::spawn_blocking(move || {
            let bytes = snapshot.to_bytes();
            write_atomically(&path, &bytes).map(|()| bytes.len())
        })
        .await
        .unwrap_or_else(|e| Err(format!("cannot save the simulated world to {}: {e}", k.path.display())));
        let took = t0.elapsed();
        let mut s = k.status();
        match written {
            Ok(bytes) => {
                s.through = s.through.max(changes);
                s.error = None;
                s.virtual_ms = virtual_ms;
                s.saves += 1;
                s.bytes = bytes;
                s.hold = hold;
                s.took = took;
                s.longest_hold = s.longest_hold.max(hold);
                s.longest = s.longest.max(took);
                Ok(virtual_ms)
            }
            Err(e) => {
                s.error = Some(e.clone());
                Err(e)
            }
        }
    }
}
