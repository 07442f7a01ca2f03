//! One object, one identity: canonical forms of hosts and sockets, and the
//! registry validation uses to refuse two spec objects that are one thing
//! on the network under two spellings.
//!
//! What identifies what (README, "Spec format", says the same):
//! - a host: its IP address, IPv4-mapped IPv6 (`::ffff:10.1.1.11`) being the
//!   IPv4 address and every IPv6 spelling (`2001:DB8:0:0::1`) the same
//!   address; `localhost` is `127.0.0.1`; a DNS name compares without case and
//!   without a trailing dot. Names are not resolved (validation is pure), so
//!   a name and an address of the same machine are not caught;
//! - a node, as drover reaches it: host and SSH port; as a web server (LB
//!   server line, health check): host and HTTP port. Both must be unique in
//!   the fleet, so two nodes on one address need their own SSH *and* HTTP
//!   ports (containers behind one address), and a node written twice with
//!   only the SSH port changed is refused;
//! - a memcached: host and port. drover flushes a farm's memcached before
//!   every switch, so an endpoint shared by two farms would wipe the other
//!   farm's sessions: there is no opt-in;
//! - an LB host: the host of `lb.host`, or of `lb.admin_tcp`; every loopback
//!   address is the one host drover runs on. Farm listeners (`lb.listen`) are
//!   sockets on their site's LB host: two sockets clash when their ports are
//!   equal and their addresses are equal or one is a wildcard (`0.0.0.0`,
//!   `::`), which HAProxy would both bind (SO_REUSEPORT) and split traffic
//!   between. A farm listener is compared with every listener, frontend bind
//!   and admin endpoint of every site on the same LB host.
//!
//! Pure: no I/O, no name resolution.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use super::located::Pos;

/// A host in canonical form.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    Ip(IpAddr),
    /// A DNS name, lower case, without a trailing dot.
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(n) => f.write_str(n),
        }
    }
}

impl Host {
    /// `0.0.0.0` or `::`: a listener there takes every address of its port.
    pub fn is_wildcard(&self) -> bool {
        matches!(self, Host::Ip(ip) if ip.is_unspecified())
    }

    fn is_loopback(&self) -> bool {
        matches!(self, Host::Ip(ip) if ip.is_loopback())
    }
}

/// The canonical form of a host as written in a spec (an IPv6 address may
/// be in brackets).
pub fn canonical_host(s: &str) -> Host {
    let s = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(s);
    let s = s.strip_suffix('.').filter(|r| !r.is_empty()).unwrap_or(s);
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Host::Ip(match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        });
    }
    let name = s.to_ascii_lowercase();
    if name == "localhost" { Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)) } else { Host::Name(name) }
}

/// `host:port` as HAProxy and people read it (IPv6 in brackets).
fn endpoint(host: &Host, port: u16) -> String {
    match host {
        Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
        h => format!("{h}:{port}"),
    }
}

/// The machine a site's LB runs on (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LbHost {
    /// The host drover runs on: every loopback address.
    Local,
    Remote(Host),
}

impl LbHost {
    pub fn of(api_host: &str) -> LbHost {
        let h = canonical_host(api_host);
        if h.is_loopback() { LbHost::Local } else { LbHost::Remote(h) }
    }
}

impl fmt::Display for LbHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LbHost::Local => f.write_str("the local host (loopback)"),
            LbHost::Remote(h) => write!(f, "`{h}`"),
        }
    }
}

/// Who holds an identity first: a description ("node `web1`"), the value as
/// written, and where.
#[derive(Clone, Debug)]
pub struct Holder {
    pub what: String,
    pub written: String,
    pub file: String,
    pub pos: Pos,
}

impl Holder {
    pub fn new(what: impl Into<String>, written: impl Into<String>, file: &str, pos: Pos) -> Self {
        Holder { what: what.into(), written: written.into(), file: file.to_string(), pos }
    }
    fn at(&self) -> String {
        format!("{}:{}:{}", self.file, self.pos.line, self.pos.col)
    }
}

/// Why a spec object was refused: message and hint, reported at the
/// position of the object being added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clash {
    pub message: String,
    pub hint: String,
}

/// How the two were written, when they were spelled differently.
fn spelled(first: &Holder, written: &str) -> String {
    if first.written == written {
        String::new()
    } else {
        format!(" (written `{written}` here, `{}` there)", first.written)
    }
}

/// A listening socket on an LB host.
#[derive(Clone, Debug)]
struct Socket {
    host: Host,
    port: u16,
    holder: Holder,
    /// Farm listeners are compared with everything; frontend binds and admin
    /// endpoints only with farm listeners (see the module documentation).
    listener: bool,
}

/// Every identity claimed so far in one validation pass.
#[derive(Default)]
pub struct Registry {
    ssh: HashMap<(Host, u16), Holder>,
    web: HashMap<(Host, u16), Holder>,
    memcached: HashMap<(Host, u16), Holder>,
    sockets: HashMap<LbHost, Vec<Socket>>,
}

impl Registry {
    /// A node reached over SSH at `address:ssh_port` serving HTTP at
    /// `address:http_port`. The node is recorded only when it clashes with
    /// nothing.
    pub fn node(&mut self, address: &str, ssh_port: u16, http_port: u16, by: Holder) -> Option<Clash> {
        let host = canonical_host(address);
        let shown = endpoint(&host, ssh_port);
        if let Some(first) = self.ssh.get(&(host.clone(), ssh_port)) {
            return Some(Clash {
                message: format!(
                    "{} has the SSH endpoint `{shown}` of {}{} (first at {})",
                    by.what,
                    first.what,
                    spelled(first, address),
                    first.at()
                ),
                hint:
                    "a node is one machine: host and SSH port identify it; two spellings of one address are one address"
                        .into(),
            });
        }
        let web = endpoint(&host, http_port);
        if let Some(first) = self.web.get(&(host.clone(), http_port)) {
            return Some(Clash {
                message: format!(
                    "{} serves HTTP at `{web}`, the web server of {}{} (first at {})",
                    by.what,
                    first.what,
                    spelled(first, address),
                    first.at()
                ),
                hint: "address and HTTP port identify a web server: the LB and the health checks would reach one server for two nodes; give each node its own address or http_port"
                    .into(),
            });
        }
        self.ssh.insert((host.clone(), ssh_port), by.clone());
        self.web.insert((host, http_port), by);
        None
    }

    /// A memcached endpoint of a farm (`by.what` names the farm).
    pub fn memcached(&mut self, host: &str, port: u16, by: Holder) -> Option<Clash> {
        let h = canonical_host(host);
        let shown = endpoint(&h, port);
        if let Some(first) = self.memcached.get(&(h.clone(), port)) {
            let message = if first.what == by.what {
                format!(
                    "{} lists the memcached `{shown}` twice{} (first at {})",
                    by.what,
                    spelled(first, &by.written),
                    first.at()
                )
            } else {
                format!(
                    "{} shares the memcached `{shown}` with {}{} (first at {})",
                    by.what,
                    first.what,
                    spelled(first, &by.written),
                    first.at()
                )
            };
            return Some(Clash {
                message,
                hint: "drover flushes a farm's memcached before every switch, which would wipe the sessions of the other farm: give each farm its own memcached"
                    .into(),
            });
        }
        self.memcached.insert((h, port), by);
        None
    }

    /// A socket on `lb`: a farm listener (`listener`), or a site's frontend
    /// bind or admin endpoint.
    pub fn socket(&mut self, lb: &LbHost, host: &str, port: u16, listener: bool, by: Holder) -> Option<Clash> {
        let h = canonical_host(host);
        let on = self.sockets.entry(lb.clone()).or_default();
        let clash = on.iter().find(|s| {
            (listener || s.listener) && s.port == port && (s.host == h || s.host.is_wildcard() || h.is_wildcard())
        });
        if let Some(first) = clash {
            let (ep, first_ep) = (endpoint(&h, port), endpoint(&first.host, first.port));
            let how = if first.host == h {
                format!("listens on `{ep}` like {}{}", first.holder.what, spelled(&first.holder, &by.written))
            } else if first.host.is_wildcard() {
                format!("listens on `{ep}`, which the wildcard `{first_ep}` of {} also takes", first.holder.what)
            } else {
                format!("listens on the wildcard `{ep}`, which takes `{first_ep}` of {} too", first.holder.what)
            };
            return Some(Clash {
                message: format!("{} {how} on LB host {lb} (first at {})", by.what, first.holder.at()),
                hint: "HAProxy would bind both (SO_REUSEPORT) and split one's connections into the other, breaking farm stickiness: give each farm listener its own address and port on its LB host (`0.0.0.0` and `::` take every address of their port)"
                    .into(),
            });
        }
        on.push(Socket { host: h, port, holder: by, listener });
        None
    }
}

/// The message for a key written twice in one YAML mapping (refused by the
/// parser: a second `simulation:` would silently replace the first), naming
/// the first occurrence when it is a block-style key at the same column.
pub fn duplicate_key(text: &str, key: &str, line: u32, col: u32) -> String {
    match first_block_key(text, key, line, col) {
        Some(first) => format!("`{key}` is written twice in this mapping (first at line {first}, column {col})"),
        None => format!("`{key}` is written twice in this mapping"),
    }
}

fn first_block_key(text: &str, key: &str, line: u32, col: u32) -> Option<u32> {
    let lines: Vec<&str> = text.lines().collect();
    let want = col.checked_sub(1)? as usize;
    for n in (0..(line as usize).saturating_sub(1).min(lines.len())).rev() {
        let l = lines[n];
        // The column of the line's first key, after any `- ` of a sequence item.
        let start = l.find(|c: char| c != ' ' && c != '-').unwrap_or(l.len());
        let rest = &l[start..];
        if rest.is_empty() || rest.starts_with('#') {
            continue;
        }
        if start < want {
            return None; // the mapping started after this line
        }
        if start == want {
            let quoted = [format!("{key}:"), format!("\"{key}\":"), format!("'{key}':")];
            if quoted.iter().any(|q| rest.starts_with(q.as_str())) {
                return Some(n as u32 + 1);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(what: &str, written: &str) -> Holder {
        Holder::new(what, written, "f.yaml", Pos { line: 1, col: 1, ..Pos::default() })
    }

    #[test]
    fn a_duplicate_key_names_its_first_occurrence() {
        let text =
            "fleet:\n  http_port: 80\nsimulation: {}\nfarms:\n  - name: a\n    site: s\n    name: b\nsimulation: {}\n";
        assert_eq!(
            duplicate_key(text, "simulation", 8, 1),
            "`simulation` is written twice in this mapping (first at line 3, column 1)"
        );
        assert_eq!(
            duplicate_key(text, "name", 7, 5),
            "`name` is written twice in this mapping (first at line 5, column 5)"
        );
        // Not in this mapping: `http_port` of another one is not named.
        assert_eq!(
            duplicate_key("a:\n  x: 1\nb:\n  x: 2\n  x: 3\n", "x", 5, 3),
            "`x` is written twice in this mapping (first at line 4, column 3)"
        );
        assert_eq!(duplicate_key("a: {x: 1, x: 2}\n", "x", 1, 11), "`x` is written twice in this mapping");
    }

    #[test]
    fn spellings_of_one_host_are_one_host() {
        assert_eq!(canonical_host("::ffff:10.1.1.11"), canonical_host("10.1.1.11"));
        assert_eq!(canonical_host("2001:DB8:0:0::1"), canonical_host("2001:db8::1"));
        assert_eq!(canonical_host("[2001:db8::1]"), canonical_host("2001:0db8:0000::0001"));
        assert_eq!(canonical_host("Web1.Example.NET."), canonical_host("web1.example.net"));
        assert_eq!(canonical_host("localhost"), canonical_host("127.0.0.1"));
        assert_ne!(canonical_host("10.1.1.11"), canonical_host("10.1.1.12"));
        assert_ne!(canonical_host("::1"), canonical_host("127.0.0.1"), "different sockets, one host");
        assert!(canonical_host("::").is_wildcard() && canonical_host("0.0.0.0").is_wildcard());
        assert!(canonical_host("::ffff:0.0.0.0").is_wildcard());
        assert_eq!(LbHost::of("127.0.0.2"), LbHost::of("::1"));
        assert_eq!(LbHost::of("LB1.example.net"), LbHost::of("lb1.example.net."));
        assert_ne!(LbHost::of("lb1.example.net"), LbHost::of("lb2.example.net"));
    }

    #[test]
    fn a_node_is_its_ssh_endpoint_and_its_web_server() {
        let mut r = Registry::default();
        assert!(r.node("10.1.1.11", 22, 80, h("node `a`", "10.1.1.11")).is_none());
        let c = r.node("::ffff:10.1.1.11", 22, 80, h("node `b`", "::ffff:10.1.1.11")).unwrap();
        assert!(
            c.message.contains(
                "SSH endpoint `10.1.1.11:22` of node `a` (written `::ffff:10.1.1.11` here, `10.1.1.11` there)"
            ),
            "{c:?}"
        );
        let c = r.node("10.1.1.11", 2222, 80, h("node `c`", "10.1.1.11")).unwrap();
        assert!(c.message.contains("serves HTTP at `10.1.1.11:80`, the web server of node `a`"), "{c:?}");
        // Own SSH and HTTP ports on one address: two containers, two nodes.
        assert!(r.node("10.1.1.11", 2222, 8080, h("node `d`", "10.1.1.11")).is_none());
        assert!(r.node("2001:db8::1", 22, 80, h("node `e`", "2001:db8::1")).is_none());
        let c = r.node("2001:DB8:0:0::1", 2200, 80, h("node `f`", "2001:DB8:0:0::1")).unwrap();
        assert!(c.message.contains("`[2001:db8::1]:80`"), "{c:?}");
    }

    #[test]
    fn memcached_endpoints_are_not_shared() {
        let mut r = Registry::default();
        assert!(r.memcached("localhost", 11211, h("farm `a`", "localhost:11211")).is_none());
        let c = r.memcached("127.0.0.1", 11211, h("farm `b`", "127.0.0.1:11211")).unwrap();
        assert!(c.message.contains("farm `b` shares the memcached `127.0.0.1:11211` with farm `a`"), "{c:?}");
        let c = r.memcached("127.0.0.1", 11211, h("farm `a`", "127.0.0.1:11211")).unwrap();
        assert!(c.message.contains("farm `a` lists the memcached `127.0.0.1:11211` twice"), "{c:?}");
        assert!(r.memcached("127.0.0.1", 11212, h("farm `b`", "127.0.0.1:11212")).is_none());
    }

    #[test]
    fn listeners_clash_on_one_lb_host_only() {
        let mut r = Registry::default();
        let local = LbHost::of("127.0.0.1");
        let remote = LbHost::of("lb1.example.net");
        assert!(r.socket(&local, "0.0.0.0", 80, false, h("the frontend of site `a`", "")).is_none());
        // Frontends and admin endpoints are compared with listeners only.
        assert!(r.socket(&local, "0.0.0.0", 80, false, h("the frontend of site `b`", "")).is_none());
        assert!(r.socket(&local, "127.0.0.1", 8101, true, h("farm `a`", "")).is_none());
        let c = r.socket(&local, "localhost", 8101, true, h("farm `b`", "")).unwrap();
        assert!(c.message.contains("listens on `127.0.0.1:8101` like farm `a` on LB host the local host"), "{c:?}");
        let c = r.socket(&local, "::", 8101, true, h("farm `c`", "")).unwrap();
        assert!(
            c.message.contains("listens on the wildcard `[::]:8101`, which takes `127.0.0.1:8101` of farm `a`"),
            "{c:?}"
        );
        let c = r.socket(&local, "10.0.0.1", 80, true, h("farm `d`", "")).unwrap();
        assert!(c.message.contains("which the wildcard `0.0.0.0:80` of the frontend of site `a` also takes"), "{c:?}");
        assert!(r.socket(&local, "127.0.0.2", 8101, true, h("farm `e`", "")).is_none());
        assert!(r.socket(&remote, "127.0.0.1", 8101, true, h("farm `f`", "")).is_none());
    }
}
