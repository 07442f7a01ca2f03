//! Processes of the test fleet: each started by the harness, recorded in a PID
//! file, and stopped by its PID (SIGTERM, then SIGKILL) when its guard drops,
//! also while a test panics. Nothing here matches processes by name.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

pub const SIGHUP: i32 = 1;
pub const SIGUSR1: i32 = 10;
pub const SIGUSR2: i32 = 12;
pub const SIGKILL: i32 = 9;
pub const SIGTERM: i32 = 15;
pub const SIGSTOP: i32 = 19;

/// How long a process gets to exit on SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
    fn geteuid() -> u32;
}

/// Sends `sig` to one process; false if it does not exist (any more).
pub fn signal(pid: u32, sig: i32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false; // never a process group or "every process"
    }
    // SAFETY: kill(2) with a positive PID only signals that process.
    unsafe { kill(pid, sig) == 0 }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { geteuid() == 0 }
}

/// Running (not a zombie).
pub fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).is_some_and(|state| state != "Z")
        }
        Err(_) => false,
    }
}

/// The command line of a process, arguments joined by spaces.
pub fn cmdline(pid: u32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(String::from_utf8_lossy(&raw).split('\0').collect::<Vec<_>>().join(" "))
}

/// Every descendant of `pid` (children first-level first), from /proc.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|s| s.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                children.entry(ppid).or_default().push(p);
            }
        }
    }
    let mut out = Vec::new();
    let mut queue = vec![pid];
    while let Some(p) = queue.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            out.push(c);
            queue.push(c);
        }
    }
    out
}

/// SIGKILLs every descendant of `pid` (e.g. the sessions of an sshd
/// listener, which outlive it otherwise).
pub fn kill_descendants(pid: u32) {
    for p in descendants(pid).into_iter().rev() {
        signal(p, SIGKILL);
    }
}

/// SIGKILLs `pid` and every descendant, with no way out: each process is
/// frozen (SIGSTOP) before the tree is read again, until a reading finds no
/// new one, so nothing forks or accepts a connection between the reading and
/// the kill. (Killing the descendants first and then the parent lets a child
/// forked in between survive: an sshd listener accepting a connection while
/// it goes away leaves a live session on a "rebooted" node.)
pub fn kill_tree(pid: u32) {
    let mut frozen = vec![pid];
    signal(pid, SIGSTOP);
    loop {
        let new: Vec<u32> = descendants(pid).into_iter().filter(|p| !frozen.contains(p)).collect();
        if new.is_empty() {
            break;
        }
        for &p in &new {
            signal(p, SIGSTOP);
        }
        frozen.extend(new);
    }
    for p in frozen.into_iter().rev() {
        signal(p, SIGKILL);
    }
}

/// A process the harness started. Dropping it stops it by PID and removes its
/// PID file.
pub struct Daemon {
    pub name: String,
    child: Child,
    pid_file: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `cmd` with stdin closed and stdout/stderr appended to `log`,
    /// and records its PID in `pid_file`.
    pub fn spawn(name: &str, cmd: &mut Command, pid_file: &Path, log: &Path) -> io::Result<Self> {
        let out = fs::OpenOptions::new().create(true).append(true).open(log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start {name}: {e}")))?;
        fs::write(pid_file, format!("{}\n", child.id()))?;
        Ok(Daemon { name: name.to_string(), child, pid_file: pid_file.to_path_buf(), log: log.to_path_buf() })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Still running (reaps it if it exited).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The exit status, if it exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn signal(&self, sig: i32) -> bool {
        signal(self.pid(), sig)
    }

    /// SIGTERM, wait up to `STOP_GRACE`, then SIGKILL; reaps the process.
    pub fn stop(&mut self) {
        if self.running() {
            self.signal(SIGTERM);
            let deadline = Instant::now() + STOP_GRACE;
            while self.running() && Instant::now() < deadline {
                sleep(Duration::from_millis(10));
            }
            if self.running() {
                self.signal(SIGKILL);
            }
        }
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.pid_file);
    }

    /// Waits for the process to exit on its own, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.running() {
            if Instant::now() >= deadline {
                return false;
            }
            sleep(Duration::from_millis(10));
        }
        let _ = fs::remove_file(&self.pid_file);
        true
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Kills processes left behind by an earlier run that died without its Drop
/// guards (SIGKILL, abort): every `*.pid` file under `dir`, but only if that
/// PID's command line still names one of `markers` (so a reused PID is left
/// alone).
pub fn kill_stale(dir: &Path, markers: &[String]) {
    let mut files = Vec::new();
    collect_pid_files(dir, &mut files);
    for f in files {
        let Some(pid) = fs::read_to_string(&f).ok().and_then(|s| s.trim().parse::<u32>().ok()) else {
            continue;
        };
        if cmdline(pid).is_some_and(|c| markers.iter().any(|m| c.contains(m.as_str()))) {
            kill_descendants(pid);
            signal(pid, SIGKILL);
        }
        let _ = fs::remove_file(&f);
    }
}

fn collect_pid_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => collect_pid_files(&p, out),
            Ok(_) if p.extension().is_some_and(|x| x == "pid") => out.push(p),
            _ => {}
        }
    }
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `timeout`.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        sleep(Duration::from_millis(20));
    }
}

/// The path of a binary the tests need, or a panic that says how to get it.
pub fn require_binary(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin".into(), "/usr/bin".into()]);
    for d in dirs {
        let p = d.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "the real-fleet tests need `{name}` (Debian package {package}), which is not installed: \
         run ./tests/run-all as root (it installs it) or apt-get install {package}"
    );
}
