//! The harness itself: the standard fleet starts, every node is reachable
//! with strict host key checking (and a wrong key is refused), the LBs run the
//! rendered configuration, and the stand-ins behave like the real tools.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use super::http::{self, Client};
use super::loadgen::LoadOptions;
use super::node::{self, fault};
use super::procs::wait_for;
use super::topology::{self, Target};
use super::{Admin, FleetOptions, TestFleet, Topology};

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn standard_fleet_is_reachable_over_strict_ssh_and_serves_through_its_lbs() {
    let t0 = Instant::now();
    let fleet = TestFleet::start("smoke", FleetOptions::full(Topology::standard()));
    assert_eq!(fleet.nodes.len(), 16);
    assert_eq!(fleet.model.nodes.len(), 16);
    assert_eq!(fleet.model.sites.len(), 3);

    // Each LB runs exactly what the library renders for its site.
    for s in &fleet.sites {
        let id = fleet.model.site_by_name(&s.name).unwrap();
        let expected = drover::render::haproxy_config(&fleet.model, id).unwrap();
        assert_eq!(std::fs::read_to_string(&s.lb.cfg).unwrap(), expected);
    }

    // Every node: `qlist -ICv` over SSH (BatchMode, StrictHostKeyChecking=yes).
    let t_ssh = Instant::now();
    let expected = Target::initial().atoms().join("\n") + "\n";
    thread::scope(|sc| {
        for part in fleet.nodes.chunks(4) {
            let fleet = &fleet;
            let expected = &expected;
            sc.spawn(move || {
                for n in part {
                    let out = fleet.ssh(n.ssh, "qlist -ICv");
                    assert!(out.status.success(), "ssh {} qlist: {}", n.name, stderr(&out));
                    assert_eq!(&stdout(&out), expected, "qlist -ICv on {}", n.name);
                }
            });
        }
    });
    let ssh_all = t_ssh.elapsed();
    // LB hosts of unix-socket sites: the socket is the SSH user's.
    for s in fleet.sites.iter().filter(|s| s.lb_ssh.is_some()) {
        let crate::fleet::lb::AdminAddr::Unix(sock) = &s.lb.admin else {
            panic!("site {} has an LB host but no unix socket", s.name);
        };
        let out = fleet.ssh(s.lb_ssh.unwrap(), &format!("test -S {0} && test -w {0} && id -un", sock.display()));
        assert!(out.status.success(), "LB host of {}: {}", s.name, stderr(&out));
        assert_eq!(stdout(&out).trim(), topology::NODE_USER);
    }

    // A wrong host key (another node's) is refused, and so is an unknown host.
    let a = &fleet.nodes[0];
    let b = &fleet.nodes[1];
    let wrong = fleet.dir.join("ssh/known_hosts.wrong");
    let b_line = node::known_hosts_line(&b.dir.join("sshd"), b.ssh).unwrap();
    let forged = b_line.replacen(&b.ssh.ip().to_string(), &a.ssh.ip().to_string(), 1);
    std::fs::write(&wrong, forged + "\n").unwrap();
    let out = fleet.ssh_command(a.ssh, &wrong).arg("qlist -ICv").output().unwrap();
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            || stderr(&out).contains("Host key verification failed"),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());
    let empty = fleet.dir.join("ssh/known_hosts.empty");
    std::fs::write(&empty, "").unwrap();
    let out = fleet.ssh_command(a.ssh, &empty).arg("true").output().unwrap();
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    assert!(stderr(&out).contains("Host key verification failed"), "{}", stderr(&out));

    // Sessions through every site: no failure, balanced over the site's farms.
    let loads: Vec<_> = fleet.sites.iter().map(|s| (s, fleet.loadgen(&s.name, LoadOptions::default()))).collect();
    for (_, l) in &loads {
        l.wait_more(100, Duration::from_secs(20));
    }
    for (s, l) in loads {
        let report = l.stop();
        report.assert_clean();
        let farms: std::collections::BTreeSet<_> =
            report.sessions.iter().filter_map(|s| s.observations.last()?.farm.clone()).collect();
        assert_eq!(farms.len(), 2, "site {}: sessions should spread over both farms: {farms:?}", s.name);
    }
    eprintln!(
        "smoke: fleet start-up {:.2?}, qlist over cold SSH on 16 nodes {ssh_all:.2?}, test {:.2?}",
        fleet.startup,
        t0.elapsed()
    );
}

#[test]
fn stand_ins_behave_like_the_tools_they_replace() {
    let mut opts = FleetOptions::full(Topology::single_site("st", 1, 2, Admin::UnixOverSsh));
    opts.reboot_down = Duration::from_millis(500);
    // This test is about the stand-ins (webstack.rs and packages_e2e.rs test the real ones).
    opts.real_web = false;
    opts.real_portage = false;
    let fleet = TestFleet::start("stand-ins", opts);
    let n1 = fleet.node("f1-n1");
    let n2 = fleet.node("f1-n2");
    let binhost = topology::binhost(fleet.plan, &n1.profile);
    let run = |n: &node::Node, cmd: &str| fleet.ssh(n.ssh, cmd);

    // emerge: binary packages from the profile's binhost only.
    let out = run(
        n1,
        &format!(
            "PORTAGE_BINHOST={binhost} emerge --usepkg --getbinpkg --oneshot \
             =dev-libs/openssl-3.0.15-r1 =sys-kernel/gentoo-kernel-bin-6.6.62"
        ),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(">>> Installing (2 of 2) sys-kernel/gentoo-kernel-bin-6.6.62"));
    let installed = stdout(&run(n1, "qlist -ICv"));
    assert!(installed.contains("dev-libs/openssl-3.0.15-r1\n"), "{installed}");
    assert!(!installed.contains("dev-libs/openssl-3.0.15\n"), "{installed}");
    assert!(installed.contains("sys-kernel/gentoo-kernel-bin-6.6.58\n"));
    assert!(installed.contains("sys-kernel/gentoo-kernel-bin-6.6.62\n"));
    assert_eq!(n1.installed().len(), installed.lines().count());
    let world = std::fs::read_to_string(n1.root.join("var/lib/portage/world")).unwrap();
    assert_eq!(world, "", "--oneshot must not touch the world file");

    let out = run(n1, "emerge --usepkg --getbinpkg =app-arch/tar-1.35");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("PORTAGE_BINHOST is not set"));
    let out = run(n1, "PORTAGE_BINHOST=https://binhost.drover.test/r650 emerge -1kg =app-arch/tar-1.35");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not this node's profile binhost"));
    let out = run(n1, &format!("PORTAGE_BINHOST={binhost} emerge --oneshot =app-arch/tar-1.35"));
    assert_eq!(out.status.code(), Some(1), "a source build is refused");

    n2.set_fault(fault::EMERGE_FAIL, "");
    let before = n2.installed();
    let out = run(n2, &format!("PORTAGE_BINHOST={binhost} emerge -1 --usepkg --getbinpkg =sys-apps/man-db-2.13.0"));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("Fetch failed for sys-apps/man-db-2.13.0"));
    assert_eq!(n2.installed(), before);
    n2.clear_fault(fault::EMERGE_FAIL);

    // rc-service: restart gives a new web server process; unknown services fail.
    let pid = n1.web_pid().unwrap();
    let out = run(n1, "rc-service apache2 restart");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_ne!(n1.web_pid().unwrap(), pid);
    assert!(n1.rc_log().last().unwrap().ends_with("apache2 restart 0"));
    let out = run(n1, "rc-service nosuch restart");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("does not exist"));
    let out = run(n1, "systemctl restart php-fpm.service");
    assert!(out.status.success(), "{}", stderr(&out));

    // Release activation: rsync from the source, flip the symlink atomically;
    // the web server serves the new release only after a reload.
    let rsync_src = fleet.model.sources.releases.clone().unwrap();
    let out = run(
        n1,
        &format!(
            "rsync -a {rsync_src}/2026.11.2/ $NODE_ROOT/srv/app/releases/2026.11.2/ && \
             ln -sfn releases/2026.11.2 $NODE_ROOT/srv/app/current.new && \
             mv -T $NODE_ROOT/srv/app/current.new $NODE_ROOT/srv/app/current"
        ),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(n1.active_release().as_deref(), Some("2026.11.2"));
    assert_eq!(http::get(n1.http, "/healthz").unwrap().release(), "2026.11.1");
    // An Apache reload does nothing for PHP, as on a real node.
    let out = run(n1, "rc-service apache2 reload");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(http::get(n1.http, "/health.php").unwrap().release(), "2026.11.1");
    let out = run(n1, "rc-service php-fpm reload");
    assert!(out.status.success(), "{}", stderr(&out));
    let r = http::get(n1.http, "/healthz").unwrap();
    assert_eq!((r.status, r.release()), (200, "2026.11.2"));
    assert!(r.body.contains("release=2026.11.2"));
    // The contract's health page and pool status: this process, (re)loaded now.
    let h = http::get(n1.http, "/health.php").unwrap();
    let pid = n1.web_pid().unwrap();
    assert!(h.body.contains(&format!("release=2026.11.2 php=8.2.27 pid={pid}")), "{}", h.body);
    let st: serde_json::Value =
        serde_json::from_str(&http::get(n1.http, "/fpm-status?json&full").unwrap().body).unwrap();
    let loaded = st["processes"][0]["start time"].as_u64().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(st["processes"][0]["pid"], pid);
    assert!(loaded <= now && loaded + 5 >= now, "loaded {loaded}, now {now}");

    // reboot: the connection drops, the node comes back with a new boot id
    // and the newest installed kernel.
    let boot = n1.boot_id();
    assert_eq!(n1.running_kernel(), "6.6.58-gentoo-dist");
    let t = Instant::now();
    let out = run(n1, "reboot");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(wait_for(Duration::from_secs(30), || (!n1.is_up()).then_some(())).is_some(), "node went down");
    assert!(wait_for(Duration::from_secs(60), || n1.is_up().then_some(())).is_some(), "node came back");
    let back = t.elapsed();
    assert_ne!(n1.boot_id(), boot);
    assert_eq!(n1.running_kernel(), "6.6.62-gentoo-dist");
    let out = run(n1, "cat $NODE_ROOT/proc/sys/kernel/random/boot_id");
    assert_eq!(stdout(&out).trim(), n1.boot_id());

    // reboot-hang: the node never comes back until powered on.
    n2.set_fault(fault::REBOOT_HANG, "");
    assert!(run(n2, "reboot").status.success());
    assert!(wait_for(Duration::from_secs(30), || (!n2.is_up()).then_some(())).is_some());
    std::thread::sleep(Duration::from_secs(2));
    assert!(!n2.is_up());
    let out = run(n2, "true");
    assert_eq!(out.status.code(), Some(255), "an unreachable node: {}", stderr(&out));
    n2.clear_fault(fault::REBOOT_HANG);
    n2.power_on().unwrap();
    assert!(run(n2, "true").status.success());

    // Sessions live in the farm's memcached: flush_all forgets them.
    let lb = &fleet.site("st").lb;
    lb.wait_checked(Duration::from_secs(10)).unwrap();
    let mut c = Client::new(lb.frontend);
    c.get("/").unwrap();
    let r = c.get("/").unwrap();
    assert!(r.body.contains("hits=2"), "{}", r.body);
    let mut mc = TcpStream::connect(fleet.memcached_addr("f1")).unwrap();
    mc.write_all(b"flush_all\r\n").unwrap();
    let mut buf = [0u8; 4];
    mc.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"OK\r\n");
    let r = c.get("/").unwrap();
    assert!(r.body.contains("hits=1"), "{}", r.body);
    eprintln!("stand-ins: start-up {:.2?}, reboot round trip {back:.2?}", fleet.startup);
}

#[test]
fn a_panicking_test_leaves_no_process_behind() {
    let pids = std::sync::Mutex::new(Vec::new());
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let fleet = TestFleet::start("panic", FleetOptions::lb_only(Topology::single_site("p", 1, 2, Admin::Tcp)));
        let mut p = pids.lock().unwrap();
        p.extend(fleet.nodes.iter().filter_map(|n| n.web_pid()));
        p.push(fleet.site("p").lb.pid());
        drop(p);
        panic!("deliberate panic: the fleet must stop its processes while unwinding");
    }));
    assert!(result.is_err());
    let pids = pids.into_inner().unwrap();
    assert_eq!(pids.len(), 3);
    for pid in pids {
        assert!(!super::procs::alive(pid), "process {pid} survived the panic");
    }
}

#[test]
fn a_killed_runs_processes_are_stopped_by_their_pid_files() {
    use std::process::Command;
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("stale-pids");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let marker = format!("{}/", dir.display());
    // A leftover of "our" run (its command line names the directory), with a
    // child of its own, and a process that merely reuses a recorded PID.
    let mut ours = Command::new("sh").args(["-c", "sleep 60; :"]).arg(&marker).spawn().unwrap();
    let mut stranger = Command::new("sleep").arg("60").spawn().unwrap();
    std::fs::write(dir.join("ours.pid"), format!("{}\n", ours.id())).unwrap();
    std::fs::write(dir.join("stranger.pid"), format!("{}\n", stranger.id())).unwrap();
    let grandchild = wait_for(Duration::from_secs(5), || super::procs::descendants(ours.id()).first().copied())
        .expect("sh started sleep");

    super::procs::kill_stale(&dir, &[marker]);
    assert!(wait_for(Duration::from_secs(5), || ours.try_wait().unwrap()).is_some(), "the leftover was killed");
    assert!(
        wait_for(Duration::from_secs(5), || (!super::procs::alive(grandchild)).then_some(())).is_some(),
        "and its child"
    );
    assert!(stranger.try_wait().unwrap().is_none(), "a reused PID is left alone");
    stranger.kill().unwrap();
    stranger.wait().unwrap();
    assert!(!dir.join("ours.pid").exists());
}
