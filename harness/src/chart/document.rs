//! The SVG document: elements written one per line, every `<text>` with
//! its position, size and anchor spelled out (what [`super::bounds`]
//! reads back), and the estimates that keep text inside the image: a
//! character is taken as [`CHAR_WIDTH`] of the font size wide.

use std::fmt::Write as _;

/// A character's width as a fraction of the font size (an estimate for a
/// sans-serif font, generous for most letters).
pub const CHAR_WIDTH: f64 = 0.6;
/// The font size of text written without one.
pub const FONT_SIZE: f64 = 12.0;

/// The estimated width of `text` at `size`.
pub fn text_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size * CHAR_WIDTH
}

/// `text` cut to fit `width` at `size`, ending in `…` when cut.
pub fn fit(text: &str, size: f64, width: f64) -> String {
    if text_width(text, size) <= width {
        return text.to_string();
    }
    let keep = ((width / (size * CHAR_WIDTH)).floor() as usize).saturating_sub(1);
    let mut cut: String = text.chars().take(keep).collect();
    cut.push('…');
    cut
}

/// `text` broken at spaces into lines that fit `width` at `size` (a word
/// longer than a line is cut with [`fit`]).
pub fn wrap(text: &str, size: f64, width: f64) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let joined = if line.is_empty() {
            word.to_string()
        } else {
            format!("{line} {word}")
        };
        if text_width(&joined, size) <= width || line.is_empty() {
            line = joined;
        } else {
            lines.push(fit(&line, size, width));
            line = word.to_string();
        }
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(fit(&line, size, width));
    }
    lines
}

/// Text for XML: `&`, `<`, `>` and `"` escaped.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A title's font size.
pub const TITLE_SIZE: f64 = 14.0;

/// The height of `title` wrapped to a document `width` wide.
pub fn title_height(title: &str, width: f64) -> f64 {
    18.0 * wrap(title, TITLE_SIZE, width - 16.0).len() as f64
}

/// `x,y x,y ...` of `points`.
fn coordinates(points: &[(f64, f64)]) -> String {
    let points: Vec<String> = points
        .iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect();
    points.join(" ")
}

/// Where a text's `x` is: its start, middle or end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anchor {
    Start,
    Middle,
    End,
}

impl Anchor {
    pub fn as_str(self) -> &'static str {
        match self {
            Anchor::Start => "start",
            Anchor::Middle => "middle",
            Anchor::End => "end",
        }
    }
}

/// An SVG document being written (white background, sans-serif).
pub struct Svg {
    pub width: f64,
    pub height: f64,
    body: String,
}

impl Svg {
    pub fn new(width: f64, height: f64) -> Svg {
        Svg {
            width,
            height,
            body: String::new(),
        }
    }

    /// One text at (`x`, `y`: its baseline), `extra` attributes as written
    /// (` fill="#c00"`).
    pub fn text(&mut self, x: f64, y: f64, size: f64, anchor: Anchor, text: &str, extra: &str) {
        let _ = writeln!(
            self.body,
            r#"<text x="{x:.1}" y="{y:.1}" font-size="{size}" text-anchor="{}"{extra}>{}</text>"#,
            anchor.as_str(),
            escape(text)
        );
    }

    pub fn line(&mut self, (x1, y1): (f64, f64), (x2, y2): (f64, f64), stroke: &str, extra: &str) {
        let _ = writeln!(
            self.body,
            r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" stroke="{stroke}"{extra}/>"#
        );
    }

    pub fn rect(&mut self, (x, y): (f64, f64), (w, h): (f64, f64), fill: &str, extra: &str) {
        let _ = writeln!(
            self.body,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{fill}"{extra}/>"#
        );
    }

    /// A circle, with a hover text when `title` is given.
    pub fn circle(&mut self, (cx, cy): (f64, f64), r: f64, extra: &str, title: Option<&str>) {
        let _ = write!(
            self.body,
            r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="{r}"{extra}"#
        );
        match title {
            Some(t) => {
                let _ = writeln!(self.body, "><title>{}</title></circle>", escape(t));
            }
            None => self.body.push_str("/>\n"),
        }
    }

    pub fn polyline(&mut self, points: &[(f64, f64)], stroke: &str, extra: &str) {
        let _ = writeln!(
            self.body,
            r#"<polyline fill="none" stroke="{stroke}" points="{}"{extra}/>"#,
            coordinates(points)
        );
    }

    /// A filled polygon through `points`.
    pub fn polygon(&mut self, points: &[(f64, f64)], fill: &str) {
        let _ = writeln!(
            self.body,
            r#"<polygon fill="{fill}" points="{}"/>"#,
            coordinates(points)
        );
    }

    /// A bold title wrapped to the document's width, from `top`;
    /// returns its height ([`title_height`]).
    pub fn title(&mut self, top: f64, title: &str) -> f64 {
        let lines = wrap(title, TITLE_SIZE, self.width - 16.0);
        for (i, line) in lines.iter().enumerate() {
            let y = top + 18.0 + 18.0 * i as f64;
            self.text(
                8.0,
                y,
                TITLE_SIZE,
                Anchor::Start,
                line,
                r#" font-weight="bold""#,
            );
        }
        18.0 * lines.len() as f64
    }

    /// A grey note in the middle of a data area (`left`, `top`, `width`)
    /// when it has nothing to show, cut to fit it.
    pub fn note(&mut self, (left, top, width): (f64, f64, f64), text: &str) {
        let note = fit(text, 11.0, width - 8.0);
        self.text(
            left + width / 2.0,
            top + 20.0,
            11.0,
            Anchor::Middle,
            &note,
            r##" fill="#666""##,
        );
    }

    /// The document's text.
    pub fn finish(self) -> String {
        let (w, h) = (self.width, self.height);
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
             viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"{FONT_SIZE}\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{}</svg>\n",
            self.body
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cut_and_wrapped_to_fit() {
        assert_eq!(fit("short", 10.0, 100.0), "short");
        let cut = fit("a rather long title for a small space", 10.0, 60.0);
        assert!(
            text_width(&cut, 10.0) <= 60.0 && cut.ends_with('…'),
            "{cut}"
        );
        let lines = wrap("one two three four five six seven", 10.0, 60.0);
        assert!(lines.len() > 1, "{lines:?}");
        assert!(
            lines.iter().all(|l| text_width(l, 10.0) <= 60.0),
            "{lines:?}"
        );
        assert_eq!(lines.join(" "), "one two three four five six seven");
        assert_eq!(escape("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
    }
}
