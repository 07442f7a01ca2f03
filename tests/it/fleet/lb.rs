//! A site's real HAProxy, running exactly what `drover render haproxy`
//! printed for the site, and a client of its runtime API (unix or TCP admin
//! socket) with parsers for `show stat` and `show servers state`.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::node::ensure_free;
use super::procs::{Daemon, wait_for};

/// Where the runtime API listens.
#[derive(Clone, Debug)]
pub enum AdminAddr {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl AdminAddr {
    /// One command in non-interactive mode (HAProxy closes after answering).
    pub fn command(&self, cmd: &str) -> io::Result<String> {
        let timeout = Some(Duration::from_secs(5));
        let mut out = String::new();
        match self {
            AdminAddr::Unix(p) => {
                let mut s = UnixStream::connect(p)?;
                s.set_read_timeout(timeout)?;
                s.write_all(format!("{cmd}\n").as_bytes())?;
                s.read_to_string(&mut out)?;
            }
            AdminAddr::Tcp(a) => {
                let mut s = TcpStream::connect_timeout(a, Duration::from_secs(2))?;
                s.set_read_timeout(timeout)?;
                s.write_all(format!("{cmd}\n").as_bytes())?;
                s.read_to_string(&mut out)?;
            }
        }
        Ok(out)
    }
}

/// One row of `show stat` (a proxy's FRONTEND/BACKEND aggregate or a server).
#[derive(Clone, Debug)]
pub struct StatRow {
    pub pxname: String,
    pub svname: String,
    pub qcur: u64,
    pub scur: u64,
    pub stot: u64,
    pub status: String,
    pub weight: u64,
    pub check_status: String,
    /// Every column by its header name.
    pub fields: HashMap<String, String>,
}

/// Parses `show stat` CSV by its `# pxname,svname,...` header.
pub fn parse_stat(csv: &str) -> Vec<StatRow> {
    let mut lines = csv.lines();
    let Some(header) = lines.next().and_then(|h| h.strip_prefix("# ")) else {
        return Vec::new();
    };
    let names: Vec<&str> = header.split(',').collect();
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let fields: HashMap<String, String> =
                names.iter().zip(l.split(',')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
            let num = |k: &str| get(k).parse().unwrap_or(0);
            StatRow {
                pxname: get("pxname"),
                svname: get("svname"),
                qcur: num("qcur"),
                scur: num("scur"),
                stot: num("stot"),
                status: get("status"),
                weight: num("weight"),
                check_status: get("check_status"),
                fields,
            }
        })
        .collect()
}

/// One server line of `show servers state`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerState {
    pub be_name: String,
    pub srv_name: String,
    /// 0 STOPPED, 1 STARTING, 2 RUNNING, 3 STOPPING.
    pub op_state: u32,
    /// Bits: 0x01 FMAINT, 0x02 IMAINT, 0x04 CMAINT, 0x08 FDRAIN, 0x10 IDRAIN, 0x20 RMAINT.
    pub admin_state: u32,
    pub uweight: u32,
    pub iweight: u32,
}

pub const ADMIN_FMAINT: u32 = 0x01;
pub const ADMIN_FDRAIN: u32 = 0x08;
pub const OP_STOPPED: u32 = 0;
pub const OP_RUNNING: u32 = 2;

/// Parses `show servers state` (format version line, `#` header, rows).
pub fn parse_servers_state(text: &str) -> Vec<ServerState> {
    let mut names: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for l in text.lines() {
        if let Some(h) = l.strip_prefix("# ") {
            names = h.split_whitespace().collect();
            continue;
        }
        let vals: Vec<&str> = l.split_whitespace().collect();
        if names.is_empty() || vals.len() < names.len().min(9) {
            continue;
        }
        let get = |k: &str| names.iter().position(|n| *n == k).and_then(|i| vals.get(i)).copied().unwrap_or("");
        let num = |k: &str| get(k).parse().unwrap_or(u32::MAX);
        out.push(ServerState {
            be_name: get("be_name").into(),
            srv_name: get("srv_name").into(),
            op_state: num("srv_op_state"),
            admin_state: num("srv_admin_state"),
            uweight: num("srv_uweight"),
            iweight: num("srv_iweight"),
        });
    }
    out
}

/// A site's HAProxy: the current process and, after reloads, the old ones
/// still finishing their requests. All are stopped by PID on drop.
pub struct SiteLb {
    pub site: String,
    pub dir: PathBuf,
    pub cfg: PathBuf,
    pub state_file: PathBuf,
    pub frontend: SocketAddr,
    pub admin: AdminAddr,
    pub log: PathBuf,
    haproxy: PathBuf,
    /// Oldest first; the last one is current.
    procs: Vec<Daemon>,
    /// Every address the configuration binds (checked free before starting).
    binds: Vec<SocketAddr>,
}

impl SiteLb {
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        site: &str,
        dir: &Path,
        cfg: PathBuf,
        state_file: PathBuf,
        frontend: SocketAddr,
        admin: AdminAddr,
        binds: Vec<SocketAddr>,
        haproxy: PathBuf,
    ) -> io::Result<SiteLb> {
        for b in &binds {
            ensure_free(*b, &format!("HAProxy of site {site}"))?;
        }
        let mut lb = SiteLb {
            site: site.into(),
            dir: dir.into(),
            log: dir.join("haproxy.log"),
            cfg,
            state_file,
            frontend,
            admin,
            haproxy,
            procs: Vec::new(),
            binds,
        };
        lb.spawn(None)?;
        lb.wait_checked(Duration::from_secs(10))?;
        Ok(lb)
    }

    /// Starts a process on the configuration; with `old`, as its reload
    /// (`-sf old`: the old one stops listening and finishes its requests).
    fn spawn(&mut self, old: Option<u32>) -> io::Result<()> {
        let mut cmd = Command::new(&self.haproxy);
        cmd.arg("-db").arg("-f").arg(&self.cfg);
        if let Some(pid) = old {
            cmd.arg("-sf").arg(pid.to_string());
        }
        let n = self.procs.len();
        let mut d = Daemon::spawn(
            &format!("haproxy-{}-{n}", self.site),
            &mut cmd,
            &self.dir.join(format!("pids/haproxy-{n}.pid")),
            &self.log,
        )?;
        let pid = d.pid();
        // Ready when the admin socket answers from this very process.
        let ready = wait_for(Duration::from_secs(10), || {
            if !d.running() {
                return Some(false);
            }
            let info = self.admin.command("show info").ok()?;
            info.lines().any(|l| l.trim() == format!("Pid: {pid}")).then_some(true)
        });
        if ready != Some(true) {
            return Err(io::Error::other(format!(
                "HAProxy of site {} did not start (exit status {:?}); its log:\n{}",
                self.site,
                d.exited(),
                fs::read_to_string(&self.log).unwrap_or_default()
            )));
        }
        self.procs.push(d);
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.procs.last().map(Daemon::pid).unwrap_or(0)
    }

    /// Runs a runtime API command; panics with the site and command on I/O errors.
    pub fn cmd(&self, cmd: &str) -> String {
        self.admin.command(cmd).unwrap_or_else(|e| panic!("HAProxy of site {}: `{cmd}`: {e}", self.site))
    }

    /// Runs a command that must answer nothing but an empty line (`set ...`).
    pub fn set(&self, cmd: &str) {
        let out = self.cmd(cmd);
        assert!(out.trim().is_empty(), "HAProxy of site {}: `{cmd}` answered {out:?}", self.site);
    }

    pub fn stat(&self) -> Vec<StatRow> {
        parse_stat(&self.cmd("show stat"))
    }

    pub fn stat_of(&self, px: &str, sv: &str) -> StatRow {
        self.stat()
            .into_iter()
            .find(|r| r.pxname == px && r.svname == sv)
            .unwrap_or_else(|| panic!("no `show stat` row {px}/{sv} on site {}", self.site))
    }

    pub fn servers_state(&self) -> Vec<ServerState> {
        parse_servers_state(&self.cmd("show servers state"))
    }

    pub fn server_state(&self, be: &str, srv: &str) -> ServerState {
        self.servers_state()
            .into_iter()
            .find(|s| s.be_name == be && s.srv_name == srv)
            .unwrap_or_else(|| panic!("no server {be}/{srv} in `show servers state`"))
    }

    /// Waits until every server has passed a health check (`L7OK`) and is UP.
    pub fn wait_checked(&self, timeout: Duration) -> io::Result<()> {
        let ok = wait_for(timeout, || {
            let rows = parse_stat(&self.admin.command("show stat").ok()?);
            let servers: Vec<_> = rows.iter().filter(|r| r.svname != "FRONTEND" && r.svname != "BACKEND").collect();
            (!servers.is_empty() && servers.iter().all(|r| r.check_status == "L7OK" && r.status == "UP")).then_some(())
        });
        ok.ok_or_else(|| {
            io::Error::other(format!(
                "HAProxy of site {}: not every server passed its health check within {timeout:?}:\n{}",
                self.site,
                self.admin.command("show stat").unwrap_or_default()
            ))
        })
    }

    /// Waits until `px/sv` has `status` in `show stat`.
    pub fn wait_status(&self, px: &str, sv: &str, status: &str, timeout: Duration) {
        let ok = wait_for(timeout, || (self.stat_of(px, sv).status == status).then_some(()));
        assert!(
            ok.is_some(),
            "{px}/{sv} on site {} did not become {status} within {timeout:?}: {:?}",
            self.site,
            self.stat_of(px, sv).status
        );
    }

    /// Writes `show servers state` to the server-state file (atomically), as
    /// must happen right before every reload.
    pub fn dump_state(&self) {
        let state = self.cmd("show servers state");
        let tmp = self.state_file.with_extension("tmp");
        fs::write(&tmp, state).expect("write server-state file");
        fs::rename(&tmp, &self.state_file).expect("rename server-state file");
    }

    /// Reloads as an operator would (`haproxy -sf <old>`), after dumping the
    /// server state when `dump_state`.
    pub fn reload(&mut self, dump_state: bool) {
        if dump_state {
            self.dump_state();
        }
        let old = self.pid();
        self.spawn(Some(old)).unwrap_or_else(|e| panic!("reload of site {}: {e}", self.site));
    }

    /// Old processes still running after reloads (they finish in-flight requests).
    pub fn old_processes_running(&mut self) -> usize {
        let n = self.procs.len().saturating_sub(1);
        self.procs[..n].iter_mut().map(|d| d.running()).filter(|&r| r).count()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn binds(&self) -> &[SocketAddr] {
        &self.binds
    }
}
