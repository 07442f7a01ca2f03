//! SSH transport: one multiplexed OpenSSH master per host (the `openssh`
//! crate, native mux), reused for every command; strict host key checking
//! against the known_hosts file the spec names; a connect timeout, a
//! per-command timeout and a fleet-wide bound on concurrent commands. A lost
//! master is dropped and re-established on the next command.
//!
//! Commands are argument vectors: `openssh` quotes each argument for the
//! remote POSIX shell, and drover never builds a shell string from values.
//! The only scripts drover sends are constants of this crate (the probe, the
//! symlink swap), and values reach them as positional parameters (`"$1"`).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openssh::{KnownHosts, Session, SessionBuilder};
use tokio::sync::{Mutex, Semaphore};

/// Seconds an unused master stays up.
const MASTER_IDLE_S: std::num::NonZeroUsize = std::num::NonZeroUsize::new(120).unwrap();

/// How drover logs in (from the spec's `fleet.ssh` and the command line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshConfig {
    pub user: String,
    pub identity: Option<PathBuf>,
    /// The only host keys drover accepts; an unknown or changed key refuses the host.
    pub known_hosts: PathBuf,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    /// Commands running at once across the fleet.
    pub max_concurrency: usize,
    /// Where the control sockets live (paths are capped at 108 bytes).
    pub control_dir: PathBuf,
}

/// A remote step that did not succeed, with the host and the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError {
    pub host: String,
    pub command: String,
    pub kind: RemoteErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteErrorKind {
    /// No connection (refused, unreachable, timed out, host key refused).
    Connect(String),
    /// The command ran and exited non-zero.
    Exit { code: Option<i32>, stderr: String },
    /// The command did not finish within the timeout.
    Timeout(Duration),
    /// The connection dropped while the command ran.
    Lost(String),
}

impl RemoteError {
    /// The host could not be reached at all (as opposed to a command failing on it).
    pub fn is_unreachable(&self) -> bool {
        matches!(self.kind, RemoteErrorKind::Connect(_))
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (host, cmd) = (&self.host, &self.command);
        match &self.kind {
            RemoteErrorKind::Connect(e) => write!(f, "{host}: cannot connect over SSH: {e}"),
            RemoteErrorKind::Exit { code, stderr } => {
                let code = code.map(|c| c.to_string()).unwrap_or_else(|| "a signal".into());
                let stderr = stderr.trim();
                // The last 600 bytes, cut at a character boundary: emerge's
                // stderr holds non-ASCII (wget quotes file names with ‘’).
                let mut cut = stderr.len().saturating_sub(600);
                while !stderr.is_char_boundary(cut) {
                    cut += 1;
                }
                let stderr = &stderr[cut..];
                write!(f, "{host}: `{cmd}` exited with {code}")?;
                if !stderr.is_empty() {
                    write!(f, ": {stderr}")?;
                }
                Ok(())
            }
            RemoteErrorKind::Timeout(d) => {
                write!(f, "{host}: `{cmd}` did not finish within {}", humantime::format_duration(*d))
            }
            RemoteErrorKind::Lost(e) => write!(f, "{host}: connection lost during `{cmd}`: {e}"),
        }
    }
}

impl std::error::Error for RemoteError {}

/// Output of a command that exited 0.
#[derive(Debug, Clone)]
pub struct Done {
    pub stdout: String,
    pub stderr: String,
}

/// SSH masters opened and remote commands run by this process, over every
/// pool (the daemon's `drover_ssh_*` counters).
static CONNECTS_TOTAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static COMMANDS_TOTAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Connections opened and commands run by this process.
pub use crate::control::fleetside::Transport as Totals;

pub fn totals() -> Totals {
    use std::sync::atomic::Ordering::Relaxed;
    Totals { connects: CONNECTS_TOTAL.load(Relaxed), commands: COMMANDS_TOTAL.load(Relaxed) }
}

/// One host's master, if connected; its mutex serialises connecting.
type MasterSlot = Arc<Mutex<Option<Arc<Session>>>>;

/// The masters, one per `host:port`, and the fleet-wide command bound.
pub struct Pool {
    cfg: SshConfig,
    /// The known_hosts file's content when the pool opened: masters checked
    /// their host keys against it, so the pool is only reused while it holds.
    known_hosts: Vec<u8>,
    ssh_config: PathBuf,
    masters: Mutex<HashMap<String, MasterSlot>>,
    limit: Semaphore,
    /// New masters opened (SSH connections), for the benchmark and tests.
    connects: std::sync::atomic::AtomicU64,
    /// Remote commands run (SSH sessions opened over a master).
    sessions: std::sync::atomic::AtomicU64,
}

impl Pool {
    pub fn new(cfg: SshConfig) -> std::io::Result<Pool> {
        std::fs::create_dir_all(&cfg.control_dir)?;
        // Our own ssh_config: no user or system configuration changes what
        // drover accepts, and no global known_hosts file is trusted.
        let ssh_config = cfg.control_dir.join("ssh_config");
        std::fs::write(&ssh_config, "GlobalKnownHostsFile /dev/null\nLogLevel ERROR\nRequestTTY no\n")?;
        let known_hosts = std::fs::read(&cfg.known_hosts).map_err(|e| {
            std::io::Error::other(format!(
                "known_hosts file {}: {e}: drover only connects to hosts whose keys it lists",
                cfg.known_hosts.display()
            ))
        })?;
        let limit = Semaphore::new(cfg.max_concurrency.max(1));
        Ok(Pool {
            cfg,
            known_hosts,
            ssh_config,
            masters: Mutex::new(HashMap::new()),
            limit,
            connects: Default::default(),
            sessions: Default::default(),
        })
    }

    pub fn config(&self) -> &SshConfig {
        &self.cfg
    }

    /// Whether this pool logs in as `cfg` would: the same settings (its own
    /// control directory aside) and the same known_hosts content. A new spec
    /// that keeps them keeps the pool and its masters.
    pub fn serves(&self, cfg: &SshConfig) -> bool {
        let same = SshConfig { control_dir: self.cfg.control_dir.clone(), ..cfg.clone() };
        same == self.cfg && std::fs::read(&cfg.known_hosts).is_ok_and(|k| k == self.known_hosts)
    }

    /// Closes the masters of hosts not in `keep` (`host:port`), e.g. nodes a
    /// new spec removed. Returns how many were closed.
    pub async fn retain(&self, keep: &std::collections::HashSet<String>) -> usize {
        let gone: Vec<MasterSlot> = {
            let mut m = self.masters.lock().await;
            let names: Vec<String> = m.keys().filter(|k| !keep.contains(*k)).cloned().collect();
            names.iter().filter_map(|k| m.remove(k)).collect()
        };
        let mut closed = 0;
        for slot in gone {
            if let Some(s) = slot.lock().await.take() {
                closed += 1;
                if let Ok(s) = Arc::try_unwrap(s) {
                    let _ = s.close().await;
                }
            }
        }
        closed
    }

    pub fn connects(&self) -> u64 {
        self.connects.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn sessions(&self) -> u64 {
        self.sessions.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `host:port` as the pool names a master.
    pub fn host_key(host: &str, port: u16) -> String {
        format!("{host}:{port}")
    }

    /// The master for `host:port`, connecting if there is none.
    pub async fn master(&self, host: &str, port: u16) -> Result<Arc<Session>, String> {
        let slot = {
            let mut m = self.masters.lock().await;
            Arc::clone(m.entry(Self::host_key(host, port)).or_default())
        };
        // One connect per host at a time; others wait for its result.
        let mut guard = slot.lock().await;
        if let Some(s) = guard.as_ref() {
            return Ok(Arc::clone(s));
        }
        let mut b = SessionBuilder::default();
        b.user(self.cfg.user.clone())
            .port(port)
            .known_hosts_check(KnownHosts::Strict)
            .user_known_hosts_file(&self.cfg.known_hosts)
            .config_file(&self.ssh_config)
            .connect_timeout(self.cfg.connect_timeout)
            .server_alive_interval(Duration::from_secs(5))
            // A master outlives drover only briefly (kill -9 cannot close it):
            // it exits after two idle minutes. A running drover probes every pass.
            .control_persist(openssh::ControlPersist::IdleFor(MASTER_IDLE_S))
            .control_directory(&self.cfg.control_dir);
        if let Some(k) = &self.cfg.identity {
            b.keyfile(k);
        }
        let connect = b.connect_mux(host);
        let s = match tokio::time::timeout(self.cfg.connect_timeout + Duration::from_secs(2), connect).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(error_chain(&e)),
            Err(_) => return Err(format!("no answer within {}", humantime::format_duration(self.cfg.connect_timeout))),
        };
        self.connects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        CONNECTS_TOTAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let s = Arc::new(s);
        *guard = Some(Arc::clone(&s));
        Ok(s)
    }

    /// Forgets the master of `host:port` (it died, or the host rebooted).
    pub async fn forget(&self, host: &str, port: u16) {
        let slot = self.masters.lock().await.get(&Self::host_key(host, port)).cloned();
        if let Some(slot) = slot {
            let old = slot.lock().await.take();
            if let Some(s) = old {
                // The last user closes it; a dead master closes with an error we do not need.
                if let Ok(s) = Arc::try_unwrap(s) {
                    let _ = s.close().await;
                }
            }
        }
    }

    /// Runs `program args...` on `host`; Ok only for exit status 0.
    pub async fn run(&self, host: &str, port: u16, program: &str, args: &[&str]) -> Result<Done, RemoteError> {
        self.run_with_timeout(host, port, program, args, self.cfg.command_timeout).await
    }

    /// Runs a command that may run again: one cut off because its master
    /// had died (since its last use, or while it ran) runs once more on a
    /// new master.
    pub async fn run_with_timeout(
        &self,
        host: &str,
        port: u16,
        program: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<Done, RemoteError> {
        self.exec(host, port, program, args, timeout, true).await
    }

    /// Runs a command that must never run twice (a release's migration):
    /// the master is checked (and replaced if dead) before the command
    /// starts; once started, a command cut off is `Lost`, never run again,
    /// for it may have gone on, or finished, on the node.
    pub async fn run_once_with_timeout(
        &self,
        host: &str,
        port: u16,
        program: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<Done, RemoteError> {
        self.exec(host, port, program, args, timeout, false).await
    }

    async fn exec(
        &self,
        host: &str,
        port: u16,
        program: &str,
        args: &[&str],
        timeout: Duration,
        rerun: bool,
    ) -> Result<Done, RemoteError> {
        let shown = display_command(program, args);
        let err = |kind| RemoteError { host: host.to_string(), command: shown.clone(), kind };
        let _permit = self.limit.acquire().await.map_err(|e| err(RemoteErrorKind::Lost(e.to_string())))?;
        // A master that died since its last use fails the first command at
        // once: reconnect and try once more (found before the start when the
        // command must not run twice).
        for attempt in 0..2 {
            let session = self.master(host, port).await.map_err(|e| err(RemoteErrorKind::Connect(e)))?;
            if !rerun && let Err(e) = session.check().await {
                drop(session);
                self.forget(host, port).await;
                if attempt == 1 {
                    return Err(err(RemoteErrorKind::Connect(error_chain(&e))));
                }
                continue;
            }
            let mut cmd = session.command(program);
            cmd.args(args);
            self.sessions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            COMMANDS_TOTAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let out = match tokio::time::timeout(timeout, cmd.output()).await {
                Err(_) => return Err(err(RemoteErrorKind::Timeout(timeout))),
                Ok(r) => r,
            };
            match out {
                Ok(o) => {
                    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
                    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
                    return match o.status.code() {
                        Some(0) => Ok(Done { stdout, stderr }),
                        code => Err(err(RemoteErrorKind::Exit { code, stderr })),
                    };
                }
                Err(e) => {
                    let alive = session.check().await.is_ok();
                    drop(session);
                    if alive {
                        // The command itself was cut off (e.g. killed by a signal).
                        return Err(err(RemoteErrorKind::Lost(error_chain(&e))));
                    }
                    self.forget(host, port).await;
                    if attempt == 1 || !rerun {
                        return Err(err(RemoteErrorKind::Lost(error_chain(&e))));
                    }
                }
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// Closes every master.
    pub async fn shutdown(&self) {
        let slots: Vec<_> = self.masters.lock().await.drain().map(|(_, v)| v).collect();
        for slot in slots {
            if let Some(s) = slot.lock().await.take()
                && let Ok(s) = Arc::try_unwrap(s)
            {
                let _ = s.close().await;
            }
        }
    }

    /// Makes a local unix socket forward to `remote_socket` on `host`
    /// (stream-local forwarding over the master; nothing needed on the host).
    pub async fn forward_unix(&self, host: &str, port: u16, local: &Path, remote_socket: &Path) -> Result<(), String> {
        let session = self.master(host, port).await?;
        let _ = std::fs::remove_file(local);
        session
            .request_port_forward(
                openssh::ForwardType::Local,
                openssh::Socket::UnixSocket { path: local.into() },
                openssh::Socket::UnixSocket { path: remote_socket.into() },
            )
            .await
            .map_err(|e| error_chain(&e))
    }

    /// Forwards `local` to `remote_socket` again after it stopped answering:
    /// a master that died is replaced first (its forwards died with it).
    pub async fn reforward_unix(
        &self,
        host: &str,
        port: u16,
        local: &Path,
        remote_socket: &Path,
    ) -> Result<(), String> {
        let session = self.master(host, port).await?;
        let alive = session.check().await.is_ok();
        drop(session);
        if !alive {
            self.forget(host, port).await;
        }
        self.forward_unix(host, port, local, remote_socket).await
    }
}

/// The command as a person would type it (for messages only; never executed).
pub fn display_command(program: &str, args: &[&str]) -> String {
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        if a.len() > 80 {
            s.push_str("<script>");
        } else if !a.is_empty() && a.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_=/,.+:@%".contains(&b)) {
            s.push_str(a);
        } else {
            s.push('\'');
            s.push_str(&a.replace('\'', "'\\''"));
            s.push('\'');
        }
    }
    s
}

/// An error and its sources on one line (ssh's own message is in the sources).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(m.trim());
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_non_ascii_stderr_is_cut_at_a_character_boundary() {
        // 601 bytes of ‘ (3 bytes each) and an ASCII tail: byte len-600 falls inside a character.
        let stderr = format!("{}x", "‘".repeat(200));
        assert!(!stderr.is_char_boundary(stderr.len() - 600));
        let e = RemoteError {
            host: "127.0.0.1".into(),
            command: "sudo -n env PORTAGE_BINHOST=http://h/p emerge =a/b-1".into(),
            kind: RemoteErrorKind::Exit { code: Some(1), stderr },
        };
        let shown = e.to_string();
        assert!(
            shown.starts_with("127.0.0.1: `sudo -n env PORTAGE_BINHOST=http://h/p emerge =a/b-1` exited with 1: ‘")
        );
        assert!(shown.ends_with("‘x"), "{shown}");
    }

    fn cfg(dir: &Path, user: &str) -> SshConfig {
        SshConfig {
            user: user.into(),
            identity: None,
            known_hosts: dir.join("known_hosts"),
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(120),
            max_concurrency: 64,
            control_dir: dir.join(format!("ctl-{user}")),
        }
    }

    #[test]
    fn a_pool_serves_the_same_login_only_while_known_hosts_is_unchanged() {
        let dir = std::env::temp_dir().join(format!("drover-ssh-serves-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("known_hosts"), "127.0.0.1 ssh-ed25519 AAAA1\n").unwrap();
        let pool = Pool::new(cfg(&dir, "deploy")).unwrap();
        // Another control directory is the same login.
        let mut same = cfg(&dir, "deploy");
        same.control_dir = dir.join("elsewhere");
        assert!(pool.serves(&same));
        assert!(!pool.serves(&cfg(&dir, "root")), "another user");
        let slower = SshConfig { connect_timeout: Duration::from_secs(30), ..same.clone() };
        assert!(!pool.serves(&slower), "another timeout");
        // A key added or revoked: the masters were checked against the old file.
        std::fs::write(dir.join("known_hosts"), "127.0.0.1 ssh-ed25519 AAAA2\n").unwrap();
        assert!(!pool.serves(&same), "known_hosts content changed");
        std::fs::remove_file(dir.join("known_hosts")).unwrap();
        assert!(!pool.serves(&same), "known_hosts gone");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_known_hosts_file_is_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("drover-ssh-missing-{}", std::process::id()));
        let e = Pool::new(cfg(&dir, "deploy")).err().unwrap().to_string();
        assert!(e.contains("known_hosts") && e.contains(&dir.display().to_string()), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
