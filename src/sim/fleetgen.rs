//! Generated fleets for tests, property tests and benchmarks: a spec text
//! (YAML, so the spec path is exercised too) from a few numbers.

use std::fmt::Write as _;

/// The shape and starting point of a generated fleet.
#[derive(Clone, Debug)]
pub struct Shape {
    pub prod_sites: u32,
    pub farms_per_site: u32,
    pub nodes_per_farm: u32,
    pub profiles: u32,
    pub max_unavailable: u32,
    pub max_farms_down: u32,
    pub capacity_floor: f64,
    pub soak: String,
    pub failure_budget: u32,
    /// Which changes the simulation starts behind on.
    pub change: Change,
    pub sessions_per_site: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    pub online: bool,
    pub disruptive_restart: bool,
    pub disruptive_reboot: bool,
    pub php: bool,
    pub release: bool,
}

impl Change {
    pub const NONE: Change =
        Change { online: false, disruptive_restart: false, disruptive_reboot: false, php: false, release: false };
    pub const ALL: Change =
        Change { online: true, disruptive_restart: true, disruptive_reboot: true, php: true, release: true };
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            prod_sites: 2,
            farms_per_site: 3,
            nodes_per_farm: 4,
            profiles: 2,
            max_unavailable: 1,
            max_farms_down: 1,
            capacity_floor: 0.5,
            soak: "10m".into(),
            failure_budget: 2,
            change: Change::ALL,
            sessions_per_site: 400,
        }
    }
}

/// The spec text of a generated fleet (one file). Preproduction has two
/// farms holding every profile.
pub fn spec_text(s: &Shape) -> String {
    let mut y = String::new();
    let c = s.change;
    let _ = writeln!(
        y,
        r#"fleet:
  defaults:
    packages: [base-new, web-new, kernel-new]
    php: "8.3.14"
    release: "2026.11.2"
  policy:
    disruptive:
      - {{ match: "sys-kernel/*", reboot: true }}
      - {{ match: "dev-libs/openssl", restart: [apache2, php-fpm] }}
    max_unavailable: {mu}
    max_farms_down: {mfd}
    site_capacity_floor: {floor}
    drain_timeout: 2m
    preproduction: {{ soak: {soak} }}
    failure_budget: {budget}
  sources:
    php: rsync://deploy.example.net/php
    releases: rsync://deploy.example.net/app
package_sets:
  - {{ name: base-old, atoms: [app-arch/tar-1.34] }}
  - {{ name: base-new, atoms: [app-arch/tar-{tar}] }}
  - {{ name: web-old, atoms: [dev-libs/openssl-3.0.15] }}
  - {{ name: web-new, atoms: [dev-libs/openssl-{ssl}] }}
  - {{ name: kernel-old, atoms: [sys-kernel/gentoo-kernel-bin-6.6.58] }}
  - {{ name: kernel-new, atoms: [sys-kernel/gentoo-kernel-bin-{kernel}] }}
simulation:
  initial:
    packages: [base-old, web-old, kernel-old]
    php: "{php}"
    release: "{release}"
  sessions_per_site: {sessions}
profiles:"#,
        mu = s.max_unavailable,
        mfd = s.max_farms_down,
        floor = s.capacity_floor,
        soak = s.soak,
        budget = s.failure_budget,
        tar = if c.online { "1.35" } else { "1.34" },
        ssl = if c.disruptive_restart { "3.0.15-r1" } else { "3.0.15" },
        kernel = if c.disruptive_reboot { "6.6.62" } else { "6.6.58" },
        php = if c.php { "8.2.27" } else { "8.3.14" },
        release = if c.release { "2026.11.1" } else { "2026.11.2" },
        sessions = s.sessions_per_site,
    );
    for p in 0..s.profiles.max(1) {
        let _ = writeln!(
            y,
            "  - {{ name: p{p}, binhost: \"https://binhost.example.net/p{p}\", init: openrc, capacity: {} }}",
            400 + 100 * p
        );
    }
    let _ = writeln!(y, "sites:");
    let _ = writeln!(
        y,
        "  - {{ name: pre, environment: preproduction, capacity_floor: 0.0, lb: {{ admin_tcp: \"127.0.0.1:9000\" }} }}"
    );
    for site in 0..s.prod_sites {
        let _ = writeln!(
            y,
            "  - {{ name: s{site}, environment: production, lb: {{ admin_tcp: \"127.0.0.1:{}\" }} }}",
            9001 + site
        );
    }
    let _ = writeln!(y, "farms:");
    for f in 0..2 {
        let _ = writeln!(y, "  - name: pre-f{f}\n    site: pre\n    nodes:");
        // At least two nodes, so that one may be out (max_unavailable 1).
        for i in 0..s.profiles.max(s.max_unavailable + 1) {
            let p = i % s.profiles.max(1);
            let _ = writeln!(
                y,
                "      - {{ name: pre-f{f}-n{i}, address: 10.250.{f}.{}, member: {}, profile: p{p} }}",
                i + 10,
                i + 1
            );
        }
    }
    for site in 0..s.prod_sites {
        for f in 0..s.farms_per_site {
            let _ = writeln!(
                y,
                "  - name: s{site}-f{f}\n    site: s{site}\n    node_pattern: {{ count: {n}, name: \"s{site}-f{f}-n{{member:03}}\", address: \"s{site}f{f}n{{member}}.example.net\", profile: p{p} }}",
                n = s.nodes_per_farm,
                p = (site + f) % s.profiles.max(1),
            );
        }
    }
    y
}

/// Parses and validates a generated spec.
pub fn fleet(s: &Shape) -> Result<crate::model::Fleet, String> {
    let files = [crate::spec::SourceFile { path: "generated.yaml".into(), text: spec_text(s) }];
    crate::spec::validate::check(&files).map_err(|d| crate::spec::diag::render(&d, &files))
}
