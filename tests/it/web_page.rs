//! The daemon's status page in a real browser: Debian's Chromium, driven
//! over WebDriver by chromedriver (both installed by tests/run-all), loads
//! `/` from `drover reconcile --simulate` on the reference fleet (518
//! nodes) mid-rollout and checks what a person sees: the nodes in each state
//! as `/status` counts them, a farm's window opening and ending, a rejected
//! spec's located error (and that its `<script>` stays text), the page
//! updating itself without a reload, and accessibility basics (text
//! alternatives, chart titles, landmarks and headings, text contrast
//! computed from the browser's own styles). Screenshots at three moments go
//! to target/browser-artifacts/.
//!
//! The WebDriver client is a few functions over a blocking TCP stream: the
//! test needs six commands (new session, navigate, execute script,
//! screenshot, delete session, status), which is less code than a client
//! crate's async runtime and TLS stack would bring in.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::daemon_proc::{Daemon, copy_dir, free_port, status};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The browser's window: every node of the reference fleet must fit in it.
const WINDOW: (u32, u32) = (1600, 1000);

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// One HTTP/1.1 request to chromedriver; the response's body as JSON.
fn http(addr: &str, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(120))).map_err(|e| e.to_string())?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    // Read the headers, then the body by its length (chromedriver keeps
    // the connection open) or to the end of its chunks.
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    let (head, mut payload) = loop {
        let n = s.read(&mut buf).map_err(|e| format!("{method} {path}: {e}"))?;
        if n == 0 {
            return Err(format!("{method} {path}: closed before the headers"));
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break (String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase(), raw[split + 4..].to_vec());
        }
    };
    let length =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = head.contains("transfer-encoding: chunked");
    loop {
        let done = match length {
            Some(len) => payload.len() >= len,
            None => chunked && payload.windows(5).any(|w| w == b"0\r\n\r\n"),
        };
        if done {
            break;
        }
        let n = s.read(&mut buf).map_err(|e| format!("{method} {path}: {e}"))?;
        if n == 0 {
            break;
        }
        payload.extend_from_slice(&buf[..n]);
    }
    if chunked {
        payload = dechunk(&payload);
    }
    serde_json::from_slice(&payload).map_err(|e| format!("{method} {path}: {e}: {}", String::from_utf8_lossy(&payload)))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let len = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if len == 0 || b.len() < eol + 2 + len {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + len]);
        b = &b[(eol + 4 + len).min(b.len())..];
    }
    out
}

fn base64(text: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0);
    for v in text.bytes().filter_map(val) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// chromedriver and its Chromium, in a process group of their own: dropping
/// it ends the session and kills the group (the browser included), also
/// when the test panics.
struct Browser {
    driver: Child,
    addr: String,
    session: String,
    log: PathBuf,
}

impl Browser {
    fn start(base: &Path) -> Browser {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: the browser tests need Debian's chromium and chromium-driver \
                 (tests/run-all installs them: apt-get install chromium chromium-driver)"
            );
        }
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let log = base.join("chromedriver.log");
        let driver = {
            use std::os::unix::process::CommandExt;
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("start chromedriver")
        };
        let mut b = Browser { driver, addr, session: String::new(), log };
        let t0 = Instant::now();
        while !http(&b.addr, "GET", "/status", None).is_ok_and(|v| v["value"]["ready"] == true) {
            assert!(b.driver.try_wait().unwrap().is_none(), "chromedriver exited: {}", b.log());
            assert!(t0.elapsed() < Duration::from_secs(60), "chromedriver not ready: {}", b.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = base.join("chromium-profile");
        let args = json!([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            format!("--user-data-dir={}", profile.display()),
            format!("--window-size={},{}", WINDOW.0, WINDOW.1),
        ]);
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let v = http(&b.addr, "POST", "/session", Some(&caps)).unwrap();
        b.session = v["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {v}\n{}", b.log())).into();
        b
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text[text.len().saturating_sub(4000)..].to_string()
    }

    fn cmd(&self, method: &str, what: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}/{what}", self.session);
        let v = http(&self.addr, method, &path, body.as_ref()).unwrap_or_else(|e| panic!("{e}\n{}", self.log()));
        if v["value"]["error"].is_string() {
            panic!("{method} {what}: {}", v["value"]);
        }
        v["value"].clone()
    }

    fn open(&self, url: &str) {
        self.cmd("POST", "url", Some(json!({ "url": url })));
    }

    /// Runs `body` (a function body that returns a value) in the page.
    fn js(&self, body: &str) -> Value {
        self.cmd("POST", "execute/sync", Some(json!({ "script": body, "args": [] })))
    }

    fn screenshot(&self, name: &str) -> PathBuf {
        let png = base64(self.cmd("GET", "screenshot", None).as_str().expect("a base64 screenshot"));
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-artifacts");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, png).unwrap();
        path
    }

    /// A screenshot of the whole page: the window made as tall as the page, then as it was.
    fn screenshot_page(&self, name: &str) -> PathBuf {
        let height = self.js("return document.documentElement.scrollHeight;").as_u64().unwrap_or(1000);
        let rect = self.cmd("GET", "window/rect", None);
        self.cmd("POST", "window/rect", Some(json!({ "width": WINDOW.0, "height": height.clamp(600, 4000) + 150 })));
        let path = self.screenshot(name);
        self.cmd("POST", "window/rect", Some(json!({ "width": rect["width"], "height": rect["height"] })));
        path
    }

    /// Waits for `cond` to give `Some`, checking every 100 ms.
    fn wait_for<T>(
        &self,
        what: &str,
        limit: Duration,
        d: &mut Daemon,
        mut cond: impl FnMut(&Browser) -> Option<T>,
    ) -> T {
        let t0 = Instant::now();
        loop {
            if let Some(v) = cond(self) {
                return v;
            }
            assert!(
                t0.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}; the page shows:\n{}\ndaemon log:\n{}",
                self.js("return document.body.innerText.slice(0, 3000);"),
                d.log()
            );
            assert!(d.running(), "the daemon exited:\n{}", d.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http(&self.addr, "DELETE", &format!("/session/{}", self.session), None);
        }
        // The whole group: chromedriver and the browser it started.
        unsafe { kill(-(self.driver.id() as i32), 9) };
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// What the page shows now: its pass, the legend's count per state, the
/// cells per state class, the farms with an open window.
const SEEN: &str = r#"
const state = document.getElementById("state");
const legend = {};
for (const li of document.querySelectorAll(".legend li")) {
  legend[li.dataset.cell] = parseInt(li.querySelector(".count").textContent, 10);
}
const cells = {};
for (const c of document.querySelectorAll(".cells .c")) {
  const k = [...c.classList].find(x => x.startsWith("s-")).slice(2);
  cells[k] = (cells[k] || 0) + 1;
}
const open = [...document.querySelectorAll(".farm[data-window=open]")].map(f => f.dataset.farm);
return { pass: state ? parseInt(state.dataset.pass, 10) : -1, legend, cells, open,
         loaded: window.__droverLoaded === true };
"#;

/// Accessibility basics, from what the browser computed: every problem found.
const ACCESSIBILITY: &str = r#"
const problems = [];
const cells = document.querySelectorAll(".cells .c");
for (const c of cells) {
  const label = c.getAttribute("aria-label") || "";
  if (c.getAttribute("role") !== "img" || !/: \S/.test(label) || c.getAttribute("title") !== label)
    problems.push("cell without a text alternative: " + c.outerHTML);
}
for (const li of document.querySelectorAll(".legend li"))
  if (!li.querySelector(".label").textContent.trim() || !/^\d+$/.test(li.querySelector(".count").textContent))
    problems.push("legend entry without a label and count: " + li.outerHTML);
for (const svg of document.querySelectorAll("svg")) {
  const t = svg.querySelector(":scope > title");
  if (svg.getAttribute("role") !== "img" || !(svg.getAttribute("aria-label") || "").trim() || !t || !t.textContent.trim())
    problems.push("chart without role=img, aria-label and title: " + svg.outerHTML.slice(0, 200));
}
for (const sel of ["header", "main", "footer", "h1"])
  if (document.querySelectorAll(sel).length !== 1) problems.push("not exactly one " + sel);
const h2 = [...document.querySelectorAll("h2")].map(h => h.textContent);
for (const want of ["Now", "Fleet", "Rollout", "Spec", "Recent actions"])
  if (!h2.includes(want)) problems.push("no heading " + want + " in " + h2);
for (const s of document.querySelectorAll("section"))
  if (!s.getAttribute("aria-labelledby") && !s.getAttribute("aria-label")) problems.push("unnamed section");
if (document.documentElement.lang !== "en") problems.push("no lang");
// Contrast of every piece of visible text against the background it is drawn on.
function rgba(s) {
  const m = s.match(/rgba?\(([^)]+)\)/);
  if (!m) return null;
  const p = m[1].split(",").map(x => parseFloat(x));
  return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
}
function lum(c) {
  const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
}
function background(el) {
  const layers = [];
  for (let e = el; e && e.nodeType === 1; e = e.parentElement) {
    const c = rgba(getComputedStyle(e).backgroundColor);
    if (c && c.a > 0) { layers.push(c); if (c.a >= 1) break; }
  }
  let out = { r: 255, g: 255, b: 255 };
  for (const c of layers.reverse()) out = { r: c.r * c.a + out.r * (1 - c.a), g: c.g * c.a + out.g * (1 - c.a), b: c.b * c.a + out.b * (1 - c.a) };
  return out;
}
let checked = 0;
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
for (let n = walker.nextNode(); n; n = walker.nextNode()) {
  if (!n.textContent.trim()) continue;
  const el = n.parentElement;
  if (!el || el.closest("title")) continue;
  const r = el.getBoundingClientRect();
  if (r.width === 0 || r.height === 0) continue;
  const cs = getComputedStyle(el);
  const inSvg = el instanceof SVGElement;
  const fg = rgba(inSvg ? cs.fill : cs.color);
  if (!fg) { problems.push("no text colour: " + el.outerHTML.slice(0, 100)); continue; }
  const bg = background(inSvg ? el.closest("svg") : el);
  const [a, b] = [lum(fg), lum(bg)];
  const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  checked++;
  const cls = inSvg ? el.className.baseVal : el.className;
  if (ratio < 4.5) problems.push("contrast " + ratio.toFixed(2) + ":1 for " + JSON.stringify(n.textContent.trim().slice(0, 40)) + " in " + el.tagName + "." + cls);
}
if (checked < 100) problems.push("only " + checked + " pieces of text checked");
// Every node fits on one screen.
let top = Infinity, bottom = -Infinity, right = -Infinity;
for (const c of cells) { const r = c.getBoundingClientRect(); top = Math.min(top, r.top); bottom = Math.max(bottom, r.bottom); right = Math.max(right, r.right); }
if (bottom - top > window.innerHeight || right > window.innerWidth)
  problems.push("the fleet's " + cells.length + " nodes take " + (bottom - top) + " px of " + window.innerHeight);
return { problems, checked, cells: cells.length };
"#;

#[test]
fn the_status_page_in_a_real_browser_follows_the_reference_rollout() {
    let base = std::env::temp_dir().join(format!("drover-web-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("specs"), &base.join("specs"));
    std::fs::create_dir_all(base.join("tmp")).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    // The reference fleet (518 nodes) at 60 simulated s per s: preproduction
    // windows within seconds, production ones after the 30 min soak.
    let mut d = Daemon::start_at(&base, "state", &addr, "60");
    d.wait_until("readiness", Duration::from_secs(120), |d| {
        super::daemon_proc::get(&d.addr, "/readyz").is_some_and(|(c, _)| c == 200)
    });
    let b = Browser::start(&base);
    b.open(&format!("http://{addr}/"));
    assert_eq!(b.js("return document.title;"), "drover: rollout status");
    b.js("window.__droverLoaded = true; return true;");

    // A farm window opens (preproduction first).
    let farm: String = b.wait_for("a farm window to open", Duration::from_secs(180), &mut d, |b| {
        let seen = b.js(SEEN);
        seen["open"].as_array().and_then(|o| o.first()).and_then(|f| f.as_str()).map(String::from)
    });
    let bar = format!("svg g[data-farm='{farm}'][data-state=open]");
    assert_eq!(b.js(&format!("return document.querySelectorAll(\"{bar}\").length;")), 1, "{farm} on the time line");
    b.screenshot("1-first-farm-window.png");

    // The counts a person reads are /status's, for the same pass.
    let (seen, st) = b.wait_for("the page and /status at the same pass", Duration::from_secs(60), &mut d, |b| {
        let seen = b.js(SEEN);
        let st = status(&addr)?;
        (st["rollout"]["passes"] == seen["pass"]).then_some((seen, st))
    });
    let total = st["rollout"]["nodes_total"].as_u64().unwrap();
    assert_eq!(total, 518);
    let cells = st["rollout"]["cells"].as_object().unwrap();
    assert_eq!(cells.values().map(|v| v.as_u64().unwrap()).sum::<u64>(), total);
    for (state, n) in cells {
        assert_eq!(seen["legend"][state], *n, "legend count of {state}: {seen}");
        assert_eq!(seen["cells"][state].as_u64().unwrap_or(0), n.as_u64().unwrap(), "cells of {state}: {seen}");
    }
    assert_eq!(seen["legend"]["at-target"], st["rollout"]["nodes_at_target"]);

    let a11y = b.js(ACCESSIBILITY);
    assert_eq!(a11y["problems"], json!([]), "{a11y}");
    assert_eq!(a11y["cells"], 518);

    // Live: each new pass /status shows reaches the page by itself, within
    // the page's poll (500 ms) and a request; 3 s of slack for a loaded box.
    let page_pass = "return parseInt(document.getElementById('state').dataset.pass, 10);";
    let mut lags = Vec::new();
    for _ in 0..3 {
        let before = status(&addr).and_then(|s| s["rollout"]["passes"].as_u64()).unwrap_or(0);
        let (pass, t0) = b.wait_for("a new pass in /status", Duration::from_secs(60), &mut d, |_| {
            let p = status(&addr)?["rollout"]["passes"].as_u64()?;
            (p > before).then(|| (p, Instant::now()))
        });
        b.wait_for("the page to show it", Duration::from_secs(30), &mut d, |b| {
            (b.js(page_pass).as_u64() >= Some(pass)).then_some(())
        });
        lags.push(t0.elapsed());
    }
    println!("the page showed each new pass {lags:?} after /status did");
    assert!(lags.iter().all(|l| *l < Duration::from_secs(3)), "{lags:?}");

    // That farm's window ends: its bar is done and its card has no window.
    b.wait_for(&format!("the window of {farm} to end"), Duration::from_secs(180), &mut d, |b| {
        let done = b.js(&format!(
            "return document.querySelectorAll(\"svg g[data-farm='{farm}'][data-state=done]\").length > 0 && \
             document.querySelector(\".farm[data-farm='{farm}']\").dataset.window === 'none';"
        ));
        (done == true).then_some(())
    });

    // Mid-rollout: a production farm's window done and others open.
    b.wait_for("a production farm window done and one open", Duration::from_secs(300), &mut d, |b| {
        let seen = b.js(SEEN);
        let prod = seen["open"].as_array()?.iter().any(|f| f.as_str().is_some_and(|f| !f.starts_with("preprod/")));
        let done =
            b.js("return document.querySelectorAll(\"svg g[data-state=done]:not([data-farm^='preprod/'])\").length;");
        (prod && done.as_u64() > Some(0)).then_some(())
    });
    b.screenshot_page("2-production-windows.png");
    let a11y = b.js(ACCESSIBILITY);
    assert_eq!(a11y["problems"], json!([]), "{a11y}");

    // A spec that fails validation, with markup in it: its located error shows, as text.
    let bad = "\"<script>document.title='owned'</script>\": true\n";
    let tmp = base.join("specs/zz-bad.yaml~");
    std::fs::write(&tmp, bad).unwrap();
    std::fs::rename(&tmp, base.join("specs/zz-bad.yaml")).unwrap();
    let shown: String = b.wait_for("the rejected spec's error", Duration::from_secs(120), &mut d, |b| {
        b.js("const r = document.querySelector('#rejected pre'); return r ? r.innerText : null;")
            .as_str()
            .map(String::from)
    });
    assert!(
        shown.contains("zz-bad.yaml:1:1: error: unknown field `<script>document.title='owned'</script>`"),
        "{shown}"
    );
    assert_eq!(b.js("return document.querySelectorAll('script').length;"), 1, "only the page's own script");
    assert_eq!(b.js("return document.title;"), "drover: rollout status");
    b.js("document.getElementById('rejected').scrollIntoView(); return true;");
    b.screenshot("3-rejected-spec.png");

    // All of it without a reload: the page updated itself.
    assert_eq!(b.js(SEEN)["loaded"], true, "the page was reloaded");
    drop(b);
    drop(d);
    let _ = std::fs::remove_dir_all(&base);
}
