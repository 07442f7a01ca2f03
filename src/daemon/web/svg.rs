//! The page's two charts, drawn server-side as SVG: the farm windows on a
//! time line and the nodes at target over time. Each is `role="img"` with
//! a `<title>` and an `aria-label` that say in words what it shows.

use super::html::Html;
use super::{clock, duration};
use crate::daemon::state::{FarmWindow, ProgressPoint};

/// Farm windows drawn (the newest); the rest are counted in the title.
pub const TIMELINE_ROWS: usize = 16;

const W: f64 = 560.0;
const LABEL: f64 = 120.0;
const ROW: f64 = 14.0;

fn x_of(t: u64, t0: u64, t1: u64, left: f64, width: f64) -> f64 {
    if t1 <= t0 {
        return left + width;
    }
    left + width * (t.saturating_sub(t0) as f64 / (t1 - t0) as f64).clamp(0.0, 1.0)
}

/// The newest `TIMELINE_ROWS` farm windows as bars from opening to closing
/// (or to `now_ms` while open), oldest at the top.
pub fn timeline(h: &mut Html, windows: &[&FarmWindow], now_ms: u64) {
    let shown = &windows[windows.len().saturating_sub(TIMELINE_ROWS)..];
    let open = windows.iter().filter(|w| w.closed_ms.is_none()).count();
    let done = windows.len() - open;
    let title = format!(
        "Farm windows on a time line: {done} done, {open} open{}",
        if shown.len() < windows.len() { format!(" (the newest {} drawn)", shown.len()) } else { String::new() }
    );
    let t0 = shown.iter().map(|w| w.opened_ms).min().unwrap_or(now_ms);
    let t1 = now_ms.max(t0 + 1);
    let height = ROW * shown.len().max(1) as f64 + 22.0;
    h.raw("<svg class=\"chart\" role=\"img\"").attr("aria-label", &title);
    h.raw(" viewBox=\"0 0 ").num(W).raw(" ").num(height).raw("\" preserveAspectRatio=\"xMinYMin meet\"><title>");
    h.text(&title).raw("</title>");
    let plot = W - LABEL - 8.0;
    for (i, w) in shown.iter().enumerate() {
        let y = ROW * i as f64;
        let (x1, x2) =
            (x_of(w.opened_ms, t0, t1, LABEL, plot), x_of(w.closed_ms.unwrap_or(now_ms), t0, t1, LABEL, plot));
        let name = format!("{}/{}", w.site, w.farm);
        let state = if w.closed_ms.is_some() { "done" } else { "open" };
        let what = match w.closed_ms {
            Some(c) => format!(
                "{name}: window done, {} to {} ({})",
                clock(w.opened_ms),
                clock(c),
                duration(c.saturating_sub(w.opened_ms))
            ),
            None => format!(
                "{name}: window open since {} ({})",
                clock(w.opened_ms),
                duration(now_ms.saturating_sub(w.opened_ms))
            ),
        };
        h.raw("<g").attr("data-farm", &name).attr("data-state", state).raw("><title>").text(&what).raw("</title>");
        h.raw("<text class=\"lbl\" x=\"").num(LABEL - 6.0).raw("\" y=\"").num(y + 11.0).raw("\" text-anchor=\"end\">");
        h.text(&name).raw("</text><rect class=\"w-").text(state).raw("\" x=\"").num(x1).raw("\" y=\"").num(y + 2.0);
        h.raw("\" width=\"").num((x2 - x1).max(2.0)).raw("\" height=\"").num(ROW - 4.0).raw("\"/></g>");
    }
    let axis = ROW * shown.len().max(1) as f64 + 4.0;
    h.raw("<line class=\"axis\" x1=\"").num(LABEL).raw("\" x2=\"").num(LABEL + plot).raw("\" y1=\"").num(axis);
    h.raw("\" y2=\"").num(axis).raw("\"/>");
    h.raw("<text class=\"lbl\" x=\"").num(LABEL).raw("\" y=\"").num(axis + 14.0).raw("\">").text(&clock(t0));
    h.raw("</text><text class=\"lbl\" x=\"").num(LABEL + plot).raw("\" y=\"").num(axis + 14.0);
    h.raw("\" text-anchor=\"end\">now ").text(&clock(now_ms)).raw("</text></svg>");
}

/// Nodes at target over time: a step line from the first point to `now_ms`.
pub fn progress(h: &mut Html, points: &[ProgressPoint], total: u64, now_ms: u64) {
    const H: f64 = 150.0;
    const LEFT: f64 = 40.0;
    const TOP: f64 = 8.0;
    const BOTTOM: f64 = 20.0;
    let last = points.last().map_or(0, |p| p.nodes_at_target);
    let title = match points.first() {
        Some(first) => format!(
            "Nodes at target over time: {last} of {total} at {}, from {} at {}",
            clock(now_ms),
            first.nodes_at_target,
            clock(first.at_ms)
        ),
        None => format!("Nodes at target over time: no pass yet ({total} nodes)"),
    };
    h.raw("<svg class=\"chart\" role=\"img\"").attr("aria-label", &title);
    h.raw(" viewBox=\"0 0 ").num(W).raw(" ").num(H).raw("\" preserveAspectRatio=\"xMinYMin meet\"><title>");
    h.text(&title).raw("</title>");
    let (pw, ph) = (W - LEFT - 8.0, H - TOP - BOTTOM);
    let t0 = points.first().map_or(now_ms, |p| p.at_ms);
    let t1 = now_ms.max(t0 + 1);
    let y_of = |n: u64| TOP + ph - ph * (n as f64 / total.max(1) as f64).clamp(0.0, 1.0);
    h.raw("<line class=\"axis\" x1=\"").num(LEFT).raw("\" x2=\"").num(LEFT + pw).raw("\" y1=\"").num(TOP + ph);
    h.raw("\" y2=\"").num(TOP + ph).raw("\"/><line class=\"grid\" x1=\"").num(LEFT).raw("\" x2=\"").num(LEFT + pw);
    h.raw("\" y1=\"").num(TOP).raw("\" y2=\"").num(TOP).raw("\"/>");
    h.raw("<text class=\"lbl\" x=\"").num(LEFT - 4.0).raw("\" y=\"").num(TOP + 4.0).raw("\" text-anchor=\"end\">");
    h.num(total as f64).raw("</text><text class=\"lbl\" x=\"").num(LEFT - 4.0).raw("\" y=\"").num(TOP + ph);
    h.raw("\" text-anchor=\"end\">0</text>");
    if !points.is_empty() {
        h.raw("<polyline class=\"progress\" points=\"");
        let mut prev: Option<f64> = None;
        for p in points {
            let x = x_of(p.at_ms, t0, t1, LEFT, pw);
            if let Some(py) = prev {
                h.num(x).raw(",").num(py).raw(" ");
            }
            let y = y_of(p.nodes_at_target);
            h.num(x).raw(",").num(y).raw(" ");
            prev = Some(y);
        }
        h.num(LEFT + pw).raw(",").num(y_of(last)).raw("\"/>");
    }
    h.raw("<text class=\"lbl\" x=\"").num(LEFT).raw("\" y=\"").num(H - 4.0).raw("\">").text(&clock(t0));
    h.raw("</text><text class=\"lbl\" x=\"").num(LEFT + pw).raw("\" y=\"").num(H - 4.0);
    h.raw("\" text-anchor=\"end\">now ").text(&clock(now_ms)).raw("</text></svg>");
}
