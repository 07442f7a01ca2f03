//! A string builder for HTML where text is escaped unless asked otherwise:
//! `text` and `attr` escape, only `raw` does not, and `raw` takes a
//! `&'static str` so that no runtime string (every spec-derived name,
//! diagnostic or error is untrusted) can reach the page unescaped.

use std::fmt::Write as _;

#[derive(Default)]
pub struct Html {
    out: String,
}

impl Html {
    pub fn with_capacity(n: usize) -> Html {
        Html { out: String::with_capacity(n) }
    }

    /// Markup written by this module (a literal).
    pub fn raw(&mut self, s: &'static str) -> &mut Self {
        self.out.push_str(s);
        self
    }

    /// Text content or an attribute value (between double quotes): `&`, `<`,
    /// `>`, `"` and `'` are escaped.
    pub fn text(&mut self, s: &str) -> &mut Self {
        escape_into(&mut self.out, s);
        self
    }

    /// A number (nothing to escape).
    pub fn num(&mut self, n: impl Into<f64>) -> &mut Self {
        let n = n.into();
        if n.fract() == 0.0 && n.abs() < 1e15 {
            let _ = write!(self.out, "{}", n as i64);
        } else {
            let _ = write!(self.out, "{n:.1}");
        }
        self
    }

    /// ` name="value"`, the value escaped.
    pub fn attr(&mut self, name: &'static str, value: &str) -> &mut Self {
        self.out.push(' ');
        self.out.push_str(name);
        self.out.push_str("=\"");
        escape_into(&mut self.out, value);
        self.out.push('"');
        self
    }

    pub fn into_string(self) -> String {
        self.out
    }
}

pub fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters other than newline and tab show as U+FFFD.
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_attributes_are_escaped() {
        let mut h = Html::default();
        h.raw("<p").attr("title", "a\"b' <c>").raw(">").text("<script>alert('x')&</script>\u{7}").raw("</p>");
        assert_eq!(
            h.into_string(),
            "<p title=\"a&quot;b&#39; &lt;c&gt;\">&lt;script&gt;alert(&#39;x&#39;)&amp;&lt;/script&gt;\u{FFFD}</p>"
        );
    }
}
