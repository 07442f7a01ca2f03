//! Where the daemon's spec comes from: a directory watched with `notify`, or
//! a Git branch fetched on an interval. Either way the daemon receives
//! `SpecUpdate`s on a `watch` channel: the newest spec seen (`None` before
//! the first), valid (a `Fleet`) or not (its rendered diagnostics). Deciding what to apply is the
//! daemon's business; this module only reads.
//!
//! Debouncing: any file-system event starts (or restarts) a quiet period;
//! when it ends the directory is rescanned and its content digest compared,
//! so an editor's atomic save or a `git checkout` of many files is one
//! change, and events that change nothing (a `touch`) are no change. A slow
//! periodic rescan covers events inotify dropped.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::model::Fleet;

/// One spec as read from its source.
#[derive(Clone, Debug)]
pub struct SpecUpdate {
    /// The Git commit it was read from (`--git`).
    pub commit: Option<String>,
    /// Fingerprint of the spec files' paths and contents (not cryptographic).
    pub digest: String,
    /// When it was read (wall-clock ms).
    pub at_ms: u64,
    /// The fleet, or the rendered diagnostics (file:line:col: error: ...).
    pub fleet: Result<Arc<Fleet>, String>,
}

/// Reads and validates the spec directory.
pub fn read(dir: &Path, commit: Option<String>) -> SpecUpdate {
    let at_ms = crate::real::reconcile::now_ms();
    let files = match crate::spec::load_dir(dir) {
        Ok(f) => f,
        Err(e) => return SpecUpdate { commit, digest: String::new(), at_ms, fleet: Err(e.to_string()) },
    };
    let digest = digest_of(&files);
    let fleet = match crate::spec::validate::check(&files) {
        Ok(fleet) => Ok(Arc::new(fleet)),
        Err(diags) => {
            Err(format!("{}{} errors in {}", crate::spec::diag::render(&diags, &files), diags.len(), dir.display()))
        }
    };
    SpecUpdate { commit, digest, at_ms, fleet }
}

fn digest_of(files: &[crate::spec::SourceFile]) -> String {
    // SipHash with fixed keys: stable within a build, enough to tell contents apart.
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    for f in files {
        f.path.hash(&mut h);
        f.text.hash(&mut h);
    }
    format!("{:016x}", h.finish())
}

/// The digest of what is in the directory now, without validating
/// (`None` when it cannot be read: that is reported by `read`).
fn current_digest(dir: &Path) -> Option<String> {
    crate::spec::load_dir(dir).ok().map(|f| digest_of(&f))
}

/// Keeps a spec source alive; dropping it stops watching or following.
pub struct Watching {
    task: tokio::task::JoinHandle<()>,
}

/// Which directory `dir` is now, symlinks followed: a directory renamed over
/// it, or a symlink pointed elsewhere (git-sync's swap), is another one.
fn identity(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Watches `dir` (recursively): the first update is the spec as it is now.
///
/// The directory's parent is watched too (not recursively): when `dir` is
/// swapped for another directory (renamed over, or a symlink re-pointed, as
/// git-sync and atomic deploys do), the watch moves to the new one at once
/// instead of the old, unlinked directory being watched until the rescan.
pub fn watch_dir(
    dir: PathBuf,
    debounce: Duration,
    rescan: Duration,
) -> Result<(watch::Receiver<Option<SpecUpdate>>, Watching), String> {
    use notify::Watcher;
    let dir = std::path::absolute(&dir).map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    let parent = dir.parent().map(Path::to_path_buf).unwrap_or_else(|| dir.clone());
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<()>();
    let mine = dir.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // An event in the directory or on its entry in the parent (or an
        // error, e.g. a queue overflow) means "look again".
        let look = match &res {
            Ok(e) => !e.kind.is_access() && e.paths.iter().any(|p| p.starts_with(&mine)),
            Err(_) => true,
        };
        if look {
            let _ = ev_tx.send(());
        }
    })
    .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    watcher
        .watch(&dir, notify::RecursiveMode::Recursive)
        .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    if parent != dir {
        watcher
            .watch(&parent, notify::RecursiveMode::NonRecursive)
            .map_err(|e| format!("cannot watch {}: {e}", parent.display()))?;
    }
    let mut watched = identity(&dir);
    let first = read(&dir, None);
    let mut last = first.digest.clone();
    let (tx, rx) = watch::channel(Some(first));
    let task = tokio::spawn(async move {
        loop {
            // Wait for an event or the periodic rescan ...
            tokio::select! {
                got = ev_rx.recv() => if got.is_none() { return },
                _ = tokio::time::sleep(rescan) => {}
            }
            // ... then for a quiet period.
            loop {
                tokio::select! {
                    got = ev_rx.recv() => if got.is_none() { return },
                    _ = tokio::time::sleep(debounce) => break,
                }
            }
            // Swapped for another directory: watch the new one.
            let now_is = identity(&dir);
            if now_is != watched {
                let _ = watcher.unwatch(&dir);
                match watcher.watch(&dir, notify::RecursiveMode::Recursive) {
                    Ok(()) => {
                        tracing::info!(dir = %dir.display(), "the spec directory was replaced: watching the new one");
                        watched = now_is;
                    }
                    // Gone for now: the next event or rescan tries again.
                    Err(e) => tracing::warn!(dir = %dir.display(), "cannot watch the spec directory: {e}"),
                }
            }
            let dir2 = dir.clone();
            let now = tokio::task::spawn_blocking(move || current_digest(&dir2)).await.ok().flatten();
            if now.as_deref() == Some(last.as_str()) {
                continue;
            }
            let dir2 = dir.clone();
            let Ok(update) = tokio::task::spawn_blocking(move || read(&dir2, None)).await else {
                continue;
            };
            last = update.digest.clone();
            if tx.send(Some(update)).is_err() {
                return;
            }
        }
    });
    Ok((rx, Watching { task }))
}

/// A Git branch to follow.
#[derive(Clone, Debug)]
pub struct GitSource {
    pub url: String,
    pub branch: String,
    /// The spec directory inside the repository (`.` for its root).
    pub subdir: PathBuf,
    /// Where the checkout lives (under the state directory).
    pub checkout: PathBuf,
    pub interval: Duration,
    /// The remote's credential, given to git through its environment only (`gitauth`).
    pub auth: Option<super::gitauth::GitAuth>,
}

impl GitSource {
    /// The spec directory of the checkout.
    pub fn spec_dir(&self) -> PathBuf {
        self.checkout.join(&self.subdir)
    }
}

async fn git(dir: Option<&Path>, args: &[&str]) -> Result<String, String> {
    git_auth(dir, args, None).await
}

/// `git`, with the remote's credential in the command's environment (never in its arguments).
async fn git_auth(dir: Option<&Path>, args: &[&str], auth: Option<&super::gitauth::GitAuth>) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new("git");
    if let Some(a) = auth {
        cmd.envs(super::gitauth::env(a));
    }
    if let Some(d) = dir {
        cmd.arg("-C").arg(d);
    }
    cmd.args(args).env("GIT_TERMINAL_PROMPT", "0").stdin(std::process::Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .map_err(|_| format!("git {} timed out after 120 s", args.join(" ")))?
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "git {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl GitSource {
    /// Fetches the branch and checks its tip out (detached); returns the commit.
    pub async fn sync(&self) -> Result<String, String> {
        if !self.checkout.join(".git").exists() {
            if let Some(parent) = self.checkout.parent() {
                std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            }
            let _ = std::fs::remove_dir_all(&self.checkout);
            let dir = self.checkout.to_string_lossy().to_string();
            git(None, &["init", "-q", &dir]).await?;
            git(Some(&self.checkout), &["remote", "add", "origin", &self.url]).await?;
        } else {
            git(Some(&self.checkout), &["remote", "set-url", "origin", &self.url]).await?;
        }
        let refspec = format!("+refs/heads/{}:refs/remotes/origin/{}", self.branch, self.branch);
        git_auth(Some(&self.checkout), &["fetch", "-q", "--depth", "1", "origin", &refspec], self.auth.as_ref())
            .await?;
        let tip = format!("refs/remotes/origin/{}", self.branch);
        let commit = git(Some(&self.checkout), &["rev-parse", &tip]).await?;
        git(Some(&self.checkout), &["checkout", "-q", "--force", "--detach", &commit]).await?;
        git(Some(&self.checkout), &["clean", "-q", "-fdx"]).await?;
        Ok(commit)
    }
}

/// Follows a Git branch: an update per new tip. A failed fetch is reported
/// on the second channel (when its error changes) and retried at the next
/// interval; the spec in force does not change.
pub fn follow_git(src: GitSource) -> (watch::Receiver<Option<SpecUpdate>>, watch::Receiver<Option<String>>, Watching) {
    let (tx, rx) = watch::channel(None);
    let (err_tx, err_rx) = watch::channel(None);
    let task = tokio::spawn(async move {
        let mut last: Option<String> = None;
        loop {
            match src.sync().await {
                // The error is reported when it changes, not at every attempt.
                Err(e) => {
                    err_tx.send_if_modified(|cur| {
                        let changed = cur.as_deref() != Some(e.as_str());
                        *cur = Some(e);
                        changed
                    });
                }
                Ok(commit) => {
                    err_tx.send_if_modified(|cur| cur.take().is_some());
                    if last.as_deref() != Some(commit.as_str()) {
                        last = Some(commit.clone());
                        let dir = src.spec_dir();
                        if let Ok(update) = tokio::task::spawn_blocking(move || read(&dir, Some(commit))).await
                            && tx.send(Some(update)).is_err()
                        {
                            return;
                        }
                    }
                }
            }
            tokio::time::sleep(src.interval).await;
        }
    });
    (rx, err_rx, Watching { task })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/minimal/spec.yaml")).unwrap()
    }

    #[tokio::test]
    async fn an_edit_is_one_update_and_a_touch_is_none() {
        let text = example();
        let dir = std::env::temp_dir().join(format!("drover-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("fleet.yaml"), &text).unwrap();
        let (mut rx, _w) = watch_dir(dir.clone(), Duration::from_millis(80), Duration::from_secs(3600)).unwrap();
        assert!(rx.borrow_and_update().as_ref().unwrap().fleet.is_ok());
        // A touch changes no content: no update.
        std::fs::write(dir.join("fleet.yaml"), &text).unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(600), rx.changed()).await.is_err());
        // An atomic save (write elsewhere, rename over) of a broken file: one update, rejected.
        std::fs::write(dir.join(".tmp"), format!("{text}\nbogus: [")).unwrap();
        std::fs::rename(dir.join(".tmp"), dir.join("fleet.yaml")).unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx.changed()).await.unwrap().unwrap();
        let u = rx.borrow_and_update().clone().unwrap();
        let err = u.fleet.unwrap_err();
        assert!(err.contains("fleet.yaml:"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_symlink_swapped_to_another_directory_is_followed_and_its_edits_seen() {
        let text = example();
        let base = std::env::temp_dir().join(format!("drover-watch-swap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        for (rel, extra) in [("rel-1", ""), ("rel-2", "\n# release 2\n")] {
            std::fs::create_dir_all(base.join(rel)).unwrap();
            std::fs::write(base.join(rel).join("fleet.yaml"), format!("{text}{extra}")).unwrap();
        }
        let specs = base.join("specs");
        std::os::unix::fs::symlink("rel-1", &specs).unwrap();
        // No periodic rescan in this test: only events can bring updates.
        let (mut rx, _w) = watch_dir(specs.clone(), Duration::from_millis(80), Duration::from_secs(3600)).unwrap();
        let first = rx.borrow_and_update().clone().unwrap();
        assert!(first.fleet.is_ok());
        // git-sync's swap: a new link renamed over the old one.
        std::os::unix::fs::symlink("rel-2", base.join("specs.tmp")).unwrap();
        std::fs::rename(base.join("specs.tmp"), &specs).unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx.changed()).await.expect("the swap is seen").unwrap();
        let swapped = rx.borrow_and_update().clone().unwrap();
        assert_ne!(swapped.digest, first.digest);
        // An edit in the new directory arrives too (the watch moved with the link).
        std::fs::write(base.join("rel-2/.tmp"), format!("{text}\nbogus: [")).unwrap();
        std::fs::rename(base.join("rel-2/.tmp"), base.join("rel-2/fleet.yaml")).unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx.changed()).await.expect("the edit is seen").unwrap();
        assert!(rx.borrow_and_update().clone().unwrap().fleet.is_err());
        // Edits in the directory swapped out are no longer the spec.
        std::fs::write(base.join("rel-1/fleet.yaml"), format!("{text}\n# unrelated\n")).unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(600), rx.changed()).await.is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
