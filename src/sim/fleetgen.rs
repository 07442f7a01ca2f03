//! Generated fleets for tests, property tests and benchmarks: a spec text
//! (YAML, so the spec path is exercised too) from a few numbers.

use std::collections::BTreeMap;
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

/// Which hooks a generated fleet declares (`with_hooks`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hooks {
    /// The target release migrates before its switches (`hooks.expand`).
    pub expand: bool,
    /// ... and after (`hooks.contract`).
    pub contract: bool,
    /// Switched farms warm up before they return (`policy.warmup`).
    pub warmup: bool,
    /// Every profile snapshots before disruptive upgrades.
    pub snapshot: bool,
}

/// `spec_text`'s spec with `hooks` declared for its target release.
pub fn with_hooks(text: &str, hooks: Hooks) -> String {
    let mut y = text.to_string();
    if hooks.warmup {
        y = y.replacen(
            "    failure_budget:",
            "    warmup: { paths: [\"/\", \"/catalog\"], concurrency: 2 }\n    failure_budget:",
            1,
        );
    }
    if hooks.snapshot {
        y = y.replace("init: openrc, capacity:", "init: openrc, snapshot: { method: btrfs, keep: 2 }, capacity:");
    }
    if hooks.expand || hooks.contract {
        let mut r = String::from("releases:\n  - id: \"2026.11.2\"\n    hooks: {");
        let mut parts = Vec::new();
        if hooks.expand {
            parts.push(" expand: migrate");
        }
        if hooks.contract {
            parts.push(" contract: migrate");
        }
        r.push_str(&parts.join(","));
        r.push_str(" }\n");
        y.push_str(&r);
    }
    y
}

/// Parses and validates a generated spec.
pub fn fleet(s: &Shape) -> Result<crate::model::Fleet, String> {
    let files = [crate::spec::SourceFile { path: "generated.yaml".into(), text: spec_text(s) }];
    crate::spec::validate::check(&files).map_err(|d| crate::spec::diag::render(&d, &files))
}

/// One spec change for a generated fleet, drawn from `seed`: the changes
/// asked for, each on objects the seed picks. A change that no object
/// allows while the spec stays valid (a farm removed from a site with two
/// farms, a node removed from a farm at its `max_unavailable` floor) is
/// skipped. Deterministic: same base, same variation, same spec.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Variation {
    pub seed: u64,
    /// Farms reordered within their site (their order in the spec file).
    pub reorder_farms: bool,
    /// Nodes reordered within their farm: their order in the file and
    /// their member indices (waves go by member index).
    pub reorder_nodes: bool,
    /// One farm gets a new name (same machines).
    pub rename_farm: bool,
    /// One node gets a new name (same machine).
    pub rename_node: bool,
    /// A new machine joins one farm (highest member index; a farm whose
    /// growth keeps its site's capacity floor feasible).
    pub add_node: bool,
    /// One node leaves its farm (the farm keeps at least `max_unavailable + 1`).
    pub remove_node: bool,
    /// One farm leaves a site that keeps at least two farms (a single-farm
    /// site could never switch).
    pub remove_farm: bool,
}

/// A node as an explicit spec entry.
#[derive(Clone, Debug)]
pub(super) struct LaidNode {
    pub(super) name: String,
    pub(super) address: String,
    pub(super) ssh_port: u16,
    pub(super) http_port: u16,
    pub(super) member: u32,
    pub(super) profile: String,
}

/// A farm as an explicit spec entry.
#[derive(Clone, Debug)]
pub(super) struct LaidFarm {
    pub(super) name: String,
    pub(super) site: String,
    pub(super) nodes: Vec<LaidNode>,
}

/// The farms of `fleet` as explicit spec entries, in the file's order.
fn layout(fleet: &crate::model::Fleet) -> Vec<LaidFarm> {
    fleet
        .farms
        .iter()
        .map(|f| LaidFarm {
            name: f.name.clone(),
            site: fleet.sites[f.site as usize].name.clone(),
            nodes: f
                .nodes
                .iter()
                .map(|&n| {
                    let n = &fleet.nodes[n as usize];
                    LaidNode {
                        name: n.name.clone(),
                        address: n.address.clone(),
                        ssh_port: n.ssh_port,
                        http_port: n.http_port,
                        member: n.member,
                        profile: fleet.profiles[n.profile as usize].name.clone(),
                    }
                })
                .collect(),
        })
        .collect()
}

fn render(header: &str, farms: &[LaidFarm]) -> String {
    let mut y = header.to_string();
    for f in farms {
        let _ = writeln!(y, "  - name: {}\n    site: {}\n    nodes:", f.name, f.site);
        for n in &f.nodes {
            let _ = writeln!(
                y,
                "      - {{ name: {}, address: \"{}\", ssh_port: {}, http_port: {}, member: {}, profile: {} }}",
                n.name, n.address, n.ssh_port, n.http_port, n.member, n.profile
            );
        }
    }
    y
}

fn check_text(text: String) -> Result<crate::model::Fleet, String> {
    let files = [crate::spec::SourceFile { path: "generated.yaml".into(), text }];
    crate::spec::validate::check(&files).map_err(|d| crate::spec::diag::render(&d, &files))
}

/// Fisher-Yates.
fn shuffle<T>(items: &mut [T], rng: &mut super::rng::Rng) {
    for i in (1..items.len()).rev() {
        let j = rng.range(0, i as u64) as usize;
        items.swap(i, j);
    }
}

/// A name not in `taken`: `base-{tag}{k}` for the least k from 1.
fn fresh(base: &str, tag: &str, taken: &std::collections::BTreeSet<String>) -> String {
    (1u32..).map(|k| format!("{base}-{tag}{k}")).find(|n| !taken.contains(n)).unwrap_or_default()
}

/// `base` with its farms (as explicit spec entries, in the file's order)
/// edited by `f`, validated: for tests that change one named object.
#[cfg(test)]
pub(super) fn edit(
    shape: &Shape,
    base: &crate::model::Fleet,
    f: impl FnOnce(&mut Vec<LaidFarm>),
) -> Result<crate::model::Fleet, String> {
    let text = spec_text(shape);
    let cut = text.find("\nfarms:\n").ok_or("the generated spec has no farms section")? + "\nfarms:\n".len();
    let mut farms = layout(base);
    f(&mut farms);
    check_text(render(&text[..cut], &farms))
}

/// `base` (a fleet of `shape`, or an earlier variation of one) under the
/// change `v`, as a spec text validated like any other: the result is a
/// real spec. Objects kept keep their name and address.
pub fn vary(shape: &Shape, base: &crate::model::Fleet, v: &Variation) -> Result<crate::model::Fleet, String> {
    let text = spec_text(shape);
    let cut = text.find("\nfarms:\n").ok_or("the generated spec has no farms section")? + "\nfarms:\n".len();
    let header = &text[..cut];
    let mut rng = super::rng::Rng::new(v.seed);
    let mut farms = layout(base);
    // The first candidate (in the seed's order) that keeps the spec valid.
    let first_valid = |mut candidates: Vec<Vec<LaidFarm>>, rng: &mut super::rng::Rng| {
        shuffle(&mut candidates, rng);
        candidates.into_iter().find(|c| check_text(render(header, c)).is_ok())
    };
    if v.remove_farm {
        let mut per_site: BTreeMap<&str, usize> = BTreeMap::new();
        for f in &farms {
            *per_site.entry(f.site.as_str()).or_default() += 1;
        }
        let candidates = (0..farms.len())
            .filter(|&i| per_site[farms[i].site.as_str()] > 2)
            .map(|i| {
                let mut c = farms.clone();
                c.remove(i);
                c
            })
            .collect();
        if let Some(c) = first_valid(candidates, &mut rng) {
            farms = c;
        }
    }
    if v.remove_node {
        let mut candidates = Vec::new();
        for (i, f) in farms.iter().enumerate() {
            for j in 0..f.nodes.len() {
                let mut c = farms.clone();
                c[i].nodes.remove(j);
                candidates.push(c);
            }
        }
        if let Some(c) = first_valid(candidates, &mut rng) {
            farms = c;
        }
    }
    let node_names = |farms: &[LaidFarm]| farms.iter().flat_map(|f| f.nodes.iter().map(|n| n.name.clone())).collect();
    let farm_names = |farms: &[LaidFarm]| farms.iter().map(|f| f.name.clone()).collect();
    if v.add_node {
        let taken: std::collections::BTreeSet<String> = node_names(&farms);
        let candidates = (0..farms.len())
            .filter_map(|i| {
                let mut c = farms.clone();
                let name = fresh(&c[i].name, "x", &taken);
                let f = &mut c[i];
                let like = f.nodes.first().cloned()?;
                let member = f.nodes.iter().map(|n| n.member).max().unwrap_or(0) + 1;
                f.nodes.push(LaidNode { address: format!("{name}.example.net"), name, member, ..like });
                Some(c)
            })
            .collect();
        if let Some(c) = first_valid(candidates, &mut rng) {
            farms = c;
        }
    }
    if v.rename_farm && !farms.is_empty() {
        let i = rng.range(0, farms.len() as u64 - 1) as usize;
        let taken = farm_names(&farms);
        farms[i].name = fresh(&farms[i].name, "r", &taken);
    }
    if v.rename_node {
        let all: Vec<(usize, usize)> =
            farms.iter().enumerate().flat_map(|(i, f)| (0..f.nodes.len()).map(move |j| (i, j))).collect();
        if !all.is_empty() {
            let (i, j) = all[rng.range(0, all.len() as u64 - 1) as usize];
            let taken = node_names(&farms);
            farms[i].nodes[j].name = fresh(&farms[i].nodes[j].name, "r", &taken);
        }
    }
    if v.reorder_farms {
        let sites: std::collections::BTreeSet<String> = farms.iter().map(|f| f.site.clone()).collect();
        for site in sites {
            let slots: Vec<usize> = (0..farms.len()).filter(|&i| farms[i].site == site).collect();
            let mut order = slots.clone();
            shuffle(&mut order, &mut rng);
            if order == slots && order.len() > 1 {
                order.rotate_left(1);
            }
            let moved: Vec<LaidFarm> = order.iter().map(|&i| farms[i].clone()).collect();
            for (slot, f) in slots.into_iter().zip(moved) {
                farms[slot] = f;
            }
        }
    }
    if v.reorder_nodes {
        for f in &mut farms {
            let members: Vec<u32> = f.nodes.iter().map(|n| n.member).collect();
            let before: Vec<String> = f.nodes.iter().map(|n| n.name.clone()).collect();
            shuffle(&mut f.nodes, &mut rng);
            if f.nodes.iter().map(|n| &n.name).eq(before.iter()) {
                f.nodes.rotate_left(1);
            }
            // The members move too: the node first in the file gets the lowest index, and so on.
            for (n, m) in f.nodes.iter_mut().zip(members) {
                n.member = m;
            }
        }
    }
    check_text(render(header, &farms))
}
