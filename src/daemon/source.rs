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
    let at_ms = crate::control::now_ms();
    let files = match crate::spec::load_dir(dir) {
        Ok(f) => f,
        Err(e) => return SpecUpdate { commit, digest: String::new(), at_ms, fleet: Err(e.to_string()) },
    };
    let digest = digest_of(&files);
    let fleet = match crate::spec::validate::check(&files) {
        Ok(fleet) => Ok(Arc::new(fleet)),
        Err(diags) => Err(crate::spec::diag::Report::of(diags).text(&files, &dir.display().to_string())),
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
    rescan: Arc<tokio::sync::Notify>,
}

impl Watching {
    /// Reads the source again now (SIGHUP): the directory is rescanned, the
    /// Git branch fetched, without waiting for an event or the interval.
    pub fn rescan(&self) {
        self.rescan.notify_one();
    }
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
    let asked = Arc::new(tokio::sync::Notify::new());
    let asked_too = Arc::clone(&asked);
    let task = tokio::spawn(async move {
        loop {
            // Wait for an event, the periodic rescan or a request to look now ...
            tokio::select! {
                got = ev_rx.recv() => if got.is_none() { return },
                _ = tokio::time::sleep(rescan) => {}
                _ = asked_too.notified() => {}
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
    Ok((rx, Watching { task, rescan: asked }))
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
    /// A new, empty checkout (whatever was there is removed).
    async fn recreate(&self) -> Result<(), String> {
        if let Some(parent) = self.checkout.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        if let Err(e) = std::fs::remove_dir_all(&self.checkout)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(format!("cannot remove the broken spec checkout {}: {e}", self.checkout.display()));
        }
        let dir = self.checkout.to_string_lossy().to_string();
        git(None, &["init", "-q", &dir]).await?;
        git(Some(&self.checkout), &["remote", "add", "origin", &self.url]).await?;
        Ok(())
    }

    /// Fetches the branch and checks its tip out (detached); returns the
    /// commit. A checkout left broken (by a crash mid-clone, a removed
    /// `origin`, a damaged `.git`) is recreated: a failure other than the
    /// fetch itself (network, credentials, a missing branch) gets a fresh
    /// checkout and one more attempt.
    pub async fn sync(&self) -> Result<String, String> {
        self.clear_stale_locks();
        if !self.checkout.join(".git").exists() {
            self.recreate().await?;
            return self.fetch_and_check_out().await.map_err(|(_, e)| e);
        }
        let repaired = match git(Some(&self.checkout), &["remote", "set-url", "origin", &self.url]).await {
            Ok(_) => match self.fetch_and_check_out().await {
                Ok(commit) => return Ok(commit),
                Err((Step::Fetch, e)) => return Err(e),
                Err((Step::Local, e)) => e,
            },
            Err(e) => e,
        };
        tracing::warn!(checkout = %self.checkout.display(), "the spec checkout is broken ({repaired}): recreating it");
        self.recreate().await?;
        self.fetch_and_check_out().await.map_err(|(_, e)| e)
    }

    /// Removes git's lock files from the checkout. It is this daemon's
    /// alone (its state directory, under the lease) and it runs one git at a
    /// time, so a lock present before a sync was left by a git killed with
    /// a previous daemon (kill -9 in the middle of a fetch): without this,
    /// every later fetch fails with "shallow.lock: File exists".
    fn clear_stale_locks(&self) {
        fn walk(dir: &Path, depth: u32) {
            let Ok(entries) = std::fs::read_dir(dir) else { return };
            for e in entries.flatten() {
                let Ok(kind) = e.file_type() else { continue };
                let path = e.path();
                if kind.is_dir() && depth < 8 {
                    // Objects hold no locks of git's and can be many.
                    if e.file_name() != "objects" {
                        walk(&path, depth + 1);
                    }
                } else if kind.is_file() && e.file_name().to_string_lossy().ends_with(".lock") {
                    match std::fs::remove_file(&path) {
                        Ok(()) => {
                            tracing::warn!(lock = %path.display(), "removed a lock a killed git left in the spec checkout")
                        }
                        Err(err) => tracing::warn!(lock = %path.display(), "cannot remove a stale git lock: {err}"),
                    }
                }
            }
        }
        walk(&self.checkout.join(".git"), 0);
    }

    async fn fetch_and_check_out(&self) -> Result<String, (Step, String)> {
        let local = |e| (Step::Local, e);
        let refspec = format!("+refs/heads/{}:refs/remotes/origin/{}", self.branch, self.branch);
        git_auth(Some(&self.checkout), &["fetch", "-q", "--depth", "1", "origin", &refspec], self.auth.as_ref())
            .await
            .map_err(|e| (Step::Fetch, e))?;
        let tip = format!("refs/remotes/origin/{}", self.branch);
        let commit = git(Some(&self.checkout), &["rev-parse", &tip]).await.map_err(local)?;
        git(Some(&self.checkout), &["checkout", "-q", "--force", "--detach", &commit]).await.map_err(local)?;
        git(Some(&self.checkout), &["clean", "-q", "-fdx"]).await.map_err(local)?;
        Ok(commit)
    }
}

/// Which step of a sync failed: fetching (the remote's business) or the
/// local checkout (repaired by recreating it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Fetch,
    Local,
}

/// Follows a Git branch: an update per new tip. A failed fetch is reported
/// on the second channel (when its error changes) and retried at the next
/// interval; the spec in force does not change.
pub fn follow_git(src: GitSource) -> (watch::Receiver<Option<SpecUpdate>>, watch::Receiver<Option<String>>, Watching) {
    let (tx, rx) = watch::channel(None);
    let (err_tx, err_rx) = watch::channel(None);
    let asked = Arc::new(tokio::sync::Notify::new());
    let asked_too = Arc::clone(&asked);
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
            tokio::select! {
                _ = tokio::time::sleep(src.interval) => {}
                _ = asked_too.notified() => {}
            }
        }
    });
    (rx, err_rx, Watching { task, rescan: asked })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/minimal/spec.yaml")).unwrap()
    }

    fn git_in(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "commit.gpgsign=false"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A repository with the example spec committed on `main`; returns it and its tip.
    fn spec_repo(base: &Path) -> (PathBuf, String) {
        let repo = base.join("origin");
        std::fs::create_dir_all(&repo).unwrap();
        git_in(&repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("fleet.yaml"), example()).unwrap();
        git_in(&repo, &["add", "."]);
        git_in(&repo, &["commit", "-q", "-m", "first"]);
        let tip = git_in(&repo, &["rev-parse", "HEAD"]);
        (repo, tip)
    }

    /// The branch `main` of `repo`, checked out under `base`, fetched hourly.
    fn following(base: &Path, repo: &Path) -> GitSource {
        GitSource {
            url: repo.to_string_lossy().into(),
            branch: "main".into(),
            subdir: ".".into(),
            checkout: base.join("state/spec-repo"),
            interval: Duration::from_secs(3600),
            auth: None,
        }
    }

    #[tokio::test]
    async fn a_broken_checkout_is_recreated() {
        let base = std::env::temp_dir().join(format!("drover-git-repair-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (repo, tip) = spec_repo(&base);
        let src = following(&base, &repo);
        assert_eq!(src.sync().await.unwrap(), tip);
        // A crash between `git init` and `git remote add`: no `origin`.
        git_in(&src.checkout, &["remote", "remove", "origin"]);
        assert_eq!(src.sync().await.unwrap(), tip);
        assert!(src.spec_dir().join("fleet.yaml").exists());
        // A half-written `.git`.
        std::fs::write(src.checkout.join(".git/HEAD"), "").unwrap();
        assert_eq!(src.sync().await.unwrap(), tip);
        // Objects lost: the tip cannot be checked out.
        std::fs::remove_dir_all(src.checkout.join(".git/objects")).unwrap();
        std::fs::create_dir_all(src.checkout.join(".git/objects")).unwrap();
        assert_eq!(src.sync().await.unwrap(), tip);
        // A git killed with its daemon in the middle of a fetch left its locks.
        std::fs::write(src.checkout.join(".git/shallow.lock"), "").unwrap();
        std::fs::write(src.checkout.join(".git/index.lock"), "").unwrap();
        std::fs::create_dir_all(src.checkout.join(".git/refs/remotes/origin")).unwrap();
        std::fs::write(src.checkout.join(".git/refs/remotes/origin/main.lock"), "").unwrap();
        assert_eq!(src.sync().await.unwrap(), tip);
        assert!(!src.checkout.join(".git/shallow.lock").exists());
        // A fetch that fails is reported, not "repaired".
        let gone = GitSource { url: base.join("nowhere").to_string_lossy().into(), ..src.clone() };
        let e = gone.sync().await.unwrap_err();
        assert!(e.contains("fetch"), "{e}");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[tokio::test]
    async fn a_rescan_fetches_the_branch_now() {
        let base = std::env::temp_dir().join(format!("drover-git-rescan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (repo, tip) = spec_repo(&base);
        let src = following(&base, &repo);
        let (mut rx, _err, following) = follow_git(src);
        tokio::time::timeout(Duration::from_secs(20), rx.changed()).await.unwrap().unwrap();
        assert_eq!(rx.borrow_and_update().as_ref().unwrap().commit.as_deref(), Some(tip.as_str()));
        std::fs::write(repo.join("fleet.yaml"), format!("{}\n# second\n", example())).unwrap();
        git_in(&repo, &["commit", "-q", "-am", "second"]);
        let second = git_in(&repo, &["rev-parse", "HEAD"]);
        // Not before the hour-long interval ...
        assert!(tokio::time::timeout(Duration::from_millis(500), rx.changed()).await.is_err());
        // ... unless asked.
        following.rescan();
        tokio::time::timeout(Duration::from_secs(20), rx.changed()).await.expect("fetched on request").unwrap();
        assert_eq!(rx.borrow_and_update().as_ref().unwrap().commit.as_deref(), Some(second.as_str()));
        drop(following);
        std::fs::remove_dir_all(&base).unwrap();
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
