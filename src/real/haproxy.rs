//! A site's HAProxy through its runtime API: read server states and load,
//! set a server's state and weight. The socket is a TCP admin socket reached
//! directly, or a unix socket on the LB host reached through the SSH master
//! (stream-local forwarding: nothing but sshd is needed on the LB host).
//!
//! Names follow `render haproxy`: a farm's pseudo-server is
//! `<lb.backend>/<farm.lb_server>`, a node's server is `<farm>/<node>`.
//! Weights are absolute (`set weight b/s N`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::ssh::Pool;
use crate::model::{LbApi, LbSettings};
use crate::observe::{Admin, LbServer};

/// How to reach one site's runtime API.
#[derive(Clone, Debug)]
pub enum Endpoint {
    Tcp(String, u16),
    /// A local unix socket (forwarded over SSH to the LB host's socket).
    Unix(PathBuf),
}

/// One server's state and load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerState {
    pub admin: Admin,
    /// Operational state: passing its health checks (`srv_op_state` 2, RUNNING).
    pub up: bool,
    pub weight: u16,
    /// `scur` + `qcur`: requests/connections in progress.
    pub active: u32,
    /// `scur` alone (connections currently open).
    pub current: u32,
}

impl ServerState {
    pub fn lb(&self) -> LbServer {
        LbServer { admin: self.admin, weight: self.weight, active: self.active }
    }
}

/// A snapshot of the whole LB: `(proxy, server)` to its state.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub servers: HashMap<(String, String), ServerState>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum LbError {
    #[error("cannot reach the HAProxy runtime API at {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("HAProxy refused `{command}`: {answer}")]
    Refused { command: String, answer: String },
    #[error("unexpected answer from HAProxy to `{command}`: {detail}")]
    Malformed { command: String, detail: String },
}

/// A site's runtime API.
#[derive(Clone)]
pub struct Lb {
    pub site: String,
    endpoint: Endpoint,
    /// How a person knows the socket (the LB host's path, not the local forward).
    shown: String,
    timeout: Duration,
    /// For a socket forwarded over SSH: how to forward it again.
    forward: Option<Forward>,
}

/// A unix socket on the LB host forwarded over the pool's master to it. The
/// forward lives in that master: when the master goes (the LB host's sshd
/// restarted, the network dropped it), it is opened again over a new one.
#[derive(Clone)]
struct Forward {
    pool: Arc<Pool>,
    host: String,
    port: u16,
    remote: PathBuf,
    /// One re-forward at a time: concurrent commands that failed together
    /// must not replace each other's new socket.
    again: Arc<tokio::sync::Mutex<()>>,
}

impl Lb {
    pub fn new(site: &str, endpoint: Endpoint, timeout: Duration) -> Lb {
        let shown = match &endpoint {
            Endpoint::Tcp(h, p) => format!("{h}:{p}"),
            Endpoint::Unix(p) => p.display().to_string(),
        };
        Lb { site: site.to_string(), endpoint, shown, timeout, forward: None }
    }

    /// Connects a site as its spec says: TCP directly, or the unix socket on
    /// the LB host forwarded to `local_dir/<site>.sock` over SSH.
    pub async fn connect(
        site: &str,
        lb: &LbSettings,
        pool: &Arc<Pool>,
        local_dir: &std::path::Path,
        timeout: Duration,
    ) -> Result<Lb, LbError> {
        match &lb.api {
            LbApi::Tcp { host, port } => Ok(Lb::new(site, Endpoint::Tcp(host.clone(), *port), timeout)),
            LbApi::Ssh { host, port, socket } => {
                let local = local_dir.join(format!("lb-{site}.sock"));
                let shown = format!("{socket} on {host} (over SSH)");
                pool.forward_unix(host, *port, &local, std::path::Path::new(socket))
                    .await
                    .map_err(|e| LbError::Unreachable { endpoint: shown.clone(), reason: e })?;
                let forward = Forward {
                    pool: Arc::clone(pool),
                    host: host.clone(),
                    port: *port,
                    remote: PathBuf::from(socket),
                    again: Default::default(),
                };
                Ok(Lb {
                    site: site.to_string(),
                    endpoint: Endpoint::Unix(local),
                    shown,
                    timeout,
                    forward: Some(forward),
                })
            }
        }
    }

    pub fn endpoint_name(&self) -> String {
        self.shown.clone()
    }

    /// Sends one command (non-interactive mode: HAProxy answers and closes).
    /// A forwarded socket that does not answer is forwarded again over a
    /// live master, and the command sent once more.
    pub async fn command(&self, command: &str) -> Result<String, LbError> {
        let first = self.exchange(command).await;
        let (Err(LbError::Unreachable { .. }), Some(f), Endpoint::Unix(local)) =
            (&first, &self.forward, &self.endpoint)
        else {
            return first;
        };
        // One command forwards it again; the others that failed with it wait
        // for that and try once more.
        let Ok(_one) = f.again.try_lock() else {
            drop(f.again.lock().await);
            return self.exchange(command).await;
        };
        f.pool.reforward_unix(&f.host, f.port, local, &f.remote).await.map_err(|reason| LbError::Unreachable {
            endpoint: self.endpoint_name(),
            reason: format!("forwarding it again: {reason}"),
        })?;
        tracing::info!(site = %self.site, endpoint = %self.shown, "LB runtime API forwarded again over a new SSH master");
        self.exchange(command).await
    }

    async fn exchange(&self, command: &str) -> Result<String, LbError> {
        let unreachable = |reason: String| LbError::Unreachable { endpoint: self.endpoint_name(), reason };
        let exchange = async {
            let mut out = Vec::new();
            match &self.endpoint {
                Endpoint::Tcp(h, p) => {
                    let mut s = tokio::net::TcpStream::connect((h.as_str(), *p)).await?;
                    s.write_all(format!("{command}\n").as_bytes()).await?;
                    s.read_to_end(&mut out).await?;
                }
                Endpoint::Unix(path) => {
                    let mut s = tokio::net::UnixStream::connect(path).await?;
                    s.write_all(format!("{command}\n").as_bytes()).await?;
                    s.read_to_end(&mut out).await?;
                }
            }
            std::io::Result::Ok(out)
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => Err(unreachable(format!("no answer within {}", humantime::format_duration(self.timeout)))),
            // Over SSH, a missing remote socket shows as a closed stream.
            Ok(Err(e)) => Err(unreachable(format!("{e} (is HAProxy running with this admin socket?)"))),
            Ok(Ok(out)) => Ok(String::from_utf8_lossy(&out).into_owned()),
        }
    }

    /// A command that answers nothing on success.
    async fn set(&self, command: String) -> Result<(), LbError> {
        let answer = self.command(&command).await?;
        let answer = answer.trim();
        if answer.is_empty() { Ok(()) } else { Err(LbError::Refused { command, answer: answer.to_string() }) }
    }

    pub async fn set_state(&self, proxy: &str, server: &str, admin: Admin) -> Result<(), LbError> {
        let state = crate::plan::action::admin_name(admin);
        self.set(format!("set server {proxy}/{server} state {state}")).await
    }

    /// Waits until `proxy/server` passes its health checks (a server leaving
    /// maintenance, or whose nodes just came back, needs `rise` checks
    /// first), and looks again one check interval later: right after maint
    /// HAProxy shows the state it had before, until its next check.
    pub async fn wait_up(&self, proxy: &str, server: &str, timeout: Duration) -> Result<(), LbError> {
        self.poll_up(proxy, server, timeout).await?;
        tokio::time::sleep(CHECK_INTERVAL).await;
        self.poll_up(proxy, server, timeout).await
    }

    async fn poll_up(&self, proxy: &str, server: &str, timeout: Duration) -> Result<(), LbError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let text = self.command(&format!("show servers state {proxy}")).await?;
            let rows = parse_servers_state(&text)?;
            if rows.iter().any(|((p, s), r)| p == proxy && s == server && r.up) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(LbError::Refused {
                    command: format!("wait for {proxy}/{server} to pass its health checks"),
                    answer: format!("still down after {}", humantime::format_duration(timeout)),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until every server of `proxy` that is not in maintenance passes
    /// its checks. On timeout, at least one must: a farm with no usable node
    /// must not take sessions.
    pub async fn wait_nodes_up(&self, proxy: &str, timeout: Duration) -> Result<(), LbError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let text = self.command(&format!("show servers state {proxy}")).await?;
            let rows: Vec<_> = parse_servers_state(&text)?
                .into_iter()
                .filter(|((p, _), r)| p == proxy && r.admin != Admin::Maint)
                .collect();
            let up = rows.iter().filter(|(_, r)| r.up).count();
            if up == rows.len() && up > 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                if up > 0 {
                    return Ok(());
                }
                return Err(LbError::Refused {
                    command: format!("wait for the servers of {proxy} to pass their health checks"),
                    answer: format!("none is up after {}", humantime::format_duration(timeout)),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn set_weight(&self, proxy: &str, server: &str, weight: u16) -> Result<(), LbError> {
        self.set(format!("set weight {proxy}/{server} {weight}")).await
    }

    /// Reads every server's state, weight and load.
    pub async fn snapshot(&self) -> Result<Snapshot, LbError> {
        let (state, stat) =
            futures::future::try_join(self.command("show servers state"), self.command("show stat")).await?;
        let mut snap = Snapshot::default();
        for (key, row) in parse_servers_state(&state)? {
            snap.servers
                .insert(key, ServerState { admin: row.admin, up: row.up, weight: row.weight, active: 0, current: 0 });
        }
        for row in parse_stat(&stat)? {
            if let Some(s) = snap.servers.get_mut(&(row.proxy, row.server)) {
                s.active = row.scur + row.qcur;
                s.current = row.scur;
            }
        }
        Ok(snap)
    }
}

/// A little more than the health check interval `render haproxy` configures (`inter 1s`).
const CHECK_INTERVAL: Duration = Duration::from_millis(1200);

/// HAProxy's `srv_admin_state` bits: forced/inherited/config/resolution/hostname maint, forced/inherited drain.
const ADMF_MAINT: u32 = 0x01 | 0x02 | 0x04 | 0x20 | 0x40;
const ADMF_DRAIN: u32 = 0x08 | 0x10;

pub fn admin_of(bits: u32) -> Admin {
    if bits & ADMF_MAINT != 0 {
        Admin::Maint
    } else if bits & ADMF_DRAIN != 0 {
        Admin::Drain
    } else {
        Admin::Ready
    }
}

type ServerKey = (String, String);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateRow {
    pub admin: Admin,
    pub up: bool,
    pub weight: u16,
}

/// `show servers state`: a version line, a `#` header naming the columns, one row per server.
pub fn parse_servers_state(text: &str) -> Result<Vec<(ServerKey, StateRow)>, LbError> {
    let bad = |detail: String| LbError::Malformed { command: "show servers state".into(), detail };
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let version = lines.next().ok_or_else(|| bad("empty answer".into()))?;
    if version.trim() != "1" {
        return Err(bad(format!("unknown format version {:?}", version.trim())));
    }
    let header = lines.next().ok_or_else(|| bad("no header line".into()))?;
    let cols: Vec<&str> = header.trim_start_matches('#').split_whitespace().collect();
    let col = |name: &str| cols.iter().position(|c| *c == name).ok_or_else(|| bad(format!("no column {name}")));
    let (be, srv, adm, uw) = (col("be_name")?, col("srv_name")?, col("srv_admin_state")?, col("srv_uweight")?);
    let op = col("srv_op_state")?;
    let mut out = Vec::new();
    for line in lines {
        let f: Vec<&str> = line.split_whitespace().collect();
        let get = |i: usize| f.get(i).copied().ok_or_else(|| bad(format!("short row {line:?}")));
        let bits: u32 = get(adm)?.parse().map_err(|_| bad(format!("bad admin state in {line:?}")))?;
        let weight: u16 = get(uw)?.parse().map_err(|_| bad(format!("bad weight in {line:?}")))?;
        let up = get(op)? == "2";
        out.push(((get(be)?.to_string(), get(srv)?.to_string()), StateRow { admin: admin_of(bits), up, weight }));
    }
    Ok(out)
}

pub struct StatRow {
    pub proxy: String,
    pub server: String,
    pub scur: u32,
    pub qcur: u32,
    pub rate: f64,
}

/// `show stat`: CSV with a `# pxname,svname,...` header.
pub fn parse_stat(text: &str) -> Result<Vec<StatRow>, LbError> {
    let bad = |detail: String| LbError::Malformed { command: "show stat".into(), detail };
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().ok_or_else(|| bad("empty answer".into()))?;
    let cols: Vec<&str> = header.trim_start_matches('#').trim().split(',').collect();
    let col = |name: &str| cols.iter().position(|c| *c == name).ok_or_else(|| bad(format!("no column {name}")));
    let (px, sv, scur, qcur, rate) = (col("pxname")?, col("svname")?, col("scur")?, col("qcur")?, col("rate")?);
    let mut out = Vec::new();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
        out.push(StatRow {
            proxy: f.get(px).unwrap_or(&"").to_string(),
            server: f.get(sv).unwrap_or(&"").to_string(),
            scur: num(scur),
            qcur: num(qcur),
            rate: f.get(rate).and_then(|v| v.parse().ok()).unwrap_or(0.0),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_state_by_column_name() {
        let text = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight\n\
                    3 site 1 f1 127.0.0.1 2 0 100 100\n\
                    3 site 2 f2 127.0.0.1 2 1 0 100\n\
                    4 f1 1 n1 127.0.0.2 2 8 100 100\n\
                    4 f1 2 n2 127.0.0.3 0 2 100 100\n";
        let rows = parse_servers_state(text).unwrap();
        assert_eq!(rows[0], (("site".into(), "f1".into()), StateRow { admin: Admin::Ready, up: true, weight: 100 }));
        assert_eq!(rows[1].1, StateRow { admin: Admin::Maint, up: true, weight: 0 });
        assert_eq!(rows[2].1.admin, Admin::Drain);
        assert_eq!(
            rows[3].1,
            StateRow { admin: Admin::Maint, up: false, weight: 100 },
            "inherited maint counts as maint"
        );
        assert!(parse_servers_state("2\n# x\n").is_err());
        assert!(
            parse_servers_state("1\n# be_name srv_name srv_op_state srv_admin_state srv_uweight\nsite f1\n").is_err()
        );
    }

    #[test]
    fn stat_csv() {
        let text = "# pxname,svname,qcur,qmax,scur,smax,rate\nsite,f1,1,0,4,9,0\nsite,BACKEND,0,0,4,9,12\n";
        let rows = parse_stat(text).unwrap();
        assert_eq!((rows[0].scur, rows[0].qcur), (4, 1));
        assert_eq!(rows[1].rate, 12.0);
    }
}
