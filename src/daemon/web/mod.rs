//! The status page (`/` on the daemon's listener): the fleet at a glance,
//! the rollout (farm windows, what waits and why, progress), the spec in
//! force and a rejected one, recent actions. Rendered on the server from
//! the status document (`DaemonStatus`) with `html::Html`, which escapes
//! every string it is given (spec names, diagnostics and errors are
//! untrusted); the page's script (`page.js`) only fetches `/live` (the same
//! sections re-rendered) twice a second and swaps them in. *Pure*: reads
//! the document it is handed, nothing else; never changes anything.

pub mod cell;
mod html;
mod svg;

pub use cell::{Cell, annotate};
use html::Html;

use crate::daemon::state::{DaemonStatus, FarmWindow};

/// The page's style sheet (`/assets/page.css`).
pub const CSS: &str = include_str!("page.css");
/// The page's script (`/assets/page.js`): polls `/live`.
pub const JS: &str = include_str!("page.js");

/// How often the page asks for `/live` (ms); the loop publishes at most
/// every 500 ms, so a change shows within about a second.
pub const POLL_MS: u64 = 500;

/// The whole page.
pub fn page(st: &DaemonStatus) -> String {
    let mut h = Html::with_capacity(256 * 1024);
    h.raw("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    h.raw("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    h.raw("<title>drover: rollout status</title>");
    h.raw("<link rel=\"stylesheet\" href=\"/assets/page.css\"><script src=\"/assets/page.js\" defer></script>");
    h.raw("</head><body><header class=\"top\"><h1>drover</h1><p>rollout status, ").text(&st.fleet_kind);
    h.raw(" fleet, drover ").text(&st.version).raw("</p></header>");
    h.raw("<main id=\"live\" data-poll-ms=\"").num(POLL_MS as f64).raw("\">");
    live_into(&mut h, st);
    h.raw("</main><footer><p>Read-only. The page updates itself; the same data as JSON: ");
    h.raw("<a href=\"/status\">/status</a>.</p></footer></body></html>\n");
    h.into_string()
}

/// The page's live part (`/live`): what `page` puts inside `<main>`.
pub fn live(st: &DaemonStatus) -> String {
    let mut h = Html::with_capacity(256 * 1024);
    live_into(&mut h, st);
    h.into_string()
}

fn live_into(h: &mut Html, st: &DaemonStatus) {
    let r = &st.rollout;
    h.raw("<div id=\"state\"").attr("data-pass", &r.passes.to_string()).attr("data-phase", &r.phase).raw(">");
    summary(h, st);
    fleet(h, st);
    h.raw("<div class=\"cols\">");
    rollout(h, st);
    h.raw("<div>");
    spec(h, st);
    actions(h, st);
    problems(h, st);
    h.raw("</div></div></div>");
}

fn s(v: &serde_json::Value) -> &str {
    v.as_str().unwrap_or("")
}

fn arr(v: &serde_json::Value) -> &[serde_json::Value] {
    v.as_array().map_or(&[], |a| a.as_slice())
}

/// `HH:MM:SS UTC` of a time in ms on the fleet's clock.
pub fn clock(ms: u64) -> String {
    let s = (ms / 1000) % 86_400;
    format!("{:02}:{:02}:{:02} UTC", s / 3600, s / 60 % 60, s % 60)
}

/// `850 ms`, `12.3 s`, `4 min 05 s`, `2 h 03 min`.
pub fn duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{} min {:02} s", ms / 60_000, ms / 1000 % 60)
    } else {
        format!("{} h {:02} min", ms / 3_600_000, ms / 60_000 % 60)
    }
}

/// The pace the projected end is measured over (ms on the fleet's clock).
pub const PACE_OVER_MS: u64 = 15 * 60_000;

/// When the rollout should end at the pace of the last `PACE_OVER_MS` of
/// the progress series (all of it when shorter): (end ms, nodes per
/// minute); `None` when nothing reached its target in that time, or all did.
pub fn projected_end(st: &DaemonStatus) -> Option<(u64, f64)> {
    let r = &st.rollout;
    let points = &st.history.progress;
    let (first, last) = (points.first()?, points.last()?);
    let left = r.nodes_total.saturating_sub(last.nodes_at_target);
    let now = r.last_pass_at_ms.max(last.at_ms);
    let from = now.saturating_sub(PACE_OVER_MS);
    // The count at `from`: the last point at or before it.
    let (t0, n0) = match points.iter().rev().find(|p| p.at_ms <= from) {
        Some(p) => (from, p.nodes_at_target),
        None => (first.at_ms, first.nodes_at_target),
    };
    if left == 0 || now <= t0 || last.nodes_at_target <= n0 {
        return None;
    }
    let rate = (last.nodes_at_target - n0) as f64 / (now - t0) as f64;
    Some((now + (left as f64 / rate) as u64, rate * 60_000.0))
}

fn summary(h: &mut Html, st: &DaemonStatus) {
    let r = &st.rollout;
    h.raw("<section class=\"now\" aria-labelledby=\"h-now\"><h2 id=\"h-now\">Now</h2><dl>");
    h.raw("<div><dt>Phase</dt><dd class=\"phase\" id=\"phase\">").text(&r.phase).raw("</dd></div>");
    h.raw("<div><dt>Nodes at target</dt><dd id=\"at-target\">").num(r.nodes_at_target as f64).raw(" of ");
    h.num(r.nodes_total as f64).raw("</dd></div>");
    h.raw("<div><dt>Spec</dt><dd>generation ").num(st.spec.generation as f64);
    if let Some(c) = &st.spec.commit {
        h.raw(", commit ").text(c);
    }
    h.raw("</dd></div><div><dt>Running</dt><dd>").num(r.running.len() as f64).raw(" actions</dd></div>");
    h.raw("<div><dt>Last pass</dt><dd>");
    if r.passes > 0 {
        h.text(&clock(r.last_pass_at_ms)).raw(" (pass ").num(r.passes as f64).raw(")");
    } else {
        h.raw("none yet");
    }
    h.raw("</dd></div><div><dt>Projected end</dt><dd id=\"projected\">");
    match projected_end(st) {
        _ if r.converged => h.raw("done: converged"),
        Some((end, rate)) => h
            .text(&clock(end))
            .raw(" (at ")
            .text(&format!("{rate:.1}"))
            .raw(" nodes per minute, the pace of the last 15 min)"),
        None => h.raw("not known (no node reached its target in the last 15 min)"),
    };
    h.raw("</dd></div></dl></section>");
}

fn fleet(h: &mut Html, st: &DaemonStatus) {
    let r = &st.rollout;
    h.raw("<section class=\"fleet\" id=\"fleet\" aria-labelledby=\"h-fleet\"><h2 id=\"h-fleet\">Fleet</h2>");
    h.raw("<ul class=\"legend\" aria-label=\"Nodes by state\">");
    for c in Cell::ALL {
        let n = r.cells.get(c.name()).copied().unwrap_or(0);
        h.raw("<li")
            .attr("data-cell", c.name())
            .raw("><span class=\"sw s-")
            .text(c.name())
            .raw("\" aria-hidden=\"true\">");
        h.raw("</span><span class=\"label\">").text(c.label()).raw("</span> <b class=\"count\">").num(n as f64);
        h.raw("</b></li>");
    }
    h.raw("</ul><div class=\"sites\">");
    for site in arr(&st.fleet["sites"]) {
        h.raw("<section class=\"site\"").attr("aria-label", &format!("site {}", s(&site["name"]))).raw("><h3>");
        h.text(s(&site["name"])).raw(" <small>").text(s(&site["environment"]));
        if site["lb_reachable"] == false {
            h.raw(", LB not reachable");
        }
        h.raw("</small></h3><div class=\"farms\">");
        for farm in arr(&site["farms"]) {
            farm_card(h, s(&site["name"]), farm);
        }
        h.raw("</div></section>");
    }
    h.raw("</div></section>");
}

/// `a` when every value is `a`, else `a, b (n of m at target)`.
fn spread(nodes: &[serde_json::Value], key: &str, target: &str) -> String {
    let mut seen: Vec<&str> = nodes.iter().map(|n| n[key].as_str().unwrap_or("none")).collect();
    let at = seen.iter().filter(|v| **v == target).count();
    seen.sort_unstable();
    seen.dedup();
    if seen.len() == 1 && seen[0] == target {
        target.to_string()
    } else {
        format!("{target} on {at} of {}", nodes.len())
    }
}

fn farm_card(h: &mut Html, site: &str, farm: &serde_json::Value) {
    let name = s(&farm["name"]);
    let nodes = arr(&farm["nodes"]);
    let window = !farm["switch"].is_null();
    h.raw("<div class=\"farm").raw(if window { " open" } else { "" }).raw("\"");
    h.attr("data-farm", &format!("{site}/{name}")).attr("data-window", if window { "open" } else { "none" });
    h.raw("><h4>").text(name);
    if window {
        h.raw(" <span class=\"badge\">window open</span>");
    }
    h.raw("</h4><p class=\"meta\">release ").text(&spread(nodes, "release", s(&farm["target"]["release"])));
    h.raw(" · PHP ").text(&spread(nodes, "php", s(&farm["target"]["php"])));
    h.raw(" · LB ").text(s(&farm["lb"]["admin"])).raw(" w").num(farm["lb"]["weight"].as_f64().unwrap_or(0.0));
    h.raw(" · ").num(farm["sessions"].as_f64().unwrap_or(0.0)).raw("/");
    h.num(farm["capacity"].as_f64().unwrap_or(0.0)).raw(" sessions</p><div class=\"cells\">");
    for n in nodes {
        let cell = Cell::from_name(s(&n["cell"])).unwrap_or(Cell::Waiting);
        let mut label = format!("{}: {}", s(&n["name"]), cell.label());
        if let Some(e) = n["failed"].as_str().or(n["error"].as_str()) {
            label.push_str(": ");
            label.push_str(e);
        }
        h.raw("<span class=\"c s-").text(cell.name()).raw("\" role=\"img\"").attr("aria-label", &label);
        h.attr("title", &label).raw("></span>");
    }
    h.raw("</div></div>");
}

fn rollout(h: &mut Html, st: &DaemonStatus) {
    let r = &st.rollout;
    let now = r.last_pass_at_ms;
    h.raw("<section class=\"rollout\" aria-labelledby=\"h-rollout\"><h2 id=\"h-rollout\">Rollout</h2>");
    h.raw("<h3>Running now</h3>");
    list(h, "running", &r.running, "Nothing runs.", 12);
    let windows: Vec<&FarmWindow> = st.history.windows.iter().collect();
    h.raw("<h3>Farm windows</h3><p id=\"windows-open\">Open: ");
    let open: Vec<String> = windows
        .iter()
        .filter(|w| w.closed_ms.is_none())
        .map(|w| format!("{}/{} (since {})", w.site, w.farm, clock(w.opened_ms)))
        .collect();
    h.text(&if open.is_empty() { "none".to_string() } else { open.join(", ") }).raw("</p>");
    svg::timeline(h, &windows, now);
    // Farms not at target and without an open window, in the spec's order.
    let next: Vec<String> = arr(&st.fleet["sites"])
        .iter()
        .flat_map(|site| arr(&site["farms"]).iter().map(move |f| (site, f)))
        .filter(|(_, f)| f["switch"].is_null() && arr(&f["nodes"]).iter().any(|n| n["cell"] != "at-target"))
        .map(|(site, f)| format!("{}/{}", s(&site["name"]), s(&f["name"])))
        .collect();
    h.raw("<p id=\"windows-next\">Next (not at target yet, in the spec's order): ");
    if next.is_empty() {
        h.raw("none");
    } else {
        h.text(&next.iter().take(12).cloned().collect::<Vec<_>>().join(", "));
        if next.len() > 12 {
            h.text(&format!(" and {} more", next.len() - 12));
        }
    }
    h.raw("</p><h3>Waiting</h3>");
    if r.blocked_items.is_empty() {
        h.raw("<p id=\"blocked\">Nothing waits.</p>");
    } else {
        h.raw("<table id=\"blocked\"><thead><tr><th scope=\"col\">What</th><th scope=\"col\">Waits for</th>");
        h.raw("<th scope=\"col\">Why</th><th scope=\"col\">Until</th></tr></thead><tbody>");
        for b in r.blocked_items.iter().take(40) {
            h.raw("<tr><td>").text(&b.subject).raw("</td><td>").text(&b.cause.replace('_', " "));
            h.raw("</td><td>").text(&b.reason).raw("</td><td>");
            match b.until_ms {
                Some(t) => h.text(&clock(t)).raw(" (in ").text(&duration(t.saturating_sub(now))).raw(")"),
                None => h.raw("not known"),
            };
            h.raw("</td></tr>");
        }
        h.raw("</tbody></table>");
        if r.blocked_items.len() > 40 {
            h.raw("<p>... and ").num((r.blocked_items.len() - 40) as f64).raw(" more (see /status)</p>");
        }
    }
    // Release migrations, once per environment (`fleet.migrations`).
    let migrations: Vec<String> = arr(&st.fleet["migrations"]).iter().map(|m| s(&m["line"]).to_string()).collect();
    if !migrations.is_empty() {
        h.raw("<h3>Migrations</h3>");
        list(h, "migrations", &migrations, "", 12);
    }
    h.raw("<h3>Progress</h3>");
    svg::progress(h, &st.history.progress, r.nodes_total, now);
    h.raw("</section>");
}

fn list(h: &mut Html, id: &'static str, items: &[String], empty: &'static str, most: usize) {
    if items.is_empty() {
        h.raw("<p").attr("id", id).raw(">").raw(empty).raw("</p>");
        return;
    }
    h.raw("<ul");
    if !id.is_empty() {
        h.attr("id", id);
    }
    h.raw(">");
    for i in items.iter().take(most) {
        h.raw("<li>").text(i).raw("</li>");
    }
    if items.len() > most {
        h.raw("<li>... and ").num((items.len() - most) as f64).raw(" more</li>");
    }
    h.raw("</ul>");
}

fn spec(h: &mut Html, st: &DaemonStatus) {
    let sp = &st.spec;
    h.raw("<section class=\"spec\" aria-labelledby=\"h-spec\"><h2 id=\"h-spec\">Spec</h2><p>In force: ");
    if sp.generation == 0 {
        h.raw("none yet");
    } else {
        h.raw("generation ").num(sp.generation as f64).raw(", digest ").text(&sp.digest);
        if let Some(c) = &sp.commit {
            h.raw(", commit ").text(c);
        }
    }
    h.raw("</p>");
    if sp.pending {
        h.raw("<p class=\"note\">A new spec (").text(sp.pending_digest.as_deref().unwrap_or(""));
        h.raw(") waits for ").text(sp.pending_reason.as_deref().unwrap_or("")).raw(".</p>");
    }
    if let Some(rej) = &sp.rejected {
        h.raw("<div class=\"rejected\" id=\"rejected\" role=\"alert\"><h3>Rejected spec</h3><p>digest ");
        h.text(&rej.digest);
        if let Some(c) = &rej.commit {
            h.raw(", commit ").text(c);
        }
        h.raw(": not applied, the spec in force stays.</p><pre>").text(&rej.error).raw("</pre></div>");
    }
    if let Some(e) = &st.spec_source_error {
        h.raw("<p class=\"error\">Spec source: ").text(e).raw("</p>");
    }
    h.raw("</section>");
}

fn actions(h: &mut Html, st: &DaemonStatus) {
    h.raw("<section class=\"actions\" aria-labelledby=\"h-actions\"><h2 id=\"h-actions\">Recent actions</h2>");
    let recent = &st.history.actions;
    if recent.is_empty() {
        h.raw("<p>None finished yet.</p></section>");
        return;
    }
    h.raw("<table id=\"actions\"><thead><tr><th scope=\"col\">Action</th><th scope=\"col\">Took</th>");
    h.raw("<th scope=\"col\">Result</th></tr></thead><tbody>");
    for a in recent.iter().rev().take(15) {
        h.raw("<tr><td>").text(&a.action).raw("</td><td>").text(&duration(a.took_ms)).raw("</td>");
        match &a.error {
            None => h.raw("<td>ok</td></tr>"),
            Some(e) => h.raw("<td class=\"error\">failed: ").text(e).raw("</td></tr>"),
        };
    }
    h.raw("</tbody></table></section>");
}

fn problems(h: &mut Html, st: &DaemonStatus) {
    let r = &st.rollout;
    h.raw("<section class=\"problems\" aria-labelledby=\"h-problems\"><h2 id=\"h-problems\">Attention</h2>");
    let unobserved: Vec<String> = r.unobserved.iter().map(ToString::to_string).collect();
    let mut any = false;
    for (title, items) in [
        ("Failed", &r.failed),
        ("Held by an operator", &r.held),
        ("Not observed", &unobserved),
        ("Journal entries not carried over", &st.journal_resolved),
    ] {
        if !items.is_empty() {
            any = true;
            h.raw("<h3>").text(title).raw("</h3>");
            list(h, "", items, "", 12);
        }
    }
    if let Some(e) = &st.last_error {
        any = true;
        h.raw("<p class=\"error\">Last error: ").text(e).raw("</p>");
    }
    if !any {
        h.raw("<p>Nothing failed, held or unobserved.</p>");
    }
    h.raw("</section>");
}

#[cfg(test)]
mod tests;
