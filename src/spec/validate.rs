//! From parsed spec files to a resolved `model::Fleet`, collecting every error
//! (with its file, line and column) before failing. Pure: no I/O, no clock.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::diag::{Basis, Diagnostic, SourceFile};
use super::file::*;
use super::identity::{self, Holder, LbHost};
use super::located::{Pos, Sp};
use super::values::{self, ValueError};
use crate::model::{self, Fleet};

/// Largest fleet a spec may describe; a typo like `count: 4000000000` must
/// not allocate the machine away.
pub const MAX_NODES: u32 = 1_000_000;
const MAX_NODES_PER_FARM: u32 = 10_000;

/// Parses and checks all spec files; either a fleet or every error found,
/// parse errors first (`diag::Report` decides what of the rest is shown
/// while a file failed to parse).
pub fn check(files: &[SourceFile]) -> Result<Fleet, Vec<Diagnostic>> {
    let mut cx = Cx::default();
    let mut parsed = Vec::new();
    for (i, f) in files.iter().enumerate() {
        match parse_file(f) {
            Ok(spec) => {
                cx.diags.extend(super::limits::check(&f.path, &spec));
                parsed.push((i, spec))
            }
            Err(d) => cx.diags.push(d),
        }
    }
    let fleet = cx.resolve(files, &parsed);
    if cx.diags.is_empty() {
        Ok(fleet.expect("a fleet is resolved when no error was reported"))
    } else {
        let key = |d: &Diagnostic| (d.basis != Basis::Parse, d.file.clone(), d.line, d.column);
        cx.diags.sort_by_key(key);
        cx.diags.dedup();
        Err(cx.diags)
    }
}

fn yaml_options() -> serde_saphyr::Options {
    let mut o = serde_saphyr::Options::default();
    o.with_snippet = false;
    // A tag drover does not know (`!foo`, also on a key) is an error, not silently dropped.
    o.reject_unsupported_tags = true;
    o.reject_tagged_field_names = true;
    o
}

/// Parses one file; a syntax or structure error ends that file (but not the others).
pub fn parse_file(f: &SourceFile) -> Result<SpecFile, Diagnostic> {
    if f.text.trim().is_empty() {
        return Ok(SpecFile::default());
    }
    match serde_saphyr::from_str_with_options::<Option<SpecFile>>(&f.text, yaml_options()) {
        Ok(spec) => Ok(spec.unwrap_or_default()),
        Err(e) => {
            let pos = e.location().map(Pos::from_saphyr).unwrap_or(Pos { line: 1, col: 1, ..Pos::default() });
            if let serde_saphyr::Error::DuplicateMappingKey { key: Some(key), .. } = &e {
                let message = identity::duplicate_key(&f.text, key, pos.line, pos.col);
                let hint = "write each key once: YAML tools keep one of the two silently, drover refuses the file";
                return Err(Diagnostic::new(&f.path, pos, message, Some(hint.into())).resting_on(Basis::Parse));
            }
            let message = first_line(&e.to_string());
            Err(Diagnostic::new(&f.path, pos, message, Some(structure_hint(&e.to_string()))).resting_on(Basis::Parse))
        }
    }
}

fn first_line(s: &str) -> String {
    let l = s.lines().next().unwrap_or("invalid YAML").trim();
    // serde-saphyr appends " at line X column Y"; the headline says it already.
    match l.find(" at line ") {
        Some(i) => l[..i].to_string(),
        None => l.to_string(),
    }
}

fn structure_hint(msg: &str) -> String {
    if msg.contains("unknown field") {
        "check the spelling; `drover schema` lists every field, and editors complete them with the yaml-language-server line".into()
    } else if msg.contains("missing field") {
        "add the field; `drover schema` shows which fields are required".into()
    } else if msg.contains("unsupported tag") {
        "drover specs use no YAML tags: remove the `!…` before the value".into()
    } else if msg.contains("unknown variant") {
        "use one of the values listed".into()
    } else {
        "the file must be YAML matching the drover schema (`drover schema`)".into()
    }
}

#[derive(Default)]
struct Cx {
    diags: Vec<Diagnostic>,
    file: String,
}

impl Cx {
    fn at(&mut self, file: &str) {
        self.file = file.to_string();
    }
    fn err(&mut self, pos: Pos, msg: impl Into<String>, hint: impl Into<String>) {
        self.err_on(Basis::Written, pos, msg, hint);
    }
    /// An error that rests on what the spec as a whole defines (`Basis::Whole`):
    /// held back while a file failed to parse, since that file may define it.
    fn whole(&mut self, pos: Pos, msg: impl Into<String>, hint: impl Into<String>) {
        self.err_on(Basis::Whole, pos, msg, hint);
    }
    fn err_on(&mut self, basis: Basis, pos: Pos, msg: impl Into<String>, hint: impl Into<String>) {
        let hint = hint.into();
        let hint = (!hint.is_empty()).then_some(hint);
        self.diags.push(Diagnostic::new(&self.file, pos, msg, hint).resting_on(basis));
    }

    /// One report per mistake in a `node_pattern`: the errors of the nodes it
    /// generated (from `start` on) that point at one field of the pattern and
    /// say the same thing (one hint) are one error, counting the others.
    fn merge_generated(&mut self, start: usize) {
        let generated = self.diags.split_off(start);
        let mut merged: Vec<(Diagnostic, usize)> = Vec::new();
        for d in generated {
            match merged
                .iter_mut()
                .find(|(m, _)| (m.offset, m.line, m.column, &m.hint) == (d.offset, d.line, d.column, &d.hint))
            {
                Some((_, more)) => *more += 1,
                None => merged.push((d, 0)),
            }
        }
        for (mut d, more) in merged {
            if more > 0 {
                d.message.push_str(&format!(
                    "; the same for {more} more node{} of this node_pattern",
                    if more == 1 { "" } else { "s" }
                ));
            }
            self.diags.push(d);
        }
    }
    fn value<T>(&mut self, pos: Pos, r: Result<T, ValueError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.err(pos, e.message, e.hint);
                None
            }
        }
    }
    fn name(&mut self, kind: &str, s: &Sp<String>) -> Option<String> {
        self.value(s.pos, values::parse_name(kind, s))
    }
    fn duration(&mut self, s: &Option<Sp<String>>, default: u64) -> std::time::Duration {
        match s {
            None => std::time::Duration::from_secs(default),
            Some(s) => self.value(s.pos, values::parse_duration(s)).unwrap_or_default(),
        }
    }

    fn resolve(&mut self, files: &[SourceFile], parsed: &[(usize, SpecFile)]) -> Option<Fleet> {
        let path = |i: usize| files[i].path.clone();

        // fleet section: at most one.
        let mut fleet_spec: Option<(usize, &Sp<FleetSpec>)> = None;
        for (i, f) in parsed {
            if let Some(fs) = &f.fleet {
                if let Some((first, fspec)) = fleet_spec {
                    self.at(&files[*i].path);
                    self.second_section(
                        "fleet",
                        fs.pos,
                        &files[first].path,
                        fspec.pos,
                        "keep fleet-wide settings (policy, ssh, sources, defaults) in one file, e.g. specs/fleet.yaml",
                    );
                } else {
                    fleet_spec = Some((*i, fs));
                }
            }
        }
        // Without a fleet section its settings are defaults; if a file failed to
        // parse, the section may be in it: errors using them rest on the whole spec.
        let fleet_basis = if fleet_spec.is_some() { Basis::Written } else { Basis::Whole };
        let default_fleet = FleetSpec::default();
        let (fleet_file, fs) = fleet_spec
            .map(|(i, f)| (path(i), &f.value))
            .unwrap_or((files.first().map(|f| f.path.clone()).unwrap_or_default(), &default_fleet));
        self.at(&fleet_file);
        let policy = self.policy(&fs.policy);
        let ssh = self.ssh(&fs.ssh);
        let sources = self.sources(&fs.sources);
        self.http_port_not_zero(&fs.http_port);
        let http_port = fs.http_port.as_ref().map(|p| p.value).unwrap_or(80);

        // profiles
        let mut profiles = Vec::new();
        let mut profile_ids: HashMap<String, u32> = HashMap::new();
        for (i, f) in parsed {
            self.at(&files[*i].path);
            for p in &f.profiles {
                let Some(name) = self.name("profile", &p.name) else {
                    continue;
                };
                if profile_ids.contains_key(&name) {
                    self.err(
                        p.name.pos,
                        format!("duplicate profile `{name}`"),
                        "profile names must be unique across all spec files",
                    );
                    continue;
                }
                let binhost = self
                    .value(p.binhost.pos, values::parse_url("binhost", &p.binhost, &["https", "http", "ftp", "rsync"]))
                    .unwrap_or_default();
                let capacity = p.capacity.as_ref().map(|c| c.value).unwrap_or(500);
                if let Some(c) = &p.capacity
                    && c.value == 0
                {
                    self.err(
                        c.pos,
                        "profile capacity must be at least 1",
                        "capacity is the number of concurrent sessions one node carries",
                    );
                }
                let snapshot = p.snapshot.as_ref().and_then(|s| self.snapshot(s));
                profile_ids.insert(name.clone(), profiles.len() as u32);
                profiles.push(model::Profile { name, binhost, init: p.init.value, capacity, snapshot });
            }
        }

        // package sets
        let mut sets: HashMap<String, Vec<values::Atom>> = HashMap::new();
        for (i, f) in parsed {
            self.at(&files[*i].path);
            for s in &f.package_sets {
                let Some(name) = self.name("package set", &s.name) else {
                    continue;
                };
                if sets.contains_key(&name) {
                    self.err(
                        s.name.pos,
                        format!("duplicate package set `{name}`"),
                        "package set names must be unique across all spec files",
                    );
                    continue;
                }
                let mut atoms: Vec<values::Atom> = Vec::new();
                let mut seen: HashMap<String, Pos> = HashMap::new();
                for a in &s.atoms {
                    let Some(atom) = self.value(a.pos, values::parse_atom(a)) else {
                        continue;
                    };
                    if let Some(first) = seen.insert(atom.key(), a.pos) {
                        self.err(
                            a.pos,
                            format!(
                                "package `{}` appears twice in set `{name}` (first at line {})",
                                atom.key(),
                                first.line
                            ),
                            "pin one version per package in a set; compose sets to override",
                        );
                        continue;
                    }
                    atoms.push(atom);
                }
                sets.insert(name, atoms);
            }
        }

        // sites
        let mut sites: Vec<model::Site> = Vec::new();
        let mut site_ids: HashMap<String, u32> = HashMap::new();
        let mut site_defaults: Vec<(String, &TargetSpec)> = Vec::new();
        let mut site_pos: Vec<(String, Pos)> = Vec::new();
        let mut incomplete_sites: HashSet<u32> = HashSet::new();
        // What is one thing on the network under any spelling (identity.rs).
        let mut ids = identity::Registry::default();
        let mut lb_hosts: Vec<Option<LbHost>> = Vec::new();
        for (i, f) in parsed {
            self.at(&files[*i].path);
            for s in &f.sites {
                let Some(name) = self.name("site", &s.name) else {
                    continue;
                };
                if site_ids.contains_key(&name) {
                    self.err(
                        s.name.pos,
                        format!("duplicate site `{name}`"),
                        "site names must be unique across all spec files",
                    );
                    continue;
                }
                let lb = self.lb(&s.lb, &s.name, ssh.port);
                lb_hosts.push(self.lb_sockets(&mut ids, &name, s.name.pos, &lb, &s.lb));
                let capacity_floor =
                    self.fraction(&s.capacity_floor, policy.site_capacity_floor, true, "capacity_floor");
                site_ids.insert(name.clone(), sites.len() as u32);
                site_pos.push((files[*i].path.clone(), s.name.pos));
                site_defaults.push((files[*i].path.clone(), &s.defaults));
                sites.push(model::Site {
                    name,
                    environment: s.environment.value,
                    lb,
                    farms: Vec::new(),
                    capacity_floor,
                });
            }
        }

        // farms and nodes
        let mut farms: Vec<model::Farm> = Vec::new();
        let mut nodes: Vec<model::Node> = Vec::new();
        let mut farm_names: HashSet<String> = HashSet::new();
        let mut node_names: HashMap<String, (String, Pos)> = HashMap::new();
        // A farm's pseudo-server in its site's backend, and its listener: one farm each.
        let mut lb_servers: HashMap<(u32, String), Claim> = HashMap::new();
        let mut targets: Vec<model::Target> = Vec::new();
        let mut target_ids: HashMap<model::Target, u32> = HashMap::new();
        // (profile, first production use) for the preproduction gate check
        let mut prod_profiles: BTreeMap<u32, (String, Pos)> = BTreeMap::new();
        let mut preprod_profiles: HashSet<u32> = HashSet::new();
        let fleet_defaults = (fleet_file.clone(), &fs.defaults);

        for (i, f) in parsed {
            let file = files[*i].path.clone();
            for fm in &f.farms {
                self.at(&file);
                let Some(name) = self.name("farm", &fm.name) else {
                    continue;
                };
                if !farm_names.insert(name.clone()) {
                    self.err(
                        fm.name.pos,
                        format!("duplicate farm `{name}`"),
                        "farm names must be unique across all spec files",
                    );
                    continue;
                }
                let site = match site_ids.get(fm.site.as_str()) {
                    Some(&s) => Some(s),
                    None => {
                        let known: Vec<&str> = sites.iter().map(|s| s.name.as_str()).collect();
                        self.whole(
                            fm.site.pos,
                            format!("farm `{name}` refers to unknown site `{}`", *fm.site),
                            format!("known sites: {}", or_none(&known)),
                        );
                        None
                    }
                };
                let memcached: Vec<(String, u16)> =
                    fm.memcached.iter().filter_map(|m| self.value(m.pos, values::parse_endpoint(m))).collect();
                for (m, (host, port)) in fm.memcached.iter().zip(&memcached) {
                    let by = Holder::new(format!("farm `{name}`"), &m.value, &file, m.pos);
                    if let Some(c) = ids.memcached(host, *port, by) {
                        self.err(m.pos, c.message, c.hint);
                    }
                }
                let lb_server = match &fm.lb.server {
                    Some(s) => self.name("LB server", s).unwrap_or_default(),
                    None => name.clone(),
                };
                let lb_listen = fm.lb.listen.as_ref().and_then(|l| self.value(l.pos, values::parse_endpoint(l)));
                // Two farms on one pseudo-server would leave the LB together:
                // drover takes one out and the site loses both.
                if let Some(s) = site {
                    let pos = fm.lb.server.as_ref().map_or(fm.name.pos, |s| s.pos);
                    if let Some((other, ofile, opos)) =
                        claim(&mut lb_servers, (s, lb_server.clone()), (name.clone(), file.clone(), pos))
                    {
                        self.err(
                            pos,
                            format!(
                                "farm `{name}` has the LB server `{lb_server}` of farm `{other}` in site `{}` (first at {ofile}:{}:{})",
                                sites[s as usize].name, opos.line, opos.col
                            ),
                            "each farm needs its own cookie pseudo-server in its site's backend: set `lb.server` to a name no other farm of the site uses",
                        );
                    }
                }
                if let (Some(s), Some((host, port)), Some(at)) = (site, &lb_listen, &fm.lb.listen)
                    && let Some(lb_host) = &lb_hosts[s as usize]
                {
                    let by = Holder::new(
                        format!("farm `{name}` of site `{}`", sites[s as usize].name),
                        &at.value,
                        &file,
                        at.pos,
                    );
                    if let Some(c) = ids.socket(lb_host, host, *port, true, by) {
                        self.err(at.pos, c.message, c.hint);
                    }
                }

                // Nodes: explicit, then generated.
                let farm_id = farms.len() as u32;
                let mut members: HashMap<u32, Pos> = HashMap::new();
                let mut farm_nodes: Vec<u32> = Vec::new();
                let nodes_so_far = nodes.len() + fm.nodes.len();
                let mut add_node = |cx: &mut Cx, n: NodeDraft| {
                    if n.member == 0 {
                        cx.err(
                            n.member_pos,
                            format!("node `{}` has member index 0", n.name),
                            "member indexes start at 1",
                        );
                        return;
                    }
                    if let Some(first) = members.insert(n.member, n.member_pos) {
                        cx.err(
                            n.member_pos,
                            format!(
                                "member index {} is used twice in farm `{name}` (first at line {})",
                                n.member, first.line
                            ),
                            "each node of a farm needs its own member index",
                        );
                        return;
                    }
                    if let Some((ffile, fpos)) = node_names.get(&n.name) {
                        cx.err(
                            n.name_pos,
                            format!("duplicate node name `{}` (first at {}:{}:{})", n.name, ffile, fpos.line, fpos.col),
                            "node names must be unique in the fleet",
                        );
                        return;
                    }
                    let ssh_port = n.ssh_port.unwrap_or(ssh.port);
                    let node_http_port = n.http_port.unwrap_or(http_port);
                    let by =
                        Holder::new(format!("node `{}` of farm `{name}`", n.name), &n.address, &cx.file, n.address_pos);
                    if let Some(c) = ids.node(&n.address, ssh_port, node_http_port, by) {
                        // The ports may be the fleet's defaults.
                        cx.err_on(fleet_basis, n.address_pos, c.message, c.hint);
                        return;
                    }
                    let Some(&profile) = profile_ids.get(&n.profile) else {
                        let mut known: Vec<&str> = profile_ids.keys().map(String::as_str).collect();
                        known.sort();
                        cx.whole(
                            n.profile_pos,
                            format!("node `{}` refers to unknown profile `{}`", n.name, n.profile),
                            format!("known profiles: {}", or_none(&known)),
                        );
                        return;
                    };
                    if let Some(site) = site {
                        if sites[site as usize].environment == Environment::Production {
                            prod_profiles.entry(profile).or_insert((cx.file.clone(), n.profile_pos));
                        } else {
                            preprod_profiles.insert(profile);
                        }
                    }
                    node_names.insert(n.name.clone(), (cx.file.clone(), n.name_pos));
                    farm_nodes.push(nodes.len() as u32);
                    nodes.push(model::Node {
                        name: n.name,
                        address: n.address,
                        ssh_port,
                        http_port: node_http_port,
                        member: n.member,
                        profile,
                        farm: farm_id,
                        site: site.unwrap_or(0),
                    });
                };
                for n in &fm.nodes {
                    self.http_port_not_zero(&n.http_port);
                    let (Some(nname), Some(address)) =
                        (self.name("node", &n.name), self.value(n.address.pos, values::parse_host(&n.address)))
                    else {
                        continue;
                    };
                    add_node(
                        self,
                        NodeDraft {
                            name: nname,
                            name_pos: n.name.pos,
                            address,
                            address_pos: n.address.pos,
                            member: n.member.value,
                            member_pos: n.member.pos,
                            profile: n.profile.value.clone(),
                            profile_pos: n.profile.pos,
                            ssh_port: n.ssh_port.as_ref().map(|p| p.value),
                            http_port: n.http_port.as_ref().map(|p| p.value),
                        },
                    );
                }
                if let Some(p) = &fm.node_pattern {
                    self.http_port_not_zero(&p.http_port);
                    let first = p.first_member.as_ref().map(|m| m.value).unwrap_or(1);
                    if p.count.value == 0 || p.count.value > MAX_NODES_PER_FARM {
                        self.err(
                            p.count.pos,
                            format!("node_pattern count {} is out of range", p.count.value),
                            format!("a farm has 1 to {MAX_NODES_PER_FARM} nodes"),
                        );
                    } else if nodes_so_far as u64 + p.count.value as u64 > MAX_NODES as u64 {
                        self.err(
                            p.count.pos,
                            "the fleet would exceed the node limit",
                            format!("drover manages at most {MAX_NODES} nodes"),
                        );
                    } else if let (Some(_), Some(_)) = (self.pattern_ok(&p.name), self.pattern_ok(&p.address)) {
                        let generated_from = self.diags.len();
                        for m in first..first.saturating_add(p.count.value) {
                            let (Ok(nname), Ok(addr)) = (expand(&p.name, m), expand(&p.address, m)) else {
                                break;
                            };
                            let Some(nname) = self.value(p.name.pos, values::parse_name("node", &nname)) else {
                                break;
                            };
                            let Some(addr) = self.value(p.address.pos, values::parse_host(&addr)) else {
                                break;
                            };
                            add_node(
                                self,
                                NodeDraft {
                                    name: nname,
                                    name_pos: p.name.pos,
                                    address: addr,
                                    address_pos: p.address.pos,
                                    member: m,
                                    member_pos: p.count.pos,
                                    profile: p.profile.value.clone(),
                                    profile_pos: p.profile.pos,
                                    ssh_port: p.ssh_port.as_ref().map(|p| p.value),
                                    http_port: p.http_port.as_ref().map(|p| p.value),
                                },
                            );
                        }
                        self.merge_generated(generated_from);
                    }
                }
                if fm.nodes.is_empty() && fm.node_pattern.is_none() {
                    self.err(fm.name.pos, format!("farm `{name}` has no nodes"), "add `nodes:` or a `node_pattern:`");
                }
                farm_nodes.sort_by_key(|&n| nodes[n as usize].member);

                // A farm that lost nodes to errors above would only produce
                // derived errors (size, capacity): check those on complete farms.
                let expected = fm.nodes.len() + fm.node_pattern.as_ref().map_or(0, |p| p.count.value as usize);
                let complete = expected > 0 && farm_nodes.len() == expected;
                if !complete && let Some(s) = site {
                    incomplete_sites.insert(s);
                }
                let max_unavailable = fm.max_unavailable.as_ref().map(|m| m.value).unwrap_or(policy.max_unavailable);
                if complete && max_unavailable as usize >= farm_nodes.len() {
                    let pos = fm.max_unavailable.as_ref().map(|m| m.pos).unwrap_or(fm.name.pos);
                    let basis = if fm.max_unavailable.is_some() { Basis::Written } else { fleet_basis };
                    self.err_on(
                        basis,
                        pos,
                        format!(
                            "max_unavailable {max_unavailable} would take all {} nodes of farm `{name}` out at once",
                            farm_nodes.len()
                        ),
                        "max_unavailable must be below the farm's size",
                    );
                }
                // The policy's own 0 is reported once, at the policy (`policy`).
                if let Some(m) = &fm.max_unavailable
                    && m.value == 0
                {
                    self.err(m.pos, "max_unavailable 0 would block every node-level change", "use at least 1");
                }

                // Target: farm > site > fleet.
                let site_level = site.map(|s| {
                    (site_defaults[s as usize].0.clone(), site_defaults[s as usize].1, sites[s as usize].name.clone())
                });
                let (target, origin) =
                    self.target(&name, &fm.name, &file, &fm.target, site_level.as_ref(), &fleet_defaults, &sets);
                let target_id = target.map(|t| {
                    let next = targets.len() as u32;
                    *target_ids.entry(t.clone()).or_insert_with(|| {
                        targets.push(t);
                        next
                    })
                });
                if let Some(s) = site {
                    sites[s as usize].farms.push(farm_id);
                }
                farms.push(model::Farm {
                    lb_weight: 0,
                    name,
                    site: site.unwrap_or(0),
                    memcached,
                    nodes: farm_nodes,
                    target: target_id.unwrap_or(0),
                    max_unavailable,
                    lb_server,
                    lb_listen,
                    target_origin: origin,
                });
            }
        }

        // Farm weights proportional to capacity within each site.
        let farm_cap = |f: &model::Farm| -> u64 {
            f.nodes
                .iter()
                .map(|&n| profiles.get(nodes[n as usize].profile as usize).map_or(0, |p| p.capacity as u64))
                .sum()
        };
        for site in &sites {
            let max = site.farms.iter().map(|&f| farm_cap(&farms[f as usize])).max().unwrap_or(1).max(1);
            for &f in &site.farms {
                let cap = farm_cap(&farms[f as usize]);
                farms[f as usize].lb_weight = ((cap * 100).div_ceil(max)).clamp(1, 256) as u16;
            }
        }

        // A site must be able to take its largest farm out for a switch.
        for (si, site) in sites.iter().enumerate() {
            let full: u64 = site.farms.iter().map(|&f| farm_cap(&farms[f as usize])).sum();
            let largest = site.farms.iter().map(|&f| farm_cap(&farms[f as usize])).max().unwrap_or(0);
            let (file, pos) = site_pos[si].clone();
            self.at(&file);
            // A single-farm site can still take node-level work; its switches are
            // reported as blocked by the planner (the last serving farm never goes out).
            let complete = !incomplete_sites.contains(&(si as u32));
            if complete && site.farms.len() > 1 && ((full - largest) as f64) < site.capacity_floor * full as f64 {
                self.whole(pos, format!("site `{}`: taking its largest farm out leaves {:.0}% of its capacity, below its floor of {:.0}%: no farm switch could ever start", site.name, 100.0 * (full - largest) as f64 / full as f64, 100.0 * site.capacity_floor), "lower the site's capacity_floor (or policy.site_capacity_floor), or add farms");
            }
        }

        // Preproduction gate: every production profile needs preproduction nodes.
        if !policy.waive_preproduction_gate {
            for (profile, (file, pos)) in &prod_profiles {
                if !preprod_profiles.contains(profile) {
                    self.at(file);
                    let pname = profiles[*profile as usize].name.clone();
                    self.whole(*pos, format!("production nodes of profile `{pname}` have no preproduction node of that profile: the preproduction gate could never open"), "add a preproduction node of this profile, or set policy.preproduction.waive_gate: true");
                }
            }
        }

        // Simulation settings.
        let mut simulation = None;
        let mut first_simulation: Option<(usize, Pos)> = None;
        for (i, f) in parsed {
            if let Some(sim) = &f.simulation {
                let file = files[*i].path.clone();
                self.at(&file);
                if let Some((first, pos)) = first_simulation {
                    self.second_section(
                        "simulation",
                        sim.pos,
                        &files[first].path,
                        pos,
                        "keep the simulation settings in one file",
                    );
                    continue;
                }
                first_simulation = Some((*i, sim.pos));
                let (t, _) = self.target(
                    "simulation",
                    &Sp::new("simulation".into(), Pos::default()),
                    &file,
                    &sim.initial,
                    None,
                    &fleet_defaults,
                    &sets,
                );
                if let Some(initial) = t {
                    simulation = Some(model::SimulationSettings {
                        initial,
                        sessions_per_site: sim.sessions_per_site.as_ref().map(|s| s.value),
                    });
                }
            }
        }

        if sites.is_empty() && self.diags.is_empty() {
            self.at(&fleet_file);
            self.whole(
                Pos { line: 1, col: 1, ..Pos::default() },
                "the spec has no sites",
                "add a `sites:` list (see examples/)",
            );
        }
        // A production site without farms serves nobody (and `render haproxy`
        // could give it no backend server). A farm naming the site but refused
        // above has its own error already.
        let named: HashSet<&str> = parsed.iter().flat_map(|(_, f)| f.farms.iter().map(|fm| fm.site.as_str())).collect();
        for (si, s) in sites.iter().enumerate() {
            if s.environment == Environment::Production && s.farms.is_empty() && !named.contains(s.name.as_str()) {
                let (file, pos) = site_pos[si].clone();
                self.at(&file);
                self.whole(
                    pos,
                    format!("production site `{}` has no farms", s.name),
                    "add its farms (`farms:` entries with `site: <name>`), or remove the site",
                );
            }
        }
        let releases = self.releases(files, parsed);
        self.at(&fleet_file);
        for env in [Environment::Production, Environment::Preproduction] {
            let field = match env {
                Environment::Production => &fs.policy.migrations.production_node,
                Environment::Preproduction => &fs.policy.migrations.preproduction_node,
            };
            let Some(name) = field else { continue };
            match nodes.iter().find(|n| n.name == name.value) {
                None => self.err_on(
                    Basis::Whole,
                    name.pos,
                    format!("migration node `{}` is not a node of the spec", name.value),
                    format!("name a node of a {} site", env.name()),
                ),
                Some(n) if sites[n.site as usize].environment != env => self.err(
                    name.pos,
                    format!(
                        "migration node `{}` is in site {}, not a {} site",
                        name.value,
                        sites[n.site as usize].name,
                        env.name()
                    ),
                    format!("{}'s migrations run on one of its own nodes", env.name()),
                ),
                Some(_) => {}
            }
        }
        Some(Fleet { profiles, sites, farms, nodes, targets, policy, ssh, sources, simulation, releases })
    }

    fn pattern_ok(&mut self, p: &Sp<String>) -> Option<()> {
        match expand(p, 1) {
            Ok(_) => Some(()),
            Err(e) => {
                self.err(
                    p.pos,
                    format!("bad pattern {:?}: {e}", p.value),
                    "use `{member}`, `{member:02}` or `{member+10}` in a pattern",
                );
                None
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn target(
        &mut self,
        farm: &str,
        farm_pos: &Sp<String>,
        farm_file: &str,
        own: &TargetSpec,
        site: Option<&(String, &TargetSpec, String)>,
        fleet: &(String, &TargetSpec),
        sets: &HashMap<String, Vec<values::Atom>>,
    ) -> (Option<model::Target>, model::TargetOrigin) {
        // Pick each field from the most specific level that sets it.
        let levels: Vec<(String, String, &TargetSpec)> = [
            Some((farm_file.to_string(), "farm".to_string(), own)),
            site.map(|(f, t, n)| (f.clone(), format!("site {n}"), *t)),
            Some((fleet.0.clone(), "fleet defaults".to_string(), fleet.1)),
        ]
        .into_iter()
        .flatten()
        .collect();
        let mut origin = model::TargetOrigin::default();
        let pick = |get: &dyn Fn(&TargetSpec) -> bool| levels.iter().find(|(_, _, t)| get(t));

        let mut ok = true;
        let packages = match pick(&|t| t.packages.is_some()) {
            Some((file, lvl, t)) => {
                origin.packages = lvl.clone();
                self.at(file);
                let names = t.packages.as_ref().expect("picked level has packages");
                let mut merged: BTreeMap<String, values::Atom> = BTreeMap::new();
                for n in names.iter() {
                    match sets.get(n.as_str()) {
                        Some(atoms) => {
                            for a in atoms {
                                merged.insert(a.key(), a.clone());
                            }
                        }
                        None => {
                            let mut known: Vec<&str> = sets.keys().map(String::as_str).collect();
                            known.sort();
                            self.whole(
                                n.pos,
                                format!("unknown package set `{}`", n.value),
                                format!("known package sets: {}", or_none(&known)),
                            );
                            ok = false;
                        }
                    }
                }
                merged.into_values().collect()
            }
            None => Vec::new(),
        };
        let php = match pick(&|t| t.php.is_some()) {
            Some((file, lvl, t)) => {
                origin.php = lvl.clone();
                self.at(file);
                let p = t.php.as_ref().expect("picked level has php");
                self.value(p.pos, values::parse_php_version(p))
            }
            None => None,
        };
        let release = match pick(&|t| t.release.is_some()) {
            Some((file, lvl, t)) => {
                origin.release = lvl.clone();
                self.at(file);
                let r = t.release.as_ref().expect("picked level has release");
                self.value(r.pos, values::parse_release_id(r))
            }
            None => None,
        };
        let allow_rollback = pick(&|t| t.allow_rollback.is_some())
            .and_then(|(_, _, t)| t.allow_rollback.as_ref().map(|b| b.value))
            .unwrap_or(false);
        self.at(farm_file);
        let missing: Vec<&str> = [(origin.php.is_empty(), "php"), (origin.release.is_empty(), "release")]
            .into_iter()
            .filter_map(|(m, n)| m.then_some(n))
            .collect();
        if !missing.is_empty() {
            self.whole(
                farm_pos.pos,
                format!(
                    "`{farm}` has no {} (set by neither the farm, its site, nor fleet.defaults)",
                    missing.join(" and ")
                ),
                "set it in fleet.defaults, the site's defaults or the farm's target",
            );
            return (None, origin);
        }
        match (ok, php, release) {
            (true, Some(php), Some(release)) => {
                (Some(model::Target { packages, php, release, allow_rollback }), origin)
            }
            _ => (None, origin),
        }
    }

    fn policy(&mut self, p: &PolicySpec) -> model::Policy {
        let mut disruptive = Vec::new();
        for r in &p.disruptive {
            let pat_ok = !r.pattern.is_empty()
                && r.pattern.contains('/')
                && r.pattern.chars().all(|c| c.is_ascii_alphanumeric() || "*/._+-".contains(c));
            if !pat_ok {
                self.err(
                    r.pattern.pos,
                    format!("bad package pattern {:?}", r.pattern.value),
                    "write `category/package` with `*` wildcards, e.g. `sys-kernel/*`",
                );
                continue;
            }
            let reboot = r.reboot.as_ref().map(|b| b.value).unwrap_or(false);
            if reboot && let Some(first) = r.restart.first() {
                // Checked all the same: nothing in a spec goes unchecked.
                for s in &r.restart {
                    let _ = self.value(s.pos, values::parse_service(s));
                }
                self.err(
                    first.pos,
                    format!(
                        "disruptive rule `{}` both reboots and restarts services: a reboot restarts every service, so the list would be ignored",
                        r.pattern.value
                    ),
                    "keep `reboot: true` or the `restart` list, not both",
                );
                continue;
            }
            let needs = if reboot {
                model::Needs::Reboot
            } else if !r.restart.is_empty() {
                let services = r.restart.iter().filter_map(|s| self.value(s.pos, values::parse_service(s))).collect();
                model::Needs::Restart(services)
            } else {
                self.err(
                    r.pattern.pos,
                    format!("disruptive rule `{}` needs neither a restart nor a reboot", r.pattern.value),
                    "add `restart: [service, …]` or `reboot: true`",
                );
                continue;
            };
            disruptive.push(model::DisruptiveRule { pattern: r.pattern.value.clone(), needs });
        }
        let site_capacity_floor = self.fraction(&p.site_capacity_floor, 0.5, true, "site_capacity_floor");
        let max_farm_load = self.fraction(&p.max_farm_load, 0.9, false, "max_farm_load");
        let h = &p.health;
        let path = match &h.path {
            None => "/healthz".to_string(),
            Some(s) => self.value(s.pos, values::parse_abs_path("health path", s)).unwrap_or_default(),
        };
        let expect_status = h.expect_status.as_ref().map(|s| s.value).unwrap_or(200);
        if !(100..=599).contains(&expect_status) {
            let pos = h.expect_status.as_ref().map(|s| s.pos).unwrap_or_default();
            self.err(
                pos,
                format!("HTTP status {expect_status} does not exist"),
                "use a status between 100 and 599, usually 200",
            );
        }
        let health = model::HealthCheck {
            path,
            expect_status,
            expect_release_marker: h.expect_release_marker.as_ref().map(|b| b.value).unwrap_or(true),
            timeout: self.duration(&h.timeout, 5),
            retries: h.retries.as_ref().map(|r| r.value).unwrap_or(3).max(1),
            pool_status: match &h.pool_status {
                None => "/fpm-status".to_string(),
                Some(s) => self.value(s.pos, values::parse_abs_path("pool status path", s)).unwrap_or_default(),
            },
            requests: h.requests.as_ref().map(|r| r.value).unwrap_or(8).max(1),
        };
        let max_unavailable = p.max_unavailable.as_ref().map(|m| m.value).unwrap_or(1);
        if let Some(m) = &p.max_unavailable
            && m.value == 0
        {
            self.err(
                m.pos,
                "max_unavailable 0 would block every node-level change",
                "use at least 1 (a farm may set its own `max_unavailable`)",
            );
        }
        let max_farms_down = p.max_farms_down.as_ref().map(|m| m.value).unwrap_or(1);
        if let Some(m) = &p.max_farms_down
            && m.value == 0
        {
            self.err(m.pos, "max_farms_down 0 would block every farm switch", "use at least 1");
        }
        let releases_kept = p.releases_kept.as_ref().map(|m| m.value).unwrap_or(5);
        if let Some(k) = &p.releases_kept
            && k.value < 2
        {
            self.err(
                k.pos,
                format!("releases_kept {} leaves nothing to roll back to", k.value),
                "keep at least 2 releases (the active one and the previous)",
            );
        }
        model::Policy {
            disruptive,
            max_unavailable,
            max_farms_down,
            site_capacity_floor,
            max_farm_load,
            drain_timeout: self.duration(&p.drain_timeout, 300),
            unreachable_timeout: self.duration(&p.unreachable_timeout, 300),
            health,
            soak: self.duration(&p.preproduction.soak, 1800),
            waive_preproduction_gate: p.preproduction.waive_gate.as_ref().map(|b| b.value).unwrap_or(false),
            failure_budget: p.failure_budget.as_ref().map(|b| b.value).unwrap_or(2),
            releases_kept,
            change_windows: p.change_windows.iter().filter_map(|w| self.change_window(w)).collect(),
            migrations: model::Migrations {
                production_node: p.migrations.production_node.as_ref().map(|n| n.value.clone()),
                preproduction_node: p.migrations.preproduction_node.as_ref().map(|n| n.value.clone()),
                timeout: self.duration(&p.migrations.timeout, 1800),
            },
            warmup: self.warmup(&p.warmup),
        }
    }

    /// The `releases:` sections of every file: hooks by release id.
    fn releases(
        &mut self,
        files: &[SourceFile],
        parsed: &[(usize, SpecFile)],
    ) -> BTreeMap<values::ReleaseId, model::ReleaseHooks> {
        let mut out = BTreeMap::new();
        let mut seen: HashMap<values::ReleaseId, (String, Pos)> = HashMap::new();
        for (i, f) in parsed {
            self.at(&files[*i].path);
            for r in &f.releases {
                let Some(id) = self.value(r.id.pos, values::parse_release_id(&r.id)) else {
                    continue;
                };
                if let Some((file, at)) = seen.get(&id) {
                    let msg = format!(
                        "release {} is described twice (first in {file} at line {}, column {})",
                        id.0, at.line, at.col
                    );
                    self.err(r.id.pos, msg, "describe each release once");
                    continue;
                }
                seen.insert(id.clone(), (files[*i].path.clone(), r.id.pos));
                let hook = |me: &mut Self, h: &Option<Sp<String>>| {
                    h.as_ref().and_then(|h| me.value(h.pos, values::parse_hook_name(h)))
                };
                let hooks = model::ReleaseHooks {
                    expand: hook(self, &r.hooks.expand),
                    contract: hook(self, &r.hooks.contract),
                    warmup: hook(self, &r.hooks.warmup),
                };
                out.insert(id, hooks);
            }
        }
        out
    }

    fn warmup(&mut self, w: &WarmupSpec) -> model::Warmup {
        let mut paths: Vec<String> = Vec::new();
        for p in &w.paths {
            if let Some(path) = self.value(p.pos, values::parse_abs_path("warm-up path", p)) {
                if paths.contains(&path) {
                    self.err(p.pos, format!("warm-up path {path:?} is listed twice"), "list each path once");
                } else {
                    paths.push(path);
                }
            }
        }
        if paths.len() > 100 {
            let pos = w.paths[100].pos;
            self.err(pos, format!("{} warm-up paths; at most 100", paths.len()), "warm the paths that matter most");
        }
        let concurrency = w.concurrency.as_ref().map(|c| c.value).unwrap_or(4);
        if let Some(c) = &w.concurrency
            && !(1..=64).contains(&c.value)
        {
            self.err(c.pos, format!("warm-up concurrency {} is out of range", c.value), "use 1 to 64 requests at once");
        }
        model::Warmup {
            paths,
            concurrency: concurrency.clamp(1, 64),
            timeout: self.duration(&w.timeout, 60),
            min_success: self.fraction(&w.min_success, 1.0, false, "warm-up min_success"),
        }
    }

    fn snapshot(&mut self, s: &Sp<SnapshotSpec>) -> Option<model::Snapshot> {
        let keep = s.keep.as_ref().map(|k| k.value).unwrap_or(3);
        if let Some(k) = &s.keep
            && !(1..=100).contains(&k.value)
        {
            self.err(k.pos, format!("keep {} snapshots is out of range", k.value), "keep 1 to 100 snapshots per node");
        }
        let mut ok = true;
        let mut unused = |me: &mut Self, field: &Option<Sp<String>>, name: &str, method: &str| {
            if let Some(f) = field {
                me.err(
                    f.pos,
                    format!("`{name}` does not apply to snapshot method {method}"),
                    "lvm takes volume and size, btrfs path and dir, hook the hook's name",
                );
                ok = false;
            }
        };
        let method = match s.method.value {
            SnapshotMethodSpec::Lvm => {
                unused(self, &s.path, "path", "lvm");
                unused(self, &s.dir, "dir", "lvm");
                unused(self, &s.hook, "hook", "lvm");
                let Some(volume) = &s.volume else {
                    self.err(
                        s.method.pos,
                        "snapshot method lvm needs `volume: vg/lv`",
                        "name the root logical volume, e.g. `volume: vg0/root`",
                    );
                    return None;
                };
                let (vg, lv) = self.value(volume.pos, values::parse_lvm_volume(volume))?;
                let size = match &s.size {
                    None => "10G".to_string(),
                    Some(z) => self.value(z.pos, values::parse_lvm_size(z))?,
                };
                model::SnapshotMethod::Lvm { vg, lv, size }
            }
            SnapshotMethodSpec::Btrfs => {
                unused(self, &s.volume, "volume", "btrfs");
                unused(self, &s.size, "size", "btrfs");
                unused(self, &s.hook, "hook", "btrfs");
                let path = match &s.path {
                    None => "/".to_string(),
                    Some(p) => self.value(p.pos, values::parse_abs_path("snapshot path", p))?,
                };
                let dir = match &s.dir {
                    None => "/.snapshots".to_string(),
                    Some(d) => self.value(d.pos, values::parse_abs_path("snapshot dir", d))?,
                };
                model::SnapshotMethod::Btrfs { path, dir }
            }
            SnapshotMethodSpec::Hook => {
                unused(self, &s.volume, "volume", "hook");
                unused(self, &s.size, "size", "hook");
                unused(self, &s.path, "path", "hook");
                unused(self, &s.dir, "dir", "hook");
                let Some(hook) = &s.hook else {
                    self.err(
                        s.method.pos,
                        "snapshot method hook needs `hook: <name>`",
                        "name the executable in /etc/drover/hooks/ on the node",
                    );
                    return None;
                };
                model::SnapshotMethod::Hook { hook: self.value(hook.pos, values::parse_hook_name(hook))? }
            }
        };
        ok.then_some(model::Snapshot { method, keep: keep.clamp(1, 100) })
    }

    fn change_window(&mut self, w: &ChangeWindowSpec) -> Option<model::ChangeWindow> {
        let mut days = 0u8;
        let mut ok = true;
        match &w.days {
            None => days = 0x7f,
            Some(list) if list.is_empty() => {
                self.err(
                    list.pos,
                    "a change window without days never opens",
                    "name the days it opens on, e.g. days: [mon, tue, wed, thu, fri], or leave `days` out for every day",
                );
                ok = false;
            }
            Some(list) => {
                let mut first: [Option<Pos>; 7] = [None; 7];
                for d in list.iter() {
                    let Some(i) = self.value(d.pos, values::parse_weekday(d)) else {
                        ok = false;
                        continue;
                    };
                    if let Some(at) = first[i as usize] {
                        self.err(
                            d.pos,
                            format!(
                                "day `{}` appears twice in this window (first at line {}, column {})",
                                d.value, at.line, at.col
                            ),
                            "name each day once; write a second window for other hours of the same day",
                        );
                        ok = false;
                        continue;
                    }
                    first[i as usize] = Some(d.pos);
                    days |= 1 << i;
                }
            }
        }
        let start = self.value(w.start.pos, values::parse_time_of_day(&w.start, false));
        let end = self.value(w.end.pos, values::parse_time_of_day(&w.end, true));
        let (start, end) = (start?, end?);
        if start == end {
            self.err(
                w.end.pos,
                format!("change window from {} to {} is empty", w.start.value, w.end.value),
                "give the window a length (`end` before `start` wraps past midnight); for a whole day write start \"00:00\", end \"24:00\"",
            );
            return None;
        }
        ok.then_some(model::ChangeWindow { days, start_min: start, end_min: end })
    }

    fn fraction(&mut self, v: &Option<Sp<f64>>, default: f64, zero_ok: bool, what: &str) -> f64 {
        match v {
            None => default,
            Some(f) => {
                let ok = f.value.is_finite() && f.value <= 1.0 && (f.value > 0.0 || (zero_ok && f.value == 0.0));
                if !ok {
                    self.err(
                        f.pos,
                        format!("{what} {} is out of range", f.value),
                        "write a fraction between 0 and 1, e.g. 0.75",
                    );
                    // A floor of 0 adds no derived errors to this one.
                    return if zero_ok { 0.0 } else { default };
                }
                f.value
            }
        }
    }

    fn ssh(&mut self, s: &SshSpec) -> model::SshSettings {
        let user = match &s.user {
            None => "drover".to_string(),
            Some(u) => self.name("SSH user", u).unwrap_or_default(),
        };
        let file = |cx: &mut Cx, v: &Option<Sp<String>>, what: &str| {
            v.as_ref().and_then(|p| {
                let ok = !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c));
                if !ok {
                    cx.err(
                        p.pos,
                        format!("{what} path {:?} is not a plain path", p.value),
                        "use letters, digits and `._-/`",
                    );
                }
                // Credentials belong to the daemon host's operator (cli::real::spec_credential).
                let climbs = p.split('/').any(|c| c == "..");
                let ok = ok && !climbs;
                if climbs {
                    cx.err(
                        p.pos,
                        format!("{what} path {:?} climbs out with `..`", p.value),
                        "name a file inside the spec directory, or give the operator's file with --known-hosts / --identity",
                    );
                }
                ok.then(|| p.value.clone())
            })
        };
        model::SshSettings {
            user,
            port: s.port.as_ref().map(|p| p.value).unwrap_or(22),
            known_hosts: file(self, &s.known_hosts, "known_hosts"),
            identity: file(self, &s.identity, "identity"),
        }
    }

    fn sources(&mut self, s: &SourcesSpec) -> model::Sources {
        let url = |cx: &mut Cx, v: &Option<Sp<String>>, what: &str| {
            v.as_ref().and_then(|u| cx.value(u.pos, values::parse_url(what, u, &["rsync", "file"])))
        };
        model::Sources { php: url(self, &s.php, "PHP source"), releases: url(self, &s.releases, "release source") }
    }

    /// A single-valued section written twice: refused at the second, naming the first.
    fn second_section(&mut self, key: &str, pos: Pos, first_file: &str, first: Pos, hint: &str) {
        self.err(
            pos,
            format!("a second `{key}:` section (the first is at {first_file}:{}:{})", first.line, first.col),
            format!("{hint}; drover refuses a second one rather than let one silently replace the other"),
        );
    }

    fn http_port_not_zero(&mut self, p: &Option<Sp<u16>>) {
        if let Some(p) = p
            && p.value == 0
        {
            self.err(
                p.pos,
                "http_port 0 is not a port a web server can listen on",
                "use the node's HTTP port, 1 to 65535 (default 80)",
            );
        }
    }

    /// Records a site's frontend bind and admin endpoint on its LB host, so
    /// that farm listeners are checked against them (identity.rs); returns
    /// the LB host, if the LB is valid.
    fn lb_sockets(
        &mut self,
        ids: &mut identity::Registry,
        site: &str,
        site_pos: Pos,
        lb: &model::LbSettings,
        spec: &LbSpec,
    ) -> Option<LbHost> {
        let (model::LbApi::Ssh { host, .. } | model::LbApi::Tcp { host, .. }) = &lb.api;
        if host.is_empty() {
            return None;
        }
        let lb_host = LbHost::of(host);
        let mut sockets = Vec::new();
        if let Ok((h, p)) = values::parse_endpoint(&lb.bind) {
            let pos = spec.bind.as_ref().map_or(site_pos, |b| b.pos);
            sockets.push((h, p, format!("the frontend of site `{site}`"), lb.bind.clone(), pos));
        }
        if let (model::LbApi::Tcp { host, port }, Some(t)) = (&lb.api, &spec.admin_tcp) {
            sockets.push((host.clone(), *port, format!("the admin endpoint of site `{site}`"), t.value.clone(), t.pos));
        }
        for (h, p, what, written, pos) in sockets {
            let file = self.file.clone();
            if let Some(c) = ids.socket(&lb_host, &h, p, false, Holder::new(what, written, &file, pos)) {
                self.err(pos, c.message, c.hint);
            }
        }
        Some(lb_host)
    }

    fn lb(&mut self, lb: &LbSpec, site: &Sp<String>, ssh_port: u16) -> model::LbSettings {
        let api = match (&lb.host, &lb.socket, &lb.admin_tcp) {
            (Some(h), Some(sock), None) => {
                let host = self.value(h.pos, values::parse_host(h)).unwrap_or_default();
                let socket = self.value(sock.pos, values::parse_abs_path("socket", sock)).unwrap_or_default();
                model::LbApi::Ssh { host, port: lb.ssh_port.as_ref().map(|p| p.value).unwrap_or(ssh_port), socket }
            }
            (None, None, Some(t)) => {
                let (host, port) = self.value(t.pos, values::parse_endpoint(t)).unwrap_or_default();
                model::LbApi::Tcp { host, port }
            }
            _ => {
                self.err(
                    site.pos,
                    format!("site `{}`: the LB needs either `host` and `socket`, or `admin_tcp`", site.value),
                    "e.g. lb: { host: lb1.par1.example.net, socket: /run/haproxy/admin.sock }",
                );
                model::LbApi::Tcp { host: String::new(), port: 0 }
            }
        };
        let backend = match &lb.backend {
            Some(b) => self.name("backend", b).unwrap_or_default(),
            None => "site".into(),
        };
        let bind = match &lb.bind {
            Some(b) => {
                let _ = self.value(b.pos, values::parse_endpoint(b));
                b.value.clone()
            }
            None => "0.0.0.0:80".into(),
        };
        let state_file = match &lb.state_file {
            Some(s) => self.value(s.pos, values::parse_abs_path("state file", s)).unwrap_or_default(),
            None => "/var/lib/haproxy/server-state".into(),
        };
        model::LbSettings { api, backend, bind, state_file }
    }
}

struct NodeDraft {
    name: String,
    name_pos: Pos,
    address: String,
    address_pos: Pos,
    member: u32,
    member_pos: Pos,
    profile: String,
    profile_pos: Pos,
    ssh_port: Option<u16>,
    http_port: Option<u16>,
}

/// Which farm took something first: its name, file and position.
type Claim = (String, String, Pos);

/// Takes `key` for `by`; if another farm had it, that farm's claim (and `by` is not recorded).
fn claim<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Claim>, key: K, by: Claim) -> Option<Claim> {
    match map.entry(key) {
        std::collections::hash_map::Entry::Occupied(first) => Some(first.get().clone()),
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(by);
            None
        }
    }
}

fn or_none(list: &[&str]) -> String {
    if list.is_empty() { "(none)".into() } else { list.join(", ") }
}

/// Expands `{member}`, `{member:02}` and `{member+10}` (also `{member+10:03}`).
pub fn expand(pattern: &str, member: u32) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = pattern;
    let mut found = false;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').ok_or("unclosed `{`")? + open;
        let inner = &rest[open + 1..close];
        let body = inner.strip_prefix("member").ok_or_else(|| format!("unknown placeholder `{{{inner}}}`"))?;
        let (body, width) = match body.split_once(':') {
            Some((b, w)) => {
                let w: usize = w.parse().map_err(|_| format!("bad width in `{{{inner}}}`"))?;
                if w > 9 {
                    return Err(format!("width too large in `{{{inner}}}`"));
                }
                (b, w)
            }
            None => (body, 0),
        };
        let offset: u32 = match body.strip_prefix('+') {
            Some(n) => n.parse().map_err(|_| format!("bad offset in `{{{inner}}}`"))?,
            None if body.is_empty() => 0,
            None => return Err(format!("unknown placeholder `{{{inner}}}`")),
        };
        let v = member.checked_add(offset).ok_or("member index overflows")?;
        out.push_str(&format!("{v:0width$}"));
        rest = &rest[close + 1..];
        found = true;
    }
    if rest.contains('}') {
        return Err("unmatched `}`".into());
    }
    out.push_str(rest);
    if !found {
        return Err("the pattern has no `{member}` placeholder, so every node would get the same value".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{check, expand};
    use crate::model::ChangeWindow;
    use crate::spec::SourceFile;

    /// The corpus's valid base spec with `windows` appended to its policy.
    fn with_windows(windows: &str) -> Vec<SourceFile> {
        let base = include_str!("../../tests/invalid/00-valid-base.yaml.txt");
        assert!(base.contains("    releases_kept: 5\n"), "the policy of the base spec ends with releases_kept");
        let text = base.replace("    releases_kept: 5\n", &format!("    releases_kept: 5\n{windows}"));
        vec![SourceFile { path: "spec.yaml".into(), text }]
    }

    /// (line, column, message) of every diagnostic.
    fn errors(windows: &str) -> Vec<(u32, u32, String)> {
        check(&with_windows(windows)).unwrap_err().into_iter().map(|d| (d.line, d.column, d.message)).collect()
    }

    #[test]
    fn change_windows_resolve_to_days_and_minutes() {
        let fleet = check(&with_windows(
            "    change_windows:\n      - { days: [mon, fri], start: 02:00, end: \"06:30\" }\n      - { start: \"22:00\", end: \"02:00\" }\n      - { days: [sun], start: \"00:00\", end: \"24:00\" }\n",
        ))
        .unwrap();
        assert_eq!(
            fleet.policy.change_windows,
            [
                ChangeWindow { days: 0b001_0001, start_min: 120, end_min: 390 },
                ChangeWindow { days: 0x7f, start_min: 1320, end_min: 120 },
                ChangeWindow { days: 0b100_0000, start_min: 0, end_min: 1440 },
            ]
        );
        assert!(check(&with_windows("")).unwrap().policy.change_windows.is_empty());
    }

    #[test]
    fn bad_change_windows_are_reported_where_they_are_written() {
        // Line 13 is `change_windows:`, the windows start on line 14.
        let e = errors("    change_windows:\n      - { days: [mon, tue], start: \"25:00\", end: \"24:00\" }\n");
        assert_eq!(e, [(14, 36, "time \"25:00\" does not exist".to_string())]);
        let e = errors("    change_windows:\n      - { start: \"24:00\", end: \"01:00\" }\n");
        assert_eq!(e, [(14, 18, "time \"24:00\" does not exist".to_string())], "24:00 only ends a window");
        let e = errors("    change_windows:\n      - { start: \"02:00\", end: \"02:00\" }\n");
        assert_eq!(e, [(14, 32, "change window from 02:00 to 02:00 is empty".to_string())]);
        let e = errors(
            "    change_windows:\n      - days: [mon, Tue, mon]\n        start: \"01:00\"\n        end: \"02:00\"\n",
        );
        assert_eq!(
            e,
            [
                (14, 21, "unknown day \"Tue\"".to_string()),
                (14, 26, "day `mon` appears twice in this window (first at line 14, column 16)".to_string()),
            ]
        );
        let e = errors("    change_windows:\n      - { days: [], start: \"1:00\", end: \"02:00\" }\n");
        assert_eq!(
            e,
            [
                (14, 17, "a change window without days never opens".to_string()),
                (14, 28, "malformed time \"1:00\" (expected HH:MM)".to_string()),
            ]
        );
    }

    const BASE: &str = include_str!("../../tests/invalid/00-valid-base.yaml.txt");

    /// The base spec with `from` replaced by `to` (which must be there).
    fn base_with(from: &str, to: &str) -> Vec<SourceFile> {
        assert!(BASE.contains(from), "{from}");
        vec![SourceFile { path: "spec.yaml".into(), text: BASE.replace(from, to) }]
    }

    /// The base spec in two files: what the fleet defines (`fleet.yaml`) and its sites and farms.
    fn split_base(fleet_edit: (&str, &str), sites_edit: (&str, &str)) -> Vec<SourceFile> {
        let at = BASE.find("sites:\n").unwrap();
        let (fleet, sites) = BASE.split_at(at);
        assert!(fleet.contains(fleet_edit.0) && sites.contains(sites_edit.0));
        vec![
            SourceFile { path: "fleet.yaml".into(), text: fleet.replacen(fleet_edit.0, fleet_edit.1, 1) },
            SourceFile { path: "sites.yaml".into(), text: sites.replacen(sites_edit.0, sites_edit.1, 1) },
        ]
    }

    #[test]
    fn a_file_that_fails_to_parse_is_reported_first_and_what_may_follow_from_it_is_counted() {
        use crate::spec::diag::{Basis, Report};
        assert!(check(&split_base(("", ""), ("", ""))).is_ok(), "the base split in two files is valid");
        // One space too many: fleet.yaml does not parse; sites.yaml names its
        // profile and inherits its targets. Its bad memcached port is wrong anyway.
        let files = split_base(
            ("  policy:\n", "   policy:\n"),
            ("memcached: [\"10.1.1.5:11211\"]", "memcached: [\"10.1.1.5:99999\"]"),
        );
        let diags = check(&files).unwrap_err();
        assert_eq!((diags[0].file.as_str(), diags[0].basis), ("fleet.yaml", Basis::Parse), "{diags:#?}");
        assert!(diags.iter().any(|d| d.basis == Basis::Whole && d.message.contains("unknown profile `r640`")));
        let report = Report::of(diags.clone());
        let shown: Vec<(&str, u32)> = report.shown.iter().map(|d| (d.file.as_str(), d.line)).collect();
        assert_eq!(shown, [("fleet.yaml", 4), ("sites.yaml", 12)], "{:#?}", report.shown);
        assert!(report.shown[1].message.contains("99999"), "{:#?}", report.shown);
        assert_eq!(report.suppressed, diags.len() - 2);
        assert_eq!(
            report.summary("specs", ""),
            format!(
                "2 errors in specs; {} errors that may follow from it were not reported (fix the parse error first)",
                report.suppressed
            )
        );
        // Fixed, the errors that followed from it are gone; with no parse error nothing is held back.
        let files = split_base(("", ""), ("memcached: [\"10.1.1.5:11211\"]", "memcached: [\"10.1.1.5:99999\"]"));
        let report = Report::of(check(&files).unwrap_err());
        assert_eq!((report.shown.len(), report.suppressed), (1, 0));
        assert_eq!(report.summary("specs", ": nothing was planned"), "1 error in specs: nothing was planned");
    }

    #[test]
    fn without_a_parse_error_every_error_is_reported_even_those_resting_on_the_whole_spec() {
        let files = base_with("profile: r640 }\n  - name: par1-f01", "profile: r650 }\n  - name: par1-f01");
        let report = crate::spec::diag::Report::of(check(&files).unwrap_err());
        assert_eq!(report.suppressed, 0);
        assert!(report.shown.iter().any(|d| d.message.contains("unknown profile `r650`")), "{:#?}", report.shown);
    }

    /// The messages of `files`' errors.
    fn messages(files: &[SourceFile]) -> Vec<String> {
        check(files).unwrap_err().into_iter().map(|d| format!("{}:{}: {}", d.line, d.column, d.message)).collect()
    }

    #[test]
    fn a_node_pattern_mistake_is_one_error_for_the_pattern_not_one_per_node() {
        let pattern = r#"node_pattern: { count: 4, name: "par1-f01-n{member:02}", address: "10.1.1.{member+10}", profile: r640 }"#;
        let sixteen = pattern.replace("count: 4", "count: 16");
        // A profile that does not exist.
        let e = messages(&base_with(pattern, &sixteen.replace("r640", "r64")));
        assert_eq!(
            e,
            [
                "31:103: node `par1-f01-n01` refers to unknown profile `r64`; the same for 15 more nodes of this node_pattern"
            ]
        );
        // A copied farm whose addresses, or names, are still the first farm's.
        let copy = |name: &str, address: &str| {
            format!(
                "{sixteen}\n  - name: par1-f03\n    site: par1\n    memcached: [\"10.1.3.5:11211\"]\n    node_pattern: {{ count: 16, name: \"{name}\", address: \"{address}\", profile: r640 }}"
            )
        };
        let e = messages(&base_with(pattern, &copy("par1-f03-n{member:02}", "10.1.1.{member+10}")));
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(
            e[0].starts_with("35:72: node `par1-f03-n01` of farm `par1-f03` has the SSH endpoint `10.1.1.11:22`"),
            "{e:#?}"
        );
        assert!(e[0].ends_with("; the same for 15 more nodes of this node_pattern"), "{e:#?}");
        let e = messages(&base_with(pattern, &copy("par1-f01-n{member:02}", "10.1.3.{member+10}")));
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(e[0].starts_with("35:38: duplicate node name `par1-f01-n01` (first at spec.yaml:31:38)"), "{e:#?}");
        // Members given twice: by the pattern and a node of the farm.
        let e = messages(&base_with(
            pattern,
            &format!("{sixteen}\n    nodes: [{{ name: x1, address: 10.1.9.1, member: 3, profile: r640 }}]"),
        ));
        assert_eq!(e.len(), 1, "{e:#?}");
    }

    #[test]
    fn the_policys_max_unavailable_0_is_reported_once_at_the_policy() {
        let e = messages(&base_with("max_unavailable: 1", "max_unavailable: 0"));
        assert_eq!(e, ["8:22: max_unavailable 0 would block every node-level change"]);
    }

    #[test]
    fn patterns() {
        assert_eq!(expand("par1-f01-n{member:02}", 3).unwrap(), "par1-f01-n03");
        assert_eq!(expand("10.1.1.{member+10}", 3).unwrap(), "10.1.1.13");
        assert_eq!(expand("n{member+100:04}", 3).unwrap(), "n0103");
        assert!(expand("web", 1).is_err());
        assert!(expand("web{node}", 1).is_err());
        assert!(expand("web{member", 1).is_err());
        assert!(expand("web{member+x}", 1).is_err());
    }
}
