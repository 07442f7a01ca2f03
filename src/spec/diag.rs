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
    pub fn new(file: &str, pos: Pos, message: impl Into<String>, hint: Option<String>) -> Self {
        Diagnostic {
            file: file.to_string(),
            line: pos.line,
            column: pos.col,
            message: message.into(),
            hint,
            offset: pos.offset,
            len: pos.len,
        }
    }

    /// `file:line:column: message`, the first line of every report.
    pub fn headline(&self) -> String {
        format!("{}:{}:{}: error: {}", self.file, self.line, self.column, self.message)
    }
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
    for d in diags {
        let _ = writeln!(out, "{}", d.headline());
        let Some(src) = files.iter().find(|f| f.path == d.file) else {
            if let Some(h) = &d.hint {
                let _ = writeln!(out, "  help: {h}");
            }
            continue;
        };
        let start = if d.len > 0 || d.offset > 0 { d.offset as usize } else { offset_of(&src.text, d.line, d.column) }
            .min(src.text.len());
        let len = (d.len as usize).max(1).min(src.text.len().saturating_sub(start));
        let mut md = MietteDiagnostic::new(String::new()).with_labels([LabeledSpan::at(start..start + len, "here")]);
        if let Some(h) = &d.hint {
            md = md.with_help(h.clone());
        }
        let report = miette::Report::new(md).with_source_code(NamedSource::new(&d.file, src.text.clone()));
        let mut snippet = String::new();
        if handler.render_report(&mut snippet, report.as_ref()).is_ok() {
            // The headline already carries the message; drop miette's empty title line.
            for line in snippet.lines().filter(|l| l.trim() != "×") {
                out.push_str(line.trim_end());
                out.push('\n');
            }
        }
        out.push('\n');
    }
    out
}
