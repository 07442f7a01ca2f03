//! Spec diagnostics: what is wrong, where (file, line, column) and what to
//! write instead. Rendering with a source snippet happens here too, so the
//! CLI and the tests print exactly the same text.

use std::fmt::Write as _;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteDiagnostic, NamedSource};
use serde::Serialize;

use super::located::Pos;

/// One spec file's name (as given to the user) and content.
#[derive(Clone, Debug)]
pub struct SourceFile {
    pub path: String,
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub file: String,
    pub line: u32,
    pub column: u32,
    pub message: String,
    pub hint: Option<String>,
    #[serde(skip)]
    pub offset: u32,
    #[serde(skip)]
    pub len: u32,
    /// What the error rests on: whether it is shown while a file could not be parsed (`Report`).
    #[serde(skip)]
    pub basis: Basis,
}

/// What an error rests on, which decides whether it is reported while a spec
/// file could not be parsed. Nothing of a file that failed to parse is used,
/// so every name, default or setting it held is missing: the errors that
/// missing content can cause are held back (and counted) until the parse
/// error is fixed, and the parse error is reported alone, first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// The file is not YAML of the spec's shape (syntax, structure, types,
    /// a key written twice): none of it was used.
    Parse,
    /// What is written at the position, alone or with other objects that were
    /// read (a malformed value, a range, two farms of one name): more spec
    /// content could not make it right.
    #[default]
    Written,
    /// What the spec as a whole defines: a name defined elsewhere (site,
    /// profile, package set), a target inherited from a site or the fleet,
    /// a fleet-wide setting or default, a site's farms and capacity, the
    /// preproduction gate. A file that failed to parse may hold what is missing.
    Whole,
}

impl Diagnostic {
    /// Every text field is made safe to print here, the one place every
    /// spec diagnostic is built: control characters escaped, huge quoted
    /// values shortened (`shown`).
    pub fn new(file: &str, pos: Pos, message: impl Into<String>, hint: Option<String>) -> Self {
        Diagnostic {
            file: shown(file),
            line: pos.line,
            column: pos.col,
            message: shown(&message.into()),
            hint: hint.map(|h| shown(&h)),
            offset: pos.offset,
            len: pos.len,
            basis: Basis::Written,
        }
    }

    /// The same error, resting on `basis`.
    pub fn resting_on(mut self, basis: Basis) -> Self {
        self.basis = basis;
        self
    }

    /// `file:line:column: message`, the first line of every report.
    pub fn headline(&self) -> String {
        format!("{}:{}:{}: error: {}", self.file, self.line, self.column, self.message)
    }
}

/// Longest message or source line printed whole; a longer one keeps its
/// head and tail around a note of what was left out.
pub const MAX_SHOWN_CHARS: usize = 480;

/// Whether `c` must not reach a terminal, a log line or a browser as is:
/// C0 and C1 controls (escape sequences, line breaks), DEL, and the
/// invisible formatting characters that reorder or hide text (bidi
/// overrides and isolates such as U+202E, zero-width characters, BOM,
/// line and paragraph separators).
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}')
}

/// `s` with every unsafe character written as `\u{XXXX}`.
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(is_unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_unsafe_char(c) {
            let _ = write!(out, "\\u{{{:X}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `s` escaped (`escape`) and, when longer than `MAX_SHOWN_CHARS`, cut to
/// its head and tail: a 10 MB invalid value is not copied into every report.
pub fn shown(s: &str) -> String {
    clip(&escape(s), MAX_SHOWN_CHARS)
}

/// `s` cut to at most about `max` characters, head and tail kept.
pub fn clip(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_string();
    }
    let keep = max / 2;
    let head: String = s.chars().take(keep).collect();
    let tail: String = s.chars().skip(n - keep).collect();
    format!("{head} … ({} characters left out) … {tail}", n - 2 * keep)
}

/// Byte offset of a 1-based line/column, for errors whose span is unknown.
fn offset_of(text: &str, line: u32, col: u32) -> usize {
    let mut off = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line as usize {
            let col_bytes: usize = l.chars().take(col.saturating_sub(1) as usize).map(char::len_utf8).sum();
            return (off + col_bytes).min(text.len());
        }
        off += l.len();
    }
    text.len()
}

/// Renders diagnostics as text: a headline per error, then the source line
/// with a caret under the value and the hint. Deterministic (no colour, fixed
/// width) so that snapshot tests can compare it.
pub fn render(diags: &[Diagnostic], files: &[SourceFile]) -> String {
    render_at_most(diags, files, MAX_RENDERED)
}

/// `render`, printing at most `max` reports in full.
fn render_at_most(diags: &[Diagnostic], files: &[SourceFile], max: usize) -> String {
    let handler =
        GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor()).with_width(100).with_context_lines(1);
    let mut out = String::new();
    // Rendering copies the file per report: a bounded number of reports.
    for d in diags.iter().take(max) {
        let _ = writeln!(out, "{}", d.headline());
        let Some(src) = files.iter().find(|f| shown(&f.path) == d.file) else {
            if let Some(h) = &d.hint {
                let _ = writeln!(out, "  help: {h}");
            }
            continue;
        };
        let start = if d.len > 0 || d.offset > 0 { d.offset as usize } else { offset_of(&src.text, d.line, d.column) }
            .min(src.text.len());
        let len = (d.len as usize).max(1).min(src.text.len().saturating_sub(start));
        // A line too long to print (a huge value) is not quoted at all: the headline says where it is.
        let line_start = src.text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = src.text[start..].find('\n').map_or(src.text.len(), |i| start + i);
        if src.text[line_start..line_end].chars().count() > MAX_SHOWN_CHARS {
            let _ = writeln!(out, "  (line {} is too long to show)", d.line);
            if let Some(h) = &d.hint {
                let _ = writeln!(out, "  help: {h}");
            }
            out.push('\n');
            continue;
        }
        let mut md = MietteDiagnostic::new(String::new()).with_labels([LabeledSpan::at(start..start + len, "here")]);
        if let Some(h) = &d.hint {
            md = md.with_help(h.clone());
        }
        let report = miette::Report::new(md).with_source_code(NamedSource::new(&d.file, src.text.clone()));
        let mut snippet = String::new();
        if handler.render_report(&mut snippet, report.as_ref()).is_ok() {
            // The headline already carries the message; drop miette's empty title line.
            // The snippet quotes the spec's own text: escaped and clipped like the message.
            for line in snippet.lines().filter(|l| l.trim() != "×") {
                out.push_str(&shown(line.trim_end()));
                out.push('\n');
            }
        }
        out.push('\n');
    }
    if diags.len() > max {
        let _ = writeln!(out, "… and {} more errors (the first {max} are shown)\n", diags.len() - max);
    }
    out
}

/// Most reports `render` prints in full.
pub const MAX_RENDERED: usize = 100;
/// Most reports `Report::text` prints in full (a log line, `/status`).
pub const MAX_IN_TEXT: usize = 10;

/// The errors of an invalid spec as they are reported: the root cause first.
/// When a file failed to parse, its parse errors and the errors that rest on
/// what is written elsewhere (`Basis::Written`) are shown; those that rest on
/// the spec as a whole (`Basis::Whole`) may follow from the unparsed file, so
/// they are counted, not shown. Without a parse error every error is shown.
#[derive(Clone, Debug)]
pub struct Report {
    /// What to show, parse errors first (the order `validate::check` gives).
    pub shown: Vec<Diagnostic>,
    /// Errors held back: they may follow from a file that failed to parse.
    pub suppressed: usize,
    /// How many of `shown` are parse errors.
    pub parse_errors: usize,
}

impl Report {
    pub fn of(diagnostics: Vec<Diagnostic>) -> Report {
        let parse_errors = diagnostics.iter().filter(|d| d.basis == Basis::Parse).count();
        if parse_errors == 0 {
            return Report { shown: diagnostics, suppressed: 0, parse_errors };
        }
        let total = diagnostics.len();
        let shown: Vec<Diagnostic> = diagnostics.into_iter().filter(|d| d.basis != Basis::Whole).collect();
        Report { suppressed: total - shown.len(), shown, parse_errors }
    }

    /// The shown errors with their snippets (`render`).
    pub fn render(&self, files: &[SourceFile]) -> String {
        render(&self.shown, files)
    }

    /// The closing line: `3 errors in specs`, then `outcome` (e.g. `: nothing
    /// was planned`), then what was held back, if anything, and why.
    pub fn summary(&self, dir: &str, outcome: &str) -> String {
        let n = self.shown.len();
        let mut line = format!("{n} error{} in {}{outcome}", plural(n), shown(dir));
        if self.suppressed > 0 {
            let (it, s) = if self.parse_errors == 1 { ("it", "") } else { ("them", "s") };
            let _ = write!(
                line,
                "; {} error{} that may follow from {it} {} not reported (fix the parse error{s} first)",
                self.suppressed,
                plural(self.suppressed),
                if self.suppressed == 1 { "was" } else { "were" },
            );
        }
        line
    }

    /// The report of an invalid spec as one text, kept short for a log line
    /// and the daemon's `/status` (`spec.rejected.error`): at most
    /// `MAX_IN_TEXT` errors with their snippets, then `summary`.
    pub fn text(&self, files: &[SourceFile], dir: &str) -> String {
        format!("{}{}", render_at_most(&self.shown, files, MAX_IN_TEXT), self.summary(dir, ""))
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::located::Pos;

    fn at(line: u32, basis: Basis) -> Diagnostic {
        Diagnostic::new("spec.yaml", Pos { line, col: 1, ..Pos::default() }, format!("error {line}"), None)
            .resting_on(basis)
    }

    #[test]
    fn the_text_of_a_rejected_spec_is_short_and_root_cause_first() {
        let files = [SourceFile { path: "spec.yaml".into(), text: "a: 1\n".repeat(40) }];
        let mut diags = vec![at(1, Basis::Parse), at(2, Basis::Parse)];
        diags.extend((3..30).map(|l| at(l, Basis::Written)));
        diags.extend((30..40).map(|l| at(l, Basis::Whole)));
        let report = Report::of(diags);
        assert_eq!((report.shown.len(), report.suppressed, report.parse_errors), (29, 10, 2));
        let text = report.text(&files, "specs");
        assert_eq!(text.lines().filter(|l| l.contains(": error: ")).count(), MAX_IN_TEXT, "{text}");
        assert!(text.starts_with("spec.yaml:1:1: error: error 1\n"), "{text}");
        assert!(text.contains("… and 19 more errors (the first 10 are shown)"), "{text}");
        assert!(
            text.ends_with(
                "29 errors in specs; 10 errors that may follow from them were not reported (fix the parse errors first)"
            ),
            "{text}"
        );
    }
}
