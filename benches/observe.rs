//! Observing a whole real fleet over SSH: drover's probe (`probe_all`, one
//! OpenSSH master per node) against (a) parallel plain OpenSSH with
//! ControlPersist (`xargs -P 32`, the floor for SSH), (b) Ansible running the
//! same probe script with `-m script`, and (c) the playbook an Ansible user
//! would write (facts plus one command per item).
//!
//! The nodes are the real test fleet of tests/it/fleet, SSH only: one sshd per
//! node on its own 127.x.y.z address, login user `drovertest` with /bin/sh.
//! `DROVER_BENCH_NODES` (default 64) nodes; `--quick`: 8 nodes, 2 passes, no
//! Ansible (CI). Must run as root (sshd, the node user); Ansible is optional.
//!
//! Cold = no master open yet (drover: a fresh `Pool`; (a): a fresh control
//! directory); warm = masters up. Ratios compare medians.

#[allow(dead_code, unused_imports)]
#[path = "../tests/it/fleet/mod.rs"]
mod fleet;

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use fleet::topology::{Admin, FarmTopo, NODE_USER, SiteTopo};
use fleet::{FleetOptions, TestFleet, Topology};

/// The probe every variant runs: drover's own script.
const PROBE: &str = include_str!("../src/real/probe.sh");
/// Parallelism of the baselines (xargs -P, Ansible forks) and of drover.
const PARALLEL: usize = 32;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    if !fleet::procs::is_root() {
        println!("observe: skipped (needs root: it starts sshd per node and a login user)");
        return;
    }
    let n: usize = match std::env::var("DROVER_BENCH_NODES") {
        Ok(v) => v.parse().expect("DROVER_BENCH_NODES: a number of nodes"),
        Err(_) if quick => 8,
        Err(_) => 64,
    };
    assert!(n >= 1, "DROVER_BENCH_NODES must be at least 1");
    let (cold_passes, warm_passes) = if quick { (1, 2) } else { (3, 5) };

    let fleet = TestFleet::start("bench-observe", FleetOptions::ssh_only(topology(n)));
    let bench = Bench::new(&fleet);
    println!(
        "observe: {n} nodes (sshd each, user {NODE_USER}, /bin/sh), started in {:.1?}; parallelism {PARALLEL}; \
         {cold_passes} cold + {warm_passes} warm passes",
        fleet.startup
    );

    let mut rows: Vec<Row> = Vec::new();
    let mut drover = Drover::new(&fleet, &bench.dir);

    // Cold: no master open, alternating (a) and drover.
    let mut a_cold = Row::new("(a) ssh, xargs -P 32, cold");
    let mut d_cold = Row::new("drover, cold (new Pool)");
    for k in 0..cold_passes {
        let cp = bench.control_dir(&format!("a{k}"));
        if k > 0 {
            bench.close_masters(&bench.control_dir(&format!("a{}", k - 1)));
        }
        a_cold.add(bench.ssh_pass(&cp), n as f64, None);
        let (t, sessions, connects) = drover.cold_pass(&format!("d{k}"));
        d_cold.add(t, sessions as f64, Some(connects as f64));
    }

    // Warm: masters up (the last cold directory of (a); a pool that probed once).
    let cp = bench.control_dir(&format!("a{}", cold_passes - 1));
    let mut a_warm = Row::new("(a) ssh, xargs -P 32, warm");
    let mut d_warm = Row::new("drover, warm (masters up)");
    drover.warm_up();
    for _ in 0..warm_passes {
        a_warm.add(bench.ssh_pass(&cp), n as f64, None);
        let (t, sessions, connects) = drover.warm_pass();
        d_warm.add(t, sessions as f64, Some(connects as f64));
    }
    bench.close_masters(&cp);
    drover.shutdown();

    // Ansible: (b) twice (the first opens its masters), (c) once, warm.
    let mut b_row = None;
    let mut c_row = None;
    let ansible = if quick { None } else { Ansible::find() };
    match &ansible {
        None if quick => println!("(b), (c): skipped (--quick)"),
        None => println!("(b), (c): skipped (ansible-playbook not found)"),
        Some(a) => {
            let a = a.setup(&fleet, &bench);
            let mut b = Row::new("(b) ansible -m script, warm");
            let (t0, s0) = a.adhoc_script();
            println!("(b) first run (opens masters): {:.2}s, {:.1} sessions/node", t0.as_secs_f64(), s0 / n as f64);
            let (t, s) = a.adhoc_script();
            b.add(t, s, None);
            let mut c = Row::new("(c) ansible playbook, warm");
            let (t, s) = a.playbook();
            c.add(t, s, None);
            a.close_masters();
            b_row = Some(b);
            c_row = Some(c);
        }
    }

    rows.extend([d_cold, d_warm, a_cold, a_warm]);
    rows.extend(b_row.iter().cloned());
    rows.extend(c_row.iter().cloned());
    print_table(&rows, n);

    let dw = rows[1].median();
    let aw = rows[3].median();
    println!();
    verdict("drover warm / (a) warm", dw / aw, "<= 1.2", dw / aw <= 1.2);
    match (&b_row, &c_row) {
        (Some(b), Some(c)) => {
            verdict("(b) / drover warm", b.median() / dw, ">= 10", b.median() / dw >= 10.0);
            verdict("(c) / drover warm", c.median() / dw, ">= 50", c.median() / dw >= 50.0);
        }
        _ => println!("{:<28} skipped (no Ansible)", "(b), (c) / drover warm"),
    }
}

/// `n` nodes in farms of at most 8 (sizes differing by at most one, so every
/// site passes the capacity-floor check), at most 24 farms per site.
fn topology(n: usize) -> Topology {
    let mut farms = n.div_ceil(8);
    if farms == 2 {
        farms = 3; // two unequal farms would fail the site capacity floor
    }
    let farms = farms.min(n);
    let sizes: Vec<usize> = (0..farms).map(|f| n / farms + usize::from(f < n % farms)).collect();
    let sites = farms.div_ceil(24);
    let mut topo = Topology { sites: Vec::new() };
    let mut next = 0;
    for s in 0..sites {
        let count = farms / sites + usize::from(s < farms % sites);
        let name = format!("b{}", s + 1);
        topo.sites.push(SiteTopo {
            name: name.clone(),
            production: true,
            admin: Admin::Tcp,
            farms: (0..count)
                .map(|f| FarmTopo {
                    name: format!("{name}-f{}", f + 1),
                    profiles: vec!["r640".into(); sizes[next + f]],
                })
                .collect(),
        });
        next += count;
    }
    topo
}

/// Timings of one variant.
#[derive(Clone)]
struct Row {
    name: &'static str,
    secs: Vec<f64>,
    sessions: Vec<f64>,
    connects: Vec<f64>,
}

impl Row {
    fn new(name: &'static str) -> Row {
        Row { name, secs: Vec::new(), sessions: Vec::new(), connects: Vec::new() }
    }
    /// One pass: its time, the SSH sessions it opened, the connections (if known).
    fn add(&mut self, t: Duration, sessions: f64, connects: Option<f64>) {
        self.secs.push(t.as_secs_f64());
        self.sessions.push(sessions);
        if let Some(c) = connects {
            self.connects.push(c);
        }
    }
    fn median(&self) -> f64 {
        let mut v = self.secs.clone();
        v.sort_by(f64::total_cmp);
        let m = v.len() / 2;
        if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 }
    }
    fn min(&self) -> f64 {
        self.secs.iter().copied().fold(f64::INFINITY, f64::min)
    }
}

fn print_table(rows: &[Row], n: usize) {
    println!();
    println!(
        "{:<32} {:>6} {:>9} {:>9} {:>16} {:>16}",
        "variant", "passes", "median", "min", "sessions/node/p", "connects/node/p"
    );
    for r in rows {
        let per = |v: &[f64]| {
            if v.is_empty() { "-".to_string() } else { format!("{:.2}", v.iter().sum::<f64>() / (v.len() * n) as f64) }
        };
        println!(
            "{:<32} {:>6} {:>8.3}s {:>8.3}s {:>16} {:>16}",
            r.name,
            r.secs.len(),
            r.median(),
            r.min(),
            per(&r.sessions),
            per(&r.connects)
        );
    }
}

fn verdict(what: &str, ratio: f64, target: &str, ok: bool) {
    println!("{what:<28} {ratio:>7.2}x  (target {target}) {}", if ok { "PASS" } else { "MISS" });
}

/// Files of the baselines, under the fleet's slot directory (short paths: a
/// control socket path must stay under 108 bytes).
struct Bench<'f> {
    fleet: &'f TestFleet,
    dir: PathBuf,
    /// `ssh://drovertest@ip:port`, one per line (xargs' input).
    destinations: String,
    /// The remote command: `sh -c '<probe>' drover-probe`, quoted for the login shell.
    remote: String,
}

impl<'f> Bench<'f> {
    fn new(fleet: &'f TestFleet) -> Bench<'f> {
        let dir = fleet.dir.join("b");
        fs::create_dir_all(&dir).unwrap();
        let destinations: String =
            fleet.nodes.iter().map(|n| format!("ssh://{NODE_USER}@{}:{}\n", n.ssh.ip(), n.ssh.port())).collect();
        let remote = format!("sh -c {} drover-probe", sh_quote(PROBE));
        Bench { fleet, dir, destinations, remote }
    }

    fn control_dir(&self, name: &str) -> PathBuf {
        let d = self.dir.join(name);
        fs::create_dir_all(&d).unwrap();
        // The socket path ssh creates: <dir>/%C (40 hex) plus a temporary suffix.
        assert!(d.as_os_str().len() + 1 + 40 + 17 < 108, "control path too long: {}", d.display());
        d
    }

    /// ssh's options: no user configuration, the fleet's key and known_hosts
    /// (strict), a persistent master per host in `cp`.
    fn ssh_opts(&self, cp: &Path) -> Vec<String> {
        let f = self.fleet;
        let mut v: Vec<String> = vec!["-F".into(), "/dev/null".into(), "-i".into(), f.key.display().to_string()];
        for o in [
            "IdentitiesOnly=yes".to_string(),
            "BatchMode=yes".into(),
            "StrictHostKeyChecking=yes".into(),
            format!("UserKnownHostsFile={}", f.known_hosts.display()),
            "GlobalKnownHostsFile=/dev/null".into(),
            "LogLevel=ERROR".into(),
            "ConnectTimeout=10".into(),
            "ControlMaster=auto".into(),
            "ControlPersist=60s".into(),
            format!("ControlPath={}/%C", cp.display()),
        ] {
            v.push("-o".into());
            v.push(o);
        }
        v
    }

    /// (a): `xargs -P 32 -I{} ssh <opts> {} "sh -c '<probe>' drover-probe"`
    /// over every node; checks every node answered in full.
    fn ssh_pass(&self, cp: &Path) -> Duration {
        let mut cmd = Command::new("xargs");
        cmd.args(["-P", &PARALLEL.to_string(), "-I", "{}", "ssh"]).args(self.ssh_opts(cp)).arg("{}").arg(&self.remote);
        let (t, out) = timed_with_input(&mut cmd, &self.destinations);
        let text = String::from_utf8_lossy(&out.stdout);
        let n = self.fleet.nodes.len();
        let (heads, ends) = (count_lines(&text, "drover-probe 1"), count_lines(&text, "end"));
        assert!(
            out.status.success() && heads == n && ends == n,
            "(a) ssh pass: {heads}/{n} probes started and {ends}/{n} ended, {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        t
    }

    /// Closes the masters in `cp` (`ssh -O exit` per node).
    fn close_masters(&self, cp: &Path) {
        let mut cmd = Command::new("xargs");
        cmd.args(["-P", &PARALLEL.to_string(), "-I", "{}", "ssh"]).args(self.ssh_opts(cp)).args(["-O", "exit", "{}"]);
        let _ = timed_with_input(&mut cmd, &self.destinations);
    }
}

/// Runs `cmd` with `input` on stdin; its time and output.
fn timed_with_input(cmd: &mut Command, input: &str) -> (Duration, Output) {
    use std::io::Write;
    let t0 = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {:?}: {e}", cmd.get_program()));
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (t0.elapsed(), out)
}

fn timed(cmd: &mut Command) -> (Duration, Output) {
    let t0 = Instant::now();
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("run {:?}: {e}", cmd.get_program()));
    (t0.elapsed(), out)
}

fn count_lines(text: &str, line: &str) -> usize {
    text.lines().filter(|l| *l == line).count()
}

/// One word for a POSIX shell.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

// ---------------------------------------------------------------------------
// drover's side: exactly `drover::real::probe::probe_all` over one `Pool`.

struct Drover<'f> {
    fleet: &'f TestFleet,
    dir: PathBuf,
    rt: tokio::runtime::Runtime,
    targets: Vec<(String, u16)>,
    warm: Option<drover::real::ssh::Pool>,
}

impl<'f> Drover<'f> {
    fn new(fleet: &'f TestFleet, dir: &Path) -> Drover<'f> {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        let targets = fleet.nodes.iter().map(|n| (n.ssh.ip().to_string(), n.ssh.port())).collect();
        Drover { fleet, dir: dir.to_path_buf(), rt, targets, warm: None }
    }

    fn pool(&self, name: &str) -> drover::real::ssh::Pool {
        drover::real::ssh::Pool::new(drover::real::ssh::SshConfig {
            user: NODE_USER.into(),
            identity: Some(self.fleet.key.clone()),
            known_hosts: self.fleet.known_hosts.clone(),
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(30),
            max_concurrency: PARALLEL,
            control_dir: self.dir.join(name),
        })
        .expect("drover ssh pool")
    }

    /// One `probe_all`; its time, and the sessions and connections it opened.
    fn pass(&self, pool: &drover::real::ssh::Pool) -> (Duration, u64, u64) {
        let (s0, c0) = (pool.sessions(), pool.connects());
        let t0 = Instant::now();
        let results = self.rt.block_on(drover::real::probe::probe_all(pool, &self.targets));
        let t = t0.elapsed();
        assert_eq!(results.len(), self.targets.len());
        for (node, r) in self.fleet.nodes.iter().zip(results) {
            let p = r.unwrap_or_else(|e| panic!("drover probe of {}: {e}", node.name));
            assert_eq!(p.boot_id, node.boot_id(), "boot id of {}", node.name);
        }
        (t, pool.sessions() - s0, pool.connects() - c0)
    }

    /// A pass over a new pool (every master opened), closed afterwards.
    fn cold_pass(&self, name: &str) -> (Duration, u64, u64) {
        let pool = self.pool(name);
        let r = self.pass(&pool);
        self.rt.block_on(pool.shutdown());
        r
    }

    /// Opens the masters of the warm pool (an untimed first pass).
    fn warm_up(&mut self) {
        let pool = self.pool("dw");
        self.pass(&pool);
        self.warm = Some(pool);
    }

    fn warm_pass(&self) -> (Duration, u64, u64) {
        self.pass(self.warm.as_ref().expect("warm_up first"))
    }

    fn shutdown(&mut self) {
        if let Some(p) = self.warm.take() {
            self.rt.block_on(p.shutdown());
        }
    }
}

impl Drop for Drover<'_> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

// ---------------------------------------------------------------------------
// Ansible (Debian's package): ControlPersist, pipelining, forks 32.

struct Ansible {
    ansible: PathBuf,
    playbook: PathBuf,
}

struct AnsibleRun<'b> {
    bench: &'b Bench<'b>,
    bin: &'b Ansible,
    dir: PathBuf,
    cp: PathBuf,
    env: Vec<(String, String)>,
    nodes: usize,
}

impl Ansible {
    fn find() -> Option<Ansible> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let dirs: Vec<PathBuf> = std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]).collect();
        let find = |name: &str| dirs.iter().map(|d| d.join(name)).find(|p| p.is_file());
        Some(Ansible { ansible: find("ansible")?, playbook: find("ansible-playbook")? })
    }

    /// Inventory, ansible.cfg, playbook and ssh/sftp/scp wrappers that count
    /// invocations (each one SSH session), all under the bench directory;
    /// HOME points there too, so nothing in ~ is read or written.
    fn setup<'b>(&'b self, fleet: &TestFleet, bench: &'b Bench<'b>) -> AnsibleRun<'b> {
        let dir = bench.dir.join("ans");
        let cp = bench.control_dir("c");
        for d in ["home", "tmp", "bin", "count"] {
            fs::create_dir_all(dir.join(d)).unwrap();
        }
        for tool in ["ssh", "sftp", "scp"] {
            let w = dir.join("bin").join(tool);
            fs::write(
                &w,
                format!(
                    "#!/bin/sh\n# counts SSH sessions opened by Ansible\nprintf x >>'{}'\nexec /usr/bin/{tool} \"$@\"\n",
                    dir.join("count").join(tool).display()
                ),
            )
            .unwrap();
            fs::set_permissions(&w, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let common = [
            "-F /dev/null".to_string(),
            "-o IdentitiesOnly=yes".into(),
            format!("-o UserKnownHostsFile={}", fleet.known_hosts.display()),
            "-o GlobalKnownHostsFile=/dev/null".into(),
            "-o StrictHostKeyChecking=yes".into(),
            "-o ControlMaster=auto".into(),
            "-o ControlPersist=60s".into(),
            format!("-o ControlPath={}/%C", cp.display()),
        ]
        .join(" ");
        let mut inv = String::from("[fleet]\n");
        for n in &fleet.nodes {
            let _ = writeln!(inv, "{} ansible_host={} ansible_port={}", n.name, n.ssh.ip(), n.ssh.port());
        }
        let _ = write!(
            inv,
            "\n[fleet:vars]\nansible_user={NODE_USER}\nansible_ssh_private_key_file={key}\n\
             ansible_ssh_common_args='{common}'\nansible_ssh_pipelining=true\n\
             ansible_python_interpreter=/usr/bin/python3\n",
            key = fleet.key.display(),
        );
        fs::write(dir.join("inventory.ini"), inv).unwrap();
        let bin = dir.join("bin");
        let cfg = format!(
            "[defaults]\ninventory = {inv}\nforks = {PARALLEL}\nhost_key_checking = True\n\
             retry_files_enabled = False\nlocal_tmp = {tmp}\nhome = {home}\n\
             interpreter_python = /usr/bin/python3\nnocows = 1\n\n\
             [ssh_connection]\npipelining = True\ncontrol_path_dir = {cp}\n\
             ssh_executable = {bin}/ssh\nsftp_executable = {bin}/sftp\nscp_executable = {bin}/scp\n",
            inv = dir.join("inventory.ini").display(),
            tmp = dir.join("tmp").display(),
            home = dir.join("home").display(),
            cp = cp.display(),
            bin = bin.display(),
        );
        fs::write(dir.join("ansible.cfg"), cfg).unwrap();
        fs::write(dir.join("probe.sh"), PROBE).unwrap();
        fs::write(dir.join("observe.yml"), PLAYBOOK).unwrap();
        let s = |p: &Path| p.display().to_string();
        let env = vec![
            ("HOME".to_string(), s(&dir.join("home"))),
            ("ANSIBLE_CONFIG".into(), s(&dir.join("ansible.cfg"))),
            ("ANSIBLE_HOME".into(), s(&dir.join("home"))),
            ("ANSIBLE_LOCAL_TEMP".into(), s(&dir.join("tmp"))),
            ("ANSIBLE_SSH_CONTROL_PATH_DIR".into(), s(&cp)),
            ("ANSIBLE_NOCOLOR".into(), "1".into()),
            ("ANSIBLE_FORKS".into(), PARALLEL.to_string()),
            ("ANSIBLE_PIPELINING".into(), "True".into()),
            ("ANSIBLE_HOST_KEY_CHECKING".into(), "True".into()),
            ("ANSIBLE_RETRY_FILES_ENABLED".into(), "False".into()),
        ];
        AnsibleRun { bench, bin: self, dir, cp, env, nodes: fleet.nodes.len() }
    }
}

/// (c): what an Ansible user writes to gather the same state: facts, then
/// one task per item, each registered.
const PLAYBOOK: &str = r#"# What an Ansible user writes to gather what drover's probe reports.
- hosts: fleet
  gather_facts: true
  vars:
    # Paths are under NODE_ROOT on the test fleet (empty on a real node).
    root: "{{ ansible_env.NODE_ROOT | default('') }}"
  tasks:
    - name: boot id
      command: cat {{ root }}/proc/sys/kernel/random/boot_id
      register: boot_id
      changed_when: false
    - name: running kernel
      command: cat {{ root }}/proc/sys/kernel/osrelease
      register: kernel
      changed_when: false
    - name: installed packages
      shell: cd {{ root }}/var/db/pkg && ls -d */*
      register: packages
      changed_when: false
    - name: fetched binary packages
      shell: cd {{ root }}/var/cache/binpkgs 2>/dev/null && find . -name '*.tbz2' -o -name '*.gpkg.tar' || true
      register: binpkgs
      changed_when: false
    - name: PHP trees
      shell: ls -1 {{ root }}/opt/php
      register: php_trees
      changed_when: false
    - name: active PHP
      command: readlink -f {{ root }}/opt/php/current
      register: php_active
      changed_when: false
    - name: releases
      shell: ls -1 {{ root }}/srv/app/releases
      register: releases
      changed_when: false
    - name: active release
      command: readlink -f {{ root }}/srv/app/current
      register: release_active
      changed_when: false
"#;

impl AnsibleRun<'_> {
    fn sessions(&self) -> f64 {
        ["ssh", "sftp", "scp"]
            .iter()
            .map(|t| fs::metadata(self.dir.join("count").join(t)).map(|m| m.len()).unwrap_or(0))
            .sum::<u64>() as f64
    }

    /// Runs an Ansible command; its time and the SSH sessions it opened.
    fn run(&self, what: &str, cmd: &mut Command) -> (Duration, f64) {
        cmd.current_dir(&self.dir).envs(self.env.iter().map(|(k, v)| (k, v)));
        let s0 = self.sessions();
        let (t, out) = timed(cmd);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{what} failed ({}):\n{}\n{}",
            out.status,
            tail(&text, 3000),
            String::from_utf8_lossy(&out.stderr)
        );
        fs::write(self.dir.join(format!("{}.log", what.replace(' ', "-"))), text.as_bytes()).unwrap();
        (t, self.sessions() - s0)
    }

    /// (b): `ansible fleet -m script -a probe.sh` (the same probe, run by sh).
    fn adhoc_script(&self) -> (Duration, f64) {
        let mut cmd = Command::new(&self.bin.ansible);
        cmd.args(["fleet", "-f", &PARALLEL.to_string(), "-m", "script", "-a"])
            .arg(format!("{} executable=/bin/sh", self.dir.join("probe.sh").display()));
        let (t, s) = self.run("ansible -m script", &mut cmd);
        let log = fs::read_to_string(self.dir.join("ansible--m-script.log")).unwrap_or_default();
        let ok = log.matches(" | CHANGED").count() + log.matches(" | SUCCESS").count();
        // stdout_lines of each host ends with the probe's `end` line.
        let ends = log.matches(r#""end""#).count();
        assert_eq!(ok, self.nodes, "(b): {ok}/{} hosts succeeded", self.nodes);
        assert_eq!(ends, self.nodes, "(b): {ends}/{} probe answers end with `end`", self.nodes);
        (t, s)
    }

    /// (c): `ansible-playbook observe.yml`.
    fn playbook(&self) -> (Duration, f64) {
        let mut cmd = Command::new(&self.bin.playbook);
        cmd.args(["-f", &PARALLEL.to_string()]).arg(self.dir.join("observe.yml"));
        let (t, s) = self.run("ansible-playbook", &mut cmd);
        let log = fs::read_to_string(self.dir.join("ansible-playbook.log")).unwrap_or_default();
        let recap = log.lines().filter(|l| l.contains(" ok=9 ") && l.contains(" failed=0 ")).count();
        assert_eq!(recap, self.nodes, "(c): {recap}/{} hosts ran all 9 tasks (facts + 8 items)", self.nodes);
        (t, s)
    }

    fn close_masters(&self) {
        self.bench.close_masters(&self.cp);
    }
}

fn tail(s: &str, max: usize) -> &str {
    let mut i = s.len().saturating_sub(max);
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}
