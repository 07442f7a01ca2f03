//! Bounds on what a spec may ask of the host that reads it.
//!
//! The spec repository is untrusted input: written by many people and, with
//! `--git`, fetched from a remote. These limits keep a hostile or mistyped
//! spec from exhausting the daemon host (memory, CPU) or reaching commands
//! with values no command line could carry. Every bound is documented in the
//! README ("Trust boundary and limits"). Pure: no I/O (`load_dir` applies the
//! size limits to file metadata before reading).

use super::diag::Diagnostic;
use super::file::*;
use super::located::{Pos, Sp};

/// Largest spec file read.
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// Largest total size of the spec files of one spec directory.
pub const MAX_TOTAL_BYTES: u64 = 32 * 1024 * 1024;
/// Most spec files in one spec directory.
pub const MAX_FILES: usize = 1000;
/// Deepest directory nesting walked under the spec directory.
pub const MAX_DEPTH: usize = 16;
/// Longest string value (bytes). Linux takes at most 128 KiB in one command
/// argument (MAX_ARG_STRLEN); no value drover passes to a command or an LB
/// configuration needs more than a few hundred bytes.
pub const MAX_STRING_BYTES: usize = 4096;
/// Longest `disruptive` `match` pattern (a `category/package` glob).
pub const MAX_PATTERN_BYTES: usize = 256;
/// Largest count a policy may name (nodes out at once, failure budget).
pub const MAX_COUNT: u32 = 1_000_000;
/// Most health-check attempts and releases kept.
pub const MAX_SMALL_COUNT: u32 = 100;
/// Largest session capacity of one node.
pub const MAX_NODE_CAPACITY: u32 = 1_000_000;
/// Most simulated sessions per site (each is simulated one by one).
pub const MAX_SESSIONS_PER_SITE: u32 = 1_000_000;
/// Longest timeout (drain, unreachable, health check).
pub const MAX_TIMEOUT_S: u64 = 7 * 24 * 3600;
/// Longest preproduction soak.
pub const MAX_SOAK_S: u64 = 365 * 24 * 3600;

/// Refuses a string value longer than `MAX_STRING_BYTES`, at parse time (so
/// at its own line and column, whatever field it is in).
pub fn string_value(s: &str) -> Result<(), String> {
    if s.len() > MAX_STRING_BYTES {
        return Err(format!(
            "a value of {} bytes is longer than the {MAX_STRING_BYTES} bytes drover accepts in a spec value",
            s.len()
        ));
    }
    Ok(())
}

/// Every numeric range of one parsed spec file.
pub fn check(file: &str, spec: &SpecFile) -> Vec<Diagnostic> {
    let mut c = Checks { file, out: Vec::new() };
    if let Some(f) = &spec.fleet {
        // http_port 0 is refused with its own message by validation.
        c.port(&f.ssh.port, "ssh.port");
        c.policy(&f.policy);
    }
    for p in &spec.profiles {
        c.at_most(&p.capacity, MAX_NODE_CAPACITY, "profile capacity");
    }
    for s in &spec.sites {
        c.port(&s.lb.ssh_port, "lb.ssh_port");
    }
    for fm in &spec.farms {
        c.at_most(&fm.max_unavailable, MAX_COUNT, "max_unavailable");
        for n in &fm.nodes {
            c.port(&n.ssh_port, "ssh_port");
        }
        if let Some(p) = &fm.node_pattern {
            c.port(&p.ssh_port, "ssh_port");
            c.node_pattern(p);
        }
    }
    if let Some(sim) = &spec.simulation {
        c.at_most(&sim.sessions_per_site, MAX_SESSIONS_PER_SITE, "sessions_per_site");
    }
    c.out
}

struct Checks<'a> {
    file: &'a str,
    out: Vec<Diagnostic>,
}

impl Checks<'_> {
    fn err(&mut self, pos: Pos, msg: String, hint: String) {
        self.out.push(Diagnostic::new(self.file, pos, msg, Some(hint)));
    }

    fn port(&mut self, p: &Option<Sp<u16>>, what: &str) {
        if let Some(p) = p
            && p.value == 0
        {
            self.err(p.pos, format!("{what} 0 is not a port"), "a port is 1 to 65535".into());
        }
    }

    fn at_most(&mut self, v: &Option<Sp<u32>>, max: u32, what: &str) {
        if let Some(v) = v
            && v.value > max
        {
            self.err(v.pos, format!("{what} {} is out of range", v.value), format!("{what} is at most {max}"));
        }
    }

    fn duration(&mut self, v: &Option<Sp<String>>, max_s: u64, zero_ok: bool, what: &str) {
        let Some(v) = v else {
            return;
        };
        // A malformed duration is reported by validation; only the range is checked here.
        let Ok(d) = humantime::parse_duration(v) else {
            return;
        };
        if d.as_secs() > max_s || (!zero_ok && d.is_zero()) {
            let max = humantime::format_duration(std::time::Duration::from_secs(max_s));
            let low = if zero_ok { "0" } else { "more than 0" };
            self.err(v.pos, format!("{what} {:?} is out of range", v.value), format!("{what} is {low} to {max}"));
        }
    }

    fn policy(&mut self, p: &PolicySpec) {
        for r in &p.disruptive {
            if r.pattern.len() > MAX_PATTERN_BYTES {
                self.err(
                    r.pattern.pos,
                    format!("package pattern of {} bytes is too long", r.pattern.len()),
                    format!("a `category/package` pattern is at most {MAX_PATTERN_BYTES} bytes"),
                );
            }
        }
        self.at_most(&p.max_unavailable, MAX_COUNT, "max_unavailable");
        self.at_most(&p.max_farms_down, MAX_COUNT, "max_farms_down");
        self.at_most(&p.failure_budget, MAX_COUNT, "failure_budget");
        self.at_most(&p.releases_kept, MAX_SMALL_COUNT, "releases_kept");
        self.at_most(&p.health.retries, MAX_SMALL_COUNT, "health.retries");
        self.at_most(&p.health.requests, MAX_SMALL_COUNT, "health.requests");
        if let Some(r) = &p.health.requests
            && r.value == 0
        {
            self.err(r.pos, "health.requests 0 would never ask PHP".into(), "send at least 1 request".into());
        }
        if let Some(r) = &p.health.retries
            && r.value == 0
        {
            self.err(r.pos, "health.retries 0 would never check a node".into(), "make at least 1 attempt".into());
        }
        self.duration(&p.drain_timeout, MAX_TIMEOUT_S, true, "drain_timeout");
        self.duration(&p.unreachable_timeout, MAX_TIMEOUT_S, true, "unreachable_timeout");
        self.duration(&p.health.timeout, MAX_TIMEOUT_S, false, "health.timeout");
        self.duration(&p.preproduction.soak, MAX_SOAK_S, true, "soak");
    }

    /// A pattern's members and the numbers its placeholders print must fit
    /// in 32 bits: an overflow used to end the farm early, without a word.
    fn node_pattern(&mut self, p: &NodePatternSpec) {
        let first = p.first_member.as_ref().map_or(1, |m| m.value);
        if p.count.value == 0 {
            return; // validation says the count is out of range
        }
        let last = first as u64 + p.count.value as u64 - 1;
        let Ok(last) = u32::try_from(last) else {
            let pos = p.first_member.as_ref().map_or(p.count.pos, |m| m.pos);
            self.err(
                pos,
                format!("members {first} to {last} do not fit the member index range"),
                format!("the last member (first_member + count - 1) is at most {}", u32::MAX),
            );
            return;
        };
        for pat in [&p.name, &p.address] {
            if let (Ok(_), Err(e)) = (super::validate::expand(pat, first), super::validate::expand(pat, last)) {
                self.err(
                    pat.pos,
                    format!("pattern {:?} cannot name member {last}: {e}", pat.value),
                    "lower the offset in `{member+N}` or first_member".into(),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::SourceFile;

    fn errors(text: &str) -> Vec<(u32, u32, String)> {
        let f = SourceFile { path: "s.yaml".into(), text: text.into() };
        let spec = crate::spec::validate::parse_file(&f).map_err(|d| d.message).unwrap();
        check("s.yaml", &spec).into_iter().map(|d| (d.line, d.column, d.message)).collect()
    }

    #[test]
    fn ports_counts_and_durations_are_bounded_at_their_position() {
        let e = errors(
            "fleet:\n  http_port: 0\n  ssh: { port: 0 }\n  policy:\n    health: { retries: 0, timeout: 0s }\n    drain_timeout: 5000000h\n    releases_kept: 1000\nsimulation:\n  sessions_per_site: 4000000000\n",
        );
        let msgs: Vec<String> = e.iter().map(|(l, c, m)| format!("{l}:{c} {m}")).collect();
        for want in [
            "3:16 ssh.port 0 is not a port",
            "5:24 health.retries 0",
            "5:36 health.timeout \"0s\" is out of range",
            "6:20 drain_timeout \"5000000h\" is out of range",
            "7:20 releases_kept 1000 is out of range",
            "9:22 sessions_per_site 4000000000 is out of range",
        ] {
            assert!(msgs.iter().any(|m| m.starts_with(want)), "{want} not in {msgs:#?}");
        }
    }

    #[test]
    fn pattern_arithmetic_that_overflows_is_an_error_not_a_shorter_farm() {
        let farm = |first: u32, addr: &str| {
            format!(
                "farms:\n  - name: f\n    site: s\n    node_pattern:\n      count: 4\n      first_member: {first}\n      name: \"n{{member}}\"\n      address: \"{addr}\"\n      profile: p\n"
            )
        };
        let e = errors(&farm(u32::MAX - 1, "10.0.0.{member}"));
        assert!(e.iter().any(|(l, _, m)| *l == 6 && m.contains("do not fit")), "{e:?}");
        let e = errors(&farm(1, "h{member+4294967294}.example.net"));
        assert!(e.iter().any(|(l, _, m)| *l == 8 && m.contains("cannot name member 4")), "{e:?}");
        assert!(errors(&farm(1, "10.0.0.{member+10}")).is_empty());
    }
}
