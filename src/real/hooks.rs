//! Release hooks on a real node: a release's migrations (`bin/<hook>
//! expand|contract`, and `status <phase>` after an interrupted run) and a
//! switched node's warm-up (the policy's paths over HTTP, then the release's
//! warm-up hook). The contract is README's "Release hooks: the contract".
//!
//! Nothing from the spec reaches a shell: the hook's name, the release id and
//! every other value are positional parameters of the constant script `HOOK`,
//! which refuses anything but a regular executable file inside the release
//! tree, runs it with a fixed, cleared environment, and bounds it with
//! coreutils' `timeout` on the node (a hook drover gave up on does not run on).

use std::time::{Duration, Instant};

use futures::StreamExt;

use super::ssh::{Pool, RemoteErrorKind, error_chain};
use crate::model::{Environment, MigrationPhase, ReleaseId};
use crate::plan::memory::STATUS_UNKNOWN;

/// Runs `<dir>/bin/<hook> <verb> [arg]` on the node. `$1` release directory,
/// `$2` hook name, `$3` timeout in seconds, `$4` release id, `$5`
/// environment, `$6` site, `$7` farm, `$8` node, `$9` verb, `$10` argument
/// (may be empty: not passed). The hook's stdout goes to stderr with its
/// stderr, so that one stream, in order, is its output whatever it exits
/// with. Exit 126: refused (not a regular executable file in the tree); 124
/// (or 137): `timeout` stopped it.
pub const HOOK: &str = r#"set -u
dir=$1 hook=$2 secs=$3 release=$4 environment=$5 site=$6 farm=$7 node=$8 verb=$9 arg=${10}
cd -- "$dir" 2>/dev/null || { echo "drover: no release directory $dir on this node" >&2; exit 126; }
top=$(pwd -P)
f=bin/$hook
if [ ! -f "$f" ] || [ ! -x "$f" ]; then
  echo "drover: $top/$f is not a regular executable file" >&2; exit 126
fi
real=$(readlink -f -- "$f") || { echo "drover: cannot resolve $top/$f" >&2; exit 126; }
case $real in
"$top"/*) ;;
*) echo "drover: $top/$f leads out of the release tree (to $real)" >&2; exit 126 ;;
esac
if [ -n "$arg" ]; then set -- "$verb" "$arg"; else set -- "$verb"; fi
exec timeout -k 10 "$secs" env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="${HOME:-/}" \
  DROVER_RELEASE="$release" DROVER_RELEASE_DIR="$top" DROVER_ENVIRONMENT="$environment" DROVER_SITE="$site" \
  DROVER_FARM="$farm" DROVER_NODE="$node" DROVER_HOOK="$verb" "./$f" "$@" 1>&2"#;

/// Exit code a hook's `status` gives for "this migration was not applied".
pub const STATUS_NOT_APPLIED: i32 = 3;
/// Lines and bytes of a hook's output kept in a message (its last ones).
pub const OUTPUT_LINES: usize = 20;
pub const OUTPUT_BYTES: usize = 2000;
/// Time beyond a hook's own timeout for the SSH round trip and `timeout -k`.
const MARGIN: Duration = Duration::from_secs(20);

/// One hook run: where, for whom, what.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    pub pool: &'a Pool,
    pub host: &'a str,
    pub port: u16,
    /// The node's root prefix (empty on a real node; the probe reports it).
    pub root: &'a str,
    pub node: &'a str,
    pub site: &'a str,
    pub farm: &'a str,
    pub environment: Environment,
    pub release: &'a ReleaseId,
    pub hook: &'a str,
}

/// Why a hook run has no exit status: drover could not start it, or lost
/// sight of it (the connection dropped, or no answer within the limit plus
/// the margin). After `Lost`, the hook may have gone on, or finished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotRun {
    Unreachable(String),
    Lost(String),
}

impl std::fmt::Display for NotRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotRun::Unreachable(m) | NotRun::Lost(m) => f.write_str(m),
        }
    }
}

impl From<NotRun> for String {
    fn from(e: NotRun) -> String {
        e.to_string()
    }
}

/// How a hook run ended, when it ran at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ran {
    /// `None`: killed by a signal.
    pub code: Option<i32>,
    pub output: String,
}

impl Call<'_> {
    fn release_dir(&self) -> String {
        format!("{}/srv/app/releases/{}", self.root, self.release)
    }

    /// `bin/<hook> <verb> [arg]` as messages show it (never executed).
    pub fn shown(&self, verb: &str, arg: Option<&str>) -> String {
        let mut s = format!("{}/bin/{} {verb}", self.release_dir(), self.hook);
        if let Some(a) = arg {
            s.push(' ');
            s.push_str(a);
        }
        s
    }

    /// Runs the hook with a timeout of `limit`. `Err`: it could not be run
    /// to an end (no connection, lost, timed out); a non-zero exit is `Ok`.
    pub async fn run(&self, verb: &str, arg: Option<&str>, limit: Duration) -> Result<Ran, NotRun> {
        let secs = limit.as_secs().max(1).to_string();
        let dir = self.release_dir();
        let args = [
            "-c",
            HOOK,
            "drover-hook",
            &dir,
            self.hook,
            &secs,
            &self.release.0,
            self.environment.name(),
            self.site,
            self.farm,
            self.node,
            verb,
            arg.unwrap_or(""),
        ];
        let shown = self.shown(verb, arg);
        // Never run twice by the transport: a run cut off may go on on the node.
        match self.pool.run_once_with_timeout(self.host, self.port, "sh", &args, limit + MARGIN).await {
            Ok(done) => Ok(Ran { code: Some(0), output: done.stderr }),
            Err(e) => match e.kind {
                RemoteErrorKind::Exit { code, stderr } => Ok(Ran { code, output: stderr }),
                RemoteErrorKind::Connect(why) => {
                    Err(NotRun::Unreachable(format!("node {}: cannot connect to run `{shown}`: {why}", self.node)))
                }
                RemoteErrorKind::Lost(why) => {
                    Err(NotRun::Lost(format!("node {}: connection lost during `{shown}`: {why}", self.node)))
                }
                RemoteErrorKind::Timeout(d) => Err(NotRun::Lost(format!(
                    "node {}: `{shown}` did not answer within {}",
                    self.node,
                    humantime::format_duration(d)
                ))),
            },
        }
    }
}

/// The failure message of a hook run that did not exit 0: node, command,
/// exit and the last lines of its output.
pub fn failure(node: &str, shown: &str, ran: &Ran, limit: Duration) -> String {
    let how = match ran.code {
        // coreutils `timeout`: TERM after the limit (124), KILL 10 s later (137).
        Some(124) | Some(137) => format!("did not finish within {} (stopped)", humantime::format_duration(limit)),
        Some(126) => "was refused".to_string(),
        Some(c) => format!("exited with {c}"),
        None => "was killed by a signal".to_string(),
    };
    let out = tail(&ran.output, OUTPUT_LINES, OUTPUT_BYTES);
    if out.is_empty() {
        format!("node {node}: `{shown}` {how} (no output)")
    } else {
        format!("node {node}: `{shown}` {how}: {out}")
    }
}

/// The last `lines` non-empty lines of `output`, at most `bytes` bytes (cut at
/// a character boundary), control characters escaped, lines joined by ` | `.
pub fn tail(output: &str, lines: usize, bytes: usize) -> String {
    let kept: Vec<String> = {
        let mut v: Vec<String> =
            output.lines().map(str::trim_end).filter(|l| !l.trim().is_empty()).rev().take(lines).map(escape).collect();
        v.reverse();
        v
    };
    let joined = kept.join(" | ");
    if joined.len() <= bytes {
        return joined;
    }
    let mut cut = joined.len() - bytes;
    while !joined.is_char_boundary(cut) {
        cut += 1;
    }
    format!("…{}", &joined[cut..])
}

/// Control characters (escape sequences, NUL, tabs…) as Rust escapes: a
/// hook's output never drives the operator's terminal.
fn escape(line: &str) -> String {
    let mut s = String::with_capacity(line.len());
    for c in line.chars() {
        if c.is_control() {
            s.extend(c.escape_default());
        } else {
            s.push(c);
        }
    }
    s
}

/// Runs a release's migration `phase` (`resume`: after an interrupted run,
/// `status <phase>` first: 0 = completed, nothing runs; 3 = not applied, it
/// runs now; anything else fails with a message starting `status:`).
/// A run drover could not start or lost sight of (no connection, the
/// connection dropped, no answer in time) has an unknown outcome, not a
/// failure: its message starts `status:` too, and the next try asks the
/// hook's status before anything runs again.
pub async fn migrate(call: &Call<'_>, phase: MigrationPhase, resume: bool, limit: Duration) -> Result<(), String> {
    if resume {
        let ran = call.run("status", Some(phase.name()), limit).await.map_err(|e| format!("{STATUS_UNKNOWN} {e}"))?;
        match ran.code {
            Some(0) => return Ok(()),
            Some(STATUS_NOT_APPLIED) => {}
            _ => {
                let shown = call.shown("status", Some(phase.name()));
                return Err(format!(
                    "{STATUS_UNKNOWN} {} (0 = completed, 3 = not applied; anything else: unknown, held for an operator)",
                    failure(call.node, &shown, &ran, limit)
                ));
            }
        }
    }
    let ran = match call.run(phase.name(), None, limit).await {
        Ok(ran) => ran,
        Err(NotRun::Lost(e)) => {
            return Err(format!(
                "{STATUS_UNKNOWN} {e}; the migration may have gone on or finished on the node: \
                 drover asks the hook's status before it runs anything again"
            ));
        }
        Err(NotRun::Unreachable(e)) => {
            return Err(format!("{STATUS_UNKNOWN} {e}; nothing ran: drover asks the hook's status before it runs"));
        }
    };
    if ran.code == Some(0) { Ok(()) } else { Err(failure(call.node, &call.shown(phase.name(), None), &ran, limit)) }
}

/// What one warm-up request got: a status, or why there was none.
pub type Answer = Result<u16, String>;

/// A node's warm-up: the policy's paths, at most `concurrency` in flight,
/// then the release's warm-up hook, the whole within `limit`.
pub struct Warmup<'a> {
    pub client: &'a reqwest::Client,
    pub address: &'a str,
    pub http_port: u16,
    pub paths: &'a [String],
    pub concurrency: u32,
    pub min_success: f64,
    pub limit: Duration,
    /// The release's warm-up hook, when it declares one.
    pub hook: Option<Call<'a>>,
}

impl Warmup<'_> {
    pub async fn run(&self, node: &str) -> Result<(), String> {
        let start = Instant::now();
        let Ok(answers) = tokio::time::timeout(self.limit, self.requests()).await else {
            return Err(format!(
                "node {node}: warm-up: the requests did not all answer within {}",
                humantime::format_duration(self.limit)
            ));
        };
        judge(node, &answers, self.min_success)?;
        if let Some(call) = &self.hook {
            let left = self.limit.saturating_sub(start.elapsed()).max(Duration::from_secs(1));
            let ran = call.run("warmup", None, left).await?;
            if ran.code != Some(0) {
                return Err(format!("warm-up: {}", failure(node, &call.shown("warmup", None), &ran, left)));
            }
        }
        Ok(())
    }

    async fn requests(&self) -> Vec<(String, Answer)> {
        let host = if self.address.contains(':') { format!("[{}]", self.address) } else { self.address.to_string() };
        let one = |path: &String| {
            let url = format!("http://{host}:{}{path}", self.http_port);
            let path = path.clone();
            async move {
                // The client's own timeout bounds each request.
                let answer = match self.client.get(&url).send().await {
                    Err(e) => Err(error_chain(&e)),
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        // Read the body: the page is rendered (and cached) in full.
                        match resp.bytes().await {
                            Ok(_) => Ok(status),
                            Err(e) => Err(format!("status {status}, body cut: {}", error_chain(&e))),
                        }
                    }
                };
                (path, answer)
            }
        };
        futures::stream::iter(self.paths.iter().map(one))
            .buffer_unordered(self.concurrency.max(1) as usize)
            .collect()
            .await
    }
}

/// Whether enough warm-up requests answered 2xx; the failure names the node
/// and every failed path with its status or error.
pub fn judge(node: &str, answers: &[(String, Answer)], min_success: f64) -> Result<(), String> {
    if answers.is_empty() {
        return Ok(());
    }
    let ok = answers.iter().filter(|(_, a)| matches!(a, Ok(s) if (200..300).contains(s))).count();
    let ratio = ok as f64 / answers.len() as f64;
    if ratio >= min_success {
        return Ok(());
    }
    let mut failed: Vec<String> = answers
        .iter()
        .filter_map(|(p, a)| match a {
            Ok(s) if (200..300).contains(s) => None,
            Ok(s) => Some(format!("{p}: status {s}")),
            Err(e) => Some(format!("{p}: {}", tail(e, 1, 300))),
        })
        .collect();
    failed.sort();
    const SHOWN: usize = 10;
    let more = failed.len().saturating_sub(SHOWN);
    failed.truncate(SHOWN);
    let mut msg = format!(
        "node {node}: warm-up: {ok} of {} requests answered 2xx ({:.0}%, at least {:.0}% needed); failed: {}",
        answers.len(),
        ratio * 100.0,
        min_success * 100.0,
        failed.join(", ")
    );
    if more > 0 {
        msg.push_str(&format!(" and {more} more"));
    }
    Err(msg)
}

/// The warm-up's HTTP client: no proxy, no redirects (a redirect is not 2xx).
pub fn client(limit: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(limit)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| error_chain(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ran(code: Option<i32>, output: &str) -> Ran {
        Ran { code, output: output.into() }
    }

    #[test]
    fn a_failure_names_node_command_exit_and_the_last_lines() {
        let out: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        let m = failure("par1-f1-n1", "/srv/app/releases/R/bin/migrate expand", &ran(Some(1), &out), Duration::ZERO);
        assert!(
            m.starts_with("node par1-f1-n1: `/srv/app/releases/R/bin/migrate expand` exited with 1: line 11 | "),
            "{m}"
        );
        assert!(m.ends_with("line 29 | line 30"), "{m}");
        assert!(!m.contains("line 10 "), "{m}");
        let m = failure("n", "x", &ran(None, ""), Duration::ZERO);
        assert_eq!(m, "node n: `x` was killed by a signal (no output)");
        let m = failure("n", "x", &ran(Some(124), "slow\n"), Duration::from_secs(90));
        assert_eq!(m, "node n: `x` did not finish within 1m 30s (stopped): slow");
        let m = failure(
            "n",
            "x",
            &ran(Some(126), "drover: /r/bin/m leads out of the release tree (to /etc/x)\n"),
            Duration::ZERO,
        );
        assert!(m.contains("was refused: drover: /r/bin/m leads out"), "{m}");
    }

    #[test]
    fn output_is_bounded_and_escaped_and_never_panics() {
        // Terminal escapes and NULs are shown, not sent.
        assert_eq!(tail("\x1b[2Jgone\0\n\tok\n", 5, 100), "\\u{1b}[2Jgone\\u{0} | \\tok");
        // Blank lines do not count.
        assert_eq!(tail("a\n\n   \nb\n\n", 2, 100), "a | b");
        // Bytes bound: the end is kept, cut at a character boundary.
        let long = "‘".repeat(1000);
        for bytes in [0, 1, 2, 3, 4, 5, 100, 2999, 3000, 3001] {
            let t = tail(&long, 5, bytes);
            assert!(t.len() <= bytes + "…".len() + 2, "{bytes}: {}", t.len());
        }
        // Invalid UTF-8 cut mid-character, as the SSH layer decodes it (lossy).
        let mut bytes = "ok ‘quoted’".as_bytes().to_vec();
        bytes.truncate(bytes.len() - 1);
        bytes.extend_from_slice(&[0xff, 0xfe, b'\n', 0xe2, 0x80]);
        let text = String::from_utf8_lossy(&bytes);
        for n in 0..text.len() + 2 {
            let _ = tail(&text, 3, n);
        }
        assert!(tail(&text, 3, 1000).starts_with("ok ‘quoted"));
        // Any byte soup.
        let soup: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        let text = String::from_utf8_lossy(&soup);
        let t = tail(&text, OUTPUT_LINES, OUTPUT_BYTES);
        assert!(t.len() <= OUTPUT_BYTES + 3);
        assert!(!t.chars().any(|c| c.is_control()), "{t:?}");
    }

    #[test]
    fn the_warm_up_ratio_and_what_failed() {
        let a = |p: &str, r: Answer| (p.to_string(), r);
        assert_eq!(judge("n", &[], 1.0), Ok(()));
        let answers =
            vec![a("/", Ok(200)), a("/cart", Ok(204)), a("/a", Ok(503)), a("/b", Err("connection refused".into()))];
        assert_eq!(judge("n", &answers, 0.5), Ok(()));
        let e = judge("web1", &answers, 0.75).unwrap_err();
        assert_eq!(
            e,
            "node web1: warm-up: 2 of 4 requests answered 2xx (50%, at least 75% needed); failed: /a: status 503, /b: connection refused"
        );
        // A redirect or a 404 is not warm.
        assert!(
            judge("n", &[a("/", Ok(301)), a("/x", Ok(404))], 0.1)
                .unwrap_err()
                .contains("/: status 301, /x: status 404")
        );
        // Many failures: the first ten by path, and a count.
        let many: Vec<_> = (0..25).map(|i| a(&format!("/p{i:02}"), Ok(500))).collect();
        let e = judge("n", &many, 1.0).unwrap_err();
        assert!(e.ends_with("/p09: status 500 and 15 more"), "{e}");
    }

    /// A node's web server on loopback that holds every request `hold`
    /// (forever if `None`) and records the most requests it had at once.
    async fn slow_node(hold: Option<Duration>) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let (now, max) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let seen = Arc::clone(&max);
        tokio::spawn(async move {
            while let Ok((mut c, _)) = l.accept().await {
                let (now, max) = (Arc::clone(&now), Arc::clone(&max));
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let _ = c.read(&mut buf).await;
                    let at_once = now.fetch_add(1, Ordering::SeqCst) + 1;
                    max.fetch_max(at_once, Ordering::SeqCst);
                    match hold {
                        Some(d) => tokio::time::sleep(d).await,
                        None => std::future::pending::<()>().await,
                    }
                    now.fetch_sub(1, Ordering::SeqCst);
                    let _ = c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await;
                });
            }
        });
        (port, seen)
    }

    #[tokio::test]
    async fn warm_up_requests_are_bounded_in_number_at_once_and_in_time() {
        let paths: Vec<String> = (0..9).map(|i| format!("/p{i}")).collect();
        let client = client(Duration::from_secs(10)).unwrap();
        let (port, max) = slow_node(Some(Duration::from_millis(150))).await;
        let w = |port, concurrency, limit| Warmup {
            client: &client,
            address: "127.0.0.1",
            http_port: port,
            paths: &paths,
            concurrency,
            min_success: 1.0,
            limit,
            hook: None,
        };
        w(port, 3, Duration::from_secs(10)).run("n").await.unwrap();
        assert_eq!(max.load(std::sync::atomic::Ordering::SeqCst), 3, "at most `concurrency` requests in flight");
        // A node that never answers: the warm-up ends at its limit, not the client's.
        let (silent, _) = slow_node(None).await;
        let t0 = Instant::now();
        let e = w(silent, 4, Duration::from_millis(500)).run("web1").await.unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        assert_eq!(e, "node web1: warm-up: the requests did not all answer within 500ms");
    }

    /// The script on this machine (a local `sh`): what it refuses, and the
    /// arguments and environment a hook gets.
    #[test]
    fn the_hook_script_refuses_links_out_and_runs_with_the_documented_environment() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("drover-hooks-{}", std::process::id()));
        let rel = base.join("srv/app/releases/2026.12.1");
        std::fs::create_dir_all(rel.join("bin")).unwrap();
        let write = |name: &str, text: &str| {
            let p = rel.join("bin").join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        write("show", "#!/bin/sh\necho \"args=$*\"\nenv | sort | grep -Ev '^(PWD|OLDPWD|SHLVL|_)='\nexit 7\n");
        std::fs::write(base.join("outside"), "#!/bin/sh\necho escaped\n").unwrap();
        std::fs::set_permissions(base.join("outside"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(base.join("outside"), rel.join("bin/out")).unwrap();
        std::fs::write(rel.join("bin/plain"), "#!/bin/sh\necho no\n").unwrap();
        // A value a shell would run if it were ever spliced into the script.
        let pwned = base.join("pwned");
        let node = format!("n1; touch {} $(touch {})", pwned.display(), pwned.display());
        let run = |hook: &str, verb: &str, arg: &str| {
            let o = std::process::Command::new("sh")
                .args(["-c", HOOK, "drover-hook"])
                .arg(&rel)
                .args([hook, "5", "2026.12.1", "production", "par1", "par1-f1", node.as_str(), verb, arg])
                .env("HOME", "/home/deploy")
                .env("SECRET", "not passed")
                .output()
                .unwrap();
            (
                o.status.code(),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        };
        let (code, stdout, stderr) = run("show", "status", "expand");
        assert_eq!(code, Some(7));
        assert_eq!(stdout, "", "the hook's stdout goes with its stderr");
        let real = std::fs::canonicalize(&rel).unwrap();
        let expected = format!(
            "args=status expand\nDROVER_ENVIRONMENT=production\nDROVER_FARM=par1-f1\nDROVER_HOOK=status\n\
             DROVER_NODE={node}\nDROVER_RELEASE=2026.12.1\nDROVER_RELEASE_DIR={}\nDROVER_SITE=par1\n\
             HOME=/home/deploy\nPATH=/usr/local/bin:/usr/bin:/bin\n",
            real.display()
        );
        assert_eq!(stderr, expected);
        assert!(!pwned.exists(), "a value was run by a shell");
        // No argument: only the verb.
        let (_, _, stderr) = run("show", "expand", "");
        assert!(stderr.starts_with("args=expand\n"), "{stderr}");
        let (code, _, stderr) = run("out", "expand", "");
        assert_eq!(code, Some(126));
        assert!(stderr.contains("leads out of the release tree"), "{stderr}");
        assert!(!stderr.contains("escaped"), "{stderr}");
        // A link inside the tree is fine.
        std::fs::create_dir_all(rel.join("vendor")).unwrap();
        std::fs::rename(rel.join("bin/show"), rel.join("vendor/show")).unwrap();
        std::os::unix::fs::symlink("../vendor/show", rel.join("bin/show")).unwrap();
        let (code, _, stderr) = run("show", "expand", "");
        assert_eq!(code, Some(7), "{stderr}");
        let (code, _, stderr) = run("plain", "expand", "");
        assert_eq!(code, Some(126), "{stderr}");
        let (code, _, stderr) = run("missing", "expand", "");
        assert_eq!(code, Some(126), "{stderr}");
        // A hook that outlives its timeout is stopped on the node.
        write("slow", "#!/bin/sh\nsleep 30\n");
        let o = std::process::Command::new("sh")
            .args(["-c", HOOK, "drover-hook"])
            .arg(&rel)
            .args(["slow", "1", "2026.12.1", "production", "s", "f", "n", "expand", ""])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(124));
        std::fs::remove_dir_all(&base).unwrap();
    }
}
