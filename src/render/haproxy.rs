//! A site LB's HAProxy configuration in the farm-stickiness layout drover
//! drives (the research's "Design B"; the behaviour it relies on is in
//! `docs/haproxy-semantics.md`, each claim with the test that verifies it):
//!
//! - a frontend that sends everything to the site backend;
//! - the site backend with ONE cookie-carrying pseudo-server per farm
//!   (`cookie FARMID insert indirect nocache`, `option redispatch`, HTTP check
//!   on the farm's `/_farm_up`): weight 0 or drain on a pseudo-server keeps the
//!   farm's sessions and gives it no new ones, maint hands its sessions to the
//!   farms that still take new sessions;
//! - one `listen <farm>` per farm on the farm's `lb.listen` address, balancing
//!   the farm's nodes round-robin and answering `/_farm_up` itself, failing it
//!   when no node is usable. Drain, maint or weight 0 on a node server moves
//!   only that node's traffic, inside the farm.
//!
//! The hop from pseudo-server to listener is TCP (never `abns@`: with an
//! abstract socket a reload killed in-flight requests). The runtime state
//! drover sets survives a reload only through the server-state file, which
//! HAProxy reads but never writes: dump `show servers state` into it right
//! before every reload.
//!
//! Why no default for `lb.listen`: the listener addresses must be stable.
//! During a reload old and new HAProxy processes listen side by side (with
//! SO_REUSEPORT), so if a farm's address were derived from its position, a
//! farm added or removed would make the old process's pseudo-server connect
//! to the new process's listener of *another* farm, sending sessions to a farm
//! (and release) they have never seen. The operator writes each address once.

use std::fmt::Write as _;

use crate::model::{Fleet, LbApi, NodeId, SiteId};
use crate::spec::values::parse_endpoint;

/// Cookie that pins a session to its farm (value: the farm's `lb_server`).
pub const FARM_COOKIE: &str = "FARMID";
/// URI each farm listener answers itself: 200 while a node is usable, 503 when none is.
pub const FARM_UP_URI: &str = "/_farm_up";
/// Name of the frontend section.
pub const FRONTEND: &str = "http-in";

/// Why a site's configuration cannot be rendered. Each names the site or farm
/// and what to change in the spec.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("no site with id {0} in this fleet")]
    NoSuchSite(SiteId),
    #[error("site `{site}` has no farms: its backend would have no server to send sessions to")]
    NoFarms { site: String },
    #[error("farm `{farm}` has no nodes: its listener could never report itself up")]
    FarmWithoutNodes { farm: String },
    #[error(
        "farm `{farm}` has no `lb.listen`: the site backend's pseudo-server `{server}` needs the \
         host:port of the farm's listener on the LB host; add e.g. `lb: {{ listen: \"127.0.0.1:8101\" }}` \
         to the farm (one fixed port per farm, see docs/haproxy-semantics.md)"
    )]
    FarmWithoutListen { farm: String, server: String },
    #[error(
        "farm `{farm}`: `lb.listen: {listen}` is a wildcard address; the site backend connects to it, \
         so give a concrete address such as 127.0.0.1"
    )]
    WildcardListen { farm: String, listen: String },
    #[error("site `{site}`: `lb.bind: {bind}` is not host:port")]
    BadBind { site: String, bind: String },
    #[error("site `{site}`: {first} and {second} both bind {addr}")]
    AddressClash { site: String, first: String, second: String, addr: String },
    #[error("site `{site}`: the name `{name}` is used by both {first} and {second}")]
    NameClash { site: String, name: String, first: String, second: String },
}

/// The complete HAProxy configuration of `site`'s LB.
pub fn haproxy_config(fleet: &Fleet, site: SiteId) -> Result<String, RenderError> {
    let s = fleet.sites.get(site as usize).ok_or(RenderError::NoSuchSite(site))?;
    if s.farms.is_empty() {
        return Err(RenderError::NoFarms { site: s.name.clone() });
    }
    let farms: Vec<_> = s.farms.iter().map(|&f| &fleet.farms[f as usize]).collect();

    // Everything that can be wrong is checked before anything is written.
    let mut listens = Vec::with_capacity(farms.len());
    for farm in &farms {
        if farm.nodes.is_empty() {
            return Err(RenderError::FarmWithoutNodes { farm: farm.name.clone() });
        }
        let Some((host, port)) = &farm.lb_listen else {
            return Err(RenderError::FarmWithoutListen { farm: farm.name.clone(), server: farm.lb_server.clone() });
        };
        if is_wildcard(host) {
            return Err(RenderError::WildcardListen { farm: farm.name.clone(), listen: endpoint(host, *port) });
        }
        listens.push((host.as_str(), *port));
    }
    let (bind_host, bind_port) = parse_endpoint(&s.lb.bind)
        .map_err(|_| RenderError::BadBind { site: s.name.clone(), bind: s.lb.bind.clone() })?;

    let mut binds: Vec<(String, &str, u16)> = vec![("the frontend".into(), &bind_host, bind_port)];
    if let LbApi::Tcp { host, port } = &s.lb.api {
        binds.push(("the admin socket (admin_tcp)".into(), host, *port));
    }
    for (farm, (host, port)) in farms.iter().zip(&listens) {
        binds.push((format!("the listener of farm `{}`", farm.name), host, *port));
    }
    for (i, (what, host, port)) in binds.iter().enumerate() {
        if let Some((first, h, _)) =
            binds[..i].iter().find(|(_, h, p)| p == port && (h == host || is_wildcard(h) || is_wildcard(host)))
        {
            return Err(RenderError::AddressClash {
                site: s.name.clone(),
                first: first.clone(),
                second: what.clone(),
                addr: endpoint(if is_wildcard(h) { host } else { h }, *port),
            });
        }
    }

    // Section names share one namespace; server names must be unique in the
    // site backend (node names are unique fleet-wide already).
    let mut sections: Vec<(&str, String)> =
        vec![(FRONTEND, "the frontend".into()), (&s.lb.backend, "the site backend".into())];
    sections.extend(farms.iter().map(|f| (f.name.as_str(), format!("the listener of farm `{}`", f.name))));
    check_unique(&s.name, &sections)?;
    let servers: Vec<(&str, String)> =
        farms.iter().map(|f| (f.lb_server.as_str(), format!("the pseudo-server of farm `{}`", f.name))).collect();
    check_unique(&s.name, &servers)?;

    let node_capacity = |n: NodeId| u64::from(fleet.profiles[fleet.nodes[n as usize].profile as usize].capacity);
    let health = &fleet.policy.health;

    let mut out = String::new();
    let w = &mut out;
    // `write!` into a String cannot fail.
    let _ = writeln!(
        w,
        "# HAProxy configuration of site `{site}`, generated by `drover render haproxy --site {site}`.\n\
         # Do not edit: change the spec and render again. The layout and the HAProxy\n\
         # behaviour drover relies on are described in docs/haproxy-semantics.md.\n\
         #\n\
         # Runtime state set through the admin socket (drain, maint, weight) survives a\n\
         # reload only through the server-state file below: HAProxy reads it at start but\n\
         # never writes it, so dump `show servers state` into it right before every reload.\n",
        site = s.name
    );
    let _ = writeln!(w, "global");
    match &s.lb.api {
        // Owned by the SSH user drover logs into the LB host as, so it needs no sudo.
        LbApi::Ssh { socket, .. } => {
            let _ = writeln!(w, "    stats socket {socket} user {} mode 600 level admin", fleet.ssh.user);
        }
        // No authentication on a TCP admin socket: bind it to a management address only.
        LbApi::Tcp { host, port } => {
            let _ = writeln!(w, "    stats socket {} level admin", bind_addr(host, *port));
        }
    }
    let _ = writeln!(w, "    stats timeout 30s");
    let _ = writeln!(w, "    server-state-file {}", s.lb.state_file);
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "defaults\n\
         \x20   mode http\n\
         \x20   load-server-state-from-file global\n\
         \x20   retries 3\n\
         \x20   timeout connect 5s\n\
         \x20   timeout client 60s\n\
         \x20   timeout server 60s\n\
         \x20   timeout http-request 10s\n\
         \x20   timeout http-keep-alive 10s\n\
         \x20   timeout check 5s\n"
    );
    let _ = writeln!(
        w,
        "frontend {FRONTEND}\n\
         \x20   bind {}\n\
         \x20   option forwardfor\n\
         \x20   default_backend {}\n",
        bind_addr(&bind_host, bind_port),
        s.lb.backend
    );
    let _ = writeln!(
        w,
        "# One pseudo-server per farm carries the farm cookie: weight 0 or drain keeps the\n\
         # farm's sessions and sends it no new ones; maint (or the farm reporting itself\n\
         # down) hands its sessions to the farms still taking new ones, with a new cookie.\n\
         backend {}\n\
         \x20   balance roundrobin\n\
         \x20   option redispatch\n\
         \x20   cookie {FARM_COOKIE} insert indirect nocache\n\
         \x20   option httpchk GET {FARM_UP_URI}\n\
         \x20   http-check expect status 200\n\
         \x20   default-server check inter 1s fall 1 rise 2",
        s.lb.backend
    );
    // The weight the planner restores (`Farm::lb_weight`), so that a farm
    // drover put back is indistinguishable from a freshly started LB.
    for (farm, (host, port)) in farms.iter().zip(&listens) {
        let _ = writeln!(
            w,
            "    server {name} {addr} cookie {name} weight {weight}",
            name = farm.lb_server,
            addr = endpoint(host, *port),
            weight = farm.lb_weight
        );
    }
    for (farm, (host, port)) in farms.iter().zip(&listens) {
        let caps: Vec<u64> = farm.nodes.iter().map(|&n| node_capacity(n)).collect();
        let max_cap = caps.iter().copied().max().unwrap_or(1);
        let _ = writeln!(
            w,
            "\n# Farm `{name}`: round robin over its nodes; `{FARM_UP_URI}` fails when none is usable.\n\
             listen {name}\n\
             \x20   bind {bind}\n\
             \x20   monitor-uri {FARM_UP_URI}\n\
             \x20   monitor fail if {{ nbsrv lt 1 }}\n\
             \x20   balance roundrobin\n\
             \x20   option redispatch\n\
             \x20   option httpchk GET {path}\n\
             \x20   http-check expect status {status}\n\
             \x20   default-server check inter 1s fall 2 rise 2",
            name = farm.name,
            bind = bind_addr(host, *port),
            path = health.path,
            status = health.expect_status,
        );
        for (&n, cap) in farm.nodes.iter().zip(&caps) {
            let node = &fleet.nodes[n as usize];
            let _ = writeln!(
                w,
                "    server {} {} weight {}{}",
                node.name,
                endpoint(&node.address, node.http_port),
                relative_weight(*cap, max_cap),
                init_addr(&node.address)
            );
        }
    }
    Ok(out)
}

/// New sessions are shared in proportion to capacity: weight 1..=100 relative
/// to the biggest server of the same proxy (uniform farms are all 100).
/// drover restores a weight with `set weight <b>/<s> 100%` (of this value).
fn relative_weight(cap: u64, max: u64) -> u64 {
    if max == 0 {
        return 100;
    }
    ((cap * 100 + max / 2) / max).clamp(1, 100)
}

fn check_unique(site: &str, names: &[(&str, String)]) -> Result<(), RenderError> {
    for (i, (name, what)) in names.iter().enumerate() {
        if let Some((_, first)) = names[..i].iter().find(|(n, _)| n == name) {
            return Err(RenderError::NameClash {
                site: site.to_string(),
                name: name.to_string(),
                first: first.clone(),
                second: what.clone(),
            });
        }
    }
    Ok(())
}

fn is_wildcard(host: &str) -> bool {
    matches!(host, "0.0.0.0" | "::" | "*")
}

/// `host:port` as HAProxy reads it on a `server` line (IPv6 in brackets).
fn endpoint(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// What a server given by DNS name needs so that HAProxy starts without
/// resolving it: the address kept in the server-state file, else the
/// resolver's, else none (the server stays down until a later start resolves
/// it) instead of refusing the whole configuration. No `resolvers` section:
/// names are resolved at start only. Nothing for an IP address.
fn init_addr(address: &str) -> &'static str {
    if address.parse::<std::net::IpAddr>().is_ok() { "" } else { " init-addr last,libc,none" }
}

/// An address to listen on; IPv4 and IPv6 literals carry their family so
/// HAProxy never has to guess.
fn bind_addr(host: &str, port: u16) -> String {
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => format!("ipv4@{host}:{port}"),
        Ok(std::net::IpAddr::V6(_)) => format!("ipv6@{host}:{port}"),
        Err(_) => format!("{host}:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{SourceFile, validate};

    /// A small fleet: two farms of different capacity, IPv4 and IPv6 nodes.
    const SPEC: &str = r#"
fleet:
  defaults: { packages: [base], php: "8.3.14", release: "2026.11.2" }
  policy:
    health: { path: /healthz, expect_status: 200 }
    preproduction: { waive_gate: true }
    site_capacity_floor: 0.0
  ssh: { user: drover }
  http_port: 8080
profiles:
  - { name: small, binhost: "https://binhost.example.net/small", init: openrc, capacity: 400 }
  - { name: big, binhost: "https://binhost.example.net/big", init: openrc, capacity: 800 }
package_sets:
  - { name: base, atoms: [app-arch/tar-1.35] }
sites:
  - name: par1
    environment: production
    lb: { host: lb1.par1.example.net, socket: /run/haproxy/admin.sock, bind: "10.1.0.1:80" }
  - name: fra1
    environment: production
    lb: { admin_tcp: "10.2.0.1:9999", bind: "0.0.0.0:80", backend: fra1-site, state_file: /var/lib/haproxy/fra1.state }
farms:
  - name: par1-f01
    site: par1
    lb: { listen: "127.0.0.1:8101" }
    nodes:
      - { name: par1-f01-n01, address: 10.1.1.11, member: 1, profile: small }
      - { name: par1-f01-n02, address: 10.1.1.12, member: 2, profile: big }
  - name: par1-f02
    site: par1
    lb: { listen: "127.0.0.1:8102", server: f02 }
    nodes:
      - { name: par1-f02-n01, address: "fd00::21", member: 1, profile: big, http_port: 80 }
      - { name: par1-f02-n02, address: web22.par1.example.net, member: 2, profile: big }
  - name: fra1-f01
    site: fra1
    lb: { listen: "127.0.0.1:8101" }
    nodes:
      - { name: fra1-f01-n01, address: 10.2.1.11, member: 1, profile: small }
      - { name: fra1-f01-n02, address: 10.2.1.12, member: 2, profile: small }
  - name: fra1-f02
    site: fra1
    lb: { listen: "127.0.0.1:8102" }
    nodes:
      - { name: fra1-f02-n01, address: 10.2.2.11, member: 1, profile: small }
      - { name: fra1-f02-n02, address: 10.2.2.12, member: 2, profile: small }
"#;

    fn fleet(text: &str) -> Fleet {
        let files = [SourceFile { path: "fleet.yaml".into(), text: text.into() }];
        match validate::check(&files) {
            Ok(f) => f,
            Err(d) => panic!("test spec is invalid: {d:#?}"),
        }
    }

    /// The first error validation gives (a clash it catches before rendering).
    fn invalid(text: &str) -> String {
        let files = [SourceFile { path: "fleet.yaml".into(), text: text.into() }];
        validate::check(&files).err().expect("the spec must be refused")[0].message.clone()
    }

    #[test]
    fn site_with_unix_admin_socket() {
        let f = fleet(SPEC);
        let site = f.site_by_name("par1").unwrap();
        insta::assert_snapshot!(haproxy_config(&f, site).unwrap());
    }

    #[test]
    fn site_with_tcp_admin_socket() {
        let f = fleet(SPEC);
        let site = f.site_by_name("fra1").unwrap();
        insta::assert_snapshot!(haproxy_config(&f, site).unwrap());
    }

    #[test]
    fn farm_without_listen_is_named() {
        let f = fleet(&SPEC.replace(r#"lb: { listen: "127.0.0.1:8102", server: f02 }"#, ""));
        let err = haproxy_config(&f, f.site_by_name("par1").unwrap()).unwrap_err();
        assert_eq!(err, RenderError::FarmWithoutListen { farm: "par1-f02".into(), server: "par1-f02".into() });
        assert!(err.to_string().contains("farm `par1-f02` has no `lb.listen`"));
    }

    #[test]
    fn listeners_must_not_share_an_address() {
        // Two farm listeners of a site: validation refuses the spec already.
        let err = invalid(&SPEC.replace("127.0.0.1:8102", "127.0.0.1:8101"));
        assert!(
            err.contains("farm `par1-f02` of site `par1` listens on `127.0.0.1:8101` like farm `par1-f01`"),
            "{err}"
        );
        // A wildcard frontend bind overlaps every address on its port:
        // validation refuses it too (spec/identity.rs), as an admin endpoint
        // on a listener's socket.
        let err = invalid(&SPEC.replace("10.1.0.1:80", "0.0.0.0:8101"));
        assert!(err.contains("which the wildcard `0.0.0.0:8101` of the frontend of site `par1` also takes"), "{err}");
        let err = invalid(&SPEC.replace("10.2.0.1:9999", "127.0.0.1:8101"));
        assert!(err.contains("like the admin endpoint of site `fra1`"), "{err}");
        // Rendering keeps its own check of the three, for a fleet built otherwise.
        let mut f = fleet(SPEC);
        let par1 = f.site_by_name("par1").unwrap();
        f.sites[par1 as usize].lb.bind = "0.0.0.0:8101".into();
        let err = haproxy_config(&f, par1).unwrap_err();
        assert!(matches!(&err, RenderError::AddressClash { first, .. } if first == "the frontend"), "{err}");
    }

    #[test]
    fn wildcard_listen_is_refused() {
        let f = fleet(&SPEC.replace("127.0.0.1:8102", "0.0.0.0:8102"));
        let err = haproxy_config(&f, f.site_by_name("par1").unwrap()).unwrap_err();
        assert!(matches!(err, RenderError::WildcardListen { .. }), "{err}");
    }

    #[test]
    fn names_must_not_clash() {
        // A farm named like the site backend.
        let f = fleet(&SPEC.replace("backend: fra1-site", "backend: fra1-f01"));
        let err = haproxy_config(&f, f.site_by_name("fra1").unwrap()).unwrap_err();
        assert!(matches!(&err, RenderError::NameClash { name, .. } if name == "fra1-f01"), "{err}");
        // Two farms whose pseudo-servers (and cookies) would be the same:
        // validation refuses it (drover would take both out as one).
        let err = invalid(&SPEC.replace("server: f02", "server: par1-f01"));
        assert!(err.contains("farm `par1-f02` has the LB server `par1-f01` of farm `par1-f01`"), "{err}");
    }

    #[test]
    fn unknown_site_is_an_error() {
        let f = fleet(SPEC);
        assert_eq!(haproxy_config(&f, 99), Err(RenderError::NoSuchSite(99)));
    }

    #[test]
    fn weights_follow_capacity() {
        assert_eq!(relative_weight(800, 800), 100);
        assert_eq!(relative_weight(400, 800), 50);
        assert_eq!(relative_weight(1, 100_000), 1);
        assert_eq!(relative_weight(0, 0), 100);
    }
}
