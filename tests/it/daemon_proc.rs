//! The daemon as a process (`drover reconcile --simulate`): signals, its
//! state directory, no temporary directory left behind, and endpoints that
//! answer while slow clients hold connections.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, out.split("\r\n\r\n").nth(1).unwrap_or("").to_string()))
}

struct Daemon {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Daemon {
    fn start(base: &Path, state: &str, addr: &str) -> Daemon {
        let log = base.join(format!("{state}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_drover"))
            .arg("--specs")
            .arg(base.join("specs"))
            .args(["reconcile", "--simulate", "--time-scale", "600", "--listen", addr, "--state-dir"])
            .arg(base.join(state))
            .env("TMPDIR", base.join("tmp"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon { child, addr: addr.to_string(), log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_until(&mut self, what: &str, limit: Duration, cond: impl Fn(&mut Daemon) -> bool) {
        let t0 = Instant::now();
        while !cond(self) {
            assert!(self.child.try_wait().unwrap().is_none(), "exited waiting for {what}:\n{}", self.log());
            assert!(t0.elapsed() < limit, "timed out waiting for {what}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, sig: i32) {
        unsafe { kill(self.child.id() as i32, sig) };
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn setup(name: &str) -> PathBuf {
    let base = std::env::temp_dir().join(format!("drover-proc-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(base.join("specs")).unwrap();
    std::fs::create_dir_all(base.join("tmp")).unwrap();
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/minimal/spec.yaml");
    std::fs::copy(spec, base.join("specs/spec.yaml")).unwrap();
    base
}

fn tmp_entries(base: &Path) -> Vec<String> {
    std::fs::read_dir(base.join("tmp")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect()
}

#[test]
fn sighup_rereads_slow_clients_wait_and_no_temporary_directory_is_left() {
    let base = setup("signals");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut d = Daemon::start(&base, "state", &addr);
    d.wait_until("readiness", Duration::from_secs(60), |d| get(&d.addr, "/readyz").is_some_and(|(c, _)| c == 200));
    // --state-dir is honoured: the simulation's lease and journal are there.
    assert!(base.join("state/simulation").is_dir());
    assert!(base.join("state/simulation").read_dir().unwrap().next().is_some());

    // 40 clients that open a connection and send nothing or half a header.
    let mut slow = Vec::new();
    for i in 0..40 {
        let mut s = TcpStream::connect(&addr).unwrap();
        if i % 2 == 1 {
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
        }
        slow.push(s);
    }
    let t0 = Instant::now();
    assert_eq!(get(&addr, "/healthz").map(|(c, _)| c), Some(200));
    assert!(t0.elapsed() < Duration::from_secs(3), "healthz took {:?} behind slow clients", t0.elapsed());

    // SIGHUP: the spec is read again; the daemon goes on.
    d.signal(1);
    d.wait_until("the SIGHUP log line", Duration::from_secs(20), |d| {
        d.log().contains("SIGHUP: reading the spec again")
    });
    assert_eq!(get(&addr, "/healthz").map(|(c, _)| c), Some(200));

    // A second daemon on the same address: the bind fails, exit 1.
    let mut second = Daemon::start(&base, "state2", &addr);
    assert_eq!(second.wait_exit(Duration::from_secs(60)), Some(1), "{}", second.log());
    assert!(second.log().contains("cannot serve HTTP on"), "{}", second.log());

    // SIGTERM then a second one: exit 0 (stopped) or 130 (at once).
    d.signal(15);
    d.signal(15);
    let code = d.wait_exit(Duration::from_secs(60));
    assert!(matches!(code, Some(0) | Some(130)), "{code:?}: {}", d.log());

    // SIGKILL cannot clean up: there is nothing to.
    let mut third = Daemon::start(&base, "state", &format!("127.0.0.1:{}", free_port()));
    third.wait_until("readiness", Duration::from_secs(60), |d| get(&d.addr, "/readyz").is_some_and(|(c, _)| c == 200));
    third.signal(9);
    assert!(third.wait_exit(Duration::from_secs(10)).is_none());
    assert!(tmp_entries(&base).is_empty(), "left in the temporary directory: {:?}", tmp_entries(&base));
    drop(slow);
    let _ = std::fs::remove_dir_all(&base);
}
