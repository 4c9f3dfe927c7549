//! A legend: a column of entries beside the data area (never over it),
//! each a swatch and a text cut to fit the column.

use super::document::{Anchor, Svg, fit};
use super::frame::{FAILED_SHADE, FAILED_TEXT};

/// What an entry's swatch looks like.
#[derive(Clone, Debug, PartialEq)]
pub enum Swatch {
    /// A filled dot of this colour.
    Dot(String),
    /// A hollow dot of this colour.
    Hollow(String),
    /// A line of this colour.
    Line(String),
    /// A vertical bar with caps: an interval.
    Interval,
    /// The shade of a version that did not pass.
    Failed,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub swatch: Swatch,
    pub text: String,
}

/// The height of one entry.
pub const ROW: f64 = 16.0;

/// `entries` in a column at `x`, from `y` down, `width` wide, at most
/// `height` tall (the last row then says how many did not fit).
pub fn legend(svg: &mut Svg, (x, y): (f64, f64), (width, height): (f64, f64), entries: &[Entry]) {
    let rows = ((height / ROW).floor() as usize).max(1);
    let shown = if entries.len() > rows {
        rows - 1
    } else {
        entries.len()
    };
    let text_x = x + 18.0;
    for (i, entry) in entries.iter().take(shown).enumerate() {
        let mid = y + ROW * i as f64 + ROW / 2.0;
        match &entry.swatch {
            Swatch::Dot(c) => svg.circle((x + 6.0, mid), 4.0, &format!(r#" fill="{c}""#), None),
            Swatch::Hollow(c) => svg.circle(
                (x + 6.0, mid),
                4.0,
                &format!(r#" fill="white" stroke="{c}" stroke-width="1.5""#),
                None,
            ),
            Swatch::Line(c) => svg.line((x, mid), (x + 12.0, mid), c, r#" stroke-width="2""#),
            Swatch::Interval => {
                svg.line((x + 6.0, mid - 6.0), (x + 6.0, mid + 6.0), "#444", "");
                svg.line((x + 3.0, mid - 6.0), (x + 9.0, mid - 6.0), "#444", "");
                svg.line((x + 3.0, mid + 6.0), (x + 9.0, mid + 6.0), "#444", "");
            }
            Swatch::Failed => svg.rect(
                (x, mid - 6.0),
                (12.0, 12.0),
                FAILED_SHADE,
                &format!(r#" stroke="{FAILED_TEXT}""#),
            ),
        }
        let text = fit(&entry.text, 11.0, width - 18.0);
        svg.text(text_x, mid + 4.0, 11.0, Anchor::Start, &text, "");
    }
    if shown < entries.len() {
        let more = format!("… {} more", entries.len() - shown);
        let mid = y + ROW * shown as f64 + ROW / 2.0;
        svg.text(
            text_x,
            mid + 4.0,
            11.0,
            Anchor::Start,
            &fit(&more, 11.0, width - 18.0),
            "",
        );
    }
}
