//! A plot's data area: the value axis up the left (ticks, grid lines,
//! labels), the versions along the bottom (one slot each, labelled; a
//! failed, crashed or hung version's slot shaded and named), and where a
//! value or a version falls in it.

use super::document::{Anchor, Svg, text_width};
use super::ticks::Axis;

/// Below the data area: the version labels, the outcome words and the
/// axis title.
pub const BELOW: f64 = 50.0;

/// How a version ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// Its replay failed (wrong outputs, an error).
    Failed,
    /// Its worker crashed while running it.
    Crashed,
    /// Its worker hung (past its deadline, killed).
    Hung,
}

impl Outcome {
    /// The word under a version that did not pass.
    pub fn word(self) -> Option<&'static str> {
        match self {
            Outcome::Passed => None,
            Outcome::Failed => Some("failed"),
            Outcome::Crashed => Some("crashed"),
            Outcome::Hung => Some("hung"),
        }
    }
}

/// A version on the bottom axis and how it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VersionMark {
    pub version: u64,
    pub outcome: Outcome,
}

/// The shade of a version that did not pass, and its words' colour.
pub const FAILED_SHADE: &str = "#fbe3e3";
pub const FAILED_TEXT: &str = "#c62828";

/// The data area, in the document's coordinates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Frame {
    pub left: f64,
    pub top: f64,
    pub width: f64,
    pub height: f64,
}

impl Frame {
    pub fn right(&self) -> f64 {
        self.left + self.width
    }

    pub fn bottom(&self) -> f64 {
        self.top + self.height
    }

    /// Where `v` falls on `axis`, up the frame.
    pub fn y(&self, axis: &Axis, v: f64) -> f64 {
        self.top + self.height * (1.0 - axis.fraction(v))
    }

    /// The width of each of `n` version slots.
    pub fn slot(&self, n: usize) -> f64 {
        self.width / n.max(1) as f64
    }

    /// The middle of slot `i` of `n`.
    pub fn slot_x(&self, i: usize, n: usize) -> f64 {
        self.left + self.slot(n) * (i as f64 + 0.5)
    }

    /// The frame, and per tick of `axis` a grid line and its label left of
    /// the frame.
    pub fn y_axis(&self, svg: &mut Svg, axis: &Axis, label: &dyn Fn(f64) -> String) {
        for tick in axis.ticks() {
            let y = self.y(axis, tick);
            svg.line((self.left, y), (self.right(), y), "#e2e2e2", "");
            svg.line((self.left - 4.0, y), (self.left, y), "#555", "");
            svg.text(
                self.left - 6.0,
                y + 4.0,
                11.0,
                Anchor::End,
                &label(tick),
                "",
            );
        }
        svg.rect(
            (self.left, self.top),
            (self.width, self.height),
            "none",
            r##" stroke="#888" class="frame""##,
        );
    }

    /// Shades the slots of the versions that did not pass (call before
    /// drawing data over them).
    pub fn shade_failures(&self, svg: &mut Svg, versions: &[VersionMark]) {
        let slot = self.slot(versions.len());
        for (i, v) in versions.iter().enumerate() {
            if v.outcome != Outcome::Passed {
                svg.rect(
                    (self.left + slot * i as f64, self.top),
                    (slot, self.height),
                    FAILED_SHADE,
                    "",
                );
            }
        }
    }

    /// The versions under the frame: `vN` under its slot (every k-th when
    /// labels would touch, always those that did not pass), the word of a
    /// version that did not pass under it, and the axis title.
    pub fn versions(&self, svg: &mut Svg, versions: &[VersionMark]) {
        let n = versions.len();
        let slot = self.slot(n);
        let widest = versions
            .iter()
            .map(|v| text_width(&format!("v{}", v.version), 11.0))
            .fold(0.0, f64::max);
        let every = ((widest + 6.0) / slot).ceil().max(1.0) as usize;
        let words_fit = slot >= text_width("crashed", 9.0) + 2.0;
        for (i, v) in versions.iter().enumerate() {
            let x = self.slot_x(i, n);
            let passed = v.outcome == Outcome::Passed;
            let colour = if passed {
                String::new()
            } else {
                format!(r#" fill="{FAILED_TEXT}""#)
            };
            // Counted from the last, which is always labelled.
            if (n - 1 - i).is_multiple_of(every) {
                let text = format!("v{}", v.version);
                svg.text(
                    x,
                    self.bottom() + 16.0,
                    11.0,
                    Anchor::Middle,
                    &text,
                    &colour,
                );
            }
            if let (Some(word), true) = (v.outcome.word(), words_fit) {
                svg.text(x, self.bottom() + 29.0, 9.0, Anchor::Middle, word, &colour);
            }
        }
        let title = if versions.iter().all(|v| v.outcome == Outcome::Passed) {
            "version"
        } else {
            "version (shaded: failed, crashed or hung)"
        };
        svg.text(
            self.left + self.width / 2.0,
            self.bottom() + 44.0,
            12.0,
            Anchor::Middle,
            title,
            "",
        );
    }
}
