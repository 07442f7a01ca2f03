//! Strict parsers for every scalar in a spec that can reach a remote command
//! or an LB configuration: names, Gentoo atoms, PHP versions, release ids,
//! URLs, addresses, durations.
//!
//! Each parser returns a `ValueError` (message + hint) and never panics. The
//! accepted alphabets are small on purpose: nothing accepted here needs shell
//! quoting, so a value that slips past quoting still cannot run anything.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

/// Why a scalar was refused, with what to write instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueError {
    pub message: String,
    pub hint: String,
}

fn err(message: impl Into<String>, hint: impl Into<String>) -> ValueError {
    ValueError { message: message.into(), hint: hint.into() }
}

/// Names what is wrong with a character that may not appear in a value that
/// reaches remote commands, so the error says more than "invalid".
fn describe_bad_char(s: &str, allowed: impl Fn(char) -> bool) -> Option<String> {
    let c = s.chars().find(|&c| !allowed(c))?;
    let what = match c {
        ' ' | '\t' => "whitespace".to_string(),
        '\n' | '\r' => "a line break".to_string(),
        ';' | '&' | '|' => format!("the shell operator `{c}`"),
        '$' | '`' => format!("`{c}` (shell substitution)"),
        '\'' | '"' | '\\' => format!("the quote character `{c}`"),
        c if c.is_control() => format!("the control character U+{:04X}", c as u32),
        c => format!("the character `{c}`"),
    };
    Some(what)
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// A plain safe name (site, farm, node, profile, package set, service).
pub fn parse_name(kind: &str, s: &str) -> Result<String, ValueError> {
    let hint = format!(
        "a {kind} name is 1 to 63 characters of letters, digits, `.`, `_` and `-`, starting with a letter or digit"
    );
    if s.is_empty() {
        return Err(err(format!("empty {kind} name"), hint));
    }
    if let Some(bad) = describe_bad_char(s, name_char) {
        return Err(err(format!("{kind} name {s:?} contains {bad}"), hint));
    }
    if s.len() > 63 || !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(err(format!("invalid {kind} name {s:?}"), hint));
    }
    Ok(s.to_string())
}

/// A service name as given to `rc-service` or `systemctl` (`php-fpm`, `apache2`, `getty@tty1`).
pub fn parse_service(s: &str) -> Result<String, ValueError> {
    let hint = "a service name is letters, digits, `.`, `_`, `-` and `@`, e.g. `php-fpm` or `apache2`";
    if s.is_empty() || s.len() > 63 {
        return Err(err(format!("invalid service name {s:?}"), hint));
    }
    if let Some(bad) = describe_bad_char(s, |c| name_char(c) || c == '@') {
        return Err(err(format!("service name {s:?} contains {bad}"), hint));
    }
    if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(err(format!("invalid service name {s:?}"), hint));
    }
    Ok(s.to_string())
}

/// The name of a hook: an executable in a release's `bin/` (or the node's
/// `/etc/drover/hooks/`), never a path or a command.
pub fn parse_hook_name(s: &str) -> Result<String, ValueError> {
    let hint = "a hook is the file name of an executable in the release's bin/: 1 to 64 letters, digits, `.`, `_` and `-`, starting with a letter or digit, e.g. `migrate`";
    if let Some(bad) = describe_bad_char(s, name_char) {
        return Err(err(format!("hook name {s:?} contains {bad}"), hint));
    }
    if s.is_empty() || s.len() > 64 || !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(err(format!("invalid hook name {s:?}"), hint));
    }
    Ok(s.to_string())
}

/// An LVM size as `lvcreate --size` takes it: digits and one unit of
/// `kKmMgGtT`, e.g. `10G`.
pub fn parse_lvm_size(s: &str) -> Result<String, ValueError> {
    let hint = "write a size as digits and a unit (k, m, g, t), e.g. `10G`";
    let (digits, unit) = s.split_at(s.len().saturating_sub(1));
    let ok = !digits.is_empty()
        && digits.len() <= 9
        && digits.bytes().all(|b| b.is_ascii_digit())
        && digits.bytes().any(|b| b != b'0')
        && matches!(unit, "k" | "K" | "m" | "M" | "g" | "G" | "t" | "T");
    if !ok {
        return Err(err(format!("invalid snapshot size {s:?}"), hint));
    }
    Ok(s.to_string())
}

/// An LVM logical volume `vg/lv`.
pub fn parse_lvm_volume(s: &str) -> Result<(String, String), ValueError> {
    let hint = "write the root logical volume as `vg/lv`, e.g. `vg0/root`";
    let Some((vg, lv)) = s.split_once('/') else {
        return Err(err(format!("invalid logical volume {s:?}"), hint));
    };
    let part = |p: &str| {
        !p.is_empty()
            && p.len() <= 64
            && p.starts_with(|c: char| c.is_ascii_alphanumeric())
            && p.chars().all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
    };
    if !part(vg) || !part(lv) {
        return Err(err(format!("invalid logical volume {s:?}"), hint));
    }
    Ok((vg.to_string(), lv.to_string()))
}

/// A Gentoo package atom pinned to one exact version: `category/name-version`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Atom {
    // Shared strings: a fleet's 100,000 nodes share the few atoms it runs.
    pub category: Arc<str>,
    pub name: Arc<str>,
    pub version: Arc<str>,
}

impl Atom {
    /// `category/name`: the key under which a package is installed once.
    pub fn key(&self) -> String {
        format!("{}/{}", self.category, self.name)
    }

    /// `key == self.key()`, without allocating (hot in diffs of large fleets).
    pub fn key_is(&self, key: &str) -> bool {
        key.len() == self.category.len() + 1 + self.name.len()
            && key.starts_with(&*self.category)
            && key.as_bytes()[self.category.len()] == b'/'
            && key.ends_with(&*self.name)
    }
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}-{}", self.category, self.name, self.version)
    }
}

const ATOM_HINT: &str = "write an exact Gentoo atom as `category/package-version`, e.g. `dev-libs/openssl-3.0.15-r1` (no operator, no slot)";

/// PMS version syntax: `1.2.3`, `1.2.3b`, `6.6.58_p1`, `3.0.15-r1`, `2.41_rc2-r3`.
pub fn is_gentoo_version(v: &str) -> bool {
    let (main, rev) = match v.rsplit_once("-r") {
        Some((m, r)) if !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()) => (m, Some(r)),
        _ => (v, None),
    };
    let _ = rev;
    let mut parts = main.split('_');
    let Some(numeric) = parts.next() else {
        return false;
    };
    // numeric part: digits(.digits)* [a-z]?
    let (nums, letter) = match numeric.as_bytes().last() {
        Some(b) if b.is_ascii_lowercase() => (&numeric[..numeric.len() - 1], true),
        _ => (numeric, false),
    };
    let _ = letter;
    if nums.is_empty() || !nums.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    parts.all(|suffix| {
        ["alpha", "beta", "pre", "rc", "p"]
            .iter()
            .any(|k| suffix.strip_prefix(k).is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
    })
}

pub fn parse_atom(s: &str) -> Result<Atom, ValueError> {
    if let Some(bad) = describe_bad_char(s, |c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '+')) {
        return Err(err(format!("package atom {s:?} contains {bad}"), ATOM_HINT));
    }
    let Some((category, rest)) = s.split_once('/') else {
        return Err(err(
            format!("package atom {s:?} has no category (expected `category/package-version`)"),
            ATOM_HINT,
        ));
    };
    let cat_ok = !category.is_empty()
        && category.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && !rest.contains('/');
    if !cat_ok {
        return Err(err(format!("malformed category in package atom {s:?}"), ATOM_HINT));
    }
    // The version starts after the first `-` whose remainder is a valid version.
    let split = rest.match_indices('-').map(|(i, _)| i).find(|&i| is_gentoo_version(&rest[i + 1..]));
    let Some(i) = split else {
        return Err(err(format!("package atom {s:?} has no valid version"), ATOM_HINT));
    };
    let (name, version) = (&rest[..i], &rest[i + 1..]);
    if name.is_empty() || !name.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
        return Err(err(format!("malformed package name in atom {s:?}"), ATOM_HINT));
    }
    Ok(Atom { category: category.into(), name: name.into(), version: version.into() })
}

/// A PHP version as installed under `/opt/php/<version>`: `major.minor.patch`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PhpVersion(pub Arc<str>);

impl PhpVersion {
    fn parts(&self) -> Vec<u32> {
        self.0.split('.').filter_map(|p| p.parse().ok()).collect()
    }
}

impl Ord for PhpVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.parts().cmp(&other.parts())
    }
}
impl PartialOrd for PhpVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl fmt::Display for PhpVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn parse_php_version(s: &str) -> Result<PhpVersion, ValueError> {
    let hint = "write the full PHP version in quotes, e.g. php: \"8.3.14\"";
    let parts: Vec<&str> = s.split('.').collect();
    let ok = parts.len() == 3
        && parts.iter().all(|p| !p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit()));
    if !ok {
        return Err(err(format!("malformed PHP version {s:?} (expected major.minor.patch)"), hint));
    }
    Ok(PhpVersion(s.into()))
}

/// An application release id, rsynced into `releases/<id>`. Ordered naturally
/// (digit runs compare as numbers), so `2026.11.10` is newer than `2026.11.9`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReleaseId(pub Arc<str>);

impl ReleaseId {
    fn chunks(&self) -> Vec<Chunk<'_>> {
        let mut out = Vec::new();
        let s: &str = &self.0;
        let mut start = 0;
        let bytes = s.as_bytes();
        while start < bytes.len() {
            let digit = bytes[start].is_ascii_digit();
            let mut end = start;
            while end < bytes.len() && bytes[end].is_ascii_digit() == digit {
                end += 1;
            }
            let piece = &s[start..end];
            out.push(if digit {
                Chunk::Num(piece.trim_start_matches('0').len(), piece.trim_start_matches('0'))
            } else {
                Chunk::Text(piece)
            });
            start = end;
        }
        out
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Chunk<'a> {
    // (significant digits, digits): longer numbers are bigger, then lexical.
    Num(usize, &'a str),
    Text(&'a str),
}

impl Ord for ReleaseId {
    fn cmp(&self, other: &Self) -> Ordering {
        self.chunks().cmp(&other.chunks()).then_with(|| self.0.cmp(&other.0))
    }
}
impl PartialOrd for ReleaseId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl fmt::Display for ReleaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn parse_release_id(s: &str) -> Result<ReleaseId, ValueError> {
    let hint =
        "a release id is 1 to 64 letters, digits, `.`, `_` and `-`, starting with a letter or digit, e.g. `2026.11.2`";
    if let Some(bad) = describe_bad_char(s, name_char) {
        return Err(err(format!("release id {s:?} contains {bad}"), hint));
    }
    if s.is_empty() || s.len() > 64 || !s.starts_with(|c: char| c.is_ascii_alphanumeric()) || s.contains("..") {
        return Err(err(format!("invalid release id {s:?}"), hint));
    }
    Ok(ReleaseId(s.into()))
}

fn url_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '~' | '%' | '+' | '@')
}

/// A binhost or rsync source URL. Only `scheme://host[:port]/path` with a
/// plain alphabet: no query strings, no spaces, nothing a shell interprets.
pub fn parse_url(kind: &str, s: &str, schemes: &[&str]) -> Result<String, ValueError> {
    let hint = format!("write `{}://host/path` using letters, digits and `._-/:~%+@`", schemes.join("|"));
    if let Some(bad) = describe_bad_char(s, url_char) {
        return Err(err(format!("{kind} {s:?} contains {bad}"), hint));
    }
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err(err(format!("{kind} {s:?} is not a URL"), hint));
    };
    if !schemes.contains(&scheme) {
        return Err(err(format!("{kind} {s:?} uses scheme `{scheme}`, expected one of {}", schemes.join(", ")), hint));
    }
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || rest.contains("..") {
        return Err(err(format!("{kind} {s:?} has no host or contains `..`"), hint));
    }
    Ok(s.to_string())
}

/// A host name or IP address (no port).
pub fn parse_host(s: &str) -> Result<String, ValueError> {
    let hint = "write an IP address or a DNS name, e.g. `10.1.2.17` or `web17.par1.example.net`";
    if s.parse::<std::net::IpAddr>().is_ok() {
        return Ok(s.to_string());
    }
    if let Some(bad) = describe_bad_char(s, |c| c.is_ascii_alphanumeric() || c == '.' || c == '-') {
        return Err(err(format!("address {s:?} contains {bad}"), hint));
    }
    let labels_ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-'));
    // "10.1.1.300" is neither an IP address nor a DNS name (TLDs are not numeric).
    let numeric_tld = s.rsplit('.').next().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    if !labels_ok || numeric_tld {
        return Err(err(format!("malformed address {s:?}"), hint));
    }
    Ok(s.to_string())
}

/// `host:port` (IPv6 in brackets).
pub fn parse_endpoint(s: &str) -> Result<(String, u16), ValueError> {
    let hint = "write `host:port`, e.g. `10.1.2.5:11211` or `[fd00::5]:11211`";
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        match rest.split_once("]:") {
            Some((h, p)) => (h, p),
            None => return Err(err(format!("malformed endpoint {s:?}"), hint)),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, p),
            None => return Err(err(format!("endpoint {s:?} has no port"), hint)),
        }
    };
    let host = parse_host(host).map_err(|e| err(format!("endpoint {s:?}: {}", e.message), hint))?;
    let port: u16 = match port.parse() {
        Ok(p) if p > 0 => p,
        _ => return Err(err(format!("endpoint {s:?} has an invalid port"), hint)),
    };
    Ok((host, port))
}

/// An absolute path on a node or the LB host (`/run/haproxy/admin.sock`).
pub fn parse_abs_path(kind: &str, s: &str) -> Result<String, ValueError> {
    let hint = "write an absolute path of letters, digits and `._-/`";
    if let Some(bad) = describe_bad_char(s, |c| name_char(c) || c == '/') {
        return Err(err(format!("{kind} {s:?} contains {bad}"), hint));
    }
    if !s.starts_with('/') || s.split('/').any(|p| p == "..") {
        return Err(err(format!("{kind} {s:?} must be an absolute path without `..`"), hint));
    }
    Ok(s.to_string())
}

/// A duration as people write it: `90s`, `5m`, `1h 30m`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, ValueError> {
    humantime::parse_duration(s).map_err(|e| {
        err(format!("malformed duration {s:?}: {e}"), "write a duration with a unit, e.g. `30s`, `5m` or `1h 30m`")
    })
}

const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// A day of a change window: `mon` … `sun`, as Monday = 0 … Sunday = 6.
pub fn parse_weekday(s: &str) -> Result<u8, ValueError> {
    match WEEKDAYS.iter().position(|d| *d == s) {
        Some(i) => Ok(i as u8),
        None => Err(err(format!("unknown day {s:?}"), format!("write days as {}", WEEKDAYS.join(", ")))),
    }
}

/// A time of day `HH:MM` (24-hour, UTC) as minutes after midnight. `24:00`
/// (the end of the day) only when `end_of_day` is allowed.
pub fn parse_time_of_day(s: &str, end_of_day: bool) -> Result<u32, ValueError> {
    let hint = if end_of_day {
        "write a UTC time as \"HH:MM\" from \"00:00\" to \"24:00\", e.g. \"06:00\""
    } else {
        "write a UTC time as \"HH:MM\" from \"00:00\" to \"23:59\", e.g. \"02:00\""
    };
    let two_digits =
        |p: &str| if p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()) { p.parse::<u32>().ok() } else { None };
    let Some((h, m)) = s.split_once(':').and_then(|(h, m)| Some((two_digits(h)?, two_digits(m)?))) else {
        return Err(err(format!("malformed time {s:?} (expected HH:MM)"), hint));
    };
    if (h, m) == (24, 0) && end_of_day {
        return Ok(24 * 60);
    }
    if h > 23 || m > 59 {
        return Err(err(format!("time {s:?} does not exist"), hint));
    }
    Ok(h * 60 + m)
}

/// A `*` glob on `category/package`, as used by the disruptive-atom policy.
///
/// Linear in `pattern.len() + text.len()`: the pattern splits at its stars
/// into literal pieces; the first must start the text, the last must end
/// it, and each piece between is found at its leftmost place after the one
/// before (leftmost is always safe: a star absorbs whatever lies between),
/// with a KMP search that never steps back in the text. The textbook
/// backtracking matcher is O(pattern × text), minutes for a 2 KB pattern on
/// a 20 KB atom.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    glob_match_counting(pattern.as_bytes(), text.as_bytes(), &mut 0)
}

/// `glob_match`, adding to `steps` one per character comparison (the test of its bound).
fn glob_match_counting(p: &[u8], t: &[u8], steps: &mut u64) -> bool {
    let pieces: Vec<&[u8]> = p.split(|&b| b == b'*').collect();
    if pieces.len() == 1 {
        *steps += p.len().min(t.len()) as u64;
        return p == t;
    }
    let (first, last) = (pieces[0], pieces[pieces.len() - 1]);
    *steps += (first.len() + last.len()) as u64;
    if first.len() + last.len() > t.len() || !t.starts_with(first) || !t.ends_with(last) {
        return false;
    }
    let mut from = first.len();
    let end = t.len() - last.len();
    for piece in &pieces[1..pieces.len() - 1] {
        match find(piece, &t[from..end], steps) {
            Some(at) => from += at + piece.len(),
            None => return false,
        }
    }
    true
}

/// Leftmost `needle` in `hay` (Knuth-Morris-Pratt: at most 2·(needle + hay) comparisons).
fn find(needle: &[u8], hay: &[u8], steps: &mut u64) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    let mut fail = vec![0usize; needle.len()];
    let mut k = 0;
    for i in 1..needle.len() {
        while k > 0 && needle[i] != needle[k] {
            *steps += 1;
            k = fail[k - 1];
        }
        *steps += 1;
        if needle[i] == needle[k] {
            k += 1;
        }
        fail[i] = k;
    }
    let mut k = 0;
    for (i, &b) in hay.iter().enumerate() {
        while k > 0 && b != needle[k] {
            *steps += 1;
            k = fail[k - 1];
        }
        *steps += 1;
        if b == needle[k] {
            k += 1;
            if k == needle.len() {
                return Some(i + 1 - k);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atoms() {
        let a = parse_atom("dev-libs/openssl-3.0.15-r1").unwrap();
        assert_eq!((a.key().as_str(), &*a.version), ("dev-libs/openssl", "3.0.15-r1"));
        let a = parse_atom("sys-kernel/gentoo-kernel-bin-6.6.58").unwrap();
        assert_eq!(&*a.name, "gentoo-kernel-bin");
        assert_eq!(&*parse_atom("dev-lang/php-8.3.14_p1").unwrap().version, "8.3.14_p1");
        assert_eq!(&*parse_atom("app-misc/foo-1b").unwrap().version, "1b");
        for bad in [
            "openssl-3.0",
            "dev-libs/openssl",
            "dev-libs/openssl-",
            "=dev-libs/openssl-3.0",
            "www-servers/apache-2.4.62; rm -rf /",
            "dev-libs/openssl-$(id)",
            "a/b/c-1",
            "dev-libs/openssl-3.0.x",
            "/openssl-1",
        ] {
            assert!(parse_atom(bad).is_err(), "{bad} accepted");
        }
        let e = parse_atom("www-servers/apache-2.4.62; rm -rf /").unwrap_err();
        assert!(e.message.contains("the shell operator `;`"), "{}", e.message);
    }

    #[test]
    fn releases_order_naturally() {
        let r = |s| parse_release_id(s).unwrap();
        assert!(r("2026.11.10") > r("2026.11.9"));
        assert!(r("2026.11.2") > r("2026.11.1"));
        assert!(r("v10") > r("v9"));
        assert!(parse_release_id("../etc").is_err());
        assert!(parse_release_id("a b").is_err());
        assert!(parse_release_id("`id`").is_err());
    }

    #[test]
    fn php_versions() {
        assert!(parse_php_version("8.3.14").is_ok());
        assert!(parse_php_version("8.3").is_err());
        assert!(parse_php_version("8.3.x").is_err());
        assert!(parse_php_version("8.10.0").unwrap() > parse_php_version("8.9.30").unwrap());
    }

    #[test]
    fn urls_and_hosts() {
        assert!(parse_url("binhost", "https://binhost.example.net/r640", &["https", "http"]).is_ok());
        assert!(parse_url("binhost", "https://x/?a=1&b", &["https"]).is_err());
        assert!(parse_url("binhost", "ftp://x/a", &["https"]).is_err());
        assert!(parse_host("10.1.2.3").is_ok());
        assert!(parse_host("web1.example.net").is_ok());
        assert!(parse_host("web1 .example").is_err());
        assert_eq!(parse_endpoint("127.0.0.1:11211").unwrap().1, 11211);
        assert!(parse_endpoint("127.0.0.1").is_err());
    }

    #[test]
    fn times_and_days() {
        assert_eq!(parse_time_of_day("02:00", false), Ok(120));
        assert_eq!(parse_time_of_day("23:59", false), Ok(1439));
        assert_eq!(parse_time_of_day("00:00", true), Ok(0));
        assert_eq!(parse_time_of_day("24:00", true), Ok(1440));
        assert!(parse_time_of_day("24:00", false).unwrap_err().message.contains("does not exist"));
        for bad in ["25:00", "12:60", "24:01"] {
            assert!(parse_time_of_day(bad, true).unwrap_err().message.contains("does not exist"), "{bad}");
        }
        for bad in ["2:00", "02:0", "0200", "02:00:00", "", "+2:00", "aa:bb", "02 00"] {
            assert!(parse_time_of_day(bad, true).unwrap_err().message.contains("malformed"), "{bad}");
        }
        assert_eq!(parse_weekday("mon"), Ok(0));
        assert_eq!(parse_weekday("sun"), Ok(6));
        assert!(parse_weekday("Monday").is_err());
        assert!(parse_weekday("thurs").unwrap_err().hint.contains("mon, tue"));
    }

    #[test]
    fn globs() {
        assert!(glob_match("sys-kernel/*", "sys-kernel/gentoo-kernel-bin"));
        assert!(glob_match("*/openssl", "dev-libs/openssl"));
        assert!(!glob_match("sys-kernel/*", "sys-apps/man-db"));
        assert!(glob_match("dev-lang/php*", "dev-lang/php"));
        assert!(glob_match("*", ""));
        assert!(glob_match("**", "a"));
        assert!(glob_match("a*b*c", "abc"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxcyyb"));
        assert!(!glob_match("ab*ba", "aba"), "first and last piece may not overlap");
        assert!(glob_match("*aab", "aaab"));
        assert!(glob_match("a*aab*b", "aaaabab"));
        assert!(!glob_match("abc", "abcd"));
        assert!(!glob_match("", "a"));
    }

    /// The textbook backtracking matcher, as a reference for the linear one.
    fn glob_reference(p: &[u8], t: &[u8]) -> bool {
        match (p.first(), t.first()) {
            (None, _) => t.is_empty(),
            (Some(b'*'), _) => glob_reference(&p[1..], t) || (!t.is_empty() && glob_reference(p, &t[1..])),
            (Some(a), Some(b)) if a == b => glob_reference(&p[1..], &t[1..]),
            _ => false,
        }
    }

    #[test]
    fn globs_agree_with_the_reference_on_every_short_pattern_and_text() {
        // Every pattern over {a, b, *} up to 5 characters against every text over {a, b} up to 6.
        let words = |alphabet: &[u8], max: usize| {
            let mut all: Vec<Vec<u8>> = vec![vec![]];
            let mut last: Vec<Vec<u8>> = vec![vec![]];
            for _ in 0..max {
                last = last.iter().flat_map(|w| alphabet.iter().map(move |&c| [w.clone(), vec![c]].concat())).collect();
                all.extend(last.iter().cloned());
            }
            all
        };
        for p in words(b"ab*", 5) {
            for t in words(b"ab", 6) {
                assert_eq!(
                    glob_match_counting(&p, &t, &mut 0),
                    glob_reference(&p, &t),
                    "{:?} on {:?}",
                    String::from_utf8_lossy(&p),
                    String::from_utf8_lossy(&t)
                );
            }
        }
    }

    #[test]
    fn a_pathological_pattern_takes_linear_work() {
        // The shape that took the backtracking matcher minutes: many stars
        // between near-matching pieces, against a long run of one letter.
        let pattern = format!("x/{}b", "*a".repeat(1000));
        let text = format!("x/{}", "a".repeat(20_000));
        let mut steps = 0;
        assert!(!glob_match_counting(pattern.as_bytes(), text.as_bytes(), &mut steps));
        let bound = 4 * (pattern.len() + text.len()) as u64;
        assert!(
            steps <= bound,
            "{steps} comparisons for a {} + {} byte match (bound {bound})",
            pattern.len(),
            text.len()
        );
        // The backtracking matcher needed about pattern × text comparisons here.
        assert!(steps < (pattern.len() * text.len()) as u64 / 100);
    }
}
