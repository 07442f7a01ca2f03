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
        }
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
    let handler =
        GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor()).with_width(100).with_context_lines(1);
    let mut out = String::new();
    // Rendering copies the file per report: a bounded number of reports.
    for d in diags.iter().take(MAX_RENDERED) {
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
    if diags.len() > MAX_RENDERED {
        let _ =
            writeln!(out, "… and {} more errors (the first {MAX_RENDERED} are shown)\n", diags.len() - MAX_RENDERED);
    }
    out
}

/// Most reports `render` prints in full.
pub const MAX_RENDERED: usize = 100;
