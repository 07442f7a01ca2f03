//! What a test fleet consists of, where everything listens, and the drover
//! spec that describes it.
//!
//! Addresses (slot n = the fleet's second octet, site i = 1.., farm f = 1..,
//! member m = 1..9):
//!
//! | what | address |
//! |---|---|
//! | site LB: frontend :80, farm listeners :8100+f, admin TCP :9999, LB sshd :22 | 127.n.i.1 |
//! | memcached of farm f (:11211) | 127.n.i.(10f) |
//! | node m of farm f: sshd :22, web server :8080 | 127.n.i.(10f+m) |
//! | rsync daemon (:873, modules `php` and `releases`) | 127.n.250.1 |
//! | binhost (:8000, `/<profile>/`: real binary packages, see portage.rs) | 127.n.250.2 |

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;

/// The login user of every test node and LB host (POSIX shell, password `*`).
pub const NODE_USER: &str = "drovertest";
pub const SSH_PORT: u16 = 22;
pub const NODE_HTTP_PORT: u16 = 8080;
pub const LB_HTTP_PORT: u16 = 80;
pub const LB_ADMIN_PORT: u16 = 9999;
pub const MEMCACHED_PORT: u16 = 11211;
pub const RSYNC_PORT: u16 = 873;
pub const BINHOST_PORT: u16 = 8000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admin {
    /// `lb: { host, socket }`: a unix socket on the LB host, reached over SSH.
    UnixOverSsh,
    /// `lb: { admin_tcp }`: the runtime API on a TCP address.
    Tcp,
}

#[derive(Clone, Debug)]
pub struct SiteTopo {
    pub name: String,
    pub production: bool,
    pub admin: Admin,
    pub farms: Vec<FarmTopo>,
}

#[derive(Clone, Debug)]
pub struct FarmTopo {
    pub name: String,
    /// Profile of each node, by member index (1 = first).
    pub profiles: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Topology {
    pub sites: Vec<SiteTopo>,
}

/// Hardware profiles of the test fleet: (name, init system). Same capacity,
/// so the rendered LB weights are all equal.
pub const PROFILES: [(&str, &str); 2] = [("r640", "openrc"), ("r650", "systemd")];

impl Topology {
    /// The fleet: a preproduction site and 2 production sites x 2
    /// farms x 3 nodes. Preproduction has 2 farms (of one node per profile)
    /// because a farm-level switch never takes a site's last serving farm
    /// out: with a single farm, preproduction could never switch a release.
    pub fn standard() -> Topology {
        let prod = |name: &str, admin| SiteTopo {
            name: name.into(),
            production: true,
            admin,
            farms: (1..=2)
                .map(|f| FarmTopo {
                    name: format!("{name}-f{f}"),
                    profiles: vec!["r640".into(), "r640".into(), "r650".into()],
                })
                .collect(),
        };
        Topology {
            sites: vec![
                SiteTopo {
                    name: "preprod".into(),
                    production: false,
                    admin: Admin::UnixOverSsh,
                    farms: (1..=2)
                        .map(|f| FarmTopo { name: format!("pp-f{f}"), profiles: vec!["r640".into(), "r650".into()] })
                        .collect(),
                },
                prod("par1", Admin::UnixOverSsh),
                prod("fra1", Admin::Tcp),
            ],
        }
    }

    /// One production site of `farms` x `nodes` (the preproduction gate waived).
    pub fn single_site(name: &str, farms: usize, nodes: usize, admin: Admin) -> Topology {
        Topology {
            sites: vec![SiteTopo {
                name: name.into(),
                production: true,
                admin,
                farms: (1..=farms)
                    .map(|f| FarmTopo { name: format!("f{f}"), profiles: vec!["r640".into(); nodes] })
                    .collect(),
            }],
        }
    }

    pub fn has_preproduction(&self) -> bool {
        self.sites.iter().any(|s| !s.production)
    }
}

/// The address plan of one slot.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub slot: u8,
}

impl Plan {
    fn ip(&self, c: usize, d: usize) -> Ipv4Addr {
        let c = u8::try_from(c).expect("address plan: octet out of range");
        let d = u8::try_from(d).expect("address plan: octet out of range");
        Ipv4Addr::new(127, self.slot, c, d)
    }
    /// `site`, `farm` and `member` are 0-based here.
    pub fn lb_ip(&self, site: usize) -> Ipv4Addr {
        self.ip(site + 1, 1)
    }
    pub fn lb_frontend(&self, site: usize) -> SocketAddr {
        sa(self.lb_ip(site), LB_HTTP_PORT)
    }
    pub fn farm_listen(&self, site: usize, farm: usize) -> SocketAddr {
        sa(self.lb_ip(site), 8101 + farm as u16)
    }
    pub fn lb_admin_tcp(&self, site: usize) -> SocketAddr {
        sa(self.lb_ip(site), LB_ADMIN_PORT)
    }
    pub fn memcached(&self, site: usize, farm: usize) -> SocketAddr {
        sa(self.ip(site + 1, 10 * (farm + 1)), MEMCACHED_PORT)
    }
    pub fn node_ip(&self, site: usize, farm: usize, member: usize) -> Ipv4Addr {
        assert!(member < 9 && farm < 24, "address plan: at most 9 nodes per farm, 24 farms per site");
        self.ip(site + 1, 10 * (farm + 1) + member + 1)
    }
    pub fn rsync(&self) -> SocketAddr {
        sa(self.ip(250, 1), RSYNC_PORT)
    }
    pub fn binhost(&self) -> SocketAddr {
        sa(self.ip(250, 2), BINHOST_PORT)
    }
}

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(ip, port))
}

/// What farms run (the spec's fleet defaults): package set names, PHP, release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub packages: Vec<String>,
    pub php: String,
    pub release: String,
}

impl Target {
    /// What a fresh test fleet runs.
    pub fn initial() -> Target {
        Target {
            packages: vec!["base".into(), "web-2026.10".into(), "kernel-6.6.58".into()],
            php: "8.2.27".into(),
            release: "2026.11.1".into(),
        }
    }
    /// One step ahead of `initial` in everything: a kernel (reboot), an
    /// openssl (restart apache2 and php-fpm), a PHP and a release upgrade.
    pub fn upgraded() -> Target {
        Target {
            packages: vec!["base".into(), "web-2026.11".into(), "kernel-6.6.62".into()],
            php: "8.3.14".into(),
            release: "2026.11.2".into(),
        }
    }
    /// The exact atoms of this target, sorted (what `qlist -ICv` prints).
    pub fn atoms(&self) -> Vec<String> {
        let mut by_key = std::collections::BTreeMap::new();
        for set in &self.packages {
            let (_, atoms) = PACKAGE_SETS
                .iter()
                .find(|(name, _)| name == set)
                .unwrap_or_else(|| panic!("unknown package set {set}"));
            for a in *atoms {
                let key = drover::spec::values::parse_atom(a).unwrap().key();
                by_key.insert(key, a.to_string());
            }
        }
        let mut v: Vec<String> = by_key.into_values().collect();
        v.sort();
        v
    }
}

/// Package sets of the test fleet's spec.
pub const PACKAGE_SETS: &[(&str, &[&str])] = &[
    ("base", &["sys-apps/man-db-2.12.1", "app-arch/tar-1.35"]),
    ("base-2026.11", &["sys-apps/man-db-2.13.0", "app-arch/tar-1.35"]),
    ("web-2026.10", &["www-servers/apache-2.4.62", "dev-libs/openssl-3.0.15"]),
    ("web-2026.11", &["www-servers/apache-2.4.62", "dev-libs/openssl-3.0.15-r1"]),
    ("kernel-6.6.58", &["sys-kernel/gentoo-kernel-bin-6.6.58"]),
    ("kernel-6.6.62", &["sys-kernel/gentoo-kernel-bin-6.6.62"]),
];

/// PHP versions and releases the rsync source holds from the start.
pub const PHP_VERSIONS: &[&str] = &["8.2.27", "8.3.14"];
pub const RELEASES: &[&str] = &["2026.11.1", "2026.11.2"];

/// A profile's binhost: a path of its own on the fleet's binhost (Portage
/// caches a binhost's index by host and path, not port).
pub fn binhost(plan: Plan, profile: &str) -> String {
    format!("http://{}/{profile}", plan.binhost())
}

/// Paths and URLs the spec refers to.
pub struct SpecPaths<'a> {
    pub known_hosts: &'a Path,
    pub identity: &'a Path,
    pub php_source: &'a str,
    pub release_source: &'a str,
    /// Per site: the admin socket path and the server-state file.
    pub lb_files: &'a [(String, String)],
}

/// The drover spec of `topo` on `plan`, with `target` as the fleet defaults.
pub fn spec_yaml(topo: &Topology, plan: Plan, paths: &SpecPaths, target: &Target) -> String {
    let mut y = String::new();
    let w = &mut y;
    let list = |v: &[String]| v.join(", ");
    let _ = writeln!(
        w,
        "# A drover test fleet on 127.{slot}.0.0/16 (tests/it/fleet), generated.\n\
         fleet:\n\
         \x20 defaults:\n\
         \x20   packages: [{packages}]\n\
         \x20   php: \"{php}\"\n\
         \x20   release: \"{release}\"\n\
         \x20 policy:\n\
         \x20   disruptive:\n\
         \x20     - {{ match: \"sys-kernel/*\", reboot: true }}\n\
         \x20     - {{ match: \"dev-libs/openssl\", restart: [apache2, php-fpm] }}\n\
         \x20     - {{ match: \"www-servers/apache\", restart: [apache2] }}\n\
         \x20   max_unavailable: 1\n\
         \x20   max_farms_down: 1\n\
         \x20   site_capacity_floor: 0.5\n\
         \x20   max_farm_load: 0.9\n\
         \x20   drain_timeout: 10s\n\
         \x20   unreachable_timeout: 5s\n\
         \x20   health: {{ path: /health.php, expect_status: 200, expect_release_marker: true, timeout: 2s, retries: 3 }}\n\
         \x20   preproduction: {{ soak: 1s, waive_gate: {waive} }}\n\
         \x20   failure_budget: 2\n\
         \x20   releases_kept: 3\n\
         \x20 ssh:\n\
         \x20   user: {NODE_USER}\n\
         \x20   port: {SSH_PORT}\n\
         \x20   known_hosts: {kh}\n\
         \x20   identity: {id}\n\
         \x20 sources:\n\
         \x20   php: {php_src}\n\
         \x20   releases: {rel_src}\n\
         \x20 http_port: {NODE_HTTP_PORT}\n",
        slot = plan.slot,
        packages = list(&target.packages),
        php = target.php,
        release = target.release,
        waive = !topo.has_preproduction(),
        kh = paths.known_hosts.display(),
        id = paths.identity.display(),
        php_src = paths.php_source,
        rel_src = paths.release_source,
    );
    let _ = writeln!(w, "profiles:");
    for (name, init) in PROFILES {
        let _ =
            writeln!(w, "  - {{ name: {name}, binhost: \"{}\", init: {init}, capacity: 400 }}", binhost(plan, name));
    }
    let _ = writeln!(w, "\npackage_sets:");
    for (name, atoms) in PACKAGE_SETS {
        let _ = writeln!(w, "  - {{ name: {name}, atoms: [{}] }}", atoms.join(", "));
    }
    let _ = writeln!(w, "\nsites:");
    for (i, s) in topo.sites.iter().enumerate() {
        let (socket, state) = &paths.lb_files[i];
        let api = match s.admin {
            Admin::UnixOverSsh => format!("host: {}, socket: {socket}", plan.lb_ip(i)),
            Admin::Tcp => format!("admin_tcp: \"{}\"", plan.lb_admin_tcp(i)),
        };
        let _ = writeln!(
            w,
            "  - name: {}\n    environment: {}\n    lb: {{ {api}, bind: \"{}\", state_file: {state} }}",
            s.name,
            if s.production { "production" } else { "preproduction" },
            plan.lb_frontend(i),
        );
    }
    let _ = writeln!(w, "\nfarms:");
    for (i, s) in topo.sites.iter().enumerate() {
        for (f, farm) in s.farms.iter().enumerate() {
            let _ = writeln!(
                w,
                "  - name: {}\n    site: {}\n    memcached: [\"{}\"]\n    lb: {{ listen: \"{}\" }}\n    nodes:",
                farm.name,
                s.name,
                plan.memcached(i, f),
                plan.farm_listen(i, f),
            );
            for (m, profile) in farm.profiles.iter().enumerate() {
                let _ = writeln!(
                    w,
                    "      - {{ name: {}, address: {}, member: {}, profile: {profile} }}",
                    node_name(farm, m),
                    plan.node_ip(i, f, m),
                    m + 1
                );
            }
        }
    }
    y
}

/// Node names: `<farm>-n<member>`.
pub fn node_name(farm: &FarmTopo, member0: usize) -> String {
    format!("{}-n{}", farm.name, member0 + 1)
}
